//! Fault injection: which faults exist, the mixes and scenario files that choose
//! them, the per-device plan, and the ground-truth records written for evaluation.

use std::collections::BTreeMap;
use std::str::FromStr;

use protocol::message::Model;
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::household::{DAY_MS, HOUR_MS};

/// Kinds of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Water flows with nobody using the fixture (20–90 ml/min), sometimes wetting the leak probe.
    Leak,
    /// Toilet: a wash valve that does not close ("wash runs abnormally long").
    ValveStuck,
    /// Toilet: the wash-water heater stops heating.
    HeaterFailure,
    /// Purifier / shower: the inlet screen clogs; flow falls over days at normal pressure.
    InletClog,
    /// A sensor's reading drifts away from the truth (not detectable on the device).
    SensorDrift,
    /// A sensor stops answering.
    SensorDropout,
    /// The fixture is not used for 7+ days while the household is home.
    Unused,
    /// The device loses its network connection (queues offline, then catches up).
    Offline,
    /// Purifier / shower: the supply pressure drops (mains works, a closed stopcock).
    LowPressure,
    /// The household uses the fixture three to five times as much as usual for 2–5 whole
    /// days (guests). Not a device fault: for the gateway's abnormal-usage analytics.
    HighUsage,
    /// The main board's storage stops accepting writes; the firmware raises `main_board`
    /// at its next save (after a session).
    MainBoard,
}

impl FaultKind {
    /// All kinds.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Leak,
        FaultKind::ValveStuck,
        FaultKind::HeaterFailure,
        FaultKind::InletClog,
        FaultKind::SensorDrift,
        FaultKind::SensorDropout,
        FaultKind::Unused,
        FaultKind::Offline,
        FaultKind::LowPressure,
        FaultKind::HighUsage,
        FaultKind::MainBoard,
    ];

    /// Kinds added after the first nine. A fleet plans them from a random stream of their
    /// own, so that adding them to a mix leaves every other kind's plan as it was.
    pub fn is_late_addition(self) -> bool {
        matches!(self, FaultKind::HighUsage | FaultKind::MainBoard)
    }

    /// The fault code the device's own firmware raises for this kind, if it detects it
    /// locally (drift, unused and offline are for the gateway's analytics to find).
    pub fn device_code(self) -> Option<protocol::message::FaultCode> {
        use protocol::message::FaultCode;
        Some(match self {
            FaultKind::Leak => FaultCode::Leak,
            FaultKind::ValveStuck => FaultCode::ValveStuck,
            FaultKind::HeaterFailure => FaultCode::HeaterFailure,
            FaultKind::InletClog => FaultCode::InletClog,
            FaultKind::SensorDropout => FaultCode::SensorError,
            FaultKind::LowPressure => FaultCode::LowInletPressure,
            FaultKind::MainBoard => FaultCode::MainBoard,
            FaultKind::SensorDrift
            | FaultKind::Unused
            | FaultKind::Offline
            | FaultKind::HighUsage => return None,
        })
    }

    /// Snake-case name, as in flags and the truth file.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Leak => "leak",
            FaultKind::ValveStuck => "valve_stuck",
            FaultKind::HeaterFailure => "heater_failure",
            FaultKind::InletClog => "inlet_clog",
            FaultKind::SensorDrift => "sensor_drift",
            FaultKind::SensorDropout => "sensor_dropout",
            FaultKind::Unused => "unused",
            FaultKind::Offline => "offline",
            FaultKind::LowPressure => "low_pressure",
            FaultKind::HighUsage => "high_usage",
            FaultKind::MainBoard => "main_board",
        }
    }

    /// Whether the fault can happen on `model`.
    pub fn applies_to(self, model: Model) -> bool {
        match self {
            FaultKind::ValveStuck | FaultKind::HeaterFailure => model == Model::Toilet,
            FaultKind::InletClog | FaultKind::LowPressure => model != Model::Toilet,
            _ => true,
        }
    }

    /// Duration range of one occurrence, ms.
    fn duration_range(self) -> (i64, i64) {
        match self {
            FaultKind::Leak => (DAY_MS, 4 * DAY_MS),
            FaultKind::ValveStuck => (20 * 60_000, 2 * HOUR_MS),
            FaultKind::HeaterFailure => (DAY_MS, 5 * DAY_MS),
            FaultKind::InletClog => (12 * DAY_MS, 20 * DAY_MS),
            FaultKind::SensorDrift => (10 * DAY_MS, 30 * DAY_MS),
            FaultKind::SensorDropout => (2 * HOUR_MS, 24 * HOUR_MS),
            FaultKind::Unused => (7 * DAY_MS, 14 * DAY_MS),
            FaultKind::Offline => (6 * HOUR_MS, 3 * DAY_MS),
            FaultKind::LowPressure => (DAY_MS, 3 * DAY_MS),
            FaultKind::HighUsage => (2 * DAY_MS, 5 * DAY_MS),
            FaultKind::MainBoard => (6 * HOUR_MS, 3 * DAY_MS),
        }
    }
}

