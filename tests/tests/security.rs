//! Security of the HTTP endpoint against the real gateway process (issue #13, items 1 and 2):
//! * every gateway endpoint with data answers 401 without an operator token; only
//!   `/health/live` is open; the bearer scheme is case-insensitive;
//! * a foreign `Host` (DNS rebinding) or `Origin` is refused, even with a token;
//! * `nosniff` everywhere, `no-store` on data, a CSP without `unsafe-inline` on pages;
//! * the dead-letter list is capped and paged, raw bytes come one item at a time, audited;
//! * revoked, expired, rotated-away and former-owner tokens are 401;
//! * failed authentications are audited and, after ten a minute, refused with 429 per address;
//! * strings set through the API are bounded;
//! * 1 200 half-open connections (slowloris) neither stop `/health/live` nor stay open.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e_tests::*;
use maintenance::{Engine, EngineConfig, Policy, Role};
use protocol::message::Model;
use reqwest::blocking::Client;
use serde_json::{json, Value};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn url(gw: &GatewayProcess, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", gw.http_port)
}

/// `(status, JSON body or Null)` of `GET path` with an optional raw `Authorization` value.
fn get(http: &Client, gw: &GatewayProcess, path: &str, auth: Option<&str>) -> (u16, Value) {
    let mut req = http.get(url(gw, path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn call(
    http: &Client,
    gw: &GatewayProcess,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let req = match method {
        "GET" => http.get(url(gw, path)),
        "POST" => http.post(url(gw, path)),
        other => panic!("method {other}"),
    }
    .bearer_auth(token);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let resp = req
        .send()
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

const GATEWAY_ENDPOINTS: &[&str] = &[
    "/health",
    "/metrics",
    "/dead-letters",
    "/dead-letters?limit=1000",
    "/dead-letters/counts",
    "/dead-letters/1/raw",
    "/devices/toilet-00000",
    "/fleet/online",
];

fn engine(db: &std::path::Path) -> Engine {
    Engine::open(
        db,
        EngineConfig {
            policy: Policy::default(),
            ticket_webhooks: Vec::new(),
        },
    )
    .unwrap()
}

#[test]
fn gateway_endpoints_need_a_token_and_a_known_host_and_answer_with_safe_headers() {
    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "gw-sec-1",
        "",
    )
    .unwrap();
    let http = client();
    let bearer = format!("Bearer {}", gw.token);

    // Unknown tokens come from 127.0.0.2, so neither address reaches the limit of 10 failures.
    let other = Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for path in GATEWAY_ENDPOINTS {
        let (status, body) = get(&http, &gw, path, None);
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{path}: {body}");
        let (status, body) = get(
            &other,
            &gw,
            path,
            Some("Bearer mt_0000000000000000000000000000000000000000000000000"),
        );
        assert_eq!(status, 401, "{path} with an unknown token: {body}");
        let (status, body) = get(&http, &gw, path, Some(&bearer));
        // Nothing stored yet: no dead letter 1, no device.
        let want = if path.contains("/raw") || path.contains("/devices/") {
            404
        } else {
            200
        };
        assert_eq!(status, want, "{path} with the operator token: {body}");
    }
    // Only liveness is open, and it says nothing more.
    let (status, body) = get(&http, &gw, "/health/live", None);
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    // RFC 7235: the scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let (status, _) = get(
            &http,
            &gw,
            "/metrics",
            Some(&format!("{scheme} {}", gw.token)),
        );
        assert_eq!(status, 200, "scheme {scheme}");
    }
    // An oversized list asked for is capped.
    let (_, page) = get(&http, &gw, "/dead-letters?limit=1000000", Some(&bearer));
    assert_eq!(page["limit"], 100, "{page}");

    // DNS rebinding: a foreign Host is refused even with a valid token; so is a foreign Origin.
    for host in ["evil.example", "evil.example:80", "127.0.0.1.evil.example"] {
        let resp = http
            .get(url(&gw, "/metrics"))
            .header("host", host)
            .header("authorization", &bearer)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 421, "Host {host}");
        let resp = http
            .get(url(&gw, "/health/live"))
            .header("host", host)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 421, "Host {host} on /health/live");
    }
    for (origin, want) in [
        ("http://evil.example", 403),
        ("null", 403),
        (&*format!("http://127.0.0.1:{}", gw.http_port), 200),
        (&*format!("http://localhost:{}", gw.http_port), 200),
    ] {
        let resp = http
            .get(url(&gw, "/metrics"))
            .header("origin", origin)
            .header("authorization", &bearer)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "Origin {origin}");
    }
    let resp = http
        .get(url(&gw, "/metrics"))
        .header("host", format!("localhost:{}", gw.http_port))
        .header("authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "localhost is a default name");

    // Headers: nosniff on every answer (data, pages, assets, errors), no-store on data,
    // a CSP without unsafe-inline on pages.
    for (path, auth) in [
        ("/metrics", Some(&bearer)),
        ("/dead-letters", Some(&bearer)),
        ("/metrics", None),
        ("/health/live", None),
        ("/", None),
        ("/board", None),
        ("/static/api.js", None),
    ] {
        let mut req = http.get(url(&gw, path));
        if let Some(a) = auth {
            req = req.header("authorization", a.as_str());
        }
        let resp = req.send().unwrap();
        let h = resp.headers();
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{path}"
        );
        let cache = h
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        if path.starts_with("/metrics") || path.starts_with("/dead-letters") {
            assert_eq!(cache, "no-store", "{path}");
        } else {
            assert!(!cache.is_empty(), "{path} sets a Cache-Control");
        }
        if path == "/" || path == "/board" {
            let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
            assert!(
                !csp.contains("unsafe-inline") && csp.contains("default-src 'self'"),
                "{csp}"
            );
        }
    }
}

