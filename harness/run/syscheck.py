"""Is this machine quiet enough to measure? A snapshot of what makes timings noisy, and warnings.

Where it sits: ``bench env --check`` prints it; ``bench run`` takes it once before the first
case, prints its warnings, and keeps it in the run record (``system_check``), so a noisy night
can be told from a real change afterwards.

What is read (Linux; every probe guarded: a missing file gives ``None``, never an error):

* CPU frequency **governor** of every CPU (``/sys/devices/system/cpu/cpu*/cpufreq/
  scaling_governor``): anything but ``performance`` lets the clock wander with load;
* **turbo / boost** (``/sys/devices/system/cpu/cpufreq/boost`` = 1, or
  ``intel_pstate/no_turbo`` = 0): the clock then depends on temperature and on how many
  cores are busy;
* **thermal throttling** counters (``cpu*/thermal_throttle/{core,package}_throttle_count``,
  since boot) — read twice, ``sample_s`` apart, so throttling *now* is told from old events;
* **load average** (``/proc/loadavg``) and **busy processes** (other processes using more
  than 10 % of a CPU over ``sample_s``, via psutil);
* **pressure** (PSI, ``/proc/pressure/{cpu,memory}``: share of time tasks waited) and
  **memory** (``MemAvailable`` / ``MemTotal`` of ``/proc/meminfo``);
* NVIDIA GPUs through **NVML** (pynvml, only when installed): persistence mode, SM clock
  against its maximum, temperature, power limit against the default limit, active clock
  throttle reasons, utilisation (another job on the GPU).

All readers take a ``root`` (a directory standing in for ``/``) and the NVML module as
arguments, so tests run on a faked ``/sys`` and a fake NVML. :func:`warnings_for` is a pure
function of the snapshot.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["snapshot", "cpu_state", "memory_state", "gpu_state", "busy_processes", "warnings_for", "summary",
           "LOAD_PER_CPU_WARN", "BUSY_PROCESS_PCT"]

#: load average (1 min) per usable CPU above which the machine counts as busy
LOAD_PER_CPU_WARN = 0.5
#: a process using more than this % of one CPU is listed as busy
BUSY_PROCESS_PCT = 10.0
#: PSI "some avg10" (% of time) above which CPU / memory pressure is reported
PRESSURE_WARN_PCT = 10.0
#: MemAvailable / MemTotal below which memory is short
MEM_AVAILABLE_WARN = 0.10
GPU_TEMP_WARN_C = 85
GPU_UTIL_WARN_PCT = 10


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel.lstrip("/")).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def _cpu_dirs(root: Path) -> list[Path]:
    base = root / "sys/devices/system/cpu"
    try:
        return sorted((p for p in base.iterdir() if re.fullmatch(r"cpu\d+", p.name)),
                      key=lambda p: int(p.name[3:]))
    except OSError:
        return []


def _throttle_total(root: Path) -> int | None:
    total, seen = 0, False
    for d in _cpu_dirs(root):
        for name in ("core_throttle_count", "package_throttle_count"):
            v = _int(_read(d, f"thermal_throttle/{name}"))
            if v is not None:
                total += v
                seen = True
    return total if seen else None


def _pressure(root: Path, what: str) -> float | None:
    text = _read(root, f"proc/pressure/{what}")
    if not text:
        return None
    m = re.search(r"^some\s.*?avg10=([0-9.]+)", text, re.M)
    return float(m.group(1)) if m else None


def cpu_state(root: str | os.PathLike = "/", *, sample_s: float = 0.2, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Governors, boost, throttling (and whether it grew during ``sample_s``), load, CPU pressure."""
    root = Path(root)
    governors = {}
    for d in _cpu_dirs(root):
        g = _read(d, "cpufreq/scaling_governor")
        if g:
            governors[d.name] = g
    boost = _int(_read(root, "sys/devices/system/cpu/cpufreq/boost"))
    no_turbo = _int(_read(root, "sys/devices/system/cpu/intel_pstate/no_turbo"))
    turbo = bool(boost) if boost is not None else (None if no_turbo is None else not no_turbo)
    throttle0 = _throttle_total(root)
    if throttle0 is not None and sample_s > 0:
        sleep(sample_s)
    throttle1 = _throttle_total(root)
    load_text = _read(root, "proc/loadavg")
    load = None
    if load_text:
        try:
            load = [float(x) for x in load_text.split()[:3]]
        except ValueError:
            load = None
    try:
        usable = len(os.sched_getaffinity(0)) if str(root) == "/" else None  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        usable = None
    n_cpus = usable or len(_cpu_dirs(root)) or os.cpu_count() or 1
    return {
        "governors": sorted(set(governors.values())) or None,
        "turbo": turbo,
        "throttle_count": throttle1,
        "throttling_now": (throttle1 - throttle0) > 0 if throttle0 is not None and throttle1 is not None else None,
        "load_avg": load,
        "cpus": n_cpus,
        "cpu_pressure_pct": _pressure(root, "cpu"),
    }


