//! What Braid needs of a store, checked against a real one (`braid check --storage`): point it
//! at an S3 bucket, MinIO or any S3-compatible server before running Braid on it. Each check
//! works under a scratch prefix of its own and removes what it wrote.

use super::{Put, Storage, put_over};

/// One requirement and whether the store met it (`Err`: what it did instead).
pub struct Check {
    pub what: &'static str,
    pub outcome: Result<(), braid_shared::Invalid>,
}

/// One check: what it requires, and how it is checked.
type Requirement<'a> = (&'static str, &'a dyn Fn() -> Result<(), String>);

/// Runs every check under `scratch` (a prefix ending with `/`), then deletes what they wrote.
pub fn check(storage: &dyn Storage, scratch: &str) -> Vec<Check> {
    let key = |name: &str| format!("{scratch}{name}");
    let checks: [Requirement<'_>; 7] = [
        (
            "create once (If-None-Match): a second create of the same key is refused",
            &|| create_once(storage, &key("created.json")),
        ),
        ("replace over the version read (If-Match)", &|| {
            replace_over_held(storage, &key("replaced.json"))
        }),
        (
            "a replace over a stale version is refused: a zombie writer is fenced",
            &|| zombie_refused(storage, &key("fenced.json")),
        ),
        ("a replace of a deleted object is refused", &|| {
            replace_of_deleted(storage, &key("deleted.json"))
        }),
        (
            "list by prefix, in key order, with sizes, keys as written",
            &|| listed_in_order(storage, scratch),
        ),
        ("delete; deleting again is no error", &|| {
            deleted_twice(storage, &key("gone.json"))
        }),
        (
            "a local copy of an immutable file (for Polars and DuckDB)",
            &|| local_copy(storage, &key("file.parquet")),
        ),
    ];
    let results = checks
        .iter()
        .map(|(what, run)| Check {
            what,
            outcome: run().map_err(braid_shared::Invalid),
        })
        .collect();
    if let Ok(listed) = storage.list(scratch) {
        for object in listed {
            let _ = storage.delete(&object.key);
        }
    }
    results
}

fn failed(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn created(storage: &dyn Storage, key: &str, bytes: &[u8]) -> Result<super::Version, String> {
    match storage.put_if_absent(key, bytes).map_err(failed)? {
        Put::Written(version) => Ok(version),
        Put::Conflict => Err(format!("creating the new key {key} was refused")),
    }
}

fn create_once(storage: &dyn Storage, key: &str) -> Result<(), String> {
    created(storage, key, b"first")?;
    if storage.put_if_absent(key, b"second").map_err(failed)? != Put::Conflict {
        return Err("a second create of the same key was accepted: the store ignores If-None-Match, so two writers could both believe they created it".to_owned());
    }
    let read = storage.get(key).map_err(failed)?;
    match read {
        Some(object) if object.bytes == b"first" => Ok(()),
        Some(_) => Err("the second create replaced the first one's content".to_owned()),
        None => Err("the created object cannot be read back".to_owned()),
    }
}

fn replace_over_held(storage: &dyn Storage, key: &str) -> Result<(), String> {
    let first = created(storage, key, b"one")?;
    let read = storage
        .get(key)
        .map_err(failed)?
        .ok_or("the created object cannot be read back")?;
    if read.version != first {
        return Err(format!(
            "the version read ({:?}) differs from the one the create reported ({:?})",
            read.version.0, first.0
        ));
    }
    match put_over(storage, key, b"two", Some(&first)).map_err(failed)? {
        Some(second) if second != first => {}
        Some(_) => return Err("the replace reported the old version".to_owned()),
        None => return Err("a replace over the current version was refused".to_owned()),
    }
    match storage.get(key).map_err(failed)? {
        Some(object) if object.bytes == b"two" => Ok(()),
        _ => Err("the replaced object does not read back as written".to_owned()),
    }
}

fn zombie_refused(storage: &dyn Storage, key: &str) -> Result<(), String> {
    let held = created(storage, key, b"zombie's")?;
    put_over(storage, key, b"successor's", Some(&held))
        .map_err(failed)?
        .ok_or("a replace over the current version was refused")?;
    if put_over(storage, key, b"zombie's again", Some(&held))
        .map_err(failed)?
        .is_some()
    {
        return Err("a replace over a stale version was accepted: the store ignores If-Match, so a paused process could overwrite its successor's checkpoint or manifest".to_owned());
    }
    match storage.get(key).map_err(failed)? {
        Some(object) if object.bytes == b"successor's" => Ok(()),
        _ => Err("the successor's content did not stay".to_owned()),
    }
}

fn replace_of_deleted(storage: &dyn Storage, key: &str) -> Result<(), String> {
    let held = created(storage, key, b"x")?;
    storage.delete(key).map_err(failed)?;
    match storage.put_if_unchanged(key, b"y", &held).map_err(failed)? {
        Put::Conflict => Ok(()),
        Put::Written(_) => {
            let _ = storage.delete(key);
            Err("a replace of a deleted object was accepted".to_owned())
        }
    }
}

fn listed_in_order(storage: &dyn Storage, scratch: &str) -> Result<(), String> {
    // `~` is in archive file names; some stores encode it in their keys.
    let keys = [
        format!("{scratch}list/b/t~2.json"),
        format!("{scratch}list/a~1.json"),
        format!("{scratch}listx.json"),
    ];
    for (i, key) in keys.iter().enumerate() {
        created(storage, key, &vec![b'x'; i + 1])?;
    }
    let listed = storage.list(&format!("{scratch}list/")).map_err(failed)?;
    let got: Vec<(String, u64)> = listed.into_iter().map(|l| (l.key, l.size)).collect();
    let want = vec![(keys[1].clone(), 2), (keys[0].clone(), 1)];
    if got == want {
        Ok(())
    } else {
        Err(format!("listed {got:?}, expected {want:?}"))
    }
}

fn deleted_twice(storage: &dyn Storage, key: &str) -> Result<(), String> {
    created(storage, key, b"x")?;
    storage.delete(key).map_err(failed)?;
    storage.delete(key).map_err(failed)?;
    match storage.get(key).map_err(failed)? {
        None => Ok(()),
        Some(_) => Err("the deleted object can still be read".to_owned()),
    }
}

fn local_copy(storage: &dyn Storage, key: &str) -> Result<(), String> {
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    created(storage, key, &bytes)?;
    let path = storage
        .local_file(key)
        .map_err(failed)?
        .ok_or("no local file for an object that exists")?;
    let local = std::fs::read(&path).map_err(|e| format!("reading the local copy: {e}"))?;
    let _ = storage.delete(key);
    if local == bytes {
        Ok(())
    } else {
        Err("the local copy differs from the object".to_owned())
    }
}
