//! The dispatcher: delivers outbox rows with retries and exponential backoff.
//!
//! Webhooks (generic, push, SMS) are POSTed with an `Idempotency-Key` header and an
//! HMAC-SHA256 signature over `"{timestamp}.{body}"`; e-mail goes over SMTP. A row is
//! marked delivered only after the receiver said 2xx, so a crash in between re-sends the
//! same key: a receiver that honours the key never processes a message twice.
//!
//! [`Dispatcher::run_once`] takes the time as an argument, so tests drive it without sleeping;
//! [`Dispatcher::run`] is the production loop on the wall clock.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::outbox::{self, OutChannel, OutboxRow};

/// Header carrying the idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Header carrying the signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Maintenance-Signature";
/// Header carrying the signing timestamp, UTC ms.
pub const TIMESTAMP_HEADER: &str = "X-Maintenance-Timestamp";
/// Header carrying the event topic.
pub const TOPIC_HEADER: &str = "X-Maintenance-Event";

type HmacSha256 = Hmac<Sha256>;

/// The signature header value for `body` signed at `ts_ms`.
pub fn sign(secret: &[u8], ts_ms: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(ts_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header in constant time (for receivers and tests).
pub fn verify(secret: &[u8], ts_ms: i64, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(ts_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// SMTP settings (plain SMTP on a trusted relay; no TLS stack is linked).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Relay host.
    pub host: String,
    /// Relay port.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Sender address.
    pub from: String,
}

fn default_smtp_port() -> u16 {
    25
}

/// Where and how to deliver, as written in the gateway's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeliveryConfig {
    /// Push webhook URL (app notifications).
    #[serde(default)]
    pub push_url: Option<String>,
    /// SMS webhook URL.
    #[serde(default)]
    pub sms_url: Option<String>,
    /// SMTP relay for e-mail.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// HMAC secret for signing webhooks.
    pub hmac_secret: String,
    /// First retry delay, seconds.
    #[serde(default = "default_backoff")]
    pub backoff_base_s: u64,
    /// Longest retry delay, seconds.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_s: u64,
    /// Attempts before a row goes dead.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// HTTP timeout, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

fn default_backoff() -> u64 {
    5
}
fn default_backoff_max() -> u64 {
    3600
}
fn default_attempts() -> u32 {
    20
}
fn default_timeout() -> u64 {
    10
}

/// Checked delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Push webhook URL.
    pub push_url: Option<reqwest::Url>,
    /// SMS webhook URL.
    pub sms_url: Option<reqwest::Url>,
    /// SMTP relay.
    pub smtp: Option<SmtpConfig>,
    /// HMAC secret.
    pub hmac_secret: Vec<u8>,
    /// First retry delay.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Attempts before a row goes dead.
    pub max_attempts: u32,
    /// HTTP timeout.
    pub timeout: Duration,
}

impl TryFrom<RawDeliveryConfig> for DeliveryConfig {
    type Error = Error;

    fn try_from(raw: RawDeliveryConfig) -> Result<Self> {
        let url = |field: &str, u: Option<String>| -> Result<Option<reqwest::Url>> {
            u.map(|u| reqwest::Url::parse(&u).map_err(|e| Error::Config(format!("{field}: {e}"))))
                .transpose()
        };
        if raw.hmac_secret.len() < 16 {
            return Err(Error::Config("hmac_secret: at least 16 characters".into()));
        }
        if let Some(s) = &raw.smtp {
            if s.from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(Error::Config(format!(
                    "smtp.from: not an address: {}",
                    s.from
                )));
            }
        }
        Ok(DeliveryConfig {
            push_url: url("push_url", raw.push_url)?,
            sms_url: url("sms_url", raw.sms_url)?,
            smtp: raw.smtp,
            hmac_secret: raw.hmac_secret.into_bytes(),
            backoff_base: Duration::from_secs(raw.backoff_base_s.max(1)),
            backoff_max: Duration::from_secs(raw.backoff_max_s.max(raw.backoff_base_s.max(1))),
            max_attempts: raw.max_attempts.max(1),
            timeout: Duration::from_secs(raw.timeout_s.max(1)),
        })
    }
}

/// How many outbox rows a dispatcher on PostgreSQL claims (and leases) at a time.
pub const CLAIM_CHUNK: usize = 10;

/// The outcome of one [`Dispatcher::run_once`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Rows delivered.
    pub delivered: u32,
    /// Rows that failed and will be retried.
    pub retrying: u32,
    /// Rows that failed for the last time.
    pub dead: u32,
}

/// Delivers outbox rows.
pub struct Dispatcher {
    engine: Arc<Engine>,
    cfg: DeliveryConfig,
    http: reqwest::Client,
    mailer: Option<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>,
}

