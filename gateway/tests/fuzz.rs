//! A stable fuzz harness for the two parsers that read bytes from outside: the
//! message decoder (`ingest::decode`) and the spool reader (`store::spool::decode_batch`).
//!
//! Seeded, mutation-based: valid inputs are mutated (bit flips, byte changes,
//! insertions of JSON tokens, deletions, truncations, duplicated slices) and fed
//! to the parser, which must answer (points or a reason) without panicking; a
//! spool file that was mutated must never verify as a different batch. Runs on
//! stable in CI (`cargo test -p gateway --test fuzz`); `FUZZ_ITERS=2000000` for a
//! large run, `FUZZ_SEED` to vary the inputs.

use gateway::decode::decode;
use gateway::store::spool::{decode_batch, encode_batch};
use gateway::store::{FieldValue, Point};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn iters() -> u64 {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(13)
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"null",
    b"true",
    b"-1",
    b"1e309",
    b"4294967296",
    b"18446744073709551616",
    b"NaN",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"0.0",
    b"-0",
    b"\xff\xfe",
    b"\"seq\":",
    b"\"ts\":",
    b"\"v\":2",
    b"\"event\":",
    b"\"reading\":",
    b"\n",
];

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                out[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                out.splice(i..i, t.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..=16)).min(len);
                out.drain(a..b);
            }
            4 => out.truncate(rng.random_range(0..=len)),
            5 if len > 0 => {
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..=32)).min(len);
                let piece: Vec<u8> = out[a..b].to_vec();
                let at = rng.random_range(0..=out.len());
                out.splice(at..at, piece);
            }
            _ => {
                let n = rng.random_range(0..8);
                out.extend((0..n).map(|_| rng.random::<u8>()));
            }
        }
    }
    out
}

fn corpus(now: i64) -> Vec<(String, Vec<u8>)> {
    let ts = now - 1000;
    vec![
        (
            "fixtures/toilet-00001/telemetry".into(),
            format!(r#"{{"v":1,"device_id":"toilet-00001","boot_id":1,"seq":5,"ts":{ts},"fw":"1.2.0","reading":{{"toilet":{{"seat_sessions":3,"washes":1,"wash_seconds":40,"flushes":3,"water_ml":9000,"heater_wh":4,"water_temp_c":36.5,"seat_temp_c":34.0}}}}}}"#).into_bytes(),
        ),
        (
            "fixtures/purifier-00002/telemetry".into(),
            format!(r#"{{"v":1,"device_id":"purifier-00002","boot_id":1,"seq":9,"ts":{ts},"reading":{{"purifier":{{"dispensed_ml":1200,"tds_in_ppm":300,"tds_out_ppm":10,"inlet_pressure_kpa":260.0,"pump_seconds":8,"cartridges":[{{"slot":0,"kind":"sediment","ml_since_replacement":1200,"replacements":0}}]}}}}}}"#).into_bytes(),
        ),
        (
            "fixtures/toilet-00001/event".into(),
            format!(r#"{{"v":1,"device_id":"toilet-00001","boot_id":1,"seq":6,"ts":{ts},"event":{{"fault":{{"code":"leak","severity":"critical","state":"raised","value":60.0}}}}}}"#).into_bytes(),
        ),
        (
            "fixtures/toilet-00001/status".into(),
            format!(r#"{{"v":1,"device_id":"toilet-00001","ts":{ts},"state":"online","model":"toilet","fw":"1.2.0"}}"#).into_bytes(),
        ),
    ]
}

#[test]
fn the_decoder_never_panics_on_mutated_messages() {
    let now = 1_760_000_000_000;
    let limits = protocol::validate::Limits::default();
    let corpus = corpus(now);
    for (topic, payload) in &corpus {
        assert!(
            decode(topic, payload, now, &limits).is_ok(),
            "the corpus is valid: {topic} {}",
            String::from_utf8_lossy(payload)
        );
    }
    let mut rng = StdRng::seed_from_u64(seed());
    let (mut accepted, mut rejected) = (0u64, 0u64);
    for i in 0..iters() {
        let (topic, payload) = &corpus[(i % corpus.len() as u64) as usize];
        let payload = mutate(&mut rng, payload);
        let topic = if rng.random_range(0..10) == 0 {
            String::from_utf8_lossy(&mutate(&mut rng, topic.as_bytes())).into_owned()
        } else {
            topic.clone()
        };
        match decode(&topic, &payload, now, &limits) {
            Ok(_) => accepted += 1,
            Err(r) => {
                assert!(!r.reason.is_empty());
                rejected += 1;
            }
        }
    }
    eprintln!(
        "decoder: {} mutated inputs (seed {}): {accepted} accepted, {rejected} rejected with a reason, no panic",
        iters(),
        seed()
    );
    assert!(rejected > 0, "accepted {accepted}, rejected {rejected}");
}

fn point(i: i64) -> Point {
    Point {
        measurement: "purifier".into(),
        tags: vec![("device_id".into(), format!("p-{i}").into())],
        fields: vec![
            ("tds_in_ppm".into(), FieldValue::Int(300 + i)),
            ("temp".into(), FieldValue::Float(21.5)),
            ("ok".into(), FieldValue::Bool(i % 2 == 0)),
            ("note".into(), FieldValue::Str(format!("n\"{i}\n").into())),
        ],
        ts_ms: 1_760_000_000_000 + i,
    }
}

#[test]
fn the_spool_reader_never_panics_and_never_accepts_a_mutated_file() {
    let mut rng = StdRng::seed_from_u64(seed());
    let batches: Vec<(Vec<Point>, Vec<u8>)> = [1, 3, 17]
        .iter()
        .map(|&n| {
            let pts: Vec<Point> = (0..n).map(point).collect();
            let bytes = encode_batch(&pts).unwrap();
            (pts, bytes)
        })
        .collect();
    let (mut verified_changed, mut refused, mut legacy) = (0u64, 0u64, 0u64);
    for i in 0..iters() {
        let (points, bytes) = &batches[(i % 3) as usize];
        let mutated = mutate(&mut rng, bytes);
        match decode_batch(&mutated) {
            Ok(d) if mutated == *bytes => assert_eq!(&d.points, points),
            // Headerless (the header was destroyed and the rest parses as JSON lines):
            // the previous format, replayed with a warning.
            Ok(d) if d.legacy => legacy += 1,
            Ok(d) if d.points != *points => verified_changed += 1,
            Ok(_) => {}
            Err(_) => refused += 1,
        }
    }
    eprintln!(
        "spool reader: {} mutated files (seed {}): {refused} refused, {legacy} read as the headerless previous format, {verified_changed} verified as a different batch, no panic",
        iters(),
        seed()
    );
    assert_eq!(
        verified_changed, 0,
        "a damaged v2 file verified as a different batch"
    );
}
