//! The PostgreSQL side of the store, synchronous like the engine.
//!
//! Each [`Session`] owns one tokio-postgres connection. Its connection future runs on a
//! small current-thread runtime on a thread of its own (started with the session, ended
//! when the session's client is dropped); the caller's thread drives the client's
//! futures with [`block_on`], which needs no runtime. So the engine's synchronous calls
//! work the same from async handlers, `spawn_blocking` and plain threads, and the
//! session never blocks (or drops) a runtime it does not own.
//!
//! Statements are written for SQLite (`?1` placeholders) and translated once per
//! connection ([`translate_placeholders`]), then prepared and cached. Parameters bind
//! to whatever type the server inferred (an integer to BIGINT, INTEGER, BOOLEAN or TEXT);
//! results come back as [`Value`]s (NUMERIC sums as integers when whole).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};

use super::{Result, Rows, StoreError, Value};

/// Polls `fut` to completion on the calling thread, parking it between wake-ups.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() {
            return StoreError::Connection(e.to_string());
        }
        match e.as_db_error() {
            Some(db) => StoreError::Postgres {
                code: Some(db.code().code().to_owned()),
                message: format!(
                    "{} ({}){}",
                    db.message(),
                    db.code().code(),
                    db.constraint()
                        .map(|c| format!(", constraint {c}"))
                        .unwrap_or_default()
                ),
            },
            None => StoreError::Postgres {
                code: None,
                message: e.to_string(),
            },
        }
    }
}

/// Rewrites SQLite placeholders (`?NNN`, and a bare `?` as the next number) to
/// PostgreSQL's `$NNN`, leaving string literals, quoted names and comments alone.
pub fn translate_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut highest = 0u32;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                let n = match digits.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => highest + 1,
                };
                highest = highest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

/// Most statements a session keeps prepared (the engine has a few hundred distinct ones).
const STATEMENT_CACHE: usize = 1024;

/// One connection to PostgreSQL.
pub struct Session {
    client: tokio_postgres::Client,
    statements: RefCell<HashMap<String, tokio_postgres::Statement>>,
    in_transaction: Cell<bool>,
}

