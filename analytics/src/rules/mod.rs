//! The product brief's fault rules, per device, as edge-triggered [`Finding`]s.
//!
//! [`DeviceRules`] is the whole state of one device (under 1 KiB; the part only its
//! model needs in one heap block, allocated once; serialisable so the gateway can snapshot it). It is fed that device's contract
//! messages in order ([`DeviceRules::on_telemetry`], [`DeviceRules::on_event`]) and a
//! periodic clock ([`DeviceRules::on_clock`]); each call appends the findings it
//! produces to a caller's buffer and allocates nothing when nothing fires. Time is
//! always the device's (message `ts`) or the `now_ms` passed in: no clock is read.
//!
//! | finding | from the device | from the analytics |
//! |---|---|---|
//! | [`FindingKind::Leak`] | `leak` | [`leak`]: metered water no session explains, over hours (lower envelope of the water balance, any telemetry cadence) |
//! | [`FindingKind::LongWash`] | `valve_stuck` | [`long_session`]: wash/flush longer than the device's median + k·σ (MAD); [`valve`]: water running on (≥ 100 ml/min) after a toilet's session, no session explaining it |
//! | [`FindingKind::HeaterFault`] | `heater_failure`, `heater_over_temp` | [`heater`]: heater energy going in while the tank stays hours below the device's learnt level |
//! | [`FindingKind::MainBoardFault`] | `main_board` | |
//! | [`FindingKind::SensorFault`] | `sensor_error` | [`drift`]: both ends of a shower's temperature range moving the same way (several users) |
//! | [`FindingKind::InletClog`] | `inlet_clog` | [`clog`]: session flow falling against its baseline at fine pressure |
//! | [`FindingKind::LowInletPressure`] | `low_inlet_pressure` | [`pressure`]: telemetry pressure under the working minimum |
//! | [`FindingKind::Unused7Days`] | | no usage session for 7 days (clock; not while silent) |
//! | [`FindingKind::AbnormalUsage`] | | [`usage`]: daily water / heater energy over the household's robust norm |
//! | [`FindingKind::DeviceSilent`] | | no message for 3 learnt idle reporting intervals and twice the longest normal gap of its last two days, on the device's learnt clock offset (clock) |
//!
//! A condition seen by several sources is one episode: `Active` when the first source
//! sees it, `Cleared` when the last one stops ([`latch`]). A device fault raised before
//! a reboot and not raised again within [`RulesConfig::reboot_grace_ms`] of it is
//! taken as cleared (the new boot forgot it).
//!
//! ```
//! use analytics::rules::{DeviceRules, RulesConfig};
//! use protocol::message::Model;
//! let cfg = RulesConfig::default();
//! let mut rules = DeviceRules::new(Model::Toilet, &cfg);
//! let mut findings = Vec::new();
//! rules.on_clock(&cfg, 1_764_000_000_000, &mut findings);
//! assert!(findings.is_empty());
//! assert!(rules.state_bytes() < 1024);
//! ```

pub mod clog;
pub mod compact;
mod config;
pub mod drift;
mod finding;
pub mod heater;
pub mod latch;
pub mod leak;
pub mod long_session;
pub mod pressure;
pub mod stats;
pub mod usage;
pub mod valve;

#[cfg(test)]
mod tests;

use protocol::message::{
    Event, EventKind, FaultCode, FaultEvent, FaultState, Model, Reading, Session, SessionKind,
    Severity, Telemetry,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use config::{RulesConfig, RulesConfigError, UsageThresholds};
pub use finding::{Finding, FindingKind, FindingState, Resource};

use clog::ClogTrend;
use compact::Maybe;
use drift::TemperatureDrift;
use heater::HeaterWatch;
use latch::{LatchSet, Source};
use leak::FlowBalance;
use long_session::LongSessions;
use pressure::PressureWatch;
use stats::SampleWindow;
use usage::{DailyUsage, UsageJudgement};
use valve::ValveWatch;

/// Index of each finding kind's [`Latch`] in [`DeviceRules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Leak,
    LongWash,
    MainBoard,
    Heater,
    Sensor,
    InletClog,
    LowPressure,
    Unused,
    AbnormalWater,
    AbnormalEnergy,
    Silent,
}

const SLOTS: usize = 11;

/// Clock calls further apart than this do not teach the device's clock offset.
const CLOCK_LAG_MAX_PERIOD_MS: i64 = 15 * 60_000;
/// A device clock further off than this is not learnt as an offset (a clock set to a
/// local time is at most 14 h off UTC): such a lag is silence or a backlog...
const MAX_CLOCK_OFFSET_MS: i64 = 14 * 3_600_000;
/// ...unless it is within this of the offset already learnt: a clock that drifts minutes a
/// day moves past any bound over months, and it is still the same clock.
const CLOCK_FOLLOW_MS: i64 = 3_600_000;
const ALL_SLOTS: [Slot; SLOTS] = [
    Slot::Leak,
    Slot::LongWash,
    Slot::MainBoard,
    Slot::Heater,
    Slot::Sensor,
    Slot::InletClog,
    Slot::LowPressure,
    Slot::Unused,
    Slot::AbnormalWater,
    Slot::AbnormalEnergy,
    Slot::Silent,
];

impl Slot {
    const fn kind(self) -> FindingKind {
        match self {
            Slot::Leak => FindingKind::Leak,
            Slot::LongWash => FindingKind::LongWash,
            Slot::MainBoard => FindingKind::MainBoardFault,
            Slot::Heater => FindingKind::HeaterFault,
            Slot::Sensor => FindingKind::SensorFault,
            Slot::InletClog => FindingKind::InletClog,
            Slot::LowPressure => FindingKind::LowInletPressure,
            Slot::Unused => FindingKind::Unused7Days,
            Slot::AbnormalWater => FindingKind::AbnormalUsage {
                resource: Resource::Water,
            },
            Slot::AbnormalEnergy => FindingKind::AbnormalUsage {
                resource: Resource::Energy,
            },
            Slot::Silent => FindingKind::DeviceSilent,
        }
    }

