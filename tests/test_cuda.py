"""The ``cuda`` backend.

Without a GPU (CI): the availability logic, the device description parsers, NVML energy and
memory bookkeeping, the precision/int8 decisions, and the control flow of both sessions run
against fakes (a fake ``torch.cuda`` over CPU torch; a CPU onnxruntime dressed as the CUDA
EP). The ``gpu``-marked tests at the end need a real CUDA GPU and are skipped elsewhere
(``scripts/gpu_check.sh`` runs them together with the quant suite on ``--backend cuda``).
"""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from backends import cuda as C
from backends.base import UnsupportedCase
from tests.conftest import entry_points_dir

CPU_TORCH = {"installed": True, "version": "2.13.0+cpu", "cuda": None}
CUDA_TORCH = {"installed": True, "version": "2.5.1+cu124", "cuda": "12.4"}
CPU_ORT = {"installed": True, "version": "1.20.0", "providers": []}
GPU_ORT = {"installed": True, "version": "1.20.0", "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}
H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85 << 30, "uuid": "GPU-abc"}


def _has_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


# ----------------------------------------------------------------------------- availability

def test_torch_version_file_tells_cpu_and_cuda_builds():
    cpu = "__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\nhip: Optional[str] = None\n"
    cu = "__version__ = '2.5.1+cu124'\ndebug = False\ncuda: Optional[str] = '12.4'\nhip: Optional[str] = None\n"
    assert C.parse_torch_version_py(cpu) == {"installed": True, "version": "2.13.0+cpu", "cuda": None, "hip": None}
    assert C.parse_torch_version_py(cu)["cuda"] == "12.4"
    here = C.torch_build_info()
    assert here["installed"] == (importlib.util.find_spec("torch") is not None)


def test_availability_names_what_is_missing():
    av = C.availability_from([], CUDA_TORCH, GPU_ORT)
    assert not av.ok and av.reason.startswith("no NVIDIA GPU found")
    av = C.availability_from([H100], CPU_TORCH, CPU_ORT)
    assert not av.ok and "CPU-only build" in av.reason and "onnxruntime-gpu" in av.reason and "\n" not in av.reason
    av = C.availability_from([H100], CUDA_TORCH, CPU_ORT)
    assert av.ok and "H100" in av.reason and "torch" in av.reason
    assert C.runtime_availability_from("onnxruntime", [H100], CUDA_TORCH, GPU_ORT).ok
    assert not C.runtime_availability_from("onnxruntime", [H100], CUDA_TORCH, CPU_ORT).ok
    assert "unknown runtime" in C.runtime_availability_from("tensorflow", [H100], CUDA_TORCH, GPU_ORT).reason


def test_cuda_visible_devices_filters_and_orders():
    gpus = [{"index": 0, "uuid": "GPU-aaa"}, {"index": 1, "uuid": "GPU-bbb"}, {"index": 2, "uuid": "GPU-ccc"}]
    assert C.visible_gpus(gpus, None) == gpus
    assert C.visible_gpus(gpus, "") == []
    assert [g["index"] for g in C.visible_gpus(gpus, "2,0")] == [2, 0]
    assert [g["index"] for g in C.visible_gpus(gpus, "GPU-bbb")] == [1]
    assert [g["index"] for g in C.visible_gpus(gpus, "1,7,0")] == [1]  # CUDA stops at the first invalid one
    assert C.visible_gpus(gpus, "-1") == []


def test_backend_here_reports_unavailable_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom backends.cuda import CUDABackend\nb = CUDABackend()\nav = b.availability()\n"
            "print(av.ok)\nprint(av.reason)\nb.device_name()\nprint(sorted(m for m in ('torch', 'onnxruntime', "
            "'tensorflow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    ok, reason, heavy = out.stdout.splitlines()[:3]
    assert heavy == "[]", out.stdout
    if ok == "False":
        assert reason and len(reason) < 300


@pytest.fixture(scope="module")
def backend_eps(tmp_path_factory):
    """cuda and tpu registered through entry points for subprocesses (pyproject.toml does it for an
    installed bench; a duplicate registration is harmless)."""
    return entry_points_dir(tmp_path_factory.mktemp("eps"), "bench-hw-backends",
                            {"cuda": "backends.cuda:CUDABackend", "tpu": "backends.tpu:TPUBackend"})


