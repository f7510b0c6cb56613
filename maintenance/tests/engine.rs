//! Engine behaviour: each finding kind's actions, de-duplication, clears, recurrence,
//! escalation, assignment, follow-ups, address purge, reminders and KPIs. Time is passed in.

mod common;

use common::*;
use maintenance::outbox::{self, OutChannel};
use maintenance::policy::Priority;
use maintenance::reminders;
use maintenance::templates::Template;
use maintenance::tickets::{self, TicketFilter, TicketStatus};
use maintenance::{Engine, FindingKind, Resource, TicketEffect};

fn outbox_rows(e: &Engine) -> Vec<outbox::OutboxRow> {
    e.read(|c| outbox::list(c, 1000)).expect("outbox")
}

fn reminders_of(e: &Engine, home: &str) -> Vec<reminders::Reminder> {
    e.read(|c| reminders::list(c, Some(home)))
        .expect("reminders")
}

fn ticket(e: &Engine, id: i64) -> tickets::Ticket {
    e.read(|c| tickets::must_get(c, id)).expect("ticket")
}

#[test]
fn each_finding_kind_gets_the_tiered_response_once() {
    // (kind, expected ticket (priority, deadline hours), expected homeowner template)
    type Case = (FindingKind, Option<(Priority, i64)>, Option<Template>);
    let cases: Vec<Case> = vec![
        (
            FindingKind::Leak,
            Some((Priority::Critical, 4)),
            // A toilet has an inlet valve: the policy closes it and the message says so.
            Some(Template::LeakValveClosing),
        ),
        (
            FindingKind::LongWash,
            Some((Priority::High, 48)),
            Some(Template::LongWashNotice),
        ),
        (
            FindingKind::MainBoardFault,
            Some((Priority::High, 48)),
            Some(Template::VisitNotice),
        ),
        (
            FindingKind::HeaterFault,
            Some((Priority::High, 48)),
            Some(Template::VisitNotice),
        ),
        (FindingKind::InletClog, None, Some(Template::InletClogGuide)),
        (
            FindingKind::Unused7Days,
            None,
            Some(Template::CleaningReminder),
        ),
        (
            FindingKind::AbnormalUsage {
                resource: Resource::Water,
            },
            None,
            Some(Template::SavingTip),
        ),
        (
            FindingKind::DeviceSilent,
            None,
            Some(Template::DeviceSilentGuide),
        ),
    ];
    for (kind, want_ticket, want_template) in cases {
        let e = engine();
        let now = t0();
        let f = finding("toilet-1", kind, now - HOUR);
        let first = e.ingest(&f, now).expect("ingest");
        let second = e.ingest(&f, now + 10 * 60_000).expect("ingest again");
        match want_ticket {
            Some((priority, hours)) => {
                let (id, effect) = first.ticket.expect("ticket");
                assert_eq!(effect, TicketEffect::Opened, "{kind:?}");
                let t = ticket(&e, id);
                assert_eq!(
                    (t.priority, t.deadline_ts_ms - t.opened_ts_ms),
                    (priority, hours * HOUR),
                    "{kind:?}"
                );
                assert_eq!(
                    second.ticket,
                    Some((id, TicketEffect::Attached)),
                    "{kind:?}"
                );
                assert_eq!(
                    e.read(|c| tickets::evidence(c, id))
                        .expect("evidence")
                        .len(),
                    2
                );
                assert_eq!(
                    e.read(|c| tickets::list(c, &TicketFilter::default()))
                        .expect("list")
                        .len(),
                    1
                );
            }
            None => assert!(first.ticket.is_none(), "{kind:?}"),
        }
        let rs = reminders_of(&e, "h1");
        match want_template {
            Some(t) => {
                assert_eq!(rs.len(), 1, "{kind:?}: exactly one reminder");
                assert_eq!(
                    (rs[0].template, rs[0].status.as_str()),
                    (t, "sent"),
                    "{kind:?}"
                );
            }
            None => assert!(rs.is_empty()),
        }
        assert!(
            second.reminders.is_empty(),
            "{kind:?}: a repeat sends nothing"
        );
    }
}

