//! Per-model fixture logic: usage-session state machines, cumulative counters,
//! heater control and local fault detection.
//!
//! [`Fixture::step`] takes the time (ms) and one [`Sample`] of debounced inputs and
//! sensor readings, and returns the [`Outputs`] to drive plus the events that
//! happened. It never reads a clock and never touches hardware, so the same code
//! runs on the board (fed by [`crate::board`]) and in the fleet simulator (fed by
//! simulated readings at any speed). Steps may be irregular: every rule is written
//! in elapsed milliseconds, not in step counts.
//!
//! Sessions (one at a time per fixture, plus the toilet's seat session):
//!
//! ```text
//!  Idle --demand--> Running (valve open) --demand off / max on--> Running (valve closed)
//!    ^                                                                 |  flow stops
//!    +---------------------- Session event ----------------------------+
//!    |                                                                 |  flow goes on > stuck_after
//!    +---- flow stopped for 60 s (ValveStuck cleared) ---- Stuck <-----+  (ValveStuck raised,
//!                                                                          Session event emitted)
//! ```

use heapless::Vec;
use protocol::message::{
    Cartridge, CartridgeKind, EventKind, FaultCode, FaultEvent, FaultState, Model, PurifierReading,
    Reading, Session, SessionKind, Severity, ShowerReading, ToiletReading, MAX_CARTRIDGES,
};

use crate::fault::Hysteresis;

/// Events one step can produce (seat + usage session + every fault code, with room to spare).
pub const MAX_EVENTS_PER_STEP: usize = 16;

/// The events of one step.
pub type Events = Vec<EventKind, MAX_EVENTS_PER_STEP>;

/// What the user asks for at this moment (buttons, lever, tap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Demand {
    /// Nothing.
    #[default]
    None,
    /// Toilet: bidet wash button held / wash program running.
    Wash,
    /// Toilet: flush lever pressed.
    Flush,
    /// Purifier tap or shower lever open.
    Draw,
    /// Toilet: the cleaning programme runs (contract v1.1 `cleaning` session).
    Clean,
}

/// Sensor indices, the `value` of a [`FaultCode::SensorError`] event.
pub mod sensor {
    /// Water temperature (toilet wash water, shower mixed water).
    pub const WATER_TEMP: u8 = 0;
    /// Toilet seat temperature.
    pub const SEAT_TEMP: u8 = 1;
    /// Inlet pressure.
    pub const PRESSURE: u8 = 2;
    /// Inlet TDS.
    pub const TDS_IN: u8 = 3;
    /// Outlet TDS.
    pub const TDS_OUT: u8 = 4;
}

/// One sample of inputs. Analog values are `None` when the sensor failed to answer
/// after the board layer's retries.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Debounced seat occupancy (toilet).
    pub seat: bool,
    /// Debounced leak probe, true when wet.
    pub leak_probe: bool,
    /// What the user asks for.
    pub demand: Demand,
    /// Millilitres through the flow meter since the previous sample.
    pub flow_ml: u32,
    /// Water temperature, milli-°C.
    pub water_temp_mc: Option<i32>,
    /// Seat temperature, milli-°C.
    pub seat_temp_mc: Option<i32>,
    /// Inlet pressure, Pa.
    pub pressure_pa: Option<i32>,
    /// Inlet TDS, ppm.
    pub tds_in_ppm: Option<u16>,
    /// Outlet TDS, ppm.
    pub tds_out_ppm: Option<u16>,
}

/// What to drive after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outputs {
    /// Water valve (wash / flush / dispense pump / shower) open.
    pub valve_open: bool,
    /// Water heater on (toilet).
    pub heater_on: bool,
}

/// Water through one cartridge slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CartridgeCounter {
    /// Millilitres since the last replacement.
    pub ml: u64,
    /// Replacements so far.
    pub replacements: u32,
}

/// Cumulative counters, persisted by [`crate::storage`]. Durations and energy are kept
/// in ms and mWh so that many short steps do not lose rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Toilet seat sessions.
    pub seat_sessions: u32,
    /// Toilet washes.
    pub washes: u32,
    /// Toilet wash time, ms.
    pub wash_ms: u64,
    /// Toilet flushes.
    pub flushes: u32,
    /// All metered water, ml.
    pub water_ml: u64,
    /// Heater energy, mWh.
    pub heater_mwh: u64,
    /// Purifier: water dispensed, ml.
    pub dispensed_ml: u64,
    /// Purifier pump time, ms.
    pub pump_ms: u64,
    /// Showers taken.
    pub showers: u32,
    /// Shower time, ms.
    pub shower_ms: u64,
    /// Per cartridge slot.
    pub cartridges: [CartridgeCounter; MAX_CARTRIDGES],
    /// Learned normal flow of the main session kind, ml/min (inlet-clog baseline).
    pub flow_baseline_ml_min: u32,
    /// Sessions that went into the baseline.
    pub flow_baseline_n: u32,
}

