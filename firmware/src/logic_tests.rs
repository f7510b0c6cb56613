//! Tests of every session state machine and every fault path of [`super::Fixture`].

use super::*;
use protocol::message::{FaultCode as F, FaultState as S};

const T0: i64 = 1_764_000_000_000;

fn fx(model: Model) -> Fixture {
    Fixture::new(model, Config::for_model(model), Counters::default())
}

/// Steps `f` from `from` (inclusive) to `to` (exclusive) every `step` ms with `s`, collecting events.
fn run(
    f: &mut Fixture,
    from: i64,
    to: i64,
    step: i64,
    s: Sample,
    all: &mut std::vec::Vec<EventKind>,
) -> Outputs {
    let mut t = from;
    let mut out = Outputs::default();
    while t < to {
        let mut ev = Events::new();
        out = f.step(t, &s, &mut ev);
        all.extend(ev);
        t += step;
    }
    out
}

fn sessions(ev: &[EventKind]) -> std::vec::Vec<Session> {
    ev.iter()
        .filter_map(|e| {
            if let EventKind::Session(s) = e {
                Some(s.clone())
            } else {
                None
            }
        })
        .collect()
}

fn faults(ev: &[EventKind]) -> std::vec::Vec<(F, S, Option<f32>)> {
    ev.iter()
        .filter_map(|e| {
            if let EventKind::Fault(f) = e {
                Some((f.code, f.state, f.value))
            } else {
                None
            }
        })
        .collect()
}

fn toilet_ok() -> Sample {
    Sample {
        water_temp_mc: Some(38_000),
        seat_temp_mc: Some(33_000),
        ..Sample::default()
    }
}

fn purifier_ok() -> Sample {
    Sample {
        pressure_pa: Some(300_000),
        tds_in_ppm: Some(250),
        tds_out_ppm: Some(12),
        ..Sample::default()
    }
}

fn shower_ok() -> Sample {
    Sample {
        water_temp_mc: Some(39_000),
        pressure_pa: Some(300_000),
        ..Sample::default()
    }
}

#[test]
fn toilet_seat_session_with_a_wash_inside() {
    let mut f = fx(Model::Toilet);
    let mut ev = vec![];
    let idle = toilet_ok();
    let seated = Sample { seat: true, ..idle };
    let washing = Sample {
        demand: Demand::Wash,
        flow_ml: 20,
        ..seated
    };
    run(&mut f, T0, T0 + 60_000, 1000, seated, &mut ev);
    run(&mut f, T0 + 60_000, T0 + 90_000, 1000, washing, &mut ev); // 30 s × 20 ml
    run(&mut f, T0 + 90_000, T0 + 120_000, 1000, seated, &mut ev);
    run(&mut f, T0 + 120_000, T0 + 121_000, 1000, idle, &mut ev);
    let s = sessions(&ev);
    assert_eq!(s.len(), 2, "{s:?}");
    // The flow of the sample that saw the demand ran before it: 29 of the 30 samples count.
    assert_eq!(
        (s[0].kind, s[0].water_ml, s[0].duration_s),
        (SessionKind::Wash, 580, 30)
    );
    assert_eq!(s[0].temp_c, Some(38.0));
    assert_eq!(
        (s[1].kind, s[1].water_ml, s[1].duration_s, s[1].started_ts),
        (SessionKind::Seat, 600, 120, T0)
    );
    let c = f.counters();
    assert_eq!(
        (c.seat_sessions, c.washes, c.wash_ms, c.water_ml),
        (1, 1, 30_000, 600)
    );
    assert!(faults(&ev).is_empty());
}

#[test]
fn wash_valve_closes_at_max_on_even_if_demand_persists() {
    let mut f = fx(Model::Toilet);
    let mut ev = vec![];
    let washing = Sample {
        demand: Demand::Wash,
        flow_ml: 10,
        ..toilet_ok()
    };
    let out = run(&mut f, T0, T0 + 179_000, 1000, washing, &mut ev);
    assert!(out.valve_open);
    let out = run(
        &mut f,
        T0 + 179_000,
        T0 + 181_000,
        1000,
        Sample {
            flow_ml: 10,
            ..washing
        },
        &mut ev,
    );
    assert!(!out.valve_open);
    // Flow stops; demand still held: session ends, no new session until released.
    run(
        &mut f,
        T0 + 181_000,
        T0 + 185_000,
        1000,
        Sample {
            flow_ml: 0,
            ..washing
        },
        &mut ev,
    );
    assert_eq!(sessions(&ev).len(), 1);
    assert_eq!(sessions(&ev)[0].duration_s, 180);
}

