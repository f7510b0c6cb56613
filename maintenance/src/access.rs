//! Who may do what: bearer tokens with roles, and the audit log of personal-data reads.
//!
//! Tokens are random, shown once when issued, and stored only as SHA-256 hashes.
//! A technician token's subject is the technician id; a homeowner token's is the home id.
//!
//! Tokens have a lifecycle: each expires (default [`DEFAULT_TOKEN_TTL_MS`], at most
//! [`MAX_TOKEN_TTL_MS`]), can be listed, revoked and rotated by its public id (the first
//! 16 hex digits of its hash), and a homeowner token is bound to the owner it was issued
//! to: it carries a fingerprint of the owner's name and phone, so re-registering the home
//! to someone else ends it. Failed authentications are audited and limited per client
//! address by [`AuthGuard`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::store::{params, Connection, OptionalExtension};
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
    /// Runs the gateway: its metrics, dead letters and device sequence state; no personal data.
    Operator,
}

impl Role {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Technician => "technician",
            Role::Homeowner => "homeowner",
            Role::Operator => "operator",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(name: &str) -> Option<Role> {
        Some(match name {
            "admin" => Role::Admin,
            "agent" => Role::Agent,
            "technician" => Role::Technician,
            "homeowner" => Role::Homeowner,
            "operator" => Role::Operator,
            _ => return None,
        })
    }

    /// True for the roles that may read the gateway's own endpoints (`/metrics`,
    /// `/dead-letters`, `/devices/{id}`): admin, agent and operator.
    pub const fn is_operator(self) -> bool {
        matches!(self, Role::Admin | Role::Agent | Role::Operator)
    }
}

/// A token's life when not given: 90 days.
pub const DEFAULT_TOKEN_TTL_MS: i64 = 90 * 86_400_000;
/// The longest life a token may be given: 365 days.
pub const MAX_TOKEN_TTL_MS: i64 = 365 * 86_400_000;
/// Longest bearer token accepted before hashing (ours are 51 characters).
pub const MAX_TOKEN_LEN: usize = 200;

/// A token just issued: the secret (shown once) and its public id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The bearer token; only its hash is stored.
    pub token: String,
    /// Public id, for list, revoke and rotate.
    pub id: String,
    /// The role.
    pub role: Role,
    /// Technician or home id.
    pub subject: Option<String>,
    /// When it stops working, UTC ms.
    pub expires_ts_ms: i64,
}

/// A stored token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// The role.
    pub role: Role,
    /// Technician or home id.
    pub subject: Option<String>,
    /// When issued, UTC ms.
    pub created_ts_ms: i64,
    /// When it expires, UTC ms.
    pub expires_ts_ms: i64,
    /// When revoked, if it was.
    pub revoked_ts_ms: Option<i64>,
    /// `active`, `expired`, `revoked` or `owner_changed`.
    pub state: String,
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
    /// Issues a token for `role` (and `subject`, required for technicians and homeowners)
    /// with the default life. The token is returned once and only its hash is stored.
    pub fn issue_token(&self, role: Role, subject: Option<&str>, now_ms: i64) -> Result<String> {
        Ok(self
            .issue_token_for(role, subject, DEFAULT_TOKEN_TTL_MS, now_ms)?
            .token)
    }

    /// Issues a token that lives `ttl_ms` (1 ms to [`MAX_TOKEN_TTL_MS`]).
    pub fn issue_token_for(
        &self,
        role: Role,
        subject: Option<&str>,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<IssuedToken> {
        self.write(|tx| issue(tx, role, subject, ttl_ms, now_ms))
    }

    /// Looks up a bearer token at `now_ms`: unknown, expired, revoked and former-owner
    /// tokens are all `None`.
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<Option<Principal>> {
        if token.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let h = hash(token);
        self.read(|c| {
            let Some(row) = token_row(c, &h)? else {
                return Ok(None);
            };
            if row.state(now_ms) != "active" {
                return Ok(None);
            }
            let label = match &row.subject {
                Some(s) => format!("{}:{s}", row.role.as_str()),
                None => format!("{}:{}", row.role.as_str(), &h[..8]),
            };
            Ok(Some(Principal {
                role: row.role,
                subject: row.subject,
                label,
            }))
        })
    }

    /// Every stored token, newest first, at most `limit`.
    pub fn list_tokens(&self, limit: usize, now_ms: i64) -> Result<Vec<TokenInfo>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "{TOKEN_SELECT} ORDER BY t.created_ts_ms DESC, t.hash LIMIT ?1"
            ))?;
            let rows = stmt
                .query_map([limit as i64], TokenRow::from_row)?
                .collect::<crate::store::Result<Vec<_>>>()?;
            Ok(rows.into_iter().map(|r| r.info(now_ms)).collect())
        })
    }

    /// Revokes the token with public id `id` (idempotent for an already revoked one).
    pub fn revoke_token(&self, id: &str, now_ms: i64) -> Result<TokenInfo> {
        self.write(|tx| {
            let row = token_by_id(tx, id)?;
            tx.execute(
                "UPDATE tokens SET revoked_ts_ms = COALESCE(revoked_ts_ms, ?2) WHERE hash = ?1",
                params![row.hash, now_ms],
            )?;
            let row = token_row(tx, &row.hash)?.ok_or_else(|| Error::not_found("token", id))?;
            Ok(row.info(now_ms))
        })
    }

    /// Replaces the active token `id` by a new one with the same role, subject and life
    /// length; the old one is revoked in the same transaction.
    pub fn rotate_token(&self, id: &str, now_ms: i64) -> Result<IssuedToken> {
        self.write(|tx| {
            let row = token_by_id(tx, id)?;
            let state = row.state(now_ms);
            if state != "active" {
                return Err(Error::invalid(
                    "token",
                    format!("only an active token can be rotated; this one is {state}"),
                ));
            }
            let ttl = (row.expires_ts_ms - row.created_ts_ms).clamp(1, MAX_TOKEN_TTL_MS);
            let new = issue(tx, row.role, row.subject.as_deref(), ttl, now_ms)?;
            tx.execute(
                "UPDATE tokens SET revoked_ts_ms = ?2 WHERE hash = ?1",
                params![row.hash, now_ms],
            )?;
            Ok(new)
        })
    }

    /// Audits a failed authentication from `client` on `resource`.
    pub fn audit_failure(
        &self,
        client: &str,
        action: &str,
        resource: &str,
        now_ms: i64,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO audit (ts_ms, actor, action, resource) VALUES (?1, ?2, ?3, ?4)",
                params![now_ms, format!("anonymous:{client}"), action, resource],
            )?;
            Ok(())
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

