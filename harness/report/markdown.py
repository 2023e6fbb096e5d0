"""Markdown for pull-request comments: header, key findings and the tables (no charts).

Deterministic for given records (no generation time), so it can be snapshot-tested.
User-supplied strings are escaped (pipes, emphasis, angle brackets).
"""
from __future__ import annotations

from typing import Any

from harness.report.frames import COLUMNS, ESTIMATED_COLUMNS, ESTIMATED_KINDS, estimated, fmt_cell

MD_CASE_COLUMNS = ["machine", "suite", "model", "variant", "platform", "batch", "scenario", "status", "basis",
                   "p50_ms", "p90_ms", "p99_ms", "throughput_per_s", "speedup", "size_reduction", "mac_reduction",
                   "accuracy", "accuracy_delta", "gate_verdict", "notes"]
MD_PROCUREMENT_COLUMNS = ["suite", "model", "rank", "machine", "backend", "runtime", "config", "basis",
                          "throughput_per_s", "per_watt", "watts_source", "hourly_cost", "per_dollar",
                          "cost_per_million"]


def md_escape(value: Any) -> str:
    """The one Markdown escaper (:func:`harness.safe.md`)."""
    from harness.safe import md

    return md(value)


def _table(name: str, df, columns: list[str], extra: dict[str, tuple[str, str]] | None = None) -> str:
    spec = dict(COLUMNS[name], **(extra or {}))
    records = df.to_dict("records")
    if not records:
        return "_none_\n"
    cols = [c for c in columns if c in spec and (c in df.columns or c in (extra or {}))]
    if name == "cases":
        for c in ("machine", "suite"):
            if c in cols and df[c].nunique(dropna=False) <= 1:
                cols.remove(c)
        if "basis" in cols and not any(estimated(r) for r in records):
            cols.remove("basis")
    numeric = {"num", "ratio", "pct", "int", "acc", "delta", "money"}
    lines = ["| " + " | ".join(md_escape(spec[c][0]) for c in cols) + " |",
             "|" + "|".join("---:" if spec[c][1] in numeric else "---" for c in cols) + "|"]
    for row in records:
        row = {k: (None if (isinstance(v, float) and v != v) else v) for k, v in row.items()}
        if name == "cases":
            row["platform"] = f"{row['backend']}/{row['runtime']}"
        cells = []
        for c in cols:
            kind = spec[c][1]
            text = fmt_cell(kind, row.get(c), row)
            if text and c in ESTIMATED_COLUMNS and kind in ESTIMATED_KINDS and estimated(row):
                text = "≈" + text
            if kind == "verdict" and text == "FAIL":
                cells.append("**FAIL**")
                continue
            cells.append(md_escape(text))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(report) -> str:
    h = report.header()
    tabs = report.tables
    machines = tabs["machines"].to_dict("records")
    out = [f"# {md_escape(h['title'])}", ""]
    mach = "; ".join(f"{m['machine']} ({m['cpu'] or '?'}" + (f"; GPUs: {m['gpus']}" if m["gpus"] != "none" else "") + ")"
                     for m in machines)
    out += [f"- **Machines:** {md_escape(mach)}",
            f"- **Suites:** {md_escape(', '.join(h['suites']))}",
            f"- **Dates:** {md_escape(h['first'] or '?')} — {md_escape(h['last'] or '?')}",
            f"- **bench version:** {md_escape(', '.join(h['bench_versions']))}",
            f"- **Runs / cases:** {h['runs']} / {h['cases']}",
            f"- **Baseline variant:** {md_escape(h['baseline'])}",
            ""]
    out += ["## Key findings", ""] + [f"- {md_escape(f)}" for f in report.findings] + [""]
    out += ["## Results per case", "",
            "Latency in ms; throughput in samples/s; speedup, size ÷ and MACs ÷ relative to the "
            f"{md_escape(h['baseline'])} variant. ≈ marks FPGA figures estimated by a simulator, not measured.", "",
            _table("cases", tabs["cases"], MD_CASE_COLUMNS, {"platform": ("backend/runtime", "text")})]
    out += ["## Problems", "", _table("problems", tabs["problems"], list(COLUMNS["problems"]))]
    if "procurement" in tabs:
        out += ["## Procurement", "",
                f"Best usable configuration per suite, model and machine/backend; costs in "
                f"{md_escape(report.currency)}; power source measured or nameplate.", "",
                _table("procurement", tabs["procurement"], MD_PROCUREMENT_COLUMNS)]
    scaled = [r for r in report.dataset.rows if r.get("scaling")] if hasattr(report, "dataset") else []
    if scaled:
        out += ["## Data-parallel scaling", "", "| case | platform | placement | replicas | throughput (samples/s) "
                "| efficiency |", "|---|---|---|---|---|---|"]
        for r in scaled:
            s = r["scaling"]
            for n, t, e in zip(s.get("replicas") or [], s.get("throughput") or [], s.get("efficiency") or []):
                out.append(f"| {md_escape(r['case_id'])} | {md_escape(r['platform'])} | {md_escape(s.get('placement'))} "
                           f"| {n} | {'—' if t is None else f'{t:.4g}'} | {'—' if e is None else f'{e:.2f}'} |")
        out.append("")
    skipped = report.charts.skipped
    if skipped:
        out += ["## Charts not drawn", ""] + [f"- {md_escape(k)}: {md_escape(v)}" for k, v in skipped.items()] + [""]
    return "\n".join(out).rstrip("\n") + "\n"
