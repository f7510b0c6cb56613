//! The HTTP listener: hyper's HTTP/1 connection driver with limits that `axum::serve`
//! does not set, so slow or idle clients cannot hold the endpoint:
//!
//! - a header-read timeout ([`HEADER_TIMEOUT`]) that also bounds keep-alive idleness
//!   (hyper starts it whenever a connection waits for a request head);
//! - a cap on open connections: at the cap the *oldest* connection is closed to admit a
//!   new one, so a flood of half-open connections (slowloris) cannot starve new clients;
//! - the client address in each request's extensions (`ConnectInfo<SocketAddr>`), for the
//!   per-address limit on failed authentications.
//!
//! A whole request (body included) is bounded separately by the router's timeout layer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tower::Service;

/// Time a client has to send a complete request head, and the longest idle keep-alive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a connection gets to finish its request at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Open connections, oldest first, each with the signal that closes it.
#[derive(Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, oneshot::Sender<()>>>,
    evicted: AtomicU64,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, oneshot::Sender<()>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves `app` on `listener` until `shutdown` changes, with at most `max_connections`
/// connections open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    metrics: Arc<crate::metrics::Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let conns = Arc::new(Connections::default());
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_id = 0u64;
    let mut last_warning = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
            // Reap finished connection tasks so the set stays as small as the open connections.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: wait a little rather than spin.
                tracing::warn!(error = %e, "HTTP accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let (close_tx, close_rx) = oneshot::channel();
        {
            let mut open = conns.lock();
            while open.len() >= max_connections {
                match open.pop_first() {
                    Some((_, tx)) => {
                        let _ = tx.send(());
                        conns.evicted.fetch_add(1, Ordering::Relaxed);
                        metrics
                            .http_connections_evicted
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    None => break,
                }
            }
            open.insert(id, close_tx);
        }
        if conns.evicted.load(Ordering::Relaxed) > 0
            && last_warning.elapsed() > Duration::from_secs(10)
        {
            last_warning = std::time::Instant::now();
            tracing::warn!(
                max_connections,
                evicted_total = conns.evicted.load(Ordering::Relaxed),
                "HTTP connection cap reached: the oldest connections were closed to admit new ones."
            );
        }
        let app = app.clone();
        let conns = Arc::clone(&conns);
        let shutdown = shutdown.clone();
        tasks.spawn(connection(stream, peer, app, close_rx, shutdown, conns, id));
    }
    // Stop accepting; let open connections finish their request, briefly.
    let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            next = tasks.join_next() => if next.is_none() { break },
        }
    }
    tasks.abort_all();
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    close: oneshot::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
    conns: Arc<Connections>,
    id: u64,
) {
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move { app.call(req.map(axum::body::Body::new)).await }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error.");
            }
        }
        _ = close => {
            tracing::debug!(%peer, "HTTP connection closed at the connection cap.");
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
        }
    }
    conns.lock().remove(&id);
}
