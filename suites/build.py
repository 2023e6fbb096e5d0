"""Build (or fetch from the cache) the artifact of one (model, variant).

The fp32 artifact is the base: it carries the trained state_dict and the data splits
(``data.npz``), so variants derive from it without retraining. A variant is made by a
recipe (``suites.recipes``) from the base; every artifact's ``eval.npz`` carries the
fp32 model's outputs on the eval inputs ("reference"), so fidelity is always measured
against the same fp32 reference.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from harness.plan.artifacts import (Artifact, artifact_key, get_or_build, is_cached, onnx_io_meta,
                                    package_versions)
from harness.errors import BenchError
from suites import zoo

BASE_VARIANT = "fp32"
_BUILD_MODULES = ("suites.build", "suites.zoo.common", "harness.plan.artifacts", "harness.plan.complexity")


def variant_recipe(variant: str):
    from suites.recipes import get_recipe

    return get_recipe(variant)


def artifact_for(model: str, variant: str = BASE_VARIANT, *, rebuild: bool = False,
                 root: Path | None = None) -> tuple[Artifact, bool]:
    """Return ``(artifact, built_now)`` for a zoo model's variant."""
    spec = zoo.get(model)
    if spec.kind == "llm":
        return _llm_artifact(spec, variant, rebuild=rebuild, root=root)
    if variant == BASE_VARIANT:
        return get_or_build(model, variant, artifact_key_of(model), lambda d: _build_base(spec, d), root=root,
                            rebuild=rebuild)
    recipe = variant_recipe(variant)  # an unknown variant fails before its base is built
    base, _ = artifact_for(model, BASE_VARIANT, root=root)
    return get_or_build(model, variant, artifact_key_of(model, variant, base_key=base.key),
                        lambda d: _build_variant(spec, base, recipe, d), root=root, rebuild=rebuild)


def artifact_key_of(model: str, variant: str = BASE_VARIANT, *, base_key: str | None = None) -> str:
    """The cache key of a (non-LLM) zoo model's variant, computed without building anything.

    A sha256 (:func:`harness.plan.artifacts.artifact_key`) over the build and recipe modules'
    sources, the recipe's parameters, the seed and the versions of the libraries and data
    sets involved; a variant's key also holds its base's key, so a retrained base (or a
    changed spec) rebuilds its variants (``base_key``: when the caller has it, else computed).
    Raises :class:`BenchError` for a missing data set.
    """
    spec = zoo.get(model)
    recipe = variant_recipe(variant)
    builder_module = spec.builder.partition(":")[0]
    modules = list(_BUILD_MODULES) + [builder_module, *getattr(spec, "modules", ()), *recipe.modules]
    # a model's weights package (e.g. pretrained MiniLM) is part of what it is
    versions = {**package_versions(), **package_versions(getattr(spec, "packages", ()))}
    if spec.requires:  # the data / weights a model is built from are part of what it is
        from suites import datasets

        datasets.require(spec.requires, model)
        versions.update({f"data:{n}": datasets.version_of(n) for n in spec.requires})
    if variant == BASE_VARIANT:
        return artifact_key(model=model, variant=variant, modules=modules, params=recipe.params,
                            seed=spec.seed, versions=versions)
    return artifact_key(model=model, variant=variant, modules=modules,
                        params={**recipe.params, "base_key": base_key or artifact_key_of(model),
                                "student": spec.student},
                        seed=spec.seed, versions=versions)


def artifact_cached(model: str, variant: str = BASE_VARIANT, *, root: Path | None = None) -> bool | None:
    """Whether the artifact is in the cache (its ``meta.json`` exists; its files are verified
    when it is loaded), built nothing; None when that cannot be told cheaply (an LLM, a user model,
    a missing data set: building it is what reports the problem)."""
    try:
        spec = zoo.get(model)
        if spec.kind == "llm":
            return None
        return is_cached(model, variant, artifact_key_of(model, variant), root=root)
    except BenchError:
        return None


