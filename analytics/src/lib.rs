//! Streaming anomaly detection for per-device telemetry metrics, plus a pure
//! re-implementation of the Numenta Anomaly Benchmark (NAB) scoring.
//!
//! * [`detector`]: [`StreamingDetector`], an online, O(1)-memory, look-ahead-free
//!   detector that turns `(event time, value)` pairs into anomaly scores in `[0, 1]`.
//! * [`nab`]: parsing of NAB data/label files (from strings, no I/O) and NAB's
//!   windowed, sigmoid-weighted scoring with per-profile threshold optimisation.
//!
//! * [`forecast`]: [`DeviceForecaster`], a streaming due-date forecaster of the filter
//!   cartridges of a device (rated volume or maximum age, with a prediction interval;
//!   the household's use learned once for all slots).
//!
//! * [`rules`]: the product brief's fault rules per device ([`rules::DeviceRules`]),
//!   turning contract messages into edge-triggered [`rules::Finding`]s.
//!
//! The library does no I/O and reads no clock; the binaries in `src/bin` do the file work.

pub mod detector;
pub mod error;
pub mod forecast;
pub mod rules;

pub use detector::{DetectorConfig, StreamingDetector};
pub use error::{AnalyticsError, ConfigError};
pub use forecast::{
    BootInfo, CartridgeSpec, DeviceForecaster, DueReason, Forecast, ForecastConfig, ForecastError,
    ForecastParams, SlotReading, SpecId,
};
