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
use crate::faults::{plan_one, plan_random, DeviceRef, FaultMix, Injection, Truth};
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
    /// Builds the households, devices and fault plans.
    pub fn new(cfg: FleetConfig) -> Result<Fleet, FleetError> {
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
                household = Some(Household::generate(
                    &mut StdRng::seed_from_u64(sub_seed(cfg.seed, 1, u64::from(h))),
                    start_ms,
                    end_ms,
                ));
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
        let mut fleet = Fleet::new(cfg)?;
        let mut all = Vec::new();
        while let Some(batch) = fleet.next_batch() {
            all.extend(batch);
        }
        Ok((all, fleet.truth()))
    }
}
