"""``bench export``: a run as pytest-benchmark JSON, or runs as a flat CSV / Parquet table with raw samples."""
from __future__ import annotations

import click


def _records(items, results_dir, machine, suite=None):
    """Records for RUN arguments: files, directories, globs, run ids, latest / previous."""
    from pathlib import Path

    from harness.analyze.compare import RunFinder
    from harness.store.records import read_records

    finder = RunFinder(results_dir, machine=machine, suite=suite)
    out = []
    for item in items:
        if Path(item).is_dir() or any(ch in item for ch in "*?["):
            out.extend(read_records([item]))
        else:
            out.append(finder.find(item)[0])
    return out


@click.command("export")
@click.argument("runs", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["pytest-benchmark", "csv", "parquet"]), required=True)
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Output file. [default: stdout; Parquet needs a file]")
@click.option("--layout", type=click.Choice(["wide", "long"]), default="wide", show_default=True,
              help="CSV/Parquet: one row per case (samples as a list) or one row per sample.")
@click.option("--results", "results_dir", default="results", show_default=True,
              help="Where run ids and latest/previous are looked up.")
@click.option("--machine", default=None, help="Machine id for latest/previous. [default: this machine]")
@click.option("--suite", default=None, help="latest/previous: only runs of this suite.")
@click.option("--no-data", is_flag=True, help="pytest-benchmark: leave out the per-round data arrays.")
def command(runs, fmt, out, layout, results_dir, machine, suite, no_data):
    """Export RUNS (files, directories, run ids, latest/previous).

    pytest-benchmark: one run, in the JSON layout pytest-benchmark writes, readable by
    'pytest-benchmark compare'. csv / parquet: every case of every run with raw samples.
    """
    import json

    from harness.errors import BenchError
    from harness.store.export import flat_table, to_pytest_benchmark, write_table

    if fmt == "pytest-benchmark":
        if len(runs) != 1:
            raise BenchError("pytest-benchmark export takes exactly one run")
        (record,) = _records(runs, results_dir, machine, suite)[:1] or [None]
        text = json.dumps(to_pytest_benchmark(record, include_data=not no_data), indent=4, allow_nan=False)
        if out:
            from harness.safe import write_atomic

            write_atomic(out, text + "\n", what="export")
        else:
            click.echo(text)
        return
    records = _records(runs, results_dir, machine, suite)
    df = flat_table(records, layout=layout)
    text = write_table(df, out, fmt)
    if text is not None:
        click.echo(text, nl=False)
