//! Unit tests of the cartridge due-date forecaster: one-slot devices (the method),
//! then a three-slot purifier (usage learned once, slots independent, state size).

use super::*;
use protocol::message::Model;

const H: i64 = 3_600_000;

fn spec(capacity_l: f64, max_age_days: f64) -> CartridgeSpec {
    CartridgeSpec {
        capacity_l,
        max_age_days,
        min_rejection: None,
        flow_loss_at_capacity: 0.0,
        interval_scale: 1.0,
    }
}

/// The usage model alone: the straight line never gets any weight in the blend.
fn model_cfg() -> ForecastConfig {
    ForecastConfig {
        blend_prior: 1.0,
        blend_prior_windows: 1e12,
        ..ForecastConfig::default()
    }
}

/// No trip or idle prior (every day is expected to have use): exact arithmetic.
fn exact_cfg() -> ForecastConfig {
    ForecastConfig {
        trip_prior_count: 0.0,
        idle_prior_days: 0.0,
        ..model_cfg()
    }
}

/// A device with one cartridge slot (slot 0, spec 0) and its parameters.
struct OneSlot {
    params: ForecastParams,
    f: DeviceForecaster,
}

impl OneSlot {
    fn new(cfg: ForecastConfig, spec: CartridgeSpec) -> OneSlot {
        OneSlot {
            params: ForecastParams::new(cfg, vec![spec]).unwrap(),
            f: DeviceForecaster::new(),
        }
    }
    fn observe(&mut self, ts: i64, ml: u64, repl: u32) -> Result<(), ForecastError> {
        let reading = SlotReading {
            slot: 0,
            spec: SpecId(0),
            ml_since_replacement: ml,
            replacements: repl,
            rated_l: None,
        };
        self.f.observe(&self.params, ts, &[reading])
    }
    fn observe_quality(&mut self, ts: i64, tds_in: u16, tds_out: u16) {
        self.f.observe_quality(&self.params, ts, 0, tds_in, tds_out);
    }
    fn forecast(&self, now: i64) -> Result<Forecast, ForecastError> {
        self.f.forecast(&self.params, 0, now)
    }
}

/// Hourly observations of days `[from, to)` (day 0 = 1970-01-05, a Monday... offset by
/// `base_day`), each day's litres spread evenly over the active hours 06-23.
/// Returns the cumulative ml after the last day.
fn feed(
    f: &mut OneSlot,
    base_day: i64,
    from: i64,
    to: i64,
    mut ml: f64,
    repl: u32,
    per_day: impl Fn(i64) -> f64,
) -> f64 {
    for d in from..to {
        let litres = per_day(d);
        for h in 0..24 {
            let ts = (base_day + d) * DAY_MS + h * H;
            let frac = ((h as f64 - 6.0) / 17.0).clamp(0.0, 1.0);
            let prev = ((h as f64 - 7.0) / 17.0).clamp(0.0, 1.0);
            ml += (frac - prev) * litres * 1000.0;
            f.observe(ts, ml.round() as u64, repl).unwrap();
        }
    }
    ml
}

/// 1970-01-05 was a Monday.
const MONDAY: i64 = 4;

#[test]
fn constant_use_gives_the_exact_due_date() {
    let mut f = OneSlot::new(exact_cfg(), spec(1000.0, 3650.0));
    let ml = feed(&mut f, MONDAY, 0, 21, 0.0, 0, |_| 10.0);
    assert!((ml - 210_000.0).abs() < 1.0);
    // Now: start of day 21 (nothing used yet today); 790 L left = 79 days of use:
    // the last litre goes through at the end of the active hours of day 21 + 78.
    let now = (MONDAY + 21) * DAY_MS;
    let fc = f.forecast(now).unwrap();
    let expected = (MONDAY + 21 + 78) * DAY_MS + 23 * H;
    assert_eq!(fc.reason, DueReason::Volume);
    assert!(
        (fc.due_ms - expected).abs() < 60_000,
        "due {} expected {} (diff {} min)",
        fc.due_ms,
        expected,
        (fc.due_ms - expected) / 60_000
    );
    assert!((fc.daily_l - 10.0).abs() < 1e-5, "{}", fc.daily_l); // f32 levels
    assert!(fc.lo_ms <= fc.due_ms && fc.due_ms <= fc.hi_ms);
    assert_eq!(
        fc.by_age_ms, None,
        "install time unknown without a replacement"
    );
}

