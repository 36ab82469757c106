//! `braid bench audit`: the audit endpoints over a generated archive. Events are archived as
//! the archiver writes them and recomputed into a published snapshot; then the API (with the
//! embedded broker holding the topic, for the not-yet-archived tail) answers, one request at a
//! time:
//!
//! - `GET /v1/lineage/{view}` for the busiest cells of the first day;
//! - pages of 1,000 events of `GET /v1/events/{source}`, following the cursor, and filtered by
//!   a key;
//! - an as-of answer over one day (`as_of` = the live answer's offsets), checked equal to it;
//! - a `view_<name>` SQL aggregate against the same question through `GET /v1/views`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{BENCH_PARTITIONS, BENCH_START_MS};
use crate::error::{Context as _, Result, bail};
use braid_serving::{Backends, Server};
use braid_shared::Config;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

use crate::serve::{Connection, Stats};

const DAY_MS: i64 = 86_400_000;

pub struct Options {
    /// Events in the archive.
    pub events: usize,
    /// Event-time milliseconds between generated events (10M events 20 ms apart span 2.3 days).
    pub spacing_ms: i64,
    /// Requests per measured kind.
    pub requests: usize,
}

pub fn run(config: &Config, options: &Options) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let mut report = String::new();
    let cluster = MockCluster::new(1)?;
    let topic = config
        .sources
        .first()
        .map(|s| s.topic.clone())
        .context("the config has no source")?;
    cluster.create_topic(&topic, BENCH_PARTITIONS, 1)?;
    let mut config = config.clone();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.serve.listen = "127.0.0.1:0".parse()?;
    config.serve.max_rows = config.serve.max_rows.max(1_000);
    let (config, archived, recomputed) =
        crate::batch::prepare(&config, options.events, options.spacing_ms, dir.path())?;
    let source = Arc::clone(&config.sources[0]);
    let view = config
        .views
        .iter()
        .find(|v| !v.group_by.is_empty())
        .cloned()
        .context("the config has no view with group-by fields")?;
    let count = view
        .metrics
        .iter()
        .find(|m| matches!(m.expr, braid_shared::MetricExpr::Count))
        .map(|m| m.name.clone())
        .with_context(|| format!("view {:?} has no count metric", view.name))?;
    let _ = writeln!(
        report,
        "braid bench audit: {} events of source {:?} ({} partitions, {} ms apart: {:.1} days of event time), view {:?}",
        options.events,
        source.name,
        BENCH_PARTITIONS,
        options.spacing_ms,
        options.events as f64 * options.spacing_ms as f64 / DAY_MS as f64,
        view.name
    );
    let _ = writeln!(
        report,
        "  setup: archived in {:.1} s, full recompute {:.1} s",
        archived.as_secs_f64(),
        recomputed.as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cancel = CancellationToken::new();
    let storage = braid_store::open(&config.storage)?;
    let server = runtime.block_on(async {
        let listener = braid_serving::bind(config.serve.listen).await?;
        let config = Arc::new(config.clone());
        Server::start(
            config,
            storage,
            Backends::default(),
            listener,
            cancel.clone(),
        )
        .await
    })?;
    let addr = server.addr();
    let sql_view = config
        .views
        .iter()
        .filter(|v| !v.group_by.is_empty())
        .max_by_key(|v| v.granularity_ms)
        .cloned()
        .unwrap_or_else(|| Arc::clone(&view));
    let measured = runtime.block_on(measure(
        addr,
        &source.name,
        &view,
        &sql_view,
        &count,
        options,
    ));
    cancel.cancel();
    runtime.block_on(server.join())?;
    report.push_str(&measured?);
    Ok(report)
}

