//! The REST API: one router per module, merged by [`router`], sharing one [`AppState`].
//!
//! Mount it under `/api` (`Router::new().nest("/api", maintenance::router(state))`).
//! Every route but `/openapi.json` needs a bearer token; roles are checked in each
//! handler, and a homeowner or technician asking for something outside their scope gets
//! the same 404 as for something that does not exist.

use std::sync::Arc;

use axum::Router;

use crate::access::AuthGuard;
use crate::engine::Engine;

mod admin;
mod commands;
mod error;
mod extract;
mod homes;
mod import;
mod incidents;
mod openapi;
mod reminders;
mod reveal;
mod tickets;
mod unclaimed;

pub use error::ApiError;

/// Checks `limit`/`offset` query parameters.
pub(crate) fn page_of(q: crate::page::PageQuery) -> Result<crate::page::Page, ApiError> {
    q.page().map_err(|e| match e {
        crate::page::PageError::Limit(_) => ApiError::invalid("limit", e.to_string()),
        crate::page::PageError::Offset(_) => ApiError::invalid("offset", e.to_string()),
    })
}

/// A page as the API answers it: the rows as a JSON array and, while more remain,
/// `X-Next-Offset` and `Link: <uri with the next offset>; rel="next"`.
pub(crate) fn paged_answer<T: serde::Serialize>(
    uri: &axum::http::Uri,
    page: crate::page::Page,
    items: Vec<T>,
    next_offset: Option<u32>,
) -> (axum::http::HeaderMap, axum::Json<Vec<T>>) {
    let mut headers = axum::http::HeaderMap::new();
    if let Some(next) = next_offset {
        let kept: Vec<&str> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("offset=") && !p.starts_with("limit="))
            .collect();
        let mut query = kept.join("&");
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("limit={}&offset={next}", page.limit));
        let link = format!("<{}?{query}>; rel=\"next\"", uri.path());
        if let Ok(v) = axum::http::HeaderValue::from_str(&link) {
            headers.insert(axum::http::header::LINK, v);
        }
        headers.insert("x-next-offset", axum::http::HeaderValue::from(next));
    }
    (headers, axum::Json(items))
}
pub use extract::{authenticate_request, bearer_token, client_addr, Auth};
pub use openapi::OPENAPI_JSON;

/// The clock the API uses for audit entries and actions (injected so tests are deterministic).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Current time, UTC ms.
    pub clock: Clock,
    /// Failed authentications per client address (share it with every router that authenticates).
    pub guard: Arc<AuthGuard>,
}

impl AppState {
    /// State on the wall clock.
    pub fn new(engine: Arc<Engine>) -> AppState {
        AppState {
            engine,
            clock: Arc::new(crate::wall_clock_ms),
            guard: Arc::default(),
        }
    }

    /// State on the wall clock sharing `guard` with the gateway's own endpoints.
    pub fn with_guard(engine: Arc<Engine>, guard: Arc<AuthGuard>) -> AppState {
        AppState {
            engine,
            clock: Arc::new(crate::wall_clock_ms),
            guard,
        }
    }

    /// State on a given clock (tests).
    pub fn with_clock(engine: Arc<Engine>, clock: Clock) -> AppState {
        AppState {
            engine,
            clock,
            guard: Arc::default(),
        }
    }

    /// Now, UTC ms.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }
}

/// Every route as `(method, path)`, the list the OpenAPI test checks against the document.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/openapi.json"),
    ("post", "/tokens"),
    ("get", "/tokens"),
    ("post", "/tokens/{id}/revoke"),
    ("post", "/tokens/{id}/rotate"),
    ("get", "/audit"),
    ("get", "/me"),
    ("get", "/kpi"),
    ("get", "/fleet"),
    ("post", "/findings"),
    ("get", "/outbox"),
    ("get", "/homes"),
    ("post", "/homes"),
    ("get", "/homes/{id}"),
    ("get", "/homes/{id}/devices"),
    ("post", "/devices"),
    ("get", "/devices/{id}"),
    ("get", "/devices/{id}/filters"),
    ("get", "/technicians"),
    ("post", "/technicians"),
    ("get", "/tickets"),
    ("get", "/tickets/{id}"),
    ("post", "/tickets/{id}/transition"),
    ("post", "/tickets/{id}/assign"),
    ("post", "/tickets/{id}/rate"),
    ("get", "/reminders"),
    ("get", "/reminders/{id}"),
    ("post", "/reminders/{id}/snooze"),
    ("post", "/reminders/{id}/done"),
    ("post", "/reminders/{id}/book"),
    ("get", "/unclaimed"),
    ("get", "/incidents"),
    ("post", "/tickets/{id}/reveal"),
    ("get", "/commands"),
    ("get", "/tickets/{id}/commands"),
    ("post", "/tickets/{id}/commands"),
    ("get", "/devices/{id}/commands"),
    ("post", "/devices/{id}/commands"),
    ("post", "/import"),
];

/// Largest request body the API reads (64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Default page size of the API's lists.
pub const DEFAULT_PAGE: usize = 200;
/// Largest page size of the API's lists.
pub const MAX_PAGE: usize = 1000;

/// The API router, to be nested under `/api`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(openapi::router())
        .merge(admin::router())
        .merge(homes::router())
        .merge(tickets::router())
        .merge(reminders::router())
        .merge(unclaimed::router())
        .merge(incidents::router())
        .merge(reveal::router())
        .merge(commands::router())
        .merge(import::router())
        // Every body the API takes is small; a larger one is refused before it is read.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Checks a free-text field: at most `max` characters (not bytes), and no control characters
/// but newlines and tabs.
pub(crate) fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), ApiError> {
    if text.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            format!("at most {max} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ApiError::invalid(field, "no control characters"));
    }
    Ok(())
}

/// Checks an id from a path or body: `[a-z0-9-_]{1,32}`.
pub(crate) fn check_id(field: &'static str, id: &str) -> Result<(), ApiError> {
    if crate::registry::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "1 to 32 characters of [a-z0-9-_]"))
    }
}
