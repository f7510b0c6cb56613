//! The embedded telemetry store: one SQLite file under the data directory.
//!
//! Points are keyed like InfluxDB's (measurement, tag set, timestamp) with
//! `INSERT OR REPLACE`, so redeliveries overwrite. Each batch is one transaction
//! with `synchronous = FULL`, so a committed batch survives a crash or power loss.
//!
//! Layout (schema 2): a `series` table names each (measurement, tag set) once with an
//! integer id, and `samples` holds `(ts_ms, series_id, fields)` keyed time first. New
//! points land at the end of the time-ordered table, so a batch dirties a few pages
//! instead of one page per series (schema 1 keyed by series first: every batch of a
//! 1 000-device fleet rewrote ~1 000 leaf pages through the WAL, 5 KB of WAL per point).
//! `samples_by_series` answers one device's window; retention deletes a time range.
//! A schema-1 file (`points`) is migrated when opened.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::{FieldValue, Name, Point, WriteError, WriteOutcome};

/// SQLite-backed telemetry store.
pub struct SqliteStore {
    // A std mutex: it is only held inside `spawn_blocking`, never across an `.await`.
    writer: Arc<Mutex<Writer>>,
    path: PathBuf,
    _checkpointer: Option<Checkpointer>,
}

/// The writing connection and the series ids it has seen committed.
struct Writer {
    conn: Connection,
    /// `series key → id` (see [`series_key`]); only ids of committed series.
    series: HashMap<Box<str>, i64>,
}

/// Series ids kept in memory at most; beyond, the cache starts over (ids are read back).
const SERIES_CACHE_MAX: usize = 1 << 20;

/// The schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS series (
        id INTEGER PRIMARY KEY,
        measurement TEXT NOT NULL,
        tags TEXT NOT NULL,        -- tag set as JSON pairs, e.g. [[\"device_id\",\"t-1\"]]
        device_id TEXT NOT NULL,   -- the device_id tag's value ('' without one)
        UNIQUE (measurement, tags)
    );
    CREATE INDEX IF NOT EXISTS series_by_device ON series (device_id, measurement);
    CREATE TABLE IF NOT EXISTS samples (
        ts_ms INTEGER NOT NULL,
        series_id INTEGER NOT NULL,
        fields TEXT NOT NULL,      -- JSON object
        PRIMARY KEY (ts_ms, series_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS samples_by_series ON samples (series_id, ts_ms);
";

/// One chunk of the retention sweep: up to 5 000 samples older than `?1`, oldest first
/// (a range of the time-ordered primary key).
pub const DELETE_OLDER_CHUNK: &str = "DELETE FROM samples WHERE (ts_ms, series_id) IN \
     (SELECT ts_ms, series_id FROM samples WHERE ts_ms < ?1 ORDER BY ts_ms LIMIT 5000)";

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
        conn.execute_batch(SCHEMA)?;
        migrate_schema_1(&conn, path)?;
        let checkpointer = if tuning.background_checkpoint {
            Some(Checkpointer::start(path)?)
        } else {
            None
        };
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(Writer {
                conn,
                series: HashMap::new(),
            })),
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
        let rows = Rows::encode(points)?;
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
            let mut writer = writer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            writer.write(&rows)
        })
        .await
        .map_err(|e| WriteError::Unavailable(format!("SQLite writer task failed: {e}")))?
        .map_err(|e| WriteError::Unavailable(format!("SQLite write failed: {e}")))?;
        Ok(WriteOutcome::default())
    }

    /// Counts stored points of `measurement` (for tests and the console summary).
    pub async fn count(&self, measurement: &str) -> rusqlite::Result<i64> {
        let writer = Arc::clone(&self.writer);
        let m = measurement.to_owned();
        tokio::task::spawn_blocking(move || {
            let writer = writer.lock().unwrap_or_else(|p| p.into_inner());
            writer.conn.query_row(
                "SELECT count(*) FROM samples JOIN series ON series.id = samples.series_id
                 WHERE series.measurement = ?1",
                [m],
                |r| r.get(0),
            )
        })
        .await
        .unwrap_or(Err(rusqlite::Error::InvalidQuery))
    }
}

/// A batch encoded for the writer: every point's series key and fields JSON in one
/// string (two allocations per batch, not two per point).
struct Rows {
    text: String,
    rows: Vec<Row>,
}

