//! Real headless Chromium for the page tests: [`ChromeDriver`] (Debian's
//! `chromium-driver`) on a free port, stopped by PID like the other services, and
//! [`Browser`], one WebDriver session driven with `fantoccini` behind a blocking API
//! (the tests are plain `#[test]`s that also call the gateway with blocking reqwest).
//!
//! Chromium gets `--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
//! --disable-background-networking --disable-component-update --disable-sync` and a fresh
//! `--user-data-dir`: on a machine without internet the background services otherwise
//! keep opening connections that are refused. A missing `chromium` or `chromedriver` is an
//! error, never a skip (`scripts/test` installs both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::{free_port, require_binary, stop_child, wait_for_port};

/// A ChromeDriver process on a free loopback port.
pub struct ChromeDriver {
    child: Option<Child>,
    /// The WebDriver port.
    pub port: u16,
    chromium: PathBuf,
    dir: tempfile::TempDir,
    sessions: AtomicUsize,
}

impl ChromeDriver {
    /// Starts `chromedriver` (and checks that `chromium` is installed).
    pub fn start() -> Result<ChromeDriver> {
        let driver = require_binary("chromedriver")?;
        let chromium = require_binary("chromium")?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let d = ChromeDriver {
            child: Some(child),
            port,
            chromium,
            dir,
            sessions: AtomicUsize::new(0),
        };
        wait_for_port(port, "chromedriver to listen")?;
        Ok(d)
    }

    /// Opens a browser session with a `width`×`height` window and, if given, the
    /// browser language `lang` (e.g. `zh-CN`; it becomes `navigator.language`).
    pub fn session(&self, width: u32, height: u32, lang: Option<&str>) -> Result<Browser> {
        let n = self.sessions.fetch_add(1, Ordering::SeqCst);
        let profile = self.dir.path().join(format!("profile-{n}"));
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut prefs = serde_json::Map::new();
        if let Some(lang) = lang {
            args.push(format!("--lang={lang}"));
            args.push(format!("--accept-lang={lang}"));
            prefs.insert("intl.accept_languages".into(), lang.into());
        }
        let mut options =
            serde_json::json!({ "binary": self.chromium, "args": args, "prefs": prefs });
        if width < 500 {
            // Headless Chromium keeps windows at least 500 px wide: a phone's viewport
            // needs device emulation (exact CSS pixels, touch, mobile viewport rules).
            options["mobileEmulation"] = serde_json::json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0, "touch": true, "mobile": true }
            });
        }
        let caps = serde_json::json!({ "browserName": "chrome", "goog:chromeOptions": options });
        let serde_json::Value::Object(caps) = caps else {
            bail!("capabilities are an object")
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let url = format!("http://127.0.0.1:{}", self.port);
        let client = rt
            .block_on(async {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
            })
            .map_err(|e| {
                anyhow!(
                    "cannot open a Chromium session through chromedriver: {e}\n{}",
                    self.log_tail()
                )
            })?;
        Ok(Browser {
            rt,
            client: Some(client),
            width,
            height,
        })
    }

    /// The last lines of chromedriver's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        stop_child(&mut self.child, "-KILL");
    }
}

/// One browser session with blocking calls. Element lookups wait up to 10 s.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    /// Window width asked for.
    pub width: u32,
    /// Window height asked for.
    pub height: u32,
}

/// How long a lookup or a condition may take.
const WAIT: Duration = Duration::from_secs(10);

impl Browser {
    fn client(&self) -> &Client {
        self.client.as_ref().expect("session open until drop")
    }

