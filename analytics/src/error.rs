//! Typed errors for the analytics crate (detector configuration).

use thiserror::Error;

/// An invalid [`crate::DetectorConfig`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    /// A parameter is outside its allowed range.
    #[error("invalid detector parameter `{name}` = {value}: {reason}")]
    OutOfRange {
        /// Parameter name.
        name: &'static str,
        /// Offending value.
        value: f64,
        /// What the allowed range is.
        reason: &'static str,
    },
}

/// Any error of this crate.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AnalyticsError {
    /// Detector configuration error.
    #[error(transparent)]
    Config(#[from] ConfigError),
}