def _llm_artifact(spec, variant: str, *, rebuild: bool, root: Path | None) -> tuple[Artifact, bool]:
    """A generative LLM: the fp32 base is the converted checkpoint; variants are meta that point at it
    (the session casts or quantizes the weights at load time; suites/zoo/llm.py)."""
    from suites.zoo import llm

    if variant not in llm.VARIANTS:
        raise BenchError(f"unknown variant '{variant}' for LLM {spec.name} (choose from: {', '.join(llm.VARIANTS)})")
    modules = ["suites.build", "harness.plan.artifacts", spec.builder.partition(":")[0], *spec.modules]
    versions = {**package_versions(("torch", "numpy")), **package_versions(spec.packages)}
    if variant == BASE_VARIANT:
        key = artifact_key(model=spec.name, variant=variant, modules=modules, params={}, seed=spec.seed,
                           versions=versions)
        return get_or_build(spec.name, variant, key, llm.build_base, root=root, rebuild=rebuild)
    base, _ = artifact_for(spec.name, BASE_VARIANT, root=root)
    key = artifact_key(model=spec.name, variant=variant, modules=modules, params={"base_key": base.key},
                       seed=spec.seed, versions=versions)
    return get_or_build(spec.name, variant, key, lambda d: llm.build_variant(d, base, variant), root=root,
                        rebuild=rebuild)


def _complexity(onnx_path: Path) -> dict | None:
    """The shared ONNX-graph counter (harness.plan.complexity), minus the per-op breakdown."""
    from harness.plan.complexity import count

    try:
        c = count(onnx_path)
    except BenchError as exc:
        return {"error": str(exc)}
    return {k: v for k, v in c.items() if k != "per_op"}


