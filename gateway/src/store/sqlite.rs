//! The embedded telemetry store: one SQLite file under the data directory.
//!
//! Points are keyed like InfluxDB's (measurement, tag set, timestamp) with
//! `INSERT OR REPLACE`, so redeliveries overwrite. Each batch is one transaction
//! with `synchronous = FULL`, so a committed batch survives a crash or power loss.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection};

use super::{Point, WriteError, WriteOutcome};

/// SQLite-backed telemetry store.
pub struct SqliteStore {
    // A std mutex: it is only held inside `spawn_blocking`, never across an `.await`.
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// Opens a SQLite database with the gateway's durability settings.
pub fn open_durable(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<SqliteStore> {
        let conn = open_durable(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS points (
                measurement TEXT NOT NULL,
                series TEXT NOT NULL,      -- tag set as canonical JSON
                ts_ms INTEGER NOT NULL,
                fields TEXT NOT NULL,      -- JSON object
                PRIMARY KEY (measurement, series, ts_ms)
            ) WITHOUT ROWID;",
        )?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
        })
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        format!("SQLite at {}", self.path.display())
    }

    /// Writes the points in one transaction.
    pub async fn write(&self, points: &[Point]) -> Result<WriteOutcome, WriteError> {
        let rows: Vec<(String, String, i64, String)> = points
            .iter()
            .map(|p| {
                let series = serde_json::to_string(&p.tags).unwrap_or_default();
                let fields: serde_json::Map<String, serde_json::Value> = p
                    .fields
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                        )
                    })
                    .collect();
                (
                    p.measurement.clone(),
                    series,
                    p.ts_ms,
                    serde_json::Value::Object(fields).to_string(),
                )
            })
            .collect();
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO points (measurement, series, ts_ms, fields) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (m, s, ts, f) in &rows {
                    stmt.execute(params![m, s, ts, f])?;
                }
            }
            tx.commit()
        })
        .await
        .map_err(|e| WriteError::Unavailable(format!("SQLite writer task failed: {e}")))?
        .map_err(|e| WriteError::Unavailable(format!("SQLite write failed: {e}")))?;
        Ok(WriteOutcome::default())
    }

    /// Counts stored points of `measurement` (for tests and the console summary).
    pub async fn count(&self, measurement: &str) -> rusqlite::Result<i64> {
        let conn = Arc::clone(&self.conn);
        let m = measurement.to_owned();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            conn.query_row(
                "SELECT count(*) FROM points WHERE measurement = ?1",
                [m],
                |r| r.get(0),
            )
        })
        .await
        .unwrap_or(Err(rusqlite::Error::InvalidQuery))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FieldValue;

    #[tokio::test]
    async fn redelivered_points_overwrite_instead_of_duplicating() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let p = |v: i64| Point {
            measurement: "toilet".into(),
            tags: vec![("device_id".into(), "t-1".into())],
            fields: vec![("flushes".into(), FieldValue::Int(v))],
            ts_ms: 1000,
        };
        store.write(&[p(1)]).await.unwrap();
        store.write(&[p(2), p(2)]).await.unwrap();
        assert_eq!(store.count("toilet").await.unwrap(), 1);
    }
}
