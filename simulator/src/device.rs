//! One simulated fixture: the real firmware [`Node`] fed with simulated sensors and
//! physics (water flow and flow-meter pulses, heater tank, filters, pressure, TDS),
//! with the faults of its plan applied.
//!
//! The device is event-driven: it ticks the firmware at every use (every 5 s while
//! water runs, 15 s for showers) and on an idle grid (every 5 minutes, every 30 s
//! while the heater is on), so 90 days of a fleet run in seconds while every
//! firmware rule still sees the time steps it was written for.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use firmware::inputs::{FlowCalibration, FlowMeter};
use firmware::logic::Counters;
use firmware::node::Node;
use firmware::storage::{PersistentStore, RamStorage, Storage};
use firmware::{Config, Demand, Sample};
use protocol::message::{Command, CommandKind, Model, Presence, Reboot, RebootReason};
use protocol::topic::{Channel, Topic};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::faults::{FaultKind, Planned, Truth};
use crate::fleet::DeviceVariant;
use crate::household::{normal, room_temp_c, Household, Usage, UsageKind, DAY_MS};

/// Offline queue length of every simulated device.
pub const QUEUE: usize = 64;
/// Nominal flow-meter calibration, pulses per litre.
pub const PULSES_PER_LITRE: u32 = 450;
const IDLE_STEP_MS: i64 = 5 * 60_000;
const HEATER_STEP_MS: i64 = 30_000;
const TANK_ML: f64 = 800.0;
const HEATER_MAX_C: f64 = 41.0;

type SimNode = Node<SimStorage, QUEUE>;

/// The board's non-volatile storage: RAM, with a switch that makes every write fail
/// (the `main_board` fault). The switch is shared with the [`SimDevice`], which owns
/// the fault plan, because the firmware owns the storage.
#[derive(Debug, Clone)]
pub struct SimStorage {
    inner: RamStorage<4>,
    failing: Arc<AtomicBool>,
}

/// Error of [`SimStorage`]: the slot is out of range, or the injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimStorageError {
    /// See [`firmware::storage::SlotOutOfRange`].
    SlotOutOfRange,
    /// Writes fail (injected main-board fault).
    WriteFailed,
}

impl Storage for SimStorage {
    type Error = SimStorageError;
    fn slots(&self) -> usize {
        self.inner.slots()
    }
    fn read(
        &mut self,
        slot: usize,
        buf: &mut [u8; firmware::storage::RECORD_LEN],
    ) -> Result<(), SimStorageError> {
        self.inner
            .read(slot, buf)
            .map_err(|_| SimStorageError::SlotOutOfRange)
    }
    fn write(
        &mut self,
        slot: usize,
        buf: &[u8; firmware::storage::RECORD_LEN],
    ) -> Result<(), SimStorageError> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(SimStorageError::WriteFailed);
        }
        self.inner
            .write(slot, buf)
            .map_err(|_| SimStorageError::SlotOutOfRange)
    }
}

/// A message ready to publish: when (simulated time), from which device, where, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// Simulated time at which the device (or, for a last will, the broker) publishes it.
    pub at_ms: i64,
    /// Device index in the fleet.
    pub device: u32,
    /// MQTT topic.
    pub topic: String,
    /// JSON payload.
    pub payload: Vec<u8>,
    /// Retained (status messages).
    pub retain: bool,
}

/// How a fleet's cartridges vary from device to device (drawn per device by
/// [`SimDevice::set_cartridge_variant`], recorded in the ground truth): rated capacities
/// other than the catalogue's, how much flow a loaded cartridge loses, and reboots
/// that lose the counters. The default is the catalogue world: catalogue ratings,
/// 20 % flow loss at capacity, reboots that keep the counters, no extra reboots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CartridgeMix {
    /// Rated capacities are the catalogue's times a factor drawn in `[1 − s, 1 + s]`.
    pub rated_spread: f64,
    /// Flow loss at rated capacity of the flow-limiting (first) cartridge, drawn
    /// uniformly in `[min, max]`.
    pub flow_loss: (f64, f64),
    /// Share of devices whose reboots lose every counter (cartridge volumes and
    /// replacement counts restart at 0, the boot counter survives).
    pub lossy_reboots: f64,
    /// Extra reboots per device and 30 days, beyond the power cuts.
    pub extra_reboots_per_30d: f64,
}

impl Default for CartridgeMix {
    fn default() -> Self {
        CartridgeMix {
            rated_spread: 0.0,
            flow_loss: (0.2, 0.2),
            lossy_reboots: 0.0,
            extra_reboots_per_30d: 0.0,
        }
    }
}

/// Why a cartridge mix does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bad cartridge mix {0:?}: expected a family (catalog, low_loss, rated, resets, mixed) or rated=S,loss=A-B,lossy=P,reboots=N")]
pub struct CartridgeMixError(pub String);

