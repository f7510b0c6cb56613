//! Administration: tokens, the audit log, KPIs, manual findings and the outbox state.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{AppJson, AppQuery, Auth};
use super::{check_id, ApiError, AppState};
use crate::access::{AuditEntry, Role};
use crate::engine::Outcome;
use crate::finding::Finding;
use crate::tickets::Kpi;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/tokens", post(issue_token))
        .route("/audit", get(audit))
        .route("/kpi", get(kpi))
        .route("/findings", post(finding))
        .route("/outbox", get(outbox))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    role: Role,
    #[serde(default)]
    subject: Option<String>,
}

#[derive(Serialize)]
struct TokenResponse {
    token: String,
    role: Role,
    subject: Option<String>,
}

async fn issue_token(
    State(s): State<AppState>,
    auth: Auth,
    AppJson(req): AppJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    auth.require(&[Role::Admin])?;
    if let Some(sub) = &req.subject {
        check_id("subject", sub)?;
    }
    let token = s
        .engine
        .issue_token(req.role, req.subject.as_deref(), s.now())?;
    tracing::info!(by = %auth.0.label, role = req.role.as_str(), "Token issued.");
    Ok(Json(TokenResponse {
        token,
        role: req.role,
        subject: req.subject,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    #[serde(default)]
    limit: Option<usize>,
}

async fn audit(
    State(s): State<AppState>,
    auth: Auth,
    AppQuery(q): AppQuery<Limit>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    auth.require(&[Role::Admin])?;
    Ok(Json(
        s.engine.audit_log(q.limit.unwrap_or(100).clamp(1, 1000))?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    #[serde(default)]
    from_ms: Option<i64>,
    #[serde(default)]
    to_ms: Option<i64>,
}

async fn kpi(
    State(s): State<AppState>,
    auth: Auth,
    AppQuery(w): AppQuery<Window>,
) -> Result<Json<Kpi>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    let now = s.now();
    let (from, to) = (
        w.from_ms.unwrap_or(now - 30 * 86_400_000),
        w.to_ms.unwrap_or(now + 1),
    );
    if from >= to {
        return Err(ApiError::invalid("from_ms", "must be before to_ms"));
    }
    Ok(Json(s.engine.kpi(from, to)?))
}

async fn finding(
    State(s): State<AppState>,
    auth: Auth,
    AppJson(f): AppJson<Finding>,
) -> Result<Json<Outcome>, ApiError> {
    auth.require(&[Role::Admin])?;
    check_id("device_id", &f.device_id)?;
    Ok(Json(s.engine.ingest(&f, s.now())?))
}

#[derive(Serialize)]
struct OutboxState {
    pending: u64,
    delivered: u64,
    dead: u64,
}

async fn outbox(State(s): State<AppState>, auth: Auth) -> Result<Json<OutboxState>, ApiError> {
    auth.require(&[Role::Admin])?;
    let (pending, delivered, dead) = s.engine.read(crate::outbox::counts)?;
    Ok(Json(OutboxState {
        pending,
        delivered,
        dead,
    }))
}
