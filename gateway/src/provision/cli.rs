//! `gateway devices import|revoke`: the command-line face of [`super`]. Progress and the
//! report go to standard error; the generated credentials go to the `--credentials` file
//! (created new, mode 0600) or, without one, to standard output, and nowhere else.

use std::io::Write;
use std::path::PathBuf;

use super::{BrokerAdmin, DeviceCredential, ProvisionError};
use crate::config::{BrokerMode, Config};

/// `gateway devices ...`.
#[derive(Debug, clap::Subcommand)]
pub enum DevicesTask {
    /// Import homes (with owners), owners, devices and technicians from a CSV or JSON file
    /// and give every new device its own broker credentials (Mosquitto dynamic security).
    /// Bad rows are listed with their line and the rest imported; re-importing is idempotent.
    Import {
        /// The file: FILE.csv or FILE.json (format in maintenance::import's documentation and docs/production.md).
        file: PathBuf,
        /// Write the generated credentials here (a new file, mode 0600) instead of to standard output.
        #[arg(long)]
        credentials: Option<PathBuf>,
        /// Only the registry: issue no broker credentials (e.g. with the embedded broker).
        #[arg(long)]
        registry_only: bool,
        /// The broker admin login.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a device: its broker client is disabled and deleted (it is disconnected and can
    /// no longer log in) and the registry marks it revoked. Audited.
    Revoke {
        /// The device id.
        id: String,
        /// The broker admin login.
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// The dynamic-security admin login (the broker is the one in `[mqtt]`).
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The plugin's admin user (made by `mosquitto_ctrl dynsec init FILE USER`).
    #[arg(long, env = "GATEWAY_BROKER_ADMIN_USER")]
    broker_admin_user: Option<String>,
    /// A file holding its password (or set GATEWAY_BROKER_ADMIN_PASSWORD).
    #[arg(long, env = "GATEWAY_BROKER_ADMIN_PASSWORD_FILE")]
    broker_admin_password_file: Option<PathBuf>,
}

impl AdminArgs {
    fn resolve(&self, config: &Config) -> Result<BrokerAdmin, ProvisionError> {
        if config.mqtt.broker == BrokerMode::Embedded {
            return Err(ProvisionError::Broker(
                "the embedded broker has no dynamic security: run Mosquitto (deploy/mosquitto/dynsec.conf) with [mqtt] broker = \"external\", or import with --registry-only".into(),
            ));
        }
        let username = self.broker_admin_user.clone().ok_or_else(|| {
            ProvisionError::Broker(
                "no admin user: give --broker-admin-user (or GATEWAY_BROKER_ADMIN_USER)".into(),
            )
        })?;
        let password = match (&self.broker_admin_password_file, std::env::var("GATEWAY_BROKER_ADMIN_PASSWORD")) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|source| ProvisionError::Read {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, Ok(p)) => p,
            (None, Err(_)) => {
                return Err(ProvisionError::Broker(
                    "no admin password: give --broker-admin-password-file (or GATEWAY_BROKER_ADMIN_PASSWORD)".into(),
                ))
            }
        };
        Ok(BrokerAdmin {
            host: config.mqtt.host.clone(),
            port: config.mqtt.port,
            username,
            password,
        })
    }
}

/// Who the audit log names for a command-line action: `cli:$USER`.
fn actor() -> maintenance::Principal {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty() && u.len() <= 32)
        .unwrap_or_else(|| "unknown".into());
    maintenance::Principal {
        role: maintenance::Role::Admin,
        subject: None,
        label: format!("cli:{user}"),
    }
}

/// Where the credentials go.
enum Sink {
    File(std::fs::File, PathBuf),
    Stdout,
}

impl Sink {
    fn open(path: Option<&PathBuf>) -> Result<Sink, ProvisionError> {
        let Some(path) = path else {
            return Ok(Sink::Stdout);
        };
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                ProvisionError::Credentials(std::io::Error::new(
                    e.kind(),
                    format!(
                        "{}: {e} (the credentials file must be new: pick another name)",
                        path.display()
                    ),
                ))
            })?;
        writeln!(f, "device_id,username,password").map_err(ProvisionError::Credentials)?;
        Ok(Sink::File(f, path.clone()))
    }

    fn write(&mut self, creds: &[DeviceCredential]) -> std::io::Result<()> {
        let mut text = String::new();
        for c in creds {
            text.push_str(&format!("{},{},{}\n", c.device_id, c.username, c.password));
        }
        match self {
            Sink::File(f, _) => {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            }
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()
            }
        }
    }
}

