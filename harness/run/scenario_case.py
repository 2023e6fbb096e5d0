"""Worker side of the load-generator scenarios (server, multi-stream, offline) for one case.

Place in the data path: worker case (:mod:`harness.run.case`, after ``prepare``) -> **this
driver** (query sample library, SUT adapter, warm-up, scenario run or peak search,
integrity checks, record fields) -> :mod:`harness.measure.scenarios` / :mod:`harness.measure.loadgen`.
``--driver loadgen`` additionally runs the same case under MLPerf LoadGen
(:mod:`harness.run.lg_driver`) on the same session.
"""
from __future__ import annotations

import math
import time

import numpy as np

from harness.measure import scenarios as sc
from harness.measure.sut import SessionSUT

#: responses kept for the in-window accuracy check: every k-th query (bounded memory)
LOG_EVERY = 4
#: queries of the one step an infeasible server case runs (one query alone is over the bound)
INFEASIBLE_STEP_QUERIES = 16


def sample_library(eval_x: dict, inputs_meta: list[dict]) -> dict:
    """The query sample library: every eval sample, per input, cast to the model's dtype."""
    return {i["name"]: np.ascontiguousarray(eval_x[i["name"]].astype(i["dtype"])) for i in inputs_meta}


def scenario_settings(scenario: str, opts: dict, measure_settings) -> sc.ScenarioSettings:
    """Scenario sizing from the case's measurement settings and the user's scenario options."""
    s = sc.ScenarioSettings(
        scenario=scenario,
        min_duration_s=float(measure_settings.min_time_s),
        max_duration_s=float(max(measure_settings.max_time_s, measure_settings.min_time_s)),
        min_queries=opts.get("min_queries"),
        target_qps=opts.get("target_qps"),
        latency_bound_ms=opts.get("latency_bound_ms"),
        samples_per_query=int(opts.get("samples_per_query") or 8),
        seed=int(opts.get("seed") or 0),
    )
    s.validate()
    return s


def concurrency_plan(session, requested: int) -> dict:
    """How many queries may be in flight: min(requested, the session's declared max)."""
    declared = int(getattr(session, "max_concurrency", 1) or 1)
    used = max(1, min(int(requested), declared))
    out = {"requested": int(requested), "session_max": declared, "used": used}
    if declared <= 1 < requested:
        out["note"] = "the session's run() is not declared thread-safe: one query in flight"
    return out


def _step_record(r: dict, settings: sc.ScenarioSettings) -> dict:
    s = r["summary"]
    es = s.get("early_stopping") or {}
    lat = s.get("latency_ns") or {}
    return {"target_qps": s.get("target_qps"), "scheduled_qps": s.get("scheduled_qps"),
            "completed_qps": s.get("queries_per_s"), "queries": s["queries"], "duration_s": s["duration_s"],
            "p50_ns": lat.get("p50"), "p99_ns": lat.get("p99"), "p99_early_stopping_ns": es.get("estimate"),
            "bound_ns": settings.bound_ns, "over_bound": s.get("over_bound"),
            "schedule_error_p50_ns": (s.get("schedule_error_ns") or {}).get("p50"),
            "valid": r["validity"]["valid"], "reasons": r["validity"]["reasons"]}


