//! The unclaimed-devices queue: findings of devices nobody has registered yet.
//!
//! No finding is dropped because its device is unknown. Each one is kept here (the newest
//! [`MAX_FINDINGS`] of them; per device a running count that never shrinks), the board and
//! the fleet page show the queue, and a critical one (a leak, a stuck valve, or anything the
//! device itself calls critical) opens a ticket without a home or contact, so an agent can
//! find the owner. When the device is registered later ([`claim`]), its tickets move to the
//! home and the queue entry is marked claimed.

use crate::store::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use crate::error::Result;
use crate::finding::{Finding, FindingKind, FindingState};
use protocol::message::Severity;

/// The home id of a ticket whose device is not registered (no home, no contact).
pub const NO_HOME: &str = "";

/// How many unclaimed findings are kept (the oldest go first; the per-device counts stay).
pub const MAX_FINDINGS: i64 = 10_000;

/// The queue's tables (created by the engine on open).
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS unclaimed_devices (
    device_id TEXT PRIMARY KEY,
    first_ts_ms INTEGER NOT NULL,
    last_ts_ms INTEGER NOT NULL,
    findings INTEGER NOT NULL DEFAULT 0,
    critical INTEGER NOT NULL DEFAULT 0,
    last_kind TEXT NOT NULL,
    claimed_ts_ms INTEGER,
    home_id TEXT
);
CREATE TABLE IF NOT EXISTS unclaimed_findings (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    began_ts_ms INTEGER NOT NULL,
    evidence TEXT NOT NULL,
    ticket_id INTEGER
);
CREATE INDEX IF NOT EXISTS unclaimed_findings_device ON unclaimed_findings(device_id, id);
CREATE INDEX IF NOT EXISTS unclaimed_findings_ts ON unclaimed_findings(ts_ms);
"#;

/// Whether a finding of an unregistered device is worth a ticket at once: water on the
/// floor (a leak, a valve stuck open) or whatever the device itself calls critical.
pub fn is_critical(f: &Finding) -> bool {
    f.state == FindingState::Active
        && (matches!(f.kind, FindingKind::Leak | FindingKind::LongWash)
            || f.severity == Severity::Critical)
}

/// Records one finding of an unregistered device; returns whether the device is new to the queue.
pub(crate) fn record(
    tx: &Transaction<'_>,
    f: &Finding,
    ticket_id: Option<i64>,
    now_ms: i64,
) -> Result<bool> {
    let critical = i64::from(is_critical(f));
    let known: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM unclaimed_devices WHERE device_id = ?1)",
        [&f.device_id],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO unclaimed_devices (device_id, first_ts_ms, last_ts_ms, findings, critical, last_kind)
         VALUES (?1, ?2, ?2, 1, ?3, ?4)
         ON CONFLICT(device_id) DO UPDATE SET last_ts_ms = ?2, findings = unclaimed_devices.findings + 1,
             critical = unclaimed_devices.critical + ?3, last_kind = ?4, claimed_ts_ms = NULL, home_id = NULL",
        params![f.device_id, now_ms, critical, f.kind.policy_key()],
    )?;
    tx.execute(
        "INSERT INTO unclaimed_findings (device_id, ts_ms, kind, severity, state, began_ts_ms, evidence, ticket_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            f.device_id,
            now_ms,
            f.kind.policy_key(),
            f.severity.as_str(),
            match f.state {
                FindingState::Active => "active",
                FindingState::Cleared => "cleared",
            },
            f.began_ts_ms,
            serde_json::to_string(&f.evidence)?,
            ticket_id
        ],
    )?;
    // Bounded: the oldest findings beyond the cap go (the per-device counts remain).
    tx.execute(
        "DELETE FROM unclaimed_findings WHERE id <= (SELECT MAX(id) FROM unclaimed_findings) - ?1",
        [MAX_FINDINGS],
    )?;
    Ok(!known)
}

/// Moves the tickets of a newly registered device to its home and closes its queue entry.
/// Returns the ids of the tickets claimed.
pub(crate) fn claim(
    tx: &Transaction<'_>,
    device_id: &str,
    home_id: &str,
    address: &str,
    now_ms: i64,
) -> Result<Vec<i64>> {
    let ids: Vec<i64> = {
        let mut stmt =
            tx.prepare("SELECT id FROM tickets WHERE device_id = ?1 AND home_id = ?2 ORDER BY id")?;

        stmt.query_map(params![device_id, NO_HOME], |r| r.get(0))?
            .collect::<crate::store::Result<Vec<_>>>()?
    };
    for id in &ids {
        tx.execute(
            "UPDATE tickets SET home_id = ?2,
                 visit_address = CASE WHEN status IN ('open', 'assigned', 'in_progress') THEN ?3 ELSE visit_address END
             WHERE id = ?1",
            params![id, home_id, address],
        )?;
    }
    tx.execute(
        "UPDATE unclaimed_devices SET claimed_ts_ms = ?2, home_id = ?3
         WHERE device_id = ?1 AND claimed_ts_ms IS NULL",
        params![device_id, now_ms, home_id],
    )?;
    Ok(ids)
}

