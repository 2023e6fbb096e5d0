"""analyze: what the stored records say — comparisons and change over time.

In: run records (:mod:`harness.store`).
Out: two-run comparisons with significance (:mod:`.compare`), per-case histories with
detected steps (:mod:`.history`); the statistics are pure functions in :mod:`.changes`.
"""
