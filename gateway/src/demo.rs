//! A few simulated fixtures for the zero-setup run (`gateway --demo N`), so a
//! newcomer sees telemetry arrive within seconds. Every 20th message is broken
//! on purpose, to show the dead-letter store at work. The fleet simulator
//! (`fixture-sim`) is the realistic, deterministic source for tests and benchmarks.

use std::time::Duration;

use protocol::message::*;
use protocol::topic::{Channel, Topic};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::sync::watch;

use crate::ingest::pipeline::now_ms;

struct DemoFixture {
    id: String,
    model: Model,
    seq: u32,
    counter: u64,
}

impl DemoFixture {
    fn telemetry(&mut self, ts: i64) -> Vec<u8> {
        self.seq += 1;
        self.counter += 1;
        let c = self.counter;
        let temp = 35.0 + (c % 7) as f32 * 0.3;
        let cartridge = |slot, kind| Cartridge { slot, kind, ml_since_replacement: c * 1500, replacements: 0 };
        let reading = match self.model {
            Model::Toilet => Reading::Toilet(ToiletReading {
                seat_sessions: c as u32,
                washes: (c / 2) as u32,
                wash_seconds: (c * 20) as u32,
                flushes: c as u32,
                water_ml: c * 4500,
                heater_wh: (c * 3) as u32,
                water_temp_c: temp,
                seat_temp_c: 34.0,
            }),
            Model::Purifier => Reading::Purifier(PurifierReading {
                dispensed_ml: c * 1500,
                tds_in_ppm: 310,
                tds_out_ppm: 12,
                inlet_pressure_kpa: 280.0,
                pump_seconds: (c * 10) as u32,
                cartridges: [cartridge(0, CartridgeKind::Sediment), cartridge(1, CartridgeKind::ReverseOsmosis)].into_iter().collect(),
            }),
            Model::Shower => Reading::Shower(ShowerReading {
                showers: c as u32,
                water_ml: c * 40_000,
                shower_seconds: (c * 420) as u32,
                temp_c: temp + 3.0,
                pressure_kpa: 300.0,
                cartridges: [cartridge(0, CartridgeKind::Shower)].into_iter().collect(),
            }),
        };
        let msg = Telemetry {
            v: 1,
            device_id: self.id.as_str().try_into().unwrap_or_default(),
            boot_id: 1,
            seq: self.seq,
            ts,
            fw: Some("1.0.0".try_into().unwrap_or_default()),
            reading,
        };
        serde_json::to_vec(&msg).unwrap_or_default()
    }
}

/// Publishes telemetry for `count` demo fixtures to `host:port` every second until shutdown.
pub async fn run(host: String, port: u16, count: usize, mut shutdown: watch::Receiver<bool>) {
    let mut opts = MqttOptions::new(format!("demo-fixtures-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                tracing::debug!(error = %e, "Demo fixtures: connection error, retrying.");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let models = [Model::Toilet, Model::Purifier, Model::Shower];
    let mut fleet: Vec<DemoFixture> = (0..count)
        .map(|i| {
            let model = models[i % models.len()];
            DemoFixture { id: format!("demo-{}-{i:03}", model.as_str()), model, seq: 0, counter: 0 }
        })
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        round += 1;
        for (i, f) in fleet.iter_mut().enumerate() {
            let topic = Topic::format(&f.id, Channel::Telemetry);
            let mut payload = f.telemetry(now_ms());
            if (round as usize + i) % 20 == 0 {
                payload.truncate(payload.len() / 2); // A broken message, on purpose.
            }
            if let Err(e) = client.publish(topic.as_str(), QoS::AtLeastOnce, false, payload).await {
                tracing::warn!(error = %e, "Demo fixtures: publish failed.");
            }
        }
    }
}
