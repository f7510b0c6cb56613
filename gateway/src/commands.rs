//! Remote commands, the gateway's side: the dispatcher that publishes the maintenance
//! engine's queued commands on `fixtures/{id}/cmd` (QoS 1, through the gateway's own MQTT
//! client) and marks them sent, and the decoding of the devices' answers on
//! `fixtures/{id}/result`, which the ingest batch hands to the engine before the answer is
//! acknowledged (like every other device report).
//!
//! Answers travel beside the v1 channels (they carry no sequence number and feed no
//! analytics): [`decode_result`] recognises the topic before [`crate::decode`] runs. A
//! malformed answer is a dead letter with its reason, like any bad message.

use std::sync::Arc;
use std::time::Duration;

use protocol::message::CommandResult;
use protocol::topic::{Channel, Topic};
use protocol::validate::{self, Limits};
use protocol::MAX_PAYLOAD_BYTES;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::watch;

use crate::decode::Rejection;
use crate::store::{FieldValue, Point};

/// A device's answer that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedResult {
    /// The device (from the topic, equal to the payload's).
    pub device_id: String,
    /// The answer.
    pub result: CommandResult,
    /// What to store: one `command` point (tags `device_id`, `status`; fields `cmd_id`, and
    /// the diagnostics' numbers when present).
    pub point: Point,
}

/// `None` if `topic` is not a result topic; else the answer decoded and validated, or the
/// rejection with its reason code.
pub fn decode_result(
    topic: &str,
    payload: &[u8],
    now_ms: i64,
    limits: &Limits,
) -> Option<Result<AcceptedResult, Rejection>> {
    let parsed = protocol::topic::parse_result(topic)?;
    Some(decode_checked(parsed, payload, now_ms, limits))
}

fn reject(reason: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

fn decode_checked(
    parsed: Result<protocol::DeviceId, protocol::topic::TopicError>,
    payload: &[u8],
    now_ms: i64,
    limits: &Limits,
) -> Result<AcceptedResult, Rejection> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(reject(
            "payload_too_large",
            format!("{} bytes, the limit is {MAX_PAYLOAD_BYTES}", payload.len()),
        ));
    }
    let device_id = parsed.map_err(|e| reject(e.code(), e.to_string()))?;
    let result: CommandResult = serde_json::from_slice(payload).map_err(|e| {
        let reason = match e.classify() {
            serde_json::error::Category::Data => "schema_mismatch",
            _ if e.to_string().starts_with("number out of range") => "schema_mismatch",
            _ => "malformed_json",
        };
        reject(reason, e.to_string())
    })?;
    validate::check_command_result(&result, &device_id, now_ms, limits)
        .map_err(|e| reject(e.code(), e.to_string()))?;
    let mut fields: Vec<(crate::store::Name, FieldValue)> =
        vec![("cmd_id".into(), FieldValue::Int(i64::from(result.cmd_id)))];
    if let Some(d) = &result.diagnostics {
        fields.push((
            "active_faults".into(),
            FieldValue::Int(d.active.len() as i64),
        ));
        fields.push(("sensors_ok".into(), FieldValue::Bool(d.sensors_ok)));
        if let Some(p) = d.flow_permille {
            fields.push(("flow_permille".into(), FieldValue::Int(i64::from(p))));
        }
        if let Some(open) = d.inlet_valve_open {
            fields.push(("inlet_valve_open".into(), FieldValue::Bool(open)));
        }
    }
    let point = Point {
        measurement: "command".into(),
        tags: vec![
            ("device_id".into(), device_id.to_string().into()),
            ("status".into(), result.status.as_str().into()),
        ],
        fields,
        ts_ms: result.ts,
    };
    Ok(AcceptedResult {
        device_id: device_id.to_string(),
        result,
        point,
    })
}

/// Most commands published per round.
const BATCH: usize = 100;

