//! Broken twins: deliberate bugs that the loom models switch on.
//!
//! Each loom model in `loom-tests/` checks one protocol step, and has a
//! *broken twin*: the same model run with one deliberate bug switched on,
//! which must fail, with the message the model's check gives for that bug.
//! A twin that passes means the model cannot see the bug it is about, so
//! the suite proves each model's power as well as the code's correctness.
//! `loom-tests/README.md` lists the models, their twins and how a twin is
//! run (in a child process, since a failing model may abort).
//!
//! The protocol code asks [`injected`] at the step a [`Bug`] breaks and
//! takes the broken branch when it is on. Models switch a bug on with
//! `inject` (re-exported as `snapmap::loom_hooks::inject`) before
//! `loom::model` runs. In normal builds `injected` is a constant `false`
//! and every branch on it compiles away; only loom builds have the switch.

#[cfg(snapmap_loom)]
use crate::sync::unmodelled::Mutex;

/// Deliberate bugs a loom model can switch on to prove it catches them.
/// Each names the protocol step it breaks; see `loom-tests/README.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// A promotion publishes the new read view with a Relaxed store.
    RelaxedViewPublish,
    /// The slow path of `get` does not re-check the read view after taking
    /// the lock.
    NoRecheckUnderLock,
    /// A lock-free store does not check for the expunged state.
    StoreIntoExpunged,
    /// The slow path of `insert` un-expunges an entry but does not put it
    /// back into the dirty table before storing.
    SkipPutBack,
    /// Compare-and-swap as a load, a compare and a separate store.
    CasNotAtomic,
    /// Iteration walks the read view without promoting pending new keys.
    IterSkipsPromotion,
    /// `retire` destroys at once instead of waiting for the epoch (the
    /// memory itself is leaked, so the model can report the early drop).
    FreeWithoutEpoch,
    /// An entry leaving the map is destroyed at once instead of being
    /// retired through the epoch (memory leaked, as above): a heap entry
    /// when it is retired, a view's own entries when the view is replaced.
    /// Only entries: views and shards are still retired properly, so a
    /// reader walking an old view reaches the destroyed entry instead of a
    /// freed table.
    FreeEntryWithoutEpoch,
    /// A split publishes the new shards but does not mark the old one
    /// retired, so writers that reach it through an old directory keep
    /// writing into it.
    SplitWithoutRetire,
    /// A snapshot build publishes without closing the write gate, so it
    /// can copy one shard before a batch and another after it.
    SnapshotWithoutGate,
    /// A writer counts itself into the write gate and reads `pending`
    /// without the fence between (Dekker's handshake with one fence): the
    /// snapshot's cut and the writer can each miss the other.
    EnterWithoutFence,
    /// A writer changes a shard during a snapshot build without first
    /// capturing it, so the build can copy it after a write made after its
    /// cut.
    WriteWithoutCapture,
    /// The write gate's nesting depth is one per thread for every map (the
    /// bug of issue 11): a thread inside one map's batch that writes to
    /// another map counts as already inside that map's gate, so the other
    /// map's snapshot builds neither wait for it nor see it capture.
    SharedGateDepth,
    /// A writer sets the write gate's change-word dirty bit when it leaves
    /// the gate, after its change, instead of on entering: a reader can see
    /// the change through `get` and then be handed the older snapshot as
    /// current.
    MarkAfterWrite,
    /// `compute` (and the upsert family on it) checks that the key still
    /// holds the value its closure saw and then stores the new one in a
    /// separate step, instead of one compare-and-swap: two concurrent
    /// updates of one key can both succeed and one is lost.
    ComputeNotAtomic,
    /// A write changes a shard but does not put it on the list of changed
    /// shards, so the next snapshot build, which copies only listed shards
    /// when the directory's layout is unchanged, reuses the previous
    /// snapshot's piece for it.
    ChangeNotListed,
    /// A write does not bump its shard's version, so the next snapshot
    /// build reuses the previous snapshot's piece for a shard that changed.
    VersionNotBumped,
    /// A conditional apply compares the change word with its revision's
    /// stamp and marks it changed in two steps, so two reloaders holding
    /// the same revision can both apply.
    CheckThenMark,
    /// A compaction builds the new view from the live entries alone,
    /// without expunging the deleted ones it leaves out, so a lock-free
    /// store into one of those (through the old view) lands in an entry
    /// that no current table holds.
    CompactWithoutExpunge,
    /// A value stored into a deleted cell is written over the entry's
    /// inline value (reusing its bytes) instead of getting a node of its
    /// own, so a reader still holding the old inline value sees it change.
    ReuseInlineSlot,
    /// A new key's first value is stored inline whenever its type needs no
    /// drop, as before 2026-12-07, not only when it is a plain scalar: an
    /// `AtomicU64` value is then copied when its entry moves, and an
    /// increment made through a reader's `&V` to the old copy is lost.
    InlineAnyValue,
    /// A change waiter checks the change word before it registers its
    /// listener, so a writer that marks the word and leaves between the
    /// check and the registration finds no waiter to notify: the waiter
    /// sleeps through the write.
    CheckBeforeRegister,
    /// A change waiter checks the change word with a plain load instead of
    /// a read-modify-write, so it may read the word from before a writer's
    /// mark while that writer, with no edge from the registration, reads no
    /// waiter: the waiter sleeps through the write.
    WaiterPlainLoad,
    /// A promotion (or split, merge or compaction) reads an entry's cell,
    /// then seals it by a blind swap instead of a compare-exchange of the
    /// value read: a lock-free update that lands between the two is lost.
    CopyWithoutSeal,
    /// A read view's drop also drops the keys of its sealed slots, which
    /// the newer view that took them owns: the key is dropped twice.
    DropSealedKey,
}

/// Whether `bug` is switched on. Always `false` outside loom builds.
#[cfg(not(snapmap_loom))]
#[inline(always)]
pub(crate) const fn injected(_bug: Bug) -> bool {
    false
}

#[cfg(snapmap_loom)]
static INJECTED: Mutex<Option<Bug>> = Mutex::new(None);

/// Whether `bug` is switched on (a loom model's broken twin).
#[cfg(snapmap_loom)]
pub(crate) fn injected(bug: Bug) -> bool {
    *INJECTED.lock().unwrap_or_else(|e| e.into_inner()) == Some(bug)
}

/// Switches one deliberate bug on (or all off with `None`) for the rest of
/// the process. Loom builds only; models call it before `loom::model`.
#[cfg(snapmap_loom)]
pub fn inject(bug: Option<Bug>) {
    *INJECTED.lock().unwrap_or_else(|e| e.into_inner()) = bug;
}