#[test]
fn leak_alert_is_urgent_and_goes_out_in_quiet_hours_with_the_ticket_webhook() {
    let e = engine();
    let night = t0() + 13 * HOUR; // 23:00 in Shanghai
    let out = e
        .ingest(&finding("toilet-1", FindingKind::Leak, night), night)
        .expect("ingest");
    let (id, _) = out.ticket.expect("ticket");
    let rows = outbox_rows(&e);
    let channels: Vec<_> = rows.iter().map(|r| (r.channel, r.topic.as_str())).collect();
    assert!(
        channels.contains(&(OutChannel::Push, "reminder")),
        "{channels:?}"
    );
    assert!(
        channels.contains(&(OutChannel::Sms, "reminder")),
        "{channels:?}"
    );
    assert!(
        channels.contains(&(OutChannel::Webhook, "ticket.opened")),
        "{channels:?}"
    );
    let push = rows
        .iter()
        .find(|r| r.channel == OutChannel::Push)
        .expect("push");
    // A toilet has an inlet valve: the policy closes it, and the push says so.
    assert_eq!(push.payload["title"], "紧急：检测到漏水，已远程关闭进水阀");
    // Auto-assigned to a plumber in the region.
    assert!(ticket(&e, id).assignee.is_some());
}

#[test]
fn non_urgent_reminder_waits_for_the_end_of_quiet_hours() {
    let e = engine();
    let night = t0() + 13 * HOUR; // 23:00 local
    let out = e
        .ingest(&finding("toilet-1", FindingKind::InletClog, night), night)
        .expect("ingest");
    let r = e
        .read(|c| reminders::get(c, out.reminders[0]))
        .expect("get")
        .expect("reminder");
    assert_eq!(r.status, "scheduled");
    assert_eq!(
        r.send_at_ts_ms,
        t0() + 22 * HOUR,
        "08:00 local next morning"
    );
    assert!(outbox_rows(&e).is_empty());
    assert_eq!(e.tick(t0() + 21 * HOUR).expect("tick").reminders_sent, 0);
    assert_eq!(e.tick(t0() + 22 * HOUR).expect("tick").reminders_sent, 1);
    assert_eq!(outbox_rows(&e).len(), 2, "push and sms");
}

#[test]
fn weekly_cap_defers_the_sixth_message_by_a_week() {
    let e = engine();
    let now = t0();
    let mut sent = 0;
    for i in 0..6 {
        let out = e
            .ingest(
                &finding("toilet-1", FindingKind::InletClog, now + i),
                now + i,
            )
            .expect("ingest");
        let r = e
            .read(|c| reminders::get(c, out.reminders[0]))
            .expect("get")
            .expect("reminder");
        if r.status == "sent" {
            sent += 1;
        } else {
            assert_eq!(i, 5);
            assert!(
                r.send_at_ts_ms > now + 7 * DAY,
                "deferred until the window has room"
            );
        }
    }
    assert_eq!(sent, 5, "default cap is 5 per week");
    // An urgent alert ignores the cap.
    let out = e
        .ingest(&finding("toilet-1", FindingKind::Leak, now), now)
        .expect("leak");
    let r = e
        .read(|c| reminders::get(c, out.reminders[0]))
        .expect("get")
        .expect("reminder");
    assert_eq!(r.status, "sent");
}

#[test]
fn saving_tip_is_sent_at_most_once_a_week() {
    let e = engine();
    let now = t0();
    let kind = FindingKind::AbnormalUsage {
        resource: Resource::Energy,
    };
    assert_eq!(
        e.ingest(&finding("toilet-1", kind, now), now)
            .expect("1")
            .reminders
            .len(),
        1
    );
    // A new episode two days later: still inside the week.
    assert!(e
        .ingest(&finding("toilet-1", kind, now + 2 * DAY), now + 2 * DAY)
        .expect("2")
        .reminders
        .is_empty());
    // Eight days later: a new tip.
    assert_eq!(
        e.ingest(&finding("toilet-1", kind, now + 8 * DAY), now + 8 * DAY)
            .expect("3")
            .reminders
            .len(),
        1
    );
    // The water tip is separate.
    let water = FindingKind::AbnormalUsage {
        resource: Resource::Water,
    };
    assert_eq!(
        e.ingest(&finding("toilet-1", water, now + 2 * DAY), now + 2 * DAY)
            .expect("4")
            .reminders
            .len(),
        1
    );
}