#[test]
fn flush_session_includes_the_tank_refill() {
    let mut f = fx(Model::Toilet);
    let mut ev = vec![];
    run(
        &mut f,
        T0,
        T0 + 1000,
        1000,
        Sample {
            demand: Demand::Flush,
            ..toilet_ok()
        },
        &mut ev,
    );
    run(
        &mut f,
        T0 + 1000,
        T0 + 41_000,
        1000,
        Sample {
            flow_ml: 150,
            ..toilet_ok()
        },
        &mut ev,
    );
    run(&mut f, T0 + 41_000, T0 + 43_000, 1000, toilet_ok(), &mut ev);
    let s = sessions(&ev);
    assert_eq!(
        (s.len(), s[0].kind, s[0].water_ml, s[0].duration_s),
        (1, SessionKind::Flush, 6000, 40)
    );
    assert_eq!(s[0].temp_c, None);
    assert_eq!(f.counters().flushes, 1);
}

#[test]
fn stuck_flush_valve_raises_ends_the_session_and_clears_when_flow_stops() {
    let mut f = fx(Model::Toilet);
    let mut ev = vec![];
    run(
        &mut f,
        T0,
        T0 + 1000,
        1000,
        Sample {
            demand: Demand::Flush,
            ..toilet_ok()
        },
        &mut ev,
    );
    // Valve closes at +1 s; refill never stops.
    run(
        &mut f,
        T0 + 1000,
        T0 + 600_000,
        5000,
        Sample {
            flow_ml: 500,
            ..toilet_ok()
        },
        &mut ev,
    );
    let fl = faults(&ev);
    assert_eq!(fl.len(), 1);
    assert_eq!((fl[0].0, fl[0].1), (F::ValveStuck, S::Raised));
    assert_eq!(fl[0].2, Some(121.0));
    assert!(f.fault_active(F::ValveStuck));
    assert_eq!(sessions(&ev).len(), 1);
    // The stuck flow is metered but not a leak.
    assert!(!f.fault_active(F::Leak));
    // Last flow at +596 s: clears 60 s later.
    run(
        &mut f,
        T0 + 600_000,
        T0 + 655_000,
        1000,
        toilet_ok(),
        &mut ev,
    );
    assert!(f.fault_active(F::ValveStuck));
    run(
        &mut f,
        T0 + 655_000,
        T0 + 658_000,
        1000,
        toilet_ok(),
        &mut ev,
    );
    assert!(!f.fault_active(F::ValveStuck));
    assert_eq!(
        faults(&ev).last().map(|x| (x.0, x.1)),
        Some((F::ValveStuck, S::Cleared))
    );
}

#[test]
fn stuck_wash_valve_is_detected_30_s_after_close() {
    let mut f = fx(Model::Toilet);
    let mut ev = vec![];
    run(
        &mut f,
        T0,
        T0 + 20_000,
        1000,
        Sample {
            demand: Demand::Wash,
            flow_ml: 20,
            ..toilet_ok()
        },
        &mut ev,
    );
    run(
        &mut f,
        T0 + 20_000,
        T0 + 49_000,
        1000,
        Sample {
            flow_ml: 20,
            ..toilet_ok()
        },
        &mut ev,
    );
    assert!(!f.fault_active(F::ValveStuck));
    run(
        &mut f,
        T0 + 49_000,
        T0 + 51_000,
        1000,
        Sample {
            flow_ml: 20,
            ..toilet_ok()
        },
        &mut ev,
    );
    assert!(f.fault_active(F::ValveStuck));
}