impl Session {
    /// Connects to `url` (a `postgres://` URL or key=value string; no TLS).
    pub fn connect(url: &str) -> Result<Session> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Connection(e.to_string()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("maintenance-pg".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(StoreError::Connection(format!("runtime: {e}"))));
                        return;
                    }
                };
                rt.block_on(async move {
                    match config.connect(tokio_postgres::NoTls).await {
                        Ok((client, connection)) => {
                            if tx.send(Ok(client)).is_err() {
                                return;
                            }
                            if let Err(e) = connection.await {
                                tracing::warn!(error = %e, "Maintenance PostgreSQL connection ended.");
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(StoreError::Connection(e.to_string())));
                        }
                    }
                });
            })
            .map_err(|e| StoreError::Connection(format!("thread: {e}")))?;
        let client = rx
            .recv()
            .map_err(|_| StoreError::Connection("connection thread ended".into()))??;
        Ok(Session {
            client,
            statements: RefCell::new(HashMap::new()),
            in_transaction: Cell::new(false),
        })
    }

    fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let translated = translate_placeholders(sql);
        let stmt = block_on(self.client.prepare(&translated))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= STATEMENT_CACHE {
            cache.clear();
        }
        cache.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    /// `result`, after dropping the statement of a failed run from the cache (it is
    /// prepared again next time: e.g. after another release changed a table's columns).
    fn forget_on_error<T>(&self, sql: &str, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.statements.borrow_mut().remove(sql);
        }
        result
    }

    pub(super) fn execute(&self, sql: &str, values: &[Value]) -> Result<usize> {
        let stmt = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let n = block_on(self.client.execute(&stmt, &params)).map_err(StoreError::from);
        let n = self.forget_on_error(sql, n)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(super) fn query(&self, sql: &str, values: &[Value]) -> Result<Rows> {
        let stmt = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = block_on(self.client.query(&stmt, &params)).map_err(StoreError::from);
        let rows = self.forget_on_error(sql, rows)?;
        let columns: Vec<String> = stmt.columns().iter().map(|c| c.name().to_owned()).collect();
        let mut out = Rows {
            columns,
            rows: Vec::with_capacity(rows.len()),
        };
        for r in &rows {
            let mut row = Vec::with_capacity(r.len());
            for i in 0..r.len() {
                row.push(r.try_get::<_, Value>(i)?);
            }
            out.rows.push(row);
        }
        Ok(out)
    }

    pub(super) fn batch(&self, sql: &str) -> Result<()> {
        Ok(block_on(self.client.batch_execute(sql))?)
    }

    pub(super) fn begin(&self) -> Result<()> {
        if self.in_transaction.get() {
            let _ = self.batch("ROLLBACK");
        }
        self.batch("BEGIN ISOLATION LEVEL SERIALIZABLE")?;
        self.in_transaction.set(true);
        Ok(())
    }

    pub(super) fn finish(&self, how: &str) -> Result<()> {
        self.in_transaction.set(false);
        self.batch(how)
    }

    /// Whether the connection is gone (the server closed it or the network failed).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

fn cannot_bind(v: &Value, ty: &Type) -> BoxError {
    format!("cannot bind a {} value to a {ty} parameter", v.type_name()).into()
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    i.to_string().as_str().to_sql(ty, out)
                }
                _ => Err(cannot_bind(self, ty)),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    f.to_string().as_str().to_sql(ty, out)
                }
                _ => Err(cannot_bind(self, ty)),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                Type::JSON => {
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(cannot_bind(self, ty)),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(cannot_bind(self, ty)),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Value::Integer(i64::from(i16::from_sql(ty, raw)?)),
            Type::OID => Value::Integer(i64::from(u32::from_sql(ty, raw)?)),
            Type::BOOL => Value::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::JSON => Value::Text(std::str::from_utf8(raw)?.to_owned()),
            // JSONB's binary form is a version byte, then the text.
            Type::JSONB => {
                Value::Text(std::str::from_utf8(raw.get(1..).unwrap_or_default())?.to_owned())
            }
            _ => Value::Text(<&str as FromSql>::from_sql(ty, raw)?.to_owned()),
        })
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// NUMERIC's binary form (what SUM and AVG of BIGINT return): an integer when it has no
/// fraction and fits, else a double.
fn numeric(raw: &[u8]) -> std::result::Result<Value, BoxError> {
    let word = |i: usize| -> std::result::Result<i16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "short NUMERIC".into())
    };
    let ndigits = usize::try_from(word(0)?).map_err(|_| "bad NUMERIC")?;
    let weight = i32::from(word(1)?);
    let sign = word(2)? as u16;
    let dscale = word(3)?;
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let negative = sign == 0x4000;
    let mut real = 0f64;
    let mut int: Option<i128> = Some(0);
    for i in 0..ndigits {
        let d = i32::from(word(4 + i)?);
        let exp = weight - i as i32;
        real += f64::from(d) * 10_000f64.powi(exp);
        int = match (int, exp >= 0) {
            (Some(acc), true) => u32::try_from(exp)
                .ok()
                .and_then(|e| 10_000i128.checked_pow(e))
                .and_then(|p| p.checked_mul(i128::from(d)))
                .and_then(|v| acc.checked_add(v)),
            (acc, false) if d == 0 => acc,
            _ => None,
        };
    }
    if dscale == 0 {
        if let Some(v) = int.and_then(|v| i64::try_from(if negative { -v } else { v }).ok()) {
            return Ok(Value::Integer(v));
        }
    }
    Ok(Value::Real(if negative { -real } else { real }))
}

#[cfg(test)]
mod tests {
    use super::translate_placeholders;

    #[test]
    fn placeholders_are_numbered_like_sqlite_and_literals_left_alone() {
        assert_eq!(
            translate_placeholders("SELECT a FROM t WHERE b = ?2 AND c = '?1' AND d = ?1"),
            "SELECT a FROM t WHERE b = $2 AND c = '?1' AND d = $1"
        );
        assert_eq!(
            translate_placeholders("VALUES (?, ?, ?5, ?)"),
            "VALUES ($1, $2, $5, $6)"
        );
        assert_eq!(translate_placeholders("x -- what?\n?1"), "x -- what?\n$1");
    }
}