@pytest.mark.skipif(C.CUDABackend().availability().ok, reason="a CUDA GPU is present here")
def test_cli_backend_cuda_exits_2_with_one_line(tmp_path, backend_eps):
    from tests.conftest import bench_env, run_bench

    proc = run_bench(["run", "--suite", "smoke", "--backend", "cuda", "--out", str(tmp_path)],
                     env=bench_env(extra_path=backend_eps), timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "backend 'cuda' is not available here" in lines[0], lines
    lst = run_bench(["list", "backends", "--json"], env=bench_env(extra_path=backend_eps), timeout=120)
    rows = {r["name"]: r for r in json.loads(lst.stdout)}
    assert rows["cuda"]["available"] is False and rows["cuda"]["reason"]
    assert rows["tpu"]["available"] is False and "TPU" in rows["tpu"]["reason"]
    assert rows["cpu"]["available"] is True and "tensorflow" in rows["cpu"]["runtimes"]


# ----------------------------------------------------------------------------- device description

class FakeNVML:
    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

    def __init__(self, energy_mj=1_000_000, power_mw=250_000, energy_ok=True, power_ok=True, mig=False,
                 uuids=("GPU-abc",), fail_energy_after=None):
        self.uuids = list(uuids)
        self.fail_energy_after = fail_energy_after  # the energy counter fails from this read on
        self.energy_reads = 0
        self.energy_mj = energy_mj
        self.power_mw = power_mw
        self.energy_ok = energy_ok
        self.power_ok = power_ok
        self.mig = mig

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("h", i)

    def nvmlDeviceGetHandleByUUID(self, u):
        if u not in self.uuids:
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return ("u", u)

    def nvmlDeviceGetCount(self):
        return len(self.uuids)

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h):
        return "GPU-abc"

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=85 << 30, used=3 << 30)

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return (9, 0)

    def nvmlDeviceGetMigMode(self, h):
        return [int(self.mig), int(self.mig)]

    def nvmlDeviceIsMigDeviceHandle(self, h):
        return self.mig

    def nvmlDeviceGetAttributes(self, h):
        return SimpleNamespace(multiprocessorCount=132)

    def nvmlDeviceGetClockInfo(self, h, which):
        return 1980 if which == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetMaxClockInfo(self, h, which):
        return 1980 if which == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetApplicationsClock(self, h, which):
        raise RuntimeError("Not Supported")

    def nvmlDeviceGetPowerManagementLimit(self, h):
        return 700_000

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h):
        return 700_000

    def nvmlDeviceGetPersistenceMode(self, h):
        return 1

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self.energy_reads += 1
        if self.fail_energy_after is not None and self.energy_reads > self.fail_energy_after:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        if not self.energy_ok:
            raise RuntimeError("Not Supported")
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, h):
        if not self.power_ok:
            raise RuntimeError("Not Supported")
        return self.power_mw

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        import os

        return [SimpleNamespace(pid=os.getpid(), usedGpuMemory=512 << 20), SimpleNamespace(pid=1, usedGpuMemory=1)]


def test_nvml_describe_and_merge():
    facts = C.nvml_describe(FakeNVML(), ("h", 0))
    assert facts["name"] == "NVIDIA H100 80GB HBM3" and facts["sm_count"] == 132
    assert facts["compute_capability"] == "9.0" and facts["cuda_driver_version"] == "12.4"
    assert facts["clocks"]["max_sm_mhz"] == 1980 and facts["clocks"]["applications_sm_mhz"] is None
    assert facts["power_limit_w"] == 700.0 and facts["mig_mode"] == "Disabled" and facts["persistence_mode"] is True
    d = C.describe_device(H100, facts, {"cudnn": 90100, "cuda_runtime": "12.4"}, CUDA_TORCH, GPU_ORT)
    for key in ("name", "sm_count", "memory_bytes", "driver_version", "cuda_runtime_version", "cudnn_version",
                "clocks", "power_limit_w", "mig_mode"):
        assert d[key] is not None, key
    assert d["cudnn_version"] == 90100
    json.dumps(d)


def test_nvidia_smi_fallback_parser():
    line = ("NVIDIA A100-SXM4-40GB, GPU-1234, 40960, 535.104.05, 8.0, 1410, 1215, 1410, 1215, 400.00, 400.00, "
            "Disabled, Enabled\n")
    (g,) = C.parse_smi_describe(line)
    assert g["name"] == "NVIDIA A100-SXM4-40GB" and g["memory_bytes"] == 40960 << 20
    assert g["compute_capability"] == "8.0" and g["clocks"]["max_sm_mhz"] == 1410 and g["power_limit_w"] == 400.0
    assert g["mig_mode"] == "Disabled" and g["persistence_mode"] is True
    (g,) = C.parse_smi_describe(line.replace("400.00, 400.00", "[N/A], [N/A]").replace("Disabled", "[N/A]"))
    assert g["power_limit_w"] is None and g["mig_mode"] is None


# ----------------------------------------------------------------------------- energy and memory

def _monitor(nvml, index=0):
    return C.DeviceMonitor(index, nvml.uuids[index] if index < len(nvml.uuids) else None, nvml=nvml)


def test_energy_from_the_total_energy_counter():
    nvml = FakeNVML(energy_mj=5_000_000)
    m = _monitor(nvml)
    m.energy.start()
    nvml.energy_mj += 12_500  # 12.5 J over the window
    r = m.energy.stop(inferences=250)
    assert r["method"] == "nvml_total_energy_counter"
    assert r["energy_j"] == pytest.approx(12.5) and r["joules_per_inference"] == pytest.approx(0.05)


def test_energy_from_power_sampled_every_100ms_or_faster():
    nvml = FakeNVML(energy_ok=False, power_mw=80_000)
    meter = C.EnergyMeter(nvml, ("h", 0), interval_s=0.5)  # asked for 500 ms: capped at 100 ms
    meter._interval = 0.01
    meter.start()
    time.sleep(0.25)
    r = meter.stop(inferences=10)
    assert r["method"].startswith("nvml_power_sampled") and r["power_samples"] >= 5
    assert r["avg_power_w"] == pytest.approx(80.0, rel=0.05)
    assert r["energy_j"] == pytest.approx(80.0 * r["duration_s"], rel=0.05)
    assert C.EnergyMeter(nvml, ("h", 0), interval_s=5)._interval == 0.1


def test_energy_unavailable_is_null_with_the_reason():
    r = C.EnergyMeter(FakeNVML(energy_ok=False, power_ok=False), ("h", 0))
    r.start()
    out = r.stop(inferences=1)
    assert out["energy_j"] is None and "neither energy nor power" in out["reason"]
    mig = C.DeviceMonitor(0, nvml=FakeNVML(mig=True))
    ok, why = C.NvmlEnergyMeter(mig, C._Window()).available()
    assert not ok and "MIG" in why
    no_nvml = C.DeviceMonitor.__new__(C.DeviceMonitor)
    no_nvml.nvml, no_nvml.handle, no_nvml.reason = None, None, "pynvml is not installed (pip install nvidia-ml-py)"
    no_nvml.energy = C.EnergyMeter(None, None, unavailable=no_nvml.reason)
    assert C.NvmlEnergyMeter(no_nvml, C._Window()).available() == (False, no_nvml.reason)


