//! Fleet simulator for the smart-fixture system.
//!
//! Runs the real firmware logic ([`firmware::Node`]) for N virtual fixtures living
//! in simulated households ([`household`]), with simulated sensors and water physics
//! ([`device`]) and injected faults ([`faults`]), and produces the contract-v1
//! message stream deterministically from a seed ([`fleet`]). [`publish`] sends the
//! stream to any MQTT broker with QoS 1 and counts the PUBACKs. [`live`] keeps the devices
//! running after their history, each on its own MQTT connection, answering the commands
//! the gateway sends on `fixtures/{id}/cmd` through the firmware.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use simulator::{Fleet, FleetConfig, publish::{Publisher, PublisherConfig, Pacer, Speed}};
//! let mut fleet = Fleet::new(FleetConfig { devices: 30, days: 7, seed: 7, ..FleetConfig::default() })?;
//! let mut publisher = Publisher::connect(&PublisherConfig::new("mqtt://127.0.0.1:1883".parse()?)).await?;
//! let pacer = Pacer::new(Speed::Max, fleet.start_ms());
//! while let Some(batch) = fleet.next_batch() {
//!     for m in &batch {
//!         pacer.wait(m.at_ms).await;
//!         publisher.publish(m).await?;
//!     }
//! }
//! let stats = publisher.finish(std::time::Duration::from_secs(30)).await?;
//! assert_eq!(stats.acked, stats.sent);
//! # Ok(()) }
//! ```
//!
//! Determinism: the same [`FleetConfig`] (seed, size, days, faults **and** `end_ms`)
//! gives byte-identical messages and truth. By default `end_ms` is the present, so
//! two runs with the same seed differ only by a shift of every timestamp.

pub mod device;
pub mod faults;
pub mod fleet;
pub mod household;
pub mod live;
pub mod publish;

pub use device::OutMessage;
pub use faults::{FaultKind, FaultMix, Scenario, Truth};
pub use fleet::{Fleet, FleetConfig, FleetError};
