//! Device faults travel fixture → Mosquitto → gateway → maintenance engine:
//! a leak opens one critical ticket however often it is repeated, a device clear
//! marks it, an unregistered device is skipped, and the ticket is visible in
//! the gateway's API under /api; and notifications waiting in the outbox survive a
//! `kill -9` of the gateway and reach the receiver once per idempotency key.
//! (Issue #5, first slice.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::*;
use maintenance::registry::{CartridgeSpec, Channel, Device, Home, Owner};
use maintenance::templates::Lang;
use maintenance::{Engine, EngineConfig, Policy, Role};
use protocol::message::Model;

/// Registers home `h1` (app push) with `toilet-00001` in the engine's database and returns an admin token.
fn register(db: &std::path::Path) -> String {
    let engine = Engine::open(
        db,
        EngineConfig {
            policy: Policy::default(),
            ticket_webhooks: Vec::new(),
        },
    )
    .unwrap();
    engine
        .put_home(&Home {
            site: None,
            id: "h1".into(),
            address: "1 Century Avenue, Pudong".into(),
            region: "sh".into(),
            tz: "Asia/Shanghai".into(),
            lang: Lang::ZhCn,
            quiet_start: "22:00".into(),
            quiet_end: "08:00".into(),
            weekly_cap: None,
            channels: vec![Channel::App],
            owner: Owner {
                name: "Li Lei".into(),
                phone: "13812341234".into(),
                email: None,
            },
        })
        .unwrap();
    engine
        .put_device(&Device {
            id: "toilet-00001".into(),
            home_id: "h1".into(),
            model: Model::Toilet,
            installed_ts_ms: 0,
            cartridges: Vec::<CartridgeSpec>::new(),
        })
        .unwrap();
    engine
        .issue_token(Role::Admin, None, gateway::clock::now_ms())
        .unwrap()
}

/// A local webhook receiver that fails (500) while `failing` is set and records
/// every request's idempotency key with whether it was accepted.
struct Receiver {
    port: u16,
    failing: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let failing = Arc::new(AtomicBool::new(true));
        let seen: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (f, s) = (Arc::clone(&failing), Arc::clone(&seen));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
                    let (f, s) = (Arc::clone(&f), Arc::clone(&s));
                    async move {
                        let key = headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let ok = !f.load(Ordering::SeqCst);
                        s.lock().unwrap().push((key, ok));
                        if ok {
                            axum::http::StatusCode::NO_CONTENT
                        } else {
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR
                        }
                    }
                });
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = axum::serve(listener, app).await;
            });
        });
        Receiver {
            port,
            failing,
            seen,
        }
    }

    fn seen(&self) -> Vec<(String, bool)> {
        self.seen.lock().unwrap().clone()
    }
}

fn fault_event(device: &str, seq: u32, ts: i64, state: &str) -> (String, Vec<u8>) {
    let payload = format!(
        r#"{{"v":1,"device_id":"{device}","boot_id":1,"seq":{seq},"ts":{ts},"event":{{"fault":{{"code":"leak","severity":"critical","state":"{state}","value":60.0}}}}}}"#
    );
    (format!("fixtures/{device}/event"), payload.into_bytes())
}

