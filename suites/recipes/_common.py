"""Pieces the recipes share: the base's torch module and data, fine-tuning, export, ONNX facts.

Everything heavy (torch, onnx, onnxruntime) is imported inside the functions, so importing
this module (and the registry) stays cheap.
"""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import BenchError

#: ONNX weight summary fields read back from an exported graph (harness.plan.complexity.count);
#: suites.build records the full count as meta["complexity"] for every artifact
_WEIGHT_FIELDS = ("params", "macs", "nonzero_macs", "weight_sparsity", "weight_elements", "zero_weight_elements",
                  "model_bytes")


# --------------------------------------------------------------------------- the base


def base_module(base, recipe: str):
    """The base's fp32 torch module (eval mode); a clear error when the artifact has none."""
    module = base.torch_module()
    if module is None:
        raise BenchError(f"{recipe}: model {base.name} has no torch form (meta['torch'] is empty), "
                         "and this recipe rewrites the torch model")
    return module


def train_split(base) -> tuple[Any, np.ndarray | None]:
    """``(x_train, y_train)`` of the base; ``y_train`` is None for models without labels.

    ``x_train`` is an array for single-input models, ``{input name: array}`` for multi-input
    ones (stored as ``x_train:<name>`` in data.npz), or None when the base has no training
    inputs (the random-weight / pretrained fidelity models ship none).
    """
    p = base.dir / "data.npz"
    if not p.exists():
        return None, None
    names = [i["name"] for i in base.inputs]
    with np.load(p) as z:
        files = z.files
        if any(f.startswith("x_train:") for f in files):
            x = {n: z[f"x_train:{n}"] for n in names if f"x_train:{n}" in files}
        elif "x_train" in files:
            try:
                x = z["x_train"]
            except ValueError:  # an object array (pickled dict): not readable without pickle
                x = None
        else:
            x = None
        y = z["y_train"] if "y_train" in files else np.zeros(0)
    n = n_samples(x)
    if not n:
        return None, None
    labelled = base.meta.get("task") == "classification" and y.size == n
    return x, (y.astype(np.int64) if labelled else None)


def n_samples(x) -> int:
    if x is None:
        return 0
    if isinstance(x, dict):
        return len(next(iter(x.values()))) if x else 0
    return len(x)


def _take(x, idx):
    return {k: v[idx] for k, v in x.items()} if isinstance(x, dict) else x[idx]


def _args(x) -> tuple:
    """Module call arguments for inputs ``x`` (array or ``{name: array}`` in forward order)."""
    import torch

    arrays = list(x.values()) if isinstance(x, dict) else [x]
    return tuple(torch.as_tensor(np.ascontiguousarray(a)) for a in arrays)


def eval_inputs(base):
    """The base's eval inputs: one array for single-input models, else ``{name: array}``."""
    ev = base.eval_data()["x"]
    return ev[base.inputs[0]["name"]] if len(base.inputs) == 1 else {i["name"]: ev[i["name"]] for i in base.inputs}


def io_names(base) -> tuple[str, str]:
    outputs = base.meta.get("outputs") or [{"name": "output"}]
    return base.inputs[0]["name"], outputs[0]["name"]


def predict(module, x, batch_size: int = 256) -> np.ndarray:
    """The module's outputs (logits) on ``x`` in fp32, batched, without gradients."""
    import torch

    module.eval()
    outs = []
    n = n_samples(x)
    with torch.no_grad():
        for i in range(0, n, batch_size):
            outs.append(module(*_args(_take(x, slice(i, i + batch_size)))).float().numpy())
    return np.concatenate(outs) if outs else np.zeros((0,))


def count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def count_nonzero_params(module) -> int:
    return int(sum(int((p != 0).sum()) for p in module.parameters()))


def seed_of(base) -> int:
    """The zoo seed of the base's model (0 when the model is not in the zoo)."""
    from suites import zoo

    try:
        return int(zoo.get(base.name).seed)
    except BenchError:
        return 0


def training_lr(base, default: float = 3e-3) -> float:
    return float((base.meta.get("training") or {}).get("lr", default))


def training_epochs(base, default: int = 30) -> int:
    return int((base.meta.get("training") or {}).get("epochs", default))


# --------------------------------------------------------------------------- fine-tuning


