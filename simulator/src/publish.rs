//! Publishing a message stream to an MQTT broker with QoS 1, paced to a speed-up
//! factor, and counting PUBACKs so the caller knows the broker accepted everything.
//!
//! Devices share a few connections (not one each): device `i` always goes through
//! connection `i % connections`, so each device's messages keep their order. Each
//! connection has a bounded request channel (1000) and at most 100 publishes in
//! flight; `AsyncClient::publish` awaits when the channel is full, which is the
//! back-pressure. A task per connection polls its event loop and counts
//! `Event::Incoming(Packet::PubAck(_))`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::device::OutMessage;

/// Where the broker is: `mqtt://host:port` (or `tcp://`, or bare `host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (default 1883).
    pub port: u16,
}

impl std::str::FromStr for BrokerUrl {
    type Err = PublishError;
    fn from_str(s: &str) -> Result<Self, PublishError> {
        let rest = s
            .strip_prefix("mqtt://")
            .or_else(|| s.strip_prefix("tcp://"))
            .unwrap_or(s);
        if rest.contains("://") || rest.is_empty() {
            return Err(PublishError::BadUrl(s.to_string()));
        }
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse().map_err(|_| PublishError::BadUrl(s.to_string()))?,
            ),
            None => (rest, 1883),
        };
        if host.is_empty() {
            return Err(PublishError::BadUrl(s.to_string()));
        }
        Ok(BrokerUrl {
            host: host.to_string(),
            port,
        })
    }
}

/// Publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker URL is not `mqtt://host:port`.
    #[error("broker URL `{0}` is not mqtt://host[:port]")]
    BadUrl(String),
    /// No CONNACK in time.
    #[error("no CONNACK from {0} within {1:?}")]
    ConnectTimeout(String, Duration),
    /// The connection failed for good.
    #[error("MQTT connection {0} failed: {1}")]
    Connection(usize, String),
    /// The client's request channel is closed (event loop gone).
    #[error("MQTT client closed: {0}")]
    Client(#[from] rumqttc::ClientError),
    /// Not every publish was acknowledged in time.
    #[error("only {acked} of {sent} publishes were acknowledged within {waited:?}")]
    AckTimeout {
        /// Publishes sent.
        sent: u64,
        /// PUBACKs received.
        acked: u64,
        /// How long we waited at the end.
        waited: Duration,
    },
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The broker.
    pub broker: BrokerUrl,
    /// Connections to share among devices.
    pub connections: usize,
    /// Publishes in flight per connection.
    pub inflight: u16,
    /// Request channel capacity per connection.
    pub channel_capacity: usize,
    /// Client-id prefix; a per-run suffix makes ids unique.
    pub client_prefix: String,
}

impl PublisherConfig {
    /// Defaults for `broker`: 2 connections, 100 in flight, channel of 1000.
    pub fn new(broker: BrokerUrl) -> Self {
        PublisherConfig {
            broker,
            connections: 2,
            inflight: 100,
            channel_capacity: 1000,
            client_prefix: "simulator".into(),
        }
    }
}

/// What a publisher did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishStats {
    /// Publishes handed to the clients.
    pub sent: u64,
    /// PUBACKs received.
    pub acked: u64,
}

/// Connected MQTT clients plus their event-loop tasks.
#[derive(Debug)]
pub struct Publisher {
    clients: Vec<AsyncClient>,
    tasks: Vec<JoinHandle<Result<(), PublishError>>>,
    acks: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    sent: u64,
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{:x}", std::process::id(), nanos & 0xFFFF_FFFF_FFFF)
}