def test_nvml_meter_speaks_the_harness_protocol_and_marks_the_window():
    from harness.measure.energy import measure_energy

    nvml = FakeNVML()
    window = C._Window()
    meter = C.NvmlEnergyMeter(_monitor(nvml), window)
    window.book("first", 4)  # the first call is apart; then warm-up counts until the window is marked
    window.book("warm-up", 4)
    assert window.calls == 1 and window.scope.startswith("every call")

    def measured():
        for _ in range(10):
            window.book("measured", 4)
            nvml.energy_mj += 100
        return SimpleNamespace(iterations=10, duration_s=0.5)

    _, energy = measure_energy(meter, measured, inferences_of=lambda r: r.iterations * 4)
    assert energy["available"] and energy["source"] == "nvml"
    assert energy["joules"] == pytest.approx(1.0) and energy["joules_per_inference"] == pytest.approx(0.025)
    assert energy["avg_watts"] == pytest.approx(2.0)
    window.book("accuracy pass", 4)  # after stop(): not counted
    assert window.calls == 10 and window.items == ["measured"] * 10 and window.scope == "the measured window"
    mem = _monitor(nvml).memory()
    assert mem["nvml_process_used_bytes"] == 512 << 20 and mem["nvml_device_used_bytes"] == 3 << 30


# ----------------------------------------------------------------------------- precision decisions

def test_onnxruntime_precision_plan():
    qdq = {"mode": "qdq", "ops": ["QuantizeLinear"]}
    integer = {"mode": "integer", "ops": ["MatMulInteger"]}
    assert C.plan_ort_precision("fp32", None, False, {})["allow_cpu"] is False  # CPU fallback refused by default
    assert C.plan_ort_precision("fp32", None, False, {"allow_cpu_fallback": "1"})["allow_cpu"] is True
    assert "TensorRT" in C.plan_ort_precision("int8", qdq, True, {})["mode"]
    with pytest.raises(UnsupportedCase, match="no int8 kernels"):
        C.plan_ort_precision("int8", qdq, False, {})
    assert "emulated" in C.plan_ort_precision("int8", qdq, False, {"allow_qdq_emulation": "1"})["mode"]
    assert C.plan_ort_precision("int8", integer, False, {"allow_cpu_fallback": "1"})["allow_cpu"] is False
    with pytest.raises(UnsupportedCase, match="no quantized ops"):
        C.plan_ort_precision("int8", None, True, {})
    with pytest.raises(UnsupportedCase, match="bf16"):
        C.plan_ort_precision("bf16", None, True, {})


def test_torch_int8_path_needs_torchao():
    path = C.torch_int8_path()
    if importlib.util.find_spec("torchao") is None:
        assert path is None
    else:
        assert path["library"] == "torchao" and "weight-only" in path["mode"]


# ----------------------------------------------------------------------------- torch session, fake CUDA

@pytest.fixture(scope="module")
def torch_mlp():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    return SimpleNamespace(torch=torch, module=m, x=x, ref=ref,
                           inputs=[{"name": "input", "shape": [None, 16], "dtype": "float32"}])


def _torch_session(t, precision="fp32", options=None, nvml=None, cuda=None):
    """A torch session on a fake GPU; returns it with the fake (placement mode active while it
    is built; callers run it inside ``fake.mode()`` too)."""
    import copy

    from tests.fake_cuda import FAKE_DEVICE, FakeCuda

    fake = cuda or FakeCuda()
    with fake.mode():
        s = C.TorchCudaSession(copy.deepcopy(t.module), torch=t.torch, precision=precision, batch=8,
                               inputs_meta=t.inputs, options=options or {}, cuda=fake, device=FAKE_DEVICE,
                               monitor=_monitor(nvml or FakeNVML()))
    s.fake = fake
    return s


def test_torch_session_control_flow_with_a_fake_cuda(torch_mlp):
    from harness.measure.energy import measure_energy

    t = torch_mlp
    s = _torch_session(t)
    with s.fake.mode():
        first = s.run({"input": t.x})[0]
        np.testing.assert_allclose(first, t.ref, atol=1e-6)
        for _ in range(3):  # warm-up: counted only until the meter marks the measured window
            s.run({"input": t.x})

        def measured():
            for _ in range(5):
                s.run({"input": t.x})
                s.synchronize()
            return SimpleNamespace(iterations=5, duration_s=0.1)

        nvml = s._monitor.nvml
        _, energy = measure_energy(s.energy_meter(), measured, inferences_of=lambda r: r.iterations * 8)
        s.run({"input": t.x})  # the accuracy pass: outside the window
        tm = s.timings()
    assert tm["method"] == "cuda_events" and tm["scope"] == "the measured window"
    assert tm["calls"] == 5 and tm["inferences"] == 40
    for part in ("h2d", "compute", "d2h", "total"):
        assert tm["device_ns"][part]["n"] == 5 and tm["device_ns"][part]["min"] >= 0
    assert tm["device_ns"]["total"]["p50"] >= tm["device_ns"]["compute"]["p50"]
    assert tm["first_call_device_ns"]["total"] > 0
    assert tm["memory"]["torch_peak_allocated_bytes"] == 123 and tm["memory"]["nvml_process_used_bytes"] == 512 << 20
    assert energy["available"] and tm["energy_detail"]["method"] == "nvml_total_energy_counter"
    assert s.info["mode"] == "eager" and s.info["timing"].startswith("cuda_events") and s.info["cudnn_benchmark"]
    assert s.info["device_properties"]["sm_count"] == 4
    json.dumps(tm)
    json.dumps(s.info)
    s.close()
    assert s.timings() == tm  # the harness reads timings() after close()
    del nvml