/// One device in the queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnclaimedDevice {
    /// The device id it reports under.
    pub device_id: String,
    /// First finding, UTC ms.
    pub first_ts_ms: i64,
    /// Latest finding, UTC ms.
    pub last_ts_ms: i64,
    /// Findings so far.
    pub findings: u64,
    /// Critical findings so far.
    pub critical: u64,
    /// Policy key of the latest finding.
    pub last_kind: String,
    /// Its active ticket (opened without a contact), if any.
    pub ticket_id: Option<i64>,
}

/// One finding in the queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnclaimedFinding {
    /// Row id.
    pub id: i64,
    /// The device.
    pub device_id: String,
    /// When the engine heard of it, UTC ms.
    pub ts_ms: i64,
    /// Policy key of the kind.
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// `active` or `cleared`.
    pub state: String,
    /// When the condition began, UTC ms.
    pub began_ts_ms: i64,
    /// The finding's evidence.
    pub evidence: serde_json::Value,
    /// The ticket it opened or attached to.
    pub ticket_id: Option<i64>,
}

/// The queue: devices not yet claimed (most recent first, at most `limit`) and totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Queue {
    /// Devices waiting for an owner.
    pub devices: Vec<UnclaimedDevice>,
    /// How many devices wait (may exceed `devices.len()`).
    pub device_count: u64,
    /// Findings of the waiting devices, in all.
    pub finding_count: u64,
    /// Active tickets without a home.
    pub open_tickets: u64,
    /// The newest findings of the waiting devices (at most `limit`).
    pub recent: Vec<UnclaimedFinding>,
}

/// Reads the queue.
pub fn queue(conn: &Connection, limit: usize) -> Result<Queue> {
    let limit = limit.clamp(1, 500) as i64;
    let devices = {
        let mut stmt = conn.prepare(
            "SELECT u.device_id, u.first_ts_ms, u.last_ts_ms, u.findings, u.critical, u.last_kind,
                 (SELECT t.id FROM tickets t WHERE t.device_id = u.device_id AND t.home_id = ''
                  AND t.status IN ('open', 'assigned', 'in_progress') ORDER BY t.id DESC LIMIT 1)
             FROM unclaimed_devices u WHERE u.claimed_ts_ms IS NULL
             ORDER BY u.critical > 0 DESC, u.last_ts_ms DESC, u.device_id LIMIT ?1",
        )?;

        stmt.query_map([limit], |r| {
            Ok(UnclaimedDevice {
                device_id: r.get(0)?,
                first_ts_ms: r.get(1)?,
                last_ts_ms: r.get(2)?,
                findings: r.get::<_, i64>(3)?.max(0) as u64,
                critical: r.get::<_, i64>(4)?.max(0) as u64,
                last_kind: r.get(5)?,
                ticket_id: r.get(6)?,
            })
        })?
        .collect::<crate::store::Result<Vec<_>>>()?
    };
    let (device_count, finding_count): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(findings), 0) FROM unclaimed_devices WHERE claimed_ts_ms IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let open_tickets: i64 = conn.query_row(
        "SELECT COUNT(*) FROM tickets WHERE home_id = '' AND status IN ('open', 'assigned', 'in_progress')",
        [],
        |r| r.get(0),
    )?;
    let recent = {
        let mut stmt = conn.prepare(
            "SELECT f.id, f.device_id, f.ts_ms, f.kind, f.severity, f.state, f.began_ts_ms, f.evidence, f.ticket_id
             FROM unclaimed_findings f JOIN unclaimed_devices u ON u.device_id = f.device_id
             WHERE u.claimed_ts_ms IS NULL ORDER BY f.id DESC LIMIT ?1",
        )?;

        stmt.query_map([limit], |r| {
            let e: String = r.get(7)?;
            Ok(UnclaimedFinding {
                id: r.get(0)?,
                device_id: r.get(1)?,
                ts_ms: r.get(2)?,
                kind: r.get(3)?,
                severity: r.get(4)?,
                state: r.get(5)?,
                began_ts_ms: r.get(6)?,
                evidence: serde_json::from_str(&e).unwrap_or(serde_json::Value::Null),
                ticket_id: r.get(8)?,
            })
        })?
        .collect::<crate::store::Result<Vec<_>>>()?
    };
    Ok(Queue {
        devices,
        device_count: device_count.max(0) as u64,
        finding_count: finding_count.max(0) as u64,
        open_tickets: open_tickets.max(0) as u64,
        recent,
    })
}

