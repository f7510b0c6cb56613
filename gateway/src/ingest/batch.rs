//! Building a batch: plain data in, plain data out, no I/O.
//!
//! [`BatchBuilder::build`] takes the messages of one batch, in arrival order, and
//! turns them into a [`Batch`]: every message decoded (points, or a dead letter with
//! its reason), its `(boot_id, seq)` checked against the device's sequence state
//! ([`crate::sequence`]), each new message (not a redelivery) fed to the analytics
//! stage ([`crate::analysis`]), and what the maintenance engine must hear of
//! (device faults, findings, cartridge replacements) listed as [`MaintenanceAction`]s.
//! The builder owns the state these steps update (sequence state per device, the
//! analyzer, the last cartridge counters seen); the driver ([`super::pipeline`]) makes
//! the batch durable, commits it and acknowledges it.

use std::collections::HashMap;

use super::Inbound;
use crate::analysis::{Analyzer, Arrival, DeviceFinding};
use crate::decode::{decode, Accepted, Rejection};
use crate::sequence::{DeviceSeq, SeqVerdict};
use crate::state::DeadLetter;
use crate::store::{Point, RejectedPoint};

/// What the maintenance engine must hear about, from one batch.
#[derive(Debug)]
pub enum MaintenanceAction {
    /// A fault the device raised or cleared (only when the analytics stage is off;
    /// with it on, faults reach the engine as the rules' findings).
    Fault {
        /// The device.
        device_id: String,
        /// The fault event.
        fault: protocol::message::FaultEvent,
        /// Device time of the event.
        ts_ms: i64,
    },
    /// A finding of the analytics stage.
    Finding(maintenance::Finding),
    /// A device answered a command (contract v1.2, `fixtures/{id}/result`).
    CommandResult {
        /// The device.
        device_id: String,
        /// Its answer.
        result: protocol::message::CommandResult,
    },
    /// A cartridge counter changed.
    CartridgeReplaced {
        /// The device.
        device_id: String,
        /// The cartridge slot.
        slot: u8,
        /// The device's replacement counter.
        replacements: u32,
    },
}

/// What a batch adds to the counters (applied by the driver).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    /// Messages that passed validation.
    pub accepted: u64,
    /// Reason codes of the rejected messages.
    pub rejected: Vec<&'static str>,
    /// Change of the fleet's missing-message count (late fills make it negative).
    pub gap_delta: i64,
    /// Redeliveries recognised by sequence number.
    pub duplicates: u64,
    /// Sensor values left out of accepted messages as invalid or missing.
    pub invalid_fields: u64,
    /// Messages fed to the analytics stage.
    pub analysed: u64,
    /// Late messages the analytics stage analysed in device-time order (by a replay).
    pub late_replayed: u64,
    /// Late messages older than their device's checkpoint, which the rules skipped.
    pub late_unordered: u64,
    /// Findings produced.
    pub findings: u64,
}

/// A decoded batch, ready to be made durable, committed and acknowledged.
#[derive(Debug)]
pub struct Batch {
    /// The messages, in arrival order (acknowledged in this order).
    pub messages: Vec<Inbound>,
    /// What to store: the messages' points, findings and forecasts.
    pub points: Vec<Point>,
    /// Messages refused (and, after the write, points the store refused).
    pub dead: Vec<DeadLetter>,
    /// Sequence state of the devices this batch touched, as it stands after it.
    pub devices: Vec<(String, DeviceSeq)>,
    /// What the maintenance engine must hear of before the batch is acknowledged.
    pub actions: Vec<MaintenanceAction>,
    /// Gateway time of the batch, UTC ms.
    pub received_ms: i64,
    /// Counter changes.
    pub tally: Tally,
}

/// The state a batch is built against; see the module docs.
pub struct BatchBuilder {
    limits: protocol::validate::Limits,
    devices: foldhash::HashMap<String, DeviceSeq>,
    /// Last replacement counter seen per device and cartridge slot.
    cartridges_seen: foldhash::HashMap<String, Vec<(u8, u32)>>,
    analyzer: Option<Analyzer>,
    maintenance: bool,
}

