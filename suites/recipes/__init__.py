"""Compression recipes: each turns the fp32 base artifact into a variant.

A recipe is one small module with ``apply(base: Artifact, out_dir: Path, **params) -> dict``
that writes ``model.onnx`` (and ``model.pt`` when the variant has a torch form) into
``out_dir`` and returns meta fields (at least ``precision``; also what it did, e.g. the
sparsity actually present in the exported weights). Registry entries are plain data so
listing variants imports nothing heavy.

Families (docs/recipes.md has the details and measured numbers):

- baseline: ``fp32``
- pruned: ``pruned-50``, ``pruned-90`` (global magnitude, unstructured, fine-tuned with the
  mask fixed), ``pruned-structured-50`` (neurons/channels removed, layers really shrink)
- quant: ``fp16`` (ONNX float16, fp32 IO), ``bf16`` (torch runtime casts to bfloat16),
  ``int8-dynamic`` (onnxruntime dynamic quantization), ``int8-static`` (QDQ, calibrated)
- distill: ``distilled`` (student on the teacher's soft targets), ``student-labels`` (the
  same student on labels alone)
- composed: ``A+B`` applies recipe A, then recipe B to its result (``suites.recipes.compose``)

Every recipe's meta: ``precision``, ``recipe: {name, params}``, ``torch`` (rebuild info or
None), and where it applies ``sparsity`` (read back from the ONNX initializers),
``params_before``/``params_after``, ``check`` (onnxruntime CPU run of the variant at build
time: top-1 / agreement with fp32, the ops onnxruntime really executes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.errors import BenchError

_COMMON = "suites.recipes._common"


@dataclass(frozen=True)
class Recipe:
    name: str
    module: str  # module holding ``apply``; its source is part of the artifact key
    family: str  # baseline | pruned | quant | distill | composed
    description: str
    precision: str = "fp32"  # the arithmetic the variant's weights/activations run in
    params: dict = field(default_factory=dict)
    #: further modules whose source determines the artifact (helpers, composed stages)
    depends: tuple = ()

    @property
    def modules(self) -> tuple[str, ...]:
        """Every module whose source goes into the artifact key: ``module`` first, then ``depends``."""
        return (self.module, *[m for m in self.depends if m != self.module])

    def apply(self, base, out_dir) -> dict[str, Any]:
        import importlib

        return importlib.import_module(self.module).apply(base, out_dir, **self.params)


def _composed(*steps: str, description: str) -> Recipe:
    parts = [RECIPES[s] for s in steps]
    depends = [_COMMON, "suites.recipes"]
    for p in parts:
        depends += [m for m in p.modules if m not in depends]
    return Recipe("+".join(steps), "suites.recipes.compose", "composed", description, precision=parts[-1].precision,
                  params={"steps": list(steps)}, depends=tuple(depends))


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("fp32", "suites.recipes.identity", "baseline", "the trained fp32 model as exported"),
        Recipe("pruned-50", "suites.recipes.pruned", "pruned",
               "global magnitude pruning of Linear/Conv weights to 50 % zeros, fine-tuned with the mask fixed",
               params={"amount": 0.5}, depends=(_COMMON,)),
        Recipe("pruned-90", "suites.recipes.pruned", "pruned",
               "global magnitude pruning of Linear/Conv weights to 90 % zeros, fine-tuned with the mask fixed",
               params={"amount": 0.9, "finetune_epochs": 20}, depends=(_COMMON,)),
        Recipe("pruned-structured-50", "suites.recipes.pruned_structured", "pruned",
               "half the hidden neurons/channels (smallest L2 norm) removed, layers rebuilt smaller, fine-tuned",
               params={"amount": 0.5}, depends=(_COMMON,)),
        Recipe("fp16", "suites.recipes.fp16", "quant", "ONNX graph in float16 (fp32 inputs/outputs kept)",
               precision="fp16", depends=(_COMMON,)),
        Recipe("bf16", "suites.recipes.bf16", "quant",
               "fp32 weights run in bfloat16 by runtimes with bf16 kernels (torch); onnxruntime CPU has none",
               precision="bf16", depends=(_COMMON,)),
        Recipe("int8-dynamic", "suites.recipes.int8_dynamic", "quant",
               "onnxruntime dynamic quantization: int8 weights, activations quantized per batch at run time",
               precision="int8", depends=(_COMMON,)),
        Recipe("int8-static", "suites.recipes.int8_static", "quant",
               "onnxruntime static quantization, QDQ, per-channel int8 weights, uint8 activations calibrated",
               precision="int8", depends=(_COMMON,)),
        Recipe("distilled", "suites.recipes.distill", "distill",
               "the zoo's smaller student trained on the teacher's soft targets (T=4, alpha=0.7) and labels",
               params={"soft": True}, depends=(_COMMON, "suites.zoo")),
        Recipe("student-labels", "suites.recipes.distill", "distill",
               "the same student, same seed and epochs, trained on labels alone (distillation's control)",
               params={"soft": False}, depends=(_COMMON, "suites.zoo")),
    ]
}
RECIPES.update({r.name: r for r in [
    _composed("pruned-structured-50", "int8-static",
              description="structured pruning, then static int8 quantization of the smaller model"),
    _composed("distilled", "int8-static", description="the distilled student, quantized to int8 (static, QDQ)"),
]})


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise BenchError(f"unknown variant '{name}' (choose from: {', '.join(RECIPES)})")
    return RECIPES[name]
