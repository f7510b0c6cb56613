//! Inlet-screen clog by flow trend: the flow rate of the last sessions against the
//! device's baseline, at fine inlet pressure.
//!
//! A clogging screen lowers the flow of every draw over days while the supply pressure
//! stays normal (low pressure lowers the flow too, but shows in the pressure reading,
//! and such sessions are not used). The baseline is the median of one flow sample a
//! day (the median of the last three sessions) over the last 16 days, so it follows a
//! cartridge loading over months but not a clog over days.

use protocol::message::SessionKind;
use serde::{Deserialize, Serialize};

use super::compact::MaybeA4;
use super::config::RulesConfig;
use super::stats::SampleWindow;

const BASELINE_EVERY_MS: i64 = 20 * 3_600_000;

/// Flow-trend state of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClogTrend {
    recent_ml_s: SampleWindow<3>,
    baseline_ml_s: SampleWindow<16>,
    baseline_pushed_ts_ms: MaybeA4,
    active: bool,
}

impl ClogTrend {
    /// A session ended at `ts_ms`. `pressure_fine` tells whether the supply pressure
    /// was normal. Returns `Some((present, flow ratio, baseline flow ml/s))` when the
    /// verdict changes.
    pub fn on_session(
        &mut self,
        cfg: &RulesConfig,
        ts_ms: i64,
        kind: SessionKind,
        duration_s: u32,
        water_ml: u32,
        pressure_fine: bool,
    ) -> Option<(bool, f32, f32)> {
        if !matches!(kind, SessionKind::Dispense | SessionKind::Shower)
            || duration_s < cfg.clog_min_session_s.max(1)
            || !pressure_fine
        {
            return None;
        }
        self.recent_ml_s.push(water_ml as f32 / duration_s as f32);
        if self.recent_ml_s.len() < 3 {
            return None;
        }
        let recent = self.recent_ml_s.summary()?.median;
        let mut verdict = None;
        if let Some(base) = self.baseline_ml_s.summary() {
            if base.count >= usize::from(cfg.clog_min_baseline) && base.median > 0.0 {
                let ratio = recent / base.median;
                if !self.active && ratio < cfg.clog_raise_ratio {
                    self.active = true;
                    verdict = Some((true, ratio, base.median));
                } else if self.active && ratio >= cfg.clog_clear_ratio {
                    self.active = false;
                    verdict = Some((false, ratio, base.median));
                }
            }
        }
        let due = self
            .baseline_pushed_ts_ms
            .get()
            .is_none_or(|t| ts_ms - t >= BASELINE_EVERY_MS);
        if !self.active && due {
            self.baseline_ml_s.push(recent);
            self.baseline_pushed_ts_ms.replace(ts_ms);
        }
        verdict
    }
}
