"""harness.run.builds: a run's missing artifacts built in parallel processes before its first case.

The scheduling tests drive ``prebuild`` with a thread pool and fake build tasks that record what
overlapped what (no timing thresholds: overlap is seen through events); one test builds a real zoo
model's artifacts in spawned processes and checks they are the ones the run then loads."""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest

from harness.run import builds


def _fake_world(missing, bases=None, solo=()):
    bases = bases or {}
    return dict(cached=lambda m, v: (m, v) not in missing, base_of=lambda m, v: bases.get((m, v)),
                alone=lambda m, v: (m, v) in solo)


class Recorder:
    """A fake build task: logs start/end, fails for ``fail``; ``meet`` pairs wait for each other
    (a barrier with a timeout: they pass only when both run at the same time)."""

    def __init__(self, fail=(), meet=()):
        self.log, self.lock, self.fail = [], threading.Lock(), set(fail)
        self.running, self.max_running, self.overlaps = set(), 0, []
        self.meet = set(meet)
        self.barrier = threading.Barrier(len(meet)) if meet else None
        self.met = False

    def __call__(self, model, variant, rebuild):
        pair = (model, variant)
        with self.lock:
            self.overlaps.append((pair, frozenset(self.running)))
            self.running.add(pair)
            self.max_running = max(self.max_running, len(self.running))
            self.log.append(("start", pair))
        if pair in self.meet:
            try:
                self.barrier.wait(timeout=10)
                self.met = True
            except threading.BrokenBarrierError:
                pass
        else:
            time.sleep(0.02)
        with self.lock:
            self.running.discard(pair)
            self.log.append(("end", pair))
        if pair in self.fail:
            return {"built": False, "seconds": 0.0, "error": "BenchError: boom"}
        return {"built": True, "seconds": 0.01, "error": None}

    def index(self, kind, pair):
        return self.log.index((kind, pair))


def _threads(n):
    return lambda jobs: ThreadPoolExecutor(max_workers=n)


def test_plan_keeps_missing_pairs_and_puts_each_base_before_its_variants():
    world = _fake_world(missing={("a", "fp32"), ("a", "int8"), ("b", "int8")},
                        bases={("a", "int8"): "fp32", ("b", "int8"): "fp32", ("c", "fp16"): "fp32"})
    pairs = [("a", "int8"), ("b", "int8"), ("a", "fp32"), ("c", "fp16"), ("a", "int8")]
    todo, after = builds.plan(pairs, rebuild=False, cached=world["cached"], base_of=world["base_of"])
    assert todo == [("b", "int8"), ("a", "fp32"), ("a", "int8")]  # ready ones first, in the run's order
    assert after == {("a", "int8"): ("a", "fp32")}  # b's base is cached: ready at once
    # rebuild: every listed pair, cached or not, still base before variant
    todo, after = builds.plan([("c", "fp16"), ("c", "fp32")], rebuild=True, cached=world["cached"],
                              base_of=world["base_of"])
    assert todo == [("c", "fp32"), ("c", "fp16")] and after == {("c", "fp16"): ("c", "fp32")}


def test_plan_leaves_what_the_registry_cannot_tell_to_the_sequential_pass():
    todo, _ = builds.plan([("llm", "fp32"), ("x", "fp32")], rebuild=True,
                          cached=lambda m, v: None if m == "llm" else False, base_of=lambda m, v: None)
    assert todo == [("x", "fp32")]


def test_variants_wait_for_their_base_and_independent_builds_overlap():
    bases = {(m, v): "fp32" for m in "ab" for v in ("fp16", "int8")}
    missing = {(m, v) for m in "ab" for v in ("fp32", "fp16", "int8")}
    rec = Recorder(meet={("a", "fp32"), ("b", "fp32")})
    done = builds.prebuild(sorted(missing), jobs=2, task=rec, pool=_threads(2), **_fake_world(missing, bases))
    assert done == missing
    assert rec.met, "the two bases never ran at the same time"
    for m in "ab":
        for v in ("fp16", "int8"):
            assert rec.index("end", (m, "fp32")) < rec.index("start", (m, v))
    assert rec.max_running == 2


def test_a_training_build_runs_with_nothing_beside_it():
    missing = {("t", "fp32"), ("x", "fp32"), ("y", "fp32"), ("t", "int8")}
    rec = Recorder()
    done = builds.prebuild([("x", "fp32"), ("t", "int8"), ("y", "fp32"), ("t", "fp32")], jobs=2, task=rec,
                           pool=_threads(2), **_fake_world(missing, {("t", "int8"): "fp32"}, solo={("t", "fp32")}))
    assert done == missing
    assert rec.log[0] == ("start", ("t", "fp32"))  # alone builds go first
    for pair, beside in rec.overlaps:
        if pair == ("t", "fp32"):
            assert not beside
        assert ("t", "fp32") not in beside, f"{pair} started while the training build ran"


def test_a_failed_build_is_left_to_the_sequential_pass_with_its_variants():
    missing = {("a", "fp32"), ("a", "int8"), ("b", "fp32")}
    rec = Recorder(fail={("a", "fp32")})
    events = []
    done = builds.prebuild(sorted(missing), jobs=2, task=rec, pool=_threads(2),
                           emit=lambda k, d: events.append((k, d)), **_fake_world(missing, {("a", "int8"): "fp32"}))
    assert done == {("b", "fp32")}
    assert ("start", ("a", "int8")) not in rec.log  # never built on top of a failed base
    ready = [(d["model"], d["variant"]) for k, d in events if k == "artifact_ready"]
    assert ready == [("b", "fp32")]
    assert events[0] == ("builds", {"n": 3, "jobs": 2})


