//! Remote commands: the lifecycle (queued → sent → acknowledged → done | failed | expired),
//! the policy's automatic commands (a critical leak closes the inlet valve on models with
//! one and says so on the ticket and to the homeowner; an inlet clog is confirmed by a
//! diagnostic), the API with its roles, and the audit log.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use maintenance::commands::{self, CommandState, NewCommand, RESEND_AFTER_MS};
use maintenance::templates::Template;
use maintenance::{tickets, AppState, Engine, FindingKind, Role};
use protocol::message::{
    CommandKind, CommandResult, CommandStatus, Diagnostics, FaultCode, FaultState, LoggedFault,
};
use serde_json::{json, Value};
use tower::ServiceExt;

fn answer(
    device: &str,
    cmd_id: i64,
    status: CommandStatus,
    d: Option<Diagnostics>,
) -> CommandResult {
    CommandResult {
        v: 1,
        device_id: device.try_into().expect("id"),
        cmd_id: u32::try_from(cmd_id).expect("u32"),
        ts: t0(),
        status,
        diagnostics: d,
    }
}

fn diagnostics(clog: bool) -> Diagnostics {
    let mut active = heapless::Vec::new();
    let mut log = heapless::Vec::new();
    if clog {
        active.push(FaultCode::InletClog).expect("room");
        log.push(LoggedFault {
            code: FaultCode::InletClog,
            state: FaultState::Raised,
            ts: t0() - HOUR,
        })
        .expect("room");
    }
    Diagnostics {
        active,
        log,
        boot_id: 3,
        sessions: 40,
        water_ml: 1_000_000,
        storage_failures: 0,
        sensors_ok: true,
        flow_permille: Some(if clog { 480 } else { 990 }),
        pressure_kpa: Some(310.0),
        inlet_valve_open: Some(true),
    }
}

fn audit(e: &Engine) -> Vec<(String, String, String)> {
    e.audit_log(1000)
        .expect("audit")
        .into_iter()
        .map(|a| (a.actor, a.action, a.resource))
        .collect()
}

#[test]
fn a_critical_leak_on_a_valve_model_closes_the_valve_and_says_so() {
    let e = engine();
    let now = t0();
    let out = e
        .ingest(&finding("toilet-1", FindingKind::Leak, now - 60_000), now)
        .expect("ingest");
    let (tid, _) = out.ticket.expect("ticket");
    let cid = out.command.expect("the policy queued a command");
    let c = e.command(cid).expect("read").expect("command");
    assert_eq!(
        (
            c.kind.as_str(),
            c.status,
            c.ticket_id,
            c.requested_by.as_str()
        ),
        (
            "close_inlet_valve",
            CommandState::Queued,
            Some(tid),
            "policy"
        )
    );
    // On the ticket, and in the homeowner's message.
    let history = notes(&e, tid);
    assert!(
        history
            .iter()
            .any(|n| n.contains("closing the water inlet valve automatically")),
        "{history:?}"
    );
    let rs = e
        .read(|conn| maintenance::reminders::list(conn, Some("h1")))
        .expect("reminders");
    assert_eq!(rs[0].template, Template::LeakValveClosing);
    let (_, body) = rs[0]
        .template
        .render(maintenance::templates::Lang::En, &rs[0].vars);
    assert!(body.contains("close its water inlet valve"), "{body}");
    // Dispatched, then the device answers: done, evidence on the ticket, audited.
    let due = e.commands_due(now + 1_000, 10).expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].command.command, CommandKind::CloseInletValve);
    assert_eq!(i64::from(due[0].command.cmd_id), cid);
    e.command_sent(cid, now + 1_000).expect("sent");
    assert!(e.commands_due(now + 2_000, 10).expect("due").is_empty());
    let mut closed = diagnostics(false);
    closed.inlet_valve_open = Some(false);
    let c = e
        .command_result(
            "toilet-1",
            &answer("toilet-1", cid, CommandStatus::Ok, Some(closed)),
            now + 3_000,
        )
        .expect("result");
    assert_eq!(c.status, CommandState::Done);
    assert_eq!(
        (c.sent_ts_ms, c.ack_ts_ms, c.done_ts_ms),
        (Some(now + 1_000), Some(now + 3_000), Some(now + 3_000))
    );
    assert!(
        c.outcome
            .as_deref()
            .is_some_and(|o| o.contains("inlet valve closed")),
        "{c:?}"
    );
    let ev = e
        .read(|conn| tickets::evidence(conn, tid))
        .expect("evidence");
    let last = &ev.last().expect("evidence").2;
    assert_eq!(
        (
            last["source"].as_str(),
            last["command"].as_str(),
            last["status"].as_str()
        ),
        (Some("command"), Some("close_inlet_valve"), Some("ok"))
    );
    assert_eq!(last["diagnostics"]["inlet_valve_open"], json!(false));
    let a = audit(&e);
    assert!(
        a.iter().any(|(who, what, res)| who == "policy"
            && what == "command.queue"
            && res.contains(&format!("command/{cid}:close_inlet_valve"))),
        "{a:?}"
    );
    assert!(
        a.iter()
            .any(|(who, what, _)| who == "device:toilet-1" && what == "command.done"),
        "{a:?}"
    );
    // A redelivered answer changes nothing; another device's answer is not this command's.
    let again = e
        .command_result(
            "toilet-1",
            &answer("toilet-1", cid, CommandStatus::Failed, None),
            now + 4_000,
        )
        .expect("redelivery");
    assert_eq!(again.status, CommandState::Done);
    assert!(matches!(
        e.command_result(
            "toilet-2",
            &answer("toilet-2", cid, CommandStatus::Ok, None),
            now
        ),
        Err(maintenance::Error::NotFound { .. })
    ));
}

