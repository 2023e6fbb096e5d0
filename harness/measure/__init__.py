"""measure: the timing loop and the statistics, run inside the worker.

In: a ``step()`` callable (one query through a backend session) and settings.
Out: samples, their summary (:mod:`.stats`, pure functions), the validity verdict
(:mod:`.timing`), accuracy against labels or a reference (:mod:`.accuracy`) and energy
over the measured window (:mod:`.energy`). Imports no ML framework.
"""
