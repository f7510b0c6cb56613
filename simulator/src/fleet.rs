//! The fleet: N devices in households of three fixtures (toilet, purifier, shower),
//! simulated one day at a time into a deterministic, time-ordered message stream.
//!
//! ```no_run
//! use simulator::{Fleet, FleetConfig};
//! let mut fleet = Fleet::new(FleetConfig { devices: 30, days: 7, ..FleetConfig::default() }).unwrap();
//! while let Some(batch) = fleet.next_batch() {
//!     for m in batch {
//!         println!("{} {}", m.topic, String::from_utf8_lossy(&m.payload));
//!     }
//! }
//! let truth = fleet.truth();
//! # let _ = truth;
//! ```

use protocol::message::Model;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::device::{OutMessage, SimDevice};
use crate::faults::{plan_one, plan_random, DeviceRef, FaultKind, FaultMix, Injection, Truth};
use crate::household::{day_floor, Household, DAY_MS};

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// Number of devices.
    pub devices: u32,
    /// Days simulated.
    pub days: u32,
    /// End of the simulated span, UTC ms (default: now). The span is `[end − days, end)`,
    /// extended back to the midnight before so that every simulated day is whole but the last.
    pub end_ms: i64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Telemetry interval, minutes.
    pub telemetry_every_min: u32,
    /// Random faults.
    pub mix: FaultMix,
    /// Explicit faults.
    pub inject: Vec<Injection>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            devices: 30,
            days: 7,
            end_ms: now_ms(),
            seed: 7,
            telemetry_every_min: 15,
            mix: FaultMix::default(),
            inject: Vec::new(),
        }
    }
}

/// The wall clock, UTC ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Why a fleet cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Zero devices or days, or more than the id format allows.
    #[error("devices must be 1..=999999 and days 1..=399 (the gateway rejects data older than 400 days); got {devices} devices, {days} days")]
    Size {
        /// Devices asked for.
        devices: u32,
        /// Days asked for.
        days: u32,
    },
    /// The telemetry interval is outside what the firmware accepts.
    #[error("telemetry interval must be 1 to 1440 minutes, got {0}")]
    Interval(u32),
    /// A scenario names a device that is not in the fleet.
    #[error("scenario names device {0:?}, which is not in the fleet")]
    UnknownDevice(DeviceRef),
}

/// The model of device `idx`: households have a toilet, a purifier and a shower.
pub fn model_of(idx: u32) -> Model {
    [Model::Toilet, Model::Purifier, Model::Shower][(idx % 3) as usize]
}

/// The id of device `idx`.
pub fn device_id(idx: u32) -> String {
    format!("{}-{:04}", model_of(idx).as_str(), idx)
}

