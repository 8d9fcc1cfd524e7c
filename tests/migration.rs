//! Shard migration (split, merge, directory doubling and halving): nothing
//! lost while the map grows and shrinks, bounded work per operation, and
//! adversarial hashes that cannot grow the directory without bound.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use snapmap::{DEFAULT_SHARD_CAPACITY, SnapMap};

/// A map whose shards split past 4 entries.
fn tiny(shards: usize) -> SnapMap<u64, u64> {
    SnapMap::builder()
        .shards(shards)
        .shard_capacity(4)
        .build()
        .unwrap()
}

/// One shard to start with, splitting past 4 entries, with a fixed hasher
/// (the same layout on every run).
fn tiny_fixed() -> SnapMap<u64, u64, Fixed> {
    SnapMap::builder()
        .hasher(Fixed::default())
        .shards(1)
        .shard_capacity(4)
        .build()
        .unwrap()
}

fn sorted_keys(map: &SnapMap<u64, u64>) -> Vec<u64> {
    let mut keys: Vec<u64> = map.pin().keys().copied().collect();
    keys.sort_unstable();
    keys
}

#[test]
fn tiny_capacity_grows_to_100k_and_shrinks_back() {
    let map = tiny(1);
    let n = 100_000u64;
    for i in 0..n {
        assert_eq!(map.insert(i, i * 3), None);
    }
    let grown = map.stats();
    assert_eq!(map.len(), n as usize);
    assert!(grown.splits > 10_000, "expected many splits: {grown}");
    assert!(
        grown.shards > 10_000 && grown.directory_slots >= grown.shards,
        "{grown}"
    );
    for i in 0..n {
        assert_eq!(map.get(&i), Some(i * 3), "key {i} after growth");
    }
    assert_eq!(
        sorted_keys(&map),
        (0..n).collect::<Vec<_>>(),
        "iteration after growth"
    );

    // Remove all but every 100th key: shards merge back.
    for i in (0..n).filter(|i| i % 100 != 0) {
        assert_eq!(map.remove(&i), Some(i * 3));
    }
    let shrunk = map.stats();
    assert_eq!(map.len(), 1_000);
    assert!(shrunk.merges > 10_000, "expected many merges: {shrunk}");
    // With capacity 4 two buddies merge only if they hold at most one key
    // together, so 1% survivors keep many small shards; the full removal
    // below shows the directory halving all the way back.
    assert!(
        shrunk.shards < grown.shards / 4,
        "shards did not come back: {shrunk}"
    );
    for i in 0..n {
        let expected = (i % 100 == 0).then_some(i * 3);
        assert_eq!(map.get(&i), expected, "key {i} after shrinking");
    }
    assert_eq!(sorted_keys(&map), (0..n).step_by(100).collect::<Vec<_>>());

    // Remove the rest: back to the initial single shard.
    for i in (0..n).step_by(100) {
        assert_eq!(map.remove(&i), Some(i * 3));
    }
    let empty = map.stats();
    assert!(map.is_empty());
    assert_eq!((empty.shards, empty.directory_slots), (1, 1), "{empty}");
    // And it still works.
    map.insert(7, 7);
    assert_eq!(map.get(&7), Some(7));
}

#[test]
fn merges_never_go_below_the_initial_shard_count() {
    let map = tiny(8);
    for i in 0..10_000 {
        map.insert(i, i);
    }
    for i in 0..10_000 {
        map.remove(&i);
    }
    let stats = map.stats();
    assert_eq!((stats.shards, stats.directory_slots), (8, 8), "{stats}");
}

#[test]
fn clear_merges_emptied_shards() {
    let map = tiny(1);
    for i in 0..5_000 {
        map.insert(i, i);
    }
    let before = map.stats();
    map.clear();
    assert!(map.is_empty());
    assert_eq!(sorted_keys(&map), Vec::<u64>::new());
    let after = map.stats();
    assert!(
        after.shards < before.shards,
        "clear left every shard: {after}"
    );
    for i in 0..100 {
        map.insert(i, i + 1);
    }
    assert_eq!(sorted_keys(&map), (0..100).collect::<Vec<_>>());
}

/// The bound on one operation's copying: a dirty rebuild (one shard) plus a
/// split of that shard (the same entries and the new key). A split can be
/// uneven, leaving a half a little over capacity until the next write
/// splits it; the slack covers that, and is far below O(n).
#[test]
fn work_per_operation_stays_bounded_while_growing_to_1m() {
    let map: SnapMap<u64, u64> = SnapMap::new();
    let n = 1_000_000u64;
    for i in 0..n {
        map.insert(i, i);
    }
    let stats = map.stats();
    let bound = 2 * DEFAULT_SHARD_CAPACITY as u64 + DEFAULT_SHARD_CAPACITY as u64 / 4;
    assert!(
        stats.max_entries_copied_by_one_operation <= bound,
        "an operation copied {} entries (bound {bound}): {stats}",
        stats.max_entries_copied_by_one_operation
    );
    assert!(stats.max_entries_copied_by_one_operation > 0);
    assert!(
        stats.shards >= (n as usize) / DEFAULT_SHARD_CAPACITY,
        "{stats}"
    );
    assert_eq!(map.len(), n as usize);
}

