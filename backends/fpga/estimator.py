"""Analytical performance and resource model of an hls4ml design (io_parallel / io_stream).

Where it sits: the fpga backend traces the ONNX graph into layers (:mod:`backends.fpga.emulator`),
this module costs them on a part (:mod:`backends.fpga.parts`); the result goes to the case's
``estimates``. Every formula and constant, with its source and what was fitted on what, is in
docs/fpga.md ("Estimates"); the published reports it is checked against are in
``backends/fpga/data/synthesis_reports.json`` (:mod:`backends.fpga.calibration`,
``benchmarks/bench_fpga_vs_synthesis.py``).

MAC layer (Dense, Conv, depthwise Conv), ``M`` weights, ``nz`` non-zero, reuse factor ``R``, ``V``
output vectors, widths ``a`` (input), ``w`` (weight), ``acc``:

* **Latency strategy** (hls4ml ``dense_latency``; layers of <= 4096 weights): at R = 1 weights are
  constants - a power of two is a shift, a constant with a 2-3 bit odd part a shift and one adder,
  the rest multipliers; at R > 1, ``ceil(nz / R)`` shared general multipliers with R:1 operand
  muxes (``(a + w) * MUX_LUT_C * R ** MUX_LUT_E`` LUTs each). The accumulation stays unrolled:
  ``nz * acc`` adder LUTs at every R. DSPs when both operands have >= 9 bits, else LUTs. FFs
  ``FF_PER_WEIGHT_ACC_BIT * nz * acc`` + ``nz * a * min(FF_FOLD_CAP, FF_FOLD_SLOPE * R)``.
* **Resource strategy** (larger layers, or asked for): ``ceil(nz / R)`` multiply-accumulate units,
  weights in a ROM ``R`` deep (LUTRAM / BRAM / URAM).
* cycles ``V * R`` (a streamed conv: input pixels ``* R``), pipeline depth 1.

io_stream: line buffers in shift registers, one FIFO per channel between stages (BRAM18 when deeper
than 16), stages overlapping: latency = II + the stages' depths. Design II = max of stage cycles.

Folding: a given ``reuse_factor`` N for every MAC layer, or (``fit``) the smallest II whose design
stays under the part's headroom (70 % LUT, 50 % FF, 80 % DSP/BRAM/URAM, FINN's defaults), each layer
folded just enough to reach it; with ``strategy="auto"`` the search falls back to the Resource
strategy when no Latency folding fits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from backends.fpga.parts import DSP_SLICES, HEADROOM

RESOURCES = ("dsp", "lut", "ff", "bram36", "uram")

# ---- constants: each with its source; docs/fpga.md "Constants" lists them with what was fitted on what ----
#: products whose narrower operand has fewer bits go to LUTs (hls4ml's own DSP estimator,
#: hls4ml/optimization/dsp_aware_pruning/objectives/vivado_objectives.py: weight width < 9 -> no DSP;
#: applied to both operands: the tutorial's QKeras CNN report maps 6-bit activations x 16-bit weights
#: of its output Dense to LUTs, 83 DSPs for 640 products)
DSP_MIN_WEIGHT_BITS = 9
#: Vivado HLS refuses to unroll more than 4096 operations: larger layers need hls4ml's Resource
#: strategy (tutorial part 6; hls4ml issue #1013 "the limit is 4,096")
LATENCY_MAX_WEIGHTS = 4096
#: a constant whose odd part (the value without its trailing zero bits) has at most this many bits
#: (3, 5, 7 times a power of two) is a shift and one adder, not a multiplier (strength reduction;
#: Vivado maps multipliers by operand size, UG901 "Multipliers Implementation"). An assumption (the
#: reports do not publish their weights), checked in aggregate: it moves 8 % of the jet MLP's products
#: off DSPs at RF 1 with the benchmark's weights; the published report has 3,912 of 4,256 on DSPs (-8 %).
CONST_LUT_MAX_BITS = 3
#: LUTs per adder bit: one LUT6 + one carry-chain bit per bit (UltraScale CLB, UG574)
ADDER_LUT_PER_BIT = 1.0
#: LUTs of the operand multiplexers of one shared multiplier in a folded Latency-strategy layer, per
#: operand bit: ``MUX_LUT_C * R ** MUX_LUT_E`` (a R:1 mux of LUT6s grows ~R/4; HLS shares some).
#: Fitted on the jet-MLP reuse-factor sweep (xczu7ev) at RF 2, 4, 16, 64, 256; RF 8, 32, 128 held out.
MUX_LUT_C = 0.48
MUX_LUT_E = 0.88
#: pipeline registers of a fully parallel (R = 1) Latency-strategy layer: FFs per non-zero weight
#: per accumulator bit. Fitted on the same sweep's RF 1 point (26,905 FF).
FF_PER_WEIGHT_ACC_BIT = 0.365
#: extra registers of a folded Latency layer per non-zero weight, in units of the input width ``a``:
#: ``a * min(FF_FOLD_CAP, FF_FOLD_SLOPE * R)`` (partial products held across the R cycles; hls4ml's
#: FF estimator counts ~ weights x width for Latency designs). Fitted on the sweep's RF 2, 4, 16, 64, 256.
FF_FOLD_SLOPE = 0.025
FF_FOLD_CAP = 0.48
LUTRAM_MAX_DEPTH = 64
URAM_MIN_BITS = 1 << 20
RELU_LUT_PER_BIT = 1.75  # 28 LUTs per 16-bit ReLU element in the hls4ml tutorial's synthesis report
SOFTMAX_LUT_PER_CLASS = 16
FF_PER_OUTPUT_BIT = 4.6  # Resource strategy: FFs per accumulator bit per parallel output (see docs/fpga.md)
SOFTMAX_DEPTH = 2
#: io_stream: hls4ml puts one FIFO per channel between stages, as deep as the tensor has pixels; the
#: tutorial's pruned-CNN report keeps FIFOs of depth <= 16 in registers and gives every deeper one
#: a BRAM18 (depth 36 .. 900 x 16 bit); ~35 LUT and 40 (BRAM) / 6 (registers) FF each (its FIFO table)
FIFO_REG_MAX_DEPTH = 16
FIFO_LUT = 35
FIFO_FF_BRAM = 40
FIFO_FF_REG = 6
#: io_stream max-pooling: LUT per comparator bit and FF per channel bit, fitted on the same report's
#: three pooling instances (2,709 / 2,705 / 3,803 LUT, 2,008 / 2,006 / 2,868 FF)
POOL_LUT_PER_BIT = 3.5
POOL_FF_PER_BIT = 7.75
#: one input pixel per cycle and RF: a streamed stage adds this many cycles of pipeline depth
#: (the report: conv 32x32 -> 1027 cycles, pool 30x30 -> 903, design latency = II + 16)
STREAM_DEPTH = 1
BRAM_SHAPES = ((512, 72), (1024, 36), (2048, 18), (4096, 9), (8192, 4), (16384, 2), (32768, 1))
BRAM18_BITS = 18 * 1024


class DoesNotFit(Exception):
    """The design exceeds the part's resources (or no folding makes it fit)."""


