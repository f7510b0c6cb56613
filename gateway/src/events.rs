//! Named internal events, after Vector's `internal_events`: each thing worth counting is
//! a type, and emitting it does both halves at once — the counter in [`Metrics`] and the
//! log line at its level with structured fields — so a count never goes without its
//! log line, nor a log line without its count, and a new event is one type here.
//!
//! Counters that only count (messages received, acknowledged) stay plain increments in
//! the hot path; everything that is dropped, refused, retried or failed is an event.

use std::sync::atomic::Ordering::Relaxed;

use crate::metrics::Metrics;

/// Something that happened inside the gateway: counted and logged by [`emit`](InternalEvent::emit).
pub trait InternalEvent {
    /// Counts the event in `metrics` and logs it.
    fn emit(self, metrics: &Metrics);
}

/// The telemetry store refused points for good; they go to the dead-letter store.
pub struct PointsRefused {
    /// How many points.
    pub count: usize,
    /// Whether they came from the spool's replay rather than a live batch.
    pub replay: bool,
}

impl InternalEvent for PointsRefused {
    fn emit(self, metrics: &Metrics) {
        metrics.points_refused.fetch_add(self.count as u64, Relaxed);
        tracing::warn!(
            count = self.count,
            replay = self.replay,
            "The telemetry store refused points; they are in the dead-letter store."
        );
    }
}

/// One attempt to write a batch to the telemetry store failed.
pub struct StoreWriteFailed<'a> {
    /// The store's error (`store::WriteError`; taken as `Display` so this module does not
    /// depend on the store that emits it).
    pub error: &'a dyn std::fmt::Display,
    /// The attempt that failed (1-based) for a live batch; `None` during replay.
    pub attempt: Option<u32>,
}

impl InternalEvent for StoreWriteFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.store_errors.fetch_add(1, Relaxed);
        match self.attempt {
            Some(attempt) => tracing::warn!(
                attempt,
                error = %self.error,
                "Telemetry store write failed; spooling the batch."
            ),
            None => tracing::debug!(
                error = %self.error,
                "Replay waiting for the telemetry store."
            ),
        }
    }
}

/// A batch went to the spool because the telemetry store could not take it.
pub struct BatchSpooled<'a> {
    /// The spool file.
    pub path: &'a std::path::Path,
    /// Points in it.
    pub points: usize,
}

impl InternalEvent for BatchSpooled<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.spooled_batches.fetch_add(1, Relaxed);
        tracing::debug!(path = %self.path.display(), points = self.points, "Batch spooled.");
    }
}

/// The maintenance engine failed to apply a device report.
pub struct MaintenanceFailed<'a, A: std::fmt::Debug> {
    /// The engine's error.
    pub error: &'a maintenance::Error,
    /// The report.
    pub action: &'a A,
    /// Whether it is retried before the batch is acknowledged (database failures are).
    pub will_retry: bool,
}

impl<A: std::fmt::Debug> InternalEvent for MaintenanceFailed<'_, A> {
    fn emit(self, metrics: &Metrics) {
        metrics.maintenance_errors.fetch_add(1, Relaxed);
        if self.will_retry {
            tracing::error!(error = %self.error, action = ?self.action, "The maintenance database failed; will retry before acknowledging.");
        } else {
            tracing::error!(error = %self.error, action = ?self.action, "The maintenance engine refused a device report.");
        }
    }
}

/// A finding of a device nobody registered went to the unclaimed-devices queue.
pub struct FindingUnclaimed<'a> {
    /// The device.
    pub device_id: &'a str,
    /// Whether the device is new to the queue.
    pub new_device: bool,
}

impl InternalEvent for FindingUnclaimed<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.findings_unclaimed.fetch_add(1, Relaxed);
        if self.new_device {
            metrics.devices_unclaimed.fetch_add(1, Relaxed);
            tracing::warn!(
                device_id = self.device_id,
                "A device nobody registered reported a finding; it is in the unclaimed-devices queue on the board."
            );
        } else {
            tracing::debug!(
                device_id = self.device_id,
                "Unclaimed device's finding queued."
            );
        }
    }
}

/// The gateway (re)connected to the MQTT broker.
pub struct MqttConnected {
    /// Whether the broker kept the gateway's session.
    pub session_present: bool,
}

impl InternalEvent for MqttConnected {
    fn emit(self, metrics: &Metrics) {
        metrics.mqtt_connects.fetch_add(1, Relaxed);
        tracing::info!(
            session_present = self.session_present,
            "Connected to the MQTT broker."
        );
    }
}

/// The broker refused a subscription (a SUBACK failure code): nothing of those filters is
/// delivered until a retry succeeds (a broker ACL, or nats-server timing out creating the
/// subscription's JetStream consumer under load).
pub struct SubscriptionRefused<'a> {
    /// The filters of the refused SUBSCRIBE.
    pub filters: &'a [String],
    /// When it is tried again.
    pub retry_in: std::time::Duration,
}

impl InternalEvent for SubscriptionRefused<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics.mqtt_subscriptions_refused.fetch_add(1, Relaxed);
        tracing::error!(
            filters = ?self.filters,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "The MQTT broker refused the subscription; retrying. If it keeps refusing, check the broker's ACL for the gateway's user (or the broker's log)."
        );
    }
}

/// Acknowledgements skipped because their connection is gone (the broker redelivers).
pub struct AcksSkippedStale {
    /// How many.
    pub count: usize,
}

impl InternalEvent for AcksSkippedStale {
    fn emit(self, metrics: &Metrics) {
        metrics
            .acks_skipped_stale
            .fetch_add(self.count as u64, Relaxed);
        tracing::debug!(
            count = self.count,
            "Acknowledgements for a closed connection skipped; the broker redelivers those messages."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_counts_once() {
        let m = Metrics::default();
        PointsRefused {
            count: 3,
            replay: false,
        }
        .emit(&m);
        MqttConnected {
            session_present: true,
        }
        .emit(&m);
        FindingUnclaimed {
            device_id: "toilet-1",
            new_device: true,
        }
        .emit(&m);
        FindingUnclaimed {
            device_id: "toilet-1",
            new_device: false,
        }
        .emit(&m);
        AcksSkippedStale { count: 2 }.emit(&m);
        let s = m.snapshot(0);
        assert_eq!(s.points_refused, 3);
        assert_eq!(s.mqtt_connects, 1);
        assert_eq!((s.findings_unclaimed, s.devices_unclaimed), (2, 1));
        assert_eq!(s.acks_skipped_stale, 2);
    }
}
