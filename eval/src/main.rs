//! `eval`: one command line for the evaluations of the analytics.
//!
//! ```text
//! eval fault  [--devices N] [--days D] [--seed S] [--faults SPEC] [--variants SPEC] [--lofo] [--rules-json JSON] [--trace I] [--water-dump FILE]
//! eval filter [--devices N] [--days D] [--seed S] [--faults] [--cartridges FAMILY|SPEC] [--set name=value]... [--dump FILE.csv]
//! eval filter --heldout [--families a,b,..] [--selection-seeds 11,12] [--heldout-seeds 21,22] [--devices N] [--days D]
//! eval nab detect --input FILE.csv --output OUT.csv
//! eval nab score  --results DIR --windows windows.json [--profiles profiles.json] [--data DIR]
//! eval nab run    [--nab ../shared/datasets/nab] [--out target/nab-results] [--set name=value]...
//! eval nab cv     [--nab ../shared/datasets/nab] [--grid name=v1,v2,...]... [--set name=value]... [--out DIR]
//! ```
//! Progress goes to standard error, the report to standard output.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use analytics::DetectorConfig;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use eval::nab::files;
use simulator::faults::FaultMix;

#[derive(Parser)]
#[command(
    name = "eval",
    version,
    about = "Evaluate the analytics against ground truth."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fault rules on a simulated fleet: recall, precision, time to detect per finding kind.
    Fault(FaultArgs),
    /// Filter due-date forecasts against the true capacity dates, beside two baselines.
    Filter(FilterArgs),
    /// The anomaly detector on the Numenta Anomaly Benchmark.
    #[command(subcommand)]
    Nab(NabCommand),
}

/// The fleet to simulate (shared by `fault` and `filter`).
#[derive(Args)]
struct FleetArgs {
    /// Number of simulated devices.
    #[arg(long)]
    devices: Option<u32>,
    /// Simulated days.
    #[arg(long)]
    days: Option<u32>,
    /// Random seed of the fleet.
    #[arg(long)]
    seed: Option<u64>,
    /// End of the simulation, in ms since the Unix epoch (default: a fixed date).
    #[arg(long)]
    end_ms: Option<i64>,
}

#[derive(Args)]
struct FaultArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Fault mix, e.g. `leak=0.3,valve_stuck=0.1` (default: the simulator's default mix).
    #[arg(long)]
    faults: Option<String>,
    /// World variants, e.g. `all=0.3` or `burst_cadence=0.5,clock_offset=0.5`
    /// (families: burst_cadence, silent_firmware, shared_shower, clock_offset,
    /// small_leak, night_leak, cleaning, heater_wear; default: none).
    #[arg(long)]
    variants: Option<String>,
    /// Leave-one-family-out: pick the rule thresholds on the other variant families
    /// and seed S, report on each held-out family with seed S+1; prints both tables.
    #[arg(long)]
    lofo: bool,
    /// Rule parameters as JSON, e.g. `{"leak_min_ml_per_min":3.0}`.
    #[arg(long)]
    rules_json: Option<String>,
    /// Trace one device's findings by index.
    #[arg(long)]
    trace: Option<u32>,
    /// Write every device's daily water totals, truth and abnormal-water episodes here.
    #[arg(long, env = "FAULT_EVAL_WATER_DUMP")]
    water_dump: Option<String>,
}

#[derive(Args)]
struct FilterArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Inject the default fault mix too.
    #[arg(long)]
    faults: bool,
    /// Override a forecaster parameter (`name=value`, repeatable; for experiments).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
    /// Write every query (forecast, interval, baselines) to this CSV file.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Cartridge variants of the fleet: a family (catalog, low_loss, rated, resets,
    /// mixed) or `rated=S,loss=A-B,lossy=P,reboots=N`.
    #[arg(long)]
    cartridges: Option<String>,
    /// Leave-one-family-out: choose the configuration and interval scales on the other
    /// families' selection seeds, report on each family's held-out seeds.
    #[arg(long)]
    heldout: bool,
    /// Families for `--heldout` (comma-separated; default: all five).
    #[arg(long, value_delimiter = ',')]
    families: Vec<String>,
    /// Seeds the choices are made on (`--heldout`).
    #[arg(long, value_delimiter = ',')]
    selection_seeds: Vec<u64>,
    /// Seeds the results are reported on (`--heldout`).
    #[arg(long, value_delimiter = ',')]
    heldout_seeds: Vec<u64>,
}

