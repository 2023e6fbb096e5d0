"""The reporter's data model: run records flattened into one row per case.

Everything the tables, charts, Markdown and key findings show is derived here, once,
from the records (read with :mod:`harness.store.records`): effective status, measured or
estimated figures, the matching baseline (speedup, size and MAC reduction), energy,
the device's peak and the Pareto frontier. Nothing here imports pandas or plotly.

Conventions (stated in captions and docs/reporting.md):

* latency is in ns inside rows; tables show ms;
* a simulated case (``simulated: true``, FPGA) takes its figures from
  ``case["estimates"]`` only; its emulation wall time (``latency_ns``,
  ``samples_ns``) is never shown as the device's speed;
* speedup = baseline p50 / p50 for single-/multi-stream, throughput / baseline
  throughput for offline and server; size and MAC reduction = baseline / variant;
* when several runs hold the same case on the same machine (same comparability
  key), the latest run's result is shown and the older ones are counted.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from harness.store.flatten import case_fields, run_fields
from harness.units import pretty_time  # noqa: F401  (part of the reporter's model API)

DEFAULT_BASELINE = "fp32"
NOT_OK = ("invalid", "failed", "skipped", "unsupported", "does_not_fit")
LATENCY_SCENARIOS = ("single-stream", "multi-stream")


def _num(value: Any) -> float | None:
    """A finite float, or None for anything else (None, strings, NaN, bools)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = _num(value[0]), _num(value[1])
        if lo is not None and hi is not None:
            return lo, hi
    return None


def geomean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


@dataclass
class Machine:
    machine_id: str
    label: str
    hostname: str
    cpu_model: str | None
    physical_cores: int | None
    logical_cores: int | None
    memory_bytes: int | None
    gpus: list[str]
    os: str
    runs: int = 0
    suites: set = field(default_factory=set)
    backends: set = field(default_factory=set)
    first: str | None = None
    last: str | None = None


# --------------------------------------------------------------------------- figures of one case

def _estimated_perf(case: dict) -> tuple[dict, float | None, float | None]:
    """(latency stats, samples/s, peak MAC/s) from ``case["estimates"]``.

    Accepted shapes: ``latency_ns`` as a stats object or a number, or
    ``latency_cycles`` with ``clock_mhz``; ``throughput`` as ``{"samples_per_s": x}``
    or a number, or ``samples_per_s``; ``peak_macs_per_s``.
    """
    est = _dict(case.get("estimates"))
    lat = est.get("latency_ns")
    stats: dict = {}
    if isinstance(lat, dict):
        stats = lat
    elif _num(lat) is not None:
        stats = {"p50": lat, "p90": lat, "p99": lat}
    elif _num(est.get("latency_cycles")) and _num(est.get("clock_mhz")):
        ns = _num(est["latency_cycles"]) / _num(est["clock_mhz"]) * 1e3
        stats = {"p50": ns, "p90": ns, "p99": ns}
    thr = est.get("throughput")
    tput = _num(_dict(thr).get("samples_per_s")) if isinstance(thr, dict) else _num(thr)
    if tput is None:
        tput = _num(est.get("samples_per_s"))
    p50 = _num(stats.get("p50"))
    if tput is None and p50:
        tput = (case.get("batch") or 1) * 1e9 / p50
    return stats, tput, _num(est.get("peak_macs_per_s"))


