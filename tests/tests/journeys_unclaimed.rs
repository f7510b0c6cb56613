//! No finding is dropped (issue #12, item 1): a device nobody registered publishes a leak
//! and an inlet clog over real Mosquitto; the gateway (real process, InfluxDB 1.6.7,
//! maintenance engine) keeps both in the unclaimed-devices queue, the leak opens a ticket
//! without a home or contact, `/metrics` counts them, and in headless Chromium the agent's
//! board shows the queue and the ticket while the fleet page counts the devices on a
//! 390 px phone. Registering the device afterwards moves its ticket to the home.
//! Screenshots go to `target/screenshots/` and `docs/screenshots/unclaimed-board.png`.

use std::path::Path;
use std::time::Duration;

use e2e_tests::*;
use maintenance::registry::{Channel, Home, Owner};
use maintenance::templates::Lang;
use maintenance::{Engine, EngineConfig, Policy, Role};
use serde_json::{json, Value};

fn api(port: u16, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let c = reqwest::blocking::Client::new();
    let mut req = c
        .request(
            method.parse().unwrap(),
            format!("http://127.0.0.1:{port}/api{path}"),
        )
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().unwrap();
    let status = res.status().as_u16();
    (status, res.json().unwrap_or(Value::Null))
}

fn fault(
    device: &str,
    seq: u32,
    ts: i64,
    code: &str,
    severity: &str,
    value: f64,
) -> (String, Vec<u8>) {
    (
        format!("fixtures/{device}/event"),
        format!(
            r#"{{"v":1,"device_id":"{device}","boot_id":1,"seq":{seq},"ts":{ts},"event":{{"fault":{{"code":"{code}","severity":"{severity}","state":"raised","value":{value}}}}}}}"#
        )
        .into_bytes(),
    )
}

