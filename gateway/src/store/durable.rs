//! The durable writer: a batch of points is either in the telemetry store or in
//! the fsynced spool when [`DurableWriter::persist`] returns. Nothing else in
//! the gateway decides when data is safe to acknowledge.
//!
//! A batch gets one direct attempt: if the store fails (or hangs until its
//! time-out) the batch is spooled at once, so acknowledgements wait for one
//! time-out at most, not several. While the spool holds a backlog, new batches
//! go straight to it (a dead store costs one fsync per batch), and
//! [`DurableWriter::replay`] drains it oldest-first, merging up to
//! [`REPLAY_MAX_FILES`] files ([`REPLAY_MAX_POINTS`] points) into one write.
//!
//! In clustered mode the writer is [`DurableWriter::write_through`]: a batch counts as
//! durable only once the telemetry store took it, never from the local spool, because a
//! dead instance's spool would hold acknowledged messages no other instance can reach.
//! The broker's replicated stream is the buffer there: an unacknowledged message stays in
//! it and is redelivered to whichever instance owns its partition next.
//!
//! The writer also remembers when the store last accepted and last failed a
//! write, for the readiness check (`/health/ready`).

use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::spool::Spool;
use super::{Point, RejectedPoint, TelemetryStore};
use crate::backoff::Backoff;
use crate::events::{BatchSpooled, InternalEvent, StoreWriteFailed};
use crate::metrics::Metrics;

/// Direct store attempts before a batch is spooled instead.
const DIRECT_ATTEMPTS: usize = 1;

/// Most spool files merged into one replay write.
pub const REPLAY_MAX_FILES: usize = 256;

/// Points at which a replay write stops taking more files.
pub const REPLAY_MAX_POINTS: usize = 20_000;

/// Writes batches durably; see the module docs.
pub struct DurableWriter {
    store: TelemetryStore,
    spool: Spool,
    metrics: Arc<Metrics>,
    backlog: std::sync::atomic::AtomicU64,
    last_ok_ms: AtomicI64,
    last_err_ms: AtomicI64,
    last_error: Mutex<String>,
    spool_fallback: bool,
}

