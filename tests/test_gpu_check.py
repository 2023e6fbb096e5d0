"""scripts/gpu_check.sh and benchmarks/bench_cuda_vs_events.py: everything that does not need a GPU.

The GPU parts (bench's session against the hand-written event loop, the quant suite on
--backend cuda) run only on a GPU machine; here: argument handling, the A/B interleaving and
its ratios with fake blocks, the summary table from a faked OUT directory, and the script's
one-line refusals (no GPU; no installable environment)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


@pytest.fixture(scope="module")
def B():
    spec = importlib.util.spec_from_file_location("bench_cuda_vs_events", ROOT / "benchmarks" / "bench_cuda_vs_events.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("argv, what", [([], "give a command"), (["compare", "--batch", "0"], "--batch must be >= 1"),
                                        (["compare", "--device", "-1"], "--device must be >= 0"),
                                        (["compare", "--repeats", "x"], "invalid int value"),
                                        (["table", "/nonexistent/dir"], "not a directory")])
def test_bad_arguments_are_one_line_and_exit_2(B, capsys, argv, what):
    assert B.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert what in err and "\n" not in err and err.startswith("bench_cuda_vs_events.py: ")


def test_compare_without_a_gpu_is_one_line(B, capsys):
    from backends.cuda import CUDABackend

    if CUDABackend().runtime_availability("torch").ok:
        pytest.skip("a CUDA GPU is present")
    assert B.main(["compare"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no CUDA GPU for torch here" in err and "\n" not in err


def test_interleaving_alternates_and_the_ratios_are_bench_over_hand(B):
    order = []

    def bench(n):
        order.append("bench")
        return {"host_ns": [110.0] * n, "device_ns": [50.0] * n}

    def hand(n):
        order.append("hand")
        return {"host_ns": [100.0] * (n - 1) + [1e9], "device_ns": [40.0] * n}  # one outlier: medians ignore it

    r = B.interleave(bench, hand, repeats=4, n=9)
    assert order == ["bench", "hand", "hand", "bench", "bench", "hand", "hand", "bench"]
    assert r["ratio_host"] == pytest.approx(1.1) and r["ratio_device"] == pytest.approx(1.25)
    assert r["bench_host_p50_ns"] == 110.0 and r["hand_device_p50_ns"] == 40.0
    r = B.interleave(lambda n: {"host_ns": [1.0]}, lambda n: {"host_ns": [2.0]}, 1, 1)
    assert r["ratio_device"] is None and r["ratio_host"] == 0.5


def test_the_table_from_a_check_directory(B, tmp_path, capsys):
    (tmp_path / "steps.tsv").write_text("device\t0\t3\ngpu tests\t1\t41\nquant cuda/torch\t0\t120\n")
    rec = {"backend": {"runtime": "torch", "device": {"name": "NVIDIA H200"}},
           "cases": [{"model": "mlp-digits", "variant": "fp32", "batch": 64, "status": "ok", "latency_ns": {"p50": 40_000}},
                     {"model": "mlp-digits", "variant": "fp16", "batch": 64, "status": "ok", "latency_ns": {"p50": 35_500}},
                     {"model": "mlp-digits", "variant": "int8-static", "batch": 64, "status": "unsupported"}]}
    (tmp_path / "run-1.json").write_text(json.dumps(rec))
    (tmp_path / "not-a-record.json").write_text("[1, 2]")
    (tmp_path / "events.json").write_text(json.dumps({"model": "mlp-digits", "batch": 1, "bench_host_p50_ns": 21_000,
                                                      "hand_host_p50_ns": 20_000, "bench_device_p50_ns": 15_000,
                                                      "hand_device_p50_ns": 15_000, "ratio_host": 1.05,
                                                      "ratio_device": 1.0}))
    assert B.main(["table", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["step", "result", "time"]
    assert out[2].startswith("gpu tests") and "FAIL 1" in out[2] and out[2].endswith("41s")
    assert out[4] == ("quant on cuda/torch (NVIDIA H200): ok 2, unsupported 1; fastest mlp-digits/fp16 b64 "
                      "p50 35.5 us")
    assert "ratio 1.050 (host, end to end)" in out[5] and "device 15.0 us vs 15.0 us: ratio 1.000" in out[5]
    assert len(out) == 6


def _script(env_extra, tmp_path, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PIP_"))}
    env.update(env_extra)
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def test_script_without_a_gpu_says_so_in_one_line(tmp_path):
    out = tmp_path / "out"
    p = _script({"NVSMI": str(tmp_path / "no-nvidia-smi"), "OUT": str(out)}, tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().count("\n") == 0 and "no NVIDIA GPU here: nvidia-smi not found" in p.stderr
    assert not out.exists()  # nothing installed or written before the GPU check
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    smi.chmod(0o755)
    p = _script({"NVSMI": str(smi), "OUT": str(out)}, tmp_path)
    assert p.returncode == 2 and "nvidia-smi lists none" in p.stderr and p.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_script_with_a_gpu_but_nothing_installable_says_what_is_missing(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    (tmp_path / "wheels").mkdir()
    p = _script({"NVSMI": str(smi), "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
                 "VENV": str(tmp_path / "venv"), "WHEELS": str(tmp_path / "wheels"),
                 "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1", "PIP_RETRIES": "0",
                 "PIP_TIMEOUT": "2"}, tmp_path, timeout=300)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "cannot install" in lines[0] and "PyPI unreachable" in lines[0], lines


@pytest.mark.slow
def test_script_runs_every_step_and_prints_the_table(tmp_path):
    """The main path with a GPU 'present' (a fake nvidia-smi) and a Python that passes the
    environment check but has no GPU: every step runs under its limit and is recorded, the
    failing ones say so in the table, the status is the first failure's."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    py = tmp_path / "python"
    py.write_text(f'#!/bin/bash\nif [ "$1" = -c ] && [[ "$2" == *"missing = ["* ]]; then exit 0; fi\n'
                  f'exec {sys.executable} "$@"\n')
    py.chmod(0o755)
    out = tmp_path / "out"
    p = _script({"NVSMI": str(smi), "OUT": str(out), "PYTHON": str(py), "VENV": str(tmp_path / "no-venv")},
                tmp_path, timeout=600)
    steps = [l.split("\t") for l in (out / "steps.tsv").read_text().splitlines()]
    assert [s[0] for s in steps] == ["device", "gpu tests", "quant cuda/torch", "quant cuda/onnxruntime",
                                     "bench vs events"]
    rc = {s[0]: int(s[1]) for s in steps}
    assert rc["device"] == 2 and rc["gpu tests"] == 0 and rc["quant cuda/torch"] == 2 and rc["bench vs events"] == 2
    assert p.returncode == 2
    table = p.stdout[p.stdout.index("step "):].splitlines()
    assert table[1].startswith("device") and "FAIL 2" in table[1] and len(table) == 6
    assert (out / "device.log").exists() and "available: False" in (out / "device.log").read_text()
