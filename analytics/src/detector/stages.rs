//! The fixed-size building blocks of [`super::StreamingDetector`]: tail-probability
//! helpers and one small state struct per evidence stage (context novelty, anomaly
//! likelihood, mean shift, spatial range, refractory memory). Each is O(1) in time and
//! memory per update and is tested on its own below.

use statrs::function::erf::erfc;

/// 64-bit words per generation of the context table (1024 bits per generation).
pub const CTX_WORDS: usize = 16;
/// Length of the short window of the anomaly-likelihood stage.
pub const SHORT_WINDOW: usize = 10;
/// Length of the short window of the mean-shift stage.
pub const SHIFT_WINDOW: usize = 10;

/// `-ln(1e-10)`: the log tail probability that maps to score 1.
const LN_TAIL_FLOOR: f64 = 23.025_850_929_940_457;

/// Score in `[0, 1]` from `-ln p`, NAB style: `-ln(p) / -ln(1e-10)`.
pub fn tail_to_score(neg_ln_p: f64) -> f64 {
    (neg_ln_p / LN_TAIL_FLOOR).clamp(0.0, 1.0)
}

/// `-ln` of the upper Gaussian tail probability at `z`, stable for large `z`.
pub fn neg_ln_gauss_tail(z: f64) -> f64 {
    let q = 0.5 * erfc(z / std::f64::consts::SQRT_2);
    if q > 1e-300 {
        -q.ln()
    } else {
        // Asymptotic expansion: ln Q(z) ~ -z^2/2 - ln(z sqrt(2 pi)).
        0.5 * z * z + (z * (2.0 * std::f64::consts::PI).sqrt()).ln()
    }
}

/// Cheap upper bound of `tail_to_score(neg_ln_gauss_tail(z))`, so that the `erfc`
/// can be skipped when a stage cannot beat the evidence already found. Uses
/// `Q(z) > φ(z)·z/(1+z²)` for `z > 1` and `Q(z) ≥ Q(1)` below.
pub fn gauss_tail_score_bound(z: f64) -> f64 {
    let neg_ln = if z <= 1.0 {
        1.842 // -ln Q(1) = 1.8410...
    } else {
        // ln(sqrt(2 pi)) = 0.9189...
        0.5 * z * z + 0.919 + ((1.0 + z * z) / z).ln()
    };
    tail_to_score(neg_ln)
}

/// Contextual novelty (after NAB's "contextOSE"): has the pair (previous value bucket,
/// current value bucket) been seen recently? Seen contexts are bits of a hashed table
/// of `CTX_WORDS`·64 bits with two generations of `generation` points each, so a
/// context is remembered for one to two generations and then forgotten.
#[derive(Debug, Clone, Default)]
pub struct ContextNovelty {
    prev_bucket: i32,
    age: u32,
    table: [[u64; CTX_WORDS]; 2],
}

impl ContextNovelty {
    /// Record the context of a point with value bucket `bucket` (in `-15..=15`) and
    /// return whether it had been seen. `slot` replaces the previous bucket as the
    /// first half of the context when given (time-of-day contexts).
    pub fn observe(&mut self, bucket: i32, slot: Option<i32>, generation: u32) -> bool {
        let ctx_a = slot.map_or(self.prev_bucket + 32, |s| s + 1000);
        let key = (ctx_a * 64 + (bucket + 32)) as u64;
        let h = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize; // 10 bits
        let (w, bit) = (h / 64 % CTX_WORDS, 1u64 << (h % 64));
        let seen = (self.table[0][w] | self.table[1][w]) & bit != 0;
        self.table[0][w] |= bit;
        self.prev_bucket = bucket;
        self.age += 1;
        if generation > 0 && self.age >= generation {
            self.table[1] = self.table[0];
            self.table[0] = [0; CTX_WORDS];
            self.age = 0;
        }
        seen
    }
}

/// Anomaly likelihood (after Numenta's NAB detectors): the mean of the last
/// [`SHORT_WINDOW`] per-point surprises against the long-run (EWMA) mean and variance
/// of that mean.
#[derive(Debug, Clone, Default)]
pub struct Likelihood {
    ring: [f32; SHORT_WINDOW],
    sum: f64,
    mean: f64,
    var: f64,
}

