//! The engine's database layer: one synchronous API over SQLite (rusqlite) and PostgreSQL
//! (tokio-postgres), so every query of the engine is written once.
//!
//! Queries use SQLite's numbered placeholders (`?1`, `?2`, ...); on PostgreSQL they are
//! rewritten to `$1`, `$2` ([`postgres::translate_placeholders`]) and prepared once per
//! connection. Values cross the boundary as [`Value`] (SQLite's storage classes): the
//! PostgreSQL schema keeps every integer and flag as BIGINT, so the same expressions work
//! on both. Only what the two dialects spell differently is chosen by [`Dialect`]: the
//! DDL, reading a JSON field, expanding a JSON array, and row locking (`FOR UPDATE SKIP
//! LOCKED`).
//!
//! The API mirrors the part of rusqlite's the engine used ([`Connection::execute`],
//! [`Connection::query_row`], [`Connection::prepare`] + [`Statement::query_map`],
//! [`OptionalExtension::optional`], [`params!`]), so the engine's modules read as before.

pub mod postgres;
mod sqlite;
mod value;

use value::Rows;
pub use value::{FromValue, Row, RowIndex, ToValue, Value};

/// An error of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (the SQLSTATE, if the server sent one, is in the message).
    #[error("postgres: {message}")]
    Postgres {
        /// The server's SQLSTATE code, e.g. `40001`, if the error came from the server.
        code: Option<String>,
        /// What went wrong.
        message: String,
    },
    /// The PostgreSQL connection could not be made or was lost.
    #[error("postgres connection: {0}; check the URL and that the server is up")]
    Connection(String),
    /// A query expected to return a row returned none.
    #[error("query returned no rows")]
    NoRows,
    /// A column holds another type than the one asked for.
    #[error("column {column}: expected {expected}, found {found}")]
    Type {
        /// The column's index.
        column: usize,
        /// The type asked for.
        expected: &'static str,
        /// The storage class found.
        found: &'static str,
    },
    /// A column's value cannot be converted (out of range, unknown enum text, ...).
    #[error("column {column}: {reason}")]
    Conversion {
        /// The column's index.
        column: usize,
        /// Why.
        reason: String,
    },
    /// No such column in the result.
    #[error("no column {0} in the result")]
    NoSuchColumn(String),
    /// A parameter cannot be bound.
    #[error("parameter: {reason}")]
    Parameter {
        /// Why.
        reason: String,
    },
}

/// SQLSTATE of a serialization failure (PostgreSQL, SERIALIZABLE transactions).
pub const SERIALIZATION_FAILURE: &str = "40001";
/// SQLSTATE of a detected deadlock.
pub const DEADLOCK_DETECTED: &str = "40P01";
/// SQLSTATE of a unique-constraint violation.
pub const UNIQUE_VIOLATION: &str = "23505";

impl StoreError {
    /// The PostgreSQL SQLSTATE code, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            StoreError::Postgres { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Whether running the whole transaction again may succeed: a PostgreSQL
    /// serialization failure or deadlock, or a unique violation caused by a concurrent
    /// transaction (e.g. two instances opening the same ticket: on the retry, the
    /// second sees the first's ticket). Never true on SQLite (one writer).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.sqlstate(),
            Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED | UNIQUE_VIOLATION)
        )
    }

    /// Whether a unique constraint was violated (either backend).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            _ => self.sqlstate() == Some(UNIQUE_VIOLATION),
        }
    }
}

/// The layer's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// `Ok(None)` for [`StoreError::NoRows`], like rusqlite's `OptionalExtension`.
pub trait OptionalExtension<T> {
    /// The row, `None` if there was none, or the error.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Query parameters: `params![a, b]`, an array of one type (`[id]`), `[]` or `()`.
pub trait Params {
    /// The values to bind, in order (`?1` is the first).
    fn into_values(self) -> Result<Vec<Value>>;
}

impl Params for () {
    fn into_values(self) -> Result<Vec<Value>> {
        Ok(Vec::new())
    }
}

impl Params for [&(dyn ToValue + Send + Sync); 0] {
    fn into_values(self) -> Result<Vec<Value>> {
        Ok(Vec::new())
    }
}

impl Params for &[&dyn ToValue] {
    fn into_values(self) -> Result<Vec<Value>> {
        self.iter().map(|v| v.to_value()).collect()
    }
}

impl Params for Vec<Value> {
    fn into_values(self) -> Result<Vec<Value>> {
        Ok(self)
    }
}

macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: ToValue> Params for [T; $n] {
            fn into_values(self) -> Result<Vec<Value>> {
                self.iter().map(ToValue::to_value).collect()
            }
        }
        impl<T: ToValue + ?Sized> Params for &[&T; $n] {
            fn into_values(self) -> Result<Vec<Value>> {
                self.iter().map(|v| v.to_value()).collect()
            }
        }
    )*};
}
array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// Parameters of mixed types: `params![id, name, now_ms]`.
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::store::ToValue]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::ToValue),+] as &[&dyn $crate::store::ToValue]
    };
}
pub use crate::params;

