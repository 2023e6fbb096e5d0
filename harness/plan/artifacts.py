"""Content-hashed cache of model artifacts (exported ONNX + eval data + metadata).

An artifact is a directory::

    <cache>/<model>/<variant>-<key>/
        meta.json     what it is: inputs/outputs, opset, precision, task, reference accuracy, torch rebuild info
        model.onnx    the exported graph (weights inline, no side .data file)
        eval.npz      held-out inputs ("x"), labels ("labels", when the task has them) and the
                      fp32 model's outputs on them ("reference")
        model.pt      (optional) the torch state_dict, rebuilt through meta["torch"]["factory"]

Its key is a sha256 over everything that determines its content: the source files of the
builder and recipe modules, the recipe parameters, the seed and the versions of the
libraries that train/export/quantize. A rebuild happens only when one of those changes.
Builds go to a temp directory and are renamed into place, so a crashed build never
leaves a half artifact behind. ``meta.json`` lists every file with its size and sha256; a
cached artifact whose files do not match (truncated, edited, missing) is rebuilt, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from harness.errors import BenchError
from harness.plan.cache import touch as _touch  # last-use stamps: bench cache tells superseded entries by them

#: libraries whose version changes an artifact's bytes
VERSIONED_PACKAGES = ("torch", "onnx", "onnxruntime", "numpy", "scikit-learn", "onnxscript")


def cache_root() -> Path:
    """``$BENCH_CACHE`` or ``~/.cache/bench/artifacts``."""
    env = os.environ.get("BENCH_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bench" / "artifacts"


def package_versions(names: Iterable[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def source_digest(modules: Iterable[str]) -> str:
    """sha256 over the source text of the named modules (found without importing them)."""
    import importlib.util

    h = hashlib.sha256()
    for name in sorted(set(modules)):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise BenchError(f"cannot find module {name} to hash")
        h.update(name.encode())
        h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()


def artifact_key(*, model: str, variant: str, modules: Iterable[str], params: Mapping[str, Any],
                 seed: int, versions: Mapping[str, str | None] | None = None) -> str:
    """16 hex chars of sha256(model, variant, module sources, params, seed, library versions)."""
    payload = {
        "model": model,
        "variant": variant,
        "sources": source_digest(modules),
        "params": params,
        "seed": seed,
        "versions": dict(versions if versions is not None else package_versions()),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Artifact:
    """A built model on disk; cheap to construct, loads lazily."""

    dir: Path
    meta: dict

    @classmethod
    def load(cls, directory: Path | str) -> "Artifact":
        d = Path(directory)
        try:
            meta = json.loads((d / "meta.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchError(f"broken artifact at {d}: {exc}") from None
        return cls(d, meta)

    @property
    def name(self) -> str:
        return self.meta["model"]

    @property
    def variant(self) -> str:
        return self.meta["variant"]

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def onnx_path(self) -> Path:
        return self.dir / self.meta.get("onnx", "model.onnx")

    @property
    def inputs(self) -> list[dict]:
        """``[{"name", "shape": [None, ...], "dtype"}]``; ``None`` marks the batch dim."""
        return self.meta["inputs"]

    @property
    def precision(self) -> str:
        return self.meta.get("precision", "fp32")

    def eval_data(self) -> dict:
        """``{"x": {input name: array}, "labels": array | None, "reference": array | None,
        "task": {name: array}}`` (``task``: what the model's scorer needs beside the outputs)."""
        import numpy as np

        with np.load(self.dir / "eval.npz") as z:
            files = set(z.files)
            x = {inp["name"]: z[f"x:{inp['name']}"] for inp in self.inputs}
            return {
                "x": x,
                "labels": z["labels"] if "labels" in files else None,
                "reference": z["reference"] if "reference" in files else None,
                "task": {f[5:]: z[f] for f in files if f.startswith("task:")},
            }

    def calibration_data(self) -> dict | None:
        import numpy as np

        p = self.dir / "calib.npz"
        if not p.exists():
            return None
        with np.load(p) as z:
            return {inp["name"]: z[f"x:{inp['name']}"] for inp in self.inputs}

    def side_cache(self, kind: str) -> Path:
        """Where a backend keeps what it derives from this artifact between runs (e.g. TensorRT
        engines): ``<cache>/<kind>/<model>-<variant>-<key>``. The key in the name means a rebuilt
        artifact never meets a stale derivative. Not created here."""
        return cache_root() / kind / f"{self.name}-{self.variant}-{self.key}"

    def torch_module(self):
        """Rebuild the torch module (eval mode) when the artifact carries one, else None."""
        info = self.meta.get("torch")
        if not info:
            return None
        import torch

        from harness.plan.plugins import load_object

        factory = load_object(info["factory"])
        module = factory(**info.get("kwargs", {}))
        state = torch.load(self.dir / info.get("state_dict", "model.pt"), map_location="cpu", weights_only=True)
        module.load_state_dict(state)
        return module.eval()


def artifact_dir(model: str, variant: str, key: str, root: Path | None = None) -> Path:
    """Where the artifact of ``key`` lives: ``<root>/<model>/<variant>-<key>``."""
    return (Path(root) if root is not None else cache_root()) / model / f"{variant}-{key}"


def is_cached(model: str, variant: str, key: str, root: Path | None = None) -> bool:
    """Whether the artifact is in the cache (its ``meta.json`` exists; nothing is verified here:
    :func:`get_or_build` checks the files' hashes when it is loaded and rebuilds a corrupt one)."""
    return (artifact_dir(model, variant, key, root) / "meta.json").exists()


def get_or_build(model: str, variant: str, key: str, build: Callable[[Path], dict],
                 *, root: Path | None = None, rebuild: bool = False) -> tuple[Artifact, bool]:
    """Return ``(artifact, built)``: the cached artifact for ``key``, building it if missing.

    ``build(tmpdir)`` writes the artifact's files into ``tmpdir`` and returns its meta dict;
    ``model``, ``variant`` and ``key`` are added to the meta here.
    """
    final = artifact_dir(model, variant, key, root)
    if final.exists() and (final / "meta.json").exists() and not rebuild:
        problem = verify(final)
        if problem is None:
            _touch(final)
            return Artifact.load(final), False
        import sys

        print(f"cached artifact {model}/{variant} is corrupt ({problem}): rebuilding", file=sys.stderr)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{variant}-", dir=final.parent))
    try:
        meta = build(tmp)
        meta = {**meta, "model": model, "variant": variant, "key": key, "files": _manifest(tmp)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _touch(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            final.parent.rmdir()  # only when empty: no half-built cache entry is left behind
        except OSError:
            pass
        raise
    return Artifact.load(final), True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(d: Path) -> dict:
    """``{file name: {"bytes", "sha256"}}`` of every file an artifact holds (meta.json aside)."""
    return {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(Path(d).iterdir()) if p.is_file() and p.name != "meta.json"}


_VERIFIED: dict[tuple, None] = {}


def verify(d: Path) -> str | None:
    """None when the cached artifact at ``d`` is whole, else what is wrong: meta.json unreadable,
    a file of its manifest missing, or its size or sha256 changed (a truncated copy, a disk
    error, an edit). Hashed once per process while the files' sizes and mtimes stay. Artifacts written before
    manifests existed have none and are rebuilt."""
    d = Path(d)
    meta_path = d / "meta.json"
    try:
        # hashed once per process while no file's size or mtime changes
        stamp = (str(d), *sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in d.iterdir()))
        if stamp in _VERIFIED:
            return None
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return f"meta.json: {type(exc).__name__}"
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        return "no file manifest"
    for name, info in files.items():
        p = d / name
        if not p.is_file():
            return f"{name} missing"
        if p.stat().st_size != info.get("bytes"):
            return f"{name} has {p.stat().st_size} bytes, expected {info.get('bytes')}"
        if _sha256(p) != info.get("sha256"):
            return f"{name} content hash differs"
    _VERIFIED[stamp] = None
    return None


def onnx_io_meta(onnx_path: Path) -> tuple[list[dict], list[dict], int]:
    """``(inputs, outputs, opset)`` of an ONNX file for an artifact's meta: ``[{"name", "shape", "dtype"}]``
    (None for a dim that is not a fixed int; initializers listed as inputs are left out)."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    init = {i.name for i in m.graph.initializer}

    def dims(vi):
        out = []
        for d in vi.type.tensor_type.shape.dim:
            out.append(d.dim_value if d.HasField("dim_value") else None)
        return out

    def dtype(vi):
        return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name

    inputs = [{"name": i.name, "shape": dims(i), "dtype": dtype(i)} for i in m.graph.input if i.name not in init]
    outputs = [{"name": o.name, "shape": dims(o), "dtype": dtype(o)} for o in m.graph.output]
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None)
    return inputs, outputs, opset
