//! The registry: homes (with their owner), devices with cartridge specs, and technicians.
//!
//! The types double as the API's request and response bodies; [`Home::validate`] and
//! [`Device::validate`] are the edge checks.

use crate::store::{params, Connection, OptionalExtension};
use protocol::message::{CartridgeKind, Model};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::templates::Lang;

/// A homeowner contact channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// App push, via the push webhook.
    App,
    /// E-mail over SMTP.
    Email,
    /// SMS, via the SMS webhook.
    Sms,
}

/// The homeowner of a home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// Name.
    pub name: String,
    /// Mobile number, digits with an optional leading `+`.
    pub phone: String,
    /// E-mail address, if any.
    #[serde(default)]
    pub email: Option<String>,
}

/// A home: where the devices are and who to tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Home {
    /// Home id, `[a-z0-9-_]{1,32}`.
    pub id: String,
    /// Postal address (personal data).
    pub address: String,
    /// Service region, matched against technicians' regions.
    pub region: String,
    /// IANA time zone, e.g. `Asia/Shanghai`.
    pub tz: String,
    /// Language of messages.
    pub lang: Lang,
    /// Start of quiet hours, local `HH:MM`.
    #[serde(default = "default_quiet_start")]
    pub quiet_start: String,
    /// End of quiet hours, local `HH:MM`.
    #[serde(default = "default_quiet_end")]
    pub quiet_end: String,
    /// Non-urgent messages per rolling week; the policy default if absent.
    #[serde(default)]
    pub weekly_cap: Option<u32>,
    /// How to reach the owner.
    pub channels: Vec<Channel>,
    /// The owner (personal data).
    pub owner: Owner,
    /// The site (building, or water supply) the home shares with others, `[a-z0-9-_]{1,32}`:
    /// findings that a shared supply explains (low pressure) are grouped per site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

fn default_quiet_start() -> String {
    "22:00".into()
}
fn default_quiet_end() -> String {
    "08:00".into()
}

/// Parses local `HH:MM` into minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Longest address, in characters.
pub const MAX_TEXT_CHARS: usize = 200;
/// Longest person's name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest region or skill, in characters.
pub const MAX_SHORT_CHARS: usize = 64;
/// Most skills per technician.
pub const MAX_SKILLS: usize = 16;

/// A free-text field: not blank, at most `max` characters (not bytes), no control characters.
fn check_text(field: &'static str, text: &str, max: usize) -> Result<()> {
    if text.trim().is_empty() || text.chars().count() > max {
        return Err(Error::invalid(field, format!("1 to {max} characters")));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::invalid(field, "no control characters"));
    }
    Ok(())
}

/// True if `id` is `[a-z0-9-_]{1,32}`, the charset shared with device ids.
pub fn valid_id(id: &str) -> bool {
    protocol::is_valid_device_id(id)
}

