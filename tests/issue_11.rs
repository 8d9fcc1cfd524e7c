//! Regression tests for issue 11, part 1: a write to one map from inside
//! another map's write bypassed the second map's write gate.
//!
//! The gate's nesting depth was one thread-local shared by every map, so a
//! thread inside `a.batch(..)` (or inside the closure of `a.update(..)`)
//! counted as already inside `b`'s gate: its writes to `b` neither held
//! snapshots of `b` back nor marked them stale. Each test below failed on
//! the code before the fix (the depth is now kept per gate, see
//! `src/gate.rs`, "Nesting").

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use snapmap::SnapMap;

/// A snapshot taken after a write returned contains it, also when the write
/// was made from inside another map's batch (deterministic, one thread).
#[test]
fn write_inside_another_maps_batch_reaches_the_next_snapshot() {
    let a: SnapMap<u64, u64> = SnapMap::new();
    let b: SnapMap<u64, u64> = SnapMap::new();
    b.insert(1, 1);
    assert_eq!(b.snapshot().get(&1), Some(&1));
    a.batch(|a| {
        a.insert(7, 7);
        b.insert(1, 2);
    });
    assert_eq!(
        b.snapshot().get(&1),
        Some(&2),
        "the cached snapshot of b came back although b changed"
    );
    assert_eq!(a.snapshot().get(&7), Some(&7));
}

/// The same through the closure of `update`, which also runs inside the
/// gate of the map it updates.
#[test]
fn write_inside_another_maps_update_closure_reaches_the_next_snapshot() {
    let a: SnapMap<u64, u64> = SnapMap::new();
    let b: SnapMap<u64, u64> = SnapMap::new();
    a.insert(0, 0);
    b.insert(1, 1);
    assert_eq!(b.snapshot().get(&1), Some(&1));
    let mut wrote = false;
    a.update(&0, |v| {
        if !wrote {
            b.insert(1, 2);
            wrote = true;
        }
        v + 1
    });
    assert_eq!(b.snapshot().get(&1), Some(&2));
    assert_eq!(a.snapshot().get(&0), Some(&1));
}

/// A snapshot of `b` from inside `a`'s batch: nothing of `b`'s is held, so
/// it must not panic, and it sees the batch's own earlier writes to `b`.
#[test]
fn snapshot_of_another_map_inside_a_batch_works() {
    let a: SnapMap<u64, u64> = SnapMap::new();
    let b: SnapMap<u64, u64> = SnapMap::new();
    b.insert(1, 1);
    let seen = a.batch(|a| {
        a.insert(1, 10);
        b.insert(2, 2);
        let inner = b.snapshot();
        (inner.get(&1).copied(), inner.get(&2).copied(), inner.len())
    });
    assert_eq!(seen, (Some(1), Some(2), 2));
    // And from inside an update closure of `a`.
    let len = a.update(&1, |v| v + b.snapshot().len() as u64);
    assert_eq!(len, Some(12));
}

/// A snapshot of the same map inside its own batch would wait for itself:
/// a documented panic whose message says what to do.
#[test]
fn snapshot_of_the_same_map_inside_its_batch_panics_with_advice() {
    let a: SnapMap<u64, u64> = SnapMap::new();
    a.insert(1, 1);
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.batch(|a| {
            a.insert(2, 2);
            a.map().snapshot()
        })
    }))
    .expect_err("a snapshot inside the same map's batch must panic");
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .expect("a string panic");
    assert!(
        message.contains("would wait for itself") && message.contains("before or after the batch"),
        "unhelpful message: {message}"
    );
    // The gate was left on the way out: writes and snapshots work again,
    // and the batch's write is there.
    a.insert(3, 3);
    let after = a.snapshot();
    assert_eq!((after.get(&2), after.get(&3)), (Some(&2), Some(&3)));
    // The same inside an update closure.
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.update(&1, |v| v + a.snapshot().len() as u64)
    }));
    assert!(
        panic.is_err(),
        "a snapshot inside the same map's update must panic"
    );
    assert_eq!(a.get(&1), Some(1), "the panicking update changed nothing");
    assert_eq!(a.snapshot().len(), 3);
}