#[test]
fn weekday_weekend_rhythm_is_learned() {
    let per_day = |d: i64| if d.rem_euclid(7) >= 5 { 30.0 } else { 10.0 };
    let mut f = OneSlot::new(exact_cfg(), spec(2000.0, 3650.0));
    let ml = feed(&mut f, MONDAY, 0, 28, 0.0, 0, per_day);
    let now = (MONDAY + 28) * DAY_MS;
    let fc = f.forecast(now).unwrap();
    assert!(
        (fc.daily_l - (5.0 * 10.0 + 2.0 * 30.0) / 7.0).abs() < 1e-6,
        "{}",
        fc.daily_l
    );
    // Expected: walk the true pattern.
    let mut rem = 2000.0 - ml / 1000.0;
    let mut d = 28;
    while rem > per_day(d) {
        rem -= per_day(d);
        d += 1;
    }
    let expected = (MONDAY + d) * DAY_MS + ((6.0 + rem / per_day(d) * 17.0) * H as f64) as i64;
    assert!(
        (fc.due_ms - expected).abs() < 60_000,
        "diff {} ms",
        fc.due_ms - expected
    );
    // A flat rate at the same mean would be off by up to a few days: the rhythm matters.
}

#[test]
fn a_holiday_absence_moves_the_forecast_little() {
    let mut home = OneSlot::new(model_cfg(), spec(3000.0, 3650.0));
    let mut away = OneSlot::new(model_cfg(), spec(3000.0, 3650.0));
    let ml_home = feed(&mut home, MONDAY, 0, 67, 0.0, 0, |_| 20.0);
    let ml_away = feed(&mut away, MONDAY, 0, 67, 0.0, 0, |d| {
        if d >= 60 {
            0.0
        } else {
            20.0
        }
    });
    let now = (MONDAY + 67) * DAY_MS;
    let fh = home.forecast(now).unwrap();
    let fa = away.forecast(now).unwrap();
    // Compare the daily rate (the remaining volumes differ by the week of no use).
    let rel = (fh.daily_l - fa.daily_l) / fh.daily_l;
    assert!(
        (0.0..0.07).contains(&rel),
        "rate fell by {:.1} %",
        rel * 100.0
    );
    // A mean over all days would drop by 7/67 = 10.4 %.
    let horizon = |fc: &Forecast, ml: f64| {
        (fc.due_ms - now) as f64 / DAY_MS as f64 / ((3000.0 - ml / 1000.0) / 20.0)
    };
    assert!(horizon(&fa, ml_away) / horizon(&fh, ml_home) < 1.07);
}

#[test]
fn a_replacement_resets_volume_and_install_time() {
    let mut f = OneSlot::new(exact_cfg(), spec(500.0, 180.0));
    let ml = feed(&mut f, MONDAY, 0, 30, 200_000.0, 2, |_| 10.0);
    let now = (MONDAY + 30) * DAY_MS;
    let before = f.forecast(now).unwrap();
    assert!((before.remaining_l - (500.0 - ml / 1000.0)).abs() < 1e-6);
    // New cartridge: counter goes up, volume restarts.
    let t = now + 9 * H;
    f.observe(t, 1_000, 3).unwrap();
    assert_eq!(f.f.installed_ms(0), Some(t));
    let after = f.forecast(t).unwrap();
    assert!((after.remaining_l - 499.0).abs() < 1e-9);
    assert!(
        after.due_ms > before.due_ms + 45 * DAY_MS,
        "due date jumps forward"
    );
    assert_eq!(after.by_age_ms, Some(t + 180 * DAY_MS));
    // The household's rate is kept across the replacement.
    assert!((after.daily_l - 10.0).abs() < 1e-5);
    // A drop of the volume without a counter change is a replacement too.
    f.observe(t + H, 5_000, 3).unwrap();
    f.observe(t + 2 * H, 100, 3).unwrap();
    assert_eq!(f.f.installed_ms(0), Some(t + 2 * H));
}