#[test]
fn a_cleared_finding_marks_the_ticket_for_the_agent_to_confirm() {
    let e = engine();
    let now = t0();
    let (id, _) = e
        .ingest(&finding("toilet-1", FindingKind::HeaterFault, now), now)
        .expect("open")
        .ticket
        .expect("t");
    let out = e
        .ingest(
            &cleared("toilet-1", FindingKind::HeaterFault, now),
            now + HOUR,
        )
        .expect("clear");
    assert_eq!(out.ticket, Some((id, TicketEffect::ConditionCleared)));
    let t = ticket(&e, id);
    assert!(
        t.condition_cleared && t.status.is_active(),
        "still active until an agent confirms"
    );
    e.transition(
        id,
        TicketStatus::Resolved,
        "agent:x",
        Some("confirmed"),
        now + 2 * HOUR,
    )
    .expect("resolve");
}

#[test]
fn recurrence_within_30_days_reopens_then_links_then_starts_afresh() {
    let e = engine();
    let now = t0();
    let (id, _) = e
        .ingest(&finding("toilet-1", FindingKind::LongWash, now), now)
        .expect("open")
        .ticket
        .expect("t");
    e.transition(id, TicketStatus::InProgress, "tech-a", None, now + HOUR)
        .expect("start");
    e.transition(id, TicketStatus::Resolved, "tech-a", None, now + 2 * HOUR)
        .expect("resolve");
    // Comes back 10 days later: the resolved ticket reopens.
    let later = now + 10 * DAY;
    let out = e
        .ingest(&finding("toilet-1", FindingKind::LongWash, later), later)
        .expect("recur");
    assert_eq!(out.ticket, Some((id, TicketEffect::Reopened)));
    let t = ticket(&e, id);
    assert_eq!((t.reopen_count, t.deadline_ts_ms), (1, later + 48 * HOUR));
    assert!(t.status.is_active());
    // Resolved and closed, then back within 30 days: a new ticket linked to it.
    e.transition(id, TicketStatus::InProgress, "tech-a", None, later + HOUR)
        .expect("start");
    e.transition(id, TicketStatus::Resolved, "tech-a", None, later + 2 * HOUR)
        .expect("resolve");
    e.transition(id, TicketStatus::Closed, "agent", None, later + 3 * HOUR)
        .expect("close");
    let again = later + 5 * DAY;
    let (id2, effect) = e
        .ingest(&finding("toilet-1", FindingKind::LongWash, again), again)
        .expect("r2")
        .ticket
        .expect("t");
    assert_eq!(effect, TicketEffect::Linked);
    assert_eq!(ticket(&e, id2).linked_ticket_id, Some(id));
    assert!(ticket(&e, id).recurred);
    // More than 30 days after the last resolution: a fresh, unlinked ticket.
    e.transition(id2, TicketStatus::Cancelled, "agent", None, again + HOUR)
        .expect("cancel");
    let much_later = later + 40 * DAY;
    let (_, effect) = e
        .ingest(
            &finding("toilet-1", FindingKind::LongWash, much_later),
            much_later,
        )
        .expect("r3")
        .ticket
        .expect("t");
    assert_eq!(effect, TicketEffect::Opened);
}

#[test]
fn invalid_transitions_are_refused() {
    let e = engine();
    let now = t0();
    let (id, _) = e
        .ingest(&finding("toilet-2", FindingKind::MainBoardFault, now), now)
        .expect("open")
        .ticket
        .expect("t");
    let err = e
        .transition(id, TicketStatus::Closed, "agent", None, now)
        .expect_err("skip to closed");
    assert!(
        matches!(err, maintenance::Error::InvalidTransition { .. }),
        "{err}"
    );
}

#[test]
fn breached_deadline_escalates_on_tick_and_again_after_the_repeat_interval() {
    let e = engine();
    let now = t0();
    let (id, _) = e
        .ingest(&finding("toilet-1", FindingKind::Leak, now), now)
        .expect("open")
        .ticket
        .expect("t");
    assert_eq!(e.tick(now + 3 * HOUR).expect("tick").escalated, 0);
    assert_eq!(e.tick(now + 4 * HOUR).expect("tick").escalated, 1);
    assert_eq!(
        e.tick(now + 5 * HOUR).expect("tick").escalated,
        0,
        "not before the repeat interval"
    );
    assert_eq!(e.tick(now + 8 * HOUR).expect("tick").escalated, 1);
    let t = ticket(&e, id);
    assert!(t.breached);
    assert_eq!(t.escalation_level, 2);
    let escalations = outbox_rows(&e)
        .iter()
        .filter(|r| r.topic == "ticket.escalated")
        .count();
    assert_eq!(escalations, 2);
}

