//! Telemetry stores: where validated points become durable.
//!
//! Only this module talks to the telemetry database. A [`TelemetryStore`] is
//! either InfluxDB over HTTP (v1 `/write` or v2 `/api/v2/write`) or the embedded
//! SQLite default. Writes are idempotent: a point is keyed by measurement, tag set
//! and device timestamp, so a redelivered message overwrites instead of duplicating.
//! When the store is unreachable, [`spool`] keeps batches on local disk (fsynced)
//! and replays them later.

pub mod durable;
pub mod influx;
pub mod line_protocol;
pub mod query;
pub mod spool;
pub mod sqlite;

use serde::{Deserialize, Serialize};

/// A field value.
///
/// Serialised untagged (the spool and SQLite keep points as JSON): `Int` comes
/// before `Float` so `300` reads back as an integer, while a float is always
/// written with a decimal point or exponent (`300.0`) and reads back as a float.
/// A [`FieldValue::Gauge`] is written as its shortest decimal form and reads back as
/// the `Float` it stands for; the two compare equal (`PartialEq`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A signed integer.
    Int(i64),
    /// A float (always finite once validated).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string (a name from the contract's vocabulary is borrowed, not copied).
    Str(Name),
    /// A device's f32 sensor reading as it was sent. Its value is [`widen_f32`] of it: the
    /// f64 of its shortest decimal form (36.6f32 is 36.6, not 36.599998…), and that form is
    /// what every store is given, formatted once (not formatted, parsed and formatted again).
    #[serde(skip_deserializing)]
    Gauge(f32),
}

impl PartialEq for FieldValue {
    fn eq(&self, other: &FieldValue) -> bool {
        use FieldValue::{Bool, Float, Gauge, Int, Str};
        match (self, other) {
            (Int(a), Int(b)) => a == b,
            (Float(a), Float(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            (Gauge(a), Gauge(b)) => a == b,
            (Gauge(g), Float(f)) | (Float(f), Gauge(g)) => widen_f32(*g) == *f,
            _ => false,
        }
    }
}

/// The f64 with the same shortest decimal form as `x` (36.6f32 becomes 36.6, not
/// 36.599998…): what a [`FieldValue::Gauge`] stands for, and what a store reading its
/// decimal form back gets.
pub fn widen_f32(x: f32) -> f64 {
    // Formats on the stack (ryu's shortest round-trip form), no allocation.
    ryu::Buffer::new().format(x).parse().unwrap_or(f64::from(x))
}

/// A measurement, tag key or field key: nearly always a `&'static str` from the
/// contract's vocabulary, so building a point does not allocate for its names.
pub type Name = std::borrow::Cow<'static, str>;

/// The tag value of a cartridge slot: borrowed for the slots devices have (0–15), so most
/// points allocate nothing for it.
pub fn slot_tag(slot: u8) -> Name {
    const SLOTS: [&str; 16] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
    ];
    match SLOTS.get(usize::from(slot)) {
        Some(s) => Name::Borrowed(s),
        None => Name::Owned(slot.to_string()),
    }
}

/// One time-series point, keyed by `(measurement, tags, ts_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Measurement name.
    pub measurement: Name,
    /// Tags: only what identifies a series (device id, slot, kind), sorted by key.
    pub tags: Vec<(Name, Name)>,
    /// Fields.
    pub fields: Vec<(Name, FieldValue)>,
    /// Device timestamp, UTC ms.
    pub ts_ms: i64,
}

/// A point the store refused, with its reason; it goes to the dead-letter store.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedPoint {
    /// Index of the point in the written slice.
    pub index: usize,
    /// The encoded line (or a JSON rendering for stores without line protocol).
    pub line: String,
    /// Why the store refused it.
    pub reason: String,
}

/// Why a write did not (entirely) succeed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The store could not be reached or answered 5xx/429/auth errors: retry later, spool meanwhile.
    #[error("telemetry store unavailable: {0}")]
    Unavailable(String),
}

/// The outcome of a write that reached the store: every point is durable
/// except the `rejected` ones, which the store will never accept.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    /// Points refused for good (bad line, field type conflict).
    pub rejected: Vec<RejectedPoint>,
}

/// The configured telemetry store.
#[allow(clippy::large_enum_variant, reason = "one per process")]
pub enum TelemetryStore {
    /// InfluxDB over HTTP, v1 or v2 API.
    Influx(influx::InfluxStore),
    /// The embedded SQLite default.
    Sqlite(sqlite::SqliteStore),
}

impl TelemetryStore {
    /// Writes `points`; see [`WriteOutcome`] and [`WriteError`].
    pub async fn write(&self, points: &[Point]) -> Result<WriteOutcome, WriteError> {
        if points.is_empty() {
            return Ok(WriteOutcome::default());
        }
        match self {
            TelemetryStore::Influx(s) => s.write(points).await,
            TelemetryStore::Sqlite(s) => s.write(points).await,
        }
    }

    /// A short name for logs.
    pub fn describe(&self) -> String {
        match self {
            TelemetryStore::Influx(s) => s.describe(),
            TelemetryStore::Sqlite(s) => s.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{widen_f32, FieldValue};

    #[test]
    fn a_gauge_reads_back_from_json_as_the_float_it_stands_for() {
        for x in [36.6f32, 0.1, -0.0, 1e-7, 250.5, f32::MAX] {
            let json = serde_json::to_string(&FieldValue::Gauge(x)).unwrap();
            let back: FieldValue = serde_json::from_str(&json).unwrap();
            assert!(
                matches!(back, FieldValue::Float(f) if f.to_bits() == widen_f32(x).to_bits()),
                "{x}: {json}"
            );
            assert_eq!(back, FieldValue::Gauge(x));
        }
        assert_eq!(
            serde_json::to_string(&FieldValue::Gauge(36.6)).unwrap(),
            "36.6"
        );
        assert_ne!(
            FieldValue::Gauge(36.6),
            FieldValue::Float(f64::from(36.6f32))
        );
        assert_ne!(FieldValue::Gauge(1.0), FieldValue::Int(1));
    }

    #[test]
    fn field_values_keep_their_type_through_json() {
        for v in [
            FieldValue::Int(300),
            FieldValue::Float(300.0),
            FieldValue::Float(1e-7),
            FieldValue::Bool(true),
            FieldValue::Str("1".into()),
        ] {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(
                serde_json::from_str::<FieldValue>(&json).unwrap(),
                v,
                "{json}"
            );
        }
    }
}
