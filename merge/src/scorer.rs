//! Scoring every event of the fraud source as the speed layer applies it, and the alerts it
//! raises. The speed layer hands each run of decoded events, with its own reader, to
//! [`AlertScorer`] before applying it; each event is scored as of itself (the merged views
//! before the run plus the run's earlier events of its key), on the speed layer's thread.
//! Alerts are logged, once per event id, by a thread of their own, and the speed layer's flush
//! before each checkpoint waits until every alert handed over is logged and durable: a
//! checkpoint never covers an event whose alert is not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_kafka::TopicProducer;
use braid_shared::fraud::{EventScorer, FraudDef, ScoringError};
use braid_shared::text::format_time;
use braid_shared::{Event, SpeedReader, TopicPartition, Value};
use braid_store::Storage;
use braid_store::alerts::{self, Alert};
use rustc_hash::FxHashMap;

use crate::answer::Sources;
use crate::snapshot::SnapshotCache;

/// How often alerts past `fraud.retention` are removed.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// Runs of alerts queued for the log; a full queue holds the scorer (and the speed layer) back.
const LOG_QUEUE: usize = 256;

/// Scores applied events and keeps their alerts; see the module documentation.
pub struct AlertScorer {
    fraud: Arc<FraudDef>,
    snapshot: Arc<SnapshotCache>,
    /// To the thread that logs alerts (and produces them to `fraud.alerts_topic`), off the
    /// speed layer's thread.
    log: std::sync::mpsc::SyncSender<LogJob>,
    /// Bumped each time new alerts are logged: live streams in this process wake at once
    /// instead of at their next poll.
    logged: tokio::sync::watch::Sender<u64>,
}

enum LogJob {
    /// The alerts of one run of a partition.
    Raise(TopicPartition, Vec<Alert>),
    /// Every job before it done, the alerts logged made durable together; answers with the
    /// first failure since the last flush, if any.
    Flush(std::sync::mpsc::Sender<Result<(), ScoringError>>),
}

/// What the log thread owns.
struct AlertLog {
    fraud: Arc<FraudDef>,
    storage: Arc<dyn Storage>,
    topic: Option<TopicProducer>,
    last_expiry: Option<Instant>,
    logged: tokio::sync::watch::Sender<u64>,
    /// The first failure: every flush from then on fails with it, so no checkpoint covers an
    /// event whose alert was not logged (found by the torture suite: when only the next flush
    /// failed, a partition's release, flushing after it, wrote its checkpoint past the lost
    /// alert). The speed layer stops at the first failed flush; its successor logs them again.
    failed: Option<ScoringError>,
}

impl AlertScorer {
    /// A scorer of `fraud`'s source reading the snapshot through `snapshot` (shared with the
    /// API) and the speed layer that calls it; its alerts go to `storage` and, with
    /// `fraud.alerts_topic`, to `topic`.
    pub fn new(
        fraud: Arc<FraudDef>,
        storage: Arc<dyn Storage>,
        snapshot: Arc<SnapshotCache>,
        topic: Option<TopicProducer>,
    ) -> std::io::Result<Arc<Self>> {
        let rules: Vec<String> = fraud.rules.iter().map(|r| r.name.clone()).collect();
        crate::metrics::register_scorer(&rules);
        let logged = tokio::sync::watch::Sender::new(0);
        let (send, jobs) = std::sync::mpsc::sync_channel(LOG_QUEUE);
        let mut log = AlertLog {
            fraud: Arc::clone(&fraud),
            storage,
            topic,
            last_expiry: None,
            logged: logged.clone(),
            failed: None,
        };
        // Ends when the scorer is dropped (its sender with it), after the jobs queued.
        std::thread::Builder::new()
            .name("braid-alerts".to_owned())
            .spawn(move || {
                for job in jobs {
                    log.run(job);
                }
            })?;
        Ok(Arc::new(Self {
            fraud,
            snapshot,
            log: send,
            logged,
        }))
    }

    /// Changes each time this scorer logs new alerts: the live alert stream waits on it.
    pub fn logged(&self) -> tokio::sync::watch::Receiver<u64> {
        self.logged.subscribe()
    }

    fn alert(
        &self,
        tp: &TopicPartition,
        offset: i64,
        event: &Event,
        score: &braid_shared::fraud::Score,
        values: &[Option<f64>],
    ) -> Alert {
        let fraud = &self.fraud;
        let now = chrono::Utc::now().timestamp_millis();
        let mut fields = serde_json::Map::new();
        for (field, value) in fraud.source.fields.iter().zip(&event.values) {
            if !value.is_null() {
                fields.insert(field.name.clone(), value.to_json());
            }
        }
        Alert {
            id: format!("{tp}/{offset}"),
            key: event
                .values
                .get(fraud.key_slot)
                .map_or(serde_json::Value::Null, Value::to_json),
            score: score.score,
            rules: score
                .rules
                .iter()
                .filter(|r| r.fired)
                .map(|r| r.name.clone())
                .collect(),
            features: fraud
                .features
                .iter()
                .zip(values)
                .map(|(f, v)| (f.name.clone(), *v))
                .collect(),
            event: fields,
            partition: tp.to_string(),
            offset,
            event_time: format_time(event.time_ms),
            event_time_ms: event.time_ms,
            raised_at: format_time(now),
            raised_at_ms: now,
        }
    }

