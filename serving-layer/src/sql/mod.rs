//! `POST /v1/sql`: read-only DuckDB over Braid's tables. Each query gets a fresh in-memory
//! database on its own thread (never on the async runtime):
//!
//! 1. the statement is parsed by DuckDB (`json_serialize_sql`) and refused unless it is one
//!    SELECT over Braid's tables (`guard`); the tables it reads are reported back;
//! 2. the server gathers exactly those tables (`tables`): archive files from the manifests,
//!    rejections, merged view cells as Arrow;
//! 3. they are registered, then external access is switched off (only the archive directory
//!    stays readable) and the configuration locked;
//! 4. the query runs with a row cap; past `serve.sql_timeout` it is interrupted (408).
//!
//! Extensions are never installed or loaded, and nothing is written to disk.

mod gather;
mod guard;
pub mod tables;
mod values;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duckdb::{Connection, InterruptHandle};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use utoipa::ToSchema;

pub use gather::gather;
pub use tables::{Column, Kind, Table};

/// Memory one query's database may use.
const MEMORY_LIMIT: &str = "1GB";
/// Threads one query's database may use.
const THREADS: i64 = 2;

#[derive(Debug, Serialize, ToSchema)]
pub struct SqlAnswer {
    pub columns: Vec<SqlColumn>,
    /// Rows in result order, each a list of values in column order.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Whether rows beyond `serve.max_rows` were cut.
    pub truncated: bool,
    pub elapsed_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SqlColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

/// Why a query was not answered.
#[derive(Debug)]
pub enum SqlError {
    /// Not a single read-only query over Braid's tables (400).
    Refused(String),
    /// DuckDB could not run it: a bad column, a type error, ... (400).
    Failed(String),
    /// It ran past `serve.sql_timeout` and was interrupted (408).
    Timeout(Duration),
    /// Every SQL slot is busy (503).
    Busy(usize),
    /// Storage could not be read for a table (500); the log says why.
    Storage(String),
    /// A view's merged cells could not be read.
    Answer(braid_merge::answer::AnswerError),
    /// A view's partitions `missing` are held by no live speed instance: its table would lack
    /// their events (503).
    Incomplete { table: String, missing: Vec<String> },
    /// The engine itself failed (500); the log says why.
    Internal(String),
}

/// Runs queries, at most `serve.sql_concurrency` at once.
pub struct Engine {
    slots: Arc<Semaphore>,
    concurrency: usize,
    timeout: Duration,
    max_rows: usize,
    /// Where archive files are read (the storage root, or its cache), as configured; messages
    /// never show it.
    dir: PathBuf,
}

/// A query accepted by the guard, waiting for its tables.
pub struct Session {
    /// The tables the query reads.
    pub tables: BTreeSet<String>,
    send: std::sync::mpsc::Sender<Vec<Table>>,
    done: oneshot::Receiver<Result<SqlAnswer, SqlError>>,
    interrupt: Arc<InterruptHandle>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    started: Instant,
    _slot: OwnedSemaphorePermit,
}

struct Plan {
    tables: BTreeSet<String>,
    interrupt: Arc<InterruptHandle>,
}

impl Engine {
    pub fn new(config: &braid_shared::Config) -> Self {
        let concurrency = config.serve.sql_concurrency.max(1);
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            timeout: config.serve.sql_timeout.0,
            max_rows: config.serve.max_rows,
            // Archive files are read where storage keeps local copies of them.
            dir: braid_store::local_root(&config.storage),
        }
    }

    /// Checks `sql` on a fresh database thread; `known` are the table names that exist.
    pub async fn open(&self, sql: String, known: BTreeSet<String>) -> Result<Session, SqlError> {
        let slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| SqlError::Busy(self.concurrency))?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (plan_tx, plan_rx) = oneshot::channel::<Result<Plan, SqlError>>();
        let (send, receive) = std::sync::mpsc::channel::<Vec<Table>>();
        let (done_tx, done) = oneshot::channel();
        let (dir, max_rows) = (self.root(), self.max_rows);
        let configured = self.dir.clone();
        std::thread::Builder::new()
            .name("braid-sql".to_owned())
            .spawn(move || {
                let result = run(&sql, &known, &dir, max_rows, plan_tx, &receive);
                if let Some(result) = result {
                    let _ = done_tx.send(result.map_err(|e| hide(hide(e, &dir), &configured)));
                }
            })
            .map_err(|e| SqlError::Internal(format!("starting the SQL thread: {e}")))?;
        let plan = match tokio::time::timeout_at(deadline, plan_rx).await {
            Err(_) => return Err(SqlError::Timeout(self.timeout)),
            Ok(Err(_)) => return Err(SqlError::Internal("the SQL thread stopped".to_owned())),
            Ok(Ok(plan)) => plan?,
        };
        Ok(Session {
            tables: plan.tables,
            send,
            done,
            interrupt: plan.interrupt,
            deadline,
            timeout: self.timeout,
            started,
            _slot: slot,
        })
    }
}

impl Engine {
    /// The storage root, absolute: archive files are named from it.
    pub fn root(&self) -> PathBuf {
        std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone())
    }
}

