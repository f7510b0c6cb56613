//! The smart-fixture gateway: receives fixture telemetry over MQTT and makes it
//! durable in InfluxDB (or SQLite), acknowledging each message only after that.
//!
//! # Layout
//! - [`config`]: TOML file + `GATEWAY__*` env overrides → typed [`config::Config`].
//! - [`broker`]: the embedded rumqttd broker of the zero-setup run.
//! - [`decode`]: topic + payload → a typed message and its points, or a rejection (pure).
//! - [`sequence`]: per-device, per-boot seen sequence ranges: duplicates, gaps (pure).
//! - [`analysis`]: the rules and forecasters over decoded messages (`[analytics]`).
//! - [`ingest`]: MQTT connection, batching, acknowledgement after the durable write.
//! - [`store`]: line protocol, InfluxDB v1/v2 (with its settings), SQLite, the spool, the durable writer.
//! - [`state`]: the state database (dead letters, per-device sequence state).
//! - [`cluster`]: clustered mode (`[cluster]`): partition leases in PostgreSQL, a session per partition.
//! - [`clock`], [`backoff`]: the wall clock and the retry backoff every loop shares.
//! - [`events`]: named internal events; emitting one counts it and logs it.
//! - [`metrics`], [`http`]: counters and the HTTP endpoint that serves them.
//! - `demo` (default feature `demo`): a simulated fleet (the `simulator` crate) for the zero-setup run.
//! - The `maintenance` crate, when `[maintenance]` is configured: device faults and
//!   cartridge replacements feed it from [`ingest::batch`] through [`ingest::pipeline`]; its API is nested under `/api`.
//! - [`commands`]: remote commands — the dispatcher publishing the engine's queued commands
//!   on `fixtures/{id}/cmd`, and the devices' answers on `fixtures/{id}/result` (ingested).
//!
//! - In clustered mode the maintenance engine (tickets, reminders, registry, tokens, audit,
//!   outbox) lives in the cluster's PostgreSQL database, shared by every instance
//!   ([`open_maintenance`]).
//!
//! [`run`] wires them together and returns when `shutdown` resolves.

pub mod analysis;
pub mod backoff;
pub mod backup;
pub mod broker;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod decode;
#[cfg(feature = "demo")]
pub mod demo;
pub mod events;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod provision;
pub mod sequence;
pub mod service_kpi;
pub mod state;
pub mod store;
mod word_scan;

#[cfg(test)]
mod test_support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use clock::now_ms;
use config::{BrokerMode, Config, StoreConfig};
use ingest::batch::{refused_to_dead_letters, BatchBuilder};
use ingest::pipeline::{Pipeline, Ports};
use ingest::sinks::{MqttAcknowledger, StateSink};
use metrics::Metrics;
use state::StateDb;
use store::durable::DurableWriter;
use store::TelemetryStore;

/// Why the gateway could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// Directory.
        path: std::path::PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// The state database cannot be opened.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// The SQLite telemetry store cannot be opened.
    #[error("cannot open the SQLite telemetry store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// InfluxDB set-up failed.
    #[error(transparent)]
    Influx(#[from] store::influx::SetupError),
    /// The spool cannot be opened.
    #[error(transparent)]
    Spool(#[from] store::spool::SpoolError),
    /// The embedded broker cannot start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The maintenance engine cannot start.
    #[error("cannot start the maintenance engine: {0}")]
    Maintenance(#[from] maintenance::Error),
    /// The HTTP endpoint cannot listen.
    #[error("cannot listen for HTTP on {addr}: {source}. Set http.listen to a free address, or \"off\".")]
    HttpBind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
}

/// Options of [`run`] that are not configuration but run-time choices.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Simulated demo fixtures to start (0: none).
    pub demo_fixtures: usize,
    /// Simulated fixtures registered with the demo's maintenance engine (at least `demo_fixtures`).
    pub demo_registered: usize,
    /// Seconds between console summaries (0: none).
    pub report_every_s: u64,
}

async fn open_store(config: &Config) -> Result<TelemetryStore, RunError> {
    Ok(match &config.store {
        StoreConfig::Sqlite(tuning) => TelemetryStore::Sqlite(
            store::sqlite::SqliteStore::open_with(&config.data_dir.join("telemetry.db"), *tuning)?,
        ),
        StoreConfig::Influx(influx) => {
            let s = store::influx::InfluxStore::new(influx.clone())?;
            // Wrong credentials or a missing database fail here; an unreachable server does not.
            s.preflight(config.retention.influx_days).await?;
            TelemetryStore::Influx(s)
        }
    })
}

/// Opens the maintenance engine where this configuration keeps it: single-node, the SQLite
/// file `[maintenance] db_path` (by default `{data_dir}/maintenance.db`); clustered, the
/// cluster's PostgreSQL database, so every instance sees the same tickets, registry, tokens
/// and outbox (a device's ticket stays one ticket when its partition moves, and any number
/// of instances dispatch the outbox, each message once).
pub fn open_maintenance(
    config: &Config,
    engine: maintenance::EngineConfig,
) -> Result<maintenance::Engine, maintenance::Error> {
    match (&config.cluster, &config.maintenance) {
        (Some(cluster), _) => maintenance::Engine::open_postgres(&cluster.postgres_url, engine),
        (None, Some(m)) => maintenance::Engine::open(&m.db_path, engine),
        (None, None) => {
            std::fs::create_dir_all(&config.data_dir).map_err(|e| {
                maintenance::Error::Config(format!(
                    "cannot create the data directory {}: {e}",
                    config.data_dir.display()
                ))
            })?;
            maintenance::Engine::open(config.data_dir.join("maintenance.db"), engine)
        }
    }
}

/// Where [`open_maintenance`] keeps the engine, for logs (no password).
fn maintenance_location(config: &Config) -> String {
    match (&config.cluster, &config.maintenance) {
        (Some(_), _) => "the cluster's PostgreSQL database".into(),
        (None, Some(m)) => m.db_path.display().to_string(),
        (None, None) => config.data_dir.join("maintenance.db").display().to_string(),
    }
}

/// Runs the gateway until `shutdown` resolves.
pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let metrics = Arc::new(Metrics::default());
    let state = StateDb::open(&config.data_dir.join("state.db"))?;
    let spool = store::spool::Spool::open(&config.data_dir.join("spool"))?;
    let writer = DurableWriter::new(open_store(&config).await?, spool, Arc::clone(&metrics));
    // Clustered: acknowledged means in the store, never only in this instance's spool.
    let writer = Arc::new(if config.cluster.is_some() {
        writer.write_through()
    } else {
        writer
    });
    let devices = state.load_devices().await?;
    metrics.sequence_gaps.store(
        devices.values().map(|d| d.gaps).sum(),
        std::sync::atomic::Ordering::Relaxed,
    );
    tracing::info!(store = %writer.describe(), data_dir = %config.data_dir.display(), spool_backlog = writer.backlog(), devices = devices.len(), "Gateway starting.");

    if config.mqtt.broker == BrokerMode::Embedded {
        let addr: SocketAddr = format!("{}:{}", config.mqtt.host, config.mqtt.port)
            .parse()
            .map_err(|_| broker::BrokerError::Bind {
                addr: ([127, 0, 0, 1], config.mqtt.port).into(),
                source: std::io::Error::other(
                    "mqtt.url host must be an IP address for the embedded broker",
                ),
            })?;
        broker::start(addr)?;
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let ops = ops::Ops::new(
        &config,
        Arc::clone(&metrics),
        Arc::clone(&writer),
        state.clone(),
    );
    ops.spawn(&mut tasks, shutdown_rx.clone());

    // The maintenance engine: its outbox dispatcher and ticker run beside ingest; its API is under /api.
    let maintenance = match &config.maintenance {
        None => None,
        Some(m) => {
            let engine = Arc::new(open_maintenance(&config, m.engine.clone())?);
            if config.cluster.is_some() {
                ops.set_shared_maintenance(Arc::clone(&engine));
            }
            let dispatcher = maintenance::Dispatcher::new(Arc::clone(&engine), m.delivery.clone())?;
            let until = |mut rx: watch::Receiver<bool>| async move {
                let _ = rx.changed().await;
            };
            tasks.spawn(dispatcher.run(m.dispatch_interval, until(shutdown_rx.clone())));
            tasks.spawn(maintenance::run_ticker(
                Arc::clone(&engine),
                m.tick_interval,
                until(shutdown_rx.clone()),
            ));
            tasks.spawn(service_kpi::run(
                Arc::clone(&engine),
                Arc::clone(&writer),
                m.tick_interval,
                shutdown_rx.clone(),
            ));
            tracing::info!(db = %maintenance_location(&config), "Maintenance engine started: tickets and reminders from device faults; API under /api.");
            #[cfg(feature = "demo")]
            if let (true, Some(http)) = (options.demo_fixtures > 0, config.http_listen) {
                demo::register(
                    &engine,
                    options.demo_registered.max(options.demo_fixtures),
                    http,
                    now_ms(),
                )?;
            }
            Some(engine)
        }
    };

    if let Some(addr) = config.http_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::HttpBind { addr, source })?;
        // Tokens live in the maintenance database (the engine's own, if it runs).
        let auth = match &maintenance {
            Some(engine) => Arc::clone(engine),
            None => Arc::new(http::open_token_store(&config)?),
        };
        let guard = Arc::new(maintenance::access::AuthGuard::default());
        let mut app = http::router(http::AppState {
            metrics: Arc::clone(&metrics),
            writer: Arc::clone(&writer),
            state: state.clone(),
            auth: Arc::clone(&auth),
            guard: Arc::clone(&guard),
            ops: Arc::clone(&ops),
        });
        if let Some(engine) = &maintenance {
            app = app.nest(
                "/api",
                maintenance::router(maintenance::AppState::with_guard(Arc::clone(engine), guard)),
            );
        }
        #[cfg(feature = "demo")]
        if options.demo_fixtures > 0 {
            app = app.merge(demo::push_sink());
        }
        let rx = shutdown_rx.clone();
        tracing::info!(%addr, hosts = ?config.http_allowed_hosts, "HTTP endpoint: /health/live (open); /health /health/ready /metrics /metrics.json /dead-letters /devices/{{id}} /fleet/online /fleet/instances (operator token); pages at / /board /fleet /home");
        tasks.spawn(http::serve(
            listener,
            app,
            config.http_allowed_hosts.clone(),
            config.http_max_connections,
            Arc::clone(&metrics),
            rx,
        ));
    }

    // Replay of the spool, with refused points going to the dead-letter store.
    {
        let writer = Arc::clone(&writer);
        let state = state.clone();
        let metrics = Arc::clone(&metrics);
        let rx = shutdown_rx.clone();
        tasks.spawn(async move {
            writer
                .replay(rx, |refused, points| {
                    events::InternalEvent::emit(
                        events::PointsRefused { count: refused.len(), replay: true },
                        &metrics,
                    );
                    let dead = refused_to_dead_letters(refused, points, now_ms());
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Err(e) = state.commit_batch(&dead, &[], now_ms()).await {
                            tracing::error!(error = %e, "Cannot store refused points as dead letters.");
                        }
                    });
                })
                .await;
        });
    }

    // Clustered mode: a session and pipeline per owned partition instead of the one below.
    if let Some(cluster) = config.cluster.clone() {
        let shared = Arc::new(cluster::session::Shared {
            partition_state: Arc::new(cluster::snapshots::PartitionStore::new(
                &cluster.postgres_url,
            )),
            brokers: cluster.brokers.clone(),
            config: config.clone(),
            metrics: Arc::clone(&metrics),
            writer: Arc::clone(&writer),
            committer: Arc::new(StateSink {
                state: state.clone(),
                maintenance,
                metrics: Arc::clone(&metrics),
            }),
        });
        let (ownership, ownership_rx) = watch::channel(cluster::Ownership::default());
        ops.set_cluster(&cluster.instance_id, ownership_rx);
        let coordinator = tokio::spawn(cluster::run(
            cluster,
            shared,
            ownership,
            shutdown_rx.clone(),
        ));
        shutdown.await;
        tracing::info!("Shutting down: handing every partition over.");
        let _ = shutdown_tx.send(true);
        let _ = coordinator.await;
        while tasks.join_next().await.is_some() {}
        tracing::info!("Gateway stopped.");
        return Ok(());
    }

    // The analytics stage, with the rule state saved before the last stop.
    let analyzer = if config.analytics.enabled {
        let mut analyzer = analysis::Analyzer::new(config.analytics.clone());
        // Cartridge ratings from the registry (re-read when it changes), for the forecasts.
        if let Some(engine) = &maintenance {
            let ratings = analysis::CartridgeRatings::new();
            analyzer.set_ratings(ratings.clone());
            tasks.spawn(ratings.run_refresher(
                Arc::clone(engine),
                Duration::from_secs(60),
                shutdown_rx.clone(),
            ));
        }
        let restored = analyzer.restore(state.load_analytics().await?);
        metrics
            .analytics_devices
            .store(restored as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            restored,
            "Analytics stage on: fault rules and filter forecasts per device."
        );
        Some(analyzer)
    } else {
        None
    };

    // Room for every PUBACK of a full in-flight window and more: acks never wait for space long.
    let (client, eventloop) =
        ingest::mqtt::connect(&config.mqtt, config.batch.max_messages * 4 + 10_000);
    let generation = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = BatchBuilder::new(config.limits, devices, analyzer, maintenance.is_some());
    // Remote commands go out through the same client (and its persistent session).
    if let Some(engine) = &maintenance {
        tasks.spawn(commands::run_dispatcher(
            Arc::clone(engine),
            client.clone(),
            Duration::from_secs(1),
            shutdown_rx.clone(),
        ));
    }
    let ports = Ports {
        acker: MqttAcknowledger {
            client: client.clone(),
            generation: Arc::clone(&generation),
        },
        writer: Arc::clone(&writer),
        committer: Arc::new(StateSink {
            state: state.clone(),
            maintenance,
            metrics: Arc::clone(&metrics),
        }),
    };
    let pipeline = Pipeline::new(
        config.batch,
        builder,
        ports,
        Arc::clone(&metrics),
        Duration::from_secs(config.analytics.snapshot_every_s.max(1)),
    );
    let pipeline_task = tokio::spawn(pipeline.run(rx, shutdown_rx.clone()));
    // The connection has a stop of its own: it keeps polling while the pipeline finishes the
    // batches in hand, so that their acknowledgements go out before it disconnects.
    let (mqtt_stop, mqtt_stop_rx) = watch::channel(false);
    let mqtt_task = tokio::spawn(ingest::mqtt::run(
        client,
        eventloop,
        tx,
        generation,
        Arc::clone(&metrics),
        mqtt_stop_rx,
        ingest::mqtt::Session::single_node(),
    ));

    #[cfg(feature = "demo")]
    if options.demo_fixtures > 0 {
        tasks.spawn(demo::run(
            config.mqtt.host.clone(),
            config.mqtt.port,
            options.demo_fixtures,
            shutdown_rx.clone(),
        ));
    }
    if options.report_every_s > 0 {
        tasks.spawn(report(
            Arc::clone(&metrics),
            Arc::clone(&writer),
            Duration::from_secs(options.report_every_s),
            shutdown_rx.clone(),
        ));
    }

    shutdown.await;
    tracing::info!("Shutting down: flushing the batch in hand.");
    let _ = shutdown_tx.send(true);
    let _ = pipeline_task.await;
    let _ = mqtt_stop.send(true);
    let _ = mqtt_task.await;
    while tasks.join_next().await.is_some() {}
    if let Err(e) = state.fold_sequence_journal().await {
        tracing::warn!(error = %e, "Cannot fold the sequence-state journal at stop; the next start folds it.");
    }
    tracing::info!("Gateway stopped.");
    Ok(())
}

/// Logs a one-line account of what arrived, every `every`.
async fn report(
    metrics: Arc<Metrics>,
    writer: Arc<DurableWriter>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = metrics.snapshot(0);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        let s = metrics.snapshot(writer.backlog());
        let rate = (s.received - last.received) as f64 / every.as_secs_f64();
        tracing::info!(
            "received {} ({rate:.0}/s) | accepted {} | points stored {} | rejected {} {:?} | acked {} | spool backlog {} | devices {} | seq gaps {} | findings {} | unclaimed findings {} from {} unregistered devices",
            s.received, s.accepted, s.points_stored, s.rejected, s.rejected_by_reason, s.acked, s.spool_backlog_batches, s.devices, s.sequence_gaps, s.findings, s.findings_unclaimed, s.devices_unclaimed
        );
        last = s;
    }
}
