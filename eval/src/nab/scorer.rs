//! NAB scoring, following numenta/NAB's `sweeper.py` (the "sweep" scorer of NAB 1.x):
//!
//! * each row gets a *sweep score*: inside a labelled window, the scaled sigmoid of its
//!   relative position (1·tpWeight at the window start, falling towards 0 at the end);
//!   outside, a false-positive cost of `fpWeight` times the scaled sigmoid of the distance
//!   past the previous window (full cost before the first window or 3 window-lengths after);
//! * rows in the probationary period (first `min(floor(15% n), 15% of 5000)` rows) are ignored;
//! * for a threshold `t`, every row with `anomaly_score >= t` is a detection; each window
//!   counts only its best (earliest) detection, or `-fnWeight` if it has none; every
//!   detection outside a window adds its (negative) sweep score;
//! * the threshold is optimised per profile over the whole corpus, and the total is
//!   normalised so that the null detector scores 0 and the perfect one 100.

use std::cmp::Ordering;

use crate::nab::error::NabError;

/// Weights of one NAB application profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostMatrix {
    /// Reward for detecting a window (at its very start).
    pub tp_weight: f64,
    /// Cost of a detection outside any window.
    pub fp_weight: f64,
    /// Cost of a window without detection.
    pub fn_weight: f64,
}

/// NAB's standard profile weights.
pub const STANDARD: CostMatrix = CostMatrix {
    tp_weight: 1.0,
    fp_weight: 0.11,
    fn_weight: 1.0,
};

/// Where a row falls for scoring purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointLabel {
    /// In the probationary period: never scored.
    Probation,
    /// Outside every window: a detection here is a false positive.
    Outside,
    /// Inside the window with this corpus-wide id.
    Window(usize),
}

/// One row with its detector score, its NAB sweep score and its label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepPoint {
    /// The detector's anomaly score for the row.
    pub anomaly_score: f64,
    /// The score this row contributes if it is a detection (weighted by the profile).
    pub sweep_score: f64,
    /// Probation / outside / window id.
    pub label: PointLabel,
}

/// The corpus (or file) score obtained with one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdScore {
    /// Rows with `anomaly_score >= threshold` are detections.
    pub threshold: f64,
    /// Raw (unnormalised) NAB score.
    pub score: f64,
    /// Windows with at least one detection.
    pub detected_windows: usize,
    /// Windows without detection.
    pub missed_windows: usize,
    /// Detections outside windows (after probation).
    pub false_positives: usize,
}

/// NAB's scaled sigmoid: `2·sigmoid(-5x) - 1`, and `-1` for `x >= 3`.
pub fn scaled_sigmoid(relative_position: f64) -> f64 {
    if relative_position >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * relative_position).exp()) - 1.0
    }
}

/// Number of probationary rows for a file of `n` rows.
pub fn probation_length(n: usize, probation_percent: f64) -> f64 {
    ((probation_percent * n as f64).floor()).min(probation_percent * 5000.0)
}

