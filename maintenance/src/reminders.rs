//! Homeowner reminders: scheduling, quiet hours in the home's time zone, the weekly cap,
//! and sending (which writes one outbox row per channel in the caller's transaction).
//!
//! A reminder is `scheduled` until it is sent; sending may be deferred by quiet hours
//! or the cap (non-urgent only). After sending the homeowner can snooze it (scheduled
//! again), mark it done (`done`, or `awaiting_confirmation` for a filter until the
//! cartridge counter resets), or book a visit (`booked`).

use crate::store::{params, Connection, OptionalExtension, Transaction};
use chrono::{Duration, NaiveTime, TimeZone, Timelike};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::outbox::{self, OutChannel};
use crate::policy::Policy;
use crate::registry::{parse_hhmm, Channel, Home};
use crate::templates::Template;

/// One day in ms.
pub use protocol::catalog::DAY_MS;
/// One week in ms.
pub use protocol::catalog::WEEK_MS;

/// A reminder as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reminder {
    /// Reminder id.
    pub id: i64,
    /// The home.
    pub home_id: String,
    /// The device.
    pub device_id: String,
    /// Policy key of the finding kind, or `satisfaction`.
    pub kind: String,
    /// Fault key within the device.
    pub fault_key: String,
    /// The template.
    pub template: Template,
    /// Template variables.
    pub vars: Value,
    /// Ignores quiet hours and the cap.
    pub urgent: bool,
    /// `scheduled`, `sent`, `done`, `awaiting_confirmation`, `booked` or `cancelled`.
    pub status: String,
    /// Created, UTC ms.
    pub created_ts_ms: i64,
    /// When it is (or was) due to send, UTC ms.
    pub send_at_ts_ms: i64,
    /// When it was last sent, UTC ms.
    pub sent_ts_ms: Option<i64>,
    /// When the homeowner acted, UTC ms.
    pub done_ts_ms: Option<i64>,
    /// The related ticket (booked visit, follow-up).
    pub ticket_id: Option<i64>,
}

const COLS: &str = "id, home_id, device_id, kind, fault_key, template, vars, urgent, status,
    created_ts_ms, send_at_ts_ms, sent_ts_ms, done_ts_ms, ticket_id";

fn row(r: &crate::store::Row<'_>) -> crate::store::Result<Reminder> {
    let template: String = r.get(5)?;
    let vars: String = r.get(6)?;
    Ok(Reminder {
        id: r.get(0)?,
        home_id: r.get(1)?,
        device_id: r.get(2)?,
        kind: r.get(3)?,
        fault_key: r.get(4)?,
        template: Template::parse(&template).unwrap_or(Template::VisitNotice),
        vars: serde_json::from_str(&vars).unwrap_or(Value::Null),
        urgent: r.get(7)?,
        status: r.get(8)?,
        created_ts_ms: r.get(9)?,
        send_at_ts_ms: r.get(10)?,
        sent_ts_ms: r.get(11)?,
        done_ts_ms: r.get(12)?,
        ticket_id: r.get(13)?,
    })
}

/// One reminder.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Reminder>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLS} FROM reminders WHERE id = ?1"),
            [id],
            row,
        )
        .optional()?)
}

/// Replaces a reminder's template and variables (a home's grouped reminder naming one more
/// device). A reminder already sent is not sent again; the app shows the new text.
pub fn rewrite(tx: &Transaction<'_>, id: i64, template: Template, vars: &Value) -> Result<()> {
    let key = serde_json::to_value(template)?;
    tx.execute(
        "UPDATE reminders SET template = ?2, vars = ?3 WHERE id = ?1",
        params![id, key.as_str().unwrap_or_default(), vars.to_string()],
    )?;
    Ok(())
}

/// Reminders of one home (or all if `None`), newest first, at most 500.
pub fn list(conn: &Connection, home_id: Option<&str>) -> Result<Vec<Reminder>> {
    let first = crate::page::Page {
        limit: crate::page::MAX_LIMIT,
        offset: 0,
    };
    Ok(list_page(conn, home_id, first)?.items)
}

/// One page of the reminders (of one home, or all), newest first.
pub fn list_page(
    conn: &Connection,
    home_id: Option<&str>,
    page: crate::page::Page,
) -> Result<crate::page::Paged<Reminder>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLS} FROM reminders WHERE CAST(?1 AS TEXT) IS NULL OR home_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3"
    ))?;
    let rows = stmt
        .query_map(
            crate::params![home_id, page.sql_limit(), page.sql_offset()],
            row,
        )?
        .collect::<crate::store::Result<Vec<_>>>()?;
    Ok(page.finish(rows))
}

