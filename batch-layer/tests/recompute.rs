//! Batch runs over an archive written by the archiver: the published views equal the reference
//! at the published coverage; incremental runs equal full ones; a changed view is recomputed in
//! full; a damaged archive fails the run and leaves the previous snapshot in service.

mod common;

use std::time::Duration;

use braid_batch::{Archiver, BatchRunner, RunState, Trigger};
use braid_shared::{Config, TopicPartition};
use braid_store::LocalStorage;
use braid_store::manifest::{FileKind, read_archive_manifests};
use common::*;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;
const VIEWS: [&str; 2] = ["card_minute", "country_hour"];

/// Archives `messages` (all of them, also those produced before) and waits for it.
fn archive(world: &Fixture, all: &[Produced]) {
    let partitions = by_partition(all, PARTITIONS);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();
    let cancel = CancellationToken::new();
    let archiver = Archiver::start(
        &world.config,
        braid_store::open(&world.config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    wait_archived(
        &archiver.handle(),
        &world.topic,
        &counts,
        Duration::from_secs(60),
    );
    cancel.cancel();
    archiver.join().unwrap();
}

fn run(config: &Config, full: bool) -> braid_batch::RunRecord {
    BatchRunner::new(config, braid_store::open(&config.storage).unwrap())
        .unwrap()
        .run(Trigger::Command, full, &CancellationToken::new())
        .unwrap()
}

fn assert_views_match_reference(world: &Fixture, all: &[Produced]) {
    let (pointer, _) = published(&world.config.storage.dir).unwrap();
    let partitions = by_partition(all, PARTITIONS);
    for view in VIEWS {
        let expected = reference_below(
            &world.config,
            view,
            &partitions,
            &world.topic,
            &pointer.coverage,
        );
        assert!(!expected.is_empty());
        assert_same(&published_view(&world.config, view), &expected);
    }
}

#[test]
fn recompute_equals_reference_and_incremental_equals_full() {
    let world = fixture(PARTITIONS, "");
    let config = &world.config;
    let first = payments(31, 4_000, PARTITIONS);
    world.produce(&first);
    archive(&world, &first);

    let record = run(config, false);
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    assert_eq!(record.views["card_minute"].mode, "full");
    // Coverage: each partition's archived end rounded down to the segment size (100).
    let (pointer, _) = published(&config.storage.dir).unwrap();
    let partitions = by_partition(&first, PARTITIONS);
    for (p, messages) in partitions.iter().enumerate() {
        let tp = TopicPartition::new(world.topic.clone(), p as i32);
        assert_eq!(
            pointer.coverage.of(&tp),
            (messages.len() as i64 / 100) * 100
        );
    }
    assert_views_match_reference(&world, &first);

    // More events: the next run is incremental, one more layer per view.
    let second = payments(32, 3_000, PARTITIONS);
    world.produce(&second);
    let all: Vec<Produced> = first.iter().chain(&second).cloned().collect();
    archive(&world, &all);
    let record = run(config, false);
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    for view in VIEWS {
        assert_eq!(record.views[view].mode, "incremental", "{view}");
        assert_eq!(record.views[view].layers, 2, "{view}");
    }
    let rows_incremental = record.rows_read;
    assert_views_match_reference(&world, &all);
    let incremental: Vec<_> = VIEWS.iter().map(|v| published_view(config, v)).collect();

    // Nothing new: the views are unchanged and read nothing.
    let record = run(config, false);
    assert_eq!(record.rows_read, 0);
    assert_eq!(record.views["card_minute"].mode, "unchanged");

    // --full reads everything again and gives the same cells.
    let record = run(config, true);
    assert_eq!(record.views["card_minute"].mode, "full");
    assert!(record.rows_read > rows_incremental);
    for (view, before) in VIEWS.iter().zip(&incremental) {
        assert_same(&published_view(config, view), before);
        assert_eq!(record.views[*view].layers, 1);
    }

    // batch.keep_snapshots (3) snapshots are kept, with the older runs whose layers they use.
    let snapshot_dirs = || {
        let mut dirs: Vec<String> = std::fs::read_dir(config.storage.dir.join("batch/snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        dirs.sort();
        dirs
    };
    assert_eq!(
        snapshot_dirs().len(),
        4,
        "the kept incremental snapshots use run 1's layer"
    );
    let newest: Vec<String> = (0..2).map(|_| run(config, true).id).collect();
    let kept = snapshot_dirs();
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert_eq!(kept[1..], newest[..]);
    assert_eq!(kept[0], record.id);

    // A changed view definition is recomputed in full; the others stay incremental.
    let text = std::fs::read_to_string(&world.path).unwrap().replace(
        "p90 = \"quantile(amount, 0.9)\"",
        "p90 = \"quantile(amount, 0.95)\"",
    );
    let changed = Config::from_toml(&text).unwrap();
    let more = payments(33, 1_000, PARTITIONS);
    world.produce(&more);
    let all: Vec<Produced> = all.iter().chain(&more).cloned().collect();
    archive(&world, &all);
    let record = run(&changed, false);
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    assert_eq!(record.views["country_hour"].mode, "full");
    assert_eq!(
        record.views["country_hour"].reason.as_deref(),
        Some("the view's definition changed")
    );
    assert_eq!(record.views["card_minute"].mode, "incremental");
    let (pointer, _) = published(&config.storage.dir).unwrap();
    let partitions = by_partition(&all, PARTITIONS);
    let expected = reference_below(
        &changed,
        "country_hour",
        &partitions,
        &world.topic,
        &pointer.coverage,
    );
    assert_same(&published_view(&changed, "country_hour"), &expected);

    // The history lists every run, newest first.
    let history = BatchRunner::new(config, braid_store::open(&config.storage).unwrap())
        .unwrap()
        .history()
        .list(10)
        .unwrap();
    assert_eq!(history.len(), 7);
    assert!(history.iter().all(|r| r.state == RunState::Succeeded));
    assert!(history.windows(2).all(|w| w[0].id > w[1].id));
}

#[test]
fn a_damaged_archive_fails_the_run_and_keeps_the_previous_snapshot() {
    let world = fixture(PARTITIONS, "");
    let config = &world.config;
    let first = payments(41, 3_000, PARTITIONS);
    world.produce(&first);
    archive(&world, &first);
    let good = run(config, false);
    assert_eq!(good.state, RunState::Succeeded, "{:?}", good.error);
    let before = std::fs::read(config.storage.dir.join("batch/CURRENT.json")).unwrap();

    let second = payments(42, 3_000, PARTITIONS);
    world.produce(&second);
    let all: Vec<Produced> = first.iter().chain(&second).cloned().collect();
    archive(&world, &all);
    let manifests =
        read_archive_manifests(&LocalStorage::new(&config.storage.dir), &world.topic).unwrap();
    let newest = manifests[0].entries.last().unwrap();
    let events_file = newest
        .files
        .iter()
        .find(|f| f.kind == FileKind::Events)
        .unwrap();
    let victim = config.storage.dir.join(&events_file.path);
    let original = std::fs::read(&victim).unwrap();

    // Missing.
    std::fs::remove_file(&victim).unwrap();
    let failed = run(config, false);
    assert_eq!(failed.state, RunState::Failed);
    let error = failed.error.clone().unwrap();
    assert!(error.contains(&events_file.path), "{error}");
    assert!(error.contains("listed in the manifest"), "{error}");
    assert_eq!(
        std::fs::read(config.storage.dir.join("batch/CURRENT.json")).unwrap(),
        before
    );
    assert!(
        !config
            .storage
            .dir
            .join("batch/snapshots")
            .join(&failed.id)
            .exists()
    );
    for view in VIEWS {
        assert!(!published_view(config, view).is_empty());
    }

    // Same size, garbage content.
    std::fs::write(&victim, vec![7u8; original.len()]).unwrap();
    let failed = run(config, true);
    assert_eq!(failed.state, RunState::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("not a Parquet file"),
        "{:?}",
        failed.error
    );
    assert_eq!(
        std::fs::read(config.storage.dir.join("batch/CURRENT.json")).unwrap(),
        before
    );

    // Truncated.
    std::fs::write(&victim, &original[..original.len() / 2]).unwrap();
    let failed = run(config, false);
    assert!(
        failed.error.as_deref().unwrap().contains("truncated"),
        "{:?}",
        failed.error
    );

    // Restored: the run succeeds again and is exact.
    std::fs::write(&victim, &original).unwrap();
    let record = run(config, false);
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    assert_views_match_reference(&world, &all);
    let history = BatchRunner::new(config, braid_store::open(&config.storage).unwrap())
        .unwrap()
        .history()
        .list(10)
        .unwrap();
    let states: Vec<RunState> = history.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            RunState::Succeeded,
            RunState::Failed,
            RunState::Failed,
            RunState::Failed,
            RunState::Succeeded
        ]
    );
}

#[test]
fn one_run_at_a_time() {
    let world = fixture(1, "");
    let storage: std::sync::Arc<dyn braid_store::Storage> =
        std::sync::Arc::new(braid_store::LocalStorage::new(&world.config.storage.dir));
    // Another instance's run holds the lease in storage.
    let holder = braid_store::lease::acquire(storage, "elsewhere").unwrap();
    let error = BatchRunner::new(
        &world.config,
        braid_store::open(&world.config.storage).unwrap(),
    )
    .unwrap()
    .run(Trigger::Command, false, &CancellationToken::new())
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("batch run elsewhere holds the run lease"),
        "{error}"
    );
    holder.release().unwrap();
    let record = run(&world.config, false);
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    assert_eq!(
        record.coverage.unwrap().0.len(),
        0,
        "an empty archive covers nothing"
    );
    // Released after the run: the next one takes it at once.
    assert_eq!(run(&world.config, false).state, RunState::Succeeded);
}

/// Storage whose pointer writes happen but answer with an error, as an object store's timeout
/// after the write landed does.
#[derive(Debug)]
struct LostPointerAck(std::sync::Arc<dyn braid_store::Storage>);

impl braid_store::Storage for LostPointerAck {
    fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<braid_store::storage::Listed>, braid_store::StorageError> {
        self.0.list(prefix)
    }
    fn get(
        &self,
        key: &str,
    ) -> Result<Option<braid_store::storage::Object>, braid_store::StorageError> {
        self.0.get(key)
    }
    fn put_if_absent(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<braid_store::storage::Put, braid_store::StorageError> {
        let put = self.0.put_if_absent(key, bytes)?;
        lost(key)?;
        Ok(put)
    }
    fn put_if_unchanged(
        &self,
        key: &str,
        bytes: &[u8],
        expected: &braid_store::storage::Version,
    ) -> Result<braid_store::storage::Put, braid_store::StorageError> {
        let put = self.0.put_if_unchanged(key, bytes, expected)?;
        lost(key)?;
        Ok(put)
    }
    fn delete(&self, key: &str) -> Result<(), braid_store::StorageError> {
        self.0.delete(key)
    }
    fn location(&self, key: &str) -> std::path::PathBuf {
        self.0.location(key)
    }
    fn local_file(
        &self,
        key: &str,
    ) -> Result<Option<std::path::PathBuf>, braid_store::StorageError> {
        self.0.local_file(key)
    }
}

fn lost(key: &str) -> Result<(), braid_store::StorageError> {
    if key == braid_store::layout::SNAPSHOT_POINTER {
        return Err(braid_store::StorageError::Io {
            op: "put",
            key: key.to_owned(),
            source: std::io::Error::other("the answer was lost after the write"),
        });
    }
    Ok(())
}

/// A run whose pointer write landed but answered with an error is published, and its files
/// stay (found by the torture suite: the run counted itself failed and removed the snapshot the
/// pointer named, and no process could load a snapshot again).
#[test]
fn a_run_whose_pointer_write_lost_its_answer_is_published_and_keeps_its_files() {
    let world = fixture(PARTITIONS, "");
    let config = &world.config;
    let messages = payments(32, 1_500, PARTITIONS);
    world.produce(&messages);
    archive(&world, &messages);
    let storage = std::sync::Arc::new(LostPointerAck(braid_store::open(&config.storage).unwrap()));
    for _ in 0..2 {
        let record = BatchRunner::new(config, storage.clone())
            .unwrap()
            .run(Trigger::Command, false, &CancellationToken::new())
            .unwrap();
        assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
        let (pointer, _) = published(&config.storage.dir).expect("the manifest the pointer names");
        assert_eq!(pointer.run_id, record.id);
    }
    assert_views_match_reference(&world, &messages);
}
