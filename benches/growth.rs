//! The non-criterion harness: memory, allocations and tail latency.
//!
//! 1. **Heap bytes per entry** at 1M entries: bytes live after building
//!    the map (and settling it: one read pass, one iteration, epoch
//!    flushed) minus bytes live before, divided by the entry count.
//! 2. **Allocations per operation** for every map: per read (batched
//!    handle and per-operation pinning), per full iteration pass, per
//!    update of an existing key, per insert of a new key.
//! 3. **Per-insert latency during rapid growth** to 5M keys with 2
//!    threads: `Instant` around every insert, then p50 / p99 / p99.9 /
//!    p99.99 / max, for an insert-only growth and for conc-map-bench's
//!    RapidGrow mix (5/80/5/10, latency of its inserts). Five repetitions;
//!    the report takes the median of each percentile.
//!
//! Allocations are counted by the workspace's counting global allocator
//! (`snapmap-counting-alloc`): it forwards to the system allocator and,
//! only while a measurement window is open, adds to relaxed atomic counters
//! (one relaxed load per allocation otherwise, plus a per-thread count in a
//! thread-local). It is installed in this binary only, so the criterion
//! benches run on the plain system allocator. Byte counts are requested
//! sizes (`Layout::size`), not the allocator's size classes.
//!
//! Latencies go into `hdrhistogram` histograms (3 significant digits: a
//! percentile or maximum is exact to within 0.1 %), one per thread, merged
//! after the run.
//!
//! Results are printed and written as JSON to
//! `$SNAPMAP_BENCH_OUT/growth.json` (default: the workspace's
//! `target/snapmap-bench`). `SNAPMAP_BENCH_QUICK=1` shrinks everything (50K
//! keys, one repetition).

use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;
use snapmap_benches::*;
use snapmap_counting_alloc::{CountingAlloc, Counts, counted};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

// ----- The report (growth.json) ------------------------------------------------------

/// Everything this binary measured; written once at the end.
#[derive(Serialize)]
struct Report {
    /// `"quick"` or `"full"`.
    mode: &'static str,
    heap: Vec<HeapRow>,
    allocs: Vec<AllocRow>,
    growth: Vec<GrowthRow>,
    storm: Vec<StormRow>,
}

/// Heap bytes per entry of one map.
#[derive(Serialize)]
struct HeapRow {
    map: String,
    entries: usize,
    bytes_per_entry: f64,
    build_allocs: Option<u64>,
    retired_pending: Option<usize>,
}

/// Allocations per operation of one kind on one map.
#[derive(Serialize)]
struct AllocRow {
    map: String,
    op: String,
    ops: usize,
    allocs_per_op: f64,
    bytes_per_op: f64,
}

/// One map's growth runs (latencies in ns).
#[derive(Serialize)]
struct GrowthRow {
    map: String,
    workload: &'static str,
    threads: usize,
    /// Medians over the CPU-timed runs.
    cpu_p999: u64,
    cpu_max: u64,
    work_max: u64,
    cpu_maxes: Vec<u64>,
    work_maxes: Vec<u64>,
    /// The wall-timed runs.
    reps: Vec<GrowthRep>,
}

/// One wall-timed growth run (latencies in ns).
#[derive(Serialize)]
struct GrowthRep {
    p50: u64,
    p99: u64,
    p999: u64,
    p9999: u64,
    max: u64,
    wall_s: f64,
    inserts: u64,
    stats: Option<String>,
}

/// A writer's update latencies with or without a snapshot storm.
#[derive(Serialize)]
struct StormRow {
    case: &'static str,
    updates: usize,
    snapshots: u64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
}

static OUT: Mutex<Report> = Mutex::new(Report {
    mode: "",
    heap: Vec::new(),
    allocs: Vec::new(),
    growth: Vec::new(),
    storm: Vec::new(),
});

fn write_report() {
    let mut report = OUT.lock().unwrap();
    report.mode = if quick() { "quick" } else { "full" };
    let path = write_json("growth.json", &*report).expect("write growth.json");
    println!("wrote {}", path.display());
}

// ----- 1 + 2: heap bytes and allocations ----------------------------------------------

fn alloc_row(map: &str, op: &str, ops: usize, c: Counts) {
    let per = |x: u64| x as f64 / ops as f64;
    println!(
        "  {map:<34} {op:<22} {:>10.4} allocs/op {:>12.1} bytes/op  ({ops} ops)",
        per(c.allocs),
        per(c.alloc_bytes)
    );
    OUT.lock().unwrap().allocs.push(AllocRow {
        map: map.to_owned(),
        op: op.to_owned(),
        ops,
        allocs_per_op: per(c.allocs),
        bytes_per_op: per(c.alloc_bytes),
    });
}

