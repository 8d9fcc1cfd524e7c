//! The one place that names synchronisation primitives.
//!
//! Every atomic, `Arc`, mutex, epoch operation, published cell,
//! notification event and thread-local in the crate is imported from this
//! module, so that the loom build swaps all of them at once. Nothing
//! outside this file may `use std::sync::atomic`, `parking_lot`,
//! `crossbeam_epoch`, `arc_swap`, `event_listener` or `loom` directly. This module imports nothing of the crate: it is the
//! bottom of the module graph (`scripts/module-cycles.py` checks it).
//!
//! # What is swapped
//!
//! | primitive | normal build | `--cfg snapmap_loom` (tier 1) | `+ --cfg crossbeam_loom` (tier 2) |
//! |---|---|---|---|
//! | atomics, `Arc` | `std::sync` | `loom::sync` | `loom::sync` |
//! | [`Mutex`] | `parking_lot::Mutex` | `loom::sync::Mutex` behind `lock()` | same as tier 1 |
//! | [`epoch`] | `crossbeam_epoch` | a stand-in that frees at the end of the execution | `crossbeam_epoch` built on loom |
//! | [`Published`] | the value itself | a `loom::cell::UnsafeCell` | same as tier 1 |
//! | [`SnapshotCell`] | `arc_swap::ArcSwapOption` | a `loom::sync::Mutex` | same as tier 1 |
//! | [`thread_local!`](thread_local) | `std::thread_local!` | `loom::thread_local!` | same as tier 1 |
//! | model thread number | (none: `crate::thread::thread_index` numbers OS threads) | `model_thread_number`, per execution | same as tier 1 |
//! | [`Event`] (change notification) | `event_listener::Event` | a generation under a `loom::sync::Mutex`, with a `loom::sync::Condvar` | same as tier 1 |
//! | [`stat_atomic`], [`unmodelled`] | `std::sync` | `std::sync` (invisible to loom on purpose) | same |
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
//! The crate uses exactly four things from the epoch: [`epoch::pin`], the
//! [`epoch::Guard`] it returns (whose lifetime bounds every reference handed
//! to a user), [`epoch::defer_unchecked`], which runs a closure (in
//! practice: frees a `Box`) once every guard that was pinned when it was
//! deferred has been dropped, and [`epoch::flush`], which hands the
//! thread's deferred closures to the collector. The tier-1 stand-in frees
//! deferred objects only when the loom execution ends, which is always late
//! enough, so loom explores this crate's protocol rather than the
//! collector's; tier 2 runs the real collector.
//!
//! *When* to flush, and how retired memory is counted, is policy, not a
//! primitive: it is in `crate::reclaim`, which every retirement goes
//! through.

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

    /// The pointer in `atomic`, read through `&mut` (no other thread can
    /// touch it): a plain read, which loom does not count as a branch of
    /// its model (drops read every cell of a view this way).
    #[inline(always)]
    pub(crate) fn load_mut<T>(atomic: &mut AtomicPtr<T>) -> *mut T {
        #[cfg(not(snapmap_loom))]
        return *atomic.get_mut();
        #[cfg(snapmap_loom)]
        return atomic.with_mut(|p| *p);
    }
}

/// Atomics for statistics (lengths, hit and event counters).
///
/// They order nothing and no protocol reads them, so they are std's in
/// every build: under loom they stay invisible, and loom's state space is
/// spent on the protocol, not on counter bumps.
pub(crate) mod stat_atomic {
    pub(crate) use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
}

/// Std primitives that loom must not see, in every build.
///
/// Two kinds of state use them: process-wide settings a loom model makes
/// before `loom::model` runs (the broken-twin switch, the tuning knobs),
/// which loom's primitives cannot hold outside an execution; and numbers
/// whose only job is to be distinct or to spread threads (unique ids, the
/// thread index, the CPU count), which order nothing and would only grow
/// loom's state space.
pub(crate) mod unmodelled {
    pub(crate) use std::sync::OnceLock;
    pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// The free list of thread indices (`crate::thread`), and under loom
    /// the broken-twin switch.
    pub(crate) use std::sync::Mutex;
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