def run(session, *, scenario: str, batch: int, data: dict, measure_settings, opts: dict, threads_per_query: int,
        requested_concurrency: int, meter=None) -> dict:
    """Run one scenario case on a prepared session; returns the measured part of the record
    (everything but accuracy and backend facts, which :mod:`harness.run.case` adds).

    Energy (``meter``: the session's, see :mod:`harness.measure.energy`) is read around each
    performance window only -- not the warm-up, the burst or the integrity checks: the offline
    run, the multi-stream run, and every server step (in the step's record); the case's
    ``_energy`` is the reported window's (for server: the peak step, else the last step run).
    """
    from backends.base import Session
    from harness.measure.energy import measure_energy

    def metered(window):
        return measure_energy(meter, window, inferences_of=lambda r: r["summary"]["samples"],
                              duration_of=lambda r: r["summary"]["duration_s"])

    settings = scenario_settings(scenario, opts, measure_settings)
    conc = concurrency_plan(session, requested_concurrency)
    conc["intra_op_threads_per_query"] = threads_per_query
    needs_sync = type(session).synchronize is not Session.synchronize
    sync = session.synchronize if needs_sync else None
    n_samples = len(next(iter(data.values())))
    closed = scenario == "multi-stream"
    inline = closed and conc["used"] == 1
    delay_ns = int(float(opts.get("max_queue_delay_us") or 0) * 1000) if scenario == "server" else 0
    sut = SessionSUT(session.run, data, batch=batch, concurrency=conc["used"], inline=inline,
                     max_queue_delay_ns=delay_ns, log_every=LOG_EVERY, sync=sync)
    phases = {}
    t_ph = time.perf_counter()
    try:
        # warm-up, service-time estimate and the caching check (MLPerf TEST04-like) in one:
        # inline queries of one batch, pairs of a distinct and a repeated batch (scenarios.caching_check)
        def run_query(q: range) -> None:
            session.run(sut.inputs_for(q))
            if sync:
                sync()

        caching = sc.caching_check(run_query, n_samples, batch,
                                   min_time_s=max(0.25, min(1.0, float(measure_settings.warmup_min_time_s))))
        times = caching.pop("distinct_ns")
        warm_queries = caching["queries"]
        if not times:  # too few samples for distinct batches: time the repeated one
            times = [_timed(run_query, range(0, batch)) for _ in range(4)]
            warm_queries += len(times)
        service_ns = float(np.median(times))
        warm = {"iterations": warm_queries, "service_p50_ns": service_ns}
        phases["warmup"] = time.perf_counter() - t_ph
        t_ph = time.perf_counter()
        steps = []
        out: dict = {}
        if scenario == "server":
            search = {"t0": time.monotonic(), "budget_s": None}

            def run_at_capped(qps: float, cap: int | None) -> dict:
                sut.responses.clear()
                r, energy = metered(lambda: sc.run_server(sut, qps, settings, n_samples, max_queries=cap))
                rec = _step_record(r, settings)
                rec["energy"] = energy
                rec["_run"] = r
                return rec

            def run_at(qps: float) -> dict:
                cap = None
                if search["budget_s"] is not None:
                    # a step never runs past the search's budget: at 1.7 QPS (a 290 ms model) the
                    # 600 queries of a valid p99 take 350 s, longer than the case may run
                    left = search["budget_s"] - (time.monotonic() - search["t0"])
                    cap = max(1, math.floor(qps * max(left, 0.0)))
                return run_at_capped(qps, cap)

            infeasible = service_ns >= settings.bound_ns
            if settings.target_qps:
                best = run_at(settings.target_qps)
                steps = [best]
                metric = "qps"
            elif infeasible:
                # the median of the warm-up's unloaded queries is over the bound: every load's p99 is
                # too (p99 >= median, and load only adds waiting), so no search -- it would spend the
                # case's whole budget proving it (seen: EfficientNet-Lite0 int8-dynamic, 204 ms a
                # query against 80 ms, 6 minutes). One short step at half the unloaded capacity is
                # recorded so the case has its query log.
                best = None
                steps = [run_at_capped(0.5 * conc["used"] * 1e9 / service_ns, INFEASIBLE_STEP_QUERIES)]
                metric = "max_qps"
            else:
                # start at half the throughput a burst of queries reaches through the SUT (its worker
                # threads included), so the ramp brackets the peak in a few steps
                burst = sc.lg.run_burst(sut, list(range(min(n_samples, 2000) if batch == 1 else 256 * batch)))
                capacity = (burst.samples[0] / batch) / max(burst.duration_ns() / 1e9, 1e-9)
                warm["burst_qps"] = capacity
                start = 0.5 * capacity
                search.update(t0=time.monotonic(), budget_s=search_budget(settings, start, opts.get("case_timeout_s")))
                best, steps = sc.search_peak(run_at, start, tolerance=settings.search_tolerance,
                                             max_steps=settings.search_max_steps,
                                             budget_s=search["budget_s"],
                                             confirm=True)
                metric = "max_qps"
            chosen = best if best is not None else steps[-1]
            result = chosen["_run"]
            energy = dict(chosen["energy"], window=f"server step at {chosen.get('qps') or chosen['target_qps']:.4g} QPS"
                          + (" (the peak)" if best is not None and metric == "max_qps" else ""))
            if best is None:
                result = dict(result)
                alone = ""
                if infeasible:  # no load meets it: say so rather than blame the load
                    alone = (f" (one query alone takes {service_ns / 1e6:.3g} ms on the {threads_per_query} "
                             f"thread(s) a query gets at concurrency {conc['used']}: no load can meet the bound"
                             + ("; no peak search was run)" if metric == "max_qps" else ")"))
                result["validity"] = {"valid": False, "reasons": ["latency_bound: no QPS tried kept the p99 within "
                                                                  f"{settings.bound_ns / 1e6:g} ms{alone}"] +
                                      [r for r in result["validity"]["reasons"] if not r.startswith("latency_bound")],
                                      "warnings": result["validity"]["warnings"]}
            if metric == "max_qps" and best is not None and not any(
                    not st["valid"] and st["qps"] > best["qps"] for st in steps):
                result = dict(result)
                result["validity"] = dict(result["validity"], warnings=list(result["validity"]["warnings"]) + [
                    f"peak_not_bracketed: the search stopped ({len(steps)} steps) before any QPS above "
                    f"{best['qps']:.4g} failed; max_qps is a lower bound"])
            value = float(chosen["qps"] if best is not None else 0.0) if metric == "max_qps" else \
                float(result["summary"]["queries_per_s"] or 0.0)
            # no valid QPS: no headline figure (the steps and the reason say what happened)
            out["headline"] = {"metric": metric, "value": value, "unit": "1/s"} if (best is not None or
                                                                                   metric == "qps") else None
        elif scenario == "multi-stream":
            result, energy = metered(lambda: sc.run_multi_stream(sut, settings, n_samples))
            energy["window"] = "multi-stream run"
            es = result["summary"]["early_stopping"] or {}
            value = es.get("estimate") or (result["summary"]["latency_ns"] or {}).get("p99")
            out["headline"] = {"metric": "p99_latency", "value": float(value or 0.0), "unit": "ns"}
        else:  # offline
            expected = conc["used"] * batch / max(service_ns / 1e9, 1e-9)
            result, energy = metered(lambda: sc.run_offline(sut, settings, n_samples, expected_sps=expected))
            energy["window"] = "offline run"
            out["headline"] = {"metric": "samples_per_s", "value": float(result["summary"]["samples_per_s"] or 0.0),
                               "unit": "1/s"}
        summary = result["summary"]
        validity = {k: list(v) if isinstance(v, list) else v for k, v in result["validity"].items()}
        logged = sc.logged_responses(sut.responses)
        errors = list(sut.errors)
        phases["measure"] = time.perf_counter() - t_ph
    finally:
        sut.close()
    if errors:
        validity["valid"] = False
        validity["reasons"].append(f"sut_errors: {len(errors)} runs raised, first: {errors[0]}")
    if caching.get("passed") is False:
        validity["valid"] = False
        validity["reasons"].append(f"integrity_caching: same-sample p50 is {100 * (1 - caching['ratio']):.0f}% faster "
                                   "than distinct samples (results cached?)")
    log = result["log"]
    lat = log.latency_ns()[log.completed >= 0]
    out.update({
        "validity": validity,
        "latency_ns": summary["latency_ns"],
        "throughput": {"samples_per_s": summary["samples_per_s"], "queries_per_s": summary["queries_per_s"]},
        "samples_ns": [int(x) for x in lat],
        "iterations": summary["queries"],
        "duration_s": summary["duration_s"],
        "stop_reason": None,
        "warmup": warm,
        "generator": {
            "settings": settings.to_dict(),
            "summary": {k: v for k, v in summary.items() if k != "latency_ns"},
            "queries": log.to_record(),
            "steps": [{k: v for k, v in s.items() if k != "_run"} for s in steps],
            "concurrency": conc,
            "dynamic_batching": ({"max_queue_delay_us": delay_ns / 1000, "batch": batch,
                                  "batch_sizes_p50": float(np.median(sut.batch_sizes)) if sut.batch_sizes else None}
                                 if delay_ns else None),
            "integrity": {"caching": caching},
        },
        "_logged": logged,
        "_phases": phases,
        "_energy": energy,
    })
    return out