impl Likelihood {
    /// Push the surprise (in `[0, 1]`) of point number `n` (1-based count of points) and
    /// return the standardised new short-window mean `z` (its evidence is the Gaussian
    /// upper tail, `tail_to_score(neg_ln_gauss_tail(z))`). The long-run statistics then
    /// learn the new mean with rate `max(rate, 1/n)`.
    pub fn update(&mut self, surprise: f32, n: u64, rate: f64) -> f64 {
        let slot = (n % SHORT_WINDOW as u64) as usize;
        self.sum += f64::from(surprise) - f64::from(self.ring[slot]);
        self.ring[slot] = surprise;
        let short = self.sum / SHORT_WINDOW as f64;
        let z = (short - self.mean) / self.var.max(1e-6).sqrt();
        let la = rate.max(1.0 / n as f64);
        let d = short - self.mean;
        self.mean += la * d;
        self.var = (1.0 - la) * (self.var + la * d * d);
        z
    }
}

/// Mean shift: the mean of the last [`SHIFT_WINDOW`] deviations (of the value from a
/// slow baseline) against the long-run (EWMA) mean and variance of that mean. Unlike
/// the likelihood stage it keeps the sign and the size of the deviations, so a
/// sustained shift of a fraction of the noise level, up or down, stands out after a
/// few points.
#[derive(Debug, Clone, Default)]
pub struct MeanShift {
    ring: [f32; SHIFT_WINDOW],
    sum: f64,
    mean: f64,
    var: f64,
    pushes: u64,
}

impl MeanShift {
    /// Push one deviation; once the window is full, return `|z|` of the new window mean
    /// under the long-run distribution (standard deviation floored at `floor`), then
    /// learn that mean with rate `max(rate, 1/k)` (`k`: full windows seen).
    pub fn update(&mut self, deviation: f64, rate: f64, floor: f64) -> Option<f64> {
        let slot = (self.pushes % SHIFT_WINDOW as u64) as usize;
        self.pushes += 1;
        // Store and sum the same f32 value, so the running sum does not drift.
        let d = deviation as f32;
        self.sum += f64::from(d) - f64::from(self.ring[slot]);
        self.ring[slot] = d;
        if self.pushes < SHIFT_WINDOW as u64 {
            return None;
        }
        let full = self.pushes + 1 - SHIFT_WINDOW as u64;
        let short = self.sum / SHIFT_WINDOW as f64;
        let z = (short - self.mean).abs() / self.var.max(floor * floor).sqrt();
        let la = rate.max(1.0 / full as f64);
        let d = short - self.mean;
        self.mean += la * d;
        self.var = (1.0 - la) * (self.var + la * d * d);
        Some(z)
    }
}

/// Spatial novelty (Numenta's NAB detector): the range of all values seen so far, and
/// by how much a value falls outside it.
#[derive(Debug, Clone, Copy)]
pub struct SpatialRange {
    lo: f64,
    hi: f64,
}

impl SpatialRange {
    /// The range of the single value `first`.
    pub fn new(first: f64) -> Self {
        Self {
            lo: first,
            hi: first,
        }
    }

    /// How far `value` lies outside the range, as a fraction of the range (floored at
    /// `floor`); `<= 0` inside. The range is then extended to include `value`.
    pub fn observe(&mut self, value: f64, floor: f64) -> f64 {
        let range = (self.hi - self.lo).max(floor);
        let out = (value - self.hi).max(self.lo - value) / range;
        self.hi = self.hi.max(value);
        self.lo = self.lo.min(value);
        out
    }
}

/// Refractory suppression: the reported score is the evidence in excess of a decaying
/// memory of the recent peak evidence, so one event gives one strong alarm.
#[derive(Debug, Clone, Copy, Default)]
pub struct Refractory {
    peak: f64,
}

impl Refractory {
    /// Decay the memory by `decay`, return the excess of `evidence` over it, and
    /// remember `evidence` if it is the new peak.
    pub fn excess(&mut self, evidence: f64, decay: f64) -> f64 {
        let prev = self.peak * decay;
        self.peak = prev.max(evidence);
        (evidence - prev).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        assert_eq!(tail_to_score(0.0), 0.0);
        assert_eq!(tail_to_score(LN_TAIL_FLOOR * 2.0), 1.0);
        // Q(0) = 1/2; Q(3) = 1.35e-3; the asymptotic branch continues smoothly.
        assert!((neg_ln_gauss_tail(0.0) - std::f64::consts::LN_2).abs() < 1e-12);
        assert!((neg_ln_gauss_tail(3.0) - 6.6077).abs() < 1e-3);
        assert!(neg_ln_gauss_tail(40.0) > neg_ln_gauss_tail(37.0));
    }

