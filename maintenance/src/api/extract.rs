//! Extractors that answer in the API's own error format: the caller ([`Auth`]),
//! JSON bodies ([`AppJson`]), path parameters ([`AppPath`]) and query strings ([`AppQuery`]).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::access::{Principal, Role};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl Auth {
    /// Fails with 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// The caller's role.
    pub fn role(&self) -> Role {
        self.0.role
    }

    /// The home a homeowner token is bound to.
    pub fn home(&self) -> Option<&str> {
        (self.0.role == Role::Homeowner)
            .then_some(self.0.subject.as_deref())
            .flatten()
    }

    /// The technician a technician token is bound to.
    pub fn technician(&self) -> Option<&str> {
        (self.0.role == Role::Technician)
            .then_some(self.0.subject.as_deref())
            .flatten()
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        if token.len() > 200 {
            return Err(ApiError::Unauthorized);
        }
        state
            .engine
            .authenticate(token)?
            .map(Auth)
            .ok_or(ApiError::Unauthorized)
    }
}

/// A JSON body; malformed JSON is a 400 `invalid_json`.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|j| AppJson(j.0))
            .map_err(|e| ApiError::BadRequest {
                code: "invalid_json",
                message: e.body_text(),
            })
    }
}

/// Path parameters; a malformed one is a 400 `invalid_path`.
pub struct AppPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for AppPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| AppPath(p.0))
            .map_err(|e| ApiError::BadRequest {
                code: "invalid_path",
                message: e.body_text(),
            })
    }
}

/// A query string; a malformed one is a 400 `invalid_query`.
pub struct AppQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| AppQuery(q.0))
            .map_err(|e| ApiError::BadRequest {
                code: "invalid_query",
                message: e.body_text(),
            })
    }
}