#[test]
fn the_interval_widens_with_the_horizon() {
    // Noisy, deterministic daily use.
    let noisy = |d: i64| 20.0 + 8.0 * ((d * 7919 % 13) as f64 / 6.0 - 1.0);
    let width = |capacity: f64| {
        let mut f = OneSlot::new(model_cfg(), spec(capacity, 3650.0));
        feed(&mut f, MONDAY, 0, 40, 0.0, 0, noisy);
        let fc = f.forecast((MONDAY + 40) * DAY_MS).unwrap();
        assert!(fc.lo_ms < fc.due_ms && fc.due_ms < fc.hi_ms);
        (fc.hi_ms - fc.lo_ms) as f64 / DAY_MS as f64
    };
    let (w7, w30, w60) = (
        width(800.0 + 7.0 * 20.0),
        width(800.0 + 30.0 * 20.0),
        width(800.0 + 60.0 * 20.0),
    );
    assert!(w7 < w30 && w30 < w60, "widths {w7:.2} {w30:.2} {w60:.2}");
    assert!(w60 > 1.5 * w7);
}

#[test]
fn the_age_limit_wins_when_use_is_tiny() {
    let mut f = OneSlot::new(exact_cfg(), spec(1500.0, 180.0));
    f.observe(MONDAY * DAY_MS, 0, 0).unwrap();
    f.f.set_installed(0, MONDAY * DAY_MS).unwrap();
    assert_eq!(
        f.f.set_installed(1, 0),
        Err(ForecastError::UnknownSlot { slot: 1 })
    );
    feed(&mut f, MONDAY, 0, 20, 0.0, 0, |_| 0.5);
    let fc = f.forecast((MONDAY + 20) * DAY_MS).unwrap();
    assert_eq!(fc.reason, DueReason::Age);
    assert_eq!(fc.due_ms, (MONDAY + 180) * DAY_MS);
    assert!(fc.by_volume_ms > fc.due_ms);
    assert!(fc.hi_ms <= fc.due_ms && fc.lo_ms <= fc.due_ms);
}

#[test]
fn ro_rejection_decay_brings_the_due_date_forward() {
    let s = CartridgeSpec {
        min_rejection: Some(0.85),
        ..spec(6000.0, 730.0)
    };
    let mut f = OneSlot::new(model_cfg(), s);
    let mut ml = 0u64;
    let mut crossed = None;
    for i in 0..(30 * 24) {
        let ts = MONDAY * DAY_MS + i * H;
        ml += 400;
        f.observe(ts, ml, 0).unwrap();
        // Rejection 0.96 for 15 days, then falling 1 point a day.
        let rej = if i < 15 * 24 {
            0.96
        } else {
            0.96 - (i - 15 * 24) as f64 / 24.0 * 0.01
        };
        f.observe_quality(ts, 300, (300.0 * (1.0 - rej)) as u16);
        if crossed.is_none() && f.f.rejection(0).is_some_and(|r| r < 0.85) {
            crossed = Some(ts);
        }
    }
    let fc = f.forecast(MONDAY * DAY_MS + 30 * DAY_MS).unwrap();
    assert_eq!(fc.reason, DueReason::Rejection);
    assert!(fc.due_ms <= MONDAY * DAY_MS + 30 * DAY_MS);
    assert!(crossed.is_some());
}

#[test]
fn errors_are_typed() {
    assert!(matches!(
        ForecastParams::new(ForecastConfig::default(), vec![spec(0.0, 10.0)]),
        Err(ForecastError::InvalidConfig {
            name: "capacity_l",
            ..
        })
    ));
    assert!(matches!(
        ForecastParams::new(
            ForecastConfig {
                interval: 1.0,
                ..ForecastConfig::default()
            },
            vec![]
        ),
        Err(ForecastError::InvalidConfig {
            name: "interval",
            ..
        })
    ));
    assert!(matches!(
        ForecastParams::new(ForecastConfig::default(), vec![spec(1.0, 10.0); 257]),
        Err(ForecastError::TooManySpecs { count: 257 })
    ));
    let mut f = OneSlot::new(model_cfg(), spec(100.0, 10.0));
    assert!(matches!(
        f.forecast(0),
        Err(ForecastError::UnknownSlot { slot: 0 })
    ));
    f.observe(1000, 5, 0).unwrap();
    assert_eq!(
        f.observe(999, 6, 0),
        Err(ForecastError::OutOfOrder {
            ts_ms: 999,
            last_ms: 1000
        })
    );
    assert!(matches!(
        f.forecast(2000),
        Err(ForecastError::NotReady { days: 0, needed: 5 })
    ));
    let unknown_spec = SlotReading {
        slot: 1,
        spec: SpecId(3),
        ml_since_replacement: 0,
        replacements: 0,
        rated_l: None,
    };
    assert_eq!(
        f.f.observe(&f.params, 3000, &[unknown_spec]),
        Err(ForecastError::UnknownSpec { spec: 3 })
    );
    assert_eq!(
        f.f.forecast(&f.params, 1, 3000),
        Err(ForecastError::UnknownSlot { slot: 1 })
    );
}

