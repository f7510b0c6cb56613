//! `filter-eval`: simulates a fleet with `fleet-sim`, feeds every cartridge's telemetry
//! to the due-date forecaster in time order, and compares its forecasts at 60/30/14/7
//! days before each true capacity date with two baselines (fixed interval, straight
//! line). Usage: `filter-eval [--devices N] [--days D] [--seed S] [--end-ms MS] [--faults]`.

#[path = "common/filter_eval.rs"]
mod harness;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut cfg = harness::EvalConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<i64, String> {
            args.next()
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| format!("{name} needs an integer"))
        };
        let r = match a.as_str() {
            "--devices" => num("--devices").map(|v| cfg.devices = v as u32),
            "--days" => num("--days").map(|v| cfg.days = v as u32),
            "--seed" => num("--seed").map(|v| cfg.seed = v as u64),
            "--end-ms" => num("--end-ms").map(|v| cfg.end_ms = v),
            "--faults" => {
                cfg.faults = true;
                Ok(())
            }
            other => Err(format!("unknown argument {other:?}")),
        };
        if let Err(e) = r {
            eprintln!("filter-eval: {e}");
            return ExitCode::from(2);
        }
    }
    match harness::run(&cfg) {
        Ok(report) => {
            print!("{}", harness::format_report(&cfg, &report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("filter-eval: {e}");
            ExitCode::FAILURE
        }
    }
}
