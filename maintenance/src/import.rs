//! Bulk import of the registry: homes (with their owner), owners of existing homes,
//! devices (model, cartridges with rated capacity) and technicians (region, skills), from
//! one CSV or JSON file.
//!
//! Every row is checked on its own and a bad row is reported (where, which field, what to
//! write instead) without stopping the others: the good rows are imported, the bad ones
//! are listed, and the same file can be imported again once fixed. Re-importing is
//! idempotent: an unchanged row writes nothing (`unchanged`), a changed one is updated.
//! Rows are applied kind by kind (homes, owners, technicians, devices) so a device may
//! come before its home in the file. Each row commits or rolls back as a whole (a
//! savepoint), in transactions of [`CHUNK_ROWS`] rows.
//!
//! # CSV
//! A header names the columns (any order; only `type` and `id` are required), then one
//! row per record; blank lines and lines starting with `#` are skipped; fields with commas,
//! quotes or newlines are quoted (`"..."`, a quote doubled). Lists use `;`.
//!
//! | type         | columns                                                                                       |
//! |--------------|-----------------------------------------------------------------------------------------------|
//! | `home`       | `id`, `address`, `region`, `tz`, `lang` (zh-CN), `channels` (app), `quiet_start`, `quiet_end`, `weekly_cap`, `site` (a building or shared supply), owner's `name`, `phone`, `email` |
//! | `owner`      | `id` (the home's), `name`, `phone`, `email`: a new owner for an existing home                 |
//! | `device`     | `id`, `home_id`, `model`, `installed` (`YYYY-MM-DD` or UTC ms; today), `cartridges`           |
//! | `technician` | `id`, `name`, `region`, `skills`                                                              |
//!
//! `cartridges` is `slot:kind:rated_litres[:max_age_days]` per cartridge, e.g.
//! `0:sediment:1500;1:carbon:3000:365`; empty means the model's standard cartridges
//! (`protocol::catalog`).
//!
//! # JSON
//! `{"homes": [Home], "owners": [{"home_id", "name", "phone", "email"}], "devices": [Device],
//! "technicians": [Technician]}`, the API's own shapes (any key may be absent). A bad
//! element is reported by its path, e.g. `devices[3]`.

use std::collections::HashMap;
use std::path::Path;

use crate::store::{Connection, OptionalExtension, Transaction};
use protocol::message::{CartridgeKind, Model};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::registry::{self, CartridgeSpec, Channel, Device, Home, Owner, Technician};
use crate::templates::Lang;

/// Most records in one import.
pub const MAX_ROWS: usize = 100_000;
/// Largest file, bytes.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;
/// Most row errors listed in a report (all are counted in `rejected`).
pub const MAX_LISTED_ERRORS: usize = 1000;
/// Rows per transaction.
pub const CHUNK_ROWS: usize = 500;

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header.
    Csv,
    /// One JSON object with arrays per kind.
    Json,
}

impl Format {
    /// The format a file name's extension says (`.csv`, `.json`).
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// A problem with the whole file (nothing was imported).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read as the format at all.
    #[error("line {line}: {problem}")]
    File {
        /// Where (1-based; 0 for the whole file).
        line: usize,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The database failed.
    #[error(transparent)]
    Engine(#[from] Error),
}

fn file_error(line: usize, problem: impl Into<String>) -> ImportError {
    ImportError::File {
        line,
        problem: problem.into(),
    }
}

/// A rejected row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// Where: `line 7` (CSV) or `devices[3]` (JSON).
    pub at: String,
    /// The CSV line the row starts on.
    pub line: Option<usize>,
    /// The field at fault (`-` for the row as a whole).
    pub field: String,
    /// What is wrong and what to write instead.
    pub problem: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: field {}: {}", self.at, self.field, self.problem)
    }
}

/// One record of the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A home with its owner.
    Home(Home),
    /// A new owner for an existing home.
    Owner {
        /// The home.
        home_id: String,
        /// The owner.
        owner: Owner,
    },
    /// A device; `installed_given` is false when the file left the date out (an existing
    /// device then keeps its date, so re-importing changes nothing).
    Device {
        /// The device.
        device: Device,
        /// Whether the file gave the installation date.
        installed_given: bool,
    },
    /// A technician.
    Technician(Technician),
}

