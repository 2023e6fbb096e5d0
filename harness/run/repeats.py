"""Repeats: a case measured in K fresh worker processes, and how their results become one case.

Where it sits: between the planner's cases and the executor that runs workers. The runner
asks :func:`schedule` for the order of the worker runs — **round-robin over the cases**, so
repeat r of every case runs before repeat r + 1 of any — and hands each finished case's K
results to :func:`combine`. Any executor (local today, Ray later) that follows the schedule
gets the interleaving: slow drift of the machine (another tenant, heat, a clock change)
then lands on every case alike instead of on whichever case happened to run last.

:func:`combine` keeps each repeat's summary (``repeats``), takes the headline percentiles
and their CIs from the nested two-level bootstrap of :func:`harness.measure.stats.nested_bootstrap`
(processes, then the samples within each), and records the between-process share of the
variance (``between_process``). The pure maths lives in :mod:`harness.measure.stats`.

Profiles (``--profile``) set K and the measuring windows; explicit options win over them.
"""
from __future__ import annotations

import math

from harness.errors import BenchError

__all__ = ["PROFILES", "profile", "schedule", "combine", "parse_cpus"]

#: K (repeat) and measurement-setting overrides per profile. ``quick`` is bench's behaviour
#: without repeats. ``nightly``: 5 short processes (at most 1 s of measuring each, no
#: re-measuring: the between-process scatter is what the headline CI rests on) instead of
#: one long one — the between-process noise is seen and averaged. ``rigorous``: 10 long ones.
PROFILES: dict[str, dict] = {
    "quick": {"repeat": 1, "measurement": {}},
    "nightly": {"repeat": 5, "measurement": {"min_time_s": 0.2, "max_time_s": 1.0, "warmup_max_time_s": 0.5,
                                             "max_retries": 0}},
    "rigorous": {"repeat": 10, "measurement": {"min_time_s": 1.0, "max_time_s": 10.0, "warmup_max_time_s": 5.0,
                                               "target_ci": 0.005}},
}


def profile(name: str | None) -> dict:
    """The profile's ``{"repeat", "measurement"}`` (``None``: quick); unknown names are one line."""
    if name is None:
        return PROFILES["quick"]
    if name not in PROFILES:
        raise BenchError(f"unknown profile '{name}' (choose from: {', '.join(PROFILES)})")
    return PROFILES[name]


def schedule(n_cases: int, k: int) -> list[tuple[int, int]]:
    """The order of worker runs: ``(case index, repeat index)``, round-robin over the cases.

    ``[(0, 0), (1, 0), ..., (n-1, 0), (0, 1), ...]``: every case's repeat r before any
    case's repeat r + 1. With k = 1 it is the plain case order.
    """
    if n_cases < 0 or k < 1:
        raise ValueError(f"need n_cases >= 0 and k >= 1, got {n_cases}, {k}")
    return [(i, r) for r in range(k) for i in range(n_cases)]


def parse_cpus(spec: str, allowed: set[int] | None = None) -> list[int]:
    """``"0,2-3"`` -> ``[0, 2, 3]``; every CPU must be in ``allowed`` (this process's affinity)."""
    cpus: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                cpus.update(range(a, b + 1))
            else:
                cpus.add(int(part))
        except ValueError:
            raise BenchError(f"--pin {spec}: '{part}' is not a CPU number or range (e.g. 0,2-3)") from None
    if not cpus:
        raise BenchError(f"--pin {spec}: no CPU given")
    if allowed is not None and not cpus <= allowed:
        raise BenchError(f"--pin {spec}: CPU(s) {', '.join(map(str, sorted(cpus - allowed)))} not available to this "
                         f"process (available: {', '.join(map(str, sorted(allowed)))})")
    return sorted(cpus)


