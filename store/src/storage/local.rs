//! [`Storage`] on a local directory. Puts write a temp file, fsync it, then link (create) or
//! rename (replace) it into place and fsync the directory, so readers see the old or the new
//! object, never a mix, and a put that returned survives a crash. Conditional replaces hold the
//! directory's lock (`flock`), so writers in several processes on one machine are serialized.
//! A version is the xxh3 hash of the content.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Listed, Object, Put, Storage, StorageError, Version, check_key};

/// Suffix of files being written; a crash leaves them behind and their owner removes them.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Storage under one directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    /// Set after an unflushed write, cleared by the flush that covers it (shared by clones).
    unflushed: Arc<AtomicBool>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            unflushed: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Writes a synced temp file beside `path`; returns its path.
    fn write_temp(path: &Path, bytes: &[u8], durable: bool) -> io::Result<PathBuf> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{name}.{}-{n}{TEMP_SUFFIX}", std::process::id()));
        // A delete may remove the folder, emptied, between its creation and the file's: then
        // it is created again.
        let mut attempts = 0;
        let mut file = loop {
            fs::create_dir_all(dir)?;
            match File::create(&temp) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
                other => break other?,
            }
        };
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        Ok(temp)
    }
}

fn version_of(bytes: &[u8]) -> Version {
    Version(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes)))
}

fn io<'a>(op: &'static str, key: &'a str) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        key: key.to_owned(),
        source,
    }
}

/// Makes a directory's entries (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalStorage {
    /// Writes `bytes` to a synced temp file and links it to `path` unless that exists; the
    /// folder is not synced (callers do, once per folder).
    fn link_new(
        &self,
        key: &str,
        path: &Path,
        bytes: &[u8],
        durable: bool,
    ) -> Result<Put, StorageError> {
        let temp = Self::write_temp(path, bytes, durable).map_err(io("put", key))?;
        // A hard link fails if the name exists: create-if-absent, atomically.
        let linked = fs::hard_link(&temp, path);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => Ok(Put::Written(version_of(bytes))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Put::Conflict),
            Err(e) => Err(io("put", key)(e)),
        }
    }
}

