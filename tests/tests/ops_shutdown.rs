//! A graceful stop (SIGTERM). The final analytics snapshot (issue 13): with periodic
//! snapshots far away, every device the gateway learnt is saved to `state.db` by the final
//! snapshot, the process exits by itself with status 0, and a restarted gateway restores
//! each device's state rather than relearning it. The batch in hand: it is stored and
//! acknowledged before the connection closes, so the broker has nothing to deliver again.

use std::time::Duration;

use e2e_tests::*;

const DEVICES: usize = 3_000;

fn saved_devices(state_db: &std::path::Path) -> usize {
    let conn =
        rusqlite::Connection::open_with_flags(state_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("SELECT COUNT(*) FROM analytics_state", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as usize
}

#[test]
fn sigterm_saves_every_devices_analytics_state_before_exit() {
    let broker = Mosquitto::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    // No periodic snapshot during the test: only the final one can save the devices.
    let mut gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "ops-shutdown",
        "[analytics]\nsnapshot_every_s = 86400\n",
    )
    .unwrap();

    let messages = fleet_messages(DEVICES, 2, base_ts());
    let total = messages.len();
    assert_eq!(
        publish_all(broker.port, "pub-ops-shutdown", messages, None, None).unwrap(),
        total
    );
    wait_until(Duration::from_secs(120), "every message acked", || {
        let m = gw.metrics().ok()?;
        (m["acked"].as_u64()? >= total as u64).then_some(())
    })
    .unwrap();
    let state_db = gw.data_dir.join("state.db");
    assert_eq!(
        saved_devices(&state_db),
        0,
        "no snapshot before the stop (snapshot_every_s is a day)"
    );

    let status = gw.stop_with_status();
    let status = status.unwrap_or_else(|| {
        panic!(
            "the gateway did not exit within 15 s of SIGTERM\n{}",
            gw.log_tail()
        )
    });
    assert!(status.success(), "exit status {status}\n{}", gw.log_tail());
    assert_eq!(
        saved_devices(&state_db),
        DEVICES,
        "the final snapshot saved every device\n{}",
        gw.log_tail()
    );

    // A new process restores them: its analytics know every device before any message.
    gw.restart().unwrap();
    let m = gw.metrics().unwrap();
    assert_eq!(
        m["analytics_devices"].as_u64(),
        Some(DEVICES as u64),
        "restored on start: {m}"
    );
}

#[test]
fn sigterm_acknowledges_the_batch_in_hand_before_disconnecting() {
    const MESSAGES: usize = 500;
    let broker = Mosquitto::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    // A batch that neither fills (3 000 messages) nor times out (a minute) during the test:
    // what is published stays in hand until the stop.
    let mut gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "ops-shutdown-acks",
        "[batch]\nmax_messages = 3000\nmax_wait_ms = 60000\n",
    )
    .unwrap();
    let messages = fleet_messages(MESSAGES / 2, 2, base_ts());
    assert_eq!(messages.len(), MESSAGES);
    assert_eq!(
        publish_all(broker.port, "pub-ops-shutdown-acks", messages, None, None).unwrap(),
        MESSAGES
    );
    wait_until(Duration::from_secs(60), "every message received", || {
        let m = gw.metrics().ok()?;
        (m["received"].as_u64()? >= MESSAGES as u64).then_some(())
    })
    .unwrap();
    assert_eq!(
        gw.metrics().unwrap()["acked"].as_u64(),
        Some(0),
        "the batch is in hand, nothing acknowledged yet"
    );

    let status = gw.stop_with_status();
    assert!(
        status.is_some_and(|s| s.success()),
        "a clean exit within 15 s of SIGTERM: {status:?}\n{}",
        gw.log_tail()
    );

    // A new process on the same session: the broker delivers what was not acknowledged at
    // once after the CONNACK. Nothing comes.
    gw.restart().unwrap();
    wait_until(
        Duration::from_secs(30),
        "the restarted gateway connected",
        || {
            let m = gw.metrics().ok()?;
            (m["mqtt_connects"].as_u64()? >= 1).then_some(())
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let m = gw.metrics().unwrap();
    assert_eq!(
        (m["received"].as_u64(), m["duplicates"].as_u64()),
        (Some(0), Some(0)),
        "the broker had nothing to deliver again: the stop acknowledged the batch it stored\n{}",
        gw.log_tail()
    );
}
