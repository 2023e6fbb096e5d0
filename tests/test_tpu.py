"""The ``tpu`` backend: the one-line refusal where there is no TPU, the probe, and the TPU-only
glue (resolver -> connect -> initialize -> TPUStrategy, replica split, bf16 policy) driven
through a fake resolver/strategy while the model itself runs for real on TensorFlow's CPU."""
from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from backends.base import UnsupportedCase
from backends.tpu import (TPUBackend, availability_from_probe, connect, default_tpu_address, plan_execution,
                          tpu_probe)
from tests.conftest import entry_points_dir

needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                              reason="tensorflow is not installed (pip install tensorflow-cpu)")

NO_TPU = {"accel_devices": [], "vfio_devices": [], "tpu_name": None, "colab_tpu_addr": None,
          "accelerator_type": None, "libtpu_version": None, "tensorflow_version": "2.21.0"}


# ----------------------------------------------------------------------------- availability, probe

def test_no_tpu_says_what_is_missing_in_one_line():
    av = availability_from_probe(NO_TPU)
    assert not av.ok and "no TPU found" in av.reason and "\n" not in av.reason
    av = availability_from_probe({**NO_TPU, "tensorflow_version": None})
    assert "tensorflow is not installed" in av.reason and "no TPU found" in av.reason


def test_tpu_vm_devices_and_remote_tpus():
    vm = {**NO_TPU, "accel_devices": ["/dev/accel0", "/dev/accel1"], "libtpu_version": "2.18.0",
          "accelerator_type": "v4-8"}
    assert availability_from_probe(vm).ok and availability_from_probe(vm).reason == "v4-8"
    assert "libtpu is not installed" in availability_from_probe({**vm, "libtpu_version": None}).reason
    # /dev/vfio alone is not a TPU (GPU passthrough uses it too) unless libtpu is installed
    assert not availability_from_probe({**NO_TPU, "vfio_devices": ["/dev/vfio/0"]}).ok
    assert availability_from_probe({**NO_TPU, "vfio_devices": ["/dev/vfio/0"], "libtpu_version": "0.1"}).ok
    assert availability_from_probe({**NO_TPU, "tpu_name": "my-tpu"}).ok
    assert default_tpu_address({**NO_TPU, "tpu_name": "my-tpu"}, {}) == "my-tpu"
    assert default_tpu_address(vm, {}) == "local"
    assert default_tpu_address(vm, {"tpu": "grpc://10.0.0.2:8470"}) == "grpc://10.0.0.2:8470"
    assert default_tpu_address({**NO_TPU, "colab_tpu_addr": "10.0.0.2:8470"}, {}) is None


def test_probe_reads_devices_and_environment():
    files = {"/dev/accel*": ["/dev/accel1", "/dev/accel0"], "/dev/vfio/*": ["/dev/vfio/vfio", "/dev/vfio/3"]}
    p = tpu_probe({"TPU_NAME": "t1", "TPU_ACCELERATOR_TYPE": "v5litepod-4"}, globber=lambda pat: files[pat])
    assert p["accel_devices"] == ["/dev/accel0", "/dev/accel1"] and p["vfio_devices"] == ["/dev/vfio/3"]
    assert p["tpu_name"] == "t1" and p["accelerator_type"] == "v5litepod-4"


def test_plan_execution():
    assert plan_execution(16, 8) == "replicated"
    assert plan_execution(1, 8) == "single-core"
    assert plan_execution(1, 1) == "replicated"
    with pytest.raises(UnsupportedCase, match="not divisible by the 8 TPU replicas"):
        plan_execution(12, 8)


