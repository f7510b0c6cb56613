//! Filter due-date forecasting: for one cartridge slot, a streaming forecaster fed
//! `(ts_ms, ml_since_replacement, replacements)` observations that predicts when the
//! cartridge reaches its rated capacity or its maximum age, whichever comes first,
//! with an 80 % (configurable) prediction interval.
//!
//! Method (event time only, local days shifted by [`ForecastConfig::utc_offset_ms`]):
//! 1. The water through the slot is accumulated across cartridges (a change of
//!    `replacements` or a drop of the volume is a new cartridge: its volume and
//!    install time restart, the learned usage of the household is kept).
//! 2. Every completed, wholly observed day gives a daily volume. A day below
//!    [`ForecastConfig::absent_below_l`] is a *zero day*. A run of at least
//!    [`ForecastConfig::trip_min_days`] zero days is a *trip* (the household was away):
//!    it counts one trip and its length; shorter runs are *idle days* at home.
//! 3. Days with use update a bias-corrected EWMA level and variance, separately for
//!    weekdays and weekends (the weekly rhythm), with a Huber-style clip at
//!    level + 4 sd. Each day is held back one day so that the partial days of
//!    departure and return around a trip stay out of the level. Volumes are first divided by the flow factor
//!    `1 − flow_loss_at_capacity × load²` of the cartridge's load at that day (timed uses
//!    such as showers draw less water through a loaded cartridge), so the level is the
//!    use of a fresh cartridge and the forecast re-applies the factor along the way.
//! 4. The use of a future day at home is `(1 − p_idle) × level(day type) × flow factor`;
//!    walking the remaining volume forward over the rest of today and whole days gives
//!    the *at-home date* `T0` (weeks are skipped in one step).
//! 5. Trips: their rate per day at home has a Gamma prior (fleet: about one trip every
//!    two months, strongly dispersed) updated by the trips seen; the number of trips
//!    before `T0` is then negative binomial, each delays the date by a trip length
//!    (uniform around the learned mean). A trip under way adds its expected remainder.
//! 6. That mixture is convolved with a Gaussian for the day-to-day dispersion of use,
//!    the uncertainty of the level and the meter tolerance (on the rated volume); the
//!    interval is its central quantiles. The due date is the median of the same
//!    mixture without the meter tolerance (a symmetric offset that would otherwise
//!    push the median into the trips' tail; slightly better at 7–14 days in the fleet
//!    evaluation). Trips make the distribution skewed: the median is usually the
//!    at-home date plus little, the upper quantile much later.
//! 7. The maximum age gives a second date (when the install time is known).
//! 8. Reverse osmosis: the daily mean salt rejection `1 − tds_out/tds_in` is regressed
//!    on the volume through the membrane (exponentially forgetting least squares);
//!    when it falls significantly, the volume at which it crosses
//!    [`CartridgeSpec::min_rejection`] is forecast like the capacity, and an observed
//!    crossing of the smoothed rejection makes the cartridge due at once.
//!
//! Limits: the forecaster sees the meter, not the true volume. A meter off by `e`
//! moves the date by `capacity × e / daily use` at every horizon (±2 % meters: about
//! 1.6–1.9 days of MAE on the simulated fleet even for a perfect forecast of use), and
//! holidays cannot be foreseen, only priced in (`filter-eval` prints that
//! decomposition).
//!
//! State is a fixed set of scalars (see [`CartridgeForecaster::state_size`]: 488 bytes
//! with the copied configuration), no allocation per update; a forecast walks the
//! horizon a week at a time.

use statrs::function::erf::erfc;
use thiserror::Error;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: f64 = 3_600_000.0;
/// Trip counts beyond this share the last mixture component.
const MAX_TRIPS: usize = 12;

/// Rated capacity and maximum age of a cartridge kind.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CartridgeSpec {
    /// Rated capacity, litres.
    pub capacity_l: f64,
    /// Maximum age in service, days.
    pub max_age_days: f64,
    /// Early exhaustion threshold on the smoothed salt rejection (RO membranes only).
    pub min_rejection: Option<f64>,
    /// Share of the water per use lost at rated capacity because the loaded cartridge
    /// lets less flow through (timed uses such as showers; 0 for dispensed volumes).
    pub flow_loss_at_capacity: f64,
}

