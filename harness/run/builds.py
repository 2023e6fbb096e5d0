"""A run's missing model artifacts, built in parallel processes before its first case.

Between the plan and the first worker: ``bench run`` asks the model registry which
(model, variant) artifacts are not cached yet and builds them here, ``jobs`` at a time, each in
a spawned process of a :class:`concurrent.futures.ProcessPoolExecutor`. A variant waits for the
artifact it derives from (``artifact_base``: the fp32 base of a quantized variant) and goes to
the pool the moment that one is done, so the pool stays busy with whatever is ready.

Nothing is measured while this runs (builds finish before the first case starts), and a build's
result does not depend on who builds it: the same code, seed and library threads as a build in
the parent process. The parent then loads every artifact as before (each file's sha256 checked
against its ``meta.json``); whatever failed or was not built here (a broken recipe, a missing
package, a crashed pool) is built or reported by that sequential pass, in the same words as
without this module: one mechanism for every failure, no second error path.

Why: a build is partly single-threaded Python (ONNX export, graph rewriting, shape inference) and
partly multi-threaded compute (training, calibration, reference outputs); with cores to spare,
a second build fills the first one's single-threaded stretches. On 2 cores it does not pay
(:func:`default_jobs`), so there it is off unless asked for.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable


def default_jobs() -> int:
    """Build processes by default: 1 (one build at a time) on a machine with fewer than 4 CPUs, else 2.

    On 2 cores two build processes gain nothing: their training, calibration and reference passes
    each run 2 torch / onnxruntime threads, which then wait on each other, and that cancels the
    overlap of their single-threaded stretches (export, graph rewriting). Measured on a 2-core AVX2
    EPYC, the quant suite's 20 builds, ``benchmarks/bench_parallel_builds.py``: one at a time / two
    processes 1.01 and 1.04 (2026-12-02). With 4 or more CPUs the two processes' threads fit side by
    side (not measured: no such machine in reach); ``bench run --build-jobs N`` sets it either way."""
    return 1 if (os.cpu_count() or 1) < 4 else 2


def plan(pairs: Iterable[tuple[str, str]], *, rebuild: bool, cached: Callable[[str, str], bool | None],
         base_of: Callable[[str, str], str | None]) -> tuple[list[tuple[str, str]], dict]:
    """The builds to run and their dependencies: ``(todo, after)``.

    ``todo``: the pairs (no duplicates) that ``cached`` says are missing (``False``; with
    ``rebuild``, every pair listed), plus the missing bases they derive from; those that can start at
    once first, each group in the order listed. Pairs ``cached`` cannot tell about (``None``) are
    left to the sequential pass. ``after[pair]``: the base in ``todo`` that must be built before it
    (absent: ready at once).
    """
    listed = list(dict.fromkeys(pairs))
    wanted = set(listed)

    def missing(pair, asked: bool) -> bool:
        state = cached(*pair)
        return state is False or (state is True and rebuild and asked)

    todo = [p for p in listed if missing(p, True)]
    for pair in list(todo):  # a missing base the run does not list is built first all the same
        base = base_of(*pair)
        if base is not None and (pair[0], base) not in wanted and (pair[0], base) not in todo \
                and missing((pair[0], base), False):
            todo.append((pair[0], base))
    after = {}
    for pair in todo:
        base = base_of(*pair)
        if base is not None and (pair[0], base) in todo:
            after[pair] = (pair[0], base)
    todo.sort(key=lambda p: p in after)  # what can start at once first, each in the run's order
    return todo, after


def build_one(model: str, variant: str, rebuild: bool) -> dict:
    """Pool task: build one artifact (``harness.plan.models.artifact_for``) in this process.

    Returns ``{"built", "seconds", "error"}``; an error is one line (the parent's sequential pass
    builds or reports that artifact again with the usual message)."""
    from harness.plan.models import artifact_for

    t0 = time.perf_counter()
    try:
        _, built = artifact_for(model, variant, rebuild=rebuild)
    except Exception as exc:  # reported by the sequential pass, which rebuilds / re-raises
        return {"built": False, "seconds": time.perf_counter() - t0, "error": f"{type(exc).__name__}: {exc}"}
    return {"built": bool(built), "seconds": time.perf_counter() - t0, "error": None}


def prebuild(pairs: Iterable[tuple[str, str]], *, jobs: int, rebuild: bool = False,
             emit: Callable[[str, dict], None] | None = None, cached=None, base_of=None, alone=None,
             task: Callable = build_one, pool: Callable | None = None) -> set[tuple[str, str]]:
    """Build the missing artifacts of ``pairs`` in ``jobs`` processes; returns the pairs built here.

    Does nothing (returns an empty set) for ``jobs < 2`` or fewer than two builds to run: the
    sequential pass is then as fast. ``emit("builds", {n, jobs})`` once before the first build,
    ``emit("artifact_ready", {model, variant, built, seconds})`` after each successful one.
    ``cached`` / ``base_of`` / ``alone`` default to the registry's ``artifact_cached`` /
    ``artifact_base`` / ``artifact_alone``; ``pool(jobs)`` makes the executor (default: a
    ``ProcessPoolExecutor`` of spawned processes). A build that ``alone`` names (one that trains a network:
    multi-threaded torch for tens of seconds) runs with no other build beside it: next to another
    build its threads wait on each other (the Fashion-MNIST CNN's training: 35 s alone, 144 s beside
    the other builds of the quant suite on 2 cores). Ready builds start in plan order, the ``alone``
    ones first. A broken pool (a build process killed) stops the parallel builds; what is left is
    built by the sequential pass. Ctrl-C or SIGTERM kills the build processes (their half-built
    folders are swept by ``bench cache prune``) and re-raises.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    import multiprocessing

    if cached is None or base_of is None or alone is None:
        from harness.plan import models

        cached = cached or models.artifact_cached
        base_of = base_of or models.artifact_base
        alone = alone or models.artifact_alone
    emit = emit or (lambda kind, data: None)
    if jobs < 2:
        return set()
    try:
        todo, after = plan(pairs, rebuild=rebuild, cached=cached, base_of=base_of)
        solo = {p for p in todo if alone(*p)}
    except Exception:  # a registry that cannot answer: the sequential pass builds (and reports) everything
        return set()
    if len(todo) < 2:
        return set()
    jobs = min(jobs, len(todo))
    emit("builds", {"n": len(todo), "jobs": jobs})
    done: set = set()
    failed: set = set()
    ready = [p for p in todo if p not in after]
    waiting = [p for p in todo if p in after]
    running: dict = {}
    if pool is None:
        pool = lambda n: ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))
    pool = pool(jobs)
    try:
        while ready or running:
            ready.sort(key=lambda p: p not in solo)  # training builds first, the rest in plan order
            while ready and len(running) < jobs and not (solo & set(running.values())):
                if ready[0] in solo and running:
                    break
                pair = ready.pop(0)
                emit("artifact", {"model": pair[0], "variant": pair[1]})
                running[pool.submit(task, pair[0], pair[1], rebuild)] = pair
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            broken = False
            for fut in finished:
                pair = running.pop(fut)
                try:
                    res = fut.result()
                except BrokenProcessPool:  # a build process died (out of memory, killed)
                    broken = True
                    continue
                if res["error"] is None:
                    done.add(pair)
                    emit("artifact_ready", {"model": pair[0], "variant": pair[1], "built": res["built"],
                                            "seconds": res["seconds"]})
                else:
                    failed.add(pair)
            for pair in [p for p in waiting if after[p] in done or after[p] in failed]:
                waiting.remove(pair)
                if after[pair] in done:  # a failed base: its variants are left to the sequential pass
                    ready.append(pair)
            if broken:  # what was built is kept; the sequential pass builds the rest
                break
    except BaseException:  # Ctrl-C, SIGTERM: stop the builds now, not when the running ones end
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()  # a killed build leaves a .build-* folder, which `bench cache prune` removes
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True, cancel_futures=True)
    return done