#[test]
fn assignment_matches_region_and_skill_and_balances_load() {
    let e = engine();
    let now = t0();
    // Electrical: tech-b and tech-c qualify; two tickets go to different technicians.
    let (a, _) = e
        .ingest(&finding("toilet-1", FindingKind::HeaterFault, now), now)
        .expect("1")
        .ticket
        .expect("t");
    let (b, _) = e
        .ingest(&finding("toilet-2", FindingKind::HeaterFault, now), now)
        .expect("2")
        .ticket
        .expect("t");
    let (ta, tb) = (
        ticket(&e, a).assignee.expect("a"),
        ticket(&e, b).assignee.expect("b"),
    );
    assert_ne!(ta, tb);
    assert!(
        ["tech-b", "tech-c"].contains(&ta.as_str()) && ["tech-b", "tech-c"].contains(&tb.as_str())
    );
    assert_eq!(ticket(&e, a).status, TicketStatus::Assigned);
    assert!(
        ticket(&e, a).ack_ts_ms.is_none(),
        "auto-assignment is not an acknowledgement"
    );
}

#[test]
fn satisfaction_follow_up_goes_48_hours_after_resolution_and_address_is_purged_after_close() {
    let e = engine();
    let now = t0();
    let (id, _) = e
        .ingest(&finding("toilet-1", FindingKind::LongWash, now), now)
        .expect("open")
        .ticket
        .expect("t");
    e.transition(id, TicketStatus::InProgress, "tech-a", None, now + HOUR)
        .expect("start");
    e.transition(id, TicketStatus::Resolved, "tech-a", None, now + 2 * HOUR)
        .expect("resolve");
    e.tick(now + 49 * HOUR).expect("tick");
    assert!(!reminders_of(&e, "h1")
        .iter()
        .any(|r| r.kind == "satisfaction"));
    e.tick(now + 50 * HOUR).expect("tick");
    let follow = reminders_of(&e, "h1")
        .into_iter()
        .find(|r| r.kind == "satisfaction")
        .expect("follow-up");
    assert_eq!(follow.status, "sent");
    e.rate(id, 5, now + 51 * HOUR).expect("rate");
    e.transition(id, TicketStatus::Closed, "agent", None, now + 52 * HOUR)
        .expect("close");
    assert!(ticket(&e, id).visit_address.is_some());
    assert_eq!(e.tick(now + 75 * HOUR).expect("tick").addresses_purged, 0);
    assert_eq!(e.tick(now + 76 * HOUR).expect("tick").addresses_purged, 1);
    assert!(ticket(&e, id).visit_address.is_none());
    assert_eq!(ticket(&e, id).satisfaction, Some(5));
}

#[test]
fn filter_reminders_go_14_and_3_days_ahead_then_a_visit_at_the_due_date() {
    let e = engine();
    let now = t0();
    let due = now + 30 * DAY;
    let kind = FindingKind::FilterDue {
        slot: 1,
        due_ts_ms: due,
    };
    let out = e
        .ingest(&finding("purifier-1", kind, now), now)
        .expect("ingest");
    assert_eq!(out.reminders.len(), 2);
    // A repeat of the same finding schedules nothing new.
    assert!(e
        .ingest(&finding("purifier-1", kind, now), now + HOUR)
        .expect("again")
        .reminders
        .is_empty());
    assert_eq!(e.tick(due - 14 * DAY - 1).expect("tick").reminders_sent, 0);
    assert_eq!(e.tick(due - 14 * DAY).expect("tick").reminders_sent, 1);
    let sent = outbox_rows(&e);
    let push = sent
        .iter()
        .find(|r| r.channel == OutChannel::Push)
        .expect("push");
    assert!(
        push.payload["body"]
            .as_str()
            .unwrap_or_default()
            .contains("14 天后到期"),
        "{}",
        push.payload
    );
    assert_eq!(e.tick(due - 3 * DAY).expect("tick").reminders_sent, 1);
    // Nobody acted: a replacement-visit ticket at the due date.
    let rep = e.tick(due).expect("tick");
    assert_eq!(rep.visits_opened, 1);
    let visits = e
        .read(|c| {
            tickets::list(
                c,
                &TicketFilter {
                    device_id: Some("purifier-1".into()),
                    ..Default::default()
                },
            )
        })
        .expect("list");
    assert_eq!(
        (
            visits.len(),
            visits[0].fault_key.as_str(),
            visits[0].assignee.as_deref()
        ),
        (1, "filter_due:1", Some("tech-a"))
    );
    assert_eq!(
        e.tick(due + DAY).expect("tick").visits_opened,
        0,
        "only once"
    );
    // The replacement is confirmed by the counter: the visit is marked for confirmation.
    assert!(e
        .cartridge_replaced("purifier-1", 1, 1, due + 2 * DAY)
        .expect("replaced"));
    assert!(
        !e.cartridge_replaced("purifier-1", 1, 1, due + 2 * DAY)
            .expect("replay"),
        "a replayed counter is ignored"
    );
    assert!(ticket(&e, visits[0].id).condition_cleared);
}

