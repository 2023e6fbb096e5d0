"""Accuracy and fidelity, measured through the very session that was timed.

Metrics (pure functions over numpy arrays):
- ``top1``: fraction of eval samples whose arg-max class equals the label.
- fidelity against the fp32 reference outputs ``r`` of the same inputs:
  ``max_abs_diff = max |y - r|``; ``top1_agreement`` = fraction with argmax y = argmax r;
  ``cosine`` = mean over samples of <y, r> / (|y| |r|).
Gate (as MLPerf's accuracy tiers): passed when ``value >= gate * baseline_value``
(gate 0.99 = "99 % of fp32"). For models without labels the gated metric is top-1
agreement with fp32 and the baseline is 1.0.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(axis=1) == labels).mean())


def fidelity(outputs: np.ndarray, reference: np.ndarray) -> dict:
    y = outputs.reshape(len(outputs), -1).astype(np.float64)
    r = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(y, axis=1) * np.linalg.norm(r, axis=1)
    cos = np.where(norms > 0, (y * r).sum(axis=1) / np.where(norms > 0, norms, 1), 1.0)
    out = {"max_abs_diff": float(np.abs(y - r).max()), "mean_abs_diff": float(np.abs(y - r).mean()),
           "cosine": float(cos.mean())}
    if y.shape[1] > 1:
        out["top1_agreement"] = float((y.argmax(1) == r.argmax(1)).mean())
    return out


def run_eval(run: Callable[[Mapping[str, np.ndarray]], list], x: Mapping[str, np.ndarray], batch: int) -> np.ndarray:
    """Run every eval sample through ``run`` in chunks of ``batch`` (the last chunk padded
    with repeats of its first row, padded outputs dropped); returns the first output."""
    names = list(x)
    n = len(x[names[0]])
    outs = []
    for start in range(0, n, batch):
        chunk = {k: v[start:start + batch] for k, v in x.items()}
        m = len(chunk[names[0]])
        if m < batch:
            chunk = {k: np.concatenate([v, np.repeat(v[:1], batch - m, axis=0)]) for k, v in chunk.items()}
        y = np.array(run(chunk)[0], copy=True)  # copy: sessions may reuse output buffers
        outs.append(y[:m])
    return np.concatenate(outs)


def evaluate(outputs: np.ndarray, *, labels: np.ndarray | None, reference: np.ndarray | None,
             baseline_value: float | None, gate: float | None, metric: str | None = None) -> dict:
    """The case's ``accuracy`` record: metric, value, baseline value, delta, gate verdict."""
    fid = fidelity(outputs, reference) if reference is not None else None
    if metric is None:
        metric = "top1" if labels is not None else "top1_agreement"
    if metric == "top1":
        if labels is None:
            raise ValueError("metric top1 needs labels")
        value = top1(outputs, labels)
    elif fid is not None and metric in fid:
        value = fid[metric]
        if baseline_value is None:
            baseline_value = 1.0 if metric in ("top1_agreement", "cosine") else None
    else:
        raise ValueError(f"unknown accuracy metric {metric!r}")
    delta = None if baseline_value is None else value - baseline_value
    if metric in ("max_abs_diff", "mean_abs_diff"):
        passed = None if gate is None else bool(value <= gate)
    else:
        passed = None if (gate is None or baseline_value is None) else bool(value >= gate * baseline_value - 1e-12)
    return {"metric": metric, "value": value, "baseline_value": baseline_value, "delta": delta,
            "gate": gate, "passed": passed, "n_samples": int(len(outputs)), "fidelity": fid}
