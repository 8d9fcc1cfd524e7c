//! snapmap and its peers behind one small adapter trait: the maps that
//! snapmap's benchmarks (`snapmap-benches`) and its main example
//! (`examples/config_cache.rs`) run the same code on.
//!
//! Every map is used through [`BenchMap`] (build it, take a per-thread
//! handle) and [`Ops`] (what a thread does with the handle), so the only
//! thing that differs between two rows of a table is the map. Keys and
//! values are `u64`.
//!
//! The adapters, and how each reads and writes:
//!
//! | Adapter | Map | Handle (re-taken every [`BATCH`] operations) |
//! |---|---|---|
//! | [`Snap`], [`SnapBig`], [`SnapHuge`] | snapmap | a [`snapmap::Pinned`] handle |
//! | [`SnapPerOp`] | snapmap | none: `map.get(&k)` pins per call |
//! | [`SnapSnapshot`] | a snapmap [`snapmap::Snapshot`] | the snapshot (read-only) |
//! | [`SnapReader`] | snapmap | a reader handle, `map.reader()` |
//! | [`Dash`] | dashmap 6 | the map (per-shard locks) |
//! | [`Papaya`], [`PapayaPerOp`] | papaya | a guard per batch, or per call |
//! | [`Locked`] | `parking_lot::RwLock<hashbrown::HashMap>` | the lock, taken per call |
//! | [`Cow`] | `ArcSwap<hashbrown::HashMap>` | the map loaded once per batch; writes copy it |
//! | [`CowCache`] | `ArcSwap<hashbrown::HashMap>` | an `arc_swap::Cache`, checked per call (read-only) |
//! | [`CowLoad`] | `ArcSwap<hashbrown::HashMap>` | none: `load()` per call (read-only) |
//! | [`Ceiling`] | `&hashbrown::HashMap` | the map, unsynchronised, read-only |
//!
//! This crate is a workspace member of its own (not published) so that the
//! peers are dependencies of the benchmarks and of snapmap's examples (a
//! dev-dependency of the root package), never of the snapmap library. It
//! holds only the adapters and depends only on the maps: the benchmark tools
//! (criterion, serde, hdrhistogram) and the scc adapters, the heaviest peer
//! to build, stay in `snapmap-benches`, which re-exports everything here.

use std::hash::BuildHasher;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::RwLock;

/// The write methods of a read-only adapter: each panics with `$why`.
macro_rules! read_only_writes {
    ($why:literal) => {
        fn insert(&self, _: u64, _: u64) {
            panic!($why)
        }
        fn remove(&self, _: u64) -> bool {
            panic!($why)
        }
        fn update(&self, _: u64) -> bool {
            panic!($why)
        }
    };
}

/// The fast hasher every map gets in the main groups: foldhash with a fixed
/// seed, so the hasher is not what is measured.
pub type Fast = foldhash::fast::FixedState;

/// std's SipHash-1-3 with a random seed: the default hasher of dashmap,
/// papaya, scc and std's `HashMap`.
pub type StdDefault = std::hash::RandomState;

/// snapmap's default hasher (a newtype over std's `RandomState`).
pub type SnapDefault = snapmap::DefaultHashBuilder;

/// Operations between two re-pins of an epoch guard (snapmap `Pinned`,
/// papaya guard, scc guard, arc-swap load): what a real user holding a
/// guard across a batch of work would do.
pub const BATCH: usize = 1024;

// ----- The adapter trait ---------------------------------------------------------

/// One map under test: how to build it and how to get a per-thread handle.
pub trait BenchMap: Sync + Sized {
    /// What a thread holds while it runs a batch of [`BATCH`] operations
    /// (a pinned guard for epoch-based maps, a plain reference otherwise).
    type Handle<'a>: Ops
    where
        Self: 'a;

    /// The row label in the report.
    fn name() -> String;

    /// An empty map.
    fn new() -> Self;

    /// A handle for the calling thread.
    fn handle(&self) -> Self::Handle<'_>;

    /// Inserts `keys` (value = key) from one thread.
    fn fill(&mut self, keys: &[u64]) {
        for chunk in keys.chunks(BATCH) {
            let h = self.handle();
            for &k in chunk {
                h.insert(k, k);
            }
        }
    }

