//! Robust statistics on small, fixed-size sample windows: the median and the
//! normalised median absolute deviation (MAD), computed on the stack.
//!
//! The fault rules learn each device's normal (wash length, daily water, flow rate,
//! shower temperature) from the last few dozen samples. Median and MAD ignore the
//! occasional odd sample that a mean and a standard deviation would chase, and a
//! window of `N` samples keeps the state bounded and serialisable.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Factor that turns a MAD into a standard deviation for normally distributed data.
pub const MAD_TO_SIGMA: f32 = 1.4826;

/// The last `N` (at most 255) finite samples in a ring; no heap, 4 bytes of overhead.
/// Serialised as the list of samples, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct SampleWindow<const N: usize> {
    values: [f32; N],
    len: u8,
    /// Where the next sample goes once the window is full (the oldest sample).
    next: u8,
}

impl<const N: usize> Default for SampleWindow<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> PartialEq for SampleWindow<N> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<const N: usize> Serialize for SampleWindow<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de, const N: usize> Deserialize<'de> for SampleWindow<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let values = Vec::<f32>::deserialize(deserializer)?;
        let mut window = SampleWindow::new();
        for v in values {
            window.push(v);
        }
        Ok(window)
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
    const FITS: () = assert!(N > 0 && N <= 255, "a SampleWindow holds 1 to 255 samples");

    /// An empty window.
    pub const fn new() -> Self {
        let () = Self::FITS;
        SampleWindow {
            values: [0.0; N],
            len: 0,
            next: 0,
        }
    }

    /// Adds `x`, replacing the oldest sample when full. Non-finite values are ignored.
    pub fn push(&mut self, x: f32) {
        if !x.is_finite() {
            return;
        }
        let len = usize::from(self.len);
        if len < N {
            self.values[len] = x;
            self.len += 1;
        } else {
            let next = usize::from(self.next);
            self.values[next] = x;
            self.next = ((next + 1) % N) as u8;
        }
    }

    /// The samples, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = f32> + '_ {
        let len = usize::from(self.len);
        let split = if len < N { 0 } else { usize::from(self.next) };
        self.values[split..len]
            .iter()
            .chain(self.values[..split].iter())
            .copied()
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
    }

    /// Median and normalised MAD of every sample, `None` when empty.
    pub fn summary(&self) -> Option<RobustSummary> {
        self.summary_of_last(N)
    }

    /// Median and normalised MAD of the `k` most recent samples, `None` when empty.
    pub fn summary_of_last(&self, k: usize) -> Option<RobustSummary> {
        let mut buf = [0.0f32; N];
        let mut n = 0;
        for x in self.iter().rev().take(k) {
            buf[n] = x;
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
        self.iter().next_back()
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
    fn a_window_round_trips_through_json_oldest_first() {
        let mut w = SampleWindow::<3>::new();
        for x in [1.0, 2.0, 3.0, 4.0] {
            w.push(x);
        }
        let text = serde_json::to_string(&w).unwrap();
        assert_eq!(text, "[2.0,3.0,4.0]");
        let back: SampleWindow<3> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, w);
        assert_eq!(back.last(), Some(4.0));
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