@dataclass
class LayerCost:
    name: str
    op: str
    kind: str
    reuse_factor: int | None
    vectors: int
    macs: int
    weights: int
    zero_weights: int
    pow2_weights: int
    multipliers: int
    adders: int
    cycles: int
    latency_cycles: int
    dsp: int
    lut: int
    ff: int
    bram36: int
    uram: int
    x_bits: int = 0
    w_bits: int = 0
    acc_bits: int = 0
    memory: str = ""
    rom_width: int = 0
    rom_depth: int = 0
    rom_bram36: int = 0
    strategy: str = ""
    const_lut_weights: int = 0
    fifo_bram18: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Prep:
    """What the cost of one layer depends on, computed once from the trace."""

    layer: object
    mac: bool
    m: int = 0
    z: int = 0
    p: int = 0  # powers of two (one CSD digit): shifts
    r_max: int = 1
    c: int = 0  # constants whose odd part has 2..CONST_LUT_MAX_BITS bits: one adder each
    g: int = 0  # the rest: general multiplications
    g_digits: int = 0  # sum of (CSD digits - 1) over the general ones (adders of a LUT constant multiplier)
    strategy: str = "auto"  # auto | latency | resource (hls4ml's Strategy)


def bram36_count(width_bits: int, depth: int) -> int:
    """BRAM36 blocks for a ``width x depth`` memory (best of the block's aspect ratios)."""
    if width_bits <= 0 or depth <= 0:
        return 0
    return min(math.ceil(width_bits / w) * math.ceil(depth / d) for d, w in BRAM_SHAPES)


