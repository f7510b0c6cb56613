//! The local spool: batches that could not reach the telemetry store, kept on
//! disk until they can.
//!
//! Each batch is one file, written to a temporary name, fsynced, renamed to
//! `{sequence:020}.jsonl` and the directory fsynced; only then are the batch's
//! messages acknowledged to the broker. A failed write removes its temporary file.
//!
//! # File format (v2)
//!
//! ```text
//! #fixture-spool v2 count=<points> bytes=<body length> crc32=<hex of the body>\n
//! <one JSON Point a line>\n ...
//! ```
//!
//! The header makes every kind of damage visible: a file cut at a line boundary
//! or mid-line (length and checksum), emptied (no header), or altered (checksum).
//! Such a file is never replayed: it is moved to `corrupt/`, counted
//! ([`Spool::quarantined`]) and logged as an error. Files of the previous format
//! (plain JSON lines, no header) are still replayed, with a warning, so an
//! upgrade with a non-empty spool loses nothing; damage to them can only be seen
//! when a line does not parse.
//!
//! Replay reads several of the oldest files at once ([`Spool::oldest_batches`])
//! so the store gets large writes.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::Point;

/// First bytes of a v2 spool file.
const MAGIC: &str = "#fixture-spool v2 ";

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

/// Why a spool file does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Damage {
    /// The file is empty.
    #[error("the file is empty")]
    Empty,
    /// The header line is missing its end or malformed.
    #[error("malformed header: {0}")]
    Header(String),
    /// The body is not as long as the header says (cut or appended to).
    #[error("body is {actual} bytes, the header says {expected} (file cut or extended)")]
    Length {
        /// From the header.
        expected: u64,
        /// On disk.
        actual: u64,
    },
    /// The checksum does not match.
    #[error("checksum mismatch: header {expected:08x}, body {actual:08x}")]
    Checksum {
        /// From the header.
        expected: u32,
        /// Computed.
        actual: u32,
    },
    /// The number of points differs from the header's.
    #[error("{actual} points, the header says {expected}")]
    Count {
        /// From the header.
        expected: u64,
        /// Parsed.
        actual: u64,
    },
    /// A line is not a point.
    #[error("line {line} is not a point: {why}")]
    Line {
        /// 1-based line number (the header is line 1 in v2 files).
        line: usize,
        /// Parser message.
        why: String,
    },
    /// The file could not be read.
    #[error("unreadable: {0}")]
    Read(String),
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
    quarantined: AtomicU64,
    legacy: AtomicU64,
}

/// One spooled batch, as read back.
pub struct SpooledBatch {
    /// The file it lives in.
    pub path: PathBuf,
    /// Its points.
    pub points: Vec<Point>,
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Encodes a batch in the v2 format (header + JSON lines).
pub fn encode_batch(points: &[Point]) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = Vec::with_capacity(points.len() * 160);
    for p in points {
        serde_json::to_writer(&mut body, p)?;
        body.push(b'\n');
    }
    let mut out = format!(
        "{MAGIC}count={} bytes={} crc32={:08x}\n",
        points.len(),
        body.len(),
        crc32(&body)
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// A decoded spool file.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    /// The points.
    pub points: Vec<Point>,
    /// Written by the previous format (no header, so damage at line boundaries cannot be seen).
    pub legacy: bool,
}

/// Decodes and verifies a spool file's bytes. Total: any input gives points or a [`Damage`].
pub fn decode_batch(bytes: &[u8]) -> Result<Decoded, Damage> {
    if bytes.is_empty() {
        return Err(Damage::Empty);
    }
    let Some(rest) = bytes.strip_prefix(MAGIC.as_bytes()) else {
        if bytes.first() == Some(&b'#') {
            return Err(Damage::Header("unknown header".into()));
        }
        return parse_lines(bytes, 1, None).map(|points| Decoded {
            points,
            legacy: true,
        });
    };
    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
        return Err(Damage::Header("no end of line".into()));
    };
    let header =
        std::str::from_utf8(&rest[..nl]).map_err(|_| Damage::Header("not UTF-8".into()))?;
    let body = &rest[nl + 1..];
    let (mut count, mut len, mut crc) = (None, None, None);
    for part in header.split(' ') {
        match part.split_once('=') {
            Some(("count", v)) => count = v.parse::<u64>().ok(),
            Some(("bytes", v)) => len = v.parse::<u64>().ok(),
            Some(("crc32", v)) => crc = u32::from_str_radix(v, 16).ok(),
            _ => return Err(Damage::Header(format!("unexpected {part:?}"))),
        }
    }
    let (Some(count), Some(len), Some(crc)) = (count, len, crc) else {
        return Err(Damage::Header(format!("incomplete: {header:?}")));
    };
    if body.len() as u64 != len {
        return Err(Damage::Length {
            expected: len,
            actual: body.len() as u64,
        });
    }
    let actual = crc32(body);
    if actual != crc {
        return Err(Damage::Checksum {
            expected: crc,
            actual,
        });
    }
    let points = parse_lines(body, 2, Some(count))?;
    Ok(Decoded {
        points,
        legacy: false,
    })
}

