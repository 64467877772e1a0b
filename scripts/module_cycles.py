#!/usr/bin/env python3
"""Import cycles among the supervisor's modules: prints the strongly
connected sets of the graph of `crate::MODULE` references (tests and
comments left out) and exits 1 if there is one. Usage: scripts/module_cycles.py
[SRC_DIR] (default crates/hot-supervisor/src)."""
import re, os, sys, itertools
src = sys.argv[1] if len(sys.argv) > 1 else 'crates/hot-supervisor/src'
mods = {}
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith('.rs'): continue
        p = os.path.join(root, f)
        rel = os.path.relpath(p, src)
        parts = rel[:-3].split('/')
        if parts[-1] == 'mod': parts = parts[:-1]
        top = parts[0]
        if top in ('main', 'lib'): continue
        txt = open(p).read()
        # drop test modules
        txt = re.split(r'#\[cfg\(test\)\]\s*mod tests', txt)[0]
        # comments (doc links are not imports)
        txt = re.sub(r'//.*', '', txt)
        deps = set(re.findall(r'crate::([a-z_]+)', txt))
        # use crate::{a, b}
        for grp in re.findall(r'crate::\{([^}]*)\}', txt):
            for d in re.findall(r'\b([a-z_]+)\b', grp): deps.add(d)
        mods.setdefault(top, set()).update(d for d in deps if d != top)
names = set(mods)
g = {m: {d for d in ds if d in names} for m, ds in mods.items()}
# Tarjan SCC
index = {}; low = {}; stack = []; on = set(); sccs = []; i = [0]
sys.setrecursionlimit(10000)
def strong(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in g[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
for v in g:
    if v not in index: strong(v)
cyc = [sorted(c) for c in sccs if len(c) > 1]
print("modules:", len(g), "cycles (strongly connected sets):", len(cyc))
for c in cyc: print(len(c), c)
sys.exit(1 if cyc else 0)
