"""--repeat K: the schedule, combining repeats, the headline-percentile rule, options in the key, and a
compare that decides from two runs with repeats (no history, no --assume-stable)."""
from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pytest

from harness.run import repeats as R
from harness.analyze.compare import compare_records, make_settings
from harness.errors import BenchError
from harness.measure.timing import MeasureSettings, verdict
from harness.measure.stats import summarize
from tests.synth import make_case, make_record


# ---------------------------------------------------------------- schedule, profiles, --pin

def test_schedule_is_round_robin_over_cases():
    assert R.schedule(3, 2) == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    assert R.schedule(2, 1) == [(0, 0), (1, 0)]
    # every case's repeat r comes before any case's repeat r + 1
    order = R.schedule(4, 5)
    for (i, r), (j, s) in zip(order, order[1:]):
        assert s >= r
    with pytest.raises(ValueError):
        R.schedule(2, 0)


def test_profiles_and_pin_parsing():
    assert R.profile(None)["repeat"] == 1 and R.profile("quick")["measurement"] == {}
    assert R.profile("nightly")["repeat"] == 5 and R.profile("rigorous")["repeat"] == 10
    with pytest.raises(BenchError, match="unknown profile 'fast'"):
        R.profile("fast")
    assert R.parse_cpus("0,2-3", {0, 1, 2, 3}) == [0, 2, 3]
    with pytest.raises(BenchError, match="not available"):
        R.parse_cpus("7", {0, 1})
    with pytest.raises(BenchError, match="not a CPU number"):
        R.parse_cpus("a-b")


def test_worker_is_pinned_and_reports_its_cpus():
    from harness.run.worker import run_in_worker

    cpu = min(os.sched_getaffinity(0))
    res = run_in_worker("tests.worker_targets:echo", {"x": 1}, timeout_s=60, cpus=[cpu])
    assert res.ok and res.cpus == [cpu] and res.to_record()["cpus"] == [cpu]
    bad = run_in_worker("tests.worker_targets:echo", {"x": 1}, timeout_s=60, cpus=[100_000])
    assert not bad.ok and "cannot pin to CPUs [100000]" in bad.reason


# ---------------------------------------------------------------- combining repeats

def _result(rng, level, *, n=600, status="ok", valid=True, settled=True, sigma=0.05):
    """What run_case returns for one process (the fields combine reads)."""
    samples = np.maximum(1, rng.lognormal(math.log(level), sigma, n)).astype(np.int64)
    st = summarize(samples)
    return {"status": status, "reason": None if valid else "ci_not_reached: x", "latency_ns": st,
            "samples_ns": [int(x) for x in samples], "iterations": n, "duration_s": float(samples.sum() / 1e9),
            "warmup": {"iterations": 10, "duration_s": 0.1, "settled": settled}, "stop_reason": "converged",
            "attempts": [], "validity": {"valid": valid, "reasons": [] if valid else ["ci_not_reached: x"],
                                         "warnings": []},
            "accuracy": {"metric": "top1", "value": 0.97, "passed": True, "n_samples": 360},
            "throughput": {"samples_per_s": 1e9 / st["mean"], "queries_per_s": 1e9 / st["mean"]},
            "memory": {"peak_rss_bytes": 100}, "worker": {"wall_s": 1.0}}


def test_combine_uses_the_nested_bootstrap_and_keeps_each_repeat():
    rng = np.random.default_rng(0)
    levels = [100_000, 104_000, 97_000, 101_000, 99_000]
    res = [_result(rng, lv) for lv in levels]
    out = R.combine(res, scenario="single-stream", batch=1, settings=MeasureSettings())
    lat = out["latency_ns"]
    assert lat["ci_method"] == "nested_bootstrap" and lat["n"] == 5 * 600 == len(out["samples_ns"])
    assert lat["p50"] == pytest.approx(np.mean([r["latency_ns"]["p50"] for r in res]))
    assert lat["median_ci"][0] < lat["p50"] < lat["median_ci"][1]
    assert [r["index"] for r in out["repeats"]] == [0, 1, 2, 3, 4]
    bp = out["between_process"]
    assert set(bp) == {"p50", "p90"} and bp["p50"]["k"] == 5
    assert 0.01 < bp["p50"]["between_cv"] < 0.05 and bp["p50"]["between_share"] > 0.8
    assert out["status"] == "ok" and out["headline"]["metric"] == "p90_latency"
    assert out["throughput"]["samples_per_s"] == pytest.approx(1e9 / lat["mean"])
    from harness.store.records import validation_errors  # the combined case is schema-valid

    case = make_case()
    case.update(out)
    assert validation_errors(make_record([case])) == []


