//! Values with interior mutability: a value a reader changes through `&V`
//! (an `AtomicU64` counter, a `Mutex`) must never be copied while it is
//! shared. Until 2026-12-07 every value type that needs no drop was stored
//! inline in its entry and copied bit by bit when the entry moved into a
//! new view (a promotion, split or merge): increments made through the old
//! copy's `&AtomicU64` after the copy were lost (about 8,000 of 960,000
//! here), and one racing the copy was a data race.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[test]
fn counters_keep_every_increment_across_migrations() {
    let map = snapmap::SnapMap::<u64, AtomicU64>::builder()
        .shard_capacity(64)
        .build()
        .unwrap();
    const COUNTERS: u64 = 64;
    for k in 0..COUNTERS {
        map.pin().insert(k, AtomicU64::new(0));
    }
    let stop = AtomicBool::new(false);
    let mut total = 0u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut next = 1_000_000u64;
            while !stop.load(Ordering::Relaxed) {
                let batch = if cfg!(miri) { 200 } else { 2_000 };
                for _ in 0..batch {
                    map.pin().insert(next, AtomicU64::new(0));
                    next += 1;
                }
                for k in (next - batch)..next {
                    map.pin().remove(&k);
                }
            }
        });
        // Miri: a few rounds, enough to run the node path under its checks.
        let rounds = if cfg!(miri) { 2 } else { 300 };
        for _round in 0..rounds {
            for k in 0..COUNTERS {
                let p = map.pin();
                let c = p.get(&k).unwrap();
                for _ in 0..50 {
                    c.fetch_add(1, Ordering::Relaxed);
                    std::hint::spin_loop();
                }
                total += 50;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let sum: u64 = (0..COUNTERS)
        .map(|k| map.pin().get(&k).unwrap().load(Ordering::Relaxed))
        .sum();
    assert_eq!(sum, total, "increments lost");
    // The counters' shards did migrate while they were incremented.
    let stats = map.stats();
    assert!(
        stats.promotions + stats.splits + stats.merges > 0,
        "{stats}"
    );
}