impl Home {
    /// Checks every field; the first problem is returned.
    pub fn validate(&self) -> Result<()> {
        if !valid_id(&self.id) {
            return Err(Error::invalid("id", "1 to 32 characters of [a-z0-9-_]"));
        }
        check_text("address", &self.address, MAX_TEXT_CHARS)?;
        check_text("region", &self.region, MAX_SHORT_CHARS)?;
        if self.tz.parse::<chrono_tz::Tz>().is_err() {
            return Err(Error::invalid(
                "tz",
                format!("unknown time zone {:?}", self.tz),
            ));
        }
        if parse_hhmm(&self.quiet_start).is_none() || parse_hhmm(&self.quiet_end).is_none() {
            return Err(Error::invalid(
                "quiet_start/quiet_end",
                "local time as HH:MM",
            ));
        }
        if let Some(site) = &self.site {
            if !valid_id(site) {
                return Err(Error::invalid("site", "1 to 32 characters of [a-z0-9-_]"));
            }
        }
        if self.weekly_cap == Some(0) {
            return Err(Error::invalid("weekly_cap", "at least 1"));
        }
        if self.channels.is_empty() {
            return Err(Error::invalid(
                "channels",
                "at least one of app, email, sms",
            ));
        }
        check_text("owner.name", &self.owner.name, MAX_NAME_CHARS)?;
        let digits = self
            .owner
            .phone
            .strip_prefix('+')
            .unwrap_or(&self.owner.phone);
        if digits.len() < 7 || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid(
                "owner.phone",
                "7 to 15 digits, optional leading +",
            ));
        }
        match &self.owner.email {
            Some(e) if !(e.contains('@') && e.len() <= 254 && !e.contains(char::is_whitespace)) => {
                return Err(Error::invalid("owner.email", "an e-mail address"));
            }
            None if self.channels.contains(&Channel::Email) => {
                return Err(Error::invalid(
                    "owner.email",
                    "required for the email channel",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// A cartridge slot's spec and replacement state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CartridgeSpec {
    /// Slot number on the fixture.
    pub slot: u8,
    /// Cartridge kind.
    pub kind: CartridgeKind,
    /// Rated capacity, litres.
    pub rated_litres: u32,
    /// Maximum age, days.
    pub max_age_days: u32,
    /// When it was last replaced, UTC ms (set by the engine).
    #[serde(default)]
    pub replaced_ts_ms: Option<i64>,
    /// The device's replacement counter as last seen (set by the engine).
    #[serde(default)]
    pub replacements: u32,
}

/// A device in a home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Device id, as in MQTT topics.
    pub id: String,
    /// The home it is in.
    pub home_id: String,
    /// Fixture model.
    pub model: Model,
    /// Installation date, UTC ms.
    pub installed_ts_ms: i64,
    /// Cartridge specs (purifiers and showers).
    #[serde(default)]
    pub cartridges: Vec<CartridgeSpec>,
}

impl Device {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if !valid_id(&self.id) {
            return Err(Error::invalid("id", "1 to 32 characters of [a-z0-9-_]"));
        }
        if !valid_id(&self.home_id) {
            return Err(Error::invalid(
                "home_id",
                "1 to 32 characters of [a-z0-9-_]",
            ));
        }
        if self.installed_ts_ms < 0 {
            return Err(Error::invalid("installed_ts_ms", "not before 1970"));
        }
        let mut slots: Vec<u8> = self.cartridges.iter().map(|c| c.slot).collect();
        slots.sort_unstable();
        slots.dedup();
        if slots.len() != self.cartridges.len()
            || self.cartridges.len() > protocol::message::MAX_CARTRIDGES
        {
            return Err(Error::invalid("cartridges", "unique slots, at most 4"));
        }
        if self
            .cartridges
            .iter()
            .any(|c| c.rated_litres == 0 || c.max_age_days == 0)
        {
            return Err(Error::invalid(
                "cartridges",
                "rated_litres and max_age_days above 0",
            ));
        }
        Ok(())
    }
}

/// A technician of the after-sales team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Technician {
    /// Technician id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Region served.
    pub region: String,
    /// Skills, e.g. `plumbing`, `electrical`, `filter`.
    pub skills: Vec<String>,
}

impl Technician {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if !valid_id(&self.id) {
            return Err(Error::invalid("id", "1 to 32 characters of [a-z0-9-_]"));
        }
        if self.name.trim().is_empty() || self.region.trim().is_empty() || self.skills.is_empty() {
            return Err(Error::invalid(
                "technician",
                "name, region and at least one skill",
            ));
        }
        check_text("name", &self.name, MAX_NAME_CHARS)?;
        check_text("region", &self.region, MAX_SHORT_CHARS)?;
        if self.skills.len() > MAX_SKILLS {
            return Err(Error::invalid("skills", format!("at most {MAX_SKILLS}")));
        }
        for skill in &self.skills {
            check_text("skills", skill, MAX_SHORT_CHARS)?;
        }
        Ok(())
    }
}

fn enum_parse<T: for<'de> Deserialize<'de>>(s: String) -> crate::store::Result<T> {
    serde_json::from_value(serde_json::Value::String(s)).map_err(|e| {
        crate::store::StoreError::Conversion {
            column: 0,
            reason: e.to_string(),
        }
    })
}

