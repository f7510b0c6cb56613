//! Per-device sequence tracking: counts messages lost before the broker.
//!
//! Every telemetry and event message carries `(boot_id, seq)`. A jump forward
//! in `seq` means messages never reached us (a gap); a message that arrives
//! late, within the last 64 sequence numbers, fills its gap again; one seen
//! before is a duplicate (a redelivery). A new `boot_id` starts a new run.
//! Pure state, O(1) per device: a 64-bit window of recently seen numbers.

use serde::{Deserialize, Serialize};

/// What one observation meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The first message we see from this device.
    First,
    /// The next number, as expected.
    InOrder,
    /// Numbers were skipped: this many messages are missing (for now).
    Gap(u32),
    /// A late message that fills an earlier gap.
    LateFill,
    /// Seen before: a redelivery.
    Duplicate,
    /// The device rebooted; this many messages of the new boot are missing.
    NewBoot(u32),
    /// From a boot older than the current one: stored, not counted.
    OldBoot,
}

/// Sequence state of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSeq {
    /// Current boot id.
    pub boot_id: u32,
    /// Highest sequence number seen in this boot.
    pub last_seq: u32,
    /// Bit `i` set: `last_seq - i` has been seen.
    pub window: u64,
    /// Messages missing, over the device's life (late fills subtract).
    pub gaps: u64,
    /// Redeliveries seen.
    pub duplicates: u64,
    /// Messages counted.
    pub messages: u64,
}

impl DeviceSeq {
    /// Records `(boot_id, seq)` and says what it meant.
    pub fn observe(&mut self, boot_id: u32, seq: u32) -> SeqVerdict {
        let first = self.messages == 0 && self.window == 0;
        self.messages += 1;
        if first {
            *self = DeviceSeq {
                boot_id,
                last_seq: seq,
                window: 1,
                gaps: 0,
                duplicates: 0,
                messages: 1,
            };
            return SeqVerdict::First;
        }
        if boot_id < self.boot_id {
            return SeqVerdict::OldBoot;
        }
        if boot_id > self.boot_id {
            self.boot_id = boot_id;
            self.last_seq = seq;
            self.window = 1;
            // Numbers 0..seq of the new boot have not been seen.
            self.gaps += u64::from(seq);
            return SeqVerdict::NewBoot(seq);
        }
        if seq > self.last_seq {
            let jump = seq - self.last_seq;
            self.window = if jump >= 64 {
                1
            } else {
                (self.window << jump) | 1
            };
            self.last_seq = seq;
            if jump == 1 {
                SeqVerdict::InOrder
            } else {
                self.gaps += u64::from(jump - 1);
                SeqVerdict::Gap(jump - 1)
            }
        } else {
            let back = self.last_seq - seq;
            if back < 64 && self.window & (1 << back) == 0 {
                self.window |= 1 << back;
                self.gaps = self.gaps.saturating_sub(1);
                SeqVerdict::LateFill
            } else {
                self.duplicates += 1;
                SeqVerdict::Duplicate
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(d.observe(1, 9), SeqVerdict::OldBoot);
        assert_eq!(d.observe(2, 3), SeqVerdict::InOrder);
        assert_eq!(d.observe(2, 200), SeqVerdict::Gap(196));
        assert_eq!(
            d.observe(2, 100),
            SeqVerdict::Duplicate,
            "outside the window counts as a duplicate, not a fill"
        );
    }
}