def uram_count(width_bits: int, depth: int) -> int:
    """URAM288 blocks (4K x 72) for a ``width x depth`` memory; words narrower than 72 bits are
    packed several to a row (consecutive weights, read together)."""
    if width_bits <= 0 or depth <= 0:
        return 0
    if width_bits >= 72:
        return math.ceil(width_bits / 72) * math.ceil(depth / 4096)
    return math.ceil(width_bits * depth / (72 * 4096))


def dsp_per_multiplier(a_bits: int, w_bits: int, part: dict) -> int:
    A, B = DSP_SLICES[part.get("dsp_slice", "DSP48E2")]
    return min(math.ceil(a_bits / A) * math.ceil(w_bits / B), math.ceil(w_bits / A) * math.ceil(a_bits / B))


def lut_multiplier(a_bits: int, w_bits: int) -> int:
    """LUTs of one a x w multiplier in fabric (FINN-R, Blott et al. 2018)."""
    s = a_bits + w_bits
    return (2 * math.ceil(s / 6) - 1) * s


def csd_digits(m: np.ndarray) -> np.ndarray:
    """Non-zero digits of the canonical signed-digit (non-adjacent) form of each integer.

    For ``n = |m| > 0`` the NAF weight is ``popcount(n XOR 3n)``: the bits where ``3n`` and ``n``
    differ mark the NAF's non-zero digits (Reitwiesner 1960; e.g. 7 = 8 - 1: 2 digits, 11 = 16 - 4 - 1: 3).
    Zero has no digit."""
    n = np.abs(np.asarray(m, dtype=np.int64)).reshape(-1)
    x = n ^ (3 * n)
    out = np.zeros(n.shape, dtype=np.int64)
    while np.any(x):
        out += x & 1
        x >>= 1
    return out


def weight_stats(w: np.ndarray | None) -> tuple[int, int, int]:
    """(count, zeros, powers of two incl. +-1) of integer weight values."""
    if w is None:
        return 0, 0, 0
    a = np.abs(np.asarray(w, dtype=np.int64)).reshape(-1)
    nz = a[a != 0]
    pow2 = int(np.count_nonzero((nz & (nz - 1)) == 0))
    return int(a.size), int(a.size - nz.size), pow2


def odd_part_bits(m: np.ndarray) -> np.ndarray:
    """Bits of the odd part of each ``|m|`` (``|m|`` without its trailing zeros): 12 = 3 * 4 -> 2; 0 -> 0."""
    n = np.abs(np.asarray(m, dtype=np.int64)).reshape(-1)
    odd = n // np.maximum(n & -n, 1)  # n & -n: the lowest set bit (0 stays 0)
    out = np.zeros(n.shape, dtype=np.int64)
    while np.any(odd):
        out += odd > 0
        odd >>= 1
    return out


