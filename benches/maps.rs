//! Criterion benches: snapmap against its peers and ceilings, same run,
//! same code (see `benches/lib.rs`).
//!
//! Groups (each with 1 and 2 threads; this machine has 2 cores):
//!
//! - `read_hit_1M`, `read_hit_10K`: lookups of present keys, foldhash (also
//!   through a `Snapshot`).
//! - `read_hit_1M_default_hasher`: the same with each map's default hasher.
//! - `config_cache_10K`, `config_cache_1M`: 99 % reads, 1 % updates of
//!   existing keys.
//! - `update_1M`: 100 % updates of existing keys.
//! - `iter_1M`: one full pass over 1M entries (1 thread), through the map
//!   and through a snapshot.
//! - `snapshot_1M`: taking a point-in-time copy, unchanged and after one
//!   update, against `ArcSwap::load_full` and `RwLock<HashMap>` clones.
//! - `reload_1M`, `reload_10K`: one reload of the whole content with 1 %
//!   of the values changed, made visible to readers: snapmap's
//!   `replace_all` + `snapshot()` (and `apply` of the changed keys only)
//!   against `ArcSwap<HashMap>` and `RwLock<HashMap>` building a new map.
//! - `ReadHeavy`, `Exchange`, `RapidGrow`: conc-map-bench's mixes with its
//!   prefill, on a fresh map per iteration.
//!
//! Every group reports `Throughput::Elements` = operations per iteration,
//! so elements/s is the aggregate throughput over threads.
//!
//! `SNAPMAP_BENCH_QUICK=1` shrinks sizes and times so the whole binary runs
//! in seconds (CI: it keeps the benches compiling and running, and checks
//! nothing about speed). `scripts/bench-report.sh` runs everything and
//! writes BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use snapmap_benches::*;

const THREADS: [usize; 2] = [1, 2];

/// snapmap's `stats()` after the mix runs, for the report.
static SNAP_STATS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct Timing {
    samples: usize,
    warm_up: Duration,
    measure: Duration,
}

fn timing(kind: &str) -> Timing {
    let ms = Duration::from_millis;
    if quick() {
        return Timing {
            samples: 10,
            warm_up: ms(5),
            measure: ms(20),
        };
    }
    match kind {
        "read" => Timing {
            samples: 15,
            warm_up: ms(400),
            measure: ms(1800),
        },
        "iter" => Timing {
            samples: 10,
            warm_up: ms(300),
            measure: ms(2500),
        },
        // One iteration is a whole run on a fresh map: few samples, flat.
        _ => Timing {
            samples: 10,
            warm_up: ms(200),
            measure: ms(600),
        },
    }
}

fn group<'c>(c: &'c mut Criterion, name: &str, kind: &str) -> BenchmarkGroup<'c, WallTime> {
    let t = timing(kind);
    let mut g = c.benchmark_group(name);
    g.sample_size(t.samples)
        .warm_up_time(t.warm_up)
        .measurement_time(t.measure);
    if kind == "mix" {
        g.sampling_mode(SamplingMode::Flat);
    }
    g
}

// ----- Read hits -------------------------------------------------------------------

fn read_one<M: BenchMap>(g: &mut BenchmarkGroup<'_, WallTime>, keys: &[u64], streams: &[Vec<u64>]) {
    let map: M = build(keys);
    for t in THREADS {
        // One untimed pass first, so that nothing left over (lazy set-up,
        // a stall) lands in criterion's warm-up and skews its iteration
        // counts.
        run_threads(
            t,
            |_| (),
            |i| {
                black_box(lookups(&map, &streams[i], streams[i].len() as u64));
            },
        );
        g.throughput(Throughput::Elements(t as u64));
        g.bench_function(BenchmarkId::new(M::name(), format!("{t}t")), |b| {
            b.iter_custom(|iters| {
                run_threads(
                    t,
                    |_| drop(black_box(map.handle())),
                    |i| {
                        black_box(lookups(&map, &streams[i], iters));
                    },
                )
            })
        });
    }
    drop(map);
    flush_epoch();
}

