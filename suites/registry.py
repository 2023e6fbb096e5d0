"""The suites registry: the one door through which bench's core reaches models and recipes.

The core (``harness``) never imports a module of ``suites`` by name: it loads this module
through the ``bench.models`` entry point (see :mod:`harness.plan.models`), which keeps the
dependency one-way (suites -> harness) and lets another package provide its own registry.

What a registry provides (plain functions; all cheap except ``artifact_for`` and
``user_models``, which build):

* ``suites_dir()`` -> the directory of the standard suite YAML files (``schema/`` inside);
* ``models()`` -> ``{name: spec}``; a spec has ``name, task, dataset, description,
  input_shape`` (per sample, batch excluded);
* ``recipes()`` -> ``{name: recipe}``; a recipe has ``name, family, precision, description``;
* ``llm_variants(model)``, ``variant_precision(variant, model)``, ``llm_facts(model)``: generative
  LLMs (their variants are made at load time);
* ``datasets()`` -> the weights / data-set manager behind ``bench data``;
* ``require_models(names)`` -> None, or one BenchError line naming a missing weights package /
  data set and its install command;
* ``is_user_model(ref)`` -> whether a ``--model`` value is the user's own model (``*.onnx``
  or ``package.module:factory``) rather than a zoo name;
* ``artifact_for(model, variant, rebuild=False)`` -> ``(Artifact, built_now)``;
* ``artifact_cached(model, variant)`` -> whether that artifact is cached (None: cannot tell
  cheaply), ``artifact_base(model, variant)`` -> the variant it is derived from (built first;
  None when built from scratch) and ``artifact_alone(model, variant)`` -> whether its build
  trains a network (run with no other build beside it): what ``bench run`` needs to build a
  suite's missing artifacts in parallel processes (:mod:`harness.run.builds`); all optional,
  cheap, build nothing;
* ``user_models(refs, shapes, rebuild=False, emit=None)`` -> built user models (each with
  ``name, artifact, fixed_batch, default_batch``), :class:`harness.errors.BenchError` on bad input;
* ``architectures()``, ``is_architecture(name)``, ``export_architecture(name, path, input_shape)``:
  named architectures (``resnet18``, ``torchvision:NAME``, ...) that ``bench complexity``
  exports to ONNX with random weights.
"""
from __future__ import annotations

from pathlib import Path

#: bare architecture names ``bench complexity`` can export (besides torchvision:NAME / timm:NAME)
ARCHITECTURES = ("resnet18", "mobilenet_v2")


def suites_dir() -> Path:
    from suites import SUITES_DIR

    return SUITES_DIR


def models() -> dict:
    from suites import zoo

    return zoo.MODELS


def recipes() -> dict:
    from suites.recipes import RECIPES

    return RECIPES


def llm_variants(model: str):
    """The variants of a generative LLM (``{name: precision}``), None for any other model."""
    from suites import zoo

    spec = zoo.MODELS.get(model)
    if spec is None or getattr(spec, "kind", None) != "llm":
        return None
    from suites.zoo.llm import VARIANTS

    return VARIANTS


def variant_precision(variant: str, model: str | None = None) -> str:
    from suites.recipes import get_recipe

    llm = llm_variants(model) if model is not None else None
    if llm is not None:
        return llm[variant]
    return get_recipe(variant).precision


def llm_facts(model: str) -> dict | None:
    """Model facts of a generative LLM (zoo LLM or checkpoint directory), else None."""
    import os

    if llm_variants(model) is not None:
        from suites.build import artifact_for as _build

        artifact, _ = _build(model)
        return artifact.meta["model_facts"]
    if os.path.isdir(model):
        from suites.zoo.llm import check_checkpoint, model_facts

        return model_facts(check_checkpoint(model))
    return None


def datasets():
    from suites import datasets as _datasets

    return _datasets


def require_models(names) -> None:
    """:func:`suites.datasets.require` for every zoo model named that lists data sources."""
    from suites import datasets, zoo

    for name in sorted(set(names)):
        spec = zoo.MODELS.get(name)
        if spec is not None and spec.requires:
            datasets.require(spec.requires, name)


def is_user_model(ref: str) -> bool:
    from suites.zoo import is_user_model as _is

    return _is(ref)


def artifact_for(model: str, variant: str, *, rebuild: bool = False):
    from suites.build import artifact_for as _build

    return _build(model, variant, rebuild=rebuild)


def artifact_cached(model: str, variant: str):
    from suites.build import artifact_cached as _cached

    return _cached(model, variant)


def artifact_base(model: str, variant: str):
    from suites import zoo
    from suites.build import BASE_VARIANT

    spec = zoo.MODELS.get(model)
    if spec is None or getattr(spec, "kind", None) == "llm" or variant == BASE_VARIANT:
        return None
    return BASE_VARIANT


def artifact_alone(model: str, variant: str) -> bool:
    """A build that trains: the base of a model trained here (``ModelSpec.trains``), or a variant whose
    recipe (or a stage of it) fine-tunes or trains a student (the pruned and distill families)."""
    from suites import zoo
    from suites.build import BASE_VARIANT
    from suites.recipes import RECIPES

    spec = zoo.MODELS.get(model)
    if spec is None:
        return False
    if variant == BASE_VARIANT:
        return bool(spec.trains)
    steps = variant.split("+")
    return any(RECIPES[s].family in ("pruned", "distill") for s in steps if s in RECIPES)


def user_models(refs, shapes, *, rebuild: bool = False, emit=None, isolate=None) -> list:
    from suites.zoo import byo

    return byo.resolve(refs, shapes, rebuild=rebuild, emit=emit, isolate=isolate)


def architectures() -> tuple[str, ...]:
    return ARCHITECTURES


def is_architecture(name: str) -> bool:
    return name in ARCHITECTURES or name.startswith(("torchvision:", "timm:"))


def export_architecture(name: str, path, input_shape: tuple) -> None:
    """Build architecture ``name`` (random weights) and export it to ONNX at ``path``."""
    from suites.zoo import vision

    net = vision.build(name)
    vision.export_onnx(net, path, input_shape=input_shape)
