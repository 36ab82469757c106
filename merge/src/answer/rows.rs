//! Finalized rows: each group's states rendered as metric values, ordered and limited.

use braid_shared::ViewDef;

use super::{Groups, ViewQuery};
use braid_shared::text::format_time;

/// Renders the groups as `{"bucket", <group fields>, <metrics>}` rows in `query`'s order, cut at
/// its limit.
pub(super) fn finalize(
    view: &ViewDef,
    query: &ViewQuery,
    groups: Groups,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut rows: Vec<_> = groups
        .into_iter()
        .map(|((bucket, group), states)| {
            let mut row = serde_json::Map::new();
            row.insert("bucket".to_owned(), format_time(bucket).into());
            for (&i, value) in query.group_by.iter().zip(&group) {
                row.insert(view.group_by[i].name.clone(), value.to_json());
            }
            for (metric, state) in view.metrics.iter().zip(states.iter()) {
                row.insert(metric.name.clone(), state.finalize(&metric.expr));
            }
            row
        })
        .collect();
    if let Some(order) = query.order_by {
        let name = &view.metrics[order.metric].name;
        rows.sort_by(|a, b| {
            let ordering = number(a.get(name)).total_cmp(&number(b.get(name)));
            if order.descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
    }
    if let Some(limit) = query.limit {
        rows.truncate(limit);
    }
    rows
}

/// A metric value for ordering: numbers by value, anything else (null) last when descending.
fn number(value: Option<&serde_json::Value>) -> f64 {
    value
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(f64::NEG_INFINITY)
}
