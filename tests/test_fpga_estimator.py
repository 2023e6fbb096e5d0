"""The analytical performance / resource model on small layers computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from backends.fpga.emulator import Emulator, EmulatorConfig, Layer
from backends.fpga.estimator import (FF_FOLD_CAP, FF_FOLD_SLOPE, FF_PER_WEIGHT_ACC_BIT, MUX_LUT_C, MUX_LUT_E,
                                     bram36_count, csd_digits, dsp_per_multiplier, estimate, fifo_cost,
                                     layer_cost, lut_multiplier, mux_luts_per_bit, odd_part_bits, prepare,
                                     weight_classes, weight_stats)
from backends.fpga.fixed import parse_precision
from backends.fpga.parts import PARTS, get_part
from tests.test_fpga_graphs import mlp

U250, Z020 = PARTS["xcu250"], PARTS["xc7z020"]


def dense(w, x_bits=16, w_bits=16, acc_bits=38, name="fc"):
    w = np.asarray(w, dtype=np.int64)
    return Layer(name, "Gemm", "dense", (w.shape[1],), (w.shape[0],), vectors=1, n_in=w.shape[0], n_out=w.shape[1],
                 weights=w, x_bits=x_bits, w_bits=w_bits, acc_bits=acc_bits, out_bits=acc_bits, macs=w.size)


# a 4 -> 3 layer: 12 weights, 2 zeros; non-zero values and their odd parts (value without trailing zeros):
#   4 -> 1 (a shift); 3, 5, 7, 6 -> 3, 10 -> 5, 12 -> 3 (odd part <= 3 bits: shift + one adder);
#   9, 11, 13 (4-bit odd parts: general multiplications; CSD digits 2, 3, 3)
W = [[3, 0, 5], [7, -9, 0], [11, 13, -4], [6, 10, 12]]


def cost(layer, r, part=U250, streaming=False):
    return layer_cost(prepare([layer])[0], r, part, streaming=streaming)


def test_weight_stats_and_classes():
    assert weight_stats(np.array(W)) == (12, 2, 1)
    # (count, zeros, shifts, one-adder constants, general, sum of (CSD digits - 1) over the general ones)
    assert weight_classes(np.array(W)) == (12, 2, 1, 6, 3, (2 - 1) + (3 - 1) + (3 - 1))


def test_csd_digits_against_brute_force_naf():
    def naf(n):  # the textbook non-adjacent form
        digits = 0
        while n:
            if n & 1:
                digits += 1
                n -= 2 - (n & 3)  # digit +1 or -1
            n >>= 1
        return digits
    vals = np.arange(-300, 301)
    assert list(csd_digits(vals)) == [naf(abs(int(v))) for v in vals]
    assert list(odd_part_bits(np.array([0, 1, 2, 3, 12, 40, -7, 9]))) == [0, 1, 1, 2, 2, 3, 3, 4]


def test_dense_latency_fully_parallel_by_hand():
    """R = 1, Latency strategy: the 3 general products are DSPs; every non-zero weight has its
    accumulation adder (acc bits); the 6 one-adder constants cost an (a + w)-bit adder; FFs are
    0.365 per non-zero weight per accumulator bit."""
    c = cost(dense(W), 1)
    assert c.strategy == "latency" and c.multipliers == 3 and c.dsp == 3 and c.adders == 10
    assert c.const_lut_weights == 6
    assert c.lut == 10 * 38 + 6 * (16 + 16)
    assert c.ff == math.ceil(FF_PER_WEIGHT_ACC_BIT * 10 * 38)
    assert c.bram36 == 0 and c.memory == "logic (constants)"
    assert (c.cycles, c.latency_cycles) == (1, 2)  # II = R, + 1 pipeline stage


def test_dense_latency_folded_by_hand():
    """R = 2: ceil(10 / 2) = 5 shared general multipliers (constants no longer help: each sees 2
    weights), all 10 adders stay, each multiplier gets 2:1 operand muxes of (a + w) bits, and the
    partial products are registered: a * min(cap, slope * R) FFs per non-zero weight."""
    c = cost(dense(W), 2)
    assert c.multipliers == 5 and c.dsp == 5 and (c.cycles, c.latency_cycles) == (2, 3)
    mux = MUX_LUT_C * 2 ** MUX_LUT_E
    assert mux == pytest.approx(mux_luts_per_bit(2)) and mux_luts_per_bit(1) == 0
    assert c.lut == math.ceil(10 * 38 + 5 * 32 * mux)
    assert c.ff == math.ceil(FF_PER_WEIGHT_ACC_BIT * 10 * 38 + 10 * 16 * min(FF_FOLD_CAP, FF_FOLD_SLOPE * 2))
    assert c.memory == "logic (constants)" and c.bram36 == 0  # Latency strategy: no weight ROM


def test_resource_strategy_above_the_unroll_limit():
    """More than 4096 weights: hls4ml's Resource strategy, weights in a ROM R deep (BRAM at R >= 64)."""
    big = dense(np.arange(1, 8193).reshape(64, 128) * 3)  # 8192 weights, none zero
    cb = cost(big, 128)
    assert cb.strategy == "resource" and cb.memory == "BRAM" and cb.bram36 == bram36_count(cb.adders * 16, 128)
    assert cb.adders == 64 and cb.multipliers == 64 and cb.cycles == 128
    assert cost(dense(np.full((64, 64), 3)), 128).strategy == "latency"  # 4096: still unrolled


