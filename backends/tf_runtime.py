"""The TensorFlow runtime: an exported ONNX graph (or the user's own TF model) run by TF/XLA.

Used by ``--backend cpu --runtime tensorflow`` and by the ``tpu`` backend; the same code
runs in both, so CI exercises the TPU's TensorFlow/XLA path on the CPU.

How a zoo model reaches TensorFlow
----------------------------------
Every artifact carries its exported ONNX graph (``model.onnx``), which is the fp32 (or
fp16 / int8) model the other runtimes run. :class:`OnnxToTF` interprets that graph op by
op with TensorFlow ops *while* ``tf.function`` traces it, so the result is one TF graph,
compiled by XLA (``jit_compile=True``) like any Keras model. Why this path:

* no extra dependency: onnx2tf converts offline but its hard version pins break this
  stack (measured); tf2onnx goes the other way; onnx-tf is unmaintained;
* one converter for every model and every variant, including the quantized graphs:
  a QDQ graph is run as what QDQ means (``QuantizeLinear`` rounds and saturates to the
  integer grid, ``DequantizeLinear`` maps back, the op in between runs in float), and the
  integer ops (``MatMulInteger``, ``ConvInteger``, ``QLinearMatMul``, ``QLinearConv``)
  run in int32 arithmetic, exact;
* weights become ``tf.Variable`` s (created under the TPU strategy's scope there), shape
  arithmetic (``Shape``/``Gather``/``Concat``/...) is folded to constants at trace time
  because every input shape is static for a given batch, so XLA sees static shapes.
An op the interpreter does not know raises :class:`~backends.base.UnsupportedCase`
naming the op; the case is recorded ``unsupported``, nothing runs in its place.

Users' own TensorFlow models run directly: ``--option tf_model=PATH`` (a SavedModel
directory or a ``.keras`` file), or an artifact whose ``meta["tensorflow"]["path"]``
names one.

Execution: ``tf.function(jit_compile=True)`` (``--option jit_compile=0`` runs the plain
TF graph instead); the first call (trace + XLA compile + run) is timed apart by the
harness and broken down in ``session.timings()``; outputs are fetched to host numpy
(``.numpy()``) inside the timed call, which is also the synchronization point.
Threads: ``tf.config.threading`` intra-op = ``threads``, inter-op = 1, set right after
TensorFlow is imported, before any op runs, and recorded (with what is in force) in
``session.info``.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from backends._common import INTEGER_OPS, QDQ_OPS, quantization_of  # noqa: F401  (shared with cuda)
from backends.base import Session, SessionReport, UnsupportedCase

#: initializers with at least this many elements become tf.Variables (weights); smaller ones
#: stay numpy constants so shape arithmetic folds at trace time.
VARIABLE_MIN_SIZE = 16
_INT64_MAX = np.iinfo(np.int64).max

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


# ----------------------------------------------------------------------------- TF import

_TF_STATE: dict[str, Any] = {}


def import_tf(threads: int | None = None, inter_op: int = 1):
    """Import TensorFlow (quietly) and set its thread pools before any op runs.

    Returns the module; what was asked and what is in force land in :func:`thread_info`.
    Setting threads after the TF runtime started raises RuntimeError inside TF; that is
    caught and recorded (``threads_note``), never hidden.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if threads is not None and _TF_STATE.get("threads_requested") != (threads, inter_op):
        note = None
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(inter_op))
        except RuntimeError as exc:  # the runtime is already initialised in this process
            note = f"could not set thread pools: {exc}"
        _TF_STATE.update(threads_requested=(threads, inter_op), threads_note=note)
    return tf


def thread_info(tf) -> dict:
    return {
        "intra_op_parallelism_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_parallelism_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "threads_requested": list(_TF_STATE.get("threads_requested") or ()) or None,
        "threads_note": _TF_STATE.get("threads_note"),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }


# ----------------------------------------------------------------------------- helpers

def _is_const(v) -> bool:
    return isinstance(v, (np.ndarray, np.generic))


def _np_dtype(elem_type: int):
    import onnx

    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def _attrs(node) -> dict:
    import onnx

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif a.type == onnx.AttributeProto.TENSOR:
            v = onnx.numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode() for x in v]
        out[a.name] = v
    return out


def _topological(nodes: list, available: set) -> list:
    """Nodes in an order where every input is produced before use (some converters, e.g. the fp16
    one that keeps fp32 I/O, append their Cast nodes at the end; onnxruntime sorts, so must we)."""
    have = set(available) | {""}
    todo = list(nodes)
    out = []
    while todo:
        rest = []
        for n in todo:
            if all(i in have for i in n.input):
                out.append(n)
                have.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(todo):  # a cycle or a missing input: keep the file's order, let it fail there
            return out + rest
        todo = rest
    return out


class _Graph:
    """What the interpreter needs from an ONNX model, read once."""

    def __init__(self, model):
        import onnx

        self.model = model
        g = model.graph
        self.opset = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        self.initializers = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
        self.inputs = [i for i in g.input if i.name not in self.initializers]
        self.outputs = [o.name for o in g.output]
        self.nodes = _topological(list(g.node), set(self.initializers) | {i.name for i in g.input})
        self.op_counts = Counter((n.domain + "." if n.domain not in ("", "ai.onnx") else "") + n.op_type
                                 for n in self.nodes)

    @property
    def onnx_opset(self) -> int:
        return self.opset.get("ai.onnx", 1)

    def float_dtypes(self) -> set[str]:
        kinds = {a.dtype.name for a in self.initializers.values() if a.dtype.kind == "f" or a.dtype.name == "bfloat16"}
        for i in self.inputs:
            kinds.add(_np_dtype(i.type.tensor_type.elem_type).name)
        return {k for k in kinds if k in _FLOAT_DTYPES}

    def quantization(self) -> dict | None:
        return quantization_of(self.op_counts)


# ----------------------------------------------------------------------------- the interpreter

class OnnxToTF:
    """Interpret an ONNX graph with TensorFlow ops (see the module docstring).

    ``compute_dtype``: ``None`` keeps the graph's dtypes; ``"bfloat16"``/``"float16"``
    casts float32 weights, constants and inputs to that dtype at load (a cast policy,
    recorded), for fp32 graphs run in a lower precision (the TPU's bf16 variant).
    ``jit``: whether the function will be XLA-compiled; without XLA, the CPU kernels of
    convolution and pooling need channels-last data, so the interpreter transposes.
    """

    def __init__(self, model, *, tf, compute_dtype: str | None = None, jit: bool = True,
                 variable_min_size: int = VARIABLE_MIN_SIZE):
        import onnx

        if isinstance(model, (str, os.PathLike)):
            model = onnx.load(str(model))
        self.graph = _Graph(model)
        self.tf = tf
        self.jit = jit
        self.compute_dtype = compute_dtype
        unknown = sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                          for n in self.graph.nodes if _op_key(n) not in OPS})
        if unknown:
            raise UnsupportedCase(f"TensorFlow runtime: ONNX op(s) not supported by bench's ONNX->TF "
                                  f"interpreter: {', '.join(unknown)}")
        if compute_dtype and self.graph.quantization():
            raise UnsupportedCase(f"TensorFlow runtime: a {compute_dtype} compute policy on a quantized graph "
                                  "is not a defined model")
        self.constants: dict[str, np.ndarray] = {}
        self.variables: dict[str, Any] = {}
        for name, arr in self.graph.initializers.items():
            arr = self._policy(arr)
            if arr.size >= variable_min_size and (arr.dtype.kind in "fiu" or arr.dtype.name == "bfloat16"):
                self.variables[name] = tf.Variable(arr, trainable=False, name=_safe(name))
            else:
                self.constants[name] = arr
        self.input_names = [i.name for i in self.graph.inputs]
        self.input_dtypes = [_np_dtype(i.type.tensor_type.elem_type) for i in self.graph.inputs]
        self.output_names = list(self.graph.outputs)

    def _policy(self, arr):
        if self.compute_dtype and arr.dtype == np.float32:
            import ml_dtypes  # shipped with TensorFlow

            return arr.astype(ml_dtypes.bfloat16 if self.compute_dtype == "bfloat16" else np.float16)
        return arr

    def __call__(self, *inputs):
        """Run the graph on TF tensors (call inside a ``tf.function``); returns the outputs."""
        tf = self.tf
        env: dict[str, Any] = dict(self.constants)
        env.update(self.variables)
        for name, x in zip(self.input_names, inputs):
            x = tf.convert_to_tensor(x)
            if self.compute_dtype and x.dtype == tf.float32:
                x = tf.cast(x, self.compute_dtype)
            env[name] = x
        ctx = _Ctx(tf, self.graph.onnx_opset, self.jit)
        for node in self.graph.nodes:
            args = [env[i] if i else None for i in node.input]
            try:
                outs = OPS[_op_key(node)](ctx, args, _attrs(node), len(node.output))
            except UnsupportedCase:
                raise
            except Exception as exc:
                raise UnsupportedCase(f"TensorFlow runtime: ONNX node {node.name or node.op_type} "
                                      f"({node.op_type}) failed to convert: {type(exc).__name__}: {exc}") from exc
            for name, value in zip(node.output, outs):
                if name:
                    env[name] = value
        outs = []
        for name in self.output_names:
            v = env[name]
            v = tf.convert_to_tensor(v)
            if v.dtype in (tf.float16, tf.bfloat16):
                v = tf.cast(v, tf.float32)  # host outputs in float32, as the torch runtime returns them
            outs.append(v)
        return outs


