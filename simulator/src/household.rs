//! Households that behave like households: size, daily rhythm, weekdays versus
//! weekends, holidays away, and the site's water (seasonal temperature, inlet TDS,
//! static pressure).
//!
//! Everything is drawn from a seeded RNG passed in, so a household and its days are
//! reproducible from the fleet seed. Times are UTC milliseconds; the simulated
//! households live on UTC.

use protocol::message::Model;
use rand::rngs::StdRng;
use rand::Rng;

/// Milliseconds in a day.
pub use protocol::catalog::DAY_MS;
/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;
const MIN_MS: i64 = 60_000;

/// The water supply of a site.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Site {
    /// Inlet total dissolved solids, ppm (hard or soft water).
    pub inlet_tds_ppm: f64,
    /// Static supply pressure, kPa.
    pub static_pressure_kpa: f64,
    /// Offset of this site's mains temperature from the regional curve, °C.
    pub water_temp_offset_c: f64,
}

/// One household.
#[derive(Debug, Clone, PartialEq)]
pub struct Household {
    /// People living there (1 to 5; 2 to 6 with a shared shower).
    pub size: u8,
    /// Wake-up hour on weekdays.
    pub wake_weekday_h: f64,
    /// Wake-up hour at weekends.
    pub wake_weekend_h: f64,
    /// Bedtime hour.
    pub bed_h: f64,
    /// True if someone is usually home on weekdays (retired, home office, small children).
    pub home_daytime: bool,
    /// Away periods (holidays), `[start, end)` in ms.
    pub away: Vec<(i64, i64)>,
    /// The water supply.
    pub site: Site,
    /// Preferred shower temperature, °C.
    pub shower_pref_c: f64,
    /// Probability that a toilet visit includes a bidet wash.
    pub bidet_use: f64,
    /// A shared shower (the `shared_shower` variant): each person's preferred
    /// temperature (°C) and shower-length factor. Empty: everyone showers at
    /// `shower_pref_c`.
    pub people: Vec<(f64, f64)>,
}

/// Seasonal mains water temperature at `t_ms` (northern hemisphere: coldest early
/// February, warmest mid August), before the site offset.
pub fn mains_temp_c(t_ms: i64) -> f64 {
    let doy = (t_ms.rem_euclid(365 * DAY_MS * 4) / DAY_MS) as f64 % 365.25;
    13.5 - 7.5 * (2.0 * std::f64::consts::PI * (doy - 40.0) / 365.25).cos()
}

/// Indoor temperature, °C: a little warmer in summer.
pub fn room_temp_c(t_ms: i64) -> f64 {
    21.0 + 0.3 * (mains_temp_c(t_ms) - 13.5)
}

/// Midnight UTC at or before `t_ms`.
pub fn day_floor(t_ms: i64) -> i64 {
    t_ms.div_euclid(DAY_MS) * DAY_MS
}

/// True on Saturday and Sunday (1970-01-01 was a Thursday).
pub fn is_weekend(t_ms: i64) -> bool {
    let weekday = (t_ms.div_euclid(DAY_MS) + 3).rem_euclid(7); // 0 = Monday
    weekday >= 5
}

/// A normal sample (Box-Muller) with mean `mu` and deviation `sd`.
pub fn normal(rng: &mut StdRng, mu: f64, sd: f64) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    mu + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// What one use of a fixture looks like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UsageKind {
    /// Someone sits down for `seat_ms`; maybe a wash (`offset_ms` after sitting, lasting
    /// `dur_ms`), maybe a flush after getting up.
    ToiletVisit {
        /// How long the seat is occupied.
        seat_ms: i64,
        /// Bidet wash: offset from sitting down, duration.
        wash: Option<(i64, i64)>,
        /// Flushes afterwards.
        flush: bool,
    },
    /// A glass, a bottle or a pot from the purifier.
    Dispense {
        /// Millilitres wanted.
        ml: f64,
    },
    /// A shower.
    Shower {
        /// How long the water runs.
        dur_ms: i64,
        /// Who showers (index into [`Household::people`] when it is set).
        person: u8,
    },
}