    /// Severity of the analytics' own findings of this kind.
    const fn analytic_severity(self) -> Severity {
        match self {
            Slot::Leak => Severity::Critical,
            Slot::LongWash | Slot::MainBoard | Slot::Heater => Severity::Major,
            Slot::Sensor | Slot::InletClog | Slot::LowPressure | Slot::Silent => Severity::Warning,
            Slot::Unused | Slot::AbnormalWater | Slot::AbnormalEnergy => Severity::Info,
        }
    }

    /// The latch and source a device fault code feeds.
    const fn of_fault(code: FaultCode) -> (Slot, Source) {
        match code {
            FaultCode::Leak => (Slot::Leak, Source::DEVICE),
            FaultCode::ValveStuck => (Slot::LongWash, Source::DEVICE),
            FaultCode::HeaterFailure => (Slot::Heater, Source::DEVICE),
            FaultCode::HeaterOverTemp => (Slot::Heater, Source::DEVICE_SECOND),
            FaultCode::SensorError => (Slot::Sensor, Source::DEVICE),
            FaultCode::LowInletPressure => (Slot::LowPressure, Source::DEVICE),
            FaultCode::InletClog => (Slot::InletClog, Source::DEVICE),
            FaultCode::MainBoard => (Slot::MainBoard, Source::DEVICE),
        }
    }
}

/// Records what the analytics (not the device) see of `slot`'s condition at `at_ts_ms`,
/// an episode that began at `began_ts_ms`; see [`latch::Latch::set_since`].
fn set_analytic(
    latches: &mut LatchSet<SLOTS>,
    slot: Slot,
    present: bool,
    began_ts_ms: i64,
    at_ts_ms: i64,
    evidence: impl FnOnce() -> serde_json::Value,
    out: &mut Vec<Finding>,
) {
    latches.update(slot as usize, |latch| {
        latch.set_since(
            slot.kind(),
            Source::ANALYTIC,
            present,
            began_ts_ms,
            at_ts_ms,
            slot.analytic_severity(),
            evidence,
            out,
        )
    });
}

/// The cumulative water counter and heater energy counter of a reading.
fn water_and_energy(r: &Reading) -> (u64, Option<u32>) {
    match r {
        Reading::Toilet(r) => (r.water_ml, Some(r.heater_wh)),
        Reading::Purifier(r) => (r.dispensed_ml, None),
        Reading::Shower(r) => (r.water_ml, None),
    }
}

/// What [`DeviceRules::accept`] learnt about a message's place in the stream.
struct Accepted {
    /// Messages were lost before this one, or the device rebooted.
    gap: bool,
}

/// The fault rules' state for one device. See the [module docs](self). Serialised as
/// [`DeviceRulesRepr`], the shape snapshots have always had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "DeviceRulesRepr", into = "DeviceRulesRepr")]
pub struct DeviceRules {
    /// Whether a message was accepted (`last_message` is then the newest).
    has_message: bool,
    /// Whether a usage session ended since the previous telemetry.
    used_since_telemetry: bool,
    /// A message newer than any before arrived since the previous clock call.
    fresh_since_clock: bool,
    /// Whether a usage session was seen (`disuse_since_ts_ms` is then its end).
    session_seen: bool,
    latches: LatchSet<SLOTS>,
    /// `(boot_id, seq)` of the newest message accepted (when `has_message`).
    last_message: (u32, u32),
    /// While device faults raised before the current boot await confirmation: the
    /// device time of the first message of the current boot (only read then).
    reboot_check_since_ms: Maybe<i64>,
    /// Newest device time heard.
    last_heard_ts_ms: Maybe<i64>,
    /// Disuse counts from here: the end of the latest usage session (`session_seen`),
    /// else the first device time heard.
    disuse_since_ts_ms: Maybe<i64>,
    /// The latest `now_ms` of [`DeviceRules::on_clock`].
    last_clock_ms: Maybe<i64>,
    /// Time of the previous telemetry, and its idle gaps (the periodic reporting
    /// interval: firmware may also report every few seconds while water runs), seconds.
    last_telemetry_ts_ms: Maybe<i64>,
    report_intervals_s: SampleWindow<8>,
    /// The longest gap between two telemetry messages outside silence, on the device's
    /// current and previous day (device time), seconds; and that current day. A firmware
    /// that also reports while water runs has a busy day's median far below its quiet
    /// (night) cadence: silence is judged against both.
    longest_gap_s: [f32; 2],
    longest_gap_day: i32,
    /// Gateway clock minus device clock as seen by [`DeviceRules::on_clock`] just after a
    /// fresh message (the device's clock offset plus up to one clock period), seconds.
    clock_lags_s: SampleWindow<8>,
    /// Previous water counter, ml.
    last_water_ml: Maybe<u64>,
    flow: FlowBalance,
    water: DailyUsage,
    /// The model's own state: the model is its variant. Whether a message was lost since
    /// the previous telemetry is `flow`'s (set and cleared with it).
    per_model: PerModel,
}

