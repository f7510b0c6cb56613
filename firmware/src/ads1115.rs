//! Register-level driver for the TI ADS1115 16-bit I2C ADC (datasheet SBAS444D).
//!
//! The driver owns its bus (`I2C: embedded_hal::i2c::I2c`) and is usable with a
//! shared bus through `embedded-hal-bus` or `&mut I2C`. Its error is generic over
//! the bus error, so `?` works on bus calls. Nothing here allocates or reads a clock:
//! waiting for a single-shot conversion takes a `DelayNs` per call.
//!
//! Register map (SBAS444D §9.6): pointer `0x00` conversion register (two's
//! complement, MSB first), `0x01` config register, `0x02`/`0x03` Lo/Hi thresholds.
//! Config register layout (§9.6.3, Table 8), reset value `0x8583`:
//!
//! | bits  | field       | meaning                                                     |
//! |-------|-------------|-------------------------------------------------------------|
//! | 15    | OS          | write 1: start single shot; read 1: not converting          |
//! | 14:12 | MUX         | input multiplexer (differential or single-ended vs GND)     |
//! | 11:9  | PGA         | full-scale range ±6.144 … ±0.256 V                          |
//! | 8     | MODE        | 0 continuous, 1 single-shot / power-down                    |
//! | 7:5   | DR          | data rate 8 … 860 SPS                                       |
//! | 4     | COMP_MODE   | 0 traditional, 1 window comparator                          |
//! | 3     | COMP_POL    | ALERT/RDY polarity, 0 active low                            |
//! | 2     | COMP_LAT    | 0 non-latching, 1 latching                                  |
//! | 1:0   | COMP_QUE    | assert after 1/2/4 conversions, 11 = comparator disabled     |

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

/// Pointer register value of the conversion register (SBAS444D §9.6.1, Table 6).
pub const REG_CONVERSION: u8 = 0x00;
/// Pointer register value of the config register.
pub const REG_CONFIG: u8 = 0x01;
/// Pointer register value of the Lo_thresh register.
pub const REG_LO_THRESH: u8 = 0x02;
/// Pointer register value of the Hi_thresh register.
pub const REG_HI_THRESH: u8 = 0x03;

/// 7-bit I2C address, selected by what the ADDR pin is tied to (SBAS444D §9.5.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// ADDR to GND: `0x48`.
    Gnd,
    /// ADDR to VDD: `0x49`.
    Vdd,
    /// ADDR to SDA: `0x4A`.
    Sda,
    /// ADDR to SCL: `0x4B`.
    Scl,
}

impl Address {
    /// The 7-bit address.
    pub const fn bits(self) -> u8 {
        match self {
            Address::Gnd => 0x48,
            Address::Vdd => 0x49,
            Address::Sda => 0x4A,
            Address::Scl => 0x4B,
        }
    }
}

/// Input multiplexer setting, config bits 14:12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mux {
    /// AINP = AIN0, AINN = AIN1 (reset value).
    Diff01 = 0b000,
    /// AINP = AIN0, AINN = AIN3.
    Diff03 = 0b001,
    /// AINP = AIN1, AINN = AIN3.
    Diff13 = 0b010,
    /// AINP = AIN2, AINN = AIN3.
    Diff23 = 0b011,
    /// AIN0 against GND.
    Single0 = 0b100,
    /// AIN1 against GND.
    Single1 = 0b101,
    /// AIN2 against GND.
    Single2 = 0b110,
    /// AIN3 against GND.
    Single3 = 0b111,
}

impl Mux {
    /// The single-ended input for channel `n` (0..=3).
    pub const fn single(n: u8) -> Mux {
        match n & 3 {
            0 => Mux::Single0,
            1 => Mux::Single1,
            2 => Mux::Single2,
            _ => Mux::Single3,
        }
    }
    fn from_bits(b: u16) -> Mux {
        match b & 7 {
            0b000 => Mux::Diff01,
            0b001 => Mux::Diff03,
            0b010 => Mux::Diff13,
            0b011 => Mux::Diff23,
            0b100 => Mux::Single0,
            0b101 => Mux::Single1,
            0b110 => Mux::Single2,
            _ => Mux::Single3,
        }
    }
}

