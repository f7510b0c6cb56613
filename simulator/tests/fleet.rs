//! End-to-end tests of the generated stream: determinism, contract validity, and
//! agreement between the ground truth and what the firmware reported.

use std::collections::{BTreeMap, HashMap};

use protocol::message::{
    Event, EventKind, FaultCode, FaultState, Presence, Reading, Status, Telemetry,
};
use protocol::topic::{Channel, Topic};
use protocol::validate::{check_event, check_status, check_telemetry, Limits};
use simulator::faults::{FaultKind, FaultMix, Injection, Truth};
use simulator::{Fleet, FleetConfig, OutMessage};

const END: i64 = 1_764_000_000_000; // 2025-11-24 16:00 UTC
const HOUR: i64 = 3_600_000;

fn small(seed: u64) -> FleetConfig {
    FleetConfig {
        devices: 15,
        days: 10,
        end_ms: END,
        seed,
        telemetry_every_min: 15,
        mix: FaultMix::default_mix(),
        inject: vec![],
    }
}

fn inj(device: &str, kind: FaultKind, start_day: f64, days: Option<f64>) -> Injection {
    Injection::on(device, kind, start_day, days)
}

/// A fleet with one of every fault kind on known devices, and no random faults.
fn scenario() -> FleetConfig {
    FleetConfig {
        devices: 30,
        days: 24,
        end_ms: END,
        seed: 11,
        telemetry_every_min: 15,
        mix: FaultMix::default(),
        inject: vec![
            inj("toilet-0000", FaultKind::Leak, 3.0, Some(2.0)),
            inj("toilet-0003", FaultKind::ValveStuck, 4.0, Some(0.05)),
            inj("toilet-0006", FaultKind::HeaterFailure, 5.0, Some(2.0)),
            inj("shower-0002", FaultKind::InletClog, 3.0, Some(16.0)),
            inj("purifier-0001", FaultKind::SensorDropout, 6.0, Some(0.5)),
            inj("shower-0005", FaultKind::Offline, 6.0, Some(1.0)),
            inj("toilet-0009", FaultKind::Unused, 8.0, Some(8.0)),
            inj("shower-0008", FaultKind::LowPressure, 4.0, Some(2.0)),
            inj("purifier-0010", FaultKind::Leak, 9.0, Some(1.0)),
            inj("toilet-0012", FaultKind::SensorDrift, 2.0, Some(20.0)),
            inj("purifier-0013", FaultKind::MainBoard, 5.0, Some(1.0)),
            inj("shower-0014", FaultKind::HighUsage, 6.0, Some(3.0)),
        ],
    }
}

#[derive(Debug)]
struct Parsed {
    at: i64,
    device: String,
    telemetry: Option<Telemetry>,
    event: Option<Event>,
    status: Option<Status>,
}

fn parse_all(msgs: &[OutMessage], now: i64) -> Vec<Parsed> {
    let limits = Limits::default();
    msgs.iter()
        .map(|m| {
            let topic = Topic::parse(&m.topic).unwrap_or_else(|e| panic!("{}: {e}", m.topic));
            let mut p = Parsed {
                at: m.at_ms,
                device: topic.device_id.to_string(),
                telemetry: None,
                event: None,
                status: None,
            };
            match topic.channel {
                Channel::Telemetry => {
                    let t: Telemetry = serde_json::from_slice(&m.payload).unwrap();
                    check_telemetry(&t, &topic, now, &limits)
                        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&m.payload)));
                    p.telemetry = Some(t);
                }
                Channel::Event => {
                    let e: Event = serde_json::from_slice(&m.payload).unwrap();
                    check_event(&e, &topic, now, &limits)
                        .unwrap_or_else(|x| panic!("{x}: {}", String::from_utf8_lossy(&m.payload)));
                    p.event = Some(e);
                }
                Channel::Status => {
                    let s: Status = serde_json::from_slice(&m.payload).unwrap();
                    check_status(&s, &topic, now, &limits).unwrap();
                    assert!(m.retain);
                    p.status = Some(s);
                }
                Channel::Cmd => panic!("devices never publish on cmd"),
            }
            assert!(m.payload.len() <= protocol::MAX_PAYLOAD_BYTES);
            p
        })
        .collect()
}

#[test]
fn same_seed_gives_the_same_messages_and_truth() {
    let a = Fleet::generate_all(small(3)).unwrap();
    let b = Fleet::generate_all(small(3)).unwrap();
    assert!(a.0.len() > 10_000);
    assert_eq!(a, b);
    let c = Fleet::generate_all(small(4)).unwrap();
    assert_ne!(a.0, c.0);
}

