"""bench's CUDA p50 next to a hand-written CUDA-event loop: same model, same input, same process.

    python benchmarks/bench_cuda_vs_events.py compare --model mlp-digits --batch 1 [--device 0] [--json F]
    python benchmarks/bench_cuda_vs_events.py table OUT_DIR     # the gpu_check.sh summary table

``compare`` (needs a CUDA GPU and a CUDA build of torch):
  A. bench: the cuda backend's torch session (``CUDABackend().prepare``), driven by the very step
     the worker uses (``run``; no synchronize: the blocking copy completes the call) inside
     ``harness.measure.timing.measure``: its p50 is the case's ``latency_ns`` p50 (end to end, host);
     the session's CUDA-event total p50 is bench's device figure.
  B. by hand: the artifact's torch module on ``cuda:N`` in eval/inference mode, two events made
     once, per call ``e0.record(); y = model(x.to(dev)); out = y.cpu(); e1.record()`` with
     ``perf_counter_ns`` around the three middle statements; events read after the loop.
  Interleaved A B B A (repeats) so drifts cancel; printed: both p50s and the ratios
  bench/hand for host end to end and for device time (1.00 = bench adds nothing).
``table``: reads ``OUT_DIR/steps.tsv`` (step, exit status, seconds: written by gpu_check.sh),
  the run records in OUT_DIR and ``OUT_DIR/events.json``; prints one short table.
Exit status: 0; 2 with one line for bad arguments or no GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class UsageError(Exception):
    pass


# ----------------------------------------------------------------------------- arguments

def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one line, exit 2 (argparse prints usage + message otherwise)
            raise UsageError(message)

    ap = Parser(prog="bench_cuda_vs_events.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command")
    c = sub.add_parser("compare")
    c.add_argument("--model", default="mlp-digits")
    c.add_argument("--batch", type=int, default=1)
    c.add_argument("--device", type=int, default=0)
    c.add_argument("--repeats", type=int, default=4)
    c.add_argument("--iterations", type=int, default=2000, help="timed calls per block")
    c.add_argument("--json", dest="json_path", default=None)
    t = sub.add_parser("table")
    t.add_argument("out_dir")
    args = ap.parse_args(list(argv))
    if args.command is None:
        raise UsageError("give a command: compare or table")
    if args.command == "compare":
        for name in ("batch", "repeats", "iterations"):
            if getattr(args, name) < 1:
                raise UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")
        if args.device < 0:
            raise UsageError(f"--device must be >= 0, got {args.device}")
    elif not Path(args.out_dir).is_dir():
        raise UsageError(f"{args.out_dir}: not a directory")
    return args


# ----------------------------------------------------------------------------- the comparison

def p50(values: Sequence[float]) -> float | None:
    """Median (the 50th percentile), or None for no values."""
    return float(statistics.median(values)) if values else None


def interleave(bench_block: Callable[[int], dict], hand_block: Callable[[int], dict], repeats: int,
               n: int) -> dict:
    """Run the two blocks A B B A ... ``repeats`` times each; each block returns
    ``{"host_ns": [...], "device_ns": [...]}``. Returns both sides' p50s (median over the blocks'
    p50s) and the ratios bench/hand: r_host = p50(bench host) / p50(hand host), r_device likewise."""
    sides: dict[str, dict[str, list]] = {"bench": {"host": [], "device": []}, "hand": {"host": [], "device": []}}

    def add(side, res):
        sides[side]["host"].append(p50(res["host_ns"]))
        d = p50(res.get("device_ns") or [])
        if d is not None:
            sides[side]["device"].append(d)

    for r in range(repeats):
        order = (("bench", bench_block), ("hand", hand_block))
        for side, block in (order if r % 2 == 0 else order[::-1]):
            add(side, block(n))
    out = {}
    for side in sides:
        out[f"{side}_host_p50_ns"] = p50(sides[side]["host"])
        out[f"{side}_device_p50_ns"] = p50(sides[side]["device"])
    for k in ("host", "device"):
        a, b = out[f"bench_{k}_p50_ns"], out[f"hand_{k}_p50_ns"]
        out[f"ratio_{k}"] = a / b if a is not None and b else None
    out["repeats"], out["calls_per_block"] = repeats, n
    return out


def cuda_blocks(model: str, batch: int, device: int):  # pragma: no cover - needs a GPU
    """The two blocks on a real GPU (bench's session and the hand-written loop)."""
    import itertools

    import torch

    from backends.cuda import CUDABackend
    from harness.run.case import input_pool
    from harness.measure.timing import MeasureSettings, measure, warm_up
    from suites.build import artifact_for

    art, _ = artifact_for(model)
    pool = input_pool(art.eval_data()["x"], art.inputs, batch)
    backend = CUDABackend()
    backend.check_options({"device": device})
    session = backend.prepare(art, precision="fp32", batch=batch, threads=1, runtime="torch",
                              options={"device": device})
    nxt = itertools.cycle(pool).__next__
    run = session.run

    def step():
        run(nxt())

    import dataclasses

    settings = MeasureSettings(min_time_s=0.0, max_time_s=60.0, min_iterations=10, max_iterations=10, target_ci=1e9)
    warm_up(step, MeasureSettings(warmup_min_iterations=200, warmup_min_time_s=0.5, warmup_max_time_s=5.0))

    def bench_block(n):
        session._window.mark_start()  # what the energy meter does for a case: this block's event figures only
        res = measure(step, dataclasses.replace(settings, min_iterations=n, max_iterations=n))
        session._window.mark_stop()
        items = session._window.items
        return {"host_ns": list(res.samples_ns), "device_ns": [i["total"] for i in items]}

    dev = torch.device("cuda", device)
    torch.cuda.set_device(device)
    mod = art.torch_module().eval().to(dev)
    names = [i["name"] for i in art.inputs]
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    hand_pool = [[torch.from_numpy(feed[nm]) for nm in names] for feed in pool]

    def hand_block(n):
        host, device_ns = [], []
        pc = time.perf_counter_ns
        with torch.inference_mode():
            for i in range(n):
                xs = hand_pool[i % len(hand_pool)]
                e0.record()
                t0 = pc()
                y = mod(*[x.to(dev) for x in xs])
                out = [o.cpu() for o in (y if isinstance(y, (tuple, list)) else (y,))]  # blocking: complete
                t1 = pc()
                e1.record()
                e1.synchronize()
                device_ns.append(e0.elapsed_time(e1) * 1e6)
                host.append(t1 - t0)
        del out
        return {"host_ns": host, "device_ns": device_ns}

    for _ in range(200):
        hand_block(1)
    return bench_block, hand_block, session


# ----------------------------------------------------------------------------- the table

def _fmt_ns(v) -> str:
    if v is None:
        return "-"
    return f"{v / 1e3:.1f} us" if v < 1e6 else f"{v / 1e6:.2f} ms"


def read_steps(out_dir: Path) -> list[dict]:
    rows = []
    f = out_dir / "steps.tsv"
    if f.exists():
        for line in f.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                rows.append({"step": parts[0], "rc": int(parts[1]), "seconds": float(parts[2])})
    return rows


def read_runs(out_dir: Path) -> list[dict]:
    """Per run record: runtime, case counts by status, and the lowest single-stream p50."""
    out = []
    for f in sorted(out_dir.glob("*.json")):
        try:
            rec = json.loads(f.read_text())
        except ValueError:
            continue
        if not isinstance(rec, dict) or "cases" not in rec:
            continue
        counts: dict[str, int] = {}
        best = None
        for c in rec["cases"]:
            counts[c.get("status", "?")] = counts.get(c.get("status", "?"), 0) + 1
            lat = (c.get("latency_ns") or {}).get("p50")
            if c.get("status") == "ok" and lat is not None and (best is None or lat < best[1]):
                best = (f"{c.get('model')}/{c.get('variant')} b{c.get('batch')}", lat)
        out.append({"runtime": (rec.get("backend") or {}).get("runtime"),
                    "device": ((rec.get("backend") or {}).get("device") or {}).get("name"),
                    "counts": counts, "fastest": best})
    return out


def format_table(steps: list[dict], runs: list[dict], events: dict | None) -> str:
    """A short fixed-width table: one line per step, one per run record, and the ratio line."""
    lines = [f"{'step':<34} {'result':<8} {'time':>8}"]
    for s in steps:
        lines.append(f"{s['step']:<34} {'ok' if s['rc'] == 0 else 'FAIL ' + str(s['rc']):<8} {s['seconds']:>7.0f}s")
    for r in runs:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items()))
        fast = f"; fastest {r['fastest'][0]} p50 {_fmt_ns(r['fastest'][1])}" if r["fastest"] else ""
        lines.append(f"quant on cuda/{r['runtime']} ({r['device']}): {counts}{fast}")
    if events:
        rh, rd = events.get("ratio_host"), events.get("ratio_device")
        lines.append(f"{events.get('model')} b{events.get('batch')}: bench p50 {_fmt_ns(events.get('bench_host_p50_ns'))}"
                     f" vs hand-written loop {_fmt_ns(events.get('hand_host_p50_ns'))}: ratio "
                     f"{'-' if rh is None else f'{rh:.3f}'} (host, end to end); device "
                     f"{_fmt_ns(events.get('bench_device_p50_ns'))} vs {_fmt_ns(events.get('hand_device_p50_ns'))}: "
                     f"ratio {'-' if rd is None else f'{rd:.3f}'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main

def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"bench_cuda_vs_events.py: {exc}", file=sys.stderr)
        return 2
    if args.command == "table":
        out = Path(args.out_dir)
        ev = out / "events.json"
        print(format_table(read_steps(out), read_runs(out), json.loads(ev.read_text()) if ev.exists() else None))
        return 0
    from backends.cuda import CUDABackend

    av = CUDABackend().runtime_availability("torch")
    if not av.ok:
        print(f"bench_cuda_vs_events.py: no CUDA GPU for torch here: {av.reason}", file=sys.stderr)
        return 2
    bench_block, hand_block, session = cuda_blocks(args.model, args.batch, args.device)
    res = interleave(bench_block, hand_block, args.repeats, args.iterations)
    res.update(model=args.model, batch=args.batch, device=args.device,
               timing_overhead=session.info.get("timing_overhead"), device_name=session.info.get("device_properties",
                                                                                                  {}).get("name"))
    session.close()
    print(format_table([], [], res))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