def test_pruning_removes_multipliers():
    rng = np.random.default_rng(0)
    w = rng.integers(100, 1000, (64, 32)) * rng.choice([-1, 1], (64, 32)) * 3
    pruned = w.copy()
    pruned[rng.random(w.shape) < 0.5] = 0
    z = int((pruned == 0).sum())
    assert cost(dense(pruned), 4).dsp == math.ceil((64 * 32 - z) / 4)
    full, half = cost(dense(w), 1), cost(dense(pruned), 1)
    _, _, p1, c1, g1, _ = weight_classes(w)
    _, _, p2, c2, g2, _ = weight_classes(pruned)
    assert full.dsp == g1 and half.dsp == g2 and half.dsp < full.dsp


def test_narrow_operands_go_to_luts():
    """8-bit weights (or 8-bit activations: the narrower operand decides, as in the QKeras CNN
    report) use no DSP. R = 1: the 3 general constants become shift-add chains of (digits - 1)
    adders of (a + w) bits = 5 adders; R = 2: 5 general LUT multipliers (FINN-R) plus muxes."""
    c = cost(dense(W, x_bits=8, w_bits=8, acc_bits=20), 1)
    assert c.dsp == 0
    assert c.lut == 10 * 20 + 6 * 16 + 5 * 16
    assert cost(dense(W, x_bits=6, w_bits=16, acc_bits=24), 1).dsp == 0
    assert lut_multiplier(8, 8) == (2 * math.ceil(16 / 6) - 1) * 16 == 80
    c2 = cost(dense(W, x_bits=8, w_bits=8, acc_bits=20), 2)
    assert c2.dsp == 0 and c2.lut == math.ceil(10 * 20 + 5 * 80 + 5 * 16 * mux_luts_per_bit(2))


def test_dsp_and_bram_geometry():
    assert dsp_per_multiplier(16, 16, U250) == 1
    assert dsp_per_multiplier(27, 18, U250) == 1
    assert dsp_per_multiplier(18, 27, U250) == 1  # the better orientation
    assert dsp_per_multiplier(32, 32, U250) == 4
    assert dsp_per_multiplier(26, 18, Z020) == 2  # DSP48E1 is 25 x 18
    assert bram36_count(72, 512) == 1
    assert bram36_count(144, 1024) == 4
    assert bram36_count(16, 4096) == 2
    assert bram36_count(1, 32768) == 1


