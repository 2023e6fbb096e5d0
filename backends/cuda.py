"""The ``cuda`` backend: NVIDIA GPUs through torch (default) or onnxruntime.

Runtimes
--------
* ``torch`` (default): the artifact's torch module on ``cuda:N``, eager by default;
  ``--option compile=1`` wraps it in ``torch.compile`` (``compile_mode=...``), warm-up
  covers the compile. fp16/bf16: the module and inputs cast to the dtype (``amp=cast``,
  default) or fp32 weights under ``torch.autocast`` (``amp=autocast``); which one is
  recorded. int8: torchao's int8 weight-only quantization when torchao is installed,
  applied to the fp32 weights at prepare time (recorded as such); otherwise the case is
  ``unsupported`` with the reason. ``cudnn.benchmark`` on (autotuning happens in warm-up),
  TF32 off unless ``tf32=1``. ``cuda_graphs=1`` captures one CUDA graph for the batch
  (small batches: it removes launch overhead) after warm-up on a side stream.
* ``onnxruntime``: CUDAExecutionProvider with IO binding (device-resident input and output
  buffers, so host<->device copies are outside ``Run`` and timed apart); the TensorRT EP
  first when it is installed (``tensorrt=auto|1|0``), engines cached next to the bench
  cache. int8: TensorRT runs QDQ graphs as int8 engines; the CUDA EP has no int8 kernels
  for QDQ (it would dequantize and run fp32), so a QDQ graph without TensorRT is
  ``unsupported`` unless ``allow_qdq_emulation=1``; integer-op graphs (``MatMulInteger``...)
  run on the GPU or not at all. Every ORT-CUDA session profiles one run at prepare and
  records which nodes ran on which execution provider; a session with nodes on the CPU
  is refused (``unsupported``, the nodes named) unless ``--option allow_cpu_fallback=1``,
  and then the CPU nodes are recorded. IO-binding input buffers take the artifact's
  resolved input shapes (only the batch dimension is the batch). A CUDA EP that fails to
  load (missing CUDA/cuDNN libraries) is an error, never a silent CPU run.

Timing
------
The harness times each call end to end (``perf_counter`` around ``run``): ``run`` returns
host numpy outputs, and the blocking device-to-host copy is the call's completion, so no
``synchronize()`` follows it (the session does not override ``Session.synchronize``). That
host figure is the case's ``latency_ns`` (end to end). Device time comes from CUDA events
on the session's stream: a ring of event sets created once at prepare and reused (never
created per call), recorded around the host-to-device copy, the compute and the
device-to-host copy; a slot's elapsed times are read (``synchronize`` then
``elapsed_time``) when the slot comes round again or when the window closes.
``session.timings()`` reports those per-part distributions (``device_ns``: h2d, compute,
d2h, total) next to the instrument's own cost, measured at prepare on a null kernel
(``timing_overhead``: host time of a null kernel with and without the four event records).
onnxruntime has no event API, so its three parts are timed on the host around synchronous
calls. Also reported: device memory (torch allocator peak, NVML process/device use) and
energy (NVML's total-energy counter over the measured window, else power sampled every
100 ms; ``null`` with the reason when neither works or a reading fails -- the latency is
kept). The harness wraps its measured window in the session's meter
(``session.energy_meter()``), which marks the window for the per-part timings too; without
NVML they cover every call after the first, and say so.

Device selection: ``--option device=N`` (a CUDA index, validated in the parent) is made
current with ``torch.cuda.set_device`` before any event, stream, graph or capability
query; onnxruntime gets ``device_id``; NVML is opened by the device's UUID (from torch, or
the CUDA driver for onnxruntime), never by an index that may name another GPU; the device
description and the comparability key name device N.

Device description (no torch import in the parent): GPU name, UUID, memory, SM count,
compute capability, driver, CUDA driver/runtime and cuDNN versions, clocks, power limit,
MIG and persistence mode -- from NVML (``nvidia-ml-py``) or ``nvidia-smi``, plus a short
torch probe in a subprocess for the SM count and the CUDA runtime/cuDNN versions.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from backends._common import TORCH_DTYPES, option_flag, quantization_of
from backends.base import Availability, Backend, Option, Session, SessionReport, UnsupportedCase, dist_version

RUNTIMES = ("torch", "onnxruntime")
_ORT_GPU_DISTS = ("onnxruntime-gpu", "onnxruntime-training", "onnxruntime")
_MAX_EVENT_CALLS = 200_000
_EVENT_RING = 256  # event sets created once per session; a slot is read when it comes round again
_NULL_KERNEL_CALLS = 200


# ----------------------------------------------------------------------------- cheap probes

def torch_build_info() -> dict:
    """Whether torch is installed and built for CUDA, read from ``torch/version.py`` (no import)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return {"installed": False, "version": None, "cuda": None}
    text = ""
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except OSError:
        pass
    return parse_torch_version_py(text)


def parse_torch_version_py(text: str) -> dict:
    def field(name):
        m = re.search(rf"^{name}\s*(?::[^=\n]*)?=\s*(?:'([^']*)'|\"([^\"]*)\"|None)", text, re.M)
        return (m.group(1) or m.group(2)) if m else None

    return {"installed": True, "version": field("__version__"), "cuda": field("cuda"), "hip": field("hip")}


def ort_build_info() -> dict:
    """onnxruntime's GPU providers, from the shared libraries it ships (no import)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return {"installed": False, "version": None, "providers": []}
    capi = Path(list(spec.submodule_search_locations)[0]) / "capi"
    try:
        names = os.listdir(capi)
    except OSError:
        names = []
    providers = []
    for ep, token in (("TensorrtExecutionProvider", "providers_tensorrt"), ("CUDAExecutionProvider", "providers_cuda")):
        if any(token in n for n in names):
            providers.append(ep)
    return {"installed": True, "version": dist_version(_ORT_GPU_DISTS), "gpu_dist": dist_version(("onnxruntime-gpu",)),
            "providers": providers}


def visible_gpus(gpus: Sequence[dict], cuda_visible_devices: str | None) -> list[dict]:
    """The GPUs CUDA will show, in CUDA order, given ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs)."""
    if cuda_visible_devices is None:
        return list(gpus)
    out = []
    for tok in (t.strip() for t in cuda_visible_devices.split(",")):
        if not tok:
            break
        if tok.lstrip("-").isdigit():
            i = int(tok)
            if i < 0:
                break  # CUDA stops at the first invalid entry
            match = [g for g in gpus if g.get("index") == i]
        else:
            match = [g for g in gpus if g.get("uuid") and (g["uuid"] == tok or g["uuid"].startswith(tok))]
        if not match:
            break
        out.append(match[0])
    return out


def format_cuda_uuid(raw: bytes) -> str:
    """16 raw bytes of a ``CUuuid`` as NVML spells a GPU's UUID (``GPU-xxxxxxxx-xxxx-...``)."""
    h = bytes(raw[:16]).hex()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def driver_device_uuid(index: int, lib=None) -> tuple[str | None, str | None]:
    """(UUID, None) of CUDA device ``index`` as the CUDA driver numbers it (after
    ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER``), or (None, reason). Uses libcuda's
    ``cuInit``/``cuDeviceGet``/``cuDeviceGetUuid`` through ctypes (no context is created);
    ``lib`` is injectable for tests. Only called in the worker that runs the case."""
    import ctypes

    if lib is None:
        try:
            lib = ctypes.CDLL("libcuda.so.1")
        except OSError as exc:
            return None, f"libcuda.so.1 not loadable: {exc}"
    try:
        if lib.cuInit(0) != 0:
            return None, "cuInit failed"
        dev = ctypes.c_int(0)
        if lib.cuDeviceGet(ctypes.byref(dev), int(index)) != 0:
            return None, f"no CUDA device {index}"
        buf = ctypes.create_string_buffer(16)
        if lib.cuDeviceGetUuid(buf, dev) != 0:
            return None, "cuDeviceGetUuid failed"
        return format_cuda_uuid(buf.raw), None
    except Exception as exc:  # noqa: BLE001 - a missing symbol, an odd driver
        return None, f"CUDA driver query failed: {type(exc).__name__}: {exc}"


