//! Administration: tokens and who a token belongs to (`/me`), the audit log, KPIs, fleet
//! health, manual findings and the outbox state.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{AppJson, AppPath, AppQuery, Auth};
use super::{check_id, ApiError, AppState};
use crate::access::{AuditEntry, IssuedToken, Role, TokenInfo, DEFAULT_TOKEN_TTL_MS};
use crate::engine::Outcome;
use crate::finding::Finding;
use crate::fleet::{self, FleetStats};
use crate::tickets::Kpi;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/tokens", post(issue_token).get(list_tokens))
        .route("/tokens/{id}/revoke", post(revoke_token))
        .route("/tokens/{id}/rotate", post(rotate_token))
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
    /// Life in days (1 to 365); 90 if absent.
    #[serde(default)]
    ttl_days: Option<u32>,
}

/// Days (1 to 365) as ms, or the default life.
fn ttl_ms(days: Option<u32>) -> Result<i64, ApiError> {
    match days {
        None => Ok(DEFAULT_TOKEN_TTL_MS),
        Some(d @ 1..=365) => Ok(i64::from(d) * 86_400_000),
        Some(_) => Err(ApiError::invalid("ttl_days", "1 to 365")),
    }
}

async fn issue_token(
    State(s): State<AppState>,
    auth: Auth,
    AppJson(req): AppJson<TokenRequest>,
) -> Result<Json<IssuedToken>, ApiError> {
    auth.require(&[Role::Admin])?;
    if let Some(sub) = &req.subject {
        check_id("subject", sub)?;
    }
    let ttl = ttl_ms(req.ttl_days)?;
    let issued = s
        .engine
        .issue_token_for(req.role, req.subject.as_deref(), ttl, s.now())?;
    s.engine.audit(
        &auth.0,
        "issue_token",
        &format!("token/{}", issued.id),
        s.now(),
    )?;
    tracing::info!(by = %auth.0.label, role = req.role.as_str(), id = %issued.id, "Token issued.");
    Ok(Json(issued))
}

async fn list_tokens(
    State(s): State<AppState>,
    auth: Auth,
    AppQuery(q): AppQuery<Limit>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    auth.require(&[Role::Admin])?;
    let limit = q
        .limit
        .unwrap_or(super::DEFAULT_PAGE)
        .clamp(1, super::MAX_PAGE);
    Ok(Json(s.engine.list_tokens(limit, s.now())?))
}

async fn revoke_token(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    auth.require(&[Role::Admin])?;
    let info = s.engine.revoke_token(&id, s.now())?;
    s.engine.audit(
        &auth.0,
        "revoke_token",
        &format!("token/{}", info.id),
        s.now(),
    )?;
    tracing::info!(by = %auth.0.label, id = %info.id, "Token revoked.");
    Ok(Json(info))
}

async fn rotate_token(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<String>,
) -> Result<Json<IssuedToken>, ApiError> {
    auth.require(&[Role::Admin])?;
    let issued = s.engine.rotate_token(&id, s.now())?;
    s.engine.audit(
        &auth.0,
        "rotate_token",
        &format!("token/{id}->{}", issued.id),
        s.now(),
    )?;
    tracing::info!(by = %auth.0.label, old = %id, new = %issued.id, "Token rotated.");
    Ok(Json(issued))
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
