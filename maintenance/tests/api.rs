//! The REST API through `oneshot` (no server): the OpenAPI document matches the routes,
//! roles confine homeowners and technicians, personal data is masked and audited, and
//! errors are JSON with stable codes.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use common::*;
use http_body_util::BodyExt;
use maintenance::api::ROUTES;
use maintenance::{AppState, Engine, FindingKind, Role};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Fixture {
    engine: Arc<Engine>,
    clock: Arc<AtomicI64>,
    admin: String,
    agent: String,
    h1: String,
    h2: String,
}

impl Fixture {
    fn new() -> Fixture {
        let engine = Arc::new(engine());
        let now = t0();
        let tok = |role, sub: Option<&str>| engine.issue_token(role, sub, now).expect("token");
        Fixture {
            admin: tok(Role::Admin, None),
            agent: tok(Role::Agent, None),
            h1: tok(Role::Homeowner, Some("h1")),
            h2: tok(Role::Homeowner, Some("h2")),
            clock: Arc::new(AtomicI64::new(now)),
            engine,
        }
    }

    fn tech(&self, id: &str) -> String {
        self.engine
            .issue_token(Role::Technician, Some(id), t0())
            .expect("token")
    }

    fn app(&self) -> Router {
        let clock = self.clock.clone();
        let state = AppState::with_clock(
            self.engine.clone(),
            Arc::new(move || clock.load(Ordering::SeqCst)),
        );
        // Mounted as the gateway will.
        Router::new().nest("/api", maintenance::router(state))
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let resp = self.app().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn raw(&self, method: &str, uri: &str, token: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request");
        let resp = self.app().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn audit_actions(&self) -> Vec<(String, String, String)> {
        self.engine
            .audit_log(1000)
            .expect("audit")
            .into_iter()
            .map(|a| (a.actor, a.action, a.resource))
            .collect()
    }
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_routes_and_every_route_is_mounted() {
    let fx = Fixture::new();
    let (status, doc) = fx.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("ops").keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), format!("/api{p}")))
        .collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes, "openapi.json and api::ROUTES differ");
    for (method, path) in ROUTES {
        let uri = format!("/api{}", path.replace("{id}", "999"));
        let body = (*method == "post").then(|| json!({}));
        let (status, body) = fx
            .call(&method.to_uppercase(), &uri, Some(&fx.admin), body)
            .await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        if status == StatusCode::NOT_FOUND {
            assert!(
                body["error"]["code"].is_string(),
                "{method} {path} is not mounted"
            );
        }
    }
}

