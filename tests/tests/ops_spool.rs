//! No silent loss in the spool (issue 13): batches spooled while InfluxDB is down,
//! then three spool files damaged the ways an operator meets (cut at a line
//! boundary, emptied, cut mid-line). After InfluxDB is back and the gateway restarts,
//! every intact file is replayed, each damaged one is quarantined in `spool/corrupt/`,
//! counted in the Prometheus exposition and logged as an error, and nothing of it is
//! replayed: the store holds exactly the points of the intact files.

use std::path::PathBuf;
use std::time::Duration;

use e2e_tests::*;

const TELEMETRY: [&str; 3] = ["toilet", "purifier", "shower"];

/// Telemetry points in a spool file's JSON lines (header excluded).
fn telemetry_points(bytes: &[u8]) -> usize {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|p| TELEMETRY.contains(&p["measurement"].as_str().unwrap_or("")))
        .count()
}

#[test]
fn damaged_spool_files_are_quarantined_counted_logged_and_never_replayed() {
    let broker = Mosquitto::start().unwrap();
    let mut influx = Influx::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "ops_spool".into(),
    };
    let mut gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &store,
        "ops-spool",
        "[batch]\nmax_messages = 40\nmax_wait_ms = 20\n[analytics]\nenabled = false\n",
    )
    .unwrap();
    influx.stop();

    let messages = fleet_messages(20, 30, base_ts());
    let total = messages.len();
    assert_eq!(
        publish_all(broker.port, "pub-ops-spool", messages, None, None).unwrap(),
        total
    );
    wait_until(
        Duration::from_secs(60),
        "every message acked (spooled)",
        || {
            let m = gw.metrics().ok()?;
            (m["acked"].as_u64()? >= total as u64).then_some(())
        },
    )
    .unwrap();
    gw.stop();

    let spool = gw.data_dir.join("spool");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{} spool files", files.len());
    let spooled: usize = files
        .iter()
        .map(|f| telemetry_points(&std::fs::read(f).unwrap()))
        .sum();
    assert_eq!(spooled, total, "every message is in the spool");

    // Damage three files; remember what they held.
    let mut lost = 0;
    for (i, f) in files.iter().take(3).enumerate() {
        let bytes = std::fs::read(f).unwrap();
        lost += telemetry_points(&bytes);
        let damaged: Vec<u8> = match i {
            0 => {
                // Cut at a line boundary: the last line is gone, every remaining line is whole.
                let body = &bytes[..bytes.len() - 1];
                let cut = body.iter().rposition(|&b| b == b'\n').unwrap() + 1;
                bytes[..cut].to_vec()
            }
            1 => Vec::new(),
            _ => bytes[..bytes.len() - 25].to_vec(),
        };
        std::fs::write(f, damaged).unwrap();
    }

    influx.start_again().unwrap();
    gw.restart().unwrap();
    wait_until(Duration::from_secs(60), "the spool to drain", || {
        let m = gw.metrics().ok()?;
        (m["spool_backlog_batches"].as_u64()? == 0).then_some(())
    })
    .unwrap();

    let stored = influx
        .sum_counts(
            "ops_spool",
            "SELECT count(\"seq\") FROM \"toilet\", \"purifier\", \"shower\"",
        )
        .unwrap();
    assert_eq!(
        stored as usize,
        total - lost,
        "exactly the intact files are replayed ({lost} points were in damaged files)"
    );
    let corrupt = std::fs::read_dir(spool.join("corrupt")).unwrap().count();
    assert_eq!(corrupt, 3, "each damaged file is quarantined");
    let (status, text) = gw.get("/metrics", None).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("gateway_spool_quarantined_files_total 3"),
        "{text}"
    );
    assert!(text.contains("gateway_spool_quarantine_files 3"), "{text}");
    let log = gw.log_text();
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("Spool file is damaged"))
        .count();
    assert_eq!(errors, 3, "{}", gw.log_tail());
    assert!(log.contains("the file is empty"), "{}", gw.log_tail());
}
