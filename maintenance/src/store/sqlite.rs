//! The SQLite side of the store: statements prepared through rusqlite's statement cache,
//! values bound and read as rusqlite's own.

use super::{Result, Rows, Value};

fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Integer(i) => rusqlite::types::Value::Integer(*i),
        Value::Real(f) => rusqlite::types::Value::Real(*f),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
    }
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Result<Value> {
    use rusqlite::types::ValueRef;
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|e| super::StoreError::Conversion {
                    column: 0,
                    reason: format!("text is not UTF-8: {e}"),
                })?
                .to_owned(),
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

pub(super) fn execute(conn: &rusqlite::Connection, sql: &str, values: &[Value]) -> Result<usize> {
    let mut stmt = conn.prepare_cached(sql)?;
    Ok(stmt.execute(rusqlite::params_from_iter(values.iter().map(to_sqlite)))?)
}

pub(super) fn query(conn: &rusqlite::Connection, sql: &str, values: &[Value]) -> Result<Rows> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let n = columns.len();
    let mut out = Rows {
        columns,
        rows: Vec::new(),
    };
    let mut rows = stmt.query(rusqlite::params_from_iter(values.iter().map(to_sqlite)))?;
    while let Some(r) = rows.next()? {
        let mut row = Vec::with_capacity(n);
        for i in 0..n {
            row.push(from_sqlite(r.get_ref(i)?)?);
        }
        out.rows.push(row);
    }
    Ok(out)
}
