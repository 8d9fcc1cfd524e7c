//! The raw core: the map's fields, the read path and the one write loop.
//!
//! The public faces ([`SnapMap`](crate::SnapMap) and
//! [`Pinned`](crate::Pinned)) are thin: they hash nothing, lock nothing and
//! retry nothing themselves. They hand a hash, a guard and the operation's
//! shard step to this module, which owns everything a write must do around
//! that step, in one place, so that no operation can skip a part of it (as
//! `compare_and_swap` and `update` once skipped the split/merge step when
//! each operation had its own copy of the loop).
//!
//! # The write loop ([`RawMap::write`])
//!
//! ```text
//!   enter the write gate (crate::gate)         per map; nested entries are free
//!   ctx = promotion rule, capacity, stripe, snapshot build number
//!   loop:
//!       shard = directory.locate(hash)
//!       capture shard for the build, if one is running (crate::snapshot)
//!       step(shard)  ── Err(payload): shard retired by a split or merge,
//!                       retry from the directory with the payload back
//!       Ok(out, changed):
//!           changed? bump the version of the shard that holds hash *now*
//!           split, merge, or compact the shard if the step asked for it
//!           return out
//! ```
//!
//! - **Gate.** Inside it, a write is wholly before or wholly after every
//!   snapshot's cut; a batch holds it across all its writes.
//! - **Capture.** A writer that entered after a build's cut captures the
//!   shard before changing it (copy before write, by pointer).
//! - **Retry.** A shard step returns its payload (key, value) when it
//!   finds the shard retired under its lock; the loop looks the shard up
//!   again. Lock-free steps never see `Retired`: they work through the
//!   retired shard's view, whose entries the new shards share.
//! - **Version.** Bumped after the change, still inside the gate, on the
//!   shard that holds the key now (a lock-free write may have gone through
//!   a retired shard).
//! - **Migration.** The step records in the context whether the shard
//!   passed its capacity (split), became sparse (merge) or holds too many
//!   removed keys (compact); [`RawMap::after_write`] does it, once, for
//!   every write.
//!
//! [`RawMap::clear`] walks hash space shard by shard with the same pieces
//! (one gate entry for the whole walk, a capture and an `after_write` per
//! shard).
//!
//! # The read path ([`RawMap::get`])
//!
//! A lookup enters no gate and builds no context: directory, the shard's
//! head (`shard::Head::get_fast_with`: the view word, in a block packed
//! with the other shards' heads), view, entry, value, all lock-free. Only
//! a miss in an amended view takes the cold path ([`RawMap::get_slow`]),
//! which goes on from the head to the shard, locks it and retries from
//! the directory if the shard was retired.

use core::hash::{BuildHasher, Hash};

use equivalent::Equivalent;

use crate::directory::Directory;
use crate::gate::{GateGuard, WriteGate};
use crate::migrate;
use crate::shard::entry::Entry;
use crate::shard::{Ctx, Retired, Retry, Shard};
use crate::snapshot::{Snapshot, Snapshots};
use crate::stats::Stripe;
use crate::stats::Stripes;
use crate::sync::epoch::Guard;
use crate::twins::{Bug, injected};

/// The map's fields. See the module docs.
pub(crate) struct RawMap<K, V, S> {
    pub(crate) hasher: S,
    pub(crate) directory: Directory<K, V>,
    pub(crate) stripes: Stripes,
    /// Promote when `misses >= min(len(dirty), promote_after)`.
    pub(crate) promote_after: usize,
    /// A shard whose dirty table passes this many entries splits.
    pub(crate) capacity: usize,
    /// `Builder::inline_values`: store a new key's first value inline
    /// although `V` is not a plain scalar (`V: Copy`, so it has no interior
    /// mutability; see `crate::shard::entry`, "Inline values").
    pub(crate) inline_values: bool,
    /// Every write runs inside it; snapshot builds close it briefly.
    pub(crate) gate: WriteGate,
    pub(crate) snapshots: Snapshots<K, V, S>,
}

/// What a shard step did: its result, and whether it changed the shard's
/// content (then the loop bumps the version snapshots compare).
pub(crate) struct Written<T> {
    pub(crate) out: T,
    pub(crate) changed: bool,
}

impl<T> Written<T> {
    /// A step's result and whether it changed the content.
    #[inline]
    pub(crate) fn new(out: T, changed: bool) -> Self {
        Written { out, changed }
    }
}