def test_torch_session_bf16_cast_is_recorded(torch_mlp):
    t = torch_mlp
    s = _torch_session(t, precision="bf16")
    with s.fake.mode():
        out = s.run({"input": t.x})[0]
    assert out.dtype == np.float32 and s.info["dtype"] == "bfloat16" and s.info["precision_mode"] == "cast"
    assert np.abs(out - t.ref).max() < 0.1 and not np.allclose(out, t.ref, atol=1e-6)
    with pytest.raises(UnsupportedCase, match="int8"):
        _torch_session(t, precision="int8")
    with pytest.raises(UnsupportedCase, match="amp"):
        _torch_session(t, options={"amp": "sometimes"})


def test_torch_session_without_nvml_keeps_every_call_after_the_first(torch_mlp):
    t = torch_mlp
    s = _torch_session(t, nvml=FakeNVML(energy_ok=False, power_ok=False))
    assert s.energy_meter().available()[0] is False
    with s.fake.mode():
        for _ in range(4):
            s.run({"input": t.x})
        tm = s.timings()
    assert tm["calls"] == 3 and tm["scope"].startswith("every call after the first")
    assert tm["energy_detail"]["energy_j"] is None


# ----------------------------------------------------------------------------- issue 17: timing, device, fakes

def _run_case_like(s, t, n=300):
    """What harness.run.case does per step: run(), then synchronize() only if the session overrides it."""
    from backends.base import Session

    needs_sync = type(s).synchronize is not Session.synchronize
    with s.fake.mode():
        for _ in range(n):
            s.run({"input": t.x})
            if needs_sync:
                s.synchronize()
    return needs_sync


def test_events_are_created_once_and_reused(torch_mlp):
    # bug: four new torch.cuda.Events per timed call (the instrument inside the timed region)
    t = torch_mlp
    s = _torch_session(t)
    before = s.fake.events_created
    assert before == C._EVENT_RING * 4  # created at prepare
    _run_case_like(s, t, n=C._EVENT_RING + 50)  # the ring wraps: slots are read and reused
    assert s.fake.events_created == before
    with s.fake.mode():
        tm = s.timings()
    assert tm["calls"] == C._EVENT_RING + 49 and tm["device_ns"]["total"]["n"] == C._EVENT_RING + 49


def test_no_synchronize_after_the_blocking_copy(torch_mlp):
    # bug: torch.cuda.synchronize() after .cpu(), which had already synchronised, in every step
    t = torch_mlp
    s = _torch_session(t)
    syncs = s.fake.syncs
    assert _run_case_like(s, t, n=20) is False  # the harness does not call synchronize()
    assert s.fake.syncs == syncs
    ops = s.fake.ops_on(0)
    assert "device_synchronize" not in ops[ops.index("h2d"):]


def test_event_order_record_synchronize_elapsed_per_device(torch_mlp):
    t = torch_mlp
    s = _torch_session(t)
    log = s.fake.log[0]
    start = len(log)
    _run_case_like(s, t, n=3)
    call = [w for w, _ in log[start:]]
    # one call: e0 H2D e1 kernels e2 D2H e3, all on the default stream of device 0
    first = call[:call.index("event_record", call.index("d2h"))+1]
    assert first[0] == "event_record" and first[1] == "h2d" and first[2] == "event_record"
    assert all(w.startswith("kernel:") for w in first[3:first.index("event_record", 3)])
    assert first[-2:] == ["d2h", "event_record"]
    assert {st for _, st in log[start:]} == {"default:0"}
    with s.fake.mode():
        s.timings()
    tail = [w for w, _ in log[start:]]
    reads = [i for i, w in enumerate(tail) if w == "elapsed_time"]
    assert reads and all("event_synchronize" in tail[:i] for i in reads)
    # the fake refuses to read an event nobody waited for
    from tests.fake_cuda import FakeCuda, NotReady

    f = FakeCuda()
    a, b = f.Event(enable_timing=True), f.Event(enable_timing=True)
    a.record()
    f.current_stream().enqueue("kernel:x", 1000)
    b.record()
    with pytest.raises(NotReady):
        a.elapsed_time(b)
    b.synchronize()
    assert a.elapsed_time(b) == pytest.approx(0.001)


def test_device_times_come_from_the_device_clock(torch_mlp):
    t = torch_mlp
    s = _torch_session(t)
    _run_case_like(s, t, n=10)
    with s.fake.mode():
        tm = s.timings()
    d = tm["device_ns"]
    nbytes_in = t.x.nbytes
    assert d["h2d"]["p50"] == pytest.approx(int(nbytes_in / 10.0))  # the fake's copy rate, not host time
    assert d["compute"]["p50"] == pytest.approx(3 * 5_000)  # linear, relu, linear: 3 kernels of 5 us
    assert d["h2d"]["max"] == d["h2d"]["min"] and d["compute"]["max"] == d["compute"]["min"]
    assert d["total"]["p50"] == pytest.approx(d["h2d"]["p50"] + d["compute"]["p50"] + d["d2h"]["p50"])