    /// How the map takes writes.
    fn writes() -> Writes {
        Writes::Concurrent
    }

    /// The map's own counters, if it has any (snapmap's `stats()`).
    fn stats(&self) -> Option<String> {
        None
    }
}

/// How a map takes writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    /// Concurrent writes at a per-operation cost.
    Concurrent,
    /// Every write copies the whole map (`ArcSwap` copy-on-write).
    CopyOnWrite,
    /// No writes after building (the unsynchronised ceiling).
    ReadOnly,
}

/// The operations of every workload. Values are `u64`; `update` adds 1.
pub trait Ops {
    /// The value for `k`, copied out.
    fn get(&self, k: u64) -> Option<u64>;
    /// Stores `v` under `k` (insert or replace).
    fn insert(&self, k: u64, v: u64);
    /// Removes `k`; whether it was there.
    fn remove(&self, k: u64) -> bool;
    /// Replaces the value of an existing key with `v + 1`; whether it was there.
    fn update(&self, k: u64) -> bool;
    /// Walks every entry, touching key and value.
    fn iter_sum(&self) -> u64;
}

/// The step of every [`Ops::iter_sum`]: adds one entry to the running sum
/// (order-independent, so every map's walk gives the same result).
#[inline]
pub fn fold(acc: u64, k: u64, v: u64) -> u64 {
    acc.wrapping_add(k ^ v)
}

// ----- snapmap ---------------------------------------------------------------------

/// snapmap through a [`snapmap::Pinned`] handle, re-pinned every batch.
/// `SHARDS` is the initial shard count, `CAP` the shard capacity (the
/// dirty-table size past which a shard splits) and `HUGE` the
/// `huge_pages` option; the defaults are the crate's.
pub struct Snap<
    S,
    const SHARDS: usize = { snapmap::DEFAULT_SHARDS },
    const CAP: usize = { snapmap::DEFAULT_SHARD_CAPACITY },
    const HUGE: bool = false,
>(pub snapmap::SnapMap<u64, u64, S>);

/// snapmap with 8x the default shard capacity (fewer, larger shards).
pub type SnapBig<S> = Snap<S, { snapmap::DEFAULT_SHARDS }, 4096>;

/// snapmap with its read views in huge pages (`huge_pages(true)`).
pub type SnapHuge<S> =
    Snap<S, { snapmap::DEFAULT_SHARDS }, { snapmap::DEFAULT_SHARD_CAPACITY }, true>;

fn build_snap<S: BuildHasher>(
    shards: usize,
    capacity: usize,
    huge_pages: bool,
    hasher: S,
) -> snapmap::SnapMap<u64, u64, S> {
    snapmap::SnapMap::<u64, u64>::builder()
        .shards(shards)
        .shard_capacity(capacity)
        .huge_pages(huge_pages)
        .hasher(hasher)
        .build()
        .expect("valid snapmap options")
}

/// " (option, option)" for the builder options that differ from the
/// defaults, or "" for the default configuration.
fn snap_options(shards: usize, capacity: usize, huge_pages: bool) -> String {
    let mut options = Vec::new();
    if shards != snapmap::DEFAULT_SHARDS {
        options.push(format!("{shards} initial shards"));
    }
    if capacity != snapmap::DEFAULT_SHARD_CAPACITY {
        options.push(format!("shard_capacity {capacity}"));
    }
    if huge_pages {
        options.push("huge_pages".to_string());
    }
    if options.is_empty() {
        String::new()
    } else {
        format!(" ({})", options.join(", "))
    }
}

impl<S, const SHARDS: usize, const CAP: usize, const HUGE: bool> BenchMap
    for Snap<S, SHARDS, CAP, HUGE>
where
    S: BuildHasher + Default + Send + Sync,
{
    type Handle<'a>
        = snapmap::Pinned<'a, u64, u64, S>
    where
        Self: 'a;

    fn name() -> String {
        format!("snapmap{}", snap_options(SHARDS, CAP, HUGE))
    }

    fn new() -> Self {
        Snap(build_snap(SHARDS, CAP, HUGE, S::default()))
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        self.0.pin()
    }

    fn stats(&self) -> Option<String> {
        Some(stats_line(&self.0.stats()))
    }
}