/// Builds `M` with `n` keys, measuring its heap, then counts allocations of
/// each operation kind on it.
fn memory<M: BenchMap>(n: usize, ops: usize) {
    let name = M::name();
    let keys = keys(n);
    flush_epoch();
    let (map, c) = counted(|| {
        let map: M = build(&keys);
        flush_epoch();
        map
    });
    let per_entry = c.live_delta() as f64 / n as f64;
    let pending = map.stats().map(|_| snapmap::retired_bytes().total());
    println!(
        "{name}: {per_entry:.1} heap bytes/entry at {n} entries ({} allocations while building{})",
        c.allocs,
        pending.map_or(String::new(), |p| format!(
            ", {p} bytes retired and not yet freed"
        ))
    );
    OUT.lock().unwrap().heap.push(HeapRow {
        map: name.clone(),
        entries: n,
        bytes_per_entry: per_entry,
        build_allocs: Some(c.allocs),
        retired_pending: pending,
    });

    // Reads: the criterion workload's loop, batched handles.
    let stream = lookup_stream(&keys, ops.next_power_of_two(), 0);
    let (_, c) = counted(|| black_box(lookups(&map, &stream, ops as u64)));
    alloc_row(&name, "read", ops, c);

    let (_, c) = counted(|| black_box(map.handle().iter_sum()));
    alloc_row(&name, "iteration pass", 1, c);

    let write_ops = match M::writes() {
        Writes::Concurrent => ops,
        Writes::CopyOnWrite => 10.min(ops),
        Writes::ReadOnly => 0,
    };
    if write_ops > 0 {
        let (_, c) = counted(|| {
            for chunk in stream[..write_ops].chunks(BATCH) {
                let h = map.handle();
                for &k in chunk {
                    assert!(h.update(k));
                }
            }
        });
        alloc_row(&name, "update (existing key)", write_ops, c);
        let fresh: Vec<u64> = (0..write_ops as u64).map(|i| key(1, i)).collect();
        let (_, c) = counted(|| {
            for chunk in fresh.chunks(BATCH) {
                let h = map.handle();
                for &k in chunk {
                    h.insert(k, k);
                }
            }
        });
        alloc_row(&name, "insert (new key)", write_ops, c);
    }
    drop(map);
    flush_epoch();
}

fn vec_memory(n: usize) {
    let (v, c) = counted(|| {
        keys(n)
            .into_iter()
            .map(|k| (k, k))
            .collect::<Vec<(u64, u64)>>()
    });
    let per_entry = (c.live_delta() as f64 - (n * 8) as f64) / n as f64; // minus the keys Vec
    let name = "Vec<(u64, u64)>";
    println!("{name}: {per_entry:.1} heap bytes/entry");
    OUT.lock().unwrap().heap.push(HeapRow {
        map: name.to_owned(),
        entries: n,
        bytes_per_entry: per_entry,
        build_allocs: None,
        retired_pending: None,
    });
    let (_, c) = counted(|| black_box(vec_sum(&v)));
    alloc_row(name, "iteration pass", 1, c);
}

/// What taking a snapshot allocates: the first one (every shard copied),
/// one of an unchanged map (the cached snapshot), one after a single update
/// (one shard copied).
fn snapshot_allocs(n: usize) {
    let keys = keys(n);
    let map: Snap<Fast> = build(&keys);
    let name = "snapmap snapshot";
    let (first, c) = counted(|| map.0.snapshot());
    alloc_row(name, "snapshot (first: full copy)", 1, c);
    println!(
        "  {name}: the first snapshot allocated {:.1} bytes per entry",
        c.alloc_bytes as f64 / n as f64
    );
    OUT.lock().unwrap().heap.push(HeapRow {
        map: "snapshot (pieces, on top of the map)".to_owned(),
        entries: n,
        bytes_per_entry: c.live_delta() as f64 / n as f64,
        build_allocs: Some(c.allocs),
        retired_pending: None,
    });
    let (_, c) = counted(|| black_box(map.0.snapshot()));
    alloc_row(name, "snapshot (unchanged)", 1, c);
    map.0.update(&keys[0], |v| v + 1);
    let (_, c) = counted(|| black_box(map.0.snapshot()));
    alloc_row(name, "snapshot (after 1 update)", 1, c);
    drop(first);
    drop(map);
    flush_epoch();
}

