//! Shared fixtures for the integration tests: a registry with two homes, devices and
//! technicians, and fixed instants so every test is deterministic.
#![allow(dead_code)]

use chrono::TimeZone;
use maintenance::registry::{CartridgeSpec, Channel, Device, Home, Owner, Technician};
use maintenance::templates::Lang;
use maintenance::{Engine, EngineConfig, Finding, FindingKind, FindingState, Policy};
use protocol::message::{CartridgeKind, Model, Severity};

pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;
pub const WEBHOOK: &str = "http://127.0.0.1:9/tickets";

/// 2026-03-02 10:00 in Shanghai (UTC+8): daytime, outside quiet hours.
pub fn t0() -> i64 {
    chrono::Utc
        .with_ymd_and_hms(2026, 3, 2, 2, 0, 0)
        .single()
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

pub fn home(id: &str, region: &str, phone: &str) -> Home {
    Home {
        site: None,
        id: id.into(),
        address: format!("{id} Road 1, Pudong"),
        region: region.into(),
        tz: "Asia/Shanghai".into(),
        lang: Lang::ZhCn,
        quiet_start: "22:00".into(),
        quiet_end: "08:00".into(),
        weekly_cap: None,
        channels: vec![Channel::App, Channel::Sms],
        owner: Owner {
            name: format!("Owner of {id}"),
            phone: phone.into(),
            email: None,
        },
    }
}

pub fn engine_with(policy: Policy) -> Engine {
    let e = new_engine(EngineConfig {
        policy,
        ticket_webhooks: vec![WEBHOOK.into()],
    });
    populate(&e);
    e
}

/// The environment variable naming a PostgreSQL server (a URL with rights to create
/// databases) on which to run these tests instead of SQLite: each engine gets a new database.
pub const POSTGRES_ENV: &str = "MAINTENANCE_TEST_POSTGRES";

/// A new, empty engine: SQLite in memory, or a new database on the PostgreSQL server
/// named by [`POSTGRES_ENV`] when it is set (`tests/tests/maintenance_postgres.rs` runs the
/// suite so).
pub fn new_engine(cfg: EngineConfig) -> Engine {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => {
            Engine::open_postgres(&fresh_postgres_database(&url), cfg).expect("engine on postgres")
        }
        _ => Engine::in_memory(cfg).expect("engine"),
    }
}

/// Creates a database with a new name on the server at `admin_url`; its URL.
pub fn fresh_postgres_database(admin_url: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "maint_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    let admin = maintenance::store::Connection::from_postgres(
        maintenance::store::postgres::Session::connect(admin_url)
            .expect("postgres admin connection"),
    );
    admin
        .execute_batch(&format!("CREATE DATABASE {name}"))
        .expect("create database");
    let (server, _) = admin_url
        .rsplit_once('/')
        .expect("a URL ending in /database");
    format!("{server}/{name}")
}

pub fn engine() -> Engine {
    engine_with(Policy::default())
}

pub fn populate(e: &Engine) {
    e.put_home(&home("h1", "shanghai", "13812341234"))
        .expect("h1");
    e.put_home(&home("h2", "shanghai", "13987654321"))
        .expect("h2");
    for (id, home, model) in [
        ("toilet-1", "h1", Model::Toilet),
        ("purifier-1", "h1", Model::Purifier),
        ("shower-1", "h1", Model::Shower),
        ("toilet-2", "h2", Model::Toilet),
    ] {
        let cartridges = if model == Model::Purifier {
            vec![
                CartridgeSpec {
                    slot: 0,
                    kind: CartridgeKind::Sediment,
                    rated_litres: 2000,
                    max_age_days: 180,
                    replaced_ts_ms: None,
                    replacements: 0,
                },
                CartridgeSpec {
                    slot: 1,
                    kind: CartridgeKind::ReverseOsmosis,
                    rated_litres: 8000,
                    max_age_days: 720,
                    replaced_ts_ms: None,
                    replacements: 0,
                },
            ]
        } else {
            Vec::new()
        };
        e.put_device(&Device {
            id: id.into(),
            home_id: home.into(),
            model,
            installed_ts_ms: t0() - 100 * DAY,
            cartridges,
        })
        .expect("device");
    }
    for (id, skills) in [
        ("tech-a", vec!["plumbing", "filter"]),
        ("tech-b", vec!["plumbing", "electrical"]),
        ("tech-c", vec!["electrical"]),
    ] {
        e.put_technician(&Technician {
            id: id.into(),
            name: id.to_uppercase(),
            region: "shanghai".into(),
            skills: skills.into_iter().map(String::from).collect(),
        })
        .expect("tech");
    }
}

pub fn finding(device: &str, kind: FindingKind, began: i64) -> Finding {
    Finding {
        device_id: device.into(),
        kind,
        severity: Severity::Major,
        evidence: serde_json::json!({ "score": 0.97 }),
        began_ts_ms: began,
        state: FindingState::Active,
    }
}

pub fn cleared(device: &str, kind: FindingKind, began: i64) -> Finding {
    Finding {
        state: FindingState::Cleared,
        ..finding(device, kind, began)
    }
}
