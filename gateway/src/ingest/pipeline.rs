//! The ingest driver: collect → build → make durable → commit → acknowledge.
//!
//! A thin async loop over the plain data transformations of [`super::batch`] and
//! [`super::inflight`] and the three ports of [`super::ports`] (acknowledging,
//! durable writing, committing state):
//!
//! 1. Messages are collected into a batch, which closes when it holds `max_messages`
//!    or its first message has waited `max_wait`.
//! 2. [`BatchBuilder::build`] decodes it, checks sequence numbers and runs the
//!    analytics stage, in arrival order.
//! 3. Its points go to the [`DurableWriter`] in a write of their own, so up to
//!    `max_in_flight` batches are being written while the next one fills.
//! 4. [`InFlight::pop_written`] hands over the oldest batch once its write ended
//!    (the only way out), and [`Pipeline::release`] then applies its maintenance
//!    actions (retried with backoff while the engine's database fails), commits its
//!    dead letters and sequence state (retried likewise), and acknowledges its
//!    messages in arrival order. Until then nothing of it, nor of any later batch,
//!    is acknowledged.
//!
//! On shutdown the batch in hand is built, every batch in flight is released, and the
//! analytics state is saved before [`Pipeline::run`] returns: nothing is left to a
//! task that could be cancelled.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;

use super::batch::{refused_to_dead_letters, Batch, BatchBuilder, Tally};
use super::inflight::{BatchId, InFlight};
use super::ports::{Acknowledger, DurableWriter, StateCommitter};
use super::Inbound;
use crate::backoff::Backoff;
use crate::config::BatchConfig;
use crate::events::{AcksSkippedStale, InternalEvent, PointsRefused};
use crate::metrics::Metrics;
use crate::store::{Point, RejectedPoint};

/// How often held late messages are checked for a replay when no message comes.
const LATE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// What a batch's write ended with.
#[derive(Debug)]
enum Written {
    /// Durable; the store refused `refused` for good.
    Durable {
        points: Vec<Point>,
        refused: Vec<RejectedPoint>,
    },
    /// The write task died: nothing of the batch is acknowledged (the broker redelivers).
    Failed,
}

/// The I/O the driver does.
pub struct Ports<A, W, C> {
    /// Sends PUBACKs.
    pub acker: A,
    /// Makes points durable.
    pub writer: Arc<W>,
    /// Commits state (state database, maintenance engine).
    pub committer: Arc<C>,
}

type WriteResult = (BatchId, Vec<Point>, Vec<RejectedPoint>);

/// The driver; see the module docs.
pub struct Pipeline<A, W, C> {
    limits: BatchConfig,
    builder: BatchBuilder,
    ports: Ports<A, W, C>,
    metrics: Arc<Metrics>,
    snapshot_every: Duration,
    in_flight: InFlight<Batch, Written>,
    writes: JoinSet<WriteResult>,
    write_ids: HashMap<tokio::task::Id, BatchId>,
    saving: Option<JoinHandle<()>>,
}

impl<A: Acknowledger, W: DurableWriter, C: StateCommitter> Pipeline<A, W, C> {
    /// A driver over `ports`; the analytics state is saved every `snapshot_every`.
    pub fn new(
        limits: BatchConfig,
        builder: BatchBuilder,
        ports: Ports<A, W, C>,
        metrics: Arc<Metrics>,
        snapshot_every: Duration,
    ) -> Self {
        Pipeline {
            limits,
            builder,
            ports,
            metrics,
            snapshot_every,
            in_flight: InFlight::default(),
            writes: JoinSet::new(),
            write_ids: HashMap::new(),
            saving: None,
        }
    }