def test_backend_here_is_unavailable_without_importing_tensorflow():
    import subprocess
    import sys

    code = ("import sys\nfrom backends.tpu import TPUBackend\nb = TPUBackend()\nprint(b.availability().ok)\n"
            "b.describe()\nprint('tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == [str(TPUBackend().availability().ok), "False"], out.stderr


@pytest.fixture(scope="module")
def backend_eps(tmp_path_factory):
    """cuda and tpu registered through entry points for subprocesses (pyproject.toml does it for an
    installed bench; a duplicate registration is harmless)."""
    return entry_points_dir(tmp_path_factory.mktemp("eps"), "bench-hw-backends",
                            {"cuda": "backends.cuda:CUDABackend", "tpu": "backends.tpu:TPUBackend"})


@pytest.mark.skipif(TPUBackend().availability().ok, reason="a TPU is present here")
def test_cli_backend_tpu_exits_2_with_one_line(tmp_path, backend_eps):
    from tests.conftest import bench_env, run_bench

    proc = run_bench(["run", "--suite", "smoke", "--backend", "tpu", "--out", str(tmp_path)],
                     env=bench_env(extra_path=backend_eps), timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "backend 'tpu' is not available here" in lines[0] and "TPU" in lines[0], lines
    assert "Traceback" not in proc.stderr and not list(tmp_path.glob("*.json"))


# ----------------------------------------------------------------------------- the glue, with fakes

class FakeResolver:
    def __init__(self, tpu=None):
        self.tpu = tpu


class FakeTopology:
    num_tasks = 1
    num_tpus_per_task = 2
    mesh_shape = [1, 1, 1, 2]


_PER_REPLICA = []


def per_replica_cls():
    """Like ``tf.distribute``'s PerReplica: one value per replica, a composite tensor that
    ``tf.function`` traces, reached only through the strategy (``experimental_local_results``,
    ``strategy.run``); not a tuple, not iterable, not an array -- code that treats it as one
    fails here as it would on a TPU."""
    if not _PER_REPLICA:
        import typing

        import tensorflow as tf

        def refuse(what):
            def f(self, *a, **k):
                raise TypeError(f"a PerReplica value is not {what}: use strategy.experimental_local_results")
            return f

        # built with type(): this module's postponed annotations would hide the field's type from tf
        PerReplica = type("PerReplica", (tf.experimental.ExtensionType,), {
            "__annotations__": {"values": typing.Tuple[tf.Tensor, ...]}, "__module__": __name__,
            "__iter__": refuse("iterable"), "__array__": refuse("an array"), "__len__": refuse("a sequence")})

        _PER_REPLICA.append(PerReplica)
    return _PER_REPLICA[0]


def _regroup(per_replica: list):
    """A list (one entry per replica) of structures -> a structure of PerReplica (tf's regroup)."""
    first = per_replica[0]
    if isinstance(first, (tuple, list)):
        return type(first)(_regroup([r[j] for r in per_replica]) for j in range(len(first)))
    return per_replica_cls()(values=tuple(per_replica))


class FakeStrategy:
    """What bench uses of ``TPUStrategy``, with PerReplica values."""

    def __init__(self, resolver, replicas=2, calls=None):
        self.resolver = resolver
        self.num_replicas_in_sync = replicas
        self.calls = calls if calls is not None else []
        self.in_scope = False

    @contextlib.contextmanager
    def scope(self):
        self.calls.append("scope")
        self.in_scope = True
        yield
        self.in_scope = False

    def experimental_distribute_values_from_function(self, value_fn):
        self.calls.append("distribute")
        return _regroup([value_fn(SimpleNamespace(replica_id_in_sync_group=i,
                                                  num_replicas_in_sync=self.num_replicas_in_sync))
                         for i in range(self.num_replicas_in_sync)])

    def run(self, fn, args=()):
        self.calls.append("run")
        for a in args:
            assert isinstance(a, per_replica_cls()), f"strategy.run got {type(a).__name__}, not a distributed value"
        outs = [fn(*[a.values[i] for a in args]) for i in range(self.num_replicas_in_sync)]
        return _regroup(outs)

    def experimental_local_results(self, value):
        assert isinstance(value, per_replica_cls()), type(value)
        return value.values


class Proxy:
    """Delegates to ``base`` except for the attributes given."""

    def __init__(self, base, **over):
        self._base = base
        self.__dict__.update(over)

    def __getattr__(self, name):
        return getattr(self._base, name)


def fake_tf(real, calls, replicas=2, device_prefix="/device:TPU:", device_kind="TPU v4"):
    """TF with a fake resolver/strategy/TPU system; the model runs on the real CPU. Logical TPU
    devices are listed as ``device_prefix + i``; ``tf.device`` maps exactly those names (and
    /CPU:0) to the CPU and refuses any other TPU spelling, as a remote cluster would."""
    names = [f"{device_prefix}{i}" for i in range(replicas)]

    def device(name):
        if name in names:
            calls.append(("device", name))
            return real.device("/CPU:0")
        if "TPU" in str(name).upper():
            raise ValueError(f"Cannot resolve device {name!r}: this cluster's TPU devices are {names}")
        return real.device(name)

    def strategy(resolver):
        calls.append(("TPUStrategy", resolver.tpu))
        s = FakeStrategy(resolver, replicas, calls)
        calls.append(s)
        return s

    def resolver(tpu=None):
        calls.append(("TPUClusterResolver", tpu))
        return FakeResolver(tpu)

    def init(r):
        calls.append(("initialize_tpu_system", r.tpu))
        return FakeTopology()

    config = Proxy(real.config,
                   experimental_connect_to_cluster=lambda r: calls.append(("connect_to_cluster", r.tpu)),
                   list_logical_devices=lambda kind: [SimpleNamespace(name=n) for n in names],
                   list_physical_devices=lambda kind: ["TPU0"],
                   experimental=Proxy(real.config.experimental,
                                      get_device_details=lambda d: {"device_kind": device_kind}))
    distribute = Proxy(real.distribute, cluster_resolver=SimpleNamespace(TPUClusterResolver=resolver),
                       TPUStrategy=strategy)
    return Proxy(real, config=config, distribute=distribute, device=device,
                 tpu=SimpleNamespace(experimental=SimpleNamespace(initialize_tpu_system=init)))


def test_connect_runs_resolver_connect_initialize_strategy_in_order():
    calls = []
    tf = SimpleNamespace(
        distribute=SimpleNamespace(cluster_resolver=SimpleNamespace(
            TPUClusterResolver=lambda tpu=None: calls.append(("resolver", tpu)) or FakeResolver(tpu)),
            TPUStrategy=lambda r: calls.append(("strategy", r.tpu)) or FakeStrategy(r, 8)),
        config=SimpleNamespace(experimental_connect_to_cluster=lambda r: calls.append(("connect", r.tpu)),
                               list_logical_devices=lambda kind: [], list_physical_devices=lambda kind: [],
                               experimental=SimpleNamespace(get_device_details=lambda d: {})),
        tpu=SimpleNamespace(experimental=SimpleNamespace(
            initialize_tpu_system=lambda r: calls.append(("initialize", r.tpu)) or FakeTopology())))
    _, strategy, facts = connect(tf, "local")
    assert calls == [("resolver", "local"), ("connect", "local"), ("initialize", "local"), ("strategy", "local")]
    assert facts["replicas"] == 8 and facts["num_tpus_per_task"] == 2 and facts["mesh_shape"] == [1, 1, 1, 2]
    assert facts["device_kind"] is None  # no physical device listed: recorded as unknown, not an error


def _mlp_onnx(path: Path, rng) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1 = numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 32)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b2")
    nodes = [helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["output"], transB=1)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 16])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", 4])], [w1, b1, w2, b2])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    p = _mlp_onnx(tmp_path_factory.mktemp("tpu") / "mlp.onnx", rng)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    art = SimpleNamespace(onnx_path=p, dir=p.parent, name="mlp", variant="fp32", key="k",
                          inputs=[{"name": "input", "shape": [None, 16], "dtype": "float32"}], meta={})
    return SimpleNamespace(art=art, x=x, ref=ref)


