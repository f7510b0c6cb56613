//! Numenta Anomaly Benchmark support: parsing of data/result CSV lines and of
//! `windows.json` / `profiles.json` (from strings; [`files`] reads the files),
//! and NAB's scoring algorithm ([`scorer`]).

pub mod corpus;
pub mod csv;
pub mod cv;
pub mod error;
pub mod files;
pub mod labels;
pub mod scorer;
pub mod time;

pub use corpus::{score_corpus, FileScores, ProfileResult, PROBATION_PERCENT};
pub use csv::{parse_data_line, parse_results_csv, DataRow};
pub use error::NabError;
pub use labels::{parse_profiles, parse_windows, Profile};
pub use scorer::{
    normalized_score, optimize_threshold, score_at_threshold, scores_by_threshold, sweep_file,
    CostMatrix, PointLabel, SweepPoint, ThresholdScore,
};
