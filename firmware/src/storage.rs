//! Non-volatile counters: a small storage trait, a checksummed record and a
//! wear-levelling round-robin over slots.
//!
//! Layout: the backing store (a flash page per slot, or an FRAM region) is split
//! into [`Storage::slots`] slots of [`RECORD_LEN`] bytes. Every save writes the
//! whole record, with a generation number one higher than the last, to the *next*
//! slot, so writes spread evenly over all slots (wear) and a save interrupted by a
//! power cut leaves the previous generation intact. Loading picks the valid record
//! (magic, version, CRC-32) with the highest generation.
//!
//! Byte 5 (reserved, zero in records of earlier firmware) holds flags: bit 0 says the
//! water inlet valve was closed by a command, so a reboot keeps it closed (a leak
//! stays stopped). A record without it reads as "open", as before.

use crate::logic::Counters;

/// Bytes in one record (fits a 256-byte flash page or FRAM row).
pub const RECORD_LEN: usize = 192;
const MAGIC: [u8; 4] = *b"FXC1";
const VERSION: u8 = 1;
/// Flag bit (byte 5): the water inlet valve is closed.
const FLAG_INLET_CLOSED: u8 = 1;

/// A non-volatile store of equally sized slots.
pub trait Storage {
    /// The store's error.
    type Error;
    /// Number of slots (at least 1; 2 or more for power-cut safety).
    fn slots(&self) -> usize;
    /// Reads slot `slot` into `buf`.
    fn read(&mut self, slot: usize, buf: &mut [u8; RECORD_LEN]) -> Result<(), Self::Error>;
    /// Erases and writes slot `slot`.
    fn write(&mut self, slot: usize, buf: &[u8; RECORD_LEN]) -> Result<(), Self::Error>;
}

/// An in-memory store for tests and the simulator (erased state is all `0xFF`, like flash).
#[derive(Debug, Clone)]
pub struct RamStorage<const SLOTS: usize> {
    /// Slot contents.
    pub data: [[u8; RECORD_LEN]; SLOTS],
    /// Writes per slot, to check wear levelling.
    pub writes: [u32; SLOTS],
}

impl<const SLOTS: usize> Default for RamStorage<SLOTS> {
    fn default() -> Self {
        RamStorage {
            data: [[0xFF; RECORD_LEN]; SLOTS],
            writes: [0; SLOTS],
        }
    }
}

/// Error of [`RamStorage`]: slot index out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotOutOfRange;

impl<const SLOTS: usize> Storage for RamStorage<SLOTS> {
    type Error = SlotOutOfRange;
    fn slots(&self) -> usize {
        SLOTS
    }
    fn read(&mut self, slot: usize, buf: &mut [u8; RECORD_LEN]) -> Result<(), SlotOutOfRange> {
        *buf = *self.data.get(slot).ok_or(SlotOutOfRange)?;
        Ok(())
    }
    fn write(&mut self, slot: usize, buf: &[u8; RECORD_LEN]) -> Result<(), SlotOutOfRange> {
        *self.data.get_mut(slot).ok_or(SlotOutOfRange)? = *buf;
        self.writes[slot] += 1;
        Ok(())
    }
}

/// What survives a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    /// Save generation, strictly increasing.
    pub generation: u32,
    /// Boots so far, including the current one: the `boot_id` of messages.
    pub boot_count: u32,
    /// The cumulative counters.
    pub counters: Counters,
    /// The water inlet valve was closed by a command (and not opened since).
    pub inlet_closed: bool,
}

/// CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320), bitwise: small code, no table.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

struct Cursor<'a> {
    buf: &'a mut [u8; RECORD_LEN],
    pos: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}

struct Reader<'a> {
    buf: &'a [u8; RECORD_LEN],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

