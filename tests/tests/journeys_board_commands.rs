//! Remote diagnosis from the after-sales board (issue #12, items 4 and 5), end to end in
//! headless Chromium: real Mosquitto and InfluxDB 1.6.7, the gateway as a real process
//! with its maintenance engine, and a simulated household whose devices stay connected
//! after their history and answer commands through the firmware.
//!
//! A toilet starts leaking; the policy closes its inlet valve. An agent opens the ticket
//! on the board, sees one button per command the model supports (a toilet has a valve and
//! a cleaning programme), runs a diagnostic, and watches it go
//! queued → sent → acknowledged → done; the device's answer (active faults, valve closed,
//! sensors) shows on the ticket in words and on its evidence. The same panel in Chinese
//! on a 390 px phone does not overflow. The command is audited with the agent's label.
//!
//! Screenshots go to `target/screenshots/` and `docs/screenshots/board-diagnostic.png`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::*;
use maintenance::registry::{Channel, Device, Home, Owner};
use maintenance::templates::Lang;
use maintenance::{Engine, EngineConfig, Policy, Role};
use protocol::message::Model;
use serde_json::{json, Value};
use simulator::faults::{FaultKind, FaultMix, Injection};
use simulator::live::{LiveConfig, LiveStats, SharedDevice};
use simulator::publish::BrokerUrl;
use simulator::{Fleet, FleetConfig};

const DAY: i64 = 86_400_000;

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

/// `[clientWidth, scrollWidth]` of the document: equal when nothing overflows.
fn no_overflow(b: &Browser) {
    let w = b
        .js("return [document.documentElement.clientWidth, document.documentElement.scrollWidth]")
        .unwrap();
    assert_eq!(w[0], w[1], "no horizontal scrolling: {w}");
}

