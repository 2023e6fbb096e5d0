"""The timing loop: timer calibration, warm-up, measurement until a stop rule holds, verdict.

No framework imports. The clock is injectable (any zero-argument callable returning integer
nanoseconds, ``time.perf_counter_ns`` by default) so tests can script time exactly.

The timed region of one iteration is ``t0 = clock(); step(); t1 = clock()`` and the sample is
``t1 - t0``: it includes one clock call's worth of overhead, which :func:`timer_overhead`
measures (a null step measures exactly that). Nothing else runs between ``t0`` and ``t1``;
the bookkeeping between iterations is one append and one integer comparison, and the stop
rules (a sort for the CI) are evaluated only at scheduled check points.
"""
from __future__ import annotations

import math
import statistics
import time
from array import array
from dataclasses import asdict, dataclass, field
from itertools import repeat
from typing import Callable

import numpy as np

from harness.measure.stats import autocorr_ci_rel_halfwidth, batch_means_quantile_ci

__all__ = [
    "MeasureSettings",
    "MeasureResult",
    "STOP_REASONS",
    "timer_overhead",
    "warm_up",
    "measure",
    "verdict",
    "HEADLINE_Q",
]

Clock = Callable[[], int]

STOP_REASONS = ("converged", "max_time", "max_iterations")

#: the headline percentile of each scenario (MLPerf): p90 single-stream, p99 multi-stream / server
HEADLINE_Q = {"single-stream": 0.90, "multi-stream": 0.99, "server": 0.99}
#: confidence of the early-stopping bound on the headline percentile (LoadGen's 99 %)
EARLY_STOPPING_CONFIDENCE = 0.99

# Stop-check schedule once min_time_s and min_iterations are met: the next check comes after
# max(_CHECK_FRACTION x elapsed, _CHECK_MIN_NS, _CHECK_COST_FACTOR x cost of the last check),
# never later than max_time_s. The cost term keeps checking under ~1/_CHECK_COST_FACTOR of
# the wall time even for millions of tiny samples.
_CHECK_FRACTION = 0.05
_CHECK_MIN_NS = 50_000_000
_CHECK_COST_FACTOR = 20

_NS_PER_S = 1_000_000_000


@dataclass
class MeasureSettings:
    """How long to warm up and measure, and when the measurement is good enough.

    Measurement stops when ``min_time_s`` and ``min_iterations`` are met and the median's
    relative CI half-width (at ``confidence``) is <= ``target_ci``, or at ``max_time_s`` or
    ``max_iterations``. Warm-up: see :func:`warm_up`.
    """

    min_time_s: float = 1.0
    max_time_s: float = 10.0
    min_iterations: int = 30
    max_iterations: int = 10_000_000
    target_ci: float = 0.01
    confidence: float = 0.95
    warmup_min_iterations: int = 5
    warmup_min_time_s: float = 0.2
    warmup_max_time_s: float = 5.0
    warmup_window: int = 10
    warmup_tolerance: float = 0.02
    #: each warm-up window also spans at least this long, so a micro-model's window is not
    #: 10 iterations (200 µs) that a transient plateau fills; 0 = iterations only
    warmup_window_s: float = 0.02
    #: measurements made again when the first is unstable (drift) or its CI is not reached
    max_retries: int = 2

    def validate(self) -> None:
        """Raise ``ValueError`` naming every bad or inconsistent field (all at once)."""
        errors: list[str] = []

        def number(name: str, *, positive: bool = False) -> bool:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                errors.append(f"{name} must be a finite number, got {v!r}")
                return False
            if v < 0 or (positive and v == 0):
                errors.append(f"{name} must be {'> 0' if positive else '>= 0'}, got {v!r}")
                return False
            return True

        def integer(name: str, minimum: int) -> bool:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                errors.append(f"{name} must be an integer, got {v!r}")
                return False
            if v < minimum:
                errors.append(f"{name} must be >= {minimum}, got {v!r}")
                return False
            return True

        ok_min_t = number("min_time_s")
        ok_max_t = number("max_time_s", positive=True)
        ok_min_i = integer("min_iterations", 1)
        ok_max_i = integer("max_iterations", 1)
        number("target_ci", positive=True)
        if number("confidence", positive=True) and not self.confidence < 1:
            errors.append(f"confidence must be < 1, got {self.confidence!r}")
        integer("warmup_min_iterations", 0)
        ok_wmin_t = number("warmup_min_time_s")
        ok_wmax_t = number("warmup_max_time_s")
        integer("warmup_window", 1)
        number("warmup_tolerance", positive=True)
        number("warmup_window_s")
        integer("max_retries", 0)
        if ok_min_t and ok_max_t and self.max_time_s < self.min_time_s:
            errors.append(f"max_time_s ({self.max_time_s}) must be >= min_time_s ({self.min_time_s})")
        if ok_min_i and ok_max_i and self.max_iterations < self.min_iterations:
            errors.append(
                f"max_iterations ({self.max_iterations}) must be >= min_iterations ({self.min_iterations})")
        if ok_wmin_t and ok_wmax_t and self.warmup_max_time_s < self.warmup_min_time_s:
            errors.append(f"warmup_max_time_s ({self.warmup_max_time_s}) must be >= "
                          f"warmup_min_time_s ({self.warmup_min_time_s})")
        if errors:
            raise ValueError("invalid measurement settings: " + "; ".join(errors))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MeasureResult:
    """What :func:`measure` returns: raw samples in time order and why it stopped."""

    samples_ns: list[int] = field(repr=False)
    iterations: int
    duration_s: float
    stop_reason: str  # one of STOP_REASONS


