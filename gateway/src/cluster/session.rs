//! One owned partition's ingest: a persistent MQTT session with client id `gw-p<P>`,
//! subscribed to `fixtures/<P>/+/+` at QoS 1, feeding its own [`Pipeline`] — today's
//! single-node path ([`crate::ingest::mqtt::run`], [`Pipeline::run`], the real sinks),
//! once per partition, so sequence and analytics state follow the partition.
//!
//! Start: wait the lease's [`Acquired::wait`](super::lease::Acquired::wait) (the rest of
//! the broker's `ack_wait` after a crashed owner), then connect.
//!
//! Two ways to stop ([`StopMode`]):
//! - **Hand-over** (the lease is still ours: above this instance's share, or shutdown): the
//!   pipeline finishes every batch in hand, acknowledges it and saves the analytics state,
//!   then the connection sends those acknowledgements and disconnects. Only then does the
//!   coordinator release the lease; it keeps renewing it meanwhile.
//! - **Abort** (the lease is lost or about to expire: another instance may connect with the
//!   same client id any moment): the connection disconnects first, so that two holders never
//!   knock each other off the session; the batches in hand are still written, and their
//!   unacknowledged messages are redelivered to the next owner (stored again, idempotently).
//!   An abort also cuts short a hand-over in progress.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::partition;
use super::snapshots::PartitionStore;
use crate::analysis::Analyzer;
use crate::config::Config;
use crate::ingest;
use crate::ingest::batch::{BatchBuilder, MaintenanceAction};
use crate::ingest::pipeline::{Pipeline, Ports};
use crate::ingest::ports::StateCommitter;
use crate::ingest::sinks::{MqttAcknowledger, StateSink};
use crate::metrics::Metrics;
use crate::sequence::DeviceSeq;
use crate::state::{DeadLetter, StateError};
use crate::store::durable::DurableWriter;

/// What every partition session shares.
pub struct Shared {
    /// The gateway's configuration.
    pub config: Config,
    /// The brokers (`host`, `port`) of the cluster's MQTT listeners, tried in turn.
    pub brokers: Vec<(String, u16)>,
    /// Counters (summed over partitions).
    pub metrics: Arc<Metrics>,
    /// The durable writer (telemetry store + spool).
    pub writer: Arc<DurableWriter>,
    /// Dead letters, sequence state, maintenance.
    pub committer: Arc<StateSink>,
    /// The analytics and sequence state per partition, in PostgreSQL.
    pub partition_state: Arc<PartitionStore>,
}

/// A partition's committer: dead letters, sequences and maintenance as in single-node
/// mode (`state.db` keeps what this instance saw, for its `/devices` endpoint); the
/// sequence and analytics state in PostgreSQL under the partition's lease epoch, for the
/// partition's next owner.
struct PartitionCommitter {
    inner: Arc<StateSink>,
    partition_state: Arc<PartitionStore>,
    partition: u32,
    epoch: i64,
}

impl StateCommitter for PartitionCommitter {
    async fn commit(
        &self,
        dead: &[DeadLetter],
        devices: &[(String, DeviceSeq)],
        now_ms: i64,
    ) -> Result<(), StateError> {
        self.partition_state
            .save_sequences(self.partition, self.epoch, devices)
            .await?;
        self.inner.commit(dead, devices, now_ms).await
    }

    async fn apply_maintenance(&self, actions: Vec<MaintenanceAction>) -> Vec<MaintenanceAction> {
        self.inner.apply_maintenance(actions).await
    }

    async fn save_analytics(&self, states: Vec<(String, String)>) -> Result<(), StateError> {
        self.partition_state
            .save_analytics(self.partition, self.epoch, states)
            .await
    }
}

/// How a partition session is asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Keep consuming.
    Run,
    /// Finish and acknowledge the batches in hand, then disconnect (the lease is ours).
    HandOver,
    /// Disconnect at once, then finish the batches in hand (the lease is lost or expiring).
    Abort,
}

impl StopMode {
    /// Whether asking for `self` changes a session already asked for `current`: only a
    /// stronger request does (run < hand-over < abort).
    pub fn overrides(self, current: StopMode) -> bool {
        matches!(
            (current, self),
            (StopMode::Run, StopMode::HandOver | StopMode::Abort)
                | (StopMode::HandOver, StopMode::Abort)
        )
    }
}

