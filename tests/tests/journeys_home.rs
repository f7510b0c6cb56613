//! The homeowner's page a real user trusts (issue #12, item 5), in headless Chromium on a
//! 390×844 phone, in English and Chinese: a leak shows the safety steps, no snooze and no
//! second booking while its visit is open, and the visit's status bar; each cartridge has
//! one reminder (an older due date's reminder is replaced, not stacked) naming the
//! cartridge; the gauge comes from the litres the device's usage leaves against the rated
//! capacity. Real gateway process (SQLite store, Mosquitto). Screenshots go to
//! `target/screenshots/` and `docs/screenshots/home-leak-{en,zh}-390.png`.

use std::path::Path;

use e2e_tests::*;
use maintenance::registry::{CartridgeSpec, Channel, Device, Home, Owner};
use maintenance::templates::Lang;
use maintenance::{Engine, EngineConfig, Finding, FindingKind, FindingState, Policy, Role};
use protocol::message::{CartridgeKind, Model, Severity};
use serde_json::json;

const DAY_MS: i64 = 86_400_000;

#[test]
fn a_homeowner_sees_safety_steps_a_status_bar_and_one_reminder_per_cartridge_on_a_phone() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    let now = gateway::clock::now_ms();
    let (owner, leak_ticket, reminders) = {
        let e = Engine::open(
            &db,
            EngineConfig {
                policy: Policy::default(),
                ticket_webhooks: Vec::new(),
            },
        )
        .unwrap();
        e.put_home(&Home {
            site: None,
            id: "h1".into(),
            address: "1 Century Avenue, Pudong".into(),
            region: "shanghai".into(),
            tz: "Asia/Shanghai".into(),
            lang: Lang::ZhCn,
            quiet_start: "23:59".into(),
            quiet_end: "00:00".into(),
            weekly_cap: None,
            channels: vec![Channel::App],
            owner: Owner {
                name: "Li Lei".into(),
                phone: "13812341234".into(),
                email: None,
            },
        })
        .unwrap();
        for (id, model, cartridges) in [
            ("toilet-00001", Model::Toilet, vec![]),
            (
                "purifier-00001",
                Model::Purifier,
                vec![CartridgeSpec {
                    slot: 0,
                    kind: CartridgeKind::Sediment,
                    rated_litres: 1_500,
                    max_age_days: 180,
                    replaced_ts_ms: Some(now - 170 * DAY_MS),
                    replacements: 1,
                }],
            ),
        ] {
            e.put_device(&Device {
                id: id.into(),
                home_id: "h1".into(),
                model,
                installed_ts_ms: now - 300 * DAY_MS,
                cartridges,
            })
            .unwrap();
        }
        // The sediment cartridge: first forecast 20 days out, then (more use) 6 days out.
        // The second replaces the first's reminders instead of stacking them.
        for (due_days, remaining) in [(20, 400.0), (6, 120.0)] {
            let due = now + due_days * DAY_MS;
            e.ingest(
                &Finding {
                    device_id: "purifier-00001".into(),
                    kind: FindingKind::FilterDue {
                        slot: 0,
                        due_ts_ms: due,
                    },
                    severity: Severity::Info,
                    evidence: json!({ "cartridge": "sediment", "due_ts_ms": due, "remaining_l": remaining, "daily_l": 20.0 }),
                    began_ts_ms: now,
                    state: FindingState::Active,
                },
                now,
            )
            .unwrap();
        }
        let leak = e
            .ingest(
                &Finding {
                    device_id: "toilet-00001".into(),
                    kind: FindingKind::Leak,
                    severity: Severity::Critical,
                    evidence: json!({ "fault_code": "leak", "value": 850.0 }),
                    began_ts_ms: now - 60_000,
                    state: FindingState::Active,
                },
                now,
            )
            .unwrap();
        let ticket = leak.ticket.expect("a leak opens a ticket").0;
        let owner = e.issue_token(Role::Homeowner, Some("h1"), now).unwrap();
        let reminders = e
            .read(|c| maintenance::reminders::list(c, Some("h1")))
            .unwrap();
        (owner, ticket, reminders)
    };
    let leak_reminder = reminders
        .iter()
        .find(|r| r.kind == "leak")
        .expect("the leak alert")
        .id;
    let live_filter: Vec<_> = reminders
        .iter()
        .filter(|r| r.kind == "filter_due" && matches!(r.status.as_str(), "sent" | "scheduled"))
        .collect();
    assert!(
        live_filter
            .iter()
            .all(|r| r.vars["due_ts_ms"].as_i64() == Some(now + 6 * DAY_MS)),
        "the 20-day reminders were replaced: {reminders:?}"
    );

    let broker = Mosquitto::start().unwrap();
    let extra = format!(
        "[maintenance]\ndb_path = \"{}\"\ntick_interval_s = 1\ndispatch_interval_s = 1\n[maintenance.delivery]\nhmac_secret = \"0123456789abcdef0123\"\n",
        db.display()
    );
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "gw-home",
        &extra,
    )
    .unwrap();
    // The engine refuses to snooze a leak, whatever the page shows.
    let res = reqwest::blocking::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/api/reminders/{leak_reminder}/snooze",
            gw.http_port
        ))
        .bearer_auth(&owner)
        .json(&json!({ "hours": 24 }))
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 422);

    let driver = ChromeDriver::start().unwrap();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&docs).unwrap();
    for (lang, safety, step, cartridge, litres) in [
        (
            "en-US",
            "Close the water inlet valve",
            "Reported",
            "Replace the sediment cartridge by",
            "of 1500 L left",
        ),
        (
            "zh-CN",
            "关闭设备后方的进水阀",
            "已报修",
            "PP 棉滤芯请在",
            "剩余",
        ),
    ] {
        let b = driver.session(390, 844, Some(lang)).unwrap();
        b.goto(&format!(
            "http://127.0.0.1:{}/home#token={owner}",
            gw.http_port
        ))
        .unwrap();
        let leak = b
            .wait_text(&format!("#reminder-{leak_reminder}"), safety)
            .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
        assert!(
            !b.exists(&format!("#reminder-{leak_reminder} .act-snooze"))
                .unwrap()
                && !b
                    .exists(&format!("#reminder-{leak_reminder} .act-book"))
                    .unwrap(),
            "no snooze, no second booking while the visit is open: {leak}"
        );
        assert!(leak.contains(&format!("#{leak_ticket}")), "{leak}");
        let visit = b.wait_text(&format!("#visit-{leak_ticket}"), step).unwrap();
        assert_eq!(
            b.js(&format!(
                "return document.querySelectorAll('#visit-{leak_ticket} ol.steps li').length"
            ))
            .unwrap(),
            json!(5),
            "{visit}"
        );
        // One reminder for the sediment cartridge, naming it.
        let filters = b
            .js("return [...document.querySelectorAll('#reminders li.reminder[data-kind=filter_due]')].map((e) => e.innerText)")
            .unwrap();
        let filters = filters.as_array().unwrap();
        assert_eq!(filters.len(), 1, "{filters:?}");
        assert!(
            filters[0].as_str().unwrap().contains(cartridge),
            "{filters:?}"
        );
        // The gauge: 120 L of 1500 L reported left (8 %), not the time since it was fitted.
        let gauge = b.wait_text("#cartridge-purifier-00001-0", litres).unwrap();
        assert!(gauge.contains("8%"), "{gauge}");
        let w = b
            .js("return [document.documentElement.clientWidth, document.documentElement.scrollWidth]")
            .unwrap();
        assert_eq!(w[0], w[1], "no horizontal scrolling on a phone: {w}");
        let name = format!("home-leak-{}-390", &lang[..2]);
        let shot = b.screenshot(&name).unwrap();
        std::fs::copy(&shot, docs.join(format!("{name}.png"))).unwrap();
    }
}
