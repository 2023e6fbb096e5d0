"""One generative-LLM case inside its worker: generation session -> timed requests -> accuracy -> gates.

Place in the data path: run (worker side), beside ``harness.run.case`` which hands LLM artifacts
(``meta["kind"] == "llm"``) here. The backend prepares a ``GenerationSession``; the harness owns
the clock (:func:`harness.measure.generation.generate_timed`) and every statistic.

Scenarios (MLPerf's, for token streams):
- ``single-stream``: one sequence per request (batch 1), each request issued when the last
  finished; per (prompt, output) length point of the grid, TTFT / TPOT / ITL / E2E stats.
- ``offline``: static batching -- ``batch`` prompts of equal length prefilled together and
  decoded in lock step, batches back to back; headline = aggregate output tokens/s.
- ``server``: Poisson arrivals (``harness.measure.loadgen``) at the suite's QPS, one request in service
  at a time (FIFO); TTFT is taken from the *scheduled* arrival (queueing included, no
  coordinated omission); p99 TTFT and p99 TPOT are checked against the suite's bounds with
  early stopping (``harness.measure.stats.early_stopping_percentile``).

Prompts are consecutive slices of the novel's tokens, after the perplexity windows, a new slice
per request (distinct prompts, nothing cached across requests). Decoding is greedy and never
stops early (EOS ignored) so every request yields exactly the output length asked.

Accuracy goes through the same session: perplexity and next-token top-1 over ``windows`` x
``window`` tokens of the novel, zero-shot sentiment on the 200 labelled sentences (the label
whose word, " positive" or " negative", gets the higher next-token log-probability after a
fixed prompt). Gates: perplexity within ``perplexity_within`` (relative) of the fp32 model's,
zero-shot accuracy at most ``zero_shot_max_drop`` below fp32's; the fp32 figures are computed
once per artifact and cached beside it (``reference-<hash>.json``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULTS = {
    "lengths": [[128, 128], [512, 64]],
    "requests": 3,          # minimum requests per length point
    "min_time_s": 0.0,      # and at least this long per point
    "max_time_s": 60.0,     # stop adding requests after this long per point
    "warmup_requests": 1,
    "accuracy_scenarios": ["single-stream"],  # accuracy is a property of the variant: measured once
    "perplexity": {"windows": 16, "window": 512},
    "zero_shot": {"n": 200},
    "gates": {"perplexity_within": 0.02, "zero_shot_max_drop": 0.03},
    "server": {"qps": 0.5, "requests": 16, "ttft_p99_ms": 2000.0, "tpot_p99_ms": 200.0},
}
ZERO_SHOT_PROMPT = "Review: {text}\nIs this movie review positive or negative? Answer:"
LABEL_WORDS = (" negative", " positive")  # label 0, label 1


def settings_from(payload_gen: dict | None) -> dict:
    g = json.loads(json.dumps(DEFAULTS))
    for k, v in (payload_gen or {}).items():
        if isinstance(v, dict) and isinstance(g.get(k), dict):
            g[k].update(v)
        else:
            g[k] = v
    return g


def check_lengths(lengths, max_context: int | None = None) -> list[list[int]]:
    """The grid of (prompt, output) lengths, or one :class:`BenchError` line saying what is wrong."""
    from harness.errors import BenchError

    if lengths is None:
        lengths = DEFAULTS["lengths"]
    out = []
    for item in lengths:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not all(isinstance(v, int) for v in item):
            raise BenchError(f"generation length {item!r}: expected [prompt_len, output_len] integers")
        p, o = item
        if o < 1:
            raise BenchError(f"output length {o} < 1: a generation request must produce at least one token")
        if p < 1:
            raise BenchError(f"prompt length {p} < 1")
        if max_context and p + o > max_context:
            raise BenchError(f"prompt {p} + output {o} tokens exceed the model's context window of {max_context}")
        out.append([p, o])
    return out


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def prompt_batches(tokens: np.ndarray, start: int, prompt_len: int, batch: int, count: int) -> list[np.ndarray]:
    """``count`` batches of ``batch`` distinct prompts of ``prompt_len`` tokens, from ``start`` on,
    wrapping around the text when it runs out."""
    need = prompt_len * batch
    out = []
    pos = start
    for _ in range(count):
        if pos + need > len(tokens):
            pos = start if start + need <= len(tokens) else 0
        out.append(np.asarray(tokens[pos:pos + need], dtype=np.int64).reshape(batch, prompt_len))
        pos += need
    return out


def run_point(session, tokens, start: int, prompt_len: int, out_len: int, batch: int, g: dict, clock,
              settings_confidence: float = 0.95) -> dict:
    """Warm-up, then back-to-back requests of one (prompt, output) length point."""
    from harness.measure.generation import generate_timed, summarize_requests

    max_reqs = 10_000
    prompts = prompt_batches(tokens, start, prompt_len, batch, 64)
    for i in range(int(g["warmup_requests"])):
        generate_timed(session, prompts[i % len(prompts)], min(out_len, 8), clock)
    reqs = []
    t_begin = time.perf_counter()
    while len(reqs) < max_reqs:
        r = generate_timed(session, prompts[(len(reqs) + 1) % len(prompts)], out_len, clock)
        reqs.append(r)
        elapsed = time.perf_counter() - t_begin
        if (len(reqs) >= int(g["requests"]) and elapsed >= float(g["min_time_s"])) or elapsed >= float(g["max_time_s"]):
            break
    s = summarize_requests(reqs, batch=batch, prompt_len=prompt_len, confidence=settings_confidence)
    s["kv_cache_bytes"] = int(reqs[-1]["kv_cache_bytes"])
    s["first_tokens"] = [int(t) for t in reqs[0]["tokens"][0][:16]]
    return s


def run_server(session, tokens, start: int, prompt_len: int, out_len: int, g: dict) -> dict:
    """Poisson arrivals, one request in service at a time; TTFT from the scheduled arrival."""
    from harness.measure import loadgen as lg
    from harness.measure.generation import generate_timed, request_timing
    from harness.measure.stats import early_stopping_percentile, summarize

    sv = g["server"]
    n = int(sv["requests"])
    prompts = prompt_batches(tokens, start, prompt_len, 1, n)
    per_query: dict[int, dict] = {}

    class _SUT:
        threaded = False

        def issue(self, qid, samples, done):
            r = generate_timed(session, prompts[qid % len(prompts)], out_len)
            per_query[qid] = r
            done(qid, r["start_ns"], r["token_ns"][-1])

    arrivals = lg.poisson_schedule(float(sv["qps"]), n, rng=0)
    log = lg.run_open_loop(_SUT(), arrivals, lambda i: [i])
    ttft, tpot = [], []
    for qid in sorted(per_query):
        r = per_query[qid]
        scheduled_abs = log.t0_ns + int(log.scheduled[qid])  # the log's times are relative to its t0
        t = request_timing(min(scheduled_abs, r["start_ns"]), r["token_ns"])
        ttft.append(t["ttft_ns"])
        if t["tpot_ns"] is not None:
            tpot.append(t["tpot_ns"])
    es_ttft = early_stopping_percentile(ttft, 0.99)
    es_tpot = early_stopping_percentile(tpot, 0.99)
    reasons = []
    for name, es, bound in (("ttft", es_ttft, sv["ttft_p99_ms"]), ("tpot", es_tpot, sv["tpot_p99_ms"])):
        if es["estimate"] is None:
            reasons.append(f"early_stopping: {len(ttft)} requests are too few for a p99 {name} estimate "
                           f"(need {es['min_queries']})")
        elif es["estimate"] > bound * 1e6:
            reasons.append(f"p99 {name} {es['estimate'] / 1e6:.1f} ms over the bound {bound} ms")
    return {"qps": float(sv["qps"]), "requests": len(per_query), "prompt_len": prompt_len, "output_len": out_len,
            "ttft_ns": summarize(ttft), "tpot_ns": summarize(tpot) if tpot else None,
            "p99_ttft_early_stopping": es_ttft, "p99_tpot_early_stopping": es_tpot,
            "bounds_ms": {"ttft_p99": sv["ttft_p99_ms"], "tpot_p99": sv["tpot_p99_ms"]},
            "meets_bounds": not reasons, "reasons": reasons,
            "tokens_per_s": sum(r["tokens"].size for r in per_query.values()) / (log.duration_ns() / 1e9)}


# --------------------------------------------------------------------------- accuracy


def text_scores(session, tokens: np.ndarray, n_windows: int, window: int) -> dict:
    from harness.measure.generation import next_token_scores, perplexity, windows

    w = windows(tokens, window, n_windows)
    nll, correct, count = 0.0, 0, 0
    for row in w:
        s = next_token_scores(session.logits(row[None, :]), row[None, :])
        nll += s["nll_sum"]
        correct += s["correct"]
        count += s["count"]
    return {"perplexity": perplexity(nll, count), "top1": correct / count, "tokens": count,
            "windows": n_windows, "window": window}


def zero_shot(session, tokenizer, sentences, labels, n: int) -> dict:
    from harness.measure.generation import log_softmax

    label_ids = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in LABEL_WORDS]
    correct = 0
    n = min(n, len(sentences))
    for text, label in zip(sentences[:n], labels[:n]):
        ids = tokenizer(ZERO_SHOT_PROMPT.format(text=text), add_special_tokens=False)["input_ids"]
        lp = log_softmax(session.logits(np.asarray([ids], dtype=np.int64))[0, -1])
        pred = int(lp[label_ids[1]] > lp[label_ids[0]])
        correct += int(pred == int(label))
    return {"accuracy": correct / n, "n": n, "prompt": ZERO_SHOT_PROMPT, "label_words": list(LABEL_WORDS)}


def accuracy_of(session, data_dir: Path, hf_dir: Path, g: dict) -> dict:
    from transformers import AutoTokenizer

    tokens = np.load(data_dir / "text.npz")["tokens"]
    sent = json.loads((data_dir / "sentiment.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    pp = g["perplexity"]
    t0 = time.perf_counter()
    text = text_scores(session, tokens, int(pp["windows"]), int(pp["window"]))
    zs = zero_shot(session, tok, sent["sentences"], sent["labels"], int(g["zero_shot"]["n"]))
    return {"text": text, "zero_shot": zs, "seconds": time.perf_counter() - t0}


def reference_path(data_dir: Path, g: dict) -> Path:
    spec = json.dumps({"p": g["perplexity"], "z": g["zero_shot"], "prompt": ZERO_SHOT_PROMPT,
                       "labels": LABEL_WORDS}, sort_keys=True)
    return data_dir / f"reference-{hashlib.sha256(spec.encode()).hexdigest()[:12]}.json"


def _write_atomic(path: Path, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ref-")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def gate(acc: dict, ref: dict, g: dict, variant: str) -> dict:
    """The variant's accuracy against the fp32 reference: perplexity ratio and zero-shot drop."""
    from harness.measure.generation import within_relative

    gates = g["gates"]
    tol = gates["perplexity_within"]
    tol = float(tol.get(variant, tol.get("default", 0.02))) if isinstance(tol, dict) else float(tol)
    drop = float(gates["zero_shot_max_drop"])
    ppl, ref_ppl = acc["text"]["perplexity"], ref["text"]["perplexity"]
    zs, ref_zs = acc["zero_shot"]["accuracy"], ref["zero_shot"]["accuracy"]
    ppl_ok = within_relative(ppl, ref_ppl, tol)
    zs_ok = zs >= ref_zs - drop
    return {"perplexity_ratio": ppl / ref_ppl, "perplexity_within": tol, "perplexity_passed": ppl_ok,
            "zero_shot_delta": zs - ref_zs, "zero_shot_max_drop": drop, "zero_shot_passed": zs_ok,
            "passed": ppl_ok and zs_ok}