def _safe(name: str) -> str:
    import re

    s = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name).strip("/") or "w"
    return s if s[0].isalnum() or s[0] == "." else "w" + s


def _op_key(node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


class _Ctx:
    def __init__(self, tf, opset: int, jit: bool):
        self.tf = tf
        self.opset = opset
        self.jit = jit

    def t(self, v, dtype=None):
        """As a TF tensor (numpy constants converted; dtype cast when given)."""
        tf = self.tf
        if _is_const(v):
            v = tf.constant(v)
        return v if dtype is None or v.dtype == dtype else tf.cast(v, dtype)

    def static(self, v, what: str):
        """A shape-like argument that must be known at trace time, as numpy."""
        if v is None:
            return None
        if _is_const(v):
            return np.asarray(v)
        val = self.tf.get_static_value(v)
        if val is None:
            raise UnsupportedCase(f"TensorFlow runtime: {what} is computed at run time (dynamic shapes "
                                  "are not supported; every input shape is static for a batch)")
        return np.asarray(val)

    def shape(self, v) -> list:
        """Static shape (ints; None where unknown)."""
        if _is_const(v):
            return list(np.shape(v))
        return [d if d is None else int(d) for d in v.shape.as_list()]

    def dtype_name(self, v) -> str:
        return v.dtype.name if _is_const(v) else v.dtype.name


# ----------------------------------------------------------------------------- op table

OPS: dict[str, Callable] = {}


def op(*names):
    def deco(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return deco


def _all_const(args) -> bool:
    return all(a is None or _is_const(a) for a in args)


def _binary(npf, tff):
    def impl(ctx, args, attrs, n_out):
        a, b = args[0], args[1]
        if _all_const((a, b)):
            return [np.asarray(npf(a, b))]
        if _is_const(a) and not _is_const(b):
            a = np.asarray(a, dtype=b.dtype.as_numpy_dtype) if b.dtype != ctx.tf.bool else a
        if _is_const(b) and not _is_const(a):
            b = np.asarray(b, dtype=a.dtype.as_numpy_dtype) if a.dtype != ctx.tf.bool else b
        return [tff(ctx.tf)(a, b)]
    return impl


def _int_div(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "iu":
        return (np.trunc(a / b)).astype(a.dtype)
    return a / b


def _tf_div(tf):
    def f(a, b):
        a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
        if a.dtype.is_integer:
            return tf.math.truncatediv(a, b)
        return a / b
    return f


op("Add")(_binary(np.add, lambda tf: tf.add))
op("Sub")(_binary(np.subtract, lambda tf: tf.subtract))
op("Mul")(_binary(np.multiply, lambda tf: tf.multiply))
op("Div")(_binary(_int_div, _tf_div))
op("Equal")(_binary(np.equal, lambda tf: tf.equal))
op("Less")(_binary(np.less, lambda tf: tf.less))
op("LessOrEqual")(_binary(np.less_equal, lambda tf: tf.less_equal))
op("Greater")(_binary(np.greater, lambda tf: tf.greater))
op("GreaterOrEqual")(_binary(np.greater_equal, lambda tf: tf.greater_equal))
op("And")(_binary(np.logical_and, lambda tf: tf.logical_and))
op("Or")(_binary(np.logical_or, lambda tf: tf.logical_or))
op("Xor")(_binary(np.logical_xor, lambda tf: tf.math.logical_xor))


@op("Mod")
def _mod(ctx, args, attrs, n_out):
    fmod = bool(attrs.get("fmod", 0))  # 0: sign of the divisor (Python %); 1: C fmod
    if fmod:
        return _binary(np.fmod, lambda tf: tf.math.truncatemod)(ctx, args, attrs, n_out)
    return _binary(np.mod, lambda tf: tf.math.floormod)(ctx, args, attrs, n_out)


@op("Pow")
def _pow(ctx, args, attrs, n_out):
    a, b = args
    if _all_const(args):
        return [np.power(a, b).astype(np.asarray(a).dtype)]
    tf = ctx.tf
    if _is_const(b) and np.ndim(b) == 0 and float(b) == 2.0:
        return [tf.square(a)]
    if _is_const(b) and np.ndim(b) == 0 and float(b) == 0.5:
        return [tf.sqrt(a)]
    a = ctx.t(a)
    return [tf.pow(a, ctx.t(b, a.dtype))]


def _variadic(npf, tff):
    def impl(ctx, args, attrs, n_out):
        args = [a for a in args if a is not None]
        if _all_const(args):
            out = args[0]
            for a in args[1:]:
                out = npf(out, a)
            return [np.asarray(out)]
        out = ctx.t(args[0])
        for a in args[1:]:
            out = tff(ctx.tf)(out, ctx.t(a, out.dtype))
        return [out]
    return impl


op("Max")(_variadic(np.maximum, lambda tf: tf.maximum))
op("Min")(_variadic(np.minimum, lambda tf: tf.minimum))
op("Sum")(_variadic(np.add, lambda tf: tf.add))


@op("Mean")
def _mean(ctx, args, attrs, n_out):
    s = OPS["Sum"](ctx, args, attrs, 1)[0]
    n = len([a for a in args if a is not None])
    return [s / n if _is_const(s) else s / ctx.tf.cast(n, s.dtype)]


def _unary(npf, tff):
    def impl(ctx, args, attrs, n_out):
        x = args[0]
        if _is_const(x) and npf is not None:
            return [np.asarray(npf(x, attrs))]
        return [tff(ctx.tf, ctx.t(x), attrs)]
    return impl


op("Identity")(_unary(lambda x, a: x, lambda tf, x, a: tf.identity(x)))
op("Neg")(_unary(lambda x, a: -x, lambda tf, x, a: -x))
op("Abs")(_unary(lambda x, a: np.abs(x), lambda tf, x, a: tf.abs(x)))
op("Sqrt")(_unary(lambda x, a: np.sqrt(x), lambda tf, x, a: tf.sqrt(x)))
op("Reciprocal")(_unary(lambda x, a: 1 / x, lambda tf, x, a: tf.math.reciprocal(x)))
op("Exp")(_unary(lambda x, a: np.exp(x), lambda tf, x, a: tf.exp(x)))
op("Log")(_unary(lambda x, a: np.log(x), lambda tf, x, a: tf.math.log(x)))
op("Floor")(_unary(lambda x, a: np.floor(x), lambda tf, x, a: tf.floor(x)))
op("Ceil")(_unary(lambda x, a: np.ceil(x), lambda tf, x, a: tf.math.ceil(x)))
op("Round")(_unary(lambda x, a: np.round(x), lambda tf, x, a: tf.round(x)))  # both: half to even
op("Sign")(_unary(lambda x, a: np.sign(x), lambda tf, x, a: tf.sign(x)))
op("Not")(_unary(lambda x, a: np.logical_not(x), lambda tf, x, a: tf.logical_not(x)))
op("Sin")(_unary(lambda x, a: np.sin(x), lambda tf, x, a: tf.sin(x)))
op("Cos")(_unary(lambda x, a: np.cos(x), lambda tf, x, a: tf.cos(x)))
op("IsNaN")(_unary(lambda x, a: np.isnan(x), lambda tf, x, a: tf.math.is_nan(x)))
op("Relu")(_unary(None, lambda tf, x, a: tf.nn.relu(x)))
op("Sigmoid")(_unary(None, lambda tf, x, a: tf.sigmoid(x)))
op("Tanh")(_unary(None, lambda tf, x, a: tf.tanh(x)))
op("Erf")(_unary(None, lambda tf, x, a: tf.math.erf(x)))
op("Softplus")(_unary(None, lambda tf, x, a: tf.nn.softplus(x)))
op("Softsign")(_unary(None, lambda tf, x, a: tf.nn.softsign(x)))
op("LeakyRelu")(_unary(None, lambda tf, x, a: tf.nn.leaky_relu(x, alpha=a.get("alpha", 0.01))))
op("Elu")(_unary(None, lambda tf, x, a: tf.where(x > 0, x, a.get("alpha", 1.0) * (tf.exp(x) - 1))))
op("Selu")(_unary(None, lambda tf, x, a: a.get("gamma", 1.0507009873554805) * tf.where(
    x > 0, x, a.get("alpha", 1.6732632423543772) * (tf.exp(x) - 1))))
op("HardSigmoid")(_unary(None, lambda tf, x, a: tf.clip_by_value(
    a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0, 1.0)))
op("HardSwish")(_unary(None, lambda tf, x, a: x * tf.clip_by_value(x / 6.0 + 0.5, 0.0, 1.0)))
op("Gelu")(_unary(None, lambda tf, x, a: tf.nn.gelu(x, approximate=a.get("approximate", "none") == "tanh")))


@op("PRelu")
def _prelu(ctx, args, attrs, n_out):
    x, slope = ctx.t(args[0]), ctx.t(args[1], None)
    slope = ctx.tf.cast(slope, x.dtype)
    return [ctx.tf.where(x < 0, x * slope, x)]


@op("Clip")
def _clip(ctx, args, attrs, n_out):
    tf = ctx.tf
    x = args[0]
    lo = args[1] if len(args) > 1 else attrs.get("min")
    hi = args[2] if len(args) > 2 else attrs.get("max")
    if _is_const(x):
        return [np.clip(x, lo, hi)]
    out = x
    if lo is not None:
        out = tf.maximum(out, ctx.t(lo, x.dtype))
    if hi is not None:
        out = tf.minimum(out, ctx.t(hi, x.dtype))
    return [out]


@op("Cast")
def _cast(ctx, args, attrs, n_out):
    to = _np_dtype(attrs["to"])
    x = args[0]
    if _is_const(x):
        return [np.asarray(x).astype(to)]
    return [ctx.tf.cast(x, ctx.tf.as_dtype(to))]


@op("CastLike")
def _castlike(ctx, args, attrs, n_out):
    x, like = args
    to = np.asarray(like).dtype if _is_const(like) else like.dtype.as_numpy_dtype
    if _is_const(x):
        return [np.asarray(x).astype(to)]
    return [ctx.tf.cast(x, ctx.tf.as_dtype(to))]


@op("Where")
def _where(ctx, args, attrs, n_out):
    c, a, b = args
    if _all_const(args):
        return [np.where(c, a, b)]
    if _is_const(a) and not _is_const(b):
        a = np.asarray(a, dtype=b.dtype.as_numpy_dtype)
    if _is_const(b) and not _is_const(a):
        b = np.asarray(b, dtype=a.dtype.as_numpy_dtype)
    return [ctx.tf.where(ctx.t(c), a, b)]


@op("Constant")
def _constant(ctx, args, attrs, n_out):
    if "value" in attrs:
        return [np.asarray(attrs["value"])]
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                    ("value_ints", np.int64)):
        if key in attrs:
            return [np.asarray(attrs[key], dtype=dt)]
    raise UnsupportedCase(f"TensorFlow runtime: Constant with attributes {sorted(attrs)}")


@op("ConstantOfShape")
def _constant_of_shape(ctx, args, attrs, n_out):
    shape = ctx.static(args[0], "ConstantOfShape's shape").astype(np.int64)
    value = attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return [np.full(tuple(shape), value[0], dtype=value.dtype)]


@op("Dropout")
def _dropout(ctx, args, attrs, n_out):
    x = args[0]
    outs = [x]
    if n_out > 1:
        outs.append(np.ones(ctx.shape(x), dtype=bool))
    return outs


@op("Shape")
def _shape(ctx, args, attrs, n_out):
    x = args[0]
    shape = ctx.shape(x)
    start, end = attrs.get("start", 0), attrs.get("end")
    sel = shape[start:end] if end is not None else shape[start:]
    if all(d is not None for d in sel):
        return [np.asarray(sel, dtype=np.int64)]
    full = ctx.tf.shape(x, out_type=ctx.tf.int64)
    return [full[start:end] if end is not None else full[start:]]


@op("Size")
def _size(ctx, args, attrs, n_out):
    shape = ctx.shape(args[0])
    if all(d is not None for d in shape):
        return [np.asarray(int(np.prod(shape)), dtype=np.int64)]
    return [ctx.tf.size(args[0], out_type=ctx.tf.int64)]


def _axes(ctx, args, attrs, idx=1, name="axes"):
    if len(args) > idx and args[idx] is not None:
        return [int(a) for a in ctx.static(args[idx], name).reshape(-1)]
    if name in attrs:
        return [int(a) for a in attrs[name]]
    return None


@op("Unsqueeze")
def _unsqueeze(ctx, args, attrs, n_out):
    x = args[0]
    axes = _axes(ctx, args, attrs)
    rank = len(ctx.shape(x)) + len(axes)
    axes = sorted(a % rank for a in axes)
    if _is_const(x):
        out = np.asarray(x)
        for a in axes:
            out = np.expand_dims(out, a)
        return [out]
    for a in axes:
        x = ctx.tf.expand_dims(x, a)
    return [x]


@op("Squeeze")
def _squeeze(ctx, args, attrs, n_out):
    x = args[0]
    shape = ctx.shape(x)
    axes = _axes(ctx, args, attrs)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = [a % len(shape) for a in axes]
    if _is_const(x):
        return [np.squeeze(x, axis=tuple(axes))]
    return [ctx.tf.squeeze(x, axis=axes)]


@op("Concat")
def _concat(ctx, args, attrs, n_out):
    axis = attrs["axis"]
    args = [a for a in args if a is not None]
    if _all_const(args):
        return [np.concatenate([np.atleast_1d(a) for a in args], axis=axis)]
    dtype = next(a.dtype for a in args if not _is_const(a))
    return [ctx.tf.concat([ctx.t(a, dtype) for a in args], axis=axis)]


@op("Gather")
def _gather(ctx, args, attrs, n_out):
    data, idx = args
    axis = attrs.get("axis", 0)
    if _all_const(args):
        return [np.take(data, np.asarray(idx), axis=axis)]
    shape = ctx.shape(data)
    axis = axis % len(shape)
    if _is_const(idx):
        idx = np.asarray(idx)
        if (idx < 0).any():
            if shape[axis] is None:
                raise UnsupportedCase("TensorFlow runtime: negative Gather index on a dynamic axis")
            idx = np.where(idx < 0, idx + shape[axis], idx)
    else:
        dim = shape[axis] if shape[axis] is not None else ctx.tf.shape(data, out_type=idx.dtype)[axis]
        idx = ctx.tf.where(idx < 0, idx + ctx.tf.cast(dim, idx.dtype), idx)
    return [ctx.tf.gather(data, idx, axis=axis)]


@op("Slice")
def _slice(ctx, args, attrs, n_out):
    x = args[0]
    if ctx.opset < 10 or len(args) == 1:
        starts, ends = attrs["starts"], attrs["ends"]
        axes = attrs.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = ctx.static(args[1], "Slice starts").reshape(-1).tolist()
        ends = ctx.static(args[2], "Slice ends").reshape(-1).tolist()
        axes = (ctx.static(args[3], "Slice axes").reshape(-1).tolist()
                if len(args) > 3 and args[3] is not None else list(range(len(starts))))
        steps = (ctx.static(args[4], "Slice steps").reshape(-1).tolist()
                 if len(args) > 4 and args[4] is not None else [1] * len(starts))
    rank = len(ctx.shape(x))
    sl = [slice(None)] * rank
    for s, e, a, st in zip(starts, ends, axes, steps):
        e = None if (st > 0 and e >= _INT64_MAX // 2) or (st < 0 and e <= -_INT64_MAX // 2) else int(e)
        sl[int(a) % rank] = slice(int(s), e, int(st))
    return [x[tuple(sl)]]


@op("Reshape")
def _reshape(ctx, args, attrs, n_out):
    x = args[0]
    target = [int(d) for d in ctx.static(args[1], "Reshape's target shape").reshape(-1)]
    in_shape = ctx.shape(x)
    if not attrs.get("allowzero", 0):
        for i, d in enumerate(target):
            if d == 0:
                if in_shape[i] is None:
                    raise UnsupportedCase("TensorFlow runtime: Reshape copies a dynamic dimension")
                target[i] = in_shape[i]
    if _is_const(x):
        return [np.reshape(x, target)]
    return [ctx.tf.reshape(x, target)]


@op("Flatten")
def _flatten(ctx, args, attrs, n_out):
    x = args[0]
    shape = ctx.shape(x)
    axis = attrs.get("axis", 1) % (len(shape) or 1) if shape else 0
    head, tail = shape[:axis], shape[axis:]
    if all(d is not None for d in tail):
        target = [-1, int(np.prod(tail))]
    elif all(d is not None for d in head):
        target = [int(np.prod(head)), -1]
    else:
        raise UnsupportedCase("TensorFlow runtime: Flatten of a tensor with several dynamic dims")
    if _is_const(x):
        return [np.reshape(x, target)]
    return [ctx.tf.reshape(x, target)]


@op("Transpose")
def _transpose(ctx, args, attrs, n_out):
    x = args[0]
    perm = attrs.get("perm") or list(reversed(range(len(ctx.shape(x)))))
    if _is_const(x):
        return [np.transpose(x, perm)]
    return [ctx.tf.transpose(x, perm)]


@op("Expand")
def _expand(ctx, args, attrs, n_out):
    x = args[0]
    shape = [int(d) for d in ctx.static(args[1], "Expand's shape").reshape(-1)]
    xs = ctx.shape(x)
    if any(d is None for d in xs):
        raise UnsupportedCase("TensorFlow runtime: Expand of a tensor with dynamic dims")
    out = list(np.broadcast_shapes(tuple(xs), tuple(shape)))
    if _is_const(x):
        return [np.broadcast_to(x, out).copy()]
    return [ctx.tf.broadcast_to(x, out)]


@op("Tile")
def _tile(ctx, args, attrs, n_out):
    reps = [int(d) for d in ctx.static(args[1], "Tile's repeats").reshape(-1)]
    if _is_const(args[0]):
        return [np.tile(args[0], reps)]
    return [ctx.tf.tile(args[0], reps)]


@op("Range")
def _range(ctx, args, attrs, n_out):
    if _all_const(args):
        start, limit, delta = (np.asarray(a) for a in args)
        return [np.arange(start, limit, delta, dtype=start.dtype)]
    start, limit, delta = (ctx.t(a) for a in args)
    return [ctx.tf.range(start, limit, delta, dtype=start.dtype)]


@op("Split")
def _split(ctx, args, attrs, n_out):
    x = args[0]
    axis = attrs.get("axis", 0)
    sizes = None
    if len(args) > 1 and args[1] is not None:
        sizes = [int(s) for s in ctx.static(args[1], "Split sizes").reshape(-1)]
    elif "split" in attrs:
        sizes = [int(s) for s in attrs["split"]]
    dim = ctx.shape(x)[axis]
    if sizes is None:
        if dim is None:
            raise UnsupportedCase("TensorFlow runtime: Split of a dynamic axis")
        n = attrs.get("num_outputs", n_out)
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    if _is_const(x):
        return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))
    return list(ctx.tf.split(x, sizes, axis=axis))


@op("Pad")
def _pad(ctx, args, attrs, n_out):
    x = args[0]
    mode = attrs.get("mode", "constant")
    rank = len(ctx.shape(x))
    if len(args) > 1 and args[1] is not None:
        pads = [int(p) for p in ctx.static(args[1], "Pad's pads").reshape(-1)]
        value = args[2] if len(args) > 2 and args[2] is not None else None
        axes = ([int(a) % rank for a in ctx.static(args[3], "Pad's axes").reshape(-1)]
                if len(args) > 3 and args[3] is not None else list(range(rank)))
    else:
        pads, value, axes = list(attrs.get("pads", [])), attrs.get("value", 0.0), list(range(rank))
    if any(p < 0 for p in pads):
        raise UnsupportedCase("TensorFlow runtime: Pad with negative pads")
    n = len(axes)
    paddings = [[0, 0] for _ in range(rank)]
    for i, a in enumerate(axes):
        paddings[a] = [pads[i], pads[i + n]]
    if mode == "constant":
        cv = 0 if value is None else np.asarray(ctx.static(value, "Pad's value")).reshape(-1)[0]
        if _is_const(x):
            return [np.pad(x, paddings, mode="constant", constant_values=cv)]
        return [ctx.tf.pad(x, paddings, constant_values=ctx.tf.cast(cv, x.dtype))]
    if mode == "reflect":
        return [ctx.tf.pad(ctx.t(x), paddings, mode="REFLECT")]
    raise UnsupportedCase(f"TensorFlow runtime: Pad mode '{mode}'")


def _reduce(npf, tff, post=None):
    def impl(ctx, args, attrs, n_out):
        x = args[0]
        rank = len(ctx.shape(x))
        axes = _axes(ctx, args, attrs)
        keep = bool(attrs.get("keepdims", 1))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(rank))
        axes = [a % rank for a in axes]
        if _is_const(x):
            return [np.asarray(npf(x, axis=tuple(axes), keepdims=keep))]
        out = tff(ctx.tf)(x, axis=axes, keepdims=keep)
        return [out if post is None else post(ctx.tf, out)]
    return impl