fn sub_seed(seed: u64, stream: u64, idx: u64) -> u64 {
    // SplitMix64 of the triple: independent, reproducible streams.
    let mut z =
        seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ idx.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A simulated fleet.
#[derive(Debug)]
pub struct Fleet {
    cfg: FleetConfig,
    devices: Vec<SimDevice>,
    start_ms: i64,
    next_day: i64,
}

impl Fleet {
    /// Builds the households, devices and fault plans of the plain world.
    pub fn new(cfg: FleetConfig) -> Result<Fleet, FleetError> {
        Fleet::with_variants(cfg, &Variants::default())
    }

    /// Builds the households, devices and fault plans, each device and home drawing the
    /// world variants of `variants` (from random streams of their own: the plain
    /// world's draws stay as they were).
    pub fn with_variants(cfg: FleetConfig, variants: &Variants) -> Result<Fleet, FleetError> {
        if cfg.devices == 0 || cfg.devices > 999_999 || cfg.days == 0 || cfg.days > 399 {
            return Err(FleetError::Size {
                devices: cfg.devices,
                days: cfg.days,
            });
        }
        if !(1..=1440).contains(&cfg.telemetry_every_min) {
            return Err(FleetError::Interval(cfg.telemetry_every_min));
        }
        let start_ms = day_floor(cfg.end_ms - i64::from(cfg.days) * DAY_MS);
        let end_ms = cfg.end_ms;
        let mut injections: Vec<Vec<&Injection>> = vec![Vec::new(); cfg.devices as usize];
        for inj in &cfg.inject {
            let idx = match &inj.device {
                DeviceRef::Index(i) => Some(*i),
                DeviceRef::Id(id) => (0..cfg.devices).find(|&i| device_id(i) == *id),
            }
            .filter(|&i| i < cfg.devices)
            .ok_or_else(|| FleetError::UnknownDevice(inj.device.clone()))?;
            injections[idx as usize].push(inj);
        }
        let mut devices = Vec::with_capacity(cfg.devices as usize);
        let mut household = None;
        for idx in 0..cfg.devices {
            let h = idx / 3;
            if idx % 3 == 0 {
                let mut hh = Household::generate(
                    &mut StdRng::seed_from_u64(sub_seed(cfg.seed, 1, u64::from(h))),
                    start_ms,
                    end_ms,
                );
                let mut vrng = StdRng::seed_from_u64(sub_seed(cfg.seed, 5, u64::from(h)));
                let u: f64 = rand::Rng::random(&mut vrng);
                if u < variants.p(VariantFamily::SharedShower) {
                    hh.share_shower(&mut vrng);
                }
                household = Some(hh);
            }
            let Some(hh) = household.clone() else {
                unreachable!("household set at idx % 3 == 0")
            };
            let model = model_of(idx);
            let mut plan_rng = StdRng::seed_from_u64(sub_seed(cfg.seed, 2, u64::from(idx)));
            let (first_kinds, late_kinds) = cfg.mix.split_late_additions();
            let mut plan = plan_random(&mut plan_rng, &first_kinds, model, start_ms, end_ms);
            if !late_kinds.0.is_empty() {
                // Late additions draw from their own stream and only fill free time.
                let mut late_rng = StdRng::seed_from_u64(sub_seed(cfg.seed, 4, u64::from(idx)));
                for p in plan_random(&mut late_rng, &late_kinds, model, start_ms, end_ms) {
                    if plan
                        .iter()
                        .all(|o| p.end_ms + DAY_MS < o.start_ms || p.start_ms > o.end_ms + DAY_MS)
                    {
                        plan.push(p);
                    }
                }
            }
            for inj in &injections[idx as usize] {
                let s = start_ms + (inj.start_day * DAY_MS as f64) as i64;
                let dur = inj.days.map(|d| (d * DAY_MS as f64) as i64);
                let p = plan_one(&mut plan_rng, inj.kind, s, dur);
                plan.retain(|o| o.end_ms < p.start_ms || o.start_ms > p.end_ms);
                plan.push(p);
            }
            plan.sort_by_key(|p| p.start_ms);
            let mut vrng = StdRng::seed_from_u64(sub_seed(cfg.seed, 6, u64::from(idx)));
            let variant = DeviceVariant::draw(&mut vrng, variants);
            if variant.small_leak {
                for p in plan.iter_mut().filter(|p| p.kind == FaultKind::Leak) {
                    p.magnitude = rand::Rng::random_range(&mut vrng, 3.0..12.0);
                }
            }
            let rng = StdRng::seed_from_u64(sub_seed(cfg.seed, 3, u64::from(idx)));
            devices.push(SimDevice::new(
                idx,
                model,
                hh,
                rng,
                plan,
                start_ms,
                end_ms,
                i64::from(cfg.telemetry_every_min) * 60_000,
            ));
            if let Some(d) = devices.last_mut() {
                d.set_variant(variant);
            }
        }
        Ok(Fleet {
            cfg,
            devices,
            start_ms,
            next_day: start_ms,
        })
    }

    /// First simulated instant, UTC ms (midnight).
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// End of the simulated span, UTC ms.
    pub fn end_ms(&self) -> i64 {
        self.cfg.end_ms
    }

    /// Simulated days in all (the last may be partial).
    pub fn total_days(&self) -> u64 {
        ((self.cfg.end_ms - self.start_ms + DAY_MS - 1) / DAY_MS) as u64
    }

    /// Sets how much of a device's cartridge is used already (see
    /// [`SimDevice::wear_cartridge`]); before the first simulated day.
    pub fn wear_cartridge(
        &mut self,
        device: &str,
        slot: usize,
        used_fraction: f64,
    ) -> Result<(), FleetError> {
        let unknown = || FleetError::UnknownDevice(DeviceRef::Id(device.to_owned()));
        let d = self
            .devices
            .iter_mut()
            .find(|d| d.id == device)
            .ok_or_else(unknown)?;
        if d.wear_cartridge(slot, used_fraction) {
            Ok(())
        } else {
            Err(unknown())
        }
    }

    /// Draws every device's cartridges from `mix` (see
    /// [`SimDevice::set_cartridge_variant`]); before the first simulated day.
    pub fn set_cartridge_mix(&mut self, mix: &crate::device::CartridgeMix) {
        for d in &mut self.devices {
            d.set_cartridge_variant(mix, sub_seed(self.cfg.seed, 0xCA27, u64::from(d.idx)));
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    /// Firmware ticks run so far, over all devices.
    pub fn ticks(&self) -> u64 {
        self.devices.iter().map(SimDevice::ticks).sum()
    }

    /// The devices.
    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    /// The devices, for live mode ([`crate::live`]) once the history is simulated.
    pub fn into_devices(self) -> Vec<SimDevice> {
        self.devices
    }

    /// Simulates the next day of every device and returns its messages ordered by
    /// publish time (ties: by device, then in the device's own order). `None` at the end.
    pub fn next_batch(&mut self) -> Option<Vec<OutMessage>> {
        if self.next_day >= self.cfg.end_ms {
            return None;
        }
        let day = self.next_day;
        self.next_day += DAY_MS;
        let mut out = Vec::new();
        for d in &mut self.devices {
            d.run_day(day, &mut out);
        }
        out.sort_by_key(|m| (m.at_ms, m.device));
        Some(out)
    }

    /// Ground truth so far (all of it once [`Fleet::next_batch`] returned `None`),
    /// ordered by device, then time.
    pub fn truth(&self) -> Vec<Truth> {
        let mut t: Vec<Truth> = self
            .devices
            .iter()
            .flat_map(|d| d.truth().iter().cloned())
            .collect();
        t.sort_by(|a, b| a.device().cmp(b.device()).then(a.start().cmp(&b.start())));
        t
    }

    /// Runs the whole simulation in memory: every message and the truth. For small fleets and tests.
    pub fn generate_all(cfg: FleetConfig) -> Result<(Vec<OutMessage>, Vec<Truth>), FleetError> {
        Fleet::generate_all_with_variants(cfg, &Variants::default())
    }

    /// [`Fleet::generate_all`] in a world drawing `variants`.
    pub fn generate_all_with_variants(
        cfg: FleetConfig,
        variants: &Variants,
    ) -> Result<(Vec<OutMessage>, Vec<Truth>), FleetError> {
        let mut fleet = Fleet::with_variants(cfg, variants)?;
        let mut all = Vec::new();
        while let Some(batch) = fleet.next_batch() {
            all.extend(batch);
        }
        Ok((all, fleet.truth()))
    }
}

/// The families of world variants: each is drawn per device (firmware, clock, leak
/// shape) or per home (household make-up) with its own probability, so one seed can
/// hold every variant side by side. A variant is part of the ground truth
/// ([`Truth::Variant`]): confounders that must not raise a finding are as much truth
/// as the faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VariantFamily {
    /// Firmware that also sends telemetry every 30–120 s while water runs, on a periodic
    /// interval of 5–60 minutes.
    BurstCadence,
    /// Firmware that raises no fault codes of its own (the analytics must find everything).
    SilentFirmware,
    /// A shower shared by 2–6 people, each with their own preferred temperature
    /// (spread of ±2.5 °C) and duration, varying a little from shower to shower.
    SharedShower,
    /// A device clock hours off (±1–8 h), drifting up to ±5 min a day.
    ClockOffset,
    /// Leaks of only 3–12 ml/min.
    SmallLeak,
    /// Leaks that run only at night (00:00–06:00) and come back every night.
    NightLeak,
    /// Toilets that run a weekly cleaning programme (6 minutes, about 18 l), reported as
    /// a contract v1.1 `cleaning` session.
    Cleaning,
    /// Toilets whose `heater_failure` is a heater wearing out rather than dying: its
    /// reach sinks linearly from 41 °C to 26–33 °C over the first 70 % of the fault's
    /// span (the firmware raises its code only below 30 °C, if it raises codes at all).
    HeaterWear,
}

impl VariantFamily {
    /// All families.
    pub const ALL: [VariantFamily; 8] = [
        VariantFamily::BurstCadence,
        VariantFamily::SilentFirmware,
        VariantFamily::SharedShower,
        VariantFamily::ClockOffset,
        VariantFamily::SmallLeak,
        VariantFamily::NightLeak,
        VariantFamily::Cleaning,
        VariantFamily::HeaterWear,
    ];

    /// Snake-case name, as on the command line and in the truth.
    pub fn as_str(self) -> &'static str {
        match self {
            VariantFamily::BurstCadence => "burst_cadence",
            VariantFamily::SilentFirmware => "silent_firmware",
            VariantFamily::SharedShower => "shared_shower",
            VariantFamily::ClockOffset => "clock_offset",
            VariantFamily::SmallLeak => "small_leak",
            VariantFamily::NightLeak => "night_leak",
            VariantFamily::Cleaning => "cleaning",
            VariantFamily::HeaterWear => "heater_wear",
        }
    }

    fn parse(name: &str) -> Option<VariantFamily> {
        VariantFamily::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// Probability of each [`VariantFamily`] per device (or home). Empty: the plain world.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variants(pub std::collections::BTreeMap<VariantFamily, f64>);

/// A variant specification that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum VariantSpecError {
    /// Unknown family name.
    #[error("unknown variant family `{0}` (known: none, all, burst_cadence, silent_firmware, shared_shower, clock_offset, small_leak, night_leak, cleaning, heater_wear)")]
    UnknownFamily(String),
    /// Not a probability.
    #[error("bad variant probability `{0}` (expected a number from 0 to 1)")]
    BadProbability(String),
}

impl Variants {
    /// Parses `none`, `all[=p]` or `family[=p],...` (p defaults to 0.5).
    pub fn parse(spec: &str) -> Result<Variants, VariantSpecError> {
        let mut v = Variants::default();
        for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, p) = match part.split_once('=') {
                Some((n, p)) => (
                    n.trim(),
                    p.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..=1.0).contains(p))
                        .ok_or_else(|| VariantSpecError::BadProbability(p.to_string()))?,
                ),
                None => (part, 0.5),
            };
            match name {
                "none" => v.0.clear(),
                "all" => {
                    for f in VariantFamily::ALL {
                        v.0.insert(f, p);
                    }
                }
                other => {
                    let f = VariantFamily::parse(other)
                        .ok_or_else(|| VariantSpecError::UnknownFamily(other.to_string()))?;
                    v.0.insert(f, p);
                }
            }
        }
        Ok(v)
    }

    /// Probability of `family`.
    pub fn p(&self, family: VariantFamily) -> f64 {
        self.0.get(&family).copied().unwrap_or(0.0)
    }
}

