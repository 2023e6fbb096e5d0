"""MLPerf's scenarios on bench's load generator: run, summarise, judge, search, check integrity.

Place in the data path: case driver (:mod:`harness.run.case`) -> **scenarios** (which queries,
how many, how long; peak-QPS search; validity; integrity) -> load generator
(:mod:`harness.measure.loadgen`) -> SUT. Pure logic over a SUT and per-query times: no backend import.

Definitions (MLPerf Inference rules, adapted to bench's short windows; see
docs/architecture.md):

* ``single-stream``: one sample per query, next query at completion; headline p90 latency.
* ``multi-stream``: ``samples_per_query`` samples (default 8) per query, next query at
  completion; a query's latency is its slowest sample's; headline p99 query latency.
* ``server``: Poisson arrivals at a target QPS, latency from the scheduled arrival; valid
  only when the early-stopping p99 is within the latency bound. Without a target the peak
  search (:func:`search_peak`) finds the highest QPS that stays valid; headline ``max_qps``
  (``qps`` with a target).
* ``offline``: every sample of the window in one query, issued at once; headline
  ``samples_per_s`` = samples / (last completion - issue).

Validity (:func:`judge`), each failed rule one reason token: ``too_few_queries``,
``too_short``, ``incomplete``, ``early_stopping`` (too few queries for the headline
percentile's conservative estimate at 99 % confidence), ``latency_bound`` (server),
``integrity_accuracy`` / ``integrity_caching`` (the integrity checks).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from harness.measure import loadgen as lg
from harness.measure.stats import early_stopping_min_queries, early_stopping_percentile, summarize

__all__ = ["SCENARIOS", "HEADLINE_Q", "ScenarioSettings", "summarize_log", "judge", "run_single_stream",
           "run_multi_stream", "run_server", "run_offline", "offline_need", "search_peak", "caching_check",
           "DEFAULT_LATENCY_BOUND_MS"]

SCENARIOS = ("single-stream", "multi-stream", "server", "offline")
HEADLINE_Q = {"single-stream": 0.90, "multi-stream": 0.99, "server": 0.99, "offline": None}
#: MLPerf-like default server bound when neither the suite nor --latency-bound gives one
#: (MLPerf's ResNet-50 server bound is 15 ms)
DEFAULT_LATENCY_BOUND_MS = 15.0
#: minimum queries per scenario (MLPerf's official counts are far larger: 270,336 for server
#: and multi-stream; these keep a bench window to seconds while leaving early stopping room:
#: p99 at 99 % needs >= 459 queries with none above the estimate)
DEFAULT_MIN_QUERIES = {"single-stream": 100, "multi-stream": 600, "server": 600, "offline": 1}
DEFAULT_OFFLINE_MIN_SAMPLES = 1024


@dataclass
class ScenarioSettings:
    """How a scenario run is sized and judged (all durations in seconds)."""

    scenario: str = "server"
    min_duration_s: float = 1.0
    max_duration_s: float = 10.0
    min_queries: int | None = None  # None: DEFAULT_MIN_QUERIES[scenario]
    target_qps: float | None = None  # server: None = search the peak
    latency_bound_ms: float | None = None  # server: None = DEFAULT_LATENCY_BOUND_MS
    samples_per_query: int = 8  # multi-stream
    offline_min_samples: int = DEFAULT_OFFLINE_MIN_SAMPLES
    confidence: float = 0.99  # early stopping
    search_tolerance: float = 0.05  # peak search stops when (fail - pass) / pass <= this
    search_max_steps: int = 14
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` with one line naming the first bad field."""
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r} (choose from: {', '.join(SCENARIOS)})")
        if self.target_qps is not None and not (self.target_qps > 0 and math.isfinite(self.target_qps)):
            raise ValueError(f"target QPS must be > 0, got {self.target_qps!r}")
        if self.latency_bound_ms is not None and not (self.latency_bound_ms > 0 and math.isfinite(self.latency_bound_ms)):
            raise ValueError(f"latency bound must be > 0 ms, got {self.latency_bound_ms!r}")
        if isinstance(self.samples_per_query, bool) or int(self.samples_per_query) != self.samples_per_query \
                or self.samples_per_query < 1:
            raise ValueError(f"multi-stream samples per query must be an integer >= 1, got {self.samples_per_query!r}")
        if self.min_queries is not None and self.min_queries < 1:
            raise ValueError(f"min queries must be >= 1, got {self.min_queries!r}")
        if not self.max_duration_s > 0 or self.max_duration_s < self.min_duration_s:
            raise ValueError(f"max duration {self.max_duration_s} must be > 0 and >= min duration {self.min_duration_s}")

    @property
    def bound_ns(self) -> int:
        return int(round((self.latency_bound_ms or DEFAULT_LATENCY_BOUND_MS) * 1e6))

    @property
    def need_queries(self) -> int:
        return int(self.min_queries or DEFAULT_MIN_QUERIES[self.scenario])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latency_bound_ms"] = self.latency_bound_ms or (DEFAULT_LATENCY_BOUND_MS if self.scenario == "server" else None)
        d["min_queries"] = self.need_queries
        return d