@pytest.fixture
def tpu_backend():
    from backends import tf_runtime

    real = tf_runtime.import_tf(2)
    calls: list = []
    b = TPUBackend()
    b.probe = lambda: {**NO_TPU, "accel_devices": ["/dev/accel0"], "libtpu_version": "fake",
                       "accelerator_type": "v4-8"}
    b.import_tf = lambda threads: fake_tf(real, calls)
    return b, calls


@needs_tf
def test_replicated_session_splits_the_batch_over_replicas(tpu_backend, mlp):
    b, calls = tpu_backend
    s = b.prepare(mlp.art, precision="fp32", batch=8, threads=2, runtime="tensorflow", options={})
    names = [c[0] for c in calls if isinstance(c, tuple)]
    assert names == ["TPUClusterResolver", "connect_to_cluster", "initialize_tpu_system", "TPUStrategy"]
    assert calls[0] == ("TPUClusterResolver", "local")
    strategy = next(c for c in calls if isinstance(c, FakeStrategy))
    assert "scope" in strategy.calls  # weights created under strategy.scope()
    out = s.run({"input": mlp.x})[0]
    np.testing.assert_allclose(out, mlp.ref, atol=1e-5, rtol=1e-5)
    assert strategy.calls.count("distribute") == 1 and strategy.calls.count("run") >= 1
    assert s.info["execution"] == "replicated" and s.info["replicas"] == 2
    assert s.info["tpu"]["devices"] == ["/device:TPU:0", "/device:TPU:1"]
    assert s.info["tpu"]["device_kind"] == "TPU v4" and s.info["jit_compile"] == "always (TPU)"
    assert s.energy_meter() is None  # no TPU energy counter: the harness records why
    np.testing.assert_allclose(s.run({"input": mlp.x})[0], mlp.ref, atol=1e-5, rtol=1e-5)
    json.dumps(s.info)
    # a second case in the same process does not initialise the TPU again
    b.prepare(mlp.art, precision="fp32", batch=4, threads=2, runtime="tensorflow", options={})
    assert [c for c in calls if isinstance(c, tuple)].count(("initialize_tpu_system", "local")) == 1


