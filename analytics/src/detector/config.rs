//! [`DetectorConfig`]: the parameters of [`super::StreamingDetector`], their defaults
//! (the general-purpose set used by `eval nab detect`), range checks, and setting a
//! parameter by name (for `eval nab run --set` experiments).
//!
//! Rates are per point (per finite update), not per unit of time; the rate actually
//! used is never below `1/n` (a plain running mean while fewer than `1/rate` points
//! have been seen), so every estimate is usable from the first points on.

use crate::error::ConfigError;

/// Detector parameters. [`DetectorConfig::default`] is the general-purpose set used
/// by `eval nab detect`; the values are round numbers, not fitted per series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Points seen before any non-zero score is reported. The first half only trains
    /// the models; during the second half the evidence is computed and feeds the
    /// refractory memory, so the first reported point is not an alarm just because
    /// the memory was empty.
    pub warmup: u32,
    /// EWMA rate of the level predictor (0.1: the level follows the last ~10 points).
    pub level_alpha: f64,
    /// EWMA rate of the error scales (mean absolute prediction errors).
    pub scale_alpha: f64,
    /// EWMA rate of the slow level (the baseline of the seasonal profile, of the value
    /// buckets of the context and of the mean-shift stage; 0.002: ~500 points).
    pub slow_alpha: f64,
    /// EWMA rate of each seasonal bucket (per visit of that bucket).
    pub season_alpha: f64,
    /// Seasonal period in milliseconds of event time (0 disables the seasonal model).
    pub season_period_ms: i64,
    /// Visits of a bucket before the seasonal predictor is trusted there.
    pub season_min_cycles: u32,
    /// EWMA rate of the long-run distribution of the short-window mean surprise
    /// (anomaly-likelihood stage).
    pub long_alpha: f64,
    /// Errors are clipped at this many scale units when updating the scales, so that
    /// outliers do not inflate them.
    pub clip: f64,
    /// Per-point decay of the refractory peak memory (0 disables suppression; 0.995
    /// halves the memory in ~140 points).
    pub refractory_decay: f64,
    /// Relative floor of the scales (fraction of |slow level|), for flat series.
    pub rel_scale_floor: f64,
    /// Weight of the point evidence (0 disables it).
    pub point_weight: f64,
    /// Weight of the anomaly-likelihood evidence (0 disables it).
    pub likelihood_weight: f64,
    /// Factor applied to the point and mean-shift evidence when the point's context
    /// was seen before (1 disables the context stage).
    pub novelty_damp: f64,
    /// Buckets per doubling of the deviation in the context key.
    pub ctx_res: f64,
    /// Points per generation of the context table (0: never forget).
    pub ctx_generation: u32,
    /// Time-of-day slots of the context (0: the previous value bucket is the context).
    pub ctx_tod: u32,
    /// Weight of the mean-shift evidence (0 disables it). Below 1 because the
    /// Gaussian tail of a 10-point mean is more optimistic than the Laplace tail of a
    /// single point: a shift has to be somewhat clearer to score like a spike.
    pub shift_weight: f64,
    /// EWMA rate of the long-run mean and variance of the short-window mean of the
    /// deviations from the slow level (mean-shift stage; 0.001: ~1000 points).
    pub shift_alpha: f64,
    /// Score of a spatial anomaly, a value outside the range seen so far by more than
    /// `spatial_tolerance` of that range (0 disables the stage). It is reported as is,
    /// not reduced by the refractory memory, as in Numenta's NAB detector.
    pub spatial_score: f64,
    /// Margin of the spatial stage, as a fraction of the seen range (Numenta's 5 %).
    pub spatial_tolerance: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            warmup: 200,
            level_alpha: 0.1,
            scale_alpha: 0.01,
            slow_alpha: 0.002,
            season_alpha: 0.1,
            season_period_ms: 86_400_000,
            season_min_cycles: 2,
            long_alpha: 0.001,
            clip: 6.0,
            refractory_decay: 0.995,
            rel_scale_floor: 1e-3,
            point_weight: 1.0,
            likelihood_weight: 1.0,
            novelty_damp: 0.2,
            ctx_res: 2.0,
            ctx_generation: 1000,
            ctx_tod: 0,
            shift_weight: 0.75,
            shift_alpha: 0.001,
            spatial_score: 1.0,
            spatial_tolerance: 0.05,
        }
    }
}

