//! Contract v1.1 fixtures, byte for byte as a device sends them (datasheet style): a v1
//! message stays valid and unchanged, the v1.1 fields parse (cartridge rating, reboot
//! reason with counters lost), and the per-field invalid/missing marker keeps the
//! counters of a message whose sensor failed.

use protocol::message::*;
use protocol::topic::{Channel, Topic};
use protocol::validate::{
    check_status, check_telemetry, sanitize_telemetry, Gauge, Invalid, InvalidGauges, Limits,
};

const NOW: i64 = 1_764_000_000_000;

fn topic(id: &str, ch: Channel) -> Topic {
    Topic::parse(&Topic::format(id, ch)).unwrap()
}

/// A v1 purifier reading, exactly as documented for v1.
const V1_PURIFIER: &[u8] = br#"{"v":1,"device_id":"purifier-42","boot_id":1,"seq":9,"ts":1764000000000,"reading":{"purifier":{"dispensed_ml":880000,"tds_in_ppm":310,"tds_out_ppm":12,"inlet_pressure_kpa":280.0,"pump_seconds":5400,"cartridges":[{"slot":0,"kind":"sediment","ml_since_replacement":120500,"replacements":2},{"slot":1,"kind":"reverse_osmosis","ml_since_replacement":120500,"replacements":0}]}}}"#;

/// The same reading from a v1.1 device: the RO membrane's rating, and a TDS sensor at
/// the outlet that failed (`null`).
const V1_1_PURIFIER: &[u8] = br#"{"v":1,"device_id":"purifier-42","boot_id":1,"seq":9,"ts":1764000000000,"reading":{"purifier":{"dispensed_ml":880000,"tds_in_ppm":310,"tds_out_ppm":null,"inlet_pressure_kpa":280.0,"pump_seconds":5400,"cartridges":[{"slot":0,"kind":"sediment","ml_since_replacement":120500,"replacements":2},{"slot":1,"kind":"reverse_osmosis","ml_since_replacement":120500,"replacements":0,"rated_l":4500}]}}}"#;

/// A v1 toilet whose water temperature sensor reads −40 °C (out of the contract's range).
const V1_TOILET_FAILED_SENSOR: &[u8] = br#"{"v":1,"device_id":"toilet-0001","boot_id":3,"seq":17,"ts":1764000000000,"reading":{"toilet":{"seat_sessions":12,"washes":9,"wash_seconds":310,"flushes":15,"water_ml":92000,"heater_wh":410,"water_temp_c":-40.0,"seat_temp_c":34.0}}}"#;

/// A v1.1 shower that leaves out its failed temperature sensor altogether.
const V1_1_SHOWER_MISSING: &[u8] = br#"{"v":1,"device_id":"shower-9","boot_id":1,"seq":40,"ts":1764000000000,"reading":{"shower":{"showers":210,"water_ml":9800000,"shower_seconds":88000,"pressure_kpa":300.0,"cartridges":[{"slot":0,"kind":"shower","ml_since_replacement":2100000,"replacements":1,"rated_l":5000}]}}}"#;

/// v1 status.
const V1_STATUS: &[u8] =
    br#"{"v":1,"device_id":"toilet-0001","ts":1764000000000,"state":"online","model":"toilet"}"#;

/// v1.1 status of a boot that lost the counters.
const V1_1_STATUS_LOST: &[u8] = br#"{"v":1,"device_id":"toilet-0001","ts":1764000000000,"state":"online","model":"toilet","boot_id":4,"reboot":{"reason":"brown_out","counters_lost":true}}"#;

#[test]
fn a_v1_message_is_still_valid_and_has_no_v1_1_fields() {
    let msg: Telemetry = serde_json::from_slice(V1_PURIFIER).unwrap();
    let t = topic("purifier-42", Channel::Telemetry);
    check_telemetry(&msg, &t, NOW, &Limits::default()).unwrap();
    let Reading::Purifier(r) = &msg.reading else {
        panic!("purifier expected");
    };
    assert!(r.cartridges.iter().all(|c| c.rated_l.is_none()));
    assert_eq!((r.tds_in_ppm, r.tds_out_ppm), (310, 12));
    let mut m = msg.clone();
    assert!(sanitize_telemetry(&mut m).is_empty());
    assert_eq!(m, msg);
    // Encodes back to the same bytes: a v1 device's encoder is unchanged.
    let mut buf = [0u8; 1024];
    let n = serde_json_core::to_slice(&msg, &mut buf).unwrap();
    assert_eq!(&buf[..n], V1_PURIFIER);

    let st: Status = serde_json::from_slice(V1_STATUS).unwrap();
    assert_eq!((st.boot_id, st.reboot), (None, None));
    check_status(
        &st,
        &topic("toilet-0001", Channel::Status),
        NOW,
        &Limits::default(),
    )
    .unwrap();
    let n = serde_json_core::to_slice(&st, &mut buf).unwrap();
    assert_eq!(&buf[..n], V1_STATUS);
}

