"""Tests for bench export: pytest-benchmark JSON read back by pytest-benchmark itself; flat CSV / Parquet."""
from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store import export as ex
from harness.cli import main
from harness.store.records import write_record
from tests.synth import make_case, make_record

T0 = dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def run_file(tmp_path):
    rec = make_record([make_case(seed=1, n=101), make_case("cnn", seed=2, n=64, median_ns=2_000_000, batch=8,
                                                           scenario="offline"),
                       make_case("broken", status="failed", reason="boom")], started=T0)
    d = tmp_path / "results"
    d.mkdir()
    return write_record(rec, d), rec


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 101])
def test_stats_match_pytest_benchmark_definitions(n):
    import numpy as np
    from pytest_benchmark.stats import Stats

    data = list(np.random.default_rng(n).lognormal(-9, 0.3, n))
    ref = Stats()
    for v in data:
        ref.update(v)
    mine = ex.pytest_benchmark_stats(data)
    expect = ref.as_dict()
    assert list(mine)[:len(Stats.fields)] == list(Stats.fields)  # same fields, same order
    for k, v in expect.items():
        assert mine[k] == (v if isinstance(v, str) else pytest.approx(v, rel=1e-12)), k
    assert mine["data"] == data and mine["iterations"] == 1


def test_layout(run_file):
    _, rec = run_file
    doc = ex.to_pytest_benchmark(rec)
    assert set(doc) >= {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    assert doc["commit_info"]["id"] == "abc123" and doc["machine_info"]["node"] == "host-a"
    assert len(doc["benchmarks"]) == 2  # the failed case has no samples: left out
    b = doc["benchmarks"][0]
    assert set(b) >= {"group", "name", "fullname", "params", "param", "extra_info", "options", "stats"}
    assert b["stats"]["rounds"] == 101 and b["stats"]["median"] == pytest.approx(rec["cases"][0]["latency_ns"]["p50"] / 1e9)
    assert b["extra_info"]["bench_key"] == rec["cases"][0]["key"]
    assert "data" not in ex.to_pytest_benchmark(rec, include_data=False)["benchmarks"][0]["stats"]


def _pytest_benchmark_cli():
    exe = shutil.which("pytest-benchmark", path=str(Path(sys.executable).parent)) or shutil.which("pytest-benchmark")
    return [exe] if exe else [sys.executable, "-c", "from pytest_benchmark.cli import main; main()"]


def test_pytest_benchmark_compare_reads_the_export(run_file, tmp_path, capsys):
    path, rec = run_file
    out = tmp_path / "export" / "0001_bench.json"
    out.parent.mkdir()
    assert main(["export", "--format", "pytest-benchmark", str(path), "--out", str(out)]) == 0
    work = tmp_path / "cwd"  # pytest-benchmark creates .benchmarks/ in its working directory
    work.mkdir()
    table_csv = tmp_path / "table"
    proc = subprocess.run(_pytest_benchmark_cli() + ["compare", str(out), "--columns", "min,max,mean,stddev,median,"
                          "iqr,outliers,ops,rounds,iterations", f"--csv={table_csv}"],
                          cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Failed to load" not in proc.stdout + proc.stderr
    benches = ex.to_pytest_benchmark(rec)["benchmarks"]
    for b in benches:
        assert b["name"] in proc.stdout
    rows = list(csv.DictReader(io.StringIO(next(tmp_path.glob("table*.csv")).read_text())))
    by_name = {r["name"]: r for r in rows}  # the CSV names benchmarks by fullname
    names = [b["fullname"] for b in benches]
    assert set(by_name) == set(names)
    med = float(by_name[names[0]]["median"])
    assert med == pytest.approx(rec["cases"][0]["latency_ns"]["p50"] / 1e9, rel=1e-9)
    assert int(by_name[names[1]]["rounds"]) == 64


def test_pytest_benchmark_loader_accepts_two_runs(run_file, tmp_path):
    from pytest_benchmark.logger import Logger
    from pytest_benchmark.storage.file import FileStorage

    path, rec = run_file
    rec2 = make_record([make_case(seed=9, n=50, median_ns=110_000)], started=T0 + dt.timedelta(days=1))
    store = tmp_path / "store" / "Linux-CPython-3.11-64bit"
    store.mkdir(parents=True)
    (store / "0001_base.json").write_text(json.dumps(ex.to_pytest_benchmark(rec)))
    (store / "0002_new.json").write_text(json.dumps(ex.to_pytest_benchmark(rec2)))
    storage = FileStorage(tmp_path / "store", logger=Logger(Logger.QUIET))
    benches = list(storage.load_benchmarks())
    assert len(benches) == 3 and all("median" in b and "ops" in b for b in benches)


def test_export_errors(run_file, capsys):
    path, _ = run_file
    assert main(["export", "--format", "pytest-benchmark", str(path), str(path)]) == 2
    assert "exactly one run" in capsys.readouterr().err
    assert main(["export", "--format", "parquet", str(path)]) == 2
    assert "--out" in capsys.readouterr().err


def test_csv_wide_and_long(run_file, tmp_path, capsys):
    path, rec = run_file
    assert main(["export", "--format", "csv", str(path.parent)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3
    assert json.loads(rows[0]["samples_ns"]) == rec["cases"][0]["samples_ns"]
    assert rows[2]["status"] == "failed" and rows[2]["samples_ns"] == ""
    assert rows[0]["env.machine_id"] == rec["environment"]["machine_id"] and rows[0]["latency_ns.p50"]
    out = tmp_path / "long.csv"
    assert main(["export", "--format", "csv", "--layout", "long", str(path), "--out", str(out)]) == 0
    long_rows = list(csv.DictReader(out.open()))
    assert len(long_rows) == 101 + 64
    assert [int(r["sample_ns"]) for r in long_rows if r["model"] == "cnn"] == rec["cases"][1]["samples_ns"]
    assert set(long_rows[0]) == set(ex.IDENTITY_COLUMNS + ["iteration", "sample_ns"])


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None and importlib.util.find_spec("duckdb") is None,
                    reason="no Parquet writer installed")
def test_parquet_round_trip(run_file, tmp_path):
    path, rec = run_file
    out = tmp_path / "cases.parquet"
    assert main(["export", "--format", "parquet", str(path), "--out", str(out)]) == 0
    if importlib.util.find_spec("duckdb") is not None:
        import duckdb

        got = duckdb.sql(f"SELECT case_id, samples_ns, \"latency_ns.p50\" AS p50 FROM read_parquet('{out}') "
                         "ORDER BY case_id").fetchall()
    else:
        import pandas as pd

        df = pd.read_parquet(out).sort_values("case_id")
        got = list(zip(df["case_id"], df["samples_ns"], df["latency_ns.p50"]))
    by_id = {g[0]: g for g in got}
    first = rec["cases"][0]
    assert list(by_id[first["case_id"]][1]) == first["samples_ns"]
    assert by_id[first["case_id"]][2] == pytest.approx(first["latency_ns"]["p50"])


def test_parquet_without_a_writer_is_a_clear_error(run_file, tmp_path, monkeypatch, capsys):
    path, _ = run_file
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("pyarrow", "duckdb") else real(name, *a))
    assert main(["export", "--format", "parquet", str(path), "--out", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert "pyarrow" in err and "--format csv" in err and len(err.strip().splitlines()) == 1
