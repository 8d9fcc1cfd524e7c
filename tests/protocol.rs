//! The per-shard `sync.Map` protocol, step by step, proven with `stats()`.
//!
//! Every map here has one shard, so every key shares the same read view,
//! dirty table and miss counter, and the counters say exactly which path
//! each operation took:
//!
//! - a new key goes to the dirty table; the first new key after a promotion
//!   rebuilds dirty by copying the view (`dirty_rebuilds`,
//!   `entries_copied`), expunging deleted entries (`expunges`);
//! - lookups of keys only in dirty take the lock (`slow_path_lookups`, Go's
//!   misses) until `misses >= min(len(dirty), threshold)` promotes dirty to
//!   the view (`promotions`);
//! - lookups answered by the view count as `read_hits` (flushed when the
//!   pinned handle drops).

mod common;

use snapmap::{SnapMap, Stats};

type Map = SnapMap<&'static str, u64>;

fn one_shard() -> Map {
    SnapMap::builder().shards(1).build().unwrap()
}

fn one_shard_threshold(threshold: usize) -> Map {
    SnapMap::builder()
        .shards(1)
        .promotion_threshold(threshold)
        .build()
        .unwrap()
}

/// The protocol counters, for compact comparisons.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Counters {
    slow: u64,
    promotions: u64,
    rebuilds: u64,
    copied: u64,
    expunges: u64,
}

fn counters(map: &Map) -> Counters {
    let stats = map.stats();
    // Every map here stays one shard: nothing in these tests comes near the
    // shard capacity, so no split or merge muddles the counts.
    assert_eq!(
        (stats.shards, stats.splits, stats.merges),
        (1, 0, 0),
        "the map left its single shard: {stats}"
    );
    Counters {
        slow: stats.slow_path_lookups,
        promotions: stats.promotions,
        rebuilds: stats.dirty_rebuilds,
        copied: stats.entries_copied,
        expunges: stats.expunges,
    }
}

fn c(slow: u64, promotions: u64, rebuilds: u64, copied: u64, expunges: u64) -> Counters {
    Counters {
        slow,
        promotions,
        rebuilds,
        copied,
        expunges,
    }
}

fn sorted_contents(map: &Map) -> Vec<(&'static str, u64)> {
    let mut pairs: Vec<_> = map.pin().iter().map(|(k, v)| (*k, *v)).collect();
    pairs.sort_unstable();
    pairs
}

#[test]
fn new_key_is_served_from_dirty_then_promoted() {
    let map = one_shard();
    map.insert("a", 1);
    map.insert("b", 2);
    map.insert("c", 3);
    // The first new key rebuilt the (empty) dirty table and amended the view.
    assert_eq!(counters(&map), c(0, 0, 1, 0, 0));
    assert_eq!(map.stats().len, 3);

    // Each lookup of a dirty-only key takes the lock and counts a miss; with
    // three keys in dirty, two misses do not promote.
    assert_eq!(map.get("a"), Some(1));
    assert_eq!(counters(&map), c(1, 0, 1, 0, 0));
    assert_eq!(map.get("b"), Some(2));
    assert_eq!(counters(&map), c(2, 0, 1, 0, 0));
    // The third reaches len(dirty): promoted.
    assert_eq!(map.get("c"), Some(3));
    assert_eq!(counters(&map), c(3, 1, 1, 0, 0));
    assert_eq!(map.stats().read_hits, 0, "no lookup has hit the view yet");

    // From now on every lookup is a lock-free read hit.
    for key in ["a", "b", "c", "a"] {
        assert!(map.get(key).is_some());
    }
    assert!(map.contains_key("b"));
    let stats = map.stats();
    assert_eq!(stats.read_hits, 5);
    assert_eq!(stats.slow_path_lookups, 3, "no further slow-path lookups");
    assert_eq!(stats.promotions, 1);
    assert_eq!(stats.len, 3);
}

#[test]
fn go_rule_promotes_when_misses_reach_dirty_len() {
    for n in 1..=8u64 {
        let map = one_shard();
        const NAMES: [&str; 8] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
        let keys = &NAMES[..n as usize];
        for (i, key) in keys.iter().enumerate() {
            map.insert(*key, i as u64);
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(map.get(key), Some(i as u64));
            let expected = u64::from(i as u64 + 1 == n);
            assert_eq!(
                map.stats().promotions,
                expected,
                "{n} keys in dirty: after {} misses",
                i + 1
            );
        }
        assert_eq!(map.stats().slow_path_lookups, n);
    }
}

