"""report: the last step of the data path — run records -> tables, charts, key findings.

In: run records (:mod:`harness.store`), optionally their history (:mod:`harness.analyze`).
Out: self-contained HTML (plotly), Markdown and CSV under reports/.

For notebooks::

    from harness import report
    tabs = report.tables("results/")            # dict[str, pandas.DataFrame]
    figs = report.figures("results/")           # dict[str, plotly.graph_objects.Figure]
    report.findings("results/")                 # list[str]
    report.export_figures(figs, "reports/png", fmt="png")   # needs kaleido + a Chromium

Each function takes run records (dicts), or record files / directories / globs (read
with :func:`harness.store.records.read_records`), plus ``baseline=`` (default ``"fp32"``),
``prices=`` (a path or a :class:`~harness.report.procurement.Prices`) and, for figures,
``cdf_cases=`` (globs or substrings of case ids). :func:`build` returns a
:class:`Report` holding everything at once; :func:`write` renders it to files.

Importing this package imports neither pandas nor plotly; both are imported when used.
"""
from __future__ import annotations

import datetime as _dt
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from harness.errors import BenchError
from harness.report.model import DEFAULT_BASELINE, Dataset, build_dataset, pretty_time
from harness.report.procurement import Prices, apply_nominal_peaks, load_prices, procurement_rows

__all__ = ["Report", "build", "tables", "figures", "findings", "write", "export_figures", "load_prices",
           "FORMATS", "DEFAULT_BASELINE"]

FORMATS = ("html", "md", "csv")


class Report:
    """Everything a report shows, computed once from a set of run records."""

    def __init__(self, records: list[dict], *, baseline: str | None = None, prices: Prices | None = None,
                 cdf_cases: list[str] | None = None, title: str | None = None, history: bool = False):
        self.records = records
        self.history = history
        self.prices = prices
        self.cdf_cases = list(cdf_cases) if cdf_cases else None
        self.title = title or "bench report"
        self.dataset: Dataset = build_dataset(records, baseline, strict_baseline=baseline is not None)
        apply_nominal_peaks(self.dataset, prices)

    @property
    def baseline(self) -> str:
        return self.dataset.baseline

    @property
    def currency(self) -> str:
        return self.prices.currency if self.prices else "USD"

    @cached_property
    def procurement(self) -> list[dict] | None:
        """Ranked procurement rows, or None when only one machine and backend are present."""
        if not self.dataset.multi_platform:
            return None
        return procurement_rows(self.dataset, self.prices)

    @cached_property
    def trend_figures(self) -> list:
        """Per-case trend charts over the runs of each machine, steps marked (``--history``)."""
        if not self.history:
            return []
        from harness.analyze.history import trend_figures

        return trend_figures(self.records)

    @cached_property
    def tables(self) -> dict[str, Any]:
        from harness.report.frames import build_tables

        return build_tables(self.dataset, self.procurement)

    @cached_property
    def charts(self):
        from harness.report.charts import build_charts

        return build_charts(self.dataset, self.cdf_cases)

    @property
    def figures(self) -> dict[str, Any]:
        return self.charts.figures

    @cached_property
    def findings(self) -> list[str]:
        from harness.report.summary import key_findings

        return key_findings(self.dataset, self.procurement, self.currency)

    def header(self) -> dict[str, Any]:
        """Plain values for the report's header (HTML and Markdown)."""
        recs = self.records
        starts = sorted(str(r.get("started_at")) for r in recs if r.get("started_at"))
        ends = sorted(str(r.get("finished_at")) for r in recs if r.get("finished_at"))
        versions = sorted({f"{(r.get('bench') or {}).get('version', '?')}"
                           + (f" ({(r.get('bench') or {}).get('git_sha')})" if (r.get('bench') or {}).get('git_sha') else "")
                           for r in recs})
        return {
            "title": self.title,
            "machines": [m.label for m in sorted(self.dataset.machines.values(), key=lambda m: m.label)],
            "suites": self.dataset.suites,
            "first": pretty_time(starts[0]) if starts else None,
            "last": pretty_time((ends or starts)[-1]) if (ends or starts) else None,
            "bench_versions": versions,
            "runs": len(recs),
            "cases": len(self.dataset.rows),
            "baseline": self.baseline,
            "prices": self.prices.path if self.prices else None,
        }


def _records(source: Any) -> list[dict]:
    from harness.store.records import read_records

    if isinstance(source, (str, Path)):
        return read_records([source])
    items = list(source)
    if items and all(isinstance(i, dict) for i in items):
        return items
    if items and all(isinstance(i, (str, Path)) for i in items):
        return read_records(items)
    if not items:
        raise BenchError("no run records given")
    raise BenchError("expected run records (dicts) or record paths, not a mix")


