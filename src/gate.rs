//! The write gate: what keeps a snapshot at one point in time.
//!
//! Every write to the map (an insert, a removal, a compare-and-swap, a
//! whole batch) runs *inside* the gate; a snapshot build *closes* the gate
//! for the short moment in which it takes its cut (lists the shards and
//! announces its build number, see `crate::snapshot`). While the gate is
//! closed no write is in progress, so each write, and each batch, is
//! wholly before the cut or wholly after it; writers after it capture what
//! they change first.
//!
//! # A distributed gate
//!
//! Writers must not meet on one cache line, so the gate is striped like the
//! map's counters (percpu-rwsem style): a writer counts itself in and out of
//! its own thread's stripe, and a closing snapshot sets one `pending` flag
//! and waits until every stripe is empty.
//!
//! ```text
//!   writer (enter)                         snapshot (close)
//!   stripe.in_flight = 1                   pending = true
//!   fence(SeqCst)                          fence(SeqCst)
//!   if pending:                [Acquire]   for each stripe:
//!       stripe.in_flight = 0                   wait in_flight == 0 [Acquire]
//!       wait !pending, retry               list shards, build = number
//!   mark the change word dirty             list shards, build = number,
//!   read build                             change word = number << 1
//!   ... capture if needed, write ...       pending = false         [Release]
//!   stripe.in_flight = 0    [Release]      ... capture, publish ...
//! ```
//!
//! (`in_flight = 1` and `= 0` are the owner's stores; a thread that shares
//! a stripe adds and subtracts instead, below.)
//!
//! The enter/close pair is Dekker's: each side stores, then loads the other
//! side's word, with a `SeqCst` fence between, so at least one of them sees
//! the other: the writer backs off or the snapshot waits for it. The
//! writer's final Release store (or decrement), read by the snapshot's Acquire wait,
//! orders the whole write before everything the snapshot then reads.
//!
//! Why fences rather than `SeqCst` operations: the C++ model also makes
//! Dekker work with `SeqCst` RMW and load, but loom models `SeqCst` accesses
//! as `AcqRel`, and with them the snapshot model in `loom-tests/` found the
//! schedule in which both sides miss each other. Loom models `SeqCst`
//! fences exactly (a total order), so the fenced form is the one the model
//! checks, and the one we ship. On x86 it adds one `mfence` per write.
//!
//! # One writer per stripe
//!
//! A stripe belongs to the thread whose number it has: thread numbers are
//! dense and unique among the threads alive (`crate::thread::thread_index`
//! reuses an exited thread's number, handing it over under a mutex), so the
//! threads numbered below the stripe count (64) each own one stripe, and
//! only the owner writes its `in_flight`. A thread is inside a gate at most
//! once (a nested entry skips the stripe), so the owner's count is 0 or 1,
//! and it counts itself in and out with **plain stores** of 1 and 0: no
//! locked instruction. Threads numbered past the stripe count (more than
//! 64 alive) share the stripes' second counter, `shared`, with
//! `fetch_add` and `fetch_sub`; the snapshot's wait reads both. The fence
//! stays: the store, the fence and the load of `pending` are the same
//! Dekker handshake as the add, the fence and the load were.
//!
//! Measured on an update loop over 10K `u64` keys (1 thread, handle per
//! 1024, 30M updates, four rounds alternated): 66–72 ns per update with the
//! add and the subtract, 57–61 ns with the stores; at 1M keys, where the
//! update waits on cache misses, no difference beyond the noise (313–342
//! against 300–341 ns). Two further steps were measured and not taken:
//! the owner's store as a `swap` with a compiler fence in place of the
//! fence (a locked instruction is a full barrier on x86, crossbeam-epoch's
//! trick for `pin`), 59–62 against 61–63 ns, within the noise and outside
//! the model loom checks; and no fence at all on the writer's side, with
//! the snapshot's cut paying a `membarrier(PRIVATE_EXPEDITED)` system call
//! instead (an asymmetric barrier), 49–53 against 56–58 ns, but that call
//! took 5–16 µs here whenever another thread of the process was running,
//! added to every snapshot build after a write, and loom cannot check the
//! barrier.
//!
//! Under loom a thread's number comes from `crate::thread::owner_index`,
//! which numbers loom's model threads (they share the process's
//! thread-locals): `loom-tests/tests/snapshot.rs` runs the
//! batch model with the writer owning a stripe and with it past the
//! stripes, and its twin `EnterWithoutFence` (the store or add, then the
//! load of `pending`, with no fence between) lets the cut miss a batch in
//! both.
//!
//! # The change word: "has anything changed since that snapshot?"
//!
//! One word beside `pending` (every writer reads that line anyway) answers
//! it for `snapshot()` and for [`Reader`](crate::Reader) handles with one
//! load and a compare: `build number << 1 | dirty`.
//!
//! - A snapshot's cut, with the gate closed, stores `number << 1` (clean);
//!   the snapshot keeps that value as its **stamp**.
//! - A writer, once inside the gate and **before it changes anything**,
//!   sets the dirty bit if it is clear (a plain load; a `fetch_or` only for
//!   the first write after a cut).
//!
//! So the word equals a snapshot's stamp exactly while no write has entered
//! the gate since that snapshot's cut: then the map holds what the snapshot
//! holds, and the snapshot can be handed out again. The order matters: a
//! thread that sees a write's effect (say, through `get`) has synchronised
//! with a Release store the writer made after marking, so its next load of
//! the word sees the mark, and its next `snapshot()` is not the stale one
//! (marking after the write, the broken twin `MarkAfterWrite`, lets a
//! reader see a value through `get` and then miss it in its snapshot; the
//! loom model `loom-tests/tests/reader.rs` finds that schedule). A writer
//! that reads a dirty word left from before the cut cannot exist: it
//! either entered before the cut, and the cut waited for it, or it read
//! the `pending = false` that reopened the gate after the cut's store.
//!
//! A conditional batch (`SnapMap::apply_if`) enters with a
//! compare-and-swap of the word from its revision's clean stamp to the
//! same stamp marked dirty instead: of two reloaders holding the same
//! revision, one moves the word and the other finds it changed (loom model
//! `reader.rs`, conditional apply; twin `CheckThenMark`). A snapshot's
//! revision is its stamp without the dirty bit: its build number.
//!
//! The mark is set on entry, so a write that changes nothing (removing an
//! absent key) still makes the next `snapshot()` build; that build reuses
//! every piece (the shard versions are unchanged). Before the change word,
//! each stripe counted completed writes and `snapshot()` summed them: a
//! second locked add on every write, and a 64-stripe walk on every
//! unchanged `snapshot()`.
//!
//! # Change notification
//!
//! `SnapMap::wait_for_change` (and its future, `SnapMap::changed`) waits
//! until the map passes a revision. The waiter takes the current snapshot;
//! if its revision is not past the one asked for, that snapshot is current,
//! so the map passes the revision exactly when the change word moves off
//! the snapshot's stamp, and the waiter sleeps until a writer says so.
//!
//! ```text
//!   waiter                                 writer
//!   listener = event.listen()              (enter) fetch_or(DIRTY)  [Acquire]
//!   waiters += 1                           ... write ...
//!   word = changes.fetch_or(0) [Release]   (leave) in_flight -= 1   [Release]
//!   if word != stamp: take a snapshot      if waiters != 0:
//!   else: sleep on listener                    event.notify(all)
//! ```
//!
//! The pair is Dekker's again (each side stores, then loads what the other
//! stored), but without a fence on the writer's side, which would cost
//! every write: both sides *read-modify-write the change word*, so the two
//! RMWs are ordered in its modification order. If the waiter's comes
//! first, the marking writer's Acquire RMW reads it (or a later RMW: a
//! snapshot's cut stores its stamp with a swap to keep that chain), so the
//! waiter's `waiters += 1` happens before the writer's load of `waiters`,
//! and the writer notifies. If the writer's comes first, the waiter's RMW
//! reads the mark (an RMW reads the latest value) and the waiter does not
//! sleep. Only the writer that moves the word from clean to dirty takes
//! part: later writers find it dirty, and a waiter that registers after
//! the mark sees it. Loom model `loom-tests/tests/notify.rs`; its twins
//! `CheckBeforeRegister` (check, then register) and `WaiterPlainLoad` (a
//! plain load for the check) sleep through a write.
//!
//! The writer notifies after leaving the gate, so the woken waiter's
//! snapshot holds the write (and, for a batch, all of it) without waiting
//! for it. Every outermost write pays one plain load of `waiters`, on the
//! line it reads `pending` from, and a branch: no locked instruction and
//! no fence while nobody waits: about 3 instructions more per update of
//! an existing key, out of about 922 (callgrind, an update loop over 10K
//! keys). Notifying only from the marking writer needs a flag in the gate
//! guard, and the larger guard cost more than the load: about 7.
//! A waiter is woken by any later write, not only the first: it takes a
//! snapshot and checks again, so a spurious wake costs it a loop.
//!
//! `event-listener` does not run under loom: in loom builds a stand-in of
//! the same register-then-wait shape (a generation number under a loom
//! mutex, and a condvar) takes its place (`crate::sync::Event`).
//!
//! # Nesting
//!
//! A thread already inside the gate (inside a batch, say) that writes again
//! is simply part of the same gated section: a thread-local depth skips the
//! stripe and the `pending` check, so a batch that calls `insert` cannot
//! wait for a snapshot that waits for it. Building a snapshot from inside the
//! gate would wait for itself; `snapshot()` panics instead (see its docs).
//!
//! The depth is kept **per gate** (each gate has a unique id; the thread
//! keeps the gates it is inside in `FIRST_GATE` and `OTHER_GATES` below: the first
//! one in plain words, any others in a short list). Being
//! inside map `a`'s gate says nothing about map `b`'s: a write to `b` from
//! inside `a.batch(..)` enters `b`'s gate like any other write, and
//! `b.snapshot()` there is an ordinary snapshot. (With one depth shared by
//! every map, such a write skipped `b`'s gate: stale cached snapshots and
//! half-visible batches of `b`, issue 11.)
//!
//! Nesting across maps orders their gates, as nested locks do: a thread
//! that snapshots `b` while inside `a`'s gate waits for `b`'s writers, so a
//! thread that snapshots `a` while inside `b`'s gate at the same time would
//! wait for the first one forever. Do not cross snapshots of two maps from
//! inside each other's batches.

