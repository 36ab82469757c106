//! Kill -9 of a speed-layer process at random points, restarted each time: the final state equals
//! the reference, with nothing lost and nothing counted twice.

mod common;

use std::process::Child;
use std::time::{Duration, SystemTime};

use braid_speed::SpeedLayer;
use common::*;
use rand::Rng;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;
const KILLS: usize = 5;

/// The speed layer as a separate process: started by `kill_9_...` below through this test binary.
#[test]
#[ignore = "runs only as the child process of kill_9_at_random_points_loses_and_duplicates_nothing"]
fn speed_layer_child_process() {
    let layer = SpeedLayer::start(
        &child_config(),
        braid_store::open(&child_config().storage).unwrap(),
        CancellationToken::new(),
    )
    .expect("speed layer starts");
    layer.join().expect("runs until killed");
}

fn spawn_child(config: &std::path::Path) -> Child {
    spawn_child_test("speed_layer_child_process", config)
}

/// Newest modification time among the partition checkpoints.
fn newest_checkpoint(dir: &std::path::Path, topic: &str) -> Option<SystemTime> {
    let dir = dir.join("speed").join("checkpoints").join(topic);
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
        .max()
}

#[test]
fn kill_9_at_random_points_loses_and_duplicates_nothing() {
    let world = fixture(PARTITIONS, "");
    let (cluster, config, topic) = (&world.cluster, world.config.clone(), world.topic.clone());
    let path = world.path.clone();
    let messages = payments(7, 60_000, PARTITIONS);

    // Produce in the background the whole time, so kills land mid-stream.
    let background = Trickle::start(
        &cluster.bootstrap_servers(),
        &topic,
        &messages,
        100,
        Duration::from_millis(50),
    );

    let mut rng = rand::rng();
    let mut checkpoints_seen = Vec::new();
    for round in 0..KILLS {
        let started = SystemTime::now();
        let mut child = spawn_child(&path);
        wait_for(
            &format!("round {round}: the child to checkpoint"),
            Duration::from_secs(60),
            || newest_checkpoint(world.dir.path(), &topic).is_some_and(|t| t > started),
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(0..250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!(
            "round {round}: killed after {:?}",
            started.elapsed().unwrap_or_default()
        );
        checkpoints_seen.push(background.produced());
    }
    let produced = background.stop();
    assert!(
        checkpoints_seen.first() < checkpoints_seen.last(),
        "kills did not land while producing: {checkpoints_seen:?}"
    );

    // A last, uninterrupted run from the children's checkpoints must land exactly on the reference.
    let partitions = by_partition(&messages[..produced], PARTITIONS);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();
    let cancel = CancellationToken::new();
    let layer = SpeedLayer::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    let final_start = std::time::Instant::now();
    wait_caught_up(&layer.handle(), &topic, &counts, Duration::from_secs(90));
    eprintln!("final run caught up after {:?}", final_start.elapsed());
    for view in ["card_minute", "country_hour"] {
        assert_same(
            &read_all(&layer.handle(), view),
            &reference(&config, view, &partitions, &[]),
        );
    }
    let rejected = braid_store::rejected::read_rejected(
        &braid_store::LocalStorage::new(world.dir.path()),
        &topic,
    )
    .unwrap();
    let mut offsets: Vec<(i32, i64)> = rejected.iter().map(|r| (r.partition, r.offset)).collect();
    let total = offsets.len();
    offsets.dedup();
    assert_eq!(offsets.len(), total, "a rejected event was logged twice");
    cancel.cancel();
    layer.join().unwrap();
}
