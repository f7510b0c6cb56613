//! The gateway's HTTP endpoint. Public: `GET /health/live` (a bare liveness answer) and the
//! pages. Everything that returns data needs a bearer token of an operator role (admin,
//! agent or operator; see `maintenance::access`):
//! `GET /health` (store and spool), `GET /metrics.json` (JSON counters), and from [`crate::ops`]
//! `GET /health/ready` (503 with reasons) and `GET /metrics` (Prometheus text),
//! `GET /dead-letters?reason=&limit=&before=` (summaries without payload, newest first,
//! `limit` 1 to [`MAX_DEAD_LETTER_PAGE`], default [`DEFAULT_DEAD_LETTER_PAGE`], the next
//! page by `before=<next_before>`), `GET /dead-letters/{id}/raw` (one payload's kept bytes,
//! audited), `GET /dead-letters/counts` (by reason, all time),
//! `GET /devices/{device_id}` (its sequence state), `GET /fleet/online?within_s=` and
//! `GET /fleet/instances` (clustered mode: the live instances and their partitions);
//! for staff, `GET /api/tickets/{id}/readings` (a ticket's readings, `http::readings`).
//! It only reads shared counters and the state database: it never blocks ingest.
//!
//! The pages of the `web` crate (`/`, `/board`, `/fleet`, `/home`, `/static/...`) are
//! merged in here; they call the maintenance API that `lib.rs` nests under `/api`.
//! [`serve`] runs the listener with its limits ([`listener`]) and the host check and
//! security headers ([`guard`]) around everything.

mod guard;
mod listener;
mod readings;

pub use guard::{host_allowed, REQUEST_TIMEOUT};
pub use listener::HEADER_TIMEOUT;

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use maintenance::access::AuthGuard;
use maintenance::Principal;
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::state::{StateDb, StateError};
use crate::store::durable::DurableWriter;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// For the spool backlog.
    pub writer: Arc<DurableWriter>,
    /// Dead letters.
    pub state: StateDb,
    /// Where tokens are checked and failed authentications and raw reads audited.
    pub auth: Arc<maintenance::Engine>,
    /// Failed authentications per client address (shared with `/api`).
    pub guard: Arc<AuthGuard>,
    /// Health, retention and the Prometheus exposition (`crate::ops`).
    pub ops: Arc<crate::ops::Ops>,
}

/// Default page of `/dead-letters`.
pub const DEFAULT_DEAD_LETTER_PAGE: usize = 50;
/// Largest page of `/dead-letters`; a larger `limit` is cut to it.
pub const MAX_DEAD_LETTER_PAGE: usize = 100;

/// An error answer of the gateway's own endpoints, in the one shape every endpoint
/// (these, the guard's refusals and `/api`) answers with:
/// `{"error": {"code": "<stable code>", "message": "<what to do>"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The state database failed (500; the cause goes to the log, not the client).
    #[error(transparent)]
    State(#[from] StateError),
    /// The token store failed (500).
    #[error(transparent)]
    Auth(#[from] maintenance::Error),
    /// The request was refused: a client error with its status.
    #[error("{code}: {message}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// A stable, machine-readable code.
        code: &'static str,
        /// What went wrong and what to do.
        message: &'static str,
    },
}

impl ApiError {
    /// 400 with `code` and `message`.
    pub fn bad_request(code: &'static str, message: &'static str) -> ApiError {
        ApiError::Refused {
            status: StatusCode::BAD_REQUEST,
            code,
            message,
        }
    }

    /// 404 with `code` and `message`.
    pub fn not_found(code: &'static str, message: &'static str) -> ApiError {
        ApiError::Refused {
            status: StatusCode::NOT_FOUND,
            code,
            message,
        }
    }
}

/// The one error body: `{"error": {"code", "message"}}`.
pub(crate) fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Refused {
                status,
                code,
                message,
            } => error_body(status, code, message),
            internal => {
                tracing::error!(error = %internal, "HTTP request failed.");
                error_body(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the gateway log",
                )
            }
        }
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let operator = Router::new()
        .route("/health", get(health))
        .route("/metrics.json", get(metrics))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/counts", get(dead_letter_counts))
        .route("/dead-letters/{id}/raw", get(dead_letter_raw))
        .route("/devices/{device_id}", get(device))
        .route("/fleet/online", get(online))
        .route("/fleet/instances", get(instances))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_operator,
        ));
    let ops = crate::ops::router(Arc::clone(&state.ops)).route_layer(
        axum::middleware::from_fn_with_state(state.clone(), require_operator),
    );
    Router::new()
        .route("/health/live", get(live))
        .merge(operator)
        .with_state(state.clone())
        .merge(ops)
        .merge(readings::router(state))
        .merge(web::router())
}

/// Serves `app` (the router with `/api` and the pages merged) on `listener` until
/// `shutdown` changes: the host check, timeouts, connection cap and security headers apply
/// to every answer.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    allowed_hosts: Vec<String>,
    max_connections: usize,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let app = guard::harden(app, allowed_hosts);
    listener::serve(listener, app, max_connections, metrics, shutdown).await;
}