use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use crate::sync::{CachePadded, Event, EventListener, thread_local, yield_now};
use crate::thread::{next_unique_id, owner_index};
use crate::twins::{Bug, injected};

/// One thread's stripe of the gate.
#[derive(Default)]
struct GateStripe {
    /// 1 while the thread numbered like this stripe is inside the gate,
    /// else 0. Only that thread writes it, with plain stores (module docs,
    /// "One writer per stripe").
    in_flight: AtomicUsize,
    /// Threads numbered past the stripe count, mapped to this stripe, now
    /// inside the gate: they share it, and count with read-modify-writes.
    shared: AtomicUsize,
}

/// Which counter of its stripe a writer counts itself in: its own (a
/// plain store) or the shared one (a read-modify-write).
#[derive(Clone, Copy)]
struct Slot<'a> {
    stripe: &'a GateStripe,
    owned: bool,
}

impl Slot<'_> {
    /// Counts the writer in. Relaxed: ordered against the writer's load
    /// of `pending` by the fence that follows in `enter_inner`.
    #[inline]
    fn count_in(self) {
        if self.owned {
            // Relaxed: a check of this thread's own earlier store.
            debug_assert_eq!(
                self.stripe.in_flight.load(Ordering::Relaxed),
                0,
                "one writer per stripe: the owner finds its count at 0"
            );
            self.stripe.in_flight.store(1, Ordering::Relaxed);
        } else {
            self.stripe.shared.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the writer out. Release: orders the whole write before a
    /// snapshot's Acquire wait that reads this (`WriteGate::quiet`).
    #[inline]
    fn count_out(self) {
        if self.owned {
            self.stripe.in_flight.store(0, Ordering::Release);
        } else {
            self.stripe.shared.fetch_sub(1, Ordering::Release);
        }
    }
}

/// The gate's shared words, on one cache line: every writer reads both.
#[derive(Default)]
struct Shared {
    /// A snapshot is closing (or has closed) the gate.
    pending: AtomicBool,
    /// The snapshot build whose cut has been taken and whose shards are
    /// still being captured, or 0 (see `crate::snapshot`, "Copy before
    /// write").
    build: AtomicU64,
    /// The change word: the last cut's build number `<< 1`, with
    /// [`DIRTY`] set once a writer has entered since (module docs).
    changes: AtomicU64,
    /// Threads (or futures) registered to wait for the change word to
    /// move (module docs, "Change notification"). Read only by the writer
    /// that marks the word dirty, as it leaves the gate.
    waiters: AtomicUsize,
}

/// The change word's bit for "a writer has entered since the cut".
const DIRTY: u64 = 1;

/// The clean change word (stamp) of build `revision`. Saturated: an
/// impossible revision gives an odd, dirty word, which no stamp equals.
const fn stamp_of(revision: u64) -> u64 {
    revision.saturating_mul(2)
}

/// The build number (a snapshot's revision) that a stamp or change word
/// names.
pub(crate) const fn revision_of(word: u64) -> u64 {
    word >> 1
}

/// A conditional entry found the map changed: the revision of its latest
/// build, and whether it has been written since that build.
pub(crate) struct Changed {
    pub(crate) latest: u64,
    pub(crate) written_since: bool,
}

impl Changed {
    fn from_word(word: u64) -> Self {
        Changed {
            latest: revision_of(word),
            written_since: word & DIRTY != 0,
        }
    }
}

/// The gate. See the module docs.
pub(crate) struct WriteGate {
    /// This gate's identity in the threads' nesting records.
    id: u64,
    stripes: Box<[CachePadded<GateStripe>]>,
    shared: CachePadded<Shared>,
    /// What change waiters listen to (module docs, "Change notification").
    changed: Event,
}

impl WriteGate {
    pub(crate) fn new() -> Self {
        // A power of two: `enter_inner` picks a stripe with a mask.
        let count: usize = if cfg!(snapmap_loom) { 2 } else { 64 };
        debug_assert!(count.is_power_of_two());
        WriteGate {
            id: next_unique_id(),
            stripes: (0..count)
                .map(|_| CachePadded::new(GateStripe::default()))
                .collect(),
            shared: CachePadded::new(Shared::default()),
            changed: Event::new(),
        }
    }

    /// Enters the gate for one write (or batch); the guard leaves it.
    /// This gate's key in the thread's nesting record (in the broken twin
    /// `SharedGateDepth`, one key for every gate).
    #[inline]
    fn nesting_key(&self) -> u64 {
        if injected(Bug::SharedGateDepth) {
            u64::MAX
        } else {
            self.id
        }
    }

    #[inline]
    pub(crate) fn enter(&self) -> GateGuard<'_> {
        match self.enter_inner(None) {
            Ok(guard) => guard,
            Err(_) => unreachable!("an unconditional entry has no conflict"),
        }
    }

    /// The calling thread's counter: its own stripe's `in_flight` if its
    /// number is below the stripe count (module docs, "One writer per
    /// stripe"), else the shared counter of the stripe it maps to.
    #[inline]
    fn slot(&self) -> Slot<'_> {
        let number = owner_index();
        Slot {
            // A mask, not `%`: the stripe count is a power of two (`new`),
            // and a division here cost a `div` on every write.
            stripe: &self.stripes[number & (self.stripes.len() - 1)],
            owned: number < self.stripes.len(),
        }
    }

    /// Enters the gate only if the map is unchanged since build
    /// `revision`'s cut (the change word still equals its stamp), marking
    /// it changed in the same step; otherwise says what it found. A thread
    /// already inside the gate has marked it itself: that is a change too.
    pub(crate) fn enter_if_unchanged(&self, revision: u64) -> Result<GateGuard<'_>, Changed> {
        self.enter_inner(Some(stamp_of(revision)))
            .map_err(Changed::from_word)
    }

    #[inline(always)]
    fn enter_inner(&self, expect: Option<u64>) -> Result<GateGuard<'_>, u64> {
        let nested = enter_gate_depth(self.nesting_key()) > 0;
        // A nested entry counts nothing: the outermost one holds the slot.
        let slot = (!nested).then(|| self.slot());
        let mut conflict = None;
        if let Some(slot) = slot {
            loop {
                slot.count_in();
                // SeqCst fence: the writer's half of the Dekker pair (module
                // docs); pairs with the fence in `close`.
                if !injected(Bug::EnterWithoutFence) {
                    fence(Ordering::SeqCst);
                }
                // Acquire: ordered after the count-in by the fence above;
                // and if this reads the `false` stored by `open`, it makes
                // the build number stored before it (`begin_build`)
                // visible to `build_epoch`.
                if !self.shared.pending.load(Ordering::Acquire) {
                    match expect {
                        None if !injected(Bug::MarkAfterWrite) => self.mark_changed(),
                        None => {}
                        Some(stamp) => conflict = self.mark_if_unchanged(stamp).err(),
                    }
                    break;
                }
                // Nothing was written; lets the snapshot proceed.
                slot.count_out();
                self.wait_open();
            }
        } else if expect.is_some() {
            conflict = Some(self.changes());
        }
        let guard = GateGuard {
            gate_ref: self,
            slot,
        };
        match conflict {
            // Leaves the gate (the guard's drop) before reporting.
            Some(word) => Err(word),
            None => Ok(guard),
        }
    }

    /// Marks the change word dirty if it still equals `stamp`, in one step
    /// (a conditional apply, `SnapMap::apply_if`): of two conditional
    /// writers holding the same stamp, only one finds it.
    fn mark_if_unchanged(&self, stamp: u64) -> Result<(), u64> {
        if injected(Bug::CheckThenMark) {
            // The broken twin: compare, then mark, in two steps.
            // Relaxed: as in `mark_changed`.
            let word = self.shared.changes.load(Ordering::Relaxed);
            if word != stamp {
                return Err(word);
            }
            self.mark_changed();
            return Ok(());
        }
        // Acquire on success: as in `mark_changed` (this moves the word
        // from clean to dirty). Relaxed on failure: nothing is written
        // then. The compare-and-swap makes
        // "unchanged since the cut" and "now marked" one step.
        self.shared
            .changes
            .compare_exchange(stamp, stamp | DIRTY, Ordering::Acquire, Ordering::Relaxed)
            .map(|_| ())
    }

    #[cold]
    fn wait_open(&self) {
        // Acquire: pairs with the Release in `open`; the snapshot is done.
        while self.shared.pending.load(Ordering::Acquire) {
            yield_now();
        }
    }

    /// Sets the change word's dirty bit (module docs, "The change word"),
    /// before this writer changes anything.
    #[inline]
    fn mark_changed(&self) {
        // Relaxed: a thread that later sees this writer's change has
        // synchronised with a Release store sequenced after this mark, so it
        // sees the mark (or a later word) too; and this load cannot return a
        // dirty word older than the last cut (module docs).
        let word = self.shared.changes.load(Ordering::Relaxed);
        if word & DIRTY == 0 {
            // Acquire: if this RMW reads a waiter's Release RMW of the word
            // (or the release sequence it heads), the waiter's registration
            // happens before this writer's check of `waiters` as it leaves
            // (module docs, "Change notification"). The first write after a
            // cut pays this RMW; on x86 the Acquire costs nothing more.
            self.shared.changes.fetch_or(DIRTY, Ordering::Acquire);
        }
    }

    /// Whether no write has entered the gate since the cut whose stamp is
    /// `stamp` (a snapshot's): then the map holds what that snapshot holds.
    #[inline]
    pub(crate) fn unchanged_since(&self, stamp: u64) -> bool {
        self.changes() == stamp
    }

    /// The change word now.
    #[inline]
    fn changes(&self) -> u64 {
        // Acquire: a stamp comparison orders nothing by itself, but a reader
        // that finds the word changed goes on to read the newer snapshot,
        // which arc-swap publishes with its own Release/Acquire.
        self.shared.changes.load(Ordering::Acquire)
    }

    /// Whether the calling thread is inside this gate (not another map's).
    pub(crate) fn held_by_current_thread(&self) -> bool {
        gate_depth(self.nesting_key()) > 0
    }

    /// Whether no writer is inside the gate now.
    fn quiet(&self) -> bool {
        self.stripes.iter().all(|stripe| {
            // Acquire: a writer's Release store or decrement that leaves
            // the counter at 0, if seen, orders its write before what
            // follows.
            stripe.in_flight.load(Ordering::Acquire) == 0
                && stripe.shared.load(Ordering::Acquire) == 0
        })
    }

    /// Closes the gate: waits until no writer is inside and keeps new ones
    /// out until the returned guard is dropped (also on a panic: user
    /// `Clone` runs while the gate is closed, and a gate left closed would
    /// stall every writer).
    pub(crate) fn close(&self) -> ClosedGate<'_> {
        self.close_raw();
        ClosedGate(self)
    }

    fn close_raw(&self) {
        // Relaxed: ordered against the loads in `quiet` by the fence.
        self.shared.pending.store(true, Ordering::Relaxed);
        // SeqCst fence: the snapshot's half of the Dekker pair; pairs with
        // the fence in `enter`.
        fence(Ordering::SeqCst);
        while !self.quiet() {
            yield_now();
        }
    }

    /// Opens the gate again.
    fn open(&self) {
        // Release: writers that waited see everything the snapshot did.
        self.shared.pending.store(false, Ordering::Release);
    }

    /// The snapshot build whose shards must be captured before they
    /// change, or 0. Called inside the gate: a writer that entered after
    /// a build's cut sees that build's number, one that entered before the
    /// cut finished before it (the cut waited for it) and needs no capture.
    #[inline]
    pub(crate) fn build_epoch(&self) -> u64 {
        // Relaxed: `enter`'s Acquire load of `pending` read the `false`
        // that `open` stored after `begin_build` (or an older one, and then
        // this writer is before the cut); and the build number cannot
        // change to a newer build while this writer is inside the gate,
        // because that build's cut would wait for it.
        self.shared.build.load(Ordering::Relaxed)
    }

    /// The number of the last cut (the revision of the snapshot it made),
    /// for a writer inside the gate: it names the cycle between two cuts
    /// that the writer's changes belong to (`crate::snapshot`, "Changed
    /// shards").
    #[inline]
    pub(crate) fn cycle(&self) -> u64 {
        // Relaxed: as in `build_epoch`: the number changes only at a cut,
        // which waits for this writer, and `enter`'s Acquire read of
        // `pending` ordered the last cut's store before this load.
        revision_of(self.shared.changes.load(Ordering::Relaxed))
    }

    /// Announces snapshot build `epoch`, with the gate closed (its cut):
    /// every writer that enters after the gate reopens captures the shards
    /// it changes for that build. Returns the snapshot's stamp, now the
    /// change word (module docs).
    pub(crate) fn begin_build(&self, epoch: u64) -> u64 {
        // Relaxed: published by the Release store of `open` (module docs).
        self.shared.build.store(epoch, Ordering::Relaxed);
        let stamp = stamp_of(epoch);
        // Relaxed: published by the Release store of `open`, like the build
        // number; no writer is inside the gate to race with it. A swap, not
        // a store: an RMW continues the release sequence of a change
        // waiter's Release RMW of the word, so the next marking writer
        // still synchronises with that waiter (module docs, "Change
        // notification").
        self.shared.changes.swap(stamp, Ordering::Relaxed);
        stamp
    }

    /// Ends a build: writers no longer capture.
    pub(crate) fn end_build(&self) {
        // Relaxed: a writer that still reads the old number captures a
        // shard for a finished build, which `Captures` ignores.
        self.shared.build.store(0, Ordering::Relaxed);
    }

    /// Registers the caller to wait until the change word moves off
    /// `stamp` (a snapshot's), unless it already has: `None` then. The
    /// returned listener is woken by the next writer that marks the word
    /// dirty, once that writer has left the gate (module docs, "Change
    /// notification"). Waking is a hint: the caller checks again.
    pub(crate) fn listen_for_change(&self, stamp: u64) -> Option<ChangeListener<'_>> {
        if injected(Bug::CheckBeforeRegister) {
            // The broken twin: check, then register. A writer that marks
            // and leaves between the two finds no waiter to notify.
            if self.changed_since(stamp) {
                return None;
            }
            return Some(self.register());
        }
        let listener = self.register();
        if self.changed_since(stamp) {
            return None;
        }
        Some(listener)
    }

    /// Registers a change waiter: a listener on the event, then the count
    /// that tells a marking writer to notify.
    fn register(&self) -> ChangeListener<'_> {
        let listener = self.changed.listen();
        // Relaxed: ordered before the Release RMW in `changed_since`, which
        // publishes it to the marking writer.
        self.shared.waiters.fetch_add(1, Ordering::Relaxed);
        ChangeListener {
            listener,
            _counted: WaiterCount(self),
        }
    }

    /// Whether the change word has moved off `stamp`: the waiter's check,
    /// after registering.
    fn changed_since(&self, stamp: u64) -> bool {
        let word = if injected(Bug::WaiterPlainLoad) {
            // The broken twin: a plain load may read the word as it was
            // before a writer's mark, and the writer, with no edge from
            // this waiter's registration, may read no waiter.
            // Relaxed: that is the bug.
            self.shared.changes.load(Ordering::Relaxed)
        } else {
            // Release: a read-modify-write that changes nothing. It reads
            // the latest word in the word's modification order, so either
            // it comes after a writer's marking RMW and sees the mark, or
            // it comes before it, and then that Acquire RMW reads this one
            // (or a later RMW in its release sequence) and the registration
            // above happens before the writer's check of `waiters`.
            self.shared.changes.fetch_or(0, Ordering::Release)
        };
        word != stamp
    }

    /// Wakes every change waiter, if any is registered. Called by every
    /// writer as it leaves the gate (outermost entries only); only the one
    /// that marked the word dirty must find the waiters (module docs).
    #[inline]
    fn notify_waiters(&self) {
        // Relaxed: a waiter whose registration must be seen has
        // synchronised with the marking writer's RMW (see
        // `changed_since`), which is sequenced before this load. A stale
        // nonzero count costs a notification that wakes nobody.
        if self.shared.waiters.load(Ordering::Relaxed) != 0 {
            self.changed.notify_all();
        }
    }
}

