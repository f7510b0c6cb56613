//! A real SMTP server for the notification tests: Debian's `aiosmtpd` (package
//! `python3-aiosmtpd`, installed by `scripts/test`) on a free loopback port, storing
//! every message it accepts in a Maildir inside a temporary directory, stopped by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, Context, Result};

use crate::{free_port, stop_child, wait_for_port};

/// The Debian interpreter that has `aiosmtpd` (a pyenv `python3` on PATH would not).
const PYTHON: &str = "/usr/bin/python3";

/// An SMTP server whose accepted messages land in [`SmtpServer::messages`].
pub struct SmtpServer {
    child: Option<Child>,
    /// The SMTP port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Starts `python3 -m aiosmtpd` with the Maildir handler.
    pub fn start() -> Result<SmtpServer> {
        let available = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !available {
            return Err(anyhow!(
                "aiosmtpd is not installed. Run `scripts/test` (it installs python3-aiosmtpd), or `apt-get install -y python3-aiosmtpd`."
            ));
        }
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let child = Command::new(PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("maildir"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                dir.path().join("smtpd.log"),
            )?))
            .spawn()
            .context("starting aiosmtpd")?;
        let mut server = SmtpServer {
            child: Some(child),
            port,
            dir,
        };
        if let Err(e) = wait_for_port(port, "aiosmtpd to listen") {
            stop_child(&mut server.child, "-KILL");
            return Err(e);
        }
        Ok(server)
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// Every message received so far, raw (headers and body), oldest file name first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.maildir().join(sub)).ok())
            .flat_map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())))
            .collect();
        files.sort();
        files.iter().filter_map(|p| read(p)).collect()
    }
}

fn read(p: &Path) -> Option<String> {
    std::fs::read(p)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        stop_child(&mut self.child, "-KILL");
    }
}