def test_timing_overhead_is_measured_on_a_null_kernel(torch_mlp):
    t = torch_mlp
    s = _torch_session(t)
    o = s.info["timing_overhead"]
    assert o["calls"] == C._NULL_KERNEL_CALLS and o["device_null_ns"] == pytest.approx(5_000)  # one fill kernel
    assert o["host_null_ns"] > 0 and o["host_null_with_events_ns"] > 0
    assert o["events_overhead_ns"] == pytest.approx(o["host_null_with_events_ns"] - o["host_null_ns"])
    with s.fake.mode():
        tm = s.timings()
    assert tm["timing_overhead"] == o and tm["calls"] == 0  # the null-kernel calls are in no window
    assert "end to end" in s.info["timing"] and "latency_ns" in tm["end_to_end"]


def test_device_option_sets_the_device_before_events_streams_and_graphs(torch_mlp):
    # bug: --option device=1 moved the model but events, sync, graphs, bf16 query referred to GPU 0
    from tests.fake_cuda import FakeCuda

    t = torch_mlp
    fake = FakeCuda(2)
    s = _torch_session(t, options={"device": "1"}, cuda=fake)
    first_set = fake.calls.index(("set_device", 1))
    assert first_set == 0
    assert all(dev == 1 for what, dev in fake.calls if what in ("Event", "Stream", "CUDAGraph", "is_bf16_supported"))
    _run_case_like(s, t, n=5)
    assert fake.log[0] == [] and "h2d" in fake.ops_on(1) and "event_record" in fake.ops_on(1)
    assert s.info["device_index"] == 1
    fake2 = FakeCuda(2)
    with fake2.mode():
        g = C.TorchCudaSession(__import__("copy").deepcopy(t.module), torch=t.torch, precision="fp32", batch=8,
                               inputs_meta=t.inputs, options={"device": 1, "cuda_graphs": 1}, cuda=fake2,
                               device=__import__("tests.fake_cuda", fromlist=["x"]).FAKE_DEVICE,
                               monitor=_monitor(FakeNVML()))
    assert [c for c in fake2.calls if c[0] in ("Stream", "CUDAGraph", "capture")] == \
        [("Stream", 1), ("CUDAGraph", 1), ("capture", 1)]
    assert fake2.log[0] == [] and g._graph is not None


def test_run_from_another_thread_stays_on_the_selected_device(torch_mlp):
    """The load generator calls run() from its worker threads; CUDA's current device is per
    thread, so device N must be made current there too."""
    import threading

    from tests.fake_cuda import FakeCuda

    t = torch_mlp
    fake = FakeCuda(2)
    s = _torch_session(t, options={"device": 1}, cuda=fake)
    errors = []

    def worker():
        try:
            with fake.mode():
                for _ in range(3):
                    s.run({"input": t.x})
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert errors == [] and fake.log[0] == [] and fake.ops_on(1).count("d2h") == 3
    assert fake.calls.count(("set_device", 1)) == 2  # at prepare, and once in the worker thread


def test_bf16_is_asked_of_the_selected_device(torch_mlp):
    from tests.fake_cuda import FakeCuda

    t = torch_mlp
    with pytest.raises(UnsupportedCase, match="GPU 1 has no bf16"):
        _torch_session(t, precision="bf16", options={"device": 1}, cuda=FakeCuda(2, bf16=(True, False)))
    s = _torch_session(t, precision="bf16", options={"device": 0}, cuda=FakeCuda(2, bf16=(True, False)))
    assert s.info["dtype"] == "bfloat16"


def test_the_fake_catches_a_missing_copy(torch_mlp):
    """The fakes can fail: a session that forgets the H2D or the D2H copy breaks on them."""
    t = torch_mlp

    class NoInputCopy(C.TorchCudaSession):
        def run(self, inputs):
            xs = [self._torch.from_numpy(inputs["input"])]  # forgot .to(device)
            return [o.cpu().numpy() for o in self._forward(xs)]

    class NoOutputCopy(C.TorchCudaSession):
        def run(self, inputs):
            xs = [self._torch.from_numpy(inputs["input"]).to(self._dev)]
            return [o.numpy() for o in self._forward(xs)]  # forgot .cpu()

    for cls, err in ((NoInputCopy, "same device"), (NoOutputCopy, "numpy")):
        s = _torch_session(t)
        s.__class__ = cls
        with s.fake.mode(), pytest.raises((RuntimeError, TypeError), match=err):
            s.run({"input": t.x})


def test_nvml_is_opened_by_the_devices_uuid():
    # bug: NVML opened by index; CUDA and NVML may number GPUs differently
    nvml = FakeNVML(uuids=("GPU-aaa", "GPU-bbb"))
    m = C.DeviceMonitor(1, "GPU-bbb", nvml=nvml)
    assert m.handle == ("u", "GPU-bbb") and m.opened_by == "uuid"
    m = C.DeviceMonitor(1, None, nvml=nvml)  # unknown UUID, two GPUs: not guessed by index
    assert m.handle is None and "UUID" in m.reason and m.memory()["nvml_device_used_bytes"] is None
    one = C.DeviceMonitor(0, None, nvml=FakeNVML(uuids=("GPU-aaa",)))
    assert one.handle == ("h", 0) and one.opened_by == "the only GPU"
    from tests.fake_cuda import FakeCuda

    fc = FakeCuda(2)
    assert C.torch_device_uuid(fc, 1) == "GPU-fake-uuid-1"
    assert C.format_cuda_uuid(bytes(range(16))) == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"


def test_driver_uuid_through_a_fake_libcuda():
    import ctypes

    class Lib:
        def cuInit(self, flags):
            return 0

        def cuDeviceGet(self, ref, i):
            if i > 1:
                return 101  # CUDA_ERROR_INVALID_DEVICE
            ctypes.cast(ref, ctypes.POINTER(ctypes.c_int)).contents.value = i
            return 0

        def cuDeviceGetUuid(self, buf, dev):
            ctypes.memmove(buf, bytes([dev.value]) * 16, 16)
            return 0

    assert C.driver_device_uuid(1, Lib()) == ("GPU-01010101-0101-0101-0101-010101010101", None)
    uuid, why = C.driver_device_uuid(5, Lib())
    assert uuid is None and "no CUDA device 5" in why


