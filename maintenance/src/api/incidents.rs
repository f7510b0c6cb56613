//! Incidents (`GET /incidents`, agents and admins): findings of one kind grouped per home or
//! per site (a building's supply losing pressure, a household away), each with its homes and
//! devices. Ids and kinds only: no personal data, not audited.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{AppQuery, Auth};
use super::{ApiError, AppState};
use crate::access::Role;
use crate::incidents::{self, Incident};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/incidents", get(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    #[serde(default)]
    open: Option<bool>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Serialize)]
struct Incidents {
    items: Vec<Incident>,
}

async fn list(
    State(s): State<AppState>,
    auth: Auth,
    AppQuery(q): AppQuery<Filter>,
) -> Result<Json<Incidents>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "1 to 500"));
    }
    let open_only = q.open.unwrap_or(false);
    let items = s.engine.read(|c| incidents::list(c, open_only, limit))?;
    Ok(Json(Incidents { items }))
}
