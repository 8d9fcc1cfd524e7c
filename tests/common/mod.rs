//! Helpers shared by the integration tests: the builder configurations
//! every suite runs under, a drop-counting wrapper, a bounded wait for
//! the epoch collector, a small random generator, and (in [`lincheck`]) a
//! linearizability checker for recorded histories.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod lincheck;

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use snapmap::SnapMap;

/// One way of building a map. The tests run the same cases under each, so
/// that small shard counts, small promotion thresholds and tiny shard
/// capacities walk the protocol (and shard splits and merges) through every
/// state within a handful of operations.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub name: &'static str,
    /// Initial shards; `None`: the builder's default.
    pub shards: Option<usize>,
    /// `None`: Go's rule (`misses >= len(dirty)`).
    pub threshold: Option<usize>,
    /// Shard capacity; `None`: the default (shards rarely split in tests).
    pub capacity: Option<usize>,
}

/// 1 shard; the default; promotion threshold 1; 1 shard and threshold 1;
/// and two with a tiny shard capacity, so that maps of a few keys split and
/// merge shards all the time.
pub const CONFIGS: &[Config] = &[
    Config {
        name: "1 shard",
        shards: Some(1),
        threshold: None,
        capacity: None,
    },
    Config {
        name: "default",
        shards: None,
        threshold: None,
        capacity: None,
    },
    Config {
        name: "promotion threshold 1",
        shards: None,
        threshold: Some(1),
        capacity: None,
    },
    Config {
        name: "1 shard + promotion threshold 1",
        shards: Some(1),
        threshold: Some(1),
        capacity: None,
    },
    Config {
        name: "1 shard + capacity 4 (splits and merges)",
        shards: Some(1),
        threshold: None,
        capacity: Some(4),
    },
    Config {
        name: "1 shard + capacity 2 + promotion threshold 1",
        shards: Some(1),
        threshold: Some(1),
        capacity: Some(2),
    },
];

impl Config {
    /// A map with this configuration and the default hasher.
    pub fn build<K, V>(&self) -> SnapMap<K, V> {
        self.build_with_hasher(snapmap::DefaultHashBuilder::default())
    }

    /// A map with this configuration and `hasher`.
    pub fn build_with_hasher<K, V, S: BuildHasher>(&self, hasher: S) -> SnapMap<K, V, S> {
        let mut builder = SnapMap::<K, V>::builder().hasher(hasher);
        if let Some(shards) = self.shards {
            builder = builder.shards(shards);
        }
        if let Some(threshold) = self.threshold {
            builder = builder.promotion_threshold(threshold);
        }
        if let Some(capacity) = self.capacity {
            builder = builder.shard_capacity(capacity);
        }
        builder.build().expect("test configurations are valid")
    }

    /// Whether the map stays one shard for the few keys of a small test.
    pub fn single_shard(&self) -> bool {
        self.shards == Some(1) && self.capacity.is_none()
    }
}

/// Runs `case` once per configuration in [`CONFIGS`], with a fresh map.
pub fn for_each_config<K, V>(mut case: impl FnMut(&Config, SnapMap<K, V>)) {
    for config in CONFIGS {
        case(config, config.build());
    }
}

// ----- random numbers --------------------------------------------------------

/// A tiny deterministic generator (xorshift64*), one per thread, so the
/// tests need no random-number crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) % n
    }
}

// ----- drop counting ---------------------------------------------------------

/// Creation and drop counts for the [`Tracked`] values of one test.
///
/// Tests in one binary run in parallel, so each test makes its own `Counts`
/// and its values carry an `Arc` to it: no global counter.
#[derive(Debug, Default)]
pub struct Counts {
    created: AtomicUsize,
    dropped: AtomicUsize,
}

impl Counts {
    pub fn new() -> Arc<Self> {
        Arc::new(Counts::default())
    }

    pub fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Values created and not yet dropped.
    pub fn alive(&self) -> usize {
        // Drops first: every drop follows its creation, so this order never
        // sees more drops than creations.
        let dropped = self.dropped();
        self.created() - dropped
    }

    /// A new tracked value.
    pub fn track<T>(self: &Arc<Self>, inner: T) -> Tracked<T> {
        self.created.fetch_add(1, Ordering::SeqCst);
        Tracked {
            inner,
            counts: Arc::clone(self),
        }
    }
}

/// A value that counts its creations (including clones) and drops.
/// Equality, hashing and ordering look only at `inner`.
pub struct Tracked<T> {
    pub inner: T,
    counts: Arc<Counts>,
}

impl<T: Clone> Clone for Tracked<T> {
    fn clone(&self) -> Self {
        self.counts.track(self.inner.clone())
    }
}

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        let dropped = self.counts.dropped.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(
            dropped <= self.counts.created(),
            "a tracked value was dropped twice"
        );
    }
}

impl<T: PartialEq> PartialEq for Tracked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl<T: Eq> Eq for Tracked<T> {}

impl<T: Hash> Hash for Tracked<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl<T: fmt::Debug> fmt::Debug for Tracked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Drives the global epoch collector until every value counted by `counts`
/// has been dropped. Values retired by the map are freed only after the
/// epoch advances twice past their retirement; each `flush` pushes this
/// thread's garbage to the global queue and tries to advance and collect.
///
/// Panics (with the counts) if a bounded number of flushes does not get
/// there: something leaked.
pub fn wait_for_drops(counts: &Counts) {
    wait_until_alive(counts, 0);
}

/// Like [`wait_for_drops`], until exactly `expected` values are alive (for
/// example the ones still in a map, once every replaced one is freed).
/// Panics if more are alive after the bound, or if fewer ever are.
///
/// The bound is generous because other tests in the same binary keep the
/// collector busy: their threads pin (holding the epoch back while one is
/// descheduled) and fill the global garbage queue ahead of ours. A run that
/// does not leak finishes in a handful of flushes.
pub fn wait_until_alive(counts: &Counts, expected: usize) {
    const ATTEMPTS: usize = 100_000;
    for attempt in 0..ATTEMPTS {
        let alive = counts.alive();
        assert!(
            alive >= expected,
            "{alive} values alive, expected {expected}: a value was dropped too early"
        );
        if alive == expected {
            return;
        }
        crossbeam_epoch::pin().flush();
        if attempt % 16 == 15 {
            // Let pinned threads of other tests run and unpin.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    panic!(
        "leak: {} values created, {} dropped, {} expected alive after {ATTEMPTS} epoch flushes",
        counts.created(),
        counts.dropped(),
        expected
    );
}

/// Runs `f` on a new thread and returns its result, failing the test if it
/// has not finished after a generous bound. A watchdog, not a timing
/// assertion: `f` takes microseconds, and only a deadlock (a lock never
/// released, or taken re-entrantly) reaches the bound.
pub fn without_deadlock<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    wait.recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{what}: did not complete ({e}): deadlock?"))
}