def torch_device_uuid(cuda, index: int) -> str | None:
    """The UUID torch reports for device ``index`` (``GPU-`` prefixed as NVML wants), or None."""
    try:
        u = str(cuda.get_device_properties(index).uuid)
    except Exception:  # noqa: BLE001 - older torch: no uuid property
        return None
    if not u or u == "None":
        return None
    return u if u.startswith(("GPU-", "MIG-")) else f"GPU-{u}"


def _gpus() -> list[dict]:
    from harness.run.env import gpu_info

    gpus = gpu_info()
    if gpus and not any("uuid" in g for g in gpus):
        # harness.run.env does not read UUIDs; indices are enough unless CUDA_VISIBLE_DEVICES names UUIDs
        pass
    return visible_gpus(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))


def availability_from(gpus: Sequence[dict], torch_info: dict, ort_info: dict) -> Availability:
    """The backend is available when a GPU is visible and at least one runtime can drive it."""
    if not gpus:
        why = "no NVIDIA GPU found (NVML and nvidia-smi report none"
        if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
            why += f"; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}"
        return Availability(False, why + ")")
    usable = [rt for rt in RUNTIMES if runtime_availability_from(rt, gpus, torch_info, ort_info).ok]
    if not usable:
        reasons = "; ".join(runtime_availability_from(rt, gpus, torch_info, ort_info).reason for rt in RUNTIMES)
        return Availability(False, f"{len(gpus)} GPU(s) found but no CUDA runtime: {reasons}")
    return Availability(True, f"{gpus[0].get('name')} ({', '.join(usable)})")


def runtime_availability_from(runtime: str, gpus: Sequence[dict], torch_info: dict, ort_info: dict) -> Availability:
    if runtime == "torch":
        if not torch_info.get("installed"):
            return Availability(False, "torch is not installed (pip install torch, a CUDA build)")
        if not torch_info.get("cuda"):
            return Availability(False, f"torch {torch_info.get('version')} is a CPU-only build (install a CUDA "
                                       "build, e.g. pip install torch --index-url "
                                       "https://download.pytorch.org/whl/cu124)")
    elif runtime == "onnxruntime":
        if not ort_info.get("installed"):
            return Availability(False, "onnxruntime is not installed (pip install onnxruntime-gpu)")
        if "CUDAExecutionProvider" not in ort_info.get("providers", []):
            return Availability(False, f"onnxruntime {ort_info.get('version')} has no CUDA execution provider "
                                       "(pip uninstall onnxruntime && pip install onnxruntime-gpu)")
    else:
        return Availability(False, f"unknown runtime '{runtime}' for cuda (choose from: {', '.join(RUNTIMES)})")
    if not gpus:
        return Availability(False, "no NVIDIA GPU found")
    return Availability(True, "")


# ----------------------------------------------------------------------------- device description

def _nvml():
    """``pynvml`` initialised, or (None, reason)."""
    if importlib.util.find_spec("pynvml") is None:
        return None, "pynvml is not installed (pip install nvidia-ml-py)"
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, None
    except Exception as exc:  # noqa: BLE001 - no driver, no permission
        return None, f"NVML could not start: {type(exc).__name__}: {exc}"


def _txt(v):
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def nvml_describe(nvml, handle) -> dict:
    """Static facts and clocks of one device from NVML; every query guarded."""

    def q(fn, *args):
        try:
            return getattr(nvml, fn)(*args)
        except Exception:  # noqa: BLE001 - not supported on this device / driver
            return None

    mem = q("nvmlDeviceGetMemoryInfo", handle)
    cc = q("nvmlDeviceGetCudaComputeCapability", handle)
    mig = q("nvmlDeviceGetMigMode", handle)
    attrs = q("nvmlDeviceGetAttributes", handle)
    cuda_drv = q("nvmlSystemGetCudaDriverVersion")
    clk = {}
    for key, fn, which in (("sm_mhz", "nvmlDeviceGetClockInfo", "NVML_CLOCK_SM"),
                           ("mem_mhz", "nvmlDeviceGetClockInfo", "NVML_CLOCK_MEM"),
                           ("max_sm_mhz", "nvmlDeviceGetMaxClockInfo", "NVML_CLOCK_SM"),
                           ("max_mem_mhz", "nvmlDeviceGetMaxClockInfo", "NVML_CLOCK_MEM"),
                           ("applications_sm_mhz", "nvmlDeviceGetApplicationsClock", "NVML_CLOCK_SM")):
        v = q(fn, handle, getattr(nvml, which, None))
        clk[key] = int(v) if v is not None else None
    power = q("nvmlDeviceGetPowerManagementLimit", handle)
    default_power = q("nvmlDeviceGetPowerManagementDefaultLimit", handle)
    persistence = q("nvmlDeviceGetPersistenceMode", handle)
    return {
        "name": _txt(q("nvmlDeviceGetName", handle)),
        "uuid": _txt(q("nvmlDeviceGetUUID", handle)),
        "memory_bytes": int(mem.total) if mem is not None else None,
        "driver_version": _txt(q("nvmlSystemGetDriverVersion")),
        "cuda_driver_version": (f"{cuda_drv // 1000}.{(cuda_drv % 1000) // 10}" if isinstance(cuda_drv, int) else None),
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
        "sm_count": int(attrs.multiprocessorCount) if attrs is not None and hasattr(attrs, "multiprocessorCount")
        else None,
        "clocks": clk,
        "power_limit_w": round(power / 1000.0, 1) if power is not None else None,
        "default_power_limit_w": round(default_power / 1000.0, 1) if default_power is not None else None,
        "mig_mode": None if mig is None else ("Enabled" if (mig[0] if isinstance(mig, (list, tuple)) else mig)
                                              else "Disabled"),
        "persistence_mode": None if persistence is None else bool(persistence),
        "source": "nvml",
    }


SMI_FIELDS = ("name", "uuid", "memory.total", "driver_version", "compute_cap", "clocks.sm", "clocks.mem",
              "clocks.max.sm", "clocks.max.mem", "power.limit", "power.default_limit", "mig.mode.current",
              "persistence_mode")


def parse_smi_describe(text: str) -> list[dict]:
    """Parse ``nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits``."""
    def num(v, cast=float):
        try:
            return cast(float(v))
        except (TypeError, ValueError):
            return None

    out = []
    for index, line in enumerate(l for l in (text or "").splitlines() if l.strip()):
        parts = [p.strip() for p in line.rsplit(",", len(SMI_FIELDS) - 1)]
        if len(parts) != len(SMI_FIELDS):
            continue
        f = dict(zip(SMI_FIELDS, parts))
        na = lambda v: None if (not v or v.startswith("[") or v in ("N/A",)) else v  # noqa: E731
        mem = num(f["memory.total"])
        mig = na(f["mig.mode.current"])
        out.append({
            "index": index, "name": f["name"], "uuid": na(f["uuid"]),
            "memory_bytes": int(mem * (1 << 20)) if mem is not None else None,
            "driver_version": na(f["driver_version"]), "compute_capability": na(f["compute_cap"]),
            "clocks": {"sm_mhz": num(f["clocks.sm"], int), "mem_mhz": num(f["clocks.mem"], int),
                       "max_sm_mhz": num(f["clocks.max.sm"], int), "max_mem_mhz": num(f["clocks.max.mem"], int)},
            "power_limit_w": num(f["power.limit"]), "default_power_limit_w": num(f["power.default_limit"]),
            "mig_mode": mig if mig in ("Enabled", "Disabled") else None,
            "persistence_mode": None if na(f["persistence_mode"]) is None else f["persistence_mode"] == "Enabled",
            "sm_count": None, "source": "nvidia-smi",
        })
    return out