impl Record {
    fn rank(&self) -> u8 {
        match self {
            Record::Home(_) => 0,
            Record::Owner { .. } => 1,
            Record::Technician(_) => 2,
            Record::Device { .. } => 3,
        }
    }

    fn key(&self) -> (&'static str, &str) {
        match self {
            Record::Home(h) => ("home", &h.id),
            Record::Owner { home_id, .. } => ("owner", home_id),
            Record::Technician(t) => ("technician", &t.id),
            Record::Device { device, .. } => ("device", &device.id),
        }
    }
}

/// A checked record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `line 7` or `devices[3]`.
    pub at: String,
    /// The CSV line.
    pub line: Option<usize>,
    /// The record.
    pub record: Record,
}

/// A parsed file: the good rows and the rejected ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Rows that passed the checks.
    pub rows: Vec<Row>,
    /// Rows rejected while parsing.
    pub errors: Vec<RowError>,
}

/// What happened to the rows of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// New records.
    pub created: u64,
    /// Records that changed.
    pub updated: u64,
    /// Records already as in the file.
    pub unchanged: u64,
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Records in the file (good and bad).
    pub rows: u64,
    /// Homes.
    pub homes: Counts,
    /// Owners.
    pub owners: Counts,
    /// Technicians.
    pub technicians: Counts,
    /// Devices.
    pub devices: Counts,
    /// Rows rejected (parse and apply).
    pub rejected: u64,
    /// The first [`MAX_LISTED_ERRORS`] rejected rows, in file order.
    pub errors: Vec<RowError>,
    /// Every device of the file that is now registered, in file order.
    pub device_ids: Vec<String>,
}

impl Report {
    fn reject(&mut self, e: RowError) {
        self.rejected += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(e);
        }
    }
}

/// Parses `text` as `format`. `now_ms` is the installation date of devices without one.
pub fn parse(format: Format, text: &str, now_ms: i64) -> Result<Parsed, ImportError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(file_error(
            0,
            format!("the file is larger than {MAX_FILE_BYTES} bytes; split it"),
        ));
    }
    let mut parsed = match format {
        Format::Csv => parse_csv(text, now_ms)?,
        Format::Json => parse_json(text)?,
    };
    if parsed.rows.len() + parsed.errors.len() > MAX_ROWS {
        return Err(file_error(
            0,
            format!("more than {MAX_ROWS} records; split the file"),
        ));
    }
    // The same record twice: the later one is rejected (which one wins is not a guess).
    let mut seen: HashMap<(&'static str, String), String> = HashMap::new();
    let mut dups = Vec::new();
    for (i, row) in parsed.rows.iter().enumerate() {
        let (kind, id) = row.record.key();
        if let Some(first) = seen.get(&(kind, id.to_owned())) {
            dups.push((
                i,
                RowError {
                    at: row.at.clone(),
                    line: row.line,
                    field: "id".into(),
                    problem: format!("{kind} {id} is already at {first}; keep one of them"),
                },
            ));
        } else {
            seen.insert((kind, id.to_owned()), row.at.clone());
        }
    }
    // An owner row for a home that has its own row here: the home's row says who owns it.
    let homes_here: HashMap<&str, &str> = parsed
        .rows
        .iter()
        .filter_map(|r| match &r.record {
            Record::Home(h) => Some((h.id.as_str(), r.at.as_str())),
            _ => None,
        })
        .collect();
    for (i, row) in parsed.rows.iter().enumerate() {
        if let Record::Owner { home_id, .. } = &row.record {
            if let Some(home_at) = homes_here.get(home_id.as_str()) {
                dups.push((
                    i,
                    RowError {
                        at: row.at.clone(),
                        line: row.line,
                        field: "id".into(),
                        problem: format!(
                            "home {home_id} has its own row at {home_at}; put the owner in that row"
                        ),
                    },
                ));
            }
        }
    }
    dups.sort_by_key(|d| d.0);
    for (i, e) in dups.into_iter().rev() {
        parsed.rows.remove(i);
        parsed.errors.push(e);
    }
    parsed.errors.sort_by_key(|e| e.line);
    Ok(parsed)
}

// ---- CSV ----

const COLUMNS: &[&str] = &[
    "type",
    "id",
    "home_id",
    "name",
    "phone",
    "email",
    "address",
    "region",
    "tz",
    "lang",
    "channels",
    "quiet_start",
    "quiet_end",
    "weekly_cap",
    "site",
    "model",
    "installed",
    "cartridges",
    "skills",
];

