"""Bring your own model: an ONNX file or a torch factory, run through the zoo's path.

``bench run --model path/to/model.onnx --input-shape NAME=1x3x224x224`` or
``bench run --model package.module:factory --input-shape 1x3x224x224``: the model becomes
an fp32 artifact in the same content-hashed cache as zoo models (``harness.plan.artifacts``),
with complexity counted from its graph, and its cases are measured and checked like any
other. It has no labels: its accuracy is **fidelity** against its own fp32 outputs, which
onnxruntime (CPU) computes once, at artifact build, on seeded random inputs:

* ``N_EVAL`` = 32 samples per input (rounded up to a multiple of a fixed batch size),
  drawn from ``numpy.random.default_rng(0)`` in input order: float inputs standard
  normal; integer inputs 1 where the input's name contains ``mask``, else uniform in
  {0, 1} (valid indices for any embedding table); bool inputs fair coin flips.
* Axis 0 of every input is the batch axis. A symbolic axis 0 means any batch size; a
  fixed one (e.g. 1) restricts the cases to that batch. Every other dim must be fixed,
  by the model or by ``--input-shape`` (whose first dim is the batch of offline runs
  when neither ``--batch`` nor a suite says otherwise).
* The gated metric is top-1 agreement when the first output is ``(batch, classes)``,
  else cosine similarity; both are recorded with max/mean abs diff.

An ONNX model's key hashes the file's bytes (and external data files), the input shapes
and the library versions; a torch factory's key hashes its module's source, the shapes
and the versions. Torch factories are called with no arguments under
``torch.manual_seed(0)``, their inputs are float32, and their artifacts keep the
state_dict so ``--runtime torch`` runs them too.
"""
from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness.plan.shapes import fmt_shape as _fmt
from harness.plan.shapes import parse_shapes, resolve_inputs
from harness.errors import BenchError

N_EVAL = 32
SEED = 0
VARIANT = "fp32"
_MODULES = ("suites.zoo.byo", "suites.zoo.common", "harness.plan.artifacts")


@dataclass
class UserModel:
    ref: str  # as given on the command line
    name: str  # the model name in case ids and records
    kind: str  # "onnx" | "torch"
    artifact: object  # harness.plan.artifacts.Artifact
    built: bool
    fixed_batch: int | None  # the model's fixed batch size, None when dynamic
    default_batch: int  # axis 0 of the given input shapes (1 when none was given)


# --------------------------------------------------------------------------- shapes


def _dims(vi) -> list | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


# --------------------------------------------------------------------------- inputs and reference