#[test]
fn a_leak_on_a_model_without_a_valve_gets_the_plain_alert_and_no_command() {
    let e = engine();
    let now = t0();
    let out = e
        .ingest(&finding("shower-1", FindingKind::Leak, now - 60_000), now)
        .expect("ingest");
    assert!(out.ticket.is_some() && out.command.is_none(), "{out:?}");
    let rs = e
        .read(|conn| maintenance::reminders::list(conn, Some("h1")))
        .expect("reminders");
    assert_eq!(rs[0].template, Template::LeakAlert);
    assert!(e.commands_due(now, 10).expect("due").is_empty());
}

#[test]
fn an_inlet_clog_is_confirmed_by_a_diagnostic_before_anyone_is_sent() {
    let e = engine();
    let now = t0();
    let out = e
        .ingest(
            &finding("purifier-1", FindingKind::InletClog, now - HOUR),
            now,
        )
        .expect("ingest");
    assert!(out.ticket.is_none(), "self-service: no visit");
    let cid = out.command.expect("a diagnostic");
    let c = e.command(cid).expect("read").expect("command");
    assert_eq!(c.kind, "report_diagnostics");
    e.command_sent(cid, now).expect("sent");
    let c = e
        .command_result(
            "purifier-1",
            &answer(
                "purifier-1",
                cid,
                CommandStatus::Ok,
                Some(diagnostics(true)),
            ),
            now + 1_000,
        )
        .expect("result");
    let o = c.outcome.expect("outcome");
    assert!(
        o.contains("inlet clog confirmed") && o.contains("480"),
        "{o}"
    );
    assert_eq!(
        c.result.expect("diagnostics")["active"],
        json!(["inlet_clog"])
    );
    // A second finding of the same episode does not send another.
    let again = e
        .ingest(
            &finding("purifier-1", FindingKind::InletClog, now - HOUR),
            now + 10 * 60_000,
        )
        .expect("ingest");
    assert!(
        again.command.is_none() || again.command == Some(cid),
        "{again:?}"
    );
}

