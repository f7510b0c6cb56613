//! Filter due-date forecasting: for one cartridge slot, a streaming forecaster fed
//! `(ts_ms, ml_since_replacement, replacements)` observations that predicts when the
//! cartridge reaches its rated capacity or its maximum age, whichever comes first,
//! with an 80 % (configurable) prediction interval.
//!
//! Method (event time only, UTC days shifted by [`ForecastConfig::utc_offset_ms`]):
//! 1. The water through the slot is accumulated across cartridges (a change of
//!    `replacements` or a drop of the volume is a new cartridge: its volume and
//!    install time restart, the learned usage of the household is kept).
//! 2. Every completed day with whole coverage gives a daily volume. Days below
//!    [`ForecastConfig::absent_below_l`] count as *absent* (holiday, unused); the others
//!    update a bias-corrected EWMA level and EWMA variance, separately for weekdays and
//!    weekends (the weekly rhythm), with a Huber-style clip at level + 4 sd.
//! 3. Presence is the share of non-absent days, shrunk to a prior
//!    ([`ForecastConfig::presence_prior`]) so one holiday moves it little; the expected
//!    use of a future day is `presence × level(day type)`.
//! 4. The remaining volume is walked forward over the rest of today and then whole days
//!    (weeks skipped in one step); within the final day use is spread over the active
//!    hours. The maximum age gives a second date (when the install time is known).
//! 5. Interval: the remaining use is a sum of daily uses, so its variance grows with
//!    the horizon (`m × var_day`), plus the level's own uncertainty (`m² × var/n_eff`),
//!    holiday blocks (`m × level² × p(1-p) × block length`), and the meter tolerance on
//!    the rated volume; it is converted to days by the mean daily use and taken
//!    as a Gaussian interval.
//! 6. Reverse osmosis: optional early exhaustion when the smoothed salt rejection
//!    `1 − tds_out/tds_in` falls below a threshold (the due date becomes that moment).
//!
//! State is a fixed set of scalars (see [`CartridgeForecaster::state_size`]), no
//! allocation per update.

use thiserror::Error;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: f64 = 3_600_000.0;

/// Rated capacity and maximum age of a cartridge kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CartridgeSpec {
    /// Rated capacity, litres.
    pub capacity_l: f64,
    /// Maximum age in service, days.
    pub max_age_days: f64,
    /// Early exhaustion threshold on the smoothed salt rejection (RO membranes only).
    pub min_rejection: Option<f64>,
}

impl CartridgeSpec {
    /// Default specification of a kind by its contract name (`sediment`, `carbon`,
    /// `reverse_osmosis`, `shower`): the rated litres the fleet simulator uses, and
    /// common vendor maximum ages (6, 12, 24 and 6 months).
    pub fn for_kind(kind: &str) -> Option<CartridgeSpec> {
        let (capacity_l, max_age_days, min_rejection) = match kind {
            "sediment" => (1_500.0, 180.0, None),
            "carbon" => (3_000.0, 365.0, None),
            "reverse_osmosis" => (6_000.0, 730.0, Some(0.85)),
            "shower" => (8_000.0, 180.0, None),
            _ => return None,
        };
        Some(CartridgeSpec {
            capacity_l,
            max_age_days,
            min_rejection,
        })
    }
}

/// Forecaster parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastConfig {
    /// The cartridge.
    pub spec: CartridgeSpec,
    /// Offset added to UTC to get local time (day boundaries, weekends), ms.
    pub utc_offset_ms: i64,
    /// EWMA rate of the weekday level and variance (per weekday).
    pub weekday_alpha: f64,
    /// EWMA rate of the weekend level and variance (per weekend day).
    pub weekend_alpha: f64,
    /// A day with less use than this (litres) is an absence.
    pub absent_below_l: f64,
    /// Prior share of days with use.
    pub presence_prior: f64,
    /// Weight of that prior, in days.
    pub presence_prior_days: f64,
    /// Typical length of an absence (days), for the interval.
    pub absence_block_days: f64,
    /// Relative standard deviation of the meter against the true volume.
    pub meter_rel_sd: f64,
    /// Central coverage of the prediction interval, in (0, 1).
    pub interval: f64,
    /// Complete days with use needed before forecasting.
    pub min_days: u32,
    /// Local hours during which water is used (start, end), for intra-day interpolation.
    pub active_hours: (f64, f64),
}

