"""A suite's cold builds: one at a time vs ``bench run``'s parallel build processes (issue 13, cold run).

    python benchmarks/bench_parallel_builds.py                 # the quant suite, 1 round (~4 min here)
    python benchmarks/bench_parallel_builds.py --rounds 2 --suite smoke

Each side builds every artifact of the suite's cases into its own empty cache, in a fresh Python
process (imports included, as in ``bench run``): ``sequential`` calls the registry's
``artifact_for`` for each (model, variant) in case order (``bench run --build-jobs 1``);
``parallel`` runs :func:`harness.run.builds.prebuild` with ``--jobs`` processes and then loads each
artifact (sha256-verified) as the runner's sequential pass does. Rounds alternate which side goes first
(ABAB...: the VM's speed drifts). Printed per round: both walls and sequential / parallel; then the
median ratio. Both sides must produce artifacts with the same keys (checked).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from harness.plan import models
from harness.run import builds
pairs = [tuple(p) for p in json.loads(sys.argv[1])]
mode, jobs = sys.argv[2], int(sys.argv[3])
if mode == "parallel":
    builds.prebuild(pairs, jobs=jobs)
keys = {}
for m, v in pairs:
    art, _ = models.artifact_for(m, v)
    keys[f"{m}/{v}"] = art.key
print(json.dumps({"wall_s": time.perf_counter() - t0, "keys": keys}))
"""


def suite_pairs(suite: str) -> list[tuple[str, str]]:
    from harness.plan.suite import load

    pairs = []
    for m in load(suite).models:
        for v in m["variants"]:
            if (m["name"], v) not in pairs:
                pairs.append((m["name"], v))
    return pairs


def one(pairs, mode: str, jobs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-builds-{mode}-") as cache:
        env = {**os.environ, "BENCH_CACHE": cache, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(pairs), mode, str(jobs)], env=env,
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            sys.exit(f"{mode} builds failed: {proc.stderr.strip().splitlines()[-1]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="quant")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    pairs = suite_pairs(a.suite)
    print(f"suite {a.suite}: {len(pairs)} artifacts; {os.cpu_count()} CPUs; parallel = {a.jobs} build processes")
    ratios = []
    for r in range(a.rounds):
        order = ("sequential", "parallel") if r % 2 == 0 else ("parallel", "sequential")
        res = {mode: one(pairs, mode, a.jobs) for mode in order}
        if res["sequential"]["keys"] != res["parallel"]["keys"]:
            sys.exit("the two sides built artifacts with different keys")
        seq, par = res["sequential"]["wall_s"], res["parallel"]["wall_s"]
        ratios.append(seq / par)
        print(f"round {r + 1} ({order[0]} first): sequential {seq:.1f} s, parallel {par:.1f} s, "
              f"ratio {seq / par:.2f}")
    print(f"sequential / parallel: median {statistics.median(ratios):.2f} over {len(ratios)} round(s)")


if __name__ == "__main__":
    main()
