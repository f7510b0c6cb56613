//! Honest health (issue 13): `/health/ready` answers 503 with a reason in each
//! outage — broker down, store refusing writes, spool past its threshold,
//! maintenance database failing — and 200 again once it is over; `/health/live`
//! stays 200 with no data. At start, a wrong InfluxDB password, a missing database
//! or a URL without a scheme stop the gateway at once, naming the setting; a config
//! error points at the user's own file and line.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e_tests::*;

/// Waits until `/health/ready` answers `want`, returning the body.
fn ready_becomes(gw: &GatewayProcess, want: u16, reason: &str, what: &str) -> String {
    wait_until(Duration::from_secs(45), what, || {
        let (status, body) = gw.get("/health/ready", None).ok()?;
        (status == want && body.contains(reason)).then_some(body)
    })
    .unwrap_or_else(|e| {
        let now = gw.get("/health/ready", None).ok();
        panic!("{e}: now {now:?}\n{}", gw.log_tail())
    })
}

#[test]
fn ready_goes_503_in_each_outage_and_back() {
    let mut broker = Mosquitto::start().unwrap();
    let mut influx = Influx::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    let devices: Vec<_> = (0..4).map(fleet_device).collect();
    registry::register_devices(&db, &devices).unwrap();
    let extra = format!(
        "[batch]\nmax_messages = 10\nmax_wait_ms = 20\n[health]\ncheck_every_s = 1\nmax_spool_batches = 3\n{}",
        registry::maintenance_toml(&db)
    );
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "ops_health".into(),
    };
    let gw = GatewayProcess::spawn(work.path(), broker.port, &store, "ops-health", &extra).unwrap();
    ready_becomes(&gw, 200, "\"ready\":true", "ready at start");
    let (status, live) = gw.get("/health/live", None).unwrap();
    assert_eq!((status, live.as_str()), (200, "{\"status\":\"ok\"}"));

    // 1. The broker goes away, and comes back.
    broker.stop();
    let body = ready_becomes(&gw, 503, "mqtt", "503 while the broker is down");
    assert!(
        body.contains(&format!("127.0.0.1:{}", broker.port)),
        "{body}"
    );
    let (status, _) = gw.get("/health/live", None).unwrap();
    assert_eq!(status, 200, "liveness does not depend on the broker");
    broker.start_again().unwrap();
    ready_becomes(&gw, 200, "\"ready\":true", "200 once the broker is back");

    // 2. The store refuses writes; then the spool grows past its threshold.
    influx.stop();
    let base = base_ts();
    let mut round = 0;
    let mut publish_rounds = |n: u32| {
        let msgs: Vec<_> = (round..round + n)
            .flat_map(|r| (0..4).map(move |d| telemetry_message(d, r, base)))
            .collect();
        round += n;
        let count = msgs.len();
        assert_eq!(
            publish_all(broker.port, "pub-ops-health", msgs, None, None).unwrap(),
            count
        );
    };
    publish_rounds(3);
    ready_becomes(&gw, 503, "store", "503 while the store refuses writes");
    for _ in 0..6 {
        publish_rounds(3);
        std::thread::sleep(Duration::from_millis(100));
    }
    ready_becomes(
        &gw,
        503,
        "spool",
        "503 while the spool is past its threshold",
    );
    influx.start_again().unwrap();
    ready_becomes(
        &gw,
        200,
        "\"ready\":true",
        "200 once the store is back and the spool drained",
    );

    // 3. The maintenance database fails (replaced by garbage), then is back.
    let aside = work.path().join("maintenance.db.aside");
    std::fs::rename(&db, &aside).unwrap();
    std::fs::write(&db, vec![b'x'; 8192]).unwrap();
    ready_becomes(
        &gw,
        503,
        "maintenance database",
        "503 while the maintenance database fails",
    );
    std::fs::rename(&aside, &db).unwrap();
    ready_becomes(
        &gw,
        200,
        "\"ready\":true",
        "200 once the maintenance database is back",
    );

    let (_, metrics) = gw.get("/metrics", None).unwrap();
    assert!(metrics.contains("gateway_ready 1"), "{metrics}");
}

/// Runs the gateway binary with `config` and returns (exit success, output, seconds taken).
fn run_to_exit(config: &std::path::Path) -> (bool, String, f64) {
    let start = Instant::now();
    let out = Command::new(gateway_bin())
        .arg("--config")
        .arg(config)
        .arg("--report-every")
        .arg("0")
        .env("GATEWAY_LOG", "info")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, start.elapsed().as_secs_f64())
}

#[test]
fn bad_store_settings_fail_fast_naming_the_setting() {
    let influx = Influx::start_with_auth("admin", "right-password").unwrap();
    let broker = Mosquitto::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let write = |name: &str, influx_toml: &str| {
        let path = work.path().join(name);
        std::fs::write(
            &path,
            format!(
                "data_dir = \"{}\"\nstore = \"influx_v1\"\n[mqtt]\nbroker = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"\n[http]\nlisten = \"off\"\n[influx]\n{influx_toml}",
                work.path().join("data").display(),
                broker.port
            ),
        )
        .unwrap();
        path
    };
    let url = influx.url();
    let cases = [
        (
            write("wrong-password.toml", &format!("url = \"{url}\"\nusername = \"admin\"\npassword = \"wrong\"\n")),
            "influx.username / influx.password",
        ),
        (
            write("missing-db.toml", &format!("url = \"{url}\"\nusername = \"admin\"\npassword = \"right-password\"\ndatabase = \"nope\"\ncreate_database = false\n")),
            "influx.database",
        ),
        (
            write("no-scheme.toml", &format!("url = \"{}\"\n", url.trim_start_matches("http://"))),
            "influx.url",
        ),
    ];
    for (config, setting) in cases {
        let (ok, out, secs) = run_to_exit(&config);
        assert!(!ok, "{} should not start:\n{out}", config.display());
        assert!(
            out.contains(setting),
            "{} names {setting}:\n{out}",
            config.display()
        );
        assert!(secs < 15.0, "fails fast ({secs:.1} s)");
    }
    // The no-scheme error points at the line in the user's file.
    let (_, out, _) = run_to_exit(&work.path().join("no-scheme.toml"));
    assert!(out.contains("no-scheme.toml:9:"), "{out}");
}

#[test]
fn config_errors_point_at_the_users_own_file_and_line() {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("gateway.toml");
    std::fs::write(
        &path,
        "data_dir = \"/tmp/x\"\n\n[maintenance]\ntick_interval_s = 5\nbogus_key = 1\n[maintenance.delivery]\nhmac_secret = \"0123456789abcdef0123\"\n",
    )
    .unwrap();
    let (ok, out, _) = run_to_exit(&path);
    assert!(!ok);
    assert!(
        out.contains("gateway.toml:3:"),
        "points at [maintenance]:\n{out}"
    );
    assert!(out.contains("bogus_key"), "{out}");
    assert!(
        !out.contains("db_path = "),
        "quotes nothing the user did not write:\n{out}"
    );

    std::fs::write(&path, "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\ntypo = 3\n").unwrap();
    let (ok, out, _) = run_to_exit(&path);
    assert!(!ok);
    assert!(out.contains("gateway.toml:3:1"), "{out}");
    assert!(
        out.contains("typo = 3"),
        "shows the user's own line:\n{out}"
    );
}
