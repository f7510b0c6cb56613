//! The maintenance policy: which actions each finding kind triggers.
//!
//! Loaded in two stages: [`RawPolicy`] is the TOML as written (hours, days, strings);
//! [`Policy`] is checked and typed (milliseconds, [`Template`], [`Priority`]). The shipped
//! defaults live in `policy.default.toml` and are embedded with `include_str!`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::finding::FindingKind;
pub use crate::incidents::Grouping;
use crate::templates::Template;

/// The default policy file, embedded at build time.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../policy.default.toml");

const HOUR_MS: f64 = 3_600_000.0;
use protocol::catalog::DAY_MS;

/// Ticket priority, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Whenever convenient.
    Low,
    /// Routine visit.
    Normal,
    /// Soon.
    High,
    /// Now (water damage, safety).
    Critical,
}

impl Priority {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(s: &str) -> Option<Priority> {
        Some(match s {
            "low" => Priority::Low,
            "normal" => Priority::Normal,
            "high" => Priority::High,
            "critical" => Priority::Critical,
            _ => return None,
        })
    }
}

/// The policy file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Days within which a recurrence reopens or links.
    pub recurrence_days: u32,
    /// Hours after resolution for the satisfaction follow-up.
    pub followup_hours: f64,
    /// Hours after closing before the visit address is purged.
    pub address_purge_hours: f64,
    /// Hours between escalations once a deadline is breached.
    pub escalation_repeat_hours: f64,
    /// Default weekly cap of non-urgent homeowner messages.
    pub default_weekly_cap: u32,
    /// KPI warning threshold for mean time to acknowledge, hours.
    pub max_mean_ack_hours: f64,
    /// Whether to auto-assign new tickets.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// A grouped finding joins its home's or site's open incident if that incident's latest
    /// finding came within this many hours (see [`crate::incidents`]).
    #[serde(default = "default_group_window_hours")]
    pub group_window_hours: f64,
    /// Filter reminders.
    pub filter: RawFilterPolicy,
    /// Per-kind actions, keyed by [`FindingKind::policy_key`].
    pub kinds: BTreeMap<String, RawKindPolicy>,
}

fn default_true() -> bool {
    true
}

fn default_group_window_hours() -> f64 {
    24.0
}

/// `[filter]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilterPolicy {
    /// Days before the due date to remind.
    pub remind_days_before: Vec<u32>,
    /// Open a visit ticket at the due date if nobody acted.
    pub visit_on_due: bool,
}

/// `[kinds.<key>]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKindPolicy {
    /// Open an on-site ticket.
    pub ticket: Option<RawTicketAction>,
    /// Message the homeowner.
    pub notify: Option<RawNotifyAction>,
    /// Send the device a command (where its model supports it): `close_inlet_valve`
    /// (stop the water of a leak), `report_diagnostics` (confirm a finding before anyone
    /// is sent), `self_test`.
    #[serde(default)]
    pub command: Option<String>,
}

/// A ticket action as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTicketAction {
    /// `low`, `normal`, `high` or `critical`.
    pub priority: String,
    /// Deadline after opening, hours.
    pub deadline_hours: f64,
    /// Technician skill needed.
    pub skill: String,
}

/// A notify action as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifyAction {
    /// Template key.
    pub template: String,
    /// Urgent messages ignore quiet hours and the weekly cap.
    #[serde(default)]
    pub urgent: bool,
    /// At most one message of this kind per device in this many days.
    #[serde(default)]
    pub min_interval_days: u32,
    /// `device` (default), `home` (one message per home for the devices of one home that
    /// report it together) or `site` (one incident per site, one message per home).
    #[serde(default)]
    pub group: Grouping,
}

