//! Configuration: one TOML file, overridden by environment variables, with
//! defaults that need no file at all (embedded broker, SQLite, `./data`).
//!
//! Two stages, as in ripgrep: [`RawConfig`] mirrors the file (strings, numbers,
//! options, unknown keys refused); [`Config::from_raw`] checks it and produces
//! typed values (`Url`, `Duration`, enums). Any key can be overridden by an
//! environment variable `GATEWAY__SECTION__KEY` (double underscores between
//! levels), e.g. `GATEWAY__INFLUX__URL=http://db:8086` or `GATEWAY__BATCH__MAX_MESSAGES=200`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// Configuration errors; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file (after env overrides) is not valid TOML for this schema.
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is present but wrong.
    #[error("invalid configuration value for {key}: {why}")]
    Value {
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
    /// An error located in the user's own file.
    #[error("{path}:{line}:{column}: {message}\n{line:>5} | {source_line}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// The user's line, as written.
        source_line: String,
    },
    /// An error in the `GATEWAY__*` environment overrides.
    #[error(
        "invalid configuration after the GATEWAY__* environment overrides ({vars}): {message}"
    )]
    Env {
        /// The override variables present.
        vars: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    fn in_file(path: &Path, text: &str, offset: usize, message: String) -> ConfigError {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let source_line = text[line_start..]
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        ConfigError::InFile {
            path: path.to_owned(),
            line,
            column,
            message,
            source_line,
        }
    }
}

/// Byte offset of where a dotted key (`influx.url`, `maintenance`, `store`) is written in `text`.
fn locate_key(text: &str, key: &str) -> Option<usize> {
    let (section, leaf) = match key.rsplit_once('.') {
        Some((s, l)) => (Some(s), l),
        None => (None, key),
    };
    let mut offset = 0;
    let mut current: Option<String> = None;
    let mut table_line = None;
    for raw in text.split_inclusive('\n') {
        let line = raw.trim_start();
        let indent = raw.len() - line.len();
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            if section.is_none() && name == leaf {
                table_line = table_line.or(Some(offset + indent));
            }
            current = Some(name);
        } else if current.as_deref() == section {
            let k = line
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            if line.contains('=') && k == leaf {
                return Some(offset + indent);
            }
        }
        if section.is_some()
            && current.as_deref() == section
            && table_line.is_none()
            && line.starts_with('[')
        {
            table_line = Some(offset + indent);
        }
        offset += raw.len();
    }
    table_line
}

/// The file as written. Every field is optional; see `gateway.example.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Directory for SQLite files, the spool and dead letters.
    pub data_dir: Option<String>,
    /// MQTT connection.
    pub mqtt: RawMqtt,
    /// Batching of writes.
    pub batch: RawBatch,
    /// Which telemetry store: "sqlite" (default), "influx_v1", "influx_v2".
    pub store: Option<String>,
    /// InfluxDB connection (for the influx stores).
    pub influx: RawInflux,
    /// Tuning of the embedded SQLite telemetry store.
    pub sqlite: RawSqlite,
    /// Message validation.
    pub validation: RawValidation,
    /// HTTP endpoint for health, metrics and dead letters.
    pub http: RawHttp,
    /// The maintenance engine (tickets, reminders); off unless present. See `maintenance/README.md`.
    pub maintenance: Option<toml::Table>,
    /// The analytics stage (fault rules, filter forecasts); on by default.
    pub analytics: crate::analysis::AnalyticsConfig,
    /// How long each store keeps data.
    pub retention: RawRetention,
    /// Readiness thresholds and the gap-burst warning.
    pub health: RawHealth,
    /// Log output.
    pub log: RawLog,
    /// Clustered mode (off by default); see the `cluster` module.
    pub cluster: RawCluster,
}

/// `[retention]`: how long data is kept (0 = forever).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    /// SQLite telemetry store: points whose device time is older than this many days are deleted.
    pub telemetry_days: Option<u32>,
    /// Dead letters older than this many days are deleted.
    pub dead_letters_days: Option<u32>,
    /// Most dead letters kept (the oldest go first).
    pub dead_letters_max_count: Option<u64>,
    /// Most dead-letter payload kept, MiB.
    pub dead_letters_max_mb: Option<u64>,
    /// Maintenance audit log entries older than this many days are deleted (keep it the longest).
    pub audit_days: Option<u32>,
    /// Seconds between retention sweeps (default 3600).
    pub sweep_every_s: Option<u64>,
    /// InfluxDB v1: duration of the retention policy set when the database is created
    /// (and altered to at start if it differs), days; 0 or absent: InfluxDB's default (forever).
    pub influx_days: Option<u32>,
}