@contextmanager
def one_thread():
    """Train with one torch thread: the models trained here are small, one thread is faster than
    two fighting over a loaded machine's cores, and results do not depend on the core count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def finetune(module, x: np.ndarray, *, y: np.ndarray | None = None, teacher: np.ndarray | None = None,
             epochs: int, lr: float, batch_size: int = 64, seed: int = 0, masks: dict | None = None,
             max_steps: int | None = None) -> dict:
    """Short Adam fine-tune of an already-trained (compressed) module.

    With labels ``y``: cross-entropy on the labels. Without labels: mean squared error
    between the module's outputs and ``teacher`` (the fp32 base's outputs on the same
    inputs) -- distillation from the base, the only target a random-weight model has.
    ``masks`` (``{parameter: 0/1 tensor}``) are re-applied after every step, so pruned
    weights stay exactly zero. BatchNorm layers stay in eval mode (their running
    statistics are the base's, which the fp32 reference was computed with).
    """
    import torch
    import torch.nn.functional as F

    if y is None and teacher is None:
        raise ValueError("finetune needs labels or teacher outputs")
    g = torch.Generator().manual_seed(seed)
    n = n_samples(x)
    target = torch.as_tensor(y, dtype=torch.long) if y is not None else torch.as_tensor(teacher, dtype=torch.float32)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    module.train()
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    steps, loss_value = 0, float("nan")
    done = False
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            out = module(*_args(_take(x, idx.numpy())))
            loss = F.cross_entropy(out, target[idx]) if y is not None else F.mse_loss(out, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for p, mask in masks.items():
                        p.mul_(mask)
            steps += 1
            loss_value = float(loss.detach())
            if max_steps is not None and steps >= max_steps:
                done = True
                break
        if done:
            break
    module.eval()
    info = {"objective": "cross-entropy on labels" if y is not None else "MSE to the fp32 base's outputs",
            "epochs": epochs, "steps": steps, "lr": lr, "batch_size": batch_size, "final_loss": loss_value,
            "train_samples": int(n)}
    pred = predict(module, x)
    if y is not None:
        info["train_accuracy"] = float((pred.argmax(1) == y).mean())
    else:
        info["train_top1_agreement"] = float((pred.argmax(1) == teacher.argmax(1)).mean())
    return info


def finetune_compressed(base, module, *, teacher=None, masks: dict | None = None, epochs: int, lr: float,
                        batch_size: int, fidelity_steps: int) -> dict:
    """The pruning recipes' fine-tune policy, in one place.

    - labels in the base's training split: cross-entropy on them, ``epochs`` epochs (at most
      ``training.finetune_max_steps`` steps where the base's training info sets one, e.g. the
      60,000-image Fashion-MNIST model);
    - training inputs but no labels: distillation from the fp32 base (MSE to its outputs),
      at most ``fidelity_steps`` steps;
    - no training inputs (the zoo's random-weight / pretrained fidelity models ship none):
      no fine-tune; the variant measures pruning alone, and the meta says so. (The
      calibration split is not used for training: int8-static calibrates on it.)
    """
    import torch

    x, y = train_split(base)
    seed = seed_of(base)
    torch.manual_seed(seed)
    if x is None:
        return {"skipped": f"model {base.name} has no training inputs (task '{base.meta.get('task')}'): "
                           "pruned without fine-tuning"}
    if y is not None:
        # a model with a large training split caps the fine-tune (its training info says how many steps)
        cap = (base.meta.get("training") or {}).get("finetune_max_steps")
        with one_thread():
            return finetune(module, x, y=y, epochs=epochs, lr=lr, batch_size=batch_size, masks=masks, seed=seed,
                            max_steps=int(cap) if cap else None)
    if teacher is None:
        teacher = base_module(base, "fine-tune")
    return finetune(module, x, teacher=predict(teacher, x), epochs=max(1, epochs), lr=lr, batch_size=batch_size,
                    masks=masks, max_steps=fidelity_steps, seed=seed)


# --------------------------------------------------------------------------- writing a variant


def save_torch(module, out_dir: Path, factory: str, kwargs: dict) -> dict:
    """Save the state_dict as model.pt; returns the meta["torch"] entry."""
    import torch

    torch.save(module.state_dict(), out_dir / "model.pt")
    return {"factory": factory, "kwargs": kwargs, "state_dict": "model.pt"}


def check_rebuild(torch_meta: dict, module, recipe: str) -> None:
    """The factory + kwargs really rebuild ``module`` (same state_dict keys and shapes)."""
    from harness.plan.plugins import load_object

    rebuilt = load_object(torch_meta["factory"])(**torch_meta.get("kwargs", {}))
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:3]
        raise BenchError(f"{recipe}: {torch_meta['factory']}(**{torch_meta.get('kwargs')}) does not rebuild the "
                         f"compressed model (first differences: {diff})")


def export(module, base, out_dir: Path) -> Path:
    """Export ``module`` like the base was exported (same opset, IO names, dynamic batch)."""
    import warnings

    from suites.zoo.common import export_onnx

    input_name, output_name = io_names(base)
    path = out_dir / "model.onnx"
    opset = base.meta.get("opset") or 17
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(module, eval_inputs(base), path, input_name=input_name, output_name=output_name,
                    opset=opset)
    return path


def copy_torch(base, out_dir: Path) -> dict | None:
    """Carry the base's torch form over unchanged (for variants that only change precision)."""
    info = base.meta.get("torch")
    if not info:
        return None
    shutil.copyfile(base.dir / info.get("state_dict", "model.pt"), out_dir / "model.pt")
    return {**info, "state_dict": "model.pt"}


# --------------------------------------------------------------------------- reading ONNX back


def weight_summary(onnx_path: Path) -> dict:
    """Parameters, MACs and weight sparsity read back from the exported file (harness.plan.complexity)."""
    from harness.plan.complexity import count

    c = count(onnx_path)
    out = {k: c.get(k) for k in _WEIGHT_FIELDS}
    out["weight_bits"] = (c.get("weight_bits") or {}).get("by_dtype")
    return out


def op_counts(onnx_path: Path) -> dict[str, int]:
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    counts: dict[str, int] = {}
    for n in m.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def ort_check(onnx_path: Path, base, n: int = 16) -> dict:
    """Run the variant with onnxruntime's CPU EP on eval inputs: it loads and runs here.

    Returns its agreement with the fp32 reference (and top-1 on labels when there are some),
    and the op types of the graph onnxruntime really executes after its optimisations.
    """
    import tempfile

    import onnx
    import onnxruntime as ort

    ev = base.eval_data()
    # the first n eval samples: a check that the variant loads, runs and is in the right
    # neighbourhood of fp32 (the case's accuracy pass measures it on the whole eval set). 16, not
    # more: a dynamic-int8 CNN runs ConvInteger at ~0.15 s an image here, and 64 images made this
    # check 9-12 s of each such build (EfficientNet-Lite0, ResNet-50; profiled 2026-12-02)
    feeds = {i["name"]: ev["x"][i["name"]][:n].astype(i.get("dtype") or "float32") for i in base.inputs}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opt_path = Path(tmp) / "optimized.onnx"
        so.optimized_model_filepath = str(opt_path)
        try:
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BenchError(f"onnxruntime (CPU) cannot load the variant: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0]}") from None
        out = sess.run(None, feeds)[0]
        optimized = onnx.load(str(opt_path), load_external_data=False)
        executed: dict[str, int] = {}
        for node in optimized.graph.node:
            executed[node.op_type] = executed.get(node.op_type, 0) + 1
        float16_values = _float16_values(optimized)
    ref = ev["reference"][:n]
    a = out.reshape(len(out), -1).astype(np.float64)
    b = ref.reshape(len(ref), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    res: dict[str, Any] = {"top1_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
                           "cosine": float(cos.mean()),
                           "max_abs_diff": float(np.abs(out.astype(np.float64) - ref).max()),
                           "onnxruntime_cpu_ops": dict(sorted(executed.items())),
                           "onnxruntime_cpu_float16_initializers": float16_values}
    if ev["labels"] is not None:
        res["top1"] = float((out.argmax(1) == ev["labels"][:n]).mean())
    res["n_samples"] = int(len(out))
    return res


def _float16_values(model) -> int:
    import onnx

    return sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)


# --------------------------------------------------------------------------- graph rewrites


def gemm_to_matmul(model):
    """Rewrite ``Gemm(A, B_const, C)`` (alpha = beta = 1, transA = 0) as ``MatMul(A, B') + C``.

    onnxruntime's dynamic quantizer quantizes MatMul but not Gemm (the form torch exports
    nn.Linear to), so without this a dynamically quantized MLP would stay fp32.
    """
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes = []
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                or attrs.get("beta", 1.0) != 1.0 or node.input[1] not in inits):
            new_nodes.append(node)
            continue
        b_name = node.input[1]
        if attrs.get("transB", 0):
            w = numpy_helper.to_array(inits[b_name]).T.copy()
            b_name = f"{b_name}_T"
            g.initializer.append(numpy_helper.from_array(w, b_name))
        base = node.name or node.output[0]
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{base}_matmul" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], b_name], [mm_out], name=f"{base}_MatMul"))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{base}_Add"))
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(model)
    return model


