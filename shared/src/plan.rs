//! The routing plan: for each topic, the sources that decode its messages and the views they
//! feed. The archiver uses the sources; the speed layer the sources and the views.

use std::sync::Arc;

use crate::{Config, Decoder, SourceDef, TopicPartition, ViewDef};

/// One source reading a topic, and the views (indices into [`TopicPlan::views`]) it feeds.
#[derive(Debug)]
pub struct SourcePlan {
    pub def: Arc<SourceDef>,
    /// Every field's value: the archive keeps the whole event.
    pub decoder: Decoder,
    /// Only the values the speed layer uses: the fields its views group by or aggregate, or
    /// every field of fraud scoring's source. It rejects exactly what `decoder` rejects.
    pub speed_decoder: Decoder,
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

    /// Makes sure every source of the topic can decode `payload` now: the schema it names is
    /// at hand. An error only while the schema registry cannot be asked.
    pub fn resolve(&self, payload: &[u8]) -> Result<(), crate::format::Unavailable> {
        self.sources
            .iter()
            .try_for_each(|source| source.decoder.resolve(payload))
    }
}

/// Per field slot of `source`, whether the speed layer uses its value: a group-by field or a
/// metric input of one of the source's views, or any field of the fraud scoring source (its
/// alerts record every field).
fn used_slots(config: &Config, source: &SourceDef) -> Vec<bool> {
    if config
        .fraud
        .as_ref()
        .is_some_and(|f| f.source.name == source.name)
    {
        return vec![true; source.fields.len()];
    }
    let mut used = vec![false; source.fields.len()];
    for view in config.views.iter().filter(|v| v.source == source.name) {
        let slots = view.group_by.iter().map(|g| Some(g.slot));
        for slot in slots.chain(view.metrics.iter().map(|m| m.slot)).flatten() {
            if let Some(used) = used.get_mut(slot) {
                *used = true;
            }
        }
    }
    used
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
                        let used = used_slots(config, source);
                        SourcePlan {
                            def: Arc::clone(source),
                            decoder: Decoder::new(source),
                            speed_decoder: Decoder::keeping(source, |slot| used[slot]),
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

    /// Makes sure every source can decode each of `messages` (topic, payload) now: the schemas
    /// they name are at hand. An error only while the schema registry cannot be asked.
    pub fn resolve<'m>(
        &self,
        messages: impl IntoIterator<Item = (&'m str, &'m [u8])>,
    ) -> Result<(), crate::format::Unavailable> {
        for (topic, payload) in messages {
            if let Some(plan) = self.topic(topic) {
                plan.resolve(payload)?;
            }
        }
        Ok(())
    }

    /// The topic plan holding a view, and the view's index in it.
    pub fn view(&self, name: &str) -> Option<(&TopicPlan, usize)> {
        self.topics
            .iter()
            .find_map(|t| t.views.iter().position(|v| v.name == name).map(|i| (t, i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/config/example.toml");

    /// Values kept by the speed layer's decoder, by field name.
    fn kept(config: &Config) -> Vec<String> {
        let plan = Plan::new(config);
        let source = &plan.topics[0].sources[0];
        let event = br#"{"tx_id":"t-1","card_id":"c-1","merchant_id":"m-1","country":"NL","amount":2.5,"ts":"2026-01-01T00:00:00Z"}"#;
        let decoded = source.speed_decoder.decode(event).unwrap();
        let full = source.decoder.decode(event).unwrap();
        assert!(full.values.iter().all(|v| !v.is_null()));
        source
            .def
            .fields
            .iter()
            .zip(&decoded.values)
            .filter(|(_, v)| !v.is_null())
            .map(|(f, _)| f.name.clone())
            .collect()
    }

    /// The speed layer decodes the fields its views group by or aggregate; with fraud scoring
    /// on the source, every field (an alert records the whole event). The archive's decoder
    /// keeps every field either way.
    #[test]
    fn the_speed_layer_decodes_what_its_views_and_scoring_use() {
        let config = Config::from_toml(EXAMPLE).unwrap();
        assert_eq!(
            kept(&config),
            ["amount", "card_id", "country", "merchant_id", "ts", "tx_id"]
        );
        let views_only = Config {
            fraud: None,
            ..config
        };
        assert_eq!(
            kept(&views_only),
            ["amount", "card_id", "country", "merchant_id"]
        );
    }
}
