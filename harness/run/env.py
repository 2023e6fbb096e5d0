"""Environment fingerprint, machine identity and comparability keys.

:func:`fingerprint` returns the run record's ``environment`` object (schema
``run-v1``, ``$defs/environment``). It is cheap and safe to call anywhere:

* it never imports an ML framework (torch, tensorflow, onnxruntime); package
  versions come from :mod:`importlib.metadata`;
* ``pynvml`` is imported only inside :func:`gpu_info`, and only when installed;
* every probe is guarded: a missing file, tool or permission gives ``None`` (or
  ``[]``), never an exception.

Two hashes derive from it:

* :func:`machine_id` — the *hardware* identity (CPU model, core counts, memory
  rounded to GiB, GPU names + memory, architecture). Hostname, load, clocks,
  governor and software versions are recorded but not hashed, so the same box
  keeps its id across reboots, renames and upgrades.
* :func:`comparability_key` — the identity of a *case* (model, artifact hash,
  variant, backend, runtime + version, device, precision, batch, scenario,
  threads, and the backend options that change what is measured). Two results
  may be compared only when their keys are equal.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "KEY_FIELDS",
    "PACKAGES",
    "ENV_VARS",
    "ML_CPU_FLAGS",
    "fingerprint",
    "machine_id",
    "comparability_key",
    "key_fields",
    "measured_options",
    "git_info",
    "cpu_info",
    "parse_cpuinfo",
    "gpu_info",
    "parse_nvidia_smi",
    "package_versions",
]

#: Fields of a case that define its identity (hashed into the comparability key).
KEY_FIELDS = (
    "model",
    "artifact_hash",
    "variant",
    "backend",
    "runtime",
    "runtime_version",
    "device",
    "precision",
    "batch",
    "scenario",
    "threads",
)

#: Distributions whose versions are recorded (None when not installed).
PACKAGES = (
    "bench",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "psutil",
    "torch",
    "torchvision",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "openvino",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "jax",
    "jaxlib",
    "tensorrt",
    "nvidia-ml-py",
    "nvidia-cuda-runtime-cu12",
    "nvidia-cudnn-cu12",
    "nvidia-cublas-cu12",
)

#: Environment variables that change performance (recorded, value or None).
ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "OMP_PROC_BIND",
    "OMP_PLACES",
    "KMP_AFFINITY",
    "KMP_BLOCKTIME",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING",
    "CUDA_MODULE_LOADING",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
    "PYTORCH_CUDA_ALLOC_CONF",
)

#: CPU feature flags that matter for ML kernels (x86 "flags", Arm "Features").
ML_CPU_FLAGS = frozenset(
    {
        # x86
        "sse4_2", "avx", "avx2", "fma", "f16c",
        "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd",
        "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx512_vbmi", "avx512ifma",
        "avx_vnni", "avx_vnni_int8", "avx_ifma",
        "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "amx_complex",
        # Arm
        "neon", "asimd", "asimdhp", "asimddp", "asimdfhm", "fphp",
        "sve", "sve2", "svebf16", "svei8mm", "sme", "sme2",
        "i8mm", "bf16",
    }
)

_GIB = 1 << 30
_MIB = 1 << 20
_SMI_FIELDS = "name,memory.total,driver_version,clocks.max.sm,power.limit,mig.mode.current"
_SMI_TIMEOUT_S = 5.0
_GIT_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- hashing

def _canonical(obj: Any) -> Any:
    """JSON-ready, order-independent form of ``obj`` (sets sorted, tuples as lists)."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((_canonical(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _sha256_json(obj: Any) -> str:
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def key_fields(case: dict) -> dict:
    """The identity fields (:data:`KEY_FIELDS`) of ``case``; a missing field is None.

    Plus ``options`` — the backend options that change what is measured
    (:func:`measured_options`), values as strings — when the case has any. A case without
    such options hashes exactly as before options were keyed, so older records keep their keys.
    """
    out = {name: case.get(name) for name in KEY_FIELDS}
    opts = case.get("options")
    if opts:
        out["options"] = {str(k): str(v) for k, v in sorted(opts.items())}
    return out


def measured_options(options: dict | None, *, not_measured: Iterable[str] = (),
                     defaults: dict | None = None) -> dict:
    """The backend options that change what is measured, normalised for the comparability key.

    Every option counts (io_binding, compile, cuda_graphs, amp, tf32, tensorrt, jit_compile,
    steps_per_execution, part, reuse_factor, ...) except those the backend declares in
    ``not_measured`` (its ``options_not_measured``: e.g. a log level). An option given with
    the backend's declared default value (``defaults``, its ``option_defaults``; compared as
    strings) is dropped, so ``--option io_binding=0`` and no option share a key. Values are
    strings, keys sorted.
    """
    skip = set(not_measured)
    dflt = {str(k): str(v) for k, v in (defaults or {}).items()}
    out = {}
    for k, v in sorted((options or {}).items()):
        k = str(k)
        if k in skip or (k in dflt and str(v) == dflt[k]):
            continue
        out[k] = str(v)
    return out


