//! Multi-threaded tests: several threads store, update, delete and read
//! disjoint and overlapping keys, then invariants are checked once the map
//! is quiescent. No timing is asserted; every loop is bounded.
//!
//! Every test runs under each configuration of `common::CONFIGS` (one
//! shard, the default, promotion threshold 1, tiny shard capacities), so
//! keys churn through the dirty table, promotions, rebuilds and shard
//! splits and merges while other threads use them.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use common::{CONFIGS, Counts, Rng, Tracked, wait_for_drops, wait_until_alive};
use snapmap::SnapMap;

const THREADS: usize = 4;

/// Checks the quiescent invariants: `len` equals the number of iterated
/// entries, no key is yielded twice, and `get` agrees with iteration.
fn assert_quiescent<K, V>(map: &SnapMap<K, V>, ctx: &str) -> HashMap<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + std::fmt::Debug + 'static,
    V: Clone + PartialEq + Send + Sync + std::fmt::Debug + 'static,
{
    let pinned = map.pin();
    let mut seen = HashMap::new();
    for (k, v) in &pinned {
        assert!(
            seen.insert(k.clone(), v.clone()).is_none(),
            "{ctx}: key {k:?} yielded twice"
        );
    }
    assert_eq!(map.len(), seen.len(), "{ctx}: len vs iterated count");
    assert_eq!(map.stats().len, seen.len(), "{ctx}: stats().len");
    assert_eq!(map.is_empty(), seen.is_empty(), "{ctx}: is_empty");
    for (k, v) in &seen {
        assert_eq!(
            pinned.get(k),
            Some(v),
            "{ctx}: get disagrees with iteration"
        );
    }
    seen
}

// ----- (a) no lost updates -------------------------------------------------------