// ----- 3: latency during rapid growth ---------------------------------------------------

/// The calling thread's CPU time in nanoseconds (Linux: one
/// `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` system call), or 0 elsewhere.
/// Unlike wall time it stops while the thread is descheduled (preempted,
/// or parked on a lock), so the largest CPU time of one insert is the
/// largest piece of work the map did inside it.
#[cfg(target_os = "linux")]
fn thread_cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, out: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `clock_gettime` writes one `struct timespec` (two 64-bit
    // fields on 64-bit Linux, as declared) to the pointer, which is valid.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if rc == 0 {
        t.sec as u64 * 1_000_000_000 + t.nsec as u64
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_ns() -> u64 {
    0
}

/// No map at all: every "insert" is an empty timed section. Its maximum
/// latency is what this machine adds to any timed insert (preemption,
/// the hypervisor, interrupts): the floor under every map's maximum.
struct NoMap;

impl BenchMap for NoMap {
    type Handle<'a> = &'a NoMap;

    fn name() -> String {
        "noise floor (no map)".into()
    }

    fn new() -> Self {
        NoMap
    }

    fn handle(&self) -> &NoMap {
        self
    }
}

impl Ops for &NoMap {
    fn get(&self, k: u64) -> Option<u64> {
        black_box(Some(k))
    }
    fn insert(&self, k: u64, v: u64) {
        black_box((k, v));
    }
    fn remove(&self, k: u64) -> bool {
        black_box(k) != 0
    }
    fn update(&self, k: u64) -> bool {
        black_box(k) != 0
    }
    fn iter_sum(&self) -> u64 {
        0
    }
}

#[derive(Clone, Copy)]
enum Growth {
    InsertOnly,
    RapidGrow,
}

impl Growth {
    fn name(self) -> &'static str {
        match self {
            Growth::InsertOnly => "insert-only",
            Growth::RapidGrow => "RapidGrow 5/80/5/10",
        }
    }
}

/// A latency histogram in nanoseconds, from 1 ns to about 70 s at 3
/// significant digits (0.1 %), allocated up front so recording never
/// allocates in a timed loop. Longer latencies are recorded as the largest.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1 << 36, 3).expect("valid histogram bounds")
}

/// The latency at quantile `q` (0.999 for p99.9) of `h`.
fn at(h: &Histogram<u64>, q: f64) -> u64 {
    h.value_at_quantile(q)
}

/// One growth run; returns (latencies in ns, CPU times in ns, wall time,
/// stats).
///
/// With `cpu`, each insert is timed by the thread's CPU clock *and* by
/// `Instant`, and the latency recorded is the smaller of the two: the
/// map's own work in that insert. Preemption inflates the wall time but not
/// the CPU time; a VM's CPU clock sometimes jumps by a millisecond with no
/// wall time passing (steal accounting), which inflates the CPU time but
/// not the wall time. Both at once in the same insert is rare. The second
/// histogram is the plain CPU times (empty without `cpu`). (Two system
/// calls per insert: slower, so in separate runs.)
fn growth_run<M: BenchMap>(
    streams: &[Vec<Op>],
    cpu: bool,
) -> (Histogram<u64>, Histogram<u64>, f64, Option<String>) {
    let threads = streams.len();
    let map = M::new();
    let lats: Vec<Mutex<(Histogram<u64>, Histogram<u64>)>> = streams
        .iter()
        .map(|_| Mutex::new((latency_histogram(), latency_histogram())))
        .collect();
    let wall = run_threads(
        threads,
        |_| drop(black_box(map.handle())),
        |t| {
            let mut guard = lats[t].lock().unwrap();
            let (lat, cpu_lat) = &mut *guard;
            let mut acc = 0u64;
            for chunk in streams[t].chunks(BATCH) {
                let h = map.handle();
                for op in chunk {
                    match op.kind {
                        Kind::Insert if cpu => {
                            let wall = Instant::now();
                            let start = thread_cpu_ns();
                            h.insert(op.key, op.key);
                            let ns = thread_cpu_ns() - start;
                            let wall = wall.elapsed().as_nanos() as u64;
                            lat.saturating_record(ns.min(wall));
                            cpu_lat.saturating_record(ns);
                        }
                        Kind::Insert => {
                            let start = Instant::now();
                            h.insert(op.key, op.key);
                            lat.saturating_record(start.elapsed().as_nanos() as u64);
                        }
                        Kind::Read => acc = acc.wrapping_add(h.get(op.key).unwrap_or(0)),
                        Kind::Remove => acc += u64::from(h.remove(op.key)),
                        Kind::Update => acc += u64::from(h.update(op.key)),
                    }
                }
            }
            black_box(acc);
        },
    );
    let stats = map.stats();
    drop(map);
    flush_epoch();
    let (mut all, mut all_cpu) = (latency_histogram(), latency_histogram());
    for m in lats {
        let (lat, cpu_lat) = m.into_inner().unwrap();
        all.add(&lat).expect("histograms with the same bounds");
        all_cpu
            .add(&cpu_lat)
            .expect("histograms with the same bounds");
    }
    (all, all_cpu, wall.as_secs_f64(), stats)
}

