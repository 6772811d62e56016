"""The house rules of issue 18, checked on the source (no import runs):

* no import cycle between the project's modules (``physnn/``, ``devices/``, ``simulators/``), counting the
  imports inside functions too (a lazy import still ties two modules together);
* a layer of ``physnn`` imports only its own layer or lower ones, and the core never imports a device or
  simulator;
* at most 14 top-level modules in ``physnn/`` and no library file over 800 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> installed package name
PACKAGES = {"physnn": "physnn", "devices": "physnn.devices", "simulators": "physnn.simulators"}
#: physnn's layers, lowest first; a module may import from its own layer or any lower one
LAYERS = ["core", "data", "train", "runlog", "run", "analysis", "scale", "cli"]
RANK = {name: i for i, name in enumerate(LAYERS)}
RANK.update({"devices": RANK["run"], "simulators": RANK["run"]})  # plugins: they import the core, never the CLI


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([package, *parts])] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports (resolved to module names; ``from pkg import sub`` counts ``pkg.sub``)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule; `from mod import name` the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:  # physnn.core.checks.integer -> physnn.core.checks
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] in (["physnn", "devices"], ["physnn", "simulators"]):
        return parts[1]
    if len(parts) >= 2 and parts[1] in RANK:
        return parts[1]
    return None  # physnn/__init__: the facade, above nothing and below nothing


def test_no_import_cycles():
    # Tarjan's strongly connected components; any component of more than one module is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w == "physnn":  # the facade: `import physnn` (for __version__) ties nothing together
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_lower_layers_never_import_higher_ones():
    bad = []
    for module, targets in GRAPH.items():
        mine = _layer(module)
        if mine is None:
            continue
        for t in targets:
            theirs = _layer(t)
            if theirs is None:
                continue
            if mine not in ("devices", "simulators") and theirs in ("devices", "simulators"):
                bad.append(f"{module} -> {t} (the core imports no device or simulator)")
            elif RANK[theirs] > RANK[mine]:
                bad.append(f"{module} ({mine}) -> {t} ({theirs})")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def test_physnn_keeps_at_most_14_top_level_modules():
    top = sorted(p.name for p in (ROOT / "physnn").glob("*.py"))
    assert len(top) <= 14, top


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_no_library_file_over_800_lines(folder):
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / folder).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 800
    }
    assert not long, f"split these by job: {long}"


def test_the_checker_sees_a_cycle_and_a_layer_violation():
    # the rules above must be able to fail: a made-up module pair that imports each other is found
    assert "physnn.core.system" in GRAPH["physnn.core.model"]
    assert "physnn.run.experiment" in GRAPH["physnn.scale.sweep"]  # a lazy import inside a function counts
