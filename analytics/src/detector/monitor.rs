//! [`SeriesMonitor`]: a small streaming anomaly monitor for the product's own series,
//! pure (no I/O, no clock: event time only), bounded memory.
//!
//! Meant for two kinds of series:
//!
//! * **one device's daily total** (water litres or energy Wh per local day), one
//!   point per day, behind the abnormal-use and saving-tip findings:
//!   [`MonitorConfig::daily`];
//! * **a platform rate** (ingested messages per minute, rejections per minute), one
//!   point per minute, as a platform alert: [`MonitorConfig::rate`].
//!
//! Usage: keep one monitor per (device, metric) or per platform rate, feed it each
//! closed period in time order, and raise a finding when it returns an [`Anomaly`]:
//!
//! ```
//! use analytics::detector::{Direction, MonitorConfig, SeriesMonitor};
//! let mut m = SeriesMonitor::new(MonitorConfig::daily()).expect("valid config");
//! let day = 86_400_000i64;
//! for d in 0..30i32 {
//!     let litres = 120.0 + f64::from(d % 5); // an ordinary month
//!     assert!(m.push(i64::from(d) * day, litres).is_none());
//! }
//! let a = m.push(30 * day, 400.0).expect("a party");
//! assert_eq!(a.direction, Direction::Up);
//! assert!(m.push(31 * day, 410.0).is_none()); // same episode: one alarm
//! ```
//!
//! Method (rank-based, so it adapts to each series' own distribution without fitted
//! constants): the last [`MONITOR_WINDOW`] accepted values are kept in a ring; a new
//! value is compared with the robust local line through the medians of the older and
//! the newer half of the window, extrapolated one step (`e`; a flat series gives its
//! median, a ramp such as a morning rise of the ingest rate is followed), in units of
//! the scaled median absolute deviation from that line `s = 1.4826·MAD` (floored at
//! `rel_floor·|median of the newer half|` and `abs_floor`, so that a flat series does
//! not alarm on rounding). With `z = (x - e) / s`, `|z| >= z_alarm`
//! opens an **episode** and returns one [`Anomaly`]; later points in the same
//! direction do not alarm again until a point falls back below `z_alarm / 2` (the
//! episode closes) or the direction flips. Every value, anomalous or not, then
//! enters the ring, so a lasting change of level becomes the new normal once it
//! fills half the window (a new household member alarms once, not every day).
//! Nothing is reported during the first `warmup` values. There is no weekday or
//! time-of-day profile: a weekly rhythm (weekend showers) widens the spread instead
//! of being modelled, which costs sensitivity, not false alarms; a per-minute rate
//! follows its daily curve through the local line (tested on two-hour ramps).
//!
//! Bad input is counted and ignored, never folded into the state: non-finite values
//! ([`SeriesMonitor::rejected_non_finite`]) and points not after the previous one in
//! event time ([`SeriesMonitor::rejected_out_of_order`]).
//!
//! State: a fixed-size struct of [`SeriesMonitor::state_size`] bytes (the ring of
//! `MONITOR_WINDOW` `f32` values, the counters and the configuration; under 400
//! bytes, asserted by a test below to stay under 1 KiB). Cost per push: three sorts
//! of at most `MONITOR_WINDOW` values (on the stack; a few µs), negligible at one
//! point a day or a minute.
//!
//! Why not [`super::StreamingDetector`] here: it is built and scored for NAB's
//! minute-scale machine metrics, with a warm-up of hundreds of points and
//! per-corpus thresholds; a daily series gives one point a day, so it would stay
//! silent for half a year, and its scores have no threshold that means the same on
//! every device. The rank-based rule needs two weeks and one threshold in units of
//! the series' own spread.

use crate::error::ConfigError;

/// Values kept per monitor (the baseline window): 56 days of a daily series, or
/// 56 minutes of a per-minute rate.
pub const MONITOR_WINDOW: usize = 56;

/// Parameters of a [`SeriesMonitor`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonitorConfig {
    /// Values seen before anything is reported (at most [`MONITOR_WINDOW`]).
    pub warmup: u16,
    /// Robust z (in units of the scaled MAD) that opens an episode.
    pub z_alarm: f64,
    /// Floor of the scale as a fraction of the level (median of the newer half).
    pub rel_floor: f64,
    /// Absolute floor of the scale (series units).
    pub abs_floor: f64,
    /// Report only rises (`true`, e.g. water use or rejections) or both directions.
    pub up_only: bool,
}

