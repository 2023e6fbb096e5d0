"""Executors: where the runner's planned worker jobs run.

Place in the data path: the runner (``harness.run.runner``) plans a list of :class:`Job`
(one per case, or more with repeats), the executor runs each in bench's isolated worker
(``harness.run.worker``: time limit, crash capture) and hands back a :class:`JobResult` as
each job finishes; the runner turns it into a case record and appends it to the journal.

- ``local`` (:mod:`.local`): this machine, one job after another (today's behaviour).
- ``ray`` (:mod:`.ray`): each job is a Ray task on a node that has what the job needs
  (resources, node labels); results stream back as tasks finish. Ray is imported only there.

The executor never interprets payloads; it only places jobs, runs them, and says on which
machine they ran (``JobResult.machine``, the node's fingerprint) and what happened on the way
(``status``/``reason`` for a job that could not run: no matching node, node lost, interrupted).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

from harness.errors import BenchError

EXECUTORS = ("local", "ray")


@dataclass
class Needs:
    """What a job needs from the node that runs it."""

    cpus: int = 1  # CPUs the job occupies (its threads): one case per node's CPUs at a time
    resources: dict = field(default_factory=dict)  # e.g. {"GPU": 1} or {"fpga_u250": 1}
    labels: dict = field(default_factory=dict)  # node labels that must match, e.g. {"accelerator": "H100"}

    def describe(self) -> str:
        bits = [f"{self.cpus} CPU"] + [f"{k}={v:g}" for k, v in sorted(self.resources.items())] + \
               [f"label {k}={v}" for k, v in sorted(self.labels.items())]
        return ", ".join(bits)


@dataclass
class Job:
    """One worker run the runner planned (opaque payload; the executor only places and runs it)."""

    index: int
    case_id: str
    target: str  # "package.module:function", run by harness.run.worker
    payload: dict
    env: dict
    timeout_s: float
    needs: Needs = field(default_factory=Needs)
    artifact: Any = None  # an Artifact (dir + key) the payload's "artifact_dir" points to; shipped where needed
    backend_ref: str | None = None  # "module:Class" of the backend: the node names its device with it
    cpus: list | None = None  # --pin: CPUs of this machine the worker is pinned to (local executor only)


@dataclass
class JobResult:
    job: Job
    worker: Any = None  # harness.run.worker.WorkerResult, None when the job never ran
    status: str | None = None  # None: judge by `worker`; "skipped"/"failed": the job did not run or was lost
    reason: str | None = None
    machine: dict | None = None  # environment fingerprint of the machine that ran it (None: the driver's)
    node: dict | None = None  # {"node_id", "hostname", "ip"} on Ray
    device: str | None = None  # the node's own name for the device (None: the driver's)
    retries: list = field(default_factory=list)  # [{"node": ..., "reason": ...}] attempts lost before this one


class Executor(Protocol):
    name: str

    def describe(self) -> dict: ...

    def default_threads(self, needs: Needs) -> int | None: ...

    def check(self, needs: Iterable[Needs]) -> None: ...

    def run(self, jobs: list[Job], on_start: Callable[[Job], None] | None = None) -> Iterator[JobResult]: ...

    def run_replicas(self, job: Job, n: int, threads: int) -> dict: ...

    def close(self) -> None: ...


def get_executor(name: str, *, address: str | None = None, labels: dict | None = None) -> Executor:
    """The executor called ``name``, connected and ready, or one line (BenchError)."""
    if name == "local":
        if address:
            raise BenchError("--address is for --executor ray")
        from harness.run.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from harness.run.executors.ray import RayExecutor

        return RayExecutor(address=address)
    raise BenchError(f"unknown executor '{name}' (choose from: {', '.join(EXECUTORS)})")
