"""bench's core: plan, artifacts, workers, measurement, statistics, records, reports.

The public face is small (as pyperf's): :func:`load_results` for notebooks, and the
``bench`` command line (:mod:`harness.cli`). Importing this package imports no
framework (torch, tensorflow, onnxruntime).
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_results"]


def load_results(path_or_glob):
    """Load run records into a pandas DataFrame, one row per case, flat columns.

    See :func:`harness.records.load_results`.
    """
    from harness.records import load_results as _load

    return _load(path_or_glob)