/// Compute NAB sweep scores for one file (NAB `Sweeper.calcSweepScore`).
///
/// `windows` are `(start, end)` timestamps that must be row timestamps (first
/// occurrence is used, as NAB does), sorted by start. Window ids are assigned as
/// `first_window_id + k`.
pub fn sweep_file(
    file: &str,
    timestamps: &[i64],
    scores: &[f64],
    windows: &[(i64, i64)],
    costs: &CostMatrix,
    probation_percent: f64,
    first_window_id: usize,
) -> Result<Vec<SweepPoint>, NabError> {
    if timestamps.len() != scores.len() {
        return Err(NabError::LengthMismatch {
            file: file.to_string(),
            timestamps: timestamps.len(),
            scores: scores.len(),
        });
    }
    let index_of = |t: i64| {
        timestamps
            .iter()
            .position(|&x| x == t)
            .ok_or_else(|| NabError::WindowNotInData {
                file: file.to_string(),
                timestamp: t.to_string(),
            })
    };
    // Resolve window indices up front (also validates them).
    let mut resolved = Vec::with_capacity(windows.len());
    for &(s, e) in windows {
        let (si, ei) = (index_of(s)?, index_of(e)?);
        resolved.push((s, e, si, ei));
    }
    let max_tp = scaled_sigmoid(-1.0);
    let prob_len = probation_length(timestamps.len(), probation_percent);
    let mut next = 0usize;
    let mut cur: Option<(usize, i64, usize, f64)> = None; // (id, end ts, right index, width)
    let mut prev: Option<(usize, f64)> = None; // (right index, width)
    let mut out = Vec::with_capacity(timestamps.len());
    for (i, (&ts, &score)) in timestamps.iter().zip(scores).enumerate() {
        if next < resolved.len() && ts == resolved[next].0 {
            let (_, e, si, ei) = resolved[next];
            let width = ei as f64 - si as f64 + 1.0;
            cur = Some((first_window_id + next, e, ei, width));
            next += 1;
        }
        let (sweep, label) = match cur {
            Some((id, _, right, width)) => {
                let pos = -((right as f64) - (i as f64) + 1.0) / width;
                (
                    scaled_sigmoid(pos) * costs.tp_weight / max_tp,
                    PointLabel::Window(id),
                )
            }
            None => {
                let pos = match prev {
                    Some((right, width)) if width > 1.0 => {
                        (right as f64 - i as f64).abs() / (width - 1.0)
                    }
                    _ => 3.0,
                };
                (scaled_sigmoid(pos) * costs.fp_weight, PointLabel::Outside)
            }
        };
        let label = if (i as f64) >= prob_len {
            label
        } else {
            PointLabel::Probation
        };
        out.push(SweepPoint {
            anomaly_score: score,
            sweep_score: sweep,
            label,
        });
        if let Some((_, end, right, width)) = cur {
            if ts == end {
                prev = Some((right, width));
                cur = None;
            }
        }
    }
    Ok(out)
}

