//! Leave-one-category-out (LOCO) cross-validation of the anomaly detector on a NAB
//! corpus (`eval nab cv`). Pure: the series, windows and profiles come in memory
//! ([`super::files::load_corpus`] reads them).
//!
//! For each category (the `data/` subfolder, the part of a windows.json key before
//! the first `/`), the detector's parameters are chosen from a small candidate grid
//! by the standard-profile NAB score of the **other** categories only (threshold
//! optimised on them, as NAB does); the held-out category is then scored with those
//! parameters. Two aggregates over all held-out categories are reported per profile:
//!
//! * **held-out parameters, NAB threshold**: the held-out results of every fold
//!   together form one results set, scored exactly as `eval nab score` would score
//!   it (one threshold per profile optimised over that set, normalised between the
//!   null and the perfect detector);
//! * **held-out parameters and threshold** (strict): each fold's held-out category is
//!   scored at the threshold chosen on its training categories; the raw scores, the
//!   null and the perfect scores are summed over the folds and normalised the same way.
//!
//! Ties in the selection go to the earlier candidate of the grid, so the grid should
//! list the default first. A fold's choice reads only the scores and windows of the
//! training categories; the held-out category's windows are used only to score it.

use std::collections::BTreeMap;

use analytics::{DetectorConfig, StreamingDetector};

use crate::nab::corpus::{score_corpus, FileScores, ProfileResult, PROBATION_PERCENT};
use crate::nab::error::NabError;
use crate::nab::labels::{Profile, Window};
use crate::nab::scorer::{
    normalized_score, optimize_threshold, score_at_threshold, sweep_file, SweepPoint,
};

/// One data series in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Key in windows.json, e.g. `realTraffic/speed_6005.csv`.
    pub key: String,
    /// Row timestamps (ms since the epoch).
    pub timestamps: Vec<i64>,
    /// Row values.
    pub values: Vec<f64>,
}

/// The category of a windows.json key: the part before the first `/` (the whole key
/// when there is none).
pub fn category_of(key: &str) -> &str {
    key.split_once('/').map_or(key, |(c, _)| c)
}

/// One axis of the candidate grid: a `DetectorConfig` parameter and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct GridAxis {
    /// `DetectorConfig` field name (see `DetectorConfig::set`).
    pub name: String,
    /// Candidate values; the first is the default.
    pub values: Vec<f64>,
}

/// A candidate of the grid: its label (`name=value,...`) and configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// `name=value` pairs, e.g. `refractory_decay=0.995`.
    pub label: String,
    /// The configuration.
    pub cfg: DetectorConfig,
}

/// The cartesian product of the axes applied to `base`, the base (all first values)
/// first. Fails on an unknown parameter or an invalid combination.
pub fn expand_grid(base: DetectorConfig, axes: &[GridAxis]) -> Result<Vec<Candidate>, String> {
    let mut out = vec![Candidate {
        label: String::new(),
        cfg: base,
    }];
    for axis in axes {
        if axis.values.is_empty() {
            return Err(format!("grid axis {} has no values", axis.name));
        }
        let mut next = Vec::with_capacity(out.len() * axis.values.len());
        for c in &out {
            for &v in &axis.values {
                let mut cfg = c.cfg;
                if !cfg.set(&axis.name, v) {
                    return Err(format!("unknown detector parameter {:?}", axis.name));
                }
                let sep = if c.label.is_empty() { "" } else { "," };
                next.push(Candidate {
                    label: format!("{}{sep}{}={v}", c.label, axis.name),
                    cfg,
                });
            }
        }
        out = next;
    }
    for c in &out {
        c.cfg
            .validate()
            .map_err(|e| format!("candidate {}: {e}", c.label))?;
    }
    if out.len() == 1 && out[0].label.is_empty() {
        out[0].label = "default".to_string();
    }
    Ok(out)
}

/// Run the detector over one series.
pub fn detect(series: &Series, cfg: DetectorConfig) -> Result<FileScores, String> {
    let mut d = StreamingDetector::new(cfg).map_err(|e| e.to_string())?;
    let scores = series
        .timestamps
        .iter()
        .zip(&series.values)
        .map(|(&t, &v)| d.update(t, v))
        .collect();
    Ok(FileScores {
        key: series.key.clone(),
        timestamps: series.timestamps.clone(),
        scores,
    })
}

/// One held-out fold.
#[derive(Debug, Clone, PartialEq)]
pub struct Fold {
    /// The held-out category.
    pub category: String,
    /// Files and windows of the held-out category.
    pub files: usize,
    /// Windows of the held-out category.
    pub windows: usize,
    /// Index of the chosen candidate in the grid.
    pub chosen: usize,
    /// Standard score (normalised) of the chosen candidate on the training categories.
    pub train_standard: f64,
    /// Per profile (same order as the profiles): the held-out category scored on its
    /// own with the chosen parameters, threshold optimised on it (NAB protocol).
    pub held_out: Vec<ProfileResult>,
    /// Per profile: threshold chosen on the training categories (for the chosen
    /// candidate) and the held-out raw score, tp, fn, fp at that threshold, with the
    /// held-out null and perfect raw scores.
    pub strict: Vec<StrictScore>,
}

