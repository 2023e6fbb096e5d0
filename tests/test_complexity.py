"""Tests for harness.plan.complexity and ``bench complexity``: MACs of hand-computed small graphs.

Every expected number below is worked out by hand in the comment beside it
(1 MAC = one multiply-accumulate, conv and matrix products only).
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.cli import main
from harness.plan.complexity import count, format_count, parse_input_shape
from harness.errors import BenchError

F = TensorProto.FLOAT


# --------------------------------------------------------------------------- graph helpers


def make_model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # type-check and fill in the outputs' shapes, then check the graph is valid ONNX; the
    # intermediate value_info is dropped again so the counter has to infer shapes itself
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def vi(name, shape, elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def rand(shape, seed=0, dtype=np.float32):
    # strictly non-zero values, so "dense" weights have no accidental zeros
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1, 1], size=shape)).astype(dtype)


def conv_model(x_shape, w_shape, out_ch, *, group=1, strides=(1, 1), pads=(0, 0, 0, 0), bias=True, w=None):
    w = rand(w_shape) if w is None else w
    inits = [init("W", w)]
    ins = ["x", "W"]
    if bias:
        inits.append(init("B", rand((out_ch,), 1)))
        ins.append("B")
    node = helper.make_node("Conv", ins, ["y"], name="conv", group=group, strides=list(strides), pads=list(pads),
                            kernel_shape=list(w_shape[2:]))
    return make_model([node], [vi("x", x_shape)], [vi("y", None)], inits)


def op_row(result, name):
    return next(r for r in result["per_op"] if r["name"] == name)


# --------------------------------------------------------------------------- convolutions


def test_conv_grouped_stride_padding():
    # x 1x4x10x10, W 8x2x3x3 (group 2), stride 2, pad 1 -> y 1x8x5x5  ((10 + 2 - 3) // 2 + 1 = 5)
    # MACs = out positions 8*5*5 = 200, each (4/2)*3*3 = 18 MACs -> 3,600
    r = count(conv_model([1, 4, 10, 10], (8, 2, 3, 3), 8, group=2, strides=(2, 2), pads=(1, 1, 1, 1)))
    assert r["macs"] == 3600
    assert r["nonzero_macs"] == 3600
    assert r["params"] == 8 * 2 * 9 + 8  # weights + bias
    assert r["weight_elements"] == 144 and r["weight_sparsity"] == 0.0
    assert op_row(r, "conv")["output_shape"] == [1, 8, 5, 5]
    assert r["opset"] == 17


def test_conv_depthwise():
    # depthwise: x 1x6x9x9, W 6x1x3x3 group 6, no pad, stride 1 -> y 1x6x7x7; MACs = 6*7*7 * 1*3*3 = 2,646
    r = count(conv_model([1, 6, 9, 9], (6, 1, 3, 3), 6, group=6, bias=False))
    assert r["macs"] == 2646
    assert r["params"] == 54


def test_conv_asymmetric_stride_and_dilation():
    # x 2x3x11x8, W 5x3x3x2, strides (2, 3), pads (1, 0, 1, 0), dilation (2, 1)
    # H: (11 + 2 - 2*(3-1) - 1) // 2 + 1 = 5 ; W: (8 - 2) // 3 + 1 = 3 -> y 2x5x5x3
    # MACs = 2*5*5*3 positions * 3*3*2 = 150 * 18 = 2,700
    w = rand((5, 3, 3, 2))
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="c", strides=[2, 3], pads=[1, 0, 1, 0],
                            dilations=[2, 1])
    m = make_model([node], [vi("x", [2, 3, 11, 8])], [vi("y", None)], [init("W", w)])
    r = count(m)
    assert op_row(r, "c")["output_shape"] == [2, 5, 5, 3]
    assert r["macs"] == 2700


def test_conv_transpose():
    # x 1x4x5x5, W 4x3x2x2 (C_in x C_out/group x k), stride 2 -> every input position meets every weight
    # element: MACs = 1*5*5 * 4*3*2*2 = 1,200
    node = helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="ct", strides=[2, 2])
    m = make_model([node], [vi("x", [1, 4, 5, 5])], [vi("y", None)], [init("W", rand((4, 3, 2, 2)))])
    r = count(m)
    assert r["macs"] == 1200
    assert op_row(r, "ct")["output_shape"] == [1, 3, 10, 10]


def test_conv_sparsity_per_output_channel_exact():
    # W 3x2x2x2 (8 elements per output channel): channel 0 all zero, channel 1 has 3 zeros, channel 2 dense
    # x 1x2x5x5 -> y 1x3x4x4: each weight element is used 16 times
    # MACs = 3*8*16 = 384 ; non-zero = (0 + 5 + 8) * 16 = 208 ; sparsity = 11 / 24
    w = rand((3, 2, 2, 2))
    w[0] = 0.0
    w[1, 0, 0, :] = 0.0
    w[1, 1, 1, 1] = -0.0  # negative zero is a zero
    r = count(conv_model([1, 2, 5, 5], w.shape, 3, w=w, bias=False))
    assert r["macs"] == 384
    assert r["nonzero_macs"] == 208
    assert r["weight_elements"] == 24 and r["zero_weight_elements"] == 11
    assert r["weight_sparsity"] == pytest.approx(11 / 24)
    assert r["params"] == 24  # zeros are still parameters


# --------------------------------------------------------------------------- matrix products


def test_gemm_transb_and_sparse_columns():
    # A 2x5 (activation), B 3x5 with transB=1 -> B^T is 5x3, y 2x3; MACs = 2*5*3 = 30
    # zeros: output column 0 (row 0 of B) has 2 zeros, column 2 has 5 -> nnz = 15 - 7 = 8, used by 2 rows: 16
    b = rand((3, 5))
    b[0, [1, 3]] = 0.0
    b[2, :] = 0.0
    node = helper.make_node("Gemm", ["a", "B", "C"], ["y"], name="fc", transB=1)
    m = make_model([node], [vi("a", [2, 5])], [vi("y", None)], [init("B", b), init("C", rand((3,)))])
    r = count(m)
    assert r["macs"] == 30
    assert r["nonzero_macs"] == 16
    assert r["params"] == 15 + 3
    assert r["weight_sparsity"] == pytest.approx(7 / 15)
    assert op_row(r, "fc")["output_shape"] == [2, 3]


def test_gemm_transa_with_symbolic_batch():
    # A declared [K=4, "batch"] with transA=1 -> M = batch (fixed to 1), K = 4; B 4x6: MACs 1*4*6 = 24
    node = helper.make_node("Gemm", ["a", "B"], ["y"], name="g", transA=1)
    m = make_model([node], [vi("a", [4, "batch"])], [vi("y", None)], [init("B", rand((4, 6)))])
    # the symbolic dim is on axis 1 here, not the batch axis, so the counter needs a shape
    with pytest.raises(BenchError, match="--input-shape"):
        count(m)
    assert count(m, {"a": (4, 3)})["macs"] == 3 * 4 * 6


def test_batched_matmul_of_two_activations():
    # attention scores: Q [2, 4, 6, 8] @ K^T [2, 4, 8, 6] -> [2, 4, 6, 6]; MACs = 2*4 * 6*8*6 = 2,304
    node = helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores")
    m = make_model([node], [vi("q", [2, 4, 6, 8]), vi("kt", [2, 4, 8, 6])], [vi("s", None)])
    r = count(m)
    assert r["macs"] == 2304
    assert r["nonzero_macs"] == 2304  # no weight: nothing is known to be zero
    assert r["params"] == 0 and r["weight_elements"] == 0
    assert op_row(r, "scores")["output_shape"] == [2, 4, 6, 6]


def test_matmul_broadcast_batch_and_symbolic_batch_dims():
    # a ["N", 1, 4, 5] @ b [2, 5, 7] -> [N, 2, 4, 7]; N = 1 by default: MACs = 1*2 * 4*5*7 = 280; N = 3: 840
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")
    m = make_model([node], [vi("a", ["N", 1, 4, 5]), vi("b", [2, 5, 7])], [vi("y", None)])
    assert count(m)["macs"] == 280
    assert count(m, {"a": (3, 1, 4, 5)})["macs"] == 840


def test_matmul_with_weight_sparsity_and_1d_vector():
    # x [3, 4] @ W [4, 2]: column 0 has one zero -> nnz 7, each element used by 3 rows: 21 of 24 MACs
    w = rand((4, 2))
    w[2, 0] = 0.0
    n1 = helper.make_node("MatMul", ["x", "W"], ["h"], name="mm")
    # h [3, 2] @ v [2] -> [3]: MACs 3*2 = 6
    n2 = helper.make_node("MatMul", ["h", "v"], ["y"], name="mv")
    m = make_model([n1, n2], [vi("x", [3, 4])], [vi("y", None)], [init("W", w), init("v", rand((2,)))])
    r = count(m)
    assert op_row(r, "mm")["macs"] == 24 and op_row(r, "mm")["nonzero_macs"] == 21
    assert op_row(r, "mv")["macs"] == 6 and op_row(r, "mv")["nonzero_macs"] == 6
    assert r["macs"] == 30 and r["nonzero_macs"] == 27
    assert r["params"] == 8 + 2


# --------------------------------------------------------------------------- quantized forms


def test_qdq_quantized_conv():
    # QDQ graph: x (float) -> QuantizeLinear(uint8) -> DequantizeLinear -> Conv(W: int8 per-channel DQ, B: int32 DQ)
    # x 1x3x8x8, W 4x3x3x3, pad 1 -> y 1x4x8x8; MACs = 4*8*8 * 27 = 6,912
    # zero weights: channel 0 has two q == zp(0); channel 3 (zp = 5) has four entries equal to 5 -> 6 zeros
    # non-zero = (108 - 6) * 64 = 6,528
    q = np.random.default_rng(0).integers(1, 100, size=(4, 3, 3, 3)).astype(np.int8)
    zp = np.array([0, 0, 0, 5], dtype=np.int8)
    q[0, 0, 0, :2] = 0
    q[3, 1, :2, :2] = 5
    q[q == 5] = 6  # make sure no accidental 5s remain ...
    q[3, 1, :2, :2] = 5  # ... except the four placed on purpose
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["Wq", "ws", "wzp"], ["Wd"], axis=0),
        helper.make_node("DequantizeLinear", ["Bq", "bs"], ["Bd"], axis=0),
        helper.make_node("Conv", ["xd", "Wd", "Bd"], ["y"], name="qconv", pads=[1, 1, 1, 1]),
    ]
    inits = [init("xs", np.float32(0.02)), init("xzp", np.uint8(128)), init("Wq", q),
             init("ws", np.full(4, 0.01, np.float32)), init("wzp", zp),
             init("Bq", np.arange(4, dtype=np.int32)), init("bs", np.full(4, 2e-4, np.float32))]
    m = make_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", None)], inits)
    r = count(m)
    assert r["macs"] == 6912
    assert r["zero_weight_elements"] == 6
    assert r["nonzero_macs"] == (108 - 6) * 64
    assert r["params"] == 108 + 4  # int8 weights + int32 bias; scales and zero points are not parameters
    assert r["weight_bits"] == {"bits": 8, "dtype": "int8", "by_dtype": {"int8": 108, "int32": 4}}
    assert r["activation_bits"]["dtype"] == "uint8" and r["activation_bits"]["bits"] == 8
    assert r["activation_bits"]["inputs"] == {"x": "float32"}


def test_qlinear_matmul_per_column_zero_points():
    # a uint8 [2, 3, 4] @ b int8 [4, 5] -> [2, 3, 5]; MACs = 2*3 * 4*5 = 120
    # b zero point per column: column j's weight is zero where b[:, j] == zp[j]; 3 such entries -> 17 nnz * 6 rows
    b = np.random.default_rng(1).integers(10, 50, size=(4, 5)).astype(np.int8)
    zp = np.array([0, 7, 0, 0, -3], dtype=np.int8)
    b[1, 1] = 7
    b[3, 1] = 7
    b[0, 4] = -3
    b[2, 0] = 7  # 7 in column 0 is not zero there (zp 0)
    node = helper.make_node("QLinearMatMul", ["a", "as", "azp", "B", "bs", "bzp", "ys", "yzp"], ["y"], name="qmm")
    inits = [init("as", np.float32(0.1)), init("azp", np.uint8(128)), init("B", b),
             init("bs", np.full(5, 0.05, np.float32)), init("bzp", zp), init("ys", np.float32(0.2)),
             init("yzp", np.uint8(128))]
    m = make_model([node], [vi("a", [2, 3, 4], TensorProto.UINT8)], [vi("y", None, TensorProto.UINT8)], inits,
                   opset=21)
    r = count(m)
    assert r["macs"] == 120
    assert r["nonzero_macs"] == (20 - 3) * 6
    assert r["params"] == 20
    assert r["weight_bits"]["by_dtype"] == {"int8": 20} and r["weight_bits"]["bits"] == 8
    assert r["activation_bits"] == {"bits": 8, "dtype": "uint8", "by_dtype": {"uint8": 120},
                                    "inputs": {"a": "uint8"}}


def test_qlinearconv_convinteger_matmulinteger():
    # QLinearConv: x uint8 1x2x6x6, w int8 3x2x3x3 (w_zp per channel) -> 1x3x4x4: MACs = 3*16*18 = 864
    w = np.random.default_rng(2).integers(1, 9, size=(3, 2, 3, 3)).astype(np.int8)
    w[2] = 4  # channel 2 all equal to its zero point 4 -> 18 zeros
    qlc = helper.make_node("QLinearConv", ["x", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp", "b"], ["y"],
                           name="qlc")
    # ConvInteger on the same input with the same weights and a scalar zero point 0: 864 MACs, nothing zero
    ci = helper.make_node("ConvInteger", ["x", "w", "xzp"], ["yi"], name="ci")
    # MatMulInteger: m uint8 [5, 4] @ k int8 [4, 2]: 40 MACs
    mmi = helper.make_node("MatMulInteger", ["m", "k"], ["mo"], name="mmi")
    inits = [init("xs", np.float32(0.1)), init("xzp", np.uint8(0)), init("w", w),
             init("ws", np.full(3, 0.1, np.float32)), init("wzp", np.array([0, 0, 4], np.int8)),
             init("ys", np.float32(0.1)), init("yzp", np.uint8(0)), init("b", np.zeros(3, np.int32)),
             init("k", np.ones((4, 2), np.int8))]
    m = make_model([qlc, ci, mmi], [vi("x", [1, 2, 6, 6], TensorProto.UINT8), vi("m", [5, 4], TensorProto.UINT8)],
                   [vi("y", None, TensorProto.UINT8), vi("yi", None, TensorProto.INT32),
                    vi("mo", None, TensorProto.INT32)], inits)
    r = count(m)
    assert op_row(r, "qlc")["macs"] == 864 and op_row(r, "qlc")["nonzero_macs"] == (54 - 18) * 16
    assert op_row(r, "ci")["macs"] == 864 and op_row(r, "ci")["nonzero_macs"] == 864
    assert op_row(r, "mmi")["macs"] == 40
    assert r["macs"] == 864 * 2 + 40
    assert r["params"] == 54 + 3 + 8  # w (shared by qlc and ci, counted once) + b + k


# --------------------------------------------------------------------------- params, bits, size


def test_params_bn_identity_shared_and_tied_weights():
    # Conv W 4x3x1x1 (12) + BN scale/bias (4 + 4; running mean/var are not parameters)
    # MatMul weight used twice through the same name (tied: counted once) and once via Identity (a copy: counted)
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("BatchNormalization", ["c", "s", "b", "mean", "var"], ["n"], name="bn"),
        helper.make_node("Flatten", ["n"], ["f"], axis=1),  # 1 x 4*2*2 = 16
        helper.make_node("MatMul", ["f", "T"], ["h1"], name="mm1"),
        helper.make_node("MatMul", ["f", "T"], ["h2"], name="mm2"),
        helper.make_node("Identity", ["T"], ["T_copy"]),
        helper.make_node("MatMul", ["f", "T_copy"], ["h3"], name="mm3"),
        helper.make_node("Add", ["h3", "bias"], ["h4"], name="bias_add"),
    ]
    inits = [init("W", rand((4, 3, 1, 1))), init("s", np.ones(4, np.float32)), init("b", np.zeros(4, np.float32)),
             init("mean", np.zeros(4, np.float32)), init("var", np.ones(4, np.float32)),
             init("T", rand((16, 5))), init("bias", rand((5,)))]
    m = make_model(nodes, [vi("x", [1, 3, 2, 2])], [vi("h1", None), vi("h2", None), vi("h4", None)], inits)
    r = count(m)
    assert r["params"] == 12 + 8 + 80 + 80 + 5
    assert r["initializer_elements"] == 12 + 16 + 80 + 5  # storage: every constant once, incl. mean/var
    assert r["macs"] == 12 * 4 + 3 * 16 * 5
    assert op_row(r, "bn")["params"] == 8 and op_row(r, "bn")["macs"] == 0
    assert op_row(r, "bias_add")["params"] == 5


def test_weight_bits_mixed_and_float16_activation():
    # fp16 model: weights float16 (24) -> weight bits 16, activations float16
    w = rand((2, 3, 2, 2), dtype=np.float16)
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="c")
    m = make_model([node], [vi("x", [1, 3, 4, 4], TensorProto.FLOAT16)], [vi("y", None, TensorProto.FLOAT16)],
                   [init("W", w)])
    r = count(m)
    assert r["weight_bits"] == {"bits": 16, "dtype": "float16", "by_dtype": {"float16": 24}}
    assert r["activation_bits"]["bits"] == 16


def test_model_bytes_file_bytes_and_proto(tmp_path):
    m = conv_model([1, 4, 10, 10], (8, 2, 3, 3), 8, group=2)
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    assert count(p)["model_bytes"] == os.path.getsize(p)
    assert count(str(p))["model_bytes"] == os.path.getsize(p)
    assert count(m)["model_bytes"] == m.ByteSize() == len(m.SerializeToString())
    assert count(p.read_bytes())["macs"] == count(m)["macs"]


def test_model_bytes_include_external_data(tmp_path):
    m = conv_model([1, 16, 8, 8], (32, 16, 3, 3), 32)
    p = tmp_path / "ext.onnx"
    onnx.save(m, p, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)
    size = os.path.getsize(p) + os.path.getsize(tmp_path / "ext.data")
    r = count(p)
    assert r["model_bytes"] == size
    assert r["params"] == 32 * 16 * 9 + 32


def test_uncounted_ops_are_reported():
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik")
    m = make_model([node], [vi("a", [2, 3]), vi("b", [3, 4])], [vi("y", None)])
    r = count(m)
    assert r["macs"] == 0 and r["uncounted_ops"] == {"Einsum": 1}


def test_parse_input_shape_and_format():
    assert parse_input_shape("x=1x3x224x224") == ("x", (1, 3, 224, 224))
    assert parse_input_shape("a=b=2,3") == ("a=b", (2, 3))
    assert parse_input_shape("8x16") == (None, (8, 16))
    for bad in ("x=", "x=1x0", "=1x2", "x=ax2", "x=1x-2"):
        with pytest.raises(BenchError):
            parse_input_shape(bad)
    assert format_count(1_814_073_344) == "1.814 G"
    assert format_count(3_504_872) == "3.505 M"
    assert format_count(12) == "12"


# --------------------------------------------------------------------------- errors through count()


def dynamic_conv_model():
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="dynconv", pads=[1, 1, 1, 1])
    return make_model([node], [vi("x", ["N", 3, "H", "W"])], [vi("y", None)], [init("W", rand((4, 3, 3, 3)))])


def test_dynamic_dims_need_a_shape():
    m = dynamic_conv_model()
    with pytest.raises(BenchError, match=r"node 'dynconv' \(Conv\).*--input-shape"):
        count(m)
    # given: 4 * 27 MACs at each of 2*16*16 positions
    assert count(m, {"x": (2, 3, 16, 16)})["macs"] == 2 * 16 * 16 * 4 * 27
    assert count(m, {None: (1, 3, 8, 8)})["macs"] == 64 * 108


def test_input_shape_errors():
    m = dynamic_conv_model()
    with pytest.raises(BenchError, match="not an input"):
        count(m, {"y": (1, 3, 8, 8)})
    with pytest.raises(BenchError, match="rank 3"):
        count(m, {"x": (1, 3, 8)})
    with pytest.raises(BenchError, match="fixes it to 3"):
        count(m, {"x": (1, 4, 8, 8)})


def test_bad_sources():
    with pytest.raises(BenchError, match="no such file"):
        count("/nonexistent/model.onnx")
    with pytest.raises(BenchError, match="cannot count"):
        count(42)
    with pytest.raises(BenchError, match="not a valid ONNX"):
        count(b"\xff\xfe garbage \x00\x01")


# --------------------------------------------------------------------------- the command line


def run_cli(capsys, *args):
    rc = main(["complexity", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bench: error:") or lines[0].startswith("bench complexity: error:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], err


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "conv.onnx"
    onnx.save(conv_model([1, 4, 10, 10], (8, 2, 3, 3), 8, group=2, strides=(2, 2), pads=(1, 1, 1, 1)), p)
    return p


def test_cli_table(capsys, model_file):
    rc, out, err = run_cli(capsys, model_file)
    assert rc == 0, err
    assert "3,600" in out and "params" in out and "MACs" in out
    rc, out, err = run_cli(capsys, model_file, "--per-op")
    assert rc == 0 and "per operator" in out and "conv" in out


def test_cli_json(capsys, model_file):
    rc, out, err = run_cli(capsys, model_file, "--json", "--per-op")
    assert rc == 0, err
    data = json.loads(out)
    assert data["macs"] == 3600 and data["params"] == 152
    assert data["model_bytes"] == os.path.getsize(model_file)
    assert data["per_op"][0]["op_type"] == "Conv"
    rc, out, _ = run_cli(capsys, model_file, "--json")
    assert "per_op" not in json.loads(out)


def test_cli_input_shape(capsys, tmp_path):
    p = tmp_path / "dyn.onnx"
    onnx.save(dynamic_conv_model(), p)
    rc, out, err = run_cli(capsys, p, "--input-shape", "x=2x3x16x16", "--json")
    assert rc == 0, err
    assert json.loads(out)["macs"] == 2 * 16 * 16 * 108
    rc, out, err = run_cli(capsys, p, "-s", "1x3x8x8", "--json")
    assert rc == 0 and json.loads(out)["input_shapes"] == {"x": [1, 3, 8, 8]}


def test_cli_dynamic_dims_without_shape(capsys, tmp_path):
    p = tmp_path / "dyn.onnx"
    onnx.save(dynamic_conv_model(), p)
    rc, _, err = run_cli(capsys, p)
    assert_one_line_error(rc, err, "dynconv", "--input-shape")


def test_cli_missing_input_shape(capsys, tmp_path):
    # an input declared without any shape (onnx.checker rejects it, onnxruntime runs it): nothing to fix
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F, None)], [vi("y", None)],
                              initializer=[init("W", rand((4, 2)))])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    p = tmp_path / "noshape.onnx"
    onnx.save(m, p)
    rc, _, err = run_cli(capsys, p)
    assert_one_line_error(rc, err, "'mm'", "--input-shape")
    rc, out, err = run_cli(capsys, p, "-s", "x=3x4", "--json")
    assert rc == 0 and json.loads(out)["macs"] == 24


def test_cli_corrupt_file(capsys, tmp_path):
    p = tmp_path / "corrupt.onnx"
    p.write_bytes(bytes(range(256)) * 8)
    rc, _, err = run_cli(capsys, p)
    assert_one_line_error(rc, err, "not a valid ONNX model")


def test_cli_truncated_file(capsys, tmp_path, model_file):
    data = model_file.read_bytes()
    for cut in (len(data) // 2, len(data) - 3):
        p = tmp_path / f"trunc{cut}.onnx"
        p.write_bytes(data[:cut])
        rc, _, err = run_cli(capsys, p)
        assert_one_line_error(rc, err, str(p))


def test_cli_non_onnx_files(capsys, tmp_path):
    cases = {"empty.onnx": b"", "text.onnx": b"hello, this is not a model\n",
             "data.json": json.dumps({"graph": [1, 2, 3]}).encode(), "zeros.onnx": b"\x00" * 64}
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        rc, _, err = run_cli(capsys, p)
        assert_one_line_error(rc, err, str(p))
    # a valid protobuf that is not a model (an ONNX TensorProto)
    p = tmp_path / "tensor.onnx"
    p.write_bytes(init("t", rand((3, 3))).SerializeToString())
    rc, _, err = run_cli(capsys, p)
    assert_one_line_error(rc, err, str(p))


def test_cli_missing_file_and_directory(capsys, tmp_path):
    rc, _, err = run_cli(capsys, tmp_path / "nope.onnx")
    assert_one_line_error(rc, err, "no such file")
    rc, _, err = run_cli(capsys, tmp_path)
    assert_one_line_error(rc, err, "directory")
    rc, _, err = run_cli(capsys, "no-such-model-name")
    assert_one_line_error(rc, err, "no such file or model")


def test_cli_bad_input_shape_arguments(capsys, model_file):
    rc, _, err = run_cli(capsys, model_file, "-s", "x=1xAx3")
    assert_one_line_error(rc, err, "bad input shape")
    rc, _, err = run_cli(capsys, model_file, "-s", "nope=1x4x10x10")
    assert_one_line_error(rc, err, "not an input", "x[1,4,10,10]")
    rc, _, err = run_cli(capsys, model_file, "-s", "x=1x4x10")
    assert_one_line_error(rc, err, "rank")


def test_cli_zoo_model_name(capsys, monkeypatch, tmp_path, model_file):
    """A zoo model name resolves to its artifact's ONNX file (artifact building is stubbed out here)."""
    import suites.build
    import suites.zoo

    name = next(iter(suites.zoo.MODELS))
    calls = []

    class FakeArtifact:
        onnx_path = model_file

    def fake_artifact_for(model, variant="fp32", **kw):
        calls.append((model, variant))
        return FakeArtifact(), False

    monkeypatch.setattr(suites.build, "artifact_for", fake_artifact_for)
    rc, out, err = run_cli(capsys, name, "--json")
    assert rc == 0, err
    assert json.loads(out)["macs"] == 3600
    assert calls == [(name, "fp32")]


