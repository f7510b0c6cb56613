//! `gateway`: the command-line entry point. Parses flags, loads the config,
//! sets up logging (`RUST_LOG`-style filter in `GATEWAY_LOG`), and runs until Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Smart-fixture gateway: MQTT in, InfluxDB (or SQLite) out, nothing lost.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file. Without one: embedded broker on 127.0.0.1:1883, SQLite under ./data.
    #[arg(long, short, env = "GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Start this many simulated demo fixtures publishing to the broker.
    #[arg(long, default_value_t = 0)]
    demo: usize,
    /// Seconds between console summaries of what arrived (0: none).
    #[arg(long, default_value_t = 5)]
    report_every: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let config = gateway::config::Config::load(cli.config.as_deref(), std::env::vars())
        .with_context(|| "loading the configuration (see gateway.example.toml)")?;
    let options = gateway::RunOptions { demo_fixtures: cli.demo, report_every_s: cli.report_every };
    let shutdown = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    };
    gateway::run(config, options, shutdown).await.context("the gateway stopped with an error")?;
    Ok(())
}
