//! Every panel of every Grafana dashboard in `dashboards/grafana/` runs against a
//! real InfluxDB 1.6.7 filled by the real path (fleet simulator → Mosquitto →
//! gateway → InfluxDB) and returns data.
//!
//! For each target, Grafana's macros are substituted the way Grafana would
//! (`$timeFilter`, `$__interval`, `$__interval_ms`, `$device`), the query is run
//! with `Influx::query` (which fails on any InfluxQL error), and the answer must
//! hold at least one series with a value that is neither null nor zero. Queries
//! with `$device` run once per candidate device (one of each model): none may
//! fail, and at least one must return data (a toilet has no TDS, a purifier no
//! seat temperature). The `device` template variable's query must list devices.

use std::path::PathBuf;
use std::time::Duration;

use e2e_tests::*;
use serde_json::Value;
use simulator::faults::{FaultKind, FaultMix, Injection};
use simulator::{Fleet, FleetConfig};

const DB: &str = "fixtures";
const DAYS: u32 = 7;
/// `$timeFilter` for "the last 8 days" (the simulated span is 7 days, extended
/// back to the midnight before).
const TIME_FILTER: &str = "time >= now() - 8d";
/// Grafana's `$__interval` for the test, and the same in ms for `$__interval_ms`.
const INTERVAL: &str = "10m";
const INTERVAL_MS: &str = "600000";
/// One device of each model, each with an injected fault (see `fleet()`).
const DEVICES: [&str; 3] = ["toilet-0000", "purifier-0001", "shower-0002"];

fn inj(device: &str, kind: FaultKind, start_day: f64, days: f64) -> Injection {
    Injection::on(device, kind, start_day, Some(days))
}

fn fleet() -> FleetConfig {
    FleetConfig {
        devices: 30,
        days: DAYS,
        seed: 11,
        telemetry_every_min: 15,
        mix: FaultMix::default_mix(),
        inject: vec![
            inj("toilet-0000", FaultKind::Leak, 2.0, 0.5),
            inj("purifier-0001", FaultKind::InletClog, 1.0, 3.0),
            inj("shower-0002", FaultKind::LowPressure, 3.0, 1.0),
            inj("toilet-0003", FaultKind::ValveStuck, 4.0, 0.05),
            inj("purifier-0004", FaultKind::Offline, 2.0, 0.5),
            inj("shower-0005", FaultKind::SensorDropout, 5.0, 0.5),
            inj("toilet-0006", FaultKind::HeaterFailure, 3.5, 1.0),
        ],
        ..FleetConfig::default()
    }
}

/// Registers every simulated device with the maintenance engine (a database under `work`);
/// returns the gateway's `[maintenance]` table and an admin token.
fn register_fleet(work: &std::path::Path, cfg: &FleetConfig) -> (String, String) {
    let db = work.join("maintenance.db");
    let devices: Vec<(String, protocol::message::Model)> = (0..cfg.devices)
        .map(|i| {
            (
                simulator::fleet::device_id(i),
                simulator::fleet::model_of(i),
            )
        })
        .collect();
    let admin = e2e_tests::registry::register_devices(&db, &devices).unwrap();
    (e2e_tests::registry::maintenance_toml(&db), admin)
}

/// Takes the first ticket through in progress to resolved, as an agent would.
fn work_one_ticket(http_port: u16, admin: &str) {
    let http = reqwest::blocking::Client::new();
    let api = format!("http://127.0.0.1:{http_port}/api");
    let tickets: Value = http
        .get(format!("{api}/tickets"))
        .bearer_auth(admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = tickets
        .as_array()
        .and_then(|a| a.first())
        .and_then(|t| t["id"].as_i64())
        .unwrap_or_else(|| panic!("the injected faults opened tickets: {tickets}"));
    for to in ["in_progress", "resolved"] {
        let resp = http
            .post(format!("{api}/tickets/{id}/transition"))
            .bearer_auth(admin)
            .json(&serde_json::json!({ "to": to }))
            .send()
            .unwrap();
        assert!(
            resp.status().is_success(),
            "{to}: {}",
            resp.text().unwrap_or_default()
        );
    }
}

fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards/grafana")
}

