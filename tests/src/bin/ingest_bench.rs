//! `ingest-bench`: the ingest benchmark of issue #2, in one run on one machine.
//!
//! Starts Mosquitto and InfluxDB 1.6.7 on free loopback ports, then measures:
//! (a) a bare rumqttc QoS 1 subscriber draining a burst of N messages from D
//!     devices that the broker queued for its persistent session, and
//! (b) the gateway draining the same burst, queued the same way, into InfluxDB
//!     (timed until every message is acknowledged, i.e. durable),
//! and prints both rates, their ratio, the loss count (published minus stored)
//! and the gateway's peak resident memory. Run it with `scripts/bench`.
//!
//! It then repeats both with the subscriber online while the burst is published
//! ("live"): there the publisher's pace bounds both rates, which is the situation
//! of a fleet publishing in real time.
//!
//! Last, fault-to-ticket latency under that load: a gateway with the maintenance
//! engine drains a live burst while 100 registered toilets each report a leak;
//! the latency of each is the ticket's opening time minus the fault's publish time.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use e2e_tests::*;

/// Ingest benchmark: bare subscriber vs gateway into InfluxDB, same burst, same run.
#[derive(Debug, Parser)]
struct Args {
    /// Messages in the burst.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Devices publishing them.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Gateway batch size ([batch] max_messages); the gateway's default if not given.
    #[arg(long)]
    batch: Option<usize>,
    /// Another gateway binary (e.g. an earlier commit's `gateway-under-test`) that also
    /// drains the SQLite burst in this run, so the two rates are compared on one machine state.
    #[arg(long)]
    baseline: Option<std::path::PathBuf>,
}

fn step(msg: &str) {
    eprintln!("[ingest-bench] {msg}");
}

/// Drains `n` messages with a bare subscriber whose session already holds them.
fn bare_subscriber_drain(port: u16, n: usize) -> Result<Duration> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new("bench-bare", "127.0.0.1", port);
        opts.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
        let start = Instant::now();
        let mut received = 0usize;
        while received < n {
            match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)))) => received += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("bare subscriber: {e}"),
                Err(_) => bail!("bare subscriber stalled at {received} of {n}"),
            }
        }
        let elapsed = start.elapsed();
        // Leave nothing queued for this session during the gateway's run.
        client.unsubscribe("fixtures/+/telemetry").await?;
        for _ in 0..20 {
            if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::UnsubAck(_)))) =
                tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await
            {
                break;
            }
        }
        Ok(elapsed)
    })
}

/// Bare subscriber online while `messages` are published: time from the first publish to the last message received.
fn bare_subscriber_live(port: u16, messages: Vec<(String, Vec<u8>)>) -> Result<Duration> {
    let n = messages.len();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let sub = std::thread::spawn(move || -> Result<Instant> {
        rt.block_on(async {
            let mut opts = rumqttc::MqttOptions::new("bench-bare-live", "127.0.0.1", port);
            opts.set_clean_session(true)
                .set_keep_alive(Duration::from_secs(30));
            let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
            client
                .subscribe("fixtures/+/telemetry", rumqttc::QoS::AtLeastOnce)
                .await?;
            let mut received = 0usize;
            while received < n {
                match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)))) => received += 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => bail!("live bare subscriber: {e}"),
                    Err(_) => bail!("live bare subscriber stalled at {received} of {n}"),
                }
            }
            Ok(Instant::now())
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .context("live bare subscriber did not subscribe within 60 s")?;
    let start = Instant::now();
    publish_all(port, "bench-pub-live-a", messages, None, None)?;
    let end = sub
        .join()
        .map_err(|_| anyhow::anyhow!("live bare subscriber panicked"))??;
    Ok(end - start)
}

/// Creates the bare subscriber's persistent session and subscription, then disconnects.
fn bare_subscriber_register(port: u16) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new("bench-bare", "127.0.0.1", port);
        opts.set_clean_session(false);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
        client
            .subscribe("fixtures/+/telemetry", rumqttc::QoS::AtLeastOnce)
            .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("registering the bare subscriber: {e}"),
                Err(_) => bail!("no SUBACK for the bare subscriber"),
            }
        }
        client.disconnect().await?;
        let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
        Ok(())
    })
}

