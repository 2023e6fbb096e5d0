"""The real models' data and weights: offline loaders, labelled counts, gates, missing packages, tables.

Loaders run with the network blocked (``socket`` patched to refuse). Data that is not
installed here skips with the install command -- except under ``BENCH_REQUIRE_DATA=1``
(``.ci/run`` sets it after ``bench data install``), where a missing source fails.
"""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

from harness.errors import BenchError
from suites import datasets
from tests.conftest import bench_env, run_bench


def need(*names):
    for n in names:
        if datasets.locate(n) is None:
            msg = f"data source {n} is not installed (bench data install {n})"
            if os.environ.get("BENCH_REQUIRE_DATA") == "1":
                pytest.fail(msg)
            pytest.skip(msg)


@pytest.fixture
def offline(monkeypatch):
    """No network: any connection or name lookup raises."""
    def refuse(*a, **k):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --------------------------------------------------------------------------- loaders, offline


def test_fashion_mnist_counts_offline(offline):
    need("fashion-mnist")
    from suites.zoo import fashion

    d = fashion.load_fashion_mnist()
    assert d["x_train"].shape == (60000, 28, 28) and d["x_test"].shape == (10000, 28, 28)
    assert d["x_train"].dtype == np.uint8 and d["y_test"].shape == (10000,)
    assert np.bincount(d["y_test"]).tolist() == [1000] * 10  # the test split is balanced
    assert np.bincount(d["y_train"]).tolist() == [6000] * 10


def test_read_idx_rejects_garbage(tmp_path):
    from suites.zoo.fashion import read_idx

    (tmp_path / "bad").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(BenchError, match="truncated"):
        read_idx(tmp_path / "bad")
    (tmp_path / "png").write_bytes(b"\x89PNG....")
    with pytest.raises(BenchError, match="not an IDX"):
        read_idx(tmp_path / "png")


def test_text_tasks_counts_offline(offline):
    need("gensim-test-data")
    from suites.zoo import text

    sents, labels = text.load_polarity()
    assert len(sents) == 200 and int(labels.sum()) == 100
    assert any("\u00e9" in s or "'" in s for s in sents)  # decoded (cp1252), not bytes
    pairs, human = text.load_wordsim()
    assert len(pairs) == 353 and human.min() >= 0 and human.max() <= 10
    assert ("tiger", "cat") in pairs


def test_photos_and_efficientnet_weights_offline(offline):
    need("skimage-photos", "matplotlib-photos", "efficientnet-lite0")
    from suites.zoo import efficientnet, photos

    ev = photos.eval_set(224)
    assert ev.x.shape == (90, 3, 224, 224) and ev.x.dtype == np.float32
    assert int((ev.labels[:, 0] >= 0).sum()) == 7
    assert photos.calibration_set(224).x.shape == (45, 3, 224, 224)
    module, path, version = efficientnet.load_pretrained()
    assert sum(p.numel() for p in module.parameters()) == 4652008 and version == "0.1.0"


def test_photo_scorer_is_a_function_of_the_outputs():
    from suites.zoo.photos import score

    labels = np.array([[3, 4, -1], [-1, -1, -1], [7, -1, -1]])
    out = np.zeros((3, 10))
    out[0, [3, 1, 2, 5, 6]] = [1, 5, 5, 5, 5]  # 3 in the top-5, not top-1
    out[2, [0, 1, 2, 3, 4]] = 1  # 7 outside the top-5
    res = score(out, {"photo_labels": labels})
    assert res == {"top5_photos": 0.5, "top1_photos": 0.0, "n_photos_labelled": 2}