def test_combine_validity_majority_failed_repeats_and_warmup():
    rng = np.random.default_rng(1)
    s = MeasureSettings()
    minority = [_result(rng, 1e5), _result(rng, 1e5, valid=False), _result(rng, 1e5, settled=False)]
    v = R.combine(minority, scenario="single-stream", batch=1, settings=s)["validity"]
    assert v["valid"] and any(w.startswith("repeat 2: invalid") for w in v["warnings"])
    assert any(w.startswith("warmup_not_settled") for w in v["warnings"])
    majority = [_result(rng, 1e5), _result(rng, 1e5, valid=False), _result(rng, 1e5, valid=False)]
    v = R.combine(majority, scenario="single-stream", batch=1, settings=s)["validity"]
    assert not v["valid"] and v["reasons"][0].startswith("repeats_invalid: 2 of 3")
    failed = {"status": "failed", "reason": "crashed: SIGSEGV", "worker": {}}
    out = R.combine([_result(rng, 1e5), failed, _result(rng, 1e5)], scenario="offline", batch=8, settings=s)
    assert out["status"] == "ok" and len(out["repeats"]) == 3 and out["repeats"][1]["status"] == "failed"
    assert any("repeat 2: failed: crashed" in w for w in out["validity"]["warnings"])
    allfail = R.combine([failed, failed], scenario="offline", batch=8, settings=s)
    assert allfail["status"] == "failed" and allfail["reason"].startswith("all 2 repeats")


# ---------------------------------------------------------------- the headline percentile rule

def _stats(n, rng=np.random.default_rng(5)):
    x = rng.lognormal(13, 0.05, n)
    return summarize(x), x


def test_single_stream_p90_needs_the_early_stopping_count():
    s = MeasureSettings(min_iterations=10, target_ci=0.5)
    st, x = _stats(40)
    v = verdict(st, "converged", s, scenario="single-stream", samples=x)
    assert not v["valid"] and v["reasons"][0].startswith("headline_percentile: 40 samples < 44")
    assert v["headline_percentile"]["metric"] == "p90" and v["headline_percentile"]["min_queries"] == 44
    st, x = _stats(400)
    v = verdict(st, "converged", s, scenario="single-stream", samples=x)
    assert v["valid"], v
    hp = v["headline_percentile"]
    assert hp["early_stopping_estimate"] >= st["p90"] and hp["ci"] == st["p90_ci"]
    # the same 400 samples cannot bound a p99 (459 needed): invalid for multi-stream / server
    v = verdict(st, "converged", s, scenario="server", samples=x)
    assert not v["valid"] and "p99" in v["reasons"][0]
    # offline's headline is a throughput: no percentile rule; no scenario: old behaviour
    assert "headline_percentile" not in verdict(st, "converged", s, scenario="offline")
    assert verdict(_stats(40)[0], "converged", s)["valid"]


def test_p90_without_ci_is_invalid_even_above_the_count():
    s = MeasureSettings(min_iterations=10, target_ci=0.5)
    st, x = _stats(60)
    st = dict(st, p90_ci=None)
    v = verdict(st, "converged", s, scenario="single-stream", samples=x)
    assert any(r.startswith("headline_percentile: too few samples (60)") for r in v["reasons"])
    # strongly autocorrelated samples: the reason says the effective count is what was short
    v = verdict(dict(st, n_eff=6.5), "converged", s, scenario="single-stream", samples=x)
    (r,) = [r for r in v["reasons"] if r.startswith("headline_percentile")]
    assert "effective sample size of the median 6.5" in r