/// InfluxDB's own ceiling for the gateway's points: the same messages decoded and
/// encoded as the gateway does, in batches of `batch` messages, written by two
/// parallel writers straight to `/write`. Returns (messages/s, points/s, the cores InfluxDB
/// used meanwhile).
fn influx_two_writer_ceiling(
    influx: &Influx,
    messages: &[(String, Vec<u8>)],
    batch: usize,
) -> Result<(f64, f64, f64)> {
    influx.create_db("ceiling")?;
    let limits = protocol::validate::Limits::default();
    let now = gateway::clock::now_ms();
    let mut bodies: Vec<String> = Vec::new();
    let mut points = 0usize;
    for chunk in messages.chunks(batch.max(1)) {
        let mut body = String::new();
        for (topic, payload) in chunk {
            let accepted = gateway::decode::decode(topic, payload, now, &limits)
                .map_err(|r| anyhow::anyhow!("bench message refused: {}", r.detail))?;
            for p in &accepted.points {
                gateway::store::line_protocol::encode_point(&mut body, p)?;
                points += 1;
            }
        }
        bodies.push(body);
    }
    let url = format!("{}/write?db=ceiling&precision=ms", influx.url());
    let (even, odd): (Vec<_>, Vec<_>) = bodies
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let influx_cpu_before = influx.pid().and_then(cpu_seconds).unwrap_or(f64::NAN);
    let start = Instant::now();
    let writers: Vec<_> = [even, odd]
        .into_iter()
        .map(|share| {
            let url = url.clone();
            std::thread::spawn(move || -> Result<()> {
                let http = reqwest::blocking::Client::new();
                for (_, body) in share {
                    let r = http.post(&url).body(body).send()?;
                    if !r.status().is_success() {
                        bail!("InfluxDB refused a ceiling batch: {}", r.status());
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join()
            .map_err(|_| anyhow::anyhow!("ceiling writer panicked"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    let influx_cores =
        (influx.pid().and_then(cpu_seconds).unwrap_or(f64::NAN) - influx_cpu_before) / secs;
    Ok((
        messages.len() as f64 / secs,
        points as f64 / secs,
        influx_cores,
    ))
}

/// `[sqlite]` settings that are SQLite's own defaults (2 MB cache, no memory map, checkpoints
/// in the writer): the store as issue 14 found it.
const SQLITE_OWN_DEFAULTS: &str = "cache_mib = 2\nmmap_mib = 0\nbackground_checkpoint = false";

/// The gateway with the SQLite store draining a queued burst: (msg/s, CPU µs per message).
fn sqlite_drain(
    work: &std::path::Path,
    name: &str,
    sqlite_toml: &str,
    messages: Vec<(String, Vec<u8>)>,
) -> Result<(f64, f64)> {
    let total = messages.len();
    // A broker of its own: the sessions of the earlier runs would have the burst queued too.
    let broker = Mosquitto::start()?;
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    let extra = format!("[sqlite]\n{sqlite_toml}\n");
    let mut gw = GatewayProcess::spawn(&dir, broker.port, &StoreTarget::Sqlite, name, &extra)?;
    gw.stop();
    let acked = publish_all(broker.port, &format!("{name}-pub"), messages, None, None)?;
    if acked != total {
        bail!("the broker acknowledged {acked} of {total} publishes");
    }
    step(&format!("draining with the gateway into SQLite ({name})"));
    let start = Instant::now();
    gw.restart()?;
    let drained = wait_until(
        Duration::from_secs(900),
        "the SQLite gateway to acknowledge the burst",
        || {
            let acked = gw.metrics().ok()?["acked"].as_u64()?;
            (acked >= total as u64).then(|| start.elapsed())
        },
    )
    .with_context(|| gw.log_tail())?;
    let cpu = gw.pid().and_then(cpu_seconds).unwrap_or(f64::NAN);
    gw.stop();
    Ok((
        total as f64 / drained.as_secs_f64(),
        cpu * 1e6 / total as f64,
    ))
}

/// Waits until the gateway's spool is empty (batches spooled while InfluxDB was slow
/// to answer are acknowledged already, and replayed into it afterwards).
fn wait_spool_empty(gw: &GatewayProcess) -> Result<()> {
    let spooled = gw.metrics()?["spooled_batches"].as_u64().unwrap_or(0);
    if spooled > 0 {
        step(&format!(
            "  {spooled} batches went through the spool; waiting for its replay"
        ));
    }
    wait_until(Duration::from_secs(600), "the spool to be replayed", || {
        (gw.metrics().ok()?["spool_backlog_batches"].as_u64()? == 0).then_some(())
    })
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rounds = (args.messages / args.devices) as u32;
    let total = rounds as usize * args.devices;
    step(&format!(
        "starting Mosquitto and InfluxDB; burst of {total} messages from {} devices",
        args.devices
    ));
    let broker = Mosquitto::start()?;
    let influx = Influx::start()?;
    let work = tempfile::tempdir()?;
    let base = base_ts();

    // (a) The bare subscriber.
    bare_subscriber_register(broker.port)?;
    step("publishing the burst for the bare subscriber");
    let acked = publish_all(
        broker.port,
        "bench-pub-a",
        fleet_messages(args.devices, rounds, base),
        None,
        None,
    )?;
    if acked != total {
        bail!("the broker acknowledged {acked} of {total} publishes");
    }
    step("draining with the bare subscriber");
    let bare = bare_subscriber_drain(broker.port, total)?;
    let bare_rate = total as f64 / bare.as_secs_f64();
    step(&format!(
        "bare subscriber: {total} in {:.2} s = {bare_rate:.0} msg/s",
        bare.as_secs_f64()
    ));

    // (b) The gateway: register its session, stop it, queue the burst, start it, time the drain.
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "bench".into(),
    };
    let batch = args
        .batch
        .unwrap_or(gateway::config::DEFAULT_BATCH_MESSAGES);
    let extra = format!("[batch]\nmax_messages = {batch}\n");
    let mut gw = GatewayProcess::spawn(work.path(), broker.port, &store, "bench-gateway", &extra)?;
    gw.stop();
    step("publishing the same burst for the gateway");
    let acked = publish_all(
        broker.port,
        "bench-pub-b",
        fleet_messages(args.devices, rounds, base),
        None,
        None,
    )?;
    if acked != total {
        bail!("the broker acknowledged {acked} of {total} publishes");
    }
    step("draining with the gateway into InfluxDB");
    // The CPU InfluxDB and Mosquitto use during the drain, to set against InfluxDB's during
    // its own ceiling: on two cores, what the gateway and the broker use is not InfluxDB's.
    let cpu_of = |pid: Option<u32>| pid.and_then(cpu_seconds).unwrap_or(f64::NAN);
    let (influx_cpu_before, broker_cpu_before) = (cpu_of(influx.pid()), cpu_of(broker.pid()));
    let start = Instant::now();
    gw.restart()?;
    let mut last_report = Instant::now();
    let drained = wait_until(
        Duration::from_secs(600),
        "the gateway to acknowledge the burst",
        || {
            let m = gw.metrics().ok()?;
            let acked = m["acked"].as_u64().unwrap_or(0);
            if last_report.elapsed() > Duration::from_secs(2) {
                step(&format!("  gateway acknowledged {acked} of {total}"));
                last_report = Instant::now();
            }
            (acked >= total as u64).then(|| start.elapsed())
        },
    )
    .with_context(|| gw.log_tail())?;
    let influx_cores = (cpu_of(influx.pid()) - influx_cpu_before) / drained.as_secs_f64();
    let broker_cores = (cpu_of(broker.pid()) - broker_cpu_before) / drained.as_secs_f64();
    // Durable includes spooled: count what InfluxDB holds once the spool is replayed.
    wait_spool_empty(&gw)?;
    let rss = gw.pid().and_then(peak_rss_kib);
    // The whole process's CPU since its start (start-up included, so a slight overestimate).
    let (gw_user, gw_system) = gw
        .pid()
        .and_then(cpu_user_system_seconds)
        .unwrap_or((f64::NAN, f64::NAN));
    let gw_cpu = gw_user + gw_system;
    let stored = influx.sum_counts("bench", COUNT_TELEMETRY)?;
    let gw_rate = total as f64 / drained.as_secs_f64();
    let m = gw.metrics()?;
    if std::env::var_os("GATEWAY_LOG").is_some() {
        eprintln!("{}", gw.log_tail());
    }

    // (c) Live: subscribers online while the burst is published.
    step("live: bare subscriber online while the burst is published");
    let base_live = base + 10_000_000;
    let bare_live =
        bare_subscriber_live(broker.port, fleet_messages(args.devices, rounds, base_live))?;
    let bare_live_rate = total as f64 / bare_live.as_secs_f64();
    step("live: gateway online while the burst is published");
    let acked_before = m["acked"].as_u64().unwrap_or(0);
    let live_start = Instant::now();
    publish_all(
        broker.port,
        "bench-pub-live-b",
        fleet_messages(args.devices, rounds, base_live),
        None,
        None,
    )?;
    let gw_live = wait_until(
        Duration::from_secs(600),
        "the gateway to acknowledge the live burst",
        || {
            let a = gw.metrics().ok()?["acked"].as_u64()?;
            (a >= acked_before + total as u64).then(|| live_start.elapsed())
        },
    )?;
    let gw_live_rate = total as f64 / gw_live.as_secs_f64();
    wait_spool_empty(&gw)?;
    let stored_live = influx.sum_counts("bench", COUNT_TELEMETRY)? - stored;

    gw.stop();

    // (d) InfluxDB's own two-writer ceiling for the same points, and (e) the SQLite store.
    step("InfluxDB's own ceiling: the same points from two parallel writers");
    let (ceiling_msgs, ceiling_points, ceiling_influx_cores) = influx_two_writer_ceiling(
        &influx,
        &fleet_messages(args.devices, rounds, base + 30_000_000),
        batch,
    )?;
    let sqlite_defaults = sqlite_drain(
        work.path(),
        "bench-gateway-sqlite-defaults",
        SQLITE_OWN_DEFAULTS,
        fleet_messages(args.devices, rounds, base + 40_000_000),
    )?;
    let sqlite_tuned = sqlite_drain(
        work.path(),
        "bench-gateway-sqlite-tuned",
        "",
        fleet_messages(args.devices, rounds, base + 50_000_000),
    )?;

    let baseline = match &args.baseline {
        Some(bin) => {
            let ours = std::env::var_os("GATEWAY_BIN");
            std::env::set_var("GATEWAY_BIN", bin);
            // Its own default settings, then SQLite's defaults (the store as issue 14 found it).
            let drained = sqlite_drain(
                work.path(),
                "bench-baseline-sqlite-tuned",
                "",
                fleet_messages(args.devices, rounds, base + 60_000_000),
            )
            .and_then(|tuned| {
                let untuned = sqlite_drain(
                    work.path(),
                    "bench-baseline-sqlite-defaults",
                    SQLITE_OWN_DEFAULTS,
                    fleet_messages(args.devices, rounds, base + 70_000_000),
                )?;
                Ok((tuned, untuned))
            });
            match ours {
                Some(v) => std::env::set_var("GATEWAY_BIN", v),
                None => std::env::remove_var("GATEWAY_BIN"),
            }
            Some(drained?)
        }
        None => None,
    };

    let latencies = fault_to_ticket_latency(
        &broker,
        &influx,
        work.path(),
        args.devices,
        rounds,
        base + 20_000_000,
    )?;

    println!("ingest benchmark: {total} QoS 1 messages from {} devices, Mosquitto and InfluxDB 1.6.7 on this machine", args.devices);
    println!(
        "  bare rumqttc subscriber : {bare_rate:>9.0} msg/s ({:.2} s)",
        bare.as_secs_f64()
    );
    println!(
        "  gateway into InfluxDB   : {gw_rate:>9.0} msg/s ({:.2} s, batch {}, {} batches)",
        drained.as_secs_f64(),
        batch,
        m["batches"]
    );
    println!("  ratio gateway / bare    : {:>9.2}", gw_rate / bare_rate);
    println!(
        "  gateway CPU per message : {:>9.2} µs (user {:.2} + system {:.2}, analytics on)",
        gw_cpu * 1e6 / total as f64,
        gw_user * 1e6 / total as f64,
        gw_system * 1e6 / total as f64
    );
    println!(
        "  InfluxDB two-writer ceiling, same points: {ceiling_msgs:.0} msg/s ({ceiling_points:.0} points/s)"
    );
    println!(
        "  ratio gateway / ceiling : {:>9.2}",
        gw_rate / ceiling_msgs
    );
    println!(
        "  CPU cores, drain         : InfluxDB {influx_cores:.2}, Mosquitto {broker_cores:.2}, gateway {:.2} (ceiling: InfluxDB {ceiling_influx_cores:.2})",
        gw_cpu / drained.as_secs_f64()
    );
    println!("  loss (published - stored): {}", total as i64 - stored);
    println!("  batches through the spool: {}", m["spooled_batches"]);
    println!(
        "  gateway peak RSS        : {} MiB",
        rss.map_or("?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
    );
    println!(
        "live (subscriber online while the burst is published; the publisher's pace bounds both):"
    );
    println!(
        "  bare rumqttc subscriber : {bare_live_rate:>9.0} msg/s ({:.2} s)",
        bare_live.as_secs_f64()
    );
    println!(
        "  gateway into InfluxDB   : {gw_live_rate:>9.0} msg/s ({:.2} s)",
        gw_live.as_secs_f64()
    );
    println!(
        "  ratio gateway / bare    : {:>9.2}",
        gw_live_rate / bare_live_rate
    );
    println!(
        "  loss (published - stored): {}",
        total as i64 - stored_live
    );
    println!("SQLite store (the embedded default), the same burst queued:");
    println!(
        "  SQLite's own defaults   : {:>9.0} msg/s, {:.2} µs CPU per message",
        sqlite_defaults.0, sqlite_defaults.1
    );
    println!(
        "  gateway's tuning        : {:>9.0} msg/s, {:.2} µs CPU per message",
        sqlite_tuned.0, sqlite_tuned.1
    );
    println!(
        "  ratio tuned / defaults  : {:>9.2}",
        sqlite_tuned.0 / sqlite_defaults.0
    );
    if let (Some(bin), Some((tuned, untuned))) = (&args.baseline, baseline) {
        println!("  baseline build {}:", bin.display());
        println!(
            "    its own defaults      : {:>9.0} msg/s, {:.2} µs CPU per message",
            tuned.0, tuned.1
        );
        println!(
            "    with SQLite's defaults: {:>9.0} msg/s, {:.2} µs CPU per message",
            untuned.0, untuned.1
        );
        println!(
            "  this build's defaults / baseline's own defaults: {:>5.2}",
            sqlite_tuned.0 / tuned.0
        );
        println!(
            "  this build's defaults / baseline with SQLite's defaults: {:>5.2}",
            sqlite_tuned.0 / untuned.0
        );
    }
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "fault-to-ticket latency under the live load ({} leaks): p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

/// Fault-to-ticket latency (ms, sorted) of `LEAKS` leaks published one every 50 ms
/// while a live telemetry burst loads the gateway.
fn fault_to_ticket_latency(
    broker: &Mosquitto,
    influx: &Influx,
    work: &std::path::Path,
    devices: usize,
    rounds: u32,
    base: i64,
) -> Result<Vec<i64>> {
    const LEAKS: usize = 100;
    step("latency: a gateway with the maintenance engine, 100 leaks during a live burst");
    let dir = work.join("latency");
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("maintenance.db");
    let leakers: Vec<(String, protocol::message::Model)> = (0..LEAKS)
        .map(|i| (format!("leak-{i:03}"), protocol::message::Model::Toilet))
        .collect();
    let admin = e2e_tests::registry::register_devices(&db, &leakers)?;
    let extra = format!("[maintenance]\ndb_path = \"{}\"\n[maintenance.delivery]\nhmac_secret = \"bench-secret-0123456789\"\n", db.display());
    let store = StoreTarget::Influx {
        url: influx.url(),
        db: "bench_latency".into(),
    };
    let gw = GatewayProcess::spawn(&dir, broker.port, &store, "bench-gateway-latency", &extra)?;

    let port = broker.port;
    let load = std::thread::spawn(move || {
        publish_all(
            port,
            "bench-pub-latency-load",
            fleet_messages(devices, rounds, base),
            None,
            None,
        )
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let published: Vec<i64> = rt.block_on(async {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("bench-leaks", "127.0.0.1", port), 100);
        let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        let mut times = Vec::with_capacity(LEAKS);
        for i in 0..LEAKS {
            let ts = gateway::clock::now_ms();
            let payload = format!(r#"{{"v":1,"device_id":"leak-{i:03}","boot_id":1,"seq":1,"ts":{ts},"event":{{"fault":{{"code":"leak","severity":"critical","state":"raised"}}}}}}"#);
            client.publish(format!("fixtures/leak-{i:03}/event"), rumqttc::QoS::AtLeastOnce, false, payload).await?;
            times.push(ts);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        poller.abort();
        Ok::<_, anyhow::Error>(times)
    })?;
    load.join()
        .map_err(|_| anyhow::anyhow!("load publisher panicked"))??;
    let http = reqwest::blocking::Client::new();
    let tickets = wait_until(Duration::from_secs(120), "a ticket for every leak", || {
        let v: serde_json::Value = http
            .get(format!("http://127.0.0.1:{}/api/tickets", gw.http_port))
            .bearer_auth(&admin)
            .send()
            .ok()?
            .json()
            .ok()?;
        let list = v.as_array()?.clone();
        (list.len() >= LEAKS).then_some(list)
    })?;
    if let Ok(m) = gw.metrics() {
        step(&format!(
            "latency run: {} findings, {} applied by the maintenance engine, {} accepted",
            m["findings"], m["maintenance_applied"], m["accepted"]
        ));
    }
    let mut latencies: Vec<i64> = tickets
        .iter()
        .filter_map(|t| {
            let i: usize = t["device_id"]
                .as_str()?
                .strip_prefix("leak-")?
                .parse()
                .ok()?;
            Some(t["opened_ts_ms"].as_i64()? - published[i])
        })
        .collect();
    latencies.sort_unstable();
    if latencies.len() != LEAKS {
        bail!("{} tickets for {LEAKS} leaks", latencies.len());
    }
    Ok(latencies)
}
