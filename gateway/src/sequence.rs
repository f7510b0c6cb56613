//! Per-device sequence tracking: exact duplicate detection and a count of the
//! messages lost before the broker.
//!
//! Every telemetry and event message carries `(boot_id, seq)`. For each boot of a
//! device we keep the set of sequence numbers seen as a sorted list of disjoint,
//! non-adjacent inclusive ranges (a merged interval set). A number inside a range is
//! a duplicate (a redelivery); any other number is new, wherever it falls: ahead of
//! everything (in order, or after a gap), inside a hole (a late fill), or below the
//! first number seen (an offline backlog delivered newest-first). So the answer is
//! exact however late, and in whatever order, a backlog arrives.
//!
//! Gaps (messages missing) are the holes between ranges, plus, for a boot that began
//! while we watched, the numbers below its first range. A hole wider than
//! [`MAX_PLAUSIBLE_GAP`] is not a loss but a bogus number (a device that once sends
//! `seq` 4294967295): it is kept as an isolated range, so only its exact redelivery is
//! a duplicate, and it is neither counted as a gap nor lets it shadow later numbers.
//!
//! Bounded: at most [`MAX_RANGES`] ranges per boot and [`MAX_BOOTS`] boots per device.
//! Beyond that, the two oldest (lowest) ranges are merged: their hole is old loss that
//! stays counted as lost, and a number from it arriving later is taken for a duplicate.
//! The least recently seen boot is dropped whole (its missing count is kept). Both are
//! counted (`merged`, `boots_dropped`) and logged.

use serde::{Deserialize, Serialize};

/// Most seen-ranges kept per boot.
pub const MAX_RANGES: usize = 64;
/// Most boots kept per device.
pub const MAX_BOOTS: usize = 4;
/// A hole wider than this is a bogus jump, not lost messages (about 11 days of one
/// message a second; a device's offline queue and a broker's queue hold far less).
pub const MAX_PLAUSIBLE_GAP: u32 = 1_000_000;

/// What one observation meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The first message we see from this device.
    First,
    /// The next number after the highest seen, as expected.
    InOrder,
    /// Ahead of everything seen: this many numbers were skipped (for now).
    Gap(u32),
    /// A new number that fills a hole or extends a boot downwards (a late message).
    LateFill,
    /// Seen before: a redelivery.
    Duplicate,
    /// A boot we had not seen; for a newer boot, this many of its messages are missing.
    NewBoot(u32),
    /// A number implausibly far from everything seen: kept apart, not counted as a gap.
    Jump,
}

impl SeqVerdict {
    /// Whether the message is new (to be analysed), i.e. not a redelivery.
    pub fn is_new(self) -> bool {
        self != SeqVerdict::Duplicate
    }
}

/// The numbers seen in one boot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct BootRun {
    boot_id: u32,
    /// The boot's first number if we saw the boot begin (a newer boot of a known device: 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<u32>,
    /// Sorted, disjoint, non-adjacent inclusive ranges.
    ranges: Vec<(u32, u32)>,
    /// Missing numbers of holes merged away by the cap (still lost).
    #[serde(default)]
    merged_lost: u64,
}

fn plausible(hole: u64) -> u64 {
    if hole <= u64::from(MAX_PLAUSIBLE_GAP) {
        hole
    } else {
        0
    }
}

impl BootRun {
    /// Missing numbers of this boot (plausible holes only).
    fn missing(&self) -> u64 {
        let below = match (self.start, self.ranges.first()) {
            (Some(s), Some(&(lo, _))) if lo > s => plausible(u64::from(lo - s)),
            _ => 0,
        };
        let holes: u64 = self
            .ranges
            .windows(2)
            .map(|w| plausible(u64::from(w[1].0) - u64::from(w[0].1) - 1))
            .sum();
        below + holes + self.merged_lost
    }

