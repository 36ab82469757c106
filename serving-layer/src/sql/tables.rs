//! The tables a query reads, handed to DuckDB: `events_<source>` as a view over the archive
//! files the manifests list, `rejected_<source>` and `view_<name>` as Arrow record batches
//! appended into in-memory tables (nothing is written to disk).

use std::path::PathBuf;
use std::sync::Arc;

use braid_columnar::columns::{ColumnType, EVENT_TIME, INGEST_TIME, MESSAGE, OFFSET, PARTITION};
use duckdb::Connection;
use duckdb::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use duckdb::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use duckdb::arrow::record_batch::RecordBatch;
use serde_json::Value as Json;

/// One table's data, gathered by the server before the query runs.
pub enum Table {
    /// Archived events: Parquet files, read where they lie.
    Events {
        name: String,
        /// The source's fields and how each is stored.
        fields: Vec<(String, ColumnType)>,
        files: Vec<PathBuf>,
    },
    /// Rows computed in memory (rejections, merged view cells).
    Rows { name: String, columns: Vec<Column> },
}

/// A column of computed rows.
pub struct Column {
    pub name: String,
    pub values: Vec<Json>,
    pub kind: Kind,
}

/// A computed column's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Follows the values: all integers (or null) BIGINT, numbers DOUBLE, booleans BOOLEAN,
    /// anything else VARCHAR (strings as they are, lists and objects as JSON text); DOUBLE
    /// when every value is null.
    Auto,
    Int,
    Text,
    /// Epoch milliseconds, read as a TIMESTAMP.
    Time,
}

impl Column {
    pub fn new(name: impl Into<String>, kind: Kind, values: Vec<Json>) -> Self {
        Self {
            name: name.into(),
            values,
            kind,
        }
    }
}

/// A SQL identifier, quoted.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Creates `table` in the connection's in-memory database.
pub fn register(conn: &Connection, table: Table) -> duckdb::Result<()> {
    match table {
        Table::Events {
            name,
            fields,
            files,
        } => conn.execute_batch(&events_ddl(&name, &fields, &files)),
        Table::Rows { name, columns } => {
            let batch = record_batch(columns)?;
            let ddl: Vec<String> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| format!("{} {}", ident(f.name()), sql_type(f.data_type())))
                .collect();
            conn.execute_batch(&format!(
                "CREATE TABLE {} ({})",
                ident(&name),
                ddl.join(", ")
            ))?;
            if batch.num_rows() > 0 {
                conn.appender(&name)?.append_record_batch(batch)?;
            }
            Ok(())
        }
    }
}

/// `events_<source>`: every field (undeclared ones as the text of their JSON value), the
/// partition and offset, and the event and ingest times as TIMESTAMPs.
/// A field no file holds yet (the source read it only since) reads as null, and so does the
/// message in archives written before they kept it.
fn events_ddl(name: &str, fields: &[(String, ColumnType)], files: &[PathBuf]) -> String {
    // The columns some file holds; a file whose footer cannot be read leaves DuckDB to say so.
    let mut held = std::collections::HashSet::new();
    let mut unread = false;
    for file in files {
        match braid_columnar::redecode::file_schema(file) {
            Ok(schema) => held.extend(schema.iter_names().map(|n| n.to_string())),
            Err(_) => unread = true,
        }
    }
    let holds = |column: &str| unread || held.contains(column);
    let mut select: Vec<String> = fields
        .iter()
        .map(|(field, ty)| match ty {
            _ if !holds(field) => format!("CAST(NULL AS {}) AS {}", column_type(*ty), ident(field)),
            ColumnType::Literal => format!("({}::JSON ->> '$') AS {}", ident(field), ident(field)),
            _ => ident(field),
        })
        .collect();
    select.push(format!("{} AS _partition", ident(PARTITION)));
    select.push(format!("{} AS _offset", ident(OFFSET)));
    select.push(format!("epoch_ms({}) AS _event_time", ident(EVENT_TIME)));
    select.push(format!("epoch_ms({}) AS _ingest_time", ident(INGEST_TIME)));
    select.push(if holds(MESSAGE) {
        format!("{} AS _message", ident(MESSAGE))
    } else {
        "CAST(NULL AS BLOB) AS _message".to_owned()
    });
    if files.is_empty() {
        let mut columns: Vec<String> = fields
            .iter()
            .map(|(field, ty)| format!("{} {}", ident(field), column_type(*ty)))
            .collect();
        columns.extend([
            "_partition INTEGER".to_owned(),
            "_offset BIGINT".to_owned(),
            "_event_time TIMESTAMP".to_owned(),
            "_ingest_time TIMESTAMP".to_owned(),
            "_message BLOB".to_owned(),
        ]);
        return format!("CREATE TABLE {} ({})", ident(name), columns.join(", "));
    }
    let list: Vec<String> = files
        .iter()
        .map(|f| literal(&f.to_string_lossy()))
        .collect();
    format!(
        "CREATE VIEW {} AS SELECT {} FROM read_parquet([{}], union_by_name = true)",
        ident(name),
        select.join(", "),
        list.join(", ")
    )
}

/// The SQL type of a field stored as `ty`.
fn column_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Int64 => "BIGINT",
        ColumnType::Float64 => "DOUBLE",
        ColumnType::Boolean => "BOOLEAN",
        ColumnType::Utf8 | ColumnType::Literal => "VARCHAR",
    }
}

fn sql_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Int64 => "BIGINT",
        DataType::Float64 => "DOUBLE",
        DataType::Boolean => "BOOLEAN",
        DataType::Timestamp(_, _) => "TIMESTAMP",
        _ => "VARCHAR",
    }
}

/// Computed columns as one record batch.
fn record_batch(columns: Vec<Column>) -> duckdb::Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for column in columns {
        let (data_type, array) = array(&column);
        fields.push(Field::new(&column.name, data_type, true));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))
}

fn array(column: &Column) -> (DataType, ArrayRef) {
    let values = &column.values;
    let non_null = || values.iter().filter(|v| !v.is_null());
    let kind = match column.kind {
        Kind::Auto if non_null().all(|v| v.is_i64()) && non_null().next().is_some() => Kind::Int,
        Kind::Auto if non_null().all(Json::is_number) => {
            let mut b = Float64Builder::with_capacity(values.len());
            values.iter().for_each(|v| b.append_option(v.as_f64()));
            return (DataType::Float64, Arc::new(b.finish()));
        }
        Kind::Auto if non_null().all(Json::is_boolean) => {
            let mut b = BooleanBuilder::with_capacity(values.len());
            values.iter().for_each(|v| b.append_option(v.as_bool()));
            return (DataType::Boolean, Arc::new(b.finish()));
        }
        Kind::Auto => Kind::Text,
        fixed => fixed,
    };
    if kind == Kind::Time {
        let mut b = TimestampMicrosecondBuilder::with_capacity(values.len());
        for v in values {
            b.append_option(v.as_i64().and_then(|ms| ms.checked_mul(1_000)));
        }
        return (
            DataType::Timestamp(TimeUnit::Microsecond, None),
            Arc::new(b.finish()),
        );
    }
    if kind == Kind::Int {
        let mut b = Int64Builder::with_capacity(values.len());
        values.iter().for_each(|v| b.append_option(v.as_i64()));
        return (DataType::Int64, Arc::new(b.finish()));
    }
    let mut b = StringBuilder::new();
    for v in values {
        match v {
            Json::Null => b.append_null(),
            Json::String(s) => b.append_value(s),
            other => b.append_value(other.to_string()),
        }
    }
    (DataType::Utf8, Arc::new(b.finish()))
}
