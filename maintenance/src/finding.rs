//! The engine's input: a [`Finding`] about one device, as produced by the analytics rules
//! or by a device's own fault event (the mapping from [`protocol::message::FaultCode`] is
//! `From<FaultCode> for FindingKind`, in `protocol::finding` beside the kinds).

use protocol::message::Severity;
use serde::{Deserialize, Serialize};

/// The kinds, states and resources are `protocol::finding`'s (one vocabulary for the
/// rules that find conditions and the engine that acts on them).
pub use protocol::finding::{FindingKind, FindingState, Resource};

/// One finding about one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The device, as registered.
    pub device_id: String,
    /// What was found.
    pub kind: FindingKind,
    /// How bad it is.
    pub severity: Severity,
    /// Whatever supports the finding (readings, scores); attached to the ticket.
    #[serde(default)]
    pub evidence: serde_json::Value,
    /// When the condition began, UTC ms; repeats of one episode carry the same value.
    pub began_ts_ms: i64,
    /// Active or cleared.
    pub state: FindingState,
}

impl Finding {
    /// A finding from a device fault event (`FaultEvent`) at `ts_ms`.
    pub fn from_fault(
        device_id: &str,
        fault: &protocol::message::FaultEvent,
        began_ts_ms: i64,
    ) -> Self {
        Finding {
            device_id: device_id.to_owned(),
            kind: fault.code.into(),
            severity: fault.severity,
            evidence: serde_json::json!({ "fault_code": fault.code.as_str(), "value": fault.value }),
            began_ts_ms,
            state: match fault.state {
                protocol::message::FaultState::Raised => FindingState::Active,
                protocol::message::FaultState::Cleared => FindingState::Cleared,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::FaultCode;

    #[test]
    fn every_fault_code_maps_to_a_kind_with_a_policy_key() {
        for code in [
            FaultCode::Leak,
            FaultCode::ValveStuck,
            FaultCode::HeaterOverTemp,
            FaultCode::HeaterFailure,
            FaultCode::SensorError,
            FaultCode::LowInletPressure,
            FaultCode::InletClog,
            FaultCode::MainBoard,
        ] {
            let kind = FindingKind::from(code);
            assert!(FindingKind::ALL_KEYS.contains(&kind.policy_key()));
        }
    }

    #[test]
    fn json_tag_equals_the_policy_key() {
        for kind in [
            FindingKind::Unused7Days,
            FindingKind::LongWash,
            FindingKind::DeviceSilent,
        ] {
            let v = serde_json::to_value(kind).unwrap();
            assert_eq!(v["type"], kind.policy_key());
        }
    }

    #[test]
    fn filter_fault_key_names_the_slot_not_the_date() {
        let a = FindingKind::FilterDue {
            slot: 1,
            due_ts_ms: 5,
        };
        let b = FindingKind::FilterDue {
            slot: 1,
            due_ts_ms: 9,
        };
        assert_eq!(a.fault_key(), b.fault_key());
        assert_eq!(a.fault_key(), "filter_due:1");
    }
}