#[derive(Subcommand)]
enum NabCommand {
    /// Run the detector over one NAB data file (`timestamp,value` → `timestamp,value,anomaly_score`).
    Detect {
        /// NAB data file.
        #[arg(long)]
        input: PathBuf,
        /// Results file to write.
        #[arg(long)]
        output: PathBuf,
    },
    /// Score a results directory (one CSV per data file, same relative paths as windows.json).
    Score {
        /// Results directory.
        #[arg(long)]
        results: PathBuf,
        /// NAB's windows.json.
        #[arg(long)]
        windows: PathBuf,
        /// NAB's profiles.json (default: beside windows.json).
        #[arg(long)]
        profiles: Option<PathBuf>,
        /// Data directory, to check row counts against the data files.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Detect every file of a NAB corpus and score it (per-file table and totals per profile).
    Run {
        /// The NAB corpus (data/, windows.json, profiles.json).
        #[arg(long, default_value = "../shared/datasets/nab")]
        nab: PathBuf,
        /// Where the results are written.
        #[arg(long, default_value = "target/nab-results")]
        out: PathBuf,
        /// Override a detector parameter by its `DetectorConfig` name (`name=value`, repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        sets: Vec<String>,
    },
    /// Leave-one-category-out cross-validation: parameters chosen from a small grid on
    /// the other categories, each category scored held out, beside the full-subset score.
    Cv {
        /// The NAB corpus (data/, windows.json, profiles.json).
        #[arg(long, default_value = "../shared/datasets/nab")]
        nab: PathBuf,
        /// A grid axis `name=v1,v2,...` (repeatable; the first value is the default).
        /// Without any, the built-in grid (`eval::nab::cv::default_grid`).
        #[arg(long = "grid", value_name = "NAME=V1,V2,...")]
        grid: Vec<String>,
        /// Override a detector parameter for every candidate (`name=value`, repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        sets: Vec<String>,
        /// Also write every held-out file's results (each with its fold's parameters)
        /// here, so that `eval nab score --results DIR` can score them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eval: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Fault(args) => fault(args),
        Command::Filter(args) => filter(args),
        Command::Nab(cmd) => nab(cmd),
    }
}

fn fault(args: FaultArgs) -> anyhow::Result<()> {
    let mut cfg = eval::fault::EvalConfig::default();
    let f = args.fleet;
    cfg.devices = f.devices.unwrap_or(cfg.devices);
    cfg.days = f.days.unwrap_or(cfg.days);
    cfg.seed = f.seed.unwrap_or(cfg.seed);
    cfg.end_ms = f.end_ms.unwrap_or(cfg.end_ms);
    cfg.trace = args.trace;
    cfg.water_dump = args.water_dump;
    if let Some(text) = args.rules_json {
        cfg.rules = serde_json::from_str(&text).context("--rules-json")?;
    }
    if let Some(spec) = args.faults {
        cfg.mix = FaultMix::parse(&spec).context("--faults")?;
    }
    if let Some(spec) = args.variants {
        cfg.variants = simulator::fleet::Variants::parse(&spec).context("--variants")?;
    }
    cfg.rules.validate().context("rule parameters")?;
    if args.lofo {
        let out =
            eval::fault::lofo(&cfg, |line| eprintln!("{line}")).map_err(anyhow::Error::msg)?;
        print!("{out}");
        return Ok(());
    }
    let report = eval::fault::run(&cfg, |line| eprintln!("{line}")).map_err(anyhow::Error::msg)?;
    print!("{}", eval::fault::format_report(&cfg, &report));
    Ok(())
}

fn filter(args: FilterArgs) -> anyhow::Result<()> {
    let mut cfg = eval::filter::EvalConfig::default();
    let f = args.fleet;
    cfg.devices = f.devices.unwrap_or(cfg.devices);
    cfg.days = f.days.unwrap_or(cfg.days);
    cfg.seed = f.seed.unwrap_or(cfg.seed);
    cfg.end_ms = f.end_ms.unwrap_or(cfg.end_ms);
    cfg.faults = args.faults;
    for kv in &args.sets {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--set needs name=value, got {kv:?}");
        };
        let x: f64 = v
            .trim()
            .parse()
            .with_context(|| format!("--set {k}: {v:?} is not a number"))?;
        cfg.overrides.push((k.trim().to_string(), x));
    }
    if let Some(spec) = &args.cartridges {
        cfg.cartridges = simulator::device::CartridgeMix::parse(spec).context("--cartridges")?;
    }
    if args.heldout {
        let mut h = eval::filter::HeldOutConfig::standard(cfg);
        if !args.families.is_empty() {
            h.families = args.families;
        }
        if !args.selection_seeds.is_empty() {
            h.selection_seeds = args.selection_seeds;
        }
        if !args.heldout_seeds.is_empty() {
            h.heldout_seeds = args.heldout_seeds;
        }
        let out =
            eval::filter::heldout(&h, |line| eprintln!("{line}")).map_err(anyhow::Error::msg)?;
        print!("{out}");
        return Ok(());
    }
    let report = eval::filter::run(&cfg).map_err(anyhow::Error::msg)?;
    print!("{}", eval::filter::format_report(&cfg, &report));
    if let Some(path) = args.dump {
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
        std::fs::write(&path, csv).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn nab(cmd: NabCommand) -> anyhow::Result<()> {
    match cmd {
        NabCommand::Detect { input, output } => {
            files::detect_file(&input, &output, DetectorConfig::default())
                .map_err(anyhow::Error::msg)?;
        }
        NabCommand::Score {
            results,
            windows,
            profiles,
            data,
        } => {
            let profiles = profiles.unwrap_or_else(|| windows.with_file_name("profiles.json"));
            let windows = files::load_windows(&windows).map_err(anyhow::Error::msg)?;
            let profiles = files::load_profiles(&profiles).map_err(anyhow::Error::msg)?;
            let files_ = files::load_results(&results, &windows, data.as_deref())
                .map_err(anyhow::Error::msg)?;
            files::score_and_print(&files_, &windows, &profiles).map_err(anyhow::Error::msg)?;
        }
        NabCommand::Run { nab, out, sets } => {
            let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
            let cfg = files::apply_overrides(DetectorConfig::default(), &sets)
                .map_err(anyhow::Error::msg)?;
            let windows =
                files::load_windows(&nab.join("windows.json")).map_err(anyhow::Error::msg)?;
            let profiles =
                files::load_profiles(&nab.join("profiles.json")).map_err(anyhow::Error::msg)?;
            let data = nab.join("data");
            let total = windows.len();
            for (i, key) in windows.keys().enumerate() {
                eprintln!("[{}/{total}] {key}", i + 1);
                files::detect_file(&files::keyed(&data, key), &files::keyed(&out, key), cfg)
                    .map_err(anyhow::Error::msg)?;
            }
            let files_ = files::load_results(&out, &windows, Some(Path::new(&data)))
                .map_err(anyhow::Error::msg)?;
            files::score_and_print(&files_, &windows, &profiles).map_err(anyhow::Error::msg)?;
            println!(
                "\ndetector state: {} bytes per series (size_of::<StreamingDetector>())",
                analytics::StreamingDetector::state_size()
            );
        }
        NabCommand::Cv {
            nab,
            grid,
            sets,
            out,
        } => {
            let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
            let base = files::apply_overrides(DetectorConfig::default(), &sets)
                .map_err(anyhow::Error::msg)?;
            let axes = if grid.is_empty() {
                eval::nab::cv::default_grid()
            } else {
                grid.iter()
                    .map(|g| eval::nab::cv::parse_axis(g))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(anyhow::Error::msg)
                    .context("--grid")?
            };
            let candidates = eval::nab::cv::expand_grid(base, &axes).map_err(anyhow::Error::msg)?;
            let windows =
                files::load_windows(&nab.join("windows.json")).map_err(anyhow::Error::msg)?;
            let profiles =
                files::load_profiles(&nab.join("profiles.json")).map_err(anyhow::Error::msg)?;
            let series =
                files::load_corpus(&nab.join("data"), &windows).map_err(anyhow::Error::msg)?;
            let report = eval::nab::cv::run_cv(&series, &windows, &profiles, &candidates, |line| {
                eprintln!("{line}")
            })
            .map_err(anyhow::Error::msg)?;
            print!("{}", eval::nab::cv::format_report(&report));
            if let Some(out) = out {
                let data = nab.join("data");
                for key in windows.keys() {
                    let cat = eval::nab::cv::category_of(key);
                    let Some(fold) = report.folds.iter().find(|f| f.category == cat) else {
                        bail!("{key}: no fold for category {cat}");
                    };
                    let cfg = report.candidates[fold.chosen].cfg;
                    files::detect_file(&files::keyed(&data, key), &files::keyed(&out, key), cfg)
                        .map_err(anyhow::Error::msg)?;
                }
                println!("held-out results written to {}", out.display());
            }
        }
    }
    Ok(())
}
