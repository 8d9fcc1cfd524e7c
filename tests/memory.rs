//! Memory comes back: retired memory is freed once readers leave (no
//! `oldbuckets` retention), and deleting most keys gives the heap back.
//!
//! This binary installs a counting global allocator (the workspace's
//! `snapmap-counting-alloc`), so its tests run one at a time (a shared lock,
//! which also turns process-wide counting on) and measure live heap bytes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use snapmap::{SnapMap, Snapshot};
use snapmap_counting_alloc::{Counting, CountingAlloc, counting, thread_allocations, totals};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Tests here measure the whole process's heap: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs a test alone, with process-wide counting on (for [`live`]) until
/// the guards drop.
fn alone() -> (MutexGuard<'static, ()>, Counting) {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    (serial, counting())
}

/// Live heap bytes, counted since counting was turned on: compare two
/// readings taken within one test.
fn live() -> i64 {
    totals().live_delta()
}

/// Allocations made by this thread (other threads of the test harness do
/// not disturb a per-thread count).
fn allocations() -> u64 {
    thread_allocations()
}

/// Pins and flushes until the epoch has freed (nearly) everything retired.
fn settle() -> usize {
    let mut retired = snapmap::retired_bytes().total();
    for _ in 0..1_000_000 {
        if retired == 0 {
            break;
        }
        crossbeam_epoch::pin().flush();
        retired = snapmap::retired_bytes().total();
    }
    retired
}

#[test]
fn retired_memory_returns_to_zero_after_growth_stops_and_readers_leave() {
    let _alone = alone();
    let map: SnapMap<u64, u64> = SnapMap::new();
    let growing = AtomicBool::new(true);
    let mut peak_retired = 0;
    std::thread::scope(|scope| {
        for reader in 0..2u64 {
            let (map, growing) = (&map, &growing);
            scope.spawn(move || {
                // A reader that stays pinned across many lookups holds back
                // reclamation while it is pinned, then leaves.
                while growing.load(Ordering::Acquire) {
                    let pinned = map.pin();
                    for k in (reader..20_000).step_by(7) {
                        std::hint::black_box(pinned.get(&k));
                    }
                }
            });
        }
        for k in 0..300_000u64 {
            map.insert(k, k);
            if k % 1_000 == 0 {
                map.insert(k / 2, k); // updates retire values too
                peak_retired = peak_retired.max(snapmap::retired_bytes().total());
            }
        }
        growing.store(false, Ordering::Release);
    });
    let stats = map.stats();
    assert!(stats.splits > 100, "{stats}");
    assert!(
        peak_retired > 0,
        "nothing was ever retired: the check below would be vacuous"
    );
    let left = settle();
    assert!(
        left <= 4 * 1024,
        "{left} bytes still retired after growth stopped and readers left (peak {peak_retired})"
    );
    eprintln!("peak retired {peak_retired} B, after settling {left} B; {stats}");
}

#[test]
fn deleting_99_percent_gives_the_heap_back() {
    let _alone = alone();
    const N: u64 = 1_000_000;
    let survivor = |k: &u64| k % 100 == 0;

    settle();
    let before = live();
    let map: SnapMap<u64, u64> = SnapMap::new();
    for k in 0..N {
        map.insert(k, k);
    }
    let full = live() - before;
    for k in (0..N).filter(|k| !survivor(k)) {
        assert_eq!(map.remove(&k), Some(k));
    }
    assert_eq!(map.len(), (N / 100) as usize);
    settle();
    let after_deletes = live() - before;
    let stats = map.stats();
    drop(map);
    settle();

    let before = live();
    let fresh: SnapMap<u64, u64> = SnapMap::new();
    for k in (0..N).filter(survivor) {
        fresh.insert(k, k);
    }
    settle();
    let fresh_bytes = live() - before;
    let fresh_stats = fresh.stats();
    drop(fresh);

    eprintln!(
        "1M entries: {full} B; after deleting 99%: {after_deletes} B ({stats}); \
         fresh map of the survivors: {fresh_bytes} B ({fresh_stats})"
    );
    assert!(
        after_deletes <= 2 * fresh_bytes,
        "after deleting 99% the map holds {after_deletes} B, more than 2x a fresh map of the survivors ({fresh_bytes} B)"
    );
}

