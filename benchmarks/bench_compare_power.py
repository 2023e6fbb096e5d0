"""False alarms and power of `bench compare` on two runs with repeats (issue 15), by simulation.

    python benchmarks/bench_compare_power.py                       # the table of docs/regression.md
    python benchmarks/bench_compare_power.py --records results/    # sigma from your own --repeat runs too

Model: each run is K worker processes; process k of a run has per-process p50 value
v_k = L * exp(sigma * Z_k) (Z_k standard normal) — sigma is the **between-process** spread of the
per-process median on the log scale (what a record's ``between_process.p50.observed_cv`` measures:
it includes each process's own sampling error). BASE has level L, NEW has level L * (1 + d).
Each simulated pair goes through the real decision (``harness.analyze.compare.compare_records`` on
two records carrying only ``repeats``): regression when beyond the 5 % threshold and the
between-process t-test gives p < 0.01 with the 99 % CI of the ratio excluding 1. Printed per sigma and
K: the false-alarm rate (d = 0: share of pairs called a regression, and called anything but
unchanged) and the power to call a d = +5 % slowdown a regression (and +10 %, +50 %).

The sigmas: 1 % and 2 % (a quiet, pinned machine), 5 %, and the figures measured by ``--repeat 5``
runs of the smoke suite on the shared 2-core development VM at load average 10-14
(``--records`` reads them from records: the median of every case's ``between_process.p50.observed_cv``).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.analyze.compare import compare_records, make_settings  # noqa: E402


def _record(values, run):
    case = {"key": "k" * 16, "case_id": "sim", "status": "ok", "simulated": False,
            "latency_ns": {"p50": float(np.mean(values))},
            "repeats": [{"index": i, "status": "ok", "p50": float(v)} for i, v in enumerate(values)]}
    return {"run_id": f"sim-{run}", "environment": {"machine_id": "m"}, "cases": [case]}


def rates(sigma: float, k: int, d: float, trials: int, rng, threshold: str = "5%") -> tuple[float, float]:
    """(share called regression, share not called unchanged)."""
    settings = make_settings(metrics=["p50"], threshold=threshold)
    reg = other = 0
    for t in range(trials):
        b = 1e5 * np.exp(sigma * rng.standard_normal(k))
        n = 1e5 * (1 + d) * np.exp(sigma * rng.standard_normal(k))
        cmp = compare_records(_record(b, 2 * t), _record(n, 2 * t + 1), settings)
        v = cmp.cases[0].verdict
        reg += v == "regression"
        other += v != "unchanged"
    return reg / trials, other / trials


def sigmas_from_records(path: str) -> list[float]:
    out = []
    for f in glob.glob(str(Path(path) / "*.json")):
        try:
            rec = json.loads(Path(f).read_text())
        except (OSError, ValueError):
            continue
        for c in rec.get("cases") or []:
            bp = (c.get("between_process") or {}).get("p50") or {}
            if bp.get("observed_cv"):
                out.append(float(bp["observed_cv"]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--records", default=None, help="directory of --repeat records to take sigma from")
    ap.add_argument("--k", default="3,5,10")
    ap.add_argument("--sigma", default="0.01,0.02,0.05,0.10,0.25")
    ap.add_argument("--threshold", default="5%", help="compare's threshold (a 5 %% slowdown at a 5 %% threshold "
                                                     "is found at most half the time by construction)")
    args = ap.parse_args(argv)
    sigmas = [float(x) for x in args.sigma.split(",")]
    if args.records:
        found = sigmas_from_records(args.records)
        if found:
            med = statistics.median(found)
            print(f"between-process CV of p50 in {args.records}: {len(found)} cases, median {100 * med:.1f} %, "
                  f"range {100 * min(found):.1f}-{100 * max(found):.1f} %")
            sigmas.append(round(med, 4))
    rng = np.random.default_rng(0)
    print(f"{args.trials} simulated pairs per cell; threshold {args.threshold}, between-process t-test p < 0.01 and 99 % CI excludes 1")
    print(f"{'sigma':>6} {'K':>3} | {'false regr.':>11} {'not unchanged':>13} | {'power +5%':>9} {'+10%':>6} {'+50%':>6}")
    for sigma in sigmas:
        for k in (int(x) for x in args.k.split(",")):
            th = args.threshold
            fa, fo = rates(sigma, k, 0.0, args.trials, rng, th)
            p5, _ = rates(sigma, k, 0.05, args.trials, rng, th)
            p10, _ = rates(sigma, k, 0.10, args.trials, rng, th)
            p50, _ = rates(sigma, k, 0.50, max(200, args.trials // 4), rng, th)
            print(f"{100 * sigma:5.1f}% {k:3d} | {100 * fa:10.2f}% {100 * fo:12.2f}% | {100 * p5:8.1f}% "
                  f"{100 * p10:5.1f}% {100 * p50:5.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