/// A reminder to schedule.
pub(crate) struct NewReminder<'a> {
    pub home_id: &'a str,
    pub device_id: &'a str,
    pub kind: &'a str,
    pub fault_key: &'a str,
    pub template: Template,
    pub vars: Value,
    pub urgent: bool,
    /// Unique per intended message; a second schedule with the same key is ignored.
    pub dedup_key: String,
    pub send_at_ts_ms: i64,
    pub ticket_id: Option<i64>,
}

/// Schedules a reminder unless one with the same dedup key exists. Returns the new id.
pub(crate) fn schedule(
    tx: &Transaction<'_>,
    r: &NewReminder<'_>,
    now_ms: i64,
) -> Result<Option<i64>> {
    let template = serde_json::to_value(r.template)?;
    let id: Option<i64> = tx
        .query_row(
            "INSERT INTO reminders (home_id, device_id, kind, fault_key, template, vars, urgent,
            status, dedup_key, created_ts_ms, send_at_ts_ms, ticket_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'scheduled', ?8, ?9, ?10, ?11)
         ON CONFLICT DO NOTHING RETURNING id",
            params![
                r.home_id,
                r.device_id,
                r.kind,
                r.fault_key,
                template.as_str().unwrap_or_default(),
                r.vars.to_string(),
                r.urgent,
                r.dedup_key,
                now_ms,
                r.send_at_ts_ms,
                r.ticket_id
            ],
            |r| r.get(0),
        )
        .optional()?;
    Ok(id)
}

/// If `now_ms` falls in the home's quiet hours, the UTC ms at which they end.
pub fn quiet_until(home: &Home, now_ms: i64) -> Option<i64> {
    let tz: chrono_tz::Tz = home.tz.parse().ok()?;
    let (start, end) = (parse_hhmm(&home.quiet_start)?, parse_hhmm(&home.quiet_end)?);
    if start == end {
        return None;
    }
    let local = tz.timestamp_millis_opt(now_ms).single()?;
    let minute = local.hour() * 60 + local.minute();
    let quiet = if start < end {
        minute >= start && minute < end
    } else {
        minute >= start || minute < end
    };
    if !quiet {
        return None;
    }
    let mut date = local.date_naive();
    if minute >= end {
        date = date.succ_opt()?;
    }
    let naive = date.and_time(NaiveTime::from_hms_opt(end / 60, end % 60, 0)?);
    // A DST gap can swallow the end time: then take the first instant after the gap.
    let end_local = tz.from_local_datetime(&naive).earliest().or_else(|| {
        tz.from_local_datetime(&(naive + Duration::hours(1)))
            .earliest()
    })?;
    Some(end_local.timestamp_millis())
}

/// What [`try_send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    /// Outbox rows written; the reminder is `sent`.
    Sent,
    /// Deferred to the given time (quiet hours or cap).
    Deferred(i64),
    /// Not scheduled any more (acted on, cancelled) or its home is gone.
    Skipped,
}