impl<K, V, S> RawMap<K, V, S> {
    pub(crate) fn new(
        shard_bits: u32,
        max_shard_bits: u32,
        capacity: usize,
        promote_after: usize,
        huge_pages: bool,
        inline_values: bool,
        hasher: S,
    ) -> Self {
        RawMap {
            hasher,
            directory: Directory::new(shard_bits, max_shard_bits, huge_pages),
            stripes: Stripes::new(),
            promote_after,
            capacity,
            inline_values,
            gate: WriteGate::new(),
            snapshots: Snapshots::new(),
        }
    }

    /// Enters the write gate for a batch: every write the calling thread
    /// makes to this map until the guard drops is part of one gated
    /// section (nested entries are free).
    pub(crate) fn enter_batch(&self) -> GateGuard<'_> {
        self.gate.enter()
    }
}

impl<K, V, S> RawMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// One hash per operation: it picks the shard and probes its table.
    #[inline]
    pub(crate) fn hash<Q: ?Sized + Hash>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard that holds `hash` now.
    #[inline]
    pub(crate) fn shard<'g>(&self, hash: u64, guard: &'g Guard) -> &'g Shard<K, V> {
        self.directory.locate(hash, guard)
    }

    /// The context of one operation. Writers make it inside the gate, so
    /// that it carries the snapshot build they must capture for.
    #[inline]
    pub(crate) fn ctx<'s>(&self, stripe: &'s Stripe) -> Ctx<'s> {
        Ctx::new(
            self.promote_after,
            self.capacity,
            self.inline_values,
            stripe,
            self.gate.build_epoch(),
            self.gate.cycle().wrapping_add(1),
        )
    }

    /// After a change to `shard`'s content, inside the gate: bumps its
    /// version and, the first time in this cycle, puts it on the list of
    /// changed shards the next snapshot build copies (`crate::snapshot`,
    /// "Changed shards").
    #[inline]
    fn content_changed(&self, shard: &Shard<K, V>, ctx: &Ctx<'_>, guard: &Guard) {
        shard.bump_version();
        self.listed(shard, ctx, guard);
    }

    /// Puts `shard` on the list of changed shards, once per cycle.
    #[inline]
    fn listed(&self, shard: &Shard<K, V>, ctx: &Ctx<'_>, guard: &Guard) {
        if !injected(Bug::ChangeNotListed) && shard.list_once(ctx.cycle_mark) {
            let slots = self.directory.table(guard).slots.len();
            self.snapshots.note_changed(shard, slots);
        }
    }

    /// Looks `key` up: `(value, hit)`, where `hit` says the read view
    /// answered without a lock (the caller counts hits where it likes).
    #[inline]
    pub(crate) fn get<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
        stripe: &Stripe,
    ) -> (Option<&'g V>, bool)
    where
        Q: ?Sized + Equivalent<K>,
    {
        self.get_with(hash, key, guard, stripe, |entry, guard| entry.load(guard))
    }

    /// [`get`](Self::get), answering with `found(entry, guard)` for the
    /// entry holding `key` (its value, or its key and value).
    ///
    /// `found` is given the guard rather than capturing it, so that a
    /// caller's closure captures nothing: the hit path then stores nothing
    /// for the reference to it the miss path takes (a closure capturing the
    /// guard cost a read hit two instructions, building it on the stack).
    #[inline]
    pub(crate) fn get_with<'g, Q, R>(
        &self,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
        stripe: &Stripe,
        found: impl Fn(&'g Entry<K, V>, &'g Guard) -> Option<R>,
    ) -> (Option<R>, bool)
    where
        Q: ?Sized + Equivalent<K>,
    {
        let table = self.directory.table(guard);
        // The head alone: a hit never touches the rest of the shard.
        let head = table.head_of(hash, guard);
        match head.get_fast_with(hash, key, guard, table.speculates(), |entry| {
            found(entry, guard)
        }) {
            Ok(answer) => (answer, true),
            Err(()) => (
                self.get_slow(hash, key, head.shard(guard), guard, stripe, &found),
                false,
            ),
        }
    }

    /// A miss in an amended view: look in dirty under the lock (counting a
    /// miss), retrying from the directory if the shard was retired.
    #[cold]
    fn get_slow<'g, Q, R>(
        &self,
        hash: u64,
        key: &Q,
        mut shard: &'g Shard<K, V>,
        guard: &'g Guard,
        stripe: &Stripe,
        found: &impl Fn(&'g Entry<K, V>, &'g Guard) -> Option<R>,
    ) -> Option<R>
    where
        Q: ?Sized + Equivalent<K>,
    {
        let found = |entry| found(entry, guard);
        let found = &found;
        let ctx = self.ctx(stripe);
        loop {
            match shard.get_slow_with(hash, key, &ctx, guard, found) {
                Ok(answer) => return answer,
                Err(Retired) => {
                    let head = self.directory.table(guard).head_of(hash, guard);
                    if let Ok(answer) = head.get_fast_with(hash, key, guard, false, found) {
                        return answer;
                    }
                    shard = head.shard(guard);
                }
            }
        }
    }

    /// The write loop (module docs): runs `step` on the shard that holds
    /// `hash`, inside the gate, capturing for a snapshot build first,
    /// retrying with the payload handed back while the shard it reached is
    /// retired, then bumping the version and migrating as the step asked.
    #[inline]
    pub(crate) fn write<'g, P, T>(
        &self,
        hash: u64,
        guard: &'g Guard,
        stripe: &Stripe,
        payload: P,
        mut step: impl FnMut(&'g Shard<K, V>, P, &Ctx<'_>) -> Retry<Written<T>, P>,
    ) -> T {
        let _gate = self.gate.enter();
        let ctx = self.ctx(stripe);
        let mut payload = payload;
        loop {
            let shard = self.shard(hash, guard);
            self.before_write(shard, &ctx, guard);
            match step(shard, payload, &ctx) {
                Ok(Written { out, changed }) => {
                    if changed {
                        // The shard that holds the key *now* (a lock-free
                        // write may have gone through a retired shard).
                        self.content_changed(self.shard(hash, guard), &ctx, guard);
                    }
                    self.after_write(shard, &ctx, guard);
                    self.record_copied(&ctx);
                    return out;
                }
                Err(back) => payload = back,
            }
        }
    }

    /// Stores `value` under `key`, whose hash is `hash`, returning the
    /// previous value (the write step of `Pinned::insert`, for callers that
    /// hashed the key already).
    #[inline]
    pub(crate) fn insert<'g>(
        &self,
        hash: u64,
        key: K,
        value: V,
        guard: &'g Guard,
        stripe: &Stripe,
    ) -> Option<&'g V> {
        self.write(
            hash,
            guard,
            stripe,
            (key, value),
            |shard, (key, value), ctx| {
                let previous = shard.insert(hash, key, value, ctx, guard)?;
                Ok(Written::new(previous, true))
            },
        )
    }

    /// Removes `key`, whose hash is `hash`, returning the key and value it
    /// held (the write step of `Pinned::remove_entry`, for callers that
    /// hashed the key already).
    #[inline]
    pub(crate) fn remove<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        guard: &'g Guard,
        stripe: &Stripe,
    ) -> Option<(&'g K, &'g V)>
    where
        Q: ?Sized + Equivalent<K>,
    {
        self.write(hash, guard, stripe, (), |shard, (), ctx| {
            let removed = shard.remove(hash, key, ctx, guard).map_err(|_| ())?;
            Ok(Written::new(removed, removed.is_some()))
        })
    }

    /// A snapshot (see `crate::snapshot`): the cached one if nothing
    /// changed, otherwise a build.
    pub(crate) fn snapshot(&self) -> Snapshot<K, V, S>
    where
        K: Clone,
        V: Clone,
        S: Clone,
    {
        // Unchanged: the cached snapshot, before the pin (a full barrier),
        // the stripe lookup and the nesting check that a build needs.
        if let Some(snapshot) = self.snapshots.unchanged(&self.gate) {
            return snapshot;
        }
        let guard = crate::sync::epoch::pin();
        self.snapshots.snapshot(
            &self.directory,
            &self.gate,
            &self.hasher,
            self.stripes.mine(),
            &guard,
        )
    }

    /// Waits until a snapshot's revision passes `revision` and returns
    /// that snapshot, or `None` once `deadline` has passed. See
    /// `SnapMap::wait_for_change` for the semantics and `crate::gate`,
    /// "Change notification", for the protocol.
    pub(crate) fn wait_for_change(
        &self,
        revision: u64,
        deadline: Option<std::time::Instant>,
    ) -> Option<Snapshot<K, V, S>>
    where
        K: Clone,
        V: Clone,
        S: Clone,
    {
        loop {
            let stamp = match self.past(revision) {
                Ok(snapshot) => return Some(snapshot),
                Err(stamp) => stamp,
            };
            if let Some(listener) = self.gate.listen_for_change(stamp) {
                if !listener.wait(deadline) {
                    return None;
                }
            }
        }
    }

    /// The future form of [`wait_for_change`](Self::wait_for_change), with
    /// no deadline (drop the future to stop waiting).
    #[cfg(not(snapmap_loom))]
    pub(crate) async fn changed(&self, revision: u64) -> Snapshot<K, V, S>
    where
        K: Clone,
        V: Clone,
        S: Clone,
    {
        loop {
            let stamp = match self.past(revision) {
                Ok(snapshot) => return snapshot,
                Err(stamp) => stamp,
            };
            if let Some(listener) = self.gate.listen_for_change(stamp) {
                listener.await;
            }
        }
    }

    /// The current snapshot if its revision is past `revision`, otherwise
    /// its stamp, to wait on: the snapshot is current (it holds every
    /// write that has completed), so the map passes `revision` only once
    /// the change word moves off that stamp.
    fn past(&self, revision: u64) -> Result<Snapshot<K, V, S>, u64>
    where
        K: Clone,
        V: Clone,
        S: Clone,
    {
        let snapshot = self.snapshot();
        if snapshot.revision() > revision {
            Ok(snapshot)
        } else {
            Err(snapshot.stamp())
        }
    }

    /// Removes every entry, shard by shard in hash order (as iteration
    /// walks), so that splits and merges meanwhile neither skip nor repeat
    /// a range. One gated section for the whole walk.
    pub(crate) fn clear(&self, guard: &Guard, stripe: &Stripe) {
        let _gate = self.gate.enter();
        let ctx = self.ctx(stripe);
        let mut cursor = Some(0u64);
        while let Some(at) = cursor {
            let shard = self.shard(at, guard);
            self.before_write(shard, &ctx, guard);
            if shard.clear(&ctx, guard).is_ok() {
                // `clear` bumped the version if it removed anything.
                self.listed(shard, &ctx, guard);
                cursor = shard.hash_range().1.checked_add(1);
                // An emptied shard merges with an emptied buddy.
                ctx.wants_merge.set(true);
                self.after_write(shard, &ctx, guard);
            }
        }
        self.record_copied(&ctx);
    }

    /// Splits shards until every shard has at least `depth` hash bits
    /// (at most the directory's cap): [`SnapMap::reserve`](crate::SnapMap::reserve).
    /// Walks hash space as [`clear`](Self::clear) does; each split is one
    /// gated section with its own context (a capture first if a snapshot
    /// build needs one, its own copy count), so a snapshot build waits for
    /// one split at most, and each counts as one operation in `stats()`.
    pub(crate) fn reserve_depth(&self, depth: u32, guard: &Guard, stripe: &Stripe) {
        let depth = depth.min(self.directory.max_depth);
        let mut cursor = Some(0u64);
        while let Some(at) = cursor {
            let shard = self.shard(at, guard);
            if shard.depth() >= depth {
                cursor = shard.hash_range().1.checked_add(1);
                continue;
            }
            let _gate = self.gate.enter();
            let ctx = self.ctx(stripe);
            self.before_write(shard, &ctx, guard);
            // Split, or found retired: the cursor is looked up again.
            migrate::split(&self.directory, shard, depth, &ctx, guard);
            self.record_copied(&ctx);
        }
    }

    /// Before a write changes `shard`: if a snapshot build's cut has been
    /// taken and the shard not yet captured for it, capture it now (or
    /// wait for the thread capturing it). See `crate::snapshot`, "Copy
    /// before write".
    #[inline]
    fn before_write(&self, shard: &Shard<K, V>, ctx: &Ctx<'_>, guard: &Guard) {
        if ctx.build != 0 && shard.needs_capture(ctx.build) && !injected(Bug::WriteWithoutCapture) {
            self.snapshots.capture(shard, ctx.build, guard);
        }
    }

    /// After a write: splits, merges or compacts the shard if the write
    /// asked for it (each request is taken, so a walk over several shards
    /// asks afresh for each).
    #[inline]
    fn after_write(&self, shard: &Shard<K, V>, ctx: &Ctx<'_>, guard: &Guard) {
        if ctx.wants_split.take() {
            migrate::split(&self.directory, shard, 0, ctx, guard);
        } else if ctx.wants_merge.take() {
            migrate::merge_cascade(&self.directory, shard, ctx, guard, &|buddy| {
                self.before_write(buddy, ctx, guard);
            });
        }
        // After a merge attempt: a merged shard was compacted by the merge
        // (`compact` skips a retired one); a shard that could not merge (at
        // the minimum shard count, say) still must not hold its removed
        // keys forever.
        if ctx.wants_compact.take() {
            shard.compact(ctx, guard);
        }
    }

    /// Records the entries one operation copied (the bound `stats()`
    /// reports as the most copied by one operation).
    #[inline]
    fn record_copied(&self, ctx: &Ctx<'_>) {
        let copied = ctx.copied.get();
        if copied > 0 {
            self.stripes.record_copied(copied);
        }
    }
}
