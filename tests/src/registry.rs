//! A maintenance registry for the end-to-end tests: one home per device (Shanghai,
//! English, app push), a technician with every skill, and an admin token, written
//! straight into the engine's database before the gateway starts; plus the gateway's
//! `[maintenance]` table pointing at it.

use std::path::Path;

use anyhow::Result;
use maintenance::registry::{Channel, Device, Home, Owner, Technician};
use protocol::message::Model;

/// A home for device number `i` (`h{i}`, region `sh`).
pub fn home(i: usize) -> Home {
    Home {
        site: None,
        id: format!("h{i}"),
        address: format!("{i} Century Avenue"),
        region: "sh".into(),
        tz: "Asia/Shanghai".into(),
        lang: maintenance::templates::Lang::En,
        quiet_start: "22:00".into(),
        quiet_end: "08:00".into(),
        weekly_cap: Some(20),
        channels: vec![Channel::App],
        owner: Owner {
            name: format!("Owner {i}"),
            phone: "13812341234".into(),
            email: None,
        },
    }
}

/// Registers `devices` (one home each) and technician `tech-a` (region `sh`, every skill)
/// in the maintenance database `db`; returns an admin token.
pub fn register_devices(db: &Path, devices: &[(String, Model)]) -> Result<String> {
    let engine = maintenance::Engine::open(
        db,
        maintenance::EngineConfig {
            policy: maintenance::Policy::default(),
            ticket_webhooks: Vec::new(),
        },
    )?;
    register_in(&engine, devices)
}

/// As [`register_devices`], in the maintenance database of `engine` (e.g. a clustered
/// gateway's PostgreSQL database).
pub fn register_in(engine: &maintenance::Engine, devices: &[(String, Model)]) -> Result<String> {
    let skills = ["plumbing", "electrical", "filter"]
        .map(String::from)
        .to_vec();
    engine.put_technician(&Technician {
        id: "tech-a".into(),
        name: "Tech A".into(),
        region: "sh".into(),
        skills,
    })?;
    for (i, (id, model)) in devices.iter().enumerate() {
        let home = home(i);
        engine.put_home(&home)?;
        engine.put_device(&Device {
            id: id.clone(),
            home_id: home.id,
            model: *model,
            installed_ts_ms: 0,
            cartridges: Vec::new(),
        })?;
    }
    Ok(engine.issue_token(maintenance::Role::Admin, None, gateway::clock::now_ms())?)
}

/// The gateway's `[maintenance]` table for the database `db`, ticking every second.
pub fn maintenance_toml(db: &Path) -> String {
    format!(
        "[maintenance]\ndb_path = \"{}\"\ntick_interval_s = 1\ndispatch_interval_s = 60\n[maintenance.delivery]\nhmac_secret = \"0123456789abcdef0123\"\n",
        db.display()
    )
}
