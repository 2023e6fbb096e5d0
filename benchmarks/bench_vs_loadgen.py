"""bench against MLPerf LoadGen on the same session, same process: single-stream p90, server max QPS.

    pip install mlcommons-loadgen
    python benchmarks/bench_vs_loadgen.py [--model mlp-digits] [--seconds 5]
    python benchmarks/bench_vs_loadgen.py --scenario server [--bound-ms 15] [--concurrency 2] [--seconds 1]
                                          [--spin-us 200]
    python benchmarks/bench_vs_loadgen.py --model synthetic:150 [--scenario server]
    (--pairs N: bench/LoadGen pairs in ABBA order, default 4; both the pooled ratio and the median
    of the per-pair ratios are printed -- the median is robust to one pair run while the machine's
    speed changed)

Server: both drivers search the highest QPS that stays valid with the same bound (p99), the same
minimum duration and query count, on the same SUT adapter (bench's worker threads around the
session): bench with its own generator and peak search; LoadGen by the same ramp + bisection
(:func:`harness.measure.scenarios.search_peak`) over LoadGen Server runs judged VALID/INVALID by LoadGen
itself. The script prints both peaks and their ratio (target: within 10 %).

``--model synthetic:US``: a system of known capacity instead of a model -- each query sleeps US µs
in the worker (the GIL released, no CPU used), so neither driver can slow the system's own work,
only add its own cost per query. Server: the script measures that sleep's real durations (2,000 of
them) and computes the peak an ideal driver would find -- the highest Poisson rate whose p99
sojourn time stays within the bound in an M/G/c queue with those service times (c = workers,
simulated, 400,000 arrivals) -- and prints each driver's peak against it. Single-stream: the
difference of the two drivers' p50 on the same sleep is the per-query cost of the costlier one.

LoadGen (the MLPerf reference harness) drives the SUT in SingleStream: it issues one query,
waits for ``QuerySamplesComplete``, issues the next, and reports percentiles of the
issue-to-completion latency. bench times ``session.run`` back to back in its own loop. Both
drive the very same onnxruntime session on the same inputs, one after the other, in one
process; the script prints both p50/p90 and their ratios. LoadGen's latency includes its C++
-> Python callback and response bookkeeping (a few µs), so on micro-models (tens of µs) its
figures are higher by about that constant; on real models the ratio should be ~1.
"""
from __future__ import annotations

import argparse
import array
import itertools
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def loadgen_single_stream(run, pool, seconds: float, expected_ns: int) -> dict:
    import mlperf_loadgen as lg

    keep = []

    def issue(queries):
        responses = []
        for q in queries:
            out = run(pool[q.index % len(pool)])[0]
            buf = array.array("B", out.tobytes())
            keep.append(buf)
            ptr, _ = buf.buffer_info()
            responses.append(lg.QuerySampleResponse(q.id, ptr, len(buf)))
        lg.QuerySamplesComplete(responses)
        if len(keep) > 1000:
            del keep[:500]

    def flush():
        pass

    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.SingleStream
    settings.mode = lg.TestMode.PerformanceOnly
    settings.single_stream_expected_latency_ns = int(expected_ns)
    settings.min_duration_ms = int(seconds * 1000)
    settings.min_query_count = 100
    from harness.run.lg_driver import start_test

    summary = start_test(lg, issue, flush, len(pool), settings)

    def grab(label):
        m = re.search(rf"{label}\s*:\s*([0-9.]+)", summary)
        return float(m.group(1)) if m else None

    return {"p50": grab(r"50.00 percentile latency \(ns\)"), "p90": grab(r"90.00 percentile latency \(ns\)"),
            "valid": "Result is : VALID" in summary, "queries": grab(r"Samples per second")}


class SleepSession:
    """A system of known capacity: each ``run`` sleeps ``us`` µs (GIL released, no CPU used)."""

    def __init__(self, us: float):
        self.seconds = us / 1e6

    def run(self, feeds):
        import numpy as np

        time.sleep(self.seconds)
        return [np.zeros((len(next(iter(feeds.values()))), 1), np.float32)]


def _synthetic_us(model: str) -> float | None:
    if not model.startswith("synthetic:"):
        return None
    try:
        return float(model.split(":", 1)[1])
    except ValueError:
        raise SystemExit(f"--model {model}: expected synthetic:MICROSECONDS, e.g. synthetic:150") from None


def service_times_ns(run, feeds, n: int = 2000):
    """``n`` back-to-back calls of ``run`` in a thread (as a SUT worker would make them): durations, ns."""
    import threading

    import numpy as np

    out = np.empty(n, dtype=np.int64)

    def go():
        for i in range(n):
            t0 = time.perf_counter_ns()
            run(feeds)
            out[i] = time.perf_counter_ns() - t0

    t = threading.Thread(target=go)
    t.start()
    t.join()
    return out


