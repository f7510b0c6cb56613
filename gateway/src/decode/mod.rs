//! Turns one MQTT message into points, or into a rejection with a reason.
//!
//! This is the hot path, so it allocates little and never panics: the size cap
//! comes first (before any parsing), then the topic, then JSON into the
//! contract's types, then the contract's validation. Each rejection carries a
//! stable reason code that is counted and stored with the raw bytes.
//!
//! Telemetry in the layout the firmware writes is read by [`fast_telemetry`] without
//! serde; whatever that shortcut is not sure of, and every other channel, is read by
//! serde_json, which alone decides a rejection and its reason.
//!
//! Contract v1.1: a telemetry gauge (temperature, pressure, TDS) that is missing,
//! `null`, non-finite or out of its physical range no longer rejects the message: it is
//! marked invalid ([`protocol::validate::sanitize_telemetry`]), left out of the stored
//! point (which gets `invalid_fields`, the count, and `invalid`, their names), counted in
//! [`Accepted::invalid_gauges`] and logged at debug; the analytics see it as missing
//! (NaN). The counters of the message are stored and analysed as usual.

mod fast_telemetry;

use protocol::message::{
    Cartridge, Event, EventKind, FaultState, Presence, Reading, Status, Telemetry,
};
use protocol::topic::{Channel, Topic};
use protocol::validate::{self, Gauge, InvalidGauges, Limits};
use protocol::{DeviceId, MAX_PAYLOAD_BYTES};

use crate::store::{FieldValue, Name, Point};

/// A message that passed every check.
#[derive(Debug)]
pub struct Accepted {
    /// The device (from the topic, equal to the payload's).
    pub device_id: DeviceId,
    /// `(boot_id, seq)` for telemetry and events; `None` for status.
    pub sequence: Option<(u32, u32)>,
    /// What to store.
    pub points: Vec<Point>,
    /// A fault raised or cleared by the device (for the maintenance engine).
    pub fault: Option<protocol::message::FaultEvent>,
    /// `(slot, replacements)` of each cartridge reported (for the maintenance engine).
    pub cartridges: Vec<(u8, u32)>,
    /// The validated message itself, for the analytics stage.
    pub message: Message,
    /// Contract v1.1: the telemetry gauges that were invalid or missing (left out).
    pub invalid_gauges: InvalidGauges,
}

/// A validated contract message (boxed: they are a few hundred bytes each).
#[derive(Debug, Clone)]
pub enum Message {
    /// Periodic counters and readings.
    Telemetry(Box<Telemetry>),
    /// A usage session or a fault.
    Event(Box<Event>),
    /// Online/offline; since contract v1.1 it may say why the device booted (the
    /// forecasts tell a counter reset from a replacement by it).
    Status(Box<Status>),
}

/// A message that failed a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Stable reason code, e.g. `malformed_json`, `device_id_mismatch`.
    pub reason: &'static str,
    /// Human-readable detail.
    pub detail: String,
}

