"""int8-static keeps 8-bit weights on depthwise convolutions under reduce_range.

7-bit weights (reduce_range, against the u8s8 saturation of AVX2 without VNNI) cost
EfficientNet-Lite0 most of its int8 fidelity through its depthwise convolutions
(docs/zoo.md); the recipe overrides reduce_range for depthwise weights only.
"""
from types import SimpleNamespace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from suites.recipes import int8_static  # noqa: E402


def _model(path):
    rng = np.random.default_rng(0)
    pw = numpy_helper.from_array(rng.normal(size=(8, 4, 1, 1)).astype(np.float32), "w_pw")
    dw = numpy_helper.from_array(rng.normal(size=(8, 1, 3, 3)).astype(np.float32), "w_dw")
    nodes = [helper.make_node("Conv", ["x", "w_pw"], ["a"], name="pw"),
             helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("Conv", ["b", "w_dw"], ["y"], name="dw", group=8, pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, 8, 8])], [pw, dw])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def test_depthwise_weights_found(tmp_path):
    _model(tmp_path / "m.onnx")
    assert int8_static.depthwise_weights(tmp_path / "m.onnx") == ["w_dw"]


@pytest.mark.parametrize("reduce_range, pw_max", [(True, 64), (False, 127)])
def test_depthwise_keeps_8_bits_pointwise_follows_reduce_range(tmp_path, reduce_range, pw_max):
    _model(tmp_path / "m.onnx")
    x = np.random.default_rng(1).normal(size=(16, 4, 8, 8)).astype(np.float32)
    import onnxruntime as ort

    ref = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    base = SimpleNamespace(name="tiny", onnx_path=tmp_path / "m.onnx", inputs=[{"name": "x"}],
                           calibration_data=lambda: {"x": x.copy()},
                           eval_data=lambda: {"x": {"x": x}, "reference": ref, "labels": None}, meta={})
    out = tmp_path / "q"
    out.mkdir()
    meta = int8_static.apply(base, out, reduce_range=reduce_range)
    assert meta["recipe"]["params"]["depthwise_8bit_weights"] == (1 if reduce_range else 0)
    q = onnx.load(str(out / "model.onnx"))
    ints = {t.name: np.abs(numpy_helper.to_array(t).astype(int)).max() for t in q.graph.initializer
            if numpy_helper.to_array(t).dtype == np.int8 and t.dims and len(t.dims) == 4}
    dw = [v for k, v in ints.items() if "w_dw" in k]
    pw = [v for k, v in ints.items() if "w_pw" in k]
    assert dw == [127]
    assert pw == [pw_max]
