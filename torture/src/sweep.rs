//! Many scenarios, `jobs` at a time, and their totals: scenarios, answers and rows checked,
//! faults injected by kind, restart and recovery times, failures by seed.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::run::{Options, Outcome, run};
use crate::scenario::Scenario;

/// A failing seed: what it drew and what went wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub seed: u64,
    pub scenario: String,
    pub failures: Vec<String>,
    pub kept: Option<String>,
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    pub count: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

impl Spread {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .map_or(0, |d| d.as_millis() as u64)
        };
        Self {
            count: samples.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: samples.last().map_or(0, |d| d.as_millis() as u64),
        }
    }
}

/// A sweep's totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub first_seed: u64,
    pub scenarios: usize,
    /// Scenarios by where they ran: broker, storage, how partitions were shared.
    pub settings: BTreeMap<String, usize>,
    pub passed: usize,
    pub answers_checked: usize,
    pub rows_checked: usize,
    pub faults: BTreeMap<String, usize>,
    /// Processes that exited by themselves and were restarted as a supervisor would.
    pub crashes: usize,
    pub crashes_by_cause: BTreeMap<String, usize>,
    /// Kill -9 and restart in the crash-recovery scenarios (no other fault around): to ready,
    /// and to every serving answer caught up.
    pub restart_to_ready: Spread,
    pub restart_to_caught_up: Spread,
    /// Crash recovery, restart to caught up, by the scenario's session timeout (ms).
    pub restart_to_caught_up_by_session: BTreeMap<u64, Spread>,
    /// The same for every kill -9, other faults around it included.
    pub restart_to_caught_up_under_faults: Spread,
    /// Restarts that never caught up before the next fault (no sample).
    pub restarts_not_measured: usize,
    /// From the end of the faults to every answer complete and caught up.
    pub recovery: Spread,
    pub harness_errors: Vec<String>,
    pub failed: Vec<Failed>,
    pub seconds: f64,
}

impl Summary {
    /// The summary as people read it.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} scenarios from seed {} in {:.0} s: {} passed, {} failed, {} harness errors\n\
             {} answers checked ({} rows), {} process crashes restarted\n\
             crash recovery, restart to ready: {}\ncrash recovery, restart to caught up: {}\n\
             any kill, restart to caught up: {} ({} never caught up before the next fault)\n\
             recovery after the faults: {}\n",
            self.scenarios,
            self.first_seed,
            self.seconds,
            self.passed,
            self.failed.len(),
            self.harness_errors.len(),
            self.answers_checked,
            self.rows_checked,
            self.crashes,
            spread(&self.restart_to_ready),
            spread(&self.restart_to_caught_up),
            spread(&self.restart_to_caught_up_under_faults),
            self.restarts_not_measured,
            spread(&self.recovery),
        );
        out.push_str("scenarios by setting:\n");
        for (setting, count) in &self.settings {
            out.push_str(&format!("  {count:>6}  {setting}\n"));
        }
        for (session, spread) in &self.restart_to_caught_up_by_session {
            out.push_str(&format!(
                "crash recovery with a {session} ms session timeout, restart to caught up: {}\n",
                self::spread(spread)
            ));
        }
        out.push_str("faults:\n");
        for (kind, count) in &self.faults {
            out.push_str(&format!("  {count:>6}  {kind}\n"));
        }
        if !self.crashes_by_cause.is_empty() {
            out.push_str("processes that exited by themselves, by cause:\n");
        }
        for (cause, count) in &self.crashes_by_cause {
            out.push_str(&format!("  {count:>6}  {cause}\n"));
        }
        for failed in &self.failed {
            out.push_str(&format!(
                "FAILED {}\n{}\n",
                failed.scenario.trim_end(),
                failed.failures.join("\n")
            ));
        }
        for error in &self.harness_errors {
            out.push_str(&format!("HARNESS {error}\n"));
        }
        out
    }

    fn add(&mut self, scenario: &Scenario, outcome: &Outcome) {
        self.scenarios += 1;
        for setting in [
            if scenario.on_tansu {
                "broker: tansu"
            } else {
                "broker: mock cluster"
            },
            if scenario.on_moto {
                "storage: moto (S3)"
            } else {
                "storage: local folder"
            },
            if scenario.consumer_group {
                "partitions: Kafka consumer groups"
            } else {
                "partitions: leases in storage"
            },
            match scenario.registry {
                None => "format: JSON",
                Some((crate::scenario::RegistryFormat::Avro, _)) => "format: Avro (registry)",
                Some((crate::scenario::RegistryFormat::Protobuf, _)) => {
                    "format: Protobuf (registry)"
                }
            },
        ] {
            *self.settings.entry(setting.to_owned()).or_default() += 1;
        }
        self.answers_checked += outcome.answers;
        self.rows_checked += outcome.rows;
        self.crashes += outcome.crashes;
        for cause in &outcome.crash_causes {
            *self.crashes_by_cause.entry(cause.clone()).or_default() += 1;
        }
        for (kind, count) in &outcome.faults {
            *self.faults.entry((*kind).to_owned()).or_default() += count;
        }
        if scenario.clock_jumps > 0 {
            *self
                .faults
                .entry("event clock jumps".to_owned())
                .or_default() += scenario.clock_jumps;
        }
        if outcome.failures.is_empty() {
            self.passed += 1;
        } else {
            self.failed.push(Failed {
                seed: scenario.seed,
                scenario: scenario.to_string(),
                failures: outcome.failures.clone(),
                kept: outcome.kept.as_ref().map(|p| p.display().to_string()),
            });
        }
    }
}

