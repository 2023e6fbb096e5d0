"""Generation metrics: token timestamps -> TTFT, TPOT, ITL, tokens/s; perplexity and next-token accuracy.

Place in the data path: measure. The generation case (``harness.run.llm_case``) drives a backend's
``GenerationSession`` through :func:`generate_timed`, which reads the harness's clock (any
zero-argument callable returning integer ns; ``time.perf_counter_ns`` by default, scripted in
tests) once before the request and once after every call that returns tokens. Everything
else here is a pure function of those timestamps or of log-its. No framework import.

Definitions (MLPerf LLM rules, vLLM's benchmark, GenAI-Perf), for one request of ``n`` output
tokens issued at ``t_0`` whose tokens arrive at ``t_1 .. t_n``:

- TTFT = ``t_1 - t_0`` (the prefill plus the first token's sampling);
- end-to-end latency ``E = t_n - t_0``;
- TPOT = ``(E - TTFT) / (n - 1)`` (undefined for ``n = 1``);
- ITL (inter-token latency) = ``t_{i+1} - t_i`` for ``i = 1 .. n-1``, one value per token;
- output tokens/s per request (per sequence) = ``n / E``; a batch of ``b`` sequences that
  share the timestamps (static batching) yields ``b n / E``;
- prefill tokens/s = ``b x prompt_len / TTFT``; decode tokens/s = ``b (n - 1) / (E - TTFT) = b / TPOT``;
- aggregate output tokens/s over a window = all output tokens / (last token - first issue).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np

Clock = Callable[[], int]


def request_timing(start_ns: int, token_ns: Sequence[int]) -> dict:
    """TTFT, E2E, TPOT and the ITLs of one request from its issue time and token arrival times."""
    t = [int(x) for x in token_ns]
    if not t:
        raise ValueError("a request needs at least one token timestamp")
    if t[0] < start_ns or any(b < a for a, b in zip(t, t[1:])):
        raise ValueError("token timestamps must not go back in time")
    ttft = t[0] - int(start_ns)
    e2e = t[-1] - int(start_ns)
    n = len(t)
    return {"n_tokens": n, "ttft_ns": ttft, "e2e_ns": e2e,
            "tpot_ns": (e2e - ttft) / (n - 1) if n > 1 else None,
            "itl_ns": [b - a for a, b in zip(t, t[1:])]}


def generate_timed(session, input_ids: np.ndarray, n_out: int, clock: Clock = time.perf_counter_ns) -> dict:
    """One request batch: prefill, then ``n_out - 1`` decode steps; a clock read after each returns.

    Returns ``{"start_ns", "token_ns": [n_out], "tokens": (batch, n_out) int64, "kv_cache_bytes"}``;
    ``kv_cache_bytes`` is read from the session after the last token (the cache at its largest).
    """
    if n_out < 1:
        raise ValueError("output length must be >= 1")
    stamps = []
    toks = []
    t0 = clock()
    toks.append(session.prefill(input_ids))
    stamps.append(clock())
    decode = session.decode
    for _ in range(n_out - 1):
        toks.append(decode())
        stamps.append(clock())
    kv = session.kv_cache_bytes()
    session.reset()
    return {"start_ns": t0, "token_ns": stamps, "tokens": np.stack([np.asarray(x) for x in toks], axis=1),
            "kv_cache_bytes": kv}


def _stats(values, confidence: float = 0.95) -> dict | None:
    from harness.measure.stats import summarize

    vals = [float(v) for v in values if v is not None]
    return summarize(vals, confidence) if vals else None


def summarize_requests(requests: Sequence[dict], *, batch: int, prompt_len: int,
                       window_ns: int | None = None, confidence: float = 0.95) -> dict:
    """Stats of a series of requests (each from :func:`generate_timed`) of ``batch`` sequences.

    ``ttft_ns`` / ``tpot_ns`` / ``e2e_ns`` are over requests; ``itl_ns`` over every token gap;
    ``tokens_per_s``: ``per_request`` = stats of ``batch x n / E`` per request, ``per_sequence``
    = their median divided by ``batch`` (what one user sees), ``aggregate`` = all output tokens /
    ``window_ns`` (default: first issue to last token, requests back to back).
    """
    if not requests:
        raise ValueError("no requests")
    timings = [request_timing(r["start_ns"], r["token_ns"]) for r in requests]
    n_out = timings[0]["n_tokens"]
    per_req_tps = [batch * t["n_tokens"] / (t["e2e_ns"] / 1e9) for t in timings if t["e2e_ns"] > 0]
    prefill_tps = [batch * prompt_len / (t["ttft_ns"] / 1e9) for t in timings if t["ttft_ns"] > 0]
    decode_tps = [batch / (t["tpot_ns"] / 1e9) for t in timings if t["tpot_ns"]]
    if window_ns is None:
        window_ns = int(requests[-1]["token_ns"][-1]) - int(requests[0]["start_ns"])
    total_tokens = batch * sum(t["n_tokens"] for t in timings)
    itl = [x for t in timings for x in t["itl_ns"]]
    ttft = _stats([t["ttft_ns"] for t in timings], confidence)
    tpot = _stats([t["tpot_ns"] for t in timings], confidence)
    e2e = _stats([t["e2e_ns"] for t in timings], confidence)
    return {
        "requests": len(timings), "batch": batch, "prompt_len": prompt_len, "output_len": n_out,
        "ttft_ns": ttft, "tpot_ns": tpot, "e2e_ns": e2e, "itl_ns": _stats(itl, confidence),
        "tokens_per_s": {
            "per_request": _stats(per_req_tps, confidence),
            "per_sequence_p50": float(np.median(per_req_tps)) / batch if per_req_tps else None,
            "aggregate": total_tokens / (window_ns / 1e9) if window_ns > 0 else None,
            "decode_p50": float(np.median(decode_tps)) if decode_tps else None,
        },
        "prefill_tokens_per_s_p50": float(np.median(prefill_tps)) if prefill_tps else None,
        "output_tokens": total_tokens, "window_ns": int(window_ns),
    }


# --------------------------------------------------------------------------- accuracy (pure)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``x - logsumexp(x)`` along the last axis, in float64 for a stable sum."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def next_token_scores(logits: np.ndarray, tokens: np.ndarray) -> dict:
    """Negative log-likelihood and top-1 hits of teacher-forced next-token prediction.

    ``logits``: ``(batch, L, vocab)`` for inputs ``tokens[:, :L]``; position ``i`` predicts
    ``tokens[:, i + 1]``, so ``L - 1`` predictions per row. Returns sums and counts so windows
    can be pooled: ``{"nll_sum", "correct", "count"}``.
    """
    lp = log_softmax(logits[:, :-1])
    target = np.asarray(tokens)[:, 1:logits.shape[1]]
    picked = np.take_along_axis(lp, target[..., None], axis=-1)[..., 0]
    hits = (lp.argmax(axis=-1) == target)
    return {"nll_sum": float(-picked.sum()), "correct": int(hits.sum()), "count": int(target.size)}


def perplexity(nll_sum: float, count: int) -> float:
    """``exp(mean NLL)`` over ``count`` predicted tokens (natural log)."""
    if count <= 0:
        raise ValueError("no predicted tokens")
    return math.exp(nll_sum / count)


def windows(tokens: np.ndarray, window: int, n_windows: int) -> np.ndarray:
    """``n_windows`` non-overlapping windows of ``window`` tokens from the start of ``tokens``."""
    need = window * n_windows
    if len(tokens) < need:
        raise ValueError(f"text has {len(tokens)} tokens; {n_windows} windows of {window} need {need}")
    return np.asarray(tokens[:need], dtype=np.int64).reshape(n_windows, window)


def within_relative(value: float, reference: float, tolerance: float) -> bool:
    """``|value / reference - 1| <= tolerance`` (e.g. perplexity within 2 % of fp32)."""
    return abs(value / reference - 1.0) <= tolerance
