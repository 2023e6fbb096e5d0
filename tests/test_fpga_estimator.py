"""The analytical performance / resource model on small layers computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from backends.fpga.emulator import Emulator, EmulatorConfig, Layer
from backends.fpga.estimator import (bram36_count, dsp_per_multiplier, estimate, layer_cost, lut_multiplier,
                                     prepare, weight_stats)
from backends.fpga.fixed import parse_precision
from backends.fpga.parts import PARTS, get_part
from tests.test_fpga_graphs import mlp

U250, Z020 = PARTS["xcu250"], PARTS["xc7z020"]


def dense(w, x_bits=16, w_bits=16, acc_bits=38, name="fc"):
    w = np.asarray(w, dtype=np.int64)
    return Layer(name, "Gemm", "dense", (w.shape[1],), (w.shape[0],), vectors=1, n_in=w.shape[0], n_out=w.shape[1],
                 weights=w, x_bits=x_bits, w_bits=w_bits, acc_bits=acc_bits, out_bits=acc_bits, macs=w.size)


# a 4 -> 3 layer: 12 weights, 2 zeros, 1 power of two (+-2^k), 9 general multiplications
W = [[3, 0, 5], [7, -9, 0], [11, 13, -4], [6, 10, 12]]


def cost(layer, r, part=U250):
    return layer_cost(prepare([layer])[0], r, part, streaming=False)


def test_weight_stats():
    assert weight_stats(np.array(W)) == (12, 2, 1)


def test_dense_fully_parallel_by_hand():
    c = cost(dense(W), 1)
    assert c.multipliers == 9 and c.adders == 10  # zeros need nothing, the power of two is a shift
    assert c.dsp == 9  # 16 x 16 fits one DSP48E2 (27 x 18)
    assert c.lut == 10 * 38  # one accumulator-wide adder per non-zero term
    assert c.bram36 == 0 and c.memory == "logic (constants)"
    assert (c.cycles, c.latency_cycles) == (1, 2)  # II = R, + 1 pipeline stage


def test_dense_folded_by_hand():
    c = cost(dense(W), 2)
    assert c.multipliers == math.ceil(9 / 2) == 5 and c.adders == 5
    assert c.dsp == 5 and (c.cycles, c.latency_cycles) == (2, 3)
    assert c.memory == "LUTRAM" and c.lut == 5 * 38 + 5 * 16  # adders + a 2-deep, 80-bit weight ROM
    big = dense(np.arange(1, 4097).reshape(64, 64) * 3)  # 4096 weights, none zero, few powers of two
    cb = cost(big, 128)
    assert cb.memory == "BRAM" and cb.bram36 == bram36_count(cb.adders * 16, 128)
    assert cb.cycles == 128


def test_pruning_removes_multipliers():
    rng = np.random.default_rng(0)
    w = rng.integers(100, 1000, (64, 32)) * rng.choice([-1, 1], (64, 32)) * 3  # no zero, no power of two
    full = cost(dense(w), 1)
    pruned = w.copy()
    pruned[rng.random(w.shape) < 0.5] = 0
    z = int((pruned == 0).sum())
    half = cost(dense(pruned), 1)
    assert full.dsp == 64 * 32 and half.dsp == 64 * 32 - z
    assert cost(dense(pruned), 4).dsp == math.ceil((64 * 32 - z) / 4)


def test_narrow_weights_go_to_luts():
    c = cost(dense(W, x_bits=8, w_bits=8, acc_bits=20), 1)
    assert c.dsp == 0
    assert lut_multiplier(8, 8) == (2 * math.ceil(16 / 6) - 1) * 16 == 80
    assert c.lut == 9 * 80 + 10 * 20


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


def test_conv_cycles_are_vectors_times_reuse():
    w = np.full((8, 4, 3, 3), 3)
    l = Layer("conv", "Conv", "conv", (8, 6, 6), (4, 8, 8), vectors=36, n_in=36, n_out=8, kernel=(3, 3), weights=w,
              x_bits=16, w_bits=16, acc_bits=40, out_bits=40, macs=36 * 8 * 36, attrs={"in_hw": [8, 8]})
    c = layer_cost(prepare([l])[0], 4, U250, streaming=True)
    assert c.cycles == 36 * 4 and c.multipliers == math.ceil(288 / 4)
    assert c.lut >= c.adders * 40  # plus a (kh-1) x W x C line buffer in LUTRAM


def test_fit_folds_just_enough():
    """A 64x128 16-bit layer on the PYNQ-Z2: 80 % of 220 DSPs = 176 multipliers at most, so the
    smallest reuse factor is the least R with ceil(M_eff / R) <= 176."""
    rng = np.random.default_rng(1)
    w = rng.integers(100, 1000, (64, 128)) * 3
    m_eff = w.size - weight_stats(w)[1] - weight_stats(w)[2]
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
    assert 13_339 / 2 < r["ff"] < 13_339 * 2
    assert r["bram36"] == 2  # the softmax's two lookup tables = 4 BRAM18
    assert d["estimated"] is True and "not measured" in d["basis"]
