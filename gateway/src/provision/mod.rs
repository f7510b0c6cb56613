//! Provisioning at fleet scale: `gateway devices import FILE.csv|json` registers homes,
//! owners, devices and technicians in bulk (`maintenance::import`) and gives every new
//! device its own broker credentials through Mosquitto's dynamic-security plugin
//! ([`dynsec`]); `gateway devices revoke ID` takes them away.
//!
//! The order makes a crash harmless: a batch of devices gets its broker clients, then the
//! credentials are written out (and flushed), and only then is the batch recorded as
//! provisioned (with one audit entry per device). A crash before the record leaves devices
//! that the next import of the same file provisions again with new passwords; a device
//! is never recorded without its password having been handed out. A revoked device is
//! never re-provisioned by an import.

pub mod cli;
pub mod dynsec;

use std::path::{Path, PathBuf};

use maintenance::import::{self, Format, Report};
use maintenance::provisioning::{BrokerClient, CredentialState};
use maintenance::{Engine, Principal};

/// How to reach the broker as the dynamic-security admin.
#[derive(Clone)]
pub struct BrokerAdmin {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The plugin's admin user (`mosquitto_ctrl dynsec init FILE USER`).
    pub username: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for BrokerAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerAdmin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A device's broker login, handed out once.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    /// The device.
    pub device_id: String,
    /// Its broker user name.
    pub username: String,
    /// Its password (never logged; `Debug` hides it).
    pub password: String,
}

impl std::fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCredential")
            .field("device_id", &self.device_id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What can go wrong while provisioning.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The import file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file name says neither CSV nor JSON.
    #[error("{0}: the file name must end in .csv or .json")]
    Format(PathBuf),
    /// The file as a whole is unusable (nothing was imported).
    #[error("{0}")]
    Import(#[from] import::ImportError),
    /// The maintenance database failed.
    #[error("maintenance database: {0}")]
    Registry(#[from] maintenance::Error),
    /// The broker connection failed.
    #[error("broker: {0}")]
    Broker(String),
    /// The broker refused the admin.
    #[error("the broker refused the dynamic-security admin ({0}); check --broker-admin-user and its password (the user made by `mosquitto_ctrl dynsec init`)")]
    AdminRefused(String),
    /// The plugin refused a command.
    #[error("dynamic security refused {command} for device {device}: {error}")]
    Command {
        /// The command.
        command: String,
        /// The device.
        device: String,
        /// The plugin's error text.
        error: String,
    },
    /// The credentials could not be written out (nothing was recorded for that batch).
    #[error("writing the credentials: {0}")]
    Credentials(std::io::Error),
    /// Revoking a device nobody knows.
    #[error("device {0} is not registered and never had broker credentials")]
    Unknown(String),
}

/// Progress of a long import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Registry rows applied so far, of the total.
    Registry {
        /// Done.
        done: usize,
        /// Total good rows.
        total: usize,
    },
    /// Devices given broker credentials so far, of the total.
    Broker {
        /// Done.
        done: usize,
        /// Total.
        total: usize,
    },
}

/// The outcome of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    /// The registry part.
    pub report: Report,
    /// Devices given credentials now.
    pub provisioned: usize,
    /// Devices of the file that already had credentials (left as they are).
    pub already_provisioned: usize,
    /// Devices of the file that were revoked (not re-provisioned).
    pub revoked: Vec<String>,
    /// Devices of the file without credentials because no broker was given.
    pub awaiting_credentials: Vec<String>,
}

pub(crate) fn random_suffix() -> String {
    use rand::RngCore;
    format!("{:016x}", rand::rng().next_u64())
}

