//! Bench: the gateway's CPU work per message without any I/O — the batch builder
//! (decode, validation, sequence checks, the analytics stage, maintenance actions) and the
//! InfluxDB line protocol of the batch's points — over a simulated fleet's real stream in
//! batches of 2 000, as the pipeline sees it. Prints nanoseconds and heap allocations per
//! message; allocations are counted by a wrapping global allocator, so that figure is exact
//! and does not depend on how busy the machine is (issue 14: "fewer allocations per message").
//!
//! `cargo bench -p gateway --bench ingest_core` (`-- --messages N` for a shorter stream,
//! `-- --no-analytics` without the analytics stage, `-- --days N` for fewer days).
#![allow(missing_docs)]

use std::collections::HashMap;
use std::time::Instant;

use gateway::analysis::{AnalyticsConfig, Analyzer};
use gateway::ingest::batch::BatchBuilder;
use gateway::ingest::Inbound;
use gateway::store::line_protocol::encode_point;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const BATCH: usize = 2_000;
const END_MS: i64 = 1_790_000_000_000;

fn stream(days: u32, limit: usize) -> Vec<rumqttc::Publish> {
    let cfg = simulator::FleetConfig {
        devices: 300,
        days,
        seed: 7,
        end_ms: END_MS,
        mix: simulator::FaultMix::default_mix(),
        ..simulator::FleetConfig::default()
    };
    let (messages, _) = simulator::Fleet::generate_all(cfg).expect("fleet");
    messages
        .into_iter()
        .take(limit)
        .map(|m| rumqttc::Publish::new(m.topic, rumqttc::QoS::AtLeastOnce, m.payload))
        .collect()
}

/// The measured work: every batch built and encoded as line protocol; (points, accepted
/// messages, line bytes). Not inlined, so that `valgrind --tool=callgrind
/// --toggle-collect=*ingest_core::ingest*` counts the instructions of this part alone.
#[inline(never)]
fn ingest(builder: &mut BatchBuilder, batches: Vec<Vec<Inbound>>) -> (usize, u64, usize) {
    let mut body = String::new();
    let (mut points, mut accepted, mut line_bytes) = (0usize, 0u64, 0usize);
    for messages in batches {
        let batch = builder.build(messages, END_MS);
        body.clear();
        for p in &batch.points {
            // A point the encoder refuses is a dead letter in the gateway; none here.
            let _ = encode_point(&mut body, p);
        }
        points += batch.points.len();
        accepted += batch.tally.accepted;
        line_bytes += body.len();
        std::hint::black_box(&batch);
    }
    (points, accepted, line_bytes)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut limit, mut analytics, mut days) = (usize::MAX, true, 30);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => limit = args.next().and_then(|n| n.parse().ok()).unwrap_or(limit),
            "--no-analytics" => analytics = false,
            "--days" => days = args.next().and_then(|n| n.parse().ok()).unwrap_or(days),
            _ => {}
        }
    }
    eprintln!("ingest_core: generating the stream (300 fixtures, {days} days)");
    let publishes = stream(days, limit);
    let n = publishes.len();
    let limits = protocol::validate::Limits {
        max_age_ms: i64::MAX / 4,
        max_future_ms: i64::MAX / 4,
    };
    // Batches are built before the clock starts (the connection's work, not this one's).
    let batches: Vec<Vec<Inbound>> = {
        let mut out = Vec::new();
        let mut it = publishes.into_iter().peekable();
        while it.peek().is_some() {
            out.push(
                it.by_ref()
                    .take(BATCH)
                    .map(|publish| Inbound {
                        publish,
                        generation: 1,
                    })
                    .collect(),
            );
        }
        out
    };
    let mut builder = BatchBuilder::new(
        limits,
        HashMap::new(),
        analytics.then(|| Analyzer::new(AnalyticsConfig::default())),
        true,
    );
    let region = Region::new(GLOBAL);
    let start = Instant::now();
    let (points, accepted, line_bytes) = ingest(&mut builder, batches);
    let elapsed = start.elapsed();
    let stats = region.change();
    // A reallocation may move the block: it counts as one.
    let allocations = stats.allocations + stats.reallocations;
    println!(
        "ingest core (analytics {}): {n} messages ({accepted} accepted, {points} points, {} line bytes per message) in {:.2} s: \
         {:.0} ns per message, {:.1} allocations per message",
        if analytics { "on" } else { "off" },
        line_bytes / n.max(1),
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / n.max(1) as f64,
        allocations as f64 / n.max(1) as f64,
    );
}