def test_cli_subprocess_one_line(tmp_path):
    """The installed console script: one line on stderr, exit 2, no traceback."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("bench", path=os.path.dirname(sys.executable)) or shutil.which("bench")
    if exe is None:
        pytest.skip("console script 'bench' not installed")
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"not onnx at all")
    proc = subprocess.run([exe, "complexity", str(p)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- exporter / tool output


def test_shapes_through_an_op_onnx_cannot_infer():
    """A com.microsoft op stops onnx's shape inference; one onnxruntime run supplies the shapes."""
    pytest.importorskip("onnxruntime")
    nodes = [helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
             helper.make_node("MatMul", ["g", "W"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [vi("x", ["batch", 8])], [vi("y", None)],
                              initializer=[init("W", rand((8, 4)))])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    r = count(m, {"x": (3, 8)})
    assert r["macs"] == 3 * 8 * 4
    assert op_row(r, "mm")["output_shape"] == [3, 4]


def test_onnxruntime_dynamic_quantization(tmp_path):
    """quantize_dynamic: MatMul -> DynamicQuantizeLinear + MatMulInteger, bias Add behind Cast/Mul."""
    quant = pytest.importorskip("onnxruntime.quantization")
    w = rand((16, 8))
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])]
    src, dst = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save(make_model(nodes, [vi("x", ["batch", 16])], [vi("y", None)], [init("W", w), init("b", rand((8,)))]),
              src)
    quant.quantize_dynamic(str(src), str(dst), weight_type=quant.QuantType.QInt8)
    ops = {n.op_type for n in onnx.load(dst).graph.node}
    assert "MatMulInteger" in ops
    r = count(dst)
    assert r["macs"] == 16 * 8
    assert r["params"] == 16 * 8 + 8
    assert r["weight_bits"]["dtype"] == "int8" and r["weight_bits"]["by_dtype"]["int8"] == 128
    assert r["activation_bits"]["dtype"] == "uint8"
    assert count(src)["params"] == 16 * 8 + 8