impl CartridgeMix {
    /// Named families of cartridge worlds (see [`CartridgeMix::parse`]).
    pub const FAMILIES: [&'static str; 5] = ["catalog", "low_loss", "rated", "resets", "mixed"];

    /// A named family or `key=value` pairs (`rated=0.4,loss=0.02-0.06,lossy=0.5,reboots=1`,
    /// unnamed keys keep the default):
    /// * `catalog`: the default world;
    /// * `low_loss`: loaded cartridges lose 2–6 % of their flow;
    /// * `rated`: ratings 0.5–1.5 × the catalogue's, losses 2–25 %;
    /// * `resets`: two extra reboots a month, half the devices losing their counters;
    /// * `mixed`: all of the above drawn per device.
    pub fn parse(spec: &str) -> Result<CartridgeMix, CartridgeMixError> {
        let bad = || CartridgeMixError(spec.to_owned());
        let d = CartridgeMix::default();
        match spec.trim() {
            "catalog" | "" => return Ok(d),
            "low_loss" => {
                return Ok(CartridgeMix {
                    flow_loss: (0.02, 0.06),
                    ..d
                })
            }
            "rated" => {
                return Ok(CartridgeMix {
                    rated_spread: 0.5,
                    flow_loss: (0.02, 0.25),
                    ..d
                })
            }
            "resets" => {
                return Ok(CartridgeMix {
                    lossy_reboots: 0.5,
                    extra_reboots_per_30d: 2.0,
                    ..d
                })
            }
            "mixed" => {
                return Ok(CartridgeMix {
                    rated_spread: 0.5,
                    flow_loss: (0.02, 0.25),
                    lossy_reboots: 0.3,
                    extra_reboots_per_30d: 1.0,
                })
            }
            _ => {}
        }
        let mut m = d;
        for kv in spec.split(',') {
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            let num = |x: &str| x.trim().parse::<f64>().map_err(|_| bad());
            match k.trim() {
                "rated" => m.rated_spread = num(v)?,
                "loss" => {
                    m.flow_loss = match v.split_once('-') {
                        Some((a, b)) => (num(a)?, num(b)?),
                        None => (num(v)?, num(v)?),
                    }
                }
                "lossy" => m.lossy_reboots = num(v)?,
                "reboots" => m.extra_reboots_per_30d = num(v)?,
                _ => return Err(bad()),
            }
        }
        let ok = (0.0..0.95).contains(&m.rated_spread)
            && (0.0..=m.flow_loss.1).contains(&m.flow_loss.0)
            && m.flow_loss.1 < 0.9
            && (0.0..=1.0).contains(&m.lossy_reboots)
            && (0.0..=30.0).contains(&m.extra_reboots_per_30d);
        if ok {
            Ok(m)
        } else {
            Err(bad())
        }
    }
}

/// The cartridges of one device, as drawn from a [`CartridgeMix`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CartridgeVariant {
    /// Rated capacity of each slot's cartridge, litres (what the registry knows).
    pub rated_l: [u32; 4],
    /// Share of the flow lost at rated capacity by the flow-limiting (first) cartridge.
    pub flow_loss: f64,
    /// Whether this device's reboots lose its counters (its online status then says
    /// so, contract v1.1).
    pub lossy_reboots: bool,
    /// Whether the firmware reports each cartridge's rating in telemetry (contract
    /// v1.1): the worlds whose ratings differ from the catalogue's.
    pub reports_rating: bool,
}

impl CartridgeVariant {
    fn catalog(model: Model) -> CartridgeVariant {
        let mut rated_l = [0; 4];
        for (r, k) in rated_l.iter_mut().zip(model.cartridge_kinds()) {
            *r = k.rated_litres();
        }
        CartridgeVariant {
            rated_l,
            flow_loss: 0.2,
            lossy_reboots: false,
            reports_rating: false,
        }
    }
}

/// The flow sensor's pin is simulated by counting pulses directly into the firmware's
/// [`FlowMeter`] (as a board's timer-capture counter would); the pin itself is never read.
#[derive(Debug, Clone, Copy)]
pub struct NoPin;

impl embedded_hal::digital::ErrorType for NoPin {
    type Error = Infallible;
}

impl embedded_hal::digital::InputPin for NoPin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(false)
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(true)
    }
}

/// Tick inputs from the usage player.
#[derive(Debug, Clone, Copy, Default)]
struct In {
    demand: Demand,
    seat: bool,
    /// Water drawn by the use in the interval ending now, ml.
    ml: f64,
    /// The water went through the heater tank (bidet wash).
    heated: bool,
}

/// One simulated fixture.
#[derive(Debug)]
pub struct SimDevice {
    /// Index in the fleet.
    pub idx: u32,
    /// Device id.
    pub id: String,
    /// Model.
    pub model: Model,
    household: Household,
    rng: StdRng,
    node: Option<Box<SimNode>>,
    plan: Vec<Planned>,
    reboots: Vec<i64>,
    end_ms: i64,
    t: i64,
    heater_on: bool,
    tank_c: f64,
    meter: FlowMeter<NoPin>,
    pulses_per_true_litre: f64,
    true_ml: f64,
    pulses_fed: u64,
    cart_true_ml: [f64; 4],
    cart_done: [bool; 4],
    online: bool,
    connected_at: i64,
    stuck: Option<(i64, f64)>,
    stuck_used: bool,
    topics: [String; 3],
    truth: Vec<Truth>,
    last_ml_rate: f64,
    announced: bool,
    ticks: u64,
    replace_at: [Option<i64>; 4],
    service_cmds: u32,
    storage_failing: Arc<AtomicBool>,
    /// The world variants this device drew (firmware cadence and codes, clock, leak shape).
    variant: DeviceVariant,
    /// Start of the simulation (the clock drift's origin).
    start_ms: i64,
    /// Mixed-water temperature of the shower in progress, °C.
    pref_now: f64,
    /// When the burst-cadence firmware last sent telemetry while water ran.
    last_burst_ms: i64,
    cart: CartridgeVariant,
    /// Live mode: the cleaning programme a command started runs until then (true time).
    live_cleaning_until: Option<i64>,
}

