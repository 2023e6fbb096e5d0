"""Bit-accurate emulation of an ONNX graph as an FPGA design would compute it.

Two numeric modes, chosen from the artifact's precision:

``fixed`` (fp32 / pruned variants)
    Every activation is a :class:`~backends.fpga.fixed.FixedTensor` of the data type (default
    ``ap_fixed<16,6>``): the graph input is converted to it, weights to the weight type, biases to
    the bias type. Gemm / MatMul / Conv compute the exact sum of mantissa products plus the bias
    (hls4ml's ``dense_latency``: products -> accumulator -> result), then convert to the result
    type. With the default accumulator (``auto``, hls4ml's inferred accumulator) nothing rounds or
    overflows before that final conversion; an explicit ``accum_precision`` quantizes each product
    to the accumulator and applies its overflow mode after every addition, in input order, as the
    HLS code does. ReLU / Clip / MaxPool are exact on mantissas; Add aligns and sums exactly;
    AveragePool divides exactly and rounds once; BatchNormalization that follows a Conv/Gemm is
    folded into its weights first (as hls4ml does), a free-standing one is a fixed-point scale and
    shift. Sigmoid, Tanh and Softmax are evaluated in float on the fixed-point input and the result
    is converted to the result type (hls4ml uses lookup tables there: a documented approximation).

``int`` (int8 variants)
    QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear follow the ONNX definitions
    (round half to even, saturate). A Gemm / MatMul / Conv whose operands come out of
    DequantizeLinear (the QDQ format) and MatMulInteger / ConvInteger / QLinearMatMul / QLinearConv
    run as exact integer multiply-accumulates ((q - zero point) products summed in int64, checked
    against the int32 accumulator); the float rescaling that follows is done in float as ONNX
    Runtime's reference kernels do (an FPGA would use a fixed-point multiplier there).

Shape bookkeeping ops (Shape, Gather, Concat, Reshape, ...) on constant integer tensors run in
numpy. Any other op raises :class:`UnsupportedOp`, which names it.

:meth:`Emulator.trace` runs the graph on one sample and returns the layers with what the
estimator needs (shapes, weight mantissas, bit widths); ``shape_only=True`` skips the
multiply-accumulates so large models are traced in milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends.fpga.fixed import FixedTensor, FixedType, auto_accum_type, parse_precision, quantize_ratio, requantize

FIXED_OPS = {
    "Gemm", "MatMul", "Conv", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Softmax", "Add", "Sub", "Mul", "Div",
    "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
    "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Concat", "Pad", "Constant", "Shape", "Gather",
    "Cast", "Slice", "ConstantOfShape",
}
INT_OPS = FIXED_OPS | {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                       "QLinearMatMul", "QLinearConv"}
MAC_OPS = {"Gemm", "MatMul", "Conv", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv"}


class UnsupportedOp(Exception):
    """The graph holds an op (or an op configuration) the simulator cannot emulate."""


@dataclass
class EmulatorConfig:
    mode: str = "fixed"  # "fixed" | "int"
    data: FixedType = field(default_factory=lambda: parse_precision("ap_fixed<16,6>"))
    weight: FixedType | None = None  # default: data
    bias: FixedType | None = None  # default: data
    accum: FixedType | None = None  # None: auto (exact) accumulator
    softmax: FixedType | None = None  # default: data
    output: FixedType | None = None  # graph outputs: None keeps the exact value of the last layer

    def __post_init__(self):
        self.weight = self.weight or self.data
        self.bias = self.bias or self.data
        self.softmax = self.softmax or self.data

    def describe(self) -> dict:
        if self.mode == "int":
            return {"mode": "int", "arithmetic": "int8 x int8 -> int32 multiply-accumulate (QDQ graph)"}
        return {"mode": "fixed", "data": self.data.name, "weight": self.weight.name, "bias": self.bias.name,
                "accum": "auto" if self.accum is None else self.accum.name, "softmax": self.softmax.name,
                "output": "exact (last layer's accumulator)" if self.output is None else self.output.name}


@dataclass
class DQ:
    """A DequantizeLinear output kept as integers: value = (q - zp) * scale (scale/zp per ``axis``)."""

    q: np.ndarray
    scale: np.ndarray
    zp: np.ndarray
    axis: int = 1

    def centered(self) -> np.ndarray:
        return self.q.astype(np.int64) - _bcast(self.zp, self.axis, self.q.ndim).astype(np.int64)

    def to_float(self) -> np.ndarray:
        return (self.centered().astype(np.float32) * _bcast(self.scale, self.axis, self.q.ndim)).astype(np.float32)

    @property
    def shape(self):
        return self.q.shape


@dataclass
class Layer:
    """One traced layer: what the estimator needs to know about it."""

    name: str
    op: str
    kind: str  # dense | conv | dwconv | act | softmax | pool | add | scale | other
    out_shape: tuple  # per sample (batch dim dropped)
    in_shape: tuple
    vectors: int = 1  # output vectors (pixels / tokens) per inference
    n_in: int = 0  # inputs per output (MAC layers)
    n_out: int = 0  # outputs per vector (MAC layers: output channels)
    groups: int = 1
    kernel: tuple = ()
    weights: np.ndarray | None = None  # integer weight values (mantissas / centered int8)
    x_bits: int = 0
    w_bits: int = 0
    acc_bits: int = 0
    out_bits: int = 0
    macs: int = 0
    attrs: dict = field(default_factory=dict)

    @property
    def n_weights(self) -> int:
        return 0 if self.weights is None else int(self.weights.size)


def _bcast(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = v.size
    return v.reshape(shape)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _dec(v):
    return v.decode() if isinstance(v, bytes) else v


# ---------------------------------------------------------------------- exact integer sums

def _exact_float_ok(a_bits: int, b_bits: int, n: int) -> bool:
    """Whether float64 sums of ``n`` products of such integers are exact (< 2**53)."""
    return a_bits + b_bits + int(np.ceil(np.log2(max(n, 2)))) <= 52


def _bits(m: np.ndarray) -> int:
    if m.size == 0:
        return 1
    mx = int(np.abs(m).max())
    return mx.bit_length() + 1


def _int_matmul(a: np.ndarray, b: np.ndarray, b_bits: int | None = None, b_f64: np.ndarray | None = None) -> np.ndarray:
    """Exact ``a @ b`` of integer arrays (float64 BLAS when provably exact, else int64)."""
    n = a.shape[-1]
    a_bits = _bits(a)
    b_bits = _bits(b) if b_bits is None else b_bits
    if _exact_float_ok(a_bits, b_bits, n):
        bf = b.astype(np.float64) if b_f64 is None else b_f64
        return np.rint(np.matmul(a.astype(np.float64), bf)).astype(np.int64)
    if a_bits + b_bits + int(np.ceil(np.log2(max(n, 2)))) > 62:
        raise OverflowError("integer products too wide for exact emulation")
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


def _im2col(x: np.ndarray, kh: int, kw: int, strides, dilations, pads, pad_value=0) -> tuple[np.ndarray, int, int]:
    """(N, C, H, W) -> (N, OH, OW, C, kh, kw) patches (a view where possible)."""
    n, c, h, w = x.shape
    pt, pl, pb, pr = pads
    if any(pads):
        x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    sh, sw = strides
    dh, dw = dilations
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (eh, ew), axis=(2, 3))  # N,C,OH',OW',eh,ew
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]
    oh, ow = win.shape[2], win.shape[3]
    return win.transpose(0, 2, 3, 1, 4, 5), oh, ow


def _conv_pads(attrs: dict, h: int, w: int, kh: int, kw: int, strides, dilations) -> tuple:
    auto = _dec(attrs.get("auto_pad", "NOTSET"))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for size, k, s, d in ((h, kh, strides[0], dilations[0]), (w, kw, strides[1], dilations[1])):
            o = -(-size // s)
            total = max(0, (o - 1) * s + (k - 1) * d + 1 - size)
            out.append(total)
        (th, tw) = out
        if auto == "SAME_UPPER":
            return th // 2, tw // 2, th - th // 2, tw - tw // 2
        return th - th // 2, tw - tw // 2, th // 2, tw // 2
    if auto == "VALID":
        return 0, 0, 0, 0
    p = list(attrs.get("pads", [0, 0, 0, 0]))
    return p[0], p[1], p[2], p[3]


def _conv_out_hw(x_shape, w_shape, attrs: dict) -> tuple[int, int]:
    if len(x_shape) != 4:
        raise UnsupportedOp(f"Conv with {len(x_shape) - 2} spatial dims (only 2-D convolutions are emulated)")
    kh, kw = w_shape[2], w_shape[3]
    strides = tuple(attrs.get("strides", [1, 1]))
    dilations = tuple(attrs.get("dilations", [1, 1]))
    pt, pl, pb, pr = _conv_pads(attrs, x_shape[2], x_shape[3], kh, kw, strides, dilations)
    oh = (x_shape[2] + pt + pb - ((kh - 1) * dilations[0] + 1)) // strides[0] + 1
    ow = (x_shape[3] + pl + pr - ((kw - 1) * dilations[1] + 1)) // strides[1] + 1
    return oh, ow


def _int_conv(x: np.ndarray, w: np.ndarray, attrs: dict, pad_value=0) -> np.ndarray:
    """Exact integer 2-D convolution (N, C, H, W) x (M, C/g, kh, kw) -> (N, M, OH, OW)."""
    if x.ndim != 4:
        raise UnsupportedOp(f"Conv with {x.ndim - 2} spatial dims (only 2-D convolutions are emulated)")
    m, cg, kh, kw = w.shape
    strides = tuple(attrs.get("strides", [1, 1]))
    dilations = tuple(attrs.get("dilations", [1, 1]))
    group = int(attrs.get("group", 1))
    pads = _conv_pads(attrs, x.shape[2], x.shape[3], kh, kw, strides, dilations)
    patches, oh, ow = _im2col(x, kh, kw, strides, dilations, pads, pad_value)  # N,OH,OW,C,kh,kw
    n = x.shape[0]
    c = x.shape[1]
    if group == 1:
        cols = patches.reshape(n * oh * ow, c * kh * kw)
        out = _int_matmul(cols, w.reshape(m, -1).T)  # (N*OH*OW, M)
        return out.reshape(n, oh, ow, m).transpose(0, 3, 1, 2)
    mg = m // group
    if cg == 1 and mg == 1:  # depthwise
        p = patches.reshape(n, oh, ow, c, kh * kw).astype(np.int64)
        wk = w.reshape(m, kh * kw).astype(np.int64)
        if _exact_float_ok(_bits(p), _bits(wk), kh * kw):
            out = np.rint(np.einsum("nhwck,ck->nchw", p.astype(np.float64), wk.astype(np.float64))).astype(np.int64)
        else:
            out = np.einsum("nhwck,ck->nchw", p, wk)
        return out
    outs = []
    for g in range(group):
        cols = patches[:, :, :, g * cg:(g + 1) * cg].reshape(n * oh * ow, cg * kh * kw)
        wg = w[g * mg:(g + 1) * mg].reshape(mg, -1).T
        outs.append(_int_matmul(cols, wg).reshape(n, oh, ow, mg))
    return np.concatenate(outs, axis=3).transpose(0, 3, 1, 2)


def _sequential_accumulate(cols: np.ndarray, wmat: np.ndarray, bias_m: np.ndarray | None, prod_frac: int,
                           bias_frac: int, acc: FixedType) -> np.ndarray:
    """hls4ml's dense_latency with an explicit accumulator type: each product is converted to the
    accumulator, the bias too, and every addition is brought back into the accumulator (its
    overflow mode), in input order. cols: (rows, K) mantissas, wmat: (K, M)."""
    rows, k = cols.shape
    m = wmat.shape[1]
    if bias_m is None:
        total = np.zeros((rows, m), dtype=np.int64)
    else:
        total = np.broadcast_to(requantize(bias_m, bias_frac, acc), (rows, m)).astype(np.int64)
    if acc.o_mode == "AP_WRAP" and acc.sat_bits == 0:
        # wrap-around is arithmetic modulo 2**W: summing first and wrapping once is the same
        step = max(1, (1 << 22) // max(1, k * m))
        out = np.empty((rows, m), dtype=np.int64)
        for r0 in range(0, rows, step):
            prod = cols[r0:r0 + step, :, None].astype(np.int64) * wmat[None, :, :].astype(np.int64)
            out[r0:r0 + step] = requantize(prod, prod_frac, acc).sum(axis=1)
        return requantize(total + out, acc.frac, acc)
    for i in range(k):
        prod = cols[:, i:i + 1].astype(np.int64) * wmat[i:i + 1, :].astype(np.int64)
        total = requantize(total + requantize(prod, prod_frac, acc), acc.frac, acc)
    return total


# ---------------------------------------------------------------------- the interpreter

class Emulator:
    def __init__(self, model, config: EmulatorConfig):
        import onnx

        if not isinstance(model, onnx.ModelProto):
            model = onnx.load(str(model))
        else:  # graph surgery below must not touch the caller's model
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            model = copy
        self.model = model
        self.cfg = config
        g = model.graph
        self.inits: dict[str, np.ndarray] = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
        self.nodes = list(g.node)
        self.input_names = [i.name for i in g.input if i.name not in self.inits]
        self.output_names = [o.name for o in g.output]
        self._fold_batchnorm()
        allowed = INT_OPS if config.mode == "int" else FIXED_OPS
        bad = sorted({n.op_type for n in self.nodes if n.op_type not in allowed or n.domain not in ("", "ai.onnx")})
        if bad:
            where = {b: next(n.name or n.output[0] for n in self.nodes if n.op_type == b) for b in bad}
            names = ", ".join(f"{b} (node {where[b]})" for b in bad)
            raise UnsupportedOp(f"the FPGA simulator does not support op {names}"
                                + ("; int8 ops need an int8 variant" if config.mode == "fixed" and
                                   any(b in INT_OPS for b in bad) else ""))
        self._consumers: dict[str, int] = {}
        for n in self.nodes:
            for i in n.input:
                self._consumers[i] = self._consumers.get(i, 0) + 1
        self._wcache: dict[tuple, Any] = {}
        self._plan = [(n, getattr(self, "op_" + n.op_type), _attrs(n)) for n in self.nodes]
        self._trace: list[Layer] | None = None
        self._shape_only = False

    # ------------------------------------------------------------------ graph surgery
    def _fold_batchnorm(self) -> None:
        """Fold BatchNormalization into the Conv/Gemm feeding it (when that is its only consumer)."""
        producers = {o: n for n in self.nodes for o in n.output}
        uses: dict[str, int] = {}
        for n in self.nodes:
            for i in n.input:
                uses[i] = uses.get(i, 0) + 1
        drop = set()
        for bn in self.nodes:
            if bn.op_type != "BatchNormalization" or len(bn.output) > 1 and any(bn.output[1:]):
                continue
            prev = producers.get(bn.input[0])
            if prev is None or prev.op_type not in ("Conv", "Gemm") or uses.get(bn.input[0], 0) != 1:
                continue
            if prev.input[1] not in self.inits or any(p not in self.inits for p in bn.input[1:5]):
                continue
            a = _attrs(prev)
            if prev.op_type == "Gemm" and (a.get("transA", 0) or a.get("alpha", 1.0) != 1.0):
                continue
            eps = _attrs(bn).get("epsilon", 1e-5)
            gamma, beta, mean, var = (self.inits[p].astype(np.float64) for p in bn.input[1:5])
            s = gamma / np.sqrt(var + eps)
            w = self.inits[prev.input[1]].astype(np.float64)
            if prev.op_type == "Conv":
                w = w * s.reshape(-1, *([1] * (w.ndim - 1)))
            else:
                w = w * (s.reshape(-1, 1) if a.get("transB", 0) else s.reshape(1, -1))
            b = self.inits[prev.input[2]].astype(np.float64) if len(prev.input) > 2 and prev.input[2] else 0.0
            if prev.op_type == "Gemm":
                b = b * a.get("beta", 1.0)
            b = (b - mean) * s + beta
            wname, bname = prev.input[1] + "_bnfold", (prev.name or prev.output[0]) + "_bnfold_bias"
            self.inits[wname] = w.astype(np.float32)
            self.inits[bname] = np.asarray(b, dtype=np.float32)
            new_inputs = [prev.input[0], wname, bname]
            del prev.input[:]
            prev.input.extend(new_inputs)
            if prev.op_type == "Gemm":
                for att in list(prev.attribute):
                    if att.name == "beta":
                        prev.attribute.remove(att)
            prev.output[0] = bn.output[0]
            drop.add(id(bn))
        self.nodes = [n for n in self.nodes if id(n) not in drop]

    # ------------------------------------------------------------------ running
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        env = self._execute(feeds)
        outs = []
        for o in self.output_names:
            v = env[o]
            if self.cfg.output is not None and isinstance(v, FixedTensor):
                v = v.cast(self.cfg.output)
            outs.append(self._to_float(v))
        return outs

    def trace(self, feeds: dict[str, np.ndarray], shape_only: bool = False) -> list[Layer]:
        self._trace = []
        self._shape_only = shape_only
        try:
            self._execute(feeds)
            return self._trace
        finally:
            self._trace = None
            self._shape_only = False

    def _execute(self, feeds: dict[str, np.ndarray]) -> dict:
        env: dict[str, Any] = dict(self.inits)
        for name in self.input_names:
            x = np.asarray(feeds[name])
            if self.cfg.mode == "fixed" and np.issubdtype(x.dtype, np.floating):
                env[name] = FixedTensor.from_float(x, self.cfg.data)
            else:
                env[name] = x
        for node, fn, at in self._plan:
            ins = [env[i] if i else None for i in node.input]
            try:
                outs = fn(node, ins, at)
            except UnsupportedOp:
                raise
            except (ValueError, IndexError) as exc:
                raise UnsupportedOp(f"op {node.op_type} (node {node.name or node.output[0]}): {exc}") from None
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for name, v in zip(node.output, outs):
                if name:
                    env[name] = v
        return env

    # ------------------------------------------------------------------ value helpers
    @staticmethod
    def _to_float(v) -> np.ndarray:
        if isinstance(v, FixedTensor):
            return v.to_float().astype(np.float32)
        if isinstance(v, DQ):
            return v.to_float()
        return np.asarray(v).astype(np.float32) if np.issubdtype(np.asarray(v).dtype, np.floating) else np.asarray(v)

    def _is_fixed(self, v) -> bool:
        return isinstance(v, FixedTensor)

    def _const(self, v) -> np.ndarray:
        if isinstance(v, (FixedTensor, DQ)):
            raise UnsupportedOp("expected a constant tensor")
        return np.asarray(v)

    def _weight(self, key, arr: np.ndarray, t: FixedType) -> FixedTensor:
        k = (key, t)
        if k not in self._wcache:
            self._wcache[k] = FixedTensor.from_float(arr, t)
        return self._wcache[k]

    def _wmeta(self, key, m: np.ndarray) -> tuple[int, np.ndarray]:
        k = ("meta", key, self.cfg.weight)
        if k not in self._wcache:
            self._wcache[k] = (_bits(m), m.astype(np.float64))
        return self._wcache[k]

    def _result(self, m: np.ndarray, frac: int) -> FixedTensor:
        t = self.cfg.data
        return FixedTensor(requantize(m, frac, t), t)

    @staticmethod
    def _acc_result(m: np.ndarray, frac: int, acc: FixedType) -> FixedTensor:
        """A MAC layer's output: its accumulator value, exact (hls4ml's ``result_t: auto``); the next
        activation / arithmetic layer converts it to the data type."""
        if frac != acc.frac:
            m = requantize(m, frac, acc)
        return FixedTensor(m, acc)

    def _record(self, layer: Layer) -> None:
        if self._trace is not None:
            self._trace.append(layer)

    def _name(self, node) -> str:
        return node.name or node.output[0]

    # ------------------------------------------------------------------ MAC layers (fixed)
    def _fixed_mac(self, node, x: FixedTensor, w_float: np.ndarray, b_float: np.ndarray | None, kind: str,
                   attrs: dict, wkey) -> FixedTensor:
        """Dense (x: (..., K), w: (K, M)) or Conv (x: NCHW, w: MCkk) in fixed point."""
        cfg = self.cfg
        if x.t.width > cfg.data.width:  # a wide (accumulator) result entering the next layer
            x = x.cast(cfg.data)
        wt = self._weight(wkey, w_float, cfg.weight)
        bt = None if b_float is None else self._weight((wkey, "b"), b_float, cfg.bias)
        xt = x.t
        if kind == "dense":
            k = w_float.shape[0]
            n_ops = k
        else:
            n_ops = int(np.prod(w_float.shape[1:]))
        acc = cfg.accum or auto_accum_type(xt, cfg.weight, n_ops, None if bt is None else cfg.bias)
        prod_frac = xt.frac + cfg.weight.frac
        explicit = cfg.accum is not None
        if kind == "dense":
            lead = x.m.shape[:-1]
            cols = x.m.reshape(-1, x.m.shape[-1])
            if self._shape_only:
                out = np.zeros((cols.shape[0], w_float.shape[1]), dtype=np.int64)
                frac = prod_frac
            elif explicit:
                out = _sequential_accumulate(cols, wt.m, None if bt is None else bt.m, prod_frac,
                                             cfg.bias.frac, acc)
                frac = acc.frac
            else:
                out = _int_matmul(cols, wt.m, *self._wmeta(wkey, wt.m))
                frac = prod_frac
                if bt is not None:
                    out, frac = _add_aligned(out, frac, bt.m, cfg.bias.frac)
            res = self._acc_result(out, frac, acc)
            res = FixedTensor(res.m.reshape(*lead, w_float.shape[1]), res.t)
            vectors = int(np.prod(lead[1:])) if len(lead) > 1 else 1
            self._record(Layer(self._name(node), node.op_type, "dense", tuple(res.shape[1:]), tuple(x.shape[1:]),
                               vectors=vectors, n_in=k, n_out=w_float.shape[1], weights=wt.m, x_bits=xt.width,
                               w_bits=cfg.weight.width, acc_bits=acc.width, out_bits=acc.width,
                               macs=vectors * k * w_float.shape[1]))
            return res
        # convolution
        if self._shape_only:
            oh, ow = _conv_out_hw(x.m.shape, w_float.shape, attrs)
            out = np.zeros((x.m.shape[0], w_float.shape[0], oh, ow), dtype=np.int64)
            frac = prod_frac
        elif explicit:
            out, frac = self._conv_explicit(x, wt, bt, attrs, prod_frac, acc)
        else:
            out = _int_conv(x.m, wt.m, attrs)
            frac = prod_frac
            if bt is not None:
                out, frac = _add_aligned(out, frac, bt.m.reshape(1, -1, 1, 1), cfg.bias.frac)
        res = self._acc_result(out, frac, acc)
        self._record_conv(node, x, res, w_float, wt.m, attrs, xt.width, cfg.weight.width, acc.width, acc.width)
        return res

    def _conv_explicit(self, x, wt, bt, attrs, prod_frac, acc):
        w = wt.m
        m, cg, kh, kw = w.shape
        group = int(attrs.get("group", 1))
        strides = tuple(attrs.get("strides", [1, 1]))
        dilations = tuple(attrs.get("dilations", [1, 1]))
        pads = _conv_pads(attrs, x.m.shape[2], x.m.shape[3], kh, kw, strides, dilations)
        patches, oh, ow = _im2col(x.m, kh, kw, strides, dilations, pads)
        n = x.m.shape[0]
        mg = m // group
        outs = []
        for g in range(group):
            cols = patches[:, :, :, g * cg:(g + 1) * cg].reshape(n * oh * ow, cg * kh * kw)
            wg = w[g * mg:(g + 1) * mg].reshape(mg, -1).T
            bg = None if bt is None else bt.m[g * mg:(g + 1) * mg]
            outs.append(_sequential_accumulate(cols, wg, bg, prod_frac, self.cfg.bias.frac, acc).reshape(n, oh, ow, mg))
        return np.concatenate(outs, axis=3).transpose(0, 3, 1, 2), acc.frac

    def _record_conv(self, node, x, res, w_float, w_int, attrs, x_bits, w_bits, acc_bits, out_bits):
        m, cg, kh, kw = w_float.shape
        group = int(attrs.get("group", 1))
        oh, ow = res.shape[2], res.shape[3]
        kind = "dwconv" if group > 1 and cg == 1 and m // group == 1 else "conv"
        self._record(Layer(self._name(node), node.op_type, kind, tuple(res.shape[1:]), tuple(x.shape[1:]),
                           vectors=oh * ow, n_in=cg * kh * kw, n_out=m, groups=group, kernel=(kh, kw),
                           weights=w_int, x_bits=x_bits, w_bits=w_bits, acc_bits=acc_bits, out_bits=out_bits,
                           macs=oh * ow * m * cg * kh * kw,
                           attrs={"strides": list(attrs.get("strides", [1, 1])), "in_hw": list(x.shape[2:])}))

    # ------------------------------------------------------------------ MAC layers (int)
    def _int_dense(self, node, a: DQ, b: DQ, bias, trans_b: bool) -> np.ndarray:
        bq = b.centered()
        bscale = np.asarray(b.scale, dtype=np.float64)
        if trans_b:
            bq = bq.T
        lead = a.q.shape[:-1]
        cols = a.centered().reshape(-1, a.q.shape[-1])
        acc = np.zeros((cols.shape[0], bq.shape[1]), dtype=np.int64) if self._shape_only else _int_matmul(cols, bq)
        scale = np.asarray(a.scale, dtype=np.float64).reshape(()) * bscale.reshape(-1)
        out_int = acc
        if isinstance(bias, DQ) and np.allclose(np.asarray(bias.scale, dtype=np.float64).reshape(-1), scale):
            out_int = acc + bias.centered().reshape(1, -1)
            bias = None
        self._check_acc(node, out_int)
        y = out_int.astype(np.float64) * scale.reshape(1, -1)
        if bias is not None:
            y = y + self._to_float(bias).astype(np.float64).reshape(1, -1)
        y = y.astype(np.float32).reshape(*lead, bq.shape[1])
        vectors = int(np.prod(lead[1:])) if len(lead) > 1 else 1
        self._record(Layer(self._name(node), node.op_type, "dense", tuple(y.shape[1:]), tuple(a.q.shape[1:]),
                           vectors=vectors, n_in=bq.shape[0], n_out=bq.shape[1], weights=bq,
                           x_bits=8 * a.q.dtype.itemsize, w_bits=8 * b.q.dtype.itemsize, acc_bits=32,
                           out_bits=8, macs=vectors * bq.shape[0] * bq.shape[1]))
        return y

    def _int_convolution(self, node, x: DQ, w: DQ, bias, attrs) -> np.ndarray:
        wq = w.centered()
        zp = np.asarray(x.zp).reshape(())
        xs = x.q.astype(np.int64) - int(zp)
        if self._shape_only:
            oh, ow = _conv_out_hw(xs.shape, wq.shape, attrs)
            acc = np.zeros((xs.shape[0], wq.shape[0], oh, ow), dtype=np.int64)
        else:
            acc = _int_conv(xs, wq, attrs)  # padding with the zero point == 0 after centering
        scale = np.asarray(x.scale, dtype=np.float64).reshape(()) * np.asarray(w.scale, dtype=np.float64).reshape(-1)
        if isinstance(bias, DQ) and np.allclose(np.asarray(bias.scale, dtype=np.float64).reshape(-1), scale):
            acc = acc + bias.centered().reshape(1, -1, 1, 1)
            bias = None
        self._check_acc(node, acc)
        y = acc.astype(np.float64) * scale.reshape(1, -1, 1, 1)
        if bias is not None:
            y = y + self._to_float(bias).astype(np.float64).reshape(1, -1, 1, 1)
        y = y.astype(np.float32)
        res = FixedTensor(np.zeros(y.shape, dtype=np.int64), parse_precision("int32"))
        self._record_conv(node, FixedTensor(xs, parse_precision("int8")), res, wq, wq, attrs,
                          8 * x.q.dtype.itemsize, 8 * w.q.dtype.itemsize, 32, 8)
        return y

    def _check_acc(self, node, acc: np.ndarray) -> None:
        if acc.size and np.abs(acc).max() >= 2 ** 31:
            raise UnsupportedOp(f"node {self._name(node)}: int32 accumulator overflows")

    # ------------------------------------------------------------------ ops: MAC
    def op_Gemm(self, node, ins, at):
        a, b = ins[0], ins[1]
        c = ins[2] if len(ins) > 2 else None
        if at.get("transA", 0):
            raise UnsupportedOp("Gemm with transA=1")
        alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
        trans_b = bool(at.get("transB", 0))
        if isinstance(a, DQ) and isinstance(b, DQ):
            if alpha != 1.0 or beta != 1.0:
                raise UnsupportedOp("quantized Gemm with alpha/beta != 1")
            return self._int_dense(node, a, b, c, trans_b)
        if self._is_fixed(a):
            key = ("gemm", id(node))
            if key not in self._wcache or not (node.input[1] in self.inits and (c is None or node.input[2] in self.inits)):
                w = self._const(b).astype(np.float64) * alpha
                w = w.T if trans_b else w
                bias = None if c is None else (self._const(c).astype(np.float64) * beta).reshape(-1)
                if bias is not None and bias.size == 1 and w.shape[1] > 1:
                    bias = np.full(w.shape[1], bias[0])
                self._wcache[key] = (w, bias)
            w, bias = self._wcache[key]
            return self._fixed_mac(node, a, w, bias, "dense", at, node.input[1])
        return self._float_gemm(a, b, c, at)

    def _float_gemm(self, a, b, c, at):
        a = self._to_float(a).astype(np.float64)
        b = self._to_float(b).astype(np.float64)
        if at.get("transA", 0):
            a = a.T
        if at.get("transB", 0):
            b = b.T
        y = float(at.get("alpha", 1.0)) * (a @ b)
        if c is not None:
            y = y + float(at.get("beta", 1.0)) * self._to_float(c)
        return y.astype(np.float32)

    def op_MatMul(self, node, ins, at):
        a, b = ins
        if isinstance(a, DQ) and isinstance(b, DQ):
            if b.q.ndim != 2:
                raise UnsupportedOp("quantized MatMul with a batched right operand")
            return self._int_dense(node, a, b, None, False)
        if self._is_fixed(a) or self._is_fixed(b):
            if self._is_fixed(b) or node.input[1] not in self.inits:
                raise UnsupportedOp("MatMul of two activations (attention-style) is not emulated; "
                                    "only weights x activations")
            w = self._const(b).astype(np.float64)
            if w.ndim != 2:
                raise UnsupportedOp("MatMul with a non-2-D weight")
            return self._fixed_mac(node, a, w, None, "dense", at, node.input[1])
        return np.matmul(self._to_float(a), self._to_float(b))

    def op_Conv(self, node, ins, at):
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 else None
        if isinstance(x, DQ) and isinstance(w, DQ):
            return self._int_convolution(node, x, w, b, at)
        if self._is_fixed(x):
            wf = self._const(w).astype(np.float64)
            if wf.ndim != 4:
                raise UnsupportedOp(f"Conv with {wf.ndim - 2} spatial dims (only 2-D convolutions are emulated)")
            bf = None if b is None else self._const(b).astype(np.float64)
            return self._fixed_mac(node, x, wf, bf, "conv", at, node.input[1])
        xf, wf = self._to_float(x).astype(np.float64), self._to_float(w).astype(np.float64)
        # float path (int mode, unquantized conv): exact float64 sums through the same im2col
        y = _float_conv(xf, wf, at)
        if b is not None:
            y = y + self._to_float(b).reshape(1, -1, 1, 1)
        return y.astype(np.float32)

    def op_MatMulInteger(self, node, ins, at):
        a, b = ins[0], ins[1]
        azp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), a.dtype)
        bzp = ins[3] if len(ins) > 3 and ins[3] is not None else np.zeros((), b.dtype)
        da = DQ(np.asarray(a), np.ones(()), np.asarray(azp), 1)
        db = DQ(np.asarray(b), np.ones(np.asarray(bzp).shape), np.asarray(bzp), 1)
        bq = db.centered()
        lead = a.shape[:-1]
        cols = da.centered().reshape(-1, a.shape[-1])
        acc = np.zeros((cols.shape[0], bq.shape[1]), np.int64) if self._shape_only else _int_matmul(cols, bq)
        self._check_acc(node, acc)
        vectors = int(np.prod(lead[1:])) if len(lead) > 1 else 1
        self._record(Layer(self._name(node), node.op_type, "dense", (bq.shape[1],), tuple(a.shape[1:]),
                           vectors=vectors, n_in=bq.shape[0], n_out=bq.shape[1], weights=bq,
                           x_bits=8 * a.dtype.itemsize, w_bits=8 * np.asarray(b).dtype.itemsize, acc_bits=32,
                           out_bits=32, macs=vectors * bq.size))
        return acc.reshape(*lead, bq.shape[1]).astype(np.int32)

    def op_ConvInteger(self, node, ins, at):
        x, w = np.asarray(ins[0]), np.asarray(ins[1])
        xzp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), x.dtype)
        wzp = ins[3] if len(ins) > 3 and ins[3] is not None else np.zeros((), w.dtype)
        xs = x.astype(np.int64) - int(np.asarray(xzp).reshape(()))
        wq = w.astype(np.int64) - _bcast(np.asarray(wzp), 0, w.ndim).astype(np.int64)
        acc = _int_conv(xs, wq, at)
        self._check_acc(node, acc)
        res = FixedTensor(acc, parse_precision("int32"))
        self._record_conv(node, FixedTensor(xs, parse_precision("int8")), res, wq, wq, at, 8 * x.dtype.itemsize,
                          8 * w.dtype.itemsize, 32, 32)
        return acc.astype(np.int32)

    def op_QLinearMatMul(self, node, ins, at):
        a, sa, za, b, sb, zb, sy, zy = ins
        y = self._int_dense(node, DQ(np.asarray(a), np.asarray(sa), np.asarray(za)),
                            DQ(np.asarray(b), np.asarray(sb), np.asarray(zb), 1), None, False)
        return _quantize_linear(y, np.asarray(sy), np.asarray(zy), 1)

    def op_QLinearConv(self, node, ins, at):
        x, sx, zx, w, sw, zw, sy, zy = ins[:8]
        b = ins[8] if len(ins) > 8 else None
        sxw = np.asarray(sx, dtype=np.float64).reshape(()) * np.asarray(sw, dtype=np.float64).reshape(-1)
        bias = None if b is None else DQ(np.asarray(b), sxw.astype(np.float32), np.zeros((), np.int32), 0)
        y = self._int_convolution(node, DQ(np.asarray(x), np.asarray(sx), np.asarray(zx)),
                                  DQ(np.asarray(w), np.asarray(sw), np.asarray(zw), 0), bias, at)
        return _quantize_linear(y, np.asarray(sy), np.asarray(zy), 1)

    # ------------------------------------------------------------------ ops: quantization (int mode)
    def op_QuantizeLinear(self, node, ins, at):
        x, s = ins[0], ins[1]
        zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), np.uint8)
        if int(at.get("saturate", 1)) != 1 or at.get("block_size", 0):
            raise UnsupportedOp("QuantizeLinear with block_size / saturate=0")
        x = self._to_float(x)
        return _quantize_linear(x, np.asarray(s), np.asarray(zp), int(at.get("axis", 1)))

    def op_DequantizeLinear(self, node, ins, at):
        q, s = np.asarray(ins[0]), np.asarray(ins[1])
        zp = np.asarray(ins[2]) if len(ins) > 2 and ins[2] is not None else np.zeros((), q.dtype)
        if at.get("block_size", 0):
            raise UnsupportedOp("DequantizeLinear with block_size")
        if not np.issubdtype(q.dtype, np.integer):
            raise UnsupportedOp(f"DequantizeLinear of {q.dtype}")
        axis = int(at.get("axis", 1))
        return DQ(q, s.astype(np.float32), zp, axis % max(q.ndim, 1) if q.ndim else 0)

    def op_DynamicQuantizeLinear(self, node, ins, at):
        x = self._to_float(ins[0]).astype(np.float32)
        mn = min(0.0, float(x.min())) if x.size else 0.0
        mx = max(0.0, float(x.max())) if x.size else 0.0
        scale = np.float32((mx - mn) / 255.0) if mx > mn else np.float32(1.0)
        zp = np.clip(np.rint(np.float32(0.0) - np.float32(mn) / scale), 0, 255).astype(np.uint8)
        y = np.clip(np.rint(x / scale) + zp.astype(np.float32), 0, 255).astype(np.uint8)
        return [y, np.asarray(scale, dtype=np.float32), np.asarray(zp, dtype=np.uint8)]

    # ------------------------------------------------------------------ ops: elementwise
    def op_Relu(self, node, ins, at):
        x = ins[0]
        if self._is_fixed(x):
            self._record_elementwise(node, x, "act")
            return FixedTensor(np.maximum(x.m, 0), x.t).cast(self.cfg.data)
        return np.maximum(self._to_float(x), 0).astype(np.float32)

    def op_LeakyRelu(self, node, ins, at):
        x = ins[0]
        alpha = float(at.get("alpha", 0.01))
        if self._is_fixed(x):
            a = self.cfg.weight.quantize(alpha)
            neg = x.m * a  # exact, frac = x.frac + w.frac
            frac = x.t.frac + self.cfg.weight.frac
            m = np.where(x.m >= 0, x.m << self.cfg.weight.frac, neg)
            self._record_elementwise(node, x, "act")
            return self._result(m, frac)
        xf = self._to_float(x)
        return np.where(xf >= 0, xf, alpha * xf).astype(np.float32)

    def op_Clip(self, node, ins, at):
        x = ins[0]
        lo = ins[1] if len(ins) > 1 and ins[1] is not None else at.get("min")
        hi = ins[2] if len(ins) > 2 and ins[2] is not None else at.get("max")
        if self._is_fixed(x):
            t = self.cfg.data
            y = x.cast(t)
            m = y.m
            if lo is not None:
                m = np.maximum(m, t.quantize(float(np.asarray(lo))))
            if hi is not None:
                m = np.minimum(m, t.quantize(float(np.asarray(hi))))
            self._record_elementwise(node, x, "act")
            return FixedTensor(m, t)
        xf = self._to_float(x)
        return np.clip(xf, None if lo is None else float(np.asarray(lo)),
                       None if hi is None else float(np.asarray(hi))).astype(xf.dtype)

    def _float_fn(self, node, x, fn, out_t: FixedType | None = None, kind="act"):
        if self._is_fixed(x):
            self._record_elementwise(node, x, kind)
            t = out_t or self.cfg.data
            return FixedTensor(t.quantize(fn(x.to_float())), t)
        return fn(self._to_float(x).astype(np.float64)).astype(np.float32)

    def op_Sigmoid(self, node, ins, at):
        return self._float_fn(node, ins[0], lambda v: 1.0 / (1.0 + np.exp(-v)))

    def op_Tanh(self, node, ins, at):
        return self._float_fn(node, ins[0], np.tanh)

    def op_Softmax(self, node, ins, at):
        axis = int(at.get("axis", -1))

        def sm(v):
            e = np.exp(v - v.max(axis=axis, keepdims=True))
            return e / e.sum(axis=axis, keepdims=True)

        return self._float_fn(node, ins[0], sm, self.cfg.softmax, kind="softmax")

    def _record_elementwise(self, node, x, kind):
        shape = tuple(x.shape[1:])
        vectors = int(np.prod(shape[1:])) if len(shape) >= 3 else 1
        self._record(Layer(self._name(node), node.op_type, kind, shape, shape, vectors=vectors,
                           n_out=shape[0] if shape else 1, x_bits=x.t.width if self._is_fixed(x) else 8,
                           out_bits=self.cfg.data.width))

    def _binary(self, node, a, b, op):
        """Add / Sub / Mul / Div, with fixed-point operands or one constant."""
        fa, fb = self._is_fixed(a), self._is_fixed(b)
        if not (fa or fb):
            if isinstance(a, DQ) or isinstance(b, DQ) or np.issubdtype(np.asarray(self._to_float(a)).dtype, np.floating):
                fa_, fb_ = self._to_float(a), self._to_float(b)
                return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](fa_, fb_)
            ia, ib = np.asarray(a), np.asarray(b)
            if op == "Div":
                return (ia // ib).astype(ia.dtype)
            return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](ia, ib).astype(ia.dtype)
        if op in ("Add", "Sub"):
            if fa and fb:
                bm = b.m if op == "Add" else -b.m
                m, frac = _add_aligned(a.m, a.t.frac, bm, b.t.frac)
                self._record_elementwise(node, a, "add")
                return self._result(m, frac)
            x, c = (a, b) if fa else (b, a)
            cf = self._const(c).astype(np.float64)
            if op == "Sub":
                if fa:
                    cf = -cf
                else:  # c - x
                    x = FixedTensor(-x.m, x.t)
            ct = FixedTensor.from_float(cf, self.cfg.bias)
            cm = ct.m
            m, frac = _add_aligned(x.m, x.t.frac, _align_const(cm, x.m.ndim), self.cfg.bias.frac)
            self._record_elementwise(node, x, "scale")
            return self._result(m, frac)
        # Mul / Div by a constant (scale): the constant in the weight type, the product exact
        if fa and fb:
            if op == "Div":
                raise UnsupportedOp("Div of two activations")
            self._record_elementwise(node, a, "scale")
            return self._result(a.m * b.m, a.t.frac + b.t.frac)
        x, c = (a, b) if fa else (b, a)
        if op == "Div" and not fa:
            raise UnsupportedOp("Div of a constant by an activation")
        cf = self._const(c).astype(np.float64)
        if op == "Div":
            cf = 1.0 / cf
        ct = self.cfg.weight.quantize(cf)
        self._record_elementwise(node, x, "scale")
        return self._result(x.m * _align_const(ct, x.m.ndim), x.t.frac + self.cfg.weight.frac)

    def op_Add(self, node, ins, at):
        return self._binary(node, ins[0], ins[1], "Add")

    def op_Sub(self, node, ins, at):
        return self._binary(node, ins[0], ins[1], "Sub")

    def op_Mul(self, node, ins, at):
        return self._binary(node, ins[0], ins[1], "Mul")

    def op_Div(self, node, ins, at):
        return self._binary(node, ins[0], ins[1], "Div")

    def op_BatchNormalization(self, node, ins, at):
        x = ins[0]
        gamma, beta, mean, var = (self._const(v).astype(np.float64) for v in ins[1:5])
        s = gamma / np.sqrt(var + float(at.get("epsilon", 1e-5)))
        shift = beta - mean * s
        if self._is_fixed(x):
            shape = (1, -1) + (1,) * (x.m.ndim - 2)
            sm = self.cfg.weight.quantize(s).reshape(shape)
            bm = self.cfg.bias.quantize(shift).reshape(shape)
            m, frac = _add_aligned(x.m * sm, x.t.frac + self.cfg.weight.frac, bm, self.cfg.bias.frac)
            self._record_elementwise(node, x, "scale")
            return self._result(m, frac)
        xf = self._to_float(x)
        shape = (1, -1) + (1,) * (xf.ndim - 2)
        return (xf * s.reshape(shape) + shift.reshape(shape)).astype(np.float32)

    # ------------------------------------------------------------------ ops: pooling
    def _pool(self, node, x, at, kind: str, global_: bool):
        fixed = self._is_fixed(x)
        arr = x.m if fixed else self._to_float(x)
        if isinstance(x, DQ):
            arr = x.to_float()
        if arr.ndim != 4:
            raise UnsupportedOp(f"{node.op_type} on a {arr.ndim}-D tensor (only 2-D pooling is emulated)")
        n, c, h, w = arr.shape
        if global_:
            kh, kw, strides, pads = h, w, (1, 1), (0, 0, 0, 0)
        else:
            kh, kw = at["kernel_shape"]
            strides = tuple(at.get("strides", [1, 1]))
            if at.get("dilations") and any(d != 1 for d in at["dilations"]):
                raise UnsupportedOp(f"{node.op_type} with dilations")
            if int(at.get("ceil_mode", 0)):
                raise UnsupportedOp(f"{node.op_type} with ceil_mode=1")
            pads = _conv_pads(at, h, w, kh, kw, strides, (1, 1))
        count_pad = int(at.get("count_include_pad", 0))
        if kind == "max":
            pad_value = np.iinfo(np.int64).min // 4 if fixed else -np.inf
        else:
            pad_value = 0
        patches, oh, ow = _im2col(arr, kh, kw, strides, (1, 1), pads, pad_value)
        patches = patches.reshape(n, oh, ow, c, kh * kw)
        if kind == "max":
            out = patches.max(axis=-1).transpose(0, 3, 1, 2)
            res = FixedTensor(out, x.t).cast(self.cfg.data) if fixed else out.astype(np.float32)
        else:
            if any(pads) and not count_pad:
                ones = np.ones((1, 1, h, w), dtype=np.int64)
                cnt, _, _ = _im2col(ones, kh, kw, strides, (1, 1), pads, 0)
                counts = cnt.reshape(1, oh, ow, 1, kh * kw).sum(-1).transpose(0, 3, 1, 2)
            else:
                counts = np.full((1, 1, oh, ow), kh * kw, dtype=np.int64)
            s = patches.sum(axis=-1).transpose(0, 3, 1, 2)
            if fixed:
                t = self.cfg.data
                if np.all(counts == counts.flat[0]):
                    m = quantize_ratio(s, int(counts.flat[0]), x.t.frac, t)
                else:
                    m = np.empty(s.shape, dtype=np.int64)
                    for val in np.unique(counts):
                        mask = np.broadcast_to(counts == val, s.shape)
                        m[mask] = quantize_ratio(s[mask], int(val), x.t.frac, t)
                res = FixedTensor(m, t)
            else:
                res = (s / counts).astype(np.float32)
        if self._trace is not None:
            self._record(Layer(self._name(node), node.op_type, "pool", tuple(res.shape[1:]), (c, h, w),
                               vectors=oh * ow, n_in=kh * kw, n_out=c, kernel=(kh, kw),
                               x_bits=x.t.width if fixed else 8, out_bits=self.cfg.data.width,
                               attrs={"pool": kind, "in_hw": [h, w], "strides": list(strides)}))
        return res

    def op_MaxPool(self, node, ins, at):
        if len(node.output) > 1 and node.output[1]:
            raise UnsupportedOp("MaxPool with an indices output")
        return self._pool(node, ins[0], at, "max", False)

    def op_AveragePool(self, node, ins, at):
        return self._pool(node, ins[0], at, "avg", False)

    def op_GlobalAveragePool(self, node, ins, at):
        return self._pool(node, ins[0], at, "avg", True)

    def op_GlobalMaxPool(self, node, ins, at):
        return self._pool(node, ins[0], at, "max", True)

    # ------------------------------------------------------------------ ops: layout
    def _layout(self, x, fn):
        if self._is_fixed(x):
            return FixedTensor(fn(x.m), x.t)
        if isinstance(x, DQ):
            return fn(x.to_float())
        return fn(np.asarray(x))

    def op_Flatten(self, node, ins, at):
        axis = int(at.get("axis", 1))

        def f(a):
            ax = axis % a.ndim if a.ndim else 0
            return a.reshape(int(np.prod(a.shape[:ax])), -1)

        return self._layout(ins[0], f)

    def op_Reshape(self, node, ins, at):
        shape = [int(s) for s in self._const(ins[1]).reshape(-1)]
        allowzero = int(at.get("allowzero", 0))

        def f(a):
            tgt = [a.shape[i] if (s == 0 and not allowzero) else s for i, s in enumerate(shape)]
            return a.reshape(tgt)

        return self._layout(ins[0], f)

    def op_Transpose(self, node, ins, at):
        perm = at.get("perm")
        return self._layout(ins[0], lambda a: np.transpose(a, perm))

    def _axes(self, ins, at):
        if len(ins) > 1 and ins[1] is not None:
            return [int(v) for v in self._const(ins[1]).reshape(-1)]
        return at.get("axes")

    def op_Squeeze(self, node, ins, at):
        axes = self._axes(ins, at)
        return self._layout(ins[0], lambda a: np.squeeze(a, axis=None if axes is None else tuple(axes)))

    def op_Unsqueeze(self, node, ins, at):
        axes = self._axes(ins, at)

        def f(a):
            out = a
            nd = a.ndim + len(axes)
            for ax in sorted(ax % nd for ax in axes):
                out = np.expand_dims(out, ax)
            return out

        return self._layout(ins[0], f)

    def op_Identity(self, node, ins, at):
        return ins[0]

    def op_Dropout(self, node, ins, at):
        return [ins[0], None]

    def op_Concat(self, node, ins, at):
        axis = int(at["axis"])
        if any(self._is_fixed(v) for v in ins):
            t = self.cfg.data
            parts = [v.cast(t).m if self._is_fixed(v) else FixedTensor.from_float(self._const(v), t).m for v in ins]
            return FixedTensor(np.concatenate(parts, axis=axis), t)
        arrs = [self._to_float(v) if isinstance(v, DQ) else np.asarray(v) for v in ins]
        return np.concatenate(arrs, axis=axis)

    def op_Pad(self, node, ins, at):
        x = ins[0]
        mode = _dec(at.get("mode", "constant"))
        if mode != "constant":
            raise UnsupportedOp(f"Pad mode {mode}")
        pads = [int(v) for v in (self._const(ins[1]).reshape(-1) if len(ins) > 1 and ins[1] is not None
                                 else at["pads"])]
        value = float(np.asarray(ins[2]).reshape(())) if len(ins) > 2 and ins[2] is not None else 0.0
        if len(ins) > 3 and ins[3] is not None:
            raise UnsupportedOp("Pad with axes")
        nd = len(pads) // 2
        width = [(pads[i], pads[i + nd]) for i in range(nd)]
        if self._is_fixed(x):
            return FixedTensor(np.pad(x.m, width, constant_values=int(x.t.quantize(value))), x.t)
        return np.pad(self._to_float(x), width, constant_values=value)

    # ------------------------------------------------------------------ ops: shape bookkeeping
    def op_Constant(self, node, ins, at):
        from onnx import numpy_helper

        if "value" in at:
            return numpy_helper.to_array(at["value"])
        for k in ("value_float", "value_int"):
            if k in at:
                return np.asarray(at[k])
        for k in ("value_floats", "value_ints"):
            if k in at:
                return np.asarray(at[k])
        raise UnsupportedOp("Constant without a value")

    def op_Shape(self, node, ins, at):
        shape = np.asarray(ins[0].shape if hasattr(ins[0], "shape") else np.shape(ins[0]), dtype=np.int64)
        start, end = at.get("start", 0), at.get("end")
        return shape[start:end]

    def op_Gather(self, node, ins, at):
        data, idx = ins
        axis = int(at.get("axis", 0))
        if self._is_fixed(data):
            return FixedTensor(np.take(data.m, np.asarray(idx), axis=axis), data.t)
        return np.take(self._to_float(data) if isinstance(data, DQ) else np.asarray(data), np.asarray(idx), axis=axis)

    def op_Cast(self, node, ins, at):
        from onnx import helper

        dt = helper.tensor_dtype_to_np_dtype(int(at["to"]))
        x = ins[0]
        if self._is_fixed(x):
            if np.issubdtype(dt, np.floating):
                return x  # a float cast of a fixed-point tensor changes nothing in hardware
            raise UnsupportedOp(f"Cast of an activation to {dt}")
        if isinstance(x, DQ):
            x = x.to_float()
        return np.asarray(x).astype(dt)

    def op_Slice(self, node, ins, at):
        x = ins[0]
        starts = self._const(ins[1]).reshape(-1)
        ends = self._const(ins[2]).reshape(-1)
        axes = self._const(ins[3]).reshape(-1) if len(ins) > 3 and ins[3] is not None else range(len(starts))
        steps = self._const(ins[4]).reshape(-1) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)

        def f(a):
            sl = [slice(None)] * a.ndim
            for s, e, ax, st in zip(starts, ends, axes, steps):
                sl[int(ax)] = slice(int(s), int(e), int(st))
            return a[tuple(sl)]

        return self._layout(x, f)

    def op_ConstantOfShape(self, node, ins, at):
        from onnx import numpy_helper

        shape = [int(v) for v in self._const(ins[0]).reshape(-1)]
        value = numpy_helper.to_array(at["value"]) if "value" in at else np.zeros(1, np.float32)
        return np.full(shape, value.reshape(-1)[0], dtype=value.dtype)


# ---------------------------------------------------------------------- helpers

def _add_aligned(a: np.ndarray, fa: int, b: np.ndarray, fb: int) -> tuple[np.ndarray, int]:
    """Exact sum of two mantissa arrays with different fractional bits."""
    f = max(fa, fb)
    return (a.astype(np.int64) << (f - fa)) + (np.asarray(b, dtype=np.int64) << (f - fb)), f


def _align_const(c: np.ndarray, ndim: int) -> np.ndarray:
    """Broadcast a per-channel constant (C,) or (C,1,1) against an (N, C, ...) tensor."""
    c = np.asarray(c)
    if c.ndim == 1 and c.size > 1 and ndim > 2:
        return c.reshape((1, -1) + (1,) * (ndim - 2))
    return c


def _quantize_linear(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    s = _bcast(scale.astype(np.float32), axis, x.ndim)
    z = _bcast(zp, axis, x.ndim)
    dtype = zp.dtype if np.issubdtype(zp.dtype, np.integer) else np.uint8
    info = np.iinfo(dtype)
    q = np.rint(x / s) + z.astype(np.float32)  # round half to even, as ONNX specifies
    return np.clip(q, info.min, info.max).astype(dtype)


def _float_conv(x: np.ndarray, w: np.ndarray, attrs: dict) -> np.ndarray:
    m, cg, kh, kw = w.shape
    strides = tuple(attrs.get("strides", [1, 1]))
    dilations = tuple(attrs.get("dilations", [1, 1]))
    group = int(attrs.get("group", 1))
    pads = _conv_pads(attrs, x.shape[2], x.shape[3], kh, kw, strides, dilations)
    patches, oh, ow = _im2col(x, kh, kw, strides, dilations, pads)
    n = x.shape[0]
    mg = m // group
    outs = []
    for g in range(group):
        cols = patches[:, :, :, g * cg:(g + 1) * cg].reshape(n * oh * ow, cg * kh * kw)
        outs.append((cols @ w[g * mg:(g + 1) * mg].reshape(mg, -1).T).reshape(n, oh, ow, mg))
    return np.concatenate(outs, axis=3).transpose(0, 3, 1, 2)
