//! The one place that names synchronisation primitives.
//!
//! Every atomic, `Arc`, mutex, epoch operation and published cell in the
//! crate is imported from this module, so that the loom build swaps all of
//! them at once. Nothing outside this file may `use std::sync::atomic`,
//! `parking_lot`, `crossbeam_epoch`, `arc_swap` or `loom` directly.
//!
//! # What is swapped
//!
//! | primitive | normal build | `--cfg snapmap_loom` (tier 1) | `+ --cfg crossbeam_loom` (tier 2) |
//! |---|---|---|---|
//! | atomics, `Arc` | `std::sync` | `loom::sync` | `loom::sync` |
//! | [`Mutex`] | `parking_lot::Mutex` | `loom::sync::Mutex` behind `lock()` | same as tier 1 |
//! | [`epoch`] | `crossbeam_epoch` | a stand-in that frees at the end of the execution | `crossbeam_epoch` built on loom |
//! | [`Published`] | the value itself | a `loom::cell::UnsafeCell` | same as tier 1 |
//!
//! # Published data
//!
//! Loom only sees loom types. Data that one thread writes and another reads
//! through a published pointer (a read view's table, an entry's key, a
//! value) is wrapped in [`Published`], which under loom is a tracked cell:
//! a reader that reaches it without a happens-before edge from its creation
//! makes loom report a causality violation. In normal builds it is a
//! transparent wrapper and costs nothing.
//!
//! # The epoch surface
//!
//! The crate uses exactly three things from the epoch: [`epoch::pin`], the
//! [`epoch::Guard`] it returns (whose lifetime bounds every reference handed
//! to a user), and [`epoch::retire`], which frees a `Box` once every guard
//! that was pinned when it was retired has been dropped. The tier-1
//! stand-in frees retired objects only when the loom execution ends, which
//! is always late enough, so loom explores this crate's protocol rather
//! than the collector's; tier 2 runs the real collector.
//!
//! # Broken twins
//!
//! Under loom, [`injected`] lets a model switch on one deliberate bug (see
//! [`Bug`]) so that the suite can prove each model catches the bug it is
//! about. In normal builds `injected` is a constant `false` and every
//! branch on it compiles away.

// ----- Arc and atomics ------------------------------------------------------

#[cfg(not(snapmap_loom))]
pub(crate) use std::sync::Arc;

#[cfg(snapmap_loom)]
pub(crate) use loom::sync::Arc;

/// Atomics: std's in normal builds, loom's under `snapmap_loom`.
pub(crate) mod atomic {
    #[cfg(not(snapmap_loom))]
    pub(crate) use std::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
    };

    #[cfg(snapmap_loom)]
    pub(crate) use loom::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
    };
}

/// Atomics for statistics (lengths, hit and event counters).
///
/// They order nothing and no protocol reads them, so they are std's in
/// every build: under loom they stay invisible, and loom's state space is
/// spent on the protocol, not on counter bumps.
pub(crate) mod stat_atomic {
    pub(crate) use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
}

/// Padding to a cache line (128 bytes on x86_64, where the adjacent-line
/// prefetcher pairs lines). Plain data, the same in every build.
pub(crate) use crossbeam_utils::CachePadded;

// ----- Mutex ------------------------------------------------------------------

/// The shard mutex.
///
/// `parking_lot::Mutex`: one word, no poisoning (a panic while the lock is
/// held unlocks it during unwinding; the shard protocol keeps its state
/// consistent at every point where user code can panic), and an inline
/// uncontended fast path.
#[cfg(not(snapmap_loom))]
pub(crate) type Mutex<T> = parking_lot::Mutex<T>;

/// The guard of a locked [`Mutex`].
#[cfg(not(snapmap_loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

/// The guard of a locked [`Mutex`] under loom.
#[cfg(snapmap_loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

/// The shard mutex under loom: loom's mutex with parking_lot's shape.
#[cfg(snapmap_loom)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(snapmap_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0
            .lock()
            .expect("models do not panic while holding a shard lock")
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.0
            .get_mut()
            .expect("models do not panic while holding a shard lock")
    }
}