#[test]
fn failed_authentications_are_audited_and_limited_per_client_address() {
    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "gw-sec-2",
        "",
    )
    .unwrap();
    let http = client();
    let bearer = format!("Bearer {}", gw.token);
    let start = Instant::now();
    for i in 0..10 {
        let (status, _) = get(
            &http,
            &gw,
            "/dead-letters",
            Some(&format!("Bearer mt_guess{i}")),
        );
        assert_eq!(status, 401, "guess {i}");
    }
    // The eleventh attempt within the minute is refused before any token is looked at,
    // a valid one included.
    let (status, body) = get(&http, &gw, "/dead-letters", Some("Bearer mt_guess10"));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_failures")),
        "{body}"
    );
    let (status, _) = get(&http, &gw, "/metrics", Some(&bearer));
    assert_eq!(status, 429);
    assert!(
        start.elapsed() < Duration::from_secs(50),
        "the test must run inside the minute"
    );
    // Another client address is not affected.
    let other = Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (status, _) = get(&other, &gw, "/metrics", Some(&bearer));
    assert_eq!(status, 200, "127.0.0.2 has its own count");
    // The audit trail: ten failures and one rate-limit entry from 127.0.0.1, none for the valid call.
    let audit = engine(&gw.data_dir.join("maintenance.db"))
        .audit_log(1000)
        .unwrap();
    let from = |action: &str| {
        audit
            .iter()
            .filter(|a| a.action == action && a.actor == "anonymous:127.0.0.1")
            .count()
    };
    assert_eq!(from("auth_failed"), 10, "{audit:?}");
    assert_eq!(from("auth_rate_limited"), 1, "{audit:?}");
    assert!(audit
        .iter()
        .filter(|a| a.action == "auth_failed")
        .all(|a| a.resource == "/dead-letters"));
}

