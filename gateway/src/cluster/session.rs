//! One owned partition's ingest: a persistent MQTT session with client id `gw-p<P>`,
//! subscribed to `fixtures/<P>/+/+` at QoS 1, feeding its own [`Pipeline`] — today's
//! single-node path ([`crate::ingest::mqtt::run`], [`Pipeline::run`], the real sinks),
//! once per partition, so sequence and analytics state follow the partition.
//!
//! Start: wait the lease's [`Acquired::wait`](super::lease::Acquired::wait) (the rest of
//! the broker's `ack_wait` after a crashed owner), then connect. Stop (hand-over or
//! shutdown): the pipeline finishes every batch in hand and acknowledges it and saves the
//! analytics state, then the connection sends those acknowledgements and disconnects. Only
//! then does the coordinator release the lease.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::partition;
use crate::analysis::Analyzer;
use crate::config::Config;
use crate::ingest;
use crate::ingest::batch::BatchBuilder;
use crate::ingest::pipeline::{Pipeline, Ports};
use crate::ingest::sinks::{MqttAcknowledger, StateSink};
use crate::metrics::Metrics;
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
}

/// A running partition session.
pub struct PartitionSession {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PartitionSession {
    /// Starts partition `p`'s session after `wait`.
    pub fn start(p: u32, wait: Duration, shared: Arc<Shared>) -> PartitionSession {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(p, wait, shared, stop_rx));
        PartitionSession { stop, task }
    }

    /// Stops it: the batches in hand are finished and acknowledged, then it disconnects.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "A partition session task failed.");
        }
    }

    /// Whether the session ended on its own (it should not).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

async fn run(p: u32, wait: Duration, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    if !wait.is_zero() {
        tracing::info!(
            partition = p,
            wait_ms = wait.as_millis() as u64,
            "Waiting out the broker's ack_wait before taking over the partition."
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
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
    };

    let analyzer = config
        .analytics
        .enabled
        .then(|| Analyzer::new(config.analytics.clone()));
    let builder = BatchBuilder::new(
        config.limits,
        HashMap::new(),
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
        committer: Arc::clone(&shared.committer),
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
    let pipeline_task = tokio::spawn(pipeline.run(rx, pipeline_stop_rx));
    let mqtt_task = tokio::spawn(ingest::mqtt::run(
        client,
        eventloop,
        tx,
        generation,
        Arc::clone(&shared.metrics),
        mqtt_stop_rx,
        session,
    ));
    tracing::info!(partition = p, client_id = %partition::client_id(p), "Partition session started.");
    let _ = stop.changed().await;
    // The pipeline first (it finishes and acknowledges the batches in hand), then the
    // connection, which keeps polling meanwhile so that those acknowledgements go out.
    let _ = pipeline_stop.send(true);
    if let Err(e) = pipeline_task.await {
        tracing::error!(partition = p, error = %e, "The partition's pipeline failed.");
    }
    let _ = mqtt_stop.send(true);
    if let Err(e) = mqtt_task.await {
        tracing::error!(partition = p, error = %e, "The partition's connection task failed.");
    }
    tracing::info!(partition = p, "Partition session stopped.");
}

/// `v` rotated left by `by` (the first element is the one connected to first).
fn rotate<T>(mut v: Vec<T>, by: usize) -> Vec<T> {
    if !v.is_empty() {
        let by = by % v.len();
        v.rotate_left(by);
    }
    v
}
