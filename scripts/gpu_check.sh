#!/usr/bin/env bash
# One-command proof of the cuda backend on a machine with an NVIDIA GPU (docs/backends.md, "GPU check").
#
#   bash scripts/gpu_check.sh                 # everything, about 5-10 minutes on one GPU
#   OUT=/path bash scripts/gpu_check.sh       # where records, logs and the table go (default: a temp dir)
#   WHEELS=/path/to/wheels bash scripts/gpu_check.sh   # install offline from carried wheels
#
# Steps (each under its own time limit; all run, the table says which failed):
#   0. a GPU is there (nvidia-smi lists one), else ONE line on stderr and exit 2, before installing anything;
#   1. a Python with a CUDA build of torch, onnxruntime-gpu, nvidia-ml-py and bench's own dependencies:
#      $VENV (default .gpu-venv) if it already works; else $PYTHON (default python3) if it already has
#      them; else a new $VENV filled from $WHEELS (pip --no-index) or, failing that, from PyPI;
#      if none works: one line saying what is missing, exit 2;
#   2. what bench sees: cuda backend availability and the device description;
#   3. the gpu-marked tests (pytest -m gpu: real events, graphs, IO binding, NVML by UUID);
#   4-5. the quant suite, single-stream, on --backend cuda with --runtime torch and --runtime onnxruntime;
#   6. bench's p50 for one model next to a hand-written CUDA-event loop in the same process
#      (benchmarks/bench_cuda_vs_events.py compare; ratio printed);
#   7. the table (benchmarks/bench_cuda_vs_events.py table $OUT).
# Exit status: 0 when every step passed, else the first failing step's status; 2 when there is no GPU
# or no usable Python environment.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$ROOT/.gpu-venv}
WHEELS=${WHEELS:-$ROOT/wheels}
MODEL=${MODEL:-mlp-digits}
OUT=${OUT:-}
NVSMI=${NVSMI:-nvidia-smi}
BUDGET_S=${BUDGET_S:-570}  # the whole check, installation included, stays under 10 minutes
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
die() { echo "gpu_check: $*" >&2; exit 2; }
why() { { grep -m1 -E '^ERROR' "$1" || tail -1 "$1"; } 2>/dev/null | cut -c1-200; }

# 0. a GPU, or one line
if ! command -v "$NVSMI" >/dev/null 2>&1; then
  die "no NVIDIA GPU here: nvidia-smi not found (run this on a machine with an NVIDIA GPU and its driver)"
fi
GPUS=$("$NVSMI" -L 2>/dev/null | grep -c '^GPU ' || true)
if [ "${GPUS:-0}" -lt 1 ]; then
  die "no NVIDIA GPU here: nvidia-smi lists none (driver not loaded, or CUDA_VISIBLE_DEVICES hides them)"
fi
[ -n "$OUT" ] || OUT=$(mktemp -d -t bench-gpu-check-XXXXXX)
mkdir -p "$OUT" || die "cannot create $OUT"
: > "$OUT/steps.tsv"

# 1. a Python that has what the check needs
NEEDS='import sys, importlib.util as u
mods = ("torch", "onnxruntime", "pynvml", "pytest", "onnx", "numpy", "scipy", "pandas", "yaml", "jsonschema", "click",
        "rich", "psutil", "plotly", "sklearn")
missing = [m for m in mods if u.find_spec(m) is None]
if missing: sys.exit("missing: " + " ".join(missing))
import torch, onnxruntime
if not torch.cuda.is_available(): sys.exit(f"torch {torch.__version__} cannot use CUDA here")
if "CUDAExecutionProvider" not in onnxruntime.get_available_providers(): sys.exit("onnxruntime has no CUDA EP (install onnxruntime-gpu)")'
usable() { "$1" -c "$NEEDS" 2>&1 | tail -1; }
PY=""
if [ -x "$VENV/bin/python" ] && [ -z "$(usable "$VENV/bin/python")" ]; then
  PY=$VENV/bin/python
elif command -v "$PYTHON" >/dev/null 2>&1 && [ -z "$(usable "$PYTHON")" ]; then
  PY=$(command -v "$PYTHON")