fn spread(s: &Spread) -> String {
    format!(
        "{} samples, p50 {} ms, p99 {} ms, max {} ms",
        s.count, s.p50_ms, s.p99_ms, s.max_ms
    )
}

/// Runs `seeds`, `jobs` at a time; each scenario's verdict goes to `progress` as it ends.
pub fn sweep(
    seeds: &[u64],
    jobs: usize,
    options: &Options,
    progress: &(dyn Fn(&str) + Sync),
) -> Summary {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let summary = Mutex::new(Summary {
        first_seed: seeds.first().copied().unwrap_or_default(),
        ..Summary::default()
    });
    let samples: Mutex<[Vec<Duration>; 4]> = Mutex::default();
    let by_session: Mutex<BTreeMap<u64, Vec<Duration>>> = Mutex::default();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    let scenario = Scenario::draw(seed, &options.shares);
                    let line = match run(&scenario, options) {
                        Ok(outcome) => {
                            let line = verdict(&scenario, &outcome);
                            if let Ok(mut s) = samples.lock() {
                                for restart in &outcome.restarts {
                                    if restart.isolated {
                                        s[0].extend(restart.ready);
                                        s[1].extend(restart.caught_up);
                                        if let Ok(mut by) = by_session.lock() {
                                            by.entry(restart.session_timeout_ms)
                                                .or_default()
                                                .extend(restart.caught_up);
                                        }
                                    }
                                    s[2].extend(restart.caught_up);
                                }
                                s[3].extend(outcome.recovery);
                            }
                            if let Ok(mut summary) = summary.lock() {
                                summary.add(&scenario, &outcome);
                                summary.restarts_not_measured += outcome
                                    .restarts
                                    .iter()
                                    .filter(|r| r.caught_up.is_none())
                                    .count();
                            }
                            line
                        }
                        Err(error) => {
                            if let Ok(mut summary) = summary.lock() {
                                summary.harness_errors.push(format!("seed {seed}: {error}"));
                            }
                            format!("seed {seed}: harness error: {error}")
                        }
                    };
                    progress(&line);
                }
            });
        }
    });
    let mut summary = summary.into_inner().unwrap_or_default();
    let [ready, caught_up, any, recovery] = samples.into_inner().unwrap_or_default();
    summary.restart_to_ready = Spread::of(ready);
    summary.restart_to_caught_up = Spread::of(caught_up);
    summary.restart_to_caught_up_under_faults = Spread::of(any);
    summary.recovery = Spread::of(recovery);
    summary.restart_to_caught_up_by_session = by_session
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|(session, samples)| (session, Spread::of(samples)))
        .collect();
    summary.failed.sort_by_key(|f| f.seed);
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

/// One scenario's line: passed, or everything needed to reproduce the failure.
pub fn verdict(scenario: &Scenario, outcome: &Outcome) -> String {
    if outcome.failures.is_empty() {
        format!(
            "seed {}: passed in {:.1} s ({} answers, {} faults, recovered in {} ms)",
            scenario.seed,
            outcome.elapsed.as_secs_f64(),
            outcome.answers,
            outcome.faults.values().sum::<usize>(),
            outcome.recovery.map_or(0, |d| d.as_millis())
        )
    } else {
        format!(
            "seed {}: FAILED in {:.1} s (rerun: braid torture --seed {}{}{}{}){}\n{}{}",
            scenario.seed,
            outcome.elapsed.as_secs_f64(),
            scenario.seed,
            if scenario.on_tansu {
                " --tansu-share 1"
            } else {
                ""
            },
            if scenario.on_moto {
                " --moto-share 1"
            } else {
                ""
            },
            if scenario.registry.is_some() {
                " --registry-share 1"
            } else {
                ""
            },
            outcome
                .kept
                .as_ref()
                .map(|p| format!(", logs in {}", p.display()))
                .unwrap_or_default(),
            scenario,
            outcome.failures.join("\n")
        )
    }
}

/// Shrinks a failing scenario's schedule: drops one fault at a time and keeps each drop
/// after which the scenario still fails. The faults that matter, by index into the schedule.
pub fn shrink(scenario: &Scenario, options: &Options, progress: &dyn Fn(&str)) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..scenario.schedule.len()).collect();
    let mut i = 0;
    while i < keep.len() {
        let mut fewer = keep.clone();
        let dropped = fewer.remove(i);
        let smaller = scenario.with_faults(&fewer);
        let fails = run(&smaller, options).is_ok_and(|o| !o.failures.is_empty());
        progress(&format!(
            "without fault {dropped} ({:?}): {}",
            scenario.schedule[dropped].fault,
            if fails {
                "still fails, dropped"
            } else {
                "passes, kept"
            }
        ));
        if fails {
            keep = fewer;
        } else {
            i += 1;
        }
    }
    keep
}

/// Writes `summary` as JSON to `path`.
pub fn write_summary(summary: &Summary, path: &std::path::Path) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    serde_json::to_writer_pretty(&mut file, summary).map_err(std::io::Error::other)?;
    file.write_all(b"\n")
}
