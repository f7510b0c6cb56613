//! The schema and connection setup, SQLite (single node) or PostgreSQL (shared by a cluster).
//!
//! One database holds the registry, tickets, reminders, the outbox and the audit log,
//! so a ticket or reminder and the notifications it causes commit in one transaction.
//! The tables are defined once, in SQLite's DDL; PostgreSQL gets the same tables through
//! [`postgres_ddl`] (every integer BIGINT, ids identity columns, reals DOUBLE PRECISION).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;
use crate::store::{self, OptionalExtension as _};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS homes (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    region TEXT NOT NULL,
    tz TEXT NOT NULL,
    lang TEXT NOT NULL,
    quiet_start TEXT NOT NULL,
    quiet_end TEXT NOT NULL,
    weekly_cap INTEGER,
    channels TEXT NOT NULL,
    owner_name TEXT NOT NULL,
    owner_phone TEXT NOT NULL,
    owner_email TEXT
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    home_id TEXT NOT NULL REFERENCES homes(id),
    model TEXT NOT NULL,
    installed_ts_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS devices_home ON devices(home_id);
CREATE TABLE IF NOT EXISTS cartridges (
    device_id TEXT NOT NULL REFERENCES devices(id),
    slot INTEGER NOT NULL,
    kind TEXT NOT NULL,
    rated_litres INTEGER NOT NULL,
    max_age_days INTEGER NOT NULL,
    replaced_ts_ms INTEGER,
    replacements INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, slot)
);
CREATE TABLE IF NOT EXISTS technicians (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    skills TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    subject TEXT,
    created_ts_ms INTEGER NOT NULL,
    expires_ts_ms INTEGER,
    revoked_ts_ms INTEGER,
    owner_fp TEXT
);
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    home_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    fault_key TEXT NOT NULL,
    priority TEXT NOT NULL,
    skill TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    condition_cleared INTEGER NOT NULL DEFAULT 0,
    began_ts_ms INTEGER NOT NULL,
    opened_ts_ms INTEGER NOT NULL,
    deadline_ts_ms INTEGER NOT NULL,
    ack_ts_ms INTEGER,
    resolved_ts_ms INTEGER,
    closed_ts_ms INTEGER,
    assignee TEXT,
    escalation_level INTEGER NOT NULL DEFAULT 0,
    next_escalation_ts_ms INTEGER,
    breached INTEGER NOT NULL DEFAULT 0,
    reopen_count INTEGER NOT NULL DEFAULT 0,
    linked_ticket_id INTEGER,
    recurred INTEGER NOT NULL DEFAULT 0,
    visit_address TEXT,
    followup_due_ts_ms INTEGER,
    followup_sent INTEGER NOT NULL DEFAULT 0,
    satisfaction INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS tickets_one_active
    ON tickets(device_id, fault_key) WHERE status IN ('open', 'assigned', 'in_progress');