/// Why a fault specification is invalid.
#[derive(Debug, thiserror::Error)]
pub enum FaultSpecError {
    /// An unknown fault kind.
    #[error("unknown fault kind `{0}` (known: default, none, leak, valve_stuck, heater_failure, inlet_clog, sensor_drift, sensor_dropout, unused, offline, low_pressure, high_usage, main_board)")]
    UnknownKind(String),
    /// A probability that is not a number in 0..=1.
    #[error("bad probability `{0}` (expected a number from 0 to 1)")]
    BadProbability(String),
    /// The scenario file is not valid JSON of the expected shape.
    #[error("scenario file: {0}")]
    Scenario(#[from] serde_json::Error),
}

impl FromStr for FaultKind {
    type Err = FaultSpecError;
    fn from_str(s: &str) -> Result<Self, FaultSpecError> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| FaultSpecError::UnknownKind(s.to_string()))
    }
}

/// The probability, per device over the whole run, of each fault kind.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FaultMix(pub BTreeMap<FaultKind, f64>);

impl FaultMix {
    /// The `--faults default` mix: a few percent of devices get each fault.
    pub fn default_mix() -> FaultMix {
        FaultMix(BTreeMap::from([
            (FaultKind::Leak, 0.04),
            (FaultKind::ValveStuck, 0.05),
            (FaultKind::HeaterFailure, 0.04),
            (FaultKind::InletClog, 0.06),
            (FaultKind::SensorDrift, 0.04),
            (FaultKind::SensorDropout, 0.05),
            (FaultKind::Unused, 0.03),
            (FaultKind::Offline, 0.04),
            (FaultKind::LowPressure, 0.02),
            (FaultKind::HighUsage, 0.02),
            (FaultKind::MainBoard, 0.02),
        ]))
    }

    /// The mix split into the first nine kinds and the late additions
    /// ([`FaultKind::is_late_addition`]).
    pub fn split_late_additions(&self) -> (FaultMix, FaultMix) {
        let (late, first): (BTreeMap<_, _>, BTreeMap<_, _>) =
            self.0.iter().partition(|(k, _)| k.is_late_addition());
        (FaultMix(first), FaultMix(late))
    }

    /// Parses `default`, `none`, or a comma list of `kind[=probability]` (a bare kind
    /// means 0.25), which may start with `default` to adjust the default mix.
    pub fn parse(spec: &str) -> Result<FaultMix, FaultSpecError> {
        let mut mix = FaultMix::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "default" => mix.0.extend(FaultMix::default_mix().0),
                "none" => mix.0.clear(),
                _ => {
                    let (kind, p) = match part.split_once('=') {
                        Some((k, p)) => (
                            k,
                            p.parse::<f64>()
                                .map_err(|_| FaultSpecError::BadProbability(p.to_string()))?,
                        ),
                        None => (part, 0.25),
                    };
                    if !(0.0..=1.0).contains(&p) {
                        return Err(FaultSpecError::BadProbability(p.to_string()));
                    }
                    mix.0.insert(kind.parse()?, p);
                }
            }
        }
        Ok(mix)
    }
}

/// A device named in a scenario file: by index or by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeviceRef {
    /// 0-based device index.
    Index(u32),
    /// Device id, e.g. `toilet-0003`.
    Id(String),
}

/// One explicit injection from a scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Injection {
    /// Which device.
    pub device: DeviceRef,
    /// Which fault.
    pub kind: FaultKind,
    /// Start, in days after the simulation start.
    pub start_day: f64,
    /// Duration in days (default: the kind's typical duration).
    #[serde(default)]
    pub days: Option<f64>,
}

impl Injection {
    /// `kind` on the device with id `device`, from `start_day` for `days` days (or the kind's typical duration).
    pub fn on(device: &str, kind: FaultKind, start_day: f64, days: Option<f64>) -> Injection {
        Injection {
            device: DeviceRef::Id(device.into()),
            kind,
            start_day,
            days,
        }
    }
}

/// A scenario file: an optional mix plus explicit injections.
///
/// ```json
/// {"mix": {"leak": 0.1}, "inject": [{"device": "toilet-0000", "kind": "leak", "start_day": 3, "days": 2}]}
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Random faults, as with `--faults`.
    #[serde(default)]
    pub mix: FaultMix,
    /// Explicit faults.
    #[serde(default)]
    pub inject: Vec<Injection>,
}

