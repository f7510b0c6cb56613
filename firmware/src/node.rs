//! A fixture node: the logic plus identity, boot counter, sequence numbers,
//! persistence, command handling and allocation-free encoding into the outbox.
//!
//! The node is what a firmware main loop (or the simulator) talks to:
//! [`Node::boot`] once, then [`Node::tick`] for every sample, and drain
//! [`Node::outbox_mut`] whenever the network is up. `seq` is shared by telemetry
//! and events and restarts at 0 on every boot, with `boot_id` one higher.

use protocol::message::{
    Command, CommandKind, CommandResult, CommandStatus, Diagnostics, Event, EventKind, FaultCode,
    FirmwareVersion, LoggedFault, Model, Presence, Reboot, Session, SessionKind, Status, Telemetry,
    MAX_FAULT_LOG,
};
use protocol::topic::Channel;
use protocol::{DeviceId, SCHEMA_VERSION};
use serde::Serialize;

use crate::logic::{Config, Events, Fixture, Outputs, Sample};
use crate::outbox::{Class, Message, Outbox, Pushed, MAX_MESSAGE};
use crate::storage::{PersistentStore, Storage};

/// The firmware version reported in telemetry and status.
pub const FW_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why a node could not be booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError {
    /// The device id is empty, too long or not `[a-z0-9-_]`.
    BadDeviceId,
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload does not fit the buffer.
    TooLarge,
}

/// Encodes any contract message as JSON into `buf`, without allocating; returns the length.
pub fn encode<T: Serialize>(msg: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    serde_json_core::to_slice(msg, buf).map_err(|_| EncodeError::TooLarge)
}

/// Telemetry interval bounds of the `set_report_interval` command, seconds.
pub const REPORT_INTERVAL_RANGE_S: (u32, u32) = (10, 86_400);
/// Command results waiting to be published (the newest are kept).
pub const RESULT_QUEUE: usize = 4;

/// Largest encoded [`CommandResult`] (the widest diagnostics are about 670 bytes).
pub const MAX_RESULT: usize = 768;

/// An encoded [`CommandResult`], for `fixtures/{id}/result` ([`protocol::topic::result_topic`]).
pub type ResultPayload = heapless::Vec<u8, MAX_RESULT>;

/// Every fault code, in a stable order (the diagnostics' list of active faults).
const FAULT_CODES: [FaultCode; 8] = [
    FaultCode::Leak,
    FaultCode::ValveStuck,
    FaultCode::HeaterOverTemp,
    FaultCode::HeaterFailure,
    FaultCode::SensorError,
    FaultCode::LowInletPressure,
    FaultCode::InletClog,
    FaultCode::MainBoard,
];

/// Counters are saved at least this often while they change (besides every session end).
const SAVE_EVERY_MS: i64 = 3_600_000;

/// A booted fixture node with an outbox of `Q` messages.
#[derive(Debug)]
pub struct Node<S, const Q: usize> {
    device_id: DeviceId,
    fw: FirmwareVersion,
    fixture: Fixture,
    store: PersistentStore<S>,
    boot_id: u32,
    seq: u32,
    outbox: Outbox<Q>,
    report_interval_ms: i64,
    last_report_ms: Option<i64>,
    last_save_ms: i64,
    saved_sessions: u32,
    saved_water: u64,
    storage_failures: u32,
    last_cmd_id: Option<u32>,
    inlet_open: bool,
    fault_log: heapless::Deque<LoggedFault, MAX_FAULT_LOG>,
    results: heapless::Deque<ResultPayload, RESULT_QUEUE>,
    cleaning: Option<u32>,
    cleaning_requested: bool,
    /// Contract v1.1: why this boot happened, announced on the online status.
    reboot: Option<Reboot>,
}

