//! Every message the broker accepted ends up in InfluxDB exactly once — also
//! across a `kill -9` of the gateway, a 30 s InfluxDB outage and a Mosquitto restart.
//! (Issue #2, "What must be shown".)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e_tests::*;

const DEVICES: usize = 1000;

/// Waits until InfluxDB holds `expected` telemetry points, then checks every device has its share.
fn assert_all_stored(
    influx: &Influx,
    db: &str,
    gw: &GatewayProcess,
    expected: i64,
    per_device: i64,
) {
    let stored = wait_until(Duration::from_secs(180), "all points in InfluxDB", || {
        let n = influx.sum_counts(db, COUNT_TELEMETRY).ok()?;
        (n >= expected).then_some(n)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}; stored {:?}; metrics {:?}; gateway log:\n{}",
            influx.sum_counts(db, COUNT_TELEMETRY),
            gw.metrics().ok(),
            gw.log_tail()
        )
    });
    assert_eq!(
        stored, expected,
        "stored points must equal published messages: none lost, none duplicated"
    );
    let per_series = influx
        .counts_by_series(db, &format!("{COUNT_TELEMETRY} GROUP BY device_id"))
        .unwrap();
    assert_eq!(per_series.len(), DEVICES, "every device has a series");
    for (series, n) in per_series {
        assert_eq!(
            n, per_device,
            "device {series} has {n} points, expected {per_device}"
        );
    }
}

fn published_everything(acked: usize, expected: usize) {
    assert_eq!(acked, expected, "the broker acknowledged every publish");
}

#[test]
fn hundred_thousand_messages_from_a_thousand_devices_are_stored_exactly_once() {
    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let influx = Influx::start().unwrap();
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "exactly_once".into(),
    };
    let gw =
        GatewayProcess::spawn(work.path(), broker.port, &store, "gw-exactly-once", "").unwrap();

    let messages = fleet_messages(DEVICES, 100, base_ts());
    let acked = publish_all(broker.port, "pub-exactly-once", messages, None, None).unwrap();
    published_everything(acked, 100_000);
    assert_all_stored(&influx, "exactly_once", &gw, 100_000, 100);

    let m = gw.metrics().unwrap();
    assert_eq!(m["rejected"], 0, "{m}");
    assert!(m["acked"].as_u64().unwrap() >= 100_000, "{m}");
    assert_eq!(m["sequence_gaps"], 0, "no gaps in a complete stream: {m}");
    let device = gw.get_json("/devices/toilet-00000").unwrap();
    assert_eq!(device["sequence"]["messages"], 100, "{device}");
    assert_eq!(device["sequence"]["gaps"], 0, "{device}");
}

#[test]
fn sequence_gaps_before_the_broker_are_counted_per_device() {
    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "gw-gaps",
        "",
    )
    .unwrap();
    let base = base_ts();
    // Device 0 skips rounds 3, 4 and 7 (lost before the broker); round 7 arrives late, after 9.
    let mut messages: Vec<_> = (0..10u32)
        .filter(|r| ![3, 4, 7].contains(r))
        .map(|r| telemetry_message(0, r, base))
        .collect();
    messages.push(telemetry_message(0, 7, base));
    publish_all(broker.port, "pub-gaps", messages, None, None).unwrap();
    let device = wait_until(
        Duration::from_secs(30),
        "the device's sequence state",
        || {
            let v = gw.get_json("/devices/toilet-00000").ok()?;
            (v["sequence"]["messages"] == 8).then_some(v)
        },
    )
    .unwrap();
    assert_eq!(
        device["sequence"]["gaps"], 2,
        "3 missing, then 7 filled late: {device}"
    );
    assert_eq!(gw.metrics().unwrap()["sequence_gaps"], 2);
}