fn read_hit(c: &mut Criterion, n: usize, stream_len: usize, big: bool) {
    let keys = keys(n);
    let streams: Vec<_> = (0..2)
        .map(|t| lookup_stream(&keys, stream_len, t))
        .collect();
    let mut g = group(c, &format!("read_hit_{}", label(n)), "read");
    read_one::<Snap<Fast>>(&mut g, &keys, &streams);
    if big {
        read_one::<SnapBig<Fast>>(&mut g, &keys, &streams);
        read_one::<SnapHuge<Fast>>(&mut g, &keys, &streams);
    }
    read_one::<SnapPerOp<Fast>>(&mut g, &keys, &streams);
    read_one::<Dash<Fast>>(&mut g, &keys, &streams);
    read_one::<Papaya<Fast>>(&mut g, &keys, &streams);
    read_one::<PapayaPerOp<Fast>>(&mut g, &keys, &streams);
    read_one::<SccMap<Fast>>(&mut g, &keys, &streams);
    read_one::<SccIndex<Fast>>(&mut g, &keys, &streams);
    read_one::<Locked<Fast>>(&mut g, &keys, &streams);
    read_one::<Cow<Fast>>(&mut g, &keys, &streams);
    read_one::<CowCache<Fast>>(&mut g, &keys, &streams);
    read_one::<CowLoad<Fast>>(&mut g, &keys, &streams);
    read_one::<SnapSnapshot<Fast>>(&mut g, &keys, &streams);
    read_one::<SnapReader<Fast>>(&mut g, &keys, &streams);
    read_one::<Ceiling<Fast>>(&mut g, &keys, &streams);
    g.finish();
}

fn read_hit_default_hasher(c: &mut Criterion, n: usize, stream_len: usize) {
    let keys = keys(n);
    let streams: Vec<_> = (0..2)
        .map(|t| lookup_stream(&keys, stream_len, t))
        .collect();
    let mut g = group(c, &format!("read_hit_{}_default_hasher", label(n)), "read");
    read_one::<Snap<SnapDefault>>(&mut g, &keys, &streams);
    read_one::<Dash<StdDefault>>(&mut g, &keys, &streams);
    read_one::<Papaya<StdDefault>>(&mut g, &keys, &streams);
    read_one::<SccMap<StdDefault>>(&mut g, &keys, &streams);
    read_one::<SccIndex<StdDefault>>(&mut g, &keys, &streams);
    read_one::<Locked<StdDefault>>(&mut g, &keys, &streams);
    read_one::<Cow<StdDefault>>(&mut g, &keys, &streams);
    read_one::<Ceiling<StdDefault>>(&mut g, &keys, &streams);
    g.finish();
}

// ----- Reads with updates of existing keys -----------------------------------------------

fn cyclic_one<M: BenchMap>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    keys: &[u64],
    streams: &[Vec<Op>],
) {
    let map: M = build(keys);
    for t in THREADS {
        g.throughput(Throughput::Elements(t as u64));
        g.bench_function(BenchmarkId::new(M::name(), format!("{t}t")), |b| {
            b.iter_custom(|iters| {
                run_threads(
                    t,
                    |_| drop(black_box(map.handle())),
                    |i| {
                        black_box(run_cyclic(&map, &streams[i], iters));
                    },
                )
            })
        });
    }
    drop(map);
    flush_epoch();
}

/// Reads and updates of existing keys: the config-cache mix (1 % updates)
/// or pure updates (100 %).
fn updates(c: &mut Criterion, name: &str, n: usize, stream_len: usize, update_pct: u64, big: bool) {
    let keys = keys(n);
    let streams: Vec<_> = (0..2)
        .map(|t| update_stream(&keys, stream_len, t, update_pct))
        .collect();
    let mut g = group(c, &format!("{name}_{}", label(n)), "read");
    cyclic_one::<Snap<Fast>>(&mut g, &keys, &streams);
    if big {
        cyclic_one::<SnapHuge<Fast>>(&mut g, &keys, &streams);
    }
    cyclic_one::<Dash<Fast>>(&mut g, &keys, &streams);
    cyclic_one::<Papaya<Fast>>(&mut g, &keys, &streams);
    cyclic_one::<SccMap<Fast>>(&mut g, &keys, &streams);
    cyclic_one::<SccIndex<Fast>>(&mut g, &keys, &streams);
    cyclic_one::<Locked<Fast>>(&mut g, &keys, &streams);
    // Copy-on-write copies the whole map per update: only the small map.
    if update_pct <= 1 && !big {
        cyclic_one::<Cow<Fast>>(&mut g, &keys, &streams);
    }
    g.finish();
}