/// Thresholds and timings. [`Config::for_model`] gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Longest the valve stays open on one demand, per kind (ms): wash, flush, draw.
    pub max_on_ms: [u32; 3],
    /// Flow that goes on this long after the valve closed means a stuck valve (ms): wash, flush, draw.
    pub stuck_after_ms: [u32; 3],
    /// Unexplained flow at or above this rate is a leak, ml/min.
    pub leak_min_ml_min: u32,
    /// Leak-rate evaluation window, ms.
    pub leak_window_ms: u32,
    /// Leak raise / clear persistence, ms.
    pub leak_raise_ms: u32,
    /// See `leak_raise_ms`.
    pub leak_clear_ms: u32,
    /// Heater set point, milli-°C (toilet).
    pub heater_setpoint_mc: i32,
    /// Heater power, W.
    pub heater_power_w: u32,
    /// Over-temperature raise / clear thresholds, milli-°C.
    pub over_temp_raise_mc: i32,
    /// See `over_temp_raise_mc`.
    pub over_temp_clear_mc: i32,
    /// Heater on this long without reaching `setpoint - heater_fail_margin_mc` is a failure, ms.
    pub heater_fail_after_ms: u32,
    /// See `heater_fail_after_ms`.
    pub heater_fail_margin_mc: i32,
    /// Low inlet pressure raise / clear thresholds, Pa.
    pub low_pressure_raise_pa: i32,
    /// See `low_pressure_raise_pa`.
    pub low_pressure_clear_pa: i32,
    /// Sensor failure raise / clear persistence, ms.
    pub sensor_raise_ms: u32,
    /// See `sensor_raise_ms`.
    pub sensor_clear_ms: u32,
    /// Flow ratio (per mille of baseline) below which a session counts toward inlet clog.
    pub clog_ratio_raise_pm: u32,
    /// Flow ratio at or above which a session counts toward clearing it.
    pub clog_ratio_clear_pm: u32,
    /// Consecutive low-flow sessions to raise, good sessions to clear.
    pub clog_sessions: (u8, u8),
}

impl Config {
    /// Defaults for `model`.
    pub const fn for_model(model: Model) -> Config {
        let _ = model;
        Config {
            // wash 3 min, flush lever 5 s, draw (dispense / shower) 60 min.
            max_on_ms: [180_000, 5_000, 3_600_000],
            // wash 30 s, flush refill 2 min, draw 30 s.
            stuck_after_ms: [30_000, 120_000, 30_000],
            leak_min_ml_min: 10,
            leak_window_ms: 60_000,
            leak_raise_ms: 10 * 60_000,
            leak_clear_ms: 30 * 60_000,
            heater_setpoint_mc: 38_000,
            heater_power_w: 1_200,
            over_temp_raise_mc: 55_000,
            over_temp_clear_mc: 45_000,
            heater_fail_after_ms: 20 * 60_000,
            heater_fail_margin_mc: 8_000,
            low_pressure_raise_pa: 100_000,
            low_pressure_clear_pa: 130_000,
            sensor_raise_ms: 30_000,
            sensor_clear_ms: 5 * 60_000,
            clog_ratio_raise_pm: 600,
            clog_ratio_clear_pm: 800,
            clog_sessions: (3, 2),
        }
    }
}

/// Flow below this rate (ml/min) counts as "stopped" for ending a session or clearing a
/// stuck valve: well below any real use (≥ 1 L/min), above the drips the leak rule watches.
pub const FLOW_STOPPED_ML_MIN: u64 = 100;
/// After the valve closes and flow stops for this long, the ValveStuck fault clears.
const STUCK_CLEAR_MS: i64 = 60_000;
/// Sessions shorter than this are not used for the inlet-clog flow ratio.
const CLOG_MIN_SESSION_MS: i64 = 10_000;
/// Sessions that form the initial flow baseline.
const BASELINE_SESSIONS: u32 = 5;
/// A seat session this long is closed even if the seat sensor still says occupied.
const MAX_SEAT_MS: i64 = 4 * 3_600_000;
/// Inlet pressure that counts as "fine" for the inlet-clog rule, Pa.
const CLOG_MIN_PRESSURE_PA: i32 = 150_000;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Running {
    kind: SessionKind,
    started: i64,
    ml: u64,
    heater_mwh_at_start: u64,
    temp_sum_mc: i64,
    temp_n: u32,
    valve_closed_at: Option<i64>,
    last_flow_at: i64,
}

