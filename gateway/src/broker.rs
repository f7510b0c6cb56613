//! The embedded MQTT broker (rumqttd), started in-process when no external
//! broker is configured, so `gateway` runs with zero set-up.
//!
//! It is the zero-setup default only: rumqttd keeps nothing on disk (a restart
//! loses queued messages), has no ACLs, and speaks MQTT 3.1.1 here (no `$share`
//! subscriptions: its router has been seen to panic on an MQTT 5 shared
//! subscription with a persistent session). Every durability test runs on Mosquitto.

use std::net::SocketAddr;

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The generated configuration was not accepted by rumqttd.
    #[error("embedded broker configuration rejected: {0}")]
    Config(#[from] toml::de::Error),
    /// The listen address is taken.
    #[error("cannot listen on {addr} for the embedded MQTT broker: {source}. Is another broker (or gateway) running? Set mqtt.url to another port, or mqtt.broker = \"external\".")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
}

/// The rumqttd configuration: one MQTT 3.1.1 listener; an in-flight window of
/// 10 000 so the gateway's batches in flight (3 × 2 000 by default) fit; payloads up to 32 MiB so
/// oversized messages reach the gateway's validation and its dead-letter store.
fn config_toml(listen: SocketAddr) -> String {
    format!(
        r#"
id = 0
[router]
max_connections = 10010
max_outgoing_packet_count = 10000
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "{listen}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 33554432
max_inflight_count = 10000
dynamic_filters = true
"#
    )
}

/// Starts rumqttd on `listen` in a background thread.
pub fn start(listen: SocketAddr) -> Result<(), BrokerError> {
    // rumqttd exits the process on a bind failure, so check the port first.
    drop(
        std::net::TcpListener::bind(listen).map_err(|source| BrokerError::Bind {
            addr: listen,
            source,
        })?,
    );
    let config: rumqttd::Config = toml::from_str(&config_toml(listen))?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "The embedded MQTT broker stopped.");
            }
        })
        .map_err(|source| BrokerError::Bind {
            addr: listen,
            source,
        })?;
    tracing::info!(%listen, "Embedded MQTT broker (rumqttd, MQTT 3.1.1, in memory only) started.");
    Ok(())
}
