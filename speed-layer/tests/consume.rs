//! The speed layer against librdkafka's mock cluster: exact state with late, out-of-order and
//! malformed events; coverage drops; broker faults; two consumers in one group; recreated topics.

mod common;

use std::sync::Arc;
use std::time::Duration;

use braid_shared::coverage::SnapshotPointer;
use braid_shared::{CellQuery, Coverage, SpeedReader, TopicPartition};
use braid_speed::SpeedLayer;
use braid_store::LocalStorage;
use braid_store::pointer::publish_pointer;
use braid_store::rejected::read_rejected;
use common::*;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;

#[test]
fn late_out_of_order_and_malformed_events_give_the_reference_state() {
    let world = fixture(PARTITIONS, "");
    let (cluster, config, topic) = (&world.cluster, world.config.clone(), world.topic.clone());
    let messages = payments(1, 3000, PARTITIONS);
    produce(&producer(&cluster.bootstrap_servers()), &topic, &messages);

    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    let handle = layer.handle();
    let partitions = by_partition(&messages, PARTITIONS);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();
    wait_caught_up(&handle, &topic, &counts, Duration::from_secs(60));

    for view in ["card_minute", "country_hour"] {
        assert_same(
            &read_all(&handle, view),
            &reference(&config, view, &partitions, &[]),
        );
    }

    // Every malformed message is in the rejected store, once, with its reason.
    let rejected = |dir: &std::path::Path| {
        let mut records = read_rejected(&LocalStorage::new(dir), &topic).unwrap();
        records.sort_by_key(|r| (r.partition, r.offset));
        records
    };
    wait_for(
        "rejected events to be durable",
        Duration::from_secs(10),
        || rejected(world.dir.path()).len() == expected_rejections(&config, &partitions).len(),
    );
    let records = rejected(world.dir.path());
    let expected = expected_rejections(&config, &partitions);
    let got: Vec<(i32, i64, &str)> = records
        .iter()
        .map(|r| (r.partition, r.offset, r.reason.code()))
        .collect();
    assert_eq!(
        got,
        expected
            .iter()
            .map(|(p, o, c)| (*p, *o, c.as_str()))
            .collect::<Vec<_>>()
    );
    assert!(records.iter().any(|r| r.raw == "this is not json"));

    // A filtered, ranged read equals the reference restricted the same way.
    let view = config.view("country_hour").unwrap();
    let all = reference(&config, "country_hour", &partitions, &[]);
    let query = CellQuery {
        from_ms: 1_790_000_000_000 - 7_200_000,
        to_ms: 1_790_000_000_000,
        filters: vec![(0, braid_shared::Value::Str("DE".into()))],
    };
    let mut expected_cells = braid_shared::ViewState::new(Arc::clone(view));
    expected_cells.merge_matching(&all, &query).unwrap();
    let got = handle
        .read("country_hour", &query, &Coverage::default())
        .unwrap();
    assert_same(&got.state, &expected_cells);
    assert!(!got.state.is_empty());
    assert!(handle.read("nope", &query, &Coverage::default()).is_err());

    cancel.cancel();
    layer.join().unwrap();
}

fn expected_rejections(
    config: &braid_shared::Config,
    partitions: &[Vec<Vec<u8>>],
) -> Vec<(i32, i64, String)> {
    let decoder = braid_shared::Decoder::new(config.source("payments").unwrap());
    let mut out = Vec::new();
    for (p, messages) in partitions.iter().enumerate() {
        for (offset, bytes) in messages.iter().enumerate() {
            if let Err(reason) = decoder.decode(bytes) {
                out.push((p as i32, offset as i64, reason.code().to_owned()));
            }
        }
    }
    out
}

