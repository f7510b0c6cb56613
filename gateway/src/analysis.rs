//! The analytics stage of ingest: every accepted telemetry and event message goes
//! through its device's fault rules (`analytics::rules::DeviceRules`) and its
//! cartridges' due-date forecaster (`analytics::DeviceForecaster`: one per device, the
//! household's use learned once for all its slots), in arrival order, on device time.
//! What comes out:
//!
//! * [`DeviceFinding`]s — edges of conditions (a leak began, the fixture has been unused
//!   7 days, the device went silent, a filter is due on a date) — which the pipeline
//!   stores as `finding` points and hands to the maintenance engine with the batch,
//!   before the batch is acknowledged;
//! * `forecast` points, once per device-day and slot, for dashboards.
//!
//! Silence is judged on an event-time clock: the newest device timestamp seen
//! fleet-wide (never ahead of the wall clock), swept every `clock_every` of it, so an
//! accelerated replay finds the same silent devices as real time; each sweep judges the
//! devices at the fleet's upper quartile of newest timestamps, so a quarter of the fleet
//! running ahead (clocks hours fast, the first devices of a backlog) makes no one silent. The per-device rule
//! and forecast state is snapshotted to the state database (only the devices touched
//! since the last snapshot) so a restart does not forget what each device's normal
//! looks like. The forecasters' parameters (one configuration, one specification per
//! cartridge kind) live once in the [`Analyzer`], not in the snapshots; a snapshot of
//! an older format keeps its rules and starts the device's forecasts afresh.
//!
//! A cartridge's rated capacity comes from the device when it reports it (contract v1.1
//! `rated_l`), else from the maintenance registry ([`CartridgeRatings`]: a table
//! shared with the code that reads the registry, swapped whole, which the stage reads
//! without ever waiting), else from the catalogue. A v1.1 online status that says its
//! boot lost the counters tells the forecaster that the counters of that boot restarted
//! (a reset, not a cartridge replacement).
//!
//! A late message (one that fills a hole in its device's sequence, such as an offline
//! backlog delivered newest-first after live traffic) is analysed in device-time order:
//! the device's rules replay from a checkpoint taken before the hole ([`backfill`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use analytics::rules::{DeviceRules, Finding, FindingKind, FindingState, RulesConfig};
use analytics::{DeviceForecaster, ForecastConfig, ForecastParams, SlotReading};
use protocol::message::{Cartridge, CartridgeKind, Model, Reading, Severity, Status, INVALID_PPM};
use serde::{Deserialize, Serialize};

use crate::decode::Message;
use crate::sequence::SeqVerdict;
use crate::store::{FieldValue, Point};

pub mod backfill;

use backfill::Backfill;

use protocol::catalog::DAY_MS;

/// `[analytics]` of the gateway's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Run the analytics stage (default true).
    pub enabled: bool,
    /// Event-time seconds between sweeps of the clock-driven rules (silence, unused).
    pub clock_every_s: u64,
    /// Wall-clock seconds between snapshots of the rule state to the state database.
    pub snapshot_every_s: u64,
    /// Event-time seconds a device's rules wait, after a hole in its sequence, for the
    /// late messages that fill it before going on without them ([`backfill`]).
    pub late_hold_s: u64,
    /// Gateway-clock seconds without a late message after which a device's late
    /// messages are analysed (the backlog is over; what is still missing is lost).
    pub late_quiet_s: u64,
    /// Thresholds of the fault rules (defaults from the analytics crate).
    pub rules: RulesConfig,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            enabled: true,
            clock_every_s: 300,
            snapshot_every_s: 30,
            late_hold_s: 3 * 3600,
            late_quiet_s: 10,
            rules: RulesConfig::default(),
        }
    }
}

/// A finding about one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFinding {
    /// The device.
    pub device_id: String,
    /// The finding.
    pub finding: Finding,
}

impl DeviceFinding {
    /// The `finding` point stored for dashboards (tags device and kind; the edge, severity,
    /// start and evidence as fields), at the time the edge was seen.
    pub fn point(&self) -> Point {
        let f = &self.finding;
        let mut fields = vec![
            (
                "state".into(),
                FieldValue::Str(
                    match f.state {
                        FindingState::Active => "active",
                        FindingState::Cleared => "cleared",
                    }
                    .into(),
                ),
            ),
            (
                "active".into(),
                FieldValue::Bool(f.state == FindingState::Active),
            ),
            (
                "severity".into(),
                FieldValue::Str(f.severity.as_str().into()),
            ),
            ("began_ts_ms".into(), FieldValue::Int(f.began_ts_ms)),
            (
                "evidence".into(),
                FieldValue::Str(f.evidence.to_string().into()),
            ),
        ];
        if let FindingKind::FilterDue { slot, due_ts_ms } = f.kind {
            fields.push(("slot".into(), FieldValue::Int(i64::from(slot))));
            fields.push(("due_ts_ms".into(), FieldValue::Int(due_ts_ms)));
        }
        Point {
            measurement: "finding".into(),
            tags: vec![
                ("device_id".into(), self.device_id.clone().into()),
                ("kind".into(), f.kind.as_str().into()),
            ],
            fields,
            ts_ms: f.at_ts_ms,
        }
    }

    /// The same finding as the maintenance engine's input (the two share the kinds).
    pub fn to_maintenance(&self) -> maintenance::Finding {
        let f = &self.finding;
        maintenance::Finding {
            device_id: self.device_id.clone(),
            kind: f.kind,
            severity: f.severity,
            evidence: f.evidence.clone(),
            began_ts_ms: f.began_ts_ms,
            state: f.state,
        }
    }
}

/// What the analytics state costs, see [`Analyzer::cost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalysisCost {
    /// Devices with state.
    pub devices: usize,
    /// Bytes of state in all.
    pub state_bytes: usize,
    /// Cartridge slots with a forecast.
    pub cartridges: usize,
    /// Per model (toilet, shower, purifier, in that order).
    pub by_model: [ModelCost; 3],
}

/// The analytics state of the devices of one model, see [`AnalysisCost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelCost {
    /// The model.
    pub model: Model,
    /// Its devices with state.
    pub devices: usize,
    /// Their bytes of state in all (inline and heap).
    pub state_bytes: usize,
    /// Of which the fault rules (`DeviceRules::state_bytes`, inline and heap).
    pub rules_bytes: usize,
    /// The largest state of one of its devices.
    pub max_device_bytes: usize,
    /// Of which the cartridge forecasts (usage model, slots, report bookkeeping).
    pub forecast_bytes: usize,
}

/// Registry ratings per device: `(slot, rated litres)`.
pub type RatingTable = HashMap<String, Box<[(u8, u32)]>>;

/// The maintenance registry's rated capacity of each device's cartridge slots, shared
/// between whoever reads the registry (at start, after `gateway devices import`, after
/// a registration, periodically: [`CartridgeRatings::refresh`]) and the analysis stage.
/// The table is swapped whole; the stage takes the newest table only when no swap is
/// under way (`try_read`), otherwise it keeps the one it has, so ingest never waits.
#[derive(Debug, Clone, Default)]
pub struct CartridgeRatings {
    inner: Arc<RatingsInner>,
}

#[derive(Debug, Default)]
struct RatingsInner {
    table: RwLock<Arc<RatingTable>>,
    /// Incremented at each swap (the stage looks for a new table only then).
    version: AtomicU64,
    /// A cheap summary of the registry's cartridges at the last load (rows, sum of
    /// ratings, largest row id), so a periodic refresh rebuilds only on a change.
    fingerprint: std::sync::Mutex<Option<(i64, i64, i64)>>,
}

impl CartridgeRatings {
    /// An empty table.
    pub fn new() -> CartridgeRatings {
        CartridgeRatings::default()
    }

