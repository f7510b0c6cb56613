//! Harness for clustered mode: a 3-node NATS cluster started from
//! `deploy/nats/cluster.conf` ([`NatsCluster`]), PostgreSQL 15 as the `postgres` user
//! ([`Postgres`]), gateway instances in clustered mode ([`cluster_gateway`]) and a QoS 1
//! publisher that fails over between the cluster's nodes and records every PUBACK
//! ([`publish_to_cluster`]). Everything runs on free loopback ports in temporary
//! directories and is stopped by PID when dropped.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::{free_port, require_binary, stop_child, wait_until, GatewayProcess, StoreTarget};

/// Partitions of the shipped mapping (`deploy/nats/cluster.conf`).
pub const PARTITIONS: u32 = 64;

/// `deploy/nats/cluster.conf`, the file the nodes run.
pub fn nats_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/cluster.conf")
}

/// One node of the cluster.
pub struct NatsNode {
    child: Option<Child>,
    /// Server name (n1, n2, n3).
    pub name: String,
    /// The MQTT listener's port.
    pub mqtt_port: u16,
    client_port: u16,
    cluster_port: u16,
    store_dir: PathBuf,
    log: PathBuf,
}

/// One cluster at a time per test process: two clusters forming JetStream at once on a
/// two-core machine can take longer than the start-up wait.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Three nats-server nodes (JetStream, MQTT, R3 streams, the 64-partition mapping).
pub struct NatsCluster {
    /// The nodes.
    pub nodes: Vec<NatsNode>,
    /// The configuration every node runs: `deploy/nats/cluster.conf`, or a copy of it with an
    /// `authorization` block appended ([`NatsCluster::start_with_authorization`]).
    config: PathBuf,
    /// The login of the start-up probe (`None`: anonymous).
    probe_login: Option<(String, String)>,
    _dir: tempfile::TempDir,
    /// Held while the cluster runs (`None` only inside a start attempt).
    _turn: Option<std::sync::MutexGuard<'static, ()>>,
}

/// Attempts at starting a cluster before the test fails.
const START_ATTEMPTS: u32 = 3;
/// How long one attempt waits for each node's first MQTT session (JetStream forms in a few
/// seconds here; a cluster that has not after this will not).
const FIRST_START_WAIT: Duration = Duration::from_secs(90);
/// How long a restarted node may take to accept MQTT again.
const RESTART_WAIT: Duration = Duration::from_secs(120);

impl NatsCluster {
    /// Starts three nodes and waits until each accepts an MQTT session (JetStream up).
    /// Waits first for any other cluster of this test process to stop.
    pub fn start() -> Result<NatsCluster> {
        NatsCluster::start_inner(None)
    }

    /// As [`NatsCluster::start`], with `authorization` (a NATS `authorization { ... }` block)
    /// appended to the deployed `cluster.conf`; `probe` is a login it admits, used to wait for
    /// the nodes.
    pub fn start_with_authorization(
        authorization: &str,
        probe: (&str, &str),
    ) -> Result<NatsCluster> {
        NatsCluster::start_inner(Some((
            authorization.to_owned(),
            (probe.0.to_owned(), probe.1.to_owned()),
        )))
    }

