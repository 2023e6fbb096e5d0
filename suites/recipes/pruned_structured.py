"""Structured pruning: remove whole hidden neurons / conv output channels, then fine-tune.

The layers really shrink (smaller ``nn.Linear`` / ``nn.Conv`` modules, smaller ONNX weight
matrices), unlike unstructured pruning, whose zeros a dense runtime still multiplies.

Which models: those whose forward pass is a plain chain (traced with ``torch.fx``): Linear
and Conv (groups = 1) layers with BatchNorm, activations, dropout, pooling and flatten in
between -- MLPs and simple CNNs. Residual networks built of basic blocks (``conv1 -> bn1 ->
conv2`` inside a block, e.g. ``fmnist-resnet``) get the dependency-aware part: the inner
channels of every block are pruned, the residual stream's channels (tied across every add)
are kept. Other branching or attention models are refused with a one-line reason.

What goes: in every Linear/Conv but the last (whose outputs are the model's outputs) the
``amount`` fraction of output neurons/channels with the smallest L2 norm of their weights
(times |gamma| / sqrt(var + eps) of a BatchNorm right after, i.e. the norm of the weight
the exporter folds). The following BatchNorm is sliced and the next layer loses the
matching inputs (for a conv followed by flatten -> Linear: the channel's block of columns).

The torch form is rebuilt by the model's own factory with shrunk width kwargs when one
matches (e.g. ``hidden: [128, 64] -> [64, 32]``), else by :func:`rebuild` here (the base
architecture with the pruned layers swapped for smaller ones). Fine-tune as in
``suites.recipes.pruned`` (labels, or distillation from the fp32 base without labels).
"""
from __future__ import annotations

import copy
from pathlib import Path

from harness.errors import BenchError
from suites.recipes import _common as C

_PASS_MODULES = ("ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "ELU", "Hardswish", "Hardtanh",
                 "Mish", "Dropout", "Dropout1d", "Dropout2d", "AlphaDropout", "MaxPool1d", "MaxPool2d", "AvgPool1d",
                 "AvgPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Identity")
_PASS_FUNCTIONS = ("relu", "relu6", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "hardswish", "dropout",
                   "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
                   "adaptive_avg_pool2d", "adaptive_max_pool2d")
_FLATTEN = ("flatten", "view", "reshape")


# --------------------------------------------------------------------------- analysis


def chain(module, name: str, recipe: str) -> list[tuple[str, str, object]]:
    """The forward pass as ``[(kind, target, module or None)]`` with kind in
    producer | norm | pass | flatten; a BenchError when it is not a plain chain."""
    import torch.fx as fx
    import torch.nn as nn

    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:  # noqa: BLE001 - data-dependent control flow etc.
        raise BenchError(f"{recipe}: model {name} cannot be traced for channel pruning "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise BenchError(f"{recipe}: model {name} takes {len(placeholders)} inputs; channel pruning handles "
                         "single-input chains only")
    prev = placeholders[0]
    steps = []
    for n in nodes:
        if n.op in ("placeholder", "output"):
            continue
        if n.all_input_nodes != [prev] or len(prev.users) != 1:
            raise BenchError(f"{recipe}: model {name} is not a plain chain of layers (node '{n.name}' branches or "
                             "merges, e.g. a residual connection or attention); structured pruning here handles "
                             "MLPs and plain CNNs only")
        prev = n
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            t = type(m).__name__
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                if getattr(m, "groups", 1) != 1:
                    raise BenchError(f"{recipe}: model {name}: grouped/depthwise convolution '{n.target}' is not "
                                     "supported by channel pruning")
                steps.append(("producer", n.target, m))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                steps.append(("norm", n.target, m))
            elif isinstance(m, nn.Flatten):
                steps.append(("flatten", n.target, m))
            elif t in _PASS_MODULES:
                steps.append(("pass", n.target, m))
            else:
                raise BenchError(f"{recipe}: model {name}: layer '{n.target}' ({t}) is not supported by channel "
                                 "pruning")
        elif n.op in ("call_function", "call_method"):
            fname = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
            if fname in _FLATTEN:
                steps.append(("flatten", fname, None))
            elif fname in _PASS_FUNCTIONS:
                steps.append(("pass", fname, None))
            else:
                raise BenchError(f"{recipe}: model {name}: operation '{fname}' is not supported by channel pruning")
        else:
            raise BenchError(f"{recipe}: model {name}: node '{n.name}' ({n.op}) is not supported by channel pruning")
    if sum(1 for s in steps if s[0] == "producer") < 2:
        raise BenchError(f"{recipe}: model {name} has fewer than two Linear/Conv layers: no hidden neurons to prune")
    return steps


def _norms(layer, bn):
    """Per-output L2 norm of the weight, scaled by the following BatchNorm's |gamma|/sqrt(var+eps)."""
    import torch

    w = layer.weight.detach()
    n = w.reshape(w.shape[0], -1).norm(dim=1)
    if bn is not None and bn.affine and bn.track_running_stats:
        n = n * bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)
    return n


