//! [`Storage`] on an S3 bucket (or any store speaking S3: MinIO, R2, moto), through the
//! `object_store` crate. Keys live under the URL's prefix. Creates are `PutMode::Create`
//! (`If-None-Match: *`), replaces `PutMode::Update` over the ETag the writer read (`If-Match`),
//! so the store itself refuses a writer that lost ownership, across any number of processes and
//! machines. A version is the object's ETag. A put that returned is durable (S3 acknowledges a
//! write once it is stored).
//!
//! The trait is blocking, `object_store` is async: each call runs on the store's own small
//! runtime and the caller's thread waits for it, so it works from plain threads and from
//! blocking sections of async code alike.

use std::sync::Arc;
use std::sync::mpsc;

use futures_util::TryStreamExt as _;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as StorePath;
use object_store::{
    ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion,
};

use super::{Listed, Object, Put, Storage, StorageError, Version, check_key};

/// Storage under `s3://bucket/prefix`.
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// The URL's prefix, without slashes at either end; empty for the bucket's root.
    prefix: String,
    url: String,
    /// Where immutable objects are downloaded for readers that scan local files.
    cache: std::path::PathBuf,
    /// `None` only while dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for ObjectStorage {
    fn drop(&mut self) {
        // Without waiting, so that dropping it inside async code does not block or panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("url", &self.url)
            .finish()
    }
}

impl ObjectStorage {
    /// Storage at `url` (`s3://bucket[/prefix]`), with credentials, region and endpoint from
    /// the standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...), overridden by `options`
    /// (`object_store`'s S3 configuration keys, such as `aws_endpoint`).
    pub fn new(url: &str, options: &[(&str, &str)]) -> Result<Self, StorageError> {
        let (bucket, prefix) =
            braid_shared::config::parse_storage_url(url).map_err(|e| StorageError::Open(e.0))?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // The endpoint variable newer AWS tools use, where object_store reads `AWS_ENDPOINT`.
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            builder = builder.with_endpoint(endpoint);
        }
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key.parse().map_err(|_| {
                StorageError::Open(format!("{key:?} is not an S3 configuration key"))
            })?;
            builder = builder.with_config(key, *value);
        }
        let store = builder
            .build()
            .map_err(|e| StorageError::Open(format!("storage {url}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("braid-storage")
            .enable_all()
            .build()
            .map_err(|e| {
                StorageError::Open(format!("storage {url}: starting its I/O threads: {e}"))
            })?;
        Ok(Self {
            store: Arc::new(store),
            prefix: prefix.to_owned(),
            url: url.to_owned(),
            cache: std::env::temp_dir().join(format!("braid-cache-{}", std::process::id())),
            runtime: Some(runtime),
        })
    }

    /// Downloads immutable objects for local readers into `dir` (default: a folder of this
    /// process under the system's temp folder).
    #[must_use]
    pub fn with_cache(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cache = dir.into();
        self
    }

    /// The URL this storage was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> Result<StorePath, StorageError> {
        check_key(key)?;
        Ok(StorePath::from(self.full(key)))
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// Runs `work` on the storage's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| "the storage is shut down".to_owned())?;
        let (sender, receiver) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = sender.send(work.await);
        });
        receiver
            .recv()
            .map_err(|_| "the storage I/O task stopped".to_owned())
    }
}

fn failed<'a>(op: &'static str, key: &'a str) -> impl FnOnce(String) -> StorageError + 'a {
    move |reason| StorageError::Io {
        op,
        key: key.to_owned(),
        source: std::io::Error::other(reason),
    }
}

fn version(e_tag: Option<String>, op: &'static str, key: &str) -> Result<Version, StorageError> {
    e_tag
        .map(Version)
        .ok_or_else(|| failed(op, key)("the store reported no ETag".to_owned()))
}

