//! Filter due-date forecasting: for one device, a streaming forecaster fed the
//! `(ml_since_replacement, replacements)` counters of its cartridge slots at each
//! reading, that learns the household's water use once and predicts for every slot
//! when its cartridge reaches its rated capacity or its maximum age, whichever comes
//! first, with an 80 % (configurable) prediction interval.
//!
//! Shape: a [`DeviceForecaster`] holds the per-*device* usage model (day tracking,
//! weekday/weekend levels, idle days, trips, the zero run, the held-back day) and a
//! small per-*slot* state (counter, replacements, install time, and the RO rejection
//! regression only for slots whose specification has a
//! [`min_rejection`](CartridgeSpec::min_rejection), boxed so other slots do not pay for
//! it). The slots of a device (a purifier's sediment, carbon and RO cartridges) are fed
//! by the same water, so the household's use is learned once. No configuration is
//! stored in the state: the shared, validated [`ForecastParams`] (one
//! [`ForecastConfig`] and a table of [`CartridgeSpec`]s, which a slot names by
//! [`SpecId`]) are passed at call time, so a snapshot (serde) holds state only
//! ([`DeviceForecaster::state_bytes`]: 408 bytes for a purifier without the RO
//! regression, 496 with it, 272 for a shower with its flow-loss regression).
//!
//! Method (event time only, local days shifted by [`ForecastConfig::utc_offset_ms`]):
//! 1. The water through the device is the largest counter increase among the slots of
//!    a reading (a change of `replacements` or a drop of the volume is a new cartridge
//!    in that slot: its increase is its counter since the replacement, its install time
//!    restarts; the other slots still see the whole increase, and the learned usage of
//!    the household is kept).
//! 2. Every completed, wholly observed day gives a daily volume. A day below
//!    [`ForecastConfig::absent_below_l`] is a *zero day*. A run of at least
//!    [`ForecastConfig::trip_min_days`] zero days is a *trip* (the household was away):
//!    it counts one trip and its length; shorter runs are *idle days* at home.
//! 3. Days with use update a bias-corrected EWMA level and variance (stored as `f32`),
//!    separately for weekdays and weekends (the weekly rhythm), with a Huber-style clip
//!    at level + 4 sd. Each day is held back one day so that the partial days of
//!    departure and return around a trip stay out of the level. Volumes are first
//!    divided by the flow factor of the device at that day (timed uses such as showers
//!    draw less water through a loaded cartridge): the product over the slots of
//!    `1 − flow_loss_at_capacity × load²` (water runs through every cartridge in turn,
//!    so their losses compound; 1 for dispensed volumes), so the level is the use with
//!    fresh cartridges and the forecast re-applies the factor along the way, every
//!    slot's load advancing by the volume walked.
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
//! 9. Capacity: a slot's own rating ([`SlotReading::rated_l`], from the device or the
//!    registry) overrides its specification's catalogue figure.
//! 10. Flow loss is learned per device, not assumed: the daily volume is regressed on
//!     the squared load of its flow-limiting cartridges (`y = a (1 − b x)`, forgetting
//!     [`ForecastConfig::flow_loss_forget`] a day) and `b` is shrunk towards the
//!     specification's prior by its standard error ([`ForecastConfig::flow_loss_prior_sd`]).
//! 11. Counter reset vs replacement ([`DeviceForecaster::observe_boot`]): a counter that
//!     drops with a new boot id (or a device-reported loss) and no rise of the
//!     replacement counter, or a replacement counter that goes down, is a reset: the
//!     cartridge keeps its volume, install time and straight-line anchor.
//! 12. Never worse than the straight line: each slot also keeps the straight line (mean
//!     use since its anchor). Every [`ForecastConfig::score_window_days`] both are
//!     scored, causally, on the daily rate their dates implied against the use that
//!     followed; the volume date is their blend weighted by those recent errors
//!     ([`ForecastConfig::blend_power`], shrunk to [`ForecastConfig::blend_prior`]
//!     while few windows are scored). The interval is the model's, moved to the blended
//!     date and scaled per kind by [`CartridgeSpec::interval_scale`] (split-conformal
//!     calibration per model by `eval filter --heldout`).
//!
//! Limits: the forecaster sees the meter, not the true volume. A meter off by `e`
//! moves the date by `capacity × e / daily use` at every horizon (±2 % meters: about
//! 1.6–1.9 days of MAE on the simulated fleet even for a perfect forecast of use), and
//! holidays cannot be foreseen, only priced in (`eval filter` prints that
//! decomposition).
//!
//! An update touches a fixed set of scalars (no allocation, except once when a slot is
//! first seen); a forecast walks the horizon a week at a time.

use statrs::function::erf::erfc;
use thiserror::Error;

use crate::rules::compact::{Align4, Maybe};
use protocol::catalog::DAY_MS;
use protocol::message::CartridgeKind;
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
    /// Prior mean of the share of the water per use lost at rated capacity because the
    /// loaded cartridge lets less flow through (timed uses such as showers; 0 for
    /// dispensed volumes, and then no loss is learned). Each device learns its own
    /// loss from its data, shrunk towards this ([`ForecastConfig::flow_loss_prior_sd`]).
    pub flow_loss_at_capacity: f64,
    /// Scale of the prediction interval's half-widths around the point forecast, for
    /// this kind of cartridge (split-conformal calibration per model: `eval filter`
    /// picks it on held-in worlds so that the interval covers its nominal share).
    #[serde(default = "one")]
    pub interval_scale: f64,
}

fn one() -> f64 {
    1.0
}

impl CartridgeSpec {
    /// Contract names of the standard kinds, in the order of the table of
    /// [`ForecastParams::standard`] (the position is the kind's [`SpecId`]).
    pub const KINDS: [CartridgeKind; 4] = CartridgeKind::ALL;

    /// Default specification of a kind: its rated litres and maximum age from
    /// `protocol::catalog` (a slot's reading may carry its own rating,
    /// [`SlotReading::rated_l`]), the prior of the shower cartridge's flow loss at
    /// capacity (purifier draws are dispensed by volume, so their cartridges' loading
    /// does not change the use), and the interval scales `eval filter` selected on
    /// held-in simulated worlds.
    pub fn for_kind(kind: CartridgeKind) -> CartridgeSpec {
        let (min_rejection, flow_loss_at_capacity, interval_scale) = match kind {
            CartridgeKind::ReverseOsmosis => (Some(0.85), 0.0, 0.91),
            CartridgeKind::Shower => (None, 0.05, 0.99),
            CartridgeKind::Sediment => (None, 0.0, 0.99),
            CartridgeKind::Carbon => (None, 0.0, 0.93),
        };
        CartridgeSpec {
            capacity_l: f64::from(kind.rated_litres()),
            max_age_days: f64::from(kind.max_age_days()),
            min_rejection,
            flow_loss_at_capacity,
            interval_scale,
        }
    }

    /// Checks every value is in range.
    pub fn validate(&self) -> Result<(), ForecastError> {
        check("capacity_l", self.capacity_l, self.capacity_l > 0.0)?;
        check("max_age_days", self.max_age_days, self.max_age_days > 0.0)?;
        if let Some(r) = self.min_rejection {
            check("min_rejection", r, (0.0..1.0).contains(&r))?;
        }
        check(
            "interval_scale",
            self.interval_scale,
            self.interval_scale > 0.0 && self.interval_scale < 20.0,
        )?;
        check(
            "flow_loss_at_capacity",
            self.flow_loss_at_capacity,
            (0.0..0.9).contains(&self.flow_loss_at_capacity),
        )
    }
}

