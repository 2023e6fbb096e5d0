"""Bring your own model: ``bench run --model FILE.onnx | package.module:factory`` through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main

FAST = ["--min-time", "0.05", "--max-time", "0.5", "--min-iterations", "20", "--target-ci", "0.05", "-q"]


def _onnx(path: Path, inputs, nodes, outputs, inits=()) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mlp_onnx(path: Path, batch="batch", features=16) -> Path:
    """y = x W + b, W 16x5: 80 MACs, 85 parameters."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((16, 5)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "B")
    return _onnx(path, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
                 [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])], [w, b])


def two_input_onnx(path: Path) -> Path:
    """Two int64 inputs (ids, mask) -> float (batch, 3)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(24, dtype=np.float32).reshape(8, 3), "W")
    return _onnx(path, [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 8]),
                        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", 8])],
                 [helper.make_node("Add", ["ids", "attention_mask"], ["s"]),
                  helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
                  helper.make_node("MatMul", ["f", "W"], ["y"])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w])


def _record(out: Path) -> dict:
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def _ok(rc: int, record: dict) -> None:
    statuses = [c["status"] for c in record["cases"]]
    assert "failed" not in statuses, [c.get("reason") for c in record["cases"]]
    # exit 0 iff every case is ok; a loaded machine may mark a case invalid (exit 1)
    assert rc == (1 if "invalid" in statuses else 0)


def test_onnx_file_end_to_end(tmp_path, monkeypatch):
    from harness.store.records import validation_errors

    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    model = mlp_onnx(tmp_path / "mine.onnx")
    out = tmp_path / "res"
    rc = main(["run", "--model", str(model), "--input-shape", "x=4x16", "--out", str(out), *FAST])
    record = _record(out)
    _ok(rc, record)
    assert validation_errors(record) == []
    assert record["suite"]["name"] == "user-models" and record["suite"]["path"] is None
    assert {(c["model"], c["scenario"], c["batch"]) for c in record["cases"]} == {
        ("mine.onnx", "single-stream", 1), ("mine.onnx", "offline", 4)}
    for c in record["cases"]:
        assert c["complexity"]["params"] == 85 and c["complexity"]["macs"] == 80
        acc = c["accuracy"]
        assert acc["metric"] == "top1_agreement" and acc["value"] == 1.0 and acc["passed"] is True
        assert acc["fidelity"]["max_abs_diff"] < 1e-5 and acc["n_samples"] == 32
        assert Path(c["artifact"]["dir"]).parent == cache / "byo-mine.onnx"
        assert c["latency_ns"]["p50"] > 0


def test_user_model_with_a_suite(tmp_path, monkeypatch):
    """--suite gives the settings (smoke: offline at batch 8); none of its own models run."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    model = mlp_onnx(tmp_path / "m.onnx")
    out = tmp_path / "res"
    rc = main(["run", "--suite", "smoke", "--model", str(model), "--out", str(out), *FAST])
    record = _record(out)
    _ok(rc, record)
    assert record["suite"]["name"] == "smoke"
    assert {(c["model"], c["scenario"], c["batch"]) for c in record["cases"]} == {
        ("m.onnx", "single-stream", 1), ("m.onnx", "offline", 8)}


