"""What several in-tree backends share: option flags, the torch dtype map, graph quantization.

A backend module imports this (cheap: numpy-free, framework-free); the harness never does.
"""
from __future__ import annotations

from typing import Any

#: bench precision -> torch dtype name, for the runtimes that cast a float model (cpu and cuda torch)
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

_TRUE = ("1", "true", "yes", "on")


def option_flag(value: Any, *, bare: bool = False) -> bool:
    """An on/off ``--option`` value: ``1``, ``true``, ``yes``, ``on`` (any case) are on; anything
    else is off, except the empty string -- an option given without a value (``--fit``) -- which
    is ``bare``. The cuda backend passes ``bare=False`` (its flags always carry a value: a
    default such as ``events=1``); the fpga backend ``bare=True`` (``fit=`` means "check the fit")."""
    text = str(value).strip().lower()
    if text == "":
        return bare
    return text in _TRUE


#: Ops that carry integer arithmetic (int8 kernels in ONNX terms).
INTEGER_OPS = {"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "DynamicQuantizeLinear",
               "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm", "QLinearAdd", "QLinearMul",
               "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
               "QLinearSoftmax", "QLinearConcat"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def quantization_of(op_counts) -> dict | None:
    """How a graph is quantized, from its op types alone (``{"mode", "ops", "note"}``, or None).

    ``op_counts``: op type names (``domain.Op`` outside the default domain), or an ONNX model."""
    if hasattr(op_counts, "graph"):
        op_counts = {(n.domain + "." if n.domain not in ("", "ai.onnx") else "") + n.op_type
                     for n in op_counts.graph.node}
    ops = {k for k in op_counts if k.split(".")[-1] in INTEGER_OPS | QDQ_OPS}
    if not ops:
        return None
    integer = sorted(o for o in ops if o.split(".")[-1] in INTEGER_OPS)
    mode = "integer" if integer and not (ops - set(integer)) else ("qdq" if not integer else "mixed")
    notes = {
        "integer": "integer ops (MatMulInteger/ConvInteger/QLinear*) run in int32 arithmetic, exact",
        "qdq": "QDQ graph run as QDQ means: QuantizeLinear rounds (half to even) and saturates to the "
               "integer grid, DequantizeLinear maps back, the op between runs in float; TensorFlow/XLA "
               "has no fused int8 kernels for it, so the int8 numerics are exact but the speed is that "
               "of the float ops plus the (de)quantize work",
        "mixed": "integer ops in int32 arithmetic, QDQ pairs as quantize -> float op -> dequantize",
    }
    return {"mode": mode, "ops": sorted(ops), "note": notes[mode]}
