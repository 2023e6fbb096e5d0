"""The terminal table of a run (``bench run`` and ``bench show``), rendered with rich."""
from __future__ import annotations


def fmt_time_ns(ns) -> str:
    if ns is None:
        return "-"
    ns = float(ns)
    if ns >= 1e9:
        return f"{ns / 1e9:.3g} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3g} µs"
    return f"{ns:.3g} ns"


def fmt_rate(x) -> str:
    if x is None:
        return "-"
    x = float(x)
    for unit, div in (("M/s", 1e6), ("k/s", 1e3)):
        if x >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.3g} /s"


def fmt_accuracy(acc) -> str:
    if not acc or acc.get("value") is None:
        return "-"
    v = acc["value"]
    s = f"{v * 100:.2f}%" if acc.get("metric") in ("top1", "top1_agreement") else f"{v:.4g}"
    if acc.get("delta") is not None and acc.get("metric") in ("top1", "top1_agreement"):
        s += f" ({acc['delta'] * 100:+.2f})"
    if acc.get("passed") is False:
        s += " FAIL"
    return s


STATUS_STYLE = {"ok": "green", "invalid": "yellow", "failed": "red", "skipped": "dim", "unsupported": "magenta"}


def run_table(record: dict, title: str | None = None):
    """One row per case; reasons of non-ok cases go to numbered notes under the table."""
    from rich.table import Table

    t = Table(title=title or f"run {record['run_id']} · suite {record['suite']['name']}", title_justify="left")
    for col, just in (("model", "left"), ("variant", "left"), ("backend", "left"), ("prec", "left"),
                      ("batch", "right"), ("scenario", "left"), ("p50", "right"), ("p90", "right"),
                      ("p99", "right"), ("±CI", "right"), ("throughput", "right"), ("accuracy", "right"),
                      ("status", "left")):
        t.add_column(col, justify=just, no_wrap=True)
    notes: list[str] = []
    for c in record["cases"]:
        lat = c.get("latency_ns") or {}
        est = "*" if c.get("simulated") else ""
        ci = lat.get("ci_rel_halfwidth")
        status = c["status"]
        style = STATUS_STYLE.get(status, "")
        status_cell = f"[{style}]{status}[/]"
        if c.get("reason"):
            notes.append(f"[{len(notes) + 1}] {c['case_id']}: {c['reason']}")
            status_cell += f" [{len(notes)}]"
        t.add_row(
            c["model"], c["variant"], f"{c['backend']}/{c['runtime']}", c["precision"], str(c["batch"]),
            c["scenario"], fmt_time_ns(lat.get("p50")) + est, fmt_time_ns(lat.get("p90")) + est,
            fmt_time_ns(lat.get("p99")) + est, "-" if ci is None else f"{ci * 100:.1f}%",
            fmt_rate((c.get("throughput") or {}).get("samples_per_s")) + est,
            fmt_accuracy(c.get("accuracy")), status_cell,
        )
    if any(c.get("simulated") for c in record["cases"]):
        notes.append("* estimated by a performance model (simulated backend), not measured")
    return t, notes


def print_run(record: dict, path=None, console=None) -> None:
    from rich.console import Console

    console = console or Console(width=None if _tty() else 200)
    table, notes = run_table(record)
    console.print(table)
    for note in notes:
        console.print(note, highlight=False, markup=False)
    counts: dict[str, int] = {}
    for c in record["cases"]:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    timer = record.get("timer") or {}
    console.print(f"{len(record['cases'])} cases: {summary}. Timer overhead {timer.get('overhead_ns', 0):.0f} ns.")
    if path is not None:
        console.print(f"record: {path}")


def _tty() -> bool:
    import sys

    return sys.stdout.isatty()
