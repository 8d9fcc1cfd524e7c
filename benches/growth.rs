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
//!    RapidGrow mix (5/80/5/10, latency of its inserts). Three repetitions;
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
//! Results are printed and written as JSON to
//! `$SNAPMAP_BENCH_OUT/growth.json` (default `target/snapmap-bench`).
//! `SNAPMAP_BENCH_QUICK=1` shrinks everything (50K keys, one repetition).

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use snapmap_benches::*;
use snapmap_counting_alloc::{CountingAlloc, Counts, counted};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

// ----- JSON, by hand (no serde in this crate) ---------------------------------------

#[derive(Default)]
struct Json {
    heap: Vec<String>,
    allocs: Vec<String>,
    growth: Vec<String>,
    storm: Vec<String>,
}

static OUT: Mutex<Json> = Mutex::new(Json {
    heap: Vec::new(),
    allocs: Vec::new(),
    growth: Vec::new(),
    storm: Vec::new(),
});

fn js(s: &str) -> String {
    format!("{s:?}")
}

fn write_json() {
    let out = OUT.lock().unwrap();
    let mut s = String::new();
    let mode = if quick() { "quick" } else { "full" };
    let _ = writeln!(s, "{{\n  \"mode\": {},", js(mode));
    for (name, rows, last) in [
        ("heap", &out.heap, false),
        ("allocs", &out.allocs, false),
        ("growth", &out.growth, false),
        ("storm", &out.storm, true),
    ] {
        let _ = writeln!(
            s,
            "  \"{name}\": [\n    {}\n  ]{}",
            rows.join(",\n    "),
            if last { "" } else { "," }
        );
    }
    s.push_str("}\n");
    let dir = std::env::var("SNAPMAP_BENCH_OUT").unwrap_or_else(|_| "target/snapmap-bench".into());
    std::fs::create_dir_all(&dir).expect("create the output directory");
    std::fs::write(format!("{dir}/growth.json"), s).expect("write growth.json");
    println!("wrote {dir}/growth.json");
}

// ----- 1 + 2: heap bytes and allocations ----------------------------------------------

