//! Integration tests: `eval nab detect` CSV round trip and error messages, and a full
//! detector + scorer run over the NAB development subset with a score floor.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use analytics::{DetectorConfig, StreamingDetector};
use eval::nab::{parse_data_line, parse_profiles, parse_windows, score_corpus, FileScores};

/// The NAB development subset: `$NAB_DIR`, else `shared/datasets/nab` beside the
/// checkout (`/work/main` → `/work/shared`, or a worktree one level deeper).
fn nab_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NAB_DIR") {
        return PathBuf::from(d);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        root.join("../../shared/datasets/nab"),
        root.join("../../../shared/datasets/nab"),
    ];
    candidates
        .iter()
        .find(|d| d.join("windows.json").is_file())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("analytics-test-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn eval_nab_detect_round_trip() {
    let input = tmp("in.csv");
    let output = tmp("out.csv");
    let mut text = String::from("timestamp,value\n");
    for i in 0..400 {
        let v = if i == 350 { 500 } else { 10 + i % 3 };
        text.push_str(&format!(
            "2014-04-01 {:02}:{:02}:00,{v}\n",
            (i / 12) % 24,
            (i % 12) * 5
        ));
    }
    fs::write(&input, &text).expect("write input");
    let st = Command::new(env!("CARGO_BIN_EXE_eval"))
        .args([
            "nab",
            "detect",
            "--input",
            input.to_str().unwrap_or(""),
            "--output",
            output.to_str().unwrap_or(""),
        ])
        .status()
        .expect("run eval nab detect");
    assert!(st.success());
    let out = fs::read_to_string(&output).expect("read output");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
    let rows: Vec<&str> = lines.collect();
    let inputs: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), inputs.len());
    let mut scores = Vec::new();
    for (r, i) in rows.iter().zip(&inputs) {
        // Same timestamp and value text, plus a score in [0, 1].
        let (prefix, score) = r.rsplit_once(',').expect("three columns");
        assert_eq!(prefix, *i);
        let s: f64 = score.parse().expect("numeric score");
        assert!((0.0..=1.0).contains(&s));
        scores.push(s);
    }
    // Scores equal the library's for the same points.
    let mut d = StreamingDetector::new(DetectorConfig::default()).expect("valid");
    for (i, line) in inputs.iter().enumerate() {
        let row = parse_data_line(line, i + 2).expect("parse");
        assert_eq!(d.update(row.ts_ms, row.value), scores[i]);
    }
    assert!(scores[350] > 0.9);
}

#[test]
fn eval_nab_detect_reports_bad_line() {
    let input = tmp("bad.csv");
    fs::write(
        &input,
        "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,oops\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_eval"))
        .args([
            "nab",
            "detect",
            "--input",
            input.to_str().unwrap_or(""),
            "--output",
            tmp("bad-out.csv").to_str().unwrap_or(""),
        ])
        .output()
        .expect("run eval nab detect");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("oops"), "{err}");
    fs::write(&input, "time,val\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_eval"))
        .args([
            "nab",
            "detect",
            "--input",
            input.to_str().unwrap_or(""),
            "--output",
            tmp("bad-out.csv").to_str().unwrap_or(""),
        ])
        .output()
        .expect("run eval nab detect");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("header"));
}

/// Detector + scorer over the whole development subset (about 137k rows).
#[test]
fn nab_subset_score_floor() {
    let nab = nab_dir();
    let windows =
        parse_windows(&fs::read_to_string(nab.join("windows.json")).expect("windows.json"))
            .expect("parse windows");
    let profiles =
        parse_profiles(&fs::read_to_string(nab.join("profiles.json")).expect("profiles.json"))
            .expect("parse profiles");
    let mut files = Vec::new();
    for key in windows.keys() {
        let text = fs::read_to_string(nab.join("data").join(key)).expect("data file");
        let mut d = StreamingDetector::new(DetectorConfig::default()).expect("valid");
        let (mut timestamps, mut scores) = (Vec::new(), Vec::new());
        for (i, line) in text.lines().enumerate().skip(1) {
            let row = parse_data_line(line, i + 1).expect("parse");
            timestamps.push(row.ts_ms);
            scores.push(d.update(row.ts_ms, row.value));
        }
        files.push(FileScores {
            key: key.clone(),
            timestamps,
            scores,
        });
    }
    assert_eq!(files.len(), 41);
    let mut got = BTreeMap::new();
    for p in &profiles {
        let r = score_corpus(&files, &windows, p).expect("score");
        assert!((r.null_score + 64.0 * p.costs.fn_weight).abs() < 1e-9);
        assert!((r.perfect_score - 64.0 * p.costs.tp_weight).abs() < 1e-9);
        got.insert(p.name.clone(), r.normalized);
    }
    eprintln!("NAB subset: {got:?}");
    assert!(got["standard"] >= 62.0, "{got:?}");
    assert!(got["reward_low_FP_rate"] >= 52.0, "{got:?}");
    assert!(got["reward_low_FN_rate"] >= 67.0, "{got:?}");
}
