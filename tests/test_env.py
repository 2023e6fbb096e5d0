"""Tests for harness.run.env: fingerprint, machine id, comparability key, probes."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.run import env

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "harness" / "store" / "schema" / "run-v1.schema.json"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def fp():
    return env.fingerprint()


@pytest.fixture(scope="module")
def env_validator():
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schema = json.loads(SCHEMA_PATH.read_text())
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    return Draft202012Validator({"$ref": schema["$id"] + "#/$defs/environment"}, registry=registry)


X86_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8 ht

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8 ht

processor\t: 2
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu avx2

processor\t: 3
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 1
core id\t\t: 0
flags\t\t: fpu avx2
"""

ARM_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp sve i8mm bf16
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd40

processor\t: 1
BogoMIPS\t: 2000.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp sve i8mm bf16
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd40
"""

SMI_OUTPUT = """\
NVIDIA H100 80GB HBM3, 81559, 550.54.15, 1980, 700.00, Disabled
NVIDIA A100-SXM4-40GB, 40960, 550.54.15, 1410, [N/A], Enabled
"""


def _case(**over):
    case = {
        "model": "resnet50",
        "artifact_hash": "ab" * 32,
        "variant": "fp32",
        "backend": "onnxruntime",
        "runtime": "onnxruntime",
        "runtime_version": "1.17.0",
        "device": "Intel(R) Xeon(R) Platinum 8480+",
        "precision": "fp32",
        "batch": 1,
        "scenario": "single-stream",
        "threads": {"intra_op": 4, "inter_op": 1},
    }
    case.update(over)
    return case


# --------------------------------------------------------------------------- fingerprint

def test_fingerprint_is_schema_valid(fp, env_validator):
    errors = sorted(env_validator.iter_errors(fp), key=str)
    assert not errors, [e.message for e in errors]
    # and strictly JSON serialisable
    json.dumps(fp, allow_nan=False)


def test_fingerprint_without_load_is_schema_valid(env_validator):
    fp = env.fingerprint(load=False)
    assert fp["load_avg"] is None
    env_validator.validate(fp)


def test_fingerprint_fields(fp):
    for key in ("machine_id", "hostname", "cpu", "memory_bytes", "os", "python", "packages",
                "gpus", "load_avg", "env_vars", "bench"):
        assert key in fp
    assert fp["machine_id"] == env.machine_id(fp)
    assert len(fp["machine_id"]) == 16 and int(fp["machine_id"], 16) >= 0
    assert set(env.ENV_VARS) == set(fp["env_vars"])
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "OPENBLAS_CORETYPE", "CUDA_VISIBLE_DEVICES"):
        assert name in fp["env_vars"]
    for name in ("bench", "numpy", "torch", "onnxruntime", "onnxruntime-gpu", "onnx",
                 "tensorflow", "tensorflow-cpu", "scipy", "pandas", "scikit-learn"):
        assert name in fp["packages"]
    assert fp["packages"]["bench"]
    assert set(fp["bench"]) == {"version", "git_sha", "git_dirty"}
    assert isinstance(fp["bench"]["version"], str)
    for key in ("system", "release", "version", "machine"):
        assert key in fp["os"]
    for key in ("version", "implementation", "executable"):
        assert key in fp["python"]


def test_env_vars_recorded(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    fp = env.fingerprint(load=False)
    assert fp["env_vars"]["OMP_NUM_THREADS"] == "3"
    assert fp["env_vars"]["MKL_NUM_THREADS"] is None


def test_no_heavy_imports():
    code = (
        "import sys\n"
        "import harness.run.env as e\n"
        "early = [m for m in ('torch', 'tensorflow', 'onnxruntime', 'pynvml') if m in sys.modules]\n"
        "e.fingerprint()\n"
        "late = [m for m in ('torch', 'tensorflow', 'onnxruntime') if m in sys.modules]\n"
        "print(early, late)\n"
        "assert not early and not late, (early, late)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- machine_id

def test_machine_id_stable(fp):
    assert env.machine_id(fp) == env.machine_id(copy.deepcopy(fp))
    assert env.fingerprint(load=False)["machine_id"] == fp["machine_id"]


def test_machine_id_ignores_hostname_load_and_software(fp, monkeypatch):
    base = env.machine_id(fp)
    other = copy.deepcopy(fp)
    other["hostname"] = "somewhere-else"
    other["load_avg"] = [42.0, 41.0, 40.0]
    other["cpu"]["frequency_mhz"] = 1.0
    other["cpu"]["governor"] = "powersave"
    other["packages"]["numpy"] = "0.0.1"
    other["os"]["release"] = "0.0"
    other["env_vars"]["OMP_NUM_THREADS"] = "1"
    other["bench"]["git_sha"] = "f" * 40
    assert env.machine_id(other) == base

    # hostname via monkeypatch, through the real fingerprint
    monkeypatch.setattr(env.socket, "gethostname", lambda: "renamed-host")
    monkeypatch.setattr(env.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    fp2 = env.fingerprint()
    assert fp2["hostname"] == "renamed-host"
    assert fp2["load_avg"] == [9.0, 9.0, 9.0]
    assert fp2["machine_id"] == base


def test_machine_id_memory_rounded_and_hardware_sensitive(fp):
    base = env.machine_id(fp)
    if fp["memory_bytes"]:
        jitter = copy.deepcopy(fp)
        jitter["memory_bytes"] = fp["memory_bytes"] + 4096
        assert env.machine_id(jitter) == base
    for mutate in (
        lambda f: f["cpu"].__setitem__("model", "Some Other CPU"),
        lambda f: f["cpu"].__setitem__("logical_cores", (f["cpu"]["logical_cores"] or 0) + 8),
        lambda f: f["cpu"].__setitem__("physical_cores", (f["cpu"]["physical_cores"] or 0) + 8),
        lambda f: f.__setitem__("memory_bytes", (f["memory_bytes"] or 0) + 64 * 2**30),
        lambda f: f["os"].__setitem__("machine", "riscv64"),
        lambda f: f.__setitem__("gpus", f["gpus"] + [{"name": "NVIDIA H100", "memory_bytes": 80 * 2**30}]),
    ):
        changed = copy.deepcopy(fp)
        mutate(changed)
        assert env.machine_id(changed) != base


def test_machine_id_gpu_order_independent():
    a = {"name": "NVIDIA H100", "memory_bytes": 80 * 2**30, "index": 0}
    b = {"name": "NVIDIA A100", "memory_bytes": 40 * 2**30, "index": 1}
    fp1 = {"cpu": {"model": "x", "physical_cores": 1, "logical_cores": 2}, "memory_bytes": 2**30,
           "os": {"machine": "x86_64"}, "gpus": [a, b]}
    fp2 = copy.deepcopy(fp1)
    fp2["gpus"] = [dict(b, index=0), dict(a, index=1)]
    assert env.machine_id(fp1) == env.machine_id(fp2)


# --------------------------------------------------------------------------- comparability key

def test_key_fields_picks_and_fills():
    case = _case(latency=123, temperature=60)
    del case["threads"]
    kf = env.key_fields(case)
    assert tuple(kf) == env.KEY_FIELDS
    assert kf["threads"] is None
    assert "latency" not in kf and "temperature" not in kf


def test_comparability_key_stable_under_order():
    kf = env.key_fields(_case())
    reordered = dict(reversed(list(kf.items())))
    reordered["threads"] = {"inter_op": 1, "intra_op": 4}
    k = env.comparability_key(kf)
    assert k == env.comparability_key(reordered) == env.comparability_key(env.key_fields(_case()))
    assert len(k) >= 16 and all(c in "0123456789abcdef" for c in k)
    # the key can be recomputed from a JSON round-trip of the key fields
    assert env.comparability_key(json.loads(json.dumps(kf))) == k


def test_comparability_key_ignores_telemetry():
    assert env.comparability_key(env.key_fields(_case(temperature=80, clock_mhz=1200))) == \
        env.comparability_key(env.key_fields(_case()))


@pytest.mark.parametrize("field,value", [
    ("model", "resnet18"),
    ("artifact_hash", "cd" * 32),
    ("variant", "int8"),
    ("backend", "torch"),
    ("runtime", "onnxruntime-gpu"),
    ("runtime_version", "1.18.0"),
    ("device", "NVIDIA H100"),
    ("precision", "bf16"),
    ("batch", 8),
    ("scenario", "offline"),
    ("threads", {"intra_op": 8, "inter_op": 1}),
    ("threads", None),
])
def test_comparability_key_changes_with_identity(field, value):
    base = env.comparability_key(env.key_fields(_case()))
    assert env.comparability_key(env.key_fields(_case(**{field: value}))) != base


# --------------------------------------------------------------------------- CPU

def test_parse_cpuinfo_x86():
    info = env.parse_cpuinfo(X86_CPUINFO)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["logical_cores"] == 4
    assert info["physical_cores"] == 3  # (0,0) shared by two threads, (0,1), (1,0)
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                 "amx_int8", "fma", "f16c"):
        assert flag in info["flags"]
    assert "fpu" not in info["flags"] and "ht" not in info["flags"]
    assert info["flags"] == sorted(info["flags"])


def test_parse_cpuinfo_arm():
    info = env.parse_cpuinfo(ARM_CPUINFO)
    assert info["logical_cores"] == 2
    assert info["physical_cores"] is None  # no core ids on Arm
    assert "0x41" in info["model"] and "0xd40" in info["model"]
    for flag in ("asimd", "sve", "i8mm", "bf16", "asimddp"):
        assert flag in info["flags"]
    assert "aes" not in info["flags"]


def test_parse_cpuinfo_empty():
    assert env.parse_cpuinfo("") == {"model": None, "physical_cores": None,
                                     "logical_cores": None, "flags": []}


def test_cpu_info_shape():
    info = env.cpu_info()
    assert isinstance(info["model"], str) and info["model"]
    assert info["logical_cores"] is None or info["logical_cores"] >= 1
    assert isinstance(info["flags"], list)
    assert "governor" in info and "frequency_mhz" in info


# --------------------------------------------------------------------------- GPU

@pytest.fixture
def no_pynvml(monkeypatch):
    monkeypatch.setattr(env, "_gpu_info_pynvml", lambda: None)


def test_gpu_info_empty_without_nvidia_smi(monkeypatch, no_pynvml):
    monkeypatch.setattr(env.shutil, "which", lambda name: None)

    def boom(*a, **k):  # must not even be called
        raise AssertionError("subprocess.run called without nvidia-smi")

    monkeypatch.setattr(env.subprocess, "run", boom)
    assert env.gpu_info() == []


def test_gpu_info_parses_fake_nvidia_smi(monkeypatch, no_pynvml):
    monkeypatch.setattr(env.shutil, "which",
                        lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    seen = {}

    def fake_run(argv, **kwargs):
        seen["argv"], seen["timeout"] = argv, kwargs.get("timeout")
        return subprocess.CompletedProcess(argv, 0, stdout=SMI_OUTPUT, stderr="")

    monkeypatch.setattr(env.subprocess, "run", fake_run)
    gpus = env.gpu_info()
    assert seen["timeout"] == 5 or seen["timeout"] == 5.0
    assert any("--query-gpu=" in a and "mig.mode.current" in a for a in seen["argv"])
    assert len(gpus) == 2
    h100, a100 = gpus
    assert h100["name"] == "NVIDIA H100 80GB HBM3"
    assert h100["memory_bytes"] == 81559 * 2**20
    assert h100["driver_version"] == "550.54.15"
    assert h100["max_sm_clock_mhz"] == 1980
    assert h100["power_limit_w"] == 700.0
    assert h100["mig_mode"] == "Disabled"
    assert a100["power_limit_w"] is None
    assert a100["mig_mode"] == "Enabled"
    assert [g["index"] for g in gpus] == [0, 1]


def test_gpu_info_never_raises(monkeypatch, no_pynvml):
    monkeypatch.setattr(env.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def timeout(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, 5)

    monkeypatch.setattr(env.subprocess, "run", timeout)
    assert env.gpu_info() == []

    monkeypatch.setattr(env.subprocess, "run",
                        lambda argv, **k: subprocess.CompletedProcess(argv, 9, stdout="", stderr=""))
    assert env.gpu_info() == []

    monkeypatch.setattr(env.subprocess, "run",
                        lambda argv, **k: subprocess.CompletedProcess(argv, 0, stdout="garbage\n"))
    assert env.gpu_info() == []


def test_gpu_info_falls_back_when_pynvml_breaks(monkeypatch):
    def broken():
        raise RuntimeError("NVML exploded")

    monkeypatch.setattr(env, "_gpu_info_pynvml", broken)
    assert env.gpu_info() == []


def test_gpus_in_machine_id(monkeypatch, no_pynvml):
    monkeypatch.setattr(env.shutil, "which", lambda name: "/usr/bin/" + name)
    real_run = subprocess.run

    def fake_run(argv, **kwargs):
        if "nvidia-smi" in str(argv[0]):
            return subprocess.CompletedProcess(argv, 0, stdout=SMI_OUTPUT, stderr="")
        return real_run(argv, **kwargs)

    monkeypatch.setattr(env.subprocess, "run", fake_run)
    with_gpus = env.fingerprint(load=False)
    assert len(with_gpus["gpus"]) == 2
    assert with_gpus["machine_id"] != env.machine_id(dict(with_gpus, gpus=[]))


# --------------------------------------------------------------------------- git

def test_git_info_outside_checkout(tmp_path):
    assert env.git_info(tmp_path) == {"git_sha": None, "git_dirty": None}


def test_git_info_without_git(monkeypatch):
    monkeypatch.setattr(env.shutil, "which", lambda name: None)
    assert env.git_info(ROOT) == {"git_sha": None, "git_dirty": None}
    assert env.git_info() == {"git_sha": None, "git_dirty": None}


def test_git_info_of_checkout():
    info = env.git_info()
    assert set(info) == {"git_sha", "git_dirty"}
    assert info["git_sha"] is None or (len(info["git_sha"]) == 40 and int(info["git_sha"], 16) >= 0)
    assert info["git_dirty"] in (None, True, False)
    # run from a git checkout of bench (CI's clean clone is one): the record names its commit
    # (records carried git_sha None for a while: the checkout was looked for one level too low)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True) \
        if (ROOT / ".git").exists() and env.shutil.which("git") else None
    if head is not None and head.returncode == 0:
        assert env._default_checkout() == ROOT
        assert info["git_sha"] == head.stdout.strip()


@pytest.mark.skipif(not env.shutil.which("git"), reason="git not installed")
def test_git_info_of_temp_repo(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True,
                       env={"PATH": env.os.environ.get("PATH", ""), "HOME": str(tmp_path),
                            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    assert env.git_info(tmp_path)["git_sha"] is None  # no commit yet
    git("add", "a.txt")
    git("commit", "-q", "-m", "init")
    info = env.git_info(tmp_path)
    assert len(info["git_sha"]) == 40 and info["git_dirty"] is False
    (tmp_path / "untracked.txt").write_text("x\n")
    assert env.git_info(tmp_path)["git_dirty"] is False  # untracked files do not count
    (tmp_path / "a.txt").write_text("two\n")
    assert env.git_info(tmp_path) == {"git_sha": info["git_sha"], "git_dirty": True}


# --------------------------------------------------------------------------- options in the key

@pytest.mark.parametrize("option,value", [
    ("io_binding", "1"), ("compile", "1"), ("cuda_graphs", "1"), ("amp", "autocast"), ("tf32", "1"),
    ("tensorrt", "on"), ("jit_compile", "0"), ("steps_per_execution", "8"), ("reuse_factor", "4"),
])
def test_key_includes_every_measured_option(option, value):
    plain = env.comparability_key(env.key_fields(_case()))
    with_opt = env.comparability_key(env.key_fields(_case(options=env.measured_options({option: value}))))
    assert with_opt != plain
    other = env.comparability_key(env.key_fields(_case(options=env.measured_options({option: value + "x"}))))
    assert other != with_opt


def test_measured_options_defaults_and_declared_exceptions():
    assert env.measured_options({"io_binding": 0, "verbose": "2"}, not_measured=("verbose",),
                                defaults={"io_binding": "0"}) == {}
    assert env.measured_options({"io_binding": 1, "b": "x", "a": 2}) == {"a": "2", "b": "x", "io_binding": "1"}
    # no options: the key is what it was before options were keyed (old records keep matching)
    kf = env.key_fields(_case(options={}))
    assert "options" not in kf and tuple(kf) == env.KEY_FIELDS
