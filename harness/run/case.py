"""One case, run inside its own worker process: prepare -> warm up -> measure -> accuracy.

This is the worker's target (``harness.run.case:run_case``); the parent (``harness.run.runner``)
adds identity (key, case id) and worker facts (exit code, stderr) around what it returns.

Scenarios (MLPerf's definitions, adapted to one process):
- ``single-stream``: batch 1; each query is sent when the previous one completed; every
  sample is one query's latency; headline = p90 latency.
- ``offline``, ``server``, ``multi-stream``: driven by bench's load generator
  (:mod:`harness.run.scenario_case` -> :mod:`harness.measure.scenarios` -> :mod:`harness.measure.loadgen`), with
  several queries in flight when the session declares ``max_concurrency > 1``. Offline: all
  samples issued at once, headline = samples completed / wall time (one case per batch size
  of the sweep). Server: Poisson arrivals, headline ``max_qps`` under the latency bound
  (or ``qps`` at ``--target-qps``). Multi-stream: 8 samples a query, headline p99.
Single-stream inputs rotate through a pool of distinct real eval batches (LoadGen's
performance sample set), cast to the model's input dtype before timing starts.
``--driver loadgen`` also runs the case under MLPerf LoadGen (:mod:`harness.run.lg_driver`).
"""
from __future__ import annotations

import itertools
import time

import numpy as np

SCENARIOS = ("single-stream", "offline", "server", "multi-stream")
GENERATOR_SCENARIOS = ("offline", "server", "multi-stream")
POOL_BATCHES = 32


def input_pool(eval_x: dict, inputs_meta: list[dict], batch: int, n_batches: int = POOL_BATCHES) -> list[dict]:
    """Up to ``n_batches`` distinct batches of real eval inputs, contiguous, right dtype."""
    names = [i["name"] for i in inputs_meta]
    n = len(eval_x[names[0]])
    pool = []
    for j in range(n_batches):
        idx = (np.arange(batch) + j * batch) % n
        pool.append({i["name"]: np.ascontiguousarray(eval_x[i["name"]][idx].astype(i["dtype"])) for i in inputs_meta})
        if (j + 1) * batch >= n and j > 0:
            break
    return pool


def retry_worthy(timing_verdict: dict) -> bool:
    """Measure again when the system changed during the window (drift) or the median's CI was
    not reached: what a careful person does on a shared machine. The discarded attempts are
    recorded with their reasons; the final verdict is the last attempt's."""
    return any(r.startswith(("unstable", "ci_not_reached")) for r in timing_verdict["reasons"])


def retry_allowed(timing_verdict: dict, attempts: list, max_retries: int, *, spent_s: float, budget_s: float) -> bool:
    """Another attempt when it is worth it (:func:`retry_worthy`), fewer than ``max_retries``
    were made, and the attempts so far took less than ``budget_s`` = (max_retries + 1) x the
    suite's max_time_s: a window already stretched past that for the headline's sample count
    (a 170 ms model's 72 samples: 12 s) is as long as a case affords, and a second and third one
    would triple the case for a verdict that stays the same on that machine."""
    return retry_worthy(timing_verdict) and len(attempts) < max_retries and spent_s < budget_s


def headline(scenario: str, stats: dict, throughput: dict) -> dict:
    if scenario == "single-stream":
        return {"metric": "p90_latency", "value": stats["p90"], "unit": "ns"}
    return {"metric": "samples_per_s", "value": throughput["samples_per_s"], "unit": "1/s"}


def session_report(session):
    """The session's :class:`backends.base.SessionReport`; a session object that is no
    :class:`~backends.base.Session` subclass is read through the older hooks (``timings()``, ``info``)."""
    from backends.base import Session, legacy_report

    if isinstance(session, Session):
        return session.report()
    return legacy_report(session.timings(), session.info)


