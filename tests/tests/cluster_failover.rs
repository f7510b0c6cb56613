//! Clustered mode, (b) and (c): no PUBACKed message is lost when a NATS node or a gateway
//! instance dies. Two gateway instances share the 64 partitions through leases in
//! PostgreSQL; every message the cluster acknowledged to the publisher must be in InfluxDB,
//! exactly once. (Issue #15.)

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::cluster::*;
use e2e_tests::*;

/// The nodes' `mqtt { ack_wait }` (deploy/nats/cluster.conf), in ms.
const ACK_WAIT_MS: u64 = 10_000;

/// Checks every acknowledged message is stored, each `(device, seq)` once.
fn assert_acked_stored(influx: &Influx, db: &str, acked: &HashSet<(String, i64)>, logs: &str) {
    let stored = wait_until(
        Duration::from_secs(120),
        "every acked message in InfluxDB",
        || {
            let keys = stored_telemetry_keys(influx, db).ok()?;
            acked.is_subset(&keys).then_some(keys)
        },
    )
    .unwrap_or_else(|e| {
        let keys = stored_telemetry_keys(influx, db).unwrap_or_default();
        let missing: Vec<_> = acked.difference(&keys).take(5).collect();
        panic!(
            "{e}: {} of {} acked messages missing, e.g. {missing:?}\n{logs}",
            acked.difference(&keys).count(),
            acked.len()
        )
    });
    let points = influx.sum_counts(db, COUNT_TELEMETRY).unwrap();
    assert_eq!(
        points as usize,
        stored.len(),
        "one point per (device, seq): nothing stored twice"
    );
}

fn two_instances(
    work: &std::path::Path,
    nats: &NatsCluster,
    pg: &Postgres,
    store: &StoreTarget,
) -> (GatewayProcess, GatewayProcess) {
    let cluster = "lease_ttl_ms = 3000\n".to_string();
    let a = cluster_gateway(&work.join("a"), "gw-a", nats, pg, store, &cluster).unwrap();
    let b = cluster_gateway(&work.join("b"), "gw-b", nats, pg, store, &cluster).unwrap();
    let owners = wait_for_owners(pg, Duration::from_secs(60), "32 + 32 partitions", |o| {
        o.values().sum::<usize>() == 64 && o.len() == 2 && o.values().all(|n| *n == 32)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_tail(), b.log_tail()));
    println!("owners: {owners:?}");
    wait_for_subscriptions(&[&a, &b], 64, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_tail(), b.log_tail()));
    (a, b)
}

#[test]
fn a_nats_node_killed_and_restarted_loses_no_acknowledged_message() {
    let work = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start().unwrap();
    let pg = Postgres::start().unwrap();
    let influx = Influx::start().unwrap();
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "node_loss".into(),
    };
    let (a, b) = two_instances(work.path(), &nats, &pg, &store);

    // 500 devices × 40 messages, at a rate that spreads them over the kill and restart.
    let messages = fleet_messages(500, 40, base_ts());
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (ports, messages, acked) = (nats.mqtt_ports(), messages.clone(), Arc::clone(&acked));
        std::thread::spawn(move || {
            publish_to_cluster(&ports, "pub-node-loss", messages, 16, Some(1000), acked)
        })
    };
    wait_until(
        Duration::from_secs(120),
        "a third of the messages acked",
        || (acked.load(Ordering::SeqCst) >= 6000).then_some(()),
    )
    .unwrap();
    nats.kill9(0);
    println!("killed n1 at {} acked", acked.load(Ordering::SeqCst));
    std::thread::sleep(Duration::from_secs(5));
    nats.restart(0).unwrap();
    println!("restarted n1 at {} acked", acked.load(Ordering::SeqCst));
    let done = publisher.join().unwrap().unwrap();
    let acked_keys = acked_keys(&messages, &done);
    println!(
        "publisher: {} of {} acknowledged",
        acked_keys.len(),
        messages.len()
    );
    assert!(
        acked_keys.len() >= 19_000,
        "the cluster kept acknowledging through the node loss: {}",
        acked_keys.len()
    );
    assert_acked_stored(
        &influx,
        "node_loss",
        &acked_keys,
        &format!("{}\n{}\n{}", a.log_tail(), b.log_tail(), nats.log_tail(0)),
    );
    let rejected: u64 = [&a, &b]
        .iter()
        .map(|g| g.metrics().unwrap()["rejected"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(rejected, 0, "the partitioned topics decode");
}

#[test]
fn a_gateway_killed_hands_its_partitions_over_within_ten_seconds_and_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start().unwrap();
    let pg = Postgres::start().unwrap();
    let influx = Influx::start().unwrap();
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "gateway_loss".into(),
    };
    let (a, mut b) = two_instances(work.path(), &nats, &pg, &store);

    let messages = fleet_messages(500, 30, base_ts());
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (ports, messages, acked) = (nats.mqtt_ports(), messages.clone(), Arc::clone(&acked));
        std::thread::spawn(move || {
            publish_to_cluster(&ports, "pub-gw-loss", messages, 16, Some(1000), acked)
        })
    };
    wait_until(
        Duration::from_secs(120),
        "a third of the messages acked",
        || (acked.load(Ordering::SeqCst) >= 5000).then_some(()),
    )
    .unwrap();
    let started = |g: &GatewayProcess| g.log_text().matches("Partition session started.").count();
    let before = started(&a);
    b.kill9();
    let killed = Instant::now();
    // Its 32 leases expire (lease_ttl 3 s) and gw-a takes them.
    wait_for_owners(&pg, Duration::from_secs(30), "gw-a owning all 64", |o| {
        o.get("gw-a") == Some(&64)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log_tail()));
    let moved = killed.elapsed();
    // ... and, after the broker's ack_wait, consumes them: the sessions connected.
    wait_until(Duration::from_secs(60), "gw-a's 32 new sessions", || {
        (started(&a) >= before + 32).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log_tail()));
    let consuming = killed.elapsed();
    println!(
        "gateway loss: leases moved {:.1} s after kill -9; sessions running {:.1} s after (ack_wait {} s)",
        moved.as_secs_f64(),
        consuming.as_secs_f64(),
        ACK_WAIT_MS / 1000
    );
    assert!(moved < Duration::from_secs(10), "leases moved in {moved:?}");
    assert!(
        consuming < Duration::from_millis(10_000 + ACK_WAIT_MS),
        "partitions consumed again {consuming:?} after the kill"
    );

    let done = publisher.join().unwrap().unwrap();
    let acked_keys = acked_keys(&messages, &done);
    println!(
        "publisher: {} of {} acknowledged",
        acked_keys.len(),
        messages.len()
    );
    assert_eq!(
        acked_keys.len(),
        messages.len(),
        "a gateway's death does not stop the broker acknowledging"
    );
    let diagnosis = format!(
        "gw-a metrics: {}\ngw-a dead letters: {:?}\n{}",
        a.metrics().map(|m| m.to_string()).unwrap_or_default(),
        a.dead_letters(5).unwrap_or_default(),
        a.log_tail()
    );
    assert_acked_stored(&influx, "gateway_loss", &acked_keys, &diagnosis);
}
