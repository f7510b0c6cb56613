//! The MQTT client's acknowledgements, on the wire: a batch's PUBACKs leave in arrival order
//! and in a handful of `write` calls, not one each (the vendored rumqttc's one change,
//! `vendor/rumqttc/VENDORED.md`). A broker of a few lines speaks MQTT 3.1.1 from the
//! specification's bytes on loopback; the process's write calls come from `/proc/self/io`.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PUBLISHES: u16 = 500;
const TOPIC: &[u8] = b"fixtures/t-1/telemetry";

/// Reads one packet (fixed header, remaining length, body) and returns its first byte.
async fn read_packet(stream: &mut TcpStream) -> u8 {
    let kind = stream.read_u8().await.expect("packet type");
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = stream.read_u8().await.expect("remaining length");
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.expect("packet body");
    kind
}

/// QoS 1 PUBLISH of one byte: `0x32`, remaining length, topic, packet id, payload.
fn publish(pkid: u16) -> Vec<u8> {
    let mut p = vec![0x32, (2 + TOPIC.len() + 2 + 1) as u8, 0, TOPIC.len() as u8];
    p.extend_from_slice(TOPIC);
    p.extend_from_slice(&pkid.to_be_bytes());
    p.push(b'x');
    p
}

/// A broker that accepts one client, sends it `PUBLISHES` QoS 1 messages and returns the
/// packet ids of the PUBACKs it gets back, in the order they arrived.
async fn broker(listener: TcpListener) -> Vec<u16> {
    let (mut stream, _) = listener.accept().await.expect("accept");
    assert_eq!(read_packet(&mut stream).await, 0x10, "CONNECT first");
    stream
        .write_all(&[0x20, 0x02, 0x00, 0x00])
        .await
        .expect("CONNACK");
    let burst: Vec<u8> = (1..=PUBLISHES).flat_map(publish).collect();
    stream.write_all(&burst).await.expect("PUBLISH burst");
    let mut acks = vec![0u8; 4 * usize::from(PUBLISHES)];
    stream.read_exact(&mut acks).await.expect("PUBACKs");
    acks.chunks(4)
        .map(|a| {
            assert_eq!(&a[..2], &[0x40, 0x02], "a PUBACK");
            u16::from_be_bytes([a[2], a[3]])
        })
        .collect()
}

/// `syscw` of this process: write-type system calls so far.
fn write_calls() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("syscw in /proc/self/io")
}

#[tokio::test]
async fn a_batch_of_pubacks_leaves_in_order_in_a_few_writes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let broker = tokio::spawn(broker(listener));

    let mut opts = MqttOptions::new("puback-batching", "127.0.0.1", port);
    opts.set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);

    let mut received = Vec::new();
    while received.len() < usize::from(PUBLISHES) {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => received.push(p),
            Ok(Ok(_)) => {}
            other => panic!("while receiving the burst: {other:?}"),
        }
    }

    // The pipeline's way: one durable batch, all its acknowledgements queued at once.
    let before = write_calls();
    for p in &received {
        client.ack(p).await.unwrap();
    }
    let mut sent = 0;
    while sent < PUBLISHES {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(Outgoing::PubAck(_)))) => sent += 1,
            Ok(Ok(_)) => {}
            other => panic!("while acknowledging: {other:?}"),
        }
    }
    let writes = write_calls() - before;

    let acked = tokio::time::timeout(Duration::from_secs(10), broker)
        .await
        .expect("the broker got every PUBACK")
        .unwrap();
    let expected: Vec<u16> = (1..=PUBLISHES).collect();
    assert_eq!(
        acked, expected,
        "PUBACKs in the order the PUBLISHes arrived"
    );
    assert!(
        writes <= 20,
        "{PUBLISHES} queued PUBACKs took {writes} write calls (upstream rumqttc: one each)"
    );
}
