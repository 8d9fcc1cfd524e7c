//! Snapshots and batches: one point in time, all-or-nothing batches,
//! structural sharing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use snapmap::{Batch, SnapMap, Snapshot};

const ACCOUNTS: u64 = 64;
const START: i64 = 1_000;

fn configs() -> Vec<(&'static str, SnapMap<u64, i64>)> {
    vec![
        ("1 shard", SnapMap::builder().shards(1).build().unwrap()),
        ("16 shards", SnapMap::builder().shards(16).build().unwrap()),
        (
            "capacity 4 (splits and merges during the run)",
            SnapMap::builder()
                .shards(1)
                .shard_capacity(4)
                .build()
                .unwrap(),
        ),
    ]
}

/// Clears `running` if the thread holding it panics, so that the other
/// threads of a test stop and the failure is reported instead of hanging
/// the scope that waits for them.
struct StopAllOnPanic<'a>(&'a AtomicBool);

impl Drop for StopAllOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(false, Ordering::Relaxed);
        }
    }
}

/// A tiny xorshift, so the test needs no random-number crate.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Moves money between random accounts, one batch of two updates per
/// transfer, until `running` clears or at least `min_transfers` were made
/// and `min_checked` snapshots checked (asserting that snapshots are not
/// starved meanwhile).
fn transfer(
    name: &str,
    map: &SnapMap<u64, i64>,
    running: &AtomicBool,
    checked: &AtomicU64,
    seed: u64,
    (min_transfers, min_checked): (u64, u64),
) {
    let _stop = StopAllOnPanic(running);
    let mut rng = seed;
    let started = std::time::Instant::now();
    let mut transfers = 0;
    while running.load(Ordering::Relaxed)
        && (transfers < min_transfers || checked.load(Ordering::Relaxed) < min_checked)
    {
        assert!(
            started.elapsed().as_secs() < 60,
            "{name}: snapshots are starved: {} in 60 s",
            checked.load(Ordering::Relaxed)
        );
        transfers += 1;
        let from = next(&mut rng) % ACCOUNTS;
        let to = next(&mut rng) % ACCOUNTS;
        let amount = (next(&mut rng) % 50) as i64;
        map.batch(|m| {
            m.update(&from, |balance| balance - amount)
                .expect("account present");
            m.update(&to, |balance| balance + amount)
                .expect("account present");
        });
    }
}

/// Takes snapshots until `running` is cleared, checking each: every
/// account present, the balances summing to `total` by lookups and by
/// iteration; counts them in `checked`.
fn check_snapshots(
    name: &str,
    map: &SnapMap<u64, i64>,
    running: &AtomicBool,
    checked: &AtomicU64,
    total: i64,
) {
    let _stop = StopAllOnPanic(running);
    while running.load(Ordering::Relaxed) {
        let snapshot = map.snapshot();
        let sum: i64 = (0..ACCOUNTS)
            .map(|a| {
                *snapshot
                    .get(&a)
                    .expect("every account is in every snapshot")
            })
            .sum();
        assert_eq!(sum, total, "{name}: a snapshot saw half a transfer");
        let iterated: i64 = snapshot
            .iter()
            .filter(|(k, _)| **k < ACCOUNTS)
            .map(|(_, v)| v)
            .sum();
        assert_eq!(iterated, total, "{name}: iteration disagrees with lookups");
        checked.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writers move money between accounts, each transfer a batch of two
/// updates; a churn thread inserts and removes unrelated keys (splitting and
/// merging shards); snapshot takers check every snapshot: the accounts sum
/// to the constant and all are present. A snapshot holding half a transfer
/// would break the sum.
#[test]
fn bank_transfers_in_batches_are_never_half_seen_by_snapshots() {
    for (name, map) in configs() {
        for account in 0..ACCOUNTS {
            map.insert(account, START);
        }
        let total = START * ACCOUNTS as i64;
        let running = AtomicBool::new(true);
        let snapshots_checked = AtomicU64::new(0);
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..2u64)
                .map(|writer| {
                    let (map, running) = (&map, &running);
                    let checked = &snapshots_checked;
                    // Keep transferring until enough snapshots were taken
                    // while transfers were running.
                    scope.spawn(move || {
                        let seed = 0x9E37_79B9_7F4A_7C15 ^ (writer + 1);
                        transfer(name, map, running, checked, seed, (2_000, 100));
                    })
                })
                .collect();
            {
                let (map, running) = (&map, &running);
                scope.spawn(move || {
                    let mut round = 0u64;
                    while running.load(Ordering::Relaxed) {
                        for i in 0..200 {
                            map.insert(1 << 40 | round << 20 | i, 0);
                        }
                        for i in 0..200 {
                            map.remove(&(1 << 40 | round << 20 | i));
                        }
                        round += 1;
                    }
                });
            }
            for _ in 0..2 {
                let (map, running, checked) = (&map, &running, &snapshots_checked);
                scope.spawn(move || check_snapshots(name, map, running, checked, total));
            }
            for writer in writers {
                writer.join().unwrap();
            }
            running.store(false, Ordering::Relaxed);
        });
        let checked = snapshots_checked.load(Ordering::Relaxed);
        assert!(
            checked > 10,
            "{name}: only {checked} snapshots were checked"
        );
        let stats = map.stats();
        if name.starts_with("capacity") {
            assert!(
                stats.splits > 0 && stats.merges > 0,
                "{name}: no migration during the run: {stats}"
            );
        }
        let final_sum: i64 = (0..ACCOUNTS).map(|a| map.get(&a).unwrap()).sum();
        assert_eq!(final_sum, total);
    }
}

