"""Generation sessions in torch for LLM artifacts: prefill, then greedy decode with a KV cache.

Place in the data path: backend side of a generation case (``harness.run.llm_case`` drives it and
owns the clock). Used by the ``cpu`` backend (``--runtime torch``; the LLM's only CPU runtime)
and the ``cuda`` backend.

The model is a ``transformers`` causal LM loaded from the artifact's checkpoint folder; each
call runs the model's own ``forward`` with a ``DynamicCache`` -- the same code path as
``transformers.generate`` -- and returns the greedy token ids on the host. Prefill computes
the logits of the last position only (``logits_to_keep=1``), as ``generate`` does.

Precisions:
- ``fp32`` / ``bf16`` / ``fp16``: the weights (and so activations and KV cache) cast to the dtype.
  On a CPU without native bf16 (AVX2 only, no AVX512-BF16/AMX) torch still runs bf16, by
  converting to fp32 inside its kernels: correct, but usually slower than fp32 there;
  ``info["cpu_capability"]`` records what torch found.
- ``int8`` weight-only: every ``nn.Linear`` (the LM head included; the embedding lookup stays
  fp32) holds int8 weights with one fp32 scale per output channel (symmetric, round to
  nearest, ``scale = max|w| / 127``). Inputs of at most ``DECODE_ROWS`` rows (decode steps) go
  through ATen's ``_weight_int8pack_mm`` (an int8-weight kernel, activations fp32); longer ones
  (prefill, the perplexity windows) through the layer's weight dequantized for that call and a
  dense matmul -- the same function (fp32 accumulation of x x q x scale), as engines split
  prefill and decode kernels. Why: on an AVX2 CPU without AVX-512 that ATen kernel is a slow
  fallback (measured, one thread, 576 -> 1536: 1.5 ms at 1 row vs 0.5 ms dequantize + matmul,
  1,130 ms at 512 rows vs 21 ms); ``info["int8_kernels"]`` says which kernel served which rows.
- ``int8`` dynamic (variant ``int8-dynamic``, CPU): torch's dynamic quantization
  (``torch.ao.quantization.quantize_dynamic``, the fbgemm / x86 engine): int8 weights per
  tensor and int8 activations quantized per call from their range, an int8 GEMM with int32
  accumulation. Measured at 576 -> 1536, one thread: 0.097 ms at 1 row (fp32 0.116 ms),
  8.8 ms at 512 rows (fp32 14.0 ms).
- ``int4`` weight-only: asymmetric 4-bit per group of 32 input channels (``scale = (max-min)/15``,
  ``w ~ q x scale + min``) packed for ATen's ``_weight_int4pack_mm_for_cpu`` (the tinygemm CPU
  kernel torchao uses). CPU only here: on CUDA the kernel needs another packing, not built.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from backends.base import GenerationSession, UnsupportedCase

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
WEIGHT_ONLY = ("int8", "int4")
INT4_GROUP = 32
#: inputs with at most this many rows use the int8 weight-only decode kernel; longer ones the dequantized weight
DECODE_ROWS = 8


def _linear_classes():
    import torch
    from torch import nn

    class Int8WeightOnlyLinear(nn.Module):
        """``y = x W^T + b`` with W int8 per output channel; ATen's int8-weight matmul kernel."""

        def __init__(self, linear: nn.Linear):
            super().__init__()
            w = linear.weight.detach().float()
            scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
            self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8))
            self.register_buffer("scale", scale)
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())
            self.out_features = w.shape[0]

        def forward(self, x):
            shape = x.shape
            x2 = x.reshape(-1, shape[-1]).to(self.scale.dtype)
            if x2.shape[0] <= DECODE_ROWS:
                y = torch._weight_int8pack_mm(x2, self.weight_int8, self.scale)
            else:  # prefill: this layer's weight dequantized for the call (freed after), a dense matmul
                y = x2 @ (self.weight_int8.to(x2.dtype) * self.scale[:, None]).T
            y = y.reshape(*shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias

    class Int4WeightOnlyLinear(nn.Module):
        """Asymmetric int4 per group of ``INT4_GROUP`` input channels; ATen's tinygemm CPU kernel."""

        def __init__(self, linear: nn.Linear, group: int = INT4_GROUP):
            super().__init__()
            w = linear.weight.detach().float()
            n, k = w.shape
            if k % group:
                raise UnsupportedCase(f"int4 weight-only: in_features {k} is not a multiple of the group {group}")
            wg = w.reshape(n, k // group, group)
            lo = wg.amin(dim=-1, keepdim=True)
            scale = ((wg.amax(dim=-1, keepdim=True) - lo) / 15.0).clamp(min=1e-12)
            q = torch.round((wg - lo) / scale).clamp(0, 15).to(torch.int32).reshape(n, k)
            # the kernel computes w = (q - 8) x scale + zero, so zero = min + 8 x scale
            sz = torch.cat([scale, lo + 8 * scale], dim=-1).permute(1, 0, 2).contiguous()  # (k/group, n, 2)
            self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2))
            self.register_buffer("scales_and_zeros", sz)
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())
            self.group = group
            self.out_features = n

        def forward(self, x):
            shape = x.shape
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).to(self.scales_and_zeros.dtype),
                                                           self.packed, self.group, self.scales_and_zeros)
            y = y.reshape(*shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias

    return Int8WeightOnlyLinear, Int4WeightOnlyLinear


def quantize_weight_only(model, precision: str) -> int:
    """Replace every ``nn.Linear`` of ``model`` in place; returns how many were replaced."""
    from torch import nn

    int8_cls, int4_cls = _linear_classes()
    cls = int8_cls if precision == "int8" else int4_cls
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, lin in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, cls(lin))
    if hasattr(model.config, "tie_word_embeddings"):
        model.config.tie_word_embeddings = False  # the head is now its own (quantized) tensor
    return len(targets)