def _case_row(record: dict, case: dict, machine: Machine) -> dict:
    cf = case_fields(case)  # the one flattener; below: the reporter's reading of those fields
    run = run_fields(record)
    simulated = bool(cf["simulated"])
    raw_status = cf["status"] or "ok"
    validity = _dict(case.get("validity"))
    valid = validity.get("valid") if isinstance(validity.get("valid"), bool) else None
    reasons = [str(r) for r in (validity.get("reasons") or [])]
    warnings = [str(w) for w in (validity.get("warnings") or [])]
    status = raw_status
    if raw_status == "ok" and valid is False:
        status = "invalid"
    why = []
    if cf["reason"]:
        why.append(str(cf["reason"]))
    why.extend(r for r in reasons if r not in why)

    binfo = _dict(case.get("backend_info"))
    peak = _num(binfo.get("peak_macs_per_s"))
    peak_source = "measured" if peak else None
    if not peak and _num(binfo.get("nominal_peak_macs_per_s")):
        peak, peak_source = _num(binfo["nominal_peak_macs_per_s"]), "nominal"
    bandwidth = _num(binfo.get("memory_bandwidth_bytes_per_s"))

    if simulated:
        stats, tput, est_peak = _estimated_perf(case)
        samples = None  # emulation wall times: never the device's speed
        if est_peak:
            peak, peak_source = est_peak, "estimated"
    else:
        stats = {"p50": cf["p50"], "p90": cf["p90"], "p99": cf["p99"], "median_ci": cf["p50_ci"],
                 "p90_ci": cf["p90_ci"], "p99_ci": cf["p99_ci"], "cv": cf["cv"], "n": cf["n"]}
        tput = _num(cf["throughput"])
        samples = case.get("samples_ns") if isinstance(case.get("samples_ns"), list) else None

    return {
        "run_id": run["run_id"],
        "started_at": run["started_at"],
        "suite": run["suite"] or "?",
        "bench_version": run["bench_version"],
        "machine_id": machine.machine_id,
        "machine": machine.label,
        "hostname": run["hostname"],
        "cpu_model": machine.cpu_model,
        "gpus": machine.gpus,
        "case_id": cf["case_id"] or "?",
        "key": cf["key"],
        "model": str(case.get("model", "?")),
        "variant": str(case.get("variant", "?")),
        "backend": str(case.get("backend", "?")),
        "runtime": str(case.get("runtime", "?")),
        "runtime_version": cf["runtime_version"],
        "device": cf["device"],
        "precision": cf["precision"],
        "batch": int(cf["batch"] or 1),
        "scenario": cf["scenario"] or "?",
        # a simulated device (an FPGA part) is not the host that ran the simulator: name it
        "platform": (f"{case.get('backend', '?')}/{case.get('runtime', '?')}"
                     + (f" {case['device']}" if simulated and case.get("device") else "") + f" @ {machine.label}"),
        "status": status,
        "raw_status": raw_status,
        "reasons": why,
        "warnings": warnings,
        "valid": valid,
        "simulated": simulated,
        "basis": "estimated" if simulated else "measured",
        "p50": _num(stats.get("p50")),
        "p90": _num(stats.get("p90")),
        "p99": _num(stats.get("p99")),
        "p50_ci": _pair(stats.get("median_ci")),
        "p90_ci": _pair(stats.get("p90_ci")),
        "p99_ci": _pair(stats.get("p99_ci")),
        "cv": _num(stats.get("cv")),
        "n": stats.get("n"),
        "throughput": tput,
        "samples": samples,
        "headline": case.get("headline") if isinstance(case.get("headline"), dict) else None,
        # server cases: every QPS step the load generator tried (latency-vs-load curve)
        "load_steps": [s for s in (_dict(case.get("generator")).get("steps") or []) if isinstance(s, dict)],
        "params": _num(cf["params"]),
        "macs": _num(cf["macs"]),
        "model_bytes": _num(cf["model_bytes"]),
        "sparsity": _num(cf["sparsity"]),
        "accuracy_metric": cf["accuracy_metric"],
        # perplexity (lower is better) stays out of the accuracy column and the Pareto chart
        "accuracy": None if cf["accuracy_metric"] == "perplexity" else _num(cf["accuracy"]),
        "accuracy_baseline": _num(cf["accuracy_baseline"]),
        "accuracy_delta": _num(cf["accuracy_delta"]),
        "gate": _num(cf["gate"]),
        "passed": cf["passed"] if isinstance(cf["passed"], bool) else None,
        "joules_per_inference": _num(cf["joules_per_inference"]),
        "avg_watts": _num(cf["avg_watts"]),
        "peak_macs_per_s": peak,
        "peak_source": peak_source,
        "memory_bandwidth": bandwidth,
        "scaling": case.get("scaling") if isinstance(case.get("scaling"), dict) else None,
        # generative (LLM) cases: first length point's token latencies, tokens/s, accuracy
        "ttft_p50": _num(_dict(case.get("ttft_ns")).get("p50")),
        "ttft_p99": _num(_dict(case.get("ttft_ns")).get("p99")),
        "tpot_p50": _num(_dict(case.get("tpot_ns")).get("p50")),
        "tpot_p99": _num(_dict(case.get("tpot_ns")).get("p99")),
        "tokens_per_s": _num(_dict(case.get("tokens_per_s")).get("aggregate")),
        "perplexity": _num(_dict(case.get("accuracy")).get("perplexity")),
        "zero_shot": _num(_dict(case.get("accuracy")).get("zero_shot_accuracy")),
        "kv_cache_bytes": _num(_dict(case.get("memory")).get("kv_cache_bytes")),
        # filled in by match_baselines
        "baseline": None,
        "speedup": None,
        "size_reduction": None,
        "mac_reduction": None,
    }