op("ReduceMean")(_reduce(np.mean, lambda tf: tf.reduce_mean))
op("ReduceSum")(_reduce(np.sum, lambda tf: tf.reduce_sum))
op("ReduceMax")(_reduce(np.max, lambda tf: tf.reduce_max))
op("ReduceMin")(_reduce(np.min, lambda tf: tf.reduce_min))
op("ReduceProd")(_reduce(np.prod, lambda tf: tf.reduce_prod))
op("ReduceSumSquare")(_reduce(lambda x, **k: np.sum(np.square(x), **k),
                              lambda tf: lambda x, **k: tf.reduce_sum(tf.square(x), **k)))
op("ReduceL2")(_reduce(lambda x, **k: np.sqrt(np.sum(np.square(x), **k)),
                       lambda tf: lambda x, **k: tf.sqrt(tf.reduce_sum(tf.square(x), **k))))


def _arg(tff):
    def impl(ctx, args, attrs, n_out):
        if attrs.get("select_last_index", 0):
            raise UnsupportedCase("TensorFlow runtime: ArgMax/ArgMin with select_last_index=1")
        x = ctx.t(args[0])
        axis = attrs.get("axis", 0)
        out = tff(ctx.tf)(x, axis=axis, output_type=ctx.tf.int64)
        if attrs.get("keepdims", 1):
            out = ctx.tf.expand_dims(out, axis)
        return [out]
    return impl


