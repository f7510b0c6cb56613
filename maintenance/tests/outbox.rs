//! Delivery without loss: the dispatcher against a local webhook receiver (a tiny axum
//! server on 127.0.0.1:0) that fails first and honours idempotency keys; HMAC signatures;
//! undelivered rows surviving a restart.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;
use maintenance::dispatch::{self, DeliveryConfig, Dispatcher, RawDeliveryConfig};
use maintenance::outbox;
use maintenance::{Engine, EngineConfig, FindingKind, Policy};

const SECRET: &str = "test-secret-0123456789";

#[derive(Default)]
struct Receiver {
    /// Requests seen, including failed ones.
    requests: u32,
    /// Requests to fail with 500 *after* processing (a lost acknowledgement).
    fail_next: u32,
    /// Times each idempotency key was processed.
    processed: HashMap<String, u32>,
    /// Every signature verified.
    bad_signatures: u32,
    /// Paths hit.
    paths: Vec<String>,
}

type Shared = Arc<Mutex<Receiver>>;

async fn receive(
    State(s): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let key = header(dispatch::IDEMPOTENCY_HEADER);
    let ts: i64 = header(dispatch::TIMESTAMP_HEADER).parse().unwrap_or(-1);
    let sig = header(dispatch::SIGNATURE_HEADER);
    let mut r = s.lock().unwrap_or_else(|e| e.into_inner());
    r.requests += 1;
    r.paths.push(path);
    if !dispatch::verify(SECRET.as_bytes(), ts, &body, &sig) {
        r.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    // Honour the key: process a key once, acknowledge repeats without processing.
    r.processed.entry(key).or_insert(1);
    if r.fail_next > 0 {
        r.fail_next -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

async fn start_receiver(state: Shared) -> String {
    let app = Router::new()
        .route("/{*path}", post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn delivery(base: &str, max_attempts: u32) -> DeliveryConfig {
    DeliveryConfig::try_from(RawDeliveryConfig {
        push_url: Some(format!("{base}/push")),
        sms_url: Some(format!("{base}/sms")),
        smtp: None,
        hmac_secret: SECRET.into(),
        backoff_base_s: 5,
        backoff_max_s: 60,
        max_attempts,
        timeout_s: 5,
    })
    .expect("delivery config")
}

fn engine_to(base: &str, path: Option<&std::path::Path>) -> Arc<Engine> {
    let cfg = EngineConfig {
        policy: Policy::default(),
        ticket_webhooks: vec![format!("{base}/tickets")],
    };
    let e = match path {
        Some(p) => Engine::open(p, cfg),
        None => Ok(common::new_engine(cfg)),
    }
    .expect("engine");
    Arc::new(e)
}

#[tokio::test]
async fn failures_are_retried_with_backoff_and_each_key_is_processed_once() {
    let state: Shared = Arc::default();
    state.lock().expect("lock").fail_next = 3;
    let base = start_receiver(state.clone()).await;
    let e = engine_to(&base, None);
    populate(&e);
    let now = t0();
    e.ingest(&finding("toilet-1", FindingKind::Leak, now), now)
        .expect("ingest");
    let d = Dispatcher::new(e.clone(), delivery(&base, 10)).expect("dispatcher");

    let rep = d.run_once(now, 100).await.expect("run");
    assert_eq!(
        (rep.delivered, rep.retrying),
        (0, 3),
        "the receiver processed but failed all three"
    );
    assert_eq!(
        d.run_once(now + 4_999, 100).await.expect("run").delivered,
        0,
        "backoff not over"
    );
    let rep = d.run_once(now + 5_000, 100).await.expect("run");
    assert_eq!(rep.delivered, 3);
    assert_eq!(
        d.run_once(now + 600_000, 100).await.expect("run"),
        Default::default(),
        "nothing left"
    );

    let r = state.lock().expect("lock");
    assert_eq!(r.requests, 6);
    assert_eq!(r.bad_signatures, 0, "every HMAC signature verifies");
    assert_eq!(r.processed.len(), 3);
    assert!(
        r.processed.values().all(|n| *n == 1),
        "each idempotency key processed once"
    );
    let keys: Vec<String> = e
        .read(|c| outbox::list(c, 10))
        .expect("rows")
        .into_iter()
        .map(|r| r.idem_key)
        .collect();
    assert!(keys.iter().all(|k| r.processed.contains_key(k)));
    let mut paths = r.paths.clone();
    paths.sort();
    paths.dedup();
    assert_eq!(paths, vec!["push", "sms", "tickets"]);
}

#[tokio::test]
async fn undelivered_rows_survive_a_restart() {
    let state: Shared = Arc::default();
    let base = start_receiver(state.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("maintenance.db");
    let now = t0();
    {
        let e = engine_to(&base, Some(&db));
        populate(&e);
        e.ingest(&finding("toilet-1", FindingKind::Leak, now), now)
            .expect("ingest");
        // Crash before any delivery: the engine and its connection are dropped.
    }
    let e = engine_to(&base, Some(&db));
    let d = Dispatcher::new(e.clone(), delivery(&base, 10)).expect("dispatcher");
    assert_eq!(
        d.run_once(now + 1_000, 100).await.expect("run").delivered,
        3
    );
    assert_eq!(e.read(outbox::counts).expect("counts"), (0, 3, 0));
    assert_eq!(state.lock().expect("lock").processed.len(), 3);
}

#[tokio::test]
async fn a_row_that_keeps_failing_goes_dead_after_max_attempts() {
    let state: Shared = Arc::default();
    state.lock().expect("lock").fail_next = 100;
    let base = start_receiver(state.clone()).await;
    let e = engine_to(&base, None);
    populate(&e);
    let now = t0();
    e.ingest(&finding("toilet-1", FindingKind::InletClog, now), now)
        .expect("ingest"); // push + sms
    let d = Dispatcher::new(e.clone(), delivery(&base, 2)).expect("dispatcher");
    assert_eq!(d.run_once(now, 100).await.expect("run").retrying, 2);
    assert_eq!(d.run_once(now + 60_000, 100).await.expect("run").dead, 2);
    assert_eq!(e.read(outbox::counts).expect("counts"), (0, 0, 2));
    assert_eq!(d.backoff(1).as_secs(), 5);
    assert_eq!(d.backoff(3).as_secs(), 20);
    assert_eq!(d.backoff(30).as_secs(), 60, "capped");
}

#[test]
fn signatures_fail_on_any_change() {
    let sig = dispatch::sign(b"k", 42, b"{\"a\":1}");
    assert!(dispatch::verify(b"k", 42, b"{\"a\":1}", &sig));
    assert!(!dispatch::verify(b"k", 43, b"{\"a\":1}", &sig));
    assert!(!dispatch::verify(b"k", 42, b"{\"a\":2}", &sig));
    assert!(!dispatch::verify(b"other", 42, b"{\"a\":1}", &sig));
}