impl ForecastConfig {
    /// Defaults for a cartridge specification.
    pub fn new(spec: CartridgeSpec) -> ForecastConfig {
        ForecastConfig {
            spec,
            utc_offset_ms: 0,
            weekday_alpha: 0.04,
            weekend_alpha: 0.08,
            absent_below_l: 0.2,
            presence_prior: 0.9,
            presence_prior_days: 60.0,
            absence_block_days: 7.0,
            meter_rel_sd: 0.012,
            interval: 0.8,
            min_days: 5,
            active_hours: (6.0, 23.0),
        }
    }

    fn validate(&self) -> Result<(), ForecastError> {
        let check = |name: &'static str, v: f64, ok: bool| {
            if ok && v.is_finite() {
                Ok(())
            } else {
                Err(ForecastError::InvalidConfig { name, value: v })
            }
        };
        check(
            "capacity_l",
            self.spec.capacity_l,
            self.spec.capacity_l > 0.0,
        )?;
        check(
            "max_age_days",
            self.spec.max_age_days,
            self.spec.max_age_days > 0.0,
        )?;
        if let Some(r) = self.spec.min_rejection {
            check("min_rejection", r, (0.0..1.0).contains(&r))?;
        }
        for (name, a) in [
            ("weekday_alpha", self.weekday_alpha),
            ("weekend_alpha", self.weekend_alpha),
        ] {
            check(name, a, a > 0.0 && a <= 1.0)?;
        }
        check(
            "absent_below_l",
            self.absent_below_l,
            self.absent_below_l >= 0.0,
        )?;
        check(
            "presence_prior",
            self.presence_prior,
            self.presence_prior > 0.0 && self.presence_prior <= 1.0,
        )?;
        check(
            "presence_prior_days",
            self.presence_prior_days,
            self.presence_prior_days >= 0.0,
        )?;
        check(
            "absence_block_days",
            self.absence_block_days,
            self.absence_block_days >= 0.0,
        )?;
        check("meter_rel_sd", self.meter_rel_sd, self.meter_rel_sd >= 0.0)?;
        check(
            "interval",
            self.interval,
            self.interval > 0.0 && self.interval < 1.0,
        )?;
        let (a, b) = self.active_hours;
        check("active_hours", a, (0.0..24.0).contains(&a))?;
        check("active_hours", b, b > a && b <= 24.0)?;
        Ok(())
    }
}

/// Errors of the forecaster.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ForecastError {
    /// A configuration value is out of range.
    #[error("invalid forecast parameter `{name}` = {value}")]
    InvalidConfig {
        /// Parameter name.
        name: &'static str,
        /// Offending value.
        value: f64,
    },
    /// An observation is older than the previous one.
    #[error("observation at {ts_ms} is older than the previous one at {last_ms}")]
    OutOfOrder {
        /// Its time.
        ts_ms: i64,
        /// The previous observation's time.
        last_ms: i64,
    },
    /// Not enough complete days of use yet.
    #[error("not enough history: {days} complete days with use, {needed} needed")]
    NotReady {
        /// Days with use seen.
        days: u32,
        /// Days needed.
        needed: u32,
    },
}

/// Why the cartridge is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueReason {
    /// It reaches its rated volume.
    Volume,
    /// It reaches its maximum age.
    Age,
    /// Its salt rejection fell below the threshold (RO).
    Rejection,
}

/// A forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Predicted due time, UTC ms (the earlier of volume and age, or the rejection crossing).
    pub due_ms: i64,
    /// Lower end of the prediction interval, UTC ms.
    pub lo_ms: i64,
    /// Upper end of the prediction interval, UTC ms.
    pub hi_ms: i64,
    /// What makes it due.
    pub reason: DueReason,
    /// Predicted time the rated volume is reached.
    pub by_volume_ms: i64,
    /// Interval of `by_volume_ms` (lo, hi).
    pub volume_interval_ms: (i64, i64),
    /// Time the maximum age is reached, if the install time is known.
    pub by_age_ms: Option<i64>,
    /// Volume left, litres (negative when over capacity).
    pub remaining_l: f64,
    /// Expected mean daily use, litres (presence included).
    pub daily_l: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct DayStats {
    /// Days with use.
    n: u32,
    /// EWMA numerator and bias-correction weight.
    s: f64,
    w: f64,
    /// EWMA of squared deviations and its weight.
    v: f64,
    vw: f64,
}

