//! Tests of [`super::Node`]: boot counter, sequence numbers, persistence, commands,
//! encoding (every payload parses and validates against the contract) and the outbox.

use super::*;
use crate::logic::Demand;
use crate::outbox::Class;
use crate::storage::{RamStorage, SlotOutOfRange, RECORD_LEN};
use protocol::message::{FaultCode, FaultState};
use protocol::topic::Topic;
use protocol::validate::{check_event, check_status, check_telemetry, Limits};

const T0: i64 = 1_764_000_000_000;

type TestNode = Node<RamStorage<4>, 64>;

fn boot(storage: RamStorage<4>, model: Model, now: i64) -> TestNode {
    Node::boot("dev-1", model, Config::for_model(model), storage, now).unwrap()
}

/// Pops everything, checking each payload parses and validates; returns (channel, seq, parsed event).
fn drain(n: &mut TestNode, now: i64) -> std::vec::Vec<(Channel, u32, Option<Event>)> {
    let mut out = vec![];
    while let Some(m) = n.outbox_mut().pop() {
        let topic = Topic::parse(&Topic::format(n.device_id(), m.channel)).unwrap();
        match m.channel {
            Channel::Telemetry => {
                let t: Telemetry = serde_json::from_slice(&m.payload).unwrap();
                check_telemetry(&t, &topic, now, &Limits::default()).unwrap();
                assert_eq!((t.seq, t.boot_id), (m.seq, n.boot_id()));
                out.push((m.channel, m.seq, None));
            }
            Channel::Event => {
                let e: Event = serde_json::from_slice(&m.payload).unwrap();
                check_event(&e, &topic, now, &Limits::default()).unwrap();
                assert_eq!(e.seq, m.seq);
                out.push((m.channel, m.seq, Some(e)));
            }
            _ => unreachable!(),
        }
    }
    out
}

#[test]
fn boot_id_increments_and_counters_survive_a_reboot() {
    let mut n = boot(RamStorage::default(), Model::Toilet, T0);
    assert_eq!(n.boot_id(), 1);
    let ok = Sample {
        water_temp_mc: Some(38_000),
        seat_temp_mc: Some(33_000),
        ..Sample::default()
    };
    n.tick(
        T0,
        &Sample {
            demand: Demand::Flush,
            ..ok
        },
    );
    n.tick(
        T0 + 1000,
        &Sample {
            flow_ml: 6000,
            ..ok
        },
    );
    n.tick(T0 + 2000, &ok);
    assert_eq!(n.fixture().counters().flushes, 1);
    let storage = n.shutdown();
    let n = boot(storage, Model::Toilet, T0 + 10_000);
    assert_eq!(n.boot_id(), 2);
    assert_eq!(
        (
            n.fixture().counters().flushes,
            n.fixture().counters().water_ml
        ),
        (1, 6000)
    );
}

#[test]
fn seq_is_shared_by_telemetry_and_events_and_restarts_per_boot() {
    let mut n = boot(RamStorage::default(), Model::Purifier, T0);
    let ok = Sample {
        pressure_pa: Some(300_000),
        tds_in_ppm: Some(200),
        tds_out_ppm: Some(10),
        ..Sample::default()
    };
    n.tick(
        T0,
        &Sample {
            demand: Demand::Draw,
            flow_ml: 25,
            ..ok
        },
    ); // telemetry seq 0
    n.tick(
        T0 + 10_000,
        &Sample {
            demand: Demand::Draw,
            flow_ml: 250,
            ..ok
        },
    );
    n.tick(T0 + 11_000, &ok); // session event seq 1
    n.tick(T0 + 15 * 60_000, &ok); // telemetry seq 2
    let msgs = drain(&mut n, T0 + 15 * 60_000);
    let shape: std::vec::Vec<_> = msgs.iter().map(|(c, s, _)| (*c, *s)).collect();
    assert_eq!(
        shape,
        [
            (Channel::Telemetry, 0),
            (Channel::Event, 1),
            (Channel::Telemetry, 2)
        ]
    );
    let storage = n.shutdown();
    let mut n = boot(storage, Model::Purifier, T0 + 16 * 60_000);
    n.tick(T0 + 16 * 60_000, &ok);
    assert_eq!(
        (n.boot_id(), n.outbox().front().map(|m| m.seq)),
        (2, Some(0))
    );
}

