"""Training step time of the Fashion-MNIST CNN: NCHW vs channels-last, interleaved (issue 13, cold builds).

    python benchmarks/bench_train_layout.py                    # batch 128, 2 threads, 4 rounds
    python benchmarks/bench_train_layout.py --batch 256 --rounds 6

The cold quant run trains ``fmnist-resnet`` (suites/zoo/fashion.py: 2 epochs of 469 steps at batch 128,
AdamW, two torch threads). Each round times ``--steps`` full training steps (forward, loss, backward,
optimizer) of a freshly seeded net in each memory layout, in ABBA order across rounds (the VM's speed
drifts), and keeps the median step after ``--skip`` warm-up steps. Printed: per layout the median over
rounds, per round the NCHW / channels-last ratio, and what an epoch of 60,000 images costs in each.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def step_time(batch: int, channels_last: bool, steps: int, skip: int, threads: int) -> float:
    """Median seconds of one training step (after ``skip`` warm-up steps)."""
    import torch
    import torch.nn.functional as F

    from suites.zoo.fashion import make_resnet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    module = make_resnet()
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    module.train()
    times = []
    for _ in range(skip + steps):
        t0 = time.perf_counter()
        loss = F.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[skip:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the build uses 2)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--skip", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args(argv)
    got = {False: [], True: []}
    ratios = []
    for r in range(a.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        t = {cl: step_time(a.batch, cl, a.steps, a.skip, a.threads) for cl in order}
        for cl in order:
            got[cl].append(t[cl])
        ratios.append(t[False] / t[True])
        print(f"round {r + 1}: NCHW {t[False] * 1e3:.1f} ms, channels-last {t[True] * 1e3:.1f} ms a step, "
              f"ratio {ratios[-1]:.2f}", flush=True)
    for cl, name in ((False, "NCHW"), (True, "channels-last")):
        med = statistics.median(got[cl])
        print(f"{name:14s} median step {med * 1e3:6.1f} ms at batch {a.batch}: an epoch of 60,000 images "
              f"{med * 60000 / a.batch:5.1f} s")
    print(f"NCHW / channels-last step time: median ratio {statistics.median(ratios):.2f} "
          f"(rounds {min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
