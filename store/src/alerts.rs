//! The fraud alert log: one object per alert, `fraud/alerts/<topic>/<p>/<offset>.json`, created
//! only if absent. An alert's id is its event's `<topic>/<partition>/<offset>`, so the event
//! replayed after a crash, a restart or a rebalance finds its alert there and raises none.
//! Alerts are visible when logged and durable at the next [`flush`], which the speed layer
//! makes before the checkpoint that covers their events: a crash before it replays them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout;
use crate::storage::{Put, Storage};

/// One raised alert, as `GET /v1/fraud/alerts` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `<topic>/<partition>/<offset>` of the scored event.
    pub id: String,
    /// The value of `fraud.key`.
    pub key: serde_json::Value,
    pub score: f64,
    /// Names of the rules that fired.
    pub rules: Vec<String>,
    pub features: BTreeMap<String, Option<f64>>,
    /// The event's decoded fields.
    pub event: serde_json::Map<String, serde_json::Value>,
    /// `<topic>/<partition>`.
    pub partition: String,
    pub offset: i64,
    pub event_time: String,
    pub event_time_ms: i64,
    pub raised_at: String,
    pub raised_at_ms: i64,
}

/// Logs the alerts of one run of a partition, each created only if its id has none yet,
/// visible when this returns and durable at the next [`flush`]: whether each is new (false: a
/// replay found it logged). An alert found damaged (a machine crash before the flush of its
/// first write) is replaced, and counts as new.
pub fn raise_all(
    storage: &dyn Storage,
    topic: &str,
    partition: i32,
    alerts: &[Alert],
) -> Result<Vec<bool>> {
    let mut objects = Vec::with_capacity(alerts.len());
    for alert in alerts {
        let bytes = serde_json::to_vec(alert).map_err(|e| Error::Encode {
            what: "fraud alert",
            reason: e.to_string(),
        })?;
        objects.push((layout::fraud_alert(topic, partition, alert.offset), bytes));
    }
    let puts = storage.put_all_if_absent_unflushed(&objects)?;
    let mut new = Vec::with_capacity(puts.len());
    for ((key, bytes), put) in objects.iter().zip(puts) {
        new.push(match put {
            Put::Written(_) => true,
            Put::Conflict => replace_if_damaged(storage, key, bytes)?,
        });
    }
    Ok(new)
}

/// Makes every alert logged so far durable.
pub fn flush(storage: &dyn Storage) -> Result<()> {
    Ok(storage.flush()?)
}

/// Replaces the logged alert at `key` with `bytes` if it does not read as an alert.
fn replace_if_damaged(storage: &dyn Storage, key: &str, bytes: &[u8]) -> Result<bool> {
    let Some(object) = storage.get(key)? else {
        // Removed by retention since: the alert was logged.
        return Ok(false);
    };
    if serde_json::from_slice::<Alert>(&object.bytes).is_ok() {
        return Ok(false);
    }
    tracing::warn!(key, "a damaged fraud alert is written again");
    Ok(matches!(
        storage.put_if_unchanged(key, bytes, &object.version)?,
        Put::Written(_)
    ))
}

