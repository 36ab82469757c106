//! Sharded batch runs: `braid batch --shards N --shard I` computes the cells of one shard's
//! partitions, per partition; once every shard has, one merge (the last shard to finish, or
//! `braid batch --merge`) folds them in partition order and publishes one snapshot, cell for
//! cell the one an unsplit run publishes (an unsplit run folds the same per-partition cells in
//! the same order, see `braid_columnar::recompute`).
//!
//! Shards agree through storage alone. The first to start creates the run's plan,
//! `batch/sharded/<run>/run.json` (create-once): the run id, the shard count, the coverage and
//! the snapshot it builds on. The others read it. Partitions are dealt out in order: the
//! `i`-th partition of the coverage belongs to shard `i mod N`. A shard writes its cells under
//! a token of its own and creates `shard-<I>.json` listing them (create-once, so of two
//! attempts at one shard one counts and the other's files go). The merge takes the run lease,
//! publishes over the pointer version the plan recorded (a run published meanwhile makes it
//! fail, never overwritten) and removes the shards' files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_columnar::recompute;
use braid_shared::{Coverage, TopicPartition};
use braid_store::manifest::SnapshotManifest;
use braid_store::pointer::{pointer_version, read_pointer};
use braid_store::storage::{Put, Version};
use braid_store::{RunRecord, RunState, Trigger, layout, lease, now_rfc3339};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::files::{read_parquet, writer_token};
use crate::run::{BatchRunner, check_not_behind, target_coverage, write_cells};

/// Where sharded runs keep their plans and shard outputs.
const SHARDED: &str = "batch/sharded";

/// How long a merge waits for the run lease another run holds.
const LEASE_WAIT: Duration = Duration::from_secs(600);

/// One shard of a sharded run.
#[derive(Debug, Clone)]
pub struct Shard {
    /// The run's name, the same for every shard (a Kubernetes Job's name, say).
    pub run: String,
    pub shards: u32,
    pub index: u32,
}

/// What a shard or a merge did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ShardOutcome {
    /// This shard's cells are stored; the run waits for the other shards.
    Waiting {
        run: String,
        run_id: String,
        done: Vec<u32>,
        waiting_for: Vec<u32>,
    },
    /// Every shard was done and the run was merged (here or by another process): the run's
    /// record says whether it was published.
    Merged { run: String, record: RunRecord },
}

/// The plan every shard of a run follows: `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Plan {
    run: String,
    run_id: String,
    shards: u32,
    full: bool,
    coverage: Coverage,
    /// The published snapshot's manifest the run builds on.
    base: Option<String>,
    /// The pointer's version when the run was planned: the merge publishes over it.
    pointer_version: Option<String>,
    created_at: String,
}

/// A shard's output: `shard-<I>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShardDone {
    shard: u32,
    partitions: Vec<TopicPartition>,
    /// Per view computed, its per-partition cell file.
    views: BTreeMap<String, ShardCells>,
    finished_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShardCells {
    key: String,
    rows: u64,
    partition_cells: u64,
}

fn plan_key(run: &str) -> String {
    format!("{SHARDED}/{run}/run.json")
}

fn shard_key(run: &str, shard: u32) -> String {
    format!("{SHARDED}/{run}/shard-{shard}.json")
}

/// Checks a run name: it becomes part of storage keys.
pub fn check_run_name(run: &str) -> Result<()> {
    let fine = !run.is_empty()
        && run.len() <= 128
        && !run.starts_with('.')
        && run
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fine {
        Ok(())
    } else {
        Err(Error::BadShardedRun(format!(
            "run name {:?}: use 1 to 128 letters, digits, '-', '_' or '.', not starting with '.'",
            run.chars().take(64).collect::<String>()
        )))
    }
}

impl BatchRunner {
    /// The run name shards use when none is given: the published snapshot they build on, so
    /// that shards started against the same snapshot agree.
    pub fn default_shard_run(&self, shards: u32, full: bool) -> Result<String> {
        let after = read_pointer(self.storage.as_ref())?
            .map(|p| p.run_id)
            .unwrap_or_else(|| "nothing".to_owned());
        let full = if full { "-full" } else { "" };
        Ok(format!("after-{after}-{shards}-shards{full}"))
    }