def usable(row: dict) -> bool:
    """A result that may be charted and ranked: status ok (and not found invalid)."""
    return row["status"] == "ok"


# --------------------------------------------------------------------------- the whole set

@dataclass
class Dataset:
    records: list[dict]
    rows: list[dict]
    machines: dict[str, Machine]
    baseline: str
    superseded: int = 0
    interrupted_runs: list[str] = field(default_factory=list)

    @property
    def suites(self) -> list[str]:
        return sorted({_dict(rec.get("suite")).get("name") or "?" for rec in self.records})

    @property
    def multi_platform(self) -> bool:
        return len({(r["machine_id"], r["backend"]) for r in self.rows}) > 1


def _machines(records: list[dict]) -> dict[str, Machine]:
    by_id: dict[str, Machine] = {}
    for rec in sorted(records, key=lambda r: str(r.get("started_at") or "")):
        env = _dict(rec.get("environment"))
        cpu = _dict(env.get("cpu"))
        mid = str(env.get("machine_id") or "unknown")
        os_ = _dict(env.get("os"))
        m = by_id.get(mid)
        if m is None:
            m = by_id[mid] = Machine(
                machine_id=mid, label="", hostname=str(env.get("hostname") or "?"),
                cpu_model=cpu.get("model"), physical_cores=cpu.get("physical_cores"),
                logical_cores=cpu.get("logical_cores"), memory_bytes=env.get("memory_bytes"),
                gpus=[str(_dict(g).get("name") or "?") for g in env.get("gpus") or []],
                os=" ".join(str(os_.get(k)) for k in ("system", "release", "machine") if os_.get(k)),
            )
        m.hostname = str(env.get("hostname") or m.hostname)  # latest name wins
        m.runs += 1
        m.suites.add(_dict(rec.get("suite")).get("name") or "?")
        m.backends.update(str(_dict(c).get("backend")) for c in rec.get("cases") or [])
        started = rec.get("started_at")
        m.first = m.first or started
        m.last = started or m.last
    names = defaultdict(list)
    for m in by_id.values():
        names[m.hostname].append(m)
    for host, ms in names.items():
        for m in ms:
            m.label = host if len(ms) == 1 else f"{host} ({m.machine_id[:8]})"
    return by_id


