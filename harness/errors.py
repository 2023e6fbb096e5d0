"""Errors that end a command with one clear line and a documented exit code."""
from __future__ import annotations

EXIT_OK = 0
EXIT_CASES_FAILED = 1  # run: a case failed or is invalid; compare: a regression
EXIT_USAGE = 2  # bad usage or bad input
EXIT_INCONCLUSIVE = 3  # compare: inconclusive or no baseline
EXIT_INTERRUPTED = 130


class BenchError(Exception):
    """A problem with the user's input or environment: printed as one line, exit 2."""

    exit_code = EXIT_USAGE


class MissingDependency(BenchError):
    """An optional package a model or backend needs is not installed: its cases are skipped."""
