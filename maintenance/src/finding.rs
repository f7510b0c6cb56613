//! The engine's input: a [`Finding`] about one device, as produced by the analytics crate
//! or by a device's own fault event, and the mapping from [`protocol::message::FaultCode`].

use protocol::message::{FaultCode, Severity};
use serde::{Deserialize, Serialize};

/// Which resource an [`FindingKind::AbnormalUsage`] finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Water consumption.
    Water,
    /// Heater or pump energy.
    Energy,
}

/// What was found. Each kind has a policy entry (see [`crate::policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum FindingKind {
    /// Water flows with no usage session.
    Leak,
    /// A wash or flush ran abnormally long (or a valve stuck open).
    LongWash,
    /// Main-board self-test failure.
    MainBoardFault,
    /// Heater over-temperature or heater not heating.
    HeaterFault,
    /// A sensor stopped answering.
    SensorFault,
    /// The inlet screen is clogging.
    InletClog,
    /// Inlet pressure below the working minimum.
    LowInletPressure,
    /// No use for seven days.
    #[serde(rename = "unused_7_days")]
    Unused7Days,
    /// Water or energy use well above the home's norm.
    AbnormalUsage {
        /// Which resource.
        resource: Resource,
    },
    /// A filter cartridge reaches its end of life at `due_ts_ms`.
    FilterDue {
        /// Cartridge slot on the fixture.
        slot: u8,
        /// When the cartridge is due, UTC ms.
        due_ts_ms: i64,
    },
    /// The device stopped reporting.
    DeviceSilent,
}

impl FindingKind {
    /// The policy key of this kind (`[kinds.<key>]` in the policy file).
    pub const fn policy_key(&self) -> &'static str {
        match self {
            FindingKind::Leak => "leak",
            FindingKind::LongWash => "long_wash",
            FindingKind::MainBoardFault => "main_board_fault",
            FindingKind::HeaterFault => "heater_fault",
            FindingKind::SensorFault => "sensor_fault",
            FindingKind::InletClog => "inlet_clog",
            FindingKind::LowInletPressure => "low_inlet_pressure",
            FindingKind::Unused7Days => "unused_7_days",
            FindingKind::AbnormalUsage { .. } => "abnormal_usage",
            FindingKind::FilterDue { .. } => "filter_due",
            FindingKind::DeviceSilent => "device_silent",
        }
    }

    /// The de-duplication key within a device: one open ticket per device and fault key.
    ///
    /// Kinds with a parameter that names a different thing (a slot, a resource) get it
    /// in the key; a filter's due date does not, since a new due date is the same cartridge.
    pub fn fault_key(&self) -> String {
        match self {
            FindingKind::AbnormalUsage {
                resource: Resource::Water,
            } => "abnormal_usage:water".into(),
            FindingKind::AbnormalUsage {
                resource: Resource::Energy,
            } => "abnormal_usage:energy".into(),
            FindingKind::FilterDue { slot, .. } => format!("filter_due:{slot}"),
            other => other.policy_key().into(),
        }
    }

    /// Every policy key, in a stable order.
    pub const ALL_KEYS: [&'static str; 11] = [
        "leak",
        "long_wash",
        "main_board_fault",
        "heater_fault",
        "sensor_fault",
        "inlet_clog",
        "low_inlet_pressure",
        "unused_7_days",
        "abnormal_usage",
        "filter_due",
        "device_silent",
    ];
}

impl From<FaultCode> for FindingKind {
    fn from(code: FaultCode) -> Self {
        match code {
            FaultCode::Leak => FindingKind::Leak,
            FaultCode::ValveStuck => FindingKind::LongWash,
            FaultCode::HeaterOverTemp | FaultCode::HeaterFailure => FindingKind::HeaterFault,
            FaultCode::SensorError => FindingKind::SensorFault,
            FaultCode::LowInletPressure => FindingKind::LowInletPressure,
            FaultCode::InletClog => FindingKind::InletClog,
            FaultCode::MainBoard => FindingKind::MainBoardFault,
        }
    }
}

/// Whether the condition is going on or has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingState {
    /// The condition is present.
    Active,
    /// The device (or the detector) reports the condition has ended.
    Cleared,
}

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
