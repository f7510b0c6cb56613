//! A mixed-variant fleet through the real path (fleet simulator → Mosquitto → gateway with its
//! analytics → maintenance engine): the injected faults yield their tickets and reminders, the
//! confounders none, and one cause is one message to a household (issue 11, "what must be
//! shown").
//!
//! The world draws every confounder family: firmware that raises no fault codes of its own
//! (a leak on such a device must be found from its readings alone), firmware that reports
//! every 30–120 s while water runs,
//! showers shared by 2–6 people, clocks hours off and drifting, leaks of a few ml/min or only
//! at night, toilets with a weekly cleaning programme, heaters wearing out slowly. Faults are
//! injected on devices that drew a confounder, so each must be found *through* it; devices
//! that drew one and no fault must stay quiet. Three homes share a building whose supply
//! loses pressure at once; one household leaves all its fixtures unused.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e_tests::*;
use maintenance::registry::{Device, Home, Technician};
use protocol::message::Model;
use serde_json::Value;
use simulator::faults::{FaultKind, FaultMix, Injection};
use simulator::fleet::{device_id, model_of, Variants};
use simulator::{Fleet, FleetConfig, Truth};

const DEVICES: u32 = 36;
const DAYS: u32 = 35;
const SEED: u64 = 11;
const VARIANTS: &str = "burst_cadence=0.4,silent_firmware=0.3,shared_shower=0.6,clock_offset=0.3,\
                        small_leak=0.5,night_leak=0.5,cleaning=0.5,heater_wear=1";
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// The finding kind (policy key) each fault must yield, and whether it opens a ticket.
fn expected(kind: FaultKind) -> (&'static str, bool) {
    match kind {
        FaultKind::Leak => ("leak", true),
        FaultKind::ValveStuck => ("long_wash", true),
        FaultKind::HeaterFailure => ("heater_fault", true),
        FaultKind::SensorDropout | FaultKind::SensorDrift => ("sensor_fault", true),
        FaultKind::MainBoard => ("main_board_fault", true),
        FaultKind::InletClog => ("inlet_clog", false),
        FaultKind::LowPressure => ("low_inlet_pressure", false),
        FaultKind::Unused => ("unused_7_days", false),
        FaultKind::Offline => ("device_silent", false),
        FaultKind::HighUsage => ("abnormal_usage", false),
    }
}

fn home_of(idx: u32) -> String {
    format!("home-{:02}", idx / 3)
}

fn config(end_ms: i64, inject: Vec<Injection>) -> FleetConfig {
    FleetConfig {
        devices: DEVICES,
        days: DAYS,
        end_ms,
        seed: SEED,
        telemetry_every_min: 15,
        mix: FaultMix(BTreeMap::new()),
        inject,
    }
}

fn generate(cfg: FleetConfig) -> (Vec<simulator::OutMessage>, Vec<Truth>) {
    Fleet::generate_all_with_variants(cfg, &Variants::parse(VARIANTS).unwrap()).unwrap()
}

/// The confounder families each device drew.
fn variants_of(truth: &[Truth]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in truth {
        if let Truth::Variant {
            device, variant, ..
        } = t
        {
            out.entry(device.clone())
                .or_default()
                .insert(variant.clone());
        }
    }
    out
}

