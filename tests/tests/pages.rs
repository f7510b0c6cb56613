//! The pages served by the gateway, in real headless Chromium (issue #6): an agent
//! assigns and resolves a ticket opened by a leak published over MQTT; a homeowner
//! snoozes a reminder and books a visit that then appears on the agent's board; a
//! homeowner cannot open another home's page; a technician works their own ticket on
//! the board at desktop size, seeing the homeowner's phone masked, while the agent
//! reads the fleet page; the pages render on a 390×844 phone screen in Chinese and
//! English. Real Mosquitto, InfluxDB 1.6.7, gateway process and
//! ChromeDriver; every test saves screenshots under `target/screenshots/`.

use std::time::Duration;

use e2e_tests::*;
use maintenance::registry::{CartridgeSpec, Channel, Device, Home, Owner, Technician};
use maintenance::templates::Lang;
use maintenance::{Engine, EngineConfig, Finding, FindingKind, FindingState, Policy, Role};
use protocol::message::{CartridgeKind, Model, Severity};
use serde_json::{json, Value};

const DAY_MS: i64 = 86_400_000;

/// Everything a page test needs: services, the gateway with `[maintenance]`, and tokens.
struct Site {
    gw: GatewayProcess,
    broker: Mosquitto,
    _influx: Influx,
    driver: ChromeDriver,
    _work: tempfile::TempDir,
    agent: String,
    /// Homeowner of `h1`.
    owner_h1: String,
    /// Technician Zhao Min (Beijing; filter and electrical work).
    tech_zhao: String,
}

fn home(id: &str, region: &str, address: &str, name: &str, phone: &str) -> Home {
    Home {
        site: None,
        id: id.into(),
        address: address.into(),
        region: region.into(),
        tz: "Asia/Shanghai".into(),
        lang: Lang::ZhCn,
        quiet_start: "23:59".into(),
        quiet_end: "00:00".into(),
        weekly_cap: None,
        channels: vec![Channel::App],
        owner: Owner {
            name: name.into(),
            phone: phone.into(),
            email: None,
        },
    }
}

fn cartridge(slot: u8, kind: CartridgeKind, rated_litres: u32, max_age_days: u32) -> CartridgeSpec {
    CartridgeSpec {
        slot,
        kind,
        rated_litres,
        max_age_days,
        replaced_ts_ms: None,
        replacements: 0,
    }
}