_TORCH_PROBE = r"""
import json, sys, torch
i = int(sys.argv[1]) if len(sys.argv) > 1 else 0
out = {"cuda_available": torch.cuda.is_available(), "torch": torch.__version__, "cuda_runtime": torch.version.cuda}
if out["cuda_available"]:
    torch.cuda.set_device(i)
    p = torch.cuda.get_device_properties(i)
    out.update(name=p.name, sm_count=p.multi_processor_count, compute_capability=f"{p.major}.{p.minor}",
               total_memory=p.total_memory, uuid=str(getattr(p, "uuid", "")) or None, index=i,
               cudnn=torch.backends.cudnn.version(), device_count=torch.cuda.device_count(),
               bf16=torch.cuda.is_bf16_supported())
print(json.dumps(out))
"""

_PROBE_CACHE: dict = {}


def torch_probe(index: int = 0, timeout_s: float = 120.0) -> dict | None:
    """SM count, UUID, CUDA runtime and cuDNN versions of CUDA device ``index`` from a short
    torch subprocess (the parent never initialises CUDA); None when it cannot run."""
    key = ("torch", int(index))
    if key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    res = None
    try:
        proc = subprocess.run([sys.executable, "-c", _TORCH_PROBE, str(int(index))], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if proc.returncode == 0:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        res = None
    _PROBE_CACHE[key] = res
    return res


def describe_device(gpu: dict | None, nvml_facts: dict | None, probe: dict | None, torch_info: dict,
                    ort_info: dict) -> dict:
    """Merge what NVML / nvidia-smi, the torch probe and the installed builds say about the device."""
    d: dict[str, Any] = {"kind": "gpu", "vendor": "NVIDIA"}
    for src in (gpu or {}, nvml_facts or {}):
        d.update({k: v for k, v in src.items() if v is not None})
    probe = probe or {}
    if d.get("sm_count") is None and probe.get("sm_count") is not None:
        d["sm_count"] = probe["sm_count"]
    if d.get("compute_capability") is None and probe.get("compute_capability"):
        d["compute_capability"] = probe["compute_capability"]
    d.setdefault("name", probe.get("name") or "NVIDIA GPU")
    d["cuda_runtime_version"] = probe.get("cuda_runtime") or torch_info.get("cuda")
    d["cudnn_version"] = probe.get("cudnn") or dist_version(("nvidia-cudnn-cu12", "nvidia-cudnn-cu11"))
    d["torch_cuda_build"] = torch_info.get("cuda")
    d["onnxruntime_gpu_providers"] = ort_info.get("providers")
    return d


# ----------------------------------------------------------------------------- measurement helpers

def summarize_ns(values: Sequence[float]) -> dict | None:
    """The distribution of one part's device times: :func:`harness.measure.stats.summarize` (the
    harness's one summary, so device and host times read alike), None when nothing was timed."""
    if not values:
        return None
    from harness.measure.stats import summarize

    return summarize(values)


class EnergyMeter:
    """Energy over a window from NVML: the total-energy counter (mJ, Volta and newer), else power
    sampled every ``interval_s`` (<= 0.1 s) and integrated (trapezoids). Never raises."""

    def __init__(self, nvml, handle, *, interval_s: float = 0.1, clock: Callable[[], float] = time.monotonic,
                 unavailable: str | None = None, mig: bool = False):
        self._nvml = nvml
        self._h = handle
        self._interval = min(float(interval_s), 0.1)
        self._clock = clock
        self._unavailable = unavailable
        if mig and unavailable is None:
            self._unavailable = ("a MIG instance: NVML reports energy and power of the whole GPU, shared with other "
                                 "instances")
        self._t0 = None
        self._e0 = None
        self._samples: list[tuple[float, float]] = []
        self._thread = None
        self._stop = threading.Event()
        self.method = None

    def _power_w(self):
        return self._nvml.nvmlDeviceGetPowerUsage(self._h) / 1000.0

    def start(self) -> None:
        """(Re)start the window; a running sampler is stopped first."""
        if self._unavailable:
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=1.0)
            self._thread = None
        self._t0 = self._clock()
        try:
            self._e0 = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._h))
            self.method = "nvml_total_energy_counter"
            return
        except Exception:  # noqa: BLE001 - counter not supported: sample power
            self._e0 = None
        try:
            self._samples = [(self._t0, self._power_w())]
        except Exception as exc:  # noqa: BLE001
            self._unavailable = f"NVML reports neither energy nor power here: {type(exc).__name__}: {exc}"
            return
        self.method = f"nvml_power_sampled_{int(self._interval * 1000)}ms"
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="bench-power", daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(self._interval):
            try:
                self._samples.append((self._clock(), self._power_w()))
            except Exception:  # noqa: BLE001 - keep what we have
                return

    def stop(self, inferences: int) -> dict:
        if self._unavailable or self._t0 is None:
            return {"energy_j": None, "avg_power_w": None, "joules_per_inference": None,
                    "reason": self._unavailable or "the measured window never started", "method": None}
        t1 = self._clock()
        duration = t1 - self._t0
        if self._e0 is not None:
            try:
                energy = (int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._h)) - self._e0) / 1000.0
            except Exception as exc:  # noqa: BLE001
                return {"energy_j": None, "avg_power_w": None, "joules_per_inference": None, "method": self.method,
                        "reason": f"energy counter failed at the end: {exc}"}
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=1.0)
            try:
                self._samples.append((t1, self._power_w()))
            except Exception:  # noqa: BLE001
                pass
            s = self._samples
            energy = sum((t2 - ta) * (pa + p2) / 2.0 for (ta, pa), (t2, p2) in zip(s, s[1:]))
        out = {"energy_j": energy, "duration_s": duration,
               "avg_power_w": energy / duration if duration > 0 else None,
               "inferences": int(inferences),
               "joules_per_inference": energy / inferences if inferences else None,
               "method": self.method, "reason": None}
        if self._e0 is None:
            out["power_samples"] = len(self._samples)
        if duration < 1.0:
            out["note"] = "window shorter than 1 s: NVML's update interval limits the resolution"
        return out


def _nvml_handle(nvml, cuda_index: int, uuid: str | None = None):
    """(handle, how) of CUDA device ``cuda_index`` in NVML.

    By the device's UUID (CUDA and NVML may number GPUs differently: CUDA_VISIBLE_DEVICES,
    CUDA_DEVICE_ORDER=FASTEST_FIRST). Without a UUID only an unambiguous case is accepted:
    a CUDA_VISIBLE_DEVICES entry that is itself a UUID, or a machine with one GPU. Raises
    with the reason otherwise (the caller records energy/memory as unavailable).
    """
    if uuid:
        u = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        return nvml.nvmlDeviceGetHandleByUUID(u), "uuid"
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        toks = [t.strip() for t in vis.split(",") if t.strip()]
        if cuda_index < len(toks) and toks[cuda_index].startswith(("GPU-", "MIG-")):
            return nvml.nvmlDeviceGetHandleByUUID(toks[cuda_index]), "uuid (CUDA_VISIBLE_DEVICES)"
    count = nvml.nvmlDeviceGetCount()
    if int(count) == 1 and cuda_index == 0:
        return nvml.nvmlDeviceGetHandleByIndex(0), "the only GPU"
    raise RuntimeError(f"the UUID of CUDA device {cuda_index} is unknown and NVML sees {count} GPUs: not opened "
                       "by index (CUDA and NVML may number them differently)")