impl CartridgeSpec {
    /// Default specification of a kind by its contract name (`sediment`, `carbon`,
    /// `reverse_osmosis`, `shower`): the rated litres the fleet simulator uses, common
    /// vendor maximum ages (6, 12, 24 and 6 months), and the shower cartridge's flow
    /// loss at capacity (20 %, the simulator's clogging model; purifier draws are
    /// dispensed by volume, so their cartridges' loading does not change the use).
    pub fn for_kind(kind: &str) -> Option<CartridgeSpec> {
        let (capacity_l, max_age_days, min_rejection, flow_loss_at_capacity) = match kind {
            "sediment" => (1_500.0, 180.0, None, 0.0),
            "carbon" => (3_000.0, 365.0, None, 0.0),
            "reverse_osmosis" => (6_000.0, 730.0, Some(0.85), 0.0),
            "shower" => (8_000.0, 180.0, None, 0.2),
            _ => return None,
        };
        Some(CartridgeSpec {
            capacity_l,
            max_age_days,
            min_rejection,
            flow_loss_at_capacity,
        })
    }

    /// Flow factor at a load (volume through / rated capacity), in (0, 1].
    fn flow_factor(&self, load: f64) -> f64 {
        let l = load.clamp(0.0, 1.2);
        (1.0 - self.flow_loss_at_capacity * l * l).max(0.05)
    }
}

/// Forecaster parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForecastConfig {
    /// The cartridge.
    pub spec: CartridgeSpec,
    /// Offset added to UTC to get local time (day boundaries, weekends), ms.
    pub utc_offset_ms: i64,
    /// EWMA rate of the weekday level and variance (per weekday with use).
    pub weekday_alpha: f64,
    /// EWMA rate of the weekend level and variance (per weekend day with use).
    pub weekend_alpha: f64,
    /// A day with less use than this (litres) is a zero day.
    pub absent_below_l: f64,
    /// A run of at least this many zero days is a trip away; shorter runs are idle days.
    pub trip_min_days: u32,
    /// A run of zero days is a trip only if idle days at home would produce it with at
    /// most this probability (`idle_share^run`): a household that often skips a day
    /// needs a longer run.
    pub trip_max_idle_prob: f64,
    /// Gamma prior of the trip rate: shape (a number of pseudo-trips)...
    pub trip_prior_count: f64,
    /// ...and rate (pseudo-days at home): prior mean rate = count / days.
    pub trip_prior_days: f64,
    /// Prior mean trip length (zero days), and its weight in trips.
    pub trip_length_prior_days: f64,
    /// Weight of [`trip_length_prior_days`](Self::trip_length_prior_days), in trips.
    pub trip_length_prior_weight: f64,
    /// Prior share of idle days at home, and its weight in days.
    pub idle_prior: f64,
    /// Weight of [`idle_prior`](Self::idle_prior), in days.
    pub idle_prior_days: f64,
    /// Relative standard deviation of the meter against the true volume.
    pub meter_rel_sd: f64,
    /// Scale of the Gaussian part of the spread (calibration of the interval).
    pub spread_scale: f64,
    /// Central coverage of the prediction interval, in (0, 1).
    pub interval: f64,
    /// Complete days with use needed before forecasting.
    pub min_days: u32,
    /// Local hours during which water is used (start, end), for intra-day interpolation.
    pub active_hours: (f64, f64),
    /// Forgetting factor per day of the RO rejection regression, in (0, 1].
    pub rejection_forget: f64,
    /// Days of rejection data needed before its trend is used.
    pub rejection_min_days: u32,
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
            trip_min_days: 2,
            trip_max_idle_prob: 0.01,
            trip_prior_count: 0.8,
            trip_prior_days: 60.0,
            trip_length_prior_days: 7.0,
            trip_length_prior_weight: 2.0,
            idle_prior: 0.05,
            idle_prior_days: 10.0,
            meter_rel_sd: 0.0125,
            spread_scale: 1.1,
            interval: 0.8,
            min_days: 5,
            active_hours: (6.0, 23.0),
            rejection_forget: 0.75,
            rejection_min_days: 7,
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
        let s = &self.spec;
        check("capacity_l", s.capacity_l, s.capacity_l > 0.0)?;
        check("max_age_days", s.max_age_days, s.max_age_days > 0.0)?;
        if let Some(r) = s.min_rejection {
            check("min_rejection", r, (0.0..1.0).contains(&r))?;
        }
        check(
            "flow_loss_at_capacity",
            s.flow_loss_at_capacity,
            (0.0..0.9).contains(&s.flow_loss_at_capacity),
        )?;
        for (name, a) in [
            ("weekday_alpha", self.weekday_alpha),
            ("weekend_alpha", self.weekend_alpha),
        ] {
            check(name, a, a > 0.0 && a <= 1.0)?;
        }
        let nonneg = [
            ("absent_below_l", self.absent_below_l),
            ("trip_prior_count", self.trip_prior_count),
            ("trip_length_prior_weight", self.trip_length_prior_weight),
            ("idle_prior_days", self.idle_prior_days),
            ("meter_rel_sd", self.meter_rel_sd),
            ("spread_scale", self.spread_scale),
        ];
        for (name, v) in nonneg {
            check(name, v, v >= 0.0)?;
        }
        check(
            "trip_min_days",
            f64::from(self.trip_min_days),
            self.trip_min_days >= 1,
        )?;
        check(
            "trip_prior_days",
            self.trip_prior_days,
            self.trip_prior_days > 0.0,
        )?;
        check(
            "trip_length_prior_days",
            self.trip_length_prior_days,
            self.trip_length_prior_days >= f64::from(self.trip_min_days),
        )?;
        check(
            "trip_max_idle_prob",
            self.trip_max_idle_prob,
            self.trip_max_idle_prob > 0.0 && self.trip_max_idle_prob <= 1.0,
        )?;
        check("idle_prior", self.idle_prior, (0.0..1.0).contains(&self.idle_prior))?;
        check(
            "interval",
            self.interval,
            self.interval > 0.0 && self.interval < 1.0,
        )?;
        let (a, b) = self.active_hours;
        check("active_hours", a, (0.0..24.0).contains(&a))?;
        check("active_hours", b, b > a && b <= 24.0)?;
        check(
            "rejection_forget",
            self.rejection_forget,
            self.rejection_forget > 0.0 && self.rejection_forget <= 1.0,
        )?;
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

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// Exponentially forgetting least squares of the daily RO rejection on the volume
/// through the membrane (litres): weight, and weighted sums of x, y, x², xy, y².
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Trend {
    w: f64,
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
    yy: f64,
    days: u32,
}

