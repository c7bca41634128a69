#!/usr/bin/env python3
"""Checks auth-server's module layout: imports point down the layers lib.rs describes (storage
imports only storage and clock; the domain no service or wiring module; config no domain; a
mechanism nothing above it), no import cycle between its modules (files), and no source file
over 500 lines. Run from the repository root; exits non-zero with the findings.

A module is a file under auth-server/src (`domain/login.rs` is `domain::login`, a `mod.rs` is
its folder's module). An edge A -> B is any `crate::B…` or `super::…` path in A that names B
or an item of B. Items re-exported by a folder's `mod.rs` count as edges to that `mod.rs`.
"""

import os
import re
import sys

ROOT = "auth-server/src"
MAX_LINES = 500
# Entry points that only wire the rest together.
WIRING = {"main", "lib"}


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def expand(tree):
    """Expands a use tree like `a::{b, c::{d, e}}` into paths."""
    tree = tree.strip()
    depth = 0
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                prefix = tree[:i].rstrip(":").strip()
                inner = tree[i + 1 : tree.rindex("}")]
                items, level, start = [], 0, 0
                for j, c in enumerate(inner):
                    if c == "{":
                        level += 1
                    elif c == "}":
                        level -= 1
                    elif c == "," and level == 0:
                        items.append(inner[start:j])
                        start = j + 1
                items.append(inner[start:])
                out = []
                for item in items:
                    if item.strip():
                        for sub in expand(item):
                            out.append(f"{prefix}::{sub}" if prefix else sub)
                return out
            depth += 1
    return [re.sub(r"\s+as\s+\w+$", "", tree)]


def resolve(module, path, modules):
    """The longest known module that `path` (crate-relative parts) lies in."""
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in modules:
            return tuple(path[:n])
    return None


def main():
    files = []
    for dirpath, _, names in os.walk(ROOT):
        files += [os.path.join(dirpath, n) for n in names if n.endswith(".rs")]
    modules = {module_of(f): f for f in files}
    edges = {m: set() for m in modules}
    problems = []
    for module, path in modules.items():
        text = open(path).read()
        lines = text.count("\n")
        if lines > MAX_LINES:
            problems.append(f"{path}: {lines} lines (over {MAX_LINES})")
        code = strip_comments(text)
        # Test modules may use anything.
        code = code.split("#[cfg(test)]")[0]
        paths = []
        for tree in re.findall(r"\buse\s+([^;]+);", code, flags=re.S):
            paths += expand(tree)
        paths += re.findall(r"\b((?:crate|super)(?:::\w+)+)", code)
        is_dir = path.endswith("mod.rs")
        for p in paths:
            parts = [x for x in re.split(r"\s*::\s*", p.strip()) if x]
            if not parts:
                continue
            if parts[0] == "crate":
                target = resolve(module, parts[1:], modules)
            elif parts[0] in ("super", "self"):
                base = list(module) if (is_dir and parts[0] == "super") or parts[0] == "self" else list(module[:-1])
                if parts[0] == "super" and is_dir:
                    base = base[:-1]
                rest = parts[1:]
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
                target = resolve(module, base + rest, modules)
            else:
                continue
            # A folder's mod.rs declaring and re-exporting its own files is structure, not a
            # dependency; everything else (children on their folder, siblings) counts.
            if target and target != module and target[: len(module)] != module:
                edges[module].add(target)
    # Layers: imports point down, never up (lib.rs states the rule).
    wiring = {"config", "startup", "cli", "main", "lib", "testkit", "fuzzing"}
    grpc = {"service", "limits", "observe", "accept", "tls", "telemetry"}
    upper = wiring | grpc | {"domain"}
    for module, targets in edges.items():
        for target in targets:
            top, to = module[0], target[0]
            if top == "clock":
                problems.append(f"clock -> {'::'.join(target)}: clock is a leaf (storage uses it)")
            elif top == "storage" and to not in ("storage", "clock"):
                problems.append(f"{'::'.join(module)} -> {'::'.join(target)}: storage imports only storage and clock")
            elif top == "domain" and to in wiring | grpc:
                problems.append(f"{'::'.join(module)} -> {'::'.join(target)}: the domain imports no gRPC or wiring module")
            elif top == "config" and to in ("domain", "service", "startup", "cli"):
                problems.append(f"{'::'.join(module)} -> {'::'.join(target)}: config imports no domain, service or wiring module")
            elif top not in upper and top != "error" and to in upper:
                problems.append(f"{'::'.join(module)} -> {'::'.join(target)}: a mechanism imports upward")
    # Cycles among modules other than the wiring entry points.
    graph = {m: {t for t in ts if t[0] not in WIRING} for m, ts in edges.items() if m[0] not in WIRING}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    for comp in out:
        names = sorted("::".join(m) for m in comp)
        problems.append("import cycle: " + ", ".join(names))
    for p in problems:
        print(p)
    if not problems:
        print(f"layout ok: {len(modules)} modules, imports point down the layers, no import cycle, no file over {MAX_LINES} lines")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