/// Splits CSV text into records, each with the line it starts on. Blank lines and lines
/// starting with `#` are skipped.
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, ImportError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let (mut line, mut start) = (1usize, 1usize);
    let (mut in_quotes, mut quoted, mut comment) = (false, false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if comment {
            if c == '\n' {
                comment = false;
                line += 1;
                start = line;
            }
            continue;
        }
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '#' if fields.is_empty() && field.is_empty() && !quoted => comment = true,
            '"' if field.trim().is_empty() && !quoted => {
                field.clear();
                in_quotes = true;
                quoted = true;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].trim().is_empty() && !quoted) {
                    records.push((start, std::mem::take(&mut fields)));
                }
                fields.clear();
                quoted = false;
                line += 1;
                start = line;
            }
            _ if quoted => {
                if !c.is_whitespace() {
                    return Err(file_error(
                        line,
                        "text after a closing quote; a quoted field must end at a comma or at the end of the line (double a quote inside a quoted field: \"\")",
                    ));
                }
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(file_error(
            start,
            "a quoted field is never closed; add the closing \"",
        ));
    }
    if !field.is_empty() || !fields.is_empty() || quoted {
        fields.push(field);
        if !(fields.len() == 1 && fields[0].trim().is_empty() && !quoted) {
            records.push((start, fields));
        }
    }
    Ok(records)
}

/// One CSV row, by column name.
struct CsvRow<'a> {
    cols: &'a HashMap<String, usize>,
    fields: &'a [String],
}

impl CsvRow<'_> {
    fn get(&self, col: &str) -> &str {
        self.cols
            .get(col)
            .and_then(|&i| self.fields.get(i))
            .map(|s| s.trim())
            .unwrap_or("")
    }

    fn opt(&self, col: &str) -> Option<String> {
        Some(self.get(col))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }
}

type FieldError = (&'static str, String);

fn parse_csv(text: &str, now_ms: i64) -> Result<Parsed, ImportError> {
    let records = csv_records(text)?;
    let Some(((header_line, header), rows)) = records.split_first() else {
        return Err(file_error(
            1,
            format!(
                "the file is empty; start with a header such as `{}`",
                COLUMNS.join(",")
            ),
        ));
    };
    let mut cols = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        let name = name.trim().to_ascii_lowercase();
        if !COLUMNS.contains(&name.as_str()) {
            return Err(file_error(
                *header_line,
                format!(
                    "unknown column {name:?} in the header; the columns are {}",
                    COLUMNS.join(", ")
                ),
            ));
        }
        if cols.insert(name.clone(), i).is_some() {
            return Err(file_error(
                *header_line,
                format!("column {name:?} appears twice in the header"),
            ));
        }
    }
    for required in ["type", "id"] {
        if !cols.contains_key(required) {
            return Err(file_error(
                *header_line,
                format!("the header has no {required:?} column"),
            ));
        }
    }
    let mut parsed = Parsed::default();
    for (line, fields) in rows {
        let at = format!("line {line}");
        if fields.len() > header.len() {
            parsed.errors.push(RowError {
                at,
                line: Some(*line),
                field: "-".into(),
                problem: format!(
                    "{} fields but the header has {}; quote a field that contains a comma",
                    fields.len(),
                    header.len()
                ),
            });
            continue;
        }
        let row = CsvRow {
            cols: &cols,
            fields,
        };
        match csv_record(&row, now_ms) {
            Ok(record) => parsed.rows.push(Row {
                at,
                line: Some(*line),
                record,
            }),
            Err((field, problem)) => parsed.errors.push(RowError {
                at,
                line: Some(*line),
                field: field.into(),
                problem,
            }),
        }
    }
    Ok(parsed)
}

fn invalid(e: Error) -> FieldError {
    match e {
        Error::Invalid { field, reason } => (field, format!("expected {reason}")),
        other => ("-", other.to_string()),
    }
}