def test_qgemm_com_microsoft():
    # QGemm (onnxruntime contrib): A uint8 [2, 6] x B int8 [6, 3] -> 36 MACs; column 1 all at its zero point 0
    b = np.random.default_rng(3).integers(1, 20, size=(6, 3)).astype(np.int8)
    b[:, 1] = 0
    node = helper.make_node("QGemm", ["a", "as", "azp", "B", "bs", "bzp", "C", "ys", "yzp"], ["y"], name="qg",
                            domain="com.microsoft")
    inits = [init("as", np.float32(0.1)), init("azp", np.uint8(0)), init("B", b), init("bs", np.float32(0.1)),
             init("bzp", np.int8(0)), init("C", np.zeros(3, np.int32)), init("ys", np.float32(0.1)),
             init("yzp", np.uint8(0))]
    graph = helper.make_graph([node], "g", [vi("a", [2, 6], TensorProto.UINT8)],
                              [vi("y", [2, 3], TensorProto.UINT8)], initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    r = count(m)
    assert r["macs"] == 36 and r["nonzero_macs"] == 24 and r["params"] == 18 + 3


def test_local_functions_are_inlined():
    # a model-local function wrapping a MatMul: counted like the plain op (x [2, 5] @ W [5, 3] = 30 MACs)
    fn = helper.make_function("local", "Lin", ["a", "w"], ["o"], [helper.make_node("MatMul", ["a", "w"], ["o"])],
                              opset_imports=[helper.make_opsetid("", 17)])
    node = helper.make_node("Lin", ["x", "W"], ["y"], domain="local")
    graph = helper.make_graph([node], "g", [vi("x", [2, 5])], [vi("y", None)], initializer=[init("W", rand((5, 3)))])
    m = helper.make_model(graph, functions=[fn],
                          opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    m.ir_version = 8
    r = count(m)
    assert r["macs"] == 30 and r["params"] == 15
