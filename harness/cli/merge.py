"""``bench merge DIR_OR_FILES... --out DIR``: gather run files of several machines into one directory."""
from __future__ import annotations

import click


@click.command("merge")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory to merge into.")
@click.option("--skip-invalid", is_flag=True, help="Leave out unreadable or schema-breaking files instead of failing.")
@click.option("--dry-run", is_flag=True, help="Report what would be written; write nothing.")
@click.option("--no-recursive", is_flag=True, help="Do not descend into sub-directories of the inputs.")
@click.option("--no-check", is_flag=True, help="Skip the JSON-schema check of each record (faster).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(inputs, out_dir, skip_invalid, dry_run, no_recursive, no_check, fmt):
    """Copy the run records under DIR_OR_FILES into --out, named <run_id>.<content hash>.json.

    The same record found twice is written once; different records never collide. The
    summary groups runs by machine fingerprint (environment.machine_id), not host name.
    """
    import json

    from harness.store.merge import merge_runs

    report = merge_runs(inputs, out_dir, skip_invalid=skip_invalid, dry_run=dry_run, recursive=not no_recursive,
                        check=not no_check)
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=1))
    else:
        for line in report.lines():
            click.echo(line)