    /// Replaces the whole table.
    pub fn replace(&self, table: RatingTable) {
        let table = Arc::new(table);
        match self.inner.table.write() {
            Ok(mut g) => *g = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
        self.inner.version.fetch_add(1, Ordering::Release);
    }

    /// The version of the table (changes at each [`replace`](Self::replace)).
    pub fn version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }

    /// The current table, unless a swap holds the lock right now.
    pub fn try_table(&self) -> Option<Arc<RatingTable>> {
        self.inner.table.try_read().ok().map(|g| Arc::clone(&g))
    }

    /// Reads the registry's cartridges (one query) when they changed since the last
    /// load and swaps the table; returns whether it did. Blocking (SQLite): call it from
    /// `spawn_blocking` or a CLI, never on the ingest path.
    pub fn refresh(&self, engine: &maintenance::Engine) -> Result<bool, maintenance::Error> {
        let (fingerprint, table) = engine.read(|conn| {
            let fp = maintenance::registry::cartridge_ratings_fingerprint(conn)?;
            let unchanged = self
                .inner
                .fingerprint
                .lock()
                .map(|g| *g == Some(fp))
                .unwrap_or(false);
            if unchanged {
                return Ok((fp, None));
            }
            let mut table: HashMap<String, Vec<(u8, u32)>> = HashMap::new();
            for (device, slot, rated) in maintenance::registry::cartridge_ratings(conn)? {
                if rated > 0 {
                    table.entry(device).or_default().push((slot, rated));
                }
            }
            Ok((fp, Some(table)))
        })?;
        let Some(table) = table else {
            return Ok(false);
        };
        let devices = table.len();
        self.replace(
            table
                .into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect(),
        );
        if let Ok(mut g) = self.inner.fingerprint.lock() {
            *g = Some(fingerprint);
        }
        tracing::debug!(devices, "Cartridge ratings reloaded from the registry.");
        Ok(true)
    }

    /// Refreshes from the registry every `every` until `shutdown` changes (the first
    /// load at once). For the service: `tasks.spawn(ratings.run_refresher(..))`.
    pub async fn run_refresher(
        self,
        engine: Arc<maintenance::Engine>,
        every: std::time::Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            let (me, engine) = (self.clone(), Arc::clone(&engine));
            match tokio::task::spawn_blocking(move || me.refresh(&engine)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Cannot read the cartridge ratings from the registry; keeping the last ones.")
                }
                Err(e) => tracing::warn!(error = %e, "Cartridge ratings refresh failed."),
            }
        }
    }
}

/// The analysis stage's view of the registry ratings: the last table taken and its version.
#[derive(Debug, Default)]
struct RatingsView {
    source: Option<CartridgeRatings>,
    version: u64,
    table: Arc<RatingTable>,
}

impl RatingsView {
    /// Takes a newer table if there is one and it can be had without waiting.
    fn update(&mut self) {
        let Some(src) = &self.source else {
            return;
        };
        let v = src.version();
        if v != self.version {
            if let Some(t) = src.try_table() {
                self.table = t;
                self.version = v;
            }
        }
    }

    fn get(&self, device_id: &str, slot: u8) -> Option<u32> {
        self.table
            .get(device_id)?
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, r)| *r)
    }
}

/// The last `FilterDue` due day reported of a slot.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ReportedDue {
    slot: u8,
    /// Due day (UTC day index, saturated to `i32`).
    due_day: i32,
}

/// A device's cartridge forecaster and what was last reported of it. Serialised as
/// [`SavedForecasts`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "SavedForecasts", into = "SavedForecasts")]
struct CartridgeForecasts {
    forecaster: DeviceForecaster,
    /// Per slot, the due day of the last `FilterDue` finding (a few slots per device:
    /// exactly as many as reported).
    reported: Box<[ReportedDue]>,
    /// Contract v1.1: the last boot the device announced, and whether it lost the counters.
    boot_report: Option<(u32, bool)>,
}

/// [`CartridgeForecasts`] as snapshots hold it. `forecast_day`, the (UTC) day of the last
/// forecasts made, is that of the forecaster's newest reading (forecasts are made on the
/// first reading of each day, and every version kept it so): written to the snapshot,
/// derived in memory.
#[derive(Debug, Serialize, Deserialize)]
struct SavedForecasts {
    forecaster: DeviceForecaster,
    forecast_day: i64,
    reported: Vec<ReportedDue>,
    #[serde(default)]
    boot_report: Option<(u32, bool)>,
}

impl From<SavedForecasts> for CartridgeForecasts {
    fn from(saved: SavedForecasts) -> Self {
        // The day of the forecaster's newest reading, as `forecast_day()` derives it.
        let _ = saved.forecast_day;
        CartridgeForecasts {
            forecaster: saved.forecaster,
            reported: saved.reported.into_boxed_slice(),
            boot_report: saved.boot_report,
        }
    }
}

impl From<CartridgeForecasts> for SavedForecasts {
    fn from(f: CartridgeForecasts) -> Self {
        SavedForecasts {
            forecast_day: f.forecast_day(),
            forecaster: f.forecaster,
            reported: f.reported.into_vec(),
            boot_report: f.boot_report,
        }
    }
}

impl CartridgeForecasts {
    fn new() -> CartridgeForecasts {
        CartridgeForecasts {
            forecaster: DeviceForecaster::new(),
            reported: Box::default(),
            boot_report: None,
        }
    }

    /// Day of the last forecasts made (`i64::MIN` before the first reading).
    fn forecast_day(&self) -> i64 {
        self.forecaster
            .last_reading_ms()
            .map_or(i64::MIN, |t| t.div_euclid(DAY_MS))
    }

    /// Bytes on the heap behind the box (the box's own target included).
    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<CartridgeForecasts>() - std::mem::size_of::<DeviceForecaster>()
            + self.forecaster.state_bytes()
            + std::mem::size_of_val(&*self.reported)
    }
}

/// A device's rule state and cartridge forecasts: what is snapshotted.
#[derive(Debug, Serialize, Deserialize)]
struct DeviceState {
    rules: DeviceRules,
    /// Devices with cartridges only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cartridges: Option<Box<CartridgeForecasts>>,
}

impl DeviceState {
    fn new(model: Model, rules_cfg: &RulesConfig) -> DeviceState {
        DeviceState {
            rules: DeviceRules::new(model, rules_cfg),
            cartridges: None,
        }
    }
}

/// Ends a device's backfill: its replay replaces the rules, and the edges that change
/// what was reported go to `out`.
fn end_backfill(
    rules: &mut DeviceRules,
    backfill: Box<Backfill>,
    device_id: &str,
    cfg: &RulesConfig,
    at_ts_ms: i64,
    late: &mut LateCounts,
    out: &mut Vec<Finding>,
) {
    let (kept, replayed) = (backfill.len(), backfill.late());
    late.kept -= kept;
    late.replayed += replayed;
    let before = out.len();
    if let Some(new) = backfill.replay(cfg, rules, at_ts_ms, out) {
        *rules = new;
        tracing::info!(device_id, kept, late = replayed, edges = out.len() - before, "Late messages analysed in device-time order (replayed from the checkpoint before the hole).");
    }
}

/// Where a message stands in its device's sequence ([`crate::sequence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// What the sequence check made of it.
    pub verdict: SeqVerdict,
    /// The device's missing-message count before it.
    pub missing_before: u64,
    /// The device's missing-message count after it.
    pub missing_after: u64,
    /// Gateway time it arrived, UTC ms.
    pub received_ms: i64,
}

/// Late messages (filling a hole in their device's sequence), counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LateCounts {
    /// Analysed in device-time order by a replay.
    pub replayed: u64,
    /// Older than any checkpoint: the rules skipped them (logged).
    pub unordered: u64,
    /// Messages kept by open backfills now.
    pub kept: usize,
}