def summarize_log(log: lg.QueryLog, settings: ScenarioSettings) -> dict:
    """Statistics of one run: latency summary, early-stopping estimate, rates, scheduling error."""
    ok = log.completed >= 0
    lat = log.latency_ns()[ok]
    out: dict = {"queries": log.n, "completed": int(ok.sum()), "duration_s": log.duration_ns() / 1e9,
                 "samples": int(log.samples[ok].sum()) if log.n else 0}
    out["latency_ns"] = summarize(lat) if lat.size else None
    q = HEADLINE_Q[settings.scenario]
    out["early_stopping"] = early_stopping_percentile(lat, q, settings.confidence) if (q and lat.size) else None
    dur = out["duration_s"]
    out["samples_per_s"] = out["samples"] / dur if dur > 0 else None
    out["queries_per_s"] = out["completed"] / dur if dur > 0 else None
    if log.mode == "open" and log.n > 1:
        span = (log.scheduled[-1] - log.scheduled[0]) / 1e9
        out["target_qps"] = log.target_qps
        out["scheduled_qps"] = (log.n - 1) / span if span > 0 else None
        err = log.schedule_error_ns()
        out["schedule_error_ns"] = {"p50": float(np.median(err)), "p99": float(np.percentile(err, 99)),
                                    "max": int(err.max()), "mean": float(err.mean())}
        if "wait" in log.extra:
            out["generator_wait"] = log.extra["wait"]  # "spin" or "sleep" (loadgen.run_open_loop)
        if settings.scenario == "server":
            out["over_bound"] = int((lat > settings.bound_ns).sum())
    return out


def judge(summary: dict, settings: ScenarioSettings) -> dict:
    """MLPerf-style validity of one run: ``{"valid", "reasons", "warnings"}`` (tokens as in the module doc)."""
    reasons, warnings = [], []
    sc = settings.scenario
    need = settings.need_queries
    if summary["completed"] < summary["queries"]:
        reasons.append(f"incomplete: {summary['queries'] - summary['completed']} of {summary['queries']} "
                       "queries never completed")
    if sc == "offline":
        need_samples = summary.get("need_samples", settings.offline_min_samples)
        if summary["samples"] < need_samples:
            reasons.append(f"too_few_queries: {summary['samples']} samples < {need_samples}")
    elif summary["queries"] < need:
        reasons.append(f"too_few_queries: {summary['queries']} < {need}")
    if summary["duration_s"] < settings.min_duration_s:
        reasons.append(f"too_short: {summary['duration_s']:.3f} s < {settings.min_duration_s} s")
    es = summary.get("early_stopping")
    q = HEADLINE_Q[sc]
    if q is not None and es is not None:
        if not es["valid"]:
            reasons.append(f"early_stopping: {es['n']} queries < {es['min_queries']} needed for a p{100 * q:g} "
                           f"estimate at {100 * settings.confidence:g} % confidence")
        if sc == "server":
            bound = settings.bound_ns
            t = summary.get("over_bound", 0)
            need_es = early_stopping_min_queries(t, q, settings.confidence)
            if es["valid"] and es["estimate"] > bound:
                reasons.append(f"latency_bound: early-stopping p99 {es['estimate'] / 1e6:.3f} ms > bound "
                               f"{bound / 1e6:g} ms ({t} of {es['n']} queries over; {need_es} queries would be "
                               "needed to pass with that many over)")
    se = summary.get("schedule_error_ns")
    if se and se["p50"] > 100_000:
        warnings.append(f"generator_late: median scheduling error {se['p50'] / 1e3:.0f} µs")
    return {"valid": not reasons, "reasons": reasons, "warnings": warnings}