def comparability_key(fields: dict) -> str:
    """16 hex chars: sha256 of the canonical JSON (sorted keys) of ``fields``.

    ``fields`` is hashed as given — pass :func:`key_fields` of a case — so that
    ``comparability_key(record["key_fields"]) == record["key"]`` always holds.
    """
    return _sha256_json(fields)[:16]


def _norm_space(text: str | None) -> str | None:
    if text is None:
        return None
    return " ".join(str(text).split())


def machine_id(fp: dict) -> str:
    """16 hex chars identifying the hardware described by fingerprint ``fp``.

    Hashed: CPU model, physical and logical cores, memory rounded to GiB, GPU
    names + memory (GiB, order-independent) and the OS machine architecture.
    Not hashed: hostname, load, clocks, governor, OS release, package versions.
    """
    cpu = fp.get("cpu") or {}
    mem = fp.get("memory_bytes")
    gpus = []
    for gpu in fp.get("gpus") or []:
        gmem = gpu.get("memory_bytes")
        gpus.append([_norm_space(gpu.get("name")), round(gmem / _GIB) if gmem else None])
    gpus.sort(key=lambda g: json.dumps(g))
    identity = {
        "cpu_model": _norm_space(cpu.get("model")),
        "physical_cores": cpu.get("physical_cores"),
        "logical_cores": cpu.get("logical_cores"),
        "memory_gib": round(mem / _GIB) if mem else None,
        "gpus": gpus,
        "arch": (fp.get("os") or {}).get("machine"),
    }
    return _sha256_json(identity)[:16]


# --------------------------------------------------------------------------- small helpers