impl DetectorConfig {
    /// Set a parameter by its field name (for experiments, e.g. `eval nab run --set`);
    /// integer fields are truncated. Returns `false` if there is no such parameter.
    /// Call [`DetectorConfig::validate`] afterwards.
    pub fn set(&mut self, name: &str, x: f64) -> bool {
        match name {
            "warmup" => self.warmup = x as u32,
            "level_alpha" => self.level_alpha = x,
            "scale_alpha" => self.scale_alpha = x,
            "slow_alpha" => self.slow_alpha = x,
            "season_alpha" => self.season_alpha = x,
            "season_period_ms" => self.season_period_ms = x as i64,
            "season_min_cycles" => self.season_min_cycles = x as u32,
            "long_alpha" => self.long_alpha = x,
            "clip" => self.clip = x,
            "refractory_decay" => self.refractory_decay = x,
            "rel_scale_floor" => self.rel_scale_floor = x,
            "point_weight" => self.point_weight = x,
            "likelihood_weight" => self.likelihood_weight = x,
            "novelty_damp" => self.novelty_damp = x,
            "ctx_res" => self.ctx_res = x,
            "ctx_generation" => self.ctx_generation = x as u32,
            "ctx_tod" => self.ctx_tod = x as u32,
            "shift_weight" => self.shift_weight = x,
            "shift_alpha" => self.shift_alpha = x,
            "spatial_score" => self.spatial_score = x,
            "spatial_tolerance" => self.spatial_tolerance = x,
            _ => return false,
        }
        true
    }

    /// Check that all parameters are in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rate = |name: &'static str, v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    name,
                    value: v,
                    reason: "must be in (0, 1]",
                })
            }
        };
        rate("level_alpha", self.level_alpha)?;
        rate("scale_alpha", self.scale_alpha)?;
        rate("slow_alpha", self.slow_alpha)?;
        rate("season_alpha", self.season_alpha)?;
        rate("long_alpha", self.long_alpha)?;
        rate("shift_alpha", self.shift_alpha)?;
        let nonneg = |name: &'static str, v: f64| {
            if v >= 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    name,
                    value: v,
                    reason: "must be finite and >= 0",
                })
            }
        };
        nonneg("rel_scale_floor", self.rel_scale_floor)?;
        nonneg("point_weight", self.point_weight)?;
        nonneg("likelihood_weight", self.likelihood_weight)?;
        nonneg("shift_weight", self.shift_weight)?;
        nonneg("spatial_tolerance", self.spatial_tolerance)?;
        let unit = |name: &'static str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    name,
                    value: v,
                    reason: "must be in [0, 1]",
                })
            }
        };
        unit("novelty_damp", self.novelty_damp)?;
        unit("spatial_score", self.spatial_score)?;
        if !(self.ctx_res > 0.0 && self.ctx_res <= 8.0) {
            return Err(ConfigError::OutOfRange {
                name: "ctx_res",
                value: self.ctx_res,
                reason: "must be in (0, 8]",
            });
        }
        if !(self.clip > 0.0 && self.clip.is_finite()) {
            return Err(ConfigError::OutOfRange {
                name: "clip",
                value: self.clip,
                reason: "must be > 0",
            });
        }
        if !(0.0..1.0).contains(&self.refractory_decay) {
            return Err(ConfigError::OutOfRange {
                name: "refractory_decay",
                value: self.refractory_decay,
                reason: "must be in [0, 1)",
            });
        }
        if self.season_period_ms < 0 {
            return Err(ConfigError::OutOfRange {
                name: "season_period_ms",
                value: self.season_period_ms as f64,
                reason: "must be >= 0",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_set_round_trips() {
        let mut c = DetectorConfig::default();
        assert!(c.validate().is_ok());
        assert!(c.set("shift_weight", 0.5));
        assert!(c.set("warmup", 123.9));
        assert_eq!((c.shift_weight, c.warmup), (0.5, 123));
        assert!(!c.set("no_such_parameter", 1.0));
    }

    #[test]
    fn new_parameters_are_range_checked() {
        for (name, bad) in [
            ("shift_alpha", 0.0),
            ("shift_weight", -1.0),
            ("spatial_score", 1.5),
            ("spatial_tolerance", f64::NAN),
        ] {
            let mut c = DetectorConfig::default();
            assert!(c.set(name, bad));
            assert!(c.validate().is_err(), "{name} = {bad} accepted");
        }
    }
}