impl Rejection {
    fn new(reason: &'static str, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// The payload as text: one UTF-8 check of the whole payload, after which serde_json does
/// not check each string again (per-string checks were a twentieth of the ingest core's
/// instructions).
fn text(payload: &[u8]) -> Result<&str, Rejection> {
    std::str::from_utf8(payload).map_err(|e| {
        Rejection::new(
            "malformed_json",
            format!("the payload is not UTF-8 text: {e}"),
        )
    })
}

fn parse<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, Rejection> {
    parse_text(text(payload)?)
}

fn parse_text<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, Rejection> {
    serde_json::from_str(text).map_err(|e| {
        let reason = match e.classify() {
            serde_json::error::Category::Data => "schema_mismatch",
            // A well-formed number too large for any type (1e400) breaks the schema, not JSON.
            _ if e.to_string().starts_with("number out of range") => "schema_mismatch",
            _ => "malformed_json",
        };
        Rejection::new(reason, e.to_string())
    })
}

fn invalid(e: validate::Invalid) -> Rejection {
    Rejection::new(e.code(), e.to_string())
}

/// Decodes and validates a message received at `now_ms` on `topic`.
pub fn decode(
    topic: &str,
    payload: &[u8],
    now_ms: i64,
    limits: &Limits,
) -> Result<Accepted, Rejection> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Rejection::new(
            "payload_too_large",
            format!("{} bytes, the limit is {MAX_PAYLOAD_BYTES}", payload.len()),
        ));
    }
    let topic = Topic::parse(topic).map_err(|e| Rejection::new(e.code(), e.to_string()))?;
    match topic.channel {
        Channel::Telemetry => {
            // The common shape is read by the fast path; anything it is not sure of, serde_json
            // reads (and names the rejection).
            let text = text(payload)?;
            let mut msg: Telemetry = match fast_telemetry::telemetry(text) {
                Some(msg) => msg,
                None => parse_text(text)?,
            };
            let invalid_gauges = validate::sanitize_telemetry(&mut msg);
            validate::check_telemetry(&msg, &topic, now_ms, limits).map_err(invalid)?;
            if !invalid_gauges.is_empty() {
                tracing::debug!(
                    device_id = %topic.device_id,
                    invalid = invalid_gauges.count(),
                    "Telemetry with invalid or missing sensor readings: stored without them."
                );
            }
            let cartridges = match &msg.reading {
                Reading::Purifier(r) => r
                    .cartridges
                    .iter()
                    .map(|c| (c.slot, c.replacements))
                    .collect(),
                Reading::Shower(r) => r
                    .cartridges
                    .iter()
                    .map(|c| (c.slot, c.replacements))
                    .collect(),
                Reading::Toilet(_) => Vec::new(),
            };
            Ok(Accepted {
                sequence: Some((msg.boot_id, msg.seq)),
                points: telemetry_points(&msg, invalid_gauges),
                device_id: topic.device_id,
                fault: None,
                cartridges,
                message: Message::Telemetry(Box::new(msg)),
                invalid_gauges,
            })
        }
        Channel::Event => {
            let msg: Event = parse(payload)?;
            validate::check_event(&msg, &topic, now_ms, limits).map_err(invalid)?;
            let fault = match &msg.event {
                EventKind::Fault(f) => Some(f.clone()),
                EventKind::Session(_) => None,
            };
            Ok(Accepted {
                sequence: Some((msg.boot_id, msg.seq)),
                points: vec![event_point(&msg)],
                device_id: topic.device_id,
                fault,
                cartridges: Vec::new(),
                message: Message::Event(Box::new(msg)),
                invalid_gauges: InvalidGauges::default(),
            })
        }
        Channel::Status => {
            let msg: Status = parse(payload)?;
            validate::check_status(&msg, &topic, now_ms, limits).map_err(invalid)?;
            Ok(Accepted {
                sequence: None,
                points: vec![status_point(&msg)],
                device_id: topic.device_id,
                fault: None,
                cartridges: Vec::new(),
                message: Message::Status(Box::new(msg)),
                invalid_gauges: InvalidGauges::default(),
            })
        }
        Channel::Cmd => Err(Rejection::new(
            "wrong_channel",
            "the gateway does not ingest cmd topics",
        )),
    }
}

/// A gauge's value: kept as the f32 the device sent, stored as its shortest decimal form
/// (see [`FieldValue::Gauge`]).
fn widen(x: f32) -> FieldValue {
    FieldValue::Gauge(x)
}

fn int(x: impl Into<i64>) -> FieldValue {
    FieldValue::Int(x.into())
}

fn uint64(x: u64) -> FieldValue {
    // Validation caps every u64 counter far below i64::MAX.
    FieldValue::Int(i64::try_from(x).unwrap_or(i64::MAX))
}

fn device_tags(id: &str) -> Vec<(Name, Name)> {
    let mut tags = Vec::with_capacity(2);
    tags.push((Name::Borrowed("device_id"), Name::Owned(id.to_owned())));
    tags
}

fn f(name: &'static str, v: FieldValue) -> (Name, FieldValue) {
    (Name::Borrowed(name), v)
}

/// A string field from the contract's vocabulary (borrowed, no allocation).
fn word(s: &'static str) -> FieldValue {
    FieldValue::Str(Name::Borrowed(s))
}

/// A float gauge's field, unless it carries the invalid marker.
fn gauge(name: &'static str, x: f32) -> Option<(Name, FieldValue)> {
    protocol::message::gauge::is_valid(x).then(|| f(name, widen(x)))
}

/// A TDS gauge's field, unless it carries the invalid marker.
fn ppm(name: &'static str, x: u16) -> Option<(Name, FieldValue)> {
    (x != protocol::message::INVALID_PPM).then(|| f(name, int(x)))
}

