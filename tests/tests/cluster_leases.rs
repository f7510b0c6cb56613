//! Clustered mode: the partition lease table against a real PostgreSQL 15 — acquisition
//! bumps the epoch and excludes others, renewal keeps it, a graceful release frees it at
//! once, an expired lease is taken with the rest of `ack_wait` to wait. (Issue #15.)

use std::time::Duration;

use e2e_tests::cluster::Postgres;
use gateway::cluster::lease::LeaseStore;

#[test]
fn leases_fence_by_epoch_expire_and_release() {
    let pg = Postgres::start().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ttl = Duration::from_millis(800);
        let ack_wait = Duration::from_secs(10);
        let a = LeaseStore::open(&pg.url(), "a", 8).await.unwrap();
        let b = LeaseStore::open(&pg.url(), "b", 8).await.unwrap();
        assert_eq!(
            a.leases().await.unwrap().len(),
            8,
            "one row per partition, created once"
        );

        // a takes partition 3 (never owned: no wait); b cannot while a's lease runs.
        let got = a.acquire(3, ttl, ack_wait).await.unwrap().unwrap();
        assert_eq!((got.epoch, got.wait), (1, Duration::ZERO));
        assert!(b.acquire(3, ttl, ack_wait).await.unwrap().is_none());

        // Renewal keeps it past the first ttl; a stale epoch is not renewed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(a.renew(ttl, &[(3, 1)]).await.unwrap(), [(3, 1)]);
        assert!(a.renew(ttl, &[(3, 0)]).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(b.acquire(3, ttl, ack_wait).await.unwrap().is_none());

        // a dies (stops renewing): once expired b takes it, epoch 2, and must wait out the
        // rest of ack_wait; a can no longer renew or release it.
        tokio::time::sleep(ttl).await;
        let took = b.acquire(3, ttl, ack_wait).await.unwrap().unwrap();
        assert_eq!(took.epoch, 2);
        assert!(
            took.wait > Duration::from_secs(8) && took.wait <= ack_wait,
            "{:?}",
            took.wait
        );
        assert!(a.renew(ttl, &[(3, 1)]).await.unwrap().is_empty());
        assert!(!a.release(3, 1).await.unwrap());

        // A graceful release frees it at once, and the next owner need not wait.
        assert!(b.release(3, 2).await.unwrap());
        let again = a.acquire(3, ttl, ack_wait).await.unwrap().unwrap();
        assert_eq!((again.epoch, again.wait), (3, Duration::ZERO));

        // Live instances: both, until one leaves.
        let live = a.heartbeat(ttl).await.unwrap();
        b.heartbeat(ttl).await.unwrap();
        assert_eq!(a.heartbeat(ttl).await.unwrap(), ["a", "b"], "{live:?}");
        b.leave().await.unwrap();
        assert_eq!(a.heartbeat(ttl).await.unwrap(), ["a"]);
    });
}
