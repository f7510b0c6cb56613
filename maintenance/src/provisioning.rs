//! Broker credentials of the registry's devices: which device has a broker client (a
//! Mosquitto dynamic-security user named after it), since when, and whether it was revoked.
//!
//! The broker side (creating the client and its role, generating the password) lives in
//! the gateway (`gateway::provision`); this module keeps the record and writes the audit
//! entries, in the same transaction. Passwords are never stored here: the broker keeps
//! only a salted hash, and the import hands the clear text out once.

use crate::store::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::access::Principal;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The table, created by schema step 5.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS broker_clients (
    device_id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    rolename TEXT NOT NULL,
    provisioned_ts_ms INTEGER NOT NULL,
    revoked_ts_ms INTEGER
);";

/// A device's broker client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerClient {
    /// The device.
    pub device_id: String,
    /// The broker user name (the device id).
    pub username: String,
    /// The device's own role (`device-{id}`).
    pub rolename: String,
    /// When its credentials were issued, UTC ms.
    pub provisioned_ts_ms: i64,
    /// When it was revoked, if it was.
    pub revoked_ts_ms: Option<i64>,
}

impl BrokerClient {
    /// True while the credentials are in force.
    pub fn is_active(&self) -> bool {
        self.revoked_ts_ms.is_none()
    }
}

/// Where a device stands with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    /// No credentials issued yet.
    None,
    /// Credentials in force.
    Active,
    /// Revoked: never re-issued by an import.
    Revoked,
}

/// The broker client of `device_id`, if it ever had one.
pub fn get(conn: &Connection, device_id: &str) -> Result<Option<BrokerClient>> {
    Ok(conn
        .query_row(
            "SELECT device_id, username, rolename, provisioned_ts_ms, revoked_ts_ms
             FROM broker_clients WHERE device_id = ?1",
            [device_id],
            |r| {
                Ok(BrokerClient {
                    device_id: r.get(0)?,
                    username: r.get(1)?,
                    rolename: r.get(2)?,
                    provisioned_ts_ms: r.get(3)?,
                    revoked_ts_ms: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// The state of `device_id`'s credentials.
pub fn state(conn: &Connection, device_id: &str) -> Result<CredentialState> {
    Ok(match get(conn, device_id)? {
        None => CredentialState::None,
        Some(c) if c.is_active() => CredentialState::Active,
        Some(_) => CredentialState::Revoked,
    })
}

fn audit(
    conn: &Connection,
    who: &Principal,
    action: &str,
    resource: &str,
    now_ms: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO audit (ts_ms, actor, action, resource) VALUES (?1, ?2, ?3, ?4)",
        params![now_ms, who.label, action, resource],
    )?;
    Ok(())
}

impl Engine {
    /// The broker client of `device_id`, if it ever had one.
    pub fn broker_client(&self, device_id: &str) -> Result<Option<BrokerClient>> {
        self.read(|c| get(c, device_id))
    }

    /// The state of each device's credentials, in the order given.
    pub fn credential_states(&self, device_ids: &[String]) -> Result<Vec<CredentialState>> {
        self.read(|c| device_ids.iter().map(|id| state(c, id)).collect())
    }

    /// Records that `clients` were issued credentials by `who`, with one audit entry
    /// (`provision_device`, `device/{id}`) each, all in one transaction. A revoked device
    /// is refused: it stays revoked.
    pub fn record_provisioned(
        &self,
        who: &Principal,
        clients: &[BrokerClient],
        now_ms: i64,
    ) -> Result<()> {
        self.write(|tx| {
            for c in clients {
                if state(tx, &c.device_id)? == CredentialState::Revoked {
                    return Err(Error::invalid(
                        "device",
                        format!("{} was revoked; it is not provisioned again", c.device_id),
                    ));
                }
                tx.execute(
                    "INSERT INTO broker_clients (device_id, username, rolename, provisioned_ts_ms, revoked_ts_ms)
                     VALUES (?1, ?2, ?3, ?4, NULL)
                     ON CONFLICT(device_id) DO UPDATE SET username = ?2, rolename = ?3,
                        provisioned_ts_ms = ?4, revoked_ts_ms = NULL",
                    params![c.device_id, c.username, c.rolename, c.provisioned_ts_ms],
                )?;
                audit(
                    tx,
                    who,
                    "provision_device",
                    &format!("device/{}", c.device_id),
                    now_ms,
                )?;
            }
            Ok(())
        })
    }

    /// Marks `device_id` revoked (its broker client was disabled and deleted by the caller)
    /// and audits it (`revoke_device`, `device/{id}`). The device must be registered or
    /// have had credentials; revoking twice keeps the first time.
    pub fn record_revoked(
        &self,
        who: &Principal,
        device_id: &str,
        rolename: &str,
        now_ms: i64,
    ) -> Result<BrokerClient> {
        self.write(|tx| {
            let known = get(tx, device_id)?.is_some()
                || crate::registry::get_device(tx, device_id)?.is_some();
            if !known {
                return Err(Error::not_found("device", device_id));
            }
            tx.execute(
                "INSERT INTO broker_clients (device_id, username, rolename, provisioned_ts_ms, revoked_ts_ms)
                 VALUES (?1, ?1, ?2, ?3, ?3)
                 ON CONFLICT(device_id) DO UPDATE SET revoked_ts_ms = COALESCE(broker_clients.revoked_ts_ms, ?3)",
                params![device_id, rolename, now_ms],
            )?;
            audit(
                tx,
                who,
                "revoke_device",
                &format!("device/{device_id}"),
                now_ms,
            )?;
            get(tx, device_id)?.ok_or_else(|| Error::not_found("device", device_id))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;

    fn engine() -> Engine {
        crate::engine::test_engine(crate::EngineConfig {
            policy: crate::Policy::default(),
            ticket_webhooks: Vec::new(),
        })
    }

    fn admin() -> Principal {
        Principal {
            role: Role::Admin,
            subject: None,
            label: "cli:test".into(),
        }
    }

    #[test]
    fn provision_then_revoke_is_recorded_and_audited_and_never_reissued() {
        let e = engine();
        let c = BrokerClient {
            device_id: "d1".into(),
            username: "d1".into(),
            rolename: "device-d1".into(),
            provisioned_ts_ms: 10,
            revoked_ts_ms: None,
        };
        assert_eq!(
            e.credential_states(&["d1".into()]).expect("state"),
            vec![CredentialState::None]
        );
        e.record_provisioned(&admin(), std::slice::from_ref(&c), 10)
            .expect("provision");
        assert_eq!(
            e.credential_states(&["d1".into()]).expect("state"),
            vec![CredentialState::Active]
        );
        let revoked = e
            .record_revoked(&admin(), "d1", "device-d1", 20)
            .expect("revoke");
        assert_eq!(revoked.revoked_ts_ms, Some(20));
        // Revoking again keeps the first time.
        let again = e
            .record_revoked(&admin(), "d1", "device-d1", 30)
            .expect("revoke");
        assert_eq!(again.revoked_ts_ms, Some(20));
        assert!(e.record_provisioned(&admin(), &[c], 40).is_err());
        let log = e.audit_log(10).expect("audit");
        let actions: Vec<(&str, &str)> = log
            .iter()
            .map(|a| (a.action.as_str(), a.resource.as_str()))
            .collect();
        assert!(actions.contains(&("provision_device", "device/d1")));
        assert_eq!(actions.iter().filter(|a| a.0 == "revoke_device").count(), 2);
        assert!(matches!(
            e.record_revoked(&admin(), "nobody", "device-nobody", 50),
            Err(Error::NotFound { .. })
        ));
    }
}