def weight_classes(w: np.ndarray | None) -> tuple[int, int, int, int, int, int]:
    """(count, zeros, shifts, one-adder constants, general, sum of CSD digits - 1 over the general
    ones) of integer weights: what a constant multiplication costs at R = 1. Shifts are powers of
    two (odd part 1), one-adder constants have an odd part of at most ``CONST_LUT_MAX_BITS`` bits
    (3, 5, 7: two CSD digits), the rest need a multiplier (a DSP, or a shift-add chain of
    ``digits - 1`` adders when an operand is too narrow for a DSP)."""
    if w is None:
        return 0, 0, 0, 0, 0, 0
    flat = np.asarray(w, dtype=np.int64).reshape(-1)
    ob = odd_part_bits(flat)
    nzm = ob > 0
    shifts = int(np.count_nonzero(ob == 1))
    cheap = int(np.count_nonzero((ob > 1) & (ob <= CONST_LUT_MAX_BITS)))
    gen = ob > CONST_LUT_MAX_BITS
    digits = csd_digits(flat[gen])
    return int(flat.size), int(flat.size - np.count_nonzero(nzm)), shifts, cheap, int(np.count_nonzero(gen)), \
        int(np.sum(digits - 1))


def _streaming(layers) -> bool:
    return any(getattr(l, "vectors", 1) > 1 for l in layers)


STRATEGIES = ("auto", "latency", "resource")


def prepare(layers, strategy: str = "auto") -> list[_Prep]:
    out = []
    for l in layers:
        if l.kind in ("dense", "conv", "dwconv"):
            m, z, p, c, g, gd = weight_classes(l.weights)
            out.append(_Prep(l, True, m, z, p, max(1, m - z), c, g, gd, strategy))
        else:
            out.append(_Prep(l, False))
    return out


def strategy_of(pp: _Prep) -> str:
    """hls4ml's strategy for a MAC layer: the one asked for, or (``auto``) ``latency`` (hls4ml's
    default) while the unrolled layer stays under Vivado HLS's 4096-operation limit, ``resource``
    (weights in memory) above it."""
    if pp.strategy in ("latency", "resource"):
        return pp.strategy
    per_vector = pp.m // max(1, int(pp.layer.groups or 1)) if pp.layer.kind == "dwconv" else pp.m
    return "latency" if per_vector <= LATENCY_MAX_WEIGHTS else "resource"


def in_pixels(l) -> int:
    """Input pixels a streamed conv / pool reads, one per cycle (hls4ml io_stream line buffer)."""
    hw = (l.attrs or {}).get("in_hw")
    if hw and len(hw) >= 2:
        return max(1, int(hw[0]) * int(hw[1]))
    return max(1, int(l.vectors))


def cycle_unit(l) -> int:
    """Cycles a stage needs per unit of reuse factor: its input pixels for a streamed conv or pool
    (one pixel read per cycle, R cycles each), else its output vectors."""
    v = max(1, int(l.vectors))
    if v > 1 and l.kind in ("conv", "dwconv", "pool"):
        return in_pixels(l)
    return v


def mux_luts_per_bit(r: int) -> float:
    """LUTs per operand bit of the R:1 operand multiplexing of one shared multiplier (fitted)."""
    return 0.0 if r <= 1 else MUX_LUT_C * r ** MUX_LUT_E


def fifo_cost(channels: int, depth: int, bits: int) -> tuple[int, int, int]:
    """(BRAM18, LUT, FF) of the ``channels`` FIFOs hls4ml puts after a streamed stage."""
    if channels <= 0 or depth <= 0:
        return 0, 0, 0
    if depth > FIFO_REG_MAX_DEPTH:
        return channels * math.ceil(depth * bits / BRAM18_BITS), channels * FIFO_LUT, channels * FIFO_FF_BRAM
    return 0, channels * FIFO_LUT, channels * FIFO_FF_REG


