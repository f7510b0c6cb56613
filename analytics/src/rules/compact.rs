//! Compact optional values for per-device state.
//!
//! `Option<i64>` takes 16 bytes (a tag and padding); a device time or a counter has a
//! value it never takes (`i64::MIN` ms, `u64::MAX` ml), so [`Maybe`] stores "absent" as
//! that value in the 8 bytes of the number. It is serialised exactly like the `Option`
//! it replaces (a number or `null`), so snapshots keep their shape. [`Align4`] keeps a
//! 64-bit number in two 32-bit halves, so that it packs beside `f32`s and `u32`s without
//! padding (serialised as the number).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number type with a value reserved for "absent".
pub trait Sentinel: Copy + PartialEq {
    /// The reserved value.
    const ABSENT: Self;
    /// The nearest value that is not [`Sentinel::ABSENT`] (what storing it keeps).
    fn nearest_present(self) -> Self;
}

impl Sentinel for i64 {
    const ABSENT: i64 = i64::MIN;
    fn nearest_present(self) -> i64 {
        self.max(i64::MIN + 1)
    }
}

impl Sentinel for u64 {
    const ABSENT: u64 = u64::MAX;
    fn nearest_present(self) -> u64 {
        self.min(u64::MAX - 1)
    }
}

/// A day's total that is never negative (a sum of counter increases): `-inf` is free.
impl Sentinel for f64 {
    const ABSENT: f64 = f64::NEG_INFINITY;
    fn nearest_present(self) -> f64 {
        if self == f64::NEG_INFINITY {
            f64::MIN
        } else {
            self
        }
    }
}

/// A reading that is always finite: `-inf` is free.
impl Sentinel for f32 {
    const ABSENT: f32 = f32::NEG_INFINITY;
    fn nearest_present(self) -> f32 {
        if self == f32::NEG_INFINITY {
            f32::MIN
        } else {
            self
        }
    }
}

impl Sentinel for u32 {
    const ABSENT: u32 = u32::MAX;
    fn nearest_present(self) -> u32 {
        self.min(u32::MAX - 1)
    }
}

/// An optional number in the size of the number. `Maybe::<i64>::from(Some(i64::MIN))`
/// keeps `i64::MIN + 1`: the reserved value is never a real device time or count.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Maybe<T: Sentinel>(T);

impl<T: Sentinel> Maybe<T> {
    /// Absent.
    pub const NONE: Maybe<T> = Maybe(T::ABSENT);

    /// The value, if present.
    pub fn get(self) -> Option<T> {
        (self.0 != T::ABSENT).then_some(self.0)
    }

    /// Stores `value` and returns the previous one (like [`Option::replace`]).
    pub fn replace(&mut self, value: T) -> Option<T> {
        let previous = self.get();
        self.0 = value.nearest_present();
        previous
    }

    /// Stores `value` unless a value is already present (like [`Option::get_or_insert`]).
    pub fn get_or_insert(&mut self, value: T) -> T {
        if self.0 == T::ABSENT {
            self.0 = value.nearest_present();
        }
        self.0
    }
}

impl<T: Sentinel> Maybe<T> {
    /// The stored number as it is (the absent value included).
    const fn from_raw(raw: T) -> Maybe<T> {
        Maybe(raw)
    }
}

impl<T: Sentinel> Default for Maybe<T> {
    fn default() -> Self {
        Self::NONE
    }
}

impl<T: Sentinel> From<Option<T>> for Maybe<T> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::NONE, |v| Maybe(v.nearest_present()))
    }
}

impl<T: Sentinel + std::fmt::Debug> std::fmt::Debug for Maybe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl<T: Sentinel + Serialize> Serialize for Maybe<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de, T: Sentinel + Deserialize<'de>> Deserialize<'de> for Maybe<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(deserializer).map(Maybe::from)
    }
}

/// A 64-bit number as bits.
pub trait Bits64: Copy {
    /// The number's bits.
    fn to_bits64(self) -> u64;
    /// The number of these bits.
    fn from_bits64(bits: u64) -> Self;
}

impl Bits64 for i64 {
    fn to_bits64(self) -> u64 {
        self as u64
    }
    fn from_bits64(bits: u64) -> i64 {
        bits as i64
    }
}

impl Bits64 for u64 {
    fn to_bits64(self) -> u64 {
        self
    }
    fn from_bits64(bits: u64) -> u64 {
        bits
    }
}

/// A 64-bit number (`i64`, `u64`) with the alignment of a `u32`: 8 bytes that need no
/// padding beside 4-byte fields. The value is exactly the number stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Align4<T: Bits64>([u32; 2], std::marker::PhantomData<T>);

impl<T: Bits64> Align4<T> {
    /// Stores `value`.
    pub fn new(value: T) -> Self {
        let bits = value.to_bits64();
        Align4([bits as u32, (bits >> 32) as u32], std::marker::PhantomData)
    }

    /// The value.
    pub fn get(self) -> T {
        T::from_bits64(u64::from(self.0[0]) | (u64::from(self.0[1]) << 32))
    }
}