/// Grafana's macro substitution for a raw InfluxQL query.
fn substitute(query: &str, device: &str) -> String {
    query
        .replace("$timeFilter", TIME_FILTER)
        .replace("$__interval_ms", INTERVAL_MS)
        .replace("${__interval}", INTERVAL)
        .replace("$__interval", INTERVAL)
        .replace("${device}", device)
        .replace("$device", device)
}

/// Values of every series of every result that are neither null nor 0 (the time column excluded).
fn data_points(answer: &Value) -> usize {
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    results
        .iter()
        .flat_map(|r| r["series"].as_array().cloned().unwrap_or_default())
        .map(|s| {
            let time_col = s["columns"]
                .as_array()
                .and_then(|c| c.iter().position(|n| n == "time"));
            s["values"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .flat_map(|row| {
                            row.as_array()
                                .cloned()
                                .unwrap_or_default()
                                .into_iter()
                                .enumerate()
                        })
                        .filter(|(i, v)| {
                            Some(*i) != time_col && !v.is_null() && v.as_f64() != Some(0.0)
                        })
                        .count()
                })
                .unwrap_or(0)
        })
        .sum()
}

struct Checked {
    panels: usize,
    queries: usize,
}

/// Runs every target of one dashboard; returns what was checked, or pushes failures.
fn check_dashboard(
    influx: &Influx,
    file: &str,
    dash: &Value,
    failures: &mut Vec<String>,
) -> Checked {
    let mut checked = Checked {
        panels: 0,
        queries: 0,
    };
    let panels = dash["panels"].as_array().cloned().unwrap_or_default();
    if panels.len() < 4 {
        failures.push(format!(
            "{file}: only {} panels, expected at least 4",
            panels.len()
        ));
    }
    if dash["schemaVersion"].as_u64().unwrap_or(0) < 36 {
        failures.push(format!(
            "{file}: schemaVersion {} is older than Grafana 9",
            dash["schemaVersion"]
        ));
    }
    // Template variables backed by a query must return something.
    for var in dash
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let Some(q) = var["query"].as_str().filter(|_| var["type"] == "query") else {
            continue;
        };
        match influx.query(DB, q) {
            Ok(v) if data_points(&v) > 0 => checked.queries += 1,
            Ok(v) => failures.push(format!(
                "{file}: template variable {}: no values for {q}\n  answer: {v}",
                var["name"]
            )),
            Err(e) => failures.push(format!("{file}: template variable {}: {e:#}", var["name"])),
        }
    }
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("<untitled>");
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            failures.push(format!("{file}: panel {title:?} has no targets"));
            continue;
        }
        checked.panels += 1;
        for t in &targets {
            let refid = t["refId"].as_str().unwrap_or("?");
            let Some(raw) = t["query"].as_str() else {
                failures.push(format!(
                    "{file}: panel {title:?} target {refid} has no raw query"
                ));
                continue;
            };
            if t["rawQuery"] != true {
                failures.push(format!(
                    "{file}: panel {title:?} target {refid} is not a raw InfluxQL query"
                ));
            }
            if t.pointer("/datasource/type").and_then(Value::as_str) != Some("influxdb") {
                failures.push(format!(
                    "{file}: panel {title:?} target {refid}: datasource is not of type influxdb"
                ));
            }
            let devices: Vec<&str> = if raw.contains("$device") || raw.contains("${device}") {
                DEVICES.to_vec()
            } else {
                vec![""]
            };
            let (mut with_data, mut errors) = (0, 0);
            let mut last_query = String::new();
            for device in devices {
                let q = substitute(raw, device);
                if q.contains('$') {
                    failures.push(format!(
                        "{file}: panel {title:?} target {refid}: unsubstituted macro in\n  {q}"
                    ));
                    break;
                }
                match influx.query(DB, &q) {
                    Ok(v) => {
                        if data_points(&v) > 0 {
                            with_data += 1;
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        failures.push(format!(
                            "{file}: panel {title:?} target {refid}: {e:#}\n  query: {q}"
                        ));
                    }
                }
                last_query = q;
            }
            if with_data == 0 && errors == 0 {
                failures.push(format!("{file}: panel {title:?} target {refid}: no series with a non-null, non-zero value\n  query: {last_query}"));
            }
            checked.queries += 1;
        }
    }
    checked
}

