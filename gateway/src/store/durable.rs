//! The durable writer: a batch of points is either in the telemetry store or in
//! the fsynced spool when [`DurableWriter::persist`] returns. Nothing else in
//! the gateway decides when data is safe to acknowledge.
//!
//! While the spool holds a backlog, new batches go straight to it (so a dead
//! store costs one fsync per batch, not a time-out), and [`DurableWriter::replay`]
//! drains it oldest-first with backoff until the store answers again.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::retry::Backoff;
use super::spool::Spool;
use super::{Point, RejectedPoint, TelemetryStore};
use crate::metrics::Metrics;

/// Store attempts before a batch is spooled instead.
const DIRECT_ATTEMPTS: usize = 3;

/// Writes batches durably; see the module docs.
pub struct DurableWriter {
    store: TelemetryStore,
    spool: Spool,
    metrics: Arc<Metrics>,
    backlog: std::sync::atomic::AtomicU64,
}

impl DurableWriter {
    /// Wraps a store and a spool.
    pub fn new(store: TelemetryStore, spool: Spool, metrics: Arc<Metrics>) -> DurableWriter {
        let backlog = spool.backlog();
        DurableWriter {
            store,
            spool,
            metrics,
            backlog: backlog.into(),
        }
    }

    /// Batches waiting in the spool.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Relaxed)
    }

    /// The store's description, for logs.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Makes `points` durable and returns those the store refused for good.
    /// Never gives up: if neither the store nor the spool can take the batch it
    /// keeps retrying, which stops acknowledgements and so pushes back on the broker.
    pub async fn persist(&self, points: &[Point]) -> Vec<RejectedPoint> {
        if points.is_empty() {
            return Vec::new();
        }
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            if self.backlog() == 0 {
                for attempt in 1..=DIRECT_ATTEMPTS {
                    match self.store.write(points).await {
                        Ok(outcome) => {
                            let refused = outcome.rejected.len() as u64;
                            self.metrics
                                .points_stored
                                .fetch_add(points.len() as u64 - refused, Relaxed);
                            return outcome.rejected;
                        }
                        Err(e) => {
                            self.metrics.store_errors.fetch_add(1, Relaxed);
                            tracing::warn!(attempt, error = %e, "Telemetry store write failed.");
                            if attempt < DIRECT_ATTEMPTS {
                                tokio::time::sleep(Duration::from_millis(100 * attempt as u64))
                                    .await;
                            }
                        }
                    }
                }
            }
            match self.spool.append(points) {
                Ok(path) => {
                    self.backlog.fetch_add(1, Relaxed);
                    self.metrics.spooled_batches.fetch_add(1, Relaxed);
                    tracing::debug!(path = %path.display(), points = points.len(), "Batch spooled.");
                    return Vec::new();
                }
                Err(e) => {
                    tracing::error!(error = %e, "Neither the telemetry store nor the spool can take a batch; holding acknowledgements.");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Replays the spool into the store until `shutdown` flips, handing each
    /// replayed batch's refused points to `on_refused`.
    pub async fn replay(
        &self,
        mut shutdown: watch::Receiver<bool>,
        on_refused: impl Fn(Vec<RejectedPoint>, &[Point]),
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        while !*shutdown.borrow() {
            let wait = if self.backlog() == 0 {
                Duration::from_millis(200)
            } else {
                match self.replay_one(&on_refused).await {
                    Ok(true) => {
                        backoff.reset();
                        Duration::ZERO
                    }
                    Ok(false) => Duration::from_millis(200),
                    Err(()) => backoff.next_delay(),
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    async fn replay_one(
        &self,
        on_refused: &impl Fn(Vec<RejectedPoint>, &[Point]),
    ) -> Result<bool, ()> {
        let batch = match self.spool.oldest() {
            Ok(Some(b)) => b,
            Ok(None) => {
                self.backlog.store(0, Relaxed);
                return Ok(false);
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the spool.");
                return Err(());
            }
        };
        match self.store.write(&batch.points).await {
            Ok(outcome) => {
                let refused = outcome.rejected.len() as u64;
                self.metrics
                    .points_stored
                    .fetch_add(batch.points.len() as u64 - refused, Relaxed);
                if !outcome.rejected.is_empty() {
                    on_refused(outcome.rejected, &batch.points);
                }
                if let Err(e) = self.spool.remove(&batch) {
                    tracing::error!(error = %e, "Cannot delete a replayed spool file; it will be replayed again (harmless, writes are idempotent).");
                    return Err(());
                }
                let left = self.spool.backlog();
                self.backlog.store(left, Relaxed);
                self.metrics.replayed_batches.fetch_add(1, Relaxed);
                if left == 0 {
                    tracing::info!("Spool drained: the telemetry store is back.");
                }
                Ok(true)
            }
            Err(e) => {
                self.metrics.store_errors.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, backlog = self.backlog(), "Replay waiting for the telemetry store.");
                Err(())
            }
        }
    }
}
