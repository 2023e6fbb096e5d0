"""Model complexity counted from the exported ONNX graph -- one counter for every backend.

:func:`count` reads an ONNX model (a path, serialized bytes or an ``onnx.ModelProto``)
and returns parameters, multiply-accumulates, size on disk, weight sparsity and
bit-widths, with a per-operator breakdown. The conventions are spelled out in
``docs/complexity.md``; in short:

* **macs**: one multiply-accumulate = 1, counted for convolutions and matrix products
  only (``Conv`` incl. grouped/depthwise, ``ConvTranspose``, ``Gemm``, ``MatMul`` incl.
  batched MatMuls of two activations, the quantized ``QLinearConv``, ``QLinearMatMul``,
  ``ConvInteger``, ``MatMulInteger``, onnxruntime's ``QGemm``/``FusedConv``/``FusedGemm``;
  QDQ graphs count through their ``DequantizeLinear`` weights). Bias additions,
  normalisation, activations and pooling are not counted -- the convention of
  torchvision's "GFLOPS" column. Conv: ``size(W) * N * prod(output spatial)`` (padded
  positions included); ConvTranspose: ``size(W) * N * prod(input spatial)``; Gemm:
  ``M*K*N``; MatMul: ``prod(broadcast output shape) * K``.
* **nonzero_macs**: the same minus every MAC whose weight element is exactly zero (a
  quantized weight: equal to its zero point), counted per output channel / column from
  the actual weight values. MatMuls of two activations count in full.
* **params**: every element (zeros included) of each distinct constant tensor
  (initializer or ``Constant`` output, followed back through ``Identity``/``Cast``/
  ``Transpose``/``Reshape``/``Flatten``/``Squeeze``/``Unsqueeze``/``DequantizeLinear``)
  that is a weight or bias of a counted operator, the scale/bias of a normalisation op,
  a ``PRelu`` slope, a ``Gather`` embedding table or the constant addend of a bias
  ``Add`` after a counted op. Scales, zero points, BatchNorm running statistics and shape
  constants are not parameters (``initializer_elements`` counts every constant element).
  Shared tensors count once; an ``Identity`` copy of a constant counts as its own tensor
  (exporters emit those when de-duplicating equal-valued parameters).
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.errors import BenchError
from harness.plan.shapes import check_given_shape, parse_input_shape  # noqa: F401  (parse_input_shape: public here)
from harness.plan.shapes import fmt_dims as _fmt_dims
from harness.units import fmt_count as format_count  # noqa: F401  (public here, see __all__)

__all__ = ["CONVENTION", "MAC_OPS", "count", "dtype_name", "format_count", "parse_input_shape"]

CONVENTION = ("1 MAC = one multiply-accumulate; counted for Conv, ConvTranspose, Gemm, MatMul and their "
              "quantized forms only (no bias, normalisation, activation or pooling)")

#: operators whose multiply-accumulates are counted (default ONNX domain)
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "ConvInteger",
           "MatMulInteger")
#: onnxruntime-fused forms counted as their plain counterpart
_MS_MAC_OPS = {"FusedConv": "Conv", "FusedGemm": "Gemm", "QGemm": "QGemm"}
#: operators with real arithmetic this counter does not count; reported in ``uncounted_ops``
_UNCOUNTED = {"Einsum", "LSTM", "GRU", "RNN", "Attention", "ConvTransposeInteger", "DeformConv", "If", "Loop",
              "Scan"}
_NORM_OPS = {"BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
             "RMSNormalization"}
#: ops a weight may pass through between its initializer and the op that uses it
_CHAIN_OPS = {"Identity", "Cast", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "DequantizeLinear"}
#: ops between a MAC op and its bias Add that keep the bias a bias
_RESCALE_OPS = {"Cast", "Mul", "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "QuantizeLinear",
                "DequantizeLinear"}
#: the biggest initializer kept inside the copy used for shape inference (bigger ones become inputs)
_SMALL_INIT = 4096

_DTYPE_NAMES = {"FLOAT": "float32", "DOUBLE": "float64", "FLOAT16": "float16", "COMPLEX64": "complex64",
                "COMPLEX128": "complex128"}
_DTYPE_BITS = {"float32": 32, "float64": 64, "float16": 16, "bfloat16": 16, "int8": 8, "uint8": 8, "int16": 16,
               "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64, "bool": 8, "int4": 4,
               "uint4": 4, "int2": 2, "uint2": 2, "float4e2m1": 4, "float8e4m3fn": 8, "float8e4m3fnuz": 8,
               "float8e5m2": 8, "float8e5m2fnuz": 8, "float8e8m0": 8, "float6e2m3": 6, "float6e3m2": 6,
               "complex64": 64, "complex128": 128}


def dtype_name(elem_type: int) -> str:
    """ONNX element type -> short numpy-style name (``1`` -> ``"float32"``)."""
    import onnx

    try:
        name = onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"type{elem_type}"
    return _DTYPE_NAMES.get(name, name.lower())


# --------------------------------------------------------------------------- input shapes


# --------------------------------------------------------------------------- loading


def _load(model_or_path: Any):
    """-> (ModelProto with external data loaded, model_bytes, label for messages)."""
    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        model = model_or_path
        try:
            size = model.ByteSize()
        except Exception:  # pragma: no cover - > 2 GiB protos
            size = None
        label = "model"
    elif isinstance(model_or_path, (bytes, bytearray, memoryview)):
        data = bytes(model_or_path)
        label = "model bytes"
        model = _parse(data, label)
        size = len(data)
    elif isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        label = path
        from harness.safe import check_input_file

        check_input_file(path, what="model", max_bytes=2**31)  # no FIFO, device, directory; protobuf <= 2 GiB
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise BenchError(f"cannot read {path}: {exc.strerror or exc}") from None
        model = _parse(data, path)
        size = len(data)
        size += _load_external(model, os.path.dirname(os.path.abspath(path)), path)
    else:
        raise BenchError(f"cannot count complexity of a {type(model_or_path).__name__}: "
                         "give an ONNX file path, bytes or an onnx.ModelProto")
    _validate(model, label)
    return model, size, label


def _parse(data: bytes, label: str):
    import onnx

    if not data:
        raise BenchError(f"{label}: empty file, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise BenchError(f"{label}: not a valid ONNX model (corrupt or truncated protobuf: "
                         f"{type(exc).__name__}: {exc})") from None
    return model


def _load_external(model, base_dir: str, label: str) -> int:
    """Load external tensor data in place; return the bytes of the external files."""
    from onnx import external_data_helper as edh

    files: set[str] = set()
    for tensor in edh._get_all_tensors(model):
        if edh.uses_external_data(tensor):
            info = edh.ExternalDataInfo(tensor)
            files.add(os.path.normpath(os.path.join(base_dir, info.location)))
    if not files:
        return 0
    missing = [f for f in sorted(files) if not os.path.isfile(f)]
    if missing:
        raise BenchError(f"{label}: external data file missing: {missing[0]}")
    try:
        edh.load_external_data_for_model(model, base_dir)
    except Exception as exc:
        raise BenchError(f"{label}: cannot load external data ({type(exc).__name__}: {exc})") from None
    return sum(os.path.getsize(f) for f in files)


def _validate(model, label: str) -> None:
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise BenchError(f"{label}: not an ONNX model (no IR version or no graph)")
    if not model.opset_import:
        raise BenchError(f"{label}: not a complete ONNX model (no opset_import; truncated?)")
    if len(model.graph.node) == 0:
        raise BenchError(f"{label}: the ONNX graph has no nodes")


# --------------------------------------------------------------------------- shape inference


def _dims(type_proto) -> list | None:
    """Shape of a tensor type as a list (int, or str for a symbolic dim, None for unknown); None: no shape."""
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return None
    out: list = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _fix_inputs(graph, init_names: set[str], input_shapes: dict[str, tuple] | None) -> dict[str, list]:
    """Concrete shapes for the graph inputs: given ones, else the symbolic batch dim set to 1.

    Returns ``{input name: dims}`` (dims may still hold symbols/None where nothing fixes them).
    """
    real = [i for i in graph.input if i.name not in init_names]
    by_name = {i.name: i for i in real}
    given = dict(input_shapes or {})
    if None in given:  # a shape given without a name
        if len(real) != 1:
            raise BenchError("an --input-shape without a NAME= is only allowed for single-input models "
                             f"(inputs: {', '.join(by_name) or 'none'})")
        given[real[0].name] = given.pop(None)
    for name in given:
        if name not in by_name:
            raise BenchError(f"--input-shape names '{name}', which is not an input of the model "
                             f"(inputs: {', '.join(f'{n}{_fmt_dims(_dims(i.type))}' for n, i in by_name.items())})")
    symbols: dict[str, int] = {}
    shapes: dict[str, list] = {}
    for name, inp in by_name.items():
        declared = _dims(inp.type)
        if name in given:
            shape = [int(d) for d in given[name]]
            check_given_shape(f"--input-shape {name}", shape, declared)
            for d, s in zip(declared or (), shape):
                if isinstance(d, str):
                    symbols.setdefault(d, s)
            shapes[name] = shape
        else:
            shapes[name] = declared
    # the batch dim (axis 0) of inputs without a given shape: 1, or what a given input fixed its symbol to
    for name, dims in shapes.items():
        if name in given or not dims:
            continue
        if not isinstance(dims[0], int):
            sym = dims[0]
            dims[0] = symbols.get(sym, 1) if isinstance(sym, str) else 1
            if isinstance(sym, str):
                symbols.setdefault(sym, dims[0])
    for name, dims in shapes.items():
        if dims and name not in given:
            shapes[name] = [symbols.get(d, d) if isinstance(d, str) else d for d in dims]
    return shapes


def _skeleton(model, shapes: dict[str, list]):
    """A light copy for shape inference: fixed input shapes, big initializers turned into typed inputs."""
    import onnx
    from onnx import helper

    g = model.graph
    sk = onnx.ModelProto()
    sk.ir_version = model.ir_version
    sk.opset_import.extend(model.opset_import)
    sk.functions.extend(model.functions)
    sg = sk.graph
    sg.name = g.name or "graph"
    sg.node.extend(g.node)
    init_names = {t.name for t in g.initializer}
    for inp in g.input:
        if inp.name in init_names:
            continue
        vi = sg.input.add()
        vi.CopyFrom(inp)
        dims = shapes.get(inp.name)
        if dims is not None and vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")
            shape = vi.type.tensor_type.shape
            for d in dims:
                dim = shape.dim.add()
                if isinstance(d, int):
                    dim.dim_value = d
                elif isinstance(d, str):
                    dim.dim_param = d
    for t in g.initializer:
        if math.prod(t.dims) <= _SMALL_INIT:
            sg.initializer.append(t)
            if model.ir_version < 4:
                sg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            sg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for out in g.output:  # keep the element type, drop declared (possibly symbolic) dims
        vo = sg.output.add()
        vo.CopyFrom(out)
        if vo.type.HasField("tensor_type"):
            vo.type.tensor_type.ClearField("shape")
    return sk


def _infer(model, shapes: dict[str, list]):
    """-> (shape map, elem type map) over every value the inference could type."""
    import onnx

    sk = _skeleton(model, shapes)
    try:
        inferred = onnx.shape_inference.infer_shapes(sk, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        try:
            inferred = onnx.shape_inference.infer_shapes(sk, check_type=False, strict_mode=False, data_prop=False)
        except Exception:
            inferred = sk
    return _collect(inferred)


def _collect(model) -> tuple[dict[str, list | None], dict[str, int]]:
    g = model.graph
    shape_of: dict[str, list | None] = {}
    type_of: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            dims = _dims(vi.type)
            if dims is not None or vi.name not in shape_of:
                shape_of[vi.name] = dims
            if vi.type.tensor_type.elem_type:
                type_of[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        shape_of[t.name] = [int(d) for d in t.dims]
        type_of[t.name] = t.data_type
    return shape_of, type_of


def _ort_run_shapes(model, shapes: dict[str, list], names: list[str]) -> dict[str, tuple[list, int]] | None:
    """Last resort for shapes static inference cannot reach (e.g. through onnxruntime's com.microsoft
    ops): run the model once in onnxruntime on all-zero inputs of the fixed shapes, with graph
    optimizations off, and read ``{name: (shape, elem type)}`` of ``names``. None when that is not possible."""
    import onnx
    from onnx import helper

    try:
        import onnxruntime as ort
    except Exception:
        return None
    try:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        declared = {o.name for o in m.graph.output}
        init_names = {t.name for t in m.graph.initializer}
        wanted = [n for n in dict.fromkeys(names) if n and n not in init_names]
        for n in wanted:
            if n not in declared:
                m.graph.output.append(onnx.ValueInfoProto(name=n))
        feeds = {}
        for inp in m.graph.input:
            if inp.name in init_names:
                continue
            dims = shapes.get(inp.name)
            if dims is None or not all(isinstance(d, int) for d in dims):
                return None
            feeds[inp.name] = np.zeros(dims, dtype=helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = 1
        so.log_severity_level = 4
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        outs = sess.run(wanted, feeds)
    except Exception:
        return None
    out = {}
    for n, o in zip(wanted, outs):
        try:
            elem = helper.np_dtype_to_tensor_dtype(np.asarray(o).dtype)
        except Exception:
            elem = 0
        out[n] = ([int(d) for d in np.shape(o)], elem)
    return out


# --------------------------------------------------------------------------- the counter


@dataclass
class _Const:
    value: np.ndarray | None  # None: constant, but not evaluated (unsupported dtype/op)
    roots: tuple[str, ...]  # the initializers / Constant outputs it is made from


class _ShapeUnknown(Exception):
    def __init__(self, tensor: str):
        super().__init__(tensor)
        self.tensor = tensor


class _Counter:
    def __init__(self, model, input_shapes: dict[str, tuple] | None):
        if model.functions:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        self.model = model
        g = model.graph
        self.graph = g
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        self.init = {t.name: t for t in g.initializer}
        self.const_tensor: dict[str, Any] = dict(self.init)  # name -> TensorProto (or ndarray for value_*)
        self.producer: dict[str, Any] = {}
        for node in g.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                tensor = _constant_attr(node)
                if tensor is not None:
                    self.const_tensor[node.output[0]] = tensor
        self.input_shapes = _fix_inputs(g, set(self.init), input_shapes)
        self.shape_of, self.type_of = _infer(model, self.input_shapes)
        self._ort_tried = False
        self._cache: dict[str, _Const | None] = {}
        self._alias: dict[str, str] = {}  # Identity output -> the constant it copies

    # ---- constants
    def const(self, name: str) -> _Const | None:
        if not name:
            return None
        if name in self._cache:
            return self._cache[name]
        self._cache[name] = None  # guards against cycles
        result = self._const(name)
        self._cache[name] = result
        return result

    def _const(self, name: str) -> _Const | None:
        from onnx import numpy_helper

        if name in self.const_tensor:
            t = self.const_tensor[name]
            if isinstance(t, np.ndarray):
                return _Const(t, (name,))
            try:
                return _Const(numpy_helper.to_array(t), (name,))
            except Exception:
                return _Const(None, (name,))
        node = self.producer.get(name)
        if node is None or node.domain not in ("", "ai.onnx") or node.op_type not in _CHAIN_OPS:
            return None
        src = self.const(node.input[0]) if node.input else None
        if src is None:
            return None
        extra = [self.const(i) if i else None for i in node.input[1:]]
        if any(i and e is None for i, e in zip(node.input[1:], extra)):
            return None  # a non-constant shape/scale: not a constant chain
        value = None
        if src.value is not None and all(e is None or e.value is not None for e in extra):
            try:
                value = _eval_chain(node, src.value, [None if e is None else e.value for e in extra], self.opset)
            except Exception:
                value = None
        if node.op_type == "Identity":
            # An Identity of a constant is a tensor of its own: exporters emit one when they
            # de-duplicate equal-valued parameters (e.g. the all-zero folded biases of freshly
            # initialised BatchNorms), which are still distinct parameters of the model.
            self._alias[name] = src.roots[0]
            return _Const(value, (name,))
        return _Const(value, src.roots)

    def root_numel(self, root: str) -> int:
        root = self._storage(root)
        t = self.const_tensor[root]
        return int(t.size) if isinstance(t, np.ndarray) else int(math.prod(t.dims))

    def root_dtype(self, root: str) -> str:
        t = self.const_tensor[self._storage(root)]
        if isinstance(t, np.ndarray):
            return str(t.dtype)
        return dtype_name(t.data_type)

    def _storage(self, root: str) -> str:
        while root in self._alias:
            root = self._alias[root]
        return root

    # ---- shapes
    def shape(self, name: str, *, required: bool = True) -> list | None:
        c = self._cache.get(name)
        if c is not None and c.value is not None:
            return list(c.value.shape)
        dims = self.shape_of.get(name)
        if (dims is None or not all(isinstance(d, int) for d in dims)) and name in self.const_tensor:
            t = self.const_tensor[name]
            dims = list(t.shape) if isinstance(t, np.ndarray) else [int(d) for d in t.dims]
        if dims is None or not all(isinstance(d, int) for d in dims):
            if not self._ort_tried and self._inputs_concrete():
                # every input shape is known, yet static inference stopped somewhere (an op it does
                # not know): read the shapes of all MAC ops' tensors from one onnxruntime run
                self._ort_tried = True
                more = _ort_run_shapes(self.model, self.input_shapes, self._mac_tensors())
                if more:
                    for k, (v, elem) in more.items():
                        old = self.shape_of.get(k)
                        if old is None or not all(isinstance(d, int) for d in old):
                            self.shape_of[k] = v
                        if elem and k not in self.type_of:
                            self.type_of[k] = elem
                    return self.shape(name, required=required)
            if required:
                raise _ShapeUnknown(name)
            return None
        return dims

    def _mac_tensors(self) -> list[str]:
        names: list[str] = []
        for node in self.graph.node:
            kind = node.op_type in MAC_OPS if node.domain in ("", "ai.onnx") else (
                node.domain == "com.microsoft" and node.op_type in _MS_MAC_OPS)
            if kind:
                names += [n for n in list(node.input) + list(node.output) if n and n not in self.const_tensor]
        return names

    def _inputs_concrete(self) -> bool:
        return all(d is not None and all(isinstance(x, int) for x in d) for d in self.input_shapes.values())

    def elem_type(self, name: str) -> str | None:
        if name in self.type_of:
            return dtype_name(self.type_of[name])
        if name in self.const_tensor:
            return self.root_dtype(name)
        return None

    def activation_dtype(self, name: str) -> str | None:
        """The dtype an activation really travels in: through a QDQ pair, the quantized type."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and self.const(node.input[0]) is None:
            return self.elem_type(node.input[0])
        return self.elem_type(name)

    # ---- main loop
    def run(self) -> dict:
        per_op: list[dict] = []
        param_roots: dict[str, tuple[int, str]] = {}
        weights: dict[tuple, tuple[int, int]] = {}  # roots -> (elements, zeros)
        uncounted: Counter = Counter()
        act_dtypes: Counter = Counter()
        mac_outputs: set[str] = set()
        macs_total = nonzero_total = 0

        for index, node in enumerate(self.graph.node):
            op = node.op_type
            domain = node.domain
            label = node.name or (node.output[0] if node.output else f"#{index}")
            if domain in ("", "ai.onnx"):
                kind = op if op in MAC_OPS else None
            elif domain == "com.microsoft":
                kind = _MS_MAC_OPS.get(op)
            else:
                kind = None
            if kind is None:
                if any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute) or (
                        op in _UNCOUNTED and domain in ("", "ai.onnx")):
                    uncounted[op] += 1
                elif domain not in ("", "ai.onnx", "ai.onnx.ml") and op not in _KNOWN_CHEAP_MS:
                    uncounted[f"{domain}:{op}"] += 1
                roots = self._param_roots_other(node, mac_outputs)
                if roots:
                    for r in roots:
                        param_roots[r] = (self.root_numel(r), self.root_dtype(r))
                    per_op.append({"name": label, "op_type": op, "macs": 0, "nonzero_macs": 0,
                                   "params": sum(self.root_numel(r) for r in roots),
                                   "output_shape": self._out_shape(node)})
                continue
            try:
                res = _MAC_COUNTERS[kind](self, node)
            except _ShapeUnknown as exc:
                raise BenchError(self._shape_message(node, label, exc.tensor)) from None
            for r in res.param_roots:
                param_roots[r] = (self.root_numel(r), self.root_dtype(r))
            if res.weight is not None:
                weights[res.weight[0]] = res.weight[1:]
            macs_total += res.macs
            nonzero_total += res.nonzero
            act = self.activation_dtype(res.activation) if res.activation else None
            act_dtypes[act or "unknown"] += res.macs
            mac_outputs.update(o for o in node.output if o)
            per_op.append({"name": label, "op_type": op, "macs": res.macs, "nonzero_macs": res.nonzero,
                           "params": sum(self.root_numel(r) for r in res.param_roots),
                           "output_shape": self._out_shape(node)})

        params = sum(n for n, _ in param_roots.values())
        by_dtype: Counter = Counter()
        for n, dt in param_roots.values():
            by_dtype[dt] += n
        w_elems = sum(e for e, _ in weights.values())
        w_zeros = sum(z for _, z in weights.values())
        inputs = {name: self.elem_type(name) for name in self.input_shapes}
        if not act_dtypes:
            for dt in inputs.values():
                act_dtypes[dt or "unknown"] += 0
        init_elems = sum(self.root_numel(r) for r in self.const_tensor)
        return {
            "params": params,
            "macs": macs_total,
            "nonzero_macs": nonzero_total,
            "weight_sparsity": (w_zeros / w_elems) if w_elems else 0.0,
            "weight_elements": w_elems,
            "zero_weight_elements": w_zeros,
            "weight_bits": _bits(by_dtype),
            "activation_bits": {**_bits(act_dtypes), "inputs": inputs},
            "initializer_elements": init_elems,
            "opset": self.opset,
            "input_shapes": {k: v for k, v in self.input_shapes.items()},
            "uncounted_ops": dict(sorted(uncounted.items())),
            "convention": CONVENTION,
            "per_op": per_op,
        }

    def _out_shape(self, node) -> list | None:
        if not node.output or not node.output[0]:
            return None
        dims = self.shape_of.get(node.output[0])
        return None if dims is None else list(dims)

    def _shape_message(self, node, label: str, tensor: str) -> str:
        ins = ", ".join(f"{n}{_fmt_dims(d)}" for n, d in self.input_shapes.items()) or "none"
        return (f"cannot count MACs of node '{label}' ({node.op_type}): the shape of '{tensor}' is unknown after "
                f"shape inference; give the input shapes with --input-shape NAME=1x3x224x224 (model inputs: {ins})")

    def _param_roots_other(self, node, mac_outputs: set[str]) -> list[str]:
        """Parameters of non-MAC ops: normalisation affine, PRelu slopes, embeddings, bias Adds."""
        if node.domain not in ("", "ai.onnx"):
            return []
        op = node.op_type
        idx: list[int] = []
        if op in _NORM_OPS:
            idx = [1, 2]
        elif op == "PRelu":
            idx = [1]
        elif op == "Gather":
            c = self.const(node.input[0])
            if c is not None and len(self.shape(node.input[0], required=False) or []) >= 2:
                dt = self.elem_type(node.input[0]) or ""
                if dt.startswith(("float", "bfloat")) or self._through_dq(node.input[0]):
                    idx = [0]
        elif op == "Add" and len(node.input) == 2:
            for a, b in ((0, 1), (1, 0)):
                if self._fed_by_mac(node.input[a], mac_outputs) and self.const(node.input[b]) is not None:
                    idx = [b]
                    break
        roots: list[str] = []
        for i in idx:
            if i < len(node.input) and node.input[i]:
                c = self.const(node.input[i])
                if c is not None:
                    roots.extend(r for r in c.roots if r not in roots)
        return roots

    def _fed_by_mac(self, name: str, mac_outputs: set[str], depth: int = 4) -> bool:
        """Whether ``name`` is a MAC op's output, possibly rescaled (Cast/Mul/QDQ/reshaping) on the way:
        the bias Add of dynamically quantized (ConvInteger -> Cast -> Mul -> Add) and QDQ graphs."""
        if name in mac_outputs:
            return True
        node = self.producer.get(name)
        if depth <= 0 or node is None or node.op_type not in _RESCALE_OPS:
            return False
        return any(self._fed_by_mac(i, mac_outputs, depth - 1) for i in node.input if i and self.const(i) is None)

    def _through_dq(self, name: str) -> bool:
        node = self.producer.get(name)
        while node is not None and node.op_type in _CHAIN_OPS:
            if node.op_type == "DequantizeLinear":
                return True
            node = self.producer.get(node.input[0])
        return False