// ----- Published ----------------------------------------------------------------

/// Data written once before publication and only read afterwards (see the
/// module docs). Normal builds: the value itself.
#[cfg(not(snapmap_loom))]
#[repr(transparent)]
pub(crate) struct Published<T>(T);

#[cfg(not(snapmap_loom))]
impl<T> Published<T> {
    #[inline(always)]
    pub(crate) const fn new(value: T) -> Self {
        Published(value)
    }

    /// Reads the data.
    #[inline(always)]
    pub(crate) fn get(&self) -> &T {
        &self.0
    }

    #[inline(always)]
    pub(crate) fn into_inner(self) -> T {
        self.0
    }
}

/// Under loom: a tracked cell, so that reading it without a happens-before
/// edge from its creation is reported.
#[cfg(snapmap_loom)]
pub(crate) struct Published<T>(loom::cell::UnsafeCell<T>);

// SAFETY: `Published` hands out only shared references through `&self`
// (mutation needs `&mut self`), exactly like `T` itself, so it is `Sync`
// when `T` is.
#[cfg(snapmap_loom)]
unsafe impl<T: Sync> Sync for Published<T> {}

#[cfg(snapmap_loom)]
impl<T> Published<T> {
    pub(crate) fn new(value: T) -> Self {
        Published(loom::cell::UnsafeCell::new(value))
    }

    /// Reads the data; loom checks this read against the cell's creation.
    pub(crate) fn get(&self) -> &T {
        // SAFETY: the cell is only mutated through `&mut self`, so no
        // mutable access can overlap the shared reference we return.
        self.0.with(|p| unsafe { &*p })
    }

    pub(crate) fn into_inner(self) -> T {
        self.0.into_inner()
    }
}

// ----- Epoch ----------------------------------------------------------------------

/// Epoch-based reclamation: the only API the rest of the crate uses.
#[cfg(any(not(snapmap_loom), crossbeam_loom))]
pub(crate) mod epoch {
    pub(crate) use crossbeam_epoch::{Guard, pin};

    use crate::stats::{RetiredKind, count_retired};

    /// Retired weight between two flushes of this thread's garbage: each
    /// retirement weighs one, plus one per KiB it retires.
    ///
    /// crossbeam collects garbage only when threads pin (one collection
    /// every 128 pins, of at most 8 bags of 64 objects), not when they
    /// retire it. A writer that replaces many values under one pin (a
    /// configuration reload) retires faster than that, and retired memory
    /// grew by megabytes per second in the `config_cache` example. Flushing
    /// after every bag's worth of retirements hands the bag to the global
    /// queue and runs a collection, so collection keeps pace with
    /// retirement.
    ///
    /// Weighing by size bounds the work of one collection, which frees up
    /// to 8 bags at once on whichever thread runs it. With a plain count
    /// of 64, a bag could hold 64 retired shards (two tables each), and
    /// during rapid growth one insert that ran the collection spent up to
    /// 2-5 ms freeing 8 such bags. By weight, a bag holds about 2 retired
    /// shards, 5 retired views or 32 small values. 32 rather than 64: in
    /// the RapidGrow mix (removes and updates retire many small values) the
    /// largest per-insert work fell from about 1.3 ms to 0.3 ms
    /// (`cargo bench --bench growth -- growth`), while the update benchmark
    /// (`cargo bench --bench maps -- update_1M/snapmap/`) showed no
    /// difference within its noise.
    const FLUSH_EVERY: usize = 32;

    std::thread_local! {
        static SINCE_FLUSH: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }

    /// Frees `ptr` (a `Box::into_raw` result) once no thread pinned now can
    /// still be reading it, counting `bytes` as retired until then.
    ///
    /// # Safety
    ///
    /// - `ptr` came from `Box::<T>::into_raw` and is retired exactly once;
    /// - it has already been unlinked: no thread that pins after this call
    ///   can reach it.
    #[inline]
    pub(crate) unsafe fn retire<T: ?Sized + Send + 'static>(
        guard: &Guard,
        ptr: *mut T,
        kind: RetiredKind,
        bytes: usize,
    ) {
        // SAFETY: forwarded from our caller.
        let Some(bytes) = (unsafe { super::begin_retire(ptr, kind, bytes) }) else {
            return;
        };
        // SAFETY: the caller guarantees the pointer is unlinked and uniquely
        // owned by this retirement; `T: Send + 'static` lets it be dropped
        // later on any thread. `defer_unchecked` runs the closure after every
        // guard pinned at this point is gone. For a sized `T` the closure is
        // three words (pointer, size, kind), which crossbeam stores without
        // allocating; a read view is a slice-tailed type whose pointer is
        // two words, so crossbeam boxes that closure (one small allocation
        // per retired view: once per promotion, never per write).
        unsafe {
            guard.defer_unchecked(move || {
                drop(Box::from_raw(ptr));
                count_retired(kind, -bytes);
            })
        }
        let weight = 1 + bytes.unsigned_abs() / 1024;
        let flush = SINCE_FLUSH.with(|since| {
            let n = since.get() + weight;
            since.set(if n >= FLUSH_EVERY { 0 } else { n });
            n >= FLUSH_EVERY
        });
        // Not in tier 2 of the loom suite: there, crossbeam-epoch's own
        // `Local::flush` crashed (SIGSEGV in `Queue::push`, loading a loom
        // atomic) when called from a model. The flush only decides *when*
        // garbage is collected; the reclamation model checks *that* nothing
        // is freed early, which does not depend on it.
        if flush && !cfg!(crossbeam_loom) {
            guard.flush();
        }
    }
}

/// Tier-1 stand-in for the epoch: retired objects are freed when the loom
/// execution ends (its lazy statics are dropped), after every thread of the
/// model has finished. That is later than any real collector, so it never
/// frees too early, and loom explores only this crate's own protocol.
#[cfg(all(snapmap_loom, not(crossbeam_loom)))]
pub(crate) mod epoch {
    use crate::stats::{RetiredKind, count_retired};
    use core::marker::PhantomData;

    /// A pin. Not `Send`, like crossbeam's.
    pub(crate) struct Guard {
        _not_send: PhantomData<*mut ()>,
    }

    /// Pins the current thread (a no-op stand-in).
    pub(crate) fn pin() -> Guard {
        Guard {
            _not_send: PhantomData,
        }
    }

    struct Deferred(Box<dyn FnOnce()>);

    // SAFETY: every deferred closure drops a `Box<T>` with `T: Send`
    // (`retire`'s bound); the raw pointer it captures is uniquely owned.
    unsafe impl Send for Deferred {}

    /// Objects retired during the current execution.
    struct Garbage(std::sync::Mutex<Vec<Deferred>>);

    impl Drop for Garbage {
        fn drop(&mut self) {
            let deferred = std::mem::take(self.0.get_mut().unwrap_or_else(|e| e.into_inner()));
            for Deferred(free) in deferred {
                free();
            }
        }
    }

    loom::lazy_static! {
        static ref GARBAGE: Garbage = Garbage(std::sync::Mutex::new(Vec::new()));
    }

    /// Defers freeing `ptr` to the end of the execution.
    ///
    /// # Safety
    ///
    /// As for the real `retire`: `ptr` came from `Box::into_raw`, is retired
    /// once and is already unlinked.
    pub(crate) unsafe fn retire<T: ?Sized + Send + 'static>(
        _guard: &Guard,
        ptr: *mut T,
        kind: RetiredKind,
        bytes: usize,
    ) {
        // SAFETY: forwarded from our caller.
        let Some(bytes) = (unsafe { super::begin_retire(ptr, kind, bytes) }) else {
            return;
        };
        let free = Deferred(Box::new(move || {
            // SAFETY: `ptr` is uniquely owned by this retirement and freed
            // once, at the end of the execution, after every thread is done.
            drop(unsafe { Box::from_raw(ptr) });
            count_retired(kind, -bytes);
        }));
        GARBAGE
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(free);
    }
}