impl Site {
    /// Registers two homes (h1 in Shanghai with a toilet and a purifier whose RO cartridge
    /// is due in 5 days; h2 in Beijing), two Beijing technicians (so nothing in h1 is
    /// assigned automatically), starts the services and the gateway.
    fn start(name: &str) -> Site {
        let work = tempfile::tempdir().unwrap();
        let db = work.path().join("maintenance.db");
        let now = gateway::clock::now_ms();
        let (agent, owner_h1, tech_zhao) = {
            let e = Engine::open(
                &db,
                EngineConfig {
                    policy: Policy::default(),
                    ticket_webhooks: Vec::new(),
                },
            )
            .unwrap();
            e.put_home(&home(
                "h1",
                "shanghai",
                "1 Century Avenue, Pudong",
                "Li Lei",
                "13812341234",
            ))
            .unwrap();
            e.put_home(&home(
                "h2",
                "beijing",
                "88 Jianguo Road, Chaoyang",
                "Han Meimei",
                "13987654321",
            ))
            .unwrap();
            e.put_device(&Device {
                id: "toilet-00001".into(),
                home_id: "h1".into(),
                model: Model::Toilet,
                installed_ts_ms: now - 200 * DAY_MS,
                cartridges: Vec::new(),
            })
            .unwrap();
            e.put_device(&Device {
                id: "purifier-00001".into(),
                home_id: "h1".into(),
                model: Model::Purifier,
                installed_ts_ms: now - 175 * DAY_MS,
                cartridges: vec![
                    CartridgeSpec {
                        replaced_ts_ms: Some(now - 60 * DAY_MS),
                        replacements: 1,
                        ..cartridge(0, CartridgeKind::Sediment, 2_000, 180)
                    },
                    cartridge(1, CartridgeKind::ReverseOsmosis, 6_000, 180),
                ],
            })
            .unwrap();
            e.put_device(&Device {
                id: "purifier-00002".into(),
                home_id: "h2".into(),
                model: Model::Purifier,
                installed_ts_ms: now - 30 * DAY_MS,
                cartridges: vec![cartridge(0, CartridgeKind::Carbon, 3_000, 365)],
            })
            .unwrap();
            for (id, name, skills) in [
                ("t-wang", "Wang Qiang", vec!["plumbing"]),
                ("t-zhao", "Zhao Min", vec!["filter", "electrical"]),
            ] {
                e.put_technician(&Technician {
                    id: id.into(),
                    name: name.into(),
                    region: "beijing".into(),
                    skills: skills.into_iter().map(String::from).collect(),
                })
                .unwrap();
            }
            // The RO cartridge's forecast: due in 5 days, so reminders exist now.
            let due = Finding {
                device_id: "purifier-00001".into(),
                kind: FindingKind::FilterDue {
                    slot: 1,
                    due_ts_ms: now + 5 * DAY_MS,
                },
                severity: Severity::Info,
                evidence: json!({ "remaining_l": 300, "due_ts_ms": now + 5 * DAY_MS, "lo_ts_ms": now + 3 * DAY_MS, "hi_ts_ms": now + 8 * DAY_MS }),
                began_ts_ms: now,
                state: FindingState::Active,
            };
            e.ingest(&due, now).unwrap();
            // Beijing's history, so the board and the fleet page have company: a heater fault
            // opened 50 h ago (48 h deadline: overdue), a sensor fault fixed yesterday, and a
            // self-service finding without a ticket.
            e.put_device(&Device {
                id: "toilet-00002".into(),
                home_id: "h2".into(),
                model: Model::Toilet,
                installed_ts_ms: now - 90 * DAY_MS,
                cartridges: Vec::new(),
            })
            .unwrap();
            let finding = |kind, ago_h: i64, value: f64| Finding {
                device_id: "toilet-00002".into(),
                kind,
                severity: Severity::Major,
                evidence: json!({ "value": value }),
                began_ts_ms: now - ago_h * 3_600_000,
                state: FindingState::Active,
            };
            e.ingest(
                &finding(FindingKind::HeaterFault, 50, 71.5),
                now - 50 * 3_600_000,
            )
            .unwrap();
            let fixed = e
                .ingest(
                    &finding(FindingKind::SensorFault, 30, 0.0),
                    now - 30 * 3_600_000,
                )
                .unwrap()
                .ticket
                .unwrap()
                .0;
            e.transition(
                fixed,
                maintenance::tickets::TicketStatus::InProgress,
                "agent:seed",
                None,
                now - 26 * 3_600_000,
            )
            .unwrap();
            e.transition(
                fixed,
                maintenance::tickets::TicketStatus::Resolved,
                "agent:seed",
                None,
                now - 20 * 3_600_000,
            )
            .unwrap();
            e.ingest(
                &finding(FindingKind::LowInletPressure, 3, 95.0),
                now - 3 * 3_600_000,
            )
            .unwrap();
            (
                e.issue_token(Role::Agent, None, now).unwrap(),
                e.issue_token(Role::Homeowner, Some("h1"), now).unwrap(),
                e.issue_token(Role::Technician, Some("t-zhao"), now)
                    .unwrap(),
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
            &format!("gw-{name}"),
            &extra,
        )
        .unwrap();
        let driver = ChromeDriver::start().unwrap();
        Site {
            gw,
            broker,
            _influx: influx,
            driver,
            _work: work,
            agent,
            owner_h1,
            tech_zhao,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gw.http_port)
    }

    /// A page with the token handed over once in the fragment.
    fn page(&self, path: &str, token: &str) -> String {
        self.url(&format!("{path}#token={token}"))
    }

    fn api(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let c = reqwest::blocking::Client::new();
        let mut req = c
            .request(method.parse().unwrap(), self.url(&format!("/api{path}")))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().unwrap();
        let status = res.status().as_u16();
        (status, res.json().unwrap_or(Value::Null))
    }

    /// Publishes a leak that comes back three times, growing (raised, cleared, raised, …)
    /// for `toilet-00001` and returns its ticket: each episode is one finding, and the
    /// repeats attach their evidence to the one ticket.
    fn leak_ticket(&self) -> Value {
        let now = gateway::clock::now_ms() - 60_000;
        let episodes = [
            (1, 0, "raised", 42.0),
            (2, 10_000, "cleared", 0.0),
            (3, 20_000, "raised", 55.5),
            (4, 30_000, "cleared", 0.0),
            (5, 40_000, "raised", 61.0),
        ];
        let msgs: Vec<(String, Vec<u8>)> = episodes
            .into_iter()
            .map(|(seq, dt, state, value)| {
                let payload = format!(
                    r#"{{"v":1,"device_id":"toilet-00001","boot_id":1,"seq":{seq},"ts":{},"event":{{"fault":{{"code":"leak","severity":"critical","state":"{state}","value":{value}}}}}}}"#,
                    now + dt
                );
                ("fixtures/toilet-00001/event".to_owned(), payload.into_bytes())
            })
            .collect();
        assert_eq!(
            publish_all(self.broker.port, "pub-pages", msgs, None, None).unwrap(),
            5
        );
        wait_until(Duration::from_secs(30), "the leak ticket", || {
            let (_, list) = self.api("GET", "/tickets?device_id=toilet-00001", &self.agent, None);
            let t = list
                .as_array()?
                .iter()
                .find(|t| t["kind"] == "leak")?
                .clone();
            let (_, detail) = self.api("GET", &format!("/tickets/{}", t["id"]), &self.agent, None);
            (detail["evidence"].as_array()?.len() >= 3).then_some(t)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.gw.log_tail()))
    }
}

#[test]
fn an_agent_assigns_a_leak_ticket_to_a_technician_and_resolves_it_on_the_board() {
    let site = Site::start("board");
    let ticket = site.leak_ticket();
    let id = ticket["id"].as_i64().unwrap();
    assert_eq!(
        ticket["status"], "open",
        "no Shanghai technician: nothing assigned automatically: {ticket}"
    );
    assert_eq!(ticket["region"], "shanghai");

    let b = site.driver.session(1280, 900, Some("en-US")).unwrap();
    b.goto(&site.page("/board", &site.agent)).unwrap();
    let card = format!("#ticket-{id}");
    let text = b.wait_text(&card, "Leak").unwrap();
    assert!(
        text.contains("Critical") && text.contains("Unassigned") && text.contains("left"),
        "{text}"
    );

    // The evidence: the five reports of the leak (three raises, two clears at 0), charted.
    b.click(&format!("{card} .act-evidence")).unwrap();
    // In words and units, the phone masked until the agent gives a reason to reveal it.
    let detail = b.wait_text("#detail", "61 mL/min").unwrap();
    assert!(
        detail.contains("Leak flow · 42 mL/min")
            && detail.contains("Critical")
            && detail.contains("Li Lei 138****1234")
            && !detail.contains("13812341234"),
        "{detail}"
    );
    b.click("#detail .act-reveal").unwrap();
    assert!(b.exists("#detail .reveal").unwrap(), "no reason, no reveal");
    b.type_into("#detail .reveal-reason", "calling about the leak")
        .unwrap();
    b.click("#detail .act-reveal").unwrap();
    b.wait_text("#detail .contact", "13812341234").unwrap();
    assert_eq!(
        b.js("return document.querySelectorAll('#detail svg circle.dot').length")
            .unwrap(),
        json!(5)
    );

    // Filters: Beijing shows its overdue heater fault (assigned automatically) and not the
    // leak; Shanghai and "unassigned" show the leak.
    b.select("#f-region", "beijing").unwrap();
    b.wait_for("the leak to be filtered out", |b| Ok(!b.exists(&card)?))
        .unwrap();
    let beijing = b.wait_text("#tickets", "Heater fault").unwrap();
    assert!(
        beijing.contains("overdue") && beijing.contains("Zhao Min"),
        "{beijing}"
    );
    b.select("#f-region", "shanghai").unwrap();
    b.find(&card).unwrap();
    b.select("#f-tech", "-").unwrap();
    b.find(&card).unwrap();
    b.select("#f-tech", "t-zhao").unwrap();
    b.wait_for("the unassigned leak to be filtered out", |b| {
        Ok(!b.exists(&card)?)
    })
    .unwrap();
    b.select("#f-region", "").unwrap();
    b.select("#f-tech", "").unwrap();
    b.find(&card).unwrap();
    b.click(&format!("{card} .act-evidence")).unwrap();
    b.wait_text("#detail", "61 mL/min").unwrap();
    b.screenshot("board-open-ticket").unwrap();

    b.select(&format!("{card} select.assign-to"), "t-wang")
        .unwrap();
    b.click(&format!("{card} .act-assign")).unwrap();
    b.wait_text(&card, "Assigned").unwrap();
    b.wait_text(&format!("{card} .assignee"), "Wang Qiang")
        .unwrap();
    b.click(&format!("{card} .act-start")).unwrap();
    b.wait_text(&card, "In progress").unwrap();
    b.click(&format!("{card} .act-resolve")).unwrap();
    // Resolved tickets leave the default (active) view; "all" shows them.
    b.wait_for("the resolved ticket to leave the active view", |b| {
        Ok(!b.exists(&card)?)
    })
    .unwrap();
    b.select("#f-status", "").unwrap();
    let text = b.wait_text(&card, "Resolved").unwrap();
    assert!(text.contains("Close"), "{text}");
    b.screenshot("board-resolved").unwrap();

    let (status, t) = site.api("GET", &format!("/tickets/{id}"), &site.agent, None);
    assert_eq!(status, 200);
    assert_eq!(
        (t["status"].as_str(), t["assignee"].as_str()),
        (Some("resolved"), Some("t-wang")),
        "{t}"
    );
    assert!(
        t["ack_ts_ms"].is_i64() && t["resolved_ts_ms"].is_i64(),
        "{t}"
    );
}

#[test]
fn a_technician_works_their_own_ticket_at_desktop_size_and_the_agent_reads_the_fleet_page() {
    let site = Site::start("tech");
    let leak = site.leak_ticket(); // Shanghai, unassigned: not Zhao's
    let (_, list) = site.api("GET", "/tickets?device_id=toilet-00002", &site.agent, None);
    let heater = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "heater_fault")
        .cloned()
        .unwrap();
    assert_eq!(
        (heater["assignee"].as_str(), heater["status"].as_str()),
        (Some("t-zhao"), Some("assigned")),
        "{heater}"
    );
    let id = heater["id"].as_i64().unwrap();
    let card = format!("#ticket-{id}");

