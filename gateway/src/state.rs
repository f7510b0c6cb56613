//! The gateway's own state in SQLite (`{data_dir}/state.db`): the dead-letter
//! store and per-device sequence state.
//!
//! Sequence state is JSON of `sequence::DeviceSeq` (per boot, the ranges of
//! sequence numbers seen, bounded) in `devices`; the older 64-bit window format still loads.
//!
//! A batch's dead letters and sequence updates are committed in one transaction
//! before the batch is acknowledged, so after a crash the redelivered messages
//! meet the state as it was when they were first received. The sequence updates go in
//! as one row of `seq_journal` (the batch's touched devices in the compact binary form
//! of [`DeviceSeq::encode_binary`]), not one upsert per device: a batch of 2 000
//! messages from 1 000 devices was 1 000 upserts and their pages in the WAL. The
//! journal is folded into `devices` (the newest state of each device wins) every
//! [`FOLD_AFTER_BATCHES`] batches, on open, and before anything reads `devices`.
//!
//! The dead-letter store is bounded ([`DeadLetterLimits`]): at most `max_count`
//! rows and `max_bytes` of kept payload (the oldest go first, in the same
//! transaction as the insert that overflowed), and rows older than `retention`
//! are removed by [`StateDb::prune_dead_letters`]. Every drop is counted
//! ([`StateDb::dead_letters_dropped`]) and logged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::sequence::{put_varint, take_varint, DeviceSeq, SEQ_BINARY_FORMAT};

mod dead_letter_pages;
use crate::store::sqlite::open_durable;
pub use dead_letter_pages::{DeadLetterSummary, SUMMARY_TEXT_CHARS};

/// Journal rows (batches) after which a commit folds the journal into `devices`.
pub const FOLD_AFTER_BATCHES: u64 = 32;

/// Bytes of a rejected payload kept in the dead-letter store; the full length is recorded beside it.
pub const DEAD_LETTER_KEEP_BYTES: usize = 64 * 1024;

/// A message (or stored line) that was refused, kept for inspection.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Row id (0 before insertion).
    pub id: i64,
    /// Gateway time of receipt, UTC ms.
    pub received_ms: i64,
    /// MQTT topic (or the measurement, for a line the store refused).
    pub topic: String,
    /// Stable reason code.
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
    /// The raw payload, cut at [`DEAD_LETTER_KEEP_BYTES`].
    #[serde(serialize_with = "lossy")]
    pub payload: Vec<u8>,
    /// The payload's full length in bytes.
    pub payload_len: usize,
}

fn lossy<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

impl DeadLetter {
    /// Builds a dead letter, cutting the payload.
    pub fn new(
        received_ms: i64,
        topic: &str,
        reason: &str,
        detail: &str,
        payload: &[u8],
    ) -> DeadLetter {
        DeadLetter {
            id: 0,
            received_ms,
            topic: topic.to_owned(),
            reason: reason.to_owned(),
            detail: detail.to_owned(),
            payload: payload[..payload.len().min(DEAD_LETTER_KEEP_BYTES)].to_vec(),
            payload_len: payload.len(),
        }
    }
}

/// State database errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("state database error: {0}. Check the data directory's free space and permissions.")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task died.
    #[error("state database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Clustered mode: the shared state in PostgreSQL failed.
    #[error(
        "shared state in PostgreSQL: {0}. Check cluster.postgres_url and that the server runs."
    )]
    Postgres(String),
    /// Clustered mode: the partition's lease has moved on; this instance may no longer write its state.
    #[error("partition {partition}'s lease is no longer at epoch {epoch}: its state was not saved (the new owner's is kept)")]
    Fenced {
        /// The partition.
        partition: u32,
        /// The epoch this instance held.
        epoch: i64,
    },
}

/// Bounds of the dead-letter store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterLimits {
    /// Most rows kept.
    pub max_count: u64,
    /// Most payload bytes kept (sum of the kept, cut payloads).
    pub max_bytes: u64,
    /// Rows older than this (gateway receipt time) are removed, ms.
    pub retention_ms: i64,
}

