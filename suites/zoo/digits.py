"""Models trained on scikit-learn's bundled digits (real data shipped inside a package).

1,797 8x8 grey-level images of handwritten digits (UCI ML hand-written digits, as bundled
with scikit-learn), pixel values 0..16 scaled to 0..1. Split with a fixed seed: 60 % train,
20 % calibration (for static quantization), 20 % held-out evaluation.
"""
from __future__ import annotations

import numpy as np

from suites.zoo.common import Trained, seed_everything, train_classifier


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
    info = train_classifier(module, x_train, y_train, epochs=60, lr=3e-3, seed=seed)
    return Trained(module=module, factory="suites.zoo.digits:make_mlp", factory_kwargs=kwargs,
                   task="classification", input_name="input", x_train=x_train, y_train=y_train,
                   x_calib=x_calib, x_eval=x_eval, y_eval=y_eval, info=info)