    let b = site.driver.session(1440, 900, Some("en-US")).unwrap();
    b.goto(&site.page("/board", &site.tech_zhao)).unwrap();
    let text = b.wait_text(&card, "Heater fault").unwrap();
    assert!(
        text.contains("Assigned") && text.contains("You") && !text.contains("t-zhao"),
        "their own name for it: {text}"
    );
    assert!(
        text.contains("overdue"),
        "opened 50 h ago with a 48 h deadline: {text}"
    );
    // Only their own tickets, and no agent's controls.
    let all = b.text("#tickets").unwrap();
    assert!(
        !all.contains("Leak") && !b.exists(&format!("#ticket-{}", leak["id"])).unwrap(),
        "{all}"
    );
    assert!(
        !b.exists(".act-assign").unwrap()
            && !b.exists("#f-tech").unwrap()
            && !b.exists(".act-close").unwrap()
    );

    // The evidence: the homeowner's phone masked (the API audits the read).
    b.click(&format!("{card} .act-evidence")).unwrap();
    let detail = b.wait_text("#detail", "Han Meimei").unwrap();
    assert!(
        detail.contains("139****4321") && !detail.contains("13987654321"),
        "{detail}"
    );
    let (_, api_detail) = site.api("GET", &format!("/tickets/{id}"), &site.tech_zhao, None);
    if let Some(address) = api_detail["address"].as_str() {
        assert!(
            detail.contains(address),
            "the open visit's address is shown: {detail}"
        );
    }
    b.screenshot("board-technician-1440").unwrap();

