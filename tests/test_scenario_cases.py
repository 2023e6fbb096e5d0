"""Load-generator scenarios through the real case path (worker process, smoke suite), bad
input, and MLPerf LoadGen as the second driver."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import bench_env, run_bench

SHORT = ["--min-time", "0.2", "--max-time", "1.0", "--min-iterations", "20", "--target-ci", "0.05"]


@pytest.mark.parametrize("args,message", [
    (["--scenario", "server", "--target-qps", "0"], "must be positive"),
    (["--scenario", "server", "--target-qps", "-3"], "must be positive"),
    (["--scenario", "server", "--latency-bound", "0"], "must be positive"),
    (["--scenario", "multi-stream", "--multistream-samples", "0"], "must be positive"),
    (["--driver", "nope"], "'nope' is not one of"),
])
def test_bad_scenario_options_one_line_exit_2(tmp_path, args, message):
    proc = run_bench(["run", "--suite", "smoke", *args, "--out", str(tmp_path / "o")], cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_programmatic_bad_options_and_missing_loadgen(monkeypatch):
    from harness.run import lg_driver
    from harness.errors import BenchError
    from harness.run.runner import _check_scenario_options

    for bad, msg in (({"target_qps": 0.0}, "target QPS must be > 0"), ({"latency_bound_ms": -1.0}, "latency bound"),
                     ({"samples_per_query": 0}, "samples per query")):
        with pytest.raises(BenchError, match=msg):
            _check_scenario_options(bad)
    monkeypatch.setattr(lg_driver, "available", lambda: False)
    with pytest.raises(BenchError, match="pip install 'bench\\[loadgen\\]'") as exc:
        _check_scenario_options({"driver": "loadgen"})
    assert exc.value.exit_code == 2


def test_missing_loadgen_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    from harness.run import lg_driver
    from harness.cli import main

    monkeypatch.setattr(lg_driver, "available", lambda: False)
    rc = main(["run", "--suite", "smoke", "--driver", "loadgen", "--out", str(tmp_path / "o"), "-q"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "mlcommons-loadgen" in err[0]


def _record(out: Path) -> dict:
    return json.loads(next(out.glob("*.json")).read_text())


@pytest.mark.slow
def test_server_multistream_offline_end_to_end(tmp_path, bench_cache):
    out = tmp_path / "out"
    proc = run_bench(["run", "--suite", "smoke", "--scenario", "server,multi-stream,offline", "--latency-bound", "100",
                      "--out", str(out), "-q", *SHORT], cwd=tmp_path, env=bench_env(cache=bench_cache))
    assert proc.returncode in (0, 1), proc.stderr
    cases = {c["scenario"]: c for c in _record(out)["cases"]}
    srv = cases["server"]
    assert srv["headline"]["metric"] == "max_qps"
    steps = srv["generator"]["steps"]
    assert len(steps) >= 2 and {s["phase"] for s in steps} >= {"ramp"}
    if srv["status"] == "ok":  # a valid peak: p99 (early-stopping estimate) within the bound
        assert srv["headline"]["value"] > 0
        assert srv["generator"]["summary"]["early_stopping"]["estimate"] <= 100e6
    else:
        assert srv["reason"].split(":")[0] in ("latency_bound", "too_few_queries", "early_stopping"), srv["reason"]
    q = srv["generator"]["queries"]
    assert q["mode"] == "open" and q["n"] == srv["iterations"] and len(q["completed"]) == q["n"]
    assert srv["generator"]["concurrency"]["used"] >= 1
    ms = cases["multi-stream"]
    assert ms["headline"]["metric"] == "p99_latency" and ms["generator"]["queries"]["samples"] == [8]
    off = cases["offline"]
    assert off["headline"]["metric"] == "samples_per_s" and off["headline"]["value"] > 0
    assert off["generator"]["summary"]["samples"] >= 1024
    # the report draws the latency-vs-load curve: one point per QPS step tried
    from harness import report

    figs = report.figures(str(out))
    assert "load" in figs
    assert len(figs["load"].data[0].x) == len(steps)
    for c in cases.values():
        integ = c["generator"]["integrity"]
        assert integ["in_window_accuracy"]["passed"] is True
        assert integ["caching"]["passed"] is True
        assert c["accuracy"]["passed"] is True


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mlperf_loadgen") is None,
                    reason="mlcommons-loadgen not installed (pip install 'bench[loadgen]'; CI installs it)")
def test_loadgen_driver_agrees_with_bench_on_a_server_case(tmp_path, bench_cache):
    out = tmp_path / "out"
    proc = run_bench(["run", "--suite", "smoke", "--scenario", "server", "--target-qps", "400", "--latency-bound", "200",
                      "--driver", "loadgen", "--out", str(out), "-q", *SHORT], cwd=tmp_path, env=bench_env(cache=bench_cache))
    assert proc.returncode in (0, 1), proc.stderr
    c = _record(out)["cases"][0]
    lg = c["loadgen"]
    assert lg["scenario"] == "Server" and lg["result"] in ("VALID", "INVALID")
    assert lg["settings"]["server_target_qps"] == 400.0
    # both drivers schedule Poisson arrivals at 400 QPS on an unsaturated system: the completed
    # rates agree within 10 %
    assert c["headline"]["metric"] == "qps"
    assert abs(lg["headline"]["value"] / c["headline"]["value"] - 1) < 0.10, (lg["headline"], c["headline"])
    assert lg["valid"] is True and c["status"] == "ok", (lg["result"], c["reason"])


def test_accuracy_pass_is_stored_then_verified_and_fresh_on_request(tmp_path):
    """The first case of a system runs the full accuracy pass and stores it; later cases of the same
    system (the offline case at another batch, the next run) verify a share of it through their own
    session and reuse it; --fresh-accuracy runs every pass in full."""
    cache = tmp_path / "cache"

    def sources(*extra):
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        proc = run_bench(["run", "--suite", "smoke", "--out", str(out), "-q", *SHORT, *extra], cwd=tmp_path,
                         env=bench_env(cache=cache))
        assert proc.returncode in (0, 1), proc.stderr
        cases = {c["scenario"]: c for c in _record(out)["cases"]}
        return {k: c["accuracy"]["source"] for k, c in cases.items()}, cases

    first, cases = sources()
    assert first["single-stream"]["kind"] == "pass" and first["single-stream"]["stored"]
    assert first["offline"]["kind"] == "verified" and first["offline"]["stored_batch"] == 1
    assert first["offline"]["verified_samples"] >= 16
    value = cases["single-stream"]["accuracy"]["value"]
    assert cases["offline"]["accuracy"]["value"] == value
    # where each case's time went: its phases, within the worker's wall time
    for c in cases.values():
        ph = c["phases_s"]
        assert {"prepare", "warmup", "measure", "accuracy"} <= set(ph) and all(v >= 0 for v in ph.values())
        assert sum(ph.values()) <= c["worker"]["wall_s"]
    second, cases = sources()
    assert {s["kind"] for s in second.values()} == {"verified"}
    assert cases["single-stream"]["accuracy"]["value"] == value
    fresh, cases = sources("--fresh-accuracy")
    assert {s["kind"] for s in fresh.values()} == {"pass"}
    assert {c["accuracy"]["value"] for c in cases.values()} == {value}


def test_a_bound_below_one_querys_own_time_says_no_load_can_meet_it(tmp_path, bench_cache):
    out = tmp_path / "out"
    proc = run_bench(["run", "--suite", "smoke", "--scenario", "server", "--latency-bound", "0.0001", "--out", str(out),
                      "-q", *SHORT], cwd=tmp_path, env=bench_env(cache=bench_cache))
    assert proc.returncode == 1, proc.stderr
    c = _record(out)["cases"][0]
    assert c["status"] == "invalid" and c["headline"] is None
    assert "no load can meet the bound" in c["reason"] and c["reason"].startswith("latency_bound")
    # no peak search spends the case's budget proving it: one short step, recorded with its query log
    from harness.run.scenario_case import INFEASIBLE_STEP_QUERIES

    assert "no peak search was run" in c["reason"]
    steps = c["generator"]["steps"]
    assert len(steps) == 1 and not steps[0]["valid"]
    assert steps[0]["queries"] <= INFEASIBLE_STEP_QUERIES