/// The checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Recurrence window, ms.
    pub recurrence_ms: i64,
    /// Follow-up delay after resolution, ms.
    pub followup_ms: i64,
    /// Address purge delay after closing, ms.
    pub address_purge_ms: i64,
    /// Escalation repeat interval, ms.
    pub escalation_repeat_ms: i64,
    /// Default weekly cap.
    pub default_weekly_cap: u32,
    /// KPI warning threshold for mean time to acknowledge, ms.
    pub max_mean_ack_ms: i64,
    /// Whether to auto-assign new tickets.
    pub auto_assign: bool,
    /// Window within which grouped findings join one incident, ms.
    pub group_window_ms: i64,
    /// Reminder offsets before a filter's due date, ms, largest first.
    pub filter_remind_before_ms: Vec<i64>,
    /// Open a visit ticket at the due date if nobody acted.
    pub filter_visit_on_due: bool,
    /// Per-kind actions.
    pub kinds: BTreeMap<&'static str, KindPolicy>,
}

/// The actions for one kind.
#[derive(Debug, Clone, Default)]
pub struct KindPolicy {
    /// Open an on-site ticket.
    pub ticket: Option<TicketAction>,
    /// Message the homeowner.
    pub notify: Option<NotifyAction>,
    /// Send the device this command when the finding becomes active (models that support it).
    pub command: Option<protocol::message::CommandKind>,
}

/// A checked ticket action.
#[derive(Debug, Clone)]
pub struct TicketAction {
    /// Priority.
    pub priority: Priority,
    /// Deadline after opening, ms.
    pub deadline_ms: i64,
    /// Technician skill needed.
    pub skill: String,
}

/// A checked notify action.
#[derive(Debug, Clone)]
pub struct NotifyAction {
    /// Template.
    pub template: Template,
    /// Ignores quiet hours and the weekly cap.
    pub urgent: bool,
    /// Minimum interval between two messages of this kind per device, ms.
    pub min_interval_ms: i64,
    /// How findings of this kind are grouped.
    pub group: Grouping,
}

fn hours(field: &'static str, h: f64) -> Result<i64> {
    if !h.is_finite() || !(0.0..=24.0 * 3650.0).contains(&h) {
        return Err(Error::Config(format!(
            "{field}: {h} is not a duration in hours"
        )));
    }
    Ok((h * HOUR_MS).round() as i64)
}

impl TryFrom<RawPolicy> for Policy {
    type Error = Error;

    fn try_from(raw: RawPolicy) -> Result<Self> {
        let mut kinds = BTreeMap::new();
        for (key, kind) in raw.kinds {
            let Some(&static_key) = FindingKind::ALL_KEYS.iter().find(|k| **k == key) else {
                return Err(Error::Config(format!("kinds.{key}: unknown finding kind")));
            };
            let ticket = match kind.ticket {
                None => None,
                Some(t) => Some(TicketAction {
                    priority: Priority::parse(&t.priority).ok_or_else(|| {
                        Error::Config(format!(
                            "kinds.{key}.ticket.priority: unknown {:?}",
                            t.priority
                        ))
                    })?,
                    deadline_ms: hours("ticket.deadline_hours", t.deadline_hours)?,
                    skill: t.skill,
                }),
            };
            let notify = match kind.notify {
                None => None,
                Some(n) => Some(NotifyAction {
                    template: Template::parse(&n.template).ok_or_else(|| {
                        Error::Config(format!(
                            "kinds.{key}.notify.template: unknown {:?}",
                            n.template
                        ))
                    })?,
                    urgent: n.urgent,
                    min_interval_ms: i64::from(n.min_interval_days) * DAY_MS,
                    group: n.group,
                }),
            };
            let command = match kind.command {
                None => None,
                Some(name) => {
                    use protocol::message::CommandKind as K;
                    let k = match name.as_str() {
                        "close_inlet_valve" => K::CloseInletValve,
                        "report_diagnostics" => K::ReportDiagnostics,
                        "self_test" => K::SelfTest,
                        other => {
                            return Err(Error::Config(format!(
                                "kinds.{key}.command: {other:?} is not one the policy may send                                  (close_inlet_valve, report_diagnostics, self_test)"
                            )))
                        }
                    };
                    Some(k)
                }
            };
            kinds.insert(
                static_key,
                KindPolicy {
                    ticket,
                    notify,
                    command,
                },
            );
        }
        let mut before: Vec<i64> = raw
            .filter
            .remind_days_before
            .iter()
            .map(|d| i64::from(*d) * DAY_MS)
            .collect();
        before.sort_unstable_by(|a, b| b.cmp(a));
        before.dedup();
        if raw.default_weekly_cap == 0 {
            return Err(Error::Config(
                "default_weekly_cap must be at least 1".into(),
            ));
        }
        Ok(Policy {
            recurrence_ms: i64::from(raw.recurrence_days) * DAY_MS,
            followup_ms: hours("followup_hours", raw.followup_hours)?,
            address_purge_ms: hours("address_purge_hours", raw.address_purge_hours)?,
            escalation_repeat_ms: hours("escalation_repeat_hours", raw.escalation_repeat_hours)?
                .max(60_000),
            default_weekly_cap: raw.default_weekly_cap,
            max_mean_ack_ms: hours("max_mean_ack_hours", raw.max_mean_ack_hours)?,
            auto_assign: raw.auto_assign,
            group_window_ms: hours("group_window_hours", raw.group_window_hours)?,
            filter_remind_before_ms: before,
            filter_visit_on_due: raw.filter.visit_on_due,
            kinds,
        })
    }
}

