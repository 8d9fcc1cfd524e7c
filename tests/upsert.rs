//! The upsert family, `retain` and `reserve` under concurrent writers, in
//! every configuration of `common::CONFIGS` (the single-threaded semantics
//! are checked against a model in `tests/model.rs`).
//!
//! - `update_or_insert`, `update_or_insert_with` and `compute` from several
//!   threads lose no update: each is one linearizable step, retried when it
//!   loses a race, so a shared counter ends at the number of calls.
//! - `retain` removes a key only if it still holds the value the predicate
//!   rejected: a value written after the predicate looked survives.
//! - `reserve` during concurrent inserts loses nothing.

mod common;

use std::sync::Arc;
use std::thread;

use common::for_each_config;
use snapmap::{Compute, Operation, SnapMap};

const THREADS: u64 = 4;
const CALLS: u64 = 2_000;
const KEYS: u64 = 8;

#[test]
fn concurrent_upserts_lose_no_update() {
    for_each_config::<u64, u64>(|config, map| {
        let map = Arc::new(map);
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let map = Arc::clone(&map);
                thread::spawn(move || {
                    for i in 0..CALLS {
                        let key = (i + t) % KEYS;
                        match i % 3 {
                            0 => _ = map.update_or_insert(key, |n| n + 1, 1),
                            1 => _ = map.update_or_insert_with(key, |n| n + 1, || 1),
                            _ => match map.compute(key, |n| {
                                Operation::<u64, ()>::Insert(n.map_or(1, |n| n + 1))
                            }) {
                                Compute::Inserted(1) | Compute::Updated { .. } => {}
                                other => panic!("unexpected {other:?}"),
                            },
                        }
                        // Removals that the upserts must not undo or double:
                        // remove and re-add a key's count in one step.
                        if i % 97 == 0 {
                            if let Some(n) = map.remove(&KEYS) {
                                map.update_or_insert(KEYS, |m| m + n, n);
                            }
                            map.update_or_insert(KEYS, |m| m + 1, 1);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let total: u64 = map.pin().values().sum();
        let extra = THREADS * CALLS.div_ceil(97);
        assert_eq!(total, THREADS * CALLS + extra, "{}", config.name);
    });
}

#[test]
fn retain_keeps_values_written_after_the_predicate_looked() {
    for_each_config::<u64, u64>(|config, map| {
        const N: u64 = 2_000;
        let map = Arc::new(map);
        // Odd values are rejected; the writer overwrites every key with an
        // even value while retain runs. A key the writer has written must
        // survive: retain may only remove the odd value it saw.
        for k in 0..N {
            map.insert(k, 2 * k + 1);
        }
        let writer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                for k in (0..N).rev() {
                    map.insert(k, 2 * k);
                }
            })
        };
        map.retain(|_, v| v % 2 == 0);
        writer.join().unwrap();
        for k in 0..N {
            assert_eq!(map.get(&k), Some(2 * k), "{}: key {k}", config.name);
        }
        // And with no writer, retain removes exactly the rejected ones.
        map.retain(|k, _| k % 3 != 0);
        assert_eq!(map.len() as u64, N - N.div_ceil(3), "{}", config.name);
        assert!((0..N).all(|k| map.contains_key(&k) == (k % 3 != 0)));
    });
}

#[test]
fn reserve_during_inserts_loses_nothing() {
    for_each_config::<u64, u64>(|config, map| {
        const N: u64 = 4_000;
        let map = Arc::new(map);
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let map = Arc::clone(&map);
                thread::spawn(move || {
                    for k in (t..N).step_by(2) {
                        map.insert(k, k);
                    }
                })
            })
            .collect();
        for _ in 0..4 {
            map.reserve(N as usize);
        }
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(map.len() as u64, N, "{}", config.name);
        assert!((0..N).all(|k| map.get(&k) == Some(k)), "{}", config.name);
        let snapshot = map.snapshot();
        assert_eq!(snapshot.len() as u64, N, "{}", config.name);
    });
}

#[test]
fn reserve_presizes_like_the_builder() {
    let map: SnapMap<u64, u64> = SnapMap::builder().shards(1).build().unwrap();
    map.reserve(100_000);
    let reserved = map.stats().shards;
    let built = SnapMap::<u64, u64>::with_capacity(100_000).stats().shards;
    assert_eq!(reserved, built);
    let splits = map.stats().splits;
    for k in 0..100_000 {
        map.insert(k, k);
    }
    assert_eq!(map.stats().splits, splits, "the load split a shard");
}

/// `retain` removes by identity (the value its predicate saw), and a
/// promotion in the middle of the walk moves every entry to a copy
/// without changing any value (`docs/ARCHITECTURE.md`, section 3, the
/// sealing protocol). An inline value's copy sits at another address, so
/// `retain` must ask its predicate again rather than keep the key: here
/// the predicate itself triggers the promotion (a miss with a promotion
/// threshold of 1) and rejects every entry, so every entry must go.
#[test]
fn retain_removes_entries_that_a_promotion_moved_during_the_walk() {
    let map: SnapMap<u64, u64> = SnapMap::builder()
        .shards(1)
        .promotion_threshold(1)
        .build()
        .unwrap();
    for k in 0..64 {
        map.insert(k, k);
    }
    assert_eq!(map.get(&0), Some(0)); // promotes: every key is in the view
    map.insert(1000, 1000); // a new key: dirty rebuilt, the view amended
    let mut promoted = false;
    map.pin().retain(|_, _| {
        if !promoted {
            promoted = true;
            // A miss on a key only in dirty promotes: every entry the
            // walk has yet to reach (and the ones it passed) is moved.
            assert_eq!(map.get(&1000), Some(1000));
        }
        false
    });
    assert!(promoted);
    assert_eq!(
        map.len(),
        0,
        "retain kept {:?}",
        map.pin().iter().collect::<Vec<_>>()
    );
}
