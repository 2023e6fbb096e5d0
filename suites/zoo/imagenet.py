"""ImageNet-shaped reference networks with random weights: speed and output fidelity only.

``resnet18`` and ``mobilenetv2`` are the architectures of :mod:`suites.zoo.vision` (written
out from their papers; no torchvision), 1000 classes, input ``3x224x224``, weights drawn
from a fixed seed. No pretrained weights ship in an installable package and nothing is
downloaded, so these models have **no labels and no accuracy**: their task is
``fidelity`` -- a variant is judged by how closely its outputs follow the fp32 model's
on the same inputs (top-1 agreement, cosine, max abs diff).

Inputs are synthetic, seeded "smooth random field" images
(:func:`suites.zoo.common.smooth_random_images`): 64 for evaluation (seed 1000 + model
seed) and 64 for calibration of static quantization (seed 2000 + model seed), float32,
roughly N(0, 1) per pixel like ImageNet-normalised photographs.

BatchNorm statistics: a freshly initialised network has BatchNorm layers that do nothing
(running mean 0, variance 1), and its activations drift through the depth: MobileNetV2's
logits collapse to ~1e-9 and ResNet-18 sends every image to the same class, which would
make any fidelity figure meaningless. So after the seeded initialisation the running
mean and variance of every BatchNorm layer are set from 64 further synthetic images
(seed 3000 + model seed; one pass in training mode with cumulative averaging, no
gradient step, no weight changes) -- data-dependent initialisation, as a trained network
has them. Activations then keep unit scale and the outputs differ from image to image.
"""
from __future__ import annotations

import numpy as np

from suites.zoo.common import Trained, smooth_random_images

N_EVAL = 64
N_CALIB = 64
IMAGE = (3, 224, 224)


N_BN = 64


def calibrate_batchnorm(module, x: np.ndarray, batch: int = 16) -> int:
    """Set every BatchNorm's running mean/var to the statistics of ``module``'s activations on ``x``.

    One pass in training mode with ``momentum=None`` (cumulative average over the batches);
    no parameter changes. Returns the number of BatchNorm layers touched; leaves ``module``
    in eval mode.
    """
    import torch
    from torch import nn

    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            module(torch.from_numpy(x[i:i + batch]))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    module.eval()
    return len(bns)


def _fidelity_bundle(module, factory: str, kwargs: dict, seed: int, info: dict) -> Trained:
    from suites.zoo.common import torch_threads

    with torch_threads(1):
        n_bn = calibrate_batchnorm(module, smooth_random_images(N_BN, IMAGE, seed=3000 + seed))
    x_eval = smooth_random_images(N_EVAL, IMAGE, seed=1000 + seed)
    x_calib = smooth_random_images(N_CALIB, IMAGE, seed=2000 + seed)
    info = {**info, "weights": f"random (seed {seed}); BatchNorm statistics from {N_BN} synthetic images "
                               f"(seed {3000 + seed}, {n_bn} layers)",
            "inputs": {"generator": "suites.zoo.common:smooth_random_images", "eval_seed": 1000 + seed,
                       "calib_seed": 2000 + seed, "n_eval": N_EVAL, "n_calib": N_CALIB}}
    return Trained(module=module.eval(), factory=factory, factory_kwargs=kwargs, task="fidelity",
                   input_name="input", x_train=np.zeros((0, *IMAGE), dtype=np.float32), y_train=None,
                   x_calib=x_calib, x_eval=x_eval, y_eval=None, info=info)


def build_resnet18(seed: int = 0) -> Trained:
    from suites.zoo import vision

    kwargs = {"num_classes": 1000, "seed": seed}
    module = vision.resnet18(**kwargs)
    return _fidelity_bundle(module, "suites.zoo.vision:resnet18", kwargs, seed, {"architecture": "ResNet-18"})


def build_mobilenetv2(seed: int = 0) -> Trained:
    from suites.zoo import vision

    kwargs = {"num_classes": 1000, "width_mult": 1.0, "seed": seed}
    module = vision.mobilenet_v2(**kwargs)
    return _fidelity_bundle(module, "suites.zoo.vision:mobilenet_v2", kwargs, seed,
                            {"architecture": "MobileNetV2 (width 1.0)"})


N_EVAL_PHOTOS = 30


def build_resnet50(seed: int = 0) -> Trained:
    """ResNet-50 with seeded weights, evaluated on real photographs (speed and fidelity only).

    Inputs: the centre and mirrored-centre views of the 15 photographs of
    :mod:`suites.zoo.photos` (30 images, ImageNet mean/std normalisation); calibration and
    BatchNorm statistics: their 45 calibration views. The weights are random, so the logits
    mean nothing: only the agreement of a variant with the fp32 model's outputs does.
    """
    from suites.zoo import photos, vision
    from suites.zoo.common import torch_threads

    kwargs = {"num_classes": 1000, "seed": seed}
    module = vision.resnet50(**kwargs)
    ev = photos.eval_set(224, normalize=photos.IMAGENET)
    keep = [i for i, n in enumerate(ev.names) if n.endswith(("#0", "#5"))]
    x_eval = ev.x[keep]
    x_calib = photos.calibration_set(224, normalize=photos.IMAGENET).x
    with torch_threads(2):
        n_bn = calibrate_batchnorm(module, x_calib)
    info = {"architecture": "ResNet-50 v1.5",
            "weights": f"random (seed {seed}); BatchNorm statistics from the {len(x_calib)} calibration views "
                       f"({n_bn} layers)",
            "inputs": {"photos": "suites.zoo.photos (centre + mirrored views)", "n_eval": int(len(x_eval)),
                       "n_calib": int(len(x_calib))}}
    return Trained(module=module.eval(), factory="suites.zoo.vision:resnet50", factory_kwargs=kwargs,
                   task="fidelity", input_name="input", x_train=np.zeros((0, *IMAGE), dtype=np.float32),
                   y_train=None, x_calib=x_calib, x_eval=x_eval, y_eval=None, info=info)