#[test]
fn an_unregistered_devices_leak_reaches_the_board_and_the_fleet_page() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    let now = gateway::clock::now_ms();
    let (agent, admin) = {
        let e = Engine::open(
            &db,
            EngineConfig {
                policy: Policy::default(),
                ticket_webhooks: Vec::new(),
            },
        )
        .unwrap();
        (
            e.issue_token(Role::Agent, None, now).unwrap(),
            e.issue_token(Role::Admin, None, now).unwrap(),
        )
    };
    let influx = Influx::start().unwrap();
    let broker = Mosquitto::start().unwrap();
    let extra = format!(
        "[maintenance]\ndb_path = \"{}\"\ntick_interval_s = 1\ndispatch_interval_s = 1\n[maintenance.delivery]\nhmac_secret = \"0123456789abcdef0123\"\n",
        db.display()
    );
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Influx {
            url: influx.url(),
            db: "fixtures".into(),
        },
        "gw-unclaimed",
        &extra,
    )
    .unwrap();
    let port = gw.http_port;

    // Neither device is registered: before this change both findings were dropped.
    let t0 = now - 60_000;
    let msgs = vec![
        fault("toilet-0042", 1, t0, "leak", "critical", 850.0),
        fault("purifier-0043", 1, t0 + 1_000, "inlet_clog", "warning", 0.4),
    ];
    assert_eq!(
        publish_all(broker.port, "pub-unclaimed", msgs, None, None).unwrap(),
        2
    );

    let ticket = wait_until(
        Duration::from_secs(30),
        "the unregistered leak's ticket",
        || {
            let (_, list) = api(port, "GET", "/tickets?device_id=toilet-0042", &agent, None);
            list.as_array()?
                .iter()
                .find(|t| t["kind"] == "leak")
                .cloned()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    assert_eq!(
        (
            ticket["home_id"].as_str(),
            ticket["source"].as_str(),
            ticket["priority"].as_str()
        ),
        (Some(""), Some("unclaimed"), Some("critical")),
        "{ticket}"
    );
    let id = ticket["id"].as_i64().unwrap();
    let (status, detail) = api(port, "GET", &format!("/tickets/{id}"), &agent, None);
    assert_eq!(status, 200);
    assert!(
        detail["contact"].is_null(),
        "no contact on record: {detail}"
    );
    assert_eq!(
        detail["evidence"][0]["evidence"]["value"],
        json!(850.0),
        "{detail}"
    );

    let (status, queue) = api(port, "GET", "/unclaimed", &agent, None);
    assert_eq!(status, 200);
    assert_eq!(
        (
            &queue["device_count"],
            &queue["finding_count"],
            &queue["open_tickets"]
        ),
        (&json!(2), &json!(2), &json!(1)),
        "{queue}"
    );
    assert_eq!(
        queue["devices"][0]["device_id"], "toilet-0042",
        "critical first: {queue}"
    );
    assert_eq!(queue["devices"][0]["ticket_id"], json!(id));
    assert_eq!(queue["devices"][1]["last_kind"], "inlet_clog");
    // A homeowner token never sees the queue.
    let owner = {
        let (_, h) = api(port, "POST", "/homes", &admin, Some(home_json("h9")));
        assert!(h.is_object(), "{h}");
        let (_, t) = api(
            port,
            "POST",
            "/tokens",
            &admin,
            Some(json!({ "role": "homeowner", "subject": "h9" })),
        );
        t["token"].as_str().unwrap().to_owned()
    };
    assert_eq!(api(port, "GET", "/unclaimed", &owner, None).0, 403);
    let (_, mine) = api(port, "GET", "/tickets", &owner, None);
    assert_eq!(mine, json!([]), "the unclaimed ticket belongs to no home");

    // Counted by the gateway.
    let m = gw.metrics().unwrap();
    assert_eq!(m["findings_unclaimed"], json!(2), "{m}");
    assert_eq!(m["devices_unclaimed"], json!(2), "{m}");

    // The fleet stats count them.
    let (_, fleet) = api(port, "GET", "/fleet?days=2", &agent, None);
    assert_eq!(
        (
            &fleet["unclaimed_devices"],
            &fleet["unclaimed_findings"],
            &fleet["unclaimed_tickets"]
        ),
        (&json!(2), &json!(2), &json!(1)),
        "{fleet}"
    );
    assert_eq!(
        fleet["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        2,
        "the leak's evidence and the queued clog: {fleet}"
    );

    // The board, in Chromium: the queue, and the ticket asking for the owner.
    let driver = ChromeDriver::start().unwrap();
    let b = driver.session(1280, 900, Some("en-US")).unwrap();
    b.goto(&format!("http://127.0.0.1:{port}/board#token={agent}"))
        .unwrap();
    let q = b.wait_text("#unclaimed", "toilet-0042").unwrap();
    assert!(
        q.contains("Unclaimed devices: 2")
            && q.contains("purifier-0043")
            && q.contains("Inlet clogging"),
        "{q}"
    );
    let card = b.wait_text(&format!("#ticket-{id}"), "Leak").unwrap();
    assert!(
        card.contains("find the owner") && card.contains("not registered"),
        "{card}"
    );
    b.click("#unclaimed-toilet-0042 button").unwrap();
    let d = b.wait_text("#detail", "toilet-0042").unwrap();
    assert!(!d.contains("Contact"), "no contact to show: {d}");
    let shot = b.screenshot("unclaimed-board").unwrap();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::copy(&shot, docs.join("unclaimed-board.png")).unwrap();
    drop(b);

    // The fleet page on a phone, in Chinese: the count, and nothing wider than the screen.
    let zh = driver.session(390, 844, Some("zh-CN")).unwrap();
    zh.goto(&format!("http://127.0.0.1:{port}/fleet#token={agent}"))
        .unwrap();
    let stat = zh.wait_text("#unclaimed", "2").unwrap();
    assert!(stat.contains("未登记设备"), "{stat}");
    zh.wait_text("#unclaimed-line", "2 台未登记设备").unwrap();
    let w = zh
        .js("return [document.documentElement.clientWidth, document.documentElement.scrollWidth]")
        .unwrap();
    assert_eq!(w[0], w[1], "no horizontal scrolling on a phone: {w}");
    zh.screenshot("unclaimed-fleet-zh-390").unwrap();
    drop(zh);

    // The agent finds the owner and registers the device: the ticket moves to the home.
    let (status, _) = api(
        port,
        "POST",
        "/devices",
        &admin,
        Some(
            json!({ "id": "toilet-0042", "home_id": "h9", "model": "toilet", "installed_ts_ms": now - 86_400_000, "cartridges": [] }),
        ),
    );
    assert_eq!(status, 200);
    let (_, t) = api(port, "GET", &format!("/tickets/{id}"), &agent, None);
    assert_eq!(t["home_id"], "h9", "{t}");
    assert_eq!(t["address"], "9 Huaihai Road", "{t}");
    let (_, queue) = api(port, "GET", "/unclaimed", &agent, None);
    assert_eq!(queue["device_count"], json!(1), "{queue}");
    let (_, mine) = api(port, "GET", "/tickets", &owner, None);
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
}

fn home_json(id: &str) -> Value {
    serde_json::to_value(Home {
        site: None,
        id: id.into(),
        address: "9 Huaihai Road".into(),
        region: "shanghai".into(),
        tz: "Asia/Shanghai".into(),
        lang: Lang::En,
        quiet_start: "23:59".into(),
        quiet_end: "00:00".into(),
        weekly_cap: None,
        channels: vec![Channel::App],
        owner: Owner {
            name: "Zhou Jie".into(),
            phone: "13812341234".into(),
            email: None,
        },
    })
    .unwrap()
}
