"""Scenario logic (harness.measure.scenarios) and early stopping (harness.measure.stats) on synthetic systems."""
from __future__ import annotations

import time

import numpy as np
import pytest

from harness.measure import loadgen as lg
from harness.measure import scenarios as sc
from harness.measure.stats import early_stopping_min_queries, early_stopping_percentile
from harness.measure.sut import SessionSUT


# --- early stopping -----------------------------------------------------------------------
def test_early_stopping_minimum_counts():
    assert early_stopping_min_queries(0, 0.90) == 44  # 0.9^44 <= 0.01 < 0.9^43
    assert early_stopping_min_queries(0, 0.99) == 459
    more = [early_stopping_min_queries(t, 0.99) for t in range(0, 20)]
    assert more == sorted(more) and more[-1] > more[0]
    x = np.arange(1.0, 44.0)
    assert not early_stopping_percentile(x, 0.9)["valid"]
    r = early_stopping_percentile(np.arange(1.0, 45.0), 0.9)
    assert r["valid"] and r["estimate"] == 44.0 and r["overlatency_allowed"] == 0


def test_early_stopping_is_a_conservative_upper_bound():
    rng = np.random.default_rng(0)
    true_p90 = -np.log(0.1)  # of Exp(1)
    hits, over_empirical = 0, 0
    trials = 1000
    for _ in range(trials):
        x = rng.exponential(1.0, 300)
        r = early_stopping_percentile(x, 0.9, confidence=0.99)
        hits += r["estimate"] >= true_p90
        over_empirical += r["estimate"] >= np.quantile(x, 0.9)
    assert over_empirical == trials  # never below the plain percentile
    assert hits / trials >= 0.98  # covers the true p90 ~99 % of the time
    big = early_stopping_percentile(rng.exponential(1.0, 200_000), 0.9)
    assert abs(big["estimate"] / true_p90 - 1) < 0.02  # and converges to it


def test_early_stopping_rejects_bad_quantile():
    with pytest.raises(ValueError):
        early_stopping_percentile([1.0, 2.0], 90)


# --- settings and judgement ---------------------------------------------------------------
@pytest.mark.parametrize("kw,msg", [({"target_qps": 0}, "target QPS must be > 0"),
                                    ({"target_qps": -3}, "target QPS must be > 0"),
                                    ({"latency_bound_ms": 0}, "latency bound must be > 0"),
                                    ({"samples_per_query": 0}, "samples per query must be an integer >= 1")])
def test_settings_reject_bad_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        sc.ScenarioSettings(**kw).validate()


def _open_log(lat_ms, qps=1000.0):
    n = len(lat_ms)
    sched = lg.poisson_schedule(qps, n, 0)
    done = sched + (np.asarray(lat_ms) * 1e6).astype(np.int64)
    return lg.QueryLog(sched, sched.copy(), sched.copy(), done, np.ones(n, np.int64), 0, "open", qps)


def test_judge_server_bound_and_counts():
    s = sc.ScenarioSettings(scenario="server", latency_bound_ms=10, min_duration_s=0.1, min_queries=500)
    fine = sc.summarize_log(_open_log(np.full(1000, 2.0)), s)
    assert sc.judge(fine, s)["valid"]
    slow = np.full(1000, 2.0)
    slow[::50] = 30.0  # 2 % over the bound: the p99 is over it
    v = sc.judge(sc.summarize_log(_open_log(slow), s), s)
    assert not v["valid"] and v["reasons"][0].startswith("latency_bound")
    few = sc.judge(sc.summarize_log(_open_log(np.full(100, 2.0)), s), s)
    toks = [r.split(":")[0] for r in few["reasons"]]
    assert "too_few_queries" in toks and "early_stopping" in toks


# --- peak search --------------------------------------------------------------------------
@pytest.mark.parametrize("start", [100.0, 7300.0, 90_000.0])
def test_search_peak_brackets_known_capacity(start):
    cap = 7300.0
    best, steps = sc.search_peak(lambda q: {"valid": q <= cap}, start, tolerance=0.02, max_steps=40)
    assert cap * 0.98 <= best["qps"] <= cap
    assert steps[0]["phase"] == "ramp" and any(s["phase"] == "bisect" for s in steps) or best["qps"] == cap
    assert all("qps" in s for s in steps)


class _VirtualTime:
    """A clock that moves 1 µs per reading and jumps on sleep: the generator runs in virtual time."""

    def __init__(self):
        self.t = 0

    def clock(self) -> int:
        self.t += 1000
        return self.t

    def sleep(self, s: float) -> None:
        self.t += int(s * 1e9)


