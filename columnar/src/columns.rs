//! How Braid values are laid out in Parquet columns, both ways.
//!
//! A declared field keeps its type (`string` -> Utf8, `int` -> Int64, `float` -> Float64,
//! `bool` -> Boolean). An undeclared field may hold different JSON types from one event to the
//! next, so it is stored as the JSON literal of its value (`12`, `12.5`, `"abc"`, `true`), which
//! keeps integers, floats and strings apart exactly as the speed layer sees them.

use braid_shared::Value;
use braid_shared::view::FieldKind;
use polars::prelude::*;

/// Epoch milliseconds of the event time.
pub const EVENT_TIME: &str = "_event_time";
pub const PARTITION: &str = "_partition";
pub const OFFSET: &str = "_offset";
/// Epoch milliseconds at which the archiver read the message.
pub const INGEST_TIME: &str = "_ingest_time";
/// The message's bytes as read, so every field of every event is kept: a field the source did
/// not read when the file was written is decoded from them later (`crate::redecode`).
pub const MESSAGE: &str = "_message";
/// The columns the archive adds to a source's fields.
pub const ARCHIVE_COLUMNS: [&str; 5] = [EVENT_TIME, PARTITION, OFFSET, INGEST_TIME, MESSAGE];

/// One archived event with where it was read and its message.
pub struct ArchiveRow<'a> {
    pub offset: i64,
    pub ingest_ms: i64,
    pub event: &'a braid_shared::Event,
    pub message: &'a [u8],
}

/// The rows of one partition's events of `source` as the archive lays them out: a column per
/// field of the source (stored as its kind says), then the event time, partition, offset,
/// ingest time and message.
pub fn events_frame(
    source: &braid_shared::SourceDef,
    partition: i32,
    rows: &[ArchiveRow<'_>],
) -> PolarsResult<DataFrame> {
    let mut columns: Vec<Column> = source
        .fields
        .iter()
        .enumerate()
        .map(|(slot, field)| {
            ColumnType::of(field.kind).column(
                &field.name,
                rows.iter()
                    .map(|r| r.event.values.get(slot).unwrap_or(&Value::Null)),
            )
        })
        .collect();
    let time: Vec<i64> = rows.iter().map(|r| r.event.time_ms).collect();
    let offsets: Vec<i64> = rows.iter().map(|r| r.offset).collect();
    let ingest: Vec<i64> = rows.iter().map(|r| r.ingest_ms).collect();
    let messages: Vec<&[u8]> = rows.iter().map(|r| r.message).collect();
    columns.push(Column::new(EVENT_TIME.into(), time));
    columns.push(Column::new_scalar(
        PARTITION.into(),
        Scalar::new(DataType::Int32, AnyValue::Int32(partition)),
        rows.len(),
    ));
    columns.push(Column::new(OFFSET.into(), offsets));
    columns.push(Column::new(INGEST_TIME.into(), ingest));
    columns.push(Column::new(MESSAGE.into(), messages));
    DataFrame::new(rows.len(), columns)
}

/// How one field is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Utf8,
    Int64,
    Float64,
    Boolean,
    /// The value's JSON literal, as Utf8.
    Literal,
}

impl ColumnType {
    pub fn of(kind: FieldKind) -> Self {
        match kind {
            FieldKind::String => Self::Utf8,
            FieldKind::Int => Self::Int64,
            FieldKind::Float => Self::Float64,
            FieldKind::Bool => Self::Boolean,
            FieldKind::Number | FieldKind::Scalar => Self::Literal,
        }
    }

    pub fn dtype(self) -> DataType {
        match self {
            Self::Utf8 | Self::Literal => DataType::String,
            Self::Int64 => DataType::Int64,
            Self::Float64 => DataType::Float64,
            Self::Boolean => DataType::Boolean,
        }
    }

    /// Whether Polars can aggregate the column's values exactly as Braid's states do.
    pub fn is_native_number(self) -> bool {
        matches!(self, Self::Int64 | Self::Float64)
    }