struct Row {
    /// The series key in `text` (see [`series_key`]).
    key: Range<usize>,
    /// The fields JSON object in `text`.
    fields: Range<usize>,
    ts_ms: i64,
}

impl Rows {
    fn encode(points: &[Point]) -> Result<Rows, WriteError> {
        let mut buf: Vec<u8> = Vec::with_capacity(points.len() * 192);
        let mut rows = Vec::with_capacity(points.len());
        for p in points {
            let key_start = buf.len();
            series_key(&mut buf, p);
            let fields_start = buf.len();
            if serde_json::to_writer(&mut buf, &FieldsAsObject(&p.fields)).is_err() {
                buf.truncate(fields_start);
                buf.extend_from_slice(b"{}");
            }
            rows.push(Row {
                key: key_start..fields_start,
                fields: fields_start..buf.len(),
                ts_ms: p.ts_ms,
            });
        }
        // serde_json writes UTF-8 and every name is a `str`: this does not fail, and if it
        // did the batch is refused (retried, then spooled), never stored half-read.
        let text = String::from_utf8(buf)
            .map_err(|e| WriteError::Unavailable(format!("SQLite batch text is not UTF-8: {e}")))?;
        Ok(Rows { text, rows })
    }
}

/// A series' key: its tags as JSON pairs, a newline (never inside JSON), its measurement.
fn series_key(buf: &mut Vec<u8>, p: &Point) {
    if serde_json::to_writer(&mut *buf, &p.tags).is_err() {
        buf.extend_from_slice(b"[]");
    }
    buf.push(b'\n');
    buf.extend_from_slice(p.measurement.as_bytes());
}

impl Writer {
    /// One transaction: resolves (or creates) each row's series, upserts the samples.
    fn write(&mut self, rows: &Rows) -> rusqlite::Result<()> {
        if self.series.len() > SERIES_CACHE_MAX {
            self.series.clear();
        }
        let Writer { conn, series } = self;
        let mut created: HashMap<&str, i64> = HashMap::new();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO samples (ts_ms, series_id, fields) VALUES (?1, ?2, ?3)",
            )?;
            for row in &rows.rows {
                let key = rows.text.get(row.key.clone()).unwrap_or_default();
                let id = match series.get(key).or_else(|| created.get(key)) {
                    Some(id) => *id,
                    None => {
                        let id = series_id(&tx, key)?;
                        created.insert(key, id);
                        id
                    }
                };
                let fields = rows.text.get(row.fields.clone()).unwrap_or("{}");
                insert.execute(params![row.ts_ms, id, fields])?;
            }
        }
        tx.commit()?;
        // Only ids that are committed are remembered: a rolled-back series is created again.
        series.extend(created.into_iter().map(|(k, id)| (Box::from(k), id)));
        Ok(())
    }
}

/// The id of the series `key`, created if new.
fn series_id(tx: &rusqlite::Transaction<'_>, key: &str) -> rusqlite::Result<i64> {
    let (tags, measurement) = key.split_once('\n').unwrap_or((key, ""));
    let found = tx
        .prepare_cached("SELECT id FROM series WHERE measurement = ?1 AND tags = ?2")?
        .query_row(params![measurement, tags], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    let device_id = serde_json::from_str::<Vec<(String, String)>>(tags)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "device_id"))
        .map(|(_, v)| v)
        .unwrap_or_default();
    tx.prepare_cached("INSERT INTO series (measurement, tags, device_id) VALUES (?1, ?2, ?3)")?
        .execute(params![measurement, tags, device_id])?;
    Ok(tx.last_insert_rowid())
}

