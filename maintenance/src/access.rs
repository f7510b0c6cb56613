//! Who may do what: bearer tokens with roles, and the audit log of personal-data reads.
//!
//! Tokens are random, shown once when issued, and stored only as SHA-256 hashes.
//! A technician token's subject is the technician id; a homeowner token's is the home id.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::error::{Error, Result};

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including tokens and the audit log.
    Admin,
    /// After-sales agent: homes, devices, all tickets, KPIs.
    Agent,
    /// Sees only tickets assigned to them, with masked contact data.
    Technician,
    /// Sees only their own home.
    Homeowner,
}

impl Role {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Technician => "technician",
            Role::Homeowner => "homeowner",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The role.
    pub role: Role,
    /// Technician id or home id; `None` for admins and agents.
    pub subject: Option<String>,
    /// A short, non-secret label for logs and the audit trail (`role:subject` or `role:hash-prefix`).
    pub label: String,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// An audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, UTC ms.
    pub ts_ms: i64,
    /// Who.
    pub actor: String,
    /// What was done, e.g. `read_home`.
    pub action: String,
    /// Which record, e.g. `home/h1`.
    pub resource: String,
}

impl Engine {
    /// Issues a token for `role` (and `subject`, required for technicians and homeowners).
    /// The token is returned once and only its hash is stored.
    pub fn issue_token(&self, role: Role, subject: Option<&str>, now_ms: i64) -> Result<String> {
        self.write(|tx| {
            match (role, subject) {
                (Role::Technician, Some(s)) => {
                    let ok: bool = tx.query_row(
                        "SELECT EXISTS(SELECT 1 FROM technicians WHERE id = ?1)",
                        [s],
                        |r| r.get(0),
                    )?;
                    if !ok {
                        return Err(Error::not_found("technician", s));
                    }
                }
                (Role::Homeowner, Some(s)) => {
                    let ok: bool = tx.query_row(
                        "SELECT EXISTS(SELECT 1 FROM homes WHERE id = ?1)",
                        [s],
                        |r| r.get(0),
                    )?;
                    if !ok {
                        return Err(Error::not_found("home", s));
                    }
                }
                (Role::Technician | Role::Homeowner, None) => {
                    return Err(Error::invalid(
                        "subject",
                        "required for technician and homeowner tokens",
                    ));
                }
                (Role::Admin | Role::Agent, _) => {}
            }
            let token = format!("mt_{}", crate::random_hex(24));
            let subject = match role {
                Role::Admin | Role::Agent => None,
                _ => subject,
            };
            tx.execute(
                "INSERT INTO tokens (hash, role, subject, created_ts_ms) VALUES (?1, ?2, ?3, ?4)",
                params![hash(&token), role.as_str(), subject, now_ms],
            )?;
            Ok(token)
        })
    }

    /// Looks up a bearer token.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        let h = hash(token);
        self.read(|c| {
            let row: Option<(String, Option<String>)> = c
                .query_row(
                    "SELECT role, subject FROM tokens WHERE hash = ?1",
                    [&h],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(row.and_then(|(role, subject)| {
                let role: Role = serde_json::from_value(serde_json::Value::String(role)).ok()?;
                let label = match &subject {
                    Some(s) => format!("{}:{s}", role.as_str()),
                    None => format!("{}:{}", role.as_str(), &h[..8]),
                };
                Some(Principal {
                    role,
                    subject,
                    label,
                })
            }))
        })
    }

    /// Writes an audit entry: `who` did `action` on `resource` at `now_ms`.
    pub fn audit(&self, who: &Principal, action: &str, resource: &str, now_ms: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO audit (ts_ms, actor, action, resource) VALUES (?1, ?2, ?3, ?4)",
                params![now_ms, who.label, action, resource],
            )?;
            Ok(())
        })
    }

    /// The newest audit entries, at most `limit`.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(|c| audit_log(c, limit))
    }
}

fn audit_log(c: &Connection, limit: usize) -> Result<Vec<AuditEntry>> {
    let mut stmt =
        c.prepare("SELECT ts_ms, actor, action, resource FROM audit ORDER BY id DESC LIMIT ?1")?;
    let rows = stmt
        .query_map([limit as i64], |r| {
            Ok(AuditEntry {
                ts_ms: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                resource: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Masks a phone number as `138****1234` (a `+86`/`86` prefix is dropped first).
pub fn mask_phone(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.strip_prefix("86") {
        Some(rest) if digits.len() == 13 => rest.to_owned(),
        _ => digits,
    };
    if digits.len() < 8 {
        return "****".into();
    }
    format!("{}****{}", &digits[..3], &digits[digits.len() - 4..])
}

#[cfg(test)]
mod tests {
    use super::mask_phone;

    #[test]
    fn phones_are_masked_like_the_after_sales_app() {
        assert_eq!(mask_phone("13812341234"), "138****1234");
        assert_eq!(mask_phone("+8613812341234"), "138****1234");
        assert_eq!(mask_phone("123"), "****");
    }
}
