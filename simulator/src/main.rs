//! `simulator`: simulate a fleet of smart fixtures and publish it to an MQTT broker.
//!
//! ```text
//! simulator --broker mqtt://127.0.0.1:1883 --devices 1000 --days 90 --speed max \
//!             --seed 7 --faults default --truth truth.jsonl [--telemetry-every-min 15] [--variants all=0.3]
//! simulator --devices 1000 --days 90 --out messages.jsonl      # no broker: write the stream
//! simulator --broker mqtt://127.0.0.1:1883 --devices 6 --days 14 --live   # then answer commands
//! simulator bench --devices 1000 --days 30 [--broker mqtt://127.0.0.1:1883 --seconds 20]
//! ```

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use simulator::faults::{FaultMix, Scenario};
use simulator::fleet::{now_ms, Variants};
use simulator::publish::{BrokerUrl, Pacer, Publisher, PublisherConfig, Speed};
use simulator::{Fleet, FleetConfig};

/// Simulate smart toilets, purifiers and showers in households, and publish their telemetry.
#[derive(Debug, Parser)]
#[command(name = "simulator", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Measure messages generated per second (no broker), and at a speed-up with a broker if given.
    Bench(BenchArgs),
}

#[derive(Debug, Args, Clone)]
struct FleetArgs {
    /// Number of devices (households of toilet + purifier + shower).
    #[arg(long, default_value_t = 30)]
    devices: u32,
    /// Days to simulate; the span ends now (or at --end-ms).
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// End of the simulated span, UTC ms (default: now). Fix it for byte-identical runs.
    #[arg(long)]
    end_ms: Option<i64>,
    /// Faults: `default`, `none`, or `kind[=p],...` (leak, valve_stuck, heater_failure,
    /// inlet_clog, sensor_drift, sensor_dropout, unused, offline, low_pressure, high_usage,
    /// main_board).
    #[arg(long, default_value = "none")]
    faults: String,
    /// Scenario file (JSON): {"mix": {...}, "inject": [{"device", "kind", "start_day", "days"}]}.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Telemetry interval, minutes.
    #[arg(long, default_value_t = 15)]
    telemetry_every_min: u32,
    /// World variants drawn per device or home, recorded in the truth: `none`, `all[=p]`
    /// or `family[=p],...` (burst_cadence, silent_firmware, shared_shower, clock_offset,
    /// small_leak, night_leak, cleaning, heater_wear; p defaults to 0.5).
    #[arg(long, default_value = "none")]
    variants: String,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Broker URL, e.g. mqtt://127.0.0.1:1883. Without it the stream is only generated.
    #[arg(long)]
    broker: Option<String>,
    /// `max` or a speed-up factor (e.g. 100: 100 simulated seconds per real second).
    #[arg(long, default_value = "max")]
    speed: String,
    /// MQTT connections shared by all devices.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Ground-truth output (JSON lines).
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Also write every message as JSON lines {"at_ms","topic","retain","payload"}.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    /// After the history, keep every device connected (one connection each) on the wall
    /// clock, answering the gateway's commands on `fixtures/{id}/cmd`, until Ctrl-C.
    #[arg(long, requires = "broker")]
    live: bool,
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Broker for the second measurement (publishing at --speed).
    #[arg(long)]
    broker: Option<String>,
    /// Speed-up for the broker measurement.
    #[arg(long, default_value = "100")]
    speed: String,
    /// Real seconds to publish for in the broker measurement.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

fn fleet_config(a: &FleetArgs) -> Result<FleetConfig> {
    let mut mix = FaultMix::parse(&a.faults)?;
    let mut inject = Vec::new();
    if let Some(path) = &a.scenario {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        let sc = Scenario::parse(&text)
            .with_context(|| format!("parsing scenario {}", path.display()))?;
        mix.0.extend(sc.mix.0);
        inject = sc.inject;
    }
    Ok(FleetConfig {
        devices: a.devices,
        days: a.days,
        end_ms: a.end_ms.unwrap_or_else(now_ms),
        seed: a.seed,
        telemetry_every_min: a.telemetry_every_min,
        mix,
        inject,
    })
}

fn progress(days: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(days);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] day {pos}/{len} {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Bench(b)) => bench(b).await,
        None => run(cli.run).await,
    }
}

