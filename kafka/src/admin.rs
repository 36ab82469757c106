//! Topic administration for the benches and tests that run against a real broker (which, unlike
//! the embedded one, need not create topics on first use).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Creates `topic` with `partitions` partitions (replication 1) on the broker at `brokers`,
/// waiting up to `timeout` for the broker to answer. The error names the topic, the broker and
/// what went wrong.
pub fn create_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<(), String> {
    let failed = |what: String| format!("creating topic {topic} on {brokers}: {what}");
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| failed(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let results = runtime
        .block_on(
            admin.create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new()
                    .request_timeout(Some(timeout))
                    .operation_timeout(Some(timeout)),
            ),
        )
        .map_err(|e| failed(e.to_string()))?;
    for result in results {
        result.map_err(|(_, code)| failed(code.to_string()))?;
    }
    Ok(())
}
