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
//!   stripe.in_flight += 1                  pending = true
//!   fence(SeqCst)                          fence(SeqCst)
//!   if pending:                [Acquire]   for each stripe:
//!       stripe.in_flight -= 1                  wait in_flight == 0 [Acquire]
//!       wait !pending, retry               list shards, build = number
//!   read build                             pending = false         [Release]
//!   ... capture if needed, write ...       ... capture, publish ...
//!   stripe.writes += 1
//!   stripe.in_flight -= 1   [Release]
//! ```
//!
//! The enter/close pair is Dekker's: each side stores, then loads the other
//! side's word, with a `SeqCst` fence between, so at least one of them sees
//! the other: the writer backs off or the snapshot waits for it. The
//! writer's final Release decrement, read by the snapshot's Acquire wait,
//! orders the whole write before everything the snapshot then reads.
//!
//! Why fences rather than `SeqCst` operations: the C++ model also makes
//! Dekker work with `SeqCst` RMW and load, but loom models `SeqCst` accesses
//! as `AcqRel`, and with them the snapshot model in `loom-tests/` found the
//! schedule in which both sides miss each other. Loom models `SeqCst`
//! fences exactly (a total order), so the fenced form is the one the model
//! checks, and the one we ship. On x86 it adds one `mfence` per write.
//!
//! The `writes` counters let `snapshot()` see in O(stripes) that nothing
//! has changed since the cached snapshot: if every stripe is idle and the
//! summed count equals the cached one, no write has completed since.
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
//! keeps a short list of the gates it is inside, `HELD_GATES` below). Being
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
use crate::sync::{CachePadded, thread_local, yield_now};
use crate::thread::{next_unique_id, thread_index};
use crate::twins::{Bug, injected};

/// One thread's stripe of the gate.
#[derive(Default)]
struct GateStripe {
    /// Writers of this stripe now inside the gate.
    in_flight: AtomicUsize,
    /// Gated sections this stripe has completed.
    writes: AtomicU64,
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
}

/// The gate. See the module docs.
pub(crate) struct WriteGate {
    /// This gate's identity in the threads' nesting records.
    id: u64,
    stripes: Box<[CachePadded<GateStripe>]>,
    shared: CachePadded<Shared>,
}

