"""harness.measure.stats against known distributions and hand-computed values."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from harness.measure import stats as S

SCHEMA = Path(__file__).resolve().parents[1] / "harness" / "store" / "schema" / "run-v1.schema.json"


# ---------------------------------------------------------------- percentile

def test_percentile_type7_by_hand():
    assert S.percentile([1, 2, 3, 4], 25) == pytest.approx(1.75)
    assert S.percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert S.percentile([4, 1, 3, 2], 0) == 1.0
    assert S.percentile([4, 1, 3, 2], 100) == 4.0
    assert S.percentile([10], 90) == 10.0
    assert S.percentile(list(range(1, 11)), 90) == pytest.approx(9.1)


def test_percentile_matches_numpy_linear():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 100, 1001):
        x = rng.lognormal(size=n)
        for q in (0, 1, 12.5, 50, 90, 95, 99, 99.9, 100):
            assert S.percentile(x, q) == pytest.approx(float(np.percentile(x, q)), rel=1e-12)
            assert type(S.percentile(x, q)) is float


@pytest.mark.parametrize("q", [-1, 100.5, float("nan")])
def test_percentile_rejects_bad_q(q):
    with pytest.raises(ValueError):
        S.percentile([1, 2, 3], q)


def test_empty_input_raises():
    for f in (lambda: S.percentile([], 50), lambda: S.summarize([]), lambda: S.median_ci([]),
              lambda: S.robust_cv([]), lambda: S.tukey_outliers([])):
        with pytest.raises(ValueError):
            f()


# ---------------------------------------------------------------- order-statistic CIs

@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_ranks_exact_binomial_coverage_and_tightness(q, confidence):
    a = (1 - confidence) / 2
    for n in range(1, 420):
        ranks = S.order_statistic_ranks(n, q, confidence)
        lower_ok = sps.binom.cdf(0, n, q) <= a  # is any lower rank admissible at all?
        upper_ok = sps.binom.sf(n - 1, n, q) <= a
        if ranks is None:
            assert not (lower_ok and upper_ok), (n, q)
            continue
        i, j = ranks
        assert 0 <= i <= j <= n - 1
        # x_(i) <= xi <= x_(j)  <=>  i+1 <= K <= j, K ~ Binomial(n, q)
        low_tail, high_tail = sps.binom.cdf(i, n, q), sps.binom.sf(j, n, q)
        assert low_tail <= a + 1e-12 and high_tail <= a + 1e-12
        assert 1 - low_tail - high_tail >= confidence - 1e-12
        # equal-tailed and tight: one rank further in breaks a tail bound
        if i + 1 < n:
            assert sps.binom.cdf(i + 1, n, q) > a - 1e-12
        if j - 1 >= 0:
            assert sps.binom.sf(j - 1, n, q) > a - 1e-12


def test_known_rank_table_and_minimum_n():
    # classic tables: n = 50, 95 % CI of the median is [x(18), x(33)] (1-based)
    assert S.order_statistic_ranks(50, 0.5, 0.95) == (17, 32)
    assert S.order_statistic_ranks(6, 0.5, 0.95) == (0, 5)  # [min, max]: 1 - 2/64 = 96.9 %
    assert S.order_statistic_ranks(5, 0.5, 0.95) is None  # 1 - 2/32 = 93.75 % < 95 %
    assert S.order_statistic_ranks(35, 0.9, 0.95) is None and S.order_statistic_ranks(36, 0.9, 0.95)
    assert S.order_statistic_ranks(367, 0.99, 0.95) is None and S.order_statistic_ranks(368, 0.99, 0.95)
    assert all(math.isnan(v) for v in S.median_ci([1, 2, 3, 4, 5]))
    assert S.median_ci([1, 2, 3, 4, 5, 6]) == (1.0, 6.0)


def _coverage(draws: np.ndarray, q: float, true_value: float, confidence: float = 0.95):
    s = np.sort(draws, axis=1)
    cis = np.array([S.quantile_ci(row, q, confidence) for row in s])
    covered = (cis[:, 0] <= true_value) & (true_value <= cis[:, 1])
    return covered.mean(), (cis[:, 1] - cis[:, 0]).mean()


def test_median_ci_coverage_normal():
    rng = np.random.default_rng(20240501)
    cover, width = _coverage(rng.normal(0.0, 1.0, size=(2000, 50)), 0.5, 0.0)
    assert 0.93 <= cover <= 0.995
    # asymptotic 95 % width for the normal median: 2 * 1.96 * sqrt(pi/2) / sqrt(50) = 0.695
    assert 0.5 < width < 1.0


def test_median_ci_coverage_lognormal():
    rng = np.random.default_rng(7)
    true_median = 1.0  # lognormal(0, sigma): median = exp(0)
    cover, width = _coverage(rng.lognormal(0.0, 0.8, size=(2000, 50)), 0.5, true_median)
    assert 0.93 <= cover <= 0.995
    assert width < 1.0


def test_p90_ci_coverage_lognormal():
    rng = np.random.default_rng(11)
    true_p90 = math.exp(0.8 * sps.norm.ppf(0.9))
    cover, _ = _coverage(rng.lognormal(0.0, 0.8, size=(2000, 100)), 0.9, true_p90)
    assert 0.93 <= cover <= 0.995


def test_p99_ci_coverage_normal():
    rng = np.random.default_rng(12)
    cover, _ = _coverage(rng.normal(size=(1000, 500)), 0.99, sps.norm.ppf(0.99))
    assert 0.93 <= cover <= 0.995


def test_unsorted_selection_equals_sorted():
    rng = np.random.default_rng(3)
    for n in (6, 7, 50, 501):
        x = rng.lognormal(size=n)
        s = np.sort(x)
        np.testing.assert_equal(S.quantile_ci(x, 0.9, is_sorted=False), S.quantile_ci(s, 0.9))
        np.testing.assert_equal(S.median_ci(x, is_sorted=False), S.median_ci(s))
        assert S.ci_rel_halfwidth(x, is_sorted=False) == pytest.approx(S.ci_rel_halfwidth(s), rel=1e-12)
    xi = rng.integers(1000, 2000, size=1001)
    assert S.ci_rel_halfwidth(xi, is_sorted=False) == pytest.approx(S.ci_rel_halfwidth(np.sort(xi)))


def test_median_inside_its_ci():
    rng = np.random.default_rng(4)
    for n in range(6, 80):
        s = np.sort(rng.exponential(size=n))
        lo, hi = S.median_ci(s)
        assert lo <= np.median(s) <= hi


def test_ci_rel_halfwidth_by_hand_and_undefined():
    assert S.ci_rel_halfwidth(np.arange(1.0, 11.0)) == pytest.approx((9 - 2) / 2 / 5.5)
    assert math.isnan(S.ci_rel_halfwidth([1.0, 2.0, 3.0]))
    assert S.ci_rel_halfwidth([7.0] * 40) == 0.0


def test_ci_rel_halfwidth_shrinks_like_inverse_sqrt_n():
    rng = np.random.default_rng(5)
    sigma_rel = 0.1
    z = sps.norm.ppf(0.975)
    means = []
    for n in (100, 400, 1600, 6400):
        draws = np.sort(rng.normal(1000.0, 100.0, size=(40, n)), axis=1)
        hw = np.mean([S.ci_rel_halfwidth(row) for row in draws])
        expected = z * math.sqrt(math.pi / 2) * sigma_rel / math.sqrt(n)  # asymptotic median s.e.
        assert hw == pytest.approx(expected, rel=0.25), n
        means.append(hw)
    for a, b in zip(means, means[1:]):
        assert 1.6 < a / b < 2.5  # 4x the samples, half the width


# ---------------------------------------------------------------- outliers, drift, CVs

def test_tukey_outliers_counts_constructed_outliers():
    base = list(np.arange(100.0, 200.0))  # Q1 ~ 125, Q3 ~ 175, fences ~ [50, 250]
    assert S.tukey_outliers(base) == 0
    assert S.tukey_outliers(base + [1000.0, 5000.0, -400.0]) == 3
    assert S.tukey_outliers(base + [260.0, 1000.0], k=3.0) == 1  # k = 3 fence ~ 325
    # Q1 = 2, Q3 = 4 (heavy ties), fences [-1, 7]: exactly on a fence is not an outlier
    assert S.tukey_outliers([2.0] * 20 + [4.0] * 20 + [-1.0, 7.0]) == 0
    assert S.tukey_outliers([2.0] * 20 + [4.0] * 20 + [-1.0, 7.0, -1.01, 7.01]) == 2
    assert S.tukey_outliers([5.0] * 20) == 0


def test_drift_detects_step_and_is_zero_on_iid():
    rng = np.random.default_rng(6)
    iid = rng.normal(1000.0, 50.0, size=2000)
    assert abs(S.drift(iid)) < 0.01
    step = np.concatenate([rng.normal(1000.0, 50.0, 1000), rng.normal(1200.0, 60.0, 1000)])
    assert S.drift(step) == pytest.approx(0.20, abs=0.01)
    assert S.drift(step[::-1]) == pytest.approx(1000 / 1200 - 1, abs=0.01)
    # time order matters: the same values sorted differently give a different drift
    assert S.drift(np.sort(iid)) > 0.05


def test_drift_by_hand_and_small_n():
    assert S.drift([1, 2, 3, 4]) == pytest.approx(3.5 / 1.5 - 1)
    assert S.drift([1, 2, 100, 3, 4]) == pytest.approx(3.5 / 1.5 - 1)  # odd n: middle ignored
    assert math.isnan(S.drift([1, 2, 3]))


def test_cv_and_robust_cv():
    rng = np.random.default_rng(8)
    x = rng.normal(1000.0, 100.0, size=20000)
    assert S.cv(x) == pytest.approx(0.1, rel=0.03)
    assert S.robust_cv(x) == pytest.approx(0.1, rel=0.05)  # 1.4826 MAD estimates sigma for normal data
    y = np.concatenate([x, [1e6] * 20])  # 0.1 % huge tail outliers
    assert S.cv(y) > 1.0
    assert S.robust_cv(y) == pytest.approx(0.1, rel=0.05)
    assert S.cv([5.0]) == 0.0 and S.cv([3.0, 3.0]) == 0.0
    assert S.robust_cv([1, 2, 3, 4, 5]) == pytest.approx(1.4826 * 1 / 3)


# ---------------------------------------------------------------- summarize

def test_summarize_exact_values():
    st = S.summarize(list(range(1, 11)))
    expected = {
        "n": 10, "p50": 5.5, "p90": 9.1, "p95": 9.55, "p99": 9.91, "mean": 5.5,
        "std": math.sqrt(82.5 / 9), "min": 1.0, "max": 10.0, "cv": math.sqrt(82.5 / 9) / 5.5,
        "robust_cv": 1.4826 * 2.5 / 5.5, "ci_rel_halfwidth": 3.5 / 5.5, "confidence": 0.95,
        "outliers": 0, "drift": 8 / 3 - 1,
    }
    for k, v in expected.items():
        assert st[k] == pytest.approx(v, rel=1e-12), k
    assert st["median_ci"] == [2.0, 9.0]  # ranks 2 and 9 of 10: coverage 1 - 2 * 11/1024
    assert st["p90_ci"] is None and st["p99_ci"] is None


def test_summarize_types_json_and_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/stats"})
    rng = np.random.default_rng(9)
    inputs = [
        (rng.lognormal(10, 0.3, 1000)).astype(np.int64),
        [5],
        [3, 3, 3],
        list(range(1, 8)),
        np.zeros(50, dtype=np.int64),
    ]
    for x in inputs:
        st = S.summarize(x)
        assert set(st) == set(schema["$defs"]["stats"]["properties"])
        json.dumps(st, allow_nan=False)
        validator.validate(st)
        for k, v in st.items():
            if k == "ci_method":
                assert v in ("batch_means", "iid")
                continue
            assert v is None or type(v) in (int, float, list), (k, type(v))
            if isinstance(v, list):
                assert all(type(e) is float for e in v)
        assert type(st["n"]) is int and type(st["outliers"]) is int


def test_summarize_small_n_fallbacks():
    st = S.summarize([10, 30, 20])
    assert st["median_ci"] == [10.0, 30.0]  # documented [min, max] fallback
    assert st["ci_rel_halfwidth"] is None and st["drift"] is None
    st1 = S.summarize([42])
    assert st1["std"] == 0.0 and st1["cv"] == 0.0 and st1["median_ci"] == [42.0, 42.0]


def test_summarize_large_sample_has_all_cis():
    rng = np.random.default_rng(10)
    st = S.summarize(rng.lognormal(12, 0.2, 5000))
    lo, hi = st["median_ci"]
    assert lo <= st["p50"] <= hi
    assert st["p90_ci"][0] <= st["p90"] <= st["p90_ci"][1]
    assert st["p99_ci"][0] <= st["p99"] <= st["p99_ci"][1]
    assert 0 < st["ci_rel_halfwidth"] < 0.01
    assert abs(st["drift"]) < 0.02


def test_summarize_rejects_bad_samples():
    with pytest.raises(ValueError):
        S.summarize([1.0, -2.0, 3.0])
    with pytest.raises(ValueError):
        S.summarize([1.0, float("nan"), 3.0])
    with pytest.raises(ValueError):
        S.summarize([[1, 2], [3, 4]])


# ---------------------------------------------------------------- autocorrelation (batch means)

def _ar1(rng, n, phi):
    """Stationary Gaussian AR(1): x_t = phi x_{t-1} + sqrt(1 - phi^2) e_t, unit variance."""
    from scipy.signal import lfilter

    e = rng.standard_normal(n) * math.sqrt(1.0 - phi * phi)
    x0 = rng.standard_normal()
    return lfilter([1.0], [1.0, -phi], e, zi=[phi * x0])[0]


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9, 0.95])
def test_batch_means_ci_coverage_on_ar1(phi):
    """Nominal 95 %: the median CI of autocorrelated latencies covers >= 93 % (the i.i.d. one does not)."""
    rng = np.random.default_rng(int(phi * 100) + 7)
    n, trials = 2000, 600
    hit = hit_iid = 0
    for _ in range(trials):
        x = 1e6 * np.exp(0.1 * _ar1(rng, n, phi))  # true median 1e6
        lo, hi = S.batch_means_quantile_ci(x, 0.5, 0.95)["ci"]
        hit += lo <= 1e6 <= hi
        ilo, ihi = S.median_ci(x, is_sorted=False)
        hit_iid += ilo <= 1e6 <= ihi
    assert hit / trials >= 0.93, (phi, hit / trials)
    if phi >= 0.9:
        assert hit_iid / trials < 0.75  # the problem being solved: i.i.d. intervals far too narrow
    if phi == 0.0:
        assert hit / trials <= 0.995  # not absurdly wide on independent samples


def test_batch_means_ci_coverage_p90_ar1():
    rng = np.random.default_rng(3)
    phi, n, trials = 0.9, 4000, 400
    truth = math.exp(0.1 * 1.2815515655446004)
    hit = 0
    for _ in range(trials):
        lo, hi = S.batch_means_quantile_ci(np.exp(0.1 * _ar1(rng, n, phi)), 0.9, 0.95)["ci"]
        hit += lo <= truth <= hi
    assert hit / trials >= 0.93


def test_batch_means_effective_sample_size_tracks_correlation():
    rng = np.random.default_rng(11)
    n = 20000
    iid = S.batch_means_quantile_ci(rng.standard_normal(n), 0.5)
    assert iid["method"] == "batch_means" and 0.6 * n < iid["n_eff"] <= n
    corr = S.batch_means_quantile_ci(_ar1(rng, n, 0.9), 0.5)
    # AR(1) phi = 0.9 at the median: n (1 - phi)/(1 + phi) ~ n/19 for the series; the indicator is
    # less correlated, so a little more
    assert n / 40 < corr["n_eff"] < n / 6
    assert corr["batches"] <= 20


def test_batch_means_short_series_falls_back_to_iid_and_validates():
    x = np.arange(1.0, 101.0)
    r = S.batch_means_quantile_ci(x, 0.5)
    assert r["method"] == "iid" and r["ci"] == S.median_ci(x) and r["n_eff"] == 100
    with pytest.raises(ValueError):
        S.batch_means_quantile_ci(x, 1.0)
    with pytest.raises(ValueError):
        S.batch_means_quantile_ci(x, 0.5, min_batches=1)
    # never narrower than the i.i.d. interval
    rng = np.random.default_rng(2)
    y = rng.lognormal(size=3000)
    blo, bhi = S.batch_means_quantile_ci(y, 0.5)["ci"]
    ilo, ihi = S.median_ci(y, is_sorted=False)
    assert blo <= ilo and bhi >= ihi


def test_autocorr_rel_halfwidth_wider_on_correlated_series():
    rng = np.random.default_rng(4)
    x = 1e6 * np.exp(0.05 * _ar1(rng, 5000, 0.95))
    assert S.autocorr_ci_rel_halfwidth(x) > 3 * S.ci_rel_halfwidth(x, is_sorted=False)
    assert S.autocorr_ci_rel_halfwidth([5.0] * 500) == 0.0


# ---------------------------------------------------------------- repeats: nested bootstrap, components, test

def _processes(rng, k, sigma_b, n=1500, sigma_w=0.1, level=1e6):
    """k processes: each has its own level offset exp(sigma_b Z) and lognormal iterations."""
    return [level * math.exp(sigma_b * rng.standard_normal()) * np.exp(sigma_w * rng.standard_normal(n))
            for _ in range(k)]


@pytest.mark.parametrize("sigma_b", [0.0, 0.01, 0.03])
def test_nested_bootstrap_recovers_between_variance_and_covers(sigma_b):
    rng = np.random.default_rng(int(sigma_b * 1000) + 1)
    truth = 1e6 * math.exp(sigma_b ** 2 / 2)  # E[level exp(sigma_b Z)]: the mean of per-process medians
    trials, hit, between = 150, 0, []
    for t in range(trials):
        r = S.nested_bootstrap(_processes(rng, 5, sigma_b), 0.5, n_boot=800, seed=t)
        lo, hi = r["ci"]
        hit += lo <= truth <= hi
        between.append(r["components"]["between_cv"])
    assert hit / trials >= 0.92
    rms = math.sqrt(np.mean(np.square(between)))
    if sigma_b == 0.0:
        assert rms < 0.003  # the within-process CIs explain the scatter
    else:
        assert 0.75 * sigma_b < rms < 1.25 * sigma_b


def test_nested_bootstrap_between_share_and_width():
    rng = np.random.default_rng(8)
    quiet = S.nested_bootstrap(_processes(rng, 8, 0.0), 0.5, seed=1)
    noisy = S.nested_bootstrap(_processes(rng, 8, 0.05), 0.5, seed=1)
    assert noisy["components"]["between_share"] > 0.9
    assert quiet["components"]["between_share"] < 0.6
    w = lambda r: (r["ci"][1] - r["ci"][0]) / r["estimate"]
    assert w(noisy) > 5 * w(quiet)
    assert noisy["k"] == 8 and len(noisy["per_repeat"]) == 8
    groups = _processes(rng, 4, 0.02)
    assert S.nested_bootstrap(groups, 0.5)["estimate"] == pytest.approx(np.mean([np.median(g) for g in groups]))


def test_nested_bootstrap_one_process_is_the_within_interval_and_mean_stat():
    rng = np.random.default_rng(3)
    (g,) = _processes(rng, 1, 0.0, n=4000)
    r = S.nested_bootstrap([g], 0.5, seed=0)
    lo, hi = S.median_ci(g, is_sorted=False)
    assert r["components"]["between_var"] is None and r["k"] == 1
    assert (r["ci"][1] - r["ci"][0]) == pytest.approx(hi - lo, rel=0.35)
    m = S.nested_bootstrap([g, g * 1.02], "mean", seed=0)
    assert m["estimate"] == pytest.approx(np.mean(g) * 1.01)
    with pytest.raises(ValueError):
        S.nested_bootstrap([g], 1.5)
    with pytest.raises(ValueError):
        S.nested_bootstrap([], 0.5)


def test_variance_components_by_hand():
    c = S.variance_components([10.0, 12.0, 14.0], [1.0, 1.0, 1.0])
    assert c["observed_var"] == pytest.approx(4.0) and c["between_var"] == pytest.approx(3.0)
    assert c["between_share"] == pytest.approx(0.75) and c["between_cv"] == pytest.approx(math.sqrt(3) / 12)
    c = S.variance_components([10.0, 10.1], [1.0, 1.0])
    assert c["between_var"] == 0.0 and c["between_share"] == 0.0


def test_repeats_test_false_alarms_and_power():
    rng = np.random.default_rng(12)
    sigma, k, trials = 0.03, 5, 4000
    false = sum(S.repeats_test(np.exp(sigma * rng.standard_normal(k)),
                               np.exp(sigma * rng.standard_normal(k)))["p_value"] < 0.01 for _ in range(trials))
    assert 0.005 < false / trials < 0.02  # exact t-test: 1 %
    slow = [S.repeats_test(np.exp(sigma * rng.standard_normal(k)),
                           1.5 * np.exp(sigma * rng.standard_normal(k))) for _ in range(200)]
    assert all(r["p_value"] < 0.002 and r["ci"][0] > 1.3 for r in slow)
    r = S.repeats_test([1.0, 1.0], [1.0, 1.0])
    assert r["p_value"] == 1.0 and r["ratio"] == 1.0
    one = S.repeats_test([1.0], [1.1])
    assert math.isnan(one["p_value"])
    hist = S.repeats_test([1.0], [1.1], extra_sigma=0.01, extra_dof=20)
    assert hist["dof"] == 20 and hist["p_value"] < 0.001


def test_repeats_test_history_tightens():
    rng = np.random.default_rng(13)
    b, n = np.exp(0.02 * rng.standard_normal(3)), 1.06 * np.exp(0.02 * rng.standard_normal(3))
    alone = S.repeats_test(b, n)
    tight = S.repeats_test(b, n, extra_sigma=0.02, extra_dof=50)
    assert tight["dof"] == alone["dof"] + 50
    assert (tight["ci"][1] - tight["ci"][0]) < (alone["ci"][1] - alone["ci"][0])
