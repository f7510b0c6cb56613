//! The demo fleet of the zero-setup run (`gateway --demo N`): the fleet simulator
//! (`simulator`, running the real firmware logic in simulated households, with the
//! default fault mix) replays the last seven days of N fixtures at one simulated
//! hour per second into the gateway's broker, so a newcomer sees telemetry,
//! usage sessions and faults arrive within seconds. For tests and benchmarks use
//! `simulator` directly.
//!
//! So that the product shows within two minutes, the first household (the one whose
//! homeowner page the console links to) always has a leak on its toilet early in the
//! replay (a ticket on the board, an urgent message to the homeowner) and a purifier
//! whose sediment cartridge is nearly used up (a "filter due" reminder with its name).

use std::time::Duration;

use simulator::faults::{FaultKind, FaultMix, Injection};
use simulator::publish::{publish_fleet, BrokerUrl, PublisherConfig, Speed};
use simulator::{Fleet, FleetConfig};
use tokio::sync::watch;

/// Simulated seconds per real second.
const SPEED: f64 = 3600.0;

/// The demo's leaking toilet (first household): the leak starts 2.4 simulated hours
/// into the replay (under three seconds) and lasts half a day.
pub const LEAKING_TOILET: &str = "toilet-0000";

/// The demo's purifier with a cartridge near its end (first household), and its slot.
pub const WORN_PURIFIER: (&str, usize) = ("purifier-0001", 0);

/// How much of the worn cartridge is used when the replay starts: about two weeks of the
/// household's water is left when it ends, so the forecast's due date is close.
const WORN_FRACTION: f64 = 0.96;

/// The demo fleet of `count` fixtures ending at `end_ms`: the default fault mix, the leak
/// and the worn cartridge of the first household (when the fleet has them).
pub fn fleet(count: usize, end_ms: i64) -> Result<Fleet, simulator::FleetError> {
    let devices = u32::try_from(count).unwrap_or(u32::MAX);
    let mut inject = Vec::new();
    if devices >= 1 {
        inject.push(Injection::on(
            LEAKING_TOILET,
            FaultKind::Leak,
            0.1,
            Some(0.5),
        ));
    }
    let mut fleet = Fleet::new(FleetConfig {
        devices,
        days: 7,
        end_ms,
        mix: FaultMix::default_mix(),
        inject,
        ..FleetConfig::default()
    })?;
    if devices >= 2 {
        fleet.wear_cartridge(WORN_PURIFIER.0, WORN_PURIFIER.1, WORN_FRACTION)?;
    }
    Ok(fleet)
}

/// Publishes a simulated fleet of `count` fixtures to `host:port` until done or shut down.
pub async fn run(host: String, port: u16, count: usize, mut shutdown: watch::Receiver<bool>) {
    let mut fleet = match fleet(count, simulator::fleet::now_ms()) {
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
                site: None,
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
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                tracing::warn!(bytes = body.len(), "Demo app push: not JSON; refused.");
                return axum::http::StatusCode::BAD_REQUEST;
            };
            let p = PushLine::of(&v);
            tracing::info!(home = %p.home, title = %p.title, urgent = p.urgent, "Demo app push: {}", p.body);
            axum::http::StatusCode::NO_CONTENT
        }),
    )
}

/// What the demo's push log prints of one push: the dispatcher posts
/// `{"to_home": …, "message": {"title", "body", "urgent", …}}`.
#[derive(Debug, PartialEq)]
struct PushLine {
    home: String,
    title: String,
    body: String,
    urgent: bool,
}

impl PushLine {
    fn of(v: &serde_json::Value) -> PushLine {
        let text = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_owned();
        let m = &v["message"];
        PushLine {
            home: text(&v["to_home"]),
            title: text(&m["title"]),
            body: text(&m["body"]),
            urgent: m["urgent"].as_bool().unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Analyzer;
    use maintenance::FindingKind;

    #[test]
    fn the_push_log_reads_the_fields_the_dispatcher_sends() {
        let sent = serde_json::json!({ "to_home": "demo-home-0", "message": {
            "title": "漏水警报", "body": "马桶检测到漏水", "urgent": true, "home_id": "demo-home-0" } });
        assert_eq!(
            PushLine::of(&sent),
            PushLine {
                home: "demo-home-0".into(),
                title: "漏水警报".into(),
                body: "马桶检测到漏水".into(),
                urgent: true
            }
        );
    }

    /// The demo's promise, checked on the analytics the gateway runs: within the replay the
    /// first household's toilet raises a leak early, and its purifier's worn cartridge is
    /// forecast due within the two weeks after the replay ends (so a reminder goes out now).
    #[test]
    fn the_demo_fleet_has_an_early_leak_and_a_filter_due_within_two_weeks() {
        const DAY: i64 = 86_400_000;
        let end = 1_790_000_000_000;
        let mut fleet = fleet(6, end).unwrap();
        let start = fleet.start_ms();
        let limits = protocol::validate::Limits {
            max_age_ms: i64::MAX / 4,
            max_future_ms: i64::MAX / 4,
        };
        let mut analyzer = Analyzer::new(crate::analysis::AnalyticsConfig::default());
        let (mut findings, mut points) = (Vec::new(), Vec::new());
        let mut leak_at = None;
        while let Some(batch) = fleet.next_batch() {
            for m in batch {
                let Ok(accepted) = crate::decode::decode(&m.topic, &m.payload, end, &limits) else {
                    continue;
                };
                if let (Some(f), crate::decode::Message::Event(e)) =
                    (&accepted.fault, &accepted.message)
                {
                    if accepted.device_id.as_str() == LEAKING_TOILET
                        && f.code == protocol::message::FaultCode::Leak
                    {
                        leak_at.get_or_insert(e.ts);
                    }
                }
                analyzer.observe(
                    accepted.device_id.as_str(),
                    &accepted.message,
                    &mut findings,
                    &mut points,
                );
            }
        }
        let leak_at = leak_at.expect("the toilet reports its leak");
        assert!(
            leak_at - start < DAY / 2,
            "early in the replay: {}",
            (leak_at - start) as f64 / DAY as f64
        );
        let last_due = findings
            .iter()
            .filter(|f| f.device_id.as_str() == WORN_PURIFIER.0)
            .filter_map(|f| match f.finding.kind {
                FindingKind::FilterDue { slot, due_ts_ms }
                    if usize::from(slot) == WORN_PURIFIER.1 =>
                {
                    Some(due_ts_ms)
                }
                _ => None,
            })
            .next_back()
            .expect("a due date for the worn cartridge");
        let days = (last_due - end) as f64 / DAY as f64;
        assert!(
            (2.0..14.0).contains(&days),
            "due {days:.1} days after the replay ends"
        );
    }
}