#[test]
fn telemetry_follows_the_report_interval_command() {
    let mut n = boot(RamStorage::default(), Model::Shower, T0);
    let ok = Sample {
        water_temp_mc: Some(39_000),
        pressure_pa: Some(300_000),
        ..Sample::default()
    };
    let cmd = Command {
        v: 1,
        cmd_id: 7,
        ts: T0,
        command: CommandKind::SetReportInterval { seconds: 60 },
    };
    assert!(n.handle_command(&cmd, T0));
    assert!(!n.handle_command(&cmd, T0), "same cmd_id twice is ignored");
    for i in 0..10 {
        n.tick(T0 + i * 30_000, &ok);
    }
    assert_eq!(n.outbox().len(), 5); // at 0, 60, 120, 180, 240 s
    n.set_report_interval_ms(1);
    assert_eq!(
        n.report_interval_ms(),
        10_000,
        "clamped to the contract's minimum"
    );
}

#[test]
fn reset_cartridge_command_is_saved_and_reported() {
    let mut n = boot(RamStorage::default(), Model::Shower, T0);
    let ok = Sample {
        water_temp_mc: Some(39_000),
        pressure_pa: Some(300_000),
        ..Sample::default()
    };
    n.tick(
        T0,
        &Sample {
            demand: Demand::Draw,
            flow_ml: 9000,
            ..ok
        },
    );
    n.tick(T0 + 60_000, &ok);
    drain(&mut n, T0 + 60_000);
    let cmd = Command {
        v: 1,
        cmd_id: 1,
        ts: T0,
        command: CommandKind::ResetCartridge { slot: 0 },
    };
    assert!(n.handle_command(&cmd, T0 + 61_000));
    let m = n.outbox_mut().pop().unwrap();
    let t: Telemetry = serde_json::from_slice(&m.payload).unwrap();
    let protocol::message::Reading::Shower(r) = t.reading else {
        panic!("model")
    };
    assert_eq!(
        (
            r.cartridges[0].ml_since_replacement,
            r.cartridges[0].replacements
        ),
        (0, 1)
    );
    let n = boot(n.shutdown(), Model::Shower, T0 + 62_000);
    assert_eq!(n.fixture().counters().cartridges[0].replacements, 1);
    let bad = Command {
        v: 1,
        cmd_id: 2,
        ts: T0,
        command: CommandKind::ResetCartridge { slot: 3 },
    };
    let mut n = n;
    assert!(!n.handle_command(&bad, T0));
}

#[test]
fn every_payload_encodes_within_the_buffer_and_validates() {
    for model in [Model::Toilet, Model::Purifier, Model::Shower] {
        let mut storage = RamStorage::<4>::default();
        let (mut store, _) = PersistentStore::open(&mut storage);
        let mut c = crate::logic::Counters {
            water_ml: 99_999_999_999,
            dispensed_ml: 99_999_999_999,
            ..Default::default()
        };
        for cart in &mut c.cartridges {
            *cart = crate::logic::CartridgeCounter {
                ml: 99_999_999_999,
                replacements: u32::MAX,
            };
        }
        store.save(u32::MAX - 1, &c).unwrap();
        let id = "abcdefghijklmnopqrstuvwxyz-01234";
        let mut n: Node<_, 4> =
            Node::boot(id, model, Config::for_model(model), &mut storage, T0).unwrap();
        n.tick(T0, &Sample::default());
        let m = n.outbox_mut().pop().unwrap();
        assert!(m.payload.len() < MAX_MESSAGE);
        let t: Telemetry = serde_json::from_slice(&m.payload).unwrap();
        let topic = Topic::parse(&Topic::format(id, Channel::Telemetry)).unwrap();
        check_telemetry(&t, &topic, T0, &Limits::default()).unwrap();
        assert_eq!(t.boot_id, u32::MAX);
        let mut buf = [0u8; 256];
        let len = n.status(T0, Presence::Offline, &mut buf).unwrap();
        let st: Status = serde_json::from_slice(&buf[..len]).unwrap();
        let topic = Topic::parse(&Topic::format(id, Channel::Status)).unwrap();
        check_status(&st, &topic, T0, &Limits::default()).unwrap();
        assert_eq!((st.model, st.state), (model, Presence::Offline));
        assert_eq!(
            n.status(T0, Presence::Online, &mut [0u8; 10]),
            Err(EncodeError::TooLarge)
        );
    }
}

impl Storage for &mut RamStorage<4> {
    type Error = SlotOutOfRange;
    fn slots(&self) -> usize {
        4
    }
    fn read(&mut self, slot: usize, buf: &mut [u8; RECORD_LEN]) -> Result<(), SlotOutOfRange> {
        (**self).read(slot, buf)
    }
    fn write(&mut self, slot: usize, buf: &[u8; RECORD_LEN]) -> Result<(), SlotOutOfRange> {
        (**self).write(slot, buf)
    }
}