    fn send(&self, job: LogJob) -> Result<(), ScoringError> {
        self.log.send(job).map_err(|_| log_stopped())
    }
}

impl AlertLog {
    fn run(&mut self, job: LogJob) {
        match job {
            LogJob::Raise(tp, raised) => {
                if self.failed.is_none()
                    && let Err(why) = self.raise(&tp, raised)
                {
                    self.failed = Some(why);
                }
            }
            LogJob::Flush(reply) => {
                let result = match &self.failed {
                    Some(why) => Err(why.clone()),
                    None => alerts::flush(self.storage.as_ref()).map_err(failed),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Logs the alerts of one run (each once per id; durable at the next flush) and produces
    /// them to the alerts topic.
    fn raise(&mut self, tp: &TopicPartition, raised: Vec<Alert>) -> Result<(), ScoringError> {
        let storage = self.storage.as_ref();
        let new = alerts::raise_all(storage, &tp.topic, tp.partition, &raised).map_err(failed)?;
        if new.iter().any(|&n| n) {
            self.logged.send_modify(|n| *n = n.wrapping_add(1));
        }
        let mut to_publish = Vec::new();
        for (alert, new) in raised.into_iter().zip(new) {
            if new {
                crate::metrics::alert_raised(&alert.rules);
            }
            if self.topic.is_some() {
                // The logged alert (the first write) is what the topic carries, replays too.
                let logged = if new {
                    alert
                } else {
                    let offset = alert.offset;
                    alerts::read(storage, &tp.topic, tp.partition, offset)
                        .map_err(failed)?
                        .unwrap_or(alert)
                };
                to_publish.push(logged);
            }
        }
        if let (Some(topic), false) = (&self.topic, to_publish.is_empty()) {
            let messages = to_publish
                .iter()
                .map(|alert| Ok((alert.id.clone(), serde_json::to_vec(alert)?)))
                .collect::<Result<Vec<_>, serde_json::Error>>()
                .map_err(|e| failed(format!("encoding an alert: {e}")))?;
            topic.publish(&messages).map_err(failed)?;
        }
        self.expire_if_due()
    }

    fn expire_if_due(&mut self) -> Result<(), ScoringError> {
        if self
            .last_expiry
            .is_some_and(|at| at.elapsed() < EXPIRY_INTERVAL)
        {
            return Ok(());
        }
        self.last_expiry = Some(Instant::now());
        let before = chrono::Utc::now().timestamp_millis() - self.fraud.retention_ms;
        let removed = alerts::expire(self.storage.as_ref(), before).map_err(failed)?;
        if removed > 0 {
            tracing::info!(removed, "fraud alerts past their retention removed");
        }
        Ok(())
    }
}

impl EventScorer for AlertScorer {
    fn score(
        &self,
        speed: &dyn SpeedReader,
        tp: &TopicPartition,
        offsets: &[i64],
        events: &[Event],
    ) -> Result<(), ScoringError> {
        let fraud = &self.fraud;
        let sources = Sources {
            snapshot: &self.snapshot,
            speed: Some(speed),
        };
        // Looked up once per run, not per event.
        let meters = crate::metrics::AppliedScoring::new();
        meters.queue_depth(events.len());
        let slot = fraud.key_slot;
        fn key_of(e: &Event, slot: usize) -> Option<&Value> {
            e.values.get(slot).filter(|v| !v.is_null())
        }
        let mut raised = Vec::new();
        // The run's events so far, by key: what each event's features add to the views.
        let mut earlier: FxHashMap<&Value, Vec<&Event>> = FxHashMap::default();
        for (i, (event, &offset)) in events.iter().zip(offsets).enumerate() {
            meters.queue_depth(events.len() - i);
            let Some(key) = key_of(event, slot) else {
                crate::metrics::fraud_unscored("no_key");
                continue;
            };
            let prior = earlier.entry(key).or_default();
            let started = Instant::now();
            let now = chrono::Utc::now().timestamp_millis();
            let features = crate::fraud::features_blocking(sources, fraud, event, prior, now)
                .map_err(failed)?;
            let score = fraud.score(event, &features.values);
            prior.push(event);
            meters.scored(started.elapsed());
            if score.alert {
                raised.push(self.alert(tp, offset, event, &score, &features.values));
            }
        }
        // Logged by the log thread; the flush before the checkpoint waits for it.
        if !raised.is_empty() {
            self.send(LogJob::Raise(tp.clone(), raised))?;
        }
        meters.queue_depth(0);
        Ok(())
    }

    fn flush(&self) -> Result<(), ScoringError> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.send(LogJob::Flush(reply))?;
        answer.recv().map_err(|_| log_stopped())?
    }
}

fn log_stopped() -> ScoringError {
    failed("the fraud alert log thread has stopped")
}

fn failed(why: impl std::fmt::Display) -> ScoringError {
    ScoringError(why.to_string())
}
