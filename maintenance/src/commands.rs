//! Remote commands to devices and their lifecycle:
//! `queued → sent → acknowledged → done | failed | expired`.
//!
//! A command is queued by an agent (API), a technician on their ticket, or the policy
//! (a critical leak closes the inlet valve; a self-service finding is confirmed by a
//! diagnostic). The gateway's dispatcher publishes queued commands on `fixtures/{id}/cmd`
//! and marks them sent ([`mark_sent`]); the device's [`CommandResult`] on
//! `fixtures/{id}/result` moves them on ([`apply_result`]): `accepted` to acknowledged,
//! `ok` to done, `failed` or `unsupported` to failed. A command unanswered by its expiry
//! is expired ([`expire`]). Every request and every result is written to the audit log in
//! the same transaction, and a result on a ticket's device is attached to the ticket's
//! evidence.
//!
//! The command's id is the row id; the device sees it as `cmd_id` (u32) and ignores a
//! repeat, so a command not answered in [`RESEND_AFTER_MS`] is sent again with the same id.

use crate::store::{params, Connection, OptionalExtension, Row, Transaction};
use protocol::message::{Command, CommandKind, CommandResult, CommandStatus, FaultCode, Model};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::page::{Page, Paged};
use crate::{registry, tickets};

/// The `commands` table (schema step 4).
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    ticket_id INTEGER,
    kind TEXT NOT NULL,
    command TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    reason TEXT,
    created_ts_ms INTEGER NOT NULL,
    expires_ts_ms INTEGER NOT NULL,
    sent_ts_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    ack_ts_ms INTEGER,
    done_ts_ms INTEGER,
    result_status TEXT,
    result TEXT,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS commands_status ON commands(status, sent_ts_ms);
CREATE INDEX IF NOT EXISTS commands_device ON commands(device_id, id);
CREATE INDEX IF NOT EXISTS commands_ticket ON commands(ticket_id, id);
"#;

/// How long a command waits for its final answer before it expires (default), ms.
pub const DEFAULT_TTL_MS: i64 = 15 * 60_000;
/// Longest life an API caller may give a command, ms (a day).
pub const MAX_TTL_MS: i64 = 24 * 3_600_000;
/// A sent command with no answer is sent again (same id) after this long, ms.
pub const RESEND_AFTER_MS: i64 = 60_000;
/// Most sends of one command.
pub const MAX_ATTEMPTS: u32 = 5;
/// Flow against the learned normal, per mille, below which a diagnostic confirms an
/// inlet clog (the firmware raises it below 600 and clears it above 800).
pub const CLOG_CONFIRM_PERMILLE: u16 = 800;

/// Where a command is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Waiting for the dispatcher.
    Queued,
    /// Published to the device (QoS 1), no answer yet.
    Sent,
    /// The device took it on (`accepted`), the final answer is pending.
    Acknowledged,
    /// The device carried it out.
    Done,
    /// The device tried and failed, or cannot do it.
    Failed,
    /// No final answer before the expiry.
    Expired,
}

impl CommandState {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Sent => "sent",
            CommandState::Acknowledged => "acknowledged",
            CommandState::Done => "done",
            CommandState::Failed => "failed",
            CommandState::Expired => "expired",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(s: &str) -> Option<CommandState> {
        Some(match s {
            "queued" => CommandState::Queued,
            "sent" => CommandState::Sent,
            "acknowledged" => CommandState::Acknowledged,
            "done" => CommandState::Done,
            "failed" => CommandState::Failed,
            "expired" => CommandState::Expired,
            _ => return None,
        })
    }

    /// Whether the command is finished (done, failed or expired).
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            CommandState::Done | CommandState::Failed | CommandState::Expired
        )
    }
}

/// One command as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// Id (the device's `cmd_id`).
    pub id: i64,
    /// The device.
    pub device_id: String,
    /// The ticket it was sent for, if any.
    pub ticket_id: Option<i64>,
    /// `self_test`, `report_diagnostics`, ...
    pub kind: String,
    /// The command as the device receives it (`"self_test"`, `{"reset_cartridge":{"slot":1}}`).
    pub command: serde_json::Value,
    /// Lifecycle state.
    pub status: CommandState,
    /// Who asked: a token's label, or `policy`.
    pub requested_by: String,
    /// Why, as given.
    pub reason: Option<String>,
    /// Queued at, UTC ms.
    pub created_ts_ms: i64,
    /// Expires at, UTC ms, unless answered.
    pub expires_ts_ms: i64,
    /// Last sent at, UTC ms.
    pub sent_ts_ms: Option<i64>,
    /// Times sent.
    pub attempts: u32,
    /// Acknowledged at, UTC ms.
    pub ack_ts_ms: Option<i64>,
    /// Finished (done, failed, expired) at, UTC ms.
    pub done_ts_ms: Option<i64>,
    /// The device's final status: `ok`, `failed`, `unsupported`.
    pub result_status: Option<String>,
    /// The device's diagnostics, if it sent any.
    pub result: Option<serde_json::Value>,
    /// What the engine concluded from the result (e.g. a confirmed inlet clog).
    pub outcome: Option<String>,
}