/// Inserts or replaces a home.
pub fn put_home(conn: &Connection, h: &Home) -> Result<()> {
    conn.execute(
        "INSERT INTO homes (id, address, region, tz, lang, quiet_start, quiet_end, weekly_cap, channels,
                            owner_name, owner_phone, owner_email, site)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT(id) DO UPDATE SET address = ?2, region = ?3, tz = ?4, lang = ?5, quiet_start = ?6,
            quiet_end = ?7, weekly_cap = ?8, channels = ?9, owner_name = ?10, owner_phone = ?11, owner_email = ?12,
            site = ?13",
        params![
            h.id,
            h.address,
            h.region,
            h.tz,
            h.lang.as_str(),
            h.quiet_start,
            h.quiet_end,
            h.weekly_cap,
            serde_json::to_string(&h.channels)?,
            h.owner.name,
            h.owner.phone,
            h.owner.email,
            h.site
        ],
    )?;
    Ok(())
}

fn home_row(r: &crate::store::Row<'_>) -> crate::store::Result<Home> {
    let lang: String = r.get(4)?;
    let channels: String = r.get(8)?;
    Ok(Home {
        id: r.get(0)?,
        address: r.get(1)?,
        region: r.get(2)?,
        tz: r.get(3)?,
        lang: Lang::parse(&lang).unwrap_or(Lang::ZhCn),
        quiet_start: r.get(5)?,
        quiet_end: r.get(6)?,
        weekly_cap: r.get(7)?,
        channels: serde_json::from_str(&channels).unwrap_or_default(),
        owner: Owner {
            name: r.get(9)?,
            phone: r.get(10)?,
            email: r.get(11)?,
        },
        site: r.get(12)?,
    })
}

const HOME_COLS: &str = "id, address, region, tz, lang, quiet_start, quiet_end, weekly_cap, channels, owner_name, owner_phone, owner_email, site";

/// One home.
pub fn get_home(conn: &Connection, id: &str) -> Result<Option<Home>> {
    Ok(conn
        .query_row(
            &format!("SELECT {HOME_COLS} FROM homes WHERE id = ?1"),
            [id],
            home_row,
        )
        .optional()?)
}

/// All homes, by id.
pub fn list_homes(conn: &Connection, page: crate::page::Page) -> Result<crate::page::Paged<Home>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {HOME_COLS} FROM homes ORDER BY id LIMIT ?1 OFFSET ?2"
    ))?;
    let rows = stmt
        .query_map(
            crate::params![page.sql_limit(), page.sql_offset()],
            home_row,
        )?
        .collect::<crate::store::Result<Vec<_>>>()?;
    Ok(page.finish(rows))
}

/// Inserts or replaces a device and its cartridge specs (keeping replacement state).
pub fn put_device(conn: &Connection, d: &Device) -> Result<()> {
    if get_home(conn, &d.home_id)?.is_none() {
        return Err(Error::not_found("home", &d.home_id));
    }
    conn.execute(
        "INSERT INTO devices (id, home_id, model, installed_ts_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET home_id = ?2, model = ?3, installed_ts_ms = ?4",
        params![d.id, d.home_id, d.model.as_str(), d.installed_ts_ms],
    )?;
    let slots: Vec<i64> = d.cartridges.iter().map(|c| i64::from(c.slot)).collect();
    conn.execute(
        &format!(
            "DELETE FROM cartridges WHERE device_id = ?1 AND slot NOT IN ({})",
            if slots.is_empty() {
                "-1".to_owned()
            } else {
                slots
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            }
        ),
        [&d.id],
    )?;
    for c in &d.cartridges {
        conn.execute(
            "INSERT INTO cartridges (device_id, slot, kind, rated_litres, max_age_days, replaced_ts_ms, replacements)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(device_id, slot) DO UPDATE SET kind = ?3, rated_litres = ?4, max_age_days = ?5",
            params![d.id, c.slot, c.kind.as_str(), c.rated_litres, c.max_age_days, c.replaced_ts_ms, c.replacements],
        )?;
    }
    Ok(())
}

fn device_row(r: &crate::store::Row<'_>) -> crate::store::Result<Device> {
    Ok(Device {
        id: r.get(0)?,
        home_id: r.get(1)?,
        model: enum_parse(r.get(2)?)?,
        installed_ts_ms: r.get(3)?,
        cartridges: Vec::new(),
    })
}