/// A saved [`DeviceState`] of this version or an older one.
#[derive(Debug, Deserialize)]
struct SavedDeviceState {
    rules: DeviceRules,
    /// This version's forecasts, parsed on their own so that a failure loses only them.
    #[serde(default)]
    cartridges: Option<serde_json::Value>,
    /// The per-slot forecasters of older versions (each with its own copy of the
    /// configuration and the usage): not loaded.
    #[serde(default)]
    slots: Vec<serde::de::IgnoredAny>,
}

/// Everything the analytics stage knows, per device.
#[derive(Debug)]
pub struct Analyzer {
    cfg: AnalyticsConfig,
    devices: foldhash::HashMap<String, DeviceState>,
    /// The forecasters' parameters (standard cartridge kinds); `None` if they do not
    /// validate, and then nothing is forecast.
    forecast_params: Option<ForecastParams>,
    /// Reused buffer of a message's slot readings.
    readings: Vec<SlotReading>,
    /// The registry's cartridge ratings.
    ratings: RatingsView,
    /// Newest device timestamp seen (the event-time clock).
    watermark_ms: i64,
    /// Reused buffer of the devices' newest timestamps (the fleet clock of a sweep).
    heard_scratch: Vec<i64>,
    last_sweep_ms: i64,
    dirty: foldhash::HashSet<String>,
    late: LateCounts,
    /// Devices with an open backfill and that backfill, held here rather than in every
    /// device's state (`None` once the device's state was replaced, by a new model or a
    /// restore, until the next check lets the device go); and when they were last
    /// checked (gateway time).
    open_backfills: foldhash::HashMap<String, Option<Box<Backfill>>>,
    backfills_checked_ms: i64,
}

impl Analyzer {
    /// An analyzer that knows nothing yet.
    pub fn new(cfg: AnalyticsConfig) -> Analyzer {
        let forecast_params = ForecastParams::standard(ForecastConfig::default())
            .map_err(|e| tracing::warn!(error = %e, "Forecast parameters do not validate; no filter due dates are forecast."))
            .ok();
        Analyzer {
            cfg,
            devices: foldhash::HashMap::default(),
            forecast_params,
            readings: Vec::new(),
            ratings: RatingsView::default(),
            watermark_ms: i64::MIN,
            heard_scratch: Vec::new(),
            last_sweep_ms: i64::MIN,
            dirty: foldhash::HashSet::default(),
            late: LateCounts::default(),
            open_backfills: foldhash::HashMap::default(),
            backfills_checked_ms: i64::MIN,
        }
    }

    /// Reads the registry's cartridge ratings from `ratings` (kept up to date by its
    /// owner) for the slots whose device does not report its own.
    pub fn set_ratings(&mut self, ratings: CartridgeRatings) {
        self.ratings = RatingsView {
            source: Some(ratings),
            version: u64::MAX,
            table: Arc::default(),
        };
        self.ratings.update();
    }

    /// Restores the state saved by [`Analyzer::take_snapshot`] (rules and forecasts). A
    /// snapshot of the rules alone, or with the per-slot forecasters of an older
    /// version, restores the rules, and that device's forecasts start afresh (logged at
    /// warn). Entries that no longer parse are skipped, and those devices relearn.
    pub fn restore(&mut self, saved: Vec<(String, String)>) -> usize {
        let mut restored = 0;
        for (device_id, json) in saved {
            let state = match serde_json::from_str::<SavedDeviceState>(&json) {
                Ok(saved) => {
                    let cartridges = match saved.cartridges {
                        Some(value) => serde_json::from_value::<Box<CartridgeForecasts>>(value)
                            .map_err(|e| tracing::warn!(%device_id, error = %e, "Saved cartridge forecasts do not load; the device's forecasts start afresh."))
                            .ok(),
                        None => {
                            if !saved.slots.is_empty() {
                                tracing::warn!(%device_id, "Saved cartridge forecasts are of an older format; the device's forecasts start afresh.");
                            }
                            None
                        }
                    };
                    Ok(DeviceState {
                        rules: saved.rules,
                        cartridges,
                    })
                }
                Err(e) => serde_json::from_str::<DeviceRules>(&json)
                    .map(|rules| DeviceState {
                        rules,
                        cartridges: None,
                    })
                    .map_err(|_| e),
            };
            match state {
                Ok(state) => {
                    // A backfill open on the state replaced is dropped with it.
                    if let Some(backfill) = self.open_backfills.get_mut(&device_id) {
                        *backfill = None;
                    }
                    self.devices.insert(device_id, state);
                    restored += 1;
                }
                Err(e) => {
                    tracing::warn!(%device_id, error = %e, "Saved analytics state does not load; the device's baseline is relearned.")
                }
            }
        }
        restored
    }

