//! `nab-score --results DIR --windows windows.json [--profiles profiles.json] [--data DIR]`:
//! score detector results (one `timestamp,...,anomaly_score` CSV per data file, at the
//! same relative path as in windows.json) with our implementation of NAB's scorer.

mod common;

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: nab-score --results DIR --windows windows.json [--profiles profiles.json] [--data DIR]\n\
  profiles.json defaults to the one next to windows.json; --data checks row counts against the data files.";

fn run() -> Result<(), String> {
    let args = common::Args::parse(&["--results", "--windows", "--profiles", "--data"], USAGE)?;
    let results = Path::new(args.require("--results")?);
    let windows_path = Path::new(args.require("--windows")?);
    let profiles_path = match args.get("--profiles") {
        Some(p) => Path::new(p).to_path_buf(),
        None => windows_path.with_file_name("profiles.json"),
    };
    let windows = common::load_windows(windows_path)?;
    let profiles = common::load_profiles(&profiles_path)?;
    let files = common::load_results(results, &windows, args.get("--data").map(Path::new))?;
    common::score_and_print(&files, &windows, &profiles)?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nab-score: {e}");
            ExitCode::FAILURE
        }
    }
}
