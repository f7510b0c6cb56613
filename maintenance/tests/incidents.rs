//! Findings grouped per home and per site: a household away is one cleaning reminder naming
//! its fixtures, a building losing pressure is one site incident and one message per home.

mod common;

use common::*;
use maintenance::incidents::{self, Scope};
use maintenance::registry::Device;
use maintenance::templates::{Lang, Template};
use maintenance::{outbox, reminders, FindingKind};
use protocol::message::Model;

fn reminders_of(e: &maintenance::Engine, home: &str, kind: &str) -> Vec<reminders::Reminder> {
    e.read(|c| reminders::list(c, Some(home)))
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == kind)
        .collect()
}

/// Messages written to the outbox for one reminder (one per channel when sent).
fn messages_of(e: &maintenance::Engine, reminder: i64) -> usize {
    e.read(|c| outbox::list(c, 10_000))
        .unwrap()
        .iter()
        .filter(|m| m.payload["reminder_id"].as_i64() == Some(reminder))
        .count()
}

#[test]
fn a_household_away_gets_one_cleaning_reminder_naming_its_fixtures() {
    let e = engine();
    let t = t0();
    // h1's three fixtures go unused within five hours of each other; h2's toilet too.
    for (device, at) in [
        ("toilet-1", t),
        ("toilet-2", t + HOUR),
        ("shower-1", t + 2 * HOUR),
        ("purifier-1", t + 5 * HOUR),
    ] {
        let out = e
            .ingest(&finding(device, FindingKind::Unused7Days, at), at)
            .unwrap();
        assert!(out.incident.is_some(), "{device}: {out:?}");
    }
    let h1 = reminders_of(&e, "h1", "unused_7_days");
    assert_eq!(h1.len(), 1, "one reminder for the household: {h1:#?}");
    assert_eq!(h1[0].template, Template::CleaningReminderHome);
    assert_eq!(
        h1[0].vars["devices"],
        serde_json::json!(["toilet-1", "shower-1", "purifier-1"])
    );
    let (_, text) = h1[0].template.render(Lang::En, &h1[0].vars);
    assert!(
        text.contains("toilet-1, shower-1, purifier-1 have not been used"),
        "{text}"
    );
    assert!(messages_of(&e, h1[0].id) >= 1, "the home was told");
    let h2 = reminders_of(&e, "h2", "unused_7_days");
    assert_eq!(h2.len(), 1);
    assert_eq!(h2[0].template, Template::CleaningReminder, "a lone fixture");

    // A repeat of a finding sends nothing new.
    e.ingest(
        &finding("shower-1", FindingKind::Unused7Days, t + 2 * HOUR),
        t + 6 * HOUR,
    )
    .unwrap();
    assert_eq!(reminders_of(&e, "h1", "unused_7_days").len(), 1);

    // The incident closes when every fixture is used again; the next absence is a new one.
    let open = e.read(|c| incidents::list(c, true, 50)).unwrap();
    let home_incident = open
        .iter()
        .find(|i| i.scope == Scope::Home && i.scope_id == "h1")
        .expect("h1's incident");
    assert_eq!(home_incident.active_devices, 3);
    let back = t + 3 * DAY;
    for device in ["toilet-1", "shower-1"] {
        e.ingest(&cleared(device, FindingKind::Unused7Days, t), back)
            .unwrap();
    }
    assert_eq!(
        e.read(|c| incidents::list(c, true, 50))
            .unwrap()
            .iter()
            .filter(|i| i.scope_id == "h1")
            .count(),
        1,
        "open while the purifier is unused"
    );
    e.ingest(&cleared("purifier-1", FindingKind::Unused7Days, t), back)
        .unwrap();
    let closed = e.read(|c| incidents::list(c, false, 50)).unwrap();
    let closed = closed.iter().find(|i| i.id == home_incident.id).unwrap();
    assert_eq!(
        (closed.closed_ts_ms, closed.active_devices),
        (Some(back), 0)
    );
    let later = t + 12 * DAY;
    e.ingest(&finding("toilet-1", FindingKind::Unused7Days, later), later)
        .unwrap();
    assert_eq!(reminders_of(&e, "h1", "unused_7_days").len(), 2);
}