/// snapmap's counters on one line, as `scripts/bench-report.py` reads them
/// (`name number` pairs; the report's regexes match these names). Written
/// out here rather than taken from `Stats`'s `Display`, which is laid out
/// for people and has changed: when it did, the report's tables of
/// counters silently became rows of `?`.
pub fn stats_line(s: &snapmap::Stats) -> String {
    format!(
        "len {}, shards {}, read hits {}, slow-path lookups {}, promotions {}, dirty rebuilds {}, \
         expunges {}, compactions {}, splits {}, merges {}, directory resizes {}, \
         entries copied {}, max {} in one operation",
        s.len,
        s.shards,
        s.read_hits,
        s.slow_path_lookups,
        s.promotions,
        s.dirty_rebuilds,
        s.expunges,
        s.compactions,
        s.splits,
        s.merges,
        s.directory_resizes,
        s.entries_copied,
        s.max_entries_copied_by_one_operation,
    )
}

impl<S: BuildHasher> Ops for snapmap::Pinned<'_, u64, u64, S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        snapmap::Pinned::get(self, &k).copied()
    }
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        snapmap::Pinned::insert(self, k, v);
    }
    #[inline]
    fn remove(&self, k: u64) -> bool {
        snapmap::Pinned::remove(self, &k).is_some()
    }
    #[inline]
    fn update(&self, k: u64) -> bool {
        snapmap::Pinned::update(self, &k, |v| v + 1).is_some()
    }
    fn iter_sum(&self) -> u64 {
        self.iter().fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}

/// snapmap through its per-operation methods (`map.get(&k)` pins for the
/// call and clones the value).
pub struct SnapPerOp<S>(pub snapmap::SnapMap<u64, u64, S>);

/// A reference to a snapmap used through its per-operation methods.
pub struct SnapRef<'a, S>(&'a snapmap::SnapMap<u64, u64, S>);

impl<S> BenchMap for SnapPerOp<S>
where
    S: BuildHasher + Default + Send + Sync,
{
    type Handle<'a>
        = SnapRef<'a, S>
    where
        Self: 'a;

    fn name() -> String {
        "snapmap, pin per op".into()
    }

    fn new() -> Self {
        SnapPerOp(snapmap::SnapMap::with_hasher(S::default()))
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        SnapRef(&self.0)
    }
}

impl<S: BuildHasher> Ops for SnapRef<'_, S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.0.get(&k)
    }
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        self.0.insert(k, v);
    }
    #[inline]
    fn remove(&self, k: u64) -> bool {
        self.0.remove(&k).is_some()
    }
    #[inline]
    fn update(&self, k: u64) -> bool {
        self.0.update(&k, |v| v + 1).is_some()
    }
    fn iter_sum(&self) -> u64 {
        self.0.pin().iter().fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}

/// A [`snapmap::Snapshot`] of a filled snapmap (read-only: the frozen,
/// point-in-time copy that `map.snapshot()` returns). Lookups and iteration
/// go to the snapshot; the map it came from is kept alive beside it.
pub struct SnapSnapshot<S: BuildHasher + Clone> {
    map: snapmap::SnapMap<u64, u64, S>,
    snap: snapmap::Snapshot<u64, u64, S>,
}

impl<S> BenchMap for SnapSnapshot<S>
where
    S: BuildHasher + Clone + Default + Send + Sync,
{
    type Handle<'a>
        = &'a snapmap::Snapshot<u64, u64, S>
    where
        Self: 'a;

    fn name() -> String {
        "snapmap snapshot".into()
    }

    fn new() -> Self {
        let map = snapmap::SnapMap::with_hasher(S::default());
        let snap = map.snapshot();
        SnapSnapshot { map, snap }
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        &self.snap
    }

    fn fill(&mut self, keys: &[u64]) {
        for chunk in keys.chunks(BATCH) {
            let p = self.map.pin();
            for &k in chunk {
                p.insert(k, k);
            }
        }
        settle_map(&self.map);
        self.snap = self.map.snapshot();
    }

    fn writes() -> Writes {
        Writes::ReadOnly
    }
}

