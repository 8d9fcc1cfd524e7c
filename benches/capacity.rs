//! How `DEFAULT_SHARD_CAPACITY` was chosen: a sweep over shard capacities.
//!
//! For each capacity: grow a map to 1M keys on one thread (total time, the
//! slowest single insert, the most entries one operation copied, splits),
//! then time read hits through a pinned handle. Run with
//! `cargo bench -p snapmap-benches --bench capacity`
//! (`SNAPMAP_BENCH_QUICK=1` for a toy size).
//! The figures are recorded in `src/migrate.rs`'s module docs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use snapmap::SnapMap;
use snapmap_benches::{Fast, mix, quick};

fn main() {
    let quick = quick();
    let n: u64 = if quick { 20_000 } else { 1_000_000 };
    let reads = if quick { 20_000 } else { 2_000_000 };
    println!(
        "{:>9} {:>10} {:>12} {:>14} {:>8} {:>8} {:>12}",
        "capacity", "grow ms", "max insert", "max copied/op", "splits", "shards", "read ns/op"
    );
    for capacity in [64usize, 128, 256, 512, 1024, 2048, 4096] {
        let map = SnapMap::<u64, u64>::builder()
            .hasher(Fast::with_seed(0))
            .shard_capacity(capacity)
            .build()
            .unwrap();
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..n {
            let t = Instant::now();
            map.insert(mix(i), i);
            slowest = slowest.max(t.elapsed());
        }
        let grow = started.elapsed();
        // Promote what the bulk load left in dirty tables, as readers would.
        for i in 0..n {
            black_box(map.get(&mix(i)));
        }
        let pinned = map.pin();
        let started = Instant::now();
        for i in 0..reads {
            black_box(pinned.get(&mix(mix(i) % n)));
        }
        let read_ns = started.elapsed().as_nanos() as f64 / reads as f64;
        drop(pinned);
        let stats = map.stats();
        println!(
            "{:>9} {:>10.0} {:>10.0}µs {:>14} {:>8} {:>8} {:>12.1}",
            capacity,
            grow.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e6,
            stats.max_entries_copied_by_one_operation,
            stats.splits,
            stats.shards,
            read_ns
        );
    }
}
