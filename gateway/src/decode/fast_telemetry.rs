//! A fast path for the payload fixtures send most: telemetry, as their firmware writes it.
//!
//! [`telemetry`] reads a telemetry payload laid out as serializers write it (compact, the
//! fields in the order of the contract's types, as serde-json-core on the firmware and
//! serde_json on the simulator write them) in one pass: each key is matched as part of a
//! fixed literal (`,"boot_id":`), each value read in place, with no key lookup and no serde
//! machinery (serde_json into the contract's types was a third of the gateway's instructions
//! per message). It is a shortcut, never a judge: it returns `None` whenever the payload is
//! not in that layout or it is not certain serde_json reads it, and then the caller hands the
//! same text to serde_json, which decides and names any rejection. So it may only return
//! what `serde_json::from_str::<Telemetry>` returns for the same text; the tests below hold
//! it to that, field by field and bit by bit, on valid payloads and on every small damage to
//! them.
//!
//! What it leaves to serde_json (returns `None`): whitespace anywhere but at the end,
//! another order of the fields, an absent gauge, an escape or a control character in a
//! string, a string longer than its field holds, a sign on a counter, a number with an
//! exponent or more than 15 digits (gauges), a counter above `u64::MAX`, more than
//! [`MAX_CARTRIDGES`] cartridges, anything unknown.
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
        rest: text.as_bytes(),
    };
    let telemetry = cursor.telemetry()?;
    cursor
        .rest
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .then_some(telemetry)
}

/// Powers of ten as integers, 10^0 to 10^15, for joining a gauge's whole and fractional
/// digits.
const POW10_U64: [u64; 16] = {
    let mut powers = [1u64; 16];
    let mut i = 1;
    while i < powers.len() {
        powers[i] = powers[i - 1] * 10;
        i += 1;
    }
    powers
};

/// The same powers in `f64`, as many as a 15-digit decimal needs (each below 2^53, so
/// converted exactly).
const POW10: [f64; 16] = {
    let mut powers = [0.0; 16];
    let mut i = 0;
    while i < powers.len() {
        powers[i] = POW10_U64[i] as f64;
        i += 1;
    }
    powers
};

/// Most digits of a gauge read here (their integer stays below 2^53, so exact in `f64`).
const MAX_GAUGE_DIGITS: usize = 15;

/// Most digits of a counter read here (`u64::MAX` has 20; only a 20th is checked for
/// overflow, since 19 nines fit).
const MAX_COUNTER_DIGITS: usize = 20;

/// Index of the first `"`, `\` or control character (below 0x20) in `bytes`, eight bytes
/// at a time ([`crate::word_scan`]).
fn string_end(bytes: &[u8]) -> Option<usize> {
    use crate::word_scan::{below, equal_to, find_in_words, first_flagged};
    find_in_words(bytes, |offset, w| {
        let found = equal_to(w, b'"') | equal_to(w, b'\\') | below(w, 0x20);
        (found != 0).then(|| offset + first_flagged(found))
    })
}

/// Reads the rest of an object, `"first":…,"second":…}` (the keys in the order written here,
/// which is the type's field order, the order serializers write), each value with its field's
/// reader, and builds `$ty` from them; `None` (returned from the enclosing function) at the
/// first thing out of place.
macro_rules! object_in_order {
    ($cursor:expr, $ty:ident { $first:ident: $first_read:ident $(, $field:ident: $read:ident)* $(,)? }) => {{
        $cursor.literal(concat!("\"", stringify!($first), "\":").as_bytes())?;
        let $first = $cursor.$first_read()?;
        $(
            $cursor.literal(concat!(",\"", stringify!($field), "\":").as_bytes())?;
            let $field = $cursor.$read()?;
        )*
        $cursor.literal(b"}")?;
        $ty { $first $(, $field)* }
    }};
}