def test_device_option_names_that_gpu_and_is_validated():
    from harness.errors import BenchError

    b = C.CUDABackend()
    b.torch_info = lambda: CPU_TORCH  # no torch probe: the name comes from the GPU list
    b.gpus = lambda: [{"index": 0, "name": "NVIDIA A100-SXM4-40GB"}, {"index": 1, "name": "NVIDIA H100 80GB HBM3"}]
    b.check_options({"device": "1"})
    assert b.device_name() == "NVIDIA H100 80GB HBM3"
    for bad in ({"device": "2"}, {"device": "x"}, {"device": "-1"}, {"allow_cpu_fallback": "maybe"}):
        with pytest.raises(BenchError) as e:
            b.check_options(bad)
        assert "\n" not in str(e.value)


def test_a_failed_nvml_read_at_stop_keeps_the_latency(torch_mlp):
    # bug: the energy counter failing when the meter stops failed the whole case
    from harness.measure.energy import measure_energy

    t = torch_mlp
    s = _torch_session(t, nvml=FakeNVML(fail_energy_after=2))  # available() and start() read; stop() fails
    with s.fake.mode():
        s.run({"input": t.x})  # the first call, reported apart
        res, energy = measure_energy(s.energy_meter(), lambda: (s.run({"input": t.x}),
                                                               SimpleNamespace(iterations=1, duration_s=0.1))[1],
                                     inferences_of=lambda r: 8)
        tm = s.timings()
    assert res.iterations == 1 and energy["available"] is False and "GPU_IS_LOST" in energy["reason"]
    assert "GPU_IS_LOST" in tm["energy_detail"]["reason"] and tm["calls"] == 1


# ----------------------------------------------------------------------------- onnxruntime session, CPU as "CUDA"

class FakeDeviceValue:
    """An ``OrtValue`` in "device" memory: its data is not a host array (``numpy()`` is the
    D2H copy and is logged); ``update_inplace`` is the H2D copy and, like onnxruntime's,
    refuses an array of another shape."""

    def __init__(self, fake, shape, dtype, device, device_id):
        self.fake, self.shape, self.dtype = fake, list(shape), np.dtype(dtype)
        self.device, self.device_id = device, device_id
        self._mem = np.zeros(self.shape, self.dtype)

    def update_inplace(self, a):
        if list(a.shape) != self.shape or a.dtype != self.dtype:
            raise RuntimeError(f"update_inplace: array {list(a.shape)} {a.dtype} does not fit the buffer "
                               f"{self.shape} {self.dtype}")
        self.fake.log.append(("h2d", self.device_id))
        self._mem[...] = a

    def device_name(self):
        return self.device

    def numpy(self):
        self.fake.log.append(("d2h", self.device_id))
        return self._mem.copy()


class FakeOrtCuda:
    """onnxruntime's CUDA build as bench uses it, over the CPU onnxruntime: the graph computes on
    the CPU, but buffers are "device" values, the IO binding checks what is bound where, the
    order H2D -> run -> synchronize_outputs -> D2H is logged per device, and the profile says
    which nodes "ran" on the CUDA EP and which (``cpu_ops``) fell back to the CPU."""

    def __init__(self, ort, cpu_ops=()):
        self._ort = ort
        self.SessionOptions = ort.SessionOptions
        self.GraphOptimizationLevel = ort.GraphOptimizationLevel
        self.__version__ = ort.__version__
        self.created_with = None
        self.cpu_ops = set(cpu_ops)
        self.log: list = []
        fake = self

        class OrtValue:
            @staticmethod
            def ortvalue_from_shape_and_type(shape, dtype, device="cpu", device_id=0):
                return FakeDeviceValue(fake, shape, dtype, device, device_id)

        class Binding:
            def __init__(self, sess):
                self.sess, self.inputs, self.outputs, self.result, self.synced = sess, {}, [], None, False

            def bind_ortvalue_input(self, name, v):
                assert isinstance(v, FakeDeviceValue) and v.device == "cuda", "input not in device memory"
                self.inputs[name] = v

            def bind_output(self, name, device_type="cpu", device_id=0):
                assert device_type == "cuda", "output bound to host memory"
                self.outputs.append((name, device_id))

            def synchronize_outputs(self):
                fake.log.append(("synchronize_outputs", self.outputs[0][1]))
                self.synced = True

            def copy_outputs_to_cpu(self):
                assert self.synced, "outputs read before synchronize_outputs()"
                fake.log.append(("d2h", self.outputs[0][1]))
                return [r.copy() for r in self.result]

        class Session:
            def __init__(self, path, so, providers):
                fake.created_with = providers
                self._s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

            def get_providers(self):
                return ["CUDAExecutionProvider", "CPUExecutionProvider"]

            def io_binding(self):
                return Binding(self)

            def run_with_iobinding(self, b):
                feeds = {n: v._mem for n, v in b.inputs.items()}
                b.result = self._s.run([n for n, _ in b.outputs], feeds)
                b.synced = False
                fake.log.append(("run", b.outputs[0][1]))

            def end_profiling(self):
                path = self._s.end_profiling()
                events = json.loads(Path(path).read_text())
                for e in events:
                    args = e.get("args") or {}
                    if e.get("cat") == "Node" and "provider" in args:
                        args["provider"] = ("CPUExecutionProvider" if args.get("op_name") in fake.cpu_ops
                                            else "CUDAExecutionProvider")
                Path(path).write_text(json.dumps(events))
                return path

            def __getattr__(self, name):
                return getattr(self._s, name)

        self.OrtValue = OrtValue
        self.InferenceSession = Session

    def get_available_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _export(t, p, dynamic=None):
    t.torch.onnx.export(t.module, (t.torch.from_numpy(t.x[:1]),), str(p), input_names=["input"],
                        output_names=["output"], dynamic_axes=dynamic or {"input": {0: "b"}, "output": {0: "b"}},
                        opset_version=17, dynamo=False)
    return p