// ----- Snapshot cell ----------------------------------------------------------------

/// The cell that publishes the latest snapshot: `arc-swap` (lock-free loads
/// and stores, each a total order with acquire/release semantics).
#[cfg(not(snapmap_loom))]
pub(crate) struct SnapshotCell<T>(arc_swap::ArcSwapOption<T>);

#[cfg(not(snapmap_loom))]
impl<T> SnapshotCell<T> {
    pub(crate) fn new() -> Self {
        SnapshotCell(arc_swap::ArcSwapOption::empty())
    }

    /// The latest published value.
    #[inline]
    pub(crate) fn load_full(&self) -> Option<Arc<T>> {
        self.0.load_full()
    }

    /// Publishes `value`.
    pub(crate) fn store(&self, value: Arc<T>) {
        self.0.store(Some(value));
    }

    /// Empties the cell.
    pub(crate) fn clear(&self) {
        self.0.store(None);
    }
}

/// Under loom: a loom mutex around the `Arc`, with arc-swap's contract (a
/// total order of loads and stores, acquire/release).
#[cfg(snapmap_loom)]
pub(crate) struct SnapshotCell<T>(loom::sync::Mutex<Option<Arc<T>>>);

#[cfg(snapmap_loom)]
impl<T> SnapshotCell<T> {
    pub(crate) fn new() -> Self {
        SnapshotCell(loom::sync::Mutex::new(None))
    }

    pub(crate) fn load_full(&self) -> Option<Arc<T>> {
        self.0.lock().expect("not poisoned").clone()
    }

    pub(crate) fn store(&self, value: Arc<T>) {
        *self.0.lock().expect("not poisoned") = Some(value);
    }

    pub(crate) fn clear(&self) {
        *self.0.lock().expect("not poisoned") = None;
    }
}

// ----- Waiting and thread-local state ---------------------------------------------------

/// Gives the processor away while waiting for another thread (loom needs
/// to know a loop is waiting).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(snapmap_loom))]
    std::thread::yield_now();
    #[cfg(snapmap_loom)]
    loom::thread::yield_now();
}

/// The write gates the calling thread is inside, each with its nesting
/// depth: `(gate id, depth)`. One entry per gate, so that being inside one
/// map's gate says nothing about another map's (issue 11: with one depth
/// for every map, a write to map `b` from inside `a.batch(..)` skipped
/// `b`'s gate). Threads are rarely inside more than one or two gates, so a
/// short list searched from its end (the innermost gate) is the whole
/// structure; it keeps its capacity, so entering allocates only the first
/// time.
type HeldGates = core::cell::RefCell<Vec<(u64, usize)>>;

#[cfg(not(snapmap_loom))]
std::thread_local! {
    static HELD_GATES: HeldGates = const { core::cell::RefCell::new(Vec::new()) };
}