    /// The state (rules and forecasters) of every device touched since the last call, as JSON.
    pub fn take_snapshot(&mut self) -> Vec<(String, String)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|id| {
                let state = self.devices.get(&id)?;
                match serde_json::to_string(state) {
                    Ok(json) => Some((id, json)),
                    Err(e) => {
                        tracing::warn!(device_id = %id, error = %e, "Cannot serialise analytics state.");
                        None
                    }
                }
            })
            .collect()
    }

    /// Devices with state.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Devices with state and the bytes of that state (inline and on the heap, not
    /// counting the map's own buckets and keys nor the allocator's bookkeeping).
    pub fn cost(&self) -> AnalysisCost {
        let models = [Model::Toilet, Model::Shower, Model::Purifier];
        let mut by_model = models.map(|model| ModelCost {
            model,
            devices: 0,
            state_bytes: 0,
            rules_bytes: 0,
            max_device_bytes: 0,
            forecast_bytes: 0,
        });
        let mut cartridges = 0;
        for d in self.devices.values() {
            let forecast_bytes = d.cartridges.as_ref().map_or(0, |c| c.heap_bytes());
            cartridges += d
                .cartridges
                .as_ref()
                .map_or(0, |c| c.forecaster.slots().count());
            if let Some(m) = by_model.iter_mut().find(|m| m.model == d.rules.model()) {
                m.devices += 1;
                let rules_heap = d.rules.state_bytes() - std::mem::size_of::<DeviceRules>();
                let device_bytes = std::mem::size_of::<DeviceState>() + rules_heap + forecast_bytes;
                m.state_bytes += device_bytes;
                m.max_device_bytes = m.max_device_bytes.max(device_bytes);
                m.rules_bytes += d.rules.state_bytes();
                m.forecast_bytes += forecast_bytes;
            }
        }
        AnalysisCost {
            devices: self.devices.len(),
            state_bytes: by_model.iter().map(|m| m.state_bytes).sum(),
            cartridges,
            by_model,
        }
    }

    /// Late messages counted since the analyzer began.
    pub fn late_counts(&self) -> LateCounts {
        self.late
    }

    /// Whether some device's backfill is open (late messages may be held).
    pub fn has_open_backfills(&self) -> bool {
        !self.open_backfills.is_empty()
    }

    /// Feeds one accepted message (not a duplicate) of `device_id`, taken to be in
    /// order. Findings go to `findings`, forecast points to `points`.
    pub fn observe(
        &mut self,
        device_id: &str,
        message: &Message,
        findings: &mut Vec<DeviceFinding>,
        points: &mut Vec<Point>,
    ) {
        self.observe_arrival(device_id, Cow::Borrowed(message), None, findings, points);
    }

    /// Like [`Analyzer::observe`], with where the message stands in its device's
    /// sequence: a late one is analysed in device-time order (see [`backfill`]). A message
    /// an open backfill keeps is moved into it if owned (cloned if borrowed).
    pub fn observe_arrival(
        &mut self,
        device_id: &str,
        message: Cow<'_, Message>,
        arrival: Option<Arrival>,
        findings: &mut Vec<DeviceFinding>,
        points: &mut Vec<Point>,
    ) {
        let (model, ts) = match &*message {
            Message::Telemetry(t) => (Some(t.reading.model()), t.ts),
            Message::Event(e) => (None, e.ts),
            Message::Status(s) => {
                self.on_status(device_id, s);
                return;
            }
        };
        let rules_cfg = &self.cfg.rules;
        let state = match (self.devices.get_mut(device_id), model) {
            // Telemetry tells the model for sure; a first event may have guessed it wrong.
            (Some(state), Some(m)) if state.rules.model() != m => {
                *state = DeviceState::new(m, rules_cfg);
                if let Some(backfill) = self.open_backfills.get_mut(device_id) {
                    *backfill = None; // dropped with the state replaced
                }
                state
            }
            (Some(state), _) => state,
            (None, _) => {
                let model = model.unwrap_or_else(|| guess_model(&message));
                self.devices
                    .entry(device_id.to_owned())
                    .or_insert_with(|| DeviceState::new(model, rules_cfg))
            }
        };
        let mut out = Vec::new();
        let late = arrival.is_some_and(|a| a.verdict == SeqVerdict::LateFill);
        let first = arrival.is_some_and(|a| a.verdict == SeqVerdict::First);
        let after_hole = arrival.is_some_and(|a| {
            matches!(a.verdict, SeqVerdict::Gap(_))
                || matches!(a.verdict, SeqVerdict::NewBoot(n) if n > 0)
        });
        let event_now = self.watermark_ms.max(ts);
        let hold_until = event_now.saturating_add(seconds_ms(self.cfg.late_hold_s));
        if let Some(a) = arrival {
            let quiet_ms = seconds_ms(self.cfg.late_quiet_s);
            if self
                .open_backfills
                .get(device_id)
                .and_then(Option::as_ref)
                .is_some_and(|b| b.expired(event_now, a.received_ms, quiet_ms))
            {
                if let Some(Some(b)) = self.open_backfills.remove(device_id) {
                    end_backfill(
                        &mut state.rules,
                        b,
                        device_id,
                        rules_cfg,
                        ts,
                        &mut self.late,
                        &mut out,
                    );
                }
            }
            let has_backfill = self
                .open_backfills
                .get(device_id)
                .is_some_and(Option::is_some);
            if (after_hole || first) && !has_backfill && self.late.kept < backfill::MAX_TOTAL {
                tracing::debug!(%device_id, ?a, "The device's rules keep a checkpoint for late messages.");
                self.open_backfills.insert(
                    device_id.to_owned(),
                    Some(Box::new(Backfill::open(
                        state.rules.clone(),
                        a.missing_before,
                        hold_until,
                        first,
                        a.received_ms,
                    ))),
                );
            }
        }
        // Kept for the replay: every new message after the checkpoint; a late one is
        // analysed only by it. (Kept once the rules below have seen it, so it is moved,
        // not copied; nothing in between reads the backfill.)
        let kept = match self.open_backfills.get(device_id) {
            Some(Some(b)) => backfill::sequence_of(&message).is_some_and(|s| b.covers(s)),
            _ => false,
        };
        let held = kept && late;
        if late && !held {
            self.late.unordered += 1;
            tracing::debug!(%device_id, ?arrival, "A late message older than the device's checkpoint: the rules skip it.");
        }
        match &*message {
            Message::Telemetry(t) => {
                if !held {
                    state.rules.on_telemetry(rules_cfg, t, &mut out);
                }
                let (cartridges, tds): (&[Cartridge], Option<(u16, u16)>) = match &t.reading {
                    Reading::Purifier(r) => (&r.cartridges, Some((r.tds_in_ppm, r.tds_out_ppm))),
                    Reading::Shower(r) => (&r.cartridges, None),
                    Reading::Toilet(_) => (&[], None),
                };
                if let (false, Some(params)) = (cartridges.is_empty(), &self.forecast_params) {
                    let forecasts = state
                        .cartridges
                        .get_or_insert_with(|| Box::new(CartridgeForecasts::new()));
                    self.ratings.update();
                    forecast_cartridges(
                        forecasts,
                        params,
                        &mut self.readings,
                        &self.ratings,
                        device_id,
                        t.ts,
                        t.boot_id,
                        cartridges,
                        tds,
                        &mut out,
                        points,
                    );
                }
            }
            Message::Event(e) => {
                if !held {
                    state.rules.on_event(rules_cfg, e, &mut out);
                }
            }
            Message::Status(_) => {}
        }
        if kept {
            if let Some(Some(b)) = self.open_backfills.get_mut(device_id) {
                let wall_ms = arrival.map_or(i64::MIN, |a| a.received_ms);
                b.keep(message.into_owned(), late, hold_until, wall_ms);
                self.late.kept += 1;
            }
        }
        if let (Some(Some(b)), Some(a)) = (self.open_backfills.get(device_id), arrival) {
            if b.complete(a.missing_after)
                || b.len() >= backfill::MAX_PER_DEVICE
                || self.late.kept >= backfill::MAX_TOTAL
            {
                if let Some(Some(b)) = self.open_backfills.remove(device_id) {
                    end_backfill(
                        &mut state.rules,
                        b,
                        device_id,
                        rules_cfg,
                        ts,
                        &mut self.late,
                        &mut out,
                    );
                }
            }
        }
        if !self.dirty.contains(device_id) {
            self.dirty.insert(device_id.to_owned());
        }
        self.watermark_ms = self.watermark_ms.max(ts);
        findings.extend(out.into_iter().map(|finding| DeviceFinding {
            device_id: device_id.to_owned(),
            finding,
        }));
    }

    /// A status: a v1.1 online status announcing its boot (and whether it lost the
    /// counters) is kept for the forecasts of a device with cartridges.
    fn on_status(&mut self, device_id: &str, s: &Status) {
        let (Some(boot_id), Some(reboot)) = (s.boot_id, s.reboot) else {
            return;
        };
        let Some(forecasts) = self
            .devices
            .get_mut(device_id)
            .and_then(|d| d.cartridges.as_mut())
        else {
            return;
        };
        forecasts.boot_report = Some((boot_id, reboot.counters_lost));
        if !self.dirty.contains(device_id) {
            self.dirty.insert(device_id.to_owned());
        }
    }

    /// Runs the clock-driven rules of every device when the event-time clock
    /// (the newest device time, capped at `wall_now_ms`) has moved on by `clock_every`.
    pub fn sweep(&mut self, wall_now_ms: i64, findings: &mut Vec<DeviceFinding>) {
        if self.watermark_ms == i64::MIN {
            return;
        }
        let now = self.watermark_ms.min(wall_now_ms);
        self.end_finished_backfills(now, wall_now_ms, findings);
        let every = i64::try_from(self.cfg.clock_every_s.max(1)).unwrap_or(60) * 1000;
        if self.last_sweep_ms != i64::MIN && now < self.last_sweep_ms + every {
            return;
        }
        self.last_sweep_ms = now;
        // Silence is judged on where the fleet is, not on its newest clock: one device
        // whose clock runs hours ahead, or the first devices of a backlog delivered fast,
        // would otherwise make every other device look silent.
        let clock = now.min(self.fleet_clock_ms().unwrap_or(now));
        let cfg = &self.cfg.rules;
        let mut out = Vec::new();
        for (device_id, state) in &mut self.devices {
            state.rules.on_clock(cfg, clock, &mut out);
            if !out.is_empty() {
                self.dirty.insert(device_id.clone());
                findings.extend(out.drain(..).map(|finding| DeviceFinding {
                    device_id: device_id.clone(),
                    finding,
                }));
            }
        }
    }

    /// The fleet clock: the upper quartile of the devices' newest timestamps (the
    /// `n / 4 + 1`-th newest: the newest itself for up to three devices). A quarter of the
    /// fleet may run ahead (clocks hours off, the first of a backlog) without moving it;
    /// one silent device does not hold it back.
    fn fleet_clock_ms(&mut self) -> Option<i64> {
        self.heard_scratch.clear();
        self.heard_scratch.extend(
            self.devices
                .values()
                .filter_map(|d| d.rules.last_heard_ts_ms()),
        );
        let n = self.heard_scratch.len();
        if n == 0 {
            return None;
        }
        let k = n / 4;
        let (_, kth, _) = self
            .heard_scratch
            .select_nth_unstable_by(k, |a, b| b.cmp(a));
        Some(*kth)
    }

    /// Ends the backfills whose hold time passed or whose backlog went quiet (checked
    /// at most once a second of gateway time, and only the devices that have one).
    fn end_finished_backfills(
        &mut self,
        event_now_ms: i64,
        wall_now_ms: i64,
        findings: &mut Vec<DeviceFinding>,
    ) {
        if self.open_backfills.is_empty()
            || wall_now_ms < self.backfills_checked_ms.saturating_add(1000)
        {
            return;
        }
        self.backfills_checked_ms = wall_now_ms;
        let quiet_ms = seconds_ms(self.cfg.late_quiet_s);
        let cfg = &self.cfg.rules;
        let (devices, late, dirty) = (&mut self.devices, &mut self.late, &mut self.dirty);
        let mut out = Vec::new();
        self.open_backfills.retain(|device_id, backfill| {
            let Some(state) = devices.get_mut(device_id) else {
                return false;
            };
            let b = match backfill.take() {
                None => return false,
                Some(b) if !b.expired(event_now_ms, wall_now_ms, quiet_ms) => {
                    *backfill = Some(b);
                    return true;
                }
                Some(b) => b,
            };
            end_backfill(
                &mut state.rules,
                b,
                device_id,
                cfg,
                event_now_ms,
                late,
                &mut out,
            );
            dirty.insert(device_id.clone());
            findings.extend(out.drain(..).map(|finding| DeviceFinding {
                device_id: device_id.clone(),
                finding,
            }));
            false
        });
    }
}

