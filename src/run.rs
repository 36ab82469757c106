//! `braid run`: the chosen layers until SIGINT or SIGTERM, or until one fails; `braid batch`:
//! one recompute.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use braid_batch::{
    Archiver, BatchRunner, BatchScheduler, RunRecord, RunState, Shard, ShardOutcome, Trigger,
};
use braid_merge::{AlertScorer, SnapshotCache};
use braid_serving::{Backends, Server};
use braid_shared::Config;
use braid_speed::SpeedLayer;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::Layer;

/// What `braid batch` runs.
pub enum BatchMode {
    /// One recompute of every partition.
    Whole,
    /// One shard of a sharded run.
    Shard {
        shards: u32,
        index: u32,
        name: Option<String>,
    },
    /// The merge of a sharded run.
    Merge {
        shards: Option<u32>,
        name: Option<String>,
    },
}

/// One batch recompute, a shard of one or its merge; prints its record (or the shard's
/// outcome) as JSON. Exit 0 when published or the shard is stored, 1 otherwise.
pub fn batch(config: &Config, full: bool, mode: BatchMode) -> ExitCode {
    let storage = match braid_store::open(&config.storage) {
        Ok(storage) => storage,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(crate::EXIT_CONFIG);
        }
    };
    let runner = match BatchRunner::new(config, storage) {
        Ok(runner) => runner,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(crate::EXIT_CONFIG);
        }
    };
    let cancel = CancellationToken::new();
    let watcher = SignalWatcher::start(cancel.clone());
    let name = |name: Option<String>, shards: Option<u32>| match (name, shards) {
        (Some(name), _) => Ok(name),
        (None, Some(shards)) => runner.default_shard_run(shards, full),
        (None, None) => Err(braid_batch::Error::BadShardedRun("no run named".into())),
    };
    let outcome = match mode {
        BatchMode::Whole => runner.run(Trigger::Command, full, &cancel).map(|record| {
            print_json(&record);
            Some(record)
        }),
        BatchMode::Shard {
            shards,
            index,
            name: given,
        } => name(given, Some(shards)).and_then(|run| {
            let shard = Shard { run, shards, index };
            runner.run_shard(&shard, full, &cancel).map(shard_record)
        }),
        BatchMode::Merge {
            shards,
            name: given,
        } => {
            name(given, shards).and_then(|run| runner.merge_shards(&run, &cancel).map(shard_record))
        }
    };
    drop(watcher);
    match outcome {
        // A shard stored, waiting for the others.
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(record)) => match (record.state, &record.error) {
            (RunState::Succeeded, _) => ExitCode::SUCCESS,
            (_, error) => {
                eprintln!(
                    "error: batch run {} failed: {}",
                    record.id,
                    error.as_deref().unwrap_or("unknown")
                );
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Prints a shard's outcome; the run's record once it was merged.
fn shard_record(outcome: ShardOutcome) -> Option<RunRecord> {
    print_json(&outcome);
    match outcome {
        ShardOutcome::Waiting { .. } => None,
        ShardOutcome::Merged { record, .. } => Some(record),
    }
}

/// `braid run`: the layers against the configured brokers.
pub fn run(config: &Config, layers: &[Layer]) -> ExitCode {
    if config.kafka.is_embedded() {
        eprintln!(
            "error: kafka.brokers is \"embedded\": `braid run` needs broker addresses; `braid dev` runs the embedded broker"
        );
        return ExitCode::from(crate::EXIT_CONFIG);
    }
    run_layers(config, layers, &CancellationToken::new(), |_| {})
}

/// How one layer ended.
type Ended = (&'static str, Result<(), String>);

/// Starts the layers, calls `on_serving` with the API's address once it listens, waits for a
/// signal, `cancel` or the first layer to end, then stops them all: the server stops taking
/// requests, the speed layer checkpoints, the archiver flushes.
pub fn run_layers(
    config: &Config,
    layers: &[Layer],
    cancel: &CancellationToken,
    on_serving: impl FnOnce(Option<SocketAddr>),
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("braid-serve")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let storage = match braid_store::open(&config.storage) {
        Ok(storage) => storage,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let failed = runtime.block_on(supervise(
        config,
        &storage,
        layers,
        cancel.clone(),
        on_serving,
    ));
    // Blocking work still running (a layer left behind, a request's blocking read) must not
    // keep the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs the layers as owned tasks of one [`JoinSet`]; returns whether any failed.
async fn supervise(
    config: &Config,
    storage: &Arc<dyn braid_store::Storage>,
    layers: &[Layer],
    cancel: CancellationToken,
    on_serving: impl FnOnce(Option<SocketAddr>),
) -> bool {
    let mut tasks: JoinSet<Ended> = JoinSet::new();
    // Installed before any layer starts, so no layer's first counts are lost.
    let metrics = layers
        .contains(&Layer::Serve)
        .then(braid_serving::install_metrics)
        .flatten();
    // One snapshot cache for the API and the fraud scorer.
    let snapshot = Arc::new(SnapshotCache::new(
        Arc::new(config.clone()),
        Arc::clone(storage),
    ));
    let started = async {
        let mut backends = Backends {
            metrics,
            snapshot: Some(Arc::clone(&snapshot)),
            ..Backends::default()
        };
        if layers.contains(&Layer::Speed) {
            let speed = start_speed(config, storage, &snapshot, &cancel, &mut tasks).await?;
            backends.speed = Some(speed.reader);
            backends.alerts_logged = speed.alerts_logged;
        }
        if layers.contains(&Layer::Batch) {
            backends.batch = Some(start_batch(config, storage, &cancel, &mut tasks)?);
        }
        if !layers.contains(&Layer::Serve) {
            return Ok(None);
        }
        start_serving(config, storage, backends, &cancel, &mut tasks)
            .await
            .map(Some)
    };
    let mut failed = false;
    match started.await {
        // Stopped while starting: what started is stopped again, and that is no success.
        Ok(_) if cancel.is_cancelled() => failed = true,
        Ok(serving) => {
            on_serving(serving);
            tracing::info!(?layers, "braid running; stop with Ctrl-C or SIGTERM");
        }
        Err(Failed(layer, error)) => {
            eprintln!("error: {layer}: {error}");
            cancel.cancel();
            failed = true;
        }
    }
    let signals = tokio::spawn(cancel_on_signal(cancel.clone()));
    tokio::select! {
        biased;
        () = cancel.cancelled() => {}
        Some(ended) = tasks.join_next() => {
            // A layer that ends before anyone asked it to is a failure even when it ends cleanly.
            if !cancel.is_cancelled() {
                tracing::error!("a layer stopped; stopping the others");
                failed = true;
                cancel.cancel();
            }
            failed |= report(ended);
        }
    }
    // The layers stop: the speed layer checkpoints, the archiver flushes. One that has not
    // stopped within the grace period is named and left behind, and the process exits all the
    // same, so that its supervisor starts it again.
    let mut stopped: Vec<&'static str> = Vec::new();
    let stopping = async {
        while let Some(ended) = tasks.join_next().await {
            if let Ok((layer, _)) = &ended {
                stopped.push(layer);
            }
            failed |= report(ended);
        }
    };
    if tokio::time::timeout(STOP_GRACE, stopping).await.is_err() {
        tracing::error!(
            still_running = tasks.len(),
            ?stopped,
            "layers did not stop within {STOP_GRACE:?}; exiting without them"
        );
        eprintln!(
            "error: {} layer(s) did not stop within {STOP_GRACE:?} (stopped: {})",
            tasks.len(),
            stopped.join(", ")
        );
        failed = true;
    }
    let _ = signals.await;
    failed
}

/// How long the layers may take to stop once asked (checkpoints, flushes, leases given back);
/// as Kubernetes' default termination grace period.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// A layer that could not start, and why.
struct Failed(&'static str, String);

/// What the speed layer gives the serving layer of its process.
struct Speed {
    reader: Arc<dyn braid_shared::SpeedReader>,
    alerts_logged: Option<tokio::sync::watch::Receiver<u64>>,
}

/// Starts the speed layer (scoring every applied event of the fraud source, with `snapshot`
/// shared with the API) and, with `speed.listen`, its endpoint for serving instances.
async fn start_speed(
    config: &Config,
    storage: &Arc<dyn braid_store::Storage>,
    snapshot: &Arc<SnapshotCache>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<Ended>,
) -> Result<Speed, Failed> {
    let scorer = config
        .fraud
        .clone()
        .map(|fraud| alert_scorer(config, fraud, storage, snapshot))
        .transpose()
        .map_err(|error| Failed("fraud alerts", error))?;
    let alerts_logged = scorer.as_ref().map(|s| s.logged());
    let hook = scorer.map(|s| s as Arc<dyn braid_shared::fraud::EventScorer>);
    let layer = SpeedLayer::start_scoring(config, Arc::clone(storage), hook, cancel.clone())
        .map_err(|error| Failed("speed layer", error.to_string()))?;
    let handle = layer.handle();
    let reader = Arc::new(handle.clone()) as Arc<dyn braid_shared::SpeedReader>;
    crate::metrics::layer_up("speed layer", true);
    tasks.spawn_blocking(move || ("speed layer", layer.join().map_err(|e| e.to_string())));
    if let Some(listen) = config.speed.listen {
        let endpoint = braid_speed::serve_endpoint(listen, config, handle, cancel.clone());
        let (addr, server) = endpoint
            .await
            .map_err(|error| Failed("speed layer", format!("speed.listen {listen}: {error}")))?;
        tracing::info!(%addr, "answering serving instances");
        tasks.spawn(async move {
            let ended = match server.await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            ("speed endpoint", ended)
        });
    }
    Ok(Speed {
        reader,
        alerts_logged,
    })
}

/// Starts the archiver and the batch scheduler; returns how runs are requested.
fn start_batch(
    config: &Config,
    storage: &Arc<dyn braid_store::Storage>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<Ended>,
) -> Result<Arc<dyn braid_store::BatchControl>, Failed> {
    let failed = |error: braid_batch::Error| Failed("batch layer", error.to_string());
    let archiver = Archiver::start(config, Arc::clone(storage), cancel.clone()).map_err(failed)?;
    crate::metrics::layer_up("archiver", true);
    tasks.spawn_blocking(move || ("archiver", archiver.join().map_err(|e| e.to_string())));
    let scheduler =
        BatchScheduler::start(config, Arc::clone(storage), cancel.clone()).map_err(failed)?;
    let control = Arc::new(scheduler.handle()) as Arc<dyn braid_store::BatchControl>;
    crate::metrics::layer_up("batch scheduler", true);
    tasks.spawn_blocking(move || {
        scheduler.join();
        ("batch scheduler", Ok(()))
    });
    Ok(control)
}

/// Starts the HTTP API on `serve.listen` over the layers of this process in `backends` (the
/// speed peers' cells, and runs requested through storage, where they run elsewhere); returns
/// the address it listens on.
async fn start_serving(
    config: &Config,
    storage: &Arc<dyn braid_store::Storage>,
    mut backends: Backends,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<Ended>,
) -> Result<SocketAddr, Failed> {
    let peers = &config.serve.speed_peers;
    if backends.speed.is_some() && !peers.is_empty() {
        tracing::warn!(
            "serve.speed_peers is ignored: the speed layer runs in this process and is read directly"
        );
    } else if !peers.is_empty() {
        tracing::info!(?peers, "speed cells from the speed peers");
        let remote = braid_speed::RemoteSpeed::new(Arc::new(config.clone()));
        backends.speed = Some(Arc::new(remote) as Arc<dyn braid_shared::SpeedReader>);
    }
    if backends.batch.is_none() {
        // Runs requested here are taken by the batch instance through storage.
        let requests = braid_store::StoredRequests::new(Arc::clone(storage));
        backends.batch = Some(Arc::new(requests) as Arc<dyn braid_store::BatchControl>);
    }
    let failed = |error: braid_serving::Error| Failed("serving layer", error.to_string());
    let listener = braid_serving::bind(config.serve.listen)
        .await
        .map_err(failed)?;
    let config = Arc::new(config.clone());
    let server = Server::start(
        config,
        Arc::clone(storage),
        backends,
        listener,
        cancel.clone(),
    )
    .await
    .map_err(failed)?;
    let addr = server.addr();
    crate::metrics::layer_up("serving layer", true);
    tasks.spawn(async move {
        let ended = server.join().await.map_err(|e| e.to_string());
        ("serving layer", ended)
    });
    Ok(addr)
}

/// The scorer of every applied event of `fraud`'s source, with its alerts topic when
/// `fraud.alerts_topic` names one.
fn alert_scorer(
    config: &Config,
    fraud: Arc<braid_shared::fraud::FraudDef>,
    storage: &Arc<dyn braid_store::Storage>,
    snapshot: &Arc<SnapshotCache>,
) -> Result<Arc<AlertScorer>, String> {
    let topic = fraud
        .alerts_topic
        .as_deref()
        .map(|topic| braid_kafka::TopicProducer::new(&config.kafka, "fraud.alerts_topic", topic))
        .transpose()
        .map_err(|e| e.to_string())?;
    AlertScorer::new(fraud, Arc::clone(storage), Arc::clone(snapshot), topic)
        .map_err(|e| format!("cannot start the fraud alert log thread: {e}"))
}

/// Prints how a layer ended; returns whether it failed.
fn report(ended: Result<Ended, tokio::task::JoinError>) -> bool {
    if let Ok((layer, _)) = &ended {
        crate::metrics::layer_up(layer, false);
    }
    match ended {
        Ok((_, Ok(()))) => false,
        Ok((layer, Err(error))) => {
            eprintln!("error: {layer}: {error}");
            true
        }
        Err(error) => {
            eprintln!("error: a layer panicked: {error}");
            true
        }
    }
}

/// Cancels `cancel` on SIGINT or SIGTERM; returns once `cancel` is cancelled either way.
async fn cancel_on_signal(cancel: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("interrupted; stopping"),
        () = terminate => tracing::info!("terminated; stopping"),
        () = cancel.cancelled() => return,
    }
    cancel.cancel();
}

/// Cancels a token on SIGINT or SIGTERM, from a small runtime on its own thread, for the
/// commands that run without an async runtime of their own. Dropping it stops and joins the
/// thread.
pub struct SignalWatcher {
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalWatcher {
    pub fn start(cancel: CancellationToken) -> Self {
        let stop = CancellationToken::new();
        let watched = stop.clone();
        let thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
            .and_then(|runtime| {
                std::thread::Builder::new()
                    .name("braid-signals".to_owned())
                    .spawn(move || {
                        runtime.block_on(async move {
                            tokio::select! {
                                () = cancel_on_signal(cancel) => {}
                                () = watched.cancelled() => {}
                            }
                        });
                    })
                    .ok()
            });
        if thread.is_none() {
            tracing::warn!("no signal watcher: Ctrl-C stops the process without a clean shutdown");
        }
        Self { stop, thread }
    }
}

impl Drop for SignalWatcher {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
