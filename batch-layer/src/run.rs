//! One batch run: read the archive manifests, choose the coverage (each partition's archived
//! end, rounded down to a segment boundary), compute every view (incrementally on top of the
//! previous snapshot when that is possible), write the snapshot and publish it atomically.
//! Nothing is published unless every view succeeded; the previous snapshot stays in service.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use braid_shared::coverage::SnapshotPointer;
use braid_shared::{Config, Coverage, TopicPartition};
use braid_store::manifest::{
    PartitionManifest, SNAPSHOT_MANIFEST_VERSION, SnapshotLayer, SnapshotManifest, ViewSnapshot,
    fingerprint_hex, read_archive_manifests,
};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::files::{create_all, parquet_bytes};
use crate::metrics;
use braid_columnar::recompute::{self, files_between};
use braid_store::lease;
use braid_store::pointer::{pointer_version, publish_pointer, read_pointer};
use braid_store::storage::Version;
use braid_store::{History, RunRecord, RunState, Storage, Trigger, ViewRun, layout, now_rfc3339};

/// Runs recomputes for one configuration.
#[derive(Clone)]
pub struct BatchRunner {
    pub(crate) config: Arc<Config>,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) history: History,
}

impl BatchRunner {
    /// A runner of `config`'s views over the archive in `storage`.
    pub fn new(config: &Config, storage: Arc<dyn Storage>) -> Result<Self> {
        for source in &config.sources {
            crate::archive::check_field_names(source)?;
        }
        Ok(Self {
            config: Arc::new(config.clone()),
            history: History::new(Arc::clone(&storage)),
            storage,
        })
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Runs one recompute now and returns its record (also when it failed: the record says
    /// why). Fails without a record only when another run holds the lock.
    pub fn run(
        &self,
        trigger: Trigger,
        full: bool,
        cancel: &CancellationToken,
    ) -> Result<RunRecord> {
        let record = RunRecord::queued(self.history.new_id(), trigger, full);
        self.history.save(&record)?;
        self.run_queued(record, cancel)
    }

    /// Runs a recompute recorded as queued.
    pub fn run_queued(
        &self,
        mut record: RunRecord,
        cancel: &CancellationToken,
    ) -> Result<RunRecord> {
        let lease = match lease::acquire(Arc::clone(&self.storage), &record.id) {
            Ok(lease) => lease,
            Err(error) => {
                let error = Error::from(error);
                record.state = RunState::Failed;
                record.finished_at = Some(now_rfc3339());
                record.error = Some(error.to_string());
                self.history.save(&record)?;
                return Err(error);
            }
        };
        self.history.mark_interrupted(&record.id)?;
        record.state = RunState::Running;
        record.started_at = Some(now_rfc3339());
        self.history.save(&record)?;
        let started = Instant::now();
        tracing::info!(run = %record.id, full = record.full, "batch run started");
        let outcome = self.execute(&mut record, &lease, cancel);
        let seconds = started.elapsed().as_secs_f64();
        self.finish_run(record, outcome, seconds, lease)
    }

    /// Records how a run ended, after `seconds`: published (old snapshots removed) or failed
    /// (the previous snapshot stays, the run's files go). Then prunes the history and releases
    /// the lease.
    pub(crate) fn finish_run(
        &self,
        mut record: RunRecord,
        outcome: Result<()>,
        seconds: f64,
        lease: lease::Lease,
    ) -> Result<RunRecord> {
        record.finished_at = Some(now_rfc3339());
        record.duration_ms = Some((seconds * 1000.0) as u64);
        record.rows_per_second = (seconds > 0.0).then(|| record.rows_read as f64 / seconds);
        match outcome {
            Ok(()) => {
                record.state = RunState::Succeeded;
                metrics::run_finished("succeeded", seconds, record.rows_read);
                tracing::info!(run = %record.id, rows = record.rows_read, seconds, shards = record.shards, "batch run published");
                if let Err(error) = self.remove_old_snapshots(&record.id) {
                    tracing::warn!(%error, "removing old snapshots failed");
                }
            }
            Err(error) => {
                record.state = RunState::Failed;
                record.error = Some(error.to_string());
                metrics::run_finished("failed", seconds, record.rows_read);
                tracing::error!(run = %record.id, %error, "batch run failed; the previous snapshot stays published");
                // Nothing points at the run's files: they go (unless the pointer names the run
                // after all, its write's answer lost, or cannot be read to tell).
                if self.is_published(&record.id) {
                    tracing::warn!(run = %record.id, "the failed run's files stay: the pointer names it or cannot be read");
                } else if let Err(error) = self.remove_run(&record.id) {
                    tracing::warn!(run = %record.id, %error, "removing the failed run's files failed");
                }
            }
        }
        self.history.save(&record)?;
        self.history.prune()?;
        lease.release()?;
        Ok(record)
    }

    fn execute(
        &self,
        record: &mut RunRecord,
        lease: &lease::Lease,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let storage = self.storage.as_ref();
        // Published over at the end: a run that another run beat to it fails, never overwrites.
        let pointer_held = pointer_version(storage)?;
        let previous = self.previous_snapshot().map(|(_, manifest)| manifest);
        let manifests = self.archive_manifests()?;
        let coverage = target_coverage(&manifests, self.config.speed.segment_size);
        check_not_behind(previous.as_ref(), &coverage)?;
        record.coverage = Some(coverage.clone());
        let mut planned = self.plan(record.full, previous.as_ref(), &manifests, &coverage)?;
        let run_id = record.id.clone();
        self.compute(&mut planned, false, cancel, |p, mut computed| {
            let key = format!("batch/snapshots/{run_id}/{}.parquet", p.view.name);
            let (cells, bytes) = write_cells(storage, &key, &mut computed.cells)?;
            p.add_layer(&run_id, key, &coverage, cells, bytes);
            Ok(())
        })?;
        self.publish(
            record,
            planned,
            coverage,
            lease,
            pointer_held.as_ref(),
            cancel,
        )
    }

    /// Every topic's archive manifests.
    pub(crate) fn archive_manifests(&self) -> Result<Vec<PartitionManifest>> {
        let mut manifests = Vec::new();
        for topic in self.config.topics() {
            manifests.extend(read_archive_manifests(self.storage.as_ref(), topic)?);
        }
        Ok(manifests)
    }

    /// Plans every view over the archive files of `manifests` up to `coverage`: incremental
    /// on top of the previous snapshot's layers, or full.
    pub(crate) fn plan(
        &self,
        full: bool,
        previous: Option<&SnapshotManifest>,
        manifests: &[PartitionManifest],
        coverage: &Coverage,
    ) -> Result<Vec<Planned>> {
        let storage = self.storage.as_ref();
        let mut planned = Vec::new();
        for view in &self.config.views {
            let source = self
                .config
                .source(&view.source)
                .ok_or_else(|| Error::Internal(format!("view {} without source", view.name)))?;
            let fingerprint = fingerprint_hex(view.fingerprint());
            let base = match previous {
                _ if full => Err("--full was asked for".to_owned()),
                None => Err("no previous snapshot".to_owned()),
                Some(before) => match before.views.get(&view.name) {
                    None => Err("the view is new".to_owned()),
                    Some(v) if v.fingerprint != fingerprint => {
                        Err("the view's definition changed".to_owned())
                    }
                    Some(v) if v.layers.len() >= self.config.batch.max_layers => Err(format!(
                        "{} layers reached batch.max_layers",
                        v.layers.len()
                    )),
                    Some(v) => Ok((before.coverage.clone(), v.layers.clone())),
                },
            };
            let (from, layers, reason) = match base {
                Ok((from, layers)) => (from, layers, None),
                Err(reason) => (Coverage::default(), Vec::new(), Some(reason)),
            };
            let files = files_between(storage, source, manifests, (&from, coverage), None)?;
            let mode = match (&reason, files.is_empty()) {
                (Some(_), _) => "full",
                (None, true) => "unchanged",
                (None, false) => "incremental",
            };
            planned.push(Planned {
                view: Arc::clone(view),
                source: Arc::clone(source),
                from,
                layers,
                files,
                run: ViewRun {
                    mode: mode.to_owned(),
                    reason,
                    rows_read: 0,
                    cells_written: 0,
                    layers: 0,
                    duration_ms: 0,
                },
            });
        }
        Ok(planned)
    }

    /// Computes the planned views that have files to read, handing each view's cells (per
    /// partition with `per_partition`, see [`recompute::compute_partitions`]) to `write`.
    /// Views of one source reading the same offsets are computed together: Polars scans their
    /// files once.
    pub(crate) fn compute(
        &self,
        planned: &mut [Planned],
        per_partition: bool,
        cancel: &CancellationToken,
        mut write: impl FnMut(&mut Planned, recompute::Computed) -> Result<()>,
    ) -> Result<()> {
        let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        for (i, p) in planned.iter().enumerate() {
            if !p.files.is_empty() {
                let from = serde_json::to_string(&p.from).unwrap_or_default();
                groups
                    .entry((p.source.name.clone(), from))
                    .or_default()
                    .push(i);
            }
        }
        for members in groups.values() {
            if cancel.is_cancelled() {
                return Err(Error::Internal(
                    "cancelled before every view was computed".into(),
                ));
            }
            let started = Instant::now();
            let (source, files) = {
                let first = &planned[members[0]];
                (first.source.clone(), first.files.clone())
            };
            let group_views: Vec<Arc<braid_shared::ViewDef>> = members
                .iter()
                .map(|&i| Arc::clone(&planned[i].view))
                .collect();
            // Each view's cells are written as soon as they are encoded, while the next are.
            recompute::compute_each(
                &group_views,
                &source,
                &files,
                !per_partition,
                |member, computed| -> Result<()> {
                    let p = &mut planned[members[member]];
                    p.run.rows_read = computed.rows;
                    if computed.cells.height() > 0 {
                        write(p, computed)?;
                    }
                    p.run.duration_ms = started.elapsed().as_millis() as u64;
                    Ok(())
                },
            )?;
        }
        Ok(())
    }

    /// Writes the snapshot manifest of the planned views and publishes it over the pointer
    /// version `pointer_held`, if the run still holds its lease.
    pub(crate) fn publish(
        &self,
        record: &mut RunRecord,
        planned: Vec<Planned>,
        coverage: Coverage,
        lease: &lease::Lease,
        pointer_held: Option<&Version>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let storage = self.storage.as_ref();
        let mut views = BTreeMap::new();
        for mut p in planned {
            p.run.layers = p.layers.len();
            record.rows_read += p.run.rows_read;
            tracing::info!(view = %p.view.name, mode = %p.run.mode, rows = p.run.rows_read, cells = p.run.cells_written, ms = p.run.duration_ms, "view computed");
            metrics::snapshot_cells(&p.view.name, p.layers.iter().map(|l| l.cells).sum());
            record.views.insert(p.view.name.clone(), p.run);
            views.insert(
                p.view.name.clone(),
                ViewSnapshot {
                    fingerprint: fingerprint_hex(p.view.fingerprint()),
                    layers: p.layers,
                },
            );
        }
        let manifest = SnapshotManifest {
            version: SNAPSHOT_MANIFEST_VERSION,
            run_id: record.id.clone(),
            created_at: now_rfc3339(),
            coverage: coverage.clone(),
            views,
        };
        // The cell files are durable: each put returned.
        let manifest_key = manifest.write(storage)?;
        if cancel.is_cancelled() {
            return Err(Error::Internal("cancelled before publishing".into()));
        }
        let pointer = SnapshotPointer {
            run_id: record.id.clone(),
            coverage,
            finished_at: now_rfc3339(),
            manifest: manifest_key,
        };
        // A run paused past its lease, which another run took meanwhile, stops here.
        lease.confirm()?;
        if let Err(error) = publish_pointer(storage, &pointer, pointer_held) {
            // A write whose answer was lost may still have happened: the pointer tells.
            if !self.is_published(&record.id) {
                return Err(error.into());
            }
            tracing::warn!(run = %record.id, %error, "publishing reported an error, yet the pointer names this run: it is published");
        }
        Ok(())
    }

    /// Whether the pointer names `run`; an unreadable pointer counts as naming it, so that a
    /// run whose files might be published is never removed.
    fn is_published(&self, run: &str) -> bool {
        match read_pointer(self.storage.as_ref()) {
            Ok(pointer) => pointer.is_some_and(|p| p.run_id == run),
            Err(_) => true,
        }
    }

    /// The published snapshot, if it can be read; an unreadable one means a full recompute.
    pub(crate) fn previous_snapshot(&self) -> Option<(SnapshotPointer, SnapshotManifest)> {
        let pointer = match read_pointer(self.storage.as_ref()) {
            Ok(pointer) => pointer?,
            Err(error) => {
                tracing::warn!(%error, "the published snapshot pointer is unreadable; recomputing in full");
                return None;
            }
        };
        match SnapshotManifest::read(self.storage.as_ref(), &pointer.manifest) {
            Ok(manifest) => Some((pointer, manifest)),
            Err(error) => {
                tracing::warn!(%error, "the published snapshot is unreadable; recomputing in full");
                None
            }
        }
    }

    /// Keeps the newest `keep_snapshots` snapshots and every run's files their layers use.
    pub(crate) fn remove_old_snapshots(&self, current: &str) -> Result<()> {
        let storage = self.storage.as_ref();
        let listed = storage
            .list(&format!("{}/", layout::SNAPSHOTS))
            .map_err(braid_store::Error::from)?;
        let run_of = |key: &str| {
            key.strip_prefix(layout::SNAPSHOTS)
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(|rest| rest.split('/').next())
                .map(str::to_owned)
        };
        let runs: BTreeSet<String> = listed.iter().filter_map(|l| run_of(&l.key)).collect();
        let keys: HashSet<&str> = listed.iter().map(|l| l.key.as_str()).collect();
        let published: Vec<&String> = runs
            .iter()
            .rev()
            .filter(|r| *r == current || keys.contains(layout::snapshot_manifest(r).as_str()))
            .filter(|r| r.as_str() <= current)
            .take(self.config.batch.keep_snapshots)
            .collect();
        let mut keep: HashSet<String> = HashSet::new();
        for run in &published {
            keep.insert((*run).clone());
            let key = layout::snapshot_manifest(run);
            if let Ok(manifest) = SnapshotManifest::read(storage, &key) {
                for view in manifest.views.values() {
                    keep.extend(view.layers.iter().map(|l| l.run_id.clone()));
                }
            }
        }
        for run in runs.iter().filter(|r| !keep.contains(*r)) {
            // Newer runs belong to no one yet (we hold the run lease, so none is being
            // written); older ones are past retention.
            if run.as_str() > current {
                continue;
            }
            self.remove_run(run)?;
            tracing::info!(run = %run, "removed an old snapshot");
        }
        Ok(())
    }

    /// Deletes every file of a run's snapshot, its manifest last.
    pub(crate) fn remove_run(&self, run: &str) -> Result<()> {
        let storage = self.storage.as_ref();
        let mut keys: Vec<String> = storage
            .list(&format!("{}/", layout::snapshot(run)))
            .map_err(braid_store::Error::from)?
            .into_iter()
            .map(|l| l.key)
            .collect();
        let manifest = layout::snapshot_manifest(run);
        keys.sort_by_key(|k| *k == manifest);
        for key in keys {
            storage.delete(&key).map_err(braid_store::Error::from)?;
        }
        Ok(())
    }
}

/// One view of a run: what it reads and the layers it publishes.
pub(crate) struct Planned {
    pub(crate) view: Arc<braid_shared::ViewDef>,
    pub(crate) source: Arc<braid_shared::SourceDef>,
    /// The coverage its new layer starts at (the previous snapshot's, or nothing: full).
    pub(crate) from: Coverage,
    pub(crate) layers: Vec<SnapshotLayer>,
    pub(crate) files: Vec<recompute::ScanFile>,
    pub(crate) run: ViewRun,
}

impl Planned {
    /// Adds the layer of cells this run wrote at `key`.
    pub(crate) fn add_layer(
        &mut self,
        run_id: &str,
        key: String,
        to: &Coverage,
        cells: u64,
        bytes: u64,
    ) {
        self.run.cells_written = cells;
        self.layers.push(SnapshotLayer {
            run_id: run_id.to_owned(),
            path: key,
            from: self.from.clone(),
            to: to.clone(),
            cells,
            rows: self.run.rows_read,
            bytes,
        });
    }
}

/// Writes a cell frame as a Parquet object at `key` (created once); returns its cells and
/// bytes.
pub(crate) fn write_cells(
    storage: &dyn Storage,
    key: &str,
    cells: &mut polars::prelude::DataFrame,
) -> Result<(u64, u64)> {
    let started = Instant::now();
    let file = parquet_bytes(cells)?;
    let bytes = file.len() as u64;
    create_all(storage, &[(key.to_owned(), file)])?;
    tracing::debug!(
        key,
        ms = started.elapsed().as_millis(),
        bytes,
        "cells written"
    );
    Ok((cells.height() as u64, bytes))
}

/// Fails when the archive ends below the coverage `previous` published (moved or truncated).
pub(crate) fn check_not_behind(
    previous: Option<&SnapshotManifest>,
    coverage: &Coverage,
) -> Result<()> {
    if let Some(before) = previous {
        for (tp, &covered) in &before.coverage.0 {
            let archived = coverage.of(tp);
            if archived < covered {
                return Err(Error::ArchiveBehindSnapshot {
                    tp: tp.clone(),
                    archived,
                    covered,
                });
            }
        }
    }
    Ok(())
}

/// Per partition, the archived end rounded down to a segment boundary (partitions with no whole
/// segment archived are left out: covered below 0).
pub fn target_coverage(manifests: &[PartitionManifest], segment_size: u64) -> Coverage {
    let segment = i64::try_from(segment_size).unwrap_or(i64::MAX).max(1);
    let mut coverage = BTreeMap::new();
    for manifest in manifests {
        if let Some(end) = manifest.end() {
            let aligned = end - end.rem_euclid(segment);
            if aligned > 0 {
                coverage.insert(
                    TopicPartition::new(manifest.topic.clone(), manifest.partition),
                    aligned,
                );
            }
        }
    }
    Coverage(coverage)
}