class DeviceMonitor:
    """Memory and energy bookkeeping of one session (NVML optional), on the session's GPU."""

    def __init__(self, cuda_index: int = 0, uuid: str | None = None, nvml=None):
        self.nvml, reason = (nvml, None) if nvml is not None else _nvml()
        self.handle = None
        self.reason = reason
        self.uuid = uuid
        self.opened_by = None
        mig = False
        if self.nvml is not None:
            try:
                self.handle, self.opened_by = _nvml_handle(self.nvml, cuda_index, uuid)
                try:
                    mig = bool(self.nvml.nvmlDeviceIsMigDeviceHandle(self.handle))
                except Exception:  # noqa: BLE001
                    mig = False
            except Exception as exc:  # noqa: BLE001
                self.reason = f"no NVML handle for CUDA device {cuda_index}: {exc}"
        self.energy = EnergyMeter(self.nvml, self.handle, unavailable=self.reason if self.handle is None else None,
                                  mig=mig)

    def memory(self) -> dict:
        out = {"nvml_process_used_bytes": None, "nvml_device_used_bytes": None, "nvml_reason": self.reason,
               "nvml_device_uuid": self.uuid, "nvml_opened_by": self.opened_by}
        if self.handle is None:
            return out
        try:
            out["nvml_device_used_bytes"] = int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)
        except Exception:  # noqa: BLE001
            pass
        try:
            for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                if p.pid == os.getpid() and p.usedGpuMemory is not None:
                    out["nvml_process_used_bytes"] = int(p.usedGpuMemory)
        except Exception:  # noqa: BLE001 - containers often hide processes
            pass
        if out["nvml_process_used_bytes"] is None:
            out["nvml_reason"] = "NVML does not list this process (container PID namespace or permissions)"
        return out


class _Window:
    """Which calls count towards the per-part timings.

    The harness wraps its measured window in the session's energy meter (``start()`` ..
    ``stop()``, see :func:`harness.measure.energy.measure_energy`); the meter marks the window here,
    so warm-up and the accuracy pass are left out. Without a working meter (no NVML) the
    window is every call after the first, and the record says so.

    ``book(item, batch)`` counts a call and returns where its figures belong (``"first"``,
    ``"window"`` or None); a session that reads its figures later (CUDA events) hands them
    over with ``put(token, item)``. ``flush`` (set by such a session) is called before the
    window opens and when it closes -- outside the timed loop -- so nothing pending is lost
    or misfiled.
    """

    def __init__(self, limit: int = _MAX_EVENT_CALLS):
        self.limit = limit
        self.marked = False
        self.open = False
        self.seen_first = False
        self.first = None
        self.items: list = []
        self.calls = self.inferences = self.dropped = 0
        self.flush: Callable[[], None] | None = None

    def book(self, item, batch: int):
        if not self.seen_first:
            self.seen_first = True
            if not self.marked:
                self.open = True
            self.put("first", item)
            return "first"
        if not self.open:
            return None
        self.calls += 1
        self.inferences += batch
        self.put("window", item)
        return "window"

    def put(self, token, item) -> None:
        if item is None or token is None:
            return
        if token == "first":
            self.first = item
        elif len(self.items) < self.limit:
            self.items.append(item)
        else:
            self.dropped += 1

    def mark_start(self) -> None:
        if self.flush is not None:
            self.flush()
        self.marked = True
        self.open = True
        self.items = []
        self.calls = self.inferences = self.dropped = 0

    def mark_stop(self) -> None:
        if self.flush is not None:
            self.flush()
        self.open = False

    @property
    def scope(self) -> str:
        return ("the measured window" if self.marked else
                "every call after the first (warm-up, measurement and the accuracy pass: no NVML meter marked "
                "the measured window)")


class EventRing:
    """CUDA event sets created once and reused: ``size`` slots of ``parts + 1`` timing events.

    ``take()`` returns the next slot's events; if the slot still holds a booked call, its
    figures are read first (last event ``synchronize()`` -> ``elapsed_time``), so reading
    costs the same on every call and never touches an event that is not complete.
    ``drain()`` reads every pending slot (outside the timed loop). Elapsed times are
    converted from milliseconds to nanoseconds: part_k = t(e_{k+1}) - t(e_k), total =
    t(e_last) - t(e_0).
    """

    def __init__(self, cuda, size: int, names: Sequence[str]):
        self.names = tuple(names)
        self.events = [[cuda.Event(enable_timing=True) for _ in range(len(self.names) + 1)] for _ in range(size)]
        self.pending: list = [None] * size  # (window, token) of the call the slot holds
        self.i = -1

    def take(self):
        self.i = (self.i + 1) % len(self.events)
        if self.pending[self.i] is not None:
            self._read(self.i)
        return self.events[self.i]

    def hold(self, window: _Window, token) -> None:
        if token is not None:
            self.pending[self.i] = (window, token)

    def _read(self, i: int) -> None:
        window, token = self.pending[i]
        self.pending[i] = None
        window.put(token, self.elapsed(self.events[i]))

    def elapsed(self, ev) -> dict:
        ev[-1].synchronize()
        out = {k: ev[j].elapsed_time(ev[j + 1]) * 1e6 for j, k in enumerate(self.names)}
        out["total"] = ev[0].elapsed_time(ev[-1]) * 1e6
        return out

    def drain(self) -> None:
        n = len(self.events)
        for k in range(1, n + 1):  # oldest first
            i = (self.i + k) % n
            if self.pending[i] is not None:
                self._read(i)


class NvmlEnergyMeter:
    """The harness's meter protocol (:mod:`harness.measure.energy`) over NVML, marking the measured window."""

    source = "nvml"
    scope = "the whole GPU (every process on it)"

    def __init__(self, monitor: "DeviceMonitor", window: _Window):
        self.monitor = monitor
        self.window = window
        self.detail: dict | None = None

    def available(self) -> tuple[bool, str]:
        m = self.monitor
        if m.handle is None:
            return False, m.reason or "no NVML device handle"
        if m.energy._unavailable:
            return False, m.energy._unavailable
        nvml, h = m.nvml, m.handle
        for fn in ("nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage"):
            try:
                getattr(nvml, fn)(h)
                return True, ""
            except Exception:  # noqa: BLE001 - try the next source
                continue
        return False, "NVML reports neither total energy nor power for this GPU"

    def start(self) -> None:
        self.window.mark_start()
        self.monitor.energy.start()

    def stop(self) -> float:
        self.detail = self.monitor.energy.stop(self.window.inferences)
        self.window.mark_stop()
        if self.detail.get("energy_j") is None:
            raise RuntimeError(f"NVML energy reading failed: {self.detail.get('reason')}")
        return float(self.detail["energy_j"])


def _no_energy(monitor) -> dict:
    return {"energy_j": None, "reason": (monitor.reason if monitor is not None else None) or
            "the measured window was not metered"}


# ----------------------------------------------------------------------------- torch session