impl Trend {
    fn add(&mut self, x: f64, y: f64, forget: f64) {
        for v in [
            &mut self.w,
            &mut self.x,
            &mut self.y,
            &mut self.xx,
            &mut self.xy,
            &mut self.yy,
        ] {
            *v *= forget;
        }
        self.w += 1.0;
        self.x += x;
        self.y += y;
        self.xx += x * x;
        self.xy += x * y;
        self.yy += y * y;
        self.days += 1;
    }

    /// Volume (litres) at which the fitted line reaches `threshold`, when the slope is
    /// negative with a t-statistic beyond 3.
    fn crossing(&self, threshold: f64) -> Option<f64> {
        if self.w < 3.0 {
            return None;
        }
        let (mx, my) = (self.x / self.w, self.y / self.w);
        let sxx = self.xx / self.w - mx * mx;
        let sxy = self.xy / self.w - mx * my;
        let syy = self.yy / self.w - my * my;
        if sxx <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        let resid = (syy - slope * sxy).max(0.0) * self.w / (self.w - 2.0);
        let se = (resid / (sxx * self.w)).sqrt();
        (slope < 0.0 && slope < -3.0 * se).then(|| mx + (threshold - my) / slope)
    }
}

/// Streaming due-date forecaster of one cartridge slot.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Level and dispersion of days with use (fresh-cartridge volumes), weekday/weekend.
    stats: [DayStats; 2],
    /// Idle days at home (zero runs shorter than a trip).
    idle_days: f64,
    /// Trips seen and their total length (zero days).
    trips: f64,
    trip_days: f64,
    /// Complete zero days in a row up to the last closed day.
    zero_run: u32,
    /// The last day with use (fresh-cartridge volume, weekend), held back one day.
    pending: Option<(f64, bool)>,
    /// Smoothed salt rejection (RO), its count, and the first crossing below the threshold.
    rejection: f64,
    rejection_n: u32,
    exhausted_ms: Option<i64>,
    /// Today's rejection sum and count, and the trend of daily means on the volume.
    rejection_day: (f64, u32),
    rejection_trend: Trend,
}

