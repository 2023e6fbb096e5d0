"""Figures for the measurement core (issue 3), printed, not asserted.

    python benchmarks/bench_overhead.py            # all three
    python benchmarks/bench_overhead.py --quick    # fewer repeats

1. Harness overhead per timed iteration: ``harness.measure.timing.measure`` driving a null step,
   against a bare ``perf_counter_ns`` loop driving the same null step, same process. The
   overhead is (loop wall time per iteration) minus the bare loop's; target <= 1 µs.
2. Fidelity: on the same ONNX model (mlp-digits ~10 µs, cnn-digits ~20 µs, resnet18 ~tens of
   ms; batch 1, one thread) bench's single-stream median (the very session and step the worker
   uses, in this process) against a bare ``InferenceSession.run`` loop making the same call;
   interleaved A/B/B/A to cancel drift; target 1.00 ± 0.02. On the 10 µs MLP bench's step
   carries ~0.3 µs more Python dispatch than the bare call (rotating through the input pool,
   the bound call), i.e. ~3 %; on real models it vanishes.
3. Run-to-run stability: CV of the single-stream median over 5 invocations of
   ``bench run`` (each its own process tree) on the same case.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def null():
    return None


def bare_loop(n: int) -> float:
    pc = time.perf_counter_ns
    samples = []
    append = samples.append
    f = null
    t_start = pc()
    for _ in range(n):
        t0 = pc()
        f()
        t1 = pc()
        append(t1 - t0)
    return (pc() - t_start) / n


def harness_loop(n: int) -> float:
    from harness.measure.timing import MeasureSettings, measure

    s = MeasureSettings(min_time_s=0.0, max_time_s=3600, min_iterations=n, max_iterations=n, target_ci=1e-9)
    t_start = time.perf_counter_ns()
    res = measure(null, s)
    total = time.perf_counter_ns() - t_start
    return total / res.iterations


def overhead(repeats: int, n: int = 200_000) -> dict:
    bare, harn = [], []
    for _ in range(repeats):
        bare.append(bare_loop(n))
        harn.append(harness_loop(n))
    b, h = statistics.median(bare), statistics.median(harn)
    return {"bare_ns_per_iter": b, "harness_ns_per_iter": h, "overhead_ns_per_iter": h - b, "repeats": repeats}


def fidelity(repeats: int, io_binding: bool, model: str = "mlp-digits") -> dict:
    """bench's median vs a bare loop doing the same onnxruntime call in this process.

    With ``io_binding`` bench binds preallocated outputs (its default on CPU) and the bare
    loop calls ``run_with_iobinding`` likewise; without it both call ``InferenceSession.run``.
    """
    import itertools

    import numpy as np
    import onnxruntime as ort

    from backends.cpu import CPUBackend
    from harness.run.case import input_pool
    from harness.measure.timing import MeasureSettings, measure, warm_up
    from suites.build import artifact_for

    art, _ = artifact_for(model)
    threads = 1
    pool = input_pool(art.eval_data()["x"], art.inputs, 1)
    session = CPUBackend().prepare(art, precision="fp32", batch=1, threads=threads, runtime="onnxruntime",
                                   options={"io_binding": int(io_binding)})
    assert session.info["io_binding"] is io_binding
    it = itertools.cycle(pool)
    nxt, run = it.__next__, session.run

    def step():
        run(nxt())

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    bare_sess = ort.InferenceSession(str(art.onnx_path), so, providers=["CPUExecutionProvider"])
    name = art.inputs[0]["name"]
    out_name = bare_sess.get_outputs()[0].name
    n_out = int(np.prod(bare_sess.get_outputs()[0].shape[1:]))
    out_buf = np.empty((1, n_out), dtype=np.float32)
    binding = bare_sess.io_binding()
    binding.bind_output(out_name, "cpu", 0, np.float32, [1, n_out], out_buf.ctypes.data)

    def bare_call(feed):
        if io_binding:
            binding.bind_cpu_input(name, feed[name])
            bare_sess.run_with_iobinding(binding)
        else:
            bare_sess.run(None, feed)

    settings = MeasureSettings(min_time_s=1.0, max_time_s=3.0, target_ci=0.005, min_iterations=30)
    warm_up(step, settings)
    for feed in pool * 2:
        bare_call(feed)

    def bare_block(n):
        pc = time.perf_counter_ns
        samples = []
        for i in range(n):
            feed = pool[i % len(pool)]
            t0 = pc()
            bare_call(feed)
            samples.append(pc() - t0)
        return float(np.median(samples))

    bench_medians, bare_medians = [], []
    for r in range(repeats):  # A B B A ... so slow drifts of the machine cancel
        if r % 2 == 0:
            res = measure(step, settings)
            bench_medians.append(float(np.median(res.samples_ns)))
            bare_medians.append(bare_block(len(res.samples_ns)))
        else:
            n = len(res.samples_ns)
            bare_medians.append(bare_block(n))
            res = measure(step, settings)
            bench_medians.append(float(np.median(res.samples_ns)))
    ratios = [a / b for a, b in zip(bench_medians, bare_medians)]
    return {"bench_median_ns": statistics.median(bench_medians), "bare_median_ns": statistics.median(bare_medians),
            "ratio": statistics.median(ratios), "ratios": ratios}


def stability(invocations: int = 5) -> dict:
    medians = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(invocations):
            subprocess.run([sys.executable, "-m", "harness", "run", "--suite", "smoke", "--backend", "cpu",
                            "--scenario", "single-stream", "--out", out, "--threads", "1", "-q"],
                           check=False, capture_output=True, cwd=ROOT)
        for f in sorted(Path(out).glob("*.json")):
            rec = json.loads(f.read_text())
            medians.append(rec["cases"][0]["latency_ns"]["p50"])
    mean = statistics.mean(medians)
    return {"medians_ns": medians, "cv_of_median": statistics.stdev(medians) / mean if len(medians) > 1 else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    r = 3 if args.quick else 7
    o = overhead(r)
    print(f"harness overhead per timed iteration: {o['overhead_ns_per_iter']:.0f} ns "
          f"(bare loop {o['bare_ns_per_iter']:.0f} ns/iter, harness {o['harness_ns_per_iter']:.0f} ns/iter; "
          f"median of {o['repeats']}; target <= 1000 ns)")
    for model, io_binding, bare in (("mlp-digits", False, "InferenceSession.run"),
                                    ("mlp-digits", True, "run_with_iobinding"),
                                    ("cnn-digits", False, "InferenceSession.run"),
                                    ("resnet18", False, "InferenceSession.run")):
        f = fidelity(3 if args.quick else 5, io_binding, model)
        print(f"fidelity {model} (io_binding={int(io_binding)}{'' if io_binding else ', the default'}): bench median {f['bench_median_ns'] / 1e3:.2f} µs vs bare {bare} "
              f"{f['bare_median_ns'] / 1e3:.2f} µs -> ratio {f['ratio']:.3f} (runs: "
              + ", ".join(f"{x:.3f}" for x in f["ratios"]) + "; target 1.00 ± 0.02)")
    s = stability(3 if args.quick else 5)
    print(f"run-to-run: single-stream median over {len(s['medians_ns'])} invocations: "
          + ", ".join(f"{m / 1e3:.2f} µs" for m in s["medians_ns"])
          + (f" -> CV {s['cv_of_median'] * 100:.2f} %" if s["cv_of_median"] is not None else ""))


if __name__ == "__main__":
    main()
