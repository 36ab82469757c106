//! The one narrow interface every layer reads and writes storage through: list, get,
//! put-if-absent, put-if-unchanged, delete. Conditional puts are the only coordination between
//! writers: a write-once object (an archive file, a snapshot's cells) is created if absent; a
//! mutable one (a manifest, a checkpoint, the snapshot pointer) is replaced only if it is still
//! the version its writer last read, so a writer that lost ownership is refused, not obeyed.
//!
//! Keys are `/`-separated paths relative to the storage root (`batch/CURRENT.json`), laid out
//! by [`crate::layout`]. [`LocalStorage`] keeps them under a directory, [`ObjectStorage`] in
//! an S3 bucket.

pub mod conformance;
pub mod faults;
mod local;
mod object;

use std::fmt;
use std::sync::Arc;

pub use local::{LocalStorage, sync_dir};
pub use object::ObjectStorage;

/// The storage `config` names: object storage at `storage.url` (its cache in
/// [`local_root`]), or the local folder `storage.dir`. A process opens it once, in `main`, and
/// hands it to every layer. With [`faults::FAULTS_ENV`] set, wrapped in the storage faults its
/// control file asks for.
pub fn open(
    config: &braid_shared::config::StorageConfig,
) -> Result<Arc<dyn Storage>, StorageError> {
    let storage = open_unwrapped(config)?;
    Ok(match std::env::var_os(faults::FAULTS_ENV) {
        Some(control) => Arc::new(faults::FaultyStorage::new(storage, control.as_ref())),
        None => storage,
    })
}

fn open_unwrapped(
    config: &braid_shared::config::StorageConfig,
) -> Result<Arc<dyn Storage>, StorageError> {
    let Some(url) = &config.url else {
        return Ok(Arc::new(LocalStorage::new(&config.dir)));
    };
    let cache = local_root(config);
    // Created up front, so that readers confining file access to it can name it exactly.
    std::fs::create_dir_all(&cache).map_err(|e| {
        StorageError::Open(format!(
            "creating the cache folder {}: {e}",
            cache.display()
        ))
    })?;
    Ok(Arc::new(ObjectStorage::new(url, &[])?.with_cache(cache)))
}

/// Where [`Storage::local_file`] puts the files of the storage `config` names: `storage.dir`
/// itself, or with `storage.url` its `cache` folder. A key's file is this folder joined with
/// the key.
pub fn local_root(config: &braid_shared::config::StorageConfig) -> std::path::PathBuf {
    match config.url {
        Some(_) => config.dir.join("cache"),
        None => config.dir.clone(),
    }
}

/// An object's version, as its store reports it: compared, never interpreted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(pub String);

/// An object read from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub bytes: Vec<u8>,
    pub version: Version,
}

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// What a conditional put did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Written; the object's new version.
    Written(Version),
    /// Not written: the object exists (put-if-absent) or is no longer the expected version
    /// (put-if-unchanged).
    Conflict,
}

/// Why storage could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `key` is not a key: empty, absolute, with `.`/`..` or empty segments.
    #[error("invalid storage key {key:?}")]
    InvalidKey { key: String },

    #[error("storage {op} {key}: {source}")]
    Io {
        op: &'static str,
        key: String,
        source: std::io::Error,
    },

    /// The storage the configuration names cannot be used (a bad URL, no cache folder).
    #[error("opening storage: {0}")]
    Open(String),
}

/// Where Braid keeps the archive, snapshots, checkpoints and logs.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Every object whose key starts with `prefix` (a folder ends with `/`), in key order.
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError>;

    /// The object at `key`, or `None` when there is none.
    fn get(&self, key: &str) -> Result<Option<Object>, StorageError>;

    /// Creates `key` holding `bytes`, durably, unless it exists.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<Put, StorageError>;

    /// [`Storage::put_if_absent`] of several objects, all durable when it returns; a store may
    /// share the cost of durability among them. One result per object, in order.
    fn put_all_if_absent(&self, objects: &[(String, Vec<u8>)]) -> Result<Vec<Put>, StorageError> {
        objects
            .iter()
            .map(|(key, bytes)| self.put_if_absent(key, bytes))
            .collect()
    }

    /// [`Storage::put_all_if_absent`] whose new objects are visible at once but may become
    /// durable only at the next [`Storage::flush`], so that many writes share one flush: for a
    /// log whose entries are made durable before the checkpoint that covers them (fraud
    /// alerts). After a machine crash (not a process crash) an object written so and not yet
    /// flushed may be missing or damaged; the log's writer replaces a damaged one when it
    /// writes it again. Default: durable at once, as `put_all_if_absent`.
    fn put_all_if_absent_unflushed(
        &self,
        objects: &[(String, Vec<u8>)],
    ) -> Result<Vec<Put>, StorageError> {
        self.put_all_if_absent(objects)
    }

    /// Makes every object written so far by [`Storage::put_all_if_absent_unflushed`] durable.
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Replaces `key` with `bytes`, durably, if it still is `expected`.
    fn put_if_unchanged(
        &self,
        key: &str,
        bytes: &[u8],
        expected: &Version,
    ) -> Result<Put, StorageError>;

    /// Removes `key`; removing an object that is not there is not an error.
    fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Removes what puts cut short by a crash left below `prefix` for objects whose name starts
    /// with `name_start` (a local store's temp files; a remote store's puts leave nothing).
    /// Only for a writer that owns those names. Returns how many went.
    fn remove_leftovers(&self, _prefix: &str, _name_start: &str) -> Result<usize, StorageError> {
        Ok(0)
    }

    /// Where the object `key` is, for messages naming it: its local path, or its URL.
    fn location(&self, key: &str) -> std::path::PathBuf;

    /// A local file holding the immutable object `key` (an archive or snapshot cell file), for
    /// readers that scan files in place (Polars, DuckDB). A local store returns its own file; a
    /// remote one downloads the object once into its cache folder. `None` when there is no
    /// such object.
    fn local_file(&self, key: &str) -> Result<Option<std::path::PathBuf>, StorageError>;
}

/// Writes `bytes` at `key` over the version the writer holds (`None`: it holds none, the object
/// must not exist). Returns the new version, or `None` when another writer got there first.
pub fn put_over(
    storage: &dyn Storage,
    key: &str,
    bytes: &[u8],
    held: Option<&Version>,
) -> Result<Option<Version>, StorageError> {
    let put = match held {
        Some(version) => storage.put_if_unchanged(key, bytes, version)?,
        None => storage.put_if_absent(key, bytes)?,
    };
    Ok(match put {
        Put::Written(version) => Some(version),
        Put::Conflict => None,
    })
}

/// Checks a key: relative, `/`-separated, no empty, `.` or `..` segments.
pub(crate) fn check_key(key: &str) -> Result<(), StorageError> {
    let valid = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('\\'));
    if valid {
        Ok(())
    } else {
        Err(StorageError::InvalidKey {
            key: key.to_owned(),
        })
    }
}