def _mac_latency(pp: _Prep, r: int, part: dict):
    """Latency strategy (hls4ml ``dense_latency``): every product unrolled, multipliers limited to
    ``ceil((M - z) / R)`` by ``ALLOCATION``; the accumulation stays unrolled (one adder per non-zero
    weight). At R = 1 the weights are constants: shifts are free, one-adder constants cost one
    adder, the rest are DSPs (or LUT shift-add chains when an operand is narrow). At R > 1 each
    shared multiplier sees R different weights: a general multiplier with R:1 operand muxes."""
    l = pp.layer
    a_bits, w_bits, acc = l.x_bits, l.w_bits, l.acc_bits
    nz = max(0, pp.m - pp.z)
    on_dsp = min(a_bits, w_bits) >= DSP_MIN_WEIGHT_BITS
    lut = nz * acc * ADDER_LUT_PER_BIT  # the unrolled accumulation
    if r == 1:
        mult = pp.g
        const_lut = pp.c
        lut += pp.c * (a_bits + w_bits) * ADDER_LUT_PER_BIT
        if on_dsp:
            dsp = mult * dsp_per_multiplier(a_bits, w_bits, part)
        else:
            dsp = 0
            lut += pp.g_digits * (a_bits + w_bits) * ADDER_LUT_PER_BIT  # shift-add constant multipliers
        ff = FF_PER_WEIGHT_ACC_BIT * nz * acc
    else:
        mult = math.ceil(nz / r)
        const_lut = 0
        if on_dsp:
            dsp = mult * dsp_per_multiplier(a_bits, w_bits, part)
        else:
            dsp = 0
            lut += mult * lut_multiplier(a_bits, w_bits)
        lut += mult * (a_bits + w_bits) * mux_luts_per_bit(r)
        ff = FF_PER_WEIGHT_ACC_BIT * nz * acc + nz * a_bits * min(FF_FOLD_CAP, FF_FOLD_SLOPE * r)
    return mult, nz, dsp, lut, ff, const_lut


def _mac_resource(pp: _Prep, r: int, part: dict):
    """Resource strategy (hls4ml ``dense_resource``): weights in a ROM ``R`` deep, ``ceil(nz/R)``
    multiply-accumulate units, each a general multiplier and an accumulator."""
    l = pp.layer
    a_bits, w_bits, acc = l.x_bits, l.w_bits, l.acc_bits
    mult = math.ceil(max(0, pp.m - pp.z - (pp.p if r == 1 else 0)) / r)
    adders = math.ceil(max(0, pp.m - pp.z) / r)
    if min(a_bits, w_bits) >= DSP_MIN_WEIGHT_BITS:
        dsp, lut = mult * dsp_per_multiplier(a_bits, w_bits, part), 0
    else:
        dsp, lut = 0, mult * lut_multiplier(a_bits, w_bits)
    lut += adders * acc * ADDER_LUT_PER_BIT
    n_par = min(int(l.n_out or 1), max(1, adders))
    ff = FF_PER_OUTPUT_BIT * n_par * acc + (adders * acc if r > 1 else 0)
    return mult, adders, dsp, lut, ff, 0


