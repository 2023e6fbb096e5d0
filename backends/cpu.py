"""The ``cpu`` backend: onnxruntime (default), torch (eager) and tensorflow runtimes on the host CPU.

Thread settings are explicit and recorded in the session's ``info``:
- onnxruntime: ``intra_op_num_threads = threads``, ``inter_op_num_threads = 1``, sequential
  execution, all graph optimisations; by default the plain ``InferenceSession.run(None, feed)``
  a bare loop makes, so bench's figures match one; ``--option io_binding=1`` binds
  preallocated output buffers instead (on the CPU provider that saves only the per-call
  output allocation: ~20 % of a 10 µs MLP, nothing measurable on real models);
- torch: ``torch.set_num_threads(threads)`` and one inter-op thread, ``inference_mode``;
- tensorflow: the artifact's ONNX graph interpreted with TF ops and compiled by XLA
  (``tf.function(jit_compile=True)``), or the user's own SavedModel / ``.keras`` model
  (``--option tf_model=PATH``); ``tf.config.threading`` intra-op = ``threads``, inter-op = 1,
  set before any TF op runs (see :mod:`backends.tf_runtime`; the ``tpu`` backend runs the
  same code).
Outputs come back as host numpy arrays inside the timed region: nothing is lazy.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Mapping

from backends._common import TORCH_DTYPES
from backends.base import Availability, Backend, Option, Session, SessionReport, UnsupportedCase, dist_version

_DISTS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "torch": ("torch",),
          "tensorflow": ("tensorflow-cpu", "tensorflow")}




#: the onnxruntime thread settings a session reports (both are set explicitly in SessionOptions)
_ORT_THREADS = ("intra_op_num_threads", "inter_op_num_threads")


class _HostSession(Session):
    def energy_meter(self):
        from harness.measure.energy import RaplMeter

        return RaplMeter()


class OrtSession(_HostSession):
    def __init__(self, path: str, *, batch: int, threads: int, inputs: list[dict],
                 options: Mapping[str, Any]):
        super().__init__()
        import numpy as np
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", str(int(options.get("spinning", 1))))
        self._sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self._names = [o.name for o in self._sess.get_outputs()]
        self._binding = None
        want_binding = bool(int(options.get("io_binding", 0)))
        out_shapes = []
        for o in self._sess.get_outputs():
            shape = [batch if (i == 0 and not isinstance(d, int)) else d for i, d in enumerate(o.shape)]
            out_shapes.append(shape if all(isinstance(d, int) for d in shape) else None)
        if want_binding and all(s is not None for s in out_shapes):
            type_map = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                        "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
            try:
                self._out_bufs = [np.empty(s, dtype=type_map[o.type])
                                  for s, o in zip(out_shapes, self._sess.get_outputs())]
                self._binding = self._sess.io_binding()
                for name, buf in zip(self._names, self._out_bufs):
                    self._binding.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
            except KeyError:
                self._binding = None
        self._batch = batch
        # InferenceSession.run is thread-safe (onnxruntime's documented contract); with IO binding
        # the output buffers are shared, so one call at a time
        self.max_concurrency = 1 if self._binding is not None else 64
        self.info = {
            "runtime": "onnxruntime", "providers": self._sess.get_providers(),
            "intra_op_num_threads": threads, "inter_op_num_threads": 1, "execution_mode": "sequential",
            "graph_optimization_level": "all", "io_binding": self._binding is not None,
            "allow_spinning": int(options.get("spinning", 1)),
            "max_concurrency": self.max_concurrency,
        }

        if self._binding is not None:
            # Bound once here so the timed call does the least Python work: the harness always
            # feeds full batches of contiguous arrays (the eval pass pads its last batch).
            self._bind = self._binding.bind_cpu_input
            self._run_iob = self._sess.run_with_iobinding
            self._in_names = [i.name for i in self._sess.get_inputs()]
            self.run = self._run_bound1 if len(self._in_names) == 1 else self._run_bound
        else:
            # exactly the call a bare loop makes, ``sess.run(None, feed)``; partial is C-level,
            # so the timed call carries no Python frame of bench's
            import functools

            self.run = functools.partial(self._sess.run, None)

    def run(self, inputs):  # replaced per instance in __init__
        return self._sess.run(None, inputs)

    def report(self) -> SessionReport:
        return SessionReport(info=self.info, threads={k: self.info[k] for k in _ORT_THREADS})

    def _run_bound(self, inputs):
        bind = self._bind
        for name, arr in inputs.items():
            bind(name, arr)
        self._run_iob(self._binding)
        return self._out_bufs

    def _run_bound1(self, inputs):  # one input: no loop in the timed call
        name = self._in_names[0]
        self._bind(name, inputs[name])
        self._run_iob(self._binding)
        return self._out_bufs

    def close(self):
        self._binding = None
        self._sess = None


class TorchSession(_HostSession):
    DTYPES = TORCH_DTYPES

    def __init__(self, module, *, precision: str, threads: int, options: Mapping[str, Any]):
        super().__init__()
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set in this process: record what is in force
            pass
        dtype = getattr(torch, self.DTYPES[precision])
        self._torch = torch
        self._dtype = dtype
        self._module = module.to(dtype).eval()
        self.info = {"runtime": "torch", "mode": "eager", "dtype": str(dtype).replace("torch.", ""),
                     "num_threads": torch.get_num_threads(), "num_interop_threads": torch.get_num_interop_threads(),
                     "inference_mode": True}

    def run(self, inputs):
        torch = self._torch
        with torch.inference_mode():
            # float inputs take the session's dtype; integer ones (token ids, masks) stay as they are
            args = [torch.from_numpy(a).to(self._dtype) if a.dtype.kind == "f" else torch.from_numpy(a)
                    for a in inputs.values()]
            out = self._module(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().numpy() if o.dtype != torch.float32 else o.numpy() for o in outs]

    def report(self) -> SessionReport:
        return SessionReport(info=self.info, threads={k: self.info[k] for k in ("num_threads", "num_interop_threads")})


#: the --option settings of the cpu backend (checked before any case runs)
OPTIONS = (
    Option("spinning", bool, runtimes=("onnxruntime",),
           help="onnxruntime intra-op threads spin while idle (default 1)"),
    Option("io_binding", bool, runtimes=("onnxruntime",),
           help="onnxruntime IO binding instead of plain run (default 0)"),
    Option("jit_compile", bool, runtimes=("tensorflow",), help="XLA-compile the TF function (default 1)"),
    Option("steps_per_execution", int, minimum=1, maximum=100_000, runtimes=("tensorflow",),
           help="queries per TF function call (default 1)"),
    Option("tf_model", str, runtimes=("tensorflow",),
           help="path of a TF SavedModel to run instead of the converted one"),
)


class CPUBackend(Backend):
    #: onnxruntime's defaults here (io_binding off, spinning on; TF: XLA on, one step per call)
    option_defaults = {"io_binding": "0", "spinning": "1", "jit_compile": "1", "steps_per_execution": "1"}

    def __init__(self):
        super().__init__(name="cpu", runtimes=("onnxruntime", "torch", "tensorflow"), default_runtime="onnxruntime",
                         options=OPTIONS)
        #: the runtime of generative (LLM) cases when none is asked for
        self.generation_runtime = "torch"

    def availability(self) -> Availability:
        return Availability(True, "host CPU")

    def runtime_availability(self, runtime: str) -> Availability:
        if runtime not in self.runtimes:
            return Availability(False, f"unknown runtime '{runtime}' for cpu (choose from: {', '.join(self.runtimes)})")
        module = "onnxruntime" if runtime == "onnxruntime" else runtime
        if importlib.util.find_spec(module) is None:
            return Availability(False, f"{runtime} is not installed (pip install {_DISTS[runtime][0]})")
        return Availability(True, "")

    def describe(self) -> dict:
        from harness.run.env import cpu_info

        info = cpu_info()
        return {"name": info.get("model"), "kind": "cpu", **info}

    def device_name(self) -> str:
        from harness.run.env import cpu_info

        return cpu_info().get("model") or "cpu"

    def runtime_version(self, runtime: str) -> str | None:
        return dist_version(_DISTS.get(runtime, (runtime,)))

    def prepare(self, artifact, *, precision, batch, threads, runtime, options=None) -> Session:
        options = dict(options or {})
        if runtime == "onnxruntime":
            if precision == "bf16":
                raise UnsupportedCase("onnxruntime's CPU execution provider has no bf16 kernels for these ops")
            return OrtSession(str(artifact.onnx_path), batch=batch, threads=threads, inputs=artifact.inputs,
                              options=options)
        if runtime == "torch":
            if precision not in TorchSession.DTYPES:
                raise UnsupportedCase(f"torch eager on cpu: no {precision} path for this artifact "
                                      "(int8 runs through onnxruntime)")
            module = artifact.torch_module()
            if module is None:
                raise UnsupportedCase(f"artifact {artifact.name}/{artifact.variant} has no torch form")
            return TorchSession(module, precision=precision, threads=threads, options=options)
        if runtime == "tensorflow":
            from backends import tf_runtime  # imports TensorFlow inside the worker only

            return tf_runtime.prepare(artifact, precision=precision, batch=batch, threads=threads, options=options,
                                      device="/CPU:0")
        raise UnsupportedCase(f"unknown runtime '{runtime}' for cpu")

    def prepare_generation(self, artifact, *, precision, batch, threads, runtime, options=None):
        """LLM generation: torch (transformers model, KV cache, weight-only int8/int4 kernels)."""
        if runtime != "torch":
            raise UnsupportedCase(f"LLM generation on cpu/{runtime}: not built -- it needs a decoder exported with "
                                  "past key/values and a cache-feeding loop (or onnxruntime-genai); use --runtime torch")
        from backends import llm_torch

        return llm_torch.prepare(artifact, precision=precision, threads=threads, device="cpu", options=options)