impl DayStats {
    fn level(&self) -> Option<f64> {
        (self.n > 0 && self.w > 0.0).then(|| self.s / self.w)
    }
    fn var(&self) -> Option<f64> {
        (self.n > 1 && self.vw > 0.0).then(|| self.v / self.vw)
    }
    fn update(&mut self, x: f64, alpha: f64) {
        let x = match (self.level(), self.var()) {
            (Some(l), Some(v)) if self.n >= 5 => x.min(l + 4.0 * v.sqrt()),
            _ => x,
        };
        if let Some(l) = self.level() {
            let d = x - l;
            self.v = (1.0 - alpha) * self.v + alpha * d * d;
            self.vw = (1.0 - alpha) * self.vw + alpha;
        }
        self.s = (1.0 - alpha) * self.s + alpha * x;
        self.w = (1.0 - alpha) * self.w + alpha;
        self.n += 1;
    }
    fn n_eff(&self, alpha: f64) -> f64 {
        f64::from(self.n).min((2.0 - alpha) / alpha).max(1.0)
    }
}

/// Streaming due-date forecaster of one cartridge slot.
#[derive(Debug, Clone, PartialEq)]
pub struct CartridgeForecaster {
    cfg: ForecastConfig,
    /// Last observation.
    last_ts: Option<i64>,
    last_ml: u64,
    last_repl: u32,
    /// Install time of the current cartridge, if seen (or set).
    install_ms: Option<i64>,
    /// Water through the slot since the first observation, litres (across cartridges).
    flow_l: f64,
    /// Local day index of the last observation and the flow at its start.
    day: i64,
    day_start_l: f64,
    /// False if the current day is not wholly observed (first day, after a gap).
    day_whole: bool,
    stats: [DayStats; 2],
    present_days: f64,
    absent_days: f64,
    /// Smoothed salt rejection (RO), its count, and the first crossing below the threshold.
    rejection: f64,
    rejection_n: u32,
    exhausted_ms: Option<i64>,
}

fn is_weekend(day: i64) -> bool {
    (day + 3).rem_euclid(7) >= 5 // 1970-01-01 was a Thursday; 0 = Monday
}

impl CartridgeForecaster {
    /// A forecaster with no history.
    pub fn new(cfg: ForecastConfig) -> Result<CartridgeForecaster, ForecastError> {
        cfg.validate()?;
        Ok(CartridgeForecaster {
            cfg,
            last_ts: None,
            last_ml: 0,
            last_repl: 0,
            install_ms: None,
            flow_l: 0.0,
            day: 0,
            day_start_l: 0.0,
            day_whole: false,
            stats: [DayStats::default(); 2],
            present_days: 0.0,
            absent_days: 0.0,
            rejection: 0.0,
            rejection_n: 0,
            exhausted_ms: None,
        })
    }

    /// Bytes of state per cartridge.
    pub const fn state_size() -> usize {
        std::mem::size_of::<CartridgeForecaster>()
    }

    /// The configuration.
    pub fn config(&self) -> &ForecastConfig {
        &self.cfg
    }

    /// Sets the install time of the current cartridge when known from elsewhere
    /// (otherwise it is known only after an observed replacement).
    pub fn set_installed(&mut self, ts_ms: i64) {
        self.install_ms = Some(ts_ms);
    }

    /// Install time of the current cartridge, if known.
    pub fn installed_ms(&self) -> Option<i64> {
        self.install_ms
    }

    /// Replacement counter of the last observation.
    pub fn replacements(&self) -> u32 {
        self.last_repl
    }

    /// Complete days with use seen (weekdays + weekends).
    pub fn days_with_use(&self) -> u32 {
        self.stats[0].n + self.stats[1].n
    }

    fn local_day(&self, ts: i64) -> i64 {
        (ts + self.cfg.utc_offset_ms).div_euclid(DAY_MS)
    }

    fn close_day(&mut self, used_l: f64) {
        if !self.day_whole {
            return;
        }
        if used_l < self.cfg.absent_below_l {
            self.absent_days += 1.0;
            return;
        }
        self.present_days += 1.0;
        let we = usize::from(is_weekend(self.day));
        let alpha = if we == 1 {
            self.cfg.weekend_alpha
        } else {
            self.cfg.weekday_alpha
        };
        self.stats[we].update(used_l, alpha);
    }

