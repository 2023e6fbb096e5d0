"""Global magnitude pruning (unstructured), then a short fine-tune with the mask held fixed.

The weights of every ``nn.Linear`` and ``nn.Conv1d/2d/3d`` (and the packed input
projection of ``nn.MultiheadAttention``) are ranked together by absolute value and the
smallest ``amount`` of them are set to exactly zero (one global threshold, so layers end
up with different sparsities: Han et al. 2015, "Learning both Weights and Connections").
Biases, normalisation and embedding tables are left alone.

Fine-tune (mask re-applied after every step, BatchNorm statistics frozen), the policy of
``_common.finetune_compressed``:
- models with labels: cross-entropy on the base's training split (``data.npz``);
- training inputs without labels: MSE to the fp32 base's outputs on the same inputs
  (distillation from the base), capped at ``fidelity_steps`` steps;
- no training inputs (the zoo's random-weight ResNet-18/MobileNetV2 and the pretrained
  text encoder ship none): not fine-tuned, ``finetune.skipped`` says so -- the variant
  then measures what magnitude pruning alone does to fidelity vs fp32.

The model is re-exported with the base's exporter; ``sparsity`` in the meta is read back
from the exported ONNX initializers (harness.plan.complexity), not from the torch masks.
"""
from __future__ import annotations

from pathlib import Path

from harness.errors import BenchError
from suites.recipes import _common as C


def prunable(module) -> list[tuple[str, object]]:
    """``[(qualified name, weight parameter)]`` that global pruning ranks together."""
    import torch.nn as nn

    out = []
    for name, m in module.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            out.append((f"{name}.weight", m.weight))
        elif isinstance(m, nn.MultiheadAttention):
            for pname in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                p = getattr(m, pname, None)
                if p is not None:
                    out.append((f"{name}.{pname}", p))
    return out


def global_magnitude_masks(weights: list, amount: float) -> dict:
    """0/1 masks zeroing exactly ``round(amount * N)`` of the N weights with the smallest |w|."""
    import torch

    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    k = int(round(amount * flat.numel()))
    keep = torch.ones_like(flat)
    if k > 0:
        idx = torch.argsort(flat, stable=True)[:k]
        keep[idx] = 0.0
    masks, i = {}, 0
    for w in weights:
        n = w.numel()
        masks[w] = keep[i:i + n].reshape(w.shape).to(w.dtype)
        i += n
    return masks


def apply(base, out_dir: Path, *, amount: float, finetune_epochs: int = 10, lr: float = 3e-3,
          fidelity_steps: int = 30, batch_size: int = 64) -> dict:
    import torch

    recipe = f"pruned-{int(round(amount * 100))}"
    if not 0.0 < amount < 1.0:
        raise BenchError(f"{recipe}: amount must be in (0, 1), got {amount}")
    module = C.base_module(base, recipe)
    named = prunable(module)
    if not named:
        raise BenchError(f"{recipe}: model {base.name} has no Linear/Conv weights to prune")
    params_before = C.count_params(module)
    masks = global_magnitude_masks([w for _, w in named], amount)
    with torch.no_grad():
        for w, mask in masks.items():
            w.mul_(mask)

    ft = C.finetune_compressed(base, module, masks=masks, epochs=finetune_epochs, lr=lr, batch_size=batch_size,
                               fidelity_steps=fidelity_steps)

    per_layer = {name: round(float((w == 0).float().mean()), 4) for name, w in named}
    torch_meta = C.save_torch(module, out_dir, base.meta["torch"]["factory"], base.meta["torch"].get("kwargs", {}))
    onnx_path = C.export(module, base, out_dir)
    w = C.weight_summary(onnx_path)
    check = C.ort_check(onnx_path, base)
    return {
        "precision": "fp32",
        "recipe": {"name": recipe, "params": {"amount": amount, "kind": "global magnitude, unstructured",
                                              "finetune_epochs": finetune_epochs, "lr": lr,
                                              "fidelity_steps": fidelity_steps}},
        "torch": torch_meta,
        "sparsity": w["weight_sparsity"],  # read back from the ONNX initializers
        "sparsity_torch_pruned_tensors": round(sum(int((p == 0).sum()) for _, p in named)
                                               / sum(p.numel() for _, p in named), 6),
        "sparsity_per_layer": per_layer,
        "params_before": params_before,
        "params_after": C.count_params(module),
        "nonzero_params_after": C.count_nonzero_params(module),
        "finetune": ft,
        "check": check,
    }
