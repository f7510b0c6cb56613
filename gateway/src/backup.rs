//! `gateway backup DIR` and `gateway restore DIR`.
//!
//! A backup is a directory with a consistent copy of every SQLite database the
//! gateway keeps (`state.db`, `telemetry.db` with the SQLite store, the
//! maintenance database when `[maintenance]` is configured), made with SQLite's
//! online backup API beside a running gateway, plus the spool's complete batch
//! files, and a `manifest.json` with each file's size and CRC-32.
//!
//! Order matters for consistency: the spool is copied first, then the telemetry
//! store. A batch replayed in between is then in both copies, which is harmless
//! (writes are idempotent); the other order could miss it.
//!
//! Restore verifies the manifest, refuses to overwrite existing databases unless
//! forced, and must run while the gateway is stopped. InfluxDB is not included:
//! back it up with `influxd backup -portable`.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, StoreConfig};
use crate::store::spool::{copy_files, crc32};

/// Backup and restore errors; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// An I/O error.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("SQLite backup of {path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// The error.
        source: rusqlite::Error,
    },
    /// The spool could not be copied.
    #[error(transparent)]
    Spool(#[from] crate::store::spool::SpoolError),
    /// The target of a backup is not empty.
    #[error("{0} exists and is not empty; back up into a new directory")]
    NotEmpty(PathBuf),
    /// The manifest is missing or does not match the files.
    #[error("backup in {dir} does not verify: {why}")]
    Verify {
        /// The backup directory.
        dir: PathBuf,
        /// What does not match.
        why: String,
    },
    /// Restore would overwrite live data.
    #[error(
        "{0} already exists; stop the gateway and restore with --force to replace the current data"
    )]
    WouldOverwrite(PathBuf),
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the backup directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 of the content.
    pub crc32: u32,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// Gateway version that wrote it.
    pub gateway: String,
    /// Wall-clock time of the backup, UTC ms.
    pub created_ms: i64,
    /// The files.
    pub files: Vec<FileEntry>,
}

/// The databases of a configuration: (name in the backup, live path).
fn databases(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let mut dbs = Vec::new();
    if matches!(config.store, StoreConfig::Sqlite(_)) {
        dbs.push(("telemetry.db", config.data_dir.join("telemetry.db")));
    }
    dbs.push(("state.db", config.data_dir.join("state.db")));
    // Clustered, the maintenance engine is in PostgreSQL: back it up with `pg_dump`.
    if let (Some(m), None) = (&config.maintenance, &config.cluster) {
        dbs.push(("maintenance.db", m.db_path.clone()));
    }
    dbs
}

fn entry(dir: &Path, name: &str) -> Result<FileEntry, BackupError> {
    let path = dir.join(name);
    let bytes = fs::read(&path).map_err(|source| BackupError::Io {
        what: "reading",
        path,
        source,
    })?;
    Ok(FileEntry {
        name: name.to_owned(),
        bytes: bytes.len() as u64,
        crc32: crc32(&bytes),
    })
}

/// Writes a backup of `config`'s data into `dest` (created; must be empty).
pub fn backup(config: &Config, dest: &Path) -> Result<Manifest, BackupError> {
    if fs::read_dir(dest).is_ok_and(|mut d| d.next().is_some()) {
        return Err(BackupError::NotEmpty(dest.to_owned()));
    }
    fs::create_dir_all(dest).map_err(|source| BackupError::Io {
        what: "creating",
        path: dest.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    for name in copy_files(&config.data_dir.join("spool"), &dest.join("spool"))? {
        files.push(entry(dest, &format!("spool/{name}"))?);
    }
    for (name, live) in databases(config) {
        if !live.exists() {
            continue;
        }
        let sqlite = |source| BackupError::Sqlite {
            path: live.clone(),
            source,
        };
        let conn = rusqlite::Connection::open_with_flags(
            &live,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sqlite)?;
        conn.backup(rusqlite::MAIN_DB, dest.join(name), None)
            .map_err(sqlite)?;
        if name == "state.db" {
            // The copy keeps every device's sequence state in `devices`, none in the journal.
            let fold =
                crate::state::fold_sequence_journal_file(&dest.join(name)).map_err(|source| {
                    BackupError::Sqlite {
                        path: dest.join(name),
                        source,
                    }
                })?;
            if fold.unreadable > 0 {
                tracing::warn!(
                    rows = fold.unreadable,
                    "Backup: sequence-state journal rows that do not decode were left out of the copy (logged above)."
                );
            }
        }
        files.push(entry(dest, name)?);
    }
    let manifest = Manifest {
        version: 1,
        gateway: env!("CARGO_PKG_VERSION").to_owned(),
        created_ms: crate::clock::now_ms(),
        files,
    };
    let path = dest.join("manifest.json");
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Io {
        what: "writing",
        path: path.clone(),
        source: e.into(),
    })?;
    fs::write(&path, text).map_err(|source| BackupError::Io {
        what: "writing",
        path,
        source,
    })?;
    Ok(manifest)
}

/// Checks every file of the backup in `src` against its manifest.
pub fn verify(src: &Path) -> Result<Manifest, BackupError> {
    let fail = |why: String| BackupError::Verify {
        dir: src.to_owned(),
        why,
    };
    let text =
        fs::read(src.join("manifest.json")).map_err(|e| fail(format!("manifest.json: {e}")))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| fail(format!("manifest.json: {e}")))?;
    for f in &manifest.files {
        if f.name.contains("..") || f.name.starts_with('/') {
            return Err(fail(format!("unsafe file name {:?}", f.name)));
        }
        let actual = entry(src, &f.name).map_err(|e| fail(e.to_string()))?;
        if actual != *f {
            return Err(fail(format!(
                "{} is {} bytes with CRC {:08x}, the manifest says {} bytes with CRC {:08x}",
                f.name, actual.bytes, actual.crc32, f.bytes, f.crc32
            )));
        }
    }
    Ok(manifest)
}

/// Restores the backup in `src` into `config`'s data directory (the gateway must be stopped).
pub fn restore(config: &Config, src: &Path, force: bool) -> Result<Manifest, BackupError> {
    let manifest = verify(src)?;
    let dbs = databases(config);
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Io { what, path, source }
    };
    if !force {
        for (name, live) in &dbs {
            if live.exists() && manifest.files.iter().any(|f| f.name == *name) {
                return Err(BackupError::WouldOverwrite(live.clone()));
            }
        }
    }
    fs::create_dir_all(&config.data_dir).map_err(io("creating", &config.data_dir))?;
    for (name, live) in &dbs {
        if !manifest.files.iter().any(|f| f.name == *name) {
            continue;
        }
        if let Some(parent) = live.parent() {
            fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        let tmp = live.with_extension("restore-tmp");
        fs::copy(src.join(name), &tmp).map_err(io("copying to", &tmp))?;
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", live.display()));
            match fs::remove_file(&side) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("removing", &side)(e))
                }
                _ => {}
            }
        }
        fs::rename(&tmp, live).map_err(io("renaming to", live))?;
    }
    let spool = config.data_dir.join("spool");
    fs::create_dir_all(&spool).map_err(io("creating", &spool))?;
    for f in manifest
        .files
        .iter()
        .filter(|f| f.name.starts_with("spool/"))
    {
        let target = config.data_dir.join(&f.name);
        fs::copy(src.join(&f.name), &target).map_err(io("copying to", &target))?;
    }
    Ok(manifest)
}
