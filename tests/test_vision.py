"""Tests for suites.zoo.vision: the published structure of ResNet-18 and MobileNetV2, and the
complexity counter on their ONNX exports against the published figures.

Published references (torchvision model tables; He et al. 2016; Sandler et al. 2018):
  ResNet-18     11,689,512 params, 1.81 "GFLOPS" (= 1.814 G multiply-accumulates)
  MobileNetV2    3,504,872 params, 0.30 "GFLOPS" (= 0.301 G multiply-accumulates)
torchvision's parameter counts are of the torch modules, BatchNorm weight and bias included.
The ONNX export folds every BatchNorm into the convolution before it: the BN's 2*C
parameters (gamma, beta) become the convolution's C bias values, so the ONNX graph holds
exactly sum(C over BNs) parameters fewer -- that is the figure compared exactly here, and
the published figure is met within 1 %.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from harness.plan.complexity import count  # noqa: E402
from harness.errors import BenchError  # noqa: E402
from suites.zoo import vision  # noqa: E402

PUBLISHED = {
    # name: (torch params, GMACs as published, exact MACs of the convention at 224x224)
    "resnet18": (11_689_512, 1.814, 1_814_073_344),
    "mobilenet_v2": (3_504_872, 0.30, 300_774_272),
}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def bn_channels(model) -> int:
    return sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (torch module, path of its ONNX export at 1x3x224x224, counter result); built once."""
    out = {}
    d = tmp_path_factory.mktemp("vision")
    for name in PUBLISHED:
        model = vision.build(name)
        path = vision.export_onnx(model, d / f"{name}.onnx", input_shape=(1, 3, 224, 224))
        out[name] = (model, path, count(path))
    return out


# --------------------------------------------------------------------------- the torch modules


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_torch_param_count_matches_published(name):
    assert n_params(vision.build(name)) == PUBLISHED[name][0]


def test_resnet18_structure():
    m = vision.resnet18()
    stages = [m.layer1, m.layer2, m.layer3, m.layer4]
    assert [len(s) for s in stages] == [2, 2, 2, 2]
    assert [s[0].conv1.out_channels for s in stages] == [64, 128, 256, 512]
    assert [s[0].conv1.stride for s in stages] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    # projection shortcuts exactly where the shape changes
    assert [s[0].downsample is not None for s in stages] == [False, True, True, True]
    assert m.conv1.kernel_size == (7, 7) and m.conv1.stride == (2, 2)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert len(convs) == 20 and all(c.bias is None for c in convs)  # 17 + 3 projection convs; BN carries the bias
    assert m.fc.in_features == 512 and m.fc.out_features == 1000


def test_mobilenet_v2_structure():
    m = vision.mobilenet_v2()
    blocks = [b for b in m.features if isinstance(b, vision.InvertedResidual)]
    assert len(blocks) == sum(n for _, _, n, _ in vision.MOBILENET_V2_SETTINGS) == 17
    expected = []
    for t, c, n, s in vision.MOBILENET_V2_SETTINGS:
        expected += [(c, s if i == 0 else 1, t) for i in range(n)]
    got = []
    for b in blocks:
        convs = [x for x in b.modules() if isinstance(x, torch.nn.Conv2d)]
        dw = [x for x in convs if x.groups > 1]
        assert len(dw) == 1 and dw[0].groups == dw[0].in_channels == dw[0].out_channels  # depthwise
        t = dw[0].in_channels // convs[0].in_channels
        got.append((convs[-1].out_channels, dw[0].stride[0], t))
        assert not isinstance(b.conv[-1][-1], torch.nn.ReLU6)  # linear bottleneck
    assert got == expected
    assert sum(b.use_res_connect for b in blocks) == 10  # repeats after the first of each group
    assert m.last_channel == 1280 and m.classifier[-1].in_features == 1280
    assert any(isinstance(x, torch.nn.ReLU6) for x in m.modules())


def test_mobilenet_v2_width_multiplier():
    assert vision._make_divisible(32 * 0.5) == 16
    assert vision._make_divisible(1280 * 1.4) == 1792
    m = vision.mobilenet_v2(width_mult=1.4, num_classes=10)
    assert m.last_channel == 1792 and m.classifier[-1].out_features == 10
    assert n_params(vision.mobilenet_v2(width_mult=0.5)) < n_params(vision.mobilenet_v2())


