"""Generative LLM workload: token timestamps, metrics, KV-cache accounting, complexity formulas,
weight-only kernels, gates, bad input -- fast, on a tiny random llama; the real SmolLM2 in slow tests."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.measure import generation as gen
from harness.plan.complexity_llm import flops_per_token, kv_bytes_per_token, kv_cache_bytes, llm_counts, param_counts
from harness.errors import BenchError

# SmolLM2-135M's config (as converted from the GGUF: tests/test_llm.py::test_real_model_facts checks it)
SMOLLM2 = {"model_type": "llama", "layers": 30, "d_model": 576, "heads": 9, "kv_heads": 3, "head_dim": 64,
           "d_ff": 1536, "vocab": 49152, "max_context": 8192, "tied_embedding": True}


# --------------------------------------------------------------------------- timestamps and metrics


class ScriptedClock:
    """Returns the scripted times in order; fails the test if read more often than scripted."""

    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


class FakeSession:
    """Counts calls; the 'model' emits token 100 + step; cache grows one token per call."""

    def __init__(self, batch=1, per_token_bytes=10):
        self.calls = []
        self.batch = batch
        self.len = 0
        self.per = per_token_bytes

    def prefill(self, ids):
        self.calls.append("prefill")
        self.len = ids.shape[1]
        return np.full(ids.shape[0], 100)

    def decode(self):
        self.calls.append("decode")
        self.len += 1
        return np.full(self.batch, 100 + len(self.calls) - 1)

    def kv_cache_bytes(self):
        return self.len * self.per * self.batch

    def reset(self):
        self.calls.append("reset")
        self.len = 0


def test_generate_timed_reads_the_clock_once_per_token():
    clock = ScriptedClock([1_000, 51_000, 61_000, 72_000, 80_000])
    s = FakeSession()
    r = gen.generate_timed(s, np.zeros((1, 7), dtype=np.int64), 4, clock)
    assert s.calls == ["prefill", "decode", "decode", "decode", "reset"]
    assert r["start_ns"] == 1_000 and r["token_ns"] == [51_000, 61_000, 72_000, 80_000]
    assert r["tokens"].tolist() == [[100, 101, 102, 103]]
    assert r["kv_cache_bytes"] == (7 + 3) * 10  # prompt + fed-back tokens, read before reset
    assert clock.times == []
    t = gen.request_timing(r["start_ns"], r["token_ns"])
    assert t["ttft_ns"] == 50_000
    assert t["e2e_ns"] == 79_000
    assert t["tpot_ns"] == pytest.approx((79_000 - 50_000) / 3)
    assert t["itl_ns"] == [10_000, 11_000, 8_000]


def test_request_timing_edge_cases():
    assert gen.request_timing(0, [5])["tpot_ns"] is None
    with pytest.raises(ValueError):
        gen.request_timing(10, [5])
    with pytest.raises(ValueError):
        gen.request_timing(0, [5, 4])
    with pytest.raises(ValueError):
        gen.generate_timed(FakeSession(), np.zeros((1, 3)), 0)


def test_summarize_requests_tokens_per_second():
    # two back-to-back requests of batch 2, 3 tokens each
    reqs = [{"start_ns": 0, "token_ns": [100_000_000, 150_000_000, 200_000_000]},
            {"start_ns": 200_000_000, "token_ns": [300_000_000, 350_000_000, 400_000_000]}]
    s = gen.summarize_requests(reqs, batch=2, prompt_len=10)
    assert s["ttft_ns"]["p50"] == 100_000_000
    assert s["tpot_ns"]["p50"] == 50_000_000
    assert s["e2e_ns"]["p50"] == 200_000_000
    assert s["itl_ns"]["n"] == 4
    assert s["tokens_per_s"]["aggregate"] == pytest.approx(12 / 0.4)  # 2 x 3 x 2 tokens over 0.4 s
    assert s["tokens_per_s"]["per_request"]["p50"] == pytest.approx(6 / 0.2)
    assert s["tokens_per_s"]["per_sequence_p50"] == pytest.approx(3 / 0.2)
    assert s["tokens_per_s"]["decode_p50"] == pytest.approx(2 / 0.05)
    assert s["prefill_tokens_per_s_p50"] == pytest.approx(20 / 0.1)


def test_perplexity_and_top1_from_logits():
    # vocabulary 3; the model puts log-prob log(0.5) on the right next token at every position
    tokens = np.array([[0, 1, 2, 0]])
    logits = np.full((1, 4, 3), math.log(0.25))
    for i in range(3):
        logits[0, i, tokens[0, i + 1]] = math.log(0.5)
    s = gen.next_token_scores(logits, tokens)
    assert s["count"] == 3 and s["correct"] == 3
    assert gen.perplexity(s["nll_sum"], s["count"]) == pytest.approx(2.0)
    assert gen.windows(np.arange(10), 3, 3).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(ValueError):
        gen.windows(np.arange(5), 3, 2)


# --------------------------------------------------------------------------- complexity formulas


def test_complexity_matches_hand_count_for_smollm2():
    p = param_counts(SMOLLM2)
    # by hand: embedding 49152 x 576; per layer q,o 2 x 576 x 576, k,v 2 x 576 x 192, gated MLP 3 x 576 x 1536,
    # 2 norms x 576; final norm 576; tied head
    per_layer = 2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576
    assert per_layer == 3_540_096
    assert p["embedding"] == 28_311_552
    assert p["non_embedding"] == 30 * 3_540_096 + 576 == 106_203_456
    assert p["total"] == 134_515_008  # what transformers counts for the loaded model
    assert p["lm_head"] == 0 and p["tied_embedding"]
    f = flops_per_token(SMOLLM2, 512)
    assert f["dense"] == 2 * 106_203_456
    assert f["attention"] == 2 * 30 * 512 * 576
    assert f["flops_per_token_with_head"] == f["flops_per_token"] + 2 * 49152 * 576
    assert kv_bytes_per_token(SMOLLM2, "fp32") == 2 * 30 * 3 * 64 * 4 == 46_080
    assert kv_bytes_per_token(SMOLLM2, "bf16") == 23_040
    assert kv_cache_bytes(SMOLLM2, 640, batch=4, precision="fp32") == 46_080 * 640 * 4
    c = llm_counts(SMOLLM2, 512, train_tokens=2e12, peak_flops=1e15)
    assert c["training"]["flops"] == pytest.approx(6 * 106_203_456 * 2e12)
    assert c["training"]["seconds_at_peak"] == pytest.approx(6 * 106_203_456 * 2e12 / 1e15)
    untied = dict(SMOLLM2, tied_embedding=False)
    assert param_counts(untied)["total"] == 134_515_008 + 28_311_552


# --------------------------------------------------------------------------- tiny real model (transformers)

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_llama():
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=True)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _session(model, precision="fp32", scheme="weight-only"):
    import copy

    from backends.llm_torch import TorchGenerationSession

    return TorchGenerationSession(None, precision=precision, threads=1, model=copy.deepcopy(model), scheme=scheme)


def test_kv_cache_accounting_matches_formula(tiny_llama):
    s = _session(tiny_llama)
    facts = {"layers": 2, "kv_heads": 2, "head_dim": 16}
    prompt = np.arange(10, dtype=np.int64).reshape(2, 5)
    s.prefill(prompt)
    assert s.kv_cache_bytes() == kv_cache_bytes(facts, 5, batch=2, precision="fp32")
    for _ in range(3):
        s.decode()
    assert s.kv_cache_bytes() == kv_cache_bytes(facts, 8, batch=2, precision="fp32")
    s.reset()
    assert s.kv_cache_bytes() == 0
    b = _session(tiny_llama, "bf16")
    b.prefill(prompt)
    assert b.kv_cache_bytes() == kv_cache_bytes(facts, 5, batch=2, precision="bf16")


def test_greedy_session_equals_transformers_generate_tiny(tiny_llama):
    s = _session(tiny_llama)
    ids = np.array([[5, 17, 3, 99, 42, 7]], dtype=np.int64)
    r = gen.generate_timed(s, ids, 12)
    ref = tiny_llama.generate(torch.from_numpy(ids), max_new_tokens=12, min_new_tokens=12, do_sample=False,
                              pad_token_id=0)
    assert r["tokens"][0].tolist() == ref[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_weight_only_linear_kernels(precision):
    from torch import nn

    from backends.llm_torch import _linear_classes

    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    int8_cls, int4_cls = _linear_classes()
    q = (int8_cls if precision == "int8" else int4_cls)(lin)
    x = torch.randn(3, 5, 64)
    w = lin.weight.detach()
    if precision == "int8":
        deq = q.weight_int8.float() * q.scale[:, None]
    else:  # unpack the reference dequantization from the stored scales/zeros is the kernel's job: rebuild it
        g = 32
        wg = w.reshape(48, 2, g)
        lo = wg.amin(-1, keepdim=True)
        sc = ((wg.amax(-1, keepdim=True) - lo) / 15).clamp(min=1e-12)
        deq = (torch.round((wg - lo) / sc).clamp(0, 15) * sc + lo).reshape(48, 64)
    got = q(x)
    assert got.shape == (3, 5, 48)
    torch.testing.assert_close(got, x @ deq.T + lin.bias.detach(), rtol=1e-4, atol=1e-4)
    # and it is a quantization: different from the fp32 layer, but close
    err = (got - lin(x)).abs().max().item()
    assert 0 < err < (0.05 if precision == "int8" else 0.5)


def test_int8_weight_only_prefill_path_is_the_decode_kernels_function():
    """Rows <= DECODE_ROWS go through ATen's int8 kernel, longer inputs through the dequantized
    weight: the same numbers (fp32 accumulation order aside) for the same rows."""
    from torch import nn

    from backends.llm_torch import DECODE_ROWS, _linear_classes

    torch.manual_seed(0)
    q = _linear_classes()[0](nn.Linear(64, 48))
    x = torch.randn(DECODE_ROWS + 8, 64)
    short = q(x[:DECODE_ROWS])  # kernel
    long = q(x)  # dequantize + matmul
    torch.testing.assert_close(long[:DECODE_ROWS], short, rtol=1e-5, atol=1e-5)


def test_int8_dynamic_session_quantizes_activations_too(tiny_llama):
    s = _session(tiny_llama, "int8", scheme="dynamic")
    assert s.info["quantized_linear_layers"] == 2 * 7 + 1 and s.info["quant_scheme"] == "dynamic"
    assert "dynamic" in s.info["activation_dtype"] and "quantized" in next(iter(s.info["int8_kernels"].values()))
    ids = np.array([[1, 2, 3, 4, 5]], dtype=np.int64)
    got = s.logits(ids)
    ref = _session(tiny_llama).logits(ids)
    err = np.abs(got - ref).max()
    assert 0 < err < 0.1 * np.abs(ref).max()  # quantized, and close
    assert s.prefill(ids).shape == (1,) and s.decode().shape == (1,)
    from backends.base import UnsupportedCase

    with pytest.raises(UnsupportedCase, match="dynamic"):
        _session(tiny_llama, "int4", scheme="dynamic")


def test_weight_only_session_replaces_every_linear(tiny_llama):
    s = _session(tiny_llama, "int8")
    assert s.info["quantized_linear_layers"] == 2 * 7 + 1  # q,k,v,o,gate,up,down per layer + head
    out = s.prefill(np.array([[1, 2, 3]], dtype=np.int64))
    assert out.shape == (1,)


def test_gates():
    from harness.run.llm_case import gate, settings_from

    g = settings_from({"gates": {"perplexity_within": {"default": 0.02, "int4-weight-only": 0.1},
                                 "zero_shot_max_drop": 0.03}})
    ref = {"text": {"perplexity": 20.0}, "zero_shot": {"accuracy": 0.75}}
    ok = gate({"text": {"perplexity": 20.3}, "zero_shot": {"accuracy": 0.73}}, ref, g, "int8-weight-only")
    assert ok["passed"] and ok["perplexity_ratio"] == pytest.approx(1.015)
    bad = gate({"text": {"perplexity": 20.5}, "zero_shot": {"accuracy": 0.75}}, ref, g, "int8-weight-only")
    assert not bad["perplexity_passed"] and bad["zero_shot_passed"] and not bad["passed"]
    int4 = gate({"text": {"perplexity": 21.5}, "zero_shot": {"accuracy": 0.70}}, ref, g, "int4-weight-only")
    assert int4["perplexity_passed"] and not int4["zero_shot_passed"]


def test_bad_lengths_are_one_line_errors():
    from harness.run.llm_case import check_lengths

    with pytest.raises(BenchError, match="output length 0 < 1"):
        check_lengths([[16, 0]])
    with pytest.raises(BenchError, match="exceed the model's context window of 8192"):
        check_lengths([[8000, 200]], 8192)
    assert check_lengths([[128, 128]], 8192) == [[128, 128]]


def test_not_a_causal_lm(tmp_path):
    from suites.zoo.llm import check_checkpoint

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(BenchError, match="not a causal LM"):
        check_checkpoint(tmp_path)
    with pytest.raises(BenchError, match="not a checkpoint directory"):
        check_checkpoint(tmp_path / "nope")


def test_polarity_parser():
    from suites.zoo.llm_data import parse_polarity

    s, y = parse_polarity("__label__pos  a  fine film \n__label__neg dull .\n\n")
    assert s == ["a fine film", "dull ."] and y == [1, 0]
    with pytest.raises(BenchError):
        parse_polarity("__label__meh what")


# --------------------------------------------------------------------------- the real SmolLM2 (slow)


def _real_artifact():
    from harness.errors import MissingDependency
    from suites.build import artifact_for

    try:
        art, _ = artifact_for("smollm2-135m")
    except MissingDependency as exc:
        pytest.skip(str(exc))
    return art


@pytest.mark.slow
def test_real_model_facts_and_greedy_equality():
    from backends.llm_torch import checkpoint_dir, load_causal_lm, prepare

    art = _real_artifact()
    f = art.meta["model_facts"]
    assert {k: f[k] for k in SMOLLM2} == SMOLLM2
    assert art.meta["complexity"]["params"] == 134_515_008
    ref_model = load_causal_lm(checkpoint_dir(art))
    assert sum(p.numel() for p in ref_model.parameters()) == 134_515_008  # tied head counted once
    s = prepare(art, precision="fp32", threads=1)
    tokens = np.load(art.dir / "text.npz")["tokens"]
    ids = np.asarray(tokens[1000:1024], dtype=np.int64)[None]
    r = gen.generate_timed(s, ids, 12)
    ref = ref_model.generate(torch.from_numpy(ids), max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert r["tokens"][0].tolist() == ref[0, ids.shape[1]:].tolist()
    # the cache holds prompt + fed-back tokens, at the formula's bytes
    s.prefill(ids)
    assert s.kv_cache_bytes() == kv_cache_bytes(f, 24, precision="fp32")


TINY_SUITE = """
name: genai-test
models:
  - {name: smollm2-135m, variants: [fp32, int8-weight-only], batch_sizes: [2]}
