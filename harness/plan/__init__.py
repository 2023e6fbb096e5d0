"""plan: the first step of the data path — what to measure, and the models to measure it on.

In: a suite name or YAML path (and/or the user's own models), a backend name, CLI filters.
Out: a list of :class:`harness.plan.suite.PlannedCase` and, per (model, variant), a cached
:class:`harness.plan.artifacts.Artifact` (ONNX model + eval data + meta with complexity).
Backends are found through the ``bench.backends`` entry points (:mod:`harness.plan.plugins`);
models and recipes through the suites registry (:mod:`harness.plan.models`), never by import.
"""