/// The active ticket of an unregistered device for a fault key, if any.
pub(crate) fn active_ticket(
    conn: &Connection,
    device_id: &str,
    fault_key: &str,
) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM tickets WHERE device_id = ?1 AND fault_key = ?2 AND home_id = ''
             AND status IN ('open', 'assigned', 'in_progress')",
            params![device_id, fault_key],
            |r| r.get(0),
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, TicketEffect};
    use crate::registry::{Channel, Device, Home, Owner};
    use protocol::message::Model;

    fn finding(
        device: &str,
        kind: FindingKind,
        severity: Severity,
        state: FindingState,
    ) -> Finding {
        Finding {
            device_id: device.into(),
            kind,
            severity,
            evidence: serde_json::json!({ "value": 850 }),
            began_ts_ms: 1_000,
            state,
        }
    }

    #[test]
    fn an_unregistered_device_is_queued_and_its_leak_opens_a_ticket_without_a_contact_until_claimed(
    ) {
        let e = crate::engine::test_engine(EngineConfig::default());
        let leak = finding(
            "toilet-0042",
            FindingKind::Leak,
            Severity::Critical,
            FindingState::Active,
        );
        let out = e.ingest(&leak, 10_000).unwrap();
        assert!(out.unclaimed && out.new_unclaimed_device);
        let (id, effect) = out.ticket.expect("a critical finding opens a ticket");
        assert_eq!(effect, TicketEffect::Opened);
        // The repeat attaches; a self-service finding of another device is queued without a ticket.
        let again = e.ingest(&leak, 11_000).unwrap();
        assert_eq!(again.ticket, Some((id, TicketEffect::Attached)));
        assert!(!again.new_unclaimed_device);
        let clog = finding(
            "purifier-0043",
            FindingKind::InletClog,
            Severity::Warning,
            FindingState::Active,
        );
        let out = e.ingest(&clog, 12_000).unwrap();
        assert!(out.unclaimed && out.ticket.is_none() && out.reminders.is_empty());

        let q = e.read(|c| queue(c, 50)).unwrap();
        assert_eq!((q.device_count, q.finding_count, q.open_tickets), (2, 3, 1));
        assert_eq!(q.devices[0].device_id, "toilet-0042", "critical first");
        assert_eq!(q.devices[0].ticket_id, Some(id));
        assert_eq!(q.recent.len(), 3);
        let t = e.read(|c| crate::tickets::must_get(c, id)).unwrap();
        assert_eq!(
            (t.home_id.as_str(), t.source.as_str()),
            (NO_HOME, "unclaimed")
        );
        assert_eq!(t.assignee, None);
        let stats = e
            .read(|c| crate::fleet::stats(c, 0, 86_400_000, 86_400_000))
            .unwrap();
        assert_eq!(
            (
                stats.unclaimed_devices,
                stats.unclaimed_findings,
                stats.unclaimed_tickets
            ),
            (2, 3, 1)
        );
        assert_eq!(
            stats.findings,
            vec![3],
            "two pieces of ticket evidence and the queued clog"
        );

        // The agent finds the owner and registers the device: the ticket moves to the home.
        e.put_home(&Home {
            site: None,
            id: "h42".into(),
            address: "42 Nanjing Road".into(),
            region: "shanghai".into(),
            tz: "Asia/Shanghai".into(),
            lang: crate::templates::Lang::En,
            quiet_start: "22:00".into(),
            quiet_end: "08:00".into(),
            weekly_cap: None,
            channels: vec![Channel::App],
            owner: Owner {
                name: "Li Lei".into(),
                phone: "13812341234".into(),
                email: None,
            },
        })
        .unwrap();
        e.put_device_at(
            &Device {
                id: "toilet-0042".into(),
                home_id: "h42".into(),
                model: Model::Toilet,
                installed_ts_ms: 0,
                cartridges: Vec::new(),
            },
            20_000,
        )
        .unwrap();
        let t = e.read(|c| crate::tickets::must_get(c, id)).unwrap();
        assert_eq!(t.home_id, "h42");
        assert_eq!(t.visit_address.as_deref(), Some("42 Nanjing Road"));
        let q = e.read(|c| queue(c, 50)).unwrap();
        assert_eq!((q.device_count, q.open_tickets), (1, 0));
        // From now on the device's findings take the registered path.
        let cleared = finding(
            "toilet-0042",
            FindingKind::Leak,
            Severity::Critical,
            FindingState::Cleared,
        );
        let out = e.ingest(&cleared, 30_000).unwrap();
        assert!(!out.unclaimed);
        assert_eq!(out.ticket, Some((id, TicketEffect::ConditionCleared)));
    }

    #[test]
    fn the_findings_kept_are_bounded_but_the_counts_are_not() {
        let e = crate::engine::test_engine(EngineConfig::default());
        let f = finding(
            "shower-0001",
            FindingKind::AbnormalUsage {
                resource: crate::finding::Resource::Water,
            },
            Severity::Info,
            FindingState::Active,
        );
        for i in 0..(MAX_FINDINGS + 5) {
            e.ingest(&f, i).unwrap();
        }
        let kept: i64 = e
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM unclaimed_findings", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(kept, MAX_FINDINGS);
        let q = e.read(|c| queue(c, 10)).unwrap();
        assert_eq!(q.finding_count, (MAX_FINDINGS + 5) as u64);
    }
}