impl BatchBuilder {
    /// A builder from the saved sequence state, with the analytics stage if enabled,
    /// listing maintenance actions only if an engine will apply them.
    pub fn new(
        limits: protocol::validate::Limits,
        devices: HashMap<String, DeviceSeq>,
        analyzer: Option<Analyzer>,
        maintenance: bool,
    ) -> BatchBuilder {
        BatchBuilder {
            limits,
            devices: devices.into_iter().collect(),
            cartridges_seen: foldhash::HashMap::default(),
            analyzer,
            maintenance,
        }
    }

    /// Devices with sequence state.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Devices with analytics state, if the stage is on.
    pub fn analytics_devices(&self) -> Option<usize> {
        self.analyzer.as_ref().map(Analyzer::devices)
    }

    /// The analytics state of the devices touched since the last call (empty if off).
    pub fn take_snapshot(&mut self) -> Vec<(String, String)> {
        self.analyzer
            .as_mut()
            .map(Analyzer::take_snapshot)
            .unwrap_or_default()
    }

    /// Whether the analytics stage is on.
    pub fn analyses(&self) -> bool {
        self.analyzer.is_some()
    }

    /// Whether the analytics stage holds late messages for a replay in device-time order.
    pub fn late_pending(&self) -> bool {
        self.analyzer
            .as_ref()
            .is_some_and(Analyzer::has_open_backfills)
    }

    /// Builds the batch of `messages` received at `now` (UTC ms).
    pub fn build(&mut self, messages: Vec<Inbound>, now: i64) -> Batch {
        let late_before = self
            .analyzer
            .as_ref()
            .map(Analyzer::late_counts)
            .unwrap_or_default();
        let mut points = Vec::with_capacity(messages.len() * 2);
        let mut dead = Vec::new();
        let mut touched: foldhash::HashSet<String> = foldhash::HashSet::default();
        let mut tally = Tally::default();
        let mut actions = Vec::new();
        let mut findings: Vec<DeviceFinding> = Vec::new();
        for m in &messages {
            // A device's answer to a command: no sequence, no analytics; the engine hears of it.
            if let Some(answer) = crate::commands::decode_result(
                &m.publish.topic,
                &m.publish.payload,
                now,
                &self.limits,
            ) {
                match answer {
                    Ok(a) => {
                        tally.accepted += 1;
                        points.push(a.point);
                        if self.maintenance {
                            actions.push(MaintenanceAction::CommandResult {
                                device_id: a.device_id,
                                result: a.result,
                            });
                        }
                    }
                    Err(rejection) => refuse(m, rejection, now, &mut tally, &mut dead),
                }
                continue;
            }
            match decode(&m.publish.topic, &m.publish.payload, now, &self.limits) {
                Ok(accepted) => {
                    tally.accepted += 1;
                    tally.invalid_fields += u64::from(accepted.invalid_gauges.count());
                    let mut new = true;
                    let mut arrival = None;
                    if let Some((boot, seq)) = accepted.sequence {
                        let id = accepted.device_id.as_str();
                        if !self.devices.contains_key(id) {
                            self.devices.insert(id.to_owned(), DeviceSeq::default());
                        }
                        let Some(state) = self.devices.get_mut(id) else {
                            continue;
                        };
                        let gaps_before = state.gaps;
                        let verdict = state.observe(boot, seq);
                        tally.gap_delta += state.gaps as i64 - gaps_before as i64;
                        new = verdict != SeqVerdict::Duplicate;
                        arrival = Some(Arrival {
                            verdict,
                            missing_before: gaps_before,
                            missing_after: state.gaps,
                            received_ms: now,
                        });
                        if !new {
                            tally.duplicates += 1;
                        }
                        if !touched.contains(id) {
                            touched.insert(id.to_owned());
                        }
                    }
                    if self.maintenance {
                        self.maintenance_actions(&accepted, &mut actions);
                    }
                    points.extend(accepted.points);
                    // A redelivery was analysed the first time round.
                    if let (Some(analyzer), true) = (&mut self.analyzer, new) {
                        tally.analysed += 1;
                        analyzer.observe_arrival(
                            accepted.device_id.as_str(),
                            std::borrow::Cow::Owned(accepted.message),
                            arrival,
                            &mut findings,
                            &mut points,
                        );
                        // The clock-driven rules run as device time passes, message by message: a
                        // replayed day can fit in one batch, and a silence inside it must still show.
                        analyzer.sweep(now, &mut findings);
                    }
                }
                Err(rejection) => refuse(m, rejection, now, &mut tally, &mut dead),
            }
        }
        // A batch of no message is a tick: held late messages whose backlog went quiet.
        if let (Some(analyzer), true) = (&mut self.analyzer, messages.is_empty()) {
            analyzer.sweep(now, &mut findings);
        }
        if let Some(late) = self.analyzer.as_ref().map(Analyzer::late_counts) {
            tally.late_replayed = late.replayed - late_before.replayed;
            tally.late_unordered = late.unordered - late_before.unordered;
        }
        tally.findings = findings.len() as u64;
        for f in &findings {
            tracing::info!(device_id = %f.device_id, kind = f.finding.kind.as_str(), state = ?f.finding.state, severity = f.finding.severity.as_str(), evidence = %f.finding.evidence, began = f.finding.began_ts_ms, "Finding.");
            points.push(f.point());
            if self.maintenance {
                actions.push(MaintenanceAction::Finding(f.to_maintenance()));
            }
        }
        Batch {
            messages,
            points,
            dead,
            devices: touched
                .into_iter()
                .filter_map(|id| {
                    let state = self.devices.get(&id)?.clone();
                    Some((id, state))
                })
                .collect(),
            actions,
            received_ms: now,
            tally,
        }
    }

