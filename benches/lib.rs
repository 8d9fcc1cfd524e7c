//! The workload code every bench binary shares: key generation, the map
//! adapters (one small trait implemented for snapmap and every peer), the
//! thread runner and the operation streams.
//!
//! Every map runs exactly the same code through [`BenchMap`] / [`Ops`], so
//! the only thing that differs between two rows of a table is the map.
//! Keys and values are `u64`; keys come from a bijective mixer, so two
//! different indices never give the same key.
//!
//! The trait and the adapters of snapmap, dashmap, papaya, the `RwLock` and
//! `ArcSwap` maps and the ceiling live in the `snapmap-peers` workspace
//! crate (`peers/`), shared with snapmap's `config_cache` example, and are
//! re-exported here; the scc adapters, whose crate is the heaviest peer to
//! build, stay here ([`SccMap`], [`SccIndex`]).
//!
//! This is the library of the `snapmap-benches` package, a workspace member
//! of its own so that criterion and the benchmark tools are dependencies of
//! the benchmarks only, never of snapmap's tests and examples. The bench
//! binaries (`maps.rs`, `growth.rs`, `lookup_cost.rs`, `capacity.rs`) sit
//! beside it: `cargo bench -p snapmap-benches --bench NAME`.

use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde::Serialize;
pub use snapmap_peers::*;

// ----- Mode and sizes ----------------------------------------------------------

/// Whether `SNAPMAP_BENCH_QUICK` is set (to anything but `0`): tiny sizes and
/// times, so the whole suite runs in seconds. It checks nothing about speed.
pub fn quick() -> bool {
    std::env::var("SNAPMAP_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The sizes of every workload, full or quick.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// The "1M keys" maps (read hit, iteration, heap bytes, updates).
    pub big: usize,
    /// The "10K keys" maps (read hit, config cache).
    pub small: usize,
    /// Length of each thread's precomputed lookup stream for `big`.
    pub big_stream: usize,
    /// Length of each thread's precomputed lookup stream for `small`.
    pub small_stream: usize,
    /// log2 of the conc-map-bench "initial capacity" (prefill is 75 % of it,
    /// and the total number of timed operations equals it).
    pub mix_cap_log2: u32,
    /// Keys inserted by the rapid-growth latency harness.
    pub growth: usize,
    /// Operations per allocation-count measurement.
    pub alloc_ops: usize,
}

impl Sizes {
    /// The sizes for the current mode.
    pub fn get() -> Sizes {
        if quick() {
            Sizes {
                big: 1 << 14,
                small: 1000,
                big_stream: 1 << 14,
                small_stream: 1 << 12,
                mix_cap_log2: 12,
                growth: 50_000,
                alloc_ops: 2_000,
            }
        } else {
            Sizes {
                big: 1_000_000,
                small: 10_000,
                big_stream: 1 << 20,
                small_stream: 1 << 16,
                mix_cap_log2: 19,
                growth: 5_000_000,
                alloc_ops: 100_000,
            }
        }
    }
}

/// A short human label for a key count: 1M, 10K, 16K...
pub fn label(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n % 1_000 == 0 {
        format!("{}K", n / 1_000)
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{}Ki", n / 1024)
    } else {
        n.to_string()
    }
}

// ----- Results -------------------------------------------------------------------

/// Where the bench binaries write their results (`growth.json`,
/// `snapmap-stats.json`): `$SNAPMAP_BENCH_OUT`, or the workspace's
/// `target/snapmap-bench`.
pub fn out_dir() -> PathBuf {
    std::env::var_os("SNAPMAP_BENCH_OUT").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/snapmap-bench"
            ))
        },
        PathBuf::from,
    )
}

/// Writes `value` as JSON to `file` in [`out_dir`] (created if needed) and
/// returns the file's path.
pub fn write_json(file: &str, value: &impl Serialize) -> std::io::Result<PathBuf> {
    let dir = out_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(file);
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(&path, text)?;
    Ok(path)
}

// ----- Keys and randomness -------------------------------------------------------

/// SplitMix64's finaliser: a bijection on `u64` (each step is invertible),
/// so distinct inputs give distinct keys.
#[inline]
pub const fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x
}

/// The `i`-th key of thread `t`'s key space. Key spaces of different
/// threads never overlap (`i < 2^40`).
#[inline]
pub const fn key(t: usize, i: u64) -> u64 {
    mix(((t as u64) << 40) | i)
}

