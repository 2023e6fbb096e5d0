"""The TensorFlow runtime (``--backend cpu --runtime tensorflow``): the ONNX->TF interpreter
against onnxruntime / the ONNX reference, the session, users' own TF models, and the CLI.

Stated tolerances (the contract of :mod:`backends.tf_runtime`):
* fp32 graphs: ``|tf - onnxruntime| <= 1e-5 + 1e-5 * |onnxruntime|`` element-wise (measured:
  <= 6e-8 on these models);
* int8 dynamic (integer ops): equal to the ONNX reference evaluator to 1e-5 (the int32
  arithmetic is exact; onnxruntime's own u8s8 kernels deviate on AVX2-only CPUs, see
  ``test_int8_dynamic_matches_onnx_reference``);
* int8 static QDQ: equal to onnxruntime running the same QDQ nodes unfused, to 1e-6 per
  tensor and within one output quantization step (1/255) per channel;
* fp16 graphs: within 2e-3 (relative to the output range) of onnxruntime's fp16 run.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from backends.base import UnsupportedCase

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                reason="tensorflow is not installed (pip install tensorflow-cpu)")

FP32_ATOL = 1e-5
FP32_RTOL = 1e-5


@pytest.fixture(scope="module")
def tf():
    from backends import tf_runtime

    return tf_runtime.import_tf(2)


def _export(module, x, path: Path) -> Path:
    import torch

    module.eval()
    torch.onnx.export(module, (torch.from_numpy(x[:1]),), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "b"}, "output": {0: "b"}}, opset_version=17, dynamo=False)
    return path


def _models():
    import torch
    import torch.nn as nn

    torch.manual_seed(0)

    class Cnn(nn.Module):
        """Conv (strided, depthwise, 1x1), BatchNorm, ReLU/ReLU6, max/avg pooling with ceil mode and
        padding, residual Add, global pooling, Flatten, Gemm, Softmax: the zoo's vision op set."""

        def __init__(self):
            super().__init__()
            self.bn0 = nn.BatchNorm2d(3)
            self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.c3 = nn.Conv2d(8, 16, 1)
            self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
            self.avg = nn.AvgPool2d(3, 2, padding=1, count_include_pad=False, ceil_mode=True)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            x = self.bn0(x)
            y = torch.relu(self.c1(x))
            y = y + nn.functional.relu6(self.c2(y))
            y = self.c3(y)
            y = self.pool(y) + self.avg(y)
            y = nn.functional.adaptive_avg_pool2d(y, 1).flatten(1)
            return torch.softmax(self.fc(y), -1)

    class Tx(nn.Module):
        """Embedding (Gather), a transformer encoder layer (MatMul, Softmax, LayerNorm, GELU via Erf,
        and the Shape/Gather/Concat/Reshape arithmetic the exporter emits), mean pooling."""

        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 32)
            self.pos = nn.Parameter(torch.randn(1, 12, 32))
            self.enc = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, activation="gelu", dropout=0.0)
            self.norm = nn.LayerNorm(32)
            self.head = nn.Linear(32, 3)

        def forward(self, ids):
            h = self.enc(self.emb(ids) + self.pos)
            return self.head(self.norm(h).mean(1))

    mlp = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    return mlp, Cnn(), Tx()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfgraphs")
    rng = np.random.default_rng(0)
    mlp, cnn, tx = _models()
    xs = {"mlp": rng.standard_normal((8, 64)).astype(np.float32),
          "cnn": rng.standard_normal((4, 3, 17, 17)).astype(np.float32),
          "tx": rng.integers(0, 50, (4, 12)).astype(np.int64)}
    paths = {name: _export(m, xs[name], d / f"{name}.onnx") for name, m in (("mlp", mlp), ("cnn", cnn), ("tx", tx))}
    return SimpleNamespace(dir=d, x=xs, path=paths, rng=rng)