#[test]
fn state_is_small() {
    assert_eq!(
        CartridgeSpec::for_kind(CartridgeKind::Shower).capacity_l,
        8_000.0
    );
    assert_eq!(ForecastParams::kind_id(CartridgeKind::Shower), SpecId(3));
    assert!((normal_quantile(0.9) - 1.281_551_565_5).abs() < 1e-6);
    let mut shower = OneSlot::new(model_cfg(), spec(8000.0, 180.0));
    feed(&mut shower, MONDAY, 0, 3, 0.0, 0, |_| 100.0);
    eprintln!("shower state {} bytes", shower.f.state_bytes());
    assert!(shower.f.state_bytes() <= 300, "{}", shower.f.state_bytes());
}

#[test]
fn the_flow_loss_of_a_loading_cartridge_is_followed() {
    // A timed use: 100 L a day through a fresh cartridge, less as it loads.
    let s = CartridgeSpec {
        flow_loss_at_capacity: 0.2,
        interval_scale: 1.0,
        ..spec(3000.0, 3650.0)
    };
    let run = |s: CartridgeSpec| {
        let mut f = OneSlot::new(exact_cfg(), s);
        let mut ml = 0.0;
        let mut truth_day = None;
        let mut fc_at_30 = None;
        for d in 0..60 {
            let load: f64 = ml / 3_000_000.0;
            let litres = 100.0 * (1.0 - 0.2 * load * load);
            if d == 21 {
                fc_at_30 = Some(f.forecast((MONDAY + d) * DAY_MS).unwrap());
            }
            ml = feed(&mut f, MONDAY, d, d + 1, ml, 0, |_| litres);
            if truth_day.is_none() && ml >= 3_000_000.0 {
                truth_day = Some(d);
            }
        }
        let due_day = (fc_at_30.unwrap().due_ms - MONDAY * DAY_MS) as f64 / DAY_MS as f64;
        (due_day, truth_day.unwrap() as f64)
    };
    let (due, truth) = run(s);
    assert!(
        (due - truth).abs() < 1.0,
        "due day {due:.2}, true day {truth}"
    );
    // Ignoring the loss would forecast days too early.
    let plain = CartridgeSpec {
        flow_loss_at_capacity: 0.0,
        interval_scale: 1.0,
        ..s
    };
    let (due_plain, _) = run(plain);
    assert!(due_plain < truth - 1.0, "plain {due_plain:.2} vs {truth}");
}

#[test]
fn a_falling_ro_rejection_is_extrapolated_to_its_threshold() {
    let s = CartridgeSpec {
        min_rejection: Some(0.85),
        ..spec(6000.0, 730.0)
    };
    let mut f = OneSlot::new(exact_cfg(), s);
    // 40 L a day; the rejection falls by 0.02 per 100 L after the first 400 L, so it
    // crosses 0.85 at 1000 L (day 25), long before the 6000 L capacity.
    let rejection = |litres: f64| 0.97 - 0.0002 * (litres - 400.0).max(0.0);
    let mut ml = 0.0;
    for d in 0..18 {
        let before = ml;
        ml = feed(&mut f, MONDAY, d, d + 1, ml, 0, |_| 40.0);
        for h in 0..24 {
            let ts = (MONDAY + d) * DAY_MS + h * H;
            let litres = (before + (ml - before) * h as f64 / 24.0) / 1000.0;
            let out = (300.0 * (1.0 - rejection(litres))).round() as u16;
            f.observe_quality(ts, 300, out);
        }
    }
    assert!(
        f.f.rejection(0).is_some_and(|r| r > 0.85),
        "not crossed yet"
    );
    let fc = f.forecast((MONDAY + 18) * DAY_MS).unwrap();
    assert_eq!(fc.reason, DueReason::Rejection);
    let due_day = (fc.due_ms - MONDAY * DAY_MS) as f64 / DAY_MS as f64;
    assert!((22.0..30.0).contains(&due_day), "due day {due_day:.2}");
    assert!(fc.lo_ms <= fc.due_ms && fc.due_ms <= fc.hi_ms);
    assert!(fc.by_volume_ms > fc.due_ms + 100 * DAY_MS);
}

