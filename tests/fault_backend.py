"""A backend for tests: the cpu backend's onnxruntime session, plus injected faults.

Options (``bench run --option K=V``): ``fault`` = raise | segfault | abort | hang | oom | none;
``fault_min_batch`` = inject only in cases whose batch is at least this (so a suite's
single-stream case can pass while its offline cases fail).
"""
from __future__ import annotations

import os
import signal
import time

from backends.base import Availability
from backends.cpu import CPUBackend


class FaultBackend(CPUBackend):
    def __init__(self):
        super().__init__()
        self.name = "faulty"
        self.runtimes = ("onnxruntime",)

    def availability(self):
        return Availability(True, "test backend")

    def prepare(self, artifact, *, precision, batch, threads, runtime, options=None):
        options = dict(options or {})
        fault = options.pop("fault", "none")
        min_batch = int(options.pop("fault_min_batch", 1))
        if batch >= min_batch:
            if fault == "raise":
                raise RuntimeError("injected failure")
            if fault == "segfault":
                import ctypes

                ctypes.string_at(0)
            if fault == "abort":
                os.abort()
            if fault == "hang":
                time.sleep(10_000)
            if fault == "oom":
                os.kill(os.getpid(), signal.SIGKILL)
        return super().prepare(artifact, precision=precision, batch=batch, threads=threads, runtime=runtime,
                               options=options)


class UnavailableBackend(CPUBackend):
    def __init__(self):
        super().__init__()
        self.name = "nohw"

    def availability(self):
        return Availability(False, "no NoHW accelerator found (/dev/nohw0 missing)")
