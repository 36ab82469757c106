//! The scheduler inside a long-running process: runs every `[batch] interval`, and on request,
//! one at a time, each recorded in the history.

mod common;

use std::time::Duration;

use braid_batch::{BatchScheduler, RunState, Trigger};
use braid_store::BatchControl;
use common::*;
use tokio_util::sync::CancellationToken;

#[test]
fn scheduled_and_requested_runs_are_recorded() {
    let world = fixture(1, "");
    let mut config = world.config.clone();
    config.batch.interval = braid_shared::config::Interval(Some(Duration::from_millis(300)));
    let cancel = CancellationToken::new();
    let scheduler = BatchScheduler::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    let handle = scheduler.handle();

    let scheduled = |state: RunState| {
        handle
            .history()
            .list(100)
            .unwrap()
            .iter()
            .filter(|r| r.trigger == Trigger::Schedule && r.state == state)
            .count()
    };
    wait_for("two scheduled runs", Duration::from_secs(20), || {
        scheduled(RunState::Succeeded) >= 2
    });

    let id = handle.request(true).unwrap();
    wait_for("the requested run", Duration::from_secs(20), || {
        handle
            .history()
            .get(&id)
            .is_ok_and(|r| r.state == RunState::Succeeded)
    });
    let record = handle.history().get(&id).unwrap();
    assert_eq!(record.trigger, Trigger::Api);
    assert!(record.full);
    assert!(record.started_at.is_some() && record.finished_at.is_some());

    assert!(matches!(
        handle.history().get("../../etc/passwd"),
        Err(braid_store::Error::UnknownRun(_))
    ));
    assert!(matches!(
        handle.history().get("run-never"),
        Err(braid_store::Error::UnknownRun(_))
    ));
    cancel.cancel();
    scheduler.join();
    assert_eq!(scheduled(RunState::Failed), 0);
}