/// `Ok` when `ok` holds and `value` is finite, else the typed error naming it.
fn check(name: &'static str, value: f64, ok: bool) -> Result<(), ForecastError> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(ForecastError::InvalidConfig { name, value })
    }
}

/// Forecaster parameters about the household model and the interval (the cartridges'
/// own figures are [`CartridgeSpec`]s).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForecastConfig {
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
    /// Prior standard deviation of a device's flow loss at capacity around its
    /// specification's [`CartridgeSpec::flow_loss_at_capacity`].
    pub flow_loss_prior_sd: f64,
    /// Forgetting factor per day of the flow-loss regression, in (0, 1].
    pub flow_loss_forget: f64,
    /// History the built-in straight line needs since its anchor, days.
    pub line_min_days: f64,
    /// Days between the checkpoints at which the model and the straight line are
    /// scored against the use that followed (their recent errors).
    pub score_window_days: f64,
    /// EWMA rate of the scored errors (per window).
    pub score_alpha: f64,
    /// Blend weight of the model before any window was scored...
    pub blend_prior: f64,
    /// ...and the weight of that prior, in windows.
    pub blend_prior_windows: f64,
    /// Power of the errors in the blend weights: the model's weight is
    /// `e_line^k / (e_model^k + e_line^k)` (2: inverse squared errors; large: select).
    pub blend_power: f64,
    /// When above 0, the blend's prior weight of the model is not the fixed
    /// [`blend_prior`](Self::blend_prior) but follows how much each estimate has seen:
    /// `K / (K + span)`, with `span` the days the straight line has averaged (since the
    /// cartridge's anchor) and `K` this many days, about the usage model's memory (its
    /// EWMA weighs roughly the last `2 / weekday_alpha` days). Inverse-variance
    /// weighting of two means of the same daily use: the line's variance falls as
    /// `1 / span`, the model's stays that of its window.
    #[serde(default)]
    pub blend_span_days: f64,
}

impl Default for ForecastConfig {
    fn default() -> ForecastConfig {
        ForecastConfig {
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
            flow_loss_prior_sd: 0.08,
            flow_loss_forget: 0.99,
            line_min_days: 3.0,
            score_window_days: 7.0,
            score_alpha: 0.25,
            blend_prior: 0.8,
            blend_prior_windows: 20.0,
            blend_power: 2.0,
            blend_span_days: 0.0,
        }
    }
}

impl ForecastConfig {
    /// Checks every value is in range.
    pub fn validate(&self) -> Result<(), ForecastError> {
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
        check(
            "idle_prior",
            self.idle_prior,
            (0.0..1.0).contains(&self.idle_prior),
        )?;
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
        check(
            "flow_loss_prior_sd",
            self.flow_loss_prior_sd,
            self.flow_loss_prior_sd > 0.0,
        )?;
        check(
            "flow_loss_forget",
            self.flow_loss_forget,
            self.flow_loss_forget > 0.0 && self.flow_loss_forget <= 1.0,
        )?;
        check(
            "line_min_days",
            self.line_min_days,
            self.line_min_days >= 0.0,
        )?;
        check(
            "score_window_days",
            self.score_window_days,
            self.score_window_days >= 1.0,
        )?;
        check(
            "score_alpha",
            self.score_alpha,
            self.score_alpha > 0.0 && self.score_alpha <= 1.0,
        )?;
        check(
            "blend_prior",
            self.blend_prior,
            (0.0..=1.0).contains(&self.blend_prior),
        )?;
        check(
            "blend_prior_windows",
            self.blend_prior_windows,
            self.blend_prior_windows >= 0.0,
        )?;
        check(
            "blend_power",
            self.blend_power,
            self.blend_power > 0.0 && self.blend_power <= 64.0,
        )?;
        check(
            "blend_span_days",
            self.blend_span_days,
            self.blend_span_days >= 0.0,
        )?;
        Ok(())
    }
}

/// Position of a [`CartridgeSpec`] in the table of a [`ForecastParams`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct SpecId(pub u8);

/// The validated parameters shared by every forecaster of a fleet (or of a kind of
/// device): the configuration and the table of cartridge specifications the slots
/// name by [`SpecId`]. Kept once by the caller and passed at each call, so no
/// forecaster stores (or snapshots) a copy.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastParams {
    config: ForecastConfig,
    specs: Vec<CartridgeSpec>,
}

impl ForecastParams {
    /// Parameters from a configuration and a table of specifications (at most 256),
    /// all validated.
    pub fn new(
        config: ForecastConfig,
        specs: Vec<CartridgeSpec>,
    ) -> Result<ForecastParams, ForecastError> {
        config.validate()?;
        if specs.len() > usize::from(u8::MAX) + 1 {
            return Err(ForecastError::TooManySpecs { count: specs.len() });
        }
        for spec in &specs {
            spec.validate()?;
        }
        Ok(ForecastParams { config, specs })
    }

    /// A configuration with the standard kinds' specifications
    /// ([`CartridgeSpec::KINDS`], [`CartridgeSpec::for_kind`]); see
    /// [`kind_id`](Self::kind_id).
    pub fn standard(config: ForecastConfig) -> Result<ForecastParams, ForecastError> {
        let specs = CartridgeSpec::KINDS
            .iter()
            .map(|&kind| CartridgeSpec::for_kind(kind))
            .collect();
        ForecastParams::new(config, specs)
    }

    /// The [`SpecId`] of a standard kind in the table of
    /// [`standard`](Self::standard).
    pub fn kind_id(kind: CartridgeKind) -> SpecId {
        // At most four kinds: the index always fits.
        SpecId(kind.index() as u8)
    }

    /// The configuration.
    pub fn config(&self) -> &ForecastConfig {
        &self.config
    }

    /// A specification of the table.
    pub fn spec(&self, id: SpecId) -> Option<&CartridgeSpec> {
        self.specs.get(usize::from(id.0))
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
    /// More cartridge specifications than a [`SpecId`] can name.
    #[error("{count} cartridge specifications, at most 256")]
    TooManySpecs {
        /// Specifications given.
        count: usize,
    },
    /// A reading names a specification the table does not have.
    #[error("no cartridge specification {spec} in the table")]
    UnknownSpec {
        /// The [`SpecId`] asked for.
        spec: u8,
    },
    /// A slot the forecaster has not seen.
    #[error("no cartridge slot {slot} observed")]
    UnknownSlot {
        /// The slot asked for.
        slot: u8,
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
    /// The usage model's own volume date (before blending with the straight line).
    pub model_ms: i64,
    /// The straight line's volume date (mean use since the cartridge's anchor), if it
    /// has enough history.
    pub line_ms: Option<i64>,
    /// Weight of the usage model in `by_volume_ms` (the rest is the straight line's).
    pub model_weight: f64,
    /// Flow loss at capacity the device has learned (0 when none is modelled).
    pub flow_loss: f64,
}

/// What a reading says about the device's boot, to tell a counter reset (a reboot
/// that lost the counters: the water through the cartridge is kept) from a
/// cartridge replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo {
    /// The message's boot id (incremented at every boot).
    pub boot_id: u32,
    /// Whether the boot lost the counters, when the device says so (reboot reason);
    /// `None` when unknown.
    pub counters_lost: Option<bool>,
}

/// One slot's counters in a reading of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotReading {
    /// The slot.
    pub slot: u8,
    /// Its cartridge's specification in the [`ForecastParams`] table.
    pub spec: SpecId,
    /// Volume through the current cartridge, ml.
    pub ml_since_replacement: u64,
    /// Replacement counter.
    pub replacements: u32,
    /// The cartridge's own rated capacity, litres, when the device or the registry
    /// knows it (it overrides the specification's [`CartridgeSpec::capacity_l`]).
    pub rated_l: Option<u32>,
}