/// Programmable gain: full-scale range, config bits 11:9 (SBAS444D §9.3.3, Table 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pga {
    /// ±6.144 V, LSB 187.5 µV.
    Fsr6_144 = 0b000,
    /// ±4.096 V, LSB 125 µV.
    Fsr4_096 = 0b001,
    /// ±2.048 V, LSB 62.5 µV (reset value).
    Fsr2_048 = 0b010,
    /// ±1.024 V, LSB 31.25 µV.
    Fsr1_024 = 0b011,
    /// ±0.512 V, LSB 15.625 µV.
    Fsr0_512 = 0b100,
    /// ±0.256 V, LSB 7.8125 µV (codes 101b..111b all mean this).
    Fsr0_256 = 0b101,
}

impl Pga {
    /// Full-scale range in microvolts.
    pub const fn fsr_microvolts(self) -> i64 {
        match self {
            Pga::Fsr6_144 => 6_144_000,
            Pga::Fsr4_096 => 4_096_000,
            Pga::Fsr2_048 => 2_048_000,
            Pga::Fsr1_024 => 1_024_000,
            Pga::Fsr0_512 => 512_000,
            Pga::Fsr0_256 => 256_000,
        }
    }
    /// Converts a raw conversion code to microvolts: `code × FSR / 2¹⁵` (Table 3, "LSB size").
    pub const fn to_microvolts(self, code: i16) -> i32 {
        ((code as i64 * self.fsr_microvolts()) >> 15) as i32
    }
    fn from_bits(b: u16) -> Pga {
        match b & 7 {
            0b000 => Pga::Fsr6_144,
            0b001 => Pga::Fsr4_096,
            0b010 => Pga::Fsr2_048,
            0b011 => Pga::Fsr1_024,
            0b100 => Pga::Fsr0_512,
            _ => Pga::Fsr0_256,
        }
    }
}

/// Data rate, config bits 7:5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRate {
    /// 8 samples per second.
    Sps8 = 0b000,
    /// 16 SPS.
    Sps16 = 0b001,
    /// 32 SPS.
    Sps32 = 0b010,
    /// 64 SPS.
    Sps64 = 0b011,
    /// 128 SPS (reset value).
    Sps128 = 0b100,
    /// 250 SPS.
    Sps250 = 0b101,
    /// 475 SPS.
    Sps475 = 0b110,
    /// 860 SPS.
    Sps860 = 0b111,
}

impl DataRate {
    /// Samples per second.
    pub const fn sps(self) -> u32 {
        match self {
            DataRate::Sps8 => 8,
            DataRate::Sps16 => 16,
            DataRate::Sps32 => 32,
            DataRate::Sps64 => 64,
            DataRate::Sps128 => 128,
            DataRate::Sps250 => 250,
            DataRate::Sps475 => 475,
            DataRate::Sps860 => 860,
        }
    }
    /// One conversion period in microseconds, rounded up (conversion time is 1/DR, §9.4.2).
    pub const fn period_us(self) -> u32 {
        1_000_000u32.div_ceil(self.sps())
    }
    fn from_bits(b: u16) -> DataRate {
        match b & 7 {
            0b000 => DataRate::Sps8,
            0b001 => DataRate::Sps16,
            0b010 => DataRate::Sps32,
            0b011 => DataRate::Sps64,
            0b100 => DataRate::Sps128,
            0b101 => DataRate::Sps250,
            0b110 => DataRate::Sps475,
            _ => DataRate::Sps860,
        }
    }
}

/// Comparator queue, config bits 1:0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompQueue {
    /// Assert ALERT after one conversion.
    One = 0b00,
    /// After two conversions.
    Two = 0b01,
    /// After four conversions.
    Four = 0b10,
    /// Comparator disabled, ALERT/RDY high impedance (reset value).
    Disabled = 0b11,
}

