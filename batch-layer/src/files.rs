//! Parquet files through storage: frames encoded in memory and created once under their key
//! (durable when the put returns), and checked reads of files a manifest lists.

use std::hash::{BuildHasher as _, Hasher as _};
use std::io::Cursor;

use braid_store::Storage;
use braid_store::storage::Put;
use polars::prelude::*;

use crate::error::{Error, Result};

/// Rows per Parquet row group. Readers skip row groups by their statistics, so an audit page
/// of 1,000 events by offset decodes about this many rows of a file, not all of it.
const ROW_GROUP_ROWS: usize = 16_384;

/// `df` as the bytes of a Parquet file.
pub fn parquet_bytes(df: &mut DataFrame) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes)
        .with_compression(ParquetCompression::Snappy)
        .with_row_group_size(Some(ROW_GROUP_ROWS))
        .finish(df)?;
    Ok(bytes)
}

/// Creates every file of `files` (key, bytes), durably, in one go. A key that exists already
/// is an error: file names carry their writer's token, so only a bug reuses one.
pub fn create_all(storage: &dyn Storage, files: &[(String, Vec<u8>)]) -> Result<()> {
    let puts = storage
        .put_all_if_absent(files)
        .map_err(braid_store::Error::from)?;
    for ((key, _), put) in files.iter().zip(puts) {
        if put == Put::Conflict {
            return Err(Error::Internal(format!(
                "{key} exists already; another writer used this file name"
            )));
        }
    }
    Ok(())
}

/// Reads a whole Parquet file that a manifest lists under `key`.
pub fn read_parquet(storage: &dyn Storage, key: &str) -> Result<DataFrame> {
    let damaged = |reason: String| Error::ArchiveFile {
        path: key.into(),
        reason,
    };
    let object = storage
        .get(key)
        .map_err(braid_store::Error::from)?
        .ok_or_else(|| damaged("listed in the manifest but not in storage".to_owned()))?;
    ParquetReader::new(Cursor::new(object.bytes))
        .finish()
        .map_err(|e| damaged(e.to_string()))
}

/// A token unique to this writer (process and start), put in the names of the files it
/// writes, so that two writers of one partition (a zombie and its successor) never write
/// the same key.
pub fn writer_token() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_i64(now_ms());
    format!("{:016x}", hasher.finish())
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