def layer_cost(pp: _Prep, r: int | None, part: dict, streaming: bool, target_ii: int | None = None) -> LayerCost:
    l = pp.layer
    v = max(1, int(l.vectors))
    if pp.mac:
        r = max(1, min(int(r or 1), pp.r_max))
        a_bits, w_bits, acc = l.x_bits, l.w_bits, l.acc_bits
        strat = strategy_of(pp)
        fn = _mac_latency if strat == "latency" else _mac_resource
        mult, adders, dsp, lut, ff, const_lut = fn(pp, r, part)
        bram = uram = 0
        memory = "logic (constants)" if strat == "latency" else "ROM"
        width = 0
        if strat == "resource":
            width = adders * w_bits
            if r == 1:
                memory = "logic (constants)"
            elif r < LUTRAM_MAX_DEPTH:
                lut += width * math.ceil(r / 64)
                memory = "LUTRAM"
            elif part.get("uram", 0) and width * r >= URAM_MIN_BITS:
                uram = uram_count(width, r)
                memory = "URAM"
            else:
                bram = bram36_count(width, r)
                memory = "BRAM"
        rom = (width, r, bram) if memory == "BRAM" else (0, 0, 0)
        cycles = v * r
        conv_stream = l.kind in ("conv", "dwconv") and v > 1
        if conv_stream:
            cycles = in_pixels(l) * r  # one input pixel per R cycles through the line buffer
            kh, kw = (tuple(l.kernel) + (1, 1))[:2] if l.kernel else (1, 1)
            c_in = int(l.in_shape[0]) if l.in_shape else 1
            w_in = ((l.attrs or {}).get("in_hw") or [1, 1])[1]
            # line buffer: (kh - 1) rows of W_in pixels x C_in channels in shift registers (SRL32)
            lut += (kh - 1) * c_in * a_bits * math.ceil(w_in / 32)
            ff += kh * kw * c_in * a_bits  # the sliding window
        lat = cycles + (STREAM_DEPTH if streaming else 1)
        return LayerCost(l.name, l.op, l.kind, r, v, int(l.macs), pp.m, pp.z, pp.p, mult, adders, cycles, lat,
                         int(dsp), math.ceil(lut), math.ceil(ff), bram, uram, a_bits, w_bits, acc, memory, *rom,
                         strategy=strat, const_lut_weights=const_lut)
    # non-MAC stages: one vector (pixel / token) per cycle, or fewer channels at a time when the
    # (hls4ml io_stream: a stage reads one pixel per cycle with all its channels in parallel)
    shape = tuple(l.out_shape or (1,))
    n_par = int(shape[0]) if v > 1 else int(np.prod(shape)) if shape else 1
    fold = 1  # hls4ml keeps every channel of a stage in parallel (one pixel per cycle), folded or not
    bits = l.out_bits or 16
    dsp = lut = ff = bram = 0
    depth = 1
    cycles = v * fold if streaming else 1
    if l.kind == "act":
        lut = math.ceil(n_par * bits * RELU_LUT_PER_BIT)
        depth = 0
    elif l.kind == "softmax":
        dsp = n_par
        lut = SOFTMAX_LUT_PER_CLASS * n_par
        bram = 2
        depth = SOFTMAX_DEPTH
    elif l.kind == "add":
        lut = n_par * bits
        depth = 0
    elif l.kind == "scale":
        if part and bits >= DSP_MIN_WEIGHT_BITS:
            dsp = n_par
        else:
            lut = n_par * lut_multiplier(bits, bits)
        lut += n_par * bits
        depth = 0
    elif l.kind == "pool":
        k = max(1, int(np.prod(l.kernel))) if l.kernel else 1
        c = math.ceil(int(l.n_out or 1) / fold)
        x_bits = l.x_bits or bits
        extra = math.ceil(math.log2(k)) if (l.attrs or {}).get("pool") == "avg" else 0
        lut = math.ceil(POOL_LUT_PER_BIT * c * (k - 1) * (x_bits + extra))
        ff = math.ceil(POOL_FF_PER_BIT * c * x_bits)
        in_hw = (l.attrs or {}).get("in_hw")
        if v > 1 and in_hw and l.kernel and l.kernel[0] > 1:
            lut += (l.kernel[0] - 1) * c * x_bits * math.ceil(in_hw[1] / 32)  # line buffer in SRL32
        if streaming and v > 1:
            cycles = in_pixels(l) * fold
    if l.kind != "pool":
        ff += n_par * bits  # the stage's output register
    lat = (cycles + max(depth, STREAM_DEPTH)) if streaming else depth  # a streamed stage is a pipeline stage
    return LayerCost(l.name, l.op, l.kind, None, v, int(l.macs or 0), 0, 0, 0, 0, 0, cycles, lat, dsp, lut, ff,
                     bram, 0, l.x_bits, 0, 0, "")


