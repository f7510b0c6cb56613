//! The board layer: samples every input into one [`Sample`] and drives the outputs.
//!
//! Analog front ends on the ADS1115 (single-ended, one single shot each):
//!
//! | input | signal                                   | PGA      | conversion                          |
//! |-------|------------------------------------------|----------|-------------------------------------|
//! | AIN0  | water temperature, TMP36-style 10 mV/°C, 500 mV at 0 °C | ±4.096 V | m°C = (µV − 500 000) / 10 |
//! | AIN1  | pressure transducer 0.5–4.5 V = 0–1.2 MPa | ±6.144 V | Pa = (µV − 500 000) × 3 / 10        |
//! | AIN2  | inlet TDS probe, 0–2.3 V = 0–1000 ppm    | ±4.096 V | ppm = µV / 2 300                    |
//! | AIN3  | toilet: seat temperature (as AIN0); purifier: outlet TDS (as AIN2) | ±4.096 V | |
//!
//! Each conversion is tried [`RETRIES`] times; a sensor that fails every try is
//! reported as `None`, which the logic turns into a `sensor_error` fault if it persists.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{InputPin, OutputPin};
use embedded_hal::i2c::I2c;
use protocol::message::Model;

use crate::ads1115::{Ads1115, DataRate, Mux, Pga};
use crate::inputs::{Debounced, FlowMeter};
use crate::logic::{Demand, Outputs, Sample};

/// Attempts per analog reading before it counts as failed.
pub const RETRIES: u8 = 3;

/// TMP36-style sensor: microvolts to milli-°C.
pub const fn temp_mc_from_uv(uv: i32) -> i32 {
    (uv - 500_000) / 10
}

/// 0.5–4.5 V, 0–1.2 MPa transducer: microvolts to Pa (negative readings clamp to 0).
pub const fn pressure_pa_from_uv(uv: i32) -> i32 {
    let pa = (uv as i64 - 500_000) * 3 / 10;
    if pa < 0 {
        0
    } else {
        pa as i32
    }
}

/// TDS probe, 0–2.3 V for 0–1000 ppm: microvolts to ppm (clamped to 0..=5000).
pub const fn tds_ppm_from_uv(uv: i32) -> u16 {
    let ppm = uv as i64 / 2_300;
    if ppm < 0 {
        0
    } else if ppm > 5000 {
        5000
    } else {
        ppm as u16
    }
}

/// An output pin failed to switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputError<V, H> {
    /// The valve pin failed.
    Valve(V),
    /// The heater pin failed.
    Heater(H),
}

/// All of a fixture's I/O.
#[derive(Debug)]
pub struct Board<I2C, SEAT, LEAK, FLOW, VALVE, HEATER> {
    model: Model,
    adc: Ads1115<I2C>,
    seat: Debounced<SEAT>,
    leak: Debounced<LEAK>,
    flow: FlowMeter<FLOW>,
    valve: VALVE,
    heater: HEATER,
}

