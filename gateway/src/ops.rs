//! Operating the gateway: honest health, the gap-burst and session-takeover
//! warnings, retention sweeps and the Prometheus exposition.
//!
//! - `GET /health/live`: 200 while the process serves HTTP; no data.
//! - `GET /health/ready`: 200 `{"ready":true}`, or 503 with the reasons while the
//!   broker is unreachable or the connection keeps failing, the telemetry store
//!   refuses writes, the spool holds more than `health.max_spool_batches`, or the
//!   state or maintenance database fails. Checked every `health.check_every_s` by
//!   a background task, so the endpoint itself never waits on a dependency.
//! - `GET /metrics`: Prometheus/OpenMetrics text (`prometheus-client`); the JSON
//!   counters are at `/metrics.json`.
//!
//! The counters come from [`Metrics`] (kept by ingest), the spool and the state
//! database; this module only reads them.

pub mod rate_watch;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;

use crate::config::{BrokerMode, Config, HealthConfig, RetentionConfig, StoreConfig};
use crate::metrics::Metrics;
use crate::state::StateDb;
use crate::store::durable::DurableWriter;

/// Shared state of the operations endpoints and tasks.
pub struct Ops {
    metrics: Arc<Metrics>,
    writer: Arc<DurableWriter>,
    state: StateDb,
    health: HealthConfig,
    retention: RetentionConfig,
    broker: (String, u16),
    /// Whether readiness probes the broker's port: an external broker only (the embedded
    /// one is in-process, and rumqttd logs every probe as a failed connection).
    probe_broker: bool,
    client_id: String,
    telemetry_db: Option<PathBuf>,
    maintenance_db: Option<PathBuf>,
    /// Whether `[maintenance]` is on (its failed device reports make the instance unready).
    maintenance_on: bool,
    reasons: Mutex<Vec<String>>,
    checked: AtomicBool,
    gap_bursts: AtomicU64,
    session_takeovers: AtomicU64,
    rate_alerts: [AtomicU64; 2],
    telemetry_deleted: AtomicU64,
    audit_deleted: AtomicU64,
    started: Instant,
    /// Clustered mode: the partitions this instance owns, for `/health/ready`.
    cluster: std::sync::OnceLock<(String, watch::Receiver<crate::cluster::Ownership>)>,
    /// Clustered: the maintenance engine in PostgreSQL, whose audit rows the retention sweep
    /// deletes through the engine (single-node, through `maintenance_db`).
    shared_maintenance: std::sync::OnceLock<Arc<maintenance::Engine>>,
}

/// What the previous check saw, to judge what changed since.
#[derive(Default)]
struct Seen {
    connects: u64,
    errors_at_connect: u64,
    connected: bool,
    gaps: VecDeque<(Instant, u64)>,
    burst_until: Option<Instant>,
    connect_times: VecDeque<Instant>,
    takeover_warned: Option<Instant>,
    maintenance_errors: u64,
    rates: rate_watch::RateWatch,
}

