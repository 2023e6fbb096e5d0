"""MLPerf LoadGen as a second driver of a case (``--driver loadgen``).

Place in the data path: worker case (:mod:`harness.run.case`) -> **LoadGen driver** -> MLPerf
LoadGen (``mlcommons-loadgen``, module ``mlperf_loadgen``: its own C++ clock, schedule and
validity rules) -> bench's SUT adapter (:class:`harness.measure.sut.SessionSUT`, the very session
bench timed) -> ``QuerySamplesComplete``. The eval set is the query sample library. LoadGen's
summary (scenario, VALID/INVALID, percentiles, QPS or samples/s) and the settings used go
into the case under ``loadgen``, next to bench's own figure, so the two drivers can be compared.

LoadGen is imported only here, inside the worker, and only when asked for.
"""
from __future__ import annotations

import importlib.util
import re
import tempfile
import threading
from pathlib import Path

from harness.errors import BenchError
from harness.measure.sut import SessionSUT

_SCEN = {"single-stream": "SingleStream", "multi-stream": "MultiStream", "server": "Server", "offline": "Offline"}


class LoadGenMissing(BenchError):
    pass


def available() -> bool:
    return importlib.util.find_spec("mlperf_loadgen") is not None


def require() -> None:
    """One line and exit 2 when the package is missing (checked in the parent before any case runs)."""
    if not available():
        raise LoadGenMissing("--driver loadgen needs MLPerf LoadGen: pip install 'bench[loadgen]' "
                             "(package mlcommons-loadgen)")


def parse_summary(text: str) -> dict:
    """``key : value`` lines of ``mlperf_log_summary.txt`` -> dict (numbers as float)."""
    fields = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([^:=]+?)\s*:\s*(.+?)\s*$", line)
        if not m:
            continue
        k, v = m.group(1), m.group(2)
        try:
            fields[k] = float(v)
        except ValueError:
            fields[k] = v
    return fields


def _headline(fields: dict, scenario: str) -> dict:
    if scenario == "server":
        v = fields.get("Completed samples per second") or fields.get("Scheduled samples per second")
        return {"metric": "qps", "value": v, "unit": "1/s"}
    if scenario == "offline":
        return {"metric": "samples_per_s", "value": fields.get("Samples per second"), "unit": "1/s"}
    if scenario == "multi-stream":
        v = fields.get("Early stopping 99th percentile estimate") or fields.get("99.00 percentile latency (ns)")
        return {"metric": "p99_latency", "value": v, "unit": "ns"}
    v = fields.get("90.00 percentile latency (ns)")
    return {"metric": "p90_latency", "value": v, "unit": "ns"}


def start_test(lg, issue, flush, n_samples: int, settings) -> str:
    """Run one LoadGen test (SUT from ``issue``/``flush``, a QSL of ``n_samples`` already in memory) with
    its logs in a temporary folder; returns the text of ``mlperf_log_summary.txt``."""
    lsut = lg.ConstructSUT(issue, flush)
    qsl = lg.ConstructQSL(n_samples, n_samples, lambda s: None, lambda s: None)
    try:
        with tempfile.TemporaryDirectory() as out:
            log = lg.LogOutputSettings()
            log.outdir = out
            log.copy_summary_to_stdout = False
            ls = lg.LogSettings()
            ls.log_output = log
            ls.enable_trace = False
            lg.StartTestWithLogSettings(lsut, qsl, settings, ls)
            return (Path(out) / "mlperf_log_summary.txt").read_text()
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(lsut)