#[test]
fn trips_are_counted_and_one_under_way_delays_the_date() {
    let mut f = OneSlot::new(model_cfg(), spec(3000.0, 3650.0));
    // 30 days at home, a 6-day trip, 20 days at home, then 4 days away so far.
    let plan = |d: i64| {
        if (30..36).contains(&d) || d >= 56 {
            0.0
        } else {
            20.0
        }
    };
    let mut ml = feed(&mut f, MONDAY, 0, 56, 0.0, 0, plan);
    assert_eq!(f.f.trips(), 1);
    let before = f.forecast((MONDAY + 56) * DAY_MS).unwrap();
    ml = feed(&mut f, MONDAY, 56, 60, ml, 0, plan);
    assert!((ml - 50.0 * 20_000.0).abs() < 1.0);
    let away = f.forecast((MONDAY + 60) * DAY_MS).unwrap();
    assert_eq!(f.f.trips(), 1, "a trip under way is not counted yet");
    // Four days without use, and the trip is expected to go on (mean length 6-7 days).
    let shift = (away.due_ms - before.due_ms) as f64 / DAY_MS as f64;
    assert!(shift > 5.0 && shift < 9.0, "shift {shift:.2} d");
    // Trips make the interval skewed: a long upper tail.
    assert!(away.hi_ms - away.due_ms > away.due_ms - away.lo_ms);
}

#[test]
fn single_idle_days_are_not_trips() {
    let mut f = OneSlot::new(model_cfg(), spec(3000.0, 3650.0));
    // Every fifth day without use (an idle day at home), never two in a row.
    feed(&mut f, MONDAY, 0, 60, 0.0, 0, |d| {
        if d % 5 == 4 {
            0.0
        } else {
            25.0
        }
    });
    assert_eq!(f.f.trips(), 0);
    let fc = f.forecast((MONDAY + 60) * DAY_MS).unwrap();
    // Mean use 20 L/day: the idle share is learned (prior shrinks it a little).
    assert!((fc.daily_l - 20.0).abs() < 1.0, "daily {:.2}", fc.daily_l);
}

/// A purifier's three slots (sediment, carbon, RO) with the standard specifications.
fn purifier_params() -> ForecastParams {
    ForecastParams::standard(model_cfg()).unwrap()
}

/// Hourly readings of a purifier for days `[0, days)`, like [`feed`]: every slot's
/// counter grows by the same water; `replace` gives (day, slot) replacements done at
/// 01:00 of that day. Returns the counters after the last day.
fn feed_purifier(
    f: &mut DeviceForecaster,
    params: &ForecastParams,
    days: i64,
    start: [u64; 3],
    repl: &mut [u32; 3],
    replace: Option<(i64, usize)>,
    per_day: impl Fn(i64) -> f64,
) -> [u64; 3] {
    let kinds = Model::Purifier.cartridge_kinds();
    // Counters as `feed` computes them: the start plus the rounded water since, less
    // the water before a replacement.
    let mut water = 0.0f64;
    let mut since = [0i64; 3];
    let mut ml = start;
    for d in 0..days {
        let litres = per_day(d);
        for h in 0..24 {
            let ts = (MONDAY + d) * DAY_MS + h * H;
            let frac = ((h as f64 - 6.0) / 17.0).clamp(0.0, 1.0);
            let prev = ((h as f64 - 7.0) / 17.0).clamp(0.0, 1.0);
            let water_before = water.round() as i64;
            water += (frac - prev) * litres * 1000.0;
            let mut readings = [SlotReading {
                slot: 0,
                spec: SpecId(0),
                ml_since_replacement: 0,
                replacements: 0,
                rated_l: None,
            }; 3];
            for (i, r) in readings.iter_mut().enumerate() {
                if replace == Some((d, i)) && h == 1 {
                    since[i] = start[i] as i64 + water_before;
                    repl[i] += 1;
                }
                ml[i] = (start[i] as i64 + water.round() as i64 - since[i]) as u64;
                *r = SlotReading {
                    slot: i as u8,
                    spec: ForecastParams::kind_id(kinds[i]),
                    ml_since_replacement: ml[i],
                    replacements: repl[i],
                    rated_l: None,
                };
            }
            f.observe(params, ts, &readings).unwrap();
            f.observe_quality(params, ts, 2, 300, 12);
        }
    }
    ml
}

