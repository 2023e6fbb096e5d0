"""The load generator alone: the highest server QPS it schedules with a median scheduling error < 10 µs.

    python benchmarks/bench_generator.py [--seconds 0.5] [--max-qps 3000000]

A null SUT completes every query inline (:class:`harness.measure.loadgen.NullSUT`), so what is left is
the generator's own per-query cost: wait for the arrival, read the clock, pick the samples,
issue, record. For each target QPS (doubling from 10,000) the script runs a Poisson schedule
for ``--seconds`` and prints the median / p99 scheduling error (issued - scheduled) and the
achieved rate. The answer is the highest target whose median error stays under 10 µs.
Reference: MLPerf LoadGen's C++ core schedules about 1.5 M QPS with a no-op SUT
(mlcommons/inference#199); with ``mlperf_loadgen`` installed the script also runs LoadGen's
Server scenario with a null *Python* SUT (every query a C++ -> Python callback) at the same
targets and prints whether LoadGen kept up (scheduled vs completed samples/s).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_at(qps: float, seconds: float) -> dict:
    from harness.measure import loadgen as lg

    n = int(qps * seconds)
    log = lg.run_open_loop(lg.NullSUT(), lg.poisson_schedule(qps, n, 0), lambda i: (0,))
    err = log.schedule_error_ns()
    span = (log.issued[-1] - log.issued[0]) / 1e9
    return {"n": n, "p50_err_us": float(np.median(err)) / 1e3, "p99_err_us": float(np.percentile(err, 99)) / 1e3,
            "achieved_qps": (n - 1) / span if span > 0 else float("nan")}


def cpu_cost_per_query(n: int = 500_000) -> float:
    """CPU seconds the generator spends per query when every arrival is already due (no waiting):
    its throughput ceiling on one core, independent of how busy the machine is."""
    import time

    from harness.measure import loadgen as lg

    arrivals = np.zeros(n, dtype=np.int64)
    c0 = time.process_time()
    lg.run_open_loop(lg.NullSUT(), arrivals, lambda i: (0,), lead_ns=0)
    return (time.process_time() - c0) / n


def loadgen_null_at(qps: float, seconds: float) -> dict:
    import re

    import mlperf_loadgen as lg

    def issue(qs):
        lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in qs])

    s = lg.TestSettings()
    s.scenario = lg.TestScenario.Server
    s.mode = lg.TestMode.PerformanceOnly
    s.server_target_qps = qps
    s.server_target_latency_ns = 100_000_000
    s.min_duration_ms = int(seconds * 1000)
    s.max_duration_ms = int(seconds * 4000)
    s.min_query_count = int(qps * seconds)
    from harness.run.lg_driver import start_test

    text = start_test(lg, issue, lambda: None, 1024, s)

    def grab(label):
        m = re.search(rf"{label}\s*:\s*([0-9.]+)", text)
        return float(m.group(1)) if m else float("nan")

    return {"completed_qps": grab("Completed samples per second"), "valid": "Result is : VALID" in text,
            "p50_us": grab(r"50.00 percentile latency \(ns\)") / 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--max-qps", type=float, default=3_000_000)
    ap.add_argument("--no-loadgen", action="store_true")
    args = ap.parse_args()
    with_lg = not args.no_loadgen and importlib.util.find_spec("mlperf_loadgen") is not None
    best = None
    qps = 10_000.0
    print(f"{'target QPS':>12} {'achieved':>12} {'p50 err µs':>11} {'p99 err µs':>11}"
          + (f" {'LoadGen(py null SUT) done/s':>28} {'p50 µs':>8}" if with_lg else ""))
    while qps <= args.max_qps:
        r = bench_at(qps, args.seconds)
        line = f"{qps:12,.0f} {r['achieved_qps']:12,.0f} {r['p50_err_us']:11.2f} {r['p99_err_us']:11.2f}"
        if with_lg:
            g = loadgen_null_at(qps, args.seconds)
            line += f" {g['completed_qps']:28,.0f} {g['p50_us']:8.1f}"
        print(line, flush=True)
        if r["p50_err_us"] < 10:
            best = qps
        qps *= 2
    print(f"bench generator: highest QPS with median scheduling error < 10 µs: "
          f"{best:,.0f}" if best else "bench generator: none under 10 µs")
    cost = cpu_cost_per_query()
    import os

    print(f"bench generator CPU cost per query (null SUT, all due): {cost * 1e6:.2f} µs -> ceiling "
          f"{1 / cost:,.0f} QPS on one core (LoadGen C++ core: ~1.5 M QPS, ratio {1 / cost / 1.5e6:.2f}); "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