impl MonitorConfig {
    /// A device's daily water litres or energy Wh: two weeks of warm-up, an alarm at
    /// 5 robust units (about 3.4 standard deviations of a Gaussian day-to-day
    /// spread), at least 10 % of the median day; both directions (a fall is
    /// reported too: a saving, or a device that stopped being used).
    pub fn daily() -> Self {
        Self {
            warmup: 14,
            z_alarm: 5.0,
            rel_floor: 0.10,
            abs_floor: 1.0,
            up_only: false,
        }
    }

    /// A platform rate per minute (ingested messages, rejections): half an hour of
    /// warm-up, an alarm at 6 robust units, with a scale of at least 10 % of the
    /// rate (an alarm needs a 60 % departure from the local trend: a collapse or a
    /// doubling, not a morning ramp) or 5 per minute (so a rejection rate near zero
    /// does not alarm on a dozen rejections).
    pub fn rate() -> Self {
        Self {
            warmup: 30,
            z_alarm: 6.0,
            rel_floor: 0.10,
            abs_floor: 5.0,
            up_only: false,
        }
    }

    /// Check that the parameters are in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name: &'static str, value: f64, reason: &'static str| {
            Err(ConfigError::OutOfRange {
                name,
                value,
                reason,
            })
        };
        if self.warmup < 3 || usize::from(self.warmup) > MONITOR_WINDOW {
            return bad(
                "warmup",
                f64::from(self.warmup),
                "must be in 3..=MONITOR_WINDOW",
            );
        }
        if !(self.z_alarm > 0.0 && self.z_alarm.is_finite()) {
            return bad("z_alarm", self.z_alarm, "must be finite and > 0");
        }
        if !(self.rel_floor >= 0.0 && self.rel_floor.is_finite()) {
            return bad("rel_floor", self.rel_floor, "must be finite and >= 0");
        }
        if !(self.abs_floor > 0.0 && self.abs_floor.is_finite()) {
            return bad("abs_floor", self.abs_floor, "must be finite and > 0");
        }
        Ok(())
    }
}

/// Which way a value departs from its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Above the baseline.
    Up,
    /// Below the baseline.
    Down,
}

/// An alarm: the first point of an episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anomaly {
    /// Event time of the point (ms).
    pub ts_ms: i64,
    /// Score in `[0, 1]`: `|z| / (2·z_alarm)`, capped at 1 (0.5 at the alarm level).
    pub score: f64,
    /// Signed robust z of the point.
    pub z: f64,
    /// The value expected from the window's robust local line.
    pub expected: f64,
    /// Up or down.
    pub direction: Direction,
}

/// Streaming robust monitor of one series. See the module docs.
#[derive(Debug, Clone)]
pub struct SeriesMonitor {
    cfg: MonitorConfig,
    ring: [f32; MONITOR_WINDOW],
    len: u16,
    head: u16,
    last_ts: Option<i64>,
    episode: Option<Direction>,
    rejected_non_finite: u32,
    rejected_out_of_order: u32,
}

fn median(v: &mut [f32]) -> f64 {
    let n = v.len();
    v.sort_unstable_by(f32::total_cmp);
    if n % 2 == 1 {
        f64::from(v[n / 2])
    } else {
        0.5 * (f64::from(v[n / 2 - 1]) + f64::from(v[n / 2]))
    }
}