#[test]
fn a_three_slot_purifier_learns_its_use_once_and_a_replacement_touches_one_slot() {
    let params = purifier_params();
    let noisy = |d: i64| 12.0 + 5.0 * ((d * 7919 % 13) as f64 / 6.0 - 1.0);
    let start = [900_000, 400_000, 1_000_000];
    // Two identical households; in the second the sediment cartridge is replaced on day 30.
    let mut plain = DeviceForecaster::new();
    let mut replaced = DeviceForecaster::new();
    let (mut repl_a, mut repl_b) = ([1, 1, 0], [1, 1, 0]);
    let ml_a = feed_purifier(&mut plain, &params, 40, start, &mut repl_a, None, noisy);
    let ml_b = feed_purifier(
        &mut replaced,
        &params,
        40,
        start,
        &mut repl_b,
        Some((30, 0)),
        noisy,
    );
    assert_eq!(plain.days_with_use(), replaced.days_with_use());
    assert_eq!(plain.slots().collect::<Vec<_>>(), vec![0, 1, 2]);
    let now = (MONDAY + 40) * DAY_MS;
    // The slots fed by the same water forecast from the same learned use: each equals a
    // one-slot forecaster fed that slot's counters alone.
    for slot in 0..3u8 {
        let kind = Model::Purifier.cartridge_kinds()[usize::from(slot)];
        let mut alone = OneSlot::new(model_cfg(), CartridgeSpec::for_kind(kind));
        feed(
            &mut alone,
            MONDAY,
            0,
            40,
            start[usize::from(slot)] as f64,
            1,
            noisy,
        );
        let a = plain.forecast(&params, slot, now).unwrap();
        let b = alone.forecast(now).unwrap();
        assert_eq!(
            (a.due_ms, a.lo_ms, a.hi_ms),
            (b.due_ms, b.lo_ms, b.hi_ms),
            "slot {slot}"
        );
        assert_eq!(a.daily_l, b.daily_l);
    }
    // The replacement restarts the sediment slot only; the carbon and RO forecasts and
    // the household's use are not disturbed by it.
    assert_eq!(replaced.replacements(0), Some(2));
    assert_eq!(replaced.installed_ms(0), Some((MONDAY + 30) * DAY_MS + H));
    assert_eq!(replaced.installed_ms(1), None);
    assert!(ml_b[0] < ml_a[0] && ml_b[1..] == ml_a[1..]);
    for slot in 1..3u8 {
        assert_eq!(
            plain.forecast(&params, slot, now),
            replaced.forecast(&params, slot, now),
            "slot {slot}"
        );
    }
    let (a, b) = (
        plain.forecast(&params, 0, now).unwrap(),
        replaced.forecast(&params, 0, now).unwrap(),
    );
    assert_eq!(a.daily_l, b.daily_l);
    assert!(
        b.due_ms > a.due_ms + 50 * DAY_MS,
        "the new cartridge lasts longer"
    );
    // The RO regression only for the RO slot; the state is small and holds no configuration.
    assert_eq!(
        plain.rejection(2).map(|r| (r - 0.96).abs() < 1e-6),
        Some(true)
    );
    assert_eq!(plain.rejection(0), None);
    let bytes = plain.state_bytes();
    eprintln!("purifier state {bytes} bytes (RO regression included)");
    assert!(bytes <= 600, "{bytes}");
    let json = serde_json::to_string(&plain).unwrap();
    assert!(
        !json.contains("alpha") && !json.contains("capacity"),
        "{json}"
    );
    assert_eq!(
        serde_json::from_str::<DeviceForecaster>(&json).unwrap(),
        plain
    );
    // Without RO extras (three plain cartridges): at most ~250 bytes.
    let plain_specs = ForecastParams::new(model_cfg(), vec![spec(1500.0, 180.0); 3]).unwrap();
    let mut no_ro = DeviceForecaster::new();
    let readings: Vec<_> = (0..3)
        .map(|slot| SlotReading {
            slot,
            spec: SpecId(0),
            ml_since_replacement: 0,
            replacements: 0,
            rated_l: None,
        })
        .collect();
    no_ro.observe(&plain_specs, 0, &readings).unwrap();
    eprintln!("3-slot state without RO {} bytes", no_ro.state_bytes());
    assert!(no_ro.state_bytes() <= 520, "{}", no_ro.state_bytes());
}

