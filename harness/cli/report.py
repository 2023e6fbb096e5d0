"""``bench report``: render run records into HTML / Markdown / CSV reports."""
from __future__ import annotations

from pathlib import Path

import click

from harness.errors import BenchError

DEFAULT_RESULTS = "results"
DEFAULT_REPORTS = "reports"


def _formats(value: str) -> list[str]:
    from harness.report import FORMATS

    fmts = [f.strip().lower() for f in value.split(",") if f.strip()]
    fmts = ["md" if f in ("markdown",) else f for f in fmts]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise BenchError(f"--format: unknown format {', '.join(bad) or '(empty)'} (choose from: {', '.join(FORMATS)})")
    return fmts


@click.command("report")
@click.argument("paths", nargs=-1, metavar="[RUN_FILES_OR_DIRS]...")
@click.option("--out", "out", default=None, metavar="PATH",
              help="Report file (suffix replaced per format) or directory. "
                   "Default: reports/report-<timestamp>.html.")
@click.option("--format", "formats", default="html", show_default=True, metavar="LIST",
              help="Comma-separated: html, md, csv.")
@click.option("--prices", default=None, metavar="YAML",
              help="Prices file for the procurement view (format: docs/prices.example.yaml).")
@click.option("--baseline", default=None, metavar="VARIANT",
              help="Variant that speedup and reductions are relative to (default: fp32).")
@click.option("--cdf", "cdf", multiple=True, metavar="PATTERN",
              help="Case ids (glob or substring) whose latency CDF is drawn; repeatable.")
@click.option("--title", default=None, help="Title of the report.")
@click.option("--images", type=click.Choice(["png", "svg"]), default=None,
              help="Also export each chart as an image beside the report (needs kaleido + Chromium).")
@click.option("--history", is_flag=True,
              help="Add trend charts per case over the runs of each machine, with detected steps marked.")
def command(paths, out, formats, prices, baseline, cdf, title, images, history):
    """Render run records (files, directories, globs; default results/) into a report.

    The HTML is one self-contained file (plotly.js embedded: opens offline) with key
    findings, sortable tables and charts; Markdown is for pull-request comments; CSV is
    the per-case table for spreadsheets. Prints the paths written.
    """
    from harness import report as rep

    fmts = _formats(formats)
    items = list(paths) or [DEFAULT_RESULTS]
    r = rep.build(items, baseline=baseline, prices=prices, cdf_cases=list(cdf) or None, title=title,
                  history=history)
    stem = rep.default_stem()
    if out is None:
        target = Path(DEFAULT_REPORTS) / stem
    else:
        o = Path(out)
        target = o / stem if (o.is_dir() or out.endswith(("/", "\\"))) else o
    written = rep.write(r, target, fmts)
    for path in written:
        click.echo(str(path))
    if images:
        base = written[0].with_suffix("")
        for path in rep.export_figures(r.figures, base.parent, images, prefix=base.name + "-"):
            click.echo(str(path))