/// One use at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// When it starts, UTC ms.
    pub start_ms: i64,
    /// What it is.
    pub kind: UsageKind,
}

impl Usage {
    /// How long the fixture is busy with it (including a flush refill), ms.
    pub fn busy_ms(&self) -> i64 {
        match self.kind {
            UsageKind::ToiletVisit { seat_ms, flush, .. } => {
                seat_ms + if flush { 60_000 } else { 5_000 }
            }
            UsageKind::Dispense { ml } => (ml / 25.0 * 1000.0) as i64 + 15_000,
            UsageKind::Shower { dur_ms, .. } => dur_ms + 30_000,
        }
    }
}

impl Household {
    /// Draws a household for a simulation spanning `[start_ms, end_ms)`.
    pub fn generate(rng: &mut StdRng, start_ms: i64, end_ms: i64) -> Household {
        let size = match rng.random_range(0..100) {
            0..=27 => 1,
            28..=61 => 2,
            62..=76 => 3,
            77..=91 => 4,
            _ => 5,
        };
        let wake_weekday_h = normal(rng, 6.7, 0.6).clamp(4.5, 9.0);
        let wake_weekend_h = (wake_weekday_h + normal(rng, 1.5, 0.5)).clamp(wake_weekday_h, 11.0);
        let bed_h = normal(rng, 22.8, 0.7).clamp(20.5, 25.0);
        let home_daytime = rng.random_bool(0.35);
        // Holidays: most households take none in a quarter, some one or two.
        let mut away = Vec::new();
        let span_days = (end_ms - start_ms) / DAY_MS;
        let trips = if span_days < 10 {
            0
        } else {
            [0, 0, 0, 1, 1, 2][rng.random_range(0..6)] * (span_days / 60 + 1)
        };
        for _ in 0..trips {
            let len = rng.random_range(3..=14) * DAY_MS;
            if span_days * DAY_MS <= len + 2 * DAY_MS {
                continue;
            }
            let s = day_floor(start_ms + rng.random_range(DAY_MS..(span_days * DAY_MS - len)))
                + 10 * HOUR_MS;
            if away
                .iter()
                .all(|&(a, b)| s + len + DAY_MS < a || s > b + DAY_MS)
            {
                away.push((s, s + len));
            }
        }
        away.sort_unstable();
        let site = Site {
            inlet_tds_ppm: rng.random_range(60.0..450.0),
            static_pressure_kpa: rng.random_range(200.0..480.0),
            water_temp_offset_c: normal(rng, 0.0, 1.5),
        };
        Household {
            size,
            wake_weekday_h,
            wake_weekend_h,
            bed_h,
            home_daytime,
            away,
            site,
            shower_pref_c: normal(rng, 39.0, 1.0).clamp(36.0, 42.0),
            bidet_use: rng.random_range(0.4..0.9),
            people: Vec::new(),
        }
    }

    /// Makes this a home of 2–6 people sharing a shower, each with their own preferred
    /// temperature and shower length (the `shared_shower` variant).
    pub fn share_shower(&mut self, rng: &mut StdRng) {
        self.size = rng.random_range(2..=6);
        let base = self.shower_pref_c;
        self.people = (0..self.size)
            .map(|_| {
                (
                    normal(rng, base, 2.5).clamp(33.0, 45.0),
                    rng.random_range(0.5..1.6),
                )
            })
            .collect();
    }

    /// The mixed-water temperature `person` chooses for one shower, °C.
    pub fn shower_temp_c(&self, person: u8, rng: &mut StdRng) -> f64 {
        match self.people.get(usize::from(person)) {
            // People set the mixer a little differently every time.
            Some(&(pref, _)) => pref + normal(rng, 0.0, 0.4),
            None => self.shower_pref_c,
        }
    }

    /// True if the household is away at `t_ms`.
    pub fn is_away(&self, t_ms: i64) -> bool {
        self.away.iter().any(|&(a, b)| t_ms >= a && t_ms < b)
    }