/// `[sqlite]`: tuning of the embedded SQLite telemetry store (the defaults suit most hosts).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSqlite {
    /// Page cache, MiB (default 64; SQLite's own default is about 2).
    pub cache_mib: Option<u32>,
    /// Bytes of the file read through a memory map, MiB (default 256; 0: none).
    pub mmap_mib: Option<u32>,
    /// Checkpoint the WAL from a background thread instead of in the writer's commits (default true).
    pub background_checkpoint: Option<bool>,
}

/// `[health]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealth {
    /// `/health/ready` answers 503 while more batches than this wait in the spool.
    pub max_spool_batches: Option<u64>,
    /// Seconds between readiness checks.
    pub check_every_s: Option<u64>,
    /// More sequence gaps (missing messages) than this within `gap_window_s` raise a warning.
    pub gap_burst: Option<u64>,
    /// Window of the gap-burst check, seconds.
    pub gap_window_s: Option<u64>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// "text" (default) or "json" (one JSON object a line).
    pub format: Option<String>,
}

/// Typed retention settings (`None`: keep forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// SQLite telemetry.
    pub telemetry: Option<Duration>,
    /// Dead-letter bounds.
    pub dead_letters: crate::state::DeadLetterLimits,
    /// Maintenance audit log.
    pub audit: Option<Duration>,
    /// Between sweeps.
    pub sweep_every: Duration,
    /// InfluxDB retention policy duration, days.
    pub influx_days: Option<u32>,
}

/// Typed health settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Spool backlog above which the gateway is not ready.
    pub max_spool_batches: u64,
    /// Between readiness checks.
    pub check_every: Duration,
    /// Gaps within `gap_window` that make a burst.
    pub gap_burst: u64,
    /// The gap-burst window.
    pub gap_window: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours only on a terminal).
    Text,
    /// One JSON object a line.
    Json,
}

/// `[mqtt]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqtt {
    /// "embedded" (start rumqttd in-process, the default) or "external".
    pub broker: Option<String>,
    /// Broker URL, `mqtt://host:port`. For "embedded" this is also where it listens.
    pub url: Option<String>,
    /// Client id of the gateway's persistent session.
    pub client_id: Option<String>,
    /// Broker user name.
    pub username: Option<String>,
    /// Broker password.
    pub password: Option<String>,
    /// Keep-alive in seconds.
    pub keep_alive_s: Option<u64>,
    /// Largest packet the gateway reads; must be at least the broker's `message_size_limit`.
    pub max_packet_bytes: Option<usize>,
}

/// `[batch]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBatch {
    /// Most messages in a batch; must not exceed the broker's in-flight window.
    pub max_messages: Option<usize>,
    /// Longest a message waits for its batch to fill, ms.
    pub max_wait_ms: Option<u64>,
    /// Batches being written at once (acknowledged in order).
    pub max_in_flight: Option<usize>,
}

/// `[influx]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInflux {
    /// Server URL, e.g. `http://127.0.0.1:8086`.
    pub url: Option<String>,
    /// v1: database.
    pub database: Option<String>,
    /// v1: retention policy (default: the database's default).
    pub retention_policy: Option<String>,
    /// v1: basic-auth user.
    pub username: Option<String>,
    /// v1: basic-auth password.
    pub password: Option<String>,
    /// v2: organisation.
    pub org: Option<String>,
    /// v2: bucket.
    pub bucket: Option<String>,
    /// v2: API token.
    pub token: Option<String>,
    /// Request time-out, ms.
    pub timeout_ms: Option<u64>,
    /// v1: create the database at start-up if missing (default true).
    pub create_database: Option<bool>,
}

/// `[validation]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawValidation {
    /// Oldest accepted device timestamp, days before now.
    pub max_age_days: Option<u32>,
    /// Furthest accepted device timestamp, seconds after now.
    pub max_future_s: Option<u32>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    /// Listen address, default `127.0.0.1:8080`; "off" disables it.
    pub listen: Option<String>,
    /// Host names (or `host:port`) the endpoint answers to; other `Host` or `Origin`
    /// headers are refused (DNS rebinding). Default: the listen address, `localhost`,
    /// `127.0.0.1` and `[::1]`.
    pub allowed_hosts: Option<Vec<String>>,
    /// Most open HTTP connections; at the cap the oldest is closed (default 512).
    pub max_connections: Option<usize>,
}