/// The owner fingerprint a homeowner token is bound to: SHA-256 of name and phone.
pub(crate) fn owner_fingerprint(name: &str, phone: &str) -> String {
    hash(&format!("{name}\u{1f}{phone}"))
}

fn issue(
    tx: &Connection,
    role: Role,
    subject: Option<&str>,
    ttl_ms: i64,
    now_ms: i64,
) -> Result<IssuedToken> {
    if !(1..=MAX_TOKEN_TTL_MS).contains(&ttl_ms) {
        return Err(Error::invalid("ttl", "1 ms to 365 days"));
    }
    let mut owner_fp = None;
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
            let owner: Option<(String, String)> = tx
                .query_row(
                    "SELECT owner_name, owner_phone FROM homes WHERE id = ?1",
                    [s],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (name, phone) = owner.ok_or_else(|| Error::not_found("home", s))?;
            owner_fp = Some(owner_fingerprint(&name, &phone));
        }
        (Role::Technician | Role::Homeowner, None) => {
            return Err(Error::invalid(
                "subject",
                "required for technician and homeowner tokens",
            ));
        }
        (Role::Admin | Role::Agent | Role::Operator, _) => {}
    }
    let token = format!("mt_{}", crate::random_hex(24));
    let subject = match role {
        Role::Admin | Role::Agent | Role::Operator => None,
        _ => subject,
    };
    let h = hash(&token);
    let expires_ts_ms = now_ms.saturating_add(ttl_ms);
    tx.execute(
        "INSERT INTO tokens (hash, role, subject, created_ts_ms, expires_ts_ms, owner_fp) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![h, role.as_str(), subject, now_ms, expires_ts_ms, owner_fp],
    )?;
    Ok(IssuedToken {
        id: h[..16].to_owned(),
        token,
        role,
        subject: subject.map(str::to_owned),
        expires_ts_ms,
    })
}

/// A token row joined with its home's current owner (homeowner tokens).
struct TokenRow {
    hash: String,
    role: Role,
    subject: Option<String>,
    created_ts_ms: i64,
    expires_ts_ms: i64,
    revoked_ts_ms: Option<i64>,
    owner_fp: Option<String>,
    current_owner: Option<(String, String)>,
}

const TOKEN_SELECT: &str = "SELECT t.hash, t.role, t.subject, t.created_ts_ms, t.expires_ts_ms, t.revoked_ts_ms, t.owner_fp, h.owner_name, h.owner_phone
     FROM tokens t LEFT JOIN homes h ON t.role = 'homeowner' AND h.id = t.subject";

impl TokenRow {
    fn from_row(r: &crate::store::Row<'_>) -> crate::store::Result<TokenRow> {
        let role: String = r.get(1)?;
        let owner_name: Option<String> = r.get(7)?;
        let owner_phone: Option<String> = r.get(8)?;
        Ok(TokenRow {
            hash: r.get(0)?,
            // An unknown role (a newer version's) is kept but never authenticates.
            role: Role::parse(&role).unwrap_or(Role::Homeowner),
            subject: r.get(2)?,
            created_ts_ms: r.get(3)?,
            expires_ts_ms: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
            revoked_ts_ms: r.get(5)?,
            owner_fp: if Role::parse(&role).is_some() {
                r.get(6)?
            } else {
                Some(String::new())
            },
            current_owner: owner_name.zip(owner_phone),
        })
    }