def run_case(payload: dict) -> dict:
    """Worker entry: returns the measured part of a case record (JSON-serialisable)."""
    from backends.base import DoesNotFit, Session, UnsupportedCase
    from harness.measure import accuracy as acc
    from harness.plan.artifacts import Artifact
    from harness.measure.energy import measure_energy
    from harness.measure.timing import (EARLY_STOPPING_CONFIDENCE, HEADLINE_Q, MeasureSettings, measure,
                                        stretch_for_count, verdict, warm_up)
    from harness.plan.plugins import get_backend, load_object
    from harness.measure.stats import early_stopping_percentile, summarize

    case = payload["case"]
    scenario = case["scenario"]
    batch = int(case["batch"])
    if payload.get("kind") == "llm":  # a generative model: prefill/decode sessions, token timestamps
        from harness.run.llm_case import run_llm_case

        ref = payload.get("backend_ref")
        backend = load_object(ref)() if ref else get_backend(case["backend"])
        return run_llm_case(payload, backend, Artifact.load(payload["artifact_dir"]))
    if scenario not in SCENARIOS:
        return {"status": "unsupported", "reason": f"scenario {scenario} is not implemented yet"}
    settings = MeasureSettings(**payload["settings"])
    sc_opts = payload.get("scenario") or {}
    threads = int(payload["threads"])
    concurrency = 1
    if scenario in GENERATOR_SCENARIOS:
        from harness.run.scenario_case import threads_for

        concurrency = int(sc_opts.get("concurrency") or threads)
        threads = threads_for(threads, concurrency)
    q = HEADLINE_Q.get(scenario)
    if q is not None and scenario not in GENERATOR_SCENARIOS:
        # enough samples to bound the headline percentile (MLPerf's early-stopping count)
        from harness.measure.stats import early_stopping_min_queries

        need = early_stopping_min_queries(0, q, EARLY_STOPPING_CONFIDENCE)
        settings.min_iterations = min(max(settings.min_iterations, need), settings.max_iterations)
    ref = payload.get("backend_ref")
    backend = load_object(ref)() if ref else get_backend(case["backend"])
    artifact = Artifact.load(payload["artifact_dir"])

    t_prep = time.perf_counter()
    try:
        session = backend.prepare(artifact, precision=case["precision"], batch=batch, threads=threads,
                                  runtime=case["runtime"], options=payload.get("options") or {})
    except UnsupportedCase as exc:
        return {"status": "unsupported", "reason": str(exc)}
    except DoesNotFit as exc:  # not run, but its estimate is kept (the runner moves it to case["estimates"])
        return {"status": "does_not_fit", "reason": str(exc),
                "report": {"timings": None, "estimates": exc.estimates or None}}
    prepare_s = time.perf_counter() - t_prep
    phases = {"prepare": prepare_s}

    t_ev = time.perf_counter()
    ev = artifact.eval_data()
    phases["eval_data"] = time.perf_counter() - t_ev
    if scenario in GENERATOR_SCENARIOS:
        return _generator_case(payload, session, artifact, ev, settings, scenario, batch, sc_opts, threads,
                               concurrency, prepare_s, phases)
    pool = input_pool(ev["x"], artifact.inputs, batch)
    run = session.run
    sync = session.synchronize
    needs_sync = type(session).synchronize is not Session.synchronize
    it = itertools.cycle(pool)
    nxt = it.__next__

    if needs_sync:
        def step():
            run(nxt())
            sync()
    else:
        def step():
            run(nxt())

    t_ph = time.perf_counter()
    t_first = time.perf_counter_ns()
    step()  # first call reported apart (lazy init, compile, autotune)
    first_call_ns = time.perf_counter_ns() - t_first
    wu = warm_up(step, settings)
    retry_budget_s = (settings.max_retries + 1) * settings.max_time_s  # before any stretch: see retry_allowed
    stretched = stretch_for_count(settings, float(np.percentile(wu["samples_ns"], 90)) if wu["samples_ns"] else 0.0,
                                  cap_s=0.4 * float(payload.get("timeout_s") or 300.0))
    if stretched is not None:  # the headline's sample count wins over max_time (recorded in the settings)
        settings.max_time_s = stretched
    phases["warmup"] = time.perf_counter() - t_ph
    t_ph = time.perf_counter()
    meter = session.energy_meter()
    attempts = []  # measurements discarded as unstable, kept in the record
    while True:
        res, energy = measure_energy(meter, lambda: measure(step, settings, headline_q=q),
                                     inferences_of=lambda r: r.iterations * batch)
        samples = res.samples_ns
        stats = summarize(samples, settings.confidence)
        timing = verdict(stats, res.stop_reason, settings, scenario=scenario, samples=samples)
        if not retry_allowed(timing, attempts, settings.max_retries,
                             spent_s=time.perf_counter() - t_ph, budget_s=retry_budget_s):
            break
        attempts.append({"iterations": res.iterations, "duration_s": res.duration_s, "stop_reason": res.stop_reason,
                         "p50": stats["p50"], "drift": stats["drift"], "reasons": timing["reasons"]})
    mean_s = stats["mean"] / 1e9
    throughput = {"samples_per_s": batch / mean_s, "queries_per_s": 1.0 / mean_s}
    phases["measure"] = time.perf_counter() - t_ph
    t_ph = time.perf_counter()

    # Accuracy through the same session that was timed (once per case: repeats after the
    # first skip it — the same artifact on the same data gives the same answer).
    accuracy = None
    if payload.get("accuracy", True):
        outputs, source = _accuracy_outputs(lambda x: (run(x), sync())[0], ev["x"], batch, payload, artifact)
        ref_meta = artifact.meta.get("reference") or {}
        metric = payload.get("metric") or ("top1" if ev["labels"] is not None else "top1_agreement")
        accuracy = acc.evaluate(outputs, labels=ev["labels"], reference=ev["reference"],
                                baseline_value=ref_meta.get("value") if metric == "top1" else None,
                                gate=payload.get("gate"), metric=metric, **_task_args(artifact, ev, outputs, payload))
        accuracy["source"] = source
    # the headline p90 by MLPerf's early-stopping count and its CI (reason "headline_percentile"),
    # and warm-up that did not settle: harness.measure.verdict
    v = verdict(stats, res.stop_reason, settings, accuracy_passed=accuracy["passed"] if accuracy else None,
                scenario=scenario, samples=samples, warmup_settled=wu["settled"])
    if stretched is not None:  # the window was lengthened for the headline's count: said in the verdict
        v["max_time_s"] = stretched
    if accuracy and accuracy.get("reason"):  # e.g. non-finite outputs: say why the gate failed
        v["reasons"] = [f"accuracy_gate_failed: {accuracy['reason']}" if r.startswith("accuracy_gate_failed") else r
                        for r in v["reasons"]]
    es = early_stopping_percentile(samples, HEADLINE_Q["single-stream"], EARLY_STOPPING_CONFIDENCE)
    phases["accuracy"] = time.perf_counter() - t_ph
    t_ph = time.perf_counter()
    lg_summary = _loadgen_driver(payload, session, ev, artifact, scenario, batch, sc_opts, stats)
    if lg_summary is not None:
        phases["loadgen"] = time.perf_counter() - t_ph
    # what the session reports (SessionReport), before close(): a session may free what it measured
    report = session_report(session)
    session.close()
    return {
        "early_stopping": es,
        **({"loadgen": lg_summary} if lg_summary is not None else {}),
        "status": "ok" if v["valid"] else "invalid",
        "reason": None if v["valid"] else "; ".join(v["reasons"]),
        "latency_ns": stats,
        "throughput": throughput,
        "headline": headline(scenario, stats, throughput),
        "samples_ns": [int(s) for s in samples],
        "iterations": res.iterations,
        "duration_s": res.duration_s,
        "warmup": {k: v_ for k, v_ in wu.items() if k != "samples_ns"} | {"first_call_ns": first_call_ns,
                                                                          "prepare_s": prepare_s},
        "stop_reason": res.stop_reason,
        "attempts": attempts,
        "validity": v,
        "accuracy": accuracy,
        "energy": energy,
        "phases_s": _rounded(phases),
        "report": report.to_dict(),  # placed into the record by the parent (harness.run.runner)
    }


