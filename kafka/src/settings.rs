//! The librdkafka settings of a layer's consumer.

use braid_shared::Config;
use rdkafka::config::ClientConfig;

/// The client settings of a consumer in `group` (see `KafkaConfig::consumer_settings`).
pub fn client_config(config: &Config, group: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in config.kafka.consumer_settings(group) {
        client.set(key, value);
    }
    client
}