@needs_tf
def test_batch_rules_and_refusals(tpu_backend, mlp):
    b, _ = tpu_backend
    with pytest.raises(UnsupportedCase, match="not divisible by the 2 TPU replicas"):
        b.prepare(mlp.art, precision="fp32", batch=3, threads=2, runtime="tensorflow", options={})
    with pytest.raises(UnsupportedCase, match="fp16"):
        b.prepare(mlp.art, precision="fp16", batch=8, threads=2, runtime="tensorflow", options={})
    with pytest.raises(UnsupportedCase, match="int8"):
        b.prepare(mlp.art, precision="int8", batch=8, threads=2, runtime="tensorflow", options={})
    # batch 1 (single-stream) runs unreplicated on one core: the first TPU device TF listed
    s = b.prepare(mlp.art, precision="fp32", batch=1, threads=2, runtime="tensorflow", options={})
    assert s.info["execution"] == "single-core" and s.info["device"] == "/device:TPU:0"
    np.testing.assert_allclose(s.run({"input": mlp.x[:1]})[0], mlp.ref[:1], atol=1e-5, rtol=1e-5)


@needs_tf
def test_bf16_variant_runs_with_a_bfloat16_policy(tpu_backend, mlp):
    b, _ = tpu_backend
    s = b.prepare(mlp.art, precision="bf16", batch=8, threads=2, runtime="tensorflow",
                  options={"steps_per_execution": 2})
    out = s.run({"input": mlp.x})[0]
    assert out.dtype == np.float32
    assert s.info["compute_dtype"] == "bfloat16" and "cast" in s.info["precision_mode"]
    assert s.info["steps_per_execution"] == 2
    assert np.abs(out - mlp.ref).max() <= 0.05 * np.abs(mlp.ref).max()
    assert not np.allclose(out, mlp.ref, atol=1e-6)  # computed in bfloat16, not fp32


# ----------------------------------------------------------------------------- issue 17

@needs_tf
def test_the_fake_per_replica_value_is_not_a_tuple():
    v = FakeStrategy(FakeResolver(), 2).experimental_distribute_values_from_function(
        lambda ctx: (np.full(2, ctx.replica_id_in_sync_group), np.zeros(1)))
    assert isinstance(v, tuple) and all(isinstance(x, per_replica_cls()) for x in v)
    with pytest.raises(TypeError):
        np.concatenate(v[0], axis=0)  # what code that took a PerReplica for a tuple would do
    with pytest.raises(TypeError):
        np.asarray(v[0])


