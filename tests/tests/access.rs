//! Roles, masking, audit and e-mail through the real gateway process (issue #5):
//! homes, devices and technicians are registered over HTTP, leaks arrive over
//! Mosquitto, and then
//! * a homeowner cannot reach another home on any endpoint of the gateway's `/api`;
//! * a technician sees only their tickets, the phone masked (138****1234) and the
//!   address only while the visit is open;
//! * every read of personal data leaves an audit entry;
//! * the urgent leak alert reaches the homeowner as one e-mail per idempotency key
//!   through a real SMTP server (aiosmtpd).

use std::collections::BTreeMap;
use std::time::Duration;

use e2e_tests::*;
use maintenance::registry::{Channel, Home, Owner, Technician};
use maintenance::templates::Lang;
use maintenance::{Engine, EngineConfig, Policy, Role};
use reqwest::blocking::Client;
use serde_json::{json, Value};

struct Api {
    base: String,
    http: Client,
}

impl Api {
    fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "POST" => self.http.post(url),
            other => panic!("method {other}"),
        }
        .bearer_auth(token);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn ok(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, token, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }
}

fn home(id: &str, phone: &str, email: &str) -> Value {
    serde_json::to_value(Home {
        site: None,
        id: id.into(),
        address: format!("{id} Century Avenue, Pudong"),
        region: "sh".into(),
        tz: "Asia/Shanghai".into(),
        lang: Lang::En,
        quiet_start: "22:00".into(),
        quiet_end: "08:00".into(),
        weekly_cap: None,
        channels: vec![Channel::Email],
        owner: Owner {
            name: format!("Owner of {id}"),
            phone: phone.into(),
            email: Some(email.into()),
        },
    })
    .unwrap()
}

fn leak(device: &str, seq: u32, ts: i64) -> (String, Vec<u8>) {
    let payload = format!(
        r#"{{"v":1,"device_id":"{device}","boot_id":1,"seq":{seq},"ts":{ts},"event":{{"fault":{{"code":"leak","severity":"critical","state":"raised","value":60.0}}}}}}"#
    );
    (format!("fixtures/{device}/event"), payload.into_bytes())
}