    /// Inserts `seq`; `None` if it was already seen, else what it meant.
    fn insert(&mut self, seq: u32) -> Option<SeqVerdict> {
        let s = u64::from(seq);
        // The first range that ends at or after `seq - 1` (so it may contain or absorb `seq`).
        let i = self
            .ranges
            .partition_point(|&(_, hi)| u64::from(hi) + 1 < s);
        if let Some(&(lo, hi)) = self.ranges.get(i) {
            if lo <= seq && seq <= hi {
                return None;
            }
        }
        let top = self.ranges.last().map(|&(_, hi)| hi);
        // How far `seq` is from the nearest number seen.
        let below = i.checked_sub(1).map(|j| s - u64::from(self.ranges[j].1));
        let above = self.ranges.get(i).map(|&(lo, hi)| {
            if u64::from(hi) + 1 == s {
                1
            } else {
                u64::from(lo) - s
            }
        });
        let nearest = below.into_iter().chain(above).min().unwrap_or(0);
        let follows =
            |r: &[(u32, u32)], j: usize| r.get(j).is_some_and(|&(_, hi)| u64::from(hi) + 1 == s);
        let precedes =
            |r: &[(u32, u32)], j: usize| r.get(j).is_some_and(|&(lo, _)| s + 1 == u64::from(lo));
        if follows(&self.ranges, i) {
            self.ranges[i].1 = seq;
            if precedes(&self.ranges, i + 1) {
                self.ranges[i].1 = self.ranges[i + 1].1;
                self.ranges.remove(i + 1);
            }
        } else if precedes(&self.ranges, i) {
            self.ranges[i].0 = seq;
        } else {
            self.ranges.insert(i, (seq, seq));
        }
        Some(match top {
            None => SeqVerdict::First,
            _ if nearest > u64::from(MAX_PLAUSIBLE_GAP) => SeqVerdict::Jump,
            Some(top) if seq > top => match seq - top - 1 {
                0 => SeqVerdict::InOrder,
                hole => SeqVerdict::Gap(hole),
            },
            Some(_) => SeqVerdict::LateFill,
        })
    }

    /// Merges the two lowest ranges while over the cap; returns how many merges.
    fn enforce_cap(&mut self) -> u64 {
        let mut merges = 0;
        while self.ranges.len() > MAX_RANGES {
            let (a, b) = (self.ranges[0], self.ranges[1]);
            self.merged_lost += plausible(u64::from(b.0) - u64::from(a.1) - 1);
            self.ranges[1] = (a.0, b.1);
            self.ranges.remove(0);
            merges += 1;
        }
        merges
    }
}

/// Sequence state of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceSeq {
    /// The most recently started boot seen.
    pub boot_id: u32,
    /// Messages missing now, over the device's life (late fills subtract).
    pub gaps: u64,
    /// Redeliveries seen.
    pub duplicates: u64,
    /// Messages counted.
    pub messages: u64,
    /// Range merges forced by the cap (holes given up on).
    #[serde(default)]
    pub merged: u64,
    /// Boots dropped by the cap.
    #[serde(default)]
    pub boots_dropped: u64,
    /// Missing numbers of dropped boots.
    #[serde(default)]
    dropped_missing: u64,
    /// Kept boots, least recently seen first.
    #[serde(default)]
    boots: Vec<BootRun>,
}

/// The sequence state of an older gateway (a 64-bit window behind the highest number).
#[derive(Deserialize)]
struct WindowSeq {
    boot_id: u32,
    last_seq: u32,
    window: u64,
    gaps: u64,
    duplicates: u64,
    messages: u64,
}

impl DeviceSeq {
    /// Reads a saved state, of this version or of the older 64-bit window (whose
    /// window becomes ranges, and whose gap count is kept). `None` if neither parses.
    pub fn from_json(json: &str) -> Option<DeviceSeq> {
        if let Ok(d) = serde_json::from_str::<DeviceSeq>(json) {
            if !d.boots.is_empty() || d.messages == 0 {
                return Some(d);
            }
        }
        let old = serde_json::from_str::<WindowSeq>(json).ok()?;
        let mut run = BootRun {
            boot_id: old.boot_id,
            ..BootRun::default()
        };
        for back in (0..64u32).rev() {
            if old.window & (1u64 << back) != 0 {
                if let Some(seq) = old.last_seq.checked_sub(back) {
                    run.insert(seq);
                }
            }
        }
        let mut d = DeviceSeq {
            boot_id: old.boot_id,
            gaps: old.gaps,
            duplicates: old.duplicates,
            messages: old.messages,
            dropped_missing: old.gaps.saturating_sub(run.missing()),
            boots: vec![run],
            ..DeviceSeq::default()
        };
        d.recount();
        Some(d)
    }

    /// Seen-ranges kept, over all boots (for tests and diagnostics).
    pub fn ranges(&self) -> usize {
        self.boots.iter().map(|b| b.ranges.len()).sum()
    }

    fn recount(&mut self) {
        self.gaps = self.dropped_missing + self.boots.iter().map(BootRun::missing).sum::<u64>();
    }

