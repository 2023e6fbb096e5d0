"""Tests for the reporter (harness.report, `bench report`) on synthetic records."""
from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import BenchError
from harness.store.records import validate
from tests.synth import CPU_A, CPU_B, environment, make_case, make_record

ROOT = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)
CPU_SIM = {"model": "Synthetic CPU C @ 2.5GHz", "physical_cores": 4, "logical_cores": 8, "governor": None,
           "frequency_mhz": None, "flags": []}
H100 = [{"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 80 * 2**30}]

PRICES_YAML = """\
currency: USD
power_price_per_kwh: 0.2
machines:
  - name: H100 cloud
    match: {gpu_name: H100}
    hourly: 4.1
  - name: CPU box
    match: {hostname: host-a}
    purchase: 5000
    lifetime_years: 4
    watts: 200
    peak_gmacs: 100
"""

# (variant, median latency ns at batch 1, accuracy, model bytes, MACs)
CPU_VARIANTS = [("fp32", 100_000, 0.97, 40_000, 10_000), ("int8-static", 55_000, 0.965, 10_000, 10_000),
                ("fp16", 80_000, 0.97, 20_000, 10_000), ("pruned-90", 90_000, 0.90, 8_000, 2_000)]
GPU_VARIANTS = [("fp32", 30_000, 0.97), ("int8-static", 25_000, 0.966), ("fp16", 15_000, 0.97)]


def _record(cases, *, env, hours, suite="quant", run_id):
    rec = make_record(cases, env=env, started=T0 + dt.timedelta(hours=hours), suite=suite)
    rec["run_id"] = run_id  # make_record's id depends on how many records came before
    validate(rec)
    return rec


def rich_records() -> list[dict]:
    """Three runs: a CPU box (4 variants x 2 batches + a failing CNN), a GPU box with measured
    energy and a measured peak, and a simulated FPGA whose figures are estimates."""
    cases = []
    for i, (v, med, acc, mb, macs) in enumerate(CPU_VARIANTS):
        for b in (1, 8):
            cases.append(make_case("mlp-digits", v, batch=b, median_ns=med * (1 + 0.3 * (b - 1)), seed=i * 10 + b,
                                   accuracy=acc, model_bytes=mb, macs=macs))
    cases.append(make_case("cnn-digits", "fp32", seed=5, median_ns=400_000, macs=500_000, model_bytes=200_000))
    cases.append(make_case("cnn-digits", "int8-static", status="failed",
                           reason="QLinearConv not supported by this runtime build"))
    cases.append(make_case("cnn-digits", "fp16", status="unsupported", reason="fp16 needs a GPU"))
    cases.append(make_case("cnn-digits", "pruned-50", seed=6, median_ns=390_000, noise=0.3, status="invalid",
                           reason="unstable: CV 31 %"))
    cpu = _record(cases, env=environment(CPU_A, hostname="host-a"), hours=0, run_id="20261102T090000Z-0000000a")

    cases = []
    for i, (v, med, acc) in enumerate(GPU_VARIANTS):
        for b in (1, 8, 32):
            c = make_case("mlp-digits", v, backend="cuda", runtime="torch", batch=b, median_ns=med * (1 + 0.05 * b),
                          seed=100 + i * 10 + b, accuracy=acc, device="NVIDIA H100 80GB HBM3")
            c["energy"] = {"joules_per_inference": 100.0 / c["throughput"]["samples_per_s"], "avg_watts": 100.0}
            c["backend_info"] = {"peak_macs_per_s": 5e13}
            cases.append(c)
    cases.append(make_case("mlp-digits", "fp32", backend="cuda", runtime="torch", batch=64, status="skipped",
                           reason="out of device memory at batch 64"))
    gpu = _record(cases, env=environment(CPU_B, hostname="gpu-box", gpus=H100), hours=2,
                  run_id="20261102T110000Z-0000000b")

    cases = []
    for v, lat in (("fp32", 20_000), ("fixed-16", 8_000)):
        c = make_case("mlp-digits", v, backend="fpga", runtime="sim", precision="fixed", simulated=True, seed=7,
                      median_ns=5_000_000, device="xcu250-figd2104-2L-e", accuracy=0.969)
        c["estimates"] = {"latency_ns": lat, "clock_mhz": 200, "peak_macs_per_s": 2e12}
        cases.append(c)
    fpga = _record(cases, env=environment(CPU_SIM, hostname="sim-host"), hours=3, run_id="20261102T120000Z-0000000c")
    return [cpu, gpu, fpga]


def write_records(records, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for rec in records:
        (directory / f"{rec['run_id']}.json").write_text(json.dumps(rec), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def records():
    return rich_records()


@pytest.fixture(scope="module")
def prices_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("prices") / "prices.yaml"
    p.write_text(PRICES_YAML, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def full(records, prices_file):
    from harness import report

    return report.build(records, prices=prices_file)


def _row(df, **where):
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"{where}: {len(sel)} rows"
    return sel.iloc[0]


# --------------------------------------------------------------------------- tables

def test_cases_table_has_every_case_with_its_figures(full, records):
    cases = full.tables["cases"]
    assert len(cases) == sum(len(r["cases"]) for r in records)
    int8 = _row(cases, machine="host-a", model="mlp-digits", variant="int8-static", batch=1)
    fp32 = _row(cases, machine="host-a", model="mlp-digits", variant="fp32", batch=1)
    assert int8["speedup"] == pytest.approx(fp32["p50_ms"] / int8["p50_ms"])
    assert int8["speedup"] == pytest.approx(100 / 55, rel=0.05)
    assert int8["size_reduction"] == pytest.approx(4.0)
    assert fp32["speedup"] == pytest.approx(1.0)
    pruned = _row(cases, machine="host-a", variant="pruned-90", batch=8)
    assert pruned["mac_reduction"] == pytest.approx(5.0)
    assert pruned["gate_verdict"] == "FAIL"
    assert int8["gate_verdict"] == "pass"
    assert int8["accuracy_delta"] == pytest.approx(-0.005)
    assert set(cases["status"]) == {"ok", "failed", "skipped", "unsupported", "invalid"}


def test_simulated_rows_show_estimates_never_emulation_time(full):
    cases = full.tables["cases"]
    fixed = _row(cases, backend="fpga", variant="fixed-16")
    assert fixed["basis"] == "estimated"
    assert fixed["p50_ms"] == pytest.approx(0.008)  # the estimate, not the 5 ms emulation wall time
    assert fixed["throughput_per_s"] == pytest.approx(1e9 / 8_000)
    assert fixed["speedup"] == pytest.approx(2.5)
    assert "estimated" in fixed["notes"]
    assert (cases[cases["backend"] != "fpga"]["basis"] == "measured").all()


def test_problems_table_lists_every_non_ok_case_with_reasons(full):
    problems = full.tables["problems"]
    assert sorted(problems["status"]) == ["failed", "invalid", "skipped", "unsupported"]
    reasons = " ".join(problems["reasons"])
    for text in ("QLinearConv", "fp16 needs a GPU", "unstable: CV 31 %", "out of device memory"):
        assert text in reasons


def test_machines_table_from_fingerprints(full):
    machines = full.tables["machines"]
    assert sorted(machines["machine"]) == ["gpu-box", "host-a", "sim-host"]
    assert _row(machines, machine="gpu-box")["gpus"] == "NVIDIA H100 80GB HBM3"


def test_baseline_override_changes_the_reference(records):
    from harness import report

    cases = report.tables(records, baseline="int8-static")["cases"]
    fp32 = _row(cases, machine="host-a", model="mlp-digits", variant="fp32", batch=1)
    assert fp32["baseline"] == "int8-static"
    assert fp32["speedup"] == pytest.approx(55 / 100, rel=0.05)
    with pytest.raises(BenchError, match="baseline variant 'nope'"):
        report.build(records, baseline="nope")


def test_latest_run_supersedes_older_results_of_the_same_case():
    from harness import report

    old = _record([make_case(median_ns=200_000, seed=1)], env=environment(), hours=0, run_id="20261102T090000Z-00000001")
    new = _record([make_case(median_ns=100_000, seed=2)], env=environment(), hours=5, run_id="20261102T140000Z-00000002")
    r = report.build([new, old])
    assert len(r.tables["cases"]) == 1
    assert r.tables["cases"]["p50_ms"].iloc[0] == pytest.approx(0.1, rel=0.05)
    assert any("superseded" in f for f in r.findings)


def test_missing_optional_fields_do_not_break_anything(tmp_path):
    from harness import report

    bare = make_case("bare", "fp32")
    for k in ("complexity", "accuracy", "validity", "throughput", "headline", "samples_ns"):
        bare[k] = None
    bare["latency_ns"] = None
    sim = make_case("bare", "fixed-8", backend="fpga", runtime="sim", simulated=True)
    sim["estimates"] = None
    rec = _record([bare, sim], env=environment(), hours=0, run_id="20261102T090000Z-000000ff")
    r = report.build([rec])
    assert len(r.tables["cases"]) == 2
    assert set(r.charts.skipped) >= {"latency", "pareto", "cdf", "roofline"}
    paths = report.write(r, tmp_path / "bare", ["html", "md", "csv"])
    assert all(p.exists() for p in paths)


# --------------------------------------------------------------------------- model pieces

def test_pareto_front_keeps_only_undominated_points():
    from harness.report.model import pareto_front

    pts = [{"name": n, "p50": lat, "accuracy": acc}
           for n, lat, acc in [("a", 1.0, 0.80), ("b", 2.0, 0.90), ("c", 3.0, 0.85), ("d", 2.5, 0.95),
                               ("e", 1.0, 0.70), ("f", 4.0, 0.95)]]
    assert [p["name"] for p in pareto_front(pts)] == ["a", "b", "d"]


def test_findings_say_what_is_fastest_what_it_costs_and_the_frontier(full):
    text = "\n".join(full.findings)
    assert "Fastest for mlp-digits: fp16 on cuda/torch @ gpu-box" in text
    assert "simulator estimate for mlp-digits is better still: fixed-16" in text
    assert "accuracy gate fails for pruned-90" in text
    assert "frontier for mlp-digits on cpu/onnxruntime @ host-a: int8-static" in text
    assert "4 case(s) gave no valid result" in text
    assert "Cheapest for mlp-digits (suite quant)" in text


# --------------------------------------------------------------------------- procurement

def test_procurement_costs_and_power_sources(full):
    proc = full.tables["procurement"]
    gpu = _row(proc, machine="gpu-box")
    assert gpu["variant"] == "fp16" and gpu["batch"] == 32  # best throughput that passes the gate
    assert gpu["cost_per_million"] == pytest.approx(4.1 / (gpu["throughput_per_s"] * 3600) * 1e6)
    assert gpu["per_dollar"] == pytest.approx(gpu["throughput_per_s"] * 3600 / 4.1)
    assert gpu["watts_source"] == "measured"
    assert gpu["per_watt"] == pytest.approx(gpu["throughput_per_s"] / 100.0)
    cpu = _row(proc, machine="host-a", model="mlp-digits")
    assert cpu["watts_source"] == "nameplate"
    assert cpu["hourly_cost"] == pytest.approx(5000 / (4 * 8760) + 200 / 1000 * 0.2)
    assert cpu["variant"] != "pruned-90"  # fails its accuracy gate
    fpga = _row(proc, backend="fpga")
    assert fpga["basis"] == "estimated" and math.isnan(fpga["cost_per_million"])
    mlp = proc[proc["model"] == "mlp-digits"].sort_values("rank")
    assert list(mlp["rank"]) == [1, 2, 3]
    assert list(mlp["machine"])[-1] == "sim-host"  # unpriced rows rank last


def test_no_procurement_view_for_one_machine_and_backend(records):
    from harness import report

    assert "procurement" not in report.tables(records[:1])


def test_nominal_peak_from_prices_enables_roofline(records, prices_file):
    from harness import report

    cpu_only = report.build(records[:1])
    assert "roofline" not in cpu_only.figures
    assert "peak" in cpu_only.charts.skipped["roofline"]
    priced = report.build(records[:1], prices=prices_file)
    assert "roofline" in priced.figures
    names = " ".join(t.name for t in priced.figures["roofline"].data)
    assert "nominal" in names


@pytest.mark.parametrize("text, message", [
    ("machines: [", "not valid YAML"),
    ("- just a list", "expected a mapping"),
    ("machines: []", "non-empty list"),
    ("machines:\n  - match: {hostname: a}\n", "needs a price"),
    ("machines:\n  - hourly: 1\n", "needs 'match'"),
    ("machines:\n  - match: {colour: red}\n    hourly: 1\n", "unknown match key"),
    ("machines:\n  - match: {hostname: a}\n    hourly: -3\n", "hourly: must be a non-negative number"),
    ("machines:\n  - match: {hostname: a}\n    purchase: 100\n", "lifetime_years"),
    ("machines:\n  - match: {hostname: a}\n    hourly: 1\n    hourly_price: 2\n", "unknown key"),
    ("machines:\n  - match: {hostname: a}\n    purchase: 100\n    lifetime_years: 3\n    utilization: 2\n",
     "utilization"),
])
def test_malformed_prices_file_is_one_clear_error(tmp_path, text, message):
    from harness.report import load_prices

    p = tmp_path / "prices.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(BenchError, match=message) as err:
        load_prices(p)
    assert "\n" not in str(err.value)


def test_docs_prices_example_is_valid():
    from harness.report import load_prices

    prices = load_prices(ROOT / "docs" / "prices.example.yaml")
    assert len(prices.entries) >= 3
    assert {"hourly", "purchase"} <= {"hourly" if e.hourly is not None else "purchase" for e in prices.entries}


def test_price_matching_prefers_the_most_specific_entry():
    from harness.report.procurement import parse_prices

    prices = parse_prices({"machines": [
        {"match": {"gpu_name": "h100"}, "hourly": 1},
        {"match": {"gpu_name": "H100", "backend": "cuda"}, "hourly": 2},
        {"match": {"cpu_model": "cpu b"}, "hourly": 3},
    ]})
    row = {"machine_id": "x", "hostname": "gpu-box", "backend": "cuda", "cpu_model": "Synthetic CPU B @ 2.0GHz",
           "gpus": ["NVIDIA H100 80GB HBM3"], "device": None}
    assert prices.lookup(row).hourly == 2
    assert prices.lookup(dict(row, backend="cpu")).hourly == 1
    assert prices.lookup(dict(row, gpus=[], backend="cpu")).hourly == 3
    assert prices.lookup(dict(row, gpus=[], cpu_model="other")) is None


# --------------------------------------------------------------------------- figures

def test_figures_are_plotly_figures_with_data(full):
    import plotly.graph_objects as go

    figs = full.figures
    assert list(figs) == ["latency", "throughput", "pareto", "speedup", "cdf", "roofline"]
    for name, fig in figs.items():
        assert isinstance(fig, go.Figure), name
        assert len(fig.data) > 0, name
        assert full.charts.captions[name], name
    # latency bars carry CI error bars; FPGA traces are labelled as estimates
    bars = figs["latency"].data
    assert any(any(v == v and v > 0 for v in b.error_y.array) for b in bars)
    assert any("estimated" in b.name for b in bars)
    # the CDF never draws a simulated case (its samples are emulation time)
    assert not any("fpga" in t.name for t in figs["cdf"].data)


def test_cdf_case_selection(records):
    from harness import report

    figs = report.figures(records, cdf_cases=["mlp-digits/int8-static/cpu-*/b8"])
    assert [t.name for t in figs["cdf"].data] == ["mlp-digits/int8-static/cpu-onnxruntime/single-stream/b8 @ host-a"]
    with pytest.raises(BenchError, match="matches no case"):
        report.figures(records, cdf_cases=["no-such-case"])


def test_export_figures_without_kaleido_is_a_clear_error(full, tmp_path, monkeypatch):
    import importlib.util

    from harness import report

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kaleido" else real(name, *a))
    with pytest.raises(BenchError, match="pip install kaleido"):
        report.export_figures(full.figures, tmp_path, "png")
    with pytest.raises(BenchError, match="png or svg"):
        report.export_figures(full.figures, tmp_path, "gif")


def test_cli_images_without_kaleido_keeps_the_report(records, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kaleido" else real(name, *a))
    results = write_records(records[:1], tmp_path / "results")
    rc = main(["report", str(results), "--out", str(tmp_path / "r.html"), "--images", "png"])
    out = capsys.readouterr()
    assert rc == 2 and "pip install kaleido" in out.err
    assert out.out.split() == [str(tmp_path / "r.html")]


# --------------------------------------------------------------------------- HTML

def test_html_is_self_contained_with_one_root_per_chart(full, tmp_path):
    from harness import report

    (path,) = report.write(full, tmp_path / "r.html", ["html"])
    html = path.read_text(encoding="utf-8")
    assert "<script src" not in html and "<link" not in html  # nothing to fetch: opens offline
    assert "cdn.plot.ly" not in html.split("</head>", 1)[1]
    assert "plotly.js v" in html  # the library itself is embedded
    assert html.count("<script") == 3  # plotly.js, table sorting, the charts
    for name in full.figures:
        assert html.count(f'id="chart-{name}"') == 1
    assert 'id="table-cases"' in html and 'id="table-problems"' in html and 'id="table-procurement"' in html
    assert "Key findings" in html and "gpu-box" in html and "quant" in html and "2026-11-02 09:00 UTC" in html


def test_user_strings_are_escaped_in_html_and_markdown(tmp_path):
    from harness import report

    evil = "<script>alert(1)</script>"
    case = make_case(f"m{evil}", "fp32|x", reason=None)
    bad = make_case(f"m{evil}", "int8", status="failed", reason=f"boom {evil} & more")
    rec = _record([case, bad], env=environment(hostname="h<img src=x onerror=alert(2)>"), hours=0,
                  run_id="20261102T090000Z-000000ee")
    r = report.build([rec], title=f"T {evil}")
    paths = report.write(r, tmp_path / "evil", ["html", "md"])
    html = paths[0].read_text(encoding="utf-8")
    body = html.split("</head>", 1)[1]
    assert evil not in body and "<img src=x" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    md = paths[1].read_text(encoding="utf-8")
    assert evil not in md and "fp32\\|x" in md


# --------------------------------------------------------------------------- CLI

def test_cli_writes_every_format_and_prints_paths(records, prices_file, tmp_path, capsys):
    results = write_records(records, tmp_path / "results")
    rc = main(["report", str(results), "--out", str(tmp_path / "out" / "r.html"), "--format", "html,md,csv",
               "--prices", str(prices_file)])
    assert rc == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == ["r.html", "r.md", "r.csv", "r-procurement.csv"]
    assert all(Path(p).exists() for p in printed)
    import pandas as pd

    assert len(pd.read_csv(tmp_path / "out" / "r.csv")) == sum(len(r["cases"]) for r in records)


def test_cli_default_output_is_a_timestamped_html_in_reports(records, tmp_path, monkeypatch, capsys):
    write_records(records[:1], tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 0
    (printed,) = capsys.readouterr().out.split()
    assert printed.startswith("reports/report-") and printed.endswith(".html")
    assert (tmp_path / printed).exists()


def _bad(args, capsys) -> str:
    rc = main(["report", *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_cli_bad_inputs_are_one_line_exit_2(records, tmp_path, capsys):
    results = write_records(records, tmp_path / "results")
    assert "no such file or directory" in _bad([str(tmp_path / "missing.json")], capsys)
    (tmp_path / "empty").mkdir()
    assert "no run records found" in _bad([str(tmp_path / "empty")], capsys)
    future = dict(records[0], schema_version=99)
    (tmp_path / "future.json").write_text(json.dumps(future), encoding="utf-8")
    assert "schema version 99 is not supported" in _bad([str(tmp_path / "future.json")], capsys)
    (tmp_path / "junk.json").write_text("{not json", encoding="utf-8")
    assert "not valid JSON" in _bad([str(tmp_path / "junk.json")], capsys)
    prices = tmp_path / "bad-prices.yaml"
    prices.write_text("machines:\n  - match: {hostname: a}\n", encoding="utf-8")
    assert "needs a price" in _bad([str(results), "--prices", str(prices)], capsys)
    assert "prices file not found" in _bad([str(results), "--prices", str(tmp_path / "nope.yaml")], capsys)
    assert "unknown format pdf" in _bad([str(results), "--format", "html,pdf"], capsys)
    assert "baseline variant 'fp64'" in _bad([str(results), "--baseline", "fp64"], capsys)


def test_importing_the_reporter_stays_light():
    code = ("import sys, harness.report, harness.cli.report; "
            "print(' '.join(m for m in ('plotly', 'pandas', 'torch', 'onnxruntime', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


def test_history_adds_trend_charts(tmp_path):
    import datetime as dt

    from harness.store.records import write_record
    from tests.synth import make_case, make_record

    t0 = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)
    for night in range(8):
        median = 100_000 if night < 4 else 130_000  # a lasting 30 % step after night 4
        write_record(make_record([make_case(median_ns=median, seed=night)], started=t0 + dt.timedelta(days=night)),
                     tmp_path)
    from harness.cli import main

    out = tmp_path / "rep.html"
    assert main(["report", str(tmp_path), "--out", str(out), "--history"]) == 0
    html = out.read_text()
    assert 'id="trends"' in html and 'id="chart-trend-0"' in html
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "plain.html")]) == 0
    assert 'id="trends"' not in (tmp_path / "plain.html").read_text()
