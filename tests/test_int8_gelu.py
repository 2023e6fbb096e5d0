"""int8-static on attention graphs keeps the matrix products fed by a GELU in fp32.

GELU's output (the input of a transformer's second feed-forward product) is long-tailed;
one per-tensor uint8 scale flattens it (MiniLM-L6: cosine 0.985 -> 0.916, docs/zoo.md).
"""
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from suites.recipes import int8_static  # noqa: E402


def _block(path: Path, fused: bool = False, attention: bool = True) -> None:
    """x -> LayerNorm -> MatMul(w1) -> GELU -> MatMul(w2) -> MatMul(w3, fed by a plain Mul) -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), f"w{i}") for i in (1, 2, 3)]
    inits += [numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
              numpy_helper.from_array(np.array(np.sqrt(2), np.float32), "sqrt2"),
              numpy_helper.from_array(np.array(1.0, np.float32), "one"),
              numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    first = (helper.make_node("LayerNormalization", ["x", "gamma"], ["ln"], name="ln") if attention
             else helper.make_node("Relu", ["x"], ["ln"], name="relu"))
    nodes = [first, helper.make_node("MatMul", ["ln", "w1"], ["h"], name="ffn_in")]
    if fused:
        nodes.append(helper.make_node("Gelu", ["h"], ["g"], name="gelu", domain="com.microsoft"))
    else:
        nodes += [helper.make_node("Div", ["h", "sqrt2"], ["d"], name="div"),
                  helper.make_node("Erf", ["d"], ["e"], name="erf"),
                  helper.make_node("Add", ["e", "one"], ["a"], name="add"),
                  helper.make_node("Mul", ["h", "a"], ["m"], name="mul1"),
                  helper.make_node("Mul", ["m", "half"], ["g"], name="mul2")]
    nodes += [helper.make_node("MatMul", ["g", "w2"], ["o"], name="ffn_out"),
              helper.make_node("Mul", ["o", "half"], ["s"], name="scale"),
              helper.make_node("MatMul", ["s", "w3"], ["y"], name="proj")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])], inits)
    ops = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if fused else [])
    m = helper.make_model(g, opset_imports=ops)
    m.ir_version = 8
    onnx.save(m, str(path))


@pytest.mark.parametrize("fused", [False, True])
def test_gelu_fed_products_found(tmp_path, fused):
    _block(tmp_path / "m.onnx", fused=fused)
    assert int8_static.gelu_fed(onnx.load(str(tmp_path / "m.onnx"))) == {"ffn_out"}


def test_attention_selection_keeps_gelu_fed_products_fp32(tmp_path):
    _block(tmp_path / "m.onnx")
    types, nodes, policy = int8_static._selection(tmp_path / "m.onnx", None)
    assert sorted(nodes) == ["ffn_in", "proj"] and "1 fed by a GELU" in policy


def test_graphs_without_attention_quantize_everything(tmp_path):
    _block(tmp_path / "m.onnx", attention=False)
    assert int8_static._selection(tmp_path / "m.onnx", None)[1] is None
