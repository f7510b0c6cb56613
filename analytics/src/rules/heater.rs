//! A toilet's wash-water heater judged from what every firmware reports, with or
//! without a fault code of its own: `water_temp_c` and the cumulative `heater_wh`.
//!
//! A heater that is dead (the element open, the firmware still powering it) or
//! wearing out (its reach sinking over days) shows the same thing: **energy goes in
//! and the temperature does not come back**. A healthy heater brings the tank back to
//! its set point within minutes of a wash, so the warmest reading of an hour is at
//! the device's usual level whatever the washes did; a heater switched off (an eco
//! or holiday mode, a user turning it off) lets the water cool but uses no energy.
//!
//! Readings are summed in blocks of device time ([`RulesConfig::heater_block_ms`],
//! an hour): the warmest reading of the block and the heater energy of the block's
//! measurable telemetry intervals. The device's own level is learnt from its first
//! [`LEARN_BLOCKS`] blocks (their mean warmest reading and energy rate), then
//! followed slowly ([`FOLLOW`] per block) on healthy blocks only, so a heater that
//! sinks over days does not drag its baseline along once it is a margin below it. A
//! block is **cold** when its warmest reading is more than
//! [`RulesConfig::heater_drop_c`] below the baseline while the heater used at least
//! [`RulesConfig::heater_min_energy_ratio`] times its usual energy rate;
//! [`RulesConfig::heater_raise_blocks`] cold blocks in a row raise the finding, and
//! two blocks back within half the margin clear it. A block without a reading or
//! without a measurable energy interval (a gap, a reboot) changes nothing.

use serde::{Deserialize, Serialize};

use super::compact::Maybe;
use super::config::RulesConfig;

/// Blocks that make the first baseline.
pub const LEARN_BLOCKS: u8 = 8;
/// Weight of a healthy block in the baseline once learnt (about a day and a half).
pub const FOLLOW: f32 = 1.0 / 32.0;
/// Healthy blocks in a row that clear an active finding.
const CLEAR_BLOCKS: u8 = 2;
/// A block's energy is judged only when this much of it was measured, seconds.
const MIN_MEASURED_S: f32 = 600.0;
/// Energy rates below this are "no energy" whatever the baseline, Wh/h.
const MIN_RATE_WH_PER_H: f32 = 1.0;
/// Readings outside this range are not a tank temperature (a failed sensor).
const PLAUSIBLE_C: (f32, f32) = (-20.0, 100.0);

/// What the heater rule saw when it raised or cleared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeaterJudgement {
    /// Warmest reading of the block, °C.
    pub block_max_c: f32,
    /// The device's usual warmest reading, °C.
    pub baseline_c: f32,
    /// Heater energy rate of the block, Wh per hour.
    pub rate_wh_per_h: f32,
    /// The device's usual rate, Wh per hour.
    pub baseline_wh_per_h: f32,
}

/// The heater rule's state for one toilet (about 40 bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeaterWatch {
    /// Index of the block being summed (device time / block length).
    block: Maybe<i64>,
    /// Warmest plausible reading of the block (`NEG_INFINITY`: none yet).
    block_max_c: f32,
    /// Heater energy of the block's measurable intervals, Wh, and their length, s.
    block_wh: f32,
    block_s: f32,
    /// The device's usual warmest reading per block, °C, and energy rate, Wh/h.
    baseline_c: f32,
    baseline_wh_per_h: f32,
    /// Blocks learnt into the baseline (saturates at [`LEARN_BLOCKS`]).
    learnt: u8,
    /// Cold blocks in a row, and healthy blocks in a row while active.
    cold: u8,
    warm: u8,
    active: bool,
}

impl Default for HeaterWatch {
    fn default() -> Self {
        HeaterWatch {
            block: Maybe::NONE,
            block_max_c: f32::NEG_INFINITY,
            block_wh: 0.0,
            block_s: 0.0,
            baseline_c: 0.0,
            baseline_wh_per_h: 0.0,
            learnt: 0,
            cold: 0,
            warm: 0,
            active: false,
        }
    }
}

impl HeaterWatch {
    /// One telemetry reading at device time `ts`: the tank temperature, and the heater
    /// energy of the interval since the previous reading with its length in ms (`None`
    /// when it is not measurable). Returns `Some((active, judgement))` when the finding
    /// raises or clears (at the first reading of a new block).
    pub fn on_reading(
        &mut self,
        cfg: &RulesConfig,
        ts: i64,
        temp_c: f32,
        energy: Option<(f64, i64)>,
    ) -> Option<(bool, HeaterJudgement)> {
        let block_ms = cfg.heater_block_ms.max(60_000);
        let b = ts.div_euclid(block_ms);
        let mut edge = None;
        match self.block.get() {
            Some(cur) if b < cur => return None, // older than the block being summed
            Some(cur) if b > cur => {
                edge = self.close_block(cfg);
                self.start_block(b);
            }
            Some(_) => {}
            None => self.start_block(b),
        }
        if temp_c.is_finite() && temp_c > PLAUSIBLE_C.0 && temp_c < PLAUSIBLE_C.1 {
            self.block_max_c = self.block_max_c.max(temp_c);
        }
        if let Some((wh, dt_ms)) = energy.filter(|&(wh, dt)| wh >= 0.0 && dt > 0) {
            self.block_wh += wh as f32;
            self.block_s += dt_ms as f32 / 1000.0;
        }
        edge
    }

    /// Whether the finding is active.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether the baseline is learnt.
    pub fn is_learnt(&self) -> bool {
        self.learnt >= LEARN_BLOCKS
    }

