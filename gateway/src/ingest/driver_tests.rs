//! The ingest driver's invariants, tested with fakes of its three ports and paused
//! time: acknowledgements in arrival order and only after durability, held while the
//! store, the state database or the maintenance database fails, redeliveries after a
//! reconnect, and a shutdown that saves everything. Each test takes milliseconds of
//! real time; the seconds they mention are virtual.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::batch::{BatchBuilder, MaintenanceAction};
use super::pipeline::{Pipeline, Ports};
use super::ports::{AckError, Acknowledger, DurableWriter, StateCommitter};
use super::Inbound;
use crate::analysis::{AnalyticsConfig, Analyzer};
use crate::clock::now_ms;
use crate::config::BatchConfig;
use crate::metrics::Metrics;
use crate::sequence::DeviceSeq;
use crate::state::{DeadLetter, StateDb, StateError};
use crate::store::{Point, RejectedPoint};

/// What the fakes saw, shared between them and the test.
#[derive(Default)]
struct World {
    /// `(device, ts)` of every point made durable.
    durable: Mutex<HashSet<(String, i64)>>,
    /// The `(device, ts)` of the message with each packet id.
    expect: Mutex<HashMap<u16, (String, i64)>>,
    /// Packet ids acknowledged, in order.
    acks: Mutex<Vec<u16>>,
    /// Invariant violations seen by the fakes.
    violations: Mutex<Vec<String>>,
    /// Store down: writes wait.
    store_down: AtomicBool,
    /// Writes of batches holding this device take long.
    slow_device: Mutex<Option<String>>,
    /// Next maintenance calls that fail on the database.
    maintenance_failures: AtomicU32,
    /// Maintenance calls made.
    maintenance_calls: AtomicU32,
    /// Maintenance actions applied.
    applied: Mutex<Vec<MaintenanceAction>>,
    /// Next state commits that fail.
    commit_failures: AtomicU32,
    /// Sequence state committed.
    committed: Mutex<HashMap<String, DeviceSeq>>,
    /// Analytics state saved.
    saved: Mutex<HashMap<String, String>>,
    /// Analytics saves started and finished.
    saves_started: AtomicU32,
    saves_finished: AtomicU32,
    /// How long a save takes.
    save_takes: Mutex<Duration>,
}