    /// Opens `url` and waits for the page's module to replace the "Loading…" placeholder.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.rt.block_on(self.client().goto(url))?;
        self.wait_for(&format!("the page {url} to render"), |b| {
            Ok(
                b.js(
                    "return document.querySelector('#app > p.muted[data-i18n=loading]') === null",
                )? == serde_json::Value::Bool(true),
            )
        })
    }

    /// Runs JavaScript (a function body; `return` gives the value).
    pub fn js(&self, script: &str) -> Result<serde_json::Value> {
        Ok(self
            .rt
            .block_on(self.client().execute(script, Vec::new()))?)
    }

    /// Waits for an element matching `css`.
    pub fn find(&self, css: &str) -> Result<fantoccini::elements::Element> {
        self.rt
            .block_on(
                self.client()
                    .wait()
                    .at_most(WAIT)
                    .for_element(Locator::Css(css)),
            )
            .map_err(|e| anyhow!("no element {css:?} within {WAIT:?}: {e}"))
    }

    /// Whether an element matching `css` is there now.
    pub fn exists(&self, css: &str) -> Result<bool> {
        Ok(!self
            .rt
            .block_on(self.client().find_all(Locator::Css(css)))?
            .is_empty())
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) -> Result<()> {
        self.retry_stale(css, |el| {
            Box::pin(async move { el.click().await.map(|_| ()) })
        })
        .with_context(|| format!("clicking {css:?}"))
    }

    /// Chooses the option with `value` in the `<select>` matching `css`.
    pub fn select(&self, css: &str, value: &str) -> Result<()> {
        let value = value.to_owned();
        self.retry_stale(css, move |el| {
            let value = value.clone();
            Box::pin(async move { el.select_by_value(&value).await.map(|_| ()) })
        })
        .with_context(|| format!("selecting in {css:?}"))
    }

    /// Types `text` into the input matching `css`.
    pub fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let el = self.find(css)?;
        self.rt.block_on(el.send_keys(text))?;
        Ok(())
    }

    /// The visible text of the element matching `css`.
    pub fn text(&self, css: &str) -> Result<String> {
        let text = std::sync::Mutex::new(String::new());
        self.retry_stale(css, |el| {
            let text = &text;
            Box::pin(async move {
                let t = el.text().await?;
                *text.lock().unwrap_or_else(|p| p.into_inner()) = t;
                Ok(())
            })
        })?;
        Ok(text.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// Finds `css` and runs `op` on it, again while the page re-renders under it
    /// (a "stale element" error), for up to 10 s.
    fn retry_stale<'a>(
        &self,
        css: &str,
        op: impl Fn(
            fantoccini::elements::Element,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), fantoccini::error::CmdError>> + 'a>,
        >,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            let el = self.find(css)?;
            match self.rt.block_on(op(el)) {
                Ok(()) => return Ok(()),
                Err(e) if e.to_string().contains("stale element") && start.elapsed() < WAIT => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The whole DOM as HTML.
    pub fn source(&self) -> Result<String> {
        Ok(self.rt.block_on(self.client().source())?)
    }

    /// Waits until the text of `css` contains `needle`; returns the text.
    pub fn wait_text(&self, css: &str, needle: &str) -> Result<String> {
        let mut last = String::new();
        let r = self.wait_for(&format!("{css:?} to contain {needle:?}"), |b| {
            last = if b.exists(css)? {
                b.text(css)?
            } else {
                String::new()
            };
            Ok(last.contains(needle))
        });
        r.map(|_| last.clone())
            .map_err(|e| anyhow!("{e}; last text: {last:?}"))
    }

    /// Polls `f` every 100 ms until it is true, for up to 10 s.
    pub fn wait_for(&self, what: &str, mut f: impl FnMut(&Browser) -> Result<bool>) -> Result<()> {
        let start = Instant::now();
        loop {
            if f(self)? {
                return Ok(());
            }
            if start.elapsed() > WAIT {
                bail!("timed out after {WAIT:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the viewport as `<target>/screenshots/<name>.png` and returns its path.
    pub fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self.rt.block_on(self.client().screenshot())?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), c.close()).await });
        }
    }
}

/// `$CARGO_TARGET_DIR/screenshots`, else `target/screenshots` in the workspace.
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("screenshots")
}