else
  command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON (set PYTHON=/path/to/python3.10+)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" >"$OUT/install.log" 2>&1 \
    || die "cannot create a venv with $PYTHON (apt install python3-venv?); see $OUT/install.log"
  # bench depends on onnxruntime (the CPU wheel); onnxruntime-gpu provides the same module, so it
  # replaces it after bench is installed (both installed at once overwrite each other's files)
  install() {  # install PIP_ARGS...: bench + torch + NVML, then CPU onnxruntime -> onnxruntime-gpu;
    # each pip call limited to what is left of the budget
    local pip=(timeout $((BUDGET_S - SECONDS > 30 ? BUDGET_S - SECONDS : 30)) "$VENV/bin/python" -m pip)
    "${pip[@]}" install -q "$@" torch nvidia-ml-py -e "$ROOT[test]" \
      && "${pip[@]}" uninstall -q -y onnxruntime \
      && "${pip[@]}" install -q "$@" onnxruntime-gpu
  }
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "== install: from $WHEELS (offline)"
    install --no-index --find-links "$WHEELS" >>"$OUT/install.log" 2>&1 \
      || die "installing from $WHEELS failed ($(why "$OUT/install.log")); see $OUT/install.log"
  elif timeout 15 "$VENV/bin/python" -m pip download -q --no-deps -d "$OUT/.probe" nvidia-ml-py >/dev/null 2>&1; then
    echo "== install: from PyPI (torch's CUDA build is a few GB)"
    install >>"$OUT/install.log" 2>&1 \
      || die "pip install from PyPI failed ($(why "$OUT/install.log")); see $OUT/install.log"
  else
    die "cannot install: $PYTHON lacks torch (CUDA build)/onnxruntime-gpu/nvidia-ml-py, no wheels in $WHEELS, PyPI unreachable; carry wheels (docs/backends.md, GPU check) or a ready venv ($VENV)"
  fi
  WHY=$(usable "$VENV/bin/python")
  [ -z "$WHY" ] || die "the new environment is not usable: $WHY"
  PY=$VENV/bin/python
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# cuda/tpu entry points for a checkout that was never pip-installed (a throw-away .dist-info)
if ! "$PY" -c "from harness.plan.plugins import entries; import sys; sys.exit('cuda' not in entries())" 2>/dev/null; then
  EPS=$(mktemp -d -t bench-eps-XXXXXX)
  mkdir -p "$EPS/bench_gpu_check-0.dist-info"
  printf 'Metadata-Version: 2.1\nName: bench-gpu-check\nVersion: 0\n' > "$EPS/bench_gpu_check-0.dist-info/METADATA"
  printf '[bench.backends]\ncuda = backends.cuda:CUDABackend\ntpu = backends.tpu:TPUBackend\n' \
    > "$EPS/bench_gpu_check-0.dist-info/entry_points.txt"
  export PYTHONPATH="$EPS:$PYTHONPATH"
fi
echo "== python: $PY; records and logs: $OUT"

status=0
step() {  # step NAME LIMIT_S CMD...: run under min(limit, what is left of the budget), log, record
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS left=$((BUDGET_S - SECONDS)) rc
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name"
  if [ "$limit" -lt 10 ]; then
    echo "== $name: skipped, the ${BUDGET_S}s budget is spent"; rc=124
  else
    timeout "$limit" "$@" > >(tee "$OUT/${name// /_}.log") 2>&1
    rc=$?
  fi
  [ "$rc" -eq 124 ] && echo "== $name: timed out after ${limit}s"
  printf '%s\t%d\t%d\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/steps.tsv"
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}

step "device" 60 "$PY" - <<'PY'
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
step "gpu tests" 150 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider tests/test_cuda.py
for rt in torch onnxruntime; do
  step "quant cuda/$rt" 180 "$PY" -m harness run --suite quant --backend cuda --runtime "$rt" \
    --scenario single-stream --out "$OUT" -q
done
step "bench vs events" 120 "$PY" benchmarks/bench_cuda_vs_events.py compare --model "$MODEL" --batch 1 \
  --json "$OUT/events.json"
echo
"$PY" benchmarks/bench_cuda_vs_events.py table "$OUT"
exit $status