op("ArgMax")(_arg(lambda tf: tf.argmax))
op("ArgMin")(_arg(lambda tf: tf.argmin))


@op("CumSum")
def _cumsum(ctx, args, attrs, n_out):
    axis = int(ctx.static(args[1], "CumSum's axis").reshape(-1)[0])
    return [ctx.tf.math.cumsum(ctx.t(args[0]), axis=axis, exclusive=bool(attrs.get("exclusive", 0)),
                               reverse=bool(attrs.get("reverse", 0)))]


@op("Trilu")
def _trilu(ctx, args, attrs, n_out):
    x = ctx.t(args[0])
    k = int(ctx.static(args[1], "Trilu's k").reshape(-1)[0]) if len(args) > 1 and args[1] is not None else 0
    rows, cols = ctx.shape(x)[-2:]
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    mask = (c - r >= k) if attrs.get("upper", 1) else (c - r <= k)
    return [ctx.tf.where(mask, x, ctx.tf.zeros_like(x))]


@op("Einsum")
def _einsum(ctx, args, attrs, n_out):
    return [ctx.tf.einsum(attrs["equation"], *[ctx.t(a) for a in args])]


# ---- softmax / normalisation

def _softmax(tff, npf_name):
    def impl(ctx, args, attrs, n_out):
        x = ctx.t(args[0])
        shape = ctx.shape(x)
        if ctx.opset >= 13:
            return [tff(ctx.tf)(x, axis=attrs.get("axis", -1))]
        axis = attrs.get("axis", 1) % len(shape)  # old semantics: coerce to 2-D at axis
        tail = int(np.prod(shape[axis:]))
        y = tff(ctx.tf)(ctx.tf.reshape(x, [-1, tail]), axis=-1)
        return [ctx.tf.reshape(y, [-1 if d is None else d for d in shape])]
    return impl


op("Softmax")(_softmax(lambda tf: tf.nn.softmax, "softmax"))
op("LogSoftmax")(_softmax(lambda tf: tf.nn.log_softmax, "log_softmax"))


def _channel_shape(rank: int, n: int) -> list:
    return [1, n] + [1] * (rank - 2)


@op("BatchNormalization")
def _batchnorm(ctx, args, attrs, n_out):
    x, scale, bias, mean, var = (ctx.t(a) for a in args[:5])
    eps = attrs.get("epsilon", 1e-5)
    tf = ctx.tf
    shape = _channel_shape(len(ctx.shape(x)), ctx.shape(scale)[0])
    a = tf.cast(scale, x.dtype) * tf.math.rsqrt(tf.cast(var, x.dtype) + tf.cast(eps, x.dtype))
    b = tf.cast(bias, x.dtype) - tf.cast(mean, x.dtype) * a
    return [x * tf.reshape(a, shape) + tf.reshape(b, shape)]


@op("LayerNormalization")
def _layernorm(ctx, args, attrs, n_out):
    tf = ctx.tf
    x = ctx.t(args[0])
    rank = len(ctx.shape(x))
    axis = attrs.get("axis", -1) % rank
    axes = list(range(axis, rank))
    eps = attrs.get("epsilon", 1e-5)
    xf = tf.cast(x, tf.float32) if x.dtype in (tf.float16, tf.bfloat16) else x  # stash_type float32
    mean = tf.reduce_mean(xf, axis=axes, keepdims=True)
    d = xf - mean
    var = tf.reduce_mean(tf.square(d), axis=axes, keepdims=True)
    inv = tf.math.rsqrt(var + eps)
    y = tf.cast(d * inv, x.dtype) * ctx.t(args[1], x.dtype)
    if len(args) > 2 and args[2] is not None:
        y = y + ctx.t(args[2], x.dtype)
    return [y, mean, inv][:n_out]


@op("InstanceNormalization")
def _instancenorm(ctx, args, attrs, n_out):
    tf = ctx.tf
    x = ctx.t(args[0])
    rank = len(ctx.shape(x))
    axes = list(range(2, rank))
    mean, var = tf.nn.moments(x, axes=axes, keepdims=True)
    shape = _channel_shape(rank, ctx.shape(x)[1])
    y = (x - mean) * tf.math.rsqrt(var + attrs.get("epsilon", 1e-5))
    return [y * tf.reshape(ctx.t(args[1], x.dtype), shape) + tf.reshape(ctx.t(args[2], x.dtype), shape)]


# ---- matrix products