class _QueueSUT:
    """A single-server queue with a fixed service time, simulated exactly in virtual time: each
    query starts at max(its issue time, the server's free time) and takes ``service_ns``.
    Capacity = 1 / service. Nothing sleeps, so the test does not depend on the machine's load."""

    threaded = False

    def __init__(self, service_s: float, vt: _VirtualTime):
        self.service_ns = int(service_s * 1e9)
        self.free_at = 0
        self.vt = vt

    def issue(self, qid, samples, done):
        start = max(self.vt.clock(), self.free_at)
        self.free_at = start + self.service_ns
        done(qid, start, self.free_at)


def test_search_peak_on_a_queue_of_known_capacity():
    service = 0.002  # capacity 500 QPS
    vt = _VirtualTime()
    sut = _QueueSUT(service, vt)
    s = sc.ScenarioSettings(scenario="server", latency_bound_ms=40, min_duration_s=2.0, max_duration_s=100, min_queries=600,
                            search_tolerance=0.03, search_max_steps=14)
    best, steps = sc.search_peak(lambda q: sc.run_server(sut, q, s, 4, clock=vt.clock, sleep=vt.sleep)["validity"],
                                 50.0,
                                 tolerance=s.search_tolerance, max_steps=s.search_max_steps)
    trace = [(round(x["qps"]), x["valid"], x["reasons"][:1]) for x in steps]
    assert best is not None, trace
    # M/D/1 with a bound of 20 service times: the peak lies just under the capacity, never far over
    assert 0.6 / service <= best["qps"] <= 1.1 / service, trace
    assert any(not x["valid"] for x in steps) and steps[0]["phase"] == "ramp"


# --- integrity ----------------------------------------------------------------------------
def _cache_run(delay_s):
    cache = {}

    def run(x):
        key = x["x"].tobytes()
        if key in cache:
            return cache[key]
        time.sleep(delay_s)
        cache[key] = [x["x"] * 2]
        return cache[key]
    return run


def _query_runner(run, data):
    sut = SessionSUT(run, data, inline=True)
    return lambda q: run(sut.inputs_for(q))


@pytest.mark.parametrize("batch", [1, 8])
def test_caching_check_flags_a_caching_system_and_passes_an_honest_one(batch):
    data = {"x": np.arange(400, dtype=np.float32)[:, None]}
    seen = []

    def caching(x, cached=_cache_run(0.001)):
        seen.append(tuple(x["x"].ravel()))
        return cached(x)

    r = sc.caching_check(_query_runner(caching, data), 400, batch, min_pairs=8, min_time_s=0)
    assert r["passed"] is False and r["ratio"] < 0.5 and r["pairs"] == 8
    # the repeated query is one batch (samples 0..batch-1); the distinct ones never repeat it
    assert seen.count(tuple(range(batch))) == 8 and len(r["distinct_ns"]) == 8
    assert len(set(seen)) == len(seen) - 7  # only the same batch repeats

    def honest(x):
        time.sleep(0.001)
        return [x["x"] * 2]

    r2 = sc.caching_check(_query_runner(honest, data), 400, batch, min_pairs=16, min_time_s=0)
    assert r2["passed"] is True and 0.75 < r2["ratio"] < 1.33
    # too few samples for a distinct batch: no verdict, but the queries still ran (warm-up)
    r3 = sc.caching_check(_query_runner(honest, {"x": data["x"][:batch]}), batch, batch, min_pairs=2)
    assert r3["passed"] is None and "no distinct batch" in r3["reason"]


def test_caching_check_forgives_a_system_still_warming_up():
    """The check is the warm-up: the first pairs may be slow for reasons other than caching
    (the 'distinct' query of pair 0 runs first). Only repeats fast in the later pairs fail it."""
    t = [0]
    n = [0]

    def run_query(q):
        n[0] += 1
        # the 'distinct' query of each of the first two pairs (queries 3 and 6, after 2 settling
        # ones: ABBA order) takes 3x as long, then the system is steady
        t[0] += 3_000_000 if n[0] in (3, 6) else 1_000_000

    r = sc.caching_check(run_query, 100, 4, min_pairs=4, min_time_s=0, clock=lambda: t[0])
    assert r["ratio"] < 0.75  # over all pairs it looks cached (the old verdict failed it)
    assert r["passed"] is True and r["ratio_late"] == pytest.approx(1.0)