/// The median of a few repetitions' figures.
fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn growth<M: BenchMap>(kind: Growth, streams: &[Vec<Op>], reps: usize) {
    let name = M::name();
    let (mut work_maxes, mut cpu_maxes, mut cpu_p999s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let (work, cpu_lat, _, _) = growth_run::<M>(streams, true);
        assert!(!work.is_empty(), "some inserts");
        let (work_max, cpu_max) = (work.max(), cpu_lat.max());
        let cpu_p999 = at(&cpu_lat, 0.999);
        println!(
            "  {name:<34} {:<20} per insert, separate run: CPU time p99.9 {cpu_p999} ns, max {cpu_max} ns; min(CPU, wall) max {work_max} ns",
            kind.name()
        );
        work_maxes.push(work_max);
        cpu_maxes.push(cpu_max);
        cpu_p999s.push(cpu_p999);
    }
    let mut row = GrowthRow {
        map: name.clone(),
        workload: kind.name(),
        threads: streams.len(),
        cpu_p999: median(cpu_p999s),
        cpu_max: median(cpu_maxes.clone()),
        work_max: median(work_maxes.clone()),
        cpu_maxes,
        work_maxes,
        reps: Vec::new(),
    };
    for _ in 0..reps {
        let (lat, _, wall, stats) = growth_run::<M>(streams, false);
        assert!(!lat.is_empty(), "some inserts");
        let rep = GrowthRep {
            p50: at(&lat, 0.5),
            p99: at(&lat, 0.99),
            p999: at(&lat, 0.999),
            p9999: at(&lat, 0.9999),
            max: lat.max(),
            wall_s: wall,
            inserts: lat.len(),
            stats,
        };
        println!(
            "  {name:<34} {:<20} inserts {:>8}  p50 {:>6} ns  p99 {:>7} ns  p99.9 {:>8} ns  p99.99 {:>9} ns  max {:>10} ns  wall {:>7.1} ms{}",
            kind.name(),
            rep.inserts,
            rep.p50,
            rep.p99,
            rep.p999,
            rep.p9999,
            rep.max,
            wall * 1e3,
            rep.stats
                .as_ref()
                .map_or(String::new(), |s| format!("\n      stats: {s}"))
        );
        row.reps.push(rep);
    }
    OUT.lock().unwrap().growth.push(row);
}

fn growth_all(kind: Growth, n: usize, threads: usize, reps: usize) {
    let streams: Vec<Vec<Op>> = match kind {
        Growth::InsertOnly => (0..threads)
            .map(|t| {
                (0..(n / threads) as u64)
                    .map(|i| Op {
                        key: key(t, i),
                        kind: Kind::Insert,
                    })
                    .collect()
            })
            .collect(),
        // 80 % inserts: a capacity of n / 0.8 operations inserts about n keys.
        Growth::RapidGrow => (0..threads)
            .map(|t| mix_stream(RAPID_GROW, n * 5 / 4, threads, t).ops)
            .collect(),
    };
    println!(
        "\n{} to {} keys, {threads} threads, {reps} repetition(s):",
        kind.name(),
        label(n)
    );
    // `SNAPMAP_GROWTH_MAPS=snapmap,dashmap` limits the run to the maps whose
    // names contain one of the words (for quick experiments; the report runs
    // them all).
    let only = std::env::var("SNAPMAP_GROWTH_MAPS").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|w| name.contains(w)))
    };
    if wanted(&Snap::<Fast>::name()) {
        growth::<Snap<Fast>>(kind, &streams, reps);
    }
    if wanted(&SnapBig::<Fast>::name()) {
        growth::<SnapBig<Fast>>(kind, &streams, reps);
    }
    if wanted(&SnapHuge::<Fast>::name()) {
        growth::<SnapHuge<Fast>>(kind, &streams, reps);
    }
    if wanted(&Dash::<Fast>::name()) {
        growth::<Dash<Fast>>(kind, &streams, reps);
    }
    if wanted(&Papaya::<Fast>::name()) {
        growth::<Papaya<Fast>>(kind, &streams, reps);
    }
    if wanted(&SccMap::<Fast>::name()) {
        growth::<SccMap<Fast>>(kind, &streams, reps);
    }
    if wanted(&NoMap::name()) {
        growth::<NoMap>(kind, &streams, reps);
    }
}

