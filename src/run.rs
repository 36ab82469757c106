//! `braid run`: the chosen layers until SIGINT or SIGTERM, or until one fails; `braid batch`:
//! one recompute.

use std::process::ExitCode;
use std::time::Duration;

use braid_batch::{Archiver, BatchRunner, BatchScheduler, RunState, Trigger};
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

/// Starts the layers, waits for a signal or a layer's failure, then stops them all.
pub fn run(config: &Config, layers: &[Layer]) -> ExitCode {
    let cancel = CancellationToken::new();
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
    tracing::info!(?layers, "braid running; stop with Ctrl-C or SIGTERM");
    let watcher = watch_signals(cancel.clone());
    while !cancel.is_cancelled() {
        let speed_done = speed.as_ref().is_some_and(SpeedLayer::is_finished);
        let archive_done = archiver.as_ref().is_some_and(Archiver::is_finished);
        if speed_done || archive_done {
            tracing::error!("a layer stopped; stopping the others");
            failed = true;
            cancel.cancel();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(watcher);
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
fn watch_signals(cancel: CancellationToken) -> Option<std::thread::JoinHandle<()>> {
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
