//! The finding vocabulary: what the platform can find about a fixture
//! ([`FindingKind`]), whether it is going on ([`FindingState`]) and, for abnormal use,
//! of which resource ([`Resource`]).
//!
//! It is shared by the analytics rules that find conditions and the maintenance
//! engine that acts on them, which do not depend on each other: the policy is keyed by
//! [`FindingKind::policy_key`] and tickets are de-duplicated by `FindingKind::fault_key`.

use crate::message::FaultCode;
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

/// What was found.
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
    /// A sensor stopped answering, or drifted.
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
    /// A filter cartridge reaches its end of life at `due_ts_ms` (from the forecaster;
    /// the rules never produce it, the kind is here so the two enums match).
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
    /// Snake-case name, as the `type` tag in JSON (and the maintenance policy key).
    pub const fn as_str(&self) -> &'static str {
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

    /// The maintenance policy key of this kind (`[kinds.<key>]` in the policy file): [`Self::as_str`].
    pub const fn policy_key(&self) -> &'static str {
        self.as_str()
    }

    /// The de-duplication key within a device: one open ticket per device and fault key.
    ///
    /// Kinds with a parameter that names a different thing (a slot, a resource) get it
    /// in the key; a filter's due date does not, since a new due date is the same cartridge.
    pub fn fault_key(&self) -> std::string::String {
        match self {
            FindingKind::AbnormalUsage {
                resource: Resource::Water,
            } => "abnormal_usage:water".into(),
            FindingKind::AbnormalUsage {
                resource: Resource::Energy,
            } => "abnormal_usage:energy".into(),
            FindingKind::FilterDue { slot, .. } => std::format!("filter_due:{slot}"),
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
    /// The finding a device's own fault code stands for.
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
    /// The condition has ended.
    Cleared,
}