impl Storage for ObjectStorage {
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        // Object stores list by folder: list the deepest folder the prefix names, then keep
        // the keys that start with it.
        let folder = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        if !folder.is_empty() {
            check_key(folder)?;
        }
        let under = self.full(folder);
        let location = (!under.is_empty()).then(|| StorePath::from(under));
        let store = Arc::clone(&self.store);
        let metas = self
            .run(async move { store.list(location.as_ref()).try_collect::<Vec<_>>().await })
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(failed("list", prefix))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut found: Vec<Listed> = metas
            .into_iter()
            .filter_map(|meta| {
                // The store's keys are percent-encoded where a key has characters object
                // stores advise against (`~` as `%7E`): listed back as they were written.
                let location =
                    percent_encoding::percent_decode_str(meta.location.as_ref()).decode_utf8();
                let key = location.ok()?.strip_prefix(&strip)?.to_owned();
                key.starts_with(prefix).then_some(Listed {
                    key,
                    size: meta.size,
                })
            })
            .collect();
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    fn get(&self, key: &str) -> Result<Option<Object>, StorageError> {
        let location = self.path(key)?;
        let store = Arc::clone(&self.store);
        let got = self
            .run(async move {
                match store.get(&location).await {
                    Ok(result) => {
                        let e_tag = result.meta.e_tag.clone();
                        result.bytes().await.map(|bytes| Some((bytes, e_tag)))
                    }
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(failed("get", key))?;
        got.map(|(bytes, e_tag)| {
            Ok(Object {
                bytes: bytes.to_vec(),
                version: version(e_tag, "get", key)?,
            })
        })
        .transpose()
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<Put, StorageError> {
        self.put(key, bytes, PutMode::Create)
    }

    fn put_if_unchanged(
        &self,
        key: &str,
        bytes: &[u8],
        expected: &Version,
    ) -> Result<Put, StorageError> {
        let mode = PutMode::Update(UpdateVersion {
            e_tag: Some(expected.0.clone()),
            version: None,
        });
        self.put(key, bytes, mode)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let location = self.path(key)?;
        let store = Arc::clone(&self.store);
        self.run(async move {
            match store.delete(&location).await {
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                other => other,
            }
        })
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(failed("delete", key))?;
        let _ = std::fs::remove_file(self.cache.join(key));
        Ok(())
    }

    fn location(&self, key: &str) -> std::path::PathBuf {
        format!("{}/{key}", self.url.trim_end_matches('/')).into()
    }

    fn local_file(&self, key: &str) -> Result<Option<std::path::PathBuf>, StorageError> {
        check_key(key)?;
        let path = self.cache.join(key);
        // Only immutable objects are asked for: a cached copy stays valid. Copies are renamed
        // into place whole, so one is never partial.
        if path.is_file() {
            return Ok(Some(path));
        }
        let Some(object) = self.get(key)? else {
            return Ok(None);
        };
        let write = || -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(&self.cache);
            std::fs::create_dir_all(dir)?;
            let temp = dir.join(format!(
                ".{}.{}.download",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("object"),
                std::process::id()
            ));
            std::fs::write(&temp, &object.bytes)?;
            std::fs::rename(&temp, &path)
        };
        write().map_err(|source| StorageError::Io {
            op: "cache",
            key: key.to_owned(),
            source,
        })?;
        Ok(Some(path))
    }
}

impl ObjectStorage {
    fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> Result<Put, StorageError> {
        let location = self.path(key)?;
        let store = Arc::clone(&self.store);
        let payload = PutPayload::from(bytes.to_vec());
        let options = PutOptions {
            mode,
            ..Default::default()
        };
        let result = self
            .run(async move { store.put_opts(&location, payload, options).await })
            .map_err(failed("put", key))?;
        match result {
            Ok(written) => Ok(Put::Written(version(written.e_tag, "put", key)?)),
            // Created meanwhile, changed meanwhile, or gone (a replace of a deleted object).
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(Put::Conflict),
            Err(e) => Err(failed("put", key)(e.to_string())),
        }
    }
}
