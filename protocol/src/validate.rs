//! Validation rules of contract v1: what a well-formed payload may contain.
//!
//! Parsing (serde) checks shape and types; these checks add what types cannot
//! say: the schema version, that the payload's device id equals the topic's,
//! the timestamp window around the receiver's clock, finiteness and physical
//! ranges. Each failure has a stable [`Invalid::code`] so the gateway can count
//! rejections by reason.
//!
//! Contract v1.1: a sensor reading (a *gauge*: temperature, pressure, TDS) may carry
//! the invalid/missing marker (`null` in JSON, see [`crate::message::gauge`]); the
//! checks accept it. [`sanitize_telemetry`] goes further for receivers: it marks every
//! gauge that is non-finite or outside its physical range as invalid (a v1 device's
//! failed sensor reading −40 °C) and says which, so the counters of the message are
//! kept and only that field is dropped and counted.

use crate::message::{Cartridge, Event, EventKind, Reading, Status, Telemetry, INVALID_PPM};
use crate::topic::{Channel, Topic};
use crate::SCHEMA_VERSION;

/// Tunable limits. The defaults suit real fleets and accelerated simulations alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Oldest accepted timestamp, as milliseconds before the receiver's clock.
    pub max_age_ms: i64,
    /// Furthest accepted timestamp, as milliseconds after the receiver's clock.
    pub max_future_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_age_ms: 400 * DAY_MS,
            max_future_ms: 5 * 60 * 1000,
        }
    }
}

use crate::catalog::DAY_MS;

/// Physical bounds; values outside them are sensor faults or forgeries.
mod bounds {
    pub const TEMP_C: (f32, f32) = (-30.0, 110.0);
    pub const PRESSURE_KPA: (f32, f32) = (0.0, 2000.0);
    pub const TDS_PPM: u16 = 5000;
    /// 100 000 m³: more than any household fixture moves in its life.
    pub const TOTAL_ML: u64 = 100_000_000_000;
    /// One day.
    pub const SESSION_S: u32 = 86_400;
    /// 2 000 litres in one session.
    pub const SESSION_ML: u32 = 2_000_000;
    /// 100 kWh in one session.
    pub const SESSION_WH: u32 = 100_000;
    /// A cartridge rated for more than a million litres is not a household cartridge.
    pub const RATED_L: u32 = 1_000_000;
}

/// Why a payload is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// `v` is not a version this gateway speaks.
    SchemaVersion,
    /// The payload's `device_id` differs from the topic's.
    DeviceIdMismatch,
    /// The payload arrived on a topic channel that does not carry its type.
    WrongChannel,
    /// `ts` is older than the accepted window.
    TimestampTooOld,
    /// `ts` is further in the future than the accepted window.
    TimestampInFuture,
    /// A float is NaN or infinite.
    NotFinite,
    /// A value is outside its physical range.
    OutOfRange,
    /// Two cartridges share a slot.
    DuplicateSlot,
    /// A session starts after it was reported, or lasts longer than the gap between.
    SessionTiming,
}

impl Invalid {
    /// A stable, machine-readable reason code.
    pub const fn code(self) -> &'static str {
        match self {
            Invalid::SchemaVersion => "schema_version",
            Invalid::DeviceIdMismatch => "device_id_mismatch",
            Invalid::WrongChannel => "wrong_channel",
            Invalid::TimestampTooOld => "timestamp_too_old",
            Invalid::TimestampInFuture => "timestamp_in_future",
            Invalid::NotFinite => "not_finite",
            Invalid::OutOfRange => "out_of_range",
            Invalid::DuplicateSlot => "duplicate_slot",
            Invalid::SessionTiming => "session_timing",
        }
    }
}

impl core::fmt::Display for Invalid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Invalid::SchemaVersion => "unsupported schema version (expected v=1)",
            Invalid::DeviceIdMismatch => "payload device_id differs from the topic's device id",
            Invalid::WrongChannel => "payload type does not belong on this topic channel",
            Invalid::TimestampTooOld => "timestamp older than the accepted window",
            Invalid::TimestampInFuture => "timestamp too far in the future",
            Invalid::NotFinite => "a number is NaN or infinite",
            Invalid::OutOfRange => "a value is outside its physical range",
            Invalid::DuplicateSlot => "two cartridges report the same slot",
            Invalid::SessionTiming => {
                "session start is after the event time or inconsistent with its duration"
            }
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Invalid {}

fn header(
    v: u8,
    device_id: &str,
    ts: i64,
    topic: &Topic,
    channel: Channel,
    now_ms: i64,
    limits: &Limits,
) -> Result<(), Invalid> {
    if v != SCHEMA_VERSION {
        return Err(Invalid::SchemaVersion);
    }
    if topic.channel != channel {
        return Err(Invalid::WrongChannel);
    }
    if device_id != topic.device_id.as_str() {
        return Err(Invalid::DeviceIdMismatch);
    }
    if ts < now_ms.saturating_sub(limits.max_age_ms) {
        return Err(Invalid::TimestampTooOld);
    }
    if ts > now_ms.saturating_add(limits.max_future_ms) {
        return Err(Invalid::TimestampInFuture);
    }
    Ok(())
}

