//! Mosquitto with the dynamic-security plugin on (as `deploy/mosquitto/dynsec.conf`), for the
//! provisioning tests: no anonymous access, an admin user for the plugin, and the gateway's
//! own client (`fixture-gateway`, made with `mosquitto_ctrl`, independently of the code
//! under test) that may read every fixture topic and write commands.
//!
//! Mosquitto started as root drops to the `mosquitto` user: its files live in the harness's
//! 0777 broker directory and the plugin's JSON file is made writable for it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::{GatewayProcess, Mosquitto, StoreTarget};

/// The plugin's admin user.
pub const ADMIN_USER: &str = "dynsec-admin";
/// The gateway's broker user.
pub const GATEWAY_USER: &str = "fixture-gateway";

/// Where Debian puts the plugin.
pub fn plugin_path() -> Result<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .ok_or_else(|| anyhow!("mosquitto_dynamic_security.so is not installed: `apt-get install -y mosquitto` (Debian ships it in the mosquitto package)"))
}

/// A broker with dynamic security, its admin and the gateway's credentials.
pub struct DynsecBroker {
    /// The broker (stopped when dropped).
    pub broker: Mosquitto,
    /// The admin's password.
    pub admin_password: String,
    /// The gateway client's password.
    pub gateway_password: String,
}

impl DynsecBroker {
    /// Initialises the plugin's file with `mosquitto_ctrl dynsec init`, starts Mosquitto and
    /// creates the gateway's client and role.
    pub fn start() -> Result<DynsecBroker> {
        let dir = crate::broker_dir()?;
        let port = crate::free_port();
        let admin_password = format!("admin-{}", crate::free_port());
        let gateway_password = format!("gw-{}", crate::free_port());
        let json = dir.path().join("dynamic-security.json");
        let ctrl = crate::require_binary("mosquitto_ctrl")?;
        let out = Command::new(&ctrl)
            .args(["dynsec", "init"])
            .arg(&json)
            .args([ADMIN_USER, &admin_password])
            .output()
            .context("mosquitto_ctrl dynsec init")?;
        if !out.status.success() {
            bail!(
                "mosquitto_ctrl dynsec init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&json, std::fs::Permissions::from_mode(0o666))
                .context("making the plugin's file writable for the mosquitto user")?;
        }
        let d = dir.path().display();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npersistence true\npersistence_location {d}/\n\
             autosave_interval 1\nmax_inflight_messages 10000\nmax_queued_messages 1000000\nmax_queued_bytes 0\n\
             plugin {}\nplugin_opt_config_file {}\n\
             log_dest file {d}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n",
            plugin_path()?.display(),
            json.display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf)?;
        let mut broker = Mosquitto {
            child: None,
            port,
            dir,
        };
        broker.launch()?;
        let b = DynsecBroker {
            broker,
            admin_password,
            gateway_password,
        };
        let gw = b.gateway_password.clone();
        b.ctrl(&["createRole", "gateway"])?;
        b.ctrl(&[
            "addRoleACL",
            "gateway",
            "subscribePattern",
            "fixtures/#",
            "allow",
        ])?;
        b.ctrl(&[
            "addRoleACL",
            "gateway",
            "publishClientSend",
            "fixtures/+/cmd",
            "allow",
        ])?;
        b.ctrl(&["createClient", GATEWAY_USER, "-p", &gw])?;
        b.ctrl(&["addClientRole", GATEWAY_USER, "gateway"])?;
        Ok(b)
    }

    /// The MQTT port.
    pub fn port(&self) -> u16 {
        self.broker.port
    }

    /// Runs `mosquitto_ctrl dynsec ARGS` as the admin.
    pub fn ctrl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(crate::require_binary("mosquitto_ctrl")?)
            .args(["-h", "127.0.0.1", "-p", &self.port().to_string()])
            .args(["-u", ADMIN_USER, "-P", &self.admin_password, "dynsec"])
            .args(args)
            .output()
            .context("running mosquitto_ctrl")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || text.contains("Error") {
            bail!("mosquitto_ctrl dynsec {args:?} failed: {text}");
        }
        Ok(text)
    }

    /// Writes the admin password into `dir/admin-password` (mode 0600) for
    /// `--broker-admin-password-file`; returns the path.
    pub fn admin_password_file(&self, dir: &Path) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("admin-password");
        std::fs::write(&path, format!("{}\n", self.admin_password))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(path)
    }

    /// The broker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.broker.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Starts the gateway (as [`GatewayProcess::spawn`]) logging in as `fixture-gateway`.
    pub fn spawn_gateway(
        &self,
        work_dir: &Path,
        store: &StoreTarget,
        client_id: &str,
        extra_toml: &str,
    ) -> Result<GatewayProcess> {
        use std::io::Write;
        let data_dir = work_dir.join("data");
        let http_port = crate::free_port();
        let store_toml = match store {
            StoreTarget::Influx { url, db } => format!("store = \"influx_v1\"\n[influx]\nurl = \"{url}\"\ndatabase = \"{db}\"\ntimeout_ms = 3000\n"),
            StoreTarget::Sqlite => "store = \"sqlite\"\n".to_owned(),
        };
        let config = work_dir.join("gateway.toml");
        let mut f = std::fs::File::create(&config)?;
        write!(
            f,
            "data_dir = \"{}\"\n{store_toml}[mqtt]\nbroker = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"\nclient_id = \"{client_id}\"\nusername = \"{GATEWAY_USER}\"\npassword = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n{extra_toml}",
            data_dir.display(),
            self.port(),
            self.gateway_password
        )?;
        let token = crate::gateway_cli(
            &config,
            &["tokens", "create", "--role", "operator", "--ttl-days", "2"],
        )?;
        let mut g = GatewayProcess {
            child: None,
            http_port,
            config,
            data_dir,
            log: work_dir.join("gateway.log"),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            token,
        };
        g.launch()?;
        Ok(g)
    }
}

/// How a login or a publish ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttOutcome {
    /// The broker refused the login (CONNACK with a refusal code).
    Refused(String),
    /// Logged in; the QoS 1 publishes were acknowledged (which, for MQTT 3.1.1, Mosquitto
    /// also does for a publish its ACL drops: only the subscribers can tell).
    Acked,
    /// The broker closed the connection.
    Closed(String),
}

/// Logs in as `user`/`password` (or anonymously) and publishes `messages` with QoS 1, one
/// after the other, each waiting for its PUBACK.
pub fn publish_as(
    port: u16,
    client_id: &str,
    login: Option<(&str, &str)>,
    messages: &[(String, Vec<u8>)],
) -> Result<MqttOutcome> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30));
        if let Some((u, p)) = login {
            opts.set_credentials(u, p);
        }
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
        let step = |what: &'static str| {
            let what = what.to_owned();
            move |_| anyhow!("timed out waiting for {what}")
        };
        // The login.
        let connack = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(None),
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                        return Ok(Some(MqttOutcome::Refused(format!("{code:?}"))))
                    }
                    Err(e) => return Err(anyhow!("connecting: {e}")),
                }
            }
        })
        .await
        .map_err(step("CONNACK"))??;
        if let Some(refused) = connack {
            return Ok(refused);
        }
        for (topic, payload) in messages {
            client
                .publish(
                    topic.clone(),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payload.clone(),
                )
                .await?;
            let acked = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => return Ok(()),
                        Ok(_) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
            })
            .await
            .map_err(step("PUBACK"))?;
            if let Err(e) = acked {
                return Ok(MqttOutcome::Closed(e));
            }
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
        Ok(MqttOutcome::Acked)
    })
}