/// Publishes due commands every `interval` until `shutdown` flips: each goes out on
/// `fixtures/{id}/cmd` with QoS 1 and is marked sent once the client took it (the
/// persistent session delivers it; the engine sends it again, same id, if the device
/// does not answer). Expiry is the engine's tick.
pub async fn run_dispatcher(
    engine: Arc<maintenance::Engine>,
    client: AsyncClient,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        let now = crate::clock::now_ms();
        let due = {
            let engine = Arc::clone(&engine);
            tokio::task::spawn_blocking(move || engine.commands_due(now, BATCH)).await
        };
        let due = match due {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Cannot read the queued commands; will retry.");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Command dispatch task failed; will retry.");
                continue;
            }
        };
        for c in due {
            let topic = Topic::format(&c.device_id, Channel::Cmd).to_string();
            let payload = match serde_json::to_vec(&c.command) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(cmd_id = c.id, error = %e, "Cannot encode a command.");
                    continue;
                }
            };
            // Never waits on a full request queue: the command stays due for the next round.
            if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
                tracing::warn!(cmd_id = c.id, device = %c.device_id, error = %e, "Cannot queue a command for the broker; will retry.");
                break;
            }
            let engine = Arc::clone(&engine);
            let id = c.id;
            match tokio::task::spawn_blocking(move || engine.command_sent(id, now)).await {
                Ok(Ok(())) => {
                    tracing::info!(cmd_id = c.id, device = %c.device_id, command = c.command.command.as_str(), "Command sent.");
                }
                Ok(Err(e)) => {
                    tracing::warn!(cmd_id = c.id, error = %e, "Command sent but not marked; it will be sent again (the device ignores a repeat).")
                }
                Err(e) => {
                    tracing::warn!(cmd_id = c.id, error = %e, "Command bookkeeping task failed.")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    #[test]
    fn answers_decode_to_a_point_and_bad_ones_get_a_reason() {
        let ok = br#"{"v":1,"device_id":"toilet-1","cmd_id":7,"ts":1764000000000,"status":"ok","diagnostics":{"active":["inlet_clog"],"log":[],"boot_id":2,"sessions":9,"water_ml":1000,"storage_failures":0,"sensors_ok":true,"flow_permille":480,"pressure_kpa":310.0}}"#;
        let a = decode_result("fixtures/toilet-1/result", ok, NOW, &Limits::default())
            .expect("a result topic")
            .expect("valid");
        assert_eq!((a.device_id.as_str(), a.result.cmd_id), ("toilet-1", 7));
        assert_eq!(a.point.measurement, "command");
        assert!(a
            .point
            .fields
            .contains(&("flow_permille".into(), FieldValue::Int(480))));
        assert!(decode_result("fixtures/toilet-1/event", ok, NOW, &Limits::default()).is_none());
        let reason = |topic: &str, payload: &[u8]| {
            decode_result(topic, payload, NOW, &Limits::default())
                .expect("a result topic")
                .expect_err("rejected")
                .reason
        };
        assert_eq!(reason("fixtures/toilet-2/result", ok), "device_id_mismatch");
        assert_eq!(reason("fixtures/Bad!/result", ok), "topic_device_id");
        assert_eq!(
            reason("fixtures/toilet-1/result", b"{nope"),
            "malformed_json"
        );
        assert_eq!(
            reason(
                "fixtures/toilet-1/result",
                br#"{"v":1,"device_id":"toilet-1","cmd_id":7,"ts":1764000000000,"status":"maybe"}"#
            ),
            "schema_mismatch"
        );
        assert_eq!(
            reason(
                "fixtures/toilet-1/result",
                br#"{"v":2,"device_id":"toilet-1","cmd_id":7,"ts":1764000000000,"status":"ok"}"#
            ),
            "schema_version"
        );
        assert_eq!(
            reason("fixtures/toilet-1/result", &vec![b' '; 5000]),
            "payload_too_large"
        );
    }
}