/// [`DeviceRules`] as snapshots hold it.
#[derive(Serialize, Deserialize)]
struct DeviceRulesRepr {
    model: Model,
    latches: LatchSet<SLOTS>,
    /// `(boot_id, seq)` of the newest message accepted.
    last_message: Option<(u32, u32)>,
    /// Device time of the first message of the current boot (what is held of it: while
    /// `reboot_check_pending`).
    boot_started_ts_ms: i64,
    /// Device faults raised before the current boot still await confirmation.
    reboot_check_pending: bool,
    /// Newest device time heard, and the first (what is held of it: before a session).
    last_heard_ts_ms: Maybe<i64>,
    first_heard_ts_ms: Maybe<i64>,
    /// The latest `now_ms` of [`DeviceRules::on_clock`].
    last_clock_ms: Maybe<i64>,
    last_telemetry_ts_ms: Maybe<i64>,
    report_intervals_s: SampleWindow<8>,
    #[serde(default)]
    longest_gap_s: [f32; 2],
    #[serde(default)]
    longest_gap_day: i32,
    clock_lags_s: SampleWindow<8>,
    fresh_since_clock: bool,
    /// End of the latest usage session.
    last_session_ts_ms: Maybe<i64>,
    /// Previous heater energy counter (toilet), Wh.
    last_energy_wh: Maybe<u32>,
    last_water_ml: Maybe<u64>,
    interval_broken: bool,
    used_since_telemetry: bool,
    flow: FlowBalance,
    water: DailyUsage,
    per_model: PerModelRepr,
}

impl From<DeviceRulesRepr> for DeviceRules {
    fn from(r: DeviceRulesRepr) -> Self {
        let mut per_model = PerModel::from(r.per_model);
        if let PerModel::Toilet(toilet) = &mut per_model {
            toilet.last_energy_wh = r.last_energy_wh;
        }
        let session_seen = r.last_session_ts_ms.get().is_some();
        // `model` is the variant of `per_model`, `interval_broken` always `flow`'s.
        let _ = (r.model, r.interval_broken);
        DeviceRules {
            has_message: r.last_message.is_some(),
            used_since_telemetry: r.used_since_telemetry,
            fresh_since_clock: r.fresh_since_clock,
            session_seen,
            latches: r.latches,
            last_message: r.last_message.unwrap_or((0, 0)),
            reboot_check_since_ms: Maybe::from(
                r.reboot_check_pending.then_some(r.boot_started_ts_ms),
            ),
            last_heard_ts_ms: r.last_heard_ts_ms,
            disuse_since_ts_ms: if session_seen {
                r.last_session_ts_ms
            } else {
                r.first_heard_ts_ms
            },
            last_clock_ms: r.last_clock_ms,
            last_telemetry_ts_ms: r.last_telemetry_ts_ms,
            report_intervals_s: r.report_intervals_s,
            longest_gap_s: r.longest_gap_s,
            longest_gap_day: r.longest_gap_day,
            clock_lags_s: r.clock_lags_s,
            last_water_ml: r.last_water_ml,
            flow: r.flow,
            water: r.water,
            per_model,
        }
    }
}

impl From<DeviceRules> for DeviceRulesRepr {
    fn from(d: DeviceRules) -> Self {
        let last_energy_wh = match &d.per_model {
            PerModel::Toilet(toilet) => toilet.last_energy_wh,
            _ => Maybe::NONE,
        };
        let session = d.last_session_ts_ms();
        let (model, last_message, interval_broken) =
            (d.model(), d.last_message(), d.flow.is_broken());
        DeviceRulesRepr {
            model,
            latches: d.latches,
            last_message,
            boot_started_ts_ms: d.reboot_check_since_ms.get().unwrap_or(0),
            reboot_check_pending: d.reboot_check_since_ms.get().is_some(),
            last_heard_ts_ms: d.last_heard_ts_ms,
            // Once a session is seen, the first time heard is no longer held (nor used).
            first_heard_ts_ms: if d.session_seen {
                Maybe::NONE
            } else {
                d.disuse_since_ts_ms
            },
            last_clock_ms: d.last_clock_ms,
            last_telemetry_ts_ms: d.last_telemetry_ts_ms,
            report_intervals_s: d.report_intervals_s,
            longest_gap_s: d.longest_gap_s,
            longest_gap_day: d.longest_gap_day,
            clock_lags_s: d.clock_lags_s,
            fresh_since_clock: d.fresh_since_clock,
            last_session_ts_ms: Maybe::from(session),
            last_energy_wh,
            last_water_ml: d.last_water_ml,
            interval_broken,
            used_since_telemetry: d.used_since_telemetry,
            flow: d.flow,
            water: d.water,
            per_model: d.per_model.into(),
        }
    }
}

/// The state only one kind of fixture needs (a toilet has no inlet pressure sensor, a
/// purifier no heater, only a shower a regulated temperature), boxed so that a device
/// carries only its own (an inline enum would be as large as its largest variant).
/// Serialised as [`PerModelRepr`].
#[derive(Debug, Clone, PartialEq)]
enum PerModel {
    Toilet(Box<ToiletState>),
    Purifier(Box<SupplyState>),
    Shower(Box<ShowerState>),
}

/// [`PerModel`] as snapshots hold it: like the struct variants it replaced
/// (`{"toilet": {...}}`, `{"supply": {...}}`, a shower's with its drift).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PerModelRepr {
    Toilet(Box<ToiletState>),
    Supply(Box<SupplyRepr>),
}

/// Washes and flushes, heater energy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ToiletState {
    long_sessions: LongSessions,
    energy: DailyUsage,
    #[serde(default)]
    heater: HeaterWatch,
    /// Previous heater energy counter, Wh (snapshots hold it beside the model's part).
    #[serde(skip)]
    last_energy_wh: Maybe<u32>,
    #[serde(default)]
    valve: ValveWatch,
}

/// Flow trend and pressure (purifier, shower).
#[derive(Debug, Clone, Default, PartialEq)]
struct SupplyState {
    clog: ClogTrend,
    pressure: PressureWatch,
}

