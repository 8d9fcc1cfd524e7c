//! Reloads of the whole content: `replace_all` and `restore`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use snapmap::SnapMap;

fn sorted<K: Ord + Clone, V: Clone, S>(snapshot: &snapmap::Snapshot<K, V, S>) -> Vec<(K, V)> {
    let mut all: Vec<_> = snapshot
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// A xorshift generator: each call gives a number below its argument.
fn numbers(mut state: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

#[test]
fn replace_all_writes_only_the_difference() {
    let map = SnapMap::new();
    for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
        map.insert(k, v);
    }
    let applied = map.replace_all([("a", 1), ("b", 20), ("d", 4), ("d", 5)]);
    assert_eq!(applied.unchanged, 1, "a");
    assert_eq!(applied.replaced, 1, "b");
    assert_eq!(applied.inserted, 1, "d");
    assert_eq!(applied.removed, 1, "c");
    assert_eq!(
        sorted(&map.snapshot()),
        [("a", 1), ("b", 20), ("d", 5)],
        "the last d wins"
    );

    // The same content again changes nothing (but is a batch: a write).
    let again = map.replace_all([("a", 1), ("b", 20), ("d", 5)]);
    assert_eq!(
        (
            again.unchanged,
            again.replaced,
            again.inserted,
            again.removed
        ),
        (3, 0, 0, 0)
    );

    // Empty content empties the map.
    assert_eq!(map.replace_all(std::iter::empty()).removed, 3);
    assert!(map.is_empty());
}

/// The point of diffing: a reload that changes one key of a large map
/// leaves every other shard's version alone, so the next snapshot copies
/// one shard and shares every other piece with the last snapshot.
#[test]
fn replace_all_keeps_unchanged_shards_shared_with_the_last_snapshot() {
    let map = SnapMap::new();
    let content: Vec<(u64, u64)> = (0..20_000).map(|k| (k, k)).collect();
    map.replace_all(content.iter().copied());
    let _ = map.snapshot();
    let before = map.stats();
    assert!(
        before.shards > 16,
        "a map of many shards ({})",
        before.shards
    );

    let mut reload = content.clone();
    reload[123].1 = 7;
    let applied = map.replace_all(reload);
    assert_eq!((applied.unchanged, applied.replaced), (19_999, 1));
    let snapshot = map.snapshot();
    let after = map.stats();
    assert_eq!(snapshot.get(&123), Some(&7));
    assert_eq!(
        after.snapshot_shards_copied - before.snapshot_shards_copied,
        1
    );
    assert_eq!(
        after.snapshot_shards_reused - before.snapshot_shards_reused,
        after.shards as u64 - 1,
        "every other shard's piece is shared"
    );
}

#[test]
fn restore_round_trips() {
    let map = SnapMap::new();
    for k in 0..1000u64 {
        map.insert(k, k * 10 + 1);
    }
    let good = map.snapshot();
    // A bad reload: updates, removals, new keys, and a split or two.
    for k in 0..300u64 {
        map.insert(k, 0);
    }
    for k in 300..600u64 {
        map.remove(&k);
    }
    for k in 5000..7000u64 {
        map.insert(k, 1);
    }
    let applied = map.restore(&good);
    assert_eq!(applied.unchanged, 400, "keys 600..1000 were never touched");
    assert_eq!(
        (applied.replaced, applied.inserted, applied.removed),
        (300, 300, 2000)
    );
    assert_eq!(sorted(&map.snapshot()), sorted(&good));
    assert_eq!(map.len(), 1000);
}

/// Readers on snapshots during full reloads: every reload's content has
/// `cert == key`, and each reload changes both; no snapshot shows half.
#[test]
fn snapshots_never_see_half_a_replace_all() {
    const RELOADS: u64 = 300;
    let map = Arc::new(SnapMap::new());
    let content = |version: u64| {
        (0..500u64)
            .map(|i| (format!("route{i}"), i))
            .chain([("cert".to_string(), version), ("key".to_string(), version)])
            .collect::<Vec<_>>()
    };
    map.replace_all(content(0));
    let done = AtomicBool::new(false);
    let checked = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut reader = map.reader();
                while !done.load(Ordering::Acquire) {
                    let config = reader.snapshot();
                    assert_eq!(config.get("cert"), config.get("key"), "half a reload");
                    assert_eq!(config.len(), 502);
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for version in 1..=RELOADS {
            map.replace_all(content(version));
        }
        done.store(true, Ordering::Release);
    });
    assert!(checked.load(Ordering::Relaxed) > 0);
    assert_eq!(map.get("cert"), Some(RELOADS));
}

