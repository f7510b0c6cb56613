//! The [`Engine`]: the one entry point the gateway calls with findings, cartridge
//! replacements and the clock (`tick`), and the API calls for actions and reads.
//!
//! Every method takes the time as an argument and never reads the clock, and every
//! change commits in one transaction together with the outbox rows it causes. The
//! database is SQLite (single node, the default) or PostgreSQL shared by the instances
//! of a cluster ([`Engine::open_postgres`]): there, every change runs SERIALIZABLE and is
//! run again when it conflicts with another instance's (see [`Engine::write`]).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::store::params;
use serde::{Deserialize, Serialize};

use crate::commands;
use crate::error::{Error, Result};
use crate::finding::{Finding, FindingKind, FindingState};
use crate::incidents::{self, Grouping, Joined, Scope};
use crate::policy::{Policy, Priority, TicketAction};
use crate::registry::{self, Device, Home};
use crate::reminders::{self, NewReminder, SendOutcome, DAY_MS};
use crate::store::{Connection, Dialect, Transaction};
use crate::templates::Template;
use crate::tickets::{self, NewTicket, TicketStatus};
use crate::unclaimed;

/// What the engine needs besides the database.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// The checked policy.
    pub policy: Policy,
    /// URLs that receive every ticket event as a signed webhook (e.g. an existing ticketing system).
    pub ticket_webhooks: Vec<String>,
}

/// What happened to a ticket because of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketEffect {
    /// A new ticket.
    Opened,
    /// Evidence attached to the active ticket (no duplicate).
    Attached,
    /// A resolved ticket reopened by a recurrence within the window.
    Reopened,
    /// A new ticket linked to a recently closed one.
    Linked,
    /// The active ticket is marked "condition cleared".
    ConditionCleared,
}

/// The incident scope a finding of `group` joins for `home`: none per device; a site without
/// one falls back to the home.
fn group_scope(group: Grouping, home: &Home) -> Option<(Scope, &str)> {
    match (group, &home.site) {
        (Grouping::Device, _) => None,
        (Grouping::Home, _) | (Grouping::Site, None) => Some((Scope::Home, home.id.as_str())),
        (Grouping::Site, Some(site)) => Some((Scope::Site, site.as_str())),
    }
}

/// The result of [`Engine::ingest`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The ticket touched, and how.
    pub ticket: Option<(i64, TicketEffect)>,
    /// Reminders scheduled (sent at once unless deferred or in the future).
    pub reminders: Vec<i64>,
    /// The device is not registered: the finding went to the unclaimed-devices queue.
    #[serde(default)]
    pub unclaimed: bool,
    /// The device is new to the unclaimed-devices queue.
    #[serde(default)]
    pub new_unclaimed_device: bool,
    /// The command the policy queued for the device (e.g. close the inlet valve of a leak).
    #[serde(default)]
    pub command: Option<i64>,
    /// The home or site incident the finding joined (kinds the policy groups).
    #[serde(default)]
    pub incident: Option<i64>,
}

/// The result of [`Engine::tick`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickReport {
    /// Tickets escalated.
    pub escalated: u32,
    /// Filter replacement visits opened.
    pub visits_opened: u32,
    /// Reminders sent.
    pub reminders_sent: u32,
    /// Reminders deferred by quiet hours or the cap.
    pub reminders_deferred: u32,
    /// Visit addresses purged.
    pub addresses_purged: u32,
    /// Commands expired unanswered.
    #[serde(default)]
    pub commands_expired: u32,
}

/// A filter cartridge's replacement schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterSchedule {
    /// The device.
    pub device_id: String,
    /// The slot.
    pub slot: u8,
    /// Due date, UTC ms.
    pub due_ts_ms: i64,
    /// The forecast's 80 % interval around the due date, UTC ms, when the finding gave one.
    #[serde(default)]
    pub lo_ts_ms: Option<i64>,
    /// Upper end of that interval.
    #[serde(default)]
    pub hi_ts_ms: Option<i64>,
    /// `pending`, `claimed` (homeowner says done, counter not yet reset), `booked`,
    /// `visit_opened` or `replaced`.
    pub state: String,
    /// Litres left in the cartridge by the usage the device last reported, if known.
    #[serde(default)]
    pub remaining_l: Option<f64>,
    /// The household's learned daily use through it, litres.
    #[serde(default)]
    pub daily_l: Option<f64>,
    /// When that usage was reported, UTC ms.
    #[serde(default)]
    pub reported_ts_ms: Option<i64>,
}

/// How many times [`Engine::write`] runs a transaction that keeps conflicting (PostgreSQL).
pub const WRITE_ATTEMPTS: u32 = 20;

