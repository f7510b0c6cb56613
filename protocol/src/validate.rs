//! Validation rules of contract v1: what a well-formed payload may contain.
//!
//! Parsing (serde) checks shape and types; these checks add what types cannot
//! say: the schema version, that the payload's device id equals the topic's,
//! the timestamp window around the receiver's clock, finiteness and physical
//! ranges. Each failure has a stable [`Invalid::code`] so the gateway can count
//! rejections by reason.

use crate::message::{Cartridge, Event, EventKind, Reading, Status, Telemetry};
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
            float_in(r.water_temp_c, bounds::TEMP_C)?;
            float_in(r.seat_temp_c, bounds::TEMP_C)?;
            at_most(r.water_ml, bounds::TOTAL_ML)?;
        }
        Reading::Purifier(r) => {
            float_in(r.inlet_pressure_kpa, bounds::PRESSURE_KPA)?;
            at_most(r.tds_in_ppm, bounds::TDS_PPM)?;
            at_most(r.tds_out_ppm, bounds::TDS_PPM)?;
            at_most(r.dispensed_ml, bounds::TOTAL_ML)?;
            cartridges(&r.cartridges)?;
        }
        Reading::Shower(r) => {
            float_in(r.temp_c, bounds::TEMP_C)?;
            float_in(r.pressure_kpa, bounds::PRESSURE_KPA)?;
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