def conv_layer(c_in=4, c_out=8, hw=8, w=None):
    w = np.full((c_out, c_in, 3, 3), 3) if w is None else w
    oh = hw - 2
    return Layer("conv", "Conv", "conv", (c_out, oh, oh), (c_in, hw, hw), vectors=oh * oh, n_in=9 * c_in,
                 n_out=c_out, kernel=(3, 3), weights=w, x_bits=16, w_bits=16, acc_bits=40, out_bits=40,
                 macs=oh * oh * c_out * 9 * c_in, attrs={"in_hw": [hw, hw]})


def test_streamed_conv_by_hand():
    """io_stream conv (hls4ml line buffer): one input pixel per R cycles, so 8 x 8 = 64 pixels x R;
    288 weights of value 3 (one-adder constants at R = 1); a (kh - 1) x C_in x a-bit shift-register
    line buffer of ceil(W_in / 32) SRL32s per bit; the 3 x 3 x C_in x a-bit window in FFs."""
    l = conv_layer()
    c = cost(l, 4, streaming=True)
    assert c.cycles == 64 * 4 and c.multipliers == math.ceil(288 / 4) == c.dsp
    assert c.latency_cycles == c.cycles + 1
    line, window = 2 * 4 * 16 * 1, 9 * 4 * 16
    assert c.lut == math.ceil(288 * 40 + 72 * 32 * mux_luts_per_bit(4) + line)
    assert c.ff == math.ceil(FF_PER_WEIGHT_ACC_BIT * 288 * 40 + 288 * 16 * min(FF_FOLD_CAP, FF_FOLD_SLOPE * 4)
                             + window)
    c1 = cost(l, 1, streaming=True)
    assert c1.cycles == 64 and c1.dsp == 0 and c1.const_lut_weights == 288  # 3 = 2 + 1: an adder, no DSP


def test_fifo_rule():
    """One FIFO per channel, as deep as the tensor has pixels: deeper than 16 -> BRAM18 (the
    tutorial's CNN report: depth 36..900 x 16 bit -> 1 BRAM18 each; depth 16 -> registers)."""
    assert fifo_cost(16, 900, 16) == (16, 16 * 35, 16 * 40)
    assert fifo_cost(16, 36, 16) == (16, 16 * 35, 16 * 40)
    assert fifo_cost(24, 16, 16) == (0, 24 * 35, 24 * 6)
    assert fifo_cost(4, 2048, 16) == (4 * 2, 4 * 35, 4 * 40)  # 32 Kbit: two BRAM18 per FIFO
    assert fifo_cost(0, 10, 16) == (0, 0, 0)


def test_streaming_cnn_pipeline():
    """conv (8x8 -> 6x6) -> ReLU -> 2x2 max pool -> dense, streamed: II is the slowest stage (the
    conv reads 64 pixels), the stages overlap so latency = II + one cycle of depth per stage, and
    FIFOs (one per channel, depth = pixels) sit after every stage but the last."""
    conv = conv_layer(w=np.arange(1, 289).reshape(8, 4, 3, 3) * 7)
    relu = Layer("relu", "Relu", "act", (8, 6, 6), (8, 6, 6), vectors=36, n_out=8, x_bits=40, out_bits=16)
    pool = Layer("pool", "MaxPool", "pool", (8, 3, 3), (8, 6, 6), vectors=9, n_in=4, n_out=8, kernel=(2, 2),
                 x_bits=16, out_bits=16, attrs={"pool": "max", "in_hw": [6, 6]})
    fc = dense(np.arange(1, 72 * 10 + 1).reshape(72, 10) * 7, acc_bits=40)
    est = estimate([conv, relu, pool, fc], U250, reuse_factor=1)
    d = est.as_dict()
    assert est.streaming and d["architecture"].startswith("io_stream")
    per = {c["name"]: c for c in d["per_layer"]}
    assert per["conv"]["cycles"] == 64 and per["relu"]["cycles"] == 36 and per["pool"]["cycles"] == 36
    assert d["ii_cycles"] == 64
    assert d["latency_cycles"] == 64 + 4  # each stage adds its pipeline depth (1 cycle) to the slowest
    # FIFOs: conv out 8 ch x 36 deep -> 8 BRAM18; relu out 8 x 36 -> 8 BRAM18; pool out 8 x 9 -> registers
    assert [per[n]["fifo_bram18"] for n in ("conv", "relu", "pool", "fc")] == [8, 8, 0, 0]
    assert d["resources"]["bram36"] == 8  # 16 BRAM18 = 8 BRAM36 tiles
    # pool: 3.5 LUT per comparator bit x 3 comparators x 8 ch x 16 bit, + SRL line buffer, + FIFO LUTs
    assert per["pool"]["lut"] == math.ceil(3.5 * 8 * 3 * 16) + 1 * 8 * 16 * 1 + 8 * 35
    # --fit: the conv's 64 input pixels set the smallest II; the dense layer after it may fold to
    # R = 64 (one vector) without slowing the pipeline
    f = estimate([conv, relu, pool, fc], U250, fit_design=True).as_dict()
    assert f["ii_cycles"] == 64 and f["reuse_factors"] == {"conv": 1, "fc": 64}