# --------------------------------------------------------------------------- layer surgery


def _new_like(m, *, in_dim: int | None = None, out_dim: int | None = None):
    import torch.nn as nn

    if isinstance(m, nn.Linear):
        return nn.Linear(in_dim if in_dim is not None else m.in_features,
                         out_dim if out_dim is not None else m.out_features, bias=m.bias is not None)
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return type(m)(in_dim if in_dim is not None else m.in_channels,
                       out_dim if out_dim is not None else m.out_channels, m.kernel_size, stride=m.stride,
                       padding=m.padding, dilation=m.dilation, groups=1, bias=m.bias is not None,
                       padding_mode=m.padding_mode)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return type(m)(out_dim if out_dim is not None else m.num_features, eps=m.eps, momentum=m.momentum,
                       affine=m.affine, track_running_stats=m.track_running_stats)
    raise TypeError(type(m).__name__)


def _set(module, qualname: str, new) -> None:
    parent, _, leaf = qualname.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, new)


def _shape_of(m) -> dict:
    import torch.nn as nn

    if isinstance(m, nn.Linear):
        return {"in": m.in_features, "out": m.out_features}
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {"out": m.num_features}
    return {"in": m.in_channels, "out": m.out_channels}


def rebuild(factory: str, kwargs: dict, shapes: dict) -> object:
    """Torch factory for a channel-pruned model: the base architecture with the layers in
    ``shapes`` (``{qualified name: {"in", "out"}}``) replaced by smaller ones."""
    from harness.plan.plugins import load_object

    module = load_object(factory)(**kwargs)
    for qualname, dims in shapes.items():
        _set(module, qualname, _new_like(module.get_submodule(qualname), in_dim=dims.get("in"),
                                         out_dim=dims.get("out")))
    return module


