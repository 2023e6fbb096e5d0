"""harness.measure.timing with a scripted clock: every stop rule fires exactly when it should.

No test here reads the real clock for an assertion about speed.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from harness.measure import stats as S
from harness.measure.timing import MeasureResult, MeasureSettings, measure, timer_overhead, verdict, warm_up

MS = 1_000_000  # ns


class FakeClock:
    """A clock that returns ``now`` (int ns); each call then advances it by ``tick``.

    Steps made by :func:`scripted_step` advance ``now`` by their scripted cost, so elapsed
    time is exactly the sum of the costs (plus ticks) and nothing depends on the machine.
    """

    def __init__(self, start: int = 10**12, tick: int = 0):
        self.now = start
        self.tick = tick
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        t = self.now
        self.now += self.tick
        return t


def scripted_step(clock: FakeClock, costs):
    """A step whose i-th call costs the i-th value drawn from the iterable ``costs`` (ns)."""
    it = iter(costs)
    calls = itertools.count()

    def step():
        next(calls)
        clock.now += next(it)

    step.calls = calls
    return step


def n_calls(step) -> int:
    return next(step.calls)  # consumes one, fine at the end of a test


def settings(**kw) -> MeasureSettings:
    base = dict(min_time_s=0.01, max_time_s=1.0, min_iterations=30, max_iterations=10_000_000,
                target_ci=0.01, confidence=0.95, warmup_min_iterations=0, warmup_min_time_s=0.0,
                warmup_max_time_s=1.0, warmup_window=10, warmup_tolerance=0.02, warmup_window_s=0.0)
    base.update(kw)
    return MeasureSettings(**base)


def first_index_reaching(costs, total_ns) -> int:
    """1-based count of iterations after which the cumulative cost first reaches total_ns."""
    return int(np.searchsorted(np.cumsum(costs), total_ns, side="left")) + 1


# ---------------------------------------------------------------- settings

def test_default_settings_are_valid():
    MeasureSettings().validate()


@pytest.mark.parametrize("field,value", [
    ("min_time_s", -1.0), ("max_time_s", 0.0), ("max_time_s", float("nan")), ("min_time_s", float("inf")),
    ("min_iterations", 0), ("min_iterations", 2.5), ("min_iterations", True), ("max_iterations", 0),
    ("target_ci", 0.0), ("target_ci", -0.01), ("confidence", 0.0), ("confidence", 1.0), ("confidence", 95),
    ("warmup_min_iterations", -1), ("warmup_min_time_s", -0.1), ("warmup_window", 0),
    ("warmup_tolerance", 0.0), ("max_time_s", "10"),
])
def test_settings_reject_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        MeasureSettings(**{field: value}).validate()


@pytest.mark.parametrize("kw,message", [
    (dict(min_time_s=5.0, max_time_s=2.0), "max_time_s"),
    (dict(min_iterations=100, max_iterations=10), "max_iterations"),
    (dict(warmup_min_time_s=3.0, warmup_max_time_s=1.0), "warmup_max_time_s"),
])
def test_settings_reject_inconsistent_values(kw, message):
    with pytest.raises(ValueError, match=message):
        MeasureSettings(**kw).validate()


def test_settings_report_every_problem_at_once():
    with pytest.raises(ValueError) as e:
        MeasureSettings(min_time_s=-1, target_ci=0, warmup_window=0).validate()
    assert all(f in str(e.value) for f in ("min_time_s", "target_ci", "warmup_window"))


def test_measure_and_warm_up_validate_before_running():
    clock = FakeClock()
    step = scripted_step(clock, itertools.repeat(MS))
    with pytest.raises(ValueError):
        measure(step, settings(max_time_s=0.001), clock=clock)
    with pytest.raises(ValueError):
        warm_up(step, settings(warmup_window=0), clock=clock)
    assert n_calls(step) == 0


# ---------------------------------------------------------------- measure: stop rules

def test_converges_exactly_at_min_time():
    clock = FakeClock()
    step = scripted_step(clock, itertools.repeat(1000))  # 1 us, no noise: CI width 0
    r = measure(step, settings(min_time_s=0.01, min_iterations=30), clock=clock)
    assert isinstance(r, MeasureResult)
    assert r.stop_reason == "converged"
    assert r.iterations == 10_000 == len(r.samples_ns)  # 10 ms / 1 us
    assert r.duration_s == pytest.approx(0.01, abs=1e-12)
    assert set(r.samples_ns) == {1000} and all(type(v) is int for v in r.samples_ns[:10])
    assert n_calls(step) == r.iterations


def test_converges_exactly_at_min_iterations_when_it_comes_later():
    clock = FakeClock()
    step = scripted_step(clock, itertools.repeat(1000))
    r = measure(step, settings(min_time_s=0.0001, min_iterations=500), clock=clock)  # 100 iterations of time
    assert (r.stop_reason, r.iterations) == ("converged", 500)


def test_samples_are_the_timed_region_in_time_order():
    clock = FakeClock(tick=3)  # every clock read costs 3 ns: t1 - t0 = cost + 3
    costs = [1000 + (i % 7) for i in range(100)]
    step = scripted_step(clock, costs)
    r = measure(step, settings(min_time_s=10.0, max_time_s=100.0, min_iterations=1, max_iterations=100),
                clock=clock)
    assert r.stop_reason == "max_iterations"
    assert r.samples_ns == [c + 3 for c in costs]


def test_converges_once_noise_averages_out_and_not_before():
    rng = np.random.default_rng(0)
    costs = (rng.lognormal(0.0, 0.3, 200_000) * MS).astype(np.int64).tolist()  # ~1 ms, 30 % noise
    target = 0.03
    clock = FakeClock()
    step = scripted_step(clock, costs)
    s = settings(min_time_s=0.1, max_time_s=100.0, min_iterations=30, target_ci=target)
    r = measure(step, s, clock=clock)
    assert r.stop_reason == "converged"
    assert r.samples_ns == costs[:r.iterations]
    assert S.ci_rel_halfwidth(np.sort(r.samples_ns), s.confidence) <= target
    # at min_time (~100 samples) the CI was still too wide, so it really waited for it
    n_at_min_time = first_index_reaching(costs, 0.1e9)
    assert S.ci_rel_halfwidth(np.sort(costs[:n_at_min_time])) > target
    # and it stopped soon after the CI first reached the target (checks every max(5 %, 50 ms))
    first_ok = next(n for n in range(n_at_min_time, r.iterations + 1)
                    if S.ci_rel_halfwidth(np.sort(costs[:n])) <= target)
    assert first_ok <= r.iterations <= first_ok * 1.06 + 60


def test_max_time_when_noise_keeps_ci_wide():
    rng = np.random.default_rng(1)
    costs = rng.integers(100_000, 2 * MS, size=100_000).tolist()
    clock = FakeClock()
    step = scripted_step(clock, costs)
    r = measure(step, settings(min_time_s=0.05, max_time_s=0.5, target_ci=1e-4), clock=clock)
    expected_n = first_index_reaching(costs, 0.5e9)
    assert r.stop_reason == "max_time"
    assert r.iterations == expected_n  # the first iteration that ends at or after max_time
    assert r.duration_s == pytest.approx(sum(costs[:expected_n]) / 1e9, abs=1e-12)
    assert r.duration_s >= 0.5 and sum(costs[:expected_n - 1]) < 0.5e9


def test_max_time_reached_exactly_on_an_iteration_boundary():
    clock = FakeClock()
    step = scripted_step(clock, itertools.cycle([1 * MS, 3 * MS]))  # median CI stays ~[1, 3] ms
    r = measure(step, settings(min_time_s=0.1, max_time_s=0.5, target_ci=0.01), clock=clock)
    assert (r.stop_reason, r.iterations, r.duration_s) == ("max_time", 250, 0.5)


def test_max_time_before_min_iterations():
    clock = FakeClock()
    step = scripted_step(clock, itertools.repeat(300 * MS))  # 0.3 s per iteration
    r = measure(step, settings(min_time_s=0.5, max_time_s=1.0, min_iterations=30), clock=clock)
    assert (r.stop_reason, r.iterations) == ("max_time", 4)  # 0.9 s < 1.0 s <= 1.2 s


def test_max_iterations():
    clock = FakeClock()
    step = scripted_step(clock, itertools.repeat(1000))
    r = measure(step, settings(min_time_s=10.0, max_time_s=20.0, min_iterations=30, max_iterations=777),
                clock=clock)
    assert (r.stop_reason, r.iterations) == ("max_iterations", 777)
    assert r.duration_s == pytest.approx(777e-6)


def test_converged_wins_when_rules_coincide():
    clock = FakeClock()
    step = scripted_step(clock, itertools.repeat(1000))
    r = measure(step, settings(min_time_s=0.0, min_iterations=100, max_iterations=100), clock=clock)
    assert (r.stop_reason, r.iterations) == ("converged", 100)


def test_noise_with_max_iterations_before_ci():
    rng = np.random.default_rng(2)
    costs = rng.integers(1000, 5000, size=10_000).tolist()
    clock = FakeClock()
    step = scripted_step(clock, costs)
    r = measure(step, settings(min_time_s=0.0, max_time_s=100.0, min_iterations=10, max_iterations=5000,
                               target_ci=1e-6), clock=clock)
    assert (r.stop_reason, r.iterations) == ("max_iterations", 5000)


def test_hot_loop_reads_the_clock_twice_per_iteration():
    """Leanness, structurally: 2 clock reads per iteration, stop checks only now and then."""
    rng = np.random.default_rng(3)
    costs = (rng.lognormal(0.0, 0.5, 400_000) * 10_000).astype(np.int64).tolist()  # ~10 us
    clock = FakeClock()
    step = scripted_step(clock, costs)
    r = measure(step, settings(min_time_s=0.2, max_time_s=2.0, target_ci=0.002), clock=clock)
    assert r.iterations > 10_000
    extra = clock.calls - 2 * r.iterations - 1  # start read; each CI check adds 2 reads
    assert 0 <= extra <= 2 * 60  # at most a few dozen checks over the whole run


def test_step_exceptions_propagate():
    def step():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        measure(step, settings(), clock=FakeClock())


# ---------------------------------------------------------------- warm-up

def test_warm_up_settles_only_after_the_decay():
    clock = FakeClock()
    costs = [2000] * 8 + [1000] * 1000  # a slow phase shorter than the window
    step = scripted_step(clock, costs)
    w = warm_up(step, settings(warmup_window=10, warmup_tolerance=0.02, warmup_min_iterations=5), clock=clock)
    # windows [n-20, n-10) and [n-10, n): the earlier one has a fast median once >= 6 of its
    # 10 samples are fast, i.e. (n - 11) - 8 + 1 >= 6
    assert w["settled"] is True
    assert w["iterations"] == 24
    assert w["samples_ns"] == costs[:24]
    assert w["duration_s"] == pytest.approx((8 * 2000 + 16 * 1000) / 1e9)


def test_warm_up_geometric_decay_settles_where_windows_agree():
    clock = FakeClock()
    costs = [int(100_000 + 900_000 * 0.7 ** i) for i in range(10_000)]
    w = warm_up(scripted_step(clock, costs), settings(warmup_window=10, warmup_tolerance=0.02), clock=clock)
    n = w["iterations"]

    def agree(m):
        prev, last = np.median(costs[m - 20:m - 10]), np.median(costs[m - 10:m])
        return abs(last - prev) < 0.02 * prev

    assert w["settled"] and agree(n) and not any(agree(m) for m in range(20, n))
    assert costs[n - 1] < 1.01 * 100_000  # the decay is (nearly) over when it says settled


def test_warm_up_long_slow_plateau_looks_settled():
    """Documented limitation: a plateau of >= 2 windows is indistinguishable from steady state."""
    clock = FakeClock()
    w = warm_up(scripted_step(clock, [2000] * 30 + [1000] * 100), settings(warmup_window=10), clock=clock)
    assert (w["settled"], w["iterations"]) == (True, 20)


def test_warm_up_five_slow_then_fast():
    clock = FakeClock()
    step = scripted_step(clock, [50_000] * 5 + [1000] * 1000)
    w = warm_up(step, settings(warmup_window=10, warmup_min_iterations=5), clock=clock)
    # n = 20: earlier window is 5 slow + 5 fast (median 25.5 us) -> not settled; n = 21: settled
    assert (w["settled"], w["iterations"]) == (True, 21)


def test_warm_up_respects_min_time_and_min_iterations():
    clock = FakeClock()
    step = scripted_step(clock, itertools.repeat(MS))
    w = warm_up(step, settings(warmup_min_time_s=0.05), clock=clock)
    assert (w["settled"], w["iterations"]) == (True, 50)
    clock = FakeClock()
    step = scripted_step(clock, itertools.repeat(MS))
    w = warm_up(step, settings(warmup_min_iterations=37), clock=clock)
    assert (w["settled"], w["iterations"]) == (True, 37)


def test_warm_up_tolerance_is_relative():
    # steady growth of 1.5 % per window: settles at a 2 % tolerance, never at 1 %
    costs = [int(100_000 * 1.015 ** (i / 10)) for i in range(5000)]
    clock = FakeClock()
    w = warm_up(scripted_step(clock, costs), settings(warmup_tolerance=0.02), clock=clock)
    assert (w["settled"], w["iterations"]) == (True, 20)
    clock = FakeClock()
    w = warm_up(scripted_step(clock, costs), settings(warmup_tolerance=0.01, warmup_max_time_s=0.01),
                clock=clock)
    assert w["settled"] is False and w["iterations"] == first_index_reaching(costs, 0.01e9)


def test_warm_up_capped_by_max_time():
    clock = FakeClock()
    costs = [int(1000 * 1.01 ** i) for i in range(5000)]  # keeps getting slower: never settles
    step = scripted_step(clock, costs)
    w = warm_up(step, settings(warmup_max_time_s=0.01, warmup_min_iterations=10_000), clock=clock)
    assert w["settled"] is False
    assert w["iterations"] == first_index_reaching(costs, 0.01e9)
    assert w["duration_s"] >= 0.01


def test_warm_up_windows_span_a_minimum_time():
    """A micro-model's plateau of 400 fast-then-slow iterations (0.8 ms) fills two 10-iteration
    windows; with 20 ms windows the warm-up sees through it and settles only on the steady part."""
    clock = FakeClock()
    costs = [2000] * 300 + [1000] * 100 + [3000] * 200_000  # settles to 3 us after a dip
    w = warm_up(scripted_step(clock, costs), settings(warmup_window=10, warmup_window_s=0.0), clock=clock)
    assert w["settled"] and w["iterations"] < 300  # fooled by the first plateau
    clock = FakeClock()
    w = warm_up(scripted_step(clock, costs), settings(warmup_window=10, warmup_window_s=0.02), clock=clock)
    n = w["iterations"]
    assert w["settled"] and n > 400 + 2 * (20_000_000 // 3000) * 0.9
    assert np.median(w["samples_ns"][-100:]) == 3000


def test_warm_up_disabled_by_zero_max_time():
    clock = FakeClock()
    step = scripted_step(clock, itertools.repeat(MS))
    w = warm_up(step, settings(warmup_max_time_s=0.0), clock=clock)
    assert w == {"iterations": 0, "duration_s": 0.0, "settled": False, "samples_ns": []}


# ---------------------------------------------------------------- timer overhead

def test_timer_overhead_with_scripted_clocks():
    clock = FakeClock(tick=7)
    t = timer_overhead(clock, n=1000)
    assert t["overhead_ns"] == 7.0 and t["resolution_ns"] == 7.0
    assert isinstance(t["clock"], str)

    increments = itertools.cycle([5, 9, 13])
    state = {"t": 0}

    def jittery():  # pairs read 5, 13, 9, 5, 13, 9, ... ns
        t = state["t"]
        state["t"] += next(increments)
        return t

    t = timer_overhead(jittery, n=999)
    assert t["overhead_ns"] == 9.0 and t["resolution_ns"] == 5.0

    calls = itertools.count()

    def coarse():  # moves every 10 calls by 1 us: most pairs read 0
        return (next(calls) // 10) * 1000

    t = timer_overhead(coarse, n=1000)
    assert t["overhead_ns"] == 0.0 and t["resolution_ns"] == 1000.0
    assert t["clock"].endswith("coarse")

    calls2 = itertools.count()

    def very_coarse():  # never moves within the measured pairs: resolution found by waiting a tick
        return (next(calls2) // 1000) * 15_625

    t = timer_overhead(very_coarse, n=100)
    assert t["overhead_ns"] == 0.0 and t["resolution_ns"] == 15_625.0


def test_timer_overhead_real_clock_shape():
    t = timer_overhead(n=2000)
    assert t["clock"] == "time.perf_counter_ns"
    assert t["overhead_ns"] >= 0 and t["resolution_ns"] > 0
    assert all(type(t[k]) is float for k in ("overhead_ns", "resolution_ns"))


# ---------------------------------------------------------------- verdict

def good_stats(**over) -> dict:
    st = {"n": 1000, "p50": 1e6, "p90": 1.1e6, "p95": 1.2e6, "p99": 1.5e6, "mean": 1.02e6, "std": 5e4,
          "min": 9e5, "max": 2e6, "cv": 0.05, "robust_cv": 0.04, "median_ci": [0.995e6, 1.005e6],
          "p90_ci": [1.08e6, 1.12e6], "p99_ci": [1.4e6, 1.7e6], "ci_rel_halfwidth": 0.005,
          "confidence": 0.95, "outliers": 3, "drift": 0.01}
    st.update(over)
    return st


def test_verdict_valid():
    v = verdict(good_stats(), "converged", settings())
    assert v == {"valid": True, "reasons": [], "warnings": []}


def test_verdict_too_few_samples():
    v = verdict(good_stats(n=12), "max_time", settings(min_iterations=30))
    assert not v["valid"] and "too_few_samples: 12 < 30" in v["reasons"]
    v = verdict(good_stats(n=12), "max_time", settings(min_iterations=30), min_samples=10)
    assert v["valid"]


def test_verdict_ci_not_reached():
    v = verdict(good_stats(ci_rel_halfwidth=0.031), "max_time", settings(target_ci=0.01))
    assert v["reasons"] == ["ci_not_reached: median CI half-width 3.1% > target 1.0%"]
    v = verdict(good_stats(ci_rel_halfwidth=None, n=5), "max_time", settings(min_iterations=1))
    assert not v["valid"] and v["reasons"][0].startswith("ci_not_reached:")


def test_verdict_unstable_drift_and_robust_cv():
    v = verdict(good_stats(drift=0.14), "converged", settings())
    assert len(v["reasons"]) == 1 and v["reasons"][0].startswith("unstable: drift +14.0% between halves")
    v = verdict(good_stats(drift=-0.14), "converged", settings())
    assert v["reasons"][0].startswith("unstable: drift -14.0%")
    v = verdict(good_stats(robust_cv=0.12), "converged", settings(), max_robust_cv=0.10)
    assert v["reasons"] == ["unstable: robust CV 12.0% > 10.0%"]


def test_verdict_noisy_bulk_is_a_warning_by_default():
    v = verdict(good_stats(robust_cv=0.12), "converged", settings())
    assert v["valid"] and v["reasons"] == []
    assert v["warnings"] == ["noisy: robust CV 12.0% > 10.0%"]


def test_verdict_high_cv_is_only_a_warning():
    v = verdict(good_stats(cv=0.14), "converged", settings())
    assert v["valid"] and v["reasons"] == []
    assert len(v["warnings"]) == 1 and v["warnings"][0].startswith("high_variance: CV 14.0%")


def test_verdict_accuracy_gate():
    assert verdict(good_stats(), "converged", settings(), accuracy_passed=False)["reasons"] == [
        "accuracy_gate_failed: accuracy outside the gate"]
    assert verdict(good_stats(), "converged", settings(), accuracy_passed=True)["valid"]
    assert verdict(good_stats(), "converged", settings(), accuracy_passed=None)["valid"]


def test_verdict_not_converged_warning_and_bad_input():
    v = verdict(good_stats(), "max_iterations", settings())
    assert v["valid"] and v["warnings"] == ["not_converged: stopped by max_iterations"]
    assert verdict(None, "max_time", settings())["reasons"][0].startswith("no_samples")
    with pytest.raises(ValueError):
        verdict(good_stats(), "timeout", settings())


def test_verdict_end_to_end_on_measured_step_change():
    """A run that gets 20 % slower half-way (thermal throttling) is invalid: drift."""
    rng = np.random.default_rng(4)
    costs = np.concatenate([rng.normal(1.0, 0.01, 500), rng.normal(1.2, 0.012, 100_000)]) * MS
    clock = FakeClock()
    s = settings(min_time_s=0.0, max_time_s=100.0, min_iterations=1000, max_iterations=1000, target_ci=0.5)
    r = measure(scripted_step(clock, costs.astype(np.int64).tolist()), s, clock=clock)
    st = S.summarize(r.samples_ns, s.confidence)
    v = verdict(st, r.stop_reason, s)
    assert not v["valid"]
    assert any(x.startswith("unstable: drift +") for x in v["reasons"])
    assert math.isclose(st["drift"], 0.2, abs_tol=0.01)


def test_max_time_stretches_for_the_headline_count_within_a_cap():
    """A 60 ms model with max_time 2 s would stop at 33 samples, short of the 44 a p90 needs:
    the window grows to 1.25 x 44 x 60 ms = 3.3 s, never beyond the cap; fast models keep theirs."""
    from harness.measure.timing import MeasureSettings, stretch_for_count

    s = MeasureSettings(min_time_s=0.3, max_time_s=2.0, min_iterations=44)
    assert stretch_for_count(s, 60e6, cap_s=120.0) == pytest.approx(3.3)
    assert stretch_for_count(s, 1e6, cap_s=120.0) is None  # 44 ms of work fits in 2 s
    assert stretch_for_count(s, 10e9, cap_s=120.0) == 120.0  # a 10 s model: the cap
    assert stretch_for_count(s, 0.0, cap_s=120.0) is None


def test_converged_waits_for_the_headline_percentiles_ci(monkeypatch):
    """The median's CI can be tight while the p90's (batch means on an autocorrelated series) does
    not exist yet: with headline_q the stop rule waits for it, so the verdict cannot then call a
    converged measurement invalid for it (seen: 359 samples, fmnist int8-dynamic)."""
    import harness.measure.timing as timing

    calls = []

    def p90_ci(samples, q, confidence=0.95, **kw):  # undefined for the first three check points
        calls.append((len(samples), q))
        return {"ci": None if len(calls) <= 3 else (1.0, 2.0)}

    monkeypatch.setattr(timing, "batch_means_quantile_ci", p90_ci)
    t = [0]

    def clock():
        return t[0]

    def step():
        t[0] += 1_000_000

    s = MeasureSettings(min_time_s=0.0, max_time_s=1e9, min_iterations=200, max_iterations=100000, target_ci=0.05)
    plain = measure(step, s, clock)
    assert plain.stop_reason == "converged" and calls == []
    t[0] = 0
    waited = measure(step, s, clock, headline_q=0.9)
    assert waited.stop_reason == "converged" and len(calls) == 4 and all(q == 0.9 for _, q in calls)
    assert waited.iterations > plain.iterations