    fn state(&self, now_ms: i64) -> &'static str {
        if self.revoked_ts_ms.is_some() {
            return "revoked";
        }
        if now_ms >= self.expires_ts_ms {
            return "expired";
        }
        if self.role == Role::Homeowner {
            let current = self
                .current_owner
                .as_ref()
                .map(|(n, p)| owner_fingerprint(n, p));
            if current.is_none() || current != self.owner_fp {
                return "owner_changed";
            }
        }
        "active"
    }

    fn info(self, now_ms: i64) -> TokenInfo {
        TokenInfo {
            id: self.hash[..16.min(self.hash.len())].to_owned(),
            state: self.state(now_ms).to_owned(),
            role: self.role,
            subject: self.subject,
            created_ts_ms: self.created_ts_ms,
            expires_ts_ms: self.expires_ts_ms,
            revoked_ts_ms: self.revoked_ts_ms,
        }
    }
}

fn token_row(c: &Connection, hash: &str) -> Result<Option<TokenRow>> {
    Ok(c.query_row(
        &format!("{TOKEN_SELECT} WHERE t.hash = ?1"),
        [hash],
        TokenRow::from_row,
    )
    .optional()?)
}

fn token_by_id(c: &Connection, id: &str) -> Result<TokenRow> {
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(
            "id",
            "16 hex digits, as `tokens list` shows",
        ));
    }
    let id = id.to_ascii_lowercase();
    let mut stmt = c.prepare(&format!("{TOKEN_SELECT} WHERE substr(t.hash, 1, 16) = ?1"))?;
    let mut rows = stmt
        .query_map([&id], TokenRow::from_row)?
        .collect::<crate::store::Result<Vec<_>>>()?;
    match rows.len() {
        0 => Err(Error::not_found("token", id)),
        1 => Ok(rows.remove(0)),
        _ => Err(Error::Conflict {
            what: "token id",
            id,
        }),
    }
}

/// Failed authentications per client address: after `max_failures` within a window of
/// `window_ms`, the address is refused (429) until the window ends. Each failure up to
/// the limit is audited, then one `auth_rate_limited` entry per window, so the audit log
/// grows by at most `max_failures + 1` rows per address and minute. At most
/// [`AuthGuard::MAX_CLIENTS`] addresses are tracked.
#[derive(Debug)]
pub struct AuthGuard {
    max_failures: u32,
    window_ms: i64,
    clients: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

/// What to do with a failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Audit it as `auth_failed`.
    Audit,
    /// The limit was just reached: audit `auth_rate_limited` once.
    LimitReached,
    /// Already limited in this window: counted, not audited again.
    Limited,
}

impl Default for AuthGuard {
    fn default() -> Self {
        AuthGuard::new(10, 60_000)
    }
}

impl AuthGuard {
    /// Addresses tracked at most; beyond, expired windows are dropped first.
    pub const MAX_CLIENTS: usize = 10_000;

    /// A guard allowing `max_failures` per `window_ms`.
    pub fn new(max_failures: u32, window_ms: i64) -> AuthGuard {
        AuthGuard {
            max_failures: max_failures.max(1),
            window_ms: window_ms.max(1),
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (i64, u32)>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while `client` is over its limit.
    pub fn is_limited(&self, client: IpAddr, now_ms: i64) -> bool {
        self.lock()
            .get(&client)
            .is_some_and(|(start, n)| now_ms - start < self.window_ms && *n >= self.max_failures)
    }

    /// Counts a failure of `client` and says whether to audit it.
    pub fn record_failure(&self, client: IpAddr, now_ms: i64) -> FailureVerdict {
        let mut map = self.lock();
        if map.len() >= Self::MAX_CLIENTS && !map.contains_key(&client) {
            let window = self.window_ms;
            map.retain(|_, (start, _)| now_ms - *start < window);
            if map.len() >= Self::MAX_CLIENTS {
                tracing::warn!(
                    clients = map.len(),
                    "Too many addresses failing authentication to track; this one is audited but not limited."
                );
                return FailureVerdict::Audit;
            }
        }
        let entry = map.entry(client).or_insert((now_ms, 0));
        if now_ms - entry.0 >= self.window_ms {
            *entry = (now_ms, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        match entry.1.cmp(&self.max_failures) {
            std::cmp::Ordering::Less => FailureVerdict::Audit,
            std::cmp::Ordering::Equal => FailureVerdict::LimitReached,
            std::cmp::Ordering::Greater => FailureVerdict::Limited,
        }
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
        .collect::<crate::store::Result<Vec<_>>>()?;
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
