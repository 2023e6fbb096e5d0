"""Reference outputs from hls4ml's own bit-accurate C++ emulation, for cross-checking the emulator.

Runs in a separate virtual environment that has hls4ml and qonnx (it imports nothing of bench):

    python3 -m venv /work/hls4ml-venv
    /work/hls4ml-venv/bin/pip install "hls4ml==1.3.*" qonnx -c .ci/constraints.txt
    /work/hls4ml-venv/bin/python backends/fpga/hls4ml_ref.py MODEL.onnx X.npy 'ap_fixed<16,6>' OUT.npy WORKDIR

The ONNX graph is cleaned as hls4ml's ONNX front end expects (qonnx ``cleanup_model``,
``GemmToMatMul``), converted with per-layer ("name") granularity, and configured like bench's
emulator defaults: every tensor in the given precision except the Dense/Conv results, which keep
hls4ml's inferred exact accumulator type ("auto") so that the following activation does the one
rounding, and the graph output stays exact (the final Dense's precision set explicitly wide, the
documented way to keep a final softmax/logits from collapsing). ``compile()`` builds the C++ model
with g++ and ``predict`` runs it; the outputs go to OUT.npy.
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import time

    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    import hls4ml

    onnx_path, x_path, precision, out_path, workdir = argv[:5]
    prec = precision.replace("ap_fixed", "fixed").replace("ap_ufixed", "ufixed")
    model = cleanup_model(ModelWrapper(onnx_path))
    model = cleanup_model(model.transform(GemmToMatMul()))
    cfg = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend="Vivado",
                                                     default_precision=prec)
    for name, layer in cfg["LayerName"].items():
        p = layer.setdefault("Precision", {})
        is_mac = name.startswith(("MatMul", "Conv", "Gemm")) and "param" not in name
        p["result"] = "auto" if is_mac else prec
        if "accum" in p:
            p["accum"] = "auto"
    t0 = time.time()
    hm = hls4ml.converters.convert_from_onnx_model(model, output_dir=workdir, backend="Vivado", hls_config=cfg,
                                                   io_type="io_parallel")
    hm.compile()
    x = np.load(x_path).astype(np.float32)
    y = np.asarray(hm.predict(np.ascontiguousarray(x)))
    np.save(out_path, y.reshape(len(x), -1))
    print(f"hls4ml {hls4ml.__version__}: compiled and ran in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
