"""Black-box tests of the `bench` command line: the real entry point in a subprocess."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import bench_env, run_bench

FAST = ["--min-time", "0.05", "--max-time", "0.5", "--min-iterations", "20", "--target-ci", "0.05"]


def records_in(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("*.json"))


def test_help_and_list_import_no_framework():
    code = (
        "import sys\n"
        "from harness.cli import main\n"
        "for args in (['--help'], ['list', 'backends'], ['list', 'suites'], ['list', 'models'], ['run', '--help']):\n"
        "    rc = main(args)\n"
        "    assert rc == 0, (args, rc)\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'onnxruntime') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=bench_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY=\n" in out.stdout, out.stdout[-500:]
    assert "single-stream" in out.stdout and "cpu" in out.stdout


def test_run_smoke_end_to_end(tmp_path, bench_cache):
    out = tmp_path / "results"
    proc = run_bench(["run", "--suite", "smoke", "--backend", "cpu", "--out", str(out), "--tag", "who=test", *FAST],
                     env=bench_env(cache=bench_cache))
    files = records_in(out)
    assert len(files) == 1, proc.stderr
    record = json.loads(files[0].read_text())
    statuses = [c["status"] for c in record["cases"]]
    # exit code 0 iff every case is ok; 1 when any failed or is invalid (a noisy machine may invalidate)
    assert proc.returncode == (1 if {"failed", "invalid"} & set(statuses) else 0), (proc.stdout, proc.stderr)
    assert "failed" not in statuses, [c.get("reason") for c in record["cases"]]
    assert "p50" in proc.stdout and "mlp-digits" in proc.stdout and str(files[0]) in proc.stdout

    from harness.store.records import validation_errors

    assert validation_errors(record) == []
    assert record["tags"] == {"who": "test"}
    assert record["timer"]["overhead_ns"] > 0
    scen = {(c["scenario"], c["batch"]) for c in record["cases"]}
    assert scen == {("single-stream", 1), ("offline", 8)}
    for c in record["cases"]:
        assert len(c["samples_ns"]) == c["latency_ns"]["n"] == c["iterations"] >= 1
        assert c["latency_ns"]["p50"] <= c["latency_ns"]["p90"] <= c["latency_ns"]["p99"]
        assert c["accuracy"]["metric"] == "top1" and c["accuracy"]["value"] > 0.9
        assert c["accuracy"]["baseline_value"] == pytest.approx(c["accuracy"]["value"])
        assert c["threads"]["intra_op_num_threads"] >= 1
        assert c["memory"]["peak_rss_bytes"] > 10 * 2**20
        assert len(c["key"]) >= 16
    # single-stream: one sample per query, timed back to back until the stopping rule
    ss = next(c for c in record["cases"] if c["scenario"] == "single-stream")
    assert ss["iterations"] >= 20 and ss["headline"]["metric"] == "p90_latency"
    assert ss["stop_reason"] in ("converged", "max_time", "max_iterations")
    # offline (MLPerf): every sample of the window in one query issued at once; the headline is
    # samples completed / wall time of the window, not batch / mean latency
    off = next(c for c in record["cases"] if c["scenario"] == "offline")
    summ = off["generator"]["summary"]
    assert off["iterations"] == summ["queries"] == 1 and summ["completed"] == 1
    assert off["stop_reason"] is None  # the generator's window, not the stopping rule, ends offline
    assert summ["samples"] >= 8
    assert off["throughput"]["samples_per_s"] == pytest.approx(summ["samples"] / summ["duration_s"])
    assert off["headline"] == {"metric": "samples_per_s", "value": off["throughput"]["samples_per_s"], "unit": "1/s"}

    from harness import load_results

    df = load_results(out)
    assert len(df) == 2 and {"latency_ns.p50", "accuracy.value", "env.machine_id", "status"} <= set(df.columns)

    shown = run_bench(["show", "latest", "--results", str(out)])
    assert shown.returncode == 0 and record["run_id"] in shown.stdout and "single-stream" in shown.stdout


BAD_INPUTS = [
    (["run", "--suite", "nope", "--backend", "cpu"], "unknown suite 'nope'"),
    (["run", "--suite", "smoke", "--backend", "quantum"], "unknown backend 'quantum'"),
    (["run", "--suite", "smoke", "--backend", "cpu", "--runtime", "jax"], "unknown runtime 'jax'"),
    (["run", "--suite", "smoke", "--backend", "cpu", "--model", "nope"], "model 'nope' is not in suite"),
    (["run", "--suite", "smoke", "--backend", "cpu", "--min-time", "-1"], "must be non-negative"),
    (["run", "--suite", "smoke", "--backend", "cpu", "--max-time", "abc"], "is not a number"),
    (["run", "--suite", "smoke", "--backend", "cpu", "--batch", "0"], "must be positive"),
    (["run", "--suite", "smoke", "--backend", "cpu", "--batch", "8,x"], "not a valid int"),
    (["run", "--suite", "smoke", "--backend", "cpu", "--threads", "0"], "must be positive"),
    (["run", "--suite", "smoke", "--backend", "cpu", "--min-time", "5", "--max-time", "1"], "smaller than --min-time"),
    (["run", "--suite", "smoke", "--backend", "cpu", "--tag", "novalue"], "is not KEY=VALUE"),
    (["run", "--suite", "smoke", "--backend", "cpu", "--scenario", "burst"], "not one of"),
    (["run", "--backend", "cpu"], "missing --suite"),
    (["run", "--suite", "smoke", "--bogus"], "No such option"),
    (["show", "nope"], "no run 'nope'"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a[:4]) + f"#{i}" for i, (a, _) in enumerate(BAD_INPUTS)])
def test_bad_input_one_line_exit_2(tmp_path, args, message):
    args = [a if a != "--results" else a for a in args]
    if args[0] == "run":
        args = args + ["--out", str(tmp_path / "out")]
    if args[0] == "show":
        args = args + ["--results", str(tmp_path)]
    proc = run_bench(args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.json"))


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,message", [
    ("name: x\nmodels: [mlp-digits\n", "malformed YAML"),
    ("name: x\nmodels: []\n", "models"),
    ("name: x\nmodels: [mlp-digits]\nbatch_sizes: [-1]\n", "batch_sizes"),
    ("name: x\nmodels: [mlp-digits]\nflavour: spicy\n", "flavour"),
    ("name: x\nmodels: [no-such-model]\n", "unknown model 'no-such-model'"),
    ("name: x\nmodels: [mlp-digits]\nvariants: [fp7]\n", "unknown variant 'fp7'"),
    ("- just\n- a list\n", "mapping"),
])
def test_bad_suite_files(tmp_path, text, message):
    suite = _write(tmp_path / "s.yaml", text)
    proc = run_bench(["run", "--suite", str(suite), "--backend", "cpu", "--out", str(tmp_path / "out")])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unwritable_output_dir(tmp_path):
    blocker = _write(tmp_path / "file", "not a dir")
    proc = run_bench(["run", "--suite", "smoke", "--backend", "cpu", "--out", str(blocker / "sub")])
    assert proc.returncode == 2 and "not writable" in proc.stderr, proc.stderr


def test_unavailable_and_broken_backends(tmp_path, fault_plugin_path):
    env = bench_env(fault_plugin_path)
    proc = run_bench(["run", "--suite", "smoke", "--backend", "nohw", "--out", str(tmp_path)], env=env)
    assert proc.returncode == 2
    assert "backend 'nohw' is not available here: no NoHW accelerator found" in proc.stderr
    listing = run_bench(["list", "backends", "--json"], env=env)
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert rows["cpu"]["available"] is True
    assert rows["broken"]["available"] is False and "failed to load" in rows["broken"]["reason"]
    assert rows["nohw"]["available"] is False
    proc = run_bench(["run", "--suite", "smoke", "--backend", "broken", "--out", str(tmp_path)], env=env)
    assert proc.returncode == 2 and "failed to load" in proc.stderr
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("fault,reason", [
    ("raise", "RuntimeError: injected failure"),
    ("segfault", "SIGSEGV"),
    ("abort", "SIGABRT"),
    ("oom", "SIGKILL"),
    ("hang", "timed out after 3"),
])
def test_worker_failures_are_recorded_and_run_continues(tmp_path, fault_plugin_path, bench_cache, fault, reason):
    out = tmp_path / "r"
    proc = run_bench(["run", "--suite", "smoke", "--backend", "faulty", "--out", str(out), "--timeout", "3",
                      "--option", f"fault={fault}", "--option", "fault_min_batch=8", *FAST],
                     env=bench_env(fault_plugin_path, bench_cache))
    assert proc.returncode == 1, proc.stderr
    (record_file,) = records_in(out)
    record = json.loads(record_file.read_text())
    by_scen = {c["scenario"]: c for c in record["cases"]}
    assert by_scen["single-stream"]["status"] in ("ok", "invalid")  # measured normally
    failed = by_scen["offline"]
    assert failed["status"] == "failed" and reason in failed["reason"], failed["reason"]
    assert failed["worker"]["stderr_tail"] is not None
    from harness.store.records import validation_errors

    assert validation_errors(record) == []


def test_ctrl_c_keeps_finished_cases(tmp_path, fault_plugin_path, bench_cache):
    out = tmp_path / "r"
    out.mkdir()
    cmd = [sys.executable, "-m", "harness", "run", "--suite", "smoke", "--backend", "faulty", "--out", str(out),
           "--option", "fault=hang", "--option", "fault_min_batch=8", "--timeout", "120", *FAST]
    proc = subprocess.Popen(cmd, env=bench_env(fault_plugin_path, bench_cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    journal = None
    while time.time() < deadline:
        js = list(out.glob(".*.partial.jsonl"))
        if js and len(js[0].read_text().splitlines()) >= 2:  # header + the first finished case
            journal = js[0]
            break
        time.sleep(0.2)
    assert journal is not None, "first case never finished"
    time.sleep(1.0)  # the second case is now hanging in its worker
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    (record_file,) = records_in(out)
    record = json.loads(record_file.read_text())
    assert record["interrupted"] is True
    assert [c["status"] for c in record["cases"]][1] == "skipped"
    assert record["cases"][0]["status"] in ("ok", "invalid") and record["cases"][0]["samples_ns"]
    assert not journal.exists()
    assert "interrupted" in stdout


def test_torch_runtime_matches_onnxruntime_accuracy(tmp_path, bench_cache):
    out = tmp_path / "r"
    records = {}
    for runtime in ("torch", "onnxruntime"):
        proc = run_bench(["run", "--suite", "smoke", "--backend", "cpu", "--runtime", runtime, "--scenario",
                          "single-stream", "--out", str(out / runtime), "--threads", "1", *FAST],
                         env=bench_env(cache=bench_cache))
        assert proc.returncode in (0, 1), proc.stderr
        (f,) = records_in(out / runtime)
        records[runtime] = json.loads(f.read_text())["cases"][0]
    t, o = records["torch"], records["onnxruntime"]
    assert t["status"] in ("ok", "invalid") and t["runtime"] == "torch"
    assert t["threads"]["num_threads"] == 1 and o["threads"]["intra_op_num_threads"] == 1
    assert t["backend_info"]["mode"] == "eager"
    assert t["accuracy"]["value"] == pytest.approx(o["accuracy"]["value"])
    assert t["accuracy"]["fidelity"]["max_abs_diff"] < 1e-4  # same weights, two runtimes
    assert t["key"] != o["key"]  # runtime is part of the comparability key
