//! Service KPIs as time series: every tick the maintenance engine's KPIs (time to
//! acknowledge and resolve, first-time-fix and deadline-breach rates over the last
//! seven days) and its open backlog per priority are written to the telemetry store,
//! through the same durable writer as telemetry, so Grafana can plot them next to
//! the fleet's readings (measurements `service_kpi` and `tickets_open`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::now_ms;
use crate::store::durable::DurableWriter;
use crate::store::{FieldValue, Name, Point};

use protocol::catalog::WEEK_MS;

/// The points of one KPI snapshot at `now`.
pub fn snapshot(engine: &maintenance::Engine, now: i64) -> Result<Vec<Point>, maintenance::Error> {
    let kpi = engine.kpi(now - WEEK_MS, now)?;
    let mut fields = vec![
        (
            Name::Borrowed("tickets_7d"),
            FieldValue::Int(kpi.tickets as i64),
        ),
        (
            Name::Borrowed("open_backlog"),
            FieldValue::Int(kpi.open_backlog as i64),
        ),
        (
            Name::Borrowed("warning"),
            FieldValue::Bool(kpi.warning.is_some()),
        ),
    ];
    let hours = |ms: Option<f64>| ms.map(|m| m / 3_600_000.0);
    for (name, value) in [
        ("mean_ack_h", hours(kpi.mean_ack_ms)),
        ("mean_resolve_h", hours(kpi.mean_resolve_ms)),
        ("first_time_fix_rate", kpi.first_time_fix_rate),
        ("deadline_breach_rate", kpi.deadline_breach_rate),
    ] {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            fields.push((name.into(), FieldValue::Float(v)));
        }
    }
    let mut points = vec![Point {
        measurement: "service_kpi".into(),
        tags: Vec::new(),
        fields,
        ts_ms: now,
    }];
    for (priority, open, overdue) in engine.backlog_by_priority(now)? {
        points.push(Point {
            measurement: "tickets_open".into(),
            tags: vec![("priority".into(), priority.as_str().into())],
            fields: vec![
                ("open".into(), FieldValue::Int(open as i64)),
                ("overdue".into(), FieldValue::Int(overdue as i64)),
            ],
            ts_ms: now,
        });
    }
    Ok(points)
}

/// Writes a snapshot every `every` until shutdown.
pub async fn run(
    engine: Arc<maintenance::Engine>,
    writer: Arc<DurableWriter>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        let engine = Arc::clone(&engine);
        let points = match tokio::task::spawn_blocking(move || snapshot(&engine, now_ms())).await {
            Ok(Ok(points)) => points,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Cannot compute the service KPIs; will try again next tick.");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "The service KPI task failed.");
                continue;
            }
        };
        let refused = writer.persist(&points).await;
        if !refused.is_empty() {
            tracing::warn!(refused = refused.len(), first = %refused[0].reason, "The store refused service KPI points.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::engine_with_a_toilet;
    use maintenance::{Finding, FindingKind, FindingState};
    use protocol::message::Severity;

    #[test]
    fn a_snapshot_counts_the_open_leak_ticket_under_critical() {
        let engine = engine_with_a_toilet();
        let t0 = 1_780_000_000_000;
        let finding = Finding {
            device_id: "toilet-1".into(),
            kind: FindingKind::Leak,
            severity: Severity::Critical,
            evidence: serde_json::Value::Null,
            began_ts_ms: t0,
            state: FindingState::Active,
        };
        engine.ingest(&finding, t0).unwrap();
        // Five hours later the 4-hour deadline is breached.
        let points = snapshot(&engine, t0 + 5 * 3_600_000).unwrap();
        let critical = points
            .iter()
            .find(|p| {
                p.measurement == "tickets_open"
                    && p.tags == vec![(Name::Borrowed("priority"), Name::Borrowed("critical"))]
            })
            .unwrap();
        assert_eq!(
            critical.fields,
            vec![
                (Name::Borrowed("open"), FieldValue::Int(1)),
                (Name::Borrowed("overdue"), FieldValue::Int(1))
            ]
        );
        let low = points
            .iter()
            .find(|p| p.tags == vec![(Name::Borrowed("priority"), Name::Borrowed("low"))])
            .unwrap();
        assert_eq!(low.fields[0].1, FieldValue::Int(0));
        let kpi = points
            .iter()
            .find(|p| p.measurement == "service_kpi")
            .unwrap();
        assert!(
            kpi.fields
                .contains(&(Name::Borrowed("tickets_7d"), FieldValue::Int(1))),
            "{:?}",
            kpi.fields
        );
        assert!(kpi
            .fields
            .contains(&(Name::Borrowed("open_backlog"), FieldValue::Int(1))));
    }
}
