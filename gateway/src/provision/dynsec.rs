//! A client of Mosquitto's dynamic-security plugin over MQTT: JSON commands published to
//! `$CONTROL/dynamic-security/v1`, answers read from `.../v1/response`.
//!
//! Why the topic and not `mosquitto_ctrl`: the gateway already speaks MQTT (rumqttc), the
//! host running it need not have the Mosquitto tools, the password never appears on a
//! command line (`ps`), and one message carries a batch of commands (hundreds of devices
//! per round trip, one save of the plugin's JSON file per batch instead of one per command).
//!
//! Each device gets a role `device-{id}` that may publish only `fixtures/{id}/#`, subscribe
//! only to `fixtures/{id}/cmd` and receive nothing else, and a client named after the device
//! holding that role, with a generated password.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::{json, Value};

use super::{BrokerAdmin, DeviceCredential, ProvisionError};

/// Where commands go.
pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Where answers come from.
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// Devices per command message.
pub const DEVICES_PER_BATCH: usize = 100;
/// Longest wait for an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The role name of a device.
pub fn role_name(device_id: &str) -> String {
    format!("device-{device_id}")
}

/// The ACLs of a device's role: publish its own subtree, subscribe to and receive only
/// its own command topic.
pub fn device_acls(device_id: &str) -> Value {
    json!([
        {"acltype": "publishClientSend", "topic": format!("fixtures/{device_id}/#"), "priority": 0, "allow": true},
        {"acltype": "subscribeLiteral", "topic": format!("fixtures/{device_id}/cmd"), "priority": 0, "allow": true},
        {"acltype": "publishClientReceive", "topic": format!("fixtures/{device_id}/cmd"), "priority": 1, "allow": true},
        {"acltype": "publishClientReceive", "topic": "#", "priority": -1, "allow": false}
    ])
}

/// A random password: 18 bytes from the thread's CSPRNG (seeded by the OS), base64url.
pub fn generate_password() -> String {
    use base64::Engine as _;
    use rand::RngCore;
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An admin connection to the plugin.
pub struct Dynsec {
    client: AsyncClient,
    eventloop: EventLoop,
    session: String,
    batch: u64,
}

/// One command to send: the device it concerns, and errors that mean "already so".
struct Command {
    device: String,
    body: Value,
    tolerated: &'static [&'static str],
}