#[test]
fn lookups_of_absent_keys_count_as_misses_while_amended() {
    let map = one_shard();
    map.insert("a", 1);
    map.insert("b", 2);
    map.insert("c", 3);
    // Go's Load misses for an absent key too when the view is amended.
    assert_eq!(map.get("x"), None);
    assert!(!map.contains_key("y"));
    assert_eq!(counters(&map), c(2, 0, 1, 0, 0));
    assert_eq!(map.get("z"), None);
    assert_eq!(counters(&map), c(3, 1, 1, 0, 0));
    // Un-amended now: an absent key is answered by the view, lock-free.
    assert_eq!(map.get("x"), None);
    assert_eq!(counters(&map), c(3, 1, 1, 0, 0));
    assert_eq!(map.stats().read_hits, 1);
}

#[test]
fn dirty_len_includes_entries_copied_from_the_view() {
    let map = one_shard();
    for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
        map.insert(key, i as u64);
    }
    let _ = map.pin().iter().count(); // promote
    assert_eq!(counters(&map), c(0, 1, 1, 0, 0));

    // The first new key after a promotion copies the view into a new dirty
    // table: 3 entries copied, dirty now holds 4.
    map.insert("d", 3);
    assert_eq!(counters(&map), c(0, 1, 2, 3, 0));
    // A second new key does not rebuild again.
    map.insert("e", 4);
    assert_eq!(counters(&map), c(0, 1, 2, 3, 0));

    // len(dirty) = 5: four misses do not promote, the fifth does.
    for i in 0..4 {
        assert_eq!(map.get("d"), Some(3));
        assert_eq!(map.stats().promotions, 1, "after {} misses", i + 1);
    }
    assert_eq!(map.get("e"), Some(4));
    assert_eq!(counters(&map), c(5, 2, 2, 3, 0));
    assert_eq!(
        sorted_contents(&map),
        [("a", 0), ("b", 1), ("c", 2), ("d", 3), ("e", 4)]
    );
}

#[test]
fn threshold_promotes_before_dirty_len() {
    let map = one_shard_threshold(2);
    for (i, key) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        map.insert(key, i as u64);
    }
    assert_eq!(map.get("a"), Some(0));
    assert_eq!(counters(&map), c(1, 0, 1, 0, 0));
    assert_eq!(map.get("b"), Some(1));
    assert_eq!(counters(&map), c(2, 1, 1, 0, 0), "2 misses >= threshold 2");

    // Threshold 1: every first miss promotes.
    let map = one_shard_threshold(1);
    map.insert("a", 1);
    map.insert("b", 2);
    assert_eq!(map.get("b"), Some(2));
    assert_eq!(counters(&map), c(1, 1, 1, 0, 0));
    map.insert("c", 3); // rebuild: copies a, b
    assert_eq!(counters(&map), c(1, 1, 2, 2, 0));
    assert_eq!(map.get("c"), Some(3));
    assert_eq!(counters(&map), c(2, 2, 2, 2, 0));

    // A threshold above len(dirty) leaves Go's rule in charge.
    let map = one_shard_threshold(10);
    map.insert("a", 1);
    map.insert("b", 2);
    map.insert("c", 3);
    map.get("a");
    map.get("a");
    assert_eq!(map.stats().promotions, 0);
    map.get("a");
    assert_eq!(map.stats().promotions, 1);
}

#[test]
fn deleted_key_is_expunged_then_revived() {
    let map = one_shard();
    map.insert("a", 1);
    map.insert("b", 2);
    map.insert("c", 3);
    let _ = map.pin().iter().count(); // promote: a, b, c in the view
    assert_eq!(counters(&map), c(0, 1, 1, 0, 0));

    // Removing a key in the view is lock-free: the entry becomes "deleted".
    assert_eq!(map.remove("b"), Some(2));
    assert_eq!(counters(&map), c(0, 1, 1, 0, 0));
    assert_eq!(map.len(), 2);

    // The next new key rebuilds dirty: a and c are copied, b is expunged.
    map.insert("d", 4);
    assert_eq!(counters(&map), c(0, 1, 2, 2, 1));
    assert_eq!(map.get("b"), None);

    // Re-inserting b finds the expunged entry in the view, takes the lock,
    // un-expunges it, puts it back into dirty and stores the value.
    assert_eq!(map.insert("b", 20), None);
    assert_eq!(map.len(), 4);
    assert_eq!(map.get("b"), Some(20), "read through the view's entry");
    assert_eq!(
        counters(&map),
        c(0, 1, 2, 2, 1),
        "no slow lookup, no extra rebuild"
    );

    // Dirty holds a, c, d, b: four misses promote it, and b must be in the
    // new view with its new value.
    for _ in 0..4 {
        assert_eq!(map.get("d"), Some(4));
    }
    assert_eq!(counters(&map), c(4, 2, 2, 2, 1));
    let hits = map.stats().read_hits;
    assert_eq!(map.get("b"), Some(20));
    assert_eq!(map.get("d"), Some(4));
    assert_eq!(
        map.stats().read_hits,
        hits + 2,
        "both answered by the new view"
    );
    assert_eq!(map.len(), 4);
    assert_eq!(
        sorted_contents(&map),
        [("a", 1), ("b", 20), ("c", 3), ("d", 4)]
    );

    // And b survives the next rebuild (it is live, so it is copied).
    map.insert("e", 5);
    assert_eq!(counters(&map), c(4, 2, 3, 6, 1));
    assert_eq!(map.get("b"), Some(20));
}

