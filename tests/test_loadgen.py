"""The load generator (harness.measure.loadgen) and the SUT adapter (harness.measure.sut) on synthetic systems."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy import stats as sps

from harness.measure import loadgen as lg
from harness.measure.sut import SessionSUT


def test_poisson_schedule_rate_and_exponential_gaps():
    qps, n = 2000.0, 20000
    t = lg.poisson_schedule(qps, n, rng=1)
    gaps = np.diff(np.concatenate([[0], t])) / 1e9
    # rate: the mean gap is 1/qps within 4 standard errors (sd of an exponential = its mean)
    assert abs(gaps.mean() - 1 / qps) < 4 * (1 / qps) / np.sqrt(n)
    # exponential shape: Kolmogorov-Smirnov against Exp(1/qps)
    assert sps.kstest(gaps, "expon", args=(0, 1 / qps)).pvalue > 0.001
    # Poisson counts: in 10 ms windows, variance / mean (index of dispersion) close to 1
    counts = np.bincount((t // 10_000_000).astype(int))[:-1]
    assert 0.85 < counts.var() / counts.mean() < 1.15
    assert abs(counts.mean() - qps * 0.01) < 4 * np.sqrt(qps * 0.01 / len(counts))
    # a non-Poisson schedule fails the same KS test (the test can fail)
    assert sps.kstest(np.full(n, 1 / qps), "expon", args=(0, 1 / qps)).pvalue < 1e-6


@pytest.mark.parametrize("bad", [0, -5.0, float("nan"), float("inf")])
def test_poisson_schedule_rejects_bad_rate(bad):
    with pytest.raises(ValueError, match="target QPS must be > 0"):
        lg.poisson_schedule(bad, 10)


def test_encode_decode_round_trip():
    a = np.array([5, 9, 9, 100, 7], dtype=np.int64)
    assert lg.encode_times(a) == [5, 4, 0, 91, -93]
    assert lg.decode_times(lg.encode_times(a)).tolist() == a.tolist()


class _StallSUT:
    """Synchronous system: 0.2 ms per query, and once a 100 ms stall (issue blocks)."""

    threaded = False

    def __init__(self, stall_at: int, stall_s: float = 0.1):
        self.stall_at, self.stall_s = stall_at, stall_s

    def issue(self, qid, samples, done):
        t = time.perf_counter_ns()
        time.sleep(self.stall_s if qid == self.stall_at else 0.0002)
        done(qid, t, time.perf_counter_ns())


def test_open_loop_no_coordinated_omission():
    qps, n = 1000.0, 300
    log = lg.run_open_loop(_StallSUT(stall_at=50), lg.poisson_schedule(qps, n, rng=3), lambda i: range(i, i + 1))
    assert log.n == n and log.complete()  # every scheduled query was issued: none dropped
    lat = log.latency_ns()
    # the stall delays every query scheduled during it (~100 of them): ~50 wait over 50 ms
    long = int((lat > 50_000_000).sum())
    assert long >= 20, long
    assert lat.max() >= 90_000_000
    # issue lateness is visible as scheduling error, and latency counts it (from the scheduled time)
    assert (log.schedule_error_ns() >= 0).all()
    assert (lat >= log.completed - log.issued).all()
    # a closed loop on the same system sees the stall once only: what coordinated omission hides
    closed = lg.run_closed_loop(_StallSUT(stall_at=50), lambda i: range(i, i + 1), min_queries=n,
                                min_duration_s=0, max_duration_s=30, max_queries=n)
    assert int((closed.latency_ns() > 50_000_000).sum()) <= 3


def test_open_loop_threaded_sut_keeps_schedule():
    def run(x):
        time.sleep(0.001)
        return [x["x"] * 2]

    sut = SessionSUT(run, {"x": np.arange(10, dtype=np.float32)[:, None]}, concurrency=2)
    try:
        log = lg.run_open_loop(sut, lg.poisson_schedule(500.0, 100, rng=0), lambda i: range(i % 10, i % 10 + 1))
    finally:
        sut.close()
    assert log.complete() and log.n == 100
    assert (log.started >= log.issued).all() and (log.completed >= log.started).all()
    assert (log.latency_ns() >= 1_000_000).all()


def test_closed_loop_issues_after_completion_and_meets_minima():
    log = lg.run_closed_loop(lg.NullSUT(), lambda i: range(0, 3), min_queries=50, min_duration_s=0.01,
                             max_duration_s=5)
    assert log.n >= 50 and log.duration_ns() >= 10_000_000 and log.complete()
    assert (log.issued[1:] >= log.completed[:-1]).all()
    assert (log.samples == 3).all()
    rec = log.to_record()
    assert rec["n"] == log.n and lg.decode_times(rec["scheduled"]).tolist() == log.scheduled.tolist()


def test_burst_is_one_query_with_every_sample():
    seen = []

    def run(x):
        seen.append(len(x["x"]))
        return [x["x"]]

    sut = SessionSUT(run, {"x": np.zeros((7, 2), np.float32)}, batch=4, concurrency=2)
    try:
        log = lg.run_burst(sut, list(range(10)))
    finally:
        sut.close()
    assert log.n == 1 and log.samples.tolist() == [10] and log.complete()
    assert sorted(seen) == [4, 4, 4]  # 10 samples in chunks of 4, last padded


def test_session_sut_runs_concurrently_up_to_its_workers():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def run(x):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return [x["x"]]

    for workers in (1, 3):
        state.update(now=0, max=0)
        sut = SessionSUT(run, {"x": np.zeros((8, 1), np.float32)}, concurrency=workers)
        done = threading.Event()
        count = []

        def fin(qid, a, b):
            count.append(qid)
            if len(count) == 6:
                done.set()

        for q in range(6):
            sut.issue(q, range(q, q + 1), fin)
        assert done.wait(5)
        sut.close()
        assert state["max"] == workers


def test_dynamic_batching_merges_queued_queries_and_splits_outputs():
    def run(x):
        time.sleep(0.005)
        return [x["x"] * 10]

    sut = SessionSUT(run, {"x": np.arange(16, dtype=np.float32)[:, None]}, batch=4, concurrency=1,
                     max_queue_delay_ns=50_000_000, log_every=1)
    got = {}
    ev = threading.Event()

    def fin(qid, a, b):
        got[qid] = b
        if len(got) == 8:
            ev.set()

    for q in range(8):
        sut.issue(q, range(q, q + 1), fin)
    assert ev.wait(5)
    sut.close()
    assert max(sut.batch_sizes) > 1  # queued queries were run together
    for idx, out in sut.responses:  # each query got its own rows back
        assert out[:, 0].tolist() == [10.0 * i for i in idx]


def test_covering_schedule_spans_the_minimum_duration_and_count():
    qps, span, need = 5000.0, 200_000_000, 300  # 0.2 s at 5,000 QPS: ~1,000 arrivals
    fixed_short = 0
    for seed in range(40):
        t = lg.poisson_schedule_covering(qps, span, need, rng=seed)
        assert t[-1] - t[0] >= span and len(t) >= need
        assert t[-2] - t[0] < span  # no more than needed: the first arrival at or past the span ends it
        # same process as poisson_schedule: same seed, same leading arrivals
        assert np.array_equal(t[:100], lg.poisson_schedule(qps, 100, rng=seed)[:100])
        # the old sizing (ceil(qps x T) arrivals) falls short of T about half of the time
        f = lg.poisson_schedule(qps, int(np.ceil(qps * span / 1e9)), rng=seed)
        fixed_short += f[-1] - f[0] < span
    assert 8 <= fixed_short <= 32
    # the count rule alone: a long minimum count at a short span
    t = lg.poisson_schedule_covering(qps, 1_000_000, 2000, rng=1)
    assert len(t) == 2000
    # a cap (a search's remaining time) wins over both
    assert len(lg.poisson_schedule_covering(qps, span, need, rng=1, max_n=50)) == 50
    with pytest.raises(ValueError, match="target QPS must be > 0"):
        lg.poisson_schedule_covering(0.0, span, need)


def test_server_run_is_never_too_short_by_chance():
    from harness.measure import scenarios as sc

    s = sc.ScenarioSettings(scenario="server", min_duration_s=0.05, max_duration_s=0.2, latency_bound_ms=1000,
                            min_queries=100)
    for seed in range(12):  # 50,000 QPS x 0.05 s = 2,500 queries: the duration rule decides the count
        r = sc.run_server(lg.NullSUT(), 50_000.0, s, 10, seed=seed)
        assert not any(x.startswith("too_short") for x in r["validity"]["reasons"]), r["validity"]
        assert r["summary"]["duration_s"] >= 0.05


class _ThreadedSUT:
    threaded = True

    def issue(self, qid, samples, done):
        t = time.perf_counter_ns()
        done(qid, t, t)


def test_generator_sleeps_for_threaded_systems_and_spins_for_inline_ones():
    # a spinning generator holds the GIL the system's worker threads need (and a core): it waits
    # by sleeping for a threaded SUT; an inline SUT has no other thread, so it spins for precision
    arr = lg.poisson_schedule(2000.0, 50, rng=0)
    slack = lg._timer_slack(None)
    assert lg.run_open_loop(_ThreadedSUT(), arr, lambda i: (0,)).extra["wait"] == "sleep"
    assert lg.run_open_loop(lg.NullSUT(), arr, lambda i: (0,)).extra["wait"] == "spin"
    assert lg.run_open_loop(_ThreadedSUT(), arr, lambda i: (0,), spin_ns=100_000).extra["wait"] == "spin"
    assert slack is None  # asking for None changes nothing


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="prctl timer slack is Linux's")
def test_timer_slack_is_set_for_the_run_and_restored():
    import ctypes

    libc = ctypes.CDLL(None)
    before = libc.prctl(30, 0, 0, 0, 0)
    seen = []

    class _Probe(_ThreadedSUT):
        def issue(self, qid, samples, done):
            seen.append(libc.prctl(30, 0, 0, 0, 0))  # issue runs in the generator's thread
            super().issue(qid, samples, done)

    lg.run_open_loop(_Probe(), lg.poisson_schedule(2000.0, 5, rng=0), lambda i: (0,))
    assert seen and set(seen) == {1}
    assert libc.prctl(30, 0, 0, 0, 0) == before


def test_server_run_passes_the_wait_policy_and_records_it():
    from harness.measure import scenarios as sc

    s = sc.ScenarioSettings(scenario="server", min_duration_s=0.01, max_duration_s=0.1, latency_bound_ms=1000,
                            min_queries=20)
    assert sc.run_server(_ThreadedSUT(), 5000.0, s, 10)["summary"]["generator_wait"] == "sleep"
    assert sc.run_server(_ThreadedSUT(), 5000.0, s, 10, spin_ns=100_000)["summary"]["generator_wait"] == "spin"


def _bench_vs_loadgen():
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("bench_vs_loadgen", ROOT / "benchmarks" / "bench_vs_loadgen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ideal_driver_peak_matches_queueing_theory():
    """The reference the LoadGen comparison's synthetic system is judged against: in M/M/1 the
    sojourn time is exponential with rate mu - lambda, so p99 = ln(100) / (mu - lambda) and the
    highest rate within a bound B is mu - ln(100) / B. Constant service (M/D/1) queues less than
    exponential service at the same load, so its peak is nearer the capacity; two such servers
    (M/M/2) queue less than one at the same utilisation, so they carry about twice the peak or more."""
    import math

    bvl = _bench_vs_loadgen()
    rng = np.random.default_rng(1)
    svc = rng.exponential(100_000.0, 200_000)  # ns: mean ~100 µs
    mu = 1e9 / svc.mean()  # the sample's own rate: near saturation p99 is very sensitive to it
    bound = 5e6
    # at half load (queue lengths near saturation are too correlated for a tight check of one p99)
    assert bvl.sojourn_p99_ns(5_000, svc, 1, n=200_000) == pytest.approx(math.log(100) / (mu - 5_000) * 1e9,
                                                                         rel=0.05)
    # the peak is steep in the p99: a 10 % error in the p99 is 1 % of the peak here
    peak = bvl.ideal_peak_qps(svc, 1, bound, n=150_000)
    assert peak == pytest.approx(mu - math.log(100) / bound * 1e9, rel=0.015)
    det = bvl.ideal_peak_qps(np.full(10, 100_000.0), 1, bound, n=150_000)
    assert peak < det < 10_000  # constant service: less queueing, a peak nearer the capacity
    two = bvl.ideal_peak_qps(svc, 2, bound, n=150_000)
    assert 1.9 * peak < two < 20_000
