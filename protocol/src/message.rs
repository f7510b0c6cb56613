//! Payload types of contract v1, one per channel, and the three fixture models.
//!
//! Every payload is a JSON object with `v` (schema version), `device_id`, and
//! `ts` (UTC milliseconds since the Unix epoch, the device's clock). Telemetry
//! and events also carry `boot_id` and `seq`: `seq` counts messages since boot
//! `boot_id`, and `boot_id` is incremented in non-volatile storage at every
//! boot, so `(boot_id, seq)` is strictly increasing over a device's life.
//!
//! Enums are externally tagged (`{"toilet":{...}}`) because that is the one
//! serde representation that both encodes and decodes without an allocator.
//! Units are in the field names: `_ml`, `_wh`, `_s`/`_seconds`, `_c`, `_kpa`, `_ppm`.
//!
//! Contract v1.1 (backward compatible, `v` stays 1) adds, all optional:
//! * a per-field invalid/missing marker for the sensor readings (*gauges*: the
//!   temperatures, pressures and TDS, not the counters): `null` or an absent field means
//!   the sensor failed. In memory a float gauge is then NaN and a TDS gauge
//!   [`INVALID_PPM`]; see [`crate::validate::sanitize_telemetry`], which also marks
//!   out-of-range gauges of v1 devices so one failed sensor does not drop the counters;
//! * a cartridge's rated capacity, [`Cartridge::rated_l`];
//! * on the status message, the boot it announces and why the device rebooted,
//!   [`Status::boot_id`] and [`Status::reboot`] (with whether the counters were lost).

use serde::{Deserialize, Serialize};

use crate::DeviceId;

/// In-memory marker of an invalid or missing TDS gauge (contract v1.1; `null` in JSON).
pub const INVALID_PPM: u16 = u16::MAX;

/// Serde of a float gauge (contract v1.1): `null` or absent is NaN, and NaN encodes as
/// `null`.
pub mod gauge {
    use serde::{Deserialize, Deserializer, Serializer};

    /// NaN: the marker of a missing gauge.
    pub fn missing() -> f32 {
        f32::NAN
    }

    /// A finite value as a number, anything else as `null`.
    pub fn serialize<S: Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f32(*x)
        } else {
            s.serialize_none()
        }
    }

    /// A number, or NaN for `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
    }

    /// Whether a float gauge carries a reading (not the invalid/missing marker).
    pub fn is_valid(x: f32) -> bool {
        !x.is_nan()
    }
}

/// Serde of a TDS gauge (contract v1.1): `null` or absent is [`INVALID_PPM`], which
/// encodes as `null`.
pub mod ppm_gauge {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::INVALID_PPM;

    /// The marker of a missing TDS gauge.
    pub fn missing() -> u16 {
        INVALID_PPM
    }

    /// A reading as a number, the marker as `null`.
    pub fn serialize<S: Serializer>(x: &u16, s: S) -> Result<S::Ok, S::Error> {
        if *x == INVALID_PPM {
            s.serialize_none()
        } else {
            s.serialize_u16(*x)
        }
    }

    /// A number, or the marker for `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        Ok(Option::<u16>::deserialize(d)?.unwrap_or(INVALID_PPM))
    }
}

/// Firmware version string, e.g. `"2.4.1"`. Stored as a field, never as a tag.
pub type FirmwareVersion = heapless::String<16>;

/// Most cartridges a fixture reports.
pub const MAX_CARTRIDGES: usize = 4;

/// Periodic state and cumulative counters, on `fixtures/{id}/telemetry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// Schema version, always [`crate::SCHEMA_VERSION`].
    pub v: u8,
    /// Must equal the device id of the topic.
    pub device_id: DeviceId,
    /// Boot counter, incremented at every boot and kept in non-volatile storage.
    pub boot_id: u32,
    /// Message counter since boot `boot_id`, shared by telemetry and events.
    pub seq: u32,
    /// Device time of the reading, UTC ms since the Unix epoch.
    pub ts: i64,
    /// Firmware version, optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw: Option<FirmwareVersion>,
    /// The model-specific reading.
    pub reading: Reading,
}