def _reference_outputs(onnx_path: Path, feeds: dict[str, np.ndarray], chunk: int = 32) -> np.ndarray:
    import onnxruntime as ort

    # every core: a build runs alone, and the outputs are the same to float rounding whatever the
    # thread count (the references are compared with rtol 1e-3, never bitwise). In chunks of 32:
    # one batch of the whole eval set was slower (MiniLM-L6's 639 inputs 13.3 s vs 9.2 s,
    # EfficientNet-Lite0's 90 views 4.2 s vs 1.9 s; identical outputs, measured 2026-12-02)
    sess = ort.InferenceSession(str(onnx_path), ort.SessionOptions(), providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    return np.concatenate([sess.run(None, {k: v[i:i + chunk] for k, v in feeds.items()})[0]
                           for i in range(0, n, chunk)])


def _savez(path: Path, **arrays) -> None:
    """Arrays to an uncompressed ``.npz``. Compressing float images cost more than any other step of
    a build (zlib: 11 s of EfficientNet-Lite0's 22 s, 4.4 s of ResNet-50's) for a cache that lives
    on local disk; the artifact's manifest hashes the files either way."""
    np.savez(path, **arrays)


def _accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float((outputs.argmax(axis=1) == labels).mean())


def _build_base(spec: zoo.ModelSpec, d: Path) -> dict:
    import torch

    from harness.plan.plugins import load_object
    from suites.zoo.common import export_onnx

    t0 = time.perf_counter()
    from suites.zoo.common import as_feeds

    trained = load_object(spec.builder)(seed=spec.seed)
    export_onnx(trained.module, trained.x_eval, d / "model.onnx", input_name=trained.input_name)
    torch.save(trained.module.state_dict(), d / "model.pt")
    x_train = as_feeds(trained.x_train, trained.input_name) if trained.x_train is not None else {}
    x_calib = as_feeds(trained.x_calib, trained.input_name)
    x_eval = as_feeds(trained.x_eval, trained.input_name)
    # one input: plain "x_train"/"x_calib" arrays; several: "x_train:<name>" per input
    if len(x_eval) == 1:
        train = {"x_calib": next(iter(x_calib.values()))}
        if x_train:
            train["x_train"] = next(iter(x_train.values()))
    else:
        train = {**{f"x_train:{k}": v for k, v in x_train.items()}, **{f"x_calib:{k}": v for k, v in x_calib.items()}}
    _savez(d / "data.npz", y_train=trained.y_train if trained.y_train is not None else np.zeros(0), **train)
    ref = _reference_outputs(d / "model.onnx", x_eval)
    task = dict(trained.task_data or {})
    _save_eval(d, x_eval, trained.y_eval, ref, task)
    _savez(d / "calib.npz", **{f"x:{k}": v for k, v in x_calib.items()})
    inputs, outputs, opset = onnx_io_meta(d / "model.onnx")
    return {
        "onnx": "model.onnx", "opset": opset, "inputs": inputs, "outputs": outputs, "precision": "fp32",
        "task": spec.task, "metric": getattr(spec, "metric", None), "dataset": spec.dataset,
        "description": spec.description,
        "torch": {"factory": trained.factory, "kwargs": trained.factory_kwargs, "state_dict": "model.pt"},
        "reference": {"metric": "top1" if spec.task == "classification" else "fidelity",
                      "value": _accuracy(ref, trained.y_eval),
                      # the fp32 model's value of every metric a gate may name (its own task's too)
                      "metrics": _reference_metrics(spec, ref, trained.y_eval, task)},
        "scorer": spec.scorer, "checks": list(spec.checks),
        "training": trained.info, "recipe": {"name": "fp32", "params": {}},
        "complexity": _complexity(d / "model.onnx"),
        "build_s": time.perf_counter() - t0, "versions": package_versions(),
    }


def _reference_metrics(spec, ref: np.ndarray, labels, task: dict) -> dict:
    out = {}
    if labels is not None:
        out["top1"] = _accuracy(ref, labels)
    if spec.scorer:
        from harness.plan.plugins import load_object

        out.update(load_object(spec.scorer)(ref, task))
    return out


def _save_eval(d: Path, x: dict[str, np.ndarray], labels, ref: np.ndarray, task: dict | None = None) -> None:
    arrays = {**{f"x:{k}": v for k, v in x.items()}, "reference": ref}
    if labels is not None:
        arrays["labels"] = labels
    arrays.update({f"task:{k}": np.asarray(v) for k, v in (task or {}).items()})
    _savez(d / "eval.npz", **arrays)


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link when the cache's file system allows it, else a copy (the bytes are identical
    either way; an artifact's manifest verifies them like any other file)."""
    import os
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _build_variant(spec, base: Artifact, recipe, d: Path) -> dict:
    t0 = time.perf_counter()
    meta = recipe.apply(base, d)  # writes model.onnx (and model.pt if it has a torch form)
    # Same held-out inputs and fp32 reference as the base: every variant is judged against fp32.
    # The files are the base's own, linked (or copied), not re-encoded: re-compressing them took
    # 3-8 s a variant (EfficientNet-Lite0's 90 photo views); the manifest hashes each copy.
    for name in ("eval.npz", "calib.npz"):
        if (base.dir / name).exists():
            _link_or_copy(base.dir / name, d / name)
    inputs, outputs, opset = onnx_io_meta(d / "model.onnx")
    out = {
        "onnx": "model.onnx", "opset": opset, "inputs": inputs, "outputs": outputs,
        "task": spec.task, "metric": getattr(spec, "metric", None), "dataset": spec.dataset,
        "description": spec.description,
        "reference": base.meta["reference"], "base_key": base.key,
        "scorer": base.meta.get("scorer"), "checks": base.meta.get("checks") or [],
        "complexity": _complexity(d / "model.onnx"),
        "build_s": time.perf_counter() - t0, "versions": package_versions(),
    }
    out.update(meta)
    if "precision" not in out:
        raise BenchError(f"recipe {recipe.name} did not say which precision it produced")
    return out
