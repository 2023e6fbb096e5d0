"""Statistics of timing samples: percentiles, distribution-free confidence intervals, stability.

Small pure functions over a 1-D sequence of numbers (numpy + scipy only). Conventions:

* ``percentile`` takes ``q`` in [0, 100] (numpy's ``percentile``); ``quantile_ci`` and the
  rank helper take the quantile as a fraction ``q`` in [0, 1] (numpy's ``quantile``).
* A function whose result is undefined for the data (too few samples for the requested
  confidence, a zero denominator) returns ``nan`` (or ``(nan, nan)``); only :func:`summarize`
  turns those into ``None`` for the JSON record. Empty input raises ``ValueError``.
* Samples are taken in time order where it matters (:func:`drift`); everything else is
  order-free.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.special import bdtr, bdtrc, ndtri

__all__ = [
    "MAD_TO_SIGMA",
    "percentile",
    "order_statistic_ranks",
    "quantile_ci",
    "median_ci",
    "ci_rel_halfwidth",
    "tukey_outliers",
    "drift",
    "cv",
    "robust_cv",
    "summarize",
    "early_stopping_percentile",
    "early_stopping_min_queries",
]

#: 1 / Phi^-1(3/4): scales the median absolute deviation to the standard deviation of a normal.
MAD_TO_SIGMA = 1.4826

NAN = float("nan")


def _as_array(samples, name: str = "samples") -> np.ndarray:
    a = np.asarray(samples)
    if a.dtype.kind not in "iuf":  # keep int64 samples as they are (no 8-byte-per-sample copy)
        a = a.astype(np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    return a


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (``q`` in [0, 100]) of ``samples``.

    Definition: Hyndman & Fan (1996) type 7, numpy's default ``method="linear"``. With the
    sorted samples x_0 <= ... <= x_{n-1}, h = (n - 1) q / 100, the result is
    x_floor(h) + (h - floor(h)) (x_floor(h)+1 - x_floor(h)). So ``percentile(x, 50)`` is the
    usual median (mean of the two middle values for even n), 0 is the minimum and 100 the
    maximum.
    """
    if not 0.0 <= q <= 100.0:  # also rejects nan
        raise ValueError(f"percentile q must be in [0, 100], got {q!r}")
    return float(np.percentile(_as_array(samples), q, method="linear"))