impl Default for DeadLetterLimits {
    fn default() -> Self {
        DeadLetterLimits {
            max_count: 10_000,
            max_bytes: 64 * 1024 * 1024,
            retention_ms: 30 * 86_400_000,
        }
    }
}

/// Handle to the state database.
#[derive(Clone)]
pub struct StateDb {
    // A std mutex, only held inside `spawn_blocking`.
    conn: Arc<Mutex<Connection>>,
    limits: Arc<Mutex<DeadLetterLimits>>,
    // Rows and payload bytes in the dead-letter table, kept in step with it.
    dead_totals: Arc<Mutex<(u64, u64)>>,
    dropped: Arc<AtomicU64>,
    // Rows in `seq_journal`, kept in step with it (only changed under the connection's lock).
    journal_rows: Arc<AtomicU64>,
    // Journal rows removed unread by folds since start (their devices kept older state).
    journal_unreadable: Arc<AtomicU64>,
}

impl StateDb {
    /// Opens (creating if needed) the state database.
    pub fn open(path: &Path) -> Result<StateDb, StateError> {
        let mut conn = open_durable(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS dead_letters (
                id INTEGER PRIMARY KEY,
                received_ms INTEGER NOT NULL,
                topic TEXT NOT NULL,
                reason TEXT NOT NULL,
                detail TEXT NOT NULL,
                payload BLOB NOT NULL,
                payload_len INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason);
            CREATE TABLE IF NOT EXISTS analytics_state (
                device_id TEXT PRIMARY KEY,
                rules TEXT NOT NULL        -- JSON of the device's rules and forecasters (gateway::analysis)
            );
            CREATE TABLE IF NOT EXISTS devices (
                device_id TEXT PRIMARY KEY,
                seq_state TEXT NOT NULL,   -- JSON of DeviceSeq
                last_seen_ms INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS seq_journal (
                id INTEGER PRIMARY KEY,
                received_ms INTEGER NOT NULL,
                format INTEGER NOT NULL,   -- sequence::SEQ_BINARY_FORMAT
                states BLOB NOT NULL       -- per device: varint id length, id, DeviceSeq::encode_binary
            );",
        )?;
        let fold = fold_in_transaction(&mut conn)?;
        if fold.devices > 0 {
            tracing::info!(
                devices = fold.devices,
                "Sequence-state journal folded into the devices table."
            );
        }
        let totals = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(length(payload)), 0) FROM dead_letters",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?.max(0) as u64,
                    r.get::<_, i64>(1)?.max(0) as u64,
                ))
            },
        )?;
        Ok(StateDb {
            conn: Arc::new(Mutex::new(conn)),
            limits: Arc::new(Mutex::new(DeadLetterLimits::default())),
            dead_totals: Arc::new(Mutex::new(totals)),
            dropped: Arc::new(AtomicU64::new(0)),
            journal_rows: Arc::new(AtomicU64::new(0)),
            journal_unreadable: Arc::new(AtomicU64::new(fold.unreadable)),
        })
    }

    /// Sets the dead-letter store's bounds (the defaults until called).
    pub fn set_dead_letter_limits(&self, limits: DeadLetterLimits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// Dead letters removed by the caps or retention since start.
    pub fn dead_letters_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sequence-state journal rows that did not decode and were removed since start (their
    /// devices kept their older saved state; each is logged).
    pub fn journal_rows_unreadable(&self) -> u64 {
        self.journal_unreadable.load(Ordering::Relaxed)
    }

    /// Rows and payload bytes now in the dead-letter store.
    pub fn dead_letter_totals(&self) -> (u64, u64) {
        *self.dead_totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes dead letters received before `now_ms - retention`; returns how many.
    pub async fn prune_dead_letters(&self, now_ms: i64) -> Result<u64, StateError> {
        let retention = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retention_ms;
        let totals = Arc::clone(&self.dead_totals);
        let removed = self
            .with_conn(move |conn| {
                let tx = conn.transaction()?;
                let (n, bytes) = tx.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(length(payload)), 0) FROM dead_letters WHERE received_ms < ?1",
                    [now_ms - retention],
                    |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, i64>(1)?.max(0) as u64)),
                )?;
                if n > 0 {
                    tx.execute("DELETE FROM dead_letters WHERE received_ms < ?1", [now_ms - retention])?;
                }
                tx.commit()?;
                let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                t.0 = t.0.saturating_sub(n);
                t.1 = t.1.saturating_sub(bytes);
                Ok(n)
            })
            .await?;
        if removed > 0 {
            self.dropped.fetch_add(removed, Ordering::Relaxed);
            tracing::info!(
                removed,
                retention_days = retention / 86_400_000,
                "Dead letters past their retention removed."
            );
        }
        Ok(removed)
    }

    /// Folds the sequence-state journal into `devices` now (at a graceful stop, so the
    /// file holds no journal rows an older release would not read).
    pub async fn fold_sequence_journal(&self) -> Result<(), StateError> {
        let (rows, unreadable) = (
            Arc::clone(&self.journal_rows),
            Arc::clone(&self.journal_unreadable),
        );
        self.with_conn(move |conn| fold_now(conn, &rows, &unreadable))
            .await
    }

    /// A trivial read, for the readiness check.
    pub async fn ping(&self) -> Result<(), StateError> {
        self.with_conn(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let conn = Arc::clone(&self.conn);
        Ok(tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await??)
    }

    /// Commits a batch's dead letters and device updates in one transaction.
    pub async fn commit_batch(
        &self,
        dead: &[DeadLetter],
        devices: &[(String, DeviceSeq)],
        now_ms: i64,
    ) -> Result<(), StateError> {
        if dead.is_empty() && devices.is_empty() {
            return Ok(());
        }
        let limits = *self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let totals = Arc::clone(&self.dead_totals);
        let journal_rows = Arc::clone(&self.journal_rows);
        let journal_unreadable = Arc::clone(&self.journal_unreadable);
        let dead = dead.to_vec();
        let states = (!devices.is_empty()).then(|| encode_journal(devices));
        let dropped = self
            .with_conn(move |conn| {
            let tx = conn.transaction()?;
            let mut totals = totals.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = *totals;
            let mut dropped = 0u64;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO dead_letters (received_ms, topic, reason, detail, payload, payload_len) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for d in &dead {
                    ins.execute(params![d.received_ms, d.topic, d.reason, d.detail, d.payload, d.payload_len as i64])?;
                    next.0 += 1;
                    next.1 += d.payload.len() as u64;
                }
                if next.0 > limits.max_count || next.1 > limits.max_bytes {
                    // Oldest first, until both caps hold again.
                    let mut oldest = tx.prepare_cached(
                        "SELECT id, length(payload) FROM dead_letters ORDER BY id LIMIT 512",
                    )?;
                    let mut del = tx.prepare_cached("DELETE FROM dead_letters WHERE id <= ?1")?;
                    while next.0 > limits.max_count || next.1 > limits.max_bytes {
                        let rows: Vec<(i64, i64)> = oldest
                            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                            .collect::<Result<_, _>>()?;
                        if rows.is_empty() {
                            break;
                        }
                        let mut upto = None;
                        for (id, len) in rows {
                            if next.0 <= limits.max_count && next.1 <= limits.max_bytes {
                                break;
                            }
                            next.0 -= 1;
                            next.1 = next.1.saturating_sub(len.max(0) as u64);
                            dropped += 1;
                            upto = Some(id);
                        }
                        match upto {
                            Some(id) => {
                                del.execute([id])?;
                            }
                            None => break,
                        }
                    }
                }
            }
            let mut rows = journal_rows.load(Ordering::Relaxed);
            if let Some(states) = states {
                tx.prepare_cached(
                    "INSERT INTO seq_journal (received_ms, format, states) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![now_ms, SEQ_BINARY_FORMAT, states])?;
                rows += 1;
                if rows >= FOLD_AFTER_BATCHES {
                    let fold = fold_journal(&tx)?;
                    journal_unreadable.fetch_add(fold.unreadable, Ordering::Relaxed);
                    rows = 0;
                }
            }
            tx.commit()?;
            journal_rows.store(rows, Ordering::Relaxed);
            *totals = next;
            Ok(dropped)
        })
        .await?;
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            let (rows, bytes) = self.dead_letter_totals();
            tracing::warn!(dropped, kept = rows, kept_bytes = bytes, max_count = limits.max_count, max_bytes = limits.max_bytes, "Dead-letter store full: the oldest dead letters were removed (see [retention] dead_letters_max_*).");
        }
        Ok(())
    }

    /// Saves the analytics rule state of some devices (upsert).
    pub async fn save_analytics(&self, states: Vec<(String, String)>) -> Result<(), StateError> {
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare("INSERT INTO analytics_state (device_id, rules) VALUES (?1, ?2) ON CONFLICT(device_id) DO UPDATE SET rules = excluded.rules")?;
                for (id, json) in &states {
                    stmt.execute(rusqlite::params![id, json])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Loads every device's saved analytics rule state.
    pub async fn load_analytics(&self) -> Result<Vec<(String, String)>, StateError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT device_id, rules FROM analytics_state")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// Loads every device's sequence state.
    pub async fn load_devices(&self) -> Result<HashMap<String, DeviceSeq>, StateError> {
        let (rows, unreadable) = (
            Arc::clone(&self.journal_rows),
            Arc::clone(&self.journal_unreadable),
        );
        self.with_conn(move |conn| {
            fold_now(conn, &rows, &unreadable)?;
            let mut stmt = conn.prepare("SELECT device_id, seq_state FROM devices")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut map = HashMap::new();
            for row in rows {
                let (id, json) = row?;
                match DeviceSeq::from_json(&json) {
                    Some(seq) => {
                        map.insert(id, seq);
                    }
                    None => {
                        tracing::warn!(device_id = %id, "Saved sequence state does not load; the device starts afresh.");
                        map.insert(id, DeviceSeq::default());
                    }
                }
            }
            Ok(map)
        })
        .await
    }

    /// How many devices have ever been seen, and how many of them since `since_ms`.
    pub async fn devices_seen(&self, since_ms: i64) -> Result<(u64, u64), StateError> {
        let (rows, unreadable) = (
            Arc::clone(&self.journal_rows),
            Arc::clone(&self.journal_unreadable),
        );
        self.with_conn(move |conn| {
            fold_now(conn, &rows, &unreadable)?;
            conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(last_seen_ms >= ?1), 0) FROM devices",
                [since_ms],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, i64>(1)?.max(0) as u64,
                    ))
                },
            )
        })
        .await
    }

    /// The newest dead letters, optionally of one reason.
    pub async fn dead_letters(
        &self,
        reason: Option<String>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StateError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, received_ms, topic, reason, detail, payload, payload_len FROM dead_letters
                 WHERE (?1 IS NULL OR reason = ?1) ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![reason, limit as i64], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    received_ms: r.get(1)?,
                    topic: r.get(2)?,
                    reason: r.get(3)?,
                    detail: r.get(4)?,
                    payload: r.get(5)?,
                    payload_len: r.get::<_, i64>(6)? as usize,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Dead-letter counts by reason, over the store's whole life.
    pub async fn dead_letter_counts(&self) -> Result<Vec<(String, i64)>, StateError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// One device's sequence state.
    pub async fn device(&self, device_id: String) -> Result<Option<DeviceSeq>, StateError> {
        let (rows, unreadable) = (
            Arc::clone(&self.journal_rows),
            Arc::clone(&self.journal_unreadable),
        );
        self.with_conn(move |conn| {
            fold_now(conn, &rows, &unreadable)?;
            conn.query_row(
                "SELECT seq_state FROM devices WHERE device_id = ?1",
                [device_id],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|o| o.and_then(|json| DeviceSeq::from_json(&json)))
        })
        .await
    }
}