impl Storage for LocalStorage {
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        // The deepest folder the prefix names, then every file below it matching the prefix.
        let folder = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if folder.is_empty() {
            self.root.clone()
        } else {
            self.path(folder)?
        };
        let mut found = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("list", prefix)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io("list", prefix))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(io("list", prefix))?;
                let Ok(relative) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                if kind.is_dir() {
                    if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                        stack.push(path);
                    }
                    continue;
                }
                let temp = entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX);
                if kind.is_file() && !temp && key.starts_with(prefix) {
                    let size = entry.metadata().map_err(io("list", prefix))?.len();
                    found.push(Listed { key, size });
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    fn get(&self, key: &str) -> Result<Option<Object>, StorageError> {
        let path = self.path(key)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(Object {
                version: version_of(&bytes),
                bytes,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("get", key)(e)),
        }
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<Put, StorageError> {
        let path = self.path(key)?;
        let put = self.link_new(key, &path, bytes, true)?;
        if matches!(put, Put::Written(_)) {
            sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(io("put", key))?;
        }
        Ok(put)
    }

    /// Each file synced and linked in place, then each folder that gained one synced once.
    fn put_all_if_absent(&self, objects: &[(String, Vec<u8>)]) -> Result<Vec<Put>, StorageError> {
        let mut puts = Vec::with_capacity(objects.len());
        let mut folders: Vec<(PathBuf, &str)> = Vec::new();
        for (key, bytes) in objects {
            let path = self.path(key)?;
            let put = self.link_new(key, &path, bytes, true)?;
            if matches!(put, Put::Written(_)) {
                let folder = path.parent().unwrap_or(Path::new(".")).to_owned();
                if !folders.iter().any(|(f, _)| *f == folder) {
                    folders.push((folder, key));
                }
            }
            puts.push(put);
        }
        for (folder, key) in folders {
            sync_dir(&folder).map_err(io("put", key))?;
        }
        Ok(puts)
    }

    fn put_all_if_absent_unflushed(
        &self,
        objects: &[(String, Vec<u8>)],
    ) -> Result<Vec<Put>, StorageError> {
        let mut puts = Vec::with_capacity(objects.len());
        for (key, bytes) in objects {
            let path = self.path(key)?;
            puts.push(self.link_new(key, &path, bytes, false)?);
        }
        // After the writes: a flush that starts later covers them.
        if puts.iter().any(|p| matches!(p, Put::Written(_))) {
            self.unflushed.store(true, Ordering::Release);
        }
        Ok(puts)
    }

    fn flush(&self) -> Result<(), StorageError> {
        if !self.unflushed.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        // One flush of the file system for every file and directory entry written since the
        // last one, instead of one per file.
        let flushed = File::open(&self.root).and_then(|root| {
            #[cfg(target_os = "linux")]
            rustix::fs::syncfs(&root)?;
            #[cfg(not(target_os = "linux"))]
            {
                drop(root);
                rustix::fs::sync();
            }
            Ok(())
        });
        flushed.map_err(|e| {
            self.unflushed.store(true, Ordering::Release);
            io("flush", "unflushed objects")(e)
        })
    }

    fn put_if_unchanged(
        &self,
        key: &str,
        bytes: &[u8],
        expected: &Version,
    ) -> Result<Put, StorageError> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io("put", key))?;
        let lock = File::open(dir).map_err(io("put", key))?;
        lock.lock().map_err(io("put", key))?;
        let current = match fs::read(&path) {
            Ok(current) => Some(version_of(&current)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("put", key)(e)),
        };
        if current.as_ref() != Some(expected) {
            return Ok(Put::Conflict);
        }
        let temp = Self::write_temp(&path, bytes, true).map_err(io("put", key))?;
        if let Err(e) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(io("put", key)(e));
        }
        sync_dir(dir).map_err(io("put", key))?;
        drop(lock);
        Ok(Put::Written(version_of(bytes)))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("delete", key)(e)),
        }
        // Folders exist only for the objects in them, as in an object store: the ones this
        // delete emptied go too (removing a folder that is not empty fails, and stops here).
        let mut folder = path.parent();
        while let Some(dir) = folder.filter(|d| *d != self.root) {
            if fs::remove_dir(dir).is_err() {
                break;
            }
            folder = dir.parent();
        }
        Ok(())
    }

    fn location(&self, key: &str) -> PathBuf {
        self.path(key).unwrap_or_else(|_| key.into())
    }

    fn remove_leftovers(&self, prefix: &str, name_start: &str) -> Result<usize, StorageError> {
        let mut removed = 0;
        let mut stack = vec![self.path(prefix.trim_end_matches('/'))?];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("list", prefix)(e)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let leftover = name.ends_with(TEMP_SUFFIX)
                    && name
                        .strip_prefix('.')
                        .is_some_and(|n| n.starts_with(name_start));
                if leftover {
                    fs::remove_file(&path).map_err(io("delete", prefix))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn local_file(&self, key: &str) -> Result<Option<PathBuf>, StorageError> {
        let path = self.path(key)?;
        Ok(path.is_file().then_some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::super::put_over;
    use super::*;

    #[test]
    fn put_all_creates_only_what_is_absent_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(dir.path());
        store.put_if_absent("f/1/2.json", b"kept").unwrap();
        let objects: Vec<(String, Vec<u8>)> = ["f/1/1.json", "f/1/2.json", "f/2/9.json"]
            .iter()
            .map(|k| (k.to_string(), format!("new {k}").into_bytes()))
            .collect();
        let puts = store.put_all_if_absent(&objects).unwrap();
        assert!(matches!(puts[0], Put::Written(_)));
        assert_eq!(puts[1], Put::Conflict);
        assert!(matches!(puts[2], Put::Written(_)));
        assert_eq!(store.get("f/1/2.json").unwrap().unwrap().bytes, b"kept");
        assert_eq!(
            store.get("f/2/9.json").unwrap().unwrap().bytes,
            b"new f/2/9.json"
        );
        let listed: Vec<String> = store
            .list("f/")
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(listed, ["f/1/1.json", "f/1/2.json", "f/2/9.json"]);
        // A bad key among them is refused by name.
        let bad = vec![("../x".to_owned(), b"x".to_vec())];
        assert!(store.put_all_if_absent(&bad).is_err());
    }

    #[test]
    fn conditional_puts_refuse_stale_writers() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(dir.path());
        let Put::Written(v1) = store.put_if_absent("a/b.json", b"one").unwrap() else {
            panic!("first create refused");
        };
        assert_eq!(
            store.put_if_absent("a/b.json", b"two").unwrap(),
            Put::Conflict
        );
        let Put::Written(v2) = store.put_if_unchanged("a/b.json", b"two", &v1).unwrap() else {
            panic!("update over the held version refused");
        };
        // A writer still holding v1 (a zombie) is refused; the object keeps the new content.
        assert_eq!(
            store.put_if_unchanged("a/b.json", b"old", &v1).unwrap(),
            Put::Conflict
        );
        let object = store.get("a/b.json").unwrap().unwrap();
        assert_eq!(object.bytes, b"two");
        assert_eq!(object.version, v2);
        assert!(put_over(&store, "a/c.json", b"x", None).unwrap().is_some());
        assert_eq!(put_over(&store, "a/c.json", b"y", None).unwrap(), None);
        // Nothing but the objects is left behind.
        let listed: Vec<String> = store
            .list("a/")
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(listed, ["a/b.json", "a/c.json"]);
        assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 2);
        store.delete("a/b.json").unwrap();
        store.delete("a/b.json").unwrap();
        assert!(store.get("a/b.json").unwrap().is_none());
    }

    #[test]
    fn keys_never_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(dir.path());
        for key in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b"] {
            assert!(
                matches!(store.get(key), Err(StorageError::InvalidKey { .. })),
                "{key:?}"
            );
        }
    }

    #[test]
    fn list_matches_prefixes_inside_folders() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::new(dir.path());
        for key in ["m/t/0.json", "m/t/1.json", "m/t2/0.json", "m/x.json"] {
            store.put_if_absent(key, b"{}").unwrap();
        }
        let keys = |prefix: &str| -> Vec<String> {
            store
                .list(prefix)
                .unwrap()
                .into_iter()
                .map(|l| l.key)
                .collect()
        };
        assert_eq!(keys("m/t/"), ["m/t/0.json", "m/t/1.json"]);
        assert_eq!(keys("m/t"), ["m/t/0.json", "m/t/1.json", "m/t2/0.json"]);
        assert_eq!(
            keys("m/"),
            ["m/t/0.json", "m/t/1.json", "m/t2/0.json", "m/x.json"]
        );
        assert!(keys("none/").is_empty());
    }
}