#[test]
fn filter_done_awaits_the_counter_and_prevents_the_visit() {
    let e = engine();
    let now = t0();
    let due = now + 10 * DAY; // already inside 14 days: one reminder now, one at 3 days
    let out = e
        .ingest(
            &finding(
                "purifier-1",
                FindingKind::FilterDue {
                    slot: 0,
                    due_ts_ms: due,
                },
                now,
            ),
            now,
        )
        .expect("ingest");
    assert_eq!(out.reminders.len(), 2);
    let first = e
        .read(|c| reminders::get(c, out.reminders[0]))
        .expect("get")
        .expect("r");
    assert_eq!(first.status, "sent");
    let done = e.done(first.id, now + HOUR).expect("done");
    assert_eq!(done.status, "awaiting_confirmation");
    assert_eq!(
        e.tick(due).expect("tick").visits_opened,
        0,
        "the homeowner acted"
    );
    assert_eq!(
        e.filters("purifier-1").expect("filters")[0].state,
        "claimed"
    );
    e.cartridge_replaced("purifier-1", 0, 1, due + HOUR)
        .expect("replaced");
    let r = e
        .read(|c| reminders::get(c, first.id))
        .expect("get")
        .expect("r");
    assert_eq!(r.status, "done");
    assert_eq!(
        e.filters("purifier-1").expect("filters")[0].state,
        "replaced"
    );
}

#[test]
fn snooze_resends_later_and_book_opens_a_ticket() {
    let e = engine();
    let now = t0();
    let out = e
        .ingest(&finding("toilet-1", FindingKind::InletClog, now), now)
        .expect("ingest");
    let id = out.reminders[0];
    e.snooze(id, 24, now).expect("snooze");
    assert_eq!(e.tick(now + 23 * HOUR).expect("tick").reminders_sent, 0);
    assert_eq!(e.tick(now + 24 * HOUR).expect("tick").reminders_sent, 1);
    let tid = e.book(id, now + 25 * HOUR).expect("book");
    let t = ticket(&e, tid);
    assert_eq!(
        (t.source.as_str(), t.fault_key.as_str()),
        ("homeowner", "inlet_clog")
    );
    assert_eq!(
        e.book(id, now + 26 * HOUR).expect("book again"),
        tid,
        "booking twice opens no duplicate"
    );
}

#[test]
fn kpis_measure_ack_resolve_first_time_fix_breach_and_backlog_and_warn() {
    let e = engine();
    let now = t0();
    let (a, _) = e
        .ingest(&finding("toilet-1", FindingKind::LongWash, now), now)
        .expect("a")
        .ticket
        .expect("t");
    let (b, _) = e
        .ingest(&finding("toilet-2", FindingKind::Leak, now), now)
        .expect("b")
        .ticket
        .expect("t");
    e.transition(a, TicketStatus::InProgress, "tech", None, now + HOUR)
        .expect("ack a");
    e.transition(a, TicketStatus::Resolved, "tech", None, now + 5 * HOUR)
        .expect("resolve a");
    e.transition(b, TicketStatus::InProgress, "tech", None, now + 5 * HOUR)
        .expect("ack b");
    e.tick(now + 6 * HOUR).expect("tick: b breached");
    let k = e.kpi(now - DAY, now + DAY).expect("kpi");
    assert_eq!(k.tickets, 2);
    assert_eq!(k.mean_ack_ms, Some(3.0 * HOUR as f64));
    assert_eq!(k.mean_resolve_ms, Some(5.0 * HOUR as f64));
    assert_eq!(k.first_time_fix_rate, Some(1.0));
    assert_eq!(k.deadline_breach_rate, Some(0.5));
    assert_eq!(k.open_backlog, 1);
    assert!(
        k.warning.is_some(),
        "3 h mean response exceeds the 2 h threshold"
    );
}

