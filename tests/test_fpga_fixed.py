"""HLS fixed-point arithmetic against hand-computed cases (rounding, saturation, accumulator width)."""
from __future__ import annotations

import numpy as np
import pytest

from backends.fpga.fixed import (FixedType, PrecisionError, auto_accum_type, parse_precision, quantize_ratio,
                                 requantize)

LSB8 = 1 / 32  # ap_fixed<8,3>: 5 fractional bits, range [-4, 4 - 1/32]


def q(text, x):
    return float(parse_precision(text).round_trip(np.array([x]))[0])


def test_parse():
    t = parse_precision("ap_fixed<16,6>")
    assert (t.width, t.integer, t.signed, t.q_mode, t.o_mode, t.frac) == (16, 6, True, "AP_TRN", "AP_WRAP", 10)
    t = parse_precision("ap_ufixed<8, 0, AP_RND_CONV, AP_SAT>")
    assert (t.width, t.integer, t.signed, t.q_mode, t.o_mode) == (8, 0, False, "AP_RND_CONV", "AP_SAT")
    assert parse_precision("fixed<8,3,RND,SAT>").name == "ap_fixed<8,3,AP_RND,AP_SAT>"
    assert parse_precision("int8") == FixedType(8, 8, True)
    assert parse_precision("ap_uint<4>") == FixedType(4, 4, False)
    assert parse_precision("ap_fixed<8,3,AP_TRN,AP_WRAP,2>").sat_bits == 2
    for bad in ("ap_fixed<0,2>", "ap_fixed<16,6,AP_FOO>", "float16", "ap_fixed<16>", "ap_fixed<70,6>",
                "ap_ufixed<8,3,AP_TRN,AP_WRAP_SM>"):
        with pytest.raises(PrecisionError):
            parse_precision(bad)


def test_range_and_lsb():
    t = parse_precision("ap_fixed<8,3>")
    assert t.lsb == LSB8 and t.min_value == -4.0 and t.max_value == 4 - LSB8
    u = parse_precision("ap_ufixed<4,2>")
    assert u.min_value == 0.0 and u.max_value == 3.75


@pytest.mark.parametrize("mode, plus, minus, odd_tie", [
    # x = +2.5 LSB, -2.5 LSB, +3.5 LSB (ties) -> mantissa
    ("AP_TRN", 2, -3, 3),          # floor
    ("AP_TRN_ZERO", 2, -2, 3),     # toward zero
    ("AP_RND", 3, -2, 4),          # ties toward +inf
    ("AP_RND_ZERO", 2, -2, 3),     # ties toward zero
    ("AP_RND_MIN_INF", 2, -3, 3),  # ties toward -inf
    ("AP_RND_INF", 3, -3, 4),      # ties away from zero
    ("AP_RND_CONV", 2, -2, 4),     # ties to even
])
def test_rounding_ties(mode, plus, minus, odd_tie):
    name = f"ap_fixed<8,3,{mode},AP_WRAP>"
    assert q(name, 2.5 * LSB8) == plus * LSB8
    assert q(name, -2.5 * LSB8) == minus * LSB8
    assert q(name, 3.5 * LSB8) == odd_tie * LSB8


def test_rounding_not_ties():
    # 0.3 = 9.6 LSB: truncation gives 9, every rounding mode 10; -0.3 = -9.6 LSB
    assert q("ap_fixed<8,3>", 0.3) == 9 * LSB8
    assert q("ap_fixed<8,3,AP_TRN_ZERO>", -0.3) == -9 * LSB8
    assert q("ap_fixed<8,3>", -0.3) == -10 * LSB8
    for mode in ("AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV"):
        assert q(f"ap_fixed<8,3,{mode}>", 0.3) == 10 * LSB8
        assert q(f"ap_fixed<8,3,{mode}>", -0.3) == -10 * LSB8


def test_overflow_modes():
    # 5.0 = 160 LSB: two's complement wrap to 160 - 256 = -96 LSB = -3.0
    assert q("ap_fixed<8,3>", 5.0) == -3.0
    assert q("ap_fixed<8,3,AP_TRN,AP_SAT>", 5.0) == 4 - LSB8
    assert q("ap_fixed<8,3,AP_TRN,AP_SAT>", -5.0) == -4.0
    assert q("ap_fixed<8,3,AP_TRN,AP_SAT_ZERO>", 5.0) == 0.0
    assert q("ap_fixed<8,3,AP_TRN,AP_SAT_SYM>", -5.0) == -(4 - LSB8)
    assert q("ap_fixed<8,3,AP_TRN,AP_SAT_SYM>", -4.0) == -(4 - LSB8)  # the asymmetric minimum is excluded
    assert q("ap_fixed<8,3,AP_TRN,AP_SAT>", -4.0) == -4.0
    # unsigned: -1.0 = -4 LSB wraps to 12 LSB = 3.0, saturates to 0
    assert q("ap_ufixed<4,2>", -1.0) == 3.0
    assert q("ap_ufixed<4,2,AP_TRN,AP_SAT>", -1.0) == 0.0
    # AP_WRAP with N=1 saturation bit: the sign bit follows the source (160 -> 0b0010_0000 = 1.0)
    assert q("ap_fixed<8,3,AP_TRN,AP_WRAP,1>", 5.0) == 1.0
    # rounding that carries into overflow: 3.99 rounds up to 4.0, which saturates / wraps
    assert q("ap_fixed<8,3,AP_RND,AP_SAT>", 3.99) == 4 - LSB8
    assert q("ap_fixed<8,3,AP_RND,AP_WRAP>", 3.99) == -4.0
    # in-range values are untouched by every overflow mode
    for o in ("AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM", "AP_WRAP_SM"):
        assert q(f"ap_fixed<8,3,AP_TRN,{o}>", 1.5) == 1.5


