//! Evaluation harness of the cartridge due-date forecaster against the fleet
//! simulator's ground truth, run by `eval filter` and its integration
//! test.
//!
//! Each device has one `DeviceForecaster` fed every reading with all its slots (as the
//! gateway does), so a purifier's three cartridges share the learned use.
//!
//! For every `cartridge_capacity` truth record at time `T`, the forecaster and two
//! baselines are asked at `T − h` for each horizon `h`, using only the telemetry up to
//! then; a query counts when all three can answer and the same cartridge is in the slot
//! at `T − h` and at `T`.
//!
//! The truth is the date the *true* volume reaches the rating, while every method sees
//! only the device's meter (each meter is off by up to ±2 % in the simulator). The
//! report therefore also decomposes the error: the *meter floor* (the date the meter
//! itself reaches the rating, i.e. an oracle that knows the future use exactly, against
//! the true date), the forecaster against that meter date, and two look-ahead oracles:
//! the slot's long-run mean use over the whole run, and the same at home with the
//! future holidays (`Truth::Away`) known.

use std::collections::HashMap;

use analytics::{
    BootInfo, CartridgeSpec, DeviceForecaster, ForecastConfig, ForecastParams, SlotReading,
};
use protocol::message::{CartridgeKind, Reading, Telemetry};
use simulator::device::CartridgeMix;
use simulator::{faults::FaultMix, Fleet, FleetConfig, Truth};

use protocol::catalog::DAY_MS;

/// What to simulate and evaluate.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Devices in the fleet (a third are purifiers, a third showers).
    pub devices: u32,
    /// Simulated days.
    pub days: u32,
    /// Seed.
    pub seed: u64,
    /// End of the simulated span, UTC ms (fixed for reproducibility).
    pub end_ms: i64,
    /// Inject the simulator's default random faults.
    pub faults: bool,
    /// Horizons, days before the true capacity date.
    pub horizons: Vec<i64>,
    /// History the straight-line baseline needs since its anchor, days.
    pub line_min_days: i64,
    /// Forecaster parameters to override (`--set name=value`), for tuning.
    pub overrides: Vec<(String, f64)>,
    /// How the fleet's cartridges vary (a family of worlds).
    pub cartridges: CartridgeMix,
    /// Interval scale per kind (`CartridgeKind::index`), applied on top of the overrides.
    pub interval_scales: Option<[f64; 4]>,
}

/// Applies one `name=value` override to a forecaster configuration or to the
/// cartridge specifications (`flow_loss_at_capacity`: those with a loss).
pub fn apply_override(
    c: &mut ForecastConfig,
    specs: &mut [CartridgeSpec],
    name: &str,
    v: f64,
) -> Result<(), String> {
    match name {
        "weekday_alpha" => c.weekday_alpha = v,
        "weekend_alpha" => c.weekend_alpha = v,
        "absent_below_l" => c.absent_below_l = v,
        "trip_min_days" => c.trip_min_days = v as u32,
        "trip_max_idle_prob" => c.trip_max_idle_prob = v,
        "trip_prior_count" => c.trip_prior_count = v,
        "trip_prior_days" => c.trip_prior_days = v,
        "trip_length_prior_days" => c.trip_length_prior_days = v,
        "trip_length_prior_weight" => c.trip_length_prior_weight = v,
        "idle_prior" => c.idle_prior = v,
        "idle_prior_days" => c.idle_prior_days = v,
        "meter_rel_sd" => c.meter_rel_sd = v,
        "spread_scale" => c.spread_scale = v,
        "interval" => c.interval = v,
        "min_days" => c.min_days = v as u32,
        "flow_loss_at_capacity" => {
            for spec in specs.iter_mut().filter(|s| s.flow_loss_at_capacity > 0.0) {
                spec.flow_loss_at_capacity = v;
            }
        }
        "interval_scale" => {
            for spec in specs.iter_mut() {
                spec.interval_scale = v;
            }
        }
        "flow_loss_prior_sd" => c.flow_loss_prior_sd = v,
        "flow_loss_forget" => c.flow_loss_forget = v,
        "line_min_days" => c.line_min_days = v,
        "score_window_days" => c.score_window_days = v,
        "score_alpha" => c.score_alpha = v,
        "blend_prior" => c.blend_prior = v,
        "blend_prior_windows" => c.blend_prior_windows = v,
        "blend_power" => c.blend_power = v,
        "blend_span_days" => c.blend_span_days = v,
        _ => return Err(format!("unknown forecaster parameter {name:?}")),
    }
    Ok(())
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            devices: 300,
            days: 120,
            seed: 7,
            end_ms: 1_764_000_000_000,
            faults: false,
            horizons: vec![60, 30, 14, 7],
            line_min_days: 3,
            overrides: Vec::new(),
            cartridges: CartridgeMix::default(),
            interval_scales: None,
        }
    }
}

/// Errors of one method at one horizon.
#[derive(Debug, Clone, Default)]
pub struct MethodErrors {
    /// Signed errors (predicted − true), days.
    pub errors: Vec<f64>,
}

impl MethodErrors {
    /// Mean absolute error, days.
    pub fn mae(&self) -> f64 {
        if self.errors.is_empty() {
            return f64::NAN;
        }
        self.errors.iter().map(|e| e.abs()).sum::<f64>() / self.errors.len() as f64
    }
    /// Mean signed error, days.
    pub fn bias(&self) -> f64 {
        if self.errors.is_empty() {
            return f64::NAN;
        }
        self.errors.iter().sum::<f64>() / self.errors.len() as f64
    }
}

/// Results at one horizon.
#[derive(Debug, Clone, Default)]
pub struct HorizonResult {
    /// Days before the true capacity date.
    pub horizon_days: i64,
    /// The forecaster (volume date).
    pub forecaster: MethodErrors,
    /// Baseline (a): fixed interval from the anchor at the fleet-average daily use.
    pub fixed: MethodErrors,
    /// Baseline (b): straight line of mean daily use since installation.
    pub line: MethodErrors,
    /// Queries whose true date fell inside the 80 % interval.
    pub covered: usize,
    /// Sum of interval widths, days.
    pub width_sum: f64,
    /// Queries per kind: (count, forecaster abs error sum, straight-line abs error sum).
    pub per_kind: HashMap<&'static str, (usize, f64, f64)>,
    /// Decomposition: the forecaster against the date the device's own meter reaches
    /// the rated volume (what it can see), predicted − meter date, days.
    pub vs_meter: MethodErrors,
    /// Decomposition: meter date − true date, days (the error of an oracle that knows
    /// the future use exactly but only through the meter).
    pub meter_floor: MethodErrors,
    /// Decomposition: oracle of the slot's long-run mean daily use (whole run,
    /// look-ahead) from the query time, against the meter date, days.
    pub longrun_vs_meter: MethodErrors,
    /// Decomposition: oracle that also knows the future absences (holidays) exactly and
    /// the slot's long-run use per day at home, against the meter date, days.
    pub away_oracle_vs_meter: MethodErrors,
    /// The two oracles against the true date, days (meter error included).
    pub longrun_vs_truth: MethodErrors,
    /// See `longrun_vs_truth`.
    pub away_oracle_vs_truth: MethodErrors,
    /// Queries whose meter date was extrapolated (replaced or run ended first).
    pub meter_extrapolated: usize,
}

impl HorizonResult {
    /// Number of queries.
    pub fn n(&self) -> usize {
        self.forecaster.errors.len()
    }
    /// Interval coverage.
    pub fn coverage(&self) -> f64 {
        self.covered as f64 / self.n().max(1) as f64
    }
    /// Mean interval width, days.
    pub fn mean_width(&self) -> f64 {
        self.width_sum / self.n().max(1) as f64
    }
}

/// One scored query (for `--dump`): days relative to the true date unless noted.
#[derive(Debug, Clone)]
pub struct QueryRow {
    /// Device index and slot.
    pub device: u32,
    /// Slot.
    pub slot: u8,
    /// Cartridge kind.
    pub kind: &'static str,
    /// Horizon, days.
    pub horizon_days: i64,
    /// Forecaster error, interval ends, straight-line error.
    pub forecaster: f64,
    /// Interval low end.
    pub lo: f64,
    /// Interval high end.
    pub hi: f64,
    /// Straight-line error.
    pub line: f64,
    /// Meter date − true date (NaN if unknown or extrapolated: the cartridge was
    /// replaced, its counter reset or the run ended before the meter reached the rating).
    pub meter: f64,
    /// Slot's long-run mean use, litres/day (look-ahead).
    pub rate_l_day: f64,
    /// Days with use the forecaster had seen.
    pub days_seen: u32,
    /// The forecaster's error in units of its interval's half-width on that side
    /// (≤ 1: covered; the split-conformal score).
    pub score: f64,
    /// Weight of the usage model in the blend.
    pub model_weight: f64,
    /// The usage model's own error (before blending).
    pub model: f64,
    /// Error of the look-ahead oracle of the slot's long-run mean use over the whole
    /// run (NaN if none): what knowing each household's mean use exactly would give.
    pub longrun: f64,
    /// Error of the oracle that also knows the future absences (NaN if none).
    pub absence: f64,
}

/// The whole evaluation.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per horizon, in the order asked.
    pub horizons: Vec<HorizonResult>,
    /// Telemetry messages parsed.
    pub telemetry: usize,
    /// Cartridge slots seen.
    pub cartridges: usize,
    /// Capacity truth records.
    pub capacity_events: usize,
    /// Queries where the forecaster's due date was the age limit or RO rejection.
    pub not_volume: usize,
    /// Fleet-average daily use per kind (litres/day), used by baseline (a).
    pub fleet_rate: Vec<(&'static str, f64)>,
    /// Every scored query.
    pub rows: Vec<QueryRow>,
}

#[derive(Clone, Copy)]
struct Obs {
    ts: i64,
    ml: u64,
    repl: u32,
    boot: u32,
    tds_in: u16,
    tds_out: u16,
}

struct Stream {
    kind: CartridgeKind,
    /// The cartridge's rated capacity (what the registry knows), litres.
    rated_l: u32,
    obs: Vec<Obs>,
}

struct Query {
    at: i64,
    truth: i64,
    horizon: usize,
}

/// Per query: (replacements, forecaster (due, lo, hi, reason is volume, days seen,
/// model weight, model date), fixed, line, long-run oracle (plain, with the absences)).
type Answer = (
    Option<u32>,
    Option<(i64, i64, i64, bool, u32, f64, i64)>,
    Option<i64>,
    Option<i64>,
    Option<(i64, i64)>,
);

/// One slot of the device under evaluation: its stream, queries and baselines' state.
struct SlotEval<'a> {
    key: (u32, u8),
    stream: &'a Stream,
    qs: Vec<Query>,
    spec: analytics::SpecId,
    cap_ml: f64,
    fleet_ml_per_ms: f64,
    longrun_ml_per_ms: f64,
    home_ml_per_ms: f64,
    /// Anchor of the baselines: first observation of the current cartridge.
    anchor: Option<Obs>,
    last: Option<Obs>,
    /// Volume before the counter resets of the current cartridge (the straight line
    /// tells a reset from a replacement by the boot id, as the forecaster does), ml.
    offset_ml: u64,
    answers: Vec<Answer>,
    next_query: usize,
    next_obs: usize,
}

impl SlotEval<'_> {
    /// Answers the queries asked before `ts` from the forecaster's state now.
    fn answer_until(
        &mut self,
        ts: i64,
        f: &DeviceForecaster,
        params: &ForecastParams,
        away_here: &[(i64, i64)],
        line_min_days: i64,
    ) {
        while self.next_query < self.qs.len() && self.qs[self.next_query].at < ts {
            let a = self.answer(
                &self.qs[self.next_query],
                f,
                params,
                away_here,
                line_min_days,
            );
            self.answers.push(a);
            self.next_query += 1;
        }
    }

    fn answer(
        &self,
        q: &Query,
        f: &DeviceForecaster,
        params: &ForecastParams,
        away_here: &[(i64, i64)],
        line_min_days: i64,
    ) -> Answer {
        let slot = self.key.1;
        let (cap_ml, anchor, last) = (self.cap_ml, self.anchor, self.last);
        let (longrun_ml_per_ms, home_ml_per_ms) = (self.longrun_ml_per_ms, self.home_ml_per_ms);
        let fc = f.forecast(params, slot, q.at).ok().map(|fc| {
            (
                fc.by_volume_ms,
                fc.volume_interval_ms.0,
                fc.volume_interval_ms.1,
                fc.reason == analytics::DueReason::Volume,
                f.days_with_use(),
                fc.model_weight,
                fc.model_ms,
            )
        });
        let longrun = last
            .filter(|_| longrun_ml_per_ms > 0.0 && home_ml_per_ms > 0.0)
            .map(|l| {
                let t0 = q.at.max(l.ts);
                // The volume through the cartridge, counter resets included.
                let left = cap_ml - (l.ml + self.offset_ml) as f64;
                let plain = t0 + (left / longrun_ml_per_ms) as i64;
                // Walk at the home rate, pausing through the known absences.
                let (mut t, mut rem) = (t0, left);
                for &(a, b) in away_here {
                    if b <= t || rem <= 0.0 {
                        continue;
                    }
                    if a > t {
                        let can = home_ml_per_ms * (a - t) as f64;
                        if rem <= can {
                            break;
                        }
                        rem -= can;
                    }
                    t = t.max(b);
                }
                (plain, t + (rem.max(0.0) / home_ml_per_ms) as i64)
            });
        let (fixed, line) = match (anchor, last) {
            (Some(a), Some(l)) => {
                let fixed = a.ts + ((cap_ml - a.ml as f64) / self.fleet_ml_per_ms) as i64;
                let span = l.ts - a.ts;
                let l_ml = (l.ml + self.offset_ml) as f64;
                let used = l_ml - a.ml as f64;
                let line = (span >= line_min_days * DAY_MS && used > 0.0)
                    .then(|| l.ts + ((cap_ml - l_ml) / (used / span as f64)) as i64);
                (Some(fixed), line)
            }
            _ => (None, None),
        };
        (f.replacements(slot), fc, fixed, line, longrun)
    }
}

/// A simulated world's cartridge telemetry and ground truth, kept to evaluate several
/// forecaster configurations on it.
pub struct World {
    streams: HashMap<(u32, u8), Stream>,
    /// `(device, boot id)` → whether that boot's status said the counters were lost.
    boots: HashMap<(u32, u32), bool>,
    truth: Vec<Truth>,
    start_ms: i64,
    telemetry: usize,
}

/// Runs the simulation and the evaluation.
pub fn run(cfg: &EvalConfig) -> Result<Report, String> {
    let world = simulate(cfg)?;
    evaluate(cfg, &world)
}