impl<S: Storage, const Q: usize> Node<S, Q> {
    /// Boots: loads the counters, increments and saves the boot counter.
    pub fn boot(
        device_id: &str,
        model: Model,
        cfg: Config,
        storage: S,
        now_ms: i64,
    ) -> Result<Self, BootError> {
        if !protocol::is_valid_device_id(device_id) {
            return Err(BootError::BadDeviceId);
        }
        let device_id = DeviceId::try_from(device_id).map_err(|_| BootError::BadDeviceId)?;
        let (store, rec) = PersistentStore::open(storage);
        let rec = rec.unwrap_or_default();
        let mut fw = FirmwareVersion::new();
        let _ = fw.push_str(FW_VERSION);
        let mut node = Node {
            device_id,
            fw,
            fixture: Fixture::new(model, cfg, rec.counters),
            store,
            boot_id: rec.boot_count.wrapping_add(1),
            seq: 0,
            outbox: Outbox::default(),
            report_interval_ms: 15 * 60_000,
            last_report_ms: None,
            last_save_ms: now_ms,
            saved_sessions: 0,
            saved_water: rec.counters.water_ml,
            storage_failures: 0,
            last_cmd_id: None,
            // A valve a command closed stays closed across a reboot.
            inlet_open: !rec.inlet_closed,
            fault_log: heapless::Deque::new(),
            results: heapless::Deque::new(),
            cleaning: None,
            cleaning_requested: false,
            reboot: None,
        };
        let mut events = Events::new();
        node.save(now_ms, &mut events);
        node.queue_events(now_ms, &events);
        Ok(node)
    }

    /// Contract v1.1: records why this boot happened (the board's reset cause, and
    /// whether its storage check found the counters lost), announced on every online
    /// status of this boot.
    pub fn set_reboot(&mut self, reboot: Reboot) {
        self.reboot = Some(reboot);
    }

    /// Contract v1.1: the rated capacity of a slot's cartridge, litres (`None`: not
    /// known), reported with the slot in telemetry. False for a slot the model lacks.
    pub fn set_cartridge_rating(&mut self, slot: usize, rated_l: Option<u32>) -> bool {
        self.fixture.set_rated_l(slot, rated_l)
    }