fn wall_ms() -> i64 {
    crate::clock::now_ms()
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
            last_ok_ms: AtomicI64::new(0),
            last_err_ms: AtomicI64::new(0),
            last_error: Mutex::new(String::new()),
            spool_fallback: true,
        }
    }

    /// Clustered mode: batches are durable only in the store (see the module docs); a failing
    /// store holds acknowledgements, retrying with backoff, and the spool is only replayed.
    pub fn write_through(mut self) -> DurableWriter {
        self.spool_fallback = false;
        self
    }

    /// Batches waiting in the spool.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Relaxed)
    }

    /// The spool (for its counters and backups).
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The telemetry store.
    pub fn store(&self) -> &TelemetryStore {
        &self.store
    }

    /// The store's description, for logs.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// `Some(error)` while the store's most recent write attempt failed.
    pub fn store_failing(&self) -> Option<String> {
        let (ok, err) = (
            self.last_ok_ms.load(Relaxed),
            self.last_err_ms.load(Relaxed),
        );
        (err > 0 && err >= ok).then(|| {
            self.last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    fn note_ok(&self) {
        self.last_ok_ms.store(wall_ms(), Relaxed);
    }

    fn note_err(&self, e: &super::WriteError, attempt: Option<u32>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
        self.last_err_ms.store(wall_ms().max(1), Relaxed);
        StoreWriteFailed { error: e, attempt }.emit(&self.metrics);
    }

    /// One write of `points` to the store: `Some(refused points)` if it took the batch,
    /// `None` (failure noted and counted) if not.
    async fn write_direct(&self, points: &[Point], attempt: u32) -> Option<Vec<RejectedPoint>> {
        match self.store.write(points).await {
            Ok(outcome) => {
                self.note_ok();
                let refused = outcome.rejected.len() as u64;
                self.metrics
                    .points_stored
                    .fetch_add(points.len() as u64 - refused, Relaxed);
                Some(outcome.rejected)
            }
            Err(e) => {
                self.note_err(&e, Some(attempt));
                None
            }
        }
    }

    /// Makes `points` durable and returns those the store refused for good.
    /// Never gives up: if neither the store nor the spool can take the batch it
    /// keeps retrying, which stops acknowledgements and so pushes back on the broker.
    pub async fn persist(&self, points: &[Point]) -> Vec<RejectedPoint> {
        if points.is_empty() {
            return Vec::new();
        }
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        if !self.spool_fallback {
            let mut attempt = 0u32;
            loop {
                attempt = attempt.saturating_add(1);
                if let Some(refused) = self.write_direct(points, attempt).await {
                    return refused;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        loop {
            if self.backlog() == 0 {
                for attempt in 1..=DIRECT_ATTEMPTS as u32 {
                    if let Some(refused) = self.write_direct(points, attempt).await {
                        return refused;
                    }
                    if attempt < DIRECT_ATTEMPTS as u32 {
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    }
                }
            }
            match self.spool.append(points) {
                Ok(path) => {
                    self.backlog.fetch_add(1, Relaxed);
                    BatchSpooled {
                        path: &path,
                        points: points.len(),
                    }
                    .emit(&self.metrics);
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
    /// replayed write's refused points to `on_refused`.
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
                match self.replay_some(&on_refused).await {
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

    /// Replays the oldest spooled batches in one write. `Ok(false)`: nothing to replay.
    async fn replay_some(
        &self,
        on_refused: &impl Fn(Vec<RejectedPoint>, &[Point]),
    ) -> Result<bool, ()> {
        let batches = match self
            .spool
            .oldest_batches(REPLAY_MAX_FILES, REPLAY_MAX_POINTS)
        {
            Ok(b) if b.is_empty() => {
                self.backlog.store(0, Relaxed);
                return Ok(false);
            }
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the spool.");
                return Err(());
            }
        };
        let points: Vec<Point> = batches
            .iter()
            .flat_map(|b| b.points.iter().cloned())
            .collect();
        match self.store.write(&points).await {
            Ok(outcome) => {
                self.note_ok();
                let refused = outcome.rejected.len() as u64;
                self.metrics
                    .points_stored
                    .fetch_add(points.len() as u64 - refused, Relaxed);
                if !outcome.rejected.is_empty() {
                    on_refused(outcome.rejected, &points);
                }
                for batch in &batches {
                    if let Err(e) = self.spool.remove(batch) {
                        tracing::error!(error = %e, "Cannot delete a replayed spool file; it will be replayed again (harmless, writes are idempotent).");
                        return Err(());
                    }
                    self.metrics.replayed_batches.fetch_add(1, Relaxed);
                }
                let left = self.spool.backlog();
                self.backlog.store(left, Relaxed);
                tracing::debug!(
                    files = batches.len(),
                    points = points.len(),
                    left,
                    "Spooled batches replayed."
                );
                if left == 0 {
                    tracing::info!("Spool drained: the telemetry store is back.");
                }
                Ok(true)
            }
            Err(e) => {
                self.note_err(&e, None);
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::influx::{InfluxApi, InfluxConfig, InfluxStore};
    use crate::store::{FieldValue, Point};

    fn unreachable_store() -> TelemetryStore {
        // A port nothing listens on: every write fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let url = format!("http://127.0.0.1:{port}").parse().expect("url");
        TelemetryStore::Influx(
            InfluxStore::new(InfluxConfig {
                url,
                api: InfluxApi::V1 {
                    database: "t".into(),
                    retention_policy: None,
                    username: None,
                    password: None,
                },
                timeout: Duration::from_millis(200),
                create_database: false,
            })
            .expect("store"),
        )
    }

    fn point() -> Point {
        Point {
            measurement: "telemetry".into(),
            tags: vec![("device_id".into(), "toilet-1".into())],
            fields: vec![("v".into(), FieldValue::Int(1))],
            ts_ms: 1,
        }
    }

    #[tokio::test]
    async fn a_failing_store_spools_in_single_node_mode_and_holds_the_batch_in_write_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::default());
        let spool = Spool::open(&dir.path().join("a")).expect("spool");
        let writer = DurableWriter::new(unreachable_store(), spool, Arc::clone(&metrics));
        assert!(writer.persist(&[point()]).await.is_empty());
        assert_eq!(writer.backlog(), 1, "single node: durable in the spool");

        let spool = Spool::open(&dir.path().join("b")).expect("spool");
        let writer = DurableWriter::new(unreachable_store(), spool, metrics).write_through();
        let held = tokio::time::timeout(Duration::from_secs(2), writer.persist(&[point()])).await;
        assert!(
            held.is_err(),
            "write-through never calls a failed write durable"
        );
        assert_eq!(writer.backlog(), 0);
        assert!(writer.spool().files().expect("files").is_empty());
        assert!(writer.store_failing().is_some());
    }
}
