"""The parent side of ``bench run``: plan, artifacts, one worker per case, the record.

Nothing heavy runs in this process's timed paths: every case is measured in its own
spawned worker (``harness.run.worker``), so a crash, a hang or an out-of-memory kill costs
that case alone. Finished cases go to a journal at once; the record is written at the end
(also after Ctrl-C, with the cases not run marked ``skipped``).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from harness.errors import BenchError, MissingDependency

DEFAULT_CASE_TIMEOUT_S = 600.0


@dataclass
class RunOptions:
    suite: str | None  # None: only the user's own models (user_models), with default settings
    backend: str
    runtime: str | None = None
    scenarios: list[str] | None = None
    batches: list[int] | None = None
    models: list[str] | None = None
    threads: int | None = None
    out_dir: str = "results"
    tags: dict = field(default_factory=dict)
    measurement: dict = field(default_factory=dict)  # CLI overrides of MeasureSettings fields
    case_timeout_s: float | None = None
    backend_options: dict = field(default_factory=dict)
    rebuild: bool = False
    argv: list[str] = field(default_factory=list)
    user_models: list[str] = field(default_factory=list)  # *.onnx files / package.module:factory
    input_shapes: list[str] = field(default_factory=list)  # NAME=1x3x224x224, for user_models
    #: load-generator scenarios: target_qps, latency_bound_ms, samples_per_query, concurrency,
    #: max_queue_delay_us, driver ("bench" | "loadgen"); None values = defaults
    scenario_options: dict = field(default_factory=dict)
    repeat: int | None = None  # worker processes per case (None: the profile's, 1 for quick)
    profile: str | None = None  # quick | nightly | rigorous (harness.repeats.PROFILES)
    pin: list[int] | None = None  # CPUs every worker is pinned to
    system_check: bool = True  # take harness.run.syscheck's snapshot before the first case


def default_threads() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except Exception:
        return os.cpu_count() or 1


def resolve_backend(name: str, runtime: str | None):
    """Instantiate the backend and check it (and the runtime) can run here, or raise one line."""
    from harness.plan.plugins import get_backend

    backend = get_backend(name)
    av = backend.availability()
    if not av.ok:
        raise BenchError(f"backend '{name}' is not available here: {av.reason}")
    runtime = runtime or backend.default_runtime
    if runtime not in backend.runtimes:
        raise BenchError(f"unknown runtime '{runtime}' for backend '{name}' (choose from: {', '.join(backend.runtimes)})")
    rav = backend.runtime_availability(runtime)
    if not rav.ok:
        raise BenchError(f"runtime '{runtime}' of backend '{name}' is not available here: {rav.reason}")
    return backend, runtime


def build_settings(suite_measurement: dict, overrides: dict):
    from harness.measure.timing import MeasureSettings

    values = {**suite_measurement, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        s = MeasureSettings(**values)
        s.validate()
    except (TypeError, ValueError) as exc:
        raise BenchError(f"bad measurement settings: {exc}") from None
    return s


def run(opts: RunOptions, *, on_event: Callable[[str, dict], None] | None = None) -> tuple[dict, Path]:
    """Run a suite; returns ``(record, path)``. ``on_event(kind, data)`` drives the UI."""
    from harness.run import env as envmod
    from harness.store import records
    from harness.plan import suite as suitemod
    from harness.run import repeats as repeatsmod
    from harness.measure.timing import timer_overhead

    emit = on_event or (lambda kind, data: None)
    from suites.zoo import byo

    suite = suitemod.load(opts.suite) if opts.suite else byo.default_suite()
    backend, runtime = resolve_backend(opts.backend, opts.runtime)
    if hasattr(backend, "check_options"):  # e.g. fpga: unknown part / impossible precision -> one line, exit 2
        backend.check_options(opts.backend_options)
    _check_scenario_options(opts.scenario_options)
    threads = opts.threads or default_threads()
    timeout = opts.case_timeout_s or suite.case_timeout_s or DEFAULT_CASE_TIMEOUT_S
    prof = repeatsmod.profile(opts.profile)
    k = int(opts.repeat or prof["repeat"])
    if k < 1:
        raise BenchError(f"--repeat must be >= 1, got {k}")
    settings = build_settings({**suite.measurement, **prof["measurement"]}, opts.measurement)
    # the user's own models: validated and built up front, so a bad file is one line and exit 2
    user = byo.resolve(opts.user_models, opts.input_shapes, rebuild=opts.rebuild, emit=emit) \
        if opts.user_models else []
    cases = []
    if suite.models and (opts.models or not user):
        cases = suitemod.plan(suite, backend=backend.name, runtime=runtime, scenarios=opts.scenarios,
                              batches=opts.batches, models=opts.models,
                              multistream_samples=int(opts.scenario_options.get("samples_per_query") or 8))
    cases += byo.plan(user, backend=backend.name, runtime=runtime, scenarios=opts.scenarios or suite.scenarios,
                      batches=opts.batches, suite_batches=suite.data.get("batch_sizes"))
    if not cases:
        raise BenchError(f"suite {suite.name} has no cases for the given filters")
    _check_data({pc.model for pc in cases})
    out_dir = records.check_writable_dir(opts.out_dir)

    started = records.utcnow()
    fp = envmod.fingerprint()
    device = backend.device_name()
    key_options = _key_options(backend, opts.backend_options)
    runtime_version = backend.runtime_version(runtime)
    header = {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": records.new_run_id(started),
        "started_at": records.isoformat(started),
        "bench": fp.get("bench") or {"version": _version(), "git_sha": None},
        "command": ["bench", *opts.argv],
        "suite": {"name": suite.name, "path": str(suite.path) if suite.path else None, "sha256": suite.sha256},
        "settings": {**asdict(settings), "threads": threads, "case_timeout_s": float(timeout), "repeat": k,
                     "profile": opts.profile or "quick", "pin": list(opts.pin) if opts.pin else None,
                     "schedule": "round-robin" if k > 1 else "sequential"},
        "tags": dict(opts.tags),
        "environment": fp,
        "timer": timer_overhead(),
        "backend": {"name": backend.name, "runtime": runtime, "runtime_version": runtime_version,
                    "device": backend.describe(), "simulated": bool(getattr(backend, "simulated", False))},
    }
    if opts.system_check:
        from harness.run import syscheck

        header["system_check"] = syscheck.summary(syscheck.snapshot())
        if header["system_check"]["warnings"]:
            emit("system_warnings", {"warnings": header["system_check"]["warnings"]})
    journal = records.Journal(out_dir, header)
    finished: dict[int, dict] = {}
    partial: dict[int, list[dict]] = {}
    bases: dict[int, dict] = {}
    arts: dict[int, object] = {}
    interrupted = False
    emit("start", {"n_cases": len(cases), "run_id": header["run_id"], "suite": suite.name, "repeat": k,
                   "case_budget_s": settings.warmup_max_time_s + settings.max_time_s})
    artifacts: dict[tuple[str, str], object] = {(u.name, "fp32"): u.artifact for u in user}

    def finish(i: int, case: dict) -> None:
        journal.append(case)
        finished[i] = case
        emit("case_done", {"index": i, "case": case})

    try:
        # the worker runs in the planned order: round-robin over cases, one repeat at a time
        for i, r in repeatsmod.schedule(len(cases), k):
            if i in finished:  # skipped / failed before its last repeat
                continue
            pc = cases[i]
            emit("case_start", {"index": i, "case_id": pc.case_id if k == 1 else f"{pc.case_id} [{r + 1}/{k}]",
                                "repeat": r})
            if r == 0:
                bases[i] = _identity(pc, device=device, runtime_version=runtime_version, threads=threads,
                                     simulated=bool(getattr(backend, "simulated", False)), options=key_options)
                art = artifacts.get((pc.model, pc.variant))
                if art is None:
                    art = _artifact(pc.model, pc.variant, opts.rebuild, emit)
                    artifacts[(pc.model, pc.variant)] = art
                arts[i] = art
                if isinstance(art, MissingDependency):
                    finish(i, _finish(bases[i], None, {"status": "skipped", "reason": str(art)}))
                    continue
                if isinstance(art, BenchError):
                    finish(i, _finish(bases[i], None, {"status": "failed", "reason": f"artifact build failed: {art}"}))
                    continue
            art = arts[i]
            result = _measure_once(pc, art, backend, settings, threads, timeout, suite, opts, accuracy=r == 0)
            if k == 1:
                if result.get("status") != "failed":
                    _carry_estimates(result)
                finish(i, _finish(bases[i], art, result))
                continue
            journal.append_repeat(i, r, result)  # measured data is on disk at once
            partial.setdefault(i, []).append(result)
            measured = result.get("status") in ("ok", "invalid") and result.get("samples_ns")
            if r == k - 1 or (r == 0 and not measured):  # done, or nothing to repeat (failed, unsupported)
                finish(i, _combine(bases[i], art, partial.pop(i), pc, settings))
    except KeyboardInterrupt:
        interrupted = True
    done: list[dict] = []
    for i, pc in enumerate(cases):
        if i in finished:
            done.append(finished[i])
        elif partial.get(i):  # interrupted between repeats: keep what was measured
            case = _combine(bases[i], arts[i], partial[i], pc, settings)
            note = f"interrupted after {len(partial[i])} of {k} repeats"
            if isinstance(case.get("validity"), dict):
                case["validity"].setdefault("warnings", []).append(note)
            done.append(case)
        else:
            base = bases.get(i) or _identity(pc, device=device, runtime_version=runtime_version, threads=threads,
                                             simulated=bool(getattr(backend, "simulated", False)), options=key_options)
            done.append(_finish(base, None, {"status": "skipped",
                                             "reason": "interrupted (Ctrl-C) before this case ran"}))
    record = dict(header)
    record.update(finished_at=records.isoformat(records.utcnow()), interrupted=interrupted, cases=done)
    path = records.write_record(record, out_dir)
    journal.remove()
    if interrupted:
        raise RunInterrupted(record, path)
    return record, path


def _check_data(models: set[str]) -> None:
    """Every weights package and data set the planned zoo models need is here, or one line naming the
    package and its install command (exit 2) before any case runs -- never a run of skipped cases."""
    from suites import datasets

    datasets.require_models(models)


class RunInterrupted(KeyboardInterrupt):
    def __init__(self, record: dict, path: Path):
        super().__init__("interrupted")
        self.record = record
        self.path = path


def _version() -> str:
    from harness import __version__

    return __version__


def _artifact(model: str, variant: str, rebuild: bool, emit):
    from suites.build import artifact_for

    emit("artifact", {"model": model, "variant": variant})
    t0 = time.perf_counter()
    try:
        art, built = artifact_for(model, variant, rebuild=rebuild)
    except BenchError as exc:
        return exc
    except Exception as exc:  # a recipe that breaks fails its cases, not the run
        return BenchError(f"{type(exc).__name__}: {exc}")
    emit("artifact_ready", {"model": model, "variant": variant, "built": built, "seconds": time.perf_counter() - t0})
    return art


def _identity(pc, *, device, runtime_version, threads, simulated, options=None) -> dict:
    return {**pc.as_dict(), "case_id": pc.case_id, "device": device, "runtime_version": runtime_version,
            "threads": {"requested": threads}, "simulated": simulated, "options": dict(options or {})}


def _key_options(backend, options: dict | None) -> dict:
    """The run's backend options that change what is measured (they go into every case's key)."""
    from harness.run.env import measured_options

    return measured_options(options, not_measured=getattr(backend, "options_not_measured", ()),
                            defaults=getattr(backend, "option_defaults", None))


def _finish(base: dict, art, result: dict) -> dict:
    from harness.run.env import comparability_key, key_fields

    case = dict(base)
    case["artifact"] = None if art is None else {"key": art.key, "dir": str(art.dir), "opset": art.meta.get("opset"),
                                                 "recipe": art.meta.get("recipe")}
    case.update(result)
    kf = key_fields({**case, "artifact_hash": None if art is None else art.key,
                     "threads": (case.get("threads") or {}).get("requested")})
    case["key_fields"] = kf
    case["key"] = comparability_key(kf)
    case.setdefault("reason", None)
    if art is not None and "complexity" not in case:
        case["complexity"] = art.meta.get("complexity")
    return case


def _combine(base: dict, art, results: list[dict], pc, settings) -> dict:
    """The case record from its repeats (harness.repeats.combine), identity and key around it."""
    from harness.run.repeats import combine

    result = combine(results, scenario=pc.scenario, batch=int(pc.batch), settings=settings)
    if result.get("status") in ("ok", "invalid"):
        _carry_estimates(result)
    return _finish(base, art, result)


def _measure_once(pc, art, backend, settings, threads, timeout, suite, opts, *, accuracy: bool = True) -> dict:
    """One worker process measuring one case: the measured part of a case record (not yet keyed)."""
    from harness.run.worker import run_in_worker

    payload = {
        "case": pc.as_dict(),
        "artifact_dir": str(art.dir),
        "settings": asdict(settings),
        "threads": threads,
        "gate": suite.gate_for(pc.model, pc.variant),
        "metric": _metric(suite.metric, art),
        "checks": list(art.meta.get("checks") or []),
        "options": opts.backend_options,
        "scenario": {**{k: v for k, v in opts.scenario_options.items() if v is not None},
                     **({} if opts.scenario_options.get("latency_bound_ms") is not None else
                        {"latency_bound_ms": _bound(suite, pc.model)})},
        # the parent resolved the backend; the worker loads that very class (no second discovery)
        "backend_ref": f"{type(backend).__module__}:{type(backend).__qualname__}",
        "accuracy": bool(accuracy),
    }
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    wr = run_in_worker("harness.run.case:run_case", payload, timeout_s=timeout, env=env, cpus=opts.pin)
    worker = wr.to_record()
    if wr.ok and wr.result is not None:
        result = dict(wr.result)
        device_memory = (result.get("timings") or {}).get("memory") if isinstance(result.get("timings"), dict) else None
        result["memory"] = {"peak_rss_bytes": wr.peak_rss_bytes,
                            **({"device": device_memory} if device_memory else {})}
        if result.get("backend_info"):
            bi = result["backend_info"]
            result["threads"] = {"requested": threads,
                                 **{k: v for k, v in bi.items() if "thread" in k}}
        result["worker"] = worker
        if opts.pin:
            result["pinned_cpus"] = worker.get("cpus")
        return result
    return {"status": "failed", "reason": wr.reason or "worker failed", "worker": worker}


def _check_scenario_options(o: dict) -> None:
    """Bad load-generator options and a missing LoadGen: one line, exit 2, before any case runs."""
    from harness.measure.scenarios import ScenarioSettings

    try:
        ScenarioSettings(target_qps=o.get("target_qps"), latency_bound_ms=o.get("latency_bound_ms"),
                         samples_per_query=o.get("samples_per_query") or 8).validate()
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if o.get("samples_per_query") is not None and int(o["samples_per_query"]) < 1:
        raise BenchError(f"multi-stream samples per query must be an integer >= 1, got {o['samples_per_query']!r}")
    if o.get("concurrency") is not None and int(o["concurrency"]) < 1:
        raise BenchError(f"concurrency must be >= 1, got {o['concurrency']!r}")
    if (o.get("driver") or "bench") not in ("bench", "loadgen"):
        raise BenchError(f"unknown driver {o['driver']!r} (choose from: bench, loadgen)")
    if o.get("driver") == "loadgen":
        from harness.run.lg_driver import require

        require()


def _bound(suite, model: str) -> float | None:
    """The suite's server latency bound for ``model`` (per model, else suite-wide; None = default)."""
    for m in suite.models:
        if m["name"] == model and m.get("latency_bound_ms") is not None:
            return float(m["latency_bound_ms"])
    return suite.data.get("latency_bound_ms")