/// A registered change waiter (`WriteGate::listen_for_change`): block on it
/// with [`wait`](Self::wait), or await it (normal builds). Counted in the
/// gate's `waiters` until dropped.
pub(crate) struct ChangeListener<'a> {
    listener: EventListener<'a>,
    /// Leaves the count when the listener is dropped (or has waited).
    _counted: WaiterCount<'a>,
}

impl ChangeListener<'_> {
    /// Blocks until a marking writer notifies (`true`) or `deadline`
    /// passes (`false`).
    pub(crate) fn wait(self, deadline: Option<std::time::Instant>) -> bool {
        self.listener.wait(deadline)
    }
}

#[cfg(not(snapmap_loom))]
impl core::future::Future for ChangeListener<'_> {
    type Output = ();

    fn poll(
        mut self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<()> {
        core::pin::Pin::new(&mut self.listener).poll(cx)
    }
}

/// One registration in the gate's `waiters` count, left when dropped.
struct WaiterCount<'a>(&'a WriteGate);

impl Drop for WaiterCount<'_> {
    fn drop(&mut self) {
        // Relaxed: a writer that still reads the old count notifies a
        // listener that is gone, which wakes nobody.
        self.0.shared.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reopens a closed gate when dropped.
pub(crate) struct ClosedGate<'a>(&'a WriteGate);

