"""The local executor: every job on this machine, one after another, each in its own worker.

Place in the data path: runner -> this -> ``harness.run.worker.run_in_worker`` -> result.
Replicas (``run_replicas``) run at once, pinned to disjoint cores (``harness.run.replica``).
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator

from harness.run.executors import Job, JobResult, Needs


def available_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


class LocalExecutor:
    name = "local"

    def describe(self) -> dict:
        return {"name": self.name}

    def default_threads(self, needs: Needs) -> int | None:
        return None  # the runner's default (physical cores)

    def check(self, needs: Iterable[Needs]) -> None:
        for n in needs:
            if n.labels:
                from harness.errors import BenchError

                raise BenchError("--node-label is for --executor ray (this machine has no node labels)")

    def run(self, jobs: list[Job], on_start: Callable[[Job], None] | None = None) -> Iterator[JobResult]:
        from harness.run.worker import run_in_worker

        for job in jobs:
            if on_start:
                on_start(job)
            wr = run_in_worker(job.target, job.payload, timeout_s=job.timeout_s, env=job.env, cpus=job.cpus)
            yield JobResult(job=job, worker=wr)

    def run_replicas(self, job: Job, n: int, threads: int) -> dict:
        """``n`` replicas of ``threads`` cores each, pinned to disjoint cores of this machine."""
        from harness.run.replica import core_sets, run_local

        try:
            cores = core_sets(n, threads, available_cores())
        except ValueError as exc:
            return {"status": "skipped", "reason": str(exc)}
        results = run_local(job.payload, n, cores, timeout_s=job.timeout_s, env=job.env)
        return {"status": "ok", "workers": results, "placement": "cores",
                "where": [{"cores": c} for c in cores]}

    def close(self) -> None:
        pass