    /// Feeds one observation of the slot. Observations must come in time order
    /// (equal times are accepted).
    pub fn observe(
        &mut self,
        ts_ms: i64,
        ml_since_replacement: u64,
        replacements: u32,
    ) -> Result<(), ForecastError> {
        let day = self.local_day(ts_ms);
        let Some(last_ts) = self.last_ts else {
            self.last_ts = Some(ts_ms);
            self.last_ml = ml_since_replacement;
            self.last_repl = replacements;
            self.day = day;
            self.day_whole = false;
            return Ok(());
        };
        if ts_ms < last_ts {
            return Err(ForecastError::OutOfOrder {
                ts_ms,
                last_ms: last_ts,
            });
        }
        let reset = replacements != self.last_repl || ml_since_replacement < self.last_ml;
        let added_ml = if reset {
            self.install_ms = Some(ts_ms);
            self.rejection_n = 0;
            self.exhausted_ms = None;
            ml_since_replacement
        } else {
            ml_since_replacement - self.last_ml
        };
        if day != self.day {
            // The day of the previous observation is complete with the flow until then.
            self.close_day(self.flow_l - self.day_start_l);
            self.day_whole = day == self.day + 1;
            self.day = day;
            self.day_start_l = self.flow_l;
        }
        self.flow_l += added_ml as f64 / 1000.0;
        self.last_ts = Some(ts_ms);
        self.last_ml = ml_since_replacement;
        self.last_repl = replacements;
        Ok(())
    }

    /// Feeds the water quality of an RO membrane (purifier `tds_in_ppm`, `tds_out_ppm`),
    /// after the [`observe`](Self::observe) of the same reading. Ignored without a
    /// rejection threshold or with an inlet below 20 ppm.
    pub fn observe_quality(&mut self, ts_ms: i64, tds_in_ppm: u16, tds_out_ppm: u16) {
        let Some(threshold) = self.cfg.spec.min_rejection else {
            return;
        };
        if tds_in_ppm < 20 {
            return;
        }
        let r = 1.0 - f64::from(tds_out_ppm) / f64::from(tds_in_ppm);
        self.rejection_n += 1;
        let a = (1.0 / f64::from(self.rejection_n)).max(0.02);
        self.rejection += a * (r - self.rejection);
        if self.rejection_n >= 48 && self.rejection < threshold && self.exhausted_ms.is_none() {
            self.exhausted_ms = Some(ts_ms);
        }
    }

    /// Smoothed salt rejection of the current cartridge, if measured.
    pub fn rejection(&self) -> Option<f64> {
        (self.rejection_n > 0).then_some(self.rejection)
    }

    fn presence(&self) -> f64 {
        let k = self.cfg.presence_prior_days;
        (self.present_days + k * self.cfg.presence_prior) / (self.present_days + self.absent_days + k)
    }

    /// Expected use of a day with use (litres) by day type, with cross fallback.
    fn levels(&self) -> Option<[f64; 2]> {
        match (self.stats[0].level(), self.stats[1].level()) {
            (Some(a), Some(b)) => Some([a, b]),
            (Some(a), None) => Some([a, a]),
            (None, Some(b)) => Some([b, b]),
            (None, None) => None,
        }
    }

    /// Fraction of the local day's use that happens before local time-of-day `ms_in_day`.
    fn used_fraction(&self, ms_in_day: f64) -> f64 {
        let (a, b) = self.cfg.active_hours;
        ((ms_in_day / HOUR_MS - a) / (b - a)).clamp(0.0, 1.0)
    }

    /// Local ms-in-day at which a fraction `f` of the day's use is done.
    fn time_of_fraction(&self, f: f64) -> f64 {
        let (a, b) = self.cfg.active_hours;
        (a + f.clamp(0.0, 1.0) * (b - a)) * HOUR_MS
    }