impl Scenario {
    /// Parses a scenario file's text.
    pub fn parse(text: &str) -> Result<Scenario, FaultSpecError> {
        Ok(serde_json::from_str(text)?)
    }
}

/// One planned fault on one device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    /// The kind.
    pub kind: FaultKind,
    /// Start, UTC ms.
    pub start_ms: i64,
    /// End, UTC ms.
    pub end_ms: i64,
    /// Kind-specific magnitude: leak ml/min, clog final flow factor, drift full offset
    /// (fraction of the sensor's drift span), low pressure: the supply pressure in kPa,
    /// high usage: the factor on the household's size.
    pub magnitude: f64,
    /// Leak: whether the water reaches the leak probe.
    pub wets_probe: bool,
}

impl Planned {
    /// Whether the fault is in force at `t_ms`.
    pub fn active(&self, t_ms: i64) -> bool {
        t_ms >= self.start_ms && t_ms < self.end_ms
    }
}

/// Draws `kind` for a window starting at `start_ms` (duration `dur_ms`, or the kind's typical one).
pub fn plan_one(rng: &mut StdRng, kind: FaultKind, start_ms: i64, dur_ms: Option<i64>) -> Planned {
    let (lo, hi) = kind.duration_range();
    let mut dur = dur_ms.unwrap_or_else(|| rng.random_range(lo..=hi));
    let mut start_ms = start_ms;
    if kind == FaultKind::HighUsage {
        // Whole days: a day's use is planned at once.
        start_ms = crate::household::day_floor(start_ms);
        dur = (dur / DAY_MS).max(1) * DAY_MS;
    }
    let magnitude = match kind {
        FaultKind::Leak => rng.random_range(20.0..90.0),
        FaultKind::InletClog => rng.random_range(0.25..0.45),
        FaultKind::SensorDrift => rng.random_range(0.5..1.0),
        FaultKind::LowPressure => rng.random_range(40.0..85.0),
        FaultKind::HighUsage => rng.random_range(3.0..5.0),
        _ => 0.0,
    };
    Planned {
        kind,
        start_ms,
        end_ms: start_ms + dur,
        magnitude,
        wets_probe: rng.random_bool(0.4),
    }
}

/// Draws a device's random faults from `mix` for the span `[start_ms, end_ms)`;
/// windows of one device never overlap and start after the first two days.
pub fn plan_random(
    rng: &mut StdRng,
    mix: &FaultMix,
    model: Model,
    start_ms: i64,
    end_ms: i64,
) -> Vec<Planned> {
    let mut plan: Vec<Planned> = Vec::new();
    for (&kind, &p) in &mix.0 {
        let hit = rng.random_bool(p.clamp(0.0, 1.0));
        if !hit || !kind.applies_to(model) {
            continue;
        }
        let (lo, _) = kind.duration_range();
        let earliest = start_ms + 2 * DAY_MS;
        if end_ms - earliest <= lo {
            continue;
        }
        for _ in 0..10 {
            let s = rng.random_range(earliest..end_ms - lo);
            let f = plan_one(rng, kind, s, None);
            if plan
                .iter()
                .all(|o| f.end_ms + DAY_MS < o.start_ms || f.start_ms > o.end_ms + DAY_MS)
            {
                plan.push(f);
                break;
            }
        }
    }
    plan.sort_by_key(|f| f.start_ms);
    plan
}

/// One line of the ground-truth file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Truth {
    /// An injected fault. `end_ms` is null if it was still in force when the simulation ended.
    Fault {
        /// Device id.
        device: String,
        /// Fixture model.
        model: Model,
        /// Fault kind.
        kind: FaultKind,
        /// Start, UTC ms.
        start_ms: i64,
        /// End, UTC ms.
        end_ms: Option<i64>,
        /// Kind-specific detail (e.g. which sensor drifted, leak rate).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        detail: Option<String>,
    },
    /// The household was away (normal behaviour, but it looks like an unused fixture).
    Away {
        /// Device id.
        device: String,
        /// Start, UTC ms.
        start_ms: i64,
        /// End, UTC ms.
        end_ms: i64,
    },
    /// The device rebooted (power cut); `boot_id` increments.
    Reboot {
        /// Device id.
        device: String,
        /// When, UTC ms.
        ts: i64,
        /// The reboot lost the counters (they restart at 0).
        #[serde(default)]
        counters_lost: bool,
    },
    /// A technician replaced a cartridge (some days after it reached capacity); the
    /// firmware's `replacements` counter for the slot goes up and its volume restarts at 0.
    CartridgeReplaced {
        /// Device id.
        device: String,
        /// Slot.
        slot: u8,
        /// Cartridge kind.
        kind: protocol::message::CartridgeKind,
        /// When, UTC ms.
        ts: i64,
    },
    /// A filter cartridge reached its rated capacity, by the true water volume.
    CartridgeCapacity {
        /// Device id.
        device: String,
        /// Slot.
        slot: u8,
        /// Cartridge kind.
        kind: protocol::message::CartridgeKind,
        /// Rated capacity, litres.
        rated_l: u32,
        /// Share of the flow this cartridge loses at capacity (the flow-limiting first
        /// slot; 0 for the others).
        #[serde(default)]
        flow_loss: f64,
        /// When the true volume through it reached the rating, UTC ms.
        ts: i64,
    },
    /// A world variant this device (or its home) drew, for its whole life: a confounder
    /// that must not raise a finding by itself (see `fleet::VariantFamily`).
    Variant {
        /// Device id.
        device: String,
        /// The family (`burst_cadence`, `shared_shower`, ...).
        variant: String,
        /// What was drawn.
        detail: String,
    },
}

