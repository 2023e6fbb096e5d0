"""The system check on a faked /sys + /proc tree and a fake NVML."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.run import syscheck as sc


def _tree(tmp_path: Path, *, governor="powersave", boost="1", throttle=(3, 5), load="3.50 2.00 1.00 2/300 99",
          avail_kb=1_000_000, total_kb=16_000_000, psi_cpu="some avg10=42.00 avg60=1.00 avg300=0.00 total=1\n",
          ncpu=2) -> Path:
    root = tmp_path / "root"
    for i in range(ncpu):
        d = root / f"sys/devices/system/cpu/cpu{i}"
        (d / "cpufreq").mkdir(parents=True)
        (d / "cpufreq/scaling_governor").write_text(governor + "\n")
        if throttle is not None:
            (d / "thermal_throttle").mkdir()
            (d / "thermal_throttle/core_throttle_count").write_text(f"{throttle[0]}\n")
            (d / "thermal_throttle/package_throttle_count").write_text(f"{throttle[1]}\n")
    (root / "sys/devices/system/cpu/cpufreq").mkdir(parents=True, exist_ok=True)
    if boost is not None:
        (root / "sys/devices/system/cpu/cpufreq/boost").write_text(boost + "\n")
    (root / "proc/pressure").mkdir(parents=True)
    (root / "proc/loadavg").write_text(load + "\n")
    (root / "proc/meminfo").write_text(f"MemTotal:       {total_kb} kB\nMemFree:  5 kB\nMemAvailable:   {avail_kb} kB\n")
    (root / "proc/pressure/cpu").write_text(psi_cpu)
    (root / "proc/pressure/memory").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    return root


def test_noisy_machine_is_reported(tmp_path):
    root = _tree(tmp_path)
    state = sc.snapshot(root, nvml=_NoNVML(), processes=False, sample_s=0)
    cpu = state["cpu"]
    assert cpu["governors"] == ["powersave"] and cpu["turbo"] is True
    assert cpu["throttle_count"] == 16 and cpu["throttling_now"] is False
    assert cpu["load_avg"] == [3.5, 2.0, 1.0] and cpu["cpus"] == 2 and cpu["cpu_pressure_pct"] == 42.0
    assert state["memory"]["available_fraction"] == pytest.approx(1 / 16, rel=1e-3)
    w = " | ".join(sc.warnings_for(state))
    for needle in ("governor powersave", "turbo/boost on", "load average 3.50 on 2", "CPU pressure", "memory low"):
        assert needle in w, needle
    assert "throttling" not in w


def test_quiet_machine_has_no_warnings(tmp_path):
    root = _tree(tmp_path, governor="performance", boost="0", throttle=(0, 0), load="0.10 0.1 0.1 1/1 1",
                 avail_kb=12_000_000, psi_cpu="some avg10=0.50 avg60=0 avg300=0 total=0\n")
    state = sc.snapshot(root, nvml=_NoNVML(), processes=False, sample_s=0)
    assert state["cpu"]["turbo"] is False
    assert sc.warnings_for(state) == []
    assert sc.summary(state)["warnings"] == []


def test_intel_no_turbo_and_missing_files(tmp_path):
    root = _tree(tmp_path, boost=None, throttle=None)
    (root / "sys/devices/system/cpu/intel_pstate").mkdir(parents=True)
    (root / "sys/devices/system/cpu/intel_pstate/no_turbo").write_text("1\n")
    cpu = sc.cpu_state(root, sample_s=0)
    assert cpu["turbo"] is False and cpu["throttle_count"] is None and cpu["throttling_now"] is None
    empty = sc.snapshot(tmp_path / "nothing", nvml=_NoNVML(), processes=False, sample_s=0)
    assert empty["cpu"]["governors"] is None and empty["memory"]["total_bytes"] is None
    assert sc.warnings_for(empty) == []


def test_throttling_now_is_seen_between_two_reads(tmp_path):
    root = _tree(tmp_path, throttle=(1, 1))
    f = root / "sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count"

    def sleep(_):
        f.write_text("9\n")

    cpu = sc.cpu_state(root, sample_s=0.01, sleep=sleep)
    assert cpu["throttling_now"] is True
    assert any("thermal throttling right now" in w for w in sc.warnings_for({"cpu": cpu}))


class _NoNVML:
    def nvmlInit(self):
        raise RuntimeError("NVML Shared Library Not Found")


class _Util:
    def __init__(self, gpu):
        self.gpu = gpu


class FakeNVML:
    """Just the pynvml calls the check makes; values per GPU index."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, gpus):
        self.gpus = gpus
        self.shut = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return self.gpus[h]["name"].encode()

    def nvmlDeviceGetPersistenceMode(self, h):
        return self.gpus[h]["persistence"]

    def nvmlDeviceGetClockInfo(self, h, kind):
        assert kind == self.NVML_CLOCK_SM
        return self.gpus[h]["clock"]

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return 1980

    def nvmlDeviceGetTemperature(self, h, sensor):
        return self.gpus[h]["temp"]

    def nvmlDeviceGetPowerManagementLimit(self, h):
        return self.gpus[h]["limit_mw"]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h):
        return 700_000

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h):
        if self.gpus[h].get("reasons") is None:
            raise RuntimeError("Not Supported")
        return self.gpus[h]["reasons"]

    def nvmlDeviceGetUtilizationRates(self, h):
        return _Util(self.gpus[h]["util"])


