//! The engine's error type: what can go wrong below the API (the API maps it in `api::error`).

use thiserror::Error;

/// An error of the maintenance engine.
#[derive(Debug, Error)]
pub enum Error {
    /// The database (SQLite or PostgreSQL) failed.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A JSON column could not be (de)serialised.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The policy or delivery configuration is invalid.
    #[error("config: {0}")]
    Config(String),
    /// A referenced record does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A ticket transition that the lifecycle forbids.
    #[error("ticket {id}: cannot go from {from} to {to}")]
    InvalidTransition {
        /// Ticket id.
        id: i64,
        /// Current status.
        from: &'static str,
        /// Requested status.
        to: &'static str,
    },
    /// Input that breaks a domain rule (bad time zone, unknown channel, ...).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// A record with this id already exists.
    #[error("{what} {id} already exists")]
    Conflict {
        /// The kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(crate::store::StoreError::Sqlite(e))
    }
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// Whether running the transaction again may succeed (PostgreSQL: a serialization
    /// failure, a deadlock or a unique violation from a concurrent transaction).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_retryable())
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        Error::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