/// A batch's touched devices as one journal row: per device, its id (varint length, bytes)
/// and [`DeviceSeq::encode_binary`].
fn encode_journal(devices: &[(String, DeviceSeq)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(devices.len() * 32);
    for (id, seq) in devices {
        put_varint(&mut out, id.len() as u64);
        out.extend_from_slice(id.as_bytes());
        seq.encode_binary(&mut out);
    }
    out
}

/// Reads a journal row written by [`encode_journal`] into `newest`, keeping each device's
/// state from the newest row that has it (rows are read newest first), only stepping over
/// the states of devices already there. All or nothing: `false` (and `newest` unchanged) if any of the
/// row does not decode.
fn merge_journal_row(
    mut input: &[u8],
    received_ms: i64,
    newest: &mut HashMap<String, (DeviceSeq, i64)>,
) -> bool {
    let mut fresh: Vec<(&str, DeviceSeq)> = Vec::new();
    let mut read = || -> Option<()> {
        while !input.is_empty() {
            let len = usize::try_from(take_varint(&mut input)?).ok()?;
            let (id, rest) = input.split_at_checked(len)?;
            let id = std::str::from_utf8(id).ok()?;
            input = rest;
            // A row lists each device once (a batch's touched set); were one listed twice,
            // its later entry would win, as with rows.
            if newest.contains_key(id) {
                DeviceSeq::skip_binary(&mut input)?;
            } else {
                fresh.push((id, DeviceSeq::decode_binary(&mut input)?));
            }
        }
        Some(())
    };
    if read().is_none() {
        return false;
    }
    for (id, seq) in fresh {
        newest.insert(id.to_owned(), (seq, received_ms));
    }
    true
}

/// Folds the sequence-state journal of the state database at `path`: a backup's copy, so
/// that it holds every device's state in `devices` (what an older release reads, and what
/// a restore compares). A copy without a journal table is left as it is. Returns the
/// devices written.
pub fn fold_sequence_journal_file(path: &Path) -> rusqlite::Result<Fold> {
    let mut conn = Connection::open(path)?;
    let has_journal: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'seq_journal'",
        [],
        |r| r.get(0),
    )?;
    if has_journal == 0 {
        return Ok(Fold::default());
    }
    fold_in_transaction(&mut conn)
}

