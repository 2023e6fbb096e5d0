"""bench's core. Its subpackages are the data path, in order:

1. :mod:`harness.plan`    suite YAML (or your own model) -> planned cases; artifacts (ONNX + eval data)
                          built through the suites registry and cached; backends found by entry point
2. :mod:`harness.run`     one spawned worker per case (time limit, crash/hang/OOM classified);
                          the worker prepares the backend session and drives the measurement
3. :mod:`harness.measure` warm-up, the timing loop, statistics, verdict, accuracy, energy
4. :mod:`harness.store`   the run record (schema v1; journal while running), readers, flat rows,
                          merge, export
5. :mod:`harness.analyze` compare two runs, per-case history with detected steps
6. :mod:`harness.report`  HTML / Markdown / CSV reports
   :mod:`harness.cli`     the ``bench`` command that drives all of the above

Loose modules: :mod:`harness.errors` (BenchError, exit codes) and :mod:`harness.units`
(the unit formatters every table and report uses).

The public face is small (as pyperf's): :func:`load_results` for notebooks, and the
``bench`` command line (:mod:`harness.cli`). Importing this package imports no
framework (torch, tensorflow, onnxruntime).
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_results"]


def load_results(path_or_glob):
    """Load run records into a pandas DataFrame, one row per case, flat columns.

    See :func:`harness.store.records.load_results`.
    """
    from harness.store.records import load_results as _load

    return _load(path_or_glob)
