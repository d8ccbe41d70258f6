#!/usr/bin/env python3
"""Holds the layering rules that the compiler alone does not.

1. Crates: ARCHITECTURE.md's crate map lists the workspace crates from the
   top layer down. A crate may depend (normal, build or dev dependency) only
   on crates listed below it; `cargo metadata` says what each depends on.
2. Modules: inside a crate, sibling modules must not import each other in a
   cycle. A module's imports are the `crate::`, `super::` and `self::` paths
   in its files, test code left out (a `tests.rs` file, and what follows
   `#[cfg(test)]` at the start of a line). A path is charged to the module
   that defines the item, through the `pub use` re-exports of a parent, so
   `crate::pki::get_worker` counts as an import of `pki::enroll` when that is
   where `get_worker` lives. An import of an ancestor (a child using its
   parent's types) is not an edge: a module contains its children.

Usage: scripts/check-layers.py [--root DIR]   (exit 1 on a violation)
       scripts/check-layers.py --self-test     (shows both rules fail)
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

# ---------------------------------------------------------------- crates

MAP_HEADING = "## Crate map"


def crate_order(architecture):
    """The crate names in the crate map's table, top layer first."""
    lines = architecture.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.strip().startswith(MAP_HEADING))
    except StopIteration:
        sys.exit(f"check-layers: ARCHITECTURE.md has no '{MAP_HEADING}' section")
    order = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        m = re.match(r"\|\s*`([\w-]+)`", line)
        if m:
            order.append(m.group(1))
    if not order:
        sys.exit("check-layers: the crate map lists no crates")
    return order


def crate_violations(order, packages):
    """(crate, dependency) pairs where the dependency is not below the crate."""
    rank = {name: i for i, name in enumerate(order)}
    problems = []
    for name, deps in sorted(packages.items()):
        if name not in rank:
            problems.append(f"crate `{name}` is not in ARCHITECTURE.md's crate map")
            continue
        for dep in sorted(deps):
            if dep not in rank:
                continue
            if rank[dep] <= rank[name]:
                problems.append(f"crate `{name}` depends on `{dep}`, which the crate map puts above it (or level)")
    return problems


def workspace_packages(root):
    """Each workspace member's name and the workspace members it depends on."""
    out = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    meta = json.loads(out)
    members = {p["name"]: p for p in meta["packages"]}
    return {
        name: {d["name"] for d in p["dependencies"] if d["name"] in members}
        for name, p in members.items()
    }, members


# --------------------------------------------------------------- modules

TEST_TAIL = re.compile(r"^#\[cfg\(test\)\]", re.M)
COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
STRING = re.compile(r'r#*"(?:.|\n)*?"#*|"(?:\\.|[^"\\])*"')
CHAR_LIT = re.compile(r"'(?:\\.|[^'\\])'")


def strip(source):
    """Source without test code, comments or literals."""
    m = TEST_TAIL.search(source)
    if m:
        source = source[: m.start()]
    source = COMMENT.sub(" ", source)
    source = STRING.sub('""', source)
    return CHAR_LIT.sub("' '", source)


def module_files(src):
    """Module path (tuple) → source file, for the crate rooted at src."""
    files = {}
    for dirpath, _, names in os.walk(src):
        for n in names:
            if not n.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, n), src)[:-3].split(os.sep)
            if rel in (["lib"], ["main"]):
                path = ()
            elif rel[-1] == "mod":
                path = tuple(rel[:-1])
            else:
                path = tuple(rel)
            if path and path[-1] == "tests":
                continue
            files[path] = os.path.join(dirpath, n)
    return files


def parse_use_tree(text, prefix, out):
    """Expands a `use` tree (`a::{b, c::{d, self}}`) into full paths."""
    text = text.strip()
    depth, start, parts = 0, 0, []
    brace = None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                brace = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if brace is None:
        path = [p for p in text.split(" as ")[0].strip().split("::") if p]
        full = prefix + path
        if full and full[-1] == "self":
            full = full[:-1]
        out.append(full)
        return
    head = [p for p in text[:brace].strip().rstrip(":").split("::") if p]
    inner = text[brace + 1 : text.rindex("}")]
    depth = 0
    for i, ch in enumerate(inner):
        if ch in "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    for p in parts:
        if p.strip():
            parse_use_tree(p, prefix + head, out)


USE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);")
INLINE = re.compile(r"\b(?:crate|super|self)(?:::\w+)+")


def absolute(path, here):
    """A `crate::`/`super::`/`self::` path as a path from the crate root."""
    if not path:
        return None
    base = list(here)
    # `self` and `super` are relative to the module the file defines.
    if path[0] == "crate":
        return path[1:]
    if path[0] not in ("self", "super"):
        return None
    rest = list(path)
    while rest and rest[0] in ("self", "super"):
        if rest.pop(0) == "super":
            if not base:
                return None
            base.pop()
    return base + rest