    /// Runs until the channel closes or `shutdown` flips; then finishes every batch in
    /// hand and saves the analytics state before returning.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Inbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let max = self.limits.max_messages.max(1);
        let max_in_flight = self.limits.max_in_flight.max(1);
        let mut filling: Vec<Inbound> = Vec::with_capacity(max);
        let mut deadline: Option<Instant> = None;
        let mut closing = false;
        let mut next_snapshot = Instant::now() + self.snapshot_every;
        let mut next_late_check = Instant::now() + LATE_CHECK_EVERY;
        loop {
            while let Some((batch, written)) = self.in_flight.pop_written() {
                self.release(batch, written).await;
            }
            let room = self.in_flight.len() < max_in_flight;
            let due =
                filling.len() >= max || closing || deadline.is_some_and(|d| Instant::now() >= d);
            if !filling.is_empty() && room && due {
                let messages = std::mem::replace(&mut filling, Vec::with_capacity(max));
                deadline = None;
                self.start(messages);
                continue;
            }
            if closing && filling.is_empty() && self.in_flight.is_empty() {
                break;
            }
            let accepting = !closing && filling.len() < max;
            let wait_until = deadline.unwrap_or(next_snapshot);
            let writing = !self.writes.is_empty();
            let analyses = self.builder.analyses();
            let late_pending = !closing && self.builder.late_pending();
            tokio::select! {
                done = self.writes.join_next_with_id(), if writing => {
                    if let Some(done) = done {
                        self.record(done);
                    }
                }
                m = rx.recv(), if accepting => match m {
                    Some(m) => {
                        filling.push(m);
                        // What is queued already joins the batch without another turn of
                        // the loop (each turn arms and disarms its timers).
                        while filling.len() < max {
                            match rx.try_recv() {
                                Ok(m) => filling.push(m),
                                Err(_) => break, // empty, or closed: the next recv says which
                            }
                        }
                        deadline.get_or_insert_with(|| Instant::now() + self.limits.max_wait);
                    }
                    None => closing = true,
                },
                _ = tokio::time::sleep_until(wait_until), if deadline.is_some() && room => {}
                _ = shutdown.changed(), if !closing => closing = true,
                // Late messages held for a device-time-order replay are analysed when
                // their backlog goes quiet, even if no other message comes.
                _ = tokio::time::sleep_until(next_late_check), if late_pending && room => {
                    next_late_check = Instant::now() + LATE_CHECK_EVERY;
                    if filling.is_empty() {
                        self.start(Vec::new());
                    }
                }
                _ = tokio::time::sleep_until(next_snapshot), if analyses => {
                    next_snapshot = Instant::now() + self.snapshot_every;
                    self.save_in_background();
                }
            }
        }
        self.save_before_exit().await;
    }

    /// Builds a batch and starts its write (a batch of no message only if the
    /// analytics stage had something to say).
    fn start(&mut self, messages: Vec<Inbound>) {
        let mut batch = self.builder.build(messages, now_ms());
        self.count(&batch.tally);
        if batch.messages.is_empty() && batch.points.is_empty() && batch.actions.is_empty() {
            return;
        }
        let points = std::mem::take(&mut batch.points);
        let id = self.in_flight.push(batch);
        let writer = Arc::clone(&self.ports.writer);
        let handle = self.writes.spawn(async move {
            let refused = writer.make_durable(&points).await;
            (id, points, refused)
        });
        self.write_ids.insert(handle.id(), id);
    }

    /// Records the end of a write.
    fn record(&mut self, done: Result<(tokio::task::Id, WriteResult), JoinError>) {
        match done {
            Ok((task, (id, points, refused))) => {
                self.write_ids.remove(&task);
                self.in_flight
                    .record(id, Written::Durable { points, refused });
            }
            Err(e) => {
                tracing::error!(error = %e, "A batch write task failed; its messages stay unacknowledged.");
                if let Some(id) = self.write_ids.remove(&e.id()) {
                    self.in_flight.record(id, Written::Failed);
                }
            }
        }
    }

    /// The oldest batch, written: applies its maintenance actions, commits its dead
    /// letters and sequence state, then acknowledges its messages in arrival order.
    async fn release(&mut self, batch: Batch, written: Written) {
        let Batch {
            messages,
            mut dead,
            devices,
            actions,
            received_ms,
            ..
        } = batch;
        let (points, refused) = match written {
            Written::Durable { points, refused } => (points, refused),
            Written::Failed => return,
        };
        if !refused.is_empty() {
            PointsRefused {
                count: refused.len(),
                replay: false,
            }
            .emit(&self.metrics);
            dead.extend(refused_to_dead_letters(refused, &points, received_ms));
        }
        // The engine hears of the batch before its sequence state says "seen", so a crash
        // in between redelivers it to the engine rather than losing it.
        let mut pending = actions;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        while !pending.is_empty() {
            pending = self.ports.committer.apply_maintenance(pending).await;
            if !pending.is_empty() {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        if !dead.is_empty() || !devices.is_empty() {
            while let Err(e) = self
                .ports
                .committer
                .commit(&dead, &devices, received_ms)
                .await
            {
                tracing::error!(error = %e, "Cannot commit dead letters and sequence state; holding acknowledgements.");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        self.metrics.batches.fetch_add(1, Relaxed);
        let current = self.ports.acker.generation();
        let stale = messages.iter().filter(|m| m.generation != current).count();
        if stale > 0 {
            AcksSkippedStale { count: stale }.emit(&self.metrics);
        }
        for m in &messages {
            if m.generation != current {
                continue;
            }
            match self.ports.acker.ack(&m.publish).await {
                Ok(()) => {
                    self.metrics.acked.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "The broker will redeliver.")
                }
            }
        }
        tracing::debug!(
            messages = messages.len(),
            points = points.len(),
            "Batch acknowledged."
        );
    }

    /// Adds a batch's tally to the counters.
    fn count(&self, t: &Tally) {
        let m = &self.metrics;
        m.accepted.fetch_add(t.accepted, Relaxed);
        m.add_rejections(t.rejected.iter().copied());
        if t.gap_delta >= 0 {
            m.sequence_gaps.fetch_add(t.gap_delta as u64, Relaxed);
        } else {
            m.sequence_gaps
                .fetch_sub(t.gap_delta.unsigned_abs(), Relaxed);
        }
        m.duplicates.fetch_add(t.duplicates, Relaxed);
        m.invalid_fields.fetch_add(t.invalid_fields, Relaxed);
        m.findings.fetch_add(t.findings, Relaxed);
        m.analysed.fetch_add(t.analysed, Relaxed);
        m.late_replayed.fetch_add(t.late_replayed, Relaxed);
        m.late_unordered.fetch_add(t.late_unordered, Relaxed);
        m.devices.store(self.builder.devices() as u64, Relaxed);
        if let Some(n) = self.builder.analytics_devices() {
            m.analytics_devices.store(n as u64, Relaxed);
        }
    }

    /// Saves the analytics state of the devices touched since the last save, beside
    /// ingest (one save at a time; its task is awaited before exit).
    fn save_in_background(&mut self) {
        if self.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let snapshot = self.builder.take_snapshot();
        if snapshot.is_empty() {
            return;
        }
        let n = snapshot.len();
        let committer = Arc::clone(&self.ports.committer);
        self.saving = Some(tokio::spawn(async move {
            if let Err(e) = committer.save_analytics(snapshot).await {
                tracing::warn!(error = %e, "Cannot save the analytics state; a restart would relearn some baselines.");
            }
        }));
        tracing::debug!(devices = n, "Analytics state snapshot started.");
    }

    /// Waits for a save under way, then saves what is left.
    async fn save_before_exit(&mut self) {
        if let Some(saving) = self.saving.take() {
            if let Err(e) = saving.await {
                tracing::warn!(error = %e, "An analytics state save failed.");
            }
        }
        let snapshot = self.builder.take_snapshot();
        if snapshot.is_empty() {
            return;
        }
        let n = snapshot.len();
        match self.ports.committer.save_analytics(snapshot).await {
            Ok(()) => tracing::info!(devices = n, "Analytics state saved."),
            Err(e) => {
                tracing::error!(error = %e, devices = n, "Cannot save the analytics state; a restart will relearn these devices' baselines.")
            }
        }
    }
}
