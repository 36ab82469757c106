//! Which sources decode each topic's messages for the archive.

use std::sync::Arc;

use braid_shared::{Config, Decoder, SourceDef};

use crate::error::{Error, Result};
use braid_store::columns::{EVENT_TIME, INGEST_TIME, OFFSET, PARTITION};

pub(crate) struct SourcePlan {
    pub def: Arc<SourceDef>,
    pub decoder: Decoder,
}

pub(crate) struct TopicPlan {
    pub topic: String,
    pub sources: Vec<SourcePlan>,
}

pub(crate) struct Plan {
    pub topics: Vec<TopicPlan>,
}

impl Plan {
    pub fn new(config: &Config) -> Result<Self> {
        for source in &config.sources {
            check_field_names(source)?;
        }
        let topics = config
            .topics()
            .into_iter()
            .map(|topic| TopicPlan {
                topic: topic.to_owned(),
                sources: config
                    .sources
                    .iter()
                    .filter(|s| s.topic == topic)
                    .map(|s| SourcePlan {
                        def: Arc::clone(s),
                        decoder: Decoder::new(s),
                    })
                    .collect(),
            })
            .collect();
        Ok(Self { topics })
    }

    pub fn topic(&self, topic: &str) -> Option<&TopicPlan> {
        self.topics.iter().find(|t| t.topic == topic)
    }
}

/// The archive adds its own columns; a source field of the same name would be overwritten.
pub(crate) fn check_field_names(source: &SourceDef) -> Result<()> {
    match source
        .fields
        .iter()
        .find(|f| [EVENT_TIME, PARTITION, OFFSET, INGEST_TIME].contains(&f.name.as_str()))
    {
        Some(field) => Err(Error::Shared(braid_shared::Error::ConfigInvalid(vec![
            braid_shared::ConfigIssue {
                key: format!("source[{}].fields.{}", source.name, field.name),
                message: format!(
                    "{:?} is a column the archive adds itself; rename the field",
                    field.name
                ),
            },
        ]))),
        None => Ok(()),
    }
}
