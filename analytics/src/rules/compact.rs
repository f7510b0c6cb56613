//! Compact optional values for per-device state.
//!
//! `Option<i64>` takes 16 bytes (a tag and padding); a device time or a counter has a
//! value it never takes (`i64::MIN` ms, `u64::MAX` ml), so [`Maybe`] stores "absent" as
//! that value in the 8 bytes of the number. It is serialised exactly like the `Option`
//! it replaces (a number or `null`), so snapshots keep their shape.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_size_of_the_number() {
        assert_eq!(std::mem::size_of::<Maybe<i64>>(), 8);
        assert_eq!(std::mem::size_of::<Maybe<u64>>(), 8);
        assert_eq!(std::mem::size_of::<Maybe<u32>>(), 4);
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