    /// Computes one shard of a sharded run; merges the run when every shard is done.
    pub fn run_shard(
        &self,
        shard: &Shard,
        full: bool,
        cancel: &CancellationToken,
    ) -> Result<ShardOutcome> {
        check_run_name(&shard.run)?;
        if shard.shards == 0 || shard.index >= shard.shards {
            return Err(Error::BadShardedRun(format!(
                "shard {} of {}: shards are numbered 0 to N-1",
                shard.index, shard.shards
            )));
        }
        let plan = self.plan_or_join(shard, full)?;
        let storage = self.storage.as_ref();
        let done_key = shard_key(&shard.run, shard.index);
        if storage.get(&done_key)?.is_some() {
            tracing::info!(run = %plan.run_id, shard = shard.index, "this shard was done already");
        } else {
            self.compute_shard(&plan, shard.index, &done_key, cancel)?;
        }
        let (done, missing) = self.shards_done(&plan)?;
        if !missing.is_empty() {
            return Ok(ShardOutcome::Waiting {
                run: plan.run,
                run_id: plan.run_id,
                done: done.keys().copied().collect(),
                waiting_for: missing,
            });
        }
        self.merge_plan(plan, done, cancel)
    }

    /// Merges a sharded run whose shards are all done, and publishes it.
    pub fn merge_shards(&self, run: &str, cancel: &CancellationToken) -> Result<ShardOutcome> {
        check_run_name(run)?;
        let plan = self.read_plan(run)?.ok_or_else(|| {
            Error::BadShardedRun(format!(
                "no sharded run {run:?} was started (no {} in storage)",
                plan_key(run)
            ))
        })?;
        let (done, missing) = self.shards_done(&plan)?;
        if !missing.is_empty() {
            return Err(Error::BadShardedRun(format!(
                "sharded run {run:?} ({}) is not complete: shards {missing:?} of {} are not done",
                plan.run_id, plan.shards
            )));
        }
        self.merge_plan(plan, done, cancel)
    }

    fn read_plan(&self, run: &str) -> Result<Option<Plan>> {
        let key = plan_key(run);
        let Some(object) = self.storage.get(&key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&object.bytes)
            .map(Some)
            .map_err(|e| {
                Error::BadShardedRun(format!("the plan of run {run:?} is unreadable: {e}"))
            })
    }

    /// The run's plan: read, or created by this shard if it is the first.
    fn plan_or_join(&self, shard: &Shard, full: bool) -> Result<Plan> {
        let plan = match self.read_plan(&shard.run)? {
            Some(plan) => plan,
            None => {
                let storage = self.storage.as_ref();
                let held = pointer_version(storage)?;
                let base = self.previous_snapshot();
                let manifests = self.archive_manifests()?;
                let coverage = target_coverage(&manifests, self.config.speed.segment_size);
                check_not_behind(base.as_ref().map(|(_, m)| m), &coverage)?;
                let plan = Plan {
                    run: shard.run.clone(),
                    run_id: self.history.new_id(),
                    shards: shard.shards,
                    full,
                    coverage,
                    base: base.map(|(pointer, _)| pointer.manifest),
                    pointer_version: held.map(|v| v.0),
                    created_at: now_rfc3339(),
                };
                let json = serde_json::to_vec_pretty(&plan)
                    .map_err(|e| Error::Internal(format!("encoding a run plan: {e}")))?;
                match storage
                    .put_if_absent(&plan_key(&shard.run), &json)
                    .map_err(braid_store::Error::from)?
                {
                    Put::Written(_) => {
                        let mut record =
                            RunRecord::queued(plan.run_id.clone(), Trigger::Command, full);
                        record.state = RunState::Running;
                        record.started_at = Some(plan.created_at.clone());
                        record.coverage = Some(plan.coverage.clone());
                        record.shards = Some(plan.shards);
                        self.history.save(&record)?;
                        tracing::info!(run = %plan.run_id, name = %plan.run, shards = plan.shards, "sharded batch run planned");
                        self.sweep_finished(&plan.run)?;
                        plan
                    }
                    // Another shard planned it first.
                    Put::Conflict => self.read_plan(&shard.run)?.ok_or_else(|| {
                        Error::Internal(format!("the plan of run {:?} vanished", shard.run))
                    })?,
                }
            }
        };
        if plan.shards != shard.shards || plan.full != full {
            return Err(Error::BadShardedRun(format!(
                "run {:?} was started with {} shards{}; this shard was asked for {} shards{}",
                plan.run,
                plan.shards,
                if plan.full { " and --full" } else { "" },
                shard.shards,
                if full { " and --full" } else { "" },
            )));
        }
        Ok(plan)
    }

