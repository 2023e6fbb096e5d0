"""The report's tables as pandas DataFrames (raw numbers, snake_case columns), and how to
show each column as text (shared by the HTML, Markdown and key findings).

Tables (keys of :func:`build_tables`):

* ``cases`` — one row per case: latency percentiles (ms), throughput, speedup vs the
  baseline variant, size / MAC reduction, accuracy and delta with the gate verdict,
  status and validity, ``basis`` = measured | estimated (FPGA, simulated);
* ``problems`` — every case that is not ``ok`` (invalid, failed, skipped,
  unsupported) with its reasons;
* ``machines`` — the machines compared, from the records' fingerprints;
* ``procurement`` — only when more than one machine or backend is present.
"""
from __future__ import annotations

import math
import re
from typing import Any

from harness.report.model import Dataset
from harness.units import fmt_num, ns_to_ms, pretty_time

# column -> (header, kind); the kind picks the formatter below
CASE_COLUMNS: dict[str, tuple[str, str]] = {
    "machine": ("machine", "text"),
    "suite": ("suite", "text"),
    "model": ("model", "text"),
    "variant": ("variant", "text"),
    "backend": ("backend", "text"),
    "runtime": ("runtime", "text"),
    "precision": ("precision", "text"),
    "batch": ("batch", "int"),
    "scenario": ("scenario", "text"),
    "status": ("status", "status"),
    "basis": ("basis", "text"),
    "p50_ms": ("p50 ms", "num"),
    "p90_ms": ("p90 ms", "num"),
    "p99_ms": ("p99 ms", "num"),
    "p50_ci_low_ms": ("p50 CI low", "num"),
    "p50_ci_high_ms": ("p50 CI high", "num"),
    "throughput_per_s": ("samples/s", "num"),
    "speedup": ("speedup", "ratio"),
    "baseline": ("baseline", "text"),
    "size_reduction": ("size ÷", "ratio"),
    "mac_reduction": ("MACs ÷", "ratio"),
    "sparsity": ("sparsity", "pct"),
    "accuracy_metric": ("metric", "text"),
    "accuracy": ("accuracy", "acc"),
    "accuracy_delta": ("Δ accuracy", "delta"),
    "gate": ("gate", "num"),
    "gate_verdict": ("gate verdict", "verdict"),
    "valid": ("valid", "bool"),
    "notes": ("notes", "text"),
    "case_id": ("case", "text"),
    "run_id": ("run", "text"),
}
PROBLEM_COLUMNS: dict[str, tuple[str, str]] = {
    "machine": ("machine", "text"),
    "suite": ("suite", "text"),
    "case_id": ("case", "text"),
    "status": ("status", "status"),
    "reasons": ("reasons", "text"),
    "run_id": ("run", "text"),
}
MACHINE_COLUMNS: dict[str, tuple[str, str]] = {
    "machine": ("machine", "text"),
    "machine_id": ("machine id", "text"),
    "cpu": ("CPU", "text"),
    "cores": ("cores (phys/log)", "text"),
    "memory_gib": ("memory GiB", "num"),
    "gpus": ("GPUs", "text"),
    "os": ("OS", "text"),
    "backends": ("backends", "text"),
    "suites": ("suites", "text"),
    "runs": ("runs", "int"),
    "first_run": ("first run", "text"),
    "last_run": ("last run", "text"),
}
PROCUREMENT_COLUMNS: dict[str, tuple[str, str]] = {
    "suite": ("suite", "text"),
    "model": ("model", "text"),
    "rank": ("rank", "int"),
    "machine": ("machine", "text"),
    "backend": ("backend", "text"),
    "runtime": ("runtime", "text"),
    "device": ("device", "text"),
    "config": ("best config", "text"),
    "basis": ("basis", "text"),
    "throughput_per_s": ("samples/s", "num"),
    "watts": ("watts", "num"),
    "watts_source": ("power source", "text"),
    "per_watt": ("samples/s per W", "num"),
    "hourly_cost": ("cost/h", "money"),
    "cost_basis": ("cost basis", "text"),
    "per_dollar": ("samples per $", "num"),
    "cost_per_million": ("cost per 1M", "money"),
    "price_entry": ("price entry", "text"),
}
COLUMNS = {"cases": CASE_COLUMNS, "problems": PROBLEM_COLUMNS, "machines": MACHINE_COLUMNS,
           "procurement": PROCUREMENT_COLUMNS}

_FRACTION_METRICS = re.compile(r"^(top[-_]?\d+|acc(uracy)?|balanced[-_]acc(uracy)?|f1.*|auc.*|map.*|precision|recall)$",
                               re.IGNORECASE)


def _notes(r: dict) -> str:
    parts = list(r["reasons"])
    parts += [f"warning: {w}" for w in r["warnings"]]
    if r["simulated"]:
        parts.append("estimated by a simulator (not measured)")
    return "; ".join(parts)


def gate_verdict(r: dict) -> str | None:
    if r["passed"] is True:
        return "pass"
    if r["passed"] is False:
        return "FAIL"
    return None