impl Dispatcher {
    /// A dispatcher over `engine`'s outbox.
    pub fn new(engine: Arc<Engine>, cfg: DeliveryConfig) -> Result<Dispatcher> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        let mailer = cfg.smtp.as_ref().map(|s| {
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(&s.host)
                .port(s.port)
                .timeout(Some(cfg.timeout))
                .build()
        });
        Ok(Dispatcher {
            engine,
            cfg,
            http,
            mailer,
        })
    }

    /// The retry delay after `attempts` failures: base × 2^(attempts−1), capped.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        self.cfg
            .backoff_base
            .saturating_mul(factor)
            .min(self.cfg.backoff_max)
    }

    /// Delivers every row due at `now_ms` (up to `limit`) once and records the results.
    ///
    /// On PostgreSQL the rows are claimed [`CLAIM_CHUNK`] at a time, each chunk leased for
    /// as long as sending it may take (the timeout per row, plus one), so other
    /// dispatchers skip them; on SQLite all due rows are read at once, as before.
    pub async fn run_once(&self, now_ms: i64, limit: usize) -> Result<DispatchReport> {
        let mut rep = DispatchReport::default();
        let chunk = match self.engine.dialect() {
            crate::store::Dialect::Sqlite => limit,
            crate::store::Dialect::Postgres => limit.min(CLAIM_CHUNK),
        };
        let mut claimed = 0;
        while claimed < limit {
            let want = chunk.min(limit - claimed);
            let lease_ms = self.cfg.timeout.as_millis() as i64 * (want as i64 + 1);
            let rows = self
                .engine
                .write(|tx| outbox::claim_due(tx, now_ms, want, now_ms + lease_ms))?;
            if rows.is_empty() {
                break;
            }
            claimed += rows.len();
            let last = rows.len() < want || chunk == limit;
            self.deliver_rows(rows, now_ms, &mut rep).await?;
            if last {
                break;
            }
        }
        Ok(rep)
    }

    async fn deliver_rows(
        &self,
        rows: Vec<OutboxRow>,
        now_ms: i64,
        rep: &mut DispatchReport,
    ) -> Result<()> {
        for row in rows {
            match self.deliver(&row, now_ms).await {
                Ok(()) => {
                    self.engine
                        .write(|tx| outbox::mark_delivered(tx, row.id, now_ms))?;
                    tracing::debug!(id = row.id, key = %row.idem_key, channel = row.channel.as_str(), "Outbox row delivered.");
                    rep.delivered += 1;
                }
                Err(e) => {
                    let attempts = row.attempts + 1;
                    let give_up = attempts >= self.cfg.max_attempts;
                    let retry_at = now_ms + self.backoff(attempts).as_millis() as i64;
                    self.engine
                        .write(|tx| outbox::mark_failed(tx, row.id, &e, retry_at, give_up))?;
                    if give_up {
                        tracing::error!(id = row.id, key = %row.idem_key, error = %e, "Outbox row failed for the last time; an operator must act.");
                        rep.dead += 1;
                    } else {
                        tracing::warn!(id = row.id, attempts, error = %e, retry_at, "Outbox delivery failed; will retry.");
                        rep.retrying += 1;
                    }
                }
            }
        }
        Ok(())
    }

    async fn deliver(&self, row: &OutboxRow, now_ms: i64) -> std::result::Result<(), String> {
        match row.channel {
            OutChannel::Webhook => {
                let url = reqwest::Url::parse(&row.target).map_err(|e| format!("bad url: {e}"))?;
                self.post(url, row, &row.payload, now_ms).await
            }
            OutChannel::Push => {
                let url = self.cfg.push_url.clone().ok_or("no push_url configured")?;
                let body = serde_json::json!({ "to_home": row.target, "message": row.payload });
                self.post(url, row, &body, now_ms).await
            }
            OutChannel::Sms => {
                let url = self.cfg.sms_url.clone().ok_or("no sms_url configured")?;
                let text = format!(
                    "{} {}",
                    row.payload
                        .get("title")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default(),
                    row.payload
                        .get("body")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                );
                let body = serde_json::json!({ "to": row.target, "text": text });
                self.post(url, row, &body, now_ms).await
            }
            OutChannel::Email => self.email(row).await,
        }
    }

    async fn post(
        &self,
        url: reqwest::Url,
        row: &OutboxRow,
        body: &serde_json::Value,
        now_ms: i64,
    ) -> std::result::Result<(), String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let resp = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_HEADER, &row.idem_key)
            .header(TOPIC_HEADER, &row.topic)
            .header(TIMESTAMP_HEADER, now_ms.to_string())
            .header(
                SIGNATURE_HEADER,
                sign(&self.cfg.hmac_secret, now_ms, &bytes),
            )
            .body(bytes)
            .send()
            .await
            .map_err(|e| format!("request: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("status {}", resp.status()))
        }
    }

    async fn email(&self, row: &OutboxRow) -> std::result::Result<(), String> {
        use lettre::AsyncTransport;
        let (Some(mailer), Some(smtp)) = (&self.mailer, &self.cfg.smtp) else {
            return Err("no smtp configured".into());
        };
        let from = smtp.from.parse().map_err(|e| format!("from: {e}"))?;
        let to = row.target.parse().map_err(|e| format!("to: {e}"))?;
        let subject = row
            .payload
            .get("title")
            .and_then(|v| v.as_str())
            .unwrap_or("Notice");
        let body = row
            .payload
            .get("body")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let msg = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{}@maintenance>", row.idem_key)))
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| format!("build: {e}"))?;
        mailer
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| format!("smtp: {e}"))
    }

    /// Delivers until `shutdown` resolves, polling every `interval` on the wall clock.
    pub async fn run(self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => {
                    let now_ms = crate::wall_clock_ms();
                    if let Err(e) = self.run_once(now_ms, 100).await {
                        tracing::error!(error = %e, "Outbox dispatch failed.");
                    }
                }
            }
        }
    }
}