/// The first `n` keys of thread 0's key space (the shared key set of the
/// read workloads).
pub fn keys(n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| key(0, i)).collect()
}

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed ^ 0x5eed))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A number in `0..n` (`n > 0`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Thread `t`'s lookup stream: `len` (a power of two) keys drawn uniformly
/// from `keys`, all hits.
pub fn lookup_stream(keys: &[u64], len: usize, t: usize) -> Vec<u64> {
    assert!(len.is_power_of_two());
    let mut rng = Rng::new(0x100 + t as u64);
    (0..len)
        .map(|_| keys[rng.below(keys.len() as u64) as usize])
        .collect()
}

// ----- scc ---------------------------------------------------------------------------

/// scc's `HashMap` (bucket-locked reads through `read_sync`).
pub struct SccMap<S: BuildHasher>(pub scc::HashMap<u64, u64, S>);

impl<S> BenchMap for SccMap<S>
where
    S: BuildHasher + Default + Send + Sync,
{
    type Handle<'a>
        = SccMapRef<'a, S>
    where
        Self: 'a;

    fn name() -> String {
        "scc::HashMap".into()
    }

    fn new() -> Self {
        SccMap(scc::HashMap::with_hasher(S::default()))
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        SccMapRef(&self.0)
    }
}

/// A reference to an scc `HashMap` (a type of this crate: [`Ops`] is
/// `snapmap-peers`' trait and `&scc::HashMap` a foreign type).
pub struct SccMapRef<'a, S: BuildHasher>(&'a scc::HashMap<u64, u64, S>);

impl<S: BuildHasher> Ops for SccMapRef<'_, S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.0.read_sync(&k, |_, v| *v)
    }
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        self.0.upsert_sync(k, v);
    }
    #[inline]
    fn remove(&self, k: u64) -> bool {
        self.0.remove_sync(&k).is_some()
    }
    #[inline]
    fn update(&self, k: u64) -> bool {
        self.0.update_sync(&k, |_, v| *v += 1).is_some()
    }
    fn iter_sum(&self) -> u64 {
        let mut acc = 0;
        self.0.iter_sync(|k, v| {
            acc = fold(acc, *k, *v);
            true
        });
        acc
    }
}

/// scc's `HashIndex` (lock-free `peek` under a guard reused per batch).
pub struct SccIndex<S: BuildHasher>(pub scc::HashIndex<u64, u64, S>);

/// A `HashIndex` and a guard held for a batch.
pub struct SccIndexHandle<'a, S: BuildHasher> {
    map: &'a scc::HashIndex<u64, u64, S>,
    guard: scc::Guard,
}

impl<S> BenchMap for SccIndex<S>
where
    S: BuildHasher + Default + Send + Sync,
{
    type Handle<'a>
        = SccIndexHandle<'a, S>
    where
        Self: 'a;

    fn name() -> String {
        "scc::HashIndex".into()
    }

    fn new() -> Self {
        SccIndex(scc::HashIndex::with_hasher(S::default()))
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        SccIndexHandle {
            map: &self.0,
            guard: scc::Guard::new(),
        }
    }
}

impl<S: BuildHasher> Ops for SccIndexHandle<'_, S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.map.peek(&k, &self.guard).copied()
    }
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        match self.map.entry_sync(k) {
            scc::hash_index::Entry::Occupied(mut o) => o.update(v),
            scc::hash_index::Entry::Vacant(vacant) => {
                vacant.insert_entry(v);
            }
        }
    }
    #[inline]
    fn remove(&self, k: u64) -> bool {
        self.map.remove_sync(&k)
    }
    #[inline]
    fn update(&self, k: u64) -> bool {
        match self.map.get_sync(&k) {
            Some(mut o) => {
                let v = *o.get() + 1;
                o.update(v);
                true
            }
            None => false,
        }
    }
    fn iter_sum(&self) -> u64 {
        self.map
            .iter(&self.guard)
            .fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}

/// The iteration ceiling: a `Vec<(u64, u64)>` walk.
pub fn vec_sum(v: &[(u64, u64)]) -> u64 {
    v.iter().fold(0, |a, &(k, v)| fold(a, k, v))
}

// ----- Building and settling ----------------------------------------------------------

/// Builds `M` holding `keys` (inserted from one thread), then settles it.
pub fn build<M: BenchMap>(keys: &[u64]) -> M {
    let mut map = M::new();
    map.fill(keys);
    settle(&map, keys);
    map
}