// ----- Iteration ---------------------------------------------------------------------

fn iter_one<M: BenchMap>(g: &mut BenchmarkGroup<'_, WallTime>, keys: &[u64]) {
    let map: M = build(keys);
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function(BenchmarkId::new(M::name(), "1t"), |b| {
        b.iter(|| black_box(map.handle().iter_sum()))
    });
    drop(map);
    flush_epoch();
}

fn iteration(c: &mut Criterion, n: usize) {
    let keys = keys(n);
    let mut g = group(c, &format!("iter_{}", label(n)), "iter");
    iter_one::<Snap<Fast>>(&mut g, &keys);
    iter_one::<SnapBig<Fast>>(&mut g, &keys);
    iter_one::<SnapHuge<Fast>>(&mut g, &keys);
    iter_one::<Dash<Fast>>(&mut g, &keys);
    iter_one::<Papaya<Fast>>(&mut g, &keys);
    iter_one::<SccMap<Fast>>(&mut g, &keys);
    iter_one::<SccIndex<Fast>>(&mut g, &keys);
    iter_one::<Locked<Fast>>(&mut g, &keys);
    iter_one::<Cow<Fast>>(&mut g, &keys);
    iter_one::<SnapSnapshot<Fast>>(&mut g, &keys);
    iter_one::<Ceiling<Fast>>(&mut g, &keys);
    let pairs: Vec<(u64, u64)> = keys.iter().map(|&k| (k, k)).collect();
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(
        BenchmarkId::new("ceiling: Vec<(u64, u64)> walk", "1t"),
        |b| b.iter(|| black_box(vec_sum(black_box(&pairs)))),
    );
    g.finish();
}

// ----- Snapshots -------------------------------------------------------------------------

/// Taking a consistent, point-in-time copy of the map: snapmap's
/// `snapshot()` against the peers that can give one (`ArcSwap::load_full`,
/// which is O(1) because every write already copied the map, and
/// `RwLock<HashMap>::read().clone()`, an O(n) copy under the read lock).
/// "unchanged": nothing was written since the last snapshot; "after 1
/// update": one key updated before each snapshot (the update is timed too:
/// for ArcSwap it is the whole-map copy).
fn snapshots(c: &mut Criterion, n: usize) {
    let keys = keys(n);
    let mut g = group(c, &format!("snapshot_{}", label(n)), "iter");
    g.throughput(Throughput::Elements(1));

    let snap: Snap<Fast> = build(&keys);
    drop(snap.0.snapshot()); // the first build copies every shard
    g.bench_function(BenchmarkId::new("snapmap", "unchanged"), |b| {
        b.iter(|| black_box(snap.0.snapshot()))
    });
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("snapmap", "after 1 update"), |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            snap.0.update(&keys[i], |v| v + 1);
            black_box(snap.0.snapshot())
        })
    });
    drop(snap);
    flush_epoch();

    let cow: Cow<Fast> = build(&keys);
    g.bench_function(BenchmarkId::new(Cow::<Fast>::name(), "unchanged"), |b| {
        b.iter(|| black_box(cow.0.load_full()))
    });
    g.bench_function(
        BenchmarkId::new(Cow::<Fast>::name(), "after 1 update"),
        |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                cow.handle().update(keys[i]);
                black_box(cow.0.load_full())
            })
        },
    );
    drop(cow);

    let locked: Locked<Fast> = build(&keys);
    g.bench_function(BenchmarkId::new(Locked::<Fast>::name(), "unchanged"), |b| {
        b.iter(|| black_box(locked.0.read().clone()))
    });
    g.bench_function(
        BenchmarkId::new(Locked::<Fast>::name(), "after 1 update"),
        |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                locked.handle().update(keys[i]);
                black_box(locked.0.read().clone())
            })
        },
    );
    drop(locked);
    g.finish();
}

// ----- Reloads ----------------------------------------------------------------------------

