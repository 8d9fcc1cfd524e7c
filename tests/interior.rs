//! Values with interior mutability: a value a reader changes through `&V`
//! (an `AtomicU64` counter, a `Mutex`) must never be copied while it is
//! shared. Until 2026-12-07 every value type that needs no drop was stored
//! inline in its entry and copied bit by bit when the entry moved into a
//! new view (a promotion, split or merge): increments made through the old
//! copy's `&AtomicU64` after the copy were lost (about 8,000 of 960,000
//! here), and one racing the copy was a data race.
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// 64 counters, each bumped 50 times in a row through one `&V`, while
/// another thread inserts and removes batches of other keys (shards of 64
/// entries, so the counters' shards promote, split and merge meanwhile).
/// Every bump must be in the map at the end.
fn bumps_survive_migrations<V: Send + Sync + 'static>(
    new: fn() -> V,
    bump: fn(&V),
    count: fn(&V) -> u64,
) {
    let map = snapmap::SnapMap::<u64, V>::builder()
        .shard_capacity(64)
        .build()
        .unwrap();
    const COUNTERS: u64 = 64;
    for k in 0..COUNTERS {
        map.pin().insert(k, new());
    }
    let stop = AtomicBool::new(false);
    let mut total = 0u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut next = 1_000_000u64;
            // Relaxed: a stop flag; nothing is read because of it.
            while !stop.load(Ordering::Relaxed) {
                let batch = if cfg!(miri) { 200 } else { 2_000 };
                for _ in 0..batch {
                    map.pin().insert(next, new());
                    next += 1;
                }
                for k in (next - batch)..next {
                    map.pin().remove(&k);
                }
            }
        });
        // Stops the other thread when this one ends, also by a panic (a
        // failed bump), so that the scope's join does not wait forever.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                // Relaxed: as above.
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        // Miri: a few rounds, enough to run the node path under its checks.
        let rounds = if cfg!(miri) { 2 } else { 300 };
        for _round in 0..rounds {
            for k in 0..COUNTERS {
                let p = map.pin();
                let value = p.get(&k).unwrap();
                for _ in 0..50 {
                    bump(value);
                    std::hint::spin_loop();
                }
                total += 50;
            }
        }
    });
    let sum: u64 = (0..COUNTERS)
        .map(|k| count(map.pin().get(&k).unwrap()))
        .sum();
    assert_eq!(sum, total, "increments lost");
    // The counters' shards did migrate while they were incremented.
    let stats = map.stats();
    assert!(
        stats.promotions + stats.splits + stats.merges > 0,
        "{stats}"
    );
}

#[test]
fn atomic_counters_keep_every_increment_across_migrations() {
    bumps_survive_migrations(
        || AtomicU64::new(0),
        // Relaxed: a counter; the sum is read after the threads are joined.
        |c| {
            c.fetch_add(1, Ordering::Relaxed);
        },
        // Relaxed: as above.
        |c| c.load(Ordering::Relaxed),
    );
}

/// A `Mutex` needs no drop either (on Linux): before the fix it was copied
/// with its lock state, so a copy made while the counter thread held the
/// lock stayed locked, and the next bump through the copy waited forever
/// (the test hung). The lock is taken with a deadline, so that such a
/// copy fails the test instead.
#[test]
fn mutex_counters_keep_every_increment_across_migrations() {
    fn locked(m: &Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match m.try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::WouldBlock) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "a Mutex value stayed locked: it was copied while held"
                    );
                    std::thread::yield_now();
                }
                Err(std::sync::TryLockError::Poisoned(_)) => panic!("poisoned"),
            }
        }
    }
    bumps_survive_migrations(|| Mutex::new(0u64), |m| *locked(m) += 1, |m| *locked(m));
}

/// The other side: `Copy` values a map stores inline on request
/// (`Builder::inline_values`) are copied by every migration, and must come
/// out of each one intact. A 16-byte struct (not a plain scalar) through
/// inserts, replacements and removals in shards of 64 entries, with reads
/// that promote, checked against a `HashMap` at every step and by a walk.
#[test]
fn copy_values_stored_inline_survive_migrations() {
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Limit {
        rate: u64,
        burst: u32,
        on: bool,
    }
    let limit = |k: u64, round: u64| Limit {
        rate: k.wrapping_mul(31) ^ round,
        burst: (k + round) as u32,
        on: (k + round) % 3 == 0,
    };
    // One initial shard, so that even Miri's few keys split it and merge
    // back.
    let map = snapmap::SnapMap::<u64, Limit>::builder()
        .shards(1)
        .shard_capacity(64)
        .inline_values(true)
        .build()
        .unwrap();
    let mut model = std::collections::HashMap::new();
    let keys = if cfg!(miri) { 160 } else { 3_000 };
    for round in 0..4u64 {
        for k in 0..keys {
            if (k + round) % 5 == 0 {
                assert_eq!(map.remove(&k), model.remove(&k));
            } else {
                assert_eq!(
                    map.insert(k, limit(k, round)),
                    model.insert(k, limit(k, round))
                );
            }
            // Reads promote dirty tables, moving the entries just written.
            let probe = k / 2;
            assert_eq!(map.get(&probe), model.get(&probe).copied());
        }
        let mut walked: Vec<(u64, Limit)> = map.pin().iter().map(|(k, v)| (*k, *v)).collect();
        walked.sort_by_key(|&(k, _)| k);
        let mut expected: Vec<(u64, Limit)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        expected.sort_by_key(|&(k, _)| k);
        assert_eq!(walked, expected, "round {round}");
    }
    // Most keys go: shards merge, moving the rest once more.
    for k in (0..keys).filter(|k| k % 10 != 0) {
        assert_eq!(map.remove(&k), model.remove(&k));
    }
    for k in 0..keys {
        assert_eq!(map.get(&k), model.get(&k).copied());
    }
    let stats = map.stats();
    assert!(
        stats.promotions > 0 && stats.splits > 0 && stats.merges > 0,
        "{stats}"
    );
}
