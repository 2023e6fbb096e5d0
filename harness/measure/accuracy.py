"""Accuracy and fidelity, measured through the very session that was timed.

Metrics (pure functions over numpy arrays):
- ``top1``: fraction of eval samples whose arg-max class equals the label.
- fidelity against the fp32 reference outputs ``r`` of the same inputs:
  ``max_abs_diff = max |y - r|``; ``top1_agreement`` = fraction with argmax y = argmax r;
  ``cosine`` = mean over samples of <y, r> / (|y| |r|);
  ``top5_agreement`` = fraction with argmax r among the 5 largest of y (more than 5 classes);
  ``top1_agreement_decisive`` = top-1 agreement over the *decisive* samples only, those whose
  reference leads its runner-up by at least ``DECISIVE_MARGIN`` = 1 in log-probability
  (l1 - l2 >= 1 for logits: the top class at least e = 2.7 times as likely as the next; rows
  that are probabilities are compared through their logs), ``decisive_n`` = their count.
  On near-tied samples the fp32 choice itself is arbitrary, and any rounding flips it: plain
  agreement there measures the eval set's ambiguity, not the variant (docs/zoo.md).
Gate (as MLPerf's accuracy tiers): passed when ``value >= gate * baseline_value``
(gate 0.99 = "99 % of fp32"). For models without labels the gated metric is top-1
agreement with fp32 and the baseline is 1.0. A model may name its own labelled task's
metrics (computed from the outputs by its scorer, e.g. WordSim-353 Spearman) as the
gated metric and as further ``checks``; each is gated against the fp32 model's value.
Non-finite outputs (NaN, ±Inf) fail the gate whatever the metric says (``argmax`` of a NaN row
is 0, so agreement can look perfect): ``non_finite = {"count", "of"}`` and
``reason = "outputs contain N non-finite values (NaN/Inf) of M"``; values that come out
non-finite are stored as null by the record writer (see :func:`harness.safe.encode_non_finite`).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from harness.units import PERCENT_METRICS  # noqa: F401  (re-exported: the metrics shown as percentages)


#: fidelity metrics whose fp32 value is 1 by definition (the reference agrees with itself)
AGREEMENT_METRICS = ("top1_agreement", "top1_agreement_decisive", "top5_agreement", "cosine")


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(axis=1) == labels).mean())


#: log-probability lead of the reference's top class over its runner-up that makes a sample decisive
DECISIVE_MARGIN = 1.0


def decisive_mask(reference: np.ndarray, margin: float = DECISIVE_MARGIN) -> np.ndarray:
    """Rows whose top value leads the runner-up by >= ``margin`` in log-probability.

    Rows that are probability vectors (non-negative, summing to 1 within 1e-3) are compared
    as ln p1 - ln p2; anything else is taken as logits (l1 - l2, softmax-invariant).
    """
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    if r.shape[1] < 2:
        return np.zeros(len(r), dtype=bool)
    two = -np.sort(-r, axis=1)[:, :2]
    probs = bool((r >= 0).all() and np.allclose(r.sum(axis=1), 1.0, atol=1e-3))
    if probs:
        with np.errstate(divide="ignore"):
            two = np.log(two)
    with np.errstate(invalid="ignore"):
        return (two[:, 0] - two[:, 1]) >= margin


def fidelity(outputs: np.ndarray, reference: np.ndarray) -> dict:
    y = outputs.reshape(len(outputs), -1).astype(np.float64)
    r = reference.reshape(len(reference), -1).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf outputs: the gate says so (evaluate)
        norms = np.linalg.norm(y, axis=1) * np.linalg.norm(r, axis=1)
        cos = np.where(norms > 0, (y * r).sum(axis=1) / np.where(norms > 0, norms, 1), 1.0)
    out = {"max_abs_diff": float(np.abs(y - r).max()), "mean_abs_diff": float(np.abs(y - r).mean()),
           "cosine": float(cos.mean())}
    if y.shape[1] > 1:
        same = y.argmax(1) == r.argmax(1)
        out["top1_agreement"] = float(same.mean())
        dec = decisive_mask(r)
        out["decisive_n"] = int(dec.sum())
        out["top1_agreement_decisive"] = float(same[dec].mean()) if dec.any() else None
    if y.shape[1] > 5:
        top5 = np.argpartition(-y, 4, axis=1)[:, :5]
        out["top5_agreement"] = float((top5 == r.argmax(1)[:, None]).any(axis=1).mean())
    return out


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``a``; tied values share the mean of the ranks they span (the "average"
    method): ranks r_i = 1 + #{j: a_j < a_i} + (#{j: a_j == a_i} - 1) / 2."""
    a = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.arange(1, len(a) + 1, dtype=np.float64)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's r of the average ranks of ``x`` and ``y``,
    rho = sum (rx - mean rx)(ry - mean ry) / sqrt(sum (rx - mean rx)^2 sum (ry - mean ry)^2);
    NaN when either side is constant. (scipy.stats.spearmanr computes the same; importing
    scipy.stats took 2.6 s in a MiniLM worker, measured with cProfile while another job ran.)"""
    rx, ry = average_ranks(x), average_ranks(y)
    if len(rx) != len(ry):
        raise ValueError(f"spearman: {len(rx)} values against {len(ry)}")
    dx, dy = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / den) if den > 0 else float("nan")


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
             baseline_value: float | None, gate: float | None, metric: str | None = None,
             task: Mapping[str, float] | None = None, baselines: Mapping[str, float] | None = None,
             checks: tuple | list = ()) -> dict:
    """The case's ``accuracy`` record: metric, value, baseline value, delta, gate verdict.

    ``task``: metrics of the model's own labelled task computed from these outputs (e.g.
    WordSim-353 Spearman, top-5 on labelled photos); ``metric`` and ``checks`` may name them.
    ``baselines``: the fp32 model's value of every metric (from the artifact), the reference
    of the gate. ``checks``: further metrics gated like ``metric`` (value >= gate x fp32
    value); the case passes only when every gated metric does, and ``checks`` in the record
    lists each with its verdict.
    """
    fid = fidelity(outputs, reference) if reference is not None else None
    task = dict(task or {})
    baselines = dict(baselines or {})
    if metric is None:
        metric = "top1" if labels is not None else "top1_agreement"

    def value_of(name: str):
        if name == "top1":
            if labels is None:
                raise ValueError("metric top1 needs labels")
            return top1(outputs, labels)
        if name in task:
            return task[name]
        if fid is not None and name in fid:
            if fid[name] is None:
                raise ValueError(f"accuracy metric {name!r} is undefined on this eval set "
                                 f"(no sample where the reference leads by {DECISIVE_MARGIN:g} in log-probability)")
            return fid[name]
        raise ValueError(f"unknown accuracy metric {name!r}")

    def baseline_of(name: str, given: float | None):
        if given is not None:
            return given
        if name in baselines:
            return baselines[name]
        return 1.0 if name in AGREEMENT_METRICS else None

    def verdict(name: str, value: float, base: float | None):
        if gate is None:
            return None
        if name in ("max_abs_diff", "mean_abs_diff"):
            return bool(value <= gate)
        if base is None:
            return None
        return bool(value >= gate * base - 1e-12)

    value = value_of(metric)
    baseline_value = baseline_of(metric, baseline_value)
    delta = None if baseline_value is None else value - baseline_value
    passed = verdict(metric, value, baseline_value)
    rows = []
    for name in checks:
        if name == metric:
            continue
        v = value_of(name)
        b = baseline_of(name, None)
        rows.append({"metric": name, "value": v, "baseline_value": b, "delta": None if b is None else v - b,
                     "passed": verdict(name, v, b)})
    if rows and passed is not None:
        passed = passed and all(r["passed"] is not False for r in rows)
    out = {"metric": metric, "value": value, "baseline_value": baseline_value, "delta": delta,
           "gate": gate, "passed": passed, "n_samples": int(len(outputs)), "fidelity": fid}
    if task:
        out["task"] = task
    if rows:
        out["checks"] = rows
    bad = non_finite_count(outputs)
    if bad:
        out["passed"] = False
        out["non_finite"] = {"count": bad, "of": int(np.asarray(outputs).size)}
        out["reason"] = f"outputs contain {bad} non-finite values (NaN/Inf) of {int(np.asarray(outputs).size)}"
    return out


def non_finite_count(outputs) -> int:
    """How many elements of ``outputs`` are NaN or ±Inf (0 for integer outputs)."""
    a = np.asarray(outputs)
    if not np.issubdtype(a.dtype, np.inexact):
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))
