//! Broker faults and group membership: request errors and a broker outage (no panic, no busy
//! loop, progress resumes, state exact); two consumers in one group hold exactly the union; a
//! partition another member's lease holds is named missing until it is taken.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use braid_shared::{CellQuery, Coverage, SpeedReader, ViewState};
use braid_speed::{SpeedHandle, SpeedLayer};
use common::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio_util::sync::CancellationToken;

/// CPU time (user + system) this process has used, from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[test]
fn request_errors_and_a_broker_outage_leave_the_state_exact() {
    const PARTITIONS: i32 = 2;
    let world = fixture(PARTITIONS, "");
    let (cluster, config, topic) = (&world.cluster, world.config.clone(), world.topic.clone());
    let sender = producer(&cluster.bootstrap_servers());
    let messages = payments(11, 3000, PARTITIONS);
    let counts_after = |n: usize| {
        by_partition(&messages[..n], PARTITIONS)
            .iter()
            .map(Vec::len)
            .collect::<Vec<_>>()
    };

    produce(&sender, &topic, &messages[..1000]);
    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    let handle = layer.handle();
    wait_caught_up(
        &handle,
        &topic,
        &counts_after(1000),
        Duration::from_secs(60),
    );

    // Fetches fail for a while with retriable errors.
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    produce(&sender, &topic, &messages[1000..2000]);
    wait_caught_up(
        &handle,
        &topic,
        &counts_after(2000),
        Duration::from_secs(60),
    );

    // The broker goes away for three seconds while more events are produced.
    cluster.broker_down(1).unwrap();
    let producing = {
        let (bootstrap, topic, batch) = (
            cluster.bootstrap_servers(),
            topic.clone(),
            messages[2000..].to_vec(),
        );
        std::thread::spawn(move || produce(&producer(&bootstrap), &topic, &batch))
    };
    let (cpu_before, wall_before) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let cpu_used = cpu_time() - cpu_before;
    let wall = wall_before.elapsed();
    assert!(
        cpu_used < wall / 2,
        "busy loop during the outage: {cpu_used:?} of CPU in {wall:?}"
    );
    cluster.broker_up(1).unwrap();
    producing.join().unwrap();

    wait_caught_up(
        &handle,
        &topic,
        &counts_after(3000),
        Duration::from_secs(90),
    );
    let partitions = by_partition(&messages, PARTITIONS);
    for view in ["card_minute", "country_hour"] {
        assert_same(
            &read_all(&handle, view),
            &reference(&config, view, &partitions, &[]),
        );
    }
    cancel.cancel();
    layer.join().unwrap();
}

fn union(handles: &[&SpeedHandle], view: &str) -> ViewState {
    let mut total: Option<ViewState> = None;
    for handle in handles {
        let part = handle
            .read(view, &CellQuery::all(), &Coverage::default())
            .unwrap()
            .state;
        match &mut total {
            None => total = Some(part),
            Some(total) => total.merge(&part).unwrap(),
        }
    }
    total.unwrap()
}

fn positions(handles: &[&SpeedHandle]) -> BTreeMap<braid_shared::TopicPartition, i64> {
    handles.iter().flat_map(|h| h.positions()).collect()
}

