//! Allocation counts on the read path, with a counting global allocator.
//!
//! The allocator (the workspace's `snapmap-counting-alloc`) counts per
//! thread (a const-initialised thread-local, which itself never allocates),
//! so tests running in parallel in this binary do not see each other's
//! allocations.
//!
//! After warm-up (keys inserted and promoted, the shards walked once, the
//! thread pinned once so crossbeam-epoch has registered it), a read hit
//! through `Pinned::get`, a `SnapMap::get` of a `Copy` value and a full
//! `Pinned::iter` walk must allocate nothing. An update of an existing key
//! must allocate (one value node) while the thread's cache of released
//! blocks is empty: that proves the counter works. Once the epoch has
//! released earlier nodes, updates take their nodes from that cache
//! (`src/pool.rs`) and allocate almost nothing.
//!
//! A new key with a plain value (`u64`) takes one allocation, entry and
//! value together; with a value that can change through `&V`
//! (`AtomicU64`) one more, its node (`tests/interior.rs` says why).
//!
//! The checks that pin run one after another in a single test: when a
//! thread that used the epoch exits, another thread's later pin may unlink
//! its registration and record that as garbage, which can allocate. With
//! one pinning thread in the binary, nothing but the code under test runs
//! inside a measured section.

use std::hint::black_box;

use snapmap::SnapMap;
use snapmap_counting_alloc::{CountingAlloc, allocations_in};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

const KEYS: u64 = 1000;

/// A map with `KEYS` entries, every shard promoted, the calling thread
/// registered with the epoch collector, and reads already exercised.
fn warmed_up(shards: usize) -> SnapMap<u64, u64> {
    let map = SnapMap::builder().shards(shards).build().unwrap();
    for k in 0..KEYS {
        map.insert(k, k * 2);
    }
    // Walking promotes every amended shard; reads then hit the views.
    assert_eq!(map.pin().iter().count(), KEYS as usize);
    for k in 0..KEYS {
        assert_eq!(map.get(&k), Some(k * 2));
    }
    let pinned = map.pin();
    assert_eq!(pinned.iter().count(), KEYS as usize);
    drop(pinned);
    assert_eq!(map.stats().slow_path_lookups, 0, "every read was a hit");
    map
}

#[test]
fn counter_sees_allocations() {
    let (boxed, n) = allocations_in(|| black_box(Box::new(black_box(7u64))));
    assert_eq!(*boxed, 7);
    assert!(n >= 1, "the counting allocator missed a Box");
}

fn pinned_read_hit_does_not_allocate() {
    for shards in [1, 64] {
        let map = warmed_up(shards);
        let pinned = map.pin();
        let (sum, n) = allocations_in(|| {
            let mut sum = 0u64;
            for k in 0..KEYS {
                sum += *pinned.get(&k).expect("present");
            }
            // Misses in an un-amended shard are answered by the view too.
            assert!(pinned.get(&(KEYS + 1)).is_none());
            assert!(pinned.contains_key(&3));
            sum
        });
        assert_eq!(sum, (0..KEYS).map(|k| k * 2).sum::<u64>());
        assert_eq!(n, 0, "{shards} shards: Pinned::get allocated {n} times");
        // Dropping the handle (flushing its hit count) does not allocate.
        let ((), n) = allocations_in(|| drop(pinned));
        assert_eq!(n, 0, "{shards} shards: dropping a Pinned allocated");
    }
}

fn map_get_of_copy_value_does_not_allocate() {
    for shards in [1, 64] {
        let map = warmed_up(shards);
        let (sum, n) = allocations_in(|| {
            let mut sum = 0u64;
            // More than crossbeam-epoch's collection interval of pins.
            for round in 0..3 {
                for k in 0..KEYS {
                    sum += map.get(&k).expect("present") * round;
                }
            }
            assert!(map.contains_key(&1));
            assert_eq!(map.get(&(KEYS + 5)), None);
            sum
        });
        assert_eq!(sum, 3 * (0..KEYS).map(|k| k * 2).sum::<u64>());
        assert_eq!(n, 0, "{shards} shards: SnapMap::get allocated {n} times");
    }
}

fn full_iteration_does_not_allocate() {
    for shards in [1, 64] {
        let map = warmed_up(shards);
        let pinned = map.pin();
        let ((count, sum), n) = allocations_in(|| {
            let mut count = 0;
            let mut sum = 0;
            for (k, v) in pinned.iter() {
                count += 1;
                sum += k + v;
            }
            let keys = pinned.keys().count();
            let values: u64 = pinned.values().sum();
            assert_eq!(keys, count);
            assert_eq!(values * 3, sum * 2);
            (count, sum)
        });
        assert_eq!(count, KEYS as usize);
        assert_eq!(sum, 3 * (0..KEYS).sum::<u64>());
        assert_eq!(n, 0, "{shards} shards: a full walk allocated {n} times");
    }
}

fn stats_and_len_do_not_allocate() {
    let map = warmed_up(64);
    let ((len, stats), n) = allocations_in(|| (map.len(), map.stats()));
    assert_eq!(len, KEYS as usize);
    assert_eq!(stats.len, KEYS as usize);
    assert_eq!(n, 0, "len/stats allocated {n} times");
}

