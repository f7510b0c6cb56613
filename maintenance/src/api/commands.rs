//! Remote commands (`/tickets/{id}/commands`, `/devices/{id}/commands`, `/commands`):
//! agents and admins send a device a command and follow it through
//! `queued → sent → acknowledged → done | failed | expired`; the technician a ticket is
//! assigned to may do the same from that ticket. Every command sent is audited (in the
//! engine, in the same transaction as the command); the device's answer lands on the
//! ticket's evidence.

use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::{AppJson, AppPath, AppQuery, Auth};
use super::{check_id, check_text, page_of, paged_answer, ApiError, AppState};
use crate::access::Role;
use crate::commands::{self, CommandFilter, CommandRecord, CommandState, NewCommand};
use crate::page::PageQuery;
use crate::tickets;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/commands", get(list))
        .route(
            "/tickets/{id}/commands",
            get(ticket_commands).post(ticket_send),
        )
        .route(
            "/devices/{id}/commands",
            get(device_commands).post(device_send),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    /// The command in the contract's form: `"report_diagnostics"`, `{"reset_cartridge":{"slot":1}}`.
    command: serde_json::Value,
    #[serde(default)]
    reason: Option<String>,
    /// Seconds before it expires unanswered (default 15 minutes, at most a day).
    #[serde(default)]
    ttl_s: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    offset: Option<u32>,
}

/// The ticket, if the caller may send commands for it and read them: staff, or the
/// technician it is assigned to; 404 otherwise (homeowners included).
fn ticket_for(s: &AppState, auth: &Auth, id: i64) -> Result<tickets::Ticket, ApiError> {
    auth.require(&[Role::Admin, Role::Agent, Role::Technician])?;
    let t = s
        .engine
        .read(|c| tickets::get(c, id))?
        .ok_or(ApiError::NotFound("ticket"))?;
    if auth.role() == Role::Technician
        && (auth.technician().is_none() || t.assignee.as_deref() != auth.technician())
    {
        return Err(ApiError::NotFound("ticket"));
    }
    Ok(t)
}

fn send(
    s: &AppState,
    auth: &Auth,
    device_id: &str,
    ticket_id: Option<i64>,
    req: &SendRequest,
) -> Result<Json<CommandRecord>, ApiError> {
    let command = commands::parse_command(&req.command)?;
    let reason = req
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if let Some(r) = reason {
        check_text("reason", r, 200)?;
    }
    let ttl_ms = req
        .ttl_s
        .map_or(commands::DEFAULT_TTL_MS, |s| i64::from(s) * 1000);
    let c = s.engine.send_command(
        &NewCommand {
            device_id,
            ticket_id,
            command: &command,
            requested_by: &auth.0.label,
            reason,
            ttl_ms,
        },
        s.now(),
    )?;
    Ok(Json(c))
}

async fn ticket_send(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<i64>,
    AppJson(req): AppJson<SendRequest>,
) -> Result<Json<CommandRecord>, ApiError> {
    let t = ticket_for(&s, &auth, id)?;
    send(&s, &auth, &t.device_id, Some(id), &req)
}

async fn device_send(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(device_id): AppPath<String>,
    AppJson(req): AppJson<SendRequest>,
) -> Result<Json<CommandRecord>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    check_id("device_id", &device_id)?;
    send(&s, &auth, &device_id, None, &req)
}

fn page_answer(
    s: &AppState,
    uri: &axum::http::Uri,
    f: CommandFilter,
    limit: Option<u32>,
    offset: Option<u32>,
) -> Result<(HeaderMap, Json<Vec<CommandRecord>>), ApiError> {
    let page = page_of(PageQuery { limit, offset })?;
    let list = s.engine.commands(&f, page)?;
    Ok(paged_answer(uri, page, list.items, list.next_offset))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageOnly {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    offset: Option<u32>,
}

async fn ticket_commands(
    State(s): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    AppPath(id): AppPath<i64>,
    AppQuery(q): AppQuery<PageOnly>,
) -> Result<(HeaderMap, Json<Vec<CommandRecord>>), ApiError> {
    ticket_for(&s, &auth, id)?;
    let f = CommandFilter {
        ticket_id: Some(id),
        ..CommandFilter::default()
    };
    page_answer(&s, &uri, f, q.limit, q.offset)
}

async fn device_commands(
    State(s): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    AppPath(device_id): AppPath<String>,
    AppQuery(q): AppQuery<PageOnly>,
) -> Result<(HeaderMap, Json<Vec<CommandRecord>>), ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    check_id("device_id", &device_id)?;
    let f = CommandFilter {
        device_id: Some(device_id),
        ..CommandFilter::default()
    };
    page_answer(&s, &uri, f, q.limit, q.offset)
}

async fn list(
    State(s): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<(HeaderMap, Json<Vec<CommandRecord>>), ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    if let Some(d) = &q.device_id {
        check_id("device_id", d)?;
    }
    let status = match q.status.as_deref() {
        None => None,
        Some(st) => Some(CommandState::parse(st).ok_or_else(|| {
            ApiError::invalid(
                "status",
                "queued, sent, acknowledged, done, failed or expired",
            )
        })?),
    };
    let f = CommandFilter {
        device_id: q.device_id,
        ticket_id: None,
        status,
    };
    page_answer(&s, &uri, f, q.limit, q.offset)
}