fn parse_lines(body: &[u8], first_line: usize, expect: Option<u64>) -> Result<Vec<Point>, Damage> {
    let mut points = Vec::with_capacity(expect.map_or(64, |c| c.min(100_000) as usize));
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let p = serde_json::from_slice(line).map_err(|e| Damage::Line {
            line: first_line + i,
            why: e.to_string(),
        })?;
        points.push(p);
    }
    if let Some(expected) = expect {
        if points.len() as u64 != expected {
            return Err(Damage::Count {
                expected,
                actual: points.len() as u64,
            });
        }
    } else if points.is_empty() {
        return Err(Damage::Empty);
    }
    Ok(points)
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let spool = Spool {
            dir: dir.to_owned(),
            next_seq: AtomicU64::new(0),
            append_lock: Mutex::new(()),
            quarantined: AtomicU64::new(0),
            legacy: AtomicU64::new(0),
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

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Files quarantined since start (damaged: never replayed).
    pub fn quarantined(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// Files of the previous format (no header) replayed since start.
    pub fn legacy_replayed(&self) -> u64 {
        self.legacy.load(Ordering::Relaxed)
    }

    /// Files in `corrupt/` now (kept for inspection; remove them by hand).
    pub fn quarantine_files(&self) -> u64 {
        fs::read_dir(self.dir.join("corrupt"))
            .map(|d| d.flatten().count() as u64)
            .unwrap_or(0)
    }

    /// Appends a batch durably: when this returns Ok, the batch survives a crash.
    /// On failure nothing is left behind (no temporary file, no partial batch).
    pub fn append(&self, points: &[Point]) -> Result<PathBuf, SpoolError> {
        let _guard = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(format!("{seq:020}.jsonl"));
        let tmp = path.with_extension("tmp");
        let bytes = encode_batch(points).map_err(|e| SpoolError::Io {
            path: tmp.clone(),
            source: e.into(),
        })?;
        let written = (|| {
            let mut file = File::create(&tmp).map_err(io(&tmp))?;
            file.write_all(&bytes).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
            fs::rename(&tmp, &path).map_err(io(&path))
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(path)
    }

    /// Reads the oldest batch, if any. A damaged file is quarantined and skipped.
    pub fn oldest(&self) -> Result<Option<SpooledBatch>, SpoolError> {
        Ok(self.oldest_batches(1, 1)?.pop())
    }

    /// Reads the oldest batches, stopping at `max_files` files or once `max_points`
    /// points are in hand. Damaged files are quarantined, counted and logged, never returned.
    pub fn oldest_batches(
        &self,
        max_files: usize,
        max_points: usize,
    ) -> Result<Vec<SpooledBatch>, SpoolError> {
        let mut out = Vec::new();
        let mut points = 0;
        for path in self.files()? {
            if out.len() >= max_files.max(1) || (points >= max_points && !out.is_empty()) {
                break;
            }
            let decoded = fs::read(&path)
                .map_err(|e| Damage::Read(e.to_string()))
                .and_then(|b| decode_batch(&b));
            match decoded {
                Ok(d) => {
                    if d.legacy {
                        self.legacy.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(path = %path.display(), points = d.points.len(), "Replaying a spool file of the previous format (no header: a cut at a line boundary cannot be detected).");
                    }
                    points += d.points.len();
                    out.push(SpooledBatch {
                        path,
                        points: d.points,
                    });
                }
                Err(Damage::Read(e)) if !path.exists() => {
                    tracing::debug!(path = %path.display(), error = %e, "Spool file vanished while reading.");
                }
                Err(damage) => self.quarantine(&path, &damage)?,
            }
        }
        Ok(out)
    }

    fn quarantine(&self, path: &Path, damage: &Damage) -> Result<(), SpoolError> {
        let quarantine = self.dir.join("corrupt");
        fs::create_dir_all(&quarantine).map_err(io(&quarantine))?;
        let target = quarantine.join(path.file_name().unwrap_or_default());
        fs::rename(path, &target).map_err(io(path))?;
        self.quarantined.fetch_add(1, Ordering::Relaxed);
        tracing::error!(path = %path.display(), quarantined_to = %target.display(), damage = %damage, "Spool file is damaged: NOT replayed, its points may be lost; moved aside for inspection.");
        Ok(())
    }

    /// Deletes a batch that has been written to the store.
    pub fn remove(&self, batch: &SpooledBatch) -> Result<(), SpoolError> {
        fs::remove_file(&batch.path).map_err(io(&batch.path))
    }
}

/// Copies every complete batch file of the spool in `src` to `dest` (created), for a
/// backup; works beside a running gateway (complete files are immutable, temporaries
/// are skipped, and a file replayed meanwhile is skipped, its points being in the store).
/// Each copy is verified. Returns the names copied.
pub fn copy_files(src: &Path, dest: &Path) -> Result<Vec<String>, SpoolError> {
    fs::create_dir_all(dest).map_err(io(dest))?;
    let mut files: Vec<PathBuf> = match fs::read_dir(src) {
        Ok(d) => d
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl") && seq_of(p).is_some())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(src)(e)),
    };
    files.sort();
    let mut copied = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        if let Err(damage) = decode_batch(&bytes) {
            tracing::error!(path = %path.display(), %damage, "Damaged spool file not copied into the backup.");
            continue;
        }
        let target = dest.join(&name);
        fs::write(&target, &bytes).map_err(io(&target))?;
        copied.push(name);
    }
    Ok(copied)
}

fn seq_of(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
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
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
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
    fn oldest_batches_merges_files_up_to_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        for i in 0..5 {
            spool.append(&[point(2 * i), point(2 * i + 1)]).unwrap();
        }
        assert_eq!(spool.oldest_batches(3, 1000).unwrap().len(), 3);
        assert_eq!(spool.oldest_batches(100, 3).unwrap().len(), 2);
        let all = spool.oldest_batches(100, 1000).unwrap();
        let ts: Vec<i64> = all
            .iter()
            .flat_map(|b| b.points.iter().map(|p| p.ts_ms))
            .collect();
        assert_eq!(ts, (0..10).collect::<Vec<_>>());
    }

    /// Every way a file can be damaged is quarantined, counted and never returned.
    #[test]
    fn damaged_files_are_quarantined_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let good = encode_batch(&[point(1), point(2), point(3)]).unwrap();
        let text = String::from_utf8(good.clone()).unwrap();
        let last_line_start = text[..text.len() - 1].rfind('\n').unwrap() + 1;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("cut at a line boundary", good[..last_line_start].to_vec()),
            ("cut mid-line", good[..good.len() - 7].to_vec()),
            ("emptied", Vec::new()),
            ("header only", good[..text.find('\n').unwrap() + 1].to_vec()),
            ("a byte flipped", {
                let mut b = good.clone();
                let i = b.len() - 10;
                b[i] ^= 0x01;
                b
            }),
            ("legacy, not JSON", b"{not json\n".to_vec()),
        ];
        for (i, (_, bytes)) in cases.iter().enumerate() {
            fs::write(dir.path().join(format!("{i:020}.jsonl")), bytes).unwrap();
        }
        spool.next_seq.store(cases.len() as u64, Ordering::SeqCst);
        spool.append(&[point(9)]).unwrap();
        let batches = spool.oldest_batches(100, 100_000).unwrap();
        assert_eq!(batches.len(), 1, "only the intact file is replayed");
        assert_eq!(batches[0].points, vec![point(9)]);
        assert_eq!(spool.quarantined(), cases.len() as u64);
        assert_eq!(spool.quarantine_files(), cases.len() as u64);
        for (i, (what, _)) in cases.iter().enumerate() {
            assert!(
                dir.path().join(format!("corrupt/{i:020}.jsonl")).exists(),
                "{what} not quarantined"
            );
        }
    }

    #[test]
    fn legacy_files_are_still_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut legacy = serde_json::to_vec(&point(7)).unwrap();
        legacy.push(b'\n');
        fs::write(dir.path().join("00000000000000000000.jsonl"), legacy).unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.oldest().unwrap().unwrap().points, vec![point(7)]);
        assert_eq!(spool.legacy_replayed(), 1);
        assert_eq!(spool.quarantined(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        // A directory where the final name should go makes the rename fail after the tmp is written.
        fs::create_dir(dir.path().join("00000000000000000000.jsonl")).unwrap();
        fs::write(dir.path().join("00000000000000000000.jsonl/x"), b"x").unwrap();
        assert!(spool.append(&[point(1)]).is_err());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