/// A model-specific telemetry reading. Counters are cumulative since manufacture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reading {
    /// A smart toilet.
    Toilet(ToiletReading),
    /// A water purifier with replaceable cartridges.
    Purifier(PurifierReading),
    /// A thermostatic shower with a filter.
    Shower(ShowerReading),
}

impl Reading {
    /// The fixture model this reading belongs to.
    pub fn model(&self) -> Model {
        match self {
            Reading::Toilet(_) => Model::Toilet,
            Reading::Purifier(_) => Model::Purifier,
            Reading::Shower(_) => Model::Shower,
        }
    }
}

/// The fixture models of contract v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// Smart toilet.
    Toilet,
    /// Water purifier.
    Purifier,
    /// Thermostatic shower.
    Shower,
}

impl Model {
    /// Lower-case name, as used in JSON and as the InfluxDB measurement.
    pub const fn as_str(self) -> &'static str {
        match self {
            Model::Toilet => "toilet",
            Model::Purifier => "purifier",
            Model::Shower => "shower",
        }
    }
}

/// Smart toilet counters and temperatures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToiletReading {
    /// Seat occupancy sessions, cumulative.
    pub seat_sessions: u32,
    /// Bidet washes, cumulative.
    pub washes: u32,
    /// Seconds of washing, cumulative.
    pub wash_seconds: u32,
    /// Flushes, cumulative.
    pub flushes: u32,
    /// Water used, millilitres, cumulative.
    pub water_ml: u64,
    /// Heater energy, watt-hours, cumulative.
    pub heater_wh: u32,
    /// Wash water temperature now, °C.
    #[serde(with = "gauge", default = "gauge::missing")]
    pub water_temp_c: f32,
    /// Seat temperature now, °C.
    #[serde(with = "gauge", default = "gauge::missing")]
    pub seat_temp_c: f32,
}

/// Water purifier counters, water quality and cartridges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurifierReading {
    /// Water dispensed, millilitres, cumulative.
    pub dispensed_ml: u64,
    /// Total dissolved solids at the inlet, ppm.
    #[serde(with = "ppm_gauge", default = "ppm_gauge::missing")]
    pub tds_in_ppm: u16,
    /// Total dissolved solids at the outlet, ppm.
    #[serde(with = "ppm_gauge", default = "ppm_gauge::missing")]
    pub tds_out_ppm: u16,
    /// Inlet pressure, kPa.
    #[serde(with = "gauge", default = "gauge::missing")]
    pub inlet_pressure_kpa: f32,
    /// Pump running time, seconds, cumulative.
    pub pump_seconds: u32,
    /// Each cartridge's state.
    pub cartridges: heapless::Vec<Cartridge, MAX_CARTRIDGES>,
}

/// Thermostatic shower counters, temperature, pressure and filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowerReading {
    /// Showers taken, cumulative.
    pub showers: u32,
    /// Water used, millilitres, cumulative.
    pub water_ml: u64,
    /// Seconds of showering, cumulative.
    pub shower_seconds: u32,
    /// Mixed water temperature now (or of the last shower), °C.
    #[serde(with = "gauge", default = "gauge::missing")]
    pub temp_c: f32,
    /// Supply pressure, kPa.
    #[serde(with = "gauge", default = "gauge::missing")]
    pub pressure_kpa: f32,
    /// The shower's filter cartridge(s).
    pub cartridges: heapless::Vec<Cartridge, MAX_CARTRIDGES>,
}

/// One replaceable filter cartridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cartridge {
    /// Slot number on the fixture, 0-based, unique within a reading.
    pub slot: u8,
    /// What the cartridge is.
    pub kind: CartridgeKind,
    /// Water through this cartridge since it was last replaced, millilitres.
    pub ml_since_replacement: u64,
    /// How many times this slot's cartridge has been replaced, cumulative.
    /// A change of this counter is how the gateway learns of a replacement.
    pub replacements: u32,
    /// Contract v1.1: the cartridge's rated capacity, litres, when the device knows it
    /// (read from the cartridge's tag or configured at installation); absent otherwise,
    /// and then the registry's or the catalogue's rating applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rated_l: Option<u32>,
}

