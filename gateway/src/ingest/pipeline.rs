//! The batching pipeline: collect → decode → persist → commit state → acknowledge.
//!
//! A batch closes when it holds `max_messages` or its first message has waited
//! `max_wait`. Then, in this order: the points go to the [`DurableWriter`]
//! (store or spool); dead letters (invalid messages and points the store refused)
//! and sequence state are committed to the state database; and every message of
//! the batch is acknowledged in the order it arrived. One batch is in flight at a
//! time, so acknowledgements across batches keep arrival order too, as MQTT requires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::{Relaxed, SeqCst}};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::AsyncClient;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::decode::{decode, Rejection};
use super::sequence::DeviceSeq;
use super::Inbound;
use crate::config::BatchConfig;
use crate::metrics::Metrics;
use crate::state::{DeadLetter, StateDb};
use crate::store::durable::DurableWriter;
use crate::store::{Point, RejectedPoint};

/// Wall-clock time, UTC ms.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
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
}

/// Turns refused points into dead letters.
pub fn refused_to_dead_letters(refused: Vec<RejectedPoint>, points: &[Point], now: i64) -> Vec<DeadLetter> {
    refused
        .into_iter()
        .map(|r| {
            let topic = points.get(r.index).map_or("", |p| p.measurement.as_str());
            DeadLetter::new(now, topic, "store_refused", &r.reason, r.line.as_bytes())
        })
        .collect()
}

impl Pipeline {
    /// Runs until the channel closes or `shutdown` flips; the batch in hand is flushed first.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Inbound>, mut shutdown: watch::Receiver<bool>) {
        let mut batch: Vec<Inbound> = Vec::with_capacity(self.batch.max_messages);
        loop {
            // Wait for the first message of a batch.
            let first = tokio::select! {
                m = rx.recv() => m,
                _ = shutdown.changed() => None,
            };
            let Some(first) = first else { break };
            batch.push(first);
            let deadline = Instant::now() + self.batch.max_wait;
            while batch.len() < self.batch.max_messages {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        tokio::select! {
                            m = rx.recv() => match m { Some(m) => batch.push(m), None => break },
                            _ = tokio::time::sleep_until(deadline) => break,
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            }
            self.flush(&mut batch).await;
        }
        if !batch.is_empty() {
            self.flush(&mut batch).await;
        }
    }

    async fn flush(&mut self, batch: &mut Vec<Inbound>) {
        let now = now_ms();
        let mut points = Vec::with_capacity(batch.len() * 2);
        let mut dead = Vec::new();
        let mut touched: HashMap<String, DeviceSeq> = HashMap::new();
        let mut reasons: Vec<&'static str> = Vec::new();
        let mut gap_delta: i64 = 0;
        for m in batch.iter() {
            match decode(&m.publish.topic, &m.publish.payload, now, &self.limits) {
                Ok(accepted) => {
                    if let Some((boot, seq)) = accepted.sequence {
                        let state = self.devices.entry(accepted.device_id.as_str().to_owned()).or_default();
                        let (gaps_before, dups_before) = (state.gaps, state.duplicates);
                        state.observe(boot, seq);
                        gap_delta += state.gaps as i64 - gaps_before as i64;
                        self.metrics.duplicates.fetch_add(state.duplicates - dups_before, Relaxed);
                        touched.insert(accepted.device_id.as_str().to_owned(), *state);
                    }
                    points.extend(accepted.points);
                }
                Err(Rejection { reason, detail }) => {
                    reasons.push(reason);
                    tracing::debug!(topic = %m.publish.topic, reason, %detail, "Message rejected.");
                    dead.push(DeadLetter::new(now, &m.publish.topic, reason, &detail, &m.publish.payload));
                }
            }
        }
        let accepted = (batch.len() - reasons.len()) as u64;
        self.metrics.accepted.fetch_add(accepted, Relaxed);
        self.metrics.add_rejections(reasons.iter().copied());
        if gap_delta >= 0 {
            self.metrics.sequence_gaps.fetch_add(gap_delta as u64, Relaxed);
        } else {
            self.metrics.sequence_gaps.fetch_sub(gap_delta.unsigned_abs(), Relaxed);
        }

        let refused = self.writer.persist(&points).await;
        if !refused.is_empty() {
            self.metrics.points_refused.fetch_add(refused.len() as u64, Relaxed);
            tracing::warn!(count = refused.len(), "The telemetry store refused points; they are in the dead-letter store.");
            dead.extend(refused_to_dead_letters(refused, &points, now));
        }

        let devices: Vec<(String, DeviceSeq)> = touched.into_iter().collect();
        let mut backoff = crate::store::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        while let Err(e) = self.state.commit_batch(dead.clone(), devices.clone(), now).await {
            tracing::error!(error = %e, "Cannot commit dead letters and sequence state; holding acknowledgements.");
            tokio::time::sleep(backoff.next_delay()).await;
        }

        self.metrics.batches.fetch_add(1, Relaxed);
        self.metrics.devices.store(self.devices.len() as u64, Relaxed);
        let current = self.generation.load(SeqCst);
        for m in batch.drain(..) {
            if m.generation != current {
                self.metrics.acks_skipped_stale.fetch_add(1, Relaxed);
                continue;
            }
            match self.client.ack(&m.publish).await {
                Ok(()) => {
                    self.metrics.acked.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot queue an acknowledgement; the broker will redeliver.");
                }
            }
        }
    }
}
