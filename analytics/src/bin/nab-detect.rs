//! `nab-detect --input FILE.csv --output OUT.csv`: run the streaming detector over one
//! NAB data file (`timestamp,value`) and write `timestamp,value,anomaly_score`.

mod common;

use std::path::Path;
use std::process::ExitCode;

use analytics::DetectorConfig;

const USAGE: &str = "usage: nab-detect --input FILE.csv --output OUT.csv";

fn run() -> Result<(), String> {
    let args = common::Args::parse(&["--input", "--output"], USAGE)?;
    let input = args.require("--input")?;
    let output = args.require("--output")?;
    common::detect_file(
        Path::new(input),
        Path::new(output),
        DetectorConfig::default(),
    )?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nab-detect: {e}");
            ExitCode::FAILURE
        }
    }
}
