//! The build protocol: the cut, the captures, the clone and the
//! publication (the steps of "Building one" in the `snapshot` module
//! docs).
//!
//! [`Snapshots::snapshot`] returns the cached snapshot if nothing changed;
//! otherwise it takes the build lock, announces a build, closes the write
//! gate for the cut (listing the shards), captures every shard no writer
//! has captured yet, clones what was captured by pointer
//! ([`Piece::from_refs`]) while writers run, assembles the pieces in hash
//! order and publishes. [`EndBuild`] ends the build on every path,
//! unwinding from a user `Clone` included.

use std::collections::HashMap;

use crate::directory::Directory;
use crate::gate::WriteGate;
use crate::shard::Shard;
use crate::stats::{Event, Stripe};
use crate::sync::Arc;
use crate::sync::epoch::Guard;
use crate::twins::{Bug, injected};

use super::Snapshots;
use super::capture::{Build, Captured, PieceMap, Refs, take_capture};
use super::frozen::{
    BUCKET_LOAD, Frozen, Head, Piece, PieceBytes, PiecePtr, Snapshot, bucket, tag,
};

impl<K, V> Piece<K, V> {
    /// Clones what a capture points to into a piece.
    ///
    /// # Safety
    ///
    /// Every pointer in `refs` must still be valid: the caller is the build
    /// that `refs` was captured for, pinned since before its cut (see
    /// [`Refs`]).
    pub(super) unsafe fn from_refs(
        shard_id: u64,
        refs: &Refs<K, V>,
        account: &Arc<PieceBytes>,
    ) -> Self
    where
        K: Clone,
        V: Clone,
    {
        // A counting sort by bucket: count, sum up into starts, place.
        let n = refs.entries.len();
        assert!(
            u32::try_from(n).is_ok(),
            "a shard of 2^32 entries or more cannot be frozen into a snapshot piece"
        );
        let buckets = (n / BUCKET_LOAD).next_power_of_two();
        let mask = buckets as u64 - 1;
        let mut heads = vec![Head::default(); buckets + 1];
        for &(hash, _, _) in &refs.entries {
            heads[(bucket(hash) & mask) as usize + 1].start += 1;
        }
        for b in 1..heads.len() {
            heads[b].start += heads[b - 1].start;
        }
        let mut next: Vec<u32> = heads.iter().map(|head| head.start).collect();
        let mut order = vec![0u32; n];
        for (i, &(hash, _, _)) in refs.entries.iter().enumerate() {
            let b = (bucket(hash) & mask) as usize;
            let position = next[b] - heads[b].start;
            if let Some(t) = heads[b].tags.get_mut(position as usize) {
                *t = tag(hash);
            }
            order[next[b] as usize] = i as u32;
            next[b] += 1;
        }
        let mut entries = Vec::with_capacity(n);
        for &i in &order {
            let (_, key, value) = refs.entries[i as usize];
            // SAFETY: valid per this function's contract; `K` and `V` are
            // `Sync`, and nobody writes through these pointers (keys and
            // value nodes are immutable once published).
            let (key, value) = unsafe { (&*key, &*value) };
            entries.push((key.clone(), value.clone()));
        }
        let (entries, heads) = (entries.into_boxed_slice(), heads.into_boxed_slice());
        let bytes =
            size_of::<Self>() + size_of_val::<[(K, V)]>(&entries) + size_of_val::<[Head]>(&heads);
        account.add(bytes as isize);
        Piece {
            heads,
            entries,
            mask,
            shard_id,
            version: refs.version,
            bytes,
            account: account.clone(),
        }
    }
}

/// Ends a build, also when a user `Clone` panics in it: writers stop
/// capturing and what was captured is dropped.
struct EndBuild<'a, K, V> {
    gate: &'a WriteGate,
    build: &'a crate::sync::Mutex<Option<Build<K, V>>>,
}

impl<K, V> EndBuild<'_, K, V> {
    /// Ends the build (through `drop`) and returns what it captured.
    fn take(self) -> Option<Build<K, V>> {
        self.build.lock().take()
    }
}

impl<K, V> Drop for EndBuild<'_, K, V> {
    fn drop(&mut self) {
        self.gate.end_build();
        drop(self.build.lock().take());
    }
}

