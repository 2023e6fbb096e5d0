"""Shared pieces of the zoo: the trained-model bundle, training loop, ONNX export, seeded inputs.

Multi-input models (e.g. a transformer with ``input_ids`` and ``attention_mask``) give their
inputs as ``{input name: array}`` dicts in ``Trained.x_eval`` / ``x_calib`` (in the order of the
module's ``forward`` arguments); single-input models give plain arrays named ``input_name``.
:func:`as_feeds` turns either form into the dict the runtimes take.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

OPSET = 17

#: one input's array, or ``{input name: array}`` for a model with several inputs
Inputs = Union[np.ndarray, Mapping[str, np.ndarray]]


@dataclass
class Trained:
    """A trained fp32 model and the data it was trained and is evaluated on.

    ``x_train`` / ``x_calib`` / ``x_eval`` are arrays (sample axis first) for single-input
    models, or ``{input name: array}`` for multi-input ones (``input_name`` is then the first
    input's name). ``y_train`` / ``y_eval`` are None for ``task="fidelity"`` models (random
    weights or no labels): their accuracy is agreement with the fp32 outputs, never top-1.
    """

    module: Any  # torch.nn.Module in eval mode
    factory: str  # "module:function" that rebuilds the architecture
    factory_kwargs: dict
    task: str  # "classification" | "fidelity"
    input_name: str
    x_train: Inputs
    y_train: np.ndarray | None
    x_calib: Inputs
    x_eval: Inputs
    y_eval: np.ndarray | None
    info: dict = field(default_factory=dict)
    #: arrays the model's scorer needs beside the outputs (``ModelSpec.scorer``), e.g. labels of a
    #: task that is not plain top-1; stored as ``task:<name>`` in eval.npz
    task_data: dict = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return list(self.x_eval) if isinstance(self.x_eval, Mapping) else [self.input_name]


def as_feeds(x: Inputs, input_name: str = "input") -> dict[str, np.ndarray]:
    """``{input name: array}`` for a plain array (named ``input_name``) or a dict of arrays."""
    if isinstance(x, Mapping):
        return {str(k): np.asarray(v) for k, v in x.items()}
    return {input_name: np.asarray(x)}


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def torch_threads(n: int = 1):
    """Run a block with ``torch.set_num_threads(n)``, restoring the previous count after.

    The zoo's models are small: one thread trains them faster than several fighting over
    a loaded machine's cores, and results do not depend on the core count.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_classifier(module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float = 1e-2,
                     batch_size: int = 64, seed: int = 0, weight_decay: float = 0.0,
                     soft_targets: np.ndarray | None = None, temperature: float = 1.0,
                     alpha: float = 0.0) -> dict:
    """Train ``module`` with Adam on cross-entropy; optional distillation term.

    Loss = (1 - alpha) * CE(logits, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))
    (Hinton et al. 2015); alpha = 0 is plain supervised training.
    Returns {"epochs", "final_loss", "train_accuracy", "lr", "batch_size", "weight_decay"},
    plus "temperature" and "alpha" when ``soft_targets`` is given.
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
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
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
    with torch.no_grad():  # in chunks: a large training split does not fit through a conv net at once
        hits = sum(int((module(xt[i:i + 1024]).argmax(1) == yt[i:i + 1024]).sum()) for i in range(0, len(xt), 1024))
        acc = hits / max(1, len(xt))
    info = {"epochs": epochs, "final_loss": loss_value, "train_accuracy": acc,
            "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay}
    if soft_targets is not None:
        info["temperature"] = temperature
        info["alpha"] = alpha
    return info


def export_onnx(module, example: Inputs, path: Path, *, input_name: str = "input",
                output_name: str = "output", opset: int = OPSET) -> None:
    """Export with a dynamic batch dim, weights inline (no side .data file).

    ``example`` is one input's array (named ``input_name``) or ``{input name: array}`` for a
    model with several inputs, in the order of ``module.forward``'s arguments; every input
    and the output get a symbolic batch dim (axis 0); other dims stay as in ``example``.
    """
    import warnings

    import torch

    feeds = as_feeds(example, input_name)
    module.eval()
    args = tuple(torch.as_tensor(v[:1]) for v in feeds.values())
    dynamic_axes = {name: {0: "batch"} for name in feeds}
    dynamic_axes[output_name] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        with torch.no_grad():
            torch.onnx.export(
                module, args, str(path), input_names=list(feeds), output_names=[output_name],
                dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False, external_data=False,
            )


def smooth_random_images(n: int, shape: tuple[int, int, int] = (3, 224, 224), *, seed: int,
                         scales: tuple[int, ...] = (7, 28, 112), noise: float = 0.1) -> np.ndarray:
    """``n`` seeded synthetic images, float32 ``(n, C, H, W)``, roughly N(0, 1) per pixel.

    Each image is a sum of smooth random fields: standard-normal noise drawn on coarse
    grids (``scales``: 7x7, 28x28, 112x112 for 224x224) and bilinearly upsampled, with
    amplitudes 1, 1/2, 1/4, plus ``noise`` x white noise; then standardised per image and
    channel. That gives blobs, edges and texture at several scales -- statistics nearer to
    normalised photographs than white noise -- with no data set to ship or download.
    Deterministic in ``seed`` (numpy PCG64 draws, torch bilinear interpolation on CPU).
    """
    import torch
    import torch.nn.functional as F

    c, h, w = shape
    rng = np.random.default_rng(seed)
    out = np.zeros((n, c, h, w), dtype=np.float32)
    for k, s in enumerate(scales):
        sh, sw = max(1, round(s * h / 224)), max(1, round(s * w / 224))
        coarse = torch.from_numpy(rng.standard_normal((n, c, sh, sw)).astype(np.float32))
        up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).numpy()
        out += (0.5 ** k) * up
    out += noise * rng.standard_normal(out.shape).astype(np.float32)
    mean = out.mean(axis=(2, 3), keepdims=True)
    std = out.std(axis=(2, 3), keepdims=True)
    return ((out - mean) / np.maximum(std, 1e-6)).astype(np.float32)
