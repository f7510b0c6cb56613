//! Maintenance engine: tickets for the after-sales team, reminders for homeowners,
//! delivered reliably, behind an API with roles.
//!
//! The gateway hands the [`Engine`] findings (from the analytics crate or device fault
//! events), cartridge replacements and the time; the engine applies the [`Policy`],
//! keeps tickets and reminders in SQLite, and writes every notification to an outbox in
//! the same transaction. The [`Dispatcher`] delivers the outbox; [`router`] serves the API.
//!
//! # Layout
//! - [`finding`]: the input type and the mapping from protocol fault codes.
//! - [`policy`]: the TOML policy (raw → checked), defaults in `policy.default.toml`.
//! - [`registry`]: homes, owners, devices with cartridge specs, technicians.
//! - [`import`]: the bulk import of the registry (CSV or JSON, per-row errors, idempotent).
//! - [`provisioning`]: which devices have broker credentials, and which were revoked.
//! - [`tickets`]: lifecycle, de-duplication, recurrence, assignment, KPIs.
//! - [`reminders`]: quiet hours, weekly cap, snooze/done/book.
//! - [`templates`]: zh-CN and en message texts.
//! - [`commands`]: remote commands to devices (queued → sent → acknowledged → done | failed |
//!   expired), audited, their results attached to the ticket.
//! - [`unclaimed`]: findings of devices nobody registered (never dropped), the owner search.
//! - [`outbox`] and [`dispatch`]: transactional outbox, signed webhooks, SMTP.
//! - [`page`]: `limit`/`offset` pages with hard caps for every list.
//! - [`access`]: bearer tokens, roles, the audit log, phone masking.
//! - [`config`]: the `[maintenance]` table the gateway embeds (raw → checked), the tick loop.
//! - [`store`]: the database layer, SQLite or PostgreSQL, with queries written once.
//! - [`api`]: the axum router, one `ApiError`, the OpenAPI document.
//!
//! # Invariants
//! - The engine never reads the clock: every call takes `now_ms`.
//! - A notification exists only if the change that caused it committed, and vice versa.
//! - At most one active ticket per device and fault key (enforced by a unique index).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod api;
pub mod commands;
pub mod config;
pub mod db;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod finding;
pub mod fleet;
pub mod import;
pub mod incidents;
pub mod outbox;
pub mod page;
pub mod policy;
pub mod provisioning;
pub mod registry;
pub mod reminders;
pub mod store;
pub mod templates;
pub mod tickets;
pub mod unclaimed;

pub use access::{Principal, Role};
pub use api::{router, AppState};
pub use config::{run_ticker, Config, RawConfig};
pub use dispatch::{DeliveryConfig, Dispatcher, RawDeliveryConfig};
pub use engine::{Engine, EngineConfig, Outcome, TickReport, TicketEffect};
pub use error::Error;
pub use finding::{Finding, FindingKind, FindingState, Resource};
pub use policy::Policy;

/// `n` random bytes as lower-case hex (tokens, instance ids).
pub(crate) fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if let Err(e) = getrandom::fill(&mut buf) {
        // No OS randomness is not recoverable for a service that issues tokens.
        panic!("OS random source unavailable: {e}");
    }
    hex::encode(buf)
}

/// One random byte (jitter).
pub(crate) fn random_u8() -> u8 {
    let mut buf = [0u8; 1];
    let _ = getrandom::fill(&mut buf);
    buf[0]
}

/// The wall clock, UTC ms; used only by the production loops, never by the engine.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