class TorchCudaSession(Session):
    """A torch module on a CUDA device. ``cuda`` (the ``torch.cuda`` API) and ``device`` are
    injectable so the control flow is testable on the CPU with a fake ``cuda``.

    Order of things: the device is made current (``set_device``) before any stream, event,
    graph or capability query; the event ring and the null-kernel overhead measurement come
    after the model is on the device. ``run`` = [e0] H2D [e1] compute [e2] D2H (blocking
    ``.cpu()``: the call's completion) [e3]; no ``synchronize`` afterwards.
    """

    DTYPES = TORCH_DTYPES
    PARTS = ("h2d", "compute", "d2h")

    def __init__(self, module, *, torch, precision: str, batch: int, inputs_meta: list[dict],
                 options: Mapping[str, Any], cuda=None, device=None, monitor: DeviceMonitor | None = None,
                 int8: dict | None = None):
        super().__init__()
        self._torch = torch
        self._cuda = cuda if cuda is not None else torch.cuda
        index = int(options.get("device", 0))
        self._index = index
        self._cuda.set_device(index)  # first: events, streams, graphs and queries below refer to device N
        self._tid = threading.get_ident()  # the current device is per host thread (see run())
        self._dev = device if device is not None else torch.device("cuda", index)
        self._batch = batch
        self._names = [i["name"] for i in inputs_meta]
        self._monitor = monitor
        self._window = _Window()
        self._meter = NvmlEnergyMeter(monitor, self._window) if monitor is not None else None
        self._summary = None
        self._events = option_flag(options.get("events", 1))
        amp = str(options.get("amp", "cast"))
        if amp not in ("cast", "autocast"):
            raise UnsupportedCase(f"cuda/torch: amp must be cast or autocast, got {amp!r}")
        if int8 is None and precision not in self.DTYPES:
            raise UnsupportedCase(f"cuda/torch: no {precision} path")
        if precision == "bf16" and not self._cuda.is_bf16_supported():
            raise UnsupportedCase(f"cuda/torch: GPU {index} has no bf16 arithmetic (compute capability < 8.0)")
        dtype = getattr(torch, self.DTYPES.get(precision, "float32"))
        self._dtype = dtype
        self._autocast = precision in ("fp16", "bf16") and amp == "autocast"
        self._cast_inputs = precision in ("fp16", "bf16") and amp == "cast"
        backends = getattr(torch, "backends", None)
        cudnn_bench = option_flag(options.get("cudnn_benchmark", 1))
        tf32 = option_flag(options.get("tf32", 0))
        if backends is not None and hasattr(backends, "cudnn"):
            backends.cudnn.benchmark = cudnn_bench
            backends.cudnn.allow_tf32 = tf32
            backends.cuda.matmul.allow_tf32 = tf32
        _safe_call(lambda: self._cuda.reset_peak_memory_stats(self._dev))
        self._stream = self._cuda.current_stream()  # the device's default stream: where run() works
        module = module.eval()
        if int8 is not None:
            module = int8["apply"](module.to(self._dev))
        else:
            module = module.to(device=self._dev, dtype=dtype if self._cast_inputs else torch.float32)
        compile_on = option_flag(options.get("compile", 0))
        compile_mode = str(options.get("compile_mode", "default"))
        if compile_on:
            module = torch.compile(module, mode=None if compile_mode == "default" else compile_mode)
        self._module = module
        self._graph = None
        graphs = option_flag(options.get("cuda_graphs", 0))
        if graphs:
            self._capture(inputs_meta)
        self._ring = EventRing(self._cuda, _EVENT_RING, self.PARTS) if self._events else None
        if self._ring is not None:
            self._window.flush = self._ring.drain
        self._overhead = self._timing_overhead() if self._events else None
        props = {}
        try:
            p = self._cuda.get_device_properties(self._dev)
            props = {"name": p.name, "sm_count": p.multi_processor_count,
                     "compute_capability": f"{p.major}.{p.minor}", "total_memory": p.total_memory}
        except Exception:  # noqa: BLE001
            pass
        self.info = {
            "runtime": "torch", "device": str(self._dev), "device_index": index,
            "mode": "compile" if compile_on else "eager",
            "compile_mode": compile_mode if compile_on else None, "cuda_graphs": graphs,
            "dtype": str(dtype).replace("torch.", "") if int8 is None else None,
            "precision_mode": (int8 or {}).get("mode") or ("autocast" if self._autocast else
                                                            ("cast" if self._cast_inputs else "fp32")),
            "int8": {k: v for k, v in (int8 or {}).items() if k != "apply"} or None,
            "cudnn_benchmark": cudnn_bench, "tf32": tf32, "inference_mode": True,
            "timing": (f"cuda_events (a ring of {_EVENT_RING} event sets created at prepare, 4 records per call) "
                       "+ host end to end" if self._events else "host end to end only"),
            "completion": "the blocking device-to-host copy of the outputs (no synchronize after it)",
            "timing_overhead": self._overhead,
            "torch_version": getattr(torch, "__version__", None),
            "cuda_runtime_version": getattr(getattr(torch, "version", None), "cuda", None),
            "cudnn_version": _safe_call(lambda: torch.backends.cudnn.version()),
            "device_properties": props,
            "outputs": "cast to float32 on the device before the copy to host",
        }

    # -- CUDA graphs: static input/output buffers, warm-up on a side stream, one capture
    def _capture(self, inputs_meta):
        torch, cuda = self._torch, self._cuda
        dt = self._dtype if self._cast_inputs else None
        self._static_in = []
        for meta in inputs_meta:
            shape = [self._batch] + [int(d) for d in meta["shape"][1:]]
            t = torch.zeros(shape, dtype=getattr(torch, meta["dtype"]), device=self._dev)
            self._static_in.append(t.to(dt) if dt is not None and t.is_floating_point() else t)
        s = cuda.Stream()
        s.wait_stream(cuda.current_stream())
        with cuda.stream(s), torch.inference_mode():
            for _ in range(3):
                self._forward(self._static_in)
        cuda.current_stream().wait_stream(s)
        self._graph = cuda.CUDAGraph()
        with cuda.graph(self._graph), torch.inference_mode():
            self._static_out = self._forward(self._static_in)

    def _timing_overhead(self) -> dict:
        """What the instrument costs, on a null kernel (a one-element fill on the device).

        host_null_ns: p50 host time of [kernel, stream sync]; host_null_with_events_ns: the
        same with what a timed call adds around it -- taking a ring slot (which, once the ring
        has gone round, reads the slot's previous events: synchronize + elapsed_time) and
        the four event records; the ring is filled first so the samples are that steady
        state. events_overhead_ns = the difference (not clipped at 0: a negative value means
        below the timer's noise); device_null_ns: p50 of the events' own total on the null
        kernel (their resolution floor). Measured before the first call; not in any window.
        """
        torch, s = self._torch, self._stream
        x = torch.zeros(1, device=self._dev)
        ns = time.perf_counter_ns
        plain, timed = [], []
        scratch = _Window()
        scratch.seen_first = scratch.open = True
        for _ in range(_NULL_KERNEL_CALLS):
            t0 = ns()
            x.fill_(0.0)
            s.synchronize()
            plain.append(ns() - t0)
        for i in range(len(self._ring.events) + _NULL_KERNEL_CALLS):
            t0 = ns()
            ev = self._ring.take()
            ev[0].record(s)
            ev[1].record(s)
            x.fill_(0.0)
            ev[2].record(s)
            ev[3].record(s)
            s.synchronize()
            self._ring.hold(scratch, "window")
            if i >= len(self._ring.events):
                timed.append(ns() - t0)
        self._ring.drain()
        device = [item["total"] for item in scratch.items]
        p50 = lambda v: float(np.percentile(np.asarray(v, dtype=np.float64), 50)) if v else None  # noqa: E731
        a, b = p50(plain), p50(timed)
        return {"calls": _NULL_KERNEL_CALLS, "host_null_ns": a, "host_null_with_events_ns": b,
                "events_overhead_ns": (b - a) if a is not None and b is not None else None,
                "device_null_ns": p50(device), "kernel": "fill_ of a 1-element tensor on the session's stream"}

    def _forward(self, xs):
        torch = self._torch
        if self._autocast:
            with torch.autocast(device_type="cuda", dtype=self._dtype):
                out = self._module(*xs)
        else:
            out = self._module(*xs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float() if o.is_floating_point() and o.dtype != torch.float32 else o for o in outs]

    def run(self, inputs):
        torch = self._torch
        arrays = [inputs[n] for n in self._names] if set(self._names) <= set(inputs) else list(inputs.values())
        if threading.get_ident() != self._tid:  # called from another thread (the load generator's workers):
            self._cuda.set_device(self._index)  # CUDA's current device is per thread, device N there too
            self._tid = threading.get_ident()
        s = self._stream
        ev = self._ring.take() if self._ring is not None else None
        if ev:
            ev[0].record(s)
        if self._graph is not None:
            for buf, a in zip(self._static_in, arrays):
                buf.copy_(torch.from_numpy(a))  # host -> device (and the cast) into the captured input
            if ev:
                ev[1].record(s)
            self._graph.replay()
            outs = self._static_out
        else:
            xs = [torch.from_numpy(a).to(self._dev) for a in arrays]
            if ev:
                ev[1].record(s)
            if self._cast_inputs:
                xs = [x.to(self._dtype) if x.is_floating_point() else x for x in xs]
            with torch.inference_mode():
                outs = self._forward(xs)
        if ev:
            ev[2].record(s)
        host = [o.cpu().numpy() for o in outs]  # blocking copy: the outputs are on the host, the call complete
        if ev:
            ev[3].record(s)
            self._ring.hold(self._window, self._window.book(None, self._batch))
        else:
            self._window.book(None, self._batch)
        return host

    def energy_meter(self):
        return self._meter

    def timings(self):
        if self._summary is not None:
            return self._summary
        if self._ring is not None:
            self._ring.drain()  # every pending slot: synchronize -> elapsed_time
        w = self._window
        parts: dict[str, list] = {"h2d": [], "compute": [], "d2h": [], "total": []}
        for item in w.items:
            for k, v in item.items():
                parts[k].append(v)
        mem = {"torch_peak_allocated_bytes": _safe_call(lambda: int(self._cuda.max_memory_allocated(self._dev))),
               "torch_peak_reserved_bytes": _safe_call(lambda: int(self._cuda.max_memory_reserved(self._dev)))}
        if self._monitor is not None:
            mem.update(self._monitor.memory())
        return {"method": "cuda_events" if self._events else None, "unit": "ns", "scope": w.scope,
                "calls": w.calls, "inferences": w.inferences, "dropped_event_samples": w.dropped,
                "device_ns": {k: summarize_ns(v) for k, v in parts.items()} if self._events else None,
                "end_to_end": "the case's latency_ns: host perf_counter around run(), completion included",
                "first_call_device_ns": w.first,
                "timing_overhead": self._overhead,
                "device_index": self._index,
                "memory": mem,
                "energy_detail": (self._meter.detail if self._meter is not None and self._meter.detail else
                                  _no_energy(self._monitor))}

    def report(self) -> SessionReport:
        t = self.timings()
        return SessionReport(timings=t, memory=t.get("memory"), info=self.info)

    def close(self):
        self._summary = self.timings()  # the harness reads timings() after close()
        self._module = None
        self._graph = None
        self._ring = None
        self._window.items = []


