"""Optional cross-checks against the field's own toolflow: the HLS ap_fixed headers (compiled with
g++) and hls4ml 1.3's bit-accurate C++ emulation. Skipped unless an hls4ml virtual environment is
present (``$BENCH_HLS4ML_PYTHON`` or /work/hls4ml-venv/bin/python; see backends/fpga/hls4ml_ref.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from backends.fpga.emulator import Emulator, EmulatorConfig
from backends.fpga.fixed import FixedType, parse_precision, requantize
from tests.test_fpga_graphs import mlp

REPO = Path(__file__).resolve().parents[1]
PY = Path(os.environ.get("BENCH_HLS4ML_PYTHON", "/work/hls4ml-venv/bin/python"))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not PY.exists(), reason=f"no hls4ml venv at {PY} (optional cross-check)")]


def _ap_types() -> Path | None:
    out = subprocess.run([str(PY), "-c", "import hls4ml, os; print(os.path.dirname(hls4ml.__file__))"],
                         capture_output=True, text=True)
    d = Path(out.stdout.strip()) / "templates" / "vivado" / "ap_types"
    return d if (d / "ap_fixed.h").exists() else None


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_fixed_point_against_hls_headers(tmp_path):
    """Every quantization x overflow mode on a few widths, float -> fixed and fixed -> fixed, against
    the real ap_fixed.h."""
    inc = _ap_types()
    if inc is None:
        pytest.skip("hls4ml has no ap_types headers")
    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.normal(0, 6, 120), np.arange(-40, 41) / 8, np.arange(-32, 32) / 16 + 1 / 32,
                           [100.5, -100.5, 0.0]])
    types = []
    for w, i, s in [(8, 3, True), (6, 2, True), (5, 5, False), (4, 6, True)]:
        for qm in ("AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV"):
            for om, n in [("AP_WRAP", 0), ("AP_SAT", 0), ("AP_SAT_ZERO", 0), ("AP_SAT_SYM", 0), ("AP_WRAP", 2)] + \
                    ([("AP_WRAP_SM", 0)] if s else []):
                types.append(FixedType(w, i, s, qm, om, n))
    src = ['#include "ap_fixed.h"', "#include <cstdio>",
           "double vals[] = {" + ",".join(repr(float(v)) for v in vals) + "};",
           "template<class T> void run(int t){ for(unsigned k=0;k<sizeof(vals)/sizeof(double);k++){ "
           "T x = vals[k]; ap_fixed<24,12> y = vals[k]; T z = y; "
           'printf("%d %u %.17g %.17g\\n", t, k, x.to_double(), z.to_double()); } }', "int main(){"]
    for j, t in enumerate(types):
        src.append(f"  run<ap_{'' if t.signed else 'u'}fixed<{t.width},{t.integer},{t.q_mode},{t.o_mode},"
                   f"{t.sat_bits}> >({j});")
    src.append("}")
    (tmp_path / "t.cpp").write_text("\n".join(src))
    subprocess.run(["g++", "-O0", f"-I{inc}", "t.cpp", "-o", "t"], cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run(["./t"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.split("\n")
    got = np.array([[float(v) for v in line.split()] for line in out if line]).reshape(len(types), len(vals), 4)
    wide = parse_precision("ap_fixed<24,12>")
    wm = wide.quantize(vals)
    for j, t in enumerate(types):
        assert np.array_equal(t.round_trip(vals), got[j, :, 2]), t.name
        assert np.array_equal(t.to_float(requantize(wm, wide.frac, t)), got[j, :, 3]), t.name


@pytest.mark.parametrize("precision", ["ap_fixed<16,6>", "ap_fixed<8,3>"])
def test_emulator_bit_exact_against_hls4ml(tmp_path, precision):
    """The same ONNX MLP through hls4ml's compile()/predict (g++ build of its HLS C++) and through the
    numpy emulator: identical outputs, bit for bit."""
    import onnx

    m = mlp([16, 32, 16, 5], seed=3)
    onnx.save(m, tmp_path / "m.onnx")
    x = np.random.default_rng(4).normal(0, 1.5, (200, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([str(PY), str(REPO / "backends" / "fpga" / "hls4ml_ref.py"), str(tmp_path / "m.onnx"),
                        str(tmp_path / "x.npy"), precision, str(tmp_path / "y.npy"), str(tmp_path / "prj")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    ref = np.load(tmp_path / "y.npy")
    y = Emulator(m, EmulatorConfig(data=parse_precision(precision))).run({"x": x})[0]
    assert np.array_equal(y, ref.reshape(y.shape).astype(np.float32))