def _ort(path, x, *, optimize=True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _tf_run(tf, path, x, *, precision="fp32", jit=True):
    from backends import tf_runtime

    lm = tf_runtime.load_onnx(path, tf=tf, precision=precision, jit=jit)
    return tf.function(lm.fn, jit_compile=jit, autograph=False)(x)[0].numpy(), lm


@pytest.mark.parametrize("name", ["mlp", "cnn", pytest.param("tx", marks=pytest.mark.slow)])
def test_fp32_matches_onnxruntime(tf, graphs, name):
    x = graphs.x[name]
    ref = _ort(graphs.path[name], x)
    y, lm = _tf_run(tf, graphs.path[name], x)
    np.testing.assert_allclose(y, ref, atol=FP32_ATOL, rtol=FP32_RTOL)
    assert lm.info["model_source"] == "onnx" and lm.info["quantization"] is None


@pytest.mark.slow
def test_without_xla_channels_last_path_matches(tf, graphs):
    """``jit_compile=0``: TF's CPU kernels need channels-last; the transposes must be exact too."""
    x = graphs.x["cnn"]
    y, _ = _tf_run(tf, graphs.path["cnn"], x, jit=False)
    np.testing.assert_allclose(y, _ort(graphs.path["cnn"], x), atol=FP32_ATOL, rtol=FP32_RTOL)


@pytest.fixture(scope="module")
def quantized(graphs):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    d = graphs.dir
    rng = np.random.default_rng(1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": rng.standard_normal((4, 3, 17, 17)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    out = {}
    for wt in ("QInt8", "QUInt8"):
        p = d / f"cnn-dyn-{wt}.onnx"
        quantize_dynamic(str(graphs.path["cnn"]), str(p), weight_type=getattr(QuantType, wt))
        out[f"dyn-{wt}"] = p
    for pc in (False, True):
        p = d / f"cnn-qdq-pc{int(pc)}.onnx"
        quantize_static(str(graphs.path["cnn"]), str(p), Reader(), quant_format=QuantFormat.QDQ, per_channel=pc,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        out[f"qdq-pc{int(pc)}"] = p
    p = d / "cnn-qop-u8.onnx"
    quantize_static(str(graphs.path["cnn"]), str(p), Reader(), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8)
    out["qop-u8"] = p
    return out


@pytest.mark.parametrize("wt", ["QInt8", pytest.param("QUInt8", marks=pytest.mark.slow)])
def test_int8_dynamic_matches_onnx_reference(tf, graphs, quantized, wt):
    """DynamicQuantizeLinear + ConvInteger/MatMulInteger in int32: exact against ONNX's reference
    evaluator. (onnxruntime's u8s8 kernels saturate on AVX2-only CPUs -- its documented
    limitation -- so onnxruntime itself is not the reference for int8 weights.)"""
    from onnx.reference import ReferenceEvaluator

    x = graphs.x["cnn"]
    p = quantized[f"dyn-{wt}"]
    ref = ReferenceEvaluator(str(p)).run(None, {"input": x})[0]
    y, lm = _tf_run(tf, p, x, precision="int8")
    np.testing.assert_allclose(y, ref, atol=1e-5)
    assert lm.info["quantization"]["mode"] == "integer"
    assert "ConvInteger" in lm.info["quantization"]["ops"]


@pytest.mark.parametrize("variant,atol", [("qdq-pc0", 1e-6),
                                          pytest.param("qdq-pc1", 1 / 255 + 1e-6, marks=pytest.mark.slow)])
def test_int8_qdq_matches_onnxruntime_unfused(tf, graphs, quantized, variant, atol):
    x = graphs.x["cnn"]
    p = quantized[variant]
    ref = _ort(p, x, optimize=False)  # the QDQ nodes as written: dequantize -> float op -> quantize
    y, lm = _tf_run(tf, p, x, precision="int8")
    np.testing.assert_allclose(y, ref, atol=atol)
    assert lm.info["quantization"]["mode"] == "qdq"
    assert "QDQ" in lm.info["quantization"]["note"]
    # and within a few output steps of onnxruntime's fused int8 kernels
    assert np.abs(y - _ort(p, x)).max() <= 10 / 255


@pytest.mark.slow
def test_int8_qoperator_contrib_ops_match_onnxruntime(tf, graphs, quantized):
    x = graphs.x["cnn"]
    p = quantized["qop-u8"]
    y, lm = _tf_run(tf, p, x, precision="int8")
    ref = _ort(p, x)
    assert np.abs(y.astype(np.float64) - ref).max() <= 2 / 255 + 1e-6
    assert any(op.startswith("com.microsoft.QGemm") for op in lm.info["onnx_ops"])


@pytest.mark.slow
def test_fp16_graph_matches_onnxruntime_fp16(tf, graphs):
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    p = graphs.dir / "cnn-fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(graphs.path["cnn"])), keep_io_types=False), str(p))
    x = graphs.x["cnn"].astype(np.float16)
    ref = _ort(p, x).astype(np.float32)
    y, lm = _tf_run(tf, p, x, precision="fp16")
    assert y.dtype == np.float32  # low-precision outputs come back as float32
    assert np.abs(y - ref).max() <= 2e-3 * max(1.0, np.abs(ref).max())
    assert lm.info["precision_mode"] == "graph is float16"


def test_bf16_policy_on_an_fp32_graph(tf, graphs):
    x = graphs.x["mlp"]
    y, lm = _tf_run(tf, graphs.path["mlp"], x, precision="bf16")
    ref = _ort(graphs.path["mlp"], x)
    assert lm.info["compute_dtype"] == "bfloat16" and "cast" in lm.info["precision_mode"]
    assert not np.allclose(y, ref, atol=1e-6)  # really computed in bfloat16 ...
    assert np.abs(y - ref).max() <= 0.05 * max(1.0, np.abs(ref).max())  # ... and close to fp32
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.85


def test_int8_case_on_a_float_graph_is_refused(tf, graphs):
    from backends import tf_runtime

    with pytest.raises(UnsupportedCase, match="no quantized ops"):
        tf_runtime.load_onnx(graphs.path["mlp"], tf=tf, precision="int8", jit=True)


def test_unknown_op_is_named(tf, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Hardmax", ["input"], ["output"])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 4])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", 4])])
    p = tmp_path / "hardmax.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    from backends import tf_runtime

    with pytest.raises(UnsupportedCase, match="Hardmax"):
        tf_runtime.load_onnx(p, tf=tf, precision="fp32", jit=True)