/// Seconds of a config value as milliseconds.
fn seconds_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// The model an event implies when no telemetry has told it yet (device fault codes
/// mean the same on every model).
fn guess_model(message: &Message) -> Model {
    use protocol::message::{EventKind, SessionKind};
    match message {
        Message::Event(e) => match &e.event {
            EventKind::Session(s) => match s.kind {
                SessionKind::Seat
                | SessionKind::Wash
                | SessionKind::Flush
                | SessionKind::Cleaning => Model::Toilet,
                SessionKind::Dispense => Model::Purifier,
                SessionKind::Shower => Model::Shower,
            },
            EventKind::Fault(_) => Model::Toilet,
        },
        Message::Telemetry(t) => t.reading.model(),
        Message::Status(s) => s.model,
    }
}

/// Feeds a message's cartridge readings to the device's forecaster; once per day,
/// writes a `forecast` point per slot and, when a slot's predicted due day moved, a
/// `FilterDue` finding.
#[allow(clippy::too_many_arguments)] // the stage's state, split to borrow disjointly
fn forecast_cartridges(
    forecasts: &mut CartridgeForecasts,
    params: &ForecastParams,
    readings: &mut Vec<SlotReading>,
    ratings: &RatingsView,
    device_id: &str,
    ts: i64,
    boot_id: u32,
    cartridges: &[Cartridge],
    tds: Option<(u16, u16)>,
    out: &mut Vec<Finding>,
    points: &mut Vec<Point>,
) {
    readings.clear();
    readings.extend(cartridges.iter().map(|c| {
        let spec = ForecastParams::kind_id(c.kind);
        SlotReading {
            slot: c.slot,
            spec,
            ml_since_replacement: c.ml_since_replacement,
            replacements: c.replacements,
            // The device's own rating, else the registry's (else the catalogue's).
            rated_l: c.rated_l.or_else(|| ratings.get(device_id, c.slot)),
        }
    }));
    let boot = Some(analytics::BootInfo {
        boot_id,
        counters_lost: forecasts
            .boot_report
            .filter(|(b, _)| *b == boot_id)
            .map(|(_, lost)| lost),
    });
    let forecast_day = forecasts.forecast_day();
    if forecasts
        .forecaster
        .observe_boot(params, ts, boot, readings)
        .is_err()
    {
        return; // out of order (a late message): the forecaster keeps its state
    }
    if let Some((tds_in, tds_out)) = tds.filter(|(i, o)| *i != INVALID_PPM && *o != INVALID_PPM) {
        for c in cartridges
            .iter()
            .filter(|c| c.kind == CartridgeKind::ReverseOsmosis)
        {
            forecasts
                .forecaster
                .observe_quality(params, ts, c.slot, tds_in, tds_out);
        }
    }
    let day = ts.div_euclid(DAY_MS);
    if day == forecast_day {
        return;
    }
    for c in cartridges {
        let Ok(f) = forecasts.forecaster.forecast(params, c.slot, ts) else {
            continue;
        };
        points.push(Point {
            measurement: "forecast".into(),
            tags: vec![
                ("device_id".into(), device_id.to_owned().into()),
                ("slot".into(), crate::store::slot_tag(c.slot)),
            ],
            fields: vec![
                ("due_ts_ms".into(), FieldValue::Int(f.due_ms)),
                ("lo_ts_ms".into(), FieldValue::Int(f.lo_ms)),
                ("hi_ts_ms".into(), FieldValue::Int(f.hi_ms)),
                (
                    "days_left".into(),
                    FieldValue::Float(((f.due_ms - ts) as f64 / DAY_MS as f64).max(0.0)),
                ),
                (
                    "remaining_l".into(),
                    FieldValue::Float(if f.remaining_l.is_finite() {
                        f.remaining_l
                    } else {
                        0.0
                    }),
                ),
                (
                    "daily_l".into(),
                    FieldValue::Float(if f.daily_l.is_finite() {
                        f.daily_l
                    } else {
                        0.0
                    }),
                ),
                ("kind".into(), FieldValue::Str(c.kind.as_str().into())),
            ],
            ts_ms: ts,
        });
        // Report a due date when it moved enough to matter: a day when it is close, a tenth of
        // the time left when it is far (a forecast that wobbles by a day a month ahead would
        // otherwise reschedule the homeowner's reminders every day).
        let due_day = f.due_ms.div_euclid(DAY_MS);
        let days_left = (due_day - day).max(0);
        let due_day =
            i32::try_from(due_day).unwrap_or(if due_day < 0 { i32::MIN } else { i32::MAX });
        let reported = forecasts.reported.iter_mut().find(|r| r.slot == c.slot);
        let moved_enough = reported.as_ref().is_none_or(|last| {
            (i64::from(due_day) - i64::from(last.due_day)).abs() >= (days_left / 10).max(1)
        });
        if !moved_enough {
            continue;
        }
        match reported {
            Some(r) => r.due_day = due_day,
            None => {
                // A few slots per device: no spare capacity.
                let mut reported = std::mem::take(&mut forecasts.reported).into_vec();
                reported.push(ReportedDue {
                    slot: c.slot,
                    due_day,
                });
                forecasts.reported = reported.into_boxed_slice();
            }
        }
        out.push(Finding {
            kind: FindingKind::FilterDue {
                slot: c.slot,
                due_ts_ms: f.due_ms,
            },
            severity: Severity::Info,
            state: FindingState::Active,
            began_ts_ms: ts,
            at_ts_ms: ts,
            evidence: serde_json::json!({
                "cartridge": c.kind.as_str(),
                "due_ts_ms": f.due_ms, "lo_ts_ms": f.lo_ms, "hi_ts_ms": f.hi_ms,
                "reason": format!("{:?}", f.reason),
                "remaining_l": f.remaining_l, "daily_l": f.daily_l,
            }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<FindingKind> {
        use analytics::rules::Resource;
        vec![
            FindingKind::Leak,
            FindingKind::LongWash,
            FindingKind::MainBoardFault,
            FindingKind::HeaterFault,
            FindingKind::SensorFault,
            FindingKind::InletClog,
            FindingKind::LowInletPressure,
            FindingKind::Unused7Days,
            FindingKind::AbnormalUsage {
                resource: Resource::Water,
            },
            FindingKind::AbnormalUsage {
                resource: Resource::Energy,
            },
            FindingKind::FilterDue {
                slot: 2,
                due_ts_ms: 1_800_000_000_000,
            },
            FindingKind::DeviceSilent,
        ]
    }

    const T0: i64 = 1_764_000_000_000;

    /// A shower's telemetry: `ml` through its cartridge (slot 0, never replaced), the
    /// device's own rating if it reports one.
    fn shower(ts: i64, boot_id: u32, seq: u32, ml: u64, rated: Option<u32>) -> Message {
        let rated = rated.map_or(String::new(), |r| format!(r#","rated_l":{r}"#));
        let json = format!(
            r#"{{"v":1,"device_id":"shower-1","boot_id":{boot_id},"seq":{seq},"ts":{ts},"reading":{{"shower":{{"showers":1,"water_ml":{ml},"shower_seconds":60,"temp_c":39.0,"pressure_kpa":300.0,"cartridges":[{{"slot":0,"kind":"shower","ml_since_replacement":{ml},"replacements":0{rated}}}]}}}}}}"#
        );
        crate::decode::decode(
            "fixtures/shower-1/telemetry",
            json.as_bytes(),
            ts,
            &protocol::validate::Limits::default(),
        )
        .expect("valid telemetry")
        .message
    }

    /// The due dates of the `forecast` points, in order.
    fn dues(points: &[Point]) -> Vec<i64> {
        points
            .iter()
            .filter(|p| p.measurement == "forecast")
            .filter_map(|p| {
                p.fields.iter().find_map(|(k, v)| match (k.as_ref(), v) {
                    ("due_ts_ms", FieldValue::Int(x)) => Some(*x),
                    _ => None,
                })
            })
            .collect()
    }

    /// Feeds `days` of 40 l a day (telemetry every 2 h) and returns the last due date.
    fn last_due(a: &mut Analyzer, days: i64, rated: Option<u32>) -> i64 {
        let (mut findings, mut points) = (Vec::new(), Vec::new());
        let mut seq = 0;
        for h in 0..days * 12 {
            seq += 1;
            let ml = (h as u64) * 40_000 / 12;
            let m = shower(T0 + h * 2 * 3_600_000, 1, seq, ml, rated);
            a.observe("shower-1", &m, &mut findings, &mut points);
        }
        *dues(&points).last().expect("a forecast")
    }

    fn engine_with_a_shower(rated_litres: u32) -> Arc<maintenance::Engine> {
        let engine = crate::test_support::engine_with_a_toilet();
        engine
            .put_device(&maintenance::registry::Device {
                id: "shower-1".into(),
                home_id: "h1".into(),
                model: Model::Shower,
                installed_ts_ms: 0,
                cartridges: vec![maintenance::registry::CartridgeSpec {
                    slot: 0,
                    kind: CartridgeKind::Shower,
                    rated_litres,
                    max_age_days: 3650,
                    replaced_ts_ms: None,
                    replacements: 0,
                }],
            })
            .expect("device");
        Arc::new(engine)
    }

    /// Item: the registry's rating reaches the forecaster (and a device's own rating
    /// wins over it): a shower cartridge registered at twice the catalogue's capacity is
    /// due much later than the catalogue would say.
    #[test]
    fn the_registry_rating_and_the_device_rating_reach_the_forecast() {
        let catalogue = CartridgeKind::Shower.rated_litres();
        let mut plain = Analyzer::new(AnalyticsConfig::default());
        let due_catalogue = last_due(&mut plain, 12, None);

        let engine = engine_with_a_shower(catalogue * 2);
        let ratings = CartridgeRatings::new();
        assert!(ratings.refresh(&engine).expect("registry"), "first load");
        assert!(
            !ratings.refresh(&engine).expect("registry"),
            "nothing changed"
        );
        let mut registered = Analyzer::new(AnalyticsConfig::default());
        registered.set_ratings(ratings.clone());
        let due_registry = last_due(&mut registered, 12, None);
        // 40 l a day: twice the capacity is `catalogue / 40` days later.
        let later_days = (due_registry - due_catalogue) as f64 / DAY_MS as f64;
        let expected = f64::from(catalogue) / 40.0;
        assert!(
            (later_days - expected).abs() < 0.25 * expected,
            "{later_days:.1} days later, expected about {expected:.1}"
        );

        // The device's own rating (here the catalogue's) wins over the registry's.
        let mut reported = Analyzer::new(AnalyticsConfig::default());
        reported.set_ratings(ratings.clone());
        let due_reported = last_due(&mut reported, 12, Some(catalogue));
        assert!(
            (due_reported - due_catalogue).abs() < DAY_MS,
            "{due_reported} vs {due_catalogue}"
        );

        // A re-registration at another rating is picked up by the next refresh.
        engine
            .put_device(&maintenance::registry::Device {
                id: "shower-1".into(),
                home_id: "h1".into(),
                model: Model::Shower,
                installed_ts_ms: 0,
                cartridges: vec![maintenance::registry::CartridgeSpec {
                    slot: 0,
                    kind: CartridgeKind::Shower,
                    rated_litres: catalogue / 2,
                    max_age_days: 3650,
                    replaced_ts_ms: None,
                    replacements: 0,
                }],
            })
            .expect("device");
        assert!(ratings.refresh(&engine).expect("registry"));
        let mut half = Analyzer::new(AnalyticsConfig::default());
        half.set_ratings(ratings);
        assert!(last_due(&mut half, 12, None) < due_catalogue - 5 * DAY_MS);
    }

    /// Item: a v1.1 status saying the boot lost its counters makes the drop of the
    /// cartridge counter a reset (the volume is kept), where without it the drop reads
    /// as a fresh cartridge.
    #[test]
    fn a_boot_that_says_it_lost_the_counters_is_a_reset_not_a_replacement() {
        let run = |say_lost: bool| {
            let mut a = Analyzer::new(AnalyticsConfig::default());
            let (mut findings, mut points) = (Vec::new(), Vec::new());
            let mut seq = 0;
            let mut ml_seen = 0u64;
            for h in 0..20 * 12 {
                let ts = T0 + h * 2 * 3_600_000;
                let true_ml = (h as u64) * 40_000 / 12;
                let boot = if h < 10 * 12 { 1 } else { 2 };
                if h == 10 * 12 {
                    // The reboot: its status, then counters from zero.
                    let json = format!(
                        r#"{{"v":1,"device_id":"shower-1","ts":{ts},"state":"online","model":"shower","boot_id":2,"reboot":{{"reason":"power_on","counters_lost":{say_lost}}}}}"#
                    );
                    let m = crate::decode::decode(
                        "fixtures/shower-1/status",
                        json.as_bytes(),
                        ts,
                        &protocol::validate::Limits::default(),
                    )
                    .expect("status")
                    .message;
                    a.observe("shower-1", &m, &mut findings, &mut points);
                    ml_seen = true_ml;
                    seq = 0;
                }
                seq += 1;
                let m = shower(ts, boot, seq, true_ml - ml_seen, None);
                a.observe("shower-1", &m, &mut findings, &mut points);
            }
            let f = a
                .devices
                .get("shower-1")
                .and_then(|d| d.cartridges.as_ref())
                .expect("forecasts");
            f.forecaster.used_l(0).expect("slot")
        };
        // 20 days at 40 l: about 800 l through the cartridge when the reset is known.
        let kept = run(true);
        assert!((kept - 800.0).abs() < 20.0, "{kept}");
        // Told the counters were kept, a drop is a new cartridge: 10 days' worth.
        let replaced = run(false);
        assert!((replaced - 400.0).abs() < 20.0, "{replaced}");
    }

    /// Runs a simulated fleet's messages through decode and an analyzer; with `restart_half_way`,
    /// the analyzer is snapshotted and replaced by a restored one at the middle message.
    fn run_fleet(restart_half_way: bool) -> (Vec<DeviceFinding>, usize) {
        use simulator::faults::{FaultKind, Injection};
        let cfg = simulator::FleetConfig {
            devices: 6,
            days: 12,
            seed: 5,
            end_ms: 1_790_000_000_000,
            inject: vec![
                Injection::on("toilet-0000", FaultKind::Leak, 8.0, Some(1.0)),
                Injection::on("shower-0002", FaultKind::Offline, 9.0, Some(1.0)),
            ],
            ..simulator::FleetConfig::default()
        };
        let (messages, _) = simulator::Fleet::generate_all(cfg).unwrap();
        let limits = protocol::validate::Limits {
            max_age_ms: i64::MAX / 4,
            max_future_ms: i64::MAX / 4,
        };
        let mut analyzer = Analyzer::new(AnalyticsConfig::default());
        let (mut findings, mut points) = (Vec::new(), Vec::new());
        let restart_at = restart_half_way.then_some(messages.len() / 2);
        for (i, m) in messages.iter().enumerate() {
            if Some(i) == restart_at {
                let mut all = analyzer.take_snapshot();
                let saved_devices = analyzer.devices();
                // Devices not touched since the last snapshot were saved before; here, all were.
                all.sort();
                analyzer = Analyzer::new(AnalyticsConfig::default());
                assert_eq!(analyzer.restore(all), saved_devices);
            }
            let accepted =
                crate::decode::decode(&m.topic, &m.payload, 1_790_000_000_000, &limits).unwrap();
            analyzer.observe(
                accepted.device_id.as_str(),
                &accepted.message,
                &mut findings,
                &mut points,
            );
            analyzer.sweep(i64::MAX, &mut findings);
        }
        (
            findings,
            points
                .iter()
                .filter(|p| p.measurement == "forecast")
                .count(),
        )
    }

    #[test]
    fn a_simulated_leak_and_silence_are_found_and_a_restart_keeps_the_rule_state() {
        let (findings, forecasts) = run_fleet(false);
        let has = |dev: &str, kind: FindingKind, state: FindingState| {
            findings
                .iter()
                .any(|f| f.device_id == dev && f.finding.kind == kind && f.finding.state == state)
        };
        assert!(
            has("toilet-0000", FindingKind::Leak, FindingState::Active),
            "{findings:#?}"
        );
        assert!(
            has("toilet-0000", FindingKind::Leak, FindingState::Cleared),
            "{findings:#?}"
        );
        assert!(
            has(
                "shower-0002",
                FindingKind::DeviceSilent,
                FindingState::Active
            ),
            "{findings:#?}"
        );
        assert!(
            forecasts >= 12,
            "a forecast point per cartridge-day: {forecasts}"
        );
        // Restarting half-way from a snapshot gives the same findings, filter due dates included.
        let (restarted, restarted_forecasts) = run_fleet(true);
        assert_eq!(restarted, findings);
        assert_eq!(restarted_forecasts, forecasts);
    }

    /// A device whose clock runs 8 h ahead, heard after the others learnt their clocks,
    /// leads the fleet's newest timestamp: the others are judged at the fleet's upper
    /// quartile, so none looks silent; one that stops does.
    #[test]
    fn a_device_whose_clock_runs_hours_ahead_makes_no_other_device_silent() {
        let mut a = Analyzer::new(AnalyticsConfig::default());
        let (mut findings, mut points) = (Vec::new(), Vec::new());
        let wall = T0 + 30 * DAY_MS;
        for q in 0..192i64 {
            let ts = T0 + q * 15 * 60_000;
            for d in 0..8u32 {
                // shower-0 stops at 37.5 h; shower-7 (8 h ahead) is first heard at 12.5 h.
                if (d == 0 && q >= 150) || (d == 7 && q < 50) {
                    continue;
                }
                let device_ts = if d == 7 { ts + 8 * 3_600_000 } else { ts };
                let m = shower(device_ts, 1, q as u32 + 1, q as u64 * 1_000, None);
                a.observe(&format!("shower-{d}"), &m, &mut findings, &mut points);
            }
            a.sweep(wall, &mut findings);
        }
        let silent: Vec<&str> = findings
            .iter()
            .filter(|f| {
                f.finding.kind == FindingKind::DeviceSilent
                    && f.finding.state == FindingState::Active
            })
            .map(|f| f.device_id.as_str())
            .collect();
        assert_eq!(silent, ["shower-0"]);
    }

    /// One simulated toilet's messages, decoded, with a leak from day 8 for a day.
    fn toilet_with_a_leak() -> Vec<Message> {
        use simulator::faults::{FaultKind, Injection};
        let (messages, _) = simulator::Fleet::generate_all(simulator::FleetConfig {
            devices: 3,
            days: 12,
            seed: 11,
            end_ms: 1_790_000_000_000,
            inject: vec![Injection::on(
                "toilet-0000",
                FaultKind::Leak,
                8.0,
                Some(1.0),
            )],
            ..simulator::FleetConfig::default()
        })
        .unwrap();
        let limits = protocol::validate::Limits {
            max_age_ms: i64::MAX / 4,
            max_future_ms: i64::MAX / 4,
        };
        messages
            .iter()
            .filter(|m| m.topic.starts_with("fixtures/toilet-0000/"))
            .map(|m| {
                crate::decode::decode(&m.topic, &m.payload, 1_790_000_000_000, &limits)
                    .unwrap()
                    .message
            })
            .collect()
    }

    /// Feeds `messages` in the order given, checking each against the device's sequence
    /// state as the ingest stage does; returns the findings.
    fn feed_in_arrival_order(a: &mut Analyzer, messages: &[&Message]) -> Vec<DeviceFinding> {
        let mut seq = crate::sequence::DeviceSeq::default();
        let (mut findings, mut points) = (Vec::new(), Vec::new());
        for m in messages {
            let arrival = backfill::sequence_of(m).map(|(boot, n)| {
                let missing_before = seq.gaps;
                let verdict = seq.observe(boot, n);
                Arrival {
                    verdict,
                    missing_before,
                    missing_after: seq.gaps,
                    received_ms: 0,
                }
            });
            a.observe_arrival(
                "toilet-0000",
                Cow::Borrowed(m),
                arrival,
                &mut findings,
                &mut points,
            );
        }
        findings
    }

    /// The episodes still open at the end of a run of findings (kind, began).
    fn open_episodes(findings: &[DeviceFinding]) -> Vec<(String, i64)> {
        let mut open: Vec<(String, i64)> = Vec::new();
        for f in findings {
            let key = (format!("{:?}", f.finding.kind), f.finding.began_ts_ms);
            match f.finding.state {
                FindingState::Active => open.push(key),
                FindingState::Cleared => open.retain(|(k, _)| *k != key.0),
            }
        }
        open.sort();
        open
    }

    #[test]
    fn a_backlog_delivered_newest_first_after_live_traffic_is_analysed_in_device_time_order() {
        let messages = toilet_with_a_leak();
        let at_day = |d: f64| {
            let t0 = messages
                .iter()
                .find_map(|m| match m {
                    Message::Telemetry(t) => Some(t.ts),
                    _ => None,
                })
                .unwrap();
            let ts = t0 + (d * DAY_MS as f64) as i64;
            messages
                .iter()
                .position(|m| match m {
                    Message::Telemetry(t) => t.ts >= ts,
                    Message::Event(e) => e.ts >= ts,
                    Message::Status(_) => false,
                })
                .unwrap()
        };
        // Offline from day 7.5 to 8.6 (the leak begins at day 8), then live for an hour
        // before the backlog comes, newest first.
        let (offline, back, backlog_sent) = (at_day(7.5), at_day(8.6), at_day(8.64));
        assert!(backlog_sent - offline > 100, "a backlog worth the name");
        let in_order: Vec<&Message> = messages.iter().collect();
        let mut arrival: Vec<&Message> = messages[..offline].iter().collect();
        arrival.extend(&messages[back..backlog_sent]);
        arrival.extend(messages[offline..back].iter().rev());
        arrival.extend(&messages[backlog_sent..]);

        let mut ordered = Analyzer::new(AnalyticsConfig::default());
        let ordered_findings = feed_in_arrival_order(&mut ordered, &in_order);
        let mut late = Analyzer::new(AnalyticsConfig::default());
        let late_findings = feed_in_arrival_order(&mut late, &arrival);

        assert_eq!(
            late.late_counts(),
            LateCounts {
                replayed: (back - offline) as u64,
                unordered: 0,
                kept: 0
            },
            "every late message replayed, none skipped, nothing kept after the replay"
        );
        assert_eq!(
            late.devices["toilet-0000"].rules, ordered.devices["toilet-0000"].rules,
            "the replay leaves the rules exactly as messages in device-time order do"
        );
        let leak_began = |f: &[DeviceFinding]| {
            f.iter()
                .filter(|f| {
                    f.finding.kind == FindingKind::Leak && f.finding.state == FindingState::Active
                })
                .count()
        };
        assert!(leak_began(&ordered_findings) >= 1, "{ordered_findings:#?}");
        assert_eq!(
            leak_began(&late_findings),
            leak_began(&ordered_findings),
            "the leak is reported once, not again by the replay: {late_findings:#?}"
        );
        // The same episodes open at the end (an episode the live rules reported first
        // keeps the start they reported; the replay does not report it again).
        let kinds = |f: &[DeviceFinding]| {
            open_episodes(f)
                .into_iter()
                .map(|(kind, _)| kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&late_findings), kinds(&ordered_findings));

        // Without the sequence check (or for a hole older than the checkpoint) the rules
        // cannot place a late message: it is counted, never silently taken.
        let mut blind = Analyzer::new(AnalyticsConfig::default());
        let mut seq = crate::sequence::DeviceSeq::default();
        let (mut f, mut p) = (Vec::new(), Vec::new());
        for m in messages[..offline]
            .iter()
            .chain(&messages[back..backlog_sent])
        {
            if let Some((boot, n)) = backfill::sequence_of(m) {
                seq.observe(boot, n);
            }
            blind.observe("toilet-0000", m, &mut f, &mut p);
        }
        let m = messages[..back]
            .iter()
            .rev()
            .find(|m| backfill::sequence_of(m).is_some())
            .unwrap();
        let (boot, n) = backfill::sequence_of(m).unwrap();
        let before = seq.gaps;
        let verdict = seq.observe(boot, n);
        assert_eq!(verdict, crate::sequence::SeqVerdict::LateFill);
        let arrival = Arrival {
            verdict,
            missing_before: before,
            missing_after: seq.gaps,
            received_ms: 0,
        };
        blind.observe_arrival(
            "toilet-0000",
            Cow::Borrowed(m),
            Some(arrival),
            &mut f,
            &mut p,
        );
        assert_eq!(blind.late_counts().unordered, 1);
    }

    #[test]
    fn an_old_format_snapshot_keeps_its_rules_and_starts_the_forecasts_afresh() {
        let (messages, _) = simulator::Fleet::generate_all(simulator::FleetConfig {
            devices: 3,
            days: 8,
            seed: 3,
            end_ms: 1_790_000_000_000,
            ..simulator::FleetConfig::default()
        })
        .unwrap();
        let limits = protocol::validate::Limits {
            max_age_ms: i64::MAX / 4,
            max_future_ms: i64::MAX / 4,
        };
        let mut analyzer = Analyzer::new(AnalyticsConfig::default());
        let (mut findings, mut points) = (Vec::new(), Vec::new());
        for m in &messages {
            let accepted =
                crate::decode::decode(&m.topic, &m.payload, 1_790_000_000_000, &limits).unwrap();
            analyzer.observe(
                accepted.device_id.as_str(),
                &accepted.message,
                &mut findings,
                &mut points,
            );
        }
        let saved = analyzer.take_snapshot();
        let (id, json) = saved
            .iter()
            .find(|(id, _)| id.starts_with("purifier"))
            .cloned()
            .expect("a purifier");
        // The new format holds no configuration.
        assert!(
            json.contains("\"cartridges\"") && !json.contains("weekday_alpha"),
            "{json}"
        );
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("cartridges");
        // The per-slot format of earlier versions.
        object.insert("slots".into(), serde_json::json!([{ "slot": 0, "forecaster": { "cfg": { "weekday_alpha": 0.04 } }, "forecast_day": 5, "reported_due_day": null }]));
        let old = value.to_string();
        let corrupt = json.replace("\"forecast_day\"", "\"forecast_dey\"");
        for variant in [old, corrupt] {
            let mut restored = Analyzer::new(AnalyticsConfig::default());
            assert_eq!(restored.restore(vec![(id.clone(), variant)]), 1);
            let state = &restored.devices[&id];
            assert!(state.cartridges.is_none(), "forecasts start afresh");
            assert_eq!(
                serde_json::to_value(&state.rules).unwrap(),
                serde_json::to_value(&analyzer.devices[&id].rules).unwrap()
            );
        }
        // Bytes per model: a purifier's three slots share one forecaster.
        let cost = analyzer.cost();
        let purifier = cost.by_model[2];
        assert_eq!(purifier.model, Model::Purifier);
        assert!(
            purifier.devices >= 1 && purifier.forecast_bytes / purifier.devices <= 700,
            "{cost:?}"
        );
        assert_eq!(
            cost.by_model[0].forecast_bytes, 0,
            "toilets have no cartridges"
        );
        // Under 1 KiB per device is the target. Toilets and showers are under it; a
        // purifier (three cartridge slots, each with its straight line and the blend's
        // error scores, and the RO membrane's regression) is still about 1.15 KiB.
        // Held here so it cannot grow unnoticed; the purifier's last 140 bytes are open work.
        for m in cost.by_model {
            let bound = if m.model == Model::Purifier {
                1200
            } else {
                1024
            };
            assert!(
                m.max_device_bytes < bound,
                "bytes per device over {bound}: {m:?}"
            );
        }
    }

    #[test]
    fn every_analytics_finding_converts_to_the_maintenance_kind_of_the_same_name() {
        for kind in every_kind() {
            let f = DeviceFinding {
                device_id: "toilet-1".into(),
                finding: Finding {
                    kind,
                    severity: Severity::Major,
                    state: FindingState::Cleared,
                    began_ts_ms: 5,
                    at_ts_ms: 9,
                    evidence: serde_json::json!({"x": 1}),
                },
            };
            let m = f.to_maintenance();
            assert_eq!(m.kind.policy_key(), kind.as_str());
            assert_eq!(m.state, maintenance::FindingState::Cleared);
            assert_eq!((m.began_ts_ms, m.severity), (5, Severity::Major));
            let p = f.point();
            assert_eq!(p.tags[1], ("kind".into(), kind.as_str().into()));
            assert_eq!(p.ts_ms, 9);
        }
    }
}
