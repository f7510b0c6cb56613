//! Log set-up: a `RUST_LOG`-style filter from `GATEWAY_LOG`, human-readable lines
//! (ANSI colours only when standard error is a terminal) or one JSON object a line
//! (`[log] format = "json"`, or `GATEWAY__LOG__FORMAT=json`). Logs go to standard error,
//! so a command's answer on standard output (`TOKEN=$(gateway tokens create …)`) is
//! never mixed with log lines such as a schema migration's.
//!
//! The embedded broker (rumqttd) logs every ordinary client disconnect at ERROR
//! ("disconnected", "connection-stop"); those events are dropped here, so ERROR
//! stays meaningful. Other rumqttd errors pass.

use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// The filter used when `GATEWAY_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,rumqttd=warn";

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("GATEWAY_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::stderr().is_terminal();
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(BrokerNoise)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .with_current_span(false)
            .with_filter(BrokerNoise)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// Drops the embedded broker's ERROR events for ordinary disconnects.
pub struct BrokerNoise;

struct Message(Option<String>);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// Whether an event is the embedded broker's report of an ordinary disconnect.
pub fn is_broker_disconnect(meta: &Metadata<'_>, message: &str) -> bool {
    meta.target().starts_with("rumqttd")
        && *meta.level() == Level::ERROR
        && matches!(message, "disconnected" | "connection-stop")
}

impl<S> Filter<S> for BrokerNoise {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if !meta.target().starts_with("rumqttd") {
            return true;
        }
        let mut m = Message(None);
        event.record(&mut m);
        !m.0.is_some_and(|msg| is_broker_disconnect(meta, &msg))
    }
}
