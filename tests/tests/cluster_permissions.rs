//! Clustered mode, per-device permissions on the mapped subjects (issue #15): the deployed
//! 3-node `cluster.conf` with the `authorization` block that `deploy/nats/README.md`
//! prescribes ([`nats_authorization`]). A device's publish permissions name its own id under
//! any partition token, since nats-server 2.9.10 checks them after the partition mapping; the
//! gateway's login reads every partition through a QoS 1 session. Shown against real nodes: a
//! device's own messages reach the gateway's subscription; a device publishing as another
//! device is dropped by the broker (never delivered, though 2.9.10 still PUBACKs it); a wrong
//! password and an anonymous login are refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::cluster::*;
use e2e_tests::dynsec::{publish_as, MqttOutcome};
use e2e_tests::*;

const GATEWAY: (&str, &str) = ("gateway", "gateway-secret");
const DEVICE_A: (&str, &str) = ("toilet-00000", "secret-a");
const DEVICE_B: (&str, &str) = ("toilet-00003", "secret-b");

/// A QoS 1 persistent session on every partition as the gateway's login, as a partition
/// session has; collects the topics delivered.
fn gateway_witness(port: u16, seen: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut opts = rumqttc::MqttOptions::new("gw-permissions-witness", "127.0.0.1", port);
            opts.set_clean_session(false)
                .set_credentials(GATEWAY.0, GATEWAY.1);
            let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        client
                            .subscribe("fixtures/+/+/+", rumqttc::QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack))) => {
                        seen.lock()
                            .unwrap()
                            .push(format!("suback {:?}", ack.return_codes));
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        seen.lock().unwrap().push(p.topic.clone());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
    });
}

fn delivered(seen: &Arc<Mutex<Vec<String>>>, device: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|t| t.split('/').nth(2) == Some(device))
        .count()
}

#[test]
fn devices_publish_only_as_themselves_and_the_gateway_login_reads_every_partition() {
    let auth = nats_authorization(GATEWAY, &[DEVICE_A, DEVICE_B]);
    let nats = NatsCluster::start_with_authorization(&auth, GATEWAY).unwrap();
    let port = nats.nodes[0].mqtt_port;
    let seen = Arc::new(Mutex::new(Vec::new()));
    gateway_witness(port, Arc::clone(&seen));
    let subscribed = wait_until(
        Duration::from_secs(30),
        "the gateway login's SUBACK",
        || {
            seen.lock()
                .unwrap()
                .iter()
                .find(|t| t.starts_with("suback"))
                .cloned()
        },
    )
    .unwrap();
    assert!(
        subscribed.contains("Success(AtLeastOnce)"),
        "the gateway's login may subscribe QoS 1 to every partition: {subscribed}"
    );

    // Device A's own message reaches the gateway, under its partition's topic.
    let own = |round| {
        let (topic, payload) = telemetry_message(0, round, base_ts());
        assert_eq!(topic, format!("fixtures/{}/telemetry", DEVICE_A.0));
        (topic, payload)
    };
    let outcome = publish_as(port, "dev-a-1", Some(DEVICE_A), &[own(1)]).unwrap();
    assert_eq!(outcome, MqttOutcome::Acked);
    wait_until(
        Duration::from_secs(20),
        "device A's message delivered",
        || (delivered(&seen, DEVICE_A.0) >= 1).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", seen.lock().unwrap(), nats.log_tail(0)));
    let p = gateway::cluster::partition::partition_of(DEVICE_A.0, 64);
    assert!(
        seen.lock()
            .unwrap()
            .contains(&format!("fixtures/{p}/{}/telemetry", DEVICE_A.0)),
        "mapped to partition {p}: {:?}",
        seen.lock().unwrap()
    );

    // Device A publishing as device B: dropped by the broker. Then one more of its own; once
    // that one is delivered, the spoofed one (published before it) would have been too.
    let (spoof_topic, spoof_payload) = telemetry_message(3, 1, base_ts());
    assert_eq!(spoof_topic, format!("fixtures/{}/telemetry", DEVICE_B.0));
    let spoofed = publish_as(
        port,
        "dev-a-2",
        Some(DEVICE_A),
        &[(spoof_topic, spoof_payload)],
    )
    .unwrap();
    println!("device A publishing as device B: {spoofed:?}");
    let outcome = publish_as(port, "dev-a-3", Some(DEVICE_A), &[own(2)]).unwrap();
    assert_eq!(outcome, MqttOutcome::Acked);
    wait_until(Duration::from_secs(20), "device A's second message", || {
        (delivered(&seen, DEVICE_A.0) >= 2).then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        delivered(&seen, DEVICE_B.0),
        0,
        "a device cannot publish as another: {:?}",
        seen.lock().unwrap()
    );
    assert!(
        (0..3).any(|i| nats.log_tail(i).contains("Publish Violation")),
        "the broker logs the violation"
    );

    // Device B itself may.
    let (topic_b, payload_b) = telemetry_message(3, 2, base_ts());
    let outcome = publish_as(port, "dev-b-1", Some(DEVICE_B), &[(topic_b, payload_b)]).unwrap();
    assert_eq!(outcome, MqttOutcome::Acked);
    wait_until(Duration::from_secs(20), "device B's own message", || {
        (delivered(&seen, DEVICE_B.0) == 1).then_some(())
    })
    .unwrap();

    // A wrong password and an anonymous login are refused.
    let wrong = publish_as(port, "dev-a-4", Some((DEVICE_A.0, "not-it")), &[own(3)]).unwrap();
    assert!(matches!(wrong, MqttOutcome::Refused(_)), "{wrong:?}");
    let anonymous = publish_as(port, "anon", None, &[own(4)]).unwrap();
    assert!(
        matches!(anonymous, MqttOutcome::Refused(_)),
        "{anonymous:?}"
    );
}
