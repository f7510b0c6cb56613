//! Bounded stores and loud loss (issue 13): the dead-letter store keeps at most
//! its cap and counts what it drops; a burst of sequence gaps with Mosquitto at
//! its defaults (1000 queued, 20 in flight) raises a warning naming the broker's
//! limits, and a metric.

use std::time::Duration;

use e2e_tests::*;

#[test]
fn the_dead_letter_store_keeps_its_cap_and_counts_what_it_drops() {
    let broker = Mosquitto::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "ops-dl",
        "[retention]\ndead_letters_max_count = 20\ndead_letters_max_mb = 1\n",
    )
    .unwrap();
    // 60 small bad messages, then 40 of 60 KiB (2.4 MB, over the 1 MiB cap).
    let mut msgs: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| (format!("fixtures/bad-{i}/telemetry"), b"{not json".to_vec()))
        .collect();
    let n = msgs.len();
    assert_eq!(
        publish_all(
            broker.port,
            "pub-ops-dl",
            std::mem::take(&mut msgs),
            None,
            None
        )
        .unwrap(),
        n
    );
    wait_until(Duration::from_secs(30), "60 rejections", || {
        (gw.metrics().ok()?["rejected"].as_u64()? >= 60).then_some(())
    })
    .unwrap();
    // The rejections are counted as the batch is built; its dead letters land (and the cap
    // drops the oldest) when it commits, a moment later.
    let metric = |name: &str| -> Option<u64> {
        let (_, text) = gw.get("/metrics", None).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    };
    wait_until(
        Duration::from_secs(30),
        "the 60 dead letters committed",
        || {
            (metric("gateway_dead_letters_stored")? + metric("gateway_dead_letters_dropped_total")?
                >= 60)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    let kept = gw.dead_letters(1000).unwrap();
    assert_eq!(kept.len(), 20, "the count cap holds");
    let (_, text) = gw.get("/metrics", None).unwrap();
    assert!(
        text.contains("gateway_dead_letters_dropped_total 40"),
        "{text}"
    );
    assert!(text.contains("gateway_dead_letters_stored 20"), "{text}");
    assert!(
        gw.log_text().contains("Dead-letter store full"),
        "{}",
        gw.log_tail()
    );

    let big: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("fixtures/big-{i}/telemetry"), vec![b'x'; 60 * 1024]))
        .collect();
    assert_eq!(
        publish_all(broker.port, "pub-ops-dl2", big, None, None).unwrap(),
        40
    );
    wait_until(Duration::from_secs(30), "100 rejections", || {
        (gw.metrics().ok()?["rejected"].as_u64()? >= 100).then_some(())
    })
    .unwrap();
    // The rejections are counted as the batch is built; its dead letters land when it commits.
    let stored_bytes = || -> Option<u64> {
        let (_, text) = gw.get("/metrics", None).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("gateway_dead_letters_stored_bytes "))
            .and_then(|v| v.trim().parse().ok())
    };
    let bytes = wait_until(Duration::from_secs(30), "the byte cap to be used", || {
        stored_bytes().filter(|b| *b > 900 * 1024)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?} bytes stored", stored_bytes()));
    assert!(bytes <= 1024 * 1024, "the byte cap holds: {bytes}");
}

#[test]
fn a_gap_burst_with_mosquitto_defaults_is_a_warning_and_a_metric() {
    // Mosquitto's defaults: max_queued_messages 1000, max_inflight_messages 20.
    let broker = Mosquitto::start_with("").unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "ops-gaps",
        "[health]\ncheck_every_s = 1\ngap_burst = 100\ngap_window_s = 30\n[analytics]\nenabled = false\n",
    )
    .unwrap();
    let base = base_ts();
    // One message so the device is known, then the gateway goes away.
    assert_eq!(
        publish_all(
            broker.port,
            "pub-gaps",
            vec![telemetry_message(0, 0, base)],
            None,
            None
        )
        .unwrap(),
        1
    );
    wait_until(Duration::from_secs(20), "the first message", || {
        (gw.metrics().ok()?["acked"].as_u64()? >= 1).then_some(())
    })
    .unwrap();
    gw.stop();
    // 3000 messages while the gateway is away: the broker keeps 1000 and drops the rest silently.
    let msgs: Vec<_> = (1..=3000).map(|r| telemetry_message(0, r, base)).collect();
    assert_eq!(
        publish_all(broker.port, "pub-gaps", msgs, None, None).unwrap(),
        3000
    );
    gw.restart().unwrap();
    // The newest message, after the dropped ones.
    assert_eq!(
        publish_all(
            broker.port,
            "pub-gaps",
            vec![telemetry_message(0, 3001, base)],
            None,
            None
        )
        .unwrap(),
        1
    );
    wait_until(Duration::from_secs(30), "the gap-burst warning", || {
        gw.log_text()
            .contains("Burst of sequence gaps")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    let log = gw.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("Burst of sequence gaps"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("max_queued_messages"),
        "names the likely cause: {line}"
    );
    let (_, text) = gw.get("/metrics", None).unwrap();
    assert!(
        text.contains("gateway_sequence_gap_bursts_total 1"),
        "{text}"
    );
    let gaps: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("gateway_sequence_gaps "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(gaps >= 1900, "about 2000 messages missing: {gaps}");
}
