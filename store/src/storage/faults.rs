//! Storage faults on demand, for fault-injection runs (`braid torture`): with the environment
//! variable [`FAULTS_ENV`] naming a control file, [`open`](super::open) wraps the storage in
//! [`FaultyStorage`], which reads the file at most every 100 ms and obeys what it says:
//!
//! ```text
//! fail_writes = 0.2   # share of writes refused before they happen (as "no space left")
//! lose_acks = 0.1     # share of writes done whose answer is lost (an error after the write)
//! slow_ms = 40        # delay of every read and write
//! ```
//!
//! An empty or missing file means no faults. Without the variable nothing is wrapped.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Listed, Object, Put, Storage, StorageError, Version};

/// The environment variable naming the control file.
pub const FAULTS_ENV: &str = "BRAID_STORAGE_FAULTS";

/// What the control file asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    pub fail_writes: f64,
    pub lose_acks: f64,
    pub slow_ms: u64,
}

impl Faults {
    /// The settings of a control file's text; unknown lines and bad numbers are ignored, so a
    /// half-written file means fewer faults, never a failed read.
    pub fn parse(text: &str) -> Self {
        let mut faults = Self::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "fail_writes" => faults.fail_writes = value.parse().unwrap_or(0.0),
                "lose_acks" => faults.lose_acks = value.parse().unwrap_or(0.0),
                "slow_ms" => faults.slow_ms = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        faults
    }

    /// The control file's text for these settings.
    pub fn render(&self) -> String {
        format!(
            "fail_writes = {}\nlose_acks = {}\nslow_ms = {}\n",
            self.fail_writes, self.lose_acks, self.slow_ms
        )
    }
}

/// A storage that fails and slows down as its control file says.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: std::sync::Arc<dyn Storage>,
    control: PathBuf,
    read: Mutex<(Instant, Faults)>,
    draws: AtomicU64,
}

impl FaultyStorage {
    pub fn new(inner: std::sync::Arc<dyn Storage>, control: &Path) -> Self {
        let faults = read_control(control);
        Self {
            inner,
            control: control.to_owned(),
            read: Mutex::new((Instant::now(), faults)),
            draws: AtomicU64::new(u64::from(std::process::id())),
        }
    }

    fn faults(&self) -> Faults {
        let Ok(mut read) = self.read.lock() else {
            return Faults::default();
        };
        if read.0.elapsed() >= Duration::from_millis(100) {
            *read = (Instant::now(), read_control(&self.control));
        }
        read.1
    }

    /// A number in [0, 1): splitmix64 over a counter, different in every process.
    fn draw(&self) -> f64 {
        let mut z = self
            .draws
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn slow(&self, faults: &Faults) {
        if faults.slow_ms > 0 {
            std::thread::sleep(Duration::from_millis(faults.slow_ms));
        }
    }

    fn read<T>(&self, op: impl FnOnce() -> T) -> T {
        self.slow(&self.faults());
        op()
    }

    /// A write: refused before it happens, done with its answer lost, or done.
    fn write<T>(
        &self,
        name: &'static str,
        key: &str,
        op: impl FnOnce() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let faults = self.faults();
        self.slow(&faults);
        if faults.fail_writes > 0.0 && self.draw() < faults.fail_writes {
            return Err(injected(name, key, "refused before the write"));
        }
        let done = op()?;
        if faults.lose_acks > 0.0 && self.draw() < faults.lose_acks {
            return Err(injected(name, key, "answer lost after the write"));
        }
        Ok(done)
    }
}

fn read_control(control: &Path) -> Faults {
    std::fs::read_to_string(control)
        .map(|text| Faults::parse(&text))
        .unwrap_or_default()
}

fn injected(op: &'static str, key: &str, what: &str) -> StorageError {
    StorageError::Io {
        op,
        key: key.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("injected storage fault: {what}"),
        ),
    }
}

impl Storage for FaultyStorage {
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        self.read(|| self.inner.list(prefix))
    }

    fn get(&self, key: &str) -> Result<Option<Object>, StorageError> {
        self.read(|| self.inner.get(key))
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<Put, StorageError> {
        self.write("put", key, || self.inner.put_if_absent(key, bytes))
    }

    fn put_all_if_absent(&self, objects: &[(String, Vec<u8>)]) -> Result<Vec<Put>, StorageError> {
        let key = objects.first().map_or("", |(k, _)| k.as_str());
        self.write("put", key, || self.inner.put_all_if_absent(objects))
    }

    fn put_all_if_absent_unflushed(
        &self,
        objects: &[(String, Vec<u8>)],
    ) -> Result<Vec<Put>, StorageError> {
        let key = objects.first().map_or("", |(k, _)| k.as_str());
        self.write("put", key, || {
            self.inner.put_all_if_absent_unflushed(objects)
        })
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.write("flush", "", || self.inner.flush())
    }

    fn put_if_unchanged(
        &self,
        key: &str,
        bytes: &[u8],
        expected: &Version,
    ) -> Result<Put, StorageError> {
        self.write("put", key, || {
            self.inner.put_if_unchanged(key, bytes, expected)
        })
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.write("delete", key, || self.inner.delete(key))
    }

    fn remove_leftovers(&self, prefix: &str, name_start: &str) -> Result<usize, StorageError> {
        self.inner.remove_leftovers(prefix, name_start)
    }

    fn location(&self, key: &str) -> PathBuf {
        self.inner.location(key)
    }

    fn local_file(&self, key: &str) -> Result<Option<PathBuf>, StorageError> {
        self.read(|| self.inner.local_file(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_file_turns_faults_on_and_off() {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("faults");
        let inner = std::sync::Arc::new(super::super::LocalStorage::new(dir.path().join("s")));
        let storage = FaultyStorage::new(inner, &control);
        assert!(matches!(
            storage.put_if_absent("a/1", b"x"),
            Ok(Put::Written(_))
        ));

        let every = Faults {
            fail_writes: 1.0,
            ..Faults::default()
        };
        std::fs::write(&control, every.render()).unwrap();
        *storage.read.lock().unwrap() = (Instant::now() - Duration::from_secs(1), every);
        let refused = storage.put_if_absent("a/2", b"y").unwrap_err();
        assert!(
            refused.to_string().contains("injected storage fault"),
            "{refused}"
        );
        assert_eq!(
            storage.get("a/2").unwrap(),
            None,
            "a refused write leaves nothing"
        );

        let lost = Faults {
            lose_acks: 1.0,
            ..Faults::default()
        };
        std::fs::write(&control, lost.render()).unwrap();
        *storage.read.lock().unwrap() = (Instant::now() - Duration::from_secs(1), lost);
        assert!(storage.put_if_absent("a/3", b"z").is_err());
        assert_eq!(
            storage.get("a/3").unwrap().unwrap().bytes,
            b"z",
            "done, answer lost"
        );

        std::fs::write(&control, "").unwrap();
        *storage.read.lock().unwrap() = (Instant::now() - Duration::from_secs(1), lost);
        assert!(matches!(
            storage.put_if_absent("a/4", b"w"),
            Ok(Put::Written(_))
        ));
        assert_eq!(
            Faults::parse("fail_writes = x\nslow_ms=7"),
            Faults {
                slow_ms: 7,
                ..Faults::default()
            }
        );
    }
}
