//! `gateway`: the command-line entry point. Parses flags, loads the config,
//! sets up logging (`RUST_LOG`-style filter in `GATEWAY_LOG`, `[log] format`), and
//! runs until Ctrl-C or SIGTERM; or runs a one-off task (tokens, devices, backup,
//! restore, check-config).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// mimalloc, not glibc malloc: per message the gateway allocates and frees many small strings
/// (decoded fields, point tags), where glibc's free-list upkeep cost a quarter of the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// With --demo: register this many simulated fixtures with the maintenance engine (at
    /// least the demo's own), so a bigger `simulator` run against the demo is registered too.
    #[arg(long, default_value_t = 0)]
    demo_register: usize,
    /// Seconds between console summaries of what arrived (0: none).
    #[arg(long, default_value_t = 5)]
    report_every: u64,
    /// Instead of running: a one-off task.
    #[command(subcommand)]
    task: Option<Task>,
}

/// One-off tasks.
#[derive(Debug, clap::Subcommand)]
enum Task {
    /// Bearer tokens: list, create, revoke, rotate (in the maintenance database; without
    /// [maintenance], in {data_dir}/maintenance.db).
    #[command(subcommand)]
    Tokens(TokensTask),
    /// Issue a bearer token with the default life (90 days) and print it; see also `tokens`.
    IssueToken {
        /// admin, agent, operator, technician or homeowner.
        #[arg(long, value_parser = ["admin", "agent", "operator", "technician", "homeowner"])]
        role: String,
        /// The technician id or home id the token belongs to (technician and homeowner roles).
        #[arg(long)]
        subject: Option<String>,
    },
    /// Devices in bulk: import (registry + broker credentials), revoke.
    #[command(subcommand)]
    Devices(gateway::provision::cli::DevicesTask),
    /// Check the configuration (and print a summary) without starting anything.
    CheckConfig,
    /// Back up every SQLite database (online) and the spool into DIR (new or empty).
    Backup {
        /// Target directory.
        dir: PathBuf,
    },
    /// Restore a backup made by `gateway backup` (stop the gateway first).
    Restore {
        /// The backup directory.
        dir: PathBuf,
        /// Replace existing databases.
        #[arg(long)]
        force: bool,
    },
}

/// `gateway tokens ...`.
#[derive(Debug, clap::Subcommand)]
enum TokensTask {
    /// Every token (never the secret): id, role, subject, expiry and state.
    List,
    /// Issue a token and print it (shown once).
    Create {
        /// admin, agent, operator (the gateway's own endpoints only), technician or homeowner.
        #[arg(long, value_parser = ["admin", "agent", "operator", "technician", "homeowner"])]
        role: String,
        /// The technician id or home id the token belongs to (technician and homeowner roles).
        #[arg(long)]
        subject: Option<String>,
        /// Days until it expires (1 to 365).
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=365))]
        ttl_days: u32,
    },
    /// Revoke a token by the id `tokens list` shows.
    Revoke {
        /// The token's id (16 hex digits).
        id: String,
    },
    /// Replace a token by a new one (same role, subject and life); the old one is revoked.
    Rotate {
        /// The token's id (16 hex digits).
        id: String,
    },
}

fn tokens(config: &gateway::config::Config, task: &TokensTask) -> anyhow::Result<()> {
    let store = gateway::http::open_token_store(config).context("opening the token store")?;
    let now = gateway::clock::now_ms();
    match task {
        TokensTask::List => {
            println!(
                "{:<16}  {:<10}  {:<20}  {:<13}  {:<13}  state",
                "id", "role", "subject", "created_ms", "expires_ms"
            );
            for t in store.list_tokens(100_000, now)? {
                println!(
                    "{:<16}  {:<10}  {:<20}  {:<13}  {:<13}  {}",
                    t.id,
                    t.role.as_str(),
                    t.subject.as_deref().unwrap_or("-"),
                    t.created_ts_ms,
                    t.expires_ts_ms,
                    t.state
                );
            }
        }
        TokensTask::Create {
            role,
            subject,
            ttl_days,
        } => {
            let role = maintenance::Role::parse(role).context("unknown role")?;
            let issued = store
                .issue_token_for(
                    role,
                    subject.as_deref(),
                    i64::from(*ttl_days) * 86_400_000,
                    now,
                )
                .context("issuing the token")?;
            eprintln!("id {} expires_ms {}", issued.id, issued.expires_ts_ms);
            println!("{}", issued.token);
        }
        TokensTask::Revoke { id } => {
            let t = store.revoke_token(id, now).context("revoking the token")?;
            println!("{} {}", t.id, t.state);
        }
        TokensTask::Rotate { id } => {
            let issued = store.rotate_token(id, now).context("rotating the token")?;
            eprintln!(
                "id {} expires_ms {} (old {id} revoked)",
                issued.id, issued.expires_ts_ms
            );
            println!("{}", issued.token);
        }
    }
    Ok(())
}