    b.click(&format!("{card} .act-start")).unwrap();
    b.wait_text(&card, "In progress").unwrap();
    b.click(&format!("{card} .act-resolve")).unwrap();
    b.wait_for("the resolved ticket to leave the active view", |b| {
        Ok(!b.exists(&card)?)
    })
    .unwrap();
    let (status, t) = site.api("GET", &format!("/tickets/{id}"), &site.tech_zhao, None);
    assert_eq!(status, 200);
    assert_eq!(
        (t["status"].as_str(), t["assignee"].as_str()),
        (Some("resolved"), Some("t-zhao")),
        "{t}"
    );
    assert!(
        t["address"].is_null(),
        "no address once the visit is over: {t}"
    );
    // Someone else's ticket stays out of reach through the API too.
    assert_eq!(
        site.api(
            "GET",
            &format!("/tickets/{}", leak["id"]),
            &site.tech_zhao,
            None
        )
        .0,
        404
    );
    drop(b);

    // The agent's fleet page at desktop size: the registry's counts, charts, the worst devices.
    let b = site.driver.session(1440, 900, Some("en-US")).unwrap();
    b.goto(&site.page("/fleet", &site.agent)).unwrap();
    b.wait_text("h1", "Fleet health").unwrap();
    assert!(b
        .wait_text("#registered", "4")
        .unwrap()
        .contains("Registered devices"));
    assert!(b.text("#homes").unwrap().contains('2'));
    assert_eq!(
        b.js("return document.querySelectorAll('svg.chart').length >= 3")
            .unwrap(),
        json!(true)
    );
    let worst = b.wait_text("#worst", "toilet-00002").unwrap();
    assert!(worst.contains("beijing"), "{worst}");
    let kpi = b.text("#kpi").unwrap();
    assert!(
        kpi.contains("First-time fix") && kpi.contains("Deadline"),
        "{kpi}"
    );
    // The platform card: this gateway runs alone.
    let platform = b.text("#instances").unwrap();
    assert!(platform.contains("single-node"), "{platform}");
    let width = b
        .js("return [document.documentElement.clientWidth, document.documentElement.scrollWidth]")
        .unwrap();
    assert_eq!(
        width[0], width[1],
        "no horizontal scrolling at desktop size: {width}"
    );
    // Two columns of cards, each row's tops aligned.
    let tops = b.js("return [...document.querySelectorAll('.grid > .card')].map((c) => Math.round(c.getBoundingClientRect().top))").unwrap();
    assert_eq!(tops[0], tops[1], "cards side by side start level: {tops}");
    b.screenshot("fleet-en-1440").unwrap();
}

