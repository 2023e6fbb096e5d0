"""bf16: the base model, to be run in bfloat16 by runtimes that have bf16 kernels.

The ONNX file is the fp32 base unchanged: onnxruntime's CPU execution provider has no
bfloat16 kernels for these ops, so the cpu backend reports onnxruntime + bf16 as
unsupported instead of silently running fp32. The torch form is the base's fp32
state_dict; the torch runtime casts the module (and inputs) to torch.bfloat16 for
precision "bf16" (CPU and CUDA both have bf16 matmul/conv kernels).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from harness.errors import BenchError
from suites.recipes import _common as C


def apply(base, out_dir: Path) -> dict:
    torch_meta = C.copy_torch(base, out_dir)
    if torch_meta is None:
        raise BenchError(f"bf16: model {base.name} has no torch form; bf16 runs through the torch runtime only")
    shutil.copyfile(base.onnx_path, out_dir / "model.onnx")
    return {
        "precision": "bf16",
        "recipe": {"name": "bf16", "params": {}},
        "torch": torch_meta,
        "notes": ["model.onnx is the fp32 base (onnxruntime CPU has no bf16 kernels); the torch runtime casts "
                  "the module to bfloat16"],
    }
