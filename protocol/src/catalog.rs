//! The catalogue of the fleet: which cartridges each model carries, their rated
//! capacities and maximum ages, and the time constants every crate counts in.
//!
//! One place for these facts, so the firmware, the simulator, the forecaster and the
//! registry cannot disagree. A registry entry or a device may still rate a particular
//! cartridge differently; these are the defaults of the standard kinds.

use crate::message::{CartridgeKind, Model};

/// One second, in milliseconds.
pub const SECOND_MS: i64 = 1_000;
/// One minute, in milliseconds.
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
/// One hour, in milliseconds.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// One day, in milliseconds (UTC days: no leap seconds, no DST).
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// One week, in milliseconds.
pub const WEEK_MS: i64 = 7 * DAY_MS;

impl Model {
    /// The cartridge kinds of this model, by slot (slot `i` holds `cartridge_kinds()[i]`).
    pub const fn cartridge_kinds(self) -> &'static [CartridgeKind] {
        match self {
            Model::Toilet => &[],
            Model::Purifier => &[
                CartridgeKind::Sediment,
                CartridgeKind::Carbon,
                CartridgeKind::ReverseOsmosis,
            ],
            Model::Shower => &[CartridgeKind::Shower],
        }
    }

    /// Whether this model has a motorised water inlet valve the gateway can close
    /// (`close_inlet_valve`): toilets and purifiers have a solenoid on the supply;
    /// the thermostatic shower is a mechanical mixer.
    pub const fn has_inlet_valve(self) -> bool {
        match self {
            Model::Toilet | Model::Purifier => true,
            Model::Shower => false,
        }
    }

    /// Whether this model runs a cleaning programme on request (`start_cleaning`).
    pub const fn has_cleaning_programme(self) -> bool {
        matches!(self, Model::Toilet)
    }
}

impl CartridgeKind {
    /// Every kind, in a stable order (the forecaster's table of standard specifications).
    pub const ALL: [CartridgeKind; 4] = [
        CartridgeKind::Sediment,
        CartridgeKind::Carbon,
        CartridgeKind::ReverseOsmosis,
        CartridgeKind::Shower,
    ];

    /// Rated capacity of a standard cartridge of this kind, litres.
    pub const fn rated_litres(self) -> u32 {
        match self {
            CartridgeKind::Sediment => 1_500,
            CartridgeKind::Carbon => 3_000,
            CartridgeKind::ReverseOsmosis => 6_000,
            CartridgeKind::Shower => 8_000,
        }
    }

    /// Maximum age of a cartridge of this kind, days (common vendor figures: 6, 12, 24
    /// and 6 months), whatever volume went through it.
    pub const fn max_age_days(self) -> u32 {
        match self {
            CartridgeKind::Sediment => 180,
            CartridgeKind::Carbon => 365,
            CartridgeKind::ReverseOsmosis => 730,
            CartridgeKind::Shower => 180,
        }
    }

    /// Position of this kind in [`Self::ALL`].
    pub const fn index(self) -> usize {
        match self {
            CartridgeKind::Sediment => 0,
            CartridgeKind::Carbon => 1,
            CartridgeKind::ReverseOsmosis => 2,
            CartridgeKind::Shower => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (i, k) in CartridgeKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn only_purifiers_and_showers_carry_cartridges() {
        assert!(Model::Toilet.cartridge_kinds().is_empty());
        assert_eq!(Model::Purifier.cartridge_kinds().len(), 3);
        assert_eq!(Model::Shower.cartridge_kinds(), &[CartridgeKind::Shower]);
        assert_eq!(DAY_MS, 86_400_000);
    }

    #[test]
    fn only_toilets_and_purifiers_have_an_inlet_valve() {
        assert!(Model::Toilet.has_inlet_valve() && Model::Purifier.has_inlet_valve());
        assert!(!Model::Shower.has_inlet_valve());
        assert!(Model::Toilet.has_cleaning_programme());
        assert!(!Model::Purifier.has_cleaning_programme());
    }
}
