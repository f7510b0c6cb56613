//! Streaming anomaly detection for per-device telemetry metrics, plus a pure
//! re-implementation of the Numenta Anomaly Benchmark (NAB) scoring.
//!
//! * [`detector`]: [`StreamingDetector`], an online, O(1)-memory, look-ahead-free
//!   detector that turns `(event time, value)` pairs into anomaly scores in `[0, 1]`.
//! * [`nab`]: parsing of NAB data/label files (from strings, no I/O) and NAB's
//!   windowed, sigmoid-weighted scoring with per-profile threshold optimisation.
//!
//! The library does no I/O and reads no clock; the binaries in `src/bin` do the file work.

pub mod detector;
pub mod error;
pub mod nab;
pub mod time;

pub use detector::{DetectorConfig, StreamingDetector};
pub use error::{AnalyticsError, ConfigError, NabError};