def _ort_session(path, fake, t, options=None, inputs=None, batch=8):
    return C.OrtCudaSession(str(path), ort=fake, precision="fp32", batch=batch, threads=1,
                            inputs_meta=inputs or t.inputs, options=options or {}, quantization=None,
                            monitor=_monitor(FakeNVML()))


def test_ort_session_io_binding_flow_with_a_fake_cuda_ep(tmp_path, torch_mlp):
    ort = pytest.importorskip("onnxruntime")
    t = torch_mlp
    p = _export(t, tmp_path / "m.onnx")
    fake = FakeOrtCuda(ort)
    s = _ort_session(p, fake, t)
    assert [x if isinstance(x, str) else x[0] for x in fake.created_with] == ["CUDAExecutionProvider",
                                                                              "CPUExecutionProvider"]
    for _ in range(4):
        np.testing.assert_allclose(s.run({"input": t.x})[0], t.ref, atol=1e-5)
    # prepare: zeros in, one profiled run; then each call: H2D -> run -> synchronize -> D2H
    assert fake.log[:3] == [("h2d", 0), ("run", 0), ("synchronize_outputs", 0)]
    assert fake.log[3:7] == [("h2d", 0), ("run", 0), ("synchronize_outputs", 0), ("d2h", 0)]
    tm = s.timings()
    assert tm["method"] == "host_synchronized" and tm["calls"] == 3 and tm["device_ns"]["compute"]["n"] == 3
    assert s.info["io_binding"] and s.info["cpu_ep_fallback"].startswith("none") and not s.info["tensorrt"]
    assert s.info["placement"]["by_provider"] == {"CUDAExecutionProvider": 2} and s.info["input_shapes"] == \
        {"input": [8, 16]}
    s.close()
    assert s.timings()["calls"] == 3
    with pytest.raises(UnsupportedCase, match="no int8 kernels"):
        C.OrtCudaSession(str(p), ort=fake, precision="int8", batch=8, threads=1, inputs_meta=t.inputs, options={},
                         quantization={"mode": "qdq", "ops": []})


def test_ort_device_option_reaches_the_buffers_and_the_provider(tmp_path, torch_mlp):
    ort = pytest.importorskip("onnxruntime")
    t = torch_mlp
    fake = FakeOrtCuda(ort)
    s = _ort_session(_export(t, tmp_path / "m.onnx"), fake, t, options={"device": "1"})
    s.run({"input": t.x})
    assert {d for _, d in fake.log} == {1} and dict(fake.created_with[0][1])["device_id"] == 1


def test_ort_buffers_take_the_resolved_input_shapes(tmp_path, torch_mlp):
    # bug: every symbolic dimension became the batch size ([batch, batch] for a [b, seq] input)
    ort = pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("ReduceMean", ["input"], ["output"], keepdims=0, axes=[1])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", "seq"])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b"])])
    p = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    x = np.arange(8 * 7, dtype=np.float32).reshape(8, 7)
    inputs = [{"name": "input", "shape": [None, 7], "dtype": "float32"}]  # seq resolved to 7 (--input-shape)
    s = _ort_session(p, FakeOrtCuda(ort), None, inputs=inputs)
    np.testing.assert_allclose(s.run({"input": x})[0], x.mean(axis=1), rtol=1e-6)
    assert s.info["input_shapes"] == {"input": [8, 7]}
    assert C.resolved_input_shapes([{"name": "a", "shape": ["b", 3, 7]}], 4) == {"a": [4, 3, 7]}
    with pytest.raises(UnsupportedCase, match="unresolved dimension"):
        C.resolved_input_shapes([{"name": "a", "shape": [None, None]}], 4)


def test_ort_cpu_fallback_is_refused_unless_allowed_and_recorded(tmp_path, torch_mlp):
    # bug: fp32/fp16 sessions allowed silent CPU fallback; only "allowed" was recorded
    ort = pytest.importorskip("onnxruntime")
    t = torch_mlp
    p = _export(t, tmp_path / "m.onnx")
    # onnxruntime fuses Gemm+Relu (FusedGemm); the last Gemm "falls back" to the CPU in this fake
    with pytest.raises(UnsupportedCase, match=r"1 node\(s\) ran on the CPU \(CPU ops: Gemm x1\).*allow_cpu_fallback"):
        _ort_session(p, FakeOrtCuda(ort, cpu_ops={"Gemm"}), t)
    s = _ort_session(p, FakeOrtCuda(ort, cpu_ops={"Gemm"}), t, options={"allow_cpu_fallback": "1"})
    pl = s.info["placement"]
    assert pl["by_provider"] == {"CUDAExecutionProvider": 1, "CPUExecutionProvider": 1}
    assert [n["op"] for n in pl["cpu_nodes"]] == ["Gemm"] and "Gemm x1" in s.info["cpu_ep_fallback"]
    np.testing.assert_allclose(s.run({"input": t.x})[0], t.ref, atol=1e-5)


