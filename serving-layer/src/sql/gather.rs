//! The tables a query names, gathered before it runs: archive files from the manifests,
//! rejections of both layers, and merged view cells.

use std::collections::BTreeSet;
use std::sync::Arc;

use braid_columnar::columns::ColumnType;
use braid_merge::answer::{self, Regroup, Sources};
use braid_shared::{CellQuery, Config};
use braid_store::Storage;
use braid_store::manifest::{FileKind, read_archive_manifests};

use super::{Column, Kind, SqlError, Table};
use braid_merge::rejections::ListedRejection;

/// The named tables' data.
pub async fn gather(
    config: &Config,
    storage: &Arc<dyn Storage>,
    sources: Sources<'_>,
    names: &BTreeSet<String>,
) -> Result<Vec<Table>, SqlError> {
    let mut tables = Vec::new();
    for source in &config.sources {
        let events = format!("events_{}", source.name).to_lowercase();
        let rejected = format!("rejected_{}", source.name).to_lowercase();
        if names.contains(&events) {
            let storage = Arc::clone(storage);
            let (topic, name) = (source.topic.clone(), source.name.clone());
            let files = tokio::task::spawn_blocking(move || {
                let manifests = read_archive_manifests(storage.as_ref(), &topic)?;
                // Local files for DuckDB: remote storage downloads them into its cache.
                let mut files = Vec::new();
                for file in manifests
                    .iter()
                    .flat_map(|m| &m.entries)
                    .flat_map(|e| &e.files)
                    .filter(|f| f.kind == FileKind::Events && f.source == name)
                {
                    files.push(file.local(storage.as_ref())?);
                }
                Ok::<_, braid_store::Error>(files)
            })
            .await
            .map_err(|e| SqlError::Internal(format!("reading the archive manifests: {e}")))?
            .map_err(storage_error)?;
            tables.push(Table::Events {
                name: events,
                fields: source
                    .fields
                    .iter()
                    .map(|f| (f.name.clone(), ColumnType::of(f.kind)))
                    .collect(),
                files,
            });
        }
        if names.contains(&rejected) {
            let storage = Arc::clone(storage);
            let (topic, name) = (source.topic.clone(), source.name.clone());
            let merged = tokio::task::spawn_blocking(move || {
                braid_merge::rejections::merged(storage.as_ref(), &topic, &name)
            })
            .await
            .map_err(|e| SqlError::Internal(format!("reading rejected events: {e}")))?
            .map_err(storage_error)?;
            let listed: Vec<_> = merged.into_values().collect();
            let column =
                |name: &str, kind: Kind, f: &dyn Fn(&ListedRejection) -> serde_json::Value| {
                    Column::new(name, kind, listed.iter().map(f).collect())
                };
            tables.push(Table::Rows {
                name: rejected,
                columns: vec![
                    column("topic", Kind::Text, &|l| l.record.topic.clone().into()),
                    column("partition", Kind::Int, &|l| l.record.partition.into()),
                    column("offset", Kind::Int, &|l| l.record.offset.into()),
                    column("reason", Kind::Text, &|l| l.record.reason.code().into()),
                    column("detail", Kind::Text, &|l| {
                        serde_json::to_string(&l.record.reason)
                            .unwrap_or_default()
                            .into()
                    }),
                    column("raw", Kind::Text, &|l| l.record.raw.clone().into()),
                    column("raw_bytes", Kind::Int, &|l| l.record.raw_bytes.into()),
                    column("rejected_at", Kind::Time, &|l| {
                        l.record.rejected_at_ms.into()
                    }),
                    column("layers", Kind::Text, &|l| l.layers.join(",").into()),
                ],
            });
        }
    }
    for view in &config.views {
        let name = format!("view_{}", view.name).to_lowercase();
        if !names.contains(&name) {
            continue;
        }
        let Some(source) = config.source(&view.source) else {
            continue;
        };
        let regroup = Regroup {
            from_ms: 0,
            step_ms: Some(view.granularity_ms),
            group_by: (0..view.group_by.len()).collect(),
        };
        let grouped = answer::grouped(
            sources,
            view,
            &source.topic,
            &CellQuery::all(),
            &regroup,
            chrono::Utc::now().timestamp_millis(),
        )
        .await
        .map_err(SqlError::Answer)?;
        if !grouped.provenance.complete {
            return Err(SqlError::Incomplete {
                table: name,
                missing: grouped.provenance.missing,
            });
        }
        let mut columns = vec![Column::new("bucket", Kind::Time, Vec::new())];
        columns.extend(view.group_by.iter().map(|f| {
            let kind = match source.fields.get(f.slot).map(|s| s.kind) {
                Some(braid_shared::view::FieldKind::String) => Kind::Text,
                Some(braid_shared::view::FieldKind::Int) => Kind::Int,
                _ => Kind::Auto,
            };
            Column::new(&f.name, kind, Vec::new())
        }));
        columns.extend(view.metrics.iter().map(|m| {
            let kind = match m.expr {
                braid_shared::MetricExpr::Count
                | braid_shared::MetricExpr::ApproxDistinct { .. } => Kind::Int,
                braid_shared::MetricExpr::TopK { .. } => Kind::Text,
                _ => Kind::Auto,
            };
            Column::new(&m.name, kind, Vec::new())
        }));
        for ((bucket, group), states) in grouped.groups {
            columns[0].values.push(bucket.into());
            for (i, value) in group.iter().enumerate() {
                columns[1 + i].values.push(value.to_json());
            }
            let at = 1 + view.group_by.len();
            for (i, (metric, state)) in view.metrics.iter().zip(states.iter()).enumerate() {
                columns[at + i].values.push(state.finalize(&metric.expr));
            }
        }
        tables.push(Table::Rows { name, columns });
    }
    Ok(tables)
}

/// Storage failed under a query: logged, and named without a path.
fn storage_error(error: impl std::fmt::Display) -> SqlError {
    SqlError::Storage(error.to_string())
}
