"""int8-dynamic: weights quantized to int8 ahead of time, activations per batch at run time.

onnxruntime.quantization.quantize_dynamic after onnxruntime's quantization pre-processing.
torch exports nn.Linear as Gemm, which the dynamic quantizer leaves in fp32, so Gemms with
constant weights are first rewritten as MatMul + Add (``_common.gemm_to_matmul``); the
MatMuls become DynamicQuantizeLinear -> MatMulInteger (uint8 activations x int8 weights),
convolutions DynamicQuantizeLinear -> ConvInteger (``op_types`` lists what is quantized;
embedding Gathers stay fp32). Dynamic quantization of convolutions is rarely fast -- the
activation is quantized per call and ConvInteger has no fused kernel -- which is what this
variant shows next to int8-static on CNNs.

Weights are quantized per output channel (``per_channel``): one scale per column of a
MatMul's weight. Measured on MiniLM-L6 (AVX2): per-tensor weights give the embeddings a cosine
of 0.956 to fp32 and WordSim-353 Spearman 0.701 (fp32 0.729); per channel 0.990 and 0.725.
(Dynamic ConvInteger gets per-tensor weights either way: EfficientNet-Lite0 measured the same.)

No torch form: int8 runs through onnxruntime (the torch runtime refuses int8).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from suites.recipes import _common as C


def apply(base, out_dir: Path, *, per_channel: bool = True, reduce_range: bool = False,
          op_types: tuple = ("MatMul", "Conv")) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_info = C.preprocess(base.onnx_path, pre)
        model = C.gemm_to_matmul(onnx.load(str(pre)))
        mm = Path(tmp) / "matmul.onnx"
        onnx.save(model, str(mm))
        quantize_dynamic(str(mm), str(out_dir / "model.onnx"), weight_type=QuantType.QInt8,
                         per_channel=per_channel, reduce_range=reduce_range, op_types_to_quantize=list(op_types))
    ops = C.op_counts(out_dir / "model.onnx")
    return {
        "precision": "int8",
        "recipe": {"name": "int8-dynamic", "params": {"weight_type": "QInt8", "activations": "uint8, per batch",
                                                      "per_channel": per_channel, "reduce_range": reduce_range,
                                                      "op_types": list(op_types), **pre_info}},
        "torch": None,
        "ops": ops,
        "check": C.ort_check(out_dir / "model.onnx", base),
    }
