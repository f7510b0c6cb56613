//! Leak by flow balance: metered water that no usage session accounts for.
//!
//! Between two telemetry messages the cumulative water counter grows by what the
//! sessions that ended in between used, plus whatever flowed outside any session.
//! Only *idle* intervals are judged: no water session ended in the interval, and none
//! that ends by the next telemetry had started before the interval's end (so an
//! interval is judged one telemetry late). Usage then cannot be mistaken for a leak,
//! and a leak still shows in the idle hours (nights, working days). A run of
//! [`RulesConfig::leak_raise_intervals`] idle intervals with unexplained flow at or above
//! [`RulesConfig::leak_min_ml_per_min`] raises a leak; a run of dry ones clears it.
//! Busy intervals are skipped; an interval after a lost message (a `seq` gap, a
//! reboot), a long gap, or while a stuck valve explains the flow breaks the runs.

use protocol::message::SessionKind;
use serde::{Deserialize, Serialize};

use super::config::RulesConfig;

/// An interval awaiting judgement until the next telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct PendingInterval {
    /// Device time of the telemetry that ended it.
    end_ts_ms: i64,
    /// Unexplained flow over it, ml/min.
    rate_ml_min: f32,
    /// No session touched it (so far).
    idle: bool,
}

/// Flow-balance state of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowBalance {
    /// Water of sessions that ended since the previous telemetry, ml.
    session_ml: u64,
    /// A water session ended since the previous telemetry.
    session_ended: bool,
    /// A message was lost (or the device rebooted) since the previous telemetry.
    broken: bool,
    pending: Option<PendingInterval>,
    /// Consecutive judged intervals with unexplained flow.
    wet_run: u8,
    /// Consecutive judged intervals without.
    dry_run: u8,
    /// Whether this rule currently sees a leak.
    active: bool,
}

impl FlowBalance {
    /// A usage session that started at `started_ts_ms` ended, using `water_ml`.
    pub fn on_session(&mut self, kind: SessionKind, started_ts_ms: i64, water_ml: u32) {
        // A toilet's seat session contains its wash: only the water sessions count.
        if kind == SessionKind::Seat {
            return;
        }
        self.session_ml += u64::from(water_ml);
        self.session_ended = true;
        if let Some(p) = self.pending.as_mut() {
            if started_ts_ms < p.end_ts_ms {
                p.idle = false;
            }
        }
    }

    /// A message was lost or the device rebooted: the next interval is not judged.
    pub fn on_gap(&mut self) {
        self.broken = true;
    }

    /// Telemetry at `ts_ms` with the cumulative water counter; `previous` is the time
    /// and counter of the device's previous telemetry (the caller keeps them, for the
    /// daily totals too). `explained` is true when something else accounts for flow
    /// outside sessions (a stuck valve). Returns `Some((present, unexplained flow of the
    /// judged interval in ml/min))` when the rule's verdict changes.
    pub fn on_telemetry(
        &mut self,
        cfg: &RulesConfig,
        (ts_ms, water_ml): (i64, u64),
        previous: Option<(i64, u64)>,
        explained: bool,
    ) -> Option<(bool, f32)> {
        let session_ml = std::mem::take(&mut self.session_ml);
        let session_ended = std::mem::take(&mut self.session_ended);
        let broken = std::mem::take(&mut self.broken);
        let verdict = match self.pending.take() {
            Some(p) if p.idle => self.judge(cfg, p.rate_ml_min),
            _ => None,
        };
        let (prev_ts, prev_ml) = previous?;
        let dt_ms = ts_ms - prev_ts;
        if broken
            || explained
            || dt_ms <= 0
            || dt_ms > cfg.max_telemetry_gap_ms
            || water_ml < prev_ml
        {
            self.wet_run = 0;
            self.dry_run = 0;
            return verdict;
        }
        let unexplained_ml = water_ml as f64 - prev_ml as f64 - session_ml as f64;
        self.pending = Some(PendingInterval {
            end_ts_ms: ts_ms,
            rate_ml_min: (unexplained_ml * 60_000.0 / dt_ms as f64) as f32,
            idle: !session_ended,
        });
        verdict
    }

    fn judge(&mut self, cfg: &RulesConfig, rate: f32) -> Option<(bool, f32)> {
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
            Some((true, rate))
        } else if self.active && self.dry_run >= cfg.leak_clear_intervals {
            self.active = false;
            Some((false, rate))
        } else {
            None
        }
    }
}
