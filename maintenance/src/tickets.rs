//! Tickets for the after-sales team: the lifecycle, storage, assignment and KPIs.
//!
//! Lifecycle: `open → assigned → in_progress → resolved → closed`, with `cancelled`
//! from any active state and `resolved → open` on a recurrence. A partial unique index
//! allows one active ticket per device and fault key, so a repeated finding can only
//! attach evidence. Every function here takes the caller's connection or transaction;
//! the engine decides the transaction boundaries.

use crate::store::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::outbox::{self, OutChannel};
use crate::policy::{Policy, Priority};

/// Where a ticket is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    /// Waiting for someone to take it.
    Open,
    /// A technician has it.
    Assigned,
    /// The visit or repair is under way.
    InProgress,
    /// Fixed; waiting for the follow-up and closing.
    Resolved,
    /// Done for good.
    Closed,
    /// Withdrawn.
    Cancelled,
}

impl TicketStatus {
    /// Lower-case name as stored and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Open => "open",
            TicketStatus::Assigned => "assigned",
            TicketStatus::InProgress => "in_progress",
            TicketStatus::Resolved => "resolved",
            TicketStatus::Closed => "closed",
            TicketStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(s: &str) -> Option<TicketStatus> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }

    /// Open, assigned or in progress.
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            TicketStatus::Open | TicketStatus::Assigned | TicketStatus::InProgress
        )
    }

    /// Whether the lifecycle allows `self → to`.
    pub fn can_go(self, to: TicketStatus) -> bool {
        use TicketStatus::*;
        matches!(
            (self, to),
            (Open, Assigned | Resolved | Cancelled)
                | (Assigned, Open | InProgress | Resolved | Cancelled)
                | (InProgress, Assigned | Resolved | Cancelled)
                | (Resolved, Open | Closed)
        )
    }
}

/// A ticket as stored. The API shapes it per role (see `api::tickets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// Ticket id.
    pub id: i64,
    /// The device.
    pub device_id: String,
    /// The device's home.
    pub home_id: String,
    /// Policy key of the finding kind.
    pub kind: String,
    /// De-duplication key within the device.
    pub fault_key: String,
    /// Priority.
    pub priority: Priority,
    /// Skill needed.
    pub skill: String,
    /// `finding`, `homeowner` (booked) or `filter_due`.
    pub source: String,
    /// Lifecycle status.
    pub status: TicketStatus,
    /// The device reported the condition cleared; an agent should confirm and resolve.
    pub condition_cleared: bool,
    /// When the condition began, UTC ms.
    pub began_ts_ms: i64,
    /// When the ticket was opened, UTC ms.
    pub opened_ts_ms: i64,
    /// Deadline, UTC ms.
    pub deadline_ts_ms: i64,
    /// First human action, UTC ms.
    pub ack_ts_ms: Option<i64>,
    /// Resolution time, UTC ms.
    pub resolved_ts_ms: Option<i64>,
    /// Closing (or cancelling) time, UTC ms.
    pub closed_ts_ms: Option<i64>,
    /// Technician id.
    pub assignee: Option<String>,
    /// Escalations so far.
    pub escalation_level: u32,
    /// The deadline was missed.
    pub breached: bool,
    /// Times reopened by a recurrence.
    pub reopen_count: u32,
    /// The earlier ticket this one recurs from.
    pub linked_ticket_id: Option<i64>,
    /// A later ticket recurs from this one (so it was not a first-time fix).
    pub recurred: bool,
    /// Visit address snapshot; purged after closing.
    pub visit_address: Option<String>,
    /// Homeowner's rating 1 to 5.
    pub satisfaction: Option<u8>,
}

const COLS: &str = "id, device_id, home_id, kind, fault_key, priority, skill, source, status, condition_cleared,
    began_ts_ms, opened_ts_ms, deadline_ts_ms, ack_ts_ms, resolved_ts_ms, closed_ts_ms, assignee,
    escalation_level, breached, reopen_count, linked_ticket_id, recurred, visit_address, satisfaction";

