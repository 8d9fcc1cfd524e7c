//! Shard migration: split, merge, bounded work, no retention.
//!
//! Go's runtime map grows by evacuating old buckets a few per write and
//! keeps `oldbuckets` alive while evacuation lags; it never shrinks
//! (golang/go#20135). Go 1.24 caps each table and splits one table at a
//! time under a directory. snapmap does the latter, one shard at a time,
//! so that the `sync.Map` costs (dirty rebuild, promotion, the shard lock)
//! stay O(shard), never O(n).
//!
//! # Split
//!
//! When a new key makes a shard's dirty table pass the capacity, the writer
//! (after its insert returns from the shard) calls [`split`]. Under the
//! shard's lock it re-checks that the shard is still over capacity and,
//! under the directory's `resize` lock, that it is current, then builds two
//! new shards from its content, divided by the
//! next hash bit. Deleted entries are expunged and left out (as in a dirty
//! rebuild; they are freed with the old shard), live entries are sealed
//! and moved into the new views' slots (`crate::shard::entry`), and each new
//! shard starts promoted: its read view holds everything, with no dirty
//! table. Under the
//! directory's `resize` lock it doubles the directory if the shard was at
//! the global depth, then points the shard's slots at the new shards. Last,
//! still under the shard lock, it marks the old shard retired and retires it
//! through the epoch.
//!
//! # Merge
//!
//! When a removal leaves a shard sparse, [`merge_cascade`] calls
//! [`try_merge`], which looks up its buddy
//! (same depth, prefix differing in the last bit). If both are current and
//! hold at most `capacity / 4` live entries together, it locks both (lower
//! prefix first: the one lock order every merge uses), builds the merged
//! shard the same way, points their slots at it, halves the directory while
//! no shard is left at the global depth, and retires both. The cascade
//! then tries the merged shard with its own buddy, within the operation's
//! copy budget. Split at more
//! than `capacity`, merge at no more than `capacity / 4`: a merged shard
//! needs 4x its size in new keys before it splits again, and a split half
//! must lose most of its entries before it merges, so the two cannot
//! oscillate.
//!
//! # Why the handoff is safe
//!
//! - **Readers** that reach the old shard through an old directory or an
//!   old slot still answer hits from its view: the entries are the same
//!   objects the new shards hold, so a value stored through either is seen
//!   through both. Misses go to the lock (the view is tagged amended on
//!   retirement), see `retired`, and retry from the current directory.
//! - **Lock-free writers** on the old view can only store into entries that
//!   the new shards hold: deleted entries were expunged before the handoff,
//!   and a store into an expunged entry takes the lock and retries.
//! - **Locked writers** see `retired` right after locking and retry. The
//!   slots were rewritten before `retired` was set, both under the lock they
//!   just acquired, so the retry finds the new shards.
//!
//! # Bounded work and retention
//!
//! One operation copies at most one shard's dirty rebuild plus one split (or
//! one merge of two sparse shards): `2 * capacity + 1` entries with the
//! default settings, whatever the map's size; `Stats` records the largest
//! such count. Doubling and halving copy only slot pointers. Readers never
//! migrate anything. Retired shards, views and directory tables go to the
//! epoch at once and are freed as soon as the readers pinned before them
//! leave; `stats().retired` shows what is waiting.
//!
//! # Choosing the capacity
//!
//! `cargo bench -p snapmap-benches --bench capacity` grows a map to 1M keys on one thread for
//! each capacity, then times read hits through a pinned handle (one run on
//! the 2-core development machine, foldhash):
//!
//! | capacity | grow 1M (ms) | most copied by one op | shards | read hit (ns) |
//! |---:|---:|---:|---:|---:|
//! | 64 | 1227 | 65 | 21 713 | 516 |
//! | 128 | 1401 | 129 | 10 477 | 256 |
//! | 256 | 863 | 257 | 4 987 | 222 |
//! | **512** | **756** | **513** | **2 337** | **190** |
//! | 1024 | 652 | 1025 | 1 075 | 189 |
//! | 2048 | 721 | 2049 | 522 | 209 |
//! | 4096 | 797 | 4097 | 256 | 216 |
//!
//! Below 256 reads get slower: tens of thousands of shards and a large
//! directory no longer stay in cache. From 512 up, reads and growth time are
//! flat within the noise, while the work one operation may do (and so the
//! worst pause of a writer) grows with the capacity. 512 is the smallest
//! capacity with the best reads.
//!
//! # The slowest single insert
//!
//! Copies are bounded (above), but two other costs once made single
//! inserts pause for milliseconds while a map grew to 5M keys
//! (`cargo bench -p snapmap-benches --bench growth -- growth`, per-insert CPU time):
//!
//! - **Freeing retired tables touched every entry.** Tables held
//!   `Arc<Entry>`, so dropping a retired view or shard decremented one
//!   (cold, cache-missing) count per entry. Tables now hold plain pointers
//!   and entries are retired on their own when they leave the map
//!   (`shard::entry`, "Reclamation"): freeing a table is one `free`.
//! - **One collection freed too much.** crossbeam-epoch frees up to 8 bags
//!   of garbage in one collection, on whichever thread runs it, and a bag
//!   held up to 64 retired shards. Retirement now hands over a bag by
//!   weight (one per object plus one per KiB, up to 32), so a bag holds
//!   about two shards or 32 small values.
//!
//! Together they took the largest per-insert work from 2-5 ms to a few
//! hundred microseconds, where a `malloc` that grows the heap and the
//! machine's own noise are what remains (`BENCHMARKS.md` has the figures,
//! against dashmap's table resize).
//!
//! # Adversarial keys
//!
//! Keys whose hashes agree in many top bits (a weak or attacked hasher)
//! would split shards deeper and deeper. The directory depth is capped (the
//! builder's `max_shards`); a shard at the cap does not split and simply
//! grows past the capacity, so its rebuilds cost O(shard) again, but the
//! directory never grows beyond `max_shards` slots.