def test_forward_shapes_and_num_classes():
    x = torch.zeros(2, 3, 64, 64)
    with torch.no_grad():
        assert vision.resnet18(num_classes=7)(x).shape == (2, 7)
        assert vision.mobilenet_v2(num_classes=5)(x).shape == (2, 5)


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = vision.resnet18(seed=0), vision.resnet18(seed=0), vision.resnet18(seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert not a.training  # built in eval mode


def test_build_and_external_specs(monkeypatch):
    with pytest.raises(BenchError, match="unknown vision model"):
        vision.build("vgg99")
    with pytest.raises(BenchError, match="torchvision:NAME or timm:NAME"):
        vision.load_external("keras:resnet50")
    with pytest.raises(BenchError, match="torchvision:NAME"):
        vision.load_external("torchvision:")
    # pretend the libraries are absent (None in sys.modules makes the import fail)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(BenchError, match="needs torchvision"):
        vision.build("torchvision:resnet18")
    with pytest.raises(BenchError, match="needs timm"):
        vision.load_external("timm:resnet18")


# --------------------------------------------------------------------------- ONNX export + counter


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_counter_matches_published_figures(exported, name):
    model, path, r = exported[name]
    torch_params, published_gmacs, exact_macs = PUBLISHED[name]
    # MACs: the published figure within 1 %, and the exact count of the convention
    assert r["macs"] == exact_macs
    assert r["macs"] == pytest.approx(published_gmacs * 1e9, rel=0.01)
    assert r["nonzero_macs"] == r["macs"]  # random dense weights: no exact zeros
    # params: BN folded at export -> exactly sum(BN channels) fewer than the torch module, within 1 % of it
    assert r["params"] == torch_params - bn_channels(model)
    assert r["params"] == pytest.approx(torch_params, rel=0.01)
    assert r["weight_sparsity"] == 0.0
    assert r["weight_bits"]["bits"] == 32 and r["activation_bits"]["bits"] == 32
    assert r["opset"] >= 17
    assert r["input_shapes"] == {"input": [1, 3, 224, 224]}  # symbolic batch fixed to 1
    import os

    assert r["model_bytes"] == os.path.getsize(path)
    assert not os.path.exists(str(path) + ".data")  # weights inline, no side file
    assert r["uncounted_ops"] == {}


def test_per_op_breakdown_resnet18(exported):
    _, _, r = exported["resnet18"]
    convs = [o for o in r["per_op"] if o["op_type"] == "Conv"]
    gemms = [o for o in r["per_op"] if o["op_type"] == "Gemm"]
    assert len(convs) == 20 and len(gemms) == 1
    # stem: 7x7x3 per output, 64 x 112 x 112 outputs
    assert convs[0]["macs"] == 64 * 112 * 112 * 7 * 7 * 3 and convs[0]["output_shape"] == [1, 64, 112, 112]
    assert gemms[0]["macs"] == 512 * 1000 and gemms[0]["params"] == 512 * 1000 + 1000
    assert sum(o["macs"] for o in r["per_op"]) == r["macs"]


def test_batch_scales_macs_linearly(exported):
    _, path, r = exported["mobilenet_v2"]
    r4 = count(path, {"input": (4, 3, 224, 224)})
    assert r4["macs"] == 4 * r["macs"] and r4["params"] == r["params"]


def test_onnx_export_matches_torch(exported):
    ort = pytest.importorskip("onnxruntime")
    model, path, _ = exported["mobilenet_v2"]
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_pruned_resnet_nonzero_macs(tmp_path):
    """Zero half the output channels of the stem: exactly their MACs leave the non-zero count."""
    model = vision.resnet18()
    with torch.no_grad():
        model.conv1.weight[::2] = 0.0  # BN folding scales each output channel, so zeros stay zeros
    path = vision.export_onnx(model, tmp_path / "pruned.onnx")
    r = count(path)
    stem = 32 * 112 * 112 * 7 * 7 * 3
    assert r["macs"] == PUBLISHED["resnet18"][2]
    assert r["nonzero_macs"] == r["macs"] - stem
    assert r["zero_weight_elements"] == 32 * 7 * 7 * 3


def test_cli_vision_model_name(capsys):
    import json

    from harness.cli import main

    rc = main(["complexity", "mobilenet_v2", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    data = json.loads(out)
    assert data["macs"] == PUBLISHED["mobilenet_v2"][2]
    assert data["model"].startswith("mobilenet_v2")


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_macs(tmp_path):
    """The torch.export-based exporter (slow: ~20 s) yields the same MAC count."""
    import warnings

    model = vision.resnet18()
    path = tmp_path / "dyn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=True, external_data=False,
                          opset_version=18)
    r = count(path)
    assert r["macs"] == PUBLISHED["resnet18"][2]
    assert r["params"] == pytest.approx(PUBLISHED["resnet18"][0], rel=0.01)