fn list(s: &str) -> Vec<String> {
    s.split(';')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn csv_record(row: &CsvRow<'_>, now_ms: i64) -> Result<Record, FieldError> {
    let id = row.get("id").to_owned();
    let owner = || Owner {
        name: row.get("name").to_owned(),
        phone: row.get("phone").to_owned(),
        email: row.opt("email"),
    };
    match row.get("type").to_ascii_lowercase().as_str() {
        "home" => {
            let lang = match row.get("lang") {
                "" => Lang::ZhCn,
                l => Lang::parse(l)
                    .ok_or(("lang", format!("unknown language {l:?}; use zh-CN or en")))?,
            };
            let channels = match row.get("channels") {
                "" => vec![Channel::App],
                c => list(c)
                    .iter()
                    .map(|x| {
                        serde_json::from_value(serde_json::Value::String(x.to_ascii_lowercase()))
                            .map_err(|_| {
                                ("channels", format!("unknown channel {x:?}; use app, email or sms, separated by ;"))
                            })
                    })
                    .collect::<Result<Vec<Channel>, _>>()?,
            };
            let weekly_cap = match row.get("weekly_cap") {
                "" => None,
                w => Some(w.parse::<u32>().map_err(|_| {
                    (
                        "weekly_cap",
                        format!("{w:?} is not a whole number; give messages per week, e.g. 3"),
                    )
                })?),
            };
            let home = Home {
                id,
                address: row.get("address").to_owned(),
                region: row.get("region").to_owned(),
                tz: row.get("tz").to_owned(),
                lang,
                quiet_start: row.opt("quiet_start").unwrap_or_else(|| "22:00".into()),
                quiet_end: row.opt("quiet_end").unwrap_or_else(|| "08:00".into()),
                weekly_cap,
                channels,
                owner: owner(),
                site: row.opt("site"),
            };
            home.validate().map_err(invalid)?;
            Ok(Record::Home(home))
        }
        "owner" => {
            if !registry::valid_id(&id) {
                return Err((
                    "id",
                    "the home's id: 1 to 32 characters of [a-z0-9-_]".into(),
                ));
            }
            Ok(Record::Owner {
                home_id: id,
                owner: owner(),
            })
        }
        "device" => {
            let model: Model = parse_enum(row.get("model")).map_err(|m| {
                (
                    "model",
                    format!("unknown model {m:?}; use toilet, purifier or shower"),
                )
            })?;
            let installed = row.get("installed");
            let installed_ts_ms = match installed {
                "" => now_ms,
                d => parse_date_ms(d).ok_or((
                    "installed",
                    format!(
                        "{d:?} is not a date; write YYYY-MM-DD (UTC) or milliseconds since 1970"
                    ),
                ))?,
            };
            let cartridges = match row.get("cartridges") {
                "" => standard_cartridges(model),
                c => list(c)
                    .iter()
                    .map(|spec| parse_cartridge(spec))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let device = Device {
                id,
                home_id: row.get("home_id").to_owned(),
                model,
                installed_ts_ms,
                cartridges,
            };
            device.validate().map_err(invalid)?;
            Ok(Record::Device {
                device,
                installed_given: !installed.is_empty(),
            })
        }
        "technician" => {
            let t = Technician {
                id,
                name: row.get("name").to_owned(),
                region: row.get("region").to_owned(),
                skills: list(row.get("skills")),
            };
            t.validate().map_err(invalid)?;
            Ok(Record::Technician(t))
        }
        other => Err((
            "type",
            format!("unknown type {other:?}; use home, owner, device or technician"),
        )),
    }
}

fn parse_enum<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| s.to_owned())
}

