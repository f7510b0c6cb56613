//! Corpus-level NAB scoring: sweep every file, optimise one threshold per profile
//! over the whole corpus, score each file at that threshold and normalise the total
//! between the null detector (never fires) and the perfect detector (fires exactly
//! at each window start).

use std::collections::BTreeMap;

use crate::nab::error::NabError;
use crate::nab::labels::{Profile, Window};
use crate::nab::scorer::{
    normalized_score, optimize_threshold, score_at_threshold, sweep_file, SweepPoint,
    ThresholdScore,
};

/// NAB's probationary fraction.
pub const PROBATION_PERCENT: f64 = 0.15;

/// One file's detector output.
#[derive(Debug, Clone, PartialEq)]
pub struct FileScores {
    /// Key in windows.json, e.g. `realTraffic/speed_6005.csv`.
    pub key: String,
    /// Row timestamps (ms).
    pub timestamps: Vec<i64>,
    /// Row anomaly scores.
    pub scores: Vec<f64>,
}

/// Result of scoring a corpus under one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileResult {
    /// Profile used.
    pub profile: Profile,
    /// Corpus-optimal threshold and the raw corpus score it gives.
    pub best: ThresholdScore,
    /// Raw score of the null detector.
    pub null_score: f64,
    /// Raw score of the perfect detector.
    pub perfect_score: f64,
    /// Normalised score (null = 0, perfect = 100).
    pub normalized: f64,
    /// Per-file scores at the corpus threshold, in input order.
    pub per_file: Vec<(String, ThresholdScore)>,
}

fn sweep_all(
    files: &[FileScores],
    windows: &BTreeMap<String, Vec<Window>>,
    profile: &Profile,
    scores_of: impl Fn(&FileScores, &[Window]) -> Vec<f64>,
) -> Result<(Vec<SweepPoint>, Vec<std::ops::Range<usize>>), NabError> {
    let mut all = Vec::new();
    let mut ranges = Vec::new();
    let mut next_id = 0usize;
    for f in files {
        let w = windows.get(&f.key).map(Vec::as_slice).unwrap_or(&[]);
        let scores = scores_of(f, w);
        let pts = sweep_file(
            &f.key,
            &f.timestamps,
            &scores,
            w,
            &profile.costs,
            PROBATION_PERCENT,
            next_id,
        )?;
        next_id += w.len();
        let start = all.len();
        all.extend(pts);
        ranges.push(start..all.len());
    }
    Ok((all, ranges))
}

/// Score the detector output of a corpus under one profile, NAB style.
pub fn score_corpus(
    files: &[FileScores],
    windows: &BTreeMap<String, Vec<Window>>,
    profile: &Profile,
) -> Result<ProfileResult, NabError> {
    let (points, ranges) = sweep_all(files, windows, profile, |f, _| f.scores.clone())?;
    let best = optimize_threshold(&points, &profile.costs);
    let per_file = files
        .iter()
        .zip(&ranges)
        .map(|(f, r)| {
            (
                f.key.clone(),
                score_at_threshold(&points[r.clone()], &profile.costs, best.threshold),
            )
        })
        .collect();
    let (null_pts, _) = sweep_all(files, windows, profile, |f, _| {
        vec![0.0; f.timestamps.len()]
    })?;
    let null_score = optimize_threshold(&null_pts, &profile.costs).score;
    let (perfect_pts, _) = sweep_all(files, windows, profile, |f, w| {
        let mut s = vec![0.0; f.timestamps.len()];
        for &(start, _) in w {
            if let Some(i) = f.timestamps.iter().position(|&t| t == start) {
                s[i] = 1.0;
            }
        }
        s
    })?;
    let perfect_score = optimize_threshold(&perfect_pts, &profile.costs).score;
    Ok(ProfileResult {
        profile: profile.clone(),
        best,
        null_score,
        perfect_score,
        normalized: normalized_score(best.score, null_score, perfect_score),
        per_file,
    })
}