fn row(r: &crate::store::Row<'_>) -> crate::store::Result<Ticket> {
    let priority: String = r.get(5)?;
    let status: String = r.get(8)?;
    Ok(Ticket {
        id: r.get(0)?,
        device_id: r.get(1)?,
        home_id: r.get(2)?,
        kind: r.get(3)?,
        fault_key: r.get(4)?,
        priority: Priority::parse(&priority).unwrap_or(Priority::Normal),
        skill: r.get(6)?,
        source: r.get(7)?,
        status: TicketStatus::parse(&status).unwrap_or(TicketStatus::Open),
        condition_cleared: r.get(9)?,
        began_ts_ms: r.get(10)?,
        opened_ts_ms: r.get(11)?,
        deadline_ts_ms: r.get(12)?,
        ack_ts_ms: r.get(13)?,
        resolved_ts_ms: r.get(14)?,
        closed_ts_ms: r.get(15)?,
        assignee: r.get(16)?,
        escalation_level: r.get(17)?,
        breached: r.get(18)?,
        reopen_count: r.get(19)?,
        linked_ticket_id: r.get(20)?,
        recurred: r.get(21)?,
        visit_address: r.get(22)?,
        satisfaction: r.get(23)?,
    })
}

/// One ticket.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Ticket>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLS} FROM tickets WHERE id = ?1"),
            [id],
            row,
        )
        .optional()?)
}

/// One ticket, or [`Error::NotFound`].
pub fn must_get(conn: &Connection, id: i64) -> Result<Ticket> {
    get(conn, id)?.ok_or_else(|| Error::not_found("ticket", id))
}

/// The active ticket for a device and fault key, if any.
pub fn active_for(conn: &Connection, device_id: &str, fault_key: &str) -> Result<Option<Ticket>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLS} FROM tickets WHERE device_id = ?1 AND fault_key = ?2
                 AND status IN ('open', 'assigned', 'in_progress')"
            ),
            params![device_id, fault_key],
            row,
        )
        .optional()?)
}

/// The most recently resolved (or closed) ticket for a device and fault key, resolved after `since_ms`.
pub fn recent_finished(
    conn: &Connection,
    device_id: &str,
    fault_key: &str,
    since_ms: i64,
) -> Result<Option<Ticket>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLS} FROM tickets WHERE device_id = ?1 AND fault_key = ?2
                 AND status IN ('resolved', 'closed') AND resolved_ts_ms >= ?3
                 ORDER BY resolved_ts_ms DESC, id DESC LIMIT 1"
            ),
            params![device_id, fault_key, since_ms],
            row,
        )
        .optional()?)
}

/// Which tickets to list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TicketFilter {
    /// Only this home.
    pub home_id: Option<String>,
    /// Only this technician's.
    pub assignee: Option<String>,
    /// Only this status.
    pub status: Option<TicketStatus>,
    /// Only this device.
    pub device_id: Option<String>,
}

/// Tickets matching `f`, newest first, at most 500.
pub fn list(conn: &Connection, f: &TicketFilter) -> Result<Vec<Ticket>> {
    let first = crate::page::Page {
        limit: crate::page::MAX_LIMIT,
        offset: 0,
    };
    Ok(list_page(conn, f, first)?.items)
}

/// One page of the tickets matching `f`, newest first.
pub fn list_page(
    conn: &Connection,
    f: &TicketFilter,
    page: crate::page::Page,
) -> Result<crate::page::Paged<Ticket>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLS} FROM tickets WHERE (CAST(?1 AS TEXT) IS NULL OR home_id = ?1)
         AND (CAST(?2 AS TEXT) IS NULL OR assignee = ?2)
         AND (CAST(?3 AS TEXT) IS NULL OR status = ?3) AND (CAST(?4 AS TEXT) IS NULL OR device_id = ?4) ORDER BY id DESC LIMIT ?5 OFFSET ?6"
    ))?;
    let rows = stmt
        .query_map(
            params![
                f.home_id,
                f.assignee,
                f.status.map(|s| s.as_str()),
                f.device_id,
                page.sql_limit(),
                page.sql_offset()
            ],
            row,
        )?
        .collect::<crate::store::Result<Vec<_>>>()?;
    Ok(page.finish(rows))
}

/// Evidence attached to a ticket: `(ts_ms, severity, evidence)`, oldest first.
pub fn evidence(conn: &Connection, id: i64) -> Result<Vec<(i64, String, serde_json::Value)>> {
    let mut stmt = conn.prepare(
        "SELECT ts_ms, severity, evidence FROM ticket_evidence WHERE ticket_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([id], |r| {
            let e: String = r.get(2)?;
            Ok((
                r.get(0)?,
                r.get(1)?,
                serde_json::from_str(&e).unwrap_or(serde_json::Value::Null),
            ))
        })?
        .collect::<crate::store::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A ticket to open.