    /// The forecast as of `now_ms` (not before the last observation's time, which is
    /// used if `now_ms` is earlier).
    pub fn forecast(&self, now_ms: i64) -> Result<Forecast, ForecastError> {
        let days = self.days_with_use();
        let not_ready = ForecastError::NotReady {
            days,
            needed: self.cfg.min_days,
        };
        let Some(last_ts) = self.last_ts else {
            return Err(not_ready);
        };
        if days < self.cfg.min_days.max(1) {
            return Err(not_ready);
        }
        let Some(levels) = self.levels() else {
            return Err(not_ready);
        };
        let now = now_ms.max(last_ts);
        let p = self.presence();
        let exp = [levels[0] * p, levels[1] * p];
        let daily = (5.0 * exp[0] + 2.0 * exp[1]) / 7.0;
        if daily <= 0.0 {
            return Err(not_ready);
        }
        let remaining_l = self.cfg.spec.capacity_l - self.last_ml as f64 / 1000.0;
        let off = self.cfg.utc_offset_ms;
        let local_now = now + off;
        let today = local_now.div_euclid(DAY_MS);
        let ms_in_day = local_now.rem_euclid(DAY_MS) as f64;
        let day_type = |d: i64| usize::from(is_weekend(d));

        // Walk the remaining volume forward: the horizon in (fractional) days and the
        // count of weekdays/weekend days it covers.
        let (by_volume_local, m_days) = if remaining_l <= 0.0 {
            // Already over: back-date the crossing at the mean rate.
            let back = remaining_l / daily * DAY_MS as f64;
            (local_now as f64 + back, [0.0, 0.0])
        } else {
            let mut rem = remaining_l;
            let mut m = [0.0f64; 2];
            let t_today = day_type(today);
            let done = self.used_fraction(ms_in_day);
            let rest_today = exp[t_today] * (1.0 - done);
            if rem <= rest_today {
                let f = done + rem / exp[t_today];
                m[t_today] += rem / exp[t_today];
                (
                    (today * DAY_MS) as f64 + self.time_of_fraction(f).max(ms_in_day),
                    m,
                )
            } else {
                rem -= rest_today;
                m[t_today] += 1.0 - done;
                let mut d = today + 1;
                let week = 5.0 * exp[0] + 2.0 * exp[1];
                let weeks = ((rem / week).floor() - 1.0).max(0.0);
                rem -= weeks * week;
                d += (weeks as i64) * 7;
                m[0] += weeks * 5.0;
                m[1] += weeks * 2.0;
                loop {
                    let t = day_type(d);
                    if rem <= exp[t] * (1.0 + 1e-9) {
                        let f = rem / exp[t];
                        m[t] += f;
                        break ((d * DAY_MS) as f64 + self.time_of_fraction(f), m);
                    }
                    rem -= exp[t];
                    m[t] += 1.0;
                    d += 1;
                }
            }
        };
        let by_volume_ms = by_volume_local as i64 - off;

        // Variance of the use over the horizon, litres².
        let mut var_l = 0.0;
        for t in 0..2 {
            let st = &self.stats[t];
            let alpha = if t == 1 {
                self.cfg.weekend_alpha
            } else {
                self.cfg.weekday_alpha
            };
            let vd = st
                .var()
                .or(self.stats[1 - t].var())
                .unwrap_or((0.5 * levels[t]).powi(2));
            let n_eff = if st.n > 0 {
                st.n_eff(alpha)
            } else {
                1.0
            };
            var_l += m_days[t] * vd * p; // day-to-day dispersion (random walk)
            var_l += (m_days[t] * p).powi(2) * vd / n_eff; // level uncertainty
        }
        let m_all = m_days[0] + m_days[1];
        var_l += m_all * daily.powi(2) / p.powi(2) * p * (1.0 - p) * self.cfg.absence_block_days;
        var_l += (self.cfg.spec.capacity_l * self.cfg.meter_rel_sd).powi(2);
        let sd_days = var_l.sqrt() / daily;
        let z = normal_quantile(0.5 + self.cfg.interval / 2.0);
        let half = (z * sd_days * DAY_MS as f64) as i64;
        let volume_interval_ms = (
            (by_volume_ms - half).max(now.min(by_volume_ms)),
            by_volume_ms + half,
        );

        let by_age_ms = self
            .install_ms
            .map(|i| i + (self.cfg.spec.max_age_days * DAY_MS as f64) as i64);
        let (mut due_ms, mut lo_ms, mut hi_ms, mut reason) = (
            by_volume_ms,
            volume_interval_ms.0,
            volume_interval_ms.1,
            DueReason::Volume,
        );
        if let Some(age) = by_age_ms {
            if age < due_ms {
                due_ms = age;
                reason = DueReason::Age;
            }
            lo_ms = lo_ms.min(age);
            hi_ms = hi_ms.min(age);
        }
        if let Some(x) = self.exhausted_ms {
            if x < due_ms {
                (due_ms, lo_ms, hi_ms, reason) = (x, x, x, DueReason::Rejection);
            }
        }
        Ok(Forecast {
            due_ms,
            lo_ms,
            hi_ms,
            reason,
            by_volume_ms,
            volume_interval_ms,
            by_age_ms,
            remaining_l,
            daily_l: daily,
        })
    }
}

/// Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests;
