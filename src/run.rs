//! `braid run`: the chosen layers until SIGINT or SIGTERM, or until one fails; `braid batch`:
//! one recompute.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use braid_batch::{Archiver, BatchRunner, BatchScheduler, RunState, Trigger};
use braid_serving::{Backends, Server};
use braid_shared::Config;
use braid_speed::SpeedLayer;
use tokio_util::sync::CancellationToken;

use crate::cli::Layer;

/// One batch recompute; prints its record as JSON. Exit 0 when published, 1 otherwise.
pub fn batch(config: &Config, full: bool) -> ExitCode {
    let runner = match BatchRunner::new(config) {
        Ok(runner) => runner,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(crate::EXIT_CONFIG);
        }
    };
    let cancel = CancellationToken::new();
    let watcher = watch_signals(cancel.clone());
    let outcome = runner.run(Trigger::Command, full, &cancel);
    drop(watcher);
    match outcome {
        Ok(record) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&record).unwrap_or_default()
            );
            match (record.state, &record.error) {
                (RunState::Succeeded, _) => ExitCode::SUCCESS,
                (_, error) => {
                    eprintln!(
                        "error: batch run {} failed: {}",
                        record.id,
                        error.as_deref().unwrap_or("unknown")
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
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

/// Starts the layers, calls `on_serving` with the API's address once it listens, waits for a
/// signal, `cancel` or a layer's failure, then stops them all: the server stops taking
/// requests, the speed layer checkpoints, the archiver flushes.
pub fn run_layers(
    config: &Config,
    layers: &[Layer],
    cancel: &CancellationToken,
    on_serving: impl FnOnce(Option<SocketAddr>),
) -> ExitCode {
    let cancel = cancel.clone();
    let mut failed = false;
    let speed = if layers.contains(&Layer::Speed) {
        match SpeedLayer::start(config, cancel.clone()) {
            Ok(layer) => Some(layer),
            Err(error) => {
                eprintln!("error: speed layer: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let (archiver, scheduler) = if layers.contains(&Layer::Batch) {
        let archiver = Archiver::start(config, cancel.clone());
        let scheduler = BatchScheduler::start(config, cancel.clone());
        match (archiver, scheduler) {
            (Ok(a), Ok(s)) => (Some(a), Some(s)),
            (a, s) => {
                for error in [a.err(), s.err()].into_iter().flatten() {
                    eprintln!("error: batch layer: {error}");
                }
                cancel.cancel();
                if let Some(speed) = speed {
                    let _ = speed.join();
                }
                return ExitCode::FAILURE;
            }
        }
    } else {
        (None, None)
    };
    let mut server = None;
    let runtime = if layers.contains(&Layer::Serve) {
        let backends = Backends {
            speed: speed
                .as_ref()
                .map(|s| Arc::new(s.handle()) as Arc<dyn braid_shared::SpeedReader>),
            batch: scheduler
                .as_ref()
                .map(|s| Arc::new(s.handle()) as Arc<dyn braid_store::BatchControl>),
            metrics: braid_serving::install_metrics(),
        };
        let started = tokio::runtime::Builder::new_multi_thread()
            .thread_name("braid-serve")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| {
                let config = Arc::new(config.clone());
                runtime
                    .block_on(Server::start(config, backends, cancel.clone()))
                    .map(|s| (runtime, s))
                    .map_err(|e| e.to_string())
            });
        match started {
            Ok((runtime, started)) => {
                server = Some(started);
                Some(runtime)
            }
            Err(error) => {
                eprintln!("error: serving layer: {error}");
                failed = true;
                cancel.cancel();
                None
            }
        }
    } else {
        None
    };
    on_serving(server.as_ref().map(Server::addr));
    tracing::info!(?layers, "braid running; stop with Ctrl-C or SIGTERM");
    let watcher = watch_signals(cancel.clone());
    while !cancel.is_cancelled() {
        let speed_done = speed.as_ref().is_some_and(SpeedLayer::is_finished);
        let archive_done = archiver.as_ref().is_some_and(Archiver::is_finished);
        let serve_done = server.as_ref().is_some_and(Server::is_finished);
        if speed_done || archive_done || serve_done {
            tracing::error!("a layer stopped; stopping the others");
            failed = true;
            cancel.cancel();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(watcher);
    if let (Some(runtime), Some(server)) = (&runtime, server)
        && let Err(error) = runtime.block_on(server.join())
    {
        eprintln!("error: serving layer: {error}");
        failed = true;
    }
    if let Some(speed) = speed
        && let Err(error) = speed.join()
    {
        eprintln!("error: speed layer: {error}");
        failed = true;
    }
    if let Some(archiver) = archiver
        && let Err(error) = archiver.join()
    {
        eprintln!("error: archiver: {error}");
        failed = true;
    }
    if let Some(scheduler) = scheduler {
        scheduler.join();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Cancels `cancel` on SIGINT or SIGTERM, from a small runtime on its own thread.
pub fn watch_signals(cancel: CancellationToken) -> Option<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    std::thread::Builder::new()
        .name("braid-signals".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let interrupt = tokio::signal::ctrl_c();
                #[cfg(unix)]
                let terminate = async {
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
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
                    () = cancel.cancelled() => {}
                }
                cancel.cancel();
            });
        })
        .ok()
}
