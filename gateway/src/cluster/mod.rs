//! Clustered mode (`[cluster] enabled = true`): several gateway instances behind a NATS
//! cluster's MQTT listeners, sharing the work by device partition.
//!
//! - [`partition`]: the broker maps `fixtures/<id>/<kind>` to `fixtures/<P>/<id>/<kind>`
//!   with `P = FNV-1a(id) mod N`; the gateway computes the same `P`.
//! - [`lease`]: which instance owns which partition — lease rows in PostgreSQL with a
//!   fencing epoch, renewed by heartbeat, spread evenly over the live instances.
//! - [`session`]: for each owned partition, one persistent MQTT session `gw-p<P>` on
//!   `fixtures/<P>/+/+`, running today's ingest pipeline (ack after the durable write).
//!
//! [`run`] is the coordinator: every `lease_ttl / 3` it heartbeats, renews its leases,
//! stops the sessions of leases it lost, lets go of partitions above its share (graceful
//! hand-over: finish in-flight batches, save the analytics state, disconnect, release)
//! and acquires free or expired ones (after a crashed owner: connect at once, see `ack_wait_ms`).
//!
//! Single-node mode (the default) never touches this module.

pub mod lease;
pub mod partition;
pub mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use crate::config::{ClusterConfig, RawCluster};
use lease::{LeaseError, LeaseStore};
use session::{PartitionSession, Shared};

/// What this instance owns, for `/health/ready` and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// Owned partitions and their lease epochs.
    pub partitions: BTreeMap<u32, i64>,
    /// Live instances seen at the last heartbeat.
    pub instances: Vec<String>,
}

/// A partition this instance holds.
struct Held {
    epoch: i64,
    renewed: Instant,
    session: PartitionSession,
}

/// The coordinator: runs until `shutdown` flips, then stops every session and releases
/// every lease. Database errors are logged and retried; a lease not renewed within its
/// time to live is given up (its session stopped) since another instance may take it.
pub async fn run(
    cluster: ClusterConfig,
    shared: Arc<Shared>,
    ownership: watch::Sender<Ownership>,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared_brokers = shared.brokers.len();
    tracing::info!(instance = %cluster.instance_id, partitions = cluster.partitions, brokers = shared_brokers, lease_ttl_ms = cluster.lease_ttl.as_millis() as u64, ack_wait_ms = cluster.ack_wait.as_millis() as u64, "Clustered mode: partitions by lease in PostgreSQL.");
    let tick = (cluster.lease_ttl / 3).max(Duration::from_millis(100));
    let mut store: Option<LeaseStore> = None;
    let mut held: BTreeMap<u32, Held> = BTreeMap::new();
    loop {
        if store.as_ref().is_none_or(LeaseStore::is_closed) {
            store = match LeaseStore::open(
                &cluster.postgres_url,
                &cluster.instance_id,
                cluster.partitions,
            )
            .await
            {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "Partition leases unavailable; retrying.");
                    None
                }
            };
        }
        if let Some(s) = &store {
            if let Err(e) = step(&cluster, s, &shared, &mut held, &ownership).await {
                tracing::error!(error = %e, "Partition lease round failed; retrying.");
            }
        }
        // Fencing: a lease not renewed for its whole time to live may be someone else's now.
        let now = Instant::now();
        let stale: Vec<u32> = held
            .iter()
            .filter(|(_, h)| now.duration_since(h.renewed) >= cluster.lease_ttl)
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            if let Some(h) = held.remove(&p) {
                tracing::warn!(
                    partition = p,
                    epoch = h.epoch,
                    "Lease not renewed in time: stopping the partition's session."
                );
                h.session.stop().await;
            }
        }
        publish(&ownership, &held, None);
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => break,
        }
    }
    // Graceful stop: every session finishes its batches, then its lease is released.
    let stops = held.into_iter().map(|(p, h)| {
        let store = store.as_ref();
        async move {
            h.session.stop().await;
            if let Some(s) = store {
                if let Err(e) = s.release(p, h.epoch).await {
                    tracing::warn!(partition = p, error = %e, "Cannot release the lease; it will expire.");
                }
            }
        }
    });
    futures_join_all(stops).await;
    if let Some(s) = &store {
        if let Err(e) = s.leave().await {
            tracing::warn!(error = %e, "Cannot leave the instance list; the entry will expire.");
        }
    }
    let _ = ownership.send(Ownership::default());
    tracing::info!("Clustered mode stopped: every partition released.");
}

