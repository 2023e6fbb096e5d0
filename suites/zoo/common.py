"""Shared pieces of the zoo: the trained-model bundle, training loop, ONNX export."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17


@dataclass
class Trained:
    """A trained fp32 model and the data it was trained and is evaluated on."""

    module: Any  # torch.nn.Module in eval mode
    factory: str  # "module:function" that rebuilds the architecture
    factory_kwargs: dict
    task: str  # "classification" | "fidelity"
    input_name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_calib: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray | None
    info: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_classifier(module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float = 1e-2,
                     batch_size: int = 64, seed: int = 0, weight_decay: float = 0.0,
                     soft_targets: np.ndarray | None = None, temperature: float = 1.0,
                     alpha: float = 0.0) -> dict:
    """Train ``module`` with Adam on cross-entropy; optional distillation term.

    Loss = (1 - alpha) * CE(logits, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))
    (Hinton et al. 2015); alpha = 0 is plain supervised training.
    Returns {"epochs", "final_loss", "train_accuracy"}.
    """
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    st = None if soft_targets is None else torch.as_tensor(soft_targets, dtype=torch.float32)
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    module.train()
    loss_value = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), batch_size):
            idx = perm[i:i + batch_size]
            logits = module(xt[idx])
            loss = F.cross_entropy(logits, yt[idx])
            if st is not None and alpha > 0:
                kd = F.kl_div(F.log_softmax(logits / temperature, dim=1),
                              F.softmax(st[idx] / temperature, dim=1), reduction="batchmean")
                loss = (1 - alpha) * loss + alpha * temperature ** 2 * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_value = float(loss.detach())
    module.eval()
    with torch.no_grad():
        acc = float((module(xt).argmax(1) == yt).float().mean())
    return {"epochs": epochs, "final_loss": loss_value, "train_accuracy": acc}


def export_onnx(module, example: np.ndarray, path: Path, *, input_name: str = "input",
                output_name: str = "output", opset: int = OPSET) -> None:
    """Export with a dynamic batch dim, weights inline (no side .data file)."""
    import torch

    module.eval()
    ex = torch.as_tensor(example[:1])
    torch.onnx.export(
        module, (ex,), str(path), input_names=[input_name], output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        opset_version=opset, dynamo=False, external_data=False,
    )
