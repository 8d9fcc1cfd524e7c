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

use super::ChangeList;
use super::Snapshots;
use super::capture::{Build, Captured, Refs, take_capture};
use super::frozen::{
    BUCKET_LOAD, CHUNK, Chunk, Frozen, Head, IdIndex, Piece, PieceBytes, PiecePtr, Pieces,
    Snapshot, bucket, tag,
};

impl<K, V> Piece<K, V> {
    /// Clones what a capture points to into a piece.
    ///
    /// # Safety
    ///
    /// Every pointer in `refs` must still be valid: the caller is the build
    /// that `refs` was captured for, pinned since before its cut (see
    /// [`Refs`]).
    pub(super) unsafe fn from_refs(refs: &Refs<K, V>, account: &Arc<PieceBytes>) -> Self
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
        let mut heads = vec![Head::EMPTY; buckets + 1];
        // `starts[b]`: the position of bucket `b`'s first entry.
        let mut starts = vec![0u32; buckets + 1];
        for &(hash, _, _) in &refs.entries {
            starts[(bucket(hash) & mask) as usize + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let mut next = starts.clone();
        let mut order = vec![0u32; n];
        for (i, &(hash, _, _)) in refs.entries.iter().enumerate() {
            let b = (bucket(hash) & mask) as usize;
            let position = next[b] - starts[b];
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
        // The heads point into the entries' final heap block (a boxed
        // slice's block does not move when the box does).
        let entries = entries.into_boxed_slice();
        let base = entries.as_ptr();
        for (head, &start) in heads.iter_mut().zip(&starts) {
            // `start <= n`: inside the block or one past its end.
            head.first = base.wrapping_add(start as usize);
        }
        let heads = heads.into_boxed_slice();
        let bytes = size_of::<Self>()
            + size_of_val::<[(K, V)]>(&entries)
            + size_of_val::<[Head<K, V>]>(&heads);
        account.add(bytes as isize);
        Piece {
            heads,
            entries,
            mask,
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
        // The previous snapshot, if it is the last cut's (not one kept
        // from before a build that failed, nor dropped by `forget`): then
        // the list of changed shards covers everything since its cut.
        let previous = self.cell.load_full();
        let previous_pieces = previous.as_ref().map(|frozen| frozen.pieces.clone());
        let last_cut = *last_epoch;
        *last_epoch += 1;
        let epoch = *last_epoch;
        *self.build.lock() = Some(Build {
            epoch,
            previous: previous_pieces.clone(),
            captured: HashMap::default(),
        });
        let end = EndBuild {
            gate,
            build: &self.build,
        };

        // Step 2: the cut. With the gate closed no write is in progress:
        // take the list of changed shards, list the current shards (or only
        // the changed ones, if the layout is the previous snapshot's) and
        // announce the build, then reopen.
        let closed = (!injected(Bug::SnapshotWithoutGate)).then(|| gate.close());
        let changed = core::mem::replace(
            &mut *self.changed.lock(),
            ChangeList {
                shards: Vec::new(),
                overflowed: false,
            },
        );
        let generation = directory.generation();
        let table = directory.table(guard);
        let depth = table.depth();
        let incremental = previous.filter(|previous| {
            !changed.overflowed
                && crate::gate::revision_of(previous.stamp) == last_cut
                && previous.pieces.generation == generation
                && previous.depth == depth
        });
        let cut: Vec<*const Shard<K, V>> = match &incremental {
            Some(_) => changed.shards.iter().map(|shard| shard.0).collect(),
            None => table.distinct().map(|shard| shard.cast_const()).collect(),
        };
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
            // is a shard kept alive by the epoch for `guard`'s life; a
            // listed shard, when the generation is unchanged, was live at
            // the cut (`ShardPtr`), after `guard` was pinned.
            let shard = unsafe { &*shard };
            let mut mine = None;
            shard.capture_once(epoch, || {
                mine = take_capture(shard, previous_pieces.as_deref(), guard);
            });
            own.push(mine);
        }
        drop(previous_pieces);
        let mut build = end
            .take()
            .expect("the build ends only here or on unwinding");

        // Step 4: clone what was captured by pointer, assemble in hash
        // order and publish. Writers now change shards freely; what the
        // pointers reach stays alive while `guard` is pinned (`Refs`).
        let mut fresh = Vec::with_capacity(cut.len());
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
                    Arc::new(unsafe { Piece::from_refs(&refs, &self.bytes) })
                }
            };
            fresh.push((shard, piece));
        }
        let (pieces, slots, len) = match &incremental {
            Some(previous) => {
                reused += previous.pieces.count() - fresh.len();
                previous.update(fresh)
            }
            None => layout(depth, generation, fresh),
        };
        let frozen = Arc::new(Frozen {
            pieces,
            slots,
            shift: 64 - slot_bits(depth),
            depth,
            len,
            stamp,
            hasher: hasher.clone(),
        });
        self.cell.store(frozen.clone());
        drop(last_epoch);
        stripe.count(Event::SnapshotBuilds, 1);
        stripe.count(Event::SnapshotPiecesCopied, copied);
        stripe.count(Event::SnapshotPiecesReused, reused as u64);
        Snapshot { frozen }
    }
}