/// Which MQTT broker to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerMode {
    /// Start rumqttd in-process, listening on the URL's address. Keeps nothing on disk.
    Embedded,
    /// Connect to an external broker (Mosquitto in production and in every durability test).
    External,
}

/// Typed MQTT settings.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Embedded or external.
    pub broker: BrokerMode,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id.
    pub client_id: String,
    /// Credentials.
    pub credentials: Option<(String, String)>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Largest incoming packet.
    pub max_packet_bytes: usize,
}

/// Typed batching settings.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most messages in a batch.
    pub max_messages: usize,
    /// Longest wait for a batch to fill.
    pub max_wait: Duration,
    /// Batches being written at once; `max_messages × (max_in_flight + 1)` must fit the broker's in-flight window.
    pub max_in_flight: usize,
}

pub use crate::store::influx::{InfluxApi, InfluxConfig};

/// Where telemetry goes.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant, reason = "built once per process")]
pub enum StoreConfig {
    /// `{data_dir}/telemetry.db`, with its tuning.
    Sqlite(crate::store::sqlite::SqliteTuning),
    /// InfluxDB.
    Influx(InfluxConfig),
}

/// The checked configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// MQTT.
    pub mqtt: MqttConfig,
    /// Batching.
    pub batch: BatchConfig,
    /// Telemetry store.
    pub store: StoreConfig,
    /// Validation limits.
    pub limits: protocol::validate::Limits,
    /// HTTP listen address, if enabled.
    pub http_listen: Option<SocketAddr>,
    /// Host names the HTTP endpoint answers to (lower case, without port unless given).
    pub http_allowed_hosts: Vec<String>,
    /// Most open HTTP connections.
    pub http_max_connections: usize,
    /// The maintenance engine, if configured.
    pub maintenance: Option<maintenance::Config>,
    /// The analytics stage.
    pub analytics: crate::analysis::AnalyticsConfig,
    /// Retention of every store.
    pub retention: RetentionConfig,
    /// Readiness and gap-burst settings.
    pub health: HealthConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Clustered mode, if enabled.
    pub cluster: Option<ClusterConfig>,
}

/// Default batch size. Batches in flight plus the one filling must fit the
/// broker's in-flight window: 2 000 × (2 + 1) = 6 000 ≤ the shipped Mosquitto
/// config's `max_inflight_messages 10000` (and the embedded rumqttd's 10 000).
pub const DEFAULT_BATCH_MESSAGES: usize = 2000;
/// How long a batch's first message waits for more (`batch.max_wait_ms`), single-node.
pub const DEFAULT_BATCH_WAIT_MS: u64 = 50;
/// The same in clustered mode, where each partition's pipeline sees a share of the rate.
pub const DEFAULT_CLUSTER_BATCH_WAIT_MS: u64 = 500;

/// Default number of batches written concurrently.
pub const DEFAULT_BATCHES_IN_FLIGHT: usize = 2;