def _safe_call(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return None


# ----------------------------------------------------------------------------- onnxruntime session

class OrtCudaSession(Session):
    """onnxruntime on the GPU with IO binding; TensorRT EP first when present."""

    def __init__(self, path: str, *, ort, precision: str, batch: int, threads: int, inputs_meta: list[dict],
                 options: Mapping[str, Any], quantization: dict | None, cache_dir: str | None = None,
                 monitor: DeviceMonitor | None = None):
        super().__init__()
        self._ort = ort
        device_id = int(options.get("device", 0))
        available = list(ort.get_available_providers())
        trt_opt = str(options.get("tensorrt", "auto")).lower()
        use_trt = "TensorrtExecutionProvider" in available and trt_opt not in ("0", "false", "no", "off")
        if trt_opt in ("1", "true", "yes", "on") and "TensorrtExecutionProvider" not in available:
            raise UnsupportedCase("cuda/onnxruntime: tensorrt=1 but this onnxruntime has no TensorRT EP")
        if "CUDAExecutionProvider" not in available:
            raise UnsupportedCase(f"cuda/onnxruntime: this onnxruntime has no CUDA EP (providers: {available})")
        plan = plan_ort_precision(precision, quantization, use_trt, options)
        shapes = resolved_input_shapes(inputs_meta, batch)  # before any GPU work: a bad shape is one line
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # bench checks the placement itself (profiled below) so it can name the nodes that ran on the CPU
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "0")
        profile_dir = tempfile.mkdtemp(prefix="bench-ort-profile-")
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "placement")
        cuda_opts = {"device_id": device_id,
                     "cudnn_conv_algo_search": str(options.get("cudnn_conv_algo_search", "EXHAUSTIVE")),
                     "do_copy_in_default_stream": "1"}
        if option_flag(options.get("cuda_graphs", 0)):
            cuda_opts["enable_cuda_graph"] = "1"
        providers: list = []
        if use_trt:
            trt_opts = {"device_id": device_id, "trt_fp16_enable": precision == "fp16",
                        "trt_int8_enable": precision == "int8", "trt_engine_cache_enable": bool(cache_dir)}
            if cache_dir:
                trt_opts["trt_engine_cache_path"] = cache_dir
            providers.append(("TensorrtExecutionProvider", trt_opts))
        providers.append(("CUDAExecutionProvider", cuda_opts))
        providers.append("CPUExecutionProvider")
        try:
            self._sess = ort.InferenceSession(path, so, providers=providers)
        except Exception:
            shutil.rmtree(profile_dir, ignore_errors=True)
            raise
        got = list(self._sess.get_providers())
        if "CUDAExecutionProvider" not in got and "TensorrtExecutionProvider" not in got:
            shutil.rmtree(profile_dir, ignore_errors=True)
            raise RuntimeError(f"onnxruntime could not load its CUDA EP (CUDA/cuDNN libraries missing?); "
                               f"session providers: {got}")
        metas = {m.name: m for m in self._sess.get_inputs()}
        for name in shapes:
            if name not in metas:
                shutil.rmtree(profile_dir, ignore_errors=True)
                raise UnsupportedCase(f"cuda/onnxruntime: the artifact names input {name!r}, the graph has "
                                      f"{sorted(metas)}")
        self._names = [i["name"] for i in inputs_meta]
        self._in = {}
        for name, shape in shapes.items():
            self._in[name] = ort.OrtValue.ortvalue_from_shape_and_type(shape, _ORT_NP[metas[name].type], "cuda",
                                                                       device_id)
        self._binding = self._sess.io_binding()
        for name, v in self._in.items():
            self._binding.bind_ortvalue_input(name, v)
        for meta in self._sess.get_outputs():  # onnxruntime allocates outputs on the device (shapes may be dynamic)
            self._binding.bind_output(meta.name, "cuda", device_id)
        # one profiled run, through the binding (with enable_cuda_graph this is the capture, on the
        # buffers every later call uses), on zeros: which node ran on which execution provider
        try:
            for name, v in self._in.items():
                v.update_inplace(np.zeros(shapes[name], dtype=_ORT_NP[metas[name].type]))
            self._sess.run_with_iobinding(self._binding)
            self._binding.synchronize_outputs()
            placement = parse_ort_profile(self._sess.end_profiling())
        finally:
            shutil.rmtree(profile_dir, ignore_errors=True)
        if placement["cpu_nodes"] and not plan["allow_cpu"]:
            raise UnsupportedCase(
                f"cuda/onnxruntime: {len(placement['cpu_nodes'])} node(s) ran on the CPU "
                f"({placement_summary(placement)}); pass --option allow_cpu_fallback=1 to measure it anyway")
        self._batch = batch
        self._monitor = monitor
        self._window = _Window()
        self._meter = NvmlEnergyMeter(monitor, self._window) if monitor is not None else None
        self._summary = None
        self.info = {
            "runtime": "onnxruntime", "providers": got, "device_index": device_id,
            "requested_providers": [p if isinstance(p, str) else p[0] for p in providers],
            "tensorrt": use_trt, "cuda_provider_options": cuda_opts, "io_binding": True,
            "input_shapes": {k: list(v) for k, v in shapes.items()},
            "cpu_ep_fallback": ("none: every node ran on the GPU" if not placement["cpu_nodes"] else
                                f"allowed (--option allow_cpu_fallback=1): {placement_summary(placement)}"),
            "placement": placement,
            "precision_mode": plan["mode"], "quantization": quantization,
            "intra_op_num_threads": threads, "inter_op_num_threads": 1,
            "timing": "host_synchronized (perf_counter around the synchronous copy / Run / copy calls)",
            "onnxruntime_version": getattr(ort, "__version__", None),
        }

    def run(self, inputs):
        ns = time.perf_counter_ns
        arrays = [inputs[n] for n in self._names] if set(self._names) <= set(inputs) else list(inputs.values())
        t0 = ns()
        for v, a in zip(self._in.values(), arrays):
            v.update_inplace(a)  # host -> device into the bound input buffer
        t1 = ns()
        self._sess.run_with_iobinding(self._binding)
        self._binding.synchronize_outputs()
        t2 = ns()
        host = self._binding.copy_outputs_to_cpu()  # device -> host
        t3 = ns()
        self._window.book({"h2d": t1 - t0, "compute": t2 - t1, "d2h": t3 - t2, "total": t3 - t0}, self._batch)
        return host

    def energy_meter(self):
        return self._meter

    def timings(self):
        if self._summary is not None:
            return self._summary
        w = self._window
        parts: dict[str, list] = {"h2d": [], "compute": [], "d2h": [], "total": []}
        for item in w.items:
            for k in parts:
                parts[k].append(item[k])
        mem = {"torch_peak_allocated_bytes": None,
               "torch_reason": "onnxruntime allocates through its own arena, not the torch allocator"}
        if self._monitor is not None:
            mem.update(self._monitor.memory())
        return {"method": "host_synchronized", "unit": "ns", "scope": w.scope, "calls": w.calls,
                "inferences": w.inferences, "dropped_samples": w.dropped,
                "device_ns": {k: summarize_ns(v) for k, v in parts.items()}, "first_call_device_ns": w.first,
                "memory": mem,
                "energy_detail": (self._meter.detail if self._meter is not None and self._meter.detail else
                                  _no_energy(self._monitor))}

    def report(self) -> SessionReport:
        t = self.timings()
        return SessionReport(timings=t, memory=t.get("memory"), info=self.info,
                             threads={k: self.info[k] for k in ("intra_op_num_threads", "inter_op_num_threads")})

    def close(self):
        self._summary = self.timings()  # the harness reads timings() after close()
        self._binding = None
        self._sess = None