def test_caching_check_alternates_its_order():
    """ABBA: a system that speeds up query after query would make the second of each pair
    look cached if 'same' always came second."""
    order = []
    t = [0]

    def clock():
        return t[0]

    def run_query(q):
        order.append("same" if q.start == 0 else "distinct")
        t[0] += max(1_000_000 - 10_000 * len(order), 1)  # every query 1 % faster than the last

    r = sc.caching_check(run_query, 100, 4, min_pairs=6, min_time_s=0, clock=clock)
    assert order[2:6] == ["distinct", "same", "same", "distinct"]
    assert r["passed"] is True and abs(r["ratio"] - 1) < 0.02


def test_in_window_accuracy_catches_wrong_outputs():
    from harness.run.scenario_case import in_window_accuracy

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    labels = x.argmax(1)
    accuracy_pass = x.copy()  # what the separate accuracy pass computed for every sample

    def right(inp):
        return [inp["x"].copy()]

    def wrong(inp):  # a system that returns garbage while being timed
        return [rng.normal(size=inp["x"].shape).astype(np.float32)]

    s = sc.ScenarioSettings(scenario="server", min_duration_s=0.0, min_queries=64)
    results = {}
    for name, fn in (("right", right), ("wrong", wrong)):
        sut = SessionSUT(fn, {"x": x}, concurrency=2, log_every=2)
        try:
            sc.run_server(sut, 2000.0, s, 64)
        finally:
            sut.close()
        logged = sc.logged_responses(sut.responses)
        assert len(logged[0]) == 32  # every 2nd of 64 queries
        results[name] = in_window_accuracy(logged, accuracy_pass, labels)
    assert results["right"]["passed"] is True and results["right"]["agreement"] == 1.0
    assert results["wrong"]["passed"] is False and results["wrong"]["agreement"] < 0.5
    assert results["right"]["top1"] == 1.0


def test_in_window_accuracy_accepts_batch_dependent_outputs_only_when_as_accurate():
    """Dynamic quantization: outputs differ with the batch a sample ran in (not close), yet are as
    accurate: passed, marked batch_dependent (MLPerf TEST01 then checks accuracy). Garbage fails."""
    from harness.run.scenario_case import in_window_accuracy

    rng = np.random.default_rng(1)
    ref = rng.normal(size=(200, 10))  # fp32 reference logits
    ref[np.arange(200), rng.integers(0, 10, 200)] += 4.0  # clear winners
    acc_pass = ref + rng.normal(scale=0.05, size=ref.shape)  # the accuracy pass (one batching)
    idx = np.arange(0, 200, 2)
    other_batching = acc_pass[idx] + rng.normal(scale=0.05, size=(100, 10))  # another batching: not close
    r = in_window_accuracy((idx, other_batching), acc_pass, None, reference=ref)
    assert r["agreement"] < 0.99 and r["batch_dependent"] is True and r["passed"] is True, r
    garbage = rng.normal(size=(100, 10))
    r = in_window_accuracy((idx, garbage), acc_pass, None, reference=ref)
    assert r["batch_dependent"] is True and r["passed"] is False
    assert r["logged_accuracy"]["top1_agreement"] < r["accuracy_pass"]["top1_agreement"] - 0.01
    labels = ref.argmax(1)
    r = in_window_accuracy((idx, garbage), acc_pass, labels)  # labelled: top-1 decides
    assert r["passed"] is False and r["logged_accuracy"]["top1"] < 0.5


def test_search_peak_gives_up_on_a_system_invalid_at_any_load():
    best, steps = sc.search_peak(lambda q: {"valid": False}, 1000.0, max_steps=40, max_halvings=3)
    assert best is None and [s["qps"] for s in steps] == [1000.0, 500.0, 250.0, 125.0]
    t = iter(range(100))
    best, steps = sc.search_peak(lambda q: {"valid": True}, 1.0, max_steps=40, budget_s=3, clock=lambda: next(t))
    assert len(steps) == 3  # the budget, not max_steps, ended the ramp


def test_search_peak_confirm_reruns_an_invalid_step_once():
    cap, hiccups = 1000.0, {250.0}  # one spurious failure at 250 QPS

    def run_at(q):
        if q in hiccups:
            hiccups.discard(q)
            return {"valid": False}
        return {"valid": q <= cap}

    best, steps = sc.search_peak(run_at, 250.0, tolerance=0.02, max_steps=40, confirm=True)
    assert steps[0]["phase"] == "ramp" and not steps[0]["valid"] and steps[1]["phase"] == "confirm"
    assert cap * 0.98 <= best["qps"] <= cap
    best2, _ = sc.search_peak(lambda q: {"valid": q <= cap} if q != 250.0 else {"valid": False}, 250.0,
                              tolerance=0.02, max_steps=40, confirm=True)
    assert best2["qps"] < 250.0  # a failure that repeats is believed