const COLUMNS: &str =
    "id, device_id, ticket_id, kind, command, status, requested_by, reason, created_ts_ms, \
     expires_ts_ms, sent_ts_ms, attempts, ack_ts_ms, done_ts_ms, result_status, result, outcome";

fn from_row(r: &Row<'_>) -> crate::store::Result<CommandRecord> {
    let json = |i: usize| -> crate::store::Result<Option<serde_json::Value>> {
        let s: Option<String> = r.get(i)?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
    };
    let status: String = r.get(5)?;
    Ok(CommandRecord {
        id: r.get(0)?,
        device_id: r.get(1)?,
        ticket_id: r.get(2)?,
        kind: r.get(3)?,
        command: json(4)?.unwrap_or(serde_json::Value::Null),
        status: CommandState::parse(&status).unwrap_or(CommandState::Failed),
        requested_by: r.get(6)?,
        reason: r.get(7)?,
        created_ts_ms: r.get(8)?,
        expires_ts_ms: r.get(9)?,
        sent_ts_ms: r.get(10)?,
        attempts: r.get(11)?,
        ack_ts_ms: r.get(12)?,
        done_ts_ms: r.get(13)?,
        result_status: r.get(14)?,
        result: json(15)?,
        outcome: r.get(16)?,
    })
}

/// A command to queue.
#[derive(Debug, Clone)]
pub struct NewCommand<'a> {
    /// The device.
    pub device_id: &'a str,
    /// The ticket it is for, if any (must be this device's).
    pub ticket_id: Option<i64>,
    /// What to do.
    pub command: &'a CommandKind,
    /// Who asks (audited).
    pub requested_by: &'a str,
    /// Why.
    pub reason: Option<&'a str>,
    /// Life before it expires unanswered, ms.
    pub ttl_ms: i64,
}

/// Parses the API's and the policy's way of naming a command: a JSON value in the
/// contract's form (`"self_test"`, `{"reset_cartridge":{"slot":1}}`).
pub fn parse_command(v: &serde_json::Value) -> Result<CommandKind> {
    serde_json::from_value(v.clone()).map_err(|_| {
        Error::invalid(
            "command",
            "one of \"self_test\", \"report_diagnostics\", {\"reset_cartridge\":{\"slot\":N}}, \
             \"start_cleaning\", \"close_inlet_valve\", \"open_inlet_valve\", \
             {\"set_report_interval\":{\"seconds\":N}}",
        )
    })
}

/// Queues a command (validated against the device's model), audited as `command.queue`.
/// An unfinished command of the same kind on the device is returned instead of a second.
pub fn queue(tx: &Transaction<'_>, c: &NewCommand<'_>, now_ms: i64) -> Result<(i64, bool)> {
    let device = registry::get_device(tx, c.device_id)?
        .ok_or_else(|| Error::not_found("device", c.device_id))?;
    if !c.command.supported_by(device.model) {
        return Err(Error::invalid(
            "command",
            format!(
                "a {} cannot {} (see the catalogue: inlet valves on toilets and purifiers, \
                 cleaning programmes on toilets, cartridge slots per model)",
                device.model.as_str(),
                c.command.as_str()
            ),
        ));
    }
    if let Some(tid) = c.ticket_id {
        let t = tickets::must_get(tx, tid)?;
        if t.device_id != c.device_id {
            return Err(Error::invalid(
                "ticket",
                "the ticket is about another device",
            ));
        }
    }
    if !(1..=MAX_TTL_MS).contains(&c.ttl_ms) {
        return Err(Error::invalid("ttl", "1 ms to 24 hours"));
    }
    let existing: Option<i64> = tx
        .query_row(
            "SELECT id FROM commands WHERE device_id = ?1 AND kind = ?2
             AND status IN ('queued', 'sent', 'acknowledged') ORDER BY id LIMIT 1",
            params![c.device_id, c.command.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return Ok((id, false));
    }
    let id: i64 = tx.query_row(
        "INSERT INTO commands (device_id, ticket_id, kind, command, status, requested_by, reason,
         created_ts_ms, expires_ts_ms) VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8) RETURNING id",
        params![
            c.device_id,
            c.ticket_id,
            c.command.as_str(),
            serde_json::to_string(c.command)?,
            c.requested_by,
            c.reason,
            now_ms,
            now_ms + c.ttl_ms
        ],
        |r| r.get(0),
    )?;
    if id > i64::from(u32::MAX) {
        return Err(Error::invalid("command", "command ids exhausted (u32)"));
    }
    audit(
        tx,
        c.requested_by,
        "command.queue",
        &format!("device/{}/command/{id}:{}", c.device_id, c.command.as_str()),
        now_ms,
    )?;
    if let Some(tid) = c.ticket_id {
        let t = tickets::must_get(tx, tid)?;
        tickets::history(
            tx,
            tid,
            now_ms,
            c.requested_by,
            Some(t.status),
            t.status,
            Some(&format!(
                "command {} queued (#{id}){}",
                c.command.as_str(),
                c.reason.map_or(String::new(), |r| format!(" — {r}"))
            )),
        )?;
    }
    Ok((id, true))
}