/// The maintenance engine.
pub struct Engine {
    // A std mutex: no `.await` is ever held across it, and database work is short.
    conn: Mutex<Connection>,
    /// PostgreSQL: the URL to reconnect to when the connection is lost.
    postgres_url: Option<String>,
    policy: Policy,
    webhooks: Vec<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("webhooks", &self.webhooks)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: impl AsRef<Path>, cfg: EngineConfig) -> Result<Engine> {
        Engine::with_connection(crate::db::open(path)?, cfg)
    }

    /// An engine on a private in-memory database.
    pub fn in_memory(cfg: EngineConfig) -> Result<Engine> {
        Engine::with_connection(crate::db::open_in_memory()?, cfg)
    }

    /// An engine on a PostgreSQL database shared with other instances (clustered
    /// gateways): `url` is a `postgres://` URL (no TLS). Creates the schema if needed,
    /// under an advisory lock. One connection per engine; a lost one is made again on
    /// the next call.
    pub fn open_postgres(url: &str, cfg: EngineConfig) -> Result<Engine> {
        let mut engine = Engine::with_connection(crate::db::open_postgres(url)?, cfg)?;
        engine.postgres_url = Some(url.to_owned());
        Ok(engine)
    }

    fn with_connection(conn: Connection, cfg: EngineConfig) -> Result<Engine> {
        Ok(Engine {
            conn: Mutex::new(conn),
            postgres_url: None,
            policy: cfg.policy,
            webhooks: cfg.ticket_webhooks,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The SQL dialect of the engine's database.
    pub fn dialect(&self) -> Dialect {
        self.lock().dialect()
    }

    /// Locks the connection (recovering from a poisoned lock: the transaction a panic left
    /// open is rolled back); a lost PostgreSQL connection is made again.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        let mut conn = match self.conn.lock() {
            Ok(conn) => conn,
            Err(poisoned) => {
                // A panic inside `write` left its transaction open: roll it back before reuse.
                let conn = poisoned.into_inner();
                let _ = conn.rollback();
                self.conn.clear_poison();
                conn
            }
        };
        if let (true, Some(url)) = (conn.is_closed(), &self.postgres_url) {
            match crate::store::postgres::Session::connect(url) {
                Ok(session) => {
                    tracing::info!("Maintenance PostgreSQL connection made again.");
                    *conn = Connection::from_postgres(session);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Maintenance PostgreSQL connection lost; reconnecting failed.")
                }
            }
        }
        conn
    }

    /// Runs `f` on the connection (reads).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.lock())
    }

    /// Runs `f` in one transaction, committed if `f` succeeds.
    ///
    /// On PostgreSQL the transaction is SERIALIZABLE: when it conflicts with another
    /// instance's (a serialization failure, a deadlock, or a unique violation such as a
    /// second active ticket for one fault), it is rolled back and `f` runs again, up to
    /// [`WRITE_ATTEMPTS`] times, so read-then-write logic (ticket de-duplication, reminder
    /// caps, incident grouping) behaves as with one writer. SQLite runs `f` once.
    pub fn write<T>(&self, mut f: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let conn = self.lock();
        let mut attempt = 1;
        loop {
            conn.begin()?;
            let result = f(&Transaction::new(&conn)).and_then(|out| {
                conn.commit()?;
                Ok(out)
            });
            match result {
                Ok(out) => return Ok(out),
                Err(e) => {
                    let _ = conn.rollback();
                    if attempt >= WRITE_ATTEMPTS || !e.is_retryable() {
                        return Err(e);
                    }
                    tracing::debug!(attempt, error = %e, "Transaction conflicted with another instance's; running it again.");
                    // A short, growing pause so the two do not collide again at once.
                    std::thread::sleep(std::time::Duration::from_millis(
                        (attempt as u64) * 2 + (crate::random_u8() as u64 % 5),
                    ));
                    attempt += 1;
                }
            }
        }
    }

    // ---- registry ----

    /// Inserts or updates a home (validated).
    pub fn put_home(&self, home: &Home) -> Result<()> {
        home.validate()?;
        self.write(|tx| registry::put_home(tx, home))
    }

    /// [`Engine::put_device_at`] on the wall clock (seeding, demos); the API passes its own clock.
    pub fn put_device(&self, device: &Device) -> Result<()> {
        self.put_device_at(device, crate::wall_clock_ms())
    }

    /// Inserts or updates a device (validated; its home must exist). A device that was in
    /// the unclaimed-devices queue is claimed: its tickets move to the home (history at `now_ms`).
    pub fn put_device_at(&self, device: &Device, now_ms: i64) -> Result<()> {
        device.validate()?;
        let claimed = self.write(|tx| self.put_device_in(tx, device, now_ms))?;
        if !claimed.is_empty() {
            tracing::info!(device = %device.id, home = %device.home_id, tickets = ?claimed, "Unclaimed device registered; its tickets moved to the home.");
        }
        Ok(())
    }

    /// [`Engine::put_device_at`] inside the caller's transaction (the bulk import): the
    /// device (already validated) is written and claimed; the ids of the tickets it claimed.
    pub(crate) fn put_device_in(
        &self,
        tx: &Transaction<'_>,
        device: &Device,
        now_ms: i64,
    ) -> Result<Vec<i64>> {
        registry::put_device(tx, device)?;
        let home = registry::get_home(tx, &device.home_id)?
            .ok_or_else(|| Error::not_found("home", &device.home_id))?;
        let ids = unclaimed::claim(tx, &device.id, &home.id, &home.address, now_ms)?;
        for id in &ids {
            let t = tickets::must_get(tx, *id)?;
            tickets::history(
                tx,
                *id,
                now_ms,
                "system",
                Some(t.status),
                t.status,
                Some(&format!(
                    "owner found: device registered to home {}",
                    home.id
                )),
            )?;
            if t.status == TicketStatus::Open && self.policy.auto_assign {
                tickets::assign(tx, &self.policy, *id, None, "system", now_ms)?;
            }
            tickets::emit(tx, &self.webhooks, "ticket.updated", *id, now_ms)?;
        }
        Ok(ids)
    }

    /// Inserts or updates a technician (validated).
    pub fn put_technician(&self, t: &registry::Technician) -> Result<()> {
        t.validate()?;
        self.write(|tx| registry::put_technician(tx, t))
    }

    // ---- findings ----

    /// Applies the policy to one finding. Repeats of an episode never duplicate a ticket or reminder.
    pub fn ingest(&self, finding: &Finding, now_ms: i64) -> Result<Outcome> {
        let out = self.write(|tx| self.ingest_tx(tx, finding, now_ms))?;
        tracing::debug!(device = %finding.device_id, kind = finding.kind.policy_key(), ?out, "Finding applied.");
        Ok(out)
    }

    fn ingest_tx(&self, tx: &Transaction<'_>, f: &Finding, now_ms: i64) -> Result<Outcome> {
        let Some(device) = registry::get_device(tx, &f.device_id)? else {
            return self.unclaimed_tx(tx, f, now_ms);
        };
        let home = registry::get_home(tx, &device.home_id)?
            .ok_or_else(|| Error::not_found("home", &device.home_id))?;
        let fault_key = f.kind.fault_key();
        let kp = self.policy.for_kind(&f.kind);
        let mut out = Outcome::default();

        if f.state == FindingState::Cleared {
            if let Some(t) = tickets::active_for(tx, &device.id, &fault_key)? {
                tx.execute(
                    "UPDATE tickets SET condition_cleared = 1 WHERE id = ?1",
                    [t.id],
                )?;
                tickets::add_evidence(tx, t.id, now_ms, f.severity.as_str(), &f.evidence)?;
                tickets::history(
                    tx,
                    t.id,
                    now_ms,
                    "device",
                    Some(t.status),
                    t.status,
                    Some("condition cleared; confirm and resolve"),
                )?;
                tickets::emit(tx, &self.webhooks, "ticket.updated", t.id, now_ms)?;
                out.ticket = Some((t.id, TicketEffect::ConditionCleared));
            }
            incidents::clear(tx, &device.id, f.kind.policy_key(), now_ms)?;
            // Not yet sent self-service messages about a condition that ended are pointless,
            // unless the message is a home's, shared with a device that still has it.
            tx.execute(
                "UPDATE reminders SET status = 'cancelled' WHERE device_id = ?1 AND fault_key = ?2
                 AND status = 'scheduled' AND kind != 'filter_due'
                 AND id NOT IN (SELECT reminder_id FROM incident_members
                                WHERE cleared_ts_ms IS NULL AND reminder_id IS NOT NULL)",
                params![device.id, fault_key],
            )?;
            return Ok(out);
        }

        if let FindingKind::FilterDue { slot, due_ts_ms } = f.kind {
            out.reminders = self.schedule_filter(tx, &home, &device, slot, due_ts_ms, now_ms)?;
            // The forecaster's interval, if the finding carries one, for the homeowner's gauge.
            let at = |k: &str| f.evidence.get(k).and_then(serde_json::Value::as_i64);
            let real = |k: &str| {
                f.evidence
                    .get(k)
                    .and_then(serde_json::Value::as_f64)
                    .filter(|v| v.is_finite() && *v >= 0.0)
            };
            if let Some(remaining) = real("remaining_l") {
                tx.execute(
                    "UPDATE filter_schedules SET remaining_l = ?3, daily_l = ?4, reported_ts_ms = ?5
                     WHERE device_id = ?1 AND slot = ?2",
                    params![device.id, slot, remaining, real("daily_l"), now_ms],
                )?;
            }
            if let (Some(lo), Some(hi)) = (at("lo_ts_ms"), at("hi_ts_ms")) {
                tx.execute(
                    "UPDATE filter_schedules SET lo_ts_ms = ?3, hi_ts_ms = ?4 WHERE device_id = ?1 AND slot = ?2",
                    params![device.id, slot, lo.min(due_ts_ms), hi.max(due_ts_ms)],
                )?;
            }
            return Ok(out);
        }

        let mut notify = true;
        if let Some(action) = &kp.ticket {
            let (id, effect) = self.open_or_attach(tx, f, &home, &fault_key, action, now_ms)?;
            out.ticket = Some((id, effect));
            notify = effect != TicketEffect::Attached;
        }
        // The policy's command, once per episode (not for evidence attached to an open ticket).
        let mut valve_closing = false;
        if let (true, Some(cmd)) = (notify, &kp.command) {
            // Once per episode: a repeat of the finding (same start) sends nothing new.
            if cmd.supported_by(device.model)
                && !commands::sent_since(tx, &device.id, cmd, f.began_ts_ms)?
            {
                let reason = format!(
                    "policy: {} {} finding{}",
                    f.severity.as_str(),
                    f.kind.policy_key(),
                    match cmd {
                        protocol::message::CommandKind::CloseInletValve =>
                            ": closing the water inlet valve automatically",
                        protocol::message::CommandKind::ReportDiagnostics =>
                            ": confirming it with the device's diagnostic before anyone is sent",
                        _ => "",
                    }
                );
                let (id, _) = commands::queue(
                    tx,
                    &commands::NewCommand {
                        device_id: &device.id,
                        ticket_id: out.ticket.map(|t| t.0),
                        command: cmd,
                        requested_by: "policy",
                        reason: Some(&reason),
                        ttl_ms: commands::DEFAULT_TTL_MS,
                    },
                    now_ms,
                )?;
                out.command = Some(id);
                valve_closing = matches!(cmd, protocol::message::CommandKind::CloseInletValve);
                tracing::info!(device = %device.id, cmd_id = id, command = cmd.as_str(), "Policy queued a command.");
            }
        }
        if let (true, Some(n)) = (notify, &kp.notify) {
            // Grouped kinds: one message per home for one cause (see `incidents`).
            let mut incident = None;
            let mut shared_by_homes = None;
            if let Some((scope, scope_id)) = group_scope(n.group, &home) {
                match incidents::join(
                    tx,
                    scope,
                    scope_id,
                    f.kind.policy_key(),
                    &device.id,
                    &home.id,
                    self.policy.group_window_ms,
                    // Device time: a backlog replayed in seconds is not one incident.
                    f.began_ts_ms,
                )? {
                    Joined::Opened(id) => incident = Some(id),
                    Joined::Repeat {
                        incident: id,
                        reminder,
                    } => {
                        out.incident = Some(id);
                        if reminder.is_some() {
                            return Ok(out);
                        }
                        incident = Some(id);
                    }
                    Joined::HomeNotified {
                        incident: id,
                        reminder,
                    } => {
                        out.incident = Some(id);
                        self.name_devices_in(tx, reminder)?;
                        return Ok(out);
                    }
                    Joined::SiteShared {
                        incident: id,
                        homes,
                    } => {
                        incident = Some(id);
                        shared_by_homes = Some(homes);
                    }
                }
                out.incident = incident;
            }
            if n.min_interval_ms > 0
                && reminders::recent_exists(tx, &device.id, &fault_key, now_ms - n.min_interval_ms)?
            {
                return Ok(out);
            }
            let (ticket_id, round) = match out.ticket {
                Some((id, _)) => (Some(id), tickets::must_get(tx, id)?.reopen_count),
                None => (None, 0),
            };
            let resource = match f.kind {
                FindingKind::AbnormalUsage { resource } => serde_json::to_value(resource)?,
                _ => serde_json::Value::Null,
            };
            let new = NewReminder {
                home_id: &home.id,
                device_id: &device.id,
                kind: f.kind.policy_key(),
                fault_key: &fault_key,
                template: match n.template {
                    // The message says the valve is being closed, and what to check meanwhile.
                    Template::LeakAlert if valve_closing => Template::LeakValveClosing,
                    // Other homes of the site have it too: the supply, not this home's valve.
                    Template::LowPressureGuide if shared_by_homes.is_some() => {
                        Template::LowPressureSiteNotice
                    }
                    t => t,
                },
                vars: serde_json::json!({
                    "device": device.id, "devices": [device.id], "resource": resource,
                    "ticket": ticket_id, "valve_closing": valve_closing,
                    "homes": shared_by_homes, "incident": incident,
                }),
                urgent: n.urgent,
                dedup_key: format!(
                    "{}:{}:{}:{:?}:{}",
                    device.id, fault_key, f.began_ts_ms, ticket_id, round
                ),
                send_at_ts_ms: now_ms,
                ticket_id,
            };
            if let Some(rid) = reminders::schedule(tx, &new, now_ms)? {
                if let Some(i) = incident {
                    incidents::set_reminder(tx, i, &device.id, rid)?;
                }
                reminders::try_send(tx, &self.policy, rid, now_ms)?;
                out.reminders.push(rid);
            }
        }
        Ok(out)
    }

    /// A home's grouped reminder names every device that joined it; with more than one, its
    /// template becomes the household's (e.g. "your fixtures ... have not been used").
    fn name_devices_in(&self, tx: &Transaction<'_>, reminder: i64) -> Result<()> {
        let Some(r) = reminders::get(tx, reminder)? else {
            return Ok(());
        };
        let devices = incidents::devices_of_reminder(tx, reminder)?;
        let template = match r.template {
            _ if devices.len() < 2 => r.template,
            Template::CleaningReminder => Template::CleaningReminderHome,
            Template::DeviceSilentGuide => Template::DeviceSilentHome,
            t => t,
        };
        let mut vars = r.vars;
        if let Some(map) = vars.as_object_mut() {
            map.insert("devices".into(), serde_json::json!(devices));
        }
        reminders::rewrite(tx, reminder, template, &vars)
    }

    /// A finding of a device nobody registered: kept in the unclaimed-devices queue; a
    /// critical one opens (or feeds) a ticket without a home or contact, for an agent to
    /// find the owner. Nothing goes to a homeowner: there is none on record.
    fn unclaimed_tx(&self, tx: &Transaction<'_>, f: &Finding, now_ms: i64) -> Result<Outcome> {
        let fault_key = f.kind.fault_key();
        let mut out = Outcome {
            unclaimed: true,
            ..Outcome::default()
        };
        let active = unclaimed::active_ticket(tx, &f.device_id, &fault_key)?;
        let ticket = match (f.state, active) {
            (FindingState::Cleared, Some(id)) => {
                let t = tickets::must_get(tx, id)?;
                tx.execute(
                    "UPDATE tickets SET condition_cleared = 1 WHERE id = ?1",
                    [id],
                )?;
                tickets::add_evidence(tx, id, now_ms, f.severity.as_str(), &f.evidence)?;
                tickets::history(
                    tx,
                    id,
                    now_ms,
                    "device",
                    Some(t.status),
                    t.status,
                    Some("condition cleared; confirm and resolve"),
                )?;
                tickets::emit(tx, &self.webhooks, "ticket.updated", id, now_ms)?;
                out.ticket = Some((id, TicketEffect::ConditionCleared));
                Some(id)
            }
            (FindingState::Active, Some(id)) => {
                tickets::add_evidence(tx, id, now_ms, f.severity.as_str(), &f.evidence)?;
                tx.execute(
                    "UPDATE tickets SET condition_cleared = 0 WHERE id = ?1",
                    [id],
                )?;
                out.ticket = Some((id, TicketEffect::Attached));
                Some(id)
            }
            (FindingState::Active, None) if unclaimed::is_critical(f) => {
                let action = self
                    .policy
                    .for_kind(&f.kind)
                    .ticket
                    .unwrap_or(TicketAction {
                        priority: Priority::Critical,
                        deadline_ms: 4 * 3_600_000,
                        skill: "plumbing".into(),
                    });
                let id = tickets::insert(
                    tx,
                    &NewTicket {
                        device_id: &f.device_id,
                        home_id: unclaimed::NO_HOME,
                        kind: f.kind.policy_key(),
                        fault_key: &fault_key,
                        priority: action.priority.max(Priority::High),
                        skill: &action.skill,
                        source: "unclaimed",
                        began_ts_ms: f.began_ts_ms,
                        deadline_ms: action.deadline_ms,
                        linked_ticket_id: None,
                        visit_address: "",
                    },
                    now_ms,
                )?;
                tickets::add_evidence(tx, id, now_ms, f.severity.as_str(), &f.evidence)?;
                tickets::history(
                    tx,
                    id,
                    now_ms,
                    "system",
                    Some(TicketStatus::Open),
                    TicketStatus::Open,
                    Some("device not registered: find the owner, then register the device"),
                )?;
                tickets::emit(tx, &self.webhooks, "ticket.opened", id, now_ms)?;
                out.ticket = Some((id, TicketEffect::Opened));
                Some(id)
            }
            _ => None,
        };
        out.new_unclaimed_device = unclaimed::record(tx, f, ticket, now_ms)?;
        if out.new_unclaimed_device {
            tracing::warn!(device = %f.device_id, kind = f.kind.policy_key(), "A device that is not registered reports findings; they wait in the unclaimed-devices queue.");
        }
        if let Some((id, TicketEffect::Opened)) = out.ticket {
            tracing::warn!(device = %f.device_id, ticket = id, kind = f.kind.policy_key(), "Critical finding of an unregistered device: ticket opened without a contact; an agent must find the owner.");
        }
        Ok(out)
    }

    fn open_or_attach(
        &self,
        tx: &Transaction<'_>,
        f: &Finding,
        home: &Home,
        fault_key: &str,
        action: &TicketAction,
        now_ms: i64,
    ) -> Result<(i64, TicketEffect)> {
        if let Some(t) = tickets::active_for(tx, &f.device_id, fault_key)? {
            tickets::add_evidence(tx, t.id, now_ms, f.severity.as_str(), &f.evidence)?;
            if t.condition_cleared {
                // The condition came back before anyone confirmed the clear.
                tx.execute(
                    "UPDATE tickets SET condition_cleared = 0 WHERE id = ?1",
                    [t.id],
                )?;
            }
            return Ok((t.id, TicketEffect::Attached));
        }
        let recent = tickets::recent_finished(
            tx,
            &f.device_id,
            fault_key,
            now_ms - self.policy.recurrence_ms,
        )?;
        let (id, effect) = match recent {
            Some(old) if old.status == TicketStatus::Resolved => {
                tickets::transition(
                    tx,
                    &self.policy,
                    old.id,
                    TicketStatus::Open,
                    "system",
                    Some("recurrence within the window"),
                    now_ms,
                )?;
                tx.execute(
                    "UPDATE tickets SET deadline_ts_ms = ?2, escalation_level = 0, next_escalation_ts_ms = NULL,
                     visit_address = ?3 WHERE id = ?1",
                    params![old.id, now_ms + action.deadline_ms, home.address],
                )?;
                (old.id, TicketEffect::Reopened)
            }
            other => {
                let linked = other.map(|o| o.id);
                if let Some(old) = linked {
                    tx.execute("UPDATE tickets SET recurred = 1 WHERE id = ?1", [old])?;
                }
                let id = tickets::insert(
                    tx,
                    &NewTicket {
                        device_id: &f.device_id,
                        home_id: &home.id,
                        kind: f.kind.policy_key(),
                        fault_key,
                        priority: action.priority,
                        skill: &action.skill,
                        source: "finding",
                        began_ts_ms: f.began_ts_ms,
                        deadline_ms: action.deadline_ms,
                        linked_ticket_id: linked,
                        visit_address: &home.address,
                    },
                    now_ms,
                )?;
                (
                    id,
                    if linked.is_some() {
                        TicketEffect::Linked
                    } else {
                        TicketEffect::Opened
                    },
                )
            }
        };
        tickets::add_evidence(tx, id, now_ms, f.severity.as_str(), &f.evidence)?;
        if self.policy.auto_assign {
            tickets::assign(tx, &self.policy, id, None, "system", now_ms)?;
        }
        let topic = if effect == TicketEffect::Opened {
            "ticket.opened"
        } else {
            "ticket.reopened"
        };
        tickets::emit(tx, &self.webhooks, topic, id, now_ms)?;
        Ok((id, effect))
    }

    fn schedule_filter(
        &self,
        tx: &Transaction<'_>,
        home: &Home,
        device: &Device,
        slot: u8,
        due_ts_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<i64>> {
        let current: Option<(i64, String)> =
            crate::store::OptionalExtension::optional(tx.query_row(
                "SELECT due_ts_ms, state FROM filter_schedules WHERE device_id = ?1 AND slot = ?2",
                params![device.id, slot],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ))?;
        if current.as_ref().map(|c| c.0) != Some(due_ts_ms) {
            tx.execute(
                "INSERT INTO filter_schedules (device_id, slot, due_ts_ms, state, updated_ts_ms)
                 VALUES (?1, ?2, ?3, 'pending', ?4)
                 ON CONFLICT(device_id, slot) DO UPDATE SET due_ts_ms = ?3, state = 'pending', updated_ts_ms = ?4",
                params![device.id, slot, due_ts_ms, now_ms],
            )?;
            // Reminders for an older due date of this slot no longer apply: they are replaced
            // (sent ones too), so the homeowner sees one reminder per cartridge, not a stack.
            tx.execute(
                &format!(
                    "UPDATE reminders SET status = 'cancelled' WHERE device_id = ?1 AND fault_key = ?2
                     AND status IN ('scheduled', 'sent') AND {} != ?3",
                    tx.dialect().json_integer("vars", "due_ts_ms")
                ),
                params![device.id, format!("filter_due:{slot}"), due_ts_ms],
            )?;
        } else if current.as_ref().is_some_and(|c| c.1 != "pending") {
            return Ok(Vec::new());
        }
        let Some(n) = self
            .policy
            .for_kind(&FindingKind::FilterDue { slot, due_ts_ms })
            .notify
        else {
            return Ok(Vec::new());
        };
        if due_ts_ms <= now_ms {
            return Ok(Vec::new()); // Past due: the visit ticket (tick) takes over.
        }
        // Each offset once; offsets already past collapse into one message now.
        let offsets = &self.policy.filter_remind_before_ms;
        let passed = offsets.iter().filter(|o| due_ts_ms - **o <= now_ms).min();
        let mut ids = Vec::new();
        for off in offsets {
            let at = due_ts_ms - off;
            let send_at = if at > now_ms {
                at
            } else if Some(off) == passed {
                now_ms
            } else {
                continue;
            };
            let new = NewReminder {
                home_id: &home.id,
                device_id: &device.id,
                kind: "filter_due",
                fault_key: &format!("filter_due:{slot}"),
                template: n.template,
                vars: serde_json::json!({
                    "device": device.id, "slot": slot, "due_ts_ms": due_ts_ms,
                    "cartridge": device.cartridges.iter().find(|c| c.slot == slot).map(|c| c.kind.as_str()),
                }),
                urgent: n.urgent,
                dedup_key: format!(
                    "filter:{}:{}:{}:{}",
                    device.id,
                    slot,
                    due_ts_ms,
                    off / DAY_MS
                ),
                send_at_ts_ms: send_at,
                ticket_id: None,
            };
            if let Some(id) = reminders::schedule(tx, &new, now_ms)? {
                if send_at <= now_ms {
                    reminders::try_send(tx, &self.policy, id, now_ms)?;
                }
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// The gateway calls this when a device's cartridge counter changes: the homeowner's
    /// "done" is confirmed, the slot's reminders end and a replacement-visit ticket is
    /// marked "condition cleared". Replays of an already-seen counter do nothing.
    pub fn cartridge_replaced(
        &self,
        device_id: &str,
        slot: u8,
        replacements: u32,
        now_ms: i64,
    ) -> Result<bool> {
        self.write(|tx| {
            let device = registry::get_device(tx, device_id)?.ok_or_else(|| Error::not_found("device", device_id))?;
            let known = device.cartridges.iter().find(|c| c.slot == slot).map(|c| c.replacements);
            if known.is_some_and(|k| replacements <= k) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE cartridges SET replacements = ?3, replaced_ts_ms = ?4 WHERE device_id = ?1 AND slot = ?2",
                params![device_id, slot, replacements, now_ms],
            )?;
            tx.execute(
                "UPDATE filter_schedules SET state = 'replaced', updated_ts_ms = ?3 WHERE device_id = ?1 AND slot = ?2",
                params![device_id, slot, now_ms],
            )?;
            let fault_key = format!("filter_due:{slot}");
            tx.execute(
                "UPDATE reminders SET status = 'done', done_ts_ms = COALESCE(done_ts_ms, ?3)
                 WHERE device_id = ?1 AND fault_key = ?2 AND status IN ('scheduled', 'sent', 'awaiting_confirmation')",
                params![device_id, fault_key, now_ms],
            )?;
            if let Some(t) = tickets::active_for(tx, device_id, &fault_key)? {
                tx.execute("UPDATE tickets SET condition_cleared = 1 WHERE id = ?1", [t.id])?;
                tickets::history(tx, t.id, now_ms, "device", Some(t.status), t.status, Some("cartridge counter reset"))?;
                tickets::emit(tx, &self.webhooks, "ticket.updated", t.id, now_ms)?;
            }
            tracing::info!(device = device_id, slot, replacements, "Cartridge replacement confirmed.");
            Ok(true)
        })
    }

    // ---- time ----

    /// Advances time: escalates breached deadlines, opens filter visits at the due date,
    /// sends due reminders and follow-ups, and purges visit addresses of closed tickets.
    pub fn tick(&self, now_ms: i64) -> Result<TickReport> {
        let report = self.write(|tx| self.tick_tx(tx, now_ms))?;
        if report != TickReport::default() {
            tracing::info!(?report, "Maintenance tick.");
        }
        Ok(report)
    }

    fn tick_tx(&self, tx: &Transaction<'_>, now_ms: i64) -> Result<TickReport> {
        let mut rep = TickReport {
            commands_expired: commands::expire(tx, now_ms)?,
            ..TickReport::default()
        };
        let breached: Vec<i64> = {
            let mut stmt = tx.prepare(
                "SELECT id FROM tickets WHERE status IN ('open', 'assigned', 'in_progress')
                 AND deadline_ts_ms <= ?1 AND (next_escalation_ts_ms IS NULL OR next_escalation_ts_ms <= ?1)",
            )?;

            stmt.query_map([now_ms], |r| r.get(0))?
                .collect::<crate::store::Result<Vec<_>>>()?
        };
        for id in breached {
            tx.execute(
                "UPDATE tickets SET breached = 1, escalation_level = escalation_level + 1,
                 next_escalation_ts_ms = ?2 WHERE id = ?1",
                params![id, now_ms + self.policy.escalation_repeat_ms],
            )?;
            let t = tickets::must_get(tx, id)?;
            tickets::history(
                tx,
                id,
                now_ms,
                "system",
                Some(t.status),
                t.status,
                Some(&format!(
                    "deadline breached; escalation level {}",
                    t.escalation_level
                )),
            )?;
            tickets::emit(tx, &self.webhooks, "ticket.escalated", id, now_ms)?;
            tracing::warn!(
                ticket = id,
                level = t.escalation_level,
                "Ticket deadline breached; escalated."
            );
            rep.escalated += 1;
        }

        let due_filters: Vec<(String, u8, i64)> = {
            let mut stmt = tx.prepare(
                "SELECT device_id, slot, due_ts_ms FROM filter_schedules WHERE state = 'pending' AND due_ts_ms <= ?1",
            )?;

            stmt.query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<crate::store::Result<Vec<_>>>()?
        };
        for (device_id, slot, due) in due_filters {
            tx.execute(
                "UPDATE filter_schedules SET state = 'visit_opened', updated_ts_ms = ?3 WHERE device_id = ?1 AND slot = ?2",
                params![device_id, slot, now_ms],
            )?;
            if !self.policy.filter_visit_on_due {
                continue;
            }
            let kind = FindingKind::FilterDue {
                slot,
                due_ts_ms: due,
            };
            if let Some(action) = self.policy.for_kind(&kind).ticket {
                if self
                    .open_ticket_for(tx, &device_id, &kind, &action, "filter_due", due, now_ms)?
                    .is_some()
                {
                    rep.visits_opened += 1;
                }
            }
        }

        // Satisfaction follow-ups become reminders, so quiet hours and the cap apply.
        let followups: Vec<(i64, String, String, u32)> = {
            let mut stmt = tx.prepare(
                "SELECT id, home_id, device_id, reopen_count FROM tickets
                 WHERE status IN ('resolved', 'closed') AND followup_sent = 0 AND followup_due_ts_ms <= ?1",
            )?;

            stmt.query_map([now_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<crate::store::Result<Vec<_>>>()?
        };
        for (id, home_id, device_id, round) in followups {
            tx.execute("UPDATE tickets SET followup_sent = 1 WHERE id = ?1", [id])?;
            reminders::schedule(
                tx,
                &NewReminder {
                    home_id: &home_id,
                    device_id: &device_id,
                    kind: "satisfaction",
                    fault_key: &format!("ticket:{id}"),
                    template: Template::SatisfactionFollowup,
                    vars: serde_json::json!({ "device": device_id, "ticket": id }),
                    urgent: false,
                    dedup_key: format!("followup:{id}:{round}"),
                    send_at_ts_ms: now_ms,
                    ticket_id: Some(id),
                },
                now_ms,
            )?;
        }

        let due_reminders: Vec<i64> = {
            let mut stmt = tx.prepare(
                "SELECT id FROM reminders WHERE status = 'scheduled' AND send_at_ts_ms <= ?1 ORDER BY urgent DESC, id",
            )?;

            stmt.query_map([now_ms], |r| r.get(0))?
                .collect::<crate::store::Result<Vec<_>>>()?
        };
        for id in due_reminders {
            match reminders::try_send(tx, &self.policy, id, now_ms)? {
                SendOutcome::Sent => rep.reminders_sent += 1,
                SendOutcome::Deferred(_) => rep.reminders_deferred += 1,
                SendOutcome::Skipped => {}
            }
        }

        rep.addresses_purged = tx.execute(
            "UPDATE tickets SET visit_address = NULL WHERE visit_address IS NOT NULL
             AND closed_ts_ms IS NOT NULL AND closed_ts_ms + ?2 <= ?1",
            params![now_ms, self.policy.address_purge_ms],
        )? as u32;
        Ok(rep)
    }

    /// Opens a ticket (or returns `None` if one is already active) outside a finding.
    #[allow(clippy::too_many_arguments)]
    fn open_ticket_for(
        &self,
        tx: &Transaction<'_>,
        device_id: &str,
        kind: &FindingKind,
        action: &TicketAction,
        source: &str,
        began_ts_ms: i64,
        now_ms: i64,
    ) -> Result<Option<i64>> {
        let fault_key = kind.fault_key();
        if tickets::active_for(tx, device_id, &fault_key)?.is_some() {
            return Ok(None);
        }
        let device = registry::get_device(tx, device_id)?
            .ok_or_else(|| Error::not_found("device", device_id))?;
        let home = registry::get_home(tx, &device.home_id)?
            .ok_or_else(|| Error::not_found("home", &device.home_id))?;
        let id = tickets::insert(
            tx,
            &NewTicket {
                device_id,
                home_id: &home.id,
                kind: kind.policy_key(),
                fault_key: &fault_key,
                priority: action.priority,
                skill: &action.skill,
                source,
                began_ts_ms,
                deadline_ms: action.deadline_ms,
                linked_ticket_id: None,
                visit_address: &home.address,
            },
            now_ms,
        )?;
        if self.policy.auto_assign {
            tickets::assign(tx, &self.policy, id, None, "system", now_ms)?;
        }
        tickets::emit(tx, &self.webhooks, "ticket.opened", id, now_ms)?;
        Ok(Some(id))
    }

    // ---- people's actions ----

    /// Moves a ticket through its lifecycle on behalf of `actor`.
    pub fn transition(
        &self,
        id: i64,
        to: TicketStatus,
        actor: &str,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<tickets::Ticket> {
        self.write(|tx| {
            let t = tickets::transition(tx, &self.policy, id, to, actor, note, now_ms)?;
            tickets::emit(tx, &self.webhooks, "ticket.updated", id, now_ms)?;
            Ok(t)
        })
    }

    /// Assigns a ticket to a technician, or to the best match if `None`.
    pub fn assign(
        &self,
        id: i64,
        technician: Option<&str>,
        actor: &str,
        now_ms: i64,
    ) -> Result<Option<String>> {
        self.write(|tx| {
            let chosen = tickets::assign(tx, &self.policy, id, technician, actor, now_ms)?;
            if chosen.is_some() {
                tickets::emit(tx, &self.webhooks, "ticket.updated", id, now_ms)?;
            }
            Ok(chosen)
        })
    }

    /// Records the homeowner's satisfaction score (1 to 5) for a resolved or closed ticket.
    pub fn rate(&self, id: i64, score: u8, now_ms: i64) -> Result<()> {
        if !(1..=5).contains(&score) {
            return Err(Error::invalid("score", "1 to 5"));
        }
        self.write(|tx| {
            let t = tickets::must_get(tx, id)?;
            if !matches!(t.status, TicketStatus::Resolved | TicketStatus::Closed) {
                return Err(Error::invalid(
                    "ticket",
                    "only a resolved or closed ticket can be rated",
                ));
            }
            tx.execute(
                "UPDATE tickets SET satisfaction = ?2 WHERE id = ?1",
                params![id, score],
            )?;
            tickets::history(
                tx,
                id,
                now_ms,
                "homeowner",
                Some(t.status),
                t.status,
                Some(&format!("rated {score}")),
            )?;
            Ok(())
        })
    }

    /// Snoozes a reminder for `hours` (1 to 720).
    pub fn snooze(&self, id: i64, hours: u32, now_ms: i64) -> Result<reminders::Reminder> {
        if !(1..=720).contains(&hours) {
            return Err(Error::invalid("hours", "1 to 720"));
        }
        self.write(|tx| {
            let r = reminders::get(tx, id)?.ok_or_else(|| Error::not_found("reminder", id))?;
            if r.kind == "leak" {
                return Err(Error::invalid(
                    "reminder",
                    "a leak cannot be snoozed: close the water inlet and wait for the technician",
                ));
            }
            reminders::snooze(tx, id, now_ms + i64::from(hours) * 3_600_000)
        })
    }

    /// The homeowner says it is done. For a filter this awaits the cartridge counter reset.
    pub fn done(&self, id: i64, now_ms: i64) -> Result<reminders::Reminder> {
        self.write(|tx| {
            let r = reminders::get(tx, id)?.ok_or_else(|| Error::not_found("reminder", id))?;
            if !matches!(r.status.as_str(), "scheduled" | "sent") {
                return Err(Error::invalid("reminder", format!("cannot complete a {} reminder", r.status)));
            }
            let status = if r.kind == "filter_due" { "awaiting_confirmation" } else { "done" };
            tx.execute(
                "UPDATE reminders SET status = ?2, done_ts_ms = ?3 WHERE id = ?1",
                params![id, status, now_ms],
            )?;
            if r.kind == "filter_due" {
                tx.execute(
                    "UPDATE filter_schedules SET state = 'claimed', updated_ts_ms = ?3
                     WHERE device_id = ?1 AND ('filter_due:' || slot) = ?2 AND state = 'pending'",
                    params![r.device_id, r.fault_key, now_ms],
                )?;
                // The other reminder of this due date is no longer needed.
                tx.execute(
                    "UPDATE reminders SET status = 'cancelled' WHERE device_id = ?1 AND fault_key = ?2
                     AND status = 'scheduled' AND id != ?3",
                    params![r.device_id, r.fault_key, id],
                )?;
            }
            reminders::get(tx, id)?.ok_or_else(|| Error::not_found("reminder", id))
        })
    }

    /// The homeowner books a visit from a reminder: opens (or returns the active) ticket.
    pub fn book(&self, id: i64, now_ms: i64) -> Result<i64> {
        self.write(|tx| {
            let r = reminders::get(tx, id)?.ok_or_else(|| Error::not_found("reminder", id))?;
            if let Some(t) = tickets::active_for(tx, &r.device_id, &r.fault_key)? {
                tx.execute("UPDATE reminders SET status = 'booked', ticket_id = ?2, done_ts_ms = ?3 WHERE id = ?1", params![id, t.id, now_ms])?;
                return Ok(t.id);
            }
            let device = registry::get_device(tx, &r.device_id)?.ok_or_else(|| Error::not_found("device", &r.device_id))?;
            let home = registry::get_home(tx, &device.home_id)?.ok_or_else(|| Error::not_found("home", &device.home_id))?;
            let action = self
                .policy
                .kinds
                .get(r.kind.as_str())
                .and_then(|k| k.ticket.clone())
                .unwrap_or(TicketAction { priority: Priority::Normal, deadline_ms: 72 * 3_600_000, skill: "general".into() });
            let tid = tickets::insert(
                tx,
                &NewTicket {
                    device_id: &device.id,
                    home_id: &home.id,
                    kind: &r.kind,
                    fault_key: &r.fault_key,
                    priority: action.priority,
                    skill: &action.skill,
                    source: "homeowner",
                    began_ts_ms: now_ms,
                    deadline_ms: action.deadline_ms,
                    linked_ticket_id: None,
                    visit_address: &home.address,
                },
                now_ms,
            )?;
            if self.policy.auto_assign {
                tickets::assign(tx, &self.policy, tid, None, "system", now_ms)?;
            }
            tickets::emit(tx, &self.webhooks, "ticket.opened", tid, now_ms)?;
            tx.execute("UPDATE reminders SET status = 'booked', ticket_id = ?2, done_ts_ms = ?3 WHERE id = ?1", params![id, tid, now_ms])?;
            // The visit answers the other reminders of the same cause (one per cartridge).
            tx.execute(
                "UPDATE reminders SET status = 'cancelled' WHERE device_id = ?1 AND fault_key = ?2
                 AND status = 'scheduled' AND id != ?3",
                params![r.device_id, r.fault_key, id],
            )?;
            tx.execute(
                "UPDATE filter_schedules SET state = 'booked', updated_ts_ms = ?3
                 WHERE device_id = ?1 AND ('filter_due:' || slot) = ?2 AND state IN ('pending', 'claimed')",
                params![r.device_id, r.fault_key, now_ms],
            )?;
            Ok(tid)
        })
    }

    // ---- reads ----

    /// The filter schedules of a device.
    pub fn filters(&self, device_id: &str) -> Result<Vec<FilterSchedule>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT device_id, slot, due_ts_ms, state, lo_ts_ms, hi_ts_ms, remaining_l, daily_l, reported_ts_ms
                 FROM filter_schedules WHERE device_id = ?1 ORDER BY slot",
            )?;
            let rows = stmt
                .query_map([device_id], |r| {
                    Ok(FilterSchedule { device_id: r.get(0)?, slot: r.get(1)?, due_ts_ms: r.get(2)?, state: r.get(3)?, lo_ts_ms: r.get(4)?, hi_ts_ms: r.get(5)?, remaining_l: r.get(6)?, daily_l: r.get(7)?, reported_ts_ms: r.get(8)? })
                })?
                .collect::<crate::store::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Service KPIs over tickets opened in `[from_ms, to_ms)`.
    pub fn kpi(&self, from_ms: i64, to_ms: i64) -> Result<tickets::Kpi> {
        self.read(|c| tickets::kpi(c, &self.policy, from_ms, to_ms))
    }

    /// Deletes up to 5 000 audit rows older than `cutoff_ms` (retention); how many went.
    /// Call again while it returns 5 000.
    pub fn delete_audit_before(&self, cutoff_ms: i64) -> Result<u64> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ts_ms < ?1 LIMIT 5000)",
                params![cutoff_ms],
            )?;
            Ok(n as u64)
        })
    }

    /// Active tickets per priority, with how many are past their deadline at `now_ms`.
    pub fn backlog_by_priority(&self, now_ms: i64) -> Result<Vec<(Priority, u64, u64)>> {
        self.read(|c| tickets::backlog_by_priority(c, now_ms))
    }
}

/// Tests: a new, empty engine in memory, or on a new database of the PostgreSQL server
/// named by `MAINTENANCE_TEST_POSTGRES` (a URL with the right to create databases), so the
/// unit tests run on either backend (`tests/common` does the same for the integration tests).
#[cfg(test)]
pub(crate) fn test_engine(cfg: EngineConfig) -> Engine {
    match std::env::var("MAINTENANCE_TEST_POSTGRES") {
        Ok(admin_url) if !admin_url.is_empty() => {
            let name = format!("maint_unit_{}", crate::random_hex(6));
            let admin = Connection::from_postgres(
                crate::store::postgres::Session::connect(&admin_url).expect("postgres admin"),
            );
            admin
                .execute_batch(&format!("CREATE DATABASE {name}"))
                .expect("create database");
            let (server, _) = admin_url
                .rsplit_once('/')
                .expect("a URL ending in /database");
            Engine::open_postgres(&format!("{server}/{name}"), cfg).expect("engine on postgres")
        }
        _ => Engine::in_memory(cfg).expect("engine"),
    }
}
