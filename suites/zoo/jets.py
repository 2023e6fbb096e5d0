"""``jet-mlp``: the jet-tagging MLP of the FPGA literature, on a fixed synthetic data set.

The model is the reference network of hls4ml's jet-substructure benchmark (Duarte et al.,
"Fast inference of deep neural networks in FPGAs for particle physics", JINST 13 P07027,
2018): 16 inputs -> 64 -> 32 -> 32 -> 5 classes, ReLU after each hidden layer, logits out
(softmax is left to the consumer). Its student for distillation is 16-32-16-5.

The real data set (high-pT jets: gluon, light quark, W, Z, top; 16 substructure
features) is a download, so bench generates a stand-in with the same shape and the same
kind of difficulty, deterministically from a fixed seed (:func:`generate_jets`):

1. Each class ``c`` is a mixture of 3 Gaussian components in a 6-dimensional latent space
   ("jet kinematics"): component means ~ N(0, 0.9^2 I), mixing weights ~ Dirichlet(3,3,3),
   and per-component covariance ``A A^T`` with ``A = diag(U(0.4, 0.9)) + N(0, 0.6^2/6)``,
   so latent coordinates are correlated and differently so in every component.
2. The 16 observed features are a fixed nonlinear function of the latent point,
   ``x = 1.5 h + 0.5 (z W2) * h`` with ``h = tanh(z W1 + b1)`` (``W1, W2 ~ N(0, 1/6)``,
   ``b1 ~ N(0, 0.5^2)``; saturating and multiplicative terms, like ratios of
   substructure observables), plus detector-like noise ``0.3 e L^T`` with
   ``e ~ N(0, I)`` and ``L`` unit lower-triangular with N(0, 0.3^2) entries (features
   with correlated noise).
3. 3,000 jets per class (15,000), shuffled; split 60/20/20 into train / calibration /
   eval; features standardised with the training split's mean and std (as hls4ml does).

All draws come from one ``numpy.random.default_rng(20)`` stream, independent of the
model's seed: the data set is the same for every seed and machine. Classes overlap, and
not linearly: logistic regression reaches 0.54 and the 16-64-32-32-5 MLP 0.79 on the
eval split (docs/zoo.md), in the range of the real task (~0.75).
"""
from __future__ import annotations

import numpy as np

from suites.zoo.common import Trained, seed_everything, torch_threads, train_classifier

N_FEATURES = 16
N_CLASSES = 5
CLASS_NAMES = ("g", "q", "W", "Z", "t")  # labels only: the data are synthetic stand-ins
DATA_SEED = 20
N_PER_CLASS = 3000
LATENT = 6
COMPONENTS = 3
SPREAD = 0.9
NOISE = 0.3


def generate_jets(n_per_class: int = N_PER_CLASS, seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic jet data set: ``(x float32 (5n, 16), y int64 (5n,))``, shuffled, unscaled."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, SPREAD, (N_CLASSES, COMPONENTS, LATENT))
    chol = (rng.normal(0.0, 0.6 / np.sqrt(LATENT), (N_CLASSES, COMPONENTS, LATENT, LATENT))
            + np.eye(LATENT) * rng.uniform(0.4, 0.9, (N_CLASSES, COMPONENTS, 1, LATENT)))
    mix = rng.dirichlet(np.full(COMPONENTS, 3.0), size=N_CLASSES)
    w1 = rng.normal(0.0, 1.0 / np.sqrt(LATENT), (LATENT, N_FEATURES))
    b1 = rng.normal(0.0, 0.5, N_FEATURES)
    w2 = rng.normal(0.0, 1.0 / np.sqrt(LATENT), (LATENT, N_FEATURES))
    noise_mix = np.tril(rng.normal(0.0, 0.3, (N_FEATURES, N_FEATURES)), -1) + np.eye(N_FEATURES)
    xs, ys = [], []
    for c in range(N_CLASSES):
        k = rng.choice(COMPONENTS, size=n_per_class, p=mix[c])
        eps = rng.standard_normal((n_per_class, LATENT))
        z = means[c, k] + np.einsum("nij,nj->ni", chol[c, k], eps)
        h = np.tanh(z @ w1 + b1)
        x = 1.5 * h + 0.5 * (z @ w2) * h + NOISE * (rng.standard_normal((n_per_class, N_FEATURES)) @ noise_mix.T)
        xs.append(x)
        ys.append(np.full(n_per_class, c, dtype=np.int64))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm]


def load_jets_split():
    """``x_train, y_train, x_calib, y_calib, x_eval, y_eval`` (60/20/20), standardised on train."""
    x, y = generate_jets()
    n = len(y)
    a, b = int(0.6 * n), int(0.8 * n)
    mean = x[:a].mean(axis=0)
    std = x[:a].std(axis=0)
    x = ((x - mean) / std).astype(np.float32)
    return x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:]


def make_jet_mlp(hidden=(64, 32, 32), n_in: int = N_FEATURES, n_out: int = N_CLASSES):
    """hls4ml's jet-tagging MLP: Linear+ReLU per hidden layer, linear logits."""
    import torch.nn as nn

    layers = []
    prev = n_in
    for h in hidden:
        layers += [nn.Linear(prev, int(h)), nn.ReLU()]
        prev = int(h)
    layers.append(nn.Linear(prev, n_out))
    return nn.Sequential(*layers)


def build_jet_mlp(seed: int = 0) -> Trained:
    seed_everything(seed)
    x_train, y_train, x_calib, _, x_eval, y_eval = load_jets_split()
    kwargs = {"hidden": [64, 32, 32]}
    module = make_jet_mlp(**kwargs)
    with torch_threads(1):
        info = train_classifier(module, x_train, y_train, epochs=40, lr=2e-3, batch_size=128, seed=seed,
                                weight_decay=1e-5)
    info["data"] = {"generator": "suites.zoo.jets:generate_jets", "seed": DATA_SEED, "n": int(5 * N_PER_CLASS)}
    return Trained(module=module, factory="suites.zoo.jets:make_jet_mlp", factory_kwargs=kwargs,
                   task="classification", input_name="input", x_train=x_train, y_train=y_train,
                   x_calib=x_calib, x_eval=x_eval, y_eval=y_eval, info=info)