CREATE INDEX IF NOT EXISTS tickets_home ON tickets(home_id);
CREATE INDEX IF NOT EXISTS tickets_assignee ON tickets(assignee);
CREATE TABLE IF NOT EXISTS ticket_evidence (
    id INTEGER PRIMARY KEY,
    ticket_id INTEGER NOT NULL REFERENCES tickets(id),
    ts_ms INTEGER NOT NULL,
    severity TEXT NOT NULL,
    evidence TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ticket_history (
    id INTEGER PRIMARY KEY,
    ticket_id INTEGER NOT NULL REFERENCES tickets(id),
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    note TEXT
);
CREATE TABLE IF NOT EXISTS reminders (
    id INTEGER PRIMARY KEY,
    home_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    fault_key TEXT NOT NULL,
    template TEXT NOT NULL,
    vars TEXT NOT NULL,
    urgent INTEGER NOT NULL,
    status TEXT NOT NULL,
    dedup_key TEXT NOT NULL UNIQUE,
    created_ts_ms INTEGER NOT NULL,
    send_at_ts_ms INTEGER NOT NULL,
    sent_ts_ms INTEGER,
    done_ts_ms INTEGER,
    ticket_id INTEGER
);
CREATE INDEX IF NOT EXISTS reminders_due ON reminders(status, send_at_ts_ms);
CREATE INDEX IF NOT EXISTS reminders_home ON reminders(home_id, sent_ts_ms);
CREATE TABLE IF NOT EXISTS filter_schedules (
    device_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    due_ts_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    updated_ts_ms INTEGER NOT NULL,
    lo_ts_ms INTEGER,
    hi_ts_ms INTEGER,
    PRIMARY KEY (device_id, slot)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    idem_key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ts_ms INTEGER NOT NULL,
    next_attempt_ts_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    delivered_ts_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(status, next_attempt_ts_ms);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL
);
"#;

/// Opens (creating if needed) the SQLite database at `path` and applies the schema.
pub fn open(path: impl AsRef<Path>) -> Result<store::Connection> {
    let conn = Connection::open(path)?;
    Ok(store::Connection::from_sqlite(prepare(conn)?))
}

/// Opens a private in-memory SQLite database (tests, demos).
pub fn open_in_memory() -> Result<store::Connection> {
    let conn = Connection::open_in_memory()?;
    Ok(store::Connection::from_sqlite(prepare(conn)?))
}

fn prepare(conn: Connection) -> Result<Connection> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // The engine has a few hundred distinct statements; keep the frequent ones prepared.
    conn.set_prepared_statement_cache_capacity(256);
    // WAL: readers never block the writer; NORMAL sync is durable at each commit in WAL mode
    // except on power loss, which FULL covers; the outbox wants FULL.
    let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    conn.execute_batch(SCHEMA)?;
    migrate(&conn)?;
    let instance: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'instance'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if instance.is_none() {
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('instance', ?1)",
            [crate::random_hex(8)],
        )?;
    }
    Ok(conn)
}

/// The schema version this build reads and writes, kept in SQLite's `user_version`.
///
/// - 0: release 0.1 (no version recorded; `tests/fixtures/schema-0.1.sql`);
/// - 1: filter forecast intervals (`filter_schedules.lo_ts_ms`, `hi_ts_ms`);
/// - 2: token lifecycle (`tokens.expires_ts_ms`, `revoked_ts_ms`, `owner_fp`);
/// - 3: the usage each cartridge last reported (`filter_schedules.remaining_l`, `daily_l`,
///   `reported_ts_ms`) and the unclaimed-devices queue;
/// - 4: remote commands and their lifecycle (`commands`);
/// - 5: the broker client of each provisioned device (`broker_clients`, see
///   [`crate::provisioning`]);
/// - 6: sites of homes (`homes.site`) and findings grouped per home or site (`incidents`,
///   `incident_members`, see [`crate::incidents`]).
pub const SCHEMA_VERSION: i64 = 6;