/// A point's fields, starting with its sequence, with room for the most any message has
/// (so building them never reallocates).
fn sequence_fields(boot_id: u32, seq: u32) -> Vec<(Name, FieldValue)> {
    let mut fields = Vec::with_capacity(14);
    fields.push(f("boot_id", int(boot_id)));
    fields.push(f("seq", int(seq)));
    fields
}

fn telemetry_points(msg: &Telemetry, invalid: InvalidGauges) -> Vec<Point> {
    let mut fields = sequence_fields(msg.boot_id, msg.seq);
    if let Some(fw) = &msg.fw {
        fields.push(f(
            "fw",
            FieldValue::Str(Name::Owned(fw.as_str().to_owned())),
        ));
    }
    let mut cartridges: &[Cartridge] = &[];
    match &msg.reading {
        Reading::Toilet(r) => fields.extend([
            f("seat_sessions", int(r.seat_sessions)),
            f("washes", int(r.washes)),
            f("wash_seconds", int(r.wash_seconds)),
            f("flushes", int(r.flushes)),
            f("water_ml", uint64(r.water_ml)),
            f("heater_wh", int(r.heater_wh)),
        ]),
        Reading::Purifier(r) => {
            fields.extend([
                f("dispensed_ml", uint64(r.dispensed_ml)),
                f("pump_seconds", int(r.pump_seconds)),
            ]);
            cartridges = &r.cartridges;
        }
        Reading::Shower(r) => {
            fields.extend([
                f("showers", int(r.showers)),
                f("water_ml", uint64(r.water_ml)),
                f("shower_seconds", int(r.shower_seconds)),
            ]);
            cartridges = &r.cartridges;
        }
    }
    // The gauges, each unless marked invalid or missing (contract v1.1).
    match &msg.reading {
        Reading::Toilet(r) => fields.extend(
            [
                gauge("water_temp_c", r.water_temp_c),
                gauge("seat_temp_c", r.seat_temp_c),
            ]
            .into_iter()
            .flatten(),
        ),
        Reading::Purifier(r) => fields.extend(
            [
                ppm("tds_in_ppm", r.tds_in_ppm),
                ppm("tds_out_ppm", r.tds_out_ppm),
                gauge("inlet_pressure_kpa", r.inlet_pressure_kpa),
            ]
            .into_iter()
            .flatten(),
        ),
        Reading::Shower(r) => fields.extend(
            [
                gauge("temp_c", r.temp_c),
                gauge("pressure_kpa", r.pressure_kpa),
            ]
            .into_iter()
            .flatten(),
        ),
    }
    if !invalid.is_empty() {
        let names: Vec<&str> = invalid.iter().map(Gauge::as_str).collect();
        fields.push(f("invalid_fields", int(invalid.count())));
        fields.push(f("invalid", FieldValue::Str(Name::Owned(names.join(",")))));
    }
    let mut points = Vec::with_capacity(1 + cartridges.len());
    points.push(Point {
        measurement: Name::Borrowed(msg.reading.model().as_str()),
        tags: device_tags(&msg.device_id),
        fields,
        ts_ms: msg.ts,
    });
    for c in cartridges {
        points.push(Point {
            measurement: Name::Borrowed("cartridge"),
            tags: vec![
                (
                    Name::Borrowed("device_id"),
                    Name::Owned(msg.device_id.as_str().to_owned()),
                ),
                (Name::Borrowed("slot"), crate::store::slot_tag(c.slot)),
            ],
            fields: {
                let mut fields = Vec::with_capacity(5);
                fields.extend([
                    f("kind", word(c.kind.as_str())),
                    f("ml_since_replacement", uint64(c.ml_since_replacement)),
                    f("replacements", int(c.replacements)),
                    f("model", word(msg.reading.model().as_str())),
                ]);
                fields.extend(c.rated_l.map(|r| f("rated_l", int(r))));
                fields
            },
            ts_ms: msg.ts,
        });
    }
    points
}

