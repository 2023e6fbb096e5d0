"""The ``tpu`` backend: TensorFlow + XLA on a Cloud TPU, through ``TPUStrategy``.

The model reaches TensorFlow exactly as on ``--backend cpu --runtime tensorflow`` (the
artifact's ONNX graph interpreted with TF ops, or the user's SavedModel / ``.keras``
model; see :mod:`backends.tf_runtime`), so the TPU runs the code CI tests on the CPU.
Only the glue here is TPU-specific:

* connect: ``TPUClusterResolver(tpu=...)`` -> ``tf.config.experimental_connect_to_cluster``
  -> ``tf.tpu.experimental.initialize_tpu_system`` -> ``tf.distribute.TPUStrategy``
  (``--option tpu=NAME``; default ``$TPU_NAME``, else ``local`` on a TPU VM);
* weights are created under ``strategy.scope()`` (replicated on every core); a query's
  batch is split over ``strategy.num_replicas_in_sync`` replicas
  (``experimental_distribute_values_from_function``) and run with ``strategy.run``
  inside one ``tf.function`` (the TPU compiles it with XLA); a batch must be divisible by
  the replica count, batch 1 (single-stream) runs on one core (``/TPU:0``);
* ``bf16`` variant: an fp32 graph runs with a bfloat16 compute policy (weights, constants
  and inputs cast to bfloat16 at load, outputs back to float32), recorded; fp16 and int8
  are refused with the reason;
* ``--option steps_per_execution=k``: each query's batch runs as k device steps inside one
  compiled loop (one host round trip for k steps), for offline throughput;
* the first call (trace + XLA compile + run) is reported apart by the harness; every call
  synchronizes by fetching its outputs to host numpy.

Where no TPU is present, :meth:`TPUBackend.availability` says what is missing in one line,
without importing TensorFlow (``bench list backends`` stays fast).
"""
from __future__ import annotations

import glob
import os
from typing import Any, Callable, Mapping

from backends.base import Availability, Backend, Session, UnsupportedCase, dist_version

_LIBTPU_DISTS = ("libtpu", "libtpu-nightly", "tensorflow-tpu")
_TF_DISTS = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu", "tf-nightly")





def tpu_probe(environ: Mapping[str, str] | None = None, globber: Callable[[str], list] = glob.glob) -> dict:
    """What of a TPU this machine shows, without importing anything heavy.

    TPU VMs expose their chips as ``/dev/accel*`` (v2-v4) or ``/dev/vfio/<n>`` (v5e, v6e);
    a TPU node / Colab is reached by name or address (``TPU_NAME``, ``COLAB_TPU_ADDR``).
    """
    env = os.environ if environ is None else environ
    accel = sorted(globber("/dev/accel*"))
    vfio = sorted(p for p in globber("/dev/vfio/*") if os.path.basename(p).isdigit())
    libtpu = dist_version(_LIBTPU_DISTS)
    return {
        "accel_devices": accel,
        "vfio_devices": vfio,
        "tpu_name": env.get("TPU_NAME") or None,
        "colab_tpu_addr": env.get("COLAB_TPU_ADDR") or None,
        "accelerator_type": env.get("TPU_ACCELERATOR_TYPE") or env.get("ACCELERATOR_TYPE") or None,
        "libtpu_version": libtpu,
        "tensorflow_version": dist_version(_TF_DISTS),
    }


def availability_from_probe(p: dict) -> Availability:
    """Decide from :func:`tpu_probe`'s facts; the reason names what is missing."""
    missing = []
    if not p.get("tensorflow_version"):
        missing.append("tensorflow is not installed (on a TPU VM: pip install tensorflow-tpu, "
                       "which brings libtpu)")
    local = bool(p.get("accel_devices")) or (bool(p.get("vfio_devices")) and bool(p.get("libtpu_version")))
    remote = bool(p.get("tpu_name") or p.get("colab_tpu_addr"))
    if not (local or remote):
        missing.append("no TPU found (no /dev/accel* or /dev/vfio TPU devices, TPU_NAME and COLAB_TPU_ADDR unset)")
    elif local and not remote and not p.get("libtpu_version"):
        missing.append("TPU devices are present but libtpu is not installed (pip install tensorflow-tpu)")
    if missing:
        return Availability(False, "; ".join(missing))
    where = p.get("accelerator_type") or ("TPU VM" if local else f"TPU {p.get('tpu_name') or p.get('colab_tpu_addr')}")
    return Availability(True, where)


def default_tpu_address(p: dict, options: Mapping[str, Any]) -> str | None:
    if options.get("tpu"):
        return str(options["tpu"])
    if p.get("tpu_name"):
        return p["tpu_name"]
    if p.get("colab_tpu_addr"):
        return None  # TPUClusterResolver reads COLAB_TPU_ADDR itself
    return "local"


