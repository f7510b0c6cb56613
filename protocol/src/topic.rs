//! MQTT topic layout: `fixtures/{device_id}/{channel}`.
//!
//! The device id in the topic is what the broker's ACL vouches for (a device
//! may only publish under its own subtree), so the gateway trusts it over the
//! payload and rejects a payload that names another device.

use core::fmt::Write;

use crate::{is_valid_device_id, DeviceId};

/// First topic level of every fixture topic.
pub const ROOT: &str = "fixtures";

/// Subscription filter the gateway uses for everything fixtures publish.
pub const GATEWAY_FILTERS: [&str; 3] = [
    "fixtures/+/telemetry",
    "fixtures/+/event",
    "fixtures/+/status",
];

/// Contract v1.2: the last level of the topic a device answers commands on,
/// `fixtures/{id}/result` ([`crate::message::CommandResult`], device to gateway, QoS 1).
///
/// Kept out of [`Channel`] on purpose: the ingest path decodes the four v1 channels, and
/// results are routed to the command lifecycle before that ([`parse_result`]).
pub const RESULT_LEVEL: &str = "result";

/// Subscription filter for every device's command results.
pub const GATEWAY_RESULT_FILTER: &str = "fixtures/+/result";

/// `fixtures/{device_id}/result`.
pub fn result_topic(device_id: &str) -> heapless::String<64> {
    let mut s = heapless::String::new();
    // 9 + 32 + 1 + 6 bytes at most: always fits in 64.
    let _ = write!(s, "{ROOT}/{device_id}/{RESULT_LEVEL}");
    s
}

/// The device id of a `fixtures/{device_id}/result` topic; `None` for any other topic
/// (`Some(Err)` for a result topic with a malformed device id).
pub fn parse_result(topic: &str) -> Option<Result<DeviceId, TopicError>> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let id = rest.strip_suffix(RESULT_LEVEL)?.strip_suffix('/')?;
    if !is_valid_device_id(id) {
        return Some(Err(TopicError::DeviceId));
    }
    Some(DeviceId::try_from(id).map_err(|_| TopicError::DeviceId))
}

/// The last topic level: what kind of message travels on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Periodic state and cumulative counters (device to gateway, QoS 1).
    Telemetry,
    /// A usage session ended, or a fault was raised or cleared (device to gateway, QoS 1).
    Event,
    /// Online or offline; retained, and the device's last will (device to gateway).
    Status,
    /// A command (gateway to device, QoS 1).
    Cmd,
}

impl Channel {
    /// The topic level for this channel.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Telemetry => "telemetry",
            Channel::Event => "event",
            Channel::Status => "status",
            Channel::Cmd => "cmd",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "telemetry" => Channel::Telemetry,
            "event" => Channel::Event,
            "status" => Channel::Status,
            "cmd" => Channel::Cmd,
            _ => return None,
        })
    }
}

/// A parsed fixture topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// The device the topic belongs to.
    pub device_id: DeviceId,
    /// Which kind of message travels on it.
    pub channel: Channel,
}

/// Why a topic is not a fixture topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Not of the form `fixtures/{device_id}/{channel}`.
    Shape,
    /// The device id level is empty, too long or has characters outside `[a-z0-9-_]`.
    DeviceId,
    /// The last level is not one of telemetry, event, status, cmd.
    Channel,
}

impl TopicError {
    /// A stable, machine-readable reason code.
    pub const fn code(self) -> &'static str {
        match self {
            TopicError::Shape => "topic_shape",
            TopicError::DeviceId => "topic_device_id",
            TopicError::Channel => "topic_channel",
        }
    }
}

impl core::fmt::Display for TopicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TopicError::Shape => "topic is not fixtures/{device_id}/{channel}",
            TopicError::DeviceId => {
                "device id in topic is empty, longer than 32 bytes or not [a-z0-9-_]"
            }
            TopicError::Channel => "topic channel is not telemetry, event, status or cmd",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TopicError {}

