"""Export runs for other tools: pytest-benchmark JSON, and flat CSV / Parquet tables with raw samples.

pytest-benchmark layout (as written by ``pytest --benchmark-json``, version 5)::

    {"machine_info": {...}, "commit_info": {...}, "benchmarks": [...], "datetime": ISO, "version": "5.x"}

one benchmark per case that has raw samples, with ``stats`` in **seconds**:
min, max, mean, stddev (n-1), rounds, median, iqr, q1, q3, iqr_outliers, stddev_outliers,
outliers ("stddev;iqr"), ld15iqr, hd15iqr, ops (rounds / total), total, data, iterations.
The quartiles, outlier counts and Tukey fences follow pytest-benchmark's own definitions
(``pytest_benchmark.stats.Stats``), so its ``compare`` command and loaders read the file
as if pytest had written it. Cases without samples (failed, skipped) are left out, as
pytest-benchmark leaves out benchmarks that errored.

The flat table has one row per case (``layout="wide"``: run and environment columns, every
case field flattened with dots, ``samples_ns`` as a list) or one row per sample
(``layout="long"``: case identity columns + ``iteration`` + ``sample_ns``).
"""
from __future__ import annotations

import bisect
import json
import math
import statistics
from pathlib import Path
from typing import Iterable, Sequence

from harness.errors import BenchError

__all__ = ["PYTEST_BENCHMARK_VERSION", "pytest_benchmark_stats", "to_pytest_benchmark", "flat_table",
           "write_table", "IDENTITY_COLUMNS"]

#: The pytest-benchmark JSON layout version these files follow (and were tested against).
PYTEST_BENCHMARK_VERSION = "5.3.1"

IDENTITY_COLUMNS = ["run_id", "run.started_at", "run.suite", "run.git_sha", "env.machine_id", "env.hostname",
                    "env.cpu_model", "key", "case_id", "model", "variant", "backend", "runtime", "precision", "batch",
                    "scenario", "device", "status", "simulated"]


# --------------------------------------------------------------------------- pytest-benchmark

