//! The real implementations of the driver's ports ([`super::ports`]): the rumqttc
//! client acknowledges, [`crate::store::durable::DurableWriter`] makes points durable,
//! and [`StateSink`] commits to `state.db` and the maintenance engine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rumqttc::AsyncClient;

use super::batch::MaintenanceAction;
use super::ports::{AckError, Acknowledger, DurableWriter, StateCommitter};
use crate::events::{FindingUnclaimed, InternalEvent, MaintenanceFailed};
use crate::metrics::Metrics;
use crate::sequence::DeviceSeq;
use crate::state::{DeadLetter, StateDb, StateError};
use crate::store::{Point, RejectedPoint};

/// Acknowledges through the rumqttc client (its event loop sends the PUBACKs).
pub struct MqttAcknowledger {
    /// The client.
    pub client: AsyncClient,
    /// The connection generation, bumped by [`super::mqtt::run`] at each CONNACK.
    pub generation: Arc<AtomicU64>,
}

impl Acknowledger for MqttAcknowledger {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    async fn ack(&self, publish: &rumqttc::Publish) -> Result<(), AckError> {
        self.client
            .ack(publish)
            .await
            .map_err(|e| AckError(e.to_string()))
    }
}

impl DurableWriter for crate::store::durable::DurableWriter {
    async fn make_durable(&self, points: &[Point]) -> Vec<RejectedPoint> {
        self.persist(points).await
    }
}

/// Commits to the state database and the maintenance engine (if configured).
pub struct StateSink {
    /// The state database.
    pub state: StateDb,
    /// The maintenance engine.
    pub maintenance: Option<Arc<maintenance::Engine>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl StateCommitter for StateSink {
    async fn commit(
        &self,
        dead: &[DeadLetter],
        devices: &[(String, DeviceSeq)],
        now_ms: i64,
    ) -> Result<(), StateError> {
        self.state.commit_batch(dead, devices, now_ms).await
    }

    async fn apply_maintenance(&self, actions: Vec<MaintenanceAction>) -> Vec<MaintenanceAction> {
        let Some(engine) = &self.maintenance else {
            return Vec::new();
        };
        if actions.is_empty() {
            return Vec::new();
        }
        let (engine, metrics) = (Arc::clone(engine), Arc::clone(&self.metrics));
        match tokio::task::spawn_blocking(move || {
            apply_maintenance(&engine, actions, crate::clock::now_ms(), &metrics)
        })
        .await
        {
            Ok(failed) => failed,
            Err(e) => {
                tracing::error!(error = %e, "The maintenance task failed.");
                Vec::new()
            }
        }
    }

    async fn save_analytics(&self, states: Vec<(String, String)>) -> Result<(), StateError> {
        self.state.save_analytics(states).await
    }
}

/// Applies a batch's maintenance actions (blocking SQLite work). A finding of an
/// unregistered device goes to the engine's unclaimed-devices queue (counted here); an
/// action the engine refuses for good is counted and logged. Returns the actions that
/// failed on the engine's database (busy, I/O): they are worth another try, and the
/// batch is not acknowledged until they succeed.
pub fn apply_maintenance(
    engine: &maintenance::Engine,
    actions: Vec<MaintenanceAction>,
    now: i64,
    metrics: &Metrics,
) -> Vec<MaintenanceAction> {
    let mut retry = Vec::new();
    for a in actions {
        let result = match &a {
            MaintenanceAction::Fault {
                device_id,
                fault,
                ts_ms,
            } => engine
                .ingest(
                    &maintenance::Finding::from_fault(device_id, fault, *ts_ms),
                    now,
                )
                .map(|o| count_unclaimed(device_id, &o, metrics)),
            MaintenanceAction::Finding(finding) => engine
                .ingest(finding, now)
                .map(|o| count_unclaimed(&finding.device_id, &o, metrics)),
            MaintenanceAction::CommandResult { device_id, result } => {
                engine.command_result(device_id, result, now).map(|_| ())
            }
            MaintenanceAction::CartridgeReplaced {
                device_id,
                slot,
                replacements,
            } => engine
                .cartridge_replaced(device_id, *slot, *replacements, now)
                .map(|_| ()),
        };
        match result {
            Ok(()) => {
                metrics.maintenance_applied.fetch_add(1, Ordering::Relaxed);
            }
            Err(maintenance::Error::NotFound { .. }) => {
                tracing::debug!(
                    ?a,
                    "Device not registered with the maintenance engine; skipped."
                );
            }
            Err(e @ maintenance::Error::Store(_)) => {
                MaintenanceFailed {
                    error: &e,
                    action: &a,
                    will_retry: true,
                }
                .emit(metrics);
                retry.push(a);
            }
            Err(e) => MaintenanceFailed {
                error: &e,
                action: &a,
                will_retry: false,
            }
            .emit(metrics),
        }
    }
    retry
}

/// Counts a finding that went to the engine's unclaimed-devices queue (device not registered).
fn count_unclaimed(device_id: &str, o: &maintenance::Outcome, metrics: &Metrics) {
    if o.unclaimed {
        FindingUnclaimed {
            device_id,
            new_device: o.new_unclaimed_device,
        }
        .emit(metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::engine_with_a_toilet;
    use maintenance::{FindingKind, FindingState};
    use protocol::message::Severity;

    fn finding(device: &str, kind: FindingKind) -> MaintenanceAction {
        MaintenanceAction::Finding(maintenance::Finding {
            device_id: device.into(),
            kind,
            severity: Severity::Critical,
            evidence: serde_json::Value::Null,
            began_ts_ms: 1,
            state: FindingState::Active,
        })
    }

    #[test]
    fn database_failures_come_back_for_a_retry_and_unregistered_devices_are_queued_not_dropped() {
        let engine = engine_with_a_toilet();
        let metrics = Metrics::default();
        // Applied, and an unregistered device's leak queued as unclaimed (with a ticket): nothing to retry.
        assert!(apply_maintenance(
            &engine,
            vec![
                finding("toilet-1", FindingKind::Leak),
                finding("toilet-404", FindingKind::Leak)
            ],
            10,
            &metrics
        )
        .is_empty());
        assert_eq!(metrics.maintenance_applied.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.findings_unclaimed.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.devices_unclaimed.load(Ordering::Relaxed), 1);
        let queue = engine
            .read(|c| maintenance::unclaimed::queue(c, 10))
            .unwrap();
        assert_eq!(queue.devices[0].device_id, "toilet-404");
        assert!(queue.devices[0].ticket_id.is_some(), "{queue:?}");
        // The engine's database breaks: the action comes back, so the batch is not acknowledged yet.
        engine
            .write(|tx| Ok(tx.execute_batch("CREATE TRIGGER broken BEFORE INSERT ON tickets BEGIN SELECT RAISE(ABORT, 'disk failure'); END;")?))
            .unwrap();
        let retry = apply_maintenance(
            &engine,
            vec![finding("toilet-1", FindingKind::HeaterFault)],
            20,
            &metrics,
        );
        assert!(
            matches!(retry.as_slice(), [MaintenanceAction::Finding(f)] if f.device_id == "toilet-1"),
            "{retry:?}"
        );
        assert_eq!(metrics.maintenance_errors.load(Ordering::Relaxed), 1);
    }
}