#[tokio::test]
async fn a_homeowner_cannot_reach_another_home_on_any_endpoint() {
    let fx = Fixture::new();
    let now = t0();
    let out = fx
        .engine
        .ingest(&finding("toilet-2", FindingKind::Leak, now), now)
        .expect("ingest");
    let (t2, _) = out.ticket.expect("ticket");
    let r2 = out.reminders[0];
    fx.engine
        .transition(
            t2,
            maintenance::tickets::TicketStatus::Resolved,
            "agent",
            None,
            now,
        )
        .expect("resolve");
    let forbidden: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/homes".into(), None),
        ("GET", "/api/homes/h2".into(), None),
        ("GET", "/api/homes/h2/devices".into(), None),
        ("GET", "/api/devices/toilet-2".into(), None),
        ("GET", "/api/devices/toilet-2/filters".into(), None),
        ("GET", format!("/api/tickets/{t2}"), None),
        ("GET", "/api/tickets?home_id=h2".into(), None),
        (
            "POST",
            format!("/api/tickets/{t2}/rate"),
            Some(json!({"score": 1})),
        ),
        (
            "POST",
            format!("/api/tickets/{t2}/transition"),
            Some(json!({"to": "closed"})),
        ),
        ("POST", format!("/api/tickets/{t2}/assign"), Some(json!({}))),
        ("GET", "/api/reminders?home_id=h2".into(), None),
        ("GET", format!("/api/reminders/{r2}"), None),
        (
            "POST",
            format!("/api/reminders/{r2}/snooze"),
            Some(json!({"hours": 2})),
        ),
        ("POST", format!("/api/reminders/{r2}/done"), None),
        ("POST", format!("/api/reminders/{r2}/book"), None),
        (
            "POST",
            "/api/homes".into(),
            Some(serde_json::to_value(home("h2", "x", "13900000000")).expect("json")),
        ),
        (
            "POST",
            "/api/devices".into(),
            Some(
                json!({"id": "toilet-2", "home_id": "h1", "model": "toilet", "installed_ts_ms": 0}),
            ),
        ),
        ("GET", "/api/technicians".into(), None),
        ("GET", "/api/kpi".into(), None),
        ("GET", "/api/audit".into(), None),
        ("POST", "/api/tokens".into(), Some(json!({"role": "admin"}))),
        (
            "POST",
            "/api/findings".into(),
            Some(serde_json::to_value(finding("toilet-2", FindingKind::Leak, now)).expect("json")),
        ),
        ("GET", "/api/outbox".into(), None),
    ];
    for (method, uri, body) in forbidden {
        let (status, resp) = fx.call(method, &uri, Some(&fx.h1), body).await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{method} {uri}: {status} {resp}"
        );
    }
    // Lists are confined to the caller's home.
    let (_, tickets) = fx.call("GET", "/api/tickets", Some(&fx.h1), None).await;
    assert_eq!(tickets.as_array().map(Vec::len), Some(0));
    let (_, reminders) = fx.call("GET", "/api/reminders", Some(&fx.h1), None).await;
    assert_eq!(reminders.as_array().map(Vec::len), Some(0));
    // While the owner of h2 sees their own.
    let (status, mine) = fx
        .call("GET", &format!("/api/tickets/{t2}"), Some(&fx.h2), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(mine["contact"].is_null() && mine["address"].is_null());
    let (status, _) = fx
        .call(
            "POST",
            &format!("/api/tickets/{t2}/rate"),
            Some(&fx.h2),
            Some(json!({"score": 4})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = fx.call("GET", "/api/homes/h2", Some(&fx.h2), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(fx.audit_actions().contains(&(
        "homeowner:h2".into(),
        "read_home".into(),
        "home/h2".into()
    )));
}

#[tokio::test]
async fn a_technician_sees_a_masked_phone_and_the_address_only_while_the_visit_is_open() {
    let fx = Fixture::new();
    let now = t0();
    let (id, _) = fx
        .engine
        .ingest(&finding("toilet-1", FindingKind::Leak, now), now)
        .expect("ingest")
        .ticket
        .expect("t");
    let assignee = fx
        .engine
        .read(|c| maintenance::tickets::must_get(c, id))
        .expect("t")
        .assignee
        .expect("assigned");
    let other = if assignee == "tech-a" {
        "tech-b"
    } else {
        "tech-a"
    };
    let (tech, stranger) = (fx.tech(&assignee), fx.tech(other));
    let uri = format!("/api/tickets/{id}");

    let (status, t) = fx.call("GET", &uri, Some(&tech), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["contact"]["phone"], "138****1234");
    assert_eq!(t["address"], "h1 Road 1, Pudong");
    let (status, _) = fx.call("GET", &uri, Some(&stranger), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not assigned to them");
    let (_, list) = fx.call("GET", "/api/tickets", Some(&stranger), None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(0));

    for to in ["in_progress", "resolved"] {
        let (status, body) = fx
            .call(
                "POST",
                &format!("{uri}/transition"),
                Some(&tech),
                Some(json!({"to": to})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = fx
        .call(
            "POST",
            &format!("{uri}/transition"),
            Some(&tech),
            Some(json!({"to": "closed"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "closing is the agent's job");
    let (_, t) = fx.call("GET", &uri, Some(&tech), None).await;
    assert!(t["address"].is_null(), "visit over: no address");
    assert_eq!(t["contact"]["phone"], "138****1234");

    fx.clock.store(now + 3 * HOUR, Ordering::SeqCst);
    let (status, _) = fx
        .call(
            "POST",
            &format!("{uri}/transition"),
            Some(&fx.agent),
            Some(json!({"to": "closed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, t) = fx.call("GET", &uri, Some(&fx.agent), None).await;
    assert_eq!(
        t["contact"]["phone"], "138****1234",
        "staff see the number masked by default"
    );
    // A reveal needs a reason, and is audited with it.
    let reveal = format!("{uri}/reveal");
    let (status, _) = fx
        .call(
            "POST",
            &reveal,
            Some(&fx.agent),
            Some(json!({"reason": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, r) = fx
        .call(
            "POST",
            &reveal,
            Some(&fx.agent),
            Some(json!({"reason": "call about the visit"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["phone"], "13812341234", "{r}");
    let (_, log) = fx.call("GET", "/api/audit", Some(&fx.admin), None).await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "reveal_phone"
                && e["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("call about the visit")),
        "{log}"
    );
    assert!(t["address"].is_string(), "not purged yet");
    fx.engine.tick(now + 27 * HOUR).expect("tick");
    let (_, t) = fx.call("GET", &uri, Some(&fx.agent), None).await;
    assert!(t["address"].is_null(), "purged 24 h after closing");

    // Every personal-data read left an audit entry with who, what and when.
    let audit = fx.engine.audit_log(1000).expect("audit");
    let tech_reads = audit
        .iter()
        .filter(|a| a.actor == format!("technician:{assignee}") && a.action == "read_ticket")
        .count();
    assert_eq!(tech_reads, 2);
    assert!(audit.iter().any(|a| a.actor.starts_with("agent:")
        && a.resource == format!("ticket/{id}")
        && a.ts_ms == now + 3 * HOUR));
    let (status, via_api) = fx.call("GET", "/api/audit", Some(&fx.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(via_api.as_array().map(Vec::len), Some(audit.len()));
    // Listing homes is a personal-data read too.
    fx.call("GET", "/api/homes", Some(&fx.agent), None).await;
    assert!(fx
        .audit_actions()
        .iter()
        .any(|(_, action, _)| action == "list_homes"));
}

#[tokio::test]
async fn errors_are_json_with_stable_codes() {
    let fx = Fixture::new();
    let (status, e) = fx.call("GET", "/api/tickets", None, None).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, e) = fx.call("GET", "/api/tickets", Some("nope"), None).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, e) = fx.raw("POST", "/api/homes", &fx.admin, "{not json").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let (status, e) = fx
        .call("GET", "/api/tickets/abc", Some(&fx.admin), None)
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_path"))
    );
    let (status, e) = fx
        .call("GET", "/api/homes/BAD!", Some(&fx.admin), None)
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed"))
    );
    let mut bad = serde_json::to_value(home("h3", "shanghai", "13800000000")).expect("json");
    bad["tz"] = json!("Mars/Olympus");
    let (status, e) = fx
        .call("POST", "/api/homes", Some(&fx.admin), Some(bad))
        .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("tz"))
    );
    let (status, e) = fx
        .call("GET", "/api/tickets?status=bogus", Some(&fx.admin), None)
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    let now = t0();
    let (id, _) = fx
        .engine
        .ingest(&finding("toilet-1", FindingKind::MainBoardFault, now), now)
        .expect("i")
        .ticket
        .expect("t");
    let (status, e) = fx
        .call(
            "POST",
            &format!("/api/tickets/{id}/transition"),
            Some(&fx.agent),
            Some(json!({"to": "closed"})),
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_transition"))
    );
    let tech = fx.tech("tech-a");
    let (status, e) = fx.call("GET", "/api/homes", Some(&tech), None).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, e) = fx
        .call("GET", "/api/tickets/424242", Some(&fx.admin), None)
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn a_homeowner_snoozes_completes_and_books_through_the_api() {
    let fx = Fixture::new();
    let now = t0();
    let out = fx
        .engine
        .ingest(&finding("toilet-1", FindingKind::InletClog, now), now)
        .expect("ingest");
    let r = out.reminders[0];
    let (status, body) = fx
        .call(
            "POST",
            &format!("/api/reminders/{r}/snooze"),
            Some(&fx.h1),
            Some(json!({"hours": 0})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("hours"))
    );
    let (status, body) = fx
        .call(
            "POST",
            &format!("/api/reminders/{r}/snooze"),
            Some(&fx.h1),
            Some(json!({"hours": 12})),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("scheduled"))
    );
    let (status, body) = fx
        .call(
            "POST",
            &format!("/api/reminders/{r}/book"),
            Some(&fx.h1),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ticket = body["ticket_id"].as_i64().expect("ticket id");
    let (status, t) = fx
        .call("GET", &format!("/api/tickets/{ticket}"), Some(&fx.h1), None)
        .await;
    assert_eq!(
        (status, t["source"].as_str()),
        (StatusCode::OK, Some("homeowner"))
    );
    let out = fx
        .engine
        .ingest(&finding("toilet-1", FindingKind::Unused7Days, now), now)
        .expect("ingest");
    let (status, body) = fx
        .call(
            "POST",
            &format!("/api/reminders/{}/done", out.reminders[0]),
            Some(&fx.h1),
            None,
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("done"))
    );
}

#[tokio::test]
async fn me_tells_each_role_who_it_is_and_fleet_is_for_agents_only() {
    let fx = Fixture::new();
    let (status, me) = fx.call("GET", "/api/me", Some(&fx.h1), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (me["role"].as_str(), me["subject"].as_str()),
        (Some("homeowner"), Some("h1")),
        "{me}"
    );
    let (_, me) = fx.call("GET", "/api/me", Some(&fx.agent), None).await;
    assert_eq!(
        (me["role"].as_str(), me["subject"].is_null()),
        (Some("agent"), true),
        "{me}"
    );
    assert_eq!(
        fx.call("GET", "/api/me", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );

    let now = t0();
    fx.engine
        .ingest(&finding("toilet-1", FindingKind::Leak, now), now)
        .expect("ingest");
    fx.engine
        .ingest(&finding("toilet-1", FindingKind::Leak, now), now + 1000)
        .expect("ingest");
    let (status, f) = fx
        .call("GET", "/api/fleet?days=7", Some(&fx.agent), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{f}");
    assert_eq!(f["findings"].as_array().map(Vec::len), Some(7), "{f}");
    assert_eq!(f["findings"][6], 2, "two findings today: {f}");
    assert_eq!(f["tickets_opened"][6], 1, "{f}");
    assert_eq!(f["active_by_priority"]["critical"], 1, "{f}");
    assert_eq!(f["worst_devices"][0]["device_id"], "toilet-1", "{f}");
    assert_eq!(f["worst_devices"][0]["region"], "shanghai", "{f}");
    assert!(!f.to_string().contains("1381234"), "no personal data: {f}");
    for token in [&fx.h1, &fx.tech("tech-a")] {
        assert_eq!(
            fx.call("GET", "/api/fleet", Some(token), None).await.0,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        fx.call("GET", "/api/fleet?days=0", Some(&fx.agent), None)
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Lists carry the home's region for the board's filter.
    let (_, list) = fx.call("GET", "/api/tickets", Some(&fx.agent), None).await;
    assert_eq!(list[0]["region"], "shanghai", "{list}");
}

#[tokio::test]
async fn every_list_is_paged_with_a_hard_cap_and_a_next_link() {
    let fx = Fixture::new();
    for i in 0..5 {
        fx.engine
            .put_home(&home(&format!("p{i}"), "shanghai", "13800000000"))
            .expect("home");
    }
    let total = fx
        .engine
        .read(|c| maintenance::registry::list_homes(c, maintenance::page::Page::default()))
        .expect("homes")
        .items
        .len();
    assert!(total >= 7, "{total} homes");
    // Follow the Link headers three at a time: every home exactly once, in order.
    let mut uri = "/api/homes?limit=3".to_owned();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let req = Request::builder()
            .uri(&uri)
            .header("authorization", format!("Bearer {}", fx.agent))
            .body(Body::empty())
            .expect("request");
        let resp = fx.app().oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        let next = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let next_offset = resp.headers().get("x-next-offset").cloned();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let page: Value = serde_json::from_slice(&bytes).expect("json");
        let ids: Vec<String> = page
            .as_array()
            .expect("a JSON array")
            .iter()
            .filter_map(|h| h["id"].as_str().map(str::to_owned))
            .collect();
        assert!(ids.len() <= 3, "{ids:?}");
        seen.extend(ids);
        pages += 1;
        match next {
            Some(link) => {
                assert!(next_offset.is_some(), "X-Next-Offset beside Link");
                assert!(link.ends_with("rel=\"next\""), "{link}");
                uri = link
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .expect("uri")
                    .to_owned();
                assert!(uri.starts_with("/api/homes?"), "{uri}");
            }
            None => {
                assert!(next_offset.is_none());
                break;
            }
        }
        assert!(pages < 10, "the pages end");
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "each home once, in id order");
    assert_eq!(seen.len(), total);
    assert_eq!(pages, total.div_ceil(3));

    // Caps: a limit of 0 or above 1 000 and an offset past 1 000 000 are refused.
    for uri in [
        "/api/homes?limit=0",
        "/api/technicians?limit=1001",
        "/api/tickets?limit=5000",
        "/api/reminders?offset=2000000",
    ] {
        let (status, e) = fx.call("GET", uri, Some(&fx.agent), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("limit") || m.contains("offset")),
            "{uri}: {e}"
        );
    }
    for uri in [
        "/api/technicians?limit=1",
        "/api/tickets?limit=1&offset=0",
        "/api/reminders?limit=1",
    ] {
        let (status, list) = fx.call("GET", uri, Some(&fx.agent), None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {list}");
        assert!(
            list.as_array().is_some_and(|a| a.len() <= 1),
            "{uri}: {list}"
        );
    }
}

#[tokio::test]
async fn incidents_are_listed_for_agents_and_a_home_takes_a_site_through_the_api() {
    let fx = Fixture::new();
    let now = t0();
    let (status, body) = fx
        .call(
            "POST",
            "/api/homes",
            Some(&fx.admin),
            Some(json!({
                "id": "h3", "address": "Tower 7, flat 3", "region": "shanghai",
                "tz": "Asia/Shanghai", "lang": "en", "channels": ["app"], "site": "tower-7",
                "owner": {"name": "Owner 3", "phone": "13800000003"}
            })),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = fx
        .call(
            "POST",
            "/api/homes",
            Some(&fx.admin),
            Some(json!({
                "id": "h4", "address": "x", "region": "shanghai", "tz": "Asia/Shanghai",
                "lang": "en", "channels": ["app"], "site": "Tower 7",
                "owner": {"name": "Owner 4", "phone": "13800000004"}
            })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("site")),
        "{body}"
    );
    let (_, home) = fx.call("GET", "/api/homes/h3", Some(&fx.admin), None).await;
    assert_eq!(home["site"], "tower-7", "{home}");

    for device in ["toilet-1", "shower-1"] {
        fx.engine
            .ingest(&finding(device, FindingKind::Unused7Days, now), now)
            .expect("ingest");
    }
    let (status, list) = fx
        .call("GET", "/api/incidents?open=true", Some(&fx.agent), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(
        (
            items[0]["scope"].as_str(),
            items[0]["scope_id"].as_str(),
            items[0]["kind"].as_str()
        ),
        (Some("home"), Some("h1"), Some("unused_7_days"))
    );
    assert_eq!(
        items[0]["devices"],
        json!(["shower-1", "toilet-1"]),
        "by time, then id"
    );
    assert_eq!(
        fx.call("GET", "/api/incidents", Some(&fx.h1), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        fx.call("GET", "/api/incidents?limit=0", Some(&fx.agent), None)
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}
