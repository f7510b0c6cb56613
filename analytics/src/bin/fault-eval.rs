//! `fault-eval`: simulates a fleet with `fleet-sim`, feeds every device's messages to
//! the fault rules (`analytics::rules::DeviceRules`) with a steady clock, and scores
//! the findings against the simulator's ground truth: per finding kind, recall,
//! precision and median time to detect (see `common/fault_eval.rs` for the mapping).
//! Usage: `fault-eval [--devices N] [--days D] [--seed S] [--end-ms MS] [--faults SPEC]
//! [--rules-json '{"leak_raise_intervals":3}'] [--trace DEVICE_INDEX] [--water-dump FILE]`.
//! `--water-dump` (or `FAULT_EVAL_WATER_DUMP=FILE`) writes every device's daily water
//! totals, the truth and the abnormal-water episodes and truth windows to `FILE`.

#[path = "common/fault_eval.rs"]
mod harness;

use std::process::ExitCode;

use fleet_sim::faults::FaultMix;

fn main() -> ExitCode {
    let mut cfg = harness::EvalConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> Result<String, String> {
            args.next().ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |v: Result<String, String>, name: &str| -> Result<i64, String> {
            v?.parse::<i64>()
                .map_err(|_| format!("{name} needs an integer"))
        };
        let r = match a.as_str() {
            "--devices" => num(value(&a), &a).map(|v| cfg.devices = v as u32),
            "--days" => num(value(&a), &a).map(|v| cfg.days = v as u32),
            "--seed" => num(value(&a), &a).map(|v| cfg.seed = v as u64),
            "--end-ms" => num(value(&a), &a).map(|v| cfg.end_ms = v),
            "--trace" => num(value(&a), &a).map(|v| cfg.trace = Some(v as u32)),
            "--water-dump" => value(&a).map(|v| cfg.water_dump = Some(v)),
            "--rules-json" => value(&a).and_then(|text| {
                serde_json::from_str(&text)
                    .map(|r| cfg.rules = r)
                    .map_err(|e| format!("--rules-json: {e}"))
            }),
            "--faults" => value(&a).and_then(|spec| {
                FaultMix::parse(&spec)
                    .map(|m| cfg.mix = m)
                    .map_err(|e| e.to_string())
            }),
            "-h" | "--help" => {
                println!("usage: fault-eval [--devices N] [--days D] [--seed S] [--end-ms MS] [--faults SPEC] [--rules-json JSON] [--trace DEVICE_INDEX] [--water-dump FILE]");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other:?}")),
        };
        if let Err(e) = r {
            eprintln!("fault-eval: {e}");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = cfg.rules.validate() {
        eprintln!("fault-eval: {e}");
        return ExitCode::from(2);
    }
    let result = harness::run(&cfg, |line| eprintln!("{line}"));
    match result {
        Ok(report) => {
            print!("{}", harness::format_report(&cfg, &report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fault-eval: {e}");
            ExitCode::FAILURE
        }
    }
}
