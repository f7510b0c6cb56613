//! The MQTT task stops when asked even while the broker keeps it busy: its loop polls the
//! connection first (most polls return a publish already read), so the stop must not wait
//! for a quiet moment that a backlog never gives. A broker of a few lines (MQTT 3.1.1 from
//! the specification's bytes, on loopback) floods QoS 0 publishes from its own thread until
//! the connection closes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::ingest::mqtt::{run, Session};
use gateway::metrics::Metrics;
use rumqttc::{AsyncClient, MqttOptions};
use tokio::sync::{mpsc, watch};

const TOPIC: &[u8] = b"fixtures/t-1/telemetry";

/// A QoS 0 PUBLISH of one byte: `0x30`, remaining length, topic, payload.
fn publish() -> Vec<u8> {
    let mut p = vec![0x30, (2 + TOPIC.len() + 1) as u8, 0, TOPIC.len() as u8];
    p.extend_from_slice(TOPIC);
    p.push(b'x');
    p
}

/// Accepts one client, answers its CONNECT, then writes publishes until the connection
/// closes; `flooding` is true while it writes.
fn flooding_broker(listener: TcpListener, flooding: Arc<AtomicBool>) {
    let (mut stream, _) = listener.accept().expect("accept");
    let mut connect = [0u8; 2];
    stream.read_exact(&mut connect).expect("CONNECT header");
    assert_eq!(connect[0], 0x10, "CONNECT first");
    let mut body = vec![0u8; usize::from(connect[1])];
    stream.read_exact(&mut body).expect("CONNECT body");
    stream
        .write_all(&[0x20, 0x02, 0x00, 0x00])
        .expect("CONNACK");
    let burst: Vec<u8> = (0..1_000).flat_map(|_| publish()).collect();
    flooding.store(true, Ordering::SeqCst);
    while stream.write_all(&burst).is_ok() {}
    flooding.store(false, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_task_stops_when_asked_while_the_broker_floods_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let flooding = Arc::new(AtomicBool::new(false));
    let broker = std::thread::spawn({
        let flooding = Arc::clone(&flooding);
        move || flooding_broker(listener, flooding)
    });

    let mut opts = MqttOptions::new("stop-under-flood", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, eventloop) = AsyncClient::new(opts, 1024);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let task = tokio::spawn(run(
        client,
        eventloop,
        tx,
        Arc::new(AtomicU64::new(0)),
        Arc::clone(&metrics),
        stop_rx,
        Session::single_node(),
    ));

    // Well into the flood: 20 000 publishes forwarded.
    let mut forwarded = 0;
    while forwarded < 20_000 {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("publishes keep coming")
            .expect("the MQTT task is running");
        forwarded += 1;
    }
    assert!(
        flooding.load(Ordering::SeqCst),
        "the broker is still flooding"
    );
    let asked = Instant::now();
    stop.send(true).unwrap();
    let received_when_asked = metrics.received.load(Ordering::SeqCst);
    // Keep draining, as the pipeline would, so nothing waits on the channel.
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the MQTT task stopped within 5 s of being asked, flood or not")
        .unwrap();
    let took = asked.elapsed();
    let after = metrics.received.load(Ordering::SeqCst) - received_when_asked;
    drain.await.unwrap();
    broker.join().unwrap();
    // With the stop looked at on every turn, at most the publish being handled when it was
    // asked; waiting for a pause in the flood let thousands through.
    assert!(
        after <= 2,
        "{after} publishes were received after the stop (in {took:?}): it waited for the flood to pause"
    );
}
