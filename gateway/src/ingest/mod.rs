//! Ingest: from an MQTT PUBLISH to a durable point and, only then, a PUBACK.
//!
//! - [`mqtt`]: the broker connection — persistent session, manual acks,
//!   reconnects with backoff — feeding a bounded channel.
//! - [`decode`]: topic + payload → points, or a rejection with a reason.
//! - [`sequence`]: per-device `(boot_id, seq)` gap and duplicate tracking.
//! - [`pipeline`]: batches messages by size and time, makes each batch durable,
//!   commits dead letters and sequence state, then acknowledges in arrival order.
//!
//! **Invariant:** a message is acknowledged only after its points are in the
//! telemetry store or the fsynced spool, or it is in the dead-letter store.

pub mod decode;
pub mod mqtt;
pub mod pipeline;
pub mod sequence;

/// A PUBLISH as handed from the connection to the pipeline.
#[derive(Debug)]
pub struct Inbound {
    /// The packet (needed again to acknowledge it).
    pub publish: rumqttc::Publish,
    /// Which connection it arrived on; acks for an older connection are dropped.
    pub generation: u64,
}
