//! Operational counters, shared by every stage and served at `GET /metrics`.
//!
//! Plain atomics: incrementing one is a single instruction on the hot path.
//! Rejections are counted by reason code in a small map behind a mutex, taken
//! once per batch, not once per message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

/// Every counter the gateway keeps since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// MQTT messages received.
    pub received: AtomicU64,
    /// Messages that passed validation.
    pub accepted: AtomicU64,
    /// Messages refused (all reasons).
    pub rejected: AtomicU64,
    /// Points written to the telemetry store (directly or by replay).
    pub points_stored: AtomicU64,
    /// Points the store refused for good (in the dead-letter store).
    pub points_refused: AtomicU64,
    /// Batches flushed.
    pub batches: AtomicU64,
    /// Messages acknowledged to the broker.
    pub acked: AtomicU64,
    /// Acknowledgements skipped because the connection they belonged to was gone
    /// (the broker redelivers those messages; writes are idempotent).
    pub acks_skipped_stale: AtomicU64,
    /// Batches written to the spool while the store was unavailable.
    pub spooled_batches: AtomicU64,
    /// Spooled batches replayed into the store.
    pub replayed_batches: AtomicU64,
    /// Failed store writes (each retry counts).
    pub store_errors: AtomicU64,
    /// HTTP connections closed to admit new ones at `http.max_connections`.
    pub http_connections_evicted: AtomicU64,
    /// MQTT connections established.
    pub mqtt_connects: AtomicU64,
    /// MQTT connection errors.
    pub mqtt_errors: AtomicU64,
    /// SUBSCRIBE filters the broker refused (SUBACK failure); each is retried.
    pub mqtt_subscriptions_refused: AtomicU64,
    /// Messages missing before the broker, by per-device sequence gaps (net of late fills).
    pub sequence_gaps: AtomicU64,
    /// Redeliveries recognised by sequence number.
    pub duplicates: AtomicU64,
    /// Sensor values left out of accepted messages as invalid or missing (contract v1.1).
    pub invalid_fields: AtomicU64,
    /// Devices seen (with sequence state).
    pub devices: AtomicU64,
    /// Device faults and cartridge replacements applied by the maintenance engine.
    pub maintenance_applied: AtomicU64,
    /// Device reports the maintenance engine failed to apply (logged).
    pub maintenance_errors: AtomicU64,
    /// Findings of unregistered devices, kept in the engine's unclaimed-devices queue.
    pub findings_unclaimed: AtomicU64,
    /// Unregistered devices that entered the unclaimed-devices queue.
    pub devices_unclaimed: AtomicU64,
    /// Findings (edges) produced by the analytics stage.
    pub findings: AtomicU64,
    /// Messages fed to the analytics stage (every new one when it is on).
    pub analysed: AtomicU64,
    /// Late messages analysed in device-time order (replayed from a checkpoint).
    pub late_replayed: AtomicU64,
    /// Late messages older than their device's checkpoint, skipped by the rules (logged).
    pub late_unordered: AtomicU64,
    /// Devices with analytics state.
    pub analytics_devices: AtomicU64,
    rejected_by_reason: Mutex<BTreeMap<String, u64>>,
}

/// A point-in-time copy of [`Metrics`], as served over HTTP.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Snapshot {
    pub received: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub points_stored: u64,
    pub points_refused: u64,
    pub batches: u64,
    pub acked: u64,
    pub acks_skipped_stale: u64,
    pub spooled_batches: u64,
    pub replayed_batches: u64,
    pub spool_backlog_batches: u64,
    pub store_errors: u64,
    pub http_connections_evicted: u64,
    pub mqtt_connects: u64,
    pub mqtt_errors: u64,
    pub mqtt_subscriptions_refused: u64,
    pub sequence_gaps: u64,
    pub duplicates: u64,
    pub invalid_fields: u64,
    pub devices: u64,
    pub maintenance_applied: u64,
    pub maintenance_errors: u64,
    pub findings_unclaimed: u64,
    pub devices_unclaimed: u64,
    pub findings: u64,
    pub analysed: u64,
    pub late_replayed: u64,
    pub late_unordered: u64,
    pub analytics_devices: u64,
}

impl Metrics {
    /// Adds one batch's rejections, by reason.
    pub fn add_rejections<'a>(&self, reasons: impl IntoIterator<Item = &'a str>) {
        let mut map = self
            .rejected_by_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for r in reasons {
            *map.entry(r.to_owned()).or_default() += 1;
            self.rejected.fetch_add(1, Relaxed);
        }
    }

    /// Copies every counter.
    pub fn snapshot(&self, spool_backlog_batches: u64) -> Snapshot {
        Snapshot {
            received: self.received.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            rejected_by_reason: self
                .rejected_by_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            points_stored: self.points_stored.load(Relaxed),
            points_refused: self.points_refused.load(Relaxed),
            batches: self.batches.load(Relaxed),
            acked: self.acked.load(Relaxed),
            acks_skipped_stale: self.acks_skipped_stale.load(Relaxed),
            spooled_batches: self.spooled_batches.load(Relaxed),
            replayed_batches: self.replayed_batches.load(Relaxed),
            spool_backlog_batches,
            store_errors: self.store_errors.load(Relaxed),
            http_connections_evicted: self.http_connections_evicted.load(Relaxed),
            mqtt_connects: self.mqtt_connects.load(Relaxed),
            mqtt_errors: self.mqtt_errors.load(Relaxed),
            mqtt_subscriptions_refused: self.mqtt_subscriptions_refused.load(Relaxed),
            sequence_gaps: self.sequence_gaps.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            invalid_fields: self.invalid_fields.load(Relaxed),
            devices: self.devices.load(Relaxed),
            maintenance_applied: self.maintenance_applied.load(Relaxed),
            maintenance_errors: self.maintenance_errors.load(Relaxed),
            findings_unclaimed: self.findings_unclaimed.load(Relaxed),
            devices_unclaimed: self.devices_unclaimed.load(Relaxed),
            findings: self.findings.load(Relaxed),
            analysed: self.analysed.load(Relaxed),
            late_replayed: self.late_replayed.load(Relaxed),
            late_unordered: self.late_unordered.load(Relaxed),
            analytics_devices: self.analytics_devices.load(Relaxed),
        }
    }
}
