//! The tickets API, shaped per role: agents see everything; a technician sees only
//! tickets assigned to them, the homeowner's phone masked (agents too, until a reveal) and the address only while
//! the visit is open; a homeowner sees their home's tickets without contact data.
//! A detail read that shows personal data leaves an audit entry.

use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{AppJson, AppPath, AppQuery, Auth};
use super::{check_id, page_of, paged_answer, ApiError, AppState};
use crate::access::{mask_phone, Role};
use crate::page::PageQuery;
use crate::policy::Priority;
use crate::registry;
use crate::tickets::{self, Ticket, TicketFilter, TicketStatus};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/tickets", get(list))
        .route("/tickets/{id}", get(detail))
        .route("/tickets/{id}/transition", post(transition))
        .route("/tickets/{id}/assign", post(assign))
        .route("/tickets/{id}/rate", post(rate))
}

/// A ticket without personal data.
#[derive(Serialize)]
struct Summary {
    id: i64,
    device_id: String,
    home_id: String,
    kind: String,
    fault_key: String,
    priority: Priority,
    skill: String,
    source: String,
    status: TicketStatus,
    condition_cleared: bool,
    began_ts_ms: i64,
    opened_ts_ms: i64,
    deadline_ts_ms: i64,
    ack_ts_ms: Option<i64>,
    resolved_ts_ms: Option<i64>,
    closed_ts_ms: Option<i64>,
    assignee: Option<String>,
    escalation_level: u32,
    breached: bool,
    reopen_count: u32,
    linked_ticket_id: Option<i64>,
    satisfaction: Option<u8>,
    /// The home's region (lists and details; absent in action answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
}

impl From<&Ticket> for Summary {
    fn from(t: &Ticket) -> Self {
        Summary {
            id: t.id,
            device_id: t.device_id.clone(),
            home_id: t.home_id.clone(),
            kind: t.kind.clone(),
            fault_key: t.fault_key.clone(),
            priority: t.priority,
            skill: t.skill.clone(),
            source: t.source.clone(),
            status: t.status,
            condition_cleared: t.condition_cleared,
            began_ts_ms: t.began_ts_ms,
            opened_ts_ms: t.opened_ts_ms,
            deadline_ts_ms: t.deadline_ts_ms,
            ack_ts_ms: t.ack_ts_ms,
            resolved_ts_ms: t.resolved_ts_ms,
            closed_ts_ms: t.closed_ts_ms,
            assignee: t.assignee.clone(),
            escalation_level: t.escalation_level,
            breached: t.breached,
            reopen_count: t.reopen_count,
            linked_ticket_id: t.linked_ticket_id,
            satisfaction: t.satisfaction,
            region: None,
        }
    }
}

#[derive(Serialize)]
struct Contact {
    name: String,
    phone: String,
}

#[derive(Serialize)]
struct Evidence {
    ts_ms: i64,
    severity: String,
    evidence: serde_json::Value,
}

#[derive(Serialize)]
struct Detail {
    #[serde(flatten)]
    ticket: Summary,
    contact: Option<Contact>,
    address: Option<String>,
    evidence: Vec<Evidence>,
    /// The device's model, for staff (absent for an unregistered device and for homeowners).
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<protocol::message::Model>,
    /// The remote commands the board may offer for this device (the protocol catalogue's
    /// facts for its model); empty for homeowners and unregistered devices.
    commands: Vec<&'static str>,
}

/// The one-click commands of the board, in the order it shows them (a cartridge reset
/// needs a slot and is sent from the API).
const BOARD_COMMANDS: [protocol::message::CommandKind; 5] = [
    protocol::message::CommandKind::ReportDiagnostics,
    protocol::message::CommandKind::SelfTest,
    protocol::message::CommandKind::CloseInletValve,
    protocol::message::CommandKind::OpenInletValve,
    protocol::message::CommandKind::StartCleaning,
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    status: Option<TicketStatus>,
    #[serde(default)]
    device_id: Option<String>,
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
) -> Result<(HeaderMap, Json<Vec<Summary>>), ApiError> {
    for id in [&q.device_id, &q.home_id].into_iter().flatten() {
        check_id("query", id)?;
    }
    let page = page_of(PageQuery {
        limit: q.limit,
        offset: q.offset,
    })?;
    let mut f = TicketFilter {
        home_id: q.home_id,
        assignee: None,
        status: q.status,
        device_id: q.device_id,
    };
    match auth.role() {
        Role::Admin | Role::Agent => {}
        Role::Operator => return Err(ApiError::Forbidden),
        Role::Technician => f.assignee = auth.technician().map(str::to_owned),
        Role::Homeowner => {
            if f.home_id.as_deref().is_some_and(|h| Some(h) != auth.home()) {
                return Err(ApiError::NotFound("home"));
            }
            f.home_id = auth.home().map(str::to_owned);
        }
    }
    let (list, regions) = s
        .engine
        .read(|c| Ok((tickets::list_page(c, &f, page)?, crate::fleet::regions(c)?)))?;
    let rows = list
        .items
        .iter()
        .map(|t| Summary {
            region: regions.get(&t.home_id).cloned(),
            ..Summary::from(t)
        })
        .collect();
    Ok(paged_answer(&uri, page, rows, list.next_offset))
}