def _fake_artifact(path: Path, x: np.ndarray, **meta):
    return SimpleNamespace(onnx_path=path, dir=path.parent, name="m", variant="fp32",
                           inputs=[{"name": "input", "shape": [None, *x.shape[1:]], "dtype": str(x.dtype)}],
                           meta=dict(meta))


def test_session_records_threads_and_compiles_once(tf, graphs):
    from backends.cpu import CPUBackend

    x = graphs.x["mlp"]
    s = CPUBackend().prepare(_fake_artifact(graphs.path["mlp"], x), precision="fp32", batch=8, threads=2,
                             runtime="tensorflow")
    ref = _ort(graphs.path["mlp"], x)
    for _ in range(3):
        np.testing.assert_allclose(s.run({"input": x})[0], ref, atol=FP32_ATOL, rtol=FP32_RTOL)
    t = s.timings()
    assert t["tracing_count"] == 1 and t["calls"] == 3
    assert t["first_call"]["trace_ns"] > 0 and t["first_call"]["compile_and_run_ns"] > 0
    info = s.info
    assert info["jit_compile"] is True and info["device"] == "/CPU:0"
    assert info["intra_op_parallelism_threads"] == 2 and info["inter_op_parallelism_threads"] == 1
    assert info["threads_requested"] == [2, 1] and info["threads_note"] is None
    assert s.energy_meter() is not None  # RAPL, like the cpu backend's other runtimes
    json.dumps(info)  # recorded verbatim in the case
    s.close()
    assert s.timings()["tracing_count"] == 1  # the harness reads timings() after close()


def test_steps_per_execution_splits_the_batch_on_device(tf, graphs):
    from backends import tf_runtime

    x = graphs.x["mlp"]
    art = _fake_artifact(graphs.path["mlp"], x)
    s = tf_runtime.prepare(art, precision="fp32", batch=8, threads=2, options={"steps_per_execution": 4})
    np.testing.assert_allclose(s.run({"input": x})[0], _ort(graphs.path["mlp"], x), atol=FP32_ATOL, rtol=FP32_RTOL)
    assert s.info["steps_per_execution"] == 4
    with pytest.raises(UnsupportedCase, match="not divisible"):
        tf_runtime.prepare(art, precision="fp32", batch=6, threads=2, options={"steps_per_execution": 4})


