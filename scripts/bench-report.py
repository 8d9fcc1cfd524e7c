#!/usr/bin/env python3
"""Writes BENCHMARKS.md and the SVG chart from one run of snapmap's benches.

Input (a results directory written by scripts/bench-report.sh):
  criterion/**/new/{benchmark,estimates}.json   criterion benches (benches/maps.rs)
  growth.json                                   memory, allocations, growth latency (benches/growth.rs)
  snapmap-stats.json                            snapmap's stats() after each mix run
  callgrind/<map>.<n>.out                       callgrind profiles (benches/lookup_cost.rs)
  timings.txt                                   wall times and load averages of the run

Standard library only. Run scripts/bench-report.sh rather than this file.
"""

import argparse
import glob
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections import defaultdict

SNAP = "snapmap"  # the reference row: default configuration, pinned handle per batch
RELOAD = "snapmap replace_all + snapshot"  # the reload groups' snapmap row
COW = "ArcSwap<HashMap> (COW)"
HUGE = "snapmap (huge_pages)"  # opt-in: read views in huge-page regions
NOISE = "noise floor (no map)"  # the growth harness's empty timed section

# Row order in every table.
ORDER = [
    "snapmap",
    "snapmap, pin per op",
    "snapmap (shard_capacity 4096)",
    "snapmap (huge_pages)",
    "snapmap, no read pass after prefill",
    "snapmap snapshot",
    "snapmap reader handle",
    "snapmap replace_all + snapshot",
    "snapmap apply (changed keys only) + snapshot",
    "snapshot (pieces, on top of the map)",
    "dashmap",
    "papaya",
    "papaya, pin per op",
    "scc::HashMap",
    "scc::HashIndex",
    "RwLock<HashMap>",
    "ArcSwap<HashMap> (COW)",
    "ArcSwap<HashMap>, Cache per get",
    "ArcSwap<HashMap>, load per get",
    "ceiling: &hashbrown::HashMap",
    "ceiling: Vec<(u64, u64)> walk",
    "Vec<(u64, u64)>",
]

COLORS = {
    "dashmap": "#1f77b4",
    "papaya": "#ff7f0e",
    "scc::HashMap": "#2ca02c",
    "scc::HashIndex": "#98df8a",
    "RwLock<HashMap>": "#9467bd",
    "ArcSwap<HashMap> (COW)": "#8c564b",
    "ArcSwap<HashMap>, Cache per get": "#c49c94",
    "ArcSwap<HashMap>, load per get": "#e7cb94",
    "ceiling: &hashbrown::HashMap": "#7f7f7f",
    "ceiling: Vec<(u64, u64)> walk": "#c7c7c7",
}


def order_key(name):
    for i, n in enumerate(ORDER):
        if name == n:
            return (i, name)
    for i, n in enumerate(ORDER):
        if name.startswith(n):
            return (i + 0.5, name)
    return (len(ORDER), name)


def is_snap(name):
    return name.startswith("snapmap")


def is_ceiling(name):
    return name.startswith("ceiling") or name.startswith("Vec<")


def is_peer(name):
    return not is_snap(name) and not is_ceiling(name)


def fmt_num(x, digits=3):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    return f"{x:,.{decimals}f}"


def fmt_ratio(r):
    if r is None:
        return "n/a"
    if r >= 100:
        return f"{r:.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    if r >= 0.01:
        return f"{r:.2f}×"
    return f"{r:.4f}×"


def md_name(name):
    escaped = name.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    return f"**{escaped}**" if name == SNAP else escaped


def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


# ----- loading -----------------------------------------------------------------------


def load_criterion(root):
    """{group: {(function, value): {"ns": median ns/iter, "lo": .., "hi": .., "elements": n}}}"""
    groups = defaultdict(dict)
    for bj in glob.glob(os.path.join(root, "**", "new", "benchmark.json"), recursive=True):
        with open(bj) as f:
            b = json.load(f)
        with open(os.path.join(os.path.dirname(bj), "estimates.json")) as f:
            e = json.load(f)
        median = e["median"]
        elements = (b.get("throughput") or {}).get("Elements")
        groups[b["group_id"]][(b["function_id"], b.get("value_str") or "")] = {
            "ns": median["point_estimate"],
            "lo": median["confidence_interval"]["lower_bound"],
            "hi": median["confidence_interval"]["upper_bound"],
            "elements": elements,
        }
    return groups


def throughput(entry):
    """Operations per second (aggregate over threads)."""
    return entry["elements"] / entry["ns"] * 1e9


def load_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def load_timings(path):
    t = {}
    try:
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    t[k] = v
    except OSError:
        pass
    return t


def callgrind_total(path):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def load_callgrind(root):
    params = load_timings(os.path.join(root, "callgrind", "params.txt"))
    if "lookups" not in params:
        return None
    n = int(params["lookups"])
    rows = {}
    for out in glob.glob(os.path.join(root, "callgrind", f"*.{n}.out")):
        base = os.path.basename(out)[: -len(f".{n}.out")]
        full = callgrind_total(out)
        zero = callgrind_total(os.path.join(root, "callgrind", f"{base}.0.out"))
        if full is None or zero is None:
            continue
        name = base
        stdout = os.path.join(root, "callgrind", f"{base}.{n}.stdout")
        try:
            with open(stdout) as f:
                m = re.match(r"^(.*): \d+ lookups", f.read())
                if m:
                    name = m.group(1)
        except OSError:
            pass
        rows[name] = {"file": base, "per_lookup": (full - zero) / n, "full": full, "zero": zero}
    return {"keys": int(params.get("keys", 0)), "lookups": n, "rows": rows}


def annotate(path):
    """{file:function -> Ir} from callgrind_annotate (self cost)."""
    text = run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", path])
    costs = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(\S.*?:.*?)(\s+\[[^\]]*\])?$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        costs[m.group(2)] = costs.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return costs


def breakdown(root, base, n):
    """Per-lookup instructions by source file, from the difference of the two profiles."""
    full = annotate(os.path.join(root, "callgrind", f"{base}.{n}.out"))
    zero = annotate(os.path.join(root, "callgrind", f"{base}.0.out"))
    if not full:
        return []
    by_file = defaultdict(float)
    for key in set(full) | set(zero):
        d = full.get(key, 0) - zero.get(key, 0)
        src = key.split(":")[0]
        if "registry/src" in src:
            crate = src.split("registry/src/")[1].split("/")[1]
            label = crate + " " + src.split(crate + "/", 1)[-1]
        elif "/rustc/" in src:
            label = "core/std " + src.split("/library/")[-1]
        elif "benches/" in src:
            label = "bench loop (" + os.path.basename(src) + ")"
        elif src.startswith("src/") or "/src/" in src:
            label = "snapmap " + src[src.index("src/"):]
        elif "malloc" in src:
            label = "libc malloc/free"
        else:
            label = src
        by_file[label] += d / n
    rows = sorted(((k, v) for k, v in by_file.items() if abs(v) >= 2), key=lambda kv: -kv[1])
    other = sum(v for v in by_file.values() if abs(v) < 2)
    if abs(other) >= 0.5:
        rows.append(("everything else (< 2 per lookup each)", other))
    return rows


# ----- machine ---------------------------------------------------------------------