def case_records(ds: Dataset) -> list[dict]:
    out = []
    for r in ds.rows:
        ci = r["p50_ci"] or (None, None)
        out.append({
            "machine": r["machine"], "suite": r["suite"], "model": r["model"], "variant": r["variant"],
            "backend": r["backend"], "runtime": r["runtime"], "precision": r["precision"], "batch": r["batch"],
            "scenario": r["scenario"], "status": r["status"], "basis": r["basis"],
            "p50_ms": ns_to_ms(r["p50"]), "p90_ms": ns_to_ms(r["p90"]), "p99_ms": ns_to_ms(r["p99"]),
            "p50_ci_low_ms": ns_to_ms(ci[0]), "p50_ci_high_ms": ns_to_ms(ci[1]),
            "throughput_per_s": r["throughput"], "speedup": r["speedup"], "baseline": r["baseline"],
            "size_reduction": r["size_reduction"], "mac_reduction": r["mac_reduction"], "sparsity": r["sparsity"],
            "accuracy_metric": r["accuracy_metric"], "accuracy": r["accuracy"],
            "accuracy_delta": r["accuracy_delta"], "gate": r["gate"], "gate_verdict": gate_verdict(r),
            "valid": r["valid"], "notes": _notes(r), "case_id": r["case_id"], "run_id": r["run_id"],
            "machine_id": r["machine_id"], "device": r["device"], "simulated": r["simulated"],
        })
    return out


def problem_records(ds: Dataset) -> list[dict]:
    return [{"machine": r["machine"], "suite": r["suite"], "case_id": r["case_id"], "status": r["status"],
             "reasons": "; ".join(r["reasons"]) or "(no reason recorded)", "run_id": r["run_id"]}
            for r in ds.rows if r["status"] != "ok"]


def machine_records(ds: Dataset) -> list[dict]:
    out = []
    for m in sorted(ds.machines.values(), key=lambda m: m.label):
        out.append({
            "machine": m.label, "machine_id": m.machine_id, "cpu": m.cpu_model,
            "cores": f"{m.physical_cores if m.physical_cores is not None else '?'}/"
                     f"{m.logical_cores if m.logical_cores is not None else '?'}",
            "memory_gib": round(m.memory_bytes / 2**30, 1) if isinstance(m.memory_bytes, (int, float)) else None,
            "gpus": ", ".join(m.gpus) or "none", "os": m.os, "backends": ", ".join(sorted(m.backends)),
            "suites": ", ".join(sorted(m.suites)), "runs": m.runs,
            "first_run": pretty_time(m.first), "last_run": pretty_time(m.last),
        })
    return out


def procurement_records(rows: list[dict]) -> list[dict]:
    out = []
    for p in rows:
        q = {k: p.get(k) for k in PROCUREMENT_COLUMNS}
        q.update(throughput_per_s=p["throughput"], config=f"{p['variant']} b{p['batch']} {p['scenario']}",
                 variant=p["variant"], batch=p["batch"], scenario=p["scenario"], case_id=p["case_id"])
        out.append(q)
    return out


def build_tables(ds: Dataset, procurement: list[dict] | None) -> dict[str, Any]:
    import pandas as pd

    def frame(rows: list[dict], columns: dict) -> "pd.DataFrame":
        if not rows:
            return pd.DataFrame(columns=list(columns))
        return pd.DataFrame(rows)

    tables = {
        "cases": frame(case_records(ds), CASE_COLUMNS),
        "problems": frame(problem_records(ds), PROBLEM_COLUMNS),
        "machines": frame(machine_records(ds), MACHINE_COLUMNS),
    }
    if procurement is not None:
        tables["procurement"] = frame(procurement_records(procurement), PROCUREMENT_COLUMNS)
    return tables


# --------------------------------------------------------------------------- text

def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def is_fraction_metric(metric: Any, *values: Any) -> bool:
    return bool(metric) and bool(_FRACTION_METRICS.match(str(metric))) and all(
        _missing(v) or 0.0 <= float(v) <= 1.0 for v in values)


def fmt_cell(kind: str, v: Any, row: dict | None = None) -> str:
    """Text of one cell; ``row`` (the table row) gives context such as the metric."""
    if _missing(v):
        return ""
    row = row or {}
    if kind == "ratio":
        return f"{fmt_num(v)}×"
    if kind == "pct":
        return f"{float(v) * 100:.0f} %"
    if kind == "int":
        return str(int(v))
    if kind == "bool":
        return "yes" if v else "no"
    if kind == "money":
        return fmt_num(v, 3)
    if kind == "acc":
        if is_fraction_metric(row.get("accuracy_metric"), v):
            return f"{float(v) * 100:.1f} %"
        return fmt_num(v, 4)
    if kind == "delta":
        if is_fraction_metric(row.get("accuracy_metric"), row.get("accuracy")):
            return f"{float(v) * 100:+.1f} pp"
        return f"{float(v):+.4g}"
    if kind == "num":
        return fmt_num(v)
    return str(v)


ESTIMATED_KINDS = ("num", "ratio")
ESTIMATED_COLUMNS = ("p50_ms", "p90_ms", "p99_ms", "p50_ci_low_ms", "p50_ci_high_ms", "throughput_per_s",
                     "speedup", "per_watt", "per_dollar", "cost_per_million")


def estimated(row: dict) -> bool:
    return row.get("basis") == "estimated"