pub(crate) struct NewTicket<'a> {
    pub device_id: &'a str,
    pub home_id: &'a str,
    pub kind: &'a str,
    pub fault_key: &'a str,
    pub priority: Priority,
    pub skill: &'a str,
    pub source: &'a str,
    pub began_ts_ms: i64,
    pub deadline_ms: i64,
    pub linked_ticket_id: Option<i64>,
    pub visit_address: &'a str,
}

/// Inserts an open ticket and its history line.
pub(crate) fn insert(tx: &Transaction<'_>, t: &NewTicket<'_>, now_ms: i64) -> Result<i64> {
    let id: i64 = tx.query_row(
        "INSERT INTO tickets (device_id, home_id, kind, fault_key, priority, skill, source, status,
            began_ts_ms, opened_ts_ms, deadline_ts_ms, linked_ticket_id, visit_address)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?9, ?10, ?11, ?12) RETURNING id",
        params![
            t.device_id,
            t.home_id,
            t.kind,
            t.fault_key,
            t.priority.as_str(),
            t.skill,
            t.source,
            t.began_ts_ms,
            now_ms,
            now_ms + t.deadline_ms,
            t.linked_ticket_id,
            t.visit_address
        ],
        |r| r.get(0),
    )?;
    history(
        tx,
        id,
        now_ms,
        "system",
        None,
        TicketStatus::Open,
        Some(t.source),
    )?;
    Ok(id)
}

/// Appends a history line.
pub(crate) fn history(
    tx: &Transaction<'_>,
    id: i64,
    now_ms: i64,
    actor: &str,
    from: Option<TicketStatus>,
    to: TicketStatus,
    note: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO ticket_history (ticket_id, ts_ms, actor, from_status, to_status, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            now_ms,
            actor,
            from.map(|s| s.as_str()),
            to.as_str(),
            note
        ],
    )?;
    Ok(())
}

/// Attaches evidence to a ticket.
pub(crate) fn add_evidence(
    tx: &Transaction<'_>,
    id: i64,
    now_ms: i64,
    severity: &str,
    evidence: &serde_json::Value,
) -> Result<()> {
    tx.execute(
        "INSERT INTO ticket_evidence (ticket_id, ts_ms, severity, evidence) VALUES (?1, ?2, ?3, ?4)",
        params![id, now_ms, severity, evidence.to_string()],
    )?;
    Ok(())
}

/// Writes one outbox row per ticket webhook for a ticket event (ids, no personal data).
pub(crate) fn emit(
    tx: &Transaction<'_>,
    webhooks: &[String],
    topic: &str,
    ticket_id: i64,
    now_ms: i64,
) -> Result<()> {
    if webhooks.is_empty() {
        return Ok(());
    }
    let t = must_get(tx, ticket_id)?;
    let payload = serde_json::json!({
        "event": topic,
        "ts_ms": now_ms,
        "ticket": {
            "id": t.id, "device_id": t.device_id, "home_id": t.home_id, "kind": t.kind,
            "fault_key": t.fault_key, "priority": t.priority, "skill": t.skill, "status": t.status,
            "condition_cleared": t.condition_cleared, "opened_ts_ms": t.opened_ts_ms,
            "deadline_ts_ms": t.deadline_ts_ms, "assignee": t.assignee,
            "escalation_level": t.escalation_level, "reopen_count": t.reopen_count,
            "linked_ticket_id": t.linked_ticket_id,
        }
    });
    for url in webhooks {
        outbox::enqueue(tx, OutChannel::Webhook, url, topic, &payload, now_ms)?;
    }
    Ok(())
}

