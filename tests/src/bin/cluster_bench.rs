//! `cluster-bench`: issue #15's bench, in one run on one machine. The same live load —
//! N QoS 1 messages from D devices, published over C connections as fast as the broker
//! acknowledges — goes through:
//! (a) single-node: Mosquitto and one gateway, and
//! (b) the 3-node NATS JetStream cluster (R3, the 64-partition mapping) with 1, 2 and 3
//!     gateway instances sharing the partitions (leases in PostgreSQL 15),
//!
//! each into InfluxDB 1.6.7. For each it prints messages per second (first publish to the
//! last acknowledged message stored) and the CPU per message of the gateways, of the
//! broker tier and of PostgreSQL (user + system, from `/proc`; InfluxDB's is left out, the
//! same work in every configuration), from which the README works out what a real
//! deployment should carry. Everything shares this machine's cores, so the rates compare
//! within one run only. Run it with `scripts/bench-cluster`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use e2e_tests::cluster::{
    cluster_gateway, publish_to_cluster, wait_for_owners, wait_for_subscriptions, NatsCluster,
    Postgres,
};
use e2e_tests::*;

/// Single-node Mosquitto vs the 3-node cluster with 1, 2 and 3 gateway instances.
#[derive(Debug, Parser)]
struct Args {
    /// Messages per configuration.
    #[arg(long, default_value_t = 60_000)]
    messages: usize,
    /// Devices publishing them.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Publisher connections (each device keeps one; NATS acknowledges a QoS 1 publish only
    /// once it is stored R3, so one connection carries about 1 / store latency).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The largest number of gateway instances to try.
    #[arg(long, default_value_t = 3)]
    max_instances: usize,
}

fn step(msg: &str) {
    eprintln!("[cluster-bench] {msg}");
}

/// One configuration's result.
struct Run {
    name: String,
    messages: usize,
    elapsed: Duration,
    gateway_cpu_s: f64,
    broker_cpu_s: f64,
    /// PostgreSQL's (leases and per-partition state); `None` in single-node mode.
    postgres_cpu_s: Option<f64>,
}

impl Run {
    fn print(&self) {
        let n = self.messages as f64;
        println!(
            "  {:<24}: {:>7.0} msg/s | CPU per message: gateways {:>6.1} µs, broker {:>6.1} µs, PostgreSQL {:>6.1} µs, total {:>6.1} µs",
            self.name,
            n / self.elapsed.as_secs_f64(),
            self.gateway_cpu_s * 1e6 / n,
            self.broker_cpu_s * 1e6 / n,
            self.postgres_cpu_s.unwrap_or(0.0) * 1e6 / n,
            (self.gateway_cpu_s + self.broker_cpu_s + self.postgres_cpu_s.unwrap_or(0.0)) * 1e6 / n,
        );
    }
}

fn total_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| cpu_seconds(*p)).sum()
}

/// What one configuration is measured on.
struct Target<'a> {
    name: &'a str,
    /// The broker's MQTT ports (the publisher moves to the next on a broken connection).
    ports: &'a [u16],
    influx: &'a Influx,
    /// The InfluxDB database its gateways write to.
    db: &'a str,
    gateway_pids: &'a [u32],
    broker_pids: &'a [u32],
    postgres: Option<&'a Postgres>,
}