/// The variants one device drew (see [`VariantFamily`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeviceVariant {
    /// Periodic telemetry interval and the interval while water runs, ms.
    pub burst: Option<(i64, i64)>,
    /// The firmware raises no fault codes.
    pub silent_firmware: bool,
    /// Clock offset at the start (ms, device minus true time) and drift (ms a day).
    pub clock: Option<(i64, i64)>,
    /// Leaks are 3–12 ml/min.
    pub small_leak: bool,
    /// Leaks run at night only.
    pub night_leak: bool,
    /// A weekly cleaning programme (toilets): weekday (0 = Monday) and hour.
    pub cleaning: Option<(i64, i64)>,
    /// A failing heater wears out (toilets): the reach it sinks to, °C.
    pub heater_wear: Option<f64>,
}

impl DeviceVariant {
    /// Draws a device's variants.
    pub fn draw(rng: &mut StdRng, v: &Variants) -> DeviceVariant {
        use rand::Rng;
        let hit = |rng: &mut StdRng, f: VariantFamily| {
            let p = v.p(f);
            // Always draw, so that one family's probability does not move another's.
            let u: f64 = rng.random();
            u < p
        };
        let burst = hit(rng, VariantFamily::BurstCadence);
        let silent_firmware = hit(rng, VariantFamily::SilentFirmware);
        let clock = hit(rng, VariantFamily::ClockOffset);
        let small_leak = hit(rng, VariantFamily::SmallLeak);
        let night_leak = hit(rng, VariantFamily::NightLeak);
        let periodic = [5, 15, 30, 60][rng.random_range(0..4)] * 60_000;
        let running = [30, 60, 120][rng.random_range(0..3)] * 1000;
        let hours = rng.random_range(1..=8) * if rng.random_bool(0.5) { 1 } else { -1 };
        let drift = rng.random_range(-300_000..=300_000);
        let cleaning = hit(rng, VariantFamily::Cleaning);
        let clean_at = (rng.random_range(0..7), rng.random_range(1..6));
        // Drawn last: the draws above stay those of a world without this family.
        let heater_wear = hit(rng, VariantFamily::HeaterWear);
        let wear_to_c = rng.random_range(26.0..33.0);
        DeviceVariant {
            heater_wear: heater_wear.then_some(wear_to_c),
            cleaning: cleaning.then_some(clean_at),
            burst: burst.then_some((periodic, running)),
            silent_firmware,
            clock: clock.then_some((hours * HOUR, drift)),
            small_leak,
            night_leak,
        }
    }