def sojourn_p99_ns(qps: float, service_ns, workers: int, n: int = 400_000, seed: int = 0) -> float:
    """p99 of the time from arrival to completion in a FCFS queue with ``workers`` servers, Poisson
    arrivals at ``qps`` and service times drawn (with replacement) from ``service_ns``.

    Each arrival takes the server that frees first (a heap of free times); sojourn = that server's
    free time or the arrival, whichever is later, plus the service, minus the arrival. With one
    server this is Lindley's recursion W_{k+1} = max(0, W_k + S_k - A_{k+1})."""
    import heapq

    import numpy as np

    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1e9 / qps, n))
    svc = rng.choice(np.asarray(service_ns, dtype=np.float64), n)
    free = [0.0] * workers
    soj = np.empty(n)
    for k in range(n):
        f = heapq.heappop(free)
        start = max(f, arrivals[k])
        done = start + svc[k]
        heapq.heappush(free, done)
        soj[k] = done - arrivals[k]
    return float(np.quantile(soj[n // 10:], 0.99))  # the first tenth: the queue starting empty


def ideal_peak_qps(service_ns, workers: int, bound_ns: float, rel: float = 0.002, n: int = 400_000) -> float:
    """The highest Poisson rate whose simulated p99 sojourn (:func:`sojourn_p99_ns`) is within ``bound_ns``:
    bisection between 0 and the capacity ``workers / mean(service)``, to ``rel`` of the capacity."""
    import numpy as np

    cap = workers * 1e9 / float(np.mean(service_ns))
    lo, hi = 0.0, cap
    while hi - lo > rel * cap:
        mid = (lo + hi) / 2
        if sojourn_p99_ns(mid, service_ns, workers, n=n) <= bound_ns:
            lo = mid
        else:
            hi = mid
    return lo


def server(args) -> None:
    from harness.run import lg_driver
    from harness.measure import scenarios as sc
    from harness.measure.sut import SessionSUT

    us = _synthetic_us(args.model)
    ideal = None
    if us is not None:
        import numpy as np

        data = {"x": np.zeros((1024, 1), np.float32)}
        run = SleepSession(us).run
        svc = service_times_ns(run, {"x": data["x"][:1]})
        ideal = ideal_peak_qps(svc, args.concurrency, args.bound_ms * 1e6)
        print(f"synthetic system: sleep {us:g} µs a query, measured service p50 {np.median(svc) / 1e3:.1f} µs, "
              f"mean {svc.mean() / 1e3:.1f} µs, p99 {np.quantile(svc, 0.99) / 1e3:.1f} µs; {args.concurrency} "
              f"worker(s): capacity {args.concurrency * 1e9 / svc.mean():,.0f} QPS, ideal driver's peak at p99 <= "
              f"{args.bound_ms:g} ms (M/G/{args.concurrency} with these service times): {ideal:,.0f} QPS", flush=True)
    else:
        from backends.cpu import CPUBackend
        from harness.run.scenario_case import sample_library
        from suites.build import artifact_for

        art, _ = artifact_for(args.model)
        data = sample_library(art.eval_data()["x"], art.inputs)
        run = CPUBackend().prepare(art, precision="fp32", batch=1, threads=1, runtime="onnxruntime",
                                   options={"io_binding": 0}).run
    n = len(next(iter(data.values())))
    sut = SessionSUT(run, data, concurrency=args.concurrency)
    s = sc.ScenarioSettings(scenario="server", min_duration_s=args.seconds, max_duration_s=args.seconds * 4,
                            latency_bound_ms=args.bound_ms, search_tolerance=0.05, search_max_steps=12)
    burst = sc.lg.run_burst(sut, list(range(min(n, 2000))))
    start = 0.5 * burst.samples[0] / (burst.duration_ns() / 1e9)
    rows = []
    try:
        for driver in _order(args.pairs):
            if driver == "bench":
                spin = None if args.spin_us is None else int(args.spin_us * 1000)
                best, steps = sc.search_peak(lambda q: sc.run_server(sut, q, s, n, spin_ns=spin)["validity"], start,
                                             tolerance=s.search_tolerance, max_steps=s.search_max_steps)
            else:
                best, steps = sc.search_peak(
                    lambda q: _lg_step(lg_driver.run_loadgen(sut, scenario="server", n_samples=n,
                                                             min_duration_s=s.min_duration_s,
                                                             max_duration_s=s.max_duration_s,
                                                             min_queries=s.need_queries, target_qps=q,
                                                             bound_ns=s.bound_ns)),
                    start, tolerance=s.search_tolerance, max_steps=s.search_max_steps)
            peak = best["qps"] if best else 0.0
            rows.append((driver, peak, len(steps)))
            print(f"{driver:8s} max QPS at p99 <= {args.bound_ms:g} ms: {peak:10,.0f}  ({len(steps)} steps: "
                  + ", ".join(_trail(st) for st in steps) + ")", flush=True)
    finally:
        sut.close()
    b = sum(r[1] for r in rows if r[0] == "bench")
    g = sum(r[1] for r in rows if r[0] == "loadgen")
    pairs = _pair_ratios(rows, 1)
    if ideal:
        k = len(rows) / 2
        print(f"{args.model}: peak / ideal driver's peak: bench {b / k / ideal:.3f}, LoadGen {g / k / ideal:.3f} "
              f"(mean of {k:g} searches each)")
    print(f"{args.model} server (concurrency {args.concurrency}, bound {args.bound_ms:g} ms): bench/LoadGen max-QPS "
          f"ratio {b / g if g else float('nan'):.3f} pooled, {statistics.median(pairs):.3f} median of the "
          f"{len(pairs)} pairs ({', '.join(f'{x:.2f}' for x in pairs)})")


def _lg_step(summary: dict) -> dict:
    """LoadGen's verdict of one server run, with its p99 as the reason when INVALID."""
    f = summary.get("fields", {})
    p99 = f.get("Early stopping 99th percentile estimate") or f.get("99.00 percentile latency (ns)")
    why = [] if summary["valid"] else [f"LoadGen INVALID: p99 {p99 / 1e6:.1f} ms" if p99 else "LoadGen INVALID"]
    return {"valid": summary["valid"], "reasons": why}


def _trail(step: dict) -> str:
    """One search step in a line: QPS, then ok or the first reason cut short."""
    if step["valid"]:
        return f"{step['qps']:,.0f} ok"
    r = (step.get("reasons") or ["invalid"])[0]
    return f"{step['qps']:,.0f} {r.split(' (')[0][:60]}"


def _order(pairs: int) -> list[str]:
    """ABBA: pair k runs bench first when k is even, LoadGen first when odd, so a machine that
    drifts during the comparison does not favour one driver."""
    out = []
    for k in range(pairs):
        out += ["bench", "loadgen"] if k % 2 == 0 else ["loadgen", "bench"]
    return out


def _pair_ratios(rows: list, col: int) -> list[float]:
    """bench / LoadGen per pair (consecutive rows): the median of these is robust to one pair
    measured while the machine's speed changed (this VM's moves by up to 2x within an hour)."""
    out = []
    for a, b in zip(rows[0::2], rows[1::2]):
        bench, lg = (a, b) if a[0] == "bench" else (b, a)
        out.append(bench[col] / lg[col] if lg[col] else float("nan"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mlp-digits")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scenario", choices=["single-stream", "server"], default="single-stream")
    ap.add_argument("--bound-ms", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=4, help="bench/LoadGen pairs, ABBA order (default 4)")
    ap.add_argument("--spin-us", type=float, default=None,
                    help="server: bench's generator spins this long before each arrival (default: it sleeps "
                         "for a threaded SUT; 200 = the old spinning generator, for an A/B)")
    args = ap.parse_args()
    if args.scenario == "server":
        return server(args)

    from backends.cpu import CPUBackend
    from harness.run.case import input_pool
    from harness.measure.timing import MeasureSettings, measure, warm_up
    from harness.measure.stats import summarize
    from suites.build import artifact_for

    us = _synthetic_us(args.model)
    if us is not None:
        import numpy as np

        pool, run = [{"x": np.zeros((1, 1), np.float32)}] * 16, SleepSession(us).run
    else:
        art, _ = artifact_for(args.model)
        pool = input_pool(art.eval_data()["x"], art.inputs, 1)
        run = CPUBackend().prepare(art, precision="fp32", batch=1, threads=args.threads, runtime="onnxruntime",
                                   options={"io_binding": 0}).run  # LoadGen holds outputs: no shared buffers
    it = itertools.cycle(pool)
    nxt = it.__next__

    def step():
        run(nxt())

    settings = MeasureSettings(min_time_s=args.seconds, max_time_s=args.seconds * 2, target_ci=0.002)
    warm_up(step, settings)
    rows = []
    expected = summarize(measure(step, settings).samples_ns)["p50"]  # LoadGen's expected latency
    for order in _order(args.pairs):
        if order == "bench":
            st = summarize(measure(step, settings).samples_ns)
            rows.append(("bench", st["p50"], st["p90"]))
        else:
            lg = loadgen_single_stream(run, pool, args.seconds, expected_ns=expected)
            rows.append(("loadgen", lg["p50"], lg["p90"]))
    for name, p50, p90 in rows:
        print(f"{name:8s} p50 {p50 / 1e3:9.2f} µs   p90 {p90 / 1e3:9.2f} µs")
    b = [r for r in rows if r[0] == "bench"]
    g = [r for r in rows if r[0] == "loadgen"]
    p50_ratio = sum(x[1] for x in b) / sum(x[1] for x in g)
    p90_ratio = sum(x[2] for x in b) / sum(x[2] for x in g)
    diff_p50 = (sum(x[1] for x in g) - sum(x[1] for x in b)) / len(b)
    print(f"{args.model}: bench/LoadGen p50 ratio {p50_ratio:.3f}, p90 ratio {p90_ratio:.3f} pooled "
          f"(LoadGen - bench p50 = {diff_p50 / 1e3:.2f} µs; on micro-models this is LoadGen's per-query callback cost)")
    p90s = _pair_ratios(rows, 2)
    print(f"{args.model}: p90 ratio per pair {', '.join(f'{x:.3f}' for x in p90s)}; median "
          f"{statistics.median(p90s):.3f}; p50 median {statistics.median(_pair_ratios(rows, 1)):.3f}")


if __name__ == "__main__":
    main()