/// A key given more than once: its last value is the one compared and
/// written, and it counts once in `Applied` (as one key).
#[test]
fn replace_all_with_a_repeated_key_keeps_its_last_value() {
    let counts = |a: snapmap::Applied| (a.unchanged, a.replaced, a.inserted, a.removed);
    let map = SnapMap::new();
    map.insert("b", 2);

    // Back to its current value: unchanged, not written twice.
    let applied = map.replace_all([("b", 20), ("b", 2)]);
    assert_eq!(counts(applied), (1, 0, 0, 0));
    assert_eq!(map.get("b"), Some(2));

    // To a new value: one replace.
    let applied = map.replace_all([("b", 2), ("b", 20)]);
    assert_eq!(counts(applied), (0, 1, 0, 0));
    assert_eq!(map.get("b"), Some(20));

    // A new key three times: one insert, the last value.
    let applied = map.replace_all([("b", 20), ("n", 1), ("n", 2), ("n", 3)]);
    assert_eq!(counts(applied), (1, 0, 1, 0));
    assert_eq!((map.get("n"), map.len()), (Some(3), 2));

    // The same pair twice: one unchanged key.
    let applied = map.replace_all([("n", 3), ("n", 3)]);
    assert_eq!(
        counts(applied),
        (1, 0, 0, 1),
        "n unchanged (once), b removed"
    );
    assert_eq!(map.get("n"), Some(3));
    assert_eq!(map.get("b"), None);
}

/// `replace_all` against a model (a `HashMap` built from the content, the
/// last value of a repeated key winning, diffed against the map's content),
/// for random reloads (new, changed, equal, repeated and missing keys) and
/// shard layouts from one key a shard (more shards than the reload's index
/// of the views has entries: 2^16) to the default.
#[test]
fn replace_all_matches_a_model() {
    use std::collections::HashMap;

    let mut next = numbers(0x9e37_79b9_7f4a_7c15);
    for (capacity, keys, reloads) in [
        (1, 120_000, 2),
        (4, 3000, 6),
        (64, 3000, 6),
        (512, 20_000, 4),
    ] {
        let map: SnapMap<u64, u64> = SnapMap::builder().shard_capacity(capacity).build().unwrap();
        let mut model: HashMap<u64, u64> = HashMap::new();
        for round in 0..reloads {
            // Keys from a range a bit larger than `keys`, so reloads add
            // and drop some; values from a small range, so many are equal.
            let mut content: Vec<(u64, u64)> = Vec::new();
            for _ in 0..keys {
                if next(10) != 0 {
                    content.push((next(keys * 5 / 4), next(4)));
                }
            }
            let new: HashMap<u64, u64> = content.iter().copied().collect();
            let unchanged = new.iter().filter(|(k, v)| model.get(k) == Some(v)).count();
            let replaced = new
                .iter()
                .filter(|(k, v)| model.get(k).is_some_and(|m| m != *v))
                .count();
            let inserted = new.keys().filter(|k| !model.contains_key(k)).count();
            let removed = model.keys().filter(|k| !new.contains_key(k)).count();

            let applied = map.replace_all(content);
            let at = format!("shard capacity {capacity}, round {round}");
            assert_eq!(
                (
                    applied.unchanged,
                    applied.replaced,
                    applied.inserted,
                    applied.removed
                ),
                (unchanged, replaced, inserted, removed),
                "{at}"
            );
            model = new;
            let mut got: Vec<_> = map.pin().iter().map(|(k, v)| (*k, *v)).collect();
            let mut want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "{at}");
            assert_eq!(map.len(), model.len(), "{at}");
        }
        if capacity == 1 {
            let shards = map.stats().shards;
            assert!(shards > 1 << 16, "more shards than index entries: {shards}");
        }
    }
}