def prune_chain(module, steps, amount: float) -> tuple[object, dict, list[int], list[int]]:
    """Shrink ``module`` (a deep copy is returned). -> (pruned, shapes, widths before, widths after)."""
    import torch

    pruned = copy.deepcopy(module)
    prod_idx = [i for i, s in enumerate(steps) if s[0] == "producer"]
    shapes: dict = {}
    before, after = [], []
    for a, b in zip(prod_idx, prod_idx[1:]):
        _, name_a, layer_a = steps[a]
        _, name_b, _ = steps[b]
        between = steps[a + 1:b]
        bn = next((s[2] for s in between if s[0] == "norm"), None)
        n_out = layer_a.weight.shape[0]
        n_keep = max(1, int(round(n_out * (1.0 - amount))))
        keep = torch.sort(torch.argsort(_norms(layer_a, bn), descending=True, stable=True)[:n_keep]).values
        before.append(n_out)
        after.append(n_keep)
        # producer a: keep its rows (output neurons / channels)
        cur_a = pruned.get_submodule(name_a)
        new_a = _new_like(cur_a, in_dim=_shape_of(cur_a)["in"], out_dim=n_keep)
        with torch.no_grad():
            new_a.weight.copy_(cur_a.weight[keep])
            if cur_a.bias is not None:
                new_a.bias.copy_(cur_a.bias[keep])
        _set(pruned, name_a, new_a)
        shapes[name_a] = _shape_of(new_a)
        # per-channel layers in between
        flattened = False
        for kind, name, _m in between:
            if kind == "flatten":
                flattened = True
            if kind != "norm":
                continue
            cur = pruned.get_submodule(name)
            if flattened:
                raise BenchError(f"BatchNorm '{name}' after a flatten is not supported by channel pruning")
            new = _new_like(cur, out_dim=n_keep)
            with torch.no_grad():
                if cur.affine:
                    new.weight.copy_(cur.weight[keep])
                    new.bias.copy_(cur.bias[keep])
                if cur.track_running_stats:
                    new.running_mean.copy_(cur.running_mean[keep])
                    new.running_var.copy_(cur.running_var[keep])
                    new.num_batches_tracked.copy_(cur.num_batches_tracked)
            _set(pruned, name, new)
            shapes[name] = _shape_of(new)
        # producer b: drop the matching inputs
        cur_b = pruned.get_submodule(name_b)
        w = cur_b.weight
        in_b = w.shape[1]
        if in_b == n_out:
            cols = keep
        elif in_b % n_out == 0 and flattened and w.dim() == 2:
            s = in_b // n_out  # flatten of (C, spatial...): channel c owns columns [c*s, (c+1)*s)
            cols = (keep[:, None] * s + torch.arange(s)[None, :]).reshape(-1)
        else:
            raise BenchError(f"channel pruning: layer '{name_b}' takes {in_b} inputs from '{name_a}' "
                             f"({n_out} outputs); cannot map channels to inputs")
        new_b = _new_like(cur_b, in_dim=len(cols), out_dim=_shape_of(cur_b)["out"])
        with torch.no_grad():
            new_b.weight.copy_(w[:, cols])
            if cur_b.bias is not None:
                new_b.bias.copy_(cur_b.bias)
        _set(pruned, name_b, new_b)
        shapes[name_b] = _shape_of(new_b)
    return pruned, shapes, before, after


def residual_blocks(module) -> list[tuple[str, object]]:
    """``[(name, block)]`` of residual blocks whose inner width is free: a ``conv1 -> bn1 -> ... ->
    conv2`` pair inside a block (``suites.zoo.vision.BasicBlock``), groups = 1."""
    import torch.nn as nn

    out = []
    for name, m in module.named_modules():
        c1, b1, c2 = (getattr(m, a, None) for a in ("conv1", "bn1", "conv2"))
        if (isinstance(c1, nn.Conv2d) and isinstance(b1, nn.BatchNorm2d) and isinstance(c2, nn.Conv2d)
                and c1.groups == 1 and c2.groups == 1 and c1.out_channels == b1.num_features == c2.in_channels
                and getattr(m, "conv3", None) is None):
            out.append((name, m))
    return out


def prune_blocks(module, blocks: list, amount: float) -> tuple[object, dict, list[int], list[int]]:
    """Dependency-aware channel pruning of a residual network, the safe part: inside every basic
    block the ``amount`` fraction of ``conv1``'s output channels with the smallest (BN-scaled) L2
    norm go, with ``bn1``'s matching entries and ``conv2``'s matching input channels. The channels
    of the residual stream (tied across every block's add) are kept. -> (pruned copy, shapes,
    inner widths before, after)."""
    import torch

    pruned = copy.deepcopy(module)
    shapes, before, after = {}, [], []
    for name, _ in blocks:
        blk = pruned.get_submodule(name) if name else pruned
        c1, b1, c2 = blk.conv1, blk.bn1, blk.conv2
        n = c1.out_channels
        k = max(1, n - int(round(amount * n)))
        keep = torch.sort(torch.argsort(_norms(c1, b1), descending=True)[:k]).values
        new_c1 = _new_like(c1, out_dim=k)
        new_b1 = _new_like(b1, out_dim=k)
        new_c2 = _new_like(c2, in_dim=k)
        with torch.no_grad():
            new_c1.weight.copy_(c1.weight[keep])
            if c1.bias is not None:
                new_c1.bias.copy_(c1.bias[keep])
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(new_b1, attr).copy_(getattr(b1, attr)[keep])
            new_b1.num_batches_tracked.copy_(b1.num_batches_tracked)
            new_c2.weight.copy_(c2.weight[:, keep])
            if c2.bias is not None:
                new_c2.bias.copy_(c2.bias)
        blk.conv1, blk.bn1, blk.conv2 = new_c1, new_b1, new_c2
        prefix = f"{name}." if name else ""
        shapes[f"{prefix}conv1"] = {"in": c1.in_channels, "out": k}
        shapes[f"{prefix}bn1"] = {"out": k}
        shapes[f"{prefix}conv2"] = {"in": k, "out": c2.out_channels}
        before.append(n)
        after.append(k)
    return pruned.eval(), shapes, before, after


