"""Published hls4ml synthesis results and the designs they come from, rebuilt as bench traces them.

Where it sits: beside the estimator (:mod:`backends.fpga.estimator`), for checking it. The reports
are ``backends/fpga/data/synthesis_reports.json`` (each with its source: repository, commit, path).
Each design is rebuilt as the layer list bench's emulator traces (``backends.fpga.emulator.Layer``)
at the published configuration, and costed with :func:`backends.fpga.estimator.estimate`.
``benchmarks/bench_fpga_vs_synthesis.py`` prints the comparison; ``tests/test_fpga_estimator.py``
holds the estimator to the targets on it.

The trained weights of the published models are not published: the weights here are synthetic and
stated, ``N(0, 1/fan_in)`` quantized (truncated) to the weight type, seed 0, magnitude-pruned to the
published sparsity. Only the data-dependent counts (which constants become shifts or one adder
rather than multipliers) depend on that choice.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "synthesis_reports.json"
#: reuse factors of the jet-MLP sweep the fitted constants were fitted on, and those held out
FIT_RF, HOLD_RF = (2, 4, 16, 64, 256), (8, 32, 128)
QUANTITIES = ("ii", "latency", "dsp", "lut", "ff")


def load_reports() -> dict:
    """The designs of the data file, by id."""
    return {d["id"]: d for d in json.loads(DATA.read_text())["designs"]}


def _weights(rng, n_in, n_out, frac_bits, w_bits, sparsity=0.0):
    w = rng.normal(0.0, 1.0 / math.sqrt(n_in), (n_in, n_out))
    lo, hi = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
    m = np.clip(np.floor(w * (1 << frac_bits)), lo, hi).astype(np.int64)  # AP_TRN, as the type converts
    if sparsity:
        cut = np.quantile(np.abs(w), sparsity)
        m[np.abs(w) < cut] = 0
    return m


def jet_mlp_layers(seed=0, bits=16, frac=10, acc=16):
    from backends.fpga.emulator import Layer

    rng = np.random.default_rng(seed)
    out = []
    sizes = [(16, 64), (64, 32), (32, 32), (32, 5)]
    for i, (n_in, n_out) in enumerate(sizes):
        w = _weights(rng, n_in, n_out, frac, bits)
        out.append(Layer(f"fc{i + 1}", "Gemm", "dense", (n_out,), (n_in,), vectors=1, n_in=n_in, n_out=n_out,
                         weights=w, x_bits=bits, w_bits=bits, acc_bits=acc, out_bits=acc, macs=n_in * n_out))
        if i < len(sizes) - 1:
            out.append(Layer(f"relu{i + 1}", "Relu", "act", (n_out,), (n_out,), n_out=n_out, x_bits=acc,
                             out_bits=bits))
    out.append(Layer("softmax", "Softmax", "softmax", (5,), (5,), n_out=5, x_bits=acc, out_bits=bits))
    return out


def svhn_cnn_layers(seed=0, quantized=False):
    """The tutorial's part-6 CNN as bench traces it (io_stream: pixels per stage > 1), BN folded."""
    from backends.fpga.emulator import Layer

    rng = np.random.default_rng(seed)
    a_in = 16
    wb, wf = (6, 5) if quantized else (16, 10)  # quantized_bits(6,0) = ap_fixed<6,1>
    act = 6 if quantized else 16  # quantized_relu(6) = ap_ufixed<6,0>
    acc = 16
    out, c_in, hw = [], 3, 32
    for i, c_out in enumerate((16, 16, 24)):
        oh = hw - 2
        w = _weights(rng, 9 * c_in, c_out, wf, wb, sparsity=0.5)
        out.append(Layer(f"conv_{i}", "Conv", "conv", (c_out, oh, oh), (c_in, hw, hw), vectors=oh * oh,
                         n_in=9 * c_in, n_out=c_out, kernel=(3, 3), weights=w, x_bits=a_in if i == 0 else act,
                         w_bits=wb, acc_bits=acc, out_bits=acc, macs=oh * oh * 9 * c_in * c_out,
                         attrs={"strides": [1, 1], "in_hw": [hw, hw]}))
        out.append(Layer(f"conv_act_{i}", "Relu", "act", (c_out, oh, oh), (c_out, oh, oh), vectors=oh * oh,
                         n_out=c_out, x_bits=acc, out_bits=act))
        ph = oh // 2
        out.append(Layer(f"pool_{i}", "MaxPool", "pool", (c_out, ph, ph), (c_out, oh, oh), vectors=ph * ph,
                         n_in=4, n_out=c_out, kernel=(2, 2), x_bits=act, out_bits=act,
                         attrs={"pool": "max", "in_hw": [oh, oh], "strides": [2, 2]}))
        c_in, hw = c_out, ph
    n = c_in * hw * hw
    for i, (n_out, sp) in enumerate(((42, 0.5), (64, 0.5), (10, 0.0))):
        last = i == 2
        w = _weights(rng, n, n_out, 10 if last else wf, 16 if last else wb, sparsity=sp)
        out.append(Layer("output_dense" if last else f"dense_{i}", "Gemm", "dense", (n_out,), (n,), vectors=1,
                         n_in=n, n_out=n_out, weights=w, x_bits=act, w_bits=16 if last else wb, acc_bits=acc,
                         out_bits=acc, macs=n * n_out))
        if not last:
            if quantized:  # QKeras has no fused Dense+BN: a separate normalize layer (16 bits)
                out.append(Layer(f"bn_dense_{i}", "BatchNormalization", "scale", (n_out,), (n_out,), n_out=n_out,
                                 x_bits=acc, out_bits=16))
            out.append(Layer(f"dense_act_{i}", "Relu", "act", (n_out,), (n_out,), n_out=n_out, x_bits=acc,
                             out_bits=act))
        n = n_out
    out.append(Layer("softmax", "Softmax", "softmax", (10,), (10,), n_out=10, x_bits=acc, out_bits=16))
    return out