def _accuracy_record(acc: dict, variant: str, root: Path, hf_dir: Path, g: dict, reference_session) -> tuple[dict, list]:
    """The case's ``accuracy`` (perplexity headline, top-1, zero-shot, fp32 reference, gates) and
    the gate reasons; the fp32 reference is read from its cache, else computed once through
    ``reference_session()`` (an fp32 session of the same backend) and cached."""
    ref_file = reference_path(root, g)
    if variant == "fp32":
        ref = acc
        if not ref_file.exists():
            _write_atomic(ref_file, {"text": acc["text"], "zero_shot": acc["zero_shot"]})
    elif ref_file.exists():
        ref = json.loads(ref_file.read_text())
    else:
        ref_sess = reference_session()
        ref = accuracy_of(ref_sess, root, hf_dir, g)
        ref_sess.close()
        _write_atomic(ref_file, {"text": ref["text"], "zero_shot": ref["zero_shot"]})
    gates = gate(acc, ref, g, variant)
    reasons = []
    if not gates["perplexity_passed"]:
        reasons.append(f"accuracy_gate_failed: perplexity {acc['text']['perplexity']:.3f} vs fp32 "
                       f"{ref['text']['perplexity']:.3f} (ratio {gates['perplexity_ratio']:.4f}, allowed within "
                       f"{gates['perplexity_within']:.0%})")
    if not gates["zero_shot_passed"]:
        reasons.append(f"accuracy_gate_failed: zero-shot {acc['zero_shot']['accuracy']:.3f} vs fp32 "
                       f"{ref['zero_shot']['accuracy']:.3f} (allowed drop {gates['zero_shot_max_drop']})")
    accuracy = {
        "metric": "perplexity", "value": acc["text"]["perplexity"], "baseline_value": ref["text"]["perplexity"],
        "delta": acc["text"]["perplexity"] - ref["text"]["perplexity"], "passed": gates["passed"],
        "perplexity": acc["text"]["perplexity"], "next_token_top1": acc["text"]["top1"],
        "tokens": acc["text"]["tokens"], "zero_shot_accuracy": acc["zero_shot"]["accuracy"],
        "zero_shot_n": acc["zero_shot"]["n"],
        "reference": {"perplexity": ref["text"]["perplexity"], "next_token_top1": ref["text"]["top1"],
                      "zero_shot_accuracy": ref["zero_shot"]["accuracy"]},
        "gate": gates["perplexity_within"], "gates": gates, "seconds": acc["seconds"],
    }
    return accuracy, reasons