def build(records: Any, *, baseline: str | None = None, prices: str | Path | Prices | None = None,
          cdf_cases: Iterable[str] | None = None, title: str | None = None, history: bool = False) -> Report:
    """A :class:`Report` of ``records`` (dicts, or paths / directories / globs of record files)."""
    if prices is not None and not isinstance(prices, Prices):
        prices = load_prices(prices)
    return Report(_records(records), baseline=baseline, prices=prices,
                  cdf_cases=list(cdf_cases) if cdf_cases else None, title=title, history=history)


def tables(records: Any, **kw) -> dict[str, Any]:
    """The report's tables as pandas DataFrames: ``cases``, ``problems``, ``machines`` and,
    with more than one machine or backend, ``procurement``."""
    return build(records, **kw).tables


def figures(records: Any, **kw) -> dict[str, Any]:
    """The report's charts as plotly Figures, keyed ``latency``, ``throughput``, ``pareto``,
    ``speedup``, ``cdf``, ``roofline`` (a chart without the data it needs is absent; see
    ``build(records).charts.skipped`` for why)."""
    return build(records, **kw).figures


def findings(records: Any, **kw) -> list[str]:
    """The key findings (plain sentences) shown at the top of the report."""
    return build(records, **kw).findings


def default_stem(now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return "report-" + now.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write(report: Report, out: str | Path, formats: Iterable[str] = ("html",)) -> list[Path]:
    """Render ``report`` to ``out`` (its suffix is replaced per format); returns the paths.

    ``html`` -> ``out.html`` (self-contained), ``md`` -> ``out.md``, ``csv`` -> ``out.csv``
    (the cases table) and, when there is a procurement table, ``out-procurement.csv``.
    """
    formats = list(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise BenchError(f"unknown report format {', '.join(bad) or '(none)'} (choose from: {', '.join(FORMATS)})")
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".html", ".htm", ".md", ".csv") else out
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create {stem.parent}: {exc.strerror or exc}") from None
    from harness.safe import csv_frame, write_atomic

    written: list[Path] = []
    try:
        for fmt in formats:
            if fmt == "html":
                from harness.report.html import render_html

                path = stem.with_name(stem.name + ".html")
                write_atomic(path, render_html(report), what="report")
                written.append(path)
            elif fmt == "md":
                from harness.report.markdown import render_markdown

                path = stem.with_name(stem.name + ".md")
                write_atomic(path, render_markdown(report), what="report")
                written.append(path)
            else:
                path = stem.with_name(stem.name + ".csv")
                write_atomic(path, csv_frame(report.tables["cases"]).to_csv(index=False), what="report")
                written.append(path)
                if "procurement" in report.tables:
                    ppath = stem.with_name(stem.name + "-procurement.csv")
                    write_atomic(ppath, csv_frame(report.tables["procurement"]).to_csv(index=False), what="report")
                    written.append(ppath)
    except OSError as exc:
        raise BenchError(f"cannot write report to {stem.parent}: {exc.strerror or exc}") from None
    return written


def export_figures(figs: dict[str, Any], out_dir: str | Path, fmt: str = "png", *, prefix: str = "",
                   scale: float = 2.0) -> list[Path]:
    """Write each figure as ``<out_dir>/<prefix><name>.<fmt>`` (png or svg) with kaleido.

    kaleido (``pip install kaleido``) drives a Chromium: install one with
    ``plotly_get_chrome`` (or ``kaleido.get_chrome_sync()``), or use the system's
    (``apt-get install chromium``).
    """
    if fmt not in ("png", "svg"):
        raise BenchError(f"image format must be png or svg, not {fmt!r}")
    import importlib.util

    if importlib.util.find_spec("kaleido") is None:
        raise BenchError("PNG/SVG export needs kaleido: pip install kaleido, and a Chromium for it "
                         "(plotly_get_chrome, or apt-get install chromium)")
    import plotly.io as pio

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        path = out / f"{prefix}{name}.{fmt}"
        try:
            pio.write_image(fig, path, format=fmt, scale=scale, width=1100, height=fig.layout.height or 460)
        except Exception as exc:  # kaleido without a browser, or a broken one
            raise BenchError(f"image export failed ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                             "kaleido needs a Chromium: run plotly_get_chrome or apt-get install chromium") from None
        paths.append(path)
    return paths
