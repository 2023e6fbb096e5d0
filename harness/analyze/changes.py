r"""Change detection: is NEW different from BASE, and where did a history change level?

Pure functions over numbers (numpy; scipy only inside the two tests that need it). Two
questions, two tools:

**Two runs** (``bench compare``). Each side of a case has its raw per-iteration samples
:math:`x_1..x_m` (BASE) and :math:`y_1..y_n` (NEW). For a statistic :math:`s` (median,
99th percentile, mean) the *ratio* is :math:`R = s(y) / s(x)`.

* Confidence interval of :math:`R` (:func:`bootstrap_ratios`): draw :math:`B` bootstrap
  replicates, each resampling :math:`x` and :math:`y` independently with replacement,
  :math:`R^*_b = s(y^*_b)/s(x^*_b)`; the percentile interval is the
  :math:`(1-c)/2` and :math:`(1+c)/2` quantiles of :math:`\{R^*_b\}`
  (Efron & Tibshirani 1993, ch. 13). The generator is seeded, so the interval is a
  deterministic function of the samples.
* Mann-Whitney U (:func:`mann_whitney_p`): two-sided test of
  :math:`H_0: P(Y > X) = P(X > Y)` on the raw samples (rank-sum, normal approximation
  with tie correction for larger samples; scipy's ``mannwhitneyu``). It is what asv's
  ``compare`` uses, with :math:`p < 0.002`.
* Tail test for percentiles (:func:`tail_exceedance_p`): with :math:`t` the pooled
  :math:`q`-quantile, Fisher's exact test on the 2x2 table of samples above / not above
  :math:`t` in each run (Mood's median test generalised to the :math:`q`-quantile). It
  sees a fatter tail that leaves the median alone, which U does not.

:func:`judge` turns a ratio into a verdict: a change counts only when it is *beyond the
threshold* (:math:`R > 1+t` or :math:`R < 1/(1+t)`, asv's symmetric factor) **and**
*significant*; beyond-but-not-significant is *inconclusive*, never a regression, and so is
anything measured on fewer than ``min_samples`` samples a side.

**Run-to-run noise** (:func:`run_to_run_noise`, :func:`check_run_noise`). Within-run
significance cannot see what differs between two processes of the same code; ``bench
compare`` also asks that NEW be beyond :math:`k = 3` robust sigmas
(:math:`1.4826\,\mathrm{MAD}` of the log values) of the level of the case's earlier runs
on the same machine, and calls the change inconclusive when fewer than 5 such runs exist.

**A history** (``bench history``): the series :math:`v_1..v_N` of one case's headline
value over the nightly runs of one machine. :func:`detect_steps` fits a piecewise
constant function to :math:`y_i = \ln v_i` by the L1 Potts model (Friedrich et al.
2008; asv's ``step_detect``)

.. math::

    \min_{k, j, \mu}\; \gamma k + \sum_{r=1}^{k} \sum_{i=j_{r-1}}^{j_r - 1} w_i\,|y_i - \mu_r|

(:func:`solve_l1_potts`), with :math:`\gamma` chosen by a Schwarz-type criterion
(:func:`solve_l1_potts_autogamma`), then keeps only the level changes that are beyond the
threshold and beyond the run-to-run noise, and sorts them into lasting *steps*, *blips*
(a short excursion that came back) and *pending* changes (seen in fewer than ``persist``
runs so far). :func:`lookback_zscore` is conbench's simpler rule, reported alongside.

References: F. Friedrich et al., "Complexity Penalized M-Estimation: Fast Computation",
JCGS 17(1) 201-224 (2008); Y.-C. Yao, "Estimating the number of change-points via
Schwarz' criterion", Stat. Prob. Letters 6 (1988); asv ``step_detect.py`` and
``statistics.py``; conbench's lookback z-score.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "LOWER", "HIGHER", "DEFAULT_ALPHA", "DEFAULT_CONFIDENCE", "DEFAULT_N_BOOT", "DEFAULT_MIN_SAMPLES",
    "DEFAULT_SEED", "REGRESSION", "IMPROVEMENT", "UNCHANGED", "INCONCLUSIVE",
    "Change", "bootstrap_ratios", "bootstrap_ratio_ci", "mann_whitney_p", "tail_exceedance_p",
    "beyond_threshold", "judge", "compare_samples", "compare_values",
    "DEFAULT_NOISE_K", "DEFAULT_MIN_HISTORY", "DEFAULT_HISTORY_WINDOW", "NoiseCheck", "run_to_run_noise",
    "check_run_noise",
    "Segment", "StepEvent", "StepFit", "weighted_median", "solve_l1_potts", "solve_l1_potts_autogamma",
    "robust_noise", "detect_steps", "lookback_zscore",
]

LOWER = "lower"  #: lower is better (latency)
HIGHER = "higher"  #: higher is better (throughput, accuracy)

DEFAULT_ALPHA = 0.002  #: significance level of the tests (asv's)
DEFAULT_CONFIDENCE = 0.99  #: confidence of the bootstrap interval of the ratio
DEFAULT_N_BOOT = 2000  #: bootstrap replicates
DEFAULT_MIN_SAMPLES = 10  #: fewer samples than this on either side: inconclusive
DEFAULT_SEED = 0  #: bootstrap generator seed (results are deterministic)

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
INCONCLUSIVE = "inconclusive"


# =========================================================================== two runs

def _stat(a: np.ndarray, s: float | str) -> float:
    if s == "mean":
        return float(a.mean())
    return float(np.quantile(a, float(s)))


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return 1.0 if num == 0 else math.inf
    return num / den


def _row_quantiles(x: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Type-7 (numpy "linear") quantiles of each row: ``out[i, r]`` is quantile ``qs[i]`` of row r.

    Sorting the rows once is several times faster than ``np.quantile(axis=1)`` here.
    """
    s = np.sort(x, axis=1)
    n = s.shape[1]
    out = np.empty((len(qs), s.shape[0]))
    for i, q in enumerate(qs):
        h = (n - 1) * q
        lo = int(math.floor(h))
        hi = min(lo + 1, n - 1)
        out[i] = s[:, lo] + (h - lo) * (s[:, hi] - s[:, lo])
    return out


