"""How fast are history queries, step detection and compare over 1,000 run files?

    python benchmarks/bench_history.py                 # 1,000 runs x 5 cases x 200 samples, temp dir
    python benchmarks/bench_history.py --runs 3000 --dir /tmp/bench-history --keep

Writes synthetic, schema-shaped run records of one machine (tests/synth.py; one case gets
a 20 % step at two thirds of the series) into a directory, then times, in this process
(best of ``--repeat``, plus the first, cold call):

* ``index_runs``  - one row per run (what ``latest`` / ``previous`` need), DuckDB and pandas
* ``load_history`` - one row per run x case, DuckDB and pandas
* ``analyze``     - the L1 Potts step fit of every case series (p50)
* ``resolve``     - ``latest`` + ``previous`` of the machine, and ``compare_records`` of the two

and, as a user sees it, the wall time of ``bench history`` and ``bench compare previous
latest`` as fresh processes (imports included). Prints a table; asserts nothing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(d: Path, runs: int, cases: int, samples: int) -> tuple[str, float]:
    import numpy as np

    from harness.store.records import dumps, write_atomic
    from tests.synth import environment, make_case, make_record

    d.mkdir(parents=True, exist_ok=True)
    env = environment()
    existing = len(list(d.glob("*.json")))
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    for i in range(existing, runs):
        cs = []
        for c in range(cases):
            f = math.exp(rng.normal(0, 0.01)) * (1.2 if c == 0 and i >= 2 * runs // 3 else 1.0)
            cs.append(make_case(f"model{c}", seed=i * 100 + c, median_ns=100_000 * (c + 1) * f, n=samples))
        rec = make_record(cs, env=env, started=t0 + dt.timedelta(hours=12 * i), git_sha=f"{i:08x}")
        write_atomic(d / f"{rec['run_id']}.json", dumps(rec) + "\n")
    return env["machine_id"], time.perf_counter() - t


def timed(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times[0], min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--cases", type=int, default=5)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="keep/reuse the records here (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="do not delete the temp dir")
    args = ap.parse_args()

    d = args.dir or Path(tempfile.mkdtemp(prefix="bench-history-"))
    machine, gen_s = generate(d, args.runs, args.cases, args.samples)
    files = sorted(d.glob("*.json"))
    size_mb = sum(f.stat().st_size for f in files) / 1e6

    from harness.analyze import compare as cmp
    from harness.analyze import history as hist

    rows = []
    engines = ["pandas"] + (["duckdb"] if hist.engine_name("auto") == "duckdb" else [])
    for eng in engines:
        first, best, idx = timed(lambda: hist.index_runs([d], engine=eng), args.repeat)
        rows.append((f"index_runs ({eng})", first, best, f"{len(idx)} runs"))
        first, best, df = timed(lambda: hist.load_history([d], engine=eng), args.repeat)
        rows.append((f"load_history ({eng})", first, best, f"{len(df)} rows"))
    first, best, hs = timed(lambda: hist.analyze(df), args.repeat)
    found = [h for h in hs if h.status != "stable"]
    rows.append(("analyze: step fit, all cases", first, best,
                 f"{len(hs)} series of {len(hs[0].values)}; {len(found)} with a step "
                 f"({', '.join(f'{h.case_id.split(chr(47))[0]} at run {h.fit.last_change.index}' for h in found)})"))

    def resolve():
        finder = cmp.RunFinder(d, machine=machine)  # one run index for both
        b, bp = finder.find("previous")
        n, np_ = finder.find("latest")
        return cmp.compare_records(b, n, base_path=bp, new_path=np_)

    first, best, res = timed(resolve, args.repeat)
    rows.append(("resolve previous+latest, compare", first, best, f"exit {res.exit_code}: {res.headline()}"))

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for label, argv in (("bench history (new process)", ["history", "--results", str(d), "--machine", machine,
                                                         "--format", "json"]),
                        ("bench compare previous latest (new process)",
                         ["compare", "previous", "latest", "--results", str(d), "--machine", machine, "--format",
                          "json"])):
        def call():
            return subprocess.run([sys.executable, "-m", "harness", *argv], capture_output=True, env=env, cwd=ROOT)

        first, best, proc = timed(call, args.repeat)
        rows.append((label, first, best, f"exit {proc.returncode}"))

    print(f"bench history benchmark: {len(files)} run files ({size_mb:.1f} MB), {args.cases} cases x "
          f"{args.samples} samples per run; generated in {gen_s:.1f} s")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"python {platform.python_version()}")
    w = max(len(r[0]) for r in rows)
    print(f"{'step':<{w}}  {'first s':>8}  {'best s':>8}  result")
    for name, first, best, note in rows:
        print(f"{name:<{w}}  {first:8.3f}  {best:8.3f}  {note}")
    if args.dir is None and not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    else:
        print(f"records kept in {d}")


if __name__ == "__main__":
    main()