impl Config {
    /// Loads `path` (or nothing), applies `GATEWAY__*` overrides from `env`, and checks it.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        // The file alone first, so a syntax error or unknown key points at the user's own line.
        if let Some(p) = path {
            toml::from_str::<RawConfig>(&text).map_err(|e: toml::de::Error| {
                let offset = e.span().map_or(0, |s| s.start);
                ConfigError::in_file(p, &text, offset, e.message().trim().to_owned())
            })?;
        }
        let mut table: toml::Table = text.parse()?;
        let vars: Vec<String> = Vec::new();
        let vars = std::cell::RefCell::new(vars);
        apply_env_overrides(
            &mut table,
            env.into_iter().inspect(|(k, _)| {
                if k.starts_with("GATEWAY__") {
                    vars.borrow_mut().push(k.clone());
                }
            }),
        );
        let vars = vars.into_inner().join(", ");
        let env_err = |message: String| ConfigError::Env {
            vars: vars.clone(),
            message,
        };
        let raw: RawConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| env_err(e.message().trim().to_owned()))?;
        Config::from_raw(raw).map_err(|e| {
            let ConfigError::Value { key, .. } = &e else {
                return e;
            };
            let from_env = vars
                .split(", ")
                .any(|v| v.to_ascii_lowercase().replace("__", ".") == format!("gateway.{key}"));
            match (path, from_env) {
                (_, true) => env_err(e.to_string()),
                (Some(p), false) => match locate_key(&text, key) {
                    Some(offset) => ConfigError::in_file(p, &text, offset, e.to_string()),
                    None => e,
                },
                (None, false) => e,
            }
        })
    }

    /// Stage two: checks and types every value.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let data_dir = PathBuf::from(raw.data_dir.unwrap_or_else(|| "data".into()));

        let broker = match raw.mqtt.broker.as_deref().unwrap_or("embedded") {
            "embedded" => BrokerMode::Embedded,
            "external" => BrokerMode::External,
            other => {
                return Err(ConfigError::Value {
                    key: "mqtt.broker",
                    why: format!("{other:?} is not \"embedded\" or \"external\""),
                })
            }
        };
        let mqtt_url = raw
            .mqtt
            .url
            .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
        let url = Url::parse(&mqtt_url).map_err(|e| ConfigError::Value {
            key: "mqtt.url",
            why: format!("{mqtt_url:?}: {e}"),
        })?;
        if url.scheme() != "mqtt" && url.scheme() != "tcp" {
            return Err(ConfigError::Value {
                key: "mqtt.url",
                why: format!("scheme {:?} is not mqtt://", url.scheme()),
            });
        }
        let host = url
            .host_str()
            .ok_or(ConfigError::Value {
                key: "mqtt.url",
                why: "no host".into(),
            })?
            .to_owned();
        let credentials = match (raw.mqtt.username, raw.mqtt.password) {
            (Some(u), p) => Some((u, p.unwrap_or_default())),
            (None, Some(_)) => {
                return Err(ConfigError::Value {
                    key: "mqtt.password",
                    why: "set without mqtt.username".into(),
                })
            }
            (None, None) => None,
        };
        let mqtt = MqttConfig {
            broker,
            host,
            port: url.port().unwrap_or(1883),
            client_id: raw
                .mqtt
                .client_id
                .unwrap_or_else(|| "fixture-gateway".into()),
            credentials,
            keep_alive: Duration::from_secs(raw.mqtt.keep_alive_s.unwrap_or(30).max(5)),
            max_packet_bytes: raw.mqtt.max_packet_bytes.unwrap_or(32 * 1024 * 1024),
        };

        let max_messages = raw.batch.max_messages.unwrap_or(DEFAULT_BATCH_MESSAGES);
        if max_messages == 0 || max_messages > 65_535 {
            return Err(ConfigError::Value {
                key: "batch.max_messages",
                why: "must be 1..=65535 (and within the broker's in-flight window)".into(),
            });
        }
        let max_in_flight = raw.batch.max_in_flight.unwrap_or(DEFAULT_BATCHES_IN_FLIGHT);
        if max_in_flight == 0 || max_in_flight > 16 {
            return Err(ConfigError::Value {
                key: "batch.max_in_flight",
                why: "must be 1..=16".into(),
            });
        }
        // Clustered mode splits the stream over every partition's own pipeline: 64 of them
        // see 1/64 of the rate each, and at 50 ms a batch held about one message (every
        // message paid a whole InfluxDB write, state commit and PostgreSQL upsert).
        let default_wait_ms = if raw.cluster.enabled == Some(true) {
            DEFAULT_CLUSTER_BATCH_WAIT_MS
        } else {
            DEFAULT_BATCH_WAIT_MS
        };
        let batch = BatchConfig {
            max_messages,
            max_wait: Duration::from_millis(raw.batch.max_wait_ms.unwrap_or(default_wait_ms)),
            max_in_flight,
        };

        let store = match raw.store.as_deref().unwrap_or("sqlite") {
            "sqlite" => {
                let tuned = crate::store::sqlite::SqliteTuning::default();
                let sq = &raw.sqlite;
                StoreConfig::Sqlite(crate::store::sqlite::SqliteTuning {
                    cache_kib: sq
                        .cache_mib
                        .map_or(tuned.cache_kib, |m| i64::from(m.max(1)) * 1024),
                    mmap_bytes: sq.mmap_mib.map_or(tuned.mmap_bytes, |m| i64::from(m) << 20),
                    background_checkpoint: sq
                        .background_checkpoint
                        .unwrap_or(tuned.background_checkpoint),
                })
            }
            kind @ ("influx_v1" | "influx_v2") => {
                let i = raw.influx;
                let url_text = i.url.unwrap_or_else(|| "http://127.0.0.1:8086".into());
                let url = Url::parse(&url_text).map_err(|e| ConfigError::Value {
                    key: "influx.url",
                    why: format!("{url_text:?}: {e}; write it as http://host:8086"),
                })?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(ConfigError::Value {
                        key: "influx.url",
                        why: format!(
                            "{url_text:?} has no http:// or https:// scheme and host; write it as http://host:8086"
                        ),
                    });
                }
                let api = if kind == "influx_v1" {
                    InfluxApi::V1 {
                        database: i.database.unwrap_or_else(|| "fixtures".into()),
                        retention_policy: i.retention_policy.filter(|s| !s.is_empty()),
                        username: i.username,
                        password: i.password,
                    }
                } else {
                    let need = |v: Option<String>, key| {
                        v.ok_or(ConfigError::Value {
                            key,
                            why: "required for store = \"influx_v2\"".into(),
                        })
                    };
                    InfluxApi::V2 {
                        org: need(i.org, "influx.org")?,
                        bucket: need(i.bucket, "influx.bucket")?,
                        token: need(i.token, "influx.token")?,
                    }
                };
                StoreConfig::Influx(InfluxConfig {
                    url,
                    api,
                    timeout: Duration::from_millis(i.timeout_ms.unwrap_or(10_000)),
                    create_database: i.create_database.unwrap_or(true),
                })
            }
            other => {
                return Err(ConfigError::Value {
                    key: "store",
                    why: format!("{other:?} is not sqlite, influx_v1 or influx_v2"),
                })
            }
        };

        let defaults = protocol::validate::Limits::default();
        let limits = protocol::validate::Limits {
            max_age_ms: raw
                .validation
                .max_age_days
                .map_or(defaults.max_age_ms, |d| i64::from(d) * 86_400_000),
            max_future_ms: raw
                .validation
                .max_future_s
                .map_or(defaults.max_future_ms, |s| i64::from(s) * 1000),
        };

        let http_listen: Option<SocketAddr> =
            match raw.http.listen.as_deref().unwrap_or("127.0.0.1:8080") {
                "off" => None,
                addr => Some(addr.parse().map_err(|e| ConfigError::Value {
                    key: "http.listen",
                    why: format!("{addr:?}: {e}"),
                })?),
            };

        let mut http_allowed_hosts: Vec<String> = match raw.http.allowed_hosts {
            Some(hosts) => hosts,
            None => ["localhost", "127.0.0.1", "[::1]"]
                .map(String::from)
                .to_vec(),
        };
        if let Some(addr) = http_listen {
            if !addr.ip().is_unspecified() {
                let ip = match addr.ip() {
                    std::net::IpAddr::V4(v4) => v4.to_string(),
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                };
                http_allowed_hosts.push(ip);
            }
        }
        for h in &mut http_allowed_hosts {
            *h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.len() > 255 || h.contains(['/', ' ', '@']) {
                return Err(ConfigError::Value {
                    key: "http.allowed_hosts",
                    why: format!("{h:?} is not a host name or host:port"),
                });
            }
        }
        let http_max_connections = raw.http.max_connections.unwrap_or(512);
        if !(8..=100_000).contains(&http_max_connections) {
            return Err(ConfigError::Value {
                key: "http.max_connections",
                why: format!("{http_max_connections}: 8 to 100000"),
            });
        }

        let maintenance = match raw.maintenance {
            None => None,
            Some(mut table) => {
                // The engine's database lives under the data directory unless placed elsewhere.
                if !table.contains_key("db_path") {
                    let path = data_dir
                        .join("maintenance.db")
                        .to_string_lossy()
                        .into_owned();
                    table.insert("db_path".into(), toml::Value::String(path));
                }
                // Deserialised from the table itself: an error names the field, and never
                // quotes TOML the user did not write.
                let raw: maintenance::RawConfig =
                    toml::Value::Table(table)
                        .try_into()
                        .map_err(|e: toml::de::Error| ConfigError::Value {
                            key: "maintenance",
                            why: e.message().trim().to_owned(),
                        })?;
                Some(
                    maintenance::Config::try_from(raw).map_err(|e| ConfigError::Value {
                        key: "maintenance",
                        why: e.to_string(),
                    })?,
                )
            }
        };

        let days = |d: Option<u32>, default: u32| match d.unwrap_or(default) {
            0 => None,
            d => Some(Duration::from_secs(u64::from(d) * 86_400)),
        };
        let r = raw.retention;
        let dl_days = r.dead_letters_days.unwrap_or(30);
        let retention = RetentionConfig {
            telemetry: days(r.telemetry_days, 400),
            dead_letters: crate::state::DeadLetterLimits {
                max_count: r.dead_letters_max_count.unwrap_or(10_000).max(1),
                max_bytes: r.dead_letters_max_mb.unwrap_or(64).max(1) * 1024 * 1024,
                retention_ms: if dl_days == 0 {
                    i64::MAX / 2
                } else {
                    i64::from(dl_days) * 86_400_000
                },
            },
            audit: days(r.audit_days, 730),
            sweep_every: Duration::from_secs(r.sweep_every_s.unwrap_or(3600).max(1)),
            influx_days: r.influx_days.filter(|d| *d > 0),
        };
        if let (Some(a), Some(t)) = (retention.audit, retention.telemetry) {
            if a < t {
                return Err(ConfigError::Value {
                    key: "retention.audit_days",
                    why: "must be at least retention.telemetry_days: the audit log is kept longest"
                        .into(),
                });
            }
        }
        let health = HealthConfig {
            max_spool_batches: raw.health.max_spool_batches.unwrap_or(1000),
            check_every: Duration::from_secs(raw.health.check_every_s.unwrap_or(2).clamp(1, 60)),
            gap_burst: raw.health.gap_burst.unwrap_or(100),
            gap_window: Duration::from_secs(raw.health.gap_window_s.unwrap_or(10).clamp(1, 3600)),
        };
        let log_format = match raw.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::Value {
                    key: "log.format",
                    why: format!("{other:?} is not \"text\" or \"json\""),
                })
            }
        };

        let cluster = ClusterConfig::from_raw(raw.cluster, &mqtt)?;

        Ok(Config {
            data_dir,
            mqtt,
            batch,
            store,
            limits,
            http_listen,
            http_allowed_hosts,
            http_max_connections,
            maintenance,
            analytics: raw.analytics,
            retention,
            health,
            log_format,
            cluster,
        })
    }
}

