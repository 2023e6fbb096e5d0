"""Third-party backends through the ``bench.backends`` entry point.

The example plugin (``examples/bench-plugin-example``) is pip-installed into a temporary
target directory, which goes on ``PYTHONPATH`` of the ``bench`` subprocesses: the venv is
left untouched, and ``importlib.metadata`` sees the entry point through the installed
``.dist-info``; the case's worker process inherits the path and imports the plugin too.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, bench_env, run_bench

EXAMPLE = ROOT / "examples" / "bench-plugin-example"
FAST = ["--min-time", "0.05", "--max-time", "0.5", "--min-iterations", "20", "--target-ci", "0.05", "-q"]


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory) -> Path:
    """``pip install --no-deps --no-build-isolation --target <tmp>`` of a copy of the example (the
    build leaves nothing in the source tree)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"pip could not install the example plugin:\n{proc.stderr[-3000:]}")
    assert list(target.glob("bench_plugin_example-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture(scope="module")
def broken_plugin(tmp_path_factory) -> Path:
    """A plugin whose module raises while being imported."""
    d = tmp_path_factory.mktemp("broken")
    (d / "bench_broken_plugin.py").write_text("raise RuntimeError('the vendor SDK is missing')\n")
    info = d / "bench_broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[bench.backends]\nbroken-vendor = bench_broken_plugin:Backend\n")
    return d


def _backends(env) -> dict:
    proc = run_bench(["list", "backends", "--json"], env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {r["name"]: r for r in json.loads(proc.stdout)}


def test_installed_plugin_is_listed(example_plugin):
    rows = _backends(bench_env(extra_path=example_plugin))
    ex = rows["example"]
    assert ex["available"] is True and ex["runtimes"] == ["onnx-reference"]
    assert ex["dist"] == "bench-plugin-example" and ex["ref"] == "bench_plugin_example:ExampleBackend"
    assert rows["cpu"]["available"] is True
    assert "example" not in _backends(bench_env())  # not installed into the venv itself


def test_broken_plugin_is_listed_unavailable_with_its_error(broken_plugin):
    rows = _backends(bench_env(extra_path=broken_plugin))
    row = rows["broken-vendor"]
    assert row["available"] is False
    assert "RuntimeError" in row["reason"] and "the vendor SDK is missing" in row["reason"]
    assert rows["cpu"]["available"] is True
    proc = run_bench(["run", "--suite", "smoke", "--backend", "broken-vendor"], env=bench_env(extra_path=broken_plugin),
                     timeout=120)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "failed to load" in lines[0], proc.stderr


@pytest.mark.slow
def test_suite_runs_on_the_plugin_backend(example_plugin, tmp_path, bench_cache):
    out = tmp_path / "r"
    proc = run_bench(["run", "--suite", "smoke", "--backend", "example", "--out", str(out), *FAST],
                     env=bench_env(extra_path=example_plugin, cache=bench_cache))
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, (proc.stdout, proc.stderr)
    rec = json.loads(files[0].read_text())
    assert rec["backend"]["name"] == "example" and rec["backend"]["runtime"] == "onnx-reference"
    assert rec["backend"]["runtime_version"]
    for c in rec["cases"]:
        assert c["status"] in ("ok", "invalid"), c.get("reason")
        assert c["backend_info"]["runtime"] == "onnx-reference"
        assert c["accuracy"]["fidelity"]["top1_agreement"] == 1.0  # real computation, same predictions


@pytest.mark.slow
def test_a_broken_plugin_breaks_nothing_else(broken_plugin, tmp_path, bench_cache):
    out = tmp_path / "r"
    proc = run_bench(["run", "--suite", "smoke", "--backend", "cpu", "--scenario", "single-stream", "--out", str(out),
                      *FAST], env=bench_env(extra_path=broken_plugin, cache=bench_cache))
    rec = json.loads(sorted(out.glob("*.json"))[0].read_text())
    assert [c["status"] for c in rec["cases"]] in (["ok"], ["invalid"]), (proc.stderr, rec["cases"][0].get("reason"))
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr
