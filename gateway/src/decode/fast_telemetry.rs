//! A fast path for the payload fixtures send most: telemetry.
//!
//! [`telemetry`] reads a telemetry payload in one pass over its bytes, without serde's
//! generic machinery (serde_json into the contract's types was a third of the gateway's
//! instructions per message). It is a shortcut, never a judge: it returns `None` whenever it
//! is not certain the payload is one serde_json reads, and then the caller hands the same
//! text to serde_json, which decides and names any rejection. So it may only return what
//! `serde_json::from_str::<Telemetry>` returns for the same text; the tests below hold it to
//! that, field by field and bit by bit, on valid payloads and on every small damage to them.
//!
//! What it leaves to serde_json (returns `None`): escapes or control characters in a
//! string, an unknown, duplicate or missing field, a string longer than its field holds, a
//! sign on a counter, a number with an exponent or more than 15 digits, more than
//! [`MAX_CARTRIDGES`] cartridges, anything after the object but whitespace.
//!
//! Gauges are computed as serde_json 1.x does without its `float_roundtrip` feature (the
//! gateway does not enable it): the digits as one integer `m` below 10^15, then
//! `m / 10^k` in `f64` (both exact, so one IEEE rounding), then `as f32`.

use protocol::message::{
    Cartridge, CartridgeKind, PurifierReading, Reading, ShowerReading, Telemetry, ToiletReading,
    INVALID_PPM, MAX_CARTRIDGES,
};

/// The telemetry `text` holds, or `None` when serde_json must decide (see the module docs).
pub(crate) fn telemetry(text: &str) -> Option<Telemetry> {
    let mut cursor = Cursor {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    let telemetry = cursor.telemetry()?;
    cursor.end()?;
    Some(telemetry)
}

/// Powers of ten exact in `f64`, as many as a 15-digit decimal needs.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Most digits of a gauge read here (their integer stays below 2^53, so exact in `f64`).
const MAX_GAUGE_DIGITS: usize = 15;

/// Index of the first `"`, `\` or control character (below 0x20) in `bytes`: eight bytes
/// at a time ("has a zero byte" word tests; the lowest flagged byte of each test is always a
/// true match, so the lowest of the three is the first).
fn string_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    const SPACES: u64 = ONES * 0x20;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let quote = w ^ QUOTES;
        let backslash = w ^ BACKSLASHES;
        let found = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | w.wrapping_sub(SPACES) & !w)
            & HIGH;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| offset + i)
}

/// Where `key` is in `fields`, trying `hint` first (the field after the previous one: the
/// order serializers write them in).
fn field_index(fields: &[&str], key: &str, hint: usize) -> Option<usize> {
    if fields.get(hint) == Some(&key) {
        return Some(hint);
    }
    fields.iter().position(|field| *field == key)
}

/// The bits of the first `n` fields.
const fn first(n: u32) -> u32 {
    (1 << n) - 1
}

struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.at).copied()
    }

    /// Consumes `byte` (after whitespace), or `None`.
    #[inline]
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Option<()> {
        self.skip_whitespace();
        (self.at == self.bytes.len()).then_some(())
    }

    /// Consumes `literal` if it comes next.
    #[inline]
    fn literal(&mut self, literal: &[u8]) -> bool {
        self.skip_whitespace();
        let found = self
            .bytes
            .get(self.at..)
            .is_some_and(|rest| rest.starts_with(literal));
        if found {
            self.at += literal.len();
        }
        found
    }

    /// A string with no escape and no control character.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let len = string_end(self.bytes.get(start..)?)?;
        if self.bytes[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // The quotes are ASCII, so both ends are character boundaries.
        self.text.get(start..start + len)
    }

    /// Consumes the key `fields[hint]` (the one a serializer writes next) if it comes next,
    /// compared in place; `None` leaves the cursor where it was. Field names have no quote,
    /// backslash or control character, so the bytes `"name"` are that key and no other.
    #[inline]
    fn expected_key(&mut self, fields: &[&str], hint: usize) -> Option<usize> {
        let name = fields.get(hint)?.as_bytes();
        self.skip_whitespace();
        let rest = self.bytes.get(self.at..)?;
        let found = rest.len() > name.len() + 1
            && rest[0] == b'"'
            && rest[name.len() + 1] == b'"'
            && &rest[1..=name.len()] == name;
        if found {
            self.at += name.len() + 2;
            return Some(hint);
        }
        None
    }

    /// An object whose keys are `fields` (each at most once): `field` is called with each
    /// key's index, the cursor before its value. Returns the fields seen, one bit each.
    fn object(
        &mut self,
        fields: &[&str],
        mut field: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<u32> {
        let mut seen = 0u32;
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(seen);
        }
        let mut hint = 0;
        loop {
            let index = match self.expected_key(fields, hint) {
                Some(index) => index,
                None => field_index(fields, self.string()?, hint)?,
            };
            let bit = 1 << index;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            hint = index + 1;
            self.eat(b':')?;
            field(self, index)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(seen);
                }
                _ => return None,
            }
        }
    }

    /// Decimal digits as an integer and their count; `None` for none, a leading zero
    /// followed by a digit, or more than `u64` holds.
    #[inline]
    fn digits(&mut self) -> Option<(u64, usize)> {
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(&b) = self.bytes.get(self.at) {
            if !b.is_ascii_digit() {
                break;
            }
            value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            self.at += 1;
        }
        let count = self.at - start;
        if count == 0 || (count > 1 && self.bytes[start] == b'0') {
            return None;
        }
        Some((value, count))
    }

    /// A counter: digits only (no sign, fraction or exponent).
    #[inline]
    fn unsigned(&mut self) -> Option<u64> {
        self.skip_whitespace();
        let (value, _) = self.digits()?;
        match self.bytes.get(self.at) {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(value),
        }
    }

    fn u8(&mut self) -> Option<u8> {
        u8::try_from(self.unsigned()?).ok()
    }

    fn u16(&mut self) -> Option<u16> {
        u16::try_from(self.unsigned()?).ok()
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.unsigned()?).ok()
    }

    fn i64(&mut self) -> Option<i64> {
        i64::try_from(self.unsigned()?).ok()
    }

    /// A float gauge: `null` (missing, NaN) or a decimal of at most 15 digits without an
    /// exponent, computed as serde_json computes it (module docs).
    fn gauge(&mut self) -> Option<f32> {
        if self.literal(b"null") {
            return Some(f32::NAN);
        }
        let negative = self.bytes.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let (mut mantissa, mut digits) = self.digits()?;
        let mut scale = 0;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            let start = self.at;
            while let Some(&b) = self.bytes.get(self.at) {
                if !b.is_ascii_digit() {
                    break;
                }
                mantissa = mantissa.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                self.at += 1;
            }
            scale = self.at - start;
            if scale == 0 {
                return None;
            }
            digits += scale;
        }
        if digits > MAX_GAUGE_DIGITS || matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            return None;
        }
        // Below 10^15 < 2^53: the conversion is exact, the division rounds once.
        #[allow(clippy::cast_precision_loss)]
        let magnitude = mantissa as f64 / POW10[scale];
        let value = if negative { -magnitude } else { magnitude };
        #[allow(clippy::cast_possible_truncation)]
        Some(value as f32)
    }

    /// A TDS gauge: `null` (missing) or a `u16`.
    fn ppm_gauge(&mut self) -> Option<u16> {
        if self.literal(b"null") {
            return Some(INVALID_PPM);
        }
        self.u16()
    }

    /// A heapless string of at most `N` bytes.
    fn bounded_string<const N: usize>(&mut self) -> Option<heapless::String<N>> {
        let mut s = heapless::String::new();
        s.push_str(self.string()?).ok()?;
        Some(s)
    }

    /// `null` (absent) or what `value` reads.
    fn optional<T>(&mut self, value: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.literal(b"null") {
            return Some(None);
        }
        value(self).map(Some)
    }

    fn telemetry(&mut self) -> Option<Telemetry> {
        // In the order of `Telemetry`'s fields (a serializer's order); all but `fw` required.
        const FIELDS: [&str; 7] = ["v", "device_id", "boot_id", "seq", "ts", "fw", "reading"];
        const REQUIRED: u32 = first(7) & !(1 << 5);
        let mut t = Telemetry {
            v: 0,
            device_id: heapless::String::new(),
            boot_id: 0,
            seq: 0,
            ts: 0,
            fw: None,
            reading: Reading::Toilet(ToiletReading {
                seat_sessions: 0,
                washes: 0,
                wash_seconds: 0,
                flushes: 0,
                water_ml: 0,
                heater_wh: 0,
                water_temp_c: f32::NAN,
                seat_temp_c: f32::NAN,
            }),
        };
        let seen = self.object(&FIELDS, |c, field| {
            match field {
                0 => t.v = c.u8()?,
                1 => t.device_id = c.bounded_string()?,
                2 => t.boot_id = c.u32()?,
                3 => t.seq = c.u32()?,
                4 => t.ts = c.i64()?,
                5 => t.fw = c.optional(Self::bounded_string)?,
                _ => t.reading = c.reading()?,
            }
            Some(())
        })?;
        (seen & REQUIRED == REQUIRED).then_some(t)
    }

    /// `{"toilet": {...}}`, `{"purifier": {...}}` or `{"shower": {...}}`.
    fn reading(&mut self) -> Option<Reading> {
        self.eat(b'{')?;
        let model = self.string()?;
        self.eat(b':')?;
        let reading = match model {
            "toilet" => Reading::Toilet(self.toilet()?),
            "purifier" => Reading::Purifier(self.purifier()?),
            "shower" => Reading::Shower(self.shower()?),
            _ => return None,
        };
        self.eat(b'}')?;
        Some(reading)
    }

    fn toilet(&mut self) -> Option<ToiletReading> {
        // `ToiletReading`'s order; the two gauges (last) may be absent.
        const FIELDS: [&str; 8] = [
            "seat_sessions",
            "washes",
            "wash_seconds",
            "flushes",
            "water_ml",
            "heater_wh",
            "water_temp_c",
            "seat_temp_c",
        ];
        let mut r = ToiletReading {
            seat_sessions: 0,
            washes: 0,
            wash_seconds: 0,
            flushes: 0,
            water_ml: 0,
            heater_wh: 0,
            water_temp_c: f32::NAN,
            seat_temp_c: f32::NAN,
        };
        let seen = self.object(&FIELDS, |c, field| {
            match field {
                0 => r.seat_sessions = c.u32()?,
                1 => r.washes = c.u32()?,
                2 => r.wash_seconds = c.u32()?,
                3 => r.flushes = c.u32()?,
                4 => r.water_ml = c.unsigned()?,
                5 => r.heater_wh = c.u32()?,
                6 => r.water_temp_c = c.gauge()?,
                _ => r.seat_temp_c = c.gauge()?,
            }
            Some(())
        })?;
        (seen & first(6) == first(6)).then_some(r)
    }

    fn purifier(&mut self) -> Option<PurifierReading> {
        // `PurifierReading`'s order; the three gauges may be absent.
        const FIELDS: [&str; 6] = [
            "dispensed_ml",
            "tds_in_ppm",
            "tds_out_ppm",
            "inlet_pressure_kpa",
            "pump_seconds",
            "cartridges",
        ];
        const REQUIRED: u32 = 1 | 1 << 4 | 1 << 5;
        let mut r = PurifierReading {
            dispensed_ml: 0,
            tds_in_ppm: INVALID_PPM,
            tds_out_ppm: INVALID_PPM,
            inlet_pressure_kpa: f32::NAN,
            pump_seconds: 0,
            cartridges: heapless::Vec::new(),
        };
        let seen = self.object(&FIELDS, |c, field| {
            match field {
                0 => r.dispensed_ml = c.unsigned()?,
                1 => r.tds_in_ppm = c.ppm_gauge()?,
                2 => r.tds_out_ppm = c.ppm_gauge()?,
                3 => r.inlet_pressure_kpa = c.gauge()?,
                4 => r.pump_seconds = c.u32()?,
                _ => r.cartridges = c.cartridges()?,
            }
            Some(())
        })?;
        (seen & REQUIRED == REQUIRED).then_some(r)
    }

    fn shower(&mut self) -> Option<ShowerReading> {
        // `ShowerReading`'s order; the two gauges may be absent.
        const FIELDS: [&str; 6] = [
            "showers",
            "water_ml",
            "shower_seconds",
            "temp_c",
            "pressure_kpa",
            "cartridges",
        ];
        const REQUIRED: u32 = first(3) | 1 << 5;
        let mut r = ShowerReading {
            showers: 0,
            water_ml: 0,
            shower_seconds: 0,
            temp_c: f32::NAN,
            pressure_kpa: f32::NAN,
            cartridges: heapless::Vec::new(),
        };
        let seen = self.object(&FIELDS, |c, field| {
            match field {
                0 => r.showers = c.u32()?,
                1 => r.water_ml = c.unsigned()?,
                2 => r.shower_seconds = c.u32()?,
                3 => r.temp_c = c.gauge()?,
                4 => r.pressure_kpa = c.gauge()?,
                _ => r.cartridges = c.cartridges()?,
            }
            Some(())
        })?;
        (seen & REQUIRED == REQUIRED).then_some(r)
    }

    /// An array of at most [`MAX_CARTRIDGES`] cartridges.
    fn cartridges(&mut self) -> Option<heapless::Vec<Cartridge, MAX_CARTRIDGES>> {
        let mut list = heapless::Vec::new();
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.at += 1;
            return Some(list);
        }
        loop {
            list.push(self.cartridge()?).ok()?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(list);
                }
                _ => return None,
            }
        }
    }

    fn cartridge(&mut self) -> Option<Cartridge> {
        // `Cartridge`'s order; `rated_l` may be absent.
        const FIELDS: [&str; 5] = [
            "slot",
            "kind",
            "ml_since_replacement",
            "replacements",
            "rated_l",
        ];
        let mut cartridge = Cartridge {
            slot: 0,
            kind: CartridgeKind::Sediment,
            ml_since_replacement: 0,
            replacements: 0,
            rated_l: None,
        };
        let seen = self.object(&FIELDS, |c, field| {
            match field {
                0 => cartridge.slot = c.u8()?,
                1 => {
                    cartridge.kind = match c.string()? {
                        "sediment" => CartridgeKind::Sediment,
                        "carbon" => CartridgeKind::Carbon,
                        "reverse_osmosis" => CartridgeKind::ReverseOsmosis,
                        "shower" => CartridgeKind::Shower,
                        _ => return None,
                    }
                }
                2 => cartridge.ml_since_replacement = c.unsigned()?,
                3 => cartridge.replacements = c.u32()?,
                _ => cartridge.rated_l = c.optional(Self::u32)?,
            }
            Some(())
        })?;
        (seen & first(4) == first(4)).then_some(cartridge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::message::FirmwareVersion;

    /// splitmix64: a fixed, dependency-free sequence of test inputs.
    struct Sequence(u64);

    impl Sequence {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The same value, bit for bit (serialised: ryu's shortest form tells every f32 apart,
    /// and a missing gauge is `null` on both sides).
    fn same(a: &Telemetry, b: &Telemetry) -> bool {
        serde_json::to_string(a).ok() == serde_json::to_string(b).ok()
    }

    /// Holds the fast path to serde_json on `text`: whatever it returns, serde_json returns
    /// too. Says whether the fast path took the text.
    fn agrees(text: &str) -> bool {
        let Some(fast) = telemetry(text) else {
            return false;
        };
        match serde_json::from_str::<Telemetry>(text) {
            Ok(slow) => assert!(
                same(&fast, &slow),
                "fast path and serde_json differ on {text:?}:\n{fast:?}\n{slow:?}"
            ),
            Err(e) => panic!("fast path accepted what serde_json refuses ({e}): {text:?}"),
        }
        true
    }

    fn gauge(seq: &mut Sequence, low: f32, high: f32) -> f32 {
        match seq.below(10) {
            0 => f32::NAN,
            1 => (low + (high - low) * (seq.below(1_000) as f32 / 1_000.0) * 10.0).round() / 10.0,
            _ => low + (high - low) * (seq.below(1 << 24) as f32 / (1 << 24) as f32),
        }
    }

    fn cartridges(seq: &mut Sequence) -> heapless::Vec<Cartridge, MAX_CARTRIDGES> {
        let kinds = [
            CartridgeKind::Sediment,
            CartridgeKind::Carbon,
            CartridgeKind::ReverseOsmosis,
            CartridgeKind::Shower,
        ];
        (0..seq.below(MAX_CARTRIDGES as u64 + 1))
            .map(|slot| Cartridge {
                slot: slot as u8,
                kind: kinds[seq.below(4) as usize],
                ml_since_replacement: seq.below(1 << 40),
                replacements: seq.below(u64::from(u32::MAX) + 1) as u32,
                rated_l: (seq.below(2) == 0).then(|| seq.below(20_000) as u32),
            })
            .collect()
    }

    /// A telemetry message with every field drawn from `seq`, in sensor-like ranges.
    fn message(seq: &mut Sequence) -> Telemetry {
        let reading = match seq.below(3) {
            0 => Reading::Toilet(ToiletReading {
                seat_sessions: seq.next() as u32,
                washes: seq.below(1_000) as u32,
                wash_seconds: seq.next() as u32,
                flushes: seq.below(100_000) as u32,
                water_ml: seq.next() >> seq.below(64),
                heater_wh: seq.next() as u32,
                water_temp_c: gauge(seq, 5.0, 45.0),
                seat_temp_c: gauge(seq, -10.0, 40.0),
            }),
            1 => Reading::Purifier(PurifierReading {
                dispensed_ml: seq.next() >> seq.below(64),
                tds_in_ppm: if seq.below(8) == 0 {
                    INVALID_PPM
                } else {
                    seq.below(2_000) as u16
                },
                tds_out_ppm: seq.below(u64::from(u16::MAX) + 1) as u16,
                inlet_pressure_kpa: gauge(seq, 0.0, 800.0),
                pump_seconds: seq.next() as u32,
                cartridges: cartridges(seq),
            }),
            _ => Reading::Shower(ShowerReading {
                showers: seq.next() as u32,
                water_ml: seq.next() >> seq.below(64),
                shower_seconds: seq.next() as u32,
                temp_c: gauge(seq, -5.0, 60.0),
                pressure_kpa: gauge(seq, 0.0, 700.0),
                cartridges: cartridges(seq),
            }),
        };
        let mut device_id = protocol::DeviceId::new();
        for _ in 0..=seq.below(protocol::MAX_DEVICE_ID_LEN as u64) {
            let _ = device_id.push(char::from(
                b"abcdefghijklmnopqrstuvwxyz0123456789-_"[seq.below(38) as usize],
            ));
        }
        Telemetry {
            v: 1,
            device_id,
            boot_id: seq.next() as u32,
            seq: seq.next() as u32,
            ts: (seq.next() >> 1) as i64 >> seq.below(63),
            fw: (seq.below(2) == 0).then(|| {
                let mut fw = FirmwareVersion::new();
                let _ = fw.push_str(&format!(
                    "{}.{}.{}",
                    seq.below(10),
                    seq.below(100),
                    seq.below(1000)
                ));
                fw
            }),
            reading,
        }
    }

    #[test]
    fn takes_every_message_the_contract_writes_and_reads_what_serde_json_reads() {
        let mut seq = Sequence(1);
        for _ in 0..20_000 {
            let msg = message(&mut seq);
            for text in [
                serde_json::to_string(&msg).expect("serialises"),
                serde_json::to_string_pretty(&msg).expect("serialises"),
            ] {
                assert!(
                    agrees(&text),
                    "the fast path left a plain message to serde_json: {text}"
                );
            }
        }
    }

    #[test]
    fn every_small_damage_to_a_message_is_read_as_serde_json_reads_it_or_left_to_it() {
        const BYTES: &[u8] = b" \n0159-.eE+\"\\{}[],:nulx\x01\x7f";
        const INSERTS: &[&str] = &[
            " ",
            "\t",
            "0",
            "9",
            "-",
            ".",
            ".5",
            "e1",
            "E-2",
            "\"",
            "\\",
            "\\n",
            "null",
            ",",
            ":",
            "{",
            "}",
            "[",
            "]",
            "\"v\":1,",
            "\"seq\":7,",
            "\"extra\":1,",
            ",\"fw\":null",
            "\u{1}",
            "é",
            "00",
            "1e2",
            "18446744073709551616",
            "4294967296",
            "256",
            "65536",
            "true",
            "\"\"",
            "[]",
            "{}",
        ];
        let mut seq = Sequence(7);
        let mut bases = Vec::new();
        while bases.len() < 6 {
            let msg = message(&mut seq);
            // Every model, with cartridges and a firmware version.
            let wanted = match &msg.reading {
                Reading::Toilet(_) => bases.len() < 2,
                Reading::Purifier(r) => r.cartridges.len() >= 2 && (2..4).contains(&bases.len()),
                Reading::Shower(r) => !r.cartridges.is_empty() && bases.len() >= 4,
            };
            if wanted && msg.fw.is_some() {
                bases.push(serde_json::to_string(&msg).expect("serialises"));
            }
        }
        let (mut variants, mut taken) = (0usize, 0usize);
        let mut try_one = |bytes: Vec<u8>| {
            if let Ok(text) = String::from_utf8(bytes) {
                variants += 1;
                taken += usize::from(agrees(&text));
            }
        };
        for base in &bases {
            let bytes = base.as_bytes();
            for at in 0..=bytes.len() {
                if at < bytes.len() {
                    let mut cut = bytes.to_vec();
                    cut.remove(at);
                    try_one(cut);
                    for &b in BYTES {
                        let mut changed = bytes.to_vec();
                        changed[at] = b;
                        try_one(changed);
                    }
                }
                for insert in INSERTS {
                    let mut longer = bytes[..at].to_vec();
                    longer.extend_from_slice(insert.as_bytes());
                    longer.extend_from_slice(&bytes[at..]);
                    try_one(longer);
                }
            }
        }
        // Not vacuous: some damage is harmless (whitespace, a digit more), most is not.
        assert!(variants > 50_000, "{variants} variants");
        assert!(
            taken > variants / 20 && taken < variants / 2,
            "{taken} of {variants} taken"
        );
    }

    #[test]
    fn string_end_finds_the_first_quote_backslash_or_control_character() {
        let plain = |bytes: &[u8]| {
            bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        };
        for len in 0..20 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    // One byte of every value at every place, after plain letters, and with a
                    // second stop later on (the word test must report the first).
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    assert_eq!(string_end(&bytes), plain(&bytes), "{bytes:?}");
                    if at + 1 < len {
                        bytes[len - 1] = b'"';
                        assert_eq!(string_end(&bytes), plain(&bytes), "{bytes:?}");
                    }
                }
            }
        }
        let mut seq = Sequence(11);
        for _ in 0..100_000 {
            let bytes: Vec<u8> = (0..seq.below(40))
                .map(|_| match seq.below(4) {
                    0 => seq.next() as u8,
                    _ => b'a' + seq.below(26) as u8,
                })
                .collect();
            assert_eq!(string_end(&bytes), plain(&bytes), "{bytes:?}");
        }
    }

    /// `value` as JSON with every object's keys in the reverse of their order in `value`
    /// (serde_json's map sorts them), and its floats in f32's shortest form (they are f32s
    /// widened by `to_value`).
    fn write_reversed(value: &serde_json::Value, out: &mut String) {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                out.push('{');
                for (i, (key, value)) in map.iter().rev().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("{key:?}:"));
                    write_reversed(value, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_reversed(item, out);
                }
                out.push(']');
            }
            Value::Number(n) if n.is_f64() => {
                let x = n.as_f64().unwrap_or(f64::NAN) as f32;
                out.push_str(ryu::Buffer::new().format_finite(x));
            }
            other => out.push_str(&other.to_string()),
        }
    }

    #[test]
    fn fields_in_any_order_are_read() {
        let mut seq = Sequence(5);
        for _ in 0..2_000 {
            let msg = message(&mut seq);
            let value = serde_json::to_value(&msg).expect("serialises");
            let mut text = String::new();
            write_reversed(&value, &mut text);
            assert!(agrees(&text), "{text}");
        }
    }

    #[test]
    fn gauges_are_the_bits_serde_json_gives() {
        let template = |x: &str| {
            format!(
                r#"{{"v":1,"device_id":"d","boot_id":1,"seq":1,"ts":1,"reading":{{"shower":{{"showers":1,"water_ml":1,"shower_seconds":1,"temp_c":{x},"pressure_kpa":1.5,"cartridges":[]}}}}}}"#
            )
        };
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "36.5",
            "34.0",
            "0.1",
            "0.3",
            "-40.25",
            "999999999999999",
            "99999999999999.9",
            "0.00000000000001",
            "123456789012345",
            "1234567890123456",
            "3.4028235e38",
            "1e-7",
            "16777217",
            "16777217.0",
            "0.000000059604645",
            "null",
            "01",
            "1.",
            ".5",
            "-",
            "--1",
            "1.5.5",
            "1e",
            "nul",
            "NaN",
        ]
        .iter()
        .map(|x| template(x))
        .collect();
        let mut seq = Sequence(3);
        for _ in 0..200_000 {
            // Any finite f32 in ryu's shortest form, and decimals of 1 to 16 digits.
            let x = f32::from_bits(seq.next() as u32);
            if x.is_finite() {
                texts.push(template(ryu::Buffer::new().format_finite(x)));
            }
            let digits = 1 + seq.below(16) as usize;
            let mut decimal: String = (0..digits)
                .map(|_| char::from(b'0' + seq.below(10) as u8))
                .collect();
            let point = seq.below(digits as u64) as usize;
            if point > 0 {
                decimal.insert(point, '.');
            }
            if seq.below(2) == 0 {
                decimal.insert(0, '-');
            }
            texts.push(template(&decimal));
        }
        let taken = texts.iter().filter(|t| agrees(t)).count();
        assert!(taken > texts.len() / 3, "{taken} of {} taken", texts.len());
    }
}
