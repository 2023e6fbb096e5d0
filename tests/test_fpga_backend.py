"""The fpga backend inside the harness: options, a case through the worker's code path, the record
(estimates apart from the emulator's wall time), the table, and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.base import UnsupportedCase
from backends.fpga.backend import DesignDoesNotFit, FPGABackend, FPGAOptionError, parse_options
from tests.test_fpga_graphs import mlp, ort_run, with_op

REPO = Path(__file__).resolve().parents[1]


def make_artifact(d: Path, model, n=200, n_in=16, precision="fp32", seed=0):
    """A minimal artifact directory (meta.json, model.onnx, eval.npz) as harness.plan.artifacts reads it."""
    import onnx

    from harness.plan.artifacts import Artifact

    d.mkdir(parents=True, exist_ok=True)
    onnx.save(model, d / "model.onnx")
    x = np.random.default_rng(seed).normal(0, 1, (n, n_in)).astype(np.float32)
    ref = ort_run(model, x)
    labels = ref.argmax(1)
    np.savez(d / "eval.npz", **{"x:x": x, "labels": labels, "reference": ref})
    meta = {"model": "tiny-mlp", "variant": "fp32", "key": "0123456789abcdef", "onnx": "model.onnx",
            "inputs": [{"name": "x", "shape": [None, n_in], "dtype": "float32"}],
            "outputs": [{"name": "y", "shape": [None, ref.shape[1]], "dtype": "float32"}],
            "precision": precision, "task": "classification", "reference": {"metric": "top1", "value": 1.0}}
    (d / "meta.json").write_text(json.dumps(meta))
    return Artifact.load(d)


def test_parse_options():
    o = parse_options({})
    assert o["part"]["name"] == "xcu250" and o["precision"].name == "ap_fixed<16,6>" and o["fit"] is True
    o = parse_options({"part": "ZCU104", "precision": "ap_fixed<8,3,AP_RND,AP_SAT>", "reuse_factor": "4"})
    assert o["part"]["name"] == "xczu7ev" and o["reuse_factor"] == 4 and o["fit"] is False
    assert parse_options({"fit": "0"})["reuse_factor"] == 1
    assert o["strategy"] == "auto" and parse_options({"strategy": "Resource"})["strategy"] == "resource"
    for bad, msg in [({"part": "xc9z999"}, "unknown FPGA part"), ({"precision": "ap_fixed<16>"}, "impossible precision"),
                     ({"precision": "ap_fixed<40,10>"}, "at most 32-bit"), ({"reuse_factor": "0"}, ">= 1"),
                     ({"reuse_factor": "2", "fit": "1"}, "not both"), ({"colour": "red"}, "unknown fpga option"),
                     ({"accum_precision": "ap_fixed<4,9,AP_BAD>"}, "impossible precision"),
                     ({"strategy": "fastest"}, "unknown strategy")]:
        with pytest.raises(FPGAOptionError, match=msg):
            parse_options(bad)


def test_prepare_run_and_estimates(tmp_path):
    art = make_artifact(tmp_path / "a", mlp([16, 32, 5], seed=1))
    b = FPGABackend()
    assert b.simulated and b.availability().ok and b.default_runtime == "simulator"
    s = b.prepare(art, precision="fp32", batch=4, threads=1, runtime="simulator", options={"part": "xczu7ev"})
    x = art.eval_data()["x"]["x"][:4]
    y = s.run({"x": x})[0]
    assert y.shape == (4, 5) and np.abs(y - ort_run(mlp([16, 32, 5], seed=1), x)).max() < 0.05
    e = s.timings()["estimates"]
    assert e["estimated"] and e["part"] == "xczu7ev" and e["fits"] and e["batch"] == 4
    for k in ("latency_s", "ii_cycles", "latency_cycles", "throughput_inferences_per_s", "clock_mhz", "per_layer",
              "reuse_factors"):
        assert k in e
    assert e["latency_s"] == pytest.approx(e["latency_cycles"] / 200e6)
    assert e["batch_latency_cycles"] == e["latency_cycles"] + 3 * e["ii_cycles"]
    assert set(e["resources"]) >= {"dsp", "lut", "ff", "bram36", "uram", "percent_of_part"}
    assert e["identity"] == {"device": "xczu7ev (simulated, 200 MHz, fit)", "precision": "ap_fixed<16,6>"}
    assert "not FPGA latency" in s.info["timing_is"]


def test_prepare_refusals(tmp_path):
    b = FPGABackend()
    art = make_artifact(tmp_path / "a", mlp([16, 32, 5]))
    with pytest.raises(UnsupportedCase, match="fp16"):
        b.prepare(art, precision="fp16", batch=1, threads=1, runtime="simulator")
    with pytest.raises(DesignDoesNotFit, match="does not fit xc7z020.*DSP") as err:
        b.prepare(make_artifact(tmp_path / "big", mlp([256, 256, 5]), n_in=256), precision="fp32", batch=1, threads=1,
                  runtime="simulator", options={"part": "xc7z020", "reuse_factor": "1"})
    e = err.value.estimates  # the full estimate travels with the refusal
    assert e["fits"] is False and any(p.startswith("DSP") for p in e["fit_problems"])
    assert e["resources"]["percent_of_part"]["dsp"] > 100 and e["ii_cycles"] == 1 and e["latency_ns"] > 0
    with pytest.raises(UnsupportedCase, match="Softsign"):
        b.prepare(make_artifact(tmp_path / "odd", with_op("Softsign"), n_in=4), precision="fp32", batch=1,
                  threads=1, runtime="simulator")
    with pytest.raises(UnsupportedCase, match="too long"):
        b.prepare(art, precision="fp32", batch=1, threads=1, runtime="simulator",
                  options={"max_emulation_macs": "10"})


def test_case_record_and_table(tmp_path, monkeypatch):
    """run_case (the worker's target) in-process, then the runner's carry of the estimates and the
    table: the table shows the estimated latency, never the emulator's wall time."""
    from harness.plan import plugins
    from harness.run.case import run_case
    from harness.run.runner import _apply_report, _carry_estimates
    from harness.cli.table import run_table

    real = plugins.entries()
    monkeypatch.setattr(plugins, "entries", lambda: {**real, "fpga": plugins.BackendEntry(
        "fpga", "backends.fpga:FPGABackend", None)})
    art = make_artifact(tmp_path / "a", mlp([16, 32, 5], seed=2))
    payload = {"case": {"model": "tiny-mlp", "variant": "fp32", "backend": "fpga", "runtime": "simulator",
                        "precision": "fp32", "batch": 1, "scenario": "single-stream"},
               "artifact_dir": str(art.dir), "threads": 1, "gate": 0.9, "metric": None,
               "options": {"part": "xcu250", "precision": "ap_fixed<16,6>"},
               "settings": {"min_time_s": 0.05, "max_time_s": 0.3, "min_iterations": 10, "target_ci": 0.5,
                            "warmup_min_iterations": 2, "warmup_min_time_s": 0.0, "warmup_max_time_s": 0.1}}
    res = run_case(payload)
    assert res["accuracy"]["value"] >= 0.95  # emulated outputs against the fp32 labels
    assert "estimates" in res["report"] and res["report"]["estimates"]
    _apply_report(res, threads=1, peak_rss_bytes=None)
    _carry_estimates(res)
    assert "estimates" in res and not (res["timings"] or {}).get("estimates")
    assert res["device"].startswith("xcu250 (simulated") and res["precision"] == "ap_fixed<16,6>"
    assert res["status"] == "ok" or res["validity"]["reasons"] == ["accuracy_gate_failed"]
    emu_p50 = res["latency_ns"]["p50"]
    case = {"model": "tiny-mlp", "variant": "fp32", "backend": "fpga", "runtime": "simulator", "batch": 1,
            "scenario": "single-stream", "case_id": "c", "simulated": True, **res}
    record = {"run_id": "r", "suite": {"name": "s"}, "cases": [case]}
    table, notes = run_table(record, width=200)
    from rich.console import Console

    con = Console(width=250, record=True)
    con.print(table)
    text = con.export_text()
    est_ns = res["estimates"]["latency_ns"]
    assert f"{est_ns:.3g} ns*" in text
    assert f"{emu_p50 / 1e3:.3g} µs" not in text and f"{emu_p50 / 1e6:.3g} ms" not in text
    assert any("estimated by a performance model" in n for n in notes)


def test_over_budget_case_keeps_its_estimate(tmp_path, monkeypatch):
    """A design that does not fit: run_case returns status does_not_fit with the reason, the runner
    moves the full estimate (fits: false, the reasons, resources and % of the part, II, latency)
    into the case, and the case validates against the record schema."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    from harness.plan import plugins
    from harness.run.case import run_case
    from harness.run.runner import _apply_report, _carry_estimates, exit_code

    real = plugins.entries()
    monkeypatch.setattr(plugins, "entries", lambda: {**real, "fpga": plugins.BackendEntry(
        "fpga", "backends.fpga:FPGABackend", None)})
    art = make_artifact(tmp_path / "big", mlp([256, 256, 5]), n_in=256)
    payload = {"case": {"model": "tiny-mlp", "variant": "fp32", "backend": "fpga", "runtime": "simulator",
                        "precision": "fp32", "batch": 1, "scenario": "single-stream"},
               "artifact_dir": str(art.dir), "threads": 1, "gate": 0.9, "metric": None,
               "options": {"part": "xc7z020", "reuse_factor": "1"},
               "settings": {"min_time_s": 0.05, "max_time_s": 0.3, "min_iterations": 10, "target_ci": 0.5,
                            "warmup_min_iterations": 2, "warmup_min_time_s": 0.0, "warmup_max_time_s": 0.1}}
    res = run_case(payload)
    assert res["status"] == "does_not_fit" and "does not fit xc7z020" in res["reason"]
    _apply_report(res, threads=1, peak_rss_bytes=None)
    _carry_estimates(res)
    e = res["estimates"]
    assert e["fits"] is False and e["fit_problems"] and e["resources"]["percent_of_part"]["dsp"] > 100
    assert e["ii_cycles"] >= 1 and e["latency_cycles"] >= 1 and e["resources"]["lut"] > 0
    assert res["device"].startswith("xc7z020 (simulated")
    case = {"case_id": "c", "key": "0123456789abcdef", "key_fields": {}, "model": "tiny-mlp", "variant": "fp32",
            "backend": "fpga", "runtime": "simulator", "batch": 1, "scenario": "single-stream", "simulated": True,
            **res}
    schema = json.loads((REPO / "harness" / "store" / "schema" / "run-v1.schema.json").read_text())
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    Draft202012Validator({"$ref": schema["$id"] + "#/$defs/case"}, registry=registry).validate(case)
    assert exit_code({"cases": [case]}) == 1  # as when it was a failed case


@pytest.mark.slow
def test_cli_smoke_suite_on_fpga(tmp_path, bench_cache):
    """`bench run --suite smoke --backend fpga --part xcu250` end to end (builds mlp-digits), and the
    one-line exit-2 errors. Registers the entry point through a throw-away dist-info when the
    installed package does not list it yet."""
    ep = tmp_path / "ep" / "bench_fpga_test-0.0.dist-info"
    ep.mkdir(parents=True)
    (ep / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-fpga-test\nVersion: 0.0\n")
    (ep / "entry_points.txt").write_text("[bench.backends]\nfpga = backends.fpga:FPGABackend\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "ep"), str(REPO)]),
           "BENCH_CACHE": str(bench_cache)}  # the session's shared artifact cache (conftest)
    bench = [sys.executable, "-m", "harness"]
    bad = subprocess.run(bench + ["run", "--suite", "smoke", "--backend", "fpga", "--part", "nope",
                                  "--out", str(tmp_path)], env=env, capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "unknown FPGA part 'nope'" in bad.stderr
    bad = subprocess.run(bench + ["run", "--suite", "smoke", "--backend", "fpga", "--precision", "ap_fixed<0,1>",
                                  "--out", str(tmp_path)], env=env, capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "impossible precision" in bad.stderr
    r = subprocess.run(bench + ["run", "--suite", "smoke", "--backend", "fpga", "--part", "xcu250", "-q",
                                "--out", str(tmp_path)], env=env, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads(next(tmp_path.glob("*.json")).read_text())
    for c in rec["cases"]:
        assert c["simulated"] and c["status"] == "ok" and c["estimates"]["fits"]
        assert c["accuracy"]["value"] > 0.9 and c["precision"] == "ap_fixed<16,6>"
    assert "estimated by a performance model" in r.stdout
