//! Publishing against a real Mosquitto broker, started on a free port for the test.
//!
//! The test fails (it does not skip) when `mosquitto` is not installed: install it
//! with `apt-get install mosquitto`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use simulator::faults::FaultMix;
use simulator::publish::{Pacer, Publisher, PublisherConfig, Speed};
use simulator::{Fleet, FleetConfig};

/// A Mosquitto process on 127.0.0.1, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let bin = [
            "/usr/sbin/mosquitto",
            "/usr/local/sbin/mosquitto",
            "/usr/bin/mosquitto",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("mosquitto"))
                    .find(|p| p.exists())
            })
        })
        .expect(
            "mosquitto is not installed (apt-get install mosquitto): this test needs a real broker",
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "simulator-mosquitto-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n# The counting subscriber may lag on a busy machine: queue, do not drop.\nmax_queued_messages 1000000\n"),
        )
        .expect("config");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        let m = Mosquitto { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_every_message_with_qos1_and_counts_the_pubacks() {
    let broker = Mosquitto::start();
    let cfg = FleetConfig {
        devices: 9,
        days: 2,
        end_ms: simulator::fleet::now_ms(),
        seed: 1,
        telemetry_every_min: 15,
        mix: FaultMix::default_mix(),
        inject: vec![],
    };
    let (msgs, _) = Fleet::generate_all(cfg.clone()).unwrap();
    assert!(msgs.len() > 1000);

    // A subscriber that counts what the broker delivers.
    let mut opts = MqttOptions::new(
        format!("simulator-test-sub-{}", std::process::id()),
        "127.0.0.1",
        broker.port,
    );
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (sub, mut el) = AsyncClient::new(opts, 100);
    sub.subscribe("fixtures/#", QoS::AtLeastOnce).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let counter = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = tx.send(None);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(Some(p.topic));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    assert_eq!(rx.recv().await, Some(None), "subscribed");

    let mut pc = PublisherConfig::new(format!("mqtt://127.0.0.1:{}", broker.port).parse().unwrap());
    pc.connections = 3;
    let mut publisher = Publisher::connect(&pc).await.unwrap();
    let mut fleet = Fleet::new(cfg).unwrap();
    let pacer = Pacer::new(Speed::Max, fleet.start_ms());
    let mut n = 0u64;
    while let Some(batch) = fleet.next_batch() {
        for m in &batch {
            pacer.wait(m.at_ms).await;
            publisher.publish(m).await.unwrap();
            n += 1;
        }
    }
    let stats = publisher.finish(Duration::from_secs(30)).await.unwrap();
    assert_eq!((stats.sent, stats.acked), (n, n));
    assert_eq!(n, msgs.len() as u64);

    let mut received = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Some(topic))) => {
                assert!(protocol::topic::Topic::parse(&topic).is_ok());
                received += 1;
            }
            _ => break,
        }
    }
    assert_eq!(received, n, "the subscriber got every message");
    counter.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fleet_helper_sends_a_whole_fleet() {
    let broker = Mosquitto::start();
    let cfg = FleetConfig {
        devices: 3,
        days: 1,
        end_ms: simulator::fleet::now_ms(),
        seed: 2,
        telemetry_every_min: 60,
        mix: FaultMix::default(),
        inject: vec![],
    };
    let expected = Fleet::generate_all(cfg.clone()).unwrap().0.len() as u64;
    let mut fleet = Fleet::new(cfg).unwrap();
    let pc = PublisherConfig::new(format!("mqtt://127.0.0.1:{}", broker.port).parse().unwrap());
    let mut days = 0;
    let stats = simulator::publish::publish_fleet(
        &mut fleet,
        &pc,
        Speed::Max,
        Duration::from_secs(20),
        |_| days += 1,
    )
    .await
    .unwrap();
    assert_eq!((stats.sent, stats.acked), (expected, expected));
    assert!(days >= 1);
}

#[tokio::test]
async fn unreachable_broker_is_a_connect_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let pc = PublisherConfig::new(format!("mqtt://127.0.0.1:{port}").parse().unwrap());
    assert!(Publisher::connect(&pc).await.is_err());
}

#[test]
fn broker_urls_parse() {
    use simulator::publish::BrokerUrl;
    let u: BrokerUrl = "mqtt://127.0.0.1:1884".parse().unwrap();
    assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 1884));
    let u: BrokerUrl = "localhost".parse().unwrap();
    assert_eq!(u.port, 1883);
    assert!("http://x:1".parse::<BrokerUrl>().is_err());
    assert!("mqtt://:1883".parse::<BrokerUrl>().is_err());
    assert!(
        "100".parse::<Speed>().is_ok()
            && "max".parse::<Speed>().is_ok()
            && "-1".parse::<Speed>().is_err()
    );
}
