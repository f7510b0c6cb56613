//! The reminders API: a homeowner lists their home's reminders and acts on them
//! (snooze, done, book); agents see all of them.

use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{AppJson, AppPath, AppQuery, Auth};
use super::{check_id, page_of, paged_answer, ApiError, AppState};
use crate::access::Role;
use crate::page::PageQuery;
use crate::reminders::{self, Reminder};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/reminders", get(list))
        .route("/reminders/{id}", get(one))
        .route("/reminders/{id}/snooze", post(snooze))
        .route("/reminders/{id}/done", post(done))
        .route("/reminders/{id}/book", post(book))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    home_id: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    offset: Option<u32>,
}

async fn list(
    State(s): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<(HeaderMap, Json<Vec<Reminder>>), ApiError> {
    if let Some(h) = &q.home_id {
        check_id("home_id", h)?;
    }
    let page = page_of(PageQuery {
        limit: q.limit,
        offset: q.offset,
    })?;
    let home = match auth.role() {
        Role::Admin | Role::Agent => q.home_id,
        Role::Homeowner => {
            if q.home_id.as_deref().is_some_and(|h| Some(h) != auth.home()) {
                return Err(ApiError::NotFound("home"));
            }
            auth.home().map(str::to_owned)
        }
        Role::Technician | Role::Operator => return Err(ApiError::Forbidden),
    };
    let list = s
        .engine
        .read(|c| reminders::list_page(c, home.as_deref(), page))?;
    Ok(paged_answer(&uri, page, list.items, list.next_offset))
}

/// The reminder, if the caller may see it; 404 otherwise.
fn visible(s: &AppState, auth: &Auth, id: i64) -> Result<Reminder, ApiError> {
    let r = s
        .engine
        .read(|c| reminders::get(c, id))?
        .ok_or(ApiError::NotFound("reminder"))?;
    match auth.role() {
        Role::Admin | Role::Agent => Ok(r),
        Role::Homeowner if auth.home() == Some(r.home_id.as_str()) => Ok(r),
        Role::Homeowner => Err(ApiError::NotFound("reminder")),
        Role::Technician | Role::Operator => Err(ApiError::Forbidden),
    }
}

async fn one(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Reminder>, ApiError> {
    Ok(Json(visible(&s, &auth, id)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnoozeRequest {
    hours: u32,
}

async fn snooze(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<i64>,
    AppJson(req): AppJson<SnoozeRequest>,
) -> Result<Json<Reminder>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent, Role::Homeowner])?;
    visible(&s, &auth, id)?;
    Ok(Json(s.engine.snooze(id, req.hours, s.now())?))
}

async fn done(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Reminder>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent, Role::Homeowner])?;
    visible(&s, &auth, id)?;
    Ok(Json(s.engine.done(id, s.now())?))
}

#[derive(Serialize)]
struct Booked {
    ticket_id: i64,
}

async fn book(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Booked>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent, Role::Homeowner])?;
    let r = visible(&s, &auth, id)?;
    check_id("device_id", &r.device_id)?;
    Ok(Json(Booked {
        ticket_id: s.engine.book(id, s.now())?,
    }))
}
