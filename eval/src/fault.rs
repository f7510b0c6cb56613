//! Evaluation harness of the fault rules ([`analytics::rules`]) against the fleet
//! simulator's ground truth, run by `eval fault` and its integration
//! test, on the plain world or on world variants (`--variants`), and with
//! leave-one-family-out selection ([`lofo`]).
//!
//! Every device's messages are fed to its [`DeviceRules`] in publish order, and
//! [`DeviceRules::on_clock`] runs for every device at a steady cadence of simulated
//! time. Each `Active` finding is an *episode*, matched against the truth windows of
//! its kind on the same device:
//!
//! | finding | truth (recall and precision) | also excused (precision only) |
//! |---|---|---|
//! | `leak` | `leak` | |
//! | `long_wash` | `valve_stuck` | |
//! | `leak` | | `valve_stuck` (a valve stuck open is water flowing outside any session) |
//! | `heater_fault` | `heater_failure` | |
//! | `sensor_fault` | `sensor_dropout`; `sensor_drift` of showers | `sensor_drift` of toilets and purifiers (not detectable: the thermostat regulates the drifted reading; RO wear looks alike) |
//! | `inlet_clog` | `inlet_clog` | |
//! | `low_inlet_pressure` | `low_pressure` | |
//! | `unused_7_days` | `unused`; `away` periods of 7 days or more | shorter `away` periods, up to 2 days after (a 6-day trip and a day or two without a shower make a real 7-day disuse) |
//! | `device_silent` | `offline` | |
//! | `abnormal_usage:water` | `high_usage` | `leak`, `valve_stuck` |
//! | `abnormal_usage:energy` | (none injected) | `high_usage`, `valve_stuck` (more heated water), `heater_failure` (the heater runs flat out before the device gives up) |
//! | `main_board_fault` | `main_board` | |
//!
//! A household away for 7 days or more leaves its fixtures unused just as much as an
//! injected `unused` fault does (stagnant water, a dry trap), so the reminder is due
//! and such an away period counts as an `unused_7_days` truth; shorter ones are normal.
//!
//! Episodes are timed on true time, the arrival of the message (or the clock call) that
//! raised them, not on the finding's device time: a device clock may be hours off
//! (the `clock_offset` variant). An episode is a true positive when it is raised within
//! `[start − 1 h, end + 1 day]` of such a window (end = the simulation's end while the
//! fault lasts), else a false positive, unless it falls in an excused window. A truth
//! window is detected when an episode matches it; its time to detect is the first
//! matching episode's `at_ts_ms − start`. Windows that start too close to the end of
//! the simulation to be detectable at all (7 days for disuse, 10 for a clog, 15 for a
//! drift, 1 for the rest), or too close to its start for a baseline to exist
//! (`usage_min_days` + 2 days of daily totals for abnormal usage), are left out of
//! recall, as are `high_usage` windows overlapping an `away` period (guests in an empty
//! home: the simulator skips every use) and `main_board` windows without a usage
//! session (the firmware finds failing storage only when it saves, after a session).
//! On firmware that raises no fault codes (the `silent_firmware` variant), faults only
//! the device can see (`sensor_dropout`, `main_board`) are left out of recall too; false
//! findings there still count. A failed or wearing heater is not among them: the
//! analytics judge it from `water_temp_c` and `heater_wh`; nor is a stuck valve: its
//! water runs on in the counter after the wash (`analytics::rules::valve`).
//! An episode still active when a window starts (a disuse that began while
//! the household was away and went on as an injected `unused`) detects it at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use analytics::rules::{DeviceRules, FindingKind, FindingState, Resource, RulesConfig};
use protocol::message::{Event, EventKind, Model, Telemetry};
use simulator::fleet::Variants;
use simulator::{faults::FaultMix, FaultKind, Fleet, FleetConfig, Truth};

use protocol::catalog::{DAY_MS, HOUR_MS};

