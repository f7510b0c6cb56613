//! The three kinds of I/O the ingest driver ([`super::pipeline`]) does, as traits:
//! acknowledging a message to the broker, making points durable, and committing the
//! gateway's state. The real implementations are in [`super::sinks`] (the rumqttc
//! client, [`crate::store::durable::DurableWriter`], `state.db` and the maintenance
//! engine); the driver's unit tests use fakes.

use std::future::Future;

use super::batch::MaintenanceAction;
use crate::sequence::DeviceSeq;
use crate::state::{DeadLetter, StateError};
use crate::store::{Point, RejectedPoint};

/// An acknowledgement could not be queued (the broker will redeliver the message).
#[derive(Debug, thiserror::Error)]
#[error("cannot queue an acknowledgement: {0}")]
pub struct AckError(pub String);

/// Sends PUBACKs.
pub trait Acknowledger: Send + 'static {
    /// The current connection generation; a message of an older one is not acknowledged.
    fn generation(&self) -> u64;
    /// Acknowledges one message.
    fn ack(&self, publish: &rumqttc::Publish) -> impl Future<Output = Result<(), AckError>> + Send;
}

/// Makes points durable.
pub trait DurableWriter: Send + Sync + 'static {
    /// Returns once `points` are in the telemetry store or the fsynced spool (it never
    /// gives up), with the points the store refused for good.
    fn make_durable(&self, points: &[Point]) -> impl Future<Output = Vec<RejectedPoint>> + Send;
}

/// Commits the gateway's state: `state.db` and the maintenance engine.
pub trait StateCommitter: Send + Sync + 'static {
    /// Commits a batch's dead letters and sequence state, in one transaction.
    fn commit(
        &self,
        dead: &[DeadLetter],
        devices: &[(String, DeviceSeq)],
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
    /// Applies a batch's maintenance actions; returns those that failed on the
    /// engine's database and are worth another try (the rest applied, or were
    /// refused for good and logged).
    fn apply_maintenance(
        &self,
        actions: Vec<MaintenanceAction>,
    ) -> impl Future<Output = Vec<MaintenanceAction>> + Send;
    /// Saves the analytics state of some devices (upsert).
    fn save_analytics(
        &self,
        states: Vec<(String, String)>,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
}