/// Bias-corrected EWMA level and variance of the days with use of one day type
/// (stored in `f32`: litres a day need no more).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct DayStats {
    /// Days with use.
    n: u32,
    /// EWMA numerator and bias-correction weight.
    s: f32,
    w: f32,
    /// EWMA of squared deviations and its weight.
    v: f32,
    vw: f32,
}

impl DayStats {
    fn level(&self) -> Option<f64> {
        (self.n > 0 && self.w > 0.0).then(|| f64::from(self.s) / f64::from(self.w))
    }
    fn var(&self) -> Option<f64> {
        (self.n > 1 && self.vw > 0.0).then(|| f64::from(self.v) / f64::from(self.vw))
    }
    fn update(&mut self, x: f64, alpha: f64) {
        let x = match (self.level(), self.var()) {
            (Some(l), Some(v)) if self.n >= 5 => x.min(l + 4.0 * v.sqrt()),
            _ => x,
        };
        if let Some(l) = self.level() {
            let d = x - l;
            self.v = ((1.0 - alpha) * f64::from(self.v) + alpha * d * d) as f32;
            self.vw = ((1.0 - alpha) * f64::from(self.vw) + alpha) as f32;
        }
        self.s = ((1.0 - alpha) * f64::from(self.s) + alpha * x) as f32;
        self.w = ((1.0 - alpha) * f64::from(self.w) + alpha) as f32;
        self.n = self.n.saturating_add(1);
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

    /// The fitted line: intercept, slope and the slope's standard error (at least four
    /// points and some spread of x).
    fn fit(&self) -> Option<(f64, f64, f64)> {
        if self.w < 4.0 {
            return None;
        }
        let (mx, my) = (self.x / self.w, self.y / self.w);
        let sxx = self.xx / self.w - mx * mx;
        let sxy = self.xy / self.w - mx * my;
        let syy = self.yy / self.w - my * my;
        if sxx <= 1e-9 {
            return None;
        }
        let slope = sxy / sxx;
        let resid = (syy - slope * sxy).max(0.0) * self.w / (self.w - 2.0);
        let se = (resid / (sxx * self.w)).sqrt();
        Some((my - slope * mx, slope, se))
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

/// What a device's household uses: everything the slots share. Serialised as
/// [`UsageModelRepr`]; held with its flags side by side (no padding) and the flow-loss
/// regression boxed, allocated at its first day (only flow-limiting cartridges feed it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "UsageModelRepr", into = "UsageModelRepr")]
struct UsageModel {
    /// Whether a reading was seen (`last_ts` and `day` mean something only then).
    started: bool,
    /// False if the current day is not wholly observed (first day, after a gap).
    day_whole: bool,
    /// Whether `boot_id` holds the boot of a reading.
    boot_known: bool,
    /// Whether the held-back day (`pending_l`) was a weekend day.
    pending_weekend: bool,
    /// Time of the last reading.
    last_ts: i64,
    /// Local day index of the last reading.
    day: i64,
    /// Water through the device so far in that day, ml (saturating).
    day_ml: u32,
    /// Complete zero days in a row up to the last closed day.
    zero_run: u32,
    /// Level and dispersion of days with use (fresh-cartridge volumes), weekday/weekend.
    stats: [DayStats; 2],
    /// Idle days at home (zero runs shorter than a trip).
    idle_days: u32,
    /// Trips seen and their total length (zero days).
    trips: u32,
    trip_days: u32,
    /// The last day with use (fresh-cartridge litres), held back one day; NaN when
    /// there is none (a volume of use is never NaN).
    pending_l: f32,
    /// Boot id of the last reading that had one (when `boot_known`).
    boot_id: u32,
    /// Water through the device since the forecaster started, ml.
    total_ml: u64,
    /// Regression of the daily volume on the squared load (flow loss); `None` until
    /// its first day (as the empty regression).
    flow_fit: Option<Box<Trend>>,
}

impl Default for UsageModel {
    fn default() -> Self {
        UsageModel::from(UsageModelRepr::default())
    }
}

impl From<UsageModelRepr> for UsageModel {
    fn from(r: UsageModelRepr) -> Self {
        UsageModel {
            started: r.started,
            day_whole: r.day_whole,
            boot_known: r.boot_id.is_some(),
            pending_weekend: r.pending.is_some_and(|(_, weekend)| weekend),
            last_ts: r.last_ts,
            day: r.day,
            day_ml: r.day_ml,
            zero_run: r.zero_run,
            stats: r.stats,
            idle_days: r.idle_days,
            trips: r.trips,
            trip_days: r.trip_days,
            pending_l: r.pending.map_or(f32::NAN, |(x, _)| x),
            boot_id: r.boot_id.unwrap_or(0),
            total_ml: r.total_ml,
            flow_fit: (r.flow_fit != Trend::default()).then(|| Box::new(r.flow_fit)),
        }
    }
}

impl From<UsageModel> for UsageModelRepr {
    fn from(u: UsageModel) -> Self {
        UsageModelRepr {
            started: u.started,
            day_whole: u.day_whole,
            last_ts: u.last_ts,
            day: u.day,
            day_ml: u.day_ml,
            zero_run: u.zero_run,
            stats: u.stats,
            idle_days: u.idle_days,
            trips: u.trips,
            trip_days: u.trip_days,
            pending: u.pending(),
            boot_id: u.boot_known.then_some(u.boot_id),
            total_ml: u.total_ml,
            flow_fit: u.flow_fit.as_deref().copied().unwrap_or_default(),
        }
    }
}

/// [`UsageModel`] as serialised (the shape snapshots have always had).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct UsageModelRepr {
    /// Whether a reading was seen (`last_ts` and `day` mean something only then).
    started: bool,
    /// False if the current day is not wholly observed (first day, after a gap).
    day_whole: bool,
    /// Time of the last reading.
    last_ts: i64,
    /// Local day index of the last reading.
    day: i64,
    /// Water through the device so far in that day, ml (saturating).
    day_ml: u32,
    /// Complete zero days in a row up to the last closed day.
    zero_run: u32,
    /// Level and dispersion of days with use (fresh-cartridge volumes), weekday/weekend.
    stats: [DayStats; 2],
    /// Idle days at home (zero runs shorter than a trip).
    idle_days: u32,
    /// Trips seen and their total length (zero days).
    trips: u32,
    trip_days: u32,
    /// The last day with use (fresh-cartridge litres, weekend), held back one day.
    pending: Option<(f32, bool)>,
    /// Boot id of the last reading that had one.
    #[serde(default)]
    boot_id: Option<u32>,
    /// Water through the device since the forecaster started, ml.
    #[serde(default)]
    total_ml: u64,
    /// Regression of the daily volume on the squared load (flow loss).
    #[serde(default)]
    flow_fit: Trend,
}

impl UsageModel {
    /// The day with use held back: fresh-cartridge litres, weekend.
    fn pending(&self) -> Option<(f32, bool)> {
        (!self.pending_l.is_nan()).then_some((self.pending_l, self.pending_weekend))
    }

    fn set_pending(&mut self, pending: Option<(f32, bool)>) {
        (self.pending_l, self.pending_weekend) = pending.unwrap_or((f32::NAN, false));
    }

    /// Complete days with use seen (weekdays + weekends).
    fn days_with_use(&self) -> u32 {
        self.stats[0]
            .n
            .saturating_add(self.stats[1].n)
            .saturating_add(u32::from(self.pending().is_some()))
    }

    /// Share of idle days among days at home.
    fn idle_share(&self, cfg: &ForecastConfig) -> f64 {
        let idle = f64::from(self.idle_days);
        let home = f64::from(self.days_with_use()) + idle;
        let k = cfg.idle_prior_days;
        if home + k <= 0.0 {
            return 0.0;
        }
        (idle + k * cfg.idle_prior) / (home + k)
    }

    /// Whether a run of `run` zero days is a trip away rather than idle days.
    fn is_trip(&self, cfg: &ForecastConfig, run: u32) -> bool {
        run >= cfg.trip_min_days
            && self.idle_share(cfg).powi(run.min(64) as i32) <= cfg.trip_max_idle_prob
    }

    /// Posterior trip rate (shape, rate per day at home).
    fn trip_rate(&self, cfg: &ForecastConfig) -> (f64, f64) {
        let home = f64::from(self.days_with_use()) + f64::from(self.idle_days);
        (
            cfg.trip_prior_count + f64::from(self.trips),
            cfg.trip_prior_days + home,
        )
    }

    /// Mean and variance of a trip's length (days of no use): uniform from the minimum
    /// to twice the mean minus it.
    fn trip_length(&self, cfg: &ForecastConfig) -> (f64, f64) {
        let w = cfg.trip_length_prior_weight;
        let min = f64::from(cfg.trip_min_days);
        let trips = f64::from(self.trips);
        let mean = if trips + w > 0.0 {
            (f64::from(self.trip_days) + w * cfg.trip_length_prior_days) / (trips + w)
        } else {
            cfg.trip_length_prior_days
        };
        let mean = mean.max(min);
        let width = 2.0 * (mean - min);
        (mean, width * width / 12.0)
    }

    /// Expected level of a day with use, fresh cartridges, by day type, with cross fallback.
    fn levels(&self) -> Option<[f64; 2]> {
        match (self.stats[0].level(), self.stats[1].level()) {
            (Some(a), Some(b)) => Some([a, b]),
            (Some(a), None) => Some([a, a]),
            (None, Some(b)) => Some([b, b]),
            (None, None) => None,
        }
    }

    /// Closes the day of the last reading with `used_l` litres through the device and
    /// the device's flow factor `flow` at mid-day.
    fn close_day(&mut self, cfg: &ForecastConfig, used_l: f64, flow: f64) {
        if !self.day_whole {
            return;
        }
        if used_l < cfg.absent_below_l {
            self.zero_run = self.zero_run.saturating_add(1);
            return;
        }
        let today = ((used_l / flow) as f32, is_weekend(self.day));
        let trip = self.is_trip(cfg, self.zero_run);
        if trip {
            // The days of departure and return were only partly at home: neither
            // enters the level.
            self.trips = self.trips.saturating_add(1);
            self.trip_days = self.trip_days.saturating_add(self.zero_run);
            self.set_pending(None);
        } else {
            self.idle_days = self.idle_days.saturating_add(self.zero_run);
        }
        self.zero_run = 0;
        let pending = self.pending();
        self.set_pending(None);
        if let Some((x, weekend)) = pending {
            let alpha = if weekend {
                cfg.weekend_alpha
            } else {
                cfg.weekday_alpha
            };
            self.stats[usize::from(weekend)].update(f64::from(x), alpha);
        }
        if !trip {
            // Held back one day: it may turn out to be a departure.
            self.set_pending(Some(today));
        }
    }
}

/// Salt rejection of an RO membrane: smoothed value, today's readings, and the trend of
/// daily means on the volume through the membrane.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct RejectionState {
    /// Smoothed rejection of the current cartridge and the readings behind it.
    smoothed: f32,
    count: u32,
    /// First time the smoothed rejection fell below the threshold.
    exhausted_ms: Maybe<i64>,
    /// Today's sum and count of readings.
    day_sum: f64,
    day_n: u32,
    /// Daily means on the volume (litres).
    trend: Trend,
}

/// One cartridge slot: what differs between the cartridges fed by the same water.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct SlotState {
    /// Counter of the last reading, ml.
    last_ml: u64,
    /// Install time of the current cartridge, UTC ms; [`NOT_INSTALLED`] when unknown.
    install_ms: i64,
    /// Replacement counter of the last reading.
    last_repl: u32,
    /// The slot number.
    slot: u8,
    /// Its cartridge's specification.
    spec: SpecId,
    /// Only for specifications with a rejection threshold.
    rejection: Option<Box<RejectionState>>,
    /// Volume through the current cartridge before the counter resets seen (reboots
    /// that lost the counters), ml: the cartridge has `offset_ml + last_ml` through it.
    #[serde(default)]
    offset_ml: u64,
    /// The cartridge's own rating, litres (0: the specification's).
    #[serde(default)]
    rated_l: f32,
    /// Anchor of the straight line: time and volume through the cartridge.
    #[serde(default)]
    anchor_ms: i64,
    #[serde(default)]
    anchor_ml: u64,
    /// Recent errors of the model and of the straight line.
    #[serde(default)]
    score: SlotScore,
}