/// The schema version recorded in a database.
pub fn schema_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Brings a database made by an older version up to [`SCHEMA_VERSION`], one recorded
/// step at a time, each in its own transaction; refuses one made by a newer version.
fn migrate(conn: &Connection) -> Result<()> {
    let found = schema_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(crate::Error::Config(format!(
            "the maintenance database has schema version {found}, newer than this gateway's \
             {SCHEMA_VERSION}: it was written by a newer release; run that release, or restore \
             the backup taken before the upgrade (`gateway restore`)"
        )));
    }
    type Step = fn(&Connection) -> Result<()>;
    let steps: [(i64, Step); 6] = [
        (1, migrate_filter_intervals),
        (2, migrate_token_lifecycle),
        (3, migrate_reported_usage),
        (4, migrate_commands),
        (5, migrate_broker_clients),
        (6, migrate_incidents),
    ];
    for (version, step) in steps {
        if version <= found {
            continue;
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied = step(conn)
            .and_then(|()| Ok(conn.execute_batch(&format!("PRAGMA user_version = {version}"))?));
        match applied {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        tracing::info!(version, "Maintenance database migrated.");
    }
    Ok(())
}

/// Whether `table` has `column`.
fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool> {
    let n: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
        [column],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// Step 1: the forecast interval of each filter schedule (databases older than 0.1).
fn migrate_filter_intervals(conn: &Connection) -> Result<()> {
    let has = |table: &str, column: &str| has_column(conn, table, column);
    for column in ["lo_ts_ms", "hi_ts_ms"] {
        if !has("filter_schedules", column)? {
            conn.execute_batch(&format!(
                "ALTER TABLE filter_schedules ADD COLUMN {column} INTEGER"
            ))?;
        }
    }
    Ok(())
}

/// Step 3: the usage the device last reported per cartridge (from the forecast's
/// evidence), and the queue of findings from devices nobody registered.
fn migrate_reported_usage(conn: &Connection) -> Result<()> {
    for column in ["remaining_l REAL", "daily_l REAL", "reported_ts_ms INTEGER"] {
        let name = column.split(' ').next().unwrap_or_default();
        if !has_column(conn, "filter_schedules", name)? {
            conn.execute_batch(&format!("ALTER TABLE filter_schedules ADD COLUMN {column}"))?;
        }
    }
    conn.execute_batch(crate::unclaimed::SCHEMA)?;
    Ok(())
}

/// Step 4: remote commands to devices, queued → sent → acknowledged → done | failed | expired.
fn migrate_commands(conn: &Connection) -> Result<()> {
    conn.execute_batch(crate::commands::SCHEMA)?;
    Ok(())
}

/// Step 5: the broker client (dynamic-security user) each provisioned device has.
fn migrate_broker_clients(conn: &Connection) -> Result<()> {
    conn.execute_batch(crate::provisioning::SCHEMA)?;
    Ok(())
}

/// Step 6: the site a home shares with others, and incidents grouping findings per home or site.
fn migrate_incidents(conn: &Connection) -> Result<()> {
    if !has_column(conn, "homes", "site")? {
        conn.execute_batch("ALTER TABLE homes ADD COLUMN site TEXT")?;
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS homes_site ON homes(site)")?;
    conn.execute_batch(crate::incidents::SCHEMA)?;
    Ok(())
}

/// Step 2: the token lifecycle.
fn migrate_token_lifecycle(conn: &Connection) -> Result<()> {
    let has = |table: &str, column: &str| has_column(conn, table, column);
    migrate_tokens(conn, &has)
}

/// Tokens of an older version get the lifecycle columns: an expiry of the default life
/// after their creation, and homeowner tokens the fingerprint of the home's owner today.
fn migrate_tokens(conn: &Connection, has: &dyn Fn(&str, &str) -> Result<bool>) -> Result<()> {
    for column in ["expires_ts_ms", "revoked_ts_ms"] {
        if !has("tokens", column)? {
            conn.execute_batch(&format!("ALTER TABLE tokens ADD COLUMN {column} INTEGER"))?;
        }
    }
    if !has("tokens", "owner_fp")? {
        conn.execute_batch("ALTER TABLE tokens ADD COLUMN owner_fp TEXT")?;
    }
    conn.execute(
        "UPDATE tokens SET expires_ts_ms = created_ts_ms + ?1 WHERE expires_ts_ms IS NULL",
        [crate::access::DEFAULT_TOKEN_TTL_MS],
    )?;
    let owners: Vec<(String, String, String)> = {
        let mut stmt = conn.prepare(
            "SELECT t.hash, h.owner_name, h.owner_phone FROM tokens t JOIN homes h ON h.id = t.subject
             WHERE t.role = 'homeowner' AND t.owner_fp IS NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (hash, name, phone) in owners {
        conn.execute(
            "UPDATE tokens SET owner_fp = ?2 WHERE hash = ?1",
            [hash, crate::access::owner_fingerprint(&name, &phone)],
        )?;
    }
    Ok(())
}

/// This database's random instance id, the prefix of every idempotency key.
pub fn instance_id(conn: &store::Connection) -> Result<String> {
    Ok(
        conn.query_row("SELECT value FROM meta WHERE key = 'instance'", [], |r| {
            r.get(0)
        })?,
    )
}

/// The SQLite DDL of this module and the modules with tables of their own, as PostgreSQL
/// takes it: every INTEGER a BIGINT (so every integer binds as `i64`, flags stay 0/1 and
/// the same expressions work on both), an `INTEGER PRIMARY KEY` an identity column, REAL
/// DOUBLE PRECISION. The one place where the two schemas are spelled differently.
pub fn postgres_ddl(sqlite_ddl: &str) -> String {
    sqlite_ddl
        .replace(
            "INTEGER PRIMARY KEY",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        )
        .replace("INTEGER", "BIGINT")
        .replace(" REAL", " DOUBLE PRECISION")
}

/// Columns that SQLite's migration steps add to the tables of [`SCHEMA`], and the
/// PostgreSQL-only lease of an outbox row claimed by a dispatcher (see
/// [`crate::outbox::claim_due`]).
const POSTGRES_COLUMNS: &str = "
ALTER TABLE filter_schedules ADD COLUMN IF NOT EXISTS remaining_l DOUBLE PRECISION;
ALTER TABLE filter_schedules ADD COLUMN IF NOT EXISTS daily_l DOUBLE PRECISION;
ALTER TABLE filter_schedules ADD COLUMN IF NOT EXISTS reported_ts_ms BIGINT;
ALTER TABLE homes ADD COLUMN IF NOT EXISTS site TEXT;
CREATE INDEX IF NOT EXISTS homes_site ON homes(site);
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS lease_until_ts_ms BIGINT;
";

/// The advisory lock (two keys) that serialises the schema set-up of instances starting
/// together (the cluster's lease tables use `(4242, 0)`).
const POSTGRES_MIGRATION_LOCK: (i32, i32) = (4242, 1);

/// Connects to PostgreSQL at `url` and creates (or checks) the schema, under an advisory
/// lock so instances starting together do not race; refuses a schema of a newer release.
pub fn open_postgres(url: &str) -> Result<store::Connection> {
    let conn = store::Connection::from_postgres(store::postgres::Session::connect(url)?);
    // READ COMMITTED, not the engine's SERIALIZABLE: each statement after the lock must
    // see what an instance that held the lock before committed.
    conn.execute_batch("BEGIN ISOLATION LEVEL READ COMMITTED")?;
    let set_up = migrate_postgres(&conn);
    match set_up {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(conn)
}

fn migrate_postgres(conn: &store::Connection) -> Result<()> {
    let (k1, k2) = POSTGRES_MIGRATION_LOCK;
    conn.execute_batch(&format!("SELECT pg_advisory_xact_lock({k1}, {k2})"))?;
    let ddl = [
        SCHEMA,
        crate::unclaimed::SCHEMA,
        crate::commands::SCHEMA,
        crate::provisioning::SCHEMA,
        crate::incidents::SCHEMA,
    ]
    .map(postgres_ddl)
    .join(";\n");
    conn.execute_batch(&ddl)?;
    conn.execute_batch(POSTGRES_COLUMNS)?;
    let found: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let found: i64 = found.and_then(|v| v.parse().ok()).unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(crate::Error::Config(format!(
            "the maintenance database has schema version {found}, newer than this gateway's \
             {SCHEMA_VERSION}: it was written by a newer release; run that release"
        )));
    }
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [SCHEMA_VERSION.to_string()],
    )?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('instance', ?1) ON CONFLICT (key) DO NOTHING",
        [crate::random_hex(8)],
    )?;
    Ok(())
}