#[test]
fn expunged_key_revived_by_try_insert_and_get_or_insert() {
    let map = one_shard();
    map.insert("a", 1);
    map.insert("b", 2);
    let _ = map.pin().iter().count();
    map.remove("a");
    map.remove("b");
    map.insert("c", 3); // rebuild: a and b expunged
    assert_eq!(counters(&map), c(0, 1, 2, 0, 2));
    assert_eq!(map.len(), 1);

    assert_eq!(map.try_insert("a", 10), Ok(()));
    assert_eq!(map.try_insert("a", 11), Err(11));
    assert_eq!(map.get_or_insert("b", 20), 20);
    assert_eq!(map.get_or_insert("b", 21), 20);
    assert_eq!(map.len(), 3);
    assert_eq!(map.stats().expunges, 2);

    let _ = map.pin().iter().count(); // promote dirty {a, b, c}
    assert_eq!(map.stats().promotions, 2);
    assert_eq!(sorted_contents(&map), [("a", 10), ("b", 20), ("c", 3)]);
    assert_eq!(map.get("a"), Some(10));
    assert_eq!(map.get("b"), Some(20));
}

#[test]
fn deleted_key_in_view_is_revived_without_the_lock() {
    let map = one_shard();
    map.insert("a", 1);
    map.insert("b", 2);
    let _ = map.pin().iter().count();
    let before = counters(&map);

    assert_eq!(map.remove("a"), Some(1));
    // No rebuild happened since: the entry is "deleted", not expunged, and
    // storing into it is a lock-free swap.
    assert_eq!(map.insert("a", 10), None);
    assert!(map.compare_and_delete("b", &2));
    assert_eq!(map.try_insert("b", 20), Ok(()));
    assert_eq!(counters(&map), before);
    assert_eq!(map.len(), 2);
    assert_eq!(sorted_contents(&map), [("a", 10), ("b", 20)]);
}

#[test]
fn removed_dirty_only_key_is_not_promoted() {
    let map = one_shard();
    map.insert("a", 1);
    map.insert("b", 2);
    map.insert("c", 3);
    // Removing a key only in dirty takes the lock, unlinks it and counts a
    // miss; dirty keeps a and c.
    assert_eq!(map.remove("b"), Some(2));
    assert_eq!(counters(&map), c(1, 0, 1, 0, 0));
    assert_eq!(map.remove("b"), None);
    assert_eq!(
        counters(&map),
        c(2, 1, 1, 0, 0),
        "2 misses >= len(dirty) = 2"
    );
    assert_eq!(map.len(), 2);
    assert_eq!(sorted_contents(&map), [("a", 1), ("c", 3)]);
    assert_eq!(map.get("b"), None);
}

#[test]
fn which_operations_count_misses_on_dirty_keys() {
    // Go: Swap (insert) of a key found in dirty does not miss; LoadOrStore
    // (try_insert), LoadAndDelete, CompareAndSwap, CompareAndDelete and
    // Load do. `update` behaves like CompareAndSwap.
    type Op = fn(&Map);
    let cases: [(&str, Op, u64); 8] = [
        ("insert", |m| assert_eq!(m.insert("a", 5), Some(1)), 0),
        (
            "try_insert",
            |m| assert_eq!(m.try_insert("a", 5), Err(5)),
            1,
        ),
        (
            "get_or_insert",
            |m| assert_eq!(m.get_or_insert("a", 5), 1),
            1,
        ),
        ("get", |m| assert_eq!(m.get("a"), Some(1)), 1),
        (
            "compare_and_swap",
            |m| assert!(m.compare_and_swap("a", &1, 5)),
            1,
        ),
        (
            "compare_and_delete",
            |m| assert!(m.compare_and_delete("a", &1)),
            1,
        ),
        (
            "update",
            |m| assert_eq!(m.update("a", |v| v + 1), Some(2)),
            1,
        ),
        ("remove", |m| assert_eq!(m.remove("a"), Some(1)), 1),
    ];
    for (name, op, misses) in cases {
        let map = one_shard();
        for key in ["a", "b", "c", "d"] {
            map.insert(key, 1);
        }
        op(&map);
        let stats = map.stats();
        assert_eq!(stats.slow_path_lookups, misses, "{name}");
        assert_eq!(stats.promotions, 0, "{name}");
        assert_eq!(stats.dirty_rebuilds, 1, "{name}");
    }
}