/// Single (unbatched) writes are ordered too: a writer sets `a` then `b`
/// to the same round number; every snapshot has `b <= a <= b + 1`.
#[test]
fn snapshots_respect_the_order_of_single_writes() {
    let map: SnapMap<&'static str, u64> = SnapMap::builder().shards(4).build().unwrap();
    map.insert("a", 0);
    map.insert("b", 0);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 1..=20_000 {
                map.insert("a", round);
                map.insert("b", round);
            }
            done.store(true, Ordering::Release);
        });
        scope.spawn(|| {
            let mut checked = 0;
            while !done.load(Ordering::Acquire) || checked < 10 {
                let s = map.snapshot();
                let (a, b) = (*s.get("a").unwrap(), *s.get("b").unwrap());
                assert!(b <= a && a <= b + 1, "snapshot saw a = {a}, b = {b}");
                checked += 1;
            }
        });
    });
}

#[test]
fn unchanged_map_returns_the_same_snapshot() {
    let map: SnapMap<u64, u64> = (0..1_000).map(|i| (i, i)).collect();
    let first = map.snapshot();
    for _ in 0..10 {
        assert!(map.get(&5).is_some()); // reads do not change anything
        assert!(Snapshot::ptr_eq(&first, &map.snapshot()));
    }
    assert_eq!(map.stats().snapshot_builds, 1);
    map.insert(5, 50);
    let second = map.snapshot();
    assert!(!Snapshot::ptr_eq(&first, &second));
    assert_eq!((first.get(&5), second.get(&5)), (Some(&5), Some(&50)));
}

/// The structural-sharing figure: after one write to a 1M-key map,
/// the next snapshot copies one shard and reuses every other.
#[test]
fn one_write_to_a_1m_map_copies_one_shard() {
    let map: SnapMap<u64, u64> = SnapMap::new();
    for i in 0..1_000_000 {
        map.insert(i, i);
    }
    let first = map.snapshot();
    assert_eq!(first.len(), 1_000_000);
    let before = map.stats();
    map.insert(123_456, 0);
    let second = map.snapshot();
    let after = map.stats();
    let copied = after.snapshot_shards_copied - before.snapshot_shards_copied;
    let reused = after.snapshot_shards_reused - before.snapshot_shards_reused;
    assert_eq!(
        copied, 1,
        "one write made the snapshot copy {copied} shards: {after}"
    );
    assert_eq!(reused as usize, after.shards - 1, "{after}");
    assert_eq!(second.get(&123_456), Some(&0));
    assert_eq!(first.get(&123_456), Some(&123_456));
    assert_eq!(second.len(), 1_000_000);
}