def _quartiles(data: list[float]) -> tuple[float, float]:
    """q1, q3 as pytest-benchmark computes them (Wikipedia "methods" 2 and 3 for even / odd n)."""
    n = len(data)
    if n == 1:
        return data[0], data[0]
    if n % 2:
        k, r = n // 4, n % 4
        if r == 1:
            return 0.25 * data[k - 1] + 0.75 * data[k], 0.75 * data[3 * k] + 0.25 * data[3 * k + 1]
        return 0.75 * data[k] + 0.25 * data[k + 1], 0.25 * data[3 * k + 1] + 0.75 * data[3 * k + 2]
    return statistics.median(data[: n // 2]), statistics.median(data[n // 2:])


def pytest_benchmark_stats(data: Sequence[float], iterations: int = 1) -> dict:
    """pytest-benchmark's ``stats`` dict for per-round times ``data`` (seconds), in its field order."""
    raw = [float(x) for x in data]
    if not raw:
        raise ValueError("no data")
    s = sorted(raw)
    n = len(s)
    mean = statistics.fmean(raw)
    stddev = statistics.stdev(raw) if n > 1 else 0.0
    q1, q3 = _quartiles(s)
    iqr = q3 - q1
    lo_fence, hi_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    iqr_out = sum(1 for v in raw if v < lo_fence or v > hi_fence)
    sd_out = sum(1 for v in raw if v < mean - stddev or v > mean + stddev)
    if n == 1:
        ld, hd = raw[0], raw[0]
    else:
        ld = s[bisect.bisect_left(s, lo_fence)]
        hd = s[bisect.bisect_right(s, hi_fence) - 1]
    total = math.fsum(raw)
    return {
        "min": s[0], "max": s[-1], "mean": mean, "stddev": stddev, "rounds": n, "median": statistics.median(s),
        "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out, "stddev_outliers": sd_out,
        "outliers": f"{sd_out};{iqr_out}", "ld15iqr": ld, "hd15iqr": hd, "ops": (n / total) if total else 0,
        "total": total, "data": raw, "iterations": int(iterations),
    }


def to_pytest_benchmark(record: dict, *, include_data: bool = True) -> dict:
    """The run ``record`` in pytest-benchmark's JSON layout (see the module doc)."""
    env = record.get("environment") or {}
    cpu = env.get("cpu") or {}
    os_ = env.get("os") or {}
    py = env.get("python") or {}
    bench = record.get("bench") or {}
    settings = record.get("settings") or {}
    timer = record.get("timer") or {}
    suite = (record.get("suite") or {}).get("name") or "bench"
    machine_info = {
        "node": env.get("hostname"), "processor": cpu.get("model"), "machine": os_.get("machine"),
        "python_compiler": py.get("compiler", ""), "python_implementation": py.get("implementation", "CPython"),
        "python_implementation_version": py.get("version"), "python_version": py.get("version"),
        "python_build": [], "release": os_.get("release"), "system": os_.get("system"),
        "cpu": {"brand_raw": cpu.get("model"), "count": cpu.get("logical_cores"), "arch_string_raw": os_.get("machine"),
                "flags": cpu.get("flags") or []},
        "machine_id": env.get("machine_id"), "memory_bytes": env.get("memory_bytes"), "gpus": env.get("gpus") or [],
    }
    commit_info = {"id": bench.get("git_sha") or "unversioned", "time": None, "author_time": None,
                   "dirty": bool(bench.get("git_dirty")), "project": "bench", "branch": None,
                   "bench_version": bench.get("version")}
    benchmarks = []
    for case in record.get("cases") or []:
        samples = case.get("samples_ns")
        if not samples:
            continue
        stats = pytest_benchmark_stats([v / 1e9 for v in samples])
        if not include_data:
            stats.pop("data")
        params = {k: case.get(k) for k in ("variant", "backend", "runtime", "precision", "batch", "scenario")}
        param = "-".join(str(params[k]) for k in ("variant", "backend", "runtime", "precision", "scenario")) + \
            f"-b{params['batch']}"
        benchmarks.append({
            "group": None,
            "name": f"{case.get('model')}[{param}]",
            "fullname": f"{suite}::{case.get('case_id')}",
            "params": params,
            "param": param,
            "extra_info": {
                "bench_key": case.get("key"), "case_id": case.get("case_id"), "status": case.get("status"),
                "device": case.get("device"), "simulated": case.get("simulated"),
                "validity": case.get("validity"), "throughput": case.get("throughput"),
                "accuracy": case.get("accuracy"), "headline": case.get("headline"),
                "stop_reason": case.get("stop_reason"), "unit": "seconds per query",
            },
            "options": {"disable_gc": False, "timer": timer.get("clock", "perf_counter_ns"),
                        "min_rounds": settings.get("min_iterations"), "max_time": settings.get("max_time_s"),
                        "min_time": settings.get("min_time_s"),
                        "precision": (timer.get("resolution_ns") or 0) / 1e9 or None,
                        "confidence": settings.get("confidence"), "warmup": True},
            "stats": stats,
        })
    return {"machine_info": machine_info, "commit_info": commit_info, "benchmarks": benchmarks,
            "datetime": record.get("started_at"), "version": PYTEST_BENCHMARK_VERSION,
            "bench": {"run_id": record.get("run_id"), "suite": suite, "schema_version": record.get("schema_version")}}


# --------------------------------------------------------------------------- flat tables

def flat_table(records: Iterable[dict], *, layout: str = "wide"):
    """All cases of ``records`` as a pandas DataFrame with their raw samples (see the module doc)."""
    import pandas as pd

    from harness.store.flatten import case_rows

    if layout not in ("wide", "long"):
        raise BenchError(f"unknown layout {layout!r} (wide, long)")
    rows: list[dict] = []
    for rec in records:
        rows.extend(case_rows(rec, samples=True))
    if layout == "wide":
        df = pd.DataFrame(rows)
        if "samples_ns" not in df.columns:
            df["samples_ns"] = None
        return df
    long_rows = []
    for row in rows:
        ident = {c: row.get(c) for c in IDENTITY_COLUMNS}
        for i, v in enumerate(row.get("samples_ns") or []):
            long_rows.append({**ident, "iteration": i, "sample_ns": int(v)})
    return pd.DataFrame(long_rows, columns=IDENTITY_COLUMNS + ["iteration", "sample_ns"])


def _parquet_engine() -> str:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is not None:
        return "pyarrow"
    if importlib.util.find_spec("duckdb") is not None:
        return "duckdb"
    raise BenchError("Parquet export needs pyarrow (pip install pyarrow) or duckdb (pip install 'bench[history]'); "
                     "neither is installed — use --format csv")


def write_table(df, out: str | Path | None, fmt: str) -> str | None:
    """Write ``df`` as CSV (``out=None``: return the text) or Parquet (``out`` required)."""
    from harness.safe import csv_frame, os_reason, write_atomic

    if fmt == "csv":
        df = df.copy()
        if "samples_ns" in df.columns:  # a list per cell: keep it one JSON array
            df["samples_ns"] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else json.dumps(list(v))
                                for v in df["samples_ns"]]
        text = csv_frame(df).to_csv(index=False)  # no cell a spreadsheet would run as a formula
        if out is None:
            return text
        write_atomic(out, text, what="export")
        return None
    if fmt != "parquet":
        raise BenchError(f"unknown table format {fmt!r}")
    if out is None:
        raise BenchError("Parquet is binary: give --out FILE")
    engine = _parquet_engine()
    try:
        _write_parquet(df, out, engine)
    except OSError as exc:
        raise BenchError(f"cannot write export {out}: {os_reason(exc)}") from None
    return None


def _write_parquet(df, out, engine: str) -> None:
    if engine == "pyarrow":
        df.to_parquet(out, index=False, engine="pyarrow")
        return None
    import duckdb

    con = duckdb.connect()
    try:
        con.register("bench_export", _for_duckdb(df))
        try:
            con.execute("COPY (SELECT * FROM bench_export) TO $out (FORMAT parquet)", {"out": str(out)})
        except Exception as exc:  # duckdb.IOException: an unwritable path
            if "IO" in type(exc).__name__:
                raise OSError(" ".join(str(exc).split())[:200]) from None
            raise
    finally:
        con.close()
    return None


def _for_duckdb(df):
    """Columns DuckDB can scan without pyarrow: object columns of mixed scalars become strings or lists."""
    import pandas as pd

    df = df.copy()
    for c in df.columns:
        if df[c].dtype != object:
            continue
        vals = [v for v in df[c] if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if c == "samples_ns":
            df[c] = [list(v) if isinstance(v, (list, tuple)) else None for v in df[c]]
        elif vals and all(isinstance(v, bool) for v in vals):
            df[c] = pd.array([None if v is None or v != v else bool(v) for v in df[c]], dtype="boolean")
        elif vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            df[c] = pd.to_numeric(df[c], errors="coerce")
        else:
            df[c] = [None if v is None or (isinstance(v, float) and math.isnan(v))
                     else (v if isinstance(v, str) else json.dumps(v, default=str)) for v in df[c]]
    return df