    /// Notes what the maintenance engine must hear of one accepted message.
    fn maintenance_actions(&mut self, accepted: &Accepted, actions: &mut Vec<MaintenanceAction>) {
        let device_id = accepted.device_id.as_str();
        // With analytics on, device faults reach the engine as the rules' findings.
        if let (Some(fault), None) = (&accepted.fault, &self.analyzer) {
            let ts_ms = accepted.points.first().map_or(0, |p| p.ts_ms);
            actions.push(MaintenanceAction::Fault {
                device_id: device_id.to_owned(),
                fault: fault.clone(),
                ts_ms,
            });
        }
        for &(slot, replacements) in &accepted.cartridges {
            // Looked up by `&str`: the device id is copied only for a device seen first.
            let seen = match self.cartridges_seen.get_mut(device_id) {
                Some(seen) => seen,
                None => self
                    .cartridges_seen
                    .entry(device_id.to_owned())
                    .or_default(),
            };
            let changed = match seen.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, last)) if *last == replacements => false,
                Some((_, last)) => {
                    *last = replacements;
                    true
                }
                None => {
                    seen.push((slot, replacements));
                    true
                }
            };
            if changed {
                actions.push(MaintenanceAction::CartridgeReplaced {
                    device_id: device_id.to_owned(),
                    slot,
                    replacements,
                });
            }
        }
    }
}

/// Counts, logs and keeps (as a dead letter) a message that failed a check.
fn refuse(
    m: &Inbound,
    rejection: Rejection,
    now: i64,
    tally: &mut Tally,
    dead: &mut Vec<DeadLetter>,
) {
    let Rejection { reason, detail } = rejection;
    tally.rejected.push(reason);
    tracing::debug!(topic = %m.publish.topic, reason, %detail, "Message rejected.");
    dead.push(DeadLetter::new(
        now,
        &m.publish.topic,
        reason,
        &detail,
        &m.publish.payload,
    ));
}

/// Turns points the store refused into dead letters.
pub fn refused_to_dead_letters(
    refused: Vec<RejectedPoint>,
    points: &[Point],
    now: i64,
) -> Vec<DeadLetter> {
    refused
        .into_iter()
        .map(|r| {
            let topic = points.get(r.index).map_or("", |p| p.measurement.as_ref());
            DeadLetter::new(now, topic, "store_refused", &r.reason, r.line.as_bytes())
        })
        .collect()
}