    fn start_block(&mut self, b: i64) {
        self.block.replace(b);
        self.block_max_c = f32::NEG_INFINITY;
        self.block_wh = 0.0;
        self.block_s = 0.0;
    }

    fn close_block(&mut self, cfg: &RulesConfig) -> Option<(bool, HeaterJudgement)> {
        let max_c = self.block_max_c;
        if !max_c.is_finite() || self.block_s < MIN_MEASURED_S {
            return None;
        }
        let rate = self.block_wh / self.block_s * 3600.0;
        if self.learnt < LEARN_BLOCKS {
            let n = f32::from(self.learnt);
            self.baseline_c += (max_c - self.baseline_c) / (n + 1.0);
            self.baseline_wh_per_h += (rate - self.baseline_wh_per_h) / (n + 1.0);
            self.learnt += 1;
            return None;
        }
        let judgement = HeaterJudgement {
            block_max_c: max_c,
            baseline_c: self.baseline_c,
            rate_wh_per_h: rate,
            baseline_wh_per_h: self.baseline_wh_per_h,
        };
        let drop = cfg.heater_drop_c;
        let heating =
            rate >= (cfg.heater_min_energy_ratio * self.baseline_wh_per_h).max(MIN_RATE_WH_PER_H);
        let cold = max_c < self.baseline_c - drop && heating;
        let healthy = max_c >= self.baseline_c - drop / 2.0;
        if cold {
            self.cold = self.cold.saturating_add(1);
            self.warm = 0;
        } else if healthy {
            self.cold = 0;
            self.warm = self.warm.saturating_add(1);
            self.baseline_c += (max_c - self.baseline_c) * FOLLOW;
            self.baseline_wh_per_h += (rate - self.baseline_wh_per_h) * FOLLOW;
        } else {
            // Cooler than usual without the heater trying (switched off), or between
            // the margins: neither evidence nor a recovery.
            self.cold = 0;
            self.warm = 0;
        }
        if !self.active && self.cold >= cfg.heater_raise_blocks.max(1) {
            self.active = true;
            return Some((true, judgement));
        }
        if self.active && self.warm >= CLEAR_BLOCKS {
            self.active = false;
            return Some((false, judgement));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const T0: i64 = 1_764_000_000_000 - 1_764_000_000_000 % H;

    /// Feeds `hours` of readings every 15 minutes from `from_h`: temperature and Wh per
    /// 15 minutes as functions of the hour; returns the edges.
    fn feed(
        w: &mut HeaterWatch,
        from_h: i64,
        hours: i64,
        temp: impl Fn(i64, i64) -> f32,
        wh_per_15min: impl Fn(i64) -> f64,
    ) -> Vec<bool> {
        let cfg = RulesConfig::default();
        let mut edges = Vec::new();
        for h in from_h..from_h + hours {
            for q in 0..4 {
                let ts = T0 + h * H + q * 15 * 60_000;
                if let Some((on, _)) =
                    w.on_reading(&cfg, ts, temp(h, q), Some((wh_per_15min(h), 15 * 60_000)))
                {
                    edges.push(on);
                }
            }
        }
        edges
    }

    /// A healthy tank: 37–39.5 °C, a dip after a wash now and then, 15 Wh a quarter.
    fn healthy(h: i64, q: i64) -> f32 {
        if (h + q) % 5 == 0 {
            31.0
        } else {
            37.0 + ((h * 4 + q) % 6) as f32 * 0.5
        }
    }

    #[test]
    fn a_dead_heater_raises_and_a_repair_clears() {
        let mut w = HeaterWatch::default();
        assert!(feed(&mut w, 0, 48, healthy, |_| 15.0).is_empty());
        assert!(w.is_learnt());
        // Dead: full power, the tank cools towards the room.
        let edges = feed(
            &mut w,
            48,
            6,
            |h, q| 21.0 + 17.0 * (-((h - 48) as f32 + q as f32 / 4.0) / 3.0).exp(),
            |_| 300.0,
        );
        assert_eq!(edges, vec![true]);
        assert!(w.is_active());
        let edges = feed(&mut w, 54, 4, healthy, |_| 15.0);
        assert_eq!(edges, vec![false]);
    }

    #[test]
    fn a_heater_switched_off_cools_without_a_finding() {
        let mut w = HeaterWatch::default();
        feed(&mut w, 0, 48, healthy, |_| 15.0);
        let edges = feed(&mut w, 48, 10, |_, _| 24.0, |_| 0.0);
        assert!(edges.is_empty());
        assert!(!w.is_active());
    }

    #[test]
    fn a_heater_sinking_over_days_raises_before_the_firmware_threshold() {
        let mut w = HeaterWatch::default();
        feed(&mut w, 0, 48, healthy, |_| 15.0);
        // Reach falls 0.1 °C an hour from 41 °C; below 37 the heater runs flat out.
        let mut raised_at = None;
        for h in 48..200 {
            let reach = 41.0 - 0.1 * (h - 48) as f32;
            let edges = feed(
                &mut w,
                h,
                1,
                |h, q| (reach.min(38.0 + ((h + q) % 3) as f32 * 0.5)) - 0.2 * q as f32,
                |_| if reach < 37.0 { 300.0 } else { 40.0 },
            );
            if edges.contains(&true) {
                raised_at = Some(reach);
                break;
            }
        }
        let reach = raised_at.expect("raised");
        assert!(reach > 30.0, "raised only at a reach of {reach} °C");
    }
}
