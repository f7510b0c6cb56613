//! Harness for the end-to-end tests and the ingest benchmark.
//!
//! Starts real services on free loopback ports in temporary directories and
//! stops them by PID when dropped: [`Mosquitto`] (with the persistence and
//! in-flight settings of `deploy/mosquitto/mosquitto.conf`), [`Influx`]
//! (Debian's InfluxDB 1.6.7, v1 HTTP API) and the gateway itself
//! ([`GatewayProcess`], the real binary, so a test can `kill -9` it).
//! [`publish_all`] is a QoS 1 publisher that reconnects and counts PUBACKs;
//! [`fleet_messages`] makes a deterministic burst of valid contract messages.
//!
//! [`browser`] adds ChromeDriver and headless Chromium for the page tests.
//!
//! A missing `mosquitto`, `influxd`, `chromium` or `chromedriver` is an error, never a
//! skip: `scripts/test` installs them from Debian packages.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use protocol::message::*;

pub mod browser;
pub mod cluster;
pub use browser::{Browser, ChromeDriver};
use protocol::topic::{Channel, Topic};

pub mod dynsec;
pub mod registry;
pub mod smtp;
pub mod webhook;
pub use smtp::SmtpServer;

/// A free TCP port on 127.0.0.1 (bound, then released), never the same twice in one test
/// process.
///
/// It is taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), so no
/// outgoing connection can be given it as its source port between this call and the service
/// binding it: a NATS node dialling its peers' routes before they listen once took the port
/// meant for a peer, which then could not start (CI: "no suitable peers for placement" for
/// the whole start-up wait). Falls back to a port the kernel picks when that range is empty.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;

    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const LOWEST: u16 = 20_000;

    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let random = RandomState::new();
    if ephemeral_low > LOWEST + 100 {
        let span = u64::from(ephemeral_low - LOWEST);
        for attempt in 0u64..1_000 {
            let port = LOWEST + (random.hash_one(attempt) % span) as u16;
            if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed_out.insert(port);
                return port;
            }
        }
    }
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        if port == 0 || handed_out.insert(port) {
            return port;
        }
    }
}

/// Finds a service binary on PATH or in /usr/sbin, or says how to install it.
pub fn require_binary(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("`{name}` is not installed. Run `scripts/test` (it installs mosquitto, influxdb, chromium and chromium-driver from Debian packages), or `apt-get install -y influxdb mosquitto chromium chromium-driver`."))
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn wait_for_port(port: u16, what: &str) -> Result<()> {
    wait_until(Duration::from_secs(20), what, || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    })
}

/// Sends `signal` and waits up to 15 s. Returns the exit status when the process ended on
/// its own, `None` when it had to be killed (or was not running).
pub(crate) fn stop_child(
    child: &mut Option<Child>,
    signal: &str,
) -> Option<std::process::ExitStatus> {
    let mut c = child.take()?;
    let _ = Command::new("kill")
        .arg(signal)
        .arg(c.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = c.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

/// A temporary directory Mosquitto can write once it has dropped root: started as root, it
/// switches to the `mosquitto` user, which cannot write a 0700 directory owned by root, and
/// then every persistence save fails ("Permission denied") and a restart loses the sessions.
fn broker_dir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .context("opening the broker's directory to the mosquitto user")?;
    Ok(dir)
}

/// A Mosquitto broker on a free port, with persistence in a temporary directory.
pub struct Mosquitto {
    child: Option<Child>,
    /// The MQTT port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// The broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts a broker. The configuration mirrors `deploy/mosquitto/mosquitto.conf`
    /// (persistence, a 1000-message in-flight window, a deep offline queue) minus
    /// authentication, which the tests do not exercise.
    pub fn start() -> Result<Mosquitto> {
        let dir = broker_dir()?;
        let port = free_port();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             autosave_interval 1\nmax_inflight_messages 10000\nmax_queued_messages 1000000\nmax_queued_bytes 0\n\
             message_size_limit 0\nlog_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\n",
            dir.path().display(),
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf)?;
        let mut m = Mosquitto {
            child: None,
            port,
            dir,
        };
        m.launch()?;
        Ok(m)
    }

    fn launch(&mut self) -> Result<()> {
        let bin = require_binary("mosquitto")?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto")?;
        self.child = Some(child);
        wait_for_port(self.port, "mosquitto to listen")
    }

    /// A broker with `settings` (Mosquitto configuration lines) instead of the deployed
    /// queue and in-flight limits, e.g. Mosquitto's defaults (`""`).
    pub fn start_with(settings: &str) -> Result<Mosquitto> {
        let dir = broker_dir()?;
        let port = free_port();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             {settings}\nlog_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\n",
            dir.path().display(),
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf)?;
        let mut m = Mosquitto {
            child: None,
            port,
            dir,
        };
        m.launch()?;
        Ok(m)
    }

    /// Stops the broker (SIGTERM) without starting it again.
    pub fn stop(&mut self) {
        stop_child(&mut self.child, "-TERM");
    }

    /// Starts a stopped broker again, same port and persistence.
    pub fn start_again(&mut self) -> Result<()> {
        self.launch()
    }

    /// Stops the broker gracefully (it saves its persistence file) and starts it again.
    pub fn restart(&mut self) -> Result<()> {
        stop_child(&mut self.child, "-TERM");
        self.launch()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        stop_child(&mut self.child, "-KILL");
    }
}