def test_device_name_carries_the_generation():
    b = TPUBackend()
    b.probe = lambda: {**NO_TPU, "accel_devices": ["/dev/accel0"], "libtpu_version": "x", "accelerator_type": "v4-8"}
    assert b.device_name() == "TPU v4 (v4-8)" and b.describe()["generation"] == "v4"
    b.probe = lambda: {**NO_TPU, "vfio_devices": ["/dev/vfio/0"], "libtpu_version": "x", "pci_generation": "v5e",
                       "pci_chips": 4}
    assert b.device_name() == "TPU v5e (4 chips)"
    assert TPUBackend._name({**NO_TPU, "accelerator_type": "v5litepod-8"}) != \
        TPUBackend._name({**NO_TPU, "accelerator_type": "v6e-8"})


def test_a_remote_tpu_of_unknown_generation_is_refused_in_one_line():
    from harness.errors import BenchError

    b = TPUBackend()
    b.probe = lambda: {**NO_TPU, "tpu_name": "my-tpu"}  # reached by name: nothing local tells the generation
    with pytest.raises(BenchError, match="cannot tell the TPU generation") as e:
        b.check_options({})
    assert "\n" not in str(e.value)
    b.check_options({"accelerator_type": "v5p-8"})
    assert b.device_name() == "TPU v5p (v5p-8)"
    with pytest.raises(BenchError, match="accelerator_type=banana"):
        b.check_options({"accelerator_type": "banana"})


def test_pci_ids_tell_the_generation(tmp_path):
    from backends.tpu import pci_tpu_chips

    def dev(name, vendor, device, sub="0x0000"):
        d = tmp_path / name
        d.mkdir()
        (d / "vendor").write_text(vendor + "\n")
        (d / "device").write_text(device + "\n")
        (d / "subsystem_device").write_text(sub + "\n")

    dev("0000:00:04.0", "0x1ae0", "0x0063")
    dev("0000:00:05.0", "0x1ae0", "0x0063")
    dev("0000:00:06.0", "0x10de", "0x2330")  # an NVIDIA GPU: not a TPU
    assert pci_tpu_chips(str(tmp_path)) == ("v5e", 2)
    other = tmp_path / "v3"
    other.mkdir()
    assert pci_tpu_chips(str(other)) == (None, 0)
    (tmp_path / "v3" / "a").mkdir()
    for f, v in (("vendor", "0x1ae0"), ("device", "0x0027"), ("subsystem_device", "0x004f")):
        (tmp_path / "v3" / "a" / f).write_text(v)
    assert pci_tpu_chips(str(other)) == ("v3", 1)


@needs_tf
def test_remote_tpu_single_core_runs_on_the_device_tf_lists(mlp):
    from backends import tf_runtime

    real = tf_runtime.import_tf(2)
    calls: list = []
    b = TPUBackend()
    b.probe = lambda: {**NO_TPU, "tpu_name": "my-tpu", "accelerator_type": "v4-8"}
    remote = "/job:worker/replica:0/task:0/device:TPU:"
    b.import_tf = lambda threads: fake_tf(real, calls, device_prefix=remote)
    s = b.prepare(mlp.art, precision="fp32", batch=1, threads=2, runtime="tensorflow", options={})
    assert calls[0] == ("TPUClusterResolver", "my-tpu")
    assert s.info["device"] == remote + "0"
    np.testing.assert_allclose(s.run({"input": mlp.x[:1]})[0], mlp.ref[:1], atol=1e-5, rtol=1e-5)
    assert ("device", remote + "0") in calls


@needs_tf
def test_a_generation_mismatch_after_connecting_is_refused(mlp):
    from backends import tf_runtime

    real = tf_runtime.import_tf(2)
    b = TPUBackend()
    b.probe = lambda: {**NO_TPU, "accel_devices": ["/dev/accel0"], "libtpu_version": "x",
                       "accelerator_type": "v5litepod-4"}
    b.import_tf = lambda threads: fake_tf(real, [], device_kind="TPU v4")
    with pytest.raises(UnsupportedCase, match="generation mismatch"):
        b.prepare(mlp.art, precision="fp32", batch=8, threads=2, runtime="tensorflow", options={})