#[test]
fn unexplained_flow_is_a_leak_after_ten_minutes_and_clears_after_thirty_dry() {
    let mut f = fx(Model::Toilet);
    let mut ev = vec![];
    // A slow drip: 1 ml every 5 s = 12 ml/min, above the 10 ml/min threshold.
    // Evaluated every minute from +1 min: raised at +11 min.
    run(
        &mut f,
        T0,
        T0 + 11 * 60_000,
        5000,
        Sample {
            flow_ml: 1,
            ..toilet_ok()
        },
        &mut ev,
    );
    assert!(faults(&ev).is_empty());
    run(
        &mut f,
        T0 + 11 * 60_000,
        T0 + 12 * 60_000,
        5000,
        Sample {
            flow_ml: 1,
            ..toilet_ok()
        },
        &mut ev,
    );
    let fl = faults(&ev);
    assert_eq!(fl.len(), 1, "{fl:?}");
    assert_eq!(
        (fl[0].0, fl[0].1, fl[0].2),
        (F::Leak, S::Raised, Some(12.0))
    );
    // The +12 min window still held drips; dry from the +13 min evaluation: clears at +43 min.
    run(
        &mut f,
        T0 + 12 * 60_000,
        T0 + 42 * 60_000,
        5000,
        toilet_ok(),
        &mut ev,
    );
    assert!(f.fault_active(F::Leak));
    run(
        &mut f,
        T0 + 42 * 60_000,
        T0 + 44 * 60_000,
        5000,
        toilet_ok(),
        &mut ev,
    );
    assert!(!f.fault_active(F::Leak));
    assert_eq!(faults(&ev).len(), 2);
}

#[test]
fn flow_before_a_session_starts_counts_as_idle_not_as_session_water() {
    let mut f = fx(Model::Purifier);
    let mut ev = vec![];
    // 5 minutes of a 60 ml/min leak measured at the sample that starts a dispense.
    run(&mut f, T0, T0 + 1000, 1000, purifier_ok(), &mut ev);
    run(
        &mut f,
        T0 + 301_000,
        T0 + 302_000,
        1000,
        Sample {
            demand: Demand::Draw,
            flow_ml: 300,
            ..purifier_ok()
        },
        &mut ev,
    );
    run(
        &mut f,
        T0 + 302_000,
        T0 + 312_000,
        1000,
        Sample {
            demand: Demand::Draw,
            flow_ml: 25,
            ..purifier_ok()
        },
        &mut ev,
    );
    run(
        &mut f,
        T0 + 312_000,
        T0 + 313_000,
        1000,
        purifier_ok(),
        &mut ev,
    );
    assert_eq!(sessions(&ev)[0].water_ml, 250);
    assert_eq!(f.counters().water_ml, 550);
}

#[test]
fn flow_below_the_leak_threshold_or_inside_sessions_is_not_a_leak() {
    let mut f = fx(Model::Purifier);
    let mut ev = vec![];
    run(
        &mut f,
        T0,
        T0 + 3_600_000,
        6000,
        Sample {
            flow_ml: 0,
            ..purifier_ok()
        },
        &mut ev,
    );
    run(
        &mut f,
        T0 + 3_600_000,
        T0 + 3_900_000,
        1000,
        Sample {
            demand: Demand::Draw,
            flow_ml: 25,
            ..purifier_ok()
        },
        &mut ev,
    );
    // 5 ml/min drip: below threshold.
    run(
        &mut f,
        T0 + 3_900_000,
        T0 + 7_200_000,
        60_000,
        Sample {
            flow_ml: 5,
            ..purifier_ok()
        },
        &mut ev,
    );
    assert!(faults(&ev).is_empty(), "{:?}", faults(&ev));
}

#[test]
fn wet_leak_probe_raises_at_once() {
    let mut f = fx(Model::Shower);
    let mut ev = vec![];
    run(
        &mut f,
        T0,
        T0 + 1000,
        1000,
        Sample {
            leak_probe: true,
            ..shower_ok()
        },
        &mut ev,
    );
    assert_eq!(
        faults(&ev).first().map(|x| (x.0, x.1)),
        Some((F::Leak, S::Raised))
    );
    run(
        &mut f,
        T0 + 1000,
        T0 + 32 * 60_000,
        60_000,
        shower_ok(),
        &mut ev,
    );
    assert!(!f.fault_active(F::Leak));
}

