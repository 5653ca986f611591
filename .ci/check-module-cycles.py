#!/usr/bin/env python3
"""No import cycle between the modules of a crate: a module that uses another (`crate::x`)
must not be used back by it, directly or through others. Test modules are left out; `lib.rs`
and `main.rs` are the crate's root, not a module."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def modules(src):
    """{top-level module: the top-level modules it names as crate::x}"""
    deps = {}
    for f in src.rglob("*.rs"):
        name = f.relative_to(src).parts[0].removesuffix(".rs")
        if name in ("lib", "main"):
            continue
        text = f.read_text().split("#[cfg(test)]")[0]
        used = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        deps.setdefault(name, set()).update(used - {name})
    return {m: {d for d in ds if d in deps} for m, ds in deps.items()}


def cycle(deps):
    """One cycle as a list of modules, or None."""
    state = {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(deps[m]):
            if state.get(d) == "open":
                return path[path.index(d):] + [d]
            if d not in state:
                found = visit(d, path + [d])
                if found:
                    return found
        state[m] = "done"
        return None

    for m in sorted(deps):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


failed = False
for manifest in sorted(ROOT.glob("*/Cargo.toml")):
    src = manifest.parent / "src"
    if not src.is_dir():
        continue
    found = cycle(modules(src))
    if found:
        print(f"{manifest.parent.name}: import cycle {' -> '.join(found)}", file=sys.stderr)
        failed = True
sys.exit(1 if failed else 0)
