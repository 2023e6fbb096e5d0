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
from scipy.special import bdtr, bdtrc, ndtri, stdtr, stdtrit

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
    "batch_means_quantile_ci",
    "autocorr_ci_rel_halfwidth",
    "nested_bootstrap",
    "variance_components",
    "repeats_test",
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


# --------------------------------------------------------------------------- autocorrelation

#: fewest samples per batch for the batch-means interval; below ``min_batches`` such batches
#: the i.i.d. interval is used
MIN_BATCH_SIZE = 16


def _batch_variance(y: np.ndarray, min_batches: int, max_batches: int) -> tuple[float, int]:
    """Batch-means estimate of n Var(mean of ``y``) and the number of batches used.

    Start with b = ``max_batches`` batches; while b > ``min_batches`` and the lag-1
    autocorrelation of the batch means exceeds 0.5 / sqrt(b), halve b (so the batches
    double in length) — batches must be long against the correlation time of ``y``.
    """
    n = y.size
    b = max(min_batches, min(max_batches, n // MIN_BATCH_SIZE))
    while True:
        m = n // b
        means = y[n - m * b:].reshape(b, m).mean(axis=1)  # drop the oldest remainder
        if b <= min_batches:
            break
        d = means - means.mean()
        ss = float(d @ d)
        r1 = float(d[1:] @ d[:-1]) / ss if ss > 0 else 0.0
        if r1 <= 0.5 / math.sqrt(b):
            break
        b = max(min_batches, b // 2)
    return m * float(np.var(means, ddof=1)), b


def batch_means_quantile_ci(samples: Sequence[float], q: float, confidence: float = 0.95, *,
                            min_batches: int = 8, max_batches: int = 20) -> dict:
    r"""Confidence interval of the q-quantile (``q`` in (0, 1)) of a *time-ordered*, autocorrelated series.

    Consecutive latencies are not independent (a slow stretch lasts several iterations), so
    the order-statistic interval of :func:`quantile_ci`, which assumes i.i.d. samples, is too
    narrow: on an AR(1) series with phi = 0.95 it covers the true median 31 % of the time. Here the
    uncertainty is taken from the series itself.

    Maths. Let :math:`\hat\xi` be the sample q-quantile and :math:`Y_t = 1\{x_t \le \hat\xi\}`.
    By Bahadur's representation :math:`\hat\xi - \xi \approx -(\bar Y(\xi) - q)/f(\xi)`, so a
    CI for the probability :math:`q \pm h` maps to the quantile through the empirical
    distribution: :math:`[\hat F^{-1}(q - h), \hat F^{-1}(q + h)]`. The half-width :math:`h`
    comes from non-overlapping **batch means** of :math:`Y` (Schmeiser 1982; the quantile
    version is Meketon & Schmeiser's sectioning): split the series into :math:`b` batches of
    length :math:`m` (the oldest :math:`n - bm` samples are left out), batch means
    :math:`\bar Y_j`, then

    .. math::

        \hat\sigma^2_{BM} = \frac{m}{b-1}\sum_{j=1}^{b} (\bar Y_j - \bar Y)^2, \qquad
        h = t_{b-1,(1+c)/2}\,\hat\sigma_{BM} / \sqrt{n}.

    :math:`\hat\sigma^2_{BM}` estimates :math:`\sigma^2_\infty = q(1-q)(1 + 2\sum_k \rho_k)`,
    the long-run variance of :math:`Y`, when the batches are long against the correlation
    time; so :math:`b` starts at ``max_batches`` and is halved (down to ``min_batches``)
    while the batch means are still correlated (lag-1 autocorrelation > 0.5/sqrt(b)). The
    **effective sample size** is :math:`n_{eff} = n\,q(1-q)/\hat\sigma^2_{BM}` (capped at
    n): for i.i.d. samples about n, for AR(1) about :math:`n(1-\phi)/(1+\phi)` at the median of
    a normal series (less correlated indicators make it a little larger).
    With :math:`\hat F^{-1}(p) = x_{(\lceil np \rceil - 1)}` (0-based order statistics) the
    interval is :math:`[x_{(\lfloor n(q-h)\rfloor - 1)}, x_{(\lceil n(q+h)\rceil)}]` (one rank
    wider each side for rounding), and finally the union with the exact i.i.d. interval of
    :func:`quantile_ci` — never narrower than that, since the batch estimate is itself noisy.

    Coverage measured on Gaussian AR(1) series (n = 2000, 1000 series each, lognormal
    transform, ``benchmarks/bench_ci_coverage.py``): 95 % nominal gives 97.5 / 96.5 / 95.7 /
    94.1 % at phi = 0 / 0.5 / 0.9 / 0.95, where the i.i.d. interval gives 96 / 82 / 42 / 31 %
    (``tests/test_stats.py`` checks >= 93 %).

    Returns ``{"ci": (lo, hi), "n_eff", "batches", "method"}``; ``method`` is
    ``"batch_means"``, or ``"iid"`` when n < ``min_batches`` x 16 (too short for batches:
    the i.i.d. interval and n_eff = n). ``ci`` is ``(nan, nan)`` when the interval would
    reach past the sample's ends (too few effective samples for the confidence).
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile q must be a fraction in (0, 1), got {q!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if int(min_batches) < 2 or int(max_batches) < int(min_batches):
        raise ValueError(f"need 2 <= min_batches <= max_batches, got {min_batches}, {max_batches}")
    a = _as_array(samples).astype(np.float64, copy=False)
    n = a.size
    iid = quantile_ci(a, q, confidence, is_sorted=False)
    if n < int(min_batches) * MIN_BATCH_SIZE:
        return {"ci": iid, "n_eff": float(n), "batches": None, "method": "iid"}
    s = np.sort(a)
    xi = float(np.percentile(s, 100.0 * q, method="linear"))
    y = (a <= xi).astype(np.float64)
    var, b = _batch_variance(y, int(min_batches), int(max_batches))
    pq = q * (1.0 - q)
    n_eff = float(n) if var <= 0 else min(float(n), n * pq / var)
    h = float(stdtrit(b - 1, 0.5 + confidence / 2.0)) * math.sqrt(max(var, 0.0) / n)
    lo_r, hi_r = int(math.floor(n * (q - h))) - 1, int(math.ceil(n * (q + h)))
    if lo_r < 0 or hi_r > n - 1:
        return {"ci": (NAN, NAN), "n_eff": n_eff, "batches": b, "method": "batch_means"}
    lo, hi = float(s[lo_r]), float(s[hi_r])
    if not math.isnan(iid[0]):
        lo, hi = min(lo, iid[0]), max(hi, iid[1])
    return {"ci": (lo, hi), "n_eff": n_eff, "batches": b, "method": "batch_means"}


def autocorr_ci_rel_halfwidth(samples: Sequence[float], confidence: float = 0.95) -> float:
    """Relative half-width of the median's autocorrelation-aware CI: (hi - lo) / 2 / median.

    ``[lo, hi]`` is :func:`batch_means_quantile_ci` of the *time-ordered* samples at q = 0.5
    (so never below :func:`ci_rel_halfwidth`, the i.i.d. one); the median is type 7.
    ``nan`` when the CI is undefined or the median is 0 while the interval has width.
    O(n log n) (one sort): meant for check points, not for every iteration.
    """
    lo, hi = batch_means_quantile_ci(samples, 0.5, confidence)["ci"]
    if math.isnan(lo):
        return NAN
    width = hi - lo
    if width == 0.0:
        return 0.0
    med = percentile(samples, 50.0)
    return NAN if med == 0.0 else width / 2.0 / abs(med)


# --------------------------------------------------------------------------- repeats (processes)

def _stat_of(a: np.ndarray, q: float | str) -> float:
    if q == "mean":
        return float(np.mean(a))
    return float(np.percentile(a, 100.0 * float(q), method="linear"))


def variance_components(estimates: Sequence[float], within_var: Sequence[float]) -> dict:
    r"""Split the scatter of per-process estimates into between- and within-process parts.

    One-way random-effects model for K processes (repeats): the estimate of process k is
    :math:`\hat\theta_k = \theta + B_k + W_k`, :math:`B_k` the process's own offset
    (memory layout, core placement, clock — fixed for its lifetime, variance
    :math:`\sigma^2_b`) and :math:`W_k` the sampling error of its iterations (variance
    :math:`w_k`, known from the within-process CI or bootstrap). Method of moments:

    .. math::

        s^2 = \frac{1}{K-1}\sum_k (\hat\theta_k - \bar\theta)^2, \quad
        \bar w = \frac1K \sum_k w_k, \quad
        \hat\sigma^2_b = \max(0, s^2 - \bar w), \quad
        \text{share} = \frac{\hat\sigma^2_b}{\hat\sigma^2_b + \bar w}.

    Everything is also given relative to :math:`\bar\theta` (``between_cv`` =
    :math:`\hat\sigma_b/\bar\theta`, ``within_cv``, ``observed_cv``). The share is the fraction
    of one process's uncertainty that its own CI does not see; ``None`` for fewer than 2
    estimates (no between-process information).
    """
    e = _as_array(estimates, "estimates").astype(np.float64)
    w = _as_array(within_var, "within_var").astype(np.float64)
    if w.size != e.size:
        raise ValueError("estimates and within_var differ in length")
    mean = float(np.mean(e))
    wbar = float(np.mean(w))
    rel = (lambda v: math.sqrt(v) / abs(mean) if mean else None)
    if e.size < 2:
        return {"k": int(e.size), "mean": mean, "observed_var": None, "within_var": wbar, "between_var": None,
                "between_share": None, "observed_cv": None, "within_cv": rel(wbar), "between_cv": None}
    s2 = float(np.var(e, ddof=1))
    b2 = max(0.0, s2 - wbar)
    share = b2 / (b2 + wbar) if (b2 + wbar) > 0 else 0.0
    return {"k": int(e.size), "mean": mean, "observed_var": s2, "within_var": wbar, "between_var": b2,
            "between_share": share, "observed_cv": rel(s2), "within_cv": rel(wbar), "between_cv": rel(b2)}


def nested_bootstrap(groups: Sequence[Sequence[float]], q: float | str = 0.5, *, confidence: float = 0.95,
                     n_boot: int = 2000, seed: int = 0, n_eff: Sequence[float] | None = None) -> dict:
    r"""Headline and CI of a statistic measured in K processes: a two-level (nested) bootstrap.

    ``groups`` holds each process's samples (time order); ``q`` a quantile fraction or
    ``"mean"``. The estimate is the mean of the per-process statistics,
    :math:`\hat\theta = \frac1K\sum_k \hat\theta_k` (each process weighs the same, whatever
    its sample count — pyperf's convention). One replicate:

    1. **level 1, processes**: draw K process indices with replacement;
    2. **level 2, samples**: for each drawn process k, the statistic of a resample of its
       samples. For a quantile this is drawn exactly, without building the resample: the
       r-th smallest of :math:`n'` draws from the empirical distribution is
       :math:`\hat F_k^{-1}(U)`, :math:`U \sim \mathrm{Beta}(r, n' - r + 1)`,
       :math:`r = \max(1, \mathrm{round}(q n'))`. Taking :math:`n' = n_{eff,k}`, the effective
       sample size of :func:`batch_means_quantile_ci`, instead of :math:`n_k` makes the
       resampling honest for autocorrelated series (for i.i.d. samples it is the ordinary
       bootstrap of the order statistic). For the mean: :math:`\bar x_k + s_k Z/\sqrt{n'}`.
    3. :math:`\theta^* = ` the mean of the K level-2 values.

    The percentile interval of :math:`\theta^*` is then widened about :math:`\hat\theta` by
    :math:`c_K = \frac{t_{K-1,(1+c)/2}}{z_{(1+c)/2}}\sqrt{K/(K-1)}` (K >= 2): the level-1
    bootstrap of K values underestimates the variance of their mean by (K-1)/K and its
    normal-like tails ignore that the variance itself is estimated from K values — with
    K = 5 the uncorrected interval covers about 85 % at 95 % nominal. With K = 1 only level
    2 runs (the within-process interval, no between-process information).

    Returns ``{"estimate", "ci", "k", "per_repeat", "n_eff", "components"}`` with
    ``components`` from :func:`variance_components`, the within variance :math:`w_k` of each
    process being the variance of its level-2 draws.
    """
    if q != "mean" and not (isinstance(q, (int, float)) and 0.0 < float(q) < 1.0):
        raise ValueError(f"q must be a quantile fraction in (0, 1) or 'mean', got {q!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    arrays = [np.sort(_as_array(g, "group").astype(np.float64)) for g in groups]
    raw = [np.asarray(g, dtype=np.float64) for g in groups]
    k = len(arrays)
    if k == 0:
        raise ValueError("nested_bootstrap needs at least one group")
    if n_eff is None:
        qq = 0.5 if q == "mean" else float(q)
        n_eff = [batch_means_quantile_ci(r, qq, confidence)["n_eff"] for r in raw]
    neff = [max(1.0, min(float(ne), float(a.size))) for ne, a in zip(n_eff, arrays)]
    if len(neff) != k:
        raise ValueError("n_eff must have one value per group")
    est = np.array([_stat_of(a, q) for a in arrays])
    rng = np.random.default_rng(seed)
    B = int(n_boot)
    draws = np.empty((B, k))
    for j, (a, ne) in enumerate(zip(arrays, neff)):
        if q == "mean":
            sd = float(np.std(a, ddof=1)) if a.size > 1 else 0.0
            draws[:, j] = est[j] + sd / math.sqrt(ne) * rng.standard_normal(B)
        else:
            r = min(max(1, int(round(float(q) * ne))), int(ne))
            u = rng.beta(r, ne - r + 1, size=B)
            idx = np.minimum((u * a.size).astype(np.int64), a.size - 1)
            draws[:, j] = a[idx]
    if k >= 2:
        pick = rng.integers(0, k, size=(B, k))
        theta = np.take_along_axis(draws, pick, axis=1).mean(axis=1)
    else:
        theta = draws[:, 0]
    estimate = float(np.mean(est))
    a_ = (1.0 - confidence) / 2.0
    lo, hi = (float(v) for v in np.quantile(theta, [a_, 1.0 - a_]))
    if k >= 2:
        c = float(stdtrit(k - 1, 1.0 - a_)) / float(ndtri(1.0 - a_)) * math.sqrt(k / (k - 1))
        lo, hi = estimate - c * (estimate - lo), estimate + c * (hi - estimate)
    comps = variance_components(est, draws.var(axis=0, ddof=1) if B > 1 else np.zeros(k))
    return {"estimate": estimate, "ci": (lo, hi), "k": k, "per_repeat": [float(v) for v in est],
            "n_eff": neff, "components": comps}


def repeats_test(base: Sequence[float], new: Sequence[float], *, confidence: float = 0.99,
                 extra_sigma: float | None = None, extra_dof: int = 0) -> dict:
    r"""Are two runs' per-process values different? A two-sample t-test on their logarithms.

    ``base`` and ``new`` are one value per process (repeat) of each run — e.g. each
    process's median. With :math:`y = \ln v` (a relative scale), :math:`K_b, K_n` processes,
    sample variances :math:`s_b^2, s_n^2`:

    .. math::

        d = \bar y_n - \bar y_b, \quad
        s^2 = \frac{(K_b-1)s_b^2 + (K_n-1)s_n^2 + \nu_h \sigma_h^2}{K_b + K_n - 2 + \nu_h}, \quad
        T = \frac{d}{s\sqrt{1/K_b + 1/K_n}} \sim t_{K_b+K_n-2+\nu_h}.

    :math:`s` is the between-process noise of the two runs pooled (one machine, one noise
    level); an independent estimate from the machine's history (``extra_sigma`` =
    :math:`\sigma_h` on the log scale, ``extra_dof`` = :math:`\nu_h`) tightens it by adding
    degrees of freedom. Because each value already carries its process's within-run
    sampling error, :math:`s` is the whole process-to-process scatter: nothing is assumed
    about the split. The ratio is :math:`e^d` (ratio of geometric means), its CI
    :math:`e^{d \pm t_{\nu,(1+c)/2}\, s\sqrt{1/K_b+1/K_n}}`, p two-sided.

    Returns ``{"ratio", "ci", "p_value", "sigma", "dof", "k_base", "k_new"}``; ratio, ci and
    p are nan when a side has fewer than 2 values and no history supplies the dof.
    """
    yb = np.log(_as_array(base, "base").astype(np.float64))
    yn = np.log(_as_array(new, "new").astype(np.float64))
    kb, kn = yb.size, yn.size
    dof = (kb - 1) + (kn - 1)
    ss = (kb - 1) * (float(np.var(yb, ddof=1)) if kb > 1 else 0.0) + \
         (kn - 1) * (float(np.var(yn, ddof=1)) if kn > 1 else 0.0)
    if extra_sigma is not None and extra_dof > 0 and math.isfinite(extra_sigma):
        ss += extra_dof * float(extra_sigma) ** 2
        dof += int(extra_dof)
    d = float(np.mean(yn) - np.mean(yb))
    out = {"ratio": math.exp(d), "ci": (NAN, NAN), "p_value": NAN, "sigma": NAN, "dof": dof,
           "k_base": kb, "k_new": kn}
    if dof < 1:
        return out
    s = math.sqrt(ss / dof)
    se = s * math.sqrt(1.0 / kb + 1.0 / kn)
    out["sigma"] = s
    if se == 0.0:
        out["ci"] = (math.exp(d), math.exp(d))
        out["p_value"] = 1.0 if d == 0.0 else 0.0
        return out
    t = d / se
    tc = float(stdtrit(dof, 0.5 + confidence / 2.0))
    out["ci"] = (math.exp(d - tc * se), math.exp(d + tc * se))
    out["p_value"] = float(2.0 * stdtr(dof, -abs(t)))
    return out


def _pair(ci: tuple[float, float]) -> list[float] | None:
    lo, hi = ci
    return None if math.isnan(lo) or math.isnan(hi) else [float(lo), float(hi)]


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def summarize(samples_ns: Sequence[float], confidence: float = 0.95) -> dict:
    """Summary statistics of per-iteration times, shaped as the run schema's ``$defs/stats``.

    Keys: n, p50, p90, p95, p99 (:func:`percentile`, type 7), mean, std (ddof=1; 0.0 for
    n == 1), min, max, cv, robust_cv, median_ci, p90_ci, p99_ci, ci_rel_halfwidth,
    confidence, outliers (:func:`tukey_outliers`, k = 1.5), drift, and ``ci_method`` /
    ``n_eff``. The CIs are :func:`batch_means_quantile_ci` of the time-ordered samples
    (autocorrelation-aware, never narrower than the i.i.d. :func:`quantile_ci`; for fewer
    than 128 samples the i.i.d. interval itself, ``ci_method = "iid"``); ``n_eff`` is the
    median's effective sample size; ``ci_rel_halfwidth`` is that median CI's half-width
    relative to the median.

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
    bm = {q: batch_means_quantile_ci(a, q, confidence) for q in (0.5, 0.9, 0.99)}
    med_ci = _pair(bm[0.5]["ci"])
    hw = None
    if med_ci is not None:
        width = med_ci[1] - med_ci[0]
        hw = 0.0 if width == 0.0 else (None if p50 == 0.0 else width / 2.0 / abs(p50))
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
        "p90_ci": _pair(bm[0.9]["ci"]),
        "p99_ci": _pair(bm[0.99]["ci"]),
        "ci_rel_halfwidth": hw,
        "ci_method": bm[0.5]["method"],
        "n_eff": round(float(bm[0.5]["n_eff"]), 1),
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
