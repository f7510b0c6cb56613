//! The demo fleet of the zero-setup run (`gateway --demo N`): the fleet simulator
//! (`simulator`, running the real firmware logic in simulated households, with the
//! default fault mix) replays the last seven days of N fixtures at one simulated
//! hour per second into the gateway's broker, so a newcomer sees telemetry,
//! usage sessions and faults arrive within seconds. For tests and benchmarks use
//! `simulator` directly.

use std::time::Duration;

use simulator::faults::FaultMix;
use simulator::publish::{publish_fleet, BrokerUrl, PublisherConfig, Speed};
use simulator::{Fleet, FleetConfig};
use tokio::sync::watch;

/// Simulated seconds per real second.
const SPEED: f64 = 3600.0;

/// Publishes a simulated fleet of `count` fixtures to `host:port` until done or shut down.
pub async fn run(host: String, port: u16, count: usize, mut shutdown: watch::Receiver<bool>) {
    let cfg = FleetConfig {
        devices: u32::try_from(count).unwrap_or(u32::MAX),
        days: 7,
        mix: FaultMix::default_mix(),
        ..FleetConfig::default()
    };
    let mut fleet = match Fleet::new(cfg) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "Cannot build the demo fleet.");
            return;
        }
    };
    let mut publisher = PublisherConfig::new(BrokerUrl { host, port });
    publisher.connections = 1;
    publisher.client_prefix = "demo-fleet".into();
    tracing::info!(
        fixtures = count,
        "Demo fleet: replaying the last 7 days at one simulated hour per second."
    );
    let mut day = 0;
    tokio::select! {
        r = publish_fleet(&mut fleet, &publisher, Speed::Factor(SPEED), Duration::from_secs(10), |stats| {
            day += 1;
            tracing::info!(day, published = stats.sent, acknowledged_by_broker = stats.acked, "Demo fleet: simulated day done.");
        }) => match r {
            Ok(stats) => tracing::info!(published = stats.sent, "Demo fleet: the simulated week is over."),
            Err(e) => tracing::error!(error = %e, "Demo fleet stopped."),
        },
        _ = shutdown.changed() => {}
    }
}

/// The `[maintenance]` table of the zero-setup demo when the config has none: the engine's
/// database under the data directory, app pushes delivered to the gateway's own
/// `/demo/push` (which logs them), so tickets, reminders and the pages work out of the box.
pub fn maintenance_config(
    data_dir: &std::path::Path,
    http: std::net::SocketAddr,
) -> Result<maintenance::Config, maintenance::Error> {
    let secret: String = (0..32)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect();
    let db = data_dir.join("maintenance.db");
    let text = format!(
        "db_path = {db:?}\ntick_interval_s = 5\ndispatch_interval_s = 2\n[delivery]\npush_url = \"http://{http}/demo/push\"\nhmac_secret = \"{secret}\"\nbackoff_base_s = 2\n",
        db = db.to_string_lossy()
    );
    maintenance::Config::from_toml(&text)
}

/// Registers the demo fixtures with the maintenance engine — households of a toilet, a
/// purifier and a shower (the simulator's order), with the simulator's cartridges — and a
/// technician, then logs links to the pages with fresh tokens.
pub fn register(
    engine: &maintenance::Engine,
    count: usize,
    http: std::net::SocketAddr,
    now_ms: i64,
) -> Result<(), maintenance::Error> {
    use maintenance::registry::{CartridgeSpec, Channel, Device, Home, Owner, Technician};
    let skills = ["plumbing", "electrical", "filter"]
        .map(String::from)
        .to_vec();
    engine.put_technician(&Technician {
        id: "demo-tech".into(),
        name: "Wang Qiang".into(),
        region: "shanghai".into(),
        skills,
    })?;
    for i in 0..u32::try_from(count).unwrap_or(u32::MAX) {
        let home_id = format!("demo-home-{}", i / 3);
        if i % 3 == 0 {
            engine.put_home(&Home {
                id: home_id.clone(),
                address: format!("{} Century Avenue, Pudong", 100 + i / 3),
                region: "shanghai".into(),
                tz: "Asia/Shanghai".into(),
                lang: maintenance::templates::Lang::ZhCn,
                quiet_start: "22:00".into(),
                quiet_end: "08:00".into(),
                weekly_cap: None,
                channels: vec![Channel::App],
                owner: Owner {
                    name: format!("Demo owner {}", i / 3),
                    phone: "13812341234".into(),
                    email: None,
                },
            })?;
        }
        let model = simulator::fleet::model_of(i);
        let cartridges = model
            .cartridge_kinds()
            .iter()
            .zip(0u8..)
            .map(|(&kind, slot)| CartridgeSpec {
                slot,
                kind,
                rated_litres: kind.rated_litres(),
                max_age_days: kind.max_age_days(),
                replaced_ts_ms: None,
                replacements: 0,
            })
            .collect();
        engine.put_device(&Device {
            id: simulator::fleet::device_id(i),
            home_id,
            model,
            installed_ts_ms: now_ms - 7 * 86_400_000,
            cartridges,
        })?;
    }
    let agent = engine.issue_token(maintenance::Role::Agent, None, now_ms)?;
    let owner = engine.issue_token(maintenance::Role::Homeowner, Some("demo-home-0"), now_ms)?;
    tracing::info!("Demo pages — after-sales board: http://{http}/board#token={agent}");
    tracing::info!("Demo pages — fleet health:      http://{http}/fleet#token={agent}");
    tracing::info!("Demo pages — a homeowner's view: http://{http}/home#token={owner}");
    Ok(())
}

/// `POST /demo/push`: the demo's stand-in for the brand's app-push service; logs each message.
pub fn push_sink() -> axum::Router {
    axum::Router::new().route(
        "/demo/push",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned).unwrap_or_default();
            tracing::info!(home = %field("home_id"), title = %field("title"), "Demo app push: {}", field("body"));
            axum::http::StatusCode::NO_CONTENT
        }),
    )
}