/// The state under the directory's resize lock (kept in `crate::directory`,
/// which owns the lock; named here too, where it is changed).
pub(crate) use crate::directory::Resize;
use crate::directory::{DirTable, Directory};
use crate::reclaim::retire;
use crate::shard::{Ctx, Shard};
use crate::stats::{Event, RetiredKind};
use crate::sync::atomic::Ordering;
use crate::sync::epoch::Guard;

/// Points `len` slots from `start` at `shard`. The caller holds the resize
/// lock.
fn point_slots<K, V>(table: &DirTable<K, V>, start: usize, len: usize, shard: *mut Shard<K, V>) {
    // SAFETY: `shard` is a live shard built by the caller (from `Shard::boxed`).
    let head = unsafe { (*shard).head_ptr() };
    for slot in &table.slots[start..start + len] {
        // Release: publishes the new shard's head (its view and entries,
        // and the shard behind it) to `shard_at`'s Acquire load.
        slot.store(head, Ordering::Release);
    }
}

/// Whether `shard` is the one the current table holds for its own range.
/// Retirement already says so under the shard's lock; migrations assert
/// this cross-check under the resize lock.
fn is_current<K, V>(table: &DirTable<K, V>, shard: &Shard<K, V>, guard: &Guard) -> bool {
    let (depth, prefix) = (shard.depth(), shard.prefix());
    depth <= table.depth()
        && core::ptr::eq(
            table.shard_at((prefix as usize) << (table.depth() - depth), guard),
            shard,
        )
}

/// The pointer a current shard's first slot stores, the one to retire it
/// through: it carries the allocation's provenance (from [`Shard::boxed`]),
/// which a pointer made from `&Shard` does not (freeing through that one is
/// undefined behaviour under the aliasing models Miri checks). The caller
/// holds the resize lock and has checked that `shard` is current.
fn owning_pointer<K, V>(table: &DirTable<K, V>, shard: &Shard<K, V>) -> *mut Shard<K, V> {
    let index = (shard.prefix() as usize) << (table.depth() - shard.depth());
    // Relaxed: slots change only under the resize lock, which we hold.
    let head = table.slots[index].load(Ordering::Relaxed);
    // SAFETY: a slot of the current table points to a live shard's head,
    // and we hold the resize lock, under which shards leave slots.
    let owned = unsafe { (*head).shard_ptr() };
    debug_assert!(core::ptr::eq(owned, shard), "the shard is current");
    owned
}

/// Retires a shard that has left every slot.
///
/// # Safety
///
/// `shard` is the pointer [`Shard::boxed`] returned (read back from a slot with
/// [`owning_pointer`]), is no longer in any slot of the current table, has
/// been marked retired under its lock, and is retired only once.
unsafe fn retire_shard<K, V>(shard: *mut Shard<K, V>, bytes: usize, guard: &Guard)
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    // SAFETY: per the contract; readers pinned before now may still use it,
    // and the epoch waits for them.
    unsafe { retire(guard, shard, RetiredKind::Shard, bytes) };
}