    /// Records `(boot_id, seq)` and says what it meant.
    pub fn observe(&mut self, boot_id: u32, seq: u32) -> SeqVerdict {
        self.messages += 1;
        let known_device = !self.boots.is_empty();
        let at = match self.boots.iter().position(|b| b.boot_id == boot_id) {
            Some(at) => at,
            None => {
                let newer = known_device && boot_id > self.boot_id;
                if newer || !known_device {
                    self.boot_id = boot_id;
                }
                self.boots.push(BootRun {
                    boot_id,
                    start: newer.then_some(0),
                    ranges: Vec::new(),
                    merged_lost: 0,
                });
                if self.boots.len() > MAX_BOOTS {
                    let old = self.boots.remove(0);
                    self.dropped_missing += old.missing();
                    self.boots_dropped += 1;
                    tracing::info!(
                        boot_id = old.boot_id,
                        "Sequence state of an old boot dropped (cap); its redeliveries would be analysed again."
                    );
                }
                self.boots.len() - 1
            }
        };
        // Most recently seen last.
        let last = self.boots.len() - 1;
        if at != last {
            let run = self.boots.remove(at);
            self.boots.push(run);
        }
        let run = &mut self.boots[last];
        let fresh = run.ranges.is_empty();
        let verdict = match run.insert(seq) {
            None => {
                self.duplicates += 1;
                return SeqVerdict::Duplicate;
            }
            Some(v) => v,
        };
        let merges = run.enforce_cap();
        if merges > 0 {
            self.merged += merges;
            tracing::info!(
                boot_id,
                merges,
                "Sequence ranges merged (cap): the oldest hole is taken as lost for good."
            );
        }
        if verdict == SeqVerdict::Jump {
            tracing::warn!(
                boot_id,
                seq,
                "A sequence number far from all others; kept apart, not counted as a gap."
            );
        }
        self.recount();
        match (known_device, fresh) {
            (false, _) => SeqVerdict::First,
            (true, true) => SeqVerdict::NewBoot(if self.boot_id == boot_id {
                u32::try_from(plausible(u64::from(seq))).unwrap_or(0)
            } else {
                0
            }),
            (true, false) => verdict,
        }
    }
}

/// Version of [`DeviceSeq::encode_binary`]'s layout. A reader refuses another version
/// (bump it whenever [`DeviceSeq`] or its boots change shape).
pub const SEQ_BINARY_FORMAT: i64 = 1;

impl DeviceSeq {
    /// Appends the compact binary form (LEB128 varints, ~15 bytes for a device in order)
    /// that the state database's per-batch journal keeps; see [`DeviceSeq::decode_binary`].
    pub fn encode_binary(&self, out: &mut Vec<u8>) {
        for v in [
            u64::from(self.boot_id),
            self.gaps,
            self.duplicates,
            self.messages,
            self.merged,
            self.boots_dropped,
            self.dropped_missing,
            self.boots.len() as u64,
        ] {
            put_varint(out, v);
        }
        for b in &self.boots {
            put_varint(out, u64::from(b.boot_id));
            put_varint(out, b.start.map_or(0, |s| u64::from(s) + 1));
            put_varint(out, b.ranges.len() as u64);
            for &(lo, hi) in &b.ranges {
                put_varint(out, u64::from(lo));
                put_varint(out, u64::from(hi));
            }
            put_varint(out, b.merged_lost);
        }
    }

    /// Reads one state written by [`DeviceSeq::encode_binary`] from the front of `input`,
    /// advancing it; `None` if the bytes are cut short or out of range.
    pub fn decode_binary(input: &mut &[u8]) -> Option<DeviceSeq> {
        let mut d = DeviceSeq {
            boot_id: take_u32(input)?,
            gaps: take_varint(input)?,
            duplicates: take_varint(input)?,
            messages: take_varint(input)?,
            merged: take_varint(input)?,
            boots_dropped: take_varint(input)?,
            dropped_missing: take_varint(input)?,
            boots: Vec::new(),
        };
        let boots = take_len(input)?;
        d.boots.reserve(boots.min(MAX_BOOTS));
        for _ in 0..boots {
            let boot_id = take_u32(input)?;
            let start = match take_varint(input)? {
                0 => None,
                s => Some(u32::try_from(s - 1).ok()?),
            };
            let n = take_len(input)?;
            let mut ranges = Vec::with_capacity(n.min(MAX_RANGES));
            for _ in 0..n {
                ranges.push((take_u32(input)?, take_u32(input)?));
            }
            d.boots.push(BootRun {
                boot_id,
                start,
                ranges,
                merged_lost: take_varint(input)?,
            });
        }
        Some(d)
    }
}