fn float_in(x: f32, (lo, hi): (f32, f32)) -> Result<(), Invalid> {
    if !x.is_finite() {
        Err(Invalid::NotFinite)
    } else if x < lo || x > hi {
        Err(Invalid::OutOfRange)
    } else {
        Ok(())
    }
}

/// A float gauge: the invalid/missing marker (NaN) passes, any other value is checked.
fn gauge_in(x: f32, range: (f32, f32)) -> Result<(), Invalid> {
    if x.is_nan() {
        Ok(())
    } else {
        float_in(x, range)
    }
}

/// A TDS gauge: the invalid/missing marker passes, any other value is checked.
fn ppm_in(x: u16) -> Result<(), Invalid> {
    if x == INVALID_PPM {
        Ok(())
    } else {
        at_most(x, bounds::TDS_PPM)
    }
}

/// Contract v1.1: the sensor readings (gauges) a telemetry message may mark invalid or
/// missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gauge {
    /// Toilet `water_temp_c`.
    WaterTempC,
    /// Toilet `seat_temp_c`.
    SeatTempC,
    /// Purifier `inlet_pressure_kpa`.
    InletPressureKpa,
    /// Purifier `tds_in_ppm`.
    TdsInPpm,
    /// Purifier `tds_out_ppm`.
    TdsOutPpm,
    /// Shower `temp_c`.
    TempC,
    /// Shower `pressure_kpa`.
    PressureKpa,
}

impl Gauge {
    /// Every gauge, in bit order of [`InvalidGauges`].
    pub const ALL: [Gauge; 7] = [
        Gauge::WaterTempC,
        Gauge::SeatTempC,
        Gauge::InletPressureKpa,
        Gauge::TdsInPpm,
        Gauge::TdsOutPpm,
        Gauge::TempC,
        Gauge::PressureKpa,
    ];

