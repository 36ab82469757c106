//! The storage contract, held by both stores: the local directory and an S3 bucket (moto's
//! server). Creates happen once, replaces only over the version the writer read, so a writer
//! that lost ownership (a zombie) is refused, at the level of the archive manifest too; listing
//! is by key prefix, in key order. The batch run lease holds on both.

use std::sync::Arc;

use braid_store::lease;
use braid_store::manifest::{ArchiveEntry, PartitionManifest};
use braid_store::storage::{Put, put_over};
use braid_store::{LocalStorage, ObjectStorage, Storage, StorageError};
use braid_testkit::moto::Moto;

fn contract(storage: &dyn Storage) {
    // Created once.
    let first = match storage.put_if_absent("batch/runs/a.json", b"one").unwrap() {
        Put::Written(version) => version,
        Put::Conflict => panic!("{storage:?}: a new key was refused"),
    };
    assert_eq!(
        storage.put_if_absent("batch/runs/a.json", b"two").unwrap(),
        Put::Conflict
    );
    let read = storage.get("batch/runs/a.json").unwrap().unwrap();
    assert_eq!(read.bytes, b"one");
    assert_eq!(read.version, first);
    assert_eq!(storage.get("batch/runs/missing.json").unwrap(), None);

    // Replaced only over the version held. A zombie owner holding the first version is
    // refused once the new owner has replaced it, and the new owner's content stays.
    let owner = put_over(storage, "batch/runs/a.json", b"owner", Some(&first))
        .unwrap()
        .expect("the holder of the current version replaces it");
    assert_ne!(owner, first);
    assert_eq!(
        put_over(storage, "batch/runs/a.json", b"zombie", Some(&first)).unwrap(),
        None
    );
    let read = storage.get("batch/runs/a.json").unwrap().unwrap();
    assert_eq!(
        (read.bytes.as_slice(), &read.version),
        (&b"owner"[..], &owner)
    );
    // A replace of an object that is gone, and a create over one that exists, are refused.
    assert_eq!(
        storage
            .put_if_unchanged("batch/runs/gone.json", b"x", &owner)
            .unwrap(),
        Put::Conflict
    );
    assert_eq!(
        put_over(storage, "batch/runs/a.json", b"late", None).unwrap(),
        None
    );

    // Several at once: only the absent ones are written.
    let puts = storage
        .put_all_if_absent(&[
            ("alerts/p/0/1.json".to_owned(), b"1".to_vec()),
            ("batch/runs/a.json".to_owned(), b"again".to_vec()),
            ("alerts/p/0/2.json".to_owned(), b"2".to_vec()),
        ])
        .unwrap();
    assert!(matches!(puts[0], Put::Written(_)));
    assert_eq!(puts[1], Put::Conflict);
    assert!(matches!(puts[2], Put::Written(_)));
    // Unflushed: the same create-once, visible at once, durable at the flush.
    let puts = storage
        .put_all_if_absent_unflushed(&[
            ("alerts/p/0/2.json".to_owned(), b"two".to_vec()),
            ("alerts/p/0/3.json".to_owned(), b"3".to_vec()),
        ])
        .unwrap();
    assert_eq!(puts[0], Put::Conflict);
    assert!(matches!(puts[1], Put::Written(_)));
    assert_eq!(
        storage.get("alerts/p/0/2.json").unwrap().unwrap().bytes,
        b"2"
    );
    assert_eq!(
        storage.get("alerts/p/0/3.json").unwrap().unwrap().bytes,
        b"3"
    );
    storage.flush().unwrap();
    storage.delete("alerts/p/0/3.json").unwrap();

    // Listing by prefix, folders or not, in key order, with sizes.
    storage.put_if_absent("batch/runsx/b.json", b"bb").unwrap();
    storage.put_if_absent("batch/CURRENT.json", b"{}").unwrap();
    let keys = |prefix: &str| -> Vec<String> {
        storage
            .list(prefix)
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect()
    };
    assert_eq!(keys("batch/runs/"), ["batch/runs/a.json"]);
    assert_eq!(
        keys("batch/runs"),
        ["batch/runs/a.json", "batch/runsx/b.json"]
    );
    assert_eq!(
        keys("batch/"),
        [
            "batch/CURRENT.json",
            "batch/runs/a.json",
            "batch/runsx/b.json"
        ]
    );
    assert_eq!(
        keys("alerts/p/0/"),
        ["alerts/p/0/1.json", "alerts/p/0/2.json"]
    );
    assert!(keys("nothing/").is_empty());
    let sizes: Vec<u64> = storage
        .list("batch/r")
        .unwrap()
        .iter()
        .map(|l| l.size)
        .collect();
    assert_eq!(sizes, [5, 2]);

    // Deleted; deleting again is not an error.
    storage.delete("alerts/p/0/1.json").unwrap();
    storage.delete("alerts/p/0/1.json").unwrap();
    assert_eq!(keys("alerts/"), ["alerts/p/0/2.json"]);

    // Keys that are not keys.
    for bad in ["", "/abs", "a//b", "a/../b", "./a", "a\\b"] {
        assert!(
            matches!(storage.get(bad), Err(StorageError::InvalidKey { .. })),
            "{bad:?}"
        );
        assert!(storage.put_if_absent(bad, b"x").is_err(), "{bad:?}");
    }
}