/// Reads and imports `path` into the registry, then (with `broker`) provisions every device
/// of the file that has no credentials yet: `sink` receives each batch's credentials before
/// the batch is recorded. `actor` is who the audit log names.
pub async fn import_file(
    engine: &Engine,
    path: &Path,
    broker: Option<&BrokerAdmin>,
    actor: &Principal,
    progress: &mut dyn FnMut(Progress),
    sink: &mut dyn FnMut(&[DeviceCredential]) -> std::io::Result<()>,
) -> Result<ImportSummary, ProvisionError> {
    let format = Format::from_path(path).ok_or_else(|| ProvisionError::Format(path.into()))?;
    let size = std::fs::metadata(path)
        .map_err(|source| ProvisionError::Read {
            path: path.into(),
            source,
        })?
        .len();
    if size > import::MAX_FILE_BYTES as u64 {
        return Err(import::ImportError::File {
            line: 0,
            problem: format!(
                "the file is larger than {} bytes; split it",
                import::MAX_FILE_BYTES
            ),
        }
        .into());
    }
    let text = std::fs::read_to_string(path).map_err(|source| ProvisionError::Read {
        path: path.into(),
        source,
    })?;
    let now = crate::clock::now_ms();
    let parsed = import::parse(format, &text, now)?;
    let report = import::apply(engine, parsed, now, &mut |done, total| {
        progress(Progress::Registry { done, total })
    })?;
    engine.audit(
        actor,
        "import_registry",
        &format!(
            "import/rows:{},devices:{},rejected:{}",
            report.rows,
            report.device_ids.len(),
            report.rejected
        ),
        now,
    )?;
    let states = engine.credential_states(&report.device_ids)?;
    let mut summary = ImportSummary::default();
    let mut pending = Vec::new();
    for (id, state) in report.device_ids.iter().zip(states) {
        match state {
            CredentialState::Active => summary.already_provisioned += 1,
            CredentialState::Revoked => summary.revoked.push(id.clone()),
            CredentialState::None => pending.push(id.clone()),
        }
    }
    summary.report = report;
    let Some(broker) = broker else {
        summary.awaiting_credentials = pending;
        return Ok(summary);
    };
    if pending.is_empty() {
        return Ok(summary);
    }
    let mut admin = dynsec::Dynsec::connect(broker).await?;
    let total = pending.len();
    let mut done = 0;
    for batch in pending.chunks(dynsec::DEVICES_PER_BATCH) {
        let creds = admin.provision(batch).await?;
        sink(&creds).map_err(ProvisionError::Credentials)?;
        let ts = crate::clock::now_ms();
        let clients: Vec<BrokerClient> = creds
            .iter()
            .map(|c| BrokerClient {
                device_id: c.device_id.clone(),
                username: c.username.clone(),
                rolename: dynsec::role_name(&c.device_id),
                provisioned_ts_ms: ts,
                revoked_ts_ms: None,
            })
            .collect();
        engine.record_provisioned(actor, &clients, ts)?;
        done += batch.len();
        summary.provisioned = done;
        progress(Progress::Broker { done, total });
        tracing::info!(
            devices = batch.len(),
            done,
            total,
            "Broker credentials issued."
        );
    }
    admin.close().await;
    Ok(summary)
}

/// Revokes `device_id`: its broker client is disabled (disconnected at once) and deleted
/// with its role, and the registry marks it revoked (audited). Idempotent.
pub async fn revoke(
    engine: &Engine,
    device_id: &str,
    broker: &BrokerAdmin,
    actor: &Principal,
) -> Result<BrokerClient, ProvisionError> {
    if !maintenance::registry::valid_id(device_id) {
        return Err(ProvisionError::Unknown(device_id.to_owned()));
    }
    let registered = engine
        .read(|c| maintenance::registry::get_device(c, device_id))?
        .is_some();
    if !registered && engine.broker_client(device_id)?.is_none() {
        return Err(ProvisionError::Unknown(device_id.to_owned()));
    }
    let mut admin = dynsec::Dynsec::connect(broker).await?;
    admin.revoke(device_id).await?;
    admin.close().await;
    let now = crate::clock::now_ms();
    let client = engine.record_revoked(actor, device_id, &dynsec::role_name(device_id), now)?;
    tracing::info!(device = %device_id, "Device revoked: broker client disabled and deleted.");
    Ok(client)
}