_ORT_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
           "tensor(bool)": np.bool_}


def plan_ort_precision(precision: str, quantization: dict | None, use_trt: bool, options: Mapping[str, Any]) -> dict:
    """How onnxruntime on the GPU realises ``precision`` -- or why it cannot (UnsupportedCase).

    ``allow_cpu``: whether nodes may run on the CPU (``--option allow_cpu_fallback=1``);
    never for int8 integer-op graphs (their point is the GPU's integer kernels).
    """
    allow = option_flag(options.get("allow_cpu_fallback", 0))
    if precision in ("fp32", "fp16"):
        return {"mode": precision + (" (TensorRT)" if use_trt else " (CUDA EP)"), "allow_cpu": allow}
    if precision == "bf16":
        raise UnsupportedCase("cuda/onnxruntime: no bf16 execution for these graphs (use --runtime torch)")
    if precision != "int8":
        raise UnsupportedCase(f"cuda/onnxruntime: no {precision} path")
    if quantization is None:
        raise UnsupportedCase("cuda/onnxruntime: the case is int8 but the graph has no quantized ops; refusing to "
                              "run it as float")
    if use_trt:
        return {"mode": "int8 (TensorRT engine built from the QDQ graph)", "allow_cpu": False}
    if quantization["mode"] in ("qdq", "mixed"):
        if option_flag(options.get("allow_qdq_emulation", 0)):
            return {"mode": "int8 QDQ emulated on the CUDA EP (dequantize -> fp32 op -> quantize; no int8 kernels)",
                    "allow_cpu": allow}
        raise UnsupportedCase("cuda/onnxruntime: the CUDA EP runs a QDQ graph as dequantize -> fp32 op -> quantize "
                              "(no int8 kernels); install TensorRT (TensorrtExecutionProvider) for int8, or pass "
                              "--option allow_qdq_emulation=1 to measure the emulation")
    return {"mode": "int8 integer ops on the CUDA EP (MatMulInteger/ConvInteger kernels), no CPU fallback",
            "allow_cpu": False}


def resolved_input_shapes(inputs_meta: Sequence[dict], batch: int) -> dict[str, list[int]]:
    """The IO-binding buffer shape of each input: the artifact's resolved shape with its
    batch dimension (dimension 0, ``None`` or symbolic) set to ``batch``. Any other
    dimension that is not a number is an error naming the input (a dynamic non-batch
    dimension must be given with ``--input-shape``; it is never guessed to be the batch)."""
    out = {}
    for meta in inputs_meta:
        shape = list(meta["shape"])
        if not shape:
            out[meta["name"]] = []
            continue
        dims = [int(batch) if (i == 0 and not isinstance(d, int)) else d for i, d in enumerate(shape)]
        bad = [i for i, d in enumerate(dims) if not isinstance(d, int) or d < 0]
        if bad:
            raise UnsupportedCase(f"cuda/onnxruntime: input {meta['name']!r} has unresolved dimension(s) "
                                  f"{bad} in shape {shape}; give them with --input-shape")
        out[meta["name"]] = dims
    return out


def parse_ort_profile(path: str) -> dict:
    """Which node ran on which execution provider, from an onnxruntime profile (JSON list of
    trace events; node kernels are ``cat: "Node"`` events named ``<node>_kernel_time`` with
    ``args.provider`` and ``args.op_name``)."""
    try:
        events = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        return {"source": "onnxruntime profiling", "error": f"profile not readable: {exc}", "by_provider": {},
                "cpu_nodes": []}
    by_provider: dict[str, int] = {}
    cpu_nodes, seen = [], set()
    for e in events if isinstance(events, list) else []:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        args = e.get("args") or {}
        prov = args.get("provider")
        node = e["name"][: -len("_kernel_time")]
        if prov is None or node in seen:
            continue
        seen.add(node)
        by_provider[prov] = by_provider.get(prov, 0) + 1
        if prov == "CPUExecutionProvider":
            cpu_nodes.append({"name": node, "op": args.get("op_name")})
    return {"source": "onnxruntime profiling of one run at prepare", "by_provider": by_provider,
            "cpu_nodes": cpu_nodes[:200], "cpu_node_count": len(cpu_nodes)}


def placement_summary(placement: dict) -> str:
    ops: dict[str, int] = {}
    for n in placement["cpu_nodes"]:
        ops[str(n["op"])] = ops.get(str(n["op"]), 0) + 1
    return "CPU ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items()))


# ----------------------------------------------------------------------------- torch int8

def torch_int8_path() -> dict | None:
    """torchao's int8 weight-only quantization when torchao is installed, else None."""
    if importlib.util.find_spec("torchao") is None:
        return None

    def apply(module):
        from torchao import quantization as q

        if hasattr(q, "Int8WeightOnlyConfig"):
            q.quantize_(module, q.Int8WeightOnlyConfig())
        else:
            q.quantize_(module, q.int8_weight_only())
        return module

    return {"mode": "int8 weight-only (torchao), applied to the fp32 weights at prepare; activations fp32",
            "library": "torchao", "version": dist_version(("torchao",)), "apply": apply,
            "note": "torchao's own quantization of the fp32 weights, not the artifact's ONNX int8 recipe"}


def _fp32_torch_module(artifact):
    """The torch form of the artifact, or of its fp32 base (int8 variants are ONNX-only)."""
    module = artifact.torch_module()
    if module is not None:
        return module
    base_key = artifact.meta.get("base_key")
    if base_key:
        from harness.plan.artifacts import Artifact

        base_dir = Path(artifact.dir).parent / f"fp32-{base_key}"
        if (base_dir / "meta.json").exists():
            return Artifact.load(base_dir).torch_module()
    return None


# ----------------------------------------------------------------------------- the backend