def _cycle(n_samples: int, per_query: int, rng: np.random.Generator | None = None) -> Callable[[int], Sequence[int]]:
    """Query i -> its sample indices: consecutive ranges through the sample library (wrapping)."""
    def sample_of(i: int) -> Sequence[int]:
        s = (i * per_query) % n_samples
        if s + per_query <= n_samples:
            return range(s, s + per_query)
        return [(s + j) % n_samples for j in range(per_query)]
    return sample_of


def run_closed(sut, settings: ScenarioSettings, n_samples: int, per_query: int, *,
               sample_of: Callable[[int], Sequence[int]] | None = None, clock=time.perf_counter_ns) -> dict:
    log = lg.run_closed_loop(sut, sample_of or _cycle(n_samples, per_query), min_queries=settings.need_queries,
                             min_duration_s=settings.min_duration_s, max_duration_s=settings.max_duration_s,
                             clock=clock)
    summary = summarize_log(log, settings)
    return {"log": log, "summary": summary, "validity": judge(summary, settings)}


def run_single_stream(sut, settings: ScenarioSettings, n_samples: int, **kw) -> dict:
    return run_closed(sut, settings, n_samples, 1, **kw)


def run_multi_stream(sut, settings: ScenarioSettings, n_samples: int, **kw) -> dict:
    return run_closed(sut, settings, n_samples, int(settings.samples_per_query), **kw)


def run_server(sut, qps: float, settings: ScenarioSettings, n_samples: int, *, seed: int | None = None,
               max_queries: int | None = None, clock=time.perf_counter_ns, sleep=time.sleep,
               spin_ns: int | None = None) -> dict:
    """One open-loop run at ``qps``: Poisson arrivals until the schedule spans the minimum
    duration and holds the minimum query count (:func:`loadgen.poisson_schedule_covering`, LoadGen's
    rule: both minima must hold). ``max_queries`` caps the count (the time a search has left): a
    run cut below the minimum count is judged like any other, ``too_few_queries``. ``spin_ns``: the
    generator's wait policy (None: :func:`loadgen.run_open_loop`'s default for the SUT)."""
    arrivals = lg.poisson_schedule_covering(qps, int(settings.min_duration_s * 1e9), settings.need_queries,
                                            settings.seed if seed is None else seed, max_n=max_queries)
    log = lg.run_open_loop(sut, arrivals, _cycle(n_samples, 1), clock=clock, sleep=sleep, spin_ns=spin_ns)
    log.target_qps = float(qps)
    summary = summarize_log(log, settings)
    return {"log": log, "summary": summary, "validity": judge(summary, settings)}


