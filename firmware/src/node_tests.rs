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
