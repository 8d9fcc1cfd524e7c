#!/usr/bin/env bash
# Regenerates BENCHMARKS.md and benches/chart.svg from ONE run of every bench.
#
#   scripts/bench-report.sh          full run (about 20-25 minutes on 2 cores)
#   scripts/bench-report.sh --quick  tiny sizes, seconds; writes its report to
#                                    target/snapmap-bench-quick/ (not to the repo)
#
# The benches are the workspace member snapmap-benches (benches/Cargo.toml).
# Steps: build its three bench binaries; run the criterion benches
# (benches/maps.rs) with their results in $OUT/criterion; run the
# allocation / memory / growth-latency harness (benches/growth.rs); count
# instructions per lookup under callgrind (benches/lookup_cost.rs, N lookups
# minus 0 lookups); then scripts/bench-report.py writes the Markdown and the
# SVG chart from those files.
#
# The CI smoke test is not this script but:
#   SNAPMAP_BENCH_QUICK=1 cargo bench -p snapmap-benches --bench maps --bench growth --bench lookup_cost
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
if [[ "${1:-}" == "--quick" ]]; then
    quick=1
fi

target_dir="${CARGO_TARGET_DIR:-target}"
if [[ $quick == 1 ]]; then
    export SNAPMAP_BENCH_QUICK=1
    out="$target_dir/snapmap-bench-quick"
    markdown="$out/BENCHMARKS.md"
    chart="$out/chart.svg"
    cg_keys=1000
    cg_lookups=20000
else
    unset SNAPMAP_BENCH_QUICK
    out="$target_dir/snapmap-bench"
    markdown="BENCHMARKS.md"
    chart="benches/chart.svg"
    cg_keys=100000
    cg_lookups=1000000
fi

rm -rf "$out"
mkdir -p "$out/callgrind"
export CRITERION_HOME="$out/criterion"
export SNAPMAP_BENCH_OUT="$out"
timings="$out/timings.txt"
: > "$timings"

now() { date +%s; }
stamp() { echo "$1=$(( $(now) - $2 ))" >> "$timings"; }

t_all=$(now)
{ echo "start=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"; echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"; } >> "$timings"

echo "== building the bench binaries (once: every step below runs these same executables)"
t=$(now)
cargo bench -p snapmap-benches --bench maps --bench growth --bench lookup_cost --no-run \
    --message-format=json-render-diagnostics \
    > "$out/build.json"
exes=$(python3 - "$out/build.json" <<'PY'
import json, sys
found = {}
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        found[m["target"]["name"]] = m["executable"]
print(found["maps"], found["growth"], found["lookup_cost"])
PY
)
read -r maps_exe growth_exe lookup_exe <<< "$exes"
stamp build_s "$t"
{
    echo "git_commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)"
    echo "src_dirty=$(git status --porcelain -- src Cargo.toml 2> /dev/null | wc -l)"
    echo "src_hash=$(find src Cargo.toml -type f | sort | xargs cat | sha256sum | cut -c1-12)"
} >> "$timings"

echo "== criterion benches (benches/maps.rs); log: $out/maps.log"
t=$(now)
"$maps_exe" --bench 2>&1 | tee "$out/maps.log" | awk '
    /^(Benchmarking|Found|Warning)/ { next }
    /^[A-Za-z]/ { n = $0; i = index(n, "time:"); if (i > 0) n = substr(n, 1, i - 1); gsub(/ +$/, "", n) }
    /time:/ { printf "   %-62s %s\n", n, substr($0, index($0, "time:") + 5); fflush() }'

stamp maps_s "$t"

echo "== memory, allocations and growth latency (benches/growth.rs); log: $out/growth.log"
t=$(now)
"$growth_exe" --bench 2>&1 | tee "$out/growth.log"
stamp growth_s "$t"

echo "== callgrind: instructions per lookup ($cg_lookups lookups, $cg_keys keys)"
t=$(now)
exe="$lookup_exe"
if command -v valgrind > /dev/null; then
    for map in snapmap snapmap-per-op snapmap-snapshot snapmap-reader snapmap-cap4096 dashmap papaya papaya-per-op scc-hashmap scc-hashindex rwlock arcswap arcswap-cache arcswap-load ceiling; do
        for n in 0 "$cg_lookups"; do
            valgrind --tool=callgrind --callgrind-out-file="$out/callgrind/$map.$n.out" \
                "$exe" "$map" "$cg_keys" "$n" > "$out/callgrind/$map.$n.stdout" 2> "$out/callgrind/$map.$n.log"
        done
        echo "   $map done"
    done
    echo "keys=$cg_keys" > "$out/callgrind/params.txt"
    echo "lookups=$cg_lookups" >> "$out/callgrind/params.txt"
else
    echo "   valgrind not found: skipping instruction counts"
fi
stamp callgrind_s "$t"

echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$timings"
stamp total_s "$t_all"

command="scripts/bench-report.sh"
[[ $quick == 1 ]] && command="scripts/bench-report.sh --quick"
python3 scripts/bench-report.py --results "$out" --markdown "$markdown" --chart "$chart" --command "$command"
echo "== wrote $markdown and $chart in $(( $(now) - t_all )) s"