def test_ort_profile_parser_reads_node_events(tmp_path):
    events = [{"cat": "Session", "name": "model_run"},
              {"cat": "Node", "name": "Conv_0_kernel_time", "args": {"op_name": "Conv", "provider": "CUDAExecutionProvider"}},
              {"cat": "Node", "name": "Conv_0_fence_before", "args": {}},
              {"cat": "Node", "name": "Shape_1_kernel_time", "args": {"op_name": "Shape", "provider": "CPUExecutionProvider"}},
              {"cat": "Node", "name": "Shape_1_kernel_time", "args": {"op_name": "Shape", "provider": "CPUExecutionProvider"}}]
    f = tmp_path / "p.json"
    f.write_text(json.dumps(events))
    pl = C.parse_ort_profile(str(f))
    assert pl["by_provider"] == {"CUDAExecutionProvider": 1, "CPUExecutionProvider": 1}
    assert pl["cpu_nodes"] == [{"name": "Shape_1", "op": "Shape"}]
    assert C.parse_ort_profile(str(tmp_path / "missing.json"))["error"]


# ----------------------------------------------------------------------------- real GPU

@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU and a CUDA build of torch")
@pytest.mark.parametrize("options", [{}, {"cuda_graphs": "1"}, {"amp": "autocast"}])
def test_gpu_torch_session_real_events(torch_mlp, options):
    t = torch_mlp
    import copy

    s = C.TorchCudaSession(copy.deepcopy(t.module), torch=t.torch, precision="fp16" if options.get("amp") else "fp32",
                           batch=8, inputs_meta=t.inputs, options=options,
                           monitor=C.DeviceMonitor(0, C.torch_device_uuid(t.torch.cuda, 0)))
    for _ in range(5):
        out = s.run({"input": t.x})[0]
    np.testing.assert_allclose(out, t.ref, atol=1e-2 if options.get("amp") else 1e-5)
    tm = s.timings()
    assert tm["device_ns"]["compute"]["n"] == 4 and tm["device_ns"]["total"]["min"] > 0
    assert tm["memory"]["torch_peak_allocated_bytes"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU and a CUDA build of torch")
def test_gpu_event_ring_wraps_and_device_time_fits_inside_end_to_end(torch_mlp):
    import copy

    t = torch_mlp
    s = C.TorchCudaSession(copy.deepcopy(t.module), torch=t.torch, precision="fp32", batch=8, inputs_meta=t.inputs,
                           options={}, monitor=None)
    o = s.info["timing_overhead"]
    assert o["device_null_ns"] > 0 and o["host_null_ns"] > 0 and o["events_overhead_ns"] is not None
    host = []
    for _ in range(C._EVENT_RING + 100):
        t0 = time.perf_counter_ns()
        s.run({"input": t.x})
        host.append(time.perf_counter_ns() - t0)
    tm = s.timings()
    assert tm["device_ns"]["total"]["n"] == C._EVENT_RING + 99
    assert tm["device_ns"]["total"]["p50"] <= float(np.percentile(host[1:], 50))  # device time inside end to end
    for part in ("h2d", "compute", "d2h"):
        assert tm["device_ns"][part]["min"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU and a CUDA build of torch")
def test_gpu_uuid_from_torch_and_the_driver_agree_and_open_nvml():
    import torch

    u = C.torch_device_uuid(torch.cuda, 0)
    drv, why = C.driver_device_uuid(0)
    assert u and drv == u, (u, drv, why)
    m = C.DeviceMonitor(0, u)
    if m.nvml is not None:
        assert m.opened_by == "uuid" and m.memory()["nvml_device_used_bytes"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda() or __import__("torch").cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_gpu_device_1_runs_everything_on_device_1(torch_mlp):
    import copy

    t = torch_mlp
    s = C.TorchCudaSession(copy.deepcopy(t.module), torch=t.torch, precision="fp32", batch=8, inputs_meta=t.inputs,
                           options={"device": 1}, monitor=C.DeviceMonitor(1, C.torch_device_uuid(t.torch.cuda, 1)))
    for _ in range(5):
        s.run({"input": t.x})
    assert t.torch.cuda.current_device() == 1 and s.timings()["device_ns"]["total"]["n"] == 4


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU and a CUDA build of torch")
def test_gpu_backend_describes_the_device():
    b = C.CUDABackend()
    assert b.availability().ok, b.availability().reason
    d = b.describe()
    for key in ("name", "memory_bytes", "driver_version", "cuda_runtime_version", "sm_count"):
        assert d.get(key), (key, d)


def _ort_has_cuda() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.gpu
@pytest.mark.skipif(not (_has_cuda() and _ort_has_cuda()), reason="needs a CUDA GPU and onnxruntime-gpu")
def test_gpu_ort_session_io_binding(tmp_path, torch_mlp):
    import onnxruntime as ort

    t = torch_mlp
    p = tmp_path / "m.onnx"
    t.torch.onnx.export(t.module, (t.torch.from_numpy(t.x[:1]),), str(p), input_names=["input"],
                        output_names=["output"], dynamic_axes={"input": {0: "b"}, "output": {0: "b"}},
                        opset_version=17, dynamo=False)
    s = C.OrtCudaSession(str(p), ort=ort, precision="fp32", batch=8, threads=1, inputs_meta=t.inputs,
                         options={"tensorrt": "0"}, quantization=None,
                         monitor=C.DeviceMonitor(0, C.driver_device_uuid(0)[0]))
    for _ in range(5):
        out = s.run({"input": t.x})[0]
    np.testing.assert_allclose(out, t.ref, atol=1e-4)
    assert "CUDAExecutionProvider" in s.info["providers"]
    assert s.info["placement"]["cpu_nodes"] == [] and s.info["placement"]["by_provider"].get("CUDAExecutionProvider")
    assert s.timings()["device_ns"]["compute"]["n"] == 4
