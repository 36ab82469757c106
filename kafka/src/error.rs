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
}

impl fmt::Display for ResumeRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Checkpoint => "checkpoint",
            Self::ArchiveManifest => "archive",
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

    /// The group assigned a partition of a topic that no source reads.
    #[error("assigned {0}, a topic no source reads")]
    Unrouted(TopicPartition),

    #[error("spawning the {thread} thread: {source}")]
    Spawn {
        thread: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