/// Applies `GATEWAY__A__B=value` as `a.b = value` (parsed as a TOML value, else a string).
fn apply_env_overrides(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) {
    for (key, value) in env {
        let Some(path) = key.strip_prefix("GATEWAY__") else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let mut cursor = &mut *table;
        for (i, part) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                cursor.insert(part.clone(), parsed.clone());
            } else {
                let entry = cursor
                    .entry(part.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if !entry.is_table() {
                    *entry = toml::Value::Table(toml::Table::new());
                }
                let Some(next) = entry.as_table_mut() else {
                    break;
                };
                cursor = next;
            }
        }
    }
}

/// `[cluster]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// Clustered mode on (default false: single node).
    pub enabled: Option<bool>,
    /// Partitions N; must equal the broker mapping's `{{partition(N,1)}}` (default 64).
    pub partitions: Option<u32>,
    /// PostgreSQL URL of the lease table, e.g. `postgres://gw@127.0.0.1:5432/gw`.
    pub postgres_url: Option<String>,
    /// This instance's id, unique in the cluster (default: host name and process id).
    pub instance_id: Option<String>,
    /// Lease time to live, ms (default 5000): a dead instance's partitions move after this.
    pub lease_ttl_ms: Option<u64>,
    /// How long a new owner waits after a crashed owner's lease expired before connecting, ms.
    /// Default 0: connect at once. Waiting out the broker's `mqtt { ack_wait }` would keep
    /// redeliveries ahead of newer messages, but nats-server 2.9.10 loses a redelivery that
    /// falls due while the session is disconnected (measured: 270–2 100 of 15 000 acknowledged
    /// messages never reached the new owner with a 10 s wait, 0 with none). Redeliveries that
    /// come after newer messages are late fills for the exact sequence check.
    pub ack_wait_ms: Option<u64>,
    /// The cluster's MQTT listeners, `mqtt://host:port` (default: `mqtt.url` alone).
    pub mqtt_urls: Option<Vec<String>>,
}