fn device_of(p: &Point) -> String {
    p.tags
        .iter()
        .find(|(k, _)| k == "device_id")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

struct FakeAcker {
    world: Arc<World>,
    generation: Arc<AtomicU64>,
}

impl Acknowledger for FakeAcker {
    fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    async fn ack(&self, publish: &rumqttc::Publish) -> Result<(), AckError> {
        let expected = self
            .world
            .expect
            .lock()
            .unwrap()
            .get(&publish.pkid)
            .cloned();
        if let Some(key) = expected {
            if !self.world.durable.lock().unwrap().contains(&key) {
                self.world.violations.lock().unwrap().push(format!(
                    "{} acknowledged before it was durable",
                    publish.pkid
                ));
            }
        }
        self.world.acks.lock().unwrap().push(publish.pkid);
        Ok(())
    }
}

struct FakeWriter {
    world: Arc<World>,
}

impl DurableWriter for FakeWriter {
    async fn make_durable(&self, points: &[Point]) -> Vec<RejectedPoint> {
        while self.world.store_down.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let slow = self.world.slow_device.lock().unwrap().clone();
        let takes = if slow.is_some_and(|s| points.iter().any(|p| device_of(p) == s)) {
            500
        } else {
            5
        };
        tokio::time::sleep(Duration::from_millis(takes)).await;
        let mut durable = self.world.durable.lock().unwrap();
        durable.extend(points.iter().map(|p| (device_of(p), p.ts_ms)));
        Vec::new()
    }
}

struct FakeCommitter {
    world: Arc<World>,
}

impl StateCommitter for FakeCommitter {
    async fn commit(
        &self,
        _dead: &[DeadLetter],
        devices: &[(String, DeviceSeq)],
        _now_ms: i64,
    ) -> Result<(), StateError> {
        let w = &self.world;
        if w.commit_failures.load(Relaxed) > 0 {
            w.commit_failures.fetch_sub(1, Relaxed);
            return Err(StateError::Sqlite(rusqlite::Error::InvalidQuery));
        }
        w.committed.lock().unwrap().extend(devices.iter().cloned());
        Ok(())
    }

    async fn apply_maintenance(&self, actions: Vec<MaintenanceAction>) -> Vec<MaintenanceAction> {
        let w = &self.world;
        w.maintenance_calls.fetch_add(1, Relaxed);
        if w.maintenance_failures.load(Relaxed) > 0 {
            w.maintenance_failures.fetch_sub(1, Relaxed);
            return actions;
        }
        w.applied.lock().unwrap().extend(actions);
        Vec::new()
    }

    async fn save_analytics(&self, states: Vec<(String, String)>) -> Result<(), StateError> {
        let w = &self.world;
        w.saves_started.fetch_add(1, Relaxed);
        let takes = *w.save_takes.lock().unwrap();
        tokio::time::sleep(takes).await;
        w.saved.lock().unwrap().extend(states);
        w.saves_finished.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// A toilet's telemetry; its `(device, ts)` is noted under `pkid` (unless 0).
fn telemetry(world: &World, device: &str, seq: u32, pkid: u16, generation: u64) -> Inbound {
    let ts = now_ms() - 3_600_000 + i64::from(seq) * 1000;
    let json = format!(
        r#"{{"v":1,"device_id":"{device}","boot_id":1,"seq":{seq},"ts":{ts},"fw":"1.0.0","reading":{{"toilet":{{"seat_sessions":{seq},"washes":0,"wash_seconds":0,"flushes":{seq},"water_ml":{w},"heater_wh":1,"water_temp_c":36.5,"seat_temp_c":34.0}}}}}}"#,
        w = u64::from(seq) * 4500
    );
    if pkid != 0 {
        world
            .expect
            .lock()
            .unwrap()
            .insert(pkid, (device.to_owned(), ts));
    }
    let mut publish = rumqttc::Publish::new(
        format!("fixtures/{device}/telemetry"),
        rumqttc::QoS::AtLeastOnce,
        json,
    );
    publish.pkid = pkid;
    Inbound {
        publish,
        generation,
    }
}

/// A purifier's telemetry with two cartridges (so the maintenance engine hears of them).
fn purifier(world: &World, device: &str, seq: u32, pkid: u16) -> Inbound {
    let ts = now_ms() - 3_600_000 + i64::from(seq) * 1000;
    let json = format!(
        r#"{{"v":1,"device_id":"{device}","boot_id":1,"seq":{seq},"ts":{ts},"fw":"1.0.0","reading":{{"purifier":{{"dispensed_ml":5000,"tds_in_ppm":300,"tds_out_ppm":9,"inlet_pressure_kpa":250.5,"pump_seconds":60,"cartridges":[{{"slot":0,"kind":"sediment","ml_since_replacement":4000,"replacements":1}},{{"slot":1,"kind":"reverse_osmosis","ml_since_replacement":4000,"replacements":0}}]}}}}}}"#
    );
    world
        .expect
        .lock()
        .unwrap()
        .insert(pkid, (device.to_owned(), ts));
    let mut publish = rumqttc::Publish::new(
        format!("fixtures/{device}/telemetry"),
        rumqttc::QoS::AtLeastOnce,
        json,
    );
    publish.pkid = pkid;
    Inbound {
        publish,
        generation: 0,
    }
}

struct Harness {
    world: Arc<World>,
    generation: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    tx: Option<mpsc::UnboundedSender<Inbound>>,
    stop: watch::Sender<bool>,
    run: JoinHandle<()>,
}

fn start<C: StateCommitter>(
    world: Arc<World>,
    committer: C,
    analytics: bool,
    maintenance: bool,
    max_messages: usize,
) -> Harness {
    let generation = Arc::new(AtomicU64::new(0));
    let metrics = Arc::new(Metrics::default());
    let analyzer = analytics.then(|| Analyzer::new(AnalyticsConfig::default()));
    let builder = BatchBuilder::new(
        protocol::validate::Limits::default(),
        HashMap::new(),
        analyzer,
        maintenance,
    );
    let ports = Ports {
        acker: FakeAcker {
            world: Arc::clone(&world),
            generation: Arc::clone(&generation),
        },
        writer: Arc::new(FakeWriter {
            world: Arc::clone(&world),
        }),
        committer: Arc::new(committer),
    };
    let pipeline = Pipeline::new(
        BatchConfig {
            max_messages,
            max_wait: Duration::from_millis(20),
            max_in_flight: 4,
        },
        builder,
        ports,
        Arc::clone(&metrics),
        Duration::from_secs(1),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let run = tokio::spawn(pipeline.run(rx, stop_rx));
    Harness {
        world,
        generation,
        metrics,
        tx: Some(tx),
        stop,
        run,
    }
}

fn fake(world: &Arc<World>) -> FakeCommitter {
    FakeCommitter {
        world: Arc::clone(world),
    }
}

impl Harness {
    fn send(&self, m: Inbound) {
        self.tx.as_ref().unwrap().send(m).unwrap();
    }

    fn acks(&self) -> Vec<u16> {
        self.world.acks.lock().unwrap().clone()
    }

    /// Lets time pass until `n` acks were made (at most a minute).
    async fn until_acked(&self, n: usize) {
        for _ in 0..60_000 {
            if self.world.acks.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("only {:?} acknowledged", self.acks());
    }

    async fn stop(mut self) -> Arc<World> {
        self.stop.send(true).unwrap();
        self.tx = None;
        self.run.await.unwrap();
        let violations = self.world.violations.lock().unwrap().clone();
        assert!(violations.is_empty(), "{violations:?}");
        self.world
    }
}

#[tokio::test(start_paused = true)]
async fn a_later_batch_written_first_is_not_acknowledged_before_an_earlier_one() {
    let world = Arc::new(World::default());
    *world.slow_device.lock().unwrap() = Some("slow".into());
    let h = start(Arc::clone(&world), fake(&world), true, false, 2);
    // Batch 1 (slow to write), then batches 2 and 3 (fast), all in flight together.
    h.send(telemetry(&world, "slow", 0, 1, 0));
    h.send(telemetry(&world, "slow", 1, 2, 0));
    h.send(telemetry(&world, "fast", 0, 3, 0));
    h.send(telemetry(&world, "fast", 1, 4, 0));
    h.send(telemetry(&world, "other", 0, 5, 0));
    h.send(telemetry(&world, "other", 1, 6, 0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        world
            .durable
            .lock()
            .unwrap()
            .iter()
            .any(|(d, _)| d == "fast"),
        "the later batches are written"
    );
    assert_eq!(h.acks(), Vec::<u16>::new(), "but wait for the first");
    h.until_acked(6).await;
    assert_eq!(h.acks(), vec![1, 2, 3, 4, 5, 6], "arrival order");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn acks_are_held_while_the_store_is_down_then_released_in_order() {
    let world = Arc::new(World::default());
    world.store_down.store(true, Relaxed);
    let h = start(Arc::clone(&world), fake(&world), false, false, 3);
    for (i, pkid) in (10..19u16).enumerate() {
        h.send(telemetry(
            &world,
            &format!("t-{}", i % 2),
            i as u32,
            pkid,
            0,
        ));
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(h.acks().is_empty(), "nothing durable, nothing acknowledged");
    world.store_down.store(false, Relaxed);
    h.until_acked(9).await;
    assert_eq!(h.acks(), (10..19).collect::<Vec<_>>());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn acks_are_held_while_the_maintenance_database_fails_then_released_in_order() {
    let world = Arc::new(World::default());
    world.maintenance_failures.store(6, Relaxed);
    let h = start(Arc::clone(&world), fake(&world), false, true, 2);
    for (i, pkid) in (20..24u16).enumerate() {
        h.send(purifier(&world, &format!("pur-{}", i % 2), i as u32, pkid));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(world.durable.lock().unwrap().len() >= 2, "written");
    assert!(
        h.acks().is_empty(),
        "held while the engine's database fails"
    );
    h.until_acked(4).await;
    assert_eq!(h.acks(), vec![20, 21, 22, 23]);
    assert!(world.maintenance_calls.load(Relaxed) >= 7);
    // Each cartridge's counter once per device, none lost to the failures.
    assert_eq!(world.applied.lock().unwrap().len(), 4);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn acks_are_held_while_the_state_database_fails() {
    let world = Arc::new(World::default());
    world.commit_failures.store(5, Relaxed);
    let h = start(Arc::clone(&world), fake(&world), false, false, 2);
    h.send(telemetry(&world, "t-1", 0, 30, 0));
    h.send(telemetry(&world, "t-1", 1, 31, 0));
    h.send(telemetry(&world, "t-1", 2, 32, 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.acks().is_empty(),
        "held until sequence state is committed"
    );
    h.until_acked(3).await;
    assert_eq!(h.acks(), vec![30, 31, 32]);
    assert_eq!(world.commit_failures.load(Relaxed), 0);
    assert_eq!(world.committed.lock().unwrap()["t-1"].messages, 3);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_redelivery_after_a_reconnect_is_acknowledged_and_not_analysed_twice() {
    let world = Arc::new(World::default());
    *world.slow_device.lock().unwrap() = Some("t-1".into());
    let h = start(Arc::clone(&world), fake(&world), true, false, 4);
    for seq in 0..4u16 {
        h.send(telemetry(&world, "t-1", u32::from(seq), 40 + seq, 0));
    }
    // The connection drops while the batch is being written.
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.generation.store(1, Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        h.acks().is_empty(),
        "acks of the old connection are dropped"
    );
    assert_eq!(h.metrics.acks_skipped_stale.load(Relaxed), 4);
    // The broker redelivers on the new connection.
    for seq in 0..4u16 {
        h.send(telemetry(&world, "t-1", u32::from(seq), 40 + seq, 1));
    }
    h.until_acked(4).await;
    assert_eq!(h.acks(), vec![40, 41, 42, 43]);
    assert_eq!(
        h.metrics.duplicates.load(Relaxed),
        4,
        "recognised as redeliveries"
    );
    assert_eq!(h.metrics.sequence_gaps.load(Relaxed), 0);
    let world = h.stop().await;
    let seq = world.committed.lock().unwrap()["t-1"].clone();
    assert_eq!((seq.messages, seq.duplicates, seq.gaps), (8, 4, 0));
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_every_batch_and_saves_all_analytics_state() {
    let world = Arc::new(World::default());
    *world.save_takes.lock().unwrap() = Duration::from_secs(3);
    let h = start(Arc::clone(&world), fake(&world), true, false, 10);
    let mut pkid = 100u16;
    for d in 0..50 {
        h.send(telemetry(&world, &format!("early-{d}"), 0, pkid, 0));
        pkid += 1;
    }
    // A periodic save starts (and takes three seconds).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(world.saves_started.load(Relaxed), 1);
    for d in 0..50 {
        h.send(telemetry(&world, &format!("late-{d}"), 0, pkid, 0));
        pkid += 1;
    }
    h.until_acked(100).await;
    assert_eq!(
        world.saves_finished.load(Relaxed),
        0,
        "the save is still under way"
    );
    // Stop now: the save under way and a last save of the late devices both finish.
    let world = h.stop().await;
    assert_eq!(world.acks.lock().unwrap().len(), 100);
    assert_eq!(
        world.saves_started.load(Relaxed),
        world.saves_finished.load(Relaxed),
        "no save cancelled"
    );
    let saved = world.saved.lock().unwrap();
    assert_eq!(saved.len(), 100, "every device's state");
}

/// Issue 14's restart case, on a real `state.db`: 100 000 devices' analytics state,
/// a graceful stop, and a new analyzer restores every one. Real time: the state
/// database works in blocking tasks, which paused time would run past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_graceful_stop_restores_every_devices_analytics_state() {
    const DEVICES: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let world = Arc::new(World::default());
    let state = StateDb::open(&path).unwrap();
    let sink = super::sinks::StateSink {
        state,
        maintenance: None,
        metrics: Arc::new(Metrics::default()),
    };
    let h = start(Arc::clone(&world), sink, true, false, 5_000);
    for d in 0..DEVICES {
        h.send(telemetry(&world, &format!("t-{d}"), 0, 0, 0));
    }
    h.until_acked(DEVICES).await;
    let world = h.stop().await;
    assert_eq!(world.acks.lock().unwrap().len(), DEVICES);
    let reopened = StateDb::open(&path).unwrap();
    let mut analyzer = Analyzer::new(AnalyticsConfig::default());
    assert_eq!(
        analyzer.restore(reopened.load_analytics().await.unwrap()),
        DEVICES
    );
    assert_eq!(analyzer.devices(), DEVICES);
    assert_eq!(reopened.load_devices().await.unwrap().len(), DEVICES);
}

#[tokio::test(start_paused = true)]
async fn a_failed_sensor_keeps_the_message_and_is_counted() {
    let world = Arc::new(World::default());
    let h = start(Arc::clone(&world), fake(&world), true, false, 4);
    let mut m = telemetry(&world, "t-1", 1, 50, 0);
    let payload = String::from_utf8_lossy(&m.publish.payload).replace("36.5", "-40.0");
    m.publish.payload = payload.into_bytes().into();
    h.send(m);
    h.until_acked(1).await;
    assert_eq!(h.metrics.accepted.load(Relaxed), 1, "the counters are kept");
    assert_eq!(h.metrics.rejected.load(Relaxed), 0);
    assert_eq!(
        h.metrics.invalid_fields.load(Relaxed),
        1,
        "the dropped sensor value is counted"
    );
    h.stop().await;
}
