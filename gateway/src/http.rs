//! The gateway's HTTP endpoint: `GET /health`, `GET /metrics.json` (JSON counters; Prometheus
//! text, `/health/live` and `/health/ready` are in [`crate::ops`]),
//! `GET /dead-letters?reason=&limit=` (the newest rejected messages, raw bytes
//! shown as lossy UTF-8), `GET /dead-letters/counts` (by reason, all time) and
//! `GET /devices/{device_id}` (its sequence state: messages, gaps, duplicates) and
//! `GET /fleet/online?within_s=` (devices seen at all, and within the last `within_s`).
//! It only reads shared counters and the state database: it never blocks ingest.
//!
//! The pages of the `web` crate (`/`, `/board`, `/fleet`, `/home`, `/static/...`) are
//! merged in here; they call the maintenance API that `lib.rs` nests under `/api`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
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
    /// Health, retention and the Prometheus exposition (`crate::ops`).
    pub ops: Arc<crate::ops::Ops>,
}

/// An error answer: a stable code and a message, as JSON.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self, "HTTP request failed.");
        let body = serde_json::json!({ "code": "internal", "message": "internal error; see the gateway log" });
        (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let ops = Arc::clone(&state.ops);
    Router::new()
        .route("/health", get(health))
        .route("/metrics.json", get(metrics))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/counts", get(dead_letter_counts))
        .route("/devices/{device_id}", get(device))
        .route("/fleet/online", get(online))
        .with_state(state)
        .merge(crate::ops::router(ops))
        .merge(web::router())
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
struct DeadLetterQuery {
    reason: Option<String>,
    limit: Option<usize>,
}

async fn dead_letters(
    State(s): State<AppState>,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).min(1000);
    let rows = s.state.dead_letters(q.reason, limit).await?;
    Ok(Json(rows).into_response())
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

/// Device ids are not personal data, and only counts leave here, so no token is needed.
async fn online(
    State(s): State<AppState>,
    Query(q): Query<OnlineQuery>,
) -> Result<Response, ApiError> {
    let within_s = q.within_s.unwrap_or(900).clamp(1, 7 * 86_400);
    let since = crate::ingest::pipeline::now_ms() - i64::from(within_s) * 1000;
    let (seen, online) = s.state.devices_seen(since).await?;
    Ok(
        Json(serde_json::json!({ "devices_seen": seen, "online": online, "within_s": within_s }))
            .into_response(),
    )
}

async fn device(
    State(s): State<AppState>,
    Path(device_id): Path<String>,
) -> Result<Response, ApiError> {
    if !protocol::is_valid_device_id(&device_id) {
        let body = serde_json::json!({ "code": "invalid_device_id", "message": "device ids are 1-32 characters of [a-z0-9-_]" });
        return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    match s.state.device(device_id.clone()).await? {
        Some(seq) => Ok(
            Json(serde_json::json!({ "device_id": device_id, "sequence": seq })).into_response(),
        ),
        None => {
            let body = serde_json::json!({ "code": "unknown_device", "message": "no message from this device has been stored" });
            Ok((StatusCode::NOT_FOUND, Json(body)).into_response())
        }
    }
}