/// The config register, field by field (SBAS444D §9.6.3, Table 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// OS: on write, start a single conversion; on read, true when idle.
    pub os: bool,
    /// Input multiplexer.
    pub mux: Mux,
    /// Full-scale range.
    pub pga: Pga,
    /// MODE: true for single-shot / power-down, false for continuous conversion.
    pub single_shot: bool,
    /// Data rate.
    pub data_rate: DataRate,
    /// COMP_MODE: true for window comparator.
    pub comp_window: bool,
    /// COMP_POL: true for active-high ALERT/RDY.
    pub comp_active_high: bool,
    /// COMP_LAT: true for latching comparator.
    pub comp_latching: bool,
    /// COMP_QUE.
    pub comp_queue: CompQueue,
}

impl Default for Config {
    /// The power-on reset value, `0x8583`.
    fn default() -> Self {
        Config::from_bits(0x8583)
    }
}

impl Config {
    /// Packs the fields into the 16-bit register value.
    pub const fn bits(&self) -> u16 {
        ((self.os as u16) << 15)
            | ((self.mux as u16) << 12)
            | ((self.pga as u16) << 9)
            | ((self.single_shot as u16) << 8)
            | ((self.data_rate as u16) << 5)
            | ((self.comp_window as u16) << 4)
            | ((self.comp_active_high as u16) << 3)
            | ((self.comp_latching as u16) << 2)
            | (self.comp_queue as u16)
    }

    /// Unpacks a 16-bit register value.
    pub fn from_bits(b: u16) -> Config {
        Config {
            os: b & 0x8000 != 0,
            mux: Mux::from_bits(b >> 12),
            pga: Pga::from_bits(b >> 9),
            single_shot: b & 0x0100 != 0,
            data_rate: DataRate::from_bits(b >> 5),
            comp_window: b & 0x10 != 0,
            comp_active_high: b & 0x08 != 0,
            comp_latching: b & 0x04 != 0,
            comp_queue: match b & 3 {
                0 => CompQueue::One,
                1 => CompQueue::Two,
                2 => CompQueue::Four,
                _ => CompQueue::Disabled,
            },
        }
    }
}

/// Driver error, generic over the bus error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The I2C bus failed (NACK, arbitration loss, …).
    I2c(E),
    /// A single-shot conversion did not finish (OS never read back 1) within the poll budget.
    Timeout,
}

impl<E> From<E> for Error<E> {
    fn from(e: E) -> Self {
        Error::I2c(e)
    }
}

/// How many conversion periods a single shot may take before [`Error::Timeout`].
pub const MAX_POLLS: u8 = 4;

/// An ADS1115 on an I2C bus.
#[derive(Debug)]
pub struct Ads1115<I2C> {
    i2c: I2C,
    address: u8,
}

impl<I2C: I2c> Ads1115<I2C> {
    /// Wraps the bus; the device is not touched until the first call.
    pub fn new(i2c: I2C, address: Address) -> Self {
        Ads1115 {
            i2c,
            address: address.bits(),
        }
    }

    /// Gives the bus back (in tests: to call `.done()` on the mock).
    pub fn release(self) -> I2C {
        self.i2c
    }

    /// Writes a 16-bit register: pointer byte, then MSB, then LSB (SBAS444D §9.5.3, Figure 29).
    pub fn write_register(&mut self, reg: u8, value: u16) -> Result<(), Error<I2C::Error>> {
        let [hi, lo] = value.to_be_bytes();
        self.i2c.write(self.address, &[reg, hi, lo])?;
        Ok(())
    }

    /// Reads a 16-bit register: writes the pointer byte, then reads MSB and LSB (Figure 30).
    pub fn read_register(&mut self, reg: u8) -> Result<u16, Error<I2C::Error>> {
        let mut buf = [0u8; 2];
        self.i2c.write_read(self.address, &[reg], &mut buf)?;
        Ok(u16::from_be_bytes(buf))
    }

    /// Writes the config register.
    pub fn write_config(&mut self, config: Config) -> Result<(), Error<I2C::Error>> {
        self.write_register(REG_CONFIG, config.bits())
    }