    fn start_inner(auth: Option<(String, (String, String))>) -> Result<NatsCluster> {
        let turn = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A cluster that does not come up (a node that could not start, or JetStream that
        // never placed the MQTT streams) is stopped and started again on new ports and a new
        // directory, twice at most; each failed attempt's reason and logs are printed.
        let mut last_failure = None;
        for attempt in 1..=START_ATTEMPTS {
            match NatsCluster::start_once(auth.clone()) {
                Ok(mut cluster) => {
                    cluster._turn = Some(turn);
                    return Ok(cluster);
                }
                Err(e) => {
                    eprintln!("nats cluster start, attempt {attempt} of {START_ATTEMPTS}: {e:#}");
                    last_failure = Some(e);
                }
            }
        }
        let last = last_failure.map_or_else(String::new, |e| format!("{e:#}"));
        bail!(
            "the 3-node NATS cluster did not start in {START_ATTEMPTS} attempts (each printed \
             above); the last: {last}"
        )
    }

    /// One attempt: three nodes on fresh ports in a fresh directory (stopped when it fails:
    /// the cluster is dropped).
    fn start_once(auth: Option<(String, (String, String))>) -> Result<NatsCluster> {
        let dir = tempfile::tempdir()?;
        let nodes: Vec<NatsNode> = (1..=3)
            .map(|i| NatsNode {
                child: None,
                name: format!("n{i}"),
                mqtt_port: free_port(),
                client_port: free_port(),
                cluster_port: free_port(),
                store_dir: dir.path().join(format!("n{i}")),
                log: dir.path().join(format!("n{i}.log")),
            })
            .collect();
        let (config, probe_login) = match auth {
            None => (nats_config(), None),
            Some((block, probe)) => {
                let path = dir.path().join("cluster-with-authorization.conf");
                let deployed = std::fs::read_to_string(nats_config())?;
                std::fs::write(&path, format!("{deployed}\n{block}\n"))?;
                (path, Some(probe))
            }
        };
        let mut c = NatsCluster {
            nodes,
            config,
            probe_login,
            _dir: dir,
            _turn: None,
        };
        for i in 0..3 {
            c.launch(i)?;
        }
        for i in 0..3 {
            c.wait_mqtt(i, FIRST_START_WAIT)?;
        }
        Ok(c)
    }

    fn launch(&mut self, i: usize) -> Result<()> {
        let bin = require_binary("nats-server")?;
        let routes: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("nats-route://127.0.0.1:{}", self.nodes[j].cluster_port))
            .collect();
        let n = &mut self.nodes[i];
        std::fs::create_dir_all(&n.store_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)?;
        let mut command = Command::new(bin);
        if std::env::var_os("E2E_NATS_DEBUG").is_some() {
            // Connects, closes and their reasons, per client id (for chasing a lost partition).
            command.arg("-D");
        }
        let child = command
            .arg("-c")
            .arg(&self.config)
            .env("NATS_NAME", &n.name)
            .env("NATS_HOST", "127.0.0.1")
            .env("NATS_CLIENT_PORT", n.client_port.to_string())
            .env("NATS_CLUSTER_PORT", n.cluster_port.to_string())
            .env("NATS_MQTT_PORT", n.mqtt_port.to_string())
            .env("NATS_ROUTE_A", &routes[0])
            .env("NATS_ROUTE_B", &routes[1])
            .env("NATS_STORE_DIR", &n.store_dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nats-server")?;
        n.child = Some(child);
        Ok(())
    }

    /// Waits until node `i` completes an MQTT CONNECT (its session stream is reachable).
    /// Fails at once when a node's process has exited, with every node's log tail.
    fn wait_mqtt(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let port = self.nodes[i].mqtt_port;
        let start = Instant::now();
        loop {
            if mqtt_connects(port, self.probe_login.as_ref()) {
                return Ok(());
            }
            let exited: Vec<String> = self
                .nodes
                .iter_mut()
                .filter_map(|n| {
                    let status = n.child.as_mut()?.try_wait().ok()??;
                    Some(format!("{} exited ({status})", n.name))
                })
                .collect();
            if !exited.is_empty() {
                bail!(
                    "while waiting for nats node {} to accept MQTT: {}; logs:\n{}",
                    self.nodes[i].name,
                    exited.join(", "),
                    self.all_log_tails()
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "timed out after {timeout:?} waiting for nats node {} to accept MQTT; logs:\n{}",
                    self.nodes[i].name,
                    self.all_log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of every node's log, each under its name.
    fn all_log_tails(&self) -> String {
        (0..self.nodes.len())
            .map(|i| format!("--- {} ---\n{}", self.nodes[i].name, self.log_tail(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// The MQTT ports of the three nodes.
    pub fn mqtt_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.mqtt_port).collect()
    }

    /// `kill -9` of node `i`.
    pub fn kill9(&mut self, i: usize) {
        stop_child(&mut self.nodes[i].child, "-KILL");
    }

    /// Starts node `i` again (same ports and storage) and waits for its MQTT listener.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.launch(i)?;
        self.wait_mqtt(i, RESTART_WAIT)
    }

    /// Every line of the three nodes' logs that contains `needle`, prefixed by the node's name
    /// (e.g. one partition session's client id, to see its connects and closes).
    pub fn log_lines_with(&self, needle: &str) -> String {
        let mut out = Vec::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            out.extend(
                text.lines()
                    .filter(|l| l.contains(needle))
                    .map(|l| format!("{}: {l}", n.name)),
            );
        }
        out.join("\n")
    }

    /// The last lines of node `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            stop_child(&mut n.child, "-KILL");
        }
    }
}

/// Whether an MQTT CONNECT to `port` gets a successful CONNACK within 5 s.
fn mqtt_connects(port: u16, login: Option<&(String, String)>) -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new(format!("probe-{port}"), "127.0.0.1", port);
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        let (_client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(until, eventloop.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)))) => {
                    return a.code == rumqttc::ConnectReturnCode::Success
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    })
}

