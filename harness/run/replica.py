"""Data-parallel replicas of one offline case: N worker processes, each on its own shard.

Place in the data path: the runner (``harness.run.runner``) asks its executor for a scaling
sweep of an offline case; on this machine the local executor calls :func:`run_local` (N worker
processes pinned to disjoint cores), the Ray executor runs the same worker target on N nodes.
Each replica is ``run_replica`` inside bench's usual isolated worker (``harness.run.worker``):

1. pin itself to its cores (before the runtime starts its thread pool), prepare the session,
   warm up;
2. write ``ready-<i>`` into the sync directory and wait for ``go`` (the parent writes it once
   every replica is ready, so no replica's start-up overlaps another's measurement);
3. run its shard of the queries back to back: query ``j`` of ``Q`` belongs to replica ``j mod N``
   and uses pool batch ``j mod len(pool)`` (each replica on its own queries); with ``Q`` not given
   (the one-replica calibration) it runs for ``target_s`` and reports how many queries it did;
4. return its window on the wall clock (``time.time_ns``, comparable between processes, and
   between nodes as far as their clocks agree) and its sample count.

The figures (aggregate, per-replica, efficiency) are computed by ``harness.measure.scaling``.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

GO_FILE = "go"


def _ready_name(i: int) -> str:
    return f"ready-{i}"


def wait_for_go(sync_dir: str, timeout_s: float, poll_s: float = 0.001) -> None:
    go = Path(sync_dir) / GO_FILE
    deadline = time.monotonic() + timeout_s
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no start signal within {timeout_s:.0f} s (another replica failed to start?)")
        time.sleep(poll_s)


def run_replica(payload: dict) -> dict:
    """Worker target: one replica's shard of an offline case (see the module doc)."""
    cores = payload.get("cores")
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(int(c) for c in cores))
    import itertools

    from harness.measure.timing import MeasureSettings, warm_up
    from harness.plan.artifacts import Artifact
    from harness.plan.plugins import get_backend, load_object
    from harness.run.case import input_pool

    case = payload["case"]
    batch = int(case["batch"])
    i, n = int(payload["replica"]), int(payload["replicas"])
    settings = MeasureSettings(**payload["settings"])
    ref = payload.get("backend_ref")
    backend = load_object(ref)() if ref else get_backend(case["backend"])
    artifact = Artifact.load(payload["artifact_dir"])
    session = backend.prepare(artifact, precision=case["precision"], batch=batch, threads=payload["threads"],
                              runtime=case["runtime"], options=payload.get("options") or {})
    pool = input_pool(artifact.eval_data()["x"], artifact.inputs, batch)
    run, sync = session.run, session.synchronize
    cyc = itertools.cycle(pool)
    warm_up(lambda: (run(next(cyc)), sync()), settings)

    sync_dir = payload["sync_dir"]
    Path(sync_dir, _ready_name(i)).write_text(json.dumps({"pid": os.getpid()}))
    wait_for_go(sync_dir, float(payload.get("go_timeout_s", 120.0)))

    q_total = payload.get("queries")
    t_wall0 = time.time_ns()
    t0 = time.perf_counter()
    done = 0
    if q_total is None:  # calibration: run for target_s, at least min_iterations queries
        target_s = float(payload["target_s"])
        j = 0
        while done < settings.min_iterations or time.perf_counter() - t0 < target_s:
            run(pool[j % len(pool)])
            sync()
            j += 1
            done += 1
    else:
        for j in range(i, int(q_total), n):
            run(pool[j % len(pool)])
            sync()
            done += 1
    duration = time.perf_counter() - t0
    t_wall1 = time.time_ns()
    session.close()
    return {"replica": i, "start_ns": t_wall0, "end_ns": t_wall1, "queries": done, "samples": done * batch,
            "duration_s": duration, "cores": sorted(cores) if cores else None, "threads": payload["threads"],
            "pid": os.getpid()}


def core_sets(n: int, per_replica: int, available: list[int]) -> list[list[int]]:
    """Disjoint core lists for ``n`` replicas of ``per_replica`` cores each, from ``available``."""
    need = n * per_replica
    if need > len(available):
        raise ValueError(f"{n} replicas x {per_replica} core(s) need {need} cores, {len(available)} available")
    cores = sorted(available)
    return [cores[k * per_replica:(k + 1) * per_replica] for k in range(n)]


def release_when_ready(sync_dir: str, n: int, finished: threading.Event | None = None,
                       timeout_s: float = 600.0, poll_s: float = 0.002) -> bool:
    """Parent side of the start barrier: write ``go`` once all ``n`` replicas are ready.

    Returns True when all were ready; False when ``finished`` was set first (a replica died
    before getting ready) or on time-out; ``go`` is written either way, so no replica waits
    for ever.
    """
    d = Path(sync_dir)
    deadline = time.monotonic() + timeout_s
    ok = False
    while time.monotonic() < deadline:
        if all((d / _ready_name(i)).exists() for i in range(n)):
            ok = True
            break
        if finished is not None and finished.is_set():
            break
        time.sleep(poll_s)
    (d / GO_FILE).write_text("")
    return ok


def run_local(payload: dict, n: int, cores: list[list[int]], *, timeout_s: float, env: dict) -> list:
    """Run ``n`` replicas of ``payload`` at once on this machine; returns their WorkerResults.

    Replica ``k`` is pinned to ``cores[k]`` and runs ``len(cores[k])`` threads.
    """
    import tempfile

    from harness.run.worker import run_in_worker

    results: list = [None] * n
    failed = threading.Event()
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as sync_dir:
        def one(k: int) -> None:
            p = {**payload, "replica": k, "replicas": n, "cores": cores[k], "threads": len(cores[k]),
                 "sync_dir": sync_dir}
            e = {**env, "OMP_NUM_THREADS": str(len(cores[k])), "MKL_NUM_THREADS": str(len(cores[k])),
                 "OPENBLAS_NUM_THREADS": str(len(cores[k]))}
            results[k] = run_in_worker("harness.run.replica:run_replica", p, timeout_s=timeout_s, env=e)
            if not results[k].ok:
                failed.set()

        threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(n)]
        for t in threads:
            t.start()
        release_when_ready(sync_dir, n, failed, timeout_s=timeout_s)
        for t in threads:
            t.join()
    return results