/// Simulates the fleet of `cfg` and keeps its cartridge telemetry and truth.
pub fn simulate(cfg: &EvalConfig) -> Result<World, String> {
    let mut fleet = Fleet::new(FleetConfig {
        devices: cfg.devices,
        days: cfg.days,
        end_ms: cfg.end_ms,
        seed: cfg.seed,
        telemetry_every_min: 15,
        mix: if cfg.faults {
            FaultMix::default_mix()
        } else {
            FaultMix::default()
        },
        inject: Vec::new(),
    })
    .map_err(|e| e.to_string())?;
    fleet.set_cartridge_mix(&cfg.cartridges);
    let rated: HashMap<u32, [u32; 4]> = fleet
        .devices()
        .iter()
        .map(|d| (d.idx, d.cartridge_variant().rated_l))
        .collect();
    let mut streams: HashMap<(u32, u8), Stream> = HashMap::new();
    let mut boots: HashMap<(u32, u32), bool> = HashMap::new();
    let mut telemetry = 0usize;
    while let Some(batch) = fleet.next_batch() {
        for m in batch {
            if m.topic.ends_with("/status") {
                // Contract v1.1: the boot's reboot reason, as the gateway keeps it.
                let st: protocol::message::Status = serde_json::from_slice(&m.payload)
                    .map_err(|e| format!("bad status on {}: {e}", m.topic))?;
                if let (Some(boot), Some(r)) = (st.boot_id, st.reboot) {
                    boots.insert((m.device, boot), r.counters_lost);
                }
                continue;
            }
            if !m.topic.ends_with("/telemetry") {
                continue;
            }
            let t: Telemetry = serde_json::from_slice(&m.payload)
                .map_err(|e| format!("bad telemetry on {}: {e}", m.topic))?;
            telemetry += 1;
            let (carts, tds) = match &t.reading {
                Reading::Purifier(r) => (&r.cartridges, (r.tds_in_ppm, r.tds_out_ppm)),
                Reading::Shower(r) => (&r.cartridges, (0, 0)),
                Reading::Toilet(_) => continue,
            };
            for c in carts {
                let s = streams.entry((m.device, c.slot)).or_insert_with(|| Stream {
                    kind: c.kind,
                    rated_l: rated
                        .get(&m.device)
                        .and_then(|r| r.get(usize::from(c.slot)))
                        .copied()
                        .filter(|r| *r > 0)
                        .unwrap_or_else(|| c.kind.rated_litres()),
                    obs: Vec::new(),
                });
                s.obs.push(Obs {
                    ts: t.ts,
                    ml: c.ml_since_replacement,
                    repl: c.replacements,
                    boot: t.boot_id,
                    tds_in: tds.0,
                    tds_out: tds.1,
                });
            }
        }
    }
    for s in streams.values_mut() {
        s.obs.sort_by_key(|o| o.ts);
    }
    Ok(World {
        streams,
        boots,
        truth: fleet.truth(),
        start_ms: fleet.start_ms(),
        telemetry,
    })
}

