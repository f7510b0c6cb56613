//! Values that cross the store boundary: [`Value`] (SQLite's five storage classes), the
//! conversions of Rust types into it ([`ToValue`]) and out of it ([`FromValue`]), and a
//! result [`Row`] read by index or column name.

use super::{Result, StoreError};

/// One SQL value, as SQLite stores it; PostgreSQL values are mapped onto these (BIGINT and
/// BOOLEAN to `Integer`, DOUBLE PRECISION and NUMERIC with a fraction to `Real`, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer (also booleans, as 0 or 1).
    Integer(i64),
    /// A double.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    /// The storage class's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }
}

/// A Rust value that can be bound as a query parameter.
pub trait ToValue {
    /// The value to bind.
    fn to_value(&self) -> Result<Value>;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Result<Value> {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Result<Value> {
        match self {
            Some(v) => v.to_value(),
            None => Ok(Value::Null),
        }
    }
}

impl<T: ToValue + ?Sized> ToValue for Box<T> {
    fn to_value(&self) -> Result<Value> {
        (**self).to_value()
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Result<Value> {
        Ok(self.clone())
    }
}

impl ToValue for str {
    fn to_value(&self) -> Result<Value> {
        Ok(Value::Text(self.to_owned()))
    }
}

impl ToValue for String {
    fn to_value(&self) -> Result<Value> {
        Ok(Value::Text(self.clone()))
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Result<Value> {
        Ok(Value::Blob(self.to_vec()))
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Result<Value> {
        Ok(Value::Blob(self.clone()))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Result<Value> {
        Ok(Value::Integer(i64::from(*self)))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Result<Value> {
        Ok(Value::Real(*self))
    }
}

impl ToValue for f32 {
    fn to_value(&self) -> Result<Value> {
        Ok(Value::Real(f64::from(*self)))
    }
}

macro_rules! integer_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Result<Value> {
                i64::try_from(*self).map(Value::Integer).map_err(|_| StoreError::Parameter {
                    reason: format!("{} does not fit a 64-bit signed integer", self),
                })
            }
        }
    )*};
}
integer_to_value!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

/// A Rust value that can be read from a result column.
pub trait FromValue: Sized {
    /// Converts the value of column `column`.
    fn from_value(value: &Value, column: usize) -> Result<Self>;
}

fn wrong_type<T>(value: &Value, column: usize, expected: &'static str) -> Result<T> {
    Err(StoreError::Type {
        column,
        expected,
        found: value.type_name(),
    })
}

impl FromValue for Value {
    fn from_value(value: &Value, _column: usize) -> Result<Self> {
        Ok(value.clone())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v, column).map(Some),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            v => wrong_type(v, column, "text"),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        match value {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.clone().into_bytes()),
            v => wrong_type(v, column, "blob"),
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        match value {
            Value::Real(f) => Ok(*f),
            Value::Integer(i) => Ok(*i as f64),
            v => wrong_type(v, column, "real"),
        }
    }
}

impl FromValue for f32 {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        f64::from_value(value, column).map(|f| f as f32)
    }
}

impl FromValue for bool {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        match value {
            Value::Integer(i) => Ok(*i != 0),
            v => wrong_type(v, column, "integer (boolean)"),
        }
    }
}

macro_rules! integer_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value, column: usize) -> Result<Self> {
                match value {
                    Value::Integer(i) => <$t>::try_from(*i).map_err(|_| StoreError::Conversion {
                        column,
                        reason: format!("{i} out of range for {}", stringify!($t)),
                    }),
                    v => wrong_type(v, column, "integer"),
                }
            }
        }
    )*};
}
integer_from_value!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

/// How a column is named in [`Row::get`]: its index, or its name.
pub trait RowIndex {
    /// The column's index in `row`.
    fn index_in(&self, row: &Row<'_>) -> Result<usize>;
}

impl RowIndex for usize {
    fn index_in(&self, row: &Row<'_>) -> Result<usize> {
        if *self < row.values.len() {
            Ok(*self)
        } else {
            Err(StoreError::NoSuchColumn(self.to_string()))
        }
    }
}

impl RowIndex for &str {
    fn index_in(&self, row: &Row<'_>) -> Result<usize> {
        row.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(self))
            .ok_or_else(|| StoreError::NoSuchColumn((*self).to_owned()))
    }
}

/// One result row.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub(crate) columns: &'a [String],
    pub(crate) values: &'a [Value],
}

impl Row<'_> {
    /// Column `idx` (an index from 0, or a name) as a `T`.
    pub fn get<I: RowIndex, T: FromValue>(&self, idx: I) -> Result<T> {
        let i = idx.index_in(self)?;
        T::from_value(&self.values[i], i)
    }

    /// Column `idx` as the raw value.
    pub fn get_ref<I: RowIndex>(&self, idx: I) -> Result<&Value> {
        let i = idx.index_in(self)?;
        Ok(&self.values[i])
    }

    /// How many columns the row has.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The rows of a query, materialised.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rows {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Vec<Value>>,
}

impl Rows {
    pub(crate) fn row(&self, i: usize) -> Row<'_> {
        Row {
            columns: &self.columns,
            values: &self.rows[i],
        }
    }
}
