"""Small ONNX graphs built with onnx.helper for the FPGA simulator's tests (no training, no torch)."""
from __future__ import annotations

import numpy as np


def _model(nodes, inputs, outputs, inits):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v), name=k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def mlp(sizes, seed=0, softmax=False, zero_frac=0.0, scale=None):
    """Gemm(+Relu) chain ``sizes[0] -> ... -> sizes[-1]`` with torch-like init (transB=1)."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], {}
    prev = "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        s = scale if scale is not None else 1.0 / np.sqrt(a)
        w = rng.uniform(-s, s, (b, a)).astype(np.float32)
        if zero_frac:
            w[rng.random(w.shape) < zero_frac] = 0.0
        inits[f"w{i}"] = w
        inits[f"b{i}"] = rng.uniform(-s, s, b).astype(np.float32)
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out], name=f"fc{i}", transB=1))
        prev = out
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [prev], ["y"], name="softmax", axis=1))
    else:
        nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return _model(nodes, [("x", ["N", sizes[0]])], [("y", ["N", sizes[-1]])], inits)


def cnn(seed=0):
    """Conv3x3(pad) + BN + Relu -> depthwise 3x3 stride 2 -> Relu -> residual-style Add with a 1x1
    conv -> MaxPool 2x2 -> AveragePool 2x2 (pad) -> GlobalAveragePool -> Flatten -> Gemm -> Softmax."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    c = 4
    inits = {
        "cw": rng.normal(0, 0.4, (c, 1, 3, 3)).astype(np.float32), "cb": rng.normal(0, 0.1, c).astype(np.float32),
        "g": rng.uniform(0.5, 1.5, c).astype(np.float32), "be": rng.normal(0, 0.1, c).astype(np.float32),
        "mu": rng.normal(0, 0.1, c).astype(np.float32), "var": rng.uniform(0.5, 1.5, c).astype(np.float32),
        "dw": rng.normal(0, 0.4, (c, 1, 3, 3)).astype(np.float32), "db": rng.normal(0, 0.1, c).astype(np.float32),
        "pw": rng.normal(0, 0.4, (c, c, 1, 1)).astype(np.float32),
        "fw": rng.normal(0, 0.5, (3, c)).astype(np.float32), "fb": rng.normal(0, 0.1, 3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["bn1"], name="bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "dw", "db"], ["d1"], name="dwconv", group=c, pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["d1"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "pw"], ["p1"], name="pwconv"),
        helper.make_node("Add", ["p1", "r2"], ["a1"], name="add"),
        helper.make_node("MaxPool", ["a1"], ["m1"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["m1"], ["ap"], name="avgpool", kernel_shape=[2, 2], pads=[0, 0, 1, 1],
                         strides=[1, 1]),
        helper.make_node("GlobalAveragePool", ["ap"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    return _model(nodes, [("x", ["N", 1, 8, 8])], [("y", ["N", 3])], inits)


def with_op(op):
    """A graph holding one op the simulator does not emulate."""
    from onnx import helper

    nodes = [helper.make_node(op, ["x"], ["y"], name="odd")]
    return _model(nodes, [("x", ["N", 4])], [("y", ["N", 4])], {})


def ort_run(model, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]