#[test]
fn heater_keeps_the_set_point_and_meters_energy() {
    let mut f = fx(Model::Toilet);
    let mut ev = vec![];
    let out = run(
        &mut f,
        T0,
        T0 + 1000,
        1000,
        Sample {
            water_temp_mc: Some(30_000),
            ..toilet_ok()
        },
        &mut ev,
    );
    assert!(out.heater_on);
    // One hour on at 1200 W = 1200 Wh.
    let out = run(
        &mut f,
        T0 + 1000,
        T0 + 3_601_000,
        60_000,
        Sample {
            water_temp_mc: Some(38_000),
            ..toilet_ok()
        },
        &mut ev,
    );
    assert!(
        out.heater_on,
        "inside the dead band the heater keeps its state"
    );
    let out = run(
        &mut f,
        T0 + 3_601_000,
        T0 + 3_602_000,
        1000,
        Sample {
            water_temp_mc: Some(39_500),
            ..toilet_ok()
        },
        &mut ev,
    );
    assert!(!out.heater_on);
    assert_eq!(f.counters().heater_mwh / 1000, 1200);
    assert!(matches!(f.reading(), Reading::Toilet(r) if r.heater_wh == 1200));
}

#[test]
fn over_temperature_forces_the_heater_off_with_hysteresis() {
    let mut f = fx(Model::Toilet);
    let mut ev = vec![];
    let hot = Sample {
        water_temp_mc: Some(60_000),
        ..toilet_ok()
    };
    run(&mut f, T0, T0 + 6000, 1000, hot, &mut ev);
    assert_eq!(faults(&ev), [(F::HeaterOverTemp, S::Raised, Some(60.0))]);
    // 50 °C: below the raise threshold but above the clear threshold: stays raised.
    let out = run(
        &mut f,
        T0 + 6000,
        T0 + 200_000,
        1000,
        Sample {
            water_temp_mc: Some(50_000),
            ..toilet_ok()
        },
        &mut ev,
    );
    assert!(f.fault_active(F::HeaterOverTemp) && !out.heater_on);
    let out = run(
        &mut f,
        T0 + 200_000,
        T0 + 261_000,
        1000,
        Sample {
            water_temp_mc: Some(30_000),
            ..toilet_ok()
        },
        &mut ev,
    );
    assert!(!f.fault_active(F::HeaterOverTemp));
    assert!(out.heater_on);
}

#[test]
fn heater_that_does_not_heat_is_a_heater_failure() {
    let mut f = fx(Model::Toilet);
    let mut ev = vec![];
    let cold = Sample {
        water_temp_mc: Some(18_000),
        ..toilet_ok()
    };
    run(&mut f, T0, T0 + 19 * 60_000, 60_000, cold, &mut ev);
    assert!(faults(&ev).is_empty());
    run(
        &mut f,
        T0 + 19 * 60_000,
        T0 + 22 * 60_000,
        60_000,
        cold,
        &mut ev,
    );
    assert_eq!(faults(&ev), [(F::HeaterFailure, S::Raised, Some(18.0))]);
    run(
        &mut f,
        T0 + 22 * 60_000,
        T0 + 25 * 60_000,
        30_000,
        Sample {
            water_temp_mc: Some(36_000),
            ..toilet_ok()
        },
        &mut ev,
    );
    assert_eq!(
        faults(&ev).last().map(|x| (x.0, x.1)),
        Some((F::HeaterFailure, S::Cleared))
    );
}