/// PostgreSQL 15 in a temporary directory, run as the `postgres` user (it refuses root).
pub struct Postgres {
    /// The TCP port (127.0.0.1).
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Postgres {
    /// `initdb` (trust auth, user `gw`, no fsync) and `pg_ctl start`.
    pub fn start() -> Result<Postgres> {
        let bin = PathBuf::from("/usr/lib/postgresql/15/bin");
        if !bin.join("initdb").is_file() {
            bail!("PostgreSQL 15 is not installed. Run `scripts/test` (it installs postgresql from Debian), or `apt-get install -y postgresql`.");
        }
        let dir = tempfile::tempdir()?;
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()?;
        if !status.success() {
            bail!("cannot hand {} to the postgres user", dir.path().display());
        }
        let pg = Postgres {
            port: free_port(),
            dir,
            bin,
        };
        pg.as_postgres("initdb", |c| {
            c.arg("-D").arg(pg.data()).args([
                "-U",
                "gw",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]);
        })?;
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            pg.port,
            pg.dir.path().display()
        );
        pg.as_postgres("pg_ctl", |c| {
            c.arg("-D")
                .arg(pg.data())
                .arg("-w")
                .arg("-l")
                .arg(pg.dir.path().join("postgres.log"))
                .arg("-o")
                .arg(&opts)
                .arg("start");
        })?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, tool: &str, args: impl FnOnce(&mut Command)) -> Result<String> {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .current_dir(self.dir.path());
        args(&mut c);
        let out = c
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {tool} as postgres"))?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The URL for the gateway's `cluster.postgres_url`.
    pub fn url(&self) -> String {
        format!("postgres://gw@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `sql` with psql; the unaligned, tuples-only output.
    pub fn query(&self, sql: &str) -> Result<String> {
        self.as_postgres("psql", |c| {
            c.args([
                "-h",
                "127.0.0.1",
                "-U",
                "gw",
                "-d",
                "postgres",
                "-Atq",
                "-F",
                "|",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql);
        })
    }

    /// Live partition leases per owner.
    pub fn owners(&self) -> Result<BTreeMap<String, usize>> {
        let out = self.query(
            "SELECT owner, count(*) FROM partition_leases WHERE owner IS NOT NULL AND lease_until > now() GROUP BY owner",
        )?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('|'))
            .filter_map(|(o, n)| Some((o.to_owned(), n.trim().parse().ok()?)))
            .collect())
    }

    /// The postmaster's process id and its children's (the backends), for CPU accounting.
    pub fn pids(&self) -> Vec<u32> {
        let Some(master) = self
            .postmaster_pid()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![master];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // The parent is the second field after the command name in parentheses.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if parent == Some(master) {
                pids.push(pid);
            }
        }
        pids
    }