/// Opens the token store: the maintenance database ([`crate::open_maintenance`]: the cluster's
/// PostgreSQL database in clustered mode; otherwise `[maintenance] db_path`, by default
/// `{data_dir}/maintenance.db`). Without `[maintenance]` only its tokens and audit tables are
/// used, so enabling the engine later keeps the tokens.
pub fn open_token_store(
    config: &crate::config::Config,
) -> Result<maintenance::Engine, maintenance::Error> {
    let engine = match &config.maintenance {
        Some(m) => m.engine.clone(),
        None => maintenance::EngineConfig {
            policy: maintenance::Policy::default(),
            ticket_webhooks: Vec::new(),
        },
    };
    crate::open_maintenance(config, engine)
}

/// Lets the request through if it carries a token of an operator role (admin, agent,
/// operator); the principal goes into the request's extensions.
async fn require_operator(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let client = maintenance::api::client_addr(&parts);
    let now = crate::clock::now_ms();
    match maintenance::api::authenticate_request(
        &s.auth,
        &s.guard,
        &parts.headers,
        client,
        parts.uri.path(),
        now,
    ) {
        Ok(p) if p.role.is_operator() => {
            let mut req = Request::from_parts(parts, body);
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Ok(_) => maintenance::api::ApiError::Forbidden.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Liveness only: the process answers HTTP. No data, no token.
async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn health(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "store": s.writer.describe(),
        "spool_backlog_batches": s.writer.backlog(),
    }))
}

async fn metrics(State(s): State<AppState>) -> Json<crate::metrics::Snapshot> {
    Json(s.metrics.snapshot(s.writer.backlog()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    reason: Option<String>,
    limit: Option<usize>,
    before: Option<i64>,
}

async fn dead_letters(
    State(s): State<AppState>,
    q: Result<Query<DeadLetterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Ok(Query(q)) = q else {
        return Err(ApiError::bad_request(
            "invalid_query",
            "query parameters: reason, limit (1-100), before (an id)",
        ));
    };
    if let Some(r) = &q.reason {
        if r.is_empty() || r.len() > 64 || !r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(ApiError::bad_request(
                "invalid_reason",
                "reason is a reason code: 1-64 characters of [a-z_]",
            ));
        }
    }
    let limit = q
        .limit
        .unwrap_or(DEFAULT_DEAD_LETTER_PAGE)
        .clamp(1, MAX_DEAD_LETTER_PAGE);
    let items = s.state.dead_letter_page(q.reason, q.before, limit).await?;
    let next_before = (items.len() == limit)
        .then(|| items.last().map(|d| d.id))
        .flatten();
    Ok(Json(serde_json::json!({
        "items": items,
        "limit": limit,
        "next_before": next_before,
    }))
    .into_response())
}

async fn dead_letter_raw(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Ok(Path(id)) = id else {
        return Err(ApiError::bad_request(
            "invalid_id",
            "a dead letter id is an integer",
        ));
    };
    let Some((_topic, payload)) = s.state.dead_letter_raw(id).await? else {
        return Err(ApiError::not_found("not_found", "no such dead letter"));
    };
    // Raw payloads may hold personal data (a device's Wi-Fi key, an owner's phone).
    s.auth.audit(
        &who,
        "read_dead_letter_raw",
        &format!("dead-letter/{id}"),
        crate::clock::now_ms(),
    )?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        payload,
    )
        .into_response())
}

async fn dead_letter_counts(State(s): State<AppState>) -> Result<Response, ApiError> {
    let counts: serde_json::Map<String, serde_json::Value> = s
        .state
        .dead_letter_counts()
        .await?
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    Ok(Json(counts).into_response())
}

#[derive(Deserialize)]
struct OnlineQuery {
    within_s: Option<u32>,
}

/// Only counts leave here; still behind a token, as every endpoint with data.
async fn online(
    State(s): State<AppState>,
    Query(q): Query<OnlineQuery>,
) -> Result<Response, ApiError> {
    let within_s = q.within_s.unwrap_or(900).clamp(1, 7 * 86_400);
    let since = crate::clock::now_ms() - i64::from(within_s) * 1000;
    let (seen, online) = s.state.devices_seen(since).await?;
    Ok(
        Json(serde_json::json!({ "devices_seen": seen, "online": online, "within_s": within_s }))
            .into_response(),
    )
}

/// The platform's instances, for the fleet page: in clustered mode this instance, the live
/// instances and how many partitions each holds; in single-node mode, just that.
async fn instances(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(match s.ops.cluster_view() {
        Some(mut cluster) => {
            cluster["clustered"] = true.into();
            cluster
        }
        None => serde_json::json!({ "clustered": false }),
    })
}

async fn device(
    State(s): State<AppState>,
    Path(device_id): Path<String>,
) -> Result<Response, ApiError> {
    if !protocol::is_valid_device_id(&device_id) {
        return Err(ApiError::bad_request(
            "invalid_device_id",
            "device ids are 1-32 characters of [a-z0-9-_]",
        ));
    }
    match s.state.device(device_id.clone()).await? {
        Some(seq) => Ok(
            Json(serde_json::json!({ "device_id": device_id, "sequence": seq })).into_response(),
        ),
        None => Err(ApiError::not_found(
            "unknown_device",
            "no message from this device has been stored",
        )),
    }
}
