#!/usr/bin/env python3
"""Checks that the crate's modules import one another one way only.

Reads every `crate::a::b` and `super::x` path in src/ (outside comments and
`#[cfg(test)] mod tests`), and fails, naming the circle, if two top-level
modules depend on each other, directly or around a loop, or two submodules of
one module do. With --order, prints the layers, top (depends on most) first.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def edges():
    out = {}
    for d, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(d, f)
            me = module_of(path)
            text = open(path, encoding="utf-8").read()
            text = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", text, flags=re.S)
            text = "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))
            deps = out.setdefault(me, set())
            for a, b in re.findall(r"\bcrate::([a-z_]+)(?:::([a-z_]+))?", text):
                deps.add((a, b) if b else (a,))
            parent = me[:-1] if f != "mod.rs" else me[:-1]
            for x in re.findall(r"\bsuper::([a-z_]+)", text):
                deps.add(parent + (x,))
    return out


def graph(all_edges, level, within=None):
    g = {}
    for a, ts in all_edges.items():
        for t in ts:
            if within is not None and (a[:1] != within or t[:1] != within):
                continue
            A, T = a[:level], t[:level]
            if len(A) < level or len(T) < level or A == T:
                continue
            g.setdefault(A, set()).add(T)
    return g


def circles(g):
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
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
                found.append(sorted("::".join(x) for x in comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def layers(g):
    nodes = set(g) | {t for ts in g.values() for t in ts}
    depth = {}

    def d(v, seen=()):
        if v not in depth:
            depth[v] = 1 + max((d(w) for w in g.get(v, ())), default=-1)
        return depth[v]

    for v in nodes:
        d(v)
    by = {}
    for v, k in depth.items():
        by.setdefault(k, []).append("::".join(v))
    return [sorted(by[k]) for k in sorted(by, reverse=True)]


def main():
    all_edges = edges()
    problems = []
    top = graph(all_edges, 1)
    problems += circles(top)
    for m in sorted({a[0] for a in all_edges if len(a) > 1}):
        problems += circles(graph(all_edges, 2, within=(m,)))
    if problems:
        for c in problems:
            print("module circle: " + " <-> ".join(c), file=sys.stderr)
        return 1
    if "--order" in sys.argv:
        for layer in layers(top):
            print("  ".join(layer))
    print(f"modules: no circles ({len(top)} top-level modules with dependencies)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