def run_loadgen(sut: SessionSUT, *, scenario: str, n_samples: int, min_duration_s: float, max_duration_s: float,
                min_queries: int, target_qps: float | None = None, bound_ns: int | None = None,
                expected_latency_ns: float | None = None, expected_sps: float | None = None,
                samples_per_query: int = 8) -> dict:
    """One LoadGen PerformanceOnly run of ``scenario`` on ``sut``; returns the parsed summary."""
    require()
    import mlperf_loadgen as lg

    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, _SCEN[scenario])
    s.mode = lg.TestMode.PerformanceOnly
    s.min_duration_ms = int(min_duration_s * 1000)
    s.max_duration_ms = int(max(max_duration_s, min_duration_s) * 1000)
    s.min_query_count = int(min_queries)
    used = {"scenario": _SCEN[scenario], "mode": "PerformanceOnly", "min_duration_ms": s.min_duration_ms,
            "max_duration_ms": s.max_duration_ms, "min_query_count": s.min_query_count}
    if scenario == "server":
        # like bench, let the run last as long as the minimum query count needs
        s.max_duration_ms = max(s.max_duration_ms, int(2000 * min_queries / float(target_qps)))
        used["max_duration_ms"] = s.max_duration_ms
        s.server_target_qps = float(target_qps)
        s.server_target_latency_ns = int(bound_ns)
        s.server_target_latency_percentile = 0.99
        used.update(server_target_qps=float(target_qps), server_target_latency_ns=int(bound_ns),
                    server_target_latency_percentile=0.99)
    elif scenario == "single-stream":
        s.single_stream_expected_latency_ns = int(expected_latency_ns or 1_000_000)
        used["single_stream_expected_latency_ns"] = s.single_stream_expected_latency_ns
    elif scenario == "multi-stream":
        s.multi_stream_expected_latency_ns = int(expected_latency_ns or 1_000_000)
        s.multi_stream_samples_per_query = int(samples_per_query)
        used.update(multi_stream_expected_latency_ns=s.multi_stream_expected_latency_ns,
                    multi_stream_samples_per_query=int(samples_per_query))
    else:
        s.offline_expected_qps = float(expected_sps or 1000.0)
        used["offline_expected_qps"] = s.offline_expected_qps

    counter = iter(range(1 << 62))
    lock = threading.Lock()

    def issue(query_samples):
        ids = [q.id for q in query_samples]
        idx = [q.index for q in query_samples]
        with lock:
            qid = next(counter)

        def done(_qid, _t0, _t1, ids=ids):
            lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])

        if scenario == "server" or scenario == "single-stream":
            for i, x in zip(ids, idx):  # one sample per query: each its own SUT query
                sut.issue(qid, [x], lambda _q, _a, _b, i=i: lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0)]))
        else:
            sut.issue(qid, idx, done)

    def flush():
        pass

    text = start_test(lg, issue, flush, n_samples, s)
    fields = parse_summary(text)
    result = fields.get("Result is")
    return {"scenario": fields.get("Scenario"), "result": result, "valid": result == "VALID",
            "headline": _headline(fields, scenario), "settings": used,
            "fields": {k: v for k, v in fields.items() if not k.startswith(("Result is", "Scenario"))}}


def run_case(session, *, scenario: str, batch: int, data: dict, opts: dict, settings: dict, bench_stats: dict | None,
             bench_value: float | None, concurrency: int) -> dict:
    """The case under LoadGen with bench's settings: server at bench's QPS (the found peak, or
    ``--target-qps``); returns the summary plus ``agreement`` = bench / LoadGen on the headline."""
    from backends.base import Session
    from harness.run.scenario_case import concurrency_plan, scenario_settings
    from harness.measure.timing import MeasureSettings

    ms = MeasureSettings(**settings)
    sset = scenario_settings(scenario, opts, ms)
    conc = concurrency_plan(session, concurrency if scenario != "single-stream" else 1)
    sync = session.synchronize if type(session).synchronize is not Session.synchronize else None
    n = len(next(iter(data.values())))
    inline = scenario in ("single-stream", "multi-stream") and conc["used"] == 1
    sut = SessionSUT(session.run, data, batch=batch, concurrency=conc["used"], inline=inline, sync=sync)
    p50 = (bench_stats or {}).get("p50") or 1_000_000
    try:
        if scenario == "server":
            qps = sset.target_qps or bench_value
            if not qps:
                return {"result": None, "error": "no QPS to run LoadGen at (bench found no valid QPS)"}
            summary = run_loadgen(sut, scenario=scenario, n_samples=n, min_duration_s=ms.min_time_s,
                                  max_duration_s=ms.max_time_s, min_queries=sset.need_queries, target_qps=qps,
                                  bound_ns=sset.bound_ns)
        elif scenario == "offline":
            summary = run_loadgen(sut, scenario=scenario, n_samples=n, min_duration_s=ms.min_time_s,
                                  max_duration_s=ms.max_time_s, min_queries=1,
                                  expected_sps=bench_value or conc["used"] * batch * 1e9 / p50)
        else:
            summary = run_loadgen(sut, scenario=scenario, n_samples=n, min_duration_s=ms.min_time_s,
                                  max_duration_s=ms.max_time_s,
                                  min_queries=sset.need_queries if scenario == "multi-stream" else ms.min_iterations,
                                  expected_latency_ns=p50, samples_per_query=sset.samples_per_query)
    finally:
        sut.close()
    summary["concurrency"] = conc
    lv = summary["headline"]["value"]
    bv = bench_value if bench_value is not None else (bench_stats or {}).get("p90")
    summary["bench_value"] = bv
    summary["agreement"] = (bv / lv) if (bv and lv) else None
    return summary