    /// The partitions of the plan's coverage that belong to `shard`.
    fn partitions_of(plan: &Plan, shard: u32) -> Vec<TopicPartition> {
        plan.coverage
            .0
            .keys()
            .enumerate()
            .filter(|(i, _)| *i as u32 % plan.shards == shard)
            .map(|(_, tp)| tp.clone())
            .collect()
    }

    fn base_manifest(&self, plan: &Plan) -> Result<Option<SnapshotManifest>> {
        plan.base
            .as_ref()
            .map(|key| {
                SnapshotManifest::read(self.storage.as_ref(), key).map_err(|e| {
                    Error::BadShardedRun(format!(
                        "the snapshot run {:?} builds on is unreadable ({e}); start a new run",
                        plan.run
                    ))
                })
            })
            .transpose()
    }

    fn compute_shard(
        &self,
        plan: &Plan,
        shard: u32,
        done_key: &str,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let started = Instant::now();
        let storage = self.storage.as_ref();
        let partitions = Self::partitions_of(plan, shard);
        let base = self.base_manifest(plan)?;
        let manifests: Vec<_> = self
            .archive_manifests()?
            .into_iter()
            .filter(|m| partitions.contains(&m.topic_partition()))
            .collect();
        let mut planned = self.plan(plan.full, base.as_ref(), &manifests, &plan.coverage)?;
        let prefix = format!("{SHARDED}/{}/{shard}-{}", plan.run, writer_token());
        let mut written: Vec<String> = Vec::new();
        let mut views = BTreeMap::new();
        let outcome = self.compute(&mut planned, true, cancel, |p, mut computed| {
            let key = format!("{prefix}/{}.parquet", p.view.name);
            let (cells, _) = write_cells(storage, &key, &mut computed.cells)?;
            written.push(key.clone());
            views.insert(
                p.view.name.clone(),
                ShardCells {
                    key,
                    rows: computed.rows,
                    partition_cells: cells,
                },
            );
            Ok(())
        });
        let remove_written = |written: &[String]| {
            for key in written {
                if let Err(error) = storage.delete(key) {
                    tracing::warn!(key, %error, "removing a shard's cell file failed");
                }
            }
        };
        if let Err(error) = outcome {
            remove_written(&written);
            return Err(error);
        }
        let done = ShardDone {
            shard,
            partitions,
            views,
            finished_at: now_rfc3339(),
        };
        let json = serde_json::to_vec_pretty(&done)
            .map_err(|e| Error::Internal(format!("encoding a shard record: {e}")))?;
        match storage
            .put_if_absent(done_key, &json)
            .map_err(braid_store::Error::from)?
        {
            Put::Written(_) => {
                let rows: u64 = done.views.values().map(|v| v.rows).sum();
                tracing::info!(run = %plan.run_id, shard, partitions = done.partitions.len(), rows, seconds = started.elapsed().as_secs_f64(), "shard computed");
            }
            Put::Conflict => {
                tracing::info!(run = %plan.run_id, shard, "another attempt at this shard finished first; its cells count");
                remove_written(&written);
            }
        }
        Ok(())
    }

    /// The shards done (their records, by shard) and those not yet.
    fn shards_done(&self, plan: &Plan) -> Result<(BTreeMap<u32, ShardDone>, Vec<u32>)> {
        let mut done = BTreeMap::new();
        let mut missing = Vec::new();
        for shard in 0..plan.shards {
            let key = shard_key(&plan.run, shard);
            match self.storage.get(&key)? {
                Some(object) => {
                    let record: ShardDone = serde_json::from_slice(&object.bytes)
                        .map_err(|e| Error::BadShardedRun(format!("{key} is unreadable: {e}")))?;
                    done.insert(shard, record);
                }
                None => missing.push(shard),
            }
        }
        Ok((done, missing))
    }