def _accuracy_outputs(run, x: dict, batch: int, payload: dict, artifact):
    """Every eval sample's output through the timed session: a full pass, or a stored pass of
    the same system verified on a random share of whole chunks (harness.run.accuracy_store)."""
    import os

    from harness.run import accuracy_store

    seed = int.from_bytes(os.urandom(4), "little")
    out, source = accuracy_store.outputs(run, x, batch, payload=payload, artifact=artifact, seed=seed)
    if source["kind"] == "verified":
        source["seed"] = seed
    return out, source


def _rounded(phases: dict) -> dict:
    return {k: round(float(v), 4) for k, v in phases.items()}


def _loadgen_driver(payload, session, ev, artifact, scenario, batch, sc_opts, stats, bench_value=None):
    """``--driver loadgen``: the same case under MLPerf LoadGen, on the same session (or None)."""
    if (sc_opts.get("driver") or "bench") != "loadgen":
        return None
    from harness.run import lg_driver
    from harness.run.scenario_case import sample_library

    data = sample_library(ev["x"], artifact.inputs)
    try:
        return lg_driver.run_case(session, scenario=scenario, batch=batch, data=data, opts=sc_opts,
                                  settings=payload["settings"], bench_stats=stats, bench_value=bench_value,
                                  concurrency=int(sc_opts.get("concurrency") or payload["threads"]))
    except lg_driver.LoadGenMissing as exc:
        return {"result": None, "error": str(exc)}