def sweep_rows(design: dict, layers=None) -> list[dict]:
    """Estimate vs synthesis at every reuse factor of the jet-MLP sweep:
    ``[{"reuse_factor", "fits", "est": {ii, latency, dsp, lut, ff}, "syn": {...}}]``."""
    from backends.fpga.estimator import estimate
    from backends.fpga.parts import get_part

    layers = layers or jet_mlp_layers()
    part = get_part(design["part"])
    out = []
    for row in design["rows"]:
        d = estimate(layers, part, reuse_factor=row["reuse_factor"]).as_dict()
        res = d["resources"]
        est = {"ii": d["ii_cycles"], "latency": d["latency_cycles"], "dsp": res["dsp"], "lut": res["lut"],
               "ff": res["ff"]}
        out.append({"reuse_factor": row["reuse_factor"], "fits": d["fits"], "est": est,
                    "syn": {k: row[k] for k in QUANTITIES}})
    return out


def cnn_compare(design: dict, quantized: bool) -> dict:
    """Estimate vs the CNN report: totals (csynth and, where published, Vivado synthesis) and per stage."""
    from backends.fpga.estimator import estimate
    from backends.fpga.parts import get_part

    d = estimate(svhn_cnn_layers(quantized=quantized), get_part(design["part"]), reuse_factor=1).as_dict()
    res = d["resources"]
    est = {"ii": d["ii_cycles"], "latency": d["latency_cycles"], "dsp": res["dsp"], "lut": res["lut"],
           "ff": res["ff"], "bram18": 2 * res["bram36"]}
    return {"est": est, "csynth": design["totals"]["csynth"], "vivado_synth": design["totals"].get("vivado_synth", {}),
            "architecture": d["architecture"], "per_layer": {c["name"]: c for c in d["per_layer"]},
            "per_instance": design["per_instance_csynth"]}


def fit_constants(design: dict) -> dict:
    """Re-derive the estimator's fitted constants from the jet-MLP sweep (fit set ``FIT_RF``).

    * ``FF_PER_WEIGHT_ACC_BIT`` = (FF at RF 1 - the model's other FFs) / (non-zero weights x acc bits);
    * ``MUX_LUT_C``, ``MUX_LUT_E``: ``LUT(R) - LUT_model(R, no muxes) = P(R) (a + w) C R^E``, least
      squares of ``log`` over the fit set (``P(R)`` = shared multipliers);
    * ``FF_FOLD_CAP``, ``FF_FOLD_SLOPE``: ``FF(R) - FF(1) = nz a min(CAP, SLOPE R)``: CAP the mean
      over fit points with R >= 64, SLOPE the least-squares slope through 0 of those with R <= 16.
    """
    import backends.fpga.estimator as E
    from backends.fpga.parts import get_part

    layers = jet_mlp_layers()
    part = get_part(design["part"])
    rows = {r["reuse_factor"]: r for r in design["rows"]}
    macs = [l for l in layers if l.kind == "dense"]
    nz = sum(int(np.count_nonzero(l.weights)) for l in macs)
    a, w, acc = macs[0].x_bits, macs[0].w_bits, macs[0].acc_bits
    saved = (E.MUX_LUT_C, E.FF_FOLD_CAP, E.FF_PER_WEIGHT_ACC_BIT)
    try:
        E.MUX_LUT_C, E.FF_FOLD_CAP, E.FF_PER_WEIGHT_ACC_BIT = 0.0, 0.0, 0.0
        d1 = E.estimate(layers, part, reuse_factor=1).as_dict()["resources"]
        f_reg = (rows[1]["ff"] - d1["ff"]) / (nz * acc)
        xs, ys, fold = [], [], {}
        for r in FIT_RF:
            d = E.estimate(layers, part, reuse_factor=r).as_dict()["resources"]
            p = sum(math.ceil(int(np.count_nonzero(l.weights)) / r) for l in macs)
            xs.append(math.log(r))
            ys.append(math.log(max(1e-9, (rows[r]["lut"] - d["lut"]) / (p * (a + w)))))
            fold[r] = (rows[r]["ff"] - rows[1]["ff"]) / (nz * a)
    finally:
        E.MUX_LUT_C, E.FF_FOLD_CAP, E.FF_PER_WEIGHT_ACC_BIT = saved
    e, lnc = np.polyfit(xs, ys, 1)
    small = [(r, v) for r, v in fold.items() if r <= 16]
    return {"FF_PER_WEIGHT_ACC_BIT": f_reg, "MUX_LUT_C": math.exp(lnc), "MUX_LUT_E": float(e),
            "FF_FOLD_SLOPE": sum(r * v for r, v in small) / sum(r * r for r, _ in small),
            "FF_FOLD_CAP": float(np.mean([v for r, v in fold.items() if r >= 64]))}