def design(preps: list[_Prep], reuse: list[int | None], part: dict, streaming: bool) -> list[LayerCost]:
    """Cost every layer; element-wise stages of a streamed design are narrowed to the II the MAC
    layers set (no stage needs to be faster than the slowest one)."""
    target = max([cycle_unit(pp.layer) * max(1, min(int(r or 1), pp.r_max))
                  for pp, r in zip(preps, reuse) if pp.mac] or [1])
    costs = [layer_cost(pp, r, part, streaming, target) for pp, r in zip(preps, reuse)]
    if streaming:  # io_stream: a FIFO per channel after every stage but the last
        for pp, c in zip(preps[:-1], costs[:-1]):
            l = pp.layer
            shape = tuple(l.out_shape or (1,))
            v = max(1, int(l.vectors))
            channels = int(shape[0]) if v > 1 else int(np.prod(shape))
            b18, lut, ff = fifo_cost(channels, v, int(l.out_bits or l.acc_bits or 16))
            c.fifo_bram18 = b18
            c.bram36 += math.ceil(b18 / 2)  # two BRAM18 per BRAM36 tile
            c.lut += lut
            c.ff += ff
    # BRAM over budget on a part with URAM: move the largest weight ROMs to URAM
    if part.get("uram"):
        budget = part.get("bram36", 0) * HEADROOM["bram36"]
        total = sum(c.bram36 for c in costs)
        for c in sorted((c for c in costs if c.rom_bram36), key=lambda c: -c.rom_bram36):
            if total <= budget:
                break
            c.bram36 -= c.rom_bram36
            total -= c.rom_bram36
            c.uram += uram_count(c.rom_width, c.rom_depth)
            c.memory, c.rom_bram36 = "URAM", 0
    return costs


def totals(costs: list[LayerCost]) -> dict:
    return {k: int(sum(getattr(c, k) for c in costs)) for k in RESOURCES}


def over_budget(tot: dict, part: dict, headroom: dict) -> list[str]:
    out = []
    for k in RESOURCES:
        cap = part.get(k, 0) * headroom.get(k, 1.0)
        if tot[k] > cap:
            out.append(f"{k.upper()} {tot[k]:,} > {cap:,.0f} ({headroom.get(k, 1.0):.0%} of {part.get(k, 0):,})")
    return out


