"""A fake CUDA that can fail: devices, streams, events on a device clock, and "device"
tensors that are not host arrays.

What it models (and so what a session bug trips over):
- devices 0..n-1, a current device per host thread (``set_device``), one default stream per device plus
  side streams; every stream op is logged per device (``FakeCuda.log[d]``);
- a device clock per device, advanced by each op enqueued on it (kernels: ``kernel_ns``;
  copies: bytes / ``copy_bytes_per_ns``); ``FakeEvent.record`` stamps the device clock of
  its stream, never the host clock, so ``elapsed_time`` is exactly the modelled work;
- completion: an event is complete only after a synchronize that covers it (device,
  stream, the event itself, or a blocking device-to-host copy enqueued after it);
  ``elapsed_time`` raises (as CUDA's ``cudaErrorNotReady``) on an incomplete or unrecorded
  event, and on events of different devices;
- placement: ``FakeCuda.mode()`` is a ``TorchFunctionMode`` under which ``.to(device)`` /
  ``torch.zeros(device=...)`` put a tensor on the current fake device; ops mixing a device
  tensor with a host tensor raise torch's "Expected all tensors to be on the same device";
  ``.numpy()`` of a device tensor raises as torch does; ``.cpu()`` is a blocking D2H copy.
  A session that forgets a copy, or moves data to the wrong device, fails here.
Limits: one process, no real concurrency between streams; CUDA-graph capture is logged,
replay re-runs nothing (tests of graphs check ordering and devices only).
"""
from __future__ import annotations

import contextlib
import threading
from types import SimpleNamespace

import torch
from torch.overrides import TorchFunctionMode

FAKE_DEVICE = torch.device("cpu", 1)  # what the session is given as its "cuda" device


class NotReady(RuntimeError):
    pass


class FakeStream:
    def __init__(self, cuda: "FakeCuda", device: int, name: str):
        self.cuda = cuda
        self.device = device
        self.name = name
        self.t = 0  # device time at which this stream's last enqueued op ends

    def enqueue(self, what: str, cost_ns: int) -> int:
        clock = self.cuda.clock
        self.t = max(self.t, clock[self.device]) + cost_ns
        clock[self.device] = self.t
        self.cuda.log[self.device].append((what, self.name))
        return self.t

    def synchronize(self):
        self.cuda.log[self.device].append(("stream_synchronize", self.name))
        self.cuda._complete(self.device, self.t)

    def wait_stream(self, other):
        self.cuda.log[self.device].append(("wait_stream", other.name))
        self.t = max(self.t, other.t)