#[test]
fn every_dashboard_panel_returns_data_from_a_simulated_fleet() {
    // Parse the dashboards first: a broken file should fail before minutes of set-up.
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .expect("dashboards/grafana exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in [
        "fleet-overview.json",
        "device-drilldown.json",
        "service-kpis.json",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "dashboards/grafana/{required} is missing (found {names:?})"
        );
    }
    let dashboards: Vec<(String, Value)> = files
        .iter()
        .zip(&names)
        .map(|(p, n)| {
            let text = std::fs::read_to_string(p).unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{n} is not valid JSON: {e}"));
            (n.clone(), v)
        })
        // Dashboards on the Prometheus datasource (the gateway's own, `gateway-ops.json`)
        // are checked against a real Prometheus by `ops_prometheus.rs`; these are InfluxDB's.
        .filter(|(_, v)| !v.to_string().contains("\"type\":\"prometheus\""))
        .collect();

    let (messages, _truth) = Fleet::generate_all(fleet()).unwrap();
    let total = messages.len();
    assert!(total > 10_000, "a realistic fleet: {total} messages");

    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let influx = Influx::start().unwrap();
    // The maintenance engine knows every simulated device, so its tickets and KPIs reach InfluxDB too.
    let (maintenance_toml, admin) = register_fleet(work.path(), &fleet());
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Influx {
            url: influx.url(),
            db: DB.into(),
        },
        "gw-dash",
        &maintenance_toml,
    )
    .unwrap();
    let acked = publish_all(
        broker.port,
        "dash-publisher",
        messages.into_iter().map(|m| (m.topic, m.payload)).collect(),
        None,
        None,
    )
    .unwrap();
    assert_eq!(acked, total);
    wait_until(
        Duration::from_secs(180),
        "every simulated message to be stored",
        || {
            let m = gw.metrics().ok()?;
            (m["acked"].as_u64()? >= total as u64).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", gw.metrics().ok(), gw.log_tail()));
    assert_eq!(
        gw.metrics().unwrap()["rejected"],
        0,
        "every simulated message is valid"
    );
    // An agent works a ticket, so the time-to-acknowledge and time-to-resolve KPIs have data.
    work_one_ticket(gw.http_port, &admin);
    wait_until(
        Duration::from_secs(30),
        "the KPI export after the agent's work",
        || {
            let answer = influx
                .query(DB, "SELECT last(\"mean_resolve_h\") FROM \"service_kpi\"")
                .ok()?;
            (data_points(&answer) > 0).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));

    let mut failures = Vec::new();
    let (mut panels, mut queries) = (0, 0);
    for (file, dash) in &dashboards {
        let c = check_dashboard(&influx, file, dash, &mut failures);
        eprintln!("{file}: {} panels, {} queries checked", c.panels, c.queries);
        panels += c.panels;
        queries += c.queries;
    }
    assert!(
        failures.is_empty(),
        "{} dashboard problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The raise-to-clear panel measures what was injected: a 12-hour leak and a
    // 72-minute stuck valve, at a resolution of one 10-minute interval.
    let kpis = &dashboards
        .iter()
        .find(|(f, _)| f == "service-kpis.json")
        .unwrap()
        .1;
    let panel = kpis["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Time from raise to clear by code")
        .expect("the raise-to-clear panel");
    let answer = influx
        .query(
            DB,
            &substitute(panel["targets"][0]["query"].as_str().unwrap(), ""),
        )
        .unwrap();
    let open_minutes = |device: &str, code: &str| -> f64 {
        answer["results"][0]["series"]
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|s| s["tags"]["device_id"] == device && s["tags"]["code"] == code)
            })
            .and_then(|s| s["values"][0][1].as_f64())
            .unwrap_or_else(|| panic!("no open time for {device} {code}: {answer}"))
    };
    let leak = open_minutes("toilet-0000", "leak");
    assert!(
        (690.0..=900.0).contains(&leak),
        "a 12 h leak was open {leak} minutes"
    );
    let valve = open_minutes("toilet-0003", "valve_stuck");
    assert!(
        (60.0..=120.0).contains(&valve),
        "a 72 min stuck valve was open {valve} minutes"
    );
    eprintln!(
        "all {panels} panels ({queries} queries) of {} dashboards return data",
        dashboards.len()
    );
    assert!(
        panels >= 12,
        "at least 4 panels in each of the 3 dashboards ({panels})"
    );
}