/// Times `reload(content)` once per iteration, the content alternating
/// between `base` and `changed` (so every iteration starts from the same
/// state: the map holds the other one) and prepared outside the timed part.
fn reload_one(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    base: &[(u64, u64)],
    changed: &[(u64, u64)],
    mut reload: impl FnMut(&[(u64, u64)]),
) {
    let mut flip = false;
    g.bench_function(BenchmarkId::new(name, "1% changed"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                flip = !flip;
                let content = if flip { changed } else { base };
                let start = Instant::now();
                reload(content);
                total += start.elapsed();
            }
            total
        })
    });
}

/// A reload of the whole content with 1 % of the values changed (issue 13),
/// made visible to readers: snapmap's `replace_all(content)` and the next
/// `snapshot()` (what a reader handle's refresh waits for), snapmap's
/// `apply` of a batch holding only the changed keys (for a user who knows
/// the diff), `ArcSwap<HashMap>` building a new map from the content and
/// storing it, and `RwLock<HashMap>` building one and swapping it in under
/// the write lock. (Applying the diff under the write lock instead needs a
/// table of the content to find the removed keys, so it is no cheaper than
/// building the map; the swap keeps the lock held for a pointer swap.)
/// Every map starts from the content `(k, k)`; the changed content adds 1
/// to every 100th value.
fn reloads(c: &mut Criterion, n: usize) {
    let keys = keys(n);
    let base: Vec<(u64, u64)> = keys.iter().map(|&k| (k, k)).collect();
    let changed: Vec<(u64, u64)> = base
        .iter()
        .enumerate()
        .map(|(i, &(k, v))| if i % 100 == 0 { (k, v + 1) } else { (k, v) })
        .collect();
    // The changed keys with their values in each content, for `apply`.
    let diff_to = |content: &[(u64, u64)]| -> Vec<(u64, u64)> {
        content.iter().step_by(100).copied().collect()
    };
    let (to_base, to_changed) = (diff_to(&base), diff_to(&changed));
    let mut g = group(c, &format!("reload_{}", label(n)), "mix");
    g.throughput(Throughput::Elements(1));

    let snap: Snap<Fast> = build(&keys);
    drop(snap.0.snapshot());
    reload_one(
        &mut g,
        "snapmap replace_all + snapshot",
        &base,
        &changed,
        |content| {
            let applied = snap.0.replace_all(content.iter().copied());
            debug_assert_eq!(applied.replaced, to_base.len());
            black_box(snap.0.snapshot());
        },
    );
    reload_one(
        &mut g,
        "snapmap apply (changed keys only) + snapshot",
        &base,
        &changed,
        |content| {
            let diff = if content.as_ptr() == base.as_ptr() {
                &to_base
            } else {
                &to_changed
            };
            snap.0.apply(diff.iter().copied().collect());
            black_box(snap.0.snapshot());
        },
    );
    drop(snap);
    flush_epoch();

    let cow: Cow<Fast> = build(&keys);
    reload_one(&mut g, &Cow::<Fast>::name(), &base, &changed, |content| {
        let mut map = hashbrown::HashMap::with_capacity_and_hasher(content.len(), Fast::default());
        map.extend(content.iter().copied());
        cow.0.store(std::sync::Arc::new(map));
    });
    drop(cow);

    let locked: Locked<Fast> = build(&keys);
    reload_one(
        &mut g,
        &Locked::<Fast>::name(),
        &base,
        &changed,
        |content| {
            let mut map =
                hashbrown::HashMap::with_capacity_and_hasher(content.len(), Fast::default());
            map.extend(content.iter().copied());
            let old = std::mem::replace(&mut *locked.0.write(), map);
            drop(old);
        },
    );
    drop(locked);
    g.finish();
}

// ----- conc-map-bench mixes -----------------------------------------------------------------

struct MixSet {
    mix: Mix,
    cap: usize,
    threads: usize,
    streams: Vec<MixStream>,
    prefill: Vec<u64>,
}

/// One run: a fresh map, the prefill (each thread its own keys), optionally
/// a read pass over the prefill, then the timed operations.
fn mix_run<M: BenchMap>(set: &MixSet, settle_first: bool) -> (Duration, M) {
    let map = M::new();
    run_threads(
        set.threads,
        |_| (),
        |t| {
            for chunk in set.streams[t].prefill.chunks(BATCH) {
                let h = map.handle();
                for &k in chunk {
                    h.insert(k, k);
                }
            }
        },
    );
    if settle_first {
        settle(&map, &set.prefill); // ends with flush_epoch()
    } else {
        flush_epoch();
    }
    let elapsed = run_threads(
        set.threads,
        |_| drop(black_box(map.handle())),
        |t| {
            black_box(run_ops(&map, &set.streams[t].ops));
        },
    );
    (elapsed, map)
}

