//! The local spool: batches that could not reach the telemetry store, kept on
//! disk until they can.
//!
//! Each batch is one file of JSON lines (one [`Point`] a line), written to a
//! temporary name, fsynced, renamed to `{sequence:020}.jsonl` and the directory
//! fsynced: a file with the final name is always complete. Only then are the
//! batch's messages acknowledged to the broker. Replay reads the oldest file,
//! writes it to the store and deletes it. A file that cannot be parsed (disk
//! corruption) is moved to `corrupt/` for inspection rather than blocking replay.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::Point;

/// Spool errors (all I/O: the disk is full, gone or read-only).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// An I/O error on a spool file.
    #[error("spool I/O error on {path}: {source}. Check free space and permissions of the data directory.")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A spool directory.
pub struct Spool {
    dir: PathBuf,
    next_seq: AtomicU64,
    // Serialises appends so sequence order equals file order.
    append_lock: Mutex<()>,
}

/// One spooled batch, as read back.
pub struct SpooledBatch {
    /// The file it lives in.
    pub path: PathBuf,
    /// Its points.
    pub points: Vec<Point>,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let spool = Spool {
            dir: dir.to_owned(),
            next_seq: AtomicU64::new(0),
            append_lock: Mutex::new(()),
        };
        let last = spool
            .files()?
            .last()
            .and_then(|p| seq_of(p))
            .map_or(0, |s| s + 1);
        spool.next_seq.store(last, Ordering::SeqCst);
        // Leftover temporaries are batches whose messages were never acknowledged: drop them.
        for entry in fs::read_dir(dir).map_err(io(dir))?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(spool)
    }

    /// The spooled batch files, oldest first.
    pub fn files(&self) -> Result<Vec<PathBuf>, SpoolError> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl") && seq_of(p).is_some())
            .collect();
        files.sort();
        Ok(files)
    }

    /// Batches waiting for replay (0 if the directory cannot be read; the next append or read reports that).
    pub fn backlog(&self) -> u64 {
        self.files().map(|f| f.len() as u64).unwrap_or(0)
    }

    /// Appends a batch durably: when this returns Ok, the batch survives a crash.
    pub fn append(&self, points: &[Point]) -> Result<PathBuf, SpoolError> {
        let _guard = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(format!("{seq:020}.jsonl"));
        let tmp = path.with_extension("tmp");
        {
            let file = File::create(&tmp).map_err(io(&tmp))?;
            let mut w = BufWriter::new(file);
            for p in points {
                serde_json::to_writer(&mut w, p).map_err(|e| SpoolError::Io {
                    path: tmp.clone(),
                    source: e.into(),
                })?;
                w.write_all(b"\n").map_err(io(&tmp))?;
            }
            let file = w.into_inner().map_err(|e| SpoolError::Io {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(path)
    }

    /// Reads the oldest batch, if any. A corrupt file is quarantined and skipped.
    pub fn oldest(&self) -> Result<Option<SpooledBatch>, SpoolError> {
        for path in self.files()? {
            match read_batch(&path) {
                Ok(points) => return Ok(Some(SpooledBatch { path, points })),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "Spooled batch is unreadable; moved to corrupt/ for inspection.");
                    let quarantine = self.dir.join("corrupt");
                    fs::create_dir_all(&quarantine).map_err(io(&quarantine))?;
                    let target = quarantine.join(path.file_name().unwrap_or_default());
                    fs::rename(&path, &target).map_err(io(&path))?;
                }
            }
        }
        Ok(None)
    }

    /// Deletes a batch that has been written to the store.
    pub fn remove(&self, batch: &SpooledBatch) -> Result<(), SpoolError> {
        fs::remove_file(&batch.path).map_err(io(&batch.path))
    }
}

fn seq_of(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
}

fn read_batch(path: &Path) -> std::io::Result<Vec<Point>> {
    let reader = BufReader::new(OpenOptions::new().read(true).open(path)?);
    let mut points = Vec::new();
    for line in reader.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        points.push(serde_json::from_str(&line).map_err(std::io::Error::from)?);
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FieldValue;

    fn point(ts: i64) -> Point {
        Point {
            measurement: "purifier".into(),
            tags: vec![("device_id".into(), "p-1".into())],
            fields: vec![
                ("tds_in_ppm".into(), FieldValue::Int(300)),
                ("note".into(), FieldValue::Str("a \"b\"\n".into())),
            ],
            ts_ms: ts,
        }
    }

    #[test]
    fn batches_come_back_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.append(&[point(1), point(2)]).unwrap();
        spool.append(&[point(3)]).unwrap();
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        let first = spool.oldest().unwrap().unwrap();
        assert_eq!(first.points, vec![point(1), point(2)]);
        spool.remove(&first).unwrap();
        spool.append(&[point(4)]).unwrap();
        let second = spool.oldest().unwrap().unwrap();
        assert_eq!(second.points, vec![point(3)]);
        spool.remove(&second).unwrap();
        assert_eq!(spool.oldest().unwrap().unwrap().points, vec![point(4)]);
    }

    #[test]
    fn a_corrupt_file_is_quarantined_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        fs::write(
            dir.path().join("00000000000000000000.jsonl"),
            b"{not json\n",
        )
        .unwrap();
        spool.next_seq.store(1, Ordering::SeqCst);
        spool.append(&[point(9)]).unwrap();
        assert_eq!(spool.oldest().unwrap().unwrap().points, vec![point(9)]);
        assert!(dir
            .path()
            .join("corrupt/00000000000000000000.jsonl")
            .exists());
    }
}