/// snapmap read through a reader handle (`map.reader()`): a cached
/// snapshot that every lookup checks against the map's change word (one
/// load and a compare) before probing it. Its [`Ops`] writes panic: the
/// benchmarks use it for read-only rows (with writes the handle would
/// refresh after each one); writers go through the map, `.0`.
pub struct SnapReader<S: BuildHasher + Clone>(pub snapmap::SnapMap<u64, u64, S>);

/// A reader handle for one batch. `Ops` takes `&self` and the handle's
/// methods take `&mut self`; a user holds `let mut reader` and calls it
/// directly, so the adapter reaches it through an `UnsafeCell` (no
/// `RefCell` flag to set and clear per lookup, which a user's code does
/// not have either).
pub struct SnapReaderHandle<'a, S: BuildHasher + Clone>(
    /// The reader handle.
    core::cell::UnsafeCell<snapmap::Reader<'a, u64, u64, S>>,
);

impl<'a, S: BuildHasher + Clone> SnapReaderHandle<'a, S> {
    /// The handle, for one call.
    #[inline]
    #[allow(clippy::mut_from_ref, reason = "see the SAFETY comment")]
    fn reader(&self) -> &mut snapmap::Reader<'a, u64, u64, S> {
        // SAFETY: the cell makes the handle `!Sync`, so only this thread
        // reaches it; every `Ops` method below takes this borrow once,
        // copies what it needs out of it and ends it before returning, and
        // none of them calls another, so no two borrows overlap.
        unsafe { &mut *self.0.get() }
    }

    /// The values of `a` and `b` from one snapshot (one consistent view).
    pub fn get_pair(&self, a: u64, b: u64) -> (Option<u64>, Option<u64>) {
        let view = self.reader().snapshot();
        (view.get(&a).copied(), view.get(&b).copied())
    }
}

impl<S> BenchMap for SnapReader<S>
where
    S: BuildHasher + Clone + Default + Send + Sync,
{
    type Handle<'a>
        = SnapReaderHandle<'a, S>
    where
        Self: 'a;

    fn name() -> String {
        "snapmap reader handle".into()
    }

    fn new() -> Self {
        SnapReader(snapmap::SnapMap::with_hasher(S::default()))
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        SnapReaderHandle(core::cell::UnsafeCell::new(self.0.reader()))
    }

    fn fill(&mut self, keys: &[u64]) {
        for chunk in keys.chunks(BATCH) {
            let p = self.0.pin();
            for &k in chunk {
                p.insert(k, k);
            }
        }
        settle_map(&self.0);
    }

    fn writes() -> Writes {
        Writes::ReadOnly
    }
}

/// Settles the map under a snapshot or reader row as the benches settle
/// every map after filling it (`settle`, whose reads go through these
/// rows' handles, to the snapshot, not to the map): one iteration, which
/// promotes every shard a bulk load left amended, so that the map beside
/// the snapshot holds what a settled map holds (its memory row measures
/// the two together).
fn settle_map<S: BuildHasher>(map: &snapmap::SnapMap<u64, u64, S>) {
    std::hint::black_box(SnapRef(map).iter_sum());
}

impl<S: BuildHasher + Clone> Ops for SnapReaderHandle<'_, S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.reader().get(&k).copied()
    }
    read_only_writes!("read-only rows");
    fn iter_sum(&self) -> u64 {
        self.reader()
            .snapshot()
            .iter()
            .fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}

impl<S: BuildHasher> Ops for &snapmap::Snapshot<u64, u64, S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        snapmap::Snapshot::get(self, &k).copied()
    }
    read_only_writes!("a snapshot is read-only");
    fn iter_sum(&self) -> u64 {
        snapmap::Snapshot::iter(self).fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}

// ----- dashmap ---------------------------------------------------------------------

/// dashmap 6 with its default shard count (4 x cores, rounded up to a power
/// of two: 8 on this machine).
pub struct Dash<S>(pub dashmap::DashMap<u64, u64, S>);