/// A hasher that keeps only the low 16 bits of a `u64` key in the top of the
/// hash: keys agreeing in those bits collide in every directory bit.
#[derive(Default)]
struct TopBitsCollide(u64);

impl Hasher for TopBitsCollide {
    fn finish(&self) -> u64 {
        self.0 << 48
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n & 0xffff;
    }
}

#[test]
fn adversarial_hashes_cannot_grow_the_directory_past_its_cap() {
    let map = SnapMap::<u64, u64>::builder()
        .hasher(BuildHasherDefault::<TopBitsCollide>::default())
        .shards(1)
        .max_shards(64)
        .shard_capacity(4)
        .build()
        .unwrap();
    // 2_000 keys, all with the same hash: no split can separate them.
    for i in 0..2_000u64 {
        map.insert(i << 16, i);
    }
    let stats = map.stats();
    assert!(stats.directory_slots <= 64, "{stats}");
    assert!(stats.global_depth <= 6, "{stats}");
    for i in 0..2_000u64 {
        assert_eq!(map.get(&(i << 16)), Some(i));
    }
    assert_eq!(map.len(), 2_000);
}

/// A fixed-seed hasher for reproducible shard layouts.
type Fixed = BuildHasherDefault<DefaultHasher>;

/// Values that count their drops, to prove each is dropped exactly once.
#[derive(Debug)]
struct Counted {
    value: u64,
    drops: Arc<AtomicUsize>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted {
            value: self.value,
            drops: self.drops.clone(),
        }
    }
}

impl PartialEq for Counted {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Flushes the epoch until `done()` or 30 seconds have passed.
///
/// The limit is time, not a count of flushes: a flush collects at most a
/// few bags from the global queue, and while other tests in this binary
/// pour garbage into it, ours can be far behind (a fixed count of flushes
/// made `removed_entries_are_freed_while_the_map_lives` fail about one run
/// in two when the whole file ran).
fn flush_until(done: impl Fn() -> bool) -> bool {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < give_up {
        if done() {
            return true;
        }
        crossbeam_epoch::pin().flush();
    }
    done()
}

/// Threads grow and shrink a tiny-capacity map concurrently: each owns a key
/// range it inserts, updates and removes, and all increment a shared
/// counter key. Afterwards nothing is lost, the counter has every
/// increment, and every value ever created is dropped exactly once.
#[test]
fn concurrent_growth_and_shrinking_with_tiny_capacity() {
    const THREADS: u64 = 4;
    const KEYS: u64 = 5_000;
    const COUNTER: u64 = u64::MAX;
    for shards in [1usize, 16] {
        let created = Arc::new(AtomicUsize::new(0));
        let drops = Arc::new(AtomicUsize::new(0));
        let make = |value| {
            created.fetch_add(1, Ordering::Relaxed);
            Counted {
                value,
                drops: drops.clone(),
            }
        };
        let map = SnapMap::<u64, Counted>::builder()
            .hasher(Fixed::default())
            .shards(shards)
            .shard_capacity(4)
            .build()
            .unwrap();
        map.pin().insert(COUNTER, make(0));
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (map, make) = (&map, &make);
                scope.spawn(move || {
                    let base = t * KEYS;
                    let pinned_ops =
                        |f: &dyn Fn(&snapmap::Pinned<'_, u64, Counted, Fixed>)| f(&map.pin());
                    for k in base..base + KEYS {
                        pinned_ops(&|p| assert!(p.insert(k, make(k)).is_none()));
                    }
                    for k in base..base + KEYS {
                        pinned_ops(&|p| {
                            let updated = p.update(&k, |v| make(v.value + 1));
                            assert_eq!(updated.map(|v| v.value), Some(k + 1));
                        });
                        pinned_ops(&|p| {
                            p.update(&COUNTER, |v| make(v.value + 1));
                        });
                    }
                    for k in (base..base + KEYS).filter(|k| k % 10 != 0) {
                        pinned_ops(&|p| assert_eq!(p.remove(&k).map(|v| v.value), Some(k + 1)));
                    }
                });
            }
        });
        let pinned = map.pin();
        assert_eq!(
            pinned.get(&COUNTER).map(|v| v.value),
            Some(THREADS * KEYS),
            "lost counter updates"
        );
        let mut seen: HashMap<u64, u64> = HashMap::new();
        for (k, v) in pinned.iter() {
            assert!(seen.insert(*k, v.value).is_none(), "key {k} seen twice");
        }
        drop(pinned);
        let expected: HashMap<u64, u64> = (0..THREADS * KEYS)
            .filter(|k| k % 10 == 0)
            .map(|k| (k, k + 1))
            .chain([(COUNTER, THREADS * KEYS)])
            .collect();
        assert_eq!(
            seen, expected,
            "contents after concurrent growth and shrinking ({shards} shards)"
        );
        assert_eq!(map.len(), expected.len());
        let stats = map.stats();
        assert!(stats.splits > 0 && stats.merges > 0, "{stats}");
        drop(map);
        let all_dropped =
            flush_until(|| drops.load(Ordering::Relaxed) == created.load(Ordering::Relaxed));
        assert!(
            all_dropped,
            "created {} values, dropped {} ({shards} shards)",
            created.load(Ordering::Relaxed),
            drops.load(Ordering::Relaxed)
        );
    }
}

