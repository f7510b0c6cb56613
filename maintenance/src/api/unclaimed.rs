//! The unclaimed-devices queue (`GET /unclaimed`, agents and admins): devices that report
//! findings but are not registered, their newest findings and the tickets opened for the
//! critical ones. Device ids, kinds and readings only: no personal data, not audited.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::{AppQuery, Auth};
use super::{ApiError, AppState};
use crate::access::Role;
use crate::unclaimed::{self, Queue};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/unclaimed", get(queue))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    #[serde(default)]
    limit: Option<usize>,
}

async fn queue(
    State(s): State<AppState>,
    auth: Auth,
    AppQuery(q): AppQuery<Limit>,
) -> Result<Json<Queue>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "1 to 500"));
    }
    Ok(Json(s.engine.read(|c| unclaimed::queue(c, limit))?))
}