/// Moves a ticket through its lifecycle, checking the transition.
///
/// The first transition by anyone other than `system` acknowledges the ticket.
pub(crate) fn transition(
    tx: &Transaction<'_>,
    policy: &Policy,
    id: i64,
    to: TicketStatus,
    actor: &str,
    note: Option<&str>,
    now_ms: i64,
) -> Result<Ticket> {
    let t = must_get(tx, id)?;
    if !t.status.can_go(to) {
        return Err(Error::InvalidTransition {
            id,
            from: t.status.as_str(),
            to: to.as_str(),
        });
    }
    if to == TicketStatus::Assigned && t.assignee.is_none() {
        return Err(Error::invalid(
            "assignee",
            "assign a technician to move a ticket to assigned",
        ));
    }
    tx.execute(
        "UPDATE tickets SET status = ?2 WHERE id = ?1",
        params![id, to.as_str()],
    )?;
    if actor != "system" && t.ack_ts_ms.is_none() {
        tx.execute(
            "UPDATE tickets SET ack_ts_ms = ?2 WHERE id = ?1",
            params![id, now_ms],
        )?;
    }
    match to {
        TicketStatus::Resolved => {
            tx.execute(
                "UPDATE tickets SET resolved_ts_ms = ?2, followup_due_ts_ms = ?3,
                 breached = CASE WHEN breached != 0 OR ?2 > deadline_ts_ms THEN 1 ELSE 0 END WHERE id = ?1",
                params![id, now_ms, now_ms + policy.followup_ms],
            )?;
        }
        TicketStatus::Closed | TicketStatus::Cancelled => {
            tx.execute(
                "UPDATE tickets SET closed_ts_ms = ?2 WHERE id = ?1",
                params![id, now_ms],
            )?;
        }
        TicketStatus::Open => {
            // Reopened (recurrence) or handed back: the follow-up no longer applies.
            if t.status == TicketStatus::Resolved {
                tx.execute(
                    "UPDATE tickets SET reopen_count = reopen_count + 1, resolved_ts_ms = NULL,
                     followup_due_ts_ms = NULL, condition_cleared = 0, assignee = NULL WHERE id = ?1",
                    [id],
                )?;
                tx.execute(
                    "UPDATE reminders SET status = 'cancelled'
                     WHERE ticket_id = ?1 AND kind = 'satisfaction' AND status = 'scheduled'",
                    [id],
                )?;
            } else {
                tx.execute("UPDATE tickets SET assignee = NULL WHERE id = ?1", [id])?;
            }
        }
        _ => {}
    }
    history(tx, id, now_ms, actor, Some(t.status), to, note)?;
    must_get(tx, id)
}

/// Assigns a ticket to `technician` (or, if `None`, to the least-loaded technician with the
/// home's region and the ticket's skill). Returns the technician chosen, if any.
pub(crate) fn assign(
    tx: &Transaction<'_>,
    policy: &Policy,
    id: i64,
    technician: Option<&str>,
    actor: &str,
    now_ms: i64,
) -> Result<Option<String>> {
    let t = must_get(tx, id)?;
    if !t.status.is_active() {
        return Err(Error::InvalidTransition {
            id,
            from: t.status.as_str(),
            to: "assigned",
        });
    }
    let chosen: Option<String> = match technician {
        Some(tech) => {
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM technicians WHERE id = ?1)",
                [tech],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(Error::not_found("technician", tech));
            }
            Some(tech.to_owned())
        }
        None => tx
            .query_row(
                &format!(
                    "SELECT t.id FROM technicians t, homes h
                     WHERE h.id = ?1 AND t.region = h.region
                       AND EXISTS (SELECT 1 FROM {} WHERE value = ?2)
                     ORDER BY (SELECT COUNT(*) FROM tickets k WHERE k.assignee = t.id
                               AND k.status IN ('open', 'assigned', 'in_progress')), t.id
                     LIMIT 1",
                    tx.dialect().json_array_elements("t.skills")
                ),
                params![t.home_id, t.skill],
                |r| r.get(0),
            )
            .optional()?,
    };
    let Some(tech) = chosen else {
        tracing::info!(ticket = id, skill = %t.skill, "No technician with the region and skill; ticket stays open.");
        return Ok(None);
    };
    tx.execute(
        "UPDATE tickets SET assignee = ?2 WHERE id = ?1",
        params![id, tech],
    )?;
    if t.status == TicketStatus::Assigned {
        history(
            tx,
            id,
            now_ms,
            actor,
            Some(t.status),
            TicketStatus::Assigned,
            Some(&format!("reassigned to {tech}")),
        )?;
        if actor != "system" && t.ack_ts_ms.is_none() {
            tx.execute(
                "UPDATE tickets SET ack_ts_ms = ?2 WHERE id = ?1",
                params![id, now_ms],
            )?;
        }
    } else if t.status == TicketStatus::Open {
        transition(
            tx,
            policy,
            id,
            TicketStatus::Assigned,
            actor,
            Some(&format!("assigned to {tech}")),
            now_ms,
        )?;
    }
    Ok(Some(tech))
}

