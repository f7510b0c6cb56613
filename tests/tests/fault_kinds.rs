//! Every fault kind the simulator injects ends, through the real path (fleet simulator →
//! Mosquitto → gateway with its analytics stage → InfluxDB and the maintenance engine),
//! in the action the policy names for it — a ticket of the right kind, or a homeowner
//! reminder — exactly once per device, never a duplicate for the repeated reports of one
//! condition, with the ticket marked "condition cleared" once the fault ended. Devices
//! without an injected fault get no ticket. (Issue #5, "what must be shown".)

use std::collections::BTreeMap;
use std::time::Duration;

use e2e_tests::*;
use serde_json::Value;
use simulator::faults::{FaultKind, FaultMix, Injection};
use simulator::fleet::{device_id, model_of};
use simulator::{Fleet, FleetConfig, Truth};

const DB: &str = "fixtures";
const DEVICES: u32 = 15;
const DAYS: u32 = 35;

/// What the default policy does for a finding of the kind each fault should produce.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A ticket of this kind (policy key).
    Ticket(&'static str),
    /// A reminder of this kind, and no ticket.
    Reminder(&'static str),
}

fn expected(kind: FaultKind) -> Expect {
    match kind {
        FaultKind::Leak => Expect::Ticket("leak"),
        FaultKind::ValveStuck => Expect::Ticket("long_wash"),
        FaultKind::HeaterFailure => Expect::Ticket("heater_fault"),
        FaultKind::SensorDropout | FaultKind::SensorDrift => Expect::Ticket("sensor_fault"),
        FaultKind::InletClog => Expect::Reminder("inlet_clog"),
        FaultKind::LowPressure => Expect::Reminder("low_inlet_pressure"),
        FaultKind::Unused => Expect::Reminder("unused_7_days"),
        FaultKind::Offline => Expect::Reminder("device_silent"),
        FaultKind::HighUsage => Expect::Reminder("abnormal_usage"),
        FaultKind::MainBoard => Expect::Ticket("main_board_fault"),
    }
}

fn injections() -> Vec<Injection> {
    let on = |idx: u32, kind, start_day, days| {
        Injection::on(&device_id(idx), kind, start_day, Some(days))
    };
    vec![
        on(0, FaultKind::Leak, 12.0, 1.0),
        on(3, FaultKind::ValveStuck, 12.0, 0.05),
        on(6, FaultKind::HeaterFailure, 12.0, 2.0),
        on(1, FaultKind::InletClog, 6.0, 12.0),
        on(2, FaultKind::LowPressure, 12.0, 1.0),
        on(5, FaultKind::SensorDropout, 12.0, 0.5),
        on(4, FaultKind::Unused, 8.0, 9.0),
        on(9, FaultKind::Offline, 14.0, 1.0),
        // A shower used daily: the drift rule needs a baseline of 16 sessions and three
        // drifted ones (shower-0008, used too rarely for that by day 34, gets none).
        on(11, FaultKind::SensorDrift, 20.0, 14.0),
        on(10, FaultKind::HighUsage, 15.0, 3.0),
        on(12, FaultKind::MainBoard, 20.0, 4.0),
        // 7, 8, 13, 14: healthy.
    ]
}

/// Every fleet device registered with the maintenance engine; returns the `[maintenance]` table and an admin token.
fn register(work: &std::path::Path) -> (String, String) {
    let db = work.join("maintenance.db");
    let devices: Vec<(String, protocol::message::Model)> =
        (0..DEVICES).map(|i| (device_id(i), model_of(i))).collect();
    let admin = e2e_tests::registry::register_devices(&db, &devices).unwrap();
    (e2e_tests::registry::maintenance_toml(&db), admin)
}

fn get(http: &reqwest::blocking::Client, url: String, token: &str) -> Vec<Value> {
    let v: Value = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    v.as_array().unwrap_or_else(|| panic!("{url}: {v}")).clone()
}

#[test]
fn each_injected_fault_kind_yields_its_ticket_or_reminder_once() {
    // The run ends at the last Monday 00:00 UTC, so the households' rhythm (weekday, time of
    // day) is the same on every run of the week, not shifted by the hour the test runs.
    const WEEK_MS: i64 = 7 * 86_400_000;
    const MONDAY_OFFSET_MS: i64 = 4 * 86_400_000; // 1970-01-01 was a Thursday
    let now = gateway::clock::now_ms();
    let end_ms = (now - MONDAY_OFFSET_MS).div_euclid(WEEK_MS) * WEEK_MS + MONDAY_OFFSET_MS;
    let cfg = FleetConfig {
        devices: DEVICES,
        days: DAYS,
        end_ms,
        seed: 3,
        telemetry_every_min: 15,
        mix: FaultMix::default(),
        inject: injections(),
    };
    let (messages, truth) = Fleet::generate_all(cfg).unwrap();
    let faults: Vec<(String, FaultKind, Option<i64>)> = truth
        .iter()
        .filter_map(|t| match t {
            Truth::Fault {
                device,
                kind,
                end_ms,
                ..
            } => Some((device.clone(), *kind, *end_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        faults.len(),
        injections().len(),
        "exactly the injected faults: {faults:?}"
    );

    let work = tempfile::tempdir().unwrap();
    let (maintenance_toml, admin) = register(work.path());
    let broker = Mosquitto::start().unwrap();
    let influx = Influx::start().unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Influx {
            url: influx.url(),
            db: DB.into(),
        },
        "gw-kinds",
        &maintenance_toml,
    )
    .unwrap();
    let metrics = gw
        .publish_fleet(
            broker.port,
            "kinds-publisher",
            messages.into_iter().map(|m| (m.topic, m.payload)).collect(),
            Duration::from_secs(240),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(metrics["rejected"], 0, "{metrics}");
    assert_eq!(metrics["maintenance_errors"], 0, "{metrics}");

    let http = reqwest::blocking::Client::new();
    let api = format!("http://127.0.0.1:{}/api", gw.http_port);
    let tickets = get(&http, format!("{api}/tickets"), &admin);
    let reminders = get(&http, format!("{api}/reminders"), &admin);
    let count = |items: &[Value], device: &str, kind: &str| {
        items
            .iter()
            .filter(|x| x["device_id"] == device && x["kind"] == kind)
            .count()
    };
    let mut report = BTreeMap::new();
    let mut failures = Vec::new();
    for (device, kind, end_ms) in &faults {
        let k = match expected(*kind) {
            Expect::Ticket(k) | Expect::Reminder(k) => k,
        };
        let (n_tickets, n_reminders) = (count(&tickets, device, k), count(&reminders, device, k));
        report.insert(
            format!("{device} {kind:?} -> {k}"),
            (n_tickets, n_reminders),
        );
        match expected(*kind) {
            Expect::Ticket(_) => {
                if n_tickets != 1 {
                    failures.push(format!(
                        "{device}: {n_tickets} {k} tickets for an injected {kind:?}, expected 1"
                    ));
                } else if end_ms.is_some() {
                    let t = tickets
                        .iter()
                        .find(|x| x["device_id"] == *device && x["kind"] == k)
                        .unwrap();
                    if t["condition_cleared"] != true {
                        failures.push(format!("{device}: the {kind:?} ended but its ticket is not marked cleared: {t}"));
                    }
                }
            }
            Expect::Reminder(_) => {
                if n_reminders != 1 || n_tickets != 0 {
                    failures.push(format!("{device}: {n_reminders} {k} reminders and {n_tickets} tickets for an injected {kind:?}, expected 1 and 0"));
                }
            }
        }
    }
    eprintln!("per injected fault (tickets, reminders): {report:#?}");
    assert!(
        failures.is_empty(),
        "{}\ntickets: {tickets:#?}\nreminders: {reminders:#?}",
        failures.join("\n")
    );
    let faulty: Vec<&str> = faults.iter().map(|(d, _, _)| d.as_str()).collect();
    // A filter replacement visit (a cartridge past its forecast due date) is maintenance, not a fault.
    let stray: Vec<&Value> = tickets
        .iter()
        .filter(|t| {
            !faulty.contains(&t["device_id"].as_str().unwrap_or("")) && t["kind"] != "filter_due"
        })
        .collect();
    assert!(
        stray.is_empty(),
        "no fault ticket for a healthy device: {stray:#?}"
    );

    // The findings are in InfluxDB too, for the dashboards.
    let answer = influx
        .query(
            DB,
            "SELECT count(\"severity\") FROM \"finding\" GROUP BY \"kind\"",
        )
        .unwrap();
    let series = answer["results"][0]["series"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert!(series >= 6, "findings of several kinds stored: {answer}");
}
