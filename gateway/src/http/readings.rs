//! `GET /api/tickets/{id}/readings`: the device's readings around a ticket's finding, for
//! the board's evidence chart (the maintenance API knows tickets, only the gateway can read
//! the telemetry store).
//!
//! The window runs from [`BEFORE_MS`] before the finding began to [`AFTER_MS`] after it
//! (never past now). The answer is a list of series, each with its unit, the one that
//! shows the ticket's kind best first: water use per hour from the metered counter (a leak,
//! long or unusual use), temperatures (heater and sensor faults), inlet pressure, and the
//! values the device reported with its faults. At most [`MAX_POINTS`] points per series.
//!
//! Roles as for the ticket's commands: admins and agents, and the technician the ticket is
//! assigned to; anyone else gets the API's 404 (an operator 403). A household's water use
//! tells when people are at home: every read is audited (`read_readings`, `ticket/{id}`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use maintenance::api::ApiError;
use maintenance::Role;
use protocol::message::{FaultCode, Model};
use serde::Serialize;
use serde_json::Value;

use super::{error_body, AppState};
use crate::store::query::{QueryError, StoredPoint};

/// The route, beside the maintenance API's `/api/tickets/{id}`.
pub const PATH: &str = "/api/tickets/{id}/readings";
/// Readings shown before the finding began, ms (12 hours).
pub const BEFORE_MS: i64 = 12 * 3_600_000;
/// Readings shown after the finding began, ms (12 hours, never past now).
pub const AFTER_MS: i64 = 12 * 3_600_000;
/// Most points read per measurement.
pub const MAX_POINTS: usize = 500;

pub(super) fn router(state: AppState) -> Router {
    Router::new().route(PATH, get(readings)).with_state(state)
}

/// One series of the answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// What it is: `water_l_per_h`, `water_temp_c`, `fault_leak`, ...
    pub key: String,
    /// Its unit: `L/h`, `°C`, `kPa`, `mL/min`, `s`, `%`, `ppm`.
    pub unit: &'static str,
    /// `[ts_ms, value]`, oldest first.
    pub points: Vec<(i64, f64)>,
}

#[derive(Serialize)]
struct Answer {
    ticket_id: i64,
    device_id: String,
    model: Option<&'static str>,
    kind: String,
    finding_ts_ms: i64,
    from_ts_ms: i64,
    to_ts_ms: i64,
    series: Vec<Series>,
}

async fn readings(
    State(s): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    req: Request,
) -> Response {
    match answer(&s, id, req).await {
        Ok(a) => Json(a).into_response(),
        Err(Failure::Api(e)) => e.into_response(),
        Err(Failure::Store(e)) => {
            tracing::warn!(error = %e, "Cannot read a ticket's readings from the telemetry store.");
            error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the telemetry store cannot be read now; try again later",
            )
        }
    }
}

