"""An example bench backend in one file: ONNX's reference evaluator (pure numpy) as the "device".

Everything a backend needs is here: a ``Backend`` subclass that says whether it can run
(``availability``), what it runs on (``describe``) and with what (``runtime_version``), and
``prepare`` that returns a ``Session`` whose ``run`` really computes the outputs. The entry
point in ``pyproject.toml`` (group ``bench.backends``) is what makes ``bench`` find it::

    pip install ./examples/bench-plugin-example
    bench list backends                       # shows "example"
    bench run --suite smoke --backend example

Keep the module import-light: ``bench list backends`` imports it to ask ``availability()``,
so heavy libraries are imported inside ``prepare`` (which runs in the case's worker process).
"""
from __future__ import annotations

import importlib.util
import platform
from importlib import metadata

from backends.base import Availability, Backend, Session, SessionReport, UnsupportedCase


class ReferenceSession(Session):
    """One prepared model: ``run`` takes host numpy inputs and returns host numpy outputs."""

    def __init__(self, onnx_path: str):
        super().__init__()
        from onnx.reference import ReferenceEvaluator  # heavy import: in the worker only

        self._evaluator = ReferenceEvaluator(onnx_path)
        # recorded verbatim in every case: say what the runtime was set to do
        self.info = {"runtime": "onnx-reference", "onnx_version": metadata.version("onnx"), "threads": 1}

    def run(self, inputs):
        return self._evaluator.run(None, dict(inputs))

    def report(self) -> SessionReport:
        # once, after the measured window: what the runtime used (``timings``, ``memory`` and
        # ``estimates`` are for devices that measure or simulate more; see docs/backends.md)
        return SessionReport(info=self.info, threads={"threads": 1})

    def close(self):
        self._evaluator = None


class ExampleBackend(Backend):
    def __init__(self):
        super().__init__(name="example", runtimes=("onnx-reference",), default_runtime="onnx-reference")

    def availability(self) -> Availability:
        if importlib.util.find_spec("onnx") is None:
            return Availability(False, "onnx is not installed (pip install onnx)")
        return Availability(True, "ONNX reference evaluator (numpy) on the host CPU")

    def describe(self) -> dict:
        return {"name": f"onnx-reference on {platform.machine()}", "kind": "cpu"}

    def runtime_version(self, runtime: str) -> str | None:
        return metadata.version("onnx")

    def prepare(self, artifact, *, precision, batch, threads, runtime, options=None) -> Session:
        if precision != "fp32":
            # never run a different precision in its place: say why, the case is recorded "unsupported"
            raise UnsupportedCase(f"example backend: only fp32 graphs are evaluated here, not {precision}")
        return ReferenceSession(str(artifact.onnx_path))
