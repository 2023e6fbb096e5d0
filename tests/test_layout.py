"""The folder layout is the data path, and imports only flow one way along it.

An AST walk over harness/, backends/ and suites/ collects every import -- at module level
and inside functions, where cycles like to hide -- and checks:

* no import cycle between modules, and none between packages (``harness.plan``,
  ``backends.fpga``, ``suites.zoo``, ... each counted as one node);
* harness's rooms import only rooms before them on the data path (:data:`ROOMS`);
* the core reaches suites only through the model registry (never ``import suites...``) and
  backends only through entry points (``backends.base``, the protocol, is the one exception);
* harness/ keeps at most a handful of loose modules;
* ``import harness.cli`` and ``bench --help`` import no ML framework.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "backends", "suites")

#: harness's rooms in data-path order, and the rooms each may import (besides the loose modules)
ROOMS: dict[str, set[str]] = {
    "harness.measure": set(),
    "harness.plan": set(),
    "harness.store": set(),
    "harness.run": {"harness.plan", "harness.measure", "harness.store"},
    "harness.analyze": {"harness.store", "harness.run", "harness.measure"},
    "harness.report": {"harness.store", "harness.analyze"},
    "harness.cli": {"harness.plan", "harness.run", "harness.measure", "harness.store", "harness.analyze",
                    "harness.report"},
}
LOOSE = {"__init__", "__main__", "errors", "units", "safe"}  # safe: the one escaper of outside text (issue 16)
#: the one module of backends/ the core may import by name: the protocol (Session, SessionReport, ...)
BACKEND_PROTOCOL = "backends.base"
HEAVY = ("torch", "tensorflow", "onnxruntime", "transformers", "ray", "jax")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _targets(module: str, is_package: bool, node: ast.AST) -> list[str]:
    """Dotted names an import statement may bind: the module and, for ``from X import a``, ``X.a``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".")
        keep = len(base) - node.level + (1 if is_package else 0)
        base = base[:keep]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """module -> the in-tree modules it imports (anywhere in its body)."""
    mods = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(name, path.name == "__init__.py", node):
                while target and target not in mods:  # `from pkg import func` -> pkg
                    target = target.rpartition(".")[0]
                # a module importing its own package (or itself) is no dependency
                if target and target != name and not name.startswith(target + "."):
                    edges[name].add(target)
    return {m: set(edges.get(m, ())) for m in mods}


def package_of(module: str) -> str:
    """``harness.plan.suite`` -> ``harness.plan``; ``harness.errors`` -> itself; ``harness`` -> itself."""
    return ".".join(module.split(".")[:2])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for a, targets in edges.items():
        out[package_of(a)]
        for b in targets:
            if package_of(a) != package_of(b):
                out[package_of(a)].add(package_of(b))
    return dict(out)


# --------------------------------------------------------------------------- the checker itself


def test_checker_finds_cycles_and_hidden_imports(tmp_path, monkeypatch):
    """The checker sees a cycle made of a module-level and a function-local import."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    pkg = tmp_path / "harness" / "x"
    pkg.mkdir(parents=True)
    (tmp_path / "harness" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text("from harness.x import two\n")
    (pkg / "two.py").write_text("def f():\n    from . import one\n    from .one import thing\n")
    for p in ("backends", "suites"):
        (tmp_path / p).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = import_graph()
    assert graph["harness.x.two"] == {"harness.x.one"}
    assert cycles(graph) == [["harness.x.one", "harness.x.two"]]


# --------------------------------------------------------------------------- the tree


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_no_module_cycles(graph):
    assert cycles(graph) == []


def test_no_package_cycles(graph):
    assert cycles(package_graph(graph)) == []


def test_rooms_import_only_earlier_rooms(graph):
    bad = []
    for a, targets in graph.items():
        room = package_of(a)
        if room not in ROOMS:
            continue
        for b in targets:
            other = package_of(b)
            if other in ROOMS and other != room and other not in ROOMS[room]:
                bad.append(f"{a} -> {b}")
    assert bad == []


def test_core_reaches_suites_and_backends_only_through_registries(graph):
    bad = [f"{a} -> {b}" for a, targets in graph.items() if a.split(".")[0] == "harness"
           for b in targets if b.split(".")[0] == "suites"
           or (b.split(".")[0] == "backends" and b != BACKEND_PROTOCOL)]
    assert bad == []


def test_backends_do_not_import_suites(graph):
    assert [f"{a} -> {b}" for a, t in graph.items() if a.startswith("backends") for b in t
            if b.startswith("suites")] == []


def test_harness_has_a_handful_of_loose_modules():
    loose = {p.stem for p in (ROOT / "harness").glob("*.py")}
    assert loose <= LOOSE, sorted(loose - LOOSE)
    rooms = {p.name for p in (ROOT / "harness").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {r.rpartition(".")[2] for r in ROOMS} == rooms


def test_every_package_says_its_place_in_the_data_path():
    for init in sorted((ROOT / "harness").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) >= 3, f"{init}: needs a docstring (place, in, out)"
        assert "In:" in doc and "Out:" in doc, f"{init}: docstring should say what comes in and goes out"


def test_cli_imports_no_ml_framework():
    code = ("import sys, harness.cli\n"
            "try:\n    harness.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