#[test]
fn unanswered_commands_are_sent_again_then_expire_and_unsupported_ones_are_refused() {
    let e = engine();
    let now = t0();
    populate_ticketless(&e);
    let c = e
        .send_command(
            &NewCommand {
                device_id: "toilet-2",
                ticket_id: None,
                command: &CommandKind::SelfTest,
                requested_by: "agent:test",
                reason: Some("customer called"),
                ttl_ms: 5 * 60_000,
            },
            now,
        )
        .expect("queued");
    // The same kind while unfinished: the same command back.
    let twice = e
        .send_command(
            &NewCommand {
                device_id: "toilet-2",
                ticket_id: None,
                command: &CommandKind::SelfTest,
                requested_by: "agent:test",
                reason: None,
                ttl_ms: 5 * 60_000,
            },
            now,
        )
        .expect("queued");
    assert_eq!(twice.id, c.id);
    e.command_sent(c.id, now).expect("sent");
    assert!(e
        .commands_due(now + RESEND_AFTER_MS - 1, 10)
        .expect("due")
        .is_empty());
    assert_eq!(
        e.commands_due(now + RESEND_AFTER_MS, 10)
            .expect("due")
            .len(),
        1,
        "sent again"
    );
    // The device took it on, then went quiet.
    let acked = e
        .command_result(
            "toilet-2",
            &answer("toilet-2", c.id, CommandStatus::Accepted, None),
            now + 1_000,
        )
        .expect("accepted");
    assert_eq!(
        (acked.status, acked.ack_ts_ms),
        (CommandState::Acknowledged, Some(now + 1_000))
    );
    let rep = e.tick(now + 5 * 60_000).expect("tick");
    assert_eq!(rep.commands_expired, 1);
    assert_eq!(
        e.command(c.id).expect("read").expect("c").status,
        CommandState::Expired
    );
    assert!(audit(&e)
        .iter()
        .any(|(_, what, _)| what == "command.expired"));
    // What the model cannot do is refused before it is queued.
    let refused = e.send_command(
        &NewCommand {
            device_id: "shower-1",
            ticket_id: None,
            command: &CommandKind::CloseInletValve,
            requested_by: "agent:test",
            reason: None,
            ttl_ms: 60_000,
        },
        now,
    );
    assert!(
        matches!(refused, Err(maintenance::Error::Invalid { .. })),
        "{refused:?}"
    );
    let failed = e
        .send_command(
            &NewCommand {
                device_id: "purifier-1",
                ticket_id: None,
                command: &CommandKind::ResetCartridge { slot: 1 },
                requested_by: "agent:test",
                reason: None,
                ttl_ms: 60_000,
            },
            now,
        )
        .expect("queued");
    let f = e
        .command_result(
            "purifier-1",
            &answer("purifier-1", failed.id, CommandStatus::Unsupported, None),
            now,
        )
        .expect("answer");
    assert_eq!(
        (f.status, f.result_status.as_deref()),
        (CommandState::Failed, Some("unsupported"))
    );
    let _ = commands::DEFAULT_TTL_MS;
}

/// Nothing to add: the common fixture registered the homes and devices.
fn populate_ticketless(_e: &Engine) {}

fn notes(e: &Engine, tid: i64) -> Vec<String> {
    e.read(|c| {
        let mut stmt = c.prepare(
            "SELECT note FROM ticket_history WHERE ticket_id = ?1 AND note IS NOT NULL ORDER BY id",
        )?;
        let rows = stmt
            .query_map([tid], |r| r.get(0))?
            .collect::<maintenance::store::Result<Vec<String>>>()?;
        Ok(rows)
    })
    .expect("history")
}

async fn call(
    app: axum::Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .expect("request");
    let resp = app.oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn agents_send_diagnostics_from_a_ticket_and_homeowners_cannot() {
    let e = Arc::new(engine());
    let now = t0();
    let agent = e.issue_token(Role::Agent, None, now).expect("token");
    let owner = e
        .issue_token(Role::Homeowner, Some("h1"), now)
        .expect("token");
    let out = e
        .ingest(
            &finding("toilet-1", FindingKind::HeaterFault, now - HOUR),
            now,
        )
        .expect("ingest");
    let (tid, _) = out.ticket.expect("ticket");
    let app = || {
        axum::Router::new().nest(
            "/api",
            maintenance::router(AppState::with_clock(e.clone(), Arc::new(move || now))),
        )
    };
    let uri = format!("/api/tickets/{tid}/commands");
    let (status, c) = call(
        app(),
        "POST",
        &uri,
        &agent,
        Some(json!({"command": "report_diagnostics", "reason": "before a visit"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(
        (c["status"].as_str(), c["ticket_id"].as_i64()),
        (Some("queued"), Some(tid))
    );
    let (status, _) = call(
        app(),
        "POST",
        &uri,
        &owner,
        Some(json!({"command": "report_diagnostics"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, err) = call(
        app(),
        "POST",
        &uri,
        &agent,
        Some(json!({"command": "explode"})),
    )
    .await;
    assert!(status.is_client_error(), "{status} {err}");
    let (status, list) = call(app(), "GET", &uri, &agent, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let (status, list) = call(app(), "GET", "/api/commands?status=queued", &agent, None).await;
    assert_eq!(
        (status, list[0]["kind"].as_str()),
        (StatusCode::OK, Some("report_diagnostics"))
    );
    let (status, _) = call(app(), "GET", "/api/devices/toilet-1/commands", &owner, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Sent by the agent, audited under the agent's label.
    let label = e
        .authenticate(&agent, now)
        .expect("auth")
        .expect("principal")
        .label;
    assert!(
        audit(&e).iter().any(|(who, what, res)| *who == label
            && what == "command.queue"
            && res.contains("report_diagnostics")),
        "{:?}",
        audit(&e)
    );
}