impl DeviceSeq {
    /// Steps over one state written by [`DeviceSeq::encode_binary`] without building it
    /// (no allocation); `None` where [`DeviceSeq::decode_binary`] would refuse the bytes.
    pub fn skip_binary(input: &mut &[u8]) -> Option<()> {
        take_u32(input)?;
        for _ in 0..6 {
            take_varint(input)?;
        }
        for _ in 0..take_len(input)? {
            take_u32(input)?;
            u32::try_from(take_varint(input)?.saturating_sub(1)).ok()?;
            for _ in 0..take_len(input)? {
                take_u32(input)?;
                take_u32(input)?;
            }
            take_varint(input)?;
        }
        Some(())
    }
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint from the front of `input`; `None` if cut short or
/// wider than 64 bits.
pub fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return None;
        }
        v |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn take_u32(input: &mut &[u8]) -> Option<u32> {
    u32::try_from(take_varint(input)?).ok()
}

/// A length that cannot exceed the bytes left (each element takes at least one byte).
fn take_len(input: &mut &[u8]) -> Option<usize> {
    let n = usize::try_from(take_varint(input)?).ok()?;
    (n <= input.len()).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_form_reads_back_exactly_and_refuses_cut_or_foreign_bytes() {
        let mut d = DeviceSeq::default();
        for (boot, seq) in [
            (1, 0),
            (1, 1),
            (1, 5),
            (1, 3),
            (1, u32::MAX),
            (2, 7),
            (2, 9),
        ] {
            d.observe(boot, seq);
        }
        for boot in 3..10 {
            d.observe(boot, 1);
        }
        assert!(d.boots_dropped > 0 && d.boots.iter().any(|b| b.start.is_some()));
        let mut bytes = Vec::new();
        d.encode_binary(&mut bytes);
        DeviceSeq::default().encode_binary(&mut bytes);
        let mut input = bytes.as_slice();
        assert_eq!(DeviceSeq::decode_binary(&mut input), Some(d.clone()));
        assert_eq!(
            DeviceSeq::decode_binary(&mut input),
            Some(DeviceSeq::default())
        );
        assert!(input.is_empty());
        let mut input = bytes.as_slice();
        assert_eq!(DeviceSeq::skip_binary(&mut input), Some(()));
        assert_eq!(
            DeviceSeq::decode_binary(&mut input),
            Some(DeviceSeq::default())
        );
        // Every cut of the first state is refused, never misread or a panic.
        let mut one = Vec::new();
        d.encode_binary(&mut one);
        for cut in 0..one.len() {
            assert_eq!(
                DeviceSeq::decode_binary(&mut &one[..cut]),
                None,
                "cut at {cut}"
            );
            assert_eq!(
                DeviceSeq::skip_binary(&mut &one[..cut]),
                None,
                "cut at {cut}"
            );
        }
        // Foreign bytes: an over-long varint, a length beyond the input.
        assert_eq!(take_varint(&mut &[0xff; 11][..]), None);
        assert_eq!(
            DeviceSeq::decode_binary(&mut &[1, 0, 0, 0, 0, 0, 0, 0x7f][..]),
            None
        );
        let mut wide = Vec::new();
        put_varint(&mut wide, u64::MAX);
        assert_eq!(take_varint(&mut wide.as_slice()), Some(u64::MAX));
    }

    #[test]
    fn counts_gaps_fills_duplicates_and_reboots() {
        let mut d = DeviceSeq::default();
        assert_eq!(d.observe(1, 0), SeqVerdict::First);
        assert_eq!(d.observe(1, 1), SeqVerdict::InOrder);
        assert_eq!(d.observe(1, 5), SeqVerdict::Gap(3));
        assert_eq!(d.gaps, 3);
        assert_eq!(d.observe(1, 3), SeqVerdict::LateFill);
        assert_eq!(d.gaps, 2);
        assert_eq!(d.observe(1, 3), SeqVerdict::Duplicate);
        assert_eq!(d.observe(1, 5), SeqVerdict::Duplicate);
        assert_eq!(d.duplicates, 2);
        assert_eq!(d.observe(2, 2), SeqVerdict::NewBoot(2));
        assert_eq!(d.gaps, 4);
        assert_eq!(d.observe(2, 3), SeqVerdict::InOrder);
        assert_eq!(d.observe(2, 200), SeqVerdict::Gap(196));
        assert_eq!(
            d.observe(2, 100),
            SeqVerdict::LateFill,
            "far behind the highest number is still exact"
        );
        assert_eq!(d.observe(2, 100), SeqVerdict::Duplicate);
        // A redelivery from the previous boot is still recognised.
        assert_eq!(d.observe(1, 4), SeqVerdict::LateFill);
        assert_eq!(d.observe(1, 4), SeqVerdict::Duplicate);
        assert_eq!(d.boot_id, 2);
    }

    #[test]
    fn a_backlog_delivered_newest_first_after_live_traffic_is_exact() {
        let mut d = DeviceSeq::default();
        // Live traffic resumes at 10_000 while 5_000..10_000 sits in the device's queue.
        for seq in 10_000..10_100 {
            assert!(d.observe(7, seq).is_new());
        }
        // The backlog arrives newest-first, interleaved with more live traffic.
        let mut live = 10_100;
        for (i, seq) in (5_000..10_000).rev().enumerate() {
            assert_ne!(d.observe(7, seq), SeqVerdict::Duplicate, "seq {seq}");
            if i % 10 == 0 {
                assert!(d.observe(7, live).is_new());
                live += 1;
            }
        }
        assert_eq!(d.gaps, 0, "no false gaps");
        assert_eq!(d.duplicates, 0, "no false duplicates");
        assert_eq!(d.ranges(), 1);
        // Every number is now known: each redelivery is a duplicate.
        for seq in (5_000..live).step_by(7) {
            assert_eq!(d.observe(7, seq), SeqVerdict::Duplicate);
        }
        assert_eq!(d.gaps, 0);
    }

    #[test]
    fn one_absurd_jump_does_not_poison_the_device() {
        for bogus in [u32::MAX, 3_000_000_000] {
            let mut d = DeviceSeq::default();
            for seq in 0..100 {
                d.observe(1, seq);
            }
            assert_eq!(d.observe(1, bogus), SeqVerdict::Jump);
            assert_eq!(d.gaps, 0, "a bogus jump is not billions of lost messages");
            for seq in 100..200 {
                assert_eq!(
                    d.observe(1, seq),
                    SeqVerdict::LateFill,
                    "seq {seq} after {bogus}"
                );
            }
            assert_eq!(d.duplicates, 0);
            assert_eq!(
                d.observe(1, bogus),
                SeqVerdict::Duplicate,
                "its own redelivery is"
            );
            assert_eq!(d.observe(1, 150), SeqVerdict::Duplicate);
            d.observe(1, 205);
            assert_eq!(d.gaps, 5, "real gaps are still counted");
        }
    }

    #[test]
    fn state_stays_bounded_and_lost_holes_stay_counted() {
        let mut d = DeviceSeq::default();
        // Every other number lost: one range per message.
        for i in 0..1_000u32 {
            d.observe(3, i * 2);
        }
        assert_eq!(d.ranges(), MAX_RANGES);
        assert_eq!(d.gaps, 999, "merged holes are still lost");
        assert!(d.merged > 0);
        // A recent hole is still exact.
        assert_eq!(d.observe(3, 1_997), SeqVerdict::LateFill);
        assert_eq!(d.gaps, 998);
        // Many boots: only the last few are kept, their missing counts are not forgotten.
        for boot in 4..20 {
            d.observe(boot, 1);
        }
        assert_eq!(d.boots.len(), MAX_BOOTS);
        assert_eq!(d.boots_dropped, 17 - MAX_BOOTS as u64);
        assert_eq!(d.gaps, 998 + 16, "one missing (seq 0) per new boot");
        assert!(serde_json::to_string(&d).unwrap().len() < 8_000);
    }

    #[test]
    fn a_saved_window_of_the_older_format_loads() {
        let old = r#"{"boot_id":3,"last_seq":10,"window":5,"gaps":7,"duplicates":2,"messages":40}"#;
        let mut d = DeviceSeq::from_json(old).unwrap();
        assert_eq!((d.gaps, d.duplicates, d.messages), (7, 2, 40));
        assert_eq!(d.observe(3, 10), SeqVerdict::Duplicate);
        assert_eq!(d.observe(3, 8), SeqVerdict::Duplicate);
        assert_eq!(d.observe(3, 9), SeqVerdict::LateFill);
        assert_eq!(d.gaps, 6);
        let new = serde_json::to_string(&d).unwrap();
        assert_eq!(DeviceSeq::from_json(&new), Some(d));
        assert_eq!(DeviceSeq::from_json("{}"), Some(DeviceSeq::default()));
        assert_eq!(DeviceSeq::from_json("nonsense"), None);
    }
}