    fn postmaster_pid(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next().map(str::to_owned)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown by PID (SIGQUIT to the postmaster): it stops every backend.
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill").args(["-QUIT", &pid]).status();
            let _ = wait_until(Duration::from_secs(10), "postgres to stop", || {
                (!self.data().join("postmaster.pid").exists()).then_some(())
            });
        }
    }
}

/// A gateway instance in clustered mode (`[cluster]` over `nats` and `pg`), writing to `store`.
/// `ack_wait_ms` must match the nodes' `mqtt { ack_wait }` for a real deployment; tests may
/// shorten it only when they start no crash take-over that could reorder (see the tests).
pub fn cluster_gateway(
    work_dir: &Path,
    instance: &str,
    nats: &NatsCluster,
    pg: &Postgres,
    store: &StoreTarget,
    cluster_toml: &str,
) -> Result<GatewayProcess> {
    std::fs::create_dir_all(work_dir)?;
    let urls: Vec<String> = nats
        .mqtt_ports()
        .iter()
        .map(|p| format!("\"mqtt://127.0.0.1:{p}\""))
        .collect();
    let extra = format!(
        "[cluster]\nenabled = true\npartitions = {PARTITIONS}\ninstance_id = \"{instance}\"\npostgres_url = \"{}\"\nmqtt_urls = [{}]\n{cluster_toml}",
        pg.url(),
        urls.join(", ")
    );
    GatewayProcess::spawn(work_dir, nats.nodes[0].mqtt_port, store, instance, &extra)
}