#: per side, the most samples a bootstrap resamples (see :func:`bootstrap_ratios`)
MAX_BOOT_SAMPLES = 5_000


def bootstrap_ratios(base: Sequence[float], new: Sequence[float], stats: Mapping[str, float | str], *,
                     confidence: float = DEFAULT_CONFIDENCE, n_boot: int = DEFAULT_N_BOOT,
                     seed: int = DEFAULT_SEED) -> dict[str, tuple[float, float, float]]:
    r"""Ratios NEW/BASE of several statistics with bootstrap percentile intervals.

    ``stats`` maps a name to a quantile in (0, 1) (numpy's linear / type-7 definition) or
    ``"mean"``. Returns ``{name: (R, lo, hi)}`` with :math:`R = s(new)/s(base)` and
    :math:`[lo, hi]` the :math:`c` percentile interval of :math:`R^* = s(new^*)/s(base^*)`
    over ``n_boot`` replicates, each resampling both sides independently with replacement.
    All statistics share the same replicates; the generator is seeded with ``seed``.
    A zero denominator gives ``R = inf`` (``1`` when both are zero).

    Large sides are resampled from a random subsample of at most ``MAX_BOOT_SAMPLES`` values
    (without replacement, same seed): the interval of a statistic of m values is wider than
    that of n > m values by about sqrt(n/m), so the interval is conservative (never narrower
    than the full data's), while the point estimate R uses every sample. A micro-model's run
    holds 10^5 samples; resampling all of them 2,000 times took tens of seconds per compare.
    """
    b_full = np.asarray(base, dtype=float)
    a_full = np.asarray(new, dtype=float)
    rng_sub = np.random.default_rng(seed + 1)
    b = b_full if b_full.size <= MAX_BOOT_SAMPLES else rng_sub.choice(b_full, MAX_BOOT_SAMPLES, replace=False)
    a = a_full if a_full.size <= MAX_BOOT_SAMPLES else rng_sub.choice(a_full, MAX_BOOT_SAMPLES, replace=False)
    if b.size == 0 or a.size == 0:
        raise ValueError("bootstrap needs samples on both sides")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    names = list(stats)
    quant_names = [k for k in names if stats[k] != "mean"]
    qs = [float(stats[k]) for k in quant_names]
    rng = np.random.default_rng(seed)
    draws = {k: np.empty(n_boot) for k in names}
    # Bound the temporary (chunk x n) arrays to a few million elements.
    chunk = max(1, min(n_boot, 2_000_000 // max(b.size, a.size)))
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, n_boot, chunk):
            m = min(chunk, n_boot - start)
            rb = b[rng.integers(0, b.size, size=(m, b.size))]
            ra = a[rng.integers(0, a.size, size=(m, a.size))]
            if qs:
                qb = _row_quantiles(rb, qs)
                qa = _row_quantiles(ra, qs)
                for i, k in enumerate(quant_names):
                    draws[k][start:start + m] = qa[i] / qb[i]
            if len(quant_names) < len(names):
                ratio = ra.mean(axis=1) / rb.mean(axis=1)
                for k in names:
                    if stats[k] == "mean":
                        draws[k][start:start + m] = ratio
    lo_q, hi_q = (1 - confidence) / 2, (1 + confidence) / 2
    out = {}
    for k in names:
        point = _ratio(_stat(a_full, stats[k]), _stat(b_full, stats[k]))
        d = draws[k]
        d = d[np.isfinite(d)]
        if d.size == 0:
            out[k] = (point, math.nan, math.nan)
        else:
            lo, hi = np.quantile(d, [lo_q, hi_q])
            out[k] = (point, float(lo), float(hi))
    return out


def bootstrap_ratio_ci(base: Sequence[float], new: Sequence[float], stat: float | str = 0.5, *,
                       confidence: float = DEFAULT_CONFIDENCE, n_boot: int = DEFAULT_N_BOOT,
                       seed: int = DEFAULT_SEED) -> tuple[float, float, float]:
    """``(R, lo, hi)`` for one statistic (a quantile in (0, 1) or ``"mean"``); see :func:`bootstrap_ratios`."""
    return bootstrap_ratios(base, new, {"s": stat}, confidence=confidence, n_boot=n_boot, seed=seed)["s"]


def mann_whitney_p(base: Sequence[float], new: Sequence[float]) -> float:
    r"""Two-sided Mann-Whitney U p-value for "NEW and BASE come from the same distribution".

    :math:`U = \sum_{i,j} [y_j > x_i] + \tfrac12 [y_j = x_i]`; under :math:`H_0`,
    :math:`E U = mn/2`. scipy computes the exact null distribution for small samples
    without ties and the tie-corrected normal approximation otherwise. Returns 1.0 when
    the test is undefined (a side is empty, or every value is identical).
    """
    from scipy.stats import mannwhitneyu

    b = np.asarray(base, dtype=float)
    a = np.asarray(new, dtype=float)
    if b.size == 0 or a.size == 0:
        return 1.0
    if np.all(a == a[0]) and np.all(b == a[0]):
        return 1.0
    p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return p if math.isfinite(p) else 1.0


def tail_exceedance_p(base: Sequence[float], new: Sequence[float], q: float = 0.99) -> float:
    r"""Two-sided p-value that NEW and BASE put the same mass above their pooled ``q``-quantile.

    With :math:`t` the ``q``-quantile of the pooled samples, :math:`k_x = \#\{x_i > t\}`,
    :math:`k_y = \#\{y_j > t\}`: Fisher's exact test on
    :math:`\begin{pmatrix}k_y & n-k_y\\ k_x & m-k_x\end{pmatrix}`. For ``q = 0.5`` this is
    Mood's median test (exact form).
    """
    from scipy.stats import fisher_exact

    b = np.asarray(base, dtype=float)
    a = np.asarray(new, dtype=float)
    if b.size == 0 or a.size == 0:
        return 1.0
    t = np.quantile(np.concatenate([b, a]), q)
    ka, kb = int((a > t).sum()), int((b > t).sum())
    p = float(fisher_exact([[ka, a.size - ka], [kb, b.size - kb]]).pvalue)
    return p if math.isfinite(p) else 1.0


def beyond_threshold(ratio: float, threshold: float) -> bool:
    """True when ``ratio`` is outside ``[1/(1+t), 1+t]`` (asv's symmetric factor ``1+t``)."""
    if ratio is None or not math.isfinite(ratio):
        return ratio is not None and not math.isnan(ratio)
    return ratio > 1 + threshold or ratio < 1 / (1 + threshold)


@dataclass
class Change:
    """One metric of one case, BASE vs NEW, and the verdict."""

    metric: str
    better: str  # LOWER or HIGHER
    base: float | None
    new: float | None
    ratio: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    threshold: float
    n_base: int | None
    n_new: int | None
    significant: bool
    beyond: bool
    verdict: str
    reason: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def worse(self) -> bool:
        """The ratio points the bad way (regardless of size or significance)."""
        if self.ratio is None or math.isnan(self.ratio):
            return False
        return self.ratio > 1 if self.better == LOWER else self.ratio < 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        d["change_pct"] = None if self.ratio is None or not math.isfinite(self.ratio) else (self.ratio - 1) * 100
        for k, v in list(d.items()):
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


def judge(ratio: float, *, significant: bool, threshold: float, better: str, n_base: int | None = None,
          n_new: int | None = None, min_samples: int = DEFAULT_MIN_SAMPLES) -> tuple[str, str, bool]:
    """``(verdict, reason, beyond)`` for a ratio NEW/BASE.

    * fewer than ``min_samples`` on either side (when counts are given): inconclusive;
    * within the threshold: unchanged (even when significant);
    * beyond and significant: regression if the ratio points the bad way for ``better``,
      else improvement;
    * beyond but not significant: inconclusive.
    """
    beyond = beyond_threshold(ratio, threshold)
    if n_base is not None and n_new is not None and min(n_base, n_new) < min_samples:
        return INCONCLUSIVE, f"too few samples (n={n_base} vs {n_new}, need {min_samples})", beyond
    if not beyond:
        return UNCHANGED, ("significant but within threshold" if significant else ""), beyond
    worse = ratio > 1 if better == LOWER else ratio < 1
    if significant:
        return (REGRESSION if worse else IMPROVEMENT), "", beyond
    return INCONCLUSIVE, "beyond threshold but not significant", beyond


def compare_samples(base: Sequence[float], new: Sequence[float], *, metric: str, stat: float | str,
                    better: str = LOWER, threshold: float = 0.05, alpha: float = DEFAULT_ALPHA,
                    confidence: float = DEFAULT_CONFIDENCE, n_boot: int = DEFAULT_N_BOOT,
                    seed: int = DEFAULT_SEED, min_samples: int = DEFAULT_MIN_SAMPLES,
                    invert: bool = False) -> Change:
    """Compare one statistic of two sample sets (the default test of ``bench compare``).

    Significant when the Mann-Whitney p-value is below ``alpha`` **and** the bootstrap
    ``confidence`` interval of the ratio excludes 1. For an upper percentile
    (``stat > 0.5``) the tail test :func:`tail_exceedance_p` may stand in for U (the
    smaller p-value is used, so the false-alarm bound is ``2 * alpha``); a percentile ``q``
    also needs at least ``1 / (1 - q)`` samples a side (100 for p99).

    ``invert`` compares the reciprocal statistic (throughput from mean latency): the ratio
    and interval become ``1/R`` and ``[1/hi, 1/lo]``.
    """
    b = np.asarray(base, dtype=float)
    a = np.asarray(new, dtype=float)
    nb, na = int(b.size), int(a.size)
    need = min_samples
    if stat != "mean" and float(stat) > 0.5:
        need = max(min_samples, int(math.ceil(1 / (1 - float(stat)) - 1e-9)))
    if nb == 0 or na == 0:
        return Change(metric, better, None, None, None, None, None, threshold, nb, na, False, False,
                      INCONCLUSIVE, "no samples")
    ratio, lo, hi = bootstrap_ratio_ci(b, a, stat, confidence=confidence, n_boot=n_boot, seed=seed)
    p = mann_whitney_p(b, a)
    extra = {"p_mann_whitney": p}
    if stat != "mean" and float(stat) > 0.5:
        p_tail = tail_exceedance_p(b, a, float(stat))
        extra["p_tail"] = p_tail
        p = min(p, p_tail)
    vb, va = _stat(b, stat), _stat(a, stat)
    if invert:
        ratio = 1 / ratio if ratio else math.inf
        lo, hi = (1 / hi if hi else math.inf), (1 / lo if lo else math.inf)
        vb, va = (1 / vb if vb else math.inf), (1 / va if va else math.inf)
    excludes_one = math.isfinite(lo) and math.isfinite(hi) and (lo > 1 or hi < 1)
    significant = p < alpha and excludes_one
    verdict, reason, beyond = judge(ratio, significant=significant, threshold=threshold, better=better,
                                    n_base=nb, n_new=na, min_samples=need)
    if verdict == INCONCLUSIVE and reason.startswith("beyond"):
        reason += f" (p={p:.2g}, {confidence:.0%} CI {lo:.3f}..{hi:.3f})"
    return Change(metric, better, vb, va, ratio, (lo, hi), p, threshold, nb, na, significant, beyond,
                  verdict, reason, extra)


def compare_values(base: float | None, new: float | None, *, metric: str, better: str = HIGHER,
                   threshold: float = 0.01, resolution: float | None = None) -> Change:
    """Compare two exactly reproducible figures (accuracy of the same artifact on the same data).

    There is no sampling noise to test: the change is *significant* when
    ``|new - base| >= resolution`` (half a count of the evaluation set, ``0.5 / n_samples``;
    any difference when the resolution is unknown), and the verdict follows :func:`judge`.
    """
    if base is None or new is None:
        return Change(metric, better, base, new, None, None, None, threshold, None, None, False, False,
                      INCONCLUSIVE, "missing in " + ("BASE" if base is None else "NEW"))
    ratio = _ratio(float(new), float(base))
    diff = abs(float(new) - float(base))
    significant = diff >= resolution if resolution else diff > 0
    verdict, reason, beyond = judge(ratio, significant=significant, threshold=threshold, better=better)
    return Change(metric, better, float(base), float(new), ratio, None, None, threshold, None, None,
                  significant, beyond, verdict, reason, {"delta": float(new) - float(base)})


# =========================================================================== run-to-run noise

DEFAULT_NOISE_K = 3.0  #: a change must exceed this many run-to-run sigmas
DEFAULT_MIN_HISTORY = 5  #: earlier runs needed to estimate the run-to-run noise
DEFAULT_HISTORY_WINDOW = 100  #: at most this many earlier runs are used


def run_to_run_noise(values: Sequence[float]) -> float:
    r"""Robust relative run-to-run spread :math:`\hat\sigma` of one case's per-run values.

    With :math:`v_1..v_N` the values of one metric (one figure per run: its p50, p99 or
    throughput) and :math:`y_i = \ln v_i`,

    .. math:: \hat\sigma = 1.4826\; \mathrm{median}_i\, |y_i - \mathrm{median}_j\, y_j|

    i.e. the median absolute deviation of the logs scaled to estimate the standard
    deviation of a normal distribution (:math:`1/\Phi^{-1}(3/4) = 1.4826`). On the log scale
    it is a *relative* spread: :math:`\hat\sigma = 0.02` means runs scatter by about 2 %
    around their level, whatever the unit. Being a median, up to half the runs may be
    outliers (a loaded night, a one-off step) without inflating it. NaN for no values.
    """
    y = np.log(np.asarray(values, dtype=float))
    if y.size == 0:
        return math.nan
    return float(1.4826 * np.median(np.abs(y - np.median(y))))


@dataclass
class NoiseCheck:
    """Is NEW's value beyond the run-to-run noise of the earlier runs? (:func:`check_run_noise`)."""

    runs: int  # earlier runs the estimate used
    level: float | None  # median of their values
    sigma: float | None  # run-to-run noise, sigma of ln value
    deviation: float | None  # ln(NEW / level)
    k: float
    beyond: bool | None  # None: too few runs to tell
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def check_run_noise(new: float, history: Sequence[float], *, better: str = LOWER, worse: bool,
                    k: float = DEFAULT_NOISE_K, min_history: int = DEFAULT_MIN_HISTORY) -> NoiseCheck:
    r"""Is ``new`` farther from the earlier runs' level than their run-to-run noise allows?

    Within-run statistics (U, the bootstrap CI) only see the scatter of the iterations of one
    process; two processes of the same code also differ by what stays fixed during a run
    (memory layout, which cores the threads landed on, clock, neighbours). With
    :math:`v_1..v_N` the same case's values in ``history`` (earlier runs of the same
    machine, :math:`N \ge` ``min_history``), the level :math:`L = \mathrm{median}(v)`
    and :math:`\hat\sigma` of :func:`run_to_run_noise`, NEW is beyond the noise when

    .. math:: |\ln(v_{new} / L)| > k\, \hat\sigma

    **and** :math:`v_{new}` lies on the same side of :math:`L` as the change being judged
    (``worse``: the bad direction for ``better``). The level is the median of the
    history rather than BASE because BASE is a single run with the same run-to-run scatter
    as NEW: against an unlucky BASE, a normal NEW would look like a change. The median of
    :math:`N` runs has standard error :math:`1.2533\,\sigma/\sqrt N` (small for
    :math:`N \ge 5`), so under normal run-to-run noise with :math:`k = 3` an unchanged
    NEW is called beyond the noise in about 0.27 % of runs (two-sided), 0.13 % in
    one direction. ``beyond`` is ``None`` when there are fewer than ``min_history`` runs.
    """
    v = np.asarray([x for x in history if x is not None and math.isfinite(x) and x > 0], dtype=float)
    n = int(v.size)
    if n < min_history or new is None or not math.isfinite(new) or new <= 0:
        why = (f"run-to-run noise unknown: {n} earlier run(s) of this case on this machine, need {min_history} "
               "(or --assume-stable)")
        if n >= min_history:
            why = "run-to-run noise not checked: NEW has no positive value"
        return NoiseCheck(n, float(np.median(v)) if n else None, run_to_run_noise(v) if n else None, None, k, None, why)
    level = float(np.median(v))
    sigma = run_to_run_noise(v)
    dev = math.log(new / level)
    same_side = (dev > 0) == ((better == LOWER) == worse) and dev != 0
    beyond = abs(dev) > k * sigma and same_side
    if beyond:
        why = ""
    elif not same_side:
        why = (f"within run-to-run noise: NEW is {math.expm1(dev) * 100:+.1f}% from the level of {n} earlier runs, "
               "on the other side than BASE suggests")
    else:
        why = (f"within run-to-run noise: NEW is {math.expm1(dev) * 100:+.1f}% from the level of {n} earlier runs, "
               f"|ln ratio| {abs(dev):.3f} <= {k:g} sigma = {k * sigma:.3f}")
    return NoiseCheck(n, level, sigma, dev, k, beyond, why)


# =========================================================================== history

def weighted_median(y: Sequence[float], w: Sequence[float] | None = None) -> float:
    r"""A minimiser of :math:`\sum_i w_i |y_i - \mu|`.

    The smallest :math:`y_{(k)}` whose cumulative weight reaches half the total; when it
    reaches exactly half, the midpoint of :math:`y_{(k)}` and :math:`y_{(k+1)}` (so unit
    weights give the ordinary median).
    """
    y = np.asarray(y, dtype=float)
    if y.size == 0:
        raise ValueError("weighted_median of nothing")
    if w is None:
        return _median(y)
    w = np.asarray(w, dtype=float)
    order = np.argsort(y, kind="stable")
    ys, cw = y[order], np.cumsum(w[order])
    half = cw[-1] / 2
    k = int(np.searchsorted(cw, half - 1e-12 * cw[-1]))
    if k + 1 < ys.size and abs(cw[k] - half) <= 1e-12 * cw[-1]:
        return float((ys[k] + ys[k + 1]) / 2)
    return float(ys[k])


def _median(y: np.ndarray) -> float:
    """The ordinary median (np.median without its per-call overhead, for short arrays)."""
    s = np.sort(y)
    n = s.size
    return float(s[n // 2]) if n % 2 else float((s[n // 2 - 1] + s[n // 2]) / 2)


def _l1_cost(y: np.ndarray, w: np.ndarray | None) -> float:
    """``sum w |y - weighted_median|`` (``w=None``: unit weights)."""
    if w is None:
        return float(np.abs(y - _median(y)).sum())
    mu = weighted_median(y, w)
    return float(np.sum(w * np.abs(y - mu)))


def _window_costs(y: np.ndarray, w: np.ndarray, max_size: int) -> np.ndarray:
    """``D[r, L-1]``: L1 cost of the window of length L ending at index r (inf where r < L-1)."""
    from numpy.lib.stride_tricks import sliding_window_view

    n = y.size
    W = min(max_size, n)
    D = np.full((n, W), np.inf)
    uniform = bool(np.all(w == w[0]))
    for L in range(1, W + 1):
        Y = sliding_window_view(y, L)
        if uniform:
            D[L - 1:, L - 1] = w[0] * np.abs(Y - np.median(Y, axis=1, keepdims=True)).sum(axis=1)
            continue
        Wt = sliding_window_view(w, L)
        order = np.argsort(Y, axis=1, kind="stable")
        Ys = np.take_along_axis(Y, order, axis=1)
        cw = np.cumsum(np.take_along_axis(Wt, order, axis=1), axis=1)
        half = cw[:, -1:] / 2
        tol = 1e-12 * cw[:, -1:]
        k = np.argmax(cw >= half - tol, axis=1)
        rows = np.arange(Ys.shape[0])
        mu = Ys[rows, k]
        if L > 1:
            tie = (np.abs(cw[rows, k] - half[:, 0]) <= tol[:, 0]) & (k + 1 < L)
            kk = np.minimum(k + 1, L - 1)
            mu = np.where(tie, (mu + Ys[rows, kk]) / 2, mu)
        D[L - 1:, L - 1] = np.sum(Wt * np.abs(Y - mu[:, None]), axis=1)
    return D


@dataclass(frozen=True)
class Segment:
    """Indices ``[start, end)`` of a constant piece and its fitted ``level``."""

    start: int
    end: int
    level: float

    @property
    def size(self) -> int:
        return self.end - self.start


class _Costs:
    """Memoised L1 cost of any index range (for merging and boundary moves)."""

    def __init__(self, y: np.ndarray, w: np.ndarray):
        self.y, self.memo = y, {}
        self.w = None if np.all(w == w[0]) else w
        self.scale = float(w[0]) if self.w is None else 1.0

    def __call__(self, l: int, r: int) -> float:  # [l, r)
        key = (l, r)
        v = self.memo.get(key)
        if v is None:
            w = None if self.w is None else self.w[l:r]
            v = self.memo[key] = self.scale * _l1_cost(self.y[l:r], w)
        return v


def _potts_dp(D: np.ndarray, gammas: Sequence[float]) -> list[list[int]]:
    """Right edges (exclusive) of the optimal partitions, pieces of at most ``D.shape[1]`` points.

    One Bellman recursion per penalty in ``gammas``, run side by side:
    ``B[i] = min over L of B[i - L] + gamma + D[i - 1, L - 1]`` with ``B[0] = 0``.
    """
    n, W = D.shape
    g = np.asarray(gammas, dtype=float)[:, None]
    G = g.shape[0]
    B = np.full((G, n + 1 + W), np.inf)  # B[:, W + i]: best cost of y[:i] (without the first piece's gamma)
    B[:, W] = -g[:, 0]
    arg = np.zeros((G, n), dtype=np.int64)
    lengths = np.arange(1, W + 1)
    rows = np.arange(G)
    for r in range(n):
        cand = B[:, W + r + 1 - lengths] + D[r]
        j = cand.argmin(axis=1)
        B[:, W + r + 1] = cand[rows, j] + g[:, 0]
        arg[:, r] = r + 1 - lengths[j]  # start of the last piece
    out = []
    for k in range(G):
        rights, r = [], n
        while r > 0:
            rights.append(r)
            r = int(arg[k, r - 1])
        out.append(rights[::-1])
    return out


def _merge_pieces(rights: list[int], gamma: float, cost: _Costs) -> list[int]:
    """Join neighbouring pieces while that lowers ``gamma * k + cost`` (as asv's ``merge_pieces``).

    Sweeps left to right joining each pair whose union costs no more than the two pieces
    plus ``gamma``, until a sweep joins nothing.
    """
    rights = list(rights)
    changed = True
    while changed and len(rights) > 1:
        changed = False
        j, left = 1, 0
        while j < len(rights):
            mid, right = rights[j - 1], rights[j]
            if cost(left, right) - cost(left, mid) - cost(mid, right) - gamma <= 0:
                del rights[j - 1]
                changed = True
                continue
            left = mid
            j += 1
    return rights


def _refine_boundaries(rights: list[int], cost: _Costs, reach: int) -> list[int]:
    """Move each boundary by up to ``reach`` places where that lowers the two pieces' cost."""
    rights = list(rights)
    left = 0
    for j in range(len(rights) - 1):
        mid, right = rights[j], rights[j + 1]
        best, best_mid = cost(left, mid) + cost(mid, right), mid
        for m in range(max(left + 1, mid - reach), min(right - 1, mid + reach) + 1):
            c = cost(left, m) + cost(m, right)
            if c < best - 1e-12:
                best, best_mid = c, m
        rights[j] = best_mid
        left = best_mid
    return rights


def _segments(rights: list[int], y: np.ndarray, w: np.ndarray) -> list[Segment]:
    out, left = [], 0
    for r in rights:
        out.append(Segment(left, r, weighted_median(y[left:r], w[left:r])))
        left = r
    return out


def solve_l1_potts(y: Sequence[float], gamma: float, w: Sequence[float] | None = None, *,
                   max_size: int = 32) -> list[Segment]:
    r"""Piecewise constant fit minimising :math:`\gamma k + \sum_r \sum_{i \in I_r} w_i |y_i - \mu_r|`.

    :math:`\mu_r` is the weighted median of piece :math:`I_r`. The Bellman recursion
    :math:`B_r = \min_l B_l + \gamma + D(l, r)` (Friedrich et al. 2008) is solved exactly for
    pieces of at most ``max_size`` points (:math:`O(n \cdot max\_size)` after computing the
    window costs), then neighbouring pieces are joined while that lowers the objective, as
    asv's ``solve_potts_approx`` does. Exact when ``len(y) <= max_size``.
    """
    y = np.asarray(y, dtype=float)
    if y.size == 0:
        return []
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=float)
    D = _window_costs(y, w, max_size)
    cost = _Costs(y, w)
    rights = _merge_pieces(_potts_dp(D, [gamma])[0], gamma, cost)
    return _segments(rights, y, w)


def solve_l1_potts_autogamma(y: Sequence[float], w: Sequence[float] | None = None, *, beta: float | None = None,
                             max_size: int = 32, grid: int = 16) -> tuple[list[Segment], float]:
    r"""L1 Potts fit with :math:`\gamma` chosen by a Schwarz-type information criterion.

    For :math:`\gamma = \gamma_0 e^x` on ``grid`` points :math:`x \in [\ln(0.1/n), 0]`
    (:math:`\gamma_0` the cost of a single piece), the fit with :math:`k` pieces is scored

    .. math:: \beta k + \ln(\sigma_0 + S), \qquad S = \sum_i w_i |y_i - \mu(i)|

    with :math:`\beta = 4 \ln n / n` (asv's default: the Schwarz criterion of a Laplace
    model, fudged) and, as in asv, the floor :math:`\sigma_0 = 0.1 \min_r |\mu_{r+1} -
    \mu_r|` for :math:`k > 1` (0 for one piece), which stops the criterion rewarding a
    perfect fit with tiny steps. Weights should be normalised (median 1).
    The lowest score wins (fewer pieces on ties). Boundaries of the winner are then moved
    by up to ``max_size / 2`` places where that lowers the fit's cost.
    Returns ``(segments, gamma)``.
    """
    y = np.asarray(y, dtype=float)
    n = y.size
    if n == 0:
        return [], 0.0
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=float)
    cost = _Costs(y, w)
    gamma0 = cost(0, n) or 1.0
    if n < 3:
        return _segments([n], y, w), gamma0
    beta = 4 * math.log(n) / n if beta is None else beta
    D = _window_costs(y, w, max_size)
    best = None
    seen: dict[tuple, float] = {}
    gammas = [gamma0 * math.exp(x) for x in np.linspace(math.log(0.1 / n), 0.0, grid)]
    for gamma, dp in zip(gammas, _potts_dp(D, gammas)):
        rights = tuple(_merge_pieces(dp, gamma, cost))
        if rights in seen:
            continue
        segs = _segments(list(rights), y, w)
        resid = sum(cost(s.start, s.end) for s in segs)
        levels = [s.level for s in segs]
        sigma0 = 0.1 * min(abs(b - a) for a, b in zip(levels, levels[1:])) if len(levels) > 1 else 0.0
        score = beta * len(segs) + math.log(max(sigma0 + resid, 1e-300))
        seen[rights] = score
        if best is None or score < best[0] - 1e-12 or (abs(score - best[0]) <= 1e-12 and len(segs) < len(best[1])):
            best = (score, list(rights), gamma)
    rights = _refine_boundaries(best[1], cost, max(1, max_size // 2))
    return _segments(rights, y, w), best[2]


def robust_noise(y: Sequence[float]) -> float:
    r"""Robust run-to-run noise :math:`\hat\sigma` of a series, insensitive to a few steps and blips.

    :math:`\hat\sigma = 1.4826\, \mathrm{MAD}(\Delta y) / \sqrt 2` over the first differences
    :math:`\Delta y_i = y_{i+1} - y_i`: a step moves one difference, a blip two, so the
    median absolute deviation ignores them; for i.i.d. normal noise
    :math:`\mathrm{Var}\,\Delta y = 2\sigma^2`. 0 for fewer than 3 points.
    """
    y = np.asarray(y, dtype=float)
    if y.size < 3:
        return 0.0
    d = np.diff(y)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2))


@dataclass
class StepEvent:
    """A change of level in a history.

    ``kind``: ``"step"`` (the new level held for at least ``persist`` runs), ``"pending"``
    (the latest runs differ but fewer than ``persist`` of them so far) or ``"blip"`` (runs
    ``index..end-1`` left the level and the next run came back). ``before``/``after`` are
    levels in the series' own units; ``ratio = after / before``.
    """

    kind: str
    index: int
    end: int
    before: float
    after: float
    ratio: float
    direction: str  # REGRESSION or IMPROVEMENT

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepFit:
    """The outcome of :func:`detect_steps`."""

    levels: list[Segment]  # levels in the series' units (blip points excluded from the level)
    events: list[StepEvent]
    noise: float  # robust relative run-to-run noise (sigma of ln value)
    gamma: float
    status: str  # stable | regressed | improved | pending-regression | pending-improvement
    raw_segments: list[Segment] = field(default_factory=list)  # the Potts fit before post-processing

    @property
    def last_change(self) -> StepEvent | None:
        for e in reversed(self.events):
            if e.kind != "blip":
                return e
        return None

    def fitted(self, n: int) -> np.ndarray:
        """The fitted level at each of the ``n`` points."""
        out = np.full(n, np.nan)
        for s in self.levels:
            out[s.start:s.end] = s.level
        return out


def detect_steps(values: Sequence[float], *, weights: Sequence[float] | None = None, threshold: float = 0.05,
                 persist: int = 2, better: str = LOWER, alpha: float = DEFAULT_ALPHA, beta: float | None = None,
                 max_size: int = 32) -> StepFit:
    r"""Find lasting steps, blips and pending changes in a positive series (oldest first).

    1. Fit :math:`y_i = \ln v_i` with :func:`solve_l1_potts_autogamma` (optional weights,
       e.g. the inverse of each run's CI half-width).
    2. Two neighbouring levels :math:`A, B` (with :math:`n_A, n_B` points) are distinct only
       when :math:`|\mu_B - \mu_A| > \tau_{AB}`,

       .. math:: \tau_{AB} = \max\bigl(\ln(1+t),\; z_{1-\alpha/2}\, 1.2533\, \hat\sigma
                 \sqrt{1/n_A + 1/n_B}\bigr)

       i.e. beyond the threshold :math:`t` *and* beyond the noise of a difference of two
       medians (:math:`1.2533 \sigma/\sqrt n` is the standard error of a normal median,
       :math:`\hat\sigma` from :func:`robust_noise`). Levels closer than that are joined.
    3. A level of fewer than ``persist`` points between two others is a *blip* when the
       levels either side of it are not distinct (the series came back); its points are
       left out of the joined level. Otherwise (a transition between two distinct levels) it
       joins the nearer neighbour. A short first level followed by a settled one is a blip
       at the start.
    4. A run of fewer than ``persist`` consecutive points inside a level (of at least
       ``max(5, 2 persist + 1)`` points), each off the
       level by more than :math:`\max(\ln(1+t), z_{1-\alpha/(2N)}\hat\sigma)` (Bonferroni
       over the :math:`N` runs), is a blip too (the L1 fit absorbs single points, which is
       what makes it robust).
    5. The newest ``m < persist`` runs, if all on one side of the last level and distinct
       from the rest of it by the rule of 2, are split off (the fit itself ignores single
       points).
    6. Every remaining boundary is a *step*; the last one is *pending* when the newest
       level has fewer than ``persist`` points.

    ``status`` follows the latest non-blip event: ``regressed`` / ``improved`` (a step) or
    ``pending-regression`` / ``pending-improvement``; ``stable`` when there is none.
    Direction comes from ``better``: for LOWER an upward step is a regression.
    """
    v = np.asarray(values, dtype=float)
    n = v.size
    if n == 0:
        return StepFit([], [], 0.0, 0.0, "stable")
    if np.any(~np.isfinite(v)) or np.any(v <= 0):
        raise ValueError("detect_steps needs finite positive values")
    y = np.log(v)
    if weights is None:
        w = np.ones(n)
    else:
        w = np.asarray(weights, dtype=float)
        w = np.where(np.isfinite(w) & (w > 0), w, np.nan)
        med = float(np.nanmedian(w)) if np.any(np.isfinite(w)) else 1.0
        w = np.clip(np.nan_to_num(w / med, nan=1.0), 0.1, 10.0)
    raw, gamma = solve_l1_potts_autogamma(y, w, beta=beta, max_size=max_size)
    sigma = robust_noise(y)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    log_t = math.log1p(threshold)
    persist = max(1, int(persist))

    # Levels as [start, end, excluded-index set]; a level's value is the weighted median of its points.
    levels: list[list] = [[s.start, s.end, set()] for s in raw]
    blips: list[tuple[int, int, float, float]] = []  # (start, end, level of blip, level before)

    def idx(L):
        return [i for i in range(L[0], L[1]) if i not in L[2]] if L[2] else list(range(L[0], L[1]))

    memo: dict = {}

    def mu(L):
        key = (L[0], L[1], frozenset(L[2]))
        if key not in memo:
            ii = idx(L)
            memo[key] = weighted_median(y[ii], w[ii]) if ii else math.nan
        return memo[key]

    def npts(L):
        return (L[1] - L[0]) - len(L[2])

    def distinct(A, B):
        tau = max(log_t, z * 1.2533 * sigma * math.sqrt(1 / max(npts(A), 1) + 1 / max(npts(B), 1)))
        return abs(mu(B) - mu(A)) > tau

    def join(i, j):  # levels i..j (inclusive) into one
        levels[i:j + 1] = [[levels[i][0], levels[j][1], set().union(*(L[2] for L in levels[i:j + 1]))]]

    while True:
        changed = False
        for i in range(1, len(levels)):
            if not distinct(levels[i - 1], levels[i]):
                join(i - 1, i)
                changed = True
                break
        if changed:
            continue
        for i, L in enumerate(levels[:-1]):
            if npts(L) >= persist:
                continue
            nxt = levels[i + 1]
            if i == 0:
                if npts(nxt) < persist:  # nothing settled to compare the start with yet
                    continue
                blips.append((L[0], L[1], mu(L), mu(nxt)))
                nxt[2].update(idx(L))
                join(0, 1)
            else:
                prev = levels[i - 1]
                if not distinct(prev, nxt):
                    blips.append((L[0], L[1], mu(L), mu(prev)))
                    L[2].update(idx(L))
                    join(i - 1, i + 1)
                elif abs(mu(L) - mu(prev)) <= abs(mu(nxt) - mu(L)):
                    join(i - 1, i)
                else:
                    join(i, i + 1)
            changed = True
            break
        if not changed:
            break

    # The fit is robust to single points, so the newest run or two may sit in the last
    # level although they differ from it: split them off as a pending level when they do.
    last = levels[-1]
    if npts(last) >= persist and not last[2]:
        for m in range(persist - 1, 0, -1):
            cut = last[1] - m
            head, tail = [last[0], cut, set()], [cut, last[1], set()]
            side = np.sign(y[cut:last[1]] - mu(head))
            if npts(head) >= persist and abs(side.sum()) == m and distinct(head, tail):
                levels[-1:] = [head, tail]
                break

    # Single runs far off their level (the L1 fit absorbs them): report them as blips too.
    taken = {i for s, e, _, _ in blips for i in range(s, e)}
    z_point = NormalDist().inv_cdf(1 - alpha / (2 * n))  # Bonferroni over the n runs: ~alpha per series
    for L in levels[:-1] + ([levels[-1]] if npts(levels[-1]) >= persist else []):
        if npts(L) < max(5, 2 * persist + 1):  # too few runs to call one of them off its level
            continue
        m, ii = mu(L), idx(L)
        tau = max(log_t, z_point * sigma)
        stop = L[1] if L is not levels[-1] else L[1] - (persist - 1)  # the newest runs may be a pending change
        out = [i for i in ii if i < stop and i not in taken and abs(y[i] - m) > tau]
        j = 0
        while j < len(out):  # group consecutive same-side runs
            k = j
            while k + 1 < len(out) and out[k + 1] == out[k] + 1 and np.sign(y[out[k + 1]] - m) == np.sign(y[out[j]] - m):
                k += 1
            if k - j + 1 < persist:
                seg = y[out[j]:out[k] + 1]
                blips.append((out[j], out[k] + 1, float(np.median(seg)), m))
            j = k + 1

    def direction(ratio):
        worse = ratio > 1 if better == LOWER else ratio < 1
        return REGRESSION if worse else IMPROVEMENT

    events: list[StepEvent] = []
    for s, e, lv, before in blips:
        r = math.exp(lv - before)
        events.append(StepEvent("blip", s, e, math.exp(before), math.exp(lv), r, direction(r)))
    for i in range(1, len(levels)):
        A, B = levels[i - 1], levels[i]
        ma, mb = mu(A), mu(B)
        r = math.exp(mb - ma)
        kind = "step" if (npts(B) >= persist or i < len(levels) - 1) else "pending"
        events.append(StepEvent(kind, B[0], B[1], math.exp(ma), math.exp(mb), r, direction(r)))
    events.sort(key=lambda e: (e.index, e.kind != "blip"))
    status = "stable"
    for e in reversed(events):
        if e.kind == "blip":
            continue
        if e.kind == "pending":
            status = "pending-" + e.direction
        else:
            status = "regressed" if e.direction == REGRESSION else "improved"
        break
    out_levels = [Segment(L[0], L[1], math.exp(mu(L))) for L in levels]
    raw_levels = [Segment(s.start, s.end, math.exp(s.level)) for s in raw]
    return StepFit(out_levels, events, sigma, gamma, status, raw_levels)


def lookback_zscore(values: Sequence[float], *, window: int = 100, min_history: int = 5,
                    last: int = 1) -> list[float | None]:
    r"""conbench's lookback z-score of each of the newest ``last`` values.

    For the value :math:`x_j`, with :math:`H` the up to ``window`` values before the newest
    ``last`` ones, :math:`z_j = (x_j - \bar H) / s_H` (:math:`s_H` the sample standard
    deviation, ddof 1). conbench flags :math:`|z| > 5`. ``None`` when :math:`H` has fewer
    than ``min_history`` values or :math:`s_H = 0`.
    """
    v = np.asarray(values, dtype=float)
    last = max(1, int(last))
    hist = v[max(0, v.size - last - window): max(0, v.size - last)]
    if hist.size < min_history:
        return [None] * min(last, v.size)
    m, s = float(hist.mean()), float(hist.std(ddof=1))
    if s == 0:
        return [None] * min(last, v.size)
    return [float((x - m) / s) for x in v[max(0, v.size - last):]]