#[test]
fn published_coverage_drops_exactly_the_covered_segments() {
    let world = fixture(PARTITIONS, "");
    let (cluster, config, topic) = (&world.cluster, world.config.clone(), world.topic.clone());
    let messages = payments(2, 2000, PARTITIONS);
    produce(&producer(&cluster.bootstrap_servers()), &topic, &messages);
    let partitions = by_partition(&messages, PARTITIONS);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();

    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    let handle = layer.handle();
    wait_caught_up(&handle, &topic, &counts, Duration::from_secs(60));

    // The batch layer publishes coverage at segment boundaries (segment_size = 100).
    let covered = [300i64, 0, 500];
    let coverage = Coverage(
        covered
            .iter()
            .enumerate()
            .map(|(p, &o)| (TopicPartition::new(&topic, p as i32), o))
            .collect(),
    );
    // Reads at a coverage the speed layer still holds answer exactly above it, before any drop.
    let above = handle
        .read("card_minute", &CellQuery::all(), &coverage)
        .unwrap();
    assert_same(
        &above.state,
        &reference(&config, "card_minute", &partitions, &covered),
    );

    let pointer = SnapshotPointer {
        run_id: "run-1".into(),
        coverage: coverage.clone(),
        finished_at: "2026-11-21T00:00:00Z".into(),
        manifest: "batch/run-1/manifest.json".into(),
    };
    publish_pointer(&LocalStorage::new(world.dir.path()), &pointer, None).unwrap();
    wait_for(
        "the coverage to be followed",
        Duration::from_secs(10),
        || handle.coverage() == coverage,
    );

    for view in ["card_minute", "country_hour"] {
        let read = handle.read(view, &CellQuery::all(), &coverage).unwrap();
        assert_same(
            &read.state,
            &reference(&config, view, &partitions, &covered),
        );
    }
    // The dropped events can no longer be asked for: the answer would have a gap.
    let err = handle
        .read("card_minute", &CellQuery::all(), &Coverage::default())
        .unwrap_err();
    assert!(err.to_string().contains("dropped"), "{err}");
    // A coverage off the segment grid is refused.
    let odd = Coverage(
        [(TopicPartition::new(&topic, 0), 350)]
            .into_iter()
            .collect(),
    );
    assert!(
        handle
            .read("card_minute", &CellQuery::all(), &odd)
            .unwrap_err()
            .to_string()
            .contains("segment size")
    );

    // A restart restores the dropped state, not the old one.
    cancel.cancel();
    layer.join().unwrap();
    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    let handle = layer.handle();
    wait_caught_up(&handle, &topic, &counts, Duration::from_secs(60));
    let read = handle
        .read("country_hour", &CellQuery::all(), &coverage)
        .unwrap();
    assert_same(
        &read.state,
        &reference(&config, "country_hour", &partitions, &covered),
    );
    cancel.cancel();
    layer.join().unwrap();
}

#[test]
fn restart_resumes_exactly_from_the_checkpoint() {
    let world = fixture(PARTITIONS, "");
    let (cluster, config, topic) = (&world.cluster, world.config.clone(), world.topic.clone());
    let producer = producer(&cluster.bootstrap_servers());
    let first = payments(3, 1500, PARTITIONS);
    produce(&producer, &topic, &first);

    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    let counts: Vec<usize> = by_partition(&first, PARTITIONS)
        .iter()
        .map(Vec::len)
        .collect();
    wait_caught_up(&layer.handle(), &topic, &counts, Duration::from_secs(60));
    cancel.cancel();
    layer.join().unwrap();

    let second = payments(4, 1500, PARTITIONS);
    produce(&producer, &topic, &second);
    let all: Vec<Produced> = first.iter().chain(&second).cloned().collect();
    let partitions = by_partition(&all, PARTITIONS);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();

    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    wait_caught_up(&layer.handle(), &topic, &counts, Duration::from_secs(60));
    for view in ["card_minute", "country_hour"] {
        assert_same(
            &read_all(&layer.handle(), view),
            &reference(&config, view, &partitions, &[]),
        );
    }
    cancel.cancel();
    layer.join().unwrap();
}

#[test]
fn a_recreated_topic_behind_the_checkpoint_stops_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("payments");
    let group = unique("group");
    {
        let cluster = cluster(1);
        cluster.create_topic(&topic, 1, 1).unwrap();
        let (_, config) = config(&cluster.bootstrap_servers(), &topic, &group, dir.path(), "");
        let messages = payments(5, 500, 1);
        produce(&producer(&cluster.bootstrap_servers()), &topic, &messages);
        let cancel = CancellationToken::new();
        let layer = SpeedLayer::start(
            &config,
            braid_store::open(&config.storage).unwrap(),
            cancel.clone(),
        )
        .unwrap();
        wait_caught_up(&layer.handle(), &topic, &[500], Duration::from_secs(60));
        cancel.cancel();
        layer.join().unwrap();
    }
    // Same topic name, fresh broker: offsets restart at 0, far behind the checkpoint.
    let cluster = cluster(1);
    cluster.create_topic(&topic, 1, 1).unwrap();
    produce(
        &producer(&cluster.bootstrap_servers()),
        &topic,
        &payments(6, 20, 1),
    );
    let (_, config) = config(&cluster.bootstrap_servers(), &topic, &group, dir.path(), "");
    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        CancellationToken::new(),
    )
    .unwrap();
    let error = layer.join().unwrap_err().to_string();
    assert!(
        error.contains("recreated") && error.contains("checkpoint continues from 500"),
        "{error}"
    );
}

