//! The registry API: homes (with owner contact data, audited on every read), devices
//! with cartridge specs and filter schedules, and technicians.

use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};

use super::extract::{AppJson, AppPath, AppQuery, Auth};
use super::{check_id, page_of, paged_answer, ApiError, AppState};
use crate::access::Role;
use crate::engine::FilterSchedule;
use crate::page::PageQuery;
use crate::registry::{self, Device, Home, Technician};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/homes", get(list_homes).post(put_home))
        .route("/homes/{id}", get(get_home))
        .route("/homes/{id}/devices", get(home_devices))
        .route("/devices", axum::routing::post(put_device))
        .route("/devices/{id}", get(get_device))
        .route("/devices/{id}/filters", get(device_filters))
        .route("/technicians", get(list_technicians).post(put_technician))
}

/// Fails with 404 unless the caller may see `home_id` (admins and agents see all homes).
pub(super) fn can_see_home(auth: &Auth, home_id: &str) -> Result<(), ApiError> {
    match auth.role() {
        Role::Admin | Role::Agent => Ok(()),
        Role::Homeowner if auth.home() == Some(home_id) => Ok(()),
        Role::Homeowner => Err(ApiError::NotFound("home")),
        Role::Technician | Role::Operator => Err(ApiError::Forbidden),
    }
}

async fn list_homes(
    State(s): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    AppQuery(q): AppQuery<PageQuery>,
) -> Result<(HeaderMap, Json<Vec<Home>>), ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    let page = page_of(q)?;
    let homes = s.engine.read(|c| registry::list_homes(c, page))?;
    s.engine.audit(&auth.0, "list_homes", "home/*", s.now())?;
    Ok(paged_answer(&uri, page, homes.items, homes.next_offset))
}

async fn put_home(
    State(s): State<AppState>,
    auth: Auth,
    AppJson(home): AppJson<Home>,
) -> Result<Json<Home>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    s.engine.put_home(&home)?;
    Ok(Json(home))
}

async fn get_home(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<String>,
) -> Result<Json<Home>, ApiError> {
    check_id("id", &id)?;
    can_see_home(&auth, &id)?;
    let home = s
        .engine
        .read(|c| registry::get_home(c, &id))?
        .ok_or(ApiError::NotFound("home"))?;
    s.engine
        .audit(&auth.0, "read_home", &format!("home/{id}"), s.now())?;
    Ok(Json(home))
}

async fn home_devices(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<String>,
) -> Result<Json<Vec<Device>>, ApiError> {
    check_id("id", &id)?;
    can_see_home(&auth, &id)?;
    s.engine
        .read(|c| registry::get_home(c, &id))?
        .ok_or(ApiError::NotFound("home"))?;
    Ok(Json(
        s.engine.read(|c| registry::list_devices(c, Some(&id)))?,
    ))
}

async fn put_device(
    State(s): State<AppState>,
    auth: Auth,
    AppJson(device): AppJson<Device>,
) -> Result<Json<Device>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    s.engine.put_device_at(&device, s.now())?;
    let stored = s
        .engine
        .read(|c| registry::get_device(c, &device.id))?
        .ok_or(ApiError::NotFound("device"))?;
    Ok(Json(stored))
}

/// The device, if the caller may see its home (404 otherwise).
fn visible_device(s: &AppState, auth: &Auth, id: &str) -> Result<Device, ApiError> {
    check_id("id", id)?;
    if matches!(auth.role(), Role::Technician | Role::Operator) {
        return Err(ApiError::Forbidden);
    }
    let device = s
        .engine
        .read(|c| registry::get_device(c, id))?
        .ok_or(ApiError::NotFound("device"))?;
    can_see_home(auth, &device.home_id).map_err(|_| ApiError::NotFound("device"))?;
    Ok(device)
}

async fn get_device(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<String>,
) -> Result<Json<Device>, ApiError> {
    Ok(Json(visible_device(&s, &auth, &id)?))
}

async fn device_filters(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<String>,
) -> Result<Json<Vec<FilterSchedule>>, ApiError> {
    let device = visible_device(&s, &auth, &id)?;
    Ok(Json(s.engine.filters(&device.id)?))
}

async fn list_technicians(
    State(s): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    AppQuery(q): AppQuery<PageQuery>,
) -> Result<(HeaderMap, Json<Vec<Technician>>), ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    let page = page_of(q)?;
    let list = s.engine.read(|c| registry::list_technicians(c, page))?;
    Ok(paged_answer(&uri, page, list.items, list.next_offset))
}

async fn put_technician(
    State(s): State<AppState>,
    auth: Auth,
    AppJson(t): AppJson<Technician>,
) -> Result<Json<Technician>, ApiError> {
    auth.require(&[Role::Admin])?;
    s.engine.put_technician(&t)?;
    Ok(Json(t))
}