/// Readers keep reading and iterating while writers split and merge
/// shards: a key present for the whole run is always found, and every
/// iteration sees it exactly once.
#[test]
fn readers_during_splits_and_merges() {
    let map = tiny_fixed();
    let stable: Vec<u64> = (0..200).map(|i| i * 1_000_003).collect();
    for &k in &stable {
        map.insert(k, k);
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 0..20u64 {
                for i in 0..2_000u64 {
                    map.insert(round << 32 | i | 1 << 63, i);
                }
                for i in 0..2_000u64 {
                    map.remove(&(round << 32 | i | 1 << 63));
                }
            }
            done.store(true, Ordering::Release);
        });
        scope.spawn(|| {
            let mut fold = false;
            while !done.load(Ordering::Acquire) {
                let pinned = map.pin();
                for &k in &stable {
                    assert_eq!(pinned.get(&k), Some(&k), "stable key {k} missed");
                }
                let mut count = HashMap::new();
                // Both walks: `next` one entry at a time, and `fold` (what
                // `for_each` calls), which folds whole shards by a loop of
                // their own.
                if fold {
                    pinned
                        .iter()
                        .for_each(|(k, _)| *count.entry(*k).or_insert(0) += 1);
                } else {
                    for (k, _) in pinned.iter() {
                        *count.entry(*k).or_insert(0) += 1;
                    }
                }
                fold = !fold;
                for &k in &stable {
                    assert_eq!(
                        count.get(&k),
                        Some(&1),
                        "stable key {k} not seen exactly once"
                    );
                }
                assert!(count.values().all(|&c| c == 1), "a key was seen twice");
            }
        });
    });
    assert_eq!(map.len(), stable.len());
    let stats = map.stats();
    assert!(stats.splits > 0 && stats.merges > 0, "{stats}");
}

/// A walk that merges shards behind its cursor and then finishes with
/// `fold` (`for_each`): the shard holding the cursor now also holds the
/// range already walked, and `fold` must skip that part (a shard folded
/// whole would show its keys twice). Every key never removed is seen
/// exactly once.
#[test]
fn a_fold_after_merges_behind_the_cursor_skips_what_was_walked() {
    let map = tiny_fixed();
    let keys: Vec<u64> = (0..400).map(|i| i * 1_000_003).collect();
    for &k in &keys {
        map.insert(k, k);
    }
    let pinned = map.pin();
    // Promotes every shard; the walk's order is hash order.
    let order: Vec<u64> = pinned.iter().map(|(k, _)| *k).collect();
    assert_eq!(order.len(), keys.len());
    let half = order.len() / 2;
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut walk = pinned.iter();
    for (k, _) in walk.by_ref().take(half) {
        *seen.entry(*k).or_insert(0) += 1;
    }
    // Keep the last key walked (and the first and last keys); remove the
    // rest. The shards around the cursor empty out and merge, so the one
    // that holds the cursor then also holds the key just walked.
    let kept = [order[0], order[half - 1], order[order.len() - 1]];
    let merges = map.stats().merges;
    for k in order.iter().filter(|k| !kept.contains(k)) {
        map.remove(k);
    }
    assert!(map.stats().merges > merges, "{}", map.stats());
    walk.for_each(|(k, _)| *seen.entry(*k).or_insert(0) += 1);
    for k in kept {
        assert_eq!(seen.get(&k), Some(&1), "key {k} kept throughout");
    }
    assert!(seen.values().all(|&c| c == 1), "a key was seen twice");
}

/// A key that counts its drops; hashes and compares as its id.
struct DropKey {
    id: u64,
    drops: Arc<AtomicUsize>,
}