/// Typed `[cluster]` settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Partitions N.
    pub partitions: u32,
    /// PostgreSQL URL.
    pub postgres_url: String,
    /// This instance's id.
    pub instance_id: String,
    /// Lease time to live.
    pub lease_ttl: Duration,
    /// The broker's ack wait.
    pub ack_wait: Duration,
    /// MQTT listeners (`host`, `port`).
    pub brokers: Vec<(String, u16)>,
}

impl ClusterConfig {
    /// Checks `[cluster]`; `None` when clustered mode is off. `mqtt` is the `[mqtt]` broker,
    /// the default listener.
    pub fn from_raw(
        raw: RawCluster,
        mqtt: &MqttConfig,
    ) -> Result<Option<ClusterConfig>, ConfigError> {
        if !raw.enabled.unwrap_or(false) {
            return Ok(None);
        }
        let partitions = raw.partitions.unwrap_or(64);
        if !(1..=4096).contains(&partitions) {
            return Err(ConfigError::Value {
                key: "cluster.partitions",
                why: format!("{partitions}: 1 to 4096, and equal to the broker mapping's"),
            });
        }
        let postgres_url = raw.postgres_url.ok_or(ConfigError::Value {
            key: "cluster.postgres_url",
            why: "required when cluster.enabled = true (e.g. postgres://gw@127.0.0.1:5432/gw)"
                .into(),
        })?;
        if postgres_url.parse::<tokio_postgres::Config>().is_err() {
            return Err(ConfigError::Value {
                key: "cluster.postgres_url",
                why: format!("{:?} is not a PostgreSQL URL", redact_url(&postgres_url)),
            });
        }
        let instance_id = match raw.instance_id {
            Some(id) if !id.trim().is_empty() && id.len() <= 128 => id,
            Some(_) => {
                return Err(ConfigError::Value {
                    key: "cluster.instance_id",
                    why: "1 to 128 characters".into(),
                })
            }
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "gateway".into());
                format!("{host}-{}", std::process::id())
            }
        };
        let lease_ttl = Duration::from_millis(raw.lease_ttl_ms.unwrap_or(5000));
        if !(Duration::from_millis(300)..=Duration::from_secs(600)).contains(&lease_ttl) {
            return Err(ConfigError::Value {
                key: "cluster.lease_ttl_ms",
                why: "300 to 600000".into(),
            });
        }
        let ack_wait = Duration::from_millis(raw.ack_wait_ms.unwrap_or(0));
        let urls = raw
            .mqtt_urls
            .unwrap_or_else(|| vec![format!("mqtt://{}:{}", mqtt.host, mqtt.port)]);
        let mut brokers = Vec::new();
        for u in urls {
            let parsed = url::Url::parse(&u)
                .ok()
                .filter(|p| matches!(p.scheme(), "mqtt" | "tcp") && p.host_str().is_some());
            let Some(parsed) = parsed else {
                return Err(ConfigError::Value {
                    key: "cluster.mqtt_urls",
                    why: format!("{u:?} is not mqtt://host:port"),
                });
            };
            brokers.push((
                parsed.host_str().unwrap_or_default().to_owned(),
                parsed.port().unwrap_or(1883),
            ));
        }
        if brokers.is_empty() {
            return Err(ConfigError::Value {
                key: "cluster.mqtt_urls",
                why: "at least one listener".into(),
            });
        }
        Ok(Some(ClusterConfig {
            partitions,
            postgres_url,
            instance_id,
            lease_ttl,
            ack_wait,
            brokers,
        }))
    }
}

