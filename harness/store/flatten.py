"""The one flattener of run records: which field of a record means what, in one place.

Every reader of records goes through here: :func:`harness.store.records.load_results`
(dotted columns, :func:`case_rows`), the history index (:mod:`harness.analyze.history`,
:func:`run_fields` + :func:`case_fields`) and the report's data model
(:mod:`harness.report.model`, the same two). A new record field becomes a column by being
added here once.

Values are taken as recorded (no unit conversion: latencies stay ns); a missing or
malformed part (``None`` where a mapping is expected) gives ``None`` fields, never an error.
"""
from __future__ import annotations

from typing import Any


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def flatten(value: Any, prefix: str = "", row: dict | None = None) -> dict:
    """Nested mappings -> one flat dict with dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``.
    Lists and scalars are values."""
    row = {} if row is None else row
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(v, f"{prefix}.{k}" if prefix else k, row)
    else:
        row[prefix] = value
    return row


def run_fields(record: dict) -> dict:
    """The run-level facts of a record, by name (None where the record has none)."""
    env = _d(record.get("environment"))
    bench = _d(record.get("bench"))
    return {
        "run_id": record.get("run_id"),
        "started_at": record.get("started_at"),
        "suite": _d(record.get("suite")).get("name"),
        "bench_version": bench.get("version"),
        "git_sha": bench.get("git_sha"),
        "machine_id": env.get("machine_id"),
        "hostname": env.get("hostname"),
        "cpu_model": _d(env.get("cpu")).get("model"),
        "interrupted": bool(record.get("interrupted")),
        "n_cases": len(record.get("cases") or []),
        "tags": dict(_d(record.get("tags"))),
    }


def case_fields(case: dict) -> dict:
    """The named figures of one case record: identity, status, the measured latency statistics
    (ns, from ``latency_ns``; a simulated case's estimates are in ``case["estimates"]``, which
    the reader decides on), throughput, accuracy, complexity and energy."""
    lat = _d(case.get("latency_ns"))
    acc = _d(case.get("accuracy"))
    cx = _d(case.get("complexity"))
    energy = _d(case.get("energy"))
    return {
        "key": case.get("key"), "case_id": case.get("case_id"), "model": case.get("model"),
        "variant": case.get("variant"), "backend": case.get("backend"), "runtime": case.get("runtime"),
        "runtime_version": case.get("runtime_version"), "precision": case.get("precision"),
        "batch": case.get("batch"), "scenario": case.get("scenario"), "device": case.get("device"),
        "status": case.get("status"), "reason": case.get("reason"), "simulated": case.get("simulated"),
        "n": lat.get("n"), "p50": lat.get("p50"), "p90": lat.get("p90"), "p99": lat.get("p99"),
        "mean": lat.get("mean"), "cv": lat.get("cv"), "ci_rel_halfwidth": lat.get("ci_rel_halfwidth"),
        "p50_ci": lat.get("median_ci"), "p90_ci": lat.get("p90_ci"), "p99_ci": lat.get("p99_ci"),
        "throughput": _d(case.get("throughput")).get("samples_per_s"),
        "accuracy_metric": acc.get("metric"), "accuracy": acc.get("value"),
        "accuracy_baseline": acc.get("baseline_value"), "accuracy_delta": acc.get("delta"),
        "gate": acc.get("gate"), "passed": acc.get("passed"),
        "params": cx.get("params"), "macs": cx.get("macs"), "model_bytes": cx.get("model_bytes"),
        "sparsity": cx.get("sparsity"),
        "joules_per_inference": energy.get("joules_per_inference"), "avg_watts": energy.get("avg_watts"),
    }


#: run_fields -> the prefixed column names of :func:`case_rows` (load_results' public columns)
_ROW_RUN_COLUMNS = (("run_id", "run_id"), ("started_at", "run.started_at"), ("suite", "run.suite"),
                    ("bench_version", "run.bench_version"), ("git_sha", "run.git_sha"),
                    ("machine_id", "env.machine_id"), ("hostname", "env.hostname"), ("cpu_model", "env.cpu_model"))


def case_rows(record: dict, *, samples: bool = False) -> list[dict]:
    """Flat rows (one per case): run-level columns prefixed ``run.`` / ``env.`` / ``tag.``, then every
    field of the case as a dotted column (``latency_ns.p50``); raw samples only with ``samples=True``."""
    run = run_fields(record)
    base = {col: run[name] for name, col in _ROW_RUN_COLUMNS}
    for k, v in run["tags"].items():
        base[f"tag.{k}"] = v
    rows = []
    for case in record.get("cases", []):
        row = dict(base)
        for k, v in case.items():
            if k == "samples_ns":
                if samples:
                    row[k] = v
                continue
            flatten(v, k, row)
        rows.append(row)
    return rows
