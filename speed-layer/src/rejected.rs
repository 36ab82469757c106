//! The rejected-events log of one partition: JSON lines, appended as messages are rejected and
//! made durable before each checkpoint, which records the log's length. Restoring truncates the
//! log to that length, so messages replayed after a crash are never logged twice.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use braid_shared::storage::RejectedRecord;

use crate::error::{Error, Result};

pub(crate) struct RejectedLog {
    path: PathBuf,
    writer: BufWriter<File>,
    len: u64,
}

/// What to keep of an existing log when a partition is taken up.
pub(crate) enum Keep {
    /// The first `n` bytes: what the restored checkpoint covers.
    Bytes(u64),
    /// Records of offsets below this: the state is rebuilt from here.
    BelowOffset(i64),
}

impl RejectedLog {
    pub fn open(path: &Path, keep: Keep) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(Error::io(dir))?;
        }
        let len = match keep {
            Keep::Bytes(n) => {
                let file = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .open(path)
                    .map_err(Error::io(path))?;
                let actual = file.metadata().map_err(Error::io(path))?.len();
                if actual < n {
                    return Err(Error::Checkpoint {
                        path: path.to_owned(),
                        reason: format!(
                            "rejected log has {actual} bytes but the checkpoint covers {n}"
                        ),
                    });
                }
                file.set_len(n).map_err(Error::io(path))?;
                file.sync_all().map_err(Error::io(path))?;
                n
            }
            Keep::BelowOffset(offset) => {
                let kept: Vec<u8> = match fs::read(path) {
                    Ok(bytes) => bytes
                        .split_inclusive(|&b| b == b'\n')
                        .filter(|line| {
                            line.ends_with(b"\n")
                                && serde_json::from_slice::<RejectedRecord>(line)
                                    .is_ok_and(|r| r.offset < offset)
                        })
                        .flatten()
                        .copied()
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(Error::io(path)(e)),
                };
                braid_shared::storage::write_atomic(path, &kept).map_err(Error::io(path))?;
                kept.len() as u64
            }
        };
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(Error::io(path))?;
        Ok(Self {
            path: path.to_owned(),
            writer: BufWriter::new(file),
            len,
        })
    }

    pub fn append(&mut self, record: &RejectedRecord) -> Result<()> {
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .map_err(Error::io(&self.path))?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs; returns the durable length.
    pub fn sync(&mut self) -> Result<u64> {
        self.writer.flush().map_err(Error::io(&self.path))?;
        self.writer
            .get_ref()
            .sync_data()
            .map_err(Error::io(&self.path))?;
        Ok(self.len)
    }
}