fn audit(tx: &Connection, actor: &str, action: &str, resource: &str, now_ms: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO audit (ts_ms, actor, action, resource) VALUES (?1, ?2, ?3, ?4)",
        params![now_ms, actor, action, resource],
    )?;
    Ok(())
}

/// Whether the policy already queued `command` for the device since `since_ms` (one
/// automatic command per episode of a finding).
pub fn sent_since(
    conn: &Connection,
    device_id: &str,
    command: &CommandKind,
    since_ms: i64,
) -> Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM commands WHERE device_id = ?1 AND kind = ?2
         AND requested_by = 'policy' AND created_ts_ms >= ?3",
        params![device_id, command.as_str(), since_ms],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// A command the dispatcher should publish now.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Its id.
    pub id: i64,
    /// The device.
    pub device_id: String,
    /// The message for `fixtures/{device_id}/cmd`.
    pub command: Command,
}

/// Commands to publish at `now_ms`: the queued ones, and sent ones unanswered for
/// [`RESEND_AFTER_MS`] (fewer than [`MAX_ATTEMPTS`] sends), oldest first, at most `limit`.
pub fn due(conn: &Connection, now_ms: i64, limit: usize) -> Result<Vec<Outgoing>> {
    let mut stmt = conn.prepare(
        "SELECT id, device_id, command FROM commands
         WHERE expires_ts_ms > ?1 AND (status = 'queued'
            OR (status = 'sent' AND sent_ts_ms <= ?2 AND attempts < ?3))
         ORDER BY id LIMIT ?4",
    )?;
    let rows = stmt
        .query_map(
            params![now_ms, now_ms - RESEND_AFTER_MS, MAX_ATTEMPTS, limit as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
        )?
        .collect::<crate::store::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, device_id, command) in rows {
        let command: CommandKind = serde_json::from_str(&command)?;
        out.push(Outgoing {
            id,
            device_id,
            command: Command {
                v: protocol::SCHEMA_VERSION,
                cmd_id: u32::try_from(id).unwrap_or(u32::MAX),
                ts: now_ms,
                command,
            },
        });
    }
    Ok(out)
}

/// The dispatcher published command `id` (QoS 1, the broker took it).
pub fn mark_sent(tx: &Transaction<'_>, id: i64, now_ms: i64) -> Result<()> {
    tx.execute(
        "UPDATE commands SET status = 'sent', sent_ts_ms = ?2, attempts = attempts + 1
         WHERE id = ?1 AND status IN ('queued', 'sent')",
        params![id, now_ms],
    )?;
    Ok(())
}