# --------------------------------------------------------------------------- the case


def run_llm_case(payload: dict, backend, artifact) -> dict:
    from backends.base import UnsupportedCase

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched from a model hub at run time
    case = payload["case"]
    scenario = case["scenario"]
    batch = int(case["batch"])
    g = settings_from(payload.get("generation"))
    confidence = float(payload["settings"].get("confidence", 0.95))
    if scenario not in ("single-stream", "offline", "server"):
        return {"status": "unsupported", "reason": f"scenario {scenario} has no generation driver"}
    t_prep = time.perf_counter()
    try:
        session = backend.prepare_generation(artifact, precision=case["precision"], batch=batch,
                                             threads=payload["threads"], runtime=case["runtime"],
                                             options=payload.get("options") or {})
    except UnsupportedCase as exc:
        return {"status": "unsupported", "reason": str(exc)}
    prepare_s = time.perf_counter() - t_prep
    meta = artifact.meta
    root = (artifact.dir / meta["base_dir"]).resolve() if meta.get("base_dir") else artifact.dir
    hf_dir = root / meta.get("hf_dir", "hf")
    tokens = np.load(root / "text.npz")["tokens"]
    pp = g["perplexity"]
    start = int(pp["windows"]) * int(pp["window"])  # prompts come after the perplexity text
    clock = time.perf_counter_ns
    points, failures = [], []
    server = None
    try:
        if scenario == "server":
            p_len, o_len = g["lengths"][0]
            server = run_server(session, tokens, start, int(p_len), int(o_len), g)
        else:
            for p_len, o_len in g["lengths"]:
                try:
                    points.append(run_point(session, tokens, start, int(p_len), int(o_len), batch, g, clock,
                                            confidence))
                except (RuntimeError, MemoryError) as exc:
                    if not _is_oom(exc):
                        raise
                    session.reset()
                    failures.append(f"out of memory at batch {batch}, prompt {p_len}, output {o_len}: "
                                    f"{str(exc).splitlines()[0][:200]}")
        acc = accuracy_of(session, root, hf_dir, g) if scenario in g["accuracy_scenarios"] else None
    except (RuntimeError, MemoryError) as exc:
        if _is_oom(exc):
            session.close()
            return {"status": "failed", "reason": f"out of memory at batch {batch}: {str(exc).splitlines()[0][:200]}"}
        raise
    reasons = list(failures)
    accuracy = None
    if acc is not None:
        def fp32_session():
            return backend.prepare_generation(artifact, precision="fp32", batch=1, threads=payload["threads"],
                                              runtime=case["runtime"], options=payload.get("options") or {})

        accuracy, gate_reasons = _accuracy_record(acc, case["variant"], root, hf_dir, g, fp32_session)
        reasons += gate_reasons
    memory = session.memory() or {}
    info = dict(session.info)
    session.close()
    warnings = []
    if server is not None and not server["meets_bounds"]:
        reasons += server["reasons"]
    primary = points[0] if points else None
    if primary and primary["requests"] < 10:
        warnings.append(f"{primary['requests']} requests per point: TTFT/TPOT p90/p99 over so few are near the max")
    status = "ok" if not reasons else ("failed" if failures and not points else "invalid")
    out = {
        "status": status, "reason": "; ".join(reasons) or None,
        "accuracy": accuracy,
        "validity": {"valid": not reasons, "reasons": reasons, "warnings": warnings},
        "backend_info": info,
        "warmup": {"prepare_s": prepare_s},
        "generation": {"points": points, "server": server, "failures": failures,
                       "memory": memory, "settings": g},
    }
    if server is not None:
        out.update(ttft_ns=server["ttft_ns"], tpot_ns=server["tpot_ns"],
                   tokens_per_s={"aggregate": server["tokens_per_s"]},
                   headline={"metric": "p99_ttft_ns", "value": server["ttft_ns"]["p99"], "unit": "ns"})
        return out
    if primary is None:
        return out
    kv = primary["kv_cache_bytes"]
    out["memory"] = {"kv_cache_bytes": max(p["kv_cache_bytes"] for p in points),
                     "weights_bytes": memory.get("weights_bytes"),
                     **({"device_peak_bytes": memory["device_peak_bytes"]} if "device_peak_bytes" in memory else {})}
    out["energy"] = {"available": False, "reason": "energy is not metered for generation cases yet"}
    out["generation"]["kv_cache"] = {
        "bytes": kv, "tokens": batch * (primary["prompt_len"] + primary["output_len"] - 1),
        "bytes_per_token": kv / (batch * (primary["prompt_len"] + primary["output_len"] - 1))}
    tps = primary["tokens_per_s"]
    out.update(
        ttft_ns=primary["ttft_ns"], tpot_ns=primary["tpot_ns"], itl_ns=primary["itl_ns"],
        tokens_per_s=tps, latency_ns=primary["e2e_ns"],
        samples_ns=None,
        throughput={"samples_per_s": batch * primary["requests"] / (primary["window_ns"] / 1e9),
                    "queries_per_s": primary["requests"] / (primary["window_ns"] / 1e9),
                    "tokens_per_s": tps["aggregate"]},
        headline=({"metric": "tpot_p50_ns", "value": primary["tpot_ns"]["p50"], "unit": "ns"}
                  if scenario == "single-stream" and primary["tpot_ns"] else
                  {"metric": "output_tokens_per_s", "value": tps["aggregate"], "unit": "1/s"}),
        iterations=sum(p["requests"] for p in points),
    )
    out.pop("samples_ns")
    return out