/// Evaluates the forecaster configured by `cfg` (overrides, interval scales) on a
/// simulated world.
pub fn evaluate(cfg: &EvalConfig, world: &World) -> Result<Report, String> {
    let mut report = Report {
        telemetry: world.telemetry,
        cartridges: world.streams.len(),
        ..Report::default()
    };
    let streams = &world.streams;
    // Queries from the ground truth.
    let start_ms = world.start_ms;
    let mut queries: HashMap<(u32, u8), Vec<Query>> = HashMap::new();
    let mut away: HashMap<u32, Vec<(i64, i64)>> = HashMap::new();
    // Replacements per slot (the same physical cartridge at T − h and T has none between).
    let mut replaced: HashMap<(u32, u8), Vec<i64>> = HashMap::new();
    let dev_idx = |device: &str| {
        device
            .rsplit('-')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
    };
    for t in &world.truth {
        if let Truth::CartridgeReplaced {
            device, slot, ts, ..
        } = t
        {
            if let Some(idx) = dev_idx(device) {
                replaced.entry((idx, *slot)).or_default().push(*ts);
            }
        }
    }
    for t in world.truth.iter().cloned() {
        if let Truth::Away {
            device,
            start_ms,
            end_ms,
        } = &t
        {
            if let Some(idx) = device
                .rsplit('-')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
            {
                away.entry(idx).or_default().push((*start_ms, *end_ms));
            }
        }
        if let Truth::CartridgeCapacity {
            device, slot, ts, ..
        } = t
        {
            let idx: u32 = device
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("bad device id {device:?}"))?;
            report.capacity_events += 1;
            let q = queries.entry((idx, slot)).or_default();
            // Horizon index usize::MAX: the state at the true date itself.
            q.push(Query {
                at: ts,
                truth: ts,
                horizon: usize::MAX,
            });
            for (i, h) in cfg.horizons.iter().enumerate() {
                let at = ts - h * DAY_MS;
                if at > start_ms {
                    q.push(Query {
                        at,
                        truth: ts,
                        horizon: i,
                    });
                }
            }
        }
    }
    // Fleet-average daily use per kind (over the whole run: a look-ahead that favours
    // baseline (a)).
    let mut per_kind: HashMap<CartridgeKind, (f64, f64)> = HashMap::new();
    let mut slot_rate: HashMap<(u32, u8), f64> = HashMap::new();
    let mut home_rate: HashMap<(u32, u8), f64> = HashMap::new();
    for (key, s) in streams.iter() {
        let (mut litres, mut prev) = (0.0, None::<Obs>);
        for o in &s.obs {
            if let Some(p) = prev {
                litres += if o.repl != p.repl || o.ml < p.ml {
                    o.ml
                } else {
                    o.ml - p.ml
                } as f64
                    / 1000.0;
            }
            prev = Some(*o);
        }
        if let (Some(a), Some(b)) = (s.obs.first(), s.obs.last()) {
            let e = per_kind.entry(s.kind).or_default();
            e.0 += litres;
            e.1 += (b.ts - a.ts) as f64 / DAY_MS as f64;
            slot_rate.insert(*key, litres * 1000.0 / (b.ts - a.ts).max(1) as f64);
            let away_ms: i64 = away.get(&key.0).map_or(0, |v| {
                v.iter()
                    .map(|&(x, y)| (y.min(b.ts) - x.max(a.ts)).max(0))
                    .sum()
            });
            home_rate.insert(
                *key,
                litres * 1000.0 / (b.ts - a.ts - away_ms).max(1) as f64,
            );
        }
    }
    let fleet_rate = |k: CartridgeKind| per_kind.get(&k).map_or(f64::NAN, |(l, d)| l / d);
    let mut kinds: Vec<_> = per_kind.keys().copied().collect();
    kinds.sort_by_key(|k| k.as_str());
    report.fleet_rate = kinds.iter().map(|k| (k.as_str(), fleet_rate(*k))).collect();
    report.horizons = cfg
        .horizons
        .iter()
        .map(|&h| HorizonResult {
            horizon_days: h,
            ..Default::default()
        })
        .collect();

    let mut fcfg = ForecastConfig::default();
    let mut specs: Vec<CartridgeSpec> = CartridgeSpec::KINDS
        .iter()
        .map(|&k| CartridgeSpec::for_kind(k))
        .collect();
    for (name, v) in &cfg.overrides {
        apply_override(&mut fcfg, &mut specs, name, *v)?;
    }
    if let Some(scales) = cfg.interval_scales {
        for (spec, k) in specs.iter_mut().zip(scales) {
            spec.interval_scale = k;
        }
    }
    let params = ForecastParams::new(fcfg, specs).map_err(|e| e.to_string())?;

    let mut devices: Vec<u32> = streams.keys().map(|k| k.0).collect();
    devices.sort_unstable();
    devices.dedup();
    let mut readings: Vec<SlotReading> = Vec::new();
    for device in devices {
        let mut slot_keys: Vec<(u32, u8)> =
            streams.keys().copied().filter(|k| k.0 == device).collect();
        slot_keys.sort_unstable();
        let mut away_here = away.get(&device).cloned().unwrap_or_default();
        away_here.sort_unstable();
        // Every slot feeds the device's forecaster, with queries or not.
        let mut slots = Vec::with_capacity(slot_keys.len());
        for key in slot_keys {
            let Some(stream) = streams.get(&key) else {
                continue;
            };
            let mut qs = queries.remove(&key).unwrap_or_default();
            qs.sort_by_key(|q| q.at);
            let kind = stream.kind;
            let spec_id = ForecastParams::kind_id(kind);
            let spec = params
                .spec(spec_id)
                .ok_or_else(|| format!("no spec for {}", kind.as_str()))?;
            let _ = spec;
            slots.push(SlotEval {
                key,
                stream,
                qs,
                spec: spec_id,
                cap_ml: f64::from(stream.rated_l) * 1000.0,
                fleet_ml_per_ms: fleet_rate(stream.kind) * 1000.0 / DAY_MS as f64,
                longrun_ml_per_ms: slot_rate.get(&key).copied().unwrap_or(f64::NAN),
                home_ml_per_ms: home_rate.get(&key).copied().unwrap_or(f64::NAN),
                anchor: None,
                last: None,
                offset_ml: 0,
                answers: Vec::new(),
                next_query: 0,
                next_obs: 0,
            });
        }
        let mut f = DeviceForecaster::new();
        // The device's readings in time order: the slots' observations of the same time.
        while let Some(ts) = slots
            .iter()
            .filter_map(|s| s.stream.obs.get(s.next_obs).map(|o| o.ts))
            .min()
        {
            for s in slots.iter_mut() {
                s.answer_until(ts, &f, &params, &away_here, cfg.line_min_days);
            }
            readings.clear();
            let mut quality = None;
            let mut boot = None;
            for s in &slots {
                if let Some(o) = s.stream.obs.get(s.next_obs).filter(|o| o.ts == ts) {
                    boot = Some(BootInfo {
                        boot_id: o.boot,
                        counters_lost: world.boots.get(&(device, o.boot)).copied(),
                    });
                    readings.push(SlotReading {
                        slot: s.key.1,
                        spec: s.spec,
                        ml_since_replacement: o.ml,
                        replacements: o.repl,
                        rated_l: Some(s.stream.rated_l),
                    });
                    if s.stream.kind == CartridgeKind::ReverseOsmosis {
                        quality = Some((s.key.1, o.tds_in, o.tds_out));
                    }
                }
            }
            // Duplicate/out-of-order cannot happen (sorted); such a reading would be skipped.
            let accepted = f.observe_boot(&params, ts, boot, &readings).is_ok();
            if let (true, Some((slot, tds_in, tds_out))) = (accepted, quality) {
                f.observe_quality(&params, ts, slot, tds_in, tds_out);
            }
            for s in slots.iter_mut() {
                let Some(o) = s.stream.obs.get(s.next_obs).copied().filter(|o| o.ts == ts) else {
                    continue;
                };
                s.next_obs += 1;
                if accepted {
                    // A counter that drops with a new boot id and no new replacement
                    // is a reset (the cartridge keeps its volume); any other drop or
                    // replacement count change is a new cartridge.
                    let reset = s
                        .last
                        .is_some_and(|l| o.boot != l.boot && o.ml < l.ml && o.repl <= l.repl)
                        || s.last.is_some_and(|l| o.repl < l.repl);
                    if reset {
                        if let Some(l) = s.last {
                            s.offset_ml += if o.ml * 2 < l.ml { l.ml } else { l.ml - o.ml };
                        }
                        // The same cartridge: its anchor now goes with the new count.
                        if let Some(a) = s.anchor.as_mut() {
                            a.repl = o.repl;
                        }
                    } else if s
                        .anchor
                        .is_none_or(|a| a.repl != o.repl || s.last.is_some_and(|l| o.ml < l.ml))
                    {
                        s.anchor = Some(o);
                        s.offset_ml = 0;
                    }
                    s.last = Some(o);
                }
            }
        }
        for s in slots.iter_mut() {
            s.answer_until(i64::MAX, &f, &params, &away_here, cfg.line_min_days);
        }
        for s in &slots {
            let (key, stream, qs, answers) = (s.key, s.stream, &s.qs, &s.answers);
            let longrun_ml_per_ms = s.longrun_ml_per_ms;
            let cap_ml = s.cap_ml;
            // Score: each horizon query against the state at its true date.
            for (q, a) in qs.iter().zip(answers) {
                if q.horizon == usize::MAX {
                    continue;
                }
                let Some(at_truth) = qs
                    .iter()
                    .zip(answers)
                    .find(|(t, _)| t.horizon == usize::MAX && t.truth == q.truth)
                else {
                    continue;
                };
                let (
                    _repl,
                    Some((due, lo, hi, is_volume, days_seen, model_weight, model_ms)),
                    Some(fixed),
                    Some(line),
                    longrun,
                ) = *a
                else {
                    continue;
                };
                let _ = at_truth;
                if replaced
                    .get(&key)
                    .is_some_and(|v| v.iter().any(|&r| r > q.at && r <= q.truth))
                {
                    continue; // another cartridge was in the slot at T − h
                }
                let r = &mut report.horizons[q.horizon];
                let d = |t: i64| (t - q.truth) as f64 / DAY_MS as f64;
                r.forecaster.errors.push(d(due));
                r.fixed.errors.push(d(fixed));
                r.line.errors.push(d(line));
                if lo <= q.truth && q.truth <= hi {
                    r.covered += 1;
                }
                r.width_sum += (hi - lo) as f64 / DAY_MS as f64;
                let k = r.per_kind.entry(stream.kind.as_str()).or_default();
                k.0 += 1;
                k.1 += d(due).abs();
                k.2 += d(line).abs();
                if !is_volume {
                    report.not_volume += 1;
                }
                let t_meter = meter_date(&stream.obs, q.truth, cap_ml);
                report.rows.push(QueryRow {
                    device: key.0,
                    slot: key.1,
                    kind: stream.kind.as_str(),
                    horizon_days: cfg.horizons[q.horizon],
                    forecaster: d(due),
                    lo: d(lo),
                    hi: d(hi),
                    line: d(line),
                    meter: t_meter
                        .filter(|(_, extrapolated)| !extrapolated)
                        .map_or(f64::NAN, |(t, _)| d(t)),
                    rate_l_day: longrun_ml_per_ms * DAY_MS as f64 / 1000.0,
                    days_seen,
                    score: {
                        let e = (q.truth - due) as f64;
                        if e >= 0.0 {
                            e / ((hi - due) as f64).max(1.0)
                        } else {
                            -e / ((due - lo) as f64).max(1.0)
                        }
                    },
                    model_weight,
                    model: d(model_ms),
                    longrun: longrun.map_or(f64::NAN, |(l, _)| d(l)),
                    absence: longrun.map_or(f64::NAN, |(_, o)| d(o)),
                });
                let r = &mut report.horizons[q.horizon];
                if let Some((t_meter, extrapolated)) = t_meter {
                    r.vs_meter
                        .errors
                        .push((due - t_meter) as f64 / DAY_MS as f64);
                    r.meter_floor.errors.push(d(t_meter));
                    if let Some((l, o)) = longrun {
                        r.longrun_vs_meter
                            .errors
                            .push((l - t_meter) as f64 / DAY_MS as f64);
                        r.away_oracle_vs_meter
                            .errors
                            .push((o - t_meter) as f64 / DAY_MS as f64);
                        r.longrun_vs_truth.errors.push(d(l));
                        r.away_oracle_vs_truth.errors.push(d(o));
                    }
                    r.meter_extrapolated += usize::from(extrapolated);
                }
            }
        }
    }
    Ok(report)
}