def test_fit_folds_just_enough():
    """A 64x128 16-bit layer on the PYNQ-Z2: 80 % of 220 DSPs = 176 multipliers at most, so the
    smallest reuse factor is the least R with ceil(M_eff / R) <= 176."""
    rng = np.random.default_rng(1)
    w = rng.integers(100, 1000, (64, 128)) * 3
    m_eff = w.size - weight_stats(w)[1]  # 8192 weights: Resource strategy, a general multiplier per weight
    r_star = next(r for r in range(1, 10_000) if math.ceil(m_eff / r) <= 176)
    est = estimate([dense(w)], Z020, fit_design=True)
    assert est.fits and est.costs[0].reuse_factor == r_star
    d = est.as_dict()
    assert d["ii_cycles"] == r_star and d["resources"]["dsp"] <= 176
    assert d["throughput_inferences_per_s"] == pytest.approx(100e6 / r_star)
    assert d["latency_s"] == pytest.approx((r_star + 1) / 100e6)


def test_does_not_fit():
    est = estimate([dense(np.full((256, 256), 3))], Z020, reuse_factor=1)
    assert not est.fits and any(p.startswith("DSP") for p in est.problems)
    assert est.as_dict()["resources"]["percent_of_part"]["dsp"] > 100


def test_jet_tagger_against_published_hls4ml_report():
    """The hls4ml tutorial's jet tagger (16-64-32-32-5 + softmax, ap_fixed<16,6> everywhere, R=1,
    xcu250, 200 MHz) synthesized with Vivado HLS 2019.1: latency 10 cycles, II 1, DSP 2774, LUT
    109,157, FF 13,339, 4 BRAM18 (docs/fpga.md). The model must get the cycles exactly and the
    resources within its documented error band."""
    m = mlp([16, 64, 32, 32, 5], softmax=True, seed=0)
    emu = Emulator(m, EmulatorConfig(data=parse_precision("ap_fixed<16,6>"),
                                     accum=parse_precision("ap_fixed<16,6>")))
    layers = emu.trace({"x": np.zeros((1, 16), np.float32)}, shape_only=True)
    d = estimate(layers, get_part("xcu250"), reuse_factor=1).as_dict()
    assert d["latency_cycles"] == 10 and d["ii_cycles"] == 1
    assert d["latency_ns"] == pytest.approx(50.0)
    r = d["resources"]
    assert 2774 / 2 < r["dsp"] < 2774 * 2
    assert 109_157 / 2 < r["lut"] < 109_157 * 2
    # FF: this report's 13,339 and the same design's Vivado HLS 2019.2 report on xczu7ev (26,905, the
    # RF sweep the FF constants are fitted on) differ by 2x; the model follows the sweep (docs/fpga.md)
    assert 13_339 / 2 < r["ff"] < 13_339 * 2.5
    assert r["bram36"] == 2  # the softmax's two lookup tables = 4 BRAM18
    assert d["estimated"] is True and "not measured" in d["basis"]