    /// Mains water temperature at this site, °C.
    pub fn inlet_temp_c(&self, t_ms: i64) -> f64 {
        mains_temp_c(t_ms) + self.site.water_temp_offset_c
    }

    /// The uses of a `model` fixture on the day starting at `day_ms` (midnight UTC),
    /// sorted and not overlapping. Uses falling in an away period are left out.
    pub fn day_usage(&self, model: Model, day_ms: i64, rng: &mut StdRng) -> Vec<Usage> {
        let weekend = is_weekend(day_ms);
        let wake = if weekend {
            self.wake_weekend_h
        } else {
            self.wake_weekday_h
        };
        let home = weekend || self.home_daytime;
        let at = |rng: &mut StdRng, h: f64, sd: f64| {
            day_ms + (normal(rng, h, sd).clamp(0.0, 23.9) * HOUR_MS as f64) as i64
        };
        let mut uses = Vec::new();
        for person in 0..self.size {
            match model {
                Model::Toilet => {
                    // (mean hour, sd, probability)
                    let day_p = if home { 0.7 } else { 0.15 };
                    let slots = [
                        (wake + 0.2, 0.15, 0.95),
                        (wake + 1.0, 0.4, 0.35),
                        (12.5, 1.5, day_p),
                        (15.5, 1.5, day_p),
                        (18.8, 0.8, 0.8),
                        (self.bed_h - 0.3, 0.3, 0.9),
                        (3.0, 1.0, 0.12),
                    ];
                    for (h, sd, p) in slots {
                        if rng.random_bool(p) {
                            let seat_ms =
                                (normal(rng, 180.0, 90.0).clamp(30.0, 900.0) * 1000.0) as i64;
                            let wash = rng.random_bool(self.bidet_use).then(|| {
                                let dur =
                                    (normal(rng, 35.0, 12.0).clamp(12.0, 90.0) * 1000.0) as i64;
                                (seat_ms.saturating_sub(dur + 15_000).max(5_000), dur)
                            });
                            let seat_ms =
                                wash.map_or(seat_ms, |(o, d)| seat_ms.max(o + d + 10_000));
                            uses.push(Usage {
                                start_ms: at(rng, h, sd),
                                kind: UsageKind::ToiletVisit {
                                    seat_ms,
                                    wash,
                                    flush: rng.random_bool(0.97),
                                },
                            });
                        }
                    }
                }
                Model::Purifier => {
                    let draws = if home {
                        rng.random_range(4..9)
                    } else {
                        rng.random_range(2..5)
                    };
                    for _ in 0..draws {
                        let h = rng.random_range(wake..self.bed_h.min(23.5));
                        uses.push(Usage {
                            start_ms: at(rng, h, 0.2),
                            kind: UsageKind::Dispense {
                                ml: rng.random_range(200.0..700.0),
                            },
                        });
                    }
                    if rng.random_bool(0.6) {
                        uses.push(Usage {
                            start_ms: at(rng, 18.5, 0.7),
                            kind: UsageKind::Dispense {
                                ml: rng.random_range(1000.0..2500.0),
                            },
                        });
                    }
                }
                Model::Shower => {
                    if rng.random_bool(0.8) {
                        let h = if rng.random_bool(0.6) {
                            wake + 0.3
                        } else {
                            self.bed_h - 1.2
                        };
                        let factor = self.people.get(usize::from(person)).map_or(1.0, |p| p.1);
                        let dur_ms = (normal(rng, 8.0, 3.0).clamp(3.0, 25.0)
                            * factor
                            * MIN_MS as f64) as i64;
                        uses.push(Usage {
                            start_ms: at(rng, h, 0.3),
                            kind: UsageKind::Shower { dur_ms, person },
                        });
                    }
                }
            }
        }
        uses.sort_by_key(|u| u.start_ms);
        // One use at a time: the next person waits.
        let mut free_at = i64::MIN;
        for u in &mut uses {
            if u.start_ms < free_at {
                u.start_ms = free_at;
            }
            free_at = u.start_ms + u.busy_ms() + 30_000;
        }
        uses.retain(|u| !self.is_away(u.start_ms) && u.start_ms < day_ms + DAY_MS);
        uses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const START: i64 = 1_767_225_600_000; // 2026-01-01 00:00 UTC

    #[test]
    fn households_are_deterministic_under_seed() {
        let a = Household::generate(&mut StdRng::seed_from_u64(7), START, START + 90 * DAY_MS);
        let b = Household::generate(&mut StdRng::seed_from_u64(7), START, START + 90 * DAY_MS);
        let c = Household::generate(&mut StdRng::seed_from_u64(8), START, START + 90 * DAY_MS);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let da = a.day_usage(Model::Toilet, START, &mut StdRng::seed_from_u64(1));
        let db = b.day_usage(Model::Toilet, START, &mut StdRng::seed_from_u64(1));
        assert_eq!(da, db);
    }

    #[test]
    fn weekends_start_later_than_weekdays() {
        // 2026-01-05 is a Monday, 2026-01-10 a Saturday.
        let monday = START + 4 * DAY_MS;
        assert!(
            !is_weekend(monday)
                && is_weekend(monday + 5 * DAY_MS)
                && is_weekend(monday + 6 * DAY_MS)
        );
        let mut rng = StdRng::seed_from_u64(3);
        let (mut wd, mut we) = (vec![], vec![]);
        for i in 0..200 {
            let mut h = Household::generate(&mut rng, START, START + 90 * DAY_MS);
            h.away.clear();
            let first = |d: i64, rng: &mut StdRng| {
                h.day_usage(Model::Shower, d, rng)
                    .iter()
                    .map(|u| u.start_ms - d)
                    .min()
            };
            wd.extend(first(monday + (i % 5) * DAY_MS, &mut rng));
            we.extend(first(monday + 5 * DAY_MS, &mut rng));
        }
        let mean = |v: &[i64]| v.iter().sum::<i64>() as f64 / v.len() as f64 / HOUR_MS as f64;
        assert!(
            mean(&we) > mean(&wd) + 0.5,
            "weekday {} weekend {}",
            mean(&wd),
            mean(&we)
        );
    }

    #[test]
    fn bigger_households_use_more_and_nobody_uses_while_away() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut h = Household::generate(&mut rng, START, START + 90 * DAY_MS);
        h.size = 1;
        let one: usize = (0..30)
            .map(|d| {
                h.day_usage(Model::Toilet, START + d * DAY_MS, &mut rng)
                    .len()
            })
            .sum();
        h.size = 5;
        let five: usize = (0..30)
            .map(|d| {
                h.day_usage(Model::Toilet, START + d * DAY_MS, &mut rng)
                    .len()
            })
            .sum();
        assert!(five > 3 * one, "{one} vs {five}");
        h.away = vec![(START, START + 3 * DAY_MS)];
        assert!(h
            .day_usage(Model::Toilet, START + DAY_MS, &mut rng)
            .is_empty());
    }

    #[test]
    fn uses_never_overlap() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut h = Household::generate(&mut rng, START, START + 90 * DAY_MS);
        h.size = 5;
        for model in [Model::Toilet, Model::Purifier, Model::Shower] {
            let u = h.day_usage(model, START + 10 * DAY_MS, &mut rng);
            for w in u.windows(2) {
                assert!(w[1].start_ms >= w[0].start_ms + w[0].busy_ms());
            }
        }
    }

    #[test]
    fn mains_water_is_coldest_in_february_and_warmest_in_august() {
        let feb = START + 39 * DAY_MS;
        let aug = START + 221 * DAY_MS;
        assert!(
            (mains_temp_c(feb) - 6.0).abs() < 0.2,
            "{}",
            mains_temp_c(feb)
        );
        assert!(
            (mains_temp_c(aug) - 21.0).abs() < 0.2,
            "{}",
            mains_temp_c(aug)
        );
    }
}