def offline_need(settings: ScenarioSettings, expected_sps: float | None) -> int:
    """Samples an offline window must complete to be valid.

    ``offline_min_samples`` (default 1,024: enough queued work for a backend to batch and
    overlap), but never more than the window's time allows at the expected throughput:
    need = min(offline_min_samples, max(16, ceil(expected_sps x max_duration_s))). A 50 ms
    model on a small CPU then gets a window of about ``max_duration_s`` instead of 50 s.
    """
    need = int(settings.offline_min_samples)
    if expected_sps and math.isfinite(expected_sps) and expected_sps > 0:
        need = min(need, max(16, math.ceil(expected_sps * settings.max_duration_s)))
    return need


def run_offline(sut, settings: ScenarioSettings, n_samples: int, *, expected_sps: float | None = None,
                clock=time.perf_counter_ns) -> dict:
    """One query of max(:func:`offline_need`, expected samples/s x min duration x 1.1) samples, issued at once."""
    need = offline_need(settings, expected_sps)
    total = need
    if expected_sps:
        total = max(total, math.ceil(expected_sps * settings.min_duration_s * 1.1))
    log = lg.run_burst(sut, _cycle(n_samples, total)(0) if total <= n_samples
                       else [j % n_samples for j in range(total)], clock=clock)
    summary = summarize_log(log, settings)
    summary["need_samples"] = need
    return {"log": log, "summary": summary, "validity": judge(summary, settings)}


def search_peak(run_at: Callable[[float], dict], start_qps: float, *, tolerance: float = 0.05,
                max_steps: int = 14, max_halvings: int = 5, budget_s: float | None = None, confirm: bool = False,
                clock: Callable[[], float] = time.monotonic) -> tuple[dict | None, list[dict]]:
    """Highest QPS at which ``run_at(qps)`` is valid: a ramp, then a bisection.

    ``run_at(qps)`` returns a dict with at least ``{"valid": bool}``. Ramp: from ``start_qps``
    double while valid (halve while invalid, until one passes); this brackets the peak as
    [last valid, first invalid]. Bisection: try the midpoint until (invalid - valid) / valid
    <= ``tolerance`` or ``max_steps`` runs in all. Every step is kept (``steps``, in order, each
    with its ``qps`` and ``phase``). Returns ``(best valid step or None, steps)``. Assumes
    validity is (statistically) monotone in the load. Halving stops after ``max_halvings``
    (a system invalid at 1/32 of its burst throughput is not load-bound: more halvings only
    make each step longer); no new step starts once ``budget_s`` has passed. With ``confirm``
    an invalid step is run once more at the same QPS (phase ``confirm``) and counts as invalid
    only if that fails too: one machine hiccup (a 20 ms stall of a shared host) then does not
    cap the search far below the system's capacity. Both runs are kept in ``steps``.
    """
    if not start_qps > 0:
        raise ValueError(f"start QPS must be > 0, got {start_qps!r}")
    steps: list[dict] = []
    lo, hi, best = None, None, None
    t_end = None if budget_s is None else clock() + budget_s

    def more() -> bool:
        return len(steps) < max_steps and (t_end is None or clock() < t_end)

    def step(q: float, phase: str) -> bool:
        nonlocal best
        r = dict(run_at(q))
        r["qps"] = q
        r["phase"] = phase
        steps.append(r)
        if r["valid"] and (best is None or q > best["qps"]):
            best = r
        if not r["valid"] and confirm and phase != "confirm" and more():
            return step(q, "confirm")
        return bool(r["valid"])

    q = float(start_qps)
    if step(q, "ramp"):
        lo = q
        while more():
            q *= 2
            if step(q, "ramp"):
                lo = q
            else:
                hi = q
                break
    else:
        hi = q
        halvings = 0
        while more() and halvings < max_halvings:
            halvings += 1
            q /= 2
            if step(q, "ramp"):
                lo = q
                break
            hi = q
    while lo is not None and hi is not None and (hi - lo) / lo > tolerance and more():
        mid = (lo + hi) / 2
        if step(mid, "bisect"):
            lo = mid
        else:
            hi = mid
    return best, steps