/// One untimed read pass over `keys`, as a warmed-up server would have
/// done: it warms caches for every map, and for snapmap it is what promotes
/// the keys a bulk load left in the dirty tables (Go's protocol promotes a
/// shard after `len(dirty)` slow-path lookups). Then an iteration, which
/// promotes any shard still pending, so every read afterwards is a
/// read-view hit.
pub fn settle<M: BenchMap>(map: &M, keys: &[u64]) {
    let mut hits = 0usize;
    for chunk in keys.chunks(BATCH) {
        let h = map.handle();
        for &k in chunk {
            hits += usize::from(h.get(k).is_some());
        }
    }
    assert_eq!(hits, keys.len(), "{}: a key went missing", M::name());
    std::hint::black_box(map.handle().iter_sum());
    flush_epoch();
}

/// Runs the epoch garbage that building (or dropping) a map left behind
/// now, untimed, instead of in whichever timed operation next advances the
/// epoch. It matters for snapmap: freeing a retired read view or shard
/// drops one `Arc<Entry>` reference per entry, and crossbeam runs up to
/// 512 such frees in one collection. Repeated pin-and-flush from this
/// thread (no other thread is pinned between benchmarks) advances the
/// global epoch and runs them; it stops once snapmap reports nothing
/// retired.
pub fn flush_epoch() {
    for i in 0..100_000 {
        crossbeam_epoch::pin().flush();
        if i >= 64 && snapmap::retired_bytes().total() == 0 {
            break;
        }
    }
}

// ----- Threads -----------------------------------------------------------------------

/// Runs `work(thread_index)` on `threads` scoped threads released together
/// by a barrier, and returns the span from the first thread's start to the
/// last thread's end. Thread start-up is outside the span; `prepare` runs on
/// each thread before the barrier (pin once there, so epoch registration is
/// not timed).
pub fn run_threads<P, W>(threads: usize, prepare: P, work: W) -> Duration
where
    P: Fn(usize) + Sync,
    W: Fn(usize) + Sync,
{
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, prepare, work) = (&barrier, &prepare, &work);
                s.spawn(move || {
                    prepare(t);
                    barrier.wait();
                    let start = Instant::now();
                    work(t);
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect()
    });
    let start = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one thread");
    let end = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one thread");
    end - start
}

/// `iters` lookups per thread from each thread's stream (cycled), a handle
/// re-taken every [`BATCH`] lookups. Returns the summed values (to be
/// black-boxed) and asserts nothing.
#[inline(never)]
pub fn lookups<M: BenchMap>(map: &M, stream: &[u64], iters: u64) -> u64 {
    let mask = stream.len() - 1;
    let mut acc = 0u64;
    let mut i = 0usize;
    let iters = iters as usize;
    while i < iters {
        let h = map.handle();
        let end = iters.min(i + BATCH);
        while i < end {
            acc = acc.wrapping_add(h.get(stream[i & mask]).unwrap_or(0));
            i += 1;
        }
    }
    acc
}

// ----- Operation streams -----------------------------------------------------------

/// What one operation of a mix does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// `get` of a key present at that point (a hit).
    Read,
    /// Insert of a fresh key.
    Insert,
    /// Removal of the thread's oldest present key (or a miss if none).
    Remove,
    /// `update` (value + 1) of a present key.
    Update,
}

/// One precomputed operation.
#[derive(Clone, Copy, Debug)]
pub struct Op {
    /// The key.
    pub key: u64,
    /// The operation.
    pub kind: Kind,
}

/// A read/insert/remove/update mix in percent (conc-map-bench's
/// `bustle::Mix`, without upserts).
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// Name in the report.
    pub name: &'static str,
    /// Percent reads.
    pub read: u8,
    /// Percent inserts.
    pub insert: u8,
    /// Percent removes.
    pub remove: u8,
    /// Percent updates.
    pub update: u8,
    /// Prefill as a fraction of the capacity.
    pub prefill: f64,
}

/// conc-map-bench's ReadHeavy: 98/1/1/0, prefill 75 %.
pub const READ_HEAVY: Mix = Mix {
    name: "ReadHeavy",
    read: 98,
    insert: 1,
    remove: 1,
    update: 0,
    prefill: 0.75,
};

/// conc-map-bench's Exchange: 10/40/40/10, prefill 75 %.
pub const EXCHANGE: Mix = Mix {
    name: "Exchange",
    read: 10,
    insert: 40,
    remove: 40,
    update: 10,
    prefill: 0.75,
};

/// conc-map-bench's RapidGrow: 5/80/5/10, no prefill.
pub const RAPID_GROW: Mix = Mix {
    name: "RapidGrow",
    read: 5,
    insert: 80,
    remove: 5,
    update: 10,
    prefill: 0.0,
};

/// One thread's share of a mix run: its prefill keys and its operations.
pub struct MixStream {
    /// Keys this thread inserts before the timed run.
    pub prefill: Vec<u64>,
    /// The timed operations.
    pub ops: Vec<Op>,
}