/// `YYYY-MM-DD` (midnight UTC) or milliseconds since 1970.
fn parse_date_ms(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return (ms >= 0).then_some(ms);
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// The standard cartridges of `model`, by slot, with their rated capacity and age.
pub fn standard_cartridges(model: Model) -> Vec<CartridgeSpec> {
    model
        .cartridge_kinds()
        .iter()
        .enumerate()
        .map(|(slot, kind)| CartridgeSpec {
            slot: slot as u8,
            kind: *kind,
            rated_litres: kind.rated_litres(),
            max_age_days: kind.max_age_days(),
            replaced_ts_ms: None,
            replacements: 0,
        })
        .collect()
}

fn parse_cartridge(spec: &str) -> Result<CartridgeSpec, FieldError> {
    let bad = || {
        (
            "cartridges",
            format!(
                "{spec:?} is not slot:kind:rated_litres[:max_age_days]; e.g. 0:sediment:1500 or 1:carbon:3000:365"
            ),
        )
    };
    let parts: Vec<&str> = spec.split(':').map(str::trim).collect();
    if !(3..=4).contains(&parts.len()) {
        return Err(bad());
    }
    let slot: u8 = parts[0].parse().map_err(|_| bad())?;
    let kind: CartridgeKind = parse_enum(parts[1]).map_err(|k| {
        (
            "cartridges",
            format!(
                "unknown cartridge kind {k:?}; use sediment, carbon, reverse_osmosis or shower"
            ),
        )
    })?;
    let rated_litres: u32 = parts[2].parse().map_err(|_| bad())?;
    let max_age_days: u32 = match parts.get(3) {
        Some(d) => d.parse().map_err(|_| bad())?,
        None => kind.max_age_days(),
    };
    Ok(CartridgeSpec {
        slot,
        kind,
        rated_litres,
        max_age_days,
        replaced_ts_ms: None,
        replacements: 0,
    })
}

// ---- JSON ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    #[serde(default)]
    homes: Vec<serde_json::Value>,
    #[serde(default)]
    owners: Vec<serde_json::Value>,
    #[serde(default)]
    devices: Vec<serde_json::Value>,
    #[serde(default)]
    technicians: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerRow {
    home_id: String,
    name: String,
    phone: String,
    #[serde(default)]
    email: Option<String>,
}

fn parse_json(text: &str) -> Result<Parsed, ImportError> {
    let file: JsonFile = serde_json::from_str(text).map_err(|e| {
        file_error(
            e.line(),
            format!("{e}; expected {{\"homes\": [...], \"owners\": [...], \"devices\": [...], \"technicians\": [...]}}"),
        )
    })?;
    let mut parsed = Parsed::default();
    let mut take =
        |kind: &str,
         items: Vec<serde_json::Value>,
         f: &dyn Fn(serde_json::Value) -> Result<Record, FieldError>| {
            for (i, v) in items.into_iter().enumerate() {
                let at = format!("{kind}[{i}]");
                match f(v) {
                    Ok(record) => parsed.rows.push(Row {
                        at,
                        line: None,
                        record,
                    }),
                    Err((field, problem)) => parsed.errors.push(RowError {
                        at,
                        line: None,
                        field: field.into(),
                        problem,
                    }),
                }
            }
        };
    let shape = |e: serde_json::Error| ("-", e.to_string());
    take("homes", file.homes, &|v| {
        let h: Home = serde_json::from_value(v).map_err(shape)?;
        h.validate().map_err(invalid)?;
        Ok(Record::Home(h))
    });
    take("owners", file.owners, &|v| {
        let o: OwnerRow = serde_json::from_value(v).map_err(shape)?;
        Ok(Record::Owner {
            home_id: o.home_id,
            owner: Owner {
                name: o.name,
                phone: o.phone,
                email: o.email,
            },
        })
    });
    take("devices", file.devices, &|v| {
        let mut d: Device = serde_json::from_value(v).map_err(shape)?;
        if d.cartridges.is_empty() {
            d.cartridges = standard_cartridges(d.model);
        }
        d.validate().map_err(invalid)?;
        Ok(Record::Device {
            device: d,
            installed_given: true,
        })
    });
    take("technicians", file.technicians, &|v| {
        let t: Technician = serde_json::from_value(v).map_err(shape)?;
        t.validate().map_err(invalid)?;
        Ok(Record::Technician(t))
    });
    Ok(parsed)
}

// ---- apply ----

enum Change {
    Created,
    Updated,
    Unchanged,
}

fn get_technician(conn: &Connection, id: &str) -> Result<Option<Technician>> {
    Ok(conn
        .query_row(
            "SELECT id, name, region, skills FROM technicians WHERE id = ?1",
            [id],
            |r| {
                let skills: String = r.get(3)?;
                Ok(Technician {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    region: r.get(2)?,
                    skills: serde_json::from_str(&skills).unwrap_or_default(),
                })
            },
        )
        .optional()?)
}

fn same_cartridges(a: &[CartridgeSpec], b: &[CartridgeSpec]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (x.slot, x.kind, x.rated_litres, x.max_age_days)
                == (y.slot, y.kind, y.rated_litres, y.max_age_days)
        })
}

