//! Durable Parquet writes (temp + fsync + rename; the caller syncs the directories) and checked
//! reads of files a manifest lists.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::{Error, Result};

/// Suffix of files being written; a crash leaves them behind and the next start removes them.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Rows per Parquet row group. Readers skip row groups by their statistics, so an audit page
/// of 1,000 events by offset decodes about this many rows of a file, not all of it.
const ROW_GROUP_ROWS: usize = 16_384;

/// Writes `df` to `path` through a temp file and an fsync, then renames it into place. Returns
/// the file's size. The rename is durable once the caller syncs `path`'s directory.
pub fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<u64> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(".{name}{TEMP_SUFFIX}"));
    let mut file = File::create(&temp).map_err(Error::io(&temp))?;
    ParquetWriter::new(&mut file)
        .with_compression(ParquetCompression::Snappy)
        .with_row_group_size(Some(ROW_GROUP_ROWS))
        .finish(df)?;
    file.sync_all().map_err(Error::io(&temp))?;
    let bytes = file.metadata().map_err(Error::io(&temp))?.len();
    drop(file);
    fs::rename(&temp, path).map_err(Error::io(path))?;
    Ok(bytes)
}

/// Syncs every distinct directory of `paths`.
pub fn sync_dirs<'a>(paths: impl Iterator<Item = &'a Path>) -> Result<()> {
    let mut dirs: Vec<PathBuf> = paths
        .filter_map(|p| p.parent().map(Path::to_owned))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        braid_store::storage::sync_dir(&dir).map_err(Error::io(&dir))?;
    }
    Ok(())
}

/// Reads a whole Parquet file.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).map_err(Error::io(path))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| Error::ArchiveFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
