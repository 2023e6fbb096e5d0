"""int8-static: weights and activations int8, activation ranges calibrated ahead of time (QDQ).

onnxruntime.quantization.quantize_static over the pre-processed base graph, QDQ format
(QuantizeLinear/DequantizeLinear pairs that runtimes fuse into integer kernels),
per-channel symmetric int8 weights, uint8 asymmetric activations (U8S8, onnxruntime's
recommended format on x86 CPUs), MinMax calibration over the base's calibration split
(``calib.npz``, held apart from train and eval). Attention graphs (softmax / layer norm
present) get only their matrix products with constant weights quantized, except those fed by a GELU
(kept fp32: ``gelu_fed``); see ``_selection``. ``reduce_range`` (7-bit weights)
avoids the u8s8 saturation of AVX2 CPUs without VNNI (``vpmaddubsw`` adds pairs of u8 x s8 products
into int16): on by default, so one artifact is right on every x86 CPU. Measured on the Fashion-MNIST
ResNet (AVX2, no VNNI): top-1 87.03 % with 8-bit weights (-3.03 points: saturation in the residual
convolutions) and 90.03 % with reduce_range (fp32: 90.06 %). Depthwise convolutions keep 8-bit weights
even then (``depthwise_weights``; a per-tensor override): 7-bit depthwise weights alone cut EfficientNet-Lite0's
top-1 agreement with fp32 from 0.878 to 0.744 (weights-only rounding), and on this AVX2 CPU the whole int8-static
EfficientNet goes from 0.667 to 0.778 agreement on the 90 photo views (docs/zoo.md). Models without depthwise
convolutions (the ResNets, MLPs, MiniLM) are quantized exactly as before.

No torch form: int8 runs through onnxruntime (the torch runtime refuses int8).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from harness.errors import BenchError
from suites.recipes import _common as C


def _reader(calib: dict, batch: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            n = len(next(iter(calib.values())))
            self._batches = iter([{k: np.ascontiguousarray(v[i:i + batch]) for k, v in calib.items()}
                                  for i in range(0, n, batch)])

        def get_next(self):
            return next(self._batches, None)

    return Reader()


#: ops whose presence marks an attention model: there only the matrix products are quantized
_ATTENTION_MARKERS = {"Softmax", "LayerNormalization"}
_MAC_OPS = ["MatMul", "Gemm", "Conv"]


def _selection(path: Path, op_types) -> tuple[list | None, list | None, str]:
    """``(op types, node names, policy)`` to quantize: every op the QDQ quantizer supports
    (CNNs, MLPs), or -- when the graph has softmax / layer norm -- only the matrix products
    with a constant weight: quantizing the attention products of two activations, the
    residual adds and GELU's inputs wrecks a transformer's outputs."""
    import onnx

    if op_types is not None:
        return list(op_types), None, "given"
    m = onnx.load(str(path), load_external_data=False)
    if not {n.op_type for n in m.graph.node} & _ATTENTION_MARKERS:
        return None, None, "every op type the QDQ quantizer supports"
    inits = {t.name for t in m.graph.initializer}
    after_gelu = gelu_fed(m)
    nodes = [n.name for n in m.graph.node
             if n.op_type in _MAC_OPS and len(n.input) > 1 and n.input[1] in inits and n.name
             and n.name not in after_gelu]
    return list(_MAC_OPS), nodes, ("attention graph: weight matrix products only, except the "
                                   f"{len(after_gelu)} fed by a GELU (kept fp32)")


#: op types that end a GELU (fused forms, or the Mul closing x * 0.5 * (1 + erf(x / sqrt 2)) / its tanh form)
_GELU_OPS = {"Gelu", "FastGelu", "BiasGelu", "QuickGelu"}


def gelu_fed(model) -> set[str]:
    """Names of the matrix products whose activation input comes straight from a GELU.

    The input of a transformer's second feed-forward product is GELU's output: a long-tailed
    distribution (a few large values, most near zero) that one per-tensor uint8 scale cannot
    hold. Measured on MiniLM-L6 (AVX2, MinMax over 96 sentences): quantizing those 6 products
    takes the embeddings' cosine to fp32 from 0.985 to 0.916 and WordSim-353 Spearman from
    0.731 to 0.702 (fp32 0.729); keeping any other group of 6 in fp32 (value, attention output, FFN
    input) recovers at most 0.01 of cosine.
    A GELU is a fused op, or a Mul with an Erf or Tanh at most four nodes above it.
    """
    producer = {o: n for n in model.graph.node for o in n.output}

    def is_gelu(node, depth: int = 0) -> bool:
        if node is None or depth > 4 or (depth > 0 and node.op_type in _MAC_OPS):
            return False  # only elementwise ops lie between a GELU's Erf/Tanh and its closing Mul
        if node.op_type in _GELU_OPS or (depth > 0 and node.op_type in ("Erf", "Tanh")):
            return True
        if depth == 0 and node.op_type != "Mul":
            return False
        return any(is_gelu(producer.get(i), depth + 1) for i in node.input)

    return {n.name for n in model.graph.node
            if n.op_type in _MAC_OPS and n.input and is_gelu(producer.get(n.input[0]))}


def depthwise_weights(path: Path) -> list[str]:
    """Names of the constant weights of depthwise convolutions (``group`` == input channels, one
    input channel per group) in the graph at ``path``."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    shapes = {t.name: list(t.dims) for t in m.graph.initializer}
    out = []
    for n in m.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        w = n.input[1] if n.op_type == "Conv" and len(n.input) > 1 else None
        if w in shapes and group > 1 and len(shapes[w]) == 4 and shapes[w][1] == 1:
            out.append(w)
    return out


