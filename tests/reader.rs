//! The reader handle (`SnapMap::reader`): a cached snapshot that refreshes
//! itself only when the map has changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use snapmap::SnapMap;

#[test]
fn a_reader_keeps_its_snapshot_while_nothing_changes() {
    let map = SnapMap::new();
    for i in 0..1000u64 {
        map.insert(i, i);
    }
    let mut reader = map.reader();
    let builds = map.stats().snapshot_builds;
    for round in 0..10 {
        for i in 0..1000u64 {
            assert_eq!(reader.get(&i), Some(&i), "round {round}");
        }
        assert!(reader.is_current());
    }
    // Reads of the map itself change nothing either.
    assert_eq!(map.get(&5), Some(5));
    assert!(reader.is_current());
    assert_eq!(
        map.stats().snapshot_builds,
        builds,
        "an unchanged map is not snapshotted again"
    );
    // A second reader shares the map's cached snapshot.
    let other = map.reader();
    assert!(other.is_current());
    assert_eq!(map.stats().snapshot_builds, builds);
}

#[test]
fn every_kind_of_write_makes_readers_refresh() {
    let map = SnapMap::new();
    map.insert("a", 1);
    let mut reader = map.reader();
    type Write = dyn Fn(&SnapMap<&'static str, i32>);
    let writes: [(&str, &Write); 7] = [
        ("insert", &|m| {
            m.insert("b", 2);
        }),
        ("replace", &|m| {
            m.insert("a", 10);
        }),
        ("update", &|m| {
            m.update("a", |v| v + 1);
        }),
        ("remove", &|m| {
            m.remove("b");
        }),
        ("batch", &|m| {
            m.batch(|b| {
                b.insert("c", 3);
                b.insert("d", 4);
            });
        }),
        ("clear", &|m| m.clear()),
        // Nothing to remove: the mark is set on entering the gate, so
        // readers refresh (to a snapshot equal to the last one).
        ("remove of an absent key", &|m| {
            m.remove("zz");
        }),
    ];
    for (name, write) in writes {
        assert!(reader.is_current(), "before {name}");
        write(&map);
        assert!(!reader.is_current(), "{name} did not mark the map changed");
        let mut expected: Vec<_> = map.pin().iter().map(|(k, v)| (*k, *v)).collect();
        expected.sort();
        let mut got: Vec<_> = reader.snapshot().iter().map(|(k, v)| (*k, *v)).collect();
        got.sort();
        assert_eq!(got, expected, "after {name}");
        assert!(reader.is_current(), "after {name} and a refresh");
    }
}

#[test]
fn cached_does_not_refresh_and_refresh_does() {
    let map = SnapMap::new();
    map.insert(1, "a");
    let mut reader = map.reader();
    map.insert(1, "b");
    assert_eq!(reader.cached().get(&1), Some(&"a"), "cached() never checks");
    assert!(!reader.is_current());
    reader.refresh();
    assert!(reader.is_current());
    assert_eq!(reader.cached().get(&1), Some(&"b"));
    let clone = reader.clone();
    assert!(clone.is_current());
}

#[test]
#[should_panic(expected = "it would wait for itself")]
fn refreshing_inside_a_batch_of_the_same_map_panics() {
    let map = SnapMap::new();
    map.insert(1, 1);
    let mut reader = map.reader();
    map.batch(|b| {
        b.insert(1, 2);
        reader.get(&1);
    });
}

/// Readers on the handle during reloads: every reload writes a version
/// pair (`cert`, `key`) in one batch. A reader's view is never half a
/// reload, never goes back in time, and never misses a reload that the
/// same thread has already seen through `get` (linearizability across the
/// two read paths).
#[test]
fn readers_never_see_half_a_reload_or_go_back() {
    const RELOADS: u64 = 2_000;
    const READERS: usize = 3;
    const MIN_CHECKS: u64 = 30_000;
    let map = Arc::new(SnapMap::new());
    map.batch(|b| {
        b.insert("cert", 0u64);
        b.insert("key", 0u64);
        for i in 0..1000u64 {
            b.insert(if i % 2 == 0 { "route" } else { "limit" }, i);
        }
    });
    let done = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let last_version = std::thread::scope(|s| {
        for _ in 0..READERS {
            let (map, done, checks) = (&map, &done, &checks);
            s.spawn(move || {
                let mut reader = map.reader();
                let mut last = 0;
                while !done.load(Ordering::Acquire) {
                    let through_get = map.get("cert").unwrap();
                    let config = reader.snapshot();
                    let (cert, key) = (*config.get("cert").unwrap(), *config.get("key").unwrap());
                    assert_eq!(cert, key, "half a reload");
                    assert!(cert >= last, "went back from {last} to {cert}");
                    assert!(
                        cert >= through_get,
                        "the reader's snapshot ({cert}) is older than what get saw ({through_get})"
                    );
                    last = cert;
                    checks.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Reload until the readers have checked enough views (they are
        // slow to start on a loaded machine).
        let mut version = 0;
        while version < RELOADS || checks.load(Ordering::Relaxed) < MIN_CHECKS {
            version += 1;
            map.batch(|b| {
                b.insert("cert", version);
                b.insert("key", version);
            });
        }
        done.store(true, Ordering::Release);
        version
    });
    assert!(
        checks.load(Ordering::Relaxed) >= MIN_CHECKS,
        "the readers ran"
    );
    assert_eq!(map.reader().get("cert"), Some(&last_version));
}