def preprocess(src: Path, dst: Path) -> dict:
    """onnxruntime.quantization's pre-processing (symbolic shape inference, ORT basic
    optimisations, ONNX shape inference); falls back to a plain copy with the reason."""
    import logging

    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger().setLevel(logging.ERROR)
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        return {"preprocessed": True}
    except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation, not a requirement
        shutil.copyfile(src, dst)
        return {"preprocessed": False, "preprocess_error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}


# --------------------------------------------------------------------------- composition


class StagedArtifact:
    """An intermediate artifact of a composed recipe: the base's data with a new model.

    Quacks like :class:`harness.plan.artifacts.Artifact` for what recipes read (``dir``, ``meta``,
    ``name``, ``onnx_path``, ``inputs``, ``eval_data``, ``calibration_data``,
    ``torch_module``): the data files are the base's, the model files the previous stage's.
    """

    def __init__(self, base, stage_dir: Path, stage_meta: dict):
        from harness.plan.artifacts import Artifact

        for f in ("data.npz", "eval.npz", "calib.npz"):
            if (base.dir / f).exists() and not (stage_dir / f).exists():
                shutil.copyfile(base.dir / f, stage_dir / f)
        meta = {**base.meta, **stage_meta, "onnx": "model.onnx"}
        (stage_dir / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        self._art = Artifact(stage_dir, meta)

    def __getattr__(self, name):
        return getattr(self._art, name)