fn apply_row(
    engine: &Engine,
    tx: &Transaction<'_>,
    record: &Record,
    now_ms: i64,
) -> Result<Change> {
    match record {
        Record::Home(h) => match registry::get_home(tx, &h.id)? {
            Some(old) if &old == h => Ok(Change::Unchanged),
            old => {
                registry::put_home(tx, h)?;
                Ok(if old.is_some() {
                    Change::Updated
                } else {
                    Change::Created
                })
            }
        },
        Record::Owner { home_id, owner } => {
            let mut home = registry::get_home(tx, home_id)?.ok_or_else(|| {
                Error::invalid(
                    "id",
                    format!("home {home_id} is not registered; add a `home` row for it (an owner row changes the owner of an existing home)"),
                )
            })?;
            if &home.owner == owner {
                return Ok(Change::Unchanged);
            }
            home.owner = owner.clone();
            home.validate()?;
            registry::put_home(tx, &home)?;
            Ok(Change::Updated)
        }
        Record::Technician(t) => match get_technician(tx, &t.id)? {
            Some(old) if &old == t => Ok(Change::Unchanged),
            old => {
                registry::put_technician(tx, t)?;
                Ok(if old.is_some() {
                    Change::Updated
                } else {
                    Change::Created
                })
            }
        },
        Record::Device {
            device,
            installed_given,
        } => {
            if registry::get_home(tx, &device.home_id)?.is_none() {
                return Err(Error::invalid(
                    "home_id",
                    format!(
                        "home {} is neither registered nor in the file; add a `home` row for it",
                        device.home_id
                    ),
                ));
            }
            let old = registry::get_device(tx, &device.id)?;
            let mut device = device.clone();
            if let (false, Some(old)) = (installed_given, &old) {
                device.installed_ts_ms = old.installed_ts_ms;
            }
            if let Some(old) = &old {
                if (&old.home_id, old.model, old.installed_ts_ms)
                    == (&device.home_id, device.model, device.installed_ts_ms)
                    && same_cartridges(&old.cartridges, &device.cartridges)
                {
                    return Ok(Change::Unchanged);
                }
            }
            engine.put_device_in(tx, &device, now_ms)?;
            Ok(if old.is_some() {
                Change::Updated
            } else {
                Change::Created
            })
        }
    }
}

