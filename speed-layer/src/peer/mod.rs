//! Speed and serving tiers in separate processes. A speed instance (`braid run --layers speed`
//! with `speed.listen`) answers, per partition it holds, its cells of a view above a given
//! coverage and the offset it reached ([`serve`]); a serving instance without a speed layer of
//! its own gathers them from `serve.speed_peers` in parallel ([`RemoteSpeed`]), takes each
//! partition once (the larger position when two instances report one during a hand-over: both
//! are exact prefixes of the partition) and names the partitions nobody reported in time.
//!
//! The endpoint is internal and has no API keys: keep it on a private network.
//!
//! - `wire`: the request and the versioned binary answer.
//! - `endpoint`: the speed instance's server.
//! - `client`: the serving tier's reader of every peer.

mod client;
mod endpoint;
mod wire;

pub use client::RemoteSpeed;
pub use endpoint::serve;

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use braid_shared::{Config, PartitionCells, PartitionStatus, TopicPartition, Value, ViewState};

    pub(crate) const CONFIG: &str = r#"
[kafka]
brokers = "127.0.0.1:9"
[storage]
dir = "unused"
[[source]]
name = "payments"
topic = "payments"
event_time = "ts"
[[view]]
name = "cards"
source = "payments"
group_by = ["card"]
granularity = "1m"
[view.metrics]
tx = "count"
cards = "approx_distinct(card)"
"#;

    pub(crate) fn part(config: &Config, partition: i32, events: &[(i64, &str)]) -> PartitionCells {
        let view = config.view("cards").unwrap();
        let source = config.source("payments").unwrap();
        let mut state = ViewState::new(Arc::clone(view));
        let slot = source.slot("card").unwrap();
        let applied: Vec<braid_shared::Event> = events
            .iter()
            .map(|(t, card)| {
                let mut values = vec![Value::Null; source.fields.len().max(slot + 1)];
                values[slot] = Value::Str((*card).into());
                braid_shared::Event {
                    time_ms: *t,
                    values,
                }
            })
            .collect();
        state.apply(&applied);
        PartitionCells {
            tp: TopicPartition::new("payments", partition),
            status: PartitionStatus {
                position: events.len() as i64,
                lag_messages: Some(0),
                last_message_ms: None,
            },
            state,
        }
    }
}