impl Topic {
    /// Parses `fixtures/{device_id}/{channel}`.
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        // Exactly three levels, the first `fixtures` (by prefix and two byte searches: this
        // runs for every message).
        let (id, channel) = topic
            .strip_prefix(ROOT)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.split_once('/'))
            .filter(|(_, channel)| !channel.contains('/'))
            .ok_or(TopicError::Shape)?;
        if !is_valid_device_id(id) {
            return Err(TopicError::DeviceId);
        }
        let channel = Channel::parse(channel).ok_or(TopicError::Channel)?;
        let device_id = DeviceId::try_from(id).map_err(|_| TopicError::DeviceId)?;
        Ok(Topic { device_id, channel })
    }

    /// The partitioned form a clustered broker delivers, `fixtures/{partition}/{device_id}/{channel}`
    /// (NATS subject mapping `fixtures.*.*` → `fixtures.{{partition(N,1)}}.{{wildcard(1)}}.{{wildcard(2)}}`),
    /// split into the partition and the plain topic `fixtures/{device_id}/{channel}`.
    ///
    /// Only the partition token is checked here (`fixtures/` then decimal digits); the rest
    /// is kept as written, so [`Topic::parse`] of the result still rejects a bad device id or
    /// channel with its own reason code. `None`: not of the partitioned form (or longer than
    /// the plain topic can be), to be handled like any malformed topic.
    pub fn strip_partition(topic: &str) -> Option<(u32, heapless::String<64>)> {
        let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
        let (partition, rest) = rest.split_once('/')?;
        if partition.is_empty()
            || partition.len() > 9
            || !partition.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let partition: u32 = partition.parse().ok()?;
        let mut s = heapless::String::new();
        write!(s, "{ROOT}/{rest}").ok()?;
        Some((partition, s))
    }

    /// Formats the topic for `device_id` and `channel` into a bounded string.
    pub fn format(device_id: &str, channel: Channel) -> heapless::String<64> {
        let mut s = heapless::String::new();
        // 9 + 32 + 1 + 9 bytes at most: always fits in 64.
        let _ = write!(s, "{ROOT}/{device_id}/{}", channel.as_str());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_channel() {
        for ch in [
            Channel::Telemetry,
            Channel::Event,
            Channel::Status,
            Channel::Cmd,
        ] {
            let t = Topic::format("purifier-7", ch);
            let parsed = Topic::parse(&t).unwrap();
            assert_eq!(parsed.device_id.as_str(), "purifier-7");
            assert_eq!(parsed.channel, ch);
        }
    }

    #[test]
    fn strips_the_partition_token_of_a_mapped_topic() {
        let (p, plain) = Topic::strip_partition("fixtures/17/toilet-0001/telemetry").unwrap();
        assert_eq!(p, 17);
        assert_eq!(plain.as_str(), "fixtures/toilet-0001/telemetry");
        assert_eq!(Topic::parse(&plain).unwrap().channel, Channel::Telemetry);
        // The rest is kept as written: parse still rejects it with its own reason.
        let (_, bad) = Topic::strip_partition("fixtures/3/A,b/event").unwrap();
        assert_eq!(Topic::parse(&bad), Err(TopicError::DeviceId));
        for not_mapped in [
            "fixtures/toilet-1/telemetry/x",
            "fixtures/x1/toilet-1/telemetry",
            "fixtures//toilet-1/telemetry",
            "fixtures/1234567890/a/event",
            "other/1/a/event",
            "fixtures/1",
        ] {
            if let Some((_, plain)) = Topic::strip_partition(not_mapped) {
                // Only shapes whose second level is a number strip; the result is then parsed as usual.
                assert!(Topic::parse(&plain).is_err(), "{not_mapped}");
            }
        }
        assert!(Topic::strip_partition("fixtures/x1/toilet-1/telemetry").is_none());
        assert!(Topic::strip_partition("other/1/a/event").is_none());
        let long = format!("fixtures/1/{}/event", "a".repeat(80));
        assert!(Topic::strip_partition(&long).is_none());
    }

    /// The shape rule as first written: split on `/`, exactly three levels, root `fixtures`.
    fn parse_by_split(topic: &str) -> Result<Topic, TopicError> {
        let mut levels = topic.split('/');
        let (Some(root), Some(id), Some(channel), None) =
            (levels.next(), levels.next(), levels.next(), levels.next())
        else {
            return Err(TopicError::Shape);
        };
        if root != ROOT {
            return Err(TopicError::Shape);
        }
        if !is_valid_device_id(id) {
            return Err(TopicError::DeviceId);
        }
        let channel = Channel::parse(channel).ok_or(TopicError::Channel)?;
        let device_id = DeviceId::try_from(id).map_err(|_| TopicError::DeviceId)?;
        Ok(Topic { device_id, channel })
    }

    #[test]
    fn parse_agrees_with_splitting_on_every_shape() {
        // Every string of up to five pieces from this alphabet of topic fragments.
        let pieces = [
            "fixtures",
            "/",
            "a-1",
            "telemetry",
            "",
            "x",
            "fixturesx",
            "//",
        ];
        let mut topics = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = topics
                .iter()
                .flat_map(|t| pieces.iter().map(move |p| format!("{t}{p}")))
                .collect();
            topics.extend(longer);
        }
        assert!(topics.len() > 30_000);
        for t in &topics {
            assert_eq!(Topic::parse(t), parse_by_split(t), "{t:?}");
        }
    }

    #[test]
    fn rejects_malformed_topics() {
        assert_eq!(
            Topic::parse("fixtures/a/telemetry/x"),
            Err(TopicError::Shape)
        );
        assert_eq!(Topic::parse("devices/a/telemetry"), Err(TopicError::Shape));
        assert_eq!(
            Topic::parse("fixtures//telemetry"),
            Err(TopicError::DeviceId)
        );
        assert_eq!(
            Topic::parse("fixtures/A,b=c/telemetry"),
            Err(TopicError::DeviceId)
        );
        assert_eq!(Topic::parse("fixtures/"), Err(TopicError::Shape));
        let long = "fixtures/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/event";
        assert_eq!(Topic::parse(long), Err(TopicError::DeviceId));
        assert_eq!(Topic::parse("fixtures/a/metrics"), Err(TopicError::Channel));
    }

    #[test]
    fn result_topics_round_trip_and_stay_out_of_the_v1_channels() {
        let t = result_topic("toilet-0042");
        assert_eq!(t.as_str(), "fixtures/toilet-0042/result");
        assert_eq!(
            parse_result(&t).and_then(Result::ok).as_deref(),
            Some("toilet-0042")
        );
        assert_eq!(Topic::parse(&t), Err(TopicError::Channel));
        assert_eq!(parse_result("fixtures/toilet-1/event"), None);
        assert_eq!(
            parse_result("fixtures/a/b/result"),
            Some(Err(TopicError::DeviceId))
        );
        assert_eq!(
            parse_result("fixtures//result"),
            Some(Err(TopicError::DeviceId))
        );
        assert_eq!(parse_result("other/x/result"), None);
    }
}