    /// Runs `free` once no thread pinned now can still be reading what it
    /// frees: after every guard pinned at this point has been dropped.
    ///
    /// # Safety
    ///
    /// `free` may run on any thread, at any later time (possibly after the
    /// structure it came from is gone): everything it captures must be safe
    /// to send to another thread and valid until it runs (in practice, a
    /// `Box::into_raw` pointer to a `Send + 'static` object that has been
    /// unlinked, so that no thread that pins after this call can reach it,
    /// and that is freed by this closure only).
    #[inline]
    pub(crate) unsafe fn defer_unchecked<F: FnOnce() + 'static>(guard: &Guard, free: F) {
        // SAFETY: forwarded from our caller. `defer_unchecked` runs the
        // closure after every guard pinned at this point is gone; a closure
        // of up to three words is stored without allocating.
        unsafe { guard.defer_unchecked(free) }
    }

    /// Hands this thread's deferred closures to the global queue and runs
    /// a collection.
    ///
    /// Not in tier 2 of the loom suite: there, crossbeam-epoch's own
    /// `Local::flush` crashed (SIGSEGV in `Queue::push`, loading a loom
    /// atomic) when called from a model. The flush only decides *when*
    /// garbage is collected; the reclamation model checks *that* nothing is
    /// freed early, which does not depend on it.
    #[inline]
    pub(crate) fn flush(guard: &Guard) {
        if !cfg!(crossbeam_loom) {
            guard.flush();
        }
    }
}

/// Tier-1 stand-in for the epoch: deferred closures run when the loom
/// execution ends (its lazy statics are dropped), after every thread of the
/// model has finished. That is later than any real collector, so it never
/// frees too early, and loom explores only this crate's own protocol.
#[cfg(all(snapmap_loom, not(crossbeam_loom)))]
pub(crate) mod epoch {
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

    // SAFETY: every deferred closure is safe to send by the contract of
    // `defer_unchecked` (in practice it drops a `Box<T>` with `T: Send`,
    // through a raw pointer it uniquely owns).
    unsafe impl Send for Deferred {}

    /// Closures deferred during the current execution.
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

    /// Defers `free` to the end of the execution.
    ///
    /// # Safety
    ///
    /// As for the real `defer_unchecked`: `free` may run on another thread,
    /// later, and what it captures must be sendable and valid until then.
    pub(crate) unsafe fn defer_unchecked<F: FnOnce() + 'static>(_guard: &Guard, free: F) {
        GARBAGE
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Deferred(Box::new(free)));
    }

    /// Nothing to hand over: the stand-in frees at the end of the execution.
    pub(crate) fn flush(_guard: &Guard) {}
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

// ----- Change notification --------------------------------------------------------

/// The event that writers notify and change waiters listen to (the write
/// gate's, `crate::gate`, "Change notification").
///
/// Normal builds: `event-listener`'s `Event`, whose listeners can block a
/// thread (with or without a deadline) or be awaited as a future on any
/// runtime. It is not built on loom's primitives, so under loom a small
/// stand-in with the same *register, then check, then wait* shape takes its
/// place: a generation number under a loom mutex and a loom condvar. A
/// listener records the generation when it is made (registration), a
/// notification bumps it and wakes every waiter, and a wait returns once
/// the generation differs from the recorded one, so a notification between
/// registration and wait is never lost. The stand-in has no future and
/// no timeout (loom's condvar never times out): models wait without a
/// deadline.
#[cfg(not(snapmap_loom))]
pub(crate) struct Event(event_listener::Event);

#[cfg(not(snapmap_loom))]
impl Event {
    pub(crate) fn new() -> Self {
        Event(event_listener::Event::new())
    }

    /// Registers a listener: every notification from now on reaches it.
    pub(crate) fn listen(&self) -> EventListener<'_> {
        EventListener(self.0.listen(), core::marker::PhantomData)
    }

    /// Wakes every registered listener.
    #[cold]
    pub(crate) fn notify_all(&self) {
        // event-listener's notification starts with a SeqCst fence; the
        // gate's own protocol does not rely on it (see `crate::gate`).
        self.0.notify(usize::MAX);
    }
}