/// Applies a device's answer. Unknown ids (or another device's) are `NotFound`; an answer
/// to a finished command changes nothing (a redelivery). Returns the command as it stands.
pub fn apply_result(
    tx: &Transaction<'_>,
    device_id: &str,
    r: &CommandResult,
    now_ms: i64,
) -> Result<CommandRecord> {
    let id = i64::from(r.cmd_id);
    let c = get(tx, id)?
        .filter(|c| c.device_id == device_id)
        .ok_or_else(|| Error::not_found("command", id))?;
    if c.status.is_final() {
        return Ok(c);
    }
    let diagnostics = r
        .diagnostics
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    match r.status {
        CommandStatus::Accepted => {
            tx.execute(
                "UPDATE commands SET status = 'acknowledged', ack_ts_ms = COALESCE(ack_ts_ms, ?2)
                 WHERE id = ?1",
                params![id, now_ms],
            )?;
        }
        final_status => {
            let state = if final_status == CommandStatus::Ok {
                CommandState::Done
            } else {
                CommandState::Failed
            };
            let outcome = outcome(&c, r);
            tx.execute(
                "UPDATE commands SET status = ?2, ack_ts_ms = COALESCE(ack_ts_ms, ?3), done_ts_ms = ?3,
                 result_status = ?4, result = ?5, outcome = ?6 WHERE id = ?1",
                params![
                    id,
                    state.as_str(),
                    now_ms,
                    final_status.as_str(),
                    diagnostics,
                    outcome
                ],
            )?;
            audit(
                tx,
                &format!("device:{device_id}"),
                &format!("command.{}", state.as_str()),
                &format!("device/{device_id}/command/{id}:{}", c.kind),
                now_ms,
            )?;
            if let Some(tid) = c.ticket_id {
                attach_to_ticket(tx, tid, &c, r, outcome.as_deref(), now_ms)?;
            }
        }
    }
    get(tx, id)?.ok_or_else(|| Error::not_found("command", id))
}

/// What a result means beyond its status (for the ticket and the board).
fn outcome(c: &CommandRecord, r: &CommandResult) -> Option<String> {
    let d = r.diagnostics.as_ref();
    match (c.kind.as_str(), r.status) {
        ("close_inlet_valve", CommandStatus::Ok) => {
            Some("inlet valve closed: the water supply to the fixture is off".into())
        }
        ("open_inlet_valve", CommandStatus::Ok) => Some("inlet valve open again".into()),
        ("report_diagnostics" | "self_test", CommandStatus::Ok | CommandStatus::Failed) => {
            let d = d?;
            let clog = d.active.contains(&FaultCode::InletClog)
                || d.flow_permille.is_some_and(|p| p < CLOG_CONFIRM_PERMILLE);
            let confirming = c
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("inlet_clog"));
            Some(if clog {
                format!(
                    "inlet clog confirmed by the device: flow at {} ‰ of normal{}; self-service \
                     (clean the inlet screen) before a visit",
                    d.flow_permille.map_or("?".into(), |p| p.to_string()),
                    d.pressure_kpa
                        .map_or(String::new(), |p| format!(" at {p:.0} kPa"))
                )
            } else if confirming {
                "inlet clog not confirmed by the device: flow normal; a visit may be needed".into()
            } else if d.active.is_empty() {
                "no fault active on the device".into()
            } else {
                let codes: Vec<&str> = d.active.iter().map(|c| c.as_str()).collect();
                format!("faults active on the device: {}", codes.join(", "))
            })
        }
        (_, CommandStatus::Unsupported) => Some("the device does not support this command".into()),
        _ => None,
    }
}

fn attach_to_ticket(
    tx: &Transaction<'_>,
    tid: i64,
    c: &CommandRecord,
    r: &CommandResult,
    outcome: Option<&str>,
    now_ms: i64,
) -> Result<()> {
    let Some(t) = tickets::get(tx, tid)? else {
        return Ok(());
    };
    let evidence = serde_json::json!({
        "source": "command",
        "cmd_id": c.id,
        "command": c.kind,
        "status": r.status.as_str(),
        "diagnostics": r.diagnostics,
        "outcome": outcome,
    });
    let severity = if r.status == CommandStatus::Ok {
        "info"
    } else {
        "warning"
    };
    tickets::add_evidence(tx, tid, now_ms, severity, &evidence)?;
    tickets::history(
        tx,
        tid,
        now_ms,
        &format!("device:{}", c.device_id),
        Some(t.status),
        t.status,
        Some(&format!(
            "command {} #{}: {}{}",
            c.kind,
            c.id,
            r.status.as_str(),
            outcome.map_or(String::new(), |o| format!(" — {o}"))
        )),
    )?;
    Ok(())
}