impl Ops {
    /// Builds the state; call [`Ops::spawn`] to start its tasks.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        writer: Arc<DurableWriter>,
        state: StateDb,
    ) -> Arc<Ops> {
        state.set_dead_letter_limits(config.retention.dead_letters);
        let host = match config.mqtt.broker {
            BrokerMode::Embedded if config.mqtt.host == "0.0.0.0" => "127.0.0.1".to_owned(),
            _ => config.mqtt.host.clone(),
        };
        Arc::new(Ops {
            metrics,
            writer,
            state,
            health: config.health,
            retention: config.retention,
            broker: (host, config.mqtt.port),
            probe_broker: config.mqtt.broker == BrokerMode::External,
            client_id: config.mqtt.client_id.clone(),
            telemetry_db: matches!(config.store, StoreConfig::Sqlite(_))
                .then(|| config.data_dir.join("telemetry.db")),
            maintenance_on: config.maintenance.is_some(),
            // Clustered, the engine is in PostgreSQL, which the lease loop watches.
            maintenance_db: config
                .maintenance
                .as_ref()
                .filter(|_| config.cluster.is_none())
                .map(|m| m.db_path.clone()),
            reasons: Mutex::new(vec!["starting: first readiness check not done".into()]),
            checked: AtomicBool::new(false),
            gap_bursts: AtomicU64::new(0),
            session_takeovers: AtomicU64::new(0),
            rate_alerts: [AtomicU64::new(0), AtomicU64::new(0)],
            telemetry_deleted: AtomicU64::new(0),
            audit_deleted: AtomicU64::new(0),
            started: Instant::now(),
            cluster: std::sync::OnceLock::new(),
            shared_maintenance: std::sync::OnceLock::new(),
        })
    }

    /// Clustered mode: `/health/ready` reports instance `id`'s partitions and their lease
    /// epochs, and the live instances, from `ownership`.
    pub fn set_cluster(&self, id: &str, ownership: watch::Receiver<crate::cluster::Ownership>) {
        let _ = self.cluster.set((id.to_owned(), ownership));
    }

    /// What `/health/ready` and `/fleet/instances` say of the cluster (`None` in
    /// single-node mode).
    pub fn cluster_view(&self) -> Option<serde_json::Value> {
        let (id, rx) = self.cluster.get()?;
        let o = rx.borrow();
        let partitions: serde_json::Map<String, serde_json::Value> = o
            .partitions
            .iter()
            .map(|(p, epoch)| (p.to_string(), serde_json::Value::from(*epoch)))
            .collect();
        Some(serde_json::json!({
            "instance": id,
            "owned": partitions.len(),
            "partitions": partitions,
            // Owned partitions whose subscription the broker has not confirmed: messages
            // published to them now may be acknowledged by NATS and kept for no one.
            "unsubscribed": o.unsubscribed,
            "instances": o.instances,
            // Partitions per instance at the last rebalance (running leases).
            "owners": o.owners,
        }))
    }

    /// Starts the readiness checker and the retention sweeper.
    pub fn spawn(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: watch::Receiver<bool>,
    ) {
        tasks.spawn(Arc::clone(self).check_loop(shutdown.clone()));
        tasks.spawn(Arc::clone(self).sweep_loop(shutdown));
    }

    /// Why the gateway is not ready (empty: ready).
    pub fn reasons(&self) -> Vec<String> {
        self.reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn check_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut seen = Seen::default();
        let mut tick = tokio::time::interval(self.health.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            let reasons = self.check(&mut seen).await;
            let mut current = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
            let was_ready = current.is_empty() && self.checked.load(Relaxed);
            match (was_ready, reasons.is_empty()) {
                (true, false) => tracing::warn!(reasons = ?reasons, "Gateway NOT ready."),
                (false, true) => tracing::info!("Gateway ready."),
                (false, false) if kinds(&current) != kinds(&reasons) => {
                    tracing::warn!(reasons = ?reasons, "Gateway still not ready.")
                }
                _ => {}
            }
            *current = reasons;
            self.checked.store(true, Relaxed);
        }
    }

    async fn check(&self, seen: &mut Seen) -> Vec<String> {
        let mut reasons = Vec::new();
        let now = Instant::now();
        let m = &self.metrics;

        // The broker: reachable, and the connection not failing since it was last made.
        let (host, port) = &self.broker;
        let url = format!("mqtt://{host}:{port}");
        let probe = if self.probe_broker {
            tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect((host.as_str(), *port)),
            )
            .await
            .map(|r| r.map(drop))
        } else {
            Ok(Ok(()))
        };
        let (connects, errors) = (m.mqtt_connects.load(Relaxed), m.mqtt_errors.load(Relaxed));
        if connects > seen.connects {
            seen.connected = true;
            seen.errors_at_connect = errors;
            for _ in seen.connects..connects {
                seen.connect_times.push_back(now);
            }
            seen.connects = connects;
        } else if errors > seen.errors_at_connect {
            seen.connected = false;
        }
        match probe {
            Ok(Ok(_)) if !seen.connected && connects == 0 => {
                reasons.push(format!("mqtt: not connected to the broker at {url} (check mqtt.url, mqtt.username and mqtt.password)"));
            }
            Ok(Ok(_)) if !seen.connected => {
                reasons.push(format!(
                    "mqtt: the connection to the broker at {url} is failing"
                ));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => reasons.push(format!("mqtt: broker unreachable at {url}: {e}")),
            Err(_) => reasons.push(format!(
                "mqtt: broker at {url} does not answer (connect timed out)"
            )),
        }
        // Several connects in a minute with the broker up: another client takes the session.
        // (Not in clustered mode: each partition acquired connects one session, so dozens
        // of connects a minute are the normal rebalance.)
        if self.cluster.get().is_some() {
            seen.connect_times.clear();
        }
        while seen
            .connect_times
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            seen.connect_times.pop_front();
        }
        if seen.connect_times.len() >= 4
            && seen
                .takeover_warned
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(60))
        {
            seen.takeover_warned = Some(now);
            self.session_takeovers.fetch_add(1, Relaxed);
            tracing::warn!(client_id = %self.client_id, reconnects_last_minute = seen.connect_times.len(), "The MQTT session keeps being taken over: {} connects in a minute. Another client probably uses the same mqtt.client_id; each takeover interrupts acknowledgements. Give every gateway its own client id.", seen.connect_times.len());
        }

        // The store.
        if let Some(e) = self.writer.store_failing() {
            reasons.push(format!(
                "store: {} refuses writes: {e}",
                self.writer.describe()
            ));
        }
        let backlog = self.writer.backlog();
        if backlog > self.health.max_spool_batches {
            reasons.push(format!(
                "spool: {backlog} batches waiting, more than health.max_spool_batches = {}",
                self.health.max_spool_batches
            ));
        }

        // The databases.
        match tokio::time::timeout(Duration::from_secs(5), self.state.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => reasons.push(format!("state database: {e}")),
            Err(_) => reasons.push("state database: no answer within 5 s".into()),
        }
        if let Some(path) = &self.maintenance_db {
            let path = path.clone();
            let probe = tokio::task::spawn_blocking(move || probe_sqlite(&path, "tickets")).await;
            match probe {
                Ok(Ok(())) => {}
                Ok(Err(e)) => reasons.push(format!("maintenance database: {e}")),
                Err(e) => reasons.push(format!("maintenance database: {e}")),
            }
        }
        if self.maintenance_on {
            let errs = m.maintenance_errors.load(Relaxed);
            if errs > seen.maintenance_errors {
                reasons.push(format!(
                    "maintenance: {} device reports failed since the last check",
                    errs - seen.maintenance_errors
                ));
            }
            seen.maintenance_errors = errs;
        }

        // The platform's own rates: a collapse of ingest or a surge of rejections.
        let rejected = m.rejected.load(Relaxed);
        for alert in seen
            .rates
            .sample(crate::clock::now_ms(), m.received.load(Relaxed), rejected)
        {
            let i = match alert.series {
                rate_watch::Series::Received => 0,
                rate_watch::Series::Rejected => 1,
            };
            self.rate_alerts[i].fetch_add(1, Relaxed);
            tracing::warn!(
                series = alert.series.as_str(),
                per_minute = alert.per_minute.round(),
                expected = alert.expected.round(),
                direction = ?alert.direction,
                "Platform rate anomaly: {} messages per minute {} against about {} expected from the last hour. A fall in received means fixtures or the broker went quiet; a rise in rejected, a device or firmware sending what the contract refuses (see /dead-letters).",
                alert.series.as_str(),
                alert.per_minute.round(),
                alert.expected.round()
            );
        }

        // A burst of sequence gaps: messages lost before the gateway.
        let gaps = m.sequence_gaps.load(Relaxed);
        seen.gaps.push_back((now, gaps));
        while seen
            .gaps
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.health.gap_window)
        {
            seen.gaps.pop_front();
        }
        let oldest = seen.gaps.front().map_or(gaps, |(_, g)| *g);
        let burst = gaps.saturating_sub(oldest);
        if burst > self.health.gap_burst && seen.burst_until.is_none_or(|t| now >= t) {
            seen.burst_until = Some(now + self.health.gap_window);
            self.gap_bursts.fetch_add(1, Relaxed);
            tracing::warn!(
                missing = burst,
                window_s = self.health.gap_window.as_secs(),
                total_missing = gaps,
                "Burst of sequence gaps: {burst} messages missing in {} s. Likely cause: the broker dropped them at its queue or in-flight limits (Mosquitto max_queued_messages / max_queued_bytes / max_inflight_messages; its defaults of 1000 queued and 20 in flight drop silently while the gateway is away or slow); see deploy/mosquitto/mosquitto.conf.",
                self.health.gap_window.as_secs()
            );
        }
        reasons
    }

    async fn sweep_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // First sweep shortly after start, then every `sweep_every`.
        let mut wait = Duration::from_secs(5);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
            wait = self.retention.sweep_every;
            self.sweep(crate::clock::now_ms()).await;
        }
    }

    /// Clustered mode: the audit retention of `engine` (in PostgreSQL) runs through it.
    pub fn set_shared_maintenance(&self, engine: Arc<maintenance::Engine>) {
        let _ = self.shared_maintenance.set(engine);
    }

    /// Audit retention through the shared engine (clustered mode); every instance may run it.
    async fn sweep_shared_audit(&self, now_ms: i64) {
        let (Some(engine), Some(keep)) = (self.shared_maintenance.get(), self.retention.audit)
        else {
            return;
        };
        let cutoff = now_ms - keep.as_millis() as i64;
        let engine = Arc::clone(engine);
        match tokio::task::spawn_blocking(move || engine.delete_audit_before(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                self.audit_deleted.fetch_add(n, Relaxed);
                tracing::info!(
                    deleted = n,
                    store = "audit",
                    keep_days = keep.as_secs() / 86_400,
                    "Retention: old rows deleted."
                );
            }
            Ok(Err(e)) => tracing::error!(store = "audit", error = %e, "Retention sweep failed."),
            Err(e) => tracing::error!(store = "audit", error = %e, "Retention sweep failed."),
        }
    }

    /// One retention sweep of every store; errors are logged and retried next time.
    pub async fn sweep(&self, now_ms: i64) {
        if let Err(e) = self.state.prune_dead_letters(now_ms).await {
            tracing::error!(error = %e, "Dead-letter retention sweep failed.");
        }
        self.sweep_shared_audit(now_ms).await;
        let jobs = [
            (
                self.telemetry_db.clone(),
                self.retention.telemetry,
                "points",
                &self.telemetry_deleted,
                "telemetry",
            ),
            (
                self.maintenance_db.clone(),
                self.retention.audit,
                "audit",
                &self.audit_deleted,
                "audit",
            ),
        ];
        for (path, keep, table, counter, what) in jobs {
            let (Some(path), Some(keep)) = (path, keep) else {
                continue;
            };
            let cutoff = now_ms - keep.as_millis() as i64;
            let result =
                tokio::task::spawn_blocking(move || delete_older(&path, table, cutoff)).await;
            match result {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    counter.fetch_add(n, Relaxed);
                    tracing::info!(
                        deleted = n,
                        store = what,
                        keep_days = keep.as_secs() / 86_400,
                        "Retention: old rows deleted."
                    );
                }
                Ok(Err(e)) => {
                    tracing::error!(store = what, error = %e, "Retention sweep failed.")
                }
                Err(e) => tracing::error!(store = what, error = %e, "Retention sweep failed."),
            }
        }
    }

    /// The Prometheus/OpenMetrics text exposition of every counter and gauge.
    pub fn prometheus_text(&self) -> String {
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::registry::Registry;

        let s = self.metrics.snapshot(self.writer.backlog());
        let spool = self.writer.spool();
        let (dl_rows, dl_bytes) = self.state.dead_letter_totals();
        let mut r = Registry::with_prefix("gateway");
        let mut counter = |name: &str, help: &str, v: u64| {
            r.register(name, help, ConstCounter::new(v));
        };
        counter("messages_received", "MQTT messages received.", s.received);
        counter(
            "messages_accepted",
            "Messages that passed validation.",
            s.accepted,
        );
        counter(
            "points_stored",
            "Points written to the telemetry store (directly or by replay).",
            s.points_stored,
        );
        counter(
            "points_refused",
            "Points the store refused for good (kept as dead letters).",
            s.points_refused,
        );
        counter("batches", "Batches flushed.", s.batches);
        counter(
            "messages_acked",
            "Messages acknowledged to the broker after they were durable.",
            s.acked,
        );
        counter(
            "acks_skipped_stale",
            "Acknowledgements dropped because their connection was gone (the broker redelivers).",
            s.acks_skipped_stale,
        );
        counter(
            "spool_batches_written",
            "Batches written to the spool while the store was unavailable.",
            s.spooled_batches,
        );
        counter(
            "spool_batches_replayed",
            "Spooled batches replayed into the store.",
            s.replayed_batches,
        );
        counter(
            "spool_quarantined_files",
            "Damaged spool files moved to corrupt/ and never replayed (points possibly lost).",
            spool.quarantined(),
        );
        counter(
            "spool_legacy_files_replayed",
            "Spool files of the previous format (no header) replayed.",
            spool.legacy_replayed(),
        );
        counter(
            "store_errors",
            "Failed telemetry store writes (each attempt).",
            s.store_errors,
        );
        counter(
            "http_connections_evicted",
            "HTTP connections closed to admit new ones at the connection cap (http.max_connections).",
            s.http_connections_evicted,
        );
        counter(
            "mqtt_connects",
            "MQTT connections established.",
            s.mqtt_connects,
        );
        counter("mqtt_errors", "MQTT connection errors.", s.mqtt_errors);
        counter(
            "mqtt_subscriptions_refused",
            "SUBSCRIBE filters the broker refused (SUBACK failure); each is retried.",
            s.mqtt_subscriptions_refused,
        );
        counter(
            "sequence_duplicates",
            "Redeliveries recognised by sequence number.",
            s.duplicates,
        );
        counter(
            "invalid_fields",
            "Sensor values left out of accepted messages as invalid or missing (contract v1.1).",
            s.invalid_fields,
        );
        counter(
            "sequence_gap_bursts",
            "Warnings raised for a burst of sequence gaps (broker queue or in-flight limits).",
            self.gap_bursts.load(Relaxed),
        );
        counter(
            "platform_rate_alerts_received",
            "Anomalies in the per-minute rate of received messages (one per episode).",
            self.rate_alerts[0].load(Relaxed),
        );
        counter(
            "platform_rate_alerts_rejected",
            "Anomalies in the per-minute rate of rejected messages (one per episode).",
            self.rate_alerts[1].load(Relaxed),
        );
        counter(
            "mqtt_session_takeovers",
            "Warnings raised for the MQTT session being taken over repeatedly.",
            self.session_takeovers.load(Relaxed),
        );
        counter(
            "dead_letters_dropped",
            "Dead letters removed by the caps or retention.",
            self.state.dead_letters_dropped(),
        );
        counter(
            "sequence_journal_rows_unreadable",
            "Sequence-state journal rows that did not decode and were removed (their devices kept older state).",
            self.state.journal_rows_unreadable(),
        );
        counter(
            "maintenance_applied",
            "Device faults and cartridge replacements applied by the maintenance engine.",
            s.maintenance_applied,
        );
        counter(
            "maintenance_errors",
            "Device reports the maintenance engine failed to apply.",
            s.maintenance_errors,
        );
        counter(
            "findings",
            "Findings (edges) produced by the analytics stage.",
            s.findings,
        );
        counter(
            "messages_analysed",
            "Messages fed to the analytics stage.",
            s.analysed,
        );
        counter(
            "late_messages_replayed",
            "Late messages analysed in device-time order (replayed from a checkpoint).",
            s.late_replayed,
        );
        counter(
            "late_messages_unordered",
            "Late messages older than their device's checkpoint, skipped by the rules.",
            s.late_unordered,
        );
        let rejected =
            Family::<Vec<(String, String)>, prometheus_client::metrics::counter::Counter>::default(
            );
        for (reason, n) in &s.rejected_by_reason {
            rejected
                .get_or_create(&vec![("reason".to_owned(), reason.clone())])
                .inc_by(*n);
        }
        r.register(
            "messages_rejected",
            "Messages refused, by reason code (kept as dead letters).",
            rejected,
        );
        let retention =
            Family::<Vec<(String, String)>, prometheus_client::metrics::counter::Counter>::default(
            );
        for (store, n) in [
            ("telemetry", self.telemetry_deleted.load(Relaxed)),
            ("audit", self.audit_deleted.load(Relaxed)),
        ] {
            retention
                .get_or_create(&vec![("store".to_owned(), store.to_owned())])
                .inc_by(n);
        }
        r.register(
            "retention_deleted_rows",
            "Rows deleted by retention sweeps, by store.",
            retention,
        );
        let mut gauge = |name: &str, help: &str, v: i64| {
            r.register(name, help, ConstGauge::new(v));
        };
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            "spool_backlog_batches",
            "Batches waiting in the spool.",
            g(s.spool_backlog_batches),
        );
        gauge(
            "spool_quarantine_files",
            "Files in the spool's corrupt/ directory.",
            g(spool.quarantine_files()),
        );
        gauge(
            "sequence_gaps",
            "Messages missing before the broker, by per-device sequence gaps (net of late fills).",
            g(s.sequence_gaps),
        );
        gauge("devices", "Devices with sequence state.", g(s.devices));
        gauge(
            "analytics_devices",
            "Devices with analytics state.",
            g(s.analytics_devices),
        );
        gauge("dead_letters_stored", "Dead letters kept.", g(dl_rows));
        gauge(
            "dead_letters_stored_bytes",
            "Payload bytes of the dead letters kept.",
            g(dl_bytes),
        );
        let ready = self.checked.load(Relaxed) && self.reasons().is_empty();
        gauge(
            "ready",
            "1 while /health/ready answers 200.",
            i64::from(ready),
        );
        gauge(
            "uptime_seconds",
            "Seconds since the gateway started.",
            g(self.started.elapsed().as_secs()),
        );
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &r) {
            tracing::error!(error = %e, "Cannot encode the metrics.");
        }
        text
    }
}