/// The batch run lease, on conditional writes alone: one holder; the next takes it once
/// released.
fn lease_contract(storage: Arc<dyn Storage>) {
    let held = lease::acquire(Arc::clone(&storage), "run-1").unwrap();
    let busy = lease::acquire(Arc::clone(&storage), "run-2").err().unwrap();
    assert!(
        busy.to_string()
            .contains("batch run run-1 holds the run lease"),
        "{busy}"
    );
    held.confirm().unwrap();
    held.release().unwrap();
    let next = lease::acquire(Arc::clone(&storage), "run-2").unwrap();
    next.confirm().unwrap();
    next.release().unwrap();
}

/// A zombie owner of a partition (paused while the partition was reassigned) can never
/// overwrite the archive manifest its successor wrote.
fn zombie_contract(storage: &dyn Storage) {
    let entry = |from, to| ArchiveEntry {
        from,
        to,
        files: Vec::new(),
        written_at_ms: 0,
    };
    let mut zombie = PartitionManifest::new("t", 3);
    zombie.entries = vec![entry(0, 10)];
    zombie.publish(storage).unwrap();
    // The successor reads what the zombie last wrote and moves the manifest on.
    let mut successor = PartitionManifest::read(storage, "t", 3).unwrap().unwrap();
    successor.entries.push(entry(10, 20));
    successor.publish(storage).unwrap();
    // The zombie resumes from the version it holds: refused, the successor's manifest stays.
    zombie.entries.push(entry(10, 30));
    let refused = zombie.publish(storage);
    assert!(
        matches!(refused, Err(braid_store::Error::Conflict { .. })),
        "{refused:?}"
    );
    let stored = PartitionManifest::read(storage, "t", 3).unwrap().unwrap();
    assert_eq!(stored.end(), Some(20));
    // The successor goes on over its own version.
    let mut successor = stored;
    successor.entries.push(entry(20, 25));
    successor.publish(storage).unwrap();
}

/// The checks `braid check --storage` runs all pass, and leave nothing behind.
fn conformant(storage: &dyn Storage) {
    for check in braid_store::storage::conformance::check(storage, "_check/") {
        assert!(check.outcome.is_ok(), "{}: {:?}", check.what, check.outcome);
    }
    assert!(storage.list("_check/").unwrap().is_empty());
}

#[test]
fn a_local_directory_keeps_the_storage_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&LocalStorage::new(dir.path()));
    zombie_contract(&LocalStorage::new(dir.path().join("zombie")));
    lease_contract(Arc::new(LocalStorage::new(dir.path().join("lease"))));
    conformant(&LocalStorage::new(dir.path().join("conformance")));
}

#[test]
fn an_s3_bucket_keeps_the_storage_contract_under_its_prefix() {
    let moto = Moto::start();
    let bucket = braid_testkit::unique("braid").to_lowercase();
    moto.create_bucket(&bucket);
    let options = moto.options();
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let storage = ObjectStorage::new(&format!("s3://{bucket}/team/braid"), &options).unwrap();
    contract(&storage);
    zombie_contract(&ObjectStorage::new(&format!("s3://{bucket}/zombie"), &options).unwrap());
    lease_contract(Arc::new(
        ObjectStorage::new(&format!("s3://{bucket}/lease"), &options).unwrap(),
    ));
    conformant(&ObjectStorage::new(&format!("s3://{bucket}/conformance"), &options).unwrap());

    // Everything under the URL's prefix, nothing beside it: another prefix of the same bucket
    // is another, empty storage.
    let other = ObjectStorage::new(&format!("s3://{bucket}/team/other"), &options).unwrap();
    assert!(other.list("").unwrap().is_empty());
    assert_eq!(other.get("batch/CURRENT.json").unwrap(), None);
    let root = ObjectStorage::new(&format!("s3://{bucket}"), &options).unwrap();
    let listed = root.list("team/braid/batch/").unwrap();
    assert_eq!(listed.len(), 3);
    assert!(
        listed
            .iter()
            .all(|l| l.key.starts_with("team/braid/batch/"))
    );

    // Usable, and dropped, from inside async code too.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let inside = ObjectStorage::new(&format!("s3://{bucket}/async"), &options).unwrap();
        assert!(matches!(
            inside.put_if_absent("a.json", b"1").unwrap(),
            Put::Written(_)
        ));
        assert_eq!(inside.get("a.json").unwrap().unwrap().bytes, b"1");
        drop(inside);
    });

    // Bad URLs and options are named.
    for bad in ["s3://", "file:///tmp/x", "s3://b/a/../c", "s3://b/a//c"] {
        let error = ObjectStorage::new(bad, &options).unwrap_err().to_string();
        assert!(error.contains("s3://"), "{bad}: {error}");
    }
    assert!(
        ObjectStorage::new(&format!("s3://{bucket}"), &[("no_such_key", "x")])
            .unwrap_err()
            .to_string()
            .contains("no_such_key")
    );
}