/// A map whose read views live in huge-page regions (`huge_pages(true)`,
/// `src/arena.rs`) gives them back when it goes: a region returns to the
/// allocator once no view is left in it (and the spare region goes once
/// the process's views are below the arena's threshold). 400K keys: about
/// 27 MB of views, past the 8 MiB from which the arena serves them.
#[test]
fn huge_page_views_come_back_when_the_map_goes() {
    let _alone = alone();
    const N: u64 = 400_000;
    settle();
    let before = live();
    let map: SnapMap<u64, String> = SnapMap::builder().huge_pages(true).build().unwrap();
    for k in 0..N {
        map.insert(k, k.to_string());
    }
    // Promote every shard: the views then hold every entry.
    for k in 0..N {
        assert_eq!(map.get(&k).as_deref(), Some(k.to_string().as_str()));
    }
    for k in (0..N).step_by(3) {
        map.insert(k, format!("{k}!"));
    }
    for k in 0..N {
        let want = if k % 3 == 0 {
            format!("{k}!")
        } else {
            k.to_string()
        };
        assert_eq!(map.get(&k), Some(want));
    }
    settle();
    let full = live() - before;
    assert!(
        full > 27 << 20,
        "{full} B for {N} entries: smaller than their views"
    );
    drop(map);
    settle();
    let after = live() - before;
    assert!(
        after <= 64 << 10,
        "{after} B still live after dropping a huge-page map of {full} B"
    );
}

#[test]
fn snapshot_of_an_unchanged_map_is_the_same_one_and_allocates_nothing() {
    let _alone = alone();
    let map: SnapMap<u64, u64> = (0..10_000).map(|i| (i, i)).collect();
    let first = map.snapshot();
    let _warm = map.snapshot(); // the first call on a thread may set up thread-locals
    let before = allocations();
    let again = map.snapshot();
    let made = allocations() - before;
    assert!(
        Snapshot::ptr_eq(&first, &again),
        "an unchanged map built a new snapshot"
    );
    assert_eq!(
        made, 0,
        "snapshot() of an unchanged map allocated {made} times"
    );
    // Iterating a snapshot allocates nothing either.
    let before = allocations();
    let sum: u64 = again.iter().map(|(_, v)| *v).sum();
    assert_eq!(allocations() - before, 0, "iterating a snapshot allocated");
    assert_eq!(sum, (0..10_000).sum::<u64>());
    // The counter works: a changed map allocates a new snapshot.
    map.insert(1, 2);
    let before = allocations();
    let changed = map.snapshot();
    assert!(allocations() > before && !Snapshot::ptr_eq(&first, &changed));
}

#[test]
fn dropping_the_last_holder_frees_a_snapshot() {
    let _alone = alone();
    let map: SnapMap<u64, u64> = (0..100_000).map(|i| (i, i)).collect();
    settle();
    let before = live();
    let old = map.snapshot();
    let held = live() - before;
    let stats = map.stats();
    assert!(
        held > 100_000 * 16,
        "a 100K-entry snapshot holds only {held} B"
    );
    assert!(
        stats.snapshot_bytes as i64 > held / 2 && stats.snapshot_bytes as i64 <= held,
        "stats report {} B held by snapshots, the allocator {held} B",
        stats.snapshot_bytes
    );
    // Change every key, take a new snapshot: the old one is still alive,
    // and shares nothing with the new one. (A new snapshot that reused a
    // piece of the old one would keep the old one's region, where its
    // pieces live, until the region's last piece goes.)
    for i in 0..100_000 {
        map.insert(i, 0);
    }
    let new = map.snapshot();
    assert!(
        map.stats().snapshot_bytes > stats.snapshot_bytes,
        "both snapshots are held"
    );
    let with_both = live();
    drop(old);
    let freed = with_both - live();
    assert!(
        freed >= held * 9 / 10,
        "dropping the old snapshot freed {freed} of {held} B"
    );
    assert!(map.stats().snapshot_bytes < stats.snapshot_bytes * 11 / 10);
    drop(new);
    // The map keeps its latest snapshot (for O(1) and structural sharing)...
    let cached = map.stats().snapshot_bytes;
    assert!(cached > 0, "the map's cached snapshot is not counted");
    // ...until told to forget it.
    let before = live();
    map.forget_snapshot();
    assert_eq!(map.stats().snapshot_bytes, 0, "no snapshot is held");
    assert!(
        before - live() >= cached as i64 * 9 / 10,
        "forgetting freed too little"
    );
}

