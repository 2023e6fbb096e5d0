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
  run with CPU fallback disabled, so a node the GPU cannot run makes the case
  ``unsupported`` instead of running on the CPU. A CUDA EP that fails to load (missing
  CUDA/cuDNN libraries) is an error, never a silent CPU run.

Timing
------
The harness times each call end to end (``perf_counter`` around ``run`` + ``synchronize``:
the synchronized wall time). Inside, the torch session records CUDA events around the
host-to-device copy, the compute and the device-to-host copy of every call; onnxruntime
has no event API, so its three parts are timed on the host around synchronous calls.
``session.timings()`` reports those per-part distributions, device memory (torch
allocator peak, NVML process/device use) and energy (NVML's total-energy counter over the
measured window, else power sampled every 100 ms; ``null`` with the reason when neither
works; recorded by the harness as the case's ``energy``). The harness wraps its measured
window in the session's meter (``session.energy_meter()``), which marks the window for the
per-part timings too; without NVML they cover every call after the first, and say so.

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
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from backends.base import Availability, Backend, Session, UnsupportedCase, dist_version

RUNTIMES = ("torch", "onnxruntime")
_ORT_GPU_DISTS = ("onnxruntime-gpu", "onnxruntime-training", "onnxruntime")
_MAX_EVENT_CALLS = 200_000





def _truthy(v) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


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


def _gpus() -> list[dict]:
    from harness.env import gpu_info

    gpus = gpu_info()
    if gpus and not any("uuid" in g for g in gpus):
        # harness.env does not read UUIDs; indices are enough unless CUDA_VISIBLE_DEVICES names UUIDs
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
import json, torch
out = {"cuda_available": torch.cuda.is_available(), "torch": torch.__version__, "cuda_runtime": torch.version.cuda}
if out["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    out.update(name=p.name, sm_count=p.multi_processor_count, compute_capability=f"{p.major}.{p.minor}",
               total_memory=p.total_memory, uuid=str(getattr(p, "uuid", "")) or None,
               cudnn=torch.backends.cudnn.version(), device_count=torch.cuda.device_count(),
               bf16=torch.cuda.is_bf16_supported())
print(json.dumps(out))
"""

_PROBE_CACHE: dict = {}


def torch_probe(timeout_s: float = 120.0) -> dict | None:
    """SM count, CUDA runtime and cuDNN versions from a short torch subprocess (the parent never
    initialises CUDA); None when it cannot run."""
    if "torch" in _PROBE_CACHE:
        return _PROBE_CACHE["torch"]
    res = None
    try:
        proc = subprocess.run([sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if proc.returncode == 0:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        res = None
    _PROBE_CACHE["torch"] = res
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
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"n": int(a.size), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)), "min": float(a.min()),
            "max": float(a.max())}


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
    """The NVML handle of CUDA device ``cuda_index`` (through CUDA_VISIBLE_DEVICES / UUID)."""
    if uuid:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        except Exception:  # noqa: BLE001
            pass
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        toks = [t.strip() for t in vis.split(",") if t.strip()]
        if cuda_index < len(toks):
            tok = toks[cuda_index]
            if tok.isdigit():
                return nvml.nvmlDeviceGetHandleByIndex(int(tok))
            return nvml.nvmlDeviceGetHandleByUUID(tok)
    return nvml.nvmlDeviceGetHandleByIndex(cuda_index)


class DeviceMonitor:
    """Memory and energy bookkeeping of one session (NVML optional)."""

    def __init__(self, cuda_index: int = 0, uuid: str | None = None, nvml=None):
        self.nvml, reason = (nvml, None) if nvml is not None else _nvml()
        self.handle = None
        self.reason = reason
        mig = False
        if self.nvml is not None:
            try:
                self.handle = _nvml_handle(self.nvml, cuda_index, uuid)
                try:
                    mig = bool(self.nvml.nvmlDeviceIsMigDeviceHandle(self.handle))
                except Exception:  # noqa: BLE001
                    mig = False
            except Exception as exc:  # noqa: BLE001
                self.reason = f"no NVML handle for CUDA device {cuda_index}: {exc}"
        self.energy = EnergyMeter(self.nvml, self.handle, unavailable=self.reason if self.handle is None else None,
                                  mig=mig)

    def memory(self) -> dict:
        out = {"nvml_process_used_bytes": None, "nvml_device_used_bytes": None, "nvml_reason": self.reason}
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
    ``stop()``, see :func:`harness.energy.measure_energy`); the meter marks the window here,
    so warm-up and the accuracy pass are left out. Without a working meter (no NVML) the
    window is every call after the first, and the record says so.
    """

    def __init__(self, limit: int = _MAX_EVENT_CALLS):
        self.limit = limit
        self.marked = False
        self.open = False
        self.seen_first = False
        self.first = None
        self.items: list = []
        self.calls = self.inferences = self.dropped = 0

    def book(self, item, batch: int) -> None:
        if not self.seen_first:
            self.seen_first = True
            self.first = item
            if not self.marked:
                self.open = True
            return
        if not self.open:
            return
        self.calls += 1
        self.inferences += batch
        if item is None:
            return
        if len(self.items) < self.limit:
            self.items.append(item)
        else:
            self.dropped += 1

    def mark_start(self) -> None:
        self.marked = True
        self.open = True
        self.items = []
        self.calls = self.inferences = self.dropped = 0

    def mark_stop(self) -> None:
        self.open = False

    @property
    def scope(self) -> str:
        return ("the measured window" if self.marked else
                "every call after the first (warm-up, measurement and the accuracy pass: no NVML meter marked "
                "the measured window)")


class NvmlEnergyMeter:
    """The harness's meter protocol (:mod:`harness.energy`) over NVML, marking the measured window."""

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
    injectable so the control flow is testable on the CPU with a fake ``cuda``."""

    DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

    def __init__(self, module, *, torch, precision: str, batch: int, inputs_meta: list[dict],
                 options: Mapping[str, Any], cuda=None, device=None, monitor: DeviceMonitor | None = None,
                 int8: dict | None = None):
        super().__init__()
        self._torch = torch
        self._cuda = cuda if cuda is not None else torch.cuda
        index = int(options.get("device", 0))
        self._dev = device if device is not None else torch.device("cuda", index)
        self._batch = batch
        self._names = [i["name"] for i in inputs_meta]
        self._monitor = monitor
        self._window = _Window()
        self._meter = NvmlEnergyMeter(monitor, self._window) if monitor is not None else None
        self._summary = None
        self._events = _truthy(options.get("events", 1))
        amp = str(options.get("amp", "cast"))
        if amp not in ("cast", "autocast"):
            raise UnsupportedCase(f"cuda/torch: amp must be cast or autocast, got {amp!r}")
        if int8 is None and precision not in self.DTYPES:
            raise UnsupportedCase(f"cuda/torch: no {precision} path")
        dtype = getattr(torch, self.DTYPES.get(precision, "float32"))
        self._dtype = dtype
        self._autocast = precision in ("fp16", "bf16") and amp == "autocast"
        self._cast_inputs = precision in ("fp16", "bf16") and amp == "cast"
        backends = getattr(torch, "backends", None)
        cudnn_bench = _truthy(options.get("cudnn_benchmark", 1))
        tf32 = _truthy(options.get("tf32", 0))
        if backends is not None and hasattr(backends, "cudnn"):
            backends.cudnn.benchmark = cudnn_bench
            backends.cudnn.allow_tf32 = tf32
            backends.cuda.matmul.allow_tf32 = tf32
        _safe_call(lambda: self._cuda.reset_peak_memory_stats(self._dev))
        module = module.eval()
        if int8 is not None:
            module = int8["apply"](module.to(self._dev))
        else:
            module = module.to(device=self._dev, dtype=dtype if self._cast_inputs else torch.float32)
        compile_on = _truthy(options.get("compile", 0))
        compile_mode = str(options.get("compile_mode", "default"))
        if compile_on:
            module = torch.compile(module, mode=None if compile_mode == "default" else compile_mode)
        self._module = module
        self._graph = None
        graphs = _truthy(options.get("cuda_graphs", 0))
        if graphs:
            self._capture(inputs_meta)
        props = {}
        try:
            p = self._cuda.get_device_properties(self._dev)
            props = {"name": p.name, "sm_count": p.multi_processor_count,
                     "compute_capability": f"{p.major}.{p.minor}", "total_memory": p.total_memory}
        except Exception:  # noqa: BLE001
            pass
        self.info = {
            "runtime": "torch", "device": str(self._dev), "mode": "compile" if compile_on else "eager",
            "compile_mode": compile_mode if compile_on else None, "cuda_graphs": graphs,
            "dtype": str(dtype).replace("torch.", "") if int8 is None else None,
            "precision_mode": (int8 or {}).get("mode") or ("autocast" if self._autocast else
                                                            ("cast" if self._cast_inputs else "fp32")),
            "int8": {k: v for k, v in (int8 or {}).items() if k != "apply"} or None,
            "cudnn_benchmark": cudnn_bench, "tf32": tf32, "inference_mode": True,
            "timing": "cuda_events" if self._events else "host only",
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
        ev = [self._cuda.Event(enable_timing=True) for _ in range(4)] if self._events else None
        if ev:
            ev[0].record()
        if self._graph is not None:
            for buf, a in zip(self._static_in, arrays):
                buf.copy_(torch.from_numpy(a))  # host -> device (and the cast) into the captured input
            if ev:
                ev[1].record()
            self._graph.replay()
            outs = self._static_out
        else:
            xs = [torch.from_numpy(a).to(self._dev) for a in arrays]
            if ev:
                ev[1].record()
            if self._cast_inputs:
                xs = [x.to(self._dtype) if x.is_floating_point() else x for x in xs]
            with torch.inference_mode():
                outs = self._forward(xs)
        if ev:
            ev[2].record()
        host = [o.cpu().numpy() for o in outs]  # blocking copy: the outputs are on the host
        if ev:
            ev[3].record()
        self._window.book(ev, self._batch)
        return host

    def synchronize(self):
        self._cuda.synchronize()

    def energy_meter(self):
        return self._meter

    @staticmethod
    def _elapsed(ev) -> dict:
        ms = [ev[0].elapsed_time(ev[1]), ev[1].elapsed_time(ev[2]), ev[2].elapsed_time(ev[3]),
              ev[0].elapsed_time(ev[3])]
        return {k: v * 1e6 for k, v in zip(("h2d", "compute", "d2h", "total"), ms)}

    def timings(self):
        if self._summary is not None:
            return self._summary
        self._cuda.synchronize()  # every recorded event has completed
        w = self._window
        parts: dict[str, list] = {"h2d": [], "compute": [], "d2h": [], "total": []}
        for ev in w.items:
            for k, v in self._elapsed(ev).items():
                parts[k].append(v)
        mem = {"torch_peak_allocated_bytes": _safe_call(lambda: int(self._cuda.max_memory_allocated(self._dev))),
               "torch_peak_reserved_bytes": _safe_call(lambda: int(self._cuda.max_memory_reserved(self._dev)))}
        if self._monitor is not None:
            mem.update(self._monitor.memory())
        return {"method": "cuda_events" if self._events else None, "unit": "ns", "scope": w.scope,
                "calls": w.calls, "inferences": w.inferences, "dropped_event_samples": w.dropped,
                "device_ns": {k: summarize_ns(v) for k, v in parts.items()},
                "first_call_device_ns": self._elapsed(w.first) if w.first is not None else None,
                "memory": mem,
                "energy_detail": (self._meter.detail if self._meter is not None and self._meter.detail else
                                  _no_energy(self._monitor))}

    def close(self):
        self._summary = self.timings()  # the harness reads timings() after close()
        self._module = None
        self._graph = None
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
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1" if plan["strict"] else "0")
        cuda_opts = {"device_id": device_id,
                     "cudnn_conv_algo_search": str(options.get("cudnn_conv_algo_search", "EXHAUSTIVE")),
                     "do_copy_in_default_stream": "1"}
        if _truthy(options.get("cuda_graphs", 0)):
            cuda_opts["enable_cuda_graph"] = "1"
        providers: list = []
        if use_trt:
            trt_opts = {"device_id": device_id, "trt_fp16_enable": precision == "fp16",
                        "trt_int8_enable": precision == "int8", "trt_engine_cache_enable": bool(cache_dir)}
            if cache_dir:
                trt_opts["trt_engine_cache_path"] = cache_dir
            providers.append(("TensorrtExecutionProvider", trt_opts))
        providers.append(("CUDAExecutionProvider", cuda_opts))
        if not plan["strict"]:
            providers.append("CPUExecutionProvider")
        try:
            self._sess = ort.InferenceSession(path, so, providers=providers)
        except Exception as exc:  # noqa: BLE001
            if plan["strict"]:
                raise UnsupportedCase(f"cuda/onnxruntime: the {precision} graph does not run entirely on the GPU "
                                      f"(CPU fallback disabled): {str(exc).splitlines()[0][:300]}") from None
            raise
        got = list(self._sess.get_providers())
        if "CUDAExecutionProvider" not in got and "TensorrtExecutionProvider" not in got:
            raise RuntimeError(f"onnxruntime could not load its CUDA EP (CUDA/cuDNN libraries missing?); "
                               f"session providers: {got}")
        self._names = [i["name"] for i in inputs_meta]
        self._in = {}
        for meta in self._sess.get_inputs():
            shape = [batch if not isinstance(d, int) else d for d in meta.shape]
            self._in[meta.name] = ort.OrtValue.ortvalue_from_shape_and_type(shape, _ORT_NP[meta.type], "cuda",
                                                                             device_id)
        self._binding = self._sess.io_binding()
        for name, v in self._in.items():
            self._binding.bind_ortvalue_input(name, v)
        self._outs = []
        for meta in self._sess.get_outputs():
            shape = [batch if (i == 0 and not isinstance(d, int)) else d for i, d in enumerate(meta.shape)]
            if all(isinstance(d, int) for d in shape) and meta.type in _ORT_NP:
                v = ort.OrtValue.ortvalue_from_shape_and_type(shape, _ORT_NP[meta.type], "cuda", device_id)
                self._binding.bind_ortvalue_output(meta.name, v)
                self._outs.append(v)
            else:
                self._binding.bind_output(meta.name, "cuda", device_id)
                self._outs.append(None)
        self._batch = batch
        self._monitor = monitor
        self._window = _Window()
        self._meter = NvmlEnergyMeter(monitor, self._window) if monitor is not None else None
        self._summary = None
        self.info = {
            "runtime": "onnxruntime", "providers": got,
            "requested_providers": [p if isinstance(p, str) else p[0] for p in providers],
            "tensorrt": use_trt, "cuda_provider_options": cuda_opts, "io_binding": True,
            "cpu_ep_fallback": "disabled" if plan["strict"] else "allowed",
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
        if any(v is None for v in self._outs):
            host = self._binding.copy_outputs_to_cpu()
        else:
            host = [v.numpy() for v in self._outs]  # device -> host
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

    def close(self):
        self._summary = self.timings()  # the harness reads timings() after close()
        self._binding = None
        self._sess = None


_ORT_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
           "tensor(bool)": np.bool_}


def plan_ort_precision(precision: str, quantization: dict | None, use_trt: bool, options: Mapping[str, Any]) -> dict:
    """How onnxruntime on the GPU realises ``precision`` -- or why it cannot (UnsupportedCase)."""
    strict = not _truthy(options.get("cpu_fallback", 1))
    if precision in ("fp32", "fp16"):
        return {"mode": precision + (" (TensorRT)" if use_trt else " (CUDA EP)"), "strict": strict}
    if precision == "bf16":
        raise UnsupportedCase("cuda/onnxruntime: no bf16 execution for these graphs (use --runtime torch)")
    if precision != "int8":
        raise UnsupportedCase(f"cuda/onnxruntime: no {precision} path")
    if quantization is None:
        raise UnsupportedCase("cuda/onnxruntime: the case is int8 but the graph has no quantized ops; refusing to "
                              "run it as float")
    if use_trt:
        return {"mode": "int8 (TensorRT engine built from the QDQ graph)", "strict": True}
    if quantization["mode"] in ("qdq", "mixed"):
        if _truthy(options.get("allow_qdq_emulation", 0)):
            return {"mode": "int8 QDQ emulated on the CUDA EP (dequantize -> fp32 op -> quantize; no int8 kernels)",
                    "strict": strict}
        raise UnsupportedCase("cuda/onnxruntime: the CUDA EP runs a QDQ graph as dequantize -> fp32 op -> quantize "
                              "(no int8 kernels); install TensorRT (TensorrtExecutionProvider) for int8, or pass "
                              "--option allow_qdq_emulation=1 to measure the emulation")
    return {"mode": "int8 integer ops on the CUDA EP (MatMulInteger/ConvInteger kernels), CPU fallback disabled",
            "strict": True}


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
        from harness.artifacts import Artifact

        base_dir = Path(artifact.dir).parent / f"fp32-{base_key}"
        if (base_dir / "meta.json").exists():
            return Artifact.load(base_dir).torch_module()
    return None


# ----------------------------------------------------------------------------- the backend

class CUDABackend(Backend):
    #: injection points for tests
    gpus: Callable[[], list] = staticmethod(_gpus)
    torch_info: Callable[[], dict] = staticmethod(torch_build_info)
    ort_info: Callable[[], dict] = staticmethod(ort_build_info)

    def __init__(self):
        super().__init__(name="cuda", runtimes=RUNTIMES, default_runtime="torch")

    def availability(self) -> Availability:
        return availability_from(self.gpus(), self.torch_info(), self.ort_info())

    def runtime_availability(self, runtime: str) -> Availability:
        return runtime_availability_from(runtime, self.gpus(), self.torch_info(), self.ort_info())

    def describe(self) -> dict:
        gpus = self.gpus()
        gpu = gpus[0] if gpus else None
        facts = None
        nvml, _ = _nvml()
        if nvml is not None and gpu is not None:
            try:
                facts = nvml_describe(nvml, _nvml_handle(nvml, 0))
            except Exception:  # noqa: BLE001
                facts = None
            finally:
                _safe_call(nvml.nvmlShutdown)
        if facts is None and gpu is not None:
            facts = _smi_describe(gpu.get("index", 0))
        torch_info = self.torch_info()
        probe = torch_probe() if (gpu is not None and torch_info.get("cuda")) else None
        d = describe_device(gpu, facts, probe, torch_info, self.ort_info())
        d["visible_devices"] = len(gpus)
        d["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        return d

    def device_name(self) -> str:
        gpus = self.gpus()
        if not gpus:
            return "cuda (no GPU)"
        name = gpus[0].get("name") or "NVIDIA GPU"
        return f"{name} (MIG)" if gpus[0].get("mig_mode") == "Enabled" else name

    def runtime_version(self, runtime: str) -> str | None:
        if runtime == "torch":
            return self.torch_info().get("version")
        if runtime == "onnxruntime":
            return self.ort_info().get("version")
        return None

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
        int8 = None
        if precision == "int8":
            int8 = torch_int8_path()
            if int8 is None:
                raise UnsupportedCase("cuda/torch: no int8 path installed (pip install torchao for int8 weight-only; "
                                      "or --runtime onnxruntime with onnxruntime-gpu + TensorRT)")
            module = _fp32_torch_module(artifact)
        elif precision in TorchCudaSession.DTYPES:
            if precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise UnsupportedCase("cuda/torch: this GPU has no bf16 arithmetic (compute capability < 8.0)")
            module = artifact.torch_module()
        else:
            raise UnsupportedCase(f"cuda/torch: no {precision} path")
        if module is None:
            raise UnsupportedCase(f"artifact {artifact.name}/{artifact.variant} has no torch form")
        index = int(options.get("device", 0))
        uuid = _safe_call(lambda: str(torch.cuda.get_device_properties(index).uuid))
        monitor = DeviceMonitor(index, uuid)
        return TorchCudaSession(module, torch=torch, precision=precision, batch=batch, inputs_meta=artifact.inputs,
                                options=options, monitor=monitor, int8=int8)

    def _prepare_ort(self, artifact, precision, batch, threads, options):
        import onnx
        import onnxruntime as ort

        from backends.tf_runtime import quantization_of

        quant = quantization_of(onnx.load(str(artifact.onnx_path), load_external_data=False))
        from harness.artifacts import cache_root

        cache = cache_root() / "tensorrt-engines" / f"{artifact.name}-{artifact.variant}-{artifact.key}"
        if "TensorrtExecutionProvider" in ort.get_available_providers():
            cache.mkdir(parents=True, exist_ok=True)
        monitor = DeviceMonitor(int(options.get("device", 0)))
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
