//! Line-level parsing of NAB CSV files: data files (`timestamp,value`) and result
//! files (`timestamp,value,anomaly_score`). Pure string processing, no I/O.

use crate::nab::error::NabError;
use crate::nab::time::parse_timestamp_ms;

/// One parsed data row, borrowing the timestamp text so it can be echoed verbatim.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataRow<'a> {
    /// Timestamp exactly as written in the file.
    pub timestamp_text: &'a str,
    /// Timestamp in milliseconds since the epoch (UTC assumed).
    pub ts_ms: i64,
    /// The value (may be non-finite only if the file says `nan`/`inf`).
    pub value: f64,
}

fn line_err(line: usize, reason: impl Into<String>) -> NabError {
    NabError::BadCsvLine {
        line,
        reason: reason.into(),
    }
}

/// Check that a header line is `timestamp,value` (case-insensitive, spaces ignored).
pub fn check_data_header(header: &str) -> Result<(), NabError> {
    let cols: Vec<String> = header
        .trim_start_matches('\u{feff}')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    if cols.len() >= 2 && cols[0] == "timestamp" && cols[1] == "value" {
        Ok(())
    } else {
        Err(line_err(
            1,
            format!(
                "expected header `timestamp,value`, found {:?}",
                header.trim_end()
            ),
        ))
    }
}

/// Parse one data line `timestamp,value`. `line_no` is 1-based and only used in errors.
pub fn parse_data_line(line: &str, line_no: usize) -> Result<DataRow<'_>, NabError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut parts = line.split(',');
    let ts = parts.next().unwrap_or("").trim().trim_matches('"');
    let val = parts
        .next()
        .ok_or_else(|| {
            line_err(
                line_no,
                format!("expected `timestamp,value`, found {line:?}"),
            )
        })?
        .trim()
        .trim_matches('"');
    if parts.next().is_some() {
        return Err(line_err(
            line_no,
            format!("expected 2 columns, found more in {line:?}"),
        ));
    }
    let ts_ms = parse_timestamp_ms(ts).map_err(|e| line_err(line_no, e.to_string()))?;
    let value = val
        .parse::<f64>()
        .map_err(|_| line_err(line_no, format!("value {val:?} is not a number")))?;
    Ok(DataRow {
        timestamp_text: ts,
        ts_ms,
        value,
    })
}

/// Parse a whole results CSV (header with `timestamp` and `anomaly_score` columns)
/// into `(timestamp_ms, anomaly_score)` pairs in file order.
pub fn parse_results_csv(text: &str) -> Result<Vec<(i64, f64)>, NabError> {
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().ok_or_else(|| line_err(1, "empty file"))?;
    let cols: Vec<String> = header
        .trim_start_matches('\u{feff}')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    let ts_col = cols
        .iter()
        .position(|c| c == "timestamp")
        .ok_or_else(|| line_err(1, "header has no `timestamp` column"))?;
    let score_col = cols
        .iter()
        .position(|c| c == "anomaly_score")
        .ok_or_else(|| line_err(1, "header has no `anomaly_score` column"))?;
    let mut out = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line
            .split(',')
            .map(|f| f.trim().trim_matches('"'))
            .collect();
        let (Some(ts), Some(sc)) = (fields.get(ts_col), fields.get(score_col)) else {
            return Err(line_err(
                line_no,
                format!("expected {} columns, found {}", cols.len(), fields.len()),
            ));
        };
        let ts_ms = parse_timestamp_ms(ts).map_err(|e| line_err(line_no, e.to_string()))?;
        let score = sc
            .parse::<f64>()
            .map_err(|_| line_err(line_no, format!("anomaly_score {sc:?} is not a number")))?;
        if !(0.0..=1.0).contains(&score) {
            return Err(line_err(
                line_no,
                format!("anomaly_score {score} is outside [0, 1]"),
            ));
        }
        out.push((ts_ms, score));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_lines() {
        let r = parse_data_line("2014-04-01 00:05:00,18.5\r\n", 2);
        assert!(
            matches!(r, Ok(DataRow { timestamp_text: "2014-04-01 00:05:00", value, .. }) if value == 18.5)
        );
        let e = parse_data_line("2014-04-01 00:05:00,abc", 7);
        assert!(matches!(e, Err(NabError::BadCsvLine { line: 7, .. })));
        assert!(parse_data_line("2014-04-01 00:05:00", 3).is_err());
        assert!(check_data_header("timestamp,value").is_ok());
        assert!(check_data_header("time,val").is_err());
    }

    #[test]
    fn results_file() {
        let text =
            "timestamp,value,anomaly_score\n2014-04-01 00:00:00,1,0.5\n2014-04-01 00:05:00,2,0\n";
        let rows = parse_results_csv(text);
        assert_eq!(rows.as_ref().map(Vec::len), Ok(2));
        assert!(
            parse_results_csv("timestamp,value,anomaly_score\n2014-04-01 00:00:00,1,1.5\n")
                .is_err()
        );
    }
}