impl<I2C, SEAT, LEAK, FLOW, VALVE, HEATER> Board<I2C, SEAT, LEAK, FLOW, VALVE, HEATER>
where
    I2C: I2c,
    SEAT: InputPin,
    LEAK: InputPin,
    FLOW: InputPin,
    VALVE: OutputPin,
    HEATER: OutputPin,
{
    /// Assembles the board for `model`.
    pub fn new(
        model: Model,
        adc: Ads1115<I2C>,
        seat: Debounced<SEAT>,
        leak: Debounced<LEAK>,
        flow: FlowMeter<FLOW>,
        valve: VALVE,
        heater: HEATER,
    ) -> Self {
        Board {
            model,
            adc,
            seat,
            leak,
            flow,
            valve,
            heater,
        }
    }

    /// The flow meter, e.g. to feed it from a pulse-counting interrupt.
    pub fn flow_meter(&mut self) -> &mut FlowMeter<FLOW> {
        &mut self.flow
    }

    fn analog(&mut self, ch: u8, pga: Pga, delay: &mut impl DelayNs) -> Option<i32> {
        (0..RETRIES).find_map(|_| {
            self.adc
                .read_microvolts(Mux::single(ch), pga, DataRate::Sps128, delay)
                .ok()
        })
    }

    /// Samples every input at `now_ms`. A digital pin that fails to read keeps its last state.
    pub fn sample(&mut self, now_ms: i64, demand: Demand, delay: &mut impl DelayNs) -> Sample {
        let seat = if self.model == Model::Toilet {
            self.seat.sample(now_ms).unwrap_or(self.seat.state())
        } else {
            false
        };
        let leak_probe = self.leak.sample(now_ms).unwrap_or(self.leak.state());
        let _ = self.flow.poll();
        let flow_ml = self.flow.take_ml();
        let mut s = Sample {
            seat,
            leak_probe,
            demand,
            flow_ml,
            ..Sample::default()
        };
        match self.model {
            Model::Toilet => {
                s.water_temp_mc = self.analog(0, Pga::Fsr4_096, delay).map(temp_mc_from_uv);
                s.seat_temp_mc = self.analog(3, Pga::Fsr4_096, delay).map(temp_mc_from_uv);
            }
            Model::Purifier => {
                s.pressure_pa = self
                    .analog(1, Pga::Fsr6_144, delay)
                    .map(pressure_pa_from_uv);
                s.tds_in_ppm = self.analog(2, Pga::Fsr4_096, delay).map(tds_ppm_from_uv);
                s.tds_out_ppm = self.analog(3, Pga::Fsr4_096, delay).map(tds_ppm_from_uv);
            }
            Model::Shower => {
                s.water_temp_mc = self.analog(0, Pga::Fsr4_096, delay).map(temp_mc_from_uv);
                s.pressure_pa = self
                    .analog(1, Pga::Fsr6_144, delay)
                    .map(pressure_pa_from_uv);
            }
        }
        s
    }

    /// Drives the valve and heater pins.
    pub fn apply(&mut self, out: Outputs) -> Result<(), OutputError<VALVE::Error, HEATER::Error>> {
        self.valve
            .set_state(out.valve_open.into())
            .map_err(OutputError::Valve)?;
        self.heater
            .set_state(out.heater_on.into())
            .map_err(OutputError::Heater)?;
        Ok(())
    }

    /// Takes the board apart (tests call `.done()` on each mock).
    pub fn release(self) -> (I2C, SEAT, LEAK, FLOW, VALVE, HEATER) {
        (
            self.adc.release(),
            self.seat.release(),
            self.leak.release(),
            self.flow.release(),
            self.valve,
            self.heater,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ads1115::Address;
    use crate::inputs::FlowCalibration;
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as P};
    use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as T};

    const A: u8 = 0x48;

    /// The transactions of one successful single shot on `cfg_msb` (DR=128 SPS, comparator off: LSB 0x83)
    /// returning `code` (SBAS444D §9.6.3 Table 8 layout, §9.6.2 conversion register).
    fn shot(cfg_msb: u8, code: u16) -> [T; 3] {
        [
            T::write(A, vec![0x01, cfg_msb, 0x83]),
            T::write_read(A, vec![0x01], vec![cfg_msb, 0x83]), // OS=1: done
            T::write_read(A, vec![0x00], code.to_be_bytes().to_vec()),
        ]
    }

    #[test]
    fn conversions_match_the_front_end_datasheets() {
        assert_eq!(temp_mc_from_uv(750_000), 25_000); // TMP36: 750 mV at 25 °C
        assert_eq!(pressure_pa_from_uv(4_500_000), 1_200_000);
        assert_eq!(pressure_pa_from_uv(100_000), 0);
        assert_eq!(tds_ppm_from_uv(2_300_000), 1000);
    }

    #[test]
    fn toilet_sample_reads_ain0_and_ain3_with_a_retry_and_drives_pins() {
        // AIN0 single-ended (MUX=100), ±4.096 V (PGA=001), single shot: 1 100 001 1 = 0xC3.
        // AIN3: MUX=111 -> 1 111 001 1 = 0xF3.
        // 0x1770 = 6000 codes × 125 µV = 750 mV -> 25.0 °C; 0x1900 = 6400 × 125 µV = 800 mV -> 30.0 °C.
        let mut tx = vec![T::write(A, vec![0x01, 0xC3, 0x83]).with_error(ErrorKind::Bus)]; // first try fails
        tx.extend(shot(0xC3, 0x1770));
        tx.extend(shot(0xF3, 0x1900));
        let i2c = I2cMock::new(&tx);
        let seat = PinMock::new(&[P::get(State::High)]);
        let leak = PinMock::new(&[P::get(State::High)]); // active low: dry
        let flow = PinMock::new(&[P::get(State::High)]);
        let valve = PinMock::new(&[P::set(State::High)]);
        let heater = PinMock::new(&[P::set(State::Low)]);
        let mut board = Board::new(
            Model::Toilet,
            Ads1115::new(i2c, Address::Gnd),
            Debounced::new(seat, true, 0),
            Debounced::new(leak, false, 0),
            FlowMeter::new(
                flow,
                FlowCalibration {
                    pulses_per_litre: 1,
                },
            ),
            valve,
            heater,
        );
        let s = board.sample(1_000, Demand::Wash, &mut NoopDelay);
        assert_eq!(s.water_temp_mc, Some(25_000));
        assert_eq!(s.seat_temp_mc, Some(30_000));
        assert!(s.seat && !s.leak_probe);
        assert_eq!(s.flow_ml, 1000); // one pulse at 1 pulse/L
        board
            .apply(Outputs {
                valve_open: true,
                heater_on: false,
            })
            .unwrap();
        let (i2c, mut seat, mut leak, mut flow, mut valve, mut heater) = board.release();
        i2c.clone().done();
        seat.done();
        leak.done();
        flow.done();
        valve.done();
        heater.done();
    }

    #[test]
    fn purifier_sensor_that_fails_every_retry_is_none() {
        // AIN1 (MUX=101) ±6.144 V (PGA=000) single shot: 1 101 000 1 = 0xD1; 3 NACKed tries.
        let mut tx = vec![];
        for _ in 0..RETRIES {
            tx.push(T::write(A, vec![0x01, 0xD1, 0x83]).with_error(ErrorKind::Bus));
        }
        // AIN2 ±4.096: 1 110 001 1 = 0xE3, 0x2300 = 8960 × 125 µV = 1.12 V -> 486 ppm.
        tx.extend(shot(0xE3, 0x2300));
        // AIN3: 0xF3, 0x0100 = 256 × 125 µV = 32 mV -> 13 ppm.
        tx.extend(shot(0xF3, 0x0100));
        let leak = PinMock::new(&[P::get(State::Low)]);
        let flow = PinMock::new(&[P::get(State::Low)]);
        let mut board = Board::new(
            Model::Purifier,
            Ads1115::new(I2cMock::new(&tx), Address::Gnd),
            Debounced::new(PinMock::new(&[]), true, 0),
            Debounced::new(leak, false, 0),
            FlowMeter::new(
                flow,
                FlowCalibration {
                    pulses_per_litre: 450,
                },
            ),
            PinMock::new(&[]),
            PinMock::new(&[]),
        );
        let s = board.sample(0, Demand::None, &mut NoopDelay);
        assert_eq!(
            (s.pressure_pa, s.tds_in_ppm, s.tds_out_ppm),
            (None, Some(486), Some(13))
        );
        assert!(s.leak_probe);
        let (mut i2c, mut a, mut b, mut c, mut d, mut e) = board.release();
        i2c.done();
        a.done();
        b.done();
        c.done();
        d.done();
        e.done();
    }
}