#[test]
fn two_consumers_in_one_group_hold_exactly_the_union() {
    const PARTITIONS: i32 = 4;
    let world = fixture(PARTITIONS, "");
    let (cluster, config, topic) = (&world.cluster, world.config.clone(), world.topic.clone());
    let sender = producer(&cluster.bootstrap_servers());
    let messages = payments(12, 4000, PARTITIONS);
    produce(&sender, &topic, &messages[..2000]);

    let (cancel_a, cancel_b) = (CancellationToken::new(), CancellationToken::new());
    let a = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel_a.clone(),
    )
    .unwrap();
    let b = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel_b.clone(),
    )
    .unwrap();
    let (ha, hb) = (a.handle(), b.handle());
    let first = by_partition(&messages[..2000], PARTITIONS);
    wait_for(
        "both consumers to hold partitions and catch up",
        Duration::from_secs(60),
        || {
            let all = positions(&[&ha, &hb]);
            !ha.positions().is_empty()
                && !hb.positions().is_empty()
                && (0..PARTITIONS).all(|p| {
                    all.get(&braid_shared::TopicPartition::new(&topic, p))
                        .copied()
                        .unwrap_or(-1)
                        >= first[p as usize].len() as i64
                })
        },
    );
    for view in ["card_minute", "country_hour"] {
        assert_same(
            &union(&[&ha, &hb], view),
            &reference(&config, view, &first, &[]),
        );
    }

    // More events arrive while consumer A stops: B takes over A's partitions from A's checkpoints.
    let producing = {
        let (bootstrap, topic, batch) = (
            cluster.bootstrap_servers(),
            topic.clone(),
            messages[2000..].to_vec(),
        );
        std::thread::spawn(move || produce(&producer(&bootstrap), &topic, &batch))
    };
    std::thread::sleep(Duration::from_millis(100));
    cancel_a.cancel();
    a.join().unwrap();
    assert!(
        ha.positions().is_empty(),
        "a stopped consumer still holds partitions"
    );
    producing.join().unwrap();

    let partitions = by_partition(&messages, PARTITIONS);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();
    wait_caught_up(&hb, &topic, &counts, Duration::from_secs(60));
    for view in ["card_minute", "country_hour"] {
        assert_same(
            &union(&[&ha, &hb], view),
            &reference(&config, view, &partitions, &[]),
        );
        assert_same(
            &read_all(&hb, view),
            &reference(&config, view, &partitions, &[]),
        );
    }
    cancel_b.cancel();
    b.join().unwrap();
}

/// With partition leases, a partition another member holds is never read twice and never
/// silently left out: the speed layer waits for its lease, and meanwhile names it missing in
/// every answer. When that member leaves, its partitions are taken at its next read of the
/// group (a third of the session timeout).
#[test]
fn a_partition_held_by_another_member_is_named_missing_until_taken() {
    use braid_store::membership::Membership;
    use std::collections::BTreeSet;

    const PARTITIONS: i32 = 4;
    let world = fixture(PARTITIONS, "");
    let (config, topic) = (world.config.clone(), world.topic.clone());
    let all: BTreeSet<braid_shared::TopicPartition> = (0..PARTITIONS)
        .map(|p| braid_shared::TopicPartition::new(&topic, p))
        .collect();
    let storage = braid_store::open(&config.storage).unwrap();
    let other = Membership::join(
        std::sync::Arc::clone(&storage),
        &config.kafka.group_id,
        Some("other"),
        Duration::from_secs(30),
    )
    .unwrap();
    for tp in &all {
        assert!(other.take(tp).unwrap());
    }

    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(&config, storage, cancel.clone()).unwrap();
    let handle = layer.handle();
    let missing = |handle: &SpeedHandle| -> BTreeSet<braid_shared::TopicPartition> {
        handle
            .read("card_minute", &CellQuery::default(), &Coverage::default())
            .unwrap()
            .missing
            .into_iter()
            .collect()
    };
    wait_for(
        "the topic's partitions listed",
        Duration::from_secs(30),
        || missing(&handle) == all,
    );
    assert!(handle.positions().is_empty(), "a held lease was read");

    // The other member gives its leases back: the speed layer takes its share, and names the
    // rest, the other's share, missing.
    for tp in &all {
        other.give_back(tp).unwrap();
    }
    // Two live members: half the partitions each.
    wait_for(
        "the speed layer's share taken",
        Duration::from_secs(30),
        || handle.positions().len() == 2,
    );
    let held: BTreeSet<_> = handle.positions().into_keys().collect();
    assert_eq!(
        missing(&handle),
        all.difference(&held).cloned().collect::<BTreeSet<_>>()
    );

    other.leave().unwrap();
    wait_for("every partition taken", Duration::from_secs(30), || {
        handle.positions().len() == PARTITIONS as usize && missing(&handle).is_empty()
    });
    cancel.cancel();
    layer.join().unwrap();
}