    /// A column of `values` (absent ones null).
    pub fn column<'a>(self, name: &str, values: impl Iterator<Item = &'a Value>) -> Column {
        let name = PlSmallStr::from(name);
        match self {
            Self::Utf8 => {
                let v: Vec<Option<&str>> = values
                    .map(|v| match v {
                        Value::Str(s) => Some(&**s),
                        _ => None,
                    })
                    .collect();
                Column::new(name, v)
            }
            Self::Int64 => {
                let v: Vec<Option<i64>> = values
                    .map(|v| match v {
                        Value::Int(i) => Some(*i),
                        _ => None,
                    })
                    .collect();
                Column::new(name, v)
            }
            Self::Float64 => {
                let v: Vec<Option<f64>> = values.map(Value::as_f64).collect();
                Column::new(name, v)
            }
            Self::Boolean => {
                let v: Vec<Option<bool>> = values
                    .map(|v| match v {
                        Value::Bool(b) => Some(*b),
                        _ => None,
                    })
                    .collect();
                Column::new(name, v)
            }
            Self::Literal => {
                let v: Vec<Option<String>> = values
                    .map(|v| (!v.is_null()).then(|| v.to_json().to_string()))
                    .collect();
                Column::new(name, v)
            }
        }
    }
}

/// Parses a JSON literal written by [`ColumnType::Literal`].
pub fn parse_literal(text: &str) -> Option<Value> {
    match serde_json::from_str::<serde_json::Value>(text).ok()? {
        serde_json::Value::Null => Some(Value::Null),
        serde_json::Value::Bool(b) => Some(Value::Bool(b)),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_f64().map(Value::Float)),
        serde_json::Value::String(s) => Some(Value::Str(s.into())),
        _ => None,
    }
}

/// Reads the values of one column back, row by row.
pub enum ValueReader<'a> {
    Utf8(&'a StringChunked),
    Int64(&'a Int64Chunked),
    Float64(&'a Float64Chunked),
    Boolean(&'a BooleanChunked),
    Literal(&'a StringChunked),
}

impl<'a> ValueReader<'a> {
    /// A reader of `column` stored as `ty`; fails when the column has another type.
    pub fn new(column: &'a Column, ty: ColumnType) -> PolarsResult<Self> {
        Ok(match ty {
            ColumnType::Utf8 => Self::Utf8(column.str()?),
            ColumnType::Literal => Self::Literal(column.str()?),
            ColumnType::Int64 => Self::Int64(column.i64()?),
            ColumnType::Float64 => Self::Float64(column.f64()?),
            ColumnType::Boolean => Self::Boolean(column.bool()?),
        })
    }

    /// Every value, in row order (null where absent). Fails on a literal that does not parse.
    pub fn values(&self) -> Result<Vec<Value>, String> {
        Ok(match self {
            Self::Utf8(c) => c
                .iter()
                .map(|v| v.map_or(Value::Null, |s| Value::Str(s.into())))
                .collect(),
            Self::Int64(c) => c
                .iter()
                .map(|v| v.map_or(Value::Null, Value::Int))
                .collect(),
            Self::Float64(c) => c
                .iter()
                .map(|v| v.map_or(Value::Null, Value::Float))
                .collect(),
            Self::Boolean(c) => c
                .iter()
                .map(|v| v.map_or(Value::Null, Value::Bool))
                .collect(),
            Self::Literal(c) => c
                .iter()
                .map(|v| match v {
                    None => Ok(Value::Null),
                    Some(text) => {
                        parse_literal(text).ok_or_else(|| format!("bad JSON literal {text:?}"))
                    }
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_type_round_trips_its_values() {
        let cases: Vec<(ColumnType, Vec<Value>)> = vec![
            (ColumnType::Utf8, vec![Value::Str("a".into()), Value::Null]),
            (ColumnType::Int64, vec![Value::Int(i64::MIN), Value::Null]),
            (ColumnType::Float64, vec![Value::Float(-0.5), Value::Null]),
            (ColumnType::Boolean, vec![Value::Bool(true), Value::Null]),
            (
                ColumnType::Literal,
                vec![
                    Value::Int(7),
                    Value::Float(7.0),
                    Value::Str("7".into()),
                    Value::Bool(false),
                    Value::Null,
                    Value::Int(i64::MAX),
                ],
            ),
        ];
        for (ty, values) in cases {
            let column = ty.column("x", values.iter());
            assert_eq!(column.dtype(), &ty.dtype());
            let back = ValueReader::new(&column, ty).unwrap().values().unwrap();
            assert_eq!(back, values, "{ty:?}");
        }
    }

    #[test]
    fn a_damaged_literal_is_an_error() {
        let column = Column::new("x".into(), vec![Some("{not json")]);
        let err = ValueReader::new(&column, ColumnType::Literal)
            .unwrap()
            .values()
            .unwrap_err();
        assert!(err.contains("not json"), "{err}");
    }
}
