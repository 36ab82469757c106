//! End to end, with `braid run` as a process on librdkafka's mock cluster: known events (late and
//! malformed ones included) are produced while batch runs are requested at random moments and
//! the whole process is killed with SIGKILL and restarted. Every merged answer must equal the
//! reference folded independently from the produced events, at exactly the offsets the answer's
//! provenance names.

use std::time::{Duration, Instant};

use crate::common::{
    Braid, COUNTRY_HOURS, ONE_CARD, Produced, Shape, assert_exact, free_port, get, post,
};
use braid_testkit::{Trickle, by_partition, cluster, payments, unique};
use rand::Rng as _;

const PARTITIONS: i32 = 3;

const SHAPES: [Shape; 3] = [
    COUNTRY_HOURS,
    ONE_CARD,
    // Every card merged away: one total row for the whole range.
    Shape {
        view: "card_minute",
        params: "&group_by=",
        keep: Some(&[]),
        step_ms: None,
        filters: &[],
    },
];

#[test]
fn merged_answers_are_exact_through_batch_swaps_and_kill_9() {
    let cluster = cluster(1);
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique("payments");
    cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, config) =
        braid_testkit::config(&bootstrap, &topic, &unique("group"), dir.path(), "");
    let messages = payments(808, 9_000, PARTITIONS);
    let produced = Produced::new(&config, "payments", &by_partition(&messages, PARTITIONS));

    let mut braid = Braid::start(&path, free_port());
    let trickle = Trickle::start(
        &bootstrap,
        &topic,
        &messages,
        100,
        Duration::from_millis(150),
    );
    let mut rng = rand::rng();
    let mut checks = 0;
    let mut runs = Vec::new();
    let mut snapshots_seen = std::collections::BTreeSet::new();
    let mut mixed = 0;
    let mut kills = 0;
    let started = Instant::now();
    while trickle.produced() < messages.len() {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "producing took too long"
        );
        if rng.random_bool(0.3) {
            let (status, body) = post(&format!("{}/v1/batch/runs", braid.base), "");
            assert_eq!(status, 202, "{body}");
            runs.push(body["run_id"].as_str().unwrap().to_owned());
        }
        if kills < 2 && trickle.produced() > (kills + 1) * messages.len() / 4 {
            braid.kill_and_restart();
            kills += 1;
        }
        for shape in &SHAPES {
            let (status, answer) = get(&shape.url(&braid.base));
            assert_eq!(status, 200, "{answer}\n{}", braid.log_tail());
            assert_exact(&config, &topic, &produced, shape, &answer);
            let provenance = &answer["provenance"];
            if let Some(run) = provenance["batch"]["run_id"].as_str() {
                snapshots_seen.insert(run.to_owned());
                if provenance["speed"]["positions"]
                    .as_object()
                    .is_some_and(|p| !p.is_empty())
                {
                    mixed += 1;
                }
            }
            checks += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
    }
    trickle.finish();
    if kills < 2 {
        // The restarts outlasted the producer: the second kill hits an idle process.
        braid.kill_and_restart();
        kills += 1;
    }

    // A last run, then everything consumed: the answer covers every produced event.
    let (status, body) = post(
        &format!("{}/v1/batch/runs", braid.base),
        "{\"full\": false}",
    );
    assert_eq!(status, 202, "{body}");
    let last = body["run_id"].as_str().unwrap().to_owned();
    braid_testkit::wait_for("the last batch run", Duration::from_secs(60), || {
        get(&format!("{}/v1/batch/runs/{last}", braid.base)).1["state"] == "succeeded"
    });
    let complete = |answer: &serde_json::Value| {
        (0..PARTITIONS).all(|p| {
            answer["provenance"]["offsets"][format!("{topic}/{p}")].as_i64()
                == Some(produced.len(p as usize))
        })
    };
    let pointer = config.storage.dir.join("batch/CURRENT.json");
    let published = || -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&pointer).unwrap()).unwrap()
            ["run_id"]
            .clone()
    };
    for shape in &SHAPES {
        // Everything consumed, and the snapshot published last swapped in (within 100 ms).
        let mut answer = serde_json::Value::Null;
        braid_testkit::wait_for("every event in the answer", Duration::from_secs(60), || {
            answer = get(&shape.url(&braid.base)).1;
            complete(&answer) && answer["provenance"]["batch"]["run_id"] == published()
        });
        assert_exact(&config, &topic, &produced, shape, &answer);
    }
    // Every malformed message is listed once, with its reason, across the restarts. A snapshot
    // may have covered offsets the speed layer still scans for rejections: they are listed
    // within a second of being read.
    let mut rejected = serde_json::Value::Null;
    braid_testkit::wait_for("every rejection listed", Duration::from_secs(10), || {
        rejected = get(&format!("{}/v1/rejected/payments?limit=10000", braid.base)).1;
        rejected["total"].as_u64() >= Some(produced.rejected() as u64)
    });
    assert_eq!(rejected["total"].as_u64(), Some(produced.rejected() as u64));
    assert!(
        rejected["events"][0]["reason"].is_object() || rejected["events"][0]["reason"].is_string()
    );
    assert!(produced.rejected() > 100);
    // Paged by (partition, offset) with the cursor: every rejection once, none skipped.
    let mut keys: Vec<(i64, i64)> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/rejected/payments?limit=37", braid.base);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = get(&url);
        assert_eq!(status, 200, "{page}");
        for event in page["events"].as_array().unwrap() {
            keys.push((
                event["partition"].as_i64().unwrap(),
                event["offset"].as_i64().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(keys.len(), produced.rejected());
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "pages out of order");
    // By reason: the reasons' totals add up to the whole.
    let by_reason: u64 = braid_shared::RejectReason::CODES
        .iter()
        .map(|code| {
            let url = format!("{}/v1/rejected/payments?reason={code}&limit=1", braid.base);
            get(&url).1["total"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(by_reason, produced.rejected() as u64);
    // Runs that succeeded swapped snapshots under the checks.
    let (_, history) = get(&format!("{}/v1/batch/runs?limit=1000", braid.base));
    let succeeded = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "succeeded")
        .count();
    assert!(
        succeeded >= 3,
        "{succeeded} runs succeeded of {}",
        runs.len()
    );
    assert!(snapshots_seen.len() >= 2, "answers saw {snapshots_seen:?}");
    assert!(mixed > 0, "no answer merged a snapshot with speed cells");
    assert!(checks >= 30, "only {checks} answers checked");
    assert_eq!(kills, 2);
    braid.stop();
}

/// A consumer that falls behind the topic's retention stops with the lost offsets named; it
/// never skips them. The mock broker keeps about 5 MB per partition, so big messages produced
/// while `braid run` is paused (SIGSTOP) delete the offsets it reads next.
#[test]
fn offsets_deleted_while_paused_stop_braid_naming_them() {
    let world = braid_testkit::fixture(1, "");
    let (bootstrap, topic) = (world.cluster.bootstrap_servers(), &world.topic);
    world.produce(&payments(77, 300, 1));
    let mut braid = Braid::start(&world.path, free_port());
    braid_testkit::wait_for("every event consumed", Duration::from_secs(60), || {
        let (_, answer) = get(&format!(
            "{}/v1/views/card_minute?from=0&to=now%2B3650d&group_by=&limit=1",
            braid.base
        ));
        answer["provenance"]["offsets"][format!("{topic}/0")].as_i64() == Some(300)
    });

    braid.signal("STOP");
    let big = vec![
        braid_testkit::Produced {
            partition: 0,
            payload: vec![b'x'; 100_000],
        };
        70
    ];
    braid_testkit::produce(&braid_testkit::producer(&bootstrap), topic, &big);
    braid.signal("CONT");

    let status = braid.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "{}", braid.log_tail());
    let log = braid.log_tail();
    assert!(
        log.contains(&format!("{topic}/0: the broker deleted offsets 300 to "))
            && log.contains("Braid never skips events"),
        "{log}"
    );
}