impl<K, V, S> Snapshots<K, V, S>
where
    K: Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: Clone,
{
    /// The cached snapshot, if no write has completed or begun since it was
    /// built.
    #[inline]
    fn unchanged(&self, gate: &WriteGate) -> Option<Snapshot<K, V, S>> {
        let cached = self.cell.load_full()?;
        gate.unchanged_since(cached.stamp)
            .then_some(Snapshot { frozen: cached })
    }

    /// Builds (or returns the cached) snapshot. See the module docs.
    pub(crate) fn snapshot(
        &self,
        directory: &Directory<K, V>,
        gate: &WriteGate,
        hasher: &S,
        stripe: &Stripe,
        guard: &Guard,
    ) -> Snapshot<K, V, S> {
        assert!(
            !gate.held_by_current_thread(),
            "SnapMap::snapshot() called inside a batch or a write closure of the same map: \
             it would wait for itself. Take the snapshot before or after the batch (a \
             snapshot of another map is fine here), or read the batch's own writes \
             through its handle"
        );
        if let Some(snapshot) = self.unchanged(gate) {
            return snapshot;
        }
        let mut last_epoch = self.builder.lock();
        if let Some(snapshot) = self.unchanged(gate) {
            return snapshot;
        }
        *last_epoch += 1;
        let epoch = *last_epoch;
        let previous: Arc<PieceMap<K, V>> = self
            .cell
            .load_full()
            .map(|frozen| {
                frozen
                    .pieces
                    .iter()
                    .map(|p| (p.shard_id, p.clone()))
                    .collect::<PieceMap<K, V>>()
            })
            .unwrap_or_default()
            .into();
        *self.build.lock() = Some(Build {
            epoch,
            previous: previous.clone(),
            captured: HashMap::default(),
        });
        let end = EndBuild {
            gate,
            build: &self.build,
        };

        // Step 2: the cut. With the gate closed no write is in progress:
        // list the current shards and announce the build, then reopen.
        let closed = (!injected(Bug::SnapshotWithoutGate)).then(|| gate.close());
        let table = directory.table(guard);
        let depth = table.depth();
        let cut: Vec<*mut Shard<K, V>> = table.distinct().collect();
        let stamp = gate.begin_build(epoch);
        drop(closed);

        // Step 3: capture every shard of the cut that no writer has
        // captured yet (writers capture what they are about to change).
        // Pointers only: writers wait for a capture, never for a clone.
        // The build keeps its own captures here, by cut position, without
        // the build lock; writers' captures are in `Build::captured`.
        let mut own: Vec<Option<Captured<K, V>>> = Vec::with_capacity(cut.len());
        for &shard in &cut {
            // SAFETY: a distinct slot value of a table loaded under `guard`
            // is a shard kept alive by the epoch for `guard`'s life.
            let shard = unsafe { &*shard };
            let mut mine = None;
            shard.capture_once(epoch, || mine = take_capture(shard, &previous, guard));
            own.push(mine);
        }
        let mut build = end
            .take()
            .expect("the build ends only here or on unwinding");

        // Step 4: clone what was captured by pointer, assemble in hash
        // order and publish. Writers now change shards freely; what the
        // pointers reach stays alive while `guard` is pinned (`Refs`).
        let mut slots: Vec<Option<PiecePtr<K, V>>> = vec![None; 1 << depth];
        let (mut pieces, mut len) = (Vec::with_capacity(cut.len()), 0);
        let (mut copied, mut reused) = (0, 0);
        for (&shard, mine) in cut.iter().zip(own) {
            // SAFETY: as above.
            let shard = unsafe { &*shard };
            // Every shard of the cut was captured above, by the build or a
            // writer; only the broken twin that skips the gate can miss one
            // (a writer that was not waited for retired it uncaptured).
            let Some(captured) = mine.or_else(|| build.captured.remove(&shard.id())) else {
                continue;
            };
            let piece = match captured {
                Captured::Reused(piece) => {
                    reused += 1;
                    piece
                }
                Captured::Refs(refs) => {
                    copied += 1;
                    // SAFETY: `refs` was captured for this build, and
                    // `guard` has been pinned since before its cut.
                    Arc::new(unsafe { Piece::from_refs(shard.id(), &refs, &self.bytes) })
                }
            };
            len += piece.len();
            let span = 1usize << (depth - shard.depth());
            let first = (shard.prefix() as usize) << (depth - shard.depth());
            // The pointer stays valid while `pieces` holds the `Arc`.
            let ptr = piece.ptr();
            slots[first..first + span].fill(Some(ptr));
            pieces.push(piece);
        }
        // The cut's shards tile the hash space, so every slot is filled.
        // Only the broken twin that skips the gate can miss a shard; its
        // slots then show the first piece (as an index of 0 did), so that
        // the twin's wrong content, not a panic here, is what its model
        // catches.
        debug_assert!(
            injected(Bug::SnapshotWithoutGate) || slots.iter().all(Option::is_some),
            "the cut's shards cover every directory slot"
        );
        let first = pieces.first().map(|piece| piece.ptr());
        let slots: Box<[PiecePtr<K, V>]> = slots
            .into_iter()
            .map(|slot| {
                slot.or(first)
                    .expect("a cut lists at least one shard (the directory is never empty)")
            })
            .collect();
        let frozen = Arc::new(Frozen {
            pieces: pieces.into_boxed_slice(),
            slots,
            depth,
            len,
            stamp,
            hasher: hasher.clone(),
        });
        self.cell.store(frozen.clone());
        drop(last_epoch);
        stripe.count(Event::SnapshotBuilds, 1);
        stripe.count(Event::SnapshotPiecesCopied, copied);
        stripe.count(Event::SnapshotPiecesReused, reused);
        Snapshot { frozen }
    }
}
