//! A local webhook receiver for the end-to-end tests: an HTTP server on a free loopback
//! port that answers 204 to every POST, checks each request's HMAC signature against the
//! configured secret, and records per path how many times each idempotency key arrived.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode, Uri};
use maintenance::dispatch;

/// What the receiver has seen.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Deliveries per (path, idempotency key).
    pub by_key: BTreeMap<(String, String), u32>,
    /// Requests whose signature did not verify against the secret.
    pub bad_signatures: u32,
}

impl Received {
    /// Deliveries per idempotency key, whatever the path.
    pub fn per_key(&self) -> BTreeMap<String, u32> {
        let mut out: BTreeMap<String, u32> = BTreeMap::new();
        for ((_, key), n) in &self.by_key {
            *out.entry(key.clone()).or_default() += n;
        }
        out
    }

    /// The keys delivered to `path` with how often each arrived.
    pub fn on_path(&self, path: &str) -> BTreeMap<String, u32> {
        self.by_key
            .iter()
            .filter(|((p, _), _)| p == path)
            .map(|((_, k), n)| (k.clone(), *n))
            .collect()
    }
}

/// The running receiver (its thread ends with the test process).
pub struct WebhookReceiver {
    /// The TCP port (127.0.0.1).
    pub port: u16,
    seen: Arc<Mutex<Received>>,
}

impl WebhookReceiver {
    /// Starts a receiver verifying signatures made with `secret`.
    pub fn start(secret: &str) -> anyhow::Result<WebhookReceiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let seen: Arc<Mutex<Received>> = Arc::default();
        let (shared, secret) = (Arc::clone(&seen), secret.as_bytes().to_vec());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let app = axum::Router::new().fallback(
                    move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                        let (shared, secret) = (Arc::clone(&shared), secret.clone());
                        async move {
                            let header = |name: &str| {
                                headers
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            };
                            let ts: i64 = header(dispatch::TIMESTAMP_HEADER).parse().unwrap_or(-1);
                            let signed = dispatch::verify(
                                &secret,
                                ts,
                                &body,
                                &header(dispatch::SIGNATURE_HEADER),
                            );
                            let mut r = shared.lock().unwrap_or_else(|e| e.into_inner());
                            if !signed {
                                r.bad_signatures += 1;
                                return StatusCode::UNAUTHORIZED;
                            }
                            let key = (uri.path().to_owned(), header(dispatch::IDEMPOTENCY_HEADER));
                            *r.by_key.entry(key).or_default() += 1;
                            StatusCode::NO_CONTENT
                        }
                    },
                );
                if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                    let _ = axum::serve(listener, app).await;
                }
            });
        });
        Ok(WebhookReceiver { port, seen })
    }

    /// Its base URL, `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A copy of what arrived so far.
    pub fn received(&self) -> Received {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
