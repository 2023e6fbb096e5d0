"""Standard vision architectures, defined here so bench needs no torchvision.

PyPI's torchvision wheels are built against CUDA torch and do not import beside the
CPU torch build this project pins, so the two reference networks of the suites are
written out here from their papers:

* :func:`resnet18` -- He, Zhang, Ren, Sun, "Deep Residual Learning for Image
  Recognition" (CVPR 2016), Table 1, 18-layer column: a 7x7/2 stem convolution, 3x3/2
  max-pool, four stages of two *basic blocks* (two 3x3 convolutions) with 64, 128,
  256, 512 channels, the first block of stages 2-4 striding by 2 with a 1x1 projection
  shortcut (option B), global average pooling and a fully connected classifier.
  BatchNorm follows every convolution ("v1.5" placement of the stride is irrelevant
  for basic blocks). 11,689,512 parameters with 1000 classes.
* :func:`mobilenet_v2` -- Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2:
  Inverted Residuals and Linear Bottlenecks" (CVPR 2018), Table 2: a 3x3/2 stem with
  32 channels, the inverted-residual bottlenecks (expansion t, output channels c,
  repeats n, first stride s) listed in :data:`MOBILENET_V2_SETTINGS`, a 1x1
  convolution to 1280 channels, global average pooling, dropout and a linear
  classifier. ReLU6 after every convolution except the linear (projection) ones,
  BatchNorm after every convolution, residual connection when stride is 1 and the
  input and output widths agree. 3,504,872 parameters with 1000 classes.

Weights are random (no pretrained weights are downloaded); every builder seeds its
own generator (``torch.manual_seed(seed)`` inside :func:`torch.random.fork_rng`, so
the caller's global RNG state is left untouched), hence the same seed gives the same
weights on every machine. Random weights give speed and output fidelity, never
accuracy.

:func:`load_external` builds ``torchvision:NAME`` / ``timm:NAME`` models when those
libraries are importable, and raises :class:`~harness.errors.BenchError` otherwise.
:func:`export_onnx` writes a model to a single self-contained ONNX file.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from harness.errors import BenchError

__all__ = [
    "BasicBlock",
    "BUILDERS",
    "InvertedResidual",
    "MOBILENET_V2_SETTINGS",
    "MobileNetV2",
    "ResNet",
    "build",
    "export_onnx",
    "load_external",
    "mobilenet_v2",
    "resnet18",
    "resnet50",
]

DEFAULT_SEED = 0


# --------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm; identity or 1x1-projection shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            # projection shortcut (the paper's option B): 1x1 convolution + BatchNorm
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with basic blocks (ResNet-18/34 family)."""

    def __init__(self, layers: tuple[int, int, int, int] = (2, 2, 2, 2), num_classes: int = 1000) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(64, layers[0], stride=1)
        self.layer2 = self._stage(128, layers[1], stride=2)
        self.layer3 = self._stage(256, layers[2], stride=2)
        self.layer4 = self._stage(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * BasicBlock.expansion, num_classes)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        mods = [BasicBlock(self.in_planes, planes, stride)]
        self.in_planes = planes * BasicBlock.expansion
        mods += [BasicBlock(self.in_planes, planes, 1) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride: "ResNet v1.5", as MLPerf's reference) -> 1x1 expand (x4),
    BatchNorm after each; identity or 1x1-projection shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBottleneck(ResNet):
    """ResNet with bottleneck blocks (ResNet-50/101/152): stages of 64, 128, 256, 512 planes x 4."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3), num_classes: int = 1000) -> None:
        nn.Module.__init__(self)
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._bottleneck_stage(64, layers[0], 1)
        self.layer2 = self._bottleneck_stage(128, layers[1], 2)
        self.layer3 = self._bottleneck_stage(256, layers[2], 2)
        self.layer4 = self._bottleneck_stage(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)

    def _bottleneck_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        mods = [Bottleneck(self.in_planes, planes, stride)]
        self.in_planes = planes * Bottleneck.expansion
        mods += [Bottleneck(self.in_planes, planes, 1) for _ in range(1, blocks)]
        return nn.Sequential(*mods)


def resnet50(num_classes: int = 1000, seed: int = DEFAULT_SEED) -> ResNet:
    """ResNet-50 v1.5 (He et al. 2016, Table 1, 50-layer column; stride on the 3x3), random weights
    from ``seed``: 25,557,032 parameters, about 4.1 GMACs per 224x224 image."""
    return _seeded(lambda: ResNetBottleneck((3, 4, 6, 3), num_classes=num_classes), seed)


def resnet18(num_classes: int = 1000, seed: int = DEFAULT_SEED) -> ResNet:
    """ResNet-18 (He et al. 2016): basic blocks [2, 2, 2, 2], random weights from ``seed``."""
    return _seeded(lambda: ResNet((2, 2, 2, 2), num_classes=num_classes), seed)


# --------------------------------------------------------------------------- MobileNetV2

#: (expansion t, output channels c, repeats n, stride of the first repeat s) -- Sandler et al. 2018, Table 2
MOBILENET_V2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never going down by more than 10 %.

    The rounding rule of the reference MobileNet implementations (TF-slim), so width
    multipliers other than 1.0 give the same widths as published checkpoints.
    """
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> nn.Sequential:
    mods: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        mods.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*mods)


