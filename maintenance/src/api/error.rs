//! The one API error type: it knows its HTTP status and its stable error code, and it
//! never shows internal details to the client (those are logged).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::error::Error;

/// An error returned by the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// Too many failed authentications from this client address in the last minute.
    #[error("too many failed authentications from your address; wait a minute")]
    TooManyFailures,
    /// The role may not do this.
    #[error("your role may not do this")]
    Forbidden,
    /// Not found, or not visible to the caller (same answer on purpose).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Malformed request (JSON, path, query).
    #[error("{message}")]
    BadRequest {
        /// Stable code, e.g. `invalid_json`.
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A field broke a rule.
    #[error("invalid {field}: {reason}")]
    Validation {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The lifecycle forbids the transition.
    #[error("{0}")]
    InvalidTransition(String),
    /// Already exists.
    #[error("{0}")]
    Conflict(String),
    /// Anything else: logged, shown as a generic message.
    #[error("internal error")]
    Internal(#[source] Error),
}

impl ApiError {
    /// The HTTP status, decided in one place.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooManyFailures => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InvalidTransition(_) | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::TooManyFailures => "too_many_failures",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest { code, .. } => code,
            ApiError::Validation { .. } => "validation_failed",
            ApiError::InvalidTransition(_) => "invalid_transition",
            ApiError::Conflict(_) => "conflict",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Shorthand for a validation error.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ApiError::Validation {
            field,
            reason: reason.into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound { what, .. } => ApiError::NotFound(what),
            Error::Invalid { field, reason } => ApiError::Validation { field, reason },
            Error::InvalidTransition { .. } => ApiError::InvalidTransition(e.to_string()),
            Error::Conflict { .. } => ApiError::Conflict(e.to_string()),
            other => ApiError::Internal(other),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = %e, "API request failed.");
        }
        let field = match &self {
            ApiError::Validation { field, .. } => Some(*field),
            _ => None,
        };
        let body = Body {
            error: Inner {
                code: self.code(),
                message: self.to_string(),
                field,
            },
        };
        (status, Json(body)).into_response()
    }
}