/// A store whose writes fail until `healthy` is set.
struct FailingStorage {
    healthy: bool,
    inner: RamStorage<2>,
}

impl Storage for FailingStorage {
    type Error = ();
    fn slots(&self) -> usize {
        2
    }
    fn read(&mut self, slot: usize, buf: &mut [u8; RECORD_LEN]) -> Result<(), ()> {
        self.inner.read(slot, buf).map_err(|_| ())
    }
    fn write(&mut self, slot: usize, buf: &[u8; RECORD_LEN]) -> Result<(), ()> {
        if self.healthy {
            self.inner.write(slot, buf).map_err(|_| ())
        } else {
            Err(())
        }
    }
}

#[test]
fn failing_storage_raises_a_main_board_fault() {
    let storage = FailingStorage {
        healthy: false,
        inner: RamStorage::default(),
    };
    let mut n: Node<FailingStorage, 16> = Node::boot(
        "dev-1",
        Model::Toilet,
        Config::for_model(Model::Toilet),
        storage,
        T0,
    )
    .unwrap();
    assert!(n.fixture().fault_active(FaultCode::MainBoard));
    let m = n.outbox_mut().pop().unwrap();
    let e: Event = serde_json::from_slice(&m.payload).unwrap();
    assert!(
        matches!(e.event, EventKind::Fault(f) if f.code == FaultCode::MainBoard && f.state == FaultState::Raised)
    );
}

#[test]
fn offline_queue_keeps_faults_while_telemetry_is_dropped() {
    let mut n: Node<RamStorage<4>, 8> = Node::boot(
        "dev-1",
        Model::Toilet,
        Config::for_model(Model::Toilet),
        RamStorage::default(),
        T0,
    )
    .unwrap();
    let ok = Sample {
        water_temp_mc: Some(38_000),
        seat_temp_mc: Some(33_000),
        ..Sample::default()
    };
    // Two days offline: telemetry every 15 min, and a leak raised on day 1.
    let mut t = T0;
    while t < T0 + 2 * 86_400_000 {
        let leaking = t > T0 + 86_400_000 && t < T0 + 86_400_000 + 3_600_000;
        n.tick(
            t,
            &Sample {
                flow_ml: if leaking { 100 } else { 0 },
                ..ok
            },
        );
        t += 60_000;
    }
    assert_eq!(n.outbox().len(), 8);
    let faults: std::vec::Vec<_> = n
        .outbox()
        .iter()
        .filter(|m| m.class == Class::Fault)
        .collect();
    assert_eq!(faults.len(), 2, "leak raised and cleared are both kept");
    assert!(n.outbox().dropped(Class::Telemetry) > 180);
    assert_eq!(n.outbox().dropped(Class::Fault), 0);
}

#[test]
fn bad_device_id_does_not_boot() {
    let r: Result<Node<RamStorage<4>, 4>, _> = Node::boot(
        "Bad Id",
        Model::Toilet,
        Config::for_model(Model::Toilet),
        RamStorage::default(),
        T0,
    );
    assert_eq!(r.err(), Some(BootError::BadDeviceId));
}

fn result(n: &mut TestNode) -> protocol::message::CommandResult {
    let p = n.pop_result().expect("a command result");
    let r: protocol::message::CommandResult = serde_json::from_slice(&p).unwrap();
    protocol::validate::check_command_result(&r, n.device_id(), r.ts, &Limits::default()).unwrap();
    r
}

fn command(cmd_id: u32, command: CommandKind) -> Command {
    Command {
        v: 1,
        cmd_id,
        ts: T0,
        command,
    }
}

/// A five-minute shower at `ml_per_s` through the node, starting at `start`.
fn shower_through(n: &mut TestNode, start: i64, ml_per_s: u32) {
    let ok = Sample {
        water_temp_mc: Some(39_000),
        pressure_pa: Some(300_000),
        ..Sample::default()
    };
    for i in 0..300 {
        n.tick(
            start + i * 1000,
            &Sample {
                demand: Demand::Draw,
                flow_ml: ml_per_s,
                ..ok
            },
        );
    }
    n.tick(start + 301_000, &ok);
    n.tick(start + 302_000, &ok);
}