def test_unsettled_warmup_is_reported():
    st, x = _stats(400)
    v = verdict(st, "converged", MeasureSettings(target_ci=0.5), warmup_settled=False)
    assert v["valid"] and any(w.startswith("warmup_not_settled") for w in v["warnings"])


# ---------------------------------------------------------------- options in the key: never matched

def _keyed_case(options):
    from harness.run.runner import _finish

    class PC:
        case_id = "m/fp32/cpu-onnxruntime/single-stream/b1"

        def as_dict(self):
            return {"model": "m", "variant": "fp32", "backend": "cpu", "runtime": "onnxruntime",
                    "precision": "fp32", "batch": 1, "scenario": "single-stream"}

    from harness.run.runner import _identity

    base = _identity(PC(), device="cpu-x", runtime_version="1.0", threads=1, simulated=False, options=options)
    measured = make_case(seed=3)
    result = {k: measured[k] for k in ("status", "reason", "latency_ns", "samples_ns", "throughput", "validity",
                                       "accuracy", "iterations", "stop_reason")}
    return _finish(base, None, result)


@pytest.mark.parametrize("option", ["io_binding", "compile", "cuda_graphs", "amp", "tf32", "tensorrt",
                                    "jit_compile", "steps_per_execution"])
def test_runs_differing_only_in_a_measured_option_never_match(option):
    from harness.plan.plugins import get_backend
    from harness.run.runner import _key_options

    cpu = get_backend("cpu")
    plain = _keyed_case(_key_options(cpu, {}))
    changed = _keyed_case(_key_options(cpu, {option: "7"}))
    cmp = compare_records(make_record([plain]), make_record([changed]), make_settings(assume_stable=True))
    assert {c.match for c in cmp.cases} == {"new-only", "base-only"} and cmp.exit_code == 3
    # the backend's declared default keeps the key (io_binding=0 is what cpu does anyway)
    same = _keyed_case(_key_options(cpu, {"io_binding": "0"}))
    assert same["key"] == plain["key"]


def test_option_declared_not_measured_keeps_the_key():
    from harness.run.runner import _key_options

    class Quiet:
        options_not_measured = ("log_level",)
        option_defaults = {}

    assert _keyed_case(_key_options(Quiet(), {"log_level": "3"}))["key"] == _keyed_case({})["key"]
    assert _keyed_case(_key_options(Quiet(), {"io_binding": "1"}))["key"] != _keyed_case({})["key"]


# ---------------------------------------------------------------- compare from two runs with repeats

def repeat_case(seed, *, levels=None, k=5, sigma_between=0.03, factor=1.0, scenario="single-stream"):
    rng = np.random.default_rng(seed)
    levels = levels or [100_000 * math.exp(sigma_between * rng.standard_normal()) for _ in range(k)]
    res = [_result(rng, lv * factor) for lv in levels]
    case = make_case(scenario=scenario)
    case.update(R.combine(res, scenario=scenario, batch=1, settings=MeasureSettings()))
    return case


def slower_copy(record, factor):
    """The same run with every sample (and every figure derived from them) ``factor`` times slower."""
    out = copy.deepcopy(record)
    out["run_id"] = out["run_id"][:-8] + "ffffffff"
    for c in out["cases"]:
        c["samples_ns"] = [int(round(x * factor)) for x in c["samples_ns"]]
        for k, v in list(c["latency_ns"].items()):
            if k in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max"):
                c["latency_ns"][k] = v * factor
            elif k.endswith("_ci") and v:
                c["latency_ns"][k] = [x * factor for x in v]
        for r in c.get("repeats") or []:
            for k in ("p50", "p90", "p99", "mean"):
                r[k] = r[k] * factor
            r["throughput"] = r["throughput"] / factor
        c["throughput"] = {k: v / factor for k, v in c["throughput"].items()}
    return out