impl SeriesMonitor {
    /// Create a monitor; fails if `cfg` is out of range.
    pub fn new(cfg: MonitorConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            ring: [0.0; MONITOR_WINDOW],
            len: 0,
            head: 0,
            last_ts: None,
            episode: None,
            rejected_non_finite: 0,
            rejected_out_of_order: 0,
        })
    }

    /// Bytes of state per monitor (`size_of::<SeriesMonitor>()`, config included).
    pub const fn state_size() -> usize {
        std::mem::size_of::<Self>()
    }

    /// Values in the baseline window.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether no value has been accepted yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Non-finite values ignored so far.
    pub fn rejected_non_finite(&self) -> u32 {
        self.rejected_non_finite
    }

    /// Points ignored because they were not after the previous point in event time.
    pub fn rejected_out_of_order(&self) -> u32 {
        self.rejected_out_of_order
    }

    /// Expected next value and scale, once warmed up: a robust local line through
    /// the medians of the older and of the newer half of the window, extrapolated one
    /// step, and the scaled MAD of the window's residuals from that line (floored).
    pub fn baseline(&self) -> Option<(f64, f64)> {
        if self.len < self.cfg.warmup {
            return None;
        }
        let n = usize::from(self.len);
        // The window in time order (the ring is full and `head` is the oldest, or
        // it is filling from index 0).
        let mut seq = [0.0f32; MONITOR_WINDOW];
        if n == MONITOR_WINDOW {
            let head = usize::from(self.head);
            seq[..n - head].copy_from_slice(&self.ring[head..]);
            seq[n - head..].copy_from_slice(&self.ring[..head]);
        } else {
            seq[..n].copy_from_slice(&self.ring[..n]);
        }
        let h = n / 2;
        let mut buf = seq;
        let m_old = median(&mut buf[..h]);
        let mut buf = seq;
        let m_new = median(&mut buf[n - h..n]);
        let c_old = (h as f64 - 1.0) / 2.0;
        let c_new = (n - h) as f64 + c_old;
        let slope = (m_new - m_old) / (c_new - c_old);
        let line = |i: f64| m_new + slope * (i - c_new);
        let mut res = [0.0f32; MONITOR_WINDOW];
        for (i, (r, &x)) in res.iter_mut().zip(&seq[..n]).enumerate() {
            *r = (f64::from(x) - line(i as f64)).abs() as f32;
        }
        let mad = median(&mut res[..n]);
        let scale = (1.4826 * mad)
            .max(self.cfg.rel_floor * m_new.abs())
            .max(self.cfg.abs_floor);
        Some((line(n as f64), scale))
    }

    /// Feed the value of the period ending at `ts_ms` (event time, ms). Returns an
    /// [`Anomaly`] when this point opens an episode. Non-finite values and points not
    /// after the previous one are counted and ignored.
    pub fn push(&mut self, ts_ms: i64, value: f64) -> Option<Anomaly> {
        if !value.is_finite() {
            self.rejected_non_finite = self.rejected_non_finite.saturating_add(1);
            return None;
        }
        if self.last_ts.is_some_and(|t| ts_ms <= t) {
            self.rejected_out_of_order = self.rejected_out_of_order.saturating_add(1);
            return None;
        }
        self.last_ts = Some(ts_ms);
        let mut out = None;
        if let Some((m, scale)) = self.baseline() {
            let z = (value - m) / scale;
            let dir = if z >= 0.0 {
                Direction::Up
            } else {
                Direction::Down
            };
            let alarming = z.abs() >= self.cfg.z_alarm && !(self.cfg.up_only && z < 0.0);
            if alarming {
                if self.episode != Some(dir) {
                    out = Some(Anomaly {
                        ts_ms,
                        score: (z.abs() / (2.0 * self.cfg.z_alarm)).min(1.0),
                        z,
                        expected: m,
                        direction: dir,
                    });
                }
                self.episode = Some(dir);
            } else if z.abs() < 0.5 * self.cfg.z_alarm {
                self.episode = None;
            }
        }
        let head = usize::from(self.head);
        self.ring[head] = value as f32;
        self.head = ((head + 1) % MONITOR_WINDOW) as u16;
        self.len = (self.len + 1).min(MONITOR_WINDOW as u16);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    /// Deterministic noise in [-0.5, 0.5).
    fn noise(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    #[test]
    fn state_is_small() {
        assert!(
            SeriesMonitor::state_size() < 400,
            "{}",
            SeriesMonitor::state_size()
        );
    }

    #[test]
    fn quiet_series_never_alarms_and_a_party_alarms_once() {
        let mut m = SeriesMonitor::new(MonitorConfig::daily()).expect("valid");
        let mut s = 7u64;
        // A year of a household's water use: weekday 110 l, weekend 160 l, ±20 l noise.
        for d in 0..365 {
            let weekend = d % 7 >= 5;
            let v = if weekend { 160.0 } else { 110.0 } + 40.0 * noise(&mut s);
            assert_eq!(m.push(d * DAY, v), None, "false alarm on day {d}");
        }
        let a = m.push(365 * DAY, 420.0).expect("party day");
        assert_eq!(a.direction, Direction::Up);
        assert!(a.z > 5.0 && a.score >= 0.5 && a.score <= 1.0, "{a:?}");
        assert!((100.0..170.0).contains(&a.expected), "{a:?}");
        // The next party day is the same episode.
        assert_eq!(m.push(366 * DAY, 430.0), None);
        // Back to normal closes it; a later party alarms again.
        assert_eq!(m.push(367 * DAY, 120.0), None);
        assert!(m.push(368 * DAY, 425.0).is_some());
    }

    #[test]
    fn nothing_during_warmup_then_a_drop_is_reported_down() {
        let mut m = SeriesMonitor::new(MonitorConfig::daily()).expect("valid");
        for d in 0..14 {
            // Even a wild value is not reported before 14 values are in.
            let v = if d == 10 {
                5000.0
            } else {
                2000.0 + f64::from(d as i32 % 3)
            };
            assert_eq!(m.push(d * DAY, v), None);
        }
        for d in 14..40 {
            assert_eq!(m.push(d * DAY, 2000.0 + f64::from(d as i32 % 3)), None);
        }
        let a = m.push(40 * DAY, 300.0).expect("heater off");
        assert_eq!(a.direction, Direction::Down);
        let mut up = MonitorConfig::daily();
        up.up_only = true;
        let mut m = SeriesMonitor::new(up).expect("valid");
        for d in 0..40 {
            m.push(d * DAY, 2000.0 + f64::from(d as i32 % 3));
        }
        assert_eq!(m.push(40 * DAY, 300.0), None, "up_only ignores drops");
    }

    #[test]
    fn a_lasting_change_alarms_once_then_becomes_normal() {
        let mut m = SeriesMonitor::new(MonitorConfig::daily()).expect("valid");
        let mut s = 3u64;
        let mut alarms = 0;
        for d in 0..200 {
            let base = if d < 60 { 100.0 } else { 250.0 }; // a new household member
            if m.push(d * DAY, base + 10.0 * noise(&mut s)).is_some() {
                alarms += 1;
            }
        }
        assert_eq!(alarms, 1);
        let (expected, _) = m.baseline().expect("warmed up");
        assert!((240.0..260.0).contains(&expected), "{expected}");
    }

    #[test]
    fn rate_series_flat_zero_needs_a_real_burst() {
        // Rejections per minute: mostly 0-2.
        let mut m = SeriesMonitor::new(MonitorConfig::rate()).expect("valid");
        let minute = 60_000;
        for i in 0..600 {
            let v = f64::from((i % 7 == 0) as u8 + (i % 11 == 0) as u8);
            assert_eq!(m.push(i * minute, v), None, "minute {i}");
        }
        assert_eq!(
            m.push(600 * minute, 12.0),
            None,
            "12/min is within 6 × 5 of the floor"
        );
        let mut m2 = m.clone();
        let a = m2.push(601 * minute, 400.0).expect("a rejection storm");
        assert_eq!(a.direction, Direction::Up);
        assert_eq!(a.score, 1.0);
        // Ingest collapse on a busy rate: 1000/min ± 30, then 100/min.
        let mut r = SeriesMonitor::new(MonitorConfig::rate()).expect("valid");
        let mut s = 9u64;
        for i in 0..300 {
            assert_eq!(r.push(i * minute, 1000.0 + 60.0 * noise(&mut s)), None);
        }
        let a = r.push(300 * minute, 100.0).expect("ingest collapse");
        assert_eq!(a.direction, Direction::Down);
    }

    #[test]
    fn rate_following_a_daily_curve_does_not_alarm() {
        // Messages per minute over two days: 200 at night, 1000 by day, ramps of
        // two hours, Poisson-like noise of ±sqrt(rate).
        let mut m = SeriesMonitor::new(MonitorConfig::rate()).expect("valid");
        let mut s = 5u64;
        let mut worst = 0.0f64;
        for i in 0..2 * 1440i64 {
            let h = (i % 1440) as f64 / 60.0;
            let day = ((h - 6.0) / 2.0).clamp(0.0, 1.0) * ((22.0 - h) / 2.0).clamp(0.0, 1.0);
            let rate = 200.0 + 800.0 * day;
            let v = rate + 2.0 * rate.sqrt() * noise(&mut s);
            if let Some((e, sc)) = m.baseline() {
                worst = worst.max((v - e).abs() / sc);
            }
            assert_eq!(m.push(i * 60_000, v), None, "minute {i}");
        }
        // With some margin below the alarm level of 6.
        assert!(worst < 5.0, "worst |z| {worst}");
    }

    #[test]
    fn bad_input_is_counted_and_ignored() {
        let mut m = SeriesMonitor::new(MonitorConfig::daily()).expect("valid");
        for d in 0..20 {
            m.push(d * DAY, 100.0);
        }
        let before = m.baseline();
        assert_eq!(m.push(20 * DAY, f64::NAN), None);
        assert_eq!(m.push(21 * DAY, f64::INFINITY), None);
        assert_eq!(m.push(19 * DAY, 9999.0), None, "out of order");
        assert_eq!(m.push(19 * DAY, 9999.0), None, "duplicate");
        assert_eq!(m.rejected_non_finite(), 2);
        assert_eq!(m.rejected_out_of_order(), 2);
        assert_eq!(m.baseline(), before);
        assert_eq!(m.len(), 20);
    }

    #[test]
    fn config_is_range_checked() {
        let mut c = MonitorConfig::daily();
        c.warmup = 2;
        assert!(SeriesMonitor::new(c).is_err());
        let mut c = MonitorConfig::rate();
        c.z_alarm = f64::NAN;
        assert!(c.validate().is_err());
        let mut c = MonitorConfig::daily();
        c.abs_floor = 0.0;
        assert!(c.validate().is_err());
        assert!(MonitorConfig::daily().validate().is_ok());
        assert!(MonitorConfig::rate().validate().is_ok());
    }
}