def memory_state(root: str | os.PathLike = "/") -> dict:
    """MemTotal, MemAvailable (bytes), their ratio, memory pressure (PSI some avg10)."""
    root = Path(root)
    text = _read(root, "proc/meminfo") or ""
    vals = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            vals[m.group(1)] = int(m.group(2)) * 1024
    total, avail = vals.get("MemTotal"), vals.get("MemAvailable")
    return {"total_bytes": total, "available_bytes": avail,
            "available_fraction": round(avail / total, 4) if total and avail is not None else None,
            "memory_pressure_pct": _pressure(root, "memory")}


def busy_processes(*, sample_s: float = 0.2, threshold_pct: float = BUSY_PROCESS_PCT, limit: int = 5,
                   exclude: set[int] | None = None) -> list[dict] | None:
    """Other processes using more than ``threshold_pct`` % of one CPU over ``sample_s`` (psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    skip = set(exclude or ()) | {os.getpid(), os.getppid()}
    procs = []
    for p in psutil.process_iter(["pid", "name"]):
        if p.info["pid"] in skip:
            continue
        try:
            p.cpu_percent(None)
            procs.append(p)
        except (psutil.Error, OSError):
            continue
    time.sleep(sample_s)
    busy = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except (psutil.Error, OSError):
            continue
        if pct > threshold_pct:
            busy.append({"pid": p.info["pid"], "name": p.info["name"], "cpu_pct": round(pct, 1)})
    busy.sort(key=lambda d: -d["cpu_pct"])
    return busy[:limit]


def gpu_state(nvml: Any = None) -> list[dict] | None:
    """Per NVIDIA GPU: persistence, clocks, temperature, power limit, throttle reasons, use.

    ``nvml`` is the pynvml module (imported here when None and installed); ``None`` is
    returned when there is no NVML (no driver, not installed), ``[]`` with no GPU. Each query
    is guarded: an unsupported one gives None for its field.
    """
    if nvml is None:
        from harness.run.env import load_pynvml

        nvml = load_pynvml()
        if nvml is None:
            return None
    try:
        nvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver
        return None

    def attempt(name, *args):
        fn = getattr(nvml, name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001
            return None

    out = []
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            name = attempt("nvmlDeviceGetName", h)
            sm_clock = getattr(nvml, "NVML_CLOCK_SM", 1)
            limit = attempt("nvmlDeviceGetPowerManagementLimit", h)
            default = attempt("nvmlDeviceGetPowerManagementDefaultLimit", h)
            reasons = attempt("nvmlDeviceGetCurrentClocksEventReasons", h)
            if reasons is None:
                reasons = attempt("nvmlDeviceGetCurrentClocksThrottleReasons", h)
            util = attempt("nvmlDeviceGetUtilizationRates", h)
            pers = attempt("nvmlDeviceGetPersistenceMode", h)
            out.append({
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else name,
                "persistence_mode": None if pers is None else bool(pers),
                "sm_clock_mhz": attempt("nvmlDeviceGetClockInfo", h, sm_clock),
                "sm_clock_max_mhz": attempt("nvmlDeviceGetMaxClockInfo", h, sm_clock),
                "temperature_c": attempt("nvmlDeviceGetTemperature", h, getattr(nvml, "NVML_TEMPERATURE_GPU", 0)),
                "power_limit_w": None if limit is None else round(limit / 1000.0, 1),
                "power_default_limit_w": None if default is None else round(default / 1000.0, 1),
                "throttle_reasons": reasons,
                "utilization_pct": getattr(util, "gpu", None) if util is not None else None,
            })
    except Exception:  # noqa: BLE001
        return out or None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return out


#: NVML clock-event bits that are harmless: GPU idle (0x1), application clocks setting (0x2)
_BENIGN_THROTTLE = 0x1 | 0x2


def warnings_for(state: dict) -> list[str]:
    """One line per thing that makes timings on this machine noisy (pure function of :func:`snapshot`)."""
    w: list[str] = []
    cpu = state.get("cpu") or {}
    govs = cpu.get("governors") or []
    if any(g != "performance" for g in govs):
        w.append(f"cpu governor {'/'.join(govs)} (not 'performance'): the clock follows the load")
    if cpu.get("turbo"):
        w.append("turbo/boost on: the clock depends on temperature and on how many cores are busy")
    if cpu.get("throttling_now"):
        w.append("thermal throttling right now (throttle counters grew during the check)")
    load, n = cpu.get("load_avg"), cpu.get("cpus") or 1
    if load and load[0] > LOAD_PER_CPU_WARN * n:
        w.append(f"load average {load[0]:.2f} on {n} CPU(s): other work competes for the cores")
    busy = state.get("busy_processes") or []
    if busy:
        w.append("busy processes: " + ", ".join(f"{p['name']} ({p['pid']}) {p['cpu_pct']:.0f}%" for p in busy))
    cp = cpu.get("cpu_pressure_pct")
    if cp is not None and cp > PRESSURE_WARN_PCT:
        w.append(f"CPU pressure: tasks waited for a CPU {cp:.0f}% of the last 10 s")
    mem = state.get("memory") or {}
    frac = mem.get("available_fraction")
    if frac is not None and frac < MEM_AVAILABLE_WARN:
        w.append(f"memory low: {100 * frac:.0f}% available")
    mp = mem.get("memory_pressure_pct")
    if mp is not None and mp > PRESSURE_WARN_PCT:
        w.append(f"memory pressure: tasks stalled on memory {mp:.0f}% of the last 10 s")
    for g in state.get("gpus") or []:
        tag = f"GPU {g.get('index')}"
        if g.get("persistence_mode") is False:
            w.append(f"{tag}: persistence mode off (driver re-initialises between processes)")
        t = g.get("temperature_c")
        if t is not None and t >= GPU_TEMP_WARN_C:
            w.append(f"{tag}: temperature {t} C")
        lim, dflt = g.get("power_limit_w"), g.get("power_default_limit_w")
        if lim is not None and dflt is not None and lim < dflt:
            w.append(f"{tag}: power limit {lim:g} W below the default {dflt:g} W")
        r = g.get("throttle_reasons")
        if isinstance(r, int) and r & ~_BENIGN_THROTTLE:
            w.append(f"{tag}: clocks held down (NVML clock event reasons 0x{r:x})")
        u = g.get("utilization_pct")
        if u is not None and u > GPU_UTIL_WARN_PCT:
            w.append(f"{tag}: {u}% busy before the run (another job on the GPU?)")
    return w


def snapshot(root: str | os.PathLike = "/", *, nvml: Any = None, sample_s: float = 0.2,
             processes: bool = True) -> dict:
    """Everything above, read now: ``{"cpu", "memory", "busy_processes", "gpus"}``."""
    state = {"cpu": cpu_state(root, sample_s=sample_s if not processes else 0.0),
             "memory": memory_state(root),
             "busy_processes": busy_processes(sample_s=sample_s) if processes else None,
             "gpus": gpu_state(nvml)}
    if processes and state["cpu"].get("throttle_count") is not None:
        # the process sample doubled as the throttle window: read the counters again
        again = cpu_state(root, sample_s=0.0)
        state["cpu"]["throttling_now"] = (again["throttle_count"] or 0) > state["cpu"]["throttle_count"]
        state["cpu"]["throttle_count"] = again["throttle_count"]
    return state


def summary(state: dict) -> dict:
    """The run record's ``system_check``: the snapshot and its warnings."""
    return {"state": state, "warnings": warnings_for(state)}