def connect(tf, tpu: str | None) -> tuple[Any, Any, dict]:
    """``TPUClusterResolver`` -> connect -> initialize -> ``TPUStrategy``; returns (resolver, strategy, facts)."""
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    topology = tf.tpu.experimental.initialize_tpu_system(resolver)
    strategy = tf.distribute.TPUStrategy(resolver)
    facts = {"tpu": tpu, "replicas": int(strategy.num_replicas_in_sync)}
    for attr in ("num_tasks", "num_tpus_per_task"):
        v = getattr(topology, attr, None)
        facts[attr] = int(v) if v is not None else None
    mesh = getattr(topology, "mesh_shape", None)
    facts["mesh_shape"] = [int(d) for d in mesh] if mesh is not None else None
    try:
        devices = tf.config.list_logical_devices("TPU")
        facts["devices"] = [d.name for d in devices]
    except Exception:  # noqa: BLE001 - a fact, not a requirement
        facts["devices"] = None
    try:
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("TPU")[0])
        facts["device_kind"] = details.get("device_kind")
    except Exception:  # noqa: BLE001
        facts["device_kind"] = None
    return resolver, strategy, facts


def plan_execution(batch: int, replicas: int) -> str:
    """``"replicated"`` (batch split over the replicas) or ``"single-core"`` (batch 1)."""
    if replicas < 1:
        raise UnsupportedCase("TPU: the strategy reports no replicas")
    if batch % replicas == 0:
        return "replicated"
    if batch == 1:
        return "single-core"
    raise UnsupportedCase(f"TPU: batch {batch} is not divisible by the {replicas} TPU replicas "
                          f"(use a multiple of {replicas}, or batch 1 for one core)")


class TPUBackend(Backend):
    #: injection points for tests (a fake resolver/strategy through a fake ``tf``)
    probe: Callable[[], dict] = staticmethod(tpu_probe)
    import_tf: Callable[..., Any] | None = None

    def __init__(self):
        super().__init__(name="tpu", runtimes=("tensorflow",), default_runtime="tensorflow")
        self._connected: tuple | None = None

    def availability(self) -> Availability:
        return availability_from_probe(self.probe())

    def runtime_availability(self, runtime: str) -> Availability:
        if runtime != "tensorflow":
            return Availability(False, f"unknown runtime '{runtime}' for tpu (choose from: tensorflow)")
        return self.availability()

    def describe(self) -> dict:
        p = self.probe()
        chips = len(p["accel_devices"]) or len(p["vfio_devices"]) or None
        name = f"TPU {p['accelerator_type']}" if p.get("accelerator_type") else "TPU"
        return {"name": name, "kind": "tpu", "accelerator_type": p.get("accelerator_type"), "local_chips": chips,
                "tpu_name": p.get("tpu_name"), "libtpu_version": p.get("libtpu_version"),
                "tensorflow_version": p.get("tensorflow_version")}

    def device_name(self) -> str:
        return self.describe()["name"]

    def runtime_version(self, runtime: str) -> str | None:
        return dist_version(_TF_DISTS)

    def _tf(self, threads):
        if self.import_tf is not None:
            return self.import_tf(threads)
        from backends.tf_runtime import import_tf

        return import_tf(threads)

    def prepare(self, artifact, *, precision, batch, threads, runtime, options=None) -> Session:
        from backends import tf_runtime

        options = dict(options or {})
        if runtime != "tensorflow":
            raise UnsupportedCase(f"unknown runtime '{runtime}' for tpu")
        if precision == "fp16":
            raise UnsupportedCase("TPU: no fp16 arithmetic on TPUs (run the bf16 variant)")
        if precision not in ("fp32", "bf16"):
            raise UnsupportedCase(f"TPU: no verified {precision} path in bench (int8/QDQ graphs are compiled "
                                  "for cpu/cuda; run them there)")
        av = self.availability()
        if not av.ok:
            raise UnsupportedCase(f"TPU not available: {av.reason}")
        tf = self._tf(threads)
        probe = self.probe()
        if self._connected is None:  # one initialisation per process (it resets the TPU)
            self._connected = connect(tf, default_tpu_address(probe, options))
        _, strategy, facts = self._connected
        mode = plan_execution(batch, facts["replicas"])
        # bf16: an fp32 graph gets a bfloat16 compute policy in tf_runtime.load_onnx (recorded there as
        # precision_mode); a graph already in bfloat16 runs as it is.
        extra = {"tpu": facts, "execution": mode, "accelerator_type": probe.get("accelerator_type")}
        if mode == "replicated":
            return tf_runtime.prepare(artifact, precision=precision, batch=batch, threads=threads, options=options,
                                      strategy=strategy, tf=tf, extra_info=extra)
        return tf_runtime.prepare(artifact, precision=precision, batch=batch, threads=threads, options=options,
                                  device=str(options.get("tpu_device", "/TPU:0")), tf=tf, extra_info=extra)