#[test]
fn a_building_losing_pressure_is_one_site_incident_and_one_message_per_home() {
    let e = engine();
    let t = t0();
    let mut tower = Vec::new();
    for i in 0..4 {
        let id = format!("tower-{i}");
        let mut h = home(&id, "shanghai", "13800000000");
        h.site = Some("tower-7".into());
        e.put_home(&h).unwrap();
        for (n, model) in [("toilet", Model::Toilet), ("shower", Model::Shower)] {
            let device = format!("{n}-t{i}");
            e.put_device(&Device {
                id: device.clone(),
                home_id: id.clone(),
                model,
                installed_ts_ms: t - 100 * DAY,
                cartridges: Vec::new(),
            })
            .unwrap();
            tower.push((id.clone(), device));
        }
    }
    // Every fixture of the building reports low pressure within 40 minutes.
    for (k, (_, device)) in tower.iter().enumerate() {
        let at = t + 5 * 60_000 * k as i64;
        e.ingest(&finding(device, FindingKind::LowInletPressure, at), at)
            .unwrap();
    }
    // A home elsewhere (no site), at the same time: its own.
    e.ingest(&finding("toilet-2", FindingKind::LowInletPressure, t), t)
        .unwrap();

    let mut templates = Vec::new();
    for i in 0..4 {
        let r = reminders_of(&e, &format!("tower-{i}"), "low_inlet_pressure");
        assert_eq!(r.len(), 1, "one message per home: {r:#?}");
        templates.push((r[0].template, r[0].vars["homes"].clone()));
    }
    assert_eq!(
        templates,
        vec![
            (Template::LowPressureGuide, serde_json::Value::Null),
            (Template::LowPressureSiteNotice, serde_json::json!(2)),
            (Template::LowPressureSiteNotice, serde_json::json!(3)),
            (Template::LowPressureSiteNotice, serde_json::json!(4)),
        ]
    );
    assert_eq!(reminders_of(&e, "h2", "low_inlet_pressure").len(), 1);

    let open = e.read(|c| incidents::list(c, true, 50)).unwrap();
    let site: Vec<_> = open.iter().filter(|i| i.scope == Scope::Site).collect();
    assert_eq!(site.len(), 1, "{open:#?}");
    assert_eq!(
        (
            site[0].scope_id.as_str(),
            site[0].kind.as_str(),
            site[0].homes.len(),
            site[0].devices.len()
        ),
        ("tower-7", "low_inlet_pressure", 4, 8)
    );
    assert!(open
        .iter()
        .any(|i| i.scope == Scope::Home && i.scope_id == "h2"));

    // Pressure back for all but one: the incident stays open, and the last home's message
    // (shared by its two fixtures) is not cancelled by the first of them clearing.
    for (_, device) in &tower[..7] {
        e.ingest(&cleared(device, FindingKind::LowInletPressure, t), t + DAY)
            .unwrap();
    }
    let still = e.read(|c| incidents::list(c, true, 50)).unwrap();
    assert_eq!(
        still
            .iter()
            .find(|i| i.scope == Scope::Site)
            .map(|i| i.active_devices),
        Some(1)
    );
    e.ingest(
        &cleared(&tower[7].1, FindingKind::LowInletPressure, t),
        t + DAY,
    )
    .unwrap();
    assert!(e
        .read(|c| incidents::list(c, true, 50))
        .unwrap()
        .iter()
        .all(|i| i.scope != Scope::Site));
}

#[test]
fn a_finding_after_the_window_opens_a_new_incident_and_ungrouped_kinds_stay_per_device() {
    let e = engine();
    let t = t0();
    e.ingest(&finding("toilet-1", FindingKind::Unused7Days, t), t)
        .unwrap();
    // Two days later, another fixture of the same home: not the same absence.
    let later = t + 2 * DAY;
    e.ingest(&finding("shower-1", FindingKind::Unused7Days, later), later)
        .unwrap();
    assert_eq!(reminders_of(&e, "h1", "unused_7_days").len(), 2);

    // A leak is per device: two leaks in one home are two tickets and two alerts.
    for device in ["toilet-1", "shower-1"] {
        let out = e.ingest(&finding(device, FindingKind::Leak, t), t).unwrap();
        assert_eq!(out.incident, None);
        assert!(out.ticket.is_some());
    }
    assert_eq!(reminders_of(&e, "h1", "leak").len(), 2);
}

#[test]
fn a_site_is_checked_and_kept_with_the_home() {
    let e = engine();
    let mut h = home("h9", "shanghai", "13800000000");
    h.site = Some("Tower 7!".into());
    assert!(e.put_home(&h).is_err(), "a site is an id");
    h.site = Some("tower-7".into());
    e.put_home(&h).unwrap();
    let got = e
        .read(|c| maintenance::registry::get_home(c, "h9"))
        .unwrap()
        .unwrap();
    assert_eq!(got.site.as_deref(), Some("tower-7"));
}