fn event_point(msg: &Event) -> Point {
    let mut fields = sequence_fields(msg.boot_id, msg.seq);
    let (measurement, tag) = match &msg.event {
        EventKind::Session(s) => {
            fields.extend([
                f("started_ts", int(s.started_ts)),
                f("duration_s", int(s.duration_s)),
                f("water_ml", int(s.water_ml)),
                f("energy_wh", int(s.energy_wh)),
            ]);
            if let Some(t) = s.temp_c {
                fields.push(f("temp_c", widen(t)));
            }
            ("session", ("kind", Name::Borrowed(s.kind.as_str())))
        }
        EventKind::Fault(e) => {
            fields.extend([
                f("severity", word(e.severity.as_str())),
                f("raised", FieldValue::Bool(e.state == FaultState::Raised)),
            ]);
            if let Some(v) = e.value {
                fields.push(f("value", widen(v)));
            }
            ("fault", ("code", Name::Borrowed(e.code.as_str())))
        }
    };
    let mut tags = device_tags(&msg.device_id);
    tags.push((Name::Borrowed(tag.0), tag.1));
    Point {
        measurement: Name::Borrowed(measurement),
        tags,
        fields,
        ts_ms: msg.ts,
    }
}

fn status_point(msg: &Status) -> Point {
    let mut fields = vec![
        f("online", FieldValue::Bool(msg.state == Presence::Online)),
        f("model", word(msg.model.as_str())),
    ];
    if let Some(fw) = &msg.fw {
        fields.push(f(
            "fw",
            FieldValue::Str(Name::Owned(fw.as_str().to_owned())),
        ));
    }
    if let Some(boot_id) = msg.boot_id {
        fields.push(f("boot_id", int(boot_id)));
    }
    if let Some(r) = msg.reboot {
        fields.push(f("reboot_reason", word(r.reason.as_str())));
        fields.push(f("counters_lost", FieldValue::Bool(r.counters_lost)));
    }
    Point {
        measurement: Name::Borrowed("status"),
        tags: device_tags(&msg.device_id),
        fields,
        ts_ms: msg.ts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    #[test]
    fn purifier_telemetry_becomes_one_point_plus_one_per_cartridge() {
        let json = format!(
            r#"{{"v":1,"device_id":"pur-1","boot_id":2,"seq":5,"ts":{NOW},"fw":"1.0.0","reading":{{"purifier":{{"dispensed_ml":5000,"tds_in_ppm":300,"tds_out_ppm":9,"inlet_pressure_kpa":250.5,"pump_seconds":60,"cartridges":[{{"slot":0,"kind":"sediment","ml_since_replacement":4000,"replacements":1}},{{"slot":1,"kind":"reverse_osmosis","ml_since_replacement":4000,"replacements":0}}]}}}}}}"#
        );
        let a = decode(
            "fixtures/pur-1/telemetry",
            json.as_bytes(),
            NOW,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(a.sequence, Some((2, 5)));
        assert_eq!(a.points.len(), 3);
        assert_eq!(a.points[0].measurement, "purifier");
        assert!(a.points[0]
            .fields
            .contains(&("inlet_pressure_kpa".into(), FieldValue::Float(250.5))));
        assert!(
            a.points[0].tags.iter().all(|(k, _)| k != "fw"),
            "firmware version is a field, never a tag"
        );
        assert_eq!(a.points[2].tags[1], ("slot".into(), "1".into()));
    }

    /// Contract v1.1: a toilet's failed water temperature sensor (−40 °C, out of the
    /// contract's range) no longer dead-letters the message: its counters are stored,
    /// the field is left out and counted.
    #[test]
    fn a_failed_sensor_drops_only_its_field_and_is_counted() {
        let json = format!(
            r#"{{"v":1,"device_id":"t-1","boot_id":3,"seq":17,"ts":{NOW},"reading":{{"toilet":{{"seat_sessions":12,"washes":9,"wash_seconds":310,"flushes":15,"water_ml":92000,"heater_wh":410,"water_temp_c":-40.0,"seat_temp_c":34.0}}}}}}"#
        );
        let a = decode(
            "fixtures/t-1/telemetry",
            json.as_bytes(),
            NOW,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(a.invalid_gauges.count(), 1);
        assert!(a.invalid_gauges.contains(Gauge::WaterTempC));
        let fields = &a.points[0].fields;
        assert!(fields.contains(&("water_ml".into(), FieldValue::Int(92_000))));
        assert!(fields.contains(&("seat_temp_c".into(), FieldValue::Float(34.0))));
        assert!(fields.iter().all(|(k, _)| k != "water_temp_c"));
        assert!(fields.contains(&("invalid_fields".into(), FieldValue::Int(1))));
        assert!(fields.contains(&(
            "invalid".into(),
            FieldValue::Str(Name::Owned("water_temp_c".into()))
        )));
        let Message::Telemetry(t) = &a.message else {
            panic!("telemetry expected");
        };
        let Reading::Toilet(r) = &t.reading else {
            panic!("toilet expected");
        };
        assert!(r.water_temp_c.is_nan(), "the analytics see it as missing");

        // A v1.1 purifier marking its outlet TDS `null`, with a cartridge rating.
        let json = format!(
            r#"{{"v":1,"device_id":"pur-1","boot_id":2,"seq":5,"ts":{NOW},"reading":{{"purifier":{{"dispensed_ml":5000,"tds_in_ppm":300,"tds_out_ppm":null,"inlet_pressure_kpa":250.5,"pump_seconds":60,"cartridges":[{{"slot":0,"kind":"sediment","ml_since_replacement":4000,"replacements":1,"rated_l":1800}}]}}}}}}"#
        );
        let a = decode(
            "fixtures/pur-1/telemetry",
            json.as_bytes(),
            NOW,
            &Limits::default(),
        )
        .unwrap();
        assert!(a.invalid_gauges.contains(Gauge::TdsOutPpm));
        assert!(a.points[0].fields.iter().all(|(k, _)| k != "tds_out_ppm"));
        assert!(a.points[0]
            .fields
            .contains(&("tds_in_ppm".into(), FieldValue::Int(300))));
        assert!(a.points[1]
            .fields
            .contains(&("rated_l".into(), FieldValue::Int(1800))));
        // A v1 message without a failed sensor counts nothing.
        let ok = json.replace("\"tds_out_ppm\":null", "\"tds_out_ppm\":9");
        let a = decode(
            "fixtures/pur-1/telemetry",
            ok.as_bytes(),
            NOW,
            &Limits::default(),
        )
        .unwrap();
        assert!(a.invalid_gauges.is_empty());
        assert!(a.points[0]
            .fields
            .iter()
            .all(|(k, _)| k != "invalid_fields"));
    }

    #[test]
    fn a_v1_1_status_carries_the_reboot_reason() {
        let json = format!(
            r#"{{"v":1,"device_id":"t-1","ts":{NOW},"state":"online","model":"toilet","boot_id":4,"reboot":{{"reason":"power_on","counters_lost":true}}}}"#
        );
        let a = decode(
            "fixtures/t-1/status",
            json.as_bytes(),
            NOW,
            &Limits::default(),
        )
        .unwrap();
        let Message::Status(s) = &a.message else {
            panic!("status expected");
        };
        assert_eq!(s.boot_id, Some(4));
        assert!(a.points[0]
            .fields
            .contains(&("counters_lost".into(), FieldValue::Bool(true))));
    }

    #[test]
    fn floats_keep_their_decimal_form() {
        assert_eq!(widen(36.6), FieldValue::Float(36.6));
    }

    #[test]
    fn rejections_carry_reason_codes() {
        let lim = Limits::default();
        let reason =
            |topic: &str, payload: &[u8]| decode(topic, payload, NOW, &lim).unwrap_err().reason;
        assert_eq!(
            reason("fixtures/t-1/telemetry", b"{not json"),
            "malformed_json"
        );
        assert_eq!(
            reason("fixtures/t-1/telemetry", br#"{"v":"one"}"#),
            "schema_mismatch"
        );
        assert_eq!(
            reason("fixtures/t-1/telemetry", br#"{"v":1e400}"#),
            "schema_mismatch"
        );
        assert_eq!(
            reason("fixtures/t-1/telemetry", &vec![b' '; 5000]),
            "payload_too_large"
        );
        assert_eq!(reason("fixtures/T 1/telemetry", b"{}"), "topic_device_id");
        assert_eq!(reason("other/t-1/telemetry", b"{}"), "topic_shape");
        assert_eq!(reason("fixtures/t-1/cmd", b"{}"), "wrong_channel");
        let spoof =
            format!(r#"{{"v":1,"device_id":"t-2","ts":{NOW},"state":"online","model":"toilet"}}"#);
        assert_eq!(
            reason("fixtures/t-1/status", spoof.as_bytes()),
            "device_id_mismatch"
        );
    }
}