/// A shower's: its supply and temperature drift, in one block.
#[derive(Debug, Clone, Default, PartialEq)]
struct ShowerState {
    supply: SupplyState,
    drift: TemperatureDrift,
}

/// [`SupplyState`] (and a shower's drift) as snapshots hold it.
#[derive(Serialize, Deserialize)]
struct SupplyRepr {
    clog: ClogTrend,
    pressure: PressureWatch,
    #[serde(default)]
    drift: Option<Box<TemperatureDrift>>,
}

impl From<PerModelRepr> for PerModel {
    fn from(r: PerModelRepr) -> Self {
        match r {
            PerModelRepr::Toilet(t) => PerModel::Toilet(t),
            PerModelRepr::Supply(s) => {
                let SupplyRepr {
                    clog,
                    pressure,
                    drift,
                } = *s;
                let supply = SupplyState { clog, pressure };
                match drift {
                    Some(drift) => PerModel::Shower(Box::new(ShowerState {
                        supply,
                        drift: *drift,
                    })),
                    None => PerModel::Purifier(Box::new(supply)),
                }
            }
        }
    }
}

impl From<PerModel> for PerModelRepr {
    fn from(p: PerModel) -> Self {
        match p {
            PerModel::Toilet(t) => PerModelRepr::Toilet(t),
            PerModel::Purifier(s) => PerModelRepr::Supply(Box::new(SupplyRepr {
                clog: s.clog,
                pressure: s.pressure,
                drift: None,
            })),
            PerModel::Shower(s) => {
                let ShowerState { supply, drift } = *s;
                PerModelRepr::Supply(Box::new(SupplyRepr {
                    clog: supply.clog,
                    pressure: supply.pressure,
                    drift: Some(Box::new(drift)),
                }))
            }
        }
    }
}

impl PerModel {
    fn new(model: Model) -> PerModel {
        match model {
            Model::Toilet => PerModel::Toilet(Box::default()),
            Model::Purifier => PerModel::Purifier(Box::default()),
            Model::Shower => PerModel::Shower(Box::default()),
        }
    }

    /// Bytes on the heap.
    fn heap_bytes(&self) -> usize {
        match self {
            PerModel::Toilet(_) => std::mem::size_of::<ToiletState>(),
            PerModel::Purifier(_) => std::mem::size_of::<SupplyState>(),
            PerModel::Shower(_) => std::mem::size_of::<ShowerState>(),
        }
    }

    /// The supply's state (purifier, shower) and a shower's drift.
    fn supply(&mut self) -> Option<(&mut SupplyState, Option<&mut TemperatureDrift>)> {
        match self {
            PerModel::Toilet(_) => None,
            PerModel::Purifier(s) => Some((&mut **s, None)),
            PerModel::Shower(s) => {
                let ShowerState { supply, drift } = &mut **s;
                Some((supply, Some(drift)))
            }
        }
    }
}

impl DeviceRules {
    /// Fresh state for a device of `model` (nothing learnt yet).
    pub fn new(model: Model, cfg: &RulesConfig) -> Self {
        let _ = cfg;
        DeviceRules {
            has_message: false,
            used_since_telemetry: false,
            fresh_since_clock: false,
            session_seen: false,
            latches: LatchSet::new(),
            last_message: (0, 0),
            reboot_check_since_ms: Maybe::NONE,
            last_heard_ts_ms: Maybe::NONE,
            disuse_since_ts_ms: Maybe::NONE,
            last_clock_ms: Maybe::NONE,
            last_telemetry_ts_ms: Maybe::NONE,
            report_intervals_s: SampleWindow::new(),
            longest_gap_s: [0.0; 2],
            longest_gap_day: 0,
            clock_lags_s: SampleWindow::new(),
            last_water_ml: Maybe::NONE,
            flow: FlowBalance::default(),
            water: DailyUsage::default(),
            per_model: PerModel::new(model),
        }
    }

