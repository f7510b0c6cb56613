//! Exponential backoff with jitter, shared by every retry loop (store writes,
//! spool replay, MQTT reconnects). Pure: it hands out delays, the caller sleeps.

use std::time::Duration;

use rand::Rng;

/// Backoff state: the next delay doubles from `min` up to `max`, with up to 50 % jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `min` and capped at `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0.5..=1.0);
        base.mul_f64(jitter)
    }

    /// Call after a success: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        for (d, upper) in delays.iter().zip([100, 200, 400, 800, 800, 800]) {
            assert!(
                *d <= Duration::from_millis(upper) && *d >= Duration::from_millis(upper / 2),
                "{d:?} vs {upper}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