#[test]
fn kill_dash_nine_mid_stream_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let influx = Influx::start().unwrap();
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "kill9".into(),
    };
    let mut gw = GatewayProcess::spawn(work.path(), broker.port, &store, "gw-kill9", "").unwrap();

    let messages = fleet_messages(DEVICES, 100, base_ts());
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let acked = Arc::clone(&acked);
        let port = broker.port;
        std::thread::spawn(move || publish_all(port, "pub-kill9", messages, Some(acked), None))
    };
    // Kill the gateway once a third of the stream is in, mid-batch.
    wait_until(Duration::from_secs(120), "a third of the stream", || {
        let m = gw.metrics().ok()?;
        (m["received"].as_u64()? >= 30_000).then_some(())
    })
    .unwrap();
    gw.kill9();
    let before_restart = acked.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    gw.restart().unwrap();
    let total = publisher.join().unwrap().unwrap();
    published_everything(total, 100_000);
    assert!(before_restart < 100_000, "the kill happened mid-stream");
    assert_all_stored(&influx, "kill9", &gw, 100_000, 100);
}

#[test]
fn influxdb_down_for_thirty_seconds_is_absorbed_by_the_spool() {
    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let mut influx = Influx::start().unwrap();
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "outage".into(),
    };
    let gw = GatewayProcess::spawn(work.path(), broker.port, &store, "gw-outage", "").unwrap();

    // 40 000 messages at 1 000/s: the outage (from ~5 s to ~35 s) falls in the middle.
    let messages = fleet_messages(DEVICES, 40, base_ts());
    let publisher = {
        let port = broker.port;
        std::thread::spawn(move || publish_all(port, "pub-outage", messages, None, Some(1000)))
    };
    wait_until(Duration::from_secs(60), "the stream to start", || {
        (influx.sum_counts("outage", COUNT_TELEMETRY).ok()? > 2000).then_some(())
    })
    .unwrap();
    influx.stop();
    std::thread::sleep(Duration::from_secs(30));
    let during = gw.metrics().unwrap();
    influx.start_again().unwrap();
    let total = publisher.join().unwrap().unwrap();
    published_everything(total, 40_000);
    assert_all_stored(&influx, "outage", &gw, 40_000, 40);

    assert!(
        during["spooled_batches"].as_u64().unwrap() > 0,
        "batches were spooled during the outage: {during}"
    );
    let after = wait_until(Duration::from_secs(60), "the spool to drain", || {
        let m = gw.metrics().ok()?;
        (m["spool_backlog_batches"] == 0).then_some(m)
    })
    .unwrap();
    assert_eq!(
        after["replayed_batches"], after["spooled_batches"],
        "every spooled batch was replayed: {after}"
    );
}

#[test]
fn mosquitto_restart_mid_stream_loses_nothing_it_accepted() {
    let work = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start().unwrap();
    let influx = Influx::start().unwrap();
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "broker_restart".into(),
    };
    let gw =
        GatewayProcess::spawn(work.path(), broker.port, &store, "gw-broker-restart", "").unwrap();
    // A second, bare subscriber records what the broker accepted and delivered.
    let witness = Witness::start(broker.port, "witness-broker-restart").unwrap();

    let messages = fleet_messages(DEVICES, 50, base_ts());
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let acked = Arc::clone(&acked);
        let port = broker.port;
        std::thread::spawn(move || {
            publish_tracked(
                port,
                "pub-broker-restart",
                messages,
                Some(acked),
                Some(5000),
                Duration::from_secs(10),
            )
        })
    };
    wait_until(Duration::from_secs(60), "a third of the stream", || {
        (acked.load(Ordering::SeqCst) >= 15_000).then_some(())
    })
    .unwrap();
    broker.restart().unwrap();
    let accepted = publisher.join().unwrap().unwrap();
    let acked_count = accepted.iter().filter(|a| **a).count();
    assert!(
        acked_count >= 49_000,
        "the stream went on after the restart: {acked_count} acknowledged"
    );
    // Let the witness drain what the broker holds for it.
    let mut last = (0, std::time::Instant::now());
    wait_until(Duration::from_secs(60), "the witness to go quiet", || {
        let n = witness.count();
        if n != last.0 {
            last = (n, std::time::Instant::now());
        }
        (n >= acked_count || last.1.elapsed() > Duration::from_secs(3)).then_some(())
    })
    .unwrap();
    let delivered = witness.finish();
    assert!(
        delivered.len() > 15_000,
        "the witness saw the stream on both sides of the restart: {}",
        delivered.len()
    );

    let stored = wait_until(
        Duration::from_secs(120),
        "every accepted message in InfluxDB",
        || {
            let stored = stored_telemetry_keys(&influx, "broker_restart").ok()?;
            delivered.is_subset(&stored).then_some(stored)
        },
    )
    .unwrap_or_else(|e| panic!("{e}; metrics {:?}\n{}", gw.metrics().ok(), gw.log_tail()));
    assert!(
        stored.len() <= 50_000,
        "nothing stored that was not published"
    );
    assert!(
        stored.len() >= acked_count,
        "every message the broker acknowledged is stored: {} < {acked_count}",
        stored.len()
    );
    let m = gw.metrics().unwrap();
    assert!(
        m["mqtt_connects"].as_u64().unwrap() >= 2,
        "the gateway reconnected: {m}"
    );
    eprintln!("broker restart: {acked_count} of 50000 acknowledged to the publisher, {} delivered to the witness, {} stored", delivered.len(), stored.len());
}