/// Expires every unfinished command past its expiry; returns how many.
pub fn expire(tx: &Transaction<'_>, now_ms: i64) -> Result<u32> {
    let expired: Vec<CommandRecord> = {
        let mut stmt = tx.prepare(&format!(
            "SELECT {COLUMNS} FROM commands WHERE status IN ('queued', 'sent', 'acknowledged')
             AND expires_ts_ms <= ?1"
        ))?;

        stmt.query_map([now_ms], from_row)?
            .collect::<crate::store::Result<Vec<_>>>()?
    };
    for c in &expired {
        tx.execute(
            "UPDATE commands SET status = 'expired', done_ts_ms = ?2 WHERE id = ?1",
            params![c.id, now_ms],
        )?;
        audit(
            tx,
            "system",
            "command.expired",
            &format!("device/{}/command/{}:{}", c.device_id, c.id, c.kind),
            now_ms,
        )?;
        if let Some(tid) = c.ticket_id {
            if let Some(t) = tickets::get(tx, tid)? {
                tickets::history(
                    tx,
                    tid,
                    now_ms,
                    "system",
                    Some(t.status),
                    t.status,
                    Some(&format!(
                        "command {} #{} expired: the device did not answer ({} sends)",
                        c.kind, c.id, c.attempts
                    )),
                )?;
            }
        }
        tracing::warn!(device = %c.device_id, cmd_id = c.id, kind = %c.kind, attempts = c.attempts, "Command expired unanswered.");
    }
    Ok(expired.len() as u32)
}

/// One command.
pub fn get(conn: &Connection, id: i64) -> Result<Option<CommandRecord>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM commands WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// Which commands to list.
#[derive(Debug, Clone, Default)]
pub struct CommandFilter {
    /// Of this device.
    pub device_id: Option<String>,
    /// For this ticket.
    pub ticket_id: Option<i64>,
    /// In this state.
    pub status: Option<CommandState>,
}

/// A page of commands, newest first.
pub fn list_page(conn: &Connection, f: &CommandFilter, page: Page) -> Result<Paged<CommandRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM commands
         WHERE (CAST(?1 AS TEXT) IS NULL OR device_id = ?1)
         AND (CAST(?2 AS BIGINT) IS NULL OR ticket_id = ?2)
         AND (CAST(?3 AS TEXT) IS NULL OR status = ?3)
         ORDER BY id DESC LIMIT ?4 OFFSET ?5"
    ))?;
    let rows = stmt
        .query_map(
            params![
                f.device_id,
                f.ticket_id,
                f.status.map(CommandState::as_str),
                page.sql_limit(),
                page.sql_offset()
            ],
            from_row,
        )?
        .collect::<crate::store::Result<Vec<_>>>()?;
    Ok(page.finish(rows))
}

/// Whether a device of `model` can carry `command` out (the protocol catalogue's facts).
pub fn supported(model: Model, command: &CommandKind) -> bool {
    command.supported_by(model)
}

impl crate::Engine {
    /// Queues a command on behalf of `who` (audited in the same transaction). Returns the
    /// command, which may be an unfinished one of the same kind already queued.
    pub fn send_command(&self, c: &NewCommand<'_>, now_ms: i64) -> Result<CommandRecord> {
        let (id, new) = self.write(|tx| queue(tx, c, now_ms))?;
        if new {
            tracing::info!(device = %c.device_id, cmd_id = id, command = c.command.as_str(), by = %c.requested_by, "Command queued.");
        }
        self.read(|conn| get(conn, id))?
            .ok_or_else(|| Error::not_found("command", id))
    }

    /// Commands to publish now (see [`due`]).
    pub fn commands_due(&self, now_ms: i64, limit: usize) -> Result<Vec<Outgoing>> {
        self.read(|c| due(c, now_ms, limit))
    }

    /// The dispatcher published command `id`.
    pub fn command_sent(&self, id: i64, now_ms: i64) -> Result<()> {
        self.write(|tx| mark_sent(tx, id, now_ms))
    }

    /// Applies a device's answer (see [`apply_result`]).
    pub fn command_result(
        &self,
        device_id: &str,
        r: &CommandResult,
        now_ms: i64,
    ) -> Result<CommandRecord> {
        let c = self.write(|tx| apply_result(tx, device_id, r, now_ms))?;
        tracing::info!(device = %device_id, cmd_id = c.id, command = %c.kind, status = c.status.as_str(), outcome = c.outcome.as_deref().unwrap_or(""), "Command result.");
        Ok(c)
    }

    /// A page of commands, newest first.
    pub fn commands(&self, f: &CommandFilter, page: Page) -> Result<Paged<CommandRecord>> {
        self.read(|c| list_page(c, f, page))
    }

    /// One command.
    pub fn command(&self, id: i64) -> Result<Option<CommandRecord>> {
        self.read(|c| get(c, id))
    }
}