#[test]
fn operations_on_view_keys_take_no_lock() {
    let map = one_shard();
    for key in ["a", "b", "c", "d"] {
        map.insert(key, 1);
    }
    let _ = map.pin().iter().count();
    let before = counters(&map);

    assert_eq!(map.insert("a", 2), Some(1));
    assert_eq!(map.try_insert("a", 3), Err(3));
    assert_eq!(map.get_or_insert("a", 3), 2);
    assert!(map.compare_and_swap("b", &1, 2));
    assert!(!map.compare_and_swap("b", &1, 2));
    assert_eq!(map.update("c", |v| v + 1), Some(2));
    assert!(map.compare_and_delete("d", &1));
    assert!(!map.compare_and_delete("d", &1));
    assert_eq!(map.remove("a"), Some(2));
    assert_eq!(map.get("a"), None);
    assert_eq!(map.remove("absent"), None);
    assert!(!map.compare_and_swap("absent", &1, 2));
    assert_eq!(map.update("absent", |v| v + 1), None);

    assert_eq!(
        counters(&map),
        before,
        "every operation stayed on the fast path"
    );
    assert_eq!(sorted_contents(&map), [("b", 2), ("c", 2)]);
    assert_eq!(map.len(), 2);
}

#[test]
fn iteration_promotes_an_amended_shard_first() {
    let map = one_shard();
    map.insert("a", 1);
    map.insert("b", 2);
    map.insert("c", 3);
    assert_eq!(map.stats().promotions, 0);
    assert_eq!(sorted_contents(&map), [("a", 1), ("b", 2), ("c", 3)]);
    assert_eq!(counters(&map), c(0, 1, 1, 0, 0), "promoted, without a miss");
    // An un-amended shard is walked as is.
    assert_eq!(sorted_contents(&map), [("a", 1), ("b", 2), ("c", 3)]);
    assert_eq!(map.stats().promotions, 1);
    // A new key amends it again; the next walk promotes again and sees it.
    map.insert("d", 4);
    assert_eq!(map.pin().keys().count(), 4);
    assert_eq!(counters(&map), c(0, 2, 2, 3, 0));

    // The default shards: each shard that received keys was rebuilt once
    // and is promoted once by the walk. (100 keys under Miri, CI's Tree
    // Borrows step, to spare its time.)
    const KEYS: u32 = if cfg!(miri) { 100 } else { 500 };
    let map: SnapMap<u32, u32> = SnapMap::new();
    for i in 0..KEYS {
        map.insert(i, i);
    }
    let stats = map.stats();
    assert_eq!(stats.promotions, 0);
    assert!(stats.dirty_rebuilds > 1 && stats.dirty_rebuilds <= snapmap::DEFAULT_SHARDS as u64);
    assert_eq!(stats.splits, 0, "{KEYS} keys fit the default shards");
    assert_eq!(map.pin().iter().count(), KEYS as usize);
    let after = map.stats();
    assert_eq!(after.promotions, stats.dirty_rebuilds);
    assert_eq!(map.pin().values().count(), KEYS as usize);
    assert_eq!(
        map.stats().promotions,
        after.promotions,
        "nothing left to promote"
    );
    // All keys are now in views: lookups are read hits.
    let hits = map.stats().read_hits;
    for i in 0..KEYS {
        assert_eq!(map.get(&i), Some(i));
    }
    assert_eq!(map.stats().read_hits, hits + u64::from(KEYS));
    assert_eq!(map.stats().slow_path_lookups, 0);
}

