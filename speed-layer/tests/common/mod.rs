//! Speed-layer test support on top of `braid_testkit`.

#![allow(dead_code)]

use std::time::Duration;

use braid_shared::{CellQuery, Coverage, SpeedReader, ViewState};
use braid_speed::SpeedHandle;
pub use braid_testkit::*;

pub fn read_all(handle: &SpeedHandle, view: &str) -> ViewState {
    handle
        .read(view, &CellQuery::all(), &Coverage::default())
        .unwrap()
        .state
}

/// Waits until the handle has applied every message of every partition.
pub fn wait_caught_up(handle: &SpeedHandle, topic: &str, counts: &[usize], timeout: Duration) {
    wait_for("the speed layer to catch up", timeout, || {
        let positions = handle.positions();
        counts.iter().enumerate().all(|(p, &n)| {
            positions
                .get(&braid_shared::TopicPartition::new(topic, p as i32))
                .copied()
                .unwrap_or(-1)
                >= n as i64
        })
    });
}