    /// Reads the config register.
    pub fn read_config(&mut self) -> Result<Config, Error<I2C::Error>> {
        Ok(Config::from_bits(self.read_register(REG_CONFIG)?))
    }

    /// Reads the last conversion result (two's complement).
    pub fn read_conversion(&mut self) -> Result<i16, Error<I2C::Error>> {
        Ok(self.read_register(REG_CONVERSION)? as i16)
    }

    /// Starts continuous conversion on `mux` with `pga` and `data_rate`, comparator off.
    pub fn start_continuous(
        &mut self,
        mux: Mux,
        pga: Pga,
        data_rate: DataRate,
    ) -> Result<(), Error<I2C::Error>> {
        // OS=1 as in the datasheet's quickstart example; in continuous mode it has no further effect.
        self.write_config(Config {
            os: true,
            mux,
            pga,
            single_shot: false,
            data_rate,
            ..Config::default()
        })
    }

    /// Runs one single-shot conversion and returns the raw code.
    ///
    /// Writes the config with OS=1 and MODE=1, waits one conversion period, then polls
    /// the OS bit (1 = idle, conversion done) up to [`MAX_POLLS`] times before reading
    /// the conversion register.
    pub fn read_single_shot(
        &mut self,
        mux: Mux,
        pga: Pga,
        data_rate: DataRate,
        delay: &mut impl DelayNs,
    ) -> Result<i16, Error<I2C::Error>> {
        let config = Config {
            os: true,
            mux,
            pga,
            single_shot: true,
            data_rate,
            ..Config::default()
        };
        self.write_config(config)?;
        for _ in 0..MAX_POLLS {
            delay.delay_us(data_rate.period_us());
            if self.read_config()?.os {
                return self.read_conversion();
            }
        }
        Err(Error::Timeout)
    }

