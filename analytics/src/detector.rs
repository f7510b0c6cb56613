//! Online, per-series anomaly detector ([`StreamingDetector`]).
//!
//! Each update is O(1) in time and the state is a fixed-size struct (well under
//! 1 KiB), so one detector can run per device metric. The score of a point uses only
//! that point and the points before it (no look-ahead) and event time only (no clock).
//!
//! Method:
//!
//! 1. **Prediction and robust scale.** Two predictors of each value: a level (EWMA)
//!    predictor and a daily-seasonal predictor (a slow level plus a time-of-day
//!    profile of [`SEASON_BUCKETS`] buckets indexed by event time). Each has an EWMA
//!    mean-absolute-error scale, updated with errors clipped at `clip` scales so that
//!    outliers do not inflate it. The standardised error `z` of a point is the smaller
//!    of the two (the model that explains the point better wins).
//! 2. **Point evidence.** Under a Laplace error model `P(|E| > z·b) = exp(-z)`, so the
//!    log tail probability is `-z`; it is mapped to `[0, 1]` NAB-style (`-ln p / -ln 1e-10`).
//!    **Contextual novelty** (after NAB's winning "contextOSE" detector): each point gets
//!    a signed value bucket, `±floor(ctx_res·log2(1 + |x - slow| / mad))` with `mad` the
//!    long-run mean absolute deviation from the slow level, and the context is the pair
//!    (previous bucket, current bucket). Seen contexts are bits of a hashed table of
//!    [`CTX_WORDS`]·64 bits with two generations of `ctx_generation` points each, so a
//!    context is remembered for 1-2 generations and then forgotten. If the context was
//!    seen, the point evidence is multiplied by `novelty_damp`: a recurrent spike (same
//!    jump from the same level) stops alarming, a jump never seen before keeps its score.
//! 3. **Anomaly likelihood** (after Numenta's NAB detectors): the mean of the last
//!    [`SHORT_WINDOW`] per-point surprise probabilities `1 - exp(-z)` is compared with the
//!    long-run (EWMA) mean and variance of that mean; its Gaussian upper-tail
//!    probability is the evidence that the recent regime differs from the learned one,
//!    which catches sustained shifts that no single point reveals.
//! 4. **Combination and refractory suppression.** The evidence is the larger of the
//!    two; the reported score is the evidence in excess of a decaying memory of the
//!    recent peak evidence, so one event gives one strong alarm rather than a burst.
//!
//! Non-finite values are ignored: the state is not touched and the score is 0.

use statrs::function::erf::erfc;

use crate::error::ConfigError;

/// Number of time-of-day buckets of the seasonal profile.
pub const SEASON_BUCKETS: usize = 48;
/// Length of the short window of the anomaly-likelihood stage.
pub const SHORT_WINDOW: usize = 10;
/// tmp max shift window
pub const SHIFT_MAX: usize = 32;

/// 64-bit words per generation of the context table.
pub const CTX_WORDS: usize = 16;

/// `-ln(1e-10)`: the log tail probability that maps to score 1.
const LN_TAIL_FLOOR: f64 = 23.025_850_929_940_457;