impl Drop for DropKey {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

impl PartialEq for DropKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for DropKey {}

impl std::hash::Hash for DropKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl std::borrow::Borrow<u64> for DropKey {
    fn borrow(&self) -> &u64 {
        &self.id
    }
}

/// Entries are not reference-counted: each leaves the map through exactly
/// one retirement (promotion of a view without it, removal of a key only in
/// dirty, `clear`, a split or merge). Every path frees the removed keys
/// while the map lives, and none frees a key twice.
#[test]
fn removed_entries_are_freed_while_the_map_lives() {
    let drops = Arc::new(AtomicUsize::new(0));
    let key = |id| DropKey {
        id,
        drops: drops.clone(),
    };
    let dropped = || drops.load(Ordering::SeqCst);
    // One shard that never splits: Go's lifecycle, step by step.
    let map: SnapMap<DropKey, u64> = SnapMap::builder()
        .shards(1)
        .shard_capacity(1 << 20)
        .build()
        .unwrap();
    for id in 0..1000 {
        map.insert(key(id), id);
    }
    assert_eq!(map.pin().iter().count(), 1000); // promotes
    for id in (0..1000).step_by(2) {
        assert_eq!(map.remove(&id), Some(id));
    }
    // Deleted entries stay in the view (Go): nothing is freed yet.
    assert!(flush_until(|| dropped() == 0));
    assert_eq!(dropped(), 0, "a key was freed while still in the view");
    map.insert(key(5000), 0); // rebuild: the 500 deleted entries are expunged
    assert_eq!(map.pin().iter().count(), 501); // promotion retires them
    assert!(
        flush_until(|| dropped() == 500),
        "promotion: {} of 500 removed keys freed",
        dropped()
    );
    map.insert(key(6000), 0); // only in dirty
    assert_eq!(map.remove(&6000), Some(0));
    assert!(
        flush_until(|| dropped() == 501),
        "a removed dirty-only key was not freed ({} freed)",
        dropped()
    );
    map.clear();
    assert!(
        flush_until(|| dropped() == 1002),
        "clear: {} of 1002 keys freed",
        dropped()
    );
    map.insert(key(7000), 0);
    drop(map);
    assert_eq!(dropped(), 1003, "the map's drop frees what it holds");

    // Tiny shards: removing everything merges shards back; the merges
    // free the deleted entries they leave out.
    drops.store(0, Ordering::SeqCst);
    const N: u64 = 20_000;
    let map: SnapMap<DropKey, u64> = SnapMap::builder()
        .shards(16)
        .shard_capacity(4)
        .build()
        .unwrap();
    for id in 0..N {
        map.insert(key(id), id);
    }
    for id in 0..N {
        assert_eq!(map.remove(&id), Some(id));
    }
    let shards = map.stats().shards;
    assert!(shards <= 64, "the map merged back ({shards} shards)");
    // What may linger: per remaining shard, deleted entries in its view and
    // dirty table (each at most capacity + 1).
    let lingering = shards * 2 * 5;
    assert!(
        flush_until(|| dropped() + lingering >= N as usize),
        "merges: {} of {N} removed keys freed",
        dropped()
    );
    map.clear();
    assert!(flush_until(|| dropped() == N as usize));
    drop(map);
    assert_eq!(dropped(), N as usize, "no key was freed twice");
}

/// An entry can be expunged twice before it leaves the map: by a dirty
/// rebuild, then (after being revived and deleted again) by the split that
/// drains its shard. It must still be freed exactly once.
#[test]
fn an_entry_expunged_twice_is_freed_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let key = |id| DropKey {
        id,
        drops: drops.clone(),
    };
    let map: SnapMap<DropKey, u64> = SnapMap::builder()
        .shards(1)
        .shard_capacity(8)
        .build()
        .unwrap();
    for id in 0..4 {
        map.insert(key(id), id);
    }
    assert_eq!(map.pin().iter().count(), 4); // promoted: no dirty table
    assert_eq!(map.remove(&0), Some(0)); // deleted in the view
    map.insert(key(4), 4); // rebuild: entry 0 expunged
    map.insert(key(0), 10); // revived: un-expunged, back in dirty
    assert_eq!(map.remove(&0), Some(10)); // deleted again
    let splits = map.stats().splits;
    let mut id = 5;
    while map.stats().splits == splits {
        map.insert(key(id), id); // the split drains: entry 0 expunged again
        id += 1;
    }
    // Keys dropped so far: the key passed to the second insert of 0 (the
    // entry keeps its first key). Entry 0 is freed once, with its key.
    assert!(
        flush_until(|| drops.load(Ordering::SeqCst) >= 2),
        "entry 0 was not freed"
    );
    assert_eq!(drops.load(Ordering::SeqCst), 2, "entry 0 was freed twice");
    drop(map);
    assert_eq!(drops.load(Ordering::SeqCst), id as usize + 1);
}
