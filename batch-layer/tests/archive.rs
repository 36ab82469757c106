//! The archiver against the mock cluster: the archive equals the produced messages, by partition
//! and offset, through compaction, restarts and kill -9.

mod common;

use std::process::Child;
use std::time::Duration;

use braid_batch::Archiver;
use braid_shared::Config;
use braid_store::LocalStorage;
use braid_store::manifest::read_archive_manifests;
use common::*;
use rand::Rng;
use tokio_util::sync::CancellationToken;

#[test]
fn archive_holds_every_message_once_and_compacts_small_files() {
    let world = fixture(3, "");
    let (config, topic) = (world.config.clone(), world.topic.clone());
    let messages = payments(11, 9_000, 3);
    let partitions = by_partition(&messages, 3);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();

    let cancel = CancellationToken::new();
    let archiver = Archiver::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    // In slices once the archiver reads, so the 200 ms flush interval makes many small ranges
    // to compact.
    let (head, tail) = messages.split_at(300);
    world.produce(head);
    let head_counts: Vec<usize> = by_partition(head, 3).iter().map(Vec::len).collect();
    wait_archived(
        &archiver.handle(),
        &topic,
        &head_counts,
        Duration::from_secs(60),
    );
    for chunk in tail.chunks(600) {
        world.produce(chunk);
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_archived(&archiver.handle(), &topic, &counts, Duration::from_secs(60));
    cancel.cancel();
    archiver.join().unwrap();

    assert_archive(
        &read_archive(&config, &topic),
        &expected_archive(&config, &partitions),
    );
    let manifests =
        read_archive_manifests(&LocalStorage::new(&config.storage.dir), &topic).unwrap();
    let compacted = manifests.iter().any(|m| !m.retired.is_empty());
    assert!(
        compacted,
        "runs of small ranges were not compacted: {manifests:#?}"
    );
    // Every malformed message is in the archive's rejected files once, with its reason, through
    // the compaction (what `GET /v1/rejected` merges with the speed layer's log).
    let decoder = braid_shared::Decoder::new(config.source("payments").unwrap());
    let mut malformed = Vec::new();
    for (p, list) in partitions.iter().enumerate() {
        for (offset, message) in list.iter().enumerate() {
            if let Err(reason) = decoder.decode(message) {
                malformed.push((p as i32, offset as i64, reason.code()));
            }
        }
    }
    let storage = LocalStorage::new(&config.storage.dir);
    let mut listed: Vec<(i32, i64, &str)> =
        braid_columnar::rejected::read_archived_rejected(&storage, &topic, "payments")
            .unwrap()
            .into_iter()
            .map(|r| (r.partition, r.offset, r.reason.code()))
            .collect();
    listed.sort_unstable();
    assert!(malformed.len() > 100, "{} malformed", malformed.len());
    assert_eq!(listed, malformed);
    // Hive layout: every events file sits under source=<name>/date=<YYYY-MM-DD>/.
    for file in manifests
        .iter()
        .flat_map(|m| &m.entries)
        .flat_map(|e| &e.files)
    {
        let ok = file.path.starts_with("archive/source=payments/date=")
            || file.path.starts_with("archive/rejected/source=payments/");
        assert!(ok, "{}", file.path);
    }

    // What a kill -9 mid-write leaves: a temp file, and a file renamed into place whose range
    // never reached the manifest. The next start removes both, and nothing of other topics.
    let date_dir = config
        .storage
        .dir
        .join("archive/source=payments/date=2026-01-01");
    std::fs::create_dir_all(&date_dir).unwrap();
    let planted = [
        date_dir.join(format!(
            ".{topic}~0~00000000000000099999~00000000000000100000.parquet.tmp"
        )),
        date_dir.join(format!(
            "{topic}~1~00000000000000099999~00000000000000100000.parquet"
        )),
    ];
    let foreign = date_dir.join(format!(
        "{topic}-other~0~00000000000000000000~00000000000000000001.parquet"
    ));
    for path in planted.iter().chain([&foreign]) {
        std::fs::write(path, b"half-written").unwrap();
    }

    // A restart resumes after the manifest: new messages only, nothing twice.
    let more = payments(12, 600, 3);
    world.produce(&more);
    let all: Vec<Produced> = messages.iter().chain(&more).cloned().collect();
    let partitions = by_partition(&all, 3);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();
    let cancel = CancellationToken::new();
    let archiver = Archiver::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    wait_archived(&archiver.handle(), &topic, &counts, Duration::from_secs(60));
    cancel.cancel();
    archiver.join().unwrap();
    assert_archive(
        &read_archive(&config, &topic),
        &expected_archive(&config, &partitions),
    );
    for path in &planted {
        assert!(!path.exists(), "{} was not cleaned up", path.display());
    }
    assert!(foreign.exists(), "another topic's file was removed");
}

/// The archiver as a separate process, started by the kill -9 test through this test binary.
#[test]
#[ignore = "runs only as the child process of archive_survives_kill_9_mid_write"]
fn archiver_child_process() {
    let archiver = Archiver::start(
        &child_config(),
        braid_store::open(&child_config().storage).unwrap(),
        CancellationToken::new(),
    )
    .expect("archiver starts");
    archiver.join().expect("runs until killed");
}

fn spawn_child(config: &std::path::Path) -> Child {
    spawn_child_test("archiver_child_process", config)
}

/// Archive files being written or not yet published: what a kill leaves behind.
fn unpublished_files(config: &Config, topic: &str) -> Vec<String> {
    let listed: std::collections::HashSet<String> =
        read_archive_manifests(&LocalStorage::new(&config.storage.dir), topic)
            .unwrap()
            .iter()
            .flat_map(|m| {
                m.entries
                    .iter()
                    .flat_map(|e| e.files.iter().map(|f| f.path.clone()))
                    .chain(m.retired.iter().map(|r| r.path.clone()))
            })
            .collect();
    let root = config.storage.dir.join("archive");
    let mut stack = vec![root];
    let mut found = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if entry.file_name() != "_manifest" {
                    stack.push(path);
                }
                continue;
            }
            let rel = path
                .strip_prefix(&config.storage.dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !listed.contains(&rel) {
                found.push(rel);
            }
        }
    }
    found
}