def _read_text(path: str | os.PathLike) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _run(argv: list[str], *, timeout: float, cwd: str | None = None, env: dict | None = None):
    """subprocess.run that never raises; returns CompletedProcess or None."""
    try:
        return subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _num(text: Any, cast=float):
    """Parse a number; None for '', 'N/A', '[Not Supported]' and the like."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return cast(text)
    try:
        return cast(float(str(text).strip()))
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- CPU

def parse_cpuinfo(text: str) -> dict:
    """Parse the text of ``/proc/cpuinfo`` (pure function).

    Returns ``model`` (str or None), ``physical_cores`` (unique (physical id,
    core id) pairs, None when the file has no core ids), ``logical_cores``
    (number of ``processor`` entries, None when none) and ``flags`` (sorted
    subset of :data:`ML_CPU_FLAGS`, from x86 ``flags`` or Arm ``Features``).
    """
    model = None
    hardware = None
    implementer = part = None
    logical = 0
    cores: set[tuple[str, str]] = set()
    flags: set[str] = set()
    phys_id = core_id = None

    def close_block():
        nonlocal phys_id, core_id
        if core_id is not None:
            cores.add((phys_id or "0", core_id))
        phys_id = core_id = None

    for raw in (text or "").splitlines():
        if not raw.strip():
            close_block()
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip()
        if key == "processor":
            # x86 and Arm: "processor : N"; old Arm kernels: "Processor : ARMv7 ..."
            if value.isdigit():
                logical += 1
            elif model is None and value:
                model = value
        elif key == "model name" and value:
            if model is None or not model.strip():
                model = value
        elif key in ("cpu model", "cpu") and value and model is None:
            model = value  # MIPS / POWER
        elif key == "hardware" and value:
            hardware = value
        elif key == "cpu implementer" and implementer is None:
            implementer = value
        elif key == "cpu part" and part is None:
            part = value
        elif key == "physical id":
            phys_id = value
        elif key == "core id":
            core_id = value
        elif key in ("flags", "features"):
            flags.update(f for f in value.lower().split() if f in ML_CPU_FLAGS)
    close_block()

    if model is None and implementer is not None and part is not None:
        model = f"implementer {implementer} part {part}"
    if model is None and hardware:
        model = hardware
    return {
        "model": _norm_space(model) if model else None,
        "physical_cores": len(cores) if cores else None,
        "logical_cores": logical or None,
        "flags": sorted(flags),
    }


def _macos_cpu_model() -> str | None:
    if sys.platform != "darwin" or not shutil.which("sysctl"):
        return None
    proc = _run(["sysctl", "-n", "machdep.cpu.brand_string"], timeout=2.0)
    if proc is None or proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def _cgroup_cpu_limit() -> float | None:
    """CPU quota of this cgroup in cores (cgroup v2 cpu.max or v1 cfs), None if unlimited."""
    text = _read_text("/sys/fs/cgroup/cpu.max")
    if text:
        parts = text.split()
        if len(parts) == 2 and parts[0] != "max":
            quota, period = _num(parts[0]), _num(parts[1])
            if quota and period:
                return round(quota / period, 3)
        return None
    quota = _num(_read_text("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
    period = _num(_read_text("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    if quota and period and quota > 0:
        return round(quota / period, 3)
    return None


def cpu_info() -> dict:
    """CPU model, core counts, governor, frequency, ML-relevant flags, affinity."""
    parsed = parse_cpuinfo(_read_text("/proc/cpuinfo") or "")
    model = parsed["model"] or _macos_cpu_model() or _norm_space(platform.processor())
    model = model or platform.machine() or "unknown"

    physical = logical = None
    freq = freq_max = None
    try:
        import psutil  # light; a bench dependency

        physical = psutil.cpu_count(logical=False)
        logical = psutil.cpu_count(logical=True)
        try:
            f = psutil.cpu_freq()
        except Exception:  # noqa: BLE001 - some platforms raise here
            f = None
        if f is not None:
            freq = round(float(f.current), 1) if f.current else None
            freq_max = round(float(f.max), 1) if f.max else None
    except Exception:  # noqa: BLE001 - psutil missing or broken
        pass
    physical = physical or parsed["physical_cores"]
    logical = logical or parsed["logical_cores"] or os.cpu_count()

    governor = _read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    governor = (governor.strip() or None) if governor else None

    try:
        affinity = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        affinity = None

    return {
        "model": model,
        "physical_cores": physical,
        "logical_cores": logical,
        "governor": governor,
        "frequency_mhz": freq,
        "frequency_max_mhz": freq_max,
        "flags": parsed["flags"],
        "affinity_cores": affinity,
        "cgroup_cpu_limit": _cgroup_cpu_limit(),
    }


# --------------------------------------------------------------------------- GPU

def parse_nvidia_smi(text: str) -> list[dict]:
    """Parse ``nvidia-smi --query-gpu=<_SMI_FIELDS> --format=csv,noheader,nounits``."""
    gpus = []
    for index, line in enumerate(l for l in (text or "").splitlines() if l.strip()):
        parts = [p.strip() for p in line.rsplit(",", 5)]
        if len(parts) != 6:
            continue
        name, mem_mib, driver, sm_clock, power, mig = parts
        mem = _num(mem_mib)
        mig_l = mig.strip().lower()
        gpus.append(
            {
                "index": index,
                "name": name,
                "memory_bytes": int(mem * _MIB) if mem is not None else None,
                "driver_version": driver if driver and not driver.startswith("[") else None,
                "max_sm_clock_mhz": _num(sm_clock, int),
                "power_limit_w": _num(power),
                "mig_mode": mig if mig_l in ("enabled", "disabled") else None,
                "source": "nvidia-smi",
            }
        )
    return gpus


def load_pynvml():
    """The ``pynvml`` module, imported lazily, or None when it is absent or does not import."""
    import importlib.util

    if importlib.util.find_spec("pynvml") is None:
        return None
    try:
        import pynvml  # noqa: PLC0415 - deliberately lazy
    except Exception:  # noqa: BLE001
        return None
    return pynvml


def _gpu_info_pynvml() -> list[dict] | None:
    """GPUs via pynvml, or None when pynvml is absent or NVML cannot start."""
    pynvml = load_pynvml()
    if pynvml is None:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver / no GPU
        return None

    def txt(value):
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def attempt(fn, *args):
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - unsupported query
            return None

    gpus = []
    try:
        driver = attempt(pynvml.nvmlSystemGetDriverVersion)
        driver = txt(driver) if driver is not None else None
        count = pynvml.nvmlDeviceGetCount()
        for i in range(count):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = attempt(pynvml.nvmlDeviceGetMemoryInfo, h)
            clock = attempt(pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_SM)
            power = attempt(pynvml.nvmlDeviceGetPowerManagementLimit, h)
            mig = attempt(pynvml.nvmlDeviceGetMigMode, h)
            mig_mode = None
            if mig is not None:
                current = mig[0] if isinstance(mig, (list, tuple)) else mig
                mig_mode = "Enabled" if current else "Disabled"
            name = attempt(pynvml.nvmlDeviceGetName, h)
            gpus.append(
                {
                    "index": i,
                    "name": txt(name) if name is not None else "unknown",
                    "memory_bytes": int(mem.total) if mem is not None else None,
                    "driver_version": driver,
                    "max_sm_clock_mhz": int(clock) if clock is not None else None,
                    "power_limit_w": round(power / 1000.0, 1) if power is not None else None,
                    "mig_mode": mig_mode,
                    "source": "nvml",
                }
            )
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return gpus


def _gpu_info_smi() -> list[dict]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    proc = _run(
        [exe, f"--query-gpu={_SMI_FIELDS}", "--format=csv,noheader,nounits"],
        timeout=_SMI_TIMEOUT_S,
    )
    if proc is None or proc.returncode != 0:
        return []
    return parse_nvidia_smi(proc.stdout)


def gpu_info() -> list[dict]:
    """NVIDIA GPUs (pynvml if installed, else nvidia-smi, else []). Never raises."""
    try:
        gpus = _gpu_info_pynvml()
        if gpus:
            return gpus
        return _gpu_info_smi()
    except Exception:  # noqa: BLE001 - a fingerprint must never fail
        return []


# --------------------------------------------------------------------------- git / packages

def _default_checkout() -> Path | None:
    """The bench checkout root (parent of the harness package) if it is a git checkout."""
    root = Path(__file__).resolve().parents[2]  # harness/run/env.py -> the checkout
    return root if (root / ".git").exists() else None


def git_info(path: str | os.PathLike | None = None) -> dict:
    """``{"git_sha", "git_dirty"}`` of the bench checkout (or of ``path``).

    Both are None outside a checkout, when git is absent, or when git refuses
    (e.g. "dubious ownership"). ``git_dirty`` counts tracked files only, and is
    read with ``--no-optional-locks`` so the index is never rewritten.
    """
    none = {"git_sha": None, "git_dirty": None}
    try:
        where = Path(path) if path is not None else _default_checkout()
        if where is None or not where.exists() or not shutil.which("git"):
            return none
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env["GIT_OPTIONAL_LOCKS"] = "0"
        base = ["git", "--no-optional-locks", "-C", str(where)]
        inside = _run(base + ["rev-parse", "--is-inside-work-tree"], timeout=_GIT_TIMEOUT_S, env=env)
        if inside is None or inside.returncode != 0 or inside.stdout.strip() != "true":
            return none
        sha = _run(base + ["rev-parse", "--verify", "--quiet", "HEAD"], timeout=_GIT_TIMEOUT_S, env=env)
        git_sha = sha.stdout.strip() if sha is not None and sha.returncode == 0 else None
        status = _run(
            base + ["status", "--porcelain", "--untracked-files=no"], timeout=_GIT_TIMEOUT_S, env=env
        )
        git_dirty = bool(status.stdout.strip()) if status is not None and status.returncode == 0 else None
        return {"git_sha": git_sha or None, "git_dirty": git_dirty}
    except Exception:  # noqa: BLE001
        return none


def _dist_version(name: str) -> str | None:
    try:
        return _metadata.version(name)
    except Exception:  # noqa: BLE001 - PackageNotFoundError or broken metadata
        return None


def package_versions(names: Iterable[str] = PACKAGES) -> dict:
    """``{distribution: version or None}`` from importlib.metadata (imports nothing)."""
    out = {name: _dist_version(name) for name in names}
    if "bench" in out and out["bench"] is None:
        out["bench"] = _bench_version()
    return out


def _bench_version() -> str:
    v = _dist_version("bench")
    if v:
        return v
    from harness import __version__

    return __version__


# --------------------------------------------------------------------------- fingerprint

def _os_info() -> dict:
    info = {
        "system": platform.system(),
        "release": platform.release(),
        "version": platform.version(),
        "machine": platform.machine(),
    }
    try:
        lib, ver = platform.libc_ver()
        if lib:
            info["libc"] = f"{lib} {ver}".strip()
    except Exception:  # noqa: BLE001
        pass
    try:
        rel = platform.freedesktop_os_release()  # 3.10+, Linux only
        if rel.get("PRETTY_NAME"):
            info["distribution"] = rel["PRETTY_NAME"]
    except Exception:  # noqa: BLE001 - OSError / AttributeError
        pass
    return info


def _python_info() -> dict:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
    }


def _memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _hostname() -> str:
    try:
        return socket.gethostname() or platform.node() or "unknown"
    except Exception:  # noqa: BLE001
        return platform.node() or "unknown"


def fingerprint(*, load: bool = True) -> dict:
    """The run record's ``environment`` object (see the run-v1 schema).

    ``load=False`` leaves ``load_avg`` None (for deterministic output).
    """
    fp: dict[str, Any] = {
        "machine_id": "",
        "hostname": _hostname(),
        "cpu": cpu_info(),
        "memory_bytes": _memory_bytes(),
        "os": _os_info(),
        "python": _python_info(),
        "packages": package_versions(),
        "gpus": gpu_info(),
        "load_avg": _load_avg() if load else None,
        "env_vars": {name: os.environ.get(name) for name in ENV_VARS},
        "bench": {"version": _bench_version(), **git_info()},
    }
    fp["machine_id"] = machine_id(fp)
    return fp
