"""cli: the ``bench`` command line, the outer shell around the data path.

In: argv. Out: calls into plan/run (``bench run``), store (``show``, ``merge``, ``export``),
analyze (``compare``, ``history``) and report (``report``); a terminal table
(:mod:`harness.cli.table`); an exit code. Errors become one line (exit 2), never a traceback.

Start-up stays fast: each sub-command lives in its own module in this package
(``harness/cli/NAME.py``) and is imported only when it is invoked, so ``bench --help``
and ``bench list`` never import torch, tensorflow or onnxruntime.

Exit codes (documented in the README):
  0  all cases ok (compare: no regression)
  1  one or more cases failed or invalid (compare: a regression)
  2  bad usage or bad input (one line on stderr, no traceback)
  3  compare: inconclusive, or no baseline
  130 interrupted (Ctrl-C); finished cases are kept in the record
  143 terminated (SIGTERM), handled like Ctrl-C
"""
from __future__ import annotations

import os
import sys

import click

from harness import __version__
from harness.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, BenchError, Terminated

#: name -> (module:attribute, one-line help shown by ``bench --help`` without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("harness.cli.run:command", "Run a suite (or your own model) on a backend; write a run record."),
    "list": ("harness.cli.listing:command", "List suites, backends, models or FPGA parts."),
    "env": ("harness.cli.env:command", "Print this machine's fingerprint."),
    "data": ("harness.cli.data:command", "Install / check the weights and data sets of the standard suites."),
    "cache": ("harness.cli.cache:command", "List the artifact cache; prune superseded or unused entries."),
    "show": ("harness.cli.show:command", "Print the table of a stored run."),
    "complexity": ("harness.cli.complexity:command", "Count parameters, MACs, size and sparsity of an ONNX model."),
    "report": ("harness.cli.report:command", "Render runs into HTML / Markdown / CSV reports."),
    "compare": ("harness.cli.compare:command", "Compare two runs; exit 1 on a significant regression."),
    "history": ("harness.cli.history:command", "Show per-case history of a machine with detected steps."),
    "merge": ("harness.cli.merge:command", "Gather run files from several machines into one directory."),
    "export": ("harness.cli.export:command", "Export a run as pytest-benchmark JSON or flat CSV/Parquet."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name, (ref, _) in COMMANDS.items() if _module_exists(ref)]

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        ref, _ = COMMANDS[name]
        if not _module_exists(ref):
            return None
        from harness.plan.plugins import load_object

        return load_object(ref)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and name not in self.list_commands(ctx) and not name.startswith("-"):
            choices = ", ".join(self.list_commands(ctx))
            raise click.UsageError(f"unknown command '{name}' (choose from: {choices})", ctx)
        return super().resolve_command(ctx, args)


def _module_exists(ref: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(ref.partition(":")[0]) is not None
    except ModuleNotFoundError:
        return False


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bench")
def cli():
    """bench: hardware-aware benchmarking of ML inference.

    Runs standard suites (baseline, pruned, quantized, distilled models) on pluggable
    backends with warm-up, adaptive sample counts, confidence intervals and a
    validity verdict per case; records land in results/, reports in reports/.
    """


def _command_path(exc: click.ClickException) -> str:
    ctx = getattr(exc, "ctx", None)
    return ctx.command_path if ctx is not None else "bench"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; never lets a traceback reach the user."""
    args = sys.argv[1:] if argv is None else argv
    try:
        # obj["argv"]: the command line as typed, recorded in the run (and replayed by --resume)
        rv = cli.main(args=args, prog_name="bench", standalone_mode=False, obj={"argv": list(args)})
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, Terminated):  # click turns KeyboardInterrupt (and so SIGTERM) into Abort
            click.echo("bench: terminated (SIGTERM)", err=True)
            return EXIT_TERMINATED
        click.echo("bench: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.UsageError as exc:
        hint = f" (see '{_command_path(exc)} --help')"
        click.echo(f"{_command_path(exc)}: error: {_one_line(exc.format_message())}{hint}", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"{_command_path(exc)}: error: {_one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except BenchError as exc:
        click.echo(f"bench: error: {_one_line(str(exc))}", err=True)
        return exc.exit_code
    except Terminated:
        click.echo("bench: terminated (SIGTERM)", err=True)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        click.echo("bench: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug in bench: still one line, traceback on request
        if os.environ.get("BENCH_DEBUG"):
            raise
        click.echo(f"bench: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
                   "(set BENCH_DEBUG=1 for the traceback)", err=True)
        return EXIT_USAGE
    return int(rv or 0)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
