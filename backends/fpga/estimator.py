"""Analytical performance and resource model of a dataflow FPGA design (hls4ml / FINN style).

Every layer of the traced graph becomes one hardware stage; stages run concurrently and
stream into each other. The formulas (documented with their sources in docs/fpga.md):

MAC layer (Dense, Conv, depthwise Conv) with ``M`` weights, ``z`` of them zero and ``p`` of them
a power of two (after quantization), reuse factor ``R`` (1 = fully parallel), ``V`` output vectors
per inference (1 for Dense, ``OH*OW`` for Conv):

* multipliers ``P = ceil((M - z - p) / R)``  (zero weights need no multiplier, powers of two are
  shifts; hls4ml: "multipliers = n_in*n_out / R minus the pruned weights / R");
* accumulator adders ``A = ceil((M - z) / R)``;
* DSPs ``= P * ceil(a/A_dsp) * ceil(w/B_dsp)`` (best orientation) when the weight has >= 9 bits,
  else the products go to LUTs: ``P * (2*ceil((a+w)/6) - 1) * (a+w)`` (FINN-R's LUT multiplier);
* LUTs for the adders ``A * acc_bits``; FFs ``4.6 * n_out * acc_bits`` (pipeline registers of the
  outputs computed in parallel), plus ``A * acc_bits`` partial sums when ``R > 1``;
* weights: with ``R = 1`` they are constants folded into the logic; with ``R > 1`` a ROM of depth
  ``R`` and width ``A * w`` bits: LUTRAM when ``R < 64``, URAM (4K x 72, narrow words packed) for
  layers over 1 Mbit on parts that have it, else BRAM36 (512x72 .. 32Kx1, whichever shape needs
  fewest blocks) - the largest BRAM ROMs move to URAM while BRAM is over its headroom;
* cycles per inference ``V * R`` (FINN's MVAU: ``(MH/PE) * (MW/SIMD) * vectors``), pipeline
  depth 1 cycle; a streamed convolution adds a line buffer of ``(kh-1) * W_in * C_in * a`` bits.

Other layers process one vector per cycle (ReLU / BN / Add / pooling / softmax; softmax as hls4ml
builds it: one multiplier per class and two 1024-entry lookup tables).

Design: initiation interval ``II = max over layers of cycles``; throughput ``= clock / II``;
latency = sum over layers of (cycles + depth), FINN's critical-path estimate (pessimistic for
streamed CNNs, whose layers overlap); with all ``V = 1`` (an MLP, io_parallel) element-wise layers
are combinational (0 cycles), as in hls4ml's latency strategy.

Folding: given ``reuse_factor`` N every MAC layer gets ``R = min(N, M - z)``; with ``fit`` the
smallest II whose design stays under the part's headroom (70 % LUT, 50 % FF, 80 % DSP/BRAM/URAM,
FINN's defaults) is searched, each layer folded just enough to reach that II.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from backends.fpga.parts import DSP_SLICES, HEADROOM

RESOURCES = ("dsp", "lut", "ff", "bram36", "uram")
DSP_MIN_WEIGHT_BITS = 9
LUTRAM_MAX_DEPTH = 64
URAM_MIN_BITS = 1 << 20
RELU_LUT_PER_BIT = 1.75  # 28 LUTs per 16-bit ReLU element in the hls4ml tutorial's synthesis report
SOFTMAX_LUT_PER_CLASS = 16
FF_PER_OUTPUT_BIT = 4.6  # FFs per accumulator bit per parallel output (hls4ml tutorial report: ~74/16-bit output)
SOFTMAX_DEPTH = 2
BRAM_SHAPES = ((512, 72), (1024, 36), (2048, 18), (4096, 9), (8192, 4), (16384, 2), (32768, 1))


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

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Prep:
    """What the cost of one layer depends on, computed once from the trace."""

    layer: object
    mac: bool
    m: int = 0
    z: int = 0
    p: int = 0
    r_max: int = 1


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


def weight_stats(w: np.ndarray | None) -> tuple[int, int, int]:
    """(count, zeros, powers of two incl. +-1) of integer weight values."""
    if w is None:
        return 0, 0, 0
    a = np.abs(np.asarray(w, dtype=np.int64)).reshape(-1)
    nz = a[a != 0]
    pow2 = int(np.count_nonzero((nz & (nz - 1)) == 0))
    return int(a.size), int(a.size - nz.size), pow2


def _streaming(layers) -> bool:
    return any(getattr(l, "vectors", 1) > 1 for l in layers)


def prepare(layers) -> list[_Prep]:
    out = []
    for l in layers:
        if l.kind in ("dense", "conv", "dwconv"):
            m, z, p = weight_stats(l.weights)
            out.append(_Prep(l, True, m, z, p, max(1, m - z)))
        else:
            out.append(_Prep(l, False))
    return out


def layer_cost(pp: _Prep, r: int | None, part: dict, streaming: bool, target_ii: int | None = None) -> LayerCost:
    l = pp.layer
    v = max(1, int(l.vectors))
    if pp.mac:
        r = max(1, min(int(r or 1), pp.r_max))
        general = max(0, pp.m - pp.z - pp.p)
        mult = math.ceil(general / r)
        adders = math.ceil(max(0, pp.m - pp.z) / r)
        a_bits, w_bits, acc = l.x_bits, l.w_bits, l.acc_bits
        if w_bits >= DSP_MIN_WEIGHT_BITS:
            dsp = mult * dsp_per_multiplier(a_bits, w_bits, part)
            lut = 0
        else:
            dsp = 0
            lut = mult * lut_multiplier(a_bits, w_bits)
        lut += adders * acc
        # registers: the adder tree's pipeline stages per output computed in parallel (calibrated on
        # the hls4ml tutorial report: ~4.6 FF per output bit), plus partial sums when folded
        n_par = min(int(l.n_out or 1), max(1, adders))  # outputs in flight: all of them unless folded
        ff = math.ceil(FF_PER_OUTPUT_BIT * n_par * acc) + (adders * acc if r > 1 else 0)
        bram = uram = 0
        memory = "logic (constants)"
        if r > 1:
            width = adders * w_bits
            if r < LUTRAM_MAX_DEPTH:
                lut += width * math.ceil(r / 64)
                memory = "LUTRAM"
            elif part.get("uram", 0) and width * r >= URAM_MIN_BITS:
                uram = uram_count(width, r)
                memory = "URAM"
            else:
                bram = bram36_count(width, r)
                memory = "BRAM"
        rom = (width, r, bram) if r > 1 and memory == "BRAM" else (0, 0, 0)
        if l.kind in ("conv", "dwconv") and v > 1 and l.kernel and l.kernel[0] > 1:
            c_in = l.in_shape[0] if l.in_shape else 1
            w_in = (l.attrs.get("in_hw") or [1, 1])[1]
            line_bits = (l.kernel[0] - 1) * w_in * c_in * a_bits
            f = max(1, min(c_in, r))  # folded: fewer channels per cycle -> a narrower, deeper buffer
            if line_bits > 18 * 1024:
                bram += (l.kernel[0] - 1) * bram36_count(math.ceil(c_in / f) * a_bits, w_in * f)
            else:
                lut += math.ceil(line_bits / 64)
            ff += math.ceil(l.kernel[0] * l.kernel[1] * c_in * a_bits / r)  # the window (folded: fewer regs)
        cycles = v * r
        return LayerCost(l.name, l.op, l.kind, r, v, int(l.macs), pp.m, pp.z, pp.p, mult, adders, cycles,
                         cycles + 1, dsp, lut, ff, bram, uram, a_bits, w_bits, acc, memory, *rom)
    # non-MAC stages: one vector (pixel / token) per cycle, or fewer channels at a time when the
    # design's II leaves time (streamed designs folded to II = target_ii)
    shape = tuple(l.out_shape or (1,))
    n_par = int(shape[0]) if v > 1 else int(np.prod(shape)) if shape else 1
    fold = 1
    if streaming and target_ii and l.kind != "softmax":
        fold = max(1, min(n_par, target_ii // v))
        n_par = math.ceil(n_par / fold)
    bits = l.out_bits or 16
    dsp = lut = ff = bram = 0
    depth = 1
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
        if (l.attrs or {}).get("pool") == "avg":
            lut = c * (k - 1) * (x_bits + math.ceil(math.log2(k)))
        else:
            lut = c * (k - 1) * x_bits
        ff = c * x_bits
        in_hw = (l.attrs or {}).get("in_hw")
        if v > 1 and in_hw and l.kernel and l.kernel[0] > 1:
            line_bits = (l.kernel[0] - 1) * in_hw[1] * int(l.n_out or 1) * x_bits
            if line_bits > 18 * 1024:
                bram += (l.kernel[0] - 1) * bram36_count(c * x_bits, in_hw[1] * fold)
            else:
                lut += math.ceil(line_bits / 64)
    ff += n_par * bits
    cycles = v * fold if streaming else 1
    lat = (cycles + depth) if streaming else depth
    return LayerCost(l.name, l.op, l.kind, None, v, int(l.macs or 0), 0, 0, 0, 0, 0, cycles, lat, dsp, lut, ff,
                     bram, 0, l.x_bits, 0, 0, "")


def design(preps: list[_Prep], reuse: list[int | None], part: dict, streaming: bool) -> list[LayerCost]:
    """Cost every layer; element-wise stages of a streamed design are narrowed to the II the MAC
    layers set (no stage needs to be faster than the slowest one)."""
    target = max([max(1, int(pp.layer.vectors)) * max(1, min(int(r or 1), pp.r_max))
                  for pp, r in zip(preps, reuse) if pp.mac] or [1])
    costs = [layer_cost(pp, r, part, streaming, target) for pp, r in zip(preps, reuse)]
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
        v = max(1, int(pp.layer.vectors))
        out.append(max(1, min(pp.r_max, target // v)))
    return out


def fit(preps: list[_Prep], part: dict, headroom: dict, streaming: bool) -> tuple[list[int | None], list[str]]:
    """Smallest II whose design fits under the headroom; returns (reuse factors, problems)."""
    lo = max([max(1, int(pp.layer.vectors)) for pp in preps] or [1])
    hi = max([max(1, int(pp.layer.vectors)) * pp.r_max for pp in preps if pp.mac] or [lo])
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
            "peak_macs_per_s": sum(c.adders for c in self.costs) * f,
            "resources": {**tot, "percent_of_part": {k: round(v, 2) for k, v in pct.items()},
                          "available": {k: self.part.get(k, 0) for k in RESOURCES},
                          "headroom": dict(self.headroom)},
            "fits": self.fits,
            "within_headroom": not over_budget(tot, self.part, self.headroom),
            "fit_problems": list(self.problems),
            "per_layer": [{**c.as_dict(), "latency_ns": c.latency_cycles / f * 1e9} for c in self.costs],
        }


def estimate(layers, part: dict, *, reuse_factor: int | None = None, fit_design: bool = False,
             clock_mhz: float | None = None, headroom: dict | None = None) -> Estimate:
    """Cost a traced design on ``part`` with a given reuse factor, or folded to fit (``fit_design``)."""
    head = dict(HEADROOM, **(headroom or {}))
    preps = prepare(layers)
    streaming = _streaming(layers)
    if fit_design:
        reuse, problems = fit(preps, part, head, streaming)
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