/// When the device's own counter of the cartridge in the slot at `truth_ts` reaches
/// `cap_ml` (interpolated between readings), and whether it had to be extrapolated
/// (the cartridge was replaced or the run ended first) at its last 28 days' rate.
fn meter_date(obs: &[Obs], truth_ts: i64, cap_ml: f64) -> Option<(i64, bool)> {
    let i0 = obs.partition_point(|o| o.ts <= truth_ts).checked_sub(1)?;
    let same = |a: &Obs, b: &Obs| a.repl == b.repl && b.ml >= a.ml;
    let mut start = i0;
    while start > 0 && same(&obs[start - 1], &obs[start]) {
        start -= 1;
    }
    let mut end = i0;
    while end + 1 < obs.len() && same(&obs[end], &obs[end + 1]) {
        end += 1;
    }
    let seg = &obs[start..=end];
    if let Some(k) = seg.iter().position(|o| o.ml as f64 >= cap_ml) {
        if k == 0 {
            return Some((seg[0].ts, false));
        }
        let (a, b) = (seg[k - 1], seg[k]);
        let f = (cap_ml - a.ml as f64) / (b.ml as f64 - a.ml as f64).max(1.0);
        return Some((a.ts + (f * (b.ts - a.ts) as f64) as i64, false));
    }
    let last = seg.last()?;
    let j = seg.partition_point(|o| o.ts < last.ts - 28 * DAY_MS);
    let first = seg.get(j)?;
    let rate = (last.ml as f64 - first.ml as f64) / (last.ts - first.ts).max(1) as f64;
    (rate > 0.0).then(|| (last.ts + ((cap_ml - last.ml as f64) / rate) as i64, true))
}

/// The report as a Markdown table.
pub fn format_report(cfg: &EvalConfig, r: &Report) -> String {
    let mut s = format!(
        "fleet: {} devices, {} days, seed {}, end_ms {}, faults {}; {} telemetry messages, {} cartridge slots, {} capacity events\n",
        cfg.devices, cfg.days, cfg.seed, cfg.end_ms, if cfg.faults { "default" } else { "none" },
        r.telemetry, r.cartridges, r.capacity_events
    );
    s += "fleet-average daily use (baseline a):";
    for (k, v) in &r.fleet_rate {
        s += &format!(" {k} {v:.1} L/d;");
    }
    s += "\n\n| horizon | n | forecaster MAE (bias) | (a) fixed interval MAE | (b) straight line MAE | vs (b) | 80 % PI coverage | mean PI width | n by kind: forecaster / line MAE |\n|---|---|---|---|---|---|---|---|---|\n";
    for h in &r.horizons {
        let mut kinds: Vec<_> = h.per_kind.iter().collect();
        kinds.sort_by_key(|(k, _)| **k);
        let kinds: Vec<String> = kinds
            .iter()
            .map(|(k, (n, f, l))| format!("{k} {n}: {:.1} / {:.1}", f / *n as f64, l / *n as f64))
            .collect();
        s += &format!(
            "| {} d | {} | {:.2} d ({:+.2}) | {:.2} d | {:.2} d | {:+.0} % | {:.1} % | {:.1} d | {} |\n",
            h.horizon_days,
            h.n(),
            h.forecaster.mae(),
            h.forecaster.bias(),
            h.fixed.mae(),
            h.line.mae(),
            (h.forecaster.mae() / h.line.mae() - 1.0) * 100.0,
            h.coverage() * 100.0,
            h.mean_width(),
            kinds.join(", ")
        );
    }
    s += &format!(
        "\nqueries where the age limit or RO rejection came first: {}\n",
        r.not_volume
    );
    s += "\nerror decomposition (MAE, days): meter floor = |meter date − true date| (an oracle that \
          knows the future use exactly, through the meter); forecaster and long-run-rate oracle \
          (look-ahead mean of the whole run) and absence oracle (knows the future holidays and the \
          long-run use per day at home) against the meter date\n\n\
          | horizon | n | meter floor | forecaster vs meter date (bias) | long-run oracle vs meter date (vs true date) | absence oracle vs meter date (vs true date) | extrapolated meter dates |\n|---|---|---|---|---|---|---|\n";
    for h in &r.horizons {
        s += &format!(
            "| {} d | {} | {:.2} d | {:.2} d ({:+.2}) | {:.2} d ({:.2} d) | {:.2} d ({:.2} d) | {} |\n",
            h.horizon_days,
            h.vs_meter.errors.len(),
            h.meter_floor.mae(),
            h.vs_meter.mae(),
            h.vs_meter.bias(),
            h.longrun_vs_meter.mae(),
            h.longrun_vs_truth.mae(),
            h.away_oracle_vs_meter.mae(),
            h.away_oracle_vs_truth.mae(),
            h.meter_extrapolated
        );
    }
    s
}

/// The leave-one-family-out protocol of `eval filter --heldout`: every forecaster
/// configuration of a small grid is run on every family of cartridge worlds and every
/// seed; for each family `F`, the configuration and the per-kind interval scales
/// (split-conformal) are chosen on the *other* families' selection seeds only, then
/// reported on `F`'s held-out seeds, which no choice has seen.
#[derive(Debug, Clone)]
pub struct HeldOutConfig {
    /// Fleet size, days, horizons, faults, fixed overrides (seed and cartridges are set per run).
    pub base: EvalConfig,
    /// Families of cartridge worlds (`CartridgeMix::parse` names).
    pub families: Vec<String>,
    /// Seeds the choices are made on.
    pub selection_seeds: Vec<u64>,
    /// Seeds the results are reported on.
    pub heldout_seeds: Vec<u64>,
    /// Candidate configurations: a name and its overrides.
    pub grid: Vec<(String, Vec<(String, f64)>)>,
}

impl HeldOutConfig {
    /// The default protocol: five families, seeds 11–12 to choose, 21–22 to report,
    /// and a grid over how the blend weighs the model against the straight line (by
    /// recent errors, or fixed weights) and the shower cartridge's flow-loss prior.
    pub fn standard(base: EvalConfig) -> HeldOutConfig {
        let named = |name: String, sets: &[(&str, f64)]| {
            (
                name,
                sets.iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect::<Vec<_>>(),
            )
        };
        let mut grid = Vec::new();
        for fixed in [0.7, 0.8] {
            grid.push(named(
                format!("fixed model weight {fixed}, flow_loss prior 0.05"),
                &[
                    ("blend_prior", fixed),
                    ("blend_prior_windows", 1e12),
                    ("flow_loss_at_capacity", 0.05),
                ],
            ));
        }
        for (power, prior, windows) in [
            (1.0, 0.7, 4.0),
            (2.0, 0.7, 10.0),
            (2.0, 0.8, 20.0),
            (1.0, 0.8, 10.0),
        ] {
            grid.push(named(
                format!("by recent errors: power {power}, prior {prior} weighing {windows} windows, flow_loss prior 0.05"),
                &[
                    ("blend_power", power),
                    ("blend_prior", prior),
                    ("blend_prior_windows", windows),
                    ("flow_loss_at_capacity", 0.05),
                ],
            ));
        }
        // The prior weight of the model by how much each estimate has seen (the line's
        // span against the model's memory), alone or corrected by the recent errors.
        for (span, windows, power) in [(30.0, 1e12, 2.0), (60.0, 1e12, 2.0), (60.0, 20.0, 2.0)] {
            let by_errors = if windows < 1e9 {
                format!(", by recent errors: power {power} weighing {windows} windows")
            } else {
                String::new()
            };
            grid.push(named(
                format!("model weight {span} / ({span} + days the line has seen){by_errors}, flow_loss prior 0.05"),
                &[
                    ("blend_span_days", span),
                    ("blend_power", power),
                    ("blend_prior_windows", windows),
                    ("flow_loss_at_capacity", 0.05),
                ],
            ));
        }
        HeldOutConfig {
            base,
            families: CartridgeMix::FAMILIES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            selection_seeds: vec![11, 12],
            heldout_seeds: vec![21, 22],
            grid,
        }
    }
}

