//! [`RulesConfig`]: every threshold of the fault rules, with defaults that suit the
//! fixtures of contract v1 (tuned on the fleet simulator, see `eval fault`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use protocol::catalog::{DAY_MS, HOUR_MS, MINUTE_MS};

/// Thresholds of the abnormal-usage rule for one resource: a day's total is abnormal
/// when it exceeds **all three** of `median + k·σ`, `min_ratio × median` and
/// `median + min_excess`, where median and σ (1.4826 × MAD) are those of the device's
/// recent daily totals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageThresholds {
    /// Robust z-score a day must exceed.
    pub k: f32,
    /// Ratio to the median daily total a day must exceed.
    pub min_ratio: f32,
    /// Absolute excess over the median a day must exceed (ml for water, Wh for energy).
    pub min_excess: f32,
    /// σ is at least this fraction of the median (a very regular home is not made
    /// infinitely sensitive).
    pub sigma_floor_ratio: f32,
    /// Days judged together (1: a day over the threshold raises; 2: the previous whole
    /// day and today together must exceed twice the median by the two-day margin, today
    /// by at least a quarter of it, so a single odd day raises only when it alone is
    /// that far off).
    pub persist_days: u8,
    /// Robust z-score the *sum* of two days must exceed, against its own spread σ·√2
    /// (days vary independently, so a sum of two spreads by √2, not 2, times a day's σ).
    /// `None`: `k·√2`, i.e. twice the one-day margin `k·σ`. The two-day margin is
    /// `max(sum_k·σ·√2, 2·(min_ratio − 1)·median, 2·min_excess)`.
    #[serde(default)]
    pub sum_k: Option<f32>,
    /// Uses (telemetry intervals in which a usage session ended) the judged days must
    /// have together, as a ratio to the household's median daily uses times the days
    /// judged (`None`: not required). Guests use a fixture more often; more water per
    /// use (a new filter cartridge restoring the flow, longer showers) is no guest.
    #[serde(default)]
    pub min_use_ratio: Option<f32>,
    /// With `persist_days = 2`, a day alone is also abnormal, within the day, once its
    /// running total exceeds `median + one_day_k·σ` (and the `min_ratio` and
    /// `min_excess` floors) with the uses `min_use_ratio` asks of one day (`None`: only
    /// the two-day test).
    #[serde(default)]
    pub one_day_k: Option<f32>,
    /// Judge from this many days of history already, before `usage_min_days` of them
    /// (`None`: only from `usage_min_days`; values under 4 count as 4). Until the history
    /// is `usage_min_days` long, every margin over the median is widened to the
    /// prediction margin that a normal household crosses as rarely as it crosses `k` at
    /// `usage_min_days` days (Student's t for σ from a MAD, the median's sampling
    /// variance; see [`super::usage::small_sample_k`]), so guests in a household's first
    /// fortnight can be found and erratic first days are not taken for guests.
    #[serde(default)]
    pub cold_start_days: Option<u8>,
}