def apply(base, out_dir: Path, *, per_channel: bool = True, reduce_range: bool = True,
          calibrate_method: str = "MinMax", calib_batch: int = 8, op_types: tuple | None = None) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib = base.calibration_data()
    if not calib:
        raise BenchError(f"int8-static: model {base.name} has no calibration data (calib.npz)")
    for inp in base.inputs:
        calib[inp["name"]] = calib[inp["name"]].astype(inp.get("dtype") or "float32")
    n_calib = len(next(iter(calib.values())))
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_info = C.preprocess(base.onnx_path, pre)
        types, nodes, policy = _selection(pre, op_types)
        # reduce_range guards the u8s8 pair sums of the GEMM-based kernels; depthwise weights keep 8 bits
        overrides = {w: [{"reduce_range": False, "axis": 0}] for w in depthwise_weights(pre)} if reduce_range else {}
        # calibration batches of 8: MinMax ranges are the same whatever the batching (same bytes out),
        # and the augmented graph (every activation an output) ran 1.4-1.5x faster on 8 than on 45-64
        # images at once (ResNet-50 14.6 vs 21 s, EfficientNet-Lite0 8.3 vs 12 s; 2026-12-02)
        quantize_static(str(pre), str(out_dir / "model.onnx"), _reader(calib, calib_batch), op_types_to_quantize=types,
                        nodes_to_quantize=nodes,
                        quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, calibrate_method),
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                       **({"TensorQuantOverrides": overrides} if overrides else {})})
    return {
        "precision": "int8",
        "recipe": {"name": "int8-static", "params": {"format": "QDQ", "per_channel": per_channel,
                                                     "activation_type": "QUInt8", "weight_type": "QInt8",
                                                     "reduce_range": reduce_range,
                                                     "depthwise_8bit_weights": len(overrides), "calibrate_method": calibrate_method,
                                                     "calibration_samples": n_calib, "op_types": types or "all",
                                                     "nodes_quantized": None if nodes is None else len(nodes),
                                                     "op_types_policy": policy, **pre_info}},
        "torch": None,
        "ops": C.op_counts(out_dir / "model.onnx"),
        "check": C.ort_check(out_dir / "model.onnx", base),
    }
