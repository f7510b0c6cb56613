//! Criterion bench: cost of one `StreamingDetector::update` per message.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use analytics::{DetectorConfig, StreamingDetector};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn bench_update(c: &mut Criterion) {
    // A deterministic daily-seasonal signal with pseudo-random noise, 5-minute steps.
    let n = 10_000usize;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<(i64, f64)> = (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let t = i as i64 * 300_000;
            let v = 50.0 + 10.0 * ((i as f64) * std::f64::consts::TAU / 288.0).sin() + noise;
            (t, v)
        })
        .collect();
    let mut g = c.benchmark_group("detector");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("update_10k_points", |b| {
        b.iter(|| {
            let mut d =
                StreamingDetector::new(DetectorConfig::default()).expect("valid default config");
            let mut acc = 0.0;
            for &(t, v) in &data {
                acc += d.update(black_box(t), black_box(v));
            }
            acc
        })
    });
    g.finish();
}

criterion_group!(benches, bench_update);
criterion_main!(benches);