#[test]
fn a_homeowner_snoozes_a_reminder_and_books_a_visit_that_appears_on_the_board() {
    let site = Site::start("home");
    let (_, reminders) = site.api("GET", "/reminders", &site.owner_h1, None);
    // Due in 5 days: the 14-days-before reminder went out now, the 3-days-before one waits.
    let with_status = |status: &str| -> i64 {
        let r = reminders
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["status"] == status);
        r.and_then(|r| r["id"].as_i64())
            .unwrap_or_else(|| panic!("no {status} reminder: {reminders}"))
    };
    let (snooze, book) = (with_status("sent"), with_status("scheduled"));

    let b = site.driver.session(390, 844, Some("en-US")).unwrap();
    b.goto(&site.page("/home", &site.owner_h1)).unwrap();
    let ro = b
        .wait_text("#cartridge-purifier-00001-1", "Replace by")
        .unwrap();
    assert!(
        ro.contains("reverse osmosis") && ro.contains("Every 180 days or 6000 L"),
        "{ro}"
    );
    assert!(
        ro.contains("80 % likely between"),
        "the forecast's interval is shown: {ro}"
    );
    assert!(b.exists("#cartridge-purifier-00001-1 svg.gauge").unwrap());
    // The sediment cartridge was replaced 60 of its 180 days ago.
    b.wait_text("#cartridge-purifier-00001-0", "67% left")
        .unwrap();
    b.screenshot("home-before").unwrap();

    let before = gateway::clock::now_ms();
    b.wait_text(&format!("#reminder-{snooze} .state"), "new")
        .unwrap();
    b.click(&format!("#reminder-{snooze} .act-snooze")).unwrap();
    b.wait_text(&format!("#reminder-{snooze} .state"), "next reminder")
        .unwrap();
    let (_, r) = site.api("GET", &format!("/reminders/{snooze}"), &site.owner_h1, None);
    assert!(
        r["send_at_ts_ms"].as_i64().unwrap() >= before + 23 * 3_600_000,
        "snoozed a day: {r}"
    );

    // One reminder per cartridge: the later one of the same due date is not stacked below.
    assert!(
        !b.exists(&format!("#reminder-{book}")).unwrap(),
        "one reminder per cartridge"
    );
    b.wait_text(&format!("#reminder-{snooze}"), "reverse osmosis")
        .unwrap();
    b.click(&format!("#reminder-{snooze} .act-book")).unwrap();
    b.wait_text("#visits", "Filter due").unwrap();
    let (_, r) = site.api("GET", &format!("/reminders/{snooze}"), &site.owner_h1, None);
    assert_eq!(r["status"], "booked", "{r}");
    let visit = r["ticket_id"].as_i64().unwrap();
    let bar = b.wait_text(&format!("#visit-{visit}"), "Open").unwrap();
    assert!(
        bar.contains("Reported") && bar.contains("On the way") && bar.contains("Follow-up"),
        "{bar}"
    );
    assert_eq!(
        b.js(&format!(
            "return document.querySelector('#visit-{visit} ol.steps li.current').textContent"
        ))
        .unwrap(),
        json!("Reported")
    );
    let (_, rest) = site.api("GET", &format!("/reminders/{book}"), &site.owner_h1, None);
    assert_eq!(
        rest["status"], "cancelled",
        "the booking ends the cartridge's other reminder: {rest}"
    );
    b.js("document.getElementById('visits').scrollIntoView()")
        .unwrap();
    b.screenshot("home-booked").unwrap();
    drop(b);

    let agent = site.driver.session(1280, 900, Some("en-US")).unwrap();
    agent.goto(&site.page("/board", &site.agent)).unwrap();
    let card = agent
        .wait_text(&format!("#ticket-{visit}"), "booked by the homeowner")
        .unwrap();
    assert!(
        card.contains("Filter due") && card.contains("purifier-00001"),
        "{card}"
    );
    agent.screenshot("board-booked-visit").unwrap();
}

