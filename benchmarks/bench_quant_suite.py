"""Wall time of the README's main job, cold (artifacts built) and warm (cached).

    python benchmarks/bench_quant_suite.py [--suite quant] [--backend cpu]

Cold: a fresh, empty artifact cache (BENCH_CACHE in a temp dir): every model is trained,
exported, compressed and then measured. Warm: the same command again with that cache.
Targets (issue 4, on a 2-core machine): cold <= 180 s, warm <= 60 s. Prints both, the case
count and the status counts of each run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def run_once(suite: str, backend: str, cache: str, out: str) -> tuple[float, dict]:
    env = {**os.environ, "BENCH_CACHE": cache}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--suite", suite, "--backend", backend,
                           "--out", out, "-q"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    files = sorted(Path(out).glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise SystemExit(f"no record written (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    record = json.loads(files[-1].read_text())
    return wall, {"exit": proc.returncode, "cases": len(record["cases"]),
                  "status": dict(Counter(c["status"] for c in record["cases"]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="quant")
    ap.add_argument("--backend", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        cold, c_info = run_once(args.suite, args.backend, cache, out)
        warm, w_info = run_once(args.suite, args.backend, cache, out)
    print(f"suite {args.suite} on {args.backend}: cold {cold:.1f} s (target <= 180 s), warm {warm:.1f} s "
          f"(target <= 60 s); {c_info['cases']} cases; cold {c_info['status']} exit {c_info['exit']}, "
          f"warm {w_info['status']} exit {w_info['exit']}")


if __name__ == "__main__":
    main()
