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

    def __init__(self, energy_mj=1_000_000, power_mw=250_000, energy_ok=True, power_ok=True, mig=False):
        self.energy_mj = energy_mj
        self.power_mw = power_mw
        self.energy_ok = energy_ok
        self.power_ok = power_ok
        self.mig = mig

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("h", i)

    def nvmlDeviceGetHandleByUUID(self, u):
        return ("u", u)

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

def _monitor(nvml):
    return C.DeviceMonitor(0, nvml=nvml)


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
    from harness.energy import measure_energy

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
    assert C.plan_ort_precision("fp32", None, False, {})["strict"] is False
    assert C.plan_ort_precision("fp32", None, False, {"cpu_fallback": "0"})["strict"] is True
    assert "TensorRT" in C.plan_ort_precision("int8", qdq, True, {})["mode"]
    with pytest.raises(UnsupportedCase, match="no int8 kernels"):
        C.plan_ort_precision("int8", qdq, False, {})
    assert "emulated" in C.plan_ort_precision("int8", qdq, False, {"allow_qdq_emulation": "1"})["mode"]
    assert C.plan_ort_precision("int8", integer, False, {})["strict"] is True
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

class FakeEvent:
    def __init__(self, enable_timing=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter_ns()

    def elapsed_time(self, other):
        return (other.t - self.t) / 1e6  # milliseconds, as torch.cuda.Event


class FakeCuda:
    Event = FakeEvent

    def __init__(self):
        self.syncs = 0

    def synchronize(self, device=None):
        self.syncs += 1

    def reset_peak_memory_stats(self, device=None):
        pass

    def max_memory_allocated(self, device=None):
        return 123

    def max_memory_reserved(self, device=None):
        return 456

    def get_device_properties(self, device=None):
        return SimpleNamespace(name="Fake GPU", multi_processor_count=4, major=9, minor=0, total_memory=1 << 30)


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


def _torch_session(t, precision="fp32", options=None, nvml=None):
    import copy

    return C.TorchCudaSession(copy.deepcopy(t.module), torch=t.torch, precision=precision, batch=8,
                              inputs_meta=t.inputs, options=options or {}, cuda=FakeCuda(),
                              device=t.torch.device("cpu"), monitor=_monitor(nvml or FakeNVML()))


def test_torch_session_control_flow_with_a_fake_cuda(torch_mlp):
    from harness.energy import measure_energy

    t = torch_mlp
    s = _torch_session(t)
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
    assert s.info["mode"] == "eager" and s.info["timing"] == "cuda_events" and s.info["cudnn_benchmark"] is True
    assert s.info["device_properties"]["sm_count"] == 4
    json.dumps(tm)
    json.dumps(s.info)
    s.close()
    assert s.timings() == tm  # the harness reads timings() after close()
    del nvml


def test_torch_session_bf16_cast_is_recorded(torch_mlp):
    t = torch_mlp
    s = _torch_session(t, precision="bf16")
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
    for _ in range(4):
        s.run({"input": t.x})
    tm = s.timings()
    assert tm["calls"] == 3 and tm["scope"].startswith("every call after the first")
    assert tm["energy_detail"]["energy_j"] is None


# ----------------------------------------------------------------------------- onnxruntime session, CPU as "CUDA"

class _OrtAsCuda:
    """onnxruntime (CPU) presented as a CUDA build: device buffers live on the host."""

    def __init__(self, ort):
        self._ort = ort
        self.SessionOptions = ort.SessionOptions
        self.GraphOptimizationLevel = ort.GraphOptimizationLevel
        self.__version__ = ort.__version__
        self.created_with = None
        outer = self

        class OrtValue:
            @staticmethod
            def ortvalue_from_shape_and_type(shape, dtype, device="cpu", device_id=0):
                return ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cpu", 0)

        class Session:
            def __init__(self, path, so, providers):
                outer.created_with = providers
                self._s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

            def get_providers(self):
                return ["CUDAExecutionProvider", "CPUExecutionProvider"]

            def __getattr__(self, name):
                return getattr(self._s, name)

        self.OrtValue = OrtValue
        self.InferenceSession = Session

    def get_available_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_ort_session_io_binding_flow_with_a_fake_cuda_ep(tmp_path, torch_mlp):
    ort = pytest.importorskip("onnxruntime")
    t = torch_mlp
    p = tmp_path / "m.onnx"
    t.torch.onnx.export(t.module, (t.torch.from_numpy(t.x[:1]),), str(p), input_names=["input"],
                        output_names=["output"], dynamic_axes={"input": {0: "b"}, "output": {0: "b"}},
                        opset_version=17, dynamo=False)
    fake = _OrtAsCuda(ort)
    s = C.OrtCudaSession(str(p), ort=fake, precision="fp32", batch=8, threads=1, inputs_meta=t.inputs,
                         options={}, quantization=None, monitor=_monitor(FakeNVML()))
    assert [x if isinstance(x, str) else x[0] for x in fake.created_with] == ["CUDAExecutionProvider",
                                                                              "CPUExecutionProvider"]
    for _ in range(4):
        np.testing.assert_allclose(s.run({"input": t.x})[0], t.ref, atol=1e-5)
    tm = s.timings()
    assert tm["method"] == "host_synchronized" and tm["calls"] == 3 and tm["device_ns"]["compute"]["n"] == 3
    assert s.info["io_binding"] and s.info["cpu_ep_fallback"] == "allowed" and not s.info["tensorrt"]
    s.close()
    assert s.timings()["calls"] == 3
    with pytest.raises(UnsupportedCase, match="no int8 kernels"):
        C.OrtCudaSession(str(p), ort=fake, precision="int8", batch=8, threads=1, inputs_meta=t.inputs, options={},
                         quantization={"mode": "qdq", "ops": []})


# ----------------------------------------------------------------------------- real GPU

@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU and a CUDA build of torch")
@pytest.mark.parametrize("options", [{}, {"cuda_graphs": "1"}, {"amp": "autocast"}])
def test_gpu_torch_session_real_events(torch_mlp, options):
    t = torch_mlp
    import copy

    s = C.TorchCudaSession(copy.deepcopy(t.module), torch=t.torch, precision="fp16" if options.get("amp") else "fp32",
                           batch=8, inputs_meta=t.inputs, options=options, monitor=C.DeviceMonitor(0))
    for _ in range(5):
        out = s.run({"input": t.x})[0]
        s.synchronize()
    np.testing.assert_allclose(out, t.ref, atol=1e-2 if options.get("amp") else 1e-5)
    tm = s.timings()
    assert tm["device_ns"]["compute"]["n"] == 4 and tm["device_ns"]["total"]["min"] > 0
    assert tm["memory"]["torch_peak_allocated_bytes"] > 0


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
                         options={"tensorrt": "0"}, quantization=None, monitor=C.DeviceMonitor(0))
    for _ in range(5):
        out = s.run({"input": t.x})[0]
    np.testing.assert_allclose(out, t.ref, atol=1e-4)
    assert "CUDAExecutionProvider" in s.info["providers"]
    assert s.timings()["device_ns"]["compute"]["n"] == 4