def machine_lines(repo, timings):
    lscpu = run(["lscpu"])
    info = {}
    for line in lscpu.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    caches = ", ".join(
        f"{k.split()[0]} {info[k]}" for k in ["L1d cache", "L2 cache", "L3 cache"] if k in info
    )
    cpu = info.get("Model name", platform.processor() or "unknown CPU")
    hyper = info.get("Hypervisor vendor")
    lines = [
        f"- CPU: {cpu}, {run(['nproc'])} CPUs online"
        + (f" ({info.get('Thread(s) per core', '?')} thread(s) per core)" if info else "")
        + (f", {caches}" if caches else "")
        + (f"; virtual machine ({hyper})" if hyper else ""),
        f"- Memory: {mem}; kernel {platform.release()}; {platform.machine()}",
        f"- {run(['rustc', '--version'])}; {run(['cargo', '--version'])}",
    ]
    versions = lock_versions(repo)
    if versions:
        lines.append("- Crates (Cargo.lock): " + ", ".join(f"{k} {v}" for k, v in versions))
    commit = timings.get("git_commit") or run(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    dirty = timings.get("src_dirty", "0") not in ("", "0")
    if commit:
        lines.append(
            f"- snapmap built from commit `{commit}`"
            + (" with uncommitted changes in `src/`" if dirty else "")
            + (f" (hash of `src/` + `Cargo.toml`: `{timings['src_hash']}`)" if timings.get("src_hash") else "")
        )
    return lines


def lock_versions(repo):
    wanted = [
        "dashmap", "papaya", "scc", "arc-swap", "parking_lot", "hashbrown", "foldhash",
        "crossbeam-epoch", "seize", "criterion",
    ]
    found = defaultdict(list)
    try:
        with open(os.path.join(repo, "Cargo.lock")) as f:
            text = f.read()
    except OSError:
        return []
    for m in re.finditer(r'\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"', text):
        if m.group(1) in wanted:
            found[m.group(1)].append(m.group(2))
    out = []
    for name in wanted:
        if name in found:
            vs = sorted(set(found[name]))
            if name == "hashbrown":  # the crate uses 0.16; older ones come from peers
                vs = [v for v in vs if v.startswith("0.16")] or vs
            out.append((name, "/".join(vs)))
    return out


# ----- tables ------------------------------------------------------------------------


def find_group(groups, prefix, suffix=""):
    """The group named prefix + size label (+ suffix), e.g. read_hit_1M or read_hit_16Ki."""
    cands = [g for g in groups if g.startswith(prefix) and g.endswith(suffix)]
    if suffix == "":
        cands = [g for g in cands if "default_hasher" not in g]
    return cands


def size_of_group(g):
    m = re.search(r"_(\d+(?:M|K|Ki)?)", g)
    return m.group(1) if m else ""


def by_size(groups, prefix, suffix=""):
    """Groups with this prefix, largest size first."""

    def n(g):
        s = size_of_group(g)
        m = re.match(r"(\d+)(M|K|Ki)?", s)
        if not m:
            return 0
        mult = {"M": 1_000_000, "K": 1000, "Ki": 1024, None: 1}[m.group(2)]
        return int(m.group(1)) * mult

    return sorted(find_group(groups, prefix, suffix), key=lambda g: -n(g))


def alloc_lookup(growth, name, op):
    for row in growth.get("allocs", []):
        if row["map"] == name and row["op"] == op:
            return row
    return None


def thread_table(groups, group, growth, alloc_op=None):
    g = groups.get(group, {})
    names = sorted({f for f, _ in g}, key=order_key)
    threads = sorted({v for _, v in g}, key=lambda v: int(v.rstrip("t")) if v.rstrip("t").isdigit() else 0)
    head = "| map |"
    sep = "|---|"
    for t in threads:
        n = t.rstrip("t")
        label = "thread" if n == "1" else "threads"
        head += f" {n} {label}: Mops/s | vs snapmap |"
        sep += "---:|---:|"
    if alloc_op:
        head += f" allocs per {alloc_op.split(' ')[0]} |"
        sep += "---:|"
    lines = [head, sep]
    for name in names:
        row = f"| {md_name(name)} |"
        for t in threads:
            e = g.get((name, t))
            ref = g.get((SNAP, t))
            if e is None:
                row += " – | – |"
                continue
            thr = throughput(e)
            ratio = thr / throughput(ref) if ref else None
            row += f" {fmt_num(thr / 1e6)} | {fmt_ratio(ratio)} |"
        if alloc_op:
            a = alloc_lookup(growth, name, alloc_op)
            row += f" {fmt_num(a['allocs_per_op'], 3) if a else 'n/a'} |"
        lines.append(row)
    return lines


def ratio_vs(groups, group, thread, other):
    g = groups.get(group, {})
    s, o = g.get((SNAP, thread)), g.get((other, thread))
    if not s or not o:
        return None
    return throughput(s) / throughput(o)


def best_peer(groups, group, thread, exclude_cow=False):
    g = groups.get(group, {})
    best = None
    for (name, t), e in g.items():
        if t != thread or not is_peer(name):
            continue
        if exclude_cow and "COW" in name:
            continue
        if best is None or throughput(e) > throughput(best[1]):
            best = (name, e)
    return best


# ----- the chart ----------------------------------------------------------------------


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chart_svg(panels, peers):
    """Grouped bars on a log axis: each peer's throughput relative to snapmap (= 1)."""
    values = [r for _, ratios in panels for r in ratios.values() if r and r > 0]
    lo_exp = max(-7, min(-1, math.floor(math.log2(min(values))) if values else -1))
    hi_exp = min(7, max(1, math.ceil(math.log2(max(values))) if values else 1))
    width = 1100
    left, right, top = 70, 20, 70
    plot_h = 380
    bottom_labels = 60
    legend_h = 24 * ((len(peers) + 3) // 4)
    height = top + plot_h + bottom_labels + legend_h + 20
    plot_w = width - left - right
    group_w = plot_w / max(1, len(panels))
    bar_w = min(14, (group_w - 10) / max(1, len(peers)))

    def y(r):
        v = min(max(math.log2(r), lo_exp), hi_exp)
        return top + (hi_exp - v) / (hi_exp - lo_exp) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="17" font-weight="bold">'
        "Each peer's throughput relative to snapmap (same run; log scale)</text>",
        f'<text x="{width / 2}" y="44" text-anchor="middle" font-size="12" fill="#444">'
        "above the line: the peer is faster than snapmap; below: slower. "
        "2 threads unless marked 1t; iteration is one thread</text>",
    ]
    for e in range(lo_exp, hi_exp + 1):
        yy = y(2.0**e)
        label = f"{2 ** e:g}×" if e >= 0 else f"1/{2 ** -e}×"
        color = "#000" if e == 0 else "#ddd"
        widthpx = 1.5 if e == 0 else 1
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{width - right}" y2="{yy:.1f}" stroke="{color}" stroke-width="{widthpx}"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" font-size="11">{label}</text>')
    out.append(f'<text x="{left - 6}" y="{y(1.0) - 8:.1f}" text-anchor="end" font-size="11" font-weight="bold">snapmap</text>')
    for i, (title, ratios) in enumerate(panels):
        x0 = left + i * group_w + (group_w - bar_w * len(peers)) / 2
        for j, peer in enumerate(peers):
            r = ratios.get(peer)
            if r is None or r <= 0:
                continue
            x = x0 + j * bar_w
            y1, y0 = y(r), y(1.0)
            top_y, h = min(y0, y1), abs(y1 - y0)
            out.append(
                f'<rect x="{x:.1f}" y="{top_y:.1f}" width="{bar_w - 1:.1f}" height="{max(h, 1):.1f}" '
                f'fill="{COLORS.get(peer, "#333")}"><title>{esc(peer)}: {r:.3g}× snapmap ({esc(title)})</title></rect>'
            )
        cx = left + i * group_w + group_w / 2
        for k, part in enumerate(title.split("\n")):
            out.append(
                f'<text x="{cx:.1f}" y="{top + plot_h + 18 + 14 * k}" text-anchor="middle" font-size="11">{esc(part)}</text>'
            )
        if i > 0:
            xs = left + i * group_w
            out.append(f'<line x1="{xs:.1f}" y1="{top}" x2="{xs:.1f}" y2="{top + plot_h}" stroke="#eee"/>')
    ly = top + plot_h + bottom_labels + 10
    for j, peer in enumerate(peers):
        lx = left + (j % 4) * (plot_w / 4)
        yy = ly + (j // 4) * 24
        out.append(f'<rect x="{lx:.1f}" y="{yy}" width="14" height="14" fill="{COLORS.get(peer, "#333")}"/>')
        out.append(f'<text x="{lx + 20:.1f}" y="{yy + 12}" font-size="12">{esc(peer)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ----- the report ----------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--chart", required=True)
    ap.add_argument("--command", default="scripts/bench-report.sh")
    args = ap.parse_args()

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = args.results
    groups = load_criterion(os.path.join(res, "criterion"))
    growth = load_json(os.path.join(res, "growth.json"), {})
    stats = load_json(os.path.join(res, "snapmap-stats.json"), {})
    timings = load_timings(os.path.join(res, "timings.txt"))
    cg = load_callgrind(res)
    quick = growth.get("mode") == "quick"

    md = []
    w = md.append

    w("# snapmap benchmarks")
    w("")
    w("<!-- Generated by scripts/bench-report.sh (scripts/bench-report.py). Do not edit by hand: re-run it. -->")
    w("")
    if quick:
        w("> **Quick mode**: tiny sizes and times; these figures say nothing about speed.")
        w("")
    w("snapmap against every peer and ceiling, **all figures from the same run** of")
    w(f"`{args.command}` (one command regenerates this file and the chart).")
    w("Absolute numbers on a shared, noisy 2-core virtual machine are not portable; the ratios")
    w("in the same run are the result.")
    w("")
    w("```sh")
    w("scripts/bench-report.sh            # the full run: BENCHMARKS.md + benches/chart.svg")
    w("scripts/bench-report.sh --quick    # the same pipeline at toy sizes (target/snapmap-bench-quick/)")
    w("SNAPMAP_BENCH_QUICK=1 cargo bench -p snapmap-benches --bench maps --bench growth --bench lookup_cost   # CI smoke run")
    w("cargo bench -p snapmap-benches --bench maps -- 'read_hit_1M/'    # one criterion group (criterion's filter)")
    w("```")
    w("")

    # --- Run and machine
    w("## The run")
    w("")
    if timings:
        total = int(timings.get("total_s", "0"))
        w(
            f"- Started {timings.get('start', '?')}; took {total // 60} min {total % 60} s in all: "
            f"criterion benches {timings.get('maps_s', '?')} s, growth/memory harness {timings.get('growth_s', '?')} s, "
            f"callgrind {timings.get('callgrind_s', '?')} s, and {timings.get('build_s', '?')} s to build the bench "
            "binaries (incremental; a cold build of the dependencies adds a few minutes). Every step ran the same "
            "executables, built once."
        )
        w(
            f"- Load average (1/5/15 min) before: {timings.get('load_before', '?')}, after: {timings.get('load_after', '?')}. "
            "The machine is shared with other engineers' builds and tests, which may run at any time and add "
            "noise (a load near 2 is this suite's own two threads); it hits the 2-thread figures most, since "
            "2 threads on 2 cores leave no core for anyone else."
        )
    for line in machine_lines(repo, timings):
        w(line)
    w("")

    # --- Summary against the goals
    w("## Against the goals")
    w("")
    w("The goals of the open issues (12: the fast core; 13: configuration reads at `atomic.Value` speed), each")
    w("checked against this run. Ratios are snapmap ÷ the other map, from the same run: **throughput** ratios")
    w("(above 1 = snapmap faster), except where marked (time, latency). 1t / 2t = threads.")
    w("")
    w("| goal | measured | met? |")
    w("|---|---|:-:|")
    goal_rows = []

    def row(goal, measured, ok):
        verdict = ok if isinstance(ok, str) else ("yes" if ok else "**no**")
        goal_rows.append(f"| {goal} | {measured} | {verdict} |")

    def vs(g, t, other, mine=SNAP):
        d = groups.get(g, {})
        a, b = d.get((mine, t)), d.get((other, t))
        return throughput(a) / throughput(b) if a and b else None

    # Issue 12: the fast core.
    for g in by_size(groups, "read_hit_"):
        if "default_hasher" in g:
            continue
        for t in ["1t", "2t"]:
            rp, rs, rc = vs(g, t, "papaya"), vs(g, t, "scc::HashIndex"), vs(g, t, "ceiling: &hashbrown::HashMap")
            if None in (rp, rs, rc):
                continue
            row(f"12 · read hit {size_of_group(g)}, {t}, handle per 1024: ≥ 1× papaya and scc::HashIndex, ≥ 0.6× the ceiling",
                f"{fmt_ratio(rp)} papaya; {fmt_ratio(rs)} scc::HashIndex; {fmt_ratio(rc)} the ceiling",
                rp >= 1 and rs >= 1 and rc >= 0.6)
            hp, hs = vs(g, t, "papaya", HUGE), vs(g, t, "scc::HashIndex", HUGE)
            if None not in (hp, hs):
                row(f"12 · read hit {size_of_group(g)}, {t}, with `huge_pages(true)` (opt-in, off by default; shown, not the goal)",
                    f"{fmt_ratio(hp)} papaya; {fmt_ratio(hs)} scc::HashIndex; {fmt_ratio(vs(g, t, SNAP, HUGE))} the default configuration", "–")
            rpo = vs(g, t, "papaya, pin per op", "snapmap, pin per op")
            if rpo is not None:
                row(f"12 · read hit {size_of_group(g)}, {t}, map-level `get` (pin per op): ≥ 1× papaya pin per op",
                    f"{fmt_ratio(rpo)}", rpo >= 1)
    if cg and cg["rows"].get(SNAP) and cg["rows"].get("ceiling: &hashbrown::HashMap"):
        s_ = cg["rows"][SNAP]["per_lookup"]
        c_ = cg["rows"]["ceiling: &hashbrown::HashMap"]["per_lookup"]
        row(f"12 · callgrind instructions per lookup ({fmt_int(cg['keys'])} keys): ≤ 1.3× the ceiling's",
            f"{s_:.1f} against {c_:.1f} ({s_ / c_:.2f}×)", s_ / c_ <= 1.3)
    for g in by_size(groups, "config_cache_"):
        for t in ["1t", "2t"]:
            rp, rs, rd = vs(g, t, "papaya"), vs(g, t, "scc::HashIndex"), vs(g, t, "dashmap")
            if None in (rp, rs, rd):
                continue
            need = 0.8 if t == "1t" else 1.0
            row(f"12 · config cache 99/1 {size_of_group(g)}, {t}: ≥ 1× papaya and scc::HashIndex, ≥ {need:g}× dashmap",
                f"{fmt_ratio(rp)} papaya; {fmt_ratio(rs)} scc::HashIndex; {fmt_ratio(rd)} dashmap",
                rp >= 1 and rs >= 1 and rd >= need)
            hp, hs, hd = vs(g, t, "papaya", HUGE), vs(g, t, "scc::HashIndex", HUGE), vs(g, t, "dashmap", HUGE)
            if None not in (hp, hs, hd):
                row(f"12 · config cache 99/1 {size_of_group(g)}, {t}, with `huge_pages(true)` (opt-in; shown, not the goal)",
                    f"{fmt_ratio(hp)} papaya; {fmt_ratio(hs)} scc::HashIndex; {fmt_ratio(hd)} dashmap", "–")
    for g in by_size(groups, "update_"):
        for t in ["1t", "2t"]:
            rp = vs(g, t, "papaya")
            if rp is not None:
                row(f"12 · updates of existing keys {size_of_group(g)}, {t}: ≥ 1× papaya", f"{fmt_ratio(rp)} papaya", rp >= 1)
            hp = vs(g, t, "papaya", HUGE)
            if hp is not None:
                row(f"12 · updates of existing keys {size_of_group(g)}, {t}, with `huge_pages(true)` (opt-in; shown, not the goal)",
                    f"{fmt_ratio(hp)} papaya", "–")
    for g in by_size(groups, "iter_"):
        d = groups[g]
        snap, pap, dash = d.get((SNAP, "1t")), d.get(("papaya", "1t")), d.get(("dashmap", "1t"))
        a = alloc_lookup(growth, SNAP, "iteration pass")
        allocs = a["allocs_per_op"] if a else None
        if snap and pap and dash:
            rp, rd = pap["ns"] / snap["ns"], dash["ns"] / snap["ns"]
            row(f"12 · live iteration `pin().iter()` {size_of_group(g)}: at least as fast as papaya and dashmap, 0 allocations",
                f"papaya's time ÷ snapmap's {fmt_ratio(rp)}; dashmap's {fmt_ratio(rd)}; "
                f"{fmt_num(allocs) if allocs is not None else 'n/a'} allocations per pass",
                rp >= 1 and rd >= 1 and allocs == 0)
    heap = {r["map"]: r for r in growth.get("heap", [])}
    ins = alloc_lookup(growth, SNAP, "insert (new key)")
    if SNAP in heap:
        b = heap[SNAP]["bytes_per_entry"]
        row(f"12 · memory: ≤ 40 heap bytes per `u64 -> u64` entry at {fmt_int(heap[SNAP]['entries'])}",
            f"{fmt_num(b)} bytes per entry", b <= 40)
    if ins:
        row("12 · ≤ 1.1 allocations per new key", f"{fmt_num(ins['allocs_per_op'])}", ins["allocs_per_op"] <= 1.1)
    for mix in ["Exchange", "RapidGrow"]:
        if mix not in groups:
            continue
        for t in ["1t", "2t"]:
            bp = best_peer(groups, mix, t)
            if not bp or (SNAP, t) not in groups[mix]:
                continue
            r = throughput(groups[mix][(SNAP, t)]) / throughput(bp[1])
            row(f"12 · no regression: {mix} {t} (the read/dirty design's weak spot; compare with the last report)",
                f"{fmt_ratio(r)} the best peer ({md_name(bp[0])})", "–")
    # Issue 13: configuration reads at atomic.Value speed.
    for g in by_size(groups, "read_hit_"):
        if "default_hasher" in g:
            continue
        for t in ["1t", "2t"]:
            r = vs(g, t, "ArcSwap<HashMap> (COW)", "snapmap reader handle")
            if r is not None:
                row(f"13 · reader handle {size_of_group(g)}, {t}: ≥ 0.9× `ArcSwap<HashMap>` (load per 1024 + get)",
                    f"{fmt_ratio(r)}", r >= 0.9)
            r = vs(g, t, "ArcSwap<HashMap>, Cache per get", "snapmap reader handle")
            if r is not None:
                row(f"13 · reader handle {size_of_group(g)}, {t}, like for like: against `ArcSwap<HashMap>` "
                    "read through an `arc_swap::Cache` checked on every lookup, as the handle is (shown, not the goal)",
                    f"{fmt_ratio(r)}", "–")
            r = vs(g, t, "ArcSwap<HashMap>, load per get", "snapmap reader handle")
            if r is not None:
                row(f"13 · reader handle {size_of_group(g)}, {t}, against `ArcSwap<HashMap>` with a `load()` per "
                    "lookup (arc-swap's usual read; the goal's \"load + get\" read per lookup; shown, not the goal)",
                    f"{fmt_ratio(r)}", "–")
    for g in by_size(groups, "iter_"):
        d = groups[g]
        sn, vec = d.get(("snapmap snapshot", "1t")), d.get(("ceiling: Vec<(u64, u64)> walk", "1t"))
        if sn and vec:
            r = sn["ns"] / vec["ns"]
            row(f"13 · snapshot iteration {size_of_group(g)}: within 1.5× a `Vec<(K, V)>` walk",
                f"{r:.2f}× the walk's time", r <= 1.5)
    for g in by_size(groups, "snapshot_"):
        d = groups[g]
        up, un, cow = d.get((SNAP, "after 1 update")), d.get((SNAP, "unchanged")), d.get(("ArcSwap<HashMap> (COW)", "unchanged"))
        if up:
            row(f"13 · snapshot after 1 update to {size_of_group(g)} keys: ≤ 50 µs", f"{fmt_us(up['ns'])}", up["ns"] <= 50_000)
        if un and cow:
            r = un["ns"] / cow["ns"]
            row("13 · unchanged `snapshot()`: ≤ 2× `ArcSwap::load_full`",
                f"{fmt_us(un['ns'])} against {fmt_us(cow['ns'])} ({r:.2f}×)", r <= 2)
    for g in by_size(groups, "reload_"):
        d = groups[g]
        for kind in sorted({v for _, v in d}):
            snap, cow, rw = d.get((RELOAD, kind)), d.get((COW, kind)), d.get(("RwLock<HashMap>", kind))
            if snap and cow:
                also = f"; `RwLock<HashMap>` {fmt_us(rw['ns'])}" if rw else ""
                row(f"13 · reload of {size_of_group(g)} keys, {kind}, made visible to readers: `replace_all` + "
                    "`snapshot()` against `ArcSwap<HashMap>` (a new map stored); shown, no numeric goal (time)",
                    f"{fmt_us(snap['ns'])} against {fmt_us(cow['ns'])} ({snap['ns'] / cow['ns']:.2f}× ArcSwap's time){also}",
                    "–")
    lat = growth_summary(growth)
    for workload, maps in lat.items():
        s, d = maps.get(SNAP), maps.get("dashmap")
        if s and d:
            r = s["max"] / d["max"]
            work = ""
            met = "yes" if r <= 0.1 else "**no**"
            if s.get("work_max") and d.get("work_max"):
                rw = s["work_max"] / d["work_max"]
                floor = maps.get(NOISE, {}).get("work_max")
                floor_txt = f"; this machine's own floor (no map) {fmt_us(floor)}" if floor else ""
                work = (f"; the map's own work, min(wall, CPU) per insert, median of the runs' maxima: "
                        f"{fmt_ratio(rw)} ({fmt_us(s['work_max'])} vs {fmt_us(d['work_max'])}{floor_txt})")
                if r > 0.1:
                    met = ("by the map's own work: " + ("yes" if rw <= 0.1 else "**no**") +
                           "; by wall time: **no**")
            goal_rows.append(
                f"| rapid growth to {fmt_int(growth_inserts(growth))} keys ({workload}), 2t: max insert latency ≤ 1/10 of dashmap's | "
                f"snapmap ÷ dashmap max latency, wall time (median of the runs' maxima) = {fmt_ratio(r)} "
                f"({fmt_us(s['max'])} vs {fmt_us(d['max'])}; p99.99 {fmt_us(s['p9999'])} vs {fmt_us(d['p9999'])}){work} | {met} |"
            )
    for r in goal_rows:
        w(r)
    w("")
    if by_size(groups, "snapshot_"):
        w("Snapshots (`map.snapshot()`, docs/ARCHITECTURE.md, \"Snapshots\") are measured in "
          "[Snapshots](#snapshots); snapshot reads and iteration appear as the `snapmap snapshot` rows, reads "
          "through a reader handle (`map.reader()`) as the `snapmap reader handle` rows.")
    else:
        w("Snapshot workloads: **not measured — snapmap has no snapshot API in this build**.")
    w("")

    # --- Chart
    chart_rel = os.path.relpath(os.path.abspath(args.chart), os.path.dirname(os.path.abspath(args.markdown)))
    panels = []
    def panel(group, thread, title):
        d = groups.get(group)
        if not d or (SNAP, thread) not in d:
            return
        s = throughput(d[(SNAP, thread)])
        ratios = {n: throughput(e) / s for (n, t), e in d.items() if t == thread and not is_snap(n)}
        panels.append((title, ratios))
    for g in by_size(groups, "read_hit_"):
        panel(g, "1t", f"read hit {size_of_group(g)}\n1t")
        panel(g, "2t", f"read hit {size_of_group(g)}\n2t")
    for g in by_size(groups, "config_cache_")[-1:]:
        panel(g, "2t", f"config cache\n{size_of_group(g)} 2t")
    for g in by_size(groups, "update_"):
        panel(g, "2t", f"updates\n{size_of_group(g)} 2t")
    for g in by_size(groups, "iter_"):
        panel(g, "1t", f"iteration\n{size_of_group(g)}")
    for mix in ["ReadHeavy", "Exchange", "RapidGrow"]:
        panel(mix, "2t", f"{mix}\n2t")
    peers = [p for p in ORDER if p in COLORS and any(p in r for _, r in panels)]
    os.makedirs(os.path.dirname(os.path.abspath(args.chart)), exist_ok=True)
    with open(args.chart, "w") as f:
        f.write(chart_svg(panels, peers))
    w(f"![Each peer's throughput relative to snapmap, per workload]({chart_rel})")
    w("")

    # --- Method
    w("## Method")
    w("")
    w("- **Same code for every map.** `peers/src/lib.rs` (the `snapmap-peers` workspace member, which `snapmap-benches` re-exports and the config_cache example runs too) defines one small trait (`get`, `insert`, `remove`, "
      "`update`, `iter_sum`) and implements it for each map; every workload is one generic function.")
    w("- **Same hasher.** Every map gets `foldhash::fast::FixedState` (seed 0), so the hasher is not what is "
      "measured; the `read_hit_*_default_hasher` group gives each map its own default hasher instead "
      "(SipHash-1-3 `RandomState` for all of them, snapmap's `DefaultHashBuilder` included).")
    w("- **Keys.** `u64` keys and values; keys come from a bijective mixer (SplitMix64's finaliser) of "
      "`thread << 40 | index`, so there are no duplicates; every key stream is precomputed per thread "
      "before timing starts, so key generation is not timed.")
    w("- **Guards as a real user holds them.** snapmap's `Pinned` handle, papaya's guard, scc's `Guard` and "
      "arc-swap's `load()` are taken once per batch of 1024 operations. The per-operation variants are measured "
      "too: `snapmap, pin per op` (`map.get(&k)`: pins per call, clones the value) and `papaya, pin per op` "
      "(`map.pin().get(&k)`). dashmap, scc::HashMap and `RwLock` lock per operation (that is their API).")
    w("- **Peers.** dashmap 6 (default shard count: 4 × CPUs rounded up = 8 here), papaya (default incremental "
      "resize), scc `HashMap` (`read_sync`, bucket reader lock) and `HashIndex` (`peek`, lock-free), "
      "`parking_lot::RwLock<hashbrown::HashMap>`, and `ArcSwap<hashbrown::HashMap>` copy-on-write (every write "
      "copies the map with `rcu`, so it runs only where writes are rare: reads, the 10K config cache, iteration). "
      "**Ceilings:** an unsynchronised `&hashbrown::HashMap` shared by reference (lookups), a "
      "`Vec<(u64, u64)>` walk (iteration).")
    w("- **snapmap's configuration.** `snapmap` is the default configuration (initial shards "
      "`DEFAULT_SHARDS`, `DEFAULT_SHARD_CAPACITY` entries per shard before it splits; shards split and merge "
      "as the map grows and shrinks). `snapmap (shard_capacity 4096)` is the same with 8× larger shards "
      "(fewer shards, fewer splits, larger dirty rebuilds). `snapmap (huge_pages)` is the default with "
      "`Builder::huge_pages(true)`, off by default: its read views, once the process's views hold 8 MiB, come "
      "from 2 MiB regions advised for transparent huge pages (`src/arena.rs`), so that a lookup in a large map "
      "does not walk the page table; the kernel faults each new region in on the insert that writes into it "
      "first (see the growth table).")
    w("- **Threads.** 1 and 2 threads (the machine has 2 cores; more would oversubscribe it, so there are none). "
      "Threads start together at a barrier; a measurement is the span from the first thread's start to the last "
      "thread's end, so thread start-up is not timed (criterion's `iter_custom`). Throughput is the aggregate over "
      "threads.")
    w("- **Statistics.** Each figure is criterion's median; ratios divide medians from the same run. Read groups: "
      "15 samples over ~1.8 s; iteration: 10 samples over ~2.5 s; the mixes: 10 flat samples, each one whole run "
      "on a fresh map. Raw criterion output (with confidence intervals) is in "
      f"`{os.path.relpath(os.path.abspath(res), repo)}/criterion/`.")
    w("- **Before timing, every map is settled:** after the bulk insert, one untimed read pass over the keys and "
      "one iteration (warm caches for all maps; for snapmap this is what promotes the keys a bulk load left in "
      "the dirty tables, as Go's `sync.Map` does after `len(dirty)` misses; the `snapmap snapshot` and "
      "`snapmap reader handle` rows read the snapshot, so their map is settled by an iteration before the "
      "snapshot is taken). ReadHeavy is also reported for "
      "snapmap *without* that pass (`snapmap, no read pass after prefill`), which is what a reader sees right "
      "after a bulk load. After building a map and after dropping one, the epoch garbage is flushed (untimed), "
      "so that no map's reclamation work lands in another map's timed run.")
    w("- **conc-map-bench mixes** (bustle's `Mix`, without upserts): ReadHeavy 98/1/1/0 and Exchange "
      "10/40/40/10 with a 75 % prefill, RapidGrow 5/80/5/10 without; capacity "
      f"2^{mix_cap(groups)} (prefill 0.75 × capacity, then capacity operations split over the threads). Each thread "
      "works on its own key space: inserts are fresh keys, removes take the thread's oldest key, reads and "
      "updates hit a random present key. One criterion iteration is a whole run on a fresh map (prefill and "
      "read pass untimed).")
    w("")

    # --- Per-workload tables
    w("## Results by workload")
    w("")
    w("Mops/s = millions of operations per second, aggregate over threads. **vs snapmap** = the map's "
      "throughput ÷ snapmap's in the same run and thread count (below 1: slower than snapmap; above 1: faster).")
    w("")
    sections = []
    for g in by_size(groups, "read_hit_"):
        sections.append((g, f"Read hit, {size_of_group(g)} keys (foldhash)",
                         "Lookups of present keys, uniformly random.", "read"))
    for g in by_size(groups, "read_hit_", "_default_hasher"):
        sections.append((g, f"Read hit, {size_of_group(g)} keys, each map's default hasher",
                         "As above with each map's default (SipHash-1-3) hasher; the ceiling uses std's `RandomState`.", "read"))
    for g in by_size(groups, "config_cache_"):
        sections.append((g, f"Config cache, {size_of_group(g)} keys: 99 % reads, 1 % updates of existing keys",
                         "Updates are `update(k, v + 1)` (snapmap, papaya: a new value node; dashmap, scc::HashMap, "
                         "RwLock: in place under a lock; scc::HashIndex: a new entry; ArcSwap: a copy of the map).", "read"))
    for g in by_size(groups, "update_"):
        sections.append((g, f"Updates of existing keys, {size_of_group(g)} keys (100 %)", "", "update (existing key)"))
    for g, title, desc, aop in sections:
        w(f"### {title}")
        w("")
        if desc:
            w(desc)
            w("")
        w(f"Criterion group `{g}`.")
        w("")
        for line in thread_table(groups, g, growth, aop):
            w(line)
        w("")

    for g in by_size(groups, "iter_"):
        w(f"### Full iteration, {size_of_group(g)} entries (one thread)")
        w("")
        w("One pass over every entry, touching key and value. **vs snapmap** here is the other map's time ÷ "
          "snapmap's time per pass (above 1: snapmap is faster).")
        w("")
        w("| map | ms per pass | M entries/s | vs snapmap (time) | allocations per pass |")
        w("|---|---:|---:|---:|---:|")
        d = groups[g]
        snap = d.get((SNAP, "1t"))
        for (name, t) in sorted(d, key=lambda k: order_key(k[0])):
            e = d[(name, t)]
            a = alloc_lookup(growth, name.replace("ceiling: Vec<(u64, u64)> walk", "Vec<(u64, u64)>"), "iteration pass")
            ratio = e["ns"] / snap["ns"] if snap else None
            w(f"| {md_name(name)} | {fmt_num(e['ns'] / 1e6)} | {fmt_num(throughput(e) / 1e6)} | {fmt_ratio(ratio)} | "
              f"{fmt_num(a['allocs_per_op']) if a else 'n/a'} |")
        w("")

    for mix, desc in [
        ("ReadHeavy", "98 % reads, 1 % inserts, 1 % removes; 75 % prefill."),
        ("Exchange", "10 % reads, 40 % inserts, 40 % removes, 10 % updates; 75 % prefill."),
        ("RapidGrow", "5 % reads, 80 % inserts, 5 % removes, 10 % updates; no prefill."),
    ]:
        if mix not in groups:
            continue
        w(f"### {mix} (conc-map-bench)")
        w("")
        w(desc)
        w("")
        for line in thread_table(groups, mix, growth):
            w(line)
        w("")
        rows = [(k, v) for k, v in stats.items() if k.startswith(mix + "/")]
        if rows:
            w("snapmap's `stats()` after the last run of each (one run = prefill + operations):")
            w("")
            w("| run | shards | slow-path lookups | promotions | dirty rebuilds | entries copied | max copied by one op | splits | merges |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for k, v in rows:
                f = stat_fields(v)
                w(f"| {md_name(k.split('/', 1)[1])} | {f.get('shards', '?')} | {f.get('slow-path lookups', '?')} | "
                  f"{f.get('promotions', '?')} | {f.get('dirty rebuilds', '?')} | {f.get('entries copied', '?')} | "
                  f"{f.get('max', '?')} | {f.get('splits', '?')} | {f.get('merges', '?')} |")
            w("")

    # --- Snapshots
    for g in by_size(groups, "snapshot_"):
        w("## Snapshots")
        w("")
        w(f"Taking a consistent, point-in-time copy of a map of {size_of_group(g)} entries (criterion group `{g}`). "
          "snapmap's `snapshot()` returns the cached snapshot when nothing changed (an `Arc` clone) and otherwise "
          "copies only the shards whose version changed, sharing the rest. The peers that can give a consistent "
          "copy: `ArcSwap::load_full()` (O(1), because every write already copied the whole map) and "
          "`RwLock<HashMap>::read().clone()` (an O(n) copy under the read lock). dashmap, papaya and scc have no "
          "point-in-time copy (their iterators and clones walk shard by shard or bucket by bucket). "
          "*after 1 update*: one key is updated before each snapshot, and the update is timed with it (for "
          "ArcSwap the update is itself the whole-map copy).")
        w("")
        d = groups[g]
        kinds = sorted({v for _, v in d}, key=lambda k: (k != "unchanged", k))
        time_table(w, d, kinds, SNAP, "time per snapshot", "vs snapmap (time)")
        rows = [r for r in growth.get("allocs", []) if r["op"].startswith("snapshot (")]
        if rows:
            w("What a snapshot allocates (counting allocator, `benches/growth.rs`):")
            w("")
            w("| snapshot | allocations | bytes allocated |")
            w("|---|---:|---:|")
            for r in rows:
                w(f"| {r['op'][len('snapshot ('):-1]} | {fmt_int(r['allocs_per_op'])} | {fmt_int(r['bytes_per_op'])} |")
            w("")
        w("Reads and iteration through a snapshot are the `snapmap snapshot` rows of the read-hit and iteration "
          "tables above (the snapshot's pieces are contiguous `(K, V)` arrays grouped by bucket, with a 16-byte "
          "head per bucket; a lookup indexes a slot table by the hash's top bits, as the map's directory does, "
          "then loads the bucket's head and the entry).")
        w("")
    storm = growth.get("storm", [])
    if storm:
        w("### Writers during a storm of snapshots")
        w("")
        w(f"One writer updates existing keys of a {fmt_int(heap_entries(growth))}-key map, an `Instant` around every "
          "update; in the second row another thread takes snapshots back to back, each after the writer's latest "
          "update (`benches/growth.rs`, section `storm`; both rows from the same run). A build closes the write "
          "gate only for its cut (waiting for the writes in progress and listing the shards); while it copies, "
          "the writer's first write to each shard not yet captured captures it first, by pointer (copy before "
          "write, `src/snapshot/mod.rs`). Nobody waits for threads that hold snapshots.")
        w("")
        w("| case | snapshots taken | p50 | p99 | p99.9 | max |")
        w("|---|---:|---:|---:|---:|---:|")
        for r in storm:
            w(f"| {r['case']} | {fmt_int(r['snapshots'])} | {fmt_us(r['p50_ns'])} | {fmt_us(r['p99_ns'])} | "
              f"{fmt_us(r['p999_ns'])} | {fmt_us(r['max_ns'])} |")
        w("")
        w("The writer's p99 and p99.9 during the storm are its captures: its first write to each shard in each "
          "build first records pointers to the shard's live keys and values (about 430 entries, each a cache miss "
          "away). Before copy before write (commit 27de728 and earlier), a build copied optimistically and then "
          "re-copied, with the gate closed, every shard that changed meanwhile; under this writer those passes "
          "did not converge and the gate stayed closed for 65-110 ms in some runs (4 of about 20; p99 3.3 µs "
          "otherwise). Six runs of this section with pointer captures (`cargo bench -p snapmap-benches --bench growth -- storm`): "
          "longest wait 0.19-0.72 ms in five, 2.9 ms in one (this VM pauses for 3-8 ms at times, whatever "
          "runs: an empty timed loop shows it, also at real-time priority); p99 16-26 µs. Capturing by cloning "
          "instead of by pointer (an intermediate version) gave p99 42-50 µs.")
        w("")

    # --- Reloads
    for g in by_size(groups, "reload_"):
        w(f"## Reload, {size_of_group(g)} keys")
        w("")
        w(f"One reload of the whole content (criterion group `{g}`, issue 13), the new content prepared "
          "outside the timed part and the change made visible to readers: snapmap's `replace_all(content)` "
          "(a diff against the map that writes only what changed, as one batch) and the next `snapshot()` "
          "(what a reader handle's refresh waits for; the shards holding no changed key are shared with the "
          "last snapshot); snapmap's `apply` of a batch of the changed keys only (for a user who knows the "
          "diff) and the next `snapshot()`; `ArcSwap<HashMap>` building a new map from the content and "
          "storing it; `RwLock<HashMap>` building one and swapping it in under the write lock (applying the "
          "diff under the lock instead needs a table of the content to find the removed keys, so it is no "
          "cheaper). Iterations alternate between two contents, so each starts from the same state. "
          "**vs ArcSwap** = the row's time ÷ `ArcSwap<HashMap>`'s (below 1: faster).")
        w("")
        d = groups[g]
        kinds = sorted({v for _, v in d})
        time_table(w, d, kinds, COW, "time per reload", "vs ArcSwap (time)")

    # --- Allocations and memory
    w("## Allocations per operation")
    w("")
    w("Counted by a global allocator in `benches/growth.rs` (only there: the criterion benches run on the plain "
      f"system allocator), on a map of {fmt_int(heap_entries(growth))} entries, {fmt_int(alloc_ops(growth))} operations "
      "each (ArcSwap writes: 10). Inserts are of new keys and include the map's growth (resizes, splits, rebuilds), "
      "amortised. Bytes are requested sizes.")
    w("")
    ops = ["read", "iteration pass", "update (existing key)", "insert (new key)"]
    w("| map | " + " | ".join(f"allocs per {o}" for o in ops) + " | bytes per update | bytes per insert |")
    w("|---|" + "---:|" * (len(ops) + 2))
    names = sorted({r["map"] for r in growth.get("allocs", [])}, key=order_key)
    for name in names:
        cells = []
        for o in ops:
            a = alloc_lookup(growth, name, o)
            cells.append(fmt_num(a["allocs_per_op"]) if a else "–")
        for o in ["update (existing key)", "insert (new key)"]:
            a = alloc_lookup(growth, name, o)
            cells.append(fmt_num(a["bytes_per_op"]) if a else "–")
        w(f"| {md_name(name)} | " + " | ".join(cells) + " |")
    w("")

    w("## Heap bytes per entry")
    w("")
    w(f"Bytes live after building the map with {fmt_int(heap_entries(growth))} `u64 → u64` entries from one thread "
      "and settling it (read pass, iteration, epoch flushed), minus bytes live before, ÷ entries. "
      "Includes the tables' free slots. papaya's and scc's retired tables may still be pending in their own "
      "collectors (not forced).")
    w("")
    w("| map | heap bytes per entry | vs snapmap | allocations while building |")
    w("|---|---:|---:|---:|")
    heap = {r["map"]: r for r in growth.get("heap", [])}
    snap_heap = heap.get(SNAP)
    seen = set()
    for name in sorted(heap, key=order_key):
        r = heap[name]
        if name == "snapmap, pin per op" or name == "papaya, pin per op":
            continue  # same map as the row above
        if name == "snapmap snapshot":
            name_note = " (the map plus one snapshot of it)"
        else:
            name_note = ""
        seen.add(name)
        ratio = r["bytes_per_entry"] / snap_heap["bytes_per_entry"] if snap_heap else None
        pending = f" ({fmt_int(r['retired_pending'])} B retired, not yet freed)" if r.get("retired_pending") else ""
        w(f"| {md_name(name)}{name_note} | {fmt_num(r['bytes_per_entry'])}{pending} | {fmt_ratio(ratio)} | "
          f"{fmt_int(r['build_allocs']) if r.get('build_allocs') is not None else 'n/a'} |")
    w("")

    # --- Growth latency
    w("## Per-insert latency during rapid growth")
    w("")
    w(f"Two threads insert until the map holds {fmt_int(growth_inserts(growth))} keys, an `Instant` around every "
      "insert (its ~20-40 ns overhead is in every figure). *insert-only*: nothing but fresh keys; *RapidGrow*: "
      "conc-map-bench's 5/80/5/10 mix, latency of its inserts (its reads of not-yet-promoted keys are what "
      "trigger snapmap's promotions, and so its dirty rebuilds). Several runs; each figure is the median of the "
      "runs' percentiles; *worst max* is the largest over the runs. The maximum on a shared 2-core VM "
      "includes preemption by the scheduler (milliseconds, in 4 ms ticks), for every map alike: read p99.9 / "
      "p99.99 for the map's own behaviour, and the *work* columns for its worst single insert.")
    w("")
    w("| workload | map | p50 | p99 | p99.9 | p99.99 | max (median) | worst max | max vs snapmap | CPU p99.9 | CPU max | work max (median) | work max per run | wall time |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for workload, maps in lat.items():
        s = maps.get(SNAP)
        for name in sorted(maps, key=lambda n: (n == NOISE, order_key(n))):
            r = maps[name]
            ratio = r["max"] / s["max"] if s else None
            per_run = ", ".join(fmt_us(x) for x in r.get("work_maxes", []))
            w(f"| {workload} | {md_name(name)} | {fmt_us(r['p50'])} | {fmt_us(r['p99'])} | {fmt_us(r['p999'])} | "
              f"{fmt_us(r['p9999'])} | {fmt_us(r['max'])} | {fmt_us(r['worst_max'])} | {fmt_ratio(ratio)} | "
              f"{fmt_us(r.get('cpu_p999'))} | {fmt_us(r.get('cpu_max'))} | {fmt_us(r.get('work_max'))} | {per_run} | "
              f"{fmt_num(r['wall_s'] * 1e3)} ms |")
    w("")
    w("*CPU* and *work* columns: separate runs of the same workload that time each insert with the thread's CPU "
      "clock (`CLOCK_THREAD_CPUTIME_ID`) as well as `Instant`. CPU time stops while the thread is preempted or "
      "parked on a lock, but on this VM it sometimes jumps by a millisecond or more with no wall time passing; "
      "the *work* of an insert is the smaller of its wall and CPU times, which removes both kinds of noise unless "
      "they hit the same insert. *work max* is the median over the runs of each run's largest work; the per-run "
      "values show the spread. The *noise floor* row times an empty section instead of an insert, in the same "
      "threads and loop: what the machine alone adds. The clocks cost two system calls per insert, so the "
      "CPU p99.9 is inflated.")
    w("")
    snap_stats = [(wk, maps[SNAP].get("stats")) for wk, maps in lat.items() if SNAP in maps and maps[SNAP].get("stats")]
    if snap_stats:
        w("snapmap's `stats()` after the growth runs (last repetition):")
        w("")
        for wk, s in snap_stats:
            w(f"- {wk}: `{s}`")
        w("")

    # --- Callgrind
    w("## Instructions per lookup (callgrind)")
    w("")
    if cg and cg["rows"]:
        w(f"`valgrind --tool=callgrind` on `benches/lookup_cost.rs`: a map of {fmt_int(cg['keys'])} keys, "
          f"{fmt_int(cg['lookups'])} read hits through the same loop as the criterion read benches (handle re-taken "
          "every 1024 lookups), minus the same program with 0 lookups, ÷ lookups. Instruction counts do not "
          "depend on the machine's load, unlike the timings; they include the bench loop and hashing (foldhash), "
          "the same for every map, and do not see cache misses (which dominate at 1M keys).")
        w("")
        w("| map | instructions per lookup | vs snapmap |")
        w("|---|---:|---:|")
        snap_cg = cg["rows"].get(SNAP)
        for name in sorted(cg["rows"], key=order_key):
            r = cg["rows"][name]
            ratio = r["per_lookup"] / snap_cg["per_lookup"] if snap_cg else None
            w(f"| {md_name(name)} | {r['per_lookup']:.1f} | {fmt_ratio(ratio)} |")
        w("")
        for name in [SNAP, "ceiling: &hashbrown::HashMap"]:
            r = cg["rows"].get(name)
            if not r:
                continue
            parts = breakdown(res, r["file"], cg["lookups"])
            if parts:
                w(f"Where {md_name(name)}'s instructions per lookup go (self cost by source file, N-lookup profile "
                  "minus the 0-lookup profile; inlined code counts where it was written):")
                w("")
                w("| source | instructions per lookup |")
                w("|---|---:|")
                for label, v in parts:
                    w(f"| `{label}` | {v:.1f} |")
                w("")
    else:
        w("Not measured in this run (valgrind missing).")
        w("")

    # --- Losses
    w("## Where snapmap loses, and why")
    w("")
    losses = []
    for g in sorted(groups, key=lambda x: x):
        for (name, t), e in groups[g].items():
            if not is_peer(name) or (SNAP, t) not in groups[g]:
                continue
            s = groups[g][(SNAP, t)]
            r = throughput(s) / throughput(e)
            if r < 1:
                losses.append((g, t, name, r))
    if losses:
        w("Every workload and thread count where a peer beat snapmap's default configuration in this run "
          "(snapmap ÷ peer throughput):")
        w("")
        by_g = defaultdict(list)
        for g, t, name, r in losses:
            by_g[(g, t)].append((name, r))
        for (g, t), items in sorted(by_g.items()):
            items.sort(key=lambda x: x[1])
            w(f"- `{g}` {t}: " + ", ".join(f"{md_name(n)} ({fmt_ratio(r)})" for n, r in items))
        w("")
    w("Why, from the design and the figures above:")
    w("")
    facts = why_facts(groups, growth, cg, lat)
    w("- **A read hit costs more dependent loads than a flat table.** The ceiling hashes, loads a control group "
      "and compares the key stored inline in the bucket: two dependent loads. snapmap loads the directory "
      "table's header and slot (one allocation), the shard's head (the read-view word, packed with the other "
      "shards' heads), then the view's slots, each holding the hash, the key and, for a value that needs no "
      "drop, the value itself (otherwise a pointer to a value node, one load more), compared a group of four "
      "at a time: four or five dependent loads, one or two of which miss the cache on a 1M-key map. In a map of "
      "about half a million keys and more, a hit branches on its home slot first, so the processor predicts a "
      "hit there and compares the key before the rest of the group (two or three cache lines) arrives; below "
      "that size the group is chosen without branches, whose mispredictions would cost more than the wait "
      "(`src/shard/read_view.rs`, \"Speculative probing\"). "
      + facts.get("lookup", "")
      + "Peers that keep the value inline (scc::HashIndex, ArcSwap<HashMap>, dashmap's shard tables) pay fewer "
      "misses; peers that lock per read (dashmap, scc::HashMap, RwLock) pay an atomic read-modify-write on a "
      "shared line instead.")
    w("- **Iteration streams sparse 32-byte slots.** A shard's read view holds its entries in its slots (32 "
      "bytes each for `u64 -> u64`, about half of them used at 1M keys), and the walk streams through them "
      "shard by shard, where a `HashMap<u64, u64>` streams through 16-byte buckets 87.5 % full. It allocates "
      "nothing, and a `fold` (what `sum` and `for_each` call) walks each shard's slots in a loop of its own. "
      "Each view is a block of its own and the hardware's stream prefetcher stops at every 4 KiB page, so the "
      "walk asks for the slot 64 ahead of the one it reads (2 KiB; without it the same pass took about 1.5× "
      "as long, `docs/ARCHITECTURE.md` section 3). "
      + facts.get("iter_papaya", "")
      + facts.get("iter", "")
      + "A snapshot is the fast way to walk the map: its pieces are contiguous arrays.")
    w("- **Every update takes a new value node and goes through the write gate.** An update of an existing key is "
      "the read path above, then a new value node (from the thread's cache of nodes the epoch has released, "
      "`src/pool.rs`, or one allocation when that cache is empty), a CAS, and the old node retired through the "
      "epoch; every "
      "write also passes the snapshot write gate (a plain store to its thread's own stripe and a fence on "
      "entering, a plain store on leaving), bumps its shard's version and lists the shard for the next snapshot once per "
      "cycle. dashmap, scc::HashMap and "
      "`RwLock` update the value in place under a lock they already had to take. "
      + facts.get("update", "")
      + "A profile (`perf`) of the update loop puts the time in the chain of dependent cache misses (shard head, view "
      "slot, old value), not in the allocation or the gate: with the fence also taken "
      "out of the gate (a measurement only, not sound) an update at 1M keys took as long (docs/ARCHITECTURE.md, "
      "section 4); the value's CAS, which papaya pays too, stays.")
    w("- **New keys take a lock, and churn is the weak spot.** Every new key takes its shard's lock and costs an "
      "allocation (the entry, with the value inline where it can be); lookups and removes of keys not yet promoted take the "
      "lock again and count misses; each promotion seals every entry and moves it into the new view's slots (and "
      "retires the new keys' heap entries), and makes the next new key copy the shard into a fresh dirty table; "
      "a shard that passes its capacity splits (another move), and both halves start promoted, so the next new key "
      "in each half copies it once more. The 32-byte slots also make a new key's first probe of the view (a miss, "
      "by definition) likelier to leave the cache. "
      + facts.get("copies", "")
      + "The same copy shows in ReadHeavy (98 % reads): with every shard promoted by the read pass before the timed "
      "run, each shard's first new key copies its ~384 entries into a dirty table (1,021 rebuilds, 391,000 entries "
      "copied for 5,200 inserts at 1 thread, about 8 µs each); skipping the copy in the timed phase (a measurement, "
      "not sound) made it about an eighth faster (50.3–53.3 → 44.2–46.2 ns per operation in a scratch driver; "
      "papaya 21.8–24). The rest is the hits, in views three quarters full (384 entries in 512 slots), and the "
      "writes themselves (docs/ARCHITECTURE.md, section 1). "
      "dashmap, papaya and scc are built for that; snapmap's sync.Map design is built for reads (Exchange and "
      "RapidGrow are reported, not goals).")
    w("- **Freeing retired views and shards costs a walk of a view at most, on whichever thread collects.** A "
      "view owns the keys and values of its slots that were not moved into a newer view, and its drop walks "
      "its slots once (sequentially) to find them; heap entries leave in one batch per promotion or migration. crossbeam-epoch frees up "
      "to 8 bags of garbage in one collection, on whatever thread triggers it; snapmap hands over a bag once "
      "its weight (one per retirement plus one per KiB) reaches 32, so one collection frees a bounded amount. "
      "(Before both changes, tables held `Arc<Entry>`, dropping a view cost one cache-missing decrement per "
      "entry, and a bag could hold 64 retired shards: single inserts paused 2-5 ms in collections.) "
      + facts.get("cpu", "")
      + "The criterion benches flush the epoch between phases (untimed) so that one map's garbage is not charged "
      "to the next map's reads; the growth harness does not, because there it is part of growing. (In a first "
      "run without that flush, the garbage of building a 1M-entry map landed in a reader's warm-up and stalled it "
      "for hundreds of milliseconds.)")
    w("- **Snapshots: fast to walk, two loads to probe, O(changed shards) to rebuild.** Iterating a snapshot is "
      "a slice walk. A lookup indexes the snapshot's slot table by the hash's top bits (the slot holds the "
      "piece's bucket heads and mask), loads the bucket's 16-byte head (its first entry's address and 8 tag "
      "bytes, one SSE2 compare) and then the entry: "
      + facts.get("snapshot_get", "")
      + "A reader handle adds one load and a compare of the map's change word per lookup. It stays behind "
      "`ArcSwap<HashMap>`, whose readers make one probe of one flat table and check for a new map once per "
      "1,024 lookups. "
      + facts.get("reader_cache", "")
      + "A snapshot after a single update copies the one changed shard, the slot table "
      "(pointers) and the chunk of 64 piece references holding it, and touches no other shard (the list of "
      "changed shards): "
      + facts.get("snapshot_build", "")
      + "The peers that can give a consistent copy pay a whole-map copy per write instead.")
    heap_rows = {r["map"]: r for r in growth.get("heap", [])}
    hs, hc = heap_rows.get(SNAP), heap_rows.get("ceiling: &hashbrown::HashMap")
    ws = (f"about {hs['bytes_per_entry'] * hs['entries'] / 1e6:.0f} MB" if hs and hs.get("bytes_per_entry") else "tens of MB")
    wc = (f"about {hc['bytes_per_entry'] * hc['entries'] / 1e6:.0f} MB" if hc and hc.get("bytes_per_entry") else "less")
    w(f"- **Working set.** At 1M entries snapmap's data ({ws}, in one view per shard) is larger than the "
      f"inline tables of the hashbrown-based maps ({wc}, of which the control bytes and buckets probed by a "
      "lookup are contiguous): each dependent load is more likely to leave the L2 cache, and to need a page "
      "walk: 68 MB of views in 4 KiB pages are some 17,000 pages, far beyond the TLB's reach. "
      "`Builder::huge_pages(true)` (the `snapmap (huge_pages)` rows) puts the views in 2 MiB pages and takes "
      "the page walks away; it is off by default because of what it costs: an insert that writes the first view "
      "into a new 2 MiB region waits for the kernel to fault in a huge page (the growth table's `snapmap "
      "(huge_pages)` rows: several milliseconds when the kernel must compact memory first), and a region stays "
      "while one view in it lives, so a map built by growing holds the views it outgrew in part (the heap table's "
      "row).")
    w("- **Right after a bulk load**, keys are only in the dirty tables until lookups have missed `len(dirty)` "
      "times per shard: see the `no read pass after prefill` ReadHeavy row.")
    w("- **Memory.** The read view's slots hold the hash and the entry itself (32 bytes for `u64 -> u64`), at "
      "most 80 % full and rounded up to a power of two; a shard holds 256 to 512 entries between splits, and one "
      "of more than 409 entries gets 1,024 slots: at 1M keys about half of the views' slots are used (32 bytes "
      "over 68). "
      + facts.get("heap", "")
      + "")
    w("")
    os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
    with open(args.markdown, "w") as f:
        f.write("\n".join(md).rstrip() + "\n")
    print(f"wrote {args.markdown} and {args.chart}")


def why_facts(groups, growth, cg, lat):
    """Sentences with this run's figures for the 'why' section (empty when missing)."""
    f = {}
    if cg and cg["rows"].get(SNAP) and cg["rows"].get("ceiling: &hashbrown::HashMap"):
        s_, c_ = cg["rows"][SNAP]["per_lookup"], cg["rows"]["ceiling: &hashbrown::HashMap"]["per_lookup"]
        f["lookup"] = (f"In CPU work it is {s_:.0f} instructions per lookup against the ceiling's {c_:.0f} "
                       f"(callgrind, bench loop included). ")
    it = next(iter(by_size(groups, "iter_")), None)
    if it:
        d = groups[it]
        s_, h_ = d.get((SNAP, "1t")), d.get(("ceiling: &hashbrown::HashMap", "1t"))
        sn_ = d.get(("snapmap snapshot", "1t"))
        if s_ and h_ and s_.get("elements"):
            n = s_["elements"]
            txt = (f"Here: {s_['ns'] / n:.0f} ns per entry for `pin().iter()` against {h_['ns'] / n:.1f} ns for "
                   f"`hashbrown`")
            if sn_:
                txt += f" and {sn_['ns'] / n:.1f} ns through a snapshot"
            f["iter"] = txt + ". "
        pa = d.get(("papaya", "1t"))
        if s_ and pa:
            r = pa["ns"] / s_["ns"]
            how = "about as fast" if 0.9 <= r <= 1.1 else f"{fmt_ratio(r)} papaya's speed"
            f["iter_papaya"] = (f"Against papaya, which holds a pointer per entry and walks its table, the walk "
                                f"runs {how} ({size_of_group(it)} entries). ")
    up = next(iter(by_size(groups, "update_")), None)
    if up:
        d = groups[up]
        s_, dm = d.get((SNAP, "1t")), d.get(("dashmap", "1t"))
        a = alloc_lookup(growth, SNAP, "update (existing key)")
        if s_ and dm:
            f["update"] = (f"Here one update takes {s_['ns']:.0f} ns against dashmap's {dm['ns']:.0f} ns "
                           f"(1 thread, 1M keys)" + (f", with {a['allocs_per_op']:.2f} allocations" if a else "") + ". ")
    ins = lat.get("insert-only", {}).get(SNAP)
    if ins and ins.get("stats"):
        st = ins["stats"]
        m_len = re.search(r"len (\d+)", st)
        m_copied = re.search(r"entries copied (\d+)", st)
        m_split = re.search(r"splits (\d+)", st)
        m_reb = re.search(r"dirty rebuilds (\d+)", st)
        if m_len and m_copied and m_split and m_reb:
            n, copied = int(m_len.group(1)), int(m_copied.group(1))
            f["copies"] = (f"Growing to {n:,} keys with inserts only (no reads, so no promotions), snapmap made "
                           f"{int(m_split.group(1)):,} splits and {int(m_reb.group(1)):,} dirty rebuilds, copying "
                           f"{copied:,} entries: each entry copied {copied / n:.1f} times on average. ")
    parts = []
    max_copied = None
    for wk, maps in lat.items():
        s_, d_ = maps.get(SNAP), maps.get("dashmap")
        if s_ and s_.get("work_max"):
            parts.append(f"{fmt_us(s_['work_max'])} ({wk}"
                         + (f"; dashmap's, a shard-table resize: {fmt_us(d_['work_max'])}" if d_ and d_.get("work_max") else "")
                         + ")")
            m = re.search(r"max (\d+) in one operation", s_.get("stats") or "")
            if m:
                max_copied = int(m.group(1))
    if parts:
        f["cpu"] = ("In the growth runs the largest work inside one snapmap insert (median over the runs) was "
                    + "; ".join(parts) + ". "
                    + (f"No operation copied more than {max_copied} entries (a split or rebuild of one shard, tens of "
                       "microseconds); what remains at the top is the system allocator (a `malloc` that grows the "
                       "heap, or an epoch collection's `free`s of retired tables) and the machine itself. "
                       if max_copied else ""))
    rh = next(iter(by_size(groups, "read_hit_")), None)
    if rh and cg:
        d = groups[rh]
        m_, sn_ = d.get((SNAP, "1t")), d.get(("snapmap snapshot", "1t"))
        cs, cm = cg["rows"].get("snapmap snapshot"), cg["rows"].get(SNAP)
        if m_ and sn_ and cs and cm:
            f["snapshot_get"] = (f"{sn_['ns']:.0f} ns per lookup against {m_['ns']:.0f} ns for the map itself "
                                 f"({size_of_group(rh)} keys, 1 thread), and {cs['per_lookup']:.0f} instructions "
                                 f"against {cm['per_lookup']:.0f}. ")
    cache_parts, load_parts, cache_ratios = [], [], []
    for g in by_size(groups, "read_hit_"):
        if "default_hasher" in g:
            continue
        d = groups[g]
        rd, ca = d.get(("snapmap reader handle", "1t")), d.get(("ArcSwap<HashMap>, Cache per get", "1t"))
        if rd and ca:
            cache_parts.append(f"{size_of_group(g)} keys {fmt_ratio(ca['ns'] / rd['ns'])}")
            cache_ratios.append(ca['ns'] / rd['ns'])
        lo = d.get(("ArcSwap<HashMap>, load per get", "1t"))
        if rd and lo:
            load_parts.append(f"{size_of_group(g)} keys {fmt_ratio(lo['ns'] / rd['ns'])}")
    cr, cc = (cg or {}).get("rows", {}).get("snapmap reader handle"), (cg or {}).get("rows", {}).get(
        "ArcSwap<HashMap>, Cache per get")
    if cache_parts:
        f["reader_cache"] = ("Read the same way as the handle, through an `arc_swap::Cache` checked on every "
                             "lookup, `ArcSwap<HashMap>` "
                             + ("runs about as fast" if cache_ratios and min(cache_ratios) >= 0.9 else "is closer")
                             + ": the handle's throughput is "
                             + ", ".join(cache_parts) + " of it (1 thread)"
                             + (f"; {cr['per_lookup']:.0f} instructions per lookup against {cc['per_lookup']:.0f}"
                                if cr and cc else "")
                             + ". What keeps it behind the reader that loads once per 1,024 lookups is the "
                             "per-lookup check (one load and a compare) and cache misses: the slot table's hop "
                             "and the size of the heads. A snapshot's heads are 16 bytes per bucket of 2 to 4 "
                             "entries, `hashbrown`'s control bytes one per slot, so at 10K keys its control bytes "
                             "stay in the first-level cache and the heads do not (callgrind's cache simulation: "
                             "1.65 first-level misses per lookup against 1.10). "
                             + ("Read with a `load()` per lookup, arc-swap's usual read, `ArcSwap<HashMap>` is "
                                "slower than the handle, which runs at " + ", ".join(load_parts)
                                + " of its throughput (1 thread): the load takes and returns a debt slot with a "
                                "`SeqCst` store. " if load_parts else ""))
    sg = next(iter(by_size(groups, "snapshot_")), None)
    if sg:
        e = groups[sg].get((SNAP, "after 1 update"))
        a = alloc_lookup(growth, "snapmap snapshot", "snapshot (after 1 update)")
        if e:
            f["snapshot_build"] = (f"{fmt_us(e['ns'])} per update-and-snapshot at {size_of_group(sg)} entries"
                                   + (f", {fmt_int(a['allocs_per_op'])} allocations of {fmt_int(a['bytes_per_op'])} bytes"
                                      if a else "") + ". ")
    heap = {r["map"]: r for r in growth.get("heap", [])}
    if SNAP in heap and "ceiling: &hashbrown::HashMap" in heap:
        f["heap"] = (f"{heap[SNAP]['bytes_per_entry']:.0f} bytes per entry against "
                     f"{heap['ceiling: &hashbrown::HashMap']['bytes_per_entry']:.0f} for `hashbrown`.")
    return f


def mix_cap(groups):
    for mix in ["ReadHeavy", "Exchange", "RapidGrow"]:
        for (_, _), e in groups.get(mix, {}).items():
            if e.get("elements"):
                return int(round(math.log2(e["elements"])))
    return "?"


def stat_fields(s):
    """The counters of one snapmap stats line (peers/src/lib.rs, `stats_line`).
    A counter it cannot find is reported on stderr: the line's format and
    these patterns must move together (when they did not, the report's
    counter tables were rows of '?')."""
    f = {}
    for key in ["shards", "slow-path lookups", "promotions", "dirty rebuilds", "entries copied", "splits", "merges"]:
        m = re.search(re.escape(key) + r" (\d+)", s)
        if m:
            f[key] = fmt_int(int(m.group(1)))
    m = re.search(r"max (\d+) in one operation", s)
    if m:
        f["max"] = fmt_int(int(m.group(1)))
    missing = [k for k in ["shards", "slow-path lookups", "promotions", "dirty rebuilds", "entries copied",
                           "splits", "merges", "max"] if k not in f]
    if missing:
        sys.stderr.write(f"bench-report: snapmap stats line without {', '.join(missing)}: {s[:100]!r}\n")
    return f


def fmt_int(x):
    try:
        return f"{int(x):,}"
    except (TypeError, ValueError):
        return "?"


def time_table(w, d, kinds, ref_name, time_label, ratio_label):
    """One row per map of `d` ((name, kind) -> entry): each kind's time and
    its ratio to `ref_name`'s time for the same kind."""
    w("| map | " + " | ".join(f"{k}: {time_label} | {ratio_label}" for k in kinds) + " |")
    w("|---|" + "---:|---:|" * len(kinds))
    for name in sorted({f for f, _ in d}, key=order_key):
        cells = []
        for k in kinds:
            e, ref = d.get((name, k)), d.get((ref_name, k))
            if not e:
                cells += ["–", "–"]
                continue
            cells += [fmt_us(e["ns"]), fmt_ratio(e["ns"] / ref["ns"]) if ref else "n/a"]
        w(f"| {md_name(name)} | " + " | ".join(cells) + " |")
    w("")


def fmt_us(ns):
    if ns is None:
        return "n/a"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def growth_summary(growth):
    out = defaultdict(dict)
    for row in growth.get("growth", []):
        reps = row["reps"]
        if not reps:
            continue
        summary = {k: median([r[k] for r in reps]) for k in ["p50", "p99", "p999", "p9999", "max", "wall_s"]}
        summary["worst_max"] = max(r["max"] for r in reps)
        summary["cpu_p999"] = row.get("cpu_p999")
        summary["cpu_max"] = row.get("cpu_max")
        summary["work_max"] = row.get("work_max")
        summary["work_maxes"] = row.get("work_maxes", [])
        summary["stats"] = reps[-1].get("stats")
        out[row["workload"]][row["map"]] = summary
    return out


def heap_entries(growth):
    for r in growth.get("heap", []):
        return r["entries"]
    return 0


def alloc_ops(growth):
    for r in growth.get("allocs", []):
        if r["op"] == "read":
            return r["ops"]
    return 0


def growth_inserts(growth):
    for row in growth.get("growth", []):
        if row["workload"] == "insert-only" and row["reps"]:
            return row["reps"][0]["inserts"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