#[test]
fn sensor_error_after_persistent_failure_and_clear_after_five_good_minutes() {
    let mut f = fx(Model::Purifier);
    let mut ev = vec![];
    let bad = Sample {
        tds_out_ppm: None,
        ..purifier_ok()
    };
    run(&mut f, T0, T0 + 20_000, 10_000, bad, &mut ev);
    run(
        &mut f,
        T0 + 20_000,
        T0 + 30_000,
        10_000,
        purifier_ok(),
        &mut ev,
    ); // one good read resets
    run(&mut f, T0 + 30_000, T0 + 60_000, 10_000, bad, &mut ev);
    assert!(faults(&ev).is_empty());
    run(&mut f, T0 + 60_000, T0 + 70_000, 10_000, bad, &mut ev);
    assert_eq!(
        faults(&ev),
        [(F::SensorError, S::Raised, Some(f32::from(sensor::TDS_OUT)))]
    );
    run(
        &mut f,
        T0 + 70_000,
        T0 + 380_000,
        10_000,
        purifier_ok(),
        &mut ev,
    );
    assert_eq!(
        faults(&ev).last(),
        Some(&(F::SensorError, S::Cleared, Some(4.0)))
    );
    // The last good value is what telemetry reports meanwhile.
    assert!(matches!(f.reading(), Reading::Purifier(r) if r.tds_out_ppm == 12));
}

#[test]
fn low_inlet_pressure_with_hysteresis() {
    let mut f = fx(Model::Shower);
    let mut ev = vec![];
    run(
        &mut f,
        T0,
        T0 + 130_000,
        10_000,
        Sample {
            pressure_pa: Some(80_000),
            ..shower_ok()
        },
        &mut ev,
    );
    assert_eq!(faults(&ev), [(F::LowInletPressure, S::Raised, Some(80.0))]);
    // 120 kPa: between thresholds, stays raised.
    run(
        &mut f,
        T0 + 130_000,
        T0 + 600_000,
        10_000,
        Sample {
            pressure_pa: Some(120_000),
            ..shower_ok()
        },
        &mut ev,
    );
    assert!(f.fault_active(F::LowInletPressure));
    run(
        &mut f,
        T0 + 600_000,
        T0 + 730_000,
        10_000,
        shower_ok(),
        &mut ev,
    );
    assert!(!f.fault_active(F::LowInletPressure));
}

fn shower(
    f: &mut Fixture,
    start: i64,
    ml_per_s: u32,
    pressure: i32,
    ev: &mut std::vec::Vec<EventKind>,
) {
    let s = Sample {
        pressure_pa: Some(pressure),
        ..shower_ok()
    };
    run(
        f,
        start,
        start + 300_000,
        1000,
        Sample {
            demand: Demand::Draw,
            flow_ml: ml_per_s,
            ..s
        },
        ev,
    );
    run(f, start + 300_000, start + 302_000, 1000, s, ev);
}

#[test]
fn inlet_clog_needs_three_low_flow_sessions_at_good_pressure_and_clears_after_two_good() {
    let mut f = fx(Model::Shower);
    let mut ev = vec![];
    let day = 86_400_000;
    for d in 0..5 {
        shower(&mut f, T0 + d * day, 150, 300_000, &mut ev);
    }
    assert_eq!(f.counters().flow_baseline_ml_min, 8970); // 299 × 150 ml in 300 s
                                                         // Low flow but low pressure: not a clog (the pressure explains it).
    for d in 5..9 {
        shower(&mut f, T0 + d * day, 60, 140_000, &mut ev);
    }
    assert!(!f.fault_active(F::InletClog));
    for d in 9..11 {
        shower(&mut f, T0 + d * day, 80, 300_000, &mut ev);
    }
    assert!(!f.fault_active(F::InletClog));
    shower(&mut f, T0 + 11 * day, 80, 300_000, &mut ev);
    assert!(f.fault_active(F::InletClog));
    let raised = faults(&ev).into_iter().find(|x| x.0 == F::InletClog);
    assert_eq!(
        raised.map(|x| (x.1, x.2.map(|v| (v * 1000.0).round()))),
        Some((S::Raised, Some(533.0)))
    );
    shower(&mut f, T0 + 12 * day, 150, 300_000, &mut ev);
    assert!(f.fault_active(F::InletClog));
    shower(&mut f, T0 + 13 * day, 150, 300_000, &mut ev);
    assert!(!f.fault_active(F::InletClog));
    assert_eq!(f.counters().showers, 14);
}

