"""The fp32 baseline: the exported model unchanged (the base artifact is built by suites.build)."""
from __future__ import annotations

import shutil


def apply(base, out_dir) -> dict:
    shutil.copyfile(base.onnx_path, out_dir / "model.onnx")
    if base.meta.get("torch"):
        shutil.copyfile(base.dir / base.meta["torch"]["state_dict"], out_dir / "model.pt")
    return {"precision": "fp32", "torch": base.meta.get("torch"), "recipe": {"name": "fp32", "params": {}}}