fn mix_one<M: BenchMap>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    set: &MixSet,
    settle_first: bool,
    label: &str,
) {
    let name = format!("{}{label}", M::name());
    g.throughput(Throughput::Elements(set.cap as u64));
    let mut last_stats = None;
    g.bench_function(
        BenchmarkId::new(name.clone(), format!("{}t", set.threads)),
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (elapsed, map) = mix_run::<M>(set, settle_first);
                    total += elapsed;
                    last_stats = map.stats();
                }
                total
            })
        },
    );
    if let Some(stats) = last_stats {
        let id = format!("{}/{}/{}t", set.mix.name, name, set.threads);
        SNAP_STATS.lock().unwrap().push((id, stats));
    }
}

fn mixes(c: &mut Criterion, cap_log2: u32) {
    for mix in [READ_HEAVY, EXCHANGE, RAPID_GROW] {
        let mut g = group(c, mix.name, "mix");
        for threads in THREADS {
            let cap = 1usize << cap_log2;
            let streams: Vec<_> = (0..threads)
                .map(|t| mix_stream(mix, cap, threads, t))
                .collect();
            let prefill = streams
                .iter()
                .flat_map(|s| s.prefill.iter().copied())
                .collect();
            let set = MixSet {
                mix,
                cap,
                threads,
                streams,
                prefill,
            };
            mix_one::<Snap<Fast>>(&mut g, &set, true, "");
            mix_one::<SnapBig<Fast>>(&mut g, &set, true, "");
            if mix.prefill > 0.0 && mix.read > 50 {
                // The same right after a bulk load: the prefilled keys are
                // still in the dirty tables, and reads take the shard locks
                // until enough misses promote each shard.
                mix_one::<Snap<Fast>>(&mut g, &set, false, ", no read pass after prefill");
            }
            mix_one::<Dash<Fast>>(&mut g, &set, true, "");
            mix_one::<Papaya<Fast>>(&mut g, &set, true, "");
            mix_one::<SccMap<Fast>>(&mut g, &set, true, "");
            mix_one::<SccIndex<Fast>>(&mut g, &set, true, "");
            mix_one::<Locked<Fast>>(&mut g, &set, true, "");
        }
        g.finish();
    }
}

/// snapmap's `stats()` after each mix run, as one JSON object in run order
/// (`snapmap-stats.json`: run id -> stats line).
struct StatsInRunOrder<'a>(&'a [(String, String)]);

impl serde::Serialize for StatsInRunOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(id, stats)| (id, stats)))
    }
}

fn write_stats() {
    let stats = SNAP_STATS.lock().unwrap();
    if stats.is_empty() {
        // A run filtered to no mix (`--bench read_hit`, say) keeps the
        // counters of the last run that had them: writing `{}` over them
        // left the report's tables of counters empty when it was
        // re-rendered after such a run.
        return;
    }
    if let Err(e) = write_json("snapmap-stats.json", &StatsInRunOrder(&stats)) {
        eprintln!("could not write snapmap-stats.json: {e}");
    }
}

fn main() {
    let sizes = Sizes::get();
    let quick = quick();
    let mut c = Criterion::default()
        .nresamples(if quick { 500 } else { 20_000 })
        .without_plots()
        .configure_from_args();
    read_hit(&mut c, sizes.big, sizes.big_stream, true);
    read_hit(&mut c, sizes.small, sizes.small_stream, false);
    read_hit_default_hasher(&mut c, sizes.big, sizes.big_stream);
    updates(
        &mut c,
        "config_cache",
        sizes.small,
        sizes.small_stream,
        1,
        false,
    );
    updates(&mut c, "config_cache", sizes.big, sizes.big_stream, 1, true);
    updates(&mut c, "update", sizes.big, sizes.big_stream, 100, true);
    iteration(&mut c, sizes.big);
    snapshots(&mut c, sizes.big);
    reloads(&mut c, sizes.big);
    reloads(&mut c, sizes.small);
    mixes(&mut c, sizes.mix_cap_log2);
    write_stats();
    c.final_summary();
}
