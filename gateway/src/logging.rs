//! Log set-up: a `RUST_LOG`-style filter from `GATEWAY_LOG`, human-readable lines
//! (ANSI colours only when standard error is a terminal) or one JSON object a line
//! (`[log] format = "json"`, or `GATEWAY__LOG__FORMAT=json`). Logs go to standard error,
//! so a command's answer on standard output (`TOKEN=$(gateway tokens create …)`) is
//! never mixed with log lines such as a schema migration's.
//!
//! The embedded broker (rumqttd) logs every ordinary client disconnect at ERROR
//! ("disconnected", "connection-stop", and "no-connection id N is already gone" after a
//! client's clean DISCONNECT); those events are dropped here, so ERROR stays meaningful.
//! Other rumqttd errors pass.

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

/// An event's `message` and `error` fields.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    error: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = Some(value.to_owned()),
            "error" => self.error = Some(value.to_owned()),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = Some(format!("{value:?}")),
            "error" => self.error = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

/// Whether an event is the embedded broker's report of an ordinary disconnect: its
/// `message` field, and its `error` field if it has one.
pub fn is_broker_disconnect(meta: &Metadata<'_>, message: &str, error: Option<&str>) -> bool {
    is_broker_disconnect_report(meta.target(), *meta.level(), message, error)
}

/// [`is_broker_disconnect`] on an event's target, level and fields. After a client's clean
/// DISCONNECT rumqttd's router forgets the connection, then hears of it again from its link
/// ("no-connection id N is already gone"), and the link finds the router's end closed
/// ("router-drop", `Recv(Disconnected)`); which of the two comes is a race.
fn is_broker_disconnect_report(
    target: &str,
    level: Level,
    message: &str,
    error: Option<&str>,
) -> bool {
    let already_gone = || {
        message
            .strip_prefix("no-connection id ")
            .and_then(|rest| rest.strip_suffix(" is already gone"))
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    };
    target.starts_with("rumqttd")
        && level == Level::ERROR
        && (matches!(message, "disconnected" | "connection-stop")
            || already_gone()
            || (message == "router-drop" && error == Some("Recv(Disconnected)")))
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
        let mut fields = Fields::default();
        event.record(&mut fields);
        !fields
            .message
            .is_some_and(|msg| is_broker_disconnect(meta, &msg, fields.error.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_embedded_brokers_ordinary_disconnect_reports_are_dropped() {
        let routing = "rumqttd::router::routing";
        let dropped = |message: &str, error: Option<&str>| {
            is_broker_disconnect_report(routing, Level::ERROR, message, error)
        };
        assert!(dropped("disconnected", None));
        assert!(dropped("connection-stop", None));
        assert!(dropped("no-connection id 0 is already gone", None));
        assert!(dropped("no-connection id 15 is already gone", None));
        assert!(dropped("router-drop", Some("Recv(Disconnected)")));
        assert!(!dropped("no-connection id  is already gone", None));
        assert!(!dropped("no-connection id x is already gone", None));
        assert!(!dropped("router-drop", None));
        assert!(!dropped("router-drop", Some("Send(Full)")));
        assert!(!dropped(
            "Disconnected!!",
            Some("Network(Io(ConnectionReset))")
        ));
        // Not rumqttd's, or not at ERROR: kept.
        assert!(!is_broker_disconnect_report(
            "gateway::ingest",
            Level::ERROR,
            "disconnected",
            None
        ));
        assert!(!is_broker_disconnect_report(
            routing,
            Level::WARN,
            "disconnected",
            None
        ));
    }
}
