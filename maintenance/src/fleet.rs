//! Fleet health at a glance, for the fleet page: registered homes and devices, findings
//! and tickets per time bucket, open tickets by priority, and the devices with the most
//! trouble. Only counts and ids: no personal data, so reading it is not audited.

use std::collections::BTreeMap;

use crate::store::{params, Connection};
use serde::Serialize;

use crate::error::Result;

/// One device with a lot of trouble in the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TroubledDevice {
    /// The device.
    pub device_id: String,
    /// Its home.
    pub home_id: String,
    /// The home's region.
    pub region: String,
    /// Findings in the window (ticket evidence plus self-service reminders).
    pub findings: u64,
    /// Tickets opened in the window.
    pub tickets: u64,
    /// Its tickets still open, assigned or in progress (any age).
    pub active: u64,
}

/// The fleet's state over `[from_ms, to_ms)` in buckets of `bucket_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetStats {
    /// Window start, UTC ms.
    pub from_ms: i64,
    /// Window end (exclusive), UTC ms.
    pub to_ms: i64,
    /// Bucket width, ms.
    pub bucket_ms: i64,
    /// Registered homes.
    pub homes: u64,
    /// Registered devices.
    pub devices: u64,
    /// Findings per bucket: evidence attached to tickets, plus reminders sent to the
    /// homeowner without a ticket (filter reminders excluded: they are a schedule).
    pub findings: Vec<u64>,
    /// Tickets opened per bucket.
    pub tickets_opened: Vec<u64>,
    /// Tickets resolved per bucket.
    pub tickets_resolved: Vec<u64>,
    /// Active tickets (open, assigned, in progress) by priority.
    pub active_by_priority: BTreeMap<String, u64>,
    /// Up to ten devices, most findings first.
    pub worst_devices: Vec<TroubledDevice>,
    /// Devices that report findings but are not registered (the unclaimed-devices queue).
    pub unclaimed_devices: u64,
    /// Findings of unregistered devices in the window (also counted in `findings`).
    pub unclaimed_findings: u64,
    /// Active tickets without a home (critical findings of unregistered devices).
    pub unclaimed_tickets: u64,
}

/// Computes [`FleetStats`]. `bucket_ms` must be positive; at most 400 buckets.
pub fn stats(conn: &Connection, from_ms: i64, to_ms: i64, bucket_ms: i64) -> Result<FleetStats> {
    let n = usize::try_from((to_ms - from_ms + bucket_ms - 1) / bucket_ms.max(1))
        .unwrap_or(0)
        .min(400);
    let bucket = |ts: i64| {
        usize::try_from((ts - from_ms) / bucket_ms.max(1))
            .ok()
            .filter(|b| *b < n)
    };
    let count = |sql: &str| -> Result<u64> {
        Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))?.max(0) as u64)
    };
    let series = |sql: &str| -> Result<Vec<u64>> {
        let mut out = vec![0u64; n];
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(params![from_ms, to_ms], |r| r.get::<_, i64>(0))?;
        for ts in rows {
            if let Some(b) = bucket(ts?) {
                out[b] += 1;
            }
        }
        Ok(out)
    };
    let mut findings =
        series("SELECT ts_ms FROM ticket_evidence WHERE ts_ms >= ?1 AND ts_ms < ?2")?;
    let reminders = series(
        "SELECT created_ts_ms FROM reminders WHERE created_ts_ms >= ?1 AND created_ts_ms < ?2
         AND ticket_id IS NULL AND kind != 'filter_due'",
    )?;
    // Findings of unregistered devices count too (without a ticket: the ones with a ticket
    // are already in its evidence).
    let unclaimed = series(
        "SELECT ts_ms FROM unclaimed_findings WHERE ts_ms >= ?1 AND ts_ms < ?2 AND ticket_id IS NULL",
    )?;
    let unclaimed_findings: u64 = conn
        .query_row(
            "SELECT COUNT(*) FROM unclaimed_findings WHERE ts_ms >= ?1 AND ts_ms < ?2",
            params![from_ms, to_ms],
            |r| r.get::<_, i64>(0),
        )?
        .max(0) as u64;
    for ((f, r), u) in findings.iter_mut().zip(reminders).zip(unclaimed) {
        *f += r + u;
    }
    let mut active_by_priority = BTreeMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT priority, COUNT(*) FROM tickets WHERE status IN ('open', 'assigned', 'in_progress') GROUP BY priority",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (p, c) = row?;
            active_by_priority.insert(p, c.max(0) as u64);
        }
    }
    let worst_devices = {
        let mut stmt = conn.prepare(
            "WITH f AS (
                 SELECT t.device_id AS device_id, COUNT(*) AS n FROM ticket_evidence e JOIN tickets t ON t.id = e.ticket_id
                 WHERE e.ts_ms >= ?1 AND e.ts_ms < ?2 GROUP BY t.device_id
                 UNION ALL
                 SELECT device_id, COUNT(*) FROM reminders WHERE created_ts_ms >= ?1 AND created_ts_ms < ?2
                 AND ticket_id IS NULL AND kind != 'filter_due' GROUP BY device_id
             ), fs AS (SELECT device_id, SUM(n) AS n FROM f GROUP BY device_id)
             SELECT d.id, d.home_id, COALESCE(h.region, ''), fs.n,
                 (SELECT COUNT(*) FROM tickets t WHERE t.device_id = d.id AND t.opened_ts_ms >= ?1 AND t.opened_ts_ms < ?2),
                 (SELECT COUNT(*) FROM tickets t WHERE t.device_id = d.id AND t.status IN ('open', 'assigned', 'in_progress'))
             FROM fs JOIN devices d ON d.id = fs.device_id LEFT JOIN homes h ON h.id = d.home_id
             ORDER BY fs.n DESC, d.id LIMIT 10",
        )?;
        let rows = stmt.query_map(params![from_ms, to_ms], |r| {
            Ok(TroubledDevice {
                device_id: r.get(0)?,
                home_id: r.get(1)?,
                region: r.get(2)?,
                findings: r.get::<_, i64>(3)?.max(0) as u64,
                tickets: r.get::<_, i64>(4)?.max(0) as u64,
                active: r.get::<_, i64>(5)?.max(0) as u64,
            })
        })?;
        rows.collect::<crate::store::Result<Vec<_>>>()?
    };
    Ok(FleetStats {
        from_ms,
        to_ms,
        bucket_ms,
        homes: count("SELECT COUNT(*) FROM homes")?,
        devices: count("SELECT COUNT(*) FROM devices")?,
        findings,
        tickets_opened: series(
            "SELECT opened_ts_ms FROM tickets WHERE opened_ts_ms >= ?1 AND opened_ts_ms < ?2",
        )?,
        tickets_resolved: series(
            "SELECT resolved_ts_ms FROM tickets WHERE resolved_ts_ms >= ?1 AND resolved_ts_ms < ?2",
        )?,
        active_by_priority,
        worst_devices,
        unclaimed_devices: count(
            "SELECT COUNT(*) FROM unclaimed_devices WHERE claimed_ts_ms IS NULL",
        )?,
        unclaimed_findings,
        unclaimed_tickets: count(
            "SELECT COUNT(*) FROM tickets WHERE home_id = '' AND status IN ('open', 'assigned', 'in_progress')",
        )?,
    })
}

/// The region of every home, by home id (for the board's region filter).
pub fn regions(conn: &Connection) -> Result<BTreeMap<String, String>> {
    let mut stmt = conn.prepare("SELECT id, region FROM homes")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    Ok(rows.collect::<crate::store::Result<BTreeMap<_, _>>>()?)
}
