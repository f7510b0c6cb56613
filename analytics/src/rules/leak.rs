//! Leak by flow balance: metered water that no usage session accounts for.
//!
//! Between two telemetry messages, the cumulative water counter grows by what the
//! sessions that ended in between used, plus whatever flowed outside any session. A
//! session still running at a telemetry message makes one interval look short and a
//! later one long, so only a run of consecutive intervals with unexplained flow above
//! [`RulesConfig::leak_min_ml_per_min`] raises a leak, and a run of dry ones clears it.
//! An interval after a lost message (a `seq` gap, a reboot) or a long gap is not judged.

use protocol::message::SessionKind;
use serde::{Deserialize, Serialize};

use super::config::RulesConfig;

/// Flow-balance state of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowBalance {
    /// Time and water counter of the previous telemetry.
    last: Option<(i64, u64)>,
    /// Water of sessions that ended since the previous telemetry, ml.
    session_ml: u64,
    /// A message was lost (or the device rebooted) since the previous telemetry.
    broken: bool,
    /// Consecutive intervals with unexplained flow.
    wet_run: u8,
    /// Consecutive intervals without.
    dry_run: u8,
    /// Whether this rule currently sees a leak.
    active: bool,
    /// Unexplained flow of the last judged interval, ml/min.
    last_rate_ml_min: f32,
}

impl FlowBalance {
    /// Unexplained flow of the last judged interval, ml/min.
    pub fn last_rate_ml_min(&self) -> f32 {
        self.last_rate_ml_min
    }

    /// A usage session ended, using `water_ml`.
    pub fn on_session(&mut self, kind: SessionKind, water_ml: u32) {
        // A toilet's seat session contains its wash: only the water sessions count.
        if kind != SessionKind::Seat {
            self.session_ml += u64::from(water_ml);
        }
    }

    /// A message was lost or the device rebooted: the next interval is not judged.
    pub fn on_gap(&mut self) {
        self.broken = true;
    }

    /// Telemetry at `ts_ms` with the cumulative water counter. `explained` is true when
    /// something else accounts for flow outside sessions (a stuck valve). Returns
    /// `Some(present)` when the rule's verdict changes.
    pub fn on_telemetry(
        &mut self,
        cfg: &RulesConfig,
        ts_ms: i64,
        water_ml: u64,
        explained: bool,
    ) -> Option<bool> {
        let previous = self.last.replace((ts_ms, water_ml));
        let session_ml = std::mem::take(&mut self.session_ml);
        let broken = std::mem::take(&mut self.broken);
        let (prev_ts, prev_ml) = previous?;
        let dt_ms = ts_ms - prev_ts;
        if broken || dt_ms <= 0 || dt_ms > cfg.max_telemetry_gap_ms || water_ml < prev_ml {
            self.wet_run = 0;
            return None;
        }
        if explained {
            self.wet_run = 0;
            self.dry_run = 0;
            return None;
        }
        let unexplained_ml = water_ml as f64 - prev_ml as f64 - session_ml as f64;
        let rate = (unexplained_ml * 60_000.0 / dt_ms as f64) as f32;
        self.last_rate_ml_min = rate;
        if rate >= cfg.leak_min_ml_per_min {
            self.wet_run = self.wet_run.saturating_add(1);
            self.dry_run = 0;
        } else if rate < cfg.leak_min_ml_per_min / 2.0 {
            self.dry_run = self.dry_run.saturating_add(1);
            self.wet_run = 0;
        } else {
            self.wet_run = 0;
            self.dry_run = 0;
        }
        if !self.active && self.wet_run >= cfg.leak_raise_intervals {
            self.active = true;
            Some(true)
        } else if self.active && self.dry_run >= cfg.leak_clear_intervals {
            self.active = false;
            Some(false)
        } else {
            None
        }
    }
}
