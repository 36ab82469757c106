//! The routing plan: for each topic, the sources that decode its messages and the views they
//! feed. The archiver uses the sources; the speed layer the sources and the views.

use std::sync::Arc;

use braid_shared::{Config, Decoder, SourceDef, TopicPartition, ViewDef};

/// One source reading a topic, and the views (indices into [`TopicPlan::views`]) it feeds.
#[derive(Debug)]
pub struct SourcePlan {
    pub def: Arc<SourceDef>,
    pub decoder: Decoder,
    pub views: Vec<usize>,
}

impl SourcePlan {
    pub fn name(&self) -> &str {
        &self.def.name
    }
}

/// Everything computed from one topic.
#[derive(Debug)]
pub struct TopicPlan {
    pub topic: String,
    pub sources: Vec<SourcePlan>,
    pub views: Vec<Arc<ViewDef>>,
}

impl TopicPlan {
    /// Names and fingerprints of the views, as recorded in checkpoints.
    pub fn view_ids(&self) -> Vec<(String, u64)> {
        self.views
            .iter()
            .map(|v| (v.name.clone(), v.fingerprint()))
            .collect()
    }
}

/// The plan of every source topic of a configuration.
#[derive(Debug)]
pub struct Plan {
    pub topics: Vec<TopicPlan>,
}

impl Plan {
    pub fn new(config: &Config) -> Self {
        let topics = config
            .topics()
            .into_iter()
            .map(|topic| {
                let mut views = Vec::new();
                let sources = config
                    .sources
                    .iter()
                    .filter(|s| s.topic == topic)
                    .map(|source| {
                        let mut indices = Vec::new();
                        for view in config.views.iter().filter(|v| v.source == source.name) {
                            indices.push(views.len());
                            views.push(Arc::clone(view));
                        }
                        SourcePlan {
                            def: Arc::clone(source),
                            decoder: Decoder::new(source),
                            views: indices,
                        }
                    })
                    .collect();
                TopicPlan {
                    topic: topic.to_owned(),
                    sources,
                    views,
                }
            })
            .collect();
        Self { topics }
    }

    pub fn topic(&self, topic: &str) -> Option<&TopicPlan> {
        self.topics.iter().find(|t| t.topic == topic)
    }

    /// The plan of a partition the group assigned; an error when no source reads its topic.
    pub fn assigned(&self, tp: &TopicPartition) -> crate::Result<&TopicPlan> {
        self.topic(&tp.topic)
            .ok_or_else(|| crate::Error::Unrouted(tp.clone()))
    }

    /// The topic plan holding a view, and the view's index in it.
    pub fn view(&self, name: &str) -> Option<(&TopicPlan, usize)> {
        self.topics
            .iter()
            .find_map(|t| t.views.iter().position(|v| v.name == name).map(|i| (t, i)))
    }
}
