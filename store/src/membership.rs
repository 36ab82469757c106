//! Partition leases: which process of a consumer group reads which Kafka partition, decided
//! through storage alone (conditional writes) instead of a broker's group coordinator.
//!
//! ```text
//! groups/<group>/members/<member>.json         a live process of the group and until when
//! groups/<group>/partitions/<topic>/<p>.json   which member, and which incarnation of it,
//!                                              reads a partition
//! ```
//!
//! Every member renews its own record every third of the TTL and reads the others': the
//! partitions are dealt round-robin over the live members sorted by name, so that every member
//! computes the same share for everyone. A member takes a partition of its share by writing the
//! partition's lease over a free one (absent, given back, held by a member that is not live, or
//! held by an earlier incarnation of the same member), and gives back a partition that is no
//! longer its share once its work on it is durable. A member is live while its record is not
//! given up and not past its expiry and, when its process ran on this machine, the process still
//! runs. So a process restarted after a crash, under the same member name (`kafka.instance_id`)
//! or on the same machine, takes its partitions back at once; one that stopped answering loses
//! them after the TTL. Expiry compares the writer's clock with the reader's: clocks must agree to
//! well within the TTL.
//!
//! Leases decide who reads. A paused process may write once more before it notices it lost a
//! partition: the layers' own conditional writes (checkpoints, manifests) refuse that write.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use braid_shared::TopicPartition;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lease::{Holder, now_ms};
use crate::renewer::Renewer;
use crate::storage::{Put, Storage, Version, put_over};

/// Attempts at the first write of a member's record, and the pause after the first failed
/// one (growing with each).
const JOIN_ATTEMPTS: u32 = 5;
const JOIN_RETRY: Duration = Duration::from_millis(200);

/// How long a member's record outlives its expiry before any member deletes it (in TTLs).
const FORGET_AFTER_TTLS: i64 = 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MemberRecord {
    member: String,
    /// Tells this run of the member from an earlier one of the same name.
    incarnation: String,
    holder: Holder,
    /// Epoch ms after which the member counts as gone.
    expires_at_ms: i64,
    /// The member left the group (a clean stop).
    left: bool,
}