/// The usage-session phase.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    Running(Running),
    Stuck { last_flow_at: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Seat {
    Free,
    Taken {
        started: i64,
        water_ml_at_start: u64,
        heater_mwh_at_start: u64,
        latched: bool,
    },
}

/// Every fault code's hysteresis.
#[derive(Debug, Clone, Copy)]
struct Faults {
    leak: Hysteresis,
    valve_stuck: bool,
    over_temp: Hysteresis,
    heater_failure: Hysteresis,
    sensor: Hysteresis,
    low_pressure: Hysteresis,
    clog: bool,
    main_board: bool,
}

/// A fixture's logic state.
#[derive(Debug, Clone)]
pub struct Fixture {
    model: Model,
    cfg: Config,
    counters: Counters,
    phase: Phase,
    seat: Seat,
    faults: Faults,
    last_ms: Option<i64>,
    heater_on: bool,
    heater_on_since: Option<i64>,
    leak_window: (u64, i64),
    clog_run: (u8, u8),
    water_temp_mc: i32,
    seat_temp_mc: i32,
    pressure_pa: i32,
    tds_in: u16,
    tds_out: u16,
    last_session_temp_mc: Option<i32>,
    sessions_ended: u32,
    last_sensor_fault: u8,
    last_flow_pm: Option<u32>,
    /// Sensors that did not answer at the last sample (bits `1 << sensor index`): their
    /// gauges are sent with contract v1.1's invalid marker (`null`).
    missing_sensors: u8,
    /// Contract v1.1: each slot's cartridge rating, litres, if known.
    rated_l: [Option<u32>; MAX_CARTRIDGES],
}

fn fault(code: FaultCode, state: FaultState, value: f32) -> EventKind {
    let severity = match code {
        FaultCode::Leak | FaultCode::HeaterOverTemp => Severity::Critical,
        FaultCode::ValveStuck | FaultCode::HeaterFailure | FaultCode::MainBoard => Severity::Major,
        FaultCode::SensorError | FaultCode::LowInletPressure | FaultCode::InletClog => {
            Severity::Warning
        }
    };
    EventKind::Fault(FaultEvent {
        code,
        severity,
        state,
        value: Some(value),
    })
}

fn push(events: &mut Events, e: EventKind) {
    // Capacity covers every code once plus two sessions; a full buffer cannot happen.
    let _ = events.push(e);
}

impl Fixture {
    /// A fixture of `model` with counters restored from storage.
    pub fn new(model: Model, cfg: Config, counters: Counters) -> Self {
        Fixture {
            model,
            cfg,
            counters,
            phase: Phase::Idle,
            seat: Seat::Free,
            faults: Faults {
                leak: Hysteresis::new(cfg.leak_raise_ms, cfg.leak_clear_ms),
                valve_stuck: false,
                over_temp: Hysteresis::new(5_000, 60_000),
                heater_failure: Hysteresis::new(0, 60_000),
                sensor: Hysteresis::new(cfg.sensor_raise_ms, cfg.sensor_clear_ms),
                low_pressure: Hysteresis::new(120_000, 120_000),
                clog: false,
                main_board: false,
            },
            last_ms: None,
            heater_on: false,
            heater_on_since: None,
            leak_window: (0, 0),
            clog_run: (0, 0),
            water_temp_mc: 20_000,
            seat_temp_mc: 20_000,
            pressure_pa: 300_000,
            tds_in: 0,
            tds_out: 0,
            last_session_temp_mc: None,
            missing_sensors: 0,
            rated_l: [None; MAX_CARTRIDGES],
            sessions_ended: 0,
            last_sensor_fault: 0,
            last_flow_pm: None,
        }
    }

    /// The fixture model.
    pub fn model(&self) -> Model {
        self.model
    }

    /// The cumulative counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Sessions ended since boot (the node persists after each).
    pub fn sessions_ended(&self) -> u32 {
        self.sessions_ended
    }

    /// True while a usage session or the seat session is open.
    pub fn busy(&self) -> bool {
        !matches!(self.phase, Phase::Idle) || matches!(self.seat, Seat::Taken { .. })
    }

    /// Whether `code` is currently raised.
    pub fn fault_active(&self, code: FaultCode) -> bool {
        let f = &self.faults;
        match code {
            FaultCode::Leak => f.leak.is_active(),
            FaultCode::ValveStuck => f.valve_stuck,
            FaultCode::HeaterOverTemp => f.over_temp.is_active(),
            FaultCode::HeaterFailure => f.heater_failure.is_active(),
            FaultCode::SensorError => f.sensor.is_active(),
            FaultCode::LowInletPressure => f.low_pressure.is_active(),
            FaultCode::InletClog => f.clog,
            FaultCode::MainBoard => f.main_board,
        }
    }

    /// Flow of the last main session (dispense, shower) against the learned normal flow,
    /// per mille; `None` until the baseline is learned (and always on toilets).
    pub fn flow_ratio_permille(&self) -> Option<u32> {
        self.last_flow_pm
    }

    /// Inlet pressure at the last sample, kPa, on models with a pressure sensor.
    pub fn pressure_kpa(&self) -> Option<f32> {
        match self.model {
            Model::Purifier | Model::Shower => Some(self.pressure_pa as f32 / 1000.0),
            Model::Toilet => None,
        }
    }

    /// Reports a main-board problem found outside the logic (e.g. storage writes failing).
    pub fn set_main_board_fault(&mut self, active: bool, value: f32, events: &mut Events) {
        if active != self.faults.main_board {
            self.faults.main_board = active;
            let state = if active {
                FaultState::Raised
            } else {
                FaultState::Cleared
            };
            push(events, fault(FaultCode::MainBoard, state, value));
        }
    }

    /// A technician replaced the cartridge in `slot`. Returns false for an unknown slot.
    pub fn reset_cartridge(&mut self, slot: u8) -> bool {
        if usize::from(slot) >= self.cartridge_kinds().len() {
            return false;
        }
        let c = &mut self.counters.cartridges[usize::from(slot)];
        c.ml = 0;
        c.replacements += 1;
        true
    }

    /// The cartridge kinds by slot for this model.
    pub fn cartridge_kinds(&self) -> &'static [CartridgeKind] {
        self.model.cartridge_kinds()
    }

    fn kind_index(kind: SessionKind) -> usize {
        match kind {
            SessionKind::Wash => 0,
            SessionKind::Flush => 1,
            _ => 2,
        }
    }

    fn session_for(&self, demand: Demand) -> Option<SessionKind> {
        match (self.model, demand) {
            (Model::Toilet, Demand::Wash) => Some(SessionKind::Wash),
            (Model::Toilet, Demand::Flush) => Some(SessionKind::Flush),
            (Model::Toilet, Demand::Clean) => Some(SessionKind::Cleaning),
            (Model::Purifier, Demand::Draw) => Some(SessionKind::Dispense),
            (Model::Shower, Demand::Draw) => Some(SessionKind::Shower),
            _ => None,
        }
    }

    /// Runs the logic for one sample taken at `now_ms`; appends what happened to `events`.
    pub fn step(&mut self, now_ms: i64, s: &Sample, events: &mut Events) -> Outputs {
        let dt = match self.last_ms {
            Some(last) => (now_ms - last).clamp(0, 24 * 3_600_000),
            None => 0,
        };
        self.last_ms = Some(now_ms);
        self.take_sensors(now_ms, s, events);
        self.account_water(s.flow_ml);
        if self.model == Model::Toilet {
            self.seat_session(now_ms, s.seat, events);
        }
        // Flow measured at the sample that starts a session ran before the demand was seen:
        // it belongs to the idle period (and the leak rule), not to the session.
        let idle_before = matches!(self.phase, Phase::Idle);
        let valve_open = self.usage_session(now_ms, dt, s, events);
        self.leak(now_ms, dt, s, idle_before, events);
        let heater_on = if self.model == Model::Toilet {
            self.heater(now_ms, dt, s, events)
        } else {
            false
        };
        if self.model != Model::Toilet {
            if let Some(p) = s.pressure_pa {
                if let Some(st) = self.faults.low_pressure.update(
                    now_ms,
                    p < self.cfg.low_pressure_raise_pa,
                    p >= self.cfg.low_pressure_clear_pa,
                ) {
                    push(
                        events,
                        fault(FaultCode::LowInletPressure, st, p as f32 / 1000.0),
                    );
                }
            }
        }
        Outputs {
            valve_open,
            heater_on,
        }
    }

    fn take_sensors(&mut self, now_ms: i64, s: &Sample, events: &mut Events) {
        if let Some(t) = s.water_temp_mc {
            self.water_temp_mc = t;
        }
        if let Some(t) = s.seat_temp_mc {
            self.seat_temp_mc = t;
        }
        if let Some(p) = s.pressure_pa {
            self.pressure_pa = p;
        }
        if let Some(t) = s.tds_in_ppm {
            self.tds_in = t;
        }
        if let Some(t) = s.tds_out_ppm {
            self.tds_out = t;
        }
        let missing = match self.model {
            Model::Toilet => [
                (sensor::WATER_TEMP, s.water_temp_mc.is_none()),
                (sensor::SEAT_TEMP, s.seat_temp_mc.is_none()),
                (0, false),
            ],
            Model::Purifier => [
                (sensor::PRESSURE, s.pressure_pa.is_none()),
                (sensor::TDS_IN, s.tds_in_ppm.is_none()),
                (sensor::TDS_OUT, s.tds_out_ppm.is_none()),
            ],
            Model::Shower => [
                (sensor::WATER_TEMP, s.water_temp_mc.is_none()),
                (sensor::PRESSURE, s.pressure_pa.is_none()),
                (0, false),
            ],
        };
        self.missing_sensors = missing
            .iter()
            .filter(|(_, m)| *m)
            .fold(0, |bits, (i, _)| bits | (1u8 << (*i).min(7)));
        let first_missing = missing.iter().find(|(_, m)| *m).map(|(i, _)| *i);
        if let Some(st) =
            self.faults
                .sensor
                .update(now_ms, first_missing.is_some(), first_missing.is_none())
        {
            let value = match (st, first_missing) {
                (FaultState::Raised, Some(i)) => i,
                _ => self.last_sensor_fault,
            };
            self.last_sensor_fault = value;
            push(events, fault(FaultCode::SensorError, st, f32::from(value)));
        }
    }

    fn account_water(&mut self, ml: u32) {
        let ml = u64::from(ml);
        self.counters.water_ml += ml;
        if self.model == Model::Purifier {
            self.counters.dispensed_ml += ml;
        }
        let n = self.cartridge_kinds().len();
        for c in &mut self.counters.cartridges[..n] {
            c.ml += ml;
        }
    }

    fn seat_session(&mut self, now_ms: i64, seat: bool, events: &mut Events) {
        match (self.seat, seat) {
            (Seat::Free, true) => {
                self.seat = Seat::Taken {
                    started: now_ms,
                    water_ml_at_start: self.counters.water_ml,
                    heater_mwh_at_start: self.counters.heater_mwh,
                    latched: false,
                };
            }
            (
                Seat::Taken {
                    started,
                    water_ml_at_start,
                    heater_mwh_at_start,
                    latched,
                },
                occupied,
            ) => {
                let too_long = now_ms - started >= MAX_SEAT_MS;
                if !latched && (!occupied || too_long) {
                    self.counters.seat_sessions += 1;
                    self.sessions_ended += 1;
                    push(
                        events,
                        EventKind::Session(Session {
                            kind: SessionKind::Seat,
                            started_ts: started,
                            duration_s: ((now_ms - started) / 1000) as u32,
                            water_ml: u32::try_from(self.counters.water_ml - water_ml_at_start)
                                .unwrap_or(u32::MAX),
                            energy_wh: ((self.counters.heater_mwh - heater_mwh_at_start) / 1000)
                                as u32,
                            temp_c: Some(self.seat_temp_mc as f32 / 1000.0),
                        }),
                    );
                }
                if !occupied {
                    self.seat = Seat::Free;
                } else if too_long {
                    self.seat = Seat::Taken {
                        started,
                        water_ml_at_start,
                        heater_mwh_at_start,
                        latched: true,
                    };
                }
            }
            (Seat::Free, false) => {}
        }
    }

    /// Returns whether the valve should be open.
    fn usage_session(&mut self, now_ms: i64, dt: i64, s: &Sample, events: &mut Events) -> bool {
        let flow = s.flow_ml;
        let flowing = if dt > 0 {
            u64::from(flow) * 60_000 / dt as u64 >= FLOW_STOPPED_ML_MIN
        } else {
            flow > 0
        };
        match self.phase {
            Phase::Idle => {
                let Some(kind) = self.session_for(s.demand) else {
                    return false;
                };
                self.phase = Phase::Running(Running {
                    kind,
                    started: now_ms,
                    ml: 0,
                    heater_mwh_at_start: self.counters.heater_mwh,
                    temp_sum_mc: 0,
                    temp_n: 0,
                    valve_closed_at: None,
                    last_flow_at: now_ms,
                });
                true
            }
            Phase::Running(mut r) => {
                r.ml += u64::from(flow);
                if flowing {
                    r.last_flow_at = now_ms;
                    if let Some(t) = s.water_temp_mc {
                        r.temp_sum_mc += i64::from(t);
                        r.temp_n += 1;
                    }
                }
                if r.kind == SessionKind::Dispense {
                    self.counters.pump_ms += dt as u64;
                }
                let i = Self::kind_index(r.kind);
                let want = self.session_for(s.demand) == Some(r.kind);
                if r.valve_closed_at.is_none()
                    && (!want || now_ms - r.started >= i64::from(self.cfg.max_on_ms[i]))
                {
                    r.valve_closed_at = Some(now_ms);
                }
                let valve_open = r.valve_closed_at.is_none();
                match r.valve_closed_at {
                    Some(_) if !flowing => {
                        self.end_session(
                            now_ms,
                            &r,
                            r.last_flow_at.max(r.valve_closed_at.unwrap_or(now_ms)),
                            events,
                        );
                        self.phase = Phase::Idle;
                    }
                    Some(closed) if now_ms - closed >= i64::from(self.cfg.stuck_after_ms[i]) => {
                        self.faults.valve_stuck = true;
                        let open_s = (now_ms - r.started) as f32 / 1000.0;
                        push(
                            events,
                            fault(FaultCode::ValveStuck, FaultState::Raised, open_s),
                        );
                        self.end_session(now_ms, &r, now_ms, events);
                        self.phase = Phase::Stuck {
                            last_flow_at: now_ms,
                        };
                    }
                    _ => self.phase = Phase::Running(r),
                }
                valve_open
            }
            Phase::Stuck { last_flow_at } => {
                if flowing {
                    self.phase = Phase::Stuck {
                        last_flow_at: now_ms,
                    };
                } else if now_ms - last_flow_at >= STUCK_CLEAR_MS {
                    self.faults.valve_stuck = false;
                    push(
                        events,
                        fault(FaultCode::ValveStuck, FaultState::Cleared, 0.0),
                    );
                    self.phase = Phase::Idle;
                }
                false
            }
        }
    }

    fn end_session(&mut self, now_ms: i64, r: &Running, end_ms: i64, events: &mut Events) {
        let dur_ms = (end_ms - r.started).max(0);
        let c = &mut self.counters;
        match r.kind {
            SessionKind::Wash => {
                c.washes += 1;
                c.wash_ms += dur_ms as u64;
            }
            SessionKind::Flush => c.flushes += 1,
            SessionKind::Shower => {
                c.showers += 1;
                c.shower_ms += dur_ms as u64;
            }
            SessionKind::Dispense | SessionKind::Seat | SessionKind::Cleaning => {}
        }
        let temp = (r.temp_n > 0).then(|| (r.temp_sum_mc / i64::from(r.temp_n)) as i32);
        if temp.is_some() {
            self.last_session_temp_mc = temp;
        }
        let metered_temp = matches!(r.kind, SessionKind::Wash | SessionKind::Shower);
        self.sessions_ended += 1;
        push(
            events,
            EventKind::Session(Session {
                kind: r.kind,
                started_ts: r.started,
                duration_s: (dur_ms / 1000).min(i64::from(u32::MAX)) as u32,
                water_ml: u32::try_from(r.ml).unwrap_or(u32::MAX),
                energy_wh: ((self.counters.heater_mwh - r.heater_mwh_at_start) / 1000) as u32,
                temp_c: if metered_temp {
                    temp.map(|t| t as f32 / 1000.0)
                } else {
                    None
                },
            }),
        );
        let main = matches!(r.kind, SessionKind::Dispense | SessionKind::Shower);
        if main && dur_ms >= CLOG_MIN_SESSION_MS && now_ms >= r.started {
            let rate = (r.ml * 60_000 / dur_ms as u64) as u32;
            self.clog_check(rate, events);
        }
    }

    fn clog_check(&mut self, rate_ml_min: u32, events: &mut Events) {
        let c = &mut self.counters;
        if c.flow_baseline_n < BASELINE_SESSIONS {
            let n = c.flow_baseline_n;
            c.flow_baseline_ml_min = ((u64::from(c.flow_baseline_ml_min) * u64::from(n)
                + u64::from(rate_ml_min))
                / u64::from(n + 1)) as u32;
            c.flow_baseline_n += 1;
            return;
        }
        let base = c.flow_baseline_ml_min.max(1);
        let ratio_pm = (u64::from(rate_ml_min) * 1000 / u64::from(base)) as u32;
        self.last_flow_pm = Some(ratio_pm);
        let pressure_fine = self.pressure_pa >= CLOG_MIN_PRESSURE_PA;
        if ratio_pm < self.cfg.clog_ratio_raise_pm && pressure_fine {
            self.clog_run = (self.clog_run.0.saturating_add(1), 0);
        } else if ratio_pm >= self.cfg.clog_ratio_clear_pm {
            self.clog_run = (0, self.clog_run.1.saturating_add(1));
            if ratio_pm > 1100 {
                // Flow went up (a new cartridge, a cleaned screen): follow quickly.
                c.flow_baseline_ml_min =
                    ((u64::from(base) * 7 + u64::from(rate_ml_min)) / 8) as u32;
            } else if ratio_pm >= 950 && !self.faults.clog {
                // Follow only very slow drift (a cartridge loading over months). A clog that
                // lowers the flow by more than 5 % between sessions is never learnt as normal.
                c.flow_baseline_ml_min =
                    ((u64::from(base) * 31 + u64::from(rate_ml_min)) / 32) as u32;
            }
        } else {
            self.clog_run = (0, 0);
        }
        let ratio = ratio_pm as f32 / 1000.0;
        if !self.faults.clog && self.clog_run.0 >= self.cfg.clog_sessions.0 {
            self.faults.clog = true;
            push(
                events,
                fault(FaultCode::InletClog, FaultState::Raised, ratio),
            );
        } else if self.faults.clog && self.clog_run.1 >= self.cfg.clog_sessions.1 {
            self.faults.clog = false;
            push(
                events,
                fault(FaultCode::InletClog, FaultState::Cleared, ratio),
            );
        }
    }

    fn leak(&mut self, now_ms: i64, dt: i64, s: &Sample, idle_before: bool, events: &mut Events) {
        // Flow with no usage session (and no known stuck valve) is unexplained.
        if idle_before {
            self.leak_window.0 += u64::from(s.flow_ml);
        }
        self.leak_window.1 += dt;
        let rate = if self.leak_window.1 > 0 {
            self.leak_window.0 * 60_000 / self.leak_window.1 as u64
        } else {
            0
        };
        if s.leak_probe {
            if let Some(st) = self.faults.leak.force_raise() {
                push(events, fault(FaultCode::Leak, st, rate as f32));
            }
        }
        if self.leak_window.1 < i64::from(self.cfg.leak_window_ms) {
            return;
        }
        let dripping = rate >= u64::from(self.cfg.leak_min_ml_min);
        if let Some(st) =
            self.faults
                .leak
                .update(now_ms, dripping || s.leak_probe, !dripping && !s.leak_probe)
        {
            push(events, fault(FaultCode::Leak, st, rate as f32));
        }
        self.leak_window = (0, 0);
    }

    fn heater(&mut self, now_ms: i64, dt: i64, s: &Sample, events: &mut Events) -> bool {
        let cfg = self.cfg;
        // Energy of the interval that just ended, at the state it had.
        if self.heater_on {
            self.counters.heater_mwh += u64::from(cfg.heater_power_w) * dt as u64 / 3600;
        }
        let temp = s.water_temp_mc;
        if let Some(t) = temp {
            if let Some(st) = self.faults.over_temp.update(
                now_ms,
                t > cfg.over_temp_raise_mc,
                t < cfg.over_temp_clear_mc,
            ) {
                push(
                    events,
                    fault(FaultCode::HeaterOverTemp, st, t as f32 / 1000.0),
                );
            }
        }
        let on = match temp {
            _ if self.faults.over_temp.is_active() => false,
            None => false,
            Some(t) if t < cfg.heater_setpoint_mc - 1_000 => true,
            Some(t) if t > cfg.heater_setpoint_mc + 1_000 => false,
            Some(_) => self.heater_on,
        };
        if on && !self.heater_on {
            self.heater_on_since = Some(now_ms);
        } else if !on {
            self.heater_on_since = None;
        }
        self.heater_on = on;
        if let Some(t) = temp {
            let cold = t < cfg.heater_setpoint_mc - cfg.heater_fail_margin_mc;
            let long = self
                .heater_on_since
                .is_some_and(|since| now_ms - since >= i64::from(cfg.heater_fail_after_ms));
            let warm = t >= cfg.heater_setpoint_mc - 3_000;
            if let Some(st) = self
                .faults
                .heater_failure
                .update(now_ms, cold && long, warm)
            {
                push(
                    events,
                    fault(FaultCode::HeaterFailure, st, t as f32 / 1000.0),
                );
            }
        }
        on
    }

    /// Contract v1.1: the rated capacity of each slot's cartridge, litres, when known
    /// (read from the cartridge's tag or set at installation), sent in telemetry.
    pub fn set_rated_l(&mut self, slot: usize, rated_l: Option<u32>) -> bool {
        let slots = self.cartridge_kinds().len();
        match self.rated_l.get_mut(slot) {
            Some(r) if slot < slots => {
                *r = rated_l.filter(|x| *x > 0);
                true
            }
            _ => false,
        }
    }

    /// A float gauge, or the invalid marker if its sensor did not answer at the last sample.
    fn gauge(&self, sensor: u8, value: f32) -> f32 {
        if self.missing_sensors & (1 << sensor.min(7)) != 0 {
            f32::NAN
        } else {
            value
        }
    }

    /// A TDS gauge, or the invalid marker if its sensor did not answer or is out of range.
    fn ppm(&self, sensor: u8, value: u16) -> u16 {
        if self.missing_sensors & (1 << sensor.min(7)) != 0 || value > 5000 {
            protocol::message::INVALID_PPM
        } else {
            value
        }
    }

    /// The telemetry reading for the current state.
    pub fn reading(&self) -> Reading {
        let c = &self.counters;
        let cartridges = || {
            let mut v: Vec<Cartridge, MAX_CARTRIDGES> = Vec::new();
            for (slot, kind) in self.cartridge_kinds().iter().enumerate() {
                let cc = c.cartridges[slot];
                let _ = v.push(Cartridge {
                    slot: slot as u8,
                    kind: *kind,
                    ml_since_replacement: cc.ml,
                    replacements: cc.replacements,
                    rated_l: self.rated_l.get(slot).copied().flatten(),
                });
            }
            v
        };
        match self.model {
            Model::Toilet => Reading::Toilet(ToiletReading {
                seat_sessions: c.seat_sessions,
                washes: c.washes,
                wash_seconds: (c.wash_ms / 1000) as u32,
                flushes: c.flushes,
                water_ml: c.water_ml,
                heater_wh: (c.heater_mwh / 1000) as u32,
                water_temp_c: self.gauge(sensor::WATER_TEMP, temp_c(self.water_temp_mc)),
                seat_temp_c: self.gauge(sensor::SEAT_TEMP, temp_c(self.seat_temp_mc)),
            }),
            Model::Purifier => Reading::Purifier(PurifierReading {
                dispensed_ml: c.dispensed_ml,
                tds_in_ppm: self.ppm(sensor::TDS_IN, self.tds_in),
                tds_out_ppm: self.ppm(sensor::TDS_OUT, self.tds_out),
                inlet_pressure_kpa: self.gauge(sensor::PRESSURE, pressure_kpa(self.pressure_pa)),
                pump_seconds: (c.pump_ms / 1000) as u32,
                cartridges: cartridges(),
            }),
            Model::Shower => Reading::Shower(ShowerReading {
                showers: c.showers,
                water_ml: c.water_ml,
                shower_seconds: (c.shower_ms / 1000) as u32,
                temp_c: match self.last_session_temp_mc {
                    Some(t) => temp_c(t),
                    None => self.gauge(sensor::WATER_TEMP, temp_c(self.water_temp_mc)),
                },
                pressure_kpa: self.gauge(sensor::PRESSURE, pressure_kpa(self.pressure_pa)),
                cartridges: cartridges(),
            }),
        }
    }
}

#[cfg(test)]
#[path = "logic_tests.rs"]
mod tests;

/// A temperature in °C, or contract v1.1's invalid marker (NaN, sent as `null`) when
/// outside the contract's physical bounds: an out-of-range sensor is a sensor problem,
/// reported by its own fault; the marker keeps the rest of the reading valid.
fn temp_c(mc: i32) -> f32 {
    if (-30_000..=110_000).contains(&mc) {
        mc as f32 / 1000.0
    } else {
        f32::NAN
    }
}

/// A pressure in kPa, or the invalid marker when outside the contract's bounds.
fn pressure_kpa(pa: i32) -> f32 {
    if (0..=2_000_000).contains(&pa) {
        pa as f32 / 1000.0
    } else {
        f32::NAN
    }
}