#[test]
fn outbox_rows_commit_or_roll_back_with_the_change_that_caused_them() {
    let e = engine();
    let now = t0();
    // A failing transaction leaves neither the reminder nor its outbox rows.
    let err = e.write(|tx| {
        maintenance::outbox::enqueue(
            tx,
            OutChannel::Webhook,
            WEBHOOK,
            "ticket.opened",
            &serde_json::json!({}),
            now,
        )?;
        Err::<(), _>(maintenance::Error::invalid("test", "forced rollback"))
    });
    assert!(err.is_err());
    assert!(outbox_rows(&e).is_empty());
    // An unknown device's leak is not dropped: it waits in the unclaimed queue with a ticket
    // (its webhook goes out) but no homeowner message, as there is no homeowner on record.
    let ghost = e
        .ingest(&finding("ghost", FindingKind::Leak, now), now)
        .expect("queued as unclaimed");
    assert!(ghost.unclaimed && ghost.reminders.is_empty());
    assert_eq!(outbox_rows(&e).len(), 1, "the ticket webhook only");
    e.ingest(&finding("toilet-1", FindingKind::Leak, now), now)
        .expect("ingest");
    let rows = outbox_rows(&e);
    assert_eq!(
        rows.len(),
        4,
        "ghost's webhook, then push + sms + ticket webhook"
    );
    let keys: std::collections::HashSet<_> = rows.iter().map(|r| r.idem_key.clone()).collect();
    assert_eq!(keys.len(), 4, "each row has its own idempotency key");
}

#[test]
fn a_forecast_interval_in_the_evidence_is_kept_with_the_filter_schedule() {
    let e = engine();
    let now = t0();
    let due = now + 30 * DAY;
    let kind = FindingKind::FilterDue {
        slot: 1,
        due_ts_ms: due,
    };
    let mut f = finding("purifier-1", kind, now);
    f.evidence = serde_json::json!({ "due_ts_ms": due, "lo_ts_ms": due - 3 * DAY, "hi_ts_ms": due + 4 * DAY });
    e.ingest(&f, now).expect("ingest");
    let s = e.filters("purifier-1").expect("filters");
    let slot = s.iter().find(|s| s.slot == 1).expect("slot 1");
    assert_eq!(
        (slot.due_ts_ms, slot.lo_ts_ms, slot.hi_ts_ms),
        (due, Some(due - 3 * DAY), Some(due + 4 * DAY))
    );
    // A finding without an interval (e.g. from the API) leaves none.
    let kind0 = FindingKind::FilterDue {
        slot: 0,
        due_ts_ms: due,
    };
    e.ingest(&finding("purifier-1", kind0, now), now)
        .expect("ingest");
    let s = e.filters("purifier-1").expect("filters");
    assert_eq!(
        s.iter().find(|s| s.slot == 0).map(|s| s.lo_ts_ms),
        Some(None)
    );
}

#[test]
fn audit_retention_deletes_only_rows_older_than_the_cutoff() {
    let e = engine();
    e.write(|tx| {
        for ts in [100_i64, 200, 300, 400] {
            tx.execute(
                "INSERT INTO audit (ts_ms, actor, action, resource) VALUES (?1, 'agent:a', 'read', 'home:h1')",
                maintenance::store::params![ts],
            )?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(e.delete_audit_before(300).unwrap(), 2);
    assert_eq!(e.delete_audit_before(300).unwrap(), 0);
    let left: i64 = e
        .read(|c| {
            Ok(
                c.query_row("SELECT count(*) FROM audit WHERE ts_ms >= 300", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .unwrap();
    assert_eq!(left, 2);
}