def test_same_code_with_repeats_is_unchanged_without_history():
    base = make_record([repeat_case(1)])
    new = make_record([repeat_case(2)])
    cmp = compare_records(base, new, make_settings())  # no history, no --assume-stable
    assert cmp.exit_code == 0, [(ch.metric, ch.verdict, ch.reason) for c in cmp.cases for ch in c.changes]
    ch = next(ch for ch in cmp.cases[0].changes if ch.metric == "p50")
    assert ch.extra["repeats"]["k_base"] == 5 and ch.extra["repeats"]["dof"] == 8


def test_one_and_a_half_times_slower_copy_is_a_regression_without_history():
    base = make_record([repeat_case(1)])
    cmp = compare_records(base, slower_copy(base, 1.5), make_settings())
    assert cmp.exit_code == 1
    p50 = next(ch for ch in cmp.cases[0].changes if ch.metric == "p50")
    assert p50.verdict == "regression" and p50.ratio == pytest.approx(1.5, rel=1e-3) and p50.ci[0] > 1.2
    thr = next(ch for ch in cmp.cases[0].changes if ch.metric == "throughput")
    assert thr.verdict == "regression" and thr.ratio == pytest.approx(1 / 1.5, rel=1e-3)


def test_a_change_inside_the_process_noise_is_unchanged_and_says_what_is_visible():
    # 8 % slower, but processes scatter by 15 %: beyond the threshold, not significant between
    # processes -> the two runs decide "unchanged" (exit 0), and the note gives the visible change
    base = make_record([repeat_case(3, sigma_between=0.15)])
    new = make_record([repeat_case(4, sigma_between=0.15, factor=1.08)])
    cmp = compare_records(base, new, make_settings())
    p50 = next(ch for ch in cmp.cases[0].changes if ch.metric == "p50")
    assert not p50.significant and p50.verdict == "unchanged" and cmp.exit_code == 0
    assert "not significant between processes" in p50.reason and p50.extra["repeats"]["detectable_change"] > 0.1


def test_single_process_runs_keep_the_history_rule():
    base, new = make_record([make_case(seed=1)]), make_record([make_case(seed=2, median_ns=150_000)])
    cmp = compare_records(base, new, make_settings())
    assert cmp.exit_code == 3  # run-to-run noise unknown without history
    ch = next(ch for ch in cmp.cases[0].changes if ch.metric == "p50")
    assert "repeats" not in ch.extra and ch.extra["run_to_run"]["beyond"] is None


def test_history_is_pooled_into_the_between_process_noise():
    history = [make_record([repeat_case(100 + i, k=3)]) for i in range(20)]
    for h in history:  # same machine and key, earlier than NEW
        h["started_at"] = "2026-10-01T00:00:00Z"
    widths_alone, widths_pooled = [], []
    for seed in range(12):
        base = make_record([repeat_case(2 * seed, k=3)])
        new = make_record([repeat_case(2 * seed + 1, k=3, factor=1.07)])
        alone = next(ch for ch in compare_records(base, new, make_settings()).cases[0].changes if ch.metric == "p50")
        pooled = next(ch for ch in compare_records(base, new, make_settings(), history=history).cases[0].changes
                      if ch.metric == "p50")
        assert alone.extra["repeats"]["history_runs"] == 0 and pooled.extra["repeats"]["history_runs"] == 20
        assert pooled.extra["repeats"]["dof"] == alone.extra["repeats"]["dof"] + 19
        widths_alone.append(math.log(alone.ci[1] / alone.ci[0]))
        widths_pooled.append(math.log(pooled.ci[1] / pooled.ci[0]))
    # 4 dof alone (t = 4.6 at 99 %) against 23 pooled (t = 2.8): the interval is tighter on average
    assert np.mean(widths_pooled) < 0.8 * np.mean(widths_alone)


@pytest.mark.parametrize("args,message", [
    (["--pin", "99999"], "--pin 99999: CPU(s) 99999 not available"),
    (["--pin", "x"], "is not a CPU number or range"),
    (["--profile", "fast"], "Invalid value for '--profile'"),
    (["--repeat", "0"], "must be positive"),
])
def test_bad_repeat_options_are_one_line_exit_2(capsys, args, message):
    from harness.cli import main

    rc = main(["run", "--suite", "smoke", "--backend", "cpu", *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
