//! DuckDB results as JSON: column type names, and values (times as RFC 3339 UTC strings).

use duckdb::arrow::datatypes::DataType;
use duckdb::types::{TimeUnit, Value};
use serde_json::Value as Json;

/// The SQL name of a result column's type.
pub fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "BOOLEAN".to_owned(),
        DataType::Int8 => "TINYINT".to_owned(),
        DataType::Int16 => "SMALLINT".to_owned(),
        DataType::Int32 => "INTEGER".to_owned(),
        DataType::Int64 => "BIGINT".to_owned(),
        DataType::UInt8 => "UTINYINT".to_owned(),
        DataType::UInt16 => "USMALLINT".to_owned(),
        DataType::UInt32 => "UINTEGER".to_owned(),
        DataType::UInt64 => "UBIGINT".to_owned(),
        DataType::Float16 | DataType::Float32 => "FLOAT".to_owned(),
        DataType::Float64 => "DOUBLE".to_owned(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".to_owned(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".to_owned(),
        DataType::Timestamp(_, _) => "TIMESTAMP".to_owned(),
        DataType::Date32 | DataType::Date64 => "DATE".to_owned(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".to_owned(),
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL".to_owned(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            "LIST".to_owned()
        }
        DataType::Struct(_) => "STRUCT".to_owned(),
        DataType::Map(_, _) => "MAP".to_owned(),
        DataType::Null => "NULL".to_owned(),
        other => other.to_string().to_uppercase(),
    }
}

/// One value as JSON: numbers as numbers (128-bit ones beyond `i64`/`u64`, decimals and
/// non-finite floats as strings), times as RFC 3339 UTC strings, blobs as hex.
pub fn to_json(value: Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => b.into(),
        Value::TinyInt(i) => i.into(),
        Value::SmallInt(i) => i.into(),
        Value::Int(i) => i.into(),
        Value::BigInt(i) => i.into(),
        Value::UTinyInt(i) => i.into(),
        Value::USmallInt(i) => i.into(),
        Value::UInt(i) => i.into(),
        Value::UBigInt(i) => i.into(),
        Value::HugeInt(i) => i64::try_from(i).map_or_else(|_| i.to_string().into(), Json::from),
        Value::UHugeInt(i) => u64::try_from(i).map_or_else(|_| i.to_string().into(), Json::from),
        Value::Float(f) => float(f64::from(f)),
        Value::Double(f) => float(f),
        Value::Decimal(d) => d.to_string().into(),
        Value::Timestamp(unit, t) => micros(unit, t).map_or(Json::Null, |us| {
            chrono::DateTime::from_timestamp_micros(us).map_or(Json::Null, |t| {
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    .into()
            })
        }),
        Value::Date32(days) => chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::days(days.into())))
            .map_or(Json::Null, |d| d.to_string().into()),
        Value::Time64(unit, t) => micros(unit, t).map_or(Json::Null, |us| {
            let seconds = us.div_euclid(1_000_000);
            chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                u32::try_from(seconds).unwrap_or(0),
                u32::try_from(us.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
            )
            .map_or(Json::Null, |t| t.to_string().into())
        }),
        Value::Interval {
            months,
            days,
            nanos,
        } => serde_json::json!({"months": months, "days": days, "micros": nanos / 1_000}),
        Value::Text(s) | Value::Enum(s) => s.into(),
        Value::Blob(b) | Value::Geometry(b) => hex::encode(b).into(),
        Value::List(items) | Value::Array(items) => {
            Json::Array(items.into_iter().map(to_json).collect())
        }
        Value::Struct(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v.clone())))
                .collect(),
        ),
        Value::Map(entries) => Json::Array(
            entries
                .iter()
                .map(|(k, v)| Json::Array(vec![to_json(k.clone()), to_json(v.clone())]))
                .collect(),
        ),
        Value::Union(inner) => to_json(*inner),
        other => format!("{other:?}").into(),
    }
}

fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or_else(|| f.to_string().into(), Json::Number)
}

fn micros(unit: TimeUnit, t: i64) -> Option<i64> {
    match unit {
        TimeUnit::Second => t.checked_mul(1_000_000),
        TimeUnit::Millisecond => t.checked_mul(1_000),
        TimeUnit::Microsecond => Some(t),
        TimeUnit::Nanosecond => Some(t.div_euclid(1_000)),
    }
}
