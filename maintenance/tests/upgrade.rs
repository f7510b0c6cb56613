//! Upgrades from the previous release's schema (`tests/fixtures/schema-0.1.sql`): a
//! database written by release 0.1 opens with this build, keeps every row, gains the
//! columns of each later step, records `user_version`, and its tokens keep working with
//! the lifecycle they lacked. A database of a newer release is refused with a clear error.

mod common;

use common::*;
use maintenance::db::{schema_version, SCHEMA_VERSION};
use maintenance::{Engine, EngineConfig, Policy};

const SCHEMA_0_1: &str = include_str!("fixtures/schema-0.1.sql");

fn config() -> EngineConfig {
    EngineConfig {
        policy: Policy::default(),
        ticket_webhooks: vec![],
    }
}

/// A database as release 0.1 left it: one home and a homeowner token of that home.
fn release_0_1_database(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(SCHEMA_0_1).expect("0.1 schema");
    conn.execute(
        "INSERT INTO homes (id, address, region, tz, lang, quiet_start, quiet_end, weekly_cap,
         channels, owner_name, owner_phone, owner_email)
         VALUES ('h1', 'h1 Road 1', 'shanghai', 'Asia/Shanghai', 'zh-CN', '22:00', '08:00', NULL,
         '[\"app\"]', 'Owner of h1', '13812341234', NULL)",
        [],
    )
    .expect("home");
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(b"legacy-homeowner-token"));
    conn.execute(
        "INSERT INTO tokens (hash, role, subject, created_ts_ms) VALUES (?1, 'homeowner', 'h1', ?2)",
        rusqlite::params![hash, t0()],
    )
    .expect("token");
    assert_eq!(schema_version(&conn).expect("version"), 0);
}

fn columns(conn: &rusqlite::Connection, table: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .expect("pragma");
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("names");
    names
}

#[test]
fn a_release_0_1_database_upgrades_in_place_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("maintenance.db");
    release_0_1_database(&path);

    let engine = Engine::open(&path, config()).expect("the 0.1 database opens");
    // The home and its owner are still there.
    let home = engine
        .read(|c| maintenance::registry::get_home(c, "h1"))
        .expect("read")
        .expect("h1 kept");
    assert_eq!(home.owner.phone, "13812341234");
    // The old token works, now with an expiry (the default life after its creation).
    let who = engine
        .authenticate("legacy-homeowner-token", t0() + DAY)
        .expect("auth")
        .expect("the 0.1 token still authenticates");
    assert_eq!(who.subject.as_deref(), Some("h1"));
    let tokens = engine.list_tokens(10, t0()).expect("tokens");
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].expires_ts_ms > t0(), "{tokens:?}");
    // Re-registering the home to a new owner invalidates the old owner's token (the
    // fingerprint the migration gave it).
    let mut new_owner = home.clone();
    new_owner.owner.name = "New owner".into();
    new_owner.owner.phone = "13900001111".into();
    engine.put_home(&new_owner).expect("re-register");
    assert!(engine
        .authenticate("legacy-homeowner-token", t0() + DAY)
        .expect("auth")
        .is_none());
    drop(engine);

    let conn = rusqlite::Connection::open(&path).expect("reopen");
    assert_eq!(schema_version(&conn).expect("version"), SCHEMA_VERSION);
    let tokens = columns(&conn, "tokens");
    for c in ["expires_ts_ms", "revoked_ts_ms", "owner_fp"] {
        assert!(tokens.iter().any(|t| t == c), "tokens.{c}: {tokens:?}");
    }
    let schedules = columns(&conn, "filter_schedules");
    for c in [
        "lo_ts_ms",
        "hi_ts_ms",
        "remaining_l",
        "daily_l",
        "reported_ts_ms",
    ] {
        assert!(schedules.iter().any(|t| t == c), "filter_schedules.{c}");
    }
    drop(conn);
    // Opening again is a no-op.
    Engine::open(&path, config()).expect("second open");
}

#[test]
fn a_database_of_a_newer_release_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("maintenance.db");
    drop(Engine::open(&path, config()).expect("new database"));
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
        .expect("bump");
    drop(conn);
    let err = match Engine::open(&path, config()) {
        Ok(_) => panic!("a newer schema is refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("newer"), "{err}");
    assert!(err.contains("gateway restore"), "{err}");
}