class FakeCuda:
    """``torch.cuda`` as bench uses it, over ``n`` fake devices."""

    def __init__(self, n: int = 2, *, bf16=(True, True), kernel_ns: int = 5_000, copy_bytes_per_ns: float = 10.0):
        self.n = n
        self._tls = threading.local()  # the current device is per host thread, as in CUDA
        self.clock = [0] * n
        self.done = [0] * n  # device time up to which work is known complete on the host
        self.log: list[list] = [[] for _ in range(n)]
        self.calls: list[tuple] = []  # (what, current device) in host order
        self.bf16 = bf16
        self.kernel_ns = kernel_ns
        self.copy_bytes_per_ns = copy_bytes_per_ns
        self.default = [FakeStream(self, d, f"default:{d}") for d in range(n)]
        self._stream_ctx: list[FakeStream] = []
        self.resident: dict[int, tuple[int, object]] = {}  # storage ptr -> (device, storage kept alive)
        self.events_created = 0
        self.syncs = 0
        fake = self

        class Event(FakeEvent):
            def __init__(self, enable_timing=False):
                super().__init__(fake, enable_timing)

        self.Event = Event

        class Stream(FakeStream):
            def __init__(self, device=None, priority=0):
                d = fake.current if device is None else int(getattr(device, "index", device) or 0)
                fake.calls.append(("Stream", fake.current))
                super().__init__(fake, d, f"side:{d}:{len(fake.calls)}")

        self.Stream = Stream

        class CUDAGraph:
            def __init__(self):
                fake.calls.append(("CUDAGraph", fake.current))
                self.device = fake.current

            def replay(self):
                fake.current_stream().enqueue("graph_replay", fake.kernel_ns)

        self.CUDAGraph = CUDAGraph

    # -- device selection
    @property
    def current(self) -> int:
        return getattr(self._tls, "device", 0)

    @current.setter
    def current(self, d: int) -> None:
        self._tls.device = d

    def set_device(self, d):
        d = int(getattr(d, "index", d) or 0)
        if not 0 <= d < self.n:
            raise RuntimeError(f"CUDA error: invalid device ordinal {d}")
        self.calls.append(("set_device", d))
        self.current = d

    def current_device(self):
        return self.current

    def device_count(self):
        return self.n

    def current_stream(self, device=None):
        d = self.current if device is None else int(getattr(device, "index", device) or 0)
        for s in reversed(self._stream_ctx):
            if s.device == d:
                return s
        return self.default[d]

    @contextlib.contextmanager
    def stream(self, s):
        self._stream_ctx.append(s)
        try:
            yield
        finally:
            self._stream_ctx.pop()

    @contextlib.contextmanager
    def graph(self, g):
        self.calls.append(("capture", self.current))
        yield

    def synchronize(self, device=None):
        d = self.current if device is None else int(getattr(device, "index", device) or 0)
        self.syncs += 1
        self.log[d].append(("device_synchronize", None))
        self._complete(d, self.clock[d])

    def _complete(self, d, t):
        self.done[d] = max(self.done[d], t)

    # -- queries
    def is_bf16_supported(self):
        self.calls.append(("is_bf16_supported", self.current))
        return bool(self.bf16[self.current])

    def get_device_properties(self, device=None):
        d = device if isinstance(device, int) else self.current
        return SimpleNamespace(name=f"Fake GPU {d}", multi_processor_count=4, major=9, minor=0,
                               total_memory=1 << 30, uuid=f"fake-uuid-{d}")

    def reset_peak_memory_stats(self, device=None):
        pass

    def max_memory_allocated(self, device=None):
        return 123

    def max_memory_reserved(self, device=None):
        return 456

    # -- placement
    def mode(self):
        return _PlacementMode(self)

    def where(self, t) -> int | None:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return None
        try:
            return self.resident.get(t.untyped_storage().data_ptr(), (None,))[0]
        except Exception:  # noqa: BLE001
            return None

    def place(self, t, device: int):
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            self.resident[st.data_ptr()] = (device, st)
        return t

    def ops_on(self, d) -> list[str]:
        return [w for w, _ in self.log[d]]


class FakeEvent:
    def __init__(self, fake: FakeCuda, enable_timing=False):
        fake.events_created += 1
        fake.calls.append(("Event", fake.current))
        self.fake = fake
        self.timing = enable_timing
        self.device = None
        self.t = None
        self.recorded_at = None

    def record(self, stream=None):
        s = stream if stream is not None else self.fake.current_stream()
        if s.device != self.fake.current:
            raise RuntimeError("record(): the stream's device is not the current device")
        self.device = s.device
        self.t = s.enqueue("event_record", 0)

    def query(self):
        return self.t is not None and self.fake.done[self.device] >= self.t

    def synchronize(self):
        if self.t is None:
            return
        self.fake.log[self.device].append(("event_synchronize", None))
        self.fake._complete(self.device, self.t)

    def elapsed_time(self, other) -> float:
        if not (self.timing and other.timing):
            raise RuntimeError("Both events must be created with enable_timing=True")
        if self.t is None or other.t is None:
            raise RuntimeError("CUDA error: an event was not recorded")
        if self.device != other.device:
            raise RuntimeError(f"events on different devices ({self.device}, {other.device})")
        if not (self.query() and other.query()):
            raise NotReady("CUDA error: device not ready (elapsed_time before the events completed)")
        self.fake.log[self.device].append(("elapsed_time", None))
        return (other.t - self.t) / 1e6  # milliseconds, as torch.cuda.Event