def quantize_dynamic_int8(model) -> int:
    """Every ``nn.Linear`` of ``model`` to torch's dynamic int8 Linear (fbgemm / x86); returns how many."""
    import warnings

    import torch
    from torch import nn

    n = sum(1 for m in model.modules() if isinstance(m, nn.Linear))
    if hasattr(model.config, "tie_word_embeddings"):
        model.config.tie_word_embeddings = False  # the head becomes its own (quantized) tensor
    with warnings.catch_warnings():  # torch.ao's eager API warns that it moves to torchao
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return n


def cache_nbytes(cache) -> int:
    """Bytes held by a transformers cache's key/value tensors."""
    total = 0
    for layer in getattr(cache, "layers", ()):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None and hasattr(t, "nbytes"):
                total += int(t.nbytes)
    return total


def load_causal_lm(hf_dir: Path | str):
    import os

    import torch
    from transformers import AutoModelForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()


class TorchGenerationSession(GenerationSession):
    def __init__(self, hf_dir: Path | str, *, precision: str, threads: int, device: str = "cpu",
                 options: Mapping[str, Any] | None = None, model=None, scheme: str = "weight-only"):
        super().__init__()
        import torch

        if precision not in DTYPES and precision not in WEIGHT_ONLY:
            raise UnsupportedCase(f"torch generation: no {precision} path (choose from fp32, bf16, fp16, int8, int4)")
        if scheme not in ("weight-only", "dynamic") or (scheme == "dynamic" and precision != "int8"):
            raise UnsupportedCase(f"torch generation: no {precision} {scheme} path")
        if device != "cpu" and precision in WEIGHT_ONLY:
            raise UnsupportedCase(f"{precision} {scheme} on {device}: the kernels used here (ATen's weight-only, "
                                  "fbgemm's dynamic int8) are CPU ones; a CUDA path is not built")
        if device == "cpu":
            torch.set_num_threads(threads)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass
        self._torch = torch
        model = model if model is not None else load_causal_lm(hf_dir)
        n_quant = 0
        if precision == "int8" and scheme == "dynamic":
            n_quant = quantize_dynamic_int8(model)
        elif precision in WEIGHT_ONLY:
            n_quant = quantize_weight_only(model, precision)
        else:
            model = model.to(getattr(torch, DTYPES[precision]))
        self._model = model.to(device).eval()
        self._device = device
        import inspect

        # transformers >= 5.2x names the argument ``cache`` (``past_key_values`` is deprecated)
        self._cache_kw = "cache" if "cache" in inspect.signature(type(model).forward).parameters \
            else "past_key_values"
        self._cache = None
        self._last = None
        cfg = model.config
        self.max_context = int(getattr(cfg, "max_position_embeddings", 0) or 0)
        self.precision = precision
        self.info = {"runtime": "torch", "device": device, "precision": precision,
                     "weights_dtype": ("int8 (per-tensor scale)" if scheme == "dynamic" else
                                       {"int8": "int8 (per-channel scale)", "int4": f"int4 (group {INT4_GROUP})"}.get(
                                           precision, DTYPES.get(precision))),
                     "activation_dtype": ("int8, quantized per call (dynamic)" if scheme == "dynamic"
                                          else DTYPES.get(precision, "float32")),
                     "quantized_linear_layers": n_quant,
                     **({"quant_scheme": scheme} if precision in WEIGHT_ONLY else {}),
                     **({"int8_kernels": {f"rows <= {DECODE_ROWS} (decode)": "aten._weight_int8pack_mm",
                                          f"rows > {DECODE_ROWS} (prefill)": "weight dequantized per call + matmul"}}
                        if precision == "int8" and scheme == "weight-only" else {}),
                     **({"int8_kernels": {"all": f"torch.ao dynamic quantized Linear "
                                                 f"({torch.backends.quantized.engine})"}}
                        if scheme == "dynamic" else {}),
                     "cpu_capability": torch.backends.cpu.get_cpu_capability() if device == "cpu" else None,
                     "num_threads": torch.get_num_threads(), "greedy": True, "stops_at_eos": False,
                     "attn_implementation": getattr(cfg, "_attn_implementation", None),
                     "transformers_cache": "DynamicCache"}

    # -- generation -------------------------------------------------------------------------

    def _forward(self, ids):
        out = self._model(input_ids=ids, **{self._cache_kw: self._cache}, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(dim=-1)
        self._last = nxt[:, None]
        return nxt.cpu().numpy()  # on cuda .cpu() waits for the device: the token is really there

    def prefill(self, input_ids):
        from transformers import DynamicCache

        torch = self._torch
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self._device)
        self._cache = DynamicCache(config=self._model.config)
        with torch.inference_mode():
            return self._forward(ids)

    def decode(self):
        if self._cache is None:
            raise RuntimeError("decode() before prefill()")
        with self._torch.inference_mode():
            return self._forward(self._last)

    def kv_cache_bytes(self) -> int:
        return 0 if self._cache is None else cache_nbytes(self._cache)

    def logits(self, input_ids):
        torch = self._torch
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self._device)
        with torch.inference_mode():
            out = self._model(input_ids=ids, use_cache=False)
        return out.logits.float().cpu().numpy()

    def reset(self) -> None:
        self._cache = None
        self._last = None

    def memory(self) -> dict:
        m = self._model
        weights = sum(int(p.nbytes) for p in m.parameters()) + sum(int(b.nbytes) for b in m.buffers())
        out = {"weights_bytes": weights}
        if self._device.startswith("cuda"):
            torch = self._torch
            out["device_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        return out

    def energy_meter(self):
        if self._device == "cpu":
            from harness.measure.energy import RaplMeter

            return RaplMeter()
        return None

    def close(self) -> None:
        self._cache = None
        self._model = None


def checkpoint_dir(artifact) -> Path:
    """The transformers checkpoint folder of an LLM artifact (a variant's meta points at its base's)."""
    meta = artifact.meta
    root = (Path(artifact.dir) / meta["base_dir"]).resolve() if meta.get("base_dir") else Path(artifact.dir)
    d = root / meta.get("hf_dir", "hf")
    if not (d / "config.json").is_file():
        raise UnsupportedCase(f"LLM artifact {artifact.dir}: no checkpoint at {d} (rebuild with --rebuild)")
    return d


def prepare(artifact, *, precision: str, threads: int, device: str = "cpu",
            options: Mapping[str, Any] | None = None) -> TorchGenerationSession:
    """A session for an LLM artifact (``meta["kind"] == "llm"``)."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise UnsupportedCase("the LLM generation session needs transformers (pip install -e '.[llm]')")
    hf_dir = checkpoint_dir(artifact)
    variant = ((artifact.meta or {}).get("recipe") or {}).get("name", "")
    scheme = "dynamic" if variant.endswith("-dynamic") else "weight-only"
    return TorchGenerationSession(hf_dir, precision=precision, threads=threads, device=device, options=options,
                                  scheme=scheme)