def _clock_name(clock: Clock) -> str:
    name = getattr(clock, "__qualname__", None) or getattr(clock, "__name__", None) or type(clock).__name__
    module = getattr(clock, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else name


def timer_overhead(clock: Clock = time.perf_counter_ns, n: int = 100_000) -> dict:
    """Cost and granularity of ``clock``, measured with ``n`` back-to-back call pairs.

    ``overhead_ns`` is the median of ``t1 - t0`` over ``t0 = clock(); t1 = clock()``: what
    one timed iteration of a null step reads, i.e. the floor every sample carries.
    ``resolution_ns`` is the smallest nonzero delta seen; if no pair saw the clock move, the
    distance between two consecutive ticks is measured instead (0.0 if the clock never
    advances within 10 million calls).
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    deltas = array("q")
    append = deltas.append
    for _ in repeat(None, int(n)):
        t0 = clock()
        t1 = clock()
        append(t1 - t0)
    d = np.array(deltas, dtype=np.int64)
    nonzero = d[d > 0]
    if nonzero.size:
        resolution = float(nonzero.min())
    else:
        resolution = 0.0
        first = clock()
        tick = None  # the first reading after the clock moved; the next move ends one full tick
        for _ in repeat(None, 10_000_000):
            t = clock()
            if tick is None:
                if t != first:
                    tick = t
            elif t != tick:
                resolution = float(t - tick)
                break
    return {"clock": _clock_name(clock), "overhead_ns": float(np.median(d)), "resolution_ns": resolution}


def _windows_agree(previous: list[int], last: list[int], tolerance: float) -> bool:
    """|median(last) - median(previous)| < tolerance * median(previous)."""
    m_prev, m_last = statistics.median(previous), statistics.median(last)
    if m_prev == 0:
        return m_last == 0
    return abs(m_last - m_prev) < tolerance * abs(m_prev)


def warm_up(step: Callable[[], object], settings: MeasureSettings, clock: Clock = time.perf_counter_ns) -> dict:
    """Run ``step`` until its per-iteration time has settled; return what happened.

    Rules, with iteration times timed as in :func:`measure` and the window size
    W = max(``warmup_window``, ceil(``warmup_window_s`` / median of the times so far)) — a
    window spans at least ``warmup_window`` iterations and ``warmup_window_s`` seconds:

    * run at least ``warmup_min_iterations`` iterations and for at least ``warmup_min_time_s``;
    * then stop as *settled* at the first check where the median of the last W times and
      the median of the W before them differ by less than ``warmup_tolerance`` relative to
      the earlier one (so at least 2 W iterations run); with ``warmup_window_s > 0`` checks
      are made every W/4 iterations (W is re-estimated at each check), else every iteration;
    * stop unsettled once ``warmup_max_time_s`` has elapsed, whatever the other rules say
      (``warmup_max_time_s = 0`` runs no warm-up at all).

    Returns ``{"iterations", "duration_s", "settled", "samples_ns"}``.
    """
    settings.validate()
    min_iter = settings.warmup_min_iterations
    min_ns = int(round(settings.warmup_min_time_s * _NS_PER_S))
    max_ns = int(round(settings.warmup_max_time_s * _NS_PER_S))
    w = settings.warmup_window
    tol = settings.warmup_tolerance
    window_ns = settings.warmup_window_s * _NS_PER_S
    samples: list[int] = []
    append = samples.append
    settled = False
    next_check = max(min_iter, 2 * w)
    start = now = clock()
    while now - start < max_ns:
        t0 = clock()
        step()
        now = clock()
        append(now - t0)
        n = len(samples)
        if n < next_check or now - start < min_ns:
            continue
        if window_ns > 0:
            typical = statistics.median(samples[-w:]) or 1
            w_eff = max(w, math.ceil(window_ns / typical))
            if n < max(min_iter, 2 * w_eff):
                next_check = max(min_iter, 2 * w_eff)
                continue
            next_check = n + max(1, w_eff // 4)
        else:
            w_eff = w
            next_check = n + 1
        if _windows_agree(samples[n - 2 * w_eff:n - w_eff], samples[n - w_eff:], tol):
            settled = True
            break
    return {
        "iterations": len(samples),
        "duration_s": (now - start) / _NS_PER_S,
        "settled": settled,
        "samples_ns": samples,
    }


def measure(step: Callable[[], object], settings: MeasureSettings, clock: Clock = time.perf_counter_ns, *,
            headline_q: float | None = None) -> MeasureResult:
    """Time ``step()`` repeatedly until a stop rule holds.

    Each iteration: ``t0 = clock(); step(); t1 = clock()``, sample ``t1 - t0`` (integer ns,
    kept in time order). Elapsed time is ``t1`` of the latest iteration minus one ``clock()``
    read before the first. Stop rules, evaluated at check points, first match wins:

    1. ``converged``: elapsed >= ``min_time_s`` and n >= ``min_iterations`` and the median's
       relative CI half-width <= ``target_ci``, the autocorrelation-aware one
       (:func:`harness.measure.stats.autocorr_ci_rel_halfwidth`, batch means; for fewer than 128
       samples the i.i.d. order-statistic interval); with ``headline_q`` (the scenario's headline
       percentile, p90 for single-stream) that percentile's CI must exist too, else the verdict
       would call a converged measurement invalid (``headline_percentile``);
    2. ``max_time``: elapsed >= ``max_time_s``;
    3. ``max_iterations``: n >= ``max_iterations``.

    Check points: the first iteration ending at or after ``min_time_s``; the iteration that
    brings n to ``min_iterations`` (or ``max_iterations``); the first iteration ending at or
    after ``max_time_s``; and in between, once the minima are met, after max(5 % of elapsed,
    50 ms, 20 x the last check's cost). So ``max_time`` and ``max_iterations`` stop exactly
    at the first iteration that reaches them, and ``converged`` stops at the first check
    point where the rule holds (at most ~5 % of elapsed time after it first held).
    """
    settings.validate()
    min_ns = int(round(settings.min_time_s * _NS_PER_S))
    max_ns = int(round(settings.max_time_s * _NS_PER_S))
    min_iter = int(settings.min_iterations)
    max_iter = int(settings.max_iterations)
    target = float(settings.target_ci)
    confidence = float(settings.confidence)

    buf = array("q")
    append = buf.append
    n = 0
    start = clock()
    max_deadline = start + max_ns
    next_check = start + min_ns
    while True:
        chunk = max_iter - n
        if n < min_iter:
            chunk = min(chunk, min_iter - n)
        # --- hot loop: locals only, nothing but the step between t0 and t1 ---
        for _ in repeat(None, chunk):
            t0 = clock()
            step()
            t1 = clock()
            append(t1 - t0)
            if t1 >= next_check:
                break
        # --- check point ---
        n = len(buf)
        elapsed = t1 - start
        check_cost = 0
        if elapsed >= min_ns and n >= min_iter:
            c0 = clock()
            arr = np.array(buf, dtype=np.int64)
            halfwidth = autocorr_ci_rel_halfwidth(arr, confidence)
            if halfwidth <= target and (  # False for nan (too few samples for the CI)
                    headline_q is None or batch_means_quantile_ci(arr, headline_q, confidence)["ci"] is not None):
                reason = "converged"
                break
            check_cost = clock() - c0
        if elapsed >= max_ns:
            reason = "max_time"
            break
        if n >= max_iter:
            reason = "max_iterations"
            break
        if n < min_iter:
            # only max_time can interrupt now; the chunk size brings us back at min_iterations
            next_check = max_deadline
        elif elapsed < min_ns:
            next_check = start + min_ns
        else:
            gap = max(int(elapsed * _CHECK_FRACTION), _CHECK_MIN_NS, _CHECK_COST_FACTOR * check_cost)
            next_check = min(t1 + gap, max_deadline)
    return MeasureResult(samples_ns=buf.tolist(), iterations=n, duration_s=(t1 - start) / _NS_PER_S,
                         stop_reason=reason)


def stretch_for_count(settings: MeasureSettings, per_iteration_ns: float, cap_s: float) -> float | None:
    """A ``max_time_s`` long enough for ``min_iterations`` iterations, or None when it already is.

    The headline percentile needs a count (p90 at 99 % confidence: 44 samples), and
    ``max_time_s`` stops a measurement before ``min_iterations`` when the model is slow (a
    60 ms ResNet-50 gets 33 samples in 2 s: invalid by construction). Like MLPerf, where both
    minima must hold, the count wins: new max = min(``cap_s``, 1.25 x min_iterations x
    per-iteration time (the caller passes the warm-up's p90: a latency that drifts up after warm-up
    still reaches the count)); ``cap_s`` (a share of the case's time limit)
    keeps a very slow model from running into that limit.
    """
    if not per_iteration_ns or per_iteration_ns <= 0:
        return None
    need_s = 1.25 * settings.min_iterations * per_iteration_ns / _NS_PER_S
    if need_s <= settings.max_time_s:
        return None
    return max(settings.max_time_s, min(need_s, cap_s))


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def verdict(stats: dict | None, stop_reason: str, settings: MeasureSettings, *,
            accuracy_passed: bool | None = None, min_samples: int | None = None,
            max_drift: float = 0.10, max_robust_cv: float | None = None, warn_cv: float = 0.10,
            warn_robust_cv: float = 0.10, scenario: str | None = None, samples=None,
            warmup_settled: bool | None = None) -> dict:
    """Is a measurement fit to report? ``{"valid": bool, "reasons": [...], "warnings": [...]}``.

    ``stats`` is :func:`harness.measure.stats.summarize` output. Each reason/warning is a stable
    token, a colon and a human detail. Invalid (reasons) when:

    * ``no_samples`` — no stats at all;
    * ``too_few_samples: n < min_samples`` (``min_samples`` defaults to ``min_iterations``);
    * ``ci_not_reached`` — the median's relative CI half-width is undefined or > ``target_ci``;
    * ``unstable: drift`` — |median(2nd half) / median(1st half) - 1| > ``max_drift``: the
      system changed during the run (thermal throttling, a competing load, unfinished warm-up);
    * ``unstable: robust CV`` — 1.4826 MAD / median > ``max_robust_cv``, only when a limit is
      given (default ``None``: no limit, see the warning below);
    * ``accuracy_gate_failed`` — ``accuracy_passed is False`` (``None``: no gate, no opinion);
    * ``headline_percentile`` — the scenario's headline percentile (:data:`HEADLINE_Q`: p90
      single-stream, p99 multi-stream and server) is not pinned down: fewer samples than
      MLPerf's early-stopping count for it (:func:`harness.measure.stats.early_stopping_percentile`
      at 99 %: 44 for p90, 459 for p99 — below that not even the maximum bounds the
      percentile), or its CI (``p90_ci`` / ``p99_ci``) is undefined. Checked when ``scenario``
      is given; ``samples`` (raw, for the early-stopping bound) are optional — without them
      the count rule alone is applied. The result is under ``headline_percentile`` in the
      returned dict (q, n, min_queries, the early-stopping upper bound, the CI).

    Warnings only (still valid):

    * ``high_variance: CV`` — classical std / mean > ``warn_cv``. Deliberately not a reason:
      a handful of slow tail iterations (GC pauses, interrupts) inflate std / mean a lot while
      the median and its CI stay tight, and the tail is reported where it belongs, in p99.
      The robust CV catches a genuinely noisy bulk instead (pyperf likewise only *warns* at
      std >= 10 % of the mean);
    * ``noisy: robust CV`` — 1.4826 MAD / median > ``warn_robust_cv``: the bulk of the samples
      is spread out. A warning, not a reason, by default: spread is a property of the system
      under test (a shared machine, a micro-model near the timer's resolution) and is reported
      in p90/p99 and the CV; what makes a *figure* untrustworthy is a median not pinned down
      (``ci_not_reached``) or a system that changed during the run (``unstable: drift``);
    * ``not_converged`` — stopped by max_time / max_iterations although no reason applies
      (e.g. max_iterations hit before min_time_s);
    * ``warmup_not_settled`` — ``warmup_settled is False``: warm-up hit ``warmup_max_time_s``
      before two windows agreed, so the first measured iterations may still be warming up
      (a drift reason follows when it shows).
    """
    if stop_reason not in STOP_REASONS:
        raise ValueError(f"stop_reason must be one of {STOP_REASONS}, got {stop_reason!r}")
    reasons: list[str] = []
    warnings: list[str] = []
    if not stats or not stats.get("n"):
        return {"valid": False, "reasons": ["no_samples: no timing samples"], "warnings": warnings}
    need = settings.min_iterations if min_samples is None else int(min_samples)
    n = int(stats["n"])
    if n < need:
        reasons.append(f"too_few_samples: {n} < {need}")
    hw = stats.get("ci_rel_halfwidth")
    conf = stats.get("confidence", settings.confidence)
    if hw is None:
        reasons.append(f"ci_not_reached: too few samples ({n}) for a {100 * conf:.0f}% CI of the median")
    elif hw > settings.target_ci:
        reasons.append(f"ci_not_reached: median CI half-width {_pct(hw)} > target {_pct(settings.target_ci)}")
    d = stats.get("drift")
    if d is not None and abs(d) > max_drift:
        reasons.append(f"unstable: drift {100.0 * d:+.1f}% between halves (limit {_pct(max_drift)})")
    rcv = stats.get("robust_cv")
    if rcv is not None and max_robust_cv is not None and rcv > max_robust_cv:
        reasons.append(f"unstable: robust CV {_pct(rcv)} > {_pct(max_robust_cv)}")
    elif rcv is not None and rcv > warn_robust_cv:
        warnings.append(f"noisy: robust CV {_pct(rcv)} > {_pct(warn_robust_cv)}")
    if accuracy_passed is False:
        reasons.append("accuracy_gate_failed: accuracy outside the gate")
    c = stats.get("cv")
    if c is not None and c > warn_cv:
        warnings.append(f"high_variance: CV {_pct(c)} > {_pct(warn_cv)} (robust CV {_pct(rcv or 0.0)})")
    head = None
    q = HEADLINE_Q.get(scenario) if scenario else None
    if q is not None:
        from harness.measure.stats import early_stopping_min_queries, early_stopping_percentile

        key = f"p{round(q * 100)}"
        need_es = early_stopping_min_queries(0, q, EARLY_STOPPING_CONFIDENCE)
        es = early_stopping_percentile(samples, q, EARLY_STOPPING_CONFIDENCE) if samples is not None and n else None
        ci = stats.get(f"{key}_ci")
        head = {"metric": key, "q": q, "n": n, "min_queries": need_es, "confidence": EARLY_STOPPING_CONFIDENCE,
                "early_stopping_estimate": es["estimate"] if es else None, "ci": ci}
        if n < need_es:
            reasons.append(f"headline_percentile: {n} samples < {need_es} needed to bound the {key} "
                           f"(early stopping at {EARLY_STOPPING_CONFIDENCE:.0%})")
        elif ci is None:
            ne = stats.get("n_eff")
            why = (f" (effective sample size of the median {ne:g}: consecutive latencies are correlated, so "
                   "they count as fewer independent ones)" if ne is not None and ne < 0.9 * n else "")
            reasons.append(f"headline_percentile: too few samples ({n}) for a {100 * conf:.0f}% CI of the {key}{why}")
    if warmup_settled is False:
        warnings.append(f"warmup_not_settled: warm-up stopped at its cap ({settings.warmup_max_time_s:g} s) "
                        "without settling")
    if stop_reason != "converged" and not reasons:
        warnings.append(f"not_converged: stopped by {stop_reason}")
    out = {"valid": not reasons, "reasons": reasons, "warnings": warnings}
    if head is not None:
        out["headline_percentile"] = head
    return out
