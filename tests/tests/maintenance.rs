//! Device faults travel fixture → Mosquitto → gateway → maintenance engine:
//! a leak opens one critical ticket however often it is repeated, a device clear
//! marks it, an unregistered device is skipped, and the ticket is visible in
//! the gateway's API under /api. (Issue #5, first slice.)

use std::time::Duration;

use e2e_tests::*;
use maintenance::registry::{CartridgeSpec, Channel, Device, Home, Owner};
use maintenance::templates::Lang;
use maintenance::{Engine, EngineConfig, Policy, Role};
use protocol::message::Model;

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
    let admin = {
        let engine = Engine::open(&db, EngineConfig { policy: Policy::default(), ticket_webhooks: Vec::new() }).unwrap();
        engine
            .put_home(&Home {
                id: "h1".into(),
                address: "1 Century Avenue, Pudong".into(),
                region: "sh".into(),
                tz: "Asia/Shanghai".into(),
                lang: Lang::ZhCn,
                quiet_start: "22:00".into(),
                quiet_end: "08:00".into(),
                weekly_cap: None,
                channels: vec![Channel::App],
                owner: Owner { name: "Li Lei".into(), phone: "13812341234".into(), email: None },
            })
            .unwrap();
        engine
            .put_device(&Device { id: "toilet-00001".into(), home_id: "h1".into(), model: Model::Toilet, installed_ts_ms: 0, cartridges: Vec::<CartridgeSpec>::new() })
            .unwrap();
        engine.issue_token(Role::Admin, None, gateway::ingest::pipeline::now_ms()).unwrap()
    };

    let broker = Mosquitto::start().unwrap();
    let extra = format!(
        "[maintenance]\ndb_path = \"{}\"\ntick_interval_s = 1\ndispatch_interval_s = 1\n[maintenance.delivery]\nhmac_secret = \"0123456789abcdef0123\"\n",
        db.display()
    );
    let gw = GatewayProcess::spawn(work.path(), broker.port, &StoreTarget::Sqlite, "gw-maint", &extra).unwrap();

    let now = gateway::ingest::pipeline::now_ms() - 60_000;
    let messages = vec![
        fault_event("toilet-00001", 1, now, "raised"),
        fault_event("toilet-00001", 2, now + 1000, "raised"),
        fault_event("toilet-00001", 3, now + 2000, "raised"),
        fault_event("toilet-09999", 1, now, "raised"), // not registered: skipped
        fault_event("toilet-00001", 4, now + 3000, "cleared"),
    ];
    assert_eq!(publish_all(broker.port, "pub-maint", messages, None, None).unwrap(), 5);
    let m = wait_until(Duration::from_secs(30), "the reports to reach the maintenance engine", || {
        let m = gw.metrics().ok()?;
        (m["acked"].as_u64()? >= 5).then_some(m)
    })
    .unwrap();
    assert_eq!(m["maintenance_applied"], 4, "{m}");
    assert_eq!(m["maintenance_errors"], 0, "{m}");

    let tickets: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{}/api/tickets", gw.http_port))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let list = tickets.as_array().unwrap_or_else(|| panic!("{tickets}"));
    assert_eq!(list.len(), 1, "one ticket however often the leak is reported: {tickets}");
    assert_eq!(list[0]["device_id"], "toilet-00001");
    assert_eq!(list[0]["kind"], "leak");
    assert_eq!(list[0]["priority"], "critical");
    assert_eq!(list[0]["condition_cleared"], true, "{tickets}");
    let deadline_h = (list[0]["deadline_ts_ms"].as_i64().unwrap() - list[0]["opened_ts_ms"].as_i64().unwrap()) / 3_600_000;
    assert_eq!(deadline_h, 4, "a leak's deadline is 4 h");

    let unauthorised = reqwest::blocking::get(format!("http://127.0.0.1:{}/api/tickets", gw.http_port)).unwrap();
    assert_eq!(unauthorised.status().as_u16(), 401);
}
