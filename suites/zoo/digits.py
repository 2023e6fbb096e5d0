"""Models trained on scikit-learn's bundled digits (real data shipped inside a package).

1,797 8x8 grey-level images of handwritten digits (UCI ML hand-written digits, as bundled
with scikit-learn), pixel values 0..16 scaled to 0..1. Split with a fixed seed: 60 % train,
20 % calibration (for static quantization), 20 % held-out evaluation.

* ``mlp-digits``: MLP 64-128-64-10 on the flattened image (input ``(64,)``).
* ``cnn-digits``: a small CNN on the image (input ``(1, 8, 8)``): two 3x3 convolutions
  (1->8->16 channels, padding 1) each with BatchNorm and ReLU, 2x2 max-pool, linear
  classifier 256->10. Its student (for distillation) halves the channels (4, 8).
"""
from __future__ import annotations

import numpy as np

from suites.zoo.common import Trained, seed_everything, torch_threads, train_classifier


def load_digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_calib, x_eval, y_calib, y_eval = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed,
                                                        stratify=y_rest)
    return x_train, y_train, x_calib, y_calib, x_eval, y_eval


def make_mlp(hidden=(128, 64), n_in: int = 64, n_out: int = 10):
    import torch.nn as nn

    layers = []
    prev = n_in
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    layers.append(nn.Linear(prev, n_out))
    return nn.Sequential(*layers)


def build_mlp(seed: int = 0) -> Trained:
    seed_everything(seed)
    x_train, y_train, x_calib, _, x_eval, y_eval = load_digits_split(seed)
    kwargs = {"hidden": [128, 64]}
    module = make_mlp(**kwargs)
    with torch_threads(1):
        info = train_classifier(module, x_train, y_train, epochs=60, lr=3e-3, seed=seed)
    return Trained(module=module, factory="suites.zoo.digits:make_mlp", factory_kwargs=kwargs,
                   task="classification", input_name="input", x_train=x_train, y_train=y_train,
                   x_calib=x_calib, x_eval=x_eval, y_eval=y_eval, info=info)


def make_cnn(channels=(8, 16), n_out: int = 10, image: int = 8):
    """conv3x3(1->c1)+BN+ReLU -> conv3x3(c1->c2)+BN+ReLU -> maxpool 2 -> Linear(c2*(image/2)^2 -> n_out)."""
    import torch.nn as nn

    c1, c2 = (int(c) for c in channels)
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (image // 2) ** 2, n_out),
    )


def build_cnn(seed: int = 0) -> Trained:
    seed_everything(seed)
    x_train, y_train, x_calib, _, x_eval, y_eval = load_digits_split(seed)
    x_train, x_calib, x_eval = (a.reshape(-1, 1, 8, 8) for a in (x_train, x_calib, x_eval))
    kwargs = {"channels": [8, 16]}
    module = make_cnn(**kwargs)
    with torch_threads(1):
        info = train_classifier(module, x_train, y_train, epochs=30, lr=3e-3, batch_size=64, seed=seed,
                                weight_decay=1e-4)
    return Trained(module=module, factory="suites.zoo.digits:make_cnn", factory_kwargs=kwargs,
                   task="classification", input_name="input", x_train=x_train, y_train=y_train,
                   x_calib=x_calib, x_eval=x_eval, y_eval=y_eval, info=info)