struct Cursor<'a> {
    text: &'a str,
    /// What is left of `text`.
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Consumes `expected`, or `None`.
    #[inline(always)]
    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(expected)?;
        Some(())
    }

    /// Consumes `expected` if it comes next.
    #[inline(always)]
    fn try_literal(&mut self, expected: &[u8]) -> bool {
        match self.rest.strip_prefix(expected) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// A run of decimal digits, consumed, as an integer and its length (0 if none); `None`
    /// if it is longer than `max` or above `u64::MAX` (only a 20th digit can overflow).
    #[inline(always)]
    fn digit_run(&mut self, max: usize) -> Option<(u64, usize)> {
        let mut value = 0u64;
        let mut count = 0;
        while let Some(&b) = self.rest.get(count) {
            if !b.is_ascii_digit() {
                break;
            }
            count += 1;
            if count > max {
                return None;
            }
            let digit = u64::from(b - b'0');
            value = if count < 20 {
                value * 10 + digit
            } else {
                value.checked_mul(10)?.checked_add(digit)?
            };
        }
        self.rest = &self.rest[count..];
        Some((value, count))
    }

    /// A JSON integer's digits as an integer and their count; `None` for none, a leading
    /// zero followed by a digit, or more than `max` digits.
    #[inline(always)]
    fn digits(&mut self, max: usize) -> Option<(u64, usize)> {
        let leading_zero = self.rest.first() == Some(&b'0');
        let (value, count) = self.digit_run(max)?;
        (count > 0 && !(leading_zero && count > 1)).then_some((value, count))
    }

    /// A counter: digits only (no sign, fraction or exponent).
    #[inline]
    fn unsigned(&mut self) -> Option<u64> {
        let (value, _) = self.digits(MAX_COUNTER_DIGITS)?;
        match self.rest.first() {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(value),
        }
    }

    fn u8(&mut self) -> Option<u8> {
        u8::try_from(self.unsigned()?).ok()
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.unsigned()?).ok()
    }

    /// A float gauge: `null` (missing, NaN) or a decimal of at most 15 digits without an
    /// exponent, computed as serde_json computes it (module docs).
    fn gauge(&mut self) -> Option<f32> {
        if self.try_literal(b"null") {
            return Some(f32::NAN);
        }
        let negative = self.try_literal(b"-");
        let (whole, whole_digits) = self.digits(MAX_GAUGE_DIGITS)?;
        let (mut mantissa, mut scale) = (whole, 0);
        if self.try_literal(b".") {
            // At least one digit; leading zeros are digits here.
            let (fraction, fraction_digits) = self.digit_run(MAX_GAUGE_DIGITS - whole_digits)?;
            if fraction_digits == 0 {
                return None;
            }
            mantissa = mantissa * POW10_U64[fraction_digits] + fraction;
            scale = fraction_digits;
        }
        if matches!(self.rest.first(), Some(b'e' | b'E')) {
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
        if self.try_literal(b"null") {
            return Some(INVALID_PPM);
        }
        u16::try_from(self.unsigned()?).ok()
    }

    /// The rest of a string whose opening quote was consumed, through its closing quote:
    /// no escape, no control character, at most `N` bytes.
    fn string_rest<const N: usize>(&mut self) -> Option<heapless::String<N>> {
        let len = string_end(self.rest)?;
        if self.rest[len] != b'"' {
            return None;
        }
        let start = self.text.len() - self.rest.len();
        // The quote is ASCII, and `start` follows one: both are character boundaries.
        let mut s = heapless::String::new();
        s.push_str(self.text.get(start..start + len)?).ok()?;
        self.rest = &self.rest[len + 1..];
        Some(s)
    }

    fn telemetry(&mut self) -> Option<Telemetry> {
        self.literal(b"{\"v\":")?;
        let v = self.u8()?;
        self.literal(b",\"device_id\":\"")?;
        let device_id = self.string_rest()?;
        self.literal(b",\"boot_id\":")?;
        let boot_id = self.u32()?;
        self.literal(b",\"seq\":")?;
        let seq = self.u32()?;
        self.literal(b",\"ts\":")?;
        let ts = i64::try_from(self.unsigned()?).ok()?;
        let fw = if self.try_literal(b",\"fw\":\"") {
            Some(self.string_rest()?)
        } else {
            self.try_literal(b",\"fw\":null");
            None
        };
        self.literal(b",\"reading\":{\"")?;
        let reading = if self.try_literal(b"toilet\":{") {
            Reading::Toilet(self.toilet()?)
        } else if self.try_literal(b"purifier\":{") {
            Reading::Purifier(self.purifier()?)
        } else if self.try_literal(b"shower\":{") {
            Reading::Shower(self.shower()?)
        } else {
            return None;
        };
        // The model's object is closed; then `reading`'s and the message's.
        self.literal(b"}}")?;
        Some(Telemetry {
            v,
            device_id,
            boot_id,
            seq,
            ts,
            fw,
            reading,
        })
    }

    fn toilet(&mut self) -> Option<ToiletReading> {
        Some(object_in_order!(
            self,
            ToiletReading {
                seat_sessions: u32,
                washes: u32,
                wash_seconds: u32,
                flushes: u32,
                water_ml: unsigned,
                heater_wh: u32,
                water_temp_c: gauge,
                seat_temp_c: gauge,
            }
        ))
    }

    fn purifier(&mut self) -> Option<PurifierReading> {
        Some(object_in_order!(
            self,
            PurifierReading {
                dispensed_ml: unsigned,
                tds_in_ppm: ppm_gauge,
                tds_out_ppm: ppm_gauge,
                inlet_pressure_kpa: gauge,
                pump_seconds: u32,
                cartridges: cartridges,
            }
        ))
    }

    fn shower(&mut self) -> Option<ShowerReading> {
        Some(object_in_order!(
            self,
            ShowerReading {
                showers: u32,
                water_ml: unsigned,
                shower_seconds: u32,
                temp_c: gauge,
                pressure_kpa: gauge,
                cartridges: cartridges,
            }
        ))
    }

    /// `[]` or `[{...},...]`: at most [`MAX_CARTRIDGES`] cartridges.
    fn cartridges(&mut self) -> Option<heapless::Vec<Cartridge, MAX_CARTRIDGES>> {
        let mut list = heapless::Vec::new();
        self.literal(b"[")?;
        if self.try_literal(b"]") {
            return Some(list);
        }
        loop {
            list.push(self.cartridge()?).ok()?;
            if self.try_literal(b"]") {
                return Some(list);
            }
            self.literal(b",")?;
        }
    }

    fn cartridge(&mut self) -> Option<Cartridge> {
        self.literal(b"{\"slot\":")?;
        let slot = self.u8()?;
        self.literal(b",\"kind\":\"")?;
        let kind = if self.try_literal(b"sediment\"") {
            CartridgeKind::Sediment
        } else if self.try_literal(b"carbon\"") {
            CartridgeKind::Carbon
        } else if self.try_literal(b"reverse_osmosis\"") {
            CartridgeKind::ReverseOsmosis
        } else if self.try_literal(b"shower\"") {
            CartridgeKind::Shower
        } else {
            return None;
        };
        self.literal(b",\"ml_since_replacement\":")?;
        let ml_since_replacement = self.unsigned()?;
        self.literal(b",\"replacements\":")?;
        let replacements = self.u32()?;
        let rated_l = if self.try_literal(b",\"rated_l\":") {
            if self.try_literal(b"null") {
                None
            } else {
                Some(self.u32()?)
            }
        } else {
            None
        };
        self.literal(b"}")?;
        Some(Cartridge {
            slot,
            kind,
            ml_since_replacement,
            replacements,
            rated_l,
        })
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
    fn takes_every_compact_message_and_reads_what_serde_json_reads() {
        let mut seq = Sequence(1);
        for _ in 0..20_000 {
            let msg = message(&mut seq);
            let compact = serde_json::to_string(&msg).expect("serialises");
            assert!(
                agrees(&compact),
                "the fast path left a compact message to serde_json: {compact}"
            );
            assert!(agrees(&format!("{compact} \n")), "trailing whitespace");
            // Another layout is serde_json's to read (if the fast path took it, alike).
            assert!(!agrees(
                &serde_json::to_string_pretty(&msg).expect("serialises")
            ));
        }
    }

    #[test]
    fn takes_the_telemetry_the_firmware_writes() {
        // The simulator runs the firmware, which writes with serde-json-core: every model,
        // faults and failed sensors included.
        let cfg = simulator::FleetConfig {
            devices: 60,
            days: 2,
            seed: 11,
            mix: simulator::FaultMix::default_mix(),
            ..simulator::FleetConfig::default()
        };
        let (messages, _) = simulator::Fleet::generate_all(cfg).expect("fleet");
        let mut telemetry_seen = 0;
        for m in messages.iter().filter(|m| m.topic.ends_with("/telemetry")) {
            let text = std::str::from_utf8(&m.payload).expect("UTF-8");
            assert!(agrees(text), "left to serde_json: {text}");
            telemetry_seen += 1;
        }
        assert!(
            telemetry_seen > 1_000,
            "{telemetry_seen} telemetry messages"
        );
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
        // Not vacuous: some damage is harmless (a digit more, trailing whitespace), most is not.
        assert!(variants > 50_000, "{variants} variants");
        eprintln!("damage: {taken} of {variants} variants taken by the fast path");
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
    fn fields_in_another_order_are_left_to_serde_json() {
        let mut seq = Sequence(5);
        for _ in 0..2_000 {
            let msg = message(&mut seq);
            let value = serde_json::to_value(&msg).expect("serialises");
            let mut text = String::new();
            write_reversed(&value, &mut text);
            assert!(!agrees(&text), "{text}");
            assert!(serde_json::from_str::<Telemetry>(&text).is_ok(), "{text}");
        }
    }

    #[test]
    fn counters_up_to_u64_max_are_read_and_none_above() {
        let template = |x: &str| {
            format!(
                r#"{{"v":1,"device_id":"d","boot_id":1,"seq":1,"ts":1,"reading":{{"shower":{{"showers":1,"water_ml":{x},"shower_seconds":1,"temp_c":1.5,"pressure_kpa":1.5,"cartridges":[]}}}}}}"#
            )
        };
        for taken in [
            "0",
            "7",
            "9999999999999999999",
            "10000000000000000000",
            "18446744073709551615",
        ] {
            assert!(agrees(&template(taken)), "{taken}");
        }
        for refused in [
            "18446744073709551616",
            "99999999999999999999",
            "100000000000000000000",
            "00",
            "-1",
            "1.0",
            "1e3",
        ] {
            assert!(telemetry(&template(refused)).is_none(), "{refused}");
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
