#!/usr/bin/env python3
"""Prints the import cycles between snapmap's modules; exits 1 if there is one.

A module is a top-level file `src/NAME.rs` or folder `src/NAME/` (its
`mod.rs` and every file under it are folded into NAME; `src/lib.rs`, the
crate root, is left out). Module A depends on module B when a file of A
names `crate::B` in code: in a `use crate::B...` or `use crate::{B...}`
statement (any visibility, under any `cfg`), or, unless `--use-only` is
given, in a path such as `crate::B::f()`. Comments (and so doc comments and
their examples) and string literals are skipped.

Checks, each printed, each failing the run:

- every cycle, as the strongly connected component it belongs to plus one
  cycle through it (`--allow a,b` accepts the component made of exactly
  the modules a and b; repeat it for several components);
- any module of the crate named by `src/sync.rs`, which must stay at the
  bottom (style rule 17).

    python3 scripts/module-cycles.py [--graph] [--use-only] [--allow map,pinned]
"""

import argparse
import pathlib
import re
import sys

BOTTOM = "sync"


def strip_comments_and_strings(text):
    """The code of `text`, with comments and literals blanked out."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + len(hashes) + 2)
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if text.startswith("\\", i + 1):
                end = text.find("'", i + 2)
                i = n if end < 0 else end + 1
            elif i + 2 < n and text[i + 2] == "'":
                i += 3
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def top_names(group):
    """The first path segment of each path in a `use` tree body."""
    names, depth, start = [], 0, 0
    for k, ch in enumerate(group + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            part = group[start:k].strip()
            start = k + 1
            if part:
                names.append(re.split(r"::|\s", part)[0])
    return names


def dependencies(code, use_only):
    """The top-level crate names a file's code refers to."""
    names = set()
    for stmt in re.finditer(r"\buse\s+crate\s*::\s*([^;]*);", code):
        tree = stmt.group(1).strip()
        if tree.startswith("{"):
            names.update(top_names(tree[1:tree.rfind("}")]))
        else:
            names.add(re.split(r"::|\s|;", tree)[0])
    if not use_only:
        names.update(re.findall(r"\bcrate\s*::\s*([A-Za-z_][A-Za-z0-9_]*)\s*::", code))
    return names


def module_graph(src, use_only):
    files = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        if rel == pathlib.Path("lib.rs"):
            continue
        module = rel.parts[0][:-3] if len(rel.parts) == 1 else rel.parts[0]
        files.setdefault(module, []).append(path)
    graph = {module: set() for module in files}
    for module, paths in files.items():
        for path in paths:
            code = strip_comments_and_strings(path.read_text())
            for name in dependencies(code, use_only):
                if name in graph and name != module:
                    graph[module].add(name)
    return graph


def components(graph):
    """Tarjan's strongly connected components with more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def one_cycle(graph, component):
    """A shortest cycle through the component's first module."""
    start, members = component[0], set(component)
    paths, seen = [[start]], {start}
    while paths:
        nxt = []
        for path in paths:
            for w in sorted(graph[path[-1]] & members):
                if w == start:
                    return path + [start]
                if w not in seen:
                    seen.add(w)
                    nxt.append(path + [w])
        paths = nxt
    return component


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=pathlib.Path(__file__).resolve().parent.parent / "src", type=pathlib.Path)
    parser.add_argument("--graph", action="store_true", help="print every module's dependencies")
    parser.add_argument("--use-only", action="store_true", help="count `use crate::` statements only")
    parser.add_argument("--allow", action="append", default=[], metavar="A,B",
                        help="accept the cycle made of exactly these modules")
    args = parser.parse_args()
    graph = module_graph(args.src, args.use_only)
    allowed = [sorted(a.split(",")) for a in args.allow]

    if args.graph:
        for module in sorted(graph):
            print(f"{module} -> {', '.join(sorted(graph[module])) or '(nothing)'}")
        print()

    failed = False
    cycles = components(graph)
    for component in cycles:
        status = "allowed" if component in allowed else "CYCLE"
        failed |= status == "CYCLE"
        print(f"{status}: {{{', '.join(component)}}}: {' -> '.join(one_cycle(graph, component))}")
    if BOTTOM in graph and graph[BOTTOM]:
        failed = True
        print(f"BOTTOM: {BOTTOM} imports {', '.join(sorted(graph[BOTTOM]))}")
    if not cycles and not (BOTTOM in graph and graph[BOTTOM]):
        print(f"no cycles among {len(graph)} modules; {BOTTOM} imports nothing of the crate")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