# ---- the targets against the published reports (backends/fpga/data/synthesis_reports.json) ----

def test_jet_mlp_rf_sweep_within_targets():
    """hls4ml tutorial, jet MLP at ap_fixed<16,6>, io_parallel Latency, xczu7ev, RF 1..256 (Vivado HLS
    2019.2): at every reuse factor whose design fits the part, LUT and FF within 35 %; II within 5 %,
    DSP within 6 % and latency within 16.5 % (what the model before the LUT/FF rework reached: its
    latency formula is unchanged, 518 against 446 cycles at RF 128)."""
    from backends.fpga import calibration as cal

    rows = cal.sweep_rows(cal.load_reports()["jet-mlp-rf-sweep-xczu7ev"])
    fitting = [r for r in rows if r["fits"]]
    assert [r["reuse_factor"] for r in fitting] == [4, 8, 16, 32, 64, 128, 256]  # RF 1, 2: DSP > 1,728
    for r in fitting:
        e, s = r["est"], r["syn"]
        for q, tol in (("lut", 0.35), ("ff", 0.35), ("ii", 0.05), ("dsp", 0.06), ("latency", 0.165)):
            assert abs(e[q] / s[q] - 1) <= tol, (r["reuse_factor"], q, e[q], s[q])
    # the reuse factors held out of the fit are as close as the fitted ones
    for r in rows:
        if r["reuse_factor"] in cal.HOLD_RF:
            assert abs(r["est"]["lut"] / r["syn"]["lut"] - 1) < 0.1 and abs(r["est"]["ff"] / r["syn"]["ff"] - 1) < 0.1


def test_fitted_constants_reproduce():
    """The constants in the estimator are what the documented fit gives (to their rounding)."""
    import backends.fpga.estimator as E
    from backends.fpga import calibration as cal

    got = cal.fit_constants(cal.load_reports()["jet-mlp-rf-sweep-xczu7ev"])
    for k, v in got.items():
        assert getattr(E, k) == pytest.approx(v, rel=0.02), k


def test_streamed_cnn_report_targets():
    """The tutorial's pruned SVHN CNN (io_stream, xcu250): II within 25 %, DSP within 30 %; BRAM (the
    FIFOs and the softmax tables) as the report counts them."""
    from backends.fpga import calibration as cal

    c = cal.cnn_compare(cal.load_reports()["pruned-cnn-svhn-xcu250"], quantized=False)
    assert c["architecture"].startswith("io_stream")
    assert abs(c["est"]["ii"] / c["csynth"]["ii"] - 1) <= 0.25
    assert abs(c["est"]["dsp"] / c["csynth"]["dsp"] - 1) <= 0.30
    assert abs(c["est"]["latency"] / c["csynth"]["latency"] - 1) <= 0.05  # overlapped stages, not their sum
    assert c["est"]["bram18"] == c["csynth"]["bram18"] == 100


def test_fit_falls_back_to_resource_strategy():
    """The Latency strategy keeps one adder per weight at any reuse factor (hls4ml limits only the
    multipliers), so the jet MLP cannot fit the PYNQ-Z2's LUTs that way; --fit then folds the
    Resource strategy (weights in memory), as an hls4ml user would. Forcing latency: no fit."""
    from backends.fpga import calibration as cal

    layers = cal.jet_mlp_layers()
    forced = estimate(layers, Z020, fit_design=True, strategy="latency")
    assert not forced.fits and any(p.startswith("LUT") for p in forced.problems)
    auto = estimate(layers, Z020, fit_design=True)
    assert auto.fits and {c.strategy for c in auto.costs if c.reuse_factor} == {"resource"}
    assert estimate(layers, U250, fit_design=True).costs[0].strategy == "latency"  # fits as hls4ml's default
    with pytest.raises(ValueError, match="strategy"):
        estimate(layers, U250, strategy="fast")
