//! Hostile and broken input: each of more than 40 bad messages is acknowledged,
//! rejected with its reason in the dead-letter store, and counted, while good
//! traffic around it is stored intact. (Issue #2.)

use std::time::Duration;

use e2e_tests::*;

const DB: &str = "bad_input";

fn good_toilet(id: &str, ts: i64) -> String {
    format!(
        r#"{{"v":1,"device_id":"{id}","boot_id":1,"seq":1,"ts":{ts},"reading":{{"toilet":{{"seat_sessions":1,"washes":1,"wash_seconds":20,"flushes":1,"water_ml":4500,"heater_wh":2,"water_temp_c":36.5,"seat_temp_c":34.0}}}}}}"#
    )
}

/// `(topic, payload, expected reason)` for every bad input.
fn corpus(now: i64) -> Vec<(String, Vec<u8>, &'static str)> {
    let t = |id: &str| format!("fixtures/{id}/telemetry");
    let e = |id: &str| format!("fixtures/{id}/event");
    let s = |id: &str| format!("fixtures/{id}/status");
    let ok = good_toilet("bad-0", now);
    let edit = |from: &str, to: &str| ok.replacen(from, to, 1).into_bytes();
    let mut deep = "[".repeat(2000);
    deep.push_str(&"]".repeat(2000));
    let purifier = |cartridges: &str| {
        format!(r#"{{"v":1,"device_id":"bad-0","boot_id":1,"seq":1,"ts":{now},"reading":{{"purifier":{{"dispensed_ml":1,"tds_in_ppm":300,"tds_out_ppm":10,"inlet_pressure_kpa":250.0,"pump_seconds":1,"cartridges":[{cartridges}]}}}}}}"#).into_bytes()
    };
    let cart = |slot: u8| {
        format!(r#"{{"slot":{slot},"kind":"carbon","ml_since_replacement":1,"replacements":0}}"#)
    };
    let session = |started: i64, duration: u32| {
        format!(r#"{{"v":1,"device_id":"bad-0","boot_id":1,"seq":2,"ts":{now},"event":{{"session":{{"kind":"wash","started_ts":{started},"duration_s":{duration},"water_ml":500}}}}}}"#).into_bytes()
    };
    let session_temp = |temp: &str| {
        format!(r#"{{"v":1,"device_id":"bad-0","boot_id":1,"seq":2,"ts":{now},"event":{{"session":{{"kind":"shower","started_ts":{},"duration_s":90,"water_ml":500,"temp_c":{temp}}}}}}}"#, now - 100_000).into_bytes()
    };
    let fault = |code: &str| {
        format!(r#"{{"v":1,"device_id":"bad-0","boot_id":1,"seq":3,"ts":{now},"event":{{"fault":{{"code":"{code}","severity":"major","state":"raised"}}}}}}"#).into_bytes()
    };
    vec![
        (t("bad-0"), b"{not json".to_vec(), "malformed_json"),
        (t("bad-0"), Vec::new(), "malformed_json"),
        (t("bad-0"), b"null".to_vec(), "schema_mismatch"),
        (t("bad-0"), b"[]".to_vec(), "schema_mismatch"),
        (t("bad-0"), b"\"telemetry\"".to_vec(), "schema_mismatch"),
        (t("bad-0"), b"{}".to_vec(), "schema_mismatch"),
        (
            t("bad-0"),
            edit("\"v\":1", "\"v\":\"1\""),
            "schema_mismatch",
        ),
        (t("bad-0"), edit("\"v\":1", "\"v\":2"), "schema_version"),
        (
            t("bad-0"),
            edit("\"seq\":1", "\"seq\":-1"),
            "schema_mismatch",
        ),
        (
            t("bad-0"),
            edit("\"seq\":1", "\"seq\":\"1\""),
            "schema_mismatch",
        ),
        (
            t("bad-0"),
            edit("\"seq\":1", "\"seq\":4294967296"),
            "schema_mismatch",
        ),
        (
            t("bad-0"),
            edit(&format!("\"ts\":{now}"), &format!("\"ts\":{}.5", now)),
            "schema_mismatch",
        ),
        (
            t("bad-0"),
            edit(
                &format!("\"ts\":{now}"),
                &format!("\"ts\":{}", now + 3_600_000),
            ),
            "timestamp_in_future",
        ),
        (
            t("bad-0"),
            edit(&format!("\"ts\":{now}"), "\"ts\":0"),
            "timestamp_too_old",
        ),
        (
            t("bad-0"),
            edit(&format!("\"ts\":{now}"), "\"ts\":978307200000"),
            "timestamp_too_old",
        ),
        (t("bad-0"), edit("36.5", "NaN"), "malformed_json"),
        (t("bad-0"), edit("36.5", "Infinity"), "malformed_json"),
        // Contract v1.1: an out-of-range telemetry gauge no longer rejects the message
        // (the field is marked invalid and dropped, the counters kept); a session's
        // temperature is still judged strictly.
        (e("bad-0"), session_temp("1e39"), "not_finite"),
        (e("bad-0"), session_temp("-500.0"), "out_of_range"),
        (
            t("bad-0"),
            edit("\"water_ml\":4500", "\"water_ml\":-4500"),
            "schema_mismatch",
        ),
        (
            t("bad-0"),
            edit("\"water_ml\":4500", "\"water_ml\":900000000000000"),
            "out_of_range",
        ),
        (
            t("bad-0"),
            edit("\"device_id\":\"bad-0\"", "\"device_id\":\"victim-1\""),
            "device_id_mismatch",
        ),
        (
            t("bad-0"),
            edit(
                "\"device_id\":\"bad-0\"",
                "\"device_id\":\"bad-0\\\",x=1 y=2\"",
            ),
            "device_id_mismatch",
        ),
        (
            t("bad-0"),
            edit("\"v\":1", "\"v\":1,\"admin\":true"),
            "schema_mismatch",
        ),
        (
            t("bad-0"),
            edit("\"toilet\"", "\"oven\""),
            "schema_mismatch",
        ),
        (
            t("bad-0"),
            edit("\"v\":1", "\"v\":1,\"fw\":\"01234567890123456789\""),
            "schema_mismatch",
        ),
        (
            t("bad-0"),
            format!("{ok}garbage").into_bytes(),
            "malformed_json",
        ),
        (t("bad-0"), vec![0xff, 0xfe, b'{', b'}'], "malformed_json"),
        (t("bad-0"), deep.into_bytes(), "schema_mismatch"),
        (
            t("bad-0"),
            vec![b'x'; 10 * 1024 * 1024],
            "payload_too_large",
        ),
        (
            t("bad-0"),
            format!("{ok}{}", " ".repeat(5000)).into_bytes(),
            "payload_too_large",
        ),
        (t("Bad-0"), ok.clone().into_bytes(), "topic_device_id"),
        (t("bad,0=x y"), ok.clone().into_bytes(), "topic_device_id"),
        (t("bad\"0"), ok.clone().into_bytes(), "topic_device_id"),
        (t("bad\\0"), ok.clone().into_bytes(), "topic_device_id"),
        (
            t("'; DROP TABLE dead_letters; --"),
            ok.clone().into_bytes(),
            "topic_device_id",
        ),
        (
            t(&"a".repeat(33)),
            ok.clone().into_bytes(),
            "topic_device_id",
        ),
        (e("bad-0"), ok.clone().into_bytes(), "schema_mismatch"),
        (
            t("bad-0"),
            purifier(&format!("{},{}", cart(1), cart(1))),
            "duplicate_slot",
        ),
        (
            t("bad-0"),
            purifier(&[cart(0), cart(1), cart(2), cart(3), cart(4)].join(",")),
            "schema_mismatch",
        ),
        (t("bad-0"), purifier(&cart(9)), "out_of_range"),
        (
            t("bad-0"),
            String::from_utf8(purifier(""))
                .unwrap_or_default()
                .replace("\"tds_in_ppm\":300", "\"tds_in_ppm\":70000")
                .into_bytes(),
            "schema_mismatch",
        ),
        (e("bad-0"), session(now + 1000, 10), "session_timing"),
        (e("bad-0"), session(now - 100_000, 90_000), "out_of_range"),
        (e("bad-0"), fault("self_destruct"), "schema_mismatch"),
        (
            s("bad-0"),
            format!(
                r#"{{"v":1,"device_id":"bad-0","ts":{now},"state":"online","model":"kettle"}}"#
            )
            .into_bytes(),
            "schema_mismatch",
        ),
    ]
}

#[test]
fn every_bad_input_is_dead_lettered_with_its_reason_while_good_traffic_flows() {
    let work = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let influx = Influx::start().unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Influx {
            url: influx.url(),
            db: DB.into(),
        },
        "gw-bad-input",
        "",
    )
    .unwrap();

    let now = gateway::clock::now_ms() - 60_000;
    let bad = corpus(now);
    assert!(bad.len() >= 40, "the corpus has {} inputs", bad.len());

    // Interleave: a good message from a healthy device before and after every bad one.
    let mut messages = Vec::new();
    let mut good = 0;
    for (topic, payload, _) in &bad {
        for _ in 0..2 {
            messages.push((
                "fixtures/good-1/telemetry".to_owned(),
                good_toilet("good-1", now + good * 1000).into_bytes(),
            ));
            good += 1;
        }
        messages.push((topic.clone(), payload.clone()));
    }
    // A valid message whose firmware string is hostile to line protocol: stored exactly.
    let hostile_fw = r#"1,x=\"y z\\"#;
    let hostile = good_toilet("good-2", now).replacen(
        "\"v\":1",
        &format!(
            "\"v\":1,\"fw\":{}",
            serde_json::to_string(hostile_fw).unwrap()
        ),
        1,
    );
    messages.push(("fixtures/good-2/telemetry".to_owned(), hostile.into_bytes()));

    let acked = publish_all(broker.port, "pub-bad-input", messages, None, None).unwrap();
    assert_eq!(
        acked,
        bad.len() + good as usize + 1,
        "every message, good or bad, is acknowledged"
    );

    let m = wait_until(
        Duration::from_secs(60),
        "every bad input to be counted",
        || {
            let m = gw.metrics().ok()?;
            (m["rejected"].as_u64()? >= bad.len() as u64 && m["accepted"].as_u64()? > good as u64)
                .then_some(m)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", gw.metrics().ok(), gw.log_tail()));
    assert_eq!(m["rejected"].as_u64().unwrap(), bad.len() as u64, "{m}");

    // Each bad input is in the dead-letter store, with its topic, raw bytes and the expected reason.
    // (Counters move when a batch is judged; dead letters land when it is committed, just after.)
    let mut letters = wait_until(
        Duration::from_secs(30),
        "the dead letters to be committed",
        || {
            let l = gw.dead_letters(1000).ok()?;
            (l.len() >= bad.len()).then_some(l)
        },
    )
    .unwrap();
    letters.reverse(); // oldest first, the order they were published in
    assert_eq!(letters.len(), bad.len());
    for ((topic, payload, reason), letter) in bad.iter().zip(&letters) {
        assert_eq!(letter["topic"].as_str().unwrap(), topic);
        assert_eq!(
            letter["reason"].as_str().unwrap(),
            *reason,
            "for payload {:?}: {letter}",
            String::from_utf8_lossy(&payload[..payload.len().min(200)])
        );
        assert_eq!(
            letter["payload_len"].as_u64().unwrap(),
            payload.len() as u64
        );
        assert!(!letter["detail"].as_str().unwrap().is_empty());
    }
    let by_reason = &m["rejected_by_reason"];
    assert_eq!(
        by_reason["malformed_json"].as_u64().unwrap(),
        bad.iter().filter(|b| b.2 == "malformed_json").count() as u64
    );

    // Good traffic is all there, and the hostile string came back byte for byte.
    assert_eq!(
        influx
            .sum_counts(
                DB,
                "SELECT count(seq) FROM toilet WHERE device_id = 'good-1'"
            )
            .unwrap(),
        good
    );
    let v = influx
        .query(DB, "SELECT fw FROM toilet WHERE device_id = 'good-2'")
        .unwrap();
    assert_eq!(
        v.pointer("/results/0/series/0/values/0/1")
            .and_then(|x| x.as_str()),
        Some(hostile_fw)
    );
    // Nothing from a bad input reached InfluxDB.
    assert_eq!(
        influx
            .sum_counts(
                DB,
                "SELECT count(seq) FROM toilet WHERE device_id = 'bad-0'"
            )
            .unwrap(),
        0
    );
    let measurements = influx.query(DB, "SHOW MEASUREMENTS").unwrap();
    let names: Vec<&str> = measurements
        .pointer("/results/0/series/0/values")
        .and_then(|v| v.as_array())
        .unwrap()
        .iter()
        .filter_map(|r| r[0].as_str())
        .collect();
    assert_eq!(names, vec!["toilet"], "no stray measurement was created");
}
