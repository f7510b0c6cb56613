//! The line-protocol writer against the real InfluxDB 1.6.7: hostile strings in
//! tags and fields come back byte for byte; what line protocol cannot carry is
//! refused before sending; a partly bad batch keeps its good points and hands
//! back exactly the bad ones. (Issue #2.)

use std::time::Duration;

use e2e_tests::Influx;
use gateway::config::{InfluxApi, InfluxConfig};
use gateway::store::influx::InfluxStore;
use gateway::store::{FieldValue, Point};

const HOSTILE: &[&str] = &[
    "plain",
    "with space",
    "comma,inside",
    "equals=sign",
    "a,b=c d",
    "quote\"inside",
    "single'quote",
    "back\\slash",
    "C:\\temp\\new",
    "\\,escaped-looking",
    "trailing space ",
    " leading space",
    "unicode ✓ 水 🚿",
    "'; DROP DATABASE lp; --",
    "x=1i,y=\"z\" 123",
    "tab\there",
];

const FIELD_ONLY: &[&str] = &[
    "line\nbreak",
    "ends in backslash\\",
    "\\\"",
    "\"",
    "\\",
    "crlf\r\nend",
    "",
];

fn store(influx: &Influx, db: &str) -> InfluxStore {
    InfluxStore::new(InfluxConfig {
        url: influx.url().parse().unwrap(),
        api: InfluxApi::V1 {
            database: db.into(),
            retention_policy: None,
            username: None,
            password: None,
        },
        timeout: Duration::from_secs(10),
        create_database: true,
    })
    .unwrap()
}

fn point(measurement: &str, tag: &str, text: &str, i: i64) -> Point {
    Point {
        measurement: measurement.to_owned().into(),
        tags: vec![("t".into(), tag.to_owned().into())],
        fields: vec![
            ("s".into(), FieldValue::Str(text.to_owned().into())),
            ("i".into(), FieldValue::Int(i)),
        ],
        ts_ms: 1_700_000_000_000 + i,
    }
}

#[test]
fn hostile_strings_round_trip_through_influxdb_exactly() {
    let influx = Influx::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = store(&influx, "lp");
    rt.block_on(store.ensure_database()).unwrap();

    let mut points: Vec<Point> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, s)| point("round_trip", s, s, i as i64))
        .collect();
    for (j, s) in FIELD_ONLY.iter().enumerate() {
        points.push(point("round_trip", "field-only", s, 100 + j as i64));
    }
    // Hostile measurement and key names too.
    points.push(Point {
        measurement: "odd measurement,name".into(),
        tags: vec![("tag key=x".into(), "v".into())],
        fields: vec![("field key,y".into(), FieldValue::Float(1.5))],
        ts_ms: 1_700_000_000_000,
    });
    let outcome = rt.block_on(store.write(&points)).unwrap();
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);

    let v = influx
        .query("lp", "SELECT \"i\", \"s\", \"t\" FROM round_trip")
        .unwrap();
    let rows = v
        .pointer("/results/0/series/0/values")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap();
    assert_eq!(rows.len(), points.len() - 1);
    for row in rows {
        let i = row[1].as_i64().unwrap();
        let (s, t) = (row[2].as_str().unwrap(), row[3].as_str().unwrap());
        if i < 100 {
            assert_eq!(s, HOSTILE[i as usize], "string field {i}");
            assert_eq!(t, HOSTILE[i as usize], "tag value {i}");
        } else {
            assert_eq!(s, FIELD_ONLY[(i - 100) as usize], "string field {i}");
        }
    }
    let m = influx.query("lp", "SHOW MEASUREMENTS").unwrap();
    assert!(m.to_string().contains("odd measurement,name"), "{m}");
    let k = influx
        .query("lp", "SHOW FIELD KEYS FROM \"odd measurement,name\"")
        .unwrap();
    assert!(k.to_string().contains("field key,y"), "{k}");
    let k = influx
        .query("lp", "SHOW TAG KEYS FROM \"odd measurement,name\"")
        .unwrap();
    assert!(k.to_string().contains("tag key=x"), "{k}");
}

