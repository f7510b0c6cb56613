//! Evaluation of the analytics against ground truth. A tool crate: the product never
//! links it; `analytics` stays a pure library that knows nothing of the simulator or NAB.
//!
//! * [`fault`]: the fault rules on a simulated fleet, scored per finding kind against the
//!   simulator's truth (recall, precision, time to detect).
//! * [`filter`]: the filter due-date forecaster against the true capacity dates, beside
//!   two baselines (fixed interval, straight line).
//! * [`nab`]: the Numenta Anomaly Benchmark: parsing, NAB's scorer, and the file work of
//!   running the anomaly detector over a corpus.
//!
//! The `eval` binary (`src/main.rs`) is the one command line over all three.

pub mod fault;
pub mod filter;
pub mod nab;
