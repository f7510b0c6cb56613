//! Extractors that answer in the API's own error format: the caller ([`Auth`]),
//! JSON bodies ([`AppJson`]), path parameters ([`AppPath`]) and query strings ([`AppQuery`]).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::access::{AuthGuard, FailureVerdict, Principal, Role};
use crate::engine::Engine;

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
        let client = client_addr(parts);
        authenticate_request(
            &state.engine,
            &state.guard,
            &parts.headers,
            client,
            parts.uri.path(),
            state.now(),
        )
        .map(Auth)
    }
}

/// The client's address, if the server recorded it (`ConnectInfo<SocketAddr>`).
pub fn client_addr(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is matched
/// case-insensitively (RFC 7235).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Authenticates a request: the bearer token must be known, unexpired, unrevoked and (for
/// a homeowner) still its home's owner's. A client address over its failure limit gets
/// 429 before its token is looked at; each failure is audited (see [`AuthGuard`]).
pub fn authenticate_request(
    engine: &Engine,
    guard: &AuthGuard,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    resource: &str,
    now_ms: i64,
) -> Result<Principal, ApiError> {
    let ip = client.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    if guard.is_limited(ip, now_ms) {
        return Err(ApiError::TooManyFailures);
    }
    let principal = match bearer_token(headers) {
        Some(token) => engine.authenticate(token, now_ms)?,
        None => None,
    };
    if let Some(p) = principal {
        return Ok(p);
    }
    let resource: String = resource.chars().take(200).collect();
    let presented = headers.contains_key(header::AUTHORIZATION);
    let verdict = guard.record_failure(ip, now_ms);
    tracing::warn!(client = %ip, resource = %resource, presented, ?verdict, "Authentication failed.");
    let action = if presented {
        "auth_failed"
    } else {
        "auth_missing"
    };
    let client_label = ip.to_string();
    match verdict {
        FailureVerdict::Audit => engine.audit_failure(&client_label, action, &resource, now_ms)?,
        FailureVerdict::LimitReached => {
            engine.audit_failure(&client_label, action, &resource, now_ms)?;
            engine.audit_failure(&client_label, "auth_rate_limited", &resource, now_ms)?;
        }
        FailureVerdict::Limited => {}
    }
    Err(ApiError::Unauthorized)
}

/// A JSON body; malformed JSON is a 400 `invalid_json`, one over [`super::MAX_BODY_BYTES`] a
/// 400 `body_too_large`.
///
/// An oversized body is still read to its end (and thrown away) up to [`DRAIN_LIMIT_BYTES`]:
/// a server that answers and closes with unread bytes makes the kernel reset the connection,
/// and the client then sees "connection reset" instead of the error. Beyond the drain limit
/// the connection is cut.
pub struct AppJson<T>(pub T);

/// How much of an oversized body is read and discarded so its sender gets the answer.
pub const DRAIN_LIMIT_BYTES: usize = 4 * 1024 * 1024;

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use http_body_util::BodyExt;

        let (parts, mut body) = req.into_parts();
        let mut bytes = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::BadRequest {
                code: "invalid_body",
                message: format!("the request body could not be read: {e}"),
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen <= super::MAX_BODY_BYTES {
                bytes.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT_BYTES {
                break;
            }
        }
        if seen > super::MAX_BODY_BYTES {
            return Err(ApiError::BadRequest {
                code: "body_too_large",
                message: format!(
                    "the request body is {}{seen} bytes; at most {} are accepted",
                    if seen > DRAIN_LIMIT_BYTES {
                        "over "
                    } else {
                        ""
                    },
                    super::MAX_BODY_BYTES
                ),
            });
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|j| AppJson(j.0))
            .map_err(|e| ApiError::BadRequest {
                code: if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    "body_too_large"
                } else {
                    "invalid_json"
                },
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