fn issue_token(
    config: &gateway::config::Config,
    role: &str,
    subject: Option<&str>,
) -> anyhow::Result<()> {
    let role = maintenance::Role::parse(role).context("unknown role")?;
    let store = gateway::http::open_token_store(config).context("opening the token store")?;
    let token = store
        .issue_token(role, subject, gateway::clock::now_ms())
        .context("issuing the token")?;
    println!("{token}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    #[cfg_attr(not(feature = "demo"), allow(unused_mut))]
    let mut config = gateway::config::Config::load(cli.config.as_deref(), std::env::vars())
        .with_context(|| "loading the configuration (see gateway.example.toml)")?;
    gateway::logging::init(config.log_format);
    // The zero-setup demo runs the maintenance engine too (tickets, reminders, pages),
    // unless the config brings its own.
    #[cfg(not(feature = "demo"))]
    if cli.demo > 0 {
        anyhow::bail!("--demo needs a gateway built with the `demo` feature (it is on by default)");
    }
    #[cfg(feature = "demo")]
    if let (true, None, Some(http)) = (cli.demo > 0, &config.maintenance, config.http_listen) {
        config.maintenance = Some(
            gateway::demo::maintenance_config(&config.data_dir, http)
                .context("the demo's maintenance engine")?,
        );
    }
    match &cli.task {
        Some(Task::IssueToken { role, subject }) => {
            return issue_token(&config, role, subject.as_deref())
        }
        Some(Task::Tokens(task)) => return tokens(&config, task),
        Some(Task::Devices(task)) => {
            let engine = gateway::http::open_token_store(&config)
                .context("opening the maintenance database")?;
            return Ok(gateway::provision::cli::run(&config, &engine, task).await?);
        }
        Some(Task::CheckConfig) => {
            println!(
                "configuration OK: data_dir {}, broker mqtt://{}:{} ({:?}), store {:?}, http {:?}, maintenance {}",
                config.data_dir.display(),
                config.mqtt.host,
                config.mqtt.port,
                config.mqtt.broker,
                match &config.store {
                    gateway::config::StoreConfig::Sqlite(_) => "sqlite".to_owned(),
                    gateway::config::StoreConfig::Influx(i) => i.url.to_string(),
                },
                config.http_listen,
                if config.maintenance.is_some() { "on" } else { "off" }
            );
            return Ok(());
        }
        Some(Task::Backup { dir }) => {
            let m = gateway::backup::backup(&config, dir)
                .with_context(|| format!("backing up into {}", dir.display()))?;
            println!(
                "backup written to {}: {} files",
                dir.display(),
                m.files.len()
            );
            return Ok(());
        }
        Some(Task::Restore { dir, force }) => {
            let m = gateway::backup::restore(&config, dir, *force)
                .with_context(|| format!("restoring from {}", dir.display()))?;
            println!(
                "restored {} files from {} into {}",
                m.files.len(),
                dir.display(),
                config.data_dir.display()
            );
            return Ok(());
        }
        None => {}
    }
    let options = gateway::RunOptions {
        demo_fixtures: cli.demo,
        demo_registered: cli.demo_register.max(cli.demo),
        report_every_s: cli.report_every,
    };
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
    gateway::run(config, options, shutdown)
        .await
        .context("the gateway stopped with an error")?;
    Ok(())
}