/// What to simulate and evaluate.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Devices in the fleet (a third each toilets, purifiers, showers).
    pub devices: u32,
    /// Simulated days.
    pub days: u32,
    /// Seed.
    pub seed: u64,
    /// End of the simulated span, UTC ms (fixed for reproducibility).
    pub end_ms: i64,
    /// Cadence of [`DeviceRules::on_clock`], simulated ms.
    pub clock_every_ms: i64,
    /// Injected faults.
    pub mix: FaultMix,
    /// World variants (firmware, clocks, households, leak shapes).
    pub variants: Variants,
    /// The rules' thresholds.
    pub rules: RulesConfig,
    /// Device whose truth and findings are printed through `progress` (for tuning).
    pub trace: Option<u32>,
    /// File to write the abnormal-water diagnostics to (for tuning): every device's
    /// daily water totals, the truth, the water episodes and the water truth windows,
    /// as CSV-like lines (see [`run`]). Also set by the `FAULT_EVAL_WATER_DUMP` variable.
    pub water_dump: Option<String>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            devices: 1000,
            days: 90,
            seed: 7,
            end_ms: 1_764_000_000_000,
            clock_every_ms: 5 * 60_000,
            mix: FaultMix::default_mix(),
            variants: Variants::default(),
            rules: RulesConfig::default(),
            trace: None,
            water_dump: std::env::var("FAULT_EVAL_WATER_DUMP").ok(),
        }
    }
}

/// Scores of one finding kind.
#[derive(Debug, Clone, Default)]
pub struct KindScore {
    /// Truth windows that count for recall.
    pub truths: usize,
    /// Of those, detected.
    pub detected: usize,
    /// Times to detect of the detected ones, ms.
    pub ttd_ms: Vec<i64>,
    /// Active findings (episodes).
    pub episodes: usize,
    /// Episodes matching a truth window.
    pub true_positives: usize,
    /// Episodes in an excused window.
    pub excused: usize,
    /// Episodes matching nothing.
    pub false_positives: usize,
    /// A few false positives, for a look: (device, raised at, evidence).
    pub false_examples: Vec<(String, i64, String)>,
    /// A few missed truth windows: (device, start, end).
    pub missed_examples: Vec<(String, i64, i64)>,
}

impl KindScore {
    /// Precision over the episodes not excused (1 when there are none).
    pub fn precision(&self) -> f64 {
        let judged = self.true_positives + self.false_positives;
        if judged == 0 {
            1.0
        } else {
            self.true_positives as f64 / judged as f64
        }
    }

    /// Recall (1 when there is no truth).
    pub fn recall(&self) -> f64 {
        if self.truths == 0 {
            1.0
        } else {
            self.detected as f64 / self.truths as f64
        }
    }

    /// Median time to detect, hours.
    pub fn median_ttd_h(&self) -> Option<f64> {
        let mut v = self.ttd_ms.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        Some(v[v.len() / 2] as f64 / HOUR_MS as f64)
    }
}

/// The whole evaluation.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per finding key (`leak`, `abnormal_usage:water`, ...).
    pub kinds: BTreeMap<String, KindScore>,
    /// Messages fed to the rules.
    pub messages: u64,
    /// Clock calls.
    pub clock_calls: u64,
    /// Time spent inside the rules on messages (not parsing, not the simulator).
    pub rules_time: Duration,
    /// Time spent inside the rules on the clock.
    pub clock_time: Duration,
    /// Findings of every state.
    pub findings: u64,
    /// Cleared findings.
    pub cleared: u64,
    /// Bytes of state per device.
    pub state_bytes: usize,
    /// Devices × simulated days.
    pub device_days: f64,
}

/// The key of a finding kind in the report.
pub fn key_of(kind: &FindingKind) -> String {
    match kind {
        FindingKind::AbnormalUsage {
            resource: Resource::Water,
        } => "abnormal_usage:water".into(),
        FindingKind::AbnormalUsage {
            resource: Resource::Energy,
        } => "abnormal_usage:energy".into(),
        other => other.as_str().into(),
    }
}

/// Finding keys a truth fault counts for, and keys it only excuses.
fn truth_keys(kind: FaultKind, model: Model) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        FaultKind::Leak => (&["leak"], &["abnormal_usage:water"]),
        // A wash valve stuck open is water flowing outside any session: a leak too.
        FaultKind::ValveStuck => (
            &["long_wash"],
            &["abnormal_usage:water", "abnormal_usage:energy", "leak"],
        ),
        FaultKind::HeaterFailure => (&["heater_fault"], &["abnormal_usage:energy"]),
        FaultKind::InletClog => (&["inlet_clog"], &[]),
        FaultKind::SensorDropout => (&["sensor_fault"], &[]),
        FaultKind::SensorDrift if model == Model::Shower => (&["sensor_fault"], &[]),
        FaultKind::SensorDrift => (&[], &["sensor_fault"]),
        FaultKind::Unused => (&["unused_7_days"], &[]),
        FaultKind::Offline => (&["device_silent"], &[]),
        FaultKind::LowPressure => (&["low_inlet_pressure"], &[]),
        FaultKind::HighUsage => (&["abnormal_usage:water"], &["abnormal_usage:energy"]),
        FaultKind::MainBoard => (&["main_board_fault"], &[]),
    }
}

