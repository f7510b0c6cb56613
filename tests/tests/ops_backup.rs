//! Backup and restore (issue 13): `gateway backup DIR` beside a running gateway
//! (SQLite online backup of every database, plus the spool), the data directory
//! wiped, `gateway restore DIR`: the tickets, the telemetry and the dead letters
//! are identical, and the gateway runs on the restored data.

use std::process::Command;
use std::time::Duration;

use e2e_tests::*;

fn leak(device: &str, seq: u32, ts: i64) -> (String, Vec<u8>) {
    let payload = format!(
        r#"{{"v":1,"device_id":"{device}","boot_id":7,"seq":{seq},"ts":{ts},"event":{{"fault":{{"code":"leak","severity":"critical","state":"raised","value":60.0}}}}}}"#
    );
    (format!("fixtures/{device}/event"), payload.into_bytes())
}

/// Every row of `table`, as text, in a stable order.
fn dump(db: &std::path::Path, table: &str) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
    let cols = stmt.column_count();
    let mut rows: Vec<String> = stmt
        .query_map([], |r| {
            let mut out = Vec::new();
            for i in 0..cols {
                let v: rusqlite::types::Value = r.get(i)?;
                out.push(format!("{v:?}"));
            }
            Ok(out.join("|"))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort();
    rows
}

fn gateway(config: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(gateway_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "gateway {args:?}: {text}");
    text
}

#[test]
fn backup_wipe_restore_gives_identical_tickets_and_telemetry() {
    let broker = Mosquitto::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    let devices: Vec<_> = (0..4).map(fleet_device).collect();
    registry::register_devices(&db, &devices).unwrap();
    let mut gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "ops-backup",
        &registry::maintenance_toml(&db),
    )
    .unwrap();
    let now = gateway::clock::now_ms() - 60_000;
    let mut msgs = fleet_messages(4, 25, base_ts());
    msgs.push(leak(&devices[0].0, 1, now));
    msgs.push(leak(&devices[3].0, 1, now));
    msgs.push(("fixtures/x/telemetry".into(), b"not json".to_vec()));
    let n = msgs.len();
    assert_eq!(
        publish_all(broker.port, "pub-ops-backup", msgs, None, None).unwrap(),
        n
    );
    wait_until(
        Duration::from_secs(30),
        "every message acked and two tickets",
        || {
            let m = gw.metrics().ok()?;
            (m["acked"].as_u64()? >= n as u64 && m["maintenance_applied"].as_u64()? >= 2)
                .then_some(())
        },
    )
    .unwrap();

    // Online backup, beside the running gateway.
    let backup_dir = work.path().join("backup");
    let out = gateway(gw.config_path(), &["backup", backup_dir.to_str().unwrap()]);
    assert!(out.contains("backup written"), "{out}");
    gw.stop();
    let data = gw.data_dir.clone();
    let before = (
        dump(&db, "tickets"),
        dump(&data.join("telemetry.db"), "samples"),
        dump(&data.join("telemetry.db"), "series"),
        dump(&data.join("state.db"), "dead_letters"),
        dump(&data.join("state.db"), "devices"),
    );
    assert!(
        before.0.iter().filter(|t| t.contains("\"leak\"")).count() >= 2,
        "at least the two injected leaks' tickets: {:#?}",
        before.0
    );
    assert!(before.1.len() >= 100, "{} points", before.1.len());
    assert!(!before.2.is_empty(), "the points' series");
    assert_eq!(before.3.len(), 1, "one dead letter");

    // Wipe everything, restore, compare.
    std::fs::remove_dir_all(&data).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let out = gateway(gw.config_path(), &["restore", backup_dir.to_str().unwrap()]);
    assert!(out.contains("restored"), "{out}");
    let after = (
        dump(&db, "tickets"),
        dump(&data.join("telemetry.db"), "samples"),
        dump(&data.join("telemetry.db"), "series"),
        dump(&data.join("state.db"), "dead_letters"),
        dump(&data.join("state.db"), "devices"),
    );
    assert_eq!(before, after);

    // A second restore over live data is refused without --force.
    let refused = Command::new(gateway_bin())
        .arg("--config")
        .arg(gw.config_path())
        .args(["restore", backup_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));

    // A damaged backup does not verify.
    let manifest = backup_dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let state = backup_dir.join("state.db");
    let mut bytes = std::fs::read(&state).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();
    let damaged = Command::new(gateway_bin())
        .arg("--config")
        .arg(gw.config_path())
        .args(["restore", "--force", backup_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!damaged.status.success());
    assert!(String::from_utf8_lossy(&damaged.stderr).contains("does not verify"));
    assert!(text.contains("state.db"));

    // The gateway runs on the restored data.
    gw.restart().unwrap();
    // The restored state.db knows every device's sequence state (the `devices` counter of
    // /metrics.json only counts what this process has seen since it started).
    for (id, _) in &devices {
        let d = gw.get_json(&format!("/devices/{id}")).unwrap();
        assert_eq!(d["device_id"], id.as_str(), "{d}");
        assert!(!d["sequence"].is_null(), "{d}");
    }
}
