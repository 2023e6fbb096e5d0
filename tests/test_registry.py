"""harness.plan.models: the core's one door to models and recipes (the bench.models entry point)."""
from __future__ import annotations

import types

import pytest

from harness.errors import BenchError
from harness.plan import models
from harness.plan import suite as suitemod


@pytest.fixture
def fresh_registry():
    models.registry.cache_clear()
    yield
    models.registry.cache_clear()


def test_in_tree_registry(fresh_registry):
    reg = models.registry()
    assert reg.__name__ == "suites.registry"
    assert "mlp-digits" in models.zoo_models() and "int8-static" in models.recipes()
    assert models.variant_precision("fp16") == "fp16"
    assert models.is_user_model("x.onnx") and not models.is_user_model("mlp-digits")
    with pytest.raises(BenchError, match="unknown variant 'nope'"):
        models.get_recipe("nope")


def test_without_entry_point_falls_back_to_importlib(fresh_registry, monkeypatch):
    monkeypatch.setattr(models.metadata, "entry_points", lambda group: [])
    assert models.registry().__name__ == "suites.registry"


def test_another_registry_is_used_by_the_planner(fresh_registry, monkeypatch, tmp_path):
    """A registry from another package (here a module object) feeds the planner and suite checks."""
    spec = types.SimpleNamespace(name="toy", task="classification", dataset="d", description="", input_shape=(4,))
    recipe = types.SimpleNamespace(name="fp32", family="baseline", precision="fp32", description="")
    fake = types.ModuleType("fake_registry")
    fake.models = lambda: {"toy": spec}
    fake.recipes = lambda: {"fp32": recipe}
    fake.suites_dir = lambda: tmp_path
    (tmp_path / "schema").mkdir()
    from harness.plan.models import registry as real

    models.registry.cache_clear()
    (tmp_path / "schema" / "suite.schema.json").write_text((real().suites_dir() / "schema" / "suite.schema.json")
                                                           .read_text())
    (tmp_path / "toys.yaml").write_text("name: toys\nmodels: [toy]\nscenarios: [single-stream]\n")
    ep = types.SimpleNamespace(name="other", value="fake_registry")
    monkeypatch.setitem(__import__("sys").modules, "fake_registry", fake)
    monkeypatch.setattr(models.metadata, "entry_points", lambda group: [ep] if group == models.GROUP else [])
    models.registry.cache_clear()
    suitemod._schema.cache_clear()
    try:
        s = suitemod.load("toys")
        cases = suitemod.plan(s, backend="cpu", runtime="onnxruntime")
        assert [c.case_id for c in cases] == ["toy/fp32/cpu-onnxruntime/single-stream/b1"]
    finally:
        suitemod._schema.cache_clear()