/// Waits until the live leases are spread as `check` wants; returns the owners map.
pub fn wait_for_owners(
    pg: &Postgres,
    timeout: Duration,
    what: &str,
    check: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> Result<BTreeMap<String, usize>> {
    let mut last = BTreeMap::new();
    wait_until(timeout, what, || {
        let o = pg.owners().ok()?;
        last = o.clone();
        check(&o).then_some(o)
    })
    .map_err(|e| anyhow!("{e}; last seen {last:?}"))
}

/// The `authorization` block `deploy/nats/README.md` prescribes, for the gateway's login and
/// each device's `(user, password)`: a device publishes its own kinds under any partition
/// token (nats-server checks publish permissions on the mapped subject) and subscribes to its
/// own plain command topic; the gateway subscribes to every partition (QoS 1 deliveries come
/// on the session's `$MQTT.sub.<id>`) and publishes commands.
pub fn nats_authorization(gateway: (&str, &str), devices: &[(&str, &str)]) -> String {
    let mut users = vec![format!(
        "    {{ user: \"{}\", password: \"{}\", permissions: {{ publish: [\"fixtures.*.cmd\"], subscribe: [\"fixtures.>\", \"$MQTT.sub.>\"] }} }}",
        gateway.0, gateway.1
    )];
    for (id, password) in devices {
        let publish: Vec<String> = ["telemetry", "event", "status", "result"]
            .iter()
            .map(|kind| format!("\"fixtures.*.{id}.{kind}\""))
            .collect();
        users.push(format!(
            "    {{ user: \"{id}\", password: \"{password}\", permissions: {{ publish: [{}], subscribe: [\"fixtures.{id}.cmd\", \"$MQTT.sub.>\"] }} }}",
            publish.join(", ")
        ));
    }
    format!(
        "authorization {{\n  users = [\n{}\n  ]\n}}",
        users.join("\n")
    )
}

/// Waits until the instances' readiness reports every one of the `partitions` owned and
/// its subscription confirmed by the broker (`cluster.unsubscribed` empty everywhere).
/// Before that, what a device publishes to a partition that never had a subscription is
/// acknowledged by NATS and kept for no one (interest retention): deployments start the
/// gateways before the devices, and tests publish after this.
pub fn wait_for_subscriptions(
    gateways: &[&GatewayProcess],
    partitions: usize,
    timeout: Duration,
) -> Result<()> {
    let mut last = Vec::new();
    wait_until(timeout, "every partition subscribed", || {
        last.clear();
        let mut owned = 0;
        for g in gateways {
            let (_, text) = g.get("/health/ready", None).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            owned += v["cluster"]["owned"].as_u64()? as usize;
            last.push(v["cluster"]["unsubscribed"].clone());
        }
        (owned == partitions
            && last
                .iter()
                .all(|u| u.as_array().is_some_and(|a| a.is_empty())))
        .then_some(())
    })
    .map_err(|e| anyhow!("{e}; unsubscribed partitions per instance, last seen: {last:?}"))
}

/// QoS 1 publishing to the cluster: `connections` persistent sessions, each starting at a
/// different node and moving to the next node when its connection breaks (rumqttc re-sends
/// what was not acknowledged). Devices keep one connection (`device index % connections`),
/// so each device's messages keep their order. Returns, per message, whether a PUBACK came.
pub fn publish_to_cluster(
    ports: &[u16],
    client_prefix: &str,
    messages: Vec<(String, Vec<u8>)>,
    connections: usize,
    rate_per_s: Option<u32>,
    acked: Arc<AtomicUsize>,
) -> Result<Vec<bool>> {
    let connections = connections.max(1);
    let total = messages.len();
    let mut shares: Vec<Vec<(usize, String, Vec<u8>)>> = vec![Vec::new(); connections];
    for (i, (topic, payload)) in messages.into_iter().enumerate() {
        let device = topic.split('/').nth(1).unwrap_or_default();
        let c = (gateway::cluster::partition::fnv1a32(device.as_bytes()) as usize) % connections;
        shares[c].push((i, topic, payload));
    }
    let per_rate = rate_per_s.map(|r| (r / connections as u32).max(1));
    let handles: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(c, share)| {
            let ports: Vec<u16> = ports.to_vec();
            let id = format!("{client_prefix}-{c}");
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || publish_share(&ports, c, &id, share, per_rate, &acked))
        })
        .collect();
    let mut done = vec![false; total];
    for h in handles {
        let share = h
            .join()
            .map_err(|_| anyhow!("a publisher thread panicked"))??;
        for i in share {
            done[i] = true;
        }
    }
    Ok(done)
}

