//! `nab-eval [--nab DIR] [--out DIR] [--set name=value]...`: run `nab-detect`'s detector
//! over every file of a NAB dataset directory (`data/`, `windows.json`, `profiles.json`),
//! write the results under `--out`, and score them for all profiles in one go. `--set`
//! overrides any field of `DetectorConfig` by name (`DetectorConfig::set`), for
//! experiments and ablations (e.g. `--set shift_weight=0`).

mod common;

use std::path::Path;
use std::process::ExitCode;

use analytics::DetectorConfig;

const USAGE: &str = "usage: nab-eval [--nab ../shared/datasets/nab] [--out target/nab-results] [--set name=value]...\n\
  --set overrides a detector parameter by its DetectorConfig field name, e.g. shift_weight=0\n\
  (for experiments; nab-detect always uses the defaults).";

fn run() -> Result<(), String> {
    let args = common::Args::parse(&["--nab", "--out", "--set"], USAGE)?;
    let cfg = common::apply_overrides(DetectorConfig::default(), &args.get_all("--set"))?;
    let nab = Path::new(args.get("--nab").unwrap_or("../shared/datasets/nab"));
    let out = Path::new(args.get("--out").unwrap_or("target/nab-results"));
    let windows = common::load_windows(&nab.join("windows.json"))?;
    let profiles = common::load_profiles(&nab.join("profiles.json"))?;
    let data = nab.join("data");
    for key in windows.keys() {
        common::detect_file(&common::keyed(&data, key), &common::keyed(out, key), cfg)?;
    }
    let files = common::load_results(out, &windows, Some(&data))?;
    common::score_and_print(&files, &windows, &profiles)?;
    println!(
        "\ndetector state: {} bytes per series (size_of::<StreamingDetector>())",
        analytics::StreamingDetector::state_size()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nab-eval: {e}");
            ExitCode::FAILURE
        }
    }
}