/// Publishes `messages` live over `connections` and waits until the target's database
/// holds every one the broker acknowledged; returns the elapsed time and the CPU its
/// processes used meanwhile.
fn measure(t: &Target, connections: usize, messages: Vec<(String, Vec<u8>)>) -> Result<Run> {
    let Target {
        name,
        ports,
        influx,
        db,
        gateway_pids,
        broker_pids,
        postgres,
    } = *t;
    let total = messages.len();
    let (gw0, br0) = (total_cpu(gateway_pids), total_cpu(broker_pids));
    // Backends come and go with connections: sum over the pids alive at both ends.
    let pg_pids = postgres.map(Postgres::pids).unwrap_or_default();
    let pg0: Vec<(u32, f64)> = pg_pids
        .iter()
        .filter_map(|p| cpu_seconds(*p).map(|c| (*p, c)))
        .collect();
    let start = Instant::now();
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (ports, acked) = (ports.to_vec(), Arc::clone(&acked));
        let prefix = format!("bench-{db}");
        std::thread::spawn(move || {
            publish_to_cluster(&ports, &prefix, messages, connections, None, acked)
        })
    };
    let mut last = Instant::now();
    let mut publishing = true;
    let mut acked_total = 0;
    let elapsed = wait_until(
        Duration::from_secs(900),
        &format!("{name}: every acknowledged message stored"),
        || {
            if publishing && publisher.is_finished() {
                publishing = false;
                acked_total = acked.load(Ordering::SeqCst);
            }
            let stored = influx.sum_counts(db, COUNT_TELEMETRY).unwrap_or(0) as usize;
            if last.elapsed() > Duration::from_secs(3) {
                step(&format!(
                    "  {name}: acknowledged {} stored {stored} of {total}",
                    acked.load(Ordering::SeqCst)
                ));
                last = Instant::now();
            }
            (!publishing && stored >= acked_total).then(|| start.elapsed())
        },
    )?;
    let done = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("the publisher panicked"))??;
    let acked = done.iter().filter(|d| **d).count();
    if acked != total {
        bail!("{name}: the broker acknowledged {acked} of {total} publishes");
    }
    Ok(Run {
        name: name.to_owned(),
        messages: total,
        elapsed,
        gateway_cpu_s: total_cpu(gateway_pids) - gw0,
        broker_cpu_s: total_cpu(broker_pids) - br0,
        postgres_cpu_s: postgres.map(|_| {
            pg0.iter()
                .filter_map(|(p, c0)| cpu_seconds(*p).map(|c1| c1 - c0))
                .sum()
        }),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rounds = (args.messages / args.devices).max(1) as u32;
    let total = rounds as usize * args.devices;
    step(&format!(
        "{total} QoS 1 messages from {} devices over {} connections per configuration",
        args.devices, args.connections
    ));
    let influx = Influx::start()?;
    let work = tempfile::tempdir()?;
    let mut runs = Vec::new();

    // (a) Single-node: Mosquitto and one gateway.
    {
        step("single-node: Mosquitto and one gateway");
        let broker = Mosquitto::start()?;
        let store = StoreTarget::Influx {
            url: influx.url(),
            db: "bench_single".into(),
        };
        let dir = work.path().join("single");
        std::fs::create_dir_all(&dir)?;
        let gw = GatewayProcess::spawn(&dir, broker.port, &store, "gw-single", "")?;
        let gw_pids: Vec<u32> = gw.pid().into_iter().collect();
        let broker_pids: Vec<u32> = broker.pid().into_iter().collect();
        let target = Target {
            name: "Mosquitto, 1 gateway",
            ports: &[broker.port],
            influx: &influx,
            db: "bench_single",
            gateway_pids: &gw_pids,
            broker_pids: &broker_pids,
            postgres: None,
        };
        runs.push(measure(
            &target,
            args.connections,
            fleet_messages(args.devices, rounds, base_ts()),
        )?);
    }

    // (b) The cluster with 1, 2, 3 instances.
    step("starting the 3-node NATS cluster and PostgreSQL");
    let nats = NatsCluster::start()?;
    let pg = Postgres::start()?;
    for k in 1..=args.max_instances {
        let db = format!("bench_cluster_{k}");
        let store = StoreTarget::Influx {
            url: influx.url(),
            db: db.clone(),
        };
        step(&format!("cluster: {k} gateway instance(s)"));
        let mut gateways = Vec::new();
        for i in 0..k {
            let id = format!("bench-{k}-{i}");
            gateways.push(cluster_gateway(
                &work.path().join(&id),
                &id,
                &nats,
                &pg,
                &store,
                "lease_ttl_ms = 3000\n",
            )?);
        }
        let quota = 64 / k;
        wait_for_owners(&pg, Duration::from_secs(120), "an even share", |o| {
            o.len() == k
                && o.values().sum::<usize>() == 64
                && o.values().all(|n| (quota..=quota + 1).contains(n))
        })?;
        let refs: Vec<&GatewayProcess> = gateways.iter().collect();
        wait_for_subscriptions(&refs, 64, Duration::from_secs(120))?;
        let gw_pids: Vec<u32> = gateways.iter().filter_map(GatewayProcess::pid).collect();
        let base = base_ts() + k as i64 * 10_000_000;
        let (name, ports, broker_pids) = (
            format!("NATS ×3, {k} gateway(s)"),
            nats.mqtt_ports(),
            nats.pids(),
        );
        let target = Target {
            name: &name,
            ports: &ports,
            influx: &influx,
            db: &db,
            gateway_pids: &gw_pids,
            broker_pids: &broker_pids,
            postgres: Some(&pg),
        };
        runs.push(
            measure(
                &target,
                args.connections,
                fleet_messages(args.devices, rounds, base),
            )
            .with_context(|| {
                gateways
                    .iter()
                    .map(|g| g.log_tail())
                    .collect::<Vec<_>>()
                    .join("\n")
            })?,
        );
        for g in &mut gateways {
            g.stop();
        }
        // The leases of the stopped instances are released on their way out.
        wait_for_owners(&pg, Duration::from_secs(60), "no owner left", |o| {
            o.is_empty()
        })?;
    }

    println!(
        "cluster benchmark: {total} QoS 1 messages from {} devices over {} publisher connections, \
         live, into InfluxDB 1.6.7; everything on this machine",
        args.devices, args.connections
    );
    for r in &runs {
        r.print();
    }
    Ok(())
}
