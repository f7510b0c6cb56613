//! The demo fleet of the zero-setup run (`gateway --demo N`): the fleet simulator
//! (`fleet-sim`, running the real firmware logic in simulated households, with the
//! default fault mix) replays the last seven days of N fixtures at one simulated
//! hour per second into the gateway's broker, so a newcomer sees telemetry,
//! usage sessions and faults arrive within seconds. For tests and benchmarks use
//! `fixture-sim` directly.

use std::time::Duration;

use fleet_sim::faults::FaultMix;
use fleet_sim::publish::{publish_fleet, BrokerUrl, PublisherConfig, Speed};
use fleet_sim::{Fleet, FleetConfig};
use tokio::sync::watch;

/// Simulated seconds per real second.
const SPEED: f64 = 3600.0;

/// Publishes a simulated fleet of `count` fixtures to `host:port` until done or shut down.
pub async fn run(host: String, port: u16, count: usize, mut shutdown: watch::Receiver<bool>) {
    let cfg = FleetConfig {
        devices: u32::try_from(count).unwrap_or(u32::MAX),
        days: 7,
        mix: FaultMix::default_mix(),
        ..FleetConfig::default()
    };
    let mut fleet = match Fleet::new(cfg) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "Cannot build the demo fleet.");
            return;
        }
    };
    let mut publisher = PublisherConfig::new(BrokerUrl { host, port });
    publisher.connections = 1;
    publisher.client_prefix = "demo-fleet".into();
    tracing::info!(fixtures = count, "Demo fleet: replaying the last 7 days at one simulated hour per second.");
    let mut day = 0;
    tokio::select! {
        r = publish_fleet(&mut fleet, &publisher, Speed::Factor(SPEED), Duration::from_secs(10), |stats| {
            day += 1;
            tracing::info!(day, published = stats.sent, acknowledged_by_broker = stats.acked, "Demo fleet: simulated day done.");
        }) => match r {
            Ok(stats) => tracing::info!(published = stats.sent, "Demo fleet: the simulated week is over."),
            Err(e) => tracing::error!(error = %e, "Demo fleet stopped."),
        },
        _ = shutdown.changed() => {}
    }
}