def random_inputs(inputs: list[dict], n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """``n`` seeded samples per input (see the module docstring for the distributions)."""
    rng = np.random.default_rng(seed)
    out = {}
    for inp in inputs:
        shape = (n, *inp["shape"][1:])
        dt = np.dtype(inp["dtype"])
        if dt.kind == "f":
            arr = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            arr = rng.random(shape) < 0.5
        elif dt.kind in "iu":
            arr = (np.ones(shape) if "mask" in inp["name"].lower() else rng.integers(0, 2, shape)).astype(dt)
        else:
            raise BenchError(f"input '{inp['name']}' has dtype {dt.name}, which bench cannot generate inputs for")
        out[inp["name"]] = arr
    return out


def reference_outputs(onnx_path: Path, x: dict[str, np.ndarray], batch: int, label: str) -> np.ndarray:
    """The first output of onnxruntime (CPU, fp32 graph as given) on ``x``, in chunks of ``batch``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BenchError(f"{label}: onnxruntime cannot load the model: {_first_line(exc)}") from None
    n = len(next(iter(x.values())))
    outs = []
    for start in range(0, n, batch):
        chunk = {k: v[start:start + batch] for k, v in x.items()}
        try:
            y = np.asarray(sess.run(None, chunk)[0])
        except Exception as exc:
            raise BenchError(f"{label}: onnxruntime cannot run the model on inputs "
                             f"{', '.join(f'{k}={_fmt(v.shape)}:{v.dtype}' for k, v in chunk.items())}: "
                             f"{_first_line(exc)}") from None
        if y.ndim == 0 or y.shape[0] != len(next(iter(chunk.values()))):
            raise BenchError(f"{label}: the first output has shape {_fmt(y.shape)}, without the batch axis 0 "
                             "bench needs")
        outs.append(y)
    return np.concatenate(outs)


def _first_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


# --------------------------------------------------------------------------- ONNX files


#: An ONNX file (protobuf) cannot be larger than 2 GiB; bigger weights live in external data.
MAX_ONNX_BYTES = 2**31


def _read_onnx(path: Path, label: str):
    """Parse and sanity-check an ONNX file -> (ModelProto without external data, file bytes)."""
    import onnx

    from harness.safe import check_input_file

    # not a FIFO (would hang), not a device like /dev/zero (endless), not over protobuf's 2 GiB
    check_input_file(path, what="model", max_bytes=MAX_ONNX_BYTES)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"cannot read {label}: {exc.strerror or exc}") from None
    if not data:
        raise BenchError(f"{label}: empty file, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:
        raise BenchError(f"{label}: not a valid ONNX model (corrupt or truncated: {_first_line(exc)})") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise BenchError(f"{label}: not a valid ONNX model (no IR version, graph or opset; truncated or another "
                         "format?)")
    if len(model.graph.node) == 0 or len(model.graph.output) == 0:
        raise BenchError(f"{label}: the ONNX graph has no nodes or no outputs")
    return model, data


def _external_files(model, base: Path) -> list[Path]:
    from onnx import external_data_helper as edh

    files = set()
    for t in edh._get_all_tensors(model):
        if edh.uses_external_data(t):
            files.add((base / edh.ExternalDataInfo(t).location).resolve())
    return sorted(files)


def _declared_inputs(model) -> list[tuple[str, str, list | None]]:
    import onnx

    init = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in init:
            continue
        if not vi.type.HasField("tensor_type"):
            raise BenchError(f"input '{vi.name}' is not a tensor; bench runs tensor inputs only")
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
        except Exception:
            dtype = f"onnx type {vi.type.tensor_type.elem_type}"
        out.append((vi.name, dtype, _dims(vi)))
    return out


def _onnx_user_model(ref: str, shapes: dict, parsed, *, root, rebuild: bool) -> UserModel:
    from harness.plan.artifacts import artifact_key, get_or_build, package_versions

    path = Path(ref).expanduser()
    label = ref
    model, data = parsed
    h = hashlib.sha256(data)
    ext = _external_files(model, path.resolve().parent)
    for f in ext:
        if not f.is_file():
            raise BenchError(f"{label}: external data file missing: {f}")
        h.update(f.name.encode())
        h.update(f.read_bytes())
    declared = _declared_inputs(model)
    if not declared:
        raise BenchError(f"{label}: the model has no inputs")
    for name, dtype, _ in declared:
        if dtype.startswith("onnx type"):
            raise BenchError(f"{label}: input '{name}' has an element type bench cannot feed ({dtype})")
    inputs, fixed_batch, default_batch = resolve_inputs(label, declared, shapes)
    name = path.name
    key = artifact_key(model=name, variant=VARIANT, modules=_MODULES,
                       params={"kind": "onnx", "sha256": h.hexdigest(), "inputs": inputs, "n_eval": N_EVAL},
                       seed=SEED, versions=package_versions())

    def build(d: Path) -> dict:
        import onnx

        if ext:  # make the artifact self-contained
            full = onnx.load(str(path), load_external_data=True)
            onnx.save_model(full, str(d / "model.onnx"), save_as_external_data=False)
        else:
            (d / "model.onnx").write_bytes(data)
        return _finish_meta(d, name, inputs, fixed_batch, label,
                            source={"kind": "onnx", "path": str(path.resolve()), "sha256": h.hexdigest(),
                                    "external_data": [str(f) for f in ext]})

    art, built = get_or_build(_cache_name(name), VARIANT, key, build, root=root, rebuild=rebuild)
    return UserModel(ref, name, "onnx", art, built, fixed_batch, default_batch)


# --------------------------------------------------------------------------- torch factories


def _torch_user_model(ref: str, shapes: dict, *, root, rebuild: bool, isolate=None) -> UserModel:
    import importlib.util

    from harness.plan.artifacts import artifact_key, get_or_build, package_versions, source_digest

    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise BenchError(f"bad model '{ref}': expected an ONNX file (*.onnx) or package.module:factory")
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise BenchError(f"model '{ref}': cannot find module {module_name} ({_first_line(exc)})") from None
    if found is None or found.origin is None:
        raise BenchError(f"model '{ref}': no module named {module_name} (is it importable from here?)")
    if not shapes:
        raise BenchError(f"model '{ref}': a torch factory needs --input-shape (e.g. --input-shape 1x3x224x224 or "
                         "NAME=1x3x224x224 per input)")
    declared = [(n if n is not None else "input", "float32", None) for n in shapes]
    shapes = {(n if n is not None else "input"): s for n, s in shapes.items()}
    inputs, fixed_batch, default_batch = resolve_inputs(ref, declared, shapes)
    key = artifact_key(model=ref, variant=VARIANT, modules=(*_MODULES, module_name),
                       params={"kind": "torch", "factory": ref, "inputs": inputs, "n_eval": N_EVAL},
                       seed=SEED, versions=package_versions())

    def build(d: Path) -> dict:
        # The factory is the user's code: it runs in its own worker process (``isolate``: the
        # runner's harness.run.worker.run_in_worker), so a sys.exit, a segfault or a hang costs the
        # build, not bench; the parent removes the half-built dir. Without ``isolate`` (a caller
        # that is itself an isolated process) it runs here.
        job = {"ref": ref, "inputs": inputs, "fixed_batch": fixed_batch, "dir": str(d),
               "module_sha256": source_digest([module_name])}
        # the worker does not import from the cwd: it gets the one directory the factory's module
        # was found in, appended AFTER its own path (installed packages shadow files there)
        origin = Path(found.origin).resolve()
        job["module_root"] = str(origin.parents[module_name.count(".") + (origin.name == "__init__.py")])
        if isolate is None:
            return build_torch_artifact(job)
        res = isolate("suites.zoo.byo:build_torch_artifact", job, timeout_s=FACTORY_TIMEOUT_S)
        if not res.ok or not isinstance(res.result, dict):
            reason = (res.reason or "no result").removeprefix("BenchError: ")
            if reason.startswith(f"model '{ref}'"):
                raise BenchError(reason)
            raise BenchError(f"model '{ref}': building it failed in its worker: {reason}")
        return res.result

    art, built = get_or_build(_cache_name(ref), VARIANT, key, build, root=root, rebuild=rebuild)
    return UserModel(ref, ref, "torch", art, built, fixed_batch, default_batch)


#: Longest a torch factory (import, construction, ONNX export, reference outputs) may take.
FACTORY_TIMEOUT_S = 900.0


def build_torch_artifact(job: dict) -> dict:
    """Worker target: call the factory, export ONNX into ``job["dir"]``, return the meta dict."""
    import torch

    from harness.plan.plugins import load_object
    from suites.zoo.common import export_onnx

    import sys

    ref, inputs, fixed_batch, d = job["ref"], job["inputs"], job["fixed_batch"], Path(job["dir"])
    if job.get("module_root") and job["module_root"] not in sys.path:
        sys.path.append(job["module_root"])
    try:
        factory = load_object(ref)
    except Exception as exc:
        raise BenchError(f"model '{ref}': cannot import it: {type(exc).__name__}: {_first_line(exc)}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        try:
            module = factory()
        except Exception as exc:
            raise BenchError(f"model '{ref}': calling it with no arguments failed: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise BenchError(f"model '{ref}' returned a {type(module).__name__}, not a torch.nn.Module")
    module.eval()
    example = random_inputs(inputs, 1)
    try:
        export_onnx(module, example, d / "model.onnx", output_name="output")
    except Exception as exc:
        raise BenchError(f"model '{ref}': torch.onnx.export failed: {type(exc).__name__}: "
                         f"{_first_line(exc)}") from None
    torch.save(module.state_dict(), d / "model.pt")
    return _finish_meta(d, ref, inputs, fixed_batch, ref,
                        source={"kind": "torch", "factory": ref, "module_sha256": job["module_sha256"]},
                        torch_info={"factory": ref, "kwargs": {}, "state_dict": "model.pt"})


# --------------------------------------------------------------------------- shared


def _cache_name(name: str) -> str:
    return "byo-" + re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _finish_meta(d: Path, name: str, inputs: list[dict], fixed_batch, label: str, *,
                 source: dict, torch_info: dict | None = None) -> dict:
    from harness.plan.artifacts import package_versions
    from harness.plan.complexity import count
    from harness.plan.artifacts import onnx_io_meta as _io_meta

    t0 = time.perf_counter()
    batch = fixed_batch or 8
    n = -(-N_EVAL // batch) * batch
    x = random_inputs(inputs, n)
    ref = reference_outputs(d / "model.onnx", x, batch, label)
    np.savez_compressed(d / "eval.npz", **{f"x:{k}": v for k, v in x.items()}, reference=ref)
    per_sample = int(np.prod(ref.shape[1:])) if ref.ndim > 1 else 1
    metric = "top1_agreement" if ref.ndim == 2 and per_sample > 1 else "cosine"
    _, outputs, opset = _io_meta(d / "model.onnx")
    one = {i["name"]: tuple([fixed_batch or 1, *i["shape"][1:]]) for i in inputs}
    try:
        complexity = count(d / "model.onnx", one)
        complexity.pop("per_op", None)
    except BenchError as exc:
        complexity = {"error": str(exc)}
    meta = {
        "onnx": "model.onnx", "opset": opset, "inputs": inputs, "outputs": outputs, "precision": "fp32",
        "task": "fidelity", "metric": metric, "user_model": True, "source": source,
        "dataset": f"{n} seeded random inputs per input (numpy default_rng({SEED})); no labels",
        "description": f"user model {name}", "complexity": complexity,
        "fixed_batch": fixed_batch,
        "reference": {"metric": "fidelity", "value": None, "computed_by": "onnxruntime CPUExecutionProvider"},
        "recipe": {"name": "fp32", "params": {}},
        "build_s": time.perf_counter() - t0, "versions": package_versions(),
    }
    if torch_info:
        meta["torch"] = torch_info
    return meta


def resolve(refs, shape_texts=(), *, root: Path | None = None, rebuild: bool = False,
            emit: Callable[[str, dict], None] | None = None, isolate: Callable | None = None) -> list[UserModel]:
    """Validate and build (or fetch from the cache) the artifacts of the user's models.

    ``refs``: ``*.onnx`` paths and/or ``package.module:factory`` references; ``shape_texts``:
    the ``--input-shape`` values (a named shape goes to the model with that input).
    ``isolate``: ``run_in_worker(target, payload, timeout_s=...)`` to build torch factories in a
    process of their own (``bench run`` passes harness.run.worker.run_in_worker).
    Raises :class:`BenchError` (one line, exit 2) for anything unusable.
    """
    emit = emit or (lambda kind, data: None)
    shapes = parse_shapes(shape_texts)
    parsed = {ref: _read_onnx(Path(ref).expanduser(), ref) for ref in refs
              if ref.lower().endswith(".onnx") and not Path(ref).expanduser().is_dir()}
    onnx_inputs = {ref: [n for n, _, _ in _declared_inputs(p[0])] for ref, p in parsed.items()}
    claimed = {n for names in onnx_inputs.values() for n in names}
    models: list[UserModel] = []
    used: set = set()
    for ref in refs:
        t0 = time.perf_counter()
        if ref in parsed:
            mine = {k: v for k, v in shapes.items() if k is None or k in onnx_inputs[ref]}
        else:  # a torch factory's inputs are what the shapes name (those no ONNX model of the run has)
            mine = {k: v for k, v in shapes.items() if k not in claimed}
        used.update(mine)
        emit("artifact", {"model": ref, "variant": VARIANT})
        if Path(ref).expanduser().is_dir():  # a checkpoint folder: the generative LLM path
            from suites.zoo.llm import user_checkpoint

            name, art, built = user_checkpoint(ref, root=root, rebuild=rebuild)
            um = UserModel(ref, name, "llm", art, built, None, 1)
        else:
            um = (_onnx_user_model(ref, mine, parsed[ref], root=root, rebuild=rebuild) if ref in parsed
                  else _torch_user_model(ref, mine, root=root, rebuild=rebuild, isolate=isolate))
        emit("artifact_ready", {"model": um.name, "variant": VARIANT, "built": um.built,
                                "seconds": time.perf_counter() - t0})
        if any(m.name == um.name for m in models):
            raise BenchError(f"two of your models are both named '{um.name}'; rename one of the files")
        models.append(um)
    unused = [n for n in shapes if n not in used]
    if unused:
        raise BenchError(f"--input-shape {unused[0] or '(unnamed)'} matches no input of your models")
    return models
