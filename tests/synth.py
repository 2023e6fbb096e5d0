"""Synthetic, schema-valid run records for tests of the reporter, compare, history, merge.

Samples are drawn from known distributions with a fixed seed, so tests can state what
the right answer is (a 20 % step is a regression, pure noise is not).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math

import numpy as np

from harness.store.records import isoformat

CPU_A = {"model": "Synthetic CPU A @ 3.0GHz", "physical_cores": 2, "logical_cores": 2, "governor": None,
         "frequency_mhz": None, "flags": ["avx2"]}
CPU_B = {"model": "Synthetic CPU B @ 2.0GHz", "physical_cores": 16, "logical_cores": 32, "governor": "performance",
         "frequency_mhz": 2000.0, "flags": ["avx512f"]}


def environment(cpu: dict = CPU_A, hostname: str = "host-a", gpus: list | None = None) -> dict:
    ident = json.dumps([cpu["model"], cpu["physical_cores"], cpu["logical_cores"], gpus or []], sort_keys=True)
    return {
        "machine_id": hashlib.sha256(ident.encode()).hexdigest()[:16],
        "hostname": hostname,
        "cpu": cpu,
        "memory_bytes": 24 * 2**30,
        "os": {"system": "Linux", "release": "6.1", "machine": "x86_64"},
        "python": {"version": "3.11.7"},
        "packages": {"bench": "0.1.0", "onnxruntime": "1.32.0", "torch": "2.13.0"},
        "gpus": gpus or [],
        "load_avg": [0.1, 0.1, 0.1],
    }


def _stats(samples: np.ndarray, confidence: float = 0.95) -> dict:
    s = np.sort(samples.astype(float))
    n = len(s)
    med = float(np.median(s))
    half = 1.96 * math.sqrt(n) / 2
    lo_i = max(0, int(math.floor(n / 2 - half)) - 1)
    hi_i = min(n - 1, int(math.ceil(n / 2 + half)))
    lo, hi = float(s[lo_i]), float(s[hi_i])
    q1, q3 = np.percentile(s, [25, 75])
    iqr = q3 - q1
    half_n = n // 2
    return {
        "n": n, "p50": med, "p90": float(np.percentile(s, 90)), "p95": float(np.percentile(s, 95)),
        "p99": float(np.percentile(s, 99)), "mean": float(s.mean()), "std": float(s.std(ddof=1)),
        "min": float(s[0]), "max": float(s[-1]), "cv": float(s.std(ddof=1) / s.mean()),
        "robust_cv": float(1.4826 * np.median(np.abs(s - med)) / med),
        "median_ci": [lo, hi], "p90_ci": None, "p99_ci": None,
        "ci_rel_halfwidth": (hi - lo) / 2 / med, "confidence": confidence,
        "outliers": int(((s < q1 - 1.5 * iqr) | (s > q3 + 1.5 * iqr)).sum()),
        "drift": float(np.median(samples[half_n:]) / np.median(samples[:half_n]) - 1),
    }


def make_case(model: str = "mlp-digits", variant: str = "fp32", *, backend: str = "cpu",
              runtime: str = "onnxruntime", precision: str | None = None, batch: int = 1,
              scenario: str = "single-stream", median_ns: float = 100_000.0, noise: float = 0.02,
              n: int = 200, seed: int = 0, status: str = "ok", reason: str | None = None,
              accuracy: float | None = 0.97, baseline_accuracy: float | None = 0.97,
              device: str = "Synthetic CPU A @ 3.0GHz", simulated: bool = False,
              params: int = 10_000, macs: int = 10_000, model_bytes: int = 40_000) -> dict:
    """A case whose latency samples are lognormal around ``median_ns`` with sigma ``noise``."""
    precision = precision or {"fp32": "fp32", "fp16": "fp16", "int8-dynamic": "int8",
                              "int8-static": "int8"}.get(variant, "fp32")
    key_fields = {"model": model, "artifact_hash": "0" * 16, "variant": variant, "backend": backend,
                  "runtime": runtime, "runtime_version": "1.0", "device": device, "precision": precision,
                  "batch": batch, "scenario": scenario, "threads": 2}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    case = {
        "case_id": f"{model}/{variant}/{backend}-{runtime}/{scenario}/b{batch}",
        "key": key, "key_fields": key_fields, "model": model, "variant": variant, "backend": backend,
        "runtime": runtime, "runtime_version": "1.0", "device": device, "precision": precision, "batch": batch,
        "scenario": scenario, "status": status, "reason": reason, "simulated": simulated,
        "complexity": {"params": params, "macs": macs, "model_bytes": model_bytes, "sparsity": 0.0},
    }
    if status in ("failed", "skipped", "unsupported"):
        case.update(latency_ns=None, throughput=None, samples_ns=None, validity=None, accuracy=None)
        return case
    rng = np.random.default_rng(seed)
    samples = np.maximum(1, rng.lognormal(math.log(median_ns), noise, size=n)).astype(np.int64)
    st = _stats(samples)
    case.update({
        "latency_ns": st,
        "samples_ns": [int(v) for v in samples],
        "throughput": {"samples_per_s": batch * 1e9 / st["mean"], "queries_per_s": 1e9 / st["mean"]},
        "headline": ({"metric": "p90_latency", "value": st["p90"], "unit": "ns"} if scenario == "single-stream"
                     else {"metric": "samples_per_s", "value": batch * 1e9 / st["mean"], "unit": "1/s"}),
        "iterations": n, "duration_s": float(samples.sum() / 1e9),
        "warmup": {"iterations": 10, "duration_s": 0.01, "settled": True},
        "stop_reason": "converged",
        "validity": {"valid": status == "ok", "reasons": [] if status == "ok" else [reason or "unstable"], "warnings": []},
        "accuracy": None if accuracy is None else {
            "metric": "top1", "value": accuracy, "baseline_value": baseline_accuracy,
            "delta": None if baseline_accuracy is None else accuracy - baseline_accuracy,
            "gate": 0.99, "passed": baseline_accuracy is None or accuracy >= 0.99 * baseline_accuracy,
            "n_samples": 360,
        },
    })
    return case


_counter = [0]


def make_record(cases: list[dict], *, env: dict | None = None, suite: str = "baseline",
                started: dt.datetime | None = None, tags: dict | None = None, git_sha: str | None = "abc123") -> dict:
    _counter[0] += 1
    started = started or (dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=_counter[0]))
    run_id = started.strftime("%Y%m%dT%H%M%SZ") + "-" + hashlib.sha256(str(_counter[0]).encode()).hexdigest()[:8]
    return {
        "schema_version": 1, "run_id": run_id, "started_at": isoformat(started),
        "finished_at": isoformat(started + dt.timedelta(minutes=1)), "interrupted": False,
        "bench": {"version": "0.1.0", "git_sha": git_sha, "git_dirty": False},
        "command": ["bench", "run", "--suite", suite], "suite": {"name": suite, "path": None, "sha256": None},
        "settings": {"min_time_s": 1.0, "max_time_s": 10.0, "min_iterations": 30, "target_ci": 0.01,
                     "confidence": 0.95, "warmup_min_iterations": 5, "warmup_min_time_s": 0.2,
                     "warmup_max_time_s": 5.0, "threads": 2, "case_timeout_s": 600.0},
        "tags": tags or {}, "environment": env or environment(),
        "timer": {"clock": "perf_counter_ns", "overhead_ns": 40.0, "resolution_ns": 1.0},
        "cases": cases,
    }
