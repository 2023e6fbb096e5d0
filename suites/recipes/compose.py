"""Composition: apply registered recipes one after another (e.g. prune, then quantize).

Each stage sees the previous stage's model as its base (a :class:`_common.StagedArtifact`:
the base's data files with the new model.onnx / model.pt), so any recipe composes with
any other that accepts its input (quantizers take any ONNX graph; pruning and distillation
need a torch form, so they go first). The final meta is the last stage's, with
``stages`` listing what every stage did and ``sparsity`` read back from the final graph.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from harness.errors import BenchError
from suites.recipes import _common as C

_CARRY = ("params_before", "params_after", "teacher_params", "student_params")


def apply(base, out_dir: Path, *, steps: list) -> dict:
    from suites.recipes import get_recipe

    if len(steps) < 2:
        raise BenchError("a composed recipe needs at least two steps")
    name = "+".join(steps)
    current, metas = base, []
    with tempfile.TemporaryDirectory(prefix=".stages-") as tmp:
        for i, step in enumerate(steps):
            recipe = get_recipe(step)
            last = i == len(steps) - 1
            d = out_dir if last else Path(tmp) / f"stage{i}-{step}"
            d.mkdir(exist_ok=True)
            try:
                meta = recipe.apply(current, d)
            except BenchError as exc:
                raise BenchError(f"{name}: stage {step}: {exc}") from None
            metas.append(meta)
            if not last:
                current = C.StagedArtifact(base, d, meta)
    final = dict(metas[-1])
    final["recipe"] = {"name": name, "params": {"steps": [m.get("recipe") for m in metas]}}
    final["stages"] = [{k: m.get(k) for k in ("precision", "recipe", "sparsity", "params_before", "params_after",
                                              "check") if k in m} for m in metas]
    for m in metas:
        for k in _CARRY:
            if k in m and k not in final:
                final[k] = m[k]
    final["sparsity"] = C.weight_summary(out_dir / "model.onnx")["weight_sparsity"]
    return final