    /// Single-shot conversion converted to microvolts.
    pub fn read_microvolts(
        &mut self,
        mux: Mux,
        pga: Pga,
        data_rate: DataRate,
        delay: &mut impl DelayNs,
    ) -> Result<i32, Error<I2C::Error>> {
        Ok(pga.to_microvolts(self.read_single_shot(mux, pga, data_rate, delay)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction};

    const ADDR: u8 = 0x48;

    #[test]
    fn reset_value_is_0x8583_field_by_field() {
        // SBAS444D §9.6.3, Table 8: OS=1, MUX=000, PGA=010, MODE=1, DR=100, COMP_MODE=0,
        // COMP_POL=0, COMP_LAT=0, COMP_QUE=11 -> 1000 0101 1000 0011 = 0x8583.
        let c = Config::default();
        assert!(c.os && c.single_shot);
        assert_eq!(
            (c.mux, c.pga, c.data_rate, c.comp_queue),
            (
                Mux::Diff01,
                Pga::Fsr2_048,
                DataRate::Sps128,
                CompQueue::Disabled
            )
        );
        assert_eq!(c.bits(), 0x8583);
        assert_eq!(Config::from_bits(c.bits()), c);
    }

    #[test]
    fn every_config_field_round_trips() {
        for b in [0x0000u16, 0xFFFF, 0x8583, 0x8483, 0xC383, 0x5E1F] {
            let c = Config::from_bits(b);
            // PGA codes 110 and 111 alias 101 (±0.256 V); normalise them before comparing.
            let pga_alias = if (b >> 9) & 7 >= 5 {
                (b & !0x0E00) | 0x0A00
            } else {
                b
            };
            assert_eq!(c.bits(), pga_alias, "{b:#06x}");
        }
    }

    #[test]
    fn addresses_follow_the_addr_pin() {
        // SBAS444D §9.5.1.1, Table 4: GND 1001000, VDD 1001001, SDA 1001010, SCL 1001011.
        assert_eq!(
            [Address::Gnd, Address::Vdd, Address::Sda, Address::Scl].map(Address::bits),
            [0x48, 0x49, 0x4A, 0x4B]
        );
    }

    #[test]
    fn quickstart_sequence_writes_0x8483_then_reads_conversion() {
        // SBAS444D "Quickstart guide" (§9.5.3 example): write Config with bytes 0x01,
        // 0b1000_0100, 0b1000_0011 (continuous, AIN0/AIN1, ±2.048 V, 128 SPS),
        // then point at 0x00 and read two bytes of the conversion register.
        let expectations = [
            Transaction::write(ADDR, vec![0x01, 0b1000_0100, 0b1000_0011]),
            Transaction::write_read(ADDR, vec![0x00], vec![0x7F, 0xFF]),
        ];
        let mut adc = Ads1115::new(I2cMock::new(&expectations), Address::Gnd);
        adc.start_continuous(Mux::Diff01, Pga::Fsr2_048, DataRate::Sps128)
            .unwrap();
        // §9.3.4 Table 5 (output codes): 0x7FFF is positive full scale.
        assert_eq!(adc.read_conversion().unwrap(), 0x7FFF);
        adc.release().done();
    }

    #[test]
    fn single_shot_polls_os_then_reads_conversion() {
        // Single shot on AIN2 vs GND, ±4.096 V, 860 SPS: OS=1 MUX=110 PGA=001 MODE=1
        // -> 1110 0011 = 0xE3; DR=111 COMP=00011 -> 1110 0011 = 0xE3.
        // First poll: OS=0 (converting, config reads back 0x63E3); second poll OS=1.
        let expectations = [
            Transaction::write(ADDR, vec![0x01, 0xE3, 0xE3]),
            Transaction::write_read(ADDR, vec![0x01], vec![0x63, 0xE3]),
            Transaction::write_read(ADDR, vec![0x01], vec![0xE3, 0xE3]),
            Transaction::write_read(ADDR, vec![0x00], vec![0x40, 0x00]),
        ];
        let mut adc = Ads1115::new(I2cMock::new(&expectations), Address::Gnd);
        let uv = adc
            .read_microvolts(
                Mux::Single2,
                Pga::Fsr4_096,
                DataRate::Sps860,
                &mut NoopDelay,
            )
            .unwrap();
        // 0x4000 = 16384 codes × 125 µV = 2.048 V.
        assert_eq!(uv, 2_048_000);
        adc.release().done();
    }

    #[test]
    fn negative_full_scale_and_lsb_size() {
        // Table 5: 0x8000 is -FS; Table 3: LSB at ±2.048 V is 62.5 µV.
        assert_eq!(Pga::Fsr2_048.to_microvolts(i16::MIN), -2_048_000);
        assert_eq!(Pga::Fsr2_048.to_microvolts(16), 1_000);
        assert_eq!(Pga::Fsr6_144.to_microvolts(2), 375);
        assert_eq!(Pga::Fsr0_256.to_microvolts(-1), -8); // floor of -7.8125
    }

    #[test]
    fn conversion_that_never_finishes_times_out() {
        let mut expectations = vec![Transaction::write(ADDR, vec![0x01, 0xC1, 0x83])];
        for _ in 0..MAX_POLLS {
            expectations.push(Transaction::write_read(ADDR, vec![0x01], vec![0x41, 0x83]));
        }
        let mut adc = Ads1115::new(I2cMock::new(&expectations), Address::Gnd);
        let r = adc.read_single_shot(
            Mux::Single0,
            Pga::Fsr6_144,
            DataRate::Sps128,
            &mut NoopDelay,
        );
        assert_eq!(r, Err(Error::Timeout));
        adc.release().done();
    }

    #[test]
    fn bus_error_is_passed_through() {
        let expectations = [Transaction::write(ADDR, vec![0x01, 0xC1, 0x83]).with_error(
            ErrorKind::NoAcknowledge(embedded_hal::i2c::NoAcknowledgeSource::Address),
        )];
        let mut adc = Ads1115::new(I2cMock::new(&expectations), Address::Gnd);
        let r = adc.read_single_shot(
            Mux::Single0,
            Pga::Fsr6_144,
            DataRate::Sps128,
            &mut NoopDelay,
        );
        assert!(matches!(r, Err(Error::I2c(ErrorKind::NoAcknowledge(_)))));
        adc.release().done();
    }
}
