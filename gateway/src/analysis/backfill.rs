//! Late messages put back in device-time order for the fault rules.
//!
//! The rules take a device's messages in `(boot_id, seq)` order and ignore one at or
//! below the newest they took (`DeviceRules::last_message`). A late message — an
//! offline backlog delivered newest-first after live traffic, a message that fills a
//! hole — would thus go unanalysed. So when a message arrives after a hole in its
//! device's sequence, the analytics stage keeps a [`Backfill`]: the rules as they stood
//! just before it (a checkpoint, under 1 KiB) and every new message of the device from
//! then on, live and late, as they came. Live messages still go through the live rules
//! at once, so a finding is never delayed; late ones wait. When the holes are filled
//! (the device's missing count is back where it was), when the hold time has passed on
//! the stage's event clock, or when the backfill is full, the checkpoint replays the
//! kept messages in `(boot_id, seq)` order and the replayed state replaces the live
//! one. `DeviceRules::reconcile` reports only the edges that change what the live
//! rules already reported, so a replay never repeats a finding.
//!
//! A device's very first message opens an open-ended backfill from its empty state: the
//! device may have been running long before (its history can follow its first live
//! message), and how much lies below is unknown, so only time ends it: the quiet time
//! on the gateway's clock, if no late message came by then. A backfill that took late
//! messages also ends once none has come for the quiet time (the backlog is over; what
//! is still missing may be lost for good).
//!
//! Bounded: [`MAX_PER_DEVICE`] messages per device and [`MAX_TOTAL`] over all devices
//! (the replay comes early when either is reached). A late message older than the
//! checkpoint (its hole came before it, or the gateway restarted since: backfills are
//! not snapshotted) cannot be put in order; the stage counts it as unordered and logs it.

use analytics::rules::{DeviceRules, Finding, RulesConfig};

use crate::decode::Message;

/// Most messages kept by one device's backfill.
pub const MAX_PER_DEVICE: usize = 20_000;
/// Most messages kept by all backfills together (about 300 bytes each).
pub const MAX_TOTAL: usize = 100_000;

/// `(boot_id, seq)` of a telemetry or event message; `None` for a status.
pub fn sequence_of(message: &Message) -> Option<(u32, u32)> {
    match message {
        Message::Telemetry(t) => Some((t.boot_id, t.seq)),
        Message::Event(e) => Some((e.boot_id, e.seq)),
        Message::Status(_) => None,
    }
}

/// One device's checkpoint and the messages since; see the module docs.
#[derive(Debug)]
pub struct Backfill {
    checkpoint: DeviceRules,
    messages: Vec<Message>,
    /// The device's missing-message count before the hole that opened it.
    missing_at_open: u64,
    /// Late messages kept (analysed only by the replay).
    late: u64,
    /// Event-clock time after which it replays whatever it has.
    hold_until_ms: i64,
    /// Opened at the device's first message: no hole count tells when it is complete.
    open_ended: bool,
    /// Gateway time of the last late message kept (of the opening before one).
    last_late_wall_ms: i64,
}

impl Backfill {
    /// A backfill from the rules as they stand before the message after a hole
    /// (`open_ended`: before the device's first message), at gateway time `wall_ms`.
    pub fn open(
        checkpoint: DeviceRules,
        missing_at_open: u64,
        hold_until_ms: i64,
        open_ended: bool,
        wall_ms: i64,
    ) -> Backfill {
        Backfill {
            checkpoint,
            messages: Vec::new(),
            missing_at_open,
            late: 0,
            hold_until_ms,
            open_ended,
            last_late_wall_ms: wall_ms,
        }
    }

    /// Whether a message numbered `sequence` comes after the checkpoint, so the replay
    /// can put it in order.
    pub fn covers(&self, sequence: (u32, u32)) -> bool {
        self.checkpoint
            .last_message()
            .is_none_or(|last| sequence > last)
    }

    /// Keeps a message arrived at gateway time `wall_ms`; a late one also holds the
    /// replay back until `hold_until_ms` (event clock) at least.
    pub fn keep(&mut self, message: Message, late: bool, hold_until_ms: i64, wall_ms: i64) {
        self.messages.push(message);
        if late {
            self.late += 1;
            self.hold_until_ms = self.hold_until_ms.max(hold_until_ms);
            self.last_late_wall_ms = wall_ms;
        }
    }

    /// Messages kept.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether it keeps nothing.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Late messages kept.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Whether late messages filled every hole since it opened, given the device's
    /// missing count now (never for an open-ended one).
    pub fn complete(&self, missing_now: u64) -> bool {
        !self.open_ended && self.late > 0 && missing_now <= self.missing_at_open
    }

    /// Whether its hold time has passed on the event clock (`event_now_ms`), or no late
    /// message came for `quiet_ms` of gateway time (`wall_now_ms`) after one did (or,
    /// open-ended, after it opened).
    pub fn expired(&self, event_now_ms: i64, wall_now_ms: i64, quiet_ms: i64) -> bool {
        event_now_ms > self.hold_until_ms
            || ((self.late > 0 || self.open_ended)
                && wall_now_ms.saturating_sub(self.last_late_wall_ms) > quiet_ms)
    }

    /// Replays the kept messages in `(boot_id, seq)` order from the checkpoint, returning
    /// the rebuilt rules; the edges that change what `live` reported go to `out`
    /// (see `DeviceRules::reconcile`). Without late messages the replay would rebuild
    /// `live` itself, so it returns `None` and `live` stays.
    pub fn replay(
        self,
        cfg: &RulesConfig,
        live: &DeviceRules,
        at_ts_ms: i64,
        out: &mut Vec<Finding>,
    ) -> Option<DeviceRules> {
        if self.late == 0 {
            return None;
        }
        let Backfill {
            checkpoint: mut rules,
            mut messages,
            ..
        } = self;
        // Statuses are never kept, so every message has its number.
        messages.sort_by_key(|m| sequence_of(m).unwrap_or((0, 0)));
        let mut replayed = Vec::new();
        for m in &messages {
            match m {
                Message::Telemetry(t) => rules.on_telemetry(cfg, t, &mut replayed),
                Message::Event(e) => rules.on_event(cfg, e, &mut replayed),
                Message::Status(_) => {}
            }
        }
        rules.reconcile(live, &replayed, at_ts_ms, out);
        Some(rules)
    }
}