fn with_cartridges(conn: &Connection, mut d: Device) -> Result<Device> {
    let mut stmt = conn.prepare(
        "SELECT slot, kind, rated_litres, max_age_days, replaced_ts_ms, replacements
         FROM cartridges WHERE device_id = ?1 ORDER BY slot",
    )?;
    d.cartridges = stmt
        .query_map([&d.id], |r| {
            Ok(CartridgeSpec {
                slot: r.get(0)?,
                kind: enum_parse(r.get(1)?)?,
                rated_litres: r.get(2)?,
                max_age_days: r.get(3)?,
                replaced_ts_ms: r.get(4)?,
                replacements: r.get(5)?,
            })
        })?
        .collect::<crate::store::Result<Vec<_>>>()?;
    Ok(d)
}

/// One device with its cartridges.
pub fn get_device(conn: &Connection, id: &str) -> Result<Option<Device>> {
    let d = conn
        .query_row(
            "SELECT id, home_id, model, installed_ts_ms FROM devices WHERE id = ?1",
            [id],
            device_row,
        )
        .optional()?;
    d.map(|d| with_cartridges(conn, d)).transpose()
}

/// Devices of one home, or all devices if `home_id` is `None`.
pub fn list_devices(conn: &Connection, home_id: Option<&str>) -> Result<Vec<Device>> {
    let mut stmt = conn.prepare(
        "SELECT id, home_id, model, installed_ts_ms FROM devices
         WHERE CAST(?1 AS TEXT) IS NULL OR home_id = ?1 ORDER BY id",
    )?;
    let devices = stmt
        .query_map([home_id], device_row)?
        .collect::<crate::store::Result<Vec<_>>>()?;
    devices
        .into_iter()
        .map(|d| with_cartridges(conn, d))
        .collect()
}

/// A cheap summary of every device's cartridge ratings (rows, a slot-weighted sum of the
/// ratings, the largest row id): it changes whenever a rating is added, changed or removed,
/// so a reader can skip [`cartridge_ratings`] while it stays the same.
pub fn cartridge_ratings_fingerprint(conn: &Connection) -> Result<(i64, i64, i64)> {
    // The newest row: SQLite's rowid; PostgreSQL's row version (`xmin`, new at every write).
    let newest = match conn.dialect() {
        crate::store::Dialect::Sqlite => "rowid",
        crate::store::Dialect::Postgres => "xmin::text::bigint",
    };
    Ok(conn.query_row(
        &format!("SELECT count(*), coalesce(sum(rated_litres * (slot + 1)), 0), coalesce(max({newest}), 0) FROM cartridges"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?)
}

/// Every registered cartridge's `(device id, slot, rated litres)`, by device and slot.
pub fn cartridge_ratings(conn: &Connection) -> Result<Vec<(String, u8, u32)>> {
    let mut stmt = conn
        .prepare("SELECT device_id, slot, rated_litres FROM cartridges ORDER BY device_id, slot")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<crate::store::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Inserts or replaces a technician.
pub fn put_technician(conn: &Connection, t: &Technician) -> Result<()> {
    conn.execute(
        "INSERT INTO technicians (id, name, region, skills) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET name = ?2, region = ?3, skills = ?4",
        params![t.id, t.name, t.region, serde_json::to_string(&t.skills)?],
    )?;
    Ok(())
}

/// All technicians, by id.
pub fn list_technicians(
    conn: &Connection,
    page: crate::page::Page,
) -> Result<crate::page::Paged<Technician>> {
    let mut stmt = conn.prepare(
        "SELECT id, name, region, skills FROM technicians ORDER BY id LIMIT ?1 OFFSET ?2",
    )?;
    let rows = stmt
        .query_map(crate::params![page.sql_limit(), page.sql_offset()], |r| {
            let skills: String = r.get(3)?;
            Ok(Technician {
                id: r.get(0)?,
                name: r.get(1)?,
                region: r.get(2)?,
                skills: serde_json::from_str(&skills).unwrap_or_default(),
            })
        })?
        .collect::<crate::store::Result<Vec<_>>>()?;
    Ok(page.finish(rows))
}