impl Drop for ClosedGate<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Leaves the gate when dropped (also when a write panics).
pub(crate) struct GateGuard<'a> {
    /// The gate itself: its id for the thread's nesting record, and its
    /// change waiters to notify (the broken twin `MarkAfterWrite` also
    /// marks on leaving).
    gate_ref: &'a WriteGate,
    /// The counter to leave, unless this was a nested entry.
    slot: Option<Slot<'a>>,
}

impl Drop for GateGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let left = leave_gate_depth(self.gate_ref.nesting_key());
        debug_assert_eq!(
            left == 0,
            self.slot.is_some(),
            "only the outermost guard of a gate holds its stripe"
        );
        if let Some(slot) = self.slot {
            if injected(Bug::MarkAfterWrite) {
                // The broken twin: mark only once the write is done.
                self.gate_ref.mark_changed();
            }
            // Orders the whole write before a snapshot's wait (Release).
            slot.count_out();
            // After leaving: a woken waiter's snapshot need not wait for
            // this write, and holds it.
            self.gate_ref.notify_waiters();
        }
    }
}

// ----- Nesting record ---------------------------------------------------------

// The write gates the calling thread is inside, each with its nesting
// depth: `(gate id, depth)`. One entry per gate, so that being inside one
// map's gate says nothing about another map's (issue 11: with one depth
// for every map, a write to map `b` from inside `a.batch(..)` skipped
// `b`'s gate).
//
// Almost every write holds one gate, so the first gate entered sits in
// `FIRST_GATE` (two words, no borrow flag, no list walk) and only gates
// entered while another is held go to `OTHER_GATES`, a short list searched
// from its end. A gate is in exactly one of the two places. (With only the
// list, entering and leaving a gate cost a borrow, a search, a push and a
// removal: about 40 of the then ~765 instructions of an update.)
//
// Two thread-locals rather than one struct: `FIRST_GATE` needs no drop, so
// std reaches it with a plain thread-pointer-relative access, where a
// thread-local that owns a `Vec` checks on every access whether its
// destructor is registered yet (the two accesses of a write cost about 29
// instructions each in the update loop's profile when they shared one
// struct).
//
// Loom's thread-locals under loom (`crate::sync::thread_local`): each
// model thread has its own nesting record, as each real thread does.
thread_local! {
    /// `(gate id, depth, others)`: the first gate the thread entered (depth
    /// 0: none) and how many gates `OTHER_GATES` holds.
    static FIRST_GATE: core::cell::Cell<(u64, usize, usize)> =
        const { core::cell::Cell::new((0, 0, 0)) };
}
thread_local! {
    /// Gates entered while another is held, searched from the end.
    static OTHER_GATES: core::cell::RefCell<Vec<(u64, usize)>> =
        const { core::cell::RefCell::new(Vec::new()) };
}

