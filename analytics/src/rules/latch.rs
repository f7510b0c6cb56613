//! Edge triggering: one [`Latch`] per finding kind turns "is the condition present
//! now?" answers from one or more sources into one `Active` finding when the first
//! source sees it and one `Cleared` finding when the last source stops seeing it.
//! A device's latches live in a [`LatchSet`], which stores only those holding an
//! episode (an idle latch carries nothing).

use protocol::message::Severity;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::finding::{Finding, FindingKind, FindingState};

/// A source of a condition: a bit in [`Latch`]'s set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source(u8);

impl Source {
    /// The device's own fault code.
    pub const DEVICE: Source = Source(1);
    /// A second device fault code mapping to the same kind (heater over-temperature).
    pub const DEVICE_SECOND: Source = Source(2);
    /// The analytics rule.
    pub const ANALYTIC: Source = Source(4);
    /// Both device sources.
    const ANY_DEVICE: u8 = 1 | 2;
}

/// The state of one finding kind on one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latch {
    /// Sources that currently see the condition.
    sources: u8,
    /// When the current episode began (device time).
    began_ts_ms: i64,
    /// Severity of the `Active` finding, repeated on the `Cleared` one.
    severity: Option<Severity>,
    /// Boot of the device when a device source last raised it.
    device_boot: u32,
}

impl Latch {
    /// True while any source sees the condition.
    pub fn is_active(&self) -> bool {
        self.sources != 0
    }

    /// True while `source` sees the condition.
    pub fn has(&self, source: Source) -> bool {
        self.sources & source.0 != 0
    }

    /// True while a device fault code holds the condition.
    pub fn has_device_source(&self) -> bool {
        self.sources & Source::ANY_DEVICE != 0
    }

    /// Boot of the device when a device source last raised the condition.
    pub fn device_boot(&self) -> u32 {
        self.device_boot
    }

    /// When the current episode began.
    pub fn began_ts_ms(&self) -> i64 {
        self.began_ts_ms
    }

    /// Severity of the current episode (`None` while inactive).
    pub fn severity(&self) -> Option<Severity> {
        self.severity
    }

    /// Records that `source` sees the condition (`present`) or not at `ts_ms`, pushing a
    /// finding to `out` on an edge. `evidence` is only called on an edge.
    #[allow(clippy::too_many_arguments)]
    pub fn set(
        &mut self,
        kind: FindingKind,
        source: Source,
        present: bool,
        ts_ms: i64,
        severity: Severity,
        evidence: impl FnOnce() -> serde_json::Value,
        out: &mut Vec<Finding>,
    ) {
        self.set_since(kind, source, present, ts_ms, ts_ms, severity, evidence, out);
    }

    /// Like [`Latch::set`], for a condition seen at `at_ts_ms` that began at
    /// `began_ts_ms` (silence began at the last message; disuse at the last session).
    #[allow(clippy::too_many_arguments)]
    pub fn set_since(
        &mut self,
        kind: FindingKind,
        source: Source,
        present: bool,
        began_ts_ms: i64,
        at_ts_ms: i64,
        severity: Severity,
        evidence: impl FnOnce() -> serde_json::Value,
        out: &mut Vec<Finding>,
    ) {
        let ts_ms = at_ts_ms;
        let was_active = self.is_active();
        if present {
            self.sources |= source.0;
            if was_active {
                return;
            }
            self.began_ts_ms = began_ts_ms;
            self.severity = Some(severity);
            out.push(Finding {
                kind,
                severity,
                state: FindingState::Active,
                began_ts_ms,
                at_ts_ms: ts_ms,
                evidence: evidence(),
            });
        } else {
            self.sources &= !source.0;
            if !was_active || self.is_active() {
                return;
            }
            out.push(Finding {
                kind,
                severity: self.severity.unwrap_or(severity),
                state: FindingState::Cleared,
                began_ts_ms: self.began_ts_ms,
                at_ts_ms: ts_ms,
                evidence: evidence(),
            });
            self.severity = None;
        }
    }

    /// Like [`Latch::set`] for a device source, remembering the boot it was raised in.
    #[allow(clippy::too_many_arguments)]
    pub fn set_from_device(
        &mut self,
        kind: FindingKind,
        source: Source,
        present: bool,
        ts_ms: i64,
        boot_id: u32,
        severity: Severity,
        evidence: impl FnOnce() -> serde_json::Value,
        out: &mut Vec<Finding>,
    ) {
        if present {
            self.device_boot = boot_id;
        }
        self.set(kind, source, present, ts_ms, severity, evidence, out);
    }

    /// Drops every device source (the device rebooted and did not raise it again).
    pub fn drop_device_sources(
        &mut self,
        kind: FindingKind,
        ts_ms: i64,
        evidence: impl FnOnce() -> serde_json::Value,
        out: &mut Vec<Finding>,
    ) {
        let severity = self.severity.unwrap_or(Severity::Info);
        self.set(
            kind,
            Source(Source::ANY_DEVICE),
            false,
            ts_ms,
            severity,
            evidence,
            out,
        );
    }
}

/// An active latch and its index in a [`LatchSet`]: the index takes the latch's
/// padding, so an entry is as small as a [`Latch`] (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    index: u8,
    sources: u8,
    severity: Option<Severity>,
    device_boot: u32,
    began_ts_ms: i64,
}

impl Entry {
    fn new(index: u8, l: Latch) -> Entry {
        Entry {
            index,
            sources: l.sources,
            severity: l.severity,
            device_boot: l.device_boot,
            began_ts_ms: l.began_ts_ms,
        }
    }

    fn latch(&self) -> Latch {
        Latch {
            sources: self.sources,
            began_ts_ms: self.began_ts_ms,
            severity: self.severity,
            device_boot: self.device_boot,
        }
    }
}

