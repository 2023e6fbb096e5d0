"""store: where measured cases go and how they are read back.

In: case records from :mod:`harness.run`.
Out: ``results/RUN_ID.json`` (schema v1, validated, atomic; journal while running) and
readers: records, flat rows (:func:`harness.store.records.load_results`), merged directories,
exports (pytest-benchmark JSON, CSV/Parquet). Nothing here changes a measured value.
"""
