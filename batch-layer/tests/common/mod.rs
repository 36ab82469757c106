//! Batch-layer test support on top of `braid_testkit`: reading the archive back, waiting for the
//! archiver, the reference below a coverage, and reading a published snapshot.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use braid_batch::ArchiveHandle;
use braid_columnar::columns::{ColumnType, EVENT_TIME, OFFSET, PARTITION, ValueReader};
use braid_shared::coverage::SnapshotPointer;
use braid_shared::{Config, Coverage, Decoder, Event, TopicPartition, Value, ViewState};
use braid_store::LocalStorage;
use braid_store::manifest::{FileKind, SnapshotManifest, read_archive_manifests};
use braid_store::pointer::read_pointer;
pub use braid_testkit::*;
use polars::prelude::*;

/// What the archive holds for one offset.
#[derive(Debug, Clone, PartialEq)]
pub enum Archived {
    Event(Event),
    Rejected(String),
}

/// Reads every archived row of `topic` through the manifests, checking that each row lies in
/// its entry's range and that no offset appears twice.
pub fn read_archive(config: &Config, topic: &str) -> BTreeMap<(i32, i64), Archived> {
    let dir = &config.storage.dir;
    let source = config.sources.iter().find(|s| s.topic == topic).unwrap();
    let mut rows = BTreeMap::new();
    for manifest in read_archive_manifests(&LocalStorage::new(dir), topic).unwrap() {
        for entry in &manifest.entries {
            for file in &entry.files {
                let df = ParquetReader::new(std::fs::File::open(dir.join(&file.path)).unwrap())
                    .finish()
                    .unwrap();
                assert_eq!(df.height() as u64, file.rows, "{}", file.path);
                let partitions = df.column(PARTITION).unwrap().i32().unwrap().clone();
                let offsets = df.column(OFFSET).unwrap().i64().unwrap().clone();
                let decoded: Vec<Archived> = match file.kind {
                    FileKind::Events => {
                        let times = df.column(EVENT_TIME).unwrap().i64().unwrap().clone();
                        let fields: Vec<Vec<Value>> = source
                            .fields
                            .iter()
                            .map(|f| {
                                ValueReader::new(
                                    df.column(&f.name).unwrap(),
                                    ColumnType::of(f.kind),
                                )
                                .unwrap()
                                .values()
                                .unwrap()
                            })
                            .collect();
                        (0..df.height())
                            .map(|i| {
                                Archived::Event(Event {
                                    time_ms: times.get(i).unwrap(),
                                    values: fields.iter().map(|f| f[i].clone()).collect(),
                                })
                            })
                            .collect()
                    }
                    FileKind::Rejected => df
                        .column("reason")
                        .unwrap()
                        .str()
                        .unwrap()
                        .iter()
                        .map(|r| Archived::Rejected(r.unwrap().to_owned()))
                        .collect(),
                };
                for (i, row) in decoded.into_iter().enumerate() {
                    let partition = partitions.get(i).unwrap();
                    let offset = offsets.get(i).unwrap();
                    assert_eq!(partition, manifest.partition);
                    assert!(
                        (entry.from..entry.to).contains(&offset),
                        "offset {offset} outside its entry [{}, {})",
                        entry.from,
                        entry.to
                    );
                    let previous = rows.insert((partition, offset), row);
                    assert!(
                        previous.is_none(),
                        "offset {partition}/{offset} archived twice"
                    );
                }
            }
        }
    }
    rows
}

/// What the archive must hold: every produced message, decoded as the source does.
pub fn expected_archive(
    config: &Config,
    partitions: &[Vec<Vec<u8>>],
) -> BTreeMap<(i32, i64), Archived> {
    let decoder = Decoder::new(&config.sources[0]);
    let mut rows = BTreeMap::new();
    for (p, messages) in partitions.iter().enumerate() {
        for (offset, bytes) in messages.iter().enumerate() {
            let row = match decoder.decode(bytes) {
                Ok(event) => Archived::Event(event),
                Err(reason) => Archived::Rejected(reason.code().to_owned()),
            };
            rows.insert((p as i32, offset as i64), row);
        }
    }
    rows
}

/// Compares the archive with the expectation, naming the first difference.
pub fn assert_archive(
    got: &BTreeMap<(i32, i64), Archived>,
    expected: &BTreeMap<(i32, i64), Archived>,
) {
    for (key, want) in expected {
        match got.get(key) {
            None => panic!("offset {key:?} is missing from the archive"),
            Some(row) => assert_eq!(row, want, "offset {key:?}"),
        }
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "the archive holds offsets never produced"
    );
}

/// Waits until the archiver has published every message of every partition.
pub fn wait_archived(handle: &ArchiveHandle, topic: &str, counts: &[usize], timeout: Duration) {
    wait_for("the archiver to catch up", timeout, || {
        let archived = handle.archived();
        counts.iter().enumerate().all(|(p, &n)| {
            archived
                .get(&TopicPartition::new(topic, p as i32))
                .copied()
                .unwrap_or(-1)
                >= n as i64
        })
    });
}

/// The reference state of `view` over the events below `coverage` in each partition.
pub fn reference_below(
    config: &Config,
    view: &str,
    partitions: &[Vec<Vec<u8>>],
    topic: &str,
    coverage: &Coverage,
) -> ViewState {
    reference_of(config, view, partitions, |p, _| {
        0..coverage.of(&TopicPartition::new(topic, p as i32)) as usize
    })
}

/// The published pointer and manifest.
pub fn published(dir: &Path) -> Option<(SnapshotPointer, SnapshotManifest)> {
    let storage = LocalStorage::new(dir);
    let pointer = read_pointer(&storage).unwrap()?;
    let manifest = SnapshotManifest::read(&storage, &pointer.manifest).unwrap();
    Some((pointer, manifest))
}

/// A view of the published snapshot.
pub fn published_view(config: &Config, view: &str) -> ViewState {
    let (_, manifest) = published(&config.storage.dir).expect("a published snapshot");
    let view = Arc::clone(config.view(view).unwrap());
    let source = config.source(&view.source).unwrap();
    braid_columnar::snapshot::read_view(
        &LocalStorage::new(&config.storage.dir),
        &manifest,
        &view,
        source,
    )
    .unwrap()
    .expect("the view is in the snapshot")
}
