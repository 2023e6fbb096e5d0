from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory):
    """A cache shared by the tests of one session (artifacts are built once)."""
    d = os.environ.get("BENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("bench-cache"))
    return Path(d)


@pytest.fixture
def cached(bench_cache, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(bench_cache))
    return bench_cache


@pytest.fixture(scope="session")
def fault_plugin_path(tmp_path_factory):
    """A directory that, on PYTHONPATH, registers the test backends through entry points."""
    d = tmp_path_factory.mktemp("fault-plugin")
    info = d / "bench_fault_plugin-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-fault-plugin\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[bench.backends]\nfaulty = tests.fault_backend:FaultBackend\nnohw = tests.fault_backend:UnavailableBackend\n"
        "broken = tests.no_such_module:Backend\n"
    )
    return d


def bench_env(extra_path=None, cache=None):
    env = dict(os.environ)
    parts = [str(ROOT)] + ([str(extra_path)] if extra_path else []) + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    if cache:
        env["BENCH_CACHE"] = str(cache)
    env.pop("BENCH_DEBUG", None)
    return env


def run_bench(args, *, env=None, cwd=None, timeout=600, **kw):
    """Run the real console entry point in a subprocess: black-box CLI tests."""
    return subprocess.run([sys.executable, "-m", "harness", *args], env=env or bench_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, **kw)