impl Publisher {
    /// Opens `cfg.connections` connections and waits for each CONNACK (10 s).
    pub async fn connect(cfg: &PublisherConfig) -> Result<Publisher, PublishError> {
        let acks = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = watch::channel(false);
        let suffix = unique_suffix();
        let mut clients = Vec::new();
        let mut tasks = Vec::new();
        let mut ready = Vec::new();
        for k in 0..cfg.connections.max(1) {
            let mut opts = MqttOptions::new(
                format!("{}-{suffix}-{k}", cfg.client_prefix),
                cfg.broker.host.clone(),
                cfg.broker.port,
            );
            opts.set_keep_alive(Duration::from_secs(30))
                .set_clean_session(true)
                .set_inflight(cfg.inflight)
                .set_max_packet_size(64 * 1024, 64 * 1024);
            let (client, mut el) = AsyncClient::new(opts, cfg.channel_capacity);
            let (ready_tx, ready_rx) = watch::channel(false);
            let acks = acks.clone();
            let mut stop_rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut failures = 0u32;
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            failures = 0;
                            let _ = ready_tx.send(true);
                        }
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                        Ok(_) => {}
                        Err(e) => {
                            if *stop_rx.borrow_and_update() {
                                return Ok(());
                            }
                            failures += 1;
                            tracing::warn!(connection = k, error = %e, failures, "MQTT connection error; retrying");
                            if failures > 5 {
                                return Err(PublishError::Connection(k, e.to_string()));
                            }
                            tokio::time::sleep(Duration::from_millis(100 * u64::from(failures))).await;
                        }
                    }
                }
            }));
            clients.push(client);
            ready.push(ready_rx);
        }
        let timeout = Duration::from_secs(10);
        for mut r in ready {
            let ok = tokio::time::timeout(timeout, r.wait_for(|v| *v)).await;
            if !matches!(ok, Ok(Ok(_))) {
                let _ = stop.send(true);
                return Err(PublishError::ConnectTimeout(
                    format!("{}:{}", cfg.broker.host, cfg.broker.port),
                    timeout,
                ));
            }
        }
        Ok(Publisher {
            clients,
            tasks,
            acks,
            stop,
            sent: 0,
        })
    }

    /// Publishes one message with QoS 1 on its device's connection (awaits when the channel is full).
    pub async fn publish(&mut self, m: &OutMessage) -> Result<(), PublishError> {
        let c = &self.clients[m.device as usize % self.clients.len()];
        c.publish(
            m.topic.clone(),
            QoS::AtLeastOnce,
            m.retain,
            m.payload.clone(),
        )
        .await?;
        self.sent += 1;
        Ok(())
    }

    /// Current counts.
    pub fn stats(&self) -> PublishStats {
        PublishStats {
            sent: self.sent,
            acked: self.acks.load(Ordering::Relaxed),
        }
    }

    /// Waits until every publish is acknowledged (or `timeout`), then disconnects.
    pub async fn finish(self, timeout: Duration) -> Result<PublishStats, PublishError> {
        let started = Instant::now();
        loop {
            let stats = self.stats();
            if stats.acked >= stats.sent {
                break;
            }
            if let Some(i) = self.tasks.iter().position(|t| t.is_finished()) {
                let _ = i;
                break;
            }
            if started.elapsed() > timeout {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = self.stats();
        let _ = self.stop.send(true);
        for c in &self.clients {
            let _ = c.try_disconnect();
        }
        for t in self.tasks {
            match tokio::time::timeout(Duration::from_secs(2), t).await {
                Ok(Ok(Err(e))) if stats.acked < stats.sent => return Err(e),
                _ => {}
            }
        }
        if stats.acked < stats.sent {
            return Err(PublishError::AckTimeout {
                sent: stats.sent,
                acked: stats.acked,
                waited: started.elapsed(),
            });
        }
        Ok(stats)
    }
}

/// How fast simulated time runs against the wall clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the broker takes it.
    Max,
    /// `n` simulated seconds per real second.
    Factor(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        let f: f64 = s
            .trim_end_matches('x')
            .parse()
            .map_err(|_| format!("speed `{s}` is not `max` or a number"))?;
        if f.is_finite() && f > 0.0 {
            Ok(Speed::Factor(f))
        } else {
            Err(format!("speed must be positive, got {s}"))
        }
    }
}

/// Paces publishing: message at simulated `at_ms` goes out at `wall_start + (at_ms − sim_start) / factor`.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    speed: Speed,
    sim_start: i64,
    wall_start: tokio::time::Instant,
}

impl Pacer {
    /// Starts the clock now.
    pub fn new(speed: Speed, sim_start: i64) -> Self {
        Pacer {
            speed,
            sim_start,
            wall_start: tokio::time::Instant::now(),
        }
    }

    /// Waits until `at_ms` is due.
    pub async fn wait(&self, at_ms: i64) {
        if let Speed::Factor(f) = self.speed {
            let due =
                Duration::from_secs_f64(((at_ms - self.sim_start).max(0) as f64 / 1000.0) / f);
            tokio::time::sleep_until(self.wall_start + due).await;
        }
    }
}

/// Runs the whole `fleet` into the broker of `cfg` at `speed`: publishes every message
/// with QoS 1 on its device's topic, waits for every PUBACK (up to `ack_timeout` after
/// the last publish) and returns the counts. `on_day` is called after each simulated day.
pub async fn publish_fleet(
    fleet: &mut crate::Fleet,
    cfg: &PublisherConfig,
    speed: Speed,
    ack_timeout: Duration,
    mut on_day: impl FnMut(PublishStats),
) -> Result<PublishStats, PublishError> {
    let mut publisher = Publisher::connect(cfg).await?;
    let pacer = Pacer::new(speed, fleet.start_ms());
    while let Some(batch) = fleet.next_batch() {
        for m in &batch {
            pacer.wait(m.at_ms).await;
            publisher.publish(m).await?;
        }
        on_day(publisher.stats());
    }
    publisher.finish(ack_timeout).await
}