def _metric(suite_metric: str | None, art) -> str | None:
    """The suite's metric, else the artifact's own (e.g. cosine for an embedding model); top-1 only
    where the model has labels."""
    if suite_metric == "top1" and art.meta.get("task") != "classification":
        suite_metric = None
    return suite_metric or art.meta.get("metric")


def _carry_estimates(result: dict) -> None:
    """A simulated backend returns its figures as ``timings["estimates"]``: move them to the case's
    top-level ``estimates`` (never mixed with measured ones). Their ``identity`` (the simulated part
    and the precision actually emulated) replaces the planned device / precision, so runs on
    different parts or precisions do not share a comparability key."""
    timings = result.get("timings")
    if not isinstance(timings, dict) or not isinstance(timings.get("estimates"), dict):
        return
    est = timings.pop("estimates")
    result["timings"] = timings or None
    result["estimates"] = est
    ident = est.get("identity") or {}
    for k in ("device", "precision"):
        if ident.get(k):
            result[k] = ident[k]
    # The measured wall time is the emulator's: its stability says nothing about the simulated
    # device, so timing reasons become warnings; the accuracy gate still decides.
    v = result.get("validity")
    if isinstance(v, dict) and v.get("reasons"):
        timing = [r for r in v["reasons"] if not str(r).startswith("accuracy_gate_failed")]
        if timing:
            v["reasons"] = [r for r in v["reasons"] if r not in timing]
            v["warnings"] = list(v.get("warnings") or []) + [f"emulator timing (not the device's): {r}"
                                                             for r in timing]
            v["valid"] = not v["reasons"]
            if result.get("status") == "invalid" and v["valid"]:
                result["status"], result["reason"] = "ok", None
            elif result.get("status") == "invalid":
                result["reason"] = "; ".join(v["reasons"])


def exit_code(record: dict) -> int:
    """0 when every case is ok (or unsupported: a stated limit, not a failure); 1 otherwise (a design
    that does not fit the simulated part counts as a failure, as before it had its own status)."""
    bad = [c for c in record["cases"] if c["status"] in ("failed", "invalid", "does_not_fit")]
    return 1 if bad else 0