#[test]
fn clear_resets_the_shard() {
    let map = one_shard();
    map.insert("a", 1);
    map.insert("b", 2);
    let _ = map.pin().iter().count();
    map.insert("c", 3); // amended: dirty {a, b, c}
    map.get("c"); // one miss
    assert_eq!(counters(&map), c(1, 1, 2, 2, 0));

    map.clear();
    assert_eq!(map.len(), 0);
    assert_eq!(counters(&map), c(1, 1, 2, 2, 0), "clear moves no counter");
    // The shard is un-amended and empty: an absent lookup is lock-free.
    assert_eq!(map.get("a"), None);
    assert_eq!(map.stats().slow_path_lookups, 1);

    // The first new key rebuilds from the empty view; the old (expunged)
    // entries are gone, not revived.
    map.insert("a", 10);
    assert_eq!(counters(&map), c(1, 1, 3, 2, 0));
    // A single key in dirty: the first miss promotes (the miss count was
    // reset by clear).
    assert_eq!(map.get("a"), Some(10));
    assert_eq!(counters(&map), c(2, 2, 3, 2, 0));
    assert_eq!(sorted_contents(&map), [("a", 10)]);
}

#[test]
fn read_hits_are_flushed_when_the_handle_drops() {
    let map = one_shard();
    map.insert("a", 1);
    map.get("a"); // promotes
    let base = map.stats().read_hits;
    let pinned = map.pin();
    for _ in 0..10 {
        assert_eq!(pinned.get("a"), Some(&1));
    }
    assert!(pinned.contains_key("a"));
    assert_eq!(map.stats().read_hits, base, "counted in the handle");
    drop(pinned);
    assert_eq!(map.stats().read_hits, base + 11);
}

/// Each stripe's hit counter has one owner thread, which adds without a
/// read-modify-write; threads beyond the stripes share `fetch_add`
/// counters. Many more threads than stripes (a 2-core machine has 4),
/// reading at once: not one hit may be lost or counted twice.
#[test]
fn read_hits_from_more_threads_than_stripes_are_all_counted() {
    // Under Miri (CI's Tree Borrows step) 8 threads of 20 gets: Miri
    // reports one core, so the map has 2 stripes and 6 threads are past
    // them, in seconds instead of hours.
    const THREADS: u64 = if cfg!(miri) { 8 } else { 24 };
    const GETS: u64 = if cfg!(miri) { 20 } else { 20_000 };
    let map = one_shard();
    map.insert("a", 1);
    map.get("a"); // promotes
    let base = map.stats().read_hits;
    let start = std::sync::Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (map, start) = (&map, &start);
            s.spawn(move || {
                start.wait();
                for i in 0..GETS {
                    if (i + t) % 2 == 0 {
                        assert_eq!(map.get("a"), Some(1));
                    } else {
                        // Through a handle of a few hits, flushed at drop.
                        let pinned = map.pin();
                        assert_eq!(pinned.get("a"), Some(&1));
                        assert!(pinned.contains_key("a"));
                    }
                }
            });
        }
    });
    let gets = THREADS * GETS;
    assert_eq!(map.stats().read_hits, base + gets + gets / 2);
}

/// A thread that exits gives its number back, and the next thread takes
/// it over with the stripes it owned (`thread_index`'s docs): the new
/// owner adds with a plain load and store to the counter the old one
/// wrote. Threads run one after another, each reading and exiting, some
/// alongside a second thread: not one hit may be lost in a handover.
#[test]
fn read_hits_of_threads_that_replace_each_other_are_all_counted() {
    const ROUNDS: u64 = if cfg!(miri) { 4 } else { 200 };
    const GETS: u64 = if cfg!(miri) { 5 } else { 500 };
    let map = one_shard();
    map.insert("a", 1);
    map.get("a"); // promotes
    let base = map.stats().read_hits;
    let read = |map: &Map| {
        for _ in 0..GETS {
            assert_eq!(map.get("a"), Some(1));
        }
    };
    for round in 0..ROUNDS {
        std::thread::scope(|s| {
            s.spawn(|| read(&map));
            if round % 3 == 0 {
                s.spawn(|| read(&map));
            }
        });
    }
    let threads = ROUNDS + ROUNDS.div_ceil(3);
    assert_eq!(map.stats().read_hits, base + threads * GETS);
}

