"""Compression recipes: each turns the fp32 base artifact into a variant.

A recipe is one small module with ``apply(base: Artifact, out_dir: Path, **params) -> dict``
that writes ``model.onnx`` (and ``model.pt`` when the variant has a torch form) into
``out_dir`` and returns meta fields (at least ``precision``; also what it did, e.g. the
sparsity actually present in the exported weights). Registry entries are plain data so
listing variants imports nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.errors import BenchError


@dataclass(frozen=True)
class Recipe:
    name: str
    module: str  # module holding ``apply``; its source is part of the artifact key
    family: str  # baseline | pruned | quant | distill
    description: str
    precision: str = "fp32"  # the arithmetic the variant's weights/activations run in
    params: dict = field(default_factory=dict)

    def apply(self, base, out_dir) -> dict[str, Any]:
        import importlib

        return importlib.import_module(self.module).apply(base, out_dir, **self.params)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("fp32", "suites.recipes.identity", "baseline", "the trained fp32 model as exported"),
    ]
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise BenchError(f"unknown variant '{name}' (choose from: {', '.join(RECIPES)})")
    return RECIPES[name]