impl<S> BenchMap for Dash<S>
where
    S: BuildHasher + Clone + Default + Send + Sync,
{
    type Handle<'a>
        = &'a dashmap::DashMap<u64, u64, S>
    where
        Self: 'a;

    fn name() -> String {
        "dashmap".into()
    }

    fn new() -> Self {
        Dash(dashmap::DashMap::with_hasher(S::default()))
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        &self.0
    }
}

impl<S: BuildHasher + Clone> Ops for &dashmap::DashMap<u64, u64, S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        dashmap::DashMap::get(self, &k).map(|r| *r)
    }
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        dashmap::DashMap::insert(self, k, v);
    }
    #[inline]
    fn remove(&self, k: u64) -> bool {
        dashmap::DashMap::remove(self, &k).is_some()
    }
    #[inline]
    fn update(&self, k: u64) -> bool {
        match self.get_mut(&k) {
            Some(mut r) => {
                *r += 1;
                true
            }
            None => false,
        }
    }
    fn iter_sum(&self) -> u64 {
        self.iter().fold(0, |a, r| fold(a, *r.key(), *r.value()))
    }
}

// ----- papaya ----------------------------------------------------------------------

/// papaya with one guard per batch (`map.pin()` reused, as a real user
/// would).
pub struct Papaya<S>(pub papaya::HashMap<u64, u64, S>);

impl<S> BenchMap for Papaya<S>
where
    S: BuildHasher + Default + Send + Sync,
{
    type Handle<'a>
        = papaya::HashMapRef<'a, u64, u64, S, papaya::LocalGuard<'a>>
    where
        Self: 'a;

    fn name() -> String {
        "papaya".into()
    }

    fn new() -> Self {
        Papaya(papaya::HashMap::builder().hasher(S::default()).build())
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        self.0.pin()
    }
}

impl<S: BuildHasher> Ops for papaya::HashMapRef<'_, u64, u64, S, papaya::LocalGuard<'_>> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        papaya::HashMapRef::get(self, &k).copied()
    }
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        papaya::HashMapRef::insert(self, k, v);
    }
    #[inline]
    fn remove(&self, k: u64) -> bool {
        papaya::HashMapRef::remove(self, &k).is_some()
    }
    #[inline]
    fn update(&self, k: u64) -> bool {
        papaya::HashMapRef::update(self, k, |v| v + 1).is_some()
    }
    fn iter_sum(&self) -> u64 {
        self.iter().fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}

/// papaya pinning for every operation (`map.pin().get(&k)`).
pub struct PapayaPerOp<S>(pub papaya::HashMap<u64, u64, S>);

/// A reference to a papaya map, pinned per operation.
pub struct PapayaRef<'a, S>(&'a papaya::HashMap<u64, u64, S>);

impl<S> BenchMap for PapayaPerOp<S>
where
    S: BuildHasher + Default + Send + Sync,
{
    type Handle<'a>
        = PapayaRef<'a, S>
    where
        Self: 'a;

    fn name() -> String {
        "papaya, pin per op".into()
    }

    fn new() -> Self {
        PapayaPerOp(papaya::HashMap::builder().hasher(S::default()).build())
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        PapayaRef(&self.0)
    }
}

impl<S: BuildHasher> Ops for PapayaRef<'_, S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.0.pin().get(&k).copied()
    }
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        self.0.pin().insert(k, v);
    }
    #[inline]
    fn remove(&self, k: u64) -> bool {
        self.0.pin().remove(&k).is_some()
    }
    #[inline]
    fn update(&self, k: u64) -> bool {
        self.0.pin().update(k, |v| v + 1).is_some()
    }
    fn iter_sum(&self) -> u64 {
        self.0.pin().iter().fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}

// ----- RwLock<HashMap> ---------------------------------------------------------------

/// `parking_lot::RwLock<hashbrown::HashMap>`: one lock for the whole map.
pub struct Locked<S>(pub RwLock<hashbrown::HashMap<u64, u64, S>>);

impl<S> BenchMap for Locked<S>
where
    S: BuildHasher + Default + Send + Sync,
{
    type Handle<'a>
        = &'a RwLock<hashbrown::HashMap<u64, u64, S>>
    where
        Self: 'a;

    fn name() -> String {
        "RwLock<HashMap>".into()
    }

    fn new() -> Self {
        Locked(RwLock::new(hashbrown::HashMap::with_hasher(S::default())))
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        &self.0
    }

    fn fill(&mut self, keys: &[u64]) {
        let map = self.0.get_mut();
        for &k in keys {
            map.insert(k, k);
        }
    }
}