/// Kinds of filter cartridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartridgeKind {
    /// Sediment pre-filter (PP cotton).
    Sediment,
    /// Activated carbon block.
    Carbon,
    /// Reverse-osmosis membrane.
    ReverseOsmosis,
    /// Shower filter (e.g. vitamin C / KDF).
    Shower,
}

impl CartridgeKind {
    /// Lower-case name as in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            CartridgeKind::Sediment => "sediment",
            CartridgeKind::Carbon => "carbon",
            CartridgeKind::ReverseOsmosis => "reverse_osmosis",
            CartridgeKind::Shower => "shower",
        }
    }
}

/// Something that happened, on `fixtures/{id}/event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Schema version, always [`crate::SCHEMA_VERSION`].
    pub v: u8,
    /// Must equal the device id of the topic.
    pub device_id: DeviceId,
    /// Boot counter (see [`Telemetry::boot_id`]).
    pub boot_id: u32,
    /// Message counter since boot, shared with telemetry.
    pub seq: u32,
    /// Device time of the event, UTC ms since the Unix epoch.
    pub ts: i64,
    /// What happened.
    pub event: EventKind,
}

/// The kinds of event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A usage session ended.
    Session(Session),
    /// A fault was raised or cleared.
    Fault(FaultEvent),
}

/// A finished usage session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// What kind of use it was.
    pub kind: SessionKind,
    /// Device time the session started, UTC ms; not after the event's `ts`.
    pub started_ts: i64,
    /// How long it lasted, seconds.
    pub duration_s: u32,
    /// Water used during the session, millilitres.
    pub water_ml: u32,
    /// Energy used during the session, watt-hours (0 if not metered).
    #[serde(default)]
    pub energy_wh: u32,
    /// Mean water temperature during the session, °C, where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<f32>,
}

/// Kinds of usage session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// Someone sat on a toilet seat.
    Seat,
    /// A bidet wash.
    Wash,
    /// A flush.
    Flush,
    /// A purifier dispensed water.
    Dispense,
    /// A shower.
    Shower,
    /// Contract v1.1: a toilet's cleaning programme (a long, large rinse the device runs
    /// by itself or on request): water use, not a wash or flush to judge.
    Cleaning,
}

impl SessionKind {
    /// Lower-case name as in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionKind::Seat => "seat",
            SessionKind::Wash => "wash",
            SessionKind::Flush => "flush",
            SessionKind::Dispense => "dispense",
            SessionKind::Shower => "shower",
            SessionKind::Cleaning => "cleaning",
        }
    }
}

/// A fault raised or cleared by the device's own detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultEvent {
    /// Which fault.
    pub code: FaultCode,
    /// How bad it is.
    pub severity: Severity,
    /// Raised or cleared.
    pub state: FaultState,
    /// The reading that tripped (or cleared) the fault, in the unit the code implies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f32>,
}

/// Fault codes of contract v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultCode {
    /// Water flows with no usage session (value: flow in ml/min).
    Leak,
    /// A wash or flush valve did not close (value: seconds open).
    ValveStuck,
    /// Heater above its safe temperature (value: °C).
    HeaterOverTemp,
    /// Heater does not heat (value: °C reached).
    HeaterFailure,
    /// A sensor failed to answer after retries (value: sensor index).
    SensorError,
    /// Inlet pressure below the working minimum (value: kPa).
    LowInletPressure,
    /// The inlet screen is clogging: pressure fine, flow falling (value: flow ratio 0..1).
    InletClog,
    /// Main-board self-test failure (value: error register).
    MainBoard,
}