def build_dataset(records: list[dict], baseline: str | None = None, *, strict_baseline: bool = False) -> Dataset:
    """Rows (latest result per machine and case key), machines and baselines.

    ``strict_baseline``: raise :class:`BenchError` when no case has the baseline variant
    (``--baseline`` given explicitly); otherwise rows just get no speedup.
    """
    from harness.errors import BenchError

    machines = _machines(records)
    latest: dict[tuple, dict] = {}
    order: list[tuple] = []
    superseded = 0
    for rec in sorted(records, key=lambda r: (str(r.get("started_at") or ""), str(r.get("run_id") or ""))):
        mid = str(_dict(rec.get("environment")).get("machine_id") or "unknown")
        for i, case in enumerate(rec.get("cases") or []):
            if not isinstance(case, dict):
                raise BenchError(f"run {rec.get('run_id')}: case {i} is not an object")
            row = _case_row(rec, case, machines[mid])
            k = (mid, row["key"] or (rec.get("run_id"), i))
            if k in latest:
                superseded += 1
            else:
                order.append(k)
            latest[k] = row
    rows = [latest[k] for k in order]
    rows.sort(key=lambda r: (r["suite"], r["model"], r["machine"], r["backend"], r["runtime"], r["scenario"],
                             r["batch"], r["variant"] != (baseline or DEFAULT_BASELINE), r["variant"]))
    base = baseline or DEFAULT_BASELINE
    if strict_baseline and not any(r["variant"] == base for r in rows):
        variants = ", ".join(sorted({r["variant"] for r in rows})) or "none"
        raise BenchError(f"baseline variant '{base}' is in none of these runs (variants: {variants})")
    match_baselines(rows, base)
    interrupted = [str(rec.get("run_id")) for rec in records if rec.get("interrupted")]
    return Dataset(records=records, rows=rows, machines=machines, baseline=base,
                   superseded=superseded, interrupted_runs=interrupted)


def _group_key(row: dict) -> tuple:
    return (row["machine_id"], row["model"], row["backend"], row["runtime"], row["scenario"], row["batch"])


def match_baselines(rows: list[dict], baseline: str) -> None:
    """Fill baseline, speedup, size_reduction and mac_reduction of every row in place."""
    same: dict[tuple, dict] = {}
    any_of_model: dict[str, dict] = {}
    for r in rows:
        if r["variant"] != baseline:
            continue
        k = _group_key(r)
        if k not in same or (usable(r) and not usable(same[k])):
            same[k] = r
        if r["model_bytes"] or r["macs"]:
            any_of_model.setdefault(r["model"], r)
    for r in rows:
        b = same.get(_group_key(r))
        if b is not None and usable(b) and usable(r) and b["simulated"] == r["simulated"]:
            r["baseline"] = baseline
            if r["scenario"] in LATENCY_SCENARIOS or not (r["throughput"] and b["throughput"]):
                if r["p50"] and b["p50"]:
                    r["speedup"] = b["p50"] / r["p50"]
            else:
                r["speedup"] = r["throughput"] / b["throughput"]
        cb = b if b is not None and (b["model_bytes"] or b["macs"]) else any_of_model.get(r["model"])
        if cb is not None:
            r["baseline"] = r["baseline"] or baseline
            if cb["model_bytes"] and r["model_bytes"]:
                r["size_reduction"] = cb["model_bytes"] / r["model_bytes"]
            if cb["macs"] and r["macs"]:
                r["mac_reduction"] = cb["macs"] / r["macs"]


# --------------------------------------------------------------------------- selections

def reference_rows(rows: list[dict]) -> list[dict]:
    """Usable rows at each (model, platform)'s reference setting.

    The reference setting is the (scenario, batch) holding the most variants, preferring
    single-stream and then the smallest batch: the setting where variants are compared.
    """
    groups: dict[tuple, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if usable(r) and r["p50"] is not None:
            groups[(r["model"], r["platform"])][(r["scenario"], r["batch"])].append(r)
    out = []
    for settings in groups.values():
        best = max(settings, key=lambda s: (len({r["variant"] for r in settings[s]}),
                                            s[0] == "single-stream", -s[1]))
        out.extend(settings[best])
    return out


def pareto_front(points: list[dict]) -> list[dict]:
    """Rows not dominated in (lower p50, higher accuracy), in order of rising latency."""
    pts = sorted((p for p in points if p["p50"] is not None and p["accuracy"] is not None),
                 key=lambda p: (p["p50"], -p["accuracy"]))
    front, best = [], -math.inf
    for p in pts:
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    return front


def frontiers(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Pareto frontier per (model, platform) over the reference rows with an accuracy."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in reference_rows(rows):
        if r["accuracy"] is not None:
            groups[(r["model"], r["platform"])].append(r)
    return {k: pareto_front(v) for k, v in sorted(groups.items())}