/// Counts the calling thread into gate `gate` once more; returns the depth
/// it was at before (0: the thread was not inside this gate).
#[inline]
pub(crate) fn enter_gate_depth(gate: u64) -> usize {
    let (first, depth, others) = FIRST_GATE.with(core::cell::Cell::get);
    if depth > 0 && first == gate {
        FIRST_GATE.with(|held| held.set((first, depth + 1, others)));
        return depth;
    }
    if depth == 0 && others == 0 {
        FIRST_GATE.with(|held| held.set((gate, 1, 0)));
        return 0;
    }
    enter_other(gate)
}

/// [`enter_gate_depth`] when the thread holds some other gate.
#[cold]
fn enter_other(gate: u64) -> usize {
    OTHER_GATES.with(|list| {
        let mut list = list.borrow_mut();
        if let Some((_, depth)) = list.iter_mut().rev().find(|(id, _)| *id == gate) {
            *depth += 1;
            return *depth - 1;
        }
        let (first, depth, others) = FIRST_GATE.with(core::cell::Cell::get);
        if depth == 0 {
            FIRST_GATE.with(|held| held.set((gate, 1, others)));
        } else {
            list.push((gate, 1));
            FIRST_GATE.with(|held| held.set((first, depth, others + 1)));
        }
        0
    })
}

