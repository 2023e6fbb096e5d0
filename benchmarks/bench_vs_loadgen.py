"""bench against MLPerf LoadGen on the same session, same process: single-stream p90, server max QPS.

    pip install mlcommons-loadgen
    python benchmarks/bench_vs_loadgen.py [--model mlp-digits] [--seconds 5]
    python benchmarks/bench_vs_loadgen.py --scenario server [--bound-ms 15] [--concurrency 2] [--seconds 1]
                                          [--spin-us 200]
    (--pairs N: bench/LoadGen pairs in ABBA order, default 4; both the pooled ratio and the median
    of the per-pair ratios are printed -- the median is robust to one pair run while the machine's
    speed changed)

Server: both drivers search the highest QPS that stays valid with the same bound (p99), the same
minimum duration and query count, on the same SUT adapter (bench's worker threads around the
session): bench with its own generator and peak search; LoadGen by the same ramp + bisection
(:func:`harness.measure.scenarios.search_peak`) over LoadGen Server runs judged VALID/INVALID by LoadGen
itself. The script prints both peaks and their ratio (target: within 10 %).

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


def server(args) -> None:
    from backends.cpu import CPUBackend
    from harness.run import lg_driver
    from harness.measure import scenarios as sc
    from harness.run.scenario_case import sample_library
    from harness.measure.sut import SessionSUT
    from suites.build import artifact_for

    art, _ = artifact_for(args.model)
    data = sample_library(art.eval_data()["x"], art.inputs)
    n = len(next(iter(data.values())))
    session = CPUBackend().prepare(art, precision="fp32", batch=1, threads=1, runtime="onnxruntime",
                                   options={"io_binding": 0})
    sut = SessionSUT(session.run, data, concurrency=args.concurrency)
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

    art, _ = artifact_for(args.model)
    pool = input_pool(art.eval_data()["x"], art.inputs, 1)
    session = CPUBackend().prepare(art, precision="fp32", batch=1, threads=args.threads, runtime="onnxruntime",
                                   options={"io_binding": 0})  # LoadGen holds outputs: no shared buffers
    it = itertools.cycle(pool)
    nxt, run = it.__next__, session.run

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
