//! The batch run lease: one recompute at a time across processes and machines, through storage
//! alone (conditional writes), so batch instances need no shared local disk or lock file.
//!
//! `batch/lease.json` names the run holding the lease, its holder and until when. A run takes
//! it by creating the object (If-None-Match) or by replacing, over the version it read
//! (If-Match), one that was released, has expired, or was left by a process of this machine
//! that is gone. The holder renews it every third of [`TTL`] over the version it wrote; a renewal
//! refused means another run took the lease after it expired (the holder was paused past
//! [`TTL`]): the holder has lost it and must not publish. Expiry compares the holder's clock
//! with the taker's: clocks must agree to well within [`TTL`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout;
use crate::renewer::Renewer;
use crate::storage::{Put, Storage, Version};

/// How long a lease holds without renewal.
pub const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    run_id: String,
    holder: Holder,
    /// Epoch ms after which another run may take the lease.
    expires_at_ms: i64,
    released: bool,
}

/// The process holding a lease: enough to tell, on the same machine and in the same process
/// namespace, that it is gone (a crash), so that the next run need not wait for the expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub(crate) host: String,
    /// The kernel's boot id and the process id namespace: a pid means the same process only
    /// where both are equal.
    boot_id: String,
    pid_namespace: String,
    pub(crate) pid: u32,
    /// The process's start time (clock ticks after boot): tells a reused pid apart.
    pub(crate) pid_start: u64,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat`, after the parenthesized command name.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

impl Holder {
    pub(crate) fn this_process() -> Self {
        let pid = std::process::id();
        Self {
            host: read_trimmed("/proc/sys/kernel/hostname"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid_namespace: std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid,
            pid_start: process_start(pid).unwrap_or(0),
        }
    }

    /// Whether this is a process of the caller's machine and pid namespace that no longer runs.
    pub(crate) fn is_gone(&self) -> bool {
        let here = Self::this_process();
        let comparable = !here.boot_id.is_empty()
            && !here.pid_namespace.is_empty()
            && here.boot_id == self.boot_id
            && here.pid_namespace == self.pid_namespace;
        comparable && process_start(self.pid) != Some(self.pid_start)
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The lease a run holds; renewed by a thread of its own until released or dropped.
pub struct Lease {
    shared: Arc<Shared>,
    renewer: Renewer,
}

struct Shared {
    storage: Arc<dyn Storage>,
    ttl: Duration,
    held: Mutex<(Record, Version)>,
    lost: AtomicBool,
}

/// Takes the run lease for `run_id`, or fails with [`Error::RunBusy`] naming the run that
/// holds it.
pub fn acquire(storage: Arc<dyn Storage>, run_id: &str) -> Result<Lease> {
    acquire_for(storage, run_id, TTL)
}

/// [`acquire`] with a lease that holds `ttl` without renewal (renewed every third of it).
fn acquire_for(storage: Arc<dyn Storage>, run_id: &str, ttl: Duration) -> Result<Lease> {
    let record = Record {
        run_id: run_id.to_owned(),
        holder: Holder::this_process(),
        expires_at_ms: now_ms() + ttl.as_millis() as i64,
        released: false,
    };
    let bytes = encode(&record)?;
    let key = layout::BATCH_LEASE;
    let put = match storage.get(key)? {
        None => storage.put_if_absent(key, &bytes)?,
        Some(object) => {
            let current: Option<Record> = serde_json::from_slice(&object.bytes).ok();
            match current {
                Some(held)
                    if !held.released
                        && held.expires_at_ms > now_ms()
                        && !held.holder.is_gone() =>
                {
                    return Err(busy(&held));
                }
                // Released, expired, its holder gone, or unreadable: taken over the version read.
                _ => storage.put_if_unchanged(key, &bytes, &object.version)?,
            }
        }
    };
    let version = match put {
        Put::Written(version) => version,
        // Another run took it between the read and the write.
        Put::Conflict => {
            let holder = storage
                .get(key)?
                .and_then(|o| serde_json::from_slice::<Record>(&o.bytes).ok());
            return Err(match holder {
                Some(held) => busy(&held),
                None => Error::RunBusy("another batch run took the run lease first".to_owned()),
            });
        }
    };
    let shared = Arc::new(Shared {
        storage,
        ttl,
        held: Mutex::new((record, version)),
        lost: AtomicBool::new(false),
    });
    let renewing = Arc::clone(&shared);
    let renewer = Renewer::start("braid-lease", ttl / 3, move || {
        if let Err(error) = renewing.write(false) {
            tracing::error!(%error, "the batch run lease could not be renewed");
        }
    })
    .map_err(|e| Error::RunBusy(format!("cannot start renewing the run lease: {e}")))?;
    Ok(Lease { shared, renewer })
}

fn busy(held: &Record) -> Error {
    let until = chrono::DateTime::from_timestamp_millis(held.expires_at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Error::RunBusy(format!(
        "batch run {} holds the run lease (process {} on {}, renewed until {until}); one run at a time",
        held.run_id, held.holder.pid, held.holder.host
    ))
}

fn encode(record: &Record) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(record).map_err(|e| Error::Encode {
        what: "run lease",
        reason: e.to_string(),
    })
}

impl Shared {
    /// Writes the held record again, renewed or released, over the version last written.
    fn write(&self, release: bool) -> Result<()> {
        let mut held = self
            .held
            .lock()
            .map_err(|_| Error::RunBusy("the run lease is unusable after a panic".to_owned()))?;
        if self.lost.load(Ordering::Acquire) {
            return Err(lost(&held.0));
        }
        let mut record = held.0.clone();
        record.expires_at_ms = now_ms() + self.ttl.as_millis() as i64;
        record.released = release;
        let bytes = encode(&record)?;
        match self
            .storage
            .put_if_unchanged(layout::BATCH_LEASE, &bytes, &held.1)?
        {
            Put::Written(version) => {
                *held = (record, version);
                Ok(())
            }
            Put::Conflict => {
                self.lost.store(true, Ordering::Release);
                Err(lost(&held.0))
            }
        }
    }
}

fn lost(record: &Record) -> Error {
    Error::RunBusy(format!(
        "batch run {} lost the run lease: it was not renewed in time and another run took it",
        record.run_id
    ))
}

impl Lease {
    /// Renews the lease now: fails when another run has taken it (this run must not publish).
    pub fn confirm(&self) -> Result<()> {
        self.shared.write(false)
    }

    /// Gives the lease up for the next run.
    pub fn release(mut self) -> Result<()> {
        self.renewer.stop();
        self.shared.write(true)
    }
}

impl Drop for Lease {
    /// A lease dropped without [`Lease::release`] (an error path) is released too.
    fn drop(&mut self) {
        if self.renewer.is_running() {
            self.renewer.stop();
            if let Err(error) = self.shared.write(true) {
                tracing::warn!(%error, "the batch run lease could not be released");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStorage;

    fn storage() -> (tempfile::TempDir, Arc<dyn Storage>) {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
        (dir, storage)
    }

    fn stored(storage: &dyn Storage) -> (Record, Version) {
        let object = storage.get(layout::BATCH_LEASE).unwrap().unwrap();
        (
            serde_json::from_slice(&object.bytes).unwrap(),
            object.version,
        )
    }

    fn replace(storage: &dyn Storage, change: impl FnOnce(&mut Record)) {
        let (mut record, version) = stored(storage);
        change(&mut record);
        let put = storage
            .put_if_unchanged(layout::BATCH_LEASE, &encode(&record).unwrap(), &version)
            .unwrap();
        assert!(matches!(put, Put::Written(_)));
    }

    #[test]
    fn one_run_holds_the_lease_until_it_releases_it() {
        let (_dir, storage) = storage();
        let first = acquire(Arc::clone(&storage), "run-1").unwrap();
        let busy = acquire(Arc::clone(&storage), "run-2")
            .err()
            .unwrap()
            .to_string();
        assert!(
            busy.contains("batch run run-1 holds the run lease"),
            "{busy}"
        );
        assert!(
            busy.contains(&format!("process {}", std::process::id())),
            "{busy}"
        );
        first.confirm().unwrap();
        first.release().unwrap();
        assert!(stored(storage.as_ref()).0.released);
        let second = acquire(Arc::clone(&storage), "run-2").unwrap();
        assert_eq!(stored(storage.as_ref()).0.run_id, "run-2");
        // Dropped on an error path: released as well.
        drop(second);
        acquire(storage, "run-3").unwrap().release().unwrap();
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_its_zombie_holder_cannot_renew_it() {
        let (_dir, storage) = storage();
        let zombie = acquire(Arc::clone(&storage), "paused").unwrap();
        // Paused past its expiry (as another machine would see it).
        replace(storage.as_ref(), |r| r.expires_at_ms = now_ms() - 1);
        let taker = acquire(Arc::clone(&storage), "taker").unwrap();
        assert_eq!(stored(storage.as_ref()).0.run_id, "taker");
        let refused = zombie.confirm().err().unwrap().to_string();
        assert!(
            refused.contains("batch run paused lost the run lease"),
            "{refused}"
        );
        // Its release on drop must not release the taker's lease either.
        drop(zombie);
        let (now, _) = stored(storage.as_ref());
        assert_eq!((now.run_id.as_str(), now.released), ("taker", false));
        taker.confirm().unwrap();
        taker.release().unwrap();
    }

    #[test]
    fn a_lease_left_by_a_process_of_this_machine_that_is_gone_is_taken_at_once() {
        let (_dir, storage) = storage();
        let crashed = acquire(Arc::clone(&storage), "crashed").unwrap();
        // What a killed process leaves: a live-looking lease whose pid no longer runs as it did.
        std::mem::forget(crashed);
        replace(storage.as_ref(), |r| r.holder.pid_start += 1);
        let next = acquire(Arc::clone(&storage), "next").unwrap();
        assert_eq!(stored(storage.as_ref()).0.run_id, "next");
        next.release().unwrap();
        // A live holder on another machine is waited for until its expiry.
        let other = acquire(Arc::clone(&storage), "elsewhere").unwrap();
        std::mem::forget(other);
        replace(storage.as_ref(), |r| {
            r.holder.boot_id = "another-machine".into()
        });
        assert!(acquire(Arc::clone(&storage), "waits").is_err());
        replace(storage.as_ref(), |r| r.expires_at_ms = now_ms() - 1);
        acquire(storage, "after-expiry").unwrap().release().unwrap();
    }

    #[test]
    fn the_holder_renews_its_lease_while_it_runs() {
        let (_dir, storage) = storage();
        let lease = acquire_for(Arc::clone(&storage), "long", Duration::from_millis(300)).unwrap();
        let first = stored(storage.as_ref()).0.expires_at_ms;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stored(storage.as_ref()).0.expires_at_ms <= first {
            assert!(std::time::Instant::now() < deadline, "never renewed");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Renewed, it is still refused to others, however long the run.
        assert!(acquire(Arc::clone(&storage), "other").is_err());
        lease.release().unwrap();
    }

    #[test]
    fn this_process_is_described_and_alive() {
        let me = Holder::this_process();
        assert_eq!(me.pid, std::process::id());
        assert!(me.pid_start > 0, "{me:?}");
        assert!(!me.is_gone());
    }
}
