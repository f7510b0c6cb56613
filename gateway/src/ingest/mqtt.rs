//! The broker connection: a persistent session (`clean_session = false`) with
//! manual acknowledgements, polled in one task that forwards every PUBLISH to
//! the pipeline through a bounded channel.
//!
//! Back-pressure: the broker sends at most its in-flight window of unacknowledged
//! QoS 1 messages (Mosquitto's `max_inflight_messages`), and we acknowledge only
//! after durable writes, so the channel to the pipeline holds at most about that
//! window. The channel is unbounded on purpose: this task must never block,
//! because rumqttc sends our PUBACKs only while its event loop is polled, and a
//! poll loop blocked on a full channel while the pipeline waits to queue PUBACKs
//! is a deadlock.
//! Each (re)connection bumps a generation number: an acknowledgement prepared for
//! a message of an older connection is dropped, since the broker will redeliver
//! that message on the new one (and the write is idempotent).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};

use super::Inbound;
use crate::backoff::Backoff;
use crate::config::MqttConfig;
use crate::events::{InternalEvent, MqttConnected, SubscriptionRefused};
use crate::metrics::Metrics;

/// Builds the client and its event loop from the configuration.
pub fn connect(cfg: &MqttConfig, channel_capacity: usize) -> (AsyncClient, EventLoop) {
    AsyncClient::new(options(cfg, channel_capacity), channel_capacity.max(64))
}

/// The connection options of `cfg`: persistent session, manual acks.
pub fn options(cfg: &MqttConfig, channel_capacity: usize) -> MqttOptions {
    let mut opts = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    opts.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(cfg.keep_alive)
        .set_max_packet_size(cfg.max_packet_bytes, 64 * 1024)
        .set_request_channel_capacity(channel_capacity.max(64));
    if let Some((user, pass)) = &cfg.credentials {
        opts.set_credentials(user, pass);
    }
    opts
}

/// What a connection subscribes to, how its topics read, and where it reconnects.
#[derive(Debug, Clone)]
pub struct Session {
    /// QoS 1 filters, subscribed when the broker has no session for the client id (and, for a
    /// partitioned session, on every connection).
    pub filters: Vec<String>,
    /// Topics arrive as `fixtures/{partition}/{device_id}/{channel}` (a clustered broker's
    /// mapping): the partition token is stripped before decoding. A topic not of that form is
    /// passed on as it came, and decoding rejects it (counted, dead-lettered).
    ///
    /// A partitioned session also subscribes again on every CONNACK, even when the broker
    /// says the session is present. nats-server 2.9.10 under load can time out creating a
    /// subscription's JetStream consumer ("Unable to add JetStream consumer ... timeout for
    /// request type CC"): the SUBACK says failure and the session is stored without the
    /// subscription, so every later CONNACK says `session_present` and nothing is delivered.
    /// A SUBSCRIBE to a subscription the session still has keeps its consumer and backlog
    /// (`processJSConsumer` returns early for an existing consumer). Refused subscriptions
    /// are retried in every mode (see `run`).
    pub partitioned: bool,
    /// Brokers to try in turn after a connection error (empty: always the one configured).
    pub brokers: Vec<MqttOptions>,
    /// Set once the broker has confirmed the subscription (a SUBACK without failure; in
    /// single-node mode also a CONNACK with the session present): from then on the broker
    /// keeps what is published to the filters for this session, connected or not.
    pub subscribed: Arc<AtomicBool>,
}

impl Session {
    /// The single-node session: the gateway's filters, plain topics, one broker.
    pub fn single_node() -> Session {
        Session {
            filters: protocol::topic::GATEWAY_FILTERS
                .iter()
                .chain([&protocol::topic::GATEWAY_RESULT_FILTER])
                .map(|f| (*f).to_owned())
                .collect(),
            partitioned: false,
            brokers: Vec::new(),
            subscribed: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Queues a QoS 1 SUBSCRIBE to `filters` from a task of its own: the poll loop must never
/// wait on the request channel, which the pipeline's acknowledgements can fill, and which
/// only the poll loop drains (awaiting it there deadlocks a connection that resumes with a
/// backlog). A retry still waiting when the connection is shut down is dropped.
fn subscribe(
    client: &AsyncClient,
    filters: &[String],
    after: Duration,
    shutdown: &watch::Receiver<bool>,
) {
    let (client, mut shutdown) = (client.clone(), shutdown.clone());
    let filters: Vec<SubscribeFilter> = filters
        .iter()
        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
        .collect();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(after) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = client.subscribe_many(filters).await {
            if !*shutdown.borrow() {
                tracing::error!(error = %e, "Cannot queue the subscription; the connection's event loop has stopped.");
            }
        }
    });
}

/// Polls the connection until `shutdown` flips, forwarding publishes to `tx`.
pub async fn run(
    client: AsyncClient,
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Inbound>,
    generation: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    session: Session,
) {
    let mut next_broker = 0usize;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    // A refused subscription is retried, 1 s after the first refusal, up to a minute apart.
    let mut subscribe_backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        // The event loop is polled first (most polls return a publish already read), so the
        // stop is looked at here too: seen at once even while a backlog keeps it busy.
        if shutdown.has_changed().unwrap_or(true) {
            break;
        }
        let event = tokio::select! {
            biased;
            e = eventloop.poll() => e,
            _ = shutdown.changed() => break,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(mut publish))) => {
                metrics.received.fetch_add(1, Ordering::Relaxed);
                if session.partitioned {
                    if let Some((_, plain)) =
                        protocol::topic::Topic::strip_partition(&publish.topic)
                    {
                        publish.topic = plain.as_str().to_owned();
                    }
                }
                let inbound = Inbound {
                    publish,
                    generation: generation.load(Ordering::SeqCst),
                };
                if tx.send(inbound).is_err() {
                    break; // The pipeline has stopped.
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                generation.fetch_add(1, Ordering::SeqCst);
                backoff.reset();
                MqttConnected {
                    session_present: ack.session_present,
                }
                .emit(&metrics);
                if !ack.session_present || session.partitioned {
                    subscribe(&client, &session.filters, Duration::ZERO, &shutdown);
                } else {
                    session.subscribed.store(true, Ordering::SeqCst);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    let retry_in = subscribe_backoff.next_delay();
                    SubscriptionRefused {
                        filters: &session.filters,
                        retry_in,
                    }
                    .emit(&metrics);
                    subscribe(&client, &session.filters, retry_in, &shutdown);
                } else {
                    subscribe_backoff.reset();
                    session.subscribed.store(true, Ordering::SeqCst);
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics.mqtt_errors.fetch_add(1, Ordering::Relaxed);
                let delay = backoff.next_delay();
                match &e {
                    ConnectionError::ConnectionRefused(code) => {
                        tracing::error!(?code, "The MQTT broker refused the connection; check mqtt.username/password and the broker's ACL.");
                    }
                    _ => {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost; reconnecting.")
                    }
                }
                if !session.brokers.is_empty() {
                    next_broker = (next_broker + 1) % session.brokers.len();
                    eventloop.mqtt_options = session.brokers[next_broker].clone();
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    let _ = client.try_disconnect();
    // Drive the event loop until the DISCONNECT is out (acknowledgements queued before it
    // go out first), for at most a second.
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(event)) = tokio::time::timeout_at(until, eventloop.poll()).await {
        if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
            break;
        }
    }
}