#: the --option settings of the cuda backend (checked before any case runs)
OPTIONS = (
    Option("device", int, minimum=0, maximum=1023, help="GPU index (default 0)"),
    Option("events", bool, runtimes=("torch",), help="time with CUDA events (default 1)"),
    Option("amp", str, choices=("cast", "autocast"), runtimes=("torch",), help="fp16/bf16 by cast or autocast"),
    Option("cudnn_benchmark", bool, runtimes=("torch",), help="cuDNN autotuner (default 1)"),
    Option("tf32", bool, runtimes=("torch",), help="allow TF32 matmuls (default 0)"),
    Option("compile", bool, runtimes=("torch",), help="torch.compile the model (default 0)"),
    Option("compile_mode", str, choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
           runtimes=("torch",), help="torch.compile mode"),
    Option("cuda_graphs", bool, help="capture the query in a CUDA graph (default 0)"),
    Option("tensorrt", str, choices=("auto", "1", "0", "true", "false", "yes", "no", "on", "off"),
           runtimes=("onnxruntime",), help="TensorRT EP: auto / on / off"),
    Option("cudnn_conv_algo_search", str, choices=("EXHAUSTIVE", "HEURISTIC", "DEFAULT"), runtimes=("onnxruntime",),
           help="onnxruntime CUDA EP conv algorithm search"),
    Option("allow_cpu_fallback", bool, runtimes=("onnxruntime",), help="allow nodes on the CPU EP"),
    Option("allow_qdq_emulation", bool, runtimes=("onnxruntime",), help="run int8 QDQ graphs emulated (default 0)"),
)


class CUDABackend(Backend):
    #: injection points for tests
    gpus: Callable[[], list] = staticmethod(_gpus)
    torch_info: Callable[[], dict] = staticmethod(torch_build_info)
    ort_info: Callable[[], dict] = staticmethod(ort_build_info)

    def __init__(self):
        super().__init__(name="cuda", runtimes=RUNTIMES, default_runtime="torch", options=OPTIONS)
        self.device_index = 0

    def check_options(self, options: Mapping[str, Any] | None, runtime: str | None = None) -> dict:
        """Validate ``--option`` values in the parent (one-line error: the declared OPTIONS first,
        then the visible devices) and remember the device index, so the description and the
        comparability key name that GPU."""
        from harness.errors import BenchError

        super().check_options(options, runtime)
        options = dict(options or {})
        raw = options.get("device", 0)
        try:
            index = int(str(raw))
        except ValueError:
            raise BenchError(f"--option device={raw}: expected a CUDA device index (0, 1, ...)") from None
        gpus = self.gpus()
        if index < 0 or (gpus and index >= len(gpus)):
            raise BenchError(f"--option device={raw}: {len(gpus)} CUDA device(s) visible here (0..{len(gpus) - 1})")
        for key in ("allow_cpu_fallback", "allow_qdq_emulation", "events", "cuda_graphs", "compile"):
            if key in options and str(options[key]).strip().lower() not in ("0", "1", "true", "false", "yes", "no",
                                                                             "on", "off"):
                raise BenchError(f"--option {key}={options[key]}: expected 0 or 1")
        self.device_index = index
        return options

    def _gpu(self) -> dict | None:
        gpus = self.gpus()
        return gpus[self.device_index] if self.device_index < len(gpus) else None

    def availability(self) -> Availability:
        return availability_from(self.gpus(), self.torch_info(), self.ort_info())

    def runtime_availability(self, runtime: str) -> Availability:
        return runtime_availability_from(runtime, self.gpus(), self.torch_info(), self.ort_info())

    def describe(self) -> dict:
        gpus = self.gpus()
        gpu = self._gpu()
        torch_info = self.torch_info()
        probe = torch_probe(self.device_index) if (gpu is not None and torch_info.get("cuda")) else None
        uuid = (probe or {}).get("uuid") or (gpu or {}).get("uuid")
        facts = None
        nvml, _ = _nvml()
        if nvml is not None and gpu is not None:
            try:
                if uuid:
                    handle = nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else
                                                            f"GPU-{uuid}")
                else:
                    handle = nvml.nvmlDeviceGetHandleByIndex(int(gpu.get("index", self.device_index)))
                facts = nvml_describe(nvml, handle)
            except Exception:  # noqa: BLE001
                facts = None
            finally:
                _safe_call(nvml.nvmlShutdown)
        if facts is None and gpu is not None:
            facts = _smi_describe(gpu.get("index", self.device_index))
        d = describe_device(gpu, facts, probe, torch_info, self.ort_info())
        d["cuda_device_index"] = self.device_index
        d["visible_devices"] = len(gpus)
        d["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        return d

    def device_name(self) -> str:
        """GPU N's name. CUDA may number GPUs unlike NVML (CUDA_DEVICE_ORDER=FASTEST_FIRST on a
        mixed machine), so the torch probe's name for CUDA device N wins when torch can run it."""
        gpu = self._gpu()
        if gpu is None:
            return "cuda (no GPU)"
        probe = torch_probe(self.device_index) if self.torch_info().get("cuda") else None
        name = (probe or {}).get("name") or gpu.get("name") or "NVIDIA GPU"
        return f"{name} (MIG)" if gpu.get("mig_mode") == "Enabled" else name

    def runtime_version(self, runtime: str) -> str | None:
        if runtime == "torch":
            return self.torch_info().get("version")
        if runtime == "onnxruntime":
            return self.ort_info().get("version")
        return None

    def prepare_generation(self, artifact, *, precision, batch, threads, runtime, options=None):
        """LLM generation on cuda:N through torch (fp32/fp16/bf16; weight-only int8/int4 are CPU-only here)."""
        if runtime != "torch":
            raise UnsupportedCase(f"LLM generation on cuda/{runtime}: not built; use --runtime torch")
        from backends import llm_torch

        device = f"cuda:{int((options or {}).get('device', 0))}"
        return llm_torch.prepare(artifact, precision=precision, threads=threads, device=device, options=options)

    def prepare(self, artifact, *, precision, batch, threads, runtime, options=None) -> Session:
        options = dict(options or {})
        if runtime == "torch":
            return self._prepare_torch(artifact, precision, batch, threads, options)
        if runtime == "onnxruntime":
            return self._prepare_ort(artifact, precision, batch, threads, options)
        raise UnsupportedCase(f"unknown runtime '{runtime}' for cuda")

    def _prepare_torch(self, artifact, precision, batch, threads, options):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} cannot use CUDA here (torch.cuda.is_available() is False)")
        torch.set_num_threads(threads)
        index = int(options.get("device", 0))
        if not 0 <= index < torch.cuda.device_count():
            raise UnsupportedCase(f"cuda/torch: no CUDA device {index} ({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(index)  # before any query: is_bf16_supported() and friends ask the current device
        int8 = None
        if precision == "int8":
            int8 = torch_int8_path()
            if int8 is None:
                raise UnsupportedCase("cuda/torch: no int8 path installed (pip install torchao for int8 weight-only; "
                                      "or --runtime onnxruntime with onnxruntime-gpu + TensorRT)")
            module = _fp32_torch_module(artifact)
        elif precision in TorchCudaSession.DTYPES:
            module = artifact.torch_module()  # bf16 support is checked by the session, on device N
        else:
            raise UnsupportedCase(f"cuda/torch: no {precision} path")
        if module is None:
            raise UnsupportedCase(f"artifact {artifact.name}/{artifact.variant} has no torch form")
        monitor = DeviceMonitor(index, torch_device_uuid(torch.cuda, index))
        return TorchCudaSession(module, torch=torch, precision=precision, batch=batch, inputs_meta=artifact.inputs,
                                options=options, monitor=monitor, int8=int8)

    def _prepare_ort(self, artifact, precision, batch, threads, options):
        import onnx
        import onnxruntime as ort

        quant = quantization_of(onnx.load(str(artifact.onnx_path), load_external_data=False))
        cache = artifact.side_cache("tensorrt-engines")
        if "TensorrtExecutionProvider" in ort.get_available_providers():
            cache.mkdir(parents=True, exist_ok=True)
        index = int(options.get("device", 0))
        uuid, _why = driver_device_uuid(index)
        monitor = DeviceMonitor(index, uuid)
        return OrtCudaSession(str(artifact.onnx_path), ort=ort, precision=precision, batch=batch, threads=threads,
                              inputs_meta=artifact.inputs, options=options, quantization=quant,
                              cache_dir=str(cache), monitor=monitor)


def _smi_describe(index: int) -> dict | None:
    import shutil

    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        proc = subprocess.run([exe, f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits",
                               f"--id={index}"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    rows = parse_smi_describe(proc.stdout)
    return rows[0] if rows else None
