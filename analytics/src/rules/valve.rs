//! A valve that did not close, from the water balance: water that keeps running after a
//! toilet's wash, flush or cleaning programme ended, with no session to account for it.
//!
//! A device reports a stuck valve itself (`valve_stuck`) when flow goes on after it
//! closed the valve; firmware that raises no fault codes does not, and then ends the
//! session as usual: the wash looks ordinary, and the water that kept running shows only
//! in the cumulative counter, which no session explains. A healthy toilet's counter does
//! not move between sessions (its only water is its sessions', and a leak drips well under
//! [`RUNNING_ML_PER_MIN`]), so:
//!
//! * the first telemetry after a water session is the **anchor**, with its balance `B`
//!   (counter growth minus session water, as in [`super::leak`], but chained reading by
//!   reading: two readings of one instant, or a changing reporting interval, break nothing);
//! * the first reading at least [`AFTER_MS`] later opens the **window**, which lasts
//!   [`SETTLE_MS`]: the lowest `B` in it is taken, so the water of a session still running
//!   at a reading (counted before its event arrives) is not taken for running water;
//! * if the rise of that lowest `B` over the anchor, per minute since the anchor, is at
//!   least [`RUNNING_ML_PER_MIN`], water ran on after the session: the valve did not close.
//!
//! The condition clears when the counter has stood for [`SETTLE_MS`], or at the next water
//! session (the valve opened and closed again: the firmware starts none while water still
//! runs), which also re-anchors. A lost message or a reboot breaks the balance: the watch
//! starts again at the next session. While the device reports a stuck valve itself, its
//! report explains the water and nothing is judged.

use serde::{Deserialize, Serialize};

use super::compact::Maybe;

/// Flow at or above this is water running, not drips (ml/min): the firmware's own line
/// between "flow stopped" and flow that ends a session or shows a stuck valve
/// (`firmware::logic::FLOW_STOPPED_ML_MIN`), well under any use (≥ 1 L/min) and over
/// every leak the leak rule watches.
pub const RUNNING_ML_PER_MIN: f64 = 100.0;

/// How long after the anchor water must still be running (device ms): longer than any
/// toilet session (a wash runs at most 3 minutes, a cleaning programme 6), so the water
/// is no use of the fixture.
pub const AFTER_MS: i64 = 10 * 60_000;

/// How long the window takes the lowest balance over (device ms): longer than any toilet
/// session, so a session running at the window's first reading has ended, and its water
/// is explained, by its end.
pub const SETTLE_MS: i64 = 10 * 60_000;

/// Water-after-session state of one toilet (56 bytes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValveWatch {
    /// Counter growth minus session water, ml (only its differences count).
    balance_ml: i64,
    /// Device time of the anchor (the first reading after the latest water session).
    anchor_ts_ms: Maybe<i64>,
    /// Balance at the anchor, ml.
    anchor_ml: i64,
    /// Device time of the window's first reading.
    window_ts_ms: Maybe<i64>,
    /// Lowest balance in the window so far, ml.
    window_min_ml: i64,
    /// While the condition is raised: device time since which the water no longer runs.
    dry_since_ts_ms: Maybe<i64>,
    /// A water session ended since the last reading: anchor at the next one.
    pending: bool,
    /// Whether this rule currently sees a valve that did not close.
    active: bool,
}

/// What the rule saw when it raised: unexplained water since the anchor, over how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunOn {
    /// Water no session explains, from the anchor to the window's lowest balance, ml.
    pub unexplained_ml: i64,
    /// Minutes from the anchor to the window's first reading.
    pub minutes: f64,
    /// Their ratio, ml/min.
    pub ml_per_min: f64,
}

impl ValveWatch {
    /// A wash, flush or cleaning programme ended, having used `water_ml`. Returns true
    /// when this clears the condition (the valve opened and closed again).
    pub fn on_water_session(&mut self, water_ml: u32) -> bool {
        self.balance_ml = self.balance_ml.saturating_sub(i64::from(water_ml));
        self.pending = true;
        self.anchor_ts_ms = Maybe::NONE;
        self.window_ts_ms = Maybe::NONE;
        self.dry_since_ts_ms = Maybe::NONE;
        std::mem::take(&mut self.active)
    }

