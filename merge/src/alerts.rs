//! The fraud alerts the scorer logged, listed: filtered by event time and key, newest first.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use braid_store::Storage;
use braid_store::alerts::{self, Alert};

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

/// Every alert read so far, by its key in storage. An alert never changes once logged, so a
/// list fetches only the alerts logged since the one before: on an object store, where each
/// alert is one request, a list costs one listing plus the new alerts.
#[derive(Default)]
pub struct KnownAlerts(Mutex<HashMap<String, Alert>>);

/// Alerts fetched at once when many are new.
const FETCHERS: usize = 8;

/// The alerts `filter` keeps, newest raised first, at most `limit`; alerts that cannot be read
/// are skipped (and logged).
pub fn list(
    storage: &dyn Storage,
    known: &KnownAlerts,
    filter: &Filter,
    limit: usize,
) -> braid_store::Result<Vec<Alert>> {
    let keys = alerts::keys(storage)?;
    let new: Vec<&String> = {
        let known = known.0.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter().filter(|k| !known.contains_key(*k)).collect()
    };
    let unreadable = AtomicUsize::new(0);
    let failure: Mutex<Option<braid_store::Error>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..FETCHERS.min(new.len()) {
            scope.spawn(|| {
                while let Some(key) = new.get(next.fetch_add(1, Ordering::Relaxed)) {
                    match alerts::read_key(storage, key) {
                        Ok(Some(alert)) => {
                            let mut known = known.0.lock().unwrap_or_else(|e| e.into_inner());
                            known.insert((*key).clone(), alert);
                        }
                        // Removed by retention since it was listed.
                        Ok(None) => {}
                        Err(braid_store::Error::Codec { .. }) => {
                            unreadable.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(error);
    }
    let unreadable = unreadable.into_inner();
    if unreadable > 0 {
        tracing::warn!(unreadable, "fraud alerts that cannot be read were skipped");
    }
    let listed: HashSet<&String> = keys.iter().collect();
    let mut known = known.0.lock().unwrap_or_else(|e| e.into_inner());
    // Alerts retention removed are forgotten.
    known.retain(|key, _| listed.contains(key));
    let mut found: Vec<Alert> = known
        .values()
        .filter(|a| filter.keeps(a))
        .cloned()
        .collect();
    drop(known);
    found.sort_by(|a, b| {
        (b.raised_at_ms, &b.partition, b.offset).cmp(&(a.raised_at_ms, &a.partition, a.offset))
    });
    found.truncate(limit);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use braid_store::LocalStorage;
    use braid_store::alerts::raise_all;

    use super::*;

    fn alert(offset: i64, key: &str, time_ms: i64) -> Alert {
        Alert {
            id: format!("t/0/{offset}"),
            key: serde_json::json!(key),
            score: 0.9,
            rules: vec!["large".into()],
            features: BTreeMap::new(),
            event: serde_json::Map::new(),
            partition: "t/0".into(),
            offset,
            event_time: String::new(),
            event_time_ms: time_ms,
            raised_at: String::new(),
            raised_at_ms: offset,
        }
    }

    fn offsets(alerts: &[Alert]) -> Vec<i64> {
        alerts.iter().map(|a| a.offset).collect()
    }

    /// Each alert is read from storage once: a list after more were raised fetches only those,
    /// and alerts removed by retention are forgotten.
    #[test]
    fn a_list_fetches_only_alerts_raised_since_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let known = KnownAlerts::default();
        let all = Filter {
            from: i64::MIN,
            to: i64::MAX,
            key: None,
        };
        let raised: Vec<Alert> = (1..=40)
            .map(|o| alert(o, if o % 2 == 0 { "even" } else { "odd" }, o * 10))
            .collect();
        raise_all(&storage, "t", 0, &raised).unwrap();
        let listed = list(&storage, &known, &all, 100).unwrap();
        assert_eq!(offsets(&listed), (1..=40).rev().collect::<Vec<_>>());

        // Alert 5 damaged in storage after it was read: the list still has it as it was read,
        // so it was not fetched again.
        let key = braid_store::layout::fraud_alert("t", 0, 5);
        std::fs::write(storage.location(&key), b"{damaged").unwrap();
        raise_all(&storage, "t", 0, &[alert(41, "odd", 410)]).unwrap();
        let listed = list(&storage, &known, &all, 100).unwrap();
        assert_eq!(listed.len(), 41);
        assert_eq!(listed[0].offset, 41);

        // Filters and the limit, newest first.
        let odd = Filter {
            from: 100,
            to: 300,
            key: Some("odd".into()),
        };
        assert_eq!(
            offsets(&list(&storage, &known, &odd, 3).unwrap()),
            [29, 27, 25]
        );

        // Removed by retention: forgotten. Retention cannot read the damaged alert 5, so it
        // stays, and the cache holds it as read; a fresh cache skips it.
        braid_store::alerts::expire(&storage, 21).unwrap();
        let kept = offsets(&list(&storage, &known, &all, 100).unwrap());
        assert_eq!(kept.len(), 22);
        assert_eq!(kept.last(), Some(&5));
        let fresh = list(&storage, &KnownAlerts::default(), &all, 100).unwrap();
        assert_eq!(offsets(&fresh), (21..=41).rev().collect::<Vec<_>>());
    }
}
