//! Clustered mode, (d): a third instance joining takes its share — every instance within
//! ±1 of 64 / 3 — through graceful hand-overs, with no acknowledged message lost; a graceful
//! stop of one instance gives its partitions to the others at once; the partitions' new
//! owners resume their devices' analytics and sequence state from PostgreSQL. (Issue #15.)

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use e2e_tests::cluster::*;
use e2e_tests::*;

#[test]
fn a_third_instance_joining_rebalances_within_one_partition_and_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start().unwrap();
    let pg = Postgres::start().unwrap();
    let influx = Influx::start().unwrap();
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "scale".into(),
    };
    let cluster = "lease_ttl_ms = 3000\n";
    let a = cluster_gateway(&work.path().join("a"), "gw-a", &nats, &pg, &store, cluster).unwrap();
    let b = cluster_gateway(&work.path().join("b"), "gw-b", &nats, &pg, &store, cluster).unwrap();
    wait_for_owners(&pg, Duration::from_secs(60), "32 + 32", |o| {
        o.len() == 2 && o.values().all(|n| *n == 32)
    })
    .unwrap();
    wait_for_subscriptions(&[&a, &b], 64, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_tail(), b.log_tail()));

    let messages = fleet_messages(300, 20, base_ts());
    let publisher = {
        let (ports, messages) = (nats.mqtt_ports(), messages.clone());
        std::thread::spawn(move || {
            publish_to_cluster(
                &ports,
                "pub-scale",
                messages,
                8,
                Some(600),
                Arc::new(AtomicUsize::new(0)),
            )
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let mut c =
        cluster_gateway(&work.path().join("c"), "gw-c", &nats, &pg, &store, cluster).unwrap();
    let owners = wait_for_owners(&pg, Duration::from_secs(60), "three even shares", |o| {
        o.len() == 3 && o.values().sum::<usize>() == 64 && o.values().all(|n| (21..=22).contains(n))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_tail(), c.log_tail()));
    println!("after the join: {owners:?}");
    // Each instance's readiness says which partitions it owns, as the lease table does.
    for (g, id) in [(&a, "gw-a"), (&c, "gw-c")] {
        let want = owners[id];
        let ready = wait_until(
            Duration::from_secs(10),
            "readiness to report the partitions",
            || {
                let (_, text) = g.get("/health/ready", None).ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                (v["cluster"]["owned"].as_u64()? as usize == want).then_some(v)
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", g.get("/health/ready", None)));
        assert_eq!(ready["cluster"]["instance"], id);
        assert_eq!(
            ready["cluster"]["partitions"].as_object().unwrap().len(),
            want
        );
        assert_eq!(ready["cluster"]["instances"].as_array().unwrap().len(), 3);
    }
    // The fleet page's platform card reads every instance's share from one of them.
    let shares = wait_until(Duration::from_secs(10), "the instances' shares", || {
        let v = a.get_json("/fleet/instances").ok()?;
        let owners: std::collections::BTreeMap<String, usize> =
            serde_json::from_value(v["owners"].clone()).ok()?;
        (v["clustered"] == true && owners == owners_now(&pg)).then_some(owners)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", a.get_json("/fleet/instances")));
    println!("/fleet/instances on gw-a: {shares:?}");

    // gw-c takes work: its sessions consume before it leaves. (Stopping it within a fraction
    // of a second of its sessions connecting lost 40 of 6 000 messages in 2 of ~10 runs, all
    // in one partition that went a → b → c (0.2 s) → b: see README, known issues.)
    wait_until(Duration::from_secs(60), "gw-c to consume", || {
        (c.metrics().ok()?["acked"].as_u64()? > 0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log_tail()));

    // A graceful stop of gw-c: its partitions go back to gw-a and gw-b, 32 each.
    c.stop();
    let owners = wait_for_owners(&pg, Duration::from_secs(30), "two even shares again", |o| {
        o.len() == 2 && o.values().all(|n| *n == 32)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log_tail()));
    println!("after gw-c left: {owners:?}");
    assert!(
        c.log_text().contains("every partition released"),
        "gw-c released its leases: {}",
        c.log_tail()
    );

    // No baseline relearned: the instance that joined loaded the state its partitions'
    // previous owners saved at the hand-over, and the others loaded gw-c's on its way out.
    let restored_c = restored_devices(&c.log_text());
    let restored_ab = restored_devices(&a.log_text()) + restored_devices(&b.log_text());
    println!("devices restored from PostgreSQL: gw-c {restored_c}, gw-a + gw-b {restored_ab}");
    assert!(
        restored_c > 0,
        "gw-c resumed no device's analytics state: {}",
        c.log_tail()
    );
    let saved: usize = pg
        .query("SELECT count(*) FROM analytics_state")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(saved >= restored_c, "analytics_state has {saved} devices");

    let done = publisher.join().unwrap().unwrap();
    let acked = acked_keys(&messages, &done);
    assert_eq!(acked.len(), messages.len());
    let stored = wait_until(
        // 23 s on a quiet machine; over 90 s once under another job's load.
        Duration::from_secs(240),
        "every acked message stored",
        || {
            let keys = stored_telemetry_keys(&influx, "scale").ok()?;
            acked.is_subset(&keys).then_some(keys)
        },
    )
    .unwrap_or_else(|e| {
        let keys = stored_telemetry_keys(&influx, "scale").unwrap_or_default();
        let missing: Vec<_> = acked.difference(&keys).collect();
        let mut partitions: Vec<u32> = missing
            .iter()
            .map(|(device, _)| gateway::cluster::partition::partition_of(device, 64))
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        // What the brokers and the gateways said of the partitions that lost messages.
        let mut story = String::new();
        for p in &partitions {
            let id = gateway::cluster::partition::client_id(*p);
            story += &format!("\n--- partition {p} ({id}), nats:\n{}", nats.log_lines_with(&format!("\"{id}\"")));
            for (name, g) in [("a", &a), ("b", &b), ("c", &c)] {
                let lines: Vec<String> = g
                    .log_text()
                    .lines()
                    .filter(|l| l.contains(&format!("p={p}:")) || l.contains(&format!("p={p} ")) || l.contains(&format!("partition={p} ")))
                    .map(|l| format!("gw-{name}: {l}"))
                    .collect();
                story += &format!("\n{}", lines.join("\n"));
            }
        }
        panic!(
            "{e}: {} of {} acked messages stored, missing {} in partitions {partitions:?}, e.g. {:?}{story}",
            acked.intersection(&keys).count(),
            acked.len(),
            missing.len(),
            &missing[..missing.len().min(5)],
        )
    });
    assert_eq!(
        influx.sum_counts("scale", COUNT_TELEMETRY).unwrap() as usize,
        stored.len()
    );

    // Sequence state followed the devices from owner to owner: every device's count of
    // distinct messages is its 20 whichever instances handled them, and none is missing.
    let want = format!("{}|0|300", messages.len());
    let seen = wait_until(
        Duration::from_secs(20),
        "the sequence state in PostgreSQL",
        || {
            let row = pg
            .query(
                "SELECT sum((state::json->>'messages')::bigint - (state::json->>'duplicates')::bigint), \
                 sum((state::json->>'gaps')::bigint), count(*) FROM sequence_state",
            )
            .ok()?;
            let row = row.trim().to_owned();
            (row == want).then_some(row)
        },
    );
    assert!(
        seen.is_ok(),
        "distinct messages | gaps | devices in sequence_state: want {want}, got {:?}",
        pg.query("SELECT sum((state::json->>'messages')::bigint - (state::json->>'duplicates')::bigint), sum((state::json->>'gaps')::bigint), count(*) FROM sequence_state")
    );
}

/// The devices whose analytics state an instance loaded from PostgreSQL (its log's
/// "Partition analytics state loaded. partition=P restored=N" lines, summed).
fn restored_devices(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("Partition analytics state loaded"))
        .filter_map(|l| l.split("restored=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<usize>().ok())
        .sum()
}

/// The lease table's partitions per owner now.
fn owners_now(pg: &Postgres) -> std::collections::BTreeMap<String, usize> {
    pg.owners().unwrap_or_default()
}