_KNOWN_CHEAP_MS = {"QuantizeLinear", "DequantizeLinear", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
                   "QLinearLeakyRelu", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat",
                   "QLinearSoftmax", "QLinearReduceMean", "Gelu", "FastGelu", "BiasGelu", "QuickGelu",
                   "SkipLayerNormalization", "LayerNormalization", "SimplifiedLayerNormalization",
                   "SkipSimplifiedLayerNormalization", "BiasAdd", "NhwcMaxPool", "QLinearWhere", "Trilu"}


def _constant_attr(node):
    """The tensor of a ``Constant`` node (TensorProto or ndarray), or None."""
    for a in node.attribute:
        if a.name == "value":
            return a.t
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _eval_chain(node, x: np.ndarray, extra: list, opset: int | None) -> np.ndarray:
    """numpy evaluation of the weight-only ops in :data:`_CHAIN_OPS`."""
    from onnx import helper

    op = node.op_type
    if op == "Identity":
        return x
    if op == "Cast":
        return x.astype(helper.tensor_dtype_to_np_dtype(_attr(node, "to")))
    if op == "Transpose":
        perm = _attr(node, "perm")
        return np.transpose(x, perm if perm else None)
    if op == "Reshape":
        shape = [int(s) for s in np.asarray(extra[0]).reshape(-1)]
        if not _attr(node, "allowzero", 0):
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return x.reshape(shape)
    if op == "Flatten":
        axis = _attr(node, "axis", 1)
        axis = axis + x.ndim if axis < 0 else axis
        return x.reshape(int(math.prod(x.shape[:axis])), -1)
    if op in ("Squeeze", "Unsqueeze"):
        axes = _attr(node, "axes")
        if axes is None and extra and extra[0] is not None:
            axes = [int(a) for a in np.asarray(extra[0]).reshape(-1)]
        if op == "Squeeze":
            if not axes:
                return np.squeeze(x)
            return np.squeeze(x, axis=tuple(a + x.ndim if a < 0 else a for a in axes))
        rank = x.ndim + len(axes)
        out = x
        for a in sorted(a + rank if a < 0 else a for a in axes):
            out = np.expand_dims(out, a)
        return out
    if op == "DequantizeLinear":
        scale = np.asarray(extra[0]).astype(np.float64)
        zp = np.asarray(extra[1]).astype(np.int64) if len(extra) > 1 and extra[1] is not None else None
        q = x.astype(np.int64) if zp is not None or np.issubdtype(x.dtype, np.integer) else x.astype(np.float64)
        if scale.size == 1:
            s = scale.reshape(())
            z = zp.reshape(()) if zp is not None else 0
            return (q - z) * s
        axis = _attr(node, "axis", 1)
        axis = axis + x.ndim if axis < 0 else axis
        block = _attr(node, "block_size", 0) or 0
        if block:
            s = np.repeat(scale, block, axis=axis)
            s = np.take(s, range(x.shape[axis]), axis=axis)
            z = 0
            if zp is not None:
                z = np.take(np.repeat(zp, block, axis=axis), range(x.shape[axis]), axis=axis)
            return (q - z) * s
        bshape = [1] * x.ndim
        bshape[axis] = -1
        z = zp.reshape(bshape) if zp is not None else 0
        return (q - z) * scale.reshape(bshape)
    raise ValueError(op)


