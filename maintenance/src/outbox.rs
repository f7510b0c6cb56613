//! The transactional outbox: every notification and outbound webhook is a row written in
//! the same transaction as the ticket or reminder that caused it.
//!
//! A row is `pending` until the dispatcher (see [`crate::dispatch`]) gets a success from
//! the receiver, then `delivered`; failures back off exponentially and a row that fails
//! `max_attempts` times becomes `dead` (kept for an operator). The idempotency key is fixed
//! when the row is written, so a retry after a crash carries the same key.
//!
//! On PostgreSQL, where the instances of a cluster share the outbox, a dispatcher first
//! claims the rows it sends ([`claim_due`]: `FOR UPDATE SKIP LOCKED`, then a lease on
//! each row), so any number of dispatchers send each row once; a dispatcher that dies
//! leaves its rows to the others when their lease runs out. On SQLite (one instance, one
//! dispatcher) claiming is reading, as before.

use crate::store::{params, Connection, Dialect, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// How a row is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutChannel {
    /// A generic signed webhook to `target` (a URL), e.g. an external ticketing system.
    Webhook,
    /// An app push, via the push webhook, to the home `target`.
    Push,
    /// An SMS, via the SMS webhook, to the phone number `target`.
    Sms,
    /// An e-mail over SMTP to the address `target`.
    Email,
}

impl OutChannel {
    /// Lower-case name as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            OutChannel::Webhook => "webhook",
            OutChannel::Push => "push",
            OutChannel::Sms => "sms",
            OutChannel::Email => "email",
        }
    }

    fn parse(s: &str) -> OutChannel {
        match s {
            "push" => OutChannel::Push,
            "sms" => OutChannel::Sms,
            "email" => OutChannel::Email,
            _ => OutChannel::Webhook,
        }
    }
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Idempotency key, sent as the `Idempotency-Key` header.
    pub idem_key: String,
    /// Delivery channel.
    pub channel: OutChannel,
    /// URL, home id, phone number or e-mail address, by channel.
    pub target: String,
    /// Event type, e.g. `ticket.opened`, `reminder`.
    pub topic: String,
    /// The JSON body.
    pub payload: serde_json::Value,
    /// Attempts so far.
    pub attempts: u32,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
}

/// Writes a row inside `tx`; it commits or rolls back with the change that caused it.
pub fn enqueue(
    tx: &Transaction<'_>,
    channel: OutChannel,
    target: &str,
    topic: &str,
    payload: &serde_json::Value,
    now_ms: i64,
) -> Result<i64> {
    let instance = crate::db::instance_id(tx)?;
    // Insert with a placeholder key, then derive the key from the row id: unique and stable.
    let placeholder = format!("tmp-{}", crate::random_hex(8));
    let id: i64 = tx.query_row(
        "INSERT INTO outbox (idem_key, channel, target, topic, payload, created_ts_ms, next_attempt_ts_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING id",
        params![placeholder, channel.as_str(), target, topic, payload.to_string(), now_ms],
        |r| r.get(0),
    )?;
    tx.execute(
        "UPDATE outbox SET idem_key = ?1 WHERE id = ?2",
        params![format!("{instance}-{id}"), id],
    )?;
    Ok(id)
}

fn row(r: &crate::store::Row<'_>) -> crate::store::Result<OutboxRow> {
    let payload: String = r.get(5)?;
    let channel: String = r.get(2)?;
    Ok(OutboxRow {
        id: r.get(0)?,
        idem_key: r.get(1)?,
        channel: OutChannel::parse(&channel),
        target: r.get(3)?,
        topic: r.get(4)?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
        attempts: r.get(6)?,
        status: r.get(7)?,
        last_error: r.get(8)?,
    })
}

const COLUMNS: &str = "id, idem_key, channel, target, topic, payload, attempts, status, last_error";

/// Pending rows due at `now_ms`, oldest first.
pub fn due(conn: &Connection, now_ms: i64, limit: usize) -> Result<Vec<OutboxRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE status = 'pending' AND next_attempt_ts_ms <= ?1
         ORDER BY id LIMIT ?2"
    ))?;
    let rows = stmt
        .query_map(params![now_ms, limit as i64], row)?
        .collect::<crate::store::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Claims up to `limit` pending rows due at `now_ms` for this dispatcher, oldest first,
/// until `lease_until_ms`: rows that another dispatcher holds (locked by its claim, or
/// leased and not yet expired) are skipped. On SQLite, the due rows ([`due`]).
pub fn claim_due(
    tx: &Transaction<'_>,
    now_ms: i64,
    limit: usize,
    lease_until_ms: i64,
) -> Result<Vec<OutboxRow>> {
    if tx.dialect() == Dialect::Sqlite {
        return due(tx, now_ms, limit);
    }
    let mut stmt = tx.prepare(&format!(
        "UPDATE outbox SET lease_until_ts_ms = ?3 WHERE id IN (
             SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_ts_ms <= ?1
             AND (lease_until_ts_ms IS NULL OR lease_until_ts_ms <= ?1)
             ORDER BY id LIMIT ?2 {})
         RETURNING {COLUMNS}",
        tx.dialect().skip_locked()
    ))?;
    let mut rows = stmt
        .query_map(params![now_ms, limit as i64, lease_until_ms], row)?
        .collect::<crate::store::Result<Vec<_>>>()?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// All rows (for tests and the admin view), newest first, at most `limit`.
pub fn list(conn: &Connection, limit: usize) -> Result<Vec<OutboxRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?1"
    ))?;
    let rows = stmt
        .query_map(params![limit as i64], row)?
        .collect::<crate::store::Result<Vec<_>>>()?;
    Ok(rows)
}

/// One row by id.
pub fn get(conn: &Connection, id: i64) -> Result<Option<OutboxRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"),
            [id],
            row,
        )
        .optional()?)
}

/// Marks a row delivered.
pub fn mark_delivered(conn: &Connection, id: i64, now_ms: i64) -> Result<()> {
    conn.execute(
        "UPDATE outbox SET status = 'delivered', delivered_ts_ms = ?2, attempts = attempts + 1,
         last_error = NULL WHERE id = ?1",
        params![id, now_ms],
    )?;
    Ok(())
}

/// Records a failed attempt; the row is retried at `retry_at_ms`, or goes `dead` if `give_up`.
pub fn mark_failed(
    conn: &Connection,
    id: i64,
    error: &str,
    retry_at_ms: i64,
    give_up: bool,
) -> Result<()> {
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ts_ms = ?3,
         status = CASE WHEN ?4 THEN 'dead' ELSE status END WHERE id = ?1",
        params![id, error, retry_at_ms, give_up],
    )?;
    if conn.dialect() == Dialect::Postgres {
        // Free for any dispatcher at `retry_at_ms`, not only when the lease runs out.
        conn.execute(
            "UPDATE outbox SET lease_until_ts_ms = NULL WHERE id = ?1",
            [id],
        )?;
    }
    Ok(())
}

/// Counts of rows by status: `(pending, delivered, dead)`.
pub fn counts(conn: &Connection) -> Result<(u64, u64, u64)> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN status = 'delivered' THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) FROM outbox",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?)
}
