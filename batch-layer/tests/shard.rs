//! Sharded batch runs: shards computed apart and merged publish the snapshot an unsplit run
//! publishes, cell for cell (every state's encoding equal), full and incremental, whatever the
//! number of shards and the order they finish in; shards agree through storage alone; a run
//! published meanwhile makes the merge fail instead of being overwritten.

mod common;

use std::path::Path;
use std::time::Duration;

use braid_batch::{Archiver, BatchRunner, RunState, Shard, ShardOutcome, Trigger};
use braid_shared::Config;
use braid_store::manifest::SnapshotManifest;
use common::*;
use polars::prelude::*;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;

/// The test config plus a view whose `top_k` holds far more distinct values per cell than its
/// capacity (64), where merging in another order gives other states, and a float sum.
fn config_with_heavy_view(world: &Fixture) -> Config {
    let mut text = std::fs::read_to_string(&world.path).unwrap();
    text.push_str(
        r#"
[[view]]
name = "country_heavy"
source = "payments"
group_by = ["country"]
granularity = "1h"
[view.metrics]
top = "top_k(tx_id, 2)"
amount = "sum(amount)"
cards = "approx_distinct(card_id)"
"#,
    );
    let mut config = Config::from_toml(&text).unwrap();
    // Every run's snapshot stays, to be compared.
    config.batch.keep_snapshots = 50;
    config
}

