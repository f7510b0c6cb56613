//! Typed errors of NAB parsing and scoring.

use thiserror::Error;

/// Errors while parsing NAB files or scoring results.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum NabError {
    /// A timestamp did not have the form `YYYY-MM-DD HH:MM:SS[.ffffff]`.
    #[error("bad timestamp {text:?}: {reason}")]
    BadTimestamp {
        /// The offending text.
        text: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// A CSV line could not be parsed.
    #[error("line {line}: {reason}")]
    BadCsvLine {
        /// 1-based line number in the file.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// A JSON document (windows.json, profiles.json) had an unexpected shape.
    #[error("bad {what}: {reason}")]
    BadJson {
        /// Which document.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A window boundary does not match any row timestamp of its file.
    #[error("window boundary {timestamp:?} of {file} is not a row timestamp")]
    WindowNotInData {
        /// Data file key.
        file: String,
        /// The unmatched timestamp text.
        timestamp: String,
    },
    /// Timestamps and scores have different lengths.
    #[error("{file}: {timestamps} timestamps but {scores} scores")]
    LengthMismatch {
        /// Data file key.
        file: String,
        /// Number of timestamps.
        timestamps: usize,
        /// Number of scores.
        scores: usize,
    },
}
