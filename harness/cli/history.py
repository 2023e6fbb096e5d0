"""``bench history``: per-case series of a machine's runs, with lasting steps told from blips."""
from __future__ import annotations

import click

METRIC_NAMES = ("p50", "p90", "p99", "throughput", "accuracy")


@click.command("history")
@click.argument("runs", nargs=-1)
@click.option("--results", "results_dir", default="results", show_default=True,
              help="Directory of run records (used when no RUNS are given).")
@click.option("--machine", default=None,
              help="Machine id whose runs to show, or 'all'. [default: this machine]")
@click.option("--metric", type=click.Choice(METRIC_NAMES), default="p50", show_default=True)
@click.option("--case", "cases", multiple=True, metavar="GLOB", help="Only cases whose case_id matches (repeatable).")
@click.option("--threshold", default="5%", show_default=True, help="Smallest level change that counts as a step.")
@click.option("--persist", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Runs a new level must hold (the night it appeared + re-runs) before it is a step.")
@click.option("--alert-window", type=click.IntRange(1), default=10, show_default=True,
              help="A confirmed regression step alerts while it is among the newest N runs.")
@click.option("--last", type=click.IntRange(2), default=None, help="Only the newest N runs of each case.")
@click.option("--format", "fmt", type=click.Choice(["text", "md", "json"]), default="text", show_default=True)
@click.option("--engine", type=click.Choice(["auto", "duckdb", "pandas"]), default="auto", show_default=True,
              help="Query engine over the run files (duckdb needs the 'history' extra).")
@click.option("--md-out", type=click.Path(dir_okay=False), default=None, help="Also append the Markdown to this file.")
@click.option("--check", is_flag=True,
              help="Exit 1 when a case alerts (confirmed regression), 3 when a regression is pending.")
@click.pass_context
def command(ctx, runs, results_dir, machine, metric, cases, threshold, persist, alert_window, last, fmt, engine,
            md_out, check):
    """Show each case's history on one machine, with detected steps.

    A level change counts when it is beyond the threshold and the run-to-run noise; it is a
    step once it held for --persist runs, a blip when the series came back sooner, and
    pending while only the newest run(s) show it (docs/regression.md).
    """
    from pathlib import Path

    from harness.analyze import history as hist
    from harness.analyze.compare import parse_fraction, this_machine_id
    from harness.errors import BenchError

    items = list(runs) or [results_dir]
    if not runs and not Path(results_dir).is_dir():
        raise BenchError(f"results directory {results_dir} does not exist")
    mid = None if machine == "all" else (machine or this_machine_id())
    df = hist.load_history(items, machine=mid, engine=engine)
    notes = [f"{len(df.attrs.get('skipped', []))} file(s) skipped: "
             + "; ".join(f"{p}: {why}" for p, why in df.attrs["skipped"][:3])] if df.attrs.get("skipped") else []
    if df.attrs.get("fallback"):
        notes.append(df.attrs["fallback"])
    if df.empty:
        where = ", ".join(items)
        raise BenchError(f"no runs of machine {mid} in {where} (try --machine all)" if mid else f"no runs in {where}")
    histories = hist.analyze(df, metric=metric, threshold=parse_fraction(threshold), persist=persist,
                             alert_window=alert_window, cases=list(cases) or None, last=last)
    if fmt == "text":
        hist.render_text(histories, notes=notes + [f"engine {df.attrs.get('engine')}, {df['run_id'].nunique()} runs"])
    elif fmt == "md":
        click.echo(hist.render_markdown(histories))
    else:
        click.echo(hist.to_json(histories, machine=mid, metric=metric, engine=df.attrs.get("engine"),
                                skipped=df.attrs.get("skipped", [])))
    if md_out:
        with open(md_out, "a", encoding="utf-8") as fh:
            fh.write(hist.render_markdown(histories))
    if check:
        if any(h.alert for h in histories):
            ctx.exit(1)
        if any(h.status == "pending-regression" for h in histories):
            ctx.exit(3)
    ctx.exit(0)