fn alloc_row(map: &str, op: &str, ops: usize, c: Counts) {
    let per = |x: u64| x as f64 / ops as f64;
    println!(
        "  {map:<34} {op:<22} {:>10.4} allocs/op {:>12.1} bytes/op  ({ops} ops)",
        per(c.allocs),
        per(c.alloc_bytes)
    );
    OUT.lock().unwrap().allocs.push(format!(
        "{{\"map\": {}, \"op\": {}, \"ops\": {ops}, \"allocs_per_op\": {}, \"bytes_per_op\": {}}}",
        js(map),
        js(op),
        per(c.allocs),
        per(c.alloc_bytes)
    ));
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
    OUT.lock().unwrap().heap.push(format!(
        "{{\"map\": {}, \"entries\": {n}, \"bytes_per_entry\": {per_entry}, \"build_allocs\": {}, \"retired_pending\": {}}}",
        js(&name),
        c.allocs,
        pending.map_or("null".into(), |p| p.to_string())
    ));

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
    OUT.lock().unwrap().heap.push(format!(
        "{{\"map\": {}, \"entries\": {n}, \"bytes_per_entry\": {per_entry}, \"build_allocs\": null, \"retired_pending\": null}}",
        js(name)
    ));
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
    OUT.lock().unwrap().heap.push(format!(
        "{{\"map\": {}, \"entries\": {n}, \"bytes_per_entry\": {}, \"build_allocs\": {}, \"retired_pending\": null}}",
        js("snapshot (pieces, on top of the map)"),
        c.live_delta() as f64 / n as f64,
        c.allocs
    ));
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

fn percentile(sorted: &[u32], p: f64) -> u32 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// One growth run; returns (sorted latencies in ns, wall time, stats).
///
/// With `cpu`, each insert is timed by the thread's CPU clock *and* by
/// `Instant`, and the latency recorded is the smaller of the two: the
/// map's own work in that insert. Preemption inflates the wall time but not
/// the CPU time; a VM's CPU clock sometimes jumps by a millisecond with no
/// wall time passing (steal accounting), which inflates the CPU time but
/// not the wall time. Both at once in the same insert is rare. The second
/// vector is the plain CPU times. (Two system calls per insert: slower, so
/// in separate runs.)
fn growth_run<M: BenchMap>(
    streams: &[Vec<Op>],
    cpu: bool,
) -> (Vec<u32>, Vec<u32>, f64, Option<String>) {
    let threads = streams.len();
    let map = M::new();
    let lats: Vec<Mutex<(Vec<u32>, Vec<u32>)>> = streams
        .iter()
        .map(|s| {
            let inserts = s.iter().filter(|o| o.kind == Kind::Insert).count();
            let cpu_inserts = if cpu { inserts } else { 0 };
            Mutex::new((Vec::with_capacity(inserts), Vec::with_capacity(cpu_inserts)))
        })
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
                            lat.push(ns.min(wall).min(u64::from(u32::MAX)) as u32);
                            cpu_lat.push(ns.min(u64::from(u32::MAX)) as u32);
                        }
                        Kind::Insert => {
                            let start = Instant::now();
                            h.insert(op.key, op.key);
                            let ns = start.elapsed().as_nanos();
                            lat.push(ns.min(u128::from(u32::MAX)) as u32);
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
    let (mut all, mut all_cpu) = (Vec::new(), Vec::new());
    for m in lats {
        let (lat, cpu_lat) = m.into_inner().unwrap();
        all.extend(lat);
        all_cpu.extend(cpu_lat);
    }
    all.sort_unstable();
    all_cpu.sort_unstable();
    (all, all_cpu, wall.as_secs_f64(), stats)
}

fn median(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn growth<M: BenchMap>(kind: Growth, streams: &[Vec<Op>], reps: usize) {
    let name = M::name();
    let mut rows = Vec::new();
    let (mut work_maxes, mut cpu_maxes, mut cpu_p999s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let (work, cpu_lat, _, _) = growth_run::<M>(streams, true);
        let work_max = *work.last().expect("some inserts");
        let cpu_max = *cpu_lat.last().expect("some inserts");
        let cpu_p999 = percentile(&cpu_lat, 0.999);
        println!(
            "  {name:<34} {:<20} per insert, separate run: CPU time p99.9 {cpu_p999} ns, max {cpu_max} ns; min(CPU, wall) max {work_max} ns",
            kind.name()
        );
        work_maxes.push(work_max);
        cpu_maxes.push(cpu_max);
        cpu_p999s.push(cpu_p999);
    }
    let join = |v: &[u32]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cpu_fields = format!(
        "\"cpu_p999\": {}, \"cpu_max\": {}, \"work_max\": {}, \"cpu_maxes\": [{}], \"work_maxes\": [{}]",
        median(cpu_p999s),
        median(cpu_maxes.clone()),
        median(work_maxes.clone()),
        join(&cpu_maxes),
        join(&work_maxes)
    );
    for _ in 0..reps {
        let (lat, _, wall, stats) = growth_run::<M>(streams, false);
        let pct = [0.5, 0.99, 0.999, 0.9999].map(|p| percentile(&lat, p));
        let max = *lat.last().expect("some inserts");
        println!(
            "  {name:<34} {:<20} inserts {:>8}  p50 {:>6} ns  p99 {:>7} ns  p99.9 {:>8} ns  p99.99 {:>9} ns  max {:>10} ns  wall {:>7.1} ms{}",
            kind.name(),
            lat.len(),
            pct[0],
            pct[1],
            pct[2],
            pct[3],
            max,
            wall * 1e3,
            stats
                .as_ref()
                .map_or(String::new(), |s| format!("\n      stats: {s}"))
        );
        rows.push(format!(
            "{{\"p50\": {}, \"p99\": {}, \"p999\": {}, \"p9999\": {}, \"max\": {max}, \"wall_s\": {wall}, \"inserts\": {}, \"stats\": {}}}",
            pct[0],
            pct[1],
            pct[2],
            pct[3],
            lat.len(),
            stats.map_or("null".into(), |s| js(&s))
        ));
    }
    OUT.lock().unwrap().growth.push(format!(
        "{{\"map\": {}, \"workload\": {}, \"threads\": {}, {cpu_fields}, \"reps\": [{}]}}",
        js(&name),
        js(kind.name()),
        streams.len(),
        rows.join(", ")
    ));
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
        let mut latencies: Vec<u64> = Vec::with_capacity(updates);
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
                latencies.push(t.elapsed().as_nanos() as u64);
            }
            stop.store(true, Relaxed);
        });
        latencies.sort_unstable();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        let case = if with_storm {
            "during a storm of snapshots"
        } else {
            "no snapshots"
        };
        let (p50, p99, p999, max) = (at(0.5), at(0.99), at(0.999), *latencies.last().unwrap());
        println!(
            "  {case:<28} p50 {p50} ns  p99 {p99} ns  p99.9 {p999} ns  max {max} ns  ({} snapshots)",
            snapshots.load(Relaxed)
        );
        OUT.lock().unwrap().storm.push(format!(
            "{{\"case\": {}, \"updates\": {updates}, \"snapshots\": {}, \"p50_ns\": {p50}, \"p99_ns\": {p99}, \"p999_ns\": {p999}, \"max_ns\": {max}}}",
            js(case),
            snapshots.load(Relaxed)
        ));
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
    write_json();
    println!(
        "growth harness done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