#[test]
fn no_lost_updates_with_update_and_compare_and_swap() {
    const PER_THREAD: u64 = 3000;
    const COUNTER: u64 = u64::MAX;
    for config in CONFIGS {
        let map: SnapMap<u64, u64> = config.build();
        // A new key: the first increments find it in the dirty table only.
        map.insert(COUNTER, 0);
        let start = Barrier::new(THREADS);
        thread::scope(|s| {
            for t in 0..THREADS as u64 {
                let (map, start) = (&map, &start);
                s.spawn(move || {
                    start.wait();
                    for i in 0..PER_THREAD {
                        match t % 3 {
                            0 => {
                                map.update(&COUNTER, |v| v + 1).expect("counter present");
                            }
                            1 => loop {
                                let current = map.get(&COUNTER).expect("counter present");
                                if map.compare_and_swap(&COUNTER, &current, current + 1) {
                                    break;
                                }
                            },
                            _ => {
                                let pinned = map.pin();
                                pinned.update(&COUNTER, |v| v + 1).expect("counter present");
                            }
                        }
                        // Churn new keys through the same shard(s): rebuilds
                        // and promotions happen while the counter is updated.
                        if i % 8 == 0 {
                            let key = t * 1_000_000 + i;
                            map.insert(key, i);
                            assert_eq!(map.get(&key), Some(i));
                            if i % 16 == 0 {
                                assert_eq!(map.remove(&key), Some(i));
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(
            map.get(&COUNTER),
            Some(PER_THREAD * THREADS as u64),
            "{}: lost updates",
            config.name
        );
        let contents = assert_quiescent(&map, config.name);
        let churn_left = (PER_THREAD as usize).div_ceil(8) - (PER_THREAD as usize).div_ceil(16);
        assert_eq!(contents.len(), 1 + THREADS * churn_left, "{}", config.name);
    }
}

#[test]
fn compare_and_swap_on_many_keys_loses_nothing() {
    // Threads increment every key of a shared set in different orders.
    const KEYS: u32 = 64;
    const ROUNDS: u32 = 40;
    for config in CONFIGS {
        let map: SnapMap<u32, u32> = config.build();
        for k in 0..KEYS {
            map.insert(k, 0);
        }
        thread::scope(|s| {
            for t in 0..THREADS as u64 {
                let map = &map;
                s.spawn(move || {
                    let mut rng = Rng::new(t + 1);
                    for _ in 0..ROUNDS {
                        let offset = rng.below(u64::from(KEYS)) as u32;
                        for j in 0..KEYS {
                            let k = (j + offset) % KEYS;
                            let pinned = map.pin();
                            loop {
                                let current = *pinned.get(&k).expect("present");
                                if pinned.compare_and_swap(&k, &current, current + 1) {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        let contents = assert_quiescent(&map, config.name);
        for k in 0..KEYS {
            assert_eq!(
                contents[&k],
                ROUNDS * THREADS as u32,
                "{}: key {k}",
                config.name
            );
        }
    }
}

// ----- exactly-once outcomes -------------------------------------------------------

#[test]
fn try_insert_has_exactly_one_winner_per_key() {
    const KEYS: u64 = 300;
    for config in CONFIGS {
        let map: SnapMap<u64, usize> = config.build();
        let wins: Vec<AtomicUsize> = (0..KEYS).map(|_| AtomicUsize::new(0)).collect();
        let start = Barrier::new(THREADS);
        let observed: Vec<Vec<usize>> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (map, wins, start) = (&map, &wins, &start);
                    s.spawn(move || {
                        start.wait();
                        let mut seen = Vec::new();
                        for k in 0..KEYS {
                            // Alternate between the two LoadOrStore forms.
                            let value = if (k + t as u64) % 2 == 0 {
                                match map.try_insert(k, t) {
                                    Ok(()) => {
                                        wins[k as usize].fetch_add(1, Ordering::SeqCst);
                                        t
                                    }
                                    Err(rejected) => {
                                        assert_eq!(rejected, t, "handed back the offered value");
                                        map.get(&k).expect("a loaded key is present")
                                    }
                                }
                            } else {
                                let pinned = map.pin();
                                match pinned.try_insert(k, t) {
                                    Ok(&stored) => {
                                        wins[k as usize].fetch_add(1, Ordering::SeqCst);
                                        stored
                                    }
                                    Err(occupied) => *occupied.current,
                                }
                            };
                            seen.push(value);
                        }
                        seen
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for k in 0..KEYS as usize {
            assert_eq!(
                wins[k].load(Ordering::SeqCst),
                1,
                "{}: key {k}",
                config.name
            );
            let stored = map.get(&(k as u64)).expect("stored");
            for seen in &observed {
                assert_eq!(
                    seen[k], stored,
                    "{}: a thread loaded another value",
                    config.name
                );
            }
        }
        assert_eq!(assert_quiescent(&map, config.name).len(), KEYS as usize);
    }
}

#[test]
fn remove_and_compare_and_delete_succeed_exactly_once_per_key() {
    const KEYS: u64 = 300;
    for config in CONFIGS {
        let map: SnapMap<u64, u64> = config.build();
        // Half the keys promoted into the view, half new (dirty only).
        for k in 0..KEYS / 2 {
            map.insert(k, k);
        }
        let _ = map.pin().iter().count();
        for k in KEYS / 2..KEYS {
            map.insert(k, k);
        }
        let removed: Vec<AtomicUsize> = (0..KEYS).map(|_| AtomicUsize::new(0)).collect();
        let start = Barrier::new(THREADS);
        thread::scope(|s| {
            for t in 0..THREADS {
                let (map, removed, start) = (&map, &removed, &start);
                s.spawn(move || {
                    start.wait();
                    for k in 0..KEYS {
                        let hit = if t % 2 == 0 {
                            match map.remove(&k) {
                                Some(v) => {
                                    assert_eq!(v, k, "removed the wrong value");
                                    true
                                }
                                None => false,
                            }
                        } else {
                            map.compare_and_delete(&k, &k)
                        };
                        if hit {
                            removed[k as usize].fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        for (k, count) in removed.iter().enumerate() {
            assert_eq!(count.load(Ordering::SeqCst), 1, "{}: key {k}", config.name);
        }
        assert!(assert_quiescent(&map, config.name).is_empty());
    }
}

// ----- (b) every value dropped exactly once ------------------------------------

#[test]
fn every_value_is_dropped_exactly_once() {
    const OPS: usize = 6000;
    const KEYS: u64 = 24;
    for config in CONFIGS {
        let key_counts = Counts::new();
        let value_counts = Counts::new();
        let map: SnapMap<Tracked<u64>, Tracked<u64>> = config.build();
        thread::scope(|s| {
            for t in 0..THREADS as u64 {
                let (map, key_counts, value_counts) = (&map, &key_counts, &value_counts);
                s.spawn(move || {
                    let mut rng = Rng::new(0xD0 + t);
                    let key = |k: u64| key_counts.track(k);
                    let val = |v: u64| value_counts.track(v);
                    for i in 0..OPS {
                        let k = rng.below(KEYS);
                        let v = rng.below(4);
                        match rng.below(13) {
                            0 | 1 => _ = map.insert(key(k), val(v)),
                            2 => _ = map.pin().insert(key(k), val(v)),
                            3 => _ = map.remove(&key(k)),
                            4 => _ = map.try_insert(key(k), val(v)),
                            5 => _ = map.get_or_insert(key(k), val(v)),
                            6 => {
                                let pinned = map.pin();
                                let _ = pinned.get_or_insert_with(key(k), || val(v));
                            }
                            7 => _ = map.get(&key(k)),
                            8 => _ = map.compare_and_swap(&key(k), &val(v), val(v + 1)),
                            9 => _ = map.compare_and_delete(&key(k), &val(v)),
                            10 => _ = map.update(&key(k), |x| val((x.inner + 1) % 4)),
                            11 => {
                                let pinned = map.pin();
                                for (k, v) in &pinned {
                                    assert!(k.inner < KEYS || k.inner >= 1000, "key {k:?}");
                                    assert!(v.inner <= 4, "value {v:?}");
                                }
                            }
                            _ => {
                                // A fresh key outside the shared range, to
                                // force rebuilds and promotions.
                                let fresh = 1000 + t * OPS as u64 + i as u64;
                                map.insert(key(fresh), val(0));
                                if i % 3 != 0 {
                                    map.remove(&key(fresh));
                                }
                            }
                        }
                        if t == 0 && i % 1000 == 999 {
                            map.clear();
                        }
                    }
                });
            }
        });
        let len = assert_quiescent(&map, config.name).len();
        // Once retired values are collected, exactly the stored ones live.
        wait_until_alive(&value_counts, len);
        drop(map);
        wait_for_drops(&value_counts);
        wait_for_drops(&key_counts);
        assert!(
            value_counts.created() > OPS,
            "{}: the test made values",
            config.name
        );
    }
}

// ----- (c) iteration during stores and deletes ------------------------------------

#[test]
fn iteration_sees_stable_keys_exactly_once_during_churn() {
    const STABLE: u64 = 150;
    const CHURN: u64 = 300;
    const WALKS: usize = 30;
    for config in CONFIGS {
        let map: SnapMap<u64, u64> = config.build();
        // Stable keys: present for the whole test, values always k * 1000 + n.
        for k in 0..STABLE {
            map.insert(k, k * 1000);
        }
        let walkers_done = AtomicUsize::new(0);
        thread::scope(|s| {
            // Two writers: churn keys come and go, stable keys get new values.
            for w in 0..2u64 {
                let (map, walkers_done) = (&map, &walkers_done);
                s.spawn(move || {
                    let mut rng = Rng::new(0xC0 + w);
                    let mut round = 0u64;
                    // Bounded: stop once the walkers are done, or after a cap.
                    while walkers_done.load(Ordering::SeqCst) < 2 && round < 200 {
                        round += 1;
                        for i in 0..CHURN / 2 {
                            let k = STABLE + w * (CHURN / 2) + i;
                            map.insert(k, k * 1000 + round);
                        }
                        for _ in 0..20 {
                            let k = rng.below(STABLE);
                            map.insert(k, k * 1000 + round);
                            map.update(&k, |v| v + 1);
                        }
                        for i in 0..CHURN / 2 {
                            let k = STABLE + w * (CHURN / 2) + i;
                            if rng.below(2) == 0 {
                                map.remove(&k);
                            } else {
                                map.compare_and_delete(&k, &(k * 1000 + round));
                            }
                        }
                    }
                });
            }
            // Two walkers.
            for _ in 0..2 {
                let (map, walkers_done) = (&map, &walkers_done);
                s.spawn(move || {
                    for walk in 0..WALKS {
                        let pinned = map.pin();
                        let mut seen = HashSet::new();
                        for (k, v) in &pinned {
                            assert!(seen.insert(*k), "walk {walk}: key {k} yielded twice");
                            assert_eq!(v / 1000, *k, "key {k} has another key's value {v}");
                            assert!(*k < STABLE + CHURN, "unknown key {k}");
                        }
                        for k in 0..STABLE {
                            assert!(seen.contains(&k), "walk {walk}: stable key {k} missed");
                        }
                        // Keys and values agree with the pairs.
                        assert_eq!(
                            pinned.keys().filter(|k| **k < STABLE).count(),
                            STABLE as usize
                        );
                    }
                    walkers_done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        // Churn keys may remain (a compare_and_delete can miss after an
        // update); whatever is left, len must equal the walk.
        let contents = assert_quiescent(&map, config.name);
        for k in 0..STABLE {
            assert!(
                contents.contains_key(&k),
                "{}: stable key {k} lost",
                config.name
            );
        }
    }
}

// ----- (d) len under mixed traffic, including clear --------------------------------

#[test]
fn len_matches_iteration_after_mixed_traffic_with_clear() {
    const OPS: usize = 8000;
    const KEYS: u64 = 64;
    for config in CONFIGS {
        let map: SnapMap<u64, u64> = config.build();
        thread::scope(|s| {
            for t in 0..THREADS as u64 {
                let map = &map;
                s.spawn(move || {
                    let mut rng = Rng::new(0xA0 + t);
                    for i in 0..OPS {
                        let k = rng.below(KEYS);
                        let v = rng.below(3);
                        match rng.below(9) {
                            0 | 1 => _ = map.insert(k, v),
                            2 => _ = map.remove(&k),
                            3 => _ = map.try_insert(k, v),
                            4 => _ = map.compare_and_swap(&k, &v, (v + 1) % 3),
                            5 => _ = map.compare_and_delete(&k, &v),
                            6 => _ = map.update(&k, |x| (x + 1) % 3),
                            7 => _ = map.get(&k),
                            _ => _ = map.pin().iter().count(),
                        }
                        if t == 1 && i % 500 == 250 {
                            map.clear();
                        }
                    }
                });
            }
        });
        let contents = assert_quiescent(&map, config.name);
        assert!(contents.values().all(|v| *v < 3), "{}", config.name);
        assert!(contents.keys().all(|k| *k < KEYS), "{}", config.name);
        // The map still works normally.
        map.clear();
        assert!(assert_quiescent(&map, config.name).is_empty());
        for k in 0..KEYS {
            map.insert(k, k);
        }
        assert_eq!(assert_quiescent(&map, config.name).len(), KEYS as usize);
    }
}

#[test]
fn disjoint_writers_and_readers() {
    // Each writer owns a key range; readers check that a key, once seen,
    // only ever moves forward in value (values are per-key version counts).
    const PER_WRITER: u64 = 200;
    const VERSIONS: u64 = 5;
    for config in CONFIGS {
        let map: SnapMap<u64, u64> = config.build();
        let writers_done = AtomicUsize::new(0);
        thread::scope(|s| {
            for w in 0..2u64 {
                let (map, writers_done) = (&map, &writers_done);
                s.spawn(move || {
                    for version in 0..VERSIONS {
                        for i in 0..PER_WRITER {
                            let k = w * PER_WRITER + i;
                            let previous = map.insert(k, version);
                            let expected = version.checked_sub(1);
                            assert_eq!(previous, expected, "owner saw a foreign write");
                        }
                    }
                    writers_done.fetch_add(1, Ordering::SeqCst);
                });
            }
            for r in 0..2u64 {
                let (map, writers_done) = (&map, &writers_done);
                s.spawn(move || {
                    let mut last = vec![0u64; (2 * PER_WRITER) as usize];
                    let mut rng = Rng::new(0xB0 + r);
                    let mut reads = 0;
                    while writers_done.load(Ordering::SeqCst) < 2 || reads < 2000 {
                        reads += 1;
                        let k = rng.below(2 * PER_WRITER);
                        if let Some(v) = map.get(&k) {
                            assert!(
                                v >= last[k as usize],
                                "key {k} went back from {} to {v}",
                                last[k as usize]
                            );
                            assert!(v < VERSIONS);
                            last[k as usize] = v;
                        }
                        if reads > 1_000_000 {
                            break;
                        }
                    }
                });
            }
        });
        let contents = assert_quiescent(&map, config.name);
        assert_eq!(contents.len(), (2 * PER_WRITER) as usize, "{}", config.name);
        assert!(
            contents.values().all(|v| *v == VERSIONS - 1),
            "{}",
            config.name
        );
    }
}

// ----- per-thread models on disjoint keys ------------------------------------------

#[test]
fn each_thread_reads_its_own_writes_under_protocol_churn() {
    // Every thread owns a few keys and keeps its own model of them. Since no
    // other thread touches them, every result must match the model exactly,
    // while the other threads' operations on the same shard(s) keep
    // promoting, rebuilding and expunging underneath.
    const OWN_KEYS: u64 = 6;
    const OPS: usize = 10_000;
    for config in CONFIGS {
        let map: SnapMap<u64, u64> = config.build();
        let start = Barrier::new(THREADS);
        thread::scope(|s| {
            for t in 0..THREADS as u64 {
                let (map, start) = (&map, &start);
                let name = config.name;
                s.spawn(move || {
                    let mut rng = Rng::new(0xE0 + t);
                    let mut model: HashMap<u64, u64> = HashMap::new();
                    start.wait();
                    for i in 0..OPS {
                        let k = t * 100 + rng.below(OWN_KEYS);
                        let v = rng.below(4);
                        let ctx = || format!("{name}: thread {t}, op {i}, key {k}");
                        match rng.below(10) {
                            0 | 1 => assert_eq!(map.insert(k, v), model.insert(k, v), "{}", ctx()),
                            2 => assert_eq!(map.remove(&k), model.remove(&k), "{}", ctx()),
                            3 => {
                                let expected = match model.get(&k) {
                                    Some(_) => Err(v),
                                    None => {
                                        model.insert(k, v);
                                        Ok(())
                                    }
                                };
                                assert_eq!(map.try_insert(k, v), expected, "{}", ctx());
                            }
                            4 => {
                                let swapped = model.get(&k) == Some(&v);
                                if swapped {
                                    model.insert(k, v + 1);
                                }
                                assert_eq!(
                                    map.compare_and_swap(&k, &v, v + 1),
                                    swapped,
                                    "{}",
                                    ctx()
                                );
                            }
                            5 => {
                                let deleted = model.get(&k) == Some(&v);
                                if deleted {
                                    model.remove(&k);
                                }
                                assert_eq!(map.compare_and_delete(&k, &v), deleted, "{}", ctx());
                            }
                            6 => {
                                let updated = model.get_mut(&k).map(|x| {
                                    *x = (*x + 1) % 4;
                                    *x
                                });
                                assert_eq!(map.update(&k, |x| (x + 1) % 4), updated, "{}", ctx());
                            }
                            7 => {
                                // A fresh key (never reused): forces new-key
                                // rebuilds and dirty lookups in the shard.
                                let fresh = 1_000_000 + t * 1_000_000 + i as u64;
                                assert_eq!(map.insert(fresh, 0), None, "{}", ctx());
                                assert_eq!(map.get(&fresh), Some(0), "{}", ctx());
                                assert_eq!(map.remove(&fresh), Some(0), "{}", ctx());
                            }
                            _ => assert_eq!(map.get(&k), model.get(&k).copied(), "{}", ctx()),
                        }
                    }
                    for k in t * 100..t * 100 + OWN_KEYS {
                        assert_eq!(
                            map.get(&k),
                            model.get(&k).copied(),
                            "{name}: final, key {k}"
                        );
                    }
                    model.len()
                });
            }
        });
        let contents = assert_quiescent(&map, config.name);
        assert!(
            contents.keys().all(|k| *k < 1_000_000),
            "{}: a fresh key survived",
            config.name
        );
    }
}

#[test]
fn stores_survive_unless_a_clear_overlaps() {
    // Writers store and read back their own keys while one thread clears.
    // A read-back may miss only if a clear was in flight or started in the
    // meantime; a store that "succeeds" into an entry a clear has already
    // detached would be lost and show up as a miss with no clear around.
    const ROUNDS: u64 = 6000;
    const WRITERS: usize = THREADS - 1;
    for config in CONFIGS {
        let map: SnapMap<u64, u64> = config.build();
        let clears_started = AtomicUsize::new(0);
        let clears_finished = AtomicUsize::new(0);
        let writers_done = AtomicUsize::new(0);
        let start = Barrier::new(THREADS);
        thread::scope(|s| {
            for w in 0..WRITERS as u64 {
                let (map, started, finished, done, start) = (
                    &map,
                    &clears_started,
                    &clears_finished,
                    &writers_done,
                    &start,
                );
                s.spawn(move || {
                    start.wait();
                    for round in 0..ROUNDS {
                        let k = w * 10 + round % 4;
                        let finished_before = finished.load(Ordering::SeqCst);
                        map.insert(k, round);
                        let read = map.get(&k);
                        let removed = (round % 3 == 0).then(|| map.remove(&k));
                        let clear_overlapped = started.load(Ordering::SeqCst) > finished_before;
                        let name = config.name;
                        if clear_overlapped {
                            assert!(read.is_none() || read == Some(round), "{name}: key {k}");
                        } else {
                            assert_eq!(read, Some(round), "{name}: store {round} to {k} lost");
                            if let Some(removed) = removed {
                                assert_eq!(removed, Some(round), "{name}: key {k}");
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            let (map, started, finished, done, start) = (
                &map,
                &clears_started,
                &clears_finished,
                &writers_done,
                &start,
            );
            s.spawn(move || {
                start.wait();
                // At least one clear, then until the writers are done.
                for _ in 0..1_000_000 {
                    started.fetch_add(1, Ordering::SeqCst);
                    map.clear();
                    finished.fetch_add(1, Ordering::SeqCst);
                    if done.load(Ordering::SeqCst) == WRITERS {
                        break;
                    }
                    thread::yield_now();
                }
            });
        });
        assert!(
            clears_finished.load(Ordering::SeqCst) > 0,
            "{}",
            config.name
        );
        assert_quiescent(&map, config.name);
    }
}