def test_requantize_between_types():
    # 7 at 3 fractional bits (0.875) -> 2 fractional bits: exactly half way between 3 and 4 LSB
    src = np.array([7, -7, 5], dtype=np.int64)
    assert list(requantize(src, 3, parse_precision("ap_fixed<4,2>"))) == [3, -4, 2]  # TRN: floor
    assert list(requantize(src, 3, parse_precision("ap_fixed<4,2,AP_RND>"))) == [4, -3, 3]  # ties toward +inf
    assert list(requantize(src, 3, parse_precision("ap_fixed<4,2,AP_RND_CONV>"))) == [4, -4, 2]  # ties to even
    # ap_fixed<3,1> holds -4..3 LSB: rounding 3.5 up to 4 overflows
    assert list(requantize(src, 3, parse_precision("ap_fixed<3,1,AP_RND>"))) == [-4, -3, 3]
    assert list(requantize(src, 3, parse_precision("ap_fixed<3,1,AP_RND,AP_SAT>"))) == [3, -3, 3]
    # widening is exact
    assert list(requantize(src, 3, parse_precision("ap_fixed<16,6>"))) == [7 * 128, -7 * 128, 5 * 128]


def test_quantize_ratio_average():
    # (1 + 2 + 2 + 2) LSB / 4 = 1.75 LSB at ap_fixed<8,3>
    t = parse_precision("ap_fixed<8,3>")
    assert quantize_ratio(np.array([7]), 4, 5, t)[0] == 1
    assert quantize_ratio(np.array([7]), 4, 5, parse_precision("ap_fixed<8,3,AP_RND>"))[0] == 2
    assert quantize_ratio(np.array([-6]), 4, 5, parse_precision("ap_fixed<8,3,AP_RND_CONV>"))[0] == -2  # -1.5 -> even
    assert quantize_ratio(np.array([6]), 4, 5, parse_precision("ap_fixed<8,4>"))[0] == 0  # 1.5/32 in 1/16 steps


def test_auto_accumulator_width():
    # hls4ml's inferred accumulator (what hls4ml 1.3 reports for a 64-input and a 128-input Dense)
    x = w = b = parse_precision("ap_fixed<16,6>")
    assert auto_accum_type(x, w, 64, b) == FixedType(39, 19, True)
    assert auto_accum_type(x, w, 128, b) == FixedType(40, 20, True)
    assert auto_accum_type(x, w, 64, None) == FixedType(38, 18, True)
    u = parse_precision("ap_ufixed<8,0>")
    assert auto_accum_type(u, parse_precision("ap_fixed<8,1>"), 4, None) == FixedType(18, 3, True)
    with pytest.raises(PrecisionError):
        auto_accum_type(parse_precision("ap_fixed<32,8>"), parse_precision("ap_fixed<32,8>"), 1 << 10, None)


def test_accumulator_width_overflow_in_dense():
    """4 x (3.0 * 1.0) = 12: exact with the auto accumulator; a narrow accumulator wraps or saturates
    after each addition, as the HLS code does."""
    from backends.fpga.emulator import Emulator, EmulatorConfig
    from tests.test_fpga_graphs import _model
    from onnx import helper

    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [("x", ["N", 4])], [("y", ["N", 1])],
               {"w": np.ones((4, 1), np.float32)})
    x = {"x": np.full((1, 4), 3.0, np.float32)}
    d = parse_precision("ap_fixed<8,3>")
    assert Emulator(m, EmulatorConfig(data=d)).run(x)[0][0, 0] == 12.0
    wrap = Emulator(m, EmulatorConfig(data=d, accum=parse_precision("ap_fixed<8,3>"))).run(x)[0][0, 0]
    assert wrap == -4.0  # 3, 6->-2, 1, 4->-4
    sat = Emulator(m, EmulatorConfig(data=d, accum=parse_precision("ap_fixed<8,3,AP_TRN,AP_SAT>"))).run(x)[0][0, 0]
    assert sat == 4 - LSB8
    # products are truncated to the accumulator's fraction before the sum: 4 x (0.75 * 0.25) at 2 bits
    m2 = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [("x", ["N", 4])], [("y", ["N", 1])],
                {"w": np.full((4, 1), 0.25, np.float32)})
    x2 = {"x": np.full((1, 4), 0.75, np.float32)}
    exact = Emulator(m2, EmulatorConfig(data=d)).run(x2)[0][0, 0]
    coarse = Emulator(m2, EmulatorConfig(data=d, accum=parse_precision("ap_fixed<8,6>"))).run(x2)[0][0, 0]
    assert exact == 0.75 and coarse == 0.0  # 0.1875 truncates to 0 at 1/4 steps, four times
