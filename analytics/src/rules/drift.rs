//! Temperature-sensor drift of a thermostatic shower: the mixed-water temperature of
//! its sessions is regulated to the household's preference, so a median of the last
//! sessions that moves away from the learnt baseline (more than `drift_min_c` and
//! `drift_k` σ) is the sensor, not the water.
//!
//! The baseline learns one sample every three days once warm, so a drift of a few
//! tenths of a degree a day is not followed.

use serde::{Deserialize, Serialize};

use super::compact::Maybe;
use super::config::RulesConfig;
use super::stats::SampleWindow;

const BASELINE_EVERY_MS: i64 = 3 * protocol::catalog::DAY_MS;

/// Drift state of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemperatureDrift {
    recent_c: SampleWindow<3>,
    baseline_c: SampleWindow<16>,
    baseline_pushed_ts_ms: Maybe<i64>,
    active: bool,
}

impl TemperatureDrift {
    /// A session at `ts_ms` had mean temperature `temp_c`. Returns `Some((drifting,
    /// recent median °C, baseline median °C))` when the verdict changes.
    pub fn on_session(
        &mut self,
        cfg: &RulesConfig,
        ts_ms: i64,
        temp_c: f32,
    ) -> Option<(bool, f32, f32)> {
        self.recent_c.push(temp_c);
        if self.recent_c.len() < 3 {
            return None;
        }
        let recent = self.recent_c.summary()?.median;
        let mut verdict = None;
        let warm = self.baseline_c.len() >= usize::from(cfg.drift_min_baseline);
        if let Some(base) = self.baseline_c.summary().filter(|_| warm) {
            let threshold = cfg.drift_min_c.max(cfg.drift_k * base.sigma);
            let off = (recent - base.median).abs();
            if !self.active && off > threshold {
                self.active = true;
                verdict = Some((true, recent, base.median));
            } else if self.active && off < threshold / 2.0 {
                self.active = false;
                verdict = Some((false, recent, base.median));
            }
        }
        let due = !warm
            || self
                .baseline_pushed_ts_ms
                .get()
                .is_none_or(|t| ts_ms - t >= BASELINE_EVERY_MS);
        if !self.active && due {
            self.baseline_c.push(recent);
            self.baseline_pushed_ts_ms.replace(ts_ms);
        }
        verdict
    }
}