/// Applies the good rows of `parsed` (homes, owners, technicians, then devices; file order
/// within a kind), calling `progress(done, total)` after each transaction. A row that breaks
/// a rule (an owner of an unknown home, a device of an unknown home) is rejected alone; a
/// database failure stops the import (rows of earlier transactions stay imported, and
/// importing the same file again finishes the job).
pub fn apply(
    engine: &Engine,
    parsed: Parsed,
    now_ms: i64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report> {
    let mut report = Report {
        rows: (parsed.rows.len() + parsed.errors.len()) as u64,
        ..Report::default()
    };
    let mut errors = parsed.errors;
    let mut rows = parsed.rows;
    rows.sort_by_key(|r| r.record.rank());
    let total = rows.len();
    let mut done = 0usize;
    for chunk in rows.chunks(CHUNK_ROWS) {
        let outcomes = engine.write(|tx| {
            let mut out = Vec::with_capacity(chunk.len());
            for row in chunk {
                tx.execute_batch("SAVEPOINT import_row")?;
                match apply_row(engine, tx, &row.record, now_ms) {
                    Ok(change) => {
                        tx.execute_batch("RELEASE import_row")?;
                        out.push(Ok(change));
                    }
                    Err(
                        e @ (Error::Invalid { .. }
                        | Error::NotFound { .. }
                        | Error::Conflict { .. }),
                    ) => {
                        tx.execute_batch("ROLLBACK TO import_row; RELEASE import_row")?;
                        out.push(Err(e));
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })?;
        for (row, outcome) in chunk.iter().zip(outcomes) {
            match outcome {
                Ok(change) => {
                    let counts = match row.record {
                        Record::Home(_) => &mut report.homes,
                        Record::Owner { .. } => &mut report.owners,
                        Record::Technician(_) => &mut report.technicians,
                        Record::Device { .. } => &mut report.devices,
                    };
                    match change {
                        Change::Created => counts.created += 1,
                        Change::Updated => counts.updated += 1,
                        Change::Unchanged => counts.unchanged += 1,
                    }
                    if let Record::Device { device, .. } = &row.record {
                        report.device_ids.push(device.id.clone());
                    }
                }
                Err(e) => {
                    let (field, problem) = invalid(e);
                    errors.push(RowError {
                        at: row.at.clone(),
                        line: row.line,
                        field: field.into(),
                        problem,
                    });
                }
            }
        }
        done += chunk.len();
        progress(done, total);
    }
    errors.sort_by(|a, b| (a.line, &a.at).cmp(&(b.line, &b.at)));
    for e in errors {
        report.reject(e);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        crate::engine::test_engine(crate::EngineConfig {
            policy: crate::Policy::default(),
            ticket_webhooks: Vec::new(),
        })
    }

    const CSV: &str = "\
type,id,home_id,name,phone,email,address,region,tz,lang,channels,model,installed,cartridges,skills,site
# a comment line
home,h1,,Li Lei,13812341234,,\"1 Century Avenue, Pudong\",sh,Asia/Shanghai,zh-CN,app;sms,,,,,tower-7
device,toilet-1,h1,,,,,,,,,toilet,2026-01-02,,,
device,purifier-1,h1,,,,,,,,,purifier,,0:sediment:1500;1:carbon:3000:365,,
device,shower-1,h9,,,,,,,,,shower,,,,
device,sink-1,h1,,,,,,,,,sink,,,,
technician,tech-a,,Wang Wu,,,,sh,,,,,,,plumbing;filter,
owner,h1,,Han Meimei,13900001111,,,,,,,,,,,
home,h2,,Bad Phone,12ab,,2 Road,sh,Asia/Shanghai,en,,,,,,
";

    #[test]
    fn bad_rows_are_reported_with_line_and_field_and_the_good_ones_imported_idempotently() {
        let e = engine();
        let parsed = parse(Format::Csv, CSV, 1_000).expect("parse");
        let mut calls = Vec::new();
        let report = apply(&e, parsed, 1_000, &mut |d, t| calls.push((d, t))).expect("apply");
        assert_eq!(report.rows, 8);
        assert_eq!(report.homes.created, 1);
        assert_eq!(report.technicians.created, 1);
        assert_eq!(report.devices.created, 2);
        assert_eq!(report.rejected, 4, "{:?}", report.errors);
        let at: Vec<(&str, &str)> = report
            .errors
            .iter()
            .map(|e| (e.at.as_str(), e.field.as_str()))
            .collect();
        assert_eq!(
            at,
            vec![
                ("line 6", "home_id"),
                ("line 7", "model"),
                ("line 9", "id"),
                ("line 10", "owner.phone")
            ]
        );
        assert!(report.errors[1]
            .problem
            .contains("use toilet, purifier or shower"));
        assert!(report.errors[2].problem.contains("line 3"));
        assert_eq!(calls.last(), Some(&(5, 5)));
        let home = e
            .read(|c| registry::get_home(c, "h1"))
            .expect("read")
            .expect("home");
        assert_eq!(home.address, "1 Century Avenue, Pudong");
        assert_eq!(home.owner.name, "Li Lei");
        assert_eq!(home.channels, vec![Channel::App, Channel::Sms]);
        assert_eq!(home.site.as_deref(), Some("tower-7"));
        let p = e
            .read(|c| registry::get_device(c, "purifier-1"))
            .expect("read")
            .expect("device");
        assert_eq!(p.cartridges.len(), 2);
        assert_eq!(p.cartridges[1].max_age_days, 365);
        assert_eq!(p.installed_ts_ms, 1_000);
        let t = e
            .read(|c| registry::get_device(c, "toilet-1"))
            .expect("read")
            .expect("device");
        assert_eq!(t.installed_ts_ms, 1_767_312_000_000);

        // The same file again, later: nothing changes (the device without a date keeps its date).
        let again = apply(
            &e,
            parse(Format::Csv, CSV, 9_000).expect("parse"),
            9_000,
            &mut |_, _| {},
        )
        .expect("apply");
        assert_eq!(
            again.homes,
            Counts {
                created: 0,
                updated: 0,
                unchanged: 1
            }
        );
        assert_eq!(
            again.devices,
            Counts {
                created: 0,
                updated: 0,
                unchanged: 2
            }
        );
        assert_eq!(again.technicians.unchanged, 1);
        assert_eq!(again.rejected, 4);

        // A new owner for an existing home, twice.
        let owner = "type,id,name,phone\nowner,h1,Han Meimei,13900001111\n";
        let r = apply(
            &e,
            parse(Format::Csv, owner, 0).expect("parse"),
            0,
            &mut |_, _| {},
        )
        .expect("apply");
        assert_eq!(r.owners.updated, 1);
        let r = apply(
            &e,
            parse(Format::Csv, owner, 0).expect("parse"),
            0,
            &mut |_, _| {},
        )
        .expect("apply");
        assert_eq!(r.owners.unchanged, 1);
        let home = e
            .read(|c| registry::get_home(c, "h1"))
            .expect("read")
            .expect("home");
        assert_eq!(home.owner.name, "Han Meimei");
        let bad = "type,id,name,phone\nowner,h7,A,13900001111\nowner,h1,A,1\n";
        let r = apply(
            &e,
            parse(Format::Csv, bad, 0).expect("parse"),
            0,
            &mut |_, _| {},
        )
        .expect("apply");
        assert_eq!(r.rejected, 2);
        assert_eq!(
            (r.errors[0].at.as_str(), r.errors[0].field.as_str()),
            ("line 2", "id")
        );
        assert_eq!(
            (r.errors[1].at.as_str(), r.errors[1].field.as_str()),
            ("line 3", "owner.phone")
        );
    }

    #[test]
    fn standard_cartridges_fill_an_empty_list() {
        let e = engine();
        let csv = "type,id,address,region,tz,name,phone\nhome,h1,1 Road,sh,Asia/Shanghai,A B,13812341234\n\
                   type_is_data,,,,,,\n";
        let parsed = parse(Format::Csv, csv, 0).expect("parse");
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.errors[0].field, "type");
        let csv = "type,id,home_id,model\nhome,h1,,\ndevice,s1,h1,shower\n";
        let parsed = parse(Format::Csv, csv, 0).expect("parse");
        // The home lacks address, region, tz and owner.
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.errors[0].line, Some(2));
        let report = apply(&e, parsed, 0, &mut |_, _| {}).expect("apply");
        assert_eq!(report.errors[0].at, "line 2");
        assert_eq!(report.errors[1].at, "line 3");
        assert_eq!(report.errors[1].field, "home_id");
        let d = standard_cartridges(Model::Purifier);
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[2].rated_litres,
            CartridgeKind::ReverseOsmosis.rated_litres()
        );
    }

    #[test]
    fn whole_file_problems_say_where() {
        let err = parse(Format::Csv, "type,id,colour\n", 0).expect_err("unknown column");
        assert!(
            err.to_string()
                .contains("line 1: unknown column \"colour\""),
            "{err}"
        );
        let err = parse(Format::Csv, "type,id\nhome,\"h1\n", 0).expect_err("open quote");
        assert!(err.to_string().starts_with("line 2:"), "{err}");
        let err = parse(Format::Json, "{\"homes\": [\n  {,]}", 0).expect_err("bad json");
        assert!(err.to_string().starts_with("line 2:"), "{err}");
        let err = parse(Format::Json, "{\"houses\": []}", 0).expect_err("unknown key");
        assert!(err.to_string().contains("houses"), "{err}");
        let parsed = parse(Format::Csv, "type,id\nhome,h1,extra\n", 0).expect("parse");
        assert!(parsed.errors[0].problem.contains("quote a field"));
    }

    #[test]
    fn json_rows_are_reported_by_path_and_duplicates_rejected() {
        let json = r#"{
          "homes": [{"id":"h1","address":"1 Road","region":"sh","tz":"Asia/Shanghai","lang":"en",
                     "channels":["app"],"owner":{"name":"A","phone":"13812341234"}}],
          "devices": [
            {"id":"p1","home_id":"h1","model":"purifier","installed_ts_ms":5},
            {"id":"p2","home_id":"h1","model":"kettle","installed_ts_ms":5},
            {"id":"p1","home_id":"h1","model":"purifier","installed_ts_ms":6}
          ],
          "technicians": [{"id":"t1","name":"T","region":"sh","skills":[]}]
        }"#;
        let parsed = parse(Format::Json, json, 0).expect("parse");
        let at: Vec<&str> = parsed.errors.iter().map(|e| e.at.as_str()).collect();
        assert_eq!(at.len(), 3, "{:?}", parsed.errors);
        assert!(at.contains(&"devices[1]"));
        assert!(at.contains(&"devices[2]"));
        assert!(at.contains(&"technicians[0]"));
        let e = engine();
        let report = apply(&e, parsed, 0, &mut |_, _| {}).expect("apply");
        assert_eq!(report.device_ids, vec!["p1".to_owned()]);
        let p1 = e
            .read(|c| registry::get_device(c, "p1"))
            .expect("read")
            .expect("p1");
        assert_eq!(p1.cartridges.len(), 3);
    }
}
