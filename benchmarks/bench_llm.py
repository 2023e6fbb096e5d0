"""bench's generation figures against a hand-written transformers greedy loop (issue 14), printed.

    python benchmarks/bench_llm.py                       # fp32, prompt 64, 32 new tokens, 1 thread
    python benchmarks/bench_llm.py --precision bf16 --prompt 128 --new 64 --threads 2 --rounds 4

Same model object (the session's own module), precision, threads and prompts, same process. Each round
runs A (bench: the ``TorchGenerationSession`` the worker uses, driven by
``harness.measure.generation.generate_timed`` with the harness clock) and B (a plain loop: the
``transformers`` model called with a ``DynamicCache``, ``argmax``, ``perf_counter_ns`` read by
hand after each token's ``.item()``), in A/B/B/A order to cancel drift on a shared machine.
Printed: decode tokens/s (= 1 / TPOT), TTFT and TPOT medians of each, and bench/loop ratios.
Target: every ratio within 1.00 +- 0.05. The two also have to produce the same tokens.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def hand_loop(model, ids, n_new):
    """The reference: what a person writes to time greedy decoding with a KV cache."""
    import torch
    from transformers import DynamicCache

    x = torch.from_numpy(ids)
    cache = DynamicCache(config=model.config)
    stamps, toks = [], []
    with torch.inference_mode():
        t0 = time.perf_counter_ns()
        out = model(input_ids=x, cache=cache, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1)
        toks.append(nxt.item())
        stamps.append(time.perf_counter_ns())
        for _ in range(n_new - 1):
            out = model(input_ids=nxt[:, None], cache=cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1].argmax(-1)
            toks.append(nxt.item())
            stamps.append(time.perf_counter_ns())
    return t0, stamps, toks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="A/B/B/A rounds (each runs both twice)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from backends.llm_torch import TorchGenerationSession, checkpoint_dir
    from harness.measure.generation import generate_timed, request_timing
    from suites.build import artifact_for

    art, _ = artifact_for("smollm2-135m")
    hf = checkpoint_dir(art)
    tokens = np.load(art.dir / "text.npz")["tokens"]
    bench_sess = TorchGenerationSession(hf, precision=args.precision, threads=args.threads)
    torch.set_num_threads(args.threads)
    # the hand loop drives the very module the session holds: one copy of the weights in memory, so
    # a difference cannot come from where two copies happen to lie (between-copy spread on this VM
    # reached 15 % on prefill when each side loaded its own)
    model = bench_sess._model

    a_ttft, a_tpot, b_ttft, b_tpot = [], [], [], []
    prompts = [np.asarray(tokens[20_000 + i * args.prompt:20_000 + (i + 1) * args.prompt], dtype=np.int64)[None]
               for i in range(2 * args.rounds + 2)]
    generate_timed(bench_sess, prompts[-1], 4)  # warm both
    hand_loop(model, prompts[-1], 4)
    k = 0
    same = True
    for _ in range(args.rounds):
        for j, which in enumerate("ABBA"):
            ids = prompts[k + j // 2]  # A and B see the same prompt: AB on one, BA on the next
            if which == "A":
                r = generate_timed(bench_sess, ids, args.new)
                t = request_timing(r["start_ns"], r["token_ns"])
                a_ttft.append(t["ttft_ns"])
                a_tpot.append(t["tpot_ns"])
                a_toks = r["tokens"][0].tolist()
            else:
                t0, stamps, b_toks = hand_loop(model, ids, args.new)
                b_ttft.append(stamps[0] - t0)
                b_tpot.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
        k += 2
        _, _, ref = hand_loop(model, prompts[k - 1], args.new)
        r = generate_timed(bench_sess, prompts[k - 1], args.new)
        same = same and r["tokens"][0].tolist() == ref
    med = statistics.median
    a_dec, b_dec = 1e9 / med(a_tpot), 1e9 / med(b_tpot)
    print(f"smollm2-135m {args.precision}, prompt {args.prompt}, {args.new} new tokens, {args.threads} thread(s), "
          f"{len(a_tpot)} requests each (A/B/B/A), CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'':18}{'bench':>12}{'hand loop':>12}{'ratio':>8}")
    print(f"{'decode tokens/s':18}{a_dec:12.2f}{b_dec:12.2f}{a_dec / b_dec:8.3f}")
    print(f"{'TTFT p50 (ms)':18}{med(a_ttft) / 1e6:12.2f}{med(b_ttft) / 1e6:12.2f}{med(a_ttft) / med(b_ttft):8.3f}")
    print(f"{'TPOT p50 (ms)':18}{med(a_tpot) / 1e6:12.2f}{med(b_tpot) / 1e6:12.2f}{med(a_tpot) / med(b_tpot):8.3f}")
    print(f"same greedy tokens: {same}; target: ratios within 1.00 +- 0.05")


if __name__ == "__main__":
    main()
