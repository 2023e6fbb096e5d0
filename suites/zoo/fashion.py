"""``fmnist-resnet``: a small ResNet trained in-process on Fashion-MNIST (real labelled data from a package).

Data: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; Zalando, MIT licence), 60,000 training and
10,000 test 28x28 grey images of 10 clothing classes, read from the IDX files of the Debian
package ``dataset-fashion-mnist`` (:mod:`suites.datasets`; ``bench data install
fashion-mnist``, or ``BENCH_FASHION_MNIST`` = a folder with the four ``*.gz`` files).
Pixels are scaled to 0..1. The **10,000 test images are the eval set** (top-1 against their
labels); 1,000 training images (every 60th) are the calibration split of static int8.

Model (He et al. 2016, basic blocks, sized for a 2-core CPU): conv3x3 1->16 + BN + ReLU at
28x28, 2x2 max-pool; basic block 16->16 (14x14); basic block 16->32 stride 2 (7x7, 1x1
projection shortcut); basic block 32->64 stride 2 (4x4); global average pooling; linear
64->10. About 2.6 M MACs per image.
Trained from a fixed seed with AdamW (one-cycle learning rate, peak 4e-3, weight decay
5e-4), batch 128, :data:`EPOCHS` epochs over the 60,000 images with random horizontal flips
and 1-pixel shifts (seeded), :data:`TRAIN_THREADS` torch threads (a fixed count, not the machine's:
the float sums, hence the weights, then do not depend on the core count; two threads train 2.4x
faster than one on an idle 2-core EPYC, measured 2026-12-02), channels-last memory layout (1.5x
faster steps than NCHW there; the trained module is handed on in the default layout). The student
for distillation halves the widths (8, 16, 32).
"""
from __future__ import annotations

import gzip
import sys
import time

import numpy as np

from suites.zoo.common import Trained, seed_everything

SOURCE = "fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
EPOCHS = 2
#: fine-tune budget of the pruning recipes on this model (steps of 64 images: a third of an epoch)
FINETUNE_MAX_STEPS = 300
WIDTHS = (16, 32, 64)
#: torch threads for training (fixed: see the module docstring)
TRAIN_THREADS = 2