    /// This boot's id.
    pub fn boot_id(&self) -> u32 {
        self.boot_id
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The logic state.
    pub fn fixture(&self) -> &Fixture {
        &self.fixture
    }

    /// The offline queue; pop messages from it once the broker acknowledged them.
    pub fn outbox_mut(&mut self) -> &mut Outbox<Q> {
        &mut self.outbox
    }

    /// The offline queue.
    pub fn outbox(&self) -> &Outbox<Q> {
        &self.outbox
    }

    /// Telemetry interval, ms.
    pub fn report_interval_ms(&self) -> i64 {
        self.report_interval_ms
    }

    /// Sets the telemetry interval (ms), as the `set_report_interval` command does.
    pub fn set_report_interval_ms(&mut self, ms: i64) {
        self.report_interval_ms = ms.clamp(
            i64::from(REPORT_INTERVAL_RANGE_S.0) * 1000,
            i64::from(REPORT_INTERVAL_RANGE_S.1) * 1000,
        );
    }

    /// The storage, for inspection.
    pub fn storage(&self) -> &S {
        self.store.storage()
    }

    /// Stops the node and gives the storage back (a power cut / reboot in the simulator).
    pub fn shutdown(self) -> S {
        self.store.release()
    }

    /// Runs one sample through the logic, queues its events and, when due, telemetry.
    pub fn tick(&mut self, now_ms: i64, sample: &Sample) -> Outputs {
        let mut events = Events::new();
        let out = self.fixture.step(now_ms, sample, &mut events);
        let c = self.fixture.counters();
        let changed =
            self.fixture.sessions_ended() != self.saved_sessions || c.water_ml != self.saved_water;
        if changed
            && (self.fixture.sessions_ended() != self.saved_sessions
                || now_ms - self.last_save_ms >= SAVE_EVERY_MS)
        {
            // Saved before the events are queued: what the gateway learns is already durable.
            self.save(now_ms, &mut events);
        }
        self.queue_events(now_ms, &events);
        if self
            .last_report_ms
            .is_none_or(|last| now_ms - last >= self.report_interval_ms)
        {
            self.queue_telemetry(now_ms);
        }
        out
    }

    /// Queues a telemetry message now, whatever the interval.
    pub fn queue_telemetry(&mut self, now_ms: i64) -> Pushed {
        self.last_report_ms = Some(now_ms);
        let msg = Telemetry {
            v: SCHEMA_VERSION,
            device_id: self.device_id.clone(),
            boot_id: self.boot_id,
            seq: self.seq,
            ts: now_ms,
            fw: Some(self.fw.clone()),
            reading: self.fixture.reading(),
        };
        self.enqueue(&msg, Channel::Telemetry, Class::Telemetry)
    }

    /// Handles a command from the gateway; commands are idempotent by `cmd_id` (a repeat
    /// is ignored). Returns whether the device carried it out (or, for `start_cleaning`,
    /// started it). Every command gets a [`CommandResult`] in [`Node::pop_result`]:
    /// `unsupported` for what this model cannot do, `accepted` then `ok` for the cleaning
    /// programme (when its session ends), else `ok` or `failed` with the diagnostics where
    /// they say something.
    pub fn handle_command(&mut self, cmd: &Command, now_ms: i64) -> bool {
        if cmd.v != SCHEMA_VERSION || self.last_cmd_id == Some(cmd.cmd_id) {
            return false;
        }
        self.last_cmd_id = Some(cmd.cmd_id);
        let model = self.fixture.model();
        if !cmd.command.supported_by(model) {
            self.queue_result(cmd.cmd_id, now_ms, CommandStatus::Unsupported, false);
            return false;
        }
        let (ok, diagnostics) = match cmd.command {
            CommandKind::SetReportInterval { seconds } => {
                let (lo, hi) = REPORT_INTERVAL_RANGE_S;
                if !(lo..=hi).contains(&seconds) {
                    self.queue_result(cmd.cmd_id, now_ms, CommandStatus::Unsupported, false);
                    return false;
                }
                self.set_report_interval_ms(i64::from(seconds) * 1000);
                (true, false)
            }
            CommandKind::ResetCartridge { slot } => {
                let ok = self.fixture.reset_cartridge(slot);
                if ok {
                    self.save_and_report(now_ms);
                    self.queue_telemetry(now_ms);
                }
                (ok, false)
            }
            CommandKind::SelfTest => {
                // The checks: storage takes a write, every sensor answers, the board is fine.
                self.save_and_report(now_ms);
                self.queue_telemetry(now_ms);
                let f = &self.fixture;
                let ok = self.storage_failures == 0
                    && !f.fault_active(FaultCode::SensorError)
                    && !f.fault_active(FaultCode::MainBoard);
                (ok, true)
            }
            CommandKind::ReportDiagnostics => (true, true),
            CommandKind::StartCleaning => {
                self.cleaning = Some(cmd.cmd_id);
                self.cleaning_requested = true;
                self.queue_result(cmd.cmd_id, now_ms, CommandStatus::Accepted, false);
                return true;
            }
            CommandKind::CloseInletValve | CommandKind::OpenInletValve => {
                // Saved at once: a reboot must not reopen a valve closed on a leak.
                self.inlet_open = matches!(cmd.command, CommandKind::OpenInletValve);
                self.store.set_inlet_closed(!self.inlet_open);
                self.save_and_report(now_ms);
                (self.storage_failures == 0, true)
            }
        };
        let status = if ok {
            CommandStatus::Ok
        } else {
            CommandStatus::Failed
        };
        self.queue_result(cmd.cmd_id, now_ms, status, diagnostics);
        ok
    }

    /// Whether the water inlet valve is open (always, on models without one).
    pub fn inlet_valve_open(&self) -> bool {
        self.inlet_open
    }

    /// Takes a pending request to run the cleaning programme (the board starts it).
    pub fn take_cleaning_request(&mut self) -> bool {
        core::mem::take(&mut self.cleaning_requested)
    }

    /// The device's view of its health now (what `report_diagnostics` answers).
    pub fn diagnostics(&self) -> Diagnostics {
        let f = &self.fixture;
        let mut active = heapless::Vec::new();
        for code in FAULT_CODES {
            if f.fault_active(code) {
                let _ = active.push(code);
            }
        }
        let mut log = heapless::Vec::new();
        for e in &self.fault_log {
            let _ = log.push(*e);
        }
        Diagnostics {
            active,
            log,
            boot_id: self.boot_id,
            sessions: f.sessions_ended(),
            water_ml: f.counters().water_ml,
            storage_failures: self.storage_failures,
            sensors_ok: !f.fault_active(FaultCode::SensorError),
            flow_permille: f
                .flow_ratio_permille()
                .map(|p| u16::try_from(p.min(10_000)).unwrap_or(10_000)),
            pressure_kpa: f.pressure_kpa(),
            inlet_valve_open: f.model().has_inlet_valve().then_some(self.inlet_open),
        }
    }

    /// The oldest command result not yet published, encoded.
    pub fn pop_result(&mut self) -> Option<ResultPayload> {
        self.results.pop_front()
    }

    /// Command results waiting.
    pub fn results_waiting(&self) -> usize {
        self.results.len()
    }

    fn queue_result(&mut self, cmd_id: u32, now_ms: i64, status: CommandStatus, diag: bool) {
        let msg = CommandResult {
            v: SCHEMA_VERSION,
            device_id: self.device_id.clone(),
            cmd_id,
            ts: now_ms,
            status,
            diagnostics: diag.then(|| self.diagnostics()),
        };
        let mut buf = [0u8; MAX_RESULT];
        let Ok(n) = encode(&msg, &mut buf) else {
            // Cannot happen: the largest result fits (checked by a test).
            return;
        };
        let mut payload = ResultPayload::new();
        let _ = payload.extend_from_slice(&buf[..n]);
        if self.results.is_full() {
            self.results.pop_front();
        }
        let _ = self.results.push_back(payload);
    }

    /// The status payload (`online`, or `offline` for the last will), encoded.
    pub fn status(
        &self,
        now_ms: i64,
        state: Presence,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let msg = Status {
            v: SCHEMA_VERSION,
            device_id: self.device_id.clone(),
            ts: now_ms,
            state,
            model: self.fixture.model(),
            fw: Some(self.fw.clone()),
            boot_id: Some(self.boot_id),
            reboot: self.reboot,
        };
        encode(&msg, buf)
    }

    /// Saves now and queues what the save raised or cleared (a storage fault).
    fn save_and_report(&mut self, now_ms: i64) {
        let mut events = Events::new();
        self.save(now_ms, &mut events);
        self.queue_events(now_ms, &events);
    }

    fn save(&mut self, now_ms: i64, events: &mut Events) {
        let ok = self
            .store
            .save(self.boot_id, self.fixture.counters())
            .is_ok();
        self.last_save_ms = now_ms;
        self.saved_sessions = self.fixture.sessions_ended();
        self.saved_water = self.fixture.counters().water_ml;
        if ok {
            self.storage_failures = 0;
        } else {
            self.storage_failures += 1;
        }
        // Storage failing is a main-board fault (value: consecutive failed saves).
        self.fixture
            .set_main_board_fault(!ok, self.storage_failures as f32, events);
    }

    fn queue_events(&mut self, now_ms: i64, events: &Events) {
        for e in events {
            let class = match e {
                EventKind::Session(Session {
                    kind: SessionKind::Cleaning,
                    ..
                }) => {
                    // The cleaning programme a command started has ended.
                    if let Some(id) = self.cleaning.take() {
                        self.queue_result(id, now_ms, CommandStatus::Ok, false);
                    }
                    Class::Session
                }
                EventKind::Session(_) => Class::Session,
                EventKind::Fault(f) => {
                    if self.fault_log.is_full() {
                        self.fault_log.pop_front();
                    }
                    let _ = self.fault_log.push_back(LoggedFault {
                        code: f.code,
                        state: f.state,
                        ts: now_ms,
                    });
                    Class::Fault
                }
            };
            let msg = Event {
                v: SCHEMA_VERSION,
                device_id: self.device_id.clone(),
                boot_id: self.boot_id,
                seq: self.seq,
                ts: now_ms,
                event: e.clone(),
            };
            self.enqueue(&msg, Channel::Event, class);
        }
    }

    fn enqueue<T: Serialize>(&mut self, msg: &T, channel: Channel, class: Class) -> Pushed {
        let mut buf = [0u8; MAX_MESSAGE];
        let Ok(n) = encode(msg, &mut buf) else {
            // Cannot happen for contract messages (largest is ~520 bytes); counted as rejected.
            return Pushed::Rejected;
        };
        let mut payload = heapless::Vec::new();
        let _ = payload.extend_from_slice(&buf[..n]);
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.outbox.push(Message {
            channel,
            class,
            seq,
            payload,
        })
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
