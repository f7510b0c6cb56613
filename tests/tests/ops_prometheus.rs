//! The gateway in Prometheus (issue 13): Debian's `prometheus` scrapes the
//! gateway's `/metrics` (with the operator's bearer token, as deployed), every
//! metric of the exposition arrives, and every query of the gateway dashboard
//! (`dashboards/grafana/gateway-ops.json`) returns data.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use e2e_tests::*;

/// Prometheus on a free port in a temporary directory, scraping one target every second.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16, token: &str) -> anyhow::Result<Prometheus> {
        let bin = require_binary("prometheus")?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        std::fs::write(dir.path().join("token"), token)?;
        let conf = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gateway\n    metrics_path: /metrics\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
            dir.path().join("token").display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), conf)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        Ok(Prometheus {
            child,
            port,
            _dir: dir,
        })
    }

    fn query(&self, q: &str) -> anyhow::Result<serde_json::Value> {
        let v: serde_json::Value = reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", q)])
            .send()?
            .json()?;
        anyhow::ensure!(v["status"] == "success", "{q}: {v}");
        Ok(v["data"]["result"].clone())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_every_metric_and_every_dashboard_query_returns_data() {
    let broker = Mosquitto::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("maintenance.db");
    let devices: Vec<_> = (0..5).map(fleet_device).collect();
    let token = registry::register_devices(&db, &devices).unwrap();
    let gw = GatewayProcess::spawn(
        work.path(),
        broker.port,
        &StoreTarget::Sqlite,
        "ops-prom",
        &format!(
            "[health]\ncheck_every_s = 1\n{}",
            registry::maintenance_toml(&db)
        ),
    )
    .unwrap();
    let prom = Prometheus::start(gw.http_port, &token).unwrap();

    // Traffic: good messages and a bad one (a rejection by reason).
    let mut msgs = fleet_messages(5, 20, base_ts());
    msgs.push((
        "fixtures/toilet-00001/telemetry".into(),
        b"{not json".to_vec(),
    ));
    let n = msgs.len();
    assert_eq!(
        publish_all(broker.port, "pub-ops-prom", msgs, None, None).unwrap(),
        n
    );
    wait_until(Duration::from_secs(30), "every message acked", || {
        let m = gw.metrics().ok()?;
        (m["acked"].as_u64()? >= n as u64).then_some(())
    })
    .unwrap();

    // Every metric of the exposition reaches Prometheus.
    let (status, text) = gw.get("/metrics", Some(&token)).unwrap();
    assert_eq!(status, 200, "{text}");
    let exposed: BTreeSet<String> = text
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace().skip(2);
            let name = parts.next()?;
            let kind = parts.next()?;
            Some(if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            })
        })
        .collect();
    assert!(exposed.len() >= 30, "{exposed:?}");
    let scraped = wait_until(
        Duration::from_secs(30),
        "Prometheus to scrape every metric",
        || {
            let r = prom.query("{__name__=~\"gateway_.*\"}").ok()?;
            let names: BTreeSet<String> = r
                .as_array()?
                .iter()
                .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_owned))
                .collect();
            exposed.is_subset(&names).then_some(names)
        },
    )
    .unwrap();
    assert!(scraped.contains("gateway_messages_rejected_total"));

    // Every dashboard query returns data (rates need two scrapes: wait for them).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dashboards/grafana/gateway-ops.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    std::thread::sleep(Duration::from_secs(3));
    for expr in &exprs {
        let result = wait_until(Duration::from_secs(20), expr, || {
            prom.query(expr)
                .ok()
                .filter(|r| r.as_array().is_some_and(|a| !a.is_empty()))
        })
        .unwrap();
        assert!(result[0]["value"][1].is_string(), "{expr}: {result}");
    }
    let rejected = prom
        .query("gateway_messages_rejected_total{reason=\"malformed_json\"}")
        .unwrap();
    assert_eq!(rejected[0]["value"][1], "1", "{rejected}");
    let ready = prom.query("gateway_ready").unwrap();
    assert_eq!(ready[0]["value"][1], "1", "{ready}");
}