impl Record {
    /// Serialises into a fixed little-endian layout with a trailing CRC-32.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut buf = [0u8; RECORD_LEN];
        let c = &self.counters;
        let mut w = Cursor {
            buf: &mut buf,
            pos: 0,
        };
        w.put(&MAGIC);
        let flags = if self.inlet_closed {
            FLAG_INLET_CLOSED
        } else {
            0
        };
        w.put(&[VERSION, flags, 0, 0]);
        w.put(&self.generation.to_le_bytes());
        w.put(&self.boot_count.to_le_bytes());
        for v in [
            c.seat_sessions,
            c.washes,
            c.flushes,
            c.showers,
            c.flow_baseline_ml_min,
            c.flow_baseline_n,
        ] {
            w.put(&v.to_le_bytes());
        }
        for v in [
            c.wash_ms,
            c.water_ml,
            c.heater_mwh,
            c.dispensed_ml,
            c.pump_ms,
            c.shower_ms,
        ] {
            w.put(&v.to_le_bytes());
        }
        for cart in &c.cartridges {
            w.put(&cart.ml.to_le_bytes());
            w.put(&cart.replacements.to_le_bytes());
        }
        let crc = crc32(&buf[..RECORD_LEN - 4]);
        buf[RECORD_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Parses a record; `None` if the magic, version or CRC is wrong (erased or torn write).
    pub fn decode(buf: &[u8; RECORD_LEN]) -> Option<Record> {
        let crc = u32::from_le_bytes([
            buf[RECORD_LEN - 4],
            buf[RECORD_LEN - 3],
            buf[RECORD_LEN - 2],
            buf[RECORD_LEN - 1],
        ]);
        if buf[..4] != MAGIC || buf[4] != VERSION || crc32(&buf[..RECORD_LEN - 4]) != crc {
            return None;
        }
        let mut r = Reader { buf, pos: 8 };
        let generation = r.u32();
        let boot_count = r.u32();
        let mut c = Counters {
            seat_sessions: r.u32(),
            washes: r.u32(),
            flushes: r.u32(),
            showers: r.u32(),
            flow_baseline_ml_min: r.u32(),
            flow_baseline_n: r.u32(),
            wash_ms: r.u64(),
            water_ml: r.u64(),
            heater_mwh: r.u64(),
            dispensed_ml: r.u64(),
            pump_ms: r.u64(),
            shower_ms: r.u64(),
            ..Counters::default()
        };
        for cart in &mut c.cartridges {
            cart.ml = r.u64();
            cart.replacements = r.u32();
        }
        Some(Record {
            generation,
            boot_count,
            counters: c,
            inlet_closed: buf[5] & FLAG_INLET_CLOSED != 0,
        })
    }
}

/// Loads and saves [`Record`]s on a [`Storage`], round-robin over its slots.
#[derive(Debug)]
pub struct PersistentStore<S> {
    storage: S,
    last_slot: usize,
    generation: u32,
    /// Saved with every record (from the loaded one until changed).
    inlet_closed: bool,
}

impl<S: Storage> PersistentStore<S> {
    /// Scans every slot and returns the store and the newest valid record, if any.
    /// Unreadable slots are skipped like corrupt ones.
    pub fn open(mut storage: S) -> (Self, Option<Record>) {
        let mut best: Option<(usize, Record)> = None;
        let mut buf = [0u8; RECORD_LEN];
        for slot in 0..storage.slots() {
            if storage.read(slot, &mut buf).is_err() {
                continue;
            }
            if let Some(rec) = Record::decode(&buf) {
                if best
                    .as_ref()
                    .is_none_or(|(_, b)| rec.generation > b.generation)
                {
                    best = Some((slot, rec));
                }
            }
        }
        let (last_slot, generation) = match &best {
            Some((slot, rec)) => (*slot, rec.generation),
            // Nothing valid: the first save goes to slot 0.
            None => (storage.slots().saturating_sub(1), 0),
        };
        (
            PersistentStore {
                storage,
                last_slot,
                generation,
                inlet_closed: best.as_ref().is_some_and(|(_, r)| r.inlet_closed),
            },
            best.map(|(_, r)| r),
        )
    }

    /// Sets whether the water inlet valve is closed, kept by the next [`Self::save`].
    pub fn set_inlet_closed(&mut self, closed: bool) {
        self.inlet_closed = closed;
    }

