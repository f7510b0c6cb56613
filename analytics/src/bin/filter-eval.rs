//! `filter-eval`: simulates a fleet with `fleet-sim`, feeds every cartridge's telemetry
//! to the due-date forecaster in time order, and compares its forecasts at 60/30/14/7
//! days before each true capacity date with two baselines (fixed interval, straight
//! line). Usage: `filter-eval [--devices N] [--days D] [--seed S] [--end-ms MS] [--faults] [--dump queries.csv]
//! [--set parameter=value ...]` (forecaster parameters, for tuning).

#[path = "common/filter_eval.rs"]
mod harness;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut cfg = harness::EvalConfig::default();
    let mut dump: Option<String> = None;
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
            "--dump" => args
                .next()
                .map(|p| dump = Some(p))
                .ok_or_else(|| "--dump needs a path".to_string()),
            "--set" => args
                .next()
                .and_then(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.parse::<f64>().ok()?))
                })
                .map(|kv| cfg.overrides.push(kv))
                .ok_or_else(|| "--set needs name=number".to_string()),
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
            if let Some(path) = dump {
                let mut csv = String::from(
                    "device,slot,kind,horizon,forecaster,lo,hi,line,meter,rate_l_day,days_seen\n",
                );
                for r in &report.rows {
                    csv += &format!(
                        "{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{}\n",
                        r.device,
                        r.slot,
                        r.kind,
                        r.horizon_days,
                        r.forecaster,
                        r.lo,
                        r.hi,
                        r.line,
                        r.meter,
                        r.rate_l_day,
                        r.days_seen
                    );
                }
                if let Err(e) = std::fs::write(&path, csv) {
                    eprintln!("filter-eval: cannot write {path}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("filter-eval: {e}");
            ExitCode::FAILURE
        }
    }
}
