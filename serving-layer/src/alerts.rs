//! Scoring every event of the fraud source as the speed layer applies it, and the alerts it
//! raises. The speed layer hands each run of decoded events to [`AlertScorer`] before applying
//! it; each event is scored as of itself (the merged views before the run plus the run's earlier
//! events of its key). Alerts are logged, once per event id, by a thread of their own (off the
//! speed layer's thread), and the speed layer's flush before each checkpoint waits until every
//! alert handed over is logged and durable: a checkpoint never covers an event whose alert is
//! not.

use rustc_hash::FxHashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use braid_shared::fraud::{EventScorer, FraudDef};
use braid_shared::{Event, SpeedReader, TopicPartition, Value};
use braid_store::Storage;
use braid_store::alerts::{self, Alert};

use crate::answer::Sources;
use crate::query::format_time;
use crate::snapshot::SnapshotCache;

/// Counts deliveries that failed, so a flush can tell that every alert reached the topic.
#[derive(Default)]
pub struct Deliveries {
    failed: std::sync::atomic::AtomicU64,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, (): ()) {
        if result.is_err() {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Where alerts are also produced: `fraud.alerts_topic`, keyed by alert id.
pub struct AlertTopic {
    pub producer: rdkafka::producer::BaseProducer<Deliveries>,
    pub topic: String,
}

impl AlertTopic {
    /// A producer for `topic` with the `[kafka]` settings (`brokers`, pass-through settings a
    /// producer understands).
    pub fn new(kafka: &braid_shared::config::KafkaConfig, topic: &str) -> Result<Self, String> {
        let mut client = rdkafka::ClientConfig::new();
        for (key, value) in kafka.producer_settings() {
            client.set(key, value);
        }
        let producer = client
            .set("bootstrap.servers", &kafka.brokers)
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())
            .map_err(|e| {
                format!("cannot create the producer for fraud.alerts_topic {topic:?}: {e}")
            })?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Produces `alerts` and waits until every one is acknowledged.
    fn publish(&self, alerts: &[Alert]) -> Result<(), String> {
        use rdkafka::producer::Producer as _;
        let failed_before = self
            .producer
            .context()
            .failed
            .load(std::sync::atomic::Ordering::Relaxed);
        for alert in alerts {
            let payload = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
            let mut record = rdkafka::producer::BaseRecord::<str, [u8]>::to(&self.topic)
                .key(alert.id.as_str())
                .payload(&payload);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        self.producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                    Err((error, _)) => {
                        return Err(format!("producing alert {}: {error}", alert.id));
                    }
                }
            }
        }
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| format!("flushing alerts to {}: {e}", self.topic))?;
        let failed = self
            .producer
            .context()
            .failed
            .load(std::sync::atomic::Ordering::Relaxed);
        if failed > failed_before {
            return Err(format!(
                "{} alerts were not delivered to {}",
                failed - failed_before,
                self.topic
            ));
        }
        Ok(())
    }
}

/// How often alerts past `fraud.retention` are removed.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// Runs of alerts queued for the log; a full queue holds the scorer (and the speed layer) back.
const LOG_QUEUE: usize = 256;

/// Scores applied events and keeps their alerts; see the module documentation.
pub struct AlertScorer {
    fraud: Arc<FraudDef>,
    snapshot: Arc<SnapshotCache>,
    speed: OnceLock<Arc<dyn SpeedReader>>,
    runtime: tokio::runtime::Handle,
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
    Flush(std::sync::mpsc::Sender<Result<(), String>>),
}

/// What the log thread owns.
struct AlertLog {
    fraud: Arc<FraudDef>,
    storage: Arc<dyn Storage>,
    topic: Option<AlertTopic>,
    last_expiry: Option<Instant>,
    logged: tokio::sync::watch::Sender<u64>,
    /// The first failure since the last flush: that flush fails with it, so no checkpoint
    /// covers an event whose alert was not logged.
    failed: Option<String>,
}