    /// Saves `boot_count` and `counters` (and the valve flag) as the next generation in
    /// the next slot.
    pub fn save(&mut self, boot_count: u32, counters: &Counters) -> Result<(), S::Error> {
        let slots = self.storage.slots().max(1);
        let slot = (self.last_slot + 1) % slots;
        let generation = self.generation.wrapping_add(1);
        let rec = Record {
            generation,
            boot_count,
            counters: *counters,
            inlet_closed: self.inlet_closed,
        };
        self.storage.write(slot, &rec.encode())?;
        self.last_slot = slot;
        self.generation = generation;
        Ok(())
    }

    /// The backing storage (e.g. to inspect wear in tests).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Gives the storage back.
    pub fn release(self) -> S {
        self.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_counters() -> Counters {
        let mut c = Counters {
            seat_sessions: 7,
            washes: 5,
            water_ml: 123_456_789,
            heater_mwh: 42,
            ..Counters::default()
        };
        c.cartridges[2].ml = 9_999;
        c.cartridges[2].replacements = 3;
        c
    }

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC for "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn record_round_trips_and_rejects_corruption() {
        let rec = Record {
            generation: 9,
            boot_count: 4,
            counters: sample_counters(),
            inlet_closed: false,
        };
        let mut bytes = rec.encode();
        assert_eq!(Record::decode(&bytes), Some(rec));
        bytes[20] ^= 1;
        assert_eq!(Record::decode(&bytes), None);
        assert_eq!(Record::decode(&[0xFF; RECORD_LEN]), None);
    }

    #[test]
    fn the_closed_valve_is_bit_0_of_byte_5_and_earlier_records_read_as_open() {
        let closed = Record {
            generation: 2,
            boot_count: 1,
            counters: sample_counters(),
            inlet_closed: true,
        };
        let bytes = closed.encode();
        assert_eq!(&bytes[..8], b"FXC1\x01\x01\x00\x00");
        assert_eq!(Record::decode(&bytes), Some(closed));
        // A record of earlier firmware: byte 5 was reserved, always zero.
        let open = Record {
            inlet_closed: false,
            ..closed
        };
        assert_eq!(open.encode()[5], 0);
        assert_eq!(
            Record::decode(&open.encode()).map(|r| r.inlet_closed),
            Some(false)
        );
        // The store keeps the flag from the record it loaded until told otherwise.
        let mut storage = RamStorage::<2>::default();
        storage.write(0, &bytes).unwrap();
        let (mut store, rec) = PersistentStore::open(storage);
        assert!(rec.is_some_and(|r| r.inlet_closed));
        store.save(2, &sample_counters()).unwrap();
        let (mut store, rec) = PersistentStore::open(store.release());
        assert!(rec.is_some_and(|r| r.inlet_closed));
        store.set_inlet_closed(false);
        store.save(3, &sample_counters()).unwrap();
        let (_, rec) = PersistentStore::open(store.release());
        assert!(rec.is_some_and(|r| !r.inlet_closed));
    }

    #[test]
    fn saves_rotate_over_slots_and_newest_wins() {
        let (mut store, rec) = PersistentStore::open(RamStorage::<4>::default());
        assert_eq!(rec, None);
        let mut c = sample_counters();
        for i in 0..10u32 {
            c.flushes = i;
            store.save(1, &c).unwrap();
        }
        assert_eq!(store.storage().writes, [3, 3, 2, 2]);
        let (_, rec) = PersistentStore::open(store.release());
        let rec = rec.unwrap();
        assert_eq!((rec.generation, rec.counters.flushes), (10, 9));
    }

    #[test]
    fn torn_write_falls_back_to_previous_generation() {
        let (mut store, _) = PersistentStore::open(RamStorage::<2>::default());
        let mut c = sample_counters();
        store.save(1, &c).unwrap(); // slot 0, gen 1
        c.flushes = 77;
        store.save(1, &c).unwrap(); // slot 1, gen 2
        let mut ram = store.release();
        ram.data[1][100] ^= 0xFF; // power cut mid-write of slot 1
        let (mut store, rec) = PersistentStore::open(ram);
        assert_eq!(rec.unwrap().generation, 1);
        // The next save must not overwrite the surviving record's slot... it goes after it.
        store.save(2, &c).unwrap();
        assert_eq!(store.storage().writes, [1, 2]);
    }
}
