//! Instructions per read hit, for `valgrind --tool=callgrind`.
//!
//! `lookup_cost <map> <keys> <lookups>` builds `<map>` with `<keys>` keys,
//! settles it (one read pass, one iteration: every snapmap shard promoted),
//! then runs `<lookups>` hits through the same loop the criterion read
//! benches use (a handle re-taken every 1024 lookups). Run it twice under
//! callgrind, with `<lookups>` = N and 0, and divide the difference of the
//! instruction counts by N: the build and the process start cancel out.
//! `scripts/bench-report.sh` does exactly that.
//!
//! Without arguments (as `cargo bench` runs it) it runs every map once
//! with small sizes, as a smoke test.

use std::hint::black_box;

use snapmap_benches::*;

/// The lookup stream is always this long (cycled), so that the runs with N
/// and with 0 lookups do the same set-up work.
const STREAM: usize = 1 << 20;

fn run<M: BenchMap>(n_keys: usize, lookups_n: u64) -> u64 {
    let keys = keys(n_keys);
    let map: M = build(&keys);
    let stream = lookup_stream(&keys, STREAM, 0);
    black_box(lookups(&map, black_box(&stream), lookups_n))
}

/// The map names accepted on the command line.
const MAPS: [&str; 16] = [
    "snapmap",
    "snapmap-snapshot",
    "snapmap-reader",
    "snapmap-per-op",
    "snapmap-cap4096",
    "snapmap-huge",
    "dashmap",
    "papaya",
    "papaya-per-op",
    "scc-hashmap",
    "scc-hashindex",
    "rwlock",
    "arcswap",
    "arcswap-cache",
    "arcswap-load",
    "ceiling",
];

fn dispatch(map: &str, n_keys: usize, lookups_n: u64) -> Option<(String, u64)> {
    fn go<M: BenchMap>(n: usize, l: u64) -> Option<(String, u64)> {
        Some((M::name(), run::<M>(n, l)))
    }
    match map {
        "snapmap" => go::<Snap<Fast>>(n_keys, lookups_n),
        "snapmap-snapshot" => go::<SnapSnapshot<Fast>>(n_keys, lookups_n),
        "snapmap-reader" => go::<SnapReader<Fast>>(n_keys, lookups_n),
        "snapmap-per-op" => go::<SnapPerOp<Fast>>(n_keys, lookups_n),
        "snapmap-cap4096" => go::<SnapBig<Fast>>(n_keys, lookups_n),
        "snapmap-huge" => go::<SnapHuge<Fast>>(n_keys, lookups_n),
        "dashmap" => go::<Dash<Fast>>(n_keys, lookups_n),
        "papaya" => go::<Papaya<Fast>>(n_keys, lookups_n),
        "papaya-per-op" => go::<PapayaPerOp<Fast>>(n_keys, lookups_n),
        "scc-hashmap" => go::<SccMap<Fast>>(n_keys, lookups_n),
        "scc-hashindex" => go::<SccIndex<Fast>>(n_keys, lookups_n),
        "rwlock" => go::<Locked<Fast>>(n_keys, lookups_n),
        "arcswap" => go::<Cow<Fast>>(n_keys, lookups_n),
        "arcswap-cache" => go::<CowCache<Fast>>(n_keys, lookups_n),
        "arcswap-load" => go::<CowLoad<Fast>>(n_keys, lookups_n),
        "ceiling" => go::<Ceiling<Fast>>(n_keys, lookups_n),
        _ => None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.as_slice() {
        [map, n_keys, lookups_n] => {
            let n_keys = n_keys.parse().expect("<keys> is a number");
            let lookups_n = lookups_n.parse().expect("<lookups> is a number");
            let (name, sum) = dispatch(map, n_keys, lookups_n)
                .unwrap_or_else(|| panic!("unknown map {map:?}; one of {MAPS:?}"));
            println!("{name}: {lookups_n} lookups in a map of {n_keys} keys (checksum {sum})");
        }
        [] => {
            for map in MAPS {
                let (name, _) = dispatch(map, 1000, 10_000).expect("a known map");
                println!("lookup_cost smoke test: {map} ({name}) ok");
            }
            println!("run under callgrind with: lookup_cost <map> <keys> <lookups>");
        }
        _ => panic!("usage: lookup_cost <map> <keys> <lookups>"),
    }
}