/// Faults on devices that drew the confounder that makes them hard, picked from the draw
/// (which does not depend on the injections); plus a building and a household.
fn injections(drawn: &BTreeMap<String, BTreeSet<String>>) -> (Vec<Injection>, Vec<u32>) {
    let has = |idx: u32, family: &str| {
        drawn
            .get(&device_id(idx))
            .is_some_and(|s| s.contains(family))
    };
    let mut taken = BTreeSet::new();
    let mut pick = |family: &str, model: Option<Model>| {
        // Whatever else the device drew, silent firmware included: the stuck valve lands
        // on a silent toilet that also runs a cleaning programme (issue 11), found from
        // the water that ran on after the wash.
        let idx = (0..DEVICES).find(|&i| {
            has(i, family) && model.is_none_or(|m| model_of(i) == m) && !taken.contains(&(i / 3))
        });
        let idx = idx.unwrap_or_else(|| panic!("no device drew {family} ({model:?}): {drawn:?}"));
        taken.insert(idx / 3);
        idx
    };
    let chatty_shower = pick("burst_cadence", Some(Model::Shower));
    let night = pick("night_leak", None);
    let small = pick("small_leak", None);
    let cleaning_toilet = pick("cleaning", Some(Model::Toilet));
    let worn_heater = pick("heater_wear", Some(Model::Toilet));
    let late_clock = pick("clock_offset", None);
    let silent = pick("silent_firmware", None);
    // The building (three homes) and the household away: homes with no other fault.
    let free: Vec<u32> = (0..DEVICES / 3).filter(|h| !taken.contains(h)).collect();
    assert!(free.len() >= 4, "homes left: {free:?}");
    let building = free[..3].to_vec();
    let away = free[3];
    let on = |idx: u32, kind, start_day, days| {
        Injection::on(&device_id(idx), kind, start_day, Some(days))
    };
    let mut inject = vec![
        on(chatty_shower, FaultKind::Leak, 14.0, 1.5),
        on(night, FaultKind::Leak, 12.0, 4.0),
        on(small, FaultKind::Leak, 12.0, 3.0),
        on(cleaning_toilet, FaultKind::ValveStuck, 16.0, 0.05),
        on(worn_heater, FaultKind::HeaterFailure, 15.0, 5.0),
        on(late_clock, FaultKind::Offline, 18.0, 1.0),
        on(silent, FaultKind::Leak, 10.0, 3.0),
    ];
    for h in &building {
        // The purifier and the shower of each home: the supply, at one moment.
        inject.push(on(h * 3 + 1, FaultKind::LowPressure, 22.0, 1.0));
        inject.push(on(h * 3 + 2, FaultKind::LowPressure, 22.0, 1.0));
    }
    for d in 0..3 {
        inject.push(on(away * 3 + d, FaultKind::Unused, 8.0, 9.0));
    }
    (inject, building)
}

/// Homes of three devices each (toilet, purifier, shower), the `building` homes on one site.
fn register(db: &std::path::Path, building: &[u32]) -> String {
    let engine = maintenance::Engine::open(
        db,
        maintenance::EngineConfig {
            policy: maintenance::Policy::default(),
            ticket_webhooks: Vec::new(),
        },
    )
    .unwrap();
    engine
        .put_technician(&Technician {
            id: "tech-a".into(),
            name: "Tech A".into(),
            region: "sh".into(),
            skills: ["plumbing", "electrical", "filter"]
                .map(String::from)
                .to_vec(),
        })
        .unwrap();
    for h in 0..DEVICES / 3 {
        let home = Home {
            id: home_of(h * 3),
            site: building.contains(&h).then(|| "tower-1".to_owned()),
            ..registry::home(h as usize)
        };
        engine.put_home(&home).unwrap();
    }
    for i in 0..DEVICES {
        engine
            .put_device(&Device {
                id: device_id(i),
                home_id: home_of(i),
                model: model_of(i),
                installed_ts_ms: 0,
                cartridges: Vec::new(),
            })
            .unwrap();
    }
    engine
        .issue_token(maintenance::Role::Admin, None, gateway::clock::now_ms())
        .unwrap()
}