#[test]
fn v1_1_rating_and_tds_marker_parse_validate_and_round_trip() {
    let msg: Telemetry = serde_json::from_slice(V1_1_PURIFIER).unwrap();
    let t = topic("purifier-42", Channel::Telemetry);
    check_telemetry(&msg, &t, NOW, &Limits::default()).unwrap();
    let Reading::Purifier(r) = &msg.reading else {
        panic!("purifier expected");
    };
    assert_eq!(r.cartridges[0].rated_l, None);
    assert_eq!(r.cartridges[1].rated_l, Some(4500));
    assert_eq!(r.tds_out_ppm, INVALID_PPM);
    assert_eq!(r.cartridges[1].ml_since_replacement, 120_500);
    let mut m = msg.clone();
    let invalid = sanitize_telemetry(&mut m);
    assert_eq!(
        invalid.iter().collect::<Vec<_>>(),
        [Gauge::TdsOutPpm],
        "the gauge the device marked, and only it"
    );
    assert_eq!(m, msg, "already marked: nothing changes");
    // The firmware's allocation-free encoder writes the same bytes.
    let mut buf = [0u8; 1024];
    let n = serde_json_core::to_slice(&msg, &mut buf).unwrap();
    assert_eq!(&buf[..n], V1_1_PURIFIER);
    let back: Telemetry = serde_json_core::from_slice(&buf[..n]).unwrap().0;
    assert_eq!(back, msg);

    // A rating of 0 is no rating: rejected like any out-of-range value.
    let zero = std::str::from_utf8(V1_1_PURIFIER)
        .unwrap()
        .replace("\"rated_l\":4500", "\"rated_l\":0");
    let m: Telemetry = serde_json::from_str(&zero).unwrap();
    assert_eq!(
        check_telemetry(&m, &t, NOW, &Limits::default()),
        Err(Invalid::OutOfRange)
    );
}

#[test]
fn a_failed_sensor_is_marked_invalid_and_the_counters_are_kept() {
    let t = topic("toilet-0001", Channel::Telemetry);
    let mut msg: Telemetry = serde_json::from_slice(V1_TOILET_FAILED_SENSOR).unwrap();
    // Strict v1 validation rejects it as a whole...
    assert_eq!(
        check_telemetry(&msg, &t, NOW, &Limits::default()),
        Err(Invalid::OutOfRange)
    );
    // ...a receiver that sanitises first keeps everything but the failed field.
    let invalid = sanitize_telemetry(&mut msg);
    assert_eq!(invalid.count(), 1);
    assert!(invalid.contains(Gauge::WaterTempC));
    assert!(!invalid.contains(Gauge::SeatTempC));
    assert_eq!(
        invalid.iter().map(Gauge::as_str).collect::<Vec<_>>(),
        ["water_temp_c"]
    );
    check_telemetry(&msg, &t, NOW, &Limits::default()).unwrap();
    let Reading::Toilet(r) = &msg.reading else {
        panic!("toilet expected");
    };
    assert!(r.water_temp_c.is_nan());
    assert!(!gauge::is_valid(r.water_temp_c));
    assert_eq!((r.water_ml, r.flushes, r.seat_temp_c), (92_000, 15, 34.0));
    // It encodes with the marker.
    let mut buf = [0u8; 1024];
    let n = serde_json_core::to_slice(&msg, &mut buf).unwrap();
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(text.contains("\"water_temp_c\":null"), "{text}");

    // A missing field is the same marker; the counters validate.
    let mut shower: Telemetry = serde_json::from_slice(V1_1_SHOWER_MISSING).unwrap();
    let ts = topic("shower-9", Channel::Telemetry);
    check_telemetry(&shower, &ts, NOW, &Limits::default()).unwrap();
    assert_eq!(sanitize_telemetry(&mut shower), {
        let mut s = InvalidGauges::default();
        s.insert(Gauge::TempC);
        s
    });
    let Reading::Shower(r) = &shower.reading else {
        panic!("shower expected");
    };
    assert_eq!(r.cartridges[0].rated_l, Some(5000));
    assert_eq!(r.water_ml, 9_800_000);
    // A counter out of range still rejects the message: only gauges are marked.
    let bad = std::str::from_utf8(V1_TOILET_FAILED_SENSOR)
        .unwrap()
        .replace("\"water_ml\":92000", "\"water_ml\":900000000000000");
    let mut m: Telemetry = serde_json::from_str(&bad).unwrap();
    sanitize_telemetry(&mut m);
    assert_eq!(
        check_telemetry(&m, &t, NOW, &Limits::default()),
        Err(Invalid::OutOfRange)
    );
}

#[test]
fn v1_1_status_says_the_boot_lost_its_counters() {
    let st: Status = serde_json::from_slice(V1_1_STATUS_LOST).unwrap();
    check_status(
        &st,
        &topic("toilet-0001", Channel::Status),
        NOW,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(st.boot_id, Some(4));
    assert_eq!(
        st.reboot,
        Some(Reboot {
            reason: RebootReason::BrownOut,
            counters_lost: true
        })
    );
    assert_eq!(RebootReason::BrownOut.as_str(), "brown_out");
    let mut buf = [0u8; 512];
    let n = serde_json_core::to_slice(&st, &mut buf).unwrap();
    assert_eq!(&buf[..n], V1_1_STATUS_LOST);
    // Unknown reasons do not parse (schema_mismatch at the gateway).
    let odd = std::str::from_utf8(V1_1_STATUS_LOST)
        .unwrap()
        .replace("brown_out", "cosmic_ray");
    assert!(serde_json::from_str::<Status>(&odd).is_err());
}