impl AlertScorer {
    /// A scorer reading the snapshot through `snapshot` (shared with the API) and the speed
    /// layer given later to [`AlertScorer::connect`]; `None` without `[fraud]`.
    pub fn new(
        fraud: Option<Arc<FraudDef>>,
        storage: Arc<dyn Storage>,
        snapshot: Arc<SnapshotCache>,
        runtime: tokio::runtime::Handle,
        topic: Option<AlertTopic>,
    ) -> Option<Arc<Self>> {
        let fraud = fraud?;
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
        let spawned = std::thread::Builder::new()
            .name("braid-alerts".to_owned())
            .spawn(move || {
                for job in jobs {
                    log.run(job);
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the fraud alert log thread");
            return None;
        }
        Some(Arc::new(Self {
            fraud,
            snapshot,
            speed: OnceLock::new(),
            runtime,
            log: send,
            logged,
        }))
    }

    /// Changes each time this scorer logs new alerts: the live alert stream waits on it.
    pub fn logged(&self) -> tokio::sync::watch::Receiver<u64> {
        self.logged.subscribe()
    }

    /// The speed layer whose cells the features read (the one that calls the scorer).
    pub fn connect(&self, speed: Arc<dyn SpeedReader>) {
        let _ = self.speed.set(speed);
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

    fn send(&self, job: LogJob) -> Result<(), String> {
        self.log
            .send(job)
            .map_err(|_| "the fraud alert log thread has stopped".to_owned())
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
                let result = match self.failed.take() {
                    Some(why) => Err(why),
                    None => alerts::flush(self.storage.as_ref()).map_err(|e| e.to_string()),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Logs the alerts of one run (each once per id; durable at the next flush) and produces
    /// them to the alerts topic.
    fn raise(&mut self, tp: &TopicPartition, raised: Vec<Alert>) -> Result<(), String> {
        let storage = self.storage.as_ref();
        let new = alerts::raise_all(storage, &tp.topic, tp.partition, &raised)
            .map_err(|e| e.to_string())?;
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
                        .map_err(|e| e.to_string())?
                        .unwrap_or(alert)
                };
                to_publish.push(logged);
            }
        }
        if let (Some(topic), false) = (&self.topic, to_publish.is_empty()) {
            topic.publish(&to_publish)?;
        }
        self.expire_if_due()
    }

    fn expire_if_due(&mut self) -> Result<(), String> {
        if self
            .last_expiry
            .is_some_and(|at| at.elapsed() < EXPIRY_INTERVAL)
        {
            return Ok(());
        }
        self.last_expiry = Some(Instant::now());
        let before = chrono::Utc::now().timestamp_millis() - self.fraud.retention_ms;
        let removed = alerts::expire(self.storage.as_ref(), before).map_err(|e| e.to_string())?;
        if removed > 0 {
            tracing::info!(removed, "fraud alerts past their retention removed");
        }
        Ok(())
    }
}

impl EventScorer for AlertScorer {
    fn score(&self, tp: &TopicPartition, offsets: &[i64], events: &[Event]) -> Result<(), String> {
        let fraud = &self.fraud;
        // Set right after the speed layer starts, before it is handed partitions.
        let speed = self.speed.wait();
        let sources = Sources {
            snapshot: &self.snapshot,
            speed: Some(speed.as_ref()),
        };
        // Looked up once per run, not per event.
        let meters = crate::metrics::AppliedScoring::new();
        meters.queue_depth(events.len());
        let slot = fraud.key_slot;
        fn key_of(e: &Event, slot: usize) -> Option<&Value> {
            e.values.get(slot).filter(|v| !v.is_null())
        }
        // One runtime entry for the whole run.
        let raised = self.runtime.block_on(async {
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
                let (score, features) =
                    crate::fraud::score(sources, fraud, event, prior, (false, now))
                        .await
                        .map_err(|e| e.to_string())?;
                prior.push(event);
                meters.scored(started.elapsed());
                if score.alert {
                    raised.push(self.alert(tp, offset, event, &score, &features.values));
                }
            }
            Ok::<_, String>(raised)
        })?;
        // Logged by the log thread; the flush before the checkpoint waits for it.
        if !raised.is_empty() {
            self.send(LogJob::Raise(tp.clone(), raised))?;
        }
        meters.queue_depth(0);
        Ok(())
    }

    fn flush(&self) -> Result<(), String> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.send(LogJob::Flush(reply))?;
        answer
            .recv()
            .map_err(|_| "the fraud alert log thread has stopped".to_owned())?
    }
}

/// Which alerts a list or a stream holds.
pub struct Filter {
    /// Event time `[from, to)`.
    pub from: i64,
    pub to: i64,
    /// One value of `fraud.key`, as text.
    pub key: Option<String>,
}

impl Filter {
    pub fn keeps(&self, alert: &Alert) -> bool {
        (self.from..self.to).contains(&alert.event_time_ms)
            && self.key.as_ref().is_none_or(|k| match &alert.key {
                serde_json::Value::String(s) => s == k,
                other => &other.to_string() == k,
            })
    }
}

/// How often a stream looks for new alerts.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);
/// Alerts raised this long before the newest one sent are looked at again (and skipped when
/// sent), so an alert written just after a look, with an earlier raise time, is not missed.
const LOOKBACK_MS: i64 = 2_000;
/// A client this many alerts behind is cut off (it reconnects with `Last-Event-ID`).
const MAX_BACKLOG: usize = 1_000;

struct Follow {
    storage: Arc<dyn Storage>,
    filter: Filter,
    /// Alerts raised at or after this are candidates.
    since_ms: i64,
    /// Ids sent that were raised at or after `since_ms`.
    sent: std::collections::HashMap<String, i64>,
    pending: std::collections::VecDeque<axum::response::sse::Event>,
    /// Wakes the stream when the scorer in this process logs alerts; without it (or once the
    /// scorer is gone) the stream polls every FOLLOW_INTERVAL only.
    logged: Option<tokio::sync::watch::Receiver<u64>>,
    /// Keys of the logged alerts already read (see [`alerts::read_new`]).
    seen: std::collections::HashSet<String>,
    first: bool,
    ended: bool,
}