def resolve(path, modules, reexports):
    """The module that defines the item a path names."""
    path = list(path)
    while True:
        # The deepest module the path walks through.
        depth = 0
        while depth < len(path) and tuple(path[: depth + 1]) in modules:
            depth += 1
        module = tuple(path[:depth])
        if depth < len(path):
            target = reexports.get(module, {}).get(path[depth])
            if target is not None and target != path[: depth + 1]:
                path = list(target) + path[depth + 1 :]
                continue
        return module


def module_graph(src):
    """Module → the modules it imports (after re-exports), test code left out."""
    files = module_files(src)
    modules = set(files)
    sources = {}
    for path, file in files.items():
        with open(file, encoding="utf-8") as f:
            sources[path] = strip(f.read())
    # `pub use` re-exports: module → {name: full path it stands for}.
    reexports = {}
    for path, text in sources.items():
        for m in USE.finditer(text):
            if not m.group(1):
                continue
            expanded = []
            parse_use_tree(m.group(2), [], expanded)
            for p in expanded:
                if p and p[0] not in ("crate", "self", "super"):
                    p = ["self"] + p  # a path from a child: `pub use enroll::x`
                full = absolute(p, path)
                if full and full[-1] != "*":
                    reexports.setdefault(path, {})[full[-1]] = full
    graph = {}
    for path, text in sources.items():
        targets = set()
        raw = []
        for m in USE.finditer(text):
            expanded = []
            parse_use_tree(m.group(2), [], expanded)
            raw.extend(expanded)
        body = USE.sub(" ", text)
        raw.extend(m.group(0).split("::") for m in INLINE.finditer(body))
        for p in raw:
            full = absolute(p, path)
            if full is None:
                continue
            if full and full[-1] == "*":
                full = full[:-1]
            module = resolve(full, modules, reexports)
            if module != path:
                targets.add(module)
        graph[path] = targets
    return graph


def module_cycles(graph):
    """Cycles among sibling modules: lists of module names."""
    siblings = {}
    for source, targets in graph.items():
        for target in targets:
            # The closest common ancestor; the edge runs between its children.
            common = 0
            while common < min(len(source), len(target)) and source[common] == target[common]:
                common += 1
            if common >= len(source) or common >= len(target):
                continue  # one contains the other
            parent = source[:common]
            siblings.setdefault(parent, {}).setdefault(source[common], set()).add(target[common])
    cycles = []
    for parent, edges in sorted(siblings.items()):
        for cycle, members in find_cycles(edges):
            names = ["::".join(parent + (c,)) for c in cycle]
            text = " -> ".join(names + [names[0]])
            if len(members) > len(cycle):
                text += f" (tangled together: {', '.join(members)})"
            cycles.append(text)
    return cycles


def find_cycles(edges):
    """Per strongly connected component of more than one node: a cycle
    through it, and all its members."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append((cycle_in(sorted(component), edges), sorted(component)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def cycle_in(component, edges):
    """A shortest cycle through the component's first node, for the message."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ())):
            if w == start:
                return paths[v]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return component


# ------------------------------------------------------------------ main


def check(root):
    with open(os.path.join(root, "ARCHITECTURE.md"), encoding="utf-8") as f:
        order = crate_order(f.read())
    packages, members = workspace_packages(root)
    layered = {n: d for n, d in packages.items() if n in order or in_appliance(root, members[n])}
    problems = crate_violations(order, layered)
    for name in sorted(layered):
        src = os.path.join(os.path.dirname(members[name]["manifest_path"]), "src")
        problems += [f"crate `{name}`: module cycle {c}" for c in module_cycles(module_graph(src))]
    return problems


def in_appliance(root, package):
    manifest = os.path.realpath(package["manifest_path"])
    return manifest.startswith(os.path.realpath(os.path.join(root, "appliance")) + os.sep)


def self_test():
    """Both rules catch a deliberate violation."""
    bad = crate_violations(["tether", "tether-api", "tether-base"], {"tether-base": {"tether-api"}, "tether-api": set()})
    assert bad and "tether-base" in bad[0], bad
    with tempfile.TemporaryDirectory() as src:
        os.makedirs(os.path.join(src, "pki"))
        write = lambda p, t: open(os.path.join(src, p), "w").write(t)  # noqa: E731
        write("lib.rs", "pub mod pki;\n")
        write("pki/mod.rs", "mod enroll;\nmod revocation;\npub use enroll::get_worker;\n")
        write("pki/enroll.rs", "use super::revocation::Revoked;\npub fn get_worker() {}\n")
        write("pki/revocation.rs", "pub struct Revoked;\nfn f() { crate::pki::get_worker(); }\n")
        cycles = module_cycles(module_graph(src))
        assert cycles == ["pki::enroll -> pki::revocation -> pki::enroll"], cycles
        write("pki/revocation.rs", "pub struct Revoked;\n#[cfg(test)]\nmod tests { fn f() { crate::pki::get_worker(); } }\n")
        assert module_cycles(module_graph(src)) == []
    print("check-layers self-test: a crate depending upward and a module cycle are both refused")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        self_test()
        return
    problems = check(args.root)
    for p in problems:
        print(f"check-layers: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("check-layers: crates and modules are layered as ARCHITECTURE.md says")


if __name__ == "__main__":
    main()
