//! Archived events read back for the audit trail: Polars over the Parquet files a partition's
//! manifest lists, filtered by event time, offsets and field values, in offset order.

use std::path::PathBuf;

use braid_shared::Value;
use polars::prelude::*;

use crate::columns::{ColumnType, EVENT_TIME, OFFSET, PARTITION, ValueReader};
use crate::error::{Error, Result};

/// Which archived events of one partition to read.
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub partition: i32,
    /// Offsets `[from_offset, to_offset)`.
    pub from_offset: i64,
    pub to_offset: i64,
    /// Event times `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Required field values: name, how it is stored, value.
    pub filters: Vec<(String, ColumnType, Value)>,
    pub limit: usize,
}

/// One archived event.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedEvent {
    pub offset: i64,
    pub time_ms: i64,
    /// The source's fields, in its order (null where absent).
    pub values: Vec<Value>,
}

/// How archive files are scanned: exactly the listed files (no globbing, no Hive columns from
/// the `source=`/`date=` path parts: the rows carry everything), columns a file lacks as null.
pub fn scan_args() -> ScanArgsParquet {
    ScanArgsParquet {
        allow_missing_columns: true,
        hive_options: HiveOptions {
            enabled: Some(false),
            ..Default::default()
        },
        glob: false,
        cache: false,
        ..Default::default()
    }
}

/// Rows whose field `name` (stored as `ty`) holds `value`, compared as the archive stores it.
pub(crate) fn equals(name: &str, ty: ColumnType, value: &Value) -> Expr {
    let stored = ty.column("v", std::iter::once(value));
    match stored.get(0).map(|v| v.into_static()) {
        Ok(first) if !first.is_null() => col(name).eq(lit(Scalar::new(ty.dtype(), first))),
        _ => col(name).is_null(),
    }
}

/// The events of `files` (all of `query.partition`) that `query` selects, by offset, at most
/// `query.limit`. `fields` are the source's fields and how each is stored; a file written
/// before `source` read some of them is decoded again from its messages.
pub fn read_events(
    files: &[PathBuf],
    source: &braid_shared::SourceDef,
    fields: &[(String, ColumnType)],
    query: &EventQuery,
) -> Result<Vec<ArchivedEvent>> {
    if files.is_empty() || query.limit == 0 {
        return Ok(Vec::new());
    }
    let polars = |e: PolarsError| Error::Parquet(e.to_string());
    let args = scan_args();
    let mut filter = col(PARTITION)
        .eq(lit(query.partition))
        .and(col(OFFSET).gt_eq(lit(query.from_offset)))
        .and(col(OFFSET).lt(lit(query.to_offset)))
        .and(col(EVENT_TIME).gt_eq(lit(query.from_ms)))
        .and(col(EVENT_TIME).lt(lit(query.to_ms)));
    for (name, ty, value) in &query.filters {
        filter = filter.and(equals(name, *ty, value));
    }
    let mut select: Vec<Expr> = vec![col(OFFSET), col(EVENT_TIME)];
    select.extend(fields.iter().map(|(name, _)| col(name.as_str())));
    let mut current = Vec::new();
    let mut frames = Vec::new();
    for file in files {
        if crate::redecode::is_stale(file, source)? {
            let offsets = Some((query.from_offset, query.to_offset));
            frames.push(crate::redecode::decoded(file, source, offsets)?.lazy());
        } else {
            current.push(PlRefPath::try_from_path(file).map_err(polars)?);
        }
    }
    if !current.is_empty() {
        frames.push(LazyFrame::scan_parquet_files(current.into(), args).map_err(polars)?);
    }
    let frames: Vec<LazyFrame> = frames
        .into_iter()
        .map(|f| f.filter(filter.clone()).select(select.clone()))
        .collect();
    let all = if frames.len() == 1 {
        frames
            .into_iter()
            .next()
            .ok_or_else(|| Error::Parquet("no frame".into()))?
    } else {
        concat(frames, UnionArgs::default()).map_err(polars)?
    };
    let limit = u32::try_from(query.limit).unwrap_or(u32::MAX);
    let df = all
        .sort([OFFSET], SortMultipleOptions::default())
        .limit(limit)
        .collect()
        .map_err(polars)?;
    let column = |name: &str| df.column(name).map_err(polars);
    let offsets = column(OFFSET)?.i64().map_err(polars)?.clone();
    let times = column(EVENT_TIME)?.i64().map_err(polars)?.clone();
    let mut values = Vec::with_capacity(fields.len());
    for (name, ty) in fields {
        let read = ValueReader::new(column(name)?, *ty)
            .map_err(polars)?
            .values()
            .map_err(Error::Parquet)?;
        values.push(read);
    }
    Ok((0..df.height())
        .map(|row| ArchivedEvent {
            offset: offsets.get(row).unwrap_or(-1),
            time_ms: times.get(row).unwrap_or(0),
            values: values
                .iter()
                .map(|field| field.get(row).cloned().unwrap_or(Value::Null))
                .collect(),
        })
        .collect())
}