def test_table_headline_cell_per_scenario():
    from harness.cli.table import fmt_headline

    assert fmt_headline({"metric": "max_qps", "value": 4518.2}) == "max 4.52 k QPS"
    assert fmt_headline({"metric": "qps", "value": 400.0}) == "400 QPS"
    assert fmt_headline({"metric": "p99_latency", "value": 7_200_000}).startswith("p99 7.2")
    assert fmt_headline({"metric": "p90_latency", "value": 36_000}).startswith("p90 36")
    assert fmt_headline(None) == "-"
    # LLM headlines are times (were printed as "110 M/s")
    assert fmt_headline({"metric": "tpot_p50_ns", "value": 109_800_000, "unit": "ns"}) == "TPOT p50 110 ms"
    assert fmt_headline({"metric": "p99_ttft_ns", "value": 2_500_000_000, "unit": "ns"}).startswith("TTFT p99 2.5")
    assert fmt_headline({"metric": "output_tokens_per_s", "value": 20.0, "unit": "1/s"}) == "20 /s"


def test_offline_window_is_sized_by_its_time_budget():
    """A slow system is not held to 1,024 samples (minutes of work): its need is what max time allows;
    a fast one keeps the floor, and judge() holds each window to its own need."""
    s = sc.ScenarioSettings(scenario="offline", min_duration_s=0.05, max_duration_s=0.2)
    assert sc.offline_need(s, 20.0) == 16  # 20 samples/s x 0.2 s = 4 -> the floor of 16
    assert sc.offline_need(s, 1000.0) == 200
    assert sc.offline_need(s, 1e6) == sc.DEFAULT_OFFLINE_MIN_SAMPLES
    assert sc.offline_need(s, None) == sc.DEFAULT_OFFLINE_MIN_SAMPLES

    def slow(x):
        time.sleep(0.005)  # 200 samples/s
        return [x["x"]]

    sut = SessionSUT(slow, {"x": np.zeros((4, 1), np.float32)}, batch=1, inline=True)
    r = sc.run_offline(sut, s, 4, expected_sps=200.0)
    assert r["summary"]["need_samples"] == 40 and r["summary"]["samples"] >= 40
    short = dict(r["summary"], samples=39)
    assert any(x.startswith("too_few_queries: 39 samples < 40") for x in sc.judge(short, s)["reasons"])


def test_search_budget_leaves_room_for_a_slow_models_steps():
    from harness.run.scenario_case import search_budget

    s = sc.ScenarioSettings(scenario="server", max_duration_s=2.0)  # 600 queries a step
    assert search_budget(s, 5000.0) == 20.0  # fast: 10 x max time
    assert search_budget(s, 38.0) == pytest.approx(6 * 600 / 38.0)  # slow: six steps at the start rate
    assert search_budget(s, 38.0, case_timeout_s=100.0) == 60.0  # never past 60 % of the case's limit


def test_unbracketed_peak_is_said_to_be_a_lower_bound(monkeypatch):
    """A search that ran out of budget before any QPS failed reports its best QPS with a warning."""
    from harness.measure.timing import MeasureSettings
    from harness.run import scenario_case

    def search_peak(run_at, start, **kw):  # the budget ended after one (valid) step
        step = dict(run_at(200.0), qps=200.0, phase="ramp")
        return step, [step]

    monkeypatch.setattr(sc, "search_peak", search_peak)

    class Quick:
        max_concurrency = 1

        def run(self, inputs):
            return [inputs["x"] * 2]

        def synchronize(self):
            pass

    data = {"x": np.arange(64, dtype=np.float32)[:, None]}
    res = scenario_case.run(Quick(), scenario="server", batch=1, data=data,
                            measure_settings=MeasureSettings(min_time_s=0.05, max_time_s=0.2),
                            opts={"min_queries": 20}, threads_per_query=1, requested_concurrency=1)
    assert res["headline"]["metric"] == "max_qps" and res["headline"]["value"] == 200.0
    assert any(w.startswith("peak_not_bracketed") for w in res["validity"]["warnings"]), res["validity"]


def test_a_server_step_cut_by_the_search_budget_is_judged_too_few_queries():
    vt = _VirtualTime()
    sut = _QueueSUT(0.002, vt)
    s = sc.ScenarioSettings(scenario="server", latency_bound_ms=40, min_duration_s=1.0, max_duration_s=10)
    full = sc.run_server(sut, 100.0, s, 4, clock=vt.clock, sleep=vt.sleep)
    assert full["summary"]["queries"] == 600 and full["validity"]["valid"], full["validity"]
    cut = sc.run_server(sut, 100.0, s, 4, max_queries=50, clock=vt.clock, sleep=vt.sleep)
    assert cut["summary"]["queries"] == 50
    assert not cut["validity"]["valid"] and any(r.startswith("too_few_queries") for r in cut["validity"]["reasons"])