/// The scoring of a slot's model and straight line: the daily rates each implied at
/// the last checkpoint, and the EWMAs of their absolute errors against the use that
/// followed (litres a day).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct SlotScore {
    /// Checkpoint: time, device total then (ml), implied rates (model, line), L/day
    /// (4-byte aligned: the score packs into its slot without padding).
    at_ms: Align4<i64>,
    at_total_ml: Align4<u64>,
    rates: Rates,
    /// EWMA absolute errors (model, line) and windows scored.
    err: (f32, f32),
    n: u16,
}

/// The daily rates (model, straight line) implied at a checkpoint, L/day, in 8 bytes:
/// NaN when there are none (implied rates are never NaN). Serialised as the
/// `Option<(f32, f32)>` it replaced.
#[derive(Debug, Clone, Copy)]
struct Rates([f32; 2]);

impl Rates {
    const NONE: Rates = Rates([f32::NAN; 2]);

    fn get(self) -> Option<(f32, f32)> {
        (!self.0[0].is_nan()).then_some((self.0[0], self.0[1]))
    }

    fn from(rates: Option<(f32, f32)>) -> Rates {
        rates.map_or(Rates::NONE, |(m, l)| Rates([m, l]))
    }
}

impl Default for Rates {
    fn default() -> Self {
        Rates::NONE
    }
}

impl PartialEq for Rates {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl serde::Serialize for Rates {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Rates {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<(f32, f32)>::deserialize(deserializer).map(Rates::from)
    }
}

/// [`SlotState::install_ms`] of a cartridge whose install time is unknown.
const NOT_INSTALLED: i64 = i64::MIN;

impl SlotState {
    fn new(reading: &SlotReading, spec: &CartridgeSpec) -> SlotState {
        SlotState {
            last_ml: reading.ml_since_replacement,
            install_ms: NOT_INSTALLED,
            last_repl: reading.replacements,
            slot: reading.slot,
            spec: reading.spec,
            rejection: spec.min_rejection.map(|_| Box::default()),
            offset_ml: 0,
            rated_l: reading.rated_l.map_or(0.0, |r| r as f32),
            anchor_ms: i64::MIN,
            anchor_ml: reading.ml_since_replacement,
            score: SlotScore::default(),
        }
    }

    /// Volume through the current cartridge, ml (counter resets included).
    fn used_ml(&self) -> u64 {
        self.offset_ml.saturating_add(self.last_ml)
    }

