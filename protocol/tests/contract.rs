//! Contract tests: the documented examples parse, encode without an allocator, and validate.

use protocol::message::*;
use protocol::topic::{Channel, Topic};
use protocol::validate::{check_event, check_status, check_telemetry, Invalid, Limits};

const NOW: i64 = 1_764_000_000_000;

fn toilet_json(id: &str, ts: i64, temp: &str) -> String {
    format!(
        r#"{{"v":1,"device_id":"{id}","boot_id":3,"seq":17,"ts":{ts},"fw":"2.4.1","reading":{{"toilet":{{"seat_sessions":12,"washes":9,"wash_seconds":310,"flushes":15,"water_ml":92000,"heater_wh":410,"water_temp_c":{temp},"seat_temp_c":34.0}}}}}}"#
    )
}

fn topic(id: &str, ch: Channel) -> Topic {
    Topic::parse(&Topic::format(id, ch)).unwrap()
}

#[test]
fn documented_toilet_telemetry_parses_and_validates() {
    let msg: Telemetry = serde_json::from_str(&toilet_json("toilet-0001", NOW, "36.5")).unwrap();
    assert_eq!(msg.reading.model(), Model::Toilet);
    check_telemetry(
        &msg,
        &topic("toilet-0001", Channel::Telemetry),
        NOW,
        &Limits::default(),
    )
    .unwrap();
}

#[test]
fn validation_rejects_each_rule_with_its_code() {
    let t = topic("toilet-0001", Channel::Telemetry);
    let lim = Limits::default();
    let check = |json: String, t: &Topic| {
        let msg: Telemetry = serde_json::from_str(&json).unwrap();
        check_telemetry(&msg, t, NOW, &lim)
    };
    assert_eq!(
        check(toilet_json("toilet-0002", NOW, "36.5"), &t),
        Err(Invalid::DeviceIdMismatch)
    );
    assert_eq!(
        check(
            toilet_json("toilet-0001", NOW - 401 * 86_400_000, "36.5"),
            &t
        ),
        Err(Invalid::TimestampTooOld)
    );
    assert_eq!(
        check(toilet_json("toilet-0001", NOW + 3_600_000, "36.5"), &t),
        Err(Invalid::TimestampInFuture)
    );
    assert_eq!(
        check(toilet_json("toilet-0001", NOW, "1e39"), &t),
        Err(Invalid::NotFinite)
    );
    assert_eq!(
        check(toilet_json("toilet-0001", NOW, "500.0"), &t),
        Err(Invalid::OutOfRange)
    );
    let wrong = topic("toilet-0001", Channel::Event);
    assert_eq!(
        check(toilet_json("toilet-0001", NOW, "36.5"), &wrong),
        Err(Invalid::WrongChannel)
    );
    assert_eq!(Invalid::NotFinite.code(), "not_finite");
}

#[test]
fn wrong_types_and_unknown_fields_do_not_parse() {
    assert!(
        serde_json::from_str::<Telemetry>(&toilet_json("toilet-0001", NOW, "\"hot\"")).is_err()
    );
    let extra =
        toilet_json("toilet-0001", NOW, "36.5").replacen("\"v\":1", "\"v\":1,\"admin\":true", 1);
    assert!(serde_json::from_str::<Telemetry>(&extra).is_err());
    let long_id = toilet_json(&"a".repeat(33), NOW, "36.5");
    assert!(serde_json::from_str::<Telemetry>(&long_id).is_err());
}

#[test]
fn purifier_encodes_without_allocator_and_round_trips() {
    let mut cartridges = heapless::Vec::new();
    for (slot, kind) in [
        (0, CartridgeKind::Sediment),
        (1, CartridgeKind::ReverseOsmosis),
    ] {
        cartridges
            .push(Cartridge {
                slot,
                kind,
                ml_since_replacement: 120_500,
                replacements: 2,
                rated_l: None,
            })
            .unwrap();
    }
    let msg = Telemetry {
        v: 1,
        device_id: "purifier-42".try_into().unwrap(),
        boot_id: 1,
        seq: 9,
        ts: NOW,
        fw: None,
        reading: Reading::Purifier(PurifierReading {
            dispensed_ml: 880_000,
            tds_in_ppm: 310,
            tds_out_ppm: 12,
            inlet_pressure_kpa: 280.0,
            pump_seconds: 5400,
            cartridges,
        }),
    };
    let mut buf = [0u8; 512];
    let n = serde_json_core::to_slice(&msg, &mut buf).unwrap();
    let back: Telemetry = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(back, msg);
    check_telemetry(
        &back,
        &topic("purifier-42", Channel::Telemetry),
        NOW,
        &Limits::default(),
    )
    .unwrap();

    let mut dup = msg.clone();
    if let Reading::Purifier(r) = &mut dup.reading {
        r.cartridges[1].slot = 0;
    }
    assert_eq!(
        check_telemetry(
            &dup,
            &topic("purifier-42", Channel::Telemetry),
            NOW,
            &Limits::default()
        ),
        Err(Invalid::DuplicateSlot)
    );
}

#[test]
fn session_and_fault_events_validate() {
    let t = topic("shower-9", Channel::Event);
    let session = format!(
        r#"{{"v":1,"device_id":"shower-9","boot_id":1,"seq":4,"ts":{NOW},"event":{{"session":{{"kind":"shower","started_ts":{},"duration_s":480,"water_ml":52000,"temp_c":39.5}}}}}}"#,
        NOW - 480_000
    );
    let ev: Event = serde_json::from_str(&session).unwrap();
    check_event(&ev, &t, NOW, &Limits::default()).unwrap();

    let mut late = ev.clone();
    if let EventKind::Session(s) = &mut late.event {
        s.started_ts = NOW + 1;
    }
    assert_eq!(
        check_event(&late, &t, NOW, &Limits::default()),
        Err(Invalid::SessionTiming)
    );

    let fault = format!(
        r#"{{"v":1,"device_id":"shower-9","boot_id":1,"seq":5,"ts":{NOW},"event":{{"fault":{{"code":"leak","severity":"critical","state":"raised","value":350.0}}}}}}"#
    );
    let ev: Event = serde_json::from_str(&fault).unwrap();
    assert!(
        matches!(&ev.event, EventKind::Fault(f) if f.code == FaultCode::Leak && f.state == FaultState::Raised)
    );
    check_event(&ev, &t, NOW, &Limits::default()).unwrap();
}

#[test]
fn status_and_command_examples_parse() {
    let s = format!(
        r#"{{"v":1,"device_id":"toilet-0001","ts":{NOW},"state":"offline","model":"toilet"}}"#
    );
    let st: Status = serde_json::from_str(&s).unwrap();
    check_status(
        &st,
        &topic("toilet-0001", Channel::Status),
        NOW,
        &Limits::default(),
    )
    .unwrap();

    let c: Command = serde_json::from_str(
        r#"{"v":1,"cmd_id":7,"ts":1764000000000,"command":{"reset_cartridge":{"slot":1}}}"#,
    )
    .unwrap();
    assert_eq!(c.command, CommandKind::ResetCartridge { slot: 1 });
    let c: Command =
        serde_json::from_str(r#"{"v":1,"cmd_id":8,"ts":1764000000000,"command":"self_test"}"#)
            .unwrap();
    assert_eq!(c.command, CommandKind::SelfTest);
}