def test_nothing_runs_in_parallel_for_one_job_or_a_single_build():
    rec = Recorder()
    world = _fake_world({("a", "fp32"), ("b", "fp32")})
    assert builds.prebuild([("a", "fp32"), ("b", "fp32")], jobs=1, task=rec, pool=_threads(2), **world) == set()
    assert builds.prebuild([("a", "fp32")], jobs=2, task=rec, pool=_threads(2), **world) == set()
    assert rec.log == []


class _BrokenPool:
    def __init__(self):
        self.n = 0

    def submit(self, fn, *args):
        f = Future()
        self.n += 1
        if self.n == 1:
            f.set_result(fn(*args))
        else:
            f.set_exception(BrokenProcessPool("a build process was killed"))
        return f

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def test_a_broken_pool_stops_the_parallel_builds_and_keeps_what_was_built():
    missing = {("a", "fp32"), ("b", "fp32"), ("c", "fp32")}
    done = builds.prebuild(sorted(missing), jobs=2, task=Recorder(), pool=lambda jobs: _BrokenPool(),
                           **_fake_world(missing))
    assert done == {("a", "fp32")}


def test_real_builds_in_spawned_processes_are_the_artifacts_the_run_loads(tmp_path, monkeypatch):
    """mlp-digits' base and two variants, built by two spawned processes into an empty cache: the
    registry then finds each cached under the key it computes, and loading it builds nothing."""
    from harness.plan import models

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    pairs = [("mlp-digits", "fp32"), ("mlp-digits", "fp16"), ("mlp-digits", "int8-dynamic")]
    assert [models.artifact_cached(*p) for p in pairs] == [False] * 3
    events = []
    done = builds.prebuild(pairs, jobs=2, emit=lambda k, d: events.append(k))
    assert done == set(pairs)
    assert [models.artifact_cached(*p) for p in pairs] == [True] * 3
    assert events.count("artifact_ready") == 3
    for p in pairs:
        art, built = models.artifact_for(*p)
        assert not built and art.variant == p[1]


@pytest.mark.parametrize("jobs", ["0", "x"])
def test_build_jobs_must_be_a_positive_integer(jobs):
    from tests.conftest import run_bench

    r = run_bench(["run", "--suite", "smoke", "--backend", "cpu", "--build-jobs", jobs])
    assert r.returncode == 2 and "--build-jobs" in r.stderr and "Traceback" not in r.stderr


def test_bench_run_builds_each_missing_artifact_once_and_rebuild_rebuilds_once(tmp_path):
    """Black box: a cold cache builds the run's artifacts in 2 processes, each one once (the
    sequential pass then loads them); --rebuild rebuilds each once more; a warm run builds nothing."""
    from tests.conftest import bench_env, run_bench

    suite = tmp_path / "s.yaml"
    suite.write_text("name: two\nmodels: [mlp-digits]\nvariants: [fp32, fp16, int8-dynamic]\n"
                     "scenarios: [single-stream]\nbatch_sizes: [1]\n"
                     "measurement: {min_time_s: 0.05, max_time_s: 0.3, min_iterations: 10, warmup_min_time_s: 0.02,"
                     " warmup_max_time_s: 0.2}\n")
    env = bench_env(cache=tmp_path / "cache")
    args = ["run", "--suite", str(suite), "--backend", "cpu", "--out", str(tmp_path / "out")]

    def built(proc):
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
        return sorted(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("built "))

    everything = ["mlp-digits/fp16", "mlp-digits/fp32", "mlp-digits/int8-dynamic"]
    cold = run_bench([*args, "--build-jobs", "2"], env=env)
    assert "building 3 artifacts, 2 at a time" in cold.stderr, cold.stderr  # progress goes to stderr
    assert built(cold) == everything
    again = run_bench([*args, "--rebuild", "--build-jobs", "2"], env=env)
    assert built(again) == everything
    warm = run_bench([*args, "--build-jobs", "2"], env=env)
    assert built(warm) == [] and "building" not in warm.stderr
    one = run_bench([*args, "--rebuild", "--build-jobs", "1"], env=env)
    assert built(one) == everything and "at a time" not in one.stderr


def sleeper(model, variant, rebuild):  # a build that would take 10 minutes (runs in a spawned process)
    time.sleep(600)
    return {"built": True, "seconds": 600.0, "error": None}


def test_an_interrupt_stops_the_running_build_processes_at_once():
    """Ctrl-C / SIGTERM while builds run: the build processes are killed, not waited for."""
    missing = {("a", "fp32"), ("b", "fp32")}
    seen = []

    def emit(kind, data):
        seen.append(kind)
        if seen.count("artifact") == 2:  # the first build is running in its process
            time.sleep(1.0)
            raise KeyboardInterrupt

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        builds.prebuild(sorted(missing), jobs=2, task=sleeper, emit=emit, **_fake_world(missing))
    assert time.monotonic() - t0 < 120  # not the 600 s of the running build


@pytest.mark.parametrize("cpus,jobs", [(1, 1), (2, 1), (3, 1), (4, 2), (64, 2), (None, 1)])
def test_parallel_builds_are_on_by_default_only_from_4_cpus(monkeypatch, cpus, jobs):
    monkeypatch.setattr(builds.os, "cpu_count", lambda: cpus)
    assert builds.default_jobs() == jobs