impl<S: BuildHasher> Ops for &RwLock<hashbrown::HashMap<u64, u64, S>> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.read().get(&k).copied()
    }
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        self.write().insert(k, v);
    }
    #[inline]
    fn remove(&self, k: u64) -> bool {
        self.write().remove(&k).is_some()
    }
    #[inline]
    fn update(&self, k: u64) -> bool {
        match self.write().get_mut(&k) {
            Some(v) => {
                *v += 1;
                true
            }
            None => false,
        }
    }
    fn iter_sum(&self) -> u64 {
        self.read().iter().fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}

// ----- ArcSwap<HashMap> copy-on-write -----------------------------------------------

/// `ArcSwap<hashbrown::HashMap>`: readers load the current map (once per
/// batch); every write copies the whole map (`rcu`).
pub struct Cow<S>(pub ArcSwap<hashbrown::HashMap<u64, u64, S>>);

/// The cell and the map loaded for this batch.
pub struct CowHandle<'a, S> {
    /// The cell writes go to.
    pub cell: &'a ArcSwap<hashbrown::HashMap<u64, u64, S>>,
    /// The map loaded when the handle was taken: reads of this batch.
    pub map: arc_swap::Guard<Arc<hashbrown::HashMap<u64, u64, S>>>,
}

impl<S> BenchMap for Cow<S>
where
    S: BuildHasher + Clone + Default + Send + Sync,
{
    type Handle<'a>
        = CowHandle<'a, S>
    where
        Self: 'a;

    fn name() -> String {
        "ArcSwap<HashMap> (COW)".into()
    }

    fn new() -> Self {
        Cow(ArcSwap::from_pointee(hashbrown::HashMap::with_hasher(
            S::default(),
        )))
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        CowHandle {
            cell: &self.0,
            map: self.0.load(),
        }
    }

    fn fill(&mut self, keys: &[u64]) {
        let mut map = hashbrown::HashMap::clone(&self.0.load());
        for &k in keys {
            map.insert(k, k);
        }
        self.0.store(Arc::new(map));
    }

    fn writes() -> Writes {
        Writes::CopyOnWrite
    }
}

impl<S: BuildHasher + Clone> Ops for CowHandle<'_, S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.map.get(&k).copied()
    }
    fn insert(&self, k: u64, v: u64) {
        self.cell.rcu(|m| {
            let mut m = hashbrown::HashMap::clone(m);
            m.insert(k, v);
            m
        });
    }
    fn remove(&self, k: u64) -> bool {
        let mut found = false;
        self.cell.rcu(|m| {
            let mut m = hashbrown::HashMap::clone(m);
            found = m.remove(&k).is_some();
            m
        });
        found
    }
    fn update(&self, k: u64) -> bool {
        let mut found = false;
        self.cell.rcu(|m| {
            let mut m = hashbrown::HashMap::clone(m);
            found = m.get_mut(&k).map(|v| *v += 1).is_some();
            m
        });
        found
    }
    fn iter_sum(&self) -> u64 {
        self.map.iter().fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}

/// `ArcSwap<hashbrown::HashMap>` read through an `arc_swap::Cache`, checked
/// on every lookup: one load of the cell's pointer and a compare, then the
/// probe. The like-for-like peer of snapmap's reader handle (which checks
/// the map's change word on every lookup); [`Cow`] loads once per batch.
/// Read-only rows; writes panic.
pub struct CowCache<S>(pub Cow<S>);

/// The cache for one batch (`Ops` takes `&self`, `Cache::load` takes
/// `&mut self`; see [`SnapReaderHandle`] for the cell).
pub struct CowCacheHandle<'a, S>(core::cell::UnsafeCell<CowCacheOf<'a, S>>);

/// The map behind [`Cow`] and [`CowCache`].
type CowMap<S> = hashbrown::HashMap<u64, u64, S>;

/// A reader's `arc_swap::Cache` of a [`Cow`]'s cell.
type CowCacheOf<'a, S> = arc_swap::Cache<&'a ArcSwap<CowMap<S>>, Arc<CowMap<S>>>;