#[test]
fn every_message_is_valid_and_ordered() {
    let (msgs, _) = Fleet::generate_all(small(5)).unwrap();
    let parsed = parse_all(&msgs, END);
    assert!(
        msgs.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
        "stream is in publish-time order"
    );
    assert!(
        msgs.iter().all(|m| m.at_ms < END),
        "nothing after the end (= now)"
    );
    // (boot_id, seq) strictly increases per device.
    let mut last: HashMap<String, (u32, u32)> = HashMap::new();
    for p in &parsed {
        let key = match (&p.telemetry, &p.event) {
            (Some(t), _) => (t.boot_id, t.seq),
            (_, Some(e)) => (e.boot_id, e.seq),
            _ => continue,
        };
        if let Some(prev) = last.insert(p.device.clone(), key) {
            assert!(key > prev, "{}: {prev:?} then {key:?}", p.device);
        }
    }
    assert_eq!(last.len(), 15);
}

fn raised(parsed: &[Parsed], device: &str, code: FaultCode) -> Vec<i64> {
    parsed
        .iter()
        .filter(|p| p.device == device)
        .filter_map(|p| p.event.as_ref())
        .filter_map(|e| match &e.event {
            EventKind::Fault(f) if f.code == code && f.state == FaultState::Raised => Some(e.ts),
            _ => None,
        })
        .collect()
}

fn code_for(kind: FaultKind) -> Option<FaultCode> {
    kind.device_code()
}

#[test]
fn ground_truth_agrees_with_the_stream() {
    let (msgs, truth) = Fleet::generate_all(scenario()).unwrap();
    let parsed = parse_all(&msgs, END);
    let faults: Vec<_> = truth
        .iter()
        .filter_map(|t| match t {
            Truth::Fault {
                device,
                kind,
                start_ms,
                end_ms,
                ..
            } => Some((device.clone(), *kind, *start_ms, end_ms.unwrap_or(END))),
            _ => None,
        })
        .collect();
    let kinds: Vec<FaultKind> = faults.iter().map(|f| f.1).collect();
    for k in [
        FaultKind::Leak,
        FaultKind::ValveStuck,
        FaultKind::HeaterFailure,
        FaultKind::InletClog,
        FaultKind::SensorDropout,
        FaultKind::Offline,
        FaultKind::Unused,
        FaultKind::LowPressure,
        FaultKind::SensorDrift,
        FaultKind::MainBoard,
        FaultKind::HighUsage,
    ] {
        assert!(
            kinds.contains(&k),
            "{k:?} missing from the truth: {faults:?}"
        );
    }
    // Every detectable injected fault is raised by the firmware while it is in force.
    for (device, kind, start, end) in &faults {
        if let Some(code) = code_for(*kind) {
            let hits = raised(&parsed, device, code);
            assert!(
                hits.iter().any(|&ts| ts >= *start && ts <= *end + HOUR),
                "{device} {kind:?} [{start}, {end}] not raised: {hits:?}"
            );
        }
        match kind {
            FaultKind::Offline => {
                let st: Vec<_> = parsed
                    .iter()
                    .filter(|p| &p.device == device)
                    .filter_map(|p| p.status.as_ref().map(|s| (p.at, s.state)))
                    .collect();
                assert!(
                    st.iter().any(|&(at, s)| s == Presence::Offline
                        && at >= *start
                        && at < start + HOUR),
                    "{st:?}"
                );
                assert!(
                    st.iter()
                        .any(|&(at, s)| s == Presence::Online && at >= *end && at < end + HOUR),
                    "{st:?}"
                );
                // Nothing published while offline; what was measured meanwhile arrives after.
                let inside = parsed
                    .iter()
                    .filter(|p| {
                        &p.device == device
                            && p.status.is_none()
                            && p.at > start + 600_000
                            && p.at < *end
                    })
                    .count();
                assert_eq!(inside, 0);
                let caught_up = parsed
                    .iter()
                    .filter(|p| &p.device == device && p.at >= *end)
                    .filter_map(|p| p.telemetry.as_ref())
                    .filter(|t| t.ts > *start && t.ts < *end)
                    .count();
                assert!(
                    caught_up > 10,
                    "queued telemetry delivered after reconnect: {caught_up}"
                );
            }
            FaultKind::Unused => {
                let used = parsed
                    .iter()
                    .filter(|p| &p.device == device)
                    .filter_map(|p| p.event.as_ref())
                    .filter(|e| matches!(&e.event, EventKind::Session(s) if s.started_ts >= *start && s.started_ts < *end))
                    .count();
                assert_eq!(used, 0);
                assert!(end - start >= 7 * 24 * HOUR);
            }
            FaultKind::HighUsage => {
                // Whole days, with several times the sessions of the other days.
                assert_eq!((start % (24 * HOUR), end % (24 * HOUR)), (0, 0));
                let (mut inside, mut outside) = (0.0, 0.0);
                for e in parsed
                    .iter()
                    .filter(|p| &p.device == device)
                    .filter_map(|p| p.event.as_ref())
                {
                    if let EventKind::Session(s) = &e.event {
                        if s.started_ts >= *start && s.started_ts < *end {
                            inside += 1.0;
                        } else {
                            outside += 1.0;
                        }
                    }
                }
                let days_in = ((end - start) / (24 * HOUR)) as f64;
                let per_day_in = inside / days_in;
                let per_day_out = outside / (24.0 - days_in);
                assert!(
                    per_day_in > 2.0 * per_day_out,
                    "{per_day_in} sessions a day with guests, {per_day_out} without"
                );
            }
            _ => {}
        }
    }
    // And nothing is raised that was not injected.
    for p in &parsed {
        let Some(Event {
            event: EventKind::Fault(f),
            ts,
            ..
        }) = &p.event
        else {
            continue;
        };
        if f.state != FaultState::Raised {
            continue;
        }
        let explained = faults.iter().any(|(d, k, s, e)| {
            d == &p.device && code_for(*k) == Some(f.code) && *ts >= *s && *ts <= e + HOUR
        });
        assert!(
            explained,
            "unexplained {:?} on {} at {ts}",
            f.code, p.device
        );
    }
}