impl SimDevice {
    /// Builds a device with a history (counters, partly used cartridges) and boots its firmware at `start_ms`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        idx: u32,
        model: Model,
        household: Household,
        mut rng: StdRng,
        plan: Vec<Planned>,
        start_ms: i64,
        end_ms: i64,
        telemetry_every_ms: i64,
    ) -> SimDevice {
        let id = format!("{}-{:04}", model.as_str(), idx);
        // Meters are within ±2 % of their nominal calibration.
        let pulses_per_true_litre =
            f64::from(PULSES_PER_LITRE) * (1.0 + rng.random_range(-0.02..0.02));
        let kinds = model.cartridge_kinds();
        let mut cart_true_ml = [0.0; 4];
        let mut counters = Counters::default();
        for (slot, kind) in kinds.iter().enumerate() {
            let used = rng.random_range(0.0..0.9) * f64::from(kind.rated_litres()) * 1000.0;
            cart_true_ml[slot] = used;
            counters.cartridges[slot].ml =
                (used * pulses_per_true_litre / f64::from(PULSES_PER_LITRE)) as u64;
            counters.cartridges[slot].replacements = rng.random_range(0..4);
        }
        counters.water_ml = rng.random_range(1_000_000..50_000_000);
        if model == Model::Purifier {
            counters.dispensed_ml = counters.water_ml;
        }
        let boot_count = rng.random_range(0..30);
        let (mut store, _) = PersistentStore::open(RamStorage::<4>::default());
        let _ = store.save(boot_count, &counters);
        let storage = store.release();
        // Power cuts: about one per device every 300 days.
        let reboots = {
            let mut r = Vec::new();
            let mut t = start_ms + DAY_MS;
            while t + 30 * DAY_MS <= end_ms {
                if rng.random_bool(0.1) {
                    r.push(rng.random_range(t..t + 30 * DAY_MS));
                }
                t += 30 * DAY_MS;
            }
            r
        };
        let mut truth = Vec::new();
        for &(a, b) in &household.away {
            if a < end_ms {
                truth.push(Truth::Away {
                    device: id.clone(),
                    start_ms: a,
                    end_ms: b,
                });
            }
        }
        for p in &plan {
            if p.kind == FaultKind::ValveStuck || p.start_ms >= end_ms {
                continue; // valve_stuck is recorded when a wash actually sticks
            }
            let detail = match p.kind {
                FaultKind::Leak => Some(format!(
                    "{:.0} ml/min{}",
                    p.magnitude,
                    if p.wets_probe { ", probe wet" } else { "" }
                )),
                FaultKind::SensorDrift | FaultKind::SensorDropout => {
                    Some(Self::affected_sensor(model, p.kind).to_string())
                }
                FaultKind::InletClog => Some(format!("flow falls to {:.0} %", p.magnitude * 100.0)),
                FaultKind::LowPressure => Some(format!("supply {:.0} kPa", p.magnitude)),
                _ => None,
            };
            truth.push(Truth::Fault {
                device: id.clone(),
                model,
                kind: p.kind,
                start_ms: p.start_ms,
                end_ms: (p.end_ms < end_ms).then_some(p.end_ms),
                detail,
            });
        }
        let topics = [Channel::Telemetry, Channel::Event, Channel::Status]
            .map(|c| Topic::format(&id, c).to_string());
        let mut dev = SimDevice {
            idx,
            id,
            model,
            household,
            rng,
            node: None,
            plan,
            reboots,
            end_ms,
            t: start_ms,
            heater_on: false,
            tank_c: 38.0,
            meter: FlowMeter::new(
                NoPin,
                FlowCalibration {
                    pulses_per_litre: PULSES_PER_LITRE,
                },
            ),
            pulses_per_true_litre,
            true_ml: 0.0,
            pulses_fed: 0,
            cart_true_ml,
            cart_done: [false; 4],
            online: true,
            connected_at: start_ms,
            stuck: None,
            stuck_used: false,
            topics,
            truth,
            last_ml_rate: 0.0,
            announced: false,
            ticks: 0,
            replace_at: [None; 4],
            service_cmds: 0,
            storage_failing: Arc::new(AtomicBool::new(false)),
            variant: DeviceVariant::default(),
            start_ms,
            pref_now: 0.0,
            last_burst_ms: i64::MIN,
            cart: CartridgeVariant::catalog(model),
            live_cleaning_until: None,
        };
        dev.pref_now = dev.household.shower_pref_c;
        dev.boot(storage, start_ms, telemetry_every_ms);
        dev
    }

    /// Applies the world variants `v` (recorded in the truth). Call before the first day.
    pub fn set_variant(&mut self, mut v: DeviceVariant) {
        if self.model != Model::Toilet {
            v.heater_wear = None; // only toilets have a heater
        }
        self.variant = v;
        self.truth.extend(v.truth(&self.id));
        if self.model == Model::Shower && !self.household.people.is_empty() {
            let prefs: Vec<String> = self
                .household
                .people
                .iter()
                .map(|p| format!("{:.1}", p.0))
                .collect();
            self.truth.push(Truth::Variant {
                device: self.id.clone(),
                variant: "shared_shower".into(),
                detail: format!("{} people at {} °C", prefs.len(), prefs.join("/")),
            });
        }
        if let (Some((periodic, _)), Some(node)) = (v.burst, self.node.as_mut()) {
            node.set_report_interval_ms(periodic);
        }
    }

    /// The device's own clock at true time `t` (the `clock_offset` variant).
    fn dev_time(&self, t: i64) -> i64 {
        match self.variant.clock {
            Some((offset, drift_per_day)) => {
                t + offset
                    + ((t - self.start_ms) as f64 / DAY_MS as f64 * drift_per_day as f64) as i64
            }
            None => t,
        }
    }

    fn boot(&mut self, storage: RamStorage<4>, t: i64, telemetry_every_ms: i64) {
        let storage = SimStorage {
            inner: storage,
            failing: Arc::clone(&self.storage_failing),
        };
        let dev_t = self.dev_time(t);
        let node = match Node::boot(
            &self.id,
            self.model,
            Config::for_model(self.model),
            storage,
            dev_t,
        ) {
            Ok(n) => n,
            // Ids are generated as `{model}-{nnnn}`, always valid.
            Err(_) => unreachable!("generated device id is valid"),
        };
        let mut node = Box::new(node);
        node.set_report_interval_ms(telemetry_every_ms);
        if self.cart.reports_rating {
            for (slot, rated) in self.cart.rated_l.iter().enumerate() {
                node.set_cartridge_rating(slot, (*rated > 0).then_some(*rated));
            }
        }
        self.node = Some(node);
    }

    /// Sets how much of a cartridge's rating is already used (`used_fraction` of its rated
    /// litres), as if it had been in service that long: the demo's "filter nearing its end".
    /// The firmware's persisted counter is rewritten and the board reboots with it, so call
    /// it before the first tick. Returns false for a slot the model does not have.
    pub fn wear_cartridge(&mut self, slot: usize, used_fraction: f64) -> bool {
        let Some(kind) = self.model.cartridge_kinds().get(slot).copied() else {
            return false;
        };
        let Some(node) = self.node.take() else {
            return false;
        };
        let interval = node.report_interval_ms();
        let mut counters = *node.fixture().counters();
        let _ = kind;
        let used = used_fraction.clamp(0.0, 1.0) * f64::from(self.cart.rated_l[slot]) * 1000.0;
        self.cart_true_ml[slot] = used;
        self.cart_done[slot] = false;
        counters.cartridges[slot].ml =
            (used * self.pulses_per_true_litre / f64::from(PULSES_PER_LITRE)) as u64;
        let (mut store, rec) = PersistentStore::open(node.shutdown().inner);
        let _ = store.save(rec.map_or(0, |r| r.boot_count), &counters);
        self.boot(store.release(), self.t, interval);
        true
    }

    /// Draws this device's cartridges from `mix` with its own random stream (`seed`),
    /// so the rest of the simulation is unchanged: ratings (the cartridges already in
    /// service keep their used share), flow loss, counter-losing reboots and extra
    /// reboots. Call it before the first tick.
    pub fn set_cartridge_variant(&mut self, mix: &CartridgeMix, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let kinds = self.model.cartridge_kinds();
        let mut v = CartridgeVariant::catalog(self.model);
        for (slot, kind) in kinds.iter().enumerate() {
            let s = mix.rated_spread;
            let factor = if s > 0.0 {
                rng.random_range(1.0 - s..=1.0 + s)
            } else {
                1.0
            };
            v.rated_l[slot] = (f64::from(kind.rated_litres()) * factor).round().max(1.0) as u32;
        }
        let (a, b) = mix.flow_loss;
        v.flow_loss = if b > a { rng.random_range(a..=b) } else { a };
        v.lossy_reboots = rng.random_bool(mix.lossy_reboots.clamp(0.0, 1.0));
        v.reports_rating = mix.rated_spread > 0.0;
        let used: Vec<f64> = (0..kinds.len())
            .map(|slot| self.cart_true_ml[slot] / (f64::from(self.cart.rated_l[slot]) * 1000.0))
            .collect();
        self.cart = v;
        for (slot, u) in used.into_iter().enumerate() {
            self.wear_cartridge(slot, u);
        }
        if mix.extra_reboots_per_30d > 0.0 {
            let span = (self.end_ms - self.t).max(0);
            let n =
                (mix.extra_reboots_per_30d * span as f64 / (30.0 * DAY_MS as f64)).round() as u32;
            for _ in 0..n {
                self.reboots
                    .push(rng.random_range(self.t + DAY_MS..self.end_ms.max(self.t + DAY_MS + 1)));
            }
            self.reboots.sort_unstable();
        }
    }

    /// This device's cartridges (ratings, flow loss, reboots losing the counters).
    pub fn cartridge_variant(&self) -> &CartridgeVariant {
        &self.cart
    }

    /// Firmware ticks (`Node::tick` calls) so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The ground truth gathered so far.
    pub fn truth(&self) -> &[Truth] {
        &self.truth
    }

    fn affected_sensor(model: Model, kind: FaultKind) -> &'static str {
        match (model, kind) {
            (Model::Purifier, FaultKind::SensorDrift) => "tds_out",
            (Model::Purifier, _) => "inlet_pressure",
            _ => "water_temp",
        }
    }

    fn active(&self, kind: FaultKind, t: i64) -> Option<Planned> {
        self.plan
            .iter()
            .copied()
            .find(|p| p.kind == kind && p.active(t))
    }

    /// Simulates the day starting at `day_ms`, appending what the device publishes to `out`.
    pub fn run_day(&mut self, day_ms: i64, out: &mut Vec<OutMessage>) {
        let uses = match self.active(FaultKind::HighUsage, day_ms) {
            Some(high) => {
                // Guests: as if the household were several times its size today.
                let mut guests = self.household.clone();
                guests.size = (f64::from(guests.size) * high.magnitude).round().min(20.0) as u8;
                guests.day_usage(self.model, day_ms, &mut self.rng)
            }
            None => self.household.day_usage(self.model, day_ms, &mut self.rng),
        };
        // The weekly cleaning programme (a toilet of the `cleaning` variant).
        let mut clean_at = self.variant.cleaning.and_then(|(weekday, hour)| {
            let today = (day_ms.div_euclid(DAY_MS) + 3).rem_euclid(7);
            (self.model == Model::Toilet && today == weekday).then_some(day_ms + hour * 3_600_000)
        });
        for u in uses {
            if let Some(at) = clean_at.filter(|&at| at <= u.start_ms) {
                clean_at = None;
                if at > self.t && at < self.end_ms {
                    self.idle_until(at, out);
                    self.clean(at, out);
                }
            }
            if u.start_ms >= self.end_ms || u.start_ms <= self.t {
                continue;
            }
            if self.active(FaultKind::Unused, u.start_ms).is_some() {
                continue;
            }
            self.idle_until(u.start_ms, out);
            self.play(u, out);
        }
        if let Some(at) = clean_at.filter(|&at| at > self.t && at < self.end_ms) {
            self.idle_until(at, out);
            self.clean(at, out);
        }
        self.idle_until((day_ms + DAY_MS).min(self.end_ms), out);
    }

    /// A cleaning programme from `s`: six minutes rinsing at 50 ml/s (about 18 l).
    fn clean(&mut self, s: i64, out: &mut Vec<OutMessage>) {
        let clean_in = |ml| In {
            demand: Demand::Clean,
            ml,
            ..In::default()
        };
        self.tick(s, clean_in(0.0), out);
        let mut t = s;
        while t + 5_000 <= s + 6 * 60_000 {
            t += 5_000;
            self.tick(t, clean_in(50.0 * 5.0), out);
        }
        self.tick(t + 5_000, In::default(), out);
    }

    fn idle_until(&mut self, until: i64, out: &mut Vec<OutMessage>) {
        let interval = self
            .node
            .as_ref()
            .map_or(IDLE_STEP_MS, |n| n.report_interval_ms());
        loop {
            let step = if self.heater_on {
                HEATER_STEP_MS
            } else {
                IDLE_STEP_MS.min(interval)
            };
            let next = self.t + step;
            if next >= until {
                break;
            }
            self.tick(next, In::default(), out);
        }
    }

    /// Flow factor for purifier and shower draws: pressure, filter loading, inlet clog.
    fn flow_factor(&mut self, t: i64) -> f64 {
        let p = self.static_pressure_kpa(t);
        let mut f = (p / 300.0).sqrt().clamp(0.3, 1.3);
        if !self.model.cartridge_kinds().is_empty() {
            let load = (self.cart_true_ml[0] / (f64::from(self.cart.rated_l[0]) * 1000.0)).min(1.2);
            f *= 1.0 - self.cart.flow_loss * load * load;
        }
        if let Some(c) = self.active(FaultKind::InletClog, t) {
            let ramp = ((t - c.start_ms) as f64 / ((c.end_ms - c.start_ms) as f64 * 0.5)).min(1.0);
            f *= 1.0 - (1.0 - c.magnitude) * ramp;
        }
        f * (1.0 + normal(&mut self.rng, 0.0, 0.01))
    }

    fn static_pressure_kpa(&self, t: i64) -> f64 {
        let p = self.household.site.static_pressure_kpa;
        match self.active(FaultKind::LowPressure, t) {
            Some(lp) => p.min(lp.magnitude),
            None => p,
        }
    }

    fn play(&mut self, u: Usage, out: &mut Vec<OutMessage>) {
        let s = u.start_ms;
        match u.kind {
            UsageKind::ToiletVisit {
                seat_ms,
                wash,
                flush,
            } => {
                self.tick(
                    s,
                    In {
                        seat: true,
                        ..In::default()
                    },
                    out,
                );
                if let Some((off, dur)) = wash {
                    let rate = self.rng.random_range(6.0..9.0); // ml/s, 0.36–0.54 L/min
                    let ws = s + off;
                    let we = ws + dur;
                    if !self.stuck_used {
                        if let Some(p) = self
                            .plan
                            .iter()
                            .find(|p| p.kind == FaultKind::ValveStuck && ws >= p.start_ms)
                            .copied()
                        {
                            self.stuck_used = true;
                            let until = we + (p.end_ms - p.start_ms);
                            self.stuck = Some((until, rate));
                            self.truth.push(Truth::Fault {
                                device: self.id.clone(),
                                model: self.model,
                                kind: FaultKind::ValveStuck,
                                start_ms: ws,
                                end_ms: (until < self.end_ms).then_some(until),
                                detail: Some(format!(
                                    "wash valve open {:.0} min after the wash",
                                    (until - we) as f64 / 60_000.0
                                )),
                            });
                        }
                    }
                    let mut t = ws;
                    let wash_in = |ml| In {
                        demand: Demand::Wash,
                        seat: true,
                        ml,
                        heated: true,
                    };
                    self.tick(ws, wash_in(0.0), out);
                    while t + 5_000 < we {
                        t += 5_000;
                        self.tick(t, wash_in(rate * 5.0), out);
                    }
                    self.tick(
                        we,
                        In {
                            demand: Demand::None,
                            ..wash_in(rate * (we - t) as f64 / 1000.0)
                        },
                        out,
                    );
                    t = we;
                    while t + 5_000 < s + seat_ms {
                        t += 5_000;
                        self.tick(
                            t,
                            In {
                                seat: true,
                                ..In::default()
                            },
                            out,
                        );
                    }
                }
                let so = s + seat_ms;
                self.tick(so, In::default(), out);
                if flush {
                    let fs = so + 3_000;
                    self.tick(
                        fs,
                        In {
                            demand: Demand::Flush,
                            ..In::default()
                        },
                        out,
                    );
                    let refill = self.rng.random_range(100.0..170.0); // ml/s for 40 s: 4–7 L
                    let mut t = fs;
                    for _ in 0..8 {
                        t += 5_000;
                        self.tick(
                            t,
                            In {
                                ml: refill * 5.0,
                                ..In::default()
                            },
                            out,
                        );
                    }
                    self.tick(t + 5_000, In::default(), out);
                }
            }
            UsageKind::Dispense { ml } => {
                let rate = 25.0 * self.flow_factor(s);
                self.draw(s, ml / rate * 1000.0, rate, 5_000, out);
            }
            UsageKind::Shower { dur_ms, person } => {
                self.pref_now = self.household.shower_temp_c(person, &mut self.rng);
                let rate = 150.0 * self.flow_factor(s);
                self.draw(s, dur_ms as f64, rate, 15_000, out);
            }
        }
    }

    fn draw(&mut self, s: i64, dur_ms: f64, rate_ml_s: f64, step: i64, out: &mut Vec<OutMessage>) {
        let e = s + dur_ms as i64;
        let draw_in = |ml| In {
            demand: Demand::Draw,
            ml,
            ..In::default()
        };
        self.last_ml_rate = rate_ml_s;
        self.tick(s, draw_in(0.0), out);
        let mut t = s;
        while t + step < e {
            t += step;
            self.tick(t, draw_in(rate_ml_s * step as f64 / 1000.0), out);
        }
        self.tick(
            e,
            In {
                demand: Demand::None,
                ..draw_in(rate_ml_s * (e - t) as f64 / 1000.0)
            },
            out,
        );
        self.tick(e + 5_000, In::default(), out);
        self.last_ml_rate = 0.0;
    }

    /// Water that flows by itself over `(from, to]`: a leak, a stuck valve.
    fn background_ml(&self, from: i64, to: i64) -> f64 {
        let mut ml = 0.0;
        if let Some(l) = self.active(FaultKind::Leak, to) {
            let a = from.max(l.start_ms);
            // A night leak (a valve that weeps at night pressure) runs 00:00–06:00 only.
            let night = (to.rem_euclid(DAY_MS)) < 6 * 3_600_000;
            if night || !self.variant.night_leak {
                ml += l.magnitude / 60_000.0 * (to - a).max(0) as f64;
            }
        }
        if let Some((until, rate)) = self.stuck {
            let b = to.min(until);
            ml += rate / 1000.0 * (b - from).max(0) as f64;
        }
        ml
    }

    fn tick(&mut self, t: i64, input: In, out: &mut Vec<OutMessage>) {
        if t >= self.end_ms || t < self.t {
            return;
        }
        self.transitions(t, out);
        let dt_s = (t - self.t) as f64 / 1000.0;
        // A closed inlet valve stops every flow: usage and leaks downstream of it alike.
        let ml = if self.inlet_valve_open() {
            input.ml + self.background_ml(self.t, t)
        } else {
            0.0
        };
        if let Some((until, _)) = self.stuck {
            if t >= until {
                self.stuck = None;
            }
        }
        // Heater tank (toilet): cools to the room, heats while on (unless failed), mixes in cold water.
        if self.model == Model::Toilet {
            let room = room_temp_c(t);
            self.tank_c = room + (self.tank_c - room) * (-dt_s / (3.0 * 3600.0)).exp();
            if self.heater_on {
                // A failed heater heats no more; a wearing one (the `heater_wear`
                // variant) reaches less and less over the fault's span.
                let reach = match (
                    self.active(FaultKind::HeaterFailure, t),
                    self.variant.heater_wear,
                ) {
                    (None, _) => Some(HEATER_MAX_C),
                    (Some(p), Some(worn_c)) => {
                        let ramp = (p.end_ms - p.start_ms) as f64 * 0.7;
                        let progress = ((t - p.start_ms) as f64 / ramp.max(1.0)).clamp(0.0, 1.0);
                        Some(HEATER_MAX_C - (HEATER_MAX_C - worn_c) * progress)
                    }
                    (Some(_), None) => None,
                };
                if let Some(reach) = reach.filter(|&r| self.tank_c < r) {
                    self.tank_c = reach - (reach - self.tank_c) * (-dt_s / 60.0).exp();
                }
            }
            if input.heated {
                let frac = (input.ml / TANK_ML).min(1.0);
                self.tank_c -= frac * (self.tank_c - self.household.inlet_temp_c(t));
            }
        }
        // Flow meter: pulses from the true volume through a meter with its own calibration error.
        self.true_ml += ml;
        let pulses = (self.true_ml / 1000.0 * self.pulses_per_true_litre) as u64;
        self.meter
            .add_pulses(u32::try_from(pulses - self.pulses_fed).unwrap_or(u32::MAX));
        self.pulses_fed = pulses;
        let flow_ml = self.meter.take_ml();
        // Filters: the true water through them, and the day each reaches its rating.
        for (slot, kind) in self.model.cartridge_kinds().iter().enumerate() {
            self.cart_true_ml[slot] += ml;
            let rated = self.cart.rated_l[slot];
            if !self.cart_done[slot] && self.cart_true_ml[slot] >= f64::from(rated) * 1000.0 {
                self.cart_done[slot] = true;
                // Most households get the cartridge replaced 2–30 days later.
                if self.rng.random_bool(0.8) {
                    self.replace_at[slot] =
                        Some(t + self.rng.random_range(2 * DAY_MS..30 * DAY_MS));
                }
                self.truth.push(Truth::CartridgeCapacity {
                    device: self.id.clone(),
                    slot: slot as u8,
                    kind: *kind,
                    rated_l: rated,
                    flow_loss: if slot == 0 { self.cart.flow_loss } else { 0.0 },
                    ts: t,
                });
            }
        }
        self.service(t);
        self.storage_failing.store(
            self.active(FaultKind::MainBoard, t).is_some(),
            Ordering::Relaxed,
        );
        let sample = self.sample(t, input, flow_ml, ml > 0.0);
        let dev_t = self.dev_time(t);
        let Some(node) = self.node.as_mut() else {
            return;
        };
        let outputs = node.tick(dev_t, &sample);
        // Burst-cadence firmware: telemetry every few seconds while water runs.
        if let Some((_, running)) = self.variant.burst {
            if (ml > 0.0 || input.demand != Demand::None)
                && t.saturating_sub(self.last_burst_ms) >= running
            {
                self.last_burst_ms = t;
                let _ = node.queue_telemetry(dev_t);
            }
        }
        self.ticks += 1;
        self.heater_on = outputs.heater_on;
        self.t = t;
        self.drain(t, out);
    }

    /// A technician's visit: the service tool sends the firmware the same
    /// `reset_cartridge` command the gateway would.
    fn service(&mut self, t: i64) {
        for slot in 0..self.model.cartridge_kinds().len() {
            if self.replace_at[slot].is_none_or(|at| t < at) {
                continue;
            }
            self.replace_at[slot] = None;
            self.service_cmds += 1;
            let dev_t = self.dev_time(t);
            let cmd = Command {
                v: protocol::SCHEMA_VERSION,
                cmd_id: 0x8000_0000 | self.service_cmds,
                ts: dev_t,
                command: CommandKind::ResetCartridge { slot: slot as u8 },
            };
            let Some(node) = self.node.as_mut() else {
                return;
            };
            let done = node.handle_command(&cmd, dev_t);
            // The service tool's answer goes to the tool, not to the broker.
            while node.pop_result().is_some() {}
            if done {
                self.cart_true_ml[slot] = 0.0;
                self.cart_done[slot] = false;
                let kind = self.model.cartridge_kinds()[slot];
                self.truth.push(Truth::CartridgeReplaced {
                    device: self.id.clone(),
                    slot: slot as u8,
                    kind,
                    ts: t,
                });
            }
        }
    }

    fn sample(&mut self, t: i64, input: In, flow_ml: u32, flowing: bool) -> Sample {
        let mc = |c: f64| (c * 1000.0).round() as i32;
        let drift = self
            .active(FaultKind::SensorDrift, t)
            .map(|d| d.magnitude * ((t - d.start_ms) as f64 / (d.end_ms - d.start_ms) as f64));
        let dropout = self.active(FaultKind::SensorDropout, t).is_some();
        let probe = self
            .active(FaultKind::Leak, t)
            .is_some_and(|l| l.wets_probe);
        let rng = &mut self.rng;
        let mut s = Sample {
            seat: input.seat,
            leak_probe: probe,
            demand: input.demand,
            flow_ml,
            ..Sample::default()
        };
        let p = self.household.site.static_pressure_kpa;
        let p = match self
            .plan
            .iter()
            .find(|lp| lp.kind == FaultKind::LowPressure && lp.active(t))
        {
            Some(lp) => p.min(lp.magnitude),
            None => p,
        };
        let p_kpa = p - if flowing { 25.0 } else { 0.0 } + normal(rng, 0.0, 3.0);
        match self.model {
            Model::Toilet => {
                let temp = self.tank_c + drift.unwrap_or(0.0) * 5.0 + normal(rng, 0.0, 0.15);
                s.water_temp_mc = (!dropout).then(|| mc(temp));
                s.seat_temp_mc = Some(mc(33.0 + normal(rng, 0.0, 0.3)));
            }
            Model::Purifier => {
                let tds_in = self.household.site.inlet_tds_ppm * (1.0 + normal(rng, 0.0, 0.02));
                let ro_load = self.cart_true_ml[2] / (f64::from(self.cart.rated_l[2]) * 1000.0);
                let rejection = (0.04 + 0.3 * (ro_load - 0.8).max(0.0)).min(0.5);
                let tds_out = tds_in * rejection + drift.unwrap_or(0.0) * 80.0;
                s.pressure_pa = (!dropout).then(|| (p_kpa.max(0.0) * 1000.0) as i32);
                s.tds_in_ppm = Some(tds_in.clamp(0.0, 5000.0) as u16);
                s.tds_out_ppm = Some(tds_out.clamp(0.0, 5000.0) as u16);
            }
            Model::Shower => {
                let base = if input.demand == Demand::Draw || self.last_ml_rate > 0.0 {
                    self.pref_now
                } else {
                    room_temp_c(t)
                };
                let temp = base + drift.unwrap_or(0.0) * 5.0 + normal(rng, 0.0, 0.2);
                s.water_temp_mc = (!dropout).then(|| mc(temp));
                s.pressure_pa = Some((p_kpa.max(0.0) * 1000.0) as i32);
            }
        }
        s
    }

    /// Reboots and network changes due at `t`.
    fn transitions(&mut self, t: i64, out: &mut Vec<OutMessage>) {
        if !self.announced {
            // First tick: the device connects and announces itself.
            self.announced = true;
            self.status(self.t, Presence::Online, out);
        }
        while self.reboots.first().is_some_and(|&r| r <= t) {
            let r = self.reboots.remove(0);
            let interval = self
                .node
                .as_ref()
                .map_or(IDLE_STEP_MS * 3, |n| n.report_interval_ms());
            if let Some(node) = self.node.take() {
                let mut storage = node.shutdown();
                if self.cart.lossy_reboots {
                    // The counters' record is lost; the boot counter survives.
                    let (mut store, rec) = PersistentStore::open(storage.inner);
                    let _ = store.save(rec.map_or(0, |r| r.boot_count), &Counters::default());
                    storage.inner = store.release();
                }
                self.meter = FlowMeter::new(
                    NoPin,
                    FlowCalibration {
                        pulses_per_litre: PULSES_PER_LITRE,
                    },
                );
                self.pulses_fed = (self.true_ml / 1000.0 * self.pulses_per_true_litre) as u64;
                self.boot(storage.inner, t, interval);
                if let Some(node) = self.node.as_mut() {
                    // The board's reset cause and its storage check (contract v1.1).
                    node.set_reboot(Reboot {
                        reason: RebootReason::PowerOn,
                        counters_lost: self.cart.lossy_reboots,
                    });
                }
            }
            self.truth.push(Truth::Reboot {
                device: self.id.clone(),
                ts: r.max(self.t),
                counters_lost: self.cart.lossy_reboots,
            });
            if self.online {
                self.connected_at = t;
                self.status(t, Presence::Online, out);
            }
        }
        let offline = self.active(FaultKind::Offline, t).is_some();
        if self.online && offline {
            self.online = false;
            // The broker publishes the last will (its `ts` is when it was registered, at connect).
            let connected_at = self.connected_at;
            self.status_at(t, connected_at, Presence::Offline, out);
        } else if !self.online && !offline {
            self.online = true;
            self.connected_at = t;
            self.status(t, Presence::Online, out);
        }
    }

    fn status(&mut self, t: i64, presence: Presence, out: &mut Vec<OutMessage>) {
        self.status_at(t, t, presence, out);
    }

    fn status_at(&mut self, at: i64, ts: i64, presence: Presence, out: &mut Vec<OutMessage>) {
        let Some(node) = self.node.as_ref() else {
            return;
        };
        let mut buf = [0u8; 256];
        if let Ok(n) = node.status(self.dev_time(ts), presence, &mut buf) {
            out.push(OutMessage {
                at_ms: at,
                device: self.idx,
                topic: self.topics[2].clone(),
                payload: buf[..n].to_vec(),
                retain: true,
            });
        }
    }

    fn drain(&mut self, t: i64, out: &mut Vec<OutMessage>) {
        if !self.online {
            return;
        }
        let Some(node) = self.node.as_mut() else {
            return;
        };
        while let Some(m) = node.outbox_mut().pop() {
            // Firmware that raises no fault codes (the `silent_firmware` variant).
            if self.variant.silent_firmware
                && m.channel == Channel::Event
                && m.payload.windows(8).any(|w| w == b"\"fault\":")
            {
                continue;
            }
            let topic = match m.channel {
                Channel::Telemetry => self.topics[0].clone(),
                _ => self.topics[1].clone(),
            };
            out.push(OutMessage {
                at_ms: t,
                device: self.idx,
                topic,
                payload: m.payload.to_vec(),
                retain: false,
            });
        }
        while let Some(r) = node.pop_result() {
            out.push(OutMessage {
                at_ms: t,
                device: self.idx,
                topic: protocol::topic::result_topic(&self.id).to_string(),
                payload: r.to_vec(),
                retain: false,
            });
        }
    }

    /// Whether the fixture's water inlet valve is open (always, on models without one).
    pub fn inlet_valve_open(&self) -> bool {
        self.node.as_ref().is_none_or(|n| n.inlet_valve_open())
    }

    /// The firmware's diagnostics now (what `report_diagnostics` answers).
    pub fn diagnostics(&self) -> Option<protocol::message::Diagnostics> {
        self.node.as_ref().map(|n| n.diagnostics())
    }

    /// Live mode: the simulated span no longer ends; the device runs on as
    /// [`SimDevice::advance_to`] moves it, with no new household usage.
    pub fn go_live(&mut self) {
        self.end_ms = i64::MAX;
    }

    /// Live mode: runs the device up to true time `t` (idle, or the cleaning programme a
    /// command started), appending what it publishes to `out`.
    pub fn advance_to(&mut self, t: i64, out: &mut Vec<OutMessage>) {
        if t <= self.t {
            return;
        }
        if let Some(until) = self.live_cleaning_until {
            let clean_in = |ml| In {
                demand: Demand::Clean,
                ml,
                ..In::default()
            };
            let mut next = self.t + 5_000;
            while next <= t.min(until) {
                self.tick(next, clean_in(50.0 * 5.0), out);
                next += 5_000;
            }
            if t < until {
                return;
            }
            self.live_cleaning_until = None;
        }
        self.idle_until(t, out);
        self.tick(t, In::default(), out);
    }

    /// Live mode: the device receives `cmd` at true time `t` and runs it through the
    /// firmware; its answer (and anything else it publishes) goes to `out`. Returns whether
    /// the firmware carried it out (or started it).
    pub fn command(&mut self, cmd: &Command, t: i64, out: &mut Vec<OutMessage>) -> bool {
        self.advance_to(t, out);
        let dev_t = self.dev_time(t.max(self.t));
        let Some(node) = self.node.as_mut() else {
            return false;
        };
        let done = node.handle_command(cmd, dev_t);
        if node.take_cleaning_request() {
            // The programme runs six minutes (about 18 l), in true time.
            self.live_cleaning_until = Some(self.t + 6 * 60_000);
            self.tick(
                self.t + 1,
                In {
                    demand: Demand::Clean,
                    ..In::default()
                },
                out,
            );
        }
        self.drain(self.t, out);
        done
    }
}