/// One publisher connection. On a broken connection it connects to the next node with a
/// fresh client (same client id, `clean_session = false`) and re-publishes every message not
/// yet PUBACKed, in order, as a device's firmware does; rumqttc's own resend of its pending
/// queue is not relied on across nodes. `poll` is never cancelled (it is not cancel-safe):
/// a feeder task publishes at the rate, within a window of un-PUBACKed messages.
fn publish_share(
    ports: &[u16],
    first: usize,
    client_id: &str,
    share: Vec<(usize, String, Vec<u8>)>,
    rate: Option<u32>,
    acked: &AtomicUsize,
) -> Result<Vec<usize>> {
    const WINDOW: usize = 50;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let options = |k: usize| {
            let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", ports[k % ports.len()]);
            o.set_clean_session(false)
                .set_keep_alive(Duration::from_secs(5))
                .set_inflight(WINDOW as u16);
            o
        };
        let total = share.len();
        let share = Arc::new(share);
        let mut done = vec![false; total];
        let mut count = 0usize;
        // The next share index to publish, and the published (or about to be) ones waiting
        // for their packet id, in order: one lock, no await between taking and queueing.
        let feed: Arc<Mutex<(usize, VecDeque<usize>)>> = Arc::new(Mutex::new((0, VecDeque::new())));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(400);
        let mut node = first;
        let mut last_progress = Instant::now();
        let mut unacked: Vec<usize> = Vec::new();
        'connection: loop {
            let (client, mut eventloop) = rumqttc::AsyncClient::new(options(node), 2 * WINDOW + 10);
            let mut in_flight: std::collections::HashMap<u16, usize> = Default::default();
            unacked.sort_unstable();
            {
                let mut f = feed.lock().map_err(|_| anyhow!("poisoned"))?;
                f.1.clear();
                for &k in &unacked {
                    let (_, topic, payload) = &share[k];
                    client.try_publish(
                        topic.clone(),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )?;
                    f.1.push_back(k);
                }
            }
            let window = Arc::new(tokio::sync::Semaphore::new(
                WINDOW.saturating_sub(unacked.len()),
            ));
            unacked.clear();
            let feeder = {
                let (client, share, feed, window) = (
                    client.clone(),
                    Arc::clone(&share),
                    Arc::clone(&feed),
                    Arc::clone(&window),
                );
                tokio::spawn(async move {
                    loop {
                        window.acquire().await?.forget();
                        let k = {
                            let mut f = feed.lock().map_err(|_| anyhow!("poisoned"))?;
                            if f.0 >= total {
                                return Ok::<_, anyhow::Error>(());
                            }
                            let k = f.0;
                            f.0 += 1;
                            f.1.push_back(k);
                            k
                        };
                        if let Some(rate) = rate {
                            let due = start + Duration::from_secs_f64(k as f64 / f64::from(rate));
                            tokio::time::sleep_until(due.into()).await;
                        }
                        let (_, topic, payload) = &share[k];
                        client
                            .publish(
                                topic.clone(),
                                rumqttc::QoS::AtLeastOnce,
                                false,
                                payload.clone(),
                            )
                            .await?;
                    }
                })
            };
            loop {
                if count == total {
                    feeder.abort();
                    break 'connection;
                }
                if Instant::now() > deadline {
                    feeder.abort();
                    bail!("{client_id}: timed out with {count} of {total} acknowledged");
                }
                if feeder.is_finished() && last_progress.elapsed() > Duration::from_secs(60) {
                    println!(
                        "{client_id}: gave up with {count} of {total} acknowledged, on node {}",
                        node % ports.len()
                    );
                    break 'connection;
                }
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                        let k = feed.lock().map_err(|_| anyhow!("poisoned"))?.1.pop_front();
                        if let Some(k) = k {
                            in_flight.insert(pkid, k);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(ack))) => {
                        if let Some(k) = in_flight.remove(&ack.pkid) {
                            window.add_permits(1);
                            if !done[k] {
                                done[k] = true;
                                count += 1;
                                acked.fetch_add(1, Ordering::SeqCst);
                                last_progress = Instant::now();
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        println!(
                            "{client_id}: connection to node {} failed: {e}",
                            node % ports.len()
                        );
                        feeder.abort();
                        let _ = feeder.await;
                        {
                            let f = feed.lock().map_err(|_| anyhow!("poisoned"))?;
                            unacked.extend(
                                in_flight
                                    .values()
                                    .chain(f.1.iter())
                                    .copied()
                                    .filter(|k| !done[*k]),
                            );
                        }
                        node += 1;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue 'connection;
                    }
                }
            }
        }
        Ok(share
            .iter()
            .zip(done)
            .filter(|(_, d)| *d)
            .map(|((i, _, _), _)| *i)
            .collect())
    })
}

/// The `(device_id, seq)` keys of the acknowledged fleet telemetry messages.
pub fn acked_keys(messages: &[(String, Vec<u8>)], done: &[bool]) -> HashSet<(String, i64)> {
    messages
        .iter()
        .zip(done)
        .filter(|(_, d)| **d)
        .filter_map(|((_, payload), _)| {
            let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
            Some((v["device_id"].as_str()?.to_owned(), v["seq"].as_i64()?))
        })
        .collect()
}