def read_idx(path) -> np.ndarray:
    """An IDX file (optionally gzipped): magic 0x0000 + dtype byte 0x08 (uint8) + ndim, big-endian dims."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        from harness.errors import BenchError

        raise BenchError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        from harness.errors import BenchError

        raise BenchError(f"{path}: {body.size} values for dims {dims} (truncated file?)")
    return body.reshape(dims)


def load_fashion_mnist() -> dict[str, np.ndarray]:
    """``{"x_train", "y_train", "x_test", "y_test"}``: uint8 images ``(N, 28, 28)``, int64 labels."""
    from suites import datasets

    fs = datasets.files(SOURCE)
    out = {"x_train": read_idx(fs["train-images-idx3-ubyte.gz"]),
           "y_train": read_idx(fs["train-labels-idx1-ubyte.gz"]).astype(np.int64),
           "x_test": read_idx(fs["t10k-images-idx3-ubyte.gz"]),
           "y_test": read_idx(fs["t10k-labels-idx1-ubyte.gz"]).astype(np.int64)}
    return out


def make_resnet(widths=WIDTHS, n_out: int = 10):
    """The small ResNet of this module (see the module docstring)."""
    import torch.nn as nn

    from suites.zoo.vision import BasicBlock

    w1, w2, w3 = (int(w) for w in widths)
    return nn.Sequential(
        nn.Conv2d(1, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        BasicBlock(w1, w1, 1), BasicBlock(w1, w2, 2), BasicBlock(w2, w3, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w3, n_out),
    )


def _augment(xb, gen):
    """Seeded random horizontal flip and shift by up to one pixel (zero fill)."""
    import torch

    n = xb.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
    dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
    if dy:
        xb[:, :, 0 if dy > 0 else -1, :] = 0
    if dx:
        xb[:, :, :, 0 if dx > 0 else -1] = 0
    return xb


def train(module, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int, lr: float = 4e-3,
          batch_size: int = 128, weight_decay: float = 5e-4, soft_targets: np.ndarray | None = None,
          temperature: float = 4.0, alpha: float = 0.0, label: str = "fmnist-resnet", threads: int = TRAIN_THREADS) -> dict:
    """AdamW + one-cycle schedule; optional distillation term (Hinton et al. 2015):
    loss = (1 - alpha) CE + alpha T^2 KL(softmax(t/T) || softmax(s/T)). Progress lines on stderr."""
    import torch
    import torch.nn.functional as F

    from suites.zoo.common import torch_threads

    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    st = None if soft_targets is None else torch.as_tensor(soft_targets, dtype=torch.float32)
    steps_per_epoch = (len(xt) + batch_size - 1) // batch_size
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    t0, last = time.perf_counter(), 0.0
    loss_value = float("nan")
    # channels-last (NHWC) activations and weights while training: 1.5-1.6x faster steps than NCHW on
    # a 2-core AVX2 EPYC (37-47 vs 59-72 ms at batch 128, measured 2026-12-02); the module goes back
    # to the default layout afterwards (the values are the same, only their order in memory differs)
    cl = torch.channels_last
    with torch_threads(threads):
        module.to(memory_format=cl)
        module.train()
        for ep in range(epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for k, i in enumerate(range(0, len(xt), batch_size)):
                idx = perm[i:i + batch_size]
                if len(idx) < 2:
                    continue
                logits = module(_augment(xt[idx], gen).contiguous(memory_format=cl))
                loss = F.cross_entropy(logits, yt[idx])
                if st is not None and alpha > 0:
                    kd = F.kl_div(F.log_softmax(logits / temperature, dim=1),
                                  F.softmax(st[idx] / temperature, dim=1), reduction="batchmean")
                    loss = (1 - alpha) * loss + alpha * temperature ** 2 * kd
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                loss_value = float(loss.detach())
                now = time.perf_counter() - t0
                if now - last >= 10:
                    last = now
                    done = (ep * steps_per_epoch + k + 1) / (epochs * steps_per_epoch)
                    print(f"  {label}: training {done:4.0%} (epoch {ep + 1}/{epochs}, loss {loss_value:.3f}, "
                          f"{now:.0f} s)", file=sys.stderr, flush=True)
        module.eval()
        module.to(memory_format=torch.contiguous_format)
    return {"epochs": epochs, "final_loss": loss_value, "lr": lr, "batch_size": batch_size,
            "weight_decay": weight_decay, "optimizer": "AdamW, one-cycle", "augmentation": "flip, 1-px shift",
            "train_s": round(time.perf_counter() - t0, 1), "threads": threads, "memory_format": "channels_last"}


def _scaled(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) / 255.0)[:, None, :, :]


def build_fmnist_resnet(seed: int = 0) -> Trained:
    data = load_fashion_mnist()
    x_train, y_train = _scaled(data["x_train"]), data["y_train"]
    x_eval, y_eval = _scaled(data["x_test"]), data["y_test"]
    seed_everything(seed)
    kwargs = {"widths": list(WIDTHS)}
    module = make_resnet(**kwargs)
    info = train(module, x_train, y_train, epochs=EPOCHS, seed=seed)
    info["n_train"], info["n_eval"] = int(len(x_train)), int(len(x_eval))
    info["finetune_max_steps"] = FINETUNE_MAX_STEPS  # the pruning recipes' fine-tune budget (suites.recipes)
    return Trained(module=module, factory="suites.zoo.fashion:make_resnet", factory_kwargs=kwargs,
                   task="classification", input_name="input", x_train=x_train, y_train=y_train,
                   x_calib=x_train[::60], x_eval=x_eval, y_eval=y_eval, info=info)