/// The logged alert of one event, if any.
pub fn read(
    storage: &dyn Storage,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<Alert>> {
    read_key(storage, &layout::fraud_alert(topic, partition, offset))
}

/// The keys of every logged alert.
pub fn keys(storage: &dyn Storage) -> Result<Vec<String>> {
    Ok(storage
        .list(layout::FRAUD_ALERTS)?
        .into_iter()
        .map(|listed| listed.key)
        .collect())
}

/// The alert logged at `key` (`None`: removed since it was listed).
pub fn read_key(storage: &dyn Storage, key: &str) -> Result<Option<Alert>> {
    let Some(object) = storage.get(key)? else {
        return Ok(None);
    };
    serde_json::from_slice(&object.bytes)
        .map(Some)
        .map_err(|e| Error::codec("fraud alert", key)(e.to_string()))
}

/// Every logged alert (unreadable objects are skipped and reported in the second value).
pub fn read_all(storage: &dyn Storage) -> Result<(Vec<Alert>, usize)> {
    let mut seen = std::collections::HashSet::new();
    let (alerts, unreadable) = read_new(storage, &mut seen)?;
    Ok((alerts, unreadable))
}

/// The logged alerts whose keys are not in `seen`, which then holds exactly the keys logged
/// now: a follower reads each alert once, however many are kept (an alert never changes).
pub fn read_new(
    storage: &dyn Storage,
    seen: &mut std::collections::HashSet<String>,
) -> Result<(Vec<Alert>, usize)> {
    let mut alerts = Vec::new();
    let mut unreadable = 0;
    let mut listed_now = std::collections::HashSet::with_capacity(seen.len());
    for listed in storage.list(layout::FRAUD_ALERTS)? {
        if seen.contains(&listed.key) {
            listed_now.insert(listed.key);
            continue;
        }
        let Some(object) = storage.get(&listed.key)? else {
            continue;
        };
        match serde_json::from_slice::<Alert>(&object.bytes) {
            Ok(alert) => alerts.push(alert),
            Err(_) => unreadable += 1,
        }
        listed_now.insert(listed.key);
    }
    *seen = listed_now;
    Ok((alerts, unreadable))
}

/// Removes alerts raised before `before_ms`; returns how many.
pub fn expire(storage: &dyn Storage, before_ms: i64) -> Result<usize> {
    let mut removed = 0;
    for listed in storage.list(layout::FRAUD_ALERTS)? {
        let Some(object) = storage.get(&listed.key)? else {
            continue;
        };
        let old = serde_json::from_slice::<Alert>(&object.bytes)
            .is_ok_and(|alert| alert.raised_at_ms < before_ms);
        if old {
            storage.delete(&listed.key)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStorage;

    fn alert(offset: i64, raised_at_ms: i64) -> Alert {
        Alert {
            id: format!("t/0/{offset}"),
            key: serde_json::json!("card-1"),
            score: 0.9,
            rules: vec!["burst".into()],
            features: BTreeMap::from([("tx_10m".to_owned(), Some(9.0))]),
            event: serde_json::Map::new(),
            partition: "t/0".into(),
            offset,
            event_time: String::new(),
            event_time_ms: 0,
            raised_at: String::new(),
            raised_at_ms,
        }
    }

    #[test]
    fn a_follower_reads_each_alert_once() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let mut seen = std::collections::HashSet::new();
        raise_all(&storage, "t", 0, &[alert(1, 100), alert(2, 100)]).unwrap();
        assert_eq!(read_new(&storage, &mut seen).unwrap().0.len(), 2);
        assert!(read_new(&storage, &mut seen).unwrap().0.is_empty());
        raise_all(&storage, "t", 1, &[alert(3, 300)]).unwrap();
        let (fresh, _) = read_new(&storage, &mut seen).unwrap();
        assert_eq!(fresh.iter().map(|a| a.offset).collect::<Vec<_>>(), [3]);
        // Expired alerts leave the set: it holds what is kept, no more.
        expire(&storage, 200).unwrap();
        assert!(read_new(&storage, &mut seen).unwrap().0.is_empty());
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn an_alert_is_raised_once_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        assert_eq!(
            raise_all(&storage, "t", 0, &[alert(7, 100)]).unwrap(),
            [true]
        );
        // The replayed event, scored again (even differently), finds its alert; the next one
        // of the same run is new.
        assert_eq!(
            raise_all(&storage, "t", 0, &[alert(7, 200), alert(8, 300)]).unwrap(),
            [false, true]
        );
        let (alerts, unreadable) = read_all(&storage).unwrap();
        assert_eq!((alerts.len(), unreadable), (2, 0));
        assert_eq!(alerts[0].raised_at_ms, 100, "the first write is kept");
        assert_eq!(expire(&storage, 200).unwrap(), 1);
        let (alerts, _) = read_all(&storage).unwrap();
        assert_eq!(alerts.iter().map(|a| a.offset).collect::<Vec<_>>(), vec![8]);
    }

    #[test]
    fn an_alert_damaged_before_its_flush_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        // What a machine crash can leave of an alert logged but not yet flushed.
        let key = layout::fraud_alert("t", 0, 5);
        storage.put_if_absent(&key, b"").unwrap();
        // Its replay replaces it and counts as new; a whole alert found is kept.
        assert_eq!(
            raise_all(&storage, "t", 0, &[alert(5, 100), alert(6, 100)]).unwrap(),
            [true, true]
        );
        assert_eq!(read(&storage, "t", 0, 5).unwrap(), Some(alert(5, 100)));
        assert_eq!(
            raise_all(&storage, "t", 0, &[alert(5, 200)]).unwrap(),
            [false]
        );
        assert_eq!(
            read(&storage, "t", 0, 5).unwrap().unwrap().raised_at_ms,
            100
        );
        // Visible before the flush; the flush leaves them as they are.
        flush(&storage).unwrap();
        flush(&storage).unwrap();
        assert_eq!(
            read_all(&storage).unwrap(),
            (vec![alert(5, 100), alert(6, 100)], 0)
        );
    }
}