/// Detector parameters. [`DetectorConfig::default`] is the general-purpose set used
/// by `nab-detect`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Points seen before any non-zero score is reported.
    pub warmup: u32,
    /// EWMA rate of the level predictor.
    pub level_alpha: f64,
    /// EWMA rate of the error scales.
    pub scale_alpha: f64,
    /// EWMA rate of the slow level under the seasonal profile.
    pub slow_alpha: f64,
    /// EWMA rate of each seasonal bucket (per visit of that bucket).
    pub season_alpha: f64,
    /// Seasonal period in milliseconds of event time (0 disables the seasonal model).
    pub season_period_ms: i64,
    /// Visits of a bucket before the seasonal predictor is trusted there.
    pub season_min_cycles: u32,
    /// EWMA rate of the long-run distribution of the short-window mean.
    pub long_alpha: f64,
    /// Errors are clipped at this many scale units when updating the scales.
    pub clip: f64,
    /// Per-point decay of the refractory peak memory (0 disables suppression).
    pub refractory_decay: f64,
    /// Relative floor of the scales (fraction of |slow level|), for flat series.
    pub rel_scale_floor: f64,
    /// Weight of the point evidence (0 disables it).
    pub point_weight: f64,
    /// Weight of the anomaly-likelihood evidence (0 disables it).
    pub likelihood_weight: f64,
    /// Factor applied to the point evidence when its context was seen before (1 disables).
    pub novelty_damp: f64,
    /// Buckets per doubling of the deviation in the context key.
    pub ctx_res: f64,
    /// Points per generation of the context table (0: never forget).
    pub ctx_generation: u32,
    /// Time-of-day slots of the context (0: the previous value bucket is the context).
    pub ctx_tod: u32,
    /// Weight of the mean-shift evidence (0 disables it).
    pub shift_weight: f64,
    /// EWMA rate of the long-run distribution of the short-window value mean.
    pub shift_alpha: f64,
    /// tmp
    pub shift_mode: u32,
    /// tmp
    pub shift_clip: f64,
    /// tmp
    pub sep_peaks: u32,
    /// tmp
    pub shift_nov: u32,
    /// tmp
    pub shift_len: u32,
    /// tmp
    pub lik_input: u32,
    /// tmp
    pub prime: u32,
    /// tmp
    pub shift_trim: u32,
    /// tmp
    pub sp_bypass: u32,
    /// tmp
    pub sp_binary: u32,
    /// tmp
    pub msp_weight: f64,
    /// tmp
    pub msp_tol: f64,
    /// tmp
    pub load_k: f64,
    /// tmp
    pub load_alpha: f64,
    /// tmp
    pub shift_sat: u32,
    /// tmp
    pub sp_weight: f64,
    /// tmp
    pub sp_tol: f64,
    /// tmp
    pub sp_decay: f64,
    /// tmp
    pub bg_q: f64,
    /// tmp
    pub bg_eta: f64,
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
            shift_mode: 2,
            shift_clip: 0.0,
            sep_peaks: 0,
            shift_nov: 1,
            bg_q: 0.0,
            shift_len: 10,
            sp_weight: 1.0,
            lik_input: 0,
            prime: 100,
            shift_trim: 0,
            sp_bypass: 1,
            sp_binary: 1,
            msp_weight: 0.0,
            msp_tol: 0.1,
            load_k: 0.0,
            load_alpha: 0.001,
            shift_sat: 0,
            sp_tol: 0.05,
            sp_decay: 0.0,
            bg_eta: 0.01,
        }
    }
}

