//! Layers around every answer of the HTTP endpoint (API, pages and the gateway's own):
//!
//! - `Host` and `Origin` must name one of the configured host names (`http.allowed_hosts`),
//!   so a page rebound to 127.0.0.1 by DNS (DNS rebinding) or another site's script
//!   cannot read anything: a foreign `Host` is 421, a foreign `Origin` 403;
//! - a request (body included) gets [`REQUEST_TIMEOUT`], then 408;
//! - `X-Content-Type-Options: nosniff` on every answer, and `Cache-Control: no-store`
//!   on every answer that does not set its own (every JSON answer: they may hold
//!   personal data).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;

/// The longest a request may take, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Wraps `app` in the host check, the request timeout and the security headers.
pub fn harden(app: Router, allowed_hosts: Vec<String>) -> Router {
    let hosts = Arc::new(allowed_hosts);
    app.layer(axum::middleware::from_fn(timeout))
        .layer(axum::middleware::from_fn_with_state(hosts, check_host))
        .layer(axum::middleware::from_fn(headers))
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    super::error_body(status, code, message)
}

async fn check_host(State(hosts): State<Arc<Vec<String>>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    match host {
        Some(h) if host_allowed(&h, &hosts) => {}
        Some(h) => {
            tracing::warn!(host = %h.chars().take(100).collect::<String>(), "Request with a foreign Host header refused (DNS rebinding?).");
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                "this Host is not one the gateway answers to (http.allowed_hosts)",
            );
        }
        None => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "host_missing",
                "a Host header is required",
            )
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .and_then(|u| {
                let host = u.host_str()?.to_owned();
                Some(match u.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                })
            })
            .is_some_and(|h| host_allowed(&h, &hosts));
        if !ok {
            tracing::warn!(origin = ?origin, "Request from a foreign Origin refused.");
            return refuse(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "cross-origin requests are not accepted",
            );
        }
    }
    next.run(req).await
}

/// True if `value` (`host` or `host:port`, as in a `Host` header) names an allowed host:
/// an entry equal to it, or an entry equal to its host part.
pub fn host_allowed(value: &str, allowed: &[String]) -> bool {
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return false;
    }
    let host_only = if v.starts_with('[') {
        match v.find(']') {
            Some(end) => &v[..=end],
            None => return false,
        }
    } else {
        match v.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return false,
            None => v.as_str(),
        }
    };
    allowed.iter().any(|a| *a == v || a == host_only)
}

async fn timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => refuse(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request took too long",
        ),
    }
}

async fn headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if !h.contains_key(header::REFERRER_POLICY) {
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn hosts_match_with_or_without_port_and_nothing_else() {
        let allowed: Vec<String> = ["localhost", "127.0.0.1", "[::1]", "gw.example:8443"]
            .map(String::from)
            .to_vec();
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "gw.example:8443",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "gw.example:80",
            "localhost:x",
            "[::1",
            "",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }
}