#[test]
fn cartridge_capacity_truth_matches_the_reported_counters() {
    let cfg = FleetConfig {
        devices: 60,
        days: 60,
        end_ms: END,
        seed: 21,
        telemetry_every_min: 60,
        mix: FaultMix::default(),
        inject: vec![],
    };
    let (msgs, truth) = Fleet::generate_all(cfg).unwrap();
    let parsed = parse_all(&msgs, END);
    let mut by_dev: BTreeMap<&str, Vec<&Telemetry>> = BTreeMap::new();
    for p in &parsed {
        if let Some(t) = &p.telemetry {
            by_dev.entry(t.device_id.as_str()).or_default().push(t);
        }
    }
    let mut checked = 0;
    for t in &truth {
        let Truth::CartridgeCapacity {
            device,
            slot,
            rated_l,
            ts,
            ..
        } = t
        else {
            continue;
        };
        let series = &by_dev[device.as_str()];
        let ml = |tel: &Telemetry| -> u64 {
            let carts = match &tel.reading {
                Reading::Purifier(r) => &r.cartridges,
                Reading::Shower(r) => &r.cartridges,
                Reading::Toilet(_) => panic!("toilets have no cartridges"),
            };
            carts
                .iter()
                .find(|c| c.slot == *slot)
                .map_or(0, |c| c.ml_since_replacement)
        };
        let rated = u64::from(*rated_l) * 1000;
        let before = series.iter().rev().find(|x| x.ts < *ts).map(|x| ml(x));
        let replaced = truth.iter().find_map(|r| match r {
            Truth::CartridgeReplaced {
                device: d,
                slot: s,
                ts: rts,
                ..
            } if d == device && s == slot && rts > ts => Some(*rts),
            _ => None,
        });
        let after = series
            .iter()
            .find(|x| x.ts >= *ts && replaced.is_none_or(|r| x.ts < r))
            .map(|x| ml(x));
        // The device's meter is within ±2 % of the truth.
        if let Some(b) = before {
            assert!(
                b < rated * 103 / 100,
                "{device} slot {slot}: {b} before {rated}"
            );
        }
        if let Some(a) = after {
            assert!(
                a >= rated * 97 / 100,
                "{device} slot {slot}: {a} after {rated}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} cartridges reached capacity");
}

#[test]
fn replaced_cartridges_show_up_in_telemetry() {
    let cfg = FleetConfig {
        devices: 60,
        days: 60,
        end_ms: END,
        seed: 21,
        telemetry_every_min: 60,
        mix: FaultMix::default(),
        inject: vec![],
    };
    let (msgs, truth) = Fleet::generate_all(cfg).unwrap();
    let parsed = parse_all(&msgs, END);
    let mut checked = 0;
    for t in &truth {
        let Truth::CartridgeReplaced {
            device, slot, ts, ..
        } = t
        else {
            continue;
        };
        let reading = |x: &Telemetry| -> (u32, u64) {
            let carts = match &x.reading {
                Reading::Purifier(r) => r.cartridges.clone(),
                Reading::Shower(r) => r.cartridges.clone(),
                Reading::Toilet(_) => panic!("toilets have no cartridges"),
            };
            carts
                .iter()
                .find(|c| c.slot == *slot)
                .map(|c| (c.replacements, c.ml_since_replacement))
                .unwrap_or_default()
        };
        let series: Vec<&Telemetry> = parsed
            .iter()
            .filter(|p| &p.device == device)
            .filter_map(|p| p.telemetry.as_ref())
            .collect();
        let before = series
            .iter()
            .rev()
            .find(|x| x.ts < *ts)
            .map(|x| reading(x))
            .unwrap();
        let after = series
            .iter()
            .find(|x| x.ts >= *ts)
            .map(|x| reading(x))
            .unwrap();
        assert_eq!(
            after.0,
            before.0 + 1,
            "{device} slot {slot}: replacements counter"
        );
        assert!(
            after.1 < 20_000 && before.1 > after.1,
            "{device} slot {slot}: volume restarts: {before:?} -> {after:?}"
        );
        // The replacement came after the cartridge reached capacity.
        assert!(truth.iter().any(|c| matches!(c, Truth::CartridgeCapacity { device: d, slot: s, ts: cts, .. } if d == device && s == slot && cts < ts)));
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} replacements");
}

#[test]
fn bad_configurations_are_rejected() {
    assert!(Fleet::new(FleetConfig {
        devices: 0,
        ..small(1)
    })
    .is_err());
    assert!(Fleet::new(FleetConfig {
        days: 500,
        ..small(1)
    })
    .is_err());
    assert!(Fleet::new(FleetConfig {
        telemetry_every_min: 0,
        ..small(1)
    })
    .is_err());
    let bad = FleetConfig {
        inject: vec![inj("toilet-9999", FaultKind::Leak, 1.0, None)],
        ..small(1)
    };
    assert!(matches!(
        Fleet::new(bad),
        Err(simulator::FleetError::UnknownDevice(_))
    ));
}

/// Contract v1.1: a world with its own ratings reports them in telemetry, and a reboot
/// that lost the counters says so on its online status (a reboot that kept them does not).
#[test]
fn cartridge_ratings_and_counter_losing_reboots_are_reported() {
    let mut fleet = Fleet::new(FleetConfig {
        devices: 12,
        days: 20,
        end_ms: END,
        seed: 5,
        telemetry_every_min: 15,
        mix: FaultMix::default(),
        inject: vec![],
    })
    .unwrap();
    let mix = simulator::device::CartridgeMix::parse("rated=0.4,lossy=0.5,reboots=3").unwrap();
    fleet.set_cartridge_mix(&mix);
    let variants: HashMap<u32, simulator::device::CartridgeVariant> = fleet
        .devices()
        .iter()
        .map(|d| (d.idx, *d.cartridge_variant()))
        .collect();
    let (mut rated_seen, mut lost_said, mut kept_said) = (0, 0, 0);
    while let Some(batch) = fleet.next_batch() {
        for m in batch {
            let v = variants[&m.device];
            if m.topic.ends_with("/telemetry") {
                let t: Telemetry = serde_json::from_slice(&m.payload).unwrap();
                let carts = match &t.reading {
                    Reading::Purifier(r) => &r.cartridges,
                    Reading::Shower(r) => &r.cartridges,
                    Reading::Toilet(_) => continue,
                };
                for c in carts {
                    assert_eq!(c.rated_l, Some(v.rated_l[usize::from(c.slot)]));
                    rated_seen += 1;
                }
            } else if m.topic.ends_with("/status") {
                let s: Status = serde_json::from_slice(&m.payload).unwrap();
                if let Some(r) = s.reboot {
                    assert_eq!(r.counters_lost, v.lossy_reboots, "{}", m.topic);
                    if r.counters_lost {
                        lost_said += 1;
                    } else {
                        kept_said += 1;
                    }
                }
            }
        }
    }
    assert!(
        rated_seen > 0 && lost_said > 0 && kept_said > 0,
        "{rated_seen} {lost_said} {kept_said}"
    );
    let lossy_reboots = fleet
        .truth()
        .iter()
        .filter(|t| {
            matches!(
                t,
                Truth::Reboot {
                    counters_lost: true,
                    ..
                }
            )
        })
        .count();
    assert!(lossy_reboots > 0);
}
