//! InfluxDB over HTTP: the v1 API (`/write`, `/query`) and, as an option, the v2 API.
//!
//! Status handling follows InfluxDB's contract: 204 is durable; 400 means some
//! lines were refused (a "partial write" keeps the good ones), which is never
//! retried as a whole: the batch is bisected until each refused line is isolated
//! and handed back as rejected (re-sending good lines is harmless, writes are
//! idempotent). 413 splits the batch too. Everything else that fails — 5xx, 429,
//! 401/403, 404 (no such database), connection errors and time-outs — is
//! [`WriteError::Unavailable`]: the caller retries with backoff and spools meanwhile.

use std::time::Duration;

use reqwest::StatusCode;
use url::Url;

use super::line_protocol::encode_point;
use super::{Point, RejectedPoint, WriteError, WriteOutcome};

/// InfluxDB API flavour and its settings.
#[derive(Debug, Clone)]
pub enum InfluxApi {
    /// v1 `/write` (also served by 2.x and 3.x).
    V1 {
        /// Database.
        database: String,
        /// Retention policy.
        retention_policy: Option<String>,
        /// Basic-auth user.
        username: Option<String>,
        /// Basic-auth password.
        password: Option<String>,
    },
    /// v2 `/api/v2/write`.
    V2 {
        /// Organisation.
        org: String,
        /// Bucket.
        bucket: String,
        /// Token.
        token: String,
    },
}

/// Typed InfluxDB settings.
#[derive(Debug, Clone)]
pub struct InfluxConfig {
    /// Server URL.
    pub url: Url,
    /// API flavour.
    pub api: InfluxApi,
    /// Request time-out.
    pub timeout: Duration,
    /// Create the v1 database at start-up.
    pub create_database: bool,
}

/// An InfluxDB writer.
pub struct InfluxStore {
    http: reqwest::Client,
    write_url: Url,
    config: InfluxConfig,
}

/// Errors while setting up the InfluxDB connection.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The HTTP client could not be built.
    #[error("cannot build HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// InfluxDB refused the configured credentials.
    #[error("InfluxDB at {url} refused the credentials ({settings}): {detail}. Fix the setting; the gateway does not start with credentials that can never work.")]
    Credentials {
        /// Server URL.
        url: Url,
        /// The settings to fix.
        settings: &'static str,
        /// The server's answer.
        detail: String,
    },
    /// The database does not exist and may not be created.
    #[error("InfluxDB at {url} has no database {database:?} (influx.database), and influx.create_database is false. Create it, or set influx.create_database = true.")]
    MissingDatabase {
        /// Database name.
        database: String,
        /// Server URL.
        url: Url,
    },
    /// The database could not be created.
    #[error("cannot create InfluxDB database {database:?} at {url}: {detail}. Is InfluxDB running and are the credentials right?")]
    CreateDatabase {
        /// Database name.
        database: String,
        /// Server URL.
        url: Url,
        /// What went wrong.
        detail: String,
    },
}

enum Attempt {
    Stored,
    Refused(String),
    TooLarge,
}