async fn run(a: RunArgs) -> Result<()> {
    let speed: Speed = a.speed.parse().map_err(anyhow::Error::msg)?;
    let cfg = fleet_config(&a.fleet)?;
    let mut fleet = Fleet::with_variants(cfg, &Variants::parse(&a.fleet.variants)?)?;
    tracing::info!(
        devices = a.fleet.devices,
        days = a.fleet.days,
        seed = a.fleet.seed,
        start_ms = fleet.start_ms(),
        end_ms = fleet.end_ms(),
        "simulating"
    );
    let mut publisher = match &a.broker {
        Some(url) => {
            let broker: BrokerUrl = url.parse()?;
            let mut pc = PublisherConfig::new(broker);
            pc.connections = a.connections;
            Some(
                Publisher::connect(&pc)
                    .await
                    .context("connecting to the broker")?,
            )
        }
        None => None,
    };
    let mut out = match &a.out {
        Some(p) => Some(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let pb = progress(fleet.total_days(), a.quiet);
    let pacer = Pacer::new(speed, fleet.start_ms());
    let started = Instant::now();
    let mut generated = 0u64;
    while let Some(batch) = fleet.next_batch() {
        generated += batch.len() as u64;
        for m in &batch {
            if let Some(w) = out.as_mut() {
                let payload: serde_json::Value = serde_json::from_slice(&m.payload)?;
                let line = serde_json::json!({"at_ms": m.at_ms, "topic": m.topic, "retain": m.retain, "payload": payload});
                writeln!(w, "{line}")?;
            }
            if let Some(p) = publisher.as_mut() {
                pacer.wait(m.at_ms).await;
                p.publish(m).await?;
            }
        }
        match &publisher {
            Some(p) => {
                let s = p.stats();
                pb.set_message(format!(
                    "{generated} msgs, {} sent, {} acked",
                    s.sent, s.acked
                ));
            }
            None => pb.set_message(format!("{generated} msgs")),
        }
        pb.inc(1);
    }
    pb.finish();
    if let Some(mut w) = out {
        w.flush()?;
    }
    if let Some(path) = &a.truth {
        let mut w = BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for t in fleet.truth() {
            writeln!(w, "{}", serde_json::to_string(&t)?)?;
        }
        w.flush()?;
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(p) = publisher {
        let stats = p.finish(Duration::from_secs(60)).await?;
        tracing::info!(
            generated,
            sent = stats.sent,
            acked = stats.acked,
            secs,
            "published; every message acknowledged"
        );
        println!(
            "generated {generated} messages, published {} (QoS 1), {} PUBACKs, in {secs:.1} s",
            stats.sent, stats.acked
        );
    } else {
        println!(
            "generated {generated} messages in {secs:.1} s ({:.0} msg/s), no broker",
            generated as f64 / secs.max(1e-9)
        );
    }
    if let (true, Some(url)) = (a.live, &a.broker) {
        let broker: BrokerUrl = url.parse()?;
        let devices = fleet
            .into_devices()
            .into_iter()
            .map(|d| std::sync::Arc::new(std::sync::Mutex::new(d)))
            .collect();
        let stats = std::sync::Arc::new(simulator::live::LiveStats::default());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        println!("live: devices answer commands; Ctrl-C to stop");
        let live = tokio::spawn(simulator::live::serve(
            devices,
            simulator::live::LiveConfig::new(broker),
            std::sync::Arc::clone(&stats),
            stop_rx,
        ));
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        let _ = stop.send(true);
        live.await.context("live devices")?;
        println!(
            "live: {} commands answered, {} not contract commands, {} messages published",
            stats.commands.load(std::sync::atomic::Ordering::Relaxed),
            stats
                .bad_commands
                .load(std::sync::atomic::Ordering::Relaxed),
            stats.published.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    Ok(())
}

async fn bench(b: BenchArgs) -> Result<()> {
    let cfg = fleet_config(&b.fleet)?;
    // 1. Generation only, maximum acceleration.
    let started = Instant::now();
    let mut fleet = Fleet::with_variants(cfg.clone(), &Variants::parse(&b.fleet.variants)?)?;
    let build = started.elapsed().as_secs_f64();
    let mut n = 0u64;
    let mut bytes = 0u64;
    while let Some(batch) = fleet.next_batch() {
        n += batch.len() as u64;
        bytes += batch.iter().map(|m| m.payload.len() as u64).sum::<u64>();
    }
    let secs = started.elapsed().as_secs_f64();
    let device_days = u64::from(cfg.devices) * fleet.total_days();
    println!(
        "generation: {n} messages ({:.1} MB payload) for {} devices × {} days in {secs:.2} s (setup {build:.2} s): {:.0} msg/s, {:.0} device-days/s, {:.2} M firmware ticks/s",
        bytes as f64 / 1e6,
        cfg.devices,
        fleet.total_days(),
        n as f64 / secs,
        device_days as f64 / secs,
        fleet.ticks() as f64 / secs / 1e6
    );
    // 2. With a broker, at the given speed-up, for a bounded time.
    let Some(url) = b.broker else { return Ok(()) };
    let speed: Speed = b.speed.parse().map_err(anyhow::Error::msg)?;
    let mut fleet = Fleet::with_variants(cfg, &Variants::parse(&b.fleet.variants)?)?;
    let mut publisher = Publisher::connect(&PublisherConfig::new(url.parse()?)).await?;
    let pacer = Pacer::new(speed, fleet.start_ms());
    let started = Instant::now();
    let limit = Duration::from_secs(b.seconds);
    'outer: while let Some(batch) = fleet.next_batch() {
        for m in &batch {
            if started.elapsed() >= limit {
                break 'outer;
            }
            pacer.wait(m.at_ms).await;
            publisher.publish(m).await?;
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let stats = publisher.finish(Duration::from_secs(30)).await?;
    if stats.acked < stats.sent {
        bail!("only {} of {} acknowledged", stats.acked, stats.sent);
    }
    println!(
        "broker at {}: {} messages published and acknowledged in {publish_secs:.1} s: {:.0} msg/s",
        b.speed,
        stats.acked,
        stats.acked as f64 / publish_secs
    );
    Ok(())
}
