//! The consumer core's error type.

use std::fmt;
use std::path::PathBuf;

use braid_shared::TopicPartition;

/// What decides where a layer resumes a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeRecord {
    /// The speed layer's checkpoint of the partition.
    Checkpoint,
    /// The archive's manifest of the partition.
    ArchiveManifest,
    /// The batch snapshot's coverage of the partition (a speed layer with no checkpoint).
    SnapshotCoverage,
}

impl fmt::Display for ResumeRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Checkpoint => "checkpoint",
            Self::ArchiveManifest => "archive",
            Self::SnapshotCoverage => "batch snapshot",
        })
    }
}

impl ResumeRecord {
    fn remedy(self, path: &std::path::Path) -> String {
        match self {
            Self::Checkpoint => format!(
                "Counting it again would double count: remove {} to rebuild this partition from the broker",
                path.display()
            ),
            Self::ArchiveManifest => format!(
                "Archiving it again would mix two logs: move the archive of this partition away (manifest {}) to start over",
                path.display()
            ),
            Self::SnapshotCoverage => format!(
                "The snapshot (pointer {}) is of another log: publish a snapshot of this one with `braid batch --full`",
                path.display()
            ),
        }
    }

    /// The layer that reads the partition on from this record.
    fn reader(self) -> &'static str {
        match self {
            Self::Checkpoint | Self::SnapshotCoverage => "speed layer",
            Self::ArchiveManifest => "archive",
        }
    }

    /// What an operator can do when the broker deleted offsets the layer had not read.
    fn deleted_remedy(self, path: &std::path::Path, low_watermark: i64) -> String {
        match self {
            Self::Checkpoint => format!(
                "To go on without them, remove {}: the partition is then rebuilt from the batch coverage, or from the broker's oldest offset when nothing is covered",
                path.display()
            ),
            Self::ArchiveManifest => format!(
                "The master dataset would have a hole: to start this partition's archive over at the broker's oldest offset, move it away (manifest {})",
                path.display()
            ),
            Self::SnapshotCoverage => format!(
                "If the archive holds them, a batch run (`braid batch`) once the archive reaches the segment past {low_watermark} moves the coverage past the hole; the snapshot pointer is {}",
                path.display()
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),

    /// The broker's log of a partition ends below where the layer's own record resumes it.
    #[error(
        "{tp}: the broker's offsets end at {high_watermark} but the {record} continues from {resume}; \
         the topic was deleted and recreated or truncated. {}",
        record.remedy(path)
    )]
    OffsetsBehind {
        tp: TopicPartition,
        high_watermark: i64,
        resume: i64,
        record: ResumeRecord,
        path: PathBuf,
    },

    /// The broker deleted offsets (retention, delete-records) a layer had not read yet.
    #[error(
        "{tp}: the broker deleted offsets {resume} to {} (its log now starts at {low_watermark}) before the {} read them; \
         Braid never skips events. Raise the topic's retention so that the layers keep up. {}",
        low_watermark - 1,
        record.reader(),
        record.deleted_remedy(path, *low_watermark)
    )]
    OffsetsDeleted {
        tp: TopicPartition,
        low_watermark: i64,
        resume: i64,
        record: ResumeRecord,
        path: PathBuf,
    },

    /// A Kafka client could not be made (bad settings).
    #[error("cannot create {what}: {source}")]
    Client {
        what: String,
        source: rdkafka::error::KafkaError,
    },

    /// The broker did not answer a read in time, or refused it.
    #[error("{0}")]
    Unanswered(String),

    /// Produced messages were refused or not acknowledged.
    #[error("{0}")]
    Produce(String),

    /// Reading or writing the partition leases in storage failed.
    #[error("partition leases: {0}")]
    Leases(#[from] braid_store::Error),

    #[error("spawning the {thread} thread: {source}")]
    Spawn {
        thread: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