@pytest.mark.slow
def test_users_savedmodel_runs_directly(tf, graphs, tmp_path):
    """A SavedModel (here: the converted graph exported) runs through ``--option tf_model=DIR``."""
    from backends import tf_runtime

    x = graphs.x["cnn"]
    sm = tf_runtime.export_saved_model(graphs.path["cnn"], tmp_path / "sm")
    art = _fake_artifact(graphs.path["cnn"], x)
    s = tf_runtime.prepare(art, precision="fp32", batch=4, threads=2, options={"tf_model": str(sm)})
    np.testing.assert_allclose(s.run({"input": x})[0], _ort(graphs.path["cnn"], x), atol=FP32_ATOL, rtol=FP32_RTOL)
    assert s.info["model_source"] == "saved_model"


def test_users_keras_model_runs_directly(tf, tmp_path):
    import keras

    from backends import tf_runtime

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    p = tmp_path / "user.keras"
    model.save(p)
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    art = SimpleNamespace(onnx_path=None, dir=tmp_path, name="user", variant="fp32",
                          inputs=[{"name": "x", "shape": [None, 6], "dtype": "float32"}], meta={})
    s = tf_runtime.prepare(art, precision="fp32", batch=4, threads=2, options={"tf_model": str(p)})
    np.testing.assert_allclose(s.run({"x": x})[0], model.predict(x, verbose=0), atol=1e-6)
    assert s.info["model_source"] == "keras"
    with pytest.raises(UnsupportedCase, match="int8"):
        tf_runtime.prepare(art, precision="int8", batch=4, threads=2, options={"tf_model": str(p)})


# ----------------------------------------------------------------------------- the CLI, end to end

FAST = ["--min-time", "0.05", "--max-time", "0.5", "--min-iterations", "20", "--target-ci", "0.05", "-q"]


def _record(out: Path) -> dict:
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, list(out.iterdir())
    return json.loads(files[0].read_text())


@pytest.mark.slow
def test_cli_smoke_on_tensorflow_matches_onnxruntime(tmp_path, bench_cache):
    from tests.conftest import bench_env, run_bench

    out = tmp_path / "r"
    proc = run_bench(["run", "--suite", "smoke", "--backend", "cpu", "--runtime", "tensorflow", "--scenario",
                      "single-stream", "--out", str(out), *FAST], env=bench_env(cache=bench_cache))
    rec = _record(out)
    (case,) = rec["cases"]
    assert case["status"] in ("ok", "invalid"), (case.get("reason"), proc.stderr[-2000:])
    acc = case["accuracy"]
    # the same predictions as the fp32 onnxruntime reference the artifact carries
    assert acc["value"] == pytest.approx(acc["baseline_value"], abs=1e-12)
    assert acc["fidelity"]["max_abs_diff"] <= 1e-4 and acc["fidelity"]["top1_agreement"] == 1.0
    assert case["backend_info"]["runtime"] == "tensorflow" and case["backend_info"]["jit_compile"] is True
    assert case["threads"]["intra_op_parallelism_threads"] == rec["settings"]["threads"]
    assert case["timings"]["tracing_count"] == 1
    assert rec["backend"]["runtime_version"]


@pytest.mark.slow
def test_cli_quant_suite_on_tensorflow(tmp_path, bench_cache):
    """Every quantization variant through the TensorFlow runtime: ``bench run --suite micro --backend
    cpu --runtime tensorflow`` (the micro-models: the quant suite's real models take minutes each in
    the ONNX -> TF interpreter on 2 cores); every variant runs (or is refused with a reason), accuracy
    within the gate of fp32, and the fp32 case agrees with the fp32 reference exactly."""
    from tests.conftest import bench_env, run_bench

    out = tmp_path / "q"
    proc = run_bench(["run", "--suite", "micro", "--backend", "cpu", "--runtime", "tensorflow", "--scenario",
                      "single-stream", "--out", str(out), *FAST],
                     env=bench_env(cache=bench_cache), timeout=900)
    rec = _record(out)
    by_variant = {c["variant"]: c for c in rec["cases"]}
    for v, c in by_variant.items():
        assert c["status"] in ("ok", "invalid", "unsupported"), (v, c.get("reason"), proc.stderr[-2000:])
        if c["status"] == "unsupported":
            assert c["reason"]
            continue
        assert c["accuracy"]["passed"], (v, c["accuracy"])
    fp32 = by_variant["fp32"]
    assert fp32["accuracy"]["fidelity"]["top1_agreement"] == 1.0
    for v in ("int8-dynamic", "int8-static"):
        if v in by_variant and by_variant[v]["status"] != "unsupported":
            assert by_variant[v]["backend_info"]["quantization"]["mode"] in ("integer", "qdq", "mixed")
