//! The capture state: what a build holds for each shard of its cut, and
//! how a shard is captured (see "Copy before write" in the `snapshot`
//! module docs).
//!
//! A build in progress is a [`Build`]: its number, the previous snapshot's
//! pieces (to reuse) and the shards captured so far by writers, by id.
//! Capturing a shard ([`take_capture`]) reuses the previous piece if the
//! shard's version is unchanged and otherwise copies pointers ([`Refs`]),
//! never user data, so a writer that must capture before it writes pays
//! about a microsecond and runs no user code. [`Snapshots::capture`] is the
//! writers' entry point; the build captures the shards nobody changed
//! itself (`crate::snapshot::build`).

use core::hash::{BuildHasherDefault, Hasher};
use std::collections::HashMap;

use crate::shard::Shard;
use crate::sync::Arc;
use crate::sync::epoch::Guard;

use super::Snapshots;
use super::frozen::{Piece, Pieces};

/// Shard ids are unique counters: one multiply (Fibonacci hashing) spreads
/// them over the table, far cheaper than SipHash.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// A shard captured by pointer: the hash, key and value of each live
/// entry as of a build's cut, and the shard's version. Taking it copies
/// pointers only (no user code, no clone), so a writer that must capture a
/// shard before changing it pays about a microsecond; the build clones
/// what the pointers reach afterwards (`Piece::from_refs`).
///
/// The pointers stay valid until the build ends: every entry and value
/// they reach was current at the capture, hence at the cut (no write
/// changes a shard between the cut and its capture), so it was retired, if
/// at all, after the cut, while the build was pinned (it pins before the
/// cut and stays pinned until it has cloned everything), and the epoch
/// frees nothing retired while a thread is pinned before that thread
/// unpins.
pub(super) struct Refs<K, V> {
    pub(super) version: u64,
    pub(super) entries: Vec<(u64, *const K, *const V)>,
    /// The slot count of the read view the entries were walked from, in
    /// slot order (`None`: from the dirty table, in no order).
    pub(super) view_slots: Option<usize>,
}

// SAFETY: a `Refs` is a list of shared references in raw form (see its
// docs for why they stay valid); sending it to another thread shares the
// keys and values, which needs exactly `K: Sync` and `V: Sync`.
unsafe impl<K: Sync, V: Sync> Send for Refs<K, V> {}

/// What a build holds for one captured shard.
pub(super) enum Captured<K, V> {
    /// The previous snapshot's piece (the shard's version is unchanged).
    Reused(Arc<Piece<K, V>>),
    /// Pointers to clone.
    Refs(Refs<K, V>),
}

/// One build in progress: its number, the previous snapshot's pieces (to
/// reuse) and the shards captured so far, by id.
pub(super) struct Build<K, V> {
    pub(super) epoch: u64,
    /// The previous snapshot's pieces, if any. Shared with the build
    /// itself, which reads it without the lock.
    pub(super) previous: Option<Arc<Pieces<K, V>>>,
    pub(super) captured: HashMap<u64, Captured<K, V>, BuildHasherDefault<IdHasher>>,
}

impl<K, V, S> Snapshots<K, V, S>
where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Captures `shard` for build `epoch`: its content as of the build's
    /// cut, as the previous snapshot's piece if the shard's version is
    /// unchanged, otherwise as pointers ([`Refs`]), before anyone who
    /// entered the gate after the cut changes it. Called by writers about
    /// to change the shard; the build captures the shards nobody changed
    /// itself (the same `capture_once`, keeping the result without this
    /// lock). Once per shard and build; a second caller waits for the
    /// first, which copies pointers only. A capture for a build that has
    /// ended (a slow writer's) is dropped.
    #[cold]
    #[inline(never)]
    pub(crate) fn capture(&self, shard: &Shard<K, V>, epoch: u64, guard: &Guard) {
        shard.capture_once(epoch, || {
            let previous = match &*self.build.lock() {
                Some(build) if build.epoch == epoch => build.previous.clone(),
                _ => return, // the build has ended
            };
            let Some(captured) = take_capture(shard, previous.as_deref(), guard) else {
                return;
            };
            if let Some(build) = self.build.lock().as_mut().filter(|b| b.epoch == epoch) {
                build.captured.insert(shard.id(), captured);
            }
        });
    }
}

/// The capture itself (see [`Snapshots::capture`]), by whoever claimed
/// it: the previous snapshot's piece if the shard's version is unchanged,
/// otherwise pointers. `None` if the shard was retired (only the broken
/// twins get here).
pub(super) fn take_capture<K, V>(
    shard: &Shard<K, V>,
    previous: Option<&Pieces<K, V>>,
    guard: &Guard,
) -> Option<Captured<K, V>>
where
    K: Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    // No write can change the shard now (writers after the cut wait for
    // this capture, those before it have finished), so the version and the
    // content agree.
    let version = shard.version();
    if let Some(piece) = previous
        .and_then(|previous| previous.of(shard.id()))
        .filter(|piece| piece.version == version)
    {
        return Some(Captured::Reused(piece.clone()));
    }
    let mut entries = Vec::with_capacity(shard.live());
    let view_slots = shard
        .for_each_live(guard, |hash, key, value| {
            entries.push((hash, core::ptr::from_ref(key), core::ptr::from_ref(value)));
        })
        .ok()?;
    Some(Captured::Refs(Refs {
        version,
        entries,
        view_slots,
    }))
}