/// Regression: a writer that replaces many values under one pin (a reload)
/// retired memory faster than crossbeam's pin-driven collection freed it,
/// and retired bytes grew without bound while readers kept pinning. Retiring
/// now flushes every bag's worth, so retirement drives collection.
#[test]
fn reload_writer_under_one_pin_does_not_accumulate_retired_memory() {
    let _alone = alone();
    settle();
    let map: SnapMap<u64, u64> = SnapMap::builder().shards(4).build().unwrap();
    for k in 0..10_000 {
        map.insert(k, 0);
    }
    let done = AtomicBool::new(false);
    let mut samples = Vec::new();
    std::thread::scope(|scope| {
        for reader in 0..2u64 {
            let (map, done) = (&map, &done);
            scope.spawn(move || {
                while !done.load(Ordering::Acquire) {
                    let pinned = map.pin();
                    for k in (reader..10_000).step_by(10) {
                        std::hint::black_box(pinned.get(&k));
                    }
                }
            });
        }
        for reload in 0..3_000u64 {
            let pinned = map.pin();
            for k in (reload % 100..10_000).step_by(100) {
                pinned.insert(k, reload);
            }
            // A new key and a removal per reload: promotions retire views.
            pinned.insert(1_000_000 + reload, reload);
            pinned.remove(&(1_000_000 + reload));
            drop(pinned);
            if reload % 100 == 99 {
                samples.push(snapmap::retired_bytes().total());
            }
        }
        done.store(true, Ordering::Release);
    });
    let (first, last) = (
        samples[..5].iter().max().unwrap(),
        samples[samples.len() - 5..].iter().max().unwrap(),
    );
    eprintln!("retired bytes sampled every 100 reloads: {samples:?}");
    assert!(
        *last <= 2 * 1024 * 1024 && *last <= first.saturating_mul(4).max(256 * 1024),
        "retired memory accumulates during steady reloads: first samples up to {first} B, last up to {last} B"
    );
}

/// The heap cost of one empty shard, which `Builder::shards` documents
/// (issue 11: the docs said about 300 bytes, a user measured about 450).
/// Measured as the difference between maps of 2^12 and 2^4 initial shards:
/// bytes requested from the allocator (resident memory is higher: about 455
/// bytes per shard with glibc's malloc, measured from `/proc/self/statm`
/// for 2^20 shards; see `EMPTY_SHARD_BYTES`).
#[test]
fn an_empty_shard_costs_what_the_builder_docs_say() {
    let _alone = alone();
    let heap_of = |shards: usize| {
        settle();
        let (before, allocations_before) = (live(), allocations());
        let map: SnapMap<u64, u64> = SnapMap::builder().shards(shards).build().unwrap();
        let bytes = live() - before;
        let allocated = allocations() - allocations_before;
        drop(map);
        (bytes, allocated as i64)
    };
    let ((small, small_allocations), (large, large_allocations)) =
        (heap_of(1 << 4), heap_of(1 << 12));
    let per_shard = (large - small) / ((1 << 12) - (1 << 4));
    let allocations_per_shard =
        (large_allocations - small_allocations) as f64 / f64::from((1 << 12) - (1 << 4));
    eprintln!("one empty shard: {per_shard} heap bytes in {allocations_per_shard:.3} allocations");
    // The figure next to `Builder::shards` (and `MAX_INITIAL_SHARDS`).
    assert!(
        (256..=snapmap::EMPTY_SHARD_BYTES as i64).contains(&per_shard),
        "an empty shard costs {per_shard} bytes, the docs say at most {}",
        snapmap::EMPTY_SHARD_BYTES
    );
}

/// Hashes a key `k < 2^24` to `k` in the top 24 bits, pseudo-random bits
/// below: consecutive keys fill consecutive shards, so a test knows which
/// keys share shards.
#[derive(Clone, Default)]
struct TopBits;

struct TopBitsHasher(u64);

impl std::hash::Hasher for TopBitsHasher {
    fn finish(&self) -> u64 {
        let k = self.0;
        let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (k << 40) | ((z ^ (z >> 31)) >> 24)
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, k: u64) {
        self.0 = k;
    }
}

impl std::hash::BuildHasher for TopBits {
    type Hasher = TopBitsHasher;
    fn build_hasher(&self) -> TopBitsHasher {
        TopBitsHasher(0)
    }
}

