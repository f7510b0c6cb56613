//! Parsing of NAB-style timestamps (`YYYY-MM-DD HH:MM:SS[.ffffff]`, no zone) into
//! milliseconds since the Unix epoch, treating them as UTC. Pure, no clock.

use crate::nab::error::NabError;

fn bad(text: &str, reason: &'static str) -> NabError {
    NabError::BadTimestamp {
        text: text.to_string(),
        reason,
    }
}

fn digits(text: &str, s: &str, what: &'static str) -> Result<i64, NabError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(text, what));
    }
    s.parse::<i64>().map_err(|_| bad(text, what))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parse `YYYY-MM-DD HH:MM:SS` with an optional fractional part (`.000000`) into
/// milliseconds since the epoch (UTC). A `T` separator is accepted too.
pub fn parse_timestamp_ms(text: &str) -> Result<i64, NabError> {
    let t = text.trim();
    let (date, time) = t
        .split_once([' ', 'T'])
        .ok_or_else(|| bad(text, "expected `YYYY-MM-DD HH:MM:SS`"))?;
    let mut dp = date.split('-');
    let (y, mo, d) = match (dp.next(), dp.next(), dp.next(), dp.next()) {
        (Some(y), Some(m), Some(d), None) => (
            digits(text, y, "bad year")?,
            digits(text, m, "bad month")?,
            digits(text, d, "bad day")?,
        ),
        _ => return Err(bad(text, "date must be YYYY-MM-DD")),
    };
    let (hms, frac) = match time.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (time, None),
    };
    let mut tp = hms.split(':');
    let (h, mi, s) = match (tp.next(), tp.next(), tp.next(), tp.next()) {
        (Some(h), Some(m), Some(s), None) => (
            digits(text, h, "bad hour")?,
            digits(text, m, "bad minute")?,
            digits(text, s, "bad second")?,
        ),
        _ => return Err(bad(text, "time must be HH:MM:SS")),
    };
    if !(1..=12).contains(&mo) {
        return Err(bad(text, "month out of range"));
    }
    if !(1..=31).contains(&d) {
        return Err(bad(text, "day out of range"));
    }
    if h > 23 || mi > 59 || s > 60 {
        return Err(bad(text, "time out of range"));
    }
    let mut ms = 0i64;
    if let Some(f) = frac {
        let f = f.trim_end_matches('Z');
        if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(text, "bad fractional seconds"));
        }
        let padded = format!("{f:0<3}");
        ms = digits(text, &padded[..3], "bad fractional seconds")?;
    }
    let days = days_from_civil(y, mo, d);
    Ok(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_fractional() {
        assert_eq!(parse_timestamp_ms("1970-01-01 00:00:00"), Ok(0));
        assert_eq!(
            parse_timestamp_ms("1970-01-02 00:00:01.500000"),
            Ok(86_401_500)
        );
        let a = parse_timestamp_ms("2014-04-01 00:00:00").unwrap_or(0);
        let b = parse_timestamp_ms("2014-04-01 00:00:00.000000").unwrap_or(1);
        assert_eq!(a, b);
        assert_eq!(a, 1_396_310_400_000);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_timestamp_ms("2014-13-01 00:00:00").is_err());
        assert!(parse_timestamp_ms("yesterday").is_err());
        assert!(parse_timestamp_ms("2014-04-01 00:00").is_err());
    }
}