@op("Gemm")
def _gemm(ctx, args, attrs, n_out):
    tf = ctx.tf
    a, b = ctx.t(args[0]), ctx.t(args[1])
    y = tf.linalg.matmul(a, tf.cast(b, a.dtype), transpose_a=bool(attrs.get("transA", 0)),
                         transpose_b=bool(attrs.get("transB", 0)))
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = y * tf.cast(alpha, y.dtype)
    if len(args) > 2 and args[2] is not None and beta != 0.0:
        c = ctx.t(args[2], y.dtype)
        y = y + (c if beta == 1.0 else c * tf.cast(beta, y.dtype))
    return [y]


def _matmul(tf, a, b):
    ra, rb = len(a.shape), len(b.shape)
    if ra == 1:
        return tf.squeeze(tf.linalg.matmul(a[None, :], b), axis=-2)
    if rb == 1:
        return tf.squeeze(tf.linalg.matmul(a, b[:, None]), axis=-1)
    return tf.linalg.matmul(a, b)


@op("MatMul")
def _matmul_op(ctx, args, attrs, n_out):
    a = ctx.t(args[0])
    return [_matmul(ctx.tf, a, ctx.t(args[1], a.dtype))]


# ---- convolution and pooling (ONNX layout: channels first)

def _spatial_pads(ctx, attrs, in_spatial, kernel, strides, dilations):
    n = len(kernel)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", "") or auto is None:
        pads = list(attrs.get("pads", [0] * (2 * n)))
        return [(pads[i], pads[i + n]) for i in range(n)]
    if auto == "VALID":
        return [(0, 0)] * n
    out = []
    for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
        if size is None:
            raise UnsupportedCase("TensorFlow runtime: auto_pad on a dynamic spatial dim")
        eff = (k - 1) * d + 1
        total = max((-(-size // s) - 1) * s + eff - size, 0)
        small = total // 2
        out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
    return out


_CF = {1: "NCW", 2: "NCHW", 3: "NCDHW"}
_CL = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


def _to_cl(tf, x, n):
    return tf.transpose(x, [0] + list(range(2, n + 2)) + [1])


def _to_cf(tf, x, n):
    return tf.transpose(x, [0, n + 1] + list(range(1, n + 1)))


def _conv(ctx, x, w, attrs):
    """ONNX Conv without bias on TF tensors; w in ONNX layout (M, C/g, *k)."""
    tf = ctx.tf
    xs = ctx.shape(x)
    n = len(xs) - 2
    if n not in _CF:
        raise UnsupportedCase(f"TensorFlow runtime: {n}-D convolution")
    ws = ctx.shape(w)
    kernel = attrs.get("kernel_shape") or ws[2:]
    strides = attrs.get("strides") or [1] * n
    dil = attrs.get("dilations") or [1] * n
    group = attrs.get("group", 1)
    pads = _spatial_pads(ctx, attrs, xs[2:], kernel, strides, dil)
    if any(p != (0, 0) for p in pads):
        x = tf.pad(x, [[0, 0], [0, 0]] + [list(p) for p in pads])
    filt = tf.transpose(w, list(range(2, n + 2)) + [1, 0])  # (*k, C/g, M)
    if ctx.jit:  # XLA: channels-first and grouped convolutions compile directly
        return tf.nn.convolution(x, filt, strides=strides, padding="VALID", dilations=dil, data_format=_CF[n])
    xl = _to_cl(tf, x, n)
    if group == 1:
        y = tf.nn.convolution(xl, filt, strides=strides, padding="VALID", dilations=dil, data_format=_CL[n])
    else:  # TF's CPU kernels have no grouped convolution outside XLA: one convolution per group
        xg = tf.split(xl, group, axis=-1)
        fg = tf.split(filt, group, axis=-1)
        y = tf.concat([tf.nn.convolution(a, b, strides=strides, padding="VALID", dilations=dil,
                                         data_format=_CL[n]) for a, b in zip(xg, fg)], axis=-1)
    return _to_cf(tf, y, n)


@op("Conv")
def _conv_op(ctx, args, attrs, n_out):
    x = ctx.t(args[0])
    w = ctx.t(args[1], x.dtype)
    y = _conv(ctx, x, w, attrs)
    if len(args) > 2 and args[2] is not None:
        y = y + ctx.tf.reshape(ctx.t(args[2], y.dtype), _channel_shape(len(ctx.shape(y)), ctx.shape(w)[0]))
    return [y]


def _pool_geometry(ctx, x, attrs):
    xs = ctx.shape(x)
    n = len(xs) - 2
    kernel = list(attrs["kernel_shape"])
    strides = list(attrs.get("strides") or [1] * n)
    if any(d != 1 for d in attrs.get("dilations") or [1] * n):
        raise UnsupportedCase("TensorFlow runtime: dilated pooling")
    pads = _spatial_pads(ctx, attrs, xs[2:], kernel, strides, [1] * n)
    extra = [0] * n
    if attrs.get("ceil_mode", 0):
        for i, (size, k, s) in enumerate(zip(xs[2:], kernel, strides)):
            lo, hi = pads[i]
            span = size + lo + hi - k
            out = -(-span // s) + 1
            if (out - 1) * s >= size + lo:  # the last window must start inside the input or left pad
                out -= 1
            extra[i] = max((out - 1) * s + k - (size + lo + hi), 0)
    return n, kernel, strides, pads, extra


def _pool(ctx, x, kernel, strides, n, kind):
    tf = ctx.tf
    if ctx.jit:
        return tf.nn.pool(x, kernel, kind, strides=strides, padding="VALID", data_format=_CF[n])
    y = tf.nn.pool(_to_cl(tf, x, n), kernel, kind, strides=strides, padding="VALID", data_format=_CL[n])
    return _to_cf(tf, y, n)


@op("MaxPool")
def _maxpool(ctx, args, attrs, n_out):
    if n_out > 1:
        raise UnsupportedCase("TensorFlow runtime: MaxPool with an Indices output")
    tf = ctx.tf
    x = ctx.t(args[0])
    n, kernel, strides, pads, extra = _pool_geometry(ctx, x, attrs)
    spec = [[0, 0], [0, 0]] + [[lo, hi + e] for (lo, hi), e in zip(pads, extra)]
    if any(any(p) for p in spec):
        low = x.dtype.min if x.dtype.is_floating else x.dtype.min
        x = tf.pad(x, spec, constant_values=tf.cast(-np.inf if x.dtype.is_floating else low, x.dtype))
    return [_pool(ctx, x, kernel, strides, n, "MAX")]


@op("AveragePool")
def _avgpool(ctx, args, attrs, n_out):
    tf = ctx.tf
    x = ctx.t(args[0])
    n, kernel, strides, pads, extra = _pool_geometry(ctx, x, attrs)
    spec = [[0, 0], [0, 0]] + [[lo, hi + e] for (lo, hi), e in zip(pads, extra)]
    if not any(any(p) for p in spec):
        return [_pool(ctx, x, kernel, strides, n, "AVG")]
    xp = tf.pad(x, spec)
    ksize = float(np.prod(kernel))
    summed = _pool(ctx, xp, kernel, strides, n, "AVG") * tf.cast(ksize, x.dtype)
    # divisor: cells of the input (and of the explicit pads when count_include_pad), never ceil overhang
    spatial = ctx.shape(x)[2:]
    if attrs.get("count_include_pad", 0):
        mask = np.pad(np.ones(spatial, np.float32), [(lo, hi) for lo, hi in pads])
        mask = np.pad(mask, [(0, e) for e in extra])
    else:
        mask = np.pad(np.ones(spatial, np.float32), [(lo, hi + e) for (lo, hi), e in zip(pads, extra)])
    counts = _pool(ctx, tf.constant(mask[None, None]), kernel, strides, n, "AVG") * ksize
    return [summed / tf.cast(counts, x.dtype)]


@op("GlobalAveragePool")
def _gap(ctx, args, attrs, n_out):
    x = ctx.t(args[0])
    return [ctx.tf.reduce_mean(x, axis=list(range(2, len(ctx.shape(x)))), keepdims=True)]


@op("GlobalMaxPool")
def _gmp(ctx, args, attrs, n_out):
    x = ctx.t(args[0])
    return [ctx.tf.reduce_max(x, axis=list(range(2, len(ctx.shape(x)))), keepdims=True)]


# ---- quantization: QDQ as defined by ONNX, integer ops in int32

def _q_bcast(ctx, v, x_rank: int, axis: int):
    """Per-tensor (scalar) or per-axis (1-D) scale/zero point, shaped to broadcast on ``x``."""
    if v is None:
        return None
    shape = ctx.shape(v)
    if len(shape) == 0 or (len(shape) == 1 and shape[0] == 1):
        return ctx.tf.reshape(ctx.t(v), [])
    if len(shape) == 1:
        target = [1] * x_rank
        target[axis % x_rank] = shape[0]
        return ctx.tf.reshape(ctx.t(v), target)
    raise UnsupportedCase("TensorFlow runtime: blocked quantization (block_size) is not supported")


def _quantize(ctx, x, scale, zp, out_dtype):
    """saturate(round_half_even(x / scale) + zp) in ``out_dtype`` (an integer TF dtype)."""
    tf = ctx.tf
    xf = tf.cast(x, tf.float32)
    q = tf.round(xf / tf.cast(scale, tf.float32))
    if zp is not None:
        q = q + tf.cast(zp, tf.float32)
    return tf.cast(tf.clip_by_value(q, float(out_dtype.min), float(out_dtype.max)), out_dtype)


@op("QuantizeLinear")
def _quantize_linear(ctx, args, attrs, n_out):
    tf = ctx.tf
    x = ctx.t(args[0])
    rank = len(ctx.shape(x))
    axis = attrs.get("axis", 1)
    zp_raw = args[2] if len(args) > 2 else None
    out_dtype = tf.uint8 if zp_raw is None else (tf.as_dtype(np.asarray(zp_raw).dtype) if _is_const(zp_raw)
                                                 else zp_raw.dtype)
    if out_dtype not in (tf.uint8, tf.int8, tf.uint16, tf.int16, tf.int32):
        raise UnsupportedCase(f"TensorFlow runtime: QuantizeLinear to {out_dtype.name}")
    scale = _q_bcast(ctx, args[1], rank, axis)
    zp = _q_bcast(ctx, zp_raw, rank, axis)
    return [_quantize(ctx, x, scale, zp, out_dtype)]


@op("DequantizeLinear")
def _dequantize_linear(ctx, args, attrs, n_out):
    tf = ctx.tf
    x = ctx.t(args[0])
    rank = len(ctx.shape(x))
    axis = attrs.get("axis", 1)
    scale = _q_bcast(ctx, args[1], rank, axis)
    zp = _q_bcast(ctx, args[2] if len(args) > 2 else None, rank, axis)
    xf = tf.cast(x, tf.float32)
    if zp is not None:
        xf = xf - tf.cast(zp, tf.float32)
    return [tf.cast(xf * tf.cast(scale, tf.float32), scale.dtype)]


@op("DynamicQuantizeLinear")
def _dynamic_quantize_linear(ctx, args, attrs, n_out):
    tf = ctx.tf
    x = tf.cast(ctx.t(args[0]), tf.float32)
    lo = tf.minimum(tf.reduce_min(x), 0.0)
    hi = tf.maximum(tf.reduce_max(x), 0.0)
    scale = (hi - lo) / 255.0
    zp = tf.clip_by_value(tf.round(-lo / scale), 0.0, 255.0)
    zp = tf.where(scale > 0, zp, 0.0)
    q = tf.clip_by_value(tf.round(tf.math.divide_no_nan(x, scale)) + zp, 0.0, 255.0)
    return [tf.cast(q, tf.uint8), scale, tf.cast(zp, tf.uint8)]


def _centered_int32(ctx, v, zp, zp_axis: int | None = None):
    tf = ctx.tf
    v = tf.cast(ctx.t(v), tf.int32)
    if zp is None:
        return v
    z = tf.cast(ctx.t(zp), tf.int32)
    if len(z.shape) == 1 and z.shape[0] != 1 and zp_axis is not None:
        shape = [1] * len(v.shape)
        shape[zp_axis] = z.shape[0]
        z = tf.reshape(z, shape)
    else:
        z = tf.reshape(z, []) if len(z.shape) else z
    return v - z


@op("MatMulInteger")
def _matmul_integer(ctx, args, attrs, n_out):
    a = _centered_int32(ctx, args[0], args[2] if len(args) > 2 else None, zp_axis=-2)
    b = _centered_int32(ctx, args[1], args[3] if len(args) > 3 else None, zp_axis=-1)
    return [_matmul(ctx.tf, a, b)]


def _conv_int32(ctx, x, w, attrs):
    """Integer convolution with int32 accumulation (XLA: int32 conv, exact; plain TF on CPU has no
    integer conv kernel, so it runs in float64 there, still exact for int8 inputs)."""
    tf = ctx.tf
    if ctx.jit:
        return _conv(ctx, x, w, attrs)
    y = _conv(ctx, tf.cast(x, tf.float64), tf.cast(w, tf.float64), attrs)
    return tf.cast(tf.round(y), tf.int32)


@op("ConvInteger")
def _conv_integer(ctx, args, attrs, n_out):
    x = _centered_int32(ctx, args[0], args[2] if len(args) > 2 else None)
    w = _centered_int32(ctx, args[1], args[3] if len(args) > 3 else None, zp_axis=0)
    return [_conv_int32(ctx, x, w, attrs)]


def _requantize(ctx, acc, multiplier, y_zp, out_dtype):
    tf = ctx.tf
    q = tf.round(tf.cast(acc, tf.float32) * multiplier)
    if y_zp is not None:
        q = q + tf.cast(y_zp, tf.float32)
    return tf.cast(tf.clip_by_value(q, float(out_dtype.min), float(out_dtype.max)), out_dtype)


@op("QLinearMatMul")
def _qlinear_matmul(ctx, args, attrs, n_out):
    tf = ctx.tf
    a_q, a_s, a_zp, b_q, b_s, b_zp, y_s, y_zp = args
    a = _centered_int32(ctx, a_q, a_zp, zp_axis=-2)
    b = _centered_int32(ctx, b_q, b_zp, zp_axis=-1)
    acc = _matmul(tf, a, b)
    mult = tf.cast(ctx.t(a_s), tf.float32) * tf.cast(ctx.t(b_s), tf.float32) / tf.cast(ctx.t(y_s), tf.float32)
    out_dtype = tf.as_dtype(np.asarray(y_zp).dtype) if _is_const(y_zp) else y_zp.dtype
    return [_requantize(ctx, acc, mult, y_zp, out_dtype)]


@op("QLinearConv")
def _qlinear_conv(ctx, args, attrs, n_out):
    tf = ctx.tf
    x_q, x_s, x_zp, w_q, w_s, w_zp, y_s, y_zp = args[:8]
    bias = args[8] if len(args) > 8 else None
    x = _centered_int32(ctx, x_q, x_zp)
    w = _centered_int32(ctx, w_q, w_zp, zp_axis=0)
    acc = _conv_int32(ctx, x, w, attrs)
    m = ctx.shape(w)[0]
    cshape = _channel_shape(len(ctx.shape(acc)), m)
    if bias is not None:
        acc = acc + tf.reshape(tf.cast(ctx.t(bias), tf.int32), cshape)
    ws = tf.cast(ctx.t(w_s), tf.float32)
    if len(ws.shape) == 1 and ws.shape[0] != 1:
        ws = tf.reshape(ws, cshape)
    else:
        ws = tf.reshape(ws, [])
    mult = tf.reshape(tf.cast(ctx.t(x_s), tf.float32), []) * ws / tf.reshape(tf.cast(ctx.t(y_s), tf.float32), [])
    out_dtype = tf.as_dtype(np.asarray(y_zp).dtype) if _is_const(y_zp) else y_zp.dtype
    return [_requantize(ctx, acc, mult, y_zp, out_dtype)]


@op("com.microsoft.MatMulIntegerToFloat")
def _matmul_integer_to_float(ctx, args, attrs, n_out):
    tf = ctx.tf
    a_q, b_q, a_s, b_s = args[:4]
    a_zp = args[4] if len(args) > 4 else None
    b_zp = args[5] if len(args) > 5 else None
    bias = args[6] if len(args) > 6 else None
    acc = _matmul(tf, _centered_int32(ctx, a_q, a_zp, -2), _centered_int32(ctx, b_q, b_zp, -1))
    y = tf.cast(acc, tf.float32) * (tf.cast(ctx.t(a_s), tf.float32) * tf.cast(ctx.t(b_s), tf.float32))
    if bias is not None:
        y = y + tf.cast(ctx.t(bias), tf.float32)
    return [y]


@op("com.microsoft.DynamicQuantizeMatMul")
def _dynamic_quantize_matmul(ctx, args, attrs, n_out):
    tf = ctx.tf
    a, b_q, b_s = args[:3]
    b_zp = args[3] if len(args) > 3 else None
    bias = args[4] if len(args) > 4 else None
    a_q, a_s, a_zp = _dynamic_quantize_linear(ctx, [a], {}, 3)
    acc = _matmul(tf, _centered_int32(ctx, a_q, a_zp, -2), _centered_int32(ctx, b_q, b_zp, -1))
    y = tf.cast(acc, tf.float32) * (a_s * tf.cast(ctx.t(b_s), tf.float32))
    if bias is not None:
        y = y + tf.cast(ctx.t(bias), tf.float32)
    return [y]


# ---- onnxruntime's QOperator contrib ops (quantize_static(quant_format=QOperator)):
#      dequantize -> the float op -> quantize, which is their definition

def _dq(ctx, x, scale, zp):
    return _dequantize_linear(ctx, [x, scale, zp], {}, 1)[0]


def _q_like(ctx, y, scale, zp):
    tf = ctx.tf
    out_dtype = tf.uint8 if zp is None else (tf.as_dtype(np.asarray(zp).dtype) if _is_const(zp) else zp.dtype)
    return _quantize(ctx, y, ctx.tf.reshape(ctx.t(scale), []), None if zp is None else
                     ctx.tf.reshape(ctx.t(zp), []), out_dtype)


def _qlinear_binary(float_op):
    def impl(ctx, args, attrs, n_out):
        a, a_s, a_zp, b, b_s, b_zp, y_s = args[:7]
        y_zp = args[7] if len(args) > 7 else None
        y = float_op(ctx.tf, _dq(ctx, a, a_s, a_zp), _dq(ctx, b, b_s, b_zp))
        return [_q_like(ctx, y, y_s, y_zp)]
    return impl


op("com.microsoft.QLinearAdd")(_qlinear_binary(lambda tf, a, b: a + b))
op("com.microsoft.QLinearMul")(_qlinear_binary(lambda tf, a, b: a * b))


def _qlinear_unary(float_op):
    def impl(ctx, args, attrs, n_out):
        x, x_s, x_zp, y_s = args[:4]
        y_zp = args[4] if len(args) > 4 else None
        if attrs.get("channels_last", 0):
            raise UnsupportedCase("TensorFlow runtime: channels_last QLinear pooling")
        y = float_op(ctx, _dq(ctx, x, x_s, x_zp), attrs)
        return [_q_like(ctx, y, y_s, y_zp)]
    return impl


op("com.microsoft.QLinearGlobalAveragePool")(_qlinear_unary(lambda ctx, x, a: _gap(ctx, [x], a, 1)[0]))
op("com.microsoft.QLinearAveragePool")(_qlinear_unary(lambda ctx, x, a: _avgpool(ctx, [x], a, 1)[0]))
op("com.microsoft.QLinearSigmoid")(_qlinear_unary(lambda ctx, x, a: ctx.tf.sigmoid(x)))
op("com.microsoft.QLinearLeakyRelu")(_qlinear_unary(
    lambda ctx, x, a: ctx.tf.nn.leaky_relu(x, alpha=a.get("alpha", 0.01))))
op("com.microsoft.QLinearSoftmax")(_qlinear_unary(lambda ctx, x, a: ctx.tf.nn.softmax(
    x, axis=a.get("axis", -1) if a.get("opset", 13) >= 13 else a.get("axis", 1))))


@op("com.microsoft.QLinearConcat")
def _qlinear_concat(ctx, args, attrs, n_out):
    y_s, y_zp = args[0], args[1]
    parts = [_dq(ctx, args[i], args[i + 1], args[i + 2]) for i in range(2, len(args), 3)]
    return [_q_like(ctx, ctx.tf.concat(parts, axis=attrs["axis"]), y_s, y_zp)]


@op("com.microsoft.QGemm")
def _qgemm(ctx, args, attrs, n_out):
    """Integer Gemm: int32 accumulation, C is an int32 bias at scale a_s*b_s; float output when no y_scale."""
    tf = ctx.tf
    a_q, a_s, a_zp, b_q, b_s, b_zp = args[:6]
    c = args[6] if len(args) > 6 else None
    y_s = args[7] if len(args) > 7 else None
    y_zp = args[8] if len(args) > 8 else None
    ta, tb = bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0))
    a = _centered_int32(ctx, a_q, a_zp)
    b = _centered_int32(ctx, b_q, b_zp, zp_axis=0 if tb else -1)
    acc = tf.linalg.matmul(a, b, transpose_a=ta, transpose_b=tb)
    if c is not None:
        acc = acc + tf.cast(ctx.t(c), tf.int32)
    scale = tf.reshape(tf.cast(ctx.t(a_s), tf.float32), []) * tf.cast(ctx.t(b_s), tf.float32)
    y = tf.cast(acc, tf.float32) * scale * attrs.get("alpha", 1.0)
    if y_s is None:
        return [y]
    return [_q_like(ctx, y, y_s, y_zp)]


def supported_ops() -> list[str]:
    return sorted(OPS)


# ----------------------------------------------------------------------------- model sources

class LoadedModel:
    """A callable ``fn(*inputs) -> list[tensor]`` to be compiled, with what it is."""

    def __init__(self, fn: Callable, *, source: str, input_names: Sequence[str], info: dict,
                 keepalive: Any = None):
        self.fn = fn
        self.source = source
        self.input_names = list(input_names)
        self.info = info
        self.keepalive = keepalive


def _resolve_compute_dtype(precision: str, float_kinds: set[str]) -> tuple[str | None, str]:
    """(compute dtype to cast to or None, how the precision is realised) for a float graph."""
    want = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision]
    if want in float_kinds:
        return None, f"graph is {want}"
    if "float32" in float_kinds and want != "float32":
        return want, f"fp32 graph cast to {want} at load (weights, constants and inputs; a cast policy)"
    raise UnsupportedCase(f"TensorFlow runtime: the graph holds {sorted(float_kinds) or 'no float'} tensors, "
                          f"not {want}")


def load_onnx(path, *, tf, precision: str, jit: bool, compute_dtype: str | None = None) -> LoadedModel:
    """The ONNX->TF interpreter for an artifact's graph, checked against the case's precision."""
    import onnx

    model = onnx.load(str(path))
    graph = _Graph(model)
    quant = graph.quantization()
    how = None
    if precision in ("int8", "int4"):
        if quant is None:
            raise UnsupportedCase(f"TensorFlow runtime: the case is {precision} but the graph has no quantized "
                                  "ops; refusing to run it as float")
        if precision == "int4":
            raise UnsupportedCase("TensorFlow runtime: no int4 path")
    elif precision in ("fp32", "fp16", "bf16"):
        if compute_dtype is None:
            compute_dtype, how = _resolve_compute_dtype(precision, graph.float_dtypes())
        else:
            how = f"{compute_dtype} compute policy (weights, constants and inputs cast at load)"
    else:
        raise UnsupportedCase(f"TensorFlow runtime: no {precision} path")
    conv = OnnxToTF(model, tf=tf, compute_dtype=compute_dtype, jit=jit)
    info = {"model_source": "onnx", "converter": "bench ONNX->TF interpreter (backends/tf_runtime.py)",
            "onnx_opset": graph.onnx_opset, "onnx_ops": dict(sorted(graph.op_counts.items())),
            "compute_dtype": compute_dtype, "precision_mode": how, "quantization": quant,
            "variables": len(conv.variables),
            "outputs": "low-precision float outputs cast to float32 on device"}
    return LoadedModel(conv, source="onnx", input_names=conv.input_names, info=info, keepalive=conv)


def load_tf_model(path, *, tf, input_names: Sequence[str]) -> LoadedModel:
    """A user's SavedModel directory or ``.keras`` / ``.h5`` file as a callable."""
    p = Path(path)
    if not p.exists():
        raise UnsupportedCase(f"TensorFlow runtime: model {p} does not exist")
    if p.is_file() and p.suffix in (".keras", ".h5"):
        import keras

        model = keras.models.load_model(str(p), compile=False)

        def fn(*xs):
            out = model(xs[0] if len(xs) == 1 else list(xs), training=False)
            return list(out) if isinstance(out, (list, tuple)) else [out]

        return LoadedModel(fn, source="keras", input_names=input_names, keepalive=model,
                           info={"model_source": "keras", "path": str(p), "keras_version": keras.__version__})
    if p.is_dir() and (p / "saved_model.pb").exists():
        loaded = tf.saved_model.load(str(p))
        sig = getattr(loaded, "signatures", {}).get("serving_default") if hasattr(loaded, "signatures") else None
        if sig is not None:
            arg_names = [k for k in sig.structured_input_signature[1]]
            out_keys = sorted(sig.structured_outputs)

            def fn(*xs):
                if len(arg_names) != len(xs):
                    raise UnsupportedCase(f"SavedModel signature takes {arg_names}, the artifact feeds "
                                          f"{len(xs)} input(s)")
                kwargs = ({n: x for n, x in zip(input_names, xs)} if set(arg_names) == set(input_names)
                          else dict(zip(sorted(arg_names), xs)))
                out = sig(**kwargs)
                return [out[k] for k in out_keys]

            how = "serving_default signature"
        elif callable(loaded):
            def fn(*xs):
                out = loaded(*xs)
                return list(out) if isinstance(out, (list, tuple)) else [out]
            how = "__call__"
        else:
            raise UnsupportedCase(f"TensorFlow runtime: SavedModel {p} has no serving_default signature "
                                  "and is not callable")
        return LoadedModel(fn, source="saved_model", input_names=input_names, keepalive=loaded,
                           info={"model_source": "saved_model", "path": str(p), "entry": how})
    raise UnsupportedCase(f"TensorFlow runtime: {p} is neither a SavedModel directory nor a .keras/.h5 file")


def export_saved_model(onnx_path, out_dir, *, batch: int | None = None) -> Path:
    """Write the ONNX graph, converted, as a SavedModel (a ``serving_default`` signature).

    For users who want the zoo model in TensorFlow; also how the SavedModel path is tested.
    """
    tf = import_tf()
    conv = OnnxToTF(onnx_path, tf=tf, jit=False)
    module = tf.Module()
    module.weights_ = list(conv.variables.values())
    specs = []
    for inp, dt in zip(conv.graph.inputs, conv.input_dtypes):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
        if dims and batch is not None:
            dims[0] = batch
        specs.append(tf.TensorSpec(dims, tf.as_dtype(dt), name=inp.name))

    names = conv.output_names

    @tf.function(input_signature=specs, autograph=False)
    def serve(*xs):
        return {n: y for n, y in zip(names, conv(*xs))}

    module.serve = serve
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": serve})
    return Path(out_dir)


# ----------------------------------------------------------------------------- the session

class TFSession(Session):
    """A compiled TF function over host numpy inputs; outputs fetched to host numpy.

    ``strategy`` (a ``tf.distribute`` strategy, the TPU's) replicates the batch over
    ``strategy.num_replicas_in_sync`` replicas; ``steps_per_execution`` k splits one
    query's batch into k device steps run inside one compiled loop (one host round trip
    for k steps). ``device``: where the unreplicated function runs (``/CPU:0``, ``/TPU:0``).
    """

    def __init__(self, loaded: LoadedModel, *, tf, batch: int, jit: bool = True, strategy=None,
                 steps_per_execution: int = 1, device: str | None = None, info: Mapping[str, Any] | None = None):
        super().__init__()
        self._tf = tf
        self._loaded = loaded
        self._names = loaded.input_names
        self._batch = batch
        self._strategy = strategy
        self._device = device
        k = int(steps_per_execution)
        replicas = int(getattr(strategy, "num_replicas_in_sync", 1)) if strategy is not None else 1
        if k < 1:
            raise UnsupportedCase(f"steps_per_execution must be >= 1, got {k}")
        if batch % (k * replicas):
            raise UnsupportedCase(f"batch {batch} is not divisible by steps_per_execution ({k}) x replicas "
                                  f"({replicas})")
        self._k = k
        self._replicas = replicas
        step = loaded.fn
        if k > 1:
            step = self._looped(loaded.fn, k)
        if strategy is not None:
            # On a TPU the replicated computation is always compiled by XLA; jit_compile is not set on
            # the outer function (strategy.run inside it is compiled through TPUStrategy).
            def replicated(*xs):
                return strategy.run(step, args=xs)
            self._fn = tf.function(replicated, autograph=False)
        else:
            # autograph off: the interpreter is plain Python that runs while tracing, not control flow
            self._fn = tf.function(step, jit_compile=bool(jit), autograph=False)
        self._calls = 0
        self._first: dict[str, Any] = {}
        self._concrete = None
        self._signature: list | None = None
        threads = thread_info(tf)
        self._thread_keys = tuple(threads)  # what report() gives as the thread settings in force
        self.info = {
            "runtime": "tensorflow", "tensorflow_version": tf.__version__,
            "jit_compile": bool(jit) if strategy is None else "always (TPU)",
            "device": device or ("replicated" if strategy is not None else "default"),
            "replicas": replicas, "steps_per_execution": k, **threads, **loaded.info, **(info or {}),
        }

    def _looped(self, fn, k):
        tf = self._tf

        def looped_sig(*xs):
            # map_fn needs the output structure: trace one step abstractly first
            split = [tf.reshape(x, [k, -1] + list(x.shape[1:])) for x in xs]
            elems = tuple(split)
            probe = fn(*[s[0] for s in split])
            sig = tuple(tf.TensorSpec(p.shape, p.dtype) for p in probe)
            outs = tf.map_fn(lambda s: tuple(fn(*s)), elems, fn_output_signature=sig, parallel_iterations=1)
            return [tf.reshape(o, [-1] + list(o.shape[2:])) for o in outs]

        return looped_sig

    def _distribute(self, arrays):
        strategy = self._strategy
        per = self._batch // self._replicas

        tf = self._tf

        def value_fn(ctx):  # each replica's shard of the query, as a tensor for that replica
            i = ctx.replica_id_in_sync_group
            return tuple(tf.convert_to_tensor(a[i * per:(i + 1) * per]) for a in arrays)

        return strategy.experimental_distribute_values_from_function(value_fn)

    def _call(self, arrays):
        if self._strategy is not None:
            dist = self._distribute(arrays)
            out = self._fn(*dist) if isinstance(dist, (tuple, list)) else self._fn(dist)
            out = out if isinstance(out, (list, tuple)) else [out]
            results = []
            for o in out:
                parts = self._strategy.experimental_local_results(o)
                results.append(np.concatenate([np.asarray(p) for p in parts], axis=0))
            return results
        # the traced concrete function, called directly: it skips tf.function's per-call argument
        # matching (measured: ~40 % of the per-call overhead on a small model); another shape retraces
        fn = self._concrete if self._signature == [(a.shape, a.dtype) for a in arrays] else self._fn
        if self._device:
            with self._tf.device(self._device):
                outs = fn(*arrays)
        else:
            outs = fn(*arrays)
        return [o.numpy() for o in outs]

    def run(self, inputs):
        arrays = [inputs[n] for n in self._names] if set(self._names) <= set(inputs) else list(inputs.values())
        if self._calls == 0:
            self._calls = 1
            return self._first_call(arrays)
        self._calls += 1
        return self._call(arrays)

    def _first_call(self, arrays):
        """Trace, compile and run once, timing the trace apart (the harness times the whole call)."""
        tf = self._tf
        t0 = time.perf_counter_ns()
        if self._strategy is None:
            specs = [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype)) for a in arrays]
            if self._device:
                with tf.device(self._device):
                    self._concrete = self._fn.get_concrete_function(*specs)
            else:
                self._concrete = self._fn.get_concrete_function(*specs)
            self._signature = [(a.shape, a.dtype) for a in arrays]
        t1 = time.perf_counter_ns()
        outs = self._call(arrays)
        t2 = time.perf_counter_ns()
        self._first = {"trace_ns": t1 - t0 if self._strategy is None else None,
                       "compile_and_run_ns": t2 - t1 if self._strategy is None else None,
                       "first_call_ns": t2 - t0}
        return outs

    def energy_meter(self):
        """RAPL on the host CPU (as the cpu backend's other runtimes); no counter for a TPU."""
        if self._strategy is None and (self._device or "").upper().endswith(("CPU:0", "CPU")):
            from harness.measure.energy import RaplMeter

            return RaplMeter()
        return None

    def timings(self):
        if getattr(self, "_summary", None) is not None:
            return self._summary
        tracing = None
        try:
            tracing = int(self._fn.experimental_get_tracing_count())
        except Exception:
            pass
        return {"first_call": self._first, "tracing_count": tracing, "calls": self._calls,
                "note": "first call = trace + XLA compile + run; later calls reuse the compiled program"
                        + ("" if tracing in (None, 1) else "; retraced: input shapes changed between calls")}

    def report(self) -> SessionReport:
        return SessionReport(timings=self.timings(), info=self.info,
                             threads={k: self.info[k] for k in self._thread_keys if k in self.info})

    def close(self):
        self._summary = self.timings()  # the harness reads timings() after close()
        self._fn = None
        self._loaded = None