impl InfluxStore {
    /// Builds the writer. Does not contact the server.
    #[allow(clippy::result_large_err, reason = "called once at start-up")]
    pub fn new(config: InfluxConfig) -> Result<InfluxStore, SetupError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(4)
            .build()?;
        let mut write_url = config.url.clone();
        match &config.api {
            InfluxApi::V1 {
                database,
                retention_policy,
                ..
            } => {
                write_url.set_path("/write");
                let mut q = write_url.query_pairs_mut();
                q.append_pair("db", database).append_pair("precision", "ms");
                if let Some(rp) = retention_policy {
                    q.append_pair("rp", rp);
                }
            }
            InfluxApi::V2 { org, bucket, .. } => {
                write_url.set_path("/api/v2/write");
                write_url
                    .query_pairs_mut()
                    .append_pair("org", org)
                    .append_pair("bucket", bucket)
                    .append_pair("precision", "ms");
            }
        }
        Ok(InfluxStore {
            http,
            write_url,
            config,
        })
    }

    /// A short description for logs (no credentials).
    pub fn describe(&self) -> String {
        match &self.config.api {
            InfluxApi::V1 { database, .. } => {
                format!("InfluxDB v1 at {} (database {database})", self.config.url)
            }
            InfluxApi::V2 { org, bucket, .. } => format!(
                "InfluxDB v2 at {} (org {org}, bucket {bucket})",
                self.config.url
            ),
        }
    }

    /// The HTTP client and settings, for reading back (`store::query`).
    pub(super) fn reader(&self) -> (&reqwest::Client, &InfluxConfig) {
        (&self.http, &self.config)
    }

    pub(super) fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.api {
            InfluxApi::V1 {
                username: Some(u),
                password,
                ..
            } => req.basic_auth(u, password.as_deref()),
            InfluxApi::V1 { .. } => req,
            InfluxApi::V2 { token, .. } => req.header("Authorization", format!("Token {token}")),
        }
    }

    /// Creates the v1 database if it does not exist (`CREATE DATABASE` is idempotent).
    /// Does nothing for the v2 API, whose buckets are provisioned by the operator.
    pub async fn ensure_database(&self) -> Result<(), SetupError> {
        let InfluxApi::V1 { database, .. } = &self.config.api else {
            return Ok(());
        };
        let mut url = self.config.url.clone();
        url.set_path("/query");
        let q = format!(
            "CREATE DATABASE \"{}\"",
            database.replace('\\', "\\\\").replace('"', "\\\"")
        );
        let fail = |detail: String| SetupError::CreateDatabase {
            database: database.clone(),
            url: self.config.url.clone(),
            detail,
        };
        let resp = self
            .authorize(self.http.post(url).form(&[("q", q)]))
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() || body.contains("\"error\"") {
            return Err(fail(format!("HTTP {status}: {body}")));
        }
        Ok(())
    }

    /// Runs one InfluxQL statement; `Ok(None)` if the server cannot be reached (not fatal).
    async fn influxql(&self, q: &str) -> Result<Option<serde_json::Value>, SetupError> {
        let mut url = self.config.url.clone();
        url.set_path("/query");
        let resp = match self
            .authorize(self.http.post(url).form(&[("q", q)]))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(url = %self.config.url, error = %e, "InfluxDB is not reachable at start; writes will be spooled until it is.");
                return Ok(None);
            }
        };
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(SetupError::Credentials {
                url: self.config.url.clone(),
                settings: match self.config.api {
                    InfluxApi::V1 { .. } => "influx.username / influx.password",
                    InfluxApi::V2 { .. } => "influx.token",
                },
                detail: error_message(&body),
            });
        }
        if status.is_server_error() {
            tracing::warn!(url = %self.config.url, %status, "InfluxDB answers with a server error at start; writes will be spooled until it recovers.");
            return Ok(None);
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(e) = v
            .pointer("/results/0/error")
            .or_else(|| v.get("error"))
            .and_then(|e| e.as_str())
        {
            return Err(SetupError::CreateDatabase {
                database: q.to_owned(),
                url: self.config.url.clone(),
                detail: format!("HTTP {status}: {e}"),
            });
        }
        Ok(Some(v))
    }

    /// Checks at start that the credentials work and the database exists (creating it,
    /// with a retention policy of `retention_days`, if allowed). An unreachable server is
    /// not an error (the spool takes over); wrong credentials or a missing database are.
    pub async fn preflight(&self, retention_days: Option<u32>) -> Result<(), SetupError> {
        let InfluxApi::V1 {
            database,
            retention_policy,
            ..
        } = &self.config.api
        else {
            return self.preflight_v2().await;
        };
        let Some(v) = self.influxql("SHOW DATABASES").await? else {
            return Ok(());
        };
        let exists = v
            .pointer("/results/0/series/0/values")
            .and_then(|x| x.as_array())
            .is_some_and(|rows| {
                rows.iter()
                    .any(|r| r.get(0).and_then(|n| n.as_str()) == Some(database))
            });
        if !exists && !self.config.create_database {
            return Err(SetupError::MissingDatabase {
                database: database.clone(),
                url: self.config.url.clone(),
            });
        }
        let db = quote_ident(database);
        if !exists {
            self.ensure_database().await?;
            tracing::info!(%database, "InfluxDB database created.");
        }
        if let Some(days) = retention_days {
            let rp = quote_ident(retention_policy.as_deref().unwrap_or("autogen"));
            let alter =
                format!("ALTER RETENTION POLICY {rp} ON {db} DURATION {days}d SHARD DURATION 1d");
            if self.influxql(&alter).await.is_err() {
                let create = format!(
                    "CREATE RETENTION POLICY {rp} ON {db} DURATION {days}d REPLICATION 1 SHARD DURATION 1d DEFAULT"
                );
                self.influxql(&create).await?;
            }
            tracing::info!(%database, days, "InfluxDB retention policy set.");
        }
        Ok(())
    }

    async fn preflight_v2(&self) -> Result<(), SetupError> {
        let mut url = self.config.url.clone();
        url.set_path("/api/v2/buckets");
        url.query_pairs_mut().append_pair("limit", "1");
        match self.authorize(self.http.get(url)).send().await {
            Ok(r)
                if r.status() == StatusCode::UNAUTHORIZED
                    || r.status() == StatusCode::FORBIDDEN =>
            {
                let body = r.text().await.unwrap_or_default();
                Err(SetupError::Credentials {
                    url: self.config.url.clone(),
                    settings: "influx.token",
                    detail: error_message(&body),
                })
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(url = %self.config.url, error = %e, "InfluxDB is not reachable at start; writes will be spooled until it is.");
                Ok(())
            }
        }
    }

    async fn post(&self, body: bytes::Bytes) -> Result<Attempt, WriteError> {
        let resp = self
            .authorize(self.http.post(self.write_url.clone()).body(body))
            .send()
            .await
            .map_err(|e| WriteError::Unavailable(format!("{}: {e}", self.config.url)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Attempt::Stored);
        }
        let text = resp.text().await.unwrap_or_default();
        match status {
            StatusCode::BAD_REQUEST => Ok(Attempt::Refused(error_message(&text))),
            StatusCode::PAYLOAD_TOO_LARGE => Ok(Attempt::TooLarge),
            _ => Err(WriteError::Unavailable(format!(
                "HTTP {status} from {}: {}",
                self.config.url,
                error_message(&text)
            ))),
        }
    }

    /// Writes the points; see the module docs for how each answer is handled.
    pub async fn write(&self, points: &[Point]) -> Result<WriteOutcome, WriteError> {
        let mut outcome = WriteOutcome::default();
        // Every line goes straight into one buffer; `ends[i]` is where point i's line ends
        // (a refused point's line is empty), so any range of points is one slice of it.
        let mut buffer = String::with_capacity(points.len() * 160);
        let mut ends: Vec<usize> = Vec::with_capacity(points.len());
        for (index, p) in points.iter().enumerate() {
            if let Err(e) = encode_point(&mut buffer, p) {
                outcome.rejected.push(RejectedPoint {
                    index,
                    line: format!("{p:?}"),
                    reason: e.to_string(),
                });
            }
            ends.push(buffer.len());
        }
        let body = bytes::Bytes::from(buffer);
        let span = |range: &std::ops::Range<usize>| {
            let start = if range.start == 0 {
                0
            } else {
                ends[range.start - 1]
            };
            start..ends[range.end - 1]
        };
        // Ranges still to write; a refused range is split until each refusal is one line.
        #[allow(
            clippy::single_range_in_vec_init,
            reason = "a stack of ranges, split as refusals are bisected"
        )]
        let mut pending = vec![0..points.len()];
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            let bytes = span(&range);
            if bytes.is_empty() {
                continue;
            }
            match self.post(body.slice(bytes)).await? {
                Attempt::Stored => {}
                Attempt::Refused(_) | Attempt::TooLarge if range.len() > 1 => {
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
                Attempt::Refused(reason) => {
                    outcome.rejected.push(RejectedPoint {
                        index: range.start,
                        line: String::from_utf8_lossy(&body[span(&range)]).into_owned(),
                        reason: format!("influxdb refused: {reason}"),
                    });
                }
                Attempt::TooLarge => {
                    outcome.rejected.push(RejectedPoint {
                        index: range.start,
                        line: String::from_utf8_lossy(&body[span(&range)]).into_owned(),
                        reason: "influxdb refused: line too large".into(),
                    });
                }
            }
        }
        outcome.rejected.sort_by_key(|r| r.index);
        Ok(outcome)
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Extracts `error` from InfluxDB's JSON error body, or returns the body.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .or_else(|| {
            serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("message").and_then(|e| e.as_str()).map(str::to_owned))
        })
        .unwrap_or_else(|| body.chars().take(500).collect())
}