/// Thresholds and timings of the fault rules. Times are milliseconds of device time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Telemetry interval assumed until the device's own is learnt, ms.
    pub default_report_interval_ms: i64,
    /// A device is silent after this many of its telemetry intervals without a message…
    pub silent_after_intervals: f32,
    /// …but never before this long, ms.
    pub silent_min_ms: i64,
    /// …nor before this long while fewer than three reporting intervals are learnt, ms.
    pub silent_unlearnt_ms: i64,
    /// A fixture with no usage session for this long is unused, ms.
    pub unused_after_ms: i64,
    /// Unexplained flow (metered water not accounted for by sessions) at or above this
    /// rate counts toward a leak, ml/min.
    pub leak_min_ml_per_min: f32,
    /// Blocks of device time whose lowest water balance the leak rule compares (at
    /// least four reporting intervals), ms.
    pub leak_block_ms: i64,
    /// Unexplained flow lasting this long raises a leak, ms.
    pub leak_raise_ms: i64,
    /// Dry spans lasting this long clear it (a leak back every night stays one), ms.
    pub leak_clear_ms: i64,
    /// Telemetry intervals longer than this (the device was offline, messages were
    /// dropped) are not used by the flow balance and the daily totals, ms.
    pub max_telemetry_gap_ms: i64,
    /// A wash or flush is long when its duration exceeds `median + k·σ` of the device's
    /// recent ones…
    pub long_session_k: f32,
    /// …and `min_ratio × median`…
    pub long_session_min_ratio: f32,
    /// …and `median + min_extra_s`, seconds.
    pub long_session_min_extra_s: f32,
    /// σ of the long-session rule is at least this fraction of the median (durations
    /// vary in proportion to their length).
    pub long_session_sigma_floor_ratio: f32,
    /// Sessions needed before the long-session rule judges.
    pub long_session_min_samples: u8,
    /// Inlet clog: the median flow of the last sessions below this fraction of the
    /// device's baseline flow raises it (at fine pressure)…
    pub clog_raise_ratio: f32,
    /// …and at or above this fraction clears it.
    pub clog_clear_ratio: f32,
    /// Sessions shorter than this do not measure flow, seconds.
    pub clog_min_session_s: u32,
    /// Baseline flow samples (one a day) needed before the clog rule judges.
    pub clog_min_baseline: u8,
    /// Pressure is "fine" for the clog rule at or above this, kPa…
    pub clog_min_pressure_kpa: f32,
    /// …and at or above this fraction of the device's usual pressure.
    pub clog_min_pressure_ratio: f32,
    /// Telemetry pressure below this raises low inlet pressure, kPa…
    pub low_pressure_raise_kpa: f32,
    /// …and at or above this clears it.
    pub low_pressure_clear_kpa: f32,
    /// Consecutive telemetry readings needed for either.
    pub low_pressure_readings: u8,
    /// Shower temperature drift: the shift that best lays the last sessions onto the
    /// baseline sessions (every user's cluster at once) beyond this is a drifting sensor,
    /// and a shifted session within this of a baseline session is explained by it (°C)…
    pub drift_min_c: f32,
    /// …and further than this many σ, is a drifting temperature sensor.
    pub drift_k: f32,
    /// Baseline temperature samples needed before the drift rule judges.
    pub drift_min_baseline: u8,
    /// Daily totals needed before the abnormal-usage rule judges.
    pub usage_min_days: u8,
    /// Abnormal daily water use.
    pub usage_water: UsageThresholds,
    /// Abnormal daily energy use (toilet heater).
    pub usage_energy: UsageThresholds,
    /// After a reboot, a device fault that the new boot has not raised again within
    /// this long is taken as cleared, ms.
    pub reboot_grace_ms: i64,
    /// Heater (toilet): a block whose warmest tank reading is more than this below the
    /// device's learnt level (°C)…
    pub heater_drop_c: f32,
    /// …while the heater used at least this many times its learnt energy rate is cold
    /// (see [`super::heater`]).
    pub heater_min_energy_ratio: f32,
    /// Length of the heater rule's blocks of device time, ms.
    pub heater_block_ms: i64,
    /// Cold blocks in a row that raise a heater fault.
    pub heater_raise_blocks: u8,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            default_report_interval_ms: 15 * MINUTE_MS,
            silent_after_intervals: 3.0,
            silent_min_ms: 30 * MINUTE_MS,
            silent_unlearnt_ms: 3 * HOUR_MS,
            unused_after_ms: 7 * DAY_MS,
            leak_min_ml_per_min: 2.0,
            leak_block_ms: HOUR_MS,
            leak_raise_ms: 3 * HOUR_MS,
            leak_clear_ms: 36 * HOUR_MS,
            max_telemetry_gap_ms: 2 * HOUR_MS,
            long_session_k: 8.0,
            long_session_min_ratio: 4.0,
            long_session_min_extra_s: 60.0,
            long_session_sigma_floor_ratio: 0.15,
            long_session_min_samples: 10,
            clog_raise_ratio: 0.7,
            clog_clear_ratio: 0.85,
            clog_min_session_s: 10,
            clog_min_baseline: 3,
            clog_min_pressure_kpa: 150.0,
            clog_min_pressure_ratio: 0.75,
            low_pressure_raise_kpa: 100.0,
            low_pressure_clear_kpa: 130.0,
            low_pressure_readings: 2,
            drift_min_c: 1.2,
            drift_k: 8.0,
            drift_min_baseline: 16,
            usage_min_days: 10,
            usage_water: UsageThresholds {
                k: 4.0,
                min_ratio: 2.5,
                min_excess: 2_000.0,
                sigma_floor_ratio: 0.05,
                persist_days: 2,
                sum_k: Some(4.25),
                min_use_ratio: Some(1.5),
                one_day_k: None,
                cold_start_days: Some(4),
            },
            usage_energy: UsageThresholds {
                k: 8.0,
                min_ratio: 1.5,
                min_excess: 100.0,
                sigma_floor_ratio: 0.03,
                persist_days: 2,
                sum_k: None,
                min_use_ratio: None,
                one_day_k: None,
                cold_start_days: None,
            },
            reboot_grace_ms: HOUR_MS,
            heater_drop_c: 4.0,
            heater_min_energy_ratio: 2.0,
            heater_block_ms: HOUR_MS,
            heater_raise_blocks: 2,
        }
    }
}

