//! The SQLite telemetry store, SQLite's defaults against the gateway's tuning, in one run
//! on the same points (so the ratio holds on a noisy machine): 1 000 devices' telemetry
//! in batches of 2 000 points, each batch one transaction with the fsync of `synchronous
//! = FULL`, as the durable writer does. Prints points/s for each and the ratio.
//! `cargo bench -p gateway --bench sqlite_store` (`SQLITE_BENCH_POINTS` to resize).

use std::time::Instant;

use gateway::store::sqlite::{SqliteStore, SqliteTuning};
use gateway::store::{FieldValue, Point};

fn points(n: usize) -> Vec<Point> {
    (0..n)
        .map(|i| {
            let device = i % 1_000;
            let round = (i / 1_000) as i64;
            Point {
                measurement: ["toilet", "purifier", "shower"][device % 3].into(),
                tags: vec![
                    ("device_id".into(), format!("fixture-{device:05}").into()),
                    (
                        "model".into(),
                        ["toilet", "purifier", "shower"][device % 3].into(),
                    ),
                    ("home_id".into(), format!("home-{:04}", device / 3).into()),
                ],
                fields: vec![
                    ("flow_ml_min".into(), FieldValue::Int((i % 9_000) as i64)),
                    (
                        "water_temp_c".into(),
                        FieldValue::Float(20.0 + (i % 170) as f64 / 10.0),
                    ),
                    ("total_water_ml".into(), FieldValue::Int(i as i64 * 37)),
                    ("seq".into(), FieldValue::Int(round)),
                ],
                ts_ms: 1_790_000_000_000 + round * 60_000 + device as i64,
            }
        })
        .collect()
}

fn run(rt: &tokio::runtime::Runtime, tuning: SqliteTuning, points: &[Point]) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_with(&dir.path().join("telemetry.db"), tuning).expect("open");
    let started = Instant::now();
    for (i, batch) in points.chunks(2_000).enumerate() {
        rt.block_on(store.write(batch)).expect("write");
        if i % 50 == 49 {
            eprintln!("  … {} points", (i + 1) * 2_000);
        }
    }
    points.len() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("SQLITE_BENCH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let pts = points(n);
    eprintln!("SQLite's defaults:");
    let defaults = run(&rt, SqliteTuning::sqlite_defaults(), &pts);
    eprintln!("gateway tuning:");
    let tuned = run(&rt, SqliteTuning::default(), &pts);
    println!("SQLite telemetry store, {n} points in batches of 2000 (one transaction each, synchronous=FULL):");
    println!("  SQLite's defaults : {defaults:>10.0} points/s");
    println!("  gateway tuning    : {tuned:>10.0} points/s");
    println!("  ratio             : {:>10.2}", tuned / defaults);
}