/// A snapshot's pieces live in one region per build, freed when its last
/// piece goes; a piece that later builds keep reusing keeps its whole
/// region. Builds that each leave a few old pieces behind would then hold
/// region after region. The builds repack (copy every piece into one new
/// region) once the dead bytes outgrow the live ones, so what snapshots
/// hold stays within a few times one snapshot.
#[test]
fn snapshot_regions_kept_by_old_pieces_are_repacked() {
    let _alone = alone();
    const KEYS: u64 = 150_000;
    let map: SnapMap<u64, u64, TopBits> = SnapMap::with_hasher(TopBits);
    for k in 0..KEYS {
        map.insert(k, k);
    }
    settle();
    drop(map.snapshot());
    let one = map.stats().snapshot_bytes;
    assert!(one > KEYS as usize * 16, "one snapshot holds {one} B");
    // Round r changes every key but those of r windows of 4,096
    // consecutive keys (whole shards: a shard holds at most 512 keys), a
    // different window each round; the windows' pieces stay those of the
    // round that last changed them, each keeping that round's region.
    let window =
        |w: u64| (w * 20_011 % (KEYS / 4_096)) * 4_096..(w * 20_011 % (KEYS / 4_096) + 1) * 4_096;
    let mut most = 0;
    for round in 1..=8u64 {
        for k in 0..KEYS {
            if !(1..=round).any(|w| window(w).contains(&k)) {
                map.insert(k, k + round);
            }
        }
        drop(map.snapshot());
        most = most.max(map.stats().snapshot_bytes);
    }
    assert!(
        most <= 3 * one + (4 << 20),
        "snapshots held up to {most} B, one snapshot is {one} B"
    );
    // The content is the map's.
    let snapshot = map.snapshot();
    assert_eq!(snapshot.len(), KEYS as usize);
    for k in 0..KEYS {
        let changed = (1..=8u64)
            .filter(|&r| !(1..=r).any(|w| window(w).contains(&k)))
            .max();
        assert_eq!(
            snapshot.get(&k),
            Some(&(k + changed.unwrap_or(0))),
            "key {k}"
        );
    }
}

/// The repack rule with an old snapshot held by the user. Round `HELD`'s
/// snapshot reuses each window's pieces from the region of the round that
/// last changed that window, so it keeps about `HELD` regions alive, each
/// mostly pieces replaced since: dead bytes that no repack can free (the
/// user's snapshot still holds the regions). The "grown since the last
/// repack" half of the rule keeps them from making every later build
/// repack: 2 of the 12 builds repack with it, 6 without it (every build
/// after `HELD`). The snapshot the user holds keeps reading its own
/// content throughout.
#[test]
fn repacks_while_an_old_snapshot_is_held() {
    let _alone = alone();
    const KEYS: u64 = 150_000;
    const ROUNDS: u64 = 12;
    const HELD: u64 = 6;
    let map: SnapMap<u64, u64, TopBits> = SnapMap::with_hasher(TopBits);
    for k in 0..KEYS {
        map.insert(k, k);
    }
    settle();
    // As in the test above: round r changes every key outside r windows
    // of whole shards, so each build leaves some old pieces in use.
    let window = |w: u64| {
        let w = w * 20_011 % (KEYS / 4_096);
        w * 4_096..(w + 1) * 4_096
    };
    let value = |k: u64, round: u64| {
        (1..=round)
            .filter(|&r| !(1..=r).any(|w| window(w).contains(&k)))
            .max()
            .map_or(k, |r| k + r)
    };
    // Every snapshot up to round `HELD` is held (so no region is dead and
    // none of those builds repacks), then only round `HELD`'s.
    let mut held = vec![map.snapshot()];
    let mut repacks = 0;
    for round in 1..=ROUNDS {
        for k in 0..KEYS {
            if !(1..=round).any(|w| window(w).contains(&k)) {
                map.insert(k, k + round);
            }
        }
        let reused_before = map.stats().snapshot_shards_reused;
        let snapshot = map.snapshot();
        // Whole windows of shards were left unchanged: a build that reuses
        // none of their pieces is a repack.
        if map.stats().snapshot_shards_reused == reused_before {
            repacks += 1;
        }
        if round <= HELD {
            held.push(snapshot);
        }
        if round == HELD {
            held.drain(..held.len() - 1);
        }
    }
    assert!(
        repacks <= 3,
        "{repacks} of {ROUNDS} builds repacked while a snapshot was held"
    );
    let held = held.pop().expect("round HELD is held");
    assert_eq!(held.len(), KEYS as usize);
    for k in 0..KEYS {
        assert_eq!(held.get(&k), Some(&value(k, HELD)), "key {k}");
    }
    let last = map.snapshot();
    for k in 0..KEYS {
        assert_eq!(last.get(&k), Some(&value(k, ROUNDS)), "key {k}");
    }
}
