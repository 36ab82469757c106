//! `braid run` with `storage.url` on moto's S3 server (started by the test): the archive,
//! manifests, snapshots, pointer, run history, speed checkpoints and rejected events all live in
//! the bucket, the local `storage.dir` holds only the cache of files read from it, and every
//! merged answer equals the reference through batch runs and a kill -9.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{
    Braid, CARD_TOTALS, COUNTRY_HOURS, Produced, Shape, assert_exact, free_port, get, post,
};
use braid_store::{ObjectStorage, Storage};
use braid_testkit::moto::Moto;
use braid_testkit::{by_partition, fixture, payments, unique, wait_for};

const PARTITIONS: i32 = 3;

const SHAPES: [Shape; 2] = [COUNTRY_HOURS, CARD_TOTALS];

#[test]
fn all_layers_on_object_storage_answer_exactly_through_batch_runs_and_kill_9() {
    let moto = Moto::start();
    let bucket = unique("braid").to_lowercase();
    moto.create_bucket(&bucket);
    let world = fixture(PARTITIONS, "");
    let (topic, config) = (&world.topic, &world.config);
    let text = std::fs::read_to_string(&world.path).unwrap().replace(
        "[storage]\n",
        &format!("[storage]\nurl = \"s3://{bucket}/team/braid\"\n"),
    );
    std::fs::write(&world.path, text).unwrap();

    let messages = payments(2024, 3_000, PARTITIONS);
    let produced = Produced::new(config, "payments", &by_partition(&messages, PARTITIONS));
    let (first, rest) = messages.split_at(1_500);
    world.produce(first);
    let mut braid = Braid::start_with_env(&world.path, free_port(), &moto.env());
    let base = braid.base.clone();
    let consumed = |upto: &[usize]| {
        let (status, answer) = get(&SHAPES[0].url(&base));
        status == 200
            && (0..PARTITIONS).all(|p| {
                answer["provenance"]["offsets"][format!("{topic}/{p}")].as_i64()
                    == Some(upto[p as usize] as i64)
            })
    };
    let check_all = || {
        for shape in &SHAPES {
            let (status, answer) = get(&shape.url(&base));
            assert_eq!(status, 200, "{answer}");
            assert_exact(config, topic, &produced, shape, &answer);
        }
    };
    let counts = |messages: &[braid_testkit::Produced]| {
        let mut counts = vec![0; PARTITIONS as usize];
        for m in messages {
            counts[m.partition as usize] += 1;
        }
        counts
    };
    wait_for("the first events consumed", Duration::from_secs(60), || {
        consumed(&counts(first))
    });
    check_all();

    // A batch run reads the archive from the bucket and publishes its snapshot there.
    let run = batch_run(&base);
    wait_for("the snapshot swapped in", Duration::from_secs(30), || {
        get(&SHAPES[0].url(&base)).1["provenance"]["batch"]["run_id"] == run.as_str()
    });
    check_all();

    // kill -9: the speed layer resumes from its checkpoints in the bucket, the archiver from
    // its manifests.
    braid.kill_and_restart();
    world.produce(rest);
    wait_for("every event consumed", Duration::from_secs(60), || {
        consumed(&counts(&messages))
    });
    check_all();
    let second = batch_run(&base);
    wait_for(
        "the second snapshot swapped in",
        Duration::from_secs(30),
        || get(&SHAPES[0].url(&base)).1["provenance"]["batch"]["run_id"] == second.as_str(),
    );
    check_all();

    // The archive as SQL and the event pages read it through the local cache.
    let valid = produced.partitions.iter().flatten().flatten().count() as i64;
    wait_for(
        "the archive holds every event",
        Duration::from_secs(30),
        || {
            let (status, answer) = post(
                &format!("{base}/v1/sql"),
                &serde_json::json!({"sql": "SELECT count(*) FROM events_payments"}).to_string(),
            );
            assert_eq!(status, 200, "{answer}");
            answer["rows"][0][0].as_i64() == Some(valid)
        },
    );
    let (status, page) = get(&format!(
        "{base}/v1/events/payments?from=0&to=now%2B3650d&limit=5"
    ));
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 5, "{page}");
    braid.stop();

    // Everything is in the bucket, under the URL's prefix ...
    let options = moto.options();
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let store: Arc<dyn Storage> =
        Arc::new(ObjectStorage::new(&format!("s3://{bucket}/team/braid"), &options).unwrap());
    let keys: Vec<String> = store.list("").unwrap().into_iter().map(|l| l.key).collect();
    for wanted in [
        format!("archive/_manifest/{topic}/0.json"),
        "batch/CURRENT.json".to_owned(),
        format!("batch/history/{second}.json"),
        format!("speed/checkpoints/{topic}/2.ckpt"),
        format!("speed/rejected/{topic}/1.json"),
    ] {
        assert!(keys.contains(&wanted), "{wanted} missing in {keys:?}");
    }
    assert!(
        keys.iter()
            .any(|k| k.starts_with("archive/source=payments/") && k.ends_with(".parquet")),
        "{keys:?}"
    );
    // ... and the local folder holds only the cache of files read from it.
    let local: Vec<String> = std::fs::read_dir(world.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(local, ["cache"], "local storage folders");
}

fn batch_run(base: &str) -> String {
    let (status, body) = post(&format!("{base}/v1/batch/runs"), "");
    assert_eq!(status, 202, "{body}");
    let run = body["run_id"].as_str().unwrap().to_owned();
    wait_for("the batch run", Duration::from_secs(60), || {
        let (_, record) = get(&format!("{base}/v1/batch/runs/{run}"));
        assert_ne!(record["state"], "failed", "{record}");
        record["state"] == "succeeded"
    });
    run
}
