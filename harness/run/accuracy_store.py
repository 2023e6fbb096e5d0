"""Worker side: an accuracy pass's outputs, stored per (artifact, system) and reused after a check.

Place in the data path: worker case (:mod:`harness.run.case`, after the timed window, on the
same session) -> **accuracy store** (full pass, or a verified reuse) -> the outputs go to
:func:`harness.measure.accuracy.evaluate`.

An accuracy pass runs every eval sample through the timed session: MiniLM-L6's 639 inputs take
13 s at batch 1 on two cores, a dynamic-int8 EfficientNet's 90 photo views 11 s. What it
computes is a function of the artifact, the runtime and its version, the backend options, the
precision and the processor; not of the scenario, and for most variants not of the batch size
or thread count beyond float rounding. So every full pass stores its outputs here (under
``<cache>/accuracy/<artifact>/<system key>/b<batch>.npz``), and a later case on the same system
(the offline case after the single-stream one; tomorrow's run) **verifies instead of
recomputing**:

* it runs a random subset of whole chunks of the eval set (chunk j = samples
  [j x batch, (j + 1) x batch), as a full pass cuts them, so a batch-dependent system sees the same
  batch composition) through its own, timed session: ``max(16, 5 %)`` of the samples, rounded up
  to whole chunks;
* each verified output must match the stored one as the in-window check matches (argmax equal for
  multi-column outputs and |y - r| <= 1e-3 max|r| + 1e-6);
* all match: the stored outputs are this case's accuracy outputs, and the record says so
  (``accuracy.source``: ``{"kind": "verified", ...}``); any mismatch (a batch-dependent variant
  such as dynamic int8 at another batch size, a changed kernel): a full pass, stored as the entry
  of this batch size (``{"kind": "pass", "reason": ...}``).

The system key holds the artifact key, backend, runtime, precision, backend options, the versions
of every ML package bench records, the CPU model and its instruction-set flags, and for non-CPU
backends the accelerators' names and driver: a change to any of them is a new entry, never a
reuse. ``bench run --fresh-accuracy`` always runs the full pass (and stores it).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

#: samples a reuse verifies: max(MIN_VERIFY, VERIFY_SHARE x N), rounded up to whole chunks
MIN_VERIFY = 16
VERIFY_SHARE = 0.05
RTOL = 1e-3


def system_key(payload: dict, artifact) -> str:
    """sha256 (16 hex) of everything beside the inputs that decides a pass's outputs."""
    from harness.run.env import PACKAGES, cpu_info, package_versions

    case = payload["case"]
    cpu = cpu_info()
    parts = {"artifact": artifact.key, "model": artifact.name, "variant": artifact.variant,
             "backend": case.get("backend"), "runtime": case.get("runtime"), "precision": case.get("precision"),
             "options": {str(k): str(v) for k, v in sorted((payload.get("options") or {}).items())},
             "packages": package_versions([p for p in PACKAGES if p != "bench"]),
             "cpu": cpu.get("model"), "flags": sorted(cpu.get("flags") or [])}
    if case.get("backend") not in (None, "cpu"):
        from harness.run.env import gpu_info

        parts["accelerators"] = [(g.get("name"), g.get("driver")) for g in gpu_info()]
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _dir(artifact, key: str) -> Path:
    return artifact.side_cache("accuracy") / key


def _load(path: Path, n: int) -> tuple[np.ndarray, dict] | None:
    """A stored entry, or None when missing, unreadable or not for ``n`` samples."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = np.array(z["outputs"])
            meta = json.loads(str(z["meta"]))
    except Exception:  # noqa: BLE001 - a missing or damaged entry is a miss, never trusted
        return None
    if len(out) != n:
        return None
    return out, meta


def _store(path: Path, outputs: np.ndarray, meta: dict) -> None:
    """Atomic write (a temporary file renamed over the entry); a failure to store is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".acc-", suffix=".npz", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, outputs=outputs, meta=np.array(json.dumps(meta)))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)  # type: ignore[possibly-undefined]
        except (OSError, UnboundLocalError):
            pass


