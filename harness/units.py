"""Unit formatters: the one place where numbers of the data path become text.

Latencies are nanoseconds everywhere inside bench (records, rows, statistics); they
become text only here, with the unit picked from the value's size (``1.23 ms``). The
terminal table, ``bench compare``/``history``, the report and the complexity counter all
format through these functions, so the same value reads the same everywhere.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

#: accuracy metrics that are fractions shown as percentages (top-1 and the agreement family)
PERCENT_METRICS = ("top1", "top1_agreement", "top1_agreement_decisive", "top5_agreement")

#: (unit, nanoseconds per unit), largest first
TIME_UNITS = (("s", 1e9), ("ms", 1e6), ("µs", 1e3))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def fmt_ns(v: float | None) -> str:
    """A duration in ns as text with a fitting unit: ``1234567`` -> ``"1.23 ms"``; ``-`` when missing.
    Three significant digits; from 1,000 of the largest unit up, whole numbers with separators."""
    if _missing(v):
        return "-"
    v = float(v)
    for unit, f in TIME_UNITS:
        if abs(v) >= f:
            return f"{v / f:.3g} {unit}" if abs(v / f) < 1000 else f"{v / f:,.0f} {unit}"
    return f"{v:.3g} ns"


#: the name the terminal table has always used
fmt_time_ns = fmt_ns


def ns_to_ms(ns: float | None) -> float | None:
    """ns -> ms (None stays None); the report's tables and charts show ms."""
    return None if ns is None else ns / 1e6


def time_unit(values: Iterable[float]) -> tuple[str, float]:
    """``(unit, ns per unit)`` that fits the median of ``values`` (ns), for a chart axis."""
    import numpy as np

    vals = np.asarray(list(values), dtype=float)
    med = float(np.median(vals)) if len(vals) else 0.0
    for unit, f in TIME_UNITS:
        if med >= f:
            return unit, f
    return "ns", 1.0


def fmt_rate(x: float | None) -> str:
    """A rate per second with k/M prefixes: ``12345`` -> ``"12.3 k/s"``."""
    if x is None:
        return "-"
    x = float(x)
    for unit, div in (("M/s", 1e6), ("k/s", 1e3)):
        if x >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.3g} /s"


def fmt_per_s(v: float | None) -> str:
    """A throughput as a plain count per second: ``12345.6`` -> ``"12,346/s"``, ``12.3456`` -> ``"12.35/s"``."""
    if _missing(v):
        return "-"
    return f"{v:,.0f}/s" if v >= 1000 else f"{v:.4g}/s"


def fmt_metric(metric: str, v: float | None) -> str:
    """A compared metric's value: latency percentiles (``p50``, ``p90``, ``p99``) in time units,
    ``throughput`` per second, anything else (accuracy) with four decimals."""
    if _missing(v):
        return "-"
    if metric in ("p50", "p90", "p99"):
        return fmt_ns(v)
    if metric == "throughput":
        return fmt_per_s(v)
    return f"{v:.4f}"


def fmt_num(v: float | None, sig: int = 3) -> str:
    """``sig`` significant digits (4 from 1,000 up) without exponents; thousands separated; ``""`` when missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 10 ** (sig - 1):
        digits = int(math.floor(math.log10(abs(v)))) + 1
        return f"{round(v, -max(0, digits - max(sig, 4))):,.0f}"
    decimals = sig - 1 - int(math.floor(math.log10(abs(v))))
    return f"{v:.{max(0, decimals)}f}"


def fmt_count(n: float | int | None, unit: str = "") -> str:
    """SI prefixes, three decimals: ``1814073344`` -> ``"1.814 G"`` (params, MACs, bytes)."""
    if n is None:
        return "-"
    n = float(n)
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def fmt_pct_change(ratio: float | None) -> str:
    """A ratio NEW/BASE as a signed percent change: ``1.05`` -> ``"+5.0%"``."""
    if ratio is None or not math.isfinite(ratio):
        return "-"
    return f"{(ratio - 1) * 100:+.1f}%"


def pretty_time(iso: Any) -> str | None:
    """``2026-11-02T09:00:00.000Z`` -> ``2026-11-02 09:00 UTC`` (unparseable: as given)."""
    if not iso:
        return None
    import datetime as dt

    try:
        t = dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return str(iso)
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC")