/// The scored queries of one run: family, seed, grid index.
type Runs = HashMap<(usize, u64, usize), Vec<QueryRow>>;

/// Model of a cartridge kind's device.
fn model_of_kind(kind: &str) -> &'static str {
    if kind == CartridgeKind::Shower.as_str() {
        "shower"
    } else {
        "purifier"
    }
}

/// Split-conformal scale per kind: the `level` quantile of the scores (rank
/// ⌈(n + 1)·level⌉), or 1 with no data.
fn conformal_scales(rows: &[&QueryRow], level: f64) -> [f64; 4] {
    let mut out = [1.0; 4];
    for kind in CartridgeKind::ALL {
        let mut v: Vec<f64> = rows
            .iter()
            .filter(|r| r.kind == kind.as_str() && r.score.is_finite())
            .map(|r| r.score)
            .collect();
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        let rank = (((v.len() + 1) as f64) * level).ceil() as usize;
        out[kind.index()] = v[rank.clamp(1, v.len()) - 1].max(0.05);
    }
    out
}

fn covered(r: &QueryRow, scales: &[f64; 4]) -> bool {
    let k = CartridgeKind::ALL
        .iter()
        .find(|k| k.as_str() == r.kind)
        .map_or(1.0, |k| scales[k.index()]);
    r.score <= k
}

/// Mean over the horizons of the forecaster's MAE relative to the straight line's
/// (the selection objective; lower is better).
fn objective(rows: &[&QueryRow], horizons: &[i64]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0;
    for &h in horizons {
        let (mut f, mut l) = (0.0, 0.0);
        for r in rows.iter().filter(|r| r.horizon_days == h) {
            f += r.forecaster.abs();
            l += r.line.abs();
        }
        if l > 0.0 {
            sum += f / l;
            n += 1;
        }
    }
    if n == 0 {
        f64::INFINITY
    } else {
        sum / n as f64
    }
}

/// A table of scored queries per horizon: MAE against the straight line, bias, and
/// the 80 % interval's coverage per model with the given scales.
pub fn summary_table(rows: &[&QueryRow], horizons: &[i64], scales: &[f64; 4]) -> String {
    let mut s = String::from(
        "| horizon | n | forecaster MAE (bias) | straight line MAE | vs line | model alone MAE | 80 % PI coverage: purifier / shower | MAE forecaster / line by kind |\n|---|---|---|---|---|---|---|---|\n",
    );
    for &h in horizons {
        let hr: Vec<&&QueryRow> = rows.iter().filter(|r| r.horizon_days == h).collect();
        if hr.is_empty() {
            continue;
        }
        let n = hr.len() as f64;
        let mae = |f: &dyn Fn(&QueryRow) -> f64| hr.iter().map(|r| f(r).abs()).sum::<f64>() / n;
        let fc = mae(&|r| r.forecaster);
        let line = mae(&|r| r.line);
        let model = mae(&|r| r.model);
        let bias = hr.iter().map(|r| r.forecaster).sum::<f64>() / n;
        let cov = |m: &str| {
            let v: Vec<_> = hr.iter().filter(|r| model_of_kind(r.kind) == m).collect();
            if v.is_empty() {
                "–".to_owned()
            } else {
                let c = v.iter().filter(|r| covered(r, scales)).count();
                format!("{:.1} % (n {})", 100.0 * c as f64 / v.len() as f64, v.len())
            }
        };
        let mut kinds = Vec::new();
        for kind in CartridgeKind::ALL {
            let v: Vec<_> = hr.iter().filter(|r| r.kind == kind.as_str()).collect();
            if v.is_empty() {
                continue;
            }
            let k = v.len() as f64;
            kinds.push(format!(
                "{} {:.2} / {:.2}",
                kind.as_str(),
                v.iter().map(|r| r.forecaster.abs()).sum::<f64>() / k,
                v.iter().map(|r| r.line.abs()).sum::<f64>() / k
            ));
        }
        s += &format!(
            "| {h} d | {} | {fc:.2} d ({bias:+.2}) | {line:.2} d | {:+.1} % | {model:.2} d | {} / {} | {} |\n",
            hr.len(),
            (fc / line - 1.0) * 100.0,
            cov("purifier"),
            cov("shower"),
            kinds.join(", ")
        );
    }
    s
}