/// Precomputes thread `t`'s stream for `mix` with capacity `cap` split over
/// `threads`. Each thread works on its own key space: its present keys are
/// the window `[lo, hi)` of its indices; inserts take `hi`, removes take
/// `lo` (oldest first), reads and updates pick uniformly inside the window.
/// The window is simulated here, so every read and update is a hit and every
/// insert a new key, whatever the map.
pub fn mix_stream(mix: Mix, cap: usize, threads: usize, t: usize) -> MixStream {
    assert_eq!(
        u32::from(mix.read) + u32::from(mix.insert) + u32::from(mix.remove) + u32::from(mix.update),
        100
    );
    let prefill = ((cap as f64 * mix.prefill) as usize / threads) as u64;
    let n_ops = cap / threads;
    let mut rng = Rng::new(0x200 + t as u64);
    let (mut lo, mut hi) = (0u64, prefill);
    let mut ops = Vec::with_capacity(n_ops);
    let present = |rng: &mut Rng, lo: u64, hi: u64| lo + rng.below(hi - lo);
    for _ in 0..n_ops {
        let r = rng.below(100) as u8;
        let op = if r < mix.read {
            if hi > lo {
                Op {
                    key: key(t, present(&mut rng, lo, hi)),
                    kind: Kind::Read,
                }
            } else {
                Op {
                    key: key(t, hi),
                    kind: Kind::Read,
                } // empty window: a miss
            }
        } else if r < mix.read + mix.insert {
            hi += 1;
            Op {
                key: key(t, hi - 1),
                kind: Kind::Insert,
            }
        } else if r < mix.read + mix.insert + mix.remove {
            if hi > lo {
                lo += 1;
                Op {
                    key: key(t, lo - 1),
                    kind: Kind::Remove,
                }
            } else {
                Op {
                    key: key(t, hi),
                    kind: Kind::Remove,
                } // empty window: a miss
            }
        } else if hi > lo {
            Op {
                key: key(t, present(&mut rng, lo, hi)),
                kind: Kind::Update,
            }
        } else {
            Op {
                key: key(t, hi),
                kind: Kind::Update,
            } // empty window: a miss
        };
        ops.push(op);
    }
    MixStream {
        prefill: (0..prefill).map(|i| key(t, i)).collect(),
        ops,
    }
}

/// Runs `ops` against `map`, re-taking the handle every [`BATCH`] ops.
#[inline(never)]
pub fn run_ops<M: BenchMap>(map: &M, ops: &[Op]) -> u64 {
    let mut acc = 0u64;
    for chunk in ops.chunks(BATCH) {
        let h = map.handle();
        for op in chunk {
            match op.kind {
                Kind::Read => acc = acc.wrapping_add(h.get(op.key).unwrap_or(0)),
                Kind::Insert => h.insert(op.key, op.key),
                Kind::Remove => acc += u64::from(h.remove(op.key)),
                Kind::Update => acc += u64::from(h.update(op.key)),
            }
        }
    }
    acc
}

/// Thread `t`'s stream of reads and updates of keys drawn uniformly from
/// `keys`, `update_pct` % updates (the config-cache mix is 1 %), `len` (a
/// power of two) operations, cycled by [`run_cyclic`].
pub fn update_stream(keys: &[u64], len: usize, t: usize, update_pct: u64) -> Vec<Op> {
    assert!(len.is_power_of_two());
    let mut rng = Rng::new(0x300 + t as u64);
    (0..len)
        .map(|_| {
            let key = keys[rng.below(keys.len() as u64) as usize];
            let kind = if rng.below(100) < update_pct {
                Kind::Update
            } else {
                Kind::Read
            };
            Op { key, kind }
        })
        .collect()
}

/// `iters` operations per thread from a cyclic stream (reads and updates
/// only, which leave the map's key set unchanged).
#[inline(never)]
pub fn run_cyclic<M: BenchMap>(map: &M, ops: &[Op], iters: u64) -> u64 {
    let mask = ops.len() - 1;
    let iters = iters as usize;
    let mut acc = 0u64;
    let mut i = 0usize;
    while i < iters {
        let h = map.handle();
        let end = iters.min(i + BATCH);
        while i < end {
            let op = ops[i & mask];
            match op.kind {
                Kind::Read => acc = acc.wrapping_add(h.get(op.key).unwrap_or(0)),
                Kind::Update => acc += u64::from(h.update(op.key)),
                Kind::Insert => h.insert(op.key, op.key),
                Kind::Remove => acc += u64::from(h.remove(op.key)),
            }
            i += 1;
        }
    }
    acc
}
