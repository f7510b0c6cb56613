//! Administration: tokens and who a token belongs to (`/me`), the audit log, KPIs, fleet
//! health, manual findings and the outbox state.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{AppJson, AppQuery, Auth};
use super::{check_id, ApiError, AppState};
use crate::access::{AuditEntry, Role};
use crate::engine::Outcome;
use crate::finding::Finding;
use crate::fleet::{self, FleetStats};
use crate::tickets::Kpi;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/tokens", post(issue_token))
        .route("/audit", get(audit))
        .route("/me", get(me))
        .route("/kpi", get(kpi))
        .route("/fleet", get(fleet))
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

#[derive(Serialize)]
struct Me {
    role: Role,
    subject: Option<String>,
    label: String,
}

/// Who the token belongs to: the pages use it to pick the homeowner's home and the
/// technician's tickets. Any role; it only echoes what the caller's token already says.
async fn me(auth: Auth) -> Json<Me> {
    Json(Me {
        role: auth.0.role,
        subject: auth.0.subject.clone(),
        label: auth.0.label.clone(),
    })
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetQuery {
    #[serde(default)]
    days: Option<u32>,
}

async fn fleet(
    State(s): State<AppState>,
    auth: Auth,
    AppQuery(q): AppQuery<FleetQuery>,
) -> Result<Json<FleetStats>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    let days = q.days.unwrap_or(14);
    if !(1..=90).contains(&days) {
        return Err(ApiError::invalid("days", "1 to 90"));
    }
    const DAY: i64 = protocol::catalog::DAY_MS;
    // Whole days, the last one being today (UTC), so buckets line up with dates.
    let to = (s.now().div_euclid(DAY) + 1) * DAY;
    let from = to - i64::from(days) * DAY;
    Ok(Json(s.engine.read(|c| fleet::stats(c, from, to, DAY))?))
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