/// `restore` compares the snapshot's entries by reference and clones only
/// the ones it writes.
#[test]
fn restore_clones_only_what_it_writes() {
    static CLONES: AtomicU64 = AtomicU64::new(0);
    #[derive(PartialEq, Debug)]
    struct Counted(u64);
    impl Clone for Counted {
        fn clone(&self) -> Self {
            CLONES.fetch_add(1, Ordering::Relaxed);
            Counted(self.0)
        }
    }

    let map = SnapMap::new();
    for k in 0..1000u64 {
        map.insert(k, Counted(k));
    }
    let good = map.snapshot();
    map.insert(7, Counted(70));
    map.remove(&8);
    let before = CLONES.load(Ordering::Relaxed);
    let applied = map.restore(&good);
    assert_eq!(
        (applied.replaced, applied.inserted, applied.unchanged),
        (1, 1, 998)
    );
    assert_eq!(
        CLONES.load(Ordering::Relaxed) - before,
        2,
        "values 7 and 8 only"
    );
    assert_eq!(map.get(&7), Some(Counted(7)));
}

/// `replace_all` while another thread's writes split and merge the shards
/// under it: the diff probes the views it took before the first item,
/// which the other thread's writes retire meanwhile. The reload's keys
/// (even) and the other thread's (odd) are disjoint, so after each reload
/// every even key holds exactly the content's value and no even key of
/// an earlier content outside this one is left. The splits and merges are
/// counted, so that the test cannot pass without them.
#[test]
fn replace_all_while_another_writer_splits_and_merges_shards() {
    const KEYS: u64 = if cfg!(miri) { 200 } else { 4_000 };
    const RELOADS: u64 = if cfg!(miri) { 4 } else { 60 };
    let map: SnapMap<u64, u64> = SnapMap::builder().shard_capacity(8).build().unwrap();
    let done = AtomicBool::new(false);
    let waves = AtomicU64::new(0);
    let mut next = numbers(0x2545_f491_4f6c_dd1d);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Odd keys, inserted and removed in waves: shards grow, split,
            // empty and merge.
            let mut wave = 0u64;
            while !done.load(Ordering::Acquire) {
                let base = (wave % 7) * KEYS;
                for i in 0..KEYS / 2 {
                    map.insert(2 * (base + i) + 1, wave);
                }
                for i in 0..KEYS / 2 {
                    map.remove(&(2 * (base + i) + 1));
                }
                wave += 1;
                waves.store(wave, Ordering::Release);
            }
        });
        while waves.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        let first_wave = waves.load(Ordering::Acquire);
        let mut previous: Vec<u64> = Vec::new();
        // At least `RELOADS` reloads, and more until the other thread has
        // finished two waves beside them (a loaded machine may not have run
        // it yet), within a deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut round = 0;
        while round < RELOADS
            || (waves.load(Ordering::Acquire) < first_wave + 2
                && std::time::Instant::now() < deadline)
        {
            round += 1;
            let mut content: Vec<(u64, u64)> = Vec::new();
            for i in 0..KEYS {
                if next(4) != 0 {
                    content.push((2 * i, next(3)));
                }
            }
            map.replace_all(content.iter().copied());
            for &(key, value) in &content {
                assert_eq!(map.get(&key), Some(value), "round {round}, key {key}");
            }
            let now: std::collections::HashSet<u64> = content.iter().map(|&(k, _)| k).collect();
            for key in previous.iter().filter(|k| !now.contains(k)) {
                assert_eq!(map.get(key), None, "round {round}: key {key} not removed");
            }
            previous = content.iter().map(|&(k, _)| k).collect();
        }
        // The other thread ran beside the reloads (a whole wave at least).
        let during = waves.load(Ordering::Acquire) - first_wave;
        done.store(true, Ordering::Release);
        assert!(
            during >= 2,
            "the other writer did not run beside the reloads ({round} reloads)"
        );
    });
    let stats = map.stats();
    assert!(
        stats.splits > 0 && stats.merges > 0,
        "no split or merge: {stats:?}"
    );
}
