"""The core's only door to models and recipes: the ``bench.models`` entry point.

bench's core never imports ``suites`` (or any model package) by name. It loads a
*registry* object through the entry-point group ``bench.models`` (bench itself registers
``suites = "suites.registry"``); :mod:`suites.registry` documents what a registry provides.
When no entry point is installed (an editable checkout that was not reinstalled), the
in-tree ``suites.registry`` is imported by name through importlib, which is the same object.

Everything here is cheap: the registry's listing functions import no framework.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from importlib import metadata
from typing import Any

from harness.errors import BenchError

GROUP = "bench.models"
DEFAULT = "suites.registry"


@lru_cache(maxsize=1)
def registry() -> Any:
    """The registry object (a module or any object with the documented functions)."""
    eps = sorted(metadata.entry_points(group=GROUP), key=lambda ep: (ep.name != "suites", ep.name))
    ref = eps[0].value if eps else DEFAULT
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
    except Exception as exc:
        raise BenchError(f"the model registry '{ref}' failed to load: {type(exc).__name__}: {exc}") from None
    return obj


def zoo_models() -> dict:
    """``{name: spec}`` of the zoo models."""
    return registry().models()


def recipes() -> dict:
    """``{name: recipe}`` of the variants (compression recipes)."""
    return registry().recipes()


def get_recipe(name: str):
    all_recipes = recipes()
    if name not in all_recipes:
        raise BenchError(f"unknown variant '{name}' (choose from: {', '.join(all_recipes)})")
    return all_recipes[name]


def variant_precision(variant: str, model: str | None = None) -> str:
    """The arithmetic a variant runs in (a generative LLM's variants are its own)."""
    if model is not None and llm_variants(model) is not None:
        return registry().variant_precision(variant, model)
    return get_recipe(variant).precision


def llm_variants(model: str):
    """``{variant: precision}`` of a generative LLM, None for any other model (or a registry
    without generative models)."""
    fn = getattr(registry(), "llm_variants", None)  # optional part of a registry
    return fn(model) if fn is not None else None


def llm_facts(model: str) -> dict | None:
    """Model facts of a generative LLM (zoo name or checkpoint directory), else None."""
    return registry().llm_facts(model)


def datasets():
    """The registry's weights / data-set manager (``status()``, ``install(name)``, ``get(name)``,
    ``data_dir()``, ``SOURCES``), for ``bench data``."""
    return registry().datasets()


def require_models(names) -> None:
    """Every weights package and data set the named zoo models need is installed, or one
    :class:`BenchError` line naming the package and its install command."""
    registry().require_models(set(names))


def is_user_model(ref: str) -> bool:
    return registry().is_user_model(ref)


def suites_dir():
    return registry().suites_dir()


def artifact_for(model: str, variant: str, *, rebuild: bool = False):
    """``(Artifact, built_now)`` of a zoo model's variant (builds on a cache miss)."""
    return registry().artifact_for(model, variant, rebuild=rebuild)


def artifact_cached(model: str, variant: str) -> bool | None:
    """Whether a zoo model's variant is cached (builds nothing); None: the registry cannot tell."""
    fn = getattr(registry(), "artifact_cached", None)
    return None if fn is None else fn(model, variant)


def artifact_base(model: str, variant: str) -> str | None:
    """The variant a zoo model's variant is derived from (built before it), None if none."""
    fn = getattr(registry(), "artifact_base", None)
    return None if fn is None else fn(model, variant)


def artifact_alone(model: str, variant: str) -> bool:
    """Whether a zoo model's variant trains when built (built with no other build beside it)."""
    fn = getattr(registry(), "artifact_alone", None)
    return False if fn is None else bool(fn(model, variant))


def user_models(refs, shapes, *, rebuild: bool = False, emit=None, isolate=None) -> list:
    """The user's own models, validated and built (one :class:`BenchError` line for bad input);
    ``isolate``: ``run_in_worker``, to build torch factories (user code) in a process of their own."""
    if isolate is None:
        return registry().user_models(refs, shapes, rebuild=rebuild, emit=emit)
    return registry().user_models(refs, shapes, rebuild=rebuild, emit=emit, isolate=isolate)


def architectures() -> tuple:
    return tuple(registry().architectures())


def is_architecture(name: str) -> bool:
    return registry().is_architecture(name)


def export_architecture(name: str, path, input_shape: tuple) -> None:
    registry().export_architecture(name, path, input_shape)