/// Runs the leave-one-family-out protocol and returns the printed report (selection
/// tables, held-out tables per family and pooled). `progress` gets one line per run.
pub fn heldout(cfg: &HeldOutConfig, mut progress: impl FnMut(&str)) -> Result<String, String> {
    let fams: Vec<CartridgeMix> = cfg
        .families
        .iter()
        .map(|f| CartridgeMix::parse(f).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut seeds: Vec<u64> = cfg.selection_seeds.clone();
    seeds.extend(&cfg.heldout_seeds);
    let mut runs: Runs = HashMap::new();
    for (fi, mix) in fams.iter().enumerate() {
        for &seed in &seeds {
            let mut c = cfg.base.clone();
            c.seed = seed;
            c.cartridges = *mix;
            c.interval_scales = Some([1.0; 4]);
            let world = simulate(&c)?;
            for (gi, (_, overrides)) in cfg.grid.iter().enumerate() {
                let mut cg = c.clone();
                cg.overrides.extend(overrides.iter().cloned());
                let report = evaluate(&cg, &world)?;
                runs.insert((fi, seed, gi), report.rows);
            }
            progress(&format!(
                "family {} seed {seed}: {} configurations evaluated",
                cfg.families[fi],
                cfg.grid.len()
            ));
        }
    }
    let horizons: Vec<i64> = cfg
        .base
        .horizons
        .iter()
        .copied()
        .filter(|h| [30, 14, 7].contains(h))
        .collect();
    let level = cfg
        .base
        .overrides
        .iter()
        .find(|(k, _)| k == "interval")
        .map_or(0.8, |(_, v)| *v);
    let pick = |exclude: Option<usize>, seeds: &[u64]| -> (usize, [f64; 4], f64) {
        let mut best = (0, f64::INFINITY);
        for gi in 0..cfg.grid.len() {
            let rows: Vec<&QueryRow> = runs
                .iter()
                .filter(|((f, s, g), _)| Some(*f) != exclude && seeds.contains(s) && *g == gi)
                .flat_map(|(_, v)| v.iter())
                .collect();
            let o = objective(&rows, &horizons);
            if o < best.1 {
                best = (gi, o);
            }
        }
        let rows: Vec<&QueryRow> = runs
            .iter()
            .filter(|((f, s, g), _)| Some(*f) != exclude && seeds.contains(s) && *g == best.0)
            .flat_map(|(_, v)| v.iter())
            .collect();
        (best.0, conformal_scales(&rows, level), best.1)
    };
    let c = &cfg.base;
    let mut out = format!(
        "leave-one-family-out: {} devices, {} days, end_ms {}, faults {}; families {}; selection seeds {:?}, held-out seeds {:?}; {} candidate configurations; objective: mean over 30/14/7 d of forecaster MAE / straight-line MAE; interval scale per kind: split-conformal {:.0} % quantile of the selection queries' scores\n",
        c.devices,
        c.days,
        c.end_ms,
        if c.faults { "default" } else { "none" },
        cfg.families.join(", "),
        cfg.selection_seeds,
        cfg.heldout_seeds,
        cfg.grid.len(),
        level * 100.0
    );
    let mut pooled: Vec<&QueryRow> = Vec::new();
    let mut pooled_cov: Vec<(&QueryRow, [f64; 4], u64)> = Vec::new();
    for (fi, fam) in cfg.families.iter().enumerate() {
        let (gi, scales, obj) = pick(Some(fi), &cfg.selection_seeds);
        let sel: Vec<&QueryRow> = runs
            .iter()
            .filter(|((f, s, g), _)| *f != fi && cfg.selection_seeds.contains(s) && *g == gi)
            .flat_map(|(_, v)| v.iter())
            .collect();
        let held: Vec<&QueryRow> = runs
            .iter()
            .filter(|((f, s, g), _)| *f == fi && cfg.heldout_seeds.contains(s) && *g == gi)
            .flat_map(|(_, v)| v.iter())
            .collect();
        // The same seed simulates the same households in every family: a household
        // (seed, device) is one cluster of the pooled table's bootstrap.
        for ((f, seed, g), v) in &runs {
            if *f == fi && cfg.heldout_seeds.contains(seed) && *g == gi {
                for r in v {
                    pooled_cov.push((r, scales, (*seed << 32) | u64::from(r.device)));
                }
            }
        }
        out += &format!(
            "\n### held out: family {fam}\nchosen on the other families (seeds {:?}): {} (objective {obj:.3}); interval scales sediment {:.2}, carbon {:.2}, RO {:.2}, shower {:.2}\n\nselection (other families, selection seeds):\n\n{}\nheld out (family {fam}, seeds {:?}):\n\n{}",
            cfg.selection_seeds,
            cfg.grid[gi].0,
            scales[0],
            scales[1],
            scales[2],
            scales[3],
            summary_table(&sel, &horizons, &scales),
            cfg.heldout_seeds,
            summary_table(&held, &horizons, &scales),
        );
        pooled.extend(held);
    }
    // Pooled held-out table: each query with the scales chosen without its family.
    out += &format!(
        "\n### held out, all families pooled (each family scored with the choice made without it; seeds {:?})\n\nvs line: ± the standard deviation of the pooled ratio over {BOOTSTRAP_RESAMPLES} bootstrap resamples of the households (a household is one device of one seed, whatever its family); oracles (look-ahead, not forecasters): the slot's mean use over the whole run from the query on, and that use at home walked around the household's actual future absences; meter floor: MAE of the date the device's own meter reaches the rating (the error of a forecast that knew the future use exactly, which no forecaster can go below on average), over the queries whose meter reached it before a replacement, a counter reset or the end of the run\n\n",
        cfg.heldout_seeds
    );
    out += &pooled_table(&pooled_cov, &horizons);
    out += "\nevery candidate on every family's selection seeds (objective, lower is better):\n";
    for (gi, (name, _)) in cfg.grid.iter().enumerate() {
        let rows: Vec<&QueryRow> = runs
            .iter()
            .filter(|((_, s, g), _)| cfg.selection_seeds.contains(s) && *g == gi)
            .flat_map(|(_, v)| v.iter())
            .collect();
        out += &format!("- {name}: {:.3}\n", objective(&rows, &horizons));
    }
    let (gi, scales, obj) = pick(None, &cfg.selection_seeds);
    out += &format!(
        "\nchoice on every family's selection seeds (the shipped defaults should follow it): {} (objective {obj:.3}); interval scales sediment {:.2}, carbon {:.2}, RO {:.2}, shower {:.2}\n",
        cfg.grid[gi].0, scales[0], scales[1], scales[2], scales[3]
    );
    let _ = pooled;
    Ok(out)
}

/// Resamples of the pooled table's household bootstrap.
const BOOTSTRAP_RESAMPLES: usize = 1000;

/// Standard deviation of `Σ forecaster / Σ line − 1` over bootstrap resamples of the
/// clusters of `items` (`(cluster, forecaster abs error, line abs error)`): how much
/// the pooled "vs line" figure moves with the households drawn. Deterministic (fixed
/// generator); `NaN` with fewer than two clusters.
fn ratio_bootstrap_sd(items: &[(u64, f64, f64)], resamples: usize) -> f64 {
    let mut sums: HashMap<u64, (f64, f64)> = HashMap::new();
    for &(c, f, l) in items {
        let e = sums.entry(c).or_default();
        e.0 += f;
        e.1 += l;
    }
    let mut clusters: Vec<(u64, (f64, f64))> = sums.into_iter().collect();
    clusters.sort_by_key(|(c, _)| *c);
    let k = clusters.len();
    if k < 2 || resamples < 2 {
        return f64::NAN;
    }
    // xorshift64*: reproducible without a dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut ratios = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let (mut f, mut l) = (0.0, 0.0);
        for _ in 0..k {
            let (_, (cf, cl)) = clusters[(next() % k as u64) as usize];
            f += cf;
            l += cl;
        }
        if l > 0.0 {
            ratios.push(f / l - 1.0);
        }
    }
    let n = ratios.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mean = ratios.iter().sum::<f64>() / n;
    (ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// The pooled held-out table: like [`summary_table`], each query with its own scales
/// (and its household, for the bootstrap of the "vs line" figure).
fn pooled_table(rows: &[(&QueryRow, [f64; 4], u64)], horizons: &[i64]) -> String {
    let mut s = String::from(
        "| horizon | n | forecaster MAE (bias) | straight line MAE | vs line (± bootstrap sd) | oracles vs line: long-run use / and absences | meter floor | 80 % PI coverage: purifier / shower | shower MAE forecaster / line | purifier MAE forecaster / line |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for &h in horizons {
        let hr: Vec<_> = rows
            .iter()
            .filter(|(r, _, _)| r.horizon_days == h)
            .collect();
        if hr.is_empty() {
            continue;
        }
        let n = hr.len() as f64;
        let fc = hr.iter().map(|(r, _, _)| r.forecaster.abs()).sum::<f64>() / n;
        let line = hr.iter().map(|(r, _, _)| r.line.abs()).sum::<f64>() / n;
        let bias = hr.iter().map(|(r, _, _)| r.forecaster).sum::<f64>() / n;
        let items: Vec<(u64, f64, f64)> = hr
            .iter()
            .map(|(r, _, c)| (*c, r.forecaster.abs(), r.line.abs()))
            .collect();
        let sd = ratio_bootstrap_sd(&items, BOOTSTRAP_RESAMPLES);
        let meters: Vec<f64> = hr
            .iter()
            .map(|(r, _, _)| r.meter)
            .filter(|m| m.is_finite())
            .collect();
        let floor = meters.iter().map(|m| m.abs()).sum::<f64>() / meters.len().max(1) as f64;
        let n_floor = meters.len();
        // The oracles against the line, on the queries where they exist.
        let oracle = |f: &dyn Fn(&QueryRow) -> f64| {
            let v: Vec<_> = hr.iter().filter(|(r, _, _)| f(r).is_finite()).collect();
            let o = v.iter().map(|(r, _, _)| f(r).abs()).sum::<f64>();
            let l = v.iter().map(|(r, _, _)| r.line.abs()).sum::<f64>();
            (o / l - 1.0) * 100.0
        };
        let (o_longrun, o_absence) = (oracle(&|r| r.longrun), oracle(&|r| r.absence));
        let per = |m: &str| {
            let v: Vec<_> = hr
                .iter()
                .filter(|(r, _, _)| model_of_kind(r.kind) == m)
                .collect();
            let k = v.len().max(1) as f64;
            let cov = v.iter().filter(|(r, sc, _)| covered(r, sc)).count() as f64 / k;
            let f = v.iter().map(|(r, _, _)| r.forecaster.abs()).sum::<f64>() / k;
            let l = v.iter().map(|(r, _, _)| r.line.abs()).sum::<f64>() / k;
            (cov, f, l, v.len())
        };
        let (pc, pf, pl, pn) = per("purifier");
        let (sc, sf, sl, sn) = per("shower");
        s += &format!(
            "| {h} d | {} | {fc:.2} d ({bias:+.2}) | {line:.2} d | {:+.1} % (± {:.1}) | {o_longrun:+.1} % / {o_absence:+.1} % | {floor:.2} d (n {n_floor}) | {:.1} % (n {pn}) / {:.1} % (n {sn}) | {sf:.2} / {sl:.2} | {pf:.2} / {pl:.2} |\n",
            hr.len(),
            (fc / line - 1.0) * 100.0,
            sd * 100.0,
            pc * 100.0,
            sc * 100.0,
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &'static str, score: f64) -> QueryRow {
        QueryRow {
            device: 0,
            slot: 0,
            kind,
            horizon_days: 30,
            forecaster: 0.0,
            lo: 0.0,
            hi: 0.0,
            line: 0.0,
            meter: f64::NAN,
            rate_l_day: 0.0,
            days_seen: 0,
            score,
            model_weight: 1.0,
            model: 0.0,
            longrun: f64::NAN,
            absence: f64::NAN,
        }
    }

    #[test]
    fn the_bootstrap_sd_is_zero_for_identical_households_and_grows_with_their_spread() {
        // Every household with the same errors: every resample gives the same ratio.
        let same: Vec<(u64, f64, f64)> = (0..40).map(|c| (c, 3.0, 4.0)).collect();
        assert!(ratio_bootstrap_sd(&same, 200).abs() < 1e-12);
        // Households that disagree: the ratio moves with the draw.
        let spread: Vec<(u64, f64, f64)> = (0..40)
            .map(|c| (c, if c % 2 == 0 { 1.0 } else { 5.0 }, 4.0))
            .collect();
        let sd = ratio_bootstrap_sd(&spread, 400);
        // Σf/Σl − 1 over 40 households, each f ∈ {1, 5} with p = ½: sd ≈ 2 / (4 √40) ≈ 0.079.
        assert!(sd > 0.05 && sd < 0.11, "{sd}");
        // Two queries of one household are resampled together (one cluster), so
        // splitting a household's errors into two rows does not change the answer.
        let split: Vec<(u64, f64, f64)> = spread
            .iter()
            .flat_map(|&(c, f, l)| [(c, f / 2.0, l / 2.0), (c, f / 2.0, l / 2.0)])
            .collect();
        assert!((ratio_bootstrap_sd(&split, 400) - sd).abs() < 1e-12);
        assert!(ratio_bootstrap_sd(&same[..1], 200).is_nan());
    }

    #[test]
    fn the_long_run_oracle_counts_the_volume_before_a_counter_reset() {
        let obs = |ts: i64, ml: u64| Obs {
            ts,
            ml,
            repl: 0,
            boot: 1,
            tds_in: 0,
            tds_out: 0,
        };
        let stream = Stream {
            kind: CartridgeKind::Shower,
            rated_l: 1000,
            obs: Vec::new(),
        };
        let rate = 10_000.0 / DAY_MS as f64; // 10 L a day, in ml per ms
        let at = 40 * DAY_MS;
        // 600 L before the counters were lost, 100 L since: 300 L, 30 days, are left.
        let slot = SlotEval {
            key: (0, 0),
            stream: &stream,
            qs: Vec::new(),
            spec: ForecastParams::kind_id(CartridgeKind::Shower),
            cap_ml: 1_000_000.0,
            fleet_ml_per_ms: rate,
            longrun_ml_per_ms: rate,
            home_ml_per_ms: rate,
            anchor: Some(obs(0, 0)),
            last: Some(obs(at, 100_000)),
            offset_ml: 600_000,
            answers: Vec::new(),
            next_query: 0,
            next_obs: 0,
        };
        let params = ForecastParams::standard(ForecastConfig::default()).expect("valid");
        let q = Query {
            at,
            truth: at + 30 * DAY_MS,
            horizon: 0,
        };
        let (_, _, _, line, oracle) = slot.answer(&q, &DeviceForecaster::new(), &params, &[], 3);
        let (plain, absent) = oracle.expect("the oracle answers");
        assert!((plain - q.truth).abs() < 1_000, "{}", plain - q.truth);
        // Away for 5 of those days: the date moves by them.
        let away = [(at + 10 * DAY_MS, at + 15 * DAY_MS)];
        let (_, _, _, _, with_away) = slot.answer(&q, &DeviceForecaster::new(), &params, &away, 3);
        let (_, walked) = with_away.expect("the oracle answers");
        assert_eq!(absent, plain);
        assert!((walked - (q.truth + 5 * DAY_MS)).abs() < 1_000);
        // The straight line sees the same 700 L over 40 days.
        let line = line.expect("the line answers");
        assert!(((line - at) as f64 / DAY_MS as f64 - 300.0 / 17.5).abs() < 1e-3);
    }

    #[test]
    fn the_pooled_table_reports_the_floor_without_extrapolated_meters_and_the_oracles() {
        let mut a = row("shower", 0.5);
        (a.forecaster, a.line, a.meter, a.longrun, a.absence) = (2.0, 4.0, 1.0, 1.0, 0.0);
        let mut b = row("sediment", 0.5);
        (b.forecaster, b.line, b.meter, b.longrun, b.absence) = (-2.0, -4.0, f64::NAN, 3.0, 2.0);
        let scales = [1.0; 4];
        let rows = [(&a, scales, 1), (&b, scales, 2)];
        let t = pooled_table(&rows, &[30]);
        let line = t
            .lines()
            .find(|l| l.starts_with("| 30 d"))
            .expect("a 30 d row");
        // Forecaster 2 against the line's 4: −50 %; the oracles' 4 and 2 against its 8.
        assert!(line.contains("| -50.0 % (±"), "{line}");
        assert!(line.contains("| -50.0 % / -75.0 % |"), "{line}");
        // The extrapolated meter date is left out of the floor.
        assert!(line.contains("| 1.00 d (n 1) |"), "{line}");
    }

    #[test]
    fn conformal_scales_cover_the_level_per_kind() {
        // Shower scores 0.1, 0.2, ..., 1.9 (19); sediment all 3.0; no carbon or RO.
        let mut rows: Vec<QueryRow> = (1..20)
            .map(|i| row("shower", f64::from(i) / 10.0))
            .collect();
        rows.extend((0..5).map(|_| row("sediment", 3.0)));
        let refs: Vec<&QueryRow> = rows.iter().collect();
        let s = conformal_scales(&refs, 0.8);
        // Rank ⌈20 × 0.8⌉ = 16 of 19 → 1.6.
        assert!(
            (s[CartridgeKind::Shower.index()] - 1.6).abs() < 1e-9,
            "{s:?}"
        );
        assert_eq!(s[CartridgeKind::Sediment.index()], 3.0);
        assert_eq!(s[CartridgeKind::Carbon.index()], 1.0);
        let cov = refs
            .iter()
            .filter(|r| r.kind == "shower" && covered(r, &s))
            .count();
        assert_eq!(cov, 16);
    }
}
