"""How compute and memory are counted for a decoder-only LLM, from its config alone.

Place in the data path: plan (artifact meta and ``bench complexity``) -- no framework import.

Conventions (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", Table 1):

- **Parameters.** ``embedding = vocab x d_model``; per layer: attention projections
  ``d_model x (heads x head_dim)`` (Q and O) and ``d_model x (kv_heads x head_dim)`` (K and V,
  fewer under grouped-query attention), the MLP (``3 x d_model x d_ff`` for a gated SiLU MLP
  as in llama, ``2 x d_model x d_ff`` otherwise), two RMS/LayerNorm weight vectors of
  ``d_model``; a final norm of ``d_model``; the LM head ``vocab x d_model`` unless tied to
  the embedding (then it is the same tensor, counted once). ``N`` (Kaplan's "non-embedding
  parameters") excludes the embedding and the head.
- **FLOPs per generated token** at context length ``c``: ``2 N + 2 x n_layers x c x d_attn``
  with ``d_attn = heads x head_dim`` -- 1 multiply-add = 2 FLOPs; the attention term is
  Kaplan's "mask" term (Q.K^T over the context; the A.V product doubles it); norms,
  rotary embeddings, softmax and activations are not counted. ``flops_per_token_with_head``
  adds the output projection ``2 x vocab x d_model``, which a real forward pass does compute
  (tied or not) and Kaplan's N leaves out.
- **KV cache** per token = ``2 (K and V) x n_layers x kv_heads x head_dim x bytes per element``.
  Weight-only int8/int4 variants quantize the weights only: their cache is in the activation
  dtype (fp32 on the CPU here); the ``int8`` entry is what an int8 cache would hold.
- **Training compute** ``C = 6 N D`` FLOPs for ``D`` tokens (forward 2ND + backward 4ND); the
  time at a peak throughput ``P`` is ``C / P`` (a lower bound: real training reaches a fraction
  of peak -- model FLOPs utilisation).
"""
from __future__ import annotations

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
GATED_MLP = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo", "olmo2",
             "smollm3", "granite")

CONVENTION = ("1 multiply-add = 2 FLOPs; forward FLOPs/token = 2N + 2 x layers x context x d_attn (Kaplan 2020; "
              "N = non-embedding parameters; attention term counts Q.K^T only; norms, rotary, softmax, activations "
              "not counted); 'with head' adds 2 x vocab x d_model for the output projection")


def param_counts(f: dict) -> dict:
    """Parameter counts from model facts (``layers, d_model, heads, kv_heads, head_dim, d_ff, vocab,
    tied_embedding, model_type``)."""
    d, hd = f["d_model"], f["head_dim"]
    q_o = 2 * d * f["heads"] * hd
    k_v = 2 * d * f["kv_heads"] * hd
    mlp = (3 if f.get("model_type") in GATED_MLP else 2) * d * f["d_ff"]
    norms = 2 * d
    per_layer = q_o + k_v + mlp + norms
    embedding = f["vocab"] * d
    head = 0 if f["tied_embedding"] else f["vocab"] * d
    non_embedding = f["layers"] * per_layer + d  # + final norm
    return {"total": embedding + head + non_embedding, "embedding": embedding, "lm_head": head,
            "tied_embedding": bool(f["tied_embedding"]), "non_embedding": non_embedding, "per_layer": per_layer,
            "attention_per_layer": q_o + k_v, "mlp_per_layer": mlp}


def flops_per_token(f: dict, context: int) -> dict:
    """Forward FLOPs to generate one token with ``context`` tokens in the cache (see module doc)."""
    if context < 0:
        raise ValueError("context must be >= 0")
    n = param_counts(f)["non_embedding"]
    attn = 2 * f["layers"] * context * f["heads"] * f["head_dim"]
    head = 2 * f["vocab"] * f["d_model"]
    return {"context": context, "dense": 2 * n, "attention": attn, "flops_per_token": 2 * n + attn,
            "head": head, "flops_per_token_with_head": 2 * n + attn + head}


def kv_bytes_per_token(f: dict, precision: str = "fp32") -> int:
    """``2 x layers x kv_heads x head_dim x bytes``."""
    return 2 * f["layers"] * f["kv_heads"] * f["head_dim"] * BYTES[precision]


def kv_cache_bytes(f: dict, tokens: int, batch: int = 1, precision: str = "fp32") -> int:
    """The cache of ``batch`` sequences of ``tokens`` tokens each."""
    return kv_bytes_per_token(f, precision) * tokens * batch


def training_compute(f: dict, tokens: float, peak_flops: float | None = None) -> dict:
    """``C = 6 N D`` (N non-embedding) and, with a peak throughput, the time ``C / peak``."""
    n = param_counts(f)["non_embedding"]
    c = 6.0 * n * tokens
    out = {"tokens": tokens, "flops": c, "flops_all_params": 6.0 * param_counts(f)["total"] * tokens}
    if peak_flops:
        out.update(peak_flops=peak_flops, seconds_at_peak=c / peak_flops)
    return out


def llm_counts(f: dict, context: int = 512, *, train_tokens: float | None = None,
               peak_flops: float | None = None) -> dict:
    """Everything above in one dict (what artifacts carry and ``bench complexity`` prints)."""
    p = param_counts(f)
    out = {"kind": "llm", "params": p["total"], "param_counts": p, "context": context,
           "flops": flops_per_token(f, context),
           "kv_bytes_per_token": {k: kv_bytes_per_token(f, k) for k in BYTES},
           "convention": CONVENTION}
    if train_tokens:
        out["training"] = training_compute(f, train_tokens, peak_flops)
    return out
