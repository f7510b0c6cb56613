//! Fault raise/clear with hysteresis in both level and time.
//!
//! A fault is raised when its raise condition has held continuously for
//! `raise_after_ms`, and cleared when its (stricter) clear condition has held
//! continuously for `clear_after_ms`. Raise and clear conditions are computed by
//! the caller with different thresholds (e.g. over-temperature above 55 °C, clear
//! below 45 °C), so a value hovering at one threshold cannot make a fault flap.

use protocol::message::FaultState;

/// One fault's hysteresis state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    raise_after_ms: u32,
    clear_after_ms: u32,
    active: bool,
    since_ms: Option<i64>,
}

impl Hysteresis {
    /// A tracker with the given persistence times.
    pub const fn new(raise_after_ms: u32, clear_after_ms: u32) -> Self {
        Hysteresis {
            raise_after_ms,
            clear_after_ms,
            active: false,
            since_ms: None,
        }
    }

    /// Whether the fault is raised.
    pub const fn is_active(&self) -> bool {
        self.active
    }

    /// Feeds one evaluation at `now_ms`; returns the transition, if any.
    pub fn update(
        &mut self,
        now_ms: i64,
        raise_cond: bool,
        clear_cond: bool,
    ) -> Option<FaultState> {
        let (cond, after) = if self.active {
            (clear_cond, self.clear_after_ms)
        } else {
            (raise_cond, self.raise_after_ms)
        };
        if !cond {
            self.since_ms = None;
            return None;
        }
        let since = *self.since_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) < i64::from(after) {
            return None;
        }
        self.active = !self.active;
        self.since_ms = None;
        Some(if self.active {
            FaultState::Raised
        } else {
            FaultState::Cleared
        })
    }

    /// Raises at once (e.g. a wet leak probe), returning `Raised` if it was not active.
    pub fn force_raise(&mut self) -> Option<FaultState> {
        self.since_ms = None;
        if self.active {
            None
        } else {
            self.active = true;
            Some(FaultState::Raised)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_only_after_the_condition_persists() {
        let mut h = Hysteresis::new(1000, 5000);
        assert_eq!(h.update(0, true, false), None);
        assert_eq!(h.update(500, false, false), None); // interrupted: restart
        assert_eq!(h.update(600, true, false), None);
        assert_eq!(h.update(1599, true, false), None);
        assert_eq!(h.update(1600, true, false), Some(FaultState::Raised));
        assert!(h.is_active());
    }

    #[test]
    fn clears_only_after_the_clear_condition_persists() {
        let mut h = Hysteresis::new(0, 5000);
        assert_eq!(h.update(0, true, false), Some(FaultState::Raised));
        // Between thresholds: neither raise nor clear condition; stays raised.
        assert_eq!(h.update(1000, false, false), None);
        assert_eq!(h.update(2000, false, true), None);
        assert_eq!(h.update(4000, true, false), None); // back above: clear timer restarts
        assert_eq!(h.update(5000, false, true), None);
        assert_eq!(h.update(9999, false, true), None);
        assert_eq!(h.update(10_000, false, true), Some(FaultState::Cleared));
        assert!(!h.is_active());
    }

    #[test]
    fn force_raise_is_idempotent() {
        let mut h = Hysteresis::new(60_000, 0);
        assert_eq!(h.force_raise(), Some(FaultState::Raised));
        assert_eq!(h.force_raise(), None);
        assert_eq!(h.update(1, false, true), Some(FaultState::Cleared));
    }
}