#[cfg(snapmap_loom)]
loom::thread_local! {
    static HELD_GATES: HeldGates = core::cell::RefCell::new(Vec::new());
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

/// What both epoch implementations do first when retiring: count the bytes
/// as retired, or, in the `FreeWithoutEpoch` twin, destroy at once. Returns
/// the byte count to subtract when freed, or `None` if already destroyed.
///
/// # Safety
///
/// As for `epoch::retire`.
unsafe fn begin_retire<T: ?Sized>(
    ptr: *mut T,
    kind: crate::stats::RetiredKind,
    bytes: usize,
) -> Option<isize> {
    if injected(Bug::FreeWithoutEpoch) {
        // SAFETY: none; this is the deliberately broken twin of the
        // reclamation model. It runs the destructor at once but keeps the
        // memory, so the model reports a value destroyed under a reader
        // instead of crashing on freed memory.
        unsafe { core::ptr::drop_in_place(ptr) };
        return None;
    }
    crate::stats::count_retired(kind, bytes as isize);
    Some(bytes as isize)
}

// ----- Broken twins -----------------------------------------------------------------

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
    /// retired through the epoch (memory leaked, as above). Only entries:
    /// views and shards are still retired properly, so a reader walking an
    /// old view reaches the destroyed entry instead of a freed table.
    FreeEntryWithoutEpoch,
    /// A split publishes the new shards but does not mark the old one
    /// retired, so writers that reach it through an old directory keep
    /// writing into it.
    SplitWithoutRetire,
    /// A snapshot build publishes without closing the write gate, so it
    /// can copy one shard before a batch and another after it.
    SnapshotWithoutGate,
    /// A writer changes a shard during a snapshot build without first
    /// capturing it, so the build can copy it after a write made after its
    /// cut.
    WriteWithoutCapture,
    /// The write gate's nesting depth is one per thread for every map (the
    /// bug of issue 11): a thread inside one map's batch that writes to
    /// another map counts as already inside that map's gate, so the other
    /// map's snapshot builds neither wait for it nor see it capture.
    SharedGateDepth,
    /// A compaction builds the new view from the live entries alone,
    /// without expunging the deleted ones it leaves out, so a lock-free
    /// store into one of those (through the old view) lands in an entry
    /// that no current table holds.
    CompactWithoutExpunge,
}

/// Whether `bug` is switched on. Always `false` outside loom builds.
#[cfg(not(snapmap_loom))]
#[inline(always)]
pub(crate) const fn injected(_bug: Bug) -> bool {
    false
}

#[cfg(snapmap_loom)]
static INJECTED: std::sync::Mutex<Option<Bug>> = std::sync::Mutex::new(None);

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

// ----- Tuning that loom models lower ------------------------------------------------

/// The removed keys a shard may hold beyond its live count before a removal
/// compacts it (`crate::shard::REMOVED_KEYS_SLACK`).
#[cfg(not(snapmap_loom))]
#[inline(always)]
pub(crate) const fn removed_keys_slack() -> usize {
    crate::shard::REMOVED_KEYS_SLACK
}

#[cfg(snapmap_loom)]
static REMOVED_KEYS_SLACK: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(crate::shard::REMOVED_KEYS_SLACK);

/// The removed keys a shard may hold beyond its live count before a removal
/// compacts it (a model may lower it with [`set_removed_keys_slack`]).
#[cfg(snapmap_loom)]
pub(crate) fn removed_keys_slack() -> usize {
    // Relaxed: set once before `loom::model`, a std atomic loom never sees.
    REMOVED_KEYS_SLACK.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sets the removed-keys slack for the rest of the process (loom builds
/// only; the compaction model sets 0 before `loom::model`).
#[cfg(snapmap_loom)]
pub fn set_removed_keys_slack(slack: usize) {
    // Relaxed: see `removed_keys_slack`.
    REMOVED_KEYS_SLACK.store(slack, std::sync::atomic::Ordering::Relaxed);
}

// ----- Machine facts ----------------------------------------------------------------

/// The number of hardware threads, asked once per process (asking reads
/// cgroup files and allocates; maps are built often in some programs).
pub(crate) fn cpu_count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(4, |n| n.get()))
}

// ----- Unique ids -----------------------------------------------------------------------

/// A number no earlier call returned (shard identities for snapshot reuse).
/// Uniqueness is all that matters, so it uses std's atomics in every build.
pub(crate) fn next_unique_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Relaxed: only uniqueness of the number matters, not ordering.
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ----- Thread index -------------------------------------------------------------------

/// The stats stripe that the current thread writes.
///
/// Threads are numbered round-robin the first time they ask; a map with `n`
/// stripes gives thread `i` stripe `i % n`, so up to `n` threads never share
/// a stripe. This is a hint for spreading writes, not part of any protocol,
/// so it uses std's atomics in every build.
#[inline]
pub(crate) fn thread_index() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|index| {
        let mut i = index.get();
        if i == usize::MAX {
            // Relaxed: only uniqueness of the number matters, not ordering.
            i = NEXT.fetch_add(1, Ordering::Relaxed);
            index.set(i);
        }
        i
    })
}