#[test]
fn a_homeowner_token_cannot_open_another_homes_page() {
    let site = Site::start("deny");
    let b = site.driver.session(390, 844, Some("en-US")).unwrap();
    b.goto(&site.page("/home/h2", &site.owner_h1)).unwrap();
    let text = b.wait_text("#not-allowed", "Not allowed").unwrap();
    assert!(text.contains("another home"), "{text}");
    let dom = b.source().unwrap();
    for secret in [
        "h2",
        "Jianguo",
        "Han Meimei",
        "13987654321",
        "purifier-00002",
        "beijing",
    ] {
        let visible = b
            .js(&format!(
                "return document.body.innerText.includes({secret:?})"
            ))
            .unwrap();
        assert_eq!(
            visible,
            json!(false),
            "{secret} visible on another home's page"
        );
        assert!(
            !dom.contains(secret) || secret == "h2",
            "{secret} in the DOM"
        );
    }
    b.screenshot("home-not-allowed").unwrap();
    // The API said 404, the same as for a home that does not exist.
    assert_eq!(site.api("GET", "/homes/h2", &site.owner_h1, None).0, 404);
    // A homeowner on the board or fleet page: not allowed either, and no ticket data.
    for page in ["/board", "/fleet"] {
        b.goto(&site.url(page)).unwrap();
        b.wait_text("#not-allowed", "Not allowed").unwrap();
    }
    // Their own home works with the same token.
    b.goto(&site.url("/home/h1")).unwrap();
    b.wait_text("#home-address", "1 Century Avenue").unwrap();
}