@lru_cache(maxsize=4096)
def order_statistic_ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks ``(i, j)`` so that ``[x_(i), x_(j)]`` is a ``confidence`` CI of the q-quantile.

    Distribution-free (order-statistic) interval. For i.i.d. samples from a continuous
    distribution with q-quantile xi, the number K of samples below xi is Binomial(n, q), and
    with 0-based sorted samples x_(0) <= ... <= x_(n-1)::

        x_(i) <= xi <= x_(j)   <=>   i + 1 <= K <= j

    so coverage = P(i + 1 <= K <= j) = 1 - P(K <= i) - P(K > j). With a = (1 - confidence)/2
    the interval is equal-tailed: i is the largest rank with P(K <= i) <= a and j the smallest
    with P(K > j) <= a, hence coverage >= confidence (exact binomial tails, not a normal
    approximation; for discrete data the interval stays conservative). Returns ``None`` when
    no such rank exists inside the sample (n too small: e.g. the median at 95 % needs n >= 6,
    since P(K <= 0) = 0.5**n; the p90 needs n >= 36 and the p99 n >= 368).
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be a fraction in [0, 1], got {q!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n == 0:
        return None
    a = (1.0 - confidence) / 2.0

    def cdf(k: int) -> float:  # P(K <= k)
        return 1.0 if k >= n else float(bdtr(k, n, q))

    def sf(k: int) -> float:  # P(K > k)
        return 0.0 if k >= n else float(bdtrc(k, n, q))

    # Start from the normal approximation, then walk to the exact binomial boundary.
    mu, sd, z = n * q, math.sqrt(n * q * (1.0 - q)), float(ndtri(1.0 - a))
    i = min(max(int(math.floor(mu - z * sd)), -1), n)
    while i >= 0 and cdf(i) > a:
        i -= 1
    while i + 1 < n and cdf(i + 1) <= a:
        i += 1
    j = min(max(int(math.ceil(mu + z * sd)), 0), n)
    while j < n and sf(j) > a:
        j += 1
    while j > 0 and sf(j - 1) <= a:
        j -= 1
    if i < 0 or j > n - 1:
        return None
    return i, j


def _select(a: np.ndarray, idx: Sequence[int], is_sorted: bool) -> np.ndarray:
    """Values of the given 0-based order statistics of ``a``."""
    if is_sorted:
        return a[list(idx)]
    return np.partition(a, sorted(set(idx)))[list(idx)]


def quantile_ci(sorted_samples: Sequence[float], q: float, confidence: float = 0.95,
                *, is_sorted: bool = True) -> tuple[float, float]:
    """Distribution-free ``confidence`` interval ``(lo, hi)`` of the q-quantile (``q`` in [0, 1]).

    The interval is ``[x_(i), x_(j)]`` with the ranks of :func:`order_statistic_ranks`
    (Binomial(n, q) tails, coverage >= confidence). Returns ``(nan, nan)`` when n is too small
    for the requested confidence. ``sorted_samples`` must be sorted ascending; pass
    ``is_sorted=False`` for raw samples, which then uses an O(n) selection instead of a sort.
    """
    a = _as_array(sorted_samples)
    ranks = order_statistic_ranks(a.size, float(q), float(confidence))
    if ranks is None:
        return NAN, NAN
    lo, hi = _select(a, ranks, is_sorted)
    return float(lo), float(hi)


def median_ci(sorted_samples: Sequence[float], confidence: float = 0.95,
              *, is_sorted: bool = True) -> tuple[float, float]:
    """``quantile_ci(sorted_samples, 0.5, confidence)``: the CI of the median."""
    return quantile_ci(sorted_samples, 0.5, confidence, is_sorted=is_sorted)


def ci_rel_halfwidth(sorted_samples: Sequence[float], confidence: float = 0.95,
                     *, is_sorted: bool = True) -> float:
    """Relative half-width of the median's CI: (hi - lo) / 2 / median.

    ``[lo, hi]`` is :func:`median_ci`; the median is the type-7 one (mean of the two middle
    values for even n). ``nan`` when the CI is undefined (n too small) or the median is 0
    while the interval has width. Cheap enough for a measurement loop's stop check: with
    ``is_sorted=False`` it selects the four order statistics it needs in O(n) (no sort).
    """
    a = _as_array(sorted_samples)
    n = a.size
    ranks = order_statistic_ranks(n, 0.5, float(confidence))
    if ranks is None:
        return NAN
    mid = [(n - 1) // 2, n // 2]
    lo, hi, m0, m1 = _select(a, [ranks[0], ranks[1], *mid], is_sorted)
    width = float(hi) - float(lo)
    median = (float(m0) + float(m1)) / 2.0
    if width == 0.0:
        return 0.0
    if median == 0.0:
        return NAN
    return width / 2.0 / abs(median)


def tukey_outliers(samples: Sequence[float], k: float = 1.5) -> int:
    """Number of samples outside Tukey's fences [Q1 - k IQR, Q3 + k IQR].

    Q1, Q3 are the type-7 25th and 75th percentiles, IQR = Q3 - Q1; a sample exactly on a
    fence is not an outlier.
    """
    if not k >= 0:
        raise ValueError(f"k must be >= 0, got {k!r}")
    a = _as_array(samples)
    q1, q3 = np.percentile(a, [25.0, 75.0], method="linear")
    iqr = q3 - q1
    return int(np.count_nonzero((a < q1 - k * iqr) | (a > q3 + k * iqr)))


def drift(samples: Sequence[float]) -> float:
    """Relative change between the halves of a time-ordered run: median(2nd) / median(1st) - 1.

    With h = n // 2 the halves are the first h and the last h samples (for odd n the middle
    sample belongs to neither). +0.2 means the second half is 20 % slower. ``nan`` when
    n < 4 or the first half's median is 0.
    """
    a = _as_array(samples)
    n = a.size
    if n < 4:
        return NAN
    h = n // 2
    first, second = float(np.median(a[:h])), float(np.median(a[n - h:]))
    if first == 0.0:
        return 0.0 if second == 0.0 else NAN
    return second / first - 1.0


def cv(samples: Sequence[float]) -> float:
    """Classical coefficient of variation: std(ddof=1) / mean.

    0.0 when there is no spread (including n == 1, which has no spread estimate); ``nan``
    when the mean is 0 but the spread is not.
    """
    a = _as_array(samples)
    if a.size < 2:
        return 0.0
    s = float(np.std(a, ddof=1))
    if s == 0.0:
        return 0.0
    m = float(np.mean(a))
    return NAN if m == 0.0 else s / abs(m)


def robust_cv(samples: Sequence[float]) -> float:
    """Robust coefficient of variation: 1.4826 MAD / median, MAD = median(|x - median(x)|).

    For normal data 1.4826 MAD estimates the standard deviation, so this is comparable with
    :func:`cv`, but a few tail outliers barely move it. 0.0 when MAD == 0; ``nan`` when the
    median is 0 but MAD is not.
    """
    a = _as_array(samples)
    med = float(np.median(a))
    mad = float(np.median(np.abs(a - med)))
    if mad == 0.0:
        return 0.0
    return NAN if med == 0.0 else MAD_TO_SIGMA * mad / abs(med)


def _pair(ci: tuple[float, float]) -> list[float] | None:
    lo, hi = ci
    return None if math.isnan(lo) or math.isnan(hi) else [float(lo), float(hi)]


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def summarize(samples_ns: Sequence[float], confidence: float = 0.95) -> dict:
    """Summary statistics of per-iteration times, shaped as the run schema's ``$defs/stats``.

    Keys: n, p50, p90, p95, p99 (:func:`percentile`, type 7), mean, std (ddof=1; 0.0 for
    n == 1), min, max, cv, robust_cv, median_ci, p90_ci, p99_ci (:func:`quantile_ci`),
    ci_rel_halfwidth, confidence, outliers (:func:`tukey_outliers`, k = 1.5), drift.

    Values are plain Python ints/floats/lists/None (``json.dumps(..., allow_nan=False)``
    works). When n is too small for the requested confidence: ``p90_ci``/``p99_ci`` are
    None; ``median_ci`` (an array in the schema) falls back to ``[min, max]`` — the widest
    order-statistic interval, whose coverage 1 - 2 * 0.5**n is then *below* the requested
    confidence — and ``ci_rel_halfwidth`` is None to say the requested CI was not reached.
    ``drift`` is None when n < 4. Samples must be finite and >= 0 (they are durations);
    empty input raises ``ValueError`` (a case without samples has no stats at all).
    """
    a = _as_array(samples_ns, "samples_ns")
    if not np.all(np.isfinite(a)):
        raise ValueError("samples_ns contains a non-finite value")
    if np.any(a < 0):
        raise ValueError("samples_ns contains a negative duration")
    confidence = float(confidence)
    n = int(a.size)
    s = np.sort(a)
    p50, p90, p95, p99 = (float(v) for v in np.percentile(s, [50.0, 90.0, 95.0, 99.0], method="linear"))
    med_ci = _pair(median_ci(s, confidence))
    return {
        "n": n,
        "p50": p50,
        "p90": p90,
        "p95": p95,
        "p99": p99,
        "mean": float(np.mean(s)),
        "std": float(np.std(s, ddof=1)) if n > 1 else 0.0,
        "min": float(s[0]),
        "max": float(s[-1]),
        "cv": cv(s),  # finite: samples >= 0, so mean == 0 implies no spread
        "robust_cv": robust_cv(s),  # finite: median == 0 of samples >= 0 implies MAD == 0
        "median_ci": med_ci if med_ci is not None else [float(s[0]), float(s[-1])],
        "p90_ci": _pair(quantile_ci(s, 0.90, confidence)),
        "p99_ci": _pair(quantile_ci(s, 0.99, confidence)),
        "ci_rel_halfwidth": _finite_or_none(ci_rel_halfwidth(s, confidence)),
        "confidence": confidence,
        "outliers": tukey_outliers(s),
        "drift": _finite_or_none(drift(a)),  # time order: the unsorted samples
    }


def early_stopping_min_queries(overlatency: int, q: float, confidence: float = 0.99, tolerance: float = 0.0) -> int:
    """Smallest total count n for which ``overlatency`` samples above a threshold still show
    "the q-quantile is at most the threshold" at ``confidence`` (MLPerf LoadGen's early-stopping
    idea, written here from its definition).

    Maths: if the true q-quantile were above the threshold, each sample would exceed it with
    probability >= p = 1 - q + ``tolerance``, so the count X of samples above it satisfies
    P(X <= t) <= P(Bin(n, p) <= t) = bdtr(t, n, p). The claim holds at ``confidence`` C when
    bdtr(t, n, p) <= 1 - C. bdtr(t, n, p) decreases in n, so the smallest such n is found by
    doubling then bisection. t = 0 gives n = ceil(log(1 - C) / log(q - tolerance)) (p90 at 99 %:
    44; p99 at 99 %: 459).
    """
    t = int(overlatency)
    if t < 0:
        raise ValueError(f"overlatency must be >= 0, got {overlatency!r}")
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile q must be a fraction in (0, 1), got {q!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    p = 1.0 - q + float(tolerance)
    if not 0.0 < p < 1.0:
        raise ValueError(f"tolerance {tolerance!r} leaves no valid exceedance probability for q={q!r}")
    alpha = 1.0 - confidence

    def ok(n: int) -> bool:
        return float(bdtr(t, n, p)) <= alpha

    lo, hi = t, max(t + 1, 2 * (t + 1))
    while not ok(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: not ok(lo) (or lo == t, where bdtr = 1), ok(hi)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def early_stopping_percentile(latencies: Sequence[float], q: float, confidence: float = 0.99,
                              tolerance: float = 0.0) -> dict:
    """A conservative estimate of the ``q``-quantile (``q`` a fraction, e.g. 0.90 or 0.99).

    With sorted samples x_(0) <= ... <= x_(n-1) (0-based) and K the number of samples below
    the true quantile xi, K ~ Bin(n, q') with q' = q - ``tolerance``, and x_(k) >= xi <=> K <= k,
    so P(x_(k) >= xi) = bdtr(k, n, q'). The estimate is x_(k) for the smallest k with
    bdtr(k, n, q') >= ``confidence``: an upper confidence bound on the percentile, the value
    MLPerf LoadGen reports as its "early stopping" percentile. ``overlatency_allowed`` = n - 1 - k
    samples lie above it. None when n < ``min_queries`` (even the maximum is not a bound at
    this confidence: q'^n > 1 - confidence).

    Returns ``{"n", "q", "confidence", "tolerance", "estimate", "rank", "overlatency_allowed",
    "min_queries", "valid"}``.
    """
    a = _as_array(latencies, "latencies")
    n = int(a.size)
    min_n = early_stopping_min_queries(0, q, confidence, tolerance)
    qq = q - float(tolerance)
    k = None
    if n >= min_n:
        # start at the normal approximation of the rank, then walk to the exact boundary
        z = float(ndtri(confidence))
        k = min(n - 1, max(0, int(math.floor(n * qq + z * math.sqrt(n * qq * (1 - qq))))))
        while k > 0 and float(bdtr(k - 1, n, qq)) >= confidence:
            k -= 1
        while k < n - 1 and float(bdtr(k, n, qq)) < confidence:
            k += 1
        if float(bdtr(k, n, qq)) < confidence:
            k = None
    est = None
    if k is not None:
        est = float(np.partition(a, k)[k])
    return {"n": n, "q": float(q), "confidence": float(confidence), "tolerance": float(tolerance),
            "estimate": est, "rank": k, "overlatency_allowed": None if k is None else n - 1 - k,
            "min_queries": min_n, "valid": k is not None}