impl Policy {
    /// Parses and checks a policy file.
    pub fn from_toml(text: &str) -> Result<Policy> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        Policy::try_from(raw)
    }

    /// The actions for `kind` (none if the policy does not mention it).
    pub fn for_kind(&self, kind: &FindingKind) -> KindPolicy {
        self.kinds
            .get(kind.policy_key())
            .cloned()
            .unwrap_or_default()
    }
}

impl Default for Policy {
    fn default() -> Self {
        // The embedded file is checked by a unit test, so this cannot fail in a release.
        Policy::from_toml(DEFAULT_POLICY_TOML).expect("policy.default.toml is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_loads_and_follows_the_tiers() {
        let p = Policy::from_toml(DEFAULT_POLICY_TOML).unwrap();
        let leak = p.for_kind(&FindingKind::Leak);
        let t = leak.ticket.unwrap();
        assert_eq!(
            (t.priority, t.deadline_ms),
            (Priority::Critical, 4 * 3_600_000)
        );
        assert!(leak.notify.unwrap().urgent);
        assert_eq!(
            leak.command,
            Some(protocol::message::CommandKind::CloseInletValve)
        );
        let clog = p.for_kind(&FindingKind::InletClog);
        assert!(clog.ticket.is_none() && clog.notify.is_some());
        assert_eq!(
            clog.command,
            Some(protocol::message::CommandKind::ReportDiagnostics)
        );
        assert_eq!(p.filter_remind_before_ms, vec![14 * DAY_MS, 3 * DAY_MS]);
        for key in FindingKind::ALL_KEYS {
            assert!(p.kinds.contains_key(key), "default policy lacks {key}");
        }
    }

    #[test]
    fn unknown_template_or_kind_is_rejected() {
        let bad = DEFAULT_POLICY_TOML.replace("\"saving_tip\"", "\"savng_tip\"");
        assert!(matches!(Policy::from_toml(&bad), Err(Error::Config(_))));
        let bad = DEFAULT_POLICY_TOML.replace("\"close_inlet_valve\"", "\"open_inlet_valve\"");
        assert!(matches!(Policy::from_toml(&bad), Err(Error::Config(_))));
        let bad = format!("{DEFAULT_POLICY_TOML}\n[kinds.volcano]\n");
        assert!(matches!(Policy::from_toml(&bad), Err(Error::Config(_))));
    }
}
