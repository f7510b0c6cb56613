//! Incidents: findings of one kind grouped per home or per site, so one cause is one
//! message to a household, not one per fixture.
//!
//! A family away for ten days makes every fixture of the home "unused" within a day: that is
//! one reminder to the home, naming the fixtures. A building whose supply loses pressure
//! makes every home's fixtures report low pressure at once: that is one incident for the
//! site, one message per home (saying it is the building's supply, not their fixtures), and
//! staff see it as one incident (`GET /api/incidents`).
//!
//! A finding joins an open incident of its scope and kind if the incident's latest finding
//! began within the policy's `group_window_hours` of it (device time, so a backlog replayed
//! in seconds is not one incident); otherwise it opens a new one. An incident
//! closes when every device in it has cleared. The policy says which kinds group and how
//! (`kinds.<kind>.notify.group = "home" | "site"`); a home without a site groups per home.

use crate::store::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The tables (schema step 6).
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    opened_ts_ms INTEGER NOT NULL,
    last_ts_ms INTEGER NOT NULL,
    closed_ts_ms INTEGER
);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents(scope, scope_id, kind, closed_ts_ms);
CREATE TABLE IF NOT EXISTS incident_members (
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    device_id TEXT NOT NULL,
    home_id TEXT NOT NULL,
    reminder_id INTEGER,
    joined_ts_ms INTEGER NOT NULL,
    cleared_ts_ms INTEGER,
    PRIMARY KEY (incident_id, device_id)
);
CREATE INDEX IF NOT EXISTS incident_members_device ON incident_members(device_id, cleared_ts_ms);
"#;

/// What a kind's findings are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grouping {
    /// Each device on its own (the default).
    #[default]
    Device,
    /// The devices of one home together.
    Home,
    /// The homes of one site (building, shared supply) together; per home without a site.
    Site,
}

/// The scope of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One home.
    Home,
    /// One site.
    Site,
}

impl Scope {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Home => "home",
            Scope::Site => "site",
        }
    }

    fn parse(s: &str) -> Scope {
        if s == "site" {
            Scope::Site
        } else {
            Scope::Home
        }
    }
}

/// An incident as staff see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Incident id.
    pub id: i64,
    /// Home or site.
    pub scope: Scope,
    /// The home's or the site's id.
    pub scope_id: String,
    /// Policy key of the finding kind.
    pub kind: String,
    /// First finding, UTC ms.
    pub opened_ts_ms: i64,
    /// Latest finding that joined, UTC ms.
    pub last_ts_ms: i64,
    /// When the last device cleared, UTC ms; `None` while open.
    pub closed_ts_ms: Option<i64>,
    /// Homes in it, by id.
    pub homes: Vec<String>,
    /// Devices in it, by id.
    pub devices: Vec<String>,
    /// Devices whose finding has not cleared.
    pub active_devices: usize,
}

/// Where a finding went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// It opened a new incident: the caller notifies as for a single device.
    Opened(i64),
    /// It joined an open incident in which its home already has a reminder: nothing new
    /// is sent; that reminder now names the device too.
    HomeNotified {
        /// The incident.
        incident: i64,
        /// The home's reminder.
        reminder: i64,
    },
    /// It joined an open incident of other homes (a site): its home gets one message
    /// saying the cause is shared.
    SiteShared {
        /// The incident.
        incident: i64,
        /// Homes in the incident, this one included.
        homes: usize,
    },
    /// The device was already in the open incident (a repeat of its finding).
    Repeat {
        /// The incident.
        incident: i64,
        /// The reminder that told its home, if one did.
        reminder: Option<i64>,
    },
}

