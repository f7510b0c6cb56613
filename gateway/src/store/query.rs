//! Reading points back from the telemetry store, for the pages: one device's points of
//! one measurement in a time window (a ticket's evidence chart, `http::readings`).
//!
//! Bounded: at most `limit` points, oldest first, from one device's series (InfluxDB v1
//! `/query` with InfluxQL; SQLite on its own read-only connection, so a read never holds
//! the writer's lock). The InfluxDB v2 API (Flux) is not read: [`QueryError::Unsupported`].

use std::path::Path;

use rusqlite::{params, OpenFlags};
use serde_json::{Map, Value};

use super::influx::{InfluxApi, InfluxStore};
use super::TelemetryStore;

/// One stored point: its time and its fields, with its tags (e.g. `code`) among them.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    /// Device timestamp, UTC ms.
    pub ts_ms: i64,
    /// Fields and tags by name.
    pub values: Map<String, Value>,
}

/// Why points could not be read.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The store could not be reached or refused the query.
    #[error("telemetry store unavailable for reading: {0}")]
    Unavailable(String),
    /// This store is not read back by the gateway.
    #[error("{0} is not read back by the gateway")]
    Unsupported(&'static str),
    /// An argument that cannot be put in a query (not a device id).
    #[error("not a device id: {0:?}")]
    BadDevice(String),
}