impl OneSlot {
    fn observe_boot(&mut self, ts: i64, ml: u64, repl: u32, boot: Option<u32>) {
        let reading = SlotReading {
            slot: 0,
            spec: SpecId(0),
            ml_since_replacement: ml,
            replacements: repl,
            rated_l: None,
        };
        let boot = boot.map(|boot_id| BootInfo {
            boot_id,
            counters_lost: None,
        });
        self.f
            .observe_boot(&self.params, ts, boot, &[reading])
            .unwrap();
    }
}

#[test]
fn a_counter_reset_by_a_reboot_keeps_the_volume_and_a_replacement_does_not() {
    let mut f = OneSlot::new(exact_cfg(), spec(3000.0, 3650.0));
    let t0 = MONDAY * DAY_MS;
    // 100 L a day, hourly, in boot 1, replacement counter 2.
    let mut ml = 0u64;
    for h in 0..(5 * 24) {
        ml += 100_000 / 24;
        f.observe_boot(t0 + h * H, ml, 2, Some(1));
    }
    let before = f.f.used_l(0).unwrap();
    assert!((before - 500.0).abs() < 1.0, "{before}");
    // A reboot that loses the counters: volume and replacements back to 0, new boot id.
    let t1 = t0 + 5 * DAY_MS;
    f.observe_boot(t1, 3_000, 0, Some(2));
    let after = f.f.used_l(0).unwrap();
    assert!(
        (after - 503.0).abs() < 1.0,
        "reset read as a replacement: {after}"
    );
    assert_eq!(f.f.installed_ms(0), None, "a reset is no install");
    // A reboot that keeps the counters but lost the unsaved tail: nothing is added twice.
    f.observe_boot(t1 + H, 20_000, 0, Some(3));
    f.observe_boot(t1 + 2 * H, 15_000, 0, Some(4));
    let kept = f.f.used_l(0).unwrap();
    assert!((kept - 520.0).abs() < 1.0, "{kept}");
    // A replacement: the counter drops with the same boot and the count goes up.
    f.observe_boot(t1 + 3 * H, 1_000, 1, Some(4));
    assert!((f.f.used_l(0).unwrap() - 1.0).abs() < 0.01);
    assert_eq!(f.f.installed_ms(0), Some(t1 + 3 * H));
    // A drop without boot information is a replacement...
    f.observe_boot(t1 + 4 * H, 50_000, 1, None);
    f.observe_boot(t1 + 5 * H, 2_000, 1, None);
    assert!((f.f.used_l(0).unwrap() - 2.0).abs() < 0.01);
    // ...unless the cumulative replacement counter went down: counters were lost.
    f.observe_boot(t1 + 6 * H, 60_000, 1, None);
    f.observe_boot(t1 + 7 * H, 500, 0, None);
    assert!((f.f.used_l(0).unwrap() - 60.5).abs() < 0.01);
    assert_eq!(f.f.installed_ms(0), Some(t1 + 5 * H));
}