/// Puts a device's finding, begun at `at_ms`, into an incident of `(scope, scope_id, kind)`:
/// the open one whose latest finding began no more than `window_ms` before, or a new one.
#[allow(clippy::too_many_arguments)]
pub fn join(
    tx: &Transaction<'_>,
    scope: Scope,
    scope_id: &str,
    kind: &str,
    device_id: &str,
    home_id: &str,
    window_ms: i64,
    at_ms: i64,
) -> Result<Joined> {
    let open: Option<i64> = tx
        .query_row(
            "SELECT id FROM incidents WHERE scope = ?1 AND scope_id = ?2 AND kind = ?3
             AND closed_ts_ms IS NULL AND last_ts_ms >= ?4 AND opened_ts_ms <= ?5
             ORDER BY id DESC LIMIT 1",
            params![
                scope.as_str(),
                scope_id,
                kind,
                at_ms.saturating_sub(window_ms),
                at_ms.saturating_add(window_ms)
            ],
            |r| r.get(0),
        )
        .optional()?;
    let Some(incident) = open else {
        let id: i64 = tx.query_row(
            "INSERT INTO incidents (scope, scope_id, kind, opened_ts_ms, last_ts_ms)
             VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
            params![scope.as_str(), scope_id, kind, at_ms],
            |r| r.get(0),
        )?;
        add_member(tx, id, device_id, home_id, at_ms)?;
        return Ok(Joined::Opened(id));
    };
    let member: Option<(Option<i64>, Option<i64>)> = tx
        .query_row(
            "SELECT cleared_ts_ms, reminder_id FROM incident_members
             WHERE incident_id = ?1 AND device_id = ?2",
            params![incident, device_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    tx.execute(
        "UPDATE incidents SET last_ts_ms = CASE WHEN last_ts_ms > ?2 THEN last_ts_ms ELSE ?2 END WHERE id = ?1",
        params![incident, at_ms],
    )?;
    match member {
        Some((cleared, reminder)) => {
            if cleared.is_some() {
                // It cleared and came back while the others still have it: active again.
                tx.execute(
                    "UPDATE incident_members SET cleared_ts_ms = NULL
                     WHERE incident_id = ?1 AND device_id = ?2",
                    params![incident, device_id],
                )?;
            }
            return Ok(Joined::Repeat { incident, reminder });
        }
        None => add_member(tx, incident, device_id, home_id, at_ms)?,
    }
    let home_reminder: Option<i64> = tx
        .query_row(
            "SELECT reminder_id FROM incident_members WHERE incident_id = ?1 AND home_id = ?2
             AND reminder_id IS NOT NULL ORDER BY joined_ts_ms LIMIT 1",
            params![incident, home_id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(reminder) = home_reminder {
        set_reminder(tx, incident, device_id, reminder)?;
        return Ok(Joined::HomeNotified { incident, reminder });
    }
    let homes: i64 = tx.query_row(
        "SELECT COUNT(DISTINCT home_id) FROM incident_members WHERE incident_id = ?1",
        [incident],
        |r| r.get(0),
    )?;
    Ok(Joined::SiteShared {
        incident,
        homes: usize::try_from(homes).unwrap_or(0),
    })
}

fn add_member(
    tx: &Transaction<'_>,
    incident: i64,
    device_id: &str,
    home_id: &str,
    now_ms: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO incident_members (incident_id, device_id, home_id, joined_ts_ms)
         VALUES (?1, ?2, ?3, ?4)",
        params![incident, device_id, home_id, now_ms],
    )?;
    Ok(())
}

/// Records the reminder that told the device's home.
pub fn set_reminder(
    tx: &Transaction<'_>,
    incident: i64,
    device_id: &str,
    reminder: i64,
) -> Result<()> {
    tx.execute(
        "UPDATE incident_members SET reminder_id = ?3 WHERE incident_id = ?1 AND device_id = ?2",
        params![incident, device_id, reminder],
    )?;
    Ok(())
}

/// The device's finding of `kind` cleared: it leaves the open incidents of that kind, and
/// an incident closes when every device in it has cleared. Returns the incidents closed.
pub fn clear(tx: &Transaction<'_>, device_id: &str, kind: &str, now_ms: i64) -> Result<Vec<i64>> {
    let open: Vec<i64> = {
        let mut stmt = tx.prepare(
            "SELECT m.incident_id FROM incident_members m JOIN incidents i ON i.id = m.incident_id
             WHERE m.device_id = ?1 AND m.cleared_ts_ms IS NULL AND i.kind = ?2 AND i.closed_ts_ms IS NULL",
        )?;
        let rows = stmt.query_map(params![device_id, kind], |r| r.get(0))?;
        rows.collect::<crate::store::Result<_>>()?
    };
    let mut closed = Vec::new();
    for incident in open {
        tx.execute(
            "UPDATE incident_members SET cleared_ts_ms = ?3 WHERE incident_id = ?1 AND device_id = ?2",
            params![incident, device_id, now_ms],
        )?;
        let active: i64 = tx.query_row(
            "SELECT COUNT(*) FROM incident_members WHERE incident_id = ?1 AND cleared_ts_ms IS NULL",
            [incident],
            |r| r.get(0),
        )?;
        if active == 0 {
            tx.execute(
                "UPDATE incidents SET closed_ts_ms = ?2 WHERE id = ?1",
                params![incident, now_ms],
            )?;
            closed.push(incident);
        }
    }
    Ok(closed)
}

/// The devices of an incident that share one home's reminder, by id.
pub fn devices_of_reminder(conn: &Connection, reminder: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT device_id FROM incident_members WHERE reminder_id = ?1 ORDER BY joined_ts_ms, device_id",
    )?;
    let rows = stmt.query_map([reminder], |r| r.get(0))?;
    Ok(rows.collect::<crate::store::Result<_>>()?)
}

/// Incidents newest first (only open ones if `open_only`), at most `limit`.
pub fn list(conn: &Connection, open_only: bool, limit: usize) -> Result<Vec<Incident>> {
    let mut stmt = conn.prepare(
        "SELECT id, scope, scope_id, kind, opened_ts_ms, last_ts_ms, closed_ts_ms FROM incidents
         WHERE (?1 = 0 OR closed_ts_ms IS NULL) ORDER BY id DESC LIMIT ?2",
    )?;
    let heads = stmt
        .query_map(
            params![open_only, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                let scope: String = r.get(1)?;
                Ok(Incident {
                    id: r.get(0)?,
                    scope: Scope::parse(&scope),
                    scope_id: r.get(2)?,
                    kind: r.get(3)?,
                    opened_ts_ms: r.get(4)?,
                    last_ts_ms: r.get(5)?,
                    closed_ts_ms: r.get(6)?,
                    homes: Vec::new(),
                    devices: Vec::new(),
                    active_devices: 0,
                })
            },
        )?
        .collect::<crate::store::Result<Vec<_>>>()?;
    let mut members = conn.prepare(
        "SELECT device_id, home_id, cleared_ts_ms IS NULL FROM incident_members
         WHERE incident_id = ?1 ORDER BY joined_ts_ms, device_id",
    )?;
    let mut out = Vec::with_capacity(heads.len());
    for mut incident in heads {
        let rows = members
            .query_map([incident.id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })?
            .collect::<crate::store::Result<Vec<_>>>()?;
        for (device, home, active) in rows {
            if !incident.homes.contains(&home) {
                incident.homes.push(home);
            }
            incident.devices.push(device);
            incident.active_devices += usize::from(active);
        }
        out.push(incident);
    }
    Ok(out)
}
