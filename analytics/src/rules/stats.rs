//! Robust statistics on small, fixed-size sample windows: the median and the
//! normalised median absolute deviation (MAD), computed on the stack.
//!
//! The fault rules learn each device's normal (wash length, daily water, flow rate,
//! shower temperature) from the last few dozen samples. Median and MAD ignore the
//! occasional odd sample that a mean and a standard deviation would chase, and a
//! window of `N` samples keeps the state bounded and serialisable.

use heapless::Deque;
use serde::{Deserialize, Serialize};

/// Factor that turns a MAD into a standard deviation for normally distributed data.
pub const MAD_TO_SIGMA: f32 = 1.4826;

/// The last `N` finite samples, oldest first; no heap.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SampleWindow<const N: usize> {
    samples: Deque<f32, N>,
}

impl<const N: usize> PartialEq for SampleWindow<N> {
    fn eq(&self, other: &Self) -> bool {
        self.samples.iter().eq(other.samples.iter())
    }
}

/// Centre and spread of a [`SampleWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RobustSummary {
    /// The median.
    pub median: f32,
    /// `1.4826 × MAD`: the standard deviation, were the samples normal.
    pub sigma: f32,
    /// How many samples.
    pub count: usize,
}

impl RobustSummary {
    /// The robust z-score of `x`, with `sigma` floored at `sigma_floor` (so a window of
    /// identical samples does not make every change infinitely surprising).
    pub fn z(&self, x: f32, sigma_floor: f32) -> f32 {
        (x - self.median) / self.sigma.max(sigma_floor).max(f32::MIN_POSITIVE)
    }
}

impl<const N: usize> SampleWindow<N> {
    /// An empty window.
    pub const fn new() -> Self {
        SampleWindow {
            samples: Deque::new(),
        }
    }

    /// Adds `x`, dropping the oldest sample when full. Non-finite values are ignored.
    pub fn push(&mut self, x: f32) {
        if !x.is_finite() {
            return;
        }
        if self.samples.is_full() {
            self.samples.pop_front();
        }
        // Cannot fail: there is room after the pop above.
        let _ = self.samples.push_back(x);
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Median and normalised MAD of every sample, `None` when empty.
    pub fn summary(&self) -> Option<RobustSummary> {
        self.summary_of_last(N)
    }

    /// Median and normalised MAD of the `k` most recent samples, `None` when empty.
    pub fn summary_of_last(&self, k: usize) -> Option<RobustSummary> {
        let mut buf = [0.0f32; N];
        let mut n = 0;
        for x in self.samples.iter().rev().take(k) {
            buf[n] = *x;
            n += 1;
        }
        let values = &mut buf[..n];
        let median = median_in_place(values)?;
        for v in values.iter_mut() {
            *v = (*v - median).abs();
        }
        let mad = median_in_place(values)?;
        Some(RobustSummary {
            median,
            sigma: MAD_TO_SIGMA * mad,
            count: n,
        })
    }

    /// The most recent sample.
    pub fn last(&self) -> Option<f32> {
        self.samples.back().copied()
    }
}

/// Median of `values` (sorted in place), `None` when empty.
pub fn median_in_place(values: &mut [f32]) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f32::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Upper-tail probability of a standard normal at `z` (evidence only: how surprising a
/// robust z-score would be for normally distributed data).
pub fn normal_upper_tail(z: f32) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    Normal::standard().sf(f64::from(z))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad_ignore_one_outlier() {
        let mut w = SampleWindow::<8>::new();
        for x in [10.0, 11.0, 9.0, 10.0, 10.5, 9.5, 1000.0] {
            w.push(x);
        }
        let s = w.summary().unwrap();
        assert_eq!(s.median, 10.0);
        assert!(s.sigma < 1.5, "{s:?}");
    }

    #[test]
    fn a_full_window_forgets_the_oldest_sample() {
        let mut w = SampleWindow::<3>::new();
        for x in [100.0, 1.0, 2.0, 3.0] {
            w.push(x);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.summary().unwrap().median, 2.0);
        assert_eq!(w.summary_of_last(2).unwrap().median, 2.5);
        assert_eq!(w.last(), Some(3.0));
    }

    #[test]
    fn non_finite_samples_are_ignored() {
        let mut w = SampleWindow::<4>::new();
        w.push(f32::NAN);
        w.push(f32::INFINITY);
        assert!(w.is_empty() && w.summary().is_none());
    }

    #[test]
    fn z_uses_the_sigma_floor() {
        let mut w = SampleWindow::<4>::new();
        for _ in 0..4 {
            w.push(5.0);
        }
        assert_eq!(w.summary().unwrap().z(7.0, 0.5), 4.0);
        assert!(normal_upper_tail(4.0) < 1e-4);
    }
}
