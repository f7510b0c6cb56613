//! Revealing a homeowner's phone number (`POST /tickets/{id}/reveal`): service staff see
//! phones masked (`138****1234`) by default; an agent or admin — or the technician the
//! ticket is assigned to — who must call gives a reason, and gets the number. Every
//! reveal is audited with its reason.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{AppJson, AppPath, Auth};
use super::{ApiError, AppState};
use crate::access::Role;
use crate::{registry, tickets};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/tickets/{id}/reveal", post(reveal))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevealRequest {
    reason: String,
}

#[derive(Serialize)]
struct Revealed {
    phone: String,
}

async fn reveal(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<i64>,
    AppJson(req): AppJson<RevealRequest>,
) -> Result<Json<Revealed>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent, Role::Technician])?;
    let reason = req.reason.trim();
    if reason.chars().count() < 3 || reason.len() > 200 || reason.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "reason",
            "3 to 200 characters, no control characters",
        ));
    }
    let t = s
        .engine
        .read(|c| tickets::get(c, id))?
        .ok_or(ApiError::NotFound("ticket"))?;
    if auth.role() == Role::Technician
        && (auth.technician().is_none() || t.assignee.as_deref() != auth.technician())
    {
        return Err(ApiError::NotFound("ticket"));
    }
    let home = s
        .engine
        .read(|c| registry::get_home(c, &t.home_id))?
        .ok_or(ApiError::NotFound("contact"))?;
    s.engine.audit(
        &auth.0,
        "reveal_phone",
        &format!("ticket/{id} reason: {reason}"),
        s.now(),
    )?;
    tracing::info!(by = %auth.0.label, ticket = id, "Phone number revealed (audited).");
    Ok(Json(Revealed {
        phone: home.owner.phone,
    }))
}
