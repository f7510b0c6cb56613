//! The embedded telemetry store: one SQLite file under the data directory.
//!
//! Points are keyed like InfluxDB's (measurement, tag set, timestamp) with
//! `INSERT OR REPLACE`, so redeliveries overwrite. Each batch is one transaction
//! with `synchronous = FULL`, so a committed batch survives a crash or power loss.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection};

use super::{FieldValue, Name, Point, WriteError, WriteOutcome};

/// SQLite-backed telemetry store.
pub struct SqliteStore {
    // A std mutex: it is only held inside `spawn_blocking`, never across an `.await`.
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    _checkpointer: Option<Checkpointer>,
}

/// Page cache, memory map and checkpointing of the telemetry store.
///
/// SQLite's defaults (a 2 MB page cache, no memory map, the writer checkpointing the WAL
/// every 1 000 pages inside a commit) spend most of a write in the kernel reading pages
/// back and copying the WAL; [`SqliteTuning::default`] keeps the hot pages in memory and
/// moves checkpoints to a background thread, with the commit's fsync unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteTuning {
    /// Page cache per connection, KiB.
    pub cache_kib: i64,
    /// Bytes of the database file read through a memory map (0: none).
    pub mmap_bytes: i64,
    /// Checkpoint the WAL from a background thread (PASSIVE, every second) instead of
    /// in the writer's commits; the writer keeps a far backstop so the WAL stays bounded.
    pub background_checkpoint: bool,
}

impl Default for SqliteTuning {
    fn default() -> Self {
        SqliteTuning {
            cache_kib: 64 * 1024,
            mmap_bytes: 256 << 20,
            background_checkpoint: true,
        }
    }
}

impl SqliteTuning {
    /// SQLite's own defaults, for comparison in the bench.
    pub fn sqlite_defaults() -> Self {
        SqliteTuning {
            cache_kib: 2_000,
            mmap_bytes: 0,
            background_checkpoint: false,
        }
    }
}

/// WAL pages after which the writer checkpoints itself when the background thread falls
/// behind (about 256 MiB with 4 KiB pages).
const WAL_BACKSTOP_PAGES: i64 = 65_536;

/// A thread checkpointing the WAL every second on its own connection; stops when dropped.
struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Checkpointer {
    fn start(path: &Path) -> rusqlite::Result<Checkpointer> {
        let conn = open_durable(path)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    if let Err(e) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "Background WAL checkpoint of the telemetry store failed; the writer's backstop checkpoints instead.");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "Cannot start the WAL checkpoint thread; the writer checkpoints instead.");
        }
        Ok(Checkpointer { stop })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
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
    /// Opens (creating if needed) the store at `path`, tuned ([`SqliteTuning::default`]).
    pub fn open(path: &Path) -> rusqlite::Result<SqliteStore> {
        Self::open_with(path, SqliteTuning::default())
    }

    /// Opens the store with explicit tuning.
    pub fn open_with(path: &Path, tuning: SqliteTuning) -> rusqlite::Result<SqliteStore> {
        let conn = open_durable(path)?;
        conn.pragma_update(None, "cache_size", -tuning.cache_kib)?;
        conn.pragma_update(None, "mmap_size", tuning.mmap_bytes)?;
        if tuning.background_checkpoint {
            conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS points (
                measurement TEXT NOT NULL,
                series TEXT NOT NULL,      -- tag set as canonical JSON
                ts_ms INTEGER NOT NULL,
                fields TEXT NOT NULL,      -- JSON object
                PRIMARY KEY (measurement, series, ts_ms)
            ) WITHOUT ROWID;",
        )?;
        let checkpointer = if tuning.background_checkpoint {
            Some(Checkpointer::start(path)?)
        } else {
            None
        };
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
            _checkpointer: checkpointer,
        })
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        format!("SQLite at {}", self.path.display())
    }

    /// The database file, for reading back on another connection (`store::query`).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the points in one transaction.
    pub async fn write(&self, points: &[Point]) -> Result<WriteOutcome, WriteError> {
        let rows: Vec<(Name, String, i64, String)> = points
            .iter()
            .map(|p| {
                let series = serde_json::to_string(&p.tags).unwrap_or_default();
                let fields = serde_json::to_string(&FieldsAsObject(&p.fields))
                    .unwrap_or_else(|_| "{}".to_owned());
                (p.measurement.clone(), series, p.ts_ms, fields)
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
                    stmt.execute(params![m.as_ref(), s, ts, f])?;
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

/// A point's fields written straight as one JSON object (`{"key":value,...}`), in
/// their order, without building an intermediate `serde_json::Map`.
struct FieldsAsObject<'a>(&'a [(Name, FieldValue)]);

impl serde::Serialize for FieldsAsObject<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k.as_ref(), v)))
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