impl DetectorConfig {
    /// Set a parameter by its field name (for experiments, e.g. `nab-eval --set`);
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
            "shift_mode" => self.shift_mode = x as u32,
            "shift_clip" => self.shift_clip = x,
            "sep_peaks" => self.sep_peaks = x as u32,
            "shift_nov" => self.shift_nov = x as u32,
            "bg_q" => self.bg_q = x,
            "sp_weight" => self.sp_weight = x,
            "lik_input" => self.lik_input = x as u32,
            "prime" => self.prime = x as u32,
            "shift_trim" => self.shift_trim = x as u32,
            "sp_bypass" => self.sp_bypass = x as u32,
            "sp_binary" => self.sp_binary = x as u32,
            "msp_weight" => self.msp_weight = x,
            "msp_tol" => self.msp_tol = x,
            "load_k" => self.load_k = x,
            "load_alpha" => self.load_alpha = x,
            "shift_sat" => self.shift_sat = x as u32,
            "sp_tol" => self.sp_tol = x,
            "sp_decay" => self.sp_decay = x,
            "shift_len" => self.shift_len = (x as u32).clamp(1, SHIFT_MAX as u32),
            "bg_eta" => self.bg_eta = x,
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
        if !(0.0..=1.0).contains(&self.novelty_damp) {
            return Err(ConfigError::OutOfRange {
                name: "novelty_damp",
                value: self.novelty_damp,
                reason: "must be in [0, 1]",
            });
        }
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

/// Per-series streaming anomaly detector. See the module docs for the method.
#[derive(Debug, Clone)]
pub struct StreamingDetector {
    cfg: DetectorConfig,
    n: u64,
    level: f64,
    level_scale: f64,
    slow: f64,
    season_scale: f64,
    dev_scale: f64,
    prev_bucket: i32,
    ctx_age: u32,
    ctx: [[u64; CTX_WORDS]; 2],
    long_mean: f64,
    long_var: f64,
    ring_sum: f64,
    peak: f64,
    last_score: f64,
    season: [f32; SEASON_BUCKETS],
    season_seen: [u8; SEASON_BUCKETS],
    ring: [f32; SHORT_WINDOW],
    vring: [f32; SHIFT_MAX],
    vring_sum: f64,
    shift_mean: f64,
    shift_var: f64,
    sring: [f32; SHIFT_MAX],
    sring_sum: f64,
    sshift_mean: f64,
    sshift_var: f64,
    peaks: [f64; 3],
    bg: f64,
    hi: f64,
    lo: f64,
    load: f64,
    mhi: f64,
    mlo: f64,
}

/// Score in `[0, 1]` from `-ln p`, NAB style: `-ln(p) / -ln(1e-10)`.
fn tail_to_score(neg_ln_p: f64) -> f64 {
    (neg_ln_p / LN_TAIL_FLOOR).clamp(0.0, 1.0)
}

/// `-ln` of the upper Gaussian tail probability at `z`, stable for large `z`.
fn neg_ln_gauss_tail(z: f64) -> f64 {
    let q = 0.5 * erfc(z / std::f64::consts::SQRT_2);
    if q > 1e-300 {
        -q.ln()
    } else {
        // Asymptotic expansion: ln Q(z) ~ -z^2/2 - ln(z sqrt(2 pi)).
        0.5 * z * z + (z * (2.0 * std::f64::consts::PI).sqrt()).ln()
    }
}

impl StreamingDetector {
    /// Create a detector; fails if `cfg` is out of range.
    pub fn new(cfg: DetectorConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            n: 0,
            level: 0.0,
            level_scale: 0.0,
            slow: 0.0,
            season_scale: 0.0,
            dev_scale: 0.0,
            prev_bucket: 0,
            ctx_age: 0,
            ctx: [[0; CTX_WORDS]; 2],
            long_mean: 0.0,
            long_var: 0.0,
            ring_sum: 0.0,
            peak: 0.0,
            last_score: 0.0,
            season: [0.0; SEASON_BUCKETS],
            season_seen: [0; SEASON_BUCKETS],
            ring: [0.0; SHORT_WINDOW],
            vring: [0.0; SHIFT_MAX],
            vring_sum: 0.0,
            shift_mean: 0.0,
            shift_var: 0.0,
            sring: [0.0; SHIFT_MAX],
            sring_sum: 0.0,
            sshift_mean: 0.0,
            sshift_var: 0.0,
            peaks: [0.0; 3],
            bg: 0.0,
            hi: 0.0,
            lo: 0.0,
            load: 0.0,
            mhi: 0.0,
            mlo: 0.0,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Number of finite values consumed.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The score returned by the last finite update.
    pub fn last_score(&self) -> f64 {
        self.last_score
    }

    /// Bytes of state per series (`size_of::<StreamingDetector>()`, config included).
    pub const fn state_size() -> usize {
        std::mem::size_of::<Self>()
    }

    fn bucket(&self, ts_ms: i64) -> Option<usize> {
        let p = self.cfg.season_period_ms;
        if p <= 0 {
            return None;
        }
        let phase = i128::from(ts_ms.rem_euclid(p));
        Some(((phase * SEASON_BUCKETS as i128) / i128::from(p)) as usize % SEASON_BUCKETS)
    }

    /// Feed one observation (event time in ms, value) and get its anomaly score in
    /// `[0, 1]`. Non-finite values return 0 and leave the state unchanged.
    pub fn update(&mut self, ts_ms: i64, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let c = self.cfg;
        let bucket = self.bucket(ts_ms);
        if self.n == 0 {
            self.n = 1;
            self.level = value;
            self.slow = value;
            self.last_score = 0.0;
            return 0.0;
        }
        self.n += 1;
        let output = self.n > u64::from(c.warmup);
        let scoring = self.n > u64::from(c.prime);
        let inv_n_now = 1.0 / self.n as f64;
        let floor = (c.rel_scale_floor * self.slow.abs()).max(1e-9);

        // 1. Predictions and standardised error (the better model wins).
        let e_level = value - self.level;
        let mut z = e_level.abs() / self.level_scale.max(floor);
        let mut season_err = None;
        if let Some(b) = bucket {
            let e = value - (self.slow + f64::from(self.season[b]));
            let ready = u32::from(self.season_seen[b]) >= c.season_min_cycles;
            if ready && self.season_scale > 0.0 {
                z = z.min(e.abs() / self.season_scale.max(floor));
            }
            season_err = Some((b, e, ready));
        }

        // 2. Point evidence under a Laplace error model, damped when its context is not
        //    novel. The context is the value bucket (deviation from the slow level in units
        //    of its long-run mean absolute deviation, log scale, signed) together with the
        //    time-of-day slot (or the previous value bucket); seen contexts are kept as
        //    bits of a small hashed table with two generations, so old ones are forgotten.
        let mut novelty = 1.0;
        if c.novelty_damp < 1.0 {
            let d = value - self.slow;
            let u = d.abs() / self.dev_scale.max(floor);
            let mag = ((1.0 + u).log2() * c.ctx_res).floor().min(15.0) as i32;
            let b = if d < 0.0 { -mag } else { mag };
            let ctx_a = if c.ctx_tod > 0 && c.season_period_ms > 0 {
                let p = c.season_period_ms;
                (i128::from(ts_ms.rem_euclid(p)) * i128::from(c.ctx_tod) / i128::from(p)) as i32
                    + 1000
            } else {
                self.prev_bucket + 32
            };
            let key = (ctx_a * 64 + (b + 32)) as u64;
            let h = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize; // 10 bits
            let (w, bit) = (h / 64 % CTX_WORDS, 1u64 << (h % 64));
            let seen = (self.ctx[0][w] | self.ctx[1][w]) & bit != 0;
            if seen {
                novelty = c.novelty_damp;
            }
            self.ctx[0][w] |= bit;
            self.prev_bucket = b;
            self.ctx_age += 1;
            if c.ctx_generation > 0 && self.ctx_age >= c.ctx_generation {
                self.ctx[1] = self.ctx[0];
                self.ctx[0] = [0; CTX_WORDS];
                self.ctx_age = 0;
            }
            let da = c.slow_alpha.max(inv_n_now);
            self.dev_scale += da * (d.abs() - self.dev_scale);
        }
        let point = if scoring {
            novelty * tail_to_score(z)
        } else {
            0.0
        };

        // 3. Anomaly likelihood of the short window under the long-run distribution.
        let surprise = match c.lik_input {
            0 => (1.0 - (-z).exp()) as f32,
            1 => (z.min(6.0) / 6.0) as f32,
            2 => (1.0 - (-z * novelty).exp()) as f32,
            _ => (1.0 - (-0.5 * z).exp()) as f32,
        };
        let slot = (self.n % SHORT_WINDOW as u64) as usize;
        self.ring_sum += f64::from(surprise) - f64::from(self.ring[slot]);
        self.ring[slot] = surprise;
        let short = self.ring_sum / SHORT_WINDOW as f64;
        let likelihood = if scoring {
            let sd = self.long_var.max(1e-6).sqrt();
            tail_to_score(neg_ln_gauss_tail((short - self.long_mean) / sd))
        } else {
            0.0
        };

        // 3b. Mean shift: the short-window mean of the residuals against its long-run
        //     distribution (two-sided Gaussian tail), for the slow-level baseline and
        //     for the seasonal baseline; the better-explaining baseline wins.
        let clip_at = |e: f64, b: f64| {
            if c.shift_clip > 0.0 && b > 0.0 {
                e.clamp(-c.shift_clip * b, c.shift_clip * b)
            } else {
                e
            }
        };
        let dv = clip_at(value - self.slow, self.dev_scale.max(floor));
        let ds = match season_err {
            Some((_, e, true)) => clip_at(e, self.season_scale.max(floor)),
            _ => dv,
        };
        let sl = c.shift_len as u64;
        let vslot = (self.n % sl) as usize;
        let (dv, ds) = (dv as f32, ds as f32);
        self.vring_sum += f64::from(dv) - f64::from(self.vring[vslot]);
        self.vring[vslot] = dv;
        self.sring_sum += f64::from(ds) - f64::from(self.sring[vslot]);
        self.sring[vslot] = ds;
        let trimmed = |ring: &[f32], sum: f64| {
            if c.shift_trim == 0 || ring.len() < 4 {
                return sum / ring.len() as f64;
            }
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for &x in ring {
                lo = lo.min(x);
                hi = hi.max(x);
            }
            (sum - f64::from(lo) - f64::from(hi)) / (ring.len() - 2) as f64
        };
        let vshort = trimmed(&self.vring[..sl as usize], self.vring_sum);
        let sshort = trimmed(&self.sring[..sl as usize], self.sring_sum);
        let shift = if scoring && self.n > sl {
            let f2 = floor * floor;
            let z1 = (vshort - self.shift_mean).abs() / self.shift_var.max(f2).sqrt();
            let z2 = (sshort - self.sshift_mean).abs() / self.sshift_var.max(f2).sqrt();
            let zz = match c.shift_mode {
                0 => z1,
                1 => z2,
                2 => z1.min(z2),
                _ => {
                    if self.sshift_var < self.shift_var {
                        z2
                    } else {
                        z1
                    }
                }
            };
            if c.shift_sat > 0 {
                tail_to_score(c.shift_weight * neg_ln_gauss_tail(zz)) / c.shift_weight
            } else {
                tail_to_score(neg_ln_gauss_tail(zz))
            }
        } else {
            0.0
        };
        if self.n > sl {
            let la = c.shift_alpha.max(1.0 / (self.n - sl) as f64);
            let d = vshort - self.shift_mean;
            self.shift_mean += la * d;
            self.shift_var = (1.0 - la) * (self.shift_var + la * d * d);
            let d = sshort - self.sshift_mean;
            self.sshift_mean += la * d;
            self.sshift_var = (1.0 - la) * (self.sshift_var + la * d * d);
        }

        // 3d. Level novelty: the short-window mean beyond the range of short-window means.
        let mspatial = if self.n > sl + 1 {
            let m = vshort + self.slow;
            let range = (self.mhi - self.mlo).max(floor);
            let out = (m - self.mhi).max(self.mlo - m) / range;
            let r = if scoring && out > c.msp_tol {
                ((out - c.msp_tol) / c.msp_tol).min(1.0)
            } else {
                0.0
            };
            self.mhi = self.mhi.max(m);
            self.mlo = self.mlo.min(m);
            r
        } else {
            self.mhi = vshort + self.slow;
            self.mlo = vshort + self.slow;
            0.0
        };

        // 3c. Spatial novelty: a value beyond the range seen so far.
        let spatial = if self.n > 2 {
            let range = (self.hi - self.lo).max(floor);
            let out = (value - self.hi).max(self.lo - value) / range;
            if scoring && out > c.sp_tol {
                if c.sp_binary > 0 { 1.0 } else { ((out - c.sp_tol) / c.sp_tol).min(1.0) }
            } else {
                0.0
            }
        } else {
            self.hi = value.max(self.level);
            self.lo = value.min(self.level);
            0.0
        };
        self.hi = self.hi.max(value);
        self.lo = self.lo.min(value);
        if c.sp_decay > 0.0 {
            self.hi -= c.sp_decay * (self.hi - self.slow);
            self.lo -= c.sp_decay * (self.lo - self.slow);
        }

        // Model updates, after this point's evidence has been computed.
        let inv_n = 1.0 / self.n as f64;
        let la = c.long_alpha.max(inv_n);
        let d = short - self.long_mean;
        self.long_mean += la * d;
        self.long_var = (1.0 - la) * (self.long_var + la * d * d);
        let sa = c.scale_alpha.max(inv_n);
        let clip = |e: f64, b: f64| {
            if b > 0.0 {
                e.abs().min(c.clip * b)
            } else {
                e.abs()
            }
        };
        self.level_scale += sa * (clip(e_level, self.level_scale) - self.level_scale);
        self.level += c.level_alpha * e_level;
        if let Some((b, e, ready)) = season_err {
            if ready {
                self.season_scale += sa * (clip(e, self.season_scale) - self.season_scale);
            }
            let seen = self.season_seen[b];
            let ba = c.season_alpha.max(1.0 / (f64::from(seen) + 1.0));
            let dev = value - self.slow;
            self.season[b] += (ba * (dev - f64::from(self.season[b]))) as f32;
            self.season_seen[b] = seen.saturating_add(1);
            self.slow += c.slow_alpha.max(inv_n) * (value - self.slow);
        }

        // 4. Combine, then keep only the excess over the decaying recent peak.
        let evidence = (c.point_weight * point)
            .max(c.likelihood_weight * likelihood)
            .max(c.sp_weight * spatial)
            .max(c.msp_weight * mspatial)
            .max(c.shift_weight * shift * if c.shift_nov > 0 { novelty } else { 1.0 })
            .clamp(0.0, 1.0);
        let score = if c.sep_peaks > 0 {
            let ev = [c.point_weight * point, c.likelihood_weight * likelihood, c.shift_weight * shift];
            let mut best = 0.0f64;
            for k in 0..3 {
                let prev = self.peaks[k] * c.refractory_decay;
                self.peaks[k] = prev.max(ev[k]);
                best = best.max(ev[k] - prev);
            }
            best.clamp(0.0, 1.0)
        } else if c.refractory_decay > 0.0 {
            let mut prev_peak = self.peak * c.refractory_decay;
            if c.bg_q > 0.0 && scoring {
                prev_peak = prev_peak.max(self.bg);
                if evidence > self.bg {
                    self.bg += c.bg_eta * c.bg_q;
                } else {
                    self.bg -= c.bg_eta * (1.0 - c.bg_q);
                }
                self.bg = self.bg.max(0.0);
            }
            self.peak = prev_peak.max(evidence);
            (evidence - prev_peak).max(0.0)
        } else {
            evidence
        };
        let score = if c.load_k > 0.0 {
            let damped = score / (1.0 + c.load_k * self.load);
            if scoring {
                self.load = self.load * (1.0 - c.load_alpha) + score;
            }
            damped
        } else {
            score
        };
        let score = if c.sp_bypass > 0 { score.max(c.sp_weight * spatial) } else { score };
        let score = if output { score } else { 0.0 };
        self.last_score = score;
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 300_000;

    /// Deterministic pseudo-random noise in [-0.5, 0.5).
    fn noise(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    fn noisy_series(n: usize) -> Vec<(i64, f64)> {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|i| {
                let v =
                    50.0 + 10.0 * (i as f64 * std::f64::consts::TAU / 288.0).sin() + noise(&mut s);
                (i as i64 * STEP, v)
            })
            .collect()
    }

    fn run(points: &[(i64, f64)]) -> Vec<f64> {
        let mut d =
            StreamingDetector::new(DetectorConfig::default()).expect("default config is valid");
        points.iter().map(|&(t, v)| d.update(t, v)).collect()
    }

    #[test]
    fn state_is_small() {
        assert!(
            StreamingDetector::state_size() < 1024,
            "{}",
            StreamingDetector::state_size()
        );
    }

    #[test]
    fn bad_config_is_rejected() {
        let cfg = DetectorConfig {
            level_alpha: 0.0,
            ..DetectorConfig::default()
        };
        assert!(StreamingDetector::new(cfg).is_err());
        let cfg = DetectorConfig {
            refractory_decay: 1.0,
            ..DetectorConfig::default()
        };
        assert!(StreamingDetector::new(cfg).is_err());
        let cfg = DetectorConfig {
            novelty_damp: 1.5,
            ..DetectorConfig::default()
        };
        assert!(StreamingDetector::new(cfg).is_err());
        let cfg = DetectorConfig {
            clip: f64::NAN,
            ..DetectorConfig::default()
        };
        assert!(StreamingDetector::new(cfg).is_err());
    }

    #[test]
    fn flat_series_scores_low() {
        let pts: Vec<(i64, f64)> = (0..2000).map(|i| (i * STEP, 42.0)).collect();
        let s = run(&pts);
        // The likelihood stage reports its median (p = 0.5 -> 0.03) once; afterwards only
        // the refractory leak (1 - decay) of that constant evidence remains.
        assert!(
            s.iter().all(|&x| x < 0.05),
            "{:?}",
            s.iter().cloned().fold(0.0, f64::max)
        );
        assert!(s[400..].iter().all(|&x| x < 1e-3));
    }

    #[test]
    fn scores_in_unit_interval_and_noise_is_low() {
        let pts = noisy_series(3000);
        let s = run(&pts);
        assert!(s.iter().all(|&x| (0.0..=1.0).contains(&x)));
        let late_max = s[1000..].iter().cloned().fold(0.0, f64::max);
        assert!(late_max < 0.3, "noise max {late_max}");
    }

    #[test]
    fn big_spike_scores_high() {
        let mut pts = noisy_series(3000);
        pts[2500].1 += 40.0;
        let s = run(&pts);
        let before = s[1000..2500].iter().cloned().fold(0.0, f64::max);
        assert!(s[2500] > 0.9, "spike score {}", s[2500]);
        assert!(
            s[2500] > 3.0 * before,
            "spike {} vs background {before}",
            s[2500]
        );
    }

    #[test]
    fn level_shift_is_detected_once() {
        let mut pts = noisy_series(3000);
        for p in &mut pts[2000..] {
            p.1 += 15.0;
        }
        let s = run(&pts);
        // The shifted values lie partly in the range the daily swing already visited, so
        // some points are damped as non-novel; the first novel transition still alarms
        // far above the corpus thresholds (~0.1).
        assert!(
            s[2000..2010].iter().cloned().fold(0.0, f64::max) > 0.3,
            "{:?}",
            &s[1995..2015]
        );
        // The refractory memory keeps the aftermath quiet.
        let after = s[2020..2100].iter().filter(|&&x| x > 0.5).count();
        assert!(after <= 2, "{after} repeated alarms");
    }

    #[test]
    fn recurring_daily_spike_loses_novelty() {
        // The same spike at the same time of day, every day: once its (time-of-day, value)
        // context has been seen, later repeats score lower than the first occurrence.
        let mut pts = noisy_series(288 * 6);
        let days: Vec<usize> = (2..6).map(|d| d * 288 + 100).collect();
        for &i in &days {
            pts[i].1 += 40.0;
        }
        let s = run(&pts);
        assert!(s[days[0]] > 0.9, "first spike {}", s[days[0]]);
        for &i in &days[1..] {
            assert!(s[i] < 0.5 * s[days[0]], "repeat at {i}: {}", s[i]);
        }
    }

    #[test]
    fn no_look_ahead() {
        let mut pts = noisy_series(1500);
        pts[900].1 += 30.0;
        let full = run(&pts);
        for cut in [1, 150, 899, 901, 1200] {
            let prefix = run(&pts[..cut]);
            assert_eq!(prefix, full[..cut].to_vec(), "prefix of {cut} differs");
        }
    }

    #[test]
    fn non_finite_values_do_not_poison_state() {
        let pts = noisy_series(1500);
        let clean = run(&pts);
        let mut d = StreamingDetector::new(DetectorConfig::default()).expect("valid");
        let mut got = Vec::new();
        for (i, &(t, v)) in pts.iter().enumerate() {
            if i % 100 == 50 {
                assert_eq!(d.update(t, f64::NAN), 0.0);
                assert_eq!(d.update(t, f64::INFINITY), 0.0);
                assert_eq!(d.update(t, f64::NEG_INFINITY), 0.0);
            }
            got.push(d.update(t, v));
        }
        assert_eq!(got, clean);
        assert_eq!(d.count(), 1500);
    }

    #[test]
    fn deterministic() {
        let pts = noisy_series(800);
        assert_eq!(run(&pts), run(&pts));
    }
}