/// Service KPIs over tickets opened in `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kpi {
    /// Tickets opened in the window.
    pub tickets: u64,
    /// Mean time from opening to the first human action, ms.
    pub mean_ack_ms: Option<f64>,
    /// Mean time from opening to resolution, ms.
    pub mean_resolve_ms: Option<f64>,
    /// Resolved tickets that were neither reopened nor recurred, over resolved tickets.
    pub first_time_fix_rate: Option<f64>,
    /// Tickets that missed their deadline, over tickets in the window.
    pub deadline_breach_rate: Option<f64>,
    /// Active tickets now (any window).
    pub open_backlog: u64,
    /// Set when the mean response time exceeds the policy's threshold.
    pub warning: Option<String>,
}

/// Computes the KPIs.
pub fn kpi(conn: &Connection, policy: &Policy, from_ms: i64, to_ms: i64) -> Result<Kpi> {
    let (tickets, mean_ack_ms, mean_resolve_ms, resolved, ftf, breached): (
        u64,
        Option<f64>,
        Option<f64>,
        u64,
        u64,
        u64,
    ) = conn.query_row(
        "SELECT COUNT(*), AVG(ack_ts_ms - opened_ts_ms), AVG(resolved_ts_ms - opened_ts_ms),
                COALESCE(SUM(CASE WHEN resolved_ts_ms IS NOT NULL OR status = 'closed' THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN (resolved_ts_ms IS NOT NULL OR status = 'closed') AND reopen_count = 0
                                   AND recurred = 0 THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(breached), 0)
         FROM tickets WHERE opened_ts_ms >= ?1 AND opened_ts_ms < ?2 AND status != 'cancelled'",
        params![from_ms, to_ms],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
    )?;
    let open_backlog: u64 = conn.query_row(
        "SELECT COUNT(*) FROM tickets WHERE status IN ('open', 'assigned', 'in_progress')",
        [],
        |r| r.get(0),
    )?;
    let warning = match mean_ack_ms {
        Some(m) if m > policy.max_mean_ack_ms as f64 => Some(format!(
            "mean time to acknowledge {:.1} h exceeds the {:.1} h threshold",
            m / 3_600_000.0,
            policy.max_mean_ack_ms as f64 / 3_600_000.0
        )),
        _ => None,
    };
    if let Some(w) = &warning {
        tracing::warn!(warning = %w, "Service response time above threshold.");
    }
    Ok(Kpi {
        tickets,
        mean_ack_ms,
        mean_resolve_ms,
        first_time_fix_rate: (resolved > 0).then(|| ftf as f64 / resolved as f64),
        deadline_breach_rate: (tickets > 0).then(|| breached as f64 / tickets as f64),
        open_backlog,
        warning,
    })
}

/// Active tickets now, per priority (every priority listed, zero included), and how many
/// of them are past their deadline: the backlog a dashboard plots over time.
pub fn backlog_by_priority(conn: &Connection, now_ms: i64) -> Result<Vec<(Priority, u64, u64)>> {
    let mut out: Vec<(Priority, u64, u64)> = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ]
    .into_iter()
    .map(|p| (p, 0, 0))
    .collect();
    let mut stmt = conn.prepare(
        "SELECT priority, COUNT(*), COALESCE(SUM(CASE WHEN deadline_ts_ms < ?1 THEN 1 ELSE 0 END), 0) FROM tickets
         WHERE status IN ('open', 'assigned', 'in_progress') GROUP BY priority",
    )?;
    let rows = stmt.query_map(params![now_ms], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u64>(1)?,
            r.get::<_, u64>(2)?,
        ))
    })?;
    for row in rows {
        let (name, open, overdue) = row?;
        if let Some(slot) =
            Priority::parse(&name).and_then(|p| out.iter_mut().find(|(q, _, _)| *q == p))
        {
            slot.1 = open;
            slot.2 = overdue;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::TicketStatus::*;

    #[test]
    fn lifecycle_allows_the_forward_path_and_forbids_skips() {
        assert!(
            Open.can_go(Assigned) && Assigned.can_go(InProgress) && InProgress.can_go(Resolved)
        );
        assert!(Resolved.can_go(Closed) && Resolved.can_go(Open));
        assert!(!Open.can_go(Closed) && !Closed.can_go(Open) && !Cancelled.can_go(Open));
        assert!(!Open.can_go(InProgress));
    }
}
