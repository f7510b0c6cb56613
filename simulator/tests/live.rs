//! Live mode without a broker: after their history, simulated devices take commands
//! through the firmware. A clogged inlet screen shows in the diagnostics; closing the
//! inlet valve of a leaking toilet stops the flow and the firmware clears the leak.

use protocol::message::{
    Command, CommandKind, CommandResult, CommandStatus, Event, EventKind, FaultCode, FaultState,
};
use simulator::faults::{FaultKind, FaultMix, Injection};
use simulator::{Fleet, FleetConfig, OutMessage};

const END: i64 = 1_764_000_000_000;

fn fleet() -> Fleet {
    Fleet::new(FleetConfig {
        devices: 3,
        days: 20,
        end_ms: END,
        seed: 11,
        telemetry_every_min: 15,
        mix: FaultMix::parse("none").unwrap(),
        inject: vec![
            Injection::on("shower-0002", FaultKind::InletClog, 2.0, Some(40.0)),
            Injection::on("toilet-0000", FaultKind::Leak, 19.0, Some(10.0)),
        ],
    })
    .unwrap()
}

fn results(out: &[OutMessage], device: &str) -> Vec<CommandResult> {
    out.iter()
        .filter(|m| m.topic == format!("fixtures/{device}/result"))
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect()
}

fn cmd(cmd_id: u32, command: CommandKind) -> Command {
    Command {
        v: 1,
        cmd_id,
        ts: END,
        command,
    }
}

#[test]
fn live_devices_answer_diagnostics_and_a_closed_valve_stops_the_leak() {
    let mut f = fleet();
    while f.next_batch().is_some() {}
    let mut devices = f.into_devices();
    for d in &mut devices {
        d.go_live();
    }
    let [toilet, _purifier, shower] = devices.as_mut_slice() else {
        panic!("one household")
    };

    // The clogged shower: the diagnostic shows the low flow against a fine pressure.
    let mut out = Vec::new();
    assert!(shower.command(
        &cmd(1, CommandKind::ReportDiagnostics),
        END + 1_000,
        &mut out
    ));
    let r = results(&out, "shower-0002");
    assert_eq!(r.len(), 1, "{out:?}");
    let d = r[0].diagnostics.clone().expect("diagnostics");
    assert_eq!(r[0].status, CommandStatus::Ok);
    assert!(d.active.contains(&FaultCode::InletClog), "{d:?}");
    assert!(d.flow_permille.is_some_and(|p| p < 700), "{d:?}");
    assert!(d.pressure_kpa.is_some_and(|p| p > 150.0), "{d:?}");
    // A shower has no inlet valve.
    out.clear();
    assert!(!shower.command(&cmd(2, CommandKind::CloseInletValve), END + 2_000, &mut out));
    assert_eq!(
        results(&out, "shower-0002")[0].status,
        CommandStatus::Unsupported
    );

    // The leaking toilet: closing the valve stops the flow; the firmware clears the leak.
    out.clear();
    toilet.advance_to(END + 3_000, &mut out);
    assert!(toilet
        .diagnostics()
        .unwrap()
        .active
        .contains(&FaultCode::Leak));
    out.clear();
    assert!(toilet.command(&cmd(3, CommandKind::CloseInletValve), END + 4_000, &mut out));
    let r = results(&out, "toilet-0000");
    assert_eq!(r[0].status, CommandStatus::Ok);
    assert_eq!(
        r[0].diagnostics.as_ref().and_then(|d| d.inlet_valve_open),
        Some(false)
    );
    assert!(!toilet.inlet_valve_open());
    let water = |out: &[OutMessage]| {
        out.iter()
            .filter(|m| m.topic.ends_with("/telemetry"))
            .filter_map(|m| {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
                v["reading"]["toilet"]["water_ml"].as_u64()
            })
            .collect::<Vec<_>>()
    };
    out.clear();
    let mut t = END + 4_000;
    let mut cleared = false;
    while t < END + 3 * 3_600_000 && !cleared {
        t += 60_000;
        toilet.advance_to(t, &mut out);
        cleared = out.iter().any(|m| {
            serde_json::from_slice::<Event>(&m.payload).is_ok_and(|e| {
                matches!(e.event, EventKind::Fault(f) if f.code == FaultCode::Leak && f.state == FaultState::Cleared)
            })
        });
    }
    assert!(cleared, "the leak clears once the valve is closed");
    toilet.advance_to(t + 3_600_000, &mut out);
    let w = water(&out);
    assert!(
        w.len() >= 2 && w.first() == w.last(),
        "no water flows: {w:?}"
    );
}