def caching_check(run_query: Callable[[range], object], n_samples: int, batch: int = 1, *, min_pairs: int = 4,
                  max_pairs: int = 200, min_time_s: float = 0.25, settle: int = 2, threshold: float = 0.25,
                  clock: Callable[[], int] = time.perf_counter_ns) -> dict:
    """Same-sample vs distinct-sample latency (after MLPerf's TEST04), run as the scenario's
    warm-up: a system that caches results answers a repeated sample much faster than fresh ones.

    ``run_query(range)`` runs one query of ``batch`` consecutive samples and returns when it is
    complete. After ``settle`` unrecorded queries, pairs of queries: one of distinct samples (a
    new batch each time, walking through the set) and one of the same batch (samples
    0..batch-1) again, in ABBA order (pair k runs distinct first when k is even, same first when
    odd) so a system still speeding up or slowing down does not bias either side. Pairs go on
    until at least ``min_pairs`` and ``min_time_s``, at most ``max_pairs``. Per pair k,
    r_k = t_same / t_distinct; ``ratio`` = median_k r_k (paired: a load spike spoils one pair, not
    the verdict) and ``ratio_late`` = the median over the later half of the pairs. Fails when both
    are < 1 - ``threshold`` (the repeated batch more than 25 % faster): a caching system is fast on
    every repeat, while a system still warming up (this check is the scenario's warm-up: the first
    pairs may still be filling arenas and caches; seen: EfficientNet fp16 at batch 8, ratio 0.73
    over 4 pairs) is not in the later pairs.
    Needs ``n_samples >= batch + 1`` (else ``passed`` is None). ``queries``: how many it ran (the
    warm-up's length); ``distinct_ns``: the distinct queries' latencies, the honest service-time
    sample of the warm-up.
    """
    n_samples, batch = int(n_samples), max(1, int(batch))
    same_q = range(0, batch)
    if n_samples < batch + 1:
        for _ in range(settle + 2 * min_pairs):
            run_query(same_q)
        return {"passed": None, "reason": f"{n_samples} samples for queries of {batch}: no distinct batch to compare",
                "queries": settle + 2 * min_pairs, "distinct_ns": []}
    span = n_samples - batch  # distinct batches start at 1..span, never at 0 (the same batch)
    for k in range(settle):
        run_query(range(1 + k % span, 1 + k % span + batch))
    same, distinct = [], []
    t_end = clock() + int(min_time_s * 1e9)
    k = 0
    offset = settle
    while k < max_pairs and (k < min_pairs or clock() < t_end):
        start = 1 + (offset * batch) % span
        offset += 1
        order = (("distinct", range(start, start + batch)), ("same", same_q))
        for kind, q in (order if k % 2 == 0 else order[::-1]):
            t0 = clock()
            run_query(q)
            (same if kind == "same" else distinct).append(clock() - t0)
        k += 1
    ratios = [a / max(b, 1) for a, b in zip(same, distinct)]
    ratio = float(np.median(ratios))
    ratio_late = float(np.median(ratios[len(ratios) // 2:]))
    return {"passed": bool(not (ratio < 1 - threshold and ratio_late < 1 - threshold)), "ratio": ratio,
            "ratio_late": ratio_late, "threshold": threshold,
            "same_p50_ns": float(np.median(same)), "distinct_p50_ns": float(np.median(distinct)),
            "pairs": k, "queries": settle + 2 * k, "batch": batch, "distinct_ns": distinct}


def logged_responses(responses: Sequence[tuple[Sequence[int], np.ndarray]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The responses a SUT kept during the performance window as ``(sample_indices, outputs)``
    arrays (first output of each, one row per sample), for the in-window accuracy check
    (after MLPerf's TEST01: accuracy of responses logged while performance was measured)."""
    if not responses:
        return None
    idx = np.concatenate([np.asarray(list(i), dtype=np.int64) for i, _ in responses])
    out = np.concatenate([np.asarray(o) for _, o in responses])
    return idx, out