#[test]
fn archive_survives_kill_9_mid_write() {
    const PARTITIONS: i32 = 3;
    let world = fixture(PARTITIONS, "");
    let (config, topic) = (world.config.clone(), world.topic.clone());
    // About a minute of production: each kill costs a session timeout (6 s) before the next
    // child is assigned the partitions.
    let messages = payments(5, 60_000, PARTITIONS);

    // Produce in the background the whole time, so kills land during reads and writes.
    let background = Trickle::start(
        &world.cluster.bootstrap_servers(),
        &topic,
        &messages,
        100,
        Duration::from_millis(80),
    );

    let mut rng = rand::rng();
    let mut kills = 0;
    let mut left_behind = 0;
    while kills < 5 {
        let mut child = spawn_child(&world.path);
        // Kill at a random point once the child has published something new.
        let before = archived_total(&config, &topic);
        wait_for(
            "the archiver child to publish",
            Duration::from_secs(60),
            || archived_total(&config, &topic) > before,
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        left_behind += unpublished_files(&config, &topic).len();
    }
    assert_eq!(background.finish(), messages.len());

    // A last, clean run takes everything up: unpublished files are removed, the rest archived.
    let partitions = by_partition(&messages, PARTITIONS);
    let counts: Vec<usize> = partitions.iter().map(Vec::len).collect();
    let cancel = CancellationToken::new();
    let archiver = Archiver::start(
        &config,
        braid_store::open(&config.storage).unwrap(),
        cancel.clone(),
    )
    .unwrap();
    wait_archived(
        &archiver.handle(),
        &topic,
        &counts,
        Duration::from_secs(120),
    );
    cancel.cancel();
    archiver.join().unwrap();
    assert_archive(
        &read_archive(&config, &topic),
        &expected_archive(&config, &partitions),
    );
    assert_eq!(unpublished_files(&config, &topic), Vec::<String>::new());
    eprintln!("5 kills; {left_behind} unpublished files were left behind by them and cleaned up");
}

fn archived_total(config: &Config, topic: &str) -> i64 {
    read_archive_manifests(&LocalStorage::new(&config.storage.dir), topic)
        .map(|ms| ms.iter().filter_map(|m| m.end()).sum())
        .unwrap_or(0)
}