/// Runs a `devices` task. Rows rejected by an import make it fail (after the good rows are
/// imported) with [`ProvisionError::Import`]-like text listing how many.
pub async fn run(
    config: &Config,
    engine: &maintenance::Engine,
    task: &DevicesTask,
) -> Result<(), CliError> {
    match task {
        DevicesTask::Import {
            file,
            credentials,
            registry_only,
            admin,
        } => {
            let broker = if *registry_only {
                None
            } else {
                Some(admin.resolve(config)?)
            };
            let mut sink = match broker {
                Some(_) => Some(Sink::open(credentials.as_ref())?),
                None => None,
            };
            let mut last = std::time::Instant::now();
            let mut progress = |p: super::Progress| {
                let (what, done, total) = match p {
                    super::Progress::Registry { done, total } => ("registry rows", done, total),
                    super::Progress::Broker { done, total } => {
                        ("devices given credentials", done, total)
                    }
                };
                if done == total || last.elapsed() >= std::time::Duration::from_secs(1) {
                    eprintln!("{what}: {done}/{total}");
                    last = std::time::Instant::now();
                }
            };
            let mut write = |c: &[DeviceCredential]| match sink.as_mut() {
                Some(s) => s.write(c),
                None => Ok(()),
            };
            let s = super::import_file(
                engine,
                file,
                broker.as_ref(),
                &actor(),
                &mut progress,
                &mut write,
            )
            .await?;
            let r = &s.report;
            let c = |k: &maintenance::import::Counts| {
                format!(
                    "{} created, {} updated, {} unchanged",
                    k.created, k.updated, k.unchanged
                )
            };
            eprintln!(
                "{}: {} rows; homes {}; owners {}; technicians {}; devices {}; {} rejected",
                file.display(),
                r.rows,
                c(&r.homes),
                c(&r.owners),
                c(&r.technicians),
                c(&r.devices),
                r.rejected
            );
            for e in &r.errors {
                eprintln!("  {e}");
            }
            if r.rejected > r.errors.len() as u64 {
                eprintln!("  ... and {} more", r.rejected - r.errors.len() as u64);
            }
            match (&broker, &sink) {
                (None, _) => eprintln!(
                    "broker: no credentials issued (--registry-only); {} devices await them",
                    s.awaiting_credentials.len()
                ),
                (Some(_), Some(Sink::File(_, path))) => eprintln!(
                    "broker: {} devices given credentials (written to {}, mode 0600: hand them to the installers, then delete it); {} already had them",
                    s.provisioned,
                    path.display(),
                    s.already_provisioned
                ),
                (Some(_), _) => eprintln!(
                    "broker: {} devices given credentials (printed above, shown once); {} already had them",
                    s.provisioned, s.already_provisioned
                ),
            }
            if !s.revoked.is_empty() {
                eprintln!(
                    "broker: {} revoked devices were not given credentials again: {}",
                    s.revoked.len(),
                    s.revoked.join(", ")
                );
            }
            if r.rejected > 0 {
                return Err(CliError::Rejected(r.rejected));
            }
            Ok(())
        }
        DevicesTask::Revoke { id, admin } => {
            let broker = admin.resolve(config)?;
            let c = super::revoke(engine, id, &broker, &actor()).await?;
            println!(
                "{} revoked at {} (broker client disabled and deleted)",
                c.device_id,
                c.revoked_ts_ms.unwrap_or_default()
            );
            Ok(())
        }
    }
}

/// Why a `devices` task failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Provisioning failed.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// Some rows were rejected (the rest were imported).
    #[error("{0} rows rejected (listed above); the other rows were imported. Fix those rows and import the same file again (importing is idempotent)")]
    Rejected(u64),
}
