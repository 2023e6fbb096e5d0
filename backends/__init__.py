"""Hardware targets behind one small protocol (see :mod:`backends.base`).

Backends are found through the entry-point group ``bench.backends`` and imported
lazily by :mod:`harness.plan.plugins`; importing this package imports nothing heavy.
"""
