"""Data-parallel scaling figures from replica time windows (pure functions, no I/O).

Place in the data path: the replica workers (``harness.run.replica``) each report a window
``(start_ns, end_ns, samples)`` on a shared wall clock; these functions turn the windows of
one replica count into throughput figures, and a sweep of replica counts into ``scaling``
(replicas, throughput, efficiency) for the case record.
"""
from __future__ import annotations

from typing import Iterable, Sequence

__all__ = ["replica_throughput", "aggregate", "efficiency", "scaling_table"]


def replica_throughput(start_ns: int, end_ns: int, samples: int) -> float:
    """Samples per second of one replica over its own window.

    .. math:: X_i = \\frac{s_i}{(e_i - b_i) \\cdot 10^{-9}}

    where :math:`s_i` is the number of samples the replica completed between its first
    query's start :math:`b_i` and its last query's end :math:`e_i` (nanoseconds).
    """
    span = int(end_ns) - int(start_ns)
    if span <= 0:
        raise ValueError(f"replica window must have positive length, got {span} ns")
    return samples / (span * 1e-9)


def aggregate(windows: Sequence[dict]) -> dict:
    """Aggregate throughput of replicas that ran at the same time.

    ``windows``: one dict per replica with ``start_ns``, ``end_ns``, ``samples``.

    .. math::
        X_{agg} = \\frac{\\sum_i s_i}{(\\max_i e_i - \\min_i b_i) \\cdot 10^{-9}}

    i.e. all the samples over the union window: the wall-clock rate a user of all N replicas
    sees (a slow or late replica lowers it, as it should). ``sum_of_replicas``
    (:math:`\\sum_i X_i`) is reported beside it; the two agree when the windows coincide, and
    ``overlap`` (:math:`(\\min_i e_i - \\max_i b_i) / (\\max_i e_i - \\min_i b_i)`, clipped at 0)
    says how well they did.
    """
    if not windows:
        raise ValueError("no replica windows")
    start = min(int(w["start_ns"]) for w in windows)
    end = max(int(w["end_ns"]) for w in windows)
    total = sum(int(w["samples"]) for w in windows)
    per = [replica_throughput(w["start_ns"], w["end_ns"], w["samples"]) for w in windows]
    common = min(int(w["end_ns"]) for w in windows) - max(int(w["start_ns"]) for w in windows)
    return {
        "replicas": len(windows),
        "samples": total,
        "wall_s": (end - start) * 1e-9,
        "throughput": replica_throughput(start, end, total),
        "per_replica": per,
        "sum_of_replicas": sum(per),
        "overlap": max(0.0, common / (end - start)),
    }


def efficiency(throughput_n: float, n: int, throughput_1: float) -> float:
    """Scaling efficiency of ``n`` replicas against one.

    .. math:: E(n) = \\frac{X(n)}{n \\cdot X(1)}

    1.0 is perfect linear scaling; 0.5 at n = 2 means the second replica added nothing.
    """
    if n < 1 or throughput_1 <= 0:
        raise ValueError("efficiency needs n >= 1 and a positive one-replica throughput")
    return throughput_n / (n * throughput_1)


def scaling_table(points: Iterable[dict]) -> dict:
    """The case record's ``scaling`` object from measured points.

    ``points``: dicts with ``replicas`` and either ``throughput`` (+ ``per_replica``) or a
    ``status`` other than ``ok`` with a ``reason``. Efficiency is relative to the point with
    one replica; without a measured one-replica point it is None.
    """
    pts = sorted(points, key=lambda p: p["replicas"])
    base = next((p["throughput"] for p in pts if p["replicas"] == 1 and p.get("status", "ok") == "ok"), None)
    out = {"replicas": [], "throughput": [], "efficiency": [], "points": []}
    for p in pts:
        ok = p.get("status", "ok") == "ok"
        thr = p.get("throughput") if ok else None
        eff = efficiency(thr, p["replicas"], base) if ok and base else None
        out["replicas"].append(p["replicas"])
        out["throughput"].append(thr)
        out["efficiency"].append(eff)
        out["points"].append({**p, "status": p.get("status", "ok"), "efficiency": eff})
    return out