#[test]
fn unrepresentable_and_conflicting_points_are_handed_back_and_the_rest_is_kept() {
    let influx = Influx::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = store(&influx, "partial");
    rt.block_on(store.ensure_database()).unwrap();
    rt.block_on(store.write(&[point("m", "a", "text", 0)]))
        .unwrap();

    let mut batch: Vec<Point> = (1..=20).map(|i| point("m", "a", "fine", i)).collect();
    // 1: a newline in a tag value cannot be written at all.
    batch[3] = point("m", "bad\ntag", "x", 4);
    // 2: a type conflict (field "s" is a string in this measurement): InfluxDB answers
    //    400 "partial write" and keeps the others.
    batch[11].fields[0].1 = FieldValue::Int(7);
    let outcome = rt.block_on(store.write(&batch)).unwrap();
    let rejected: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, vec![3, 11], "{:?}", outcome.rejected);
    assert!(
        outcome.rejected[1].reason.contains("field type conflict"),
        "{:?}",
        outcome.rejected[1]
    );
    assert!(
        outcome.rejected[0].reason.contains("line break"),
        "{:?}",
        outcome.rejected[0]
    );
    assert_eq!(
        influx
            .sum_counts("partial", "SELECT count(i) FROM m")
            .unwrap(),
        1 + 18
    );
}

#[test]
fn an_unreachable_influxdb_is_unavailable_not_a_rejection() {
    let mut influx = Influx::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = store(&influx, "down");
    rt.block_on(store.ensure_database()).unwrap();
    influx.stop();
    let err = rt
        .block_on(store.write(&[point("m", "a", "x", 1)]))
        .unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
}

#[test]
fn numbers_round_trip_through_influxdb_exactly() {
    let influx = Influx::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = store(&influx, "numbers");
    rt.block_on(store.ensure_database()).unwrap();
    // Shortest round-trip floats in both notations (1e15 and 1e21 print with an exponent),
    // the extremes, and integers at both ends of i64.
    let floats = [
        0.1,
        2.5,
        1e15,
        1e16,
        1e21,
        1e-7,
        123_456.789,
        f64::MAX,
        f64::MIN_POSITIVE,
        -3.75e-300,
    ];
    let ints = [0, -1, i64::MIN, i64::MAX];
    // The same values as a device's f32 readings (f64::MAX becomes the largest f32).
    let gauge = |x: f64| Some(x as f32).filter(|g| g.is_finite()).unwrap_or(f32::MAX);
    let points: Vec<Point> = floats
        .iter()
        .zip(ints.iter().cycle())
        .enumerate()
        .map(|(k, (&x, &i))| Point {
            measurement: "numbers".into(),
            tags: vec![],
            fields: vec![
                ("x".into(), FieldValue::Float(x)),
                ("i".into(), FieldValue::Int(i)),
                // A device's f32 reading: stored as the f64 of its shortest decimal form.
                ("g".into(), FieldValue::Gauge(gauge(x))),
            ],
            ts_ms: 1_700_000_000_000 + k as i64,
        })
        .collect();
    let outcome = rt.block_on(store.write(&points)).unwrap();
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    let v = influx
        .query("numbers", "SELECT \"x\", \"i\", \"g\" FROM numbers")
        .unwrap();
    let rows = v
        .pointer("/results/0/series/0/values")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap();
    assert_eq!(rows.len(), points.len());
    for (row, (&x, &i)) in rows.iter().zip(floats.iter().zip(ints.iter().cycle())) {
        assert_eq!(
            row[1].as_f64().map(f64::to_bits),
            Some(x.to_bits()),
            "{row}"
        );
        assert_eq!(row[2].as_i64(), Some(i), "{row}");
        assert_eq!(
            row[3].as_f64().map(f64::to_bits),
            Some(gateway::store::widen_f32(gauge(x)).to_bits()),
            "{row}"
        );
    }
}