/// 4: how long a writer waits while snapshots are taken back to back.
///
/// One writer updates existing keys of an `n`-key map, timing every update;
/// in the second case another thread takes snapshots in a loop (each after
/// the writer's latest update, so each rebuild re-copies a changed shard and
/// closes the write gate). Both cases in the same run.
fn storm(n: usize, updates: usize) {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    println!(
        "Writers during a storm of snapshots ({} keys, {} updates):",
        label(n),
        updates
    );
    for with_storm in [false, true] {
        let map = snapmap::SnapMap::<u64, u64>::builder()
            .hasher(Fast::with_seed(0))
            .build()
            .unwrap();
        let keys: Vec<u64> = (0..n as u64).map(mix).collect();
        for &k in &keys {
            map.insert(k, 0);
        }
        for &k in &keys {
            std::hint::black_box(map.get(&k)); // promote, as readers would
        }
        drop(map.snapshot());
        let stop = AtomicBool::new(false);
        let snapshots = AtomicU64::new(0);
        let mut latencies = latency_histogram();
        std::thread::scope(|scope| {
            if with_storm {
                scope.spawn(|| {
                    while !stop.load(Relaxed) {
                        std::hint::black_box(map.snapshot());
                        snapshots.fetch_add(1, Relaxed);
                    }
                });
            }
            // Time nothing until the storm is under way.
            while with_storm && snapshots.load(Relaxed) == 0 {
                std::thread::yield_now();
            }
            for i in 0..updates {
                let k = keys[(mix(i as u64 + 17) % n as u64) as usize];
                let t = Instant::now();
                map.insert(k, i as u64);
                latencies.saturating_record(t.elapsed().as_nanos() as u64);
            }
            stop.store(true, Relaxed);
        });
        let case = if with_storm {
            "during a storm of snapshots"
        } else {
            "no snapshots"
        };
        let (p50, p99, p999, max) = (
            at(&latencies, 0.5),
            at(&latencies, 0.99),
            at(&latencies, 0.999),
            latencies.max(),
        );
        println!(
            "  {case:<28} p50 {p50} ns  p99 {p99} ns  p99.9 {p999} ns  max {max} ns  ({} snapshots)",
            snapshots.load(Relaxed)
        );
        OUT.lock().unwrap().storm.push(StormRow {
            case,
            updates,
            snapshots: snapshots.load(Relaxed),
            p50_ns: p50,
            p99_ns: p99,
            p999_ns: p999,
            max_ns: max,
        });
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter (any other argument)
    // selects sections: "memory", "growth", "storm".
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants =
        |section: &str| filter.is_empty() || filter.iter().any(|f| section.contains(f.as_str()));
    let sizes = Sizes::get();
    let started = Instant::now();

    if wants("memory") {
        let n = sizes.big;
        let ops = sizes.alloc_ops;
        println!(
            "Heap bytes per entry and allocations per operation ({} entries):",
            label(n)
        );
        memory::<Snap<Fast>>(n, ops);
        memory::<SnapPerOp<Fast>>(n, ops);
        memory::<SnapBig<Fast>>(n, ops);
        memory::<SnapHuge<Fast>>(n, ops);
        memory::<Dash<Fast>>(n, ops);
        memory::<Papaya<Fast>>(n, ops);
        memory::<PapayaPerOp<Fast>>(n, ops);
        memory::<SccMap<Fast>>(n, ops);
        memory::<SccIndex<Fast>>(n, ops);
        memory::<Locked<Fast>>(n, ops);
        memory::<Cow<Fast>>(n, ops);
        memory::<SnapSnapshot<Fast>>(n, ops);
        memory::<Ceiling<Fast>>(n, ops);
        vec_memory(n);
        snapshot_allocs(n);
    }
    if wants("growth") {
        let reps = if quick() { 1 } else { 5 };
        growth_all(Growth::InsertOnly, sizes.growth, 2, reps);
        growth_all(Growth::RapidGrow, sizes.growth, 2, reps);
    }
    if wants("storm") {
        storm(sizes.big, if quick() { 2_000 } else { 200_000 });
    }
    write_report();
    println!(
        "growth harness done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