def verify_chunks(n: int, batch: int, seed: int, *, min_samples: int = MIN_VERIFY,
                  share: float = VERIFY_SHARE) -> list[int]:
    """Chunk indices to verify: ceil(max(min_samples, share x n) / batch) distinct chunks of the
    ceil(n / batch) a full pass runs, drawn without replacement from ``seed``, sorted."""
    chunks = -(-n // batch)
    want = min(chunks, -(-max(min_samples, int(np.ceil(share * n))) // batch))
    rng = np.random.default_rng(seed)
    return sorted(int(j) for j in rng.choice(chunks, size=want, replace=False))


def matches(y: np.ndarray, r: np.ndarray, *, rtol: float = RTOL) -> np.ndarray:
    """Per row: argmax equal (multi-column outputs) and |y - r| <= rtol x max|r| + 1e-6, max over
    all of ``r`` (also the in-window check's rule: :func:`harness.run.scenario_case.in_window_accuracy`)."""
    y2 = y.reshape(len(y), -1).astype(np.float64)
    r2 = r.reshape(len(r), -1).astype(np.float64)
    scale = float(np.abs(r2).max()) if r2.size else 0.0
    ok = (np.abs(y2 - r2) <= rtol * scale + 1e-6).all(axis=1)
    if y2.shape[1] > 1:
        ok &= y2.argmax(1) == r2.argmax(1)
    return ok


def outputs(run: Callable, x: dict, batch: int, *, payload: dict, artifact, seed: int = 0,
            full_pass: Callable[[], np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
    """``(outputs of every eval sample, source)`` for this case: a verified stored pass or a new one.

    ``run(chunk dict) -> list of outputs`` is the timed session's run; ``x`` the eval inputs.
    ``source`` goes into the record as ``accuracy.source``.
    """
    from harness.measure.accuracy import run_eval

    names = list(x)
    n = len(x[names[0]])
    batch = max(1, int(batch))
    full = full_pass or (lambda: run_eval(run, x, batch))
    try:
        key = system_key(payload, artifact)
    except Exception as exc:  # noqa: BLE001 - no key, no reuse: measure
        return full(), {"kind": "pass", "batch": batch, "stored": False, "reason": f"no system key ({exc})"}
    d = _dir(artifact, key)
    entry = d / f"b{batch}.npz"
    meta_now = {"batch": batch, "n": n, "stored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "case_id": (payload.get("case") or {}).get("case_id") or _case_name(payload)}
    reason = "fresh accuracy requested" if payload.get("fresh_accuracy") else None
    if reason is None:
        # an entry of this batch size first, then any other (outputs rarely depend on the batch)
        candidates = [entry] + sorted(p for p in (d.glob("b*.npz") if d.is_dir() else []) if p != entry)
        reason = "no stored pass for this system"
        for cand in candidates:
            got = _load(cand, n)
            if got is None:
                continue
            stored, smeta = got
            idx = verify_chunks(n, batch, seed)
            rows = np.concatenate([np.arange(j * batch, min((j + 1) * batch, n)) for j in idx])
            # chunk by chunk, as a full pass cuts them (the last chunk padded the same way)
            y = np.concatenate([run_eval(run, {k: v[j * batch:(j + 1) * batch] for k, v in x.items()}, batch)
                                for j in idx])
            ok = matches(y, stored[rows])
            if ok.all():
                return stored, {"kind": "verified", "batch": batch, "stored_batch": int(smeta.get("batch", 0)),
                                "verified_samples": int(len(rows)), "of": n,
                                "stored_at": smeta.get("stored_at"), "stored_by": smeta.get("case_id"),
                                "max_abs_diff": float(np.abs(y.astype(np.float64) - stored[rows]).max())}
            reason = (f"{int((~ok).sum())} of {len(rows)} verified outputs differ from the pass stored at "
                      f"batch {smeta.get('batch')}")
    out = full()
    _store(entry, np.asarray(out), meta_now)
    return out, {"kind": "pass", "batch": batch, "stored": True, "reason": reason}


def _case_name(payload: dict) -> str:
    c = payload.get("case") or {}
    return "/".join(str(c.get(k)) for k in ("model", "variant", "backend", "runtime", "scenario", "batch"))
