"""The model zoo: registry, deterministic data, trained accuracy, and the artifact cache's hit/miss logic."""
from __future__ import annotations

import importlib
import textwrap

import numpy as np
import pytest

from suites import zoo


# --------------------------------------------------------------------------- registry


def test_registry_is_consistent():
    from harness.plan.plugins import load_object

    assert {"mlp-digits", "cnn-digits", "jet-mlp", "resnet18", "mobilenetv2", "minilm-l6"} <= set(zoo.MODELS)
    for name, spec in zoo.MODELS.items():
        assert spec.name == name
        assert spec.task in ("classification", "fidelity", "generation")
        assert (spec.task == "generation") == (spec.kind == "llm")
        module, _, fn = spec.builder.partition(":")
        assert callable(getattr(importlib.import_module(module), fn)), spec.builder
        for m in spec.modules:
            assert importlib.util.find_spec(m) is not None, m
        if spec.task in ("fidelity", "generation"):
            assert spec.student is None, f"{name}: no labels, nothing to distill against"
        else:
            assert spec.student, f"{name}: trained models name a student for the distill recipe"
        assert not zoo.is_user_model(name)
    # students build from the teacher's factory and are smaller
    from suites.zoo.digits import make_cnn
    from suites.zoo.jets import make_jet_mlp

    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(make_cnn(**zoo.get("cnn-digits").student)) < n(make_cnn()) / 2
    assert n(make_jet_mlp(**zoo.get("jet-mlp").student)) < n(make_jet_mlp()) / 2
    assert n(make_jet_mlp()) == 4389  # hls4ml's 16-64-32-32-5
    assert n(load_object("suites.zoo.digits:make_mlp")(**zoo.get("mlp-digits").student)) < 5000


def test_user_model_values():
    assert zoo.is_user_model("path/to/model.onnx") and zoo.is_user_model("M.ONNX")
    assert zoo.is_user_model("pkg.module:factory")
    assert not zoo.is_user_model("resnet18") and not zoo.is_user_model("onnx")


# --------------------------------------------------------------------------- data


def test_jet_data_is_fixed_and_hard_but_learnable():
    from sklearn.linear_model import LogisticRegression

    from suites.zoo.jets import generate_jets

    x, y = generate_jets(n_per_class=300)
    x2, y2 = generate_jets(n_per_class=300)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape == (1500, 16) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [300] * 5
    assert np.isfinite(x).all()
    # features are correlated, classes overlap and are not linearly separable
    corr = np.corrcoef(x.T)
    assert np.abs(corr[np.triu_indices(16, 1)]).max() > 0.3
    xs = (x - x.mean(0)) / x.std(0)
    acc = LogisticRegression(max_iter=500).fit(xs[:1000], y[:1000]).score(xs[1000:], y[1000:])
    assert 0.35 < acc < 0.75


