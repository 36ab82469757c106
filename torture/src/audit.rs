//! The checks of a quiet system, once the faults ended and every answer caught up: SQL over
//! the merged views and over the archive, lineage re-folds, event pages and as-of replays, each
//! against the oracle.

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_shared::{Config, Event, ViewState};
use braid_testkit::oracle::{Produced, same};
use serde_json::Value as Json;

/// Why a check did not pass.
enum Verdict {
    /// Not (yet) every acknowledged event: asked again until a deadline.
    Behind(String),
    /// A wrong answer.
    Wrong(String),
}

/// What the checks compared and what they found wrong.
#[derive(Debug, Default)]
pub struct Audit {
    pub answers: usize,
    pub failures: Vec<String>,
}

/// Everything the checks need: a serving process, the oracle, the topic.
pub struct Quiet<'a> {
    pub agent: &'a ureq::Agent,
    pub base: &'a str,
    pub config: &'a Config,
    pub topic: &'a str,
    pub produced: &'a Produced,
}

impl Quiet<'_> {
    fn all_events(&self) -> Vec<Event> {
        self.produced.events()
    }

    /// Asks again while the answer is 503 or nothing answers, for up to 20 s: a rebalance that
    /// started before the system went quiet (an instance leaving) may still be moving
    /// partitions, and answers say so until it ends.
    fn settled(&self, ask: impl Fn() -> (u16, Json)) -> (u16, Json) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (status, answer) = ask();
            if !matches!(status, 0 | 503) || std::time::Instant::now() > deadline {
                return (status, answer);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn sql(&self, query: &str) -> (u16, Json) {
        self.settled(|| self.sql_once(query))
    }

    fn get(&self, path: &str) -> (u16, Json) {
        self.settled(|| self.get_once(path))
    }

    fn sql_once(&self, query: &str) -> (u16, Json) {
        let body = serde_json::json!({ "sql": query }).to_string();
        match self
            .agent
            .post(&format!("{}/v1/sql", self.base))
            .header("content-type", "application/json")
            .send(&body)
        {
            Ok(mut response) => {
                let status = response.status().as_u16();
                (
                    status,
                    response.body_mut().read_json().unwrap_or(Json::Null),
                )
            }
            Err(_) => (0, Json::Null),
        }
    }

    fn get_once(&self, path: &str) -> (u16, Json) {
        match self.agent.get(&format!("{}{path}", self.base)).call() {
            Ok(mut response) => {
                let status = response.status().as_u16();
                (
                    status,
                    response.body_mut().read_json().unwrap_or(Json::Null),
                )
            }
            Err(_) => (0, Json::Null),
        }
    }

    /// Runs `check` until it passes, a wrong answer shows, or 20 s pass: an answer behind the
    /// acknowledged events (a rebalance after the system went quiet restores a partition from
    /// its checkpoint and reads on) is asked again; one that contradicts its own provenance is
    /// wrong at once.
    fn eventually(&self, check: fn(&Self) -> Result<usize, Verdict>) -> Result<usize, String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match check(self) {
                Ok(n) => return Ok(n),
                Err(Verdict::Wrong(failure)) => return Err(failure),
                Err(Verdict::Behind(failure)) if std::time::Instant::now() > deadline => {
                    return Err(format!("20 s after the system went quiet: {failure}"));
                }
                Err(Verdict::Behind(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
            }
        }
    }

    /// Runs every check.
    pub fn audit(&self, earlier: &[(String, Json)]) -> Audit {
        let mut audit = Audit::default();
        for check in [
            Self::views_by_sql,
            Self::lineage_refolds,
            Self::event_pages,
            Self::fraud_alerts,
        ] {
            match self.eventually(check) {
                Ok(n) => audit.answers += n,
                Err(failure) => audit.failures.push(failure),
            }
        }
        match self.as_of_replays(earlier) {
            Ok(n) => audit.answers += n,
            Err(failure) => audit.failures.push(failure),
        }
        audit
    }

    /// Whether the archive, as SQL sees it, holds every valid event of every partition yet
    /// (the archiver flushes on its own schedule); an error for an answer that is neither.
    pub fn archive_caught_up(&self) -> Result<bool, String> {
        let expected: Vec<(i64, i64)> = self
            .produced
            .partitions
            .iter()
            .enumerate()
            .map(|(p, events)| (p as i64, events.iter().flatten().count() as i64))
            .filter(|(_, n)| *n > 0)
            .collect();
        let (status, answer) =
            self.sql("SELECT _partition, count(*) AS n FROM events_payments GROUP BY 1 ORDER BY 1");
        let got: Vec<(i64, i64)> = answer["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| (r[0].as_i64().unwrap_or(-1), r[1].as_i64().unwrap_or(-1)))
                    .collect()
            })
            .unwrap_or_default();
        match status {
            200 if got == expected => Ok(true),
            // Fewer is catching up; more is events the oracle never acknowledged.
            200 if got
                .iter()
                .zip(&expected)
                .any(|(g, e)| g.0 == e.0 && g.1 > e.1) =>
            {
                Err(format!(
                    "the archive, by SQL, holds more events than were acknowledged: \
                 (partition, events) {got:?}, expected {expected:?}"
                ))
            }
            200 | 0 | 503 => Ok(false),
            status => Err(format!("SQL over the archive answered {status}: {answer}")),
        }
    }

    /// `view_country_hour` summed by country equals the oracle's counts.
    fn views_by_sql(&self) -> Result<usize, Verdict> {
        let (status, answer) = self.sql(
            "SELECT country, sum(tx) AS tx FROM view_country_hour GROUP BY country ORDER BY country",
        );
        if status != 200 {
            return Err(Verdict::Wrong(format!(
                "SQL over view_country_hour answered {status}: {answer}"
            )));
        }
        let view = Arc::clone(
            self.config
                .view("country_hour")
                .ok_or_else(|| Verdict::Wrong("no country_hour view".to_owned()))?,
        );
        let state = ViewState::recompute(view, &self.all_events());
        let metrics = &state.view().metrics;
        let tx = metrics
            .iter()
            .position(|m| m.name == "tx")
            .ok_or_else(|| Verdict::Wrong("no tx metric".to_owned()))?;
        let mut expected: BTreeMap<String, i64> = BTreeMap::new();
        for (key, states) in state.cells() {
            let country = key.group.0[0].to_json().to_string();
            let tx = states[tx]
                .finalize(&metrics[tx].expr)
                .as_i64()
                .unwrap_or(-1);
            *expected.entry(country).or_default() += tx;
        }
        let got: BTreeMap<String, i64> = answer["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| (r[0].to_string(), r[1].as_f64().unwrap_or(-1.0) as i64))
                    .collect()
            })
            .unwrap_or_default();
        if got == expected {
            Ok(1)
        } else {
            // The merged views hold no provenance here: fewer is catching up, more is wrong.
            let more = got
                .iter()
                .any(|(country, n)| *n > expected.get(country).copied().unwrap_or(0));
            let message = format!(
                "SQL sum(tx) by country over view_country_hour: {got:?}, expected {expected:?}"
            );
            Err(if more {
                Verdict::Wrong(message)
            } else {
                Verdict::Behind(message)
            })
        }
    }

    /// The lineage of card-7's cells: its ranges do not overlap, cover every acknowledged
    /// offset, and folding the oracle's events at exactly those ranges gives `value`.
    fn lineage_refolds(&self) -> Result<usize, Verdict> {
        let view = Arc::clone(
            self.config
                .view("card_minute")
                .ok_or_else(|| Verdict::Wrong("no card_minute view".to_owned()))?,
        );
        let all = ViewState::recompute(Arc::clone(&view), &self.all_events());
        let cells: Vec<i64> = all
            .cells()
            .filter(|(key, _)| key.group.0[0].to_json() == "card-7")
            .map(|(key, _)| key.bucket_ms)
            .take(4)
            .collect();
        let mut checked = 0;
        for bucket in cells {
            let time = braid_testkit::oracle::rfc3339(bucket);
            let (status, lineage) = self.get(&format!(
                "/v1/lineage/card_minute?bucket={time}&card_id=card-7"
            ));
            let failed = format!("lineage of card-7 at {time} answered {status}: {lineage}");
            match status {
                200 => {}
                // A cell whose events a restored partition has not read again yet.
                404 => return Err(Verdict::Behind(failed)),
                _ => return Err(Verdict::Wrong(failed)),
            }
            let mut ranges: Vec<(usize, i64, i64)> = Vec::new();
            for layer in lineage["batch"]["layers"].as_array().into_iter().flatten() {
                for (name, to) in layer["to"].as_object().into_iter().flatten() {
                    let from = layer["from"][name].as_i64().unwrap_or(0);
                    ranges.push((
                        self.partition(name).map_err(Verdict::Wrong)?,
                        from,
                        to.as_i64().unwrap_or(0),
                    ));
                }
            }
            for range in lineage["speed"]["ranges"].as_array().into_iter().flatten() {
                let name = range["partition"].as_str().unwrap_or_default();
                ranges.push((
                    self.partition(name).map_err(Verdict::Wrong)?,
                    range["from"].as_i64().unwrap_or(0),
                    range["to"].as_i64().unwrap_or(0),
                ));
            }
            ranges.sort_unstable();
            for pair in ranges.windows(2) {
                if pair[0].0 == pair[1].0 && pair[0].2 > pair[1].1 {
                    return Err(Verdict::Wrong(format!(
                        "lineage ranges overlap: {pair:?}\n{lineage}"
                    )));
                }
            }
            let events: Vec<Event> = ranges
                .iter()
                .flat_map(|&(p, from, to)| {
                    let events = &self.produced.partitions[p];
                    let (from, to) = (from.max(0) as usize, (to.max(0) as usize).min(events.len()));
                    events[from.min(to)..to].iter().flatten().cloned()
                })
                .collect();
            let folded = ViewState::recompute(Arc::clone(&view), &events);
            let states = folded
                .cells()
                .find(|(key, _)| key.bucket_ms == bucket && key.group.0[0].to_json() == "card-7")
                .map(|(_, states)| states.to_vec())
                .unwrap_or_default();
            let expected: serde_json::Map<String, Json> = view
                .metrics
                .iter()
                .zip(&states)
                .map(|(m, s)| (m.name.clone(), s.finalize(&m.expr)))
                .collect();
            same(&lineage["value"], &Json::Object(expected), "value").map_err(|d| {
                Verdict::Wrong(format!(
                    "lineage re-fold of card-7 at {time}: {d}\n{lineage}"
                ))
            })?;
            let full = all
                .cells()
                .find(|(key, _)| key.bucket_ms == bucket && key.group.0[0].to_json() == "card-7")
                .map(|(_, states)| states.to_vec())
                .unwrap_or_default();
            let everything: serde_json::Map<String, Json> = view
                .metrics
                .iter()
                .zip(&full)
                .map(|(m, s)| (m.name.clone(), s.finalize(&m.expr)))
                .collect();
            same(&lineage["value"], &Json::Object(everything), "value").map_err(|d| {
                Verdict::Behind(format!(
                    "lineage of card-7 at {time} misses acknowledged events: {d}\n{lineage}"
                ))
            })?;
            checked += 1;
        }
        Ok(checked)
    }

    fn partition(&self, name: &str) -> Result<usize, String> {
        name.strip_prefix(self.topic)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|p| p.parse::<usize>().ok())
            .filter(|p| *p < self.produced.partitions.len())
            .ok_or_else(|| format!("lineage names an unknown partition {name:?}"))
    }

    /// Every page of `/v1/events` over all time, 97 events a page, cursor after cursor: each
    /// acknowledged valid event listed once, in (partition, offset) order, at its event time,
    /// and nothing else. Returns the pages read.
    fn event_pages(&self) -> Result<usize, Verdict> {
        let expected: Vec<(usize, i64, i64)> = self
            .produced
            .partitions
            .iter()
            .enumerate()
            .flat_map(|(p, events)| {
                events
                    .iter()
                    .enumerate()
                    .filter_map(move |(o, e)| e.as_ref().map(|e| (p, o as i64, e.time_ms)))
            })
            .collect();
        let (mut got, mut pages, mut cursor) = (Vec::new(), 0, String::new());
        loop {
            let path = format!("/v1/events/payments?from=0&to=now%2B3650d&limit=97{cursor}");
            let (status, page) = self.get(&path);
            if status != 200 {
                return Err(Verdict::Wrong(format!("{path} answered {status}: {page}")));
            }
            pages += 1;
            for event in page["events"].as_array().into_iter().flatten() {
                let partition = event["partition"]
                    .as_str()
                    .ok_or_else(|| Verdict::Wrong(format!("an event without partition: {event}")))
                    .and_then(|name| self.partition(name).map_err(Verdict::Wrong))?;
                let time = event["event_time"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.timestamp_millis());
                got.push((
                    partition,
                    event["offset"].as_i64().unwrap_or(-1),
                    time.unwrap_or(i64::MIN),
                ));
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        if got == expected {
            return Ok(pages);
        }
        let known: std::collections::BTreeSet<_> = expected.iter().collect();
        let mut seen = std::collections::BTreeSet::new();
        let foreign = got.iter().find(|e| !known.contains(e) || !seen.insert(*e));
        let ordered = got.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1));
        match foreign {
            Some(event) => Err(Verdict::Wrong(format!(
                "event pages list (partition, offset, time) {event:?}, not an acknowledged event or listed twice"
            ))),
            None if !ordered => Err(Verdict::Wrong(
                "event pages are not in (partition, offset) order".to_owned(),
            )),
            // Some acknowledged events not listed yet: the broker's answer of the unarchived
            // ones may lag.
            None => Err(Verdict::Behind(format!(
                "event pages list {} of {} acknowledged events",
                got.len(),
                expected.len()
            ))),
        }
    }

    /// `/v1/fraud/alerts`: every alert is for an acknowledged valid event above the rule's
    /// amount (duplicates sent twice included: each is an event at its own offset), at its
    /// offset, with the rule that fired, listed once; and every such event at or past the batch
    /// coverage has its alert. (The speed layer scores the events it applies: one a batch run
    /// covered before any speed instance read it is never scored.)
    fn fraud_alerts(&self) -> Result<usize, Verdict> {
        let (status, answer) = self.get(&crate::run::ASKED[0].url(""));
        if status != 200 {
            return Err(Verdict::Behind(format!("the coverage: answered {status}")));
        }
        let coverage = |p: usize| {
            answer["provenance"]["batch"]["coverage"][format!("{}/{p}", self.topic)]
                .as_i64()
                .unwrap_or(0)
        };
        let amount = self
            .config
            .source("payments")
            .and_then(|s| s.slot("amount"))
            .ok_or_else(|| Verdict::Wrong("no amount field".to_owned()))?;
        let expected: std::collections::BTreeSet<(usize, i64)> = self
            .produced
            .partitions
            .iter()
            .enumerate()
            .flat_map(|(p, events)| {
                events.iter().enumerate().filter_map(move |(o, e)| {
                    let above = e
                        .as_ref()
                        .and_then(|e| e.values[amount].as_f64())
                        .is_some_and(|a| a > crate::run::ALERT_ABOVE);
                    above.then_some((p, o as i64))
                })
            })
            .collect();
        let (status, answer) = self.get("/v1/fraud/alerts?limit=10000");
        if status != 200 {
            return Err(Verdict::Wrong(format!(
                "/v1/fraud/alerts answered {status}: {answer}"
            )));
        }
        let mut got = std::collections::BTreeSet::new();
        for alert in answer["alerts"].as_array().into_iter().flatten() {
            let partition = alert["partition"]
                .as_str()
                .ok_or_else(|| Verdict::Wrong(format!("an alert without partition: {alert}")))
                .and_then(|name| self.partition(name).map_err(Verdict::Wrong))?;
            let at = (partition, alert["offset"].as_i64().unwrap_or(-1));
            if !expected.contains(&at) || alert["rules"] != serde_json::json!(["large"]) {
                return Err(Verdict::Wrong(format!(
                    "an alert for no acknowledged event above {}: {alert}",
                    crate::run::ALERT_ABOVE
                )));
            }
            if !got.insert(at) {
                return Err(Verdict::Wrong(format!("an alert listed twice: {alert}")));
            }
        }
        let mut missing = expected
            .difference(&got)
            .filter(|(p, offset)| *offset >= coverage(*p));
        match missing.next() {
            None => Ok(1),
            Some(first) => Err(Verdict::Behind(format!(
                "{} fraud alerts of {} expected; first missing (partition, offset): {first:?}",
                got.len(),
                expected.len(),
            ))),
        }
    }

    /// Earlier complete answers asked again `as_of` their offsets: equal, row for row.
    fn as_of_replays(&self, earlier: &[(String, Json)]) -> Result<usize, String> {
        let mut checked = 0;
        for (path, answer) in earlier {
            let Some(offsets) = answer["provenance"]["offsets"].as_object() else {
                continue;
            };
            // An answer from before the first event names no offset to replay.
            if offsets.values().all(|o| o.as_i64().unwrap_or(0) == 0) {
                continue;
            }
            let as_of: Vec<String> = offsets
                .iter()
                .map(|(tp, o)| format!("{tp}:{}", o.as_i64().unwrap_or(0)))
                .collect();
            let (status, again) = self.get(&format!("{path}&as_of={}", as_of.join(",")));
            if status != 200 {
                return Err(format!("as_of replay of {path} answered {status}: {again}"));
            }
            same(&again["rows"], &answer["rows"], "rows").map_err(|d| {
                format!(
                    "as_of replay of {path} at {}: {d}",
                    answer["provenance"]["offsets"]
                )
            })?;
            checked += 1;
        }
        Ok(checked)
    }
}