    /// The truth records of these variants for `device`.
    pub fn truth(&self, device: &str) -> Vec<Truth> {
        let mut t = Vec::new();
        let mut add = |variant: VariantFamily, detail: String| {
            t.push(Truth::Variant {
                device: device.to_string(),
                variant: variant.as_str().to_string(),
                detail,
            })
        };
        if let Some((p, r)) = self.burst {
            add(
                VariantFamily::BurstCadence,
                format!(
                    "telemetry every {} min, every {} s while water runs",
                    p / 60_000,
                    r / 1000
                ),
            );
        }
        if self.silent_firmware {
            add(VariantFamily::SilentFirmware, "no fault codes".into());
        }
        if let Some((o, d)) = self.clock {
            add(
                VariantFamily::ClockOffset,
                format!(
                    "clock {:+.1} h, drifting {:+.0} s a day",
                    o as f64 / HOUR as f64,
                    d as f64 / 1000.0
                ),
            );
        }
        if self.small_leak {
            add(VariantFamily::SmallLeak, "leaks of 3–12 ml/min".into());
        }
        if let Some((day, hour)) = self.cleaning {
            add(
                VariantFamily::Cleaning,
                format!("cleaning programme weekday {day} at {hour:02}:00 (toilets)"),
            );
        }
        if self.night_leak {
            add(
                VariantFamily::NightLeak,
                "leaks run 00:00–06:00 only".into(),
            );
        }
        if let Some(c) = self.heater_wear {
            add(
                VariantFamily::HeaterWear,
                format!("a failing heater wears out to {c:.1} °C"),
            );
        }
        t
    }
}