    fn merge_plan(
        &self,
        plan: Plan,
        done: BTreeMap<u32, ShardDone>,
        cancel: &CancellationToken,
    ) -> Result<ShardOutcome> {
        let merged = |record: RunRecord| ShardOutcome::Merged {
            run: plan.run.clone(),
            record,
        };
        let final_record = |history: &braid_store::History| -> Option<RunRecord> {
            history
                .get(&plan.run_id)
                .ok()
                .filter(|r| matches!(r.state, RunState::Succeeded | RunState::Failed))
        };
        if let Some(record) = final_record(&self.history) {
            return Ok(merged(record));
        }
        // Another shard finishing at the same time merges too: one takes the lease, the other
        // waits for its record.
        let deadline = Instant::now() + LEASE_WAIT;
        let lease = loop {
            match lease::acquire(Arc::clone(&self.storage), &plan.run_id) {
                Ok(lease) => break lease,
                Err(braid_store::Error::RunBusy(holder)) => {
                    if let Some(record) = final_record(&self.history) {
                        return Ok(merged(record));
                    }
                    if Instant::now() > deadline || cancel.is_cancelled() {
                        return Err(braid_store::Error::RunBusy(holder).into());
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(error) => return Err(error.into()),
            }
        };
        if let Some(record) = final_record(&self.history) {
            lease.release()?;
            return Ok(merged(record));
        }
        self.history.mark_interrupted(&plan.run_id)?;
        let mut record = self.history.get(&plan.run_id).unwrap_or_else(|_| {
            let mut record = RunRecord::queued(plan.run_id.clone(), Trigger::Command, plan.full);
            record.started_at = Some(plan.created_at.clone());
            record
        });
        record.state = RunState::Running;
        record.shards = Some(plan.shards);
        record.coverage = Some(plan.coverage.clone());
        record.error = None;
        record.views.clear();
        record.rows_read = 0;
        self.history.save(&record)?;
        let started = Instant::now();
        tracing::info!(run = %plan.run_id, shards = plan.shards, "merging a sharded batch run");
        let outcome = self
            .merge_execute(&plan, &done, &mut record, &lease, cancel)
            .map_err(|error| {
                // A newer sharded run planned meanwhile sweeps this one's records and files:
                // that, not the file it happened to miss, is why the merge failed (found by
                // the torture suite: two sharded runs started 60 ms apart).
                match self.read_plan(&plan.run) {
                    Ok(None) => Error::BadShardedRun(format!(
                        "abandoned: a newer sharded run was planned before run {:?} was merged \
                         (start a new sharded run)",
                        plan.run
                    )),
                    _ => error,
                }
            });
        let seconds = chrono::DateTime::parse_from_rfc3339(&plan.created_at)
            .map(|t| (chrono::Utc::now() - t.to_utc()).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or_else(|_| started.elapsed().as_secs_f64());
        if outcome.is_ok() {
            self.remove_shard_files(&plan.run);
        }
        self.finish_run(record, outcome, seconds, lease).map(merged)
    }

    fn merge_execute(
        &self,
        plan: &Plan,
        done: &BTreeMap<u32, ShardDone>,
        record: &mut RunRecord,
        lease: &lease::Lease,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let storage = self.storage.as_ref();
        let base = self.base_manifest(plan)?;
        // Planned without archive files: the shards read them.
        let mut planned = self.plan(plan.full, base.as_ref(), &[], &plan.coverage)?;
        for p in &mut planned {
            if cancel.is_cancelled() {
                return Err(Error::Internal(
                    "cancelled before every view was merged".into(),
                ));
            }
            let started = Instant::now();
            let mut frames = Vec::new();
            let mut rows = 0;
            for shard in done.values() {
                if let Some(cells) = shard.views.get(&p.view.name) {
                    frames.push(read_parquet(storage, &cells.key)?);
                    rows += cells.rows;
                }
            }
            if frames.is_empty() {
                continue;
            }
            if p.run.reason.is_none() {
                p.run.mode = "incremental".to_owned();
            }
            let mut all = frames.remove(0);
            for frame in &frames {
                all.vstack_mut(frame)?;
            }
            let mut cells = recompute::fold_partitions(&p.view, all)?;
            p.run.rows_read = rows;
            if cells.height() > 0 {
                let key = format!("batch/snapshots/{}/{}.parquet", plan.run_id, p.view.name);
                let (count, bytes) = write_cells(storage, &key, &mut cells)?;
                p.add_layer(&plan.run_id, key, &plan.coverage, count, bytes);
            }
            p.run.duration_ms = started.elapsed().as_millis() as u64;
        }
        let held = plan.pointer_version.clone().map(Version);
        self.publish(
            record,
            planned,
            plan.coverage.clone(),
            lease,
            held.as_ref(),
            cancel,
        )
        .map_err(|error| match error {
            Error::Store(braid_store::Error::Conflict { key }) if key == layout::SNAPSHOT_POINTER => {
                Error::BadShardedRun(format!(
                    "another run published a snapshot after run {:?} was planned; its shards build on the one before, so it is not published (start a new sharded run)",
                    plan.run
                ))
            }
            other => other,
        })
    }

    /// Removes a merged run's shard cell files (its plan and shard records stay, so a late
    /// shard of it finds it done).
    fn remove_shard_files(&self, run: &str) {
        let prefix = format!("{SHARDED}/{run}/");
        let listed = match self.storage.list(&prefix) {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, "listing a sharded run's files failed");
                return;
            }
        };
        for object in listed.iter().filter(|o| o.key.ends_with(".parquet")) {
            if let Err(error) = self.storage.delete(&object.key) {
                tracing::warn!(key = %object.key, %error, "removing a shard's cell file failed");
            }
        }
    }

    /// Removes every sharded run but `current` whose record is final (succeeded or failed)
    /// or gone from the history; one still running is abandoned (marked failed) first: a
    /// newer sharded run was planned.
    fn sweep_finished(&self, current: &str) -> Result<()> {
        let listed = self
            .storage
            .list(&format!("{SHARDED}/"))
            .map_err(braid_store::Error::from)?;
        let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for object in listed {
            if let Some(run) = object
                .key
                .strip_prefix(&format!("{SHARDED}/"))
                .and_then(|rest| rest.split('/').next())
            {
                runs.entry(run.to_owned())
                    .or_default()
                    .push(object.key.clone());
            }
        }
        for (run, keys) in runs.into_iter().filter(|(run, _)| run != current) {
            let finished = match self.read_plan(&run) {
                Ok(Some(plan)) => match self.history.get(&plan.run_id) {
                    Ok(mut record)
                        if !matches!(record.state, RunState::Succeeded | RunState::Failed) =>
                    {
                        record.state = RunState::Failed;
                        record.finished_at = Some(now_rfc3339());
                        record.error = Some(format!(
                            "abandoned: sharded run {current:?} was planned before every shard of this one was done"
                        ));
                        self.history.save(&record)?;
                        true
                    }
                    _ => true,
                },
                _ => false,
            };
            if finished {
                for key in keys {
                    self.storage
                        .delete(&key)
                        .map_err(braid_store::Error::from)?;
                }
                tracing::info!(run, "removed a finished sharded run's records");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_that_would_escape_their_prefix_are_refused() {
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "x y",
            "é",
            &"a".repeat(129),
            "a\nb",
        ] {
            assert!(check_run_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["nightly-2026-12-03", "job_1.a", &"a".repeat(128)] {
            check_run_name(good).unwrap();
        }
    }

    #[test]
    fn partitions_are_dealt_out_to_shards_in_order() {
        let coverage = Coverage(
            (0..5)
                .map(|p| (TopicPartition::new("a", p), 100))
                .chain([(TopicPartition::new("b", 0), 100)])
                .collect(),
        );
        let plan = Plan {
            run: "r".into(),
            run_id: "run-1".into(),
            shards: 4,
            full: true,
            coverage,
            base: None,
            pointer_version: None,
            created_at: now_rfc3339(),
        };
        let dealt: Vec<Vec<TopicPartition>> = (0..4)
            .map(|s| BatchRunner::partitions_of(&plan, s))
            .collect();
        assert_eq!(
            dealt[0],
            [TopicPartition::new("a", 0), TopicPartition::new("a", 4)]
        );
        assert_eq!(
            dealt[1],
            [TopicPartition::new("a", 1), TopicPartition::new("b", 0)]
        );
        assert_eq!(dealt[3], [TopicPartition::new("a", 3)]);
        let all: usize = dealt.iter().map(Vec::len).sum();
        assert_eq!(all, 6);
    }
}
