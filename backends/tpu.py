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

The device name (the comparability key) always carries the TPU generation: from the
accelerator type (``TPU_ACCELERATOR_TYPE`` / ``--option accelerator_type=v5litepod-8``),
else from the chips' PCI device IDs (Google's vendor 0x1ae0: v2/v3 0x0027 told apart by
subsystem, v4 0x005e, v5e 0x0063, v5p 0x0062, v6e 0x006f). Where neither says it (a
remote TPU known only by name), ``bench run`` refuses with one line instead of recording
a bare "TPU" that would compare different generations. After connecting, the device kind
TensorFlow reports is checked against it. The single-core path runs on the first logical
TPU device TensorFlow lists after connecting (``/job:worker/replica:0/task:0/device:TPU:0``
on a remote TPU), never a literal ``/TPU:0`` that only resolves locally.

Where no TPU is present, :meth:`TPUBackend.availability` says what is missing in one line,
without importing TensorFlow (``bench list backends`` stays fast).
"""
from __future__ import annotations

import glob
import os
import re
from typing import Any, Callable, Mapping

from backends.base import Availability, Backend, Option, Session, UnsupportedCase, dist_version

_LIBTPU_DISTS = ("libtpu", "libtpu-nightly", "tensorflow-tpu")
_TF_DISTS = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu", "tf-nightly")
GOOGLE_PCI_VENDOR = "0x1ae0"
#: PCI device id (and, for 0x0027, subsystem id) -> TPU generation
_PCI_GENERATIONS = {"0x005e": "v4", "0x0063": "v5e", "0x0062": "v5p", "0x006f": "v6e"}
_PCI_V2_V3 = {"0x004e": "v2", "0x004f": "v3"}
#: TensorFlow's device_kind -> generation
_DEVICE_KINDS = {"tpu v2": "v2", "tpu v3": "v3", "tpu v4": "v4", "tpu v4 lite": "v4i", "tpu v5 lite": "v5e",
                 "tpu v5e": "v5e", "tpu v5": "v5p", "tpu v5p": "v5p", "tpu v6 lite": "v6e", "tpu v6e": "v6e"}


def pci_tpu_chips(root: str = "/sys/bus/pci/devices") -> tuple[str | None, int]:
    """(generation, number of chips) of the Google TPU chips on the PCI bus, or (None, 0)."""
    gens: dict[str, int] = {}
    for dev in sorted(glob.glob(os.path.join(root, "*"))):
        def read(name):
            try:
                with open(os.path.join(dev, name)) as f:
                    return f.read().strip().lower()
            except OSError:
                return None

        if read("vendor") != GOOGLE_PCI_VENDOR:
            continue
        did = read("device")
        gen = _PCI_V2_V3.get(read("subsystem_device") or "") if did == "0x0027" else _PCI_GENERATIONS.get(did or "")
        if gen:
            gens[gen] = gens.get(gen, 0) + 1
    if not gens:
        return None, 0
    gen = max(gens, key=gens.get)
    return gen, gens[gen]


def generation_of_accelerator_type(acc: str | None) -> str | None:
    """``v4-8`` -> ``v4``, ``v5litepod-16`` -> ``v5e``, ``v5p-8`` -> ``v5p``, ``v6e-4`` -> ``v6e``."""
    m = re.fullmatch(r"v(\d+)(litepod|lite|e|p)?(?:-\d+)?", (acc or "").strip().lower())
    if not m:
        return None
    suffix = {"litepod": "e", "lite": "e"}.get(m.group(2) or "", m.group(2) or "")
    return f"v{m.group(1)}{suffix}"


def generation_of_device_kind(kind: str | None) -> str | None:
    return _DEVICE_KINDS.get((kind or "").strip().lower())


def tpu_generation(p: Mapping[str, Any]) -> str | None:
    return generation_of_accelerator_type(p.get("accelerator_type")) or p.get("pci_generation")





def tpu_probe(environ: Mapping[str, str] | None = None, globber: Callable[[str], list] = glob.glob,
              pci: Callable[[], tuple] = pci_tpu_chips) -> dict:
    """What of a TPU this machine shows, without importing anything heavy.

    TPU VMs expose their chips as ``/dev/accel*`` (v2-v4) or ``/dev/vfio/<n>`` (v5e, v6e);
    a TPU node / Colab is reached by name or address (``TPU_NAME``, ``COLAB_TPU_ADDR``).
    """
    env = os.environ if environ is None else environ
    accel = sorted(globber("/dev/accel*"))
    vfio = sorted(p for p in globber("/dev/vfio/*") if os.path.basename(p).isdigit())
    libtpu = dist_version(_LIBTPU_DISTS)
    gen, chips = pci()
    return {
        "pci_generation": gen,
        "pci_chips": chips,
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


#: the --option settings of the tpu backend (checked before any case runs)
OPTIONS = (
    Option("tpu", str, help="TPU address (grpc://host:8470 or a TPU name)"),
    Option("tpu_device", str, help="TF device string (default /TPU:0)"),
    Option("jit_compile", bool, help="XLA-compile the TF function (default 1)"),
    Option("steps_per_execution", int, minimum=1, maximum=100_000, help="queries per TF function call (default 1)"),
    Option("tf_model", str, help="path of a TF SavedModel to run instead of the converted one"),
    Option("accelerator_type", str, help="TPU type (e.g. v5litepod-8) where nothing else names the generation"),
)


class TPUBackend(Backend):
    #: injection points for tests (a fake resolver/strategy through a fake ``tf``)
    probe: Callable[[], dict] = staticmethod(tpu_probe)
    import_tf: Callable[..., Any] | None = None

    def __init__(self):
        super().__init__(name="tpu", runtimes=("tensorflow",), default_runtime="tensorflow", options=OPTIONS)
        self._connected: tuple | None = None
        self.accelerator_type: str | None = None

    def availability(self) -> Availability:
        return availability_from_probe(self.probe())

    def runtime_availability(self, runtime: str) -> Availability:
        if runtime != "tensorflow":
            return Availability(False, f"unknown runtime '{runtime}' for tpu (choose from: tensorflow)")
        return self.availability()

    def _probe(self) -> dict:
        p = dict(self.probe())
        if self.accelerator_type:
            p["accelerator_type"] = self.accelerator_type
        return p

    def check_options(self, options: Mapping[str, Any] | None, runtime: str | None = None) -> None:
        """In the parent, before any case: the declared OPTIONS first, then the TPU generation must be
        known (it is part of the comparability key); ``--option accelerator_type=...`` names it."""
        from harness.errors import BenchError

        super().check_options(options, runtime)
        options = dict(options or {})
        if options.get("accelerator_type"):
            acc = str(options["accelerator_type"])
            if generation_of_accelerator_type(acc) is None:
                raise BenchError(f"--option accelerator_type={acc}: expected a TPU accelerator type such as v4-8, "
                                 "v5litepod-8, v5p-8 or v6e-8")
            self.accelerator_type = acc
        if self.availability().ok and tpu_generation(self._probe()) is None:
            raise BenchError("cannot tell the TPU generation (no TPU_ACCELERATOR_TYPE, no TPU chip on the PCI bus): "
                             "pass --option accelerator_type=v5litepod-8 (your TPU's type) so results of different "
                             "generations are never compared")

    def describe(self) -> dict:
        p = self._probe()
        chips = len(p["accel_devices"]) or len(p["vfio_devices"]) or p.get("pci_chips") or None
        gen = tpu_generation(p)
        return {"name": self._name(p), "kind": "tpu", "generation": gen, "accelerator_type": p.get("accelerator_type"),
                "local_chips": chips, "pci_generation": p.get("pci_generation"), "tpu_name": p.get("tpu_name"),
                "libtpu_version": p.get("libtpu_version"), "tensorflow_version": p.get("tensorflow_version")}

    @staticmethod
    def _name(p: Mapping[str, Any]) -> str:
        gen = tpu_generation(p)
        if gen is None:
            return "TPU (generation unknown)"
        acc = p.get("accelerator_type")
        if acc:
            return f"TPU {gen} ({acc})"
        return f"TPU {gen} ({p.get('pci_chips')} chips)" if p.get("pci_chips") else f"TPU {gen}"

    def device_name(self) -> str:
        return self._name(self._probe())

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
        if options.get("accelerator_type"):
            self.accelerator_type = str(options["accelerator_type"])
        probe = self._probe()
        if self._connected is None:  # one initialisation per process (it resets the TPU)
            self._connected = connect(tf, default_tpu_address(probe, options))
        _, strategy, facts = self._connected
        expected, seen = tpu_generation(probe), generation_of_device_kind(facts.get("device_kind"))
        if expected and seen and expected != seen:
            raise UnsupportedCase(f"TPU generation mismatch: the run is keyed as {expected} but TensorFlow reports "
                                  f"{facts.get('device_kind')!r} ({seen})")
        mode = plan_execution(batch, facts["replicas"])
        # bf16: an fp32 graph gets a bfloat16 compute policy in tf_runtime.load_onnx (recorded there as
        # precision_mode); a graph already in bfloat16 runs as it is.
        extra = {"tpu": facts, "execution": mode, "accelerator_type": probe.get("accelerator_type"),
                 "generation": expected or seen}
        if mode == "replicated":
            return tf_runtime.prepare(artifact, precision=precision, batch=batch, threads=threads, options=options,
                                      strategy=strategy, tf=tf, extra_info=extra)
        return tf_runtime.prepare(artifact, precision=precision, batch=batch, threads=threads, options=options,
                                  device=single_core_device(facts, options), tf=tf, extra_info=extra)


def single_core_device(facts: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """The device of the single-core path: ``--option tpu_device`` or the first logical TPU
    device TensorFlow listed after connecting (a full name such as
    ``/job:worker/replica:0/task:0/device:TPU:0`` on a remote TPU; ``/TPU:0`` resolves only
    on a TPU VM)."""
    if options.get("tpu_device"):
        return str(options["tpu_device"])
    devices = facts.get("devices") or []
    if not devices:
        raise UnsupportedCase("TPU: TensorFlow lists no logical TPU device after connecting (batch 1 needs one core)")
    return str(devices[0])