fn archive(config: &Config, topic: &str, all: &[Produced]) {
    let counts: Vec<usize> = by_partition(all, PARTITIONS).iter().map(Vec::len).collect();
    let cancel = CancellationToken::new();
    let archiver = Archiver::start(
        config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    wait_archived(&archiver.handle(), topic, &counts, Duration::from_secs(60));
    cancel.cancel();
    archiver.join().unwrap();
}

fn runner(config: &Config) -> BatchRunner {
    BatchRunner::new(config, braid_store::open(&config.storage).unwrap()).unwrap()
}

/// Runs the shards of a run in `order`; the last one merges.
fn sharded(config: &Config, run: &str, shards: u32, order: &[u32], full: bool) -> ShardOutcome {
    let mut last = None;
    for (i, &index) in order.iter().enumerate() {
        let shard = Shard {
            run: run.to_owned(),
            shards,
            index,
        };
        let outcome = runner(config)
            .run_shard(&shard, full, &CancellationToken::new())
            .unwrap();
        if i + 1 < order.len() {
            assert!(
                matches!(outcome, ShardOutcome::Waiting { .. }),
                "shard {index} of {shards} merged before the others were done: {outcome:?}"
            );
        }
        last = Some(outcome);
    }
    last.unwrap()
}

fn merged_record(outcome: ShardOutcome) -> braid_batch::RunRecord {
    match outcome {
        ShardOutcome::Merged { record, .. } => {
            assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
            record
        }
        other => panic!("not merged: {other:?}"),
    }
}

fn manifest_of(dir: &Path, run_id: &str) -> SnapshotManifest {
    SnapshotManifest::read(
        &braid_store::LocalStorage::new(dir),
        &braid_store::layout::snapshot_manifest(run_id),
    )
    .unwrap()
}

/// A layer's cells, sorted by key and bucket: every column, states as their encoded bytes.
fn layer_cells(dir: &Path, key: &str, view: &braid_shared::ViewDef) -> DataFrame {
    let file = std::fs::File::open(dir.join(key)).unwrap();
    let frame = ParquetReader::new(file).finish().unwrap();
    let mut by: Vec<PlSmallStr> = view
        .group_by
        .iter()
        .map(|f| f.name.as_str().into())
        .collect();
    by.push("_bucket".into());
    frame
        .sort(by, SortMultipleOptions::default().with_nulls_last(true))
        .unwrap()
}

/// Every layer of every view of two snapshots holds the same cells, state bytes included.
fn assert_same_cells(
    config: &Config,
    (dir_a, run_a): (&Path, &str),
    (dir_b, run_b): (&Path, &str),
) {
    let (a, b) = (manifest_of(dir_a, run_a), manifest_of(dir_b, run_b));
    assert_eq!(a.coverage, b.coverage);
    for view in &config.views {
        let (la, lb) = (&a.views[&view.name].layers, &b.views[&view.name].layers);
        assert_eq!(la.len(), lb.len(), "{}: layers", view.name);
        for (x, y) in la.iter().zip(lb) {
            assert_eq!((x.cells, x.rows), (y.cells, y.rows), "{}", view.name);
            let (cx, cy) = (
                layer_cells(dir_a, &x.path, view),
                layer_cells(dir_b, &y.path, view),
            );
            assert!(cx.height() > 0);
            assert_eq!(cx.height(), cy.height(), "{}: cells", view.name);
            for (a, b) in cx.columns().iter().zip(cy.columns()) {
                assert_eq!(a.name(), b.name());
                for row in 0..a.len() {
                    let (x, y) = (a.get(row).unwrap(), b.get(row).unwrap());
                    // States compare decoded: a top-k's counters are a hash map, whose
                    // encoding follows its insertion order.
                    let (x, y) = match (x, y) {
                        (AnyValue::Binary(x), AnyValue::Binary(y)) => {
                            (format!("{:?}", decoded(x)), format!("{:?}", decoded(y)))
                        }
                        (x, y) => (format!("{x:?}"), format!("{y:?}")),
                    };
                    if x != y && !states_equal(a, b, row) {
                        panic!(
                            "{}: a sharded run's cells differ from the unsplit run's in {} at row {row}:\n unsplit {x}\n sharded {y}",
                            view.name,
                            a.name()
                        );
                    }
                }
            }
        }
    }
}

fn decoded(bytes: &[u8]) -> braid_shared::aggregate::MetricState {
    braid_shared::aggregate::MetricState::decode(bytes).unwrap()
}

/// Whether row `row` of two state columns holds equal states (every field exactly).
fn states_equal(a: &Column, b: &Column, row: usize) -> bool {
    match (a.get(row).unwrap(), b.get(row).unwrap()) {
        (AnyValue::Binary(x), AnyValue::Binary(y)) => decoded(x) == decoded(y),
        _ => false,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn with_dir(config: &Config, dir: &Path) -> Config {
    let mut config = config.clone();
    config.storage.dir = dir.to_owned();
    config
}

#[test]
fn sharded_runs_publish_the_unsplit_runs_cells() {
    let world = fixture(PARTITIONS, "");
    let config = config_with_heavy_view(&world);
    let dir = world.dir.path().to_owned();
    let first = payments(71, 6_000, PARTITIONS);
    world.produce(&first);
    archive(&config, &world.topic, &first);

    let unsplit = runner(&config)
        .run(Trigger::Command, true, &CancellationToken::new())
        .unwrap();
    assert_eq!(unsplit.state, RunState::Succeeded, "{:?}", unsplit.error);
    assert!(unsplit.shards.is_none());

    // Any number of shards (more than partitions too), finishing in any order.
    for (run, shards, order) in [
        ("two", 2, vec![1, 0]),
        ("three", 3, vec![2, 0, 1]),
        ("five", 5, vec![0, 1, 2, 3, 4]),
    ] {
        let record = merged_record(sharded(&config, run, shards, &order, true));
        assert_eq!(record.shards, Some(shards));
        assert_eq!(record.rows_read, unsplit.rows_read, "{run}");
        assert_eq!(record.views["country_heavy"].mode, "full");
        assert_same_cells(&config, (&dir, &unsplit.id), (&dir, &record.id));
        // A shard run again once merged changes nothing.
        let again = runner(&config)
            .run_shard(
                &Shard {
                    run: run.to_owned(),
                    shards,
                    index: 0,
                },
                true,
                &CancellationToken::new(),
            )
            .unwrap();
        assert!(matches!(again, ShardOutcome::Merged { record: r, .. } if r.id == record.id));
        // The shards' cell files are gone once merged; the plan and shard records stay.
        let left: Vec<_> = walk(&dir.join("batch/sharded").join(run));
        assert!(left.iter().all(|p| p.ends_with(".json")), "{left:?}");
    }

    // Incremental: new events, then the same base in two copies of the storage, one run
    // unsplit and one sharded.
    let second = payments(72, 3_000, PARTITIONS);
    world.produce(&second);
    let all: Vec<Produced> = first.iter().chain(&second).cloned().collect();
    archive(&config, &world.topic, &all);
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&dir, copy.path());
    let copied = with_dir(&config, copy.path());
    let unsplit = runner(&copied)
        .run(Trigger::Command, false, &CancellationToken::new())
        .unwrap();
    assert_eq!(unsplit.state, RunState::Succeeded, "{:?}", unsplit.error);
    assert_eq!(unsplit.views["country_heavy"].mode, "incremental");
    let record = merged_record(sharded(&config, "incremental", 2, &[0, 1], false));
    assert_eq!(record.views["country_heavy"].mode, "incremental");
    assert_eq!(record.rows_read, unsplit.rows_read);
    assert_same_cells(&config, (copy.path(), &unsplit.id), (&dir, &record.id));
    // The published answer is the reference at the published coverage.
    let (pointer, _) = published(&dir).unwrap();
    assert_eq!(pointer.run_id, record.id);
    let expected = reference_below(
        &config,
        "card_minute",
        &by_partition(&all, PARTITIONS),
        &world.topic,
        &pointer.coverage,
    );
    assert_same(&published_view(&config, "card_minute"), &expected);
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[test]
fn shards_refuse_other_settings_a_merge_names_missing_shards_and_a_run_published_meanwhile_wins() {
    let world = fixture(PARTITIONS, "");
    let config = &world.config;
    let all = payments(73, 2_000, PARTITIONS);
    world.produce(&all);
    archive(config, &world.topic, &all);
    let cancel = CancellationToken::new();
    let shard = |index, shards| Shard {
        run: "nightly".to_owned(),
        shards,
        index,
    };
    let first = runner(config)
        .run_shard(&shard(0, 3), true, &cancel)
        .unwrap();
    let ShardOutcome::Waiting {
        run_id,
        done,
        waiting_for,
        ..
    } = first
    else {
        panic!("merged with one shard of three: {first:?}");
    };
    assert_eq!((done, waiting_for), (vec![0], vec![1, 2]));

    // The same run with another shard count, or without --full, is refused.
    for (shards, full) in [(2, true), (3, false)] {
        let error = runner(config)
            .run_shard(&shard(1, shards), full, &cancel)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("run \"nightly\" was started with 3 shards and --full"),
            "{error}"
        );
    }
    // Out of range shards and names that are no storage key are refused.
    let error = runner(config)
        .run_shard(&shard(3, 3), true, &cancel)
        .unwrap_err();
    assert!(error.to_string().contains("shard 3 of 3"), "{error}");
    for name in ["../escape", "", &"x".repeat(500), "tab\there"] {
        let bad = Shard {
            run: name.to_owned(),
            shards: 2,
            index: 0,
        };
        let error = runner(config)
            .run_shard(&bad, true, &cancel)
            .unwrap_err()
            .to_string();
        assert!(error.contains("run name"), "{error}");
        assert!(error.len() < 300, "{error}");
    }
    // A merge names the shards not done; an unknown run is named.
    let error = runner(config)
        .merge_shards("nightly", &cancel)
        .unwrap_err()
        .to_string();
    assert!(error.contains("shards [1, 2] of 3 are not done"), "{error}");
    let error = runner(config)
        .merge_shards("never", &cancel)
        .unwrap_err()
        .to_string();
    assert!(error.contains("no sharded run \"never\""), "{error}");

    // An unsplit run publishes while the shards compute: the merge must not overwrite it.
    let unsplit = runner(config).run(Trigger::Command, true, &cancel).unwrap();
    assert_eq!(unsplit.state, RunState::Succeeded);
    runner(config)
        .run_shard(&shard(1, 3), true, &cancel)
        .unwrap();
    let outcome = runner(config)
        .run_shard(&shard(2, 3), true, &cancel)
        .unwrap();
    let ShardOutcome::Merged { record, .. } = outcome else {
        panic!("not merged: {outcome:?}");
    };
    assert_eq!(record.id, run_id);
    assert_eq!(record.state, RunState::Failed);
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or("")
            .contains("another run published a snapshot after run \"nightly\" was planned"),
        "{:?}",
        record.error
    );
    let (pointer, _) = published(world.dir.path()).unwrap();
    assert_eq!(pointer.run_id, unsplit.id);
    // The history says so.
    let listed = runner(config).history().list(10).unwrap();
    let failed = listed.iter().find(|r| r.id == run_id).unwrap();
    assert_eq!(failed.state, RunState::Failed);
    assert_eq!(failed.shards, Some(3));

    // A new sharded run sweeps the finished one away and publishes.
    let record = merged_record(sharded(config, "retry", 2, &[0, 1], true));
    assert!(!world.dir.path().join("batch/sharded/nightly").exists());
    let (pointer, _) = published(world.dir.path()).unwrap();
    assert_eq!(pointer.run_id, record.id);
}