def shrink_kwargs(kwargs: dict, before: list[int], after: list[int]) -> dict | None:
    """Factory kwargs with the width lists that match ``before`` replaced by ``after``.

    A kwarg whose value is a list of ints equal to a contiguous run of the pruned layers'
    widths (e.g. ``hidden: [128, 64]``) gets the pruned widths. None when no kwarg matched.
    """
    new = dict(kwargs)
    matched = False
    pos = 0
    for k, v in kwargs.items():
        if not (isinstance(v, (list, tuple)) and v and all(isinstance(i, int) and not isinstance(i, bool)
                                                          for i in v)):
            continue
        n = len(v)
        for j in range(pos, len(before) - n + 1):
            if list(before[j:j + n]) == list(v):
                new[k] = list(after[j:j + n])
                pos = j + n
                matched = True
                break
    return new if matched else None


# --------------------------------------------------------------------------- the recipe


def apply(base, out_dir: Path, *, amount: float = 0.5, finetune_epochs: int = 10, lr: float = 3e-3,
          fidelity_steps: int = 30, batch_size: int = 64) -> dict:
    recipe = f"pruned-structured-{int(round(amount * 100))}"
    module = C.base_module(base, recipe)
    params_before = C.count_params(module)
    blocks = residual_blocks(module)
    try:
        steps = chain(module, base.name, recipe)
    except BenchError:
        if not blocks:
            raise
        steps = None
    try:
        if steps is not None:
            pruned, shapes, before, after = prune_chain(module, steps, amount)
            kind = "structured: neurons/channels by L2 norm"
        else:  # a residual network: the channels inside each block (the residual stream stays)
            pruned, shapes, before, after = prune_blocks(module, blocks, amount)
            kind = "structured: the inner channels of every residual block, by BN-scaled L2 norm"
    except BenchError as exc:
        raise BenchError(f"{recipe}: model {base.name}: {exc}") from None

    ft = C.finetune_compressed(base, pruned, teacher=module, epochs=finetune_epochs, lr=lr,
                               batch_size=batch_size, fidelity_steps=fidelity_steps)

    tm = base.meta["torch"]
    factory, kwargs = tm["factory"], tm.get("kwargs", {})
    small = shrink_kwargs(kwargs, before, after) if steps is not None else None
    torch_meta, how = None, None
    if small is not None:
        try:
            candidate = {"factory": factory, "kwargs": small, "state_dict": "model.pt"}
            C.check_rebuild(candidate, pruned, recipe)
            torch_meta, how = candidate, "model factory with shrunk width kwargs"
        except (BenchError, TypeError, ValueError):
            torch_meta = None
    if torch_meta is None:
        torch_meta = {"factory": f"{__name__}:rebuild",
                      "kwargs": {"factory": factory, "kwargs": kwargs, "shapes": shapes}, "state_dict": "model.pt"}
        C.check_rebuild(torch_meta, pruned, recipe)
        how = "base architecture with the pruned layers replaced (suites.recipes.pruned_structured:rebuild)"
    C.save_torch(pruned, out_dir, torch_meta["factory"], torch_meta["kwargs"])

    onnx_path = C.export(pruned, base, out_dir)
    w = C.weight_summary(onnx_path)
    return {
        "precision": "fp32",
        "recipe": {"name": recipe, "params": {"amount": amount, "kind": kind,
                                              "finetune_epochs": finetune_epochs, "lr": lr,
                                              "fidelity_steps": fidelity_steps}},
        "torch": torch_meta,
        "torch_rebuild": how,
        "widths_before": before,
        "widths_after": after,
        "layer_shapes": shapes,
        "sparsity": w["weight_sparsity"],  # exact zeros left in the (smaller) ONNX weights
        "params_before": params_before,
        "params_after": C.count_params(pruned),
        "finetune": ft,
        "check": C.ort_check(onnx_path, base),
    }