    /// The cartridge's rated capacity, litres.
    fn capacity_l(&self, spec: &CartridgeSpec) -> f64 {
        if self.rated_l > 0.0 {
            f64::from(self.rated_l)
        } else {
            spec.capacity_l
        }
    }

    /// The straight line's rate, ml per ms, when it has `min_days` of history.
    fn line_rate(&self, now: i64, min_days: f64) -> Option<f64> {
        if self.anchor_ms == i64::MIN {
            return None;
        }
        let span = (now - self.anchor_ms) as f64;
        let used = self.used_ml() as f64 - self.anchor_ml as f64;
        (span >= min_days * DAY_MS as f64 && span > 0.0 && used > 0.0).then(|| used / span)
    }

    /// Weight of the model against the straight line, from their recent errors, shrunk
    /// towards the prior weight (fixed, or by the line's span: see
    /// [`ForecastConfig::blend_span_days`]).
    fn model_weight(&self, cfg: &ForecastConfig, now: i64) -> f64 {
        let prior = if cfg.blend_span_days > 0.0 && self.anchor_ms != i64::MIN {
            let span = ((now - self.anchor_ms) as f64 / DAY_MS as f64).max(0.0);
            cfg.blend_span_days / (cfg.blend_span_days + span)
        } else {
            cfg.blend_prior
        };
        let sc = &self.score;
        let n = f64::from(sc.n);
        let data = if sc.n > 0 {
            let k = cfg.blend_power;
            let (em, el) = (f64::from(sc.err.0).max(1e-6), f64::from(sc.err.1).max(1e-6));
            // e_line^k / (e_model^k + e_line^k), computed stably.
            1.0 / (1.0 + (em / el).powf(k))
        } else {
            prior
        };
        let k0 = cfg.blend_prior_windows;
        if n + k0 <= 0.0 {
            return prior;
        }
        (n * data + k0 * prior) / (n + k0)
    }

    fn installed_ms(&self) -> Option<i64> {
        (self.install_ms != NOT_INSTALLED).then_some(self.install_ms)
    }

    /// Heap bytes behind this slot.
    fn heap_bytes(&self) -> usize {
        self.rejection
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<RejectionState>())
    }
}

/// Streaming due-date forecaster of the cartridge slots of one device: the
/// household's usage, learned once, and a small state per slot. Parameters are passed
/// at each call ([`ForecastParams`]); the same ones must be used throughout.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceForecaster {
    usage: UsageModel,
    slots: Box<[SlotState]>,
}