impl<S> BenchMap for CowCache<S>
where
    S: BuildHasher + Clone + Default + Send + Sync,
{
    type Handle<'a>
        = CowCacheHandle<'a, S>
    where
        Self: 'a;

    fn name() -> String {
        "ArcSwap<HashMap>, Cache per get".into()
    }

    fn new() -> Self {
        CowCache(Cow::new())
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        CowCacheHandle(core::cell::UnsafeCell::new(arc_swap::Cache::new(
            &(self.0).0,
        )))
    }

    fn fill(&mut self, keys: &[u64]) {
        self.0.fill(keys);
    }

    fn writes() -> Writes {
        Writes::ReadOnly
    }
}

impl<'a, S> CowCacheHandle<'a, S> {
    /// The cache, for one call.
    #[inline]
    #[allow(clippy::mut_from_ref, reason = "see the SAFETY comment")]
    fn cache(&self) -> &mut CowCacheOf<'a, S> {
        // SAFETY: as in `SnapReaderHandle::reader`: the cell makes the
        // handle `!Sync`, and each `Ops` method takes this borrow once and
        // ends it before returning.
        unsafe { &mut *self.0.get() }
    }
}

impl<S: BuildHasher> Ops for CowCacheHandle<'_, S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.cache().load().get(&k).copied()
    }
    read_only_writes!("read-only rows");
    fn iter_sum(&self) -> u64 {
        self.cache()
            .load()
            .iter()
            .fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}

/// `ArcSwap<hashbrown::HashMap>` read with a `load()` per lookup, arc-swap's
/// usual read (`config.load().get(key)`): the guard takes a debt slot
/// (a `SeqCst` store and a check) and gives it back. Another peer of
/// snapmap's reader handle; [`CowCache`] checks a cached pointer instead,
/// [`Cow`] loads once per batch. Read-only rows; writes panic.
pub struct CowLoad<S>(pub Cow<S>);

impl<S> BenchMap for CowLoad<S>
where
    S: BuildHasher + Clone + Default + Send + Sync,
{
    type Handle<'a>
        = &'a ArcSwap<CowMap<S>>
    where
        Self: 'a;

    fn name() -> String {
        "ArcSwap<HashMap>, load per get".into()
    }

    fn new() -> Self {
        CowLoad(Cow::new())
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        &(self.0).0
    }

    fn fill(&mut self, keys: &[u64]) {
        self.0.fill(keys);
    }

    fn writes() -> Writes {
        Writes::ReadOnly
    }
}

impl<S: BuildHasher> Ops for &ArcSwap<CowMap<S>> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.load().get(&k).copied()
    }
    read_only_writes!("read-only rows");
    fn iter_sum(&self) -> u64 {
        self.load().iter().fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}

// ----- The ceiling ------------------------------------------------------------------

/// The read ceiling: an unsynchronised `&hashbrown::HashMap` shared by
/// reference. Read-only: writes panic.
pub struct Ceiling<S>(pub hashbrown::HashMap<u64, u64, S>);

impl<S> BenchMap for Ceiling<S>
where
    S: BuildHasher + Default + Send + Sync,
{
    type Handle<'a>
        = &'a hashbrown::HashMap<u64, u64, S>
    where
        Self: 'a;

    fn name() -> String {
        "ceiling: &hashbrown::HashMap".into()
    }

    fn new() -> Self {
        Ceiling(hashbrown::HashMap::with_hasher(S::default()))
    }

    #[inline]
    fn handle(&self) -> Self::Handle<'_> {
        &self.0
    }

    fn fill(&mut self, keys: &[u64]) {
        for &k in keys {
            self.0.insert(k, k);
        }
    }

    fn writes() -> Writes {
        Writes::ReadOnly
    }
}

impl<S: BuildHasher> Ops for &hashbrown::HashMap<u64, u64, S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        hashbrown::HashMap::get(self, &k).copied()
    }
    read_only_writes!("the ceiling is read-only");
    fn iter_sum(&self) -> u64 {
        self.iter().fold(0, |a, (k, v)| fold(a, *k, *v))
    }
}