/// A held-out category scored at a threshold chosen on the training categories.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrictScore {
    /// Threshold chosen on the training categories.
    pub threshold: f64,
    /// Held-out raw score at that threshold.
    pub raw: f64,
    /// Null detector's raw score on the held-out category.
    pub null: f64,
    /// Perfect detector's raw score on the held-out category.
    pub perfect: f64,
    /// Detected windows.
    pub tp: usize,
    /// Missed windows.
    pub fn_: usize,
    /// False positives.
    pub fp: usize,
}

/// Everything `eval nab cv` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct CvReport {
    /// The profiles, in input order.
    pub profiles: Vec<String>,
    /// The grid.
    pub candidates: Vec<Candidate>,
    /// One fold per category, in name order.
    pub folds: Vec<Fold>,
    /// Per profile: all held-out results together, scored as `eval nab score` does.
    pub held_out: Vec<ProfileResult>,
    /// Per profile: normalised sum of the folds' strict scores.
    pub strict: Vec<f64>,
    /// Per profile: the grid's first candidate (the default) on the whole corpus.
    pub full_default: Vec<ProfileResult>,
    /// Index of the candidate with the best standard score on the whole corpus, and
    /// that score (for reference only: chosen with every label).
    pub full_best: (usize, f64),
}

fn sweep_points(
    files: &[&FileScores],
    windows: &BTreeMap<String, Vec<Window>>,
    profile: &Profile,
    scores_of: impl Fn(&FileScores, &[Window]) -> Vec<f64>,
) -> Result<Vec<SweepPoint>, NabError> {
    let mut all = Vec::new();
    let mut next_id = 0usize;
    for f in files {
        let w = windows.get(&f.key).map(Vec::as_slice).unwrap_or(&[]);
        let s = scores_of(f, w);
        all.extend(sweep_file(
            &f.key,
            &f.timestamps,
            &s,
            w,
            &profile.costs,
            PROBATION_PERCENT,
            next_id,
        )?);
        next_id += w.len();
    }
    Ok(all)
}

fn strict_score(
    files: &[&FileScores],
    windows: &BTreeMap<String, Vec<Window>>,
    profile: &Profile,
    threshold: f64,
) -> Result<StrictScore, NabError> {
    let pts = sweep_points(files, windows, profile, |f, _| f.scores.clone())?;
    let at = score_at_threshold(&pts, &profile.costs, threshold);
    let null_pts = sweep_points(files, windows, profile, |f, _| vec![0.0; f.scores.len()])?;
    let null = optimize_threshold(&null_pts, &profile.costs).score;
    let perfect_pts = sweep_points(files, windows, profile, |f, w| {
        let mut s = vec![0.0; f.timestamps.len()];
        for &(start, _) in w {
            if let Some(i) = f.timestamps.iter().position(|&t| t == start) {
                s[i] = 1.0;
            }
        }
        s
    })?;
    let perfect = optimize_threshold(&perfect_pts, &profile.costs).score;
    Ok(StrictScore {
        threshold,
        raw: at.score,
        null,
        perfect,
        tp: at.detected_windows,
        fn_: at.missed_windows,
        fp: at.false_positives,
    })
}