def test_gpu_state_and_warnings_from_fake_nvml():
    nvml = FakeNVML([
        {"name": "NVIDIA H200", "persistence": 1, "clock": 1980, "temp": 40, "limit_mw": 700_000, "reasons": 0x1,
         "util": 0},
        {"name": "NVIDIA H200", "persistence": 0, "clock": 1100, "temp": 88, "limit_mw": 500_000, "reasons": 0x20,
         "util": 75},
    ])
    gpus = sc.gpu_state(nvml)
    assert nvml.shut
    assert gpus[0] == {"index": 0, "name": "NVIDIA H200", "persistence_mode": True, "sm_clock_mhz": 1980,
                       "sm_clock_max_mhz": 1980, "temperature_c": 40, "power_limit_w": 700.0,
                       "power_default_limit_w": 700.0, "throttle_reasons": 1, "utilization_pct": 0}
    w = sc.warnings_for({"gpus": gpus})
    assert not any(x.startswith("GPU 0") for x in w)  # idle-only reasons are benign
    text = " | ".join(w)
    for needle in ("GPU 1: persistence mode off", "GPU 1: temperature 88 C", "power limit 500 W below the default 700 W",
                   "clocks held down (NVML clock event reasons 0x20)", "GPU 1: 75% busy"):
        assert needle in text, needle


def test_gpu_state_unsupported_query_and_no_nvml():
    nvml = FakeNVML([{"name": "T4", "persistence": 1, "clock": 585, "temp": 30, "limit_mw": 700_000,
                      "reasons": None, "util": 0}])
    (g,) = sc.gpu_state(nvml)
    assert g["throttle_reasons"] is None
    assert sc.gpu_state(_NoNVML()) is None


def test_busy_processes_sees_a_spinning_child():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time\nprint('spin', flush=True)\nt=time.time()\n"
                              "while time.time()-t<20: pass"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "spin"  # spinning now (slow start on a loaded machine)
        busy = sc.busy_processes(sample_s=1.0, threshold_pct=2.0, limit=500)
    finally:
        child.kill()
        child.wait()
    assert busy is not None and any(p["pid"] == child.pid for p in busy)


def test_bench_env_check_exit_code_and_output(monkeypatch, tmp_path):
    import json

    from click.testing import CliRunner

    from harness.cli import cli

    noisy = _tree(tmp_path)
    monkeypatch.setattr(sc, "snapshot", lambda **kw: {"cpu": sc.cpu_state(noisy, sample_s=0),
                                                      "memory": sc.memory_state(noisy), "busy_processes": [],
                                                      "gpus": sc.gpu_state(_NoNVML())})
    res = CliRunner().invoke(cli, ["env", "--check"])
    assert res.exit_code == 1, res.output
    assert "warning: cpu governor powersave" in res.output and "load average  3.50 2.00 1.00 (2 CPUs)" in res.output
    res = CliRunner().invoke(cli, ["env", "--check", "--json"])
    assert res.exit_code == 1 and json.loads(res.output)["state"]["cpu"]["turbo"] is True
    quiet = _tree(tmp_path / "q", governor="performance", boost="0", throttle=(0, 0), load="0.1 0.1 0.1 1/1 1",
                  avail_kb=12_000_000, psi_cpu="some avg10=0.00 avg60=0 avg300=0 total=0\n")
    monkeypatch.setattr(sc, "snapshot", lambda **kw: {"cpu": sc.cpu_state(quiet, sample_s=0),
                                                      "memory": sc.memory_state(quiet), "busy_processes": [],
                                                      "gpus": None})
    res = CliRunner().invoke(cli, ["env", "--check"])
    assert res.exit_code == 0 and "quiet: nothing found" in res.output
