from __future__ import annotations

import numpy as np
import pytest

from backends.base import UnsupportedCase
from backends.cpu import CPUBackend
from harness.run.case import input_pool


@pytest.fixture(scope="module")
def artifact(bench_cache):
    import os

    old = os.environ.get("BENCH_CACHE")
    os.environ["BENCH_CACHE"] = str(bench_cache)
    try:
        from suites.build import artifact_for

        return artifact_for("mlp-digits")[0]
    finally:
        if old is None:
            os.environ.pop("BENCH_CACHE", None)
        else:
            os.environ["BENCH_CACHE"] = old


@pytest.mark.parametrize("batch", [1, 8])
def test_io_binding_and_plain_run_agree(artifact, batch):
    pool = input_pool(artifact.eval_data()["x"], artifact.inputs, batch)
    be = CPUBackend()
    plain = be.prepare(artifact, precision="fp32", batch=batch, threads=1, runtime="onnxruntime")
    bound = be.prepare(artifact, precision="fp32", batch=batch, threads=1, runtime="onnxruntime",
                       options={"io_binding": 1})
    assert plain.info["io_binding"] is False and bound.info["io_binding"] is True
    assert plain.info["intra_op_num_threads"] == 1 and plain.info["inter_op_num_threads"] == 1
    for feed in pool[:5]:
        a = plain.run(feed)[0]
        b = np.array(bound.run(feed)[0], copy=True)
        assert a.shape == (batch, 10)
        np.testing.assert_allclose(a, b, rtol=0, atol=0)


def test_no_silent_precision_fallback(artifact):
    be = CPUBackend()
    with pytest.raises(UnsupportedCase, match="bf16"):
        be.prepare(artifact, precision="bf16", batch=1, threads=1, runtime="onnxruntime")
    with pytest.raises(UnsupportedCase, match="int8"):
        be.prepare(artifact, precision="int8", batch=1, threads=1, runtime="torch")