def _repeat_summary(index: int, r: dict) -> dict:
    lat = r.get("latency_ns") or {}
    wu = r.get("warmup") or {}
    w = r.get("worker") or {}
    return {
        "index": index,
        "status": r.get("status"),
        "reason": r.get("reason"),
        "n": lat.get("n"),
        "p50": lat.get("p50"), "p90": lat.get("p90"), "p99": lat.get("p99"), "mean": lat.get("mean"),
        "median_ci": lat.get("median_ci"), "ci_rel_halfwidth": lat.get("ci_rel_halfwidth"),
        "n_eff": lat.get("n_eff"), "drift": lat.get("drift"), "cv": lat.get("cv"),
        "stop_reason": r.get("stop_reason"), "iterations": r.get("iterations"), "duration_s": r.get("duration_s"),
        "warmup": {k: wu.get(k) for k in ("settled", "iterations", "duration_s") if k in wu},
        "attempts": len(r.get("attempts") or []),
        "throughput": (r.get("throughput") or {}).get("samples_per_s"),
        "headline": (r.get("headline") or {}).get("value"),
        "wall_s": w.get("wall_s"), "peak_rss_bytes": (r.get("memory") or {}).get("peak_rss_bytes"),
        "cpus": w.get("cpus"),
        "validity": r.get("validity"),
    }


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def combine(results: list[dict], *, scenario: str, batch: int, settings, seed: int = 0) -> dict:
    """One case's measured part from its K repeat results (each what ``run_case`` returned).

    * ``samples_ns``: every repeat's samples, repeat after repeat (each in time order);
    * ``latency_ns``: :func:`harness.measure.stats.summarize` of those, except p50 / p90 / p99 and
      their CIs, the mean and ``ci_rel_halfwidth``, which come from the nested bootstrap
      (mean of the per-process values; ``ci_method = "nested_bootstrap"``), ``drift`` (the
      largest per-repeat drift) and ``n_eff`` (summed);
    * ``repeats``: each repeat's summary; ``between_process``: the variance components of
      p50 and of the headline percentile (:func:`harness.measure.stats.variance_components`);
    * validity: invalid when no more than half of the measured repeats are valid, or the
      accuracy gate failed; an invalid minority, a failed repeat, warm-up that did not
      settle and a between-process CI wider than ``target_ci`` are warnings.

    All repeats failed: the first failure is returned (with how many failed).
    """
    from harness.measure.stats import nested_bootstrap, summarize
    from harness.measure.timing import HEADLINE_Q, verdict
    from harness.run.case import GENERATOR_SCENARIOS, headline

    k = len(results)
    measured = [(i, r) for i, r in enumerate(results) if r.get("status") in ("ok", "invalid") and r.get("samples_ns")]
    if not measured:
        first = dict(results[0])
        if k > 1:
            first["reason"] = f"all {k} repeats: {first.get('reason') or first.get('status')}"
        return first
    groups = [r["samples_ns"] for _, r in measured]
    pooled = [s for g in groups for s in g]
    conf = float(settings.confidence)
    stats = summarize(pooled, conf)
    boots = {q: nested_bootstrap(groups, q, confidence=conf, seed=seed) for q in (0.5, 0.9, 0.99)}
    mean_b = nested_bootstrap(groups, "mean", confidence=conf, seed=seed)
    for q, key, ci in ((0.5, "p50", "median_ci"), (0.9, "p90", "p90_ci"), (0.99, "p99", "p99_ci")):
        stats[key] = boots[q]["estimate"]
        lo, hi = boots[q]["ci"]
        stats[ci] = [float(lo), float(hi)] if math.isfinite(lo) and math.isfinite(hi) else None
    if stats["median_ci"] is None:
        stats["median_ci"] = [stats["min"], stats["max"]]
        stats["ci_rel_halfwidth"] = None
    else:
        lo, hi = stats["median_ci"]
        stats["ci_rel_halfwidth"] = (hi - lo) / 2.0 / stats["p50"] if stats["p50"] else None
    stats["mean"] = mean_b["estimate"]
    stats["ci_method"] = "nested_bootstrap"
    stats["n_eff"] = round(float(sum(boots[0.5]["n_eff"])), 1)
    drifts = [r["latency_ns"].get("drift") for _, r in measured if r["latency_ns"].get("drift") is not None]
    stats["drift"] = max(drifts, key=abs) if drifts else None

    first = measured[0][1]
    between = {"p50": _components(boots[0.5])}
    head_q = HEADLINE_Q.get(scenario)
    if head_q is not None:
        between[f"p{round(head_q * 100)}"] = _components(boots[head_q])
    if scenario in GENERATOR_SCENARIOS:
        # the load generator's figures (wall-clock samples/s, peak QPS) are per process: their mean,
        # and their scatter over the processes (no within-process estimate: within_var = 0)
        from harness.measure.stats import variance_components

        def mean_of(get):
            vals = [get(r) for _, r in measured]
            vals = [float(v) for v in vals if v is not None]
            return (sum(vals) / len(vals), vals) if vals else (None, [])

        tp, _ = mean_of(lambda r: (r.get("throughput") or {}).get("samples_per_s"))
        qp, _ = mean_of(lambda r: (r.get("throughput") or {}).get("queries_per_s"))
        throughput = {"samples_per_s": tp, "queries_per_s": qp}
        hv, hvals = mean_of(lambda r: (r.get("headline") or {}).get("value"))
        head = dict(first.get("headline") or {}, value=hv)
        if len(hvals) >= 1:
            c = variance_components(hvals, [0.0] * len(hvals))
            between["headline"] = {"k": c["k"], "between_cv": c["observed_cv"], "within_cv": None,
                                   "observed_cv": c["observed_cv"], "between_share": None, "per_repeat": hvals}
    else:
        mean_s = stats["mean"] / 1e9
        throughput = {"samples_per_s": batch / mean_s, "queries_per_s": 1.0 / mean_s}
        head = headline(scenario, stats, throughput)

    accuracy = next((r.get("accuracy") for _, r in measured if r.get("accuracy")), None)
    acc_passed = None if accuracy is None else accuracy.get("passed")
    settled = [bool((r.get("warmup") or {}).get("settled")) for _, r in measured]
    v = verdict(stats, "converged", settings, accuracy_passed=acc_passed,
                scenario=None if scenario in GENERATOR_SCENARIOS else scenario,
                warmup_settled=all(settled), samples=pooled)
    # per-repeat validity replaces the pooled stability rules (drift across a concatenation
    # of processes means nothing; each repeat was judged on its own)
    v["reasons"] = [x for x in v["reasons"] if not x.startswith(("unstable", "ci_not_reached", "too_few_samples"))]
    valid_reps = [i for i, r in measured if (r.get("validity") or {}).get("valid")]
    bad = [(i, r) for i, r in measured if i not in valid_reps]
    if 2 * len(valid_reps) <= len(measured):
        _, r0 = bad[0]
        why = "; ".join((r0.get("validity") or {}).get("reasons") or [r0.get("reason") or "?"])[:300]
        v["reasons"].append(f"repeats_invalid: {len(bad)} of {len(measured)} measured repeats invalid ({why})")
    for i, r in bad:
        v["warnings"].append(f"repeat {i + 1}: invalid: {'; '.join((r.get('validity') or {}).get('reasons') or [])}")
    for i, r in enumerate(results):
        if r.get("status") not in ("ok", "invalid") or not r.get("samples_ns"):
            v["warnings"].append(f"repeat {i + 1}: {r.get('status')}: {r.get('reason') or ''}".rstrip(": "))
    hw = stats.get("ci_rel_halfwidth")
    bcv = between["p50"].get("between_cv")
    if hw is not None and hw > settings.target_ci:
        v["warnings"].append(f"between_process: the p50 differs between processes (between-process CV "
                             f"{_pct(bcv or 0.0)}); headline CI ±{_pct(hw)} > target {_pct(settings.target_ci)}")
    v["valid"] = not v["reasons"]
    stop = [r.get("stop_reason") for _, r in measured]
    stop_reason = next((s for s in stop if s != "converged"), "converged")
    wu = dict(first.get("warmup") or {})
    wu["settled"] = all(settled)
    wu["repeats_settled"] = sum(settled)
    return {
        "status": "ok" if v["valid"] else "invalid",
        "reason": None if v["valid"] else "; ".join(v["reasons"]),
        "latency_ns": stats,
        "throughput": throughput,
        "headline": head,
        "samples_ns": [int(s) for s in pooled],
        "iterations": sum(int(r.get("iterations") or 0) for _, r in measured),
        "duration_s": sum(float(r.get("duration_s") or 0.0) for _, r in measured),
        "warmup": wu,
        "stop_reason": stop_reason,
        "attempts": [dict(a, repeat=i + 1) for i, r in measured for a in (r.get("attempts") or [])],
        "validity": v,
        "accuracy": accuracy,
        "energy": first.get("energy"),
        "backend_info": first.get("backend_info"),
        "timings": first.get("timings"),
        "memory": {"peak_rss_bytes": max((r.get("memory") or {}).get("peak_rss_bytes") or 0 for _, r in measured) or None,
                   **({"device": first["memory"]["device"]} if (first.get("memory") or {}).get("device") else {})},
        "threads": first.get("threads"),
        **({"estimates": first["estimates"]} if isinstance(first.get("estimates"), dict) else {}),
        "worker": first.get("worker"),
        "repeats": [_repeat_summary(i, r) for i, r in enumerate(results)],
        "between_process": between,
    }


def _components(boot: dict) -> dict:
    c = boot["components"]
    return {"k": c["k"], "between_cv": c["between_cv"], "within_cv": c["within_cv"],
            "observed_cv": c["observed_cv"], "between_share": c["between_share"],
            "per_repeat": boot["per_repeat"]}