/// The pieces a build made or reused for the shards it listed, by shard.
type Fresh<'g, K, V> = Vec<(&'g Shard<K, V>, Arc<Piece<K, V>>)>;

/// What a build assembles: the pieces, the slot table, the entry count.
type Assembled<K, V> = (Arc<Pieces<K, V>>, Box<[PiecePtr<K, V>]>, usize);

/// How many top hash bits index a snapshot's slot table, for a directory
/// of depth `depth`: the depth, but at least 1, so that a lookup finds its
/// slot with one shift by `64 - bits` (a map of one shard, depth 0, gets
/// two slots holding the same piece).
pub(super) fn slot_bits(depth: u32) -> u32 {
    depth.max(1)
}

/// A full build's layout: every shard of the cut, in hash order, a new
/// index of their positions, every slot filled.
fn layout<K, V>(depth: u32, generation: u64, fresh: Fresh<'_, K, V>) -> Assembled<K, V> {
    let bits = slot_bits(depth);
    let mut slots: Vec<Option<PiecePtr<K, V>>> = vec![None; 1 << bits];
    let mut index = IdIndex::default();
    let mut chunks = Vec::with_capacity(fresh.len().div_ceil(CHUNK));
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut len = 0;
    for (position, (shard, piece)) in fresh.into_iter().enumerate() {
        len += piece.len();
        let span = 1usize << (bits - shard.depth());
        let first = (shard.prefix() as usize) << (bits - shard.depth());
        // The pointer stays valid while `pieces` holds the `Arc`.
        slots[first..first + span].fill(Some(piece.ptr()));
        index.insert(shard.id(), position as u32);
        chunk.push(piece);
        if chunk.len() == CHUNK {
            chunks.push(Arc::new(Chunk(
                core::mem::take(&mut chunk).into_boxed_slice(),
            )));
        }
    }
    if !chunk.is_empty() {
        chunks.push(Arc::new(Chunk(chunk.into_boxed_slice())));
    }
    let pieces = Pieces {
        chunks: chunks.into_boxed_slice(),
        index: Arc::new(index),
        generation,
    };
    // The cut's shards tile the hash space, so every slot is filled.
    // Only the broken twin that skips the gate can miss a shard; its
    // slots then show the first piece (as an index of 0 did), so that
    // the twin's wrong content, not a panic here, is what its model
    // catches.
    debug_assert!(
        injected(Bug::SnapshotWithoutGate) || slots.iter().all(Option::is_some),
        "the cut's shards cover every directory slot"
    );
    let first = pieces.iter().next().map(|piece| piece.ptr());
    let slots = slots
        .into_iter()
        .map(|slot| {
            slot.or(first)
                .expect("a cut lists at least one shard (the directory is never empty)")
        })
        .collect();
    (Arc::new(pieces), slots, len)
}

impl<K, V, S> Frozen<K, V, S> {
    /// An incremental build's layout: this snapshot's, with the pieces of
    /// the changed shards (`fresh`) put in their places. The slot table is
    /// copied (pointers), the chunks holding no changed piece are shared,
    /// the others copied; the unchanged pieces themselves are not touched.
    fn update(&self, fresh: Fresh<'_, K, V>) -> Assembled<K, V> {
        let mut slots = self.slots.clone();
        let mut chunks = self.pieces.chunks.to_vec();
        let mut copied = vec![false; chunks.len()];
        let mut len = self.len;
        for (shard, piece) in fresh {
            let position = *self
                .pieces
                .index
                .get(&shard.id())
                .expect("an unchanged layout holds every current shard")
                as usize;
            len = len - self.pieces.at(position).len() + piece.len();
            let bits = slot_bits(self.depth);
            let span = 1usize << (bits - shard.depth());
            let first = (shard.prefix() as usize) << (bits - shard.depth());
            slots[first..first + span].fill(piece.ptr());
            let chunk = &mut chunks[position / CHUNK];
            if !copied[position / CHUNK] {
                *chunk = Arc::new(Chunk(chunk.0.clone()));
                copied[position / CHUNK] = true;
            }
            Arc::get_mut(chunk)
                .expect("a chunk copied by this build is not shared")
                .0[position % CHUNK] = piece;
        }
        let pieces = Pieces {
            chunks: chunks.into_boxed_slice(),
            index: self.pieces.index.clone(),
            generation: self.pieces.generation,
        };
        (Arc::new(pieces), slots, len)
    }
}