/// Messages big enough that the mock broker, which keeps about 5 MB per partition, deletes the
/// oldest ones: what a topic's retention does to a consumer that fell behind.
fn flood(bootstrap: &str, topic: &str) {
    let big = vec![
        braid_testkit::Produced {
            partition: 0,
            payload: vec![b'x'; 100_000],
        };
        70
    ];
    produce(&producer(bootstrap), topic, &big);
}

#[test]
fn offsets_deleted_before_the_checkpoint_read_them_stop_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("payments");
    let group = unique("group");
    let cluster = cluster(1);
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (_, config) = config(&bootstrap, &topic, &group, dir.path(), "");
    produce(&producer(&bootstrap), &topic, &payments(5, 300, 1));
    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    wait_caught_up(&layer.handle(), &topic, &[300], Duration::from_secs(60));
    cancel.cancel();
    layer.join().unwrap();

    // While it is stopped, retention deletes the offsets the checkpoint continues from.
    flood(&bootstrap, &topic);
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let (low, high) = rdkafka::consumer::Consumer::fetch_watermarks(
        &consumer,
        &topic,
        0,
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(low > 300 && high == 370, "watermarks {low}..{high}");

    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        CancellationToken::new(),
    )
    .unwrap();
    let error = layer.join().unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "{topic}/0: the broker deleted offsets 300 to {}",
            low - 1
        )) && error.contains("before the speed layer read them")
            && error.contains("Braid never skips events"),
        "{error}"
    );

    // A layer with nothing read and nothing covered starts at the oldest offset there is.
    let fresh = tempfile::tempdir().unwrap();
    let (_, fresh_config) = common::config(&bootstrap, &topic, &unique("group"), fresh.path(), "");
    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(
        &fresh_config,
        braid_store::open(&fresh_config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    wait_caught_up(&layer.handle(), &topic, &[370], Duration::from_secs(60));
    cancel.cancel();
    layer.join().unwrap();
}

#[test]
fn two_sources_on_one_topic_each_see_their_own_events() {
    let world = fixture(2, "");
    // Add a second, strictly typed source on the same topic: `amount` must be an integer there,
    // so the decimal amounts of the payments stream are its rejections.
    let text = std::fs::read_to_string(&world.path).unwrap()
        + &format!(
            r#"
[[source]]
name = "cents"
topic = "{}"
event_time = "ts"
[source.fields]
amount = "int"
card_id = "string"
ts = "string"

[[view]]
name = "cents_by_card"
source = "cents"
group_by = ["card_id"]
granularity = "1h"
[view.metrics]
n = "count"
total = "sum(amount)"
"#,
            world.topic
        );
    let config = braid_shared::Config::from_toml(&text).unwrap();
    let mut messages = payments(31, 1500, 2);
    for (i, m) in messages.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
        m.payload = format!(
            r#"{{"card_id":"card-{}","amount":{},"ts":"2026-11-21T10:00:00Z"}}"#,
            i % 7,
            i
        )
        .into_bytes();
    }
    world.produce(&messages);
    let partitions = by_partition(&messages, 2);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();

    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    wait_caught_up(
        &layer.handle(),
        &world.topic,
        &counts,
        Duration::from_secs(60),
    );
    for view in ["card_minute", "country_hour", "cents_by_card"] {
        assert_same(
            &read_all(&layer.handle(), view),
            &reference(&config, view, &partitions, &[]),
        );
    }
    assert!(!read_all(&layer.handle(), "cents_by_card").is_empty());
    cancel.cancel();
    layer.join().unwrap();
    // Each source's rejections are its own.
    let rejected = read_rejected(&LocalStorage::new(world.dir.path()), &world.topic).unwrap();
    for source in ["payments", "cents"] {
        let decoder = braid_shared::Decoder::new(config.source(source).unwrap());
        let expected = partitions
            .iter()
            .flatten()
            .filter(|b| decoder.decode(b).is_err())
            .count();
        assert_eq!(
            rejected.iter().filter(|r| r.source == source).count(),
            expected,
            "{source}"
        );
    }
}