/// The ticket, if the caller may see it; 404 otherwise.
fn visible(s: &AppState, auth: &Auth, id: i64) -> Result<Ticket, ApiError> {
    let t = s
        .engine
        .read(|c| tickets::get(c, id))?
        .ok_or(ApiError::NotFound("ticket"))?;
    let ok = match auth.role() {
        Role::Admin | Role::Agent => true,
        Role::Technician => {
            t.assignee.as_deref() == auth.technician() && auth.technician().is_some()
        }
        Role::Homeowner => Some(t.home_id.as_str()) == auth.home(),
        Role::Operator => return Err(ApiError::Forbidden),
    };
    if ok {
        Ok(t)
    } else {
        Err(ApiError::NotFound("ticket"))
    }
}

async fn detail(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<i64>,
) -> Result<Json<Detail>, ApiError> {
    let t = visible(&s, &auth, id)?;
    let home = s.engine.read(|c| registry::get_home(c, &t.home_id))?;
    let region = home.as_ref().map(|h| h.region.clone());
    let visit_open = matches!(t.status, TicketStatus::Assigned | TicketStatus::InProgress);
    let (contact, address) = match (auth.role(), home) {
        // Staff see the phone masked; `POST /tickets/{id}/reveal` with a reason shows it (audited).
        (Role::Admin | Role::Agent, Some(h)) => (
            Some(Contact {
                name: h.owner.name,
                phone: mask_phone(&h.owner.phone),
            }),
            t.visit_address.clone(),
        ),
        (Role::Technician, Some(h)) => (
            Some(Contact {
                name: h.owner.name,
                phone: mask_phone(&h.owner.phone),
            }),
            if visit_open {
                t.visit_address.clone()
            } else {
                None
            },
        ),
        _ => (None, None),
    };
    if contact.is_some() || address.is_some() {
        s.engine
            .audit(&auth.0, "read_ticket", &format!("ticket/{id}"), s.now())?;
    }
    let evidence = s
        .engine
        .read(|c| tickets::evidence(c, id))?
        .into_iter()
        .map(|(ts_ms, severity, evidence)| Evidence {
            ts_ms,
            severity,
            evidence,
        })
        .collect();
    let model = match auth.role() {
        Role::Admin | Role::Agent | Role::Technician => s
            .engine
            .read(|c| registry::get_device(c, &t.device_id))?
            .map(|d| d.model),
        _ => None,
    };
    let commands = model.map_or_else(Vec::new, board_commands);
    Ok(Json(Detail {
        ticket: Summary {
            region,
            ..Summary::from(&t)
        },
        contact,
        address,
        evidence,
        model,
        commands,
    }))
}

/// The commands the board offers for a device of `model`, in [`BOARD_COMMANDS`] order.
fn board_commands(model: protocol::message::Model) -> Vec<&'static str> {
    BOARD_COMMANDS
        .iter()
        .filter(|c| c.supported_by(model))
        .map(|c| c.as_str())
        .collect()
}

/// Longest note on a ticket transition, in characters.
pub const MAX_NOTE_CHARS: usize = 4000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionRequest {
    to: TicketStatus,
    #[serde(default)]
    note: Option<String>,
}

async fn transition(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<i64>,
    AppJson(req): AppJson<TransitionRequest>,
) -> Result<Json<Summary>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent, Role::Technician])?;
    if let Some(note) = &req.note {
        super::check_text("note", note, MAX_NOTE_CHARS)?;
    }
    visible(&s, &auth, id)?;
    if auth.role() == Role::Technician
        && !matches!(
            req.to,
            TicketStatus::InProgress | TicketStatus::Resolved | TicketStatus::Assigned
        )
    {
        return Err(ApiError::Forbidden);
    }
    let t = s
        .engine
        .transition(id, req.to, &auth.0.label, req.note.as_deref(), s.now())?;
    Ok(Json(Summary::from(&t)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignRequest {
    #[serde(default)]
    technician_id: Option<String>,
}

#[derive(Serialize)]
struct AssignResponse {
    technician_id: Option<String>,
}

async fn assign(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<i64>,
    AppJson(req): AppJson<AssignRequest>,
) -> Result<Json<AssignResponse>, ApiError> {
    auth.require(&[Role::Admin, Role::Agent])?;
    if let Some(t) = &req.technician_id {
        check_id("technician_id", t)?;
    }
    let chosen = s
        .engine
        .assign(id, req.technician_id.as_deref(), &auth.0.label, s.now())?;
    Ok(Json(AssignResponse {
        technician_id: chosen,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateRequest {
    score: u8,
}

async fn rate(
    State(s): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<i64>,
    AppJson(req): AppJson<RateRequest>,
) -> Result<Json<Summary>, ApiError> {
    auth.require(&[Role::Admin, Role::Homeowner])?;
    visible(&s, &auth, id)?;
    s.engine.rate(id, req.score, s.now())?;
    let t = visible(&s, &auth, id)?;
    Ok(Json(Summary::from(&t)))
}

#[cfg(test)]
mod tests {
    use super::board_commands;
    use protocol::message::Model;

    #[test]
    fn the_board_offers_what_the_catalogue_says_each_model_can_do() {
        assert_eq!(
            board_commands(Model::Toilet),
            [
                "report_diagnostics",
                "self_test",
                "close_inlet_valve",
                "open_inlet_valve",
                "start_cleaning"
            ]
        );
        // A purifier has a valve but no cleaning programme; a shower has neither.
        assert_eq!(
            board_commands(Model::Purifier),
            [
                "report_diagnostics",
                "self_test",
                "close_inlet_valve",
                "open_inlet_valve"
            ]
        );
        assert_eq!(
            board_commands(Model::Shower),
            ["report_diagnostics", "self_test"]
        );
    }
}