enum Failure {
    Api(ApiError),
    Store(QueryError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<maintenance::Error> for Failure {
    fn from(e: maintenance::Error) -> Self {
        Failure::Api(ApiError::from(e))
    }
}

async fn answer(
    s: &AppState,
    id: Result<Path<i64>, PathRejection>,
    req: Request,
) -> Result<Answer, Failure> {
    let (parts, _) = req.into_parts();
    let now = crate::clock::now_ms();
    let who = maintenance::api::authenticate_request(
        &s.auth,
        &s.guard,
        &parts.headers,
        maintenance::api::client_addr(&parts),
        parts.uri.path(),
        now,
    )?;
    let Ok(Path(id)) = id else {
        return Err(ApiError::invalid("id", "a ticket id is an integer").into());
    };
    match who.role {
        Role::Admin | Role::Agent | Role::Technician => {}
        Role::Operator => return Err(ApiError::Forbidden.into()),
        Role::Homeowner => return Err(ApiError::NotFound("ticket").into()),
    }
    let t = s
        .auth
        .read(|c| maintenance::tickets::get(c, id))?
        .ok_or(ApiError::NotFound("ticket"))?;
    if who.role == Role::Technician
        && (who.subject.is_none() || t.assignee.as_deref() != who.subject.as_deref())
    {
        return Err(ApiError::NotFound("ticket").into());
    }
    let model = s
        .auth
        .read(|c| maintenance::registry::get_device(c, &t.device_id))?
        .map(|d| d.model);
    s.auth
        .audit(&who, "read_readings", &format!("ticket/{id}"), now)?;

    let from = t.began_ts_ms - BEFORE_MS;
    let to = (t.began_ts_ms + AFTER_MS).min(now.max(t.began_ts_ms));
    let store = s.writer.store();
    let read = |m: &'static str| store.device_points(m, &t.device_id, from, to, MAX_POINTS);
    // An unregistered device: its telemetry tells the model.
    let (model, telemetry) = match model {
        Some(m) => (Some(m), read(m.as_str()).await.map_err(Failure::Store)?),
        None => {
            let mut found = (None, Vec::new());
            for m in [Model::Toilet, Model::Purifier, Model::Shower] {
                let rows = read(m.as_str()).await.map_err(Failure::Store)?;
                if !rows.is_empty() {
                    found = (Some(m), rows);
                    break;
                }
            }
            found
        }
    };
    let faults = read("fault").await.map_err(Failure::Store)?;
    Ok(Answer {
        ticket_id: t.id,
        device_id: t.device_id.clone(),
        model: model.map(Model::as_str),
        kind: t.kind.clone(),
        finding_ts_ms: t.began_ts_ms,
        from_ts_ms: from,
        to_ts_ms: to,
        series: series_for(&t.kind, model, &telemetry, &faults),
    })
}

/// The series for a ticket of `kind` on a device of `model`, the most telling first;
/// series without points are left out.
pub fn series_for(
    kind: &str,
    model: Option<Model>,
    telemetry: &[StoredPoint],
    faults: &[StoredPoint],
) -> Vec<Series> {
    let water = match model {
        Some(Model::Purifier) => Some(rate_per_hour("dispensed_ml", telemetry)),
        Some(Model::Toilet | Model::Shower) => Some(rate_per_hour("water_ml", telemetry)),
        None => None,
    };
    let temps: Vec<Series> = match model {
        Some(Model::Toilet) => vec![
            gauge("water_temp_c", "°C", telemetry),
            gauge("seat_temp_c", "°C", telemetry),
        ],
        Some(Model::Shower) => vec![gauge("temp_c", "°C", telemetry)],
        _ => Vec::new(),
    };
    let pressure = match model {
        Some(Model::Purifier) => Some(gauge("inlet_pressure_kpa", "kPa", telemetry)),
        Some(Model::Shower) => Some(gauge("pressure_kpa", "kPa", telemetry)),
        _ => None,
    };
    let quality = match model {
        Some(Model::Purifier) => Some(gauge("tds_out_ppm", "ppm", telemetry)),
        _ => None,
    };
    let reported = fault_series(faults);
    let mut out: Vec<Series> = Vec::new();
    let mut take = |s: Option<Series>| out.extend(s);
    match kind {
        "heater_fault" | "sensor_fault" => {
            temps.into_iter().for_each(|s| take(Some(s)));
            reported.into_iter().for_each(|s| take(Some(s)));
            take(water);
            take(pressure);
        }
        "low_inlet_pressure" | "inlet_clog" => {
            take(pressure);
            take(water);
            reported.into_iter().for_each(|s| take(Some(s)));
            temps.into_iter().for_each(|s| take(Some(s)));
        }
        _ => {
            take(water);
            reported.into_iter().for_each(|s| take(Some(s)));
            take(pressure);
            temps.into_iter().for_each(|s| take(Some(s)));
        }
    }
    take(quality);
    out.retain(|s| !s.points.is_empty());
    out
}

fn number(p: &StoredPoint, field: &str) -> Option<f64> {
    p.values
        .get(field)
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite())
}

/// A field as it was measured.
fn gauge(field: &'static str, unit: &'static str, rows: &[StoredPoint]) -> Series {
    Series {
        key: field.to_owned(),
        unit,
        points: rows
            .iter()
            .filter_map(|p| Some((p.ts_ms, number(p, field)?)))
            .collect(),
    }
}

/// A cumulative millilitre counter as litres per hour between consecutive readings,
/// placed at the later one (a counter that went back, a restart, starts again).
fn rate_per_hour(field: &'static str, rows: &[StoredPoint]) -> Series {
    let mut points = Vec::new();
    let mut last: Option<(i64, f64)> = None;
    for p in rows {
        let Some(v) = number(p, field) else { continue };
        if let Some((t0, v0)) = last {
            let dt = p.ts_ms - t0;
            if dt > 0 && v >= v0 {
                let l_per_h = (v - v0) / 1000.0 * 3_600_000.0 / dt as f64;
                points.push((p.ts_ms, (l_per_h * 100.0).round() / 100.0));
            }
        }
        last = Some((p.ts_ms, v));
    }
    Series {
        key: "water_l_per_h".to_owned(),
        unit: "L/h",
        points,
    }
}

/// The values the device reported with its faults, one series per fault code.
fn fault_series(rows: &[StoredPoint]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for p in rows {
        let (Some(code), Some(v)) = (
            p.values.get("code").and_then(Value::as_str),
            number(p, "value"),
        ) else {
            continue;
        };
        let Some(fc) = fault_code(code) else { continue };
        let (unit, v) = match fc {
            FaultCode::Leak => ("mL/min", v),
            FaultCode::ValveStuck => ("s", v),
            FaultCode::HeaterOverTemp | FaultCode::HeaterFailure => ("°C", v),
            FaultCode::LowInletPressure => ("kPa", v),
            // The flow against normal: a ratio, shown as a percentage.
            FaultCode::InletClog if v.abs() <= 1.0 => ("%", (v * 1000.0).round() / 10.0),
            FaultCode::InletClog => ("%", v),
            FaultCode::SensorError | FaultCode::MainBoard => continue,
        };
        let key = format!("fault_{code}");
        match out.iter_mut().find(|s| s.key == key) {
            Some(s) => s.points.push((p.ts_ms, v)),
            None => out.push(Series {
                key,
                unit,
                points: vec![(p.ts_ms, v)],
            }),
        }
    }
    out
}

fn fault_code(code: &str) -> Option<FaultCode> {
    serde_json::from_value(Value::String(code.to_owned())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ts_ms: i64, v: Value) -> StoredPoint {
        StoredPoint {
            ts_ms,
            values: v.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn a_leak_shows_water_use_per_hour_first_then_the_devices_values() {
        let telemetry = [
            p(
                0,
                serde_json::json!({"water_ml": 1000, "water_temp_c": 36.0}),
            ),
            p(
                900_000,
                serde_json::json!({"water_ml": 1500, "water_temp_c": 36.5}),
            ),
            p(
                1_800_000,
                serde_json::json!({"water_ml": 3500, "water_temp_c": 36.0}),
            ),
            // A restart: the counter went back.
            p(
                2_700_000,
                serde_json::json!({"water_ml": 100, "water_temp_c": 36.0}),
            ),
        ];
        let faults = [
            p(
                1_000_000,
                serde_json::json!({"code": "leak", "value": 850.0, "raised": true}),
            ),
            p(
                1_100_000,
                serde_json::json!({"code": "sensor_error", "value": 1.0}),
            ),
        ];
        let s = series_for("leak", Some(Model::Toilet), &telemetry, &faults);
        let keys: Vec<&str> = s.iter().map(|s| s.key.as_str()).collect();
        // The seat temperature was not reported: no empty series.
        assert_eq!(keys, vec!["water_l_per_h", "fault_leak", "water_temp_c"]);
        assert_eq!(s[0].unit, "L/h");
        assert_eq!(s[0].points, vec![(900_000, 2.0), (1_800_000, 8.0)]);
        assert_eq!(s[1].points, vec![(1_000_000, 850.0)]);
        assert_eq!(s[1].unit, "mL/min");
        // A heater fault leads with the temperatures.
        let h = series_for("heater_fault", Some(Model::Toilet), &telemetry, &[]);
        assert_eq!(h[0].key, "water_temp_c");
        assert_eq!(h[0].unit, "°C");
        // No telemetry and no model: only what the device reported.
        let only = series_for("leak", None, &[], &faults);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].key, "fault_leak");
    }
}
