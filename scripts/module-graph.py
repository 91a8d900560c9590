#!/usr/bin/env python3
"""The runtime's module graph: which top-level module of crates/chatworker
uses which (`crate::X`), and within each folder which file uses which
(`super::X`, `self::X`, or a sibling by name from `mod.rs`), outside
comments and unit tests. Prints the graphs; exits 1 if one has a circle."""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "crates", "chatworker", "src")
# Names the crate root re-exports from a module, as `crate::Name`.
REEXPORTS = {}


def top_modules():
    mods = {}
    for entry in sorted(os.listdir(ROOT)):
        path = os.path.join(ROOT, entry)
        if entry == "lib.rs":
            continue
        name = entry[:-3] if entry.endswith(".rs") else entry
        files = []
        if os.path.isdir(path):
            for dirpath, _, names in os.walk(path):
                files += [os.path.join(dirpath, n) for n in names if n.endswith(".rs")]
        else:
            files = [path]
        mods[name] = files
    return mods


def reexports():
    """`pub use module::{A, B}` at the crate root: `crate::A` means module."""
    text = open(os.path.join(ROOT, "lib.rs")).read()
    for module, names in re.findall(r"pub use (\w+)::\{?([^;]*?)\}?;", text, re.S):
        for name in re.findall(r"\b(\w+)\b", names):
            REEXPORTS.setdefault(name, module)


def code(path):
    text = open(path).read()
    cut = re.search(r"#\[cfg\(test\)\]\s*mod tests", text)
    if cut:
        text = text[: cut.start()]
    lines = [l for l in text.split("\n") if not l.lstrip().startswith("//")]
    return "\n".join(lines)


def circles_of(graph):
    """Strongly connected components of more than one node."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            comps.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in comps if len(c) > 1]


def folder_graph(folder):
    """Edges between the files of one folder module."""
    files = {n[:-3]: os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".rs")}
    text = code(files["mod"]) if "mod" in files else ""
    # Names mod.rs re-exports from its children.
    owner = {}
    for child, names in re.findall(r"pub(?:\(crate\))? use (\w+)::\{?([^;]*?)\}?;", text, re.S):
        if child not in files:
            continue
        for name in re.findall(r"\b(\w+)\b", names):
            owner.setdefault(name, child)
    defined = set(re.findall(r"(?:fn|struct|enum|trait|type|const) (\w+)", text))
    graph = {f: set() for f in files}
    for f, path in files.items():
        body = code(path)
        if f == "mod":
            # Declaring a child, or re-exporting from it, is not using it.
            body = re.sub(r"^\s*(pub(\(crate\))? )?mod \w+;", "", body, flags=re.M)
            body = re.sub(r"^\s*pub(\(crate\))? use [^;]*;", "", body, flags=re.M | re.S)
            refs = re.findall(r"(?<![\w:])(\w+)::", body)
        else:
            refs = []
            for group in re.findall(r"super::(\{[^}]*\}|\w+)", body):
                refs += re.findall(r"\b(\w+)\b", group)
        for name in refs:
            target = name if name in files else owner.get(name)
            if target is None and f != "mod" and name in defined:
                target = "mod"
            if target and target != f:
                graph[f].add(target)
    return graph


def main():
    reexports()
    mods = top_modules()
    graph = {m: set() for m in mods}
    for module, files in mods.items():
        for path in files:
            for name in re.findall(r"crate::(\w+)", code(path)):
                target = name if name in mods else REEXPORTS.get(name)
                if target and target != module:
                    graph[module].add(target)
    for module in sorted(graph):
        print(f"{module:8} -> {', '.join(sorted(graph[module])) or '(nothing)'}")
    circles = circles_of(graph)
    for module, files in sorted(mods.items()):
        folder = os.path.join(ROOT, module)
        if os.path.isdir(folder):
            inner = folder_graph(folder)
            for c in circles_of(inner):
                circles.append([f"{module}/{f}" for f in c])
    for c in circles:
        print("circle: " + " <-> ".join(sorted(c)), file=sys.stderr)
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