impl Dynsec {
    /// Connects as the plugin's admin and subscribes to the answers.
    pub async fn connect(admin: &BrokerAdmin) -> Result<Dynsec, ProvisionError> {
        let session = super::random_suffix();
        let mut opts = MqttOptions::new(
            format!("gateway-provision-{session}"),
            admin.host.clone(),
            admin.port,
        );
        opts.set_credentials(admin.username.clone(), admin.password.clone())
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        let broker = format!("{}:{}", admin.host, admin.port);
        let connected = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                        return Err(ProvisionError::AdminRefused(format!("{code:?}")))
                    }
                    Err(e) => {
                        return Err(ProvisionError::Broker(format!(
                            "cannot connect to {broker}: {e}"
                        )))
                    }
                }
            }
        })
        .await
        .map_err(|_| ProvisionError::Broker("no answer to CONNECT within 10 s".into()))?;
        connected?;
        client
            .subscribe(RESPONSE_TOPIC, QoS::AtLeastOnce)
            .await
            .map_err(|e| ProvisionError::Broker(e.to_string()))?;
        let subscribed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        return Ok(ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_))))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(ProvisionError::Broker(e.to_string())),
                }
            }
        })
        .await
        .map_err(|_| ProvisionError::Broker("no answer to SUBSCRIBE within 10 s".into()))??;
        if !subscribed {
            return Err(ProvisionError::AdminRefused(format!(
                "it may not subscribe to {RESPONSE_TOPIC}: the user is not the plugin's admin"
            )));
        }
        Ok(Dynsec {
            client,
            eventloop,
            session,
            batch: 0,
        })
    }

    /// Sends `commands` in one message and checks every answer.
    async fn run(&mut self, commands: Vec<Command>) -> Result<(), ProvisionError> {
        if commands.is_empty() {
            return Ok(());
        }
        self.batch += 1;
        let prefix = format!("{}-{}-", self.session, self.batch);
        let bodies: Vec<Value> = commands
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut body = c.body.clone();
                body["correlationData"] = Value::String(format!("{prefix}{i}"));
                body
            })
            .collect();
        let payload = serde_json::to_vec(&json!({ "commands": bodies }))
            .map_err(|e| ProvisionError::Broker(e.to_string()))?;
        self.client
            .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| ProvisionError::Broker(e.to_string()))?;
        let eventloop = &mut self.eventloop;
        let answers = tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == RESPONSE_TOPIC => {
                        let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else {
                            continue;
                        };
                        let Some(responses) = v["responses"].as_array() else {
                            continue;
                        };
                        let ours = responses.iter().any(|r| {
                            r["correlationData"]
                                .as_str()
                                .is_some_and(|c| c.starts_with(&prefix))
                        });
                        if ours {
                            return Ok(responses.clone());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(ProvisionError::Broker(e.to_string())),
                }
            }
        })
        .await
        .map_err(|_| {
            ProvisionError::Broker(format!(
                "no answer from the dynamic-security plugin within {ANSWER_TIMEOUT:?}: is it loaded (plugin .../mosquitto_dynamic_security.so)?"
            ))
        })??;
        if answers.len() != commands.len() {
            return Err(ProvisionError::Broker(format!(
                "{} answers to {} commands",
                answers.len(),
                commands.len()
            )));
        }
        for (c, a) in commands.iter().zip(&answers) {
            if let Some(error) = a["error"].as_str() {
                if !c.tolerated.contains(&error) {
                    return Err(ProvisionError::Command {
                        command: c.body["command"].as_str().unwrap_or("?").to_owned(),
                        device: c.device.clone(),
                        error: error.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Creates (or re-creates) the role and client of each device in one command message
    /// (callers send at most [`DEVICES_PER_BATCH`] devices at a time); returns the
    /// credentials, in order. A client or role left by an earlier attempt is replaced, so
    /// the returned password is the one in force.
    pub async fn provision(
        &mut self,
        device_ids: &[String],
    ) -> Result<Vec<DeviceCredential>, ProvisionError> {
        let mut out = Vec::with_capacity(device_ids.len());
        let mut commands = Vec::with_capacity(device_ids.len() * 4);
        for id in device_ids {
            let role = role_name(id);
            let password = generate_password();
            commands.push(Command {
                device: id.clone(),
                body: json!({"command": "deleteClient", "username": id}),
                tolerated: &["Client not found"],
            });
            commands.push(Command {
                device: id.clone(),
                body: json!({"command": "deleteRole", "rolename": role}),
                tolerated: &["Role not found"],
            });
            commands.push(Command {
                device: id.clone(),
                body: json!({
                    "command": "createRole", "rolename": role,
                    "textdescription": format!("fixture {id}: publish fixtures/{id}/#, read fixtures/{id}/cmd"),
                    "acls": device_acls(id)
                }),
                tolerated: &[],
            });
            commands.push(Command {
                device: id.clone(),
                body: json!({
                    "command": "createClient", "username": id, "password": password,
                    "textname": format!("fixture {id}"),
                    "roles": [{"rolename": role}]
                }),
                tolerated: &[],
            });
            out.push(DeviceCredential {
                device_id: id.clone(),
                username: id.clone(),
                password,
            });
        }
        self.run(commands).await?;
        Ok(out)
    }

    /// Disables the device's client (the broker disconnects it at once), then deletes the
    /// client and its role. Missing ones are fine: revoking is idempotent.
    pub async fn revoke(&mut self, device_id: &str) -> Result<(), ProvisionError> {
        let d = device_id.to_owned();
        self.run(vec![
            Command {
                device: d.clone(),
                body: json!({"command": "disableClient", "username": device_id}),
                tolerated: &["Client not found"],
            },
            Command {
                device: d.clone(),
                body: json!({"command": "deleteClient", "username": device_id}),
                tolerated: &["Client not found"],
            },
            Command {
                device: d,
                body: json!({"command": "deleteRole", "rolename": role_name(device_id)}),
                tolerated: &["Role not found"],
            },
        ])
        .await
    }

    /// Disconnects politely.
    pub async fn close(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(500), self.eventloop.poll()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_url_safe() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn a_role_reaches_only_its_own_device() {
        let acls = device_acls("toilet-1");
        let topics: Vec<(&str, &str, bool)> = acls
            .as_array()
            .expect("array")
            .iter()
            .map(|a| {
                (
                    a["acltype"].as_str().unwrap_or(""),
                    a["topic"].as_str().unwrap_or(""),
                    a["allow"].as_bool().unwrap_or(true),
                )
            })
            .collect();
        assert!(topics.contains(&("publishClientSend", "fixtures/toilet-1/#", true)));
        assert!(topics.contains(&("subscribeLiteral", "fixtures/toilet-1/cmd", true)));
        assert!(topics.contains(&("publishClientReceive", "#", false)));
        assert!(topics
            .iter()
            .all(|t| t.1 == "#" || t.1.starts_with("fixtures/toilet-1/")));
    }
}
