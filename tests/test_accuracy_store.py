"""The accuracy store: a stored pass is reused only after its outputs are verified through the
session of the case; a system whose outputs changed always gets a full pass."""
from __future__ import annotations

import numpy as np
import pytest

from harness.run import accuracy_store as S


class FakeArtifact:
    def __init__(self, root, key="k1"):
        self.root, self.key, self.name, self.variant = root, key, "m", "fp32"

    def side_cache(self, kind):
        return self.root / kind / f"{self.name}-{self.variant}-{self.key}"


def payload(**kw):
    case = {"backend": "cpu", "runtime": "onnxruntime", "precision": "fp32", "scenario": "single-stream", "batch": 1}
    return {"case": case, "options": {}, **kw}


class Counting:
    """A session's run: y = x @ W (+ a batch-dependent term when asked), counting samples run."""

    def __init__(self, w, *, batch_dependent=False, offset=0.0):
        self.w, self.batch_dependent, self.offset, self.samples = w, batch_dependent, offset, 0

    def __call__(self, feeds):
        x = feeds["x"]
        self.samples += len(x)
        y = x @ self.w + self.offset
        if self.batch_dependent:  # like dynamic int8: the batch's range changes every output
            y = y + 0.1 * np.abs(x).max()
        return [y]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(400, 6)).astype(np.float32)}, rng.normal(size=(6, 5)).astype(np.float32)


def test_a_stored_pass_is_reused_after_verification(tmp_path, data):
    x, w = data
    art = FakeArtifact(tmp_path)
    run = Counting(w)
    out1, src1 = S.outputs(run, x, 1, payload=payload(), artifact=art, seed=1)
    assert src1["kind"] == "pass" and src1["stored"] and run.samples == 400
    run.samples = 0
    out2, src2 = S.outputs(run, x, 1, payload=payload(), artifact=art, seed=2)
    assert src2["kind"] == "verified" and src2["verified_samples"] == 20 == run.samples  # 5 % of 400
    np.testing.assert_array_equal(out1, out2)
    # another batch size verifies against the batch-1 pass, in whole chunks of its own batch
    run.samples = 0
    out3, src3 = S.outputs(run, x, 8, payload=payload(), artifact=art, seed=3)
    assert src3["kind"] == "verified" and src3["stored_batch"] == 1 and run.samples == 24  # 3 chunks of 8


def test_changed_outputs_are_never_masked_by_the_store(tmp_path, data):
    x, w = data
    art = FakeArtifact(tmp_path)
    S.outputs(Counting(w), x, 1, payload=payload(), artifact=art, seed=1)
    broken = Counting(w, offset=1.0)  # same key, but the system now computes something else
    out, src = S.outputs(broken, x, 1, payload=payload(), artifact=art, seed=2)
    assert src["kind"] == "pass" and "differ" in src["reason"] and broken.samples == 20 + 400
    np.testing.assert_allclose(out, x["x"] @ w + 1.0, rtol=1e-5, atol=1e-5)
    # and the new pass is what is stored now
    again = Counting(w, offset=1.0)
    assert S.outputs(again, x, 1, payload=payload(), artifact=art, seed=3)[1]["kind"] == "verified"


def test_batch_dependent_outputs_get_their_own_pass_per_batch(tmp_path, data):
    x, w = data
    art = FakeArtifact(tmp_path)
    run = Counting(w, batch_dependent=True)
    o1, _ = S.outputs(run, x, 1, payload=payload(), artifact=art, seed=1)
    o8, s8 = S.outputs(run, x, 8, payload=payload(), artifact=art, seed=2)
    assert s8["kind"] == "pass" and "batch 1" in s8["reason"]
    assert not np.allclose(o1, o8)
    # each batch size now verifies against its own entry
    assert S.outputs(run, x, 1, payload=payload(), artifact=art, seed=3)[1]["kind"] == "verified"
    v8, s = S.outputs(run, x, 8, payload=payload(), artifact=art, seed=4)
    assert s["kind"] == "verified" and s["stored_batch"] == 8
    np.testing.assert_array_equal(v8, o8)


def test_fresh_accuracy_and_damaged_entries_run_the_full_pass(tmp_path, data):
    x, w = data
    art = FakeArtifact(tmp_path)
    S.outputs(Counting(w), x, 1, payload=payload(), artifact=art, seed=1)
    run = Counting(w)
    _, src = S.outputs(run, x, 1, payload=payload(fresh_accuracy=True), artifact=art, seed=2)
    assert src["kind"] == "pass" and src["reason"] == "fresh accuracy requested" and run.samples == 400
    for f in art.side_cache("accuracy").rglob("b1.npz"):
        f.write_bytes(b"not an npz")
    run = Counting(w)
    _, src = S.outputs(run, x, 1, payload=payload(), artifact=art, seed=3)
    assert src["kind"] == "pass" and run.samples == 400


def test_the_system_key_holds_what_decides_the_outputs(tmp_path, monkeypatch):
    art = FakeArtifact(tmp_path)
    base = S.system_key(payload(), art)
    assert S.system_key(payload(), art) == base
    assert S.system_key(payload(options={"io_binding": "1"}), art) != base
    p = payload()
    p["case"]["precision"] = "fp16"
    assert S.system_key(p, art) != base
    assert S.system_key(payload(), FakeArtifact(tmp_path, key="k2")) != base
    # the scenario and batch are not in it (outputs are verified per case instead)
    p = payload()
    p["case"].update(scenario="offline", batch=8)
    assert S.system_key(p, art) == base
    from harness.run import env

    real = env.package_versions
    monkeypatch.setattr(env, "package_versions", lambda names: {**real(names), "onnxruntime": "0.0.1"})
    assert S.system_key(payload(), art) != base
    monkeypatch.setattr(env, "package_versions", real)
    real_cpu = env.cpu_info
    monkeypatch.setattr(env, "cpu_info", lambda: {**real_cpu(), "flags": ["avx512_vnni"]})
    assert S.system_key(payload(), art) != base


def test_verify_chunks_are_whole_distinct_chunks():
    idx = S.verify_chunks(1000, 8, seed=0)
    assert len(idx) == 7 and len(set(idx)) == 7 and max(idx) < 125  # ceil(50 / 8) of ceil(1000 / 8)
    assert S.verify_chunks(10, 4, seed=0) == [0, 1, 2]  # small sets: every chunk
    assert S.verify_chunks(1000, 8, seed=0) == idx and S.verify_chunks(1000, 8, seed=1) != idx
