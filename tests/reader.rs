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

#[test]
fn revisions_grow_with_every_build_and_only_then() {
    let map = SnapMap::new();
    map.insert(1, 1);
    let first = map.snapshot();
    assert_eq!(
        map.snapshot().revision(),
        first.revision(),
        "unchanged: the same snapshot"
    );
    map.insert(1, 2);
    let second = map.snapshot();
    assert!(second.revision() > first.revision());
    map.remove(&42); // changes nothing, but is a write
    let third = map.snapshot();
    assert!(third.revision() > second.revision());
    map.forget_snapshot();
    assert!(map.snapshot().revision() > third.revision(), "a new build");
}

#[test]
fn apply_if_applies_only_on_the_revision_it_read() {
    let map = SnapMap::new();
    map.insert("limit", 10);
    let base = map.snapshot().revision();

    let mut batch = snapmap::Batch::new();
    batch.insert("limit", 11).insert("burst", 5);
    let applied = map.apply_if(base, batch).expect("nothing changed since");
    assert_eq!((applied.inserted, applied.replaced), (1, 1));

    // The same revision again: the first apply was a write since.
    let mut again = snapmap::Batch::new();
    again.insert("limit", 99).remove("burst");
    let conflict = map.apply_if(base, again).unwrap_err();
    assert_eq!(conflict.expected, base);
    assert_eq!(conflict.latest, base);
    assert!(conflict.written_since);
    assert!(
        conflict.to_string().contains("nothing was applied"),
        "{conflict}"
    );
    assert_eq!(map.get("limit"), Some(11));
    assert_eq!(map.get("burst"), Some(5));

    // After a newer snapshot the old revision is stale even when clean.
    let newer = map.snapshot().revision();
    let mut stale = snapmap::Batch::new();
    stale.insert("limit", 1);
    let conflict = map.apply_if(base, stale).unwrap_err();
    assert_eq!((conflict.latest, conflict.written_since), (newer, false));

    // The gate was left open by the conflicts: writes and snapshots work.
    map.insert("x", 1);
    assert_eq!(map.snapshot().get("x"), Some(&1));
}

#[test]
fn apply_if_inside_a_batch_of_the_same_map_conflicts() {
    let map = SnapMap::new();
    map.insert(1, 1);
    let revision = map.snapshot().revision();
    map.batch(|b| {
        b.insert(2, 2);
        let mut inner = snapmap::Batch::new();
        inner.insert(3, 3);
        assert!(
            map.apply_if(revision, inner).is_err(),
            "the outer batch is a write since"
        );
    });
    assert_eq!(map.get(&3), None);
    assert_eq!(map.get(&2), Some(2));
}

/// Optimistic reloads from several threads: each reads a snapshot,
/// computes the next counter from it and applies it only on that
/// revision, retrying on conflict. No increment may be lost or doubled.
#[test]
fn optimistic_reloads_lose_no_update() {
    const THREADS: usize = 4;
    const RELOADS: u64 = 300;
    let map = Arc::new(SnapMap::new());
    map.insert("counter", 0u64);
    map.insert("by", 0u64);
    let conflicts = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS as u64 {
            let (map, conflicts) = (&map, &conflicts);
            s.spawn(move || {
                let mut reader = map.reader();
                let mut done = 0;
                while done < RELOADS {
                    let config = reader.snapshot();
                    let (revision, next) = (config.revision(), config.get("counter").unwrap() + 1);
                    let mut batch = snapmap::Batch::new();
                    batch.insert("counter", next).insert("by", t);
                    match map.apply_if(revision, batch) {
                        Ok(_) => done += 1,
                        Err(_) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    assert_eq!(map.get("counter"), Some(THREADS as u64 * RELOADS));
    // Not asserted (it depends on scheduling), but reported.
    println!("conflicts: {}", conflicts.load(Ordering::Relaxed));
}

/// A reader keeps its snapshot's slot table, shift and hasher beside it
/// (so that a lookup skips the snapshot's body); every refresh must take
/// the new snapshot's. The map here goes from one shard to many and back
/// (its snapshots' slot tables change size and place), and the reader,
/// a clone of it and one refreshed by waiting must answer as the map does
/// after every step. Under ASan (CI) a stale slot table is a
/// use-after-free.
#[test]
fn a_reader_follows_the_layout_through_splits_and_merges() {
    let map: SnapMap<u64, u64> = SnapMap::builder()
        .shards(1)
        .shard_capacity(8)
        .build()
        .unwrap();
    let mut reader = map.reader();
    let mut waiter = map.reader();
    let check = |reader: &mut snapmap::Reader<'_, u64, u64, _>, present: u64, step: &str| {
        for k in 0..600u64 {
            let want = (k < present).then_some(k * 3);
            assert_eq!(reader.get(&k).copied(), want, "{step}: key {k}");
        }
    };
    for present in (0..=600u64).step_by(50) {
        for k in present.saturating_sub(50)..present {
            map.insert(k, k * 3);
        }
        check(&mut reader, present, "growing");
        let mut copy = reader.clone();
        check(&mut copy, present, "growing, clone");
        if present > 0 {
            assert!(waiter.wait_for_change_timeout(std::time::Duration::from_secs(10)));
            check(&mut waiter, present, "growing, waiter");
        }
    }
    let grown = map.stats();
    assert!(grown.splits > 10, "the map split: {grown:?}");
    for present in (0..600u64).rev().step_by(50) {
        for k in present..(present + 50).min(600) {
            map.remove(&k);
        }
        check(&mut reader, present, "shrinking");
        assert!(waiter.wait_for_change_timeout(std::time::Duration::from_secs(10)));
        check(&mut waiter, present, "shrinking, waiter");
    }
    assert!(map.stats().merges > 0, "the map merged: {:?}", map.stats());
}