/// Splits `shard` if it is current and over capacity, or shallower than
/// `reserve_depth` (`SnapMap::reserve` splits ahead of a bulk load; every
/// write passes 0). See the module docs.
pub(crate) fn split<K, V>(
    dir: &Directory<K, V>,
    shard: &Shard<K, V>,
    reserve_depth: u32,
    ctx: &Ctx<'_>,
    guard: &Guard,
) where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let mut dirty = shard.lock();
    if dirty.is_retired()
        || !(shard.over_capacity_locked(&dirty, ctx.capacity) || shard.depth() < reserve_depth)
    {
        return;
    }
    let (depth, prefix) = (shard.depth(), shard.prefix());
    if depth >= dir.max_depth {
        return; // at the cap: the shard grows past capacity (module docs)
    }
    // The resize lock before the drain: the cross-check that the shard is
    // current must come before its entries move into the new shards (the
    // drain seals them, and there is no way back). Only a migration takes
    // a shard out of the table, marking it retired under the lock we hold
    // and checked, so the check fails only under the broken twin
    // `SplitWithoutRetire`.
    let mut resize = dir.resize.lock();
    let mut table = dir.table(guard);
    if !is_current(table, shard, guard) {
        return;
    }
    let bit = 63 - depth;
    // Each half gets about half the entries: room for 5/8 of them means
    // one allocation per half, with slack for an uneven split. The halves
    // are lists: each becomes its new shard's read view directly.
    let half = shard.migration_len_locked(&dirty, guard) * 5 / 8 + 8;
    let mut halves = [Vec::with_capacity(half), Vec::with_capacity(half)];
    let mut live = [0usize; 2];
    shard.drain_for_migration_locked(&mut dirty, ctx, guard, |entry| {
        let half = ((entry.hash >> bit) & 1) as usize;
        halves[half].push(entry);
        live[half] += usize::from(entry.is_live());
    });
    let [low, high] = halves;
    let new = [
        Shard::with_entries(depth + 1, prefix << 1, low, live[0], shard.huge_pages())
            .born_during(ctx.build)
            .boxed(),
        Shard::with_entries(
            depth + 1,
            (prefix << 1) | 1,
            high,
            live[1],
            shard.huge_pages(),
        )
        .born_during(ctx.build)
        .boxed(),
    ];
    let owned;
    {
        if table.depth() == depth {
            table = double_locked(dir, &mut resize, table, ctx, guard);
        }
        let global = table.depth();
        let span = 1usize << (global - depth - 1);
        let start = (prefix as usize) << (global - depth);
        owned = owning_pointer(table, shard);
        point_slots(table, start, span, new[0]);
        point_slots(table, start + span, span, new[1]);
        dir.bump_generation();
        if depth + 1 == global {
            resize.at_global_depth += 2;
        }
        drop(resize);
    }
    shard.retire_locked(&mut dirty, guard);
    let bytes = shard.heap_bytes_locked(&dirty, guard);
    drop(dirty);
    // SAFETY: the shard left its slots above and was marked retired under
    // its lock; only the holder of that lock (now us) retires it, once.
    unsafe { retire_shard(owned, bytes, guard) };
    ctx.stripe.count(Event::Splits, 1);
}

/// Merges `shard` with its buddy if both are current and sparse enough.
/// Returns the merged shard.
pub(crate) fn try_merge<'g, K, V>(
    dir: &Directory<K, V>,
    shard: &Shard<K, V>,
    ctx: &Ctx<'_>,
    guard: &'g Guard,
    before_change: &dyn Fn(&Shard<K, V>),
) -> Option<&'g Shard<K, V>>
where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let (depth, prefix) = (shard.depth(), shard.prefix());
    let limit = ctx.merge_limit();
    if depth <= dir.min_depth || shard.live() > limit {
        return None;
    }
    let table = dir.table(guard);
    let global = table.depth();
    if depth > global {
        return None;
    }
    let buddy = table.shard_at(((prefix ^ 1) as usize) << (global - depth), guard);
    if buddy.depth() != depth || buddy.prefix() != prefix ^ 1 || shard.live() + buddy.live() > limit
    {
        return None;
    }
    let (low, high) = if prefix & 1 == 0 {
        (shard, buddy)
    } else {
        (buddy, shard)
    };
    // A snapshot build in progress must capture both before they change
    // (`crate::snapshot`, "Copy before write"); outside any lock, since a
    // capture may wait for another thread's.
    before_change(low);
    before_change(high);
    let mut low_dirty = low.lock();
    if low_dirty.is_retired() {
        return None;
    }
    let mut high_dirty = high.lock();
    if high_dirty.is_retired() {
        return None;
    }
    // The resize lock and the cross-check before the drain, as in `split`.
    let mut resize = dir.resize.lock();
    let mut table = dir.table(guard);
    if !is_current(table, low, guard) || !is_current(table, high, guard) {
        return None;
    }
    let mut merged = Vec::with_capacity(low.live() + high.live());
    let mut live = 0usize;
    let mut take = |entry: crate::shard::entry::Hashed<K, V>| {
        merged.push(entry);
        live += usize::from(entry.is_live());
    };
    low.drain_for_migration_locked(&mut low_dirty, ctx, guard, &mut take);
    high.drain_for_migration_locked(&mut high_dirty, ctx, guard, &mut take);
    let merged_shard = Shard::with_entries(depth - 1, prefix >> 1, merged, live, low.huge_pages())
        .born_during(ctx.build)
        .boxed();
    let (owned_low, owned_high);
    {
        (owned_low, owned_high) = (owning_pointer(table, low), owning_pointer(table, high));
        let global = table.depth();
        let span = 1usize << (global - depth + 1);
        point_slots(
            table,
            ((prefix >> 1) as usize) << (global - depth + 1),
            span,
            merged_shard,
        );
        dir.bump_generation();
        if depth == global {
            resize.at_global_depth -= 2;
            while resize.at_global_depth == 0 && table.depth() > dir.min_depth {
                table = halve_locked(dir, &mut resize, table, ctx, guard);
            }
        }
        drop(resize);
    }
    low.retire_locked(&mut low_dirty, guard);
    high.retire_locked(&mut high_dirty, guard);
    let low_bytes = low.heap_bytes_locked(&low_dirty, guard);
    let high_bytes = high.heap_bytes_locked(&high_dirty, guard);
    drop(high_dirty);
    drop(low_dirty);
    // SAFETY: both left their slots above and were marked retired under
    // their locks, which we held; each is retired once, here.
    unsafe {
        retire_shard(owned_low, low_bytes, guard);
        retire_shard(owned_high, high_bytes, guard);
    }
    ctx.stripe.count(Event::Merges, 1);
    // SAFETY: the merged shard is in the current table and is retired only
    // after leaving it; `guard` is pinned.
    Some(unsafe { &*merged_shard })
}