const HOUR: i64 = 3_600_000;

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::Telemetry;

    fn small() -> FleetConfig {
        FleetConfig {
            devices: 48,
            days: 8,
            end_ms: 1_764_000_000_000,
            seed: 3,
            ..FleetConfig::default()
        }
    }

    fn run(variants: &Variants) -> (Vec<OutMessage>, Vec<Truth>) {
        Fleet::generate_all_with_variants(small(), variants).expect("valid fleet")
    }

    fn variant_of<'a>(truth: &'a [Truth], device: &str, family: &str) -> Option<&'a str> {
        truth.iter().find_map(|t| match t {
            Truth::Variant {
                device: d,
                variant,
                detail,
            } if d == device && variant == family => Some(detail.as_str()),
            _ => None,
        })
    }

    #[test]
    fn variant_specs_parse_and_reject_unknown_families() {
        let v = Variants::parse("all=0.2,clock_offset=1").expect("valid");
        assert_eq!(v.p(VariantFamily::ClockOffset), 1.0);
        assert_eq!(v.p(VariantFamily::NightLeak), 0.2);
        assert!(Variants::parse("none").expect("valid").0.is_empty());
        assert!(Variants::parse("warp_drive").is_err());
        assert!(Variants::parse("small_leak=2").is_err());
    }

    #[test]
    fn variants_are_in_the_truth_and_leave_the_other_devices_as_they_were() {
        let (plain, plain_truth) = run(&Variants::default());
        assert!(!plain_truth
            .iter()
            .any(|t| matches!(t, Truth::Variant { .. })));
        let (varied, truth) = run(&Variants::parse("all=0.2").expect("valid"));
        let mut untouched = 0;
        let mut offsets = 0;
        let mut bursts = 0;
        for idx in 0..48 {
            let id = device_id(idx);
            let of = |m: &[OutMessage]| -> Vec<OutMessage> {
                m.iter().filter(|m| m.device == idx).cloned().collect()
            };
            let household_shared = (0..3)
                .map(|k| device_id(idx / 3 * 3 + k))
                .any(|d| variant_of(&truth, &d, "shared_shower").is_some());
            let any = VariantFamily::ALL
                .iter()
                .any(|f| variant_of(&truth, &id, f.as_str()).is_some());
            if !any && !household_shared {
                untouched += 1;
                assert_eq!(of(&plain), of(&varied), "{id} drew no variant");
            }
            if variant_of(&truth, &id, "clock_offset").is_some() {
                offsets += 1;
                let t = of(&varied)
                    .into_iter()
                    .find(|m| m.topic.ends_with("/telemetry"))
                    .expect("telemetry");
                let tel: Telemetry = serde_json::from_slice(&t.payload).expect("valid");
                assert!((tel.ts - t.at_ms).abs() >= HOUR / 2, "{id}: clock is off");
            }
            if variant_of(&truth, &id, "burst_cadence").is_some() {
                bursts += 1;
                let n = of(&varied)
                    .iter()
                    .filter(|m| m.topic.ends_with("/telemetry"))
                    .count();
                assert!(n > 0, "{id} reports");
            }
        }
        assert!(untouched > 0 && offsets > 0 && bursts > 0);
        // Cleaning programmes are reported as `cleaning` sessions, never as flushes.
        let cleanings = varied
            .iter()
            .filter(|m| m.topic.ends_with("/event"))
            .filter(|m| String::from_utf8_lossy(&m.payload).contains("\"kind\":\"cleaning\""))
            .count();
        let cleaning_toilets = (0..48)
            .filter(|&i| model_of(i) == Model::Toilet)
            .filter(|&i| variant_of(&truth, &device_id(i), "cleaning").is_some())
            .count();
        assert_eq!(cleanings > 0, cleaning_toilets > 0, "{cleanings} cleanings");
        assert!(!plain
            .iter()
            .any(|m| String::from_utf8_lossy(&m.payload).contains("cleaning")));
    }
}