/// One round: heartbeat, renew, rebalance.
async fn step(
    cluster: &ClusterConfig,
    store: &LeaseStore,
    shared: &Arc<Shared>,
    held: &mut BTreeMap<u32, Held>,
    ownership: &watch::Sender<Ownership>,
) -> Result<(), LeaseError> {
    let live = store.heartbeat(cluster.lease_ttl).await?;
    let mine: Vec<(u32, i64)> = held.iter().map(|(p, h)| (*p, h.epoch)).collect();
    let renewed: BTreeMap<u32, i64> = store
        .renew(cluster.lease_ttl, &mine)
        .await?
        .into_iter()
        .collect();
    let now = Instant::now();
    let lost: Vec<u32> = held
        .iter()
        .filter(|(p, h)| renewed.get(p) != Some(&h.epoch))
        .map(|(p, _)| *p)
        .collect();
    for p in lost {
        if let Some(h) = held.remove(&p) {
            tracing::warn!(
                partition = p,
                epoch = h.epoch,
                "Lease lost: stopping the partition's session."
            );
            h.session.stop().await;
        }
    }
    for h in held.values_mut() {
        h.renewed = now;
    }
    let leases = store.leases().await?;
    let want = lease::wanted(&cluster.instance_id, &live, &leases, cluster.partitions);
    let have: BTreeSet<u32> = held.keys().copied().collect();
    // Above its share: hand the partitions over gracefully (all at once, then release).
    let giving: Vec<(u32, Held)> = have
        .difference(&want)
        .filter_map(|p| held.remove(p).map(|h| (*p, h)))
        .collect();
    if !giving.is_empty() {
        let moved: Vec<u32> = giving.iter().map(|(p, _)| *p).collect();
        let stops = giving.into_iter().map(|(p, h)| async move {
            h.session.stop().await;
            (p, h.epoch)
        });
        for (p, epoch) in futures_join_all(stops).await {
            if let Err(e) = store.release(p, epoch).await {
                tracing::warn!(partition = p, error = %e, "Cannot release the lease; it will expire.");
            }
        }
        tracing::info!(partitions = ?moved, "Partitions handed over (above this instance's share).");
    }
    for p in want.difference(&have) {
        if let Some(a) = store
            .acquire(*p, cluster.lease_ttl, cluster.ack_wait)
            .await?
        {
            tracing::info!(
                partition = p,
                epoch = a.epoch,
                wait_ms = a.wait.as_millis() as u64,
                "Partition lease acquired."
            );
            held.insert(
                *p,
                Held {
                    epoch: a.epoch,
                    renewed: Instant::now(),
                    session: PartitionSession::start(*p, a.wait, Arc::clone(shared)),
                },
            );
        }
    }
    // A session that ended on its own is restarted by giving its lease up and taking it again.
    let dead: Vec<u32> = held
        .iter()
        .filter(|(_, h)| h.session.is_finished())
        .map(|(p, _)| *p)
        .collect();
    for p in dead {
        if let Some(h) = held.remove(&p) {
            tracing::error!(
                partition = p,
                "A partition session ended unexpectedly; releasing it."
            );
            let _ = store.release(p, h.epoch).await;
        }
    }
    publish(ownership, held, Some(live));
    Ok(())
}

fn publish(
    ownership: &watch::Sender<Ownership>,
    held: &BTreeMap<u32, Held>,
    live: Option<Vec<String>>,
) {
    ownership.send_modify(|o| {
        o.partitions = held.iter().map(|(p, h)| (*p, h.epoch)).collect();
        if let Some(live) = live {
            o.instances = live;
        }
    });
}

/// Awaits every future concurrently (no `futures` dependency: a `JoinSet` needs `'static`).
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in pinned.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn cluster_mode_is_off_by_default_and_configured_by_file_or_env() {
        assert!(Config::load(None, env(&[])).unwrap().cluster.is_none());
        // The example file's [cluster] table, uncommented.
        let example = include_str!("../../../gateway.example.toml");
        let table: String = example
            .lines()
            .skip_while(|l| !l.starts_with("# [cluster]"))
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, &table).unwrap();
        let c = Config::load(Some(&path), env(&[]))
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.partitions, 64);
        assert_eq!(c.instance_id, "gw-1");
        assert_eq!(c.lease_ttl, std::time::Duration::from_secs(5));
        assert_eq!(c.ack_wait, std::time::Duration::ZERO);
        assert_eq!(c.brokers.len(), 3);
        assert_eq!(c.brokers[1], ("nats-2".to_owned(), 1883));

        let c = Config::load(
            None,
            env(&[
                ("GATEWAY__CLUSTER__ENABLED", "true"),
                (
                    "GATEWAY__CLUSTER__POSTGRES_URL",
                    "postgres://gw@127.0.0.1:5433/gw",
                ),
                (
                    "GATEWAY__CLUSTER__MQTT_URLS",
                    r#"["mqtt://a:1", "mqtt://b:2"]"#,
                ),
            ]),
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.brokers, [("a".to_owned(), 1), ("b".to_owned(), 2)]);
        assert_eq!(
            c.ack_wait,
            std::time::Duration::ZERO,
            "a take-over connects at once"
        );
        assert!(!c.instance_id.is_empty());

        for (key, value) in [
            ("GATEWAY__CLUSTER__PARTITIONS", "0"),
            ("GATEWAY__CLUSTER__MQTT_URLS", r#"["http://a"]"#),
            ("GATEWAY__CLUSTER__LEASE_TTL_MS", "10"),
        ] {
            let err = Config::load(
                None,
                env(&[
                    ("GATEWAY__CLUSTER__ENABLED", "true"),
                    ("GATEWAY__CLUSTER__POSTGRES_URL", "postgres://gw@h/gw"),
                    (key, value),
                ]),
            )
            .unwrap_err();
            assert!(err.to_string().contains("cluster."), "{err}");
        }
        let err = Config::load(None, env(&[("GATEWAY__CLUSTER__ENABLED", "true")])).unwrap_err();
        assert!(err.to_string().contains("cluster.postgres_url"), "{err}");
    }
}