/// Merges `shard` with its buddy, then the merged shard with its buddy, and
/// so on while the result stays sparse and this operation has copied less
/// than `2 * capacity` entries (the bound every operation keeps). Without
/// the cascade, shards emptied by the last removals would never merge
/// further, because nothing removes from an empty shard again.
///
/// `before_change` runs on each shard about to be merged, before its lock
/// is taken (a snapshot build's capture, see `crate::snapshot`).
pub(crate) fn merge_cascade<K, V>(
    dir: &Directory<K, V>,
    shard: &Shard<K, V>,
    ctx: &Ctx<'_>,
    guard: &Guard,
    before_change: &dyn Fn(&Shard<K, V>),
) where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let budget = 2 * ctx.capacity as u64;
    let mut shard = try_merge(dir, shard, ctx, guard, before_change);
    while let Some(merged) = shard {
        if ctx.copied.get() >= budget {
            break;
        }
        shard = try_merge(dir, merged, ctx, guard, before_change);
    }
}

/// Doubles the directory: slot `i` of the old table becomes slots `2i` and
/// `2i + 1`. Copies pointers only. The caller holds the resize lock.
fn double_locked<'g, K, V>(
    dir: &Directory<K, V>,
    resize: &mut Resize,
    old: &DirTable<K, V>,
    ctx: &Ctx<'_>,
    guard: &'g Guard,
) -> &'g DirTable<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    // Relaxed: slots are stored only under the resize lock we hold, whose
    // acquisition ordered those stores before these loads.
    let new = DirTable::boxed(old.depth() + 1, |i| {
        old.slots[i >> 1].load(Ordering::Relaxed)
    });
    resize.at_global_depth = 0;
    ctx.stripe.count(Event::DirectoryResizes, 1);
    dir.publish_table(new, guard)
}

/// Halves the directory: no shard is at the global depth, so slots `2i`
/// and `2i + 1` hold the same shard. The caller holds the resize lock.
fn halve_locked<'g, K, V>(
    dir: &Directory<K, V>,
    resize: &mut Resize,
    old: &DirTable<K, V>,
    ctx: &Ctx<'_>,
    guard: &'g Guard,
) -> &'g DirTable<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    // Relaxed: as in `double_locked`.
    let new = DirTable::boxed(old.depth() - 1, |i| {
        let head = old.slots[2 * i].load(Ordering::Relaxed);
        debug_assert_eq!(head, old.slots[2 * i + 1].load(Ordering::Relaxed));
        head
    });
    ctx.stripe.count(Event::DirectoryResizes, 1);
    let table = dir.publish_table(new, guard);
    let global = table.depth();
    resize.at_global_depth = table
        .distinct()
        // SAFETY: distinct pointers of the current table are live shards; we
        // hold the resize lock and `guard` is pinned.
        .filter(|&shard| unsafe { (*shard).depth() } == global)
        .count();
    table
}
