//! Parsing of NAB's `windows.json` (anomaly windows per data file) and
//! `profiles.json` (cost matrices of the application profiles), from strings.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::nab::error::NabError;
use crate::nab::scorer::CostMatrix;
use crate::nab::time::parse_timestamp_ms;

/// A NAB application profile: its name and its cost matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Profile name, e.g. `standard`.
    pub name: String,
    /// Weights of true positives, false positives and false negatives.
    pub costs: CostMatrix,
}

/// One labelled window: start and end timestamps (ms) plus the original texts.
pub type Window = (i64, i64);

fn json_err(what: &'static str, reason: impl Into<String>) -> NabError {
    NabError::BadJson {
        what,
        reason: reason.into(),
    }
}

/// Parse `windows.json`: `{ "<category>/<file>.csv": [[start, end], ...], ... }`.
pub fn parse_windows(text: &str) -> Result<BTreeMap<String, Vec<Window>>, NabError> {
    const WHAT: &str = "windows.json";
    let v: Value = serde_json::from_str(text).map_err(|e| json_err(WHAT, e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| json_err(WHAT, "top level is not an object"))?;
    let mut out = BTreeMap::new();
    for (file, wins) in obj {
        let arr = wins
            .as_array()
            .ok_or_else(|| json_err(WHAT, format!("{file}: windows are not a list")))?;
        let mut list = Vec::with_capacity(arr.len());
        for w in arr {
            let pair = w.as_array().filter(|p| p.len() == 2).ok_or_else(|| {
                json_err(WHAT, format!("{file}: a window is not a [start, end] pair"))
            })?;
            let mut ends = [0i64; 2];
            for (slot, item) in ends.iter_mut().zip(pair) {
                let s = item.as_str().ok_or_else(|| {
                    json_err(WHAT, format!("{file}: window bound is not a string"))
                })?;
                *slot =
                    parse_timestamp_ms(s).map_err(|e| json_err(WHAT, format!("{file}: {e}")))?;
            }
            if ends[1] < ends[0] {
                return Err(json_err(
                    WHAT,
                    format!("{file}: window ends before it starts"),
                ));
            }
            list.push((ends[0], ends[1]));
        }
        list.sort_unstable();
        out.insert(file.clone(), list);
    }
    Ok(out)
}

/// Parse `profiles.json`: `{ "<name>": { "CostMatrix": { "tpWeight": .., "fpWeight": .., "fnWeight": .. } } }`.
pub fn parse_profiles(text: &str) -> Result<Vec<Profile>, NabError> {
    const WHAT: &str = "profiles.json";
    let v: Value = serde_json::from_str(text).map_err(|e| json_err(WHAT, e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| json_err(WHAT, "top level is not an object"))?;
    let mut out = Vec::new();
    for (name, p) in obj {
        let cm = p
            .get("CostMatrix")
            .ok_or_else(|| json_err(WHAT, format!("{name}: no CostMatrix")))?;
        let w = |k: &str| {
            cm.get(k)
                .and_then(Value::as_f64)
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| json_err(WHAT, format!("{name}: missing or bad {k}")))
        };
        out.push(Profile {
            name: name.clone(),
            costs: CostMatrix {
                tp_weight: w("tpWeight")?,
                fp_weight: w("fpWeight")?,
                fn_weight: w("fnWeight")?,
            },
        });
    }
    // NAB's customary order.
    let rank = |n: &str| match n {
        "standard" => 0,
        "reward_low_FP_rate" => 1,
        "reward_low_FN_rate" => 2,
        _ => 3,
    };
    out.sort_by(|a, b| {
        rank(&a.name)
            .cmp(&rank(&b.name))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_profiles() {
        let w = parse_windows(
            r#"{"a/b.csv": [["2014-04-01 00:10:00.000000", "2014-04-01 00:20:00.000000"]], "a/c.csv": []}"#,
        );
        let w = w.unwrap_or_default();
        assert_eq!(w.len(), 2);
        assert_eq!(w["a/b.csv"].len(), 1);
        assert!(parse_windows(r#"{"a": [["x"]]}"#).is_err());
        let p = parse_profiles(
            r#"{"reward_low_FP_rate": {"CostMatrix": {"tpWeight": 1.0, "fpWeight": 0.22, "fnWeight": 1.0}},
                "standard": {"CostMatrix": {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0}}}"#,
        )
        .unwrap_or_default();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "standard");
        assert_eq!(p[1].costs.fp_weight, 0.22);
    }
}