fn is_weekend(day: i64) -> bool {
    (day + 3).rem_euclid(7) >= 5 // 1970-01-01 was a Thursday; 0 = Monday
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn local_day(cfg: &ForecastConfig, ts: i64) -> i64 {
    ts.saturating_add(cfg.utc_offset_ms).div_euclid(DAY_MS)
}

/// Fraction of the local day's use that happens before local time-of-day `ms_in_day`.
fn used_fraction(cfg: &ForecastConfig, ms_in_day: f64) -> f64 {
    let (a, b) = cfg.active_hours;
    ((ms_in_day / HOUR_MS - a) / (b - a)).clamp(0.0, 1.0)
}

/// Local ms-in-day at which a fraction `f` of the day's use is done.
fn time_of_fraction(cfg: &ForecastConfig, f: f64) -> f64 {
    let (a, b) = cfg.active_hours;
    (a + f.clamp(0.0, 1.0) * (b - a)) * HOUR_MS
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

impl DeviceForecaster {
    /// A forecaster with no history.
    pub fn new() -> DeviceForecaster {
        DeviceForecaster::default()
    }

    /// Bytes of state: inline, plus the slots, the RO regressions and the flow-loss
    /// regression on the heap.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<DeviceForecaster>()
            + self.slots.len() * std::mem::size_of::<SlotState>()
            + self.slots.iter().map(SlotState::heap_bytes).sum::<usize>()
            + self
                .usage
                .flow_fit
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Trend>())
    }

    fn slot(&self, slot: u8) -> Result<&SlotState, ForecastError> {
        self.slots
            .iter()
            .find(|s| s.slot == slot)
            .ok_or(ForecastError::UnknownSlot { slot })
    }

    fn slot_mut(&mut self, slot: u8) -> Result<&mut SlotState, ForecastError> {
        self.slots
            .iter_mut()
            .find(|s| s.slot == slot)
            .ok_or(ForecastError::UnknownSlot { slot })
    }

    /// The slots seen, in the order first seen.
    pub fn slots(&self) -> impl Iterator<Item = u8> + '_ {
        self.slots.iter().map(|s| s.slot)
    }

    /// Sets the install time of a slot's current cartridge when known from elsewhere
    /// (otherwise it is known only after an observed replacement).
    pub fn set_installed(&mut self, slot: u8, ts_ms: i64) -> Result<(), ForecastError> {
        self.slot_mut(slot)?.install_ms = ts_ms;
        Ok(())
    }

    /// Install time of a slot's current cartridge, if known.
    pub fn installed_ms(&self, slot: u8) -> Option<i64> {
        self.slot(slot).ok()?.installed_ms()
    }

    /// Replacement counter of a slot's last reading.
    pub fn replacements(&self, slot: u8) -> Option<u32> {
        self.slot(slot).ok().map(|s| s.last_repl)
    }

    /// Time of the newest reading taken (with slots), if any.
    pub fn last_reading_ms(&self) -> Option<i64> {
        self.usage.started.then_some(self.usage.last_ts)
    }

    /// Complete days with use seen (weekdays + weekends).
    pub fn days_with_use(&self) -> u32 {
        self.usage.days_with_use()
    }

    /// Trips away seen (runs of at least `trip_min_days` zero days).
    pub fn trips(&self) -> u32 {
        self.usage.trips
    }

    /// Flow loss at capacity the device has learned: the regression of its daily
    /// volume on the squared load of its flow-limiting cartridges (`y = a (1 − b x)`),
    /// shrunk towards the specifications' prior ([`ForecastConfig::flow_loss_prior_sd`]);
    /// 0 when no slot's specification has a flow loss.
    fn flow_loss(&self, params: &ForecastParams) -> f64 {
        let prior = self
            .slots
            .iter()
            .filter_map(|s| params.spec(s.spec))
            .map(|spec| spec.flow_loss_at_capacity)
            .fold(0.0f64, f64::max);
        if prior <= 0.0 {
            return 0.0;
        }
        let tau2 = params.config().flow_loss_prior_sd.powi(2);
        let Some((a, c, se)) = self.usage.flow_fit.as_deref().and_then(Trend::fit) else {
            return prior;
        };
        if a <= 0.0 || !se.is_finite() || se <= 0.0 {
            return prior;
        }
        let b_hat = -c / a;
        let var = (se / a).powi(2);
        let b = (b_hat / var + prior / tau2) / (1.0 / var + 1.0 / tau2);
        b.clamp(0.0, 0.8)
    }

    /// Squared loads of the flow-limiting slots once `walked_l` more litres went
    /// through them (the sum over the slots whose specification has a flow loss).
    fn load_sq(&self, params: &ForecastParams, walked_l: f64) -> f64 {
        self.slots
            .iter()
            .filter_map(|s| {
                let spec = params.spec(s.spec)?;
                (spec.flow_loss_at_capacity > 0.0).then(|| {
                    let l = ((s.used_ml() as f64 / 1000.0 + walked_l) / s.capacity_l(spec))
                        .clamp(0.0, 1.2);
                    l * l
                })
            })
            .sum()
    }

    /// Flow factor of the device once `walked_l` more litres have gone through every
    /// slot's current cartridge, with the learned loss `b`: `1 − b Σ load²`.
    fn flow_factor_after(&self, params: &ForecastParams, b: f64, walked_l: f64) -> f64 {
        if b <= 0.0 {
            return 1.0;
        }
        (1.0 - b * self.load_sq(params, walked_l)).max(0.05)
    }

    /// Closes the day of the last reading (the slots' counters are still those of it).
    fn close_day(&mut self, params: &ForecastParams) {
        let cfg = params.config();
        let used_l = f64::from(self.usage.day_ml) / 1000.0;
        for s in self.slots.iter_mut() {
            let used_ml = s.used_ml();
            if let Some(r) = s.rejection.as_deref_mut() {
                if r.day_n > 0 {
                    // The day's mean rejection belongs to the volume at mid-day.
                    r.trend.add(
                        (used_ml as f64 / 1000.0 - used_l / 2.0).max(0.0),
                        r.day_sum / f64::from(r.day_n),
                        cfg.rejection_forget,
                    );
                }
                r.day_sum = 0.0;
                r.day_n = 0;
            }
        }
        // Loads at mid-day (the counters are the ones of the day's last reading).
        let b = self.flow_loss(params);
        let x = self.load_sq(params, -used_l / 2.0);
        let flow = if b > 0.0 {
            (1.0 - b * x).max(0.05)
        } else {
            1.0
        };
        if b > 0.0 && self.usage.day_whole && used_l >= cfg.absent_below_l {
            self.usage.flow_fit.get_or_insert_with(Box::default).add(
                x,
                used_l,
                cfg.flow_loss_forget,
            );
        }
        self.usage.close_day(cfg, used_l, flow);
    }

    /// Scores each slot's model and straight line at a checkpoint (the end of a day,
    /// every [`ForecastConfig::score_window_days`]): the daily rate each implied at the
    /// previous checkpoint against the use since, then the rates they imply now.
    fn checkpoint(&mut self, params: &ForecastParams) {
        let cfg = params.config();
        let now = self.usage.last_ts;
        let total = self.usage.total_ml;
        let window_ms = cfg.score_window_days * DAY_MS as f64;
        for i in 0..self.slots.len() {
            let sc = self.slots[i].score;
            let at_ms = sc.at_ms.get();
            let elapsed = (now - at_ms) as f64;
            if at_ms != 0 && elapsed < window_ms {
                continue;
            }
            let mut score = sc;
            if let Some((rm, rl)) = sc.rates.get().filter(|_| at_ms != 0 && elapsed > 0.0) {
                let realized = total.saturating_sub(sc.at_total_ml.get()) as f64
                    / 1000.0
                    / (elapsed / DAY_MS as f64);
                let a = if score.n == 0 { 1.0 } else { cfg.score_alpha };
                let em = (f64::from(rm) - realized).abs();
                let el = (f64::from(rl) - realized).abs();
                score.err.0 = (f64::from(score.err.0) + a * (em - f64::from(score.err.0))) as f32;
                score.err.1 = (f64::from(score.err.1) + a * (el - f64::from(score.err.1))) as f32;
                score.n = score.n.saturating_add(1);
            }
            score.at_ms = Align4::new(now);
            score.at_total_ml = Align4::new(total);
            let slot = self.slots[i].slot;
            score.rates = Rates::from(self.implied_rates(params, slot, now));
            self.slots[i].score = score;
        }
    }

    /// The daily rates (litres) the model's and the straight line's volume dates imply
    /// for a slot now, when both exist and the date is more than a window away.
    fn implied_rates(&self, params: &ForecastParams, slot: u8, now: i64) -> Option<(f32, f32)> {
        let cfg = params.config();
        let s = self.slot(slot).ok()?;
        let spec = params.spec(s.spec)?;
        let remaining_l = s.capacity_l(spec) - s.used_ml() as f64 / 1000.0;
        if remaining_l <= 0.0 {
            return None;
        }
        let line = s.line_rate(now, cfg.line_min_days)? * DAY_MS as f64 / 1000.0;
        let (due, _, _) = self.model_volume_date(params, s, spec, now).ok()?;
        let days = (due - now) as f64 / DAY_MS as f64;
        (days > cfg.score_window_days).then(|| ((remaining_l / days) as f32, line as f32))
    }

    /// Feeds one reading of the device: the counters of its slots at `ts_ms`, without
    /// boot information (see [`observe_boot`](Self::observe_boot)).
    pub fn observe(
        &mut self,
        params: &ForecastParams,
        ts_ms: i64,
        readings: &[SlotReading],
    ) -> Result<(), ForecastError> {
        self.observe_boot(params, ts_ms, None, readings)
    }

    /// Feeds one reading of the device: the counters of its slots at `ts_ms` and, when
    /// known, the boot it was sent in. Readings must come in time order (equal times
    /// are accepted). A slot not seen before starts with this reading (its install
    /// time unknown); a reading without slots says nothing and is ignored.
    ///
    /// A slot's counter that drops (or whose replacement counter changes) is a new
    /// cartridge, unless it is a *counter reset*: the replacement counter went down (a
    /// cumulative counter cannot), or the device rebooted (new boot id) and the
    /// counters dropped without the replacement counter going up, or the device says
    /// the boot lost them. A reset keeps the volume through the cartridge, its install
    /// time and the straight line's anchor.
    pub fn observe_boot(
        &mut self,
        params: &ForecastParams,
        ts_ms: i64,
        boot: Option<BootInfo>,
        readings: &[SlotReading],
    ) -> Result<(), ForecastError> {
        for r in readings {
            params
                .spec(r.spec)
                .ok_or(ForecastError::UnknownSpec { spec: r.spec.0 })?;
        }
        if readings.is_empty() {
            return Ok(());
        }
        let day = local_day(params.config(), ts_ms);
        if !self.usage.started {
            self.usage.started = true;
            self.usage.last_ts = ts_ms;
            self.usage.day = day;
            self.usage.day_whole = false;
            self.usage.day_ml = 0;
        } else {
            if ts_ms < self.usage.last_ts {
                return Err(ForecastError::OutOfOrder {
                    ts_ms,
                    last_ms: self.usage.last_ts,
                });
            }
            if day != self.usage.day {
                // The day of the previous reading is complete with the water until then.
                self.close_day(params);
                self.checkpoint(params);
                self.usage.day_whole = day == self.usage.day + 1;
                if !self.usage.day_whole {
                    self.usage.zero_run = 0; // a gap: whatever happened is unknown
                }
                self.usage.day = day;
                self.usage.day_ml = 0;
            }
        }
        let previous_boot = self.usage.boot_known.then_some(self.usage.boot_id);
        let rebooted = match (boot, previous_boot) {
            (Some(b), Some(prev)) => b.boot_id != prev,
            _ => false,
        };
        let lost = boot.and_then(|b| b.counters_lost);
        // The water through the device: the largest increase among the slots (a slot
        // whose cartridge was just replaced only counts since the replacement).
        let mut added_ml = 0u64;
        for r in readings {
            let Some(spec) = params.spec(r.spec) else {
                continue; // checked above
            };
            let Some(s) = self.slots.iter_mut().find(|s| s.slot == r.slot) else {
                let mut slots = std::mem::take(&mut self.slots).into_vec();
                let mut new = SlotState::new(r, spec);
                new.anchor_ms = ts_ms;
                slots.push(new);
                self.slots = slots.into_boxed_slice();
                continue;
            };
            if let Some(rated) = r.rated_l.filter(|x| *x > 0) {
                s.rated_l = rated as f32;
            }
            let dropped = r.ml_since_replacement < s.last_ml;
            let changed = dropped || r.replacements != s.last_repl || r.spec != s.spec;
            let counter_reset = changed
                && r.spec == s.spec
                && (r.replacements < s.last_repl
                    || (r.replacements == s.last_repl
                        && dropped
                        && (lost == Some(true) || (rebooted && lost != Some(false)))));
            let added = if counter_reset {
                // The counters restarted: the cartridge keeps what went through it. A
                // counter well above half its last value only lost its unsaved tail.
                if r.ml_since_replacement.saturating_mul(2) < s.last_ml {
                    s.offset_ml = s.offset_ml.saturating_add(s.last_ml);
                    r.ml_since_replacement
                } else {
                    s.offset_ml = s
                        .offset_ml
                        .saturating_add(s.last_ml - r.ml_since_replacement);
                    0
                }
            } else if changed {
                s.install_ms = ts_ms;
                s.spec = r.spec;
                s.offset_ml = 0;
                s.rated_l = r.rated_l.map_or(0.0, |x| x as f32);
                s.anchor_ms = ts_ms;
                s.anchor_ml = r.ml_since_replacement;
                s.score.rates = Rates::NONE;
                s.rejection = spec.min_rejection.map(|_| Box::default());
                r.ml_since_replacement
            } else {
                r.ml_since_replacement - s.last_ml
            };
            s.last_ml = r.ml_since_replacement;
            s.last_repl = r.replacements;
            added_ml = added_ml.max(added);
        }
        if let Some(b) = boot {
            self.usage.boot_id = b.boot_id;
            self.usage.boot_known = true;
        }
        self.usage.day_ml = self
            .usage
            .day_ml
            .saturating_add(u32::try_from(added_ml).unwrap_or(u32::MAX));
        self.usage.total_ml = self.usage.total_ml.saturating_add(added_ml);
        self.usage.last_ts = ts_ms;
        Ok(())
    }

    /// Feeds the water quality of a slot's RO membrane (purifier `tds_in_ppm`,
    /// `tds_out_ppm`), after the [`observe`](Self::observe) of the same reading.
    /// Ignored for an unknown slot, a slot without a rejection threshold, or an inlet
    /// below 20 ppm.
    pub fn observe_quality(
        &mut self,
        params: &ForecastParams,
        ts_ms: i64,
        slot: u8,
        tds_in_ppm: u16,
        tds_out_ppm: u16,
    ) {
        let Ok(s) = self.slot_mut(slot) else {
            return;
        };
        let Some(threshold) = params.spec(s.spec).and_then(|spec| spec.min_rejection) else {
            return;
        };
        let Some(state) = s.rejection.as_deref_mut() else {
            return;
        };
        if tds_in_ppm < 20 {
            return;
        }
        let r = 1.0 - f64::from(tds_out_ppm) / f64::from(tds_in_ppm);
        state.count = state.count.saturating_add(1);
        let a = (1.0 / f64::from(state.count)).max(0.02);
        let smoothed = f64::from(state.smoothed) + a * (r - f64::from(state.smoothed));
        state.smoothed = smoothed as f32;
        state.day_sum += r;
        state.day_n = state.day_n.saturating_add(1);
        if state.count >= 48 && smoothed < threshold && state.exhausted_ms.get().is_none() {
            state.exhausted_ms.replace(ts_ms);
        }
    }

    /// Smoothed salt rejection of a slot's current cartridge, if measured.
    pub fn rejection(&self, slot: u8) -> Option<f64> {
        let r = self.slot(slot).ok()?.rejection.as_deref()?;
        (r.count > 0).then_some(f64::from(r.smoothed))
    }

    /// Walks `rem_l` litres forward from local time `local_now` at the expected use of
    /// a day at home (`exp` by day type with fresh cartridges, times the device's flow
    /// factor `g(walked litres)`): the local time the volume is used up and the days of
    /// each type (fractional) it takes.
    fn walk(
        cfg: &ForecastConfig,
        local_now: i64,
        rem_l: f64,
        exp: [f64; 2],
        g: impl Fn(f64) -> f64,
    ) -> (f64, [f64; 2]) {
        let day_type = |d: i64| usize::from(is_weekend(d));
        let today = local_now.div_euclid(DAY_MS);
        let ms_in_day = local_now.rem_euclid(DAY_MS) as f64;
        let mut rem = rem_l;
        let mut walked = 0.0;
        let mut m = [0.0f64; 2];
        let t_today = day_type(today);
        let done = used_fraction(cfg, ms_in_day);
        let e_today = exp[t_today] * g(walked);
        let rest_today = e_today * (1.0 - done);
        if rem <= rest_today {
            let f = done + rem / e_today;
            m[t_today] += rem / e_today;
            return (
                (today * DAY_MS) as f64 + time_of_fraction(cfg, f).max(ms_in_day),
                m,
            );
        }
        rem -= rest_today;
        walked += rest_today;
        m[t_today] += 1.0 - done;
        let mut d = today + 1;
        loop {
            // Whole weeks while more than two weeks' use is left (flow factor at mid-week).
            let week = (5.0 * exp[0] + 2.0 * exp[1]) * g(walked + 1.75 * (exp[0] + exp[1]));
            if rem > 2.0 * week {
                rem -= week;
                walked += week;
                d += 7;
                m[0] += 5.0;
                m[1] += 2.0;
                continue;
            }
            let t = day_type(d);
            let e = exp[t] * g(walked);
            if rem <= e * (1.0 + 1e-9) {
                let f = rem / e;
                m[t] += f;
                return ((d * DAY_MS) as f64 + time_of_fraction(cfg, f), m);
            }
            rem -= e;
            walked += e;
            m[t] += 1.0;
            d += 1;
        }
    }

    /// The distribution of the date `rem_l` more litres are used, from `now` (UTC).
    #[allow(clippy::too_many_arguments)]
    fn distribution(
        &self,
        params: &ForecastParams,
        cap_l: f64,
        b: f64,
        now: i64,
        rem_l: f64,
        levels: [f64; 2],
    ) -> DateDistribution {
        let cfg = params.config();
        let usage = &self.usage;
        let off = cfg.utc_offset_ms;
        let local_now = now + off;
        let idle = usage.idle_share(cfg);
        let exp = [levels[0] * (1.0 - idle), levels[1] * (1.0 - idle)];
        let (t0, m_days) = Self::walk(cfg, local_now, rem_l, exp, |walked| {
            self.flow_factor_after(params, b, walked)
        });
        let g_mean = self.flow_factor_after(params, b, rem_l * 0.5);
        let daily = (5.0 * exp[0] + 2.0 * exp[1]) / 7.0 * g_mean;

        // Gaussian part, litres²: day-to-day dispersion of the days at home (idle days
        // included), the level's own uncertainty, and the meter tolerance.
        let mut var_l = 0.0;
        for t in 0..2 {
            let st = &usage.stats[t];
            let alpha = if t == 1 {
                cfg.weekend_alpha
            } else {
                cfg.weekday_alpha
            };
            let vd = st
                .var()
                .or(usage.stats[1 - t].var())
                .unwrap_or((0.5 * levels[t]).powi(2));
            let n_eff = if st.n > 0 { st.n_eff(alpha) } else { 1.0 };
            let g2 = g_mean * g_mean;
            let var_day = ((1.0 - idle) * vd + idle * (1.0 - idle) * levels[t].powi(2)) * g2;
            var_l += m_days[t] * var_day;
            var_l += (m_days[t] * exp[t]).powi(2) * g2 * vd / levels[t].powi(2).max(1e-12) / n_eff;
        }
        let var_meter = (cap_l * cfg.meter_rel_sd).powi(2);
        var_l += var_meter;
        let sd_days = cfg.spread_scale * var_l.sqrt() / daily.max(1e-9);
        let sd_use_days = cfg.spread_scale * (var_l - var_meter).max(0.0).sqrt() / daily.max(1e-9);

        // Trips before the at-home date: negative binomial over the days at home.
        let horizon = ((t0 - local_now as f64) / DAY_MS as f64).max(0.0);
        let (shape, rate) = usage.trip_rate(cfg);
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
        let (trip_mean, trip_var) = usage.trip_length(cfg);
        // A trip under way: the remainder of a uniform length beyond the days so far.
        let (now_mean, now_var) = if usage.is_trip(cfg, usage.zero_run) {
            let r = f64::from(usage.zero_run);
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

    /// The usage model's readiness and levels: `(levels, now)` or why not.
    fn ready(
        &self,
        params: &ForecastParams,
        now_ms: i64,
    ) -> Result<([f64; 2], i64), ForecastError> {
        let cfg = params.config();
        let usage = &self.usage;
        let days = usage.days_with_use();
        let not_ready = ForecastError::NotReady {
            days,
            needed: cfg.min_days,
        };
        if !usage.started || days < cfg.min_days.max(1) {
            return Err(not_ready);
        }
        let Some(levels) = usage.levels() else {
            return Err(not_ready);
        };
        if levels[0] <= 0.0 || levels[1] <= 0.0 {
            return Err(not_ready);
        }
        Ok((levels, now_ms.max(usage.last_ts)))
    }

    /// Mean daily use now (presence and the current flow factor included), litres.
    fn daily_now(&self, params: &ForecastParams, levels: [f64; 2], b: f64) -> f64 {
        let cfg = params.config();
        let idle = self.usage.idle_share(cfg);
        let (trip_shape, trip_rate) = self.usage.trip_rate(cfg);
        let (trip_mean, _) = self.usage.trip_length(cfg);
        let g_now = self.flow_factor_after(params, b, 0.0);
        let home_daily = (5.0 * levels[0] + 2.0 * levels[1]) / 7.0 * (1.0 - idle) * g_now;
        home_daily / (1.0 + trip_shape / trip_rate * trip_mean)
    }

    /// The usage model's volume date of a slot and its interval (unscaled), as of `now`.
    fn model_volume_date(
        &self,
        params: &ForecastParams,
        s: &SlotState,
        spec: &CartridgeSpec,
        now_ms: i64,
    ) -> Result<(i64, i64, i64), ForecastError> {
        let (levels, now) = self.ready(params, now_ms)?;
        let cfg = params.config();
        let b = self.flow_loss(params);
        let cap_l = s.capacity_l(spec);
        let remaining_l = cap_l - s.used_ml() as f64 / 1000.0;
        if remaining_l <= 0.0 {
            let daily = self.daily_now(params, levels, b);
            let back = now.saturating_add((remaining_l / daily * DAY_MS as f64) as i64);
            return Ok((back, back, back));
        }
        let half_out = 0.5 * (1.0 - cfg.interval);
        let dist = self.distribution(params, cap_l, b, now, remaining_l, levels);
        let due = dist.point() as i64;
        let lo = (dist.quantile(half_out) as i64).max(now.min(due));
        let hi = (dist.quantile(1.0 - half_out) as i64).max(due);
        Ok((due, lo, hi))
    }

    /// The forecast of a slot as of `now_ms` (not before the last reading's time,
    /// which is used if `now_ms` is earlier).
    ///
    /// The volume date is a blend of the usage model's date and the straight line's
    /// (the mean use since the cartridge's anchor), weighted by their recent errors
    /// (see [`ForecastConfig::blend_power`]); the interval is the model's, moved to
    /// the blended date and scaled by [`CartridgeSpec::interval_scale`].
    pub fn forecast(
        &self,
        params: &ForecastParams,
        slot: u8,
        now_ms: i64,
    ) -> Result<Forecast, ForecastError> {
        let cfg = params.config();
        let s = self.slot(slot)?;
        let spec = params
            .spec(s.spec)
            .ok_or(ForecastError::UnknownSpec { spec: s.spec.0 })?;
        let (levels, now) = self.ready(params, now_ms)?;
        let b = self.flow_loss(params);
        let daily = self.daily_now(params, levels, b);
        let cap_l = s.capacity_l(spec);
        let used_l = s.used_ml() as f64 / 1000.0;
        let remaining_l = cap_l - used_l;
        let half_out = 0.5 * (1.0 - cfg.interval);

        let (model_ms, m_lo, m_hi) = self.model_volume_date(params, s, spec, now)?;
        let line_ms = s.line_rate(now, cfg.line_min_days).map(|rate| {
            let t = now as f64 + (remaining_l * 1000.0 / rate);
            t.clamp(i64::MIN as f64 / 2.0, i64::MAX as f64 / 2.0) as i64
        });
        let model_weight = if line_ms.is_some() {
            s.model_weight(cfg, now)
        } else {
            1.0
        };
        let (by_volume_ms, volume_interval_ms) = match line_ms {
            Some(l) if remaining_l > 0.0 => {
                let due = (model_weight * model_ms as f64 + (1.0 - model_weight) * l as f64) as i64;
                let k = spec.interval_scale;
                let lo = due - ((model_ms - m_lo) as f64 * k) as i64;
                let hi = due + ((m_hi - model_ms) as f64 * k) as i64;
                (due, (lo.max(now.min(due)), hi.max(due)))
            }
            _ if remaining_l > 0.0 => {
                let k = spec.interval_scale;
                let lo = model_ms - ((model_ms - m_lo) as f64 * k) as i64;
                let hi = model_ms + ((m_hi - model_ms) as f64 * k) as i64;
                (model_ms, (lo.max(now.min(model_ms)), hi.max(model_ms)))
            }
            _ => (model_ms, (m_lo, m_hi)),
        };

        let by_age_ms = s
            .installed_ms()
            .map(|i| i.saturating_add((spec.max_age_days * DAY_MS as f64) as i64));
        let (mut due_ms, mut lo_ms, mut hi_ms, mut reason) = (
            by_volume_ms,
            volume_interval_ms.0,
            volume_interval_ms.1,
            DueReason::Volume,
        );
        let rejection = s.rejection.as_deref();
        // RO: the volume at which the rejection trend crosses its threshold.
        let crossing = spec
            .min_rejection
            .zip(rejection)
            .filter(|(_, r)| r.trend.days >= cfg.rejection_min_days)
            .and_then(|(threshold, r)| r.trend.crossing(threshold));
        if let Some(cross_l) = crossing {
            let rem = cross_l - used_l;
            if rem > 0.0 && rem < remaining_l {
                let dist = self.distribution(params, cap_l, b, now, rem, levels);
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
        if let Some(x) = rejection.and_then(|r| r.exhausted_ms.get()) {
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
            model_ms,
            line_ms,
            model_weight,
            flow_loss: b,
        })
    }

    /// Volume through a slot's current cartridge, litres (counter resets included).
    pub fn used_l(&self, slot: u8) -> Option<f64> {
        self.slot(slot).ok().map(|s| s.used_ml() as f64 / 1000.0)
    }

    /// The recent absolute errors (model, straight line) of a slot's implied daily
    /// rates, litres a day, and the windows scored.
    pub fn recent_errors(&self, slot: u8) -> Option<(f64, f64, u16)> {
        let s = self.slot(slot).ok()?;
        Some((
            f64::from(s.score.err.0),
            f64::from(s.score.err.1),
            s.score.n,
        ))
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