#[test]
fn a_repeated_device_leak_opens_one_critical_ticket_and_its_clear_is_marked() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    // The registry: one home with a toilet (the after-sales system would fill this through the API).
    let admin = register(&db);

    let broker = Mosquitto::start().unwrap();
    let extra = format!(
        "[maintenance]\ndb_path = \"{}\"\ntick_interval_s = 1\ndispatch_interval_s = 1\n[maintenance.delivery]\nhmac_secret = \"0123456789abcdef0123\"\n",
        db.display()
    );
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "gw-maint",
        &extra,
    )
    .unwrap();

    let now = gateway::clock::now_ms() - 60_000;
    let messages = vec![
        fault_event("toilet-00001", 1, now, "raised"),
        fault_event("toilet-00001", 2, now + 1000, "raised"),
        fault_event("toilet-00001", 3, now + 2000, "raised"),
        fault_event("toilet-09999", 1, now, "raised"), // not registered: skipped
        fault_event("toilet-00001", 4, now + 3000, "cleared"),
    ];
    assert_eq!(
        publish_all(broker.port, "pub-maint", messages, None, None).unwrap(),
        5
    );
    let m = wait_until(
        Duration::from_secs(30),
        "the reports to reach the maintenance engine",
        || {
            let m = gw.metrics().ok()?;
            (m["acked"].as_u64()? >= 5).then_some(m)
        },
    )
    .unwrap();
    // The analytics stage turns the three reports of one leak into one finding, and the clear
    // into a second; the unregistered device's report goes to the unclaimed-devices queue.
    assert_eq!(m["maintenance_applied"], 3, "{m}");
    assert_eq!(m["findings_unclaimed"], 1, "{m}");
    assert_eq!(m["maintenance_errors"], 0, "{m}");

    let tickets: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{}/api/tickets", gw.http_port))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let all = tickets.as_array().unwrap_or_else(|| panic!("{tickets}"));
    // The unregistered device's leak is not dropped: it opens an unclaimed ticket without a contact.
    let (list, unclaimed): (Vec<_>, Vec<_>) = all
        .iter()
        .cloned()
        .partition(|t| t["source"] != "unclaimed");
    assert_eq!(unclaimed.len(), 1, "{tickets}");
    assert_eq!(unclaimed[0]["device_id"], "toilet-09999", "{tickets}");
    assert_eq!(
        list.len(),
        1,
        "one ticket however often the leak is reported: {tickets}"
    );
    assert_eq!(list[0]["device_id"], "toilet-00001");
    assert_eq!(list[0]["kind"], "leak");
    assert_eq!(list[0]["priority"], "critical");
    assert_eq!(list[0]["condition_cleared"], true, "{tickets}");
    let deadline_h = (list[0]["deadline_ts_ms"].as_i64().unwrap()
        - list[0]["opened_ts_ms"].as_i64().unwrap())
        / 3_600_000;
    assert_eq!(deadline_h, 4, "a leak's deadline is 4 h");

    // An operator's token from the command line works too.
    let out = std::process::Command::new(gateway_bin())
        .args([
            "--config",
            &work.path().join("gateway.toml").to_string_lossy(),
            "issue-token",
            "--role",
            "agent",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let status = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{}/api/tickets", gw.http_port))
        .bearer_auth(&agent)
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);

    let unauthorised =
        reqwest::blocking::get(format!("http://127.0.0.1:{}/api/tickets", gw.http_port)).unwrap();
    assert_eq!(unauthorised.status().as_u16(), 401);
}

#[test]
fn notifications_waiting_in_the_outbox_survive_kill_dash_nine_and_arrive_once_per_key() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    let _admin = register(&db);
    let receiver = Receiver::start();
    let broker = Mosquitto::start().unwrap();
    let extra = format!(
        "[maintenance]\ndb_path = \"{}\"\nticket_webhooks = [\"http://127.0.0.1:{port}/tickets\"]\ntick_interval_s = 1\ndispatch_interval_s = 1\n\
         [maintenance.delivery]\npush_url = \"http://127.0.0.1:{port}/push\"\nhmac_secret = \"0123456789abcdef0123\"\nbackoff_base_s = 1\nbackoff_max_s = 1\n",
        db.display(),
        port = receiver.port
    );
    let mut gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "gw-outbox",
        &extra,
    )
    .unwrap();
    let now = gateway::clock::now_ms() - 60_000;
    publish_all(
        broker.port,
        "pub-outbox",
        vec![fault_event("toilet-00001", 1, now, "raised")],
        None,
        None,
    )
    .unwrap();

    // The receiver is down: the ticket webhook and the urgent push are attempted and fail.
    let failing_keys = wait_until(
        Duration::from_secs(30),
        "failed deliveries of the ticket webhook and the push",
        || {
            let keys: BTreeSet<String> = receiver.seen().into_iter().map(|(k, _)| k).collect();
            (keys.len() >= 2).then_some(keys)
        },
    )
    .unwrap();
    gw.kill9();
    receiver.failing.store(false, Ordering::SeqCst);
    gw.restart().unwrap();

    let delivered = wait_until(
        Duration::from_secs(30),
        "every key to be delivered after the restart",
        || {
            let ok: BTreeSet<String> = receiver
                .seen()
                .into_iter()
                .filter(|(_, ok)| *ok)
                .map(|(k, _)| k)
                .collect();
            failing_keys.is_subset(&ok).then_some(ok)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", receiver.seen(), gw.log_tail()));
    std::thread::sleep(Duration::from_secs(3)); // room for a wrong second delivery to show up
    let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
    for (key, ok) in receiver.seen() {
        assert!(!key.is_empty(), "every request carries an idempotency key");
        if ok {
            *accepted.entry(key).or_default() += 1;
        }
    }
    assert!(
        accepted.values().all(|n| *n == 1),
        "each key accepted exactly once: {accepted:?}"
    );
    assert_eq!(accepted.keys().cloned().collect::<BTreeSet<_>>(), delivered);
}