/// Shortest time after its start at which a window can be detected at all.
fn detectable_after(key: &str) -> i64 {
    match key {
        "unused_7_days" => 7 * DAY_MS,
        "inlet_clog" => 10 * DAY_MS,
        "sensor_fault_drift" => 15 * DAY_MS,
        _ => DAY_MS,
    }
}

/// History a rule needs from the start of the simulation before it can judge.
fn needs_history(key: &str, rules: &RulesConfig) -> i64 {
    match key {
        // The first (partial) day, then the daily totals of the baseline.
        "abnormal_usage:water" | "abnormal_usage:energy" => {
            (i64::from(rules.usage_min_days) + 2) * DAY_MS
        }
        _ => 0,
    }
}

struct Window {
    device: u32,
    key: &'static str,
    start: i64,
    end: i64,
    counts: bool,
    censored: bool,
    /// How long after `end` a finding still belongs to the window.
    slack_after: i64,
}

struct Episode {
    device: u32,
    key: String,
    at: i64,
    /// When it was cleared (`None`: still active at the end).
    cleared: Option<i64>,
    evidence: String,
}

fn device_index(id: &str) -> Option<u32> {
    id.rsplit('-').next()?.parse().ok()
}

/// Runs the simulation, the rules and the scoring; `progress` gets one line a day.
pub fn run(cfg: &EvalConfig, progress: impl FnMut(&str)) -> Result<Report, String> {
    run_configs(cfg, std::slice::from_ref(&cfg.rules), progress)?
        .pop()
        .ok_or_else(|| "no report".to_string())
}

