//! Ingest: from an MQTT PUBLISH to a durable point and, only then, a PUBACK.
//!
//! Plain data transformations, no I/O:
//! - [`crate::decode`]: topic + payload → points, or a rejection with a reason.
//! - [`crate::sequence`]: per-device, per-boot sets of seen sequence numbers: exact
//!   duplicates, gaps, late fills.
//! - [`batch`]: a batch of messages → points, dead letters, sequence state, analytics
//!   findings and maintenance actions.
//! - [`inflight`]: batches written concurrently leave strictly oldest first.
//!
//! I/O, at the edges:
//! - [`mqtt`]: the broker connection — persistent session, manual acks,
//!   reconnects with backoff — feeding an unbounded channel.
//! - [`ports`]: the three traits the driver needs (acknowledging, durable writing,
//!   committing state) and [`sinks`], their real implementations.
//! - [`pipeline`]: the thin async driver that runs the above over the ports.
//!
//! **Invariant:** a message is acknowledged only after its points are in the
//! telemetry store or the fsynced spool, or it is in the dead-letter store.

pub mod batch;
pub mod inflight;
pub mod mqtt;
pub mod pipeline;
pub mod ports;
pub mod sinks;

#[cfg(test)]
mod driver_tests;

/// A PUBLISH as handed from the connection to the pipeline.
#[derive(Debug)]
pub struct Inbound {
    /// The packet (needed again to acknowledge it).
    pub publish: rumqttc::Publish,
    /// Which connection it arrived on; acks for an older connection are dropped.
    pub generation: u64,
}
