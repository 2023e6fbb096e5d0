#!/usr/bin/env bash
# One-command GPU check for the cuda backend: run it on a machine with an NVIDIA GPU.
#
#   scripts/gpu_check.sh            # GPU tests + quant suite on cuda (torch and onnxruntime)
#   OUT=/path/to/records scripts/gpu_check.sh
#   PYTHON=/path/to/python SUITE=quant RUNTIMES="torch onnxruntime" scripts/gpu_check.sh
#
# 1. what bench sees: the cuda backend's availability and the device description;
# 2. the gpu-marked tests (real CUDA events, CUDA graphs, IO binding, NVML description);
# 3. the quant suite on --backend cuda with each runtime: one run record per runtime in $OUT.
#    Unsupported cases (e.g. int8 without torchao / TensorRT) are recorded with their reason.
# Exit status: 0 when every step passed, else the first failing step's status (all steps run).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
SUITE=${SUITE:-quant}
RUNTIMES=${RUNTIMES:-"torch onnxruntime"}
OUT=${OUT:-$(mktemp -d -t bench-gpu-check-XXXXXX)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# If this checkout's entry points are not installed yet (pip install -e . not re-run), register
# cuda/tpu for this script only, through a throw-away .dist-info on PYTHONPATH.
if ! "$PYTHON" -c "from harness.plugins import entries; import sys; sys.exit('cuda' not in entries())" 2>/dev/null; then
  EPS=$(mktemp -d -t bench-eps-XXXXXX)
  mkdir -p "$EPS/bench_gpu_check-0.dist-info"
  printf 'Metadata-Version: 2.1\nName: bench-gpu-check\nVersion: 0\n' > "$EPS/bench_gpu_check-0.dist-info/METADATA"
  printf '[bench.backends]\ncuda = backends.cuda:CUDABackend\ntpu = backends.tpu:TPUBackend\n' \
    > "$EPS/bench_gpu_check-0.dist-info/entry_points.txt"
  export PYTHONPATH="$EPS:$PYTHONPATH"
fi
status=0
step() {  # step NAME CMD...: run, report, remember the first failure
  local name=$1; shift
  echo "== $name: $*"
  "$@"
  local rc=$?
  echo "== $name: exit $rc"
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}

step "backends" "$PYTHON" -m harness list backends
step "device" "$PYTHON" - <<'PY'
import json, sys
from backends.cuda import CUDABackend
b = CUDABackend()
av = b.availability()
print("available:", av.ok, "-", av.reason)
for rt in b.runtimes:
    r = b.runtime_availability(rt)
    print(f"runtime {rt}: {'ok' if r.ok else r.reason}")
if not av.ok:
    sys.exit(2)
print(json.dumps(b.describe(), indent=1, default=str))
PY
step "gpu tests" "$PYTHON" -m pytest -m gpu -q -rs tests/test_cuda.py
for rt in $RUNTIMES; do
  step "suite $SUITE on cuda/$rt" "$PYTHON" -m harness run --suite "$SUITE" --backend cuda --runtime "$rt" --out "$OUT"
done
echo "records: $OUT"
exit $status
