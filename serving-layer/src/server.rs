//! The HTTP server: hyper's HTTP/1 connections with a header-read timeout (a client trickling
//! its headers is cut off, which a plain `axum::serve` does not bound), graceful shutdown, and
//! the snapshot watcher.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use braid_shared::Config;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::routes::router;
use crate::state::{AppState, Backends};

/// Time open requests get to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);

/// A running server.
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<Result<()>>,
}

/// Binds `addr` (port 0 picks a free port) for [`Server::start`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

impl Server {
    /// Reads the published snapshot from `storage`, then serves on `listener` until `cancel`.
    pub async fn start(
        config: Arc<Config>,
        storage: Arc<dyn braid_store::Storage>,
        backends: Backends,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> Result<Self> {
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.serve.listen,
            source,
        })?;
        let header_timeout = config.serve.header_timeout.0;
        // Status reports the address bound (the port picked when the config asked for 0).
        let mut bound = (*config).clone();
        bound.serve.listen = addr;
        let state = AppState::new(Arc::new(bound), storage, backends);
        state.snapshot().refresh().await;
        // Every task the server spawns (the snapshot watcher, one per connection) is tracked,
        // and the server's own task ends only once they have.
        let tasks = TaskTracker::new();
        tasks.spawn(Arc::clone(state.snapshot()).watch(cancel.clone()));
        let app = router(state);
        let task = tokio::spawn(async move {
            let served = accept(listener, app, header_timeout, &tasks, cancel).await;
            tasks.close();
            // Connections still open past the drain are left to the runtime's shutdown.
            if tokio::time::timeout(DRAIN, tasks.wait()).await.is_err() {
                tracing::warn!(
                    open = tasks.len(),
                    "server tasks still running after the drain"
                );
            }
            served
        });
        tracing::info!(%addr, "serving the HTTP API");
        Ok(Self { addr, task })
    }

    /// The address bound (with the port picked when the config asked for 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the server to stop (after its cancellation) and its requests to drain.
    pub async fn join(self) -> Result<()> {
        self.task
            .await
            .unwrap_or_else(|e| Err(Error::Accept(std::io::Error::other(e.to_string()))))
    }
}

async fn accept(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tasks.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("HTTP server stopped"),
        () = tokio::time::sleep(DRAIN) => tracing::warn!("HTTP server stopped with requests still open"),
    }
    Ok(())
}