impl WriteGate {
    pub(crate) fn new() -> Self {
        let count = if cfg!(snapmap_loom) { 2 } else { 64 };
        WriteGate {
            id: next_unique_id(),
            stripes: (0..count)
                .map(|_| CachePadded::new(GateStripe::default()))
                .collect(),
            shared: CachePadded::new(Shared::default()),
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
        let stripe = &self.stripes[thread_index() % self.stripes.len()];
        let nested = enter_gate_depth(self.nesting_key()) > 0;
        if !nested {
            loop {
                // Relaxed: ordered against the load below by the fence.
                stripe.in_flight.fetch_add(1, Ordering::Relaxed);
                // SeqCst fence: the writer's half of the Dekker pair (module
                // docs); pairs with the fence in `close`.
                fence(Ordering::SeqCst);
                // Acquire: ordered after the increment by the fence above;
                // and if this reads the `false` stored by `open`, it makes
                // the build number stored before it (`begin_build`)
                // visible to `build_epoch`.
                if !self.shared.pending.load(Ordering::Acquire) {
                    break;
                }
                // Release: nothing was written; lets the snapshot proceed.
                stripe.in_flight.fetch_sub(1, Ordering::Release);
                self.wait_open();
            }
        }
        GateGuard {
            gate: self.nesting_key(),
            stripe: (!nested).then_some(stripe),
        }
    }

    #[cold]
    fn wait_open(&self) {
        // Acquire: pairs with the Release in `open`; the snapshot is done.
        while self.shared.pending.load(Ordering::Acquire) {
            yield_now();
        }
    }

    /// Whether the calling thread is inside this gate (not another map's).
    pub(crate) fn held_by_current_thread(&self) -> bool {
        gate_depth(self.nesting_key()) > 0
    }

    /// The number of completed gated sections, or `None` if a writer is
    /// inside the gate now (then the map may be changing).
    pub(crate) fn quiet_writes(&self) -> Option<u64> {
        let mut writes = 0;
        for stripe in self.stripes.iter() {
            // Acquire: a writer's Release decrement, if seen, orders its
            // write and its `writes` increment before what follows.
            if stripe.in_flight.load(Ordering::Acquire) != 0 {
                return None;
            }
            // Relaxed: ordered by the load above.
            writes += stripe.writes.load(Ordering::Relaxed);
        }
        Some(writes)
    }

    /// Closes the gate: waits until no writer is inside and keeps new ones
    /// out until the returned guard is dropped (also on a panic: user
    /// `Clone` runs while the gate is closed, and a gate left closed would
    /// stall every writer). Returns the completed-section count.
    pub(crate) fn close(&self) -> (u64, ClosedGate<'_>) {
        let writes = self.close_raw();
        (writes, ClosedGate(self))
    }

    fn close_raw(&self) -> u64 {
        // Relaxed: ordered against the loads in `quiet_writes` by the fence.
        self.shared.pending.store(true, Ordering::Relaxed);
        // SeqCst fence: the snapshot's half of the Dekker pair; pairs with
        // the fence in `enter`.
        fence(Ordering::SeqCst);
        loop {
            match self.quiet_writes() {
                Some(writes) => return writes,
                None => yield_now(),
            }
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

    /// Announces snapshot build `epoch`, with the gate closed (its cut):
    /// every writer that enters after the gate reopens captures the shards
    /// it changes for that build.
    pub(crate) fn begin_build(&self, epoch: u64) {
        // Relaxed: published by the Release store of `open` (module docs).
        self.shared.build.store(epoch, Ordering::Relaxed);
    }

    /// Ends a build: writers no longer capture.
    pub(crate) fn end_build(&self) {
        // Relaxed: a writer that still reads the old number captures a
        // shard for a finished build, which `Captures` ignores.
        self.shared.build.store(0, Ordering::Relaxed);
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
    /// The gate's id, for the thread's nesting record.
    gate: u64,
    /// The stripe to leave, unless this was a nested entry.
    stripe: Option<&'a CachePadded<GateStripe>>,
}

impl Drop for GateGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let left = leave_gate_depth(self.gate);
        debug_assert_eq!(
            left == 0,
            self.stripe.is_some(),
            "only the outermost guard of a gate holds its stripe"
        );
        if let Some(stripe) = self.stripe {
            // Relaxed: published by the Release decrement below.
            stripe.writes.fetch_add(1, Ordering::Relaxed);
            // Release: orders the whole write before a snapshot's wait.
            stripe.in_flight.fetch_sub(1, Ordering::Release);
        }
    }
}

// ----- Nesting record ---------------------------------------------------------

/// The write gates the calling thread is inside, each with its nesting
/// depth: `(gate id, depth)`. One entry per gate, so that being inside one
/// map's gate says nothing about another map's (issue 11: with one depth
/// for every map, a write to map `b` from inside `a.batch(..)` skipped
/// `b`'s gate). Threads are rarely inside more than one or two gates, so a
/// short list searched from its end (the innermost gate) is the whole
/// structure; it keeps its capacity, so entering allocates only the first
/// time.
type HeldGates = core::cell::RefCell<Vec<(u64, usize)>>;

// Loom's thread-local under loom (`crate::sync::thread_local`): each model
// thread has its own nesting record, as each real thread does.
thread_local! {
    static HELD_GATES: HeldGates = const { core::cell::RefCell::new(Vec::new()) };
}

/// Counts the calling thread into gate `gate` once more; returns the depth
/// it was at before (0: the thread was not inside this gate).
#[inline]
pub(crate) fn enter_gate_depth(gate: u64) -> usize {
    HELD_GATES.with(|held| {
        let mut held = held.borrow_mut();
        match held.iter_mut().rev().find(|(id, _)| *id == gate) {
            Some((_, depth)) => {
                *depth += 1;
                *depth - 1
            }
            None => {
                held.push((gate, 1));
                0
            }
        }
    })
}

/// Counts the calling thread out of gate `gate` once; returns the depth
/// left (0: the thread has left this gate).
#[inline]
pub(crate) fn leave_gate_depth(gate: u64) -> usize {
    HELD_GATES.with(|held| {
        let mut held = held.borrow_mut();
        let at = held
            .iter()
            .rposition(|(id, _)| *id == gate)
            .expect("a gate guard leaves a gate its thread entered");
        held[at].1 -= 1;
        let left = held[at].1;
        if left == 0 {
            held.remove(at);
        }
        left
    })
}

/// The calling thread's nesting depth in gate `gate` (0: not inside it).
pub(crate) fn gate_depth(gate: u64) -> usize {
    HELD_GATES.with(|held| {
        held.borrow()
            .iter()
            .rfind(|(id, _)| *id == gate)
            .map_or(0, |&(_, depth)| depth)
    })
}