impl Session {
    /// Hands over the tables and waits for the answer; interrupts the query at the deadline.
    pub async fn finish(self, tables: Vec<Table>) -> Result<SqlAnswer, SqlError> {
        if self.send.send(tables).is_err() {
            return Err(SqlError::Internal("the SQL thread stopped".to_owned()));
        }
        match tokio::time::timeout_at(self.deadline, self.done).await {
            Err(_) => {
                self.interrupt.interrupt();
                Err(SqlError::Timeout(self.timeout))
            }
            Ok(Err(_)) => Err(SqlError::Internal("the SQL thread stopped".to_owned())),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Ok(Ok(mut answer))) => {
                answer.elapsed_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(0);
                Ok(answer)
            }
        }
    }

    /// The deadline, for gathering tables.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Called when gathering the tables took too long.
    pub fn timed_out(&self) -> SqlError {
        SqlError::Timeout(self.timeout)
    }
}

/// The database thread. Returns `None` when the server gave up before handing over tables.
fn run(
    sql: &str,
    known: &BTreeSet<String>,
    dir: &Path,
    max_rows: usize,
    plan_tx: oneshot::Sender<Result<Plan, SqlError>>,
    receive: &std::sync::mpsc::Receiver<Vec<Table>>,
) -> Option<Result<SqlAnswer, SqlError>> {
    let opened = open().map_err(|e| SqlError::Internal(format!("opening DuckDB: {e}")));
    let (conn, tables) = match opened.and_then(|conn| {
        let tables = check(&conn, sql, known)?;
        Ok((conn, tables))
    }) {
        Ok(ready) => ready,
        Err(error) => {
            let _ = plan_tx.send(Err(error));
            return None;
        }
    };
    let plan = Plan {
        tables,
        interrupt: conn.interrupt_handle(),
    };
    plan_tx.send(Ok(plan)).ok()?;
    let tables = receive.recv().ok()?;
    Some(execute(&conn, sql, known, dir, max_rows, tables))
}

fn open() -> duckdb::Result<Connection> {
    let config = duckdb::Config::default()
        .enable_autoload_extension(false)?
        .with("autoinstall_known_extensions", "false")?
        .threads(THREADS)?
        .max_memory(MEMORY_LIMIT)?;
    Connection::open_in_memory_with_flags(config)
}

/// The guard's verdict on `sql`, from DuckDB's parse tree.
fn check(
    conn: &Connection,
    sql: &str,
    known: &BTreeSet<String>,
) -> Result<BTreeSet<String>, SqlError> {
    let tree: String = conn
        .query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |row| {
            row.get(0)
        })
        .map_err(|e| SqlError::Internal(format!("parsing the statement: {e}")))?;
    guard::check(&tree, known).map_err(|guard::Refused(why)| SqlError::Refused(why))
}

fn execute(
    conn: &Connection,
    sql: &str,
    known: &BTreeSet<String>,
    dir: &Path,
    max_rows: usize,
    tables: Vec<Table>,
) -> Result<SqlAnswer, SqlError> {
    let internal = |what: &str, e: duckdb::Error| SqlError::Internal(format!("{what}: {e}"));
    for table in tables {
        tables::register(conn, table).map_err(|e| internal("registering a table", e))?;
    }
    let archive = dir.join(braid_store::layout::ARCHIVE);
    conn.execute_batch(&format!(
        "SET allowed_directories = [{}]; SET enable_external_access = false; SET lock_configuration = true;",
        tables::literal(&format!("{}/", archive.to_string_lossy()))
    ))
    .map_err(|e| internal("locking the database", e))?;
    // The row cap: one more row than kept tells whether the result was cut. A single table
    // subquery and LIMIT keep the query's own order.
    let body = sql.trim().trim_end_matches(';').trim_end();
    let capped = format!(
        "SELECT * FROM (\n{body}\n) LIMIT {}",
        max_rows.saturating_add(1)
    );
    check(conn, &capped, known)?;
    let failed = |e: duckdb::Error| SqlError::Failed(e.to_string());
    // Bound as written first, so DuckDB's errors point into the query as the client sent it.
    conn.prepare(body).map_err(failed)?;
    let mut statement = conn.prepare(&capped).map_err(failed)?;
    let mut rows = statement.query([]).map_err(failed)?;
    let Some(described) = rows.as_ref() else {
        return Err(SqlError::Internal("the statement has no result".to_owned()));
    };
    let columns: Vec<SqlColumn> = (0..described.column_count())
        .map(|i| SqlColumn {
            name: described
                .column_name(i)
                .map_or_else(|_| format!("column{i}"), String::clone),
            type_name: values::type_name(&described.column_type(i)),
        })
        .collect();
    let mut out = Vec::new();
    let mut truncated = false;
    while let Some(row) = rows.next().map_err(failed)? {
        if out.len() == max_rows {
            truncated = true;
            break;
        }
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let value: duckdb::types::Value = row.get(i).map_err(failed)?;
            values.push(values::to_json(value));
        }
        out.push(values);
    }
    Ok(SqlAnswer {
        columns,
        rows: out,
        truncated,
        elapsed_ms: 0,
    })
}

/// A message without the storage root in it.
fn hide(error: SqlError, dir: &Path) -> SqlError {
    let root = dir.to_string_lossy();
    let clean = |text: String| {
        if root.is_empty() {
            text
        } else {
            text.replace(root.as_ref(), "<storage>")
        }
    };
    match error {
        SqlError::Refused(m) => SqlError::Refused(clean(m)),
        SqlError::Failed(m) => SqlError::Failed(clean(m)),
        SqlError::Internal(m) => SqlError::Internal(clean(m)),
        other => other,
    }
}