#[test]
fn roles_masking_audit_and_email_hold_through_the_gateway() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    // The first admin token is made offline (as `gateway issue-token` does); everything else goes over HTTP.
    let admin = Engine::open(
        &db,
        EngineConfig {
            policy: Policy::default(),
            ticket_webhooks: Vec::new(),
        },
    )
    .unwrap()
    .issue_token(Role::Admin, None, gateway::clock::now_ms())
    .unwrap();
    let smtp = SmtpServer::start().unwrap();
    let broker = Mosquitto::start().unwrap();
    let extra = format!(
        "[maintenance]\ndb_path = \"{}\"\ntick_interval_s = 1\ndispatch_interval_s = 1\n\
         [maintenance.delivery]\nhmac_secret = \"0123456789abcdef0123\"\nbackoff_base_s = 1\nbackoff_max_s = 1\n\
         smtp = {{ host = \"127.0.0.1\", port = {}, from = \"service@fixtures.example\" }}\n",
        db.display(),
        smtp.port
    );
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "gw-access",
        &extra,
    )
    .unwrap();
    let api = Api {
        base: format!("http://127.0.0.1:{}/api", gw.http_port),
        http: Client::new(),
    };

    // Registry over HTTP.
    api.ok(
        "POST",
        "/homes",
        &admin,
        Some(home("h1", "13812341234", "h1@example.com")),
    );
    api.ok(
        "POST",
        "/homes",
        &admin,
        Some(home("h2", "13987654321", "h2@example.com")),
    );
    for (dev, home) in [("toilet-00001", "h1"), ("toilet-00002", "h2")] {
        api.ok(
            "POST",
            "/devices",
            &admin,
            Some(json!({"id": dev, "home_id": home, "model": "toilet", "installed_ts_ms": 0})),
        );
    }
    for t in ["tech-a", "tech-b"] {
        let tech = Technician {
            id: t.into(),
            name: t.into(),
            region: "sh".into(),
            skills: vec!["plumbing".into()],
        };
        api.ok(
            "POST",
            "/technicians",
            &admin,
            Some(serde_json::to_value(tech).unwrap()),
        );
    }
    let token = |role: &str, subject: Option<&str>| -> String {
        let v = api.ok(
            "POST",
            "/tokens",
            &admin,
            Some(json!({"role": role, "subject": subject})),
        );
        v["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_owned()
    };
    let (h1, h2, agent) = (
        token("homeowner", Some("h1")),
        token("homeowner", Some("h2")),
        token("agent", None),
    );

    // Leaks over MQTT, one per home, each reported twice.
    let now = gateway::clock::now_ms() - 60_000;
    let msgs = vec![
        leak("toilet-00001", 1, now),
        leak("toilet-00002", 1, now),
        leak("toilet-00001", 2, now + 1000),
        leak("toilet-00002", 2, now + 1000),
    ];
    assert_eq!(
        publish_all(broker.port, "pub-access", msgs, None, None).unwrap(),
        4
    );
    let tickets = wait_until(Duration::from_secs(30), "one ticket per home", || {
        let (_, v) = api.call("GET", "/tickets", &agent, None);
        (v.as_array()?.len() >= 2).then_some(v)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    let list = tickets.as_array().unwrap();
    assert_eq!(list.len(), 2, "no duplicates: {tickets}");
    let ticket_of = |dev: &str| {
        list.iter()
            .find(|t| t["device_id"] == dev)
            .unwrap_or_else(|| panic!("{tickets}"))
    };
    let (t1, t2) = (
        ticket_of("toilet-00001")["id"].as_i64().unwrap(),
        ticket_of("toilet-00002")["id"].as_i64().unwrap(),
    );
    let reminders_h2 = api.ok("GET", "/reminders?home_id=h2", &agent, None);
    let r2 = reminders_h2
        .as_array()
        .and_then(|a| a.first())
        .map(|r| r["id"].as_i64().unwrap())
        .unwrap_or_else(|| panic!("{reminders_h2}"));

    // 1. A homeowner cannot reach another home: every endpoint.
    let forbidden: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/homes".into(), None),
        ("GET", "/homes/h2".into(), None),
        ("GET", "/homes/h2/devices".into(), None),
        ("GET", "/devices/toilet-00002".into(), None),
        ("GET", "/devices/toilet-00002/filters".into(), None),
        ("GET", format!("/tickets/{t2}"), None),
        ("GET", "/tickets?home_id=h2".into(), None),
        (
            "POST",
            format!("/tickets/{t2}/rate"),
            Some(json!({"score": 1})),
        ),
        (
            "POST",
            format!("/tickets/{t2}/transition"),
            Some(json!({"to": "closed"})),
        ),
        ("POST", format!("/tickets/{t2}/assign"), Some(json!({}))),
        ("GET", "/reminders?home_id=h2".into(), None),
        ("GET", format!("/reminders/{r2}"), None),
        (
            "POST",
            format!("/reminders/{r2}/snooze"),
            Some(json!({"hours": 2})),
        ),
        ("POST", format!("/reminders/{r2}/done"), None),
        ("POST", format!("/reminders/{r2}/book"), None),
        (
            "POST",
            "/homes".into(),
            Some(home("h2", "13900000000", "x@example.com")),
        ),
        (
            "POST",
            "/devices".into(),
            Some(
                json!({"id": "toilet-00002", "home_id": "h1", "model": "toilet", "installed_ts_ms": 0}),
            ),
        ),
        ("GET", "/technicians".into(), None),
        ("GET", "/kpi".into(), None),
        ("GET", "/audit".into(), None),
        ("POST", "/tokens".into(), Some(json!({"role": "admin"}))),
        ("GET", "/outbox".into(), None),
        ("GET", "/fleet".into(), None),
    ];
    for (method, path, body) in forbidden {
        let (status, resp) = api.call(method, &path, &h1, body);
        assert!(
            status == 403 || status == 404,
            "{method} {path}: {status} {resp}"
        );
        assert!(
            resp["error"]["code"].is_string(),
            "{method} {path}: a JSON error with a code: {resp}"
        );
        assert!(
            !resp.to_string().contains("13987654321") && !resp.to_string().contains("h2 Century"),
            "{method} {path} leaked h2's data: {resp}"
        );
    }
    let me = api.ok("GET", "/me", &h1, None);
    assert_eq!(
        (me["role"].as_str(), me["subject"].as_str()),
        (Some("homeowner"), Some("h1")),
        "{me}"
    );
    let mine = api.ok("GET", "/tickets", &h1, None);
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .all(|t| t["device_id"] == "toilet-00001"),
        "{mine}"
    );
    assert_eq!(api.call("GET", &format!("/tickets/{t1}"), &h1, None).0, 200);
    api.ok("GET", "/homes/h2", &h2, None);

    // 2. The technician assigned to h1's ticket: masked phone, address while the visit is open.
    let t1_full = api.ok("GET", &format!("/tickets/{t1}"), &agent, None);
    assert_eq!(
        t1_full["contact"]["phone"], "138****1234",
        "service staff see the number masked until they reveal it (with a reason, audited)"
    );
    let assignee = t1_full["assignee"]
        .as_str()
        .unwrap_or_else(|| panic!("auto-assigned: {t1_full}"))
        .to_owned();
    let tech = token("technician", Some(&assignee));
    let stranger = token(
        "technician",
        Some(if assignee == "tech-a" {
            "tech-b"
        } else {
            "tech-a"
        }),
    );
    let seen = api.ok("GET", &format!("/tickets/{t1}"), &tech, None);
    assert_eq!(seen["contact"]["phone"], "138****1234", "{seen}");
    assert_eq!(seen["address"], "h1 Century Avenue, Pudong");
    let theirs = api.ok("GET", "/tickets", &stranger, None);
    assert!(
        theirs.as_array().unwrap().iter().all(|t| t["assignee"]
            == json!(if assignee == "tech-a" {
                "tech-b"
            } else {
                "tech-a"
            })),
        "{theirs}"
    );
    if theirs.as_array().unwrap().iter().all(|t| t["id"] != t1) {
        assert_eq!(
            api.call("GET", &format!("/tickets/{t1}"), &stranger, None)
                .0,
            404,
            "not assigned to them"
        );
    }
    for to in ["in_progress", "resolved"] {
        api.ok(
            "POST",
            &format!("/tickets/{t1}/transition"),
            &tech,
            Some(json!({"to": to})),
        );
    }
    api.ok(
        "POST",
        &format!("/tickets/{t1}/transition"),
        &agent,
        Some(json!({"to": "closed"})),
    );
    let after = api.ok("GET", &format!("/tickets/{t1}"), &tech, None);
    assert!(
        after["address"].is_null(),
        "no address once the visit is over: {after}"
    );
    assert_eq!(after["contact"]["phone"], "138****1234");

    // 3. Every read of personal data is in the audit log, with who read what.
    let audit = api.ok("GET", "/audit?limit=1000", &admin, None);
    let entries: Vec<(String, String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["actor"].as_str().unwrap_or("").to_owned(),
                a["action"].as_str().unwrap_or("").to_owned(),
                a["resource"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for expected in [
        (
            format!("technician:{assignee}"),
            "read_ticket".to_owned(),
            format!("ticket/{t1}"),
        ),
        (
            "homeowner:h2".to_owned(),
            "read_home".to_owned(),
            "home/h2".to_owned(),
        ),
    ] {
        assert!(
            entries.contains(&expected),
            "audit lacks {expected:?}: {entries:?}"
        );
    }
    let agent_reads = entries
        .iter()
        .filter(|(who, what, res)| {
            who.starts_with("agent") && what == "read_ticket" && *res == format!("ticket/{t1}")
        })
        .count();
    assert!(
        agent_reads >= 1,
        "the agent's read is audited too: {entries:?}"
    );

    // 4. The urgent leak alert reached each homeowner by e-mail, once per key.
    let mails = wait_until(
        Duration::from_secs(30),
        "an e-mail to each homeowner",
        || {
            let m = smtp.messages();
            let to_h1 = m.iter().any(|x| x.contains("h1@example.com"));
            let to_h2 = m.iter().any(|x| x.contains("h2@example.com"));
            (to_h1 && to_h2).then_some(m)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    std::thread::sleep(Duration::from_secs(3)); // room for a wrong second delivery
    let mails = if smtp.messages().len() > mails.len() {
        smtp.messages()
    } else {
        mails
    };
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for m in &mails {
        assert!(m.contains("From: service@fixtures.example"), "{m}");
        let id = m
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
            .unwrap_or_else(|| panic!("no Message-ID: {m}"));
        *per_id.entry(id.to_owned()).or_default() += 1;
    }
    assert!(
        per_id.values().all(|n| *n == 1),
        "each notification once: {per_id:?}"
    );
    let leak_mails = mails
        .iter()
        .filter(|m| m.to_ascii_lowercase().contains("leak"))
        .count();
    assert_eq!(
        leak_mails, 2,
        "one leak alert per home, however often reported: {mails:#?}"
    );
}