/// Runs the simulation once and every rule configuration of `configs` on it (side by
/// side, each device's messages to each configuration's rules), with one report per
/// configuration. Tracing and the water dump follow the first configuration.
pub fn run_configs(
    cfg: &EvalConfig,
    configs: &[RulesConfig],
    mut progress: impl FnMut(&str),
) -> Result<Vec<Report>, String> {
    let first_rules = configs.first().ok_or("no rule configuration")?;
    let mut fleet = Fleet::with_variants(
        FleetConfig {
            devices: cfg.devices,
            days: cfg.days,
            end_ms: cfg.end_ms,
            seed: cfg.seed,
            telemetry_every_min: 15,
            mix: cfg.mix.clone(),
            inject: Vec::new(),
        },
        &cfg.variants,
    )
    .map_err(|e| e.to_string())?;
    let sim_end = fleet.end_ms();
    let sim_start = fleet.start_ms();
    let total_days = fleet.total_days();
    let mut rules: Vec<Vec<DeviceRules>> = configs
        .iter()
        .map(|rc| {
            (0..cfg.devices)
                .map(|i| DeviceRules::new(simulator::fleet::model_of(i), rc))
                .collect()
        })
        .collect();
    let mut reports: Vec<Report> = vec![Report::default(); configs.len()];
    let mut episodes: Vec<Vec<Episode>> = (0..configs.len()).map(|_| Vec::new()).collect();
    let mut out = Vec::new();
    let mut next_clock = fleet.start_ms() + cfg.clock_every_ms;
    let mut day = 0;
    enum Parsed {
        Telemetry(Telemetry),
        Event(Event),
    }
    let trace = cfg.trace;
    let mut traced = Vec::new();
    let mut trace_days: Vec<(i64, u64, u64)> = Vec::new();
    // End of every usage session, per device (a main-board fault is only noticed at a save,
    // and the firmware saves after a session).
    let mut sessions_at: Vec<Vec<i64>> = vec![Vec::new(); cfg.devices as usize];
    // Daily water totals per device (for `water_dump`): the last counter, and day → ml.
    let dump_water = cfg.water_dump.is_some();
    let mut water_last: Vec<Option<u64>> = vec![None; cfg.devices as usize];
    // Day → (ml, telemetry intervals with water, telemetry intervals in which a usage
    // session ended), and whether a session ended since the device's last telemetry.
    let mut water_days: Vec<BTreeMap<i64, (u64, u32, u32)>> =
        vec![BTreeMap::new(); cfg.devices as usize];
    let mut session_since: Vec<bool> = vec![false; cfg.devices as usize];
    let mut collect = |c: usize,
                       device: u32,
                       out: &mut Vec<analytics::rules::Finding>,
                       report: &mut Report,
                       true_now: i64| {
        let episodes = &mut episodes[c];
        for f in out.drain(..) {
            if c == 0 && trace == Some(device) {
                traced.push(serde_json::to_string(&f).unwrap_or_default());
            }
            report.findings += 1;
            let key = key_of(&f.kind);
            if f.state == FindingState::Cleared {
                report.cleared += 1;
                if let Some(open) = episodes
                    .iter_mut()
                    .rev()
                    .find(|e| e.device == device && e.key == key && e.cleared.is_none())
                {
                    open.cleared = Some(true_now);
                }
                continue;
            }
            // Scored on true time (the truth's): a device clock may be hours off,
            // and the finding's own times are the device's.
            episodes.push(Episode {
                device,
                key,
                at: true_now,
                cleared: None,
                evidence: f.evidence.to_string(),
            });
        }
    };
    while let Some(batch) = fleet.next_batch() {
        day += 1;
        let mut parsed = Vec::with_capacity(batch.len());
        for m in &batch {
            let p = if m.topic.ends_with("/telemetry") {
                Parsed::Telemetry(
                    serde_json::from_slice(&m.payload)
                        .map_err(|e| format!("bad telemetry on {}: {e}", m.topic))?,
                )
            } else if m.topic.ends_with("/event") {
                Parsed::Event(
                    serde_json::from_slice(&m.payload)
                        .map_err(|e| format!("bad event on {}: {e}", m.topic))?,
                )
            } else {
                continue;
            };
            parsed.push((m.at_ms, m.device, p));
        }
        for (at_ms, device, p) in &parsed {
            while next_clock <= *at_ms {
                for (c, (rc, report)) in configs.iter().zip(reports.iter_mut()).enumerate() {
                    let t0 = Instant::now();
                    for (i, r) in rules[c].iter_mut().enumerate() {
                        r.on_clock(rc, next_clock, &mut out);
                        if !out.is_empty() {
                            collect(c, i as u32, &mut out, report, next_clock);
                        }
                    }
                    report.clock_time += t0.elapsed();
                    report.clock_calls += u64::from(cfg.devices);
                }
                next_clock += cfg.clock_every_ms;
            }
            if trace == Some(*device) {
                if let Parsed::Telemetry(t) = p {
                    let water = match &t.reading {
                        protocol::message::Reading::Toilet(r) => r.water_ml,
                        protocol::message::Reading::Purifier(r) => r.dispensed_ml,
                        protocol::message::Reading::Shower(r) => r.water_ml,
                    };
                    let day = t.ts.div_euclid(DAY_MS);
                    match trace_days.last_mut() {
                        Some((d, _, last)) if *d == day => *last = water,
                        _ => {
                            trace_days.push((day, trace_days.last().map_or(water, |x| x.2), water))
                        }
                    }
                }
            }
            if let (true, Parsed::Telemetry(t)) = (dump_water, p) {
                let water = match &t.reading {
                    protocol::message::Reading::Toilet(r) => r.water_ml,
                    protocol::message::Reading::Purifier(r) => r.dispensed_ml,
                    protocol::message::Reading::Shower(r) => r.water_ml,
                };
                let last = water_last[*device as usize].replace(water);
                let used = std::mem::take(&mut session_since[*device as usize]);
                if let Some(prev) = last.filter(|&prev| water >= prev) {
                    let day = water_days[*device as usize]
                        .entry(t.ts.div_euclid(DAY_MS))
                        .or_default();
                    day.0 += water - prev;
                    day.1 += u32::from(water > prev);
                    day.2 += u32::from(used);
                }
            }
            if let Parsed::Event(Event {
                event: EventKind::Session(_),
                ts,
                ..
            }) = p
            {
                sessions_at[*device as usize].push(*ts);
                session_since[*device as usize] = true;
            }
            for (c, (rc, report)) in configs.iter().zip(reports.iter_mut()).enumerate() {
                let r = &mut rules[c][*device as usize];
                let t0 = Instant::now();
                match p {
                    Parsed::Telemetry(t) => r.on_telemetry(rc, t, &mut out),
                    Parsed::Event(e) => r.on_event(rc, e, &mut out),
                }
                report.rules_time += t0.elapsed();
                report.messages += 1;
                if !out.is_empty() {
                    collect(c, *device, &mut out, report, *at_ms);
                }
            }
        }
        progress(&format!(
            "day {day}/{total_days}: {} messages, {} findings",
            reports[0].messages, reports[0].findings
        ));
    }
    while next_clock < sim_end {
        for (c, (rc, report)) in configs.iter().zip(reports.iter_mut()).enumerate() {
            for (i, r) in rules[c].iter_mut().enumerate() {
                r.on_clock(rc, next_clock, &mut out);
                if !out.is_empty() {
                    collect(c, i as u32, &mut out, report, next_clock);
                }
            }
        }
        next_clock += cfg.clock_every_ms;
    }
    for (report, rs) in reports.iter_mut().zip(&rules) {
        report.state_bytes = rs.iter().map(DeviceRules::state_bytes).max().unwrap_or(0);
    }

    if let Some(idx) = trace {
        let id = simulator::fleet::device_id(idx);
        for t in fleet.truth().iter().filter(|t| t.device() == id) {
            progress(&format!(
                "truth {}",
                serde_json::to_string(t).unwrap_or_default()
            ));
        }
        for f in &traced {
            progress(&format!("finding {f}"));
        }
        for (day, first, last) in &trace_days {
            progress(&format!("day {} water {} ml", day * DAY_MS, last - first));
        }
    }

    // Truth windows.
    let truth = fleet.truth();
    let away_overlaps = |device: &str, start: i64, end: i64| {
        truth.iter().any(|t| {
            matches!(t, Truth::Away { device: d, start_ms, end_ms }
                if d == device && *start_ms < end && *end_ms > start)
        })
    };
    let silent_firmware: std::collections::BTreeSet<String> = truth
        .iter()
        .filter_map(|t| match t {
            Truth::Variant {
                device, variant, ..
            } if variant == "silent_firmware" => Some(device.clone()),
            _ => None,
        })
        .collect();
    let mut windows = Vec::new();
    for t in truth.iter().cloned() {
        match t {
            Truth::Fault {
                device,
                model,
                kind,
                start_ms,
                end_ms,
                ..
            } => {
                let idx =
                    device_index(&device).ok_or_else(|| format!("bad device id {device:?}"))?;
                let (counts, excuses) = truth_keys(kind, model);
                let end = end_ms.unwrap_or(sim_end);
                for (keys, count) in [(counts, true), (excuses, false)] {
                    for key in keys {
                        let horizon = if kind == FaultKind::SensorDrift {
                            detectable_after("sensor_fault_drift")
                        } else {
                            detectable_after(key)
                        };
                        let learning = needs_history(key, first_rules);
                        // Guests in an empty home use nothing, and a main board that is never
                        // asked to save never notices: no effect to detect.
                        // Firmware that raises no codes hides what only the device sees
                        // (its storage, a sensor that stops answering): recall is not
                        // asked there, precision still is. The heater is judged from its
                        // temperature and energy (`analytics::rules::heater`), a stuck
                        // valve from the water running on (`analytics::rules::valve`).
                        let silent_fw = silent_firmware.contains(&device)
                            && matches!(kind, FaultKind::SensorDropout | FaultKind::MainBoard);
                        let no_effect = silent_fw
                            || match kind {
                                FaultKind::HighUsage => away_overlaps(&device, start_ms, end),
                                FaultKind::MainBoard => !sessions_at[idx as usize]
                                    .iter()
                                    .any(|&t| t >= start_ms && t < end),
                                _ => false,
                            };
                        windows.push(Window {
                            device: idx,
                            key,
                            start: start_ms,
                            end,
                            counts: count,
                            censored: start_ms + horizon > sim_end
                                || start_ms < sim_start + learning
                                || no_effect,
                            slack_after: DAY_MS,
                        });
                    }
                }
            }
            Truth::Away {
                device,
                start_ms,
                end_ms,
            } => {
                let idx =
                    device_index(&device).ok_or_else(|| format!("bad device id {device:?}"))?;
                let long = end_ms - start_ms >= 7 * DAY_MS;
                windows.push(Window {
                    device: idx,
                    key: "unused_7_days",
                    start: start_ms,
                    end: end_ms.min(sim_end),
                    counts: long,
                    censored: start_ms + 7 * DAY_MS > sim_end,
                    slack_after: if long { DAY_MS } else { 2 * DAY_MS },
                });
            }
            _ => {}
        }
    }

    // Scoring: an episode raised in the window (or just after), or one still active
    // when the window starts (back-to-back conditions), matches it.
    let matches = |w: &Window, e: &Episode| {
        w.device == e.device
            && w.key == e.key
            && ((e.at >= w.start - HOUR_MS && e.at <= w.end + w.slack_after)
                || (e.at < w.start && e.cleared.is_none_or(|c| c > w.start)))
    };
    for key in [
        "leak",
        "long_wash",
        "heater_fault",
        "main_board_fault",
        "sensor_fault",
        "inlet_clog",
        "low_inlet_pressure",
        "unused_7_days",
        "device_silent",
        "abnormal_usage:water",
        "abnormal_usage:energy",
    ] {
        for report in reports.iter_mut() {
            report.kinds.entry(key.to_string()).or_default();
        }
    }
    for (report, episodes) in reports.iter_mut().zip(&episodes) {
        report.device_days = f64::from(cfg.devices) * (sim_end - sim_start) as f64 / DAY_MS as f64;
        for e in episodes {
            let score = report.kinds.entry(e.key.clone()).or_default();
            score.episodes += 1;
            if windows.iter().any(|w| w.counts && matches(w, e)) {
                score.true_positives += 1;
            } else if windows.iter().any(|w| !w.counts && matches(w, e)) {
                score.excused += 1;
            } else {
                score.false_positives += 1;
                if score.false_examples.len() < 5 {
                    score.false_examples.push((
                        simulator::fleet::device_id(e.device),
                        e.at,
                        e.evidence.clone(),
                    ));
                }
            }
        }
        for w in windows.iter().filter(|w| w.counts && !w.censored) {
            let score = report.kinds.entry(w.key.to_string()).or_default();
            score.truths += 1;
            let first = episodes
                .iter()
                .filter(|e| matches(w, e))
                .map(|e| e.at)
                .min();
            if let Some(at) = first {
                score.detected += 1;
                score.ttd_ms.push((at - w.start).max(0));
            } else if score.missed_examples.len() < 5 {
                score
                    .missed_examples
                    .push((simulator::fleet::device_id(w.device), w.start, w.end));
            }
        }
    }
    if let Some(path) = &cfg.water_dump {
        let episodes = &episodes[0];
        use std::fmt::Write as _;
        let key = "abnormal_usage:water";
        let mut text = String::new();
        for (device, days) in water_days.iter().enumerate() {
            let model = format!("{:?}", simulator::fleet::model_of(device as u32));
            for (day, (ml, wet, used)) in days {
                let _ = writeln!(text, "D,{device},{model},{day},{ml},{wet},{used}");
            }
        }
        for t in truth.iter() {
            let _ = writeln!(text, "T,{}", serde_json::to_string(t).unwrap_or_default());
        }
        for e in episodes.iter().filter(|e| e.key == key) {
            let class = if windows.iter().any(|w| w.counts && matches(w, e)) {
                "tp"
            } else if windows.iter().any(|w| !w.counts && matches(w, e)) {
                "excused"
            } else {
                "fp"
            };
            let cleared = e.cleared.unwrap_or(-1);
            let _ = writeln!(
                text,
                "E,{},{},{cleared},{class},{}",
                e.device, e.at, e.evidence
            );
        }
        for w in windows.iter().filter(|w| w.key == key && w.counts) {
            let detected = episodes.iter().any(|e| matches(w, e));
            let _ = writeln!(
                text,
                "W,{},{},{},{},{detected}",
                w.device, w.start, w.end, w.censored
            );
        }
        std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(reports)
}

/// The report as a table.
pub fn format_report(cfg: &EvalConfig, r: &Report) -> String {
    let mut s = format!(
        "eval fault: {} devices, {} days, seed {}, clock every {} s\n\n",
        cfg.devices,
        cfg.days,
        cfg.seed,
        cfg.clock_every_ms / 1000
    );
    s += &format!(
        "{:<24} {:>6} {:>6} {:>7} {:>8} {:>5} {:>5} {:>7} {:>9} {:>10}\n",
        "finding",
        "truth",
        "found",
        "recall",
        "episodes",
        "tp",
        "fp",
        "excused",
        "precision",
        "median TTD"
    );
    for (key, k) in &r.kinds {
        let ttd = k
            .median_ttd_h()
            .map_or("-".to_string(), |h| format!("{h:.1} h"));
        s += &format!(
            "{:<24} {:>6} {:>6} {:>7.3} {:>8} {:>5} {:>5} {:>7} {:>9.3} {:>10}\n",
            key,
            k.truths,
            k.detected,
            k.recall(),
            k.episodes,
            k.true_positives,
            k.false_positives,
            k.excused,
            k.precision(),
            ttd
        );
    }
    let per_msg = r.rules_time.as_nanos() as f64 / r.messages.max(1) as f64;
    let per_clock = r.clock_time.as_nanos() as f64 / r.clock_calls.max(1) as f64;
    s += &format!(
        "\n{} messages, {:.0} ns/message in the rules (with timer overhead); {} clock calls, {:.0} ns each; {} findings ({} cleared); at most {} bytes of state per device\n",
        r.messages, per_msg, r.clock_calls, per_clock, r.findings, r.cleared, r.state_bytes
    );
    let mut first = true;
    for (key, k) in &r.kinds {
        for (dev, start, end) in &k.missed_examples {
            if first {
                s += "\nmissed (first few per kind):\n";
                first = false;
            }
            s += &format!("  {key} {dev} [{start}, {end})\n");
        }
    }
    let mut first = true;
    for (key, k) in &r.kinds {
        for (dev, at, ev) in &k.false_examples {
            if first {
                s += "\nfalse positives (first few per kind):\n";
                first = false;
            }
            s += &format!("  {key} {dev} at {at}: {ev}\n");
        }
    }
    s
}

/// The rule configurations `eval fault --lofo` chooses among: the leak's unexplained
/// flow threshold, the drift threshold, and whether abnormal water use is also judged
/// within a day (`one_day_k` 6 or only the two-day test), around `base` (few
/// parameters, coarse steps).
pub fn candidates(base: &RulesConfig) -> Vec<(String, RulesConfig)> {
    let mut v = Vec::new();
    for leak in [2.0f32, 3.5] {
        for drift in [0.8f32, 1.2] {
            for one_day in [base.usage_water.one_day_k, Some(ONE_DAY_K)] {
                if one_day == Some(ONE_DAY_K) && base.usage_water.one_day_k == one_day {
                    continue; // the base already judges within a day: one candidate
                }
                let mut c = base.clone();
                c.leak_min_ml_per_min = leak;
                c.drift_min_c = drift;
                c.usage_water.one_day_k = one_day;
                let day = one_day.map_or("two-day use".to_string(), |k| {
                    format!("use within a day k={k}")
                });
                v.push((format!("leak>={leak} ml/min, drift>{drift} °C, {day}"), c));
            }
        }
    }
    v
}

/// The within-a-day abnormal-use margin [`candidates`] offers (robust σ).
pub const ONE_DAY_K: f32 = 6.0;

/// Kinds whose analytic findings open a maintenance ticket (the rest are reminders).
pub const TICKET_KINDS: [&str; 8] = [
    "leak",
    "long_wash",
    "heater_fault",
    "main_board_fault",
    "sensor_fault",
    "inlet_clog",
    "low_inlet_pressure",
    "device_silent",
];

/// Sums the scores of several reports (counts add up, times to detect are pooled).
pub fn merge(reports: &[&Report]) -> Report {
    let mut m = Report::default();
    for r in reports {
        m.messages += r.messages;
        m.device_days += r.device_days;
        m.state_bytes = m.state_bytes.max(r.state_bytes);
        m.findings += r.findings;
        m.cleared += r.cleared;
        for (key, k) in &r.kinds {
            let s = m.kinds.entry(key.clone()).or_default();
            s.truths += k.truths;
            s.detected += k.detected;
            s.ttd_ms.extend(&k.ttd_ms);
            s.episodes += k.episodes;
            s.true_positives += k.true_positives;
            s.excused += k.excused;
            s.false_positives += k.false_positives;
        }
    }
    m
}

/// How good a report is for selection: the sum over kinds of F0.5 (precision weighs
/// twice recall: a false ticket sends a technician).
pub fn objective(r: &Report) -> f64 {
    r.kinds
        .values()
        .map(|k| {
            let (p, rc) = (k.precision(), k.recall());
            if p + rc == 0.0 {
                0.0
            } else {
                1.25 * p * rc / (0.25 * p + rc)
            }
        })
        .sum()
}

/// One table of pooled scores, with false findings per 1 000 device-days.
pub fn format_table(title: &str, r: &Report) -> String {
    let mut s = format!(
        "{title}
"
    );
    s += &format!(
        "{:<24} {:>6} {:>6} {:>7} {:>8} {:>5} {:>5} {:>7} {:>9} {:>12} {:>10}
",
        "finding",
        "truth",
        "found",
        "recall",
        "episodes",
        "tp",
        "fp",
        "excused",
        "precision",
        "fp/1000 d-d",
        "median TTD"
    );
    let per_kdd = |fp: usize| fp as f64 * 1000.0 / r.device_days.max(1.0);
    let mut ticket_fp = 0;
    for (key, k) in &r.kinds {
        if TICKET_KINDS.contains(&key.as_str()) {
            ticket_fp += k.false_positives;
        }
        let ttd = k
            .median_ttd_h()
            .map_or("-".to_string(), |h| format!("{h:.1} h"));
        s += &format!(
            "{:<24} {:>6} {:>6} {:>7.3} {:>8} {:>5} {:>5} {:>7} {:>9.3} {:>12.3} {:>10}\n",
            key,
            k.truths,
            k.detected,
            k.recall(),
            k.episodes,
            k.true_positives,
            k.false_positives,
            k.excused,
            k.precision(),
            per_kdd(k.false_positives),
            ttd
        );
    }
    s += &format!(
        "false tickets (ticket-opening kinds): {ticket_fp} in {:.0} device-days = {:.3} per 1 000 device-days\n",
        r.device_days,
        per_kdd(ticket_fp)
    );
    s
}

/// Leave-one-family-out: every variant family is simulated on its own world (the
/// fault mix of `cfg` plus that family at probability 0.5, or `cfg.variants`' own
/// probability when it names the family), with seed `cfg.seed` for selection and
/// `cfg.seed + 1` held out. For each family, the [`candidates`] configuration with the
/// best [`objective`] on the *other* families' selection runs is chosen and scored on
/// that family's held-out run. Returns the selection table (in-sample: the chosen
/// configurations on the families they were chosen on) and the held-out table (pooled
/// over families), and which configuration each family got.
pub fn lofo(cfg: &EvalConfig, mut progress: impl FnMut(&str)) -> Result<String, String> {
    use simulator::fleet::VariantFamily;
    let cands = candidates(&cfg.rules);
    let configs: Vec<RulesConfig> = cands.iter().map(|c| c.1.clone()).collect();
    let families = VariantFamily::ALL;
    let mut select: Vec<Vec<Report>> = Vec::new();
    let mut held: Vec<Vec<Report>> = Vec::new();
    for f in families {
        let mut variants = Variants::default();
        variants
            .0
            .insert(f, cfg.variants.0.get(&f).copied().unwrap_or(0.5));
        for (seed, into) in [(cfg.seed, &mut select), (cfg.seed + 1, &mut held)] {
            let run_cfg = EvalConfig {
                seed,
                variants: variants.clone(),
                trace: None,
                water_dump: None,
                ..cfg.clone()
            };
            progress(&format!("family {} seed {seed}", f.as_str()));
            into.push(run_configs(&run_cfg, &configs, |_| {})?);
        }
    }
    let mut chosen = Vec::new();
    let mut in_sample: Vec<&Report> = Vec::new();
    let mut out_sample: Vec<&Report> = Vec::new();
    let mut lines = String::new();
    for (fi, f) in families.iter().enumerate() {
        let best = (0..configs.len())
            .map(|c| {
                let others: Vec<&Report> = (0..families.len())
                    .filter(|&g| g != fi)
                    .map(|g| &select[g][c])
                    .collect();
                (c, objective(&merge(&others)))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(c, _)| c);
        chosen.push(best);
        for g in (0..families.len()).filter(|&g| g != fi) {
            in_sample.push(&select[g][best]);
        }
        out_sample.push(&held[fi][best]);
        let h = merge(&[&held[fi][best]]);
        lines += &format!(
            "  held out {:<16} chose [{}]; held-out objective {:.2}\n",
            f.as_str(),
            cands[best].0,
            objective(&h)
        );
    }
    let mut s = format!(
        "eval fault --lofo: {} devices, {} days per run; selection seed {}, held-out seed {}; {} candidate configurations; families: {}\n\n",
        cfg.devices,
        cfg.days,
        cfg.seed,
        cfg.seed + 1,
        configs.len(),
        families.map(|f| f.as_str()).join(", ")
    );
    s += &lines;
    s += "\n";
    s += &format_table(
        "SELECTION (in-sample: each choice on the families and seed it was chosen on, pooled)",
        &merge(&in_sample),
    );
    s += "\n";
    s += &format_table(
        "HELD OUT (each family with the configuration chosen without it, held-out seed, pooled)",
        &merge(&out_sample),
    );
    for (fi, f) in families.iter().enumerate() {
        s += "\n";
        s += &format_table(
            &format!("held out: {} (seed {})", f.as_str(), cfg.seed + 1),
            &held[fi][chosen[fi]],
        );
    }
    Ok(s)
}