fn update_of_existing_key_allocates_a_value_node() {
    let map = warmed_up(1);
    let pinned = map.pin();
    // Documents the cost of a write: each update takes a new value node, from
    // the allocator here (no node has been released on this thread yet),
    // and may allocate epoch bookkeeping when a garbage bag fills.
    let (previous, n) = allocations_in(|| pinned.insert(5, 55).copied());
    assert_eq!(previous, Some(10));
    assert!(n >= 1, "insert over an existing key allocated nothing");
    let (updated, n) = allocations_in(|| pinned.update(&5, |v| v + 1).copied());
    assert_eq!(updated, Some(56));
    assert!(n >= 1, "update allocated nothing");
    let (swapped, n) = allocations_in(|| pinned.compare_and_swap(&5, &56, 57));
    assert!(swapped);
    assert!(n >= 1, "compare_and_swap allocated nothing");
    // A failed compare-and-swap allocates nothing: the node is made only
    // once the current value matches.
    let (swapped, n) = allocations_in(|| pinned.compare_and_swap(&5, &0, 58));
    assert!(!swapped);
    assert_eq!(n, 0, "a failed compare_and_swap allocated");
    // Neither does a LoadOrStore that loads.
    let (current, n) = allocations_in(|| pinned.get_or_insert(5, 0).to_owned());
    assert_eq!(current, 57);
    assert_eq!(n, 0, "get_or_insert of a present key allocated");
}

/// A new key's plain value (`u64`) shares its entry's allocation; a value
/// that can change through `&V` (`AtomicU64`, which needs no drop either)
/// gets a node of its own, so that a move never copies it
/// (`tests/interior.rs`), and so does a `Copy` struct unless the map was
/// built with `inline_values(true)`. The same 100 new keys into maps alike
/// but for the value type: one more allocation per key, or none. It runs first,
/// before any check has retired a block: the epoch may run other threads'
/// garbage on this one, and a block it frees here goes to this thread's
/// cache (`src/pool.rs`) and would serve a later allocation uncounted.
fn only_plain_values_share_their_entrys_allocation() {
    // Both maps stay alive until both are measured: a dropped map's blocks
    // would go to the thread's cache and serve the next map's entries.
    fn new_keys<V: Send + Sync + 'static>(map: &SnapMap<u64, V>, value: fn(u64) -> V) -> u64 {
        let pinned = map.pin();
        // The dirty table and the thread's epoch registration, first.
        pinned.insert(0, value(0));
        let ((), n) = allocations_in(|| {
            for k in 1..=100 {
                pinned.insert(k, value(k));
            }
        });
        n
    }
    fn one_shard<V>() -> snapmap::Builder<u64, V> {
        SnapMap::<u64, V>::builder().shards(1)
    }
    // A `Copy` struct: a node of its own by default, inline when asked.
    #[derive(Clone, Copy)]
    struct Limit {
        _rate: u32,
        _burst: u32,
    }
    let limit = |k: u64| Limit {
        _rate: k as u32,
        _burst: 1,
    };
    let maps = (
        one_shard().build().unwrap(),
        one_shard().build().unwrap(),
        one_shard().build().unwrap(),
        one_shard().inline_values(true).build().unwrap(),
    );
    let plain = new_keys(&maps.0, |k| k);
    let interior = new_keys(&maps.1, std::sync::atomic::AtomicU64::new);
    let in_nodes = new_keys(&maps.2, limit);
    let inline = new_keys(&maps.3, limit);
    drop(maps);
    assert!(plain >= 100, "100 new keys took {plain} allocations");
    assert_eq!(
        interior,
        plain + 100,
        "an AtomicU64 value takes a node of its own, a u64 none"
    );
    assert_eq!(
        in_nodes,
        plain + 100,
        "a Copy struct value takes a node of its own by default"
    );
    assert_eq!(
        inline, plain,
        "with inline_values(true) a Copy struct value shares its entry's allocation"
    );
}

/// The measured checks, in one thread (see the module docs).
#[test]
fn read_paths_do_not_allocate_and_writes_do() {
    only_plain_values_share_their_entrys_allocation();
    pinned_read_hit_does_not_allocate();
    map_get_of_copy_value_does_not_allocate();
    full_iteration_does_not_allocate();
    stats_and_len_do_not_allocate();
    update_of_existing_key_allocates_a_value_node();
    #[cfg(not(snapmap_no_pool))]
    updates_reuse_released_nodes();
}

/// Steady updates: once the epoch releases the nodes that earlier updates
/// replaced, later updates take theirs from the thread's block cache
/// instead of the allocator (`src/pool.rs`). Without the cache each update
/// allocates a node: 10,000 allocations or more.
#[cfg(not(snapmap_no_pool))]
fn updates_reuse_released_nodes() {
    let map = warmed_up(4);
    // Map-level updates pin per call, so the epoch can advance and release
    // what they retire.
    let round = |map: &SnapMap<u64, u64>| {
        for i in 0..10_000u64 {
            map.update(&(i % KEYS), |v| v + 1);
        }
    };
    for _ in 0..3 {
        round(&map);
    }
    let ((), n) = allocations_in(|| round(&map));
    assert!(
        n < 2_000,
        "10,000 updates after warm-up allocated {n} times: released nodes are not reused"
    );
    let sum: u64 = map.pin().iter().map(|(_, v)| *v).sum();
    assert_eq!(sum, (0..KEYS).map(|k| k * 2).sum::<u64>() + 40_000);
}