#[test]
fn pages_render_on_a_phone_in_chinese_and_english() {
    let site = Site::start("i18n");
    site.leak_ticket();
    let phone_width = |b: &Browser| -> i64 {
        let w = b.js("return [document.documentElement.clientWidth, document.documentElement.scrollWidth]").unwrap();
        assert_eq!(w[0], w[1], "no horizontal scrolling on a phone: {w}");
        w[0].as_i64().unwrap()
    };

    // The default language comes from the browser.
    let zh = site.driver.session(390, 844, Some("zh-CN")).unwrap();
    assert_eq!(zh.js("return navigator.language").unwrap(), json!("zh-CN"));
    zh.goto(&site.page("/home", &site.owner_h1)).unwrap();
    zh.wait_text("h1", "我的家").unwrap();
    zh.wait_text("#fixtures", "预计").unwrap();
    assert!(phone_width(&zh) <= 390);
    zh.screenshot("home-zh-390").unwrap();
    drop(zh);

    let zh_agent = site.driver.session(390, 844, Some("zh-CN")).unwrap();
    zh_agent.goto(&site.page("/fleet", &site.agent)).unwrap();
    zh_agent.wait_text("h1", "设备健康总览").unwrap();
    zh_agent.wait_text("#kpi", "服务指标").unwrap();
    assert_eq!(
        zh_agent
            .js("return document.querySelectorAll('svg.chart').length >= 3")
            .unwrap(),
        json!(true)
    );
    phone_width(&zh_agent);
    zh_agent.screenshot("fleet-zh-390").unwrap();
    zh_agent.goto(&site.url("/board")).unwrap();
    zh_agent.wait_text("h1", "售后工单看板").unwrap();
    zh_agent.wait_text("#tickets", "紧急").unwrap();
    phone_width(&zh_agent);
    zh_agent.screenshot("board-zh-390").unwrap();
    // The switch changes the language in place.
    zh_agent.click("#lang").unwrap();
    zh_agent.wait_text("h1", "After-sales board").unwrap();
    zh_agent.wait_text("#tickets", "Critical").unwrap();
    drop(zh_agent);

    let en = site.driver.session(390, 844, Some("en-US")).unwrap();
    en.goto(&site.page("/home", &site.owner_h1)).unwrap();
    en.wait_text("h1", "My home").unwrap();
    en.wait_text("#reminders", "Snooze 1 day").unwrap();
    assert!(phone_width(&en) <= 390);
    en.screenshot("home-en-390").unwrap();
    en.click("#lang").unwrap();
    en.wait_text("h1", "我的家").unwrap();
}