    /// Telemetry at device time `ts_ms` with the cumulative water counter; `previous` is
    /// the device's previous telemetry (time, counter), `broken` whether a message was
    /// lost (or the device rebooted) since, `max_gap_ms` the longest interval whose water
    /// is still placed. Returns `(present, what was seen)` when the verdict changes: raised
    /// when water ran on after a session, cleared when the counter has stood for
    /// [`SETTLE_MS`] (or at the next session, see [`ValveWatch::on_water_session`]).
    pub fn on_telemetry(
        &mut self,
        (ts_ms, water_ml): (i64, u64),
        previous: Option<(i64, u64)>,
        broken: bool,
        max_gap_ms: i64,
    ) -> Option<(bool, RunOn)> {
        // Two readings of one instant are one reading: only the counter's growth counts.
        let delta = previous
            .filter(|&(prev_ts, prev_ml)| {
                !broken && (0..=max_gap_ms).contains(&(ts_ms - prev_ts)) && water_ml >= prev_ml
            })
            .map(|(_, prev_ml)| i64::try_from(water_ml - prev_ml).unwrap_or(i64::MAX / 4));
        let Some(delta) = delta else {
            // The water of the interval cannot be placed: what was anchored is void (a
            // session that ended still anchors at the next reading).
            self.anchor_ts_ms = Maybe::NONE;
            self.window_ts_ms = Maybe::NONE;
            return None;
        };
        self.balance_ml = self.balance_ml.saturating_add(delta);
        let b = self.balance_ml;
        if self.active {
            // Cleared once the counter has stood (under the running rate) for SETTLE_MS.
            let dt_ms = previous.map_or(0, |(prev_ts, _)| ts_ms - prev_ts);
            let running = delta as f64 * 60_000.0 >= RUNNING_ML_PER_MIN * dt_ms as f64;
            if running {
                self.dry_since_ts_ms = Maybe::NONE;
            } else if dt_ms > 0 {
                let since = self.dry_since_ts_ms.get_or_insert(ts_ms - dt_ms);
                if ts_ms - since >= SETTLE_MS {
                    self.active = false;
                    self.dry_since_ts_ms = Maybe::NONE;
                    let minutes = (ts_ms - since) as f64 / 60_000.0;
                    return Some((
                        false,
                        RunOn {
                            unexplained_ml: 0,
                            minutes,
                            ml_per_min: 0.0,
                        },
                    ));
                }
            }
        }
        if std::mem::take(&mut self.pending) {
            self.anchor_ts_ms = Maybe::from(Some(ts_ms));
            self.anchor_ml = b;
            self.window_ts_ms = Maybe::NONE;
            return None;
        }
        let anchor_ts = self.anchor_ts_ms.get()?;
        match self.window_ts_ms.get() {
            None if ts_ms - anchor_ts >= AFTER_MS => {
                self.window_ts_ms = Maybe::from(Some(ts_ms));
                self.window_min_ml = b;
                None
            }
            None => None,
            Some(window_ts) => {
                self.window_min_ml = self.window_min_ml.min(b);
                if ts_ms - window_ts < SETTLE_MS {
                    return None;
                }
                // One verdict per session.
                self.anchor_ts_ms = Maybe::NONE;
                self.window_ts_ms = Maybe::NONE;
                let unexplained_ml = self.window_min_ml - self.anchor_ml;
                let minutes = (window_ts - anchor_ts) as f64 / 60_000.0;
                let ml_per_min = unexplained_ml as f64 / minutes.max(1.0);
                if self.active || ml_per_min < RUNNING_ML_PER_MIN {
                    return None;
                }
                self.active = true;
                self.dry_since_ts_ms = Maybe::NONE;
                Some((
                    true,
                    RunOn {
                        unexplained_ml,
                        minutes,
                        ml_per_min,
                    },
                ))
            }
        }
    }

    /// Device time of the current anchor, if any.
    pub fn anchor_ts_ms(&self) -> Option<i64> {
        self.anchor_ts_ms.get()
    }

    /// Whether the rule currently sees water running on after a session.
    pub fn is_active(&self) -> bool {
        self.active
    }
}
