//! `eval nab cv` on a tiny synthetic NAB-style corpus written to a temp dir: the
//! parameters chosen for a held-out category never depend on that category's own
//! labels (while a selection that sees every label does), and the report has one row
//! per category plus the aggregate lines.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const STEP_MIN: usize = 5;
const ROWS: usize = 1000;

fn ts(i: usize) -> String {
    let minutes = i * STEP_MIN;
    format!(
        "2014-04-{:02} {:02}:{:02}:00",
        1 + minutes / 1440,
        (minutes / 60) % 24,
        minutes % 60
    )
}

/// Deterministic noise in [-0.5, 0.5).
fn noise(seed: &mut u64) -> f64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
}

/// Noise around 100 (uniform, ±1), plus a level shift of `shift` from row 500 to 560
/// and a spike at row 800 when asked.
fn series(seed: u64, shift: f64, spike: bool) -> String {
    let mut s = seed;
    let mut text = String::from("timestamp,value\n");
    for i in 0..ROWS {
        let mut v = 100.0 + 2.0 * noise(&mut s);
        if (500..560).contains(&i) {
            v += shift;
        }
        if spike && i == 800 {
            v += 60.0;
        }
        text.push_str(&format!("{},{v:.4}\n", ts(i)));
    }
    text
}

fn window(a: usize, b: usize) -> String {
    format!("[\"{}.000000\", \"{}.000000\"]", ts(a), ts(b))
}

/// Files: `catA` (spikes, labelled), `catB` (a level shift and a spike; its windows
/// on the shift, or moved to a quiet stretch when `moved`), `catC` (no anomalies).
fn write_corpus(dir: &Path, moved: bool) {
    let mut windows = Vec::new();
    let mut put = |key: &str, text: String, wins: Vec<String>| {
        let path = dir.join("data").join(key);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, text).expect("write data");
        windows.push(format!("\"{key}\": [{}]", wins.join(", ")));
    };
    for k in 0..2u64 {
        put(
            &format!("catA/a{k}.csv"),
            series(11 + k, 0.0, true),
            vec![window(790, 830)],
        );
    }
    for k in 0..3u64 {
        let wins = if moved {
            vec![window(300, 340), window(790, 830)]
        } else {
            vec![window(495, 535), window(790, 830)]
        };
        put(&format!("catB/b{k}.csv"), series(21 + k, 0.8, true), wins);
    }
    for k in 0..2u64 {
        put(
            &format!("catC/c{k}.csv"),
            series(31 + k, 0.0, false),
            vec![],
        );
    }
    fs::write(
        dir.join("windows.json"),
        format!("{{{}}}", windows.join(",\n")),
    )
    .expect("write windows");
    let profile = |fp: f64, fn_: f64| {
        format!(
            "{{\"CostMatrix\": {{\"tpWeight\": 1.0, \"fnWeight\": {fn_}, \"fpWeight\": {fp}, \"tnWeight\": 1.0}}}}"
        )
    };
    fs::write(
        dir.join("profiles.json"),
        format!(
            "{{\"standard\": {}, \"reward_low_FP_rate\": {}, \"reward_low_FN_rate\": {}}}",
            profile(0.11, 1.0),
            profile(0.22, 1.0),
            profile(0.11, 2.0)
        ),
    )
    .expect("write profiles");
}

fn tmp_corpus(name: &str, moved: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nab-cv-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir");
    write_corpus(&dir, moved);
    dir
}

struct Parsed {
    /// (category, held-out standard column text, chosen label) per fold row.
    folds: Vec<(String, String, String)>,
    candidates: usize,
    aggregates: Vec<Vec<f64>>,
    full_best: String,
}

fn run_cv(dir: &Path) -> Parsed {
    let out = Command::new(env!("CARGO_BIN_EXE_eval"))
        .args([
            "nab",
            "cv",
            "--nab",
            dir.to_str().unwrap_or(""),
            "--grid",
            "shift_weight=0,0.75",
            "--grid",
            "refractory_decay=0.995,0.99",
            // Without the spatial stage only the mean-shift stage sees catB's shift.
            "--set",
            "spatial_score=0",
            "--out",
            dir.join("out").to_str().unwrap_or(""),
        ])
        .output()
        .expect("run eval nab cv");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(stderr.contains("[fold 3/3]"), "progress lines: {stderr}");
    // One results file per data file, as many rows as the data (plus the header).
    for key in ["catA/a0.csv", "catB/b2.csv", "catC/c1.csv"] {
        let text = fs::read_to_string(dir.join("out").join(key)).expect("held-out results");
        assert_eq!(text.lines().count(), ROWS + 1, "{key}");
    }
    let mut folds = Vec::new();
    let mut aggregates = Vec::new();
    let mut candidates = 0;
    let mut full_best = String::new();
    for line in stdout.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if line.trim_start().starts_with("candidate ") {
            candidates += 1;
        } else if toks.first().is_some_and(|t| t.starts_with("cat")) {
            let chosen = toks.last().copied().unwrap_or("").to_string();
            let (_, right) = line.split_once('|').expect("fold row columns");
            folds.push((toks[0].to_string(), right.trim().to_string(), chosen));
        } else if line.starts_with("LOCO") || line.starts_with("full subset, default") {
            let nums: Vec<f64> = toks
                .iter()
                .rev()
                .take(3)
                .map(|t| t.parse().expect("numeric aggregate"))
                .collect();
            aggregates.push(nums);
        } else if line.starts_with("full subset, best candidate") {
            full_best = line.rsplit('(').next().unwrap_or("").to_string();
        }
    }
    Parsed {
        folds,
        candidates,
        aggregates,
        full_best,
    }
}

#[test]
fn loco_choice_for_a_fold_ignores_that_folds_labels() {
    let a = run_cv(&tmp_corpus("orig", false));
    let b = run_cv(&tmp_corpus("moved", true));

    // Shape: 4 candidates, one row per category in name order, three aggregate lines
    // of three profiles each, all finite.
    for p in [&a, &b] {
        assert_eq!(p.candidates, 4);
        let cats: Vec<&str> = p.folds.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(cats, ["catA", "catB", "catC"]);
        assert_eq!(p.aggregates.len(), 3);
        assert!(p.aggregates.iter().flatten().all(|x| x.is_finite()));
    }

    // The perturbation matters: a selection that sees catB's labels changes its mind
    // (on all labels, and for the folds that train on catB), and catB's held-out
    // score changes.
    assert_ne!(
        a.full_best, b.full_best,
        "moving catB's windows should change the all-labels choice"
    );
    assert_ne!(a.folds[0].2, b.folds[0].2, "catA's fold trains on catB");
    assert_ne!(a.folds[1].1, b.folds[1].1, "catB's held-out scores");

    // ... but the parameters chosen for the catB fold do not.
    assert_eq!(a.folds[1].2, b.folds[1].2, "catB's chosen parameters");
}
