//! The serving tier's reader of the speed tier ([`RemoteSpeed`]): asks every peer of
//! `serve.speed_peers` at once, takes each partition once (the larger position when two
//! instances report one during a hand-over: both are exact prefixes of the partition) and names
//! the partitions nobody reported in time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_kafka::Tail;
use braid_shared::coverage::SpeedCells;
use braid_shared::{
    CellQuery, Config, Coverage, PartitionCells, PartitionStatus, SpeedReader, TopicPartition,
};
use bytes::Bytes;

use super::wire::{CELLS_PATH, CellsRequest, STATUS_PATH, decode};

/// Pause between two gathers while a partition has no reporting owner.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long the topic's partition list is reused.
const METADATA_TTL: Duration = Duration::from_secs(10);

/// What one speed instance answered.
enum Reported {
    Cells(Vec<PartitionCells>),
    /// It has dropped events the coverage needs: a newer snapshot is out.
    CoverageDropped(String),
    /// Unreachable, or it failed: its partitions count as missing.
    Failed(String),
}

/// The HTTP client the cells requests go through: pooled keep-alive connections without
/// Nagle's delay, driven by the runtime of the caller (the API's), so a request asks every
/// peer at once and no thread waits for the answers.
type PeerClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

/// Sends `request` within `left`: the status and body, or why not.
async fn exchange(
    client: &PeerClient,
    request: Result<hyper::Request<http_body_util::Full<Bytes>>, hyper::http::Error>,
    left: Duration,
) -> Result<(u16, Bytes), String> {
    use http_body_util::BodyExt as _;
    let request = request.map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(left, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", left.as_millis()))?
}

/// A runtime of one thread for the callers of the blocking reads that have none of their own.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        // Also from inside another runtime, where a blocking shutdown is not allowed.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The speed layer as `serve.speed_peers` hold it.
pub struct RemoteSpeed {
    config: Arc<Config>,
    peers: Vec<String>,
    timeout: Duration,
    client: PeerClient,
    runtime: OwnRuntime,
    /// Per topic: a metadata reader, and its partitions as last read.
    topics: Mutex<HashMap<String, (Tail, Option<Listed>)>>,
}

/// A topic's partitions, and when the broker listed them.
type Listed = (Instant, Vec<i32>);

/// The partitions of one gather and those nobody reported.
type Gathered = (
    BTreeMap<TopicPartition, PartitionCells>,
    Vec<TopicPartition>,
);

impl RemoteSpeed {
    pub fn new(config: Arc<Config>) -> Self {
        let timeout = config.serve.speed_timeout.0;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("braid-speed-peers")
            .enable_all()
            .build()
            .expect("a thread for the speed peers' connections");
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector);
        Self {
            peers: config.serve.speed_peers.clone(),
            config,
            timeout,
            client,
            runtime: OwnRuntime(Some(runtime)),
            topics: Mutex::new(HashMap::new()),
        }
    }

    /// Asks every peer for cells at once; their reports in the peers' order.
    async fn ask_all(&self, request: &Bytes, deadline: Instant, view: &str) -> Vec<Reported> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let asks = self.peers.iter().map(|peer| {
            let request = hyper::Request::post(format!("http://{peer}{CELLS_PATH}"))
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(request.clone()));
            exchange(&self.client, request, left)
        });
        let answers = futures_util::future::join_all(asks).await;
        self.peers
            .iter()
            .zip(answers)
            .map(|(peer, answer)| Self::report(&self.config, peer, view, answer))
            .collect()
    }

    /// Every partition of `topic`, as the broker lists it (reused for a while, so the broker
    /// is asked, with a blocking call, once in [`METADATA_TTL`]); `None` when the broker did
    /// not answer.
    fn partitions(&self, topic: &str) -> Option<Vec<i32>> {
        if let Some(Some((at, partitions))) = self
            .topics
            .lock()
            .ok()?
            .get(topic)
            .map(|(_, listed)| listed)
            && at.elapsed() < METADATA_TTL
        {
            return Some(partitions.clone());
        }
        blocking(|| self.list_partitions(topic))
    }

    /// [`RemoteSpeed::partitions`] from the broker, unless another caller just listed them.
    fn list_partitions(&self, topic: &str) -> Option<Vec<i32>> {
        let mut topics = self.topics.lock().ok()?;
        if !topics.contains_key(topic) {
            let tail = Tail::new(&self.config, topic)
                .map_err(|error| tracing::warn!(%error, topic, "no metadata reader"))
                .ok()?;
            topics.insert(topic.to_owned(), (tail, None));
        }
        let (tail, listed) = topics.get_mut(topic)?;
        if let Some((at, partitions)) = listed
            && at.elapsed() < METADATA_TTL
        {
            return Some(partitions.clone());
        }
        match tail.partitions() {
            Ok(partitions) => {
                *listed = Some((Instant::now(), partitions.clone()));
                Some(partitions)
            }
            Err(error) => {
                // The last listing serves for another TTL: a broker that stopped answering
                // would otherwise hold every query for the read timeout, one after another
                // (found by the torture suite: a serving process answered nothing for a minute).
                tracing::warn!(%error, topic, "listing the topic's partitions; using the last listing");
                listed.as_mut().map(|(at, p)| {
                    *at = Instant::now();
                    p.clone()
                })
            }
        }
    }

    /// What a peer's answer to a cells request says.
    fn report(
        config: &Config,
        peer: &str,
        view: &str,
        answer: Result<(u16, Bytes), String>,
    ) -> Reported {
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(e) => return Reported::Failed(format!("{peer}: {e}")),
        };
        match status {
            200 => match decode(config, view, &body) {
                Ok(parts) => Reported::Cells(parts),
                Err(e) => Reported::Failed(format!("{peer}: {e}")),
            },
            409 => Reported::CoverageDropped(String::from_utf8_lossy(&body).into_owned()),
            _ => Reported::Failed(format!(
                "{peer}: {status} {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }

    /// Asks every peer at once, until every partition of the topic is reported or the deadline.
    async fn gather(
        &self,
        view: &str,
        query: &CellQuery,
        coverage: &Coverage,
    ) -> braid_shared::Result<Gathered> {
        let def = self
            .config
            .view(view)
            .ok_or_else(|| braid_shared::Error::UnknownView(view.to_owned()))?;
        let topic = self
            .config
            .source(&def.source)
            .map(|s| s.topic.clone())
            .unwrap_or_default();
        let request: Bytes = serde_json::to_vec(&CellsRequest {
            view: view.to_owned(),
            from_ms: query.from_ms,
            to_ms: query.to_ms,
            filters: query.filters.clone(),
            coverage: coverage.clone(),
        })
        .unwrap_or_default()
        .into();
        let deadline = Instant::now() + self.timeout;
        loop {
            let reports = self.ask_all(&request, deadline, view).await;
            let mut taken: BTreeMap<TopicPartition, PartitionCells> = BTreeMap::new();
            for report in reports {
                match report {
                    Reported::Cells(mut parts) => {
                        // A peer that answers for another topic (a peer list naming another
                        // deployment's instance, whose views have the same names) is not merged
                        // (found by the torture suite, through a port another run reused).
                        parts.retain(|part| {
                            let ours = part.tp.topic == topic;
                            if !ours {
                                tracing::warn!(partition = %part.tp, view, "a speed peer answered for a partition of another topic; ignored");
                            }
                            ours
                        });
                        take_each_once(&mut taken, parts);
                    }
                    Reported::CoverageDropped(message) => {
                        return Err(braid_shared::Error::CoverageDropped(message));
                    }
                    Reported::Failed(error) => {
                        tracing::debug!(%error, "a speed peer did not answer");
                    }
                }
            }
            let mut known: BTreeSet<TopicPartition> = self
                .partitions(&topic)
                .unwrap_or_default()
                .into_iter()
                .map(|p| TopicPartition::new(topic.as_str(), p))
                .collect();
            known.extend(coverage.0.keys().filter(|tp| tp.topic == topic).cloned());
            let missing: Vec<TopicPartition> = known
                .into_iter()
                .filter(|tp| !taken.contains_key(tp))
                .collect();
            if missing.is_empty() || Instant::now() + RETRY_PAUSE >= deadline {
                return Ok((taken, missing));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Every partition the peers report holding, each at the largest position reported.
    async fn statuses(&self) -> BTreeMap<TopicPartition, PartitionStatus> {
        let asks = self.peers.iter().map(|peer| {
            let request = hyper::Request::get(format!("http://{peer}{STATUS_PATH}"))
                .body(http_body_util::Full::default());
            exchange(&self.client, request, self.timeout)
        });
        let mut out: BTreeMap<TopicPartition, PartitionStatus> = BTreeMap::new();
        for answer in futures_util::future::join_all(asks).await {
            let Ok((200, body)) = answer else { continue };
            let Ok(listed) = serde_json::from_slice::<BTreeMap<String, PartitionStatus>>(&body)
            else {
                continue;
            };
            for (name, status) in listed {
                let Some(tp) = parse_tp(&name) else { continue };
                let kept = out.entry(tp).or_insert(status);
                if status.position > kept.position {
                    *kept = status;
                }
            }
        }
        out
    }

    /// Waits for `work` (asking the peers) on this reader's own runtime, from a thread outside
    /// the caller's runtime when it has one (a runtime cannot wait on another from its own
    /// threads): for the callers of the blocking reads.
    fn wait<T: Send>(&self, work: impl Future<Output = T> + Send) -> T {
        let runtime = self
            .runtime
            .0
            .as_ref()
            .expect("the runtime lives until drop");
        let wait = || runtime.block_on(work);
        if tokio::runtime::Handle::try_current().is_err() {
            return wait();
        }
        std::thread::scope(|scope| scope.spawn(wait).join())
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// The cells of the partitions gathered, in one state.
    fn merged(
        &self,
        view: &str,
        taken: BTreeMap<TopicPartition, PartitionCells>,
        missing: Vec<TopicPartition>,
    ) -> braid_shared::Result<SpeedCells> {
        let def = self
            .config
            .view(view)
            .ok_or_else(|| braid_shared::Error::UnknownView(view.to_owned()))?;
        SpeedCells::merged(def, taken.into_values(), missing)
    }
}

/// Adds `parts` to `taken`, keeping for each partition the report with the larger position.
fn take_each_once(
    taken: &mut BTreeMap<TopicPartition, PartitionCells>,
    parts: Vec<PartitionCells>,
) {
    for part in parts {
        match taken.get(&part.tp) {
            Some(kept) if kept.status.position >= part.status.position => {}
            _ => {
                taken.insert(part.tp.clone(), part);
            }
        }
    }
}

/// Runs `work`, which blocks on the network, without stalling the async runtime's other tasks.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

impl SpeedReader for RemoteSpeed {
    fn status(&self) -> BTreeMap<TopicPartition, PartitionStatus> {
        self.wait(self.statuses())
    }

    fn read(
        &self,
        view: &str,
        query: &CellQuery,
        coverage: &Coverage,
    ) -> braid_shared::Result<SpeedCells> {
        let (taken, missing) = self.wait(self.gather(view, query, coverage))?;
        self.merged(view, taken, missing)
    }

    fn read_async<'a>(
        &'a self,
        view: &'a str,
        query: &'a CellQuery,
        coverage: &'a Coverage,
    ) -> Option<braid_shared::SpeedFuture<'a>> {
        Some(Box::pin(async move {
            let (taken, missing) = self.gather(view, query, coverage).await?;
            self.merged(view, taken, missing)
        }))
    }
}

/// `topic/partition` -> the pair.
fn parse_tp(text: &str) -> Option<TopicPartition> {
    let (topic, partition) = text.rsplit_once('/')?;
    Some(TopicPartition::new(topic, partition.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::test_support::{CONFIG, part};

    #[test]
    fn a_partition_reported_twice_is_taken_once_at_the_larger_position() {
        let config = Config::from_toml(CONFIG).unwrap();
        let mut taken = BTreeMap::new();
        // The old owner still answers with a shorter prefix of partition 1; the new owner
        // has read further. Either order of the answers keeps the new owner's.
        let old = part(&config, 1, &[(60_000, "a")]);
        let new = part(&config, 1, &[(60_000, "a"), (60_500, "b"), (61_000, "c")]);
        take_each_once(&mut taken, vec![old.clone(), part(&config, 0, &[])]);
        take_each_once(&mut taken, vec![new.clone()]);
        take_each_once(&mut taken, vec![old]);
        assert_eq!(taken.len(), 2);
        let kept = &taken[&TopicPartition::new("payments", 1)];
        assert_eq!(kept.status.position, 3);
        assert!(kept.state.approx_eq(&new.state, 0.0).is_ok());
    }
}