/// Moves a schema-1 file's `points` (keyed by measurement, tag JSON, time) into
/// `series` + `samples`, in one transaction, and records schema 2.
fn migrate_schema_1(conn: &Connection, path: &Path) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!(
                "{} is telemetry schema {version}, written by a newer release (this one knows {SCHEMA_VERSION}); run that release, or restore the backup taken before the upgrade",
                path.display()
            )),
        ));
    }
    let has_points: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'points'",
        [],
        |r| r.get(0),
    )?;
    if has_points {
        let n: i64 = conn.query_row("SELECT count(*) FROM points", [], |r| r.get(0))?;
        tracing::info!(path = %path.display(), points = n, "Migrating the SQLite telemetry store to schema 2 (series + time-ordered samples); this runs once.");
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT OR IGNORE INTO series (measurement, tags, device_id)
               SELECT DISTINCT measurement, series,
                 coalesce((SELECT json_extract(value, '$[1]') FROM json_each(points.series)
                           WHERE json_extract(value, '$[0]') = 'device_id'), '')
               FROM points;
             INSERT OR REPLACE INTO samples (ts_ms, series_id, fields)
               SELECT points.ts_ms, series.id, points.fields FROM points
               JOIN series ON series.measurement = points.measurement AND series.tags = points.series;
             DROP TABLE points;
             COMMIT;",
        )?;
        tracing::info!(points = n, "SQLite telemetry store migrated to schema 2.");
    }
    if version != SCHEMA_VERSION {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(())
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

    fn telemetry(device: &str, ts_ms: i64, flushes: i64) -> Point {
        Point {
            measurement: "toilet".into(),
            tags: vec![("device_id".into(), device.to_owned().into())],
            fields: vec![("flushes".into(), FieldValue::Int(flushes))],
            ts_ms,
        }
    }

    fn series_rows(path: &Path) -> Vec<(i64, String, String, String)> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT id, measurement, tags, device_id FROM series ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[tokio::test]
    async fn a_series_is_named_once_across_batches_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .write(&[telemetry("t-1", 1, 1), telemetry("t-2", 1, 1)])
                .await
                .unwrap();
            store.write(&[telemetry("t-1", 2, 2)]).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        store.write(&[telemetry("t-1", 3, 3)]).await.unwrap();
        assert_eq!(store.count("toilet").await.unwrap(), 4);
        let series = series_rows(&path);
        assert_eq!(series.len(), 2, "{series:?}");
        assert_eq!(series[0].2, r#"[["device_id","t-1"]]"#);
        assert_eq!(series[0].3, "t-1");
        assert_eq!(series[1].3, "t-2");
    }

    #[tokio::test]
    async fn a_schema_1_file_is_migrated_with_every_point_and_its_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            // The layout before schema 2, as a gateway of that time left it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE points (measurement TEXT NOT NULL, series TEXT NOT NULL,
                   ts_ms INTEGER NOT NULL, fields TEXT NOT NULL,
                   PRIMARY KEY (measurement, series, ts_ms)) WITHOUT ROWID;
                 INSERT INTO points VALUES
                   ('toilet', '[[\"device_id\",\"t-1\"]]', 10, '{\"flushes\":1}'),
                   ('toilet', '[[\"device_id\",\"t-1\"]]', 20, '{\"flushes\":2}'),
                   ('fault', '[[\"code\",\"leak\"],[\"device_id\",\"t-2\"]]', 15, '{\"raised\":true}');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.count("toilet").await.unwrap(), 2);
        assert_eq!(store.count("fault").await.unwrap(), 1);
        let series = series_rows(&path);
        assert_eq!(series.len(), 2);
        assert_eq!(series.iter().find(|s| s.1 == "fault").unwrap().3, "t-2");
        // A redelivery of a migrated point overwrites it (same series, same time).
        store.write(&[telemetry("t-1", 20, 2)]).await.unwrap();
        assert_eq!(store.count("toilet").await.unwrap(), 2);
        let conn = Connection::open(&path).unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'points'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "the schema-1 table is gone");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_file_of_a_newer_schema_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = SqliteStore::open(&path).err().expect("refused").to_string();
        assert!(err.contains("newer release"), "{err}");
    }

    #[tokio::test]
    async fn the_retention_chunk_deletes_only_samples_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).unwrap();
        let points: Vec<Point> = (0..12_000)
            .map(|i| telemetry(&format!("t-{}", i % 7), i, i))
            .collect();
        store.write(&points).await.unwrap();
        let conn = Connection::open(&path).unwrap();
        let mut deleted = 0;
        loop {
            let n = conn.execute(DELETE_OLDER_CHUNK, [11_000i64]).unwrap();
            deleted += n;
            if n < 5000 {
                break;
            }
        }
        assert_eq!(deleted, 11_000);
        let oldest: i64 = conn
            .query_row("SELECT min(ts_ms) FROM samples", [], |r| r.get(0))
            .unwrap();
        assert_eq!(oldest, 11_000);
        assert_eq!(store.count("toilet").await.unwrap(), 1_000);
    }
}