/// A registered listener of an [`Event`].
#[cfg(not(snapmap_loom))]
pub(crate) struct EventListener<'a>(
    event_listener::EventListener,
    core::marker::PhantomData<&'a Event>,
);

#[cfg(not(snapmap_loom))]
impl EventListener<'_> {
    /// Blocks until notified (`true`) or until `deadline` passes (`false`).
    pub(crate) fn wait(self, deadline: Option<std::time::Instant>) -> bool {
        use event_listener::Listener as _;
        match deadline {
            None => {
                self.0.wait();
                true
            }
            Some(deadline) => self.0.wait_deadline(deadline).is_some(),
        }
    }
}

#[cfg(not(snapmap_loom))]
impl core::future::Future for EventListener<'_> {
    type Output = ();

    fn poll(
        mut self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<()> {
        // event-listener's listener is `Unpin` (it boxes its list node).
        core::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// Under loom: the stand-in described on the normal build's `Event`.
#[cfg(snapmap_loom)]
pub(crate) struct Event {
    generation: loom::sync::Mutex<u64>,
    woken: loom::sync::Condvar,
}

#[cfg(snapmap_loom)]
impl Event {
    pub(crate) fn new() -> Self {
        Event {
            generation: loom::sync::Mutex::new(0),
            woken: loom::sync::Condvar::new(),
        }
    }

    /// Registers a listener: it records the generation now.
    pub(crate) fn listen(&self) -> EventListener<'_> {
        let generation = *self.generation.lock().expect("not poisoned");
        EventListener {
            event: self,
            generation,
        }
    }

    /// Bumps the generation and wakes every waiter.
    pub(crate) fn notify_all(&self) {
        *self.generation.lock().expect("not poisoned") += 1;
        self.woken.notify_all();
    }
}

/// A registered listener of the loom stand-in [`Event`].
#[cfg(snapmap_loom)]
pub(crate) struct EventListener<'a> {
    event: &'a Event,
    generation: u64,
}

#[cfg(snapmap_loom)]
impl EventListener<'_> {
    /// Blocks until a notification after registration. The deadline is
    /// ignored (loom's condvar never times out): always `true`.
    pub(crate) fn wait(self, _deadline: Option<std::time::Instant>) -> bool {
        let mut generation = self.event.generation.lock().expect("not poisoned");
        while *generation == self.generation {
            generation = self.event.woken.wait(generation).expect("not poisoned");
        }
        true
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

/// Declares a thread-local: `std::thread_local!` in normal builds,
/// `loom::thread_local!` under loom (each model thread then has its own).
///
/// Written as std's const-initialised form, `static NAME: T = const {
/// init };`, which loom's macro does not parse: under loom the `const`
/// block is unwrapped.
macro_rules! thread_local_switch {
    ($(#[$attr:meta])* static $name:ident: $t:ty = const { $init:expr };) => {
        #[cfg(not(snapmap_loom))]
        std::thread_local! {
            $(#[$attr])* static $name: $t = const { $init };
        }
        #[cfg(snapmap_loom)]
        loom::thread_local! {
            $(#[$attr])* static $name: $t = $init;
        }
    };
}

pub(crate) use thread_local_switch as thread_local;

/// Under loom, the calling model thread's number: one no other model
/// thread of this execution has, counted from 0 in every execution. Model
/// threads run as coroutines on one OS thread, so std's thread-locals and
/// a process-wide counter can tell them neither apart nor restart; this
/// counter is reset with each execution (`loom::lazy_static`) and is not
/// part of the model (a std atomic; loom runs one thread at a time).
#[cfg(snapmap_loom)]
pub(crate) fn model_thread_number() -> usize {
    loom::lazy_static! {
        static ref NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    }
    loom::thread_local! {
        static NUMBER: core::cell::Cell<usize> = core::cell::Cell::new(usize::MAX);
    }
    NUMBER.with(|number| {
        if number.get() == usize::MAX {
            // Relaxed: only uniqueness matters, and loom runs one model
            // thread at a time.
            number.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        }
        number.get()
    })
}