#[cfg(test)]
mod tests {
    //! The v2 API cannot run here (Debian ships InfluxDB 1.6.7), so these tests
    //! check what the writer sends against a local HTTP receiver; the v1 path is
    //! tested against the real server in the workspace's `tests/`.
    use std::sync::{Arc, Mutex};

    use axum::extract::{RawQuery, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    use super::*;
    use crate::store::FieldValue;

    type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

    async fn receiver(status: StatusCode, body: &'static str) -> (Url, Seen) {
        let seen: Seen = Arc::default();
        let record = |path: &'static str| {
            move |State(seen): State<Seen>,
                  RawQuery(q): RawQuery,
                  headers: HeaderMap,
                  text: String| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                seen.lock().unwrap().push((
                    format!("{path}?{}", q.unwrap_or_default()),
                    auth,
                    text,
                ));
                (status, body)
            }
        };
        let app = axum::Router::new()
            .route("/api/v2/write", post(record("/api/v2/write")))
            .route("/write", post(record("/write")))
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}").parse().unwrap(), seen)
    }

    fn point() -> Point {
        Point {
            measurement: "toilet".into(),
            tags: vec![("device_id".into(), "t-1".into())],
            fields: vec![("flushes".into(), FieldValue::Int(3))],
            ts_ms: 5,
        }
    }

    fn config(url: Url, api: InfluxApi) -> InfluxConfig {
        InfluxConfig {
            url,
            api,
            timeout: Duration::from_secs(5),
            create_database: false,
        }
    }

    #[tokio::test]
    async fn v2_writes_to_api_v2_with_org_bucket_token_and_ms_precision() {
        let (url, seen) = receiver(StatusCode::NO_CONTENT, "").await;
        let api = InfluxApi::V2 {
            org: "acme co".into(),
            bucket: "fixtures".into(),
            token: "s3cret".into(),
        };
        let store = InfluxStore::new(config(url, api)).unwrap();
        store.write(&[point()]).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0].0,
            "/api/v2/write?org=acme+co&bucket=fixtures&precision=ms"
        );
        assert_eq!(seen[0].1, "Token s3cret");
        assert_eq!(seen[0].2, "toilet,device_id=t-1 flushes=3i 5\n");
    }

    #[tokio::test]
    async fn v1_sends_basic_auth_and_server_errors_are_unavailable() {
        let (url, seen) = receiver(
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"error\":\"engine closed\"}",
        )
        .await;
        let api = InfluxApi::V1 {
            database: "db".into(),
            retention_policy: Some("week".into()),
            username: Some("gw".into()),
            password: Some("pw".into()),
        };
        let store = InfluxStore::new(config(url, api)).unwrap();
        let err = store.write(&[point()]).await.unwrap_err();
        assert!(err.to_string().contains("engine closed"), "{err}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, "/write?db=db&precision=ms&rp=week");
        assert_eq!(seen[0].1, "Basic Z3c6cHc=");
    }
}