def _bits(by_dtype: Counter) -> dict:
    """``{"bits": dominant bit-width, "dtype": dominant dtype, "by_dtype": {dtype: count}}``."""
    items = {k: int(v) for k, v in sorted(by_dtype.items(), key=lambda kv: (-kv[1], kv[0]))}
    if not items:
        return {"bits": None, "dtype": None, "by_dtype": {}}
    known = [k for k in items if k != "unknown"] or list(items)
    dominant = known[0]
    return {"bits": _DTYPE_BITS.get(dominant), "dtype": dominant, "by_dtype": items}


# --------------------------------------------------------------------------- per-op MAC counters


@dataclass
class _Result:
    macs: int
    nonzero: int
    param_roots: list[str]
    activation: str | None  # the activation input whose dtype the op computes in
    weight: tuple | None = None  # (roots, elements, zeros) of the op's weight tensor


def _input(node, i: int) -> str:
    return node.input[i] if i < len(node.input) else ""


def _effective(value: np.ndarray, zp: np.ndarray | None, axis: int | None) -> np.ndarray:
    """Weights with their zero point removed (a quantized weight is zero where it equals its zero point)."""
    if zp is None:
        return value
    z = np.asarray(zp).astype(np.int64)
    v = value.astype(np.int64)
    if z.size == 1:
        return v - z.reshape(())
    if axis is None:
        return v - z
    shape = [1] * v.ndim
    shape[axis] = -1
    return v - z.reshape(shape)