#[test]
fn stats_display_and_default() {
    let map = one_shard();
    map.insert("a", 1);
    map.get("a");
    map.get("a");
    let shown = map.stats().to_string();
    // One line per concern; the retired-bytes line is process-wide (other
    // tests move it).
    let lines: Vec<&str> = shown.lines().collect();
    let retired = lines
        .iter()
        .find(|line| line.starts_with("retired bytes"))
        .unwrap_or_else(|| panic!("no retired bytes in {shown:?}"));
    let protocol: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| !line.starts_with("retired bytes"))
        .collect();
    assert_eq!(
        protocol,
        [
            "entries        1 in 1 shards (directory 2^0 = 1 slots)",
            "lookups        1 read hits, 1 on the slow path (under a shard lock)",
            "protocol       1 promotions, 1 dirty rebuilds, 0 expunges, 0 compactions",
            "migration      0 splits, 0 merges, 0 directory resizes",
            "copying        0 entries copied, at most 0 by one operation",
            "removed keys   0 still held in read views",
            "snapshots      0 built (0 shards copied, 0 reused), holding 0 bytes",
        ]
    );
    assert!(retired.contains("(views "), "{shown}");

    let empty = Stats::default();
    assert_eq!((empty.len, empty.shards, empty.read_hits), (0, 0, 0));
    assert_eq!(empty.retired.total(), 0);

    let fresh: SnapMap<u8, u8> = SnapMap::builder().shards(8).build().unwrap();
    let stats = fresh.stats();
    assert_eq!(
        (
            stats.len,
            stats.shards,
            stats.directory_slots,
            stats.global_depth
        ),
        (0, 8, 8, 3)
    );
    assert_eq!(
        (
            stats.read_hits,
            stats.slow_path_lookups,
            stats.promotions,
            stats.dirty_rebuilds,
            stats.entries_copied,
            stats.expunges,
        ),
        (0, 0, 0, 0, 0, 0)
    );
    assert_eq!(
        (
            stats.splits,
            stats.merges,
            stats.directory_resizes,
            stats.max_entries_copied_by_one_operation,
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn a_split_hands_over_a_promoted_table_without_deleted_entries() {
    // Capacity 4: the dirty table splits the shard when it passes 4 entries.
    let map: Map = SnapMap::builder()
        .shards(1)
        .shard_capacity(4)
        .build()
        .unwrap();
    for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
        map.insert(key, i as u64);
    }
    let _ = map.pin().iter().count(); // promote
    assert_eq!(map.remove("b"), Some(1));
    map.insert("e", 4); // rebuild: b expunged, a c d copied; dirty holds 4
    assert_eq!(counters(&map), c(0, 1, 2, 3, 1));
    assert_eq!(map.remove("c"), Some(2)); // deleted in the view, still in dirty

    // The fifth entry in dirty passes the capacity: the shard splits. The
    // split expunges c and hands the four live entries to two new shards.
    map.insert("f", 5);
    let stats = map.stats();
    assert_eq!(
        (stats.splits, stats.shards, stats.directory_slots),
        (1, 2, 2),
        "{stats}"
    );
    assert_eq!(stats.directory_resizes, 1, "{stats}");
    assert_eq!(stats.expunges, 2, "{stats}");
    assert_eq!(stats.entries_copied, 3 + 4, "{stats}");
    assert_eq!(stats.max_entries_copied_by_one_operation, 4, "{stats}");
    assert_eq!(stats.len, 4);

    // The new shards start promoted: every lookup is a lock-free hit.
    let before = map.stats();
    for (key, value) in [("a", 0), ("d", 3), ("e", 4), ("f", 5)] {
        assert_eq!(map.get(key), Some(value), "{key}");
    }
    assert_eq!(map.get("b"), None);
    assert_eq!(map.get("c"), None);
    let after = map.stats();
    assert_eq!(after.slow_path_lookups, before.slow_path_lookups, "{after}");
    assert_eq!(after.read_hits, before.read_hits + 6, "{after}");
    assert_eq!(after.dirty_rebuilds, before.dirty_rebuilds, "{after}");
    assert_eq!(
        sorted_contents(&map),
        [("a", 0), ("d", 3), ("e", 4), ("f", 5)]
    );

    // c was expunged and left behind: storing it again makes a new key.
    assert_eq!(map.insert("c", 20), None);
    assert_eq!(map.get("c"), Some(20));
    assert_eq!(map.len(), 5);
}

#[test]
fn closures_run_without_the_shard_lock() {
    // The crate docs: the closures of `update` and `get_or_insert_with` run
    // without locks, so they may use the map, even the same shard, even for
    // a key still in the dirty table (found under the lock, but the closure
    // runs after unlocking). Under the lock this would deadlock.
    for threshold in [None, Some(1)] {
        let mut builder = SnapMap::<u64, u64>::builder().shards(1);
        if let Some(threshold) = threshold {
            builder = builder.promotion_threshold(threshold);
        }
        let map = std::sync::Arc::new(builder.build().unwrap());
        map.insert(1, 10);
        let _ = map.pin().iter().count(); // 1 in the view
        map.insert(2, 20); // 2 in dirty only
        map.insert(3, 30);
        let shared = std::sync::Arc::clone(&map);
        common::without_deadlock("re-entrant closures", move || {
            let map = &*shared;
            // A dirty-only key first: found on the slow path.
            let updated = map.update(&2, |v| {
                map.insert(100, 1); // a new key: takes the shard lock
                assert_eq!(map.get(&3), Some(30));
                v + 1
            });
            assert_eq!(updated, Some(21));
            let updated = map.update(&1, |v| {
                map.insert(101, 1);
                v + 1
            });
            assert_eq!(updated, Some(11));
            let pinned = map.pin();
            let made = pinned.get_or_insert_with(200, || {
                map.insert(102, 1);
                assert_eq!(map.remove(&100), Some(1));
                7
            });
            assert_eq!(*made, 7);
        });
        let mut contents: Vec<_> = map.pin().iter().map(|(k, v)| (*k, *v)).collect();
        contents.sort_unstable();
        assert_eq!(
            contents,
            [(1, 11), (2, 21), (3, 30), (101, 1), (102, 1), (200, 7)],
            "threshold {threshold:?}"
        );
        assert_eq!(map.len(), 6);
    }
}

#[test]
fn the_map_can_be_changed_while_iterating() {
    // A walk holds no lock: the walking thread itself may insert (amending
    // the shard, even the one being walked) and remove. Keys present for
    // the whole walk are yielded exactly once.
    // Under Miri (CI's Tree Borrows step) 8 shards stand for many.
    for shards in [1, if cfg!(miri) { 8 } else { 64 }] {
        let map: SnapMap<u64, u64> = SnapMap::builder().shards(shards).build().unwrap();
        for k in 0..100 {
            map.insert(k, k);
        }
        let pinned = map.pin();
        let mut seen = std::collections::HashSet::new();
        let mut order = Vec::new();
        for (i, (k, _)) in pinned.iter().enumerate() {
            assert!(seen.insert(*k), "{shards} shards: {k} yielded twice");
            order.push(*k);
            map.insert(1000 + i as u64, 0); // new keys
            map.insert(*k, 1); // overwrite the current key
            if order.len() > 50 {
                map.remove(&order[order.len() - 51]); // a key already walked
            }
        }
        drop(pinned);
        for k in 0..100 {
            assert!(seen.contains(&k), "{shards} shards: {k} missed");
        }
        assert_eq!(map.len(), map.pin().iter().count());
    }
}

thread_local! {
    /// Code that `Hooked::clone` runs (per thread).
    static CLONE_HOOK: std::cell::RefCell<Option<Box<dyn Fn()>>> =
        const { std::cell::RefCell::new(None) };
}

/// A value whose `Clone` runs `CLONE_HOOK`.
#[derive(Debug, PartialEq)]
struct Hooked(u64);

impl Clone for Hooked {
    fn clone(&self) -> Self {
        CLONE_HOOK.with(|hook| {
            if let Some(hook) = &*hook.borrow() {
                hook();
            }
        });
        Hooked(self.0)
    }
}

/// The crate docs: "User code runs under a shard lock only as `Eq` during a
/// lookup". A snapshot clones keys and values; if it did so under the
/// shard lock, a `Clone` that touches the same shard (or takes a lock that
/// a writer of that shard holds) would deadlock.
#[test]
fn snapshot_clones_run_without_the_shard_lock() {
    let map = std::sync::Arc::new(
        SnapMap::<&'static str, Hooked>::builder()
            .shards(1)
            .build()
            .unwrap(),
    );
    map.insert("a", Hooked(1));
    let _ = map.pin().iter().count(); // a in the view
    map.insert("b", Hooked(2)); // b in dirty only: looking it up takes the lock
    let shared = std::sync::Arc::clone(&map);
    let len = common::without_deadlock("a snapshot whose Clone reads the map", move || {
        let hook_map = std::sync::Arc::clone(&shared);
        CLONE_HOOK.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move || {
                assert!(hook_map.contains_key("b"));
            }))
        });
        let len = shared.snapshot().len();
        CLONE_HOOK.with(|hook| hook.borrow_mut().take());
        len
    });
    assert_eq!(len, 2);
}