impl TelemetryStore {
    /// The points of `measurement` of `device_id` with `from_ms <= ts <= to_ms`, oldest
    /// first, at most `limit`.
    pub async fn device_points(
        &self,
        measurement: &'static str,
        device_id: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredPoint>, QueryError> {
        if !protocol::is_valid_device_id(device_id) {
            return Err(QueryError::BadDevice(device_id.to_owned()));
        }
        match self {
            TelemetryStore::Influx(s) => {
                influx_points(s, measurement, device_id, from_ms, to_ms, limit).await
            }
            TelemetryStore::Sqlite(s) => {
                let path = s.path().to_owned();
                let device = device_id.to_owned();
                tokio::task::spawn_blocking(move || {
                    sqlite_points(&path, measurement, &device, from_ms, to_ms, limit)
                })
                .await
                .map_err(|e| QueryError::Unavailable(format!("SQLite reader task failed: {e}")))?
            }
        }
    }
}

async fn influx_points(
    s: &InfluxStore,
    measurement: &'static str,
    device_id: &str,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> Result<Vec<StoredPoint>, QueryError> {
    let (http, config) = s.reader();
    let InfluxApi::V1 {
        database,
        retention_policy,
        ..
    } = &config.api
    else {
        return Err(QueryError::Unsupported("the InfluxDB v2 API"));
    };
    // The measurement is one of the contract's names and the device id was checked
    // ([a-z0-9-_]): nothing here can break out of the quotes.
    let from = match retention_policy {
        Some(rp) => format!("\"{}\".\"{measurement}\"", rp.replace('"', "")),
        None => format!("\"{measurement}\""),
    };
    let q = format!(
        "SELECT * FROM {from} WHERE \"device_id\" = '{device_id}' AND time >= {from_ms}ms \
         AND time <= {to_ms}ms ORDER BY time ASC LIMIT {limit}"
    );
    let mut url = config.url.clone();
    url.set_path("/query");
    let resp = s
        .authorize(http.get(url).query(&[
            ("db", database.as_str()),
            ("q", q.as_str()),
            ("epoch", "ms"),
        ]))
        .send()
        .await
        .map_err(|e| QueryError::Unavailable(format!("{}: {e}", config.url)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| QueryError::Unavailable(format!("{}: HTTP {status}: {e}", config.url)))?;
    let body: Value = serde_json::from_str(&text).map_err(|e| {
        QueryError::Unavailable(format!("{}: HTTP {status}: not JSON: {e}", config.url))
    })?;
    if let Some(e) = body
        .pointer("/results/0/error")
        .or_else(|| body.get("error"))
        .and_then(Value::as_str)
    {
        return Err(QueryError::Unavailable(format!("HTTP {status}: {e}")));
    }
    if !status.is_success() {
        return Err(QueryError::Unavailable(format!("HTTP {status}")));
    }
    Ok(influx_rows(&body))
}

/// The rows of an InfluxQL answer (`epoch=ms`): `time` becomes `ts_ms`, nulls are left out.
fn influx_rows(body: &Value) -> Vec<StoredPoint> {
    let mut out = Vec::new();
    let series = body
        .pointer("/results/0/series")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for s in series {
        let columns: Vec<&str> = s["columns"]
            .as_array()
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for row in s["values"].as_array().map_or(&[][..], Vec::as_slice) {
            let Some(row) = row.as_array() else { continue };
            let mut values = Map::new();
            let mut ts_ms = None;
            for (name, v) in columns.iter().zip(row) {
                if *name == "time" {
                    ts_ms = v.as_i64();
                } else if !v.is_null() {
                    values.insert((*name).to_owned(), v.clone());
                }
            }
            if let Some(ts_ms) = ts_ms {
                out.push(StoredPoint { ts_ms, values });
            }
        }
    }
    out.sort_by_key(|p| p.ts_ms);
    out
}

fn sqlite_points(
    path: &Path,
    measurement: &str,
    device_id: &str,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> Result<Vec<StoredPoint>, QueryError> {
    let fail = |e: rusqlite::Error| QueryError::Unavailable(format!("SQLite: {e}"));
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(std::time::Duration::from_secs(2))
        .map_err(fail)?;
    // The device's series (few: its telemetry, one per fault code, per cartridge slot…),
    // then each one's window by `samples_by_series`, merged in time order.
    let mut stmt = conn
        .prepare(
            "SELECT samples.ts_ms, series.tags, samples.fields
             FROM series JOIN samples ON samples.series_id = series.id
             WHERE series.device_id = ?1 AND series.measurement = ?2
               AND samples.ts_ms >= ?3 AND samples.ts_ms <= ?4
             ORDER BY samples.ts_ms LIMIT ?5",
        )
        .map_err(fail)?;
    let rows = stmt
        .query_map(
            params![device_id, measurement, from_ms, to_ms, limit as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
        )
        .map_err(fail)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(fail)?;
    Ok(rows
        .into_iter()
        .map(|(ts_ms, series, fields)| {
            let mut values = match serde_json::from_str::<Value>(&fields) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            };
            if let Ok(tags) = serde_json::from_str::<Vec<(String, String)>>(&series) {
                for (k, v) in tags {
                    values.insert(k, Value::String(v));
                }
            }
            StoredPoint { ts_ms, values }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{FieldValue, Point};

    fn point(m: &'static str, device: &str, code: Option<&str>, ts: i64, v: f64) -> Point {
        let mut tags = vec![("device_id".into(), device.to_owned().into())];
        if let Some(c) = code {
            tags.push(("code".into(), c.to_owned().into()));
        }
        Point {
            measurement: m.into(),
            tags,
            fields: vec![("value".into(), FieldValue::Float(v))],
            ts_ms: ts,
        }
    }

    #[tokio::test]
    async fn sqlite_reads_one_devices_window_oldest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = TelemetryStore::Sqlite(SqliteStore::open(&path).unwrap());
        store
            .write(&[
                point("fault", "t-1", Some("leak"), 3_000, 61.0),
                point("fault", "t-1", Some("leak"), 1_000, 42.0),
                point("fault", "t-10", Some("leak"), 2_000, 9.0),
                point("fault", "t-1", Some("valve_stuck"), 2_000, 30.0),
                point("fault", "t-1", Some("leak"), 9_000, 1.0),
                point("toilet", "t-1", None, 2_500, 5.0),
            ])
            .await
            .unwrap();
        let got = store
            .device_points("fault", "t-1", 0, 5_000, 10)
            .await
            .unwrap();
        let summary: Vec<(i64, String, f64)> = got
            .iter()
            .map(|p| {
                (
                    p.ts_ms,
                    p.values["code"].as_str().unwrap().to_owned(),
                    p.values["value"].as_f64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(i64, String, f64)> = vec![
            (1_000, "leak".into(), 42.0),
            (2_000, "valve_stuck".into(), 30.0),
            (3_000, "leak".into(), 61.0),
        ];
        assert_eq!(summary, want);
        assert_eq!(
            store
                .device_points("fault", "t-1", 0, 5_000, 2)
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(matches!(
            store.device_points("fault", "T'1", 0, 1, 1).await,
            Err(QueryError::BadDevice(_))
        ));
    }

    #[test]
    fn influx_answers_become_points_without_nulls() {
        let body = serde_json::json!({"results":[{"statement_id":0,"series":[{"name":"toilet",
            "columns":["time","device_id","water_ml","fw"],
            "values":[[2000,"t-1",500,null],[1000,"t-1",400,"1.2"]]}]}]});
        let rows = influx_rows(&body);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ts_ms, 1000);
        assert_eq!(rows[0].values["water_ml"], 400);
        assert!(!rows[1].values.contains_key("fw"));
        assert!(influx_rows(&serde_json::json!({"results":[{"statement_id":0}]})).is_empty());
    }
}