    /// The field name in JSON (and in the stored point).
    pub const fn as_str(self) -> &'static str {
        match self {
            Gauge::WaterTempC => "water_temp_c",
            Gauge::SeatTempC => "seat_temp_c",
            Gauge::InletPressureKpa => "inlet_pressure_kpa",
            Gauge::TdsInPpm => "tds_in_ppm",
            Gauge::TdsOutPpm => "tds_out_ppm",
            Gauge::TempC => "temp_c",
            Gauge::PressureKpa => "pressure_kpa",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Gauge`]s: those a message carries invalid or missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct InvalidGauges(u8);

impl InvalidGauges {
    /// Whether `g` is in the set.
    pub const fn contains(self, g: Gauge) -> bool {
        self.0 & g.bit() != 0
    }
    /// How many.
    pub const fn count(self) -> u32 {
        self.0.count_ones()
    }
    /// Whether none.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Adds `g`.
    pub fn insert(&mut self, g: Gauge) {
        self.0 |= g.bit();
    }
    /// The gauges in the set.
    pub fn iter(self) -> impl Iterator<Item = Gauge> {
        Gauge::ALL.into_iter().filter(move |g| self.contains(*g))
    }
}

/// Contract v1.1, for receivers: marks every gauge of `msg` that is missing, non-finite
/// or outside its physical range as invalid (NaN, or [`INVALID_PPM`] for TDS) and returns
/// the set. The counters are untouched: [`check_telemetry`] then judges the rest of the
/// message, so one failed sensor no longer rejects the whole reading.
pub fn sanitize_telemetry(msg: &mut Telemetry) -> InvalidGauges {
    let mut out = InvalidGauges::default();
    let mut float = |x: &mut f32, range: (f32, f32), g: Gauge| {
        if float_in(*x, range).is_err() {
            *x = f32::NAN;
            out.insert(g);
        }
    };
    match &mut msg.reading {
        Reading::Toilet(r) => {
            float(&mut r.water_temp_c, bounds::TEMP_C, Gauge::WaterTempC);
            float(&mut r.seat_temp_c, bounds::TEMP_C, Gauge::SeatTempC);
        }
        Reading::Purifier(r) => {
            float(
                &mut r.inlet_pressure_kpa,
                bounds::PRESSURE_KPA,
                Gauge::InletPressureKpa,
            );
            for (x, g) in [
                (&mut r.tds_in_ppm, Gauge::TdsInPpm),
                (&mut r.tds_out_ppm, Gauge::TdsOutPpm),
            ] {
                if *x > bounds::TDS_PPM {
                    *x = INVALID_PPM;
                    out.insert(g);
                }
            }
        }
        Reading::Shower(r) => {
            float(&mut r.temp_c, bounds::TEMP_C, Gauge::TempC);
            float(
                &mut r.pressure_kpa,
                bounds::PRESSURE_KPA,
                Gauge::PressureKpa,
            );
        }
    }
    out
}

fn at_most<T: PartialOrd>(x: T, max: T) -> Result<(), Invalid> {
    if x > max {
        Err(Invalid::OutOfRange)
    } else {
        Ok(())
    }
}

fn cartridges(list: &[Cartridge]) -> Result<(), Invalid> {
    for (i, c) in list.iter().enumerate() {
        at_most(c.ml_since_replacement, bounds::TOTAL_ML)?;
        at_most(c.slot, 7)?;
        if let Some(rated) = c.rated_l {
            if rated == 0 || rated > bounds::RATED_L {
                return Err(Invalid::OutOfRange);
            }
        }
        if list[..i].iter().any(|earlier| earlier.slot == c.slot) {
            return Err(Invalid::DuplicateSlot);
        }
    }
    Ok(())
}

/// Checks a telemetry payload received on `topic` at receiver time `now_ms`.
pub fn check_telemetry(
    msg: &Telemetry,
    topic: &Topic,
    now_ms: i64,
    limits: &Limits,
) -> Result<(), Invalid> {
    header(
        msg.v,
        &msg.device_id,
        msg.ts,
        topic,
        Channel::Telemetry,
        now_ms,
        limits,
    )?;
    match &msg.reading {
        Reading::Toilet(r) => {
            gauge_in(r.water_temp_c, bounds::TEMP_C)?;
            gauge_in(r.seat_temp_c, bounds::TEMP_C)?;
            at_most(r.water_ml, bounds::TOTAL_ML)?;
        }
        Reading::Purifier(r) => {
            gauge_in(r.inlet_pressure_kpa, bounds::PRESSURE_KPA)?;
            ppm_in(r.tds_in_ppm)?;
            ppm_in(r.tds_out_ppm)?;
            at_most(r.dispensed_ml, bounds::TOTAL_ML)?;
            cartridges(&r.cartridges)?;
        }
        Reading::Shower(r) => {
            gauge_in(r.temp_c, bounds::TEMP_C)?;
            gauge_in(r.pressure_kpa, bounds::PRESSURE_KPA)?;
            at_most(r.water_ml, bounds::TOTAL_ML)?;
            cartridges(&r.cartridges)?;
        }
    }
    Ok(())
}

/// Checks an event payload received on `topic` at receiver time `now_ms`.
pub fn check_event(
    msg: &Event,
    topic: &Topic,
    now_ms: i64,
    limits: &Limits,
) -> Result<(), Invalid> {
    header(
        msg.v,
        &msg.device_id,
        msg.ts,
        topic,
        Channel::Event,
        now_ms,
        limits,
    )?;
    match &msg.event {
        EventKind::Session(s) => {
            at_most(s.duration_s, bounds::SESSION_S)?;
            at_most(s.water_ml, bounds::SESSION_ML)?;
            at_most(s.energy_wh, bounds::SESSION_WH)?;
            if let Some(t) = s.temp_c {
                float_in(t, bounds::TEMP_C)?;
            }
            let span_ms = msg.ts.saturating_sub(s.started_ts);
            // The session must start before it is reported, and its duration must fit
            // between start and report (one second of slack for rounding).
            if span_ms < 0
                || i64::from(s.duration_s) * 1000 > span_ms + 1000
                || span_ms > 2 * DAY_MS
            {
                return Err(Invalid::SessionTiming);
            }
        }
        EventKind::Fault(f) => {
            if let Some(v) = f.value {
                float_in(v, (-1.0e9, 1.0e9))?;
            }
        }
    }
    Ok(())
}

/// Checks a status payload received on `topic` at receiver time `now_ms`.
pub fn check_status(
    msg: &Status,
    topic: &Topic,
    now_ms: i64,
    limits: &Limits,
) -> Result<(), Invalid> {
    header(
        msg.v,
        &msg.device_id,
        msg.ts,
        topic,
        Channel::Status,
        now_ms,
        limits,
    )
}

/// Contract v1.2: checks a command result received on the result topic of `device_id`
/// ([`crate::topic::parse_result`]) at receiver time `now_ms`.
pub fn check_command_result(
    msg: &crate::message::CommandResult,
    device_id: &str,
    now_ms: i64,
    limits: &Limits,
) -> Result<(), Invalid> {
    if msg.v != SCHEMA_VERSION {
        return Err(Invalid::SchemaVersion);
    }
    if msg.device_id.as_str() != device_id {
        return Err(Invalid::DeviceIdMismatch);
    }
    if msg.ts < now_ms.saturating_sub(limits.max_age_ms) {
        return Err(Invalid::TimestampTooOld);
    }
    if msg.ts > now_ms.saturating_add(limits.max_future_ms) {
        return Err(Invalid::TimestampInFuture);
    }
    if let Some(d) = &msg.diagnostics {
        at_most(d.water_ml, bounds::TOTAL_ML)?;
        if let Some(p) = d.pressure_kpa {
            float_in(p, bounds::PRESSURE_KPA)?;
        }
        at_most(d.flow_permille.unwrap_or(0), 10_000)?;
    }
    Ok(())
}