/// `url` with its password, if any, replaced by `***` (for error messages and logs).
fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_file_means_embedded_broker_and_sqlite() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.mqtt.broker, BrokerMode::Embedded);
        assert_eq!(c.mqtt.port, 1883);
        assert!(
            matches!(c.store, StoreConfig::Sqlite(t) if t == crate::store::sqlite::SqliteTuning::default())
        );
        assert_eq!(c.batch.max_messages, DEFAULT_BATCH_MESSAGES);
    }

    #[test]
    fn clustered_mode_waits_longer_for_a_batch_unless_told() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        let cluster =
            "[cluster]\nenabled = true\npostgres_url = \"postgres://gw@127.0.0.1:5432/gw\"\n";
        std::fs::write(&path, cluster).unwrap();
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(
            c.batch.max_wait,
            Duration::from_millis(DEFAULT_CLUSTER_BATCH_WAIT_MS)
        );
        std::fs::write(&path, format!("[batch]\nmax_wait_ms = 20\n{cluster}")).unwrap();
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(c.batch.max_wait, Duration::from_millis(20));
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(
            c.batch.max_wait,
            Duration::from_millis(DEFAULT_BATCH_WAIT_MS)
        );
    }

    #[test]
    fn env_overrides_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "store = \"influx_v1\"\n[influx]\nurl = \"http://db:8086\"\n[batch]\nmax_messages = 100\n").unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("GATEWAY__BATCH__MAX_MESSAGES", "200"),
                ("GATEWAY__MQTT__URL", "mqtt://broker:1884"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.batch.max_messages, 200);
        assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("broker", 1884));
        let StoreConfig::Influx(i) = c.store else {
            panic!("expected influx")
        };
        assert_eq!(i.url.as_str(), "http://db:8086/");
    }

    #[test]
    fn the_example_file_loads_with_analytics_on() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway.example.toml");
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert!(c.analytics.enabled);
        assert_eq!(c.analytics.clock_every_s, 300);
        let off = Config::load(
            Some(&path),
            env(&[("GATEWAY__ANALYTICS__ENABLED", "false")]),
        )
        .unwrap();
        assert!(!off.analytics.enabled);
    }

    #[test]
    fn a_maintenance_table_is_checked_and_placed_under_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "data_dir = \"/srv/gw\"\n[maintenance]\n[maintenance.delivery]\nhmac_secret = \"0123456789abcdef\"\n").unwrap();
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(
            c.maintenance.unwrap().db_path,
            std::path::Path::new("/srv/gw/maintenance.db")
        );
        std::fs::write(
            &path,
            "[maintenance]\n[maintenance.delivery]\nhmac_secret = \"short\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("maintenance"), "{err}");
        assert!(Config::load(None, env(&[])).unwrap().maintenance.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Config::load(None, env(&[("GATEWAY__STORE", "mongo")])).unwrap_err();
        assert!(err.to_string().contains("store"), "{err}");
        let err = Config::load(None, env(&[("GATEWAY__STORE", "influx_v2")])).unwrap_err();
        assert!(err.to_string().contains("influx.org"), "{err}");
        let err = Config::load(None, env(&[("GATEWAY__MQTT__TYPO", "1")])).unwrap_err();
        assert!(err.to_string().contains("typo"), "{err}");
    }

    #[test]
    fn file_errors_point_at_the_users_line_without_quoting_other_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "data_dir = \"d\"\n[mqtt]\ntypo = 1\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("g.toml:3:1"), "{err}");
        assert!(err.contains("typo = 1"), "{err}");

        std::fs::write(
            &path,
            "data_dir = \"d\"\n\n[maintenance]\ntick_interval_s = 5\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("g.toml:3:1"), "{err}");
        assert!(err.contains("delivery"), "{err}");
        assert!(!err.contains("db_path ="), "no re-serialised TOML: {err}");

        std::fs::write(
            &path,
            "store = \"influx_v1\"\n[influx]\nurl = \"127.0.0.1:8086\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("g.toml:3:1") && err.contains("influx.url"),
            "{err}"
        );
        std::fs::write(
            &path,
            "store = \"influx_v1\"\n[influx]\nurl = \"localhost:8086\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("influx.url") && err.contains("http://"),
            "{err}"
        );

        // A value set by the environment is blamed on the environment.
        let err = Config::load(Some(&path), env(&[("GATEWAY__INFLUX__URL", "ftp://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("GATEWAY__INFLUX__URL"), "{err}");
        // And the environment can fix what the file lacks.
        std::fs::write(
            &path,
            "store = \"influx_v2\"\n[influx]\norg = \"o\"\nbucket = \"b\"\n",
        )
        .unwrap();
        Config::load(Some(&path), env(&[("GATEWAY__INFLUX__TOKEN", "t")])).unwrap();
    }

    #[test]
    fn retention_health_and_log_sections() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.retention.dead_letters.max_count, 10_000);
        assert_eq!(
            c.retention.telemetry,
            Some(Duration::from_secs(400 * 86_400))
        );
        assert_eq!(c.log_format, LogFormat::Text);
        let c = Config::load(
            None,
            env(&[
                ("GATEWAY__LOG__FORMAT", "json"),
                ("GATEWAY__RETENTION__TELEMETRY_DAYS", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.retention.telemetry, None);
        let err = Config::load(None, env(&[("GATEWAY__RETENTION__AUDIT_DAYS", "10")])).unwrap_err();
        assert!(err.to_string().contains("audit_days"), "{err}");
    }
}
