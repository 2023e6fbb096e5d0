"""fp16: the ONNX graph converted to float16 (weights and activations), fp32 inputs/outputs kept.

onnxruntime's own converter (``onnxruntime.transformers.float16.convert_float_to_float16``, the
maintained fork of onnxconverter-common's, which mis-types existing Cast nodes of the text
encoder) with ``keep_io_types=True`` casts the input
to float16 after the graph input and back to float32 before the output, so callers feed
and read fp32 exactly as for the base. The torch form is the base's state_dict; the torch
runtime casts the module to float16 for precision "fp16".

Where onnxruntime's CPU execution provider has no float16 kernel for an op (on x86 CPUs
without AVX512-FP16 that is Gemm/MatMul/Conv), it inserts casts and computes that op in
fp32 with the fp16-rounded weights: the variant then measures fp16 *storage*, not fp16
arithmetic. ``check.onnxruntime_cpu_float16_initializers`` (float16 weights left in the
graph onnxruntime really runs) and ``notes`` say which case this build hit.
"""
from __future__ import annotations

from pathlib import Path

from suites.recipes import _common as C


def apply(base, out_dir: Path, *, keep_io_types: bool = True) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(base.onnx_path))
    converted = convert_float_to_float16(model, keep_io_types=keep_io_types)
    onnx.save(converted, str(out_dir / "model.onnx"))
    check = C.ort_check(out_dir / "model.onnx", base)
    notes = []
    if not check["onnxruntime_cpu_float16_initializers"]:
        notes.append("onnxruntime's CPU EP runs this graph in fp32 after inserting casts (no float16 kernels for "
                     "its ops here): on the cpu backend this is fp16 storage, fp32 arithmetic")
    return {
        "precision": "fp16",
        "recipe": {"name": "fp16", "params": {"keep_io_types": keep_io_types,
                                              "converter": "onnxruntime.transformers.float16"}},
        "torch": C.copy_torch(base, out_dir),
        "ops": C.op_counts(out_dir / "model.onnx"),
        "check": check,
        "notes": notes,
    }