scenarios: [single-stream, offline]
generation:
  lengths: [[16, 4]]
  requests: 1
  warmup_requests: 0
  perplexity: {windows: 1, window: 64}
  zero_shot: {n: 4}
  gates: {perplexity_within: 0.25, zero_shot_max_drop: 0.5}  # 63 predicted tokens: noisy
case_timeout_s: 900
"""


def _bench(*args, cwd):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=1800)


@pytest.mark.slow
def test_bench_run_generation_end_to_end(tmp_path):
    _real_artifact()
    suite = tmp_path / "genai-test.yaml"
    suite.write_text(TINY_SUITE)
    p = _bench("run", "--suite", str(suite), "--backend", "cpu", "--threads", "1", "--out", str(tmp_path / "r"),
               "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "TTFT p50" in p.stdout
    rec = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    by = {c["case_id"]: c for c in rec["cases"]}
    ss = by["smollm2-135m/fp32/cpu-torch/single-stream/b1"]
    assert ss["status"] == "ok" and ss["runtime"] == "torch"
    for k in ("ttft_ns", "tpot_ns", "itl_ns"):
        assert ss[k]["n"] >= 1 and ss[k]["p50"] > 0
    assert ss["tpot_ns"]["p50"] <= ss["latency_ns"]["p50"]
    from harness.store.records import validation_errors

    assert validation_errors(rec) == []
    assert ss["tokens_per_s"]["aggregate"] > 0
    assert ss["accuracy"]["perplexity"] > 1 and 0 < ss["accuracy"]["next_token_top1"] < 1
    assert ss["accuracy"]["zero_shot_n"] == 4
    # KV cache: prompt 16 + 3 fed-back tokens, fp32, batch 1
    assert ss["memory"]["kv_cache_bytes"] == kv_cache_bytes(SMOLLM2, 19, precision="fp32")
    assert 0 < ss["memory"]["kv_cache_share"] < 1
    q = by["smollm2-135m/int8-weight-only/cpu-torch/single-stream/b1"]
    assert q["precision"] == "int8" and q["backend_info"]["quantized_linear_layers"] == 30 * 7 + 1
    assert q["accuracy"]["reference"]["perplexity"] == pytest.approx(ss["accuracy"]["perplexity"])
    assert q["accuracy"]["gates"]["perplexity_ratio"] != 1.0  # really quantized
    off = by["smollm2-135m/fp32/cpu-torch/offline/b2"]
    assert off["memory"]["kv_cache_bytes"] == kv_cache_bytes(SMOLLM2, 19, batch=2, precision="fp32")
    assert off["headline"]["metric"] == "output_tokens_per_s"


@pytest.mark.slow
def test_bench_run_bad_generation_lengths_exit_2(tmp_path):
    _real_artifact()
    for lengths, msg in (("[[16, 0]]", "output length 0 < 1"), ("[[8190, 8]]", "context window of 8192")):
        suite = tmp_path / "bad.yaml"
        suite.write_text(TINY_SUITE.replace("[[16, 4]]", lengths))
        p = _bench("run", "--suite", str(suite), "--backend", "cpu", "--out", str(tmp_path / "r"), "-q", cwd=tmp_path)
        assert p.returncode == 2, p.stderr
        assert msg in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


def test_bench_run_not_a_causal_lm_exit_2(tmp_path):
    ckpt = tmp_path / "encoder"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    p = _bench("run", "--model", str(ckpt), "--backend", "cpu", "--out", str(tmp_path / "r"), "-q", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert "not a causal LM" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def _tiny_checkpoint(tmp_path):
    """A user's causal-LM folder: a small random llama with SmolLM2's tokenizer."""
    import shutil

    from backends.llm_torch import checkpoint_dir

    art = _real_artifact()
    ckpt = tmp_path / "tiny-llama"
    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(ckpt)
    for f in checkpoint_dir(art).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, ckpt / f.name)
    return ckpt


@pytest.mark.slow
def test_bench_run_own_checkpoint_directory(tmp_path):
    """A user's causal-LM folder runs through the same path."""
    ckpt = _tiny_checkpoint(tmp_path)
    suite = tmp_path / "s.yaml"
    suite.write_text(TINY_SUITE.replace("variants: [fp32, int8-weight-only], batch_sizes: [2]",
                                        "variants: [fp32]"))
    p = _bench("run", "--suite", str(suite), "--model", str(ckpt), "--backend", "cpu", "--threads", "1",
               "--scenario", "single-stream", "--out", str(tmp_path / "r"), "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rec = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    (c,) = rec["cases"]
    assert c["model"] == "tiny-llama" and c["status"] == "ok"
    facts = {"layers": 2, "kv_heads": 2, "head_dim": 16}
    assert c["memory"]["kv_cache_bytes"] == kv_cache_bytes(facts, 19, precision="fp32")
    assert c["accuracy"]["perplexity"] > 1000  # random weights: near-uniform over 49,152 tokens


@pytest.mark.slow
def test_bench_run_llm_server_end_to_end(tmp_path):
    """`--scenario server` through `bench run`: Poisson requests at the suite's QPS, p99 TTFT / TPOT by
    early stopping against the bounds; enough requests -> valid; a bound no request can meet -> invalid
    with the reason (the run goes on and keeps the figures)."""
    ckpt = _tiny_checkpoint(tmp_path)
    server = "  server: {qps: 30, requests: 480, ttft_p99_ms: 5000, tpot_p99_ms: 2000}\n"
    suite = tmp_path / "s.yaml"
    suite.write_text(TINY_SUITE.replace("variants: [fp32, int8-weight-only], batch_sizes: [2]", "variants: [fp32]")
                     .replace("  requests: 1\n", "  requests: 1\n" + server))
    p = _bench("run", "--suite", str(suite), "--model", str(ckpt), "--backend", "cpu", "--threads", "1",
               "--scenario", "server", "--out", str(tmp_path / "r"), "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rec = json.loads(next((tmp_path / "r").glob("*.json")).read_text())
    (c,) = rec["cases"]
    assert c["scenario"] == "server" and c["status"] == "ok", c.get("reason")
    sv = c["generation"]["server"]
    assert sv["requests"] == 480 and sv["meets_bounds"] and sv["p99_ttft_early_stopping"]["estimate"] is not None
    assert c["headline"]["metric"] == "p99_ttft_ns" and c["headline"]["value"] == c["ttft_ns"]["p99"]
    assert 0 < c["tokens_per_s"]["aggregate"]
    # the same run with a bound nothing meets: invalid, reason named, figures kept
    suite.write_text(suite.read_text().replace("ttft_p99_ms: 5000", "ttft_p99_ms: 0.001"))
    p = _bench("run", "--suite", str(suite), "--model", str(ckpt), "--backend", "cpu", "--threads", "1",
               "--scenario", "server", "--out", str(tmp_path / "r2"), "-q", cwd=tmp_path)
    rec = json.loads(next((tmp_path / "r2").glob("*.json")).read_text())
    (c,) = rec["cases"]
    assert c["status"] == "invalid" and "p99 ttft" in c["reason"] and c["ttft_ns"]["n"] == 480, c.get("reason")
    assert p.returncode == 1


def test_server_scenario_poisson_with_fake_session():
    """Poisson arrivals through the load generator; TTFT counts from the scheduled arrival; too few
    requests for a p99 estimate is said, never passed."""
    from harness.run.llm_case import run_server, settings_from

    g = settings_from({"server": {"qps": 2000.0, "requests": 30, "ttft_p99_ms": 1000.0, "tpot_p99_ms": 1000.0}})
    out = run_server(FakeSession(), np.arange(1000), 0, 8, 4, g)
    assert out["requests"] == 30 and out["ttft_ns"]["n"] == 30 and out["tpot_ns"]["n"] == 30
    assert out["ttft_ns"]["min"] >= 0
    assert not out["meets_bounds"] and any("too few" in r for r in out["reasons"])
    assert out["p99_ttft_early_stopping"]["min_queries"] > 30
    big = run_server(FakeSession(), np.arange(100_000), 0, 8, 2,
                     settings_from({"server": {"qps": 20000.0, "requests": 600, "ttft_p99_ms": 1000.0,
                                               "tpot_p99_ms": 1000.0}}))
    assert big["meets_bounds"], big["reasons"]