def _generator_case(payload, session, artifact, ev, settings, scenario, batch, sc_opts, threads, concurrency,
                    prepare_s, phases):
    """Offline / server / multi-stream through bench's load generator (see harness.run.scenario_case)."""
    from harness.measure import accuracy as acc
    from harness.run import scenario_case as scase

    data = scase.sample_library(ev["x"], artifact.inputs)
    res = scase.run(session, scenario=scenario, batch=batch, data=data, measure_settings=settings,
                    opts={**sc_opts, "case_timeout_s": payload.get("timeout_s")},
                    threads_per_query=threads, requested_concurrency=concurrency, meter=session.energy_meter())
    energy = res.pop("_energy")
    logged = res.pop("_logged")
    phases.update(res.pop("_phases", {}))
    t_ph = time.perf_counter()
    run, sync = session.run, session.synchronize
    outputs, source = _accuracy_outputs(lambda x: (run(x), sync())[0], ev["x"], batch, payload, artifact)
    ref_meta = artifact.meta.get("reference") or {}
    metric = payload.get("metric") or ("top1" if ev["labels"] is not None else "top1_agreement")
    baseline = ref_meta.get("value") if metric == "top1" else None
    accuracy = acc.evaluate(outputs, labels=ev["labels"], reference=ev["reference"], baseline_value=baseline,
                            gate=payload.get("gate"), metric=metric, **_task_args(artifact, ev, outputs, payload))
    accuracy["source"] = source
    in_window = scase.in_window_accuracy(logged, outputs, ev["labels"], reference=ev["reference"])
    v = res["validity"]
    if accuracy["passed"] is False:
        v["valid"] = False
        v["reasons"].append("accuracy_gate_failed: accuracy outside the gate")
    if in_window is not None and in_window.get("passed") is False:
        v["valid"] = False
        v["reasons"].append(f"integrity_accuracy: only {100 * in_window['agreement']:.1f}% of the responses "
                            "logged during the timed window match the accuracy pass's outputs"
                            + (f", and they are less accurate ({in_window['logged_accuracy']} vs "
                               f"{in_window['accuracy_pass']})" if in_window.get("batch_dependent") else ""))
    res["generator"]["integrity"]["in_window_accuracy"] = in_window
    phases["accuracy"] = time.perf_counter() - t_ph
    t_ph = time.perf_counter()
    lg_summary = _loadgen_driver(payload, session, ev, artifact, scenario, batch, sc_opts, res["latency_ns"],
                                 bench_value=(res["headline"] or {}).get("value"))
    if lg_summary is not None:
        phases["loadgen"] = time.perf_counter() - t_ph
    report = session_report(session)
    session.close()
    res["warmup"] = {**res["warmup"], "prepare_s": prepare_s}
    res["phases_s"] = _rounded(phases)
    return {
        "status": "ok" if v["valid"] else "invalid",
        "reason": None if v["valid"] else "; ".join(v["reasons"]),
        **res,
        "attempts": [],
        "accuracy": accuracy,
        "energy": energy,
        **({"loadgen": lg_summary} if lg_summary is not None else {}),
        "report": report.to_dict(),  # placed into the record by the parent (harness.run.runner)
    }


def _task_args(artifact, ev: dict, outputs, payload: dict) -> dict:
    """The model's own task metrics (its scorer, run on these outputs), the fp32 values of every
    metric and the further gated metrics: keyword arguments of ``harness.measure.accuracy.evaluate``."""
    from harness.plan.plugins import load_object

    scorer = artifact.meta.get("scorer")
    return {"task": load_object(scorer)(outputs, ev.get("task") or {}) if scorer else None,
            "baselines": (artifact.meta.get("reference") or {}).get("metrics"),
            "checks": payload.get("checks") or ()}
