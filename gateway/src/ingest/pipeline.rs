//! The batching pipeline: collect → decode → persist → commit state → acknowledge.
//!
//! A batch closes when it holds `max_messages` or its first message has waited
//! `max_wait`. It is decoded at once (sequence state is updated in arrival order),
//! then its points go to the [`DurableWriter`] (store or spool) in a task of its
//! own, so up to `max_in_flight` batches are being written while the next one
//! fills. Batches complete strictly in order: for the oldest, once its write is
//! durable, its dead letters (invalid messages and points the store refused) and
//! sequence state are committed to the state database, the analytics stage's
//! findings (see [`crate::analysis`]; device faults go through it) and cartridge
//! replacements are handed to the maintenance engine (if configured),
//! and then every message of the batch is acknowledged in the order it arrived,
//! as MQTT requires.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::AsyncClient;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::decode::{decode, Rejection};
use super::sequence::{DeviceSeq, SeqVerdict};
use super::Inbound;
use crate::analysis::{Analyzer, DeviceFinding};
use crate::config::BatchConfig;
use crate::metrics::Metrics;
use crate::state::{DeadLetter, StateDb};
use crate::store::durable::DurableWriter;
use crate::store::{Point, RejectedPoint};

/// Wall-clock time, UTC ms.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Everything the pipeline needs, built once by [`crate::run`].
pub struct Pipeline {
    /// Batching limits.
    pub batch: BatchConfig,
    /// Validation limits.
    pub limits: protocol::validate::Limits,
    /// The durable writer.
    pub writer: Arc<DurableWriter>,
    /// The state database.
    pub state: StateDb,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The MQTT client, to acknowledge.
    pub client: AsyncClient,
    /// The current connection generation (see [`super::mqtt`]).
    pub generation: Arc<AtomicU64>,
    /// Sequence state per device, loaded from the state database.
    pub devices: HashMap<String, DeviceSeq>,
    /// The maintenance engine, if configured.
    pub maintenance: Option<Arc<maintenance::Engine>>,
    /// Last `replacements` counter seen per (device, slot), so the engine hears only of changes.
    pub cartridges_seen: HashMap<(String, u8), u32>,
    /// The analytics stage, if enabled.
    pub analyzer: Option<Analyzer>,
    /// Wall-clock interval between snapshots of the analytics state.
    pub snapshot_every: Duration,
}

/// What the maintenance engine must hear about, from one batch.
#[derive(Debug)]
enum MaintenanceAction {
    Fault {
        device_id: String,
        fault: protocol::message::FaultEvent,
        ts_ms: i64,
    },
    Finding(maintenance::Finding),
    CartridgeReplaced {
        device_id: String,
        slot: u8,
        replacements: u32,
    },
}

/// Applies a batch's maintenance actions (blocking SQLite work). A finding of an
/// unregistered device goes to the engine's unclaimed-devices queue (counted here); an
/// action the engine refuses for good is counted and logged. Returns the actions that
/// failed on the engine's database (busy, I/O): they are worth another try, and the
/// batch is not acknowledged until they succeed.
fn apply_maintenance(
    engine: &maintenance::Engine,
    actions: Vec<MaintenanceAction>,
    now: i64,
    metrics: &Metrics,
) -> Vec<MaintenanceAction> {
    let mut retry = Vec::new();
    for a in actions {
        let result = match &a {
            MaintenanceAction::Fault {
                device_id,
                fault,
                ts_ms,
            } => engine
                .ingest(
                    &maintenance::Finding::from_fault(device_id, fault, *ts_ms),
                    now,
                )
                .map(|o| count_unclaimed(&o, metrics)),
            MaintenanceAction::Finding(finding) => engine
                .ingest(finding, now)
                .map(|o| count_unclaimed(&o, metrics)),
            MaintenanceAction::CartridgeReplaced {
                device_id,
                slot,
                replacements,
            } => engine
                .cartridge_replaced(device_id, *slot, *replacements, now)
                .map(|_| ()),
        };
        match result {
            Ok(()) => {
                metrics.maintenance_applied.fetch_add(1, Relaxed);
            }
            Err(maintenance::Error::NotFound { .. }) => {
                tracing::debug!(
                    ?a,
                    "Device not registered with the maintenance engine; skipped."
                );
            }
            Err(e @ maintenance::Error::Store(_)) => {
                metrics.maintenance_errors.fetch_add(1, Relaxed);
                tracing::error!(error = %e, ?a, "The maintenance database failed; will retry before acknowledging.");
                retry.push(a);
            }
            Err(e) => {
                metrics.maintenance_errors.fetch_add(1, Relaxed);
                tracing::error!(error = %e, ?a, "The maintenance engine refused a device report.");
            }
        }
    }
    retry
}