impl<T: Bits64 + Default> Default for Align4<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: Bits64 + std::fmt::Debug> std::fmt::Debug for Align4<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl<T: Bits64 + Serialize> Serialize for Align4<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de, T: Bits64 + Deserialize<'de>> Deserialize<'de> for Align4<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Align4::new)
    }
}

/// A [`Maybe<i64>`] with the alignment of a `u32` ([`Align4`]): a device time that packs
/// beside `f32`s without padding. Serialised like the `Option<i64>` it replaces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MaybeA4(Align4<i64>);

impl MaybeA4 {
    /// The value, if present.
    pub fn get(self) -> Option<i64> {
        Maybe::<i64>::from_raw(self.0.get()).get()
    }

    /// Stores `value` and returns the previous one (like [`Option::replace`]).
    pub fn replace(&mut self, value: i64) -> Option<i64> {
        let previous = self.get();
        self.0 = Align4::new(value.nearest_present());
        previous
    }

    /// Stores `value` unless a value is already present (like [`Option::get_or_insert`]).
    pub fn get_or_insert(&mut self, value: i64) -> i64 {
        match self.get() {
            Some(v) => v,
            None => {
                self.replace(value);
                value.nearest_present()
            }
        }
    }
}

impl Default for MaybeA4 {
    fn default() -> Self {
        MaybeA4(Align4::new(i64::ABSENT))
    }
}

impl From<Option<i64>> for MaybeA4 {
    fn from(value: Option<i64>) -> Self {
        MaybeA4(Align4::new(value.map_or(i64::ABSENT, i64::nearest_present)))
    }
}

impl std::fmt::Debug for MaybeA4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl Serialize for MaybeA4 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for MaybeA4 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<i64>::deserialize(deserializer).map(MaybeA4::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_size_of_the_number() {
        assert_eq!(std::mem::size_of::<Maybe<i64>>(), 8);
        assert_eq!(std::mem::size_of::<Maybe<u64>>(), 8);
        assert_eq!(std::mem::size_of::<Maybe<u32>>(), 4);
        assert_eq!(std::mem::size_of::<Maybe<f64>>(), 8);
        assert_eq!(std::mem::align_of::<Align4<i64>>(), 4);
        assert_eq!(std::mem::size_of::<Align4<u64>>(), 8);
    }

    #[test]
    fn align4_keeps_every_value() {
        for v in [i64::MIN, -1, 0, 1, 1_764_000_000_000, i64::MAX] {
            assert_eq!(Align4::new(v).get(), v);
            let text = serde_json::to_string(&Align4::new(v)).unwrap();
            assert_eq!(text, v.to_string());
            assert_eq!(serde_json::from_str::<Align4<i64>>(&text).unwrap().get(), v);
        }
        assert_eq!(Align4::new(u64::MAX).get(), u64::MAX);
        let mut t = MaybeA4::default();
        assert_eq!((t.get(), std::mem::align_of::<MaybeA4>()), (None, 4));
        assert_eq!(t.get_or_insert(5), 5);
        assert_eq!(t.replace(-7), Some(5));
        assert_eq!(serde_json::to_string(&t).unwrap(), "-7");
        assert_eq!(serde_json::to_string(&MaybeA4::default()).unwrap(), "null");
        assert_eq!(MaybeA4::from(Some(i64::MIN)).get(), Some(i64::MIN + 1));
        let absent = Maybe::<f64>::NONE;
        assert_eq!(absent.get(), None);
        assert_eq!(
            serde_json::to_string(&Maybe::from(Some(1500.0))).unwrap(),
            "1500.0"
        );
    }

    #[test]
    fn behaves_like_an_option() {
        let mut t = Maybe::<i64>::NONE;
        assert_eq!(t.get(), None);
        assert_eq!(t.get_or_insert(5), 5);
        assert_eq!(t.get_or_insert(9), 5);
        assert_eq!(t.replace(-7), Some(5));
        assert_eq!(t.get(), Some(-7));
        assert_eq!(t.replace(0), Some(-7));
        assert_eq!(t.get(), Some(0), "zero is a value, not absence");
        // The reserved value is kept as its neighbour, never read back as absent.
        assert_eq!(Maybe::from(Some(i64::MIN)).get(), Some(i64::MIN + 1));
        assert_eq!(Maybe::from(Some(u64::MAX)).get(), Some(u64::MAX - 1));
    }

    #[test]
    fn serialises_like_the_option_it_replaces() {
        let some = Maybe::from(Some(1_764_000_000_000_i64));
        assert_eq!(serde_json::to_string(&some).unwrap(), "1764000000000");
        assert_eq!(serde_json::to_string(&Maybe::<u64>::NONE).unwrap(), "null");
        let back: Maybe<i64> = serde_json::from_str("1764000000000").unwrap();
        assert_eq!(back, some);
        let none: Maybe<u32> = serde_json::from_str("null").unwrap();
        assert_eq!(none.get(), None);
    }
}