class _WattMeter:
    """A fake energy counter: a constant draw of ``watts`` over real elapsed time; its windows are
    kept so a test can tell what was metered (and ``fail_at`` makes the n-th stop raise)."""
    source, scope = "fake", "test"

    def __init__(self, watts=50.0, fail_at=None):
        self.watts, self.fail_at, self.windows, self._t0 = watts, fail_at, [], None

    def available(self):
        return True, None

    def start(self):
        import time

        self._t0 = time.perf_counter()

    def stop(self):
        import time

        dt = time.perf_counter() - self._t0
        self.windows.append(dt)
        if self.fail_at is not None and len(self.windows) == self.fail_at:
            raise OSError("counter vanished")
        return self.watts * dt


class _Sleepy:
    """A session of known service time (sleep, GIL released)."""
    max_concurrency = 2

    def __init__(self, s=0.002):
        self.s = s

    def run(self, inputs):
        import time

        time.sleep(self.s)
        return [inputs["x"] * 2]

    def synchronize(self):
        pass


@pytest.mark.parametrize("scenario", ["offline", "multi-stream"])
def test_energy_of_a_generator_window_is_per_sample_of_that_window(scenario):
    from harness.measure.timing import MeasureSettings
    from harness.run import scenario_case

    meter = _WattMeter(watts=50.0)
    data = {"x": np.arange(256, dtype=np.float32)[:, None]}
    res = scenario_case.run(_Sleepy(), scenario=scenario, batch=4 if scenario == "offline" else 1, data=data,
                            measure_settings=MeasureSettings(min_time_s=0.05, max_time_s=0.3),
                            opts={"min_queries": 20, "min_duration_s": 0.2}, threads_per_query=1,
                            requested_concurrency=2, meter=meter)
    e = res["_energy"]
    assert e["available"] and e["window"] == f"{scenario} run"
    assert len(meter.windows) == 1  # the warm-up / caching check is not metered
    samples = res["generator"]["summary"]["samples"]
    assert e["joules"] == pytest.approx(50.0 * meter.windows[0])
    assert e["joules_per_inference"] == pytest.approx(e["joules"] / samples)
    # the meter's window holds the scenario's run and little else
    assert e["avg_watts"] == pytest.approx(50.0 * meter.windows[0] / res["duration_s"], rel=0.25)


def test_server_energy_is_metered_per_step_and_reported_for_the_peak(monkeypatch):
    from harness.measure.timing import MeasureSettings
    from harness.run import scenario_case

    def search_peak(run_at, start, **kw):  # two steps: 100 QPS valid (the peak), 400 QPS judged invalid
        a = dict(run_at(100.0), qps=100.0, phase="ramp")
        b = dict(run_at(400.0), qps=400.0, phase="ramp", valid=False)
        return a, [a, b]

    monkeypatch.setattr(sc, "search_peak", search_peak)
    meter = _WattMeter(watts=30.0)
    data = {"x": np.arange(64, dtype=np.float32)[:, None]}
    res = scenario_case.run(_Sleepy(0.001), scenario="server", batch=1, data=data,
                            measure_settings=MeasureSettings(min_time_s=0.05, max_time_s=0.2),
                            opts={"min_queries": 20, "min_duration_s": 0.1}, threads_per_query=1,
                            requested_concurrency=1, meter=meter)
    steps = res["generator"]["steps"]
    assert len(meter.windows) == 2 and all(s["energy"]["available"] for s in steps)
    assert [s["energy"]["joules"] for s in steps] == pytest.approx([30.0 * w for w in meter.windows])
    e = res["_energy"]
    assert e["joules"] == steps[0]["energy"]["joules"] and "100 QPS (the peak)" in e["window"]


def test_a_meter_failing_in_a_generator_window_keeps_the_measurement():
    from harness.measure.timing import MeasureSettings
    from harness.run import scenario_case

    data = {"x": np.arange(64, dtype=np.float32)[:, None]}
    res = scenario_case.run(_Sleepy(), scenario="offline", batch=4, data=data,
                            measure_settings=MeasureSettings(min_time_s=0.05, max_time_s=0.3),
                            opts={"min_duration_s": 0.2}, threads_per_query=1, requested_concurrency=2,
                            meter=_WattMeter(fail_at=1))
    assert res["_energy"]["available"] is False and "counter vanished" in res["_energy"]["reason"]
    assert res["headline"]["value"] > 0 and res["generator"]["summary"]["samples"] > 0