def test_smooth_random_images_are_seeded_and_standardised():
    from suites.zoo.common import smooth_random_images

    a = smooth_random_images(3, (3, 32, 32), seed=5)
    b = smooth_random_images(3, (3, 32, 32), seed=5)
    c = smooth_random_images(3, (3, 32, 32), seed=6)
    assert a.shape == (3, 3, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.allclose(a.mean(axis=(2, 3)), 0, atol=1e-5) and np.allclose(a.std(axis=(2, 3)), 1, atol=1e-4)
    # smooth: neighbouring pixels are strongly correlated (white noise would give ~0)
    assert np.corrcoef(a[:, :, :, :-1].ravel(), a[:, :, :, 1:].ravel())[0, 1] > 0.5


def test_export_onnx_several_inputs(tmp_path):
    import onnxruntime as ort
    import torch

    from suites.zoo.common import as_feeds, export_onnx

    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a * b.to(a.dtype)

    ex = {"a": np.ones((2, 3), np.float32), "b": np.full((2, 3), 2, np.int64)}
    export_onnx(Two(), ex, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["a", "b"]
    assert sess.get_inputs()[0].shape[0] == "batch"
    assert sess.run(None, as_feeds(ex))[0].tolist() == [[2.0] * 3] * 2
    assert list(as_feeds(np.zeros(2), "x")) == ["x"]


# --------------------------------------------------------------------------- trained models


def test_cnn_digits_artifact(cached):
    import torch

    from suites.build import artifact_for

    art, _ = artifact_for("cnn-digits")
    meta = art.meta
    assert meta["opset"] == 17 and meta["task"] == "classification"
    assert meta["inputs"] == [{"name": "input", "shape": [None, 1, 8, 8], "dtype": "float32"}]
    assert meta["reference"]["metric"] == "top1" and meta["reference"]["value"] >= 0.95
    ev = art.eval_data()
    assert ev["x"]["input"].shape == (360, 1, 8, 8) and ev["labels"].shape == (360,)
    # the torch form reloads and agrees with the exported graph
    module = art.torch_module()
    with torch.no_grad():
        y = module(torch.from_numpy(ev["x"]["input"][:16])).numpy()
    assert np.allclose(y, ev["reference"][:16], atol=1e-4)


def test_jet_mlp_artifact(cached):
    from suites.build import artifact_for

    art, _ = artifact_for("jet-mlp")
    acc = art.meta["reference"]["value"]
    assert 0.70 <= acc <= 0.85, acc  # real structure, not trivially separable
    assert art.meta["inputs"][0]["shape"] == [None, 16]
    assert art.meta["reference"]["metric"] == "top1"
    assert art.eval_data()["reference"].shape == (3000, 5)


@pytest.mark.slow
@pytest.mark.parametrize("name,params", [("resnet18", 11_689_512), ("mobilenetv2", 3_504_872)])
def test_random_weight_vision_artifacts(cached, name, params):
    from suites.build import artifact_for

    art, _ = artifact_for(name)
    assert art.meta["task"] == "fidelity" and art.meta["reference"]["value"] is None
    assert art.meta["inputs"] == [{"name": "input", "shape": [None, 3, 224, 224], "dtype": "float32"}]
    ev = art.eval_data()
    assert ev["labels"] is None and ev["x"]["input"].shape == (64, 3, 224, 224)
    ref = ev["reference"]
    assert ref.shape == (64, 1000) and np.isfinite(ref).all()
    assert ref.std() > 1e-2  # BatchNorm statistics calibrated: outputs do not collapse
    assert len(set(ref.argmax(1).tolist())) > 1
    assert art.calibration_data()["input"].shape == (64, 3, 224, 224)
    assert sum(p.numel() for p in art.torch_module().parameters()) == params


# --------------------------------------------------------------------------- the cache


_TOY = '''
import numpy as np
from suites.zoo.common import Trained

CALLS = []

def make(n_in=4, n_out=3):
    import torch.nn as nn
    return nn.Sequential(nn.Linear(n_in, 8), nn.ReLU(), nn.Linear(8, n_out))

def build(seed=0):
    import torch
    CALLS.append(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    return Trained(module=make().eval(), factory=__name__ + ":make", factory_kwargs={}, task="classification",
                   input_name="input", x_train=x[:20], y_train=y[:20], x_calib=x[20:30], x_eval=x[30:],
                   y_eval=y[30:])
# VERSION
'''


@pytest.fixture
def toy_model(tmp_path, monkeypatch):
    """A tiny builder in a temporary module, registered in the zoo for one test."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "bench_toy_zoo.py").write_text(textwrap.dedent(_TOY))
    monkeypatch.syspath_prepend(str(mod_dir))
    importlib.invalidate_caches()
    spec = zoo.ModelSpec(name="toy", builder="bench_toy_zoo:build", task="classification", dataset="random",
                         description="toy", input_shape=(4,), student={"n_out": 3})
    monkeypatch.setitem(zoo.MODELS, "toy", spec)
    yield mod_dir / "bench_toy_zoo.py"
    import sys

    sys.modules.pop("bench_toy_zoo", None)


def test_cache_hit_and_rebuild_on_source_or_seed_change(toy_model, tmp_path, monkeypatch):
    import dataclasses

    from suites.build import artifact_for

    root = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE", str(root))
    a1, built1 = artifact_for("toy")
    assert built1 and a1.dir.parent == root / "toy" and a1.onnx_path.is_file()
    calls = importlib.import_module("bench_toy_zoo").CALLS
    assert calls == [0]

    a2, built2 = artifact_for("toy")  # same sources, seed, versions: a hit, nothing rebuilt
    assert not built2 and a2.key == a1.key and a2.dir == a1.dir and calls == [0]

    a3, built3 = artifact_for("toy", rebuild=True)  # forced
    assert built3 and a3.key == a1.key and calls == [0, 0]

    monkeypatch.setitem(zoo.MODELS, "toy", dataclasses.replace(zoo.MODELS["toy"], seed=1))
    a4, built4 = artifact_for("toy")  # another seed: another key
    assert built4 and a4.key != a1.key and calls[-1] == 1

    toy_model.write_text(toy_model.read_text().replace("# VERSION", "# VERSION 2"))
    a5, built5 = artifact_for("toy")  # the builder's source changed: another key
    assert built5 and a5.key not in (a1.key, a4.key)
    assert artifact_for("toy")[1] is False
    # both old and new artifacts stay valid on disk, each complete
    for a in (a1, a4, a5):
        assert (a.dir / "meta.json").is_file() and (a.dir / "eval.npz").is_file()
    assert not list((root / "toy").glob(".build-*"))  # no half-built leftovers


def test_cache_key_covers_extra_modules(toy_model, tmp_path, monkeypatch):
    """A spec's ``modules`` (e.g. the architecture module of vision models) are part of the key."""
    import dataclasses

    from suites.build import artifact_for

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    extra = toy_model.parent / "bench_toy_arch.py"
    extra.write_text("A = 1\n")
    monkeypatch.setitem(zoo.MODELS, "toy", dataclasses.replace(zoo.MODELS["toy"], modules=("bench_toy_arch",)))
    k1 = artifact_for("toy")[0].key
    extra.write_text("A = 2\n")
    a, built = artifact_for("toy")
    assert built and a.key != k1


def test_failed_build_leaves_nothing(toy_model, tmp_path, monkeypatch):
    from suites.build import artifact_for

    root = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE", str(root))
    toy_model.write_text(toy_model.read_text().replace("CALLS.append(seed)", "raise RuntimeError('boom')"))
    with pytest.raises(RuntimeError):
        artifact_for("toy")
    # no half-built entry: the model's directory is gone, or empty if other entries' builds made it
    assert not (root / "toy").exists() or not [p for p in (root / "toy").iterdir()]