def test_torch_factory_both_runtimes(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    ref = "suites.zoo.jets:make_jet_mlp"
    for runtime in ("onnxruntime", "torch"):
        out = tmp_path / runtime
        rc = main(["run", "--model", ref, "--input-shape", "1x16", "--runtime", runtime,
                   "--scenario", "single-stream", "--out", str(out), *FAST])
        record = _record(out)
        _ok(rc, record)
        (case,) = record["cases"]
        assert case["model"] == ref and case["runtime"] == runtime
        assert case["complexity"]["params"] == 4389
        assert case["accuracy"]["value"] == 1.0 if runtime == "onnxruntime" else case["accuracy"]["value"] >= 0.99


def test_artifact_cache_keys(tmp_path):
    from suites.zoo import byo

    model = mlp_onnx(tmp_path / "m.onnx")
    (a,) = byo.resolve([str(model)], ["x=1x16"], root=tmp_path)
    (b,) = byo.resolve([str(model)], [], root=tmp_path)  # the declared shape is complete: same artifact
    assert a.built and not b.built and a.artifact.key == b.artifact.key
    assert a.fixed_batch is None and a.artifact.inputs == [{"name": "x", "dtype": "float32", "shape": [None, 16]}]
    ev = a.artifact.eval_data()
    assert ev["labels"] is None and ev["x"]["x"].shape == (32, 16) and ev["reference"].shape == (32, 5)
    mlp_onnx(model, features=16)  # same bytes again
    assert not byo.resolve([str(model)], [], root=tmp_path)[0].built
    import onnx

    m = onnx.load(str(model))
    m.graph.initializer[0].float_data[:] = []
    m.graph.initializer[0].raw_data = np.ones((16, 5), np.float32).tobytes()
    onnx.save(m, str(model))  # other weights: another key
    (c,) = byo.resolve([str(model)], [], root=tmp_path)
    assert c.built and c.artifact.key != a.artifact.key


def test_fixed_batch_and_multi_input(tmp_path):
    from harness.errors import BenchError
    from harness.plan.suite import plan_user_models
    from suites.zoo import byo

    fixed = mlp_onnx(tmp_path / "fixed.onnx", batch=1)
    (m,) = byo.resolve([str(fixed)], [], root=tmp_path)
    assert m.fixed_batch == 1 and m.artifact.inputs[0]["shape"] == [1, 16]
    cases = plan_user_models([m], backend="cpu", runtime="onnxruntime", scenarios=["single-stream", "offline"],
                             batches=None, suite_batches=[8, 32])
    assert [(c.scenario, c.batch) for c in cases] == [("single-stream", 1), ("offline", 1)]
    with pytest.raises(BenchError, match="fixed batch size of 1"):
        plan_user_models([m], backend="cpu", runtime="onnxruntime", scenarios=["offline"], batches=[4])

    two = two_input_onnx(tmp_path / "two.onnx")
    (t,) = byo.resolve([str(two)], [], root=tmp_path)
    ev = t.artifact.eval_data()
    assert ev["x"]["ids"].dtype == np.int64 and set(np.unique(ev["x"]["ids"])) <= {0, 1}
    assert (ev["x"]["attention_mask"] == 1).all()
    assert t.artifact.meta["metric"] == "top1_agreement" and ev["reference"].shape == (32, 3)


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = mlp_onnx(tmp_path / "good.onnx").read_bytes()
    files = {
        "truncated": good[: len(good) // 2],
        "text": b"this is not an onnx model\n",
        "empty": b"",
        "random": np.random.default_rng(0).bytes(200),
    }
    out = {}
    for k, data in files.items():
        p = tmp_path / f"{k}.onnx"
        p.write_bytes(data)
        out[k] = p
    return out


@pytest.mark.parametrize("case,args,message", [
    ("truncated", [], "not a valid ONNX model"),
    ("text", [], "not a valid ONNX model"),
    ("empty", [], "empty file"),
    ("random", [], "not a valid ONNX model"),
    ("missing", [], "no such file"),
    ("dynamic", [], "dynamic dims"),
    ("dynamic", ["--input-shape", "x=1x16x3"], "rank 3"),
    ("good", ["--input-shape", "nope=1x16"], "matches no input"),
    ("good", ["--input-shape", "x=1x15"], "fixes it to 16"),
    ("good", ["--input-shape", "x=1xfoo"], "bad input shape"),
    ("two", ["--input-shape", "1x8"], "without NAME="),
    ("torch-no-shape", [], "needs --input-shape"),
    ("torch-no-module", ["--input-shape", "1x4"], "no module named"),
    ("torch-not-module", ["--input-shape", "1x4"], "not a torch.nn.Module"),
    ("zoo-without-suite", [], "needs --suite"),
    ("shape-without-model", ["--suite", "smoke", "--input-shape", "1x4"], "for your own models"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, case, args, message):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    bad = _bad_files(tmp_path)
    models = {
        "missing": str(tmp_path / "nowhere.onnx"),
        "dynamic": str(mlp_onnx(tmp_path / "dyn.onnx", features="n")),
        "good": str(tmp_path / "good.onnx"),
        "two": str(two_input_onnx(tmp_path / "two.onnx")),
        "torch-no-shape": "suites.zoo.jets:make_jet_mlp",
        "torch-no-module": "no_such_pkg_bench.models:make",
        "torch-not-module": "suites.zoo.jets:load_jets_split",
        "zoo-without-suite": "mlp-digits",
        "shape-without-model": None,
        **{k: str(v) for k, v in bad.items()},
    }
    argv = ["run", "--out", str(tmp_path / "res"), "-q", *args]
    if models[case]:
        argv += ["--model", models[case]]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("bench: error:"), err
    assert message.lower() in err.lower(), err
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").glob("*.json"))


@pytest.mark.slow
def test_zoo_and_user_models_coexist(tmp_path, cached):
    model = mlp_onnx(tmp_path / "mine.onnx")
    out = tmp_path / "res"
    rc = main(["run", "--suite", "smoke", "--model", "mlp-digits", "--model", str(model), "--out", str(out), *FAST])
    record = _record(out)
    _ok(rc, record)
    assert {(c["model"], c["batch"]) for c in record["cases"]} == {
        ("mlp-digits", 1), ("mlp-digits", 8), ("mine.onnx", 1), ("mine.onnx", 8)}
    by_model = {c["model"]: c for c in record["cases"]}
    assert by_model["mlp-digits"]["accuracy"]["metric"] == "top1"
    assert by_model["mine.onnx"]["accuracy"]["metric"] == "top1_agreement"