    /// Bytes of state of this device: the struct, its model's part and its active
    /// latches on the heap (the allocator's own bookkeeping, typically 8–16 bytes per
    /// block, not counted).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<DeviceRules>() + self.per_model.heap_bytes() + self.latches.heap_bytes()
    }

    /// The fixture model.
    pub fn model(&self) -> Model {
        match self.per_model {
            PerModel::Toilet(_) => Model::Toilet,
            PerModel::Purifier(_) => Model::Purifier,
            PerModel::Shower(_) => Model::Shower,
        }
    }

    /// Whether a finding of `kind` is currently active.
    pub fn is_active(&self, kind: FindingKind) -> bool {
        ALL_SLOTS
            .iter()
            .any(|s| s.kind() == kind && self.latches.get(*s as usize).is_active())
    }

    /// The newest message accepted, `(boot_id, seq)`: a message at or below it is not
    /// taken by [`DeviceRules::on_telemetry`] or [`DeviceRules::on_event`].
    pub fn last_message(&self) -> Option<(u32, u32)> {
        self.has_message.then_some(self.last_message)
    }

    /// The newest device timestamp heard from the device, UTC ms on its own clock.
    pub fn last_heard_ts_ms(&self) -> Option<i64> {
        self.last_heard_ts_ms.get()
    }

    /// Reconciles this state, rebuilt by replaying a device's messages in device-time
    /// order (late ones included), with `live`, the state that took the same messages in
    /// arrival order and whose edges were already reported. Pushes to `out` only the
    /// edges that change what was reported: an episode active here but not in `live`
    /// (`Active`, with the replay's own finding from `replayed` where it has one) and an
    /// episode active in `live` but not here (`Cleared`). An episode both see goes on
    /// unreported, so a replay never repeats a finding.
    pub fn reconcile(
        &self,
        live: &DeviceRules,
        replayed: &[Finding],
        at_ts_ms: i64,
        out: &mut Vec<Finding>,
    ) {
        let evidence = || json!({"source": "analytics", "reason": "late messages analysed in device-time order"});
        for slot in ALL_SLOTS {
            let (mine, theirs) = (
                self.latches.get(slot as usize),
                live.latches.get(slot as usize),
            );
            match (mine.is_active(), theirs.is_active()) {
                (true, false) => {
                    let own = replayed.iter().rev().find(|f| {
                        f.kind == slot.kind()
                            && f.state == FindingState::Active
                            && f.began_ts_ms == mine.began_ts_ms()
                    });
                    out.push(own.cloned().unwrap_or_else(|| Finding {
                        kind: slot.kind(),
                        severity: mine.severity().unwrap_or(slot.analytic_severity()),
                        state: FindingState::Active,
                        began_ts_ms: mine.began_ts_ms(),
                        at_ts_ms,
                        evidence: evidence(),
                    }));
                }
                (false, true) => out.push(Finding {
                    kind: slot.kind(),
                    severity: theirs.severity().unwrap_or(slot.analytic_severity()),
                    state: FindingState::Cleared,
                    began_ts_ms: theirs.began_ts_ms(),
                    at_ts_ms,
                    evidence: evidence(),
                }),
                _ => {}
            }
        }
    }

    /// The device's learnt reporting interval (median of recent telemetry gaps), ms.
    pub fn report_interval_ms(&self, cfg: &RulesConfig) -> i64 {
        self.report_intervals_s
            .summary()
            .map_or(cfg.default_report_interval_ms, |s| {
                (s.median * 1000.0) as i64
            })
    }

    /// The device's clock offset (gateway time minus device time) as learnt, ms: the
    /// smallest lag of a fresh message at a clock call, over the last few.
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_lags_s
            .iter()
            .reduce(f32::min)
            .map_or(0, |s| (f64::from(s) * 1000.0) as i64)
    }

    /// End of the latest usage session.
    fn last_session_ts_ms(&self) -> Option<i64> {
        self.disuse_since_ts_ms.get().filter(|_| self.session_seen)
    }

    /// The longest normal gap between two messages lately (today and yesterday), ms.
    fn longest_recent_gap_ms(&self) -> i64 {
        (self.longest_gap_s[0].max(self.longest_gap_s[1]) * 1000.0) as i64
    }

    /// Learns a gap between two telemetry messages (not one spent silent) on device day
    /// `ts_ms`.
    fn learn_gap(&mut self, ts_ms: i64, gap_ms: i64) {
        let day = i32::try_from(ts_ms.div_euclid(protocol::catalog::DAY_MS)).unwrap_or(0);
        if day != self.longest_gap_day {
            let yesterday = if day == self.longest_gap_day.saturating_add(1) {
                self.longest_gap_s[0]
            } else {
                0.0
            };
            self.longest_gap_s = [0.0, yesterday];
            self.longest_gap_day = day;
        }
        let gap_s = gap_ms as f32 / 1000.0;
        if gap_s > self.longest_gap_s[0] {
            self.longest_gap_s[0] = gap_s;
        }
    }

    fn silent_after_ms(&self, cfg: &RulesConfig) -> i64 {
        // Three learnt intervals, and never under twice the longest normal gap lately
        // (one lost message of a firmware's quiet cadence is not silence).
        let by_interval = ((self.report_interval_ms(cfg) as f32 * cfg.silent_after_intervals)
            as i64)
            .max(2 * self.longest_recent_gap_ms());
        // Until a few idle intervals are learnt the cadence is a guess: firmware reports
        // every 5 to 60 minutes.
        let floor = if self.report_intervals_s.len() < 3 {
            cfg.silent_unlearnt_ms
        } else {
            cfg.silent_min_ms
        };
        by_interval.max(floor)
    }

    /// Places a message in the stream; `None` for a duplicate or an older message.
    fn accept(
        &mut self,
        cfg: &RulesConfig,
        boot_id: u32,
        seq: u32,
        ts_ms: i64,
        out: &mut Vec<Finding>,
    ) -> Option<Accepted> {
        let gap = match self.last_message() {
            Some(last) if (boot_id, seq) <= last => return None,
            Some((last_boot, last_seq)) if last_boot == boot_id => seq != last_seq.wrapping_add(1),
            Some(_) => {
                let pending = self.latches.active().any(|(_, l)| l.has_device_source());
                self.reboot_check_since_ms = Maybe::from(pending.then_some(ts_ms));
                true
            }
            None => {
                // The boot's first message (the time is only held while a check waits).
                if self.reboot_check_since_ms.get().is_some() {
                    self.reboot_check_since_ms.replace(ts_ms);
                }
                false
            }
        };
        self.last_message = (boot_id, seq);
        self.has_message = true;
        if gap {
            self.flow.on_gap();
        }
        self.heard(cfg, ts_ms, out);
        if self
            .reboot_check_since_ms
            .get()
            .is_some_and(|started| ts_ms - started >= cfg.reboot_grace_ms)
        {
            self.expire_forgotten_device_faults(boot_id, ts_ms, out);
        }
        Some(Accepted { gap })
    }

    fn expire_forgotten_device_faults(&mut self, boot_id: u32, ts_ms: i64, out: &mut Vec<Finding>) {
        self.reboot_check_since_ms = Maybe::NONE;
        for slot in ALL_SLOTS {
            if !self.latches.get(slot as usize).has_device_source() {
                continue;
            }
            self.latches.update(slot as usize, |latch| {
                if latch.device_boot() < boot_id {
                    latch.drop_device_sources(
                        slot.kind(),
                        ts_ms,
                        || json!({"source": "device", "reason": "not raised again after a reboot"}),
                        out,
                    );
                }
            });
        }
    }

    fn heard(&mut self, cfg: &RulesConfig, ts_ms: i64, out: &mut Vec<Finding>) {
        // The first time heard (kept until a session ends: `get_or_insert`).
        self.disuse_since_ts_ms.get_or_insert(ts_ms);
        if self.last_heard_ts_ms.get().is_none_or(|t| ts_ms > t) {
            self.fresh_since_clock = true;
        }
        let newest = self.last_heard_ts_ms.get().map_or(ts_ms, |t| t.max(ts_ms));
        self.last_heard_ts_ms.replace(newest);
        if !self.latches.get(Slot::Silent as usize).is_active() {
            return;
        }
        // A message clears silence once it is recent: a backlog drained after an outage
        // starts with old messages.
        let silent_after = self.silent_after_ms(cfg);
        let offset = self.clock_offset_ms();
        if self
            .last_clock_ms
            .get()
            .is_none_or(|now| ts_ms + offset >= now - silent_after)
        {
            let began = self.latches.get(Slot::Silent as usize).began_ts_ms();
            set_analytic(
                &mut self.latches,
                Slot::Silent,
                false,
                ts_ms,
                ts_ms,
                || json!({"silent_ms": ts_ms - began}),
                out,
            );
        }
    }

    /// A telemetry message of this device.
    pub fn on_telemetry(&mut self, cfg: &RulesConfig, t: &Telemetry, out: &mut Vec<Finding>) {
        let was_silent = self.latches.get(Slot::Silent as usize).is_active();
        let Some(accepted) = self.accept(cfg, t.boot_id, t.seq, t.ts, out) else {
            return;
        };
        let ts = t.ts;
        // Cleared by the water balance below, which sees the same gaps.
        let broken = self.flow.is_broken() || accepted.gap;
        let used = std::mem::take(&mut self.used_since_telemetry);
        let previous_ts = self.last_telemetry_ts_ms.replace(ts);
        let interval_ms = previous_ts.map(|p| ts - p);
        let (water_now, _) = water_and_energy(&t.reading);
        // The periodic interval: idle gaps (no water, no session), or any gap longer
        // than the one learnt (a device whose water never stops still reports).
        let idle = !used && self.last_water_ml.get().is_some_and(|w| w == water_now);
        if let Some(dt) = interval_ms.filter(|&dt| dt > 0 && dt <= 6 * 3_600_000) {
            if idle || dt > self.report_interval_ms(cfg) {
                self.report_intervals_s.push(dt as f32 / 1000.0);
            }
            if !was_silent {
                self.learn_gap(ts, dt);
            }
        }
        let measurable =
            !broken && interval_ms.is_some_and(|dt| dt > 0 && dt <= cfg.max_telemetry_gap_ms);
        // Daily totals are differences of cumulative counters: a message lost in between,
        // or two readings of one instant, leave the difference exact. Only a counter
        // reset (it falls) or a long silence (its use cannot be placed in a day) does not.
        let countable = interval_ms.is_some_and(|dt| (0..=cfg.max_telemetry_gap_ms).contains(&dt));
        let (water_ml, energy_wh, pressure_kpa) = match &t.reading {
            Reading::Toilet(r) => (r.water_ml, Some(r.heater_wh), None),
            Reading::Purifier(r) => (r.dispensed_ml, None, Some(r.inlet_pressure_kpa)),
            Reading::Shower(r) => (r.water_ml, None, Some(r.pressure_kpa)),
        };

        // Leak by flow balance (not while a stuck valve explains the flow: the device's
        // report, or water seen running on after a session).
        let stuck_reported = self
            .latches
            .get(Slot::LongWash as usize)
            .has_device_source();
        let stuck =
            stuck_reported || matches!(&self.per_model, PerModel::Toilet(t) if t.valve.is_active());
        let previous_water_ml = self.last_water_ml.replace(water_ml);
        let previous = previous_ts.zip(previous_water_ml);
        let interval = self.report_interval_ms(cfg);
        if let Some((present, rate)) =
            self.flow
                .on_telemetry(cfg, (ts, water_ml), previous, interval, stuck)
        {
            let threshold = cfg.leak_min_ml_per_min;
            set_analytic(
                &mut self.latches,
                Slot::Leak,
                present,
                ts,
                ts,
                || json!({"source": "analytics", "rule": "flow_balance", "unexplained_ml_per_min": rate, "threshold_ml_per_min": threshold}),
                out,
            );
        }

        // A valve that did not close (toilets): water running on after a session.
        if let PerModel::Toilet(toilet) = &mut self.per_model {
            let anchor_ts = toilet.valve.anchor_ts_ms();
            // The device's own report explains the water: nothing to judge.
            if let Some((present, run)) = toilet.valve.on_telemetry(
                (ts, water_ml),
                previous,
                broken || stuck_reported,
                cfg.max_telemetry_gap_ms,
            ) {
                let threshold = valve::RUNNING_ML_PER_MIN;
                set_analytic(
                    &mut self.latches,
                    Slot::LongWash,
                    present,
                    anchor_ts.unwrap_or(ts),
                    ts,
                    || {
                        if present {
                            json!({"source": "analytics", "rule": "water_after_session", "unexplained_ml": run.unexplained_ml, "minutes": run.minutes, "ml_per_min": run.ml_per_min, "threshold_ml_per_min": threshold})
                        } else {
                            json!({"source": "analytics", "rule": "water_after_session", "stood_minutes": run.minutes})
                        }
                    },
                    out,
                );
            }
        }

        // Daily totals.
        // A leak or a stuck valve adds water; a clog or low pressure takes some away
        // (and a day after it looks abnormal against a norm learnt while clogged).
        let disturbed_water = self.latches.get(Slot::Leak as usize).is_active()
            || self.latches.get(Slot::LongWash as usize).is_active()
            || self.latches.get(Slot::InletClog as usize).is_active()
            || self.latches.get(Slot::LowPressure as usize).is_active();
        let water_delta = previous_water_ml
            .filter(|&prev| countable && water_ml >= prev)
            .map(|prev| (water_ml - prev) as f64);
        let edge = self.water.on_interval(
            &cfg.usage_water,
            cfg.usage_min_days,
            ts,
            water_delta,
            disturbed_water,
            used,
        );
        self.usage_edge(Slot::AbnormalWater, ts, edge, out);
        if let (Some(wh), PerModel::Toilet(toilet)) = (energy_wh, &mut self.per_model) {
            let disturbed_energy =
                disturbed_water || self.latches.get(Slot::Heater as usize).is_active();
            let delta = toilet
                .last_energy_wh
                .replace(wh)
                .filter(|&prev| countable && wh >= prev)
                .map(|prev| f64::from(wh - prev));
            // The heater from the tank temperature and its energy.
            if let Reading::Toilet(r) = &t.reading {
                // The heater's rate needs a measured interval (one of some length, none lost).
                let interval = delta.filter(|_| measurable).zip(interval_ms);
                if let Some((present, j)) =
                    toilet.heater.on_reading(cfg, ts, r.water_temp_c, interval)
                {
                    let drop = cfg.heater_drop_c;
                    set_analytic(
                        &mut self.latches,
                        Slot::Heater,
                        present,
                        ts,
                        ts,
                        || json!({"source": "analytics", "rule": "heater_energy_without_heat", "block_max_c": j.block_max_c, "baseline_c": j.baseline_c, "drop_c": drop, "rate_wh_per_h": j.rate_wh_per_h, "baseline_wh_per_h": j.baseline_wh_per_h}),
                        out,
                    );
                }
            }
            let energy = &mut toilet.energy;
            let edge = energy.on_interval(
                &cfg.usage_energy,
                cfg.usage_min_days,
                ts,
                delta,
                disturbed_energy,
                used,
            );
            self.usage_edge(Slot::AbnormalEnergy, ts, edge, out);
        }

        // Low inlet pressure.
        if let (Some(kpa), Some((supply, _))) = (pressure_kpa, self.per_model.supply()) {
            let pressure = &mut supply.pressure;
            if let Some(low) = pressure.on_reading(cfg, ts, kpa) {
                let threshold = if low {
                    cfg.low_pressure_raise_kpa
                } else {
                    cfg.low_pressure_clear_kpa
                };
                set_analytic(
                    &mut self.latches,
                    Slot::LowPressure,
                    low,
                    ts,
                    ts,
                    || json!({"source": "analytics", "pressure_kpa": kpa, "threshold_kpa": threshold}),
                    out,
                );
            }
        }
    }

    fn usage_edge(
        &mut self,
        slot: Slot,
        ts: i64,
        edge: Option<(bool, UsageJudgement)>,
        out: &mut Vec<Finding>,
    ) {
        let Some((present, j)) = edge else {
            return;
        };
        let unit = if slot == Slot::AbnormalWater {
            "ml"
        } else {
            "wh"
        };
        let evidence = || {
            json!({
                "source": "analytics",
                "unit": unit,
                "day_total": j.total,
                "baseline_median": j.baseline.median,
                "baseline_sigma": j.baseline.sigma,
                "baseline_days": j.baseline.count,
                "threshold": j.threshold,
                "robust_z": j.z,
                "normal_tail_p": stats::normal_upper_tail(j.z),
            })
        };
        set_analytic(&mut self.latches, slot, present, ts, ts, evidence, out);
    }

    /// An event message of this device.
    pub fn on_event(&mut self, cfg: &RulesConfig, e: &Event, out: &mut Vec<Finding>) {
        if self.accept(cfg, e.boot_id, e.seq, e.ts, out).is_none() {
            return;
        }
        match &e.event {
            EventKind::Session(s) => self.on_session(cfg, e.ts, s, out),
            EventKind::Fault(f) => self.on_fault(e.ts, e.boot_id, f, out),
        }
    }

    fn on_fault(&mut self, ts: i64, boot_id: u32, f: &FaultEvent, out: &mut Vec<Finding>) {
        let (slot, source) = Slot::of_fault(f.code);
        let present = f.state == FaultState::Raised;
        self.latches.update(slot as usize, |latch| {
            latch.set_from_device(
                slot.kind(),
                source,
                present,
                ts,
                boot_id,
                f.severity,
                || json!({"source": "device", "fault_code": f.code.as_str(), "value": f.value}),
                out,
            )
        });
    }

    fn on_session(&mut self, cfg: &RulesConfig, ts: i64, s: &Session, out: &mut Vec<Finding>) {
        if matches!(
            s.kind,
            SessionKind::Wash | SessionKind::Flush | SessionKind::Cleaning
        ) {
            // The valve opened and closed again: water after it is judged afresh.
            if let PerModel::Toilet(toilet) = &mut self.per_model {
                if toilet.valve.on_water_session(s.water_ml) {
                    set_analytic(
                        &mut self.latches,
                        Slot::LongWash,
                        false,
                        ts,
                        ts,
                        || json!({"source": "analytics", "rule": "water_after_session", "session": s.kind.as_str()}),
                        out,
                    );
                }
            }
        }
        // A cleaning programme (contract v1.1) runs by itself: its water is accounted
        // for, but it is nobody's use and no wash or flush to judge.
        if s.kind == SessionKind::Cleaning {
            self.flow.on_session(s.kind, s.started_ts, s.water_ml);
            return;
        }
        let newest = self.last_session_ts_ms().map_or(ts, |t: i64| t.max(ts));
        self.disuse_since_ts_ms.replace(newest);
        self.session_seen = true;
        if self.latches.get(Slot::Unused as usize).is_active() {
            set_analytic(
                &mut self.latches,
                Slot::Unused,
                false,
                ts,
                ts,
                || json!({"source": "analytics", "session": s.kind.as_str()}),
                out,
            );
        }
        self.flow.on_session(s.kind, s.started_ts, s.water_ml);
        self.used_since_telemetry = true;

        match &mut self.per_model {
            PerModel::Toilet(toilet) => {
                let long_sessions = &mut toilet.long_sessions;
                // Long wash / flush against this device's own.
                let stuck = self
                    .latches
                    .get(Slot::LongWash as usize)
                    .has_device_source();
                if let Some((long, (d, median, threshold))) =
                    long_sessions.on_session(cfg, s.kind, s.duration_s, stuck)
                {
                    let kind = s.kind;
                    set_analytic(
                        &mut self.latches,
                        Slot::LongWash,
                        long,
                        ts,
                        ts,
                        || json!({"source": "analytics", "session": kind.as_str(), "duration_s": d, "baseline_median_s": median, "threshold_s": threshold}),
                        out,
                    );
                }
            }
            PerModel::Purifier(_) | PerModel::Shower(_) => {
                let Some((SupplyState { clog, pressure }, drift)) = self.per_model.supply() else {
                    return;
                };
                // Inlet clog by flow trend.
                let pressure_fine = pressure.is_fine(cfg);
                if let Some((clogged, ratio, baseline)) =
                    clog.on_session(cfg, ts, s.kind, s.duration_s, s.water_ml, pressure_fine)
                {
                    let pressure = pressure.last_kpa();
                    let threshold = if clogged {
                        cfg.clog_raise_ratio
                    } else {
                        cfg.clog_clear_ratio
                    };
                    set_analytic(
                        &mut self.latches,
                        Slot::InletClog,
                        clogged,
                        ts,
                        ts,
                        || json!({"source": "analytics", "flow_ratio": ratio, "baseline_ml_per_s": baseline, "threshold_ratio": threshold, "pressure_kpa": pressure}),
                        out,
                    );
                }
                // Shower temperature-sensor drift.
                if let (SessionKind::Shower, Some(temp_c), Some(drift)) = (s.kind, s.temp_c, drift)
                {
                    if let Some((drifting, shift, middle)) = drift.on_session(cfg, ts, temp_c) {
                        set_analytic(
                            &mut self.latches,
                            Slot::Sensor,
                            drifting,
                            ts,
                            ts,
                            || json!({"source": "analytics", "rule": "temperature_drift", "shift_c": shift, "baseline_middle_c": middle, "min_offset_c": cfg.drift_min_c}),
                            out,
                        );
                    }
                }
            }
        }
    }

    /// The clock: `now_ms` is the gateway's time (UTC ms), called periodically. Raises
    /// silence and disuse.
    pub fn on_clock(&mut self, cfg: &RulesConfig, now_ms: i64, out: &mut Vec<Finding>) {
        let now = self.last_clock_ms.get().map_or(now_ms, |t| t.max(now_ms));
        let previous_clock = self.last_clock_ms.replace(now);
        let Some(heard_ts) = self.last_heard_ts_ms.get() else {
            return;
        };
        // Learn the device clock's offset from fresh messages: `now − ts` is the offset
        // plus the time since the message arrived, under one clock period when the
        // previous clock call was recent (else the lag says nothing).
        let fresh = std::mem::take(&mut self.fresh_since_clock);
        // The very first lag is taken too (the gateway sweeps soon after a first message).
        let lag = now - heard_ts;
        let same_clock = !self.clock_lags_s.is_empty()
            && (lag - self.clock_offset_ms()).abs() <= CLOCK_FOLLOW_MS;
        if fresh
            && previous_clock.is_none_or(|p| now - p <= CLOCK_LAG_MAX_PERIOD_MS)
            && (lag.abs() <= MAX_CLOCK_OFFSET_MS || same_clock)
        {
            self.clock_lags_s.push(((now - heard_ts) / 1000) as f32);
        }
        // On the gateway's clock.
        let offset = self.clock_offset_ms();
        let last_heard = heard_ts + offset;
        let silent_after = self.silent_after_ms(cfg);
        let silent = now - last_heard > silent_after;
        if silent {
            let interval = self.report_interval_ms(cfg);
            set_analytic(
                &mut self.latches,
                Slot::Silent,
                true,
                heard_ts,
                now,
                || json!({"source": "analytics", "last_heard_ts_ms": heard_ts, "clock_offset_ms": offset, "report_interval_ms": interval, "silent_after_ms": silent_after}),
                out,
            );
            return;
        }
        // Disuse, judged only while the device is heard (a silent device may be in use).
        // The latest session, else the first time heard.
        let since = self.disuse_since_ts_ms.get().unwrap_or(heard_ts);
        if now - self.clock_offset_ms() - since >= cfg.unused_after_ms
            && !self.latches.get(Slot::Unused as usize).is_active()
        {
            let after = cfg.unused_after_ms;
            let last_session = self.last_session_ts_ms();
            set_analytic(
                &mut self.latches,
                Slot::Unused,
                true,
                since,
                now,
                || json!({"source": "analytics", "last_session_ts_ms": last_session, "unused_after_ms": after}),
                out,
            );
        }
    }
}