#[test]
fn revoked_expired_rotated_and_former_owner_tokens_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    let devices = vec![("toilet-00000".to_owned(), Model::Toilet)];
    let admin = registry::register_devices(&db, &devices).unwrap();
    let broker = Mosquitto::start().unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "gw-sec-3",
        &registry::maintenance_toml(&db),
    )
    .unwrap();
    let http = client();
    let config = gw.config_path().to_owned();
    let cli = |args: &[&str]| gateway_cli(&config, args).unwrap();
    let ok = |token: &str, path: &str| call(&http, &gw, "GET", path, token, None).0;

    // CLI: create, list, revoke.
    let op = cli(&["tokens", "create", "--role", "operator", "--ttl-days", "1"]);
    assert_eq!(ok(&op, "/metrics"), 200);
    let list = cli(&["tokens", "list"]);
    let id_of = |list: &str, state: &str| -> Vec<String> {
        list.lines()
            .filter(|l| l.contains(" operator ") && l.trim_end().ends_with(state))
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    };
    let active = id_of(&list, "active");
    assert_eq!(active.len(), 2, "the harness's and this one:\n{list}");
    assert!(!list.contains(&op), "the list never shows a secret");
    for id in &active {
        cli(&["tokens", "revoke", id]);
    }
    assert_eq!(ok(&op, "/metrics"), 401, "revoked");
    assert_eq!(ok(&gw.token, "/metrics"), 401, "revoked");
    assert_eq!(id_of(&cli(&["tokens", "list"]), "revoked").len(), 2);

    // CLI: rotate. The old token stops, the new one works.
    let old = cli(&["tokens", "create", "--role", "agent"]);
    let list = cli(&["tokens", "list"]);
    let old_id = list
        .lines()
        .find(|l| l.contains(" agent ") && l.trim_end().ends_with("active"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let new = cli(&["tokens", "rotate", &old_id]);
    assert_ne!(new, old);
    assert_eq!(ok(&old, "/metrics"), 401, "rotated away");
    assert_eq!(ok(&new, "/metrics"), 200);
    assert_eq!(
        ok(&new, "/api/tickets"),
        200,
        "an agent's token works on /api too"
    );
    assert!(
        gateway_cli(&config, &["tokens", "rotate", &old_id]).is_err(),
        "a revoked token cannot be rotated"
    );

    // Expired: a token issued with a life of 1 ms.
    let expired = engine(&db)
        .issue_token_for(Role::Operator, None, 1, gateway::clock::now_ms())
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(ok(&expired.token, "/metrics"), 401, "expired");

    // Admin API: issue with a life, list, revoke, rotate.
    let (status, issued) = call(
        &http,
        &gw,
        "POST",
        "/api/tokens",
        &admin,
        Some(json!({"role": "operator", "ttl_days": 1})),
    );
    assert_eq!(status, 200, "{issued}");
    let t = issued["token"].as_str().unwrap().to_owned();
    let id = issued["id"].as_str().unwrap().to_owned();
    let day = issued["expires_ts_ms"].as_i64().unwrap() - gateway::clock::now_ms();
    assert!((86_000_000..=86_400_000).contains(&day), "{issued}");
    assert_eq!(ok(&t, "/dead-letters"), 200);
    let (status, _) = call(
        &http,
        &gw,
        "POST",
        "/api/tokens",
        &admin,
        Some(json!({"role": "operator", "ttl_days": 400})),
    );
    assert_eq!(status, 422, "at most 365 days");
    let (_, listed) = call(&http, &gw, "GET", "/api/tokens", &admin, None);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id && x["state"] == "active"),
        "{listed}"
    );
    assert!(!listed.to_string().contains(&t), "never the secret");
    let (status, rotated) = call(
        &http,
        &gw,
        "POST",
        &format!("/api/tokens/{id}/rotate"),
        &admin,
        None,
    );
    assert_eq!(status, 200, "{rotated}");
    let t2 = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!(ok(&t, "/metrics"), 401);
    assert_eq!(ok(&t2, "/metrics"), 200);
    let (status, revoked) = call(
        &http,
        &gw,
        "POST",
        &format!("/api/tokens/{}/revoke", rotated["id"].as_str().unwrap()),
        &admin,
        None,
    );
    assert_eq!(
        (status, revoked["state"].as_str()),
        (200, Some("revoked")),
        "{revoked}"
    );
    assert_eq!(ok(&t2, "/metrics"), 401);
    // Only admins manage tokens.
    assert_eq!(call(&http, &gw, "GET", "/api/tokens", &new, None).0, 403);

    // A homeowner token is bound to the owner: re-registering the home to someone else ends it.
    let (_, owner1) = call(
        &http,
        &gw,
        "POST",
        "/api/tokens",
        &admin,
        Some(json!({"role": "homeowner", "subject": "h0"})),
    );
    let owner1 = owner1["token"].as_str().unwrap().to_owned();
    let (status, home) = call(&http, &gw, "GET", "/api/homes/h0", &owner1, None);
    assert_eq!(status, 200, "{home}");
    assert_eq!(ok(&owner1, "/metrics"), 403, "a homeowner is no operator");
    // The same owner re-saved (a new address) keeps the token.
    let mut same = home.clone();
    same["address"] = json!("1 New Street");
    assert_eq!(
        call(&http, &gw, "POST", "/api/homes", &admin, Some(same.clone())).0,
        200
    );
    assert_eq!(ok(&owner1, "/api/homes/h0"), 200);
    let mut sold = same;
    sold["owner"] = json!({"name": "New Owner", "phone": "13900001111"});
    assert_eq!(
        call(&http, &gw, "POST", "/api/homes", &admin, Some(sold)).0,
        200
    );
    let (status, body) = call(&http, &gw, "GET", "/api/homes/h0", &owner1, None);
    assert_eq!(
        status, 401,
        "the former owner reads nothing of the new one: {body}"
    );
    let (_, owner2) = call(
        &http,
        &gw,
        "POST",
        "/api/tokens",
        &admin,
        Some(json!({"role": "homeowner", "subject": "h0"})),
    );
    let (status, home) = call(
        &http,
        &gw,
        "GET",
        "/api/homes/h0",
        owner2["token"].as_str().unwrap(),
        None,
    );
    assert_eq!(
        (status, home["owner"]["name"].as_str()),
        (200, Some("New Owner"))
    );
    let (_, listed) = call(&http, &gw, "GET", "/api/tokens", &admin, None);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["subject"] == "h0" && x["state"] == "owner_changed"),
        "{listed}"
    );
}

