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
use braid_store::lease;
use braid_store::pointer::{pointer_version, publish_pointer, read_pointer};
use braid_store::recompute::{self, files_between};
use braid_store::{History, RunRecord, RunState, Storage, Trigger, ViewRun, layout, now_rfc3339};

/// Runs recomputes for one configuration.
#[derive(Clone)]
pub struct BatchRunner {
    config: Arc<Config>,
    storage: Arc<dyn Storage>,
    history: History,
}

impl BatchRunner {
    pub fn new(config: &Config) -> Result<Self> {
        for source in &config.sources {
            crate::archive::check_field_names(source)?;
        }
        let storage = braid_store::open(&config.storage).map_err(Error::OpenStorage)?;
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
        record.finished_at = Some(now_rfc3339());
        record.duration_ms = Some((seconds * 1000.0) as u64);
        record.rows_per_second = (seconds > 0.0).then(|| record.rows_read as f64 / seconds);
        match outcome {
            Ok(()) => {
                record.state = RunState::Succeeded;
                metrics::run_finished("succeeded", seconds, record.rows_read);
                tracing::info!(run = %record.id, rows = record.rows_read, seconds, "batch run published");
                if let Err(error) = self.remove_old_snapshots(&record.id) {
                    tracing::warn!(%error, "removing old snapshots failed");
                }
            }
            Err(error) => {
                record.state = RunState::Failed;
                record.error = Some(error.to_string());
                metrics::run_finished("failed", seconds, record.rows_read);
                tracing::error!(run = %record.id, %error, "batch run failed; the previous snapshot stays published");
                // Nothing points at the run's files: they go.
                if let Err(error) = self.remove_run(&record.id) {
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
        let previous = self.previous_snapshot();
        let mut manifests: Vec<PartitionManifest> = Vec::new();
        for topic in self.config.topics() {
            manifests.extend(read_archive_manifests(storage, topic)?);
        }
        let coverage = target_coverage(&manifests, self.config.speed.segment_size);
        if let Some((_, before)) = &previous {
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
        record.coverage = Some(coverage.clone());
        // Plan every view: incremental on top of the previous layers, or full.
        struct Planned<'a> {
            view: &'a Arc<braid_shared::ViewDef>,
            source: &'a Arc<braid_shared::SourceDef>,
            from: Coverage,
            layers: Vec<SnapshotLayer>,
            files: Vec<recompute::ScanFile>,
            run: ViewRun,
        }
        let mut planned = Vec::new();
        for view in &self.config.views {
            let source = self
                .config
                .source(&view.source)
                .ok_or_else(|| Error::Internal(format!("view {} without source", view.name)))?;
            let fingerprint = fingerprint_hex(view.fingerprint());
            let base = match &previous {
                _ if record.full => Err("--full was asked for".to_owned()),
                None => Err("no previous snapshot".to_owned()),
                Some((_, before)) => match before.views.get(&view.name) {
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
            let files = files_between(storage, source, &manifests, (&from, &coverage), None)?;
            let mode = match (&reason, files.is_empty()) {
                (Some(_), _) => "full",
                (None, true) => "unchanged",
                (None, false) => "incremental",
            };
            planned.push(Planned {
                view,
                source,
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
        // Views of one source reading the same offsets are computed together: Polars scans
        // their files once.
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
            let first = &planned[members[0]];
            let group_views: Vec<Arc<braid_shared::ViewDef>> = members
                .iter()
                .map(|&i| Arc::clone(planned[i].view))
                .collect();
            let computed = recompute::compute_all(&group_views, first.source, &first.files)?;
            let compute_ms = started.elapsed().as_millis() as u64;
            for (&i, computed) in members.iter().zip(computed) {
                let p = &mut planned[i];
                let Some(mut computed) = computed else {
                    continue;
                };
                let writing = Instant::now();
                p.run.rows_read = computed.rows;
                record.rows_read += computed.rows;
                let cells = computed.cells.height() as u64;
                if cells > 0 {
                    let rel = format!("batch/snapshots/{}/{}.parquet", record.id, p.view.name);
                    let file = parquet_bytes(&mut computed.cells)?;
                    let bytes = file.len() as u64;
                    create_all(storage, &[(rel.clone(), file)])?;
                    tracing::debug!(view = %p.view.name, ms = writing.elapsed().as_millis(), bytes, "cells written");
                    p.run.cells_written = cells;
                    p.layers.push(SnapshotLayer {
                        run_id: record.id.clone(),
                        path: rel,
                        from: p.from.clone(),
                        to: coverage.clone(),
                        cells,
                        rows: computed.rows,
                        bytes,
                    });
                }
                p.run.duration_ms = compute_ms + writing.elapsed().as_millis() as u64;
            }
        }
        let mut views = BTreeMap::new();
        for mut p in planned {
            p.run.layers = p.layers.len();
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
        publish_pointer(storage, &pointer, pointer_held.as_ref())?;
        Ok(())
    }

    /// The published snapshot, if it can be read; an unreadable one means a full recompute.
    fn previous_snapshot(&self) -> Option<(SnapshotPointer, SnapshotManifest)> {
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
    fn remove_old_snapshots(&self, current: &str) -> Result<()> {
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
    fn remove_run(&self, run: &str) -> Result<()> {
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