#[test]
fn an_agent_runs_a_diagnostic_from_the_board_and_reads_the_devices_answer_on_the_ticket() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    let now = gateway::clock::now_ms();

    // One household: toilet-0000 (inlet valve, cleaning programme) and purifier-0001; the
    // toilet starts leaking 6 hours before now.
    let start = (now - 3 * DAY).div_euclid(DAY) * DAY;
    let leak_day = (now - 6 * 3_600_000 - start) as f64 / DAY as f64;
    let mut fleet = Fleet::new(FleetConfig {
        devices: 2,
        days: 3,
        end_ms: now,
        seed: 5,
        telemetry_every_min: 15,
        mix: FaultMix::parse("none").unwrap(),
        inject: vec![Injection::on(
            "toilet-0000",
            FaultKind::Leak,
            leak_day,
            Some(10.0),
        )],
    })
    .unwrap();
    let mut history = Vec::new();
    while let Some(batch) = fleet.next_batch() {
        history.extend(batch.into_iter().map(|m| (m.topic, m.payload)));
    }

    let (agent, admin) = {
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
            address: "9 Huaihai Road".into(),
            region: "shanghai".into(),
            tz: "Asia/Shanghai".into(),
            lang: Lang::ZhCn,
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
        .unwrap();
        for (id, model) in [
            ("toilet-0000", Model::Toilet),
            ("purifier-0001", Model::Purifier),
        ] {
            e.put_device(&Device {
                id: id.into(),
                home_id: "h1".into(),
                model,
                installed_ts_ms: start - 100 * DAY,
                cartridges: Vec::new(),
            })
            .unwrap();
        }
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
        "gw-board-commands",
        &extra,
    )
    .unwrap();
    let port = gw.http_port;

    // The devices go live (subscribed to their cmd topics), then their history is delivered.
    let devices: Vec<SharedDevice> = fleet
        .into_devices()
        .into_iter()
        .map(|d| Arc::new(Mutex::new(d)))
        .collect();
    let stats = Arc::new(LiveStats::default());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let live = {
        let stats = Arc::clone(&stats);
        let broker: BrokerUrl = format!("mqtt://127.0.0.1:{}", broker.port).parse().unwrap();
        let devices = devices.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(simulator::live::serve(
                devices,
                LiveConfig::new(broker),
                stats,
                stop_rx,
            ));
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let n = history.len();
    assert_eq!(
        publish_all(broker.port, "pub-history", history, None, None).unwrap(),
        n
    );

    // The leak's ticket, and the policy's valve command answered (the device is live).
    let leak = wait_until(Duration::from_secs(120), "the leak's ticket", || {
        let (_, list) = api(port, "GET", "/tickets?device_id=toilet-0000", &agent, None);
        list.as_array()?
            .iter()
            .find(|t| t["kind"] == "leak")
            .cloned()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    let tid = leak["id"].as_i64().unwrap();
    wait_until(
        Duration::from_secs(120),
        "the policy's valve command",
        || {
            let (_, list) = api(
                port,
                "GET",
                &format!("/tickets/{tid}/commands"),
                &agent,
                None,
            );
            list.as_array()?
                .iter()
                .any(|c| c["kind"] == "close_inlet_valve" && c["status"] == "done")
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    // The API offers the commands of the model: a toilet has a valve and a cleaning programme.
    let (_, detail) = api(port, "GET", &format!("/tickets/{tid}"), &agent, None);
    assert_eq!(detail["model"], "toilet", "{detail}");
    assert_eq!(
        detail["commands"],
        json!([
            "report_diagnostics",
            "self_test",
            "close_inlet_valve",
            "open_inlet_valve",
            "start_cleaning"
        ])
    );

    let driver = ChromeDriver::start().unwrap();
    let card = format!("#ticket-{tid}");

    // The agent at desktop size (a tall window: the whole ticket in one screenshot): open
    // the ticket, run a diagnostic from the board.
    let b = driver.session(1280, 1500, Some("en-US")).unwrap();
    b.goto(&format!("http://127.0.0.1:{port}/board#token={agent}"))
        .unwrap();
    b.wait_text(&card, "Leak").unwrap();
    assert!(
        !b.text("#app").unwrap().contains("null"),
        "no absent part printed"
    );
    b.click(&format!("{card} .act-evidence")).unwrap();
    b.wait_text("#commands", "Remote commands").unwrap();
    let offered = b
        .js("return [...document.querySelectorAll('#commands .act-cmd')].map((x) => x.dataset.command)")
        .unwrap();
    assert_eq!(offered, detail["commands"], "one button per command");
    let buttons = b.text("#commands .cmd-buttons").unwrap();
    for label in [
        "Run diagnostics",
        "Self-test",
        "Close inlet valve",
        "Open inlet valve",
        "Start cleaning",
    ] {
        assert!(buttons.contains(label), "{label}: {buttons}");
    }
    // The policy's valve command is listed as done, by the policy.
    let list = b.wait_text("#cmd-list", "Close inlet valve").unwrap();
    assert!(
        list.contains("automatic (policy)") && list.contains("Inlet valve closed"),
        "{list}"
    );

    b.click("#commands .act-cmd.cmd-report_diagnostics")
        .unwrap();
    // It appears at once (queued or further on) ...
    b.wait_for("the diagnostic in the list", |b| {
        b.exists("#cmd-list li[data-kind=report_diagnostics]")
    })
    .unwrap();
    // ... and the simulated device's answer lands on the ticket.
    // (The browser's own waits are 10 s; a loaded machine gets a minute.)
    wait_until(Duration::from_secs(60), "the diagnostic to be done", || {
        b.exists("#cmd-list li[data-kind=report_diagnostics][data-status=done]")
            .unwrap_or(false)
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    let item = b
        .wait_text(
            "#cmd-list li[data-kind=report_diagnostics]",
            "Active faults",
        )
        .unwrap();
    for needle in [
        "Run diagnostics",
        "Done",
        "Queued",
        "Sent",
        "Acknowledged",
        "Sensors",
        "Inlet valve",
        "closed",
        "sent from the board",
    ] {
        assert!(item.contains(needle), "{needle}: {item}");
    }
    assert!(
        item.contains("Faults active on the device") || item.contains("No fault active"),
        "the outcome in words: {item}"
    );
    assert!(!item.contains('{'), "no raw JSON: {item}");
    assert_eq!(
        b.js("return document.querySelector('#cmd-list li[data-kind=report_diagnostics] .cmd-steps li.current').textContent")
            .unwrap(),
        json!("Done")
    );
    // The answer is on the ticket's evidence, in words.
    let evidence = b
        .wait_text("#detail table.evidence", "Run diagnostics")
        .unwrap();
    assert!(evidence.contains("Command #"), "{evidence}");
    no_overflow(&b);
    // The readings around the finding: water use on a time axis, in litres per hour.
    let chart = b.text("#readings figcaption").unwrap();
    assert!(
        chart.contains("Water use (L/h)") && chart.contains("readings from"),
        "{chart}"
    );
    assert!(
        b.js("return document.querySelectorAll('#readings svg circle.dot').length")
            .unwrap()
            .as_u64()
            .is_some_and(|n| n >= 10),
        "a day of readings, not a single dot"
    );
    b.js("window.scrollTo(0, 0)").unwrap();
    let shot = b.screenshot("board-diagnostic").unwrap();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::copy(&shot, docs.join("board-diagnostic.png")).unwrap();
    drop(b);

    // Through the API: done, with the device's diagnostics, and audited under the agent.
    let (_, cmds) = api(
        port,
        "GET",
        &format!("/tickets/{tid}/commands"),
        &agent,
        None,
    );
    let diag = cmds
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "report_diagnostics")
        .cloned()
        .unwrap_or_else(|| panic!("{cmds}"));
    assert_eq!(diag["status"], "done", "{diag}");
    assert_eq!(diag["result"]["inlet_valve_open"], json!(false), "{diag}");
    assert_eq!(diag["reason"], "sent from the board", "{diag}");
    let cid = diag["id"].as_i64().unwrap();
    let (_, audit) = api(port, "GET", "/audit?limit=1000", &admin, None);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "command.queue"
                && a["actor"] == diag["requested_by"]
                && a["resource"]
                    .as_str()
                    .is_some_and(|r| r.contains(&format!("/command/{cid}:report_diagnostics")))),
        "the board's command is audited under the agent: {audit}"
    );

    // The same ticket in Chinese on a 390 px phone: every string translated, nothing overflows.
    let zh = driver.session(390, 844, Some("zh-CN")).unwrap();
    zh.goto(&format!("http://127.0.0.1:{port}/board#token={agent}"))
        .unwrap();
    zh.wait_text(&card, "漏水").unwrap();
    zh.click(&format!("{card} .act-evidence")).unwrap();
    let panel = zh.wait_text("#commands", "远程指令").unwrap();
    assert!(
        panel.contains("远程诊断") && panel.contains("关闭进水阀"),
        "{panel}"
    );
    let item = zh
        .wait_text("#cmd-list li[data-kind=report_diagnostics]", "当前故障")
        .unwrap();
    assert!(
        item.contains("已完成") && item.contains("进水阀") && item.contains("关闭"),
        "{item}"
    );
    assert!(
        !item.contains("Active faults") && !item.contains("report_diagnostics"),
        "{item}"
    );
    // The policy's reason (stored in English for the audit log) reads in Chinese too.
    let valve = zh
        .wait_text(
            "#cmd-list li[data-kind=close_inlet_valve]",
            "自动关闭进水阀",
        )
        .unwrap();
    assert!(
        !valve.contains("policy") && !valve.contains("closing"),
        "{valve}"
    );
    no_overflow(&zh);
    zh.js("document.getElementById('commands').scrollIntoView()")
        .unwrap();
    zh.screenshot("board-diagnostic-zh-390").unwrap();
    drop(zh);

    let _ = stop.send(true);
    live.join().unwrap();
}
