"""Tests for bench history: the query engines over run files, step analysis, alerts, trend charts."""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import math

import numpy as np
import pytest

from harness.analyze import history as hist
from harness.cli import main
from harness.store.records import dumps, write_atomic
from tests.synth import CPU_A, CPU_B, environment, make_case, make_record

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
ENV_A = environment(CPU_A, "host-a")
ENV_B = environment(CPU_B, "host-b")
HAVE_DUCKDB = importlib.util.find_spec("duckdb") is not None


def write_history(d, n_runs, *, env=ENV_A, run_noise=0.01, steps=(), blips=(), seed=0, models=("mlp",),
                  start=T0, samples=40):
    """``n_runs`` nightly records of one machine; each model's median follows 100 us x steps x blips x
    lognormal(run_noise). ``steps``/``blips``: (model, run index, factor)."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n_runs):
        cases = []
        for m in models:
            f = math.exp(rng.normal(0, run_noise))
            for sm, at, factor in steps:
                if sm == m and i >= at:
                    f *= factor
            for bm, at, factor in blips:
                if bm == m and i == at:
                    f *= factor
            cases.append(make_case(m, seed=seed * 10_000 + i * 10 + len(cases), median_ns=100_000 * f, n=samples,
                                   device=env["cpu"]["model"]))
        rec = make_record(cases, env=env, started=start + dt.timedelta(days=i), git_sha=f"sha{i:04d}")
        write_atomic(d / f"{rec['run_id']}.json", dumps(rec) + "\n")
    return d


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("hist") / "results"
    write_history(d, 30, models=("mlp", "cnn", "blip"), steps=[("mlp", 20, 1.25)], blips=[("blip", 12, 1.6)])
    write_history(d, 12, env=ENV_B, models=("mlp",), seed=7, start=T0 + dt.timedelta(hours=3))
    (d / "pytest-benchmark-export.json").write_text('{"machine_info": {}, "benchmarks": []}')
    return d


# --------------------------------------------------------------------------- engines

@pytest.mark.skipif(not HAVE_DUCKDB, reason="duckdb (the 'history' extra) is not installed")
def test_duckdb_and_pandas_engines_agree(results):
    import pandas as pd

    a = hist.load_history([results], engine="duckdb")
    b = hist.load_history([results], engine="pandas")
    assert a.attrs["engine"] == "duckdb" and b.attrs["engine"] == "pandas"
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    ia, ib = hist.index_runs([results], engine="duckdb"), hist.index_runs([results], engine="pandas")
    pd.testing.assert_frame_equal(ia, ib, check_dtype=False)
    assert len(ia) == 42 and len(a) == 30 * 3 + 12
    # the non-record JSON file is left out, and said so, by both
    assert [p for p, _ in ia.attrs["skipped"]] == [p for p, _ in ib.attrs["skipped"]] == \
        [str(results / "pytest-benchmark-export.json")]


def test_index_and_history_columns(results):
    idx = hist.index_runs([results], machine=ENV_A["machine_id"])
    assert list(idx.columns) == hist.RUN_COLUMNS
    assert len(idx) == 30 and set(idx["machine_id"]) == {ENV_A["machine_id"]}
    assert idx["started_at"].is_monotonic_increasing
    df = hist.load_history([results], machine=ENV_B["machine_id"])
    assert list(df.columns) == hist.RUN_COLUMNS + hist.CASE_COLUMNS
    assert set(df["hostname"]) == {"host-b"} and df["p50"].notna().all() and df["throughput"].notna().all()


def test_engine_fallback_when_duckdb_is_missing(results, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "duckdb" else real(name, *a))
    assert hist.engine_name("auto") == "pandas"
    assert hist.load_history([results]).attrs["engine"] == "pandas"
    with pytest.raises(hist.BenchError, match="history"):
        hist.engine_name("duckdb")


@pytest.mark.skipif(not HAVE_DUCKDB, reason="duckdb not installed")
def test_wrong_types_and_corrupt_files(tmp_path):
    import pandas as pd

    d = write_history(tmp_path / "r", 3)
    rec = json.loads(sorted(d.iterdir())[0].read_text())
    rec["cases"][0]["batch"] = "one"  # a value of the wrong type: missing (NaN) in both engines
    rec["run_id"] = rec["run_id"][:-1] + "f"
    (d / "odd.json").write_text(json.dumps(rec))
    a, b = hist.load_history([d], engine="duckdb"), hist.load_history([d], engine="pandas")
    assert a.attrs["engine"] == "duckdb" and a.attrs["fallback"] is None and len(a) == 4
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert a["batch"].isna().sum() == 1
    (d / "torn.json").write_text('{"schema_version": 1, "run_id": ')  # DuckDB fails: the json reader takes over
    df = hist.load_history([d], engine="duckdb")
    assert df.attrs["engine"] == "pandas" and "duckdb could not read" in df.attrs["fallback"]
    assert len(df) == 4 and [p for p, _ in df.attrs["skipped"]] == [str(d / "torn.json")]


# --------------------------------------------------------------------------- analysis

def by_model(histories):
    return {h.case_id.split("/")[0]: h for h in histories}


def test_analyze_finds_the_step_the_blip_and_the_quiet_case(results):
    df = hist.load_history([results], machine=ENV_A["machine_id"])
    hs = by_model(hist.analyze(df))
    mlp, cnn, blip = hs["mlp"], hs["cnn"], hs["blip"]
    step = mlp.fit.last_change
    assert mlp.status == "regressed" and step.kind == "step" and step.index == 20
    assert step.ratio == pytest.approx(1.25, rel=0.03)
    assert mlp.run_ids[20] == df[df["case_id"].str.startswith("mlp")]["run_id"].iloc[20]
    assert mlp.alert and mlp.runs_since(step.index) == 10
    assert cnn.status == "stable" and not cnn.alert
    assert blip.status == "stable" and not blip.alert
    assert [(e.kind, e.index) for e in blip.fit.events] == [("blip", 12)]


def test_alert_needs_persistence_and_expires(tmp_path):
    d = write_history(tmp_path / "r", 25, steps=[("mlp", 24, 1.3)])  # only the newest night is slow
    df = hist.load_history([d])
    (h,) = hist.analyze(df)
    assert h.status == "pending-regression" and not h.alert
    write_history(d, 1, steps=[("mlp", 0, 1.3)], start=T0 + dt.timedelta(days=25), seed=3)  # the re-run agrees
    (h,) = hist.analyze(hist.load_history([d]))
    assert h.status == "regressed" and h.alert
    (h,) = hist.analyze(hist.load_history([d]), persist=3)
    assert h.status == "pending-regression" and not h.alert
    (h,) = hist.analyze(hist.load_history([d]), alert_window=1)
    assert h.status == "regressed" and not h.alert  # the step is older than the alert window


def test_machines_are_analysed_apart(results):
    df = hist.load_history([results])
    hs = [h for h in hist.analyze(df, cases=["mlp/*"])]
    assert {h.machine_id for h in hs} == {ENV_A["machine_id"], ENV_B["machine_id"]}
    b = [h for h in hs if h.machine_id == ENV_B["machine_id"]][0]
    assert len(b.values) == 12 and b.status == "stable"
    assert hist.analyze(df, cases=["nothing*"]) == []
    assert all(len(h.values) == 5 for h in hist.analyze(df, last=5))


def test_analyze_other_metrics(results):
    df = hist.load_history([results], machine=ENV_A["machine_id"])
    hs = by_model(hist.analyze(df, metric="throughput"))
    assert hs["mlp"].status == "regressed" and hs["mlp"].fit.last_change.ratio < 0.85  # throughput fell
    acc = hist.analyze(df, metric="accuracy")
    assert all(h.status == "stable" for h in acc)
    with pytest.raises(hist.BenchError):
        hist.analyze(df, metric="p42")


def test_json_output_is_strict(results):
    df = hist.load_history([results], machine=ENV_A["machine_id"])
    doc = json.loads(hist.to_json(hist.analyze(df), machine=ENV_A["machine_id"]))
    mlp = [c for c in doc["cases"] if c["case_id"].startswith("mlp")][0]
    assert mlp["status"] == "regressed" and mlp["alert"] is True
    assert mlp["events"][0]["run_id"] == mlp["series"][20]["run_id"]
    assert len(mlp["series"]) == 30 and mlp["levels"][0]["from_run"] == mlp["series"][0]["run_id"]


# --------------------------------------------------------------------------- command line

def test_history_command_and_check_exit_codes(results, tmp_path, capsys):
    code = main(["history", "--results", str(results), "--machine", ENV_A["machine_id"]])
    out = capsys.readouterr().out
    assert code == 0 and "regressed" in out and "step +2" in out and "blip" in out
    assert main(["history", "--results", str(results), "--machine", ENV_A["machine_id"], "--check"]) == 1
    capsys.readouterr()
    assert main(["history", "--results", str(results), "--machine", ENV_A["machine_id"], "--check",
                 "--case", "cnn/*"]) == 0
    capsys.readouterr()
    d = write_history(tmp_path / "p", 20, steps=[("mlp", 19, 1.4)])
    md = tmp_path / "h.md"
    assert main(["history", "--results", str(d), "--machine", ENV_A["machine_id"], "--check", "--format", "json",
                 "--md-out", str(md)]) == 3
    assert json.loads(capsys.readouterr().out)["cases"][0]["status"] == "pending-regression"
    assert "pending-regression" in md.read_text()
    assert main(["history", "--results", str(results), "--machine", "ffffffffffffffff"]) == 2
    assert "no runs of machine" in capsys.readouterr().err
    assert main(["history", "--results", str(tmp_path / "none")]) == 2


# --------------------------------------------------------------------------- charts

def test_trend_figures(results):
    import plotly.graph_objects as go

    from harness.store.records import read_records

    records = read_records([results / p.name for p in sorted(results.iterdir()) if p.name[0].isdigit()])
    figs = hist.trend_figures(records)
    assert all(isinstance(f, go.Figure) for f in figs)
    metas = [f.layout.meta for f in figs]
    assert len(figs) == 4  # 3 cases on machine A + 1 on machine B
    assert {(m["machine_id"], m["case_id"].split("/")[0]) for m in metas} == {
        (ENV_A["machine_id"], "mlp"), (ENV_A["machine_id"], "cnn"), (ENV_A["machine_id"], "blip"),
        (ENV_B["machine_id"], "mlp")}
    mlp = [f for f in figs if f.layout.meta["case_id"].startswith("mlp") and f.layout.meta["machine_id"] == ENV_A["machine_id"]][0]
    assert mlp.layout.meta["status"] == "regressed" and mlp.layout.meta["alert"] is True
    assert len(mlp.layout.shapes) == 1  # one vertical line: the step
    assert "step +2" in mlp.layout.annotations[0].text
    assert mlp.data[0].x[20] == mlp.layout.shapes[0].x0
    blip = [f for f in figs if f.layout.meta["case_id"].startswith("blip")][0]
    assert [t.name for t in blip.data] == [hist.METRIC_COLUMNS["p50"][0], "fitted level", "blip"]
    assert len(blip.layout.shapes) == 0
    assert mlp.to_html(include_plotlyjs=False)  # renders