    #[test]
    fn tail_bound_is_an_upper_bound() {
        for i in -100..2000 {
            let z = f64::from(i) * 0.025;
            let exact = tail_to_score(neg_ln_gauss_tail(z));
            let bound = gauss_tail_score_bound(z);
            assert!(bound >= exact, "z {z}: bound {bound} < {exact}");
            if z > 3.0 {
                assert!(
                    bound - exact < 0.02,
                    "z {z}: loose bound {bound} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn context_seen_then_forgotten() {
        let mut c = ContextNovelty::default();
        assert!(!c.observe(3, None, 100)); // (0, 3) new
        assert!(!c.observe(3, None, 100)); // (3, 3) new
        assert!(c.observe(3, None, 100)); // (3, 3) seen
                                          // Two generations later it is forgotten.
        for _ in 0..200 {
            c.observe(-7, None, 100);
        }
        c.observe(3, None, 100); // (-7, 3)
        assert!(!c.observe(3, None, 100)); // (3, 3) no longer remembered
    }

    #[test]
    fn likelihood_rises_on_a_burst_of_surprise() {
        let mut l = Likelihood::default();
        let mut n = 0;
        let mut calm = 0.0f64;
        for i in 0..2000u64 {
            n += 1;
            let s = if i % 2 == 0 { 0.2 } else { 0.4 };
            let e = tail_to_score(neg_ln_gauss_tail(l.update(s, n, 0.001)));
            if i > 100 {
                calm = calm.max(e);
            }
        }
        let mut burst = 0.0f64;
        for _ in 0..10 {
            n += 1;
            burst = burst.max(tail_to_score(neg_ln_gauss_tail(l.update(0.99, n, 0.001))));
        }
        assert!(calm < 0.1 && burst > 0.5, "calm {calm}, burst {burst}");
    }

    #[test]
    fn mean_shift_sees_a_small_step_within_ten_points() {
        // Deviations alternating +-1 (noise), then a step of +1.5 (1.5 noise units).
        let mut m = MeanShift::default();
        let mut calm = 0.0f64;
        for i in 0..3000 {
            let d = if i % 3 == 0 { 1.0 } else { -0.5 };
            if let Some(z) = m.update(d, 0.001, 1e-9) {
                assert!(z.is_finite(), "z = {z} at {i}");
                if i > 100 {
                    calm = calm.max(z);
                }
            }
        }
        let mut z10 = 0.0;
        for i in 0..10 {
            let d = if i % 3 == 0 { 2.5 } else { 1.0 };
            z10 = m.update(d, 0.001, 1e-9).unwrap_or(0.0);
        }
        assert!(calm < 3.0, "calm {calm}");
        assert!(z10 > 10.0, "after the step {z10}");
        // Nothing before the window is full.
        assert_eq!(MeanShift::default().update(1.0, 0.1, 1.0), None);
    }

    #[test]
    fn spatial_range_flags_only_new_territory() {
        let mut s = SpatialRange::new(10.0);
        assert!(s.observe(20.0, 1e-9) > 0.0); // new max
        assert!(s.observe(15.0, 1e-9) <= 0.0);
        assert!(s.observe(20.4, 1e-9) < 0.05); // 4 % above the range of 10
        assert!((s.observe(9.0, 1e-9) - 1.0 / 10.4).abs() < 1e-12);
    }

    #[test]
    fn refractory_gives_one_alarm_per_event() {
        let mut r = Refractory::default();
        assert_eq!(r.excess(0.8, 0.995), 0.8);
        assert!(r.excess(0.8, 0.995) < 0.01);
        assert!(r.excess(0.5, 0.995) == 0.0);
        for _ in 0..500 {
            r.excess(0.0, 0.995);
        }
        assert!(r.excess(0.8, 0.995) > 0.7);
    }
}
