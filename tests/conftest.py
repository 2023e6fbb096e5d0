from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# The Ctrl-C tests send SIGINT to a child as a terminal would. A test run started in the background
# (nohup, `cmd &` in a script without job control) inherits SIGINT *ignored*, and its children would
# inherit that and never see the Ctrl-C (seen: three such tests hung when .ci/run ran as a background job).
# A handler, unlike "ignored", is reset to the default on exec: children start as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


def entry_points_dir(d: Path, dist: str, entries: dict[str, str]) -> Path:
    """Make ``d`` a directory that, on PYTHONPATH, registers ``entries`` (name -> "module:Class")
    in the ``bench.backends`` entry-point group, as an installed distribution ``dist`` would."""
    info = d / f"{dist.replace('-', '_')}-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[bench.backends]\n" + "".join(f"{name} = {ref}\n" for name, ref in entries.items()))
    return d


@pytest.fixture(scope="session")
def fault_plugin_path(tmp_path_factory):
    """A directory that, on PYTHONPATH, registers the test backends through entry points."""
    return entry_points_dir(tmp_path_factory.mktemp("fault-plugin"), "bench-fault-plugin", {
        "faulty": "tests.fault_backend:FaultBackend",
        "nohw": "tests.fault_backend:UnavailableBackend",
        "broken": "tests.no_such_module:Backend",
    })


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
