//! The live alert stream (`GET /v1/fraud/alerts` as `text/event-stream`): alerts read from the
//! log the scorer writes, as server-sent events.

use std::sync::Arc;
use std::time::Duration;

use braid_merge::alerts::Filter;
use braid_store::Storage;
use braid_store::alerts::{self, Alert};

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
