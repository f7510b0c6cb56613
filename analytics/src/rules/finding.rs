//! What the rules report: a [`Finding`] of a [`FindingKind`], active or cleared.
//!
//! [`FindingKind`], [`FindingState`] and [`Resource`] are the platform's finding
//! vocabulary, defined in `protocol::finding` and shared with the maintenance engine.

pub use protocol::finding::{FindingKind, FindingState, Resource};
use protocol::message::Severity;
use serde::{Deserialize, Serialize};

/// One edge of one condition on one device: a condition that persists is one
/// `Active` finding, and its end one `Cleared` finding with the same `began_ts_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What was found.
    pub kind: FindingKind,
    /// How bad it is.
    pub severity: Severity,
    /// Active or cleared.
    pub state: FindingState,
    /// When the condition began, UTC ms (device time); the same on both edges.
    pub began_ts_ms: i64,
    /// When this edge was seen, UTC ms: the device time of the message, or the `now_ms`
    /// of [`crate::rules::DeviceRules::on_clock`] for clock-driven rules.
    pub at_ts_ms: i64,
    /// What supports it: the values, thresholds and learned baseline.
    pub evidence: serde_json::Value,
}
