"""run: the second step — each planned case measured in its own worker process.

In: planned cases, their artifacts, a resolved backend and measurement settings.
Out: one case record per case (identity, measured result, worker facts, comparability key),
appended to the journal as it finishes (:mod:`harness.store`). The parent side is
:mod:`harness.run.runner`; the worker side :mod:`harness.run.case` (which drives
:mod:`harness.measure`); :mod:`harness.run.env` fingerprints the machine.
"""