class InvertedResidual(nn.Module):
    """1x1 expansion (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        mods: list[nn.Module] = []
        if expand_ratio != 1:
            mods.append(_conv_bn_act(cin, hidden, 1))
        mods.append(_conv_bn_act(hidden, hidden, 3, stride=stride, groups=hidden))
        mods.append(_conv_bn_act(hidden, cout, 1, act=False))  # linear bottleneck
        self.conv = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2,
                 settings: tuple[tuple[int, int, int, int], ...] = MOBILENET_V2_SETTINGS) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        cin = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [_conv_bn_act(3, cin, 3, stride=2)]
        for t, c, n, s in settings:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(_conv_bn_act(cin, self.last_channel, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, seed: int = DEFAULT_SEED) -> MobileNetV2:
    """MobileNetV2 (Sandler et al. 2018), random weights from ``seed``."""
    return _seeded(lambda: MobileNetV2(num_classes=num_classes, width_mult=width_mult), seed)


# --------------------------------------------------------------------------- init / registry


def _init_weights(model: nn.Module) -> None:
    """He (fan-out) normal for convolutions, BN to identity, N(0, 0.01) for linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _seeded(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
        _init_weights(model)
    return model.eval()


#: model name -> builder (keyword arguments: num_classes, seed, ...)
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
}


def build(name: str, **kwargs) -> nn.Module:
    """A model of this module by name, or ``torchvision:NAME`` / ``timm:NAME`` (see :func:`load_external`)."""
    if ":" in name:
        return load_external(name, **kwargs)
    if name not in BUILDERS:
        raise BenchError(f"unknown vision model '{name}' (choose from: {', '.join(BUILDERS)}, "
                         "or torchvision:NAME / timm:NAME)")
    return BUILDERS[name](**kwargs)


def load_external(spec: str, num_classes: int = 1000, seed: int = DEFAULT_SEED, **kwargs) -> nn.Module:
    """``torchvision:NAME`` or ``timm:NAME`` built with random weights (``weights=None``).

    Raises :class:`BenchError` when the library is not importable here, the spec is
    malformed, or the library does not know the name. Nothing is downloaded.
    """
    lib, sep, name = spec.partition(":")
    lib = lib.strip().lower()
    name = name.strip()
    if not sep or not name or lib not in ("torchvision", "timm"):
        raise BenchError(f"bad model spec '{spec}': expected torchvision:NAME or timm:NAME")
    try:
        if lib == "torchvision":
            import torchvision.models as tvm
        else:
            import timm
    except Exception as exc:  # ImportError, or a broken binary build (e.g. torchvision beside CPU torch)
        raise BenchError(f"'{spec}' needs {lib}, which does not import here "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         f"use one of: {', '.join(BUILDERS)}") from None

    def make() -> nn.Module:
        if lib == "torchvision":
            try:
                return tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
            except ValueError as exc:
                raise BenchError(f"torchvision has no model '{name}': {exc}") from None
        if not timm.is_model(name):
            raise BenchError(f"timm has no model '{name}'")
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
    return model.eval()


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...] = (1, 3, 224, 224),
                opset: int = 17, dynamic_batch: bool = True, input_name: str = "input",
                output_name: str = "logits") -> str:
    """Export ``model`` (in eval mode) to one self-contained ONNX file at ``path``.

    Uses the TorchScript exporter (``dynamo=False``): it works offline, is quick on two
    cores, and folds each BatchNorm into the preceding convolution in eval mode. The
    batch axis is exported as the symbolic dim ``batch`` when ``dynamic_batch``.
    Returns the path as a string.
    """
    import warnings

    model = model.eval()
    example = torch.zeros(*input_shape)
    dynamic_axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        with torch.no_grad():
            torch.onnx.export(model, (example,), str(path), dynamo=False, external_data=False,
                              opset_version=opset, input_names=[input_name], output_names=[output_name],
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
    return str(path)
