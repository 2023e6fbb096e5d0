"""``bench show RUN``: the table of a stored run (a file, a run id, or ``latest``)."""
from __future__ import annotations

from pathlib import Path

import click


def resolve_run(ref: str, results_dir: str = "results") -> Path:
    """A record path from a file path, a run id (or unique prefix) in ``results_dir``, or ``latest``."""
    from harness.errors import BenchError
    from harness.store.records import RECORD_SUFFIX, latest_run, orphan_journals

    p = Path(ref)
    if p.is_file():
        return p
    d = Path(results_dir)
    if not d.is_dir():
        raise BenchError(f"no such run file '{ref}' and no results directory {d}")
    if ref == "latest":
        return latest_run(d)
    files = sorted(f for f in d.iterdir() if f.suffix == RECORD_SUFFIX and not f.name.startswith("."))
    matches = [f for f in files if f.stem.startswith(ref)]
    matches += [f for f in orphan_journals(d) if f.name[1:].startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise BenchError(f"no run '{ref}' (not a file, and no run id in {d} starts with it)")
    raise BenchError(f"run id '{ref}' is ambiguous in {d}: {', '.join(m.name for m in matches[:5])}")


@click.command("show")
@click.argument("run")
@click.option("--results", "results_dir", default="results", show_default=True, help="Where run ids are looked up.")
@click.option("--json", "as_json", is_flag=True, help="Print the record's JSON.")
def command(run, results_dir, as_json):
    """Print the table of a stored run: RUN is a record file, a run id (prefix) or 'latest'."""
    from harness.store.records import dumps, read_record
    from harness.cli.table import print_run

    path = resolve_run(run, results_dir)
    record = read_record(path)
    if as_json:
        click.echo(dumps(record))
        return
    print_run(record, path)