impl FaultCode {
    /// Lower-case name as in JSON; also the InfluxDB tag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            FaultCode::Leak => "leak",
            FaultCode::ValveStuck => "valve_stuck",
            FaultCode::HeaterOverTemp => "heater_over_temp",
            FaultCode::HeaterFailure => "heater_failure",
            FaultCode::SensorError => "sensor_error",
            FaultCode::LowInletPressure => "low_inlet_pressure",
            FaultCode::InletClog => "inlet_clog",
            FaultCode::MainBoard => "main_board",
        }
    }
}

/// Fault severity, from least to most urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Needs attention soon.
    Warning,
    /// Needs a repair.
    Major,
    /// Needs action now (water damage, safety).
    Critical,
}

impl Severity {
    /// Lower-case name as in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }
}

/// Whether a fault event raises or clears the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultState {
    /// The condition began.
    Raised,
    /// The condition ended.
    Cleared,
}

/// Online or offline, on `fixtures/{id}/status`, retained; the offline form is the last will.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// Schema version, always [`crate::SCHEMA_VERSION`].
    pub v: u8,
    /// Must equal the device id of the topic.
    pub device_id: DeviceId,
    /// Device time, UTC ms. For a last will, the time the will was registered (at connect).
    pub ts: i64,
    /// Online or offline.
    pub state: Presence,
    /// The fixture model.
    pub model: Model,
    /// Firmware version, optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw: Option<FirmwareVersion>,
    /// Contract v1.1: the boot this (online) status announces, as in the telemetry and
    /// events that follow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<u32>,
    /// Contract v1.1: why the device (re)booted, and whether the boot lost the counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<Reboot>,
}

/// Contract v1.1: why a device booted (on the online status of that boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reboot {
    /// The reset cause.
    pub reason: RebootReason,
    /// The boot found no valid counters in storage and restarted them from zero (the
    /// cartridges' `ml_since_replacement` drops without a replacement; the boot counter
    /// survived).
    pub counters_lost: bool,
}

/// Contract v1.1: reset causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootReason {
    /// Power was cut and came back.
    PowerOn,
    /// The supply dipped below the brown-out level.
    BrownOut,
    /// The watchdog reset a stuck firmware.
    Watchdog,
    /// The firmware restarted itself (a command, a firmware update).
    Software,
    /// The cause is not known.
    Unknown,
}

impl RebootReason {
    /// Lower-case name as in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            RebootReason::PowerOn => "power_on",
            RebootReason::BrownOut => "brown_out",
            RebootReason::Watchdog => "watchdog",
            RebootReason::Software => "software",
            RebootReason::Unknown => "unknown",
        }
    }
}

/// Device presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Connected.
    Online,
    /// Disconnected (clean or by last will).
    Offline,
}

/// A command from the gateway, on `fixtures/{id}/cmd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Schema version, always [`crate::SCHEMA_VERSION`].
    pub v: u8,
    /// Gateway-assigned id, echoed by the device in logs; commands are idempotent by id.
    pub cmd_id: u32,
    /// Gateway time the command was issued, UTC ms.
    pub ts: i64,
    /// What to do.
    pub command: CommandKind,
}

/// Commands a fixture understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Report telemetry every `seconds` seconds.
    SetReportInterval {
        /// Interval, 10 to 86 400 seconds.
        seconds: u32,
    },
    /// A technician replaced the cartridge in `slot`: reset its counter.
    ResetCartridge {
        /// Slot number.
        slot: u8,
    },
    /// Run the self-test: the device checks its sensors and storage, queues a telemetry
    /// message and answers with its diagnostics (status `failed` if a check failed).
    SelfTest,
    /// Contract v1.2: answer with the diagnostics (fault log, counters, sensor health).
    ReportDiagnostics,
    /// Contract v1.2: run the cleaning programme (models with one, see
    /// [`Model::has_cleaning_programme`]); reported as a `cleaning` session when it ends.
    StartCleaning,
    /// Contract v1.2: close the water inlet valve (models with one, see
    /// [`Model::has_inlet_valve`]). It stays closed until `open_inlet_valve`.
    CloseInletValve,
    /// Contract v1.2: open the water inlet valve again (after the repair).
    OpenInletValve,
}

