"""Noise across invocations: bench --profile nightly against pyperf, pytest-benchmark and a bare loop (issue 15).

    python benchmarks/bench_repeats.py                  # both models, 5 invocations per tool
    python benchmarks/bench_repeats.py --invocations 3 --models small
    python benchmarks/bench_repeats.py --json out.json  # also the raw per-invocation figures

Two ONNX MLPs with random weights, built here with onnx.helper (nothing downloaded), one
thread, batch 1, onnxruntime CPU:

* ``large``: 784-2048-2048-1000 (about 0.5 ms per call on one thread);
* ``small``: 16-64-32-32-5 (a few µs per call).

Each invocation is a fresh process tree of one tool measuring the same model:

* **bench**: ``bench run --model M.onnx --scenario single-stream --threads 1 --profile nightly``;
  its figure is the record's p50 (with repeats: the mean of the 5 processes' medians);
* **pyperf** (default settings: 20 worker processes x 3 values after a warm-up, loops
  calibrated to 100 ms a value): ``Runner.bench_func`` of the ``run`` call; its figure is
  the median of all values;
* **pytest-benchmark** (default settings): ``benchmark(session.run, ...)`` in a generated test
  file; its figure is ``stats.median``;
* **bare loop**: a Python process that creates the session, runs 200 warm-up calls, then
  times single calls with ``perf_counter_ns`` for 2 s; its figure is the median.

The tools are **interleaved** (invocation i of every tool before invocation i + 1 of any), so a
slow drift of the machine hits them alike. Printed per model and tool: the CV (std / mean,
ddof = 1) of the per-invocation figures, their mean, and the wall time per invocation
(min-max). Measured figures are printed, not asserted (targets: bench CV <= 1 % on the large
model, lowest of the four on both, wall <= 1/3 of pyperf's).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

MODELS = {"large": [784, 2048, 2048, 1000], "small": [16, 64, 32, 32, 5]}


def build_model(sizes: list[int], path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        x = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sizes[0]])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


SESSION = """
import numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
sess = ort.InferenceSession({model!r}, so, providers=["CPUExecutionProvider"])
feed = {{"x": np.random.default_rng(1).standard_normal((1, {width})).astype(np.float32)}}
run = sess.run
"""


def write_tools(work: Path, model: Path, width: int) -> dict[str, Path]:
    sess = SESSION.format(model=str(model), width=width)
    pyperf_py = work / "pyperf_target.py"
    pyperf_py.write_text("import pyperf\n" + sess + textwrap.dedent("""
        runner = pyperf.Runner()
        runner.bench_func("run", run, None, feed)
    """))
    test_py = work / "test_pb_target.py"
    test_py.write_text(sess + textwrap.dedent("""
        def test_run(benchmark):
            benchmark(run, None, feed)
    """))
    bare_py = work / "bare_target.py"
    bare_py.write_text("import json, sys, time\n" + sess + textwrap.dedent("""
        for _ in range(200):
            run(None, feed)
        pc = time.perf_counter_ns
        out = []
        end = pc() + 2_000_000_000
        while True:
            t0 = pc(); run(None, feed); t1 = pc()
            out.append(t1 - t0)
            if t1 > end:
                break
        out.sort()
        print(json.dumps({"median_ns": out[len(out) // 2], "n": len(out)}))
    """))
    return {"pyperf": pyperf_py, "pytest": test_py, "bare": bare_py}


def invoke(tool: str, model: Path, files: dict[str, Path], work: Path, i: int) -> float:
    """Run one invocation; return its figure (ns per call)."""
    out = work / f"{model.stem}-{tool}-{i}"  # pyperf refuses to overwrite; bench reads the one record there
    if tool == "bench":
        proc = subprocess.run([sys.executable, "-m", "harness", "run", "--model", str(model), "--scenario", "single-stream",
                               "--threads", "1", "--profile", "nightly", "-q", "--out", str(out)],
                              env=ENV, capture_output=True, text=True, cwd=ROOT)
        recs = list(out.glob("*.json"))
        if not recs:
            raise RuntimeError(f"bench failed: {proc.stderr[-500:]}")
        case = json.loads(recs[0].read_text())["cases"][0]
        return float(case["latency_ns"]["p50"])
    if tool == "pyperf":
        res = out.with_suffix(".json")
        proc = subprocess.run([sys.executable, str(files["pyperf"]), "--quiet", "-o", str(res)], env=ENV,
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"pyperf failed: {(proc.stdout + proc.stderr)[-500:]}")
        import pyperf

        return statistics.median(pyperf.Benchmark.load(str(res)).get_values()) * 1e9
    if tool == "pytest":
        res = out.with_suffix(".json")
        proc = subprocess.run([sys.executable, "-m", "pytest", str(files["pytest"]), "-q", "-p", "no:cacheprovider",
                               f"--benchmark-json={res}", "-o", "addopts="], env=ENV, capture_output=True, text=True,
                              cwd=work)
        if proc.returncode:
            raise RuntimeError(f"pytest-benchmark failed: {proc.stdout[-800:]}")
        return json.loads(res.read_text())["benchmarks"][0]["stats"]["median"] * 1e9
    proc = subprocess.run([sys.executable, str(files["bare"])], env=ENV, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"bare loop failed: {proc.stderr[-500:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["median_ns"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--invocations", type=int, default=5)
    ap.add_argument("--models", default="large,small")
    ap.add_argument("--tools", default="bench,pyperf,pytest,bare")
    ap.add_argument("--json", default=None, help="write the raw figures here")
    args = ap.parse_args(argv)
    tools = args.tools.split(",")
    raw: dict = {}
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-repeats-") as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            model = work / f"{name}.onnx"
            build_model(MODELS[name], model)
            files = write_tools(work, model, MODELS[name][0])
            figs = {t: [] for t in tools}
            walls = {t: [] for t in tools}
            for i in range(args.invocations):
                for t in tools:
                    t0 = time.perf_counter()
                    figs[t].append(invoke(t, model, files, work, i))
                    walls[t].append(time.perf_counter() - t0)
                    print(f"  {name} #{i + 1} {t:7s} {figs[t][-1] / 1e3:9.2f} µs  {walls[t][-1]:6.1f} s", flush=True)
            raw[name] = {"figures_ns": figs, "wall_s": walls}
            print(f"\n{name} model ({'-'.join(map(str, MODELS[name]))} MLP, 1 thread), {args.invocations} "
                  "interleaved invocations per tool")
            print(f"{'tool':18s} {'CV of medians':>14s} {'mean median':>12s} {'wall / invocation':>20s}")
            label = {"bench": "bench --profile nightly", "pyperf": "pyperf (default)",
                     "pytest": "pytest-benchmark", "bare": "bare loop"}
            for t in tools:
                v = figs[t]
                cv = statistics.stdev(v) / statistics.mean(v) if len(v) > 1 else float("nan")
                print(f"{label[t]:24s} {100 * cv:7.2f} %  {statistics.mean(v) / 1e3:9.2f} µs   "
                      f"{min(walls[t]):5.1f}-{max(walls[t]):5.1f} s")
            if "bench" in tools and "pyperf" in tools:
                print(f"bench wall / pyperf wall: {statistics.mean(walls['bench']) / statistics.mean(walls['pyperf']):.2f}")
            print()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
