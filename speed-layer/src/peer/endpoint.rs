//! The speed instance's endpoint (`speed.listen`): per partition it holds, its cells of a view
//! above a given coverage and the offset it reached.

use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use braid_shared::{CellQuery, Config, PartitionStatus, SpeedReader};

use crate::state::SpeedHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Refusal;

use super::wire::{CELLS_PATH, CellsRequest, STATUS_PATH, encode};

/// Largest request the endpoint reads.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// What the endpoint answers from.
#[derive(Clone)]
struct Endpoint {
    reader: SpeedHandle,
    /// Per view, its number of group-by fields (a request naming each is a point read).
    widths: Arc<HashMap<String, usize>>,
}

/// Serves `reader`'s partitions of `config`'s views on `listen` until `cancel`; returns the
/// bound address and the server's task.
pub async fn serve(
    listen: SocketAddr,
    config: &Config,
    reader: SpeedHandle,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // Answers leave at once, without Nagle's wait for the previous segment's acknowledgement.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let widths = config
        .views
        .iter()
        .map(|view| (view.name.clone(), view.group_by.len()))
        .collect();
    let app = axum::Router::new()
        .route(CELLS_PATH, post(cells))
        .route(STATUS_PATH, get(status))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(Endpoint {
            reader,
            widths: Arc::new(widths),
        });
    let task = tokio::spawn(async move {
        let stopping = cancel.clone();
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopping.cancelled().await })
            .into_future();
        // A serving instance's pooled connection, idle or opened and not used yet, holds a
        // graceful shutdown open for as long as that instance keeps it (found by the torture
        // suite: a speed instance whose layer had failed did not exit until its serving
        // instance stopped). Once asked to stop, requests in flight get `DRAIN`.
        tokio::select! {
            served = server => served,
            () = async {
                cancel.cancelled().await;
                tokio::time::sleep(DRAIN).await;
            } => {
                tracing::warn!("speed endpoint stopped with connections still open");
                Ok(())
            }
        }
    });
    Ok((addr, task))
}

/// How long requests in flight may take once the endpoint is asked to stop, as the serving
/// layer's API gives its own.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

async fn cells(State(endpoint): State<Endpoint>, body: Bytes) -> Response {
    let request: CellsRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return Refusal::BadRequest(format!("bad request: {e}")).into_response(),
    };
    let query = CellQuery {
        from_ms: request.from_ms,
        to_ms: request.to_ms,
        filters: request.filters,
    };
    let point = endpoint
        .widths
        .get(&request.view)
        .is_some_and(|&fields| query.point_key(fields).is_some());
    let reader = endpoint.reader;
    let read = move || reader.read_each(&request.view, &query, &request.coverage);
    // A point read takes microseconds: answered from this thread, without two hand-overs
    // between threads (each costs more than the read on a busy machine). Wider reads go to
    // the blocking pool, so the runtime's other requests are not held up behind them.
    let read = if point {
        read()
    } else {
        match tokio::task::spawn_blocking(read).await {
            Ok(read) => read,
            Err(e) => return Refusal::Internal(e.to_string()).into_response(),
        }
    };
    match read {
        Ok(parts) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            encode(&parts),
        )
            .into_response(),
        Err(error) => Refusal::Read(error).into_response(),
    }
}

async fn status(State(endpoint): State<Endpoint>) -> Response {
    let status: BTreeMap<String, PartitionStatus> = endpoint
        .reader
        .status()
        .into_iter()
        .map(|(tp, s)| (tp.to_string(), s))
        .collect();
    axum::Json(status).into_response()
}
