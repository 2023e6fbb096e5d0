"""The Ray executor: each planned job is a Ray task that runs bench's usual isolated worker on a node.

Place in the data path: runner -> :class:`RayExecutor` -> (Ray task on a node) ->
``harness.run.worker.run_in_worker`` -> result back to the driver, as each task finishes.

What runs where:

- driver (``bench run``): plans, builds artifacts, packs each artifact once (``ray.put``), submits
  one task per job, writes the journals and records as results arrive.
- node (a Ray worker process): unpacks the artifact into its node cache (by content key), runs the
  job in a fresh worker process (time limit and crash capture as on one machine), fingerprints
  its machine, names its device, and returns all of it.

Placement is Ray's: a task asks for ``num_cpus`` (the case's threads: one case per node's CPUs at
a time), the backend's resources (``GPU``, a custom resource such as ``fpga_u250``) and a
``label_selector`` (``--node-label accelerator=H100``). A job no alive node can ever satisfy is
not submitted (it would wait for ever): it comes back ``skipped`` with the reason.

Failures: a node or Ray worker lost mid-job (``NodeDiedError``, ``WorkerCrashedError``, ...) makes
the attempt fail with Ray's reason; the job is retried once on another matching node (a
``ray.io/node-id`` label selector excludes the lost one) when one exists, else it is ``failed``.
Ctrl-C cancels every outstanding task (force: the node's worker process and its bench worker die)
and re-raises, so the runner writes the record with the finished cases.

Ray is imported here only (never by ``bench --help``).
"""
from __future__ import annotations

import io
import os
import re
import socket
import tarfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Iterator

from harness.errors import BenchError
from harness.run.executors import Job, JobResult, Needs

NODE_ID_LABEL = "ray.io/node-id"
CONNECT_TIMEOUT_S = 3.0
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_INFRA_ERRORS = ("NodeDiedError", "WorkerCrashedError", "ActorDiedError", "ObjectLostError",
                 "OwnerDiedError", "LocalRayletDiedError", "RaySystemError", "ObjectFetchTimedOutError")


def _import_ray():
    try:
        import ray  # noqa: F401
    except ImportError:
        raise BenchError("--executor ray needs Ray, which is not installed: pip install 'bench[fleet]'") from None
    return ray


