//! Digital inputs: debounced switches (seat occupancy, leak probe) and the flow-meter
//! pulse counter, both generic over `embedded_hal::digital::InputPin`.
//!
//! Time is an argument in milliseconds; nothing here reads a clock.

use embedded_hal::digital::InputPin;

/// A switch input that changes its reported state only after the raw level has been
/// stable for `settle_ms` (contact bounce, a wobbling seat, a drop on the leak probe).
#[derive(Debug)]
pub struct Debounced<P> {
    pin: P,
    active_high: bool,
    settle_ms: u32,
    state: bool,
    candidate: bool,
    since_ms: i64,
}

impl<P: InputPin> Debounced<P> {
    /// Wraps `pin`; `active_high` says which level means "active" (seat taken, probe wet).
    pub fn new(pin: P, active_high: bool, settle_ms: u32) -> Self {
        Debounced {
            pin,
            active_high,
            settle_ms,
            state: false,
            candidate: false,
            since_ms: i64::MIN,
        }
    }

    /// Samples the pin at `now_ms` and returns the debounced state.
    pub fn sample(&mut self, now_ms: i64) -> Result<bool, P::Error> {
        let raw = self.pin.is_high()? == self.active_high;
        Ok(self.update(raw, now_ms))
    }

    /// Feeds an already-read level (used by [`Debounced::sample`]).
    pub fn update(&mut self, raw_active: bool, now_ms: i64) -> bool {
        if raw_active != self.candidate || self.since_ms == i64::MIN {
            self.candidate = raw_active;
            self.since_ms = now_ms;
        }
        if self.candidate != self.state
            && now_ms.saturating_sub(self.since_ms) >= i64::from(self.settle_ms)
        {
            self.state = self.candidate;
        }
        self.state
    }

    /// The debounced state without sampling.
    pub fn state(&self) -> bool {
        self.state
    }

    /// Gives the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

/// Flow-meter calibration: pulses the hall sensor emits per litre
/// (e.g. 450 for a YF-S201 style rotor, F = 7.5 × Q[L/min]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowCalibration {
    /// Pulses per litre.
    pub pulses_per_litre: u32,
}

impl FlowCalibration {
    /// Millilitres for `pulses`, rounded down; see [`FlowMeter`] for the carried remainder.
    pub const fn ml(self, pulses: u64) -> u64 {
        pulses * 1000 / self.pulses_per_litre as u64
    }
}

/// Counts rising edges of the flow sensor and converts them to millilitres, carrying
/// the fractional remainder so that no water is lost to rounding between reads.
///
/// On a board the pulse input is usually an interrupt or timer-capture counter; this
/// type accepts either polled levels ([`FlowMeter::poll`]) or counts from such a
/// counter ([`FlowMeter::add_pulses`]).
#[derive(Debug)]
pub struct FlowMeter<P> {
    pin: P,
    cal: FlowCalibration,
    last_high: bool,
    total_pulses: u64,
    emitted_ml: u64,
}

impl<P: InputPin> FlowMeter<P> {
    /// A meter on `pin` with calibration `cal`. A zero calibration is treated as 1 pulse/L.
    pub fn new(pin: P, mut cal: FlowCalibration) -> Self {
        if cal.pulses_per_litre == 0 {
            cal.pulses_per_litre = 1;
        }
        FlowMeter {
            pin,
            cal,
            last_high: false,
            total_pulses: 0,
            emitted_ml: 0,
        }
    }

    /// Samples the pin once; counts a pulse on a low-to-high transition.
    pub fn poll(&mut self) -> Result<(), P::Error> {
        let high = self.pin.is_high()?;
        if high && !self.last_high {
            self.add_pulses(1);
        }
        self.last_high = high;
        Ok(())
    }

    /// Adds pulses counted elsewhere (a hardware counter).
    pub fn add_pulses(&mut self, n: u32) {
        self.total_pulses += u64::from(n);
    }

    /// Millilitres since the last call; the sub-millilitre remainder stays pending.
    pub fn take_ml(&mut self) -> u32 {
        // Everything the pulses so far are worth, minus what was already handed out:
        // rounding never accumulates.
        let due = self.cal.ml(self.total_pulses);
        let ml = due.saturating_sub(self.emitted_ml).min(u64::from(u32::MAX));
        self.emitted_ml += ml;
        ml as u32
    }

    /// All pulses ever counted.
    pub fn total_pulses(&self) -> u64 {
        self.total_pulses
    }

    /// Gives the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as T};

    #[test]
    fn debounce_ignores_a_short_blip_and_accepts_a_stable_change() {
        let seq = [
            State::High,
            State::Low,
            State::High,
            State::High,
            State::High,
            State::Low,
            State::Low,
        ];
        let pin = PinMock::new(&seq.map(T::get));
        let mut seat = Debounced::new(pin, true, 500);
        assert!(!seat.sample(0).unwrap()); // first high seen at 0
        assert!(!seat.sample(100).unwrap()); // blip back to low
        assert!(!seat.sample(200).unwrap()); // high again from 200
        assert!(!seat.sample(600).unwrap()); // 400 ms stable: not yet
        assert!(seat.sample(700).unwrap()); // 500 ms stable: taken
        assert!(seat.sample(800).unwrap()); // low from 800
        assert!(!seat.sample(1300).unwrap()); // 500 ms low: released
        seat.release().done();
    }

    #[test]
    fn active_low_leak_probe() {
        let pin = PinMock::new(&[T::get(State::Low), T::get(State::Low)]);
        let mut probe = Debounced::new(pin, false, 1000);
        assert!(!probe.sample(0).unwrap());
        assert!(probe.sample(1000).unwrap());
        probe.release().done();
    }

    #[test]
    fn flow_meter_counts_rising_edges_and_carries_the_remainder() {
        // 3 rising edges out of this level sequence.
        let seq = [
            State::Low,
            State::High,
            State::High,
            State::Low,
            State::High,
            State::Low,
            State::High,
        ];
        let pin = PinMock::new(&seq.map(T::get));
        let mut meter = FlowMeter::new(
            pin,
            FlowCalibration {
                pulses_per_litre: 450,
            },
        );
        for _ in 0..seq.len() {
            meter.poll().unwrap();
        }
        assert_eq!(meter.total_pulses(), 3);
        assert_eq!(meter.take_ml(), 6); // 3 × 1000 / 450 = 6.67
        meter.add_pulses(447); // 450 pulses in all = exactly one litre
        assert_eq!(meter.take_ml(), 994);
        assert_eq!(meter.take_ml(), 0);
        meter.release().done();
    }

    #[test]
    fn flow_meter_never_loses_water_to_rounding() {
        let mut meter = FlowMeter::new(
            PinMock::new(&[]),
            FlowCalibration {
                pulses_per_litre: 7,
            },
        );
        let mut ml = 0u64;
        for _ in 0..700 {
            meter.add_pulses(1);
            ml += u64::from(meter.take_ml());
        }
        assert_eq!(ml, 100_000); // 700 pulses at 7/L = 100 L
        meter.release().done();
    }
}
