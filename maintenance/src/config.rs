//! The crate's configuration as the gateway embeds it (a `[maintenance]` table), in two
//! stages: [`RawConfig`] as written, [`Config`] checked and ready to use.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::dispatch::{DeliveryConfig, RawDeliveryConfig};
use crate::engine::EngineConfig;
use crate::error::{Error, Result};
use crate::policy::{Policy, DEFAULT_POLICY_TOML};

/// The `[maintenance]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// SQLite database path.
    pub db_path: PathBuf,
    /// Policy file; the embedded defaults if absent.
    #[serde(default)]
    pub policy_file: Option<PathBuf>,
    /// URLs that receive every ticket event (signed webhooks).
    #[serde(default)]
    pub ticket_webhooks: Vec<String>,
    /// Seconds between engine ticks (escalations, due reminders, purges).
    #[serde(default = "default_tick")]
    pub tick_interval_s: u64,
    /// Seconds between outbox dispatch rounds.
    #[serde(default = "default_dispatch")]
    pub dispatch_interval_s: u64,
    /// Delivery endpoints and retry settings.
    pub delivery: RawDeliveryConfig,
}

fn default_tick() -> u64 {
    60
}
fn default_dispatch() -> u64 {
    5
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// SQLite database path.
    pub db_path: PathBuf,
    /// Policy and webhook subscribers, for [`crate::Engine::open`].
    pub engine: EngineConfig,
    /// Delivery settings, for [`crate::Dispatcher::new`].
    pub delivery: DeliveryConfig,
    /// Interval between engine ticks.
    pub tick_interval: Duration,
    /// Interval between dispatch rounds.
    pub dispatch_interval: Duration,
}

impl TryFrom<RawConfig> for Config {
    type Error = Error;

    fn try_from(raw: RawConfig) -> Result<Self> {
        let text = match &raw.policy_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| Error::Config(format!("policy_file {}: {e}", p.display())))?,
            None => DEFAULT_POLICY_TOML.to_owned(),
        };
        let policy = Policy::from_toml(&text)?;
        for url in &raw.ticket_webhooks {
            reqwest::Url::parse(url)
                .map_err(|e| Error::Config(format!("ticket_webhooks {url}: {e}")))?;
        }
        Ok(Config {
            db_path: raw.db_path,
            engine: EngineConfig {
                policy,
                ticket_webhooks: raw.ticket_webhooks,
            },
            delivery: DeliveryConfig::try_from(raw.delivery)?,
            tick_interval: Duration::from_secs(raw.tick_interval_s.max(1)),
            dispatch_interval: Duration::from_secs(raw.dispatch_interval_s.max(1)),
        })
    }
}

impl Config {
    /// Parses and checks a `[maintenance]` table given as TOML text.
    pub fn from_toml(text: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        Config::try_from(raw)
    }
}

/// Calls [`crate::Engine::tick`] on the wall clock every `interval` until `shutdown` resolves.
pub async fn run_ticker(
    engine: std::sync::Arc<crate::Engine>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {
                if let Err(e) = engine.tick(crate::wall_clock_ms()) {
                    tracing::error!(error = %e, "Maintenance tick failed.");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_table_parses_and_bad_values_are_rejected() {
        let ok = r#"
            db_path = "/var/lib/gateway/maintenance.db"
            ticket_webhooks = ["https://crm.example/hooks/tickets"]
            [delivery]
            push_url = "https://push.example/send"
            hmac_secret = "0123456789abcdef0123"
        "#;
        let cfg = Config::from_toml(ok).unwrap();
        assert_eq!(cfg.tick_interval, Duration::from_secs(60));
        assert!(cfg.engine.policy.kinds.contains_key("leak"));
        assert!(Config::from_toml(&ok.replace("0123456789abcdef0123", "short")).is_err());
        assert!(Config::from_toml(&ok.replace("https://crm", "crm")).is_err());
    }
}