def _split_address(address: str) -> tuple[str, int] | None:
    a = address.split("://", 1)[-1]
    host, sep, port = a.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """One line (BenchError) when nothing answers at ``address`` (host:port of the Ray head)."""
    hp = _split_address(address)
    if hp is None:
        raise BenchError(f"--address {address}: expected HOST:PORT of a Ray head node (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as exc:
        raise BenchError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from None


def node_matches(node: dict, needs: Needs, exclude: set | None = None) -> bool:
    """Could ``node`` (an entry of ``ray.nodes()``) ever run a job with ``needs``?"""
    if not node.get("Alive") or (exclude and node.get("NodeID") in exclude):
        return False
    res = node.get("Resources") or {}
    if res.get("CPU", 0) < needs.cpus:
        return False
    if any(res.get(k, 0) < v for k, v in needs.resources.items()):
        return False
    labels = node.get("Labels") or {}
    return all(labels.get(k) == v for k, v in needs.labels.items())


def _lost_node_id(exc: BaseException) -> str | None:
    m = re.search(r"node (?:ID|id)[:=]?\s*([0-9a-f]{56})", str(exc))
    return m.group(1) if m else None


def pack_dir(path: str | os.PathLike) -> bytes:
    """A directory as an uncompressed tar (artifacts are mostly ONNX weights: little to gain)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(path), arcname=".")
    return buf.getvalue()


def node_cache_dir() -> Path:
    base = os.environ.get("BENCH_FLEET_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench") / "fleet"


def unpack_artifact(key: str, blob: bytes) -> str:
    """Node side: the artifact ``key`` unpacked into the node cache (once; atomic rename)."""
    dest = node_cache_dir() / key
    if dest.is_dir():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{key}.{os.getpid()}.tmp"
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(tmp, filter="data")
    try:
        os.rename(tmp, dest)
    except OSError:  # another task unpacked it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


_NODE_FACTS: dict = {}


def node_facts(backend_ref: str | None) -> dict:
    """Node side: this machine's fingerprint, Ray node identity and the backend's device name."""
    import ray

    from harness.run import env as envmod

    if "fingerprint" not in _NODE_FACTS:
        _NODE_FACTS["fingerprint"] = envmod.fingerprint()
    ctx = ray.get_runtime_context()
    node = {"node_id": ctx.get_node_id(), "hostname": socket.gethostname(),
            "ip": ray.util.get_node_ip_address()}
    device = None
    if backend_ref:
        if backend_ref not in _NODE_FACTS:
            try:
                from harness.plan.plugins import load_object

                b = load_object(backend_ref)()
                _NODE_FACTS[backend_ref] = {"device": b.device_name()}
            except Exception as exc:  # noqa: BLE001 - reported, the worker will fail with the detail
                _NODE_FACTS[backend_ref] = {"device": None, "error": f"{type(exc).__name__}: {exc}"}
        device = _NODE_FACTS[backend_ref]["device"]
    return {"machine": _NODE_FACTS["fingerprint"], "node": node, "device": device}


def node_job(spec: dict, blob: bytes | None) -> dict:
    """The Ray task body: one job in bench's isolated worker, on this node."""
    from harness.run.worker import run_in_worker

    payload = dict(spec["payload"])
    if blob is not None:
        payload["artifact_dir"] = unpack_artifact(spec["artifact_key"], blob)
    facts = node_facts(spec.get("backend_ref"))
    wr = run_in_worker(spec["target"], payload, timeout_s=spec["timeout_s"], env=spec["env"])
    return {"worker": asdict(wr), **facts}


def node_replica(spec: dict, blob: bytes | None, barrier) -> dict:
    """Ray task body for one scaling replica: worker + start barrier shared through ``barrier``."""
    import tempfile
    import threading

    import ray

    from harness.run import replica as rep
    from harness.run.worker import run_in_worker

    payload = dict(spec["payload"])
    if blob is not None:
        payload["artifact_dir"] = unpack_artifact(spec["artifact_key"], blob)
    facts = node_facts(spec.get("backend_ref"))
    k = payload["replica"]
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-replica-") as sync_dir:
        payload["sync_dir"] = sync_dir
        t = threading.Thread(target=lambda: out.update(
            wr=run_in_worker("harness.run.replica:run_replica", payload, timeout_s=spec["timeout_s"],
                             env=spec["env"])), daemon=True)
        t.start()
        ready = Path(sync_dir) / f"ready-{k}"
        while t.is_alive() and not ready.exists():
            time.sleep(0.002)
        ray.get(barrier.arrive.remote(k, ready.exists()))
        deadline = time.monotonic() + spec["timeout_s"]
        while not ray.get(barrier.released.remote()) and time.monotonic() < deadline:
            time.sleep(0.002)
        Path(sync_dir, rep.GO_FILE).write_text("")
        t.join()
    return {"worker": asdict(out["wr"]), **facts}


class _Barrier:
    """Ray actor: released once all N replicas arrived (or one arrived not ready)."""

    def __init__(self, n: int):
        self.n, self.arrived, self.broken = n, set(), False

    def arrive(self, k: int, ok: bool) -> None:
        self.arrived.add(k)
        self.broken = self.broken or not ok

    def released(self) -> bool:
        return self.broken or len(self.arrived) >= self.n


def _worker_result(d: dict):
    from harness.run.worker import WorkerResult

    return WorkerResult(**d)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None):
        address = address or os.environ.get("RAY_ADDRESS")
        if address and address != "auto":
            check_reachable(address)
            hp = _split_address(address)
            if hp and hp[0] in _LOOPBACK:
                # a cluster on this machine: keep Ray on the loopback interface (before Ray is imported)
                os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray = _import_ray()
        self.ray = ray
        self.address = address or "auto"
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            kw = {}
            hp = _split_address(self.address) if self.address != "auto" else None
            if hp and hp[0] in _LOOPBACK:
                kw["_node_ip_address"] = "127.0.0.1"
            try:
                ray.init(address=self.address, logging_level="ERROR", log_to_driver=False,
                         configure_logging=False, namespace="bench", **kw)
            except ConnectionError as exc:
                raise BenchError(f"no Ray cluster to join at {self.address}: {str(exc).splitlines()[0]} "
                                 "(start one with `ray start --head`, or give --address HOST:PORT)") from None
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; one line for the user
                raise BenchError(f"cannot join the Ray cluster at {self.address}: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        self._blobs: dict = {}
        # nodes this executor saw die (from a task's NodeDiedError): ray.nodes() can go on calling them
        # Alive for tens of seconds, and a retry placed by that stale view would wait forever
        self._dead: set[str] = set()
        self._remote = ray.remote(node_job)
        self._remote_replica = ray.remote(node_replica)

    # -- what the cluster has ---------------------------------------------------------------
    def nodes(self) -> list[dict]:
        """Live nodes: Alive in the GCS view and not seen dead by this executor."""
        return [n for n in self.ray.nodes() if n.get("Alive") and n.get("NodeID") not in self._dead]

    def describe(self) -> dict:
        nodes = self.nodes()
        return {"name": self.name, "address": self.address, "ray_version": self.ray.__version__,
                "nodes": [{"node_id": n["NodeID"], "hostname": n.get("NodeManagerHostname"),
                           "ip": n.get("NodeManagerAddress"),
                           "resources": {k: v for k, v in (n.get("Resources") or {}).items()
                                         if not k.startswith("node:") and k not in ("memory", "object_store_memory")},
                           "labels": {k: v for k, v in (n.get("Labels") or {}).items() if not k.startswith("ray.io/")}}
                          for n in nodes]}

    def default_threads(self, needs: Needs) -> int | None:
        """The CPU count of the smallest node that matches (a case then takes that node's CPUs)."""
        cpus = [int((n.get("Resources") or {}).get("CPU", 0)) for n in self.nodes()
                if node_matches(n, Needs(cpus=1, resources=needs.resources, labels=needs.labels))]
        cpus = [c for c in cpus if c > 0]
        return min(cpus) if cpus else None

    def check(self, needs: Iterable[Needs]) -> None:
        """Bad input before any case runs: a node label no alive node carries."""
        nodes = self.nodes()
        for n in needs:
            for k, v in n.labels.items():
                if not any((node.get("Labels") or {}).get(k) == v for node in nodes):
                    have = sorted({f"{a}={b}" for node in nodes for a, b in (node.get("Labels") or {}).items()
                                   if not a.startswith("ray.io/")})
                    raise BenchError(f"--node-label {k}={v}: no node of the Ray cluster has this label "
                                     f"(labels present: {', '.join(have) or 'none'})")

    # -- running ------------------------------------------------------------------------------
    def _blob(self, art):
        if art is None:
            return None
        if art.key not in self._blobs:
            self._blobs[art.key] = self.ray.put(pack_dir(art.dir))
        return self._blobs[art.key]

    def _options(self, needs: Needs, exclude: set | None = None) -> dict:
        res = dict(needs.resources)
        opts = {"num_cpus": needs.cpus, "num_gpus": res.pop("GPU", 0), "max_retries": 0, "retry_exceptions": False}
        if res:
            opts["resources"] = res
        sel = dict(needs.labels)
        if exclude:
            sel[NODE_ID_LABEL] = "!" + next(iter(exclude)) if len(exclude) == 1 else \
                "!in(" + ",".join(sorted(exclude)) + ")"
        if sel:
            opts["label_selector"] = sel
        return opts

    def _spec(self, job: Job) -> dict:
        return {"target": job.target, "payload": job.payload, "env": job.env, "timeout_s": job.timeout_s,
                "artifact_key": getattr(job.artifact, "key", None), "backend_ref": job.backend_ref}

    def _submit(self, job: Job, exclude: set | None = None):
        return self._remote.options(name=f"bench:{job.case_id}", **self._options(job.needs, exclude)).remote(
            self._spec(job), self._blob(job.artifact))

    def run(self, jobs: list[Job], on_start: Callable[[Job], None] | None = None) -> Iterator[JobResult]:
        ray = self.ray
        pending: dict = {}  # ref -> (job, exclude set, retries list)
        for job in jobs:
            if not any(node_matches(n, job.needs) for n in self.nodes()):
                yield JobResult(job=job, status="skipped",
                                reason=f"no node of the Ray cluster has what this case needs ({job.needs.describe()})")
                continue
            if on_start:
                on_start(job)
            pending[self._submit(job)] = (job, set(), [])
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    job, exclude, retries = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        kind = type(exc).__name__
                        reason = f"node lost mid-case ({kind}): {' '.join(str(exc).split())[:300]}"
                        if kind == "RayTaskError" or not any(e in kind for e in _INFRA_ERRORS):
                            yield JobResult(job=job, status="failed", reason=f"Ray task failed: {kind}: "
                                            f"{' '.join(str(exc).split())[:300]}", retries=retries)
                            continue
                        lost = _lost_node_id(exc)
                        if lost:
                            self._dead.add(lost)
                        retries = retries + [{"node_id": lost, "reason": reason}]
                        exclude = exclude | ({lost} if lost else set())
                        if not retries[1:] and any(node_matches(n, job.needs, exclude) for n in self.nodes()):
                            pending[self._submit(job, exclude)] = (job, exclude, retries)
                            continue
                        why = "; no other matching node to retry on" if not retries[1:] else "; retried once"
                        yield JobResult(job=job, status="failed", reason=reason + why, retries=retries)
                        continue
                    yield JobResult(job=job, worker=_worker_result(out["worker"]), machine=out["machine"],
                                    node=out["node"], device=out["device"], retries=retries)
        except BaseException:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort while interrupted
                    pass
            raise

    def run_replicas(self, job: Job, n: int, threads: int) -> dict:
        """``n`` replicas on ``n`` different nodes (a STRICT_SPREAD placement group), one start barrier."""
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        ray = self.ray
        needs = Needs(cpus=threads, resources=job.needs.resources, labels=job.needs.labels)
        matching = [nd for nd in self.nodes() if node_matches(nd, needs)]
        if len(matching) < n:
            return {"status": "skipped", "reason": f"{n} replicas need {n} nodes with {needs.describe()}; "
                                                   f"the cluster has {len(matching)}"}
        bundle = {"CPU": threads, **{k: v for k, v in needs.resources.items()}}
        pg = placement_group([dict(bundle) for _ in range(n)], strategy="STRICT_SPREAD",
                             bundle_label_selector=[dict(needs.labels) for _ in range(n)] if needs.labels else None)
        try:
            try:
                ray.get(pg.ready(), timeout=60)
            except Exception as exc:  # noqa: BLE001
                return {"status": "skipped", "reason": f"could not place {n} replicas on {n} nodes: "
                                                       f"{type(exc).__name__}"}
            here = ray.get_runtime_context().get_node_id()
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            barrier = ray.remote(_Barrier).options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)).remote(n)
            spec = self._spec(job)
            refs = []
            for k in range(n):
                s = {**spec, "payload": {**job.payload, "replica": k, "replicas": n, "threads": threads, "cores": None},
                     "env": {**job.env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                             "OPENBLAS_NUM_THREADS": str(threads)}}
                refs.append(self._remote_replica.options(
                    num_cpus=threads, max_retries=0, name=f"bench:{job.case_id}:replica{k}",
                    scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=k),
                    **({"num_gpus": bundle.get("GPU")} if bundle.get("GPU") else {}),
                ).remote(s, self._blob(job.artifact), barrier))
            try:
                outs = ray.get(refs)
            except ray.exceptions.RayError as exc:
                for r in refs:
                    ray.cancel(r, force=True)
                return {"status": "failed", "reason": f"a replica's node was lost: {type(exc).__name__}"}
            except BaseException:
                for r in refs:
                    ray.cancel(r, force=True)
                raise
            return {"status": "ok", "workers": [_worker_result(o["worker"]) for o in outs], "placement": "nodes",
                    "where": [{"node": o["node"], "machine_id": (o["machine"] or {}).get("machine_id")} for o in outs]}
        finally:
            remove_placement_group(pg)

    def close(self) -> None:
        if self._owns_connection:
            try:
                self.ray.shutdown()
            except Exception:  # noqa: BLE001
                pass