#[test]
fn the_blend_is_not_worse_than_the_straight_line_when_the_model_is_wrong() {
    // The model is confidently wrong: it assumes a loaded cartridge halves the flow,
    // while the use stays at 100 L a day through a 10 000 L cartridge.
    let wrong = CartridgeSpec {
        flow_loss_at_capacity: 0.5,
        ..spec(10_000.0, 3650.0)
    };
    let cfg = ForecastConfig {
        trip_prior_count: 0.0,
        idle_prior_days: 0.0,
        flow_loss_prior_sd: 1e-4,
        // Weights from the recent errors after a couple of windows.
        blend_prior: 0.5,
        blend_prior_windows: 2.0,
        ..ForecastConfig::default()
    };
    let mut f = OneSlot::new(cfg, wrong);
    let ml = feed(&mut f, MONDAY, 0, 60, 0.0, 0, |_| 100.0);
    assert!((ml - 6_000_000.0).abs() < 10.0);
    let now = (MONDAY + 60) * DAY_MS;
    let truth = now as f64 + 40.0 * DAY_MS as f64 - H as f64; // 23:00 on the 40th day
    let fc = f.forecast(now).unwrap();
    let days = |t: i64| (t as f64 - truth) / DAY_MS as f64;
    let model_err = days(fc.model_ms).abs();
    let line_err = days(fc.line_ms.unwrap()).abs();
    let blend_err = days(fc.by_volume_ms).abs();
    assert!(
        model_err > 3.0,
        "the model should be wrong here: {model_err:.2} d"
    );
    assert!(fc.model_weight < 0.2, "weight {}", fc.model_weight);
    assert!(
        blend_err <= line_err + 0.2 * model_err,
        "blend {blend_err:.2} d, line {line_err:.2} d, model {model_err:.2} d"
    );
    let (e_model, e_line, n) = f.f.recent_errors(0).unwrap();
    assert!(n >= 5 && e_model > 3.0 * e_line, "{e_model} {e_line} {n}");
}

#[test]
fn the_interval_scale_calibrates_the_half_widths_around_the_same_point() {
    let run = |scale: f64| {
        let s = CartridgeSpec {
            interval_scale: scale,
            ..spec(3000.0, 3650.0)
        };
        let mut f = OneSlot::new(ForecastConfig::default(), s);
        feed(&mut f, MONDAY, 0, 10, 0.0, 0, |d| {
            80.0 + 40.0 * ((d % 3) as f64)
        });
        f.forecast((MONDAY + 10) * DAY_MS).unwrap()
    };
    let (a, b) = (run(1.0), run(2.0));
    assert_eq!(a.by_volume_ms, b.by_volume_ms);
    let (lo_a, hi_a) = a.volume_interval_ms;
    let (lo_b, hi_b) = b.volume_interval_ms;
    assert!(hi_a > a.by_volume_ms && lo_a < a.by_volume_ms);
    let ratio_hi = (hi_b - b.by_volume_ms) as f64 / (hi_a - a.by_volume_ms) as f64;
    let ratio_lo = (b.by_volume_ms - lo_b) as f64 / (a.by_volume_ms - lo_a) as f64;
    assert!((ratio_hi - 2.0).abs() < 0.01, "{ratio_hi}");
    assert!((ratio_lo - 2.0).abs() < 0.01, "{ratio_lo}");
    // Out-of-range scales are refused.
    assert!(ForecastParams::new(
        ForecastConfig::default(),
        vec![CartridgeSpec {
            interval_scale: 0.0,
            ..spec(3000.0, 3650.0)
        }]
    )
    .is_err());
}

#[test]
fn the_span_prior_moves_the_weight_to_the_line_as_it_sees_more_days() {
    // Prior weight only (no recent-error correction): K / (K + days the line has seen).
    let cfg = ForecastConfig {
        trip_prior_count: 0.0,
        idle_prior_days: 0.0,
        blend_span_days: 30.0,
        blend_prior_windows: 1e12,
        ..ForecastConfig::default()
    };
    let mut f = OneSlot::new(cfg, spec(20_000.0, 3650.0));
    let ml = feed(&mut f, MONDAY, 0, 30, 0.0, 0, |_| 100.0);
    // The first reading is at 00:00 of day 0; asked at 00:00 of day 30: a 30-day span.
    let w30 = f.forecast((MONDAY + 30) * DAY_MS).unwrap().model_weight;
    assert!((w30 - 0.5).abs() < 0.02, "{w30}");
    feed(&mut f, MONDAY, 30, 90, ml, 0, |_| 100.0);
    let w90 = f.forecast((MONDAY + 90) * DAY_MS).unwrap().model_weight;
    assert!((w90 - 0.25).abs() < 0.02, "{w90}");
    // Off by default: the fixed prior.
    assert_eq!(ForecastConfig::default().blend_span_days, 0.0);
    let bad = ForecastConfig {
        blend_span_days: -1.0,
        ..ForecastConfig::default()
    };
    assert!(bad.validate().is_err());
}