/// A [`RulesConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RulesConfigError {
    /// A duration, count or threshold that must be positive is not.
    #[error("rules config: `{name}` must be positive (got {value}); use the default if unsure")]
    NotPositive {
        /// The field.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// A clear threshold on the wrong side of its raise threshold (the finding would flap).
    #[error("rules config: `{clear}` ({clear_value}) must be beyond `{raise}` ({raise_value}) so that a finding cannot flap")]
    NoHysteresis {
        /// The raise threshold's field.
        raise: &'static str,
        /// Its value.
        raise_value: f64,
        /// The clear threshold's field.
        clear: &'static str,
        /// Its value.
        clear_value: f64,
    },
}

impl RulesConfig {
    /// Milliseconds in a day (day boundaries of the daily totals are UTC midnights).
    pub const DAY_MS: i64 = DAY_MS;

    /// Checks that every threshold can work (positive durations and counts, clear
    /// thresholds beyond raise thresholds). The rules run with any values; this is for
    /// a configuration read from a file.
    pub fn validate(&self) -> Result<(), RulesConfigError> {
        let positive: [(&'static str, f64); 26] = [
            (
                "default_report_interval_ms",
                self.default_report_interval_ms as f64,
            ),
            (
                "silent_after_intervals",
                f64::from(self.silent_after_intervals),
            ),
            ("unused_after_ms", self.unused_after_ms as f64),
            ("silent_unlearnt_ms", self.silent_unlearnt_ms as f64),
            ("leak_min_ml_per_min", f64::from(self.leak_min_ml_per_min)),
            ("leak_block_ms", self.leak_block_ms as f64),
            ("leak_raise_ms", self.leak_raise_ms as f64),
            ("leak_clear_ms", self.leak_clear_ms as f64),
            ("max_telemetry_gap_ms", self.max_telemetry_gap_ms as f64),
            (
                "long_session_min_ratio",
                f64::from(self.long_session_min_ratio),
            ),
            (
                "long_session_min_samples",
                f64::from(self.long_session_min_samples),
            ),
            (
                "low_pressure_readings",
                f64::from(self.low_pressure_readings),
            ),
            ("drift_min_c", f64::from(self.drift_min_c)),
            ("usage_min_days", f64::from(self.usage_min_days)),
            (
                "usage_water.min_ratio",
                f64::from(self.usage_water.min_ratio),
            ),
            (
                "usage_energy.min_ratio",
                f64::from(self.usage_energy.min_ratio),
            ),
            (
                "usage_water.sum_k",
                f64::from(self.usage_water.sum_k.unwrap_or(1.0)),
            ),
            (
                "usage_energy.sum_k",
                f64::from(self.usage_energy.sum_k.unwrap_or(1.0)),
            ),
            (
                "usage_water.min_use_ratio",
                f64::from(self.usage_water.min_use_ratio.unwrap_or(1.0)),
            ),
            (
                "usage_energy.min_use_ratio",
                f64::from(self.usage_energy.min_use_ratio.unwrap_or(1.0)),
            ),
            (
                "usage_water.one_day_k",
                f64::from(self.usage_water.one_day_k.unwrap_or(1.0)),
            ),
            (
                "usage_energy.one_day_k",
                f64::from(self.usage_energy.one_day_k.unwrap_or(1.0)),
            ),
            ("heater_drop_c", f64::from(self.heater_drop_c)),
            (
                "heater_min_energy_ratio",
                f64::from(self.heater_min_energy_ratio),
            ),
            ("heater_block_ms", self.heater_block_ms as f64),
            ("heater_raise_blocks", f64::from(self.heater_raise_blocks)),
        ];
        for (name, value) in positive {
            // NaN is not positive either.
            if value.is_nan() || value <= 0.0 {
                return Err(RulesConfigError::NotPositive { name, value });
            }
        }
        let pairs = [
            (
                "clog_raise_ratio",
                self.clog_raise_ratio,
                "clog_clear_ratio",
                self.clog_clear_ratio,
            ),
            (
                "low_pressure_raise_kpa",
                self.low_pressure_raise_kpa,
                "low_pressure_clear_kpa",
                self.low_pressure_clear_kpa,
            ),
        ];
        for (raise, raise_value, clear, clear_value) in pairs {
            if clear_value.is_nan() || raise_value.is_nan() || clear_value < raise_value {
                return Err(RulesConfigError::NoHysteresis {
                    raise,
                    raise_value: f64::from(raise_value),
                    clear,
                    clear_value: f64::from(clear_value),
                });
            }
        }
        Ok(())
    }
}