/// Which SQL dialect a connection speaks; only DDL and a few functions differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (single node, the default).
    Sqlite,
    /// PostgreSQL (shared by the instances of a cluster).
    Postgres,
}

impl Dialect {
    /// The integer at `key` of the JSON object in text column `column`.
    pub fn json_integer(self, column: &str, key: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.{key}')"),
            Dialect::Postgres => format!("(({column})::jsonb ->> '{key}')::BIGINT"),
        }
    }

    /// A table expression of the elements (as text, in column `value`) of the JSON array
    /// in text column `column`.
    pub fn json_array_elements(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_each({column})"),
            Dialect::Postgres => {
                format!("jsonb_array_elements_text(({column})::jsonb) AS je(value)")
            }
        }
    }

    /// What follows a `SELECT` whose rows the transaction claims while others skip them.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }
}

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Session),
}

/// A connection to the engine's database (SQLite or PostgreSQL).
pub struct Connection {
    backend: Backend,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("dialect", &self.dialect())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Wraps an open SQLite connection.
    pub fn from_sqlite(conn: rusqlite::Connection) -> Connection {
        Connection {
            backend: Backend::Sqlite(conn),
        }
    }

    /// Wraps an open PostgreSQL session.
    pub fn from_postgres(session: postgres::Session) -> Connection {
        Connection {
            backend: Backend::Postgres(session),
        }
    }

    /// The dialect spoken.
    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Whether the connection is lost for good (PostgreSQL; an SQLite connection never is).
    pub fn is_closed(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => false,
            Backend::Postgres(s) => s.is_closed(),
        }
    }

    /// The SQLite connection, if this is one (SQLite-only maintenance such as migrations).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(c) => Some(c),
            Backend::Postgres(_) => None,
        }
    }

    /// Runs one statement; the number of rows changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        let values = params.into_values()?;
        match &self.backend {
            Backend::Sqlite(c) => sqlite::execute(c, sql, &values),
            Backend::Postgres(s) => s.execute(sql, &values),
        }
    }

    /// Runs one or more statements without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Postgres(s) => s.batch(sql),
        }
    }

    /// The first row of a query through `f`; [`StoreError::NoRows`] if there is none.
    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        let rows = self.query_rows(sql, params.into_values()?)?;
        if rows.rows.is_empty() {
            return Err(StoreError::NoRows);
        }
        f(&rows.row(0))
    }

    /// A statement to run with parameters (prepared when it runs, cached per connection).
    pub fn prepare<'c>(&'c self, sql: &str) -> Result<Statement<'c>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_owned(),
        })
    }

    fn query_rows(&self, sql: &str, values: Vec<Value>) -> Result<Rows> {
        match &self.backend {
            Backend::Sqlite(c) => sqlite::query(c, sql, &values),
            Backend::Postgres(s) => s.query(sql, &values),
        }
    }

    /// Starts a transaction (SERIALIZABLE on PostgreSQL). One left open by a panic is
    /// rolled back first.
    pub fn begin(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => {
                if !c.is_autocommit() {
                    c.execute_batch("ROLLBACK")?;
                }
                Ok(c.execute_batch("BEGIN DEFERRED")?)
            }
            Backend::Postgres(s) => s.begin(),
        }
    }

    /// Commits the open transaction.
    pub fn commit(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch("COMMIT")?),
            Backend::Postgres(s) => s.finish("COMMIT"),
        }
    }

    /// Rolls the open transaction back.
    pub fn rollback(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => {
                if c.is_autocommit() {
                    return Ok(());
                }
                Ok(c.execute_batch("ROLLBACK")?)
            }
            Backend::Postgres(s) => s.finish("ROLLBACK"),
        }
    }
}

/// A connection inside an open transaction (see [`Connection::begin`]); it dereferences
/// to the [`Connection`], so functions taking `&Connection` run inside it.
pub struct Transaction<'c> {
    conn: &'c Connection,
}

impl<'c> Transaction<'c> {
    /// A view of `conn`, whose transaction the caller has begun.
    pub fn new(conn: &'c Connection) -> Transaction<'c> {
        Transaction { conn }
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// A statement to run, possibly many times.
pub struct Statement<'c> {
    conn: &'c Connection,
    sql: String,
}

impl Statement<'_> {
    /// Every row through `f`, in order.
    pub fn query_map<T, P, F>(
        &mut self,
        params: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        let rows = self.conn.query_rows(&self.sql, params.into_values()?)?;
        let mapped: Vec<Result<T>> = (0..rows.rows.len()).map(|i| f(&rows.row(i))).collect();
        Ok(mapped.into_iter())
    }

    /// The first row through `f`.
    pub fn query_row<T, P, F>(&mut self, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        self.conn.query_row(&self.sql, params, f)
    }

    /// Runs the statement; the number of rows changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        self.conn.execute(&self.sql, params)
    }
}