/// The kinds of reasons (`mqtt`, `store`, `spool`...), so a changing count does not log again.
fn kinds(reasons: &[String]) -> Vec<&str> {
    reasons
        .iter()
        .map(|r| r.split(':').next().unwrap_or(""))
        .collect()
}

/// Opens a SQLite database without creating it and reads from `table`.
fn probe_sqlite(path: &std::path::Path, table: &str) -> Result<(), String> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    conn.query_row(
        &format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1)"),
        [],
        |_| Ok(()),
    )
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// Deletes rows of `table` (`points`: the telemetry store's samples; `audit`: by `ts_ms`) older than `cutoff_ms`,
/// in chunks so the writer is never locked out long.
fn delete_older(path: &std::path::Path, table: &str, cutoff_ms: i64) -> rusqlite::Result<u64> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let sql = match table {
        "points" => crate::store::sqlite::DELETE_OLDER_CHUNK,
        _ => "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ts_ms < ?1 LIMIT 5000)",
    };
    let mut total = 0u64;
    loop {
        let n = conn.execute(sql, [cutoff_ms])?;
        total += n as u64;
        if n < 5000 {
            return Ok(total);
        }
    }
}

/// The operations routes: `/health/live`, `/health/ready`, `/metrics`.
pub fn router(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/health/ready", get(ready))
        .route("/metrics", get(prometheus))
        .with_state(ops)
}

async fn ready(State(ops): State<Arc<Ops>>) -> Response {
    let reasons = ops.reasons();
    let mut body = serde_json::json!({ "ready": reasons.is_empty(), "reasons": reasons });
    if let Some(cluster) = ops.cluster_view() {
        body["cluster"] = cluster;
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn prometheus(State(ops): State<Arc<Ops>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ops.prometheus_text(),
    )
        .into_response()
}
