//! Inlet pressure from telemetry: low pressure (below an absolute working minimum for
//! consecutive readings) and whether pressure is "fine" for the clog rule (above a
//! minimum and near the device's usual pressure, learnt as a daily median).

use serde::{Deserialize, Serialize};

use super::compact::{Maybe, MaybeA4};
use super::config::RulesConfig;
use super::stats::SampleWindow;

const BASELINE_EVERY_MS: i64 = 20 * 3_600_000;

/// Pressure state of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PressureWatch {
    /// The last reading (finite: `-inf` is free for "none").
    last_kpa: Maybe<f32>,
    usual_kpa: SampleWindow<8>,
    usual_pushed_ts_ms: MaybeA4,
    low_run: u8,
    ok_run: u8,
    active: bool,
}

impl PressureWatch {
    /// The last reading, kPa.
    pub fn last_kpa(&self) -> Option<f32> {
        self.last_kpa.get()
    }

    /// Whether the last reading is normal for this device (true until one is seen).
    pub fn is_fine(&self, cfg: &RulesConfig) -> bool {
        let Some(p) = self.last_kpa.get() else {
            return true;
        };
        let usual = self.usual_kpa.summary().map_or(p, |s| s.median);
        p >= cfg.clog_min_pressure_kpa && p >= cfg.clog_min_pressure_ratio * usual
    }

    /// A telemetry reading at `ts_ms`. Returns `Some(low)` when the low-pressure
    /// verdict changes.
    pub fn on_reading(&mut self, cfg: &RulesConfig, ts_ms: i64, kpa: f32) -> Option<bool> {
        if !kpa.is_finite() {
            return None;
        }
        self.last_kpa.replace(kpa);
        if kpa < cfg.low_pressure_raise_kpa {
            self.low_run = self.low_run.saturating_add(1);
            self.ok_run = 0;
        } else if kpa >= cfg.low_pressure_clear_kpa {
            self.ok_run = self.ok_run.saturating_add(1);
            self.low_run = 0;
        }
        let due = self
            .usual_pushed_ts_ms
            .get()
            .is_none_or(|t| ts_ms - t >= BASELINE_EVERY_MS);
        if due && kpa >= cfg.low_pressure_clear_kpa {
            self.usual_kpa.push(kpa);
            self.usual_pushed_ts_ms.replace(ts_ms);
        }
        if !self.active && self.low_run >= cfg.low_pressure_readings {
            self.active = true;
            Some(true)
        } else if self.active && self.ok_run >= cfg.low_pressure_readings {
            self.active = false;
            Some(false)
        } else {
            None
        }
    }
}