impl Truth {
    /// The device the record is about.
    pub fn device(&self) -> &str {
        match self {
            Truth::Fault { device, .. }
            | Truth::Away { device, .. }
            | Truth::Reboot { device, .. }
            | Truth::CartridgeCapacity { device, .. }
            | Truth::CartridgeReplaced { device, .. }
            | Truth::Variant { device, .. } => device,
        }
    }

    /// The time the record starts (for sorting).
    pub fn start(&self) -> i64 {
        match self {
            Truth::Fault { start_ms, .. } | Truth::Away { start_ms, .. } => *start_ms,
            Truth::Reboot { ts, .. }
            | Truth::CartridgeCapacity { ts, .. }
            | Truth::CartridgeReplaced { ts, .. } => *ts,
            Truth::Variant { .. } => i64::MIN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn fault_specs_parse() {
        assert_eq!(FaultMix::parse("default").unwrap(), FaultMix::default_mix());
        assert!(FaultMix::parse("none").unwrap().0.is_empty());
        let m = FaultMix::parse("default,leak=0.5,offline").unwrap();
        assert_eq!(
            (
                m.0[&FaultKind::Leak],
                m.0[&FaultKind::Offline],
                m.0[&FaultKind::Unused]
            ),
            (0.5, 0.25, 0.03)
        );
        assert!(matches!(
            FaultMix::parse("flood"),
            Err(FaultSpecError::UnknownKind(_))
        ));
        assert!(matches!(
            FaultMix::parse("leak=2"),
            Err(FaultSpecError::BadProbability(_))
        ));
    }

    #[test]
    fn scenario_file_parses() {
        let s = Scenario::parse(r#"{"mix":{"leak":0.1},"inject":[{"device":"toilet-0000","kind":"valve_stuck","start_day":2.5},{"device":4,"kind":"offline","start_day":1,"days":0.5}]}"#).unwrap();
        assert_eq!(s.inject.len(), 2);
        assert_eq!(s.inject[1].device, DeviceRef::Index(4));
        assert!(
            Scenario::parse(r#"{"inject":[{"device":1,"kind":"meteor","start_day":1}]}"#).is_err()
        );
    }

    #[test]
    fn random_plans_respect_model_and_do_not_overlap() {
        let all = FaultMix(FaultKind::ALL.iter().map(|&k| (k, 1.0)).collect());
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let plan = plan_random(&mut rng, &all, Model::Purifier, 0, 90 * DAY_MS);
            assert!(plan
                .iter()
                .all(|f| f.kind.applies_to(Model::Purifier) && f.start_ms >= 2 * DAY_MS));
            for w in plan.windows(2) {
                assert!(w[0].end_ms < w[1].start_ms);
            }
        }
    }

    #[test]
    fn every_kind_can_be_drawn_for_its_models() {
        let all = FaultMix(FaultKind::ALL.iter().map(|&k| (k, 1.0)).collect());
        for model in [Model::Toilet, Model::Purifier, Model::Shower] {
            let mut seen = std::collections::BTreeSet::new();
            for seed in 0..200 {
                let mut rng = StdRng::seed_from_u64(seed);
                seen.extend(
                    plan_random(&mut rng, &all, model, 0, 365 * DAY_MS)
                        .iter()
                        .map(|p| p.kind),
                );
            }
            let expected: std::collections::BTreeSet<_> = FaultKind::ALL
                .into_iter()
                .filter(|k| k.applies_to(model))
                .collect();
            assert_eq!(seen, expected, "{model:?}");
        }
    }

    #[test]
    fn truth_lines_are_tagged_json() {
        let t = Truth::Fault {
            device: "toilet-0001".into(),
            model: Model::Toilet,
            kind: FaultKind::Leak,
            start_ms: 1,
            end_ms: None,
            detail: None,
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"type":"fault","device":"toilet-0001","model":"toilet","kind":"leak","start_ms":1,"end_ms":null}"#
        );
    }
}