impl MemberRecord {
    fn is_live(&self, now_ms: i64) -> bool {
        !self.left && self.expires_at_ms > now_ms && !self.holder.is_gone()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LeaseRecord {
    member: String,
    incarnation: String,
    taken_at_ms: i64,
    /// The member made its work on the partition durable and gave it up.
    given_back: bool,
}

/// The live members as last read, and when this member's record was last renewed.
#[derive(Debug, Default)]
struct Roster {
    /// Name of every live member, this one included once its record is written.
    live: BTreeSet<String>,
    /// When the write of this member's last renewed record started.
    renewed: Option<Instant>,
}

/// This process's membership of one group: its record, renewed by a thread of its own until
/// [`Membership::leave`] or drop, and the partition leases it holds.
pub struct Membership {
    inner: Arc<Inner>,
    renewer: Renewer,
}

struct Inner {
    storage: Arc<dyn Storage>,
    group: String,
    name: String,
    incarnation: String,
    ttl: Duration,
    /// This member's record as last written, and its version.
    record: Mutex<(MemberRecord, Option<Version>)>,
    roster: Mutex<Roster>,
    /// The version of every lease this member wrote and still holds.
    leases: Mutex<HashMap<TopicPartition, Version>>,
}

/// A key segment for `text`: letters, digits, `.`, `_` and `-` as they are, anything else
/// percent-encoded, so that a group or topic name never adds a level to a key.
fn segment(text: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'.')
        .remove(b'_')
        .remove(b'-');
    percent_encoding::utf8_percent_encode(text, KEEP).to_string()
}

fn members_prefix(group: &str) -> String {
    format!("groups/{}/members/", segment(group))
}

fn lease_key(group: &str, tp: &TopicPartition) -> String {
    format!(
        "groups/{}/partitions/{}/{}.json",
        segment(group),
        segment(&tp.topic),
        tp.partition
    )
}

/// Memberships joined by this process so far: tells apart two members of one group in one
/// process (tests, benches).
static JOINED: AtomicU64 = AtomicU64::new(0);

/// The member name of a process that was given none: its host and pid (and, for a process's
/// second and later member, how many it joined before). The next process on the same machine
/// sees it gone the moment it stops.
fn default_name(joined: u64) -> String {
    let holder = Holder::this_process();
    let host = if holder.host.is_empty() {
        "host".to_owned()
    } else {
        holder.host
    };
    match joined {
        0 => format!("{host}-{}", holder.pid),
        n => format!("{host}-{}-{n}", holder.pid),
    }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Encode {
        what,
        reason: e.to_string(),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Deals `partitions` round-robin over `members` (both sorted): the share of `member`.
fn deal(
    members: &BTreeSet<String>,
    partitions: &BTreeSet<TopicPartition>,
    member: &str,
) -> BTreeSet<TopicPartition> {
    let Some(seat) = members.iter().position(|m| m == member) else {
        return BTreeSet::new();
    };
    partitions
        .iter()
        .enumerate()
        .filter(|(i, _)| i % members.len() == seat)
        .map(|(_, tp)| tp.clone())
        .collect()
}

impl Membership {
    /// Joins `group` as `name` (a process without one: its host and pid), renewing the record
    /// every third of `ttl`.
    pub fn join(
        storage: Arc<dyn Storage>,
        group: &str,
        name: Option<&str>,
        ttl: Duration,
    ) -> Result<Self> {
        let joined = JOINED.fetch_add(1, Ordering::Relaxed);
        let name = name.map_or_else(|| default_name(joined), str::to_owned);
        let incarnation = format!("{}-{:x}-{joined}", std::process::id(), now_ms());
        let record = MemberRecord {
            member: name.clone(),
            incarnation: incarnation.clone(),
            holder: Holder::this_process(),
            expires_at_ms: 0,
            left: false,
        };
        let inner = Arc::new(Inner {
            storage,
            group: group.to_owned(),
            name,
            incarnation,
            ttl: ttl.max(Duration::from_millis(300)),
            record: Mutex::new((record, None)),
            roster: Mutex::new(Roster::default()),
            leases: Mutex::new(HashMap::new()),
        });
        // A storage that refuses the first write for a moment (an object store's hiccup) is
        // asked again, a few times, before the layer gives up starting.
        let mut attempt = 1;
        while let Err(error) = inner.renew().and_then(|()| inner.read_roster()) {
            if attempt == JOIN_ATTEMPTS {
                return Err(error);
            }
            tracing::warn!(%error, group, attempt, "joining the group failed; trying again");
            std::thread::sleep(JOIN_RETRY * attempt);
            attempt += 1;
        }
        let renewing = Arc::clone(&inner);
        let renewer = Renewer::start("braid-membership", inner.ttl / 3, move || {
            if let Err(error) = renewing.renew() {
                tracing::warn!(%error, group = %renewing.group, "renewing the group membership failed");
            }
            if let Err(error) = renewing.read_roster() {
                tracing::warn!(%error, group = %renewing.group, "reading the group's members failed");
            }
        })
        .map_err(|e| Error::Internal(format!("cannot start renewing the group membership: {e}")))?;
        Ok(Self { inner, renewer })
    }

    /// This member's name in the group.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether this member's record was renewed recently enough that no other member can have
    /// seen it expire. When not, leases it holds may have been taken: [`Membership::holds`]
    /// tells.
    pub fn is_current(&self) -> bool {
        lock(&self.inner.roster)
            .renewed
            .is_some_and(|at| at.elapsed() < self.inner.ttl * 3 / 4)
    }

    /// The live members as last read, sorted.
    pub fn members(&self) -> Vec<String> {
        lock(&self.inner.roster).live.iter().cloned().collect()
    }

    /// This member's share of `partitions`: none while its record is not current.
    pub fn share(&self, partitions: &BTreeSet<TopicPartition>) -> BTreeSet<TopicPartition> {
        let mut members = lock(&self.inner.roster).live.clone();
        if !self.is_current() {
            return BTreeSet::new();
        }
        members.insert(self.inner.name.clone());
        deal(&members, partitions, &self.inner.name)
    }

    /// Takes the lease of `tp` when it is free (or already this member's). Returns whether this
    /// member holds it now.
    pub fn take(&self, tp: &TopicPartition) -> Result<bool> {
        let inner = &self.inner;
        let key = lease_key(&inner.group, tp);
        let record = LeaseRecord {
            member: inner.name.clone(),
            incarnation: inner.incarnation.clone(),
            taken_at_ms: now_ms(),
            given_back: false,
        };
        let bytes = encode("partition lease", &record)?;
        let put = match inner.storage.get(&key)? {
            None => inner.storage.put_if_absent(&key, &bytes)?,
            Some(object) => {
                match serde_json::from_slice::<LeaseRecord>(&object.bytes).ok() {
                    Some(held) if self.is_mine(&held) => {
                        lock(&inner.leases).insert(tp.clone(), object.version);
                        return Ok(true);
                    }
                    Some(held) if !held.given_back && inner.holds_live(&held)? => {
                        return Ok(false);
                    }
                    // Given back, its holder gone, or unreadable: taken over the version read.
                    _ => inner
                        .storage
                        .put_if_unchanged(&key, &bytes, &object.version)?,
                }
            }
        };
        match put {
            Put::Written(version) => {
                tracing::debug!(partition = %tp, member = %inner.name, "partition lease taken");
                lock(&inner.leases).insert(tp.clone(), version);
                Ok(true)
            }
            Put::Conflict => Ok(false),
        }
    }

    /// Whether this member still holds the lease of `tp` (read from storage).
    pub fn holds(&self, tp: &TopicPartition) -> Result<bool> {
        let key = lease_key(&self.inner.group, tp);
        let held = self
            .inner
            .storage
            .get(&key)?
            .and_then(|o| serde_json::from_slice::<LeaseRecord>(&o.bytes).ok());
        let mine = held.is_some_and(|held| self.is_mine(&held));
        if !mine {
            lock(&self.inner.leases).remove(tp);
        }
        Ok(mine)
    }

    fn is_mine(&self, held: &LeaseRecord) -> bool {
        !held.given_back
            && held.member == self.inner.name
            && held.incarnation == self.inner.incarnation
    }

    /// Gives the lease of `tp` back (its work on it is durable): the next member takes it at
    /// once. A lease another member took meanwhile is left as it is. After a failed write the
    /// lease is still held: give it back again.
    pub fn give_back(&self, tp: &TopicPartition) -> Result<()> {
        let Some(version) = lock(&self.inner.leases).get(tp).cloned() else {
            return Ok(());
        };
        let record = LeaseRecord {
            member: self.inner.name.clone(),
            incarnation: self.inner.incarnation.clone(),
            taken_at_ms: now_ms(),
            given_back: true,
        };
        let key = lease_key(&self.inner.group, tp);
        // Written, or refused because another member took it meanwhile: not held either way.
        put_over(
            self.inner.storage.as_ref(),
            &key,
            &encode("partition lease", &record)?,
            Some(&version),
        )?;
        lock(&self.inner.leases).remove(tp);
        Ok(())
    }

    /// Leaves the group: the others deal its partitions among themselves at their next read.
    /// Give the partitions back first.
    pub fn leave(mut self) -> Result<()> {
        self.renewer.stop();
        self.inner.write_record(true)
    }
}

impl Drop for Membership {
    /// A membership dropped without [`Membership::leave`] (an error path) leaves as well.
    fn drop(&mut self) {
        if self.renewer.is_running() {
            self.renewer.stop();
            if let Err(error) = self.inner.write_record(true) {
                tracing::warn!(%error, group = %self.inner.group, "leaving the group failed");
            }
        }
    }
}

impl Inner {
    fn renew(&self) -> Result<()> {
        let started = Instant::now();
        self.write_record(false)?;
        lock(&self.roster).renewed = Some(started);
        Ok(())
    }

    /// Writes this member's record, renewed or left. A record replaced by another process (one
    /// that uses the same name, or a member that deleted it as expired while this one was
    /// paused) is written over all the same: this process runs.
    fn write_record(&self, left: bool) -> Result<()> {
        let mut held = lock(&self.record);
        held.0.expires_at_ms = now_ms() + self.ttl.as_millis() as i64;
        held.0.left = left;
        let bytes = encode("group member", &held.0)?;
        let key = format!(
            "{}{}.json",
            members_prefix(&self.group),
            segment(&self.name)
        );
        let storage = self.storage.as_ref();
        let version = match put_over(storage, &key, &bytes, held.1.as_ref())? {
            Some(version) => version,
            None => {
                let current = storage.get(&key)?;
                if let Some(other) = current
                    .as_ref()
                    .and_then(|o| serde_json::from_slice::<MemberRecord>(&o.bytes).ok())
                    .filter(|o| o.incarnation != self.incarnation && o.is_live(now_ms()))
                {
                    tracing::warn!(member = %self.name, pid = other.holder.pid, host = %other.holder.host, "another live process uses this member name (kafka.instance_id must be unique per process)");
                }
                put_over(storage, &key, &bytes, current.map(|o| o.version).as_ref())?
                    .ok_or_else(|| Error::Conflict { key: key.clone() })?
            }
        };
        held.1 = Some(version);
        Ok(())
    }

    /// Reads every member's record: the live ones make the roster; long-expired ones are
    /// deleted.
    fn read_roster(&self) -> Result<()> {
        let prefix = members_prefix(&self.group);
        let now = now_ms();
        let mut live = BTreeSet::new();
        for listed in self.storage.list(&prefix)? {
            let Some(object) = self.storage.get(&listed.key)? else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<MemberRecord>(&object.bytes) else {
                tracing::warn!(key = %listed.key, "a group member record is unreadable; ignored");
                continue;
            };
            if record.is_live(now) {
                live.insert(record.member);
            } else if record.member != self.name
                && (record.left
                    || record.expires_at_ms < now - FORGET_AFTER_TTLS * self.ttl.as_millis() as i64)
            {
                // Gone for good: its leases are free either way.
                let _ = self.storage.delete(&listed.key);
            }
        }
        let mut roster = lock(&self.roster);
        if roster.live != live {
            tracing::info!(group = %self.group, members = ?live, "group members changed");
            roster.live = live;
        }
        Ok(())
    }

    /// Whether the lease `held` belongs to a live member's current incarnation (read now).
    fn holds_live(&self, held: &LeaseRecord) -> Result<bool> {
        let key = format!(
            "{}{}.json",
            members_prefix(&self.group),
            segment(&held.member)
        );
        let member = self
            .storage
            .get(&key)?
            .and_then(|o| serde_json::from_slice::<MemberRecord>(&o.bytes).ok());
        Ok(member.is_some_and(|m| m.incarnation == held.incarnation && m.is_live(now_ms())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStorage;

    const TTL: Duration = Duration::from_secs(30);

    fn storage() -> (tempfile::TempDir, Arc<dyn Storage>) {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
        (dir, storage)
    }

    fn partitions(n: i32) -> BTreeSet<TopicPartition> {
        (0..n).map(|p| TopicPartition::new("pay", p)).collect()
    }

    fn join(storage: &Arc<dyn Storage>, name: &str) -> Membership {
        Membership::join(Arc::clone(storage), "g", Some(name), TTL).unwrap()
    }

    /// Rewrites a stored record as another process (or the passing of time) would.
    fn rewrite<T: Serialize + for<'a> Deserialize<'a>>(
        storage: &dyn Storage,
        key: &str,
        change: impl FnOnce(&mut T),
    ) {
        let object = storage.get(key).unwrap().unwrap();
        let mut record: T = serde_json::from_slice(&object.bytes).unwrap();
        change(&mut record);
        let bytes = serde_json::to_vec(&record).unwrap();
        let put = storage
            .put_if_unchanged(key, &bytes, &object.version)
            .unwrap();
        assert!(matches!(put, Put::Written(_)));
    }

    fn member_key(name: &str) -> String {
        format!("{}{name}.json", members_prefix("g"))
    }

    #[test]
    fn live_members_share_the_partitions_and_each_lease_has_one_holder() {
        let (_dir, storage) = storage();
        let a = join(&storage, "a");
        let b = join(&storage, "b");
        a.inner.read_roster().unwrap();
        assert_eq!(a.members(), ["a", "b"]);
        assert_eq!(b.members(), ["a", "b"]);
        let all = partitions(5);
        let (share_a, share_b) = (a.share(&all), b.share(&all));
        assert_eq!(share_a.len() + share_b.len(), 5);
        assert!(share_a.is_disjoint(&share_b));
        assert_eq!(share_a.len(), 3);

        let p0 = TopicPartition::new("pay", 0);
        assert!(a.take(&p0).unwrap());
        assert!(a.take(&p0).unwrap(), "taking a lease held is idempotent");
        assert!(!b.take(&p0).unwrap(), "a live member's lease is not taken");
        assert!(a.holds(&p0).unwrap() && !b.holds(&p0).unwrap());
        a.give_back(&p0).unwrap();
        assert!(!a.holds(&p0).unwrap());
        assert!(b.take(&p0).unwrap(), "a lease given back is taken at once");
        assert!(b.holds(&p0).unwrap());
    }

    #[test]
    fn a_member_that_leaves_or_expires_frees_its_leases_and_a_restart_takes_them_at_once() {
        let (_dir, storage) = storage();
        let p0 = TopicPartition::new("pay", 0);
        let a = join(&storage, "a");
        let b = join(&storage, "b");
        assert!(a.take(&p0).unwrap());

        // Expired, as another machine sees a member that stopped renewing.
        rewrite::<MemberRecord>(storage.as_ref(), &member_key("a"), |r| {
            r.expires_at_ms = now_ms() - 1
        });
        b.inner.read_roster().unwrap();
        assert_eq!(b.members(), ["b"]);
        assert_eq!(b.share(&partitions(2)).len(), 2);
        assert!(b.take(&p0).unwrap());
        // The paused member, back, finds out that it lost the lease.
        assert!(!a.holds(&p0).unwrap());
        a.give_back(&p0).unwrap();
        assert!(b.holds(&p0).unwrap(), "a lost lease's give-back leaves it");

        // A crash: the member's record stays live, but a restart under the same name is a new
        // incarnation, and takes the lease at once.
        let p1 = TopicPartition::new("pay", 1);
        assert!(b.take(&p1).unwrap());
        std::mem::forget(b);
        let restarted = join(&storage, "b");
        assert!(restarted.take(&p1).unwrap());
        assert!(restarted.holds(&p1).unwrap());

        // A clean stop: the member is gone from everyone's next read.
        let c = join(&storage, "c");
        restarted.inner.read_roster().unwrap();
        // (`a` is still expired: its next renewal is a third of the TTL away.)
        assert_eq!(restarted.members(), ["b", "c"]);
        c.leave().unwrap();
        restarted.inner.read_roster().unwrap();
        assert_eq!(restarted.members(), ["b"]);
    }

    #[test]
    fn a_member_of_this_machine_whose_process_is_gone_is_not_live() {
        let (_dir, storage) = storage();
        let p0 = TopicPartition::new("pay", 0);
        let crashed = Membership::join(Arc::clone(&storage), "g", None, TTL).unwrap();
        assert!(crashed.take(&p0).unwrap());
        let name = crashed.name().to_owned();
        std::mem::forget(crashed);
        rewrite::<MemberRecord>(storage.as_ref(), &member_key(&name), |r| {
            r.holder.pid_start += 1
        });
        let next = join(&storage, "next");
        assert_eq!(next.members(), ["next"]);
        assert!(next.take(&p0).unwrap());
    }

    #[test]
    fn a_member_not_renewed_in_time_has_no_share_and_renewal_keeps_it_current() {
        let (_dir, storage) = storage();
        let short = Duration::from_millis(300);
        let mut a = Membership::join(Arc::clone(&storage), "g", Some("a"), short).unwrap();
        assert!(a.is_current());
        let first = lock(&a.inner.record).0.expires_at_ms;
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&a.inner.record).0.expires_at_ms <= first {
            assert!(Instant::now() < deadline, "never renewed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(a.is_current());
        assert_eq!(a.share(&partitions(3)).len(), 3);
        // As a paused process finds itself: its last renewal long ago.
        a.renewer.stop();
        lock(&a.inner.roster).renewed = Some(Instant::now() - short);
        assert!(!a.is_current());
        assert!(a.share(&partitions(3)).is_empty());
    }

    /// Found by the torture suite: a give-back refused by storage forgot the lease's version,
    /// so the retry wrote nothing and the partition stayed held by a member that no longer
    /// read it.
    #[test]
    fn a_give_back_that_storage_refused_is_written_when_asked_again() {
        use crate::storage::faults::{Faults, FaultyStorage};
        let (dir, storage) = storage();
        let control = dir.path().join("faults");
        let set = |fail_writes: f64| {
            let faults = Faults {
                fail_writes,
                ..Faults::default()
            };
            std::fs::write(&control, faults.render()).unwrap();
            // The control file is read again once 100 ms have passed since the last read.
            std::thread::sleep(Duration::from_millis(110));
        };
        set(0.0);
        let faulty: Arc<dyn Storage> = Arc::new(FaultyStorage::new(Arc::clone(&storage), &control));
        let a = join(&faulty, "a");
        let b = join(&storage, "b");
        let p0 = TopicPartition::new("pay", 0);
        assert!(a.take(&p0).unwrap());
        set(1.0);
        assert!(a.give_back(&p0).is_err());
        assert!(!b.take(&p0).unwrap(), "a lease not given back stays held");
        set(0.0);
        a.give_back(&p0).unwrap();
        assert!(b.take(&p0).unwrap());
    }

    #[test]
    fn names_with_any_characters_stay_one_key_segment() {
        assert_eq!(segment("pay/ments v2"), "pay%2Fments%20v2");
        let tp = TopicPartition::new("a/b", 3);
        assert_eq!(
            lease_key("g/x", &tp),
            "groups/g%2Fx/partitions/a%2Fb/3.json"
        );
    }

    #[test]
    fn dealing_is_round_robin_over_sorted_members() {
        let members: BTreeSet<String> = ["x", "y", "z"].map(String::from).into();
        let shares: Vec<usize> = ["x", "y", "z", "w"]
            .iter()
            .map(|m| deal(&members, &partitions(7), m).len())
            .collect();
        assert_eq!(shares, [3, 2, 2, 0]);
    }
}
