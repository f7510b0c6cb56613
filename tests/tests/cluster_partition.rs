//! Clustered mode, (a): the gateway's partition function agrees with nats-server's
//! `{{partition(64,1)}}` mapping of `deploy/nats/cluster.conf`. Messages published through
//! the 3-node cluster's MQTT listeners arrive as `fixtures/<P>/<id>/<kind>`; every `P` must
//! equal `gateway::cluster::partition::partition_of(id, 64)`. (Issue #15.)

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::cluster::*;
use e2e_tests::*;
use gateway::cluster::partition::partition_of;

#[test]
fn the_gateway_computes_the_same_partition_as_the_broker_mapping() {
    let nats = NatsCluster::start().unwrap();
    let ports = nats.mqtt_ports();

    // A plain subscriber on node 3 records the topic every message arrives on.
    let delivered: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = {
        let (delivered, stop, subscribed, port) = (
            Arc::clone(&delivered),
            Arc::clone(&stop),
            Arc::clone(&subscribed),
            ports[2],
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let opts = rumqttc::MqttOptions::new("witness-partitions", "127.0.0.1", port);
                let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
                client
                    .subscribe("fixtures/+/+/+", rumqttc::QoS::AtLeastOnce)
                    .await
                    .unwrap();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await {
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => {
                            subscribed.store(true, std::sync::atomic::Ordering::SeqCst)
                        }
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                            let v: serde_json::Value =
                                serde_json::from_slice(&p.payload).unwrap_or_default();
                            let key = format!("{}/{}", v["device_id"], v["seq"]);
                            delivered.lock().unwrap().insert(key, p.topic.clone());
                        }
                        Ok(Ok(_)) | Err(_) => {}
                        Ok(Err(e)) => panic!("witness connection failed: {e}"),
                    }
                }
            });
        })
    };
    wait_until(Duration::from_secs(20), "the witness subscription", || {
        subscribed
            .load(std::sync::atomic::Ordering::SeqCst)
            .then_some(())
    })
    .unwrap();

    // 1 000 devices × 2 messages, published to nodes 1 and 2.
    let messages = fleet_messages(1000, 2, base_ts());
    let done = publish_to_cluster(
        &ports[..2],
        "pub-partitions",
        messages.clone(),
        8,
        None,
        Arc::new(AtomicUsize::new(0)),
    )
    .unwrap();
    let acked = done.iter().filter(|d| **d).count();
    assert_eq!(acked, 2000, "every publish acknowledged");
    wait_until(
        Duration::from_secs(60),
        "every message at the witness",
        || (delivered.lock().unwrap().len() >= 2000).then_some(()),
    )
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    thread.join().unwrap();

    let delivered = delivered.lock().unwrap();
    let mut partitions_seen = BTreeSet::new();
    let mut wrong = Vec::new();
    for topic in delivered.values() {
        let levels: Vec<&str> = topic.split('/').collect();
        assert_eq!(
            levels.len(),
            4,
            "mapped topic fixtures/<P>/<id>/<kind>: {topic}"
        );
        assert_eq!((levels[0], levels[3]), ("fixtures", "telemetry"), "{topic}");
        let p: u32 = levels[1].parse().unwrap();
        partitions_seen.insert(p);
        if p != partition_of(levels[2], PARTITIONS) {
            wrong.push(topic.clone());
        }
        // The ingest helper strips the partition back off.
        let (sp, plain) = protocol::topic::Topic::strip_partition(topic).unwrap();
        assert_eq!(sp, p);
        assert_eq!(plain.as_str(), format!("fixtures/{}/telemetry", levels[2]));
    }
    assert_eq!(delivered.len(), 2000);
    assert!(
        wrong.is_empty(),
        "{} of 2000 in another partition than computed, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(
        partitions_seen.len(),
        64,
        "1 000 devices reach every partition"
    );
}

/// Commands go the other way, gateway to device, on `fixtures/<id>/cmd`: the mapping leaves
/// them alone, so a device subscribed to its own plain topic on another node gets them.
#[test]
fn commands_to_a_device_keep_their_plain_topic() {
    let nats = NatsCluster::start().unwrap();
    let ports = nats.mqtt_ports();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async move {
        let device = rumqttc::MqttOptions::new("toilet-00007", "127.0.0.1", ports[0]);
        let (device, mut device_loop) = rumqttc::AsyncClient::new(device, 10);
        device
            .subscribe("fixtures/toilet-00007/cmd", rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            match device_loop.poll().await.unwrap() {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => break,
                _ => continue,
            }
        }
        let gateway = rumqttc::MqttOptions::new("gw-commands", "127.0.0.1", ports[1]);
        let (gateway, mut gateway_loop) = rumqttc::AsyncClient::new(gateway, 10);
        gateway
            .publish(
                "fixtures/toilet-00007/cmd",
                rumqttc::QoS::AtLeastOnce,
                false,
                br#"{"v":1,"cmd_id":"c1"}"#.to_vec(),
            )
            .await
            .unwrap();
        tokio::spawn(async move { while gateway_loop.poll().await.is_ok() {} });
        tokio::time::timeout(Duration::from_secs(30), async move {
            loop {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) =
                    device_loop.poll().await
                {
                    return p.topic;
                }
            }
        })
        .await
    });
    assert_eq!(
        got.expect("the device receives the command within 30 s"),
        "fixtures/toilet-00007/cmd"
    );
}