def _timed(fn, arg) -> int:
    t0 = time.perf_counter_ns()
    fn(arg)
    return time.perf_counter_ns() - t0


def in_window_accuracy(logged, accuracy_outputs: np.ndarray, labels: np.ndarray | None, *,
                       reference: np.ndarray | None = None, min_agreement: float = 0.99, rtol: float = 1e-3,
                       tolerance: float = 0.01) -> dict | None:
    """Responses logged during the timed window against the accuracy pass's outputs for the same
    samples (after MLPerf's TEST01: performance-mode responses must be as accurate as
    accuracy-mode ones).

    Per logged sample: agree when argmax matches (classifiers) and the output is close,
    |y - r| <= rtol x max|r| + 1e-6. ``passed`` when the agreeing fraction >= ``min_agreement``.
    Outputs may legitimately differ with the batch a sample ran in (dynamic quantization takes
    its activation ranges from the whole batch): then, as TEST01 does when the logged outputs
    differ, their accuracy decides -- ``passed`` when, on the logged samples, top-1 against the
    labels (labelled models) or top-1 agreement and cosine to the fp32 reference (the others)
    are at most ``tolerance`` below the accuracy pass's own figures (``batch_dependent``: True).
    ``top1`` on the logged samples is reported too when labels exist (a small subset: not gated).
    """
    if logged is None:
        return None
    from harness.run.accuracy_store import matches

    idx, outputs = logged
    ref = accuracy_outputs[idx]
    y = outputs.reshape(len(outputs), -1).astype(np.float64)
    r = ref.reshape(len(ref), -1).astype(np.float64)
    close = matches(y, r, rtol=rtol)  # the accuracy store's verification uses the same rule
    agreement = float(close.mean())
    out = {"n_samples": int(len(idx)), "agreement": agreement, "min_agreement": min_agreement,
           "max_abs_diff": float(np.abs(y - r).max()), "passed": bool(agreement >= min_agreement)}
    if labels is not None and y.shape[1] > 1:
        out["top1"] = float((y.argmax(1) == labels[idx]).mean())
    if not out["passed"] and len(idx):
        from harness.measure.accuracy import fidelity

        if labels is not None and y.shape[1] > 1:
            logged_acc = {"top1": out["top1"]}
            pass_acc = {"top1": float((r.argmax(1) == labels[idx]).mean())}
        elif reference is not None:
            f_log = fidelity(y, np.asarray(reference)[idx])
            f_acc = fidelity(r, np.asarray(reference)[idx])
            keys = [k for k in ("top1_agreement", "cosine") if f_log.get(k) is not None]
            logged_acc = {k: f_log[k] for k in keys}
            pass_acc = {k: f_acc[k] for k in keys}
        else:
            logged_acc = pass_acc = {}
        if logged_acc:
            out.update(batch_dependent=True, logged_accuracy=logged_acc, accuracy_pass=pass_acc,
                       tolerance=tolerance,
                       passed=all(logged_acc[k] >= pass_acc[k] - tolerance for k in logged_acc))
    return out


def search_budget(settings, start_qps: float, case_timeout_s: float | None = None) -> float:
    """Seconds after which the peak search starts no new step.

    10 x ``max_duration_s``, but at least what 6 steps need at the starting rate -- a step lasts
    at least ``need_queries`` / QPS (600 queries at 38 QPS: 16 s), so a slow model's search would
    otherwise stop after one step and its confirmation, before any halving (seen: EfficientNet-Lite0
    on 2 cores, no valid QPS found) -- and at most 60 % of the case's time limit, so the case
    finishes with what the search found instead of being killed.
    """
    budget = max(10.0 * settings.max_duration_s, 6.0 * settings.need_queries / max(start_qps, 1e-9))
    if case_timeout_s:
        budget = min(budget, 0.6 * float(case_timeout_s))
    return budget


def threads_for(threads: int, concurrency: int) -> int:
    """Intra-op threads per query so N queries in flight do not oversubscribe ``threads`` cores."""
    return max(1, math.floor(threads / max(1, concurrency)))