/// Sends a scheduled reminder now if quiet hours and the weekly cap allow; otherwise defers it.
pub(crate) fn try_send(
    tx: &Transaction<'_>,
    policy: &Policy,
    id: i64,
    now_ms: i64,
) -> Result<SendOutcome> {
    let Some(r) = get(tx, id)? else {
        return Ok(SendOutcome::Skipped);
    };
    if r.status != "scheduled" {
        return Ok(SendOutcome::Skipped);
    }
    let Some(home) = crate::registry::get_home(tx, &r.home_id)? else {
        tx.execute(
            "UPDATE reminders SET status = 'cancelled' WHERE id = ?1",
            [id],
        )?;
        return Ok(SendOutcome::Skipped);
    };
    if !r.urgent {
        if let Some(until) = quiet_until(&home, now_ms) {
            tx.execute(
                "UPDATE reminders SET send_at_ts_ms = ?2 WHERE id = ?1",
                params![id, until],
            )?;
            return Ok(SendOutcome::Deferred(until));
        }
        let cap = home.weekly_cap.unwrap_or(policy.default_weekly_cap);
        let (sent, oldest): (u32, Option<i64>) = tx.query_row(
            "SELECT COUNT(*), MIN(sent_ts_ms) FROM reminders
             WHERE home_id = ?1 AND urgent = 0 AND sent_ts_ms IS NOT NULL AND sent_ts_ms > ?2",
            params![home.id, now_ms - WEEK_MS],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if sent >= cap {
            let until = oldest.unwrap_or(now_ms) + WEEK_MS + 1;
            tracing::debug!(home = %home.id, reminder = id, until, "Weekly cap reached; reminder deferred.");
            tx.execute(
                "UPDATE reminders SET send_at_ts_ms = ?2 WHERE id = ?1",
                params![id, until],
            )?;
            return Ok(SendOutcome::Deferred(until));
        }
    }
    let mut vars = r.vars.clone();
    if let (Some(due), Some(obj)) = (
        vars.get("due_ts_ms").and_then(Value::as_i64),
        vars.as_object_mut(),
    ) {
        // Days left at the moment of sending, rounded up, so a late reminder still tells the truth.
        let days = ((due - now_ms).max(0) + DAY_MS - 1) / DAY_MS;
        obj.insert("days".into(), Value::from(days));
    }
    let (title, body) = r.template.render(home.lang, &vars);
    let payload = serde_json::json!({
        "reminder_id": r.id, "home_id": home.id, "device_id": r.device_id, "kind": r.kind,
        "template": r.template, "lang": home.lang, "urgent": r.urgent, "title": title, "body": body,
        "actions": ["snooze", "done", "book"],
    });
    for channel in &home.channels {
        let (ch, target) = match channel {
            Channel::App => (OutChannel::Push, home.id.clone()),
            Channel::Sms => (OutChannel::Sms, home.owner.phone.clone()),
            Channel::Email => match &home.owner.email {
                Some(e) => (OutChannel::Email, e.clone()),
                None => continue,
            },
        };
        outbox::enqueue(tx, ch, &target, "reminder", &payload, now_ms)?;
    }
    tx.execute(
        "UPDATE reminders SET status = 'sent', sent_ts_ms = ?2 WHERE id = ?1",
        params![id, now_ms],
    )?;
    Ok(SendOutcome::Sent)
}

/// Whether a reminder for this device and fault key was created after `since_ms`.
pub(crate) fn recent_exists(
    conn: &Connection,
    device_id: &str,
    fault_key: &str,
    since_ms: i64,
) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM reminders WHERE device_id = ?1 AND fault_key = ?2
         AND created_ts_ms > ?3 AND status != 'cancelled')",
        params![device_id, fault_key, since_ms],
        |r| r.get(0),
    )?)
}

/// Snoozes a sent or scheduled reminder until `until_ms`.
pub(crate) fn snooze(tx: &Transaction<'_>, id: i64, until_ms: i64) -> Result<Reminder> {
    let r = get(tx, id)?.ok_or_else(|| Error::not_found("reminder", id))?;
    if !matches!(r.status.as_str(), "scheduled" | "sent") {
        return Err(Error::invalid(
            "reminder",
            format!("cannot snooze a {} reminder", r.status),
        ));
    }
    tx.execute(
        "UPDATE reminders SET status = 'scheduled', send_at_ts_ms = ?2 WHERE id = ?1",
        params![id, until_ms],
    )?;
    get(tx, id)?.ok_or_else(|| Error::not_found("reminder", id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Owner;
    use crate::templates::Lang;

    fn home(tz: &str, start: &str, end: &str) -> Home {
        Home {
            site: None,
            id: "h".into(),
            address: "a".into(),
            region: "r".into(),
            tz: tz.into(),
            lang: Lang::En,
            quiet_start: start.into(),
            quiet_end: end.into(),
            weekly_cap: None,
            channels: vec![Channel::App],
            owner: Owner {
                name: "n".into(),
                phone: "13800000000".into(),
                email: None,
            },
        }
    }

    fn utc(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn quiet_hours_follow_the_home_time_zone() {
        let h = home("Asia/Shanghai", "22:00", "08:00");
        // 23:30 in Shanghai is 15:30 UTC: quiet until 08:00 local = 00:00 UTC next day.
        assert_eq!(
            quiet_until(&h, utc("2026-03-02T15:30:00Z")),
            Some(utc("2026-03-03T00:00:00Z"))
        );
        // 07:00 local: quiet until 08:00 the same day.
        assert_eq!(
            quiet_until(&h, utc("2026-03-02T23:00:00Z")),
            Some(utc("2026-03-03T00:00:00Z"))
        );
        assert_eq!(
            quiet_until(&h, utc("2026-03-02T02:00:00Z")),
            None,
            "10:00 local"
        );
        // A daytime window (start < end) works too.
        let nap = home("Asia/Shanghai", "12:00", "14:00");
        assert_eq!(
            quiet_until(&nap, utc("2026-03-02T04:30:00Z")),
            Some(utc("2026-03-02T06:00:00Z"))
        );
    }

    #[test]
    fn a_quiet_end_inside_a_dst_gap_moves_past_the_gap() {
        // New York springs forward on 2026-03-08: 02:00-03:00 local does not exist.
        let h = home("America/New_York", "22:00", "02:30");
        let at = utc("2026-03-08T04:00:00Z"); // 23:00 EST on the 7th
        assert_eq!(
            quiet_until(&h, at),
            Some(utc("2026-03-08T07:30:00Z")),
            "03:30 EDT"
        );
    }
}