async fn get(addr: SocketAddr, path: &str) -> Result<(Duration, serde_json::Value)> {
    let mut connection = Connection::open(addr).await?;
    let started = Instant::now();
    let (status, body) = connection.get(path).await?;
    let elapsed = started.elapsed();
    if status != 200 {
        bail!("GET {path}: {status} {body}");
    }
    Ok((elapsed, body))
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> Result<(Duration, serde_json::Value)> {
    let mut connection = Connection::open(addr).await?;
    let started = Instant::now();
    let (status, answer) = connection.post(path, body).await?;
    let elapsed = started.elapsed();
    if status != 200 {
        bail!("POST {path}: {status} {answer}");
    }
    Ok((elapsed, answer))
}

async fn measure(
    addr: SocketAddr,
    source: &str,
    view: &braid_shared::ViewDef,
    sql_view: &braid_shared::ViewDef,
    count: &str,
    options: &Options,
) -> Result<String> {
    let mut report = String::new();
    let (from, to) = (BENCH_START_MS, BENCH_START_MS + DAY_MS);
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = format!(
        "/v1/views/{}?from={from}&to={to}&step={}ms&order_by={count}&limit=200",
        view.name, view.granularity_ms
    );
    // The published snapshot is loaded when the busiest cells answer.
    let cells = loop {
        if let Ok((_, body)) = get(addr, &first).await
            && body["provenance"]["batch"]["run_id"].is_string()
        {
            break body;
        }
        if Instant::now() > deadline {
            bail!("the server never answered from the snapshot");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rows = cells["rows"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        bail!("no cell in the first day");
    }
    let key = |row: &serde_json::Value| -> String {
        view.group_by
            .iter()
            .map(|f| {
                let value = &row[&f.name];
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                format!("&{}={}", f.name, urlencode(&text))
            })
            .collect()
    };

    // Lineage of the busiest cells.
    let mut latencies = Vec::new();
    for i in 0..options.requests {
        let row = &rows[i % rows.len()];
        let bucket = row["bucket"].as_str().unwrap_or_default();
        let path = format!(
            "/v1/lineage/{}?bucket={}{}",
            view.name,
            urlencode(bucket),
            key(row)
        );
        latencies.push(get(addr, &path).await?.0);
    }
    let _ = writeln!(
        report,
        "  lineage of one cell: {}",
        Stats::of(latencies, 0, None)
    );

    // Pages of 1,000 events, following the cursor from the start.
    let mut latencies = Vec::new();
    let mut cursor = String::new();
    let mut listed = 0;
    for _ in 0..options.requests {
        let path = format!(
            "/v1/events/{source}?from={from}&to={}&limit=1000{cursor}",
            to + DAY_MS * 30
        );
        let (elapsed, page) = get(addr, &path).await?;
        latencies.push(elapsed);
        listed += page["events"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let _ = writeln!(
        report,
        "  page of 1,000 events, following the cursor ({listed} listed): {} (goal p99 <= 100 ms)",
        Stats::of(latencies, 0, None)
    );
    let mut latencies = Vec::new();
    for i in 0..options.requests.min(50) {
        let row = &rows[i % rows.len()];
        let path = format!(
            "/v1/events/{source}?from={from}&to={to}&limit=1000{}",
            key(row)
        );
        latencies.push(get(addr, &path).await?.0);
    }
    let _ = writeln!(
        report,
        "  page of one key's events over a day (filter pushed into the scan): {}",
        Stats::of(latencies, 0, None)
    );

    // As of the live answer's offsets, over one day: the same rows.
    let totals = format!(
        "/v1/views/{}?from={from}&to={to}&step=1h&group_by=",
        view.name
    );
    let (_, live) = get(addr, &totals).await?;
    let as_of: Vec<String> = live["provenance"]["offsets"]
        .as_object()
        .map(|o| o.iter().map(|(tp, v)| format!("{tp}:{v}")).collect())
        .unwrap_or_default();
    let path = format!("{totals}&as_of={}", urlencode(&as_of.join(",")));
    let mut latencies = Vec::new();
    let mut equal = true;
    let mut failed = 0;
    for _ in 0..3 {
        match get(addr, &path).await {
            Ok((elapsed, again)) => {
                equal &= again["rows"] == live["rows"];
                latencies.push(elapsed);
            }
            Err(error) => {
                failed += 1;
                let _ = writeln!(report, "  as-of request failed: {error:#}");
            }
        }
    }
    let _ = writeln!(
        report,
        "  as-of answer over one day, recomputed from the archive: {} (goal <= 2 s); rows equal to the live answer: {equal}",
        Stats::of(latencies, failed, None)
    );

    // A view_<name> aggregate in SQL against the same question through GET /v1/views, on the
    // view of the coarsest buckets (SQL is handed the view's every cell).
    let view = sql_view;
    let Some(count) = view
        .metrics
        .iter()
        .find(|m| matches!(m.expr, braid_shared::MetricExpr::Count))
        .map(|m| m.name.as_str())
    else {
        bail!("view {:?} has no count metric", view.name);
    };
    let group = &view.group_by[0].name;
    let sql = serde_json::json!({
        "sql": format!(
            "SELECT \"{group}\", sum(\"{count}\") AS n FROM view_{} WHERE bucket >= epoch_ms({from}) AND bucket < epoch_ms({to}) GROUP BY 1 ORDER BY n DESC, 1 LIMIT 10",
            view.name
        )
    })
    .to_string();
    let http = format!(
        "/v1/views/{}?from={from}&to={to}&group_by={group}&order_by={count}&limit=10",
        view.name
    );
    let (mut through_sql, mut through_views) = (Vec::new(), Vec::new());
    let (mut sql_top, mut views_top) = (Vec::new(), Vec::new());
    let mut sql_failed = 0;
    for _ in 0..5 {
        match post(addr, "/v1/sql", &sql).await {
            Ok((elapsed, answer)) => {
                through_sql.push(elapsed);
                sql_top = answer["rows"].as_array().cloned().unwrap_or_default();
            }
            Err(error) => {
                sql_failed += 1;
                let _ = writeln!(report, "  SQL query failed: {error:#}");
            }
        }
        let (elapsed, answer) = get(addr, &http).await?;
        through_views.push(elapsed);
        views_top = answer["rows"].as_array().cloned().unwrap_or_default();
    }
    let same_top =
        sql_top.first().map(|r| r[1].clone()) == views_top.first().map(|r| r[count].clone());
    let _ = writeln!(
        report,
        "  top 10 {group} by {count} over a day: SQL over view_{} {}; GET /v1/views {} (same top value: {same_top})",
        view.name,
        Stats::of(through_sql, sql_failed, None),
        Stats::of(through_views, 0, None)
    );
    Ok(report)
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