/// A batch of `b` nested in a batch of `a` is all-or-nothing in snapshots
/// of `b` taken by another thread meanwhile. The inner batch pauses half
/// way, so a snapshot that is not held back sees it half applied.
#[test]
fn nested_batch_of_another_map_is_all_or_nothing() {
    const KEYS: u64 = 32;
    const ROUNDS: u64 = 30;
    let a: SnapMap<u64, u64> = SnapMap::new();
    let b: SnapMap<u64, u64> = SnapMap::builder().shards(4).build().unwrap();
    for key in 0..KEYS {
        b.insert(key, 0);
    }
    let done = AtomicBool::new(false);
    let start = Barrier::new(2);
    std::thread::scope(|scope| {
        let snapshots = scope.spawn(|| {
            start.wait();
            let mut taken = 0u64;
            while !done.load(Ordering::Acquire) {
                let snapshot = b.snapshot();
                let first = *snapshot.get(&0).expect("key 0 is never removed");
                for key in 0..KEYS {
                    let value = *snapshot.get(&key).expect("keys are never removed");
                    assert_eq!(
                        value, first,
                        "snapshot shows b's inner batch half applied (key {key})"
                    );
                }
                taken += 1;
            }
            taken
        });
        start.wait();
        for round in 1..=ROUNDS {
            a.batch(|a| {
                a.insert(round, round);
                b.batch(|b| {
                    for key in 0..KEYS {
                        b.insert(key, round);
                        if key == KEYS / 2 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                });
            });
        }
        done.store(true, Ordering::Release);
        let taken = snapshots.join().expect("snapshot checker");
        assert!(taken > 0);
    });
    let last = b.snapshot();
    assert!((0..KEYS).all(|key| last.get(&key) == Some(&ROUNDS)));
}

/// Splits (and, as the hash layout allows, merges) of `b`'s shards made
/// from inside `a`'s batches never hide keys that are present and
/// unchanged the whole time from snapshots of `b`. Before the fix a shard
/// retired by such a split before the build captured it was left out of
/// the snapshot. (Merges are not asserted: with the map's random hasher
/// the stable keys often keep every pair of buddies too full to merge.)
#[test]
fn migration_inside_another_maps_batch_keeps_snapshots_whole() {
    const STABLE: u64 = 512;
    const CHURN_ROUNDS: u64 = 1000;
    let a: SnapMap<u64, u64> = SnapMap::new();
    let b: SnapMap<u64, u64> = SnapMap::builder()
        .shards(1)
        .shard_capacity(2)
        .promotion_threshold(1)
        .build()
        .unwrap();
    for key in 0..STABLE {
        b.insert(key, key);
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let checker = scope.spawn(|| {
            let mut taken = 0u64;
            while !done.load(Ordering::Acquire) {
                // A plain write first, so that every snapshot is a new
                // build (the nested writes alone did not mark b changed).
                b.insert(u64::MAX, taken);
                let snapshot = b.snapshot();
                for key in 0..STABLE {
                    assert_eq!(
                        snapshot.get(&key),
                        Some(&key),
                        "stable key {key} missing from a snapshot of b"
                    );
                }
                taken += 1;
            }
            taken
        });
        for round in 0..CHURN_ROUNDS {
            a.batch(|a| {
                a.insert(round, round);
                // Many keys in, then out: b's shards split, then merge.
                for key in 1000..1064 {
                    b.insert(key, round);
                }
                for key in 1000..1064 {
                    b.remove(&key);
                }
            });
        }
        done.store(true, Ordering::Release);
        assert!(checker.join().expect("snapshot checker") > 0);
    });
    let stats = b.stats();
    assert!(
        stats.splits > 0,
        "the churn must split b's shards: {stats:?}"
    );
}

// ----- Part 3: retention of removed keys ---------------------------------

mod common;

use common::{Counts, Tracked, wait_until_alive};

/// A shard that only ever removes gives its removed keys back. Before the
/// fix, a removed key stayed allocated (in its entry, in the read view)
/// until the shard's next new key rebuilt dirty and a promotion followed;
/// a shard that only removes never gets there.
#[test]
fn a_shard_that_only_removes_frees_its_removed_keys() {
    const KEYS: u64 = 1_000;
    let counts = Counts::new();
    // One shard, and it can never merge (it is at the minimum count).
    let map: SnapMap<Tracked<u64>, u64> =
        SnapMap::builder().shards(1).max_shards(1).build().unwrap();
    for key in 0..KEYS {
        map.insert(counts.track(key), key);
    }
    // Promote, so that every key is in the read view and removals take
    // the lock-free path.
    for key in 0..KEYS {
        assert_eq!(map.get(&counts.track(key)), Some(key));
    }
    // The probe keys of the lookups are dropped at once: only the map's
    // keys are alive.
    wait_until_alive(&counts, KEYS as usize);
    for key in 0..KEYS - 10 {
        assert_eq!(map.remove(&counts.track(key)), Some(key));
    }
    let stats = map.stats();
    assert!(stats.compactions > 0, "no compaction: {stats}");
    // 10 live keys: the view may hold at most 10 + 8 removed ones.
    assert!(
        stats.removed_keys_held <= 18,
        "{} removed keys still held: {stats}",
        stats.removed_keys_held
    );
    // And they are really freed (the epoch frees retired entries).
    wait_until_alive(&counts, 10 + stats.removed_keys_held);
    for key in KEYS - 10..KEYS {
        assert_eq!(
            map.get(&counts.track(key)),
            Some(key),
            "a live key was lost"
        );
    }
    assert_eq!(map.len(), 10);
}

/// `stats()` counts the removed keys a view holds, and the bound holds
/// for every removal order, shard layout and promotion threshold.
#[test]
fn removed_keys_held_is_counted_and_bounded_in_every_configuration() {
    common::for_each_config::<u64, u64>(|config, map| {
        for key in 0..300 {
            map.insert(key, key);
        }
        for key in 0..300 {
            map.get(&key);
        }
        let mut max_held = 0;
        for key in (0..300).filter(|k| k % 10 != 0) {
            assert_eq!(map.remove(&key), Some(key), "{}", config.name);
            let stats = map.stats();
            // Each shard: at most its live keys + 8 removed ones, so in all
            // at most len + 8 per shard.
            assert!(
                stats.removed_keys_held <= stats.len + 8 * stats.shards,
                "{}: {stats}",
                config.name
            );
            max_held = max_held.max(stats.removed_keys_held);
        }
        assert!(
            max_held > 0,
            "{}: the counter never saw a removed key",
            config.name
        );
        assert_eq!(map.len(), 30, "{}", config.name);
        for key in (0..300).step_by(10) {
            assert_eq!(map.get(&key), Some(key), "{}", config.name);
        }
    });
}
