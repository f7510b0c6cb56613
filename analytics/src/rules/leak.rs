//! Leak by water balance: metered water that no usage session accounts for, judged
//! over time, not per telemetry message.
//!
//! The rule keeps a running **balance** `B`: the growth of the cumulative water counter
//! minus the water of every session reported. Sessions are reported when they end, so
//! while one is running the counter already holds part of its water: `B` then carries a
//! positive bump that vanishes when the session's event arrives. Outside sessions `B`
//! grows only by water nobody used: a leak. So the leak's cumulative volume is the
//! *lower envelope* of `B`, whatever the telemetry cadence (every 15 minutes, or every
//! 60 seconds while water runs).
//!
//! Time is cut into blocks of [`RulesConfig::leak_block_ms`] of device time (longer for
//! a device reporting rarely, so that a block holds several readings); the lowest `B`
//! of a block is taken with its time, and the unexplained flow between two consecutive
//! blocks is the rise of those minima over the time between them. A run of such spans
//! with at least [`RulesConfig::leak_min_ml_per_min`] lasting
//! [`RulesConfig::leak_raise_ms`] raises a leak (a few ml/min over a night is enough);
//! it clears only after [`RulesConfig::leak_clear_ms`] of dry spans, so a leak that runs
//! every night and stops by day is one episode. A lost message (a `seq` gap, a reboot,
//! a counter that went back) breaks the chain of blocks; a stuck valve reported by the
//! device explains the flow.

use protocol::message::SessionKind;
use serde::{Deserialize, Serialize};

use super::config::RulesConfig;

/// The lowest balance seen in a block, and when.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct BlockMin {
    /// Block number (device time / block length).
    block: i64,
    /// Lowest balance, ml.
    balance_ml: i64,
    /// Its device time.
    ts_ms: i64,
}

/// Water-balance state of one device (72 bytes). Serialised as [`FlowBalanceRepr`].
///
/// The previous block's minimum is only ever judged against the block right after it,
/// so it is kept only when it is that block's neighbour (its block number is then the
/// current one's minus one), and its option and the current one's are flags beside the
/// others (no padding).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "FlowBalanceRepr", into = "FlowBalanceRepr")]
pub struct FlowBalance {
    /// Counter growth minus session water since the chain began, ml.
    balance_ml: i64,
    /// The current block's minimum (when `has_current`).
    current: BlockMin,
    /// The previous block's lowest balance and its time (when `previous_adjacent`).
    previous_balance_ml: i64,
    previous_ts_ms: i64,
    /// Device time spent in the current run of wet spans, and of dry ones, ms.
    wet_ms: i64,
    dry_ms: i64,
    /// Whether there is a current block.
    has_current: bool,
    /// Whether the previous block's minimum is held: the block just before the
    /// current one (the chain: not after a break).
    previous_adjacent: bool,
    /// A message was lost (or the device rebooted) since the previous telemetry.
    broken: bool,
    /// Whether this rule currently sees a leak.
    active: bool,
}

/// [`FlowBalance`] as snapshots hold it (the shape they have always had).
#[derive(Serialize, Deserialize)]
struct FlowBalanceRepr {
    balance_ml: i64,
    current: Option<BlockMin>,
    previous: Option<BlockMin>,
    broken: bool,
    wet_ms: i64,
    dry_ms: i64,
    active: bool,
}

impl From<FlowBalanceRepr> for FlowBalance {
    fn from(r: FlowBalanceRepr) -> Self {
        // A previous block that is not the current one's neighbour is never judged.
        let previous = r.previous.filter(|p| {
            r.current
                .is_some_and(|c| p.block.checked_add(1) == Some(c.block))
        });
        FlowBalance {
            balance_ml: r.balance_ml,
            current: r.current.unwrap_or(BlockMin::NONE),
            previous_balance_ml: previous.map_or(0, |p| p.balance_ml),
            previous_ts_ms: previous.map_or(0, |p| p.ts_ms),
            wet_ms: r.wet_ms,
            dry_ms: r.dry_ms,
            has_current: r.current.is_some(),
            previous_adjacent: previous.is_some(),
            broken: r.broken,
            active: r.active,
        }
    }
}

impl From<FlowBalance> for FlowBalanceRepr {
    fn from(f: FlowBalance) -> Self {
        FlowBalanceRepr {
            balance_ml: f.balance_ml,
            current: f.current(),
            previous: f.previous(),
            broken: f.broken,
            wet_ms: f.wet_ms,
            dry_ms: f.dry_ms,
            active: f.active,
        }
    }
}

impl BlockMin {
    const NONE: BlockMin = BlockMin {
        block: 0,
        balance_ml: 0,
        ts_ms: 0,
    };
}