/// The `N` latches of one device, indexed `0..N`, of which only the active ones are
/// stored: most devices have no condition most of the time, so this is an empty boxed
/// slice (16 bytes) where `N` inline latches would take `16 × N`; each active one takes
/// 16 bytes on the heap, exactly (edges are rare: the slice is reallocated on each).
/// Serialised as the dense array of `N` latches (the shape snapshots had before), idle
/// ones as defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatchSet<const N: usize> {
    /// Active latches and their index, in no particular order.
    active: Box<[Entry]>,
}

impl<const N: usize> LatchSet<N> {
    const FITS: () = assert!(N <= 256, "a LatchSet indexes its latches by u8");

    /// No active latch.
    pub fn new() -> Self {
        let () = Self::FITS;
        LatchSet {
            active: Box::new([]),
        }
    }

    /// The latch at `index` (an idle default when it holds no episode).
    pub fn get(&self, index: usize) -> Latch {
        self.active
            .iter()
            .find(|e| usize::from(e.index) == index)
            .map_or_else(Latch::default, Entry::latch)
    }

    /// Applies `f` to the latch at `index`, keeping it only while it is active.
    /// Panics if `index >= N` (indices come from the caller's own enum).
    pub fn update<R>(&mut self, index: usize, f: impl FnOnce(&mut Latch) -> R) -> R {
        assert!(index < N, "latch index {index} out of 0..{N}");
        let position = self
            .active
            .iter()
            .position(|e| usize::from(e.index) == index);
        let mut latch = position.map_or_else(Latch::default, |p| self.active[p].latch());
        let result = f(&mut latch);
        match (position, latch.is_active()) {
            (Some(p), true) => self.active[p] = Entry::new(index as u8, latch),
            (Some(p), false) => {
                let mut active = std::mem::take(&mut self.active).into_vec();
                active.swap_remove(p);
                self.active = active.into_boxed_slice();
            }
            (None, true) => {
                let mut active = std::mem::take(&mut self.active).into_vec();
                active.push(Entry::new(index as u8, latch));
                self.active = active.into_boxed_slice();
            }
            (None, false) => {}
        }
        result
    }

    /// The active latches with their index.
    pub fn active(&self) -> impl Iterator<Item = (usize, Latch)> + '_ {
        self.active
            .iter()
            .map(|e| (usize::from(e.index), e.latch()))
    }

    /// Bytes on the heap.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.active)
    }
}

impl<const N: usize> Serialize for LatchSet<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq((0..N).map(|i| self.get(i)))
    }
}

impl<'de, const N: usize> Deserialize<'de> for LatchSet<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let dense = Vec::<Latch>::deserialize(deserializer)?;
        if dense.len() > N {
            return Err(serde::de::Error::invalid_length(
                dense.len(),
                &"at most one latch per finding kind",
            ));
        }
        let mut set = LatchSet::new();
        set.active = dense
            .into_iter()
            .enumerate()
            .filter(|(_, l)| l.is_active())
            .map(|(i, l)| Entry::new(i as u8, l))
            .collect();
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn two_sources_make_one_episode() {
        let mut latch = Latch::default();
        let mut out = Vec::new();
        let k = FindingKind::Leak;
        latch.set(
            k,
            Source::DEVICE,
            true,
            10,
            Severity::Critical,
            || Value::Null,
            &mut out,
        );
        latch.set(
            k,
            Source::ANALYTIC,
            true,
            20,
            Severity::Warning,
            || Value::Null,
            &mut out,
        );
        latch.set(
            k,
            Source::DEVICE,
            false,
            30,
            Severity::Critical,
            || Value::Null,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        latch.set(
            k,
            Source::ANALYTIC,
            false,
            40,
            Severity::Warning,
            || Value::Null,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].state, FindingState::Cleared);
        assert_eq!((out[1].began_ts_ms, out[1].at_ts_ms), (10, 40));
        assert_eq!(out[1].severity, Severity::Critical);
    }

    #[test]
    fn a_latch_set_stores_only_active_latches_and_serialises_densely() {
        let mut set = LatchSet::<4>::new();
        let mut out = Vec::new();
        let raise = |set: &mut LatchSet<4>, present: bool, out: &mut Vec<Finding>| {
            set.update(2, |l| {
                l.set(
                    FindingKind::Leak,
                    Source::ANALYTIC,
                    present,
                    5,
                    Severity::Critical,
                    || Value::Null,
                    out,
                )
            })
        };
        raise(&mut set, false, &mut out);
        assert_eq!(
            (set.active().count(), set.heap_bytes()),
            (0, 0),
            "clearing an idle latch stores nothing"
        );
        raise(&mut set, true, &mut out);
        assert!(set.get(2).is_active() && !set.get(1).is_active());
        assert_eq!(set.active().map(|(i, _)| i).collect::<Vec<_>>(), vec![2]);
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(json.as_array().map(Vec::len), Some(4));
        assert_eq!(json[2]["sources"], 4);
        let back: LatchSet<4> = serde_json::from_value(json).unwrap();
        assert_eq!(back, set);
        raise(&mut set, false, &mut out);
        assert_eq!((set.active().count(), set.heap_bytes()), (0, 0));
        assert_eq!(out.len(), 2);
        assert!(
            serde_json::from_str::<LatchSet<1>>(&serde_json::to_string(&back).unwrap()).is_err()
        );
    }

    #[test]
    fn clearing_an_inactive_latch_says_nothing() {
        let mut latch = Latch::default();
        let mut out = Vec::new();
        latch.set(
            FindingKind::Leak,
            Source::DEVICE,
            false,
            1,
            Severity::Info,
            || Value::Null,
            &mut out,
        );
        assert!(out.is_empty());
    }
}
