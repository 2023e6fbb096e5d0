"""The model zoo: names -> how to build, train and evaluate each model.

Specs are plain data; a builder is referenced as ``"module:function"`` and imported only
when the model is built, so ``bench list models`` stays fast.

A builder ``build(seed) -> suites.zoo.common.Trained`` returns the trained fp32 torch module
with its data (train / calibration / eval splits); recipes derive variants from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: str
    task: str  # "classification" (labels -> top-1 accuracy) or "fidelity" (no labels: agreement with fp32)
    dataset: str
    description: str
    input_shape: tuple  # per-sample shape, batch dim excluded
    seed: int = 0
    tags: tuple = field(default_factory=tuple)
    #: factory kwargs of a smaller model of the same family, for the distill recipe (None: not distillable)
    student: dict | None = None


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="mlp-digits",
            builder="suites.zoo.digits:build_mlp",
            task="classification",
            dataset="sklearn digits (8x8, 1,797 images; 20 % held out)",
            description="MLP 64-128-64-10 trained on scikit-learn's bundled digits",
            input_shape=(64,),
            student={"hidden": [32]},
        ),
    ]
}


def get(name: str) -> ModelSpec:
    from harness.errors import BenchError

    if name not in MODELS:
        raise BenchError(f"unknown model '{name}' (choose from: {', '.join(MODELS)})")
    return MODELS[name]