def _weight_info(c: _Const, eff: np.ndarray | None):
    """(roots, elements, zeros) for the sparsity tally; zeros unknown (None value) count as 0."""
    if eff is None:
        return None
    return (c.roots, int(eff.size), int(eff.size - np.count_nonzero(eff)))


def _roots(counter: _Counter, names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        c = counter.const(n) if n else None
        if c is not None:
            out.extend(r for r in c.roots if r not in out)
    return out


def _conv(counter: _Counter, node) -> _Result:
    op = node.op_type
    x, w, b, wzp = {
        "Conv": (0, 1, 2, None), "ConvTranspose": (0, 1, 2, None),
        "ConvInteger": (0, 1, None, 3), "QLinearConv": (0, 3, 8, 5),
    }.get(op, (0, 1, 2, None))  # FusedConv: as Conv
    xn, wn = _input(node, x), _input(node, w)
    bn = _input(node, b) if b is not None else ""
    wshape = counter.shape(wn)
    if op == "ConvTranspose":
        # W: (C_in, M/group, k...); every weight element meets every input position once
        xshape = counter.shape(xn)
        uses = xshape[0] * math.prod(xshape[2:])
    else:
        # W: (M, C_in/group, k...); every weight element meets every output position once
        yshape = counter.shape(node.output[0])
        uses = yshape[0] * math.prod(yshape[2:])
    macs = math.prod(wshape) * uses
    c = counter.const(wn)
    nonzero, weight = macs, None
    if c is not None and c.value is not None:
        zp = None
        if wzp is not None and _input(node, wzp):
            zc = counter.const(_input(node, wzp))
            zp = None if zc is None else zc.value
        eff = _effective(c.value, zp, 0)
        if op == "ConvTranspose":
            group = int(_attr(node, "group", 1))
            cin, mg = eff.shape[0], eff.shape[1]
            # output channel o = g * (M/group) + j reads W[g*Cg:(g+1)*Cg, j]
            per_out = np.count_nonzero(eff.reshape(group, cin // group, mg, -1), axis=(1, 3)).reshape(-1)
        else:
            per_out = np.count_nonzero(eff.reshape(eff.shape[0], -1), axis=1)  # per output channel
        nonzero = int(per_out.sum()) * uses
        weight = _weight_info(c, eff)
    return _Result(macs, nonzero, _roots(counter, [wn, bn]), xn, weight)


def _gemm(counter: _Counter, node) -> _Result:
    # QGemm (com.microsoft): A, a_scale, a_zp, B, b_scale, b_zp, C, y_scale, y_zp
    a, b, c, azp, bzp = (0, 3, 6, 2, 5) if node.op_type == "QGemm" else (0, 1, 2, None, None)
    an, bn, cn = _input(node, a), _input(node, b), _input(node, c)
    ta, tb = int(_attr(node, "transA", 0)), int(_attr(node, "transB", 0))
    ashape, bshape = counter.shape(an), counter.shape(bn)
    m, k = (ashape[1], ashape[0]) if ta else (ashape[0], ashape[1])
    n = bshape[0] if tb else bshape[1]
    macs = m * k * n
    nonzero, weight, act = macs, None, an
    cb, ca = counter.const(bn), counter.const(an)

    def zp_of(i):
        zc = counter.const(_input(node, i)) if i is not None and _input(node, i) else None
        return None if zc is None else zc.value

    if cb is not None and cb.value is not None:
        # b zero point (QGemm): per column N, i.e. along axis 0 of a transposed B
        eff = _effective(cb.value, zp_of(bzp), 0 if tb else 1)
        eff = eff.T if tb else eff  # (K, N)
        nonzero = int(np.count_nonzero(eff, axis=0).sum()) * m  # per output column, each used by M rows
        weight = _weight_info(cb, eff)
    elif ca is not None and ca.value is not None:
        eff = _effective(ca.value, zp_of(azp), None)
        eff = eff.T if ta else eff  # (M, K)
        nonzero = int(np.count_nonzero(eff, axis=1).sum()) * n
        weight = _weight_info(ca, eff)
        act = bn
    return _Result(macs, nonzero, _roots(counter, [an, bn, cn]), act, weight)


def _matmul(counter: _Counter, node) -> _Result:
    op = node.op_type
    a, b, azp, bzp = {"MatMul": (0, 1, None, None), "MatMulInteger": (0, 1, 2, 3),
                      "QLinearMatMul": (0, 3, 2, 5)}[op]
    an, bn = _input(node, a), _input(node, b)
    ashape, bshape = counter.shape(an), counter.shape(bn)
    k = ashape[-1]
    a2 = [1] + ashape if len(ashape) == 1 else ashape
    b2 = bshape + [1] if len(bshape) == 1 else bshape
    m, n = a2[-2], b2[-1]
    batch = _broadcast(a2[:-2], b2[:-2], node)
    macs = math.prod(batch) * m * k * n
    ca, cb = counter.const(an), counter.const(bn)
    nonzero, weight, act = macs, None, an

    def zp_of(i):
        if i is None or not _input(node, i):
            return None
        zc = counter.const(_input(node, i))
        return None if zc is None else zc.value

    if cb is not None and cb.value is not None:
        val = cb.value.reshape(cb.value.shape + (1,)) if cb.value.ndim == 1 else cb.value
        eff = _effective(val, zp_of(bzp), val.ndim - 1)  # b zero point: per column
        uses = macs // max(1, eff.size)  # every element of B is used equally often: batch/B-batch * M
        nonzero = int(np.count_nonzero(eff, axis=-2).sum()) * uses  # per output column
        weight = _weight_info(cb, eff)
    elif ca is not None and ca.value is not None:
        val = ca.value.reshape((1,) + ca.value.shape) if ca.value.ndim == 1 else ca.value
        eff = _effective(val, zp_of(azp), val.ndim - 2)  # a zero point: per row
        uses = macs // max(1, eff.size)
        nonzero = int(np.count_nonzero(eff, axis=-1).sum()) * uses  # per output row
        weight = _weight_info(ca, eff)
        act = bn
    return _Result(macs, nonzero, _roots(counter, [an, bn]), act, weight)


def _broadcast(a: list[int], b: list[int], node) -> list[int]:
    out = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else 1
        db = b[len(b) - 1 - i] if i < len(b) else 1
        if da != db and 1 not in (da, db):
            raise BenchError(f"node '{node.name or node.output[0]}' ({node.op_type}): batch dims {a} and {b} "
                             "do not broadcast; check --input-shape")
        out.insert(0, max(da, db))
    return out


_MAC_COUNTERS = {
    "Conv": _conv, "ConvTranspose": _conv, "ConvInteger": _conv, "QLinearConv": _conv,
    "Gemm": _gemm, "QGemm": _gemm, "MatMul": _matmul, "MatMulInteger": _matmul, "QLinearMatMul": _matmul,
}


# --------------------------------------------------------------------------- public entry


def count(model_or_path: Any, input_shapes: dict[str, tuple] | None = None) -> dict:
    """Count the complexity of an ONNX model.

    ``model_or_path``: a path to an ``.onnx`` file (its external data files are read
    too), the serialized bytes, or an ``onnx.ModelProto``. ``input_shapes``: ``{input
    name: shape}`` fixing dynamic dims; without it a symbolic batch dim (axis 0) is set
    to 1 and any other dynamic dim that a counted operator depends on is an error.
    (The key ``None`` means "the only input".)

    Returns a dict:

    ``params``, ``macs``, ``nonzero_macs``, ``model_bytes`` (file size incl. external
    data files; serialized size for a ModelProto), ``weight_sparsity`` (exact zeros /
    elements over the weight tensors of Conv/Gemm/MatMul and their quantized forms),
    ``weight_elements``, ``zero_weight_elements``, ``weight_bits`` and
    ``activation_bits`` (``{"bits", "dtype", "by_dtype"}``: parameter elements per dtype,
    resp. MACs per activation dtype; ``activation_bits["inputs"]`` maps each graph input
    to its dtype), ``initializer_elements`` (every constant element), ``opset``,
    ``input_shapes`` (as used), ``uncounted_ops`` (``{op: n}`` of ops with arithmetic
    this counter does not count), ``convention`` and ``per_op`` (``[{name, op_type,
    macs, nonzero_macs, params, output_shape}]`` for every MAC op and parameter-holding
    op, in graph order).

    Raises :class:`BenchError` for unreadable, corrupt or non-ONNX input and when a
    shape needed for a MAC count is unknown.
    """
    model, size, _label = _load(model_or_path)
    result = _Counter(model, input_shapes).run()
    per_op = result.pop("per_op")
    result["model_bytes"] = size
    result["per_op"] = per_op
    return result
