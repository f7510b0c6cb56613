//! Live mode: after their history, the simulated devices stay connected and answer the
//! gateway's commands, as real fixtures do.
//!
//! Each device gets its own MQTT connection (client id = device id, optional credentials
//! per device), subscribes to its own `fixtures/{id}/cmd` with QoS 1, and runs on the
//! wall clock: every `step` it advances to now (telemetry, a leak's events, a cleaning
//! programme), and a command is handed to the firmware ([`SimDevice::command`]), whose
//! answer goes out on `fixtures/{id}/result`. A payload that is not a contract command is
//! counted and logged, never fatal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::message::Command;
use protocol::topic::{Channel, Topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::device::{OutMessage, SimDevice};
use crate::fleet::now_ms;
use crate::publish::BrokerUrl;

/// How the live devices connect.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// The broker.
    pub broker: BrokerUrl,
    /// How often each device advances to the wall clock.
    pub step: Duration,
    /// Broker password per device id (the user name is the device id); none: anonymous.
    pub passwords: HashMap<String, String>,
}

impl LiveConfig {
    /// Anonymous connections to `broker`, advancing every second.
    pub fn new(broker: BrokerUrl) -> LiveConfig {
        LiveConfig {
            broker,
            step: Duration::from_secs(1),
            passwords: HashMap::new(),
        }
    }
}

/// What the live devices did, shared while they run.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Commands received and handed to the firmware.
    pub commands: AtomicU64,
    /// Payloads on a `cmd` topic that are not contract commands.
    pub bad_commands: AtomicU64,
    /// Messages published (telemetry, events, status, results).
    pub published: AtomicU64,
    /// Publishes that could not be queued (client channel full or closed).
    pub publish_errors: AtomicU64,
}

/// The live devices, shared with the caller so a test can look at them (valve, diagnostics).
pub type SharedDevice = Arc<Mutex<SimDevice>>;

/// Runs `devices` live until `shutdown` flips; returns when every connection is closed.
pub async fn serve(
    devices: Vec<SharedDevice>,
    cfg: LiveConfig,
    stats: Arc<LiveStats>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    for d in devices {
        tasks.spawn(run_device(
            d,
            cfg.clone(),
            Arc::clone(&stats),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

fn lock(d: &SharedDevice) -> std::sync::MutexGuard<'_, SimDevice> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run_device(
    device: SharedDevice,
    cfg: LiveConfig,
    stats: Arc<LiveStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let id = {
        let mut d = lock(&device);
        d.go_live();
        d.id.clone()
    };
    let cmd_topic = Topic::format(&id, Channel::Cmd).to_string();
    let mut opts = MqttOptions::new(id.clone(), cfg.broker.host.clone(), cfg.broker.port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true);
    if let Some(p) = cfg.passwords.get(&id) {
        opts.set_credentials(id.clone(), p.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1_000);
    let mut step = tokio::time::interval(cfg.step);
    step.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut out = Vec::new();
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = step.tick() => lock(&device).advance_to(now_ms(), &mut out),
            e = eventloop.poll() => match e {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Err(e) = client.try_subscribe(cmd_topic.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(device = %id, error = %e, "Cannot subscribe to the command topic.");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == cmd_topic => {
                    match serde_json::from_slice::<Command>(&p.payload) {
                        Ok(cmd) => {
                            stats.commands.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(device = %id, cmd_id = cmd.cmd_id, command = cmd.command.as_str(), "Command received.");
                            lock(&device).command(&cmd, now_ms(), &mut out);
                        }
                        Err(e) => {
                            stats.bad_commands.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(device = %id, error = %e, bytes = p.payload.len(), "Not a contract command; ignored.");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(device = %id, error = %e, "Live device connection lost; reconnecting.");
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            },
        }
        publish(&client, out, &stats);
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

fn publish(client: &AsyncClient, out: Vec<OutMessage>, stats: &LiveStats) {
    for m in out {
        // Never blocks the poll loop: the request channel is deep, and a full one is counted.
        match client.try_publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload) {
            Ok(()) => stats.published.fetch_add(1, Ordering::Relaxed),
            Err(_) => stats.publish_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}
