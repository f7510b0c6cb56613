//! Provisioning at fleet scale (issue #12, item 3) against real Mosquitto with the
//! dynamic-security plugin on, InfluxDB 1.6.7 and the gateway as a real process:
//! `gateway devices import` of a CSV registers homes, devices and a technician and gives
//! each device its own broker login (credentials written once to a 0600 file, never
//! logged); bad rows are reported with their line and field while the good ones are
//! imported, and a second import changes nothing. Then, on the real broker: a provisioned
//! device's message is stored; an unknown login and an anonymous one are refused; a device
//! publishing as another device is dropped by the broker (never stored); after
//! `gateway devices revoke` the device can no longer log in or publish; the audit log holds
//! the import, the provisioning and the revocation. `POST /api/import` takes the same file
//! format with the same per-row report.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e_tests::dynsec::{publish_as, DynsecBroker, MqttOutcome};
use e2e_tests::*;
use serde_json::Value;

const HEADER: &[&str] = &[
    "type",
    "id",
    "home_id",
    "name",
    "phone",
    "address",
    "region",
    "tz",
    "lang",
    "channels",
    "model",
    "installed",
    "cartridges",
    "skills",
];

/// One CSV line in [`HEADER`]'s order; a value with a comma is quoted.
fn line(values: &[(&str, &str)]) -> String {
    let map: HashMap<&str, &str> = values.iter().copied().collect();
    HEADER
        .iter()
        .map(|c| {
            let v = map.get(c).copied().unwrap_or("");
            if v.contains(',') {
                format!("\"{v}\"")
            } else {
                v.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn home(id: &str, owner: &str) -> String {
    line(&[
        ("type", "home"),
        ("id", id),
        ("name", owner),
        ("phone", "13812341234"),
        ("address", "1 Century Avenue, Pudong"),
        ("region", "sh"),
        ("tz", "Asia/Shanghai"),
        ("lang", "en"),
        ("channels", "app"),
    ])
}

fn device(id: &str, home: &str, model: &str) -> String {
    line(&[
        ("type", "device"),
        ("id", id),
        ("home_id", home),
        ("model", model),
        ("installed", "2026-11-01"),
    ])
}

/// The fleet file (the comments give each row's line): three devices in two homes, a
/// technician, and two bad rows.
fn fleet_csv() -> String {
    [
        HEADER.join(","),
        home("home-a", "Li Lei"),                   // line 2
        home("home-b", "Han Meimei"),               // line 3
        device("toilet-00000", "home-a", "toilet"), // line 4
        line(&[
            ("type", "device"),
            ("id", "purifier-00001"),
            ("home_id", "home-a"),
            ("model", "purifier"),
            (
                "cartridges",
                "0:sediment:1500;1:carbon:3000;2:reverse_osmosis:6000:730",
            ),
        ]), // line 5
        device("shower-00002", "home-b", "shower"), // line 6
        device("kettle-1", "home-a", "kettle"),     // line 7: unknown model
        device("toilet-00009", "home-z", "toilet"), // line 8: unknown home
        line(&[
            ("type", "technician"),
            ("id", "tech-a"),
            ("name", "Wang Wu"),
            ("region", "sh"),
            ("skills", "plumbing;filter"),
        ]), // line 9
    ]
    .join("\n")
        + "\n"
}

struct Cli {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn gateway_devices(config: &Path, args: &[&str]) -> Cli {
    let out = Command::new(gateway_bin())
        .arg("--config")
        .arg(config)
        .arg("devices")
        .args(args)
        .env("USER", "ops-alice")
        .output()
        .expect("run the gateway binary");
    Cli {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `device_id -> password` from a credentials file.
fn read_credentials(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).expect("credentials file");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("device_id,username,password"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 3, "{l}");
            assert_eq!(f[0], f[1], "the user name is the device id");
            (f[0].to_owned(), f[2].to_owned())
        })
        .collect()
}

fn api(port: u16, token: &str, method: &str, path: &str) -> reqwest::blocking::RequestBuilder {
    reqwest::blocking::Client::new()
        .request(
            method.parse().expect("method"),
            format!("http://127.0.0.1:{port}/api{path}"),
        )
        .bearer_auth(token)
}

#[test]
fn import_provisions_devices_the_broker_enforces_their_acls_and_revoke_locks_one_out() {
    let work = tempfile::tempdir().unwrap();
    let influx = Influx::start().unwrap();
    influx.create_db("prov").unwrap();
    let broker = DynsecBroker::start().unwrap();
    let port = broker.port();
    let db = work.path().join("maintenance.db");
    let gw = broker
        .spawn_gateway(
            work.path(),
            &StoreTarget::Influx {
                url: influx.url(),
                db: "prov".into(),
            },
            "gw-prov",
            &registry::maintenance_toml(&db),
        )
        .unwrap();
    let config = gw.config_path().to_path_buf();
    let pw_file = broker.admin_password_file(work.path()).unwrap();
    let admin_args = [
        "--broker-admin-user",
        e2e_tests::dynsec::ADMIN_USER,
        "--broker-admin-password-file",
        pw_file.to_str().unwrap(),
    ];
    let csv = work.path().join("fleet.csv");
    std::fs::write(&csv, fleet_csv()).unwrap();

    // ---- import: good rows in, bad rows reported by line and field ----
    let creds_path = work.path().join("credentials.csv");
    let mut args = vec![
        "import",
        csv.to_str().unwrap(),
        "--credentials",
        creds_path.to_str().unwrap(),
    ];
    args.extend(admin_args);
    let first = gateway_devices(&config, &args);
    assert!(
        !first.ok,
        "rejected rows make the command fail:\n{}",
        first.stderr
    );
    assert!(
        first.stderr.contains(
            "line 7: field model: unknown model \"kettle\"; use toilet, purifier or shower"
        ),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("line 8: field home_id:")
            && first
                .stderr
                .contains("home home-z is neither registered nor in the file"),
        "{}",
        first.stderr
    );
    assert!(first.stderr.contains("2 rows rejected"), "{}", first.stderr);
    assert!(
        first
            .stderr
            .contains("devices 3 created, 0 updated, 0 unchanged"),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("registry rows: 7/7"),
        "progress: {}",
        first.stderr
    );
    assert!(
        first.stderr.contains("devices given credentials: 3/3"),
        "{}",
        first.stderr
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the credentials file is private");
    }
    let creds = read_credentials(&creds_path);
    let mut ids: Vec<&String> = creds.keys().collect();
    ids.sort();
    assert_eq!(ids, ["purifier-00001", "shower-00002", "toilet-00000"]);
    assert!(creds.values().all(|p| p.len() >= 24));
    assert!(
        first.stdout.trim().is_empty(),
        "credentials went to the file only"
    );

    let engine = maintenance::Engine::open(
        &db,
        maintenance::EngineConfig {
            policy: maintenance::Policy::default(),
            ticket_webhooks: Vec::new(),
        },
    )
    .unwrap();
    let purifier = engine
        .read(|c| maintenance::registry::get_device(c, "purifier-00001"))
        .unwrap()
        .expect("registered");
    assert_eq!(purifier.home_id, "home-a");
    assert_eq!(
        purifier
            .cartridges
            .iter()
            .map(|c| c.rated_litres)
            .collect::<Vec<_>>(),
        vec![1500, 3000, 6000]
    );
    assert!(engine
        .read(|c| maintenance::registry::get_device(c, "kettle-1"))
        .unwrap()
        .is_none());

    // ---- importing the same file again changes nothing and issues no new password ----
    let creds2_path = work.path().join("credentials-2.csv");
    let mut args = vec![
        "import",
        csv.to_str().unwrap(),
        "--credentials",
        creds2_path.to_str().unwrap(),
    ];
    args.extend(admin_args);
    let second = gateway_devices(&config, &args);
    assert!(
        second
            .stderr
            .contains("homes 0 created, 0 updated, 2 unchanged")
            && second
                .stderr
                .contains("devices 0 created, 0 updated, 3 unchanged")
            && second.stderr.contains("0 devices given credentials")
            && second.stderr.contains("3 already had them"),
        "{}",
        second.stderr
    );
    assert!(read_credentials(&creds2_path).is_empty());

    // ---- a provisioned device publishes; its message is stored ----
    let base = base_ts();
    let toilet_pw = creds["toilet-00000"].clone();
    let login = Some(("toilet-00000", toilet_pw.as_str()));
    assert_eq!(
        publish_as(
            port,
            "toilet-00000",
            login,
            &[telemetry_message(0, 1, base)]
        )
        .unwrap(),
        MqttOutcome::Acked
    );
    wait_until(
        Duration::from_secs(30),
        "the toilet's message stored",
        || {
            stored_telemetry_keys(&influx, "prov")
                .ok()
                .filter(|k| k.contains(&("toilet-00000".to_owned(), 1)))
        },
    )
    .unwrap();

    // ---- an unprovisioned login and an anonymous one are refused ----
    let refused = publish_as(
        port,
        "intruder",
        Some(("toilet-00009", "guessed-password")),
        &[telemetry_message(9, 1, base)],
    )
    .unwrap();
    assert!(matches!(refused, MqttOutcome::Refused(_)), "{refused:?}");
    let anonymous = publish_as(port, "anon", None, &[telemetry_message(0, 2, base)]).unwrap();
    assert!(
        matches!(anonymous, MqttOutcome::Refused(_)),
        "{anonymous:?}"
    );
    // A right user name with a wrong password too.
    let wrong = publish_as(
        port,
        "toilet-00000",
        Some(("toilet-00000", "not-its-password")),
        &[telemetry_message(0, 3, base)],
    )
    .unwrap();
    assert!(matches!(wrong, MqttOutcome::Refused(_)), "{wrong:?}");

    // ---- a device publishing as another device is dropped by the broker ----
    // The toilet publishes the purifier's message on the purifier's topic, then one of its
    // own; once its own is stored, the forged one would have been stored before it.
    let forged = telemetry_message(1, 7, base);
    assert!(forged.0.starts_with("fixtures/purifier-00001/"));
    publish_as(
        port,
        "toilet-00000",
        login,
        &[forged, telemetry_message(0, 4, base)],
    )
    .unwrap();
    let keys = wait_until(
        Duration::from_secs(30),
        "the toilet's second message",
        || {
            stored_telemetry_keys(&influx, "prov")
                .ok()
                .filter(|k| k.contains(&("toilet-00000".to_owned(), 4)))
        },
    )
    .unwrap();
    assert!(
        !keys.iter().any(|(d, _)| d == "purifier-00001"),
        "the forged message was stored: {keys:?}"
    );
    // The purifier itself may publish on its own topic.
    let purifier_pw = creds["purifier-00001"].clone();
    publish_as(
        port,
        "purifier-00001",
        Some(("purifier-00001", purifier_pw.as_str())),
        &[telemetry_message(1, 1, base)],
    )
    .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the purifier's own message",
        || {
            stored_telemetry_keys(&influx, "prov")
                .ok()
                .filter(|k| k.contains(&("purifier-00001".to_owned(), 1)))
        },
    )
    .unwrap();

    // ---- revoke: the device can no longer log in or publish ----
    let mut args = vec!["revoke", "toilet-00000"];
    args.extend(admin_args);
    let revoked = gateway_devices(&config, &args);
    assert!(revoked.ok, "{}", revoked.stderr);
    assert!(
        revoked.stdout.contains("toilet-00000 revoked"),
        "{}",
        revoked.stdout
    );
    let after = publish_as(
        port,
        "toilet-00000",
        login,
        &[telemetry_message(0, 5, base)],
    )
    .unwrap();
    assert!(matches!(after, MqttOutcome::Refused(_)), "{after:?}");
    // Its message never arrives (checked after the purifier's next one is stored).
    publish_as(
        port,
        "purifier-00001",
        Some(("purifier-00001", purifier_pw.as_str())),
        &[telemetry_message(1, 2, base)],
    )
    .unwrap();
    let keys = wait_until(
        Duration::from_secs(30),
        "the purifier's second message",
        || {
            stored_telemetry_keys(&influx, "prov")
                .ok()
                .filter(|k| k.contains(&("purifier-00001".to_owned(), 2)))
        },
    )
    .unwrap();
    assert!(!keys.contains(&("toilet-00000".to_owned(), 5)));
    let state = engine
        .broker_client("toilet-00000")
        .unwrap()
        .expect("record");
    assert!(state.revoked_ts_ms.is_some());
    // A revoked device is not given credentials again by a re-import.
    let creds3_path = work.path().join("credentials-3.csv");
    let mut args = vec![
        "import",
        csv.to_str().unwrap(),
        "--credentials",
        creds3_path.to_str().unwrap(),
    ];
    args.extend(admin_args);
    let third = gateway_devices(&config, &args);
    assert!(
        third
            .stderr
            .contains("1 revoked devices were not given credentials again: toilet-00000"),
        "{}",
        third.stderr
    );
    assert!(read_credentials(&creds3_path).is_empty());
    assert!(matches!(
        publish_as(port, "toilet-00000", login, &[]).unwrap(),
        MqttOutcome::Refused(_)
    ));

    // ---- the audit log has the import, each provisioning and the revocation ----
    let admin = gateway_cli(&config, &["tokens", "create", "--role", "admin"]).unwrap();
    let audit: Vec<Value> = api(gw.http_port, &admin, "GET", "/audit?limit=500")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let has = |action: &str, resource: &str| {
        audit.iter().any(|e| {
            e["action"] == action && e["resource"] == resource && e["actor"] == "cli:ops-alice"
        })
    };
    for id in ["toilet-00000", "purifier-00001", "shower-00002"] {
        assert!(
            has("provision_device", &format!("device/{id}")),
            "{audit:#?}"
        );
    }
    assert!(has("revoke_device", "device/toilet-00000"), "{audit:#?}");
    assert!(audit.iter().any(|e| e["action"] == "import_registry"));
    assert_eq!(
        audit
            .iter()
            .filter(|e| e["action"] == "provision_device")
            .count(),
        3,
        "re-imports provisioned nothing"
    );

    // ---- the API takes the same format, with the same per-row report ----
    let body = [
        HEADER.join(","),
        home("home-c", "Zhang San"),
        device("toilet-00003", "home-c", "toilet"),
        line(&[("type", "home"), ("id", "Home C!")]),
    ]
    .join("\n");
    let res = api(gw.http_port, &admin, "POST", "/import")
        .header("content-type", "text/csv")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let report: Value = res.json().unwrap();
    assert_eq!(report["devices"]["created"], 1, "{report:#}");
    assert_eq!(report["rejected"], 1);
    assert_eq!(report["errors"][0]["line"], 4);
    assert_eq!(report["errors"][0]["field"], "id");
    assert_eq!(
        report["awaiting_credentials"],
        serde_json::json!(["toilet-00003"])
    );
    let res = api(gw.http_port, &gw.token, "POST", "/import")
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 403, "only admins import");

    // ---- no password was ever logged ----
    let logs = format!(
        "{}{}{}{}{}",
        gw.log_text(),
        broker.log_text(),
        first.stderr,
        second.stderr,
        revoked.stderr
    );
    for (id, pw) in &creds {
        assert!(
            !logs.contains(pw.as_str()),
            "the password of {id} was logged"
        );
    }
}