#[test]
fn dead_letters_are_paged_with_a_cap_raw_bytes_come_singly_and_strings_are_bounded() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    let admin = registry::register_devices(&db, &[]).unwrap();
    let broker = Mosquitto::start().unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "gw-sec-4",
        &registry::maintenance_toml(&db),
    )
    .unwrap();
    let http = client();

    // 150 rejected messages of 20 kB each.
    let messages: Vec<(String, Vec<u8>)> = (0..150)
        .map(|i| {
            let mut p = format!("{{\"secret\":\"wifi-key-{i}\",\"pad\":\"").into_bytes();
            p.resize(20_000, b'x');
            ("fixtures/toilet-00001/telemetry".to_owned(), p)
        })
        .collect();
    let first = messages[0].1.clone();
    assert_eq!(
        publish_all(broker.port, "pub-sec-4", messages, None, None).unwrap(),
        150
    );
    wait_until(Duration::from_secs(30), "150 dead letters", || {
        let v = gw.get_json("/dead-letters/counts").ok()?;
        (v.as_object()?
            .values()
            .filter_map(Value::as_u64)
            .sum::<u64>()
            >= 150)
            .then_some(())
    })
    .unwrap();

    let resp = http
        .get(url(&gw, "/dead-letters?limit=1000"))
        .bearer_auth(&gw.token)
        .send()
        .unwrap();
    let text = resp.text().unwrap();
    assert!(
        text.len() < 100_000,
        "a page is small: {} bytes",
        text.len()
    );
    let page: Value = serde_json::from_str(&text).unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 100, "capped at 100");
    assert!(items
        .iter()
        .all(|d| d.get("payload").is_none() && d["payload_len"] == 20_000));
    assert!(!text.contains("wifi-key"), "no payload bytes in a list");
    let next = page["next_before"].as_i64().unwrap();
    let (_, rest) = get(
        &http,
        &gw,
        &format!("/dead-letters?before={next}&limit=100"),
        Some(&format!("Bearer {}", gw.token)),
    );
    assert_eq!(rest["items"].as_array().unwrap().len(), 50);
    assert!(rest["next_before"].is_null(), "{}", rest["next_before"]);
    let (status, body) = get(
        &http,
        &gw,
        "/dead-letters?reason=../x",
        Some(&format!("Bearer {}", gw.token)),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_reason"))
    );

    // Raw bytes of one item, on request, audited.
    let oldest = rest["items"].as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    let resp = http
        .get(url(&gw, &format!("/dead-letters/{oldest}/raw")))
        .bearer_auth(&gw.token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.bytes().unwrap().to_vec(), first);
    let audit = engine(&db).audit_log(100).unwrap();
    assert!(
        audit.iter().any(|a| a.action == "read_dead_letter_raw"
            && a.resource == format!("dead-letter/{oldest}")
            && a.actor.starts_with("operator:")),
        "{audit:?}"
    );

    // Strings set through the API are bounded, with a JSON error naming the field.
    let tech =
        |name: String| json!({"id": "t1", "name": name, "region": "sh", "skills": ["plumbing"]});
    // An oversized body is read to its end, so its sender gets the answer, not a reset
    // connection (the server closing with unread bytes): several times in a row.
    for _ in 0..5 {
        let (status, body) = call(
            &http,
            &gw,
            "POST",
            "/api/technicians",
            &admin,
            Some(tech("x".repeat(1_900_000))),
        );
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("body_too_large")),
            "{body}"
        );
    }
    let (status, body) = call(
        &http,
        &gw,
        "POST",
        "/api/technicians",
        &admin,
        Some(tech("é".repeat(101))),
    );
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("name")),
        "{body}"
    );
    assert_eq!(
        call(
            &http,
            &gw,
            "POST",
            "/api/technicians",
            &admin,
            Some(tech("é".repeat(100)))
        )
        .0,
        200
    );
    let (status, body) = call(
        &http,
        &gw,
        "POST",
        "/api/technicians",
        &admin,
        Some(json!({"id": "t2", "name": "T", "region": "sh", "skills": vec!["s"; 17]})),
    );
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("skills")),
        "{body}"
    );
    let mut home = serde_json::to_value(registry::home(7)).unwrap();
    home["address"] = json!("a".repeat(201));
    let (status, body) = call(&http, &gw, "POST", "/api/homes", &admin, Some(home));
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("address")),
        "{body}"
    );
    let (status, body) = call(
        &http,
        &gw,
        "POST",
        "/api/tickets/1/transition",
        &admin,
        Some(json!({"to": "in_progress", "note": "n".repeat(4001)})),
    );
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("note")),
        "{body}"
    );
}

