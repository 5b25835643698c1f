#!/usr/bin/env python3
"""The house rules of src/, checked from the code's own `use` lines and paths.

Usage: contrib/layers.py [--graph]   (run from anywhere; `just check` runs it)

Checks, and exits 1 naming each breach:
  1. no file under src/ is longer than MAX_LINES lines;
  2. no room imports a room on a higher floor (FLOORS below, top first; a room may import
     its own floor's rooms only where ALLOWED_SIDEWAYS says so);
  3. no import circle between files (a folder's mod.rs re-exporting its own children is
     its front door, not an arrow);
  4. no file of the pure core (RNG_FREE) calls OsRng or thread_rng, tests included
     (randomness is passed in, so a run can be replayed from a seed).
--graph also prints every room-to-room arrow with the files that make it.

A "room" is a top-level module of the library (`src/signer/`, `src/keys.rs`, ...); the binary
(src/main.rs and src/cli/) is the room `cli`. References are read from `use` trees and from
`crate::`/`ckm::`/`super::`/`self::` paths in code (comments and string literals removed).
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "src")
MAX_LINES = 900

# Top floor first. A room imports only rooms on lower floors.
FLOORS = [
    ["cli"],
    ["console"],
    ["net", "chain"],
    ["signer", "wallet", "ops"],
    ["message"],
    ["protocol"],
    ["psbt"],
    ["recovery"],
    ["keys", "auth"],
    ["store", "frost", "identity", "idle"],
    ["lib"],
]
# Arrows allowed between rooms of one floor (from, to).
ALLOWED_SIDEWAYS = {("chain", "wallet")}
# chain is on net's floor but updates wallets: it must stay above wallet.
# Rooms that must not call OsRng/thread_rng, not even in their unit tests.
RNG_FREE = {"signer", "protocol"}

FLOOR_OF = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}


def strip_code(text):
    """Removes comments, string and char literals (keeps line breaks)."""
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
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 12]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == '"' or (c == "b" and text.startswith('b"', i)):
            i += 2 if c == "b" else 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    out.append("\n")
                i += 1
            i += 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def modules():
    """Maps module path tuples to files, for the library and the binary."""
    lib, bin_ = {}, {}
    for dirpath, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, SRC).replace(os.sep, "/")
            parts = rel[:-3].split("/")
            if parts[-1] == "mod":
                parts = parts[:-1]
            if rel == "lib.rs":
                lib[()] = path
            elif rel == "main.rs":
                bin_[()] = path
            elif parts[0] == "cli":
                bin_[tuple(parts)] = path
            else:
                lib[tuple(parts)] = path
    return lib, bin_


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    depth, start, parts = 0, 0, []
    for k, ch in enumerate(tree):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(tree[start:k])
            start = k + 1
    parts.append(tree[start:])
    result = []
    for p in parts:
        if not p:
            continue
        b = p.find("{")
        if b < 0:
            result.append(p)
        else:
            prefix = p[:b]
            for inner in expand_use(p[b + 1:p.rindex("}")]):
                result.append(prefix + inner)
    return result


def references(code):
    """Every path that starts at crate::, ckm::, super:: or self:: in `code`."""
    refs = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        refs.extend(expand_use(m.group(1)))
    no_use = re.sub(r"\buse\s+[^;]+;", "", code)
    for m in re.finditer(r"\b((?:crate|ckm|super|self)(?:\s*::\s*(?:super|\w+))+)", no_use):
        refs.append(re.sub(r"\s+", "", m.group(1)))
    return [r.split(" as ")[0] for r in refs]


def resolve(ref, here, table, is_mod_file):
    """The module path a reference lands in, or None for an outside crate."""
    segs = [s for s in ref.split("::") if s]
    if not segs:
        return None
    if segs[0] in ("crate", "ckm"):
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        # A file's module path is that of the file (a folder's mod.rs: the folder's), so
        # `self` is `here` and each `super` is one step up from it.
        base = here
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
        rest = segs
    else:
        return None
    best = base if base in table else None
    path = base
    for s in rest:
        path = path + (s,)
        if path in table:
            best = path
        else:
            break
    return best


def room_of(mod, binary):
    if binary:
        return "cli"
    return mod[0] if mod else "lib"


def main():
    graph_only = "--graph" in sys.argv
    lib, bin_ = modules()
    problems = []
    file_edges = {}
    room_edges = {}
    for table, binary in ((lib, False), (bin_, True)):
        for mod, path in table.items():
            text = open(path, encoding="utf-8").read()
            rel = os.path.relpath(path, ROOT)
            lines = text.count("\n")
            if lines > MAX_LINES:
                problems.append(f"{rel}: {lines} lines, more than {MAX_LINES}")
            code = strip_code(text)
            room = room_of(mod, binary)
            if room in RNG_FREE and re.search(r"\b(OsRng|thread_rng)\b", code):
                problems.append(f"{rel}: calls OsRng/thread_rng (pass the RNG in)")
            is_mod_file = path.endswith("mod.rs") or mod == ()
            for ref in references(code):
                if ref.startswith("ckm::") or (not binary and ref.startswith("crate::")):
                    target_table, target_binary = lib, False
                else:
                    target_table, target_binary = table, binary
                if binary and ref.startswith("crate::"):
                    target_table, target_binary = bin_, True
                target = resolve(ref, mod, target_table, is_mod_file)
                if target is None:
                    continue
                tpath = target_table[target]
                if tpath == path:
                    continue
                # A module's own descendants (its front door re-exporting them) are no arrow.
                if target_binary == binary and target[:len(mod)] == mod and len(target) > len(mod):
                    continue
                file_edges.setdefault(path, set()).add(tpath)
                troom = room_of(target, target_binary)
                if troom != room:
                    room_edges.setdefault((room, troom), set()).add(rel)
    for (a, b), files in sorted(room_edges.items()):
        fa, fb = FLOOR_OF.get(a), FLOOR_OF.get(b)
        if fa is None or fb is None:
            problems.append(f"room {a if fa is None else b} has no floor in contrib/layers.py")
            continue
        if fb < fa or (fb == fa and (a, b) not in ALLOWED_SIDEWAYS):
            problems.append(f"arrow runs up: {a} -> {b} (in {', '.join(sorted(files))})")
    # Circles between files: Tarjan's strongly connected components.
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in file_edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in list(file_edges):
        if v not in index:
            visit(v)
    for comp in sccs:
        names = sorted(os.path.relpath(p, ROOT) for p in comp)
        problems.append("import circle: " + " <-> ".join(names))
    if graph_only or "-v" in sys.argv:
        for (a, b), files in sorted(room_edges.items(), key=lambda e: (FLOOR_OF.get(e[0][0], 99), e[0])):
            print(f"{a:>9} -> {b:<9} {', '.join(sorted(files))}")
    files = sum(len(t) for t in (lib, bin_))
    if problems:
        for p in problems:
            print("layers:", p, file=sys.stderr)
        return 1
    print(f"layers: {files} files, {len(room_edges)} room arrows, all downwards; no import "
          f"circle; none over {MAX_LINES} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
