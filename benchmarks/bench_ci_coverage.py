"""Coverage of the median's 95 % CI on autocorrelated latencies: batch means vs the i.i.d. interval (issue 15).

    python benchmarks/bench_ci_coverage.py                  # n = 2000, 1000 series per phi
    python benchmarks/bench_ci_coverage.py --n 500 --trials 400

Series: stationary Gaussian AR(1), x_t = phi x_{t-1} + sqrt(1 - phi^2) e_t, made latency-like as
1e6 * exp(0.1 x_t) (true median 1e6). Printed per phi: the share of series whose interval covers
the true median — ``harness.measure.stats.batch_means_quantile_ci`` (what ``summarize`` and the
stop rule use) and ``median_ci`` (order statistics, assumes independence) — and the mean n_eff.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.measure import stats as S  # noqa: E402


def ar1(rng, n, phi):
    e = rng.standard_normal(n) * math.sqrt(1 - phi * phi)
    return lfilter([1.0], [1.0, -phi], e, zi=[phi * rng.standard_normal()])[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(f"n = {args.n}, {args.trials} series per phi, nominal 95 %")
    print(f"{'phi':>5} | {'batch means':>11} {'i.i.d.':>7} | {'mean n_eff':>10}")
    for phi in (0.0, 0.5, 0.9, 0.95):
        hb = hi = 0
        neff = []
        for _ in range(args.trials):
            x = 1e6 * np.exp(0.1 * ar1(rng, args.n, phi))
            r = S.batch_means_quantile_ci(x, 0.5)
            lo, hi_ = r["ci"]
            hb += lo <= 1e6 <= hi_
            neff.append(r["n_eff"])
            a, b = S.median_ci(x, is_sorted=False)
            hi += a <= 1e6 <= b
        print(f"{phi:5.2f} | {100 * hb / args.trials:10.1f}% {100 * hi / args.trials:6.1f}% | {np.mean(neff):10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
