//! The maintenance engine on one PostgreSQL 15 database shared by two engines, as two
//! gateway instances of a cluster share it (issue #15, "shared state on PostgreSQL"):
//! two instances racing on the same leak open exactly one ticket (and queue one command,
//! one reminder, one `ticket.opened` webhook); two dispatchers deliver every outbox row
//! exactly once to a local receiver that checks the signatures, and the rows a dead
//! dispatcher claimed go to another when its lease runs out; two instances grouping one
//! household's findings send it one reminder; and a slice of the
//! engine's behaviour (registry, ticket lifecycle, reminders, tick) gives the same
//! answers on SQLite and PostgreSQL. Real PostgreSQL (`cluster::Postgres`): the tests
//! fail, not skip, when it is missing.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use e2e_tests::cluster::Postgres;
use e2e_tests::webhook::WebhookReceiver;
use maintenance::dispatch::{DeliveryConfig, Dispatcher, RawDeliveryConfig};
use maintenance::registry::{Channel, Device, Home, Owner, Technician};
use maintenance::templates::Lang;
use maintenance::tickets::{TicketFilter, TicketStatus};
use maintenance::{Engine, EngineConfig, Finding, FindingKind, FindingState, Policy, TicketEffect};
use protocol::message::{Model, Severity};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2026-03-02 10:00 in Shanghai: daytime, outside quiet hours.
const T0: i64 = 1_772_416_800_000;
const SECRET: &str = "test-secret-0123456789";

/// A new database on `pg`; its URL.
fn database(pg: &Postgres, name: &str) -> String {
    pg.query(&format!("CREATE DATABASE {name}"))
        .expect("create database");
    format!("postgres://gw@127.0.0.1:{}/{name}", pg.port)
}

/// Two engines on the database at `url`, opened at the same time (the schema is created
/// once, under the advisory lock).
fn two_engines(url: &str, webhook: &str) -> (Arc<Engine>, Arc<Engine>) {
    let open = || {
        let url = url.to_owned();
        let webhook = webhook.to_owned();
        std::thread::spawn(move || {
            Engine::open_postgres(
                &url,
                EngineConfig {
                    policy: Policy::default(),
                    ticket_webhooks: vec![webhook],
                },
            )
            .expect("engine on postgres")
        })
    };
    let (a, b) = (open(), open());
    (
        Arc::new(a.join().expect("open a")),
        Arc::new(b.join().expect("open b")),
    )
}

fn home(id: &str) -> Home {
    Home {
        site: None,
        id: id.into(),
        address: format!("{id} Road 1, Pudong"),
        region: "shanghai".into(),
        tz: "Asia/Shanghai".into(),
        lang: Lang::ZhCn,
        quiet_start: "22:00".into(),
        quiet_end: "08:00".into(),
        weekly_cap: None,
        channels: vec![Channel::App, Channel::Sms],
        owner: Owner {
            name: format!("Owner of {id}"),
            phone: "13812341234".into(),
            email: None,
        },
    }
}

/// `devices` toilets in home `h1`, and two technicians.
fn populate(e: &Engine, devices: usize) {
    e.put_home(&home("h1")).expect("home");
    for i in 0..devices {
        e.put_device_at(
            &Device {
                id: format!("toilet-{i}"),
                home_id: "h1".into(),
                model: Model::Toilet,
                installed_ts_ms: T0 - 100 * DAY,
                cartridges: Vec::new(),
            },
            T0,
        )
        .expect("device");
    }
    for (id, skills) in [
        ("tech-a", ["plumbing", "filter"]),
        ("tech-b", ["plumbing", "electrical"]),
    ] {
        e.put_technician(&Technician {
            id: id.into(),
            name: id.to_uppercase(),
            region: "shanghai".into(),
            skills: skills.into_iter().map(String::from).collect(),
        })
        .expect("technician");
    }
}