impl CommandKind {
    /// Lower-case name as in JSON (the parameters left out).
    pub const fn as_str(&self) -> &'static str {
        match self {
            CommandKind::SetReportInterval { .. } => "set_report_interval",
            CommandKind::ResetCartridge { .. } => "reset_cartridge",
            CommandKind::SelfTest => "self_test",
            CommandKind::ReportDiagnostics => "report_diagnostics",
            CommandKind::StartCleaning => "start_cleaning",
            CommandKind::CloseInletValve => "close_inlet_valve",
            CommandKind::OpenInletValve => "open_inlet_valve",
        }
    }

    /// Whether a fixture of `model` can carry this command out (the catalogue's facts).
    pub const fn supported_by(&self, model: Model) -> bool {
        match self {
            CommandKind::ResetCartridge { slot } => {
                (*slot as usize) < model.cartridge_kinds().len()
            }
            CommandKind::StartCleaning => model.has_cleaning_programme(),
            CommandKind::CloseInletValve | CommandKind::OpenInletValve => model.has_inlet_valve(),
            CommandKind::SetReportInterval { .. }
            | CommandKind::SelfTest
            | CommandKind::ReportDiagnostics => true,
        }
    }
}

/// Most fault codes listed as active in [`Diagnostics`] (there are eight codes).
pub const MAX_ACTIVE_FAULTS: usize = 8;
/// Most entries of the fault log in [`Diagnostics`] (the newest are kept).
pub const MAX_FAULT_LOG: usize = 4;

/// Contract v1.2: a device's answer to a [`Command`], on `fixtures/{id}/result`
/// ([`crate::topic::result_topic`]). A device sends `accepted` when it takes the command
/// on, then one final status; a command it cannot carry out gets `unsupported` at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandResult {
    /// Schema version, always [`crate::SCHEMA_VERSION`].
    pub v: u8,
    /// Must equal the device id of the topic.
    pub device_id: DeviceId,
    /// The command's id, as the gateway sent it.
    pub cmd_id: u32,
    /// Device time of the answer, UTC ms.
    pub ts: i64,
    /// How it went.
    pub status: CommandStatus,
    /// What the device found (self-test, diagnostics, valve commands), bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Diagnostics>,
}

/// How a command went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Received and started (the gateway marks the command acknowledged).
    Accepted,
    /// Carried out.
    Ok,
    /// Tried and failed (e.g. a self-test check failed, the valve did not move).
    Failed,
    /// This model cannot do it, or the command is malformed.
    Unsupported,
}

impl CommandStatus {
    /// Lower-case name as in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Accepted => "accepted",
            CommandStatus::Ok => "ok",
            CommandStatus::Failed => "failed",
            CommandStatus::Unsupported => "unsupported",
        }
    }
}

/// A device's view of its own health, small and bounded (fits one firmware message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diagnostics {
    /// Faults raised now.
    pub active: heapless::Vec<FaultCode, MAX_ACTIVE_FAULTS>,
    /// The newest fault events since boot, oldest first.
    pub log: heapless::Vec<LoggedFault, MAX_FAULT_LOG>,
    /// Boot counter.
    pub boot_id: u32,
    /// Usage sessions ended since boot.
    pub sessions: u32,
    /// All metered water, millilitres, cumulative.
    pub water_ml: u64,
    /// Consecutive failed writes of the counters to storage (0: storage fine).
    pub storage_failures: u32,
    /// Every sensor answered at the last sample.
    pub sensors_ok: bool,
    /// Flow of the last main session against the learned normal flow, per mille (an inlet
    /// screen clogging shows well below 1000); absent until learned, and on toilets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_permille: Option<u16>,
    /// Inlet pressure at the last sample, kPa (models with a pressure sensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure_kpa: Option<f32>,
    /// Whether the inlet valve is open (absent on models without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inlet_valve_open: Option<bool>,
}

/// One entry of the device's fault log.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedFault {
    /// Which fault.
    pub code: FaultCode,
    /// Raised or cleared.
    pub state: FaultState,
    /// Device time, UTC ms.
    pub ts: i64,
}
