"""Errors that end a command with one clear line and a documented exit code."""
from __future__ import annotations

EXIT_OK = 0
EXIT_CASES_FAILED = 1  # run: a case failed or is invalid; compare: a regression
EXIT_USAGE = 2  # bad usage or bad input
EXIT_INCONCLUSIVE = 3  # compare: inconclusive or no baseline
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # SIGTERM (128 + 15): what CI runners and `timeout` send


class BenchError(Exception):
    """A problem with the user's input or environment: printed as one line, exit 2."""

    exit_code = EXIT_USAGE


class MissingDependency(BenchError):
    """An optional package a model or backend needs is not installed: its cases are skipped."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise KeyboardInterrupt: handled the same way (finished
    cases kept, workers cleaned up), exit 143."""

    signal_name = "SIGTERM"


def raise_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (a no-op elsewhere)."""
    import signal

    def _handler(signum, frame):
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, _handler)
    except ValueError:  # not the main thread
        pass