/// An InfluxDB 1.x server on free ports, with its data in a temporary directory.
pub struct Influx {
    child: Option<Child>,
    /// The HTTP port.
    pub http_port: u16,
    dir: tempfile::TempDir,
    http: reqwest::blocking::Client,
}

impl Influx {
    /// The process id of `influxd`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts a server.
    pub fn start() -> Result<Influx> {
        let dir = tempfile::tempdir()?;
        let http_port = free_port();
        let rpc_port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc_port}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{http_port}\"\n  log-enabled = false\n  max-body-size = 0\n\
             [monitor]\n  store-enabled = false\n\
             [continuous_queries]\n  enabled = false\n"
        );
        std::fs::write(dir.path().join("influxdb.conf"), conf)?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut i = Influx {
            child: None,
            http_port,
            dir,
            http,
        };
        i.launch()?;
        Ok(i)
    }

    fn launch(&mut self) -> Result<()> {
        let bin = require_binary("influxd")?;
        let log = std::fs::File::create(self.dir.path().join("influxd.log"))?;
        let child = Command::new(bin)
            .arg("-config")
            .arg(self.dir.path().join("influxdb.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting influxd")?;
        self.child = Some(child);
        let ping = format!("{}/ping", self.url());
        wait_until(Duration::from_secs(30), "influxd to answer /ping", || {
            self.http
                .get(&ping)
                .send()
                .ok()
                .filter(|r| r.status().as_u16() == 204)
                .map(|_| ())
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts a server with authentication on and one admin user.
    pub fn start_with_auth(user: &str, password: &str) -> Result<Influx> {
        let mut i = Influx::start()?;
        let conf_path = i.dir.path().join("influxdb.conf");
        let conf = std::fs::read_to_string(&conf_path)?
            .replace("[http]\n", "[http]\n  auth-enabled = true\n");
        i.stop();
        std::fs::write(&conf_path, conf)?;
        i.launch()?;
        // The first admin user may be created without credentials.
        i.query(
            "",
            &format!("CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES"),
        )?;
        Ok(i)
    }

    /// Stops the server (SIGTERM).
    pub fn stop(&mut self) {
        stop_child(&mut self.child, "-TERM");
    }

    /// Starts it again with the same data and ports.
    pub fn start_again(&mut self) -> Result<()> {
        self.launch()
    }

    /// Runs an InfluxQL query and returns the JSON answer.
    pub fn query(&self, db: &str, q: &str) -> Result<serde_json::Value> {
        let resp = self
            .http
            .post(format!("{}/query", self.url()))
            .form(&[("db", db), ("q", q), ("epoch", "ms")])
            .send()?;
        let v: serde_json::Value = resp.json()?;
        if let Some(e) = v.pointer("/results/0/error").or_else(|| v.get("error")) {
            bail!("InfluxQL error for {q:?}: {e}");
        }
        Ok(v)
    }

    /// Creates a database.
    pub fn create_db(&self, db: &str) -> Result<()> {
        self.query(db, &format!("CREATE DATABASE \"{db}\""))
            .map(|_| ())
    }

    /// Sums the first value column of every series of a query's first result
    /// (e.g. `SELECT count(seq) FROM toilet, purifier, shower`).
    pub fn sum_counts(&self, db: &str, q: &str) -> Result<i64> {
        let v = self.query(db, q)?;
        Ok(series_counts(&v).iter().map(|(_, n)| n).sum())
    }

    /// Per-series `(tags, count)` of a count query.
    pub fn counts_by_series(&self, db: &str, q: &str) -> Result<Vec<(String, i64)>> {
        Ok(series_counts(&self.query(db, q)?))
    }
}

fn series_counts(v: &serde_json::Value) -> Vec<(String, i64)> {
    let Some(series) = v.pointer("/results/0/series").and_then(|s| s.as_array()) else {
        return Vec::new();
    };
    series
        .iter()
        .map(|s| {
            let tags = s.get("tags").map(|t| t.to_string()).unwrap_or_default();
            let key = format!(
                "{}{}",
                s.get("name").and_then(|n| n.as_str()).unwrap_or(""),
                tags
            );
            let n = s
                .pointer("/values/0/1")
                .and_then(|x| x.as_i64())
                .unwrap_or(0);
            (key, n)
        })
        .collect()
}

impl Drop for Influx {
    fn drop(&mut self) {
        stop_child(&mut self.child, "-KILL");
    }
}

/// Where the gateway under test stores telemetry.
#[derive(Debug, Clone)]
pub enum StoreTarget {
    /// InfluxDB v1 at `url`, database `db`.
    Influx {
        /// Base URL.
        url: String,
        /// Database.
        db: String,
    },
    /// The embedded SQLite store.
    Sqlite,
}

/// The gateway binary running as a child process, with its own data directory.
pub struct GatewayProcess {
    child: Option<Child>,
    /// HTTP port of /health and /metrics.
    pub http_port: u16,
    config: PathBuf,
    /// The data directory (kept across restarts).
    pub data_dir: PathBuf,
    log: PathBuf,
    http: reqwest::blocking::Client,
    /// An operator token for the gateway's own endpoints, made with `gateway tokens create`.
    pub token: String,
}

/// Runs the gateway binary with `--config config` and `args`; its stdout, trimmed.
pub fn gateway_cli(config: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(gateway_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .context("running the gateway binary")?;
    if !out.status.success() {
        bail!(
            "gateway {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Path of the gateway binary built for the tests (`gateway-under-test`, see
/// `tests/Cargo.toml`): `$GATEWAY_BIN`, or next to the running executable
/// (`target/<profile>/` for the bench, `target/<profile>/deps/..` for tests).
pub fn gateway_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    [
        dir.join("gateway-under-test"),
        dir.join("../gateway-under-test"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .unwrap_or_else(|| dir.join("gateway-under-test"))
}

impl GatewayProcess {
    /// Writes a config for an external broker on `mqtt_port` and starts the gateway.
    pub fn spawn(
        work_dir: &Path,
        mqtt_port: u16,
        store: &StoreTarget,
        client_id: &str,
        extra_toml: &str,
    ) -> Result<GatewayProcess> {
        let data_dir = work_dir.join("data");
        let http_port = free_port();
        let store_toml = match store {
            StoreTarget::Influx { url, db } => format!("store = \"influx_v1\"\n[influx]\nurl = \"{url}\"\ndatabase = \"{db}\"\ntimeout_ms = 3000\n"),
            StoreTarget::Sqlite => "store = \"sqlite\"\n".to_owned(),
        };
        let config = work_dir.join("gateway.toml");
        let mut f = std::fs::File::create(&config)?;
        write!(
            f,
            "data_dir = \"{}\"\n{store_toml}[mqtt]\nbroker = \"external\"\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nclient_id = \"{client_id}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n{extra_toml}",
            data_dir.display()
        )?;
        let token = gateway_cli(
            &config,
            &["tokens", "create", "--role", "operator", "--ttl-days", "2"],
        )?;
        let mut g = GatewayProcess {
            child: None,
            http_port,
            config,
            data_dir,
            log: work_dir.join("gateway.log"),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            token,
        };
        g.launch()?;
        Ok(g)
    }

    fn launch(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(gateway_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("--report-every")
            .arg("0")
            .env(
                "GATEWAY_LOG",
                std::env::var("GATEWAY_LOG").unwrap_or_else(|_| "info,rumqttd=warn".into()),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the gateway binary")?;
        self.child = Some(child);
        wait_until(
            Duration::from_secs(20),
            "the gateway to connect to the broker",
            || {
                self.metrics()
                    .ok()
                    .filter(|m| m["mqtt_connects"].as_u64().unwrap_or(0) >= 1)
            },
        )
        .map_err(|e| anyhow!("{e}; gateway log:\n{}", self.log_tail()))?;
        Ok(())
    }

    /// The last lines of the gateway's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `GET path` with a bearer token (the harness's operator token when `None`): the
    /// status and the body.
    pub fn get(&self, path: &str, token: Option<&str>) -> Result<(u16, String)> {
        let resp = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.http_port))
            .bearer_auth(token.unwrap_or(&self.token))
            .send()?;
        Ok((resp.status().as_u16(), resp.text()?))
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The config file the gateway runs with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// `GET path` (e.g. `/devices/x`) with the operator token, as JSON; a non-2xx answer is an error.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let resp = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.http_port))
            .bearer_auth(&self.token)
            .send()?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", resp.text().unwrap_or_default());
        }
        Ok(resp.json()?)
    }

    /// `GET /metrics.json`: the counters as JSON.
    pub fn metrics(&self) -> Result<serde_json::Value> {
        self.get_json("/metrics.json")
    }

    /// Publishes a simulated fleet's `messages` (QoS 1, as `client_id`) to the broker on
    /// `broker_port`, checks the broker took every one, and waits until the gateway has
    /// acknowledged and analysed them all; returns its metrics then.
    pub fn publish_fleet(
        &self,
        broker_port: u16,
        client_id: &str,
        messages: Vec<(String, Vec<u8>)>,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        let total = messages.len() as u64;
        let taken = publish_all(broker_port, client_id, messages, None, None)?;
        if taken as u64 != total {
            bail!("the broker acknowledged {taken} of {total} messages");
        }
        wait_until(
            timeout,
            "every simulated message to be acknowledged and analysed",
            || {
                let m = self.metrics().ok()?;
                (m["acked"].as_u64()? >= total && m["analysed"].as_u64()? >= total).then_some(m)
            },
        )
        .map_err(|e| anyhow!("{e}\n{}", self.log_tail()))
    }

    /// The newest `limit` dead letters (summaries, newest first), page by page.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        let mut before: Option<i64> = None;
        while out.len() < limit {
            let path = match before {
                Some(b) => format!("/dead-letters?limit=100&before={b}"),
                None => "/dead-letters?limit=100".to_owned(),
            };
            let page = self.get_json(&path)?;
            out.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_before"].as_i64() {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: no flush, no goodbye.
    pub fn kill9(&mut self) {
        stop_child(&mut self.child, "-KILL");
    }

    /// Graceful stop (SIGTERM: the batch in hand is flushed).
    pub fn stop(&mut self) {
        stop_child(&mut self.child, "-TERM");
    }

    /// Graceful stop that reports how it ended: the exit status when the gateway exited
    /// by itself within 15 s of SIGTERM, `None` when it had to be killed.
    pub fn stop_with_status(&mut self) -> Option<std::process::ExitStatus> {
        stop_child(&mut self.child, "-TERM")
    }

    /// Starts the gateway again with the same config and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.launch()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        stop_child(&mut self.child, "-KILL");
    }
}

/// Base timestamp for generated messages: now minus one day, so every message
/// is inside the gateway's default window.
pub fn base_ts() -> i64 {
    gateway::clock::now_ms() - 86_400_000
}

/// Device id `i` of a generated fleet, with its model.
pub fn fleet_device(i: usize) -> (String, Model) {
    let model = [Model::Toilet, Model::Purifier, Model::Shower][i % 3];
    (format!("{}-{i:05}", model.as_str()), model)
}

/// One valid telemetry message for fleet device `device` at round `round`.
pub fn telemetry_message(device: usize, round: u32, base_ts: i64) -> (String, Vec<u8>) {
    let (id, model) = fleet_device(device);
    let r = u64::from(round);
    let cartridge = |slot, kind| Cartridge {
        slot,
        kind,
        ml_since_replacement: r * 1200,
        replacements: 0,
        rated_l: None,
    };
    let reading = match model {
        Model::Toilet => Reading::Toilet(ToiletReading {
            seat_sessions: round,
            washes: round / 2,
            wash_seconds: round * 20,
            flushes: round,
            water_ml: r * 4500,
            heater_wh: round * 2,
            water_temp_c: 36.5,
            seat_temp_c: 34.0,
        }),
        Model::Purifier => Reading::Purifier(PurifierReading {
            dispensed_ml: r * 1200,
            tds_in_ppm: 300,
            tds_out_ppm: 10,
            inlet_pressure_kpa: 260.0,
            pump_seconds: round * 8,
            cartridges: [
                cartridge(0, CartridgeKind::Sediment),
                cartridge(1, CartridgeKind::ReverseOsmosis),
            ]
            .into_iter()
            .collect(),
        }),
        Model::Shower => Reading::Shower(ShowerReading {
            showers: round,
            water_ml: r * 50_000,
            shower_seconds: round * 400,
            temp_c: 39.0,
            pressure_kpa: 310.0,
            cartridges: [cartridge(0, CartridgeKind::Shower)].into_iter().collect(),
        }),
    };
    let msg = Telemetry {
        v: 1,
        device_id: id.as_str().try_into().unwrap_or_default(),
        boot_id: 1,
        seq: round,
        ts: base_ts + i64::from(round) * 1000,
        fw: Some("1.2.0".try_into().unwrap_or_default()),
        reading,
    };
    (
        Topic::format(&id, Channel::Telemetry).to_string(),
        serde_json::to_vec(&msg).unwrap_or_default(),
    )
}

/// `devices × rounds` telemetry messages, round by round (as a fleet would publish).
pub fn fleet_messages(devices: usize, rounds: u32, base_ts: i64) -> Vec<(String, Vec<u8>)> {
    (0..rounds)
        .flat_map(|r| (0..devices).map(move |d| telemetry_message(d, r, base_ts)))
        .collect()
}

/// InfluxQL counting every stored telemetry point of the fleet.
pub const COUNT_TELEMETRY: &str = "SELECT count(seq) FROM toilet, purifier, shower";

/// Publishes every message with QoS 1 through one persistent session and
/// returns which of them the broker acknowledged (PUBACKs are matched to
/// messages by packet id).
///
/// rumqttc re-sends in-flight messages after a reconnect. A message still
/// unacknowledged after a quiet spell of `give_up_after_quiet` was lost on a
/// dying connection before the broker took responsibility for it: it is reported
/// as not accepted. `acked` (if given) counts acknowledged messages as they
/// arrive, for tests that act mid-stream.
pub fn publish_tracked(
    port: u16,
    client_id: &str,
    messages: Vec<(String, Vec<u8>)>,
    acked: Option<Arc<AtomicUsize>>,
    rate_per_s: Option<u32>,
    give_up_after_quiet: Duration,
) -> Result<Vec<bool>> {
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let acked = acked.unwrap_or_default();
    rt.block_on(async move {
        let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(100)
            .set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
        let total = messages.len();
        let messages = Arc::new(messages);
        // Indices in the order they were handed to rumqttc, not yet given a packet id.
        let handed: Arc<Mutex<VecDeque<usize>>> = Arc::default();
        let (queue_tx, mut queue_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        for i in 0..total {
            let _ = queue_tx.send(i);
        }
        drop(queue_tx);
        let publisher = {
            let (client, messages, handed) =
                (client.clone(), Arc::clone(&messages), Arc::clone(&handed));
            tokio::spawn(async move {
                let start = Instant::now();
                let mut sent = 0usize;
                while let Some(i) = queue_rx.recv().await {
                    if let Some(rate) = rate_per_s {
                        let due = start + Duration::from_secs_f64(sent as f64 / f64::from(rate));
                        tokio::time::sleep_until(due.into()).await;
                    }
                    sent += 1;
                    let (topic, payload) = &messages[i];
                    handed.lock().map_err(|_| anyhow!("poisoned"))?.push_back(i);
                    client
                        .publish(
                            topic.clone(),
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            payload.clone(),
                        )
                        .await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        };
        let mut in_flight: HashMap<u16, usize> = HashMap::new();
        let mut done = vec![false; total];
        let mut done_count = 0usize;
        let mut last_progress = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(600);
        while done_count < total {
            if Instant::now() > deadline {
                bail!("publisher timed out with {done_count} of {total} acknowledged");
            }
            if last_progress.elapsed() > give_up_after_quiet && publisher.is_finished() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await {
                Ok(Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(pkid)))) => {
                    if let std::collections::hash_map::Entry::Vacant(slot) = in_flight.entry(pkid) {
                        if let Some(i) = handed.lock().map_err(|_| anyhow!("poisoned"))?.pop_front()
                        {
                            slot.insert(i);
                        }
                    }
                }
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(ack)))) => {
                    if let Some(i) = in_flight.remove(&ack.pkid) {
                        if !done[i] {
                            done[i] = true;
                            done_count += 1;
                            acked.fetch_add(1, Ordering::SeqCst);
                            last_progress = Instant::now();
                        }
                    }
                }
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        publisher.abort();
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
        Ok(done)
    })
}

/// Publishes every message (see [`publish_tracked`]) and returns how many the broker acknowledged.
pub fn publish_all(
    port: u16,
    client_id: &str,
    messages: Vec<(String, Vec<u8>)>,
    acked: Option<Arc<AtomicUsize>>,
    rate_per_s: Option<u32>,
) -> Result<usize> {
    let done = publish_tracked(
        port,
        client_id,
        messages,
        acked,
        rate_per_s,
        Duration::from_secs(30),
    )?;
    Ok(done.iter().filter(|d| **d).count())
}

/// Every stored telemetry point of the fleet as `(device_id, seq)`.
pub fn stored_telemetry_keys(
    influx: &Influx,
    db: &str,
) -> Result<std::collections::HashSet<(String, i64)>> {
    let v = influx.query(
        db,
        "SELECT seq FROM toilet, purifier, shower GROUP BY device_id",
    )?;
    let mut keys = std::collections::HashSet::new();
    for s in v
        .pointer("/results/0/series")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default()
    {
        let device = s
            .pointer("/tags/device_id")
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_owned();
        for row in s
            .get("values")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
        {
            keys.insert((device.clone(), row[1].as_i64().unwrap_or(-1)));
        }
    }
    Ok(keys)
}

/// A bare QoS 1 subscriber with a persistent session that records every fleet
/// telemetry message the broker delivers to it, as `(device_id, seq)`: the
/// oracle of what the broker accepted, across broker restarts.
pub struct Witness {
    seen: Arc<std::sync::Mutex<std::collections::HashSet<(String, i64)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Witness {
    /// Connects, subscribes to `fixtures/+/telemetry` and returns once subscribed.
    pub fn start(port: u16, client_id: &str) -> Result<Witness> {
        let seen: Arc<std::sync::Mutex<std::collections::HashSet<(String, i64)>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2, sub2, id) = (
            Arc::clone(&seen),
            Arc::clone(&stop),
            Arc::clone(&subscribed),
            client_id.to_owned(),
        );
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
                opts.set_clean_session(false)
                    .set_keep_alive(Duration::from_secs(30));
                let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
                while !stop2.load(Ordering::SeqCst) {
                    match tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await {
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => {
                            sub2.store(true, Ordering::SeqCst)
                        }
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))))
                            if !ack.session_present =>
                        {
                            let _ = client
                                .subscribe("fixtures/+/telemetry", rumqttc::QoS::AtLeastOnce)
                                .await;
                        }
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                                let key = (
                                    v["device_id"].as_str().unwrap_or_default().to_owned(),
                                    v["seq"].as_i64().unwrap_or(-1),
                                );
                                if let Ok(mut s) = seen2.lock() {
                                    s.insert(key);
                                }
                            }
                        }
                        Ok(Ok(_)) | Err(_) => {}
                        Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
        });
        wait_until(Duration::from_secs(10), "the witness subscription", || {
            subscribed.load(Ordering::SeqCst).then_some(())
        })?;
        Ok(Witness {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// How many distinct messages it has seen.
    pub fn count(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Stops and returns everything seen.
    pub fn finish(mut self) -> std::collections::HashSet<(String, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// CPU time (user + system) the process `pid` has used so far, seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_user_system_seconds(pid).map(|(user, system)| user + system)
}

/// CPU time the process `pid` has used so far in user space and in the kernel, seconds.
pub fn cpu_user_system_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks_per_second();
    Some((utime / ticks, stime / ticks))
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 if it cannot tell).
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0)
}