def _reuse_for_target(preps: list[_Prep], target: int) -> list[int | None]:
    out = []
    for pp in preps:
        if not pp.mac:
            out.append(None)
            continue
        out.append(max(1, min(pp.r_max, target // cycle_unit(pp.layer))))
    return out


def fit(preps: list[_Prep], part: dict, headroom: dict, streaming: bool) -> tuple[list[int | None], list[str]]:
    """Smallest II whose design fits under the headroom; returns (reuse factors, problems)."""
    lo = max([cycle_unit(pp.layer) for pp in preps] or [1])
    hi = max([cycle_unit(pp.layer) * pp.r_max for pp in preps if pp.mac] or [lo])
    hi = max(hi, lo)

    def ok(t: int) -> bool:
        return not over_budget(totals(design(preps, _reuse_for_target(preps, t), part, streaming)), part, headroom)

    grid = sorted({lo, hi, *(int(round(lo * 1.08 ** k)) for k in range(0, 2000) if lo * 1.08 ** k <= hi)})
    prev = None
    for t in grid:
        if ok(t):
            if prev is not None:  # refine between the last failing and this fitting point
                a, b = prev, t
                while b - a > 1:
                    mid = (a + b) // 2
                    if ok(mid):
                        b = mid
                    else:
                        a = mid
                t = b
            return _reuse_for_target(preps, t), []
        prev = t
    reuse = _reuse_for_target(preps, hi)
    return reuse, over_budget(totals(design(preps, reuse, part, streaming)), part, headroom)


@dataclass
class Estimate:
    part: dict
    clock_mhz: float
    costs: list[LayerCost]
    fits: bool
    problems: list[str]
    mode: str  # "fit" | "reuse_factor"
    streaming: bool
    headroom: dict = field(default_factory=lambda: dict(HEADROOM))

    @property
    def ii_cycles(self) -> int:
        return max([c.cycles for c in self.costs] or [1])

    @property
    def latency_cycles(self) -> int:
        """io_parallel: the sum over stages (each waits for the previous); io_stream: the stages
        overlap, so the slowest stage's cycles plus every stage's pipeline depth (the tutorial's CNN:
        II 1028, latency 1044)."""
        if self.streaming:
            return max(1, self.ii_cycles + sum(c.latency_cycles - c.cycles for c in self.costs))
        return max(1, sum(c.latency_cycles for c in self.costs))

    def as_dict(self, batch: int = 1) -> dict:
        f = self.clock_mhz * 1e6
        ii, lat = self.ii_cycles, self.latency_cycles
        tot = totals(self.costs)
        pct = {k: (100.0 * tot[k] / self.part[k] if self.part.get(k) else (0.0 if tot[k] == 0 else math.inf))
               for k in RESOURCES}
        batch_cycles = lat + (max(1, batch) - 1) * ii
        macs = sum(c.macs for c in self.costs)
        return {
            "estimated": True,
            "basis": "estimated by an analytical dataflow model (not synthesized, not measured)",
            "part": self.part["name"], "part_number": self.part["part"], "board": self.part["board"],
            "clock_mhz": self.clock_mhz,
            "architecture": "io_stream (dataflow, line buffers)" if self.streaming else "io_parallel (latency strategy)",
            "folding": self.mode,
            "reuse_factors": {c.name: c.reuse_factor for c in self.costs if c.reuse_factor is not None},
            "ii_cycles": ii,
            "latency_cycles": lat,
            "latency_s": lat / f,
            "latency_ns": lat / f * 1e9,
            "throughput_inferences_per_s": f / ii,
            "batch": batch,
            "batch_latency_cycles": batch_cycles,
            "batch_latency_ns": batch_cycles / f * 1e9,
            "throughput": {"samples_per_s": max(1, batch) * f / batch_cycles,
                           "steady_state_inferences_per_s": f / ii},
            "macs_per_inference": macs,
            "peak_macs_per_s": sum(c.macs / max(1, c.cycles) for c in self.costs) * f,
            "resources": {**tot, "percent_of_part": {k: round(v, 2) for k, v in pct.items()},
                          "available": {k: self.part.get(k, 0) for k in RESOURCES},
                          "headroom": dict(self.headroom)},
            "fits": self.fits,
            "within_headroom": not over_budget(tot, self.part, self.headroom),
            "fit_problems": list(self.problems),
            "per_layer": [{**c.as_dict(), "latency_ns": c.latency_cycles / f * 1e9} for c in self.costs],
        }


def estimate(layers, part: dict, *, reuse_factor: int | None = None, fit_design: bool = False,
             clock_mhz: float | None = None, headroom: dict | None = None, strategy: str = "auto") -> Estimate:
    """Cost a traced design on ``part`` with a given reuse factor, or folded to fit (``fit_design``).

    ``strategy``: hls4ml's ``latency`` or ``resource`` for every MAC layer, or ``auto`` (Latency up to
    4096 weights a layer, Resource above; with ``fit_design``, when no folding of that fits, the
    search is repeated with the Resource strategy everywhere, as an hls4ml user would)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    head = dict(HEADROOM, **(headroom or {}))
    preps = prepare(layers, strategy)
    streaming = _streaming(layers)
    if fit_design:
        reuse, problems = fit(preps, part, head, streaming)
        if problems and strategy == "auto" and any(pp.mac and strategy_of(pp) == "latency" for pp in preps):
            alt = prepare(layers, "resource")
            reuse_alt, problems_alt = fit(alt, part, head, streaming)
            if not problems_alt:
                preps, reuse, problems = alt, reuse_alt, problems_alt
        mode = "fit"
    else:
        r = int(reuse_factor or 1)
        reuse = [r if pp.mac else None for pp in preps]
        mode = f"reuse_factor={r}"
        problems = []
    costs = design(preps, reuse, part, streaming)
    if not fit_design:
        tot = totals(costs)
        problems = [f"{k.upper()} {tot[k]:,} > {part.get(k, 0):,} available" for k in RESOURCES
                    if tot[k] > part.get(k, 0)]
    return Estimate(part, float(clock_mhz or part["clock_mhz"]), costs, not problems, problems, mode, streaming, head)