#[test]
fn snapshot_api() {
    let map: SnapMap<String, u32> = SnapMap::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        map.insert(name.to_string(), i as u32);
    }
    let s = map.snapshot();
    assert_eq!(s.len(), 3);
    assert!(!s.is_empty());
    assert_eq!(s.get("b"), Some(&1));
    assert!(s.contains_key("c") && !s.contains_key("z"));
    assert_eq!(s.get_key_value("a"), Some((&"a".to_string(), &0)));
    let mut keys: Vec<&String> = s.keys().collect();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(s.values().sum::<u32>(), 3);
    assert_eq!(s.iter().len(), 3);
    let collected: HashMap<String, u32> = (&s).into_iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(collected.len(), 3);
    let debug = format!("{s:?}");
    assert!(
        debug.contains("\"a\": 0") && debug.starts_with('{'),
        "{debug}"
    );
    let clone = s.clone();
    assert!(Snapshot::ptr_eq(&s, &clone));
    // A snapshot outlives its map.
    drop(map);
    assert_eq!(clone.get("a"), Some(&0));
    // And moves to other threads.
    std::thread::spawn(move || assert_eq!(clone.len(), 3))
        .join()
        .unwrap();
}

#[test]
fn apply_reports_and_is_visible_at_once() {
    let map: SnapMap<u64, u64> = SnapMap::builder().shards(4).build().unwrap();
    map.insert(1, 1);
    map.insert(2, 2);
    let mut batch = Batch::new();
    batch.insert(1, 10).insert(3, 30).remove(2).remove(99);
    let applied = map.apply(batch);
    assert_eq!(
        (applied.inserted, applied.replaced, applied.removed),
        (1, 1, 1)
    );
    let s = map.snapshot();
    let mut entries: Vec<(u64, u64)> = s.iter().map(|(k, v)| (*k, *v)).collect();
    entries.sort();
    assert_eq!(entries, [(1, 10), (3, 30)]);
}

#[test]
#[should_panic(expected = "inside a batch")]
fn snapshot_inside_a_batch_panics_instead_of_deadlocking() {
    let map: SnapMap<u64, u64> = SnapMap::new();
    map.batch(|_| {
        let _ = map.snapshot();
    });
}

#[test]
fn writes_inside_a_batch_closure_through_the_map_join_the_batch() {
    let map: SnapMap<u64, u64> = SnapMap::new();
    map.batch(|m| {
        m.insert(1, 1);
        map.insert(2, 2); // same thread, nested: part of the batch
    });
    assert_eq!(map.snapshot().len(), 2);
}

/// `Snapshot` serialises as a map (feature `serde`).
#[cfg(feature = "serde")]
#[test]
fn snapshot_serializes_as_a_map() {
    let map: SnapMap<String, u32> = SnapMap::new();
    map.insert("a".into(), 1);
    map.insert("b".into(), 2);
    let json = serde_json::to_string(&map.snapshot()).unwrap();
    let back: HashMap<String, u32> = serde_json::from_str(&json).unwrap();
    assert_eq!(
        back,
        HashMap::from([("a".to_string(), 1), ("b".to_string(), 2)])
    );
}