#[test]
fn report_diagnostics_shows_a_clogged_inlet_screen_and_the_fault_log() {
    use protocol::message::CommandStatus;
    let mut n = boot(RamStorage::default(), Model::Shower, T0);
    let day = 86_400_000;
    for d in 0..5 {
        shower_through(&mut n, T0 + d * day, 150);
    }
    assert!(n.handle_command(&command(1, CommandKind::ReportDiagnostics), T0 + 5 * day));
    let healthy = result(&mut n);
    let d = healthy.diagnostics.expect("diagnostics");
    assert_eq!(healthy.status, CommandStatus::Ok);
    assert!(d.active.is_empty() && d.sensors_ok, "{d:?}");
    assert_eq!(d.inlet_valve_open, None, "a shower has no inlet valve");
    for d in 5..8 {
        shower_through(&mut n, T0 + d * day, 80);
    }
    assert!(n.handle_command(&command(2, CommandKind::ReportDiagnostics), T0 + 8 * day));
    let r = result(&mut n);
    assert_eq!((r.cmd_id, r.status), (2, CommandStatus::Ok));
    let d = r.diagnostics.expect("diagnostics");
    assert_eq!(d.active.as_slice(), &[FaultCode::InletClog], "{d:?}");
    assert!(
        d.flow_permille.is_some_and(|p| p < 600),
        "the flow ratio shows the clog: {d:?}"
    );
    assert_eq!(d.pressure_kpa, Some(300.0), "the pressure is fine");
    assert_eq!(
        d.log.last().map(|e| (e.code, e.state)),
        Some((FaultCode::InletClog, FaultState::Raised))
    );
    assert_eq!(d.sessions, 8);
    assert!(n.pop_result().is_none());
}

#[test]
fn close_inlet_valve_closes_it_and_a_model_without_a_valve_answers_unsupported() {
    use protocol::message::CommandStatus;
    let mut toilet = boot(RamStorage::default(), Model::Toilet, T0);
    assert!(toilet.inlet_valve_open());
    assert!(toilet.handle_command(&command(10, CommandKind::CloseInletValve), T0));
    assert!(!toilet.inlet_valve_open());
    let r = result(&mut toilet);
    assert_eq!(r.status, CommandStatus::Ok);
    assert_eq!(r.diagnostics.and_then(|d| d.inlet_valve_open), Some(false));
    // A redelivery of the same command is ignored; opening again is a new command.
    assert!(!toilet.handle_command(&command(10, CommandKind::CloseInletValve), T0));
    assert!(toilet.pop_result().is_none());
    assert!(toilet.handle_command(&command(11, CommandKind::OpenInletValve), T0));
    assert!(toilet.inlet_valve_open());
    assert_eq!(result(&mut toilet).status, CommandStatus::Ok);

    let mut shower = boot(RamStorage::default(), Model::Shower, T0);
    assert!(!shower.handle_command(&command(12, CommandKind::CloseInletValve), T0));
    assert!(shower.inlet_valve_open());
    let r = result(&mut shower);
    assert_eq!((r.cmd_id, r.status), (12, CommandStatus::Unsupported));
    assert!(!shower.handle_command(&command(13, CommandKind::StartCleaning), T0));
    assert_eq!(result(&mut shower).status, CommandStatus::Unsupported);
    assert!(!shower.handle_command(
        &command(14, CommandKind::SetReportInterval { seconds: 1 }),
        T0
    ));
    assert_eq!(result(&mut shower).status, CommandStatus::Unsupported);
}

#[test]
fn cleaning_is_accepted_at_once_and_done_when_its_session_ends() {
    use protocol::message::CommandStatus;
    let mut n = boot(RamStorage::default(), Model::Toilet, T0);
    assert!(n.handle_command(&command(20, CommandKind::StartCleaning), T0));
    assert!(n.take_cleaning_request());
    assert!(!n.take_cleaning_request(), "taken once");
    assert_eq!(result(&mut n).status, CommandStatus::Accepted);
    let ok = Sample {
        water_temp_mc: Some(38_000),
        seat_temp_mc: Some(33_000),
        ..Sample::default()
    };
    for i in 0..60 {
        n.tick(
            T0 + i * 5_000,
            &Sample {
                demand: Demand::Clean,
                flow_ml: 250,
                ..ok
            },
        );
    }
    assert!(n.pop_result().is_none(), "still cleaning");
    n.tick(T0 + 305_000, &ok);
    n.tick(T0 + 310_000, &ok);
    let r = result(&mut n);
    assert_eq!((r.cmd_id, r.status), (20, CommandStatus::Ok));
}