/// Counts a finding that went to the engine's unclaimed-devices queue (device not registered).
fn count_unclaimed(o: &maintenance::Outcome, metrics: &Metrics) {
    if o.unclaimed {
        metrics.findings_unclaimed.fetch_add(1, Relaxed);
    }
    if o.new_unclaimed_device {
        metrics.devices_unclaimed.fetch_add(1, Relaxed);
    }
}

/// Turns refused points into dead letters.
pub fn refused_to_dead_letters(
    refused: Vec<RejectedPoint>,
    points: &[Point],
    now: i64,
) -> Vec<DeadLetter> {
    refused
        .into_iter()
        .map(|r| {
            let topic = points.get(r.index).map_or("", |p| p.measurement.as_str());
            DeadLetter::new(now, topic, "store_refused", &r.reason, r.line.as_bytes())
        })
        .collect()
}

/// A decoded batch whose points are being made durable.
struct InFlight {
    messages: Vec<Inbound>,
    dead: Vec<DeadLetter>,
    devices: Vec<(String, DeviceSeq)>,
    received_ms: i64,
    started: std::time::Instant,
    maintenance: Vec<MaintenanceAction>,
    write: JoinHandle<(Vec<Point>, Vec<RejectedPoint>)>,
}

impl Pipeline {
    /// Runs until the channel closes or `shutdown` flips; batches in hand are finished first.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Inbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut batch: Vec<Inbound> = Vec::with_capacity(self.batch.max_messages);
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut closing = false;
        let mut last_snapshot = Instant::now();
        while !closing {
            if last_snapshot.elapsed() >= self.snapshot_every {
                last_snapshot = Instant::now();
                self.save_analytics();
            }
            // Collect a batch, finishing written batches as they complete.
            let mut deadline: Option<Instant> = None;
            while batch.len() < self.batch.max_messages {
                if let Ok(m) = rx.try_recv() {
                    batch.push(m);
                    deadline.get_or_insert_with(|| Instant::now() + self.batch.max_wait);
                    continue;
                }
                let front_done = in_flight.front().is_some_and(|f| f.write.is_finished());
                if front_done {
                    if let Some(f) = in_flight.pop_front() {
                        self.complete(f).await;
                    }
                    continue;
                }
                let sleep_until =
                    deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                let has_front = !in_flight.is_empty();
                let front = in_flight.front_mut().map(|f| &mut f.write);
                let finished = tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => {
                            batch.push(m);
                            deadline.get_or_insert_with(|| Instant::now() + self.batch.max_wait);
                            None
                        }
                        None => { closing = true; break; }
                    },
                    _ = tokio::time::sleep_until(sleep_until), if deadline.is_some() => break,
                    // The oldest write finished: its result is taken here, so the handle is not polled again.
                    r = async { match front { Some(h) => Some(h.await), None => None } }, if has_front => r,
                    _ = shutdown.changed() => { closing = true; break; }
                };
                if let Some(result) = finished {
                    if let Some(f) = in_flight.pop_front() {
                        self.finish(f, result).await;
                    }
                }
            }
            if !batch.is_empty() {
                let full =
                    std::mem::replace(&mut batch, Vec::with_capacity(self.batch.max_messages));
                in_flight.push_back(self.start(full));
            }
            while in_flight.len() >= self.batch.max_in_flight.max(1)
                || (closing && !in_flight.is_empty())
            {
                if let Some(f) = in_flight.pop_front() {
                    self.complete(f).await;
                }
            }
        }
        self.save_analytics();
    }

    /// Saves the analytics state of the devices touched since the last save (in the background).
    fn save_analytics(&mut self) {
        let Some(analyzer) = &mut self.analyzer else {
            return;
        };
        let snapshot = analyzer.take_snapshot();
        if snapshot.is_empty() {
            return;
        }
        let state = self.state.clone();
        let n = snapshot.len();
        let task = tokio::spawn(async move {
            if let Err(e) = state.save_analytics(snapshot).await {
                tracing::warn!(error = %e, "Cannot save the analytics state; a restart would relearn some baselines.");
            }
        });
        tracing::debug!(devices = n, "Analytics state snapshot queued.");
        drop(task);
    }

    /// Decodes a batch, updates sequence state, and starts writing its points.
    fn start(&mut self, messages: Vec<Inbound>) -> InFlight {
        let started = std::time::Instant::now();
        let now = now_ms();
        let mut points = Vec::with_capacity(messages.len() * 2);
        let mut dead = Vec::new();
        let mut touched: HashMap<String, DeviceSeq> = HashMap::new();
        let mut reasons: Vec<&'static str> = Vec::new();
        let mut gap_delta: i64 = 0;
        let mut actions = Vec::new();
        let mut findings: Vec<DeviceFinding> = Vec::new();
        for m in &messages {
            match decode(&m.publish.topic, &m.publish.payload, now, &self.limits) {
                Ok(accepted) => {
                    if self.maintenance.is_some() {
                        self.maintenance_actions(&accepted, &mut actions);
                    }
                    let mut verdict = None;
                    if let Some((boot, seq)) = accepted.sequence {
                        let state = self
                            .devices
                            .entry(accepted.device_id.as_str().to_owned())
                            .or_default();
                        let (gaps_before, dups_before) = (state.gaps, state.duplicates);
                        verdict = Some(state.observe(boot, seq));
                        gap_delta += state.gaps as i64 - gaps_before as i64;
                        self.metrics
                            .duplicates
                            .fetch_add(state.duplicates - dups_before, Relaxed);
                        touched.insert(accepted.device_id.as_str().to_owned(), *state);
                    }
                    points.extend(accepted.points);
                    // A redelivery was analysed the first time round.
                    if let (Some(analyzer), false) =
                        (&mut self.analyzer, verdict == Some(SeqVerdict::Duplicate))
                    {
                        analyzer.observe(
                            accepted.device_id.as_str(),
                            &accepted.message,
                            &mut findings,
                            &mut points,
                        );
                        // The clock-driven rules run as device time passes, message by message: a
                        // replayed day can fit in one batch, and a silence inside it must still show.
                        analyzer.sweep(now, &mut findings);
                    }
                }
                Err(Rejection { reason, detail }) => {
                    reasons.push(reason);
                    tracing::debug!(topic = %m.publish.topic, reason, %detail, "Message rejected.");
                    dead.push(DeadLetter::new(
                        now,
                        &m.publish.topic,
                        reason,
                        &detail,
                        &m.publish.payload,
                    ));
                }
            }
        }
        if let Some(analyzer) = &mut self.analyzer {
            self.metrics
                .analytics_devices
                .store(analyzer.devices() as u64, Relaxed);
        }
        if !findings.is_empty() {
            self.metrics
                .findings
                .fetch_add(findings.len() as u64, Relaxed);
            for f in &findings {
                tracing::info!(device_id = %f.device_id, kind = f.finding.kind.as_str(), state = ?f.finding.state, severity = f.finding.severity.as_str(), "Finding.");
                points.push(f.point());
                if self.maintenance.is_some() {
                    actions.push(MaintenanceAction::Finding(f.to_maintenance()));
                }
            }
        }
        self.metrics
            .accepted
            .fetch_add((messages.len() - reasons.len()) as u64, Relaxed);
        self.metrics.add_rejections(reasons.iter().copied());
        if gap_delta >= 0 {
            self.metrics
                .sequence_gaps
                .fetch_add(gap_delta as u64, Relaxed);
        } else {
            self.metrics
                .sequence_gaps
                .fetch_sub(gap_delta.unsigned_abs(), Relaxed);
        }
        self.metrics
            .devices
            .store(self.devices.len() as u64, Relaxed);
        let writer = Arc::clone(&self.writer);
        let write = tokio::spawn(async move {
            let refused = writer.persist(&points).await;
            (points, refused)
        });
        InFlight {
            messages,
            dead,
            devices: touched.into_iter().collect(),
            received_ms: now,
            started,
            maintenance: actions,
            write,
        }
    }

    /// Notes what the maintenance engine must hear of one accepted message.
    fn maintenance_actions(
        &mut self,
        accepted: &super::decode::Accepted,
        actions: &mut Vec<MaintenanceAction>,
    ) {
        let device_id = accepted.device_id.as_str();
        // With analytics on, device faults reach the engine as the rules' findings.
        if let (Some(fault), None) = (&accepted.fault, &self.analyzer) {
            let ts_ms = accepted.points.first().map_or(0, |p| p.ts_ms);
            actions.push(MaintenanceAction::Fault {
                device_id: device_id.to_owned(),
                fault: fault.clone(),
                ts_ms,
            });
        }
        for &(slot, replacements) in &accepted.cartridges {
            let key = (device_id.to_owned(), slot);
            if self.cartridges_seen.get(&key) != Some(&replacements) {
                self.cartridges_seen.insert(key, replacements);
                actions.push(MaintenanceAction::CartridgeReplaced {
                    device_id: device_id.to_owned(),
                    slot,
                    replacements,
                });
            }
        }
    }

    /// Waits for the oldest batch's write, then finishes it.
    async fn complete(&mut self, mut f: InFlight) {
        let result = (&mut f.write).await;
        self.finish(f, result).await;
    }

    /// Finishes the oldest batch: commits its dead letters and sequence state, then acknowledges it.
    async fn finish(
        &mut self,
        f: InFlight,
        result: Result<(Vec<Point>, Vec<RejectedPoint>), tokio::task::JoinError>,
    ) {
        let InFlight {
            messages,
            mut dead,
            devices,
            received_ms,
            started,
            maintenance: actions,
            write: _,
        } = f;
        let (points, refused) = match result {
            Ok(done) => done,
            Err(e) => {
                // The write task panicked: acknowledge nothing, the broker will redeliver.
                tracing::error!(error = %e, "A batch write task failed; its messages stay unacknowledged.");
                return;
            }
        };
        let persisted = started.elapsed();
        if !refused.is_empty() {
            self.metrics
                .points_refused
                .fetch_add(refused.len() as u64, Relaxed);
            tracing::warn!(
                count = refused.len(),
                "The telemetry store refused points; they are in the dead-letter store."
            );
            dead.extend(refused_to_dead_letters(refused, &points, received_ms));
        }
        let mut backoff =
            crate::store::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        while let Err(e) = self
            .state
            .commit_batch(dead.clone(), devices.clone(), received_ms)
            .await
        {
            tracing::error!(error = %e, "Cannot commit dead letters and sequence state; holding acknowledgements.");
            tokio::time::sleep(backoff.next_delay()).await;
        }
        if let Some(engine) = &self.maintenance {
            let mut pending = actions;
            let mut backoff = crate::store::retry::Backoff::new(
                Duration::from_millis(100),
                Duration::from_secs(10),
            );
            while !pending.is_empty() {
                let (engine, metrics) = (Arc::clone(engine), Arc::clone(&self.metrics));
                match tokio::task::spawn_blocking(move || {
                    apply_maintenance(&engine, pending, now_ms(), &metrics)
                })
                .await
                {
                    Ok(failed) => pending = failed,
                    Err(e) => {
                        tracing::error!(error = %e, "The maintenance task failed.");
                        break;
                    }
                }
                if !pending.is_empty() {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        let committed = started.elapsed();
        self.metrics.batches.fetch_add(1, Relaxed);
        let current = self.generation.load(SeqCst);
        for m in &messages {
            if m.generation != current {
                self.metrics.acks_skipped_stale.fetch_add(1, Relaxed);
                continue;
            }
            match self.client.ack(&m.publish).await {
                Ok(()) => {
                    self.metrics.acked.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot queue an acknowledgement; the broker will redeliver.")
                }
            }
        }
        tracing::debug!(
            messages = messages.len(),
            points = points.len(),
            written_after_us = persisted.as_micros() as u64,
            committed_after_us = committed.as_micros() as u64,
            acked_after_us = started.elapsed().as_micros() as u64,
            "Batch done."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::engine_with_a_toilet;
    use maintenance::{FindingKind, FindingState};
    use protocol::message::Severity;

    fn finding(device: &str, kind: FindingKind) -> MaintenanceAction {
        MaintenanceAction::Finding(maintenance::Finding {
            device_id: device.into(),
            kind,
            severity: Severity::Critical,
            evidence: serde_json::Value::Null,
            began_ts_ms: 1,
            state: FindingState::Active,
        })
    }

    #[test]
    fn database_failures_come_back_for_a_retry_and_unregistered_devices_are_queued_not_dropped() {
        let engine = engine_with_a_toilet();
        let metrics = Metrics::default();
        // Applied, and an unregistered device's leak queued as unclaimed (with a ticket): nothing to retry.
        assert!(apply_maintenance(
            &engine,
            vec![
                finding("toilet-1", FindingKind::Leak),
                finding("toilet-404", FindingKind::Leak)
            ],
            10,
            &metrics
        )
        .is_empty());
        assert_eq!(metrics.maintenance_applied.load(Relaxed), 2);
        assert_eq!(metrics.findings_unclaimed.load(Relaxed), 1);
        assert_eq!(metrics.devices_unclaimed.load(Relaxed), 1);
        let queue = engine
            .read(|c| maintenance::unclaimed::queue(c, 10))
            .unwrap();
        assert_eq!(queue.devices[0].device_id, "toilet-404");
        assert!(queue.devices[0].ticket_id.is_some(), "{queue:?}");
        // The engine's database breaks: the action comes back, so the batch is not acknowledged yet.
        engine
            .write(|tx| Ok(tx.execute_batch("CREATE TRIGGER broken BEFORE INSERT ON tickets BEGIN SELECT RAISE(ABORT, 'disk failure'); END;")?))
            .unwrap();
        let retry = apply_maintenance(
            &engine,
            vec![finding("toilet-1", FindingKind::HeaterFault)],
            20,
            &metrics,
        );
        assert!(
            matches!(retry.as_slice(), [MaintenanceAction::Finding(f)] if f.device_id == "toilet-1"),
            "{retry:?}"
        );
        assert_eq!(metrics.maintenance_errors.load(Relaxed), 1);
    }
}