class _PlacementMode(TorchFunctionMode):
    def __init__(self, fake: FakeCuda):
        super().__init__()
        self.fake = fake

    @staticmethod
    def _is_fake_dev(d) -> bool:
        return d is not None and torch.device(d) == FAKE_DEVICE if isinstance(d, (str, torch.device)) else False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        fake = self.fake
        name = getattr(func, "__name__", str(func))
        if name == "to" and args and isinstance(args[0], torch.Tensor):
            dev = kwargs.get("device")
            rest = []
            for a in args[1:]:
                if isinstance(a, (str, torch.device)) and dev is None:
                    dev = a
                else:
                    rest.append(a)
            src = fake.where(args[0])
            if self._is_fake_dev(dev):
                kwargs.pop("device", None)
                out = args[0].to(*rest, **kwargs).clone()
                d = fake.current if src is None else src
                if src is None:  # host -> device copy
                    fake.current_stream().enqueue("h2d", int(out.nbytes / fake.copy_bytes_per_ns))
                else:
                    fake.current_stream(src).enqueue("kernel:to", fake.kernel_ns)
                return fake.place(out, d)
            out = func(*args, **kwargs)
            if src is not None and out is not args[0]:
                fake.current_stream(src).enqueue("kernel:to", fake.kernel_ns)
                fake.place(out, src)
            return out
        if name in ("zeros", "empty", "ones", "full") and self._is_fake_dev(kwargs.get("device")):
            kwargs.pop("device")
            return fake.place(func(*args, **kwargs), fake.current)
        if name == "cpu" and args:
            src = fake.where(args[0])
            out = func(*args, **kwargs)
            if src is None:
                return out
            s = fake.current_stream(src)
            t = s.enqueue("d2h", int(out.nbytes / fake.copy_bytes_per_ns))
            fake._complete(src, t)  # a blocking copy: the host waits for it (and what came before)
            return out.clone()
        if name == "copy_" and len(args) >= 2:
            dst, src = fake.where(args[0]), fake.where(args[1])
            out = func(*args, **kwargs)
            if dst is not None and src is None:
                fake.current_stream(dst).enqueue("h2d", int(args[1].nbytes / fake.copy_bytes_per_ns))
            elif dst is None and src is not None:
                t = fake.current_stream(src).enqueue("d2h", int(args[1].nbytes / fake.copy_bytes_per_ns))
                fake._complete(src, t)
            elif dst is not None:
                fake.current_stream(dst).enqueue("kernel:copy_", fake.kernel_ns)
            return out
        if name.startswith("_") or name in _METADATA:
            return func(*args, **kwargs)
        if name == "numpy" and args and fake.where(args[0]) is not None:
            raise TypeError(f"can't convert cuda:{fake.where(args[0])} device type tensor to numpy. Use "
                            "Tensor.cpu() to copy the tensor to host memory first.")
        tensors = [a for a in _flat(args, kwargs) if isinstance(a, torch.Tensor) and a.dim() > 0]
        where = {fake.where(t) for t in tensors}
        if len(where) > 1:
            spelled = sorted("cpu" if w is None else f"cuda:{w}" for w in where)
            raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                               f"{spelled[0]} and {spelled[1]}!")
        out = func(*args, **kwargs)
        d = where.pop() if where else None
        if d is not None:
            fake.current_stream(d).enqueue(f"kernel:{name}", fake.kernel_ns)
            for o in _flat((out,), {}):
                if isinstance(o, torch.Tensor):
                    fake.place(o, d)
        return out


_METADATA = {"size", "dim", "is_floating_point", "dtype", "shape", "numel", "element_size", "data_ptr", "nbytes",
             "untyped_storage", "requires_grad_", "eval", "is_contiguous", "device", "stride", "storage_offset"}


def _flat(args, kwargs):
    stack = list(args) + list(kwargs.values())
    while stack:
        a = stack.pop()
        if isinstance(a, (list, tuple)):
            stack.extend(a)
        else:
            yield a