/// Leave-one-category-out cross-validation. `progress` receives one line per step.
/// The selection uses the profile named `standard` (the first profile if absent).
pub fn run_cv(
    series: &[Series],
    windows: &BTreeMap<String, Vec<Window>>,
    profiles: &[Profile],
    candidates: &[Candidate],
    mut progress: impl FnMut(&str),
) -> Result<CvReport, String> {
    if candidates.is_empty() || profiles.is_empty() || series.is_empty() {
        return Err("cross-validation needs candidates, profiles and series".to_string());
    }
    let sel = profiles
        .iter()
        .position(|p| p.name == "standard")
        .unwrap_or(0);
    let mut categories: Vec<&str> = series.iter().map(|s| category_of(&s.key)).collect();
    categories.sort_unstable();
    categories.dedup();
    if categories.len() < 2 {
        return Err(format!(
            "cross-validation needs at least 2 categories, found {}",
            categories.len()
        ));
    }
    // Detector output of every candidate on every series (independent of the folds).
    let mut scored: Vec<Vec<FileScores>> = Vec::with_capacity(candidates.len());
    for (i, c) in candidates.iter().enumerate() {
        progress(&format!(
            "[detect {}/{}] {}",
            i + 1,
            candidates.len(),
            c.label
        ));
        scored.push(
            series
                .iter()
                .map(|s| detect(s, c.cfg))
                .collect::<Result<_, _>>()?,
        );
    }
    let err = |e: NabError| e.to_string();
    let mut folds = Vec::new();
    let mut assembled: Vec<Option<FileScores>> = vec![None; series.len()];
    for (k, &cat) in categories.iter().enumerate() {
        let train_idx: Vec<usize> = (0..series.len())
            .filter(|&i| category_of(&series[i].key) != cat)
            .collect();
        let test_idx: Vec<usize> = (0..series.len())
            .filter(|&i| category_of(&series[i].key) == cat)
            .collect();
        // Choose on the training categories only.
        let mut best: Option<(usize, f64, f64)> = None; // (candidate, normalised, threshold)
        for (ci, files) in scored.iter().enumerate() {
            let train: Vec<FileScores> = train_idx.iter().map(|&i| files[i].clone()).collect();
            let r = score_corpus(&train, windows, &profiles[sel]).map_err(err)?;
            if best.is_none_or(|(_, s, _)| r.normalized > s + 1e-9) {
                best = Some((ci, r.normalized, r.best.threshold));
            }
        }
        let Some((chosen, train_standard, _)) = best else {
            return Err("empty grid".to_string());
        };
        progress(&format!(
            "[fold {}/{}] held out {cat}: chose {} (training standard {train_standard:.2})",
            k + 1,
            categories.len(),
            candidates[chosen].label
        ));
        let train: Vec<FileScores> = train_idx
            .iter()
            .map(|&i| scored[chosen][i].clone())
            .collect();
        let test: Vec<FileScores> = test_idx
            .iter()
            .map(|&i| scored[chosen][i].clone())
            .collect();
        let test_refs: Vec<&FileScores> = test.iter().collect();
        let mut held_out = Vec::new();
        let mut strict = Vec::new();
        for p in profiles {
            let tr = score_corpus(&train, windows, p).map_err(err)?;
            strict.push(strict_score(&test_refs, windows, p, tr.best.threshold).map_err(err)?);
            held_out.push(score_corpus(&test, windows, p).map_err(err)?);
        }
        for &i in &test_idx {
            assembled[i] = Some(scored[chosen][i].clone());
        }
        folds.push(Fold {
            category: cat.to_string(),
            files: test_idx.len(),
            windows: test_idx
                .iter()
                .map(|&i| windows.get(&series[i].key).map_or(0, Vec::len))
                .sum(),
            chosen,
            train_standard,
            held_out,
            strict,
        });
    }
    let assembled: Vec<FileScores> = assembled.into_iter().flatten().collect();
    let held_out = profiles
        .iter()
        .map(|p| score_corpus(&assembled, windows, p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let strict = (0..profiles.len())
        .map(|pi| {
            let (raw, null, perfect) = folds.iter().fold((0.0, 0.0, 0.0), |acc, f| {
                let s = &f.strict[pi];
                (acc.0 + s.raw, acc.1 + s.null, acc.2 + s.perfect)
            });
            normalized_score(raw, null, perfect)
        })
        .collect();
    let full_default = profiles
        .iter()
        .map(|p| score_corpus(&scored[0], windows, p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let mut full_best = (0usize, f64::NEG_INFINITY);
    for (ci, files) in scored.iter().enumerate() {
        let r = score_corpus(files, windows, &profiles[sel]).map_err(err)?;
        if r.normalized > full_best.1 + 1e-9 {
            full_best = (ci, r.normalized);
        }
    }
    Ok(CvReport {
        profiles: profiles.iter().map(|p| p.name.clone()).collect(),
        candidates: candidates.to_vec(),
        folds,
        held_out,
        strict,
        full_default,
        full_best,
    })
}

/// The printed report of `eval nab cv`.
pub fn format_report(r: &CvReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "leave-one-category-out cross-validation: {} candidates, {} folds",
        r.candidates.len(),
        r.folds.len()
    );
    for (i, c) in r.candidates.iter().enumerate() {
        let _ = writeln!(s, "  candidate {i}: {}", c.label);
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<24} {:>5} {:>4} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>4} {:>4} {:>5}  chosen",
        "held-out category",
        "files",
        "win",
        "train std",
        "threshold",
        "standard",
        "low_FP",
        "low_FN",
        "strict",
        "tp",
        "fn",
        "fp"
    );
    for f in &r.folds {
        let _ = write!(
            s,
            "{:<24} {:>5} {:>4} {:>9.2} {:>9.4} |",
            f.category,
            f.files,
            f.windows,
            f.train_standard,
            f.strict.first().map_or(f64::NAN, |x| x.threshold)
        );
        for h in &f.held_out {
            if h.perfect_score > h.null_score {
                let _ = write!(s, " {:>9.2}", h.normalized);
            } else {
                let _ = write!(s, " {:>9}", format!("raw {:.2}", h.best.score));
            }
        }
        let st = f.strict.first();
        let strict_text = st.map_or(String::new(), |x| {
            if x.perfect > x.null {
                format!("{:.2}", normalized_score(x.raw, x.null, x.perfect))
            } else {
                format!("raw {:.2}", x.raw)
            }
        });
        let _ = writeln!(
            s,
            " | {:>9} {:>4} {:>4} {:>5}  {}",
            strict_text,
            st.map_or(0, |x| x.tp),
            st.map_or(0, |x| x.fn_),
            st.map_or(0, |x| x.fp),
            r.candidates[f.chosen].label
        );
    }
    let _ = writeln!(
        s,
        "\n(per category: standard/low_FP/low_FN with the threshold optimised on that category alone; \
         strict, tp, fn, fp: standard profile at the threshold chosen on the other categories; \
         a category without windows shows its raw score)\n"
    );
    let _ = writeln!(
        s,
        "{:<58} {:>9} {:>9} {:>9}",
        "aggregate (normalised NAB score)", "standard", "low_FP", "low_FN"
    );
    let row = |s: &mut String, name: &str, v: Vec<f64>| {
        let _ = write!(s, "{name:<58}");
        for x in v {
            let _ = write!(s, " {x:>9.2}");
        }
        let _ = writeln!(s);
    };
    row(
        &mut s,
        "LOCO held-out parameters, NAB threshold (as `nab score`)",
        r.held_out.iter().map(|h| h.normalized).collect(),
    );
    row(
        &mut s,
        "LOCO held-out parameters and threshold (strict)",
        r.strict.clone(),
    );
    row(
        &mut s,
        "full subset, default parameters (as `nab run`)",
        r.full_default.iter().map(|h| h.normalized).collect(),
    );
    let _ = writeln!(
        s,
        "full subset, best candidate on all labels (reference only): {:.2} standard ({})",
        r.full_best.1, r.candidates[r.full_best.0].label
    );
    s
}

/// Parse a grid axis `name=v1,v2,...`.
pub fn parse_axis(text: &str) -> Result<GridAxis, String> {
    let (name, vals) = text
        .split_once('=')
        .ok_or_else(|| format!("expected name=v1,v2,..., got {text:?}"))?;
    let values = vals
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("{}: {v:?} is not a number", name.trim()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GridAxis {
        name: name.trim().to_string(),
        values,
    })
}

/// The built-in grid of `eval nab cv`: few parameters, few values, default first.
pub fn default_grid() -> Vec<GridAxis> {
    vec![
        GridAxis {
            name: "refractory_decay".to_string(),
            values: vec![0.995, 0.99, 0.998],
        },
        GridAxis {
            name: "shift_weight".to_string(),
            values: vec![0.75, 0.5, 1.0],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_axes_and_grid() {
        assert_eq!(category_of("realTraffic/speed_6005.csv"), "realTraffic");
        assert_eq!(category_of("loose.csv"), "loose.csv");
        let a = parse_axis("shift_weight = 0.75, 0.5").expect("axis");
        assert_eq!(a.values, [0.75, 0.5]);
        assert!(parse_axis("shift_weight").is_err());
        assert!(parse_axis("shift_weight=x").is_err());
        let b = parse_axis("refractory_decay=0.995,0.99,0.998").expect("axis");
        let g = expand_grid(DetectorConfig::default(), &[a, b]).expect("grid");
        assert_eq!(g.len(), 6);
        assert_eq!(g[0].label, "shift_weight=0.75,refractory_decay=0.995");
        assert_eq!(g[5].cfg.shift_weight, 0.5);
        assert_eq!(g[5].cfg.refractory_decay, 0.998);
        let bad = parse_axis("no_such=1").expect("axis");
        assert!(expand_grid(DetectorConfig::default(), &[bad]).is_err());
        let invalid = parse_axis("refractory_decay=1.5").expect("axis");
        assert!(expand_grid(DetectorConfig::default(), &[invalid]).is_err());
        assert_eq!(
            expand_grid(DetectorConfig::default(), &[]).expect("base")[0].label,
            "default"
        );
    }

    #[test]
    fn needs_two_categories() {
        let s = Series {
            key: "only/a.csv".to_string(),
            timestamps: vec![0, 1],
            values: vec![1.0, 2.0],
        };
        let cands = expand_grid(DetectorConfig::default(), &[]).expect("base");
        let profiles = crate::nab::parse_profiles(
            r#"{"standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11}}}"#,
        )
        .expect("profiles");
        let err = run_cv(&[s], &BTreeMap::new(), &profiles, &cands, |_| {}).unwrap_err();
        assert!(err.contains("2 categories"), "{err}");
    }
}