#[test]
fn purifier_dispense_feeds_every_cartridge_and_the_pump_counter() {
    let mut f = fx(Model::Purifier);
    let mut ev = vec![];
    run(
        &mut f,
        T0,
        T0 + 20_000,
        1000,
        Sample {
            demand: Demand::Draw,
            flow_ml: 25,
            ..purifier_ok()
        },
        &mut ev,
    );
    run(
        &mut f,
        T0 + 20_000,
        T0 + 22_000,
        1000,
        purifier_ok(),
        &mut ev,
    );
    let s = sessions(&ev);
    assert_eq!(
        (s.len(), s[0].kind, s[0].water_ml, s[0].temp_c),
        (1, SessionKind::Dispense, 475, None)
    );
    let Reading::Purifier(r) = f.reading() else {
        panic!("model")
    };
    assert_eq!(
        (
            r.dispensed_ml,
            r.pump_seconds,
            r.tds_in_ppm,
            r.tds_out_ppm,
            r.inlet_pressure_kpa
        ),
        (500, 20, 250, 12, 300.0)
    );
    assert_eq!(
        r.cartridges
            .iter()
            .map(|c| (c.slot, c.kind, c.ml_since_replacement))
            .collect::<std::vec::Vec<_>>(),
        [
            (0, CartridgeKind::Sediment, 500),
            (1, CartridgeKind::Carbon, 500),
            (2, CartridgeKind::ReverseOsmosis, 500)
        ]
    );
    assert!(f.reset_cartridge(1));
    assert!(!f.reset_cartridge(3));
    let Reading::Purifier(r) = f.reading() else {
        panic!("model")
    };
    assert_eq!(
        (
            r.cartridges[1].ml_since_replacement,
            r.cartridges[1].replacements
        ),
        (0, 1)
    );
}

#[test]
fn shower_session_reports_mean_temperature() {
    let mut f = fx(Model::Shower);
    let mut ev = vec![];
    run(
        &mut f,
        T0,
        T0 + 1000,
        1000,
        Sample {
            demand: Demand::Draw,
            ..shower_ok()
        },
        &mut ev,
    );
    run(
        &mut f,
        T0 + 1000,
        T0 + 11_000,
        1000,
        Sample {
            demand: Demand::Draw,
            flow_ml: 150,
            water_temp_mc: Some(38_000),
            ..shower_ok()
        },
        &mut ev,
    );
    run(
        &mut f,
        T0 + 11_000,
        T0 + 21_000,
        1000,
        Sample {
            demand: Demand::Draw,
            flow_ml: 150,
            water_temp_mc: Some(40_000),
            ..shower_ok()
        },
        &mut ev,
    );
    run(&mut f, T0 + 21_000, T0 + 22_000, 1000, shower_ok(), &mut ev);
    let s = sessions(&ev);
    assert_eq!(
        (s[0].kind, s[0].temp_c, s[0].water_ml),
        (SessionKind::Shower, Some(39.0), 3000)
    );
    let Reading::Shower(r) = f.reading() else {
        panic!("model")
    };
    assert_eq!((r.showers, r.temp_c, r.shower_seconds), (1, 39.0, 21));
}

#[test]
fn a_seat_sensor_stuck_occupied_closes_the_session_after_four_hours_once() {
    let mut f = fx(Model::Toilet);
    let mut ev = vec![];
    run(
        &mut f,
        T0,
        T0 + 10 * 3_600_000,
        60_000,
        Sample {
            seat: true,
            ..toilet_ok()
        },
        &mut ev,
    );
    let s = sessions(&ev);
    assert_eq!((s.len(), s[0].duration_s), (1, 4 * 3600));
}

#[test]
fn out_of_range_readings_are_sent_with_the_invalid_marker() {
    let mut f = fx(Model::Shower);
    let mut ev = vec![];
    run(
        &mut f,
        T0,
        T0 + 1000,
        1000,
        Sample {
            water_temp_mc: Some(150_000),
            pressure_pa: Some(5_000_000),
            ..shower_ok()
        },
        &mut ev,
    );
    let Reading::Shower(r) = f.reading() else {
        panic!("model")
    };
    // Contract v1.1: not clamped to a plausible-looking bound but marked invalid
    // (NaN, encoded as `null`), so the receiver keeps the counters and drops the field.
    assert!(r.temp_c.is_nan() && r.pressure_kpa.is_nan(), "{r:?}");
}
