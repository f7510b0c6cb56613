//! InfluxDB 1.x line-protocol encoding, exact for every string we may be handed.
//!
//! Why not the `influxdb-line-protocol` crate: it targets InfluxDB IOx and escapes
//! a backslash in tag values as `\\`, which InfluxDB 1.x stores as two backslashes,
//! and it has no answer for newlines. These rules were checked one by one against
//! the real InfluxDB 1.6.7 (see `tests/` in the workspace, `line_protocol_round_trip`):
//!
//! - measurement: escape `,` and space;
//! - tag keys, tag values, field keys: escape `,`, `=` and space; a backslash is
//!   literal unless it precedes one of those, so a value that *ends* in a backslash
//!   (which would escape the following separator) cannot be written, nor can a newline
//!   (a line ends there): both are rejected with [`EncodeError`];
//! - string field values: wrapped in `"`, with `"` and `\` escaped; a newline
//!   inside the quotes is kept (1.x's line scanner tracks quotes);
//! - integers carry the `i` suffix, floats must be finite, timestamps are ms.

use super::{FieldValue, Point};

/// Why a point cannot be written as line protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A name or value contains a character line protocol cannot carry there.
    #[error("{what} {value:?} cannot be written as line protocol: {why}")]
    Unrepresentable {
        /// Which part of the point.
        what: &'static str,
        /// The offending text.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A float field is NaN or infinite.
    #[error("field {0:?} is not a finite number")]
    NotFinite(String),
    /// A point without fields.
    #[error("point has no fields")]
    NoFields,
}

/// A set of ASCII bytes below 64, as a bit mask (bit `b` for byte `b`).
const fn byte_set(bytes: &[u8]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < bytes.len() {
        mask |= 1 << bytes[i];
        i += 1;
    }
    mask
}

/// Bytes escaped in a measurement name.
const MEASUREMENT_SPECIAL: u64 = byte_set(b", ");
/// Bytes escaped in tag keys, tag values and field keys.
const KEY_SPECIAL: u64 = byte_set(b",= ");
/// Line breaks: refused in names and tag values (a line ends there).
const LINE_BREAK: u64 = byte_set(b"\n\r");

fn in_set(set: u64, b: u8) -> bool {
    b < 64 && (set >> b) & 1 == 1
}

/// Bytes below this one, and `=`, are the only ones a set may hold ([`any_in_set`]'s word
/// test looks for no other).
const WORD_TEST_BELOW: u8 = b'-';
const _: () = assert!(
    (MEASUREMENT_SPECIAL | KEY_SPECIAL | LINE_BREAK)
        & !(((1u64 << WORD_TEST_BELOW) - 1) | (1 << b'='))
        == 0,
    "a special byte the word test does not look for"
);

/// Whether any byte of `bytes` is in `set`. Eight bytes at a time ([`crate::word_scan`]):
/// a word with no byte below `-` and no `=` (letters, digits, `_`, `-`, `.`: most of every
/// name and tag value) is passed over whole; only a word that may hold one is looked at
/// byte by byte.
#[inline(always)]
fn any_in_set(bytes: &[u8], set: u64) -> bool {
    use crate::word_scan::{below, equal_to, find_in_words};
    let may_have_equals = set & (1 << b'=') != 0;
    find_in_words(bytes, |_, w| {
        let equals = if may_have_equals {
            equal_to(w, b'=')
        } else {
            0
        };
        ((below(w, WORD_TEST_BELOW) | equals) != 0
            && w.to_le_bytes().iter().any(|&b| in_set(set, b)))
        .then_some(())
    })
    .is_some()
}

/// Appends `s` (a name or tag value) with a backslash before each byte of `special`;
/// refuses what line protocol cannot carry there: an empty string, a line break, a trailing
/// backslash. Most names need no escaping: one scan finds that and `s` is copied whole
/// (inlined into the caller; the rest is [`push_escaped`]). On error `out` may hold part of
/// `s`: the caller cuts it back.
#[inline(always)]
fn push_plain(
    out: &mut String,
    what: &'static str,
    s: &str,
    special: u64,
) -> Result<(), EncodeError> {
    let bytes = s.as_bytes();
    match bytes.last() {
        Some(&last) if last != b'\\' && !any_in_set(bytes, special | LINE_BREAK) => {
            out.push_str(s);
            Ok(())
        }
        _ => push_escaped(out, what, s, special),
    }
}

