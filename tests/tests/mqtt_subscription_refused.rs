//! A subscription the broker refuses is counted, logged and retried until the broker
//! takes it, against real Mosquitto with the dynamic-security plugin: the gateway's role
//! starts without its subscribe permission (the SUBACK says failure), the operator grants
//! it, and the gateway's next retry subscribes, so a device's message is stored without a
//! restart. (nats-server 2.9.10 refuses subscriptions the same way when it times out
//! creating their JetStream consumer under load: a clustered partition that kept its
//! refused subscription delivered nothing, issue #15.)

use std::time::Duration;

use e2e_tests::dynsec::{publish_as, DynsecBroker, MqttOutcome};
use e2e_tests::*;

#[test]
fn a_refused_subscription_is_counted_logged_and_retried_until_granted() {
    let work = tempfile::tempdir().unwrap();
    let broker = DynsecBroker::start().unwrap();
    broker
        .ctrl(&["removeRoleACL", "gateway", "subscribePattern", "fixtures/#"])
        .unwrap();
    // A device login that may publish its fleet's topics.
    broker.ctrl(&["createRole", "device"]).unwrap();
    broker
        .ctrl(&[
            "addRoleACL",
            "device",
            "publishClientSend",
            "fixtures/#",
            "allow",
        ])
        .unwrap();
    broker
        .ctrl(&["createClient", "dev-1", "-p", "dev-pass"])
        .unwrap();
    broker.ctrl(&["addClientRole", "dev-1", "device"]).unwrap();

    let gw = broker
        .spawn_gateway(work.path(), &StoreTarget::Sqlite, "gw-refused", "")
        .unwrap();
    let refused = |gw: &GatewayProcess| {
        gw.metrics()
            .ok()
            .and_then(|m| m["mqtt_subscriptions_refused"].as_u64())
    };
    wait_until(Duration::from_secs(30), "a refused subscription", || {
        refused(&gw).filter(|n| *n >= 1)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    assert!(
        gw.log_text().contains("refused the subscription"),
        "the refusal is logged: {}",
        gw.log_tail()
    );
    assert_eq!(
        gw.metrics().unwrap()["accepted"].as_u64(),
        Some(0),
        "nothing delivered yet"
    );

    // The operator grants the permission: the next retry (at most a few seconds on) takes.
    broker
        .ctrl(&[
            "addRoleACL",
            "gateway",
            "subscribePattern",
            "fixtures/#",
            "allow",
        ])
        .unwrap();
    let mut round = 1;
    wait_until(Duration::from_secs(60), "a device message accepted", || {
        let message = telemetry_message(0, round, base_ts());
        round += 1;
        let outcome = publish_as(
            broker.port(),
            "dev-1",
            Some(("dev-1", "dev-pass")),
            &[message],
        );
        assert_eq!(outcome.unwrap(), MqttOutcome::Acked);
        std::thread::sleep(Duration::from_millis(500));
        gw.metrics()
            .ok()?
            .get("accepted")?
            .as_u64()
            .filter(|n| *n >= 1)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    let settled = refused(&gw).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        refused(&gw),
        Some(settled),
        "no more refusals once the subscription took"
    );
}
