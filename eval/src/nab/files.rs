//! File-level helpers of `eval nab` (`detect`, `score`, `run`): streaming detection of one CSV file, loading results, and the
//! printed per-file / totals report. All the file I/O of the crate lives here.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::nab::csv::check_data_header;
use crate::nab::labels::Window;
use crate::nab::{parse_data_line, parse_profiles, parse_results_csv, parse_windows};
use crate::nab::{score_corpus, FileScores, Profile, ProfileResult};
use analytics::{DetectorConfig, StreamingDetector};

/// Run the detector over one NAB data file in a single streaming pass, writing
/// `timestamp,value,anomaly_score`. Returns the rows written.
pub fn detect_file(input: &Path, output: &Path, cfg: DetectorConfig) -> Result<usize, String> {
    let inp = File::open(input).map_err(|e| format!("{}: cannot open: {e}", input.display()))?;
    if let Some(dir) = output.parent() {
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir)
                .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
        }
    }
    let out =
        File::create(output).map_err(|e| format!("{}: cannot create: {e}", output.display()))?;
    let mut reader = BufReader::new(inp);
    let mut w = BufWriter::new(out);
    let mut det = StreamingDetector::new(cfg).map_err(|e| e.to_string())?;
    let werr = |e: std::io::Error| format!("{}: write failed: {e}", output.display());
    let mut line = String::new();
    let mut line_no = 0usize;
    let mut rows = 0usize;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("{}:{}: read failed: {e}", input.display(), line_no + 1))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if line_no == 1 {
            check_data_header(&line).map_err(|e| format!("{}: {e}", input.display()))?;
            writeln!(w, "timestamp,value,anomaly_score").map_err(werr)?;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let row =
            parse_data_line(&line, line_no).map_err(|e| format!("{}: {e}", input.display()))?;
        let score = det.update(row.ts_ms, row.value);
        let value_text = line
            .trim_end_matches(['\r', '\n'])
            .split(',')
            .nth(1)
            .unwrap_or("")
            .trim();
        writeln!(w, "{},{},{}", row.timestamp_text, value_text, score).map_err(werr)?;
        rows += 1;
    }
    if line_no == 0 {
        return Err(format!(
            "{}: empty file (expected header `timestamp,value`)",
            input.display()
        ));
    }
    w.flush().map_err(werr)?;
    Ok(rows)
}

/// Apply `name=value` overrides (from `--set`) to a detector configuration, by
/// `DetectorConfig` field name (`DetectorConfig::set`).
pub fn apply_overrides(mut cfg: DetectorConfig, sets: &[&str]) -> Result<DetectorConfig, String> {
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("--set expects name=value, got {s:?}"))?;
        let x: f64 = v
            .trim()
            .parse()
            .map_err(|_| format!("--set {k}: {v:?} is not a number"))?;
        if !cfg.set(k.trim(), x) {
            return Err(format!("--set: unknown detector parameter {:?}", k.trim()));
        }
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Read a whole text file with a helpful error.
pub fn read_text(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

/// Load windows.json.
pub fn load_windows(path: &Path) -> Result<BTreeMap<String, Vec<Window>>, String> {
    parse_windows(&read_text(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// Load profiles.json.
pub fn load_profiles(path: &Path) -> Result<Vec<Profile>, String> {
    parse_profiles(&read_text(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// Count data rows (non-empty lines after the header) of a data file.
pub fn count_data_rows(path: &Path) -> Result<usize, String> {
    Ok(read_text(path)?
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count())
}

/// Load the results of every file listed in windows.json from `results/<key>`.
pub fn load_results(
    results: &Path,
    windows: &BTreeMap<String, Vec<Window>>,
    data: Option<&Path>,
) -> Result<Vec<FileScores>, String> {
    let mut files = Vec::new();
    for key in windows.keys() {
        let path = results.join(key);
        let rows = parse_results_csv(&read_text(&path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(d) = data {
            let want = count_data_rows(&d.join(key))?;
            if want != rows.len() {
                return Err(format!(
                    "{}: {} rows, but the data file has {want}",
                    path.display(),
                    rows.len()
                ));
            }
        }
        let (timestamps, scores) = rows.into_iter().unzip();
        files.push(FileScores {
            key: key.clone(),
            timestamps,
            scores,
        });
    }
    Ok(files)
}

/// Score all profiles and print the per-file table and the totals.
pub fn score_and_print(
    files: &[FileScores],
    windows: &BTreeMap<String, Vec<Window>>,
    profiles: &[Profile],
) -> Result<Vec<ProfileResult>, String> {
    let results: Vec<ProfileResult> = profiles
        .iter()
        .map(|p| score_corpus(files, windows, p))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    print!("{:<58} {:>4}", "file", "win");
    for r in &results {
        print!(" | {:>18}", short_name(&r.profile.name));
    }
    println!();
    print!("{:<58} {:>4}", "", "");
    for _ in &results {
        print!(" | {:>7} {:>4} {:>5}", "raw", "tp", "fp");
    }
    println!();
    for (i, f) in files.iter().enumerate() {
        let nw = windows.get(&f.key).map_or(0, Vec::len);
        print!("{:<58} {:>4}", f.key, nw);
        for r in &results {
            let s = &r.per_file[i].1;
            print!(
                " | {:>7.3} {:>4} {:>5}",
                s.score, s.detected_windows, s.false_positives
            );
        }
        println!();
    }
    println!();
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>10} {:>6} {:>6} {:>6} {:>10}",
        "profile", "threshold", "raw", "null", "perfect", "tp", "fn", "fp", "NAB score"
    );
    for r in &results {
        println!(
            "{:<20} {:>10.5} {:>10.3} {:>10.3} {:>10.3} {:>6} {:>6} {:>6} {:>10.2}",
            r.profile.name,
            r.best.threshold,
            r.best.score,
            r.null_score,
            r.perfect_score,
            r.best.detected_windows,
            r.best.missed_windows,
            r.best.false_positives,
            r.normalized
        );
    }
    Ok(results)
}

fn short_name(n: &str) -> &str {
    match n {
        "reward_low_FP_rate" => "low_FP",
        "reward_low_FN_rate" => "low_FN",
        other => other,
    }
}

/// `dir/<key>` for a windows.json key.
pub fn keyed(dir: &Path, key: &str) -> PathBuf {
    dir.join(key)
}

/// Load every data file listed in windows.json from `data/<key>` into memory (for
/// `eval nab cv`).
pub fn load_corpus(
    data: &Path,
    windows: &BTreeMap<String, Vec<Window>>,
) -> Result<Vec<crate::nab::cv::Series>, String> {
    let mut out = Vec::with_capacity(windows.len());
    for key in windows.keys() {
        let path = data.join(key);
        let text = read_text(&path)?;
        let mut lines = text.lines();
        let header = lines
            .next()
            .ok_or_else(|| format!("{}: empty file", path.display()))?;
        check_data_header(header).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut timestamps, mut values) = (Vec::new(), Vec::new());
        for (i, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row =
                parse_data_line(line, i + 2).map_err(|e| format!("{}: {e}", path.display()))?;
            timestamps.push(row.ts_ms);
            values.push(row.value);
        }
        out.push(crate::nab::cv::Series {
            key: key.clone(),
            timestamps,
            values,
        });
    }
    Ok(out)
}