/// A hasher that gives every key the same bucket in a snapshot piece
/// (bits 32 and up are 0) and one of `TAGS` tags (bits 24 to 31), so that a
/// piece has one overfull bucket whose tags repeat.
#[derive(Default)]
struct OneBucket<const TAGS: u64>(u64);

impl<const TAGS: u64> std::hash::Hasher for OneBucket<TAGS> {
    fn finish(&self) -> u64 {
        (self.0 % TAGS) << 24
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.wrapping_mul(31).wrapping_add(u64::from(b));
        }
    }
}

/// Snapshot lookups and iteration over the piece layout's edge cases:
/// an empty map, a bucket larger than a head's tags (found past the tags),
/// tags shared by many keys (each match compared by key), absent keys
/// with a matching tag, and a spread-out map with many buckets. Run under
/// Miri in CI: the lookup reads heads and entries through raw pointers.
#[test]
fn snapshot_lookups_cover_every_bucket_shape() {
    fn check<S: std::hash::BuildHasher + Clone + Default>(n: u64) {
        let map: SnapMap<u64, u64, S> = SnapMap::with_hasher(S::default());
        let empty = map.snapshot();
        assert_eq!(empty.get(&1), None);
        assert_eq!(empty.iter().count(), 0);
        for k in 0..n {
            map.insert(k, k * 10);
        }
        let snapshot = map.snapshot();
        assert_eq!(snapshot.len(), n as usize);
        for k in 0..n {
            assert_eq!(snapshot.get(&k), Some(&(k * 10)), "key {k} of {n}");
        }
        for k in n..n + 20 {
            assert_eq!(snapshot.get(&k), None, "absent key {k} of {n}");
        }
        let mut seen: Vec<u64> = snapshot
            .iter()
            .map(|(k, v)| {
                assert_eq!(*v, k * 10);
                *k
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert_eq!(snapshot.values().sum::<u64>(), (0..n).map(|k| k * 10).sum());
    }
    type Same = std::hash::BuildHasherDefault<OneBucket<1>>;
    type FewTags = std::hash::BuildHasherDefault<OneBucket<3>>;
    type Spread = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;
    // Under Miri: one head's 8 tags, one past them, and two heads' worth
    // plus one (CI's Tree Borrows step; 40 keys there cost it more).
    let sizes: &[u64] = if cfg!(miri) {
        &[1, 8, 9, 17]
    } else {
        &[1, 7, 8, 9, 12, 13, 40, 300]
    };
    for &n in sizes {
        check::<Same>(n);
        check::<FewTags>(n);
        check::<Spread>(n * 10);
    }
}

/// The owned iterator moves every key and value out of the map, once,
/// from views, dirty tables and replaced values alike (run under Miri in
/// CI: it takes entries apart by pointer).
#[test]
fn owned_into_iter_moves_every_entry_out_once() {
    let map: SnapMap<String, String> = SnapMap::builder().shard_capacity(4).build().unwrap();
    for i in 0..40 {
        map.insert(format!("k{i}"), format!("v{i}"));
    }
    // Some keys read (promoted), some replaced, some removed, some only in
    // dirty tables.
    for i in 0..20 {
        assert!(map.get(&format!("k{i}")).is_some());
    }
    for i in 10..15 {
        map.insert(format!("k{i}"), format!("w{i}"));
    }
    for i in 30..35 {
        map.remove(&format!("k{i}"));
    }
    map.insert("late".to_string(), "x".to_string());
    let mut out: Vec<(String, String)> = map.into_iter().collect();
    out.sort();
    let mut want: Vec<(String, String)> = (0..40)
        .filter(|i| !(30..35).contains(i))
        .map(|i| {
            let v = if (10..15).contains(&i) { "w" } else { "v" };
            (format!("k{i}"), format!("{v}{i}"))
        })
        .chain([("late".to_string(), "x".to_string())])
        .collect();
    want.sort();
    assert_eq!(out, want);
}

/// Reads of a map large enough for the speculative probe (a directory of
/// 2,048 slots or more; `src/shard/read_view.rs`, "Speculative probing")
/// find every key with its value, through full views (hundreds of keys per
/// view, many displaced from their home slot), and find no absent key.
#[test]
#[cfg_attr(
    miri,
    ignore = "2,048 shards: about 4 minutes under Miri even with 4,000 keys"
)]
fn speculative_reads_of_a_large_map_find_every_key_and_no_other() {
    let map: SnapMap<u64, u64> = SnapMap::builder().shards(2048).build().unwrap();
    let n = 300_000u64;
    for k in 0..n {
        map.insert(k, !k);
    }
    let pinned = map.pin();
    // Two passes: the first promotes every shard (misses), the second reads
    // the promoted views.
    for _ in 0..2 {
        for k in 0..n {
            assert_eq!(pinned.get(&k), Some(&!k), "key {k}");
        }
    }
    for k in n..2 * n {
        assert_eq!(pinned.get(&k), None, "absent key {k}");
    }
    drop(pinned);
    let stats = map.stats();
    assert!(stats.global_depth >= 11, "{stats:?}");
    assert!(stats.read_hits >= n, "{stats:?}");
}
