//! What the rules report: a [`Finding`] of a [`FindingKind`], active or cleared.
//!
//! The serde form of [`FindingKind`], [`FindingState`] and [`Resource`] is the one of
//! the maintenance engine's `maintenance::finding` (tag `type`, snake case,
//! `unused_7_days`), so the gateway converts one into the other field by field.

use protocol::message::Severity;
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
