from __future__ import annotations

import numpy as np
import pytest

from harness.measure import accuracy as acc
from harness.plan import suite as suitemod
from harness.errors import BenchError


def test_every_shipped_suite_validates():
    names = suitemod.available()
    assert {"baseline", "smoke"} <= set(names)
    for name in names:
        s = suitemod.load(name)
        assert s.models and s.sha256 and s.gate > 0


def test_plan_expands_scenarios_and_batches(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: t\nmodels: [mlp-digits]\nvariants: [fp32]\nscenarios: [single-stream, offline]\n"
                 "batch_sizes: [1, 8, 32]\naccuracy: {gate: 0.999}\n")
    s = suitemod.load(str(p))
    cases = suitemod.plan(s, backend="cpu", runtime="onnxruntime")
    assert [(c.scenario, c.batch) for c in cases] == [("single-stream", 1), ("offline", 1), ("offline", 8),
                                                      ("offline", 32)]
    assert s.gate == 0.999
    only = suitemod.plan(s, backend="cpu", runtime="torch", scenarios=["offline"], batches=[4])
    assert [(c.scenario, c.batch, c.runtime) for c in only] == [("offline", 4, "torch")]
    assert only[0].case_id == "mlp-digits/fp32/cpu-torch/offline/b4"


def test_include_and_include_cycles(tmp_path):
    (tmp_path / "a.yaml").write_text(f"name: a\nmodels: [mlp-digits]\ninclude: [{tmp_path / 'b.yaml'}]\n")
    (tmp_path / "b.yaml").write_text(f"name: b\nmodels: [mlp-digits]\ninclude: [{tmp_path / 'a.yaml'}]\n")
    with pytest.raises(BenchError, match="include cycle"):
        suitemod.load(str(tmp_path / "a.yaml"))


def test_top1_and_fidelity_by_hand():
    out = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([1, 0, 0, 0])
    assert acc.top1(out, labels) == 0.75
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    f = acc.fidelity(out, ref)
    assert f["top1_agreement"] == 0.75
    assert f["max_abs_diff"] == pytest.approx(0.4)
    assert f["cosine"] == pytest.approx((3 + (0.21 + 0.21) / (np.hypot(.3, .7) * np.hypot(.7, .3))) / 4)


def test_gate_is_relative_to_fp32():
    out = np.eye(10)[[0, 1, 2, 3, 4, 5, 6, 7, 8, 8]]
    labels = np.arange(10)
    r = acc.evaluate(out, labels=labels, reference=out, baseline_value=0.95, gate=0.99)
    assert r["value"] == 0.9 and r["delta"] == pytest.approx(-0.05) and r["passed"] is False
    r = acc.evaluate(out, labels=labels, reference=out, baseline_value=0.905, gate=0.99)
    assert r["passed"] is True  # 0.9 >= 0.99 * 0.905
    r = acc.evaluate(out, labels=None, reference=out, baseline_value=None, gate=0.99)
    assert r["metric"] == "top1_agreement" and r["value"] == 1.0 and r["baseline_value"] == 1.0 and r["passed"]


def test_run_eval_pads_the_last_batch_and_keeps_order():
    calls = []

    def run(feed):
        x = feed["x"]
        calls.append(len(x))
        return [x * 2]

    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    y = acc.run_eval(run, {"x": x}, batch=4)
    assert calls == [4, 4, 4]  # every call a full batch
    np.testing.assert_array_equal(y, x * 2)


def test_run_eval_copies_reused_output_buffers():
    buf = np.zeros((2, 1), dtype=np.float32)

    def run(feed):
        buf[:] = feed["x"]
        return [buf]  # like an IO-bound session: the same buffer every call

    x = np.arange(6, dtype=np.float32).reshape(6, 1)
    np.testing.assert_array_equal(acc.run_eval(run, {"x": x}, batch=2), x)


def test_decisive_agreement_ignores_near_ties_by_hand():
    # reference logits: rows 0-1 decisive (lead 2.0 and 1.0), rows 2-3 near-ties (lead 0.1, 0.0)
    r = np.array([[3.0, 1.0, 0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0, 0.0, 0.0],
                  [1.0, 0.9, 0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    assert acc.decisive_mask(r).tolist() == [True, True, False, False]
    y = r.copy()
    y[2, 1] = 2.0  # a near-tie flips: plain agreement drops, decisive agreement does not
    y[3, 1] = 2.0
    f = acc.fidelity(y, r)
    assert f["top1_agreement"] == 0.5 and f["top1_agreement_decisive"] == 1.0 and f["decisive_n"] == 2
    y[1] = [-1.0, 0.0, 0.0, 0.0, 0.0, 5.0]  # a decisive sample flips, and its class leaves the top 5
    f = acc.fidelity(y, r)
    assert f["top1_agreement_decisive"] == 0.5 and f["top5_agreement"] == 0.75
    # probability rows are compared through their logs (ln 0.6 - ln 0.2 = 1.10 >= 1; ln 0.45 - ln 0.4 < 1)
    p = np.array([[0.6, 0.2, 0.2], [0.45, 0.4, 0.15]])
    assert acc.decisive_mask(p).tolist() == [True, False]
    ev = acc.evaluate(y, labels=None, reference=r, baseline_value=None, gate=0.99, metric="top1_agreement_decisive")
    assert ev["baseline_value"] == 1.0 and ev["passed"] is False
    with pytest.raises(ValueError, match="undefined on this eval set"):
        acc.evaluate(r[2:], labels=None, reference=r[2:], baseline_value=None, gate=0.99,
                     metric="top1_agreement_decisive")