fn leak(device: &str, state: FindingState) -> Finding {
    Finding {
        device_id: device.into(),
        kind: FindingKind::Leak,
        severity: Severity::Critical,
        evidence: serde_json::json!({ "flow_ml_min": 420 }),
        began_ts_ms: T0,
        state,
    }
}

fn count(e: &Engine, sql: &str, device: &str) -> i64 {
    e.read(|c| Ok(c.query_row(sql, [device], |r| r.get(0))?))
        .expect("count")
}

#[test]
fn two_instances_racing_on_one_leak_open_exactly_one_ticket() {
    const DEVICES: usize = 40;
    const REPEATS: usize = 3;
    let pg = Postgres::start().expect("PostgreSQL 15");
    let url = database(&pg, "race");
    let (a, b) = two_engines(&url, "http://127.0.0.1:9/tickets");
    populate(&a, DEVICES);

    let mut opened = 0;
    let mut attached = 0;
    for i in 0..DEVICES {
        let device = format!("toilet-{i}");
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [&a, &b]
            .into_iter()
            .map(|engine| {
                let (engine, barrier, device) =
                    (Arc::clone(engine), Arc::clone(&barrier), device.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..REPEATS)
                        .map(|k| {
                            engine
                                .ingest(&leak(&device, FindingState::Active), T0 + k as i64)
                                .expect("ingest")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for racer in racers {
            for out in racer.join().expect("racer") {
                match out.ticket.map(|t| t.1) {
                    Some(TicketEffect::Opened) => opened += 1,
                    Some(TicketEffect::Attached) => attached += 1,
                    other => panic!("{device}: unexpected ticket effect {other:?}"),
                }
            }
        }
        let active = count(
            &a,
            "SELECT COUNT(*) FROM tickets WHERE device_id = ?1 AND status IN ('open', 'assigned', 'in_progress')",
            &device,
        );
        assert_eq!(active, 1, "{device}: one active ticket");
        assert_eq!(
            count(
                &a,
                "SELECT COUNT(*) FROM tickets WHERE device_id = ?1",
                &device
            ),
            1,
            "{device}: one ticket at all"
        );
        assert_eq!(
            count(
                &b,
                "SELECT COUNT(*) FROM commands WHERE device_id = ?1",
                &device
            ),
            1,
            "{device}: the inlet valve is closed once"
        );
        assert_eq!(
            count(
                &b,
                "SELECT COUNT(*) FROM reminders WHERE device_id = ?1",
                &device
            ),
            1,
            "{device}: the homeowner is told once"
        );
        assert_eq!(
            count(
                &a,
                "SELECT COUNT(*) FROM outbox WHERE topic = 'ticket.opened'
                 AND payload LIKE '%' || ?1 || '\"%'",
                &device
            ),
            1,
            "{device}: one ticket.opened webhook"
        );
    }
    assert_eq!(
        opened, DEVICES,
        "one Opened per device across both instances"
    );
    assert_eq!(attached, DEVICES * (2 * REPEATS - 1));
    println!(
        "{DEVICES} devices x 2 instances x {REPEATS} repeats: {opened} tickets opened, {attached} findings attached"
    );
}

fn delivery(base: &str) -> DeliveryConfig {
    DeliveryConfig::try_from(RawDeliveryConfig {
        push_url: Some(format!("{base}/push")),
        sms_url: Some(format!("{base}/sms")),
        smtp: None,
        hmac_secret: SECRET.into(),
        backoff_base_s: 5,
        backoff_max_s: 60,
        max_attempts: 5,
        timeout_s: 5,
    })
    .expect("delivery config")
}

#[test]
fn two_dispatchers_deliver_every_outbox_row_exactly_once() {
    const DEVICES: usize = 60;
    let pg = Postgres::start().expect("PostgreSQL 15");
    let url = database(&pg, "outbox");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let receiver = WebhookReceiver::start(SECRET).expect("webhook receiver");
    let base = receiver.base_url();
    let (a, b) = two_engines(&url, &format!("{base}/tickets"));
    populate(&a, DEVICES);
    // Tickets, commands, reminders: webhooks, pushes and SMS in the outbox, half by each.
    for i in 0..DEVICES {
        let e = if i % 2 == 0 { &a } else { &b };
        let device = format!("toilet-{i}");
        e.ingest(&leak(&device, FindingState::Active), T0)
            .expect("leak");
        e.ingest(&leak(&device, FindingState::Cleared), T0 + HOUR)
            .expect("cleared");
    }
    let rows = a
        .read(|c| maintenance::outbox::list(c, 100_000))
        .expect("outbox");
    let total = rows.len();
    assert!(total >= 3 * DEVICES, "{total} outbox rows");

    let now = T0 + 2 * HOUR;
    let drain = |engine: &Arc<Engine>| {
        let dispatcher = Dispatcher::new(Arc::clone(engine), delivery(&base)).expect("dispatcher");
        let engine = Arc::clone(engine);
        rt.spawn(async move {
            let mut delivered = 0;
            loop {
                let rep = dispatcher.run_once(now, 25).await.expect("dispatch");
                delivered += rep.delivered;
                assert_eq!((rep.retrying, rep.dead), (0, 0));
                let (pending, _, _) = engine.read(maintenance::outbox::counts).expect("counts");
                if rep.delivered == 0 && pending == 0 {
                    return delivered;
                }
                if rep.delivered == 0 {
                    // Rows left are the other dispatcher's, in flight.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        })
    };
    let (da, db) = (drain(&a), drain(&b));
    let (by_a, by_b) = rt.block_on(async { (da.await.expect("a"), db.await.expect("b")) });

    let r = receiver.received();
    assert_eq!(r.bad_signatures, 0);
    let per_key = r.per_key();
    let keys: HashMap<&str, u32> = per_key.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let twice: Vec<_> = keys.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for row in &rows {
        assert_eq!(
            keys.get(row.idem_key.as_str()),
            Some(&1),
            "row {} delivered once",
            row.id
        );
    }
    assert_eq!(keys.len(), total);
    assert_eq!(by_a as usize + by_b as usize, total);
    assert_eq!(
        a.read(maintenance::outbox::counts).expect("counts"),
        (0, total as u64, 0)
    );
    println!(
        "{total} outbox rows: {} requests received, dispatcher a sent {by_a}, b sent {by_b}",
        per_key.values().sum::<u32>()
    );
}

/// One scenario of the engine's behaviour, returning what it observed; it must observe
/// the same on both backends.
fn lifecycle(e: &Engine) -> Vec<String> {
    populate(e, 3);
    let mut seen = Vec::new();
    // Registry.
    let d = e
        .read(|c| maintenance::registry::get_device(c, "toilet-1"))
        .expect("device")
        .expect("registered");
    seen.push(format!("device {} in {}", d.id, d.home_id));
    let devices = e
        .read(|c| maintenance::registry::list_devices(c, Some("h1")))
        .expect("devices");
    seen.push(format!("{} devices", devices.len()));
    // A ticket through its lifecycle.
    let out = e
        .ingest(&leak("toilet-1", FindingState::Active), T0)
        .expect("leak");
    let (id, effect) = out.ticket.expect("ticket");
    seen.push(format!(
        "{effect:?}, command {}, reminders {}",
        out.command.is_some(),
        out.reminders.len()
    ));
    let again = e
        .ingest(&leak("toilet-1", FindingState::Active), T0 + 1)
        .expect("repeat");
    seen.push(format!("{:?}", again.ticket.map(|t| t.1)));
    let assignee = e.assign(id, None, "agent", T0 + 2).expect("assign");
    seen.push(format!("assigned to {assignee:?}"));
    for (to, at) in [
        (TicketStatus::InProgress, T0 + HOUR),
        (TicketStatus::Resolved, T0 + 2 * HOUR),
    ] {
        let t = e.transition(id, to, "tech", None, at).expect("transition");
        seen.push(format!("{:?}", t.status));
    }
    e.rate(id, 5, T0 + 3 * HOUR).expect("rate");
    let kpi = e.kpi(T0 - DAY, T0 + DAY).expect("kpi");
    seen.push(format!(
        "kpi tickets {} ack {:?} resolve {:?} ftf {:?} breach {:?} backlog {}",
        kpi.tickets,
        kpi.mean_ack_ms,
        kpi.mean_resolve_ms,
        kpi.first_time_fix_rate,
        kpi.deadline_breach_rate,
        kpi.open_backlog
    ));
    // A recurrence within the window reopens it.
    let back = e
        .ingest(
            &Finding {
                began_ts_ms: T0 + 5 * HOUR,
                ..leak("toilet-1", FindingState::Active)
            },
            T0 + 5 * HOUR,
        )
        .expect("recurrence");
    seen.push(format!("{:?}", back.ticket.map(|t| t.1)));
    // A ticket left alone breaches its deadline and escalates on the tick.
    e.ingest(&leak("toilet-2", FindingState::Active), T0)
        .expect("leak 2");
    let rep = e.tick(T0 + 3 * DAY).expect("tick");
    seen.push(format!("{rep:?}"));
    let backlog = e.backlog_by_priority(T0 + 3 * DAY).expect("backlog");
    seen.push(format!("{backlog:?}"));
    // Reminders: the homeowner's list, one snoozed and done.
    let reminders = e
        .read(|c| maintenance::reminders::list(c, Some("h1")))
        .expect("reminders");
    seen.push(format!(
        "reminders {:?}",
        reminders
            .iter()
            .map(|r| (r.kind.clone(), r.status.clone()))
            .collect::<Vec<_>>()
    ));
    let tickets = e
        .read(|c| maintenance::tickets::list(c, &TicketFilter::default()))
        .expect("tickets");
    seen.push(format!(
        "tickets {:?}",
        tickets
            .iter()
            .map(|t| (
                t.device_id.clone(),
                t.status,
                t.reopen_count,
                t.escalation_level
            ))
            .collect::<Vec<_>>()
    ));
    let (pending, delivered, dead) = e.read(maintenance::outbox::counts).expect("counts");
    seen.push(format!("outbox {pending} {delivered} {dead}"));
    seen
}

#[test]
fn the_engine_answers_the_same_on_sqlite_and_postgres() {
    let pg = Postgres::start().expect("PostgreSQL 15");
    let cfg = || EngineConfig {
        policy: Policy::default(),
        ticket_webhooks: vec!["http://127.0.0.1:9/tickets".into()],
    };
    let sqlite = lifecycle(&Engine::in_memory(cfg()).expect("sqlite"));
    let postgres =
        lifecycle(&Engine::open_postgres(&database(&pg, "parity"), cfg()).expect("postgres"));
    for (s, p) in sqlite.iter().zip(&postgres) {
        assert_eq!(s, p);
    }
    assert_eq!(sqlite.len(), postgres.len());
    println!("{} observations equal on both backends", sqlite.len());
}

#[test]
fn two_instances_grouping_one_household_send_it_one_reminder() {
    const HOMES: usize = 20;
    let pg = Postgres::start().expect("PostgreSQL 15");
    let url = database(&pg, "grouping");
    let (a, b) = two_engines(&url, "http://127.0.0.1:9/tickets");
    for h in 0..HOMES {
        let home_id = format!("home{h}");
        a.put_home(&home(&home_id)).expect("home");
        for j in 0..2 {
            a.put_device_at(
                &Device {
                    id: format!("{home_id}-toilet{j}"),
                    home_id: home_id.clone(),
                    model: Model::Toilet,
                    installed_ts_ms: T0 - 100 * DAY,
                    cartridges: Vec::new(),
                },
                T0,
            )
            .expect("device");
        }
    }
    let mut named_both = 0;
    for h in 0..HOMES {
        let home_id = format!("home{h}");
        // The household is away: each instance hears of one of its two toilets at once.
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [&a, &b]
            .into_iter()
            .enumerate()
            .map(|(j, engine)| {
                let (engine, barrier) = (Arc::clone(engine), Arc::clone(&barrier));
                let device = format!("{home_id}-toilet{j}");
                std::thread::spawn(move || {
                    barrier.wait();
                    let f = Finding {
                        device_id: device,
                        kind: FindingKind::Unused7Days,
                        severity: Severity::Major,
                        evidence: serde_json::json!({}),
                        began_ts_ms: T0,
                        state: FindingState::Active,
                    };
                    engine.ingest(&f, T0).expect("ingest")
                })
            })
            .collect();
        let incidents: Vec<_> = racers
            .into_iter()
            .map(|r| r.join().expect("racer").incident)
            .collect();
        assert!(
            incidents[0].is_some() && incidents[0] == incidents[1],
            "{home_id}: one incident {incidents:?}"
        );
        let reminders: Vec<_> = a
            .read(|c| maintenance::reminders::list(c, Some(&home_id)))
            .expect("reminders")
            .into_iter()
            .filter(|r| r.kind == "unused_7_days")
            .collect();
        assert_eq!(reminders.len(), 1, "{home_id}: one reminder {reminders:#?}");
        let mut devices: Vec<String> =
            serde_json::from_value(reminders[0].vars["devices"].clone()).expect("devices");
        devices.sort();
        assert_eq!(
            devices,
            [format!("{home_id}-toilet0"), format!("{home_id}-toilet1")]
        );
        named_both += 1;
    }
    println!(
        "{HOMES} households, two instances each: {named_both} reminders, each naming both fixtures"
    );
}

#[test]
fn rows_claimed_by_a_dispatcher_that_died_go_to_another_when_the_lease_runs_out() {
    let pg = Postgres::start().expect("PostgreSQL 15");
    let url = database(&pg, "lease");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let receiver = WebhookReceiver::start(SECRET).expect("webhook receiver");
    let base = receiver.base_url();
    let (a, b) = two_engines(&url, &format!("{base}/tickets"));
    populate(&a, 4);
    for i in 0..4 {
        a.ingest(&leak(&format!("toilet-{i}"), FindingState::Active), T0)
            .expect("leak");
    }
    let total = a
        .read(|c| maintenance::outbox::list(c, 1000))
        .expect("outbox")
        .len();
    // Instance a claims three rows for a minute, then dies before sending them.
    let now = T0 + HOUR;
    let lease_ms = 60_000;
    let claimed = a
        .write(|tx| maintenance::outbox::claim_due(tx, now, 3, now + lease_ms))
        .expect("claim");
    assert_eq!(claimed.len(), 3);
    drop(a);
    let dispatcher = Dispatcher::new(Arc::clone(&b), delivery(&base)).expect("dispatcher");
    // Instance b sends everything else at once, and the three only once their lease ran out.
    let first = rt
        .block_on(dispatcher.run_once(now, 100))
        .expect("dispatch");
    assert_eq!(first.delivered as usize, total - 3);
    let still = rt
        .block_on(dispatcher.run_once(now + lease_ms - 1, 100))
        .expect("dispatch");
    assert_eq!(still.delivered, 0, "the lease holds");
    let after = rt
        .block_on(dispatcher.run_once(now + lease_ms, 100))
        .expect("dispatch");
    assert_eq!(after.delivered, 3);
    let per_key = receiver.received().per_key();
    assert_eq!(per_key.len(), total);
    assert!(per_key.values().all(|n| *n == 1));
    for row in &claimed {
        assert_eq!(per_key.get(&row.idem_key), Some(&1));
    }
    println!(
        "{total} rows: {} sent at once, 3 after the dead dispatcher's lease",
        total - 3
    );
}
