//! The fleet simulator publishes a fleet through Mosquitto to the gateway: every
//! message it published is stored, and every fault its ground truth says was
//! injected shows up in InfluxDB as raised by the device. (Issue #3.)

use std::time::Duration;

use e2e_tests::*;
use simulator::faults::{FaultKind, FaultMix, Injection, Truth};
use simulator::{Fleet, FleetConfig};

const DB: &str = "simulated_fleet";

fn inj(device: &str, kind: FaultKind, start_day: f64, days: f64) -> Injection {
    Injection::on(device, kind, start_day, Some(days))
}

#[test]
fn a_simulated_fleet_is_stored_whole_and_its_injected_faults_appear() {
    let cfg = FleetConfig {
        devices: 60,
        days: 14,
        seed: 7,
        telemetry_every_min: 15,
        mix: FaultMix::default(),
        inject: vec![
            inj("toilet-0000", FaultKind::Leak, 3.0, 1.0),
            inj("toilet-0003", FaultKind::ValveStuck, 4.0, 0.05),
            inj("toilet-0006", FaultKind::HeaterFailure, 5.0, 2.0),
            inj("shower-0002", FaultKind::LowPressure, 4.0, 2.0),
            inj("purifier-0001", FaultKind::SensorDropout, 6.0, 0.5),
        ],
        ..FleetConfig::default()
    };
    let (messages, truth) = Fleet::generate_all(cfg).unwrap();
    let count = |channel: &str| {
        messages
            .iter()
            .filter(|m| m.topic.ends_with(channel))
            .count() as i64
    };
    let (telemetry, events) = (count("/telemetry"), count("/event"));
    let sessions = messages
        .iter()
        .filter(|m| {
            m.topic.ends_with("/event") && m.payload.windows(10).any(|w| w == b"\"session\":")
        })
        .count() as i64;
    assert!(
        telemetry > 10_000 && sessions > 1000,
        "a realistic fleet: {telemetry} telemetry, {sessions} sessions"
    );

    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let influx = Influx::start().unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Influx {
            url: influx.url(),
            db: DB.into(),
        },
        "gw-sim",
        "",
    )
    .unwrap();
    let total = messages.len();
    let acked = publish_all(
        broker.port,
        "sim-publisher",
        messages.into_iter().map(|m| (m.topic, m.payload)).collect(),
        None,
        None,
    )
    .unwrap();
    assert_eq!(acked, total);

    wait_until(
        Duration::from_secs(120),
        "every simulated message to be stored",
        || {
            let m = gw.metrics().ok()?;
            (m["acked"].as_u64()? >= total as u64).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", gw.metrics().ok(), gw.log_tail()));
    let m = gw.metrics().unwrap();
    assert_eq!(m["rejected"], 0, "every simulated message is valid: {m}");
    assert_eq!(
        influx.sum_counts(DB, COUNT_TELEMETRY).unwrap(),
        telemetry,
        "every telemetry message stored once"
    );
    let stored_events = influx
        .sum_counts(DB, "SELECT count(seq) FROM session, fault")
        .unwrap();
    assert_eq!(stored_events, events, "every event stored once");
    assert_eq!(
        influx
            .sum_counts(DB, "SELECT count(seq) FROM session")
            .unwrap(),
        sessions
    );

    let mut checked = 0;
    for t in &truth {
        let Truth::Fault {
            device,
            kind,
            start_ms,
            end_ms,
            ..
        } = t
        else {
            continue;
        };
        let Some(code) = kind.device_code() else {
            continue;
        };
        let end = end_ms.unwrap_or(i64::MAX / 2);
        let q = format!(
            "SELECT count(seq) FROM fault WHERE device_id = '{device}' AND code = '{}' AND raised = true AND time >= {}ms AND time <= {}ms",
            code.as_str(),
            start_ms,
            end + 3_600_000
        );
        let raised = influx.sum_counts(DB, &q).unwrap();
        assert!(
            raised >= 1,
            "injected {kind:?} on {device} from {start_ms} was not raised in InfluxDB"
        );
        checked += 1;
    }
    assert!(
        checked >= 5,
        "at least the five injected faults were checked ({checked})"
    );
}
