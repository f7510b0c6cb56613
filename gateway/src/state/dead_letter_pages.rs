//! Reads of the dead-letter store for the HTTP endpoint: pages of summaries (no payload,
//! newest first, by an id cursor) and one payload's raw bytes on request.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{StateDb, StateError};

/// Characters of a dead letter's detail and topic shown in a listing.
pub const SUMMARY_TEXT_CHARS: usize = 500;

/// A dead letter without its payload, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterSummary {
    /// Row id: the cursor, and the key of `/dead-letters/{id}/raw`.
    pub id: i64,
    /// Gateway time of receipt, UTC ms.
    pub received_ms: i64,
    /// MQTT topic (cut to [`SUMMARY_TEXT_CHARS`]).
    pub topic: String,
    /// Stable reason code.
    pub reason: String,
    /// Human-readable detail (cut to [`SUMMARY_TEXT_CHARS`]).
    pub detail: String,
    /// The payload's full length in bytes.
    pub payload_len: usize,
    /// Bytes of the payload that were kept.
    pub kept_len: usize,
}

impl StateDb {
    /// Up to `limit` dead letters older than `before` (all if `None`), newest first,
    /// optionally of one reason.
    pub async fn dead_letter_page(
        &self,
        reason: Option<String>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DeadLetterSummary>, StateError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, received_ms, substr(topic, 1, ?4), reason, substr(detail, 1, ?4), payload_len, length(payload)
                 FROM dead_letters
                 WHERE (?1 IS NULL OR reason = ?1) AND (?2 IS NULL OR id < ?2)
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![reason, before, limit as i64, SUMMARY_TEXT_CHARS as i64],
                |r| {
                    Ok(DeadLetterSummary {
                        id: r.get(0)?,
                        received_ms: r.get(1)?,
                        topic: r.get(2)?,
                        reason: r.get(3)?,
                        detail: r.get(4)?,
                        payload_len: r.get::<_, i64>(5)?.max(0) as usize,
                        kept_len: r.get::<_, i64>(6)?.max(0) as usize,
                    })
                },
            )?;
            rows.collect()
        })
        .await
    }

    /// The kept bytes of dead letter `id`, with its topic.
    pub async fn dead_letter_raw(&self, id: i64) -> Result<Option<(String, Vec<u8>)>, StateError> {
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT topic, payload FROM dead_letters WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .await
    }
}