fn is_weekend(day: i64) -> bool {
    (day + 3).rem_euclid(7) >= 5 // 1970-01-01 was a Thursday; 0 = Monday
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// The forecast distribution of the date a volume is reached: at-home date, Gaussian
/// spread, and trips (negative binomial count, uniform lengths, plus a trip under way).
struct DateDistribution {
    /// At-home date, local ms (fractional).
    t0: f64,
    /// Gaussian sd, days.
    sd_days: f64,
    /// The same without the meter tolerance, days.
    sd_use_days: f64,
    /// Probability of n trips (the last entry: n or more).
    p_trips: [f64; MAX_TRIPS + 1],
    /// Mean and variance of one trip's length, days.
    trip_mean: f64,
    trip_var: f64,
    /// Mean and variance of the remainder of a trip under way, days.
    now_mean: f64,
    now_var: f64,
}

impl DateDistribution {
    fn cdf_with(&self, t: f64, sd_days: f64) -> f64 {
        let mut f = 0.0;
        for (n, p) in self.p_trips.iter().enumerate() {
            if *p < 1e-9 {
                continue;
            }
            let n = n as f64;
            let mean = self.t0 + (n * self.trip_mean + self.now_mean) * DAY_MS as f64;
            let var = sd_days.powi(2) + n * self.trip_var + self.now_var;
            let sd = var.sqrt().max(1e-6) * DAY_MS as f64;
            f += p * normal_cdf((t - mean) / sd);
        }
        f
    }

    /// The point forecast: the median of the use (the meter tolerance is left out, so
    /// it does not push the median into the trips' tail).
    fn point(&self) -> f64 {
        self.quantile_with(0.5, self.sd_use_days)
    }

    fn quantile(&self, q: f64) -> f64 {
        self.quantile_with(q, self.sd_days)
    }

    fn quantile_with(&self, q: f64, sd_days: f64) -> f64 {
        let span = (self.sd_days * 8.0
            + MAX_TRIPS as f64 * (self.trip_mean + 3.0 * self.trip_var.sqrt())
            + self.now_mean
            + 4.0 * self.now_var.sqrt()
            + 1.0)
            * DAY_MS as f64;
        let (mut lo, mut hi) = (self.t0 - span, self.t0 + span);
        for _ in 0..64 {
            let mid = 0.5 * (lo + hi);
            if self.cdf_with(mid, sd_days) < q {
                lo = mid;
            } else {
                hi = mid;
            }
            if hi - lo < 60_000.0 {
                break;
            }
        }
        0.5 * (lo + hi)
    }
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
            idle_days: 0.0,
            trips: 0.0,
            trip_days: 0.0,
            zero_run: 0,
            pending: None,
            rejection: 0.0,
            rejection_n: 0,
            exhausted_ms: None,
            rejection_day: (0.0, 0),
            rejection_trend: Trend::default(),
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
        self.stats[0].n + self.stats[1].n + u32::from(self.pending.is_some())
    }

    /// Trips away seen (runs of at least `trip_min_days` zero days).
    pub fn trips(&self) -> u32 {
        self.trips as u32
    }

    fn local_day(&self, ts: i64) -> i64 {
        (ts + self.cfg.utc_offset_ms).div_euclid(DAY_MS)
    }

    fn load(&self, ml: f64) -> f64 {
        ml / 1000.0 / self.cfg.spec.capacity_l
    }

    fn close_day(&mut self, used_l: f64) {
        if self.cfg.spec.min_rejection.is_some() && self.rejection_day.1 > 0 {
            let (sum, n) = self.rejection_day;
            // The day's mean rejection belongs to the volume at mid-day.
            self.rejection_trend.add(
                (self.last_ml as f64 / 1000.0 - used_l / 2.0).max(0.0),
                sum / f64::from(n),
                self.cfg.rejection_forget,
            );
        }
        self.rejection_day = (0.0, 0);
        if !self.day_whole {
            return;
        }
        if used_l < self.cfg.absent_below_l {
            self.zero_run += 1;
            return;
        }
        // Load at mid-day (the counter is the one of the day's last reading).
        let mid_ml = (self.last_ml as f64 - used_l * 500.0).max(0.0);
        let g = self.cfg.spec.flow_factor(self.load(mid_ml));
        let today = (used_l / g, is_weekend(self.day));
        let trip = self.is_trip(self.zero_run);
        if trip {
            // The days of departure and return were only partly at home: neither
            // enters the level.
            self.trips += 1.0;
            self.trip_days += f64::from(self.zero_run);
            self.pending = None;
        } else {
            self.idle_days += f64::from(self.zero_run);
        }
        self.zero_run = 0;
        if let Some((x, we)) = self.pending.take() {
            self.update_level(x, we);
        }
        if !trip {
            // Held back one day: it may turn out to be a departure.
            self.pending = Some(today);
        }
    }

    fn update_level(&mut self, x: f64, weekend: bool) {
        let alpha = if weekend {
            self.cfg.weekend_alpha
        } else {
            self.cfg.weekday_alpha
        };
        self.stats[usize::from(weekend)].update(x, alpha);
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
        if day != self.day {
            // The day of the previous observation is complete with the flow until then.
            self.close_day(self.flow_l - self.day_start_l);
            self.day_whole = day == self.day + 1;
            if !self.day_whole {
                self.zero_run = 0; // a gap: whatever happened is unknown
            }
            self.day = day;
            self.day_start_l = self.flow_l;
        }
        let reset = replacements != self.last_repl || ml_since_replacement < self.last_ml;
        let added_ml = if reset {
            self.install_ms = Some(ts_ms);
            self.rejection_n = 0;
            self.exhausted_ms = None;
            self.rejection_trend = Trend::default();
            self.rejection_day = (0.0, 0);
            ml_since_replacement
        } else {
            ml_since_replacement - self.last_ml
        };
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
        self.rejection_day.0 += r;
        self.rejection_day.1 += 1;
        if self.rejection_n >= 48 && self.rejection < threshold && self.exhausted_ms.is_none() {
            self.exhausted_ms = Some(ts_ms);
        }
    }

    /// Smoothed salt rejection of the current cartridge, if measured.
    pub fn rejection(&self) -> Option<f64> {
        (self.rejection_n > 0).then_some(self.rejection)
    }

    /// Share of idle days among days at home.
    fn idle_share(&self) -> f64 {
        let home = f64::from(self.days_with_use()) + self.idle_days;
        let k = self.cfg.idle_prior_days;
        if home + k <= 0.0 {
            return 0.0;
        }
        (self.idle_days + k * self.cfg.idle_prior) / (home + k)
    }

    /// Whether a run of `run` zero days is a trip away rather than idle days.
    fn is_trip(&self, run: u32) -> bool {
        run >= self.cfg.trip_min_days
            && self.idle_share().powi(run.min(64) as i32) <= self.cfg.trip_max_idle_prob
    }

    /// Posterior trip rate (shape, rate per day at home).
    fn trip_rate(&self) -> (f64, f64) {
        let home = f64::from(self.days_with_use()) + self.idle_days;
        (
            self.cfg.trip_prior_count + self.trips,
            self.cfg.trip_prior_days + home,
        )
    }

    /// Mean and variance of a trip's length (days of no use): uniform from the minimum
    /// to twice the mean minus it.
    fn trip_length(&self) -> (f64, f64) {
        let w = self.cfg.trip_length_prior_weight;
        let min = f64::from(self.cfg.trip_min_days);
        let mean = if self.trips + w > 0.0 {
            (self.trip_days + w * self.cfg.trip_length_prior_days) / (self.trips + w)
        } else {
            self.cfg.trip_length_prior_days
        };
        let mean = mean.max(min);
        let width = 2.0 * (mean - min);
        (mean, width * width / 12.0)
    }

    /// Expected level of a day with use, fresh cartridge, by day type, with cross fallback.
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

    /// Walks `rem_l` litres forward from local time `local_now` at the expected use of
    /// a day at home (`exp` by day type for a fresh cartridge, times the flow factor at
    /// the load reached): the local time the volume is used up and the days of each type
    /// (fractional) it takes. `used_l` is the current cartridge's volume so far.
    fn walk(&self, local_now: i64, rem_l: f64, used_l: f64, exp: [f64; 2]) -> (f64, [f64; 2]) {
        let spec = &self.cfg.spec;
        let g = |used: f64| spec.flow_factor(used / spec.capacity_l);
        let day_type = |d: i64| usize::from(is_weekend(d));
        let today = local_now.div_euclid(DAY_MS);
        let ms_in_day = local_now.rem_euclid(DAY_MS) as f64;
        let mut rem = rem_l;
        let mut used = used_l;
        let mut m = [0.0f64; 2];
        let t_today = day_type(today);
        let done = self.used_fraction(ms_in_day);
        let e_today = exp[t_today] * g(used);
        let rest_today = e_today * (1.0 - done);
        if rem <= rest_today {
            let f = done + rem / e_today;
            m[t_today] += rem / e_today;
            return (
                (today * DAY_MS) as f64 + self.time_of_fraction(f).max(ms_in_day),
                m,
            );
        }
        rem -= rest_today;
        used += rest_today;
        m[t_today] += 1.0 - done;
        let mut d = today + 1;
        loop {
            // Whole weeks while more than two weeks' use is left (flow factor at mid-week).
            let week = (5.0 * exp[0] + 2.0 * exp[1]) * g(used + 1.75 * (exp[0] + exp[1]));
            if rem > 2.0 * week {
                rem -= week;
                used += week;
                d += 7;
                m[0] += 5.0;
                m[1] += 2.0;
                continue;
            }
            let t = day_type(d);
            let e = exp[t] * g(used);
            if rem <= e * (1.0 + 1e-9) {
                let f = rem / e;
                m[t] += f;
                return ((d * DAY_MS) as f64 + self.time_of_fraction(f), m);
            }
            rem -= e;
            used += e;
            m[t] += 1.0;
            d += 1;
        }
    }

    /// The distribution of the date `rem_l` more litres are used, from `now` (UTC).
    fn distribution(&self, now: i64, rem_l: f64, levels: [f64; 2]) -> DateDistribution {
        let cfg = &self.cfg;
        let off = cfg.utc_offset_ms;
        let local_now = now + off;
        let idle = self.idle_share();
        let exp = [levels[0] * (1.0 - idle), levels[1] * (1.0 - idle)];
        let used_l = self.last_ml as f64 / 1000.0;
        let (t0, m_days) = self.walk(local_now, rem_l, used_l, exp);
        let g_mean = cfg.spec.flow_factor(self.load(self.last_ml as f64 + rem_l * 500.0));
        let daily = (5.0 * exp[0] + 2.0 * exp[1]) / 7.0 * g_mean;

        // Gaussian part, litres²: day-to-day dispersion of the days at home (idle days
        // included), the level's own uncertainty, and the meter tolerance.
        let mut var_l = 0.0;
        for t in 0..2 {
            let st = &self.stats[t];
            let alpha = if t == 1 {
                cfg.weekend_alpha
            } else {
                cfg.weekday_alpha
            };
            let vd = st
                .var()
                .or(self.stats[1 - t].var())
                .unwrap_or((0.5 * levels[t]).powi(2));
            let n_eff = if st.n > 0 { st.n_eff(alpha) } else { 1.0 };
            let g2 = g_mean * g_mean;
            let var_day = ((1.0 - idle) * vd + idle * (1.0 - idle) * levels[t].powi(2)) * g2;
            var_l += m_days[t] * var_day;
            var_l += (m_days[t] * exp[t]).powi(2) * g2 * vd / levels[t].powi(2).max(1e-12) / n_eff;
        }
        let var_meter = (cfg.spec.capacity_l * cfg.meter_rel_sd).powi(2);
        var_l += var_meter;
        let sd_days = cfg.spread_scale * var_l.sqrt() / daily.max(1e-9);
        let sd_use_days = cfg.spread_scale * (var_l - var_meter).max(0.0).sqrt() / daily.max(1e-9);

        // Trips before the at-home date: negative binomial over the days at home.
        let horizon = ((t0 - local_now as f64) / DAY_MS as f64).max(0.0);
        let (shape, rate) = self.trip_rate();
        let mut p_trips = [0.0; MAX_TRIPS + 1];
        let q = horizon / (rate + horizon);
        let mut p = (rate / (rate + horizon)).powf(shape);
        let mut total = 0.0;
        for (n, slot) in p_trips.iter_mut().enumerate().take(MAX_TRIPS) {
            *slot = p;
            total += p;
            p *= (shape + n as f64) / (n as f64 + 1.0) * q;
        }
        p_trips[MAX_TRIPS] = (1.0 - total).max(0.0);
        let (trip_mean, trip_var) = self.trip_length();
        // A trip under way: the remainder of a uniform length beyond the days so far.
        let (now_mean, now_var) = if self.is_trip(self.zero_run) {
            let r = f64::from(self.zero_run);
            let min = f64::from(cfg.trip_min_days);
            let max = 2.0 * trip_mean - min;
            let (a, b) = if r + 1.0 < max {
                (r.max(min), max)
            } else {
                (r, r + 2.0)
            };
            let width = b - a;
            (0.5 * (a + b) - r, width * width / 12.0)
        } else {
            (0.0, 0.0)
        };
        DateDistribution {
            t0: t0 - off as f64,
            sd_days,
            sd_use_days,
            p_trips,
            trip_mean,
            trip_var,
            now_mean,
            now_var,
        }
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
        if levels[0] <= 0.0 || levels[1] <= 0.0 {
            return Err(not_ready);
        }
        let now = now_ms.max(last_ts);
        let idle = self.idle_share();
        let (trip_shape, trip_rate) = self.trip_rate();
        let (trip_mean, _) = self.trip_length();
        let g_now = self.cfg.spec.flow_factor(self.load(self.last_ml as f64));
        let home_daily = (5.0 * levels[0] + 2.0 * levels[1]) / 7.0 * (1.0 - idle) * g_now;
        let daily = home_daily / (1.0 + trip_shape / trip_rate * trip_mean);
        let remaining_l = self.cfg.spec.capacity_l - self.last_ml as f64 / 1000.0;
        let half_out = 0.5 * (1.0 - self.cfg.interval);

        let (by_volume_ms, volume_interval_ms) = if remaining_l <= 0.0 {
            // Already over: back-date the crossing at the mean rate.
            let back = (remaining_l / daily * DAY_MS as f64) as i64;
            (now + back, (now + back, now + back))
        } else {
            let dist = self.distribution(now, remaining_l, levels);
            let due = dist.point() as i64;
            let lo = (dist.quantile(half_out) as i64).max(now.min(due));
            let hi = (dist.quantile(1.0 - half_out) as i64).max(due);
            (due, (lo, hi))
        };

        let by_age_ms = self
            .install_ms
            .map(|i| i + (self.cfg.spec.max_age_days * DAY_MS as f64) as i64);
        let (mut due_ms, mut lo_ms, mut hi_ms, mut reason) = (
            by_volume_ms,
            volume_interval_ms.0,
            volume_interval_ms.1,
            DueReason::Volume,
        );
        // RO: the volume at which the rejection trend crosses its threshold.
        let crossing = self
            .cfg
            .spec
            .min_rejection
            .filter(|_| self.rejection_trend.days >= self.cfg.rejection_min_days)
            .and_then(|threshold| self.rejection_trend.crossing(threshold));
        if let Some(cross_l) = crossing {
            let rem = cross_l - self.last_ml as f64 / 1000.0;
            if rem > 0.0 && rem < remaining_l {
                let dist = self.distribution(now, rem, levels);
                let due = dist.point() as i64;
                if due < due_ms {
                    due_ms = due;
                    lo_ms = (dist.quantile(half_out) as i64).max(now.min(due));
                    hi_ms = (dist.quantile(1.0 - half_out) as i64).max(due);
                    reason = DueReason::Rejection;
                }
            }
        }
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