/// Counts the calling thread out of gate `gate` once; returns the depth
/// left (0: the thread has left this gate).
#[inline]
pub(crate) fn leave_gate_depth(gate: u64) -> usize {
    let (first, depth, others) = FIRST_GATE.with(core::cell::Cell::get);
    if depth > 0 && first == gate {
        FIRST_GATE.with(|held| held.set((first, depth - 1, others)));
        return depth - 1;
    }
    leave_other(gate)
}

/// [`leave_gate_depth`] for a gate held in `OTHER_GATES`.
#[cold]
fn leave_other(gate: u64) -> usize {
    OTHER_GATES.with(|list| {
        let mut list = list.borrow_mut();
        let at = list
            .iter()
            .rposition(|(id, _)| *id == gate)
            .expect("a gate guard leaves a gate its thread entered");
        list[at].1 -= 1;
        let left = list[at].1;
        if left == 0 {
            list.remove(at);
            FIRST_GATE.with(|held| {
                let (first, depth, others) = held.get();
                held.set((first, depth, others - 1));
            });
        }
        left
    })
}

/// The calling thread's nesting depth in gate `gate` (0: not inside it).
pub(crate) fn gate_depth(gate: u64) -> usize {
    let (first, depth, others) = FIRST_GATE.with(core::cell::Cell::get);
    if depth > 0 && first == gate {
        return depth;
    }
    if others == 0 {
        return 0;
    }
    OTHER_GATES.with(|list| {
        list.borrow()
            .iter()
            .rfind(|(id, _)| *id == gate)
            .map_or(0, |&(_, depth)| depth)
    })
}