def prepare(artifact, *, precision: str, batch: int, threads: int, options: Mapping[str, Any] | None = None,
            strategy=None, device: str | None = None, tf=None, compute_dtype: str | None = None,
            extra_info: Mapping[str, Any] | None = None) -> TFSession:
    """Build the TF session of a case (CPU here; the TPU backend passes its strategy)."""
    options = dict(options or {})
    tf = tf or import_tf(threads)
    jit = bool(int(options.get("jit_compile", 1)))
    k = int(options.get("steps_per_execution", 1))
    tf_model = options.get("tf_model") or (artifact.meta.get("tensorflow") or {}).get("path")
    input_names = [i["name"] for i in artifact.inputs]

    def build():
        if tf_model:
            p = Path(tf_model)
            if not p.is_absolute() and (artifact.dir / p).exists():
                p = artifact.dir / p
            if precision not in ("fp32", "fp16", "bf16"):
                raise UnsupportedCase(f"TensorFlow runtime: a user TF model at {precision} has no defined path "
                                      "here (quantize it in TF and run it as fp32/fp16/bf16)")
            policy = None
            if precision in ("fp16", "bf16"):
                import keras

                policy = "mixed_bfloat16" if precision == "bf16" else "mixed_float16"
                keras.mixed_precision.set_global_policy(policy)  # applies to Keras layers built at load
            loaded = load_tf_model(p, tf=tf, input_names=input_names)
            loaded.info["keras_policy"] = policy
            if policy and loaded.source != "keras":
                raise UnsupportedCase(f"TensorFlow runtime: {precision} for a SavedModel needs the model saved in "
                                      f"{precision}; bench casts Keras models only (mixed precision policy)")
            return loaded
        return load_onnx(artifact.onnx_path, tf=tf, precision=precision, jit=jit, compute_dtype=compute_dtype)

    if strategy is not None:
        scope = strategy.scope()  # variables are created on (and mirrored over) the replicas
    elif device:
        scope = tf.device(device)  # variables live where the function runs
    else:
        scope = contextlib.nullcontext()
    with scope:
        loaded = build()
    return TFSession(loaded, tf=tf, batch=batch, jit=jit, strategy=strategy, steps_per_execution=k,
                     device=device, info={"keras_version": _keras_version(), **(extra_info or {})})


def _keras_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("keras")
    except metadata.PackageNotFoundError:
        return None