/// Folds the journal now if it has rows, counting the rows it could not read.
fn fold_now(
    conn: &mut Connection,
    journal_rows: &AtomicU64,
    unreadable: &AtomicU64,
) -> rusqlite::Result<()> {
    if journal_rows.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let fold = fold_in_transaction(conn)?;
    unreadable.fetch_add(fold.unreadable, Ordering::Relaxed);
    journal_rows.store(0, Ordering::Relaxed);
    Ok(())
}

/// What a fold did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fold {
    /// Devices written to `devices`.
    pub devices: usize,
    /// Journal rows removed unread (logged each).
    pub unreadable: u64,
}

/// [`fold_journal`] in a transaction of its own.
fn fold_in_transaction(conn: &mut Connection) -> rusqlite::Result<Fold> {
    let tx = conn.transaction()?;
    let fold = fold_journal(&tx)?;
    tx.commit()?;
    Ok(fold)
}

/// Moves every journal row into `devices` (each device gets its newest state and the
/// time of that batch) and empties the journal; returns the devices written. Rows are
/// read newest first, so a device's older states are stepped over, not built. A row that
/// does not decode (another format, damaged) is logged and removed: its devices keep the
/// state of the other rows or their previous saved state. Call inside a transaction.
fn fold_journal(conn: &Connection) -> rusqlite::Result<Fold> {
    let mut newest: HashMap<String, (DeviceSeq, i64)> = HashMap::new();
    let mut last_row = None;
    let mut unreadable = 0;
    {
        let mut stmt = conn.prepare_cached(
            "SELECT id, received_ms, format, states FROM seq_journal ORDER BY id DESC",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (row, received_ms, format): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            last_row = last_row.or(Some(row));
            let merged = match r.get_ref(3)? {
                rusqlite::types::ValueRef::Blob(b) if format == SEQ_BINARY_FORMAT => {
                    merge_journal_row(b, received_ms, &mut newest)
                }
                _ => false,
            };
            if !merged {
                unreadable += 1;
                tracing::warn!(
                    row,
                    format,
                    "A sequence-state journal row does not decode (written by another release, or damaged); its devices keep their previous saved state."
                );
            }
        }
    }
    let Some(last_row) = last_row else {
        return Ok(Fold::default());
    };
    let mut up = conn.prepare_cached(
        "INSERT INTO devices (device_id, seq_state, last_seen_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (device_id) DO UPDATE SET seq_state = excluded.seq_state, last_seen_ms = excluded.last_seen_ms",
    )?;
    for (id, (seq, received_ms)) in &newest {
        let json = serde_json::to_string(seq)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        up.execute(params![id, json, received_ms])?;
    }
    conn.execute("DELETE FROM seq_journal WHERE id <= ?1", [last_row])?;
    Ok(Fold {
        devices: newest.len(),
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dead_letters_and_devices_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        let big = vec![b'x'; DEAD_LETTER_KEEP_BYTES + 10];
        let mut seq = DeviceSeq::default();
        seq.observe(1, 4);
        db.commit_batch(
            &[DeadLetter::new(
                1,
                "fixtures/a/telemetry",
                "payload_too_large",
                "too big",
                &big,
            )],
            &[("a".into(), seq.clone())],
            5,
        )
        .await
        .unwrap();
        let dl = db
            .dead_letters(Some("payload_too_large".into()), 10)
            .await
            .unwrap();
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0].payload.len(), DEAD_LETTER_KEEP_BYTES);
        assert_eq!(dl[0].payload_len, DEAD_LETTER_KEEP_BYTES + 10);
        assert_eq!(db.load_devices().await.unwrap().get("a"), Some(&seq));
        assert_eq!(db.device("a".into()).await.unwrap(), Some(seq.clone()));
        assert_eq!(db.devices_seen(5).await.unwrap(), (1, 1));
        assert_eq!(db.devices_seen(6).await.unwrap(), (1, 0));
        assert_eq!(
            db.dead_letter_counts().await.unwrap(),
            vec![("payload_too_large".to_string(), 1)]
        );
    }

    fn journal_rows(db: &StateDb) -> i64 {
        let conn = db.conn.lock().unwrap();
        conn.query_row("SELECT count(*) FROM seq_journal", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn sequence_state_goes_through_the_journal_and_the_newest_state_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = StateDb::open(&path).unwrap();
        let mut states: HashMap<String, DeviceSeq> = HashMap::new();
        let batches = FOLD_AFTER_BATCHES + 5;
        for batch in 0..batches {
            // Each batch touches three of ten devices; device ids include hostile text.
            let touched: Vec<(String, DeviceSeq)> = (0..3)
                .map(|k| {
                    let id = format!("dev-{}-ü'\"", (batch * 3 + k) % 10);
                    let seq = states.entry(id.clone()).or_default();
                    seq.observe(1, batch as u32 * 2); // a gap of one each time
                    (id, seq.clone())
                })
                .collect();
            db.commit_batch(&[], &touched, 1_000 + batch as i64)
                .await
                .unwrap();
        }
        // The fold ran once at FOLD_AFTER_BATCHES: the rest wait in the journal.
        assert_eq!(journal_rows(&db), 5);
        // What a graceful stop does; the next batch starts a new journal.
        db.fold_sequence_journal().await.unwrap();
        assert_eq!(journal_rows(&db), 0);
        assert_eq!(db.load_devices().await.unwrap(), states);
        let touched = vec![("dev-2-ü'\"".to_string(), states["dev-2-ü'\""].clone())];
        db.commit_batch(&[], &touched, 2_000).await.unwrap();
        assert_eq!(journal_rows(&db), 1);
        // A crash now (no fold): reopening folds, and every device has its newest state.
        drop(db);
        let db = StateDb::open(&path).unwrap();
        assert_eq!(journal_rows(&db), 0);
        assert_eq!(db.load_devices().await.unwrap(), states);
        // Readers fold first: a device's state and the seen counts are never behind.
        let mut seq = states["dev-0-ü'\""].clone();
        seq.observe(1, 999);
        db.commit_batch(&[], &[("dev-0-ü'\"".into(), seq.clone())], 5_000)
            .await
            .unwrap();
        assert_eq!(db.device("dev-0-ü'\"".into()).await.unwrap(), Some(seq));
        assert_eq!(db.devices_seen(5_000).await.unwrap(), (10, 1));
        assert_eq!(journal_rows(&db), 0);
        // A row of another format (a newer release's, say) is logged and removed; the
        // devices keep their saved state.
        let before = db.load_devices().await.unwrap();
        db.conn
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO seq_journal (received_ms, format, states) VALUES (9, 99, x'00')",
                [],
            )
            .unwrap();
        drop(db);
        let db = StateDb::open(&path).unwrap();
        assert_eq!(journal_rows(&db), 0);
        assert_eq!(db.journal_rows_unreadable(), 1);
        assert_eq!(db.load_devices().await.unwrap(), before);
        // A newer row cut short does not hide the state of an older, whole one.
        let mut seq = before["dev-1-ü'\""].clone();
        seq.observe(2, 1);
        db.commit_batch(&[], &[("dev-1-ü'\"".into(), seq.clone())], 6_000)
            .await
            .unwrap();
        let mut newer = seq.clone();
        newer.observe(2, 5);
        let cut = encode_journal(&[("dev-1-ü'\"".into(), newer)]);
        db.conn
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO seq_journal (received_ms, format, states) VALUES (7000, ?1, ?2)",
                params![SEQ_BINARY_FORMAT, &cut[..cut.len() - 1]],
            )
            .unwrap();
        drop(db);
        let db = StateDb::open(&path).unwrap();
        assert_eq!(db.journal_rows_unreadable(), 1);
        assert_eq!(db.device("dev-1-ü'\"".into()).await.unwrap(), Some(seq));
        assert_eq!(db.devices_seen(6_000).await.unwrap(), (10, 1));
    }

    #[tokio::test]
    async fn the_dead_letter_store_keeps_its_caps_and_retention_and_counts_drops() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        db.set_dead_letter_limits(DeadLetterLimits {
            max_count: 5,
            max_bytes: 1000,
            retention_ms: 10_000,
        });
        let letter = |t: i64, n: usize| {
            DeadLetter::new(
                t,
                "fixtures/a/telemetry",
                "malformed_json",
                "x",
                &vec![b'y'; n],
            )
        };
        db.commit_batch(&(0..8).map(|i| letter(i, 10)).collect::<Vec<_>>(), &[], 0)
            .await
            .unwrap();
        assert_eq!(db.dead_letter_totals(), (5, 50));
        assert_eq!(db.dead_letters_dropped(), 3);
        let kept = db.dead_letters(None, 100).await.unwrap();
        assert_eq!(
            kept.iter().map(|d| d.received_ms).collect::<Vec<_>>(),
            vec![7, 6, 5, 4, 3],
            "the oldest go first"
        );
        // Two of 400 bytes: the count cap pushes out the two oldest.
        db.commit_batch(&[letter(20, 400), letter(21, 400)], &[], 0)
            .await
            .unwrap();
        assert_eq!(db.dead_letter_totals(), (5, 830));
        assert_eq!(db.dead_letters_dropped(), 5);
        // A third: the byte cap pushes out the oldest until 1000 bytes hold again (four rows).
        db.commit_batch(&[letter(22, 400)], &[], 0).await.unwrap();
        assert_eq!(db.dead_letter_totals(), (2, 800));
        assert_eq!(db.dead_letters_dropped(), 9);
        // Retention: everything received before now - 10 s goes.
        assert_eq!(db.prune_dead_letters(22 + 10_000).await.unwrap(), 1);
        assert_eq!(db.dead_letter_totals(), (1, 400));
        assert_eq!(db.dead_letters_dropped(), 10);
        // Totals survive a reopen.
        drop(db);
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        assert_eq!(db.dead_letter_totals(), (1, 400));
    }
}