#[cfg(all(test, not(snapmap_loom)))]
mod tests {
    use super::{enter_gate_depth, gate_depth, leave_gate_depth};
    use std::collections::HashMap;

    /// The nesting record against a plain map of depths, over random
    /// enter/leave sequences on a few gates (each thread starts empty, so
    /// every case runs on a fresh thread). Covers a gate entered again
    /// after the first gate was left while others were still held, the
    /// case where the first slot is empty but the list is not.
    #[test]
    fn nesting_record_matches_a_map_of_depths() {
        for seed in 0..200u64 {
            std::thread::spawn(move || {
                let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut next = move || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                let mut model: HashMap<u64, usize> = HashMap::new();
                let mut held: Vec<u64> = Vec::new(); // one per level entered
                for _ in 0..64 {
                    let gate = 1 + next() % 4;
                    if held.is_empty() || next() % 3 != 0 {
                        let before = model.get(&gate).copied().unwrap_or(0);
                        assert_eq!(enter_gate_depth(gate), before, "seed {seed}");
                        *model.entry(gate).or_default() += 1;
                        held.push(gate);
                    } else {
                        // Leave any gate held (guards of different maps
                        // drop in any order).
                        let at = (next() % held.len() as u64) as usize;
                        let gate = held.swap_remove(at);
                        let depth = model.get_mut(&gate).expect("held");
                        *depth -= 1;
                        assert_eq!(leave_gate_depth(gate), *depth, "seed {seed}");
                    }
                    for g in 1..=4 {
                        let want = model.get(&g).copied().unwrap_or(0);
                        assert_eq!(gate_depth(g), want, "seed {seed}, gate {g}");
                    }
                }
                for gate in held {
                    leave_gate_depth(gate);
                }
                for g in 1..=4 {
                    assert_eq!(gate_depth(g), 0);
                }
            })
            .join()
            .expect("a nesting sequence failed");
        }
    }
}
