//! Clustered mode, shared maintenance state: leaks reported through the cluster while
//! partitions move (a third instance joins, then one leaves gracefully) open exactly one
//! ticket per device in the cluster's PostgreSQL database, and every ticket webhook is
//! delivered once although every instance runs an outbox dispatcher. (Issue #15.)
//!
//! Each instance used to keep tickets in a SQLite file of its own: a device whose partition
//! moved got a second ticket from its new owner.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use e2e_tests::cluster::*;
use e2e_tests::registry::register_in;
use e2e_tests::webhook::WebhookReceiver;
use e2e_tests::*;
use protocol::message::Model;

const DEVICES: usize = 16;
const ROUNDS: usize = 45;
const SECRET: &str = "0123456789abcdef0123";

fn leak_raised(device: &str, seq: usize, ts: i64) -> (String, Vec<u8>) {
    let payload = format!(
        r#"{{"v":1,"device_id":"{device}","boot_id":1,"seq":{seq},"ts":{ts},"event":{{"fault":{{"code":"leak","severity":"critical","state":"raised","value":60.0}}}}}}"#
    );
    (format!("fixtures/{device}/event"), payload.into_bytes())
}

#[test]
fn leaks_reported_while_partitions_move_open_one_ticket_each_and_each_webhook_arrives_once() {
    let work = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start().unwrap();
    let pg = Postgres::start().unwrap();
    let influx = Influx::start().unwrap();
    let receiver = WebhookReceiver::start(SECRET).unwrap();
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "tickets".into(),
    };
    let devices: Vec<(String, Model)> = (1..=DEVICES)
        .map(|i| (format!("toilet-{i:05}"), Model::Toilet))
        .collect();
    {
        let engine = maintenance::Engine::open_postgres(
            &pg.url(),
            maintenance::EngineConfig {
                policy: maintenance::Policy::default(),
                ticket_webhooks: Vec::new(),
            },
        )
        .unwrap();
        register_in(&engine, &devices).unwrap();
    }
    // Every instance dispatches the outbox, every second.
    let cluster = format!(
        "lease_ttl_ms = 3000\n[maintenance]\nticket_webhooks = [\"http://127.0.0.1:{port}/tickets\"]\n\
         tick_interval_s = 1\ndispatch_interval_s = 1\n[maintenance.delivery]\n\
         push_url = \"http://127.0.0.1:{port}/push\"\nhmac_secret = \"{SECRET}\"\nbackoff_base_s = 1\nbackoff_max_s = 1\n",
        port = receiver.port
    );
    let mut a =
        cluster_gateway(&work.path().join("a"), "gw-a", &nats, &pg, &store, &cluster).unwrap();
    let b = cluster_gateway(&work.path().join("b"), "gw-b", &nats, &pg, &store, &cluster).unwrap();
    wait_for_owners(&pg, Duration::from_secs(60), "32 + 32", |o| {
        o.len() == 2 && o.values().all(|n| *n == 32)
    })
    .unwrap();
    wait_for_subscriptions(&[&a, &b], 64, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_tail(), b.log_tail()));

    // Each device reports its leak once a second (a fault code repeated while it lasts),
    // through the join and the leave below.
    let start_ts = gateway::clock::now_ms() - 60_000;
    let mut messages = Vec::new();
    for round in 0..ROUNDS {
        for (id, _) in &devices {
            messages.push(leak_raised(id, round + 1, start_ts + round as i64 * 1_000));
        }
    }
    let total = messages.len();
    let publisher = {
        let ports = nats.mqtt_ports();
        std::thread::spawn(move || {
            publish_to_cluster(
                &ports,
                "pub-tickets",
                messages,
                4,
                Some(DEVICES as u32),
                Arc::new(AtomicUsize::new(0)),
            )
        })
    };
    std::thread::sleep(Duration::from_secs(5));
    let c = cluster_gateway(&work.path().join("c"), "gw-c", &nats, &pg, &store, &cluster).unwrap();
    let owners = wait_for_owners(&pg, Duration::from_secs(60), "three even shares", |o| {
        o.len() == 3 && o.values().sum::<usize>() == 64 && o.values().all(|n| (21..=22).contains(n))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_tail(), c.log_tail()));
    println!("after the join: {owners:?}");
    std::thread::sleep(Duration::from_secs(5));
    a.stop();
    let owners = wait_for_owners(&pg, Duration::from_secs(60), "b and c, 32 each", |o| {
        o.len() == 2 && o.values().all(|n| *n == 32)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", b.log_tail(), c.log_tail()));
    println!("after gw-a left: {owners:?}");

    let done = publisher.join().unwrap().unwrap();
    assert_eq!(
        done.iter().filter(|d| **d).count(),
        total,
        "every report PUBACKed"
    );
    // Every report processed: each device's events counted by the instances that stored them.
    wait_until(Duration::from_secs(60), "every report to be stored", || {
        let stored = influx
            .sum_counts("tickets", "SELECT count(\"seq\") FROM fault")
            .ok()?;
        (stored >= total as i64).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", b.log_tail(), c.log_tail()));

    // One ticket per device, whichever instances heard it.
    let rows = pg
        .query("SELECT device_id || ':' || count(*) FROM tickets GROUP BY device_id ORDER BY device_id")
        .unwrap();
    let tickets: BTreeMap<String, u32> = rows
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(d, n)| (d.to_owned(), n.trim().parse().unwrap_or(0)))
        .collect();
    println!("tickets per device: {tickets:?}");
    assert_eq!(
        tickets.len(),
        DEVICES,
        "a ticket for every device: {tickets:?}"
    );
    assert!(
        tickets.values().all(|n| *n == 1),
        "exactly one ticket per device: {tickets:?}"
    );

    // Each ticket webhook delivered once, with two (then three, then two) dispatchers.
    let outbox: usize = pg
        .query("SELECT count(*) FROM outbox WHERE channel = 'webhook'")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(outbox >= DEVICES, "a webhook per ticket at least: {outbox}");
    let delivered = wait_until(
        Duration::from_secs(60),
        "every ticket webhook to arrive",
        || {
            let got = receiver.received().on_path("/tickets");
            (got.len() >= outbox).then_some(got)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", receiver.received()));
    std::thread::sleep(Duration::from_secs(3)); // room for a wrong second delivery
    let received = receiver.received();
    assert_eq!(received.bad_signatures, 0);
    let twice: Vec<_> = received
        .on_path("/tickets")
        .into_iter()
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "webhooks delivered more than once: {twice:?}"
    );
    assert_eq!(delivered.len(), outbox, "one delivery per outbox row");
    println!(
        "{DEVICES} devices, {total} leak reports: {} tickets, {} ticket webhooks each delivered once",
        tickets.values().sum::<u32>(),
        delivered.len()
    );
    drop((b, c));
}