def test_text_scorer_sentiment_and_spearman():
    from suites.zoo.text import score

    e = np.array([[1.0, 0], [0, 1.0], [-1.0, 0], [1.0, 0.1], [0.9, 0.2], [0, 1.0]])
    task = {"sentiment_rows": np.array([3, 4, 5]), "sentiment_labels": np.array([0, 0, 1]),
            "prompt_rows": np.array([0, 1]), "wordsim_a": np.array([0, 0, 1]), "wordsim_b": np.array([3, 1, 5]),
            "wordsim_human": np.array([10.0, 1.0, 9.0])}  # ranks 3,1,2 vs cosines 2,1,3
    res = score(e, task)
    assert res["sentiment_accuracy"] == 1.0
    assert res["wordsim_spearman"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- missing data: one line, exit 2


def test_missing_data_is_one_line_and_exit_2_before_any_case(tmp_path):
    env = bench_env(cache=tmp_path / "cache")
    env["BENCH_DATA_DIR"] = str(tmp_path / "empty")
    env.pop("BENCH_FASHION_MNIST", None)
    if os.path.isfile("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"):
        pytest.skip("Fashion-MNIST is installed system-wide here")
    out = tmp_path / "results"
    proc = run_bench(["run", "--suite", "pruned", "--backend", "cpu", "--out", str(out)], env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-800:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "dataset-fashion-mnist" in lines[0] and "bench data install fashion-mnist" in lines[0]
    assert not out.exists() or not list(out.iterdir())  # no case ran, no record


def test_require_names_package_and_command(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "_installed_root", lambda dist: None)
    with pytest.raises(datasets.MissingData, match=r"model fmnist-resnet needs .*dataset-fashion-mnist.*"
                                                   r"bench data install fashion-mnist"):
        if os.path.isfile("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"):
            raise datasets.MissingData(datasets.missing_message(datasets.get("fashion-mnist"), "fmnist-resnet"))
        datasets.require(["fashion-mnist"], "fmnist-resnet")


def test_env_variable_points_at_the_files(monkeypatch, tmp_path):
    for f in ("pang_lee_polarity.cor", "wordsim353.tsv"):
        (tmp_path / f).write_text("x")
    monkeypatch.setenv("BENCH_GENSIM_DATA", str(tmp_path))
    assert datasets.path("gensim-test-data", "wordsim353.tsv") == tmp_path / "wordsim353.tsv"
    assert datasets.locate("gensim-test-data")[1] == "$BENCH_GENSIM_DATA"


def test_genai_sources_are_installed_by_name_or_flag_not_by_default(tmp_path):
    """The LLM's weights (94 MB) and novel are datasets sources like the others, outside the default set."""
    assert {"smollm2-135m", "janeaustenr"} <= set(datasets.SOURCES)
    assert not {"smollm2-135m", "janeaustenr"} & set(datasets.DEFAULT_SOURCES)
    env = {**bench_env(), "BENCH_DATA_DIR": str(tmp_path / "empty")}
    plain = run_bench(["data", "status", "--json"], env=env, timeout=60)
    both = run_bench(["data", "status", "--json", "--genai"], env=env, timeout=60)
    names = {r["name"] for r in json.loads(plain.stdout)}
    assert "janeaustenr" not in names and {"janeaustenr", "smollm2-135m"} <= {r["name"] for r in json.loads(both.stdout)}


def test_missing_llm_text_is_one_line_with_the_command(monkeypatch, tmp_path):
    from suites.zoo import llm_data

    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("BENCH_JANEAUSTENR", raising=False)
    if os.path.isfile("/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"):
        pytest.skip("r-cran-janeaustenr is installed system-wide here")
    with pytest.raises(datasets.MissingData, match="r-cran-janeaustenr.*bench data install janeaustenr"):
        llm_data.austen_base()
    (tmp_path / "flat").mkdir()
    for f in ("Rdata.rdb", "Rdata.rdx"):
        (tmp_path / "flat" / f).write_bytes(b"")
    monkeypatch.setenv("BENCH_JANEAUSTENR", str(tmp_path / "flat"))
    assert llm_data.austen_base() == tmp_path / "flat" / "Rdata"


def test_data_command_unknown_name_exit_2():
    proc = run_bench(["data", "install", "imagenet-full"], timeout=60)
    assert proc.returncode == 2 and "unknown data source 'imagenet-full'" in proc.stderr


# --------------------------------------------------------------------------- gates


def test_variant_failing_its_gate_is_invalid():
    from harness.measure.accuracy import evaluate
    from harness.measure.timing import MeasureSettings, verdict

    ref = np.eye(4)[[0, 1, 2, 3]]
    out = ref.copy()
    acc = evaluate(out, labels=None, reference=ref, baseline_value=None, gate=0.99, metric="sentiment_accuracy",
                   task={"sentiment_accuracy": 0.60, "wordsim_spearman": 0.73},
                   baselines={"sentiment_accuracy": 0.66, "wordsim_spearman": 0.729}, checks=["wordsim_spearman"])
    assert acc["passed"] is False and acc["delta"] == pytest.approx(-0.06)
    from harness.measure.timing import STOP_REASONS
    from harness.measure.stats import summarize

    rng = np.random.default_rng(0)
    stats = summarize([int(x) for x in 1_000_000 + rng.integers(0, 1000, 400)], 0.95)
    v = verdict(stats, STOP_REASONS[0], MeasureSettings(min_iterations=20), accuracy_passed=acc["passed"])
    assert verdict(stats, STOP_REASONS[0], MeasureSettings(min_iterations=20), accuracy_passed=True)["valid"]
    assert v["valid"] is False and any("accuracy" in r for r in v["reasons"])
    # a check (not the headline metric) failing fails the case too
    acc2 = evaluate(out, labels=None, reference=ref, baseline_value=None, gate=0.99, metric="sentiment_accuracy",
                    task={"sentiment_accuracy": 0.66, "wordsim_spearman": 0.60},
                    baselines={"sentiment_accuracy": 0.66, "wordsim_spearman": 0.729}, checks=["wordsim_spearman"])
    assert acc2["passed"] is False and acc2["checks"][0]["passed"] is False
    acc3 = evaluate(out, labels=None, reference=ref, baseline_value=None, gate=0.99, metric="sentiment_accuracy",
                    task={"sentiment_accuracy": 0.66, "wordsim_spearman": 0.729},
                    baselines={"sentiment_accuracy": 0.66, "wordsim_spearman": 0.729},
                    checks=["wordsim_spearman", "cosine"])
    assert acc3["passed"] is True and [c["metric"] for c in acc3["checks"]] == ["wordsim_spearman", "cosine"]


def test_per_model_gates_survive_include():
    from harness.plan import suite as S

    s = S.load("all")
    assert s.gate_for("fmnist-resnet", "pruned-90") == 0.95
    assert s.gate_for("efficientnet-lite0", "int8-static") == 0.99  # the suite tier (gated on its decisive views)
    assert s.gate_for("efficientnet-lite0", "fp32") == 0.99  # baseline lists it first
    assert s.gate_for("fmnist-resnet", "pruned-structured-50+int8-static") == 0.95
    q = S.load("quant")
    assert {m["name"] for m in q.models} == {"efficientnet-lite0", "fmnist-resnet", "minilm-l6", "resnet50"}
    cases = S.plan(q, backend="cpu", runtime="onnxruntime")
    assert {c.scenario for c in cases if c.model == "resnet50"} == {"single-stream"}
    assert {c.variant for c in cases} == {"fp32", "fp16", "bf16", "int8-dynamic", "int8-static"}


# --------------------------------------------------------------------------- cached artifacts


def test_corrupt_cached_artifact_is_rebuilt(tmp_path):
    from harness.plan.artifacts import get_or_build

    calls = []

    def build(d):
        calls.append(d)
        (d / "model.onnx").write_bytes(b"x" * 100)
        return {"onnx": "model.onnx", "inputs": []}

    art, built = get_or_build("m", "fp32", "k1", build, root=tmp_path)
    assert built and art.meta["files"]["model.onnx"]["bytes"] == 100
    assert get_or_build("m", "fp32", "k1", build, root=tmp_path)[1] is False
    (art.dir / "model.onnx").write_bytes(b"y" * 100)  # same size, other content
    art2, built2 = get_or_build("m", "fp32", "k1", build, root=tmp_path)
    assert built2 and (art2.dir / "model.onnx").read_bytes() == b"x" * 100 and len(calls) == 2
    (art2.dir / "model.onnx").write_bytes(b"x" * 10)  # truncated
    assert get_or_build("m", "fp32", "k1", build, root=tmp_path)[1] is True


# --------------------------------------------------------------------------- structured pruning of a ResNet


def test_structured_pruning_of_residual_blocks():
    import torch

    from suites.recipes import pruned_structured as P
    from suites.zoo.fashion import make_resnet

    torch.manual_seed(0)
    m = make_resnet().eval()
    blocks = P.residual_blocks(m)
    assert len(blocks) == 3
    pruned, shapes, before, after = P.prune_blocks(m, blocks, 0.5)
    assert before == [16, 32, 64] and after == [8, 16, 32]
    x = torch.randn(2, 1, 28, 28)
    assert pruned(x).shape == (2, 10)
    rebuilt = P.rebuild("suites.zoo.fashion:make_resnet", {"widths": [16, 32, 64]}, shapes)
    rebuilt.load_state_dict(pruned.state_dict())
    rebuilt.eval()
    assert torch.allclose(rebuilt(x), pruned(x))
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- tables on a non-terminal


def test_listing_to_a_pipe_keeps_identifiers_whole():
    proc = run_bench(["list", "parts"], timeout=60)
    assert proc.returncode == 0
    assert any(ln.split()[0] == "xcu250" for ln in proc.stdout.splitlines() if ln.strip())
    proc = run_bench(["list", "models"], timeout=60)
    names = {ln.split()[0] for ln in proc.stdout.splitlines()[2:] if ln.strip()}
    assert {"efficientnet-lite0", "fmnist-resnet", "minilm-l6", "resnet50", "mlp-digits"} <= names


def test_run_table_to_a_file_keeps_case_ids_whole():
    import io

    from rich.console import Console

    from harness.cli.table import print_run

    cases = []
    for v in ("fp32", "int8-static", "pruned-structured-50+int8-static"):
        cid = f"efficientnet-lite0/{v}/cpu-onnxruntime/single-stream/b1"
        cases.append({"model": "efficientnet-lite0", "variant": v, "backend": "cpu", "runtime": "onnxruntime",
                      "precision": "fp32", "batch": 1, "scenario": "single-stream", "case_id": cid,
                      "status": "invalid", "reason": "accuracy_gate_failed: top1_agreement 0.9 < 0.99 x 1.0",
                      "latency_ns": {"p50": 1e6, "p90": 2e6, "p99": 3e6, "ci_rel_halfwidth": 0.01},
                      "throughput": {"samples_per_s": 1000.0},
                      "accuracy": {"metric": "top1_agreement", "value": 0.9, "delta": -0.1, "passed": False}})
    record = {"run_id": "20260101T000000Z-abcdef12", "suite": {"name": "quant"}, "cases": cases,
              "timer": {"overhead_ns": 30}}
    buf = io.StringIO()
    print_run(record, console=Console(file=buf, width=80))
    text = buf.getvalue()
    lines = text.splitlines()
    for c in cases:
        assert any(c["case_id"] in ln for ln in lines), c["case_id"]  # the note line holds it whole
        assert any(c["variant"] in ln.split() for ln in lines)  # the row holds the variant whole
    assert "╇" not in text and "│" not in text  # plain columns, not a box table


# --------------------------------------------------------------------------- fp32 figures in their expected range


@pytest.mark.slow
def test_fmnist_fp32_accuracy_in_range(cached):
    need("fashion-mnist")
    from suites.build import artifact_for

    art, _ = artifact_for("fmnist-resnet")
    ev = art.eval_data()
    assert len(ev["labels"]) == 10000
    assert 0.885 <= art.meta["reference"]["value"] <= 0.93, art.meta["reference"]


@pytest.mark.slow
def test_efficientnet_fp32_in_range(cached):
    need("skimage-photos", "matplotlib-photos", "efficientnet-lite0")
    from suites.build import artifact_for

    art, _ = artifact_for("efficientnet-lite0")
    m = art.meta["reference"]["metrics"]
    assert m["top5_photos"] == 1.0 and m["top1_photos"] >= 5 / 7, m
    assert art.eval_data()["reference"].shape == (90, 1000)
    assert art.meta["checks"] == ["top5_photos"] and art.meta["metric"] == "top1_agreement_decisive"


@pytest.mark.slow
def test_minilm_fp32_tasks_in_range(cached):
    need("minilm-l6", "gensim-test-data")
    from suites.build import artifact_for

    art, _ = artifact_for("minilm-l6")
    m = art.meta["reference"]["metrics"]
    assert 0.60 <= m["sentiment_accuracy"] <= 0.76, m
    assert 0.69 <= m["wordsim_spearman"] <= 0.77, m
    assert art.eval_data()["reference"].shape == (200 + 2 + 437, 384)
    assert json.loads((art.dir / "meta.json").read_text())["metric"] == "sentiment_accuracy"


def test_spearman_matches_scipy_with_and_without_ties():
    from scipy.stats import spearmanr

    from harness.measure.accuracy import average_ranks, spearman

    rng = np.random.default_rng(0)
    x = rng.normal(size=353)
    y = 0.5 * x + rng.normal(size=353)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    xt, yt = np.round(x, 0), np.round(y * 2) / 2  # many ties, like WordSim's human means
    assert spearman(xt, yt) == pytest.approx(spearmanr(xt, yt).statistic, abs=1e-12)
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert np.isnan(spearman(np.ones(5), np.arange(5)))
