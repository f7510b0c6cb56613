//! Criterion bench of the fault rules: the per-message step (`on_telemetry` /
//! `on_event`) over a realistic simulated stream (`simulator`, default fault mix, every
//! world variant at probability 0.5), and
//! the periodic `on_clock`. Divide the reported time per iteration by the message count
//! (criterion's throughput line gives messages per second). Prints the bytes of state
//! per device (`DeviceRules::state_bytes`: the struct and its model's heap block, by model).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use analytics::rules::{DeviceRules, RulesConfig};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use protocol::message::{Event, Model, Telemetry};
use simulator::faults::FaultMix;
use simulator::{Fleet, FleetConfig};

const DEVICES: u32 = 30;
const DAYS: u32 = 30;

enum Message {
    Telemetry(Telemetry),
    Event(Event),
}

fn stream() -> Vec<(u32, Message)> {
    // Every world variant present (burst cadence, clocks off, shared showers, ...).
    let variants = simulator::fleet::Variants::parse("all=0.5").expect("valid variants");
    let mut fleet = Fleet::with_variants(
        FleetConfig {
            devices: DEVICES,
            days: DAYS,
            end_ms: 1_764_000_000_000,
            seed: 7,
            telemetry_every_min: 15,
            mix: FaultMix::default_mix(),
            inject: Vec::new(),
        },
        &variants,
    )
    .expect("valid fleet configuration");
    let mut messages = Vec::new();
    while let Some(batch) = fleet.next_batch() {
        messages.extend(batch);
    }
    messages
        .iter()
        .filter_map(|m| {
            let parsed = if m.topic.ends_with("/telemetry") {
                Message::Telemetry(serde_json::from_slice(&m.payload).ok()?)
            } else if m.topic.ends_with("/event") {
                Message::Event(serde_json::from_slice(&m.payload).ok()?)
            } else {
                return None;
            };
            Some((m.device, parsed))
        })
        .collect()
}

fn fresh(cfg: &RulesConfig) -> Vec<DeviceRules> {
    (0..DEVICES)
        .map(|i| DeviceRules::new(simulator::fleet::model_of(i), cfg))
        .collect()
}

/// `toilet N, purifier N, shower N`: bytes of state of a fresh device of each model
/// (the state has a fixed size: nothing grows as it learns).
fn bytes_by_model(cfg: &RulesConfig) -> String {
    [Model::Toilet, Model::Purifier, Model::Shower]
        .map(|m| format!("{} {}", m.as_str(), DeviceRules::new(m, cfg).state_bytes()))
        .join(", ")
}

fn bench_rules(c: &mut Criterion) {
    let cfg = RulesConfig::default();
    let messages = stream();
    eprintln!(
        "rules bench: {} messages of {DEVICES} devices over {DAYS} days; bytes of state per device: {}",
        messages.len(),
        bytes_by_model(&cfg)
    );
    let mut g = c.benchmark_group("rules");
    g.sample_size(10);
    g.throughput(Throughput::Elements(messages.len() as u64));
    g.bench_function("per_message", |b| {
        b.iter(|| {
            let mut rules = fresh(&cfg);
            let mut out = Vec::new();
            for (device, m) in &messages {
                let r = &mut rules[*device as usize];
                match m {
                    Message::Telemetry(t) => r.on_telemetry(&cfg, black_box(t), &mut out),
                    Message::Event(e) => r.on_event(&cfg, black_box(e), &mut out),
                }
                out.clear();
            }
            rules
        })
    });
    g.finish();

    // The clock, on warm state: one call per device.
    let mut rules = fresh(&cfg);
    let mut out = Vec::new();
    let mut last_ts = 0;
    for (device, m) in &messages {
        let r = &mut rules[*device as usize];
        match m {
            Message::Telemetry(t) => {
                last_ts = t.ts;
                r.on_telemetry(&cfg, t, &mut out)
            }
            Message::Event(e) => r.on_event(&cfg, e, &mut out),
        }
    }
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(u64::from(DEVICES)));
    g.bench_function("on_clock_per_device", |b| {
        b.iter(|| {
            for r in &mut rules {
                r.on_clock(&cfg, black_box(last_ts + 60_000), &mut out);
            }
            out.clear();
        })
    });
    g.finish();
}

criterion_group!(benches, bench_rules);
criterion_main!(benches);