/// The live stream of new alerts, as `event: alert` messages with the alert's id. With
/// `last_event_id` (an alert still kept), it starts with the alerts raised after that one;
/// without it (or with an id no longer kept), with those raised from now on. It reads the log
/// when `logged` says the scorer in this process wrote to it, and every FOLLOW_INTERVAL in any
/// case (alerts logged by another process).
pub async fn follow(
    storage: Arc<dyn Storage>,
    filter: Filter,
    last_event_id: Option<String>,
    logged: Option<tokio::sync::watch::Receiver<u64>>,
) -> impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>
+ Send
+ 'static {
    let now = chrono::Utc::now().timestamp_millis();
    let mut since_ms = now;
    let mut pending = std::collections::VecDeque::new();
    let mut sent = std::collections::HashMap::new();
    if let Some(id) = last_event_id {
        let all = read_sorted(&storage).await;
        match all.iter().find(|a| a.id == id) {
            Some(last) => {
                since_ms = last.raised_at_ms;
                // Everything up to and including the last one seen counts as sent.
                for alert in all
                    .iter()
                    .filter(|a| a.raised_at_ms >= since_ms - LOOKBACK_MS)
                {
                    sent.insert(alert.id.clone(), alert.raised_at_ms);
                    if alert.id == id {
                        break;
                    }
                }
                since_ms -= LOOKBACK_MS;
            }
            None => pending
                .push_back(axum::response::sse::Event::default().comment(
                    "Last-Event-ID is not a kept alert; streaming alerts raised from now",
                )),
        }
    }
    let state = Follow {
        storage,
        filter,
        since_ms,
        sent,
        pending,
        logged,
        seen: std::collections::HashSet::new(),
        first: true,
        ended: false,
    };
    futures_util::stream::unfold(state, |mut f| async move {
        loop {
            if let Some(event) = f.pending.pop_front() {
                return Some((Ok(event), f));
            }
            if f.ended {
                return None;
            }
            if !f.first {
                f.wait().await;
            }
            f.first = false;
            // Only alerts logged since the last poll are read.
            let storage = Arc::clone(&f.storage);
            let mut seen = std::mem::take(&mut f.seen);
            let read = tokio::task::spawn_blocking(move || {
                let read = alerts::read_new(storage.as_ref(), &mut seen);
                (read, seen)
            })
            .await;
            let mut fresh = match read {
                Ok((Ok((fresh, _)), seen)) => {
                    f.seen = seen;
                    fresh
                }
                // Read again next time (the set of keys read is kept only after a read).
                _ => Vec::new(),
            };
            fresh.sort_by(|a, b| (a.raised_at_ms, &a.id).cmp(&(b.raised_at_ms, &b.id)));
            let newer: Vec<Alert> = fresh
                .into_iter()
                .filter(|a| a.raised_at_ms >= f.since_ms && !f.sent.contains_key(&a.id))
                .collect();
            if newer.len() > MAX_BACKLOG {
                f.pending.push_back(
                    axum::response::sse::Event::default()
                        .event("error")
                        .data("too far behind: reconnect with Last-Event-ID"),
                );
                f.ended = true;
                continue;
            }
            for alert in newer {
                f.sent.insert(alert.id.clone(), alert.raised_at_ms);
                if !f.filter.keeps(&alert) {
                    continue;
                }
                if let Ok(event) = axum::response::sse::Event::default()
                    .event("alert")
                    .id(alert.id.clone())
                    .json_data(&alert)
                {
                    f.pending.push_back(event);
                }
            }
            // Keep only what the look-back can still see.
            if let Some(&newest) = f.sent.values().max() {
                f.since_ms = f.since_ms.max(newest - LOOKBACK_MS);
                let since = f.since_ms;
                f.sent.retain(|_, raised| *raised >= since);
            }
        }
    })
}

impl Follow {
    /// Until the scorer logs alerts or FOLLOW_INTERVAL passes. An alert logged while the stream
    /// was reading has already changed the version, so this returns at once for it.
    async fn wait(&mut self) {
        let Some(logged) = &mut self.logged else {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            return;
        };
        tokio::select! {
            changed = logged.changed() => {
                if changed.is_err() {
                    self.logged = None;
                }
            }
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
    }
}

/// Every kept alert, oldest raised first (unreadable ones skipped).
async fn read_sorted(storage: &Arc<dyn Storage>) -> Vec<Alert> {
    let storage = Arc::clone(storage);
    let mut all = tokio::task::spawn_blocking(move || alerts::read_all(storage.as_ref()))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|(alerts, _)| alerts)
        .unwrap_or_default();
    all.sort_by(|a, b| (a.raised_at_ms, &a.id).cmp(&(b.raised_at_ms, &b.id)));
    all
}
