//! Message contract v1 between smart fixtures and the gateway.
//!
//! This crate is the one place that says what travels over MQTT: the topic
//! layout ([`topic`]), the JSON payloads ([`message`]) and the rules a payload
//! must satisfy before the gateway stores it ([`validate`]). It is shared by the
//! `firmware` crate (which encodes messages without an allocator) and the
//! `gateway` (which decodes and validates them), so both sides cannot drift.
//!
//! # Layout
//! - [`topic`]: `fixtures/{device_id}/{telemetry|event|status|cmd}` parsing and formatting.
//! - [`message`]: the payload types, one per topic kind, and the three fixture models.
//! - [`catalog`]: models' cartridges, rated capacities, maximum ages; time constants.
//! - `finding` (feature `std`: serde's tagged enums need an allocator): the finding vocabulary
//!   shared by the analytics and the maintenance engine.
//! - [`validate`]: limits (id charset, timestamp window, ranges, finiteness, size cap).
//!
//! # Invariants
//! - `no_std` and no allocator: every string and list is a bounded `heapless` type.
//! - Counters are cumulative on the device: a lost or repeated message never
//!   corrupts a total, the gateway only ever stores the latest absolute value.
//! - `(device_id, boot_id, seq)` identifies a message; `seq` restarts at 0 only
//!   when `boot_id` changes, so gaps are detectable across reboots.
//!
//! # Example
//! ```
//! use protocol::{message::*, topic::{Topic, Channel}};
//! let json = br#"{"v":1,"device_id":"toilet-0001","boot_id":3,"seq":17,"ts":1764000000000,
//!   "reading":{"toilet":{"seat_sessions":12,"washes":9,"wash_seconds":310,"flushes":15,
//!   "water_ml":92000,"heater_wh":410,"water_temp_c":36.5,"seat_temp_c":34.0}}}"#;
//! let msg: Telemetry = serde_json::from_slice(json).unwrap();
//! let topic = Topic::parse("fixtures/toilet-0001/telemetry").unwrap();
//! assert_eq!(topic.channel, Channel::Telemetry);
//! protocol::validate::check_telemetry(&msg, &topic, 1764000000000, &protocol::validate::Limits::default()).unwrap();
//! ```
#![cfg_attr(not(feature = "std"), no_std)]

pub mod catalog;
#[cfg(feature = "std")]
pub mod finding;
pub mod message;
pub mod topic;
pub mod validate;

/// The schema version this crate speaks; carried in every payload as `"v"`.
pub const SCHEMA_VERSION: u8 = 1;

/// Largest payload, in bytes, that a fixture may publish and the gateway will parse.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// Longest device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 32;

/// A device id: 1 to [`MAX_DEVICE_ID_LEN`] characters of `[a-z0-9-_]`.
///
/// The charset is deliberately narrow: the id becomes an MQTT topic level,
/// an InfluxDB tag value and a SQLite key, and nothing in it needs escaping anywhere.
pub type DeviceId = heapless::String<MAX_DEVICE_ID_LEN>;

/// Returns true if `id` is a well-formed device id (see [`DeviceId`]).
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DEVICE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
