"""The ONNX fixed-point / int8 emulator against float execution within the expected quantization error."""
from __future__ import annotations

import numpy as np
import pytest

from backends.fpga.emulator import Emulator, EmulatorConfig, UnsupportedOp
from backends.fpga.fixed import parse_precision
from tests.test_fpga_graphs import cnn, mlp, ort_run, with_op


def cfg(p, **kw):
    return EmulatorConfig(data=parse_precision(p), **{k: parse_precision(v) for k, v in kw.items()})


def test_single_dense_within_first_order_bound():
    """One Gemm: |y_fixed - y_float| <= sum_i(|w_i| dx + |x_i| dw + dx dw) + db, with d = one LSB
    (truncation errs by less than one LSB; the auto accumulator adds no error)."""
    m = mlp([32, 8], seed=1)
    rng = np.random.default_rng(2)
    x = rng.uniform(-2, 2, (64, 32)).astype(np.float32)
    ref = ort_run(m, x).astype(np.float64)
    from onnx import numpy_helper

    w = numpy_helper.to_array(m.graph.initializer[0]).astype(np.float64)  # (8, 32)
    for p in ("ap_fixed<16,6>", "ap_fixed<12,4>", "ap_fixed<10,3>"):
        d = parse_precision(p).lsb
        y = Emulator(m, cfg(p)).run({"x": x})[0]
        bound = (np.abs(w).sum(1)[None, :] * d + np.abs(x).sum(1)[:, None] * d + 32 * d * d + d)
        err = np.abs(y - ref)
        assert (err <= bound + 1e-6).all(), p
        assert err.max() > 0  # it really is quantized


def test_mlp_error_shrinks_with_precision():
    m = mlp([16, 64, 32, 32, 5], seed=3)
    x = np.random.default_rng(4).normal(0, 1, (256, 16)).astype(np.float32)
    ref = ort_run(m, x)
    errs = []
    for p in ("ap_fixed<8,4,AP_RND,AP_SAT>", "ap_fixed<12,5,AP_RND,AP_SAT>", "ap_fixed<16,6,AP_RND,AP_SAT>",
              "ap_fixed<24,8,AP_RND,AP_SAT>"):
        y = Emulator(m, cfg(p)).run({"x": x})[0]
        errs.append(float(np.abs(y - ref).max()))
    assert errs == sorted(errs, reverse=True)
    assert errs[-1] < 1e-3 and errs[2] < 0.05
    y16 = Emulator(m, cfg("ap_fixed<16,6>")).run({"x": x})[0]
    assert (y16.argmax(1) == ref.argmax(1)).mean() >= 0.97


def test_wrap_vs_saturate_on_overflow():
    """Activations beyond the integer range wrap (HLS default) unless the type saturates."""
    m = mlp([8, 8, 4], seed=5, scale=2.0)
    x = np.random.default_rng(6).normal(0, 3, (128, 8)).astype(np.float32)
    ref = ort_run(m, x)
    wrap = Emulator(m, cfg("ap_fixed<8,3>")).run({"x": x})[0]
    sat = Emulator(m, cfg("ap_fixed<8,3,AP_TRN,AP_SAT>")).run({"x": x})[0]
    assert np.abs(sat - ref).mean() < np.abs(wrap - ref).mean()


def test_cnn_ops_match_float_at_high_precision():
    m = cnn()
    x = np.random.default_rng(7).uniform(0, 1, (16, 1, 8, 8)).astype(np.float32)
    ref = ort_run(m, x)
    emu = Emulator(m, cfg("ap_fixed<24,8,AP_RND_CONV,AP_SAT>"))
    assert "BatchNormalization" not in [n.op_type for n in emu.nodes]  # folded into the conv
    y = emu.run({"x": x})[0]
    assert np.abs(y - ref).max() < 1e-3
    y16 = Emulator(m, cfg("ap_fixed<16,6>")).run({"x": x})[0]
    assert np.abs(y16 - ref).max() < 0.02
    kinds = [(l.kind, l.vectors) for l in emu.trace({"x": x[:1]})]
    assert ("conv", 64) in kinds and ("dwconv", 16) in kinds and ("dense", 1) in kinds
    assert [k for k, _ in kinds].count("pool") == 3 and ("softmax", 1) in kinds


def test_shape_only_trace_matches_full_trace():
    m = cnn()
    x = np.zeros((1, 1, 8, 8), np.float32)
    emu = Emulator(m, cfg("ap_fixed<16,6>"))
    a, b = emu.trace({"x": x}), emu.trace({"x": x}, shape_only=True)
    assert [(l.name, l.out_shape, l.macs, l.vectors) for l in a] == [(l.name, l.out_shape, l.macs, l.vectors) for l in b]


@pytest.mark.parametrize("op", ["Erf", "Softsign"])
def test_unsupported_op_is_named(op):
    with pytest.raises(UnsupportedOp, match=op):
        Emulator(with_op(op), cfg("ap_fixed<16,6>"))


def test_int8_qdq_matches_reference_semantics():
    """Static QDQ int8 (onnxruntime.quantization) emulated with integer MACs equals ONNX Runtime's
    reference execution of the same graph (optimizations off), and stays close to fp32."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    m = mlp([16, 32, 5], seed=8)
    rng = np.random.default_rng(9)
    x = rng.normal(0, 1, (200, 16)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": x[i:i + 20]} for i in range(0, 200, 20)])

        def get_next(self):
            return next(self.it, None)

    import tempfile
    from pathlib import Path

    import onnx

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "f.onnx", Path(d) / "q.onnx"
        onnx.save(m, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        emu = Emulator(str(dst), EmulatorConfig(mode="int"))
        y = emu.run({"x": x})[0]
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        ref = ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        layers = emu.trace({"x": x[:1]})
    assert np.abs(y - ref).max() <= 1e-5
    fp = ort_run(m, x)
    assert (y.argmax(1) == fp.argmax(1)).mean() > 0.9
    dense = [l for l in layers if l.kind == "dense"]
    assert [(l.w_bits, l.x_bits, l.acc_bits) for l in dense] == [(8, 8, 32)] * 2


def test_int8_dynamic_matmulinteger_is_exact_integer_arithmetic():
    """Dynamic int8 (DynamicQuantizeLinear + MatMulInteger): the int32 accumulators equal the exact
    integer product (ONNX Runtime's u8s8 kernels on CPUs without VNNI saturate 16-bit pair sums, so
    they are not the reference here), and the result stays close to fp32."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    m = mlp([16, 32, 5], seed=10)
    x = np.random.default_rng(11).normal(0, 1, (64, 16)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "f.onnx", Path(d) / "q.onnx"
        onnx.save(m, src)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        q = onnx.load(str(dst))
        emu = Emulator(str(dst), EmulatorConfig(mode="int"))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    env = emu._execute({"x": x})
    mmi = [n for n in q.graph.node if n.op_type == "MatMulInteger"][0]
    a = env[mmi.input[0]].astype(np.int64) - int(env[mmi.input[2]])
    w = inits[mmi.input[1]].astype(np.int64) - int(inits[mmi.input[3]])
    assert np.array_equal(env[mmi.output[0]], a @ w)
    y = emu.run({"x": x})[0]
    fp = ort_run(m, x)
    assert (y.argmax(1) == fp.argmax(1)).mean() > 0.9 and np.abs(y - fp).max() < 0.1