/// Issue #12: an offline backlog of 5 000 messages, delivered newest-first after live
/// traffic, gives no false gap and no false duplicate, is stored whole, and every
/// message is analysed — the late ones in device-time order.
#[test]
fn a_backlog_of_five_thousand_newest_first_after_live_traffic_is_stored_and_analysed() {
    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let influx = Influx::start().unwrap();
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "backlog".into(),
    };
    let gw = GatewayProcess::spawn(work.path(), broker.port, &store, "gw-backlog", "").unwrap();
    let base = base_ts();
    let round = |r| telemetry_message(0, r, base);
    // Live for 100 rounds; offline for rounds 100..5100 (kept in the device's queue);
    // back live for 200 rounds; then the queue, newest first; then live again.
    let mut messages: Vec<_> = (0..100).map(round).collect();
    messages.extend((5100..5300).map(round));
    messages.extend((100..5100).rev().map(round));
    messages.extend((5300..5400).map(round));
    let acked = publish_all(broker.port, "pub-backlog", messages, None, None).unwrap();
    published_everything(acked, 5400);

    let stored = wait_until(Duration::from_secs(120), "5 400 points in InfluxDB", || {
        let n = influx.sum_counts("backlog", COUNT_TELEMETRY).ok()?;
        (n >= 5400).then_some(n)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}; metrics {:?}; log:\n{}",
            gw.metrics().ok(),
            gw.log_tail()
        )
    });
    assert_eq!(stored, 5400, "every message stored once");
    let m = wait_until(Duration::from_secs(60), "the backlog analysed", || {
        let m = gw.metrics().ok()?;
        (m["analysed"] == 5400 && m["late_replayed"] == 5000).then_some(m)
    })
    .unwrap_or_else(|e| panic!("{e}; metrics {:?}", gw.metrics().ok()));
    assert_eq!(m["sequence_gaps"], 0, "no false gap: {m}");
    assert_eq!(m["duplicates"], 0, "no false duplicate: {m}");
    assert_eq!(m["rejected"], 0, "{m}");
    assert_eq!(
        m["late_replayed"], 5000,
        "the backlog is analysed in device-time order: {m}"
    );
    assert_eq!(m["late_unordered"], 0, "{m}");
    let device = gw.get_json("/devices/toilet-00000").unwrap();
    assert_eq!(device["sequence"]["messages"], 5400, "{device}");
    assert_eq!(device["sequence"]["gaps"], 0, "{device}");
    let (_, text) = gw.get("/metrics", None).unwrap();
    assert!(
        text.contains("gateway_late_messages_replayed_total 5000"),
        "Prometheus text has the count: {text}"
    );
}