fn get(http: &reqwest::blocking::Client, url: String, token: &str) -> Value {
    http.get(&url)
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Devices a reminder is about: those it names (a home's grouped reminder), else its own.
fn devices_named(r: &Value) -> Vec<String> {
    match r["vars"]["devices"].as_array() {
        Some(list) if !list.is_empty() => list
            .iter()
            .filter_map(|d| d.as_str().map(str::to_owned))
            .collect(),
        _ => vec![r["device_id"].as_str().unwrap_or_default().to_owned()],
    }
}

#[test]
fn a_mixed_variant_fleet_yields_the_injected_findings_and_none_for_the_confounders() {
    // Ends at the last Monday 00:00 UTC, so the households' week is the same on every run.
    const WEEK_MS: i64 = 7 * DAY;
    const MONDAY_OFFSET_MS: i64 = 4 * DAY;
    let now = gateway::clock::now_ms();
    let end_ms = (now - MONDAY_OFFSET_MS).div_euclid(WEEK_MS) * WEEK_MS + MONDAY_OFFSET_MS;

    let (_, plain) = generate(config(end_ms, Vec::new()));
    let drawn = variants_of(&plain);
    let (inject, building) = injections(&drawn);
    let (messages, truth) = generate(config(end_ms, inject));
    assert_eq!(
        variants_of(&truth),
        drawn,
        "the draw ignores the injections"
    );
    let faults: Vec<(String, FaultKind, i64, Option<i64>)> = truth
        .iter()
        .filter_map(|t| match t {
            Truth::Fault {
                device,
                kind,
                start_ms,
                end_ms,
                ..
            } => Some((device.clone(), *kind, *start_ms, *end_ms)),
            _ => None,
        })
        .collect();
    let away: Vec<(String, i64, i64)> = truth
        .iter()
        .filter_map(|t| match t {
            Truth::Away {
                device,
                start_ms,
                end_ms,
            } => Some((device.clone(), *start_ms, *end_ms)),
            _ => None,
        })
        .collect();
    // Issue 11: the stuck valve is on firmware that raises no fault codes, on a toilet
    // that also runs a cleaning programme.
    let stuck: Vec<&str> = faults
        .iter()
        .filter(|f| f.1 == FaultKind::ValveStuck)
        .map(|f| f.0.as_str())
        .collect();
    assert!(
        stuck.iter().all(|d| drawn
            .get(*d)
            .is_some_and(|v| { v.contains("silent_firmware") && v.contains("cleaning") }))
            && !stuck.is_empty(),
        "stuck valve on {stuck:?}: {drawn:?}"
    );
    let faulty: BTreeSet<&str> = faults.iter().map(|f| f.0.as_str()).collect();
    // Every confounder family is present on a device with no fault, to stay quiet.
    let quiet_families: BTreeSet<&str> = drawn
        .iter()
        .filter(|(d, _)| !faulty.contains(d.as_str()))
        .flat_map(|(_, f)| f.iter().map(String::as_str))
        .collect();
    for family in ["burst_cadence", "shared_shower", "clock_offset", "cleaning"] {
        assert!(
            quiet_families.contains(family),
            "{family} on a healthy device: {drawn:?}"
        );
    }

    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    let admin = register(&db, &building);
    let broker = Mosquitto::start().unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "gw-mixed",
        &registry::maintenance_toml(&db),
    )
    .unwrap();
    let total = messages.len();
    let metrics = gw
        .publish_fleet(
            broker.port,
            "mixed-publisher",
            messages.into_iter().map(|m| (m.topic, m.payload)).collect(),
            Duration::from_secs(300),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(metrics["maintenance_errors"], 0, "{metrics}");
    // A batch is acknowledged after its findings reached the engine; the clock sweep (device
    // silence) runs on its own tick: let it pass once more.
    std::thread::sleep(Duration::from_secs(3));

    let http = reqwest::blocking::Client::new();
    let api = format!("http://127.0.0.1:{}/api", gw.http_port);
    let tickets = get(&http, format!("{api}/tickets?limit=1000"), &admin);
    let tickets = tickets.as_array().unwrap().clone();
    let reminders = get(&http, format!("{api}/reminders?limit=1000"), &admin);
    let reminders = reminders.as_array().unwrap().clone();
    let mut failures = Vec::new();

    // Precision: every fault ticket is an injected fault of that device and kind.
    for t in &tickets {
        let (device, kind) = (
            t["device_id"].as_str().unwrap(),
            t["kind"].as_str().unwrap(),
        );
        if kind == "filter_due" {
            continue;
        }
        let real = faults
            .iter()
            .any(|(d, k, _, _)| d == device && expected(*k) == (kind, true));
        if !real {
            failures.push(format!(
                "false ticket {kind} on {device} (variants {:?}): {t}",
                drawn.get(device)
            ));
        }
    }
    // Recall: every injected ticket-kind fault has exactly one ticket.
    for (device, kind, _, _) in &faults {
        let (key, ticket) = expected(*kind);
        if !ticket {
            continue;
        }
        let n = tickets
            .iter()
            .filter(|t| t["device_id"] == device.as_str() && t["kind"] == key)
            .count();
        if n != 1 {
            failures.push(format!(
                "{device} {kind:?} (variants {:?}): {n} {key} tickets, expected 1",
                drawn.get(device)
            ));
        }
    }
    // Reminders of fault kinds name only devices with that fault (or, for "unused", a
    // household away), and every injected reminder-kind fault is named by one.
    let mut named: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for r in &reminders {
        let kind = r["kind"].as_str().unwrap_or_default();
        if !matches!(
            kind,
            "device_silent" | "low_inlet_pressure" | "inlet_clog" | "unused_7_days"
        ) {
            continue;
        }
        for device in devices_named(r) {
            let real = faults
                .iter()
                .any(|(d, k, _, _)| *d == device && expected(*k).0 == kind)
                || (kind == "unused_7_days" && away.iter().any(|(d, _, _)| *d == device));
            if !real {
                failures.push(format!(
                    "false {kind} reminder for {device} (variants {:?}): {r}",
                    drawn.get(&device)
                ));
            }
            *named.entry((device, kind)).or_default() += 1;
        }
    }
    for (device, kind, _, _) in &faults {
        let (key, ticket) = expected(*kind);
        if ticket || key == "abnormal_usage" {
            continue;
        }
        if named.get(&(device.clone(), key)).copied().unwrap_or(0) != 1 {
            failures.push(format!(
                "{device} {kind:?}: named by {:?} {key} reminders, expected 1",
                named.get(&(device.clone(), key))
            ));
        }
    }
    // One cause, one message per home: the building is one site incident and one
    // low-pressure message per home; the household away one "unused" reminder for three.
    let per_home = |kind: &str, home: &str| {
        reminders
            .iter()
            .filter(|r| r["kind"] == kind && r["home_id"] == home)
            .count()
    };
    for h in &building {
        let home = home_of(h * 3);
        if per_home("low_inlet_pressure", &home) != 1 {
            failures.push(format!(
                "{home}: {} low-pressure messages, expected 1",
                per_home("low_inlet_pressure", &home)
            ));
        }
    }
    let incidents = get(&http, format!("{api}/incidents?limit=500"), &admin);
    let site: Vec<&Value> = incidents["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["scope"] == "site" && i["scope_id"] == "tower-1")
        .collect();
    if site.len() != 1
        || site[0]["homes"].as_array().map(Vec::len) != Some(3)
        || site[0]["devices"].as_array().map(Vec::len) != Some(6)
    {
        failures.push(format!(
            "the building is one incident of 3 homes, 6 devices: {site:#?}"
        ));
    }
    let away_home = faults
        .iter()
        .find(|f| f.1 == FaultKind::Unused)
        .map(|f| home_of(f.0[f.0.len() - 4..].parse::<u32>().unwrap()))
        .unwrap();
    let away_reminders: Vec<&Value> = reminders
        .iter()
        .filter(|r| {
            r["kind"] == "unused_7_days"
                && r["home_id"] == away_home.as_str()
                && r["vars"]["devices"].as_array().map(Vec::len) == Some(3)
        })
        .collect();
    if away_reminders.len() != 1 {
        failures.push(format!(
            "{away_home}: one reminder naming its three unused fixtures, got {away_reminders:#?}"
        ));
    }

    let injected: Vec<(&str, FaultKind)> = faults.iter().map(|f| (f.0.as_str(), f.1)).collect();
    eprintln!(
        "{} messages, {} tickets, {} reminders, {} faults {injected:?}; variants: {drawn:?}",
        total,
        tickets.len(),
        reminders.len(),
        faults.len()
    );
    assert!(
        failures.is_empty(),
        "{}\ntickets: {tickets:#?}",
        failures.join("\n")
    );
}