/// Opens `n` connections that send half a request head and never finish it.
fn half_open(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            let _ = s.write_all(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
            s
        })
        .collect()
}

#[test]
fn half_open_connections_neither_stop_the_listener_nor_stay_open() {
    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "gw-sec-5",
        "",
    )
    .unwrap();
    // A fresh connection per request: each must get through the crowd of half-open ones.
    let http = Client::builder()
        .timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    let mut slow = half_open(gw.http_port, 1200);
    // Liveness answers at once, many times over, while 1 200 half-open connections exist.
    for i in 0..20 {
        let resp = http
            .get(url(&gw, "/health/live"))
            .send()
            .unwrap_or_else(|e| panic!("/health/live {i} under 1200 half-open connections: {e}"));
        assert_eq!(resp.status().as_u16(), 200);
    }
    // A second wave: still answering.
    slow.extend(half_open(gw.http_port, 600));
    assert_eq!(
        http.get(url(&gw, "/health/live"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let m = gw.metrics().unwrap();
    assert_eq!(m["mqtt_connects"].as_u64().map(|n| n >= 1), Some(true));
    // 1 800 half-open connections against the default cap of 512: the evictions are counted
    // (some of the first wave may already have timed out, hence the margin).
    let evicted = m["http_connections_evicted"].as_u64().unwrap_or(0);
    assert!(
        evicted >= 1_000,
        "connections closed at the cap are counted: {evicted}"
    );
    let (_, exposition) = gw.get("/metrics", None).unwrap();
    assert!(
        exposition.contains("http_connections_evicted"),
        "the Prometheus exposition has the eviction counter"
    );

    // Every half-open connection is closed by the server: at the cap (oldest first) or at
    // the header-read timeout (10 s). Bounded wait: 30 s for all.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut open = slow.len();
    for s in &mut slow {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        s.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    open -= 1;
                    break;
                }
                Ok(_) => continue, // an error answer before the close
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => {
                    // Reset by the server: closed too.
                    open -= 1;
                    break;
                }
            }
        }
    }
    assert_eq!(open, 0, "connections the server left open after 30 s");
    assert_eq!(
        http.get(url(&gw, "/health/live"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}
