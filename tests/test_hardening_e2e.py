"""End to end (issue 16): SIGTERM, SIGKILL + ``--resume latest``, a NaN model beside healthy ones.

A fast fake backend (tests/fault_backend.py: the cpu onnxruntime session with injected faults)
runs a three-case suite; ``BENCH_TEST_FAULT`` (environment, not part of the recorded command) makes
the later cases hang or produce NaN, so the resumed run (started without it) finishes them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import bench_env

pytestmark = pytest.mark.slow

FAST = ["--min-time", "0.05", "--max-time", "0.5", "--min-iterations", "20", "--target-ci", "0.05", "-q"]
SUITE = """name: tri
description: three quick cases for the kill/resume tests
models: [mlp-digits]
variants: [fp32]
scenarios: [single-stream, offline]
batch_sizes: [8, 16]
accuracy:
  gate: 0.99
measurement:
  min_time_s: 0.05
  max_time_s: 0.5
  min_iterations: 20
  target_ci: 0.05
  warmup_min_time_s: 0.02
  warmup_max_time_s: 0.5
"""


@pytest.fixture
def setup(tmp_path, fault_plugin_path, bench_cache):
    suite = tmp_path / "tri.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "results"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = bench_env(fault_plugin_path, bench_cache)
    env["TMPDIR"] = str(tmp)
    return suite, out, tmp, env


def _start(suite, out, env, fault):
    cmd = [sys.executable, "-m", "harness", "run", "--suite", str(suite), "--backend", "faulty", "--out", str(out),
           "--option", "fault_min_batch=16", "--timeout", "300", *FAST]
    return subprocess.Popen(cmd, env={**env, "BENCH_TEST_FAULT": fault}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_cases(out: Path, n: int, timeout: float = 240) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        js = list(out.glob(".*.partial.jsonl")) if out.exists() else []
        if js and len(js[0].read_text().splitlines()) >= 1 + n:
            return js[0]
        time.sleep(0.2)
    raise AssertionError(f"{n} cases never finished")


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def test_sigterm_is_handled_like_ctrl_c(setup):
    suite, out, tmp, env = setup
    proc = _start(suite, out, env, "hang")
    _wait_cases(out, 2)
    time.sleep(1.5)  # the third case hangs in its worker now
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    (rec,) = _records(out)
    assert rec["interrupted"] is True
    statuses = [c["status"] for c in rec["cases"]]
    assert statuses[:2] != ["skipped", "skipped"] and statuses[2] == "skipped"
    assert "SIGTERM" in rec["cases"][2]["reason"]
    assert not list(out.glob(".*.partial.jsonl"))  # the record replaced the journal
    assert not list(tmp.glob("bench-worker-*")), list(tmp.iterdir())  # worker temp dirs cleaned


def test_sigkill_then_resume_latest_gives_one_record(setup):
    suite, out, tmp, env = setup
    proc = _start(suite, out, env, "hang")
    journal = _wait_cases(out, 2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not _records(out)  # a hard kill: only the journal is left
    before = [json.loads(ln)["case"] for ln in journal.read_text().splitlines()[1:]]
    assert len(before) == 2
    # a journal-only run is listed by the readers as interrupted
    show = subprocess.run([sys.executable, "-m", "harness", "show", "latest", "--results", str(out), "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert show.returncode == 0 and json.loads(show.stdout)["interrupted"] is True
    res = subprocess.run([sys.executable, "-m", "harness", "run", "--resume", "latest", "--out", str(out), "-q"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode in (0, 1), res.stderr
    (rec,) = _records(out)
    assert rec["interrupted"] is False and len(rec["resumed"]) == 1
    assert [c["batch"] for c in rec["cases"]] == [1, 8, 16]
    assert all(c["status"] in ("ok", "invalid") for c in rec["cases"]), [c["reason"] for c in rec["cases"]]
    assert rec["cases"][:2] == before  # what was measured before the kill is kept as it was
    assert rec["run_id"] in journal.name and not journal.exists()
    assert "--resume" not in rec["command"]


def test_nan_model_beside_healthy_ones(setup):
    suite, out, tmp, env = setup
    proc = _start(suite, out, env, "nan")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    (rec,) = _records(out)
    by_batch = {c["batch"]: c for c in rec["cases"]}
    assert by_batch[1]["status"] in ("ok", "invalid") and by_batch[1]["accuracy"]["passed"] is True
    assert by_batch[8]["status"] in ("ok", "invalid") and by_batch[8]["accuracy"]["passed"] is True
    sick = by_batch[16]
    assert sick["status"] == "invalid" and "non-finite" in sick["reason"]
    assert sick["accuracy"]["passed"] is False and sick["accuracy"]["non_finite"]["count"] > 0
    assert any(w["path"].startswith("accuracy/") for w in sick.get("non_finite", []))


def test_sigkill_mid_repeats_then_resume_keeps_the_measured_repeats(setup):
    """--repeat 3: repeats that finished before a hard kill are on disk (journal) and --resume
    runs only the missing ones; the combined case holds the kept repeat as it was measured."""
    suite, out, tmp, env = setup
    cmd = [sys.executable, "-m", "harness", "run", "--suite", str(suite), "--backend", "faulty", "--out", str(out),
           "--option", "fault_min_batch=16", "--timeout", "300", "--repeat", "3", *FAST]
    proc = subprocess.Popen(cmd, env={**env, "BENCH_TEST_FAULT": "hang"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    journal = None
    while time.time() < deadline:  # round 0: cases 1 and 2 finish their first repeat, case 3 hangs
        js = list(out.glob(".*.partial.jsonl")) if out.exists() else []
        if js and sum(ln.startswith('{"repeat"') for ln in js[0].read_text().splitlines()) >= 2:
            journal = js[0]
            break
        time.sleep(0.2)
    assert journal is not None, "no repeat reached the journal"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    kept = [json.loads(ln)["repeat"] for ln in journal.read_text().splitlines() if ln.startswith('{"repeat"')]
    assert {r["repeat"] for r in kept} == {0} and all(r["case_id"] for r in kept)
    res = subprocess.run([sys.executable, "-m", "harness", "run", "--resume", "latest", "--out", str(out), "-q"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode in (0, 1), res.stderr
    (rec,) = _records(out)
    by_id = {c["case_id"]: c for c in rec["cases"]}
    assert all(len(c["repeats"]) == 3 for c in rec["cases"]), [c.get("repeats") for c in rec["cases"]]
    for r in kept:  # the repeat measured before the kill is repeat 0 of its case, unchanged
        first = by_id[r["case_id"]]["repeats"][0]
        assert first["n"] == r["result"]["latency_ns"]["n"] and first["p50"] == r["result"]["latency_ns"]["p50"]