/// A running partition session.
pub struct PartitionSession {
    stop: watch::Sender<StopMode>,
    task: JoinHandle<()>,
    subscribed: Arc<AtomicBool>,
}

impl PartitionSession {
    /// Starts partition `p`'s session, held at lease `epoch`, after `wait`.
    pub fn start(p: u32, epoch: i64, wait: Duration, shared: Arc<Shared>) -> PartitionSession {
        let (stop, stop_rx) = watch::channel(StopMode::Run);
        // Every log line of the session (its connection's included) names the partition.
        let span = tracing::info_span!("partition", p, epoch);
        let subscribed = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(
            run(p, epoch, wait, shared, stop_rx, Arc::clone(&subscribed)).instrument(span),
        );
        PartitionSession {
            stop,
            task,
            subscribed,
        }
    }

    /// Whether the broker has confirmed the partition's subscription: until it has, what
    /// devices of the partition publish is acknowledged by NATS but may be kept for no one
    /// (`$MQTT_msgs` keeps a message only for the consumers it has).
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// Asks it to end in `mode` and returns at once (see [`Self::is_finished`]). An abort
    /// overrides a hand-over in progress; nothing overrides an abort.
    pub fn signal(&self, mode: StopMode) {
        self.stop.send_if_modified(|m| {
            let stronger = mode.overrides(*m);
            if stronger {
                *m = mode;
            }
            stronger
        });
    }

    /// Stops it in `mode` and waits until it has.
    pub async fn stop(self, mode: StopMode) {
        self.signal(mode);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "A partition session task failed.");
        }
    }

    /// Whether the session's task has ended (after a stop, or on its own: it should not).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

async fn run(
    p: u32,
    epoch: i64,
    wait: Duration,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<StopMode>,
    subscribed: Arc<AtomicBool>,
) {
    if !wait.is_zero() {
        tracing::info!(
            partition = p,
            wait_ms = wait.as_millis() as u64,
            "Waiting out the broker's ack_wait before taking over the partition."
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|m| *m != StopMode::Run) => return,
        }
    }
    let config = &shared.config;
    let capacity = config.batch.max_messages * 4 + 10_000;
    let brokers: Vec<rumqttc::MqttOptions> = shared
        .brokers
        .iter()
        .map(|(host, port)| {
            let mut cfg = config.mqtt.clone();
            cfg.client_id = partition::client_id(p);
            cfg.host = host.clone();
            cfg.port = *port;
            ingest::mqtt::options(&cfg, capacity)
        })
        .collect();
    // Start at a different node per partition: the sessions spread over the cluster.
    let first = brokers
        .get(p as usize % brokers.len().max(1))
        .cloned()
        .unwrap_or_else(|| {
            let mut cfg = config.mqtt.clone();
            cfg.client_id = partition::client_id(p);
            ingest::mqtt::options(&cfg, capacity)
        });
    let (client, eventloop) = rumqttc::AsyncClient::new(first, capacity.max(64));
    let session = ingest::mqtt::Session {
        filters: vec![partition::filter(p)],
        partitioned: true,
        brokers: rotate(brokers, p as usize),
        subscribed,
    };

    // The previous owner's state. Never consume without it: a fresh state saved over it
    // would relearn every device's baselines and count messages handled elsewhere as gaps.
    let analyzer = if config.analytics.enabled {
        let Some(saved) = load_retrying("analytics", &mut stop, || {
            shared.partition_state.load_analytics(p)
        })
        .await
        else {
            return;
        };
        let mut analyzer = Analyzer::new(config.analytics.clone());
        let restored = analyzer.restore(saved);
        tracing::info!(partition = p, restored, "Partition analytics state loaded.");
        Some(analyzer)
    } else {
        None
    };
    let Some(sequences) = load_retrying("sequence", &mut stop, || {
        shared.partition_state.load_sequences(p)
    })
    .await
    else {
        return;
    };
    tracing::info!(
        partition = p,
        devices = sequences.len(),
        "Partition sequence state loaded."
    );
    let builder = BatchBuilder::new(
        config.limits,
        sequences,
        analyzer,
        shared.committer.maintenance.is_some(),
    );
    let generation = Arc::new(AtomicU64::new(0));
    let ports = Ports {
        acker: MqttAcknowledger {
            client: client.clone(),
            generation: Arc::clone(&generation),
        },
        writer: Arc::clone(&shared.writer),
        committer: Arc::new(PartitionCommitter {
            inner: Arc::clone(&shared.committer),
            partition_state: Arc::clone(&shared.partition_state),
            partition: p,
            epoch,
        }),
    };
    let pipeline = Pipeline::new(
        config.batch,
        builder,
        ports,
        Arc::clone(&shared.metrics),
        Duration::from_secs(config.analytics.snapshot_every_s.max(1)),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let (pipeline_stop, pipeline_stop_rx) = watch::channel(false);
    let (mqtt_stop, mqtt_stop_rx) = watch::channel(false);
    let mut pipeline_task = tokio::spawn(pipeline.run(rx, pipeline_stop_rx).in_current_span());
    let mqtt_task = tokio::spawn(
        ingest::mqtt::run(
            client,
            eventloop,
            tx,
            generation,
            Arc::clone(&shared.metrics),
            mqtt_stop_rx,
            session,
        )
        .in_current_span(),
    );
    tracing::info!(partition = p, client_id = %partition::client_id(p), "Partition session started.");
    let mode = stop
        .wait_for(|m| *m != StopMode::Run)
        .await
        .map(|m| *m)
        .unwrap_or(StopMode::Abort);
    let mut pipeline_done = false;
    if mode == StopMode::HandOver {
        // The pipeline first (it finishes and acknowledges the batches in hand), then the
        // connection, which keeps polling meanwhile so that those acknowledgements go out;
        // unless an abort comes first.
        let _ = pipeline_stop.send(true);
        tokio::select! {
            r = &mut pipeline_task => {
                pipeline_done = true;
                if let Err(e) = r {
                    tracing::error!(partition = p, error = %e, "The partition's pipeline failed.");
                }
            }
            _ = stop.wait_for(|m| *m == StopMode::Abort) => {
                tracing::warn!(partition = p, "Hand-over cut short: the lease is expiring; disconnecting first.");
            }
        }
    }
    // An abort: the connection first, so that this instance no longer holds the session
    // when the next owner connects.
    let _ = mqtt_stop.send(true);
    if let Err(e) = mqtt_task.await {
        tracing::error!(partition = p, error = %e, "The partition's connection task failed.");
    }
    if !pipeline_done {
        let _ = pipeline_stop.send(true);
        if let Err(e) = pipeline_task.await {
            tracing::error!(partition = p, error = %e, "The partition's pipeline failed.");
        }
    }
    tracing::info!(partition = p, mode = ?mode, "Partition session stopped.");
}

/// Runs `load` until it succeeds (backing off, logging each failure); `None` if the
/// session is asked to stop first.
async fn load_retrying<T, F, Fut>(
    what: &str,
    stop: &mut watch::Receiver<StopMode>,
    mut load: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StateError>>,
{
    let mut retry =
        crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match load().await {
            Ok(v) => return Some(v),
            Err(e) => {
                let delay = retry.next_delay();
                tracing::warn!(state = what, error = %e, retry_in_ms = delay.as_millis() as u64, "Cannot load the partition's saved state; not consuming until it loads.");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|m| *m != StopMode::Run) => return None,
                }
            }
        }
    }
}

/// `v` rotated left by `by` (the first element is the one connected to first).
fn rotate<T>(mut v: Vec<T>, by: usize) -> Vec<T> {
    if !v.is_empty() {
        let by = by % v.len();
        v.rotate_left(by);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::StopMode::{Abort, HandOver, Run};

    #[test]
    fn an_abort_cuts_a_hand_over_short_but_nothing_softens_an_abort() {
        assert!(HandOver.overrides(Run));
        assert!(Abort.overrides(Run));
        assert!(Abort.overrides(HandOver));
        assert!(
            !HandOver.overrides(Abort),
            "a hand-over never resumes an aborted session"
        );
        assert!(!Run.overrides(HandOver));
        assert!(!HandOver.overrides(HandOver));
        assert_eq!(super::rotate(vec![1, 2, 3], 4), vec![2, 3, 1]);
    }
}