impl Default for BlockMin {
    fn default() -> Self {
        BlockMin::NONE
    }
}

impl FlowBalance {
    fn current(&self) -> Option<BlockMin> {
        self.has_current.then_some(self.current)
    }

    /// The previous block's minimum, when it is the current block's neighbour.
    fn previous(&self) -> Option<BlockMin> {
        (self.has_current && self.previous_adjacent).then(|| BlockMin {
            block: self.current.block - 1,
            balance_ml: self.previous_balance_ml,
            ts_ms: self.previous_ts_ms,
        })
    }

    /// A usage session ended, having used `water_ml`.
    pub fn on_session(&mut self, kind: SessionKind, _started_ts_ms: i64, water_ml: u32) {
        // A toilet's seat session contains its wash: only the water sessions count.
        if kind == SessionKind::Seat {
            return;
        }
        self.balance_ml -= i64::from(water_ml);
    }

    /// A message was lost or the device rebooted: the chain of blocks restarts.
    pub fn on_gap(&mut self) {
        self.broken = true;
    }

    /// Whether a message was lost (or the device rebooted) since the previous telemetry.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn restart(&mut self) {
        self.balance_ml = 0;
        self.current = BlockMin::NONE;
        self.has_current = false;
        (self.previous_balance_ml, self.previous_ts_ms) = (0, 0);
        self.previous_adjacent = false;
    }

    /// Telemetry at `ts_ms` with the cumulative water counter; `previous` is the time
    /// and counter of the device's previous telemetry; `report_interval_ms` the device's
    /// learnt reporting interval. `explained` is true when something else accounts for
    /// flow outside sessions (a stuck valve). Returns `Some((present, unexplained flow of
    /// the span judged, ml/min))` when the rule's verdict changes.
    pub fn on_telemetry(
        &mut self,
        cfg: &RulesConfig,
        (ts_ms, water_ml): (i64, u64),
        previous: Option<(i64, u64)>,
        report_interval_ms: i64,
        explained: bool,
    ) -> Option<(bool, f32)> {
        let broken = std::mem::take(&mut self.broken);
        let usable = previous.filter(|&(prev_ts, prev_ml)| {
            let dt = ts_ms - prev_ts;
            !broken && !explained && dt > 0 && dt <= cfg.max_telemetry_gap_ms && water_ml >= prev_ml
        });
        let Some((_, prev_ml)) = usable else {
            self.restart();
            // The session water already subtracted belongs to the old chain.
            return None;
        };
        self.balance_ml += i64::try_from(water_ml - prev_ml).unwrap_or(i64::MAX / 4);
        // A block holds at least four readings of a slow-reporting device.
        let block_ms = cfg.leak_block_ms.max(4 * report_interval_ms).max(1);
        let block = ts_ms.div_euclid(block_ms);
        let here = BlockMin {
            block,
            balance_ml: self.balance_ml,
            ts_ms,
        };
        let mut verdict = None;
        match self.current() {
            Some(c) if c.block == block => {
                if here.balance_ml <= c.balance_ml {
                    self.current = here;
                }
            }
            Some(c) if c.block < block => {
                if let Some(p) = self.previous() {
                    verdict = self.judge(cfg, p, c);
                }
                // The chain goes on only from the block just before.
                self.previous_adjacent = c.block + 1 == block;
                (self.previous_balance_ml, self.previous_ts_ms) = if self.previous_adjacent {
                    (c.balance_ml, c.ts_ms)
                } else {
                    (0, 0)
                };
                self.current = here;
            }
            // Device time went back: start over.
            Some(_) => self.restart(),
            None => {
                self.current = here;
                self.has_current = true;
            }
        }
        verdict
    }

    fn judge(&mut self, cfg: &RulesConfig, from: BlockMin, to: BlockMin) -> Option<(bool, f32)> {
        let dt_ms = to.ts_ms - from.ts_ms;
        if dt_ms <= 0 {
            return None;
        }
        let rate = ((to.balance_ml - from.balance_ml) as f64 * 60_000.0 / dt_ms as f64) as f32;
        if rate >= cfg.leak_min_ml_per_min {
            self.wet_ms += dt_ms;
            self.dry_ms = 0;
        } else if rate < cfg.leak_min_ml_per_min / 2.0 {
            self.dry_ms += dt_ms;
            self.wet_ms = 0;
        }
        if !self.active && self.wet_ms >= cfg.leak_raise_ms {
            self.active = true;
            Some((true, rate))
        } else if self.active && self.dry_ms >= cfg.leak_clear_ms {
            self.active = false;
            Some((false, rate))
        } else {
            None
        }
    }
}