/// Snapshots after every few writes of a map that keeps splitting and
/// merging: each is exactly the map at that moment. Between two builds
/// either the directory's layout is unchanged (the build copies only the
/// shards on the list of changed shards, reusing every other piece) or a
/// split or merge changed it (the build lists every shard). Both paths
/// are taken here (about half the builds each, checked by hand with a
/// print in the build).
#[test]
fn snapshots_follow_splits_and_merges_exactly() {
    let map: SnapMap<u64, u64> = SnapMap::builder().shard_capacity(8).build().unwrap();
    let mut model = std::collections::BTreeMap::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut builds = 0;
    for round in 0..400u64 {
        // Grow for a while, then shrink, then grow: splits, then merges.
        let grow = (round / 100) % 2 == 0;
        for _ in 0..(next() % 6) {
            let key = next() % 600;
            if grow || next() % 4 == 0 {
                map.insert(key, round);
                model.insert(key, round);
            } else {
                map.remove(&key);
                model.remove(&key);
            }
        }
        let before = map.stats();
        let snapshot = map.snapshot();
        let after = map.stats();
        let _ = (&before, &after);
        let frozen: std::collections::BTreeMap<u64, u64> =
            snapshot.iter().map(|(&k, &v)| (k, v)).collect();
        assert_eq!(frozen, model, "round {round}");
        assert_eq!(snapshot.len(), model.len(), "round {round}");
        for (k, v) in &model {
            assert_eq!(snapshot.get(k), Some(v), "round {round}, key {k}");
        }
        if after.snapshot_builds > before.snapshot_builds {
            builds += 1;
        }
    }
    assert!(builds > 100, "{builds} builds");
}

/// A snapshot of a map whose key and value are both zero-sized holds at
/// most one entry; a lookup that finds no tag in its bucket used to
/// measure the bucket with `offset_from`, which panics for a zero-sized
/// `(K, V)` (regression test: a miss in an empty `SnapMap<(), ()>`
/// snapshot panicked).
#[test]
fn snapshots_of_zero_sized_keys_and_values() {
    let map: SnapMap<(), ()> = SnapMap::new();
    let empty = map.snapshot();
    assert_eq!(empty.get(&()), None);
    assert_eq!(map.reader().get(&()), None);
    map.insert((), ());
    let one = map.snapshot();
    assert_eq!(one.get(&()), Some(&()));
    assert_eq!(one.len(), 1);
    assert_eq!(one.iter().count(), 1);
    assert_eq!(empty.get(&()), None);
    map.remove(&());
    assert_eq!(map.snapshot().get(&()), None);
    assert_eq!(one.get(&()), Some(&()));
}

/// The write gate's stripes belong to the threads numbered below their
/// count (64): such a thread counts itself in with a plain store, and the
/// threads numbered past it share a counter per stripe. Here 72 idle
/// threads hold the low numbers while two writers, numbered past them,
/// move money in batches and two snapshot takers check the sum: a cut that
/// missed a writer on a shared counter would see half a transfer.
#[test]
fn writers_numbered_past_the_gate_stripes_are_waited_for() {
    const IDLE: usize = 72;
    let map: SnapMap<u64, i64> = SnapMap::builder().shards(4).build().unwrap();
    for account in 0..ACCOUNTS {
        map.insert(account, START);
    }
    let total = START * ACCOUNTS as i64;
    let holders = std::sync::Barrier::new(IDLE + 1);
    let release = AtomicBool::new(false);
    let running = AtomicBool::new(true);
    let checked = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..IDLE {
            let (map, holders, release) = (&map, &holders, &release);
            scope.spawn(move || {
                // A write takes the thread's number (and keeps it while
                // the thread lives).
                map.remove(&u64::MAX);
                holders.wait();
                while !release.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
        }
        holders.wait();
        let writers: Vec<_> = (0..2u64)
            .map(|writer| {
                let (map, running, checked) = (&map, &running, &checked);
                scope.spawn(move || {
                    let seed = 0x5851_F42D_4C95_7F2D ^ (writer + 1);
                    transfer(
                        "past the stripes",
                        map,
                        running,
                        checked,
                        seed,
                        (20_000, 2_000),
                    );
                })
            })
            .collect();
        for _ in 0..2 {
            let (map, running, checked) = (&map, &running, &checked);
            scope.spawn(move || check_snapshots("past the stripes", map, running, checked, total));
        }
        for writer in writers {
            writer.join().unwrap();
        }
        running.store(false, Ordering::Relaxed);
        release.store(true, Ordering::Relaxed);
    });
    assert!(checked.load(Ordering::Relaxed) >= 100);
    let final_sum: i64 = (0..ACCOUNTS).map(|a| map.get(&a).unwrap()).sum();
    assert_eq!(final_sum, total);
}
