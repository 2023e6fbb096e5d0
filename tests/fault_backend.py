"""A backend for tests: the cpu backend's onnxruntime session, plus injected faults.

Options (``bench run --option K=V``): ``fault`` = raise | segfault | abort | hang | oom | nan | none
(nan: the session's outputs are NaN and Inf);
``fault_min_batch`` = inject only in cases whose batch is at least this (so a suite's
single-stream case can pass while its offline cases fail).
"""
from __future__ import annotations

import os
import signal
import time

from backends.base import Availability, Option
from backends.cpu import OPTIONS as CPU_OPTIONS
from backends.cpu import CPUBackend


class FaultBackend(CPUBackend):
    def __init__(self):
        super().__init__()
        self.name = "faulty"
        self.runtimes = ("onnxruntime",)
        self.options = CPU_OPTIONS + (
            Option("fault", str, choices=("raise", "segfault", "abort", "hang", "oom", "nan", "none")),
            Option("fault_min_batch", int, minimum=1),
        )

    def availability(self):
        return Availability(True, "test backend")

    def prepare(self, artifact, *, precision, batch, threads, runtime, options=None):
        options = dict(options or {})
        fault = options.pop("fault", "none")
        # BENCH_TEST_FAULT (environment, not recorded in the run's command): a fault that a resumed
        # run (started without it) does not have, e.g. a hang to kill the run in
        fault = os.environ.get("BENCH_TEST_FAULT") or fault
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
        session = super().prepare(artifact, precision=precision, batch=batch, threads=threads, runtime=runtime,
                                  options=options)
        if fault == "nan" and batch >= min_batch:  # a model whose outputs are NaN (and Inf)
            import numpy as np

            real = session.run

            def run(inputs):
                outs = [np.array(o, dtype=np.float32, copy=True) for o in real(inputs)]
                for o in outs:
                    o.flat[0::2] = np.nan
                    o.flat[1::2] = np.inf
                return outs

            session.run = run
        return session


class UnavailableBackend(CPUBackend):
    def __init__(self):
        super().__init__()
        self.name = "nohw"

    def availability(self):
        return Availability(False, "no NoHW accelerator found (/dev/nohw0 missing)")
