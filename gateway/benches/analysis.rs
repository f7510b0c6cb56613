//! Criterion bench: the cost per message of the gateway's analytics stage — the fault
//! rules and the cartridge forecasters of `gateway::analysis::Analyzer`, plus the
//! event-time sweep — over a simulated fleet's real message stream (decoding excluded:
//! that is ingest's cost with or without analytics). Also prints the bytes of state per
//! device, by model (toilet, shower, purifier), and of that the cartridge forecasts.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gateway::analysis::{AnalysisCost, AnalyticsConfig, Analyzer};
use gateway::decode::{decode, Message};

fn fleet_stream() -> Vec<(String, Message)> {
    let cfg = simulator::FleetConfig {
        devices: 300,
        days: 30,
        seed: 7,
        end_ms: 1_790_000_000_000,
        mix: simulator::FaultMix::default_mix(),
        ..simulator::FleetConfig::default()
    };
    let (messages, _) = simulator::Fleet::generate_all(cfg).expect("fleet");
    let limits = protocol::validate::Limits {
        max_age_ms: i64::MAX / 4,
        max_future_ms: i64::MAX / 4,
    };
    messages
        .iter()
        .filter_map(|m| decode(&m.topic, &m.payload, 1_790_000_000_000, &limits).ok())
        .map(|a| (a.device_id.as_str().to_owned(), a.message))
        .collect()
}

fn bench_analysis(c: &mut Criterion) {
    let stream = fleet_stream();
    let n = stream.len();
    // State per device after the whole stream.
    let mut analyzer = Analyzer::new(AnalyticsConfig::default());
    let (mut findings, mut points) = (Vec::new(), Vec::new());
    for (id, m) in &stream {
        analyzer.observe(id, m, &mut findings, &mut points);
        analyzer.sweep(i64::MAX, &mut findings);
    }
    let AnalysisCost {
        devices,
        state_bytes,
        cartridges,
        by_model,
    } = analyzer.cost();
    eprintln!(
        "analysis state: {devices} devices, {cartridges} cartridges, {state_bytes} bytes in all = {} bytes per device on average \
         (inline and heap); \
         {} findings, {} forecast points from {n} messages",
        state_bytes / devices.max(1),
        findings.len(),
        points.len()
    );
    for m in by_model {
        let per = |bytes: usize| bytes / m.devices.max(1);
        eprintln!(
            "  {:?}: {} devices, {} bytes per device (at most {}), of which fault rules {} bytes, cartridge forecasts {} bytes",
            m.model,
            m.devices,
            per(m.state_bytes),
            m.max_device_bytes,
            per(m.rules_bytes),
            per(m.forecast_bytes)
        );
    }

    let mut g = c.benchmark_group("analysis");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    g.bench_function("observe_and_sweep_per_message", |b| {
        b.iter_batched(
            || Analyzer::new(AnalyticsConfig::default()),
            |mut analyzer| {
                let (mut findings, mut points) = (Vec::new(), Vec::new());
                for (id, m) in &stream {
                    // As the pipeline does: observe, then let the clock-driven rules run if device time moved on.
                    analyzer.observe(black_box(id), black_box(m), &mut findings, &mut points);
                    analyzer.sweep(i64::MAX, &mut findings);
                }
                (findings.len(), points.len())
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_analysis);
criterion_main!(benches);