#[test]
fn self_test_passes_on_a_healthy_board_and_the_largest_result_fits_its_buffer() {
    use protocol::message::CommandStatus;
    let mut n = boot(RamStorage::default(), Model::Purifier, T0);
    assert!(n.handle_command(&command(30, CommandKind::SelfTest), T0));
    assert_eq!(result(&mut n).status, CommandStatus::Ok);
    // Every field at its widest: all eight faults active, a full log, the largest numbers.
    let mut d = n.diagnostics();
    d.active.clear();
    for c in super::FAULT_CODES {
        d.active.push(c).unwrap();
    }
    d.log.clear();
    while d
        .log
        .push(protocol::message::LoggedFault {
            code: FaultCode::LowInletPressure,
            state: FaultState::Cleared,
            ts: -9_999_999_999_999,
        })
        .is_ok()
    {}
    d.boot_id = u32::MAX;
    d.sessions = u32::MAX;
    d.water_ml = 99_999_999_999;
    d.storage_failures = u32::MAX;
    d.flow_permille = Some(10_000);
    d.pressure_kpa = Some(-1.2345678e-30);
    d.inlet_valve_open = Some(false);
    let widest = protocol::message::CommandResult {
        v: 1,
        device_id: "a-device-id-of-32-characters-xyz".try_into().unwrap(),
        cmd_id: u32::MAX,
        ts: -9_999_999_999_999,
        status: CommandStatus::Unsupported,
        diagnostics: Some(d),
    };
    let mut buf = [0u8; super::MAX_RESULT];
    let len = encode(&widest, &mut buf).expect("the widest result fits a result buffer");
    assert!(len > 600, "{len} bytes: every field was written");
}

#[test]
fn v1_1_fields_are_sent_rating_reboot_and_the_invalid_marker() {
    let mut n = boot(RamStorage::default(), Model::Shower, T0);
    while n.outbox_mut().pop().is_some() {}
    assert!(n.set_cartridge_rating(0, Some(5_000)));
    assert!(
        !n.set_cartridge_rating(1, Some(5_000)),
        "a shower has one slot"
    );
    n.set_reboot(Reboot {
        reason: protocol::message::RebootReason::BrownOut,
        counters_lost: true,
    });
    // The temperature sensor does not answer; the pressure sensor does.
    let sample = Sample {
        pressure_pa: Some(300_000),
        ..Sample::default()
    };
    n.tick(T0 + 1_000, &sample);
    n.queue_telemetry(T0 + 2_000);
    let mut seen = false;
    while let Some(m) = n.outbox_mut().pop() {
        if m.channel != Channel::Telemetry {
            continue;
        }
        let text = core::str::from_utf8(&m.payload).unwrap();
        assert!(text.contains("\"temp_c\":null"), "{text}");
        assert!(text.contains("\"rated_l\":5000"), "{text}");
        let t: Telemetry = serde_json::from_slice(&m.payload).unwrap();
        let topic = Topic::parse(&Topic::format(n.device_id(), Channel::Telemetry)).unwrap();
        check_telemetry(&t, &topic, T0 + 2_000, &Limits::default()).unwrap();
        let protocol::message::Reading::Shower(r) = &t.reading else {
            panic!("shower expected");
        };
        assert!(r.temp_c.is_nan());
        assert_eq!(r.pressure_kpa, 300.0);
        assert_eq!(r.cartridges[0].rated_l, Some(5_000));
        seen = true;
    }
    assert!(seen);
    let mut buf = [0u8; 256];
    let len = n.status(T0, Presence::Online, &mut buf).unwrap();
    let st: Status = serde_json::from_slice(&buf[..len]).unwrap();
    assert_eq!(st.boot_id, Some(n.boot_id()));
    assert_eq!(st.reboot.map(|r| r.counters_lost), Some(true));
}

#[test]
fn a_valve_closed_by_a_command_stays_closed_across_a_reboot_until_opened() {
    let mut toilet = boot(RamStorage::default(), Model::Toilet, T0);
    assert!(toilet.handle_command(&command(30, CommandKind::CloseInletValve), T0));
    assert!(!toilet.inlet_valve_open());
    // Power cut right after the command: the valve is still closed after the reboot.
    let mut toilet = boot(toilet.shutdown(), Model::Toilet, T0 + 1_000);
    assert!(
        !toilet.inlet_valve_open(),
        "a reboot must not reopen a valve closed on a leak"
    );
    assert!(toilet.handle_command(&command(31, CommandKind::OpenInletValve), T0 + 2_000));
    let toilet = boot(toilet.shutdown(), Model::Toilet, T0 + 3_000);
    assert!(toilet.inlet_valve_open());
}