fn window_slots(points: &[SweepPoint]) -> Vec<Option<f64>> {
    let n = points
        .iter()
        .filter_map(|p| match p.label {
            PointLabel::Window(id) => Some(id + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut slots = vec![None; n];
    for p in points {
        if let PointLabel::Window(id) = p.label {
            slots[id] = Some(f64::NEG_INFINITY);
        }
    }
    slots
}

/// Score of every distinct threshold, from "nothing detected" (threshold 1.1) down
/// to the lowest anomaly score (NAB `Sweeper.calcScoreByThreshold`).
pub fn scores_by_threshold(points: &[SweepPoint], costs: &CostMatrix) -> Vec<ThresholdScore> {
    let mut scorable: Vec<&SweepPoint> = points
        .iter()
        .filter(|p| p.label != PointLabel::Probation)
        .collect();
    scorable.sort_by(|a, b| {
        b.anomaly_score
            .partial_cmp(&a.anomaly_score)
            .unwrap_or(Ordering::Equal)
    });
    let mut best = window_slots(points);
    let n_windows = best.iter().filter(|s| s.is_some()).count();
    let mut total = -(n_windows as f64) * costs.fn_weight;
    let mut detected = 0usize;
    let mut fps = 0usize;
    let mut cur_threshold = 1.1;
    let mut out = Vec::new();
    for p in scorable {
        if p.anomaly_score != cur_threshold {
            out.push(ThresholdScore {
                threshold: cur_threshold,
                score: total,
                detected_windows: detected,
                missed_windows: n_windows - detected,
                false_positives: fps,
            });
            cur_threshold = p.anomaly_score;
        }
        match p.label {
            PointLabel::Window(id) => {
                let slot = &mut best[id];
                let old = slot.unwrap_or(f64::NEG_INFINITY);
                let old_part = if old == f64::NEG_INFINITY {
                    detected += 1;
                    -costs.fn_weight
                } else {
                    old
                };
                let new_part = old_part.max(p.sweep_score);
                total += new_part - old_part;
                *slot = Some(new_part);
            }
            _ => {
                fps += 1;
                total += p.sweep_score;
            }
        }
    }
    out.push(ThresholdScore {
        threshold: cur_threshold,
        score: total,
        detected_windows: detected,
        missed_windows: n_windows - detected,
        false_positives: fps,
    });
    out
}

/// The best threshold for a corpus (all files' sweep points together); ties go to
/// the higher threshold, as in NAB (stable sort by score).
pub fn optimize_threshold(points: &[SweepPoint], costs: &CostMatrix) -> ThresholdScore {
    let all = scores_by_threshold(points, costs);
    let mut best = all[0];
    for s in &all[1..] {
        if s.score > best.score {
            best = *s;
        }
    }
    best
}

/// Score of a set of sweep points (one file or a corpus) with a fixed threshold.
pub fn score_at_threshold(
    points: &[SweepPoint],
    costs: &CostMatrix,
    threshold: f64,
) -> ThresholdScore {
    let mut best = window_slots(points);
    let n_windows = best.iter().filter(|s| s.is_some()).count();
    let mut fp_total = 0.0;
    let mut fps = 0usize;
    for p in points.iter().filter(|p| p.anomaly_score >= threshold) {
        match p.label {
            PointLabel::Probation => {}
            PointLabel::Outside => {
                fps += 1;
                fp_total += p.sweep_score;
            }
            PointLabel::Window(id) => {
                let slot = &mut best[id];
                *slot = Some(slot.unwrap_or(f64::NEG_INFINITY).max(p.sweep_score));
            }
        }
    }
    let mut detected = 0usize;
    let mut window_total = 0.0;
    for s in best.into_iter().flatten() {
        if s == f64::NEG_INFINITY {
            window_total -= costs.fn_weight;
        } else {
            detected += 1;
            window_total += s.max(-costs.fn_weight);
        }
    }
    ThresholdScore {
        threshold,
        score: window_total + fp_total,
        detected_windows: detected,
        missed_windows: n_windows - detected,
        false_positives: fps,
    }
}

/// NAB normalisation: `100 · (raw - null) / (perfect - null)`.
pub fn normalized_score(raw: f64, null: f64, perfect: f64) -> f64 {
    if perfect > null {
        100.0 * (raw - null) / (perfect - null)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MIN: i64 = 300_000;

    /// 100 rows, window over rows 40..=49 (width 10), probation = 15 rows.
    fn setup(detections: &[(usize, f64)]) -> (Vec<i64>, Vec<f64>, Vec<(i64, i64)>) {
        let ts: Vec<i64> = (0..100).map(|i| i * FIVE_MIN).collect();
        let mut scores = vec![0.0; 100];
        for &(i, s) in detections {
            scores[i] = s;
        }
        let w = vec![(ts[40], ts[49])];
        (ts, scores, w)
    }

    fn sweep(d: &[(usize, f64)]) -> Vec<SweepPoint> {
        let (ts, sc, w) = setup(d);
        sweep_file("f", &ts, &sc, &w, &STANDARD, 0.15, 0).unwrap_or_default()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn sigmoid_anchor_values() {
        assert!(close(scaled_sigmoid(0.0), 0.0));
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298_151_430_2).abs() < 1e-12);
        assert!((scaled_sigmoid(-0.5) - 0.848_283_639_957_51).abs() < 1e-12);
        assert_eq!(scaled_sigmoid(3.0), -1.0);
    }

    #[test]
    fn detection_at_window_start_earns_full_tp() {
        let p = sweep(&[(40, 1.0)]);
        let s = score_at_threshold(&p, &STANDARD, 0.5);
        assert!(close(s.score, 1.0), "{s:?}");
        assert_eq!(
            (s.detected_windows, s.missed_windows, s.false_positives),
            (1, 0, 0)
        );
    }

    #[test]
    fn detection_at_window_end_earns_little() {
        // position -(49-49+1)/10 = -0.1 -> (2/(1+e^-0.5) - 1) / scaled_sigmoid(-1)
        let p = sweep(&[(49, 1.0)]);
        let want = (2.0 / (1.0 + (-0.5f64).exp()) - 1.0) / scaled_sigmoid(-1.0);
        assert!(close(score_at_threshold(&p, &STANDARD, 0.5).score, want));
        assert!(want > 0.24 && want < 0.26);
    }

    #[test]
    fn only_earliest_detection_in_window_counts() {
        let p = sweep(&[(40, 1.0), (45, 1.0), (49, 1.0)]);
        assert!(close(score_at_threshold(&p, &STANDARD, 0.5).score, 1.0));
    }

    #[test]
    fn false_positives_cost_fp_weight() {
        // Before any window: full fpWeight; plus the missed window.
        let p = sweep(&[(20, 1.0)]);
        assert!(close(
            score_at_threshold(&p, &STANDARD, 0.5).score,
            -1.0 - 0.11
        ));
        // Right after the window: scaled by the sigmoid of 1/9 window-lengths.
        let p = sweep(&[(40, 1.0), (50, 1.0)]);
        let want = 1.0 + 0.11 * (2.0 / (1.0 + (5.0f64 / 9.0).exp()) - 1.0);
        assert!(close(score_at_threshold(&p, &STANDARD, 0.5).score, want));
        // Three window-lengths (27 rows) after the end: full cost again.
        let p = sweep(&[(40, 1.0), (76, 1.0)]);
        assert!(close(
            score_at_threshold(&p, &STANDARD, 0.5).score,
            1.0 - 0.11
        ));
    }

    #[test]
    fn probation_detections_are_ignored() {
        let p = sweep(&[(5, 1.0), (14, 1.0)]);
        let s = score_at_threshold(&p, &STANDARD, 0.5);
        assert!(close(s.score, -1.0));
        assert_eq!(s.false_positives, 0);
        // Row 15 is the first scored row.
        let p = sweep(&[(15, 1.0)]);
        assert!(close(score_at_threshold(&p, &STANDARD, 0.5).score, -1.11));
    }

    #[test]
    fn null_and_perfect_normalise_to_0_and_100() {
        let null = optimize_threshold(&sweep(&[]), &STANDARD);
        assert!(close(null.score, -1.0));
        assert_eq!(null.threshold, 1.1);
        let perfect = optimize_threshold(&sweep(&[(40, 1.0)]), &STANDARD);
        assert!(close(perfect.score, 1.0));
        assert!(close(normalized_score(null.score, -1.0, 1.0), 0.0));
        assert!(close(normalized_score(perfect.score, -1.0, 1.0), 100.0));
    }

    #[test]
    fn threshold_optimisation_picks_best_cut() {
        // FP at 0.95 outside, TP at 0.9 at the window start, noise at 0.1 everywhere else.
        let mut d: Vec<(usize, f64)> = (0..100).map(|i| (i, 0.1)).collect();
        d[20] = (20, 0.95);
        d[40] = (40, 0.9);
        let p = sweep(&d);
        let all = scores_by_threshold(&p, &STANDARD);
        assert_eq!(all.len(), 4); // 1.1, 0.95, 0.9, 0.1
        assert!(close(all[1].score, -1.11));
        let best = optimize_threshold(&p, &STANDARD);
        assert_eq!(best.threshold, 0.9);
        assert!(close(best.score, 0.89));
        assert!(close(
            score_at_threshold(&p, &STANDARD, best.threshold).score,
            0.89
        ));
        // Normalised: (0.89 + 1) / 2 * 100.
        assert!(close(normalized_score(best.score, -1.0, 1.0), 94.5));
        // With fpWeight 0.22 the same detections score 0.78.
        let low_fp = CostMatrix {
            fp_weight: 0.22,
            ..STANDARD
        };
        let p = {
            let (ts, mut sc, w) = setup(&[]);
            for &(i, s) in &d {
                sc[i] = s;
            }
            sweep_file("f", &ts, &sc, &w, &low_fp, 0.15, 0).unwrap_or_default()
        };
        assert!(close(optimize_threshold(&p, &low_fp).score, 0.78));
    }

    #[test]
    fn missing_window_boundary_is_an_error() {
        let (ts, sc, _) = setup(&[]);
        let r = sweep_file("f", &ts, &sc, &[(1, 2)], &STANDARD, 0.15, 0);
        assert!(matches!(r, Err(NabError::WindowNotInData { .. })));
        let r = sweep_file("f", &ts, &sc[..10], &[], &STANDARD, 0.15, 0);
        assert!(matches!(r, Err(NabError::LengthMismatch { .. })));
    }
}