/// [`push_plain`] for a string that is empty, ends in a backslash or holds a byte to escape
/// or refuse. The specials are ASCII, so each is a whole character and the runs between
/// them are pushed as slices.
#[cold]
#[inline(never)]
fn push_escaped(
    out: &mut String,
    what: &'static str,
    s: &str,
    special: u64,
) -> Result<(), EncodeError> {
    let bad = |why| EncodeError::Unrepresentable {
        what,
        value: s.to_owned(),
        why,
    };
    let bytes = s.as_bytes();
    match bytes.last() {
        None => return Err(bad("it is empty")),
        Some(b'\\') => return Err(bad("it ends in a backslash")),
        Some(_) => {}
    }
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_set(LINE_BREAK, b) {
            return Err(bad("it contains a line break"));
        }
        if in_set(special, b) {
            out.push_str(&s[run_start..i]);
            out.push('\\');
            run_start = i;
        }
    }
    out.push_str(&s[run_start..]);
    Ok(())
}

/// Appends a string field's value inside double quotes, `"` and `\` escaped.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut run_start = 0;
    for (i, b) in s.bytes().enumerate() {
        if b == b'"' || b == b'\\' {
            out.push_str(&s[run_start..i]);
            out.push('\\');
            run_start = i;
        }
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

/// Appends one point as a line (with trailing `\n`) to `out`; on error `out` is unchanged.
pub fn encode_point(out: &mut String, p: &Point) -> Result<(), EncodeError> {
    if p.fields.is_empty() {
        return Err(EncodeError::NoFields);
    }
    let start = out.len();
    let result = write_line(out, p);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_line(out: &mut String, p: &Point) -> Result<(), EncodeError> {
    push_plain(out, "measurement", &p.measurement, MEASUREMENT_SPECIAL)?;
    for (k, v) in &p.tags {
        out.push(',');
        push_plain(out, "tag key", k, KEY_SPECIAL)?;
        out.push('=');
        push_plain(out, "tag value", v, KEY_SPECIAL)?;
    }
    for (i, (k, v)) in p.fields.iter().enumerate() {
        out.push(if i == 0 { ' ' } else { ',' });
        push_plain(out, "field key", k, KEY_SPECIAL)?;
        out.push('=');
        match v {
            FieldValue::Float(x) => {
                if !x.is_finite() {
                    return Err(EncodeError::NotFinite(k.to_string()));
                }
                // The shortest representation that round-trips, always with a decimal point
                // or an exponent, so InfluxDB reads it as a float.
                out.push_str(ryu::Buffer::new().format_finite(*x));
            }
            FieldValue::Gauge(x) => {
                if !x.is_finite() {
                    return Err(EncodeError::NotFinite(k.to_string()));
                }
                // Its shortest decimal form, which InfluxDB parses to `widen_f32(x)`.
                out.push_str(ryu::Buffer::new().format_finite(*x));
            }
            FieldValue::Int(i) => {
                out.push_str(itoa::Buffer::new().format(*i));
                out.push('i');
            }
            FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            FieldValue::Str(s) => push_quoted(out, s),
        }
    }
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(p.ts_ms));
    out.push('\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::widen_f32;

    fn point(tags: &[(&str, &str)], fields: Vec<(&str, FieldValue)>) -> Point {
        Point {
            measurement: "m".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string().into(), v.to_string().into()))
                .collect(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string().into(), v))
                .collect(),
            ts_ms: 1_700_000_000_123,
        }
    }

    fn encode(p: &Point) -> Result<String, EncodeError> {
        let mut s = String::new();
        encode_point(&mut s, p).map(|()| s)
    }

    #[test]
    fn the_word_scan_finds_exactly_the_bytes_of_the_set() {
        // Every byte value at every position of strings of 0 to 19 bytes, for both sets, in
        // a filler the word test passes over (`a`, `0`) and one it stops at (`!`).
        for set in [KEY_SPECIAL | LINE_BREAK, MEASUREMENT_SPECIAL | LINE_BREAK] {
            for filler in [b'a', b'0', b'!'] {
                for len in 0..20usize {
                    for at in 0..len {
                        for b in 0..=255u8 {
                            let mut bytes = vec![filler; len];
                            bytes[at] = b;
                            assert_eq!(
                                any_in_set(&bytes, set),
                                in_set(set, b),
                                "byte {b} at {at} of {len} in {filler}"
                            );
                        }
                    }
                    assert!(!any_in_set(&vec![filler; len], set));
                }
            }
            // Bytes below 64 that are not in the set (digits, '-', '.') are not found.
            assert!(!any_in_set(b"toilet-0042.v1/x:y", set));
        }
        assert!(any_in_set(b"a=b", KEY_SPECIAL));
        assert!(!any_in_set(b"a=b", MEASUREMENT_SPECIAL));
    }

    #[test]
    fn escapes_separators_in_tags_and_quotes_in_strings() {
        let p = point(
            &[("device id", "a,b=c d")],
            vec![
                ("note", FieldValue::Str("say \"hi\" \\ bye\n".into())),
                ("n", FieldValue::Int(-3)),
                ("x", FieldValue::Float(1.0)),
                ("ok", FieldValue::Bool(true)),
            ],
        );
        assert_eq!(
            encode(&p).unwrap(),
            "m,device\\ id=a\\,b\\=c\\ d note=\"say \\\"hi\\\" \\\\ bye\n\",n=-3i,x=1.0,ok=true 1700000000123\n"
        );
    }

    #[test]
    fn a_backslash_inside_a_tag_stays_literal() {
        let p = point(&[("t", r"C:\temp")], vec![("v", FieldValue::Int(1))]);
        assert_eq!(encode(&p).unwrap(), "m,t=C:\\temp v=1i 1700000000123\n");
    }

    #[test]
    fn rejects_what_line_protocol_cannot_carry() {
        let nl = point(&[("t", "a\nb")], vec![("v", FieldValue::Int(1))]);
        assert!(matches!(
            encode(&nl),
            Err(EncodeError::Unrepresentable {
                what: "tag value",
                ..
            })
        ));
        let trailing = point(&[("t", "a\\")], vec![("v", FieldValue::Int(1))]);
        assert!(encode(&trailing).is_err());
        let nan = point(&[], vec![("v", FieldValue::Float(f64::NAN))]);
        assert_eq!(encode(&nan), Err(EncodeError::NotFinite("v".into())));
        let empty_tag = point(&[("t", "")], vec![("v", FieldValue::Int(1))]);
        assert!(encode(&empty_tag).is_err());
        assert_eq!(encode(&point(&[], vec![])), Err(EncodeError::NoFields));
        let mut out = String::from("kept");
        assert!(encode_point(&mut out, &nl).is_err());
        assert_eq!(out, "kept");
    }

    #[test]
    fn a_gauge_is_written_as_the_value_it_stands_for() {
        // f32 values across the whole finite range (every 4 093rd bit pattern, both signs),
        // and the sensor values of the contract's examples.
        let mut gauges: Vec<f32> = (0..u32::MAX / 4_093)
            .map(|k| f32::from_bits(k * 4_093))
            .filter(|x| x.is_finite())
            .collect();
        gauges.extend([
            36.6,
            34.0,
            250.5,
            0.1,
            -0.0,
            1e-7,
            16_777_217.0,
            f32::MAX,
            f32::MIN_POSITIVE,
        ]);
        for x in gauges {
            let line = encode(&point(&[], vec![("v", FieldValue::Gauge(x))])).unwrap();
            let text = &line["m v=".len()..line.len() - " 1700000000123\n".len()];
            assert!(
                text.contains(['.', 'e']),
                "{x} as {text:?} would read as an integer"
            );
            let read = text.parse::<f64>().unwrap();
            assert_eq!(read.to_bits(), widen_f32(x).to_bits(), "{x} as {text}");
            assert_eq!(FieldValue::Gauge(x), FieldValue::Float(read));
        }
        assert_eq!(
            encode(&point(&[], vec![("v", FieldValue::Gauge(36.6))])).unwrap(),
            "m v=36.6 1700000000123\n"
        );
        assert!(encode(&point(&[], vec![("v", FieldValue::Gauge(f32::NAN))])).is_err());
    }

    #[test]
    fn numbers_are_exact_and_floats_always_read_as_floats() {
        let floats = [
            0.1,
            -0.0,
            1.0,
            1e16,
            1e21,
            1e-7,
            123_456.789,
            f64::MAX,
            f64::MIN_POSITIVE,
        ];
        for x in floats {
            let line = encode(&point(&[], vec![("v", FieldValue::Float(x))])).unwrap();
            let text = &line["m v=".len()..line.len() - " 1700000000123\n".len()];
            assert!(
                text.contains(['.', 'e']),
                "{x} as {text:?} would read as an integer"
            );
            assert_eq!(
                text.parse::<f64>().unwrap().to_bits(),
                x.to_bits(),
                "{text}"
            );
        }
        for i in [0, -1, i64::MIN, i64::MAX] {
            let line = encode(&point(&[], vec![("v", FieldValue::Int(i))])).unwrap();
            assert_eq!(line, format!("m v={i}i 1700000000123\n"));
        }
    }
}
