"""Tests for bench compare: matching by key, verdicts, exit codes, outputs, run resolution, config."""
from __future__ import annotations

import datetime as dt
import json
import random

import numpy as np
import pytest

from harness.analyze import compare as cmp
from harness.cli import main
from harness.store.records import dumps, write_atomic, write_record
from tests.synth import CPU_A, CPU_B, environment, make_case, make_record

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
ENV_A = environment(CPU_A, "host-a")
ENV_B = environment(CPU_B, "host-b")


def save(d, record, name=None):
    d.mkdir(parents=True, exist_ok=True)
    return write_atomic(d / (name or f"{record['run_id']}.json"), dumps(record) + "\n")


def pair(tmp_path, base_cases, new_cases, *, base_env=None, new_env=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    b = make_record(base_cases, env=base_env, started=T0)
    n = make_record(new_cases, env=new_env, started=T0 + dt.timedelta(days=1))
    return write_record(b, tmp_path), write_record(n, tmp_path)


def run(capsys, *args):
    code = main(["compare", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------------- verdicts and exit codes

def test_regression_exit_1(tmp_path, capsys):
    # two runs and no history: only --assume-stable (a quiet dedicated machine) makes this a regression
    b, n = pair(tmp_path, [make_case(seed=1)], [make_case(seed=2, median_ns=120_000)])
    code, out, _ = run(capsys, b, n, "--results", tmp_path, "--assume-stable")
    assert code == 1
    assert "regression" in out and "+20" in out and "--assume-stable" in out


def test_two_runs_without_history_are_inconclusive_not_regression(tmp_path, capsys):
    # The real case on a shared VM: the same code twice, p50 34.1 µs vs 16.5 µs, each run's CI ±0.1 %.
    b, n = pair(tmp_path, [make_case(seed=1, median_ns=16_500)], [make_case(seed=2, median_ns=34_100)])
    code, out, _ = run(capsys, b, n, "--results", tmp_path, "--format", "json")
    assert code == 3
    doc = json.loads(out)
    case = doc["cases"][0]
    assert case["verdict"] == "inconclusive" and doc["summary"]["regression"] == 0
    timing = [m for m in case["metrics"] if m["metric"] != "accuracy"]
    assert all(m["significant"] for m in timing)  # within-run significant: the old rule said regression
    assert all(m["verdict"] == "inconclusive" and "run-to-run noise unknown" in m["reason"]
               and "1 earlier run(s)" in m["reason"] and "need 5" in m["reason"] for m in timing), timing
    assert all(m["extra"]["within_run_verdict"] == "regression" for m in timing)
    assert any("run-to-run noise is unknown" in note for note in doc["notes"])
    # the same through the API, without any history
    res = cmp.compare_records(make_record([make_case(seed=1)], started=T0),
                              make_record([make_case(seed=2, median_ns=200_000)], started=T0 + dt.timedelta(hours=1)))
    assert res.exit_code == 3 and "0 earlier run(s)" in res.cases[0].reason


def noisy_history(tmp_path, run_sigma, new_factor, *, n_runs=10, seed=7):
    """``n_runs`` earlier runs whose median moves run to run (lognormal, sigma ``run_sigma``), then NEW."""
    d = tmp_path / "results"
    rng = np.random.default_rng(seed)
    for i in range(n_runs):
        med = 100_000 * float(rng.lognormal(0.0, run_sigma))
        save(d, make_record([make_case(seed=100 + i, median_ns=med)], env=ENV_A, started=T0 + dt.timedelta(days=i)))
    save(d, make_record([make_case(seed=999, median_ns=100_000 * new_factor)], env=ENV_A,
                        started=T0 + dt.timedelta(days=n_runs)))
    return d


def compare_history(capsys, d, *extra):
    code, out, _ = run(capsys, "previous", "latest", "--results", d, "--machine", ENV_A["machine_id"],
                       "--format", "json", *extra)
    return code, json.loads(out)


def test_real_regression_beyond_small_run_to_run_noise(tmp_path, capsys):
    d = noisy_history(tmp_path, 0.02, 1.20)
    code, doc = compare_history(capsys, d)
    assert code == 1, doc["cases"]
    p50 = [m for m in doc["cases"][0]["metrics"] if m["metric"] == "p50"][0]
    assert p50["verdict"] == "regression"
    r2r = p50["extra"]["run_to_run"]
    assert r2r["runs"] == 10 and r2r["beyond"] is True and r2r["sigma"] < 0.05
    assert r2r["deviation"] > 3 * r2r["sigma"] and 95_000 < r2r["level"] < 105_000


def test_change_within_large_run_to_run_noise_is_not_a_regression(tmp_path, capsys):
    d = noisy_history(tmp_path, 0.30, 1.20)
    code, doc = compare_history(capsys, d)
    assert code != 1 and doc["summary"]["regression"] == 0
    for m in doc["cases"][0]["metrics"]:
        if m["verdict"] != "unchanged" and m["metric"] != "accuracy":
            assert m["verdict"] == "inconclusive" and "run-to-run noise" in m["reason"], m
    # --assume-stable restores the within-run-only rule (wrong here: the machine is noisy)
    assert compare_history(capsys, d, "--assume-stable")[0] in (0, 1)


def test_stable_history_and_new_at_its_level_exit_0(tmp_path, capsys):
    d = noisy_history(tmp_path, 0.0, 1.0)
    code, doc = compare_history(capsys, d)
    assert code == 0, doc["cases"]
    assert doc["summary"]["unchanged"] == 1


def test_history_excludes_new_later_runs_and_other_machines(tmp_path, capsys):
    # 3 earlier runs + BASE of this machine, runs of another machine (same key) and a run after NEW: too few
    d = tmp_path / "results"
    for i in range(3):
        save(d, make_record([make_case(seed=i)], env=ENV_A, started=T0 + dt.timedelta(days=i)))
    for i in range(6):
        save(d, make_record([make_case(seed=50 + i, device=CPU_A["model"])], env=ENV_B,
                            started=T0 + dt.timedelta(days=i)))
    base = save(d, make_record([make_case(seed=20)], env=ENV_A, started=T0 + dt.timedelta(days=5)))
    new = save(d, make_record([make_case(seed=21, median_ns=130_000)], env=ENV_A, started=T0 + dt.timedelta(days=6)))
    save(d, make_record([make_case(seed=22)], env=ENV_A, started=T0 + dt.timedelta(days=7)))
    code, out, _ = run(capsys, base, new, "--results", d, "--metric", "p50", "--format", "json")
    m = json.loads(out)["cases"][0]["metrics"][0]
    assert code == 3 and m["extra"]["run_to_run"]["runs"] == 4, m  # 3 + BASE; not NEW, not the later run
    assert "4 earlier run(s)" in m["reason"]
    # a fifth earlier run makes the noise known: 30 % slower against a stable level is a regression
    save(d, make_record([make_case(seed=30)], env=ENV_A, started=T0 + dt.timedelta(days=4, hours=1)))
    assert run(capsys, base, new, "--results", d, "--metric", "p50")[0] == 1


def test_no_change_exit_0(tmp_path, capsys):
    b, n = pair(tmp_path, [make_case(seed=1), make_case("cnn", seed=3)], [make_case(seed=2), make_case("cnn", seed=4)])
    code, out, _ = run(capsys, b, n)
    assert code == 0, out
    assert "2 unchanged" in out


def test_improvement_exit_0(tmp_path, capsys):
    b, n = pair(tmp_path, [make_case(seed=1)], [make_case(seed=2, median_ns=80_000)])
    code, out, _ = run(capsys, b, n, "--format", "json", "--assume-stable")
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["improvement"] == 1
    thr = [m for m in doc["cases"][0]["metrics"] if m["metric"] == "throughput"][0]
    assert thr["verdict"] == "improvement" and thr["ratio"] > 1.2


def test_too_few_samples_is_inconclusive_exit_3(tmp_path, capsys):
    b, n = pair(tmp_path, [make_case(seed=1, n=6)], [make_case(seed=2, n=6, median_ns=150_000)])
    code, out, _ = run(capsys, b, n, "--format", "json")
    assert code == 3
    case = json.loads(out)["cases"][0]
    assert case["verdict"] == "inconclusive"
    assert all("too few samples" in m["reason"] for m in case["metrics"] if m["metric"] != "accuracy")


def test_big_but_noisy_change_is_inconclusive_not_regression(tmp_path, capsys):
    b, n = pair(tmp_path, [make_case(seed=3, noise=0.6, n=20)], [make_case(seed=4, noise=0.6, n=20, median_ns=125_000)])
    code, out, _ = run(capsys, b, n, "--metric", "p50", "--format", "json")
    doc = json.loads(out)
    p50 = doc["cases"][0]["metrics"][0]
    assert p50["ratio"] > 1.05 and p50["verdict"] == "inconclusive"
    assert code == 3


def test_failed_case_in_new_exit_2_and_regression_wins(tmp_path, capsys):
    b, n = pair(tmp_path, [make_case(seed=1)], [make_case(status="failed", reason="worker crashed")])
    code, out, _ = run(capsys, b, n)
    assert code == 2 and "worker crashed" in out
    b, n = pair(tmp_path / "x", [make_case(seed=1), make_case("cnn", seed=3)],
                [make_case(status="failed", reason="boom"), make_case("cnn", seed=4, median_ns=130_000)])
    assert run(capsys, b, n, "--assume-stable")[0] == 1
    assert run(capsys, b, n, "--results", tmp_path)[0] == 2  # no history: the slower case is inconclusive


def test_skipped_both_sides_is_not_an_error(tmp_path, capsys):
    b, n = pair(tmp_path, [make_case(seed=1), make_case("tpu-only", status="unsupported", reason="no TPU")],
                [make_case(seed=2), make_case("tpu-only", status="unsupported", reason="no TPU")])
    code, out, _ = run(capsys, b, n)
    assert code == 0 and "skipped" in out


def test_invalid_measurement_downgrades_regression(tmp_path, capsys):
    bad = make_case(seed=2, median_ns=130_000, status="invalid", reason="unstable")
    b, n = pair(tmp_path, [make_case(seed=1)], [bad])
    code, out, _ = run(capsys, b, n, "--format", "json")
    assert code == 3
    case = json.loads(out)["cases"][0]
    assert case["verdict"] == "inconclusive" and "invalid in NEW" in case["reason"]


def test_accuracy_drop_is_a_regression(tmp_path, capsys):
    b, n = pair(tmp_path, [make_case(seed=1, accuracy=0.97)], [make_case(seed=2, accuracy=0.93)])
    code, out, _ = run(capsys, b, n, "--format", "json")
    assert code == 1
    acc = [m for m in json.loads(out)["cases"][0]["metrics"] if m["metric"] == "accuracy"][0]
    assert acc["verdict"] == "regression" and acc["extra"]["delta"] == pytest.approx(-0.04)
    # 0.5 point: within a 1 % threshold
    b, n = pair(tmp_path / "x", [make_case(seed=1, accuracy=0.970)], [make_case(seed=2, accuracy=0.966)])
    assert run(capsys, b, n)[0] == 0


def test_simulated_cases_compare_accuracy_only(tmp_path, capsys):
    b, n = pair(tmp_path, [make_case(seed=1, simulated=True)], [make_case(seed=2, simulated=True, median_ns=200_000)])
    code, out, _ = run(capsys, b, n, "--format", "json")
    case = json.loads(out)["cases"][0]
    assert [m["metric"] for m in case["metrics"]] == ["accuracy"]
    assert "simulated" in case["reason"] and code == 0


# --------------------------------------------------------------------------- matching

def test_unmatched_cases_are_listed_not_dropped(tmp_path, capsys):
    b, n = pair(tmp_path, [make_case(seed=1), make_case("gone", seed=5)], [make_case(seed=2), make_case("added", seed=6)])
    code, out, _ = run(capsys, b, n, "--format", "json")
    doc = json.loads(out)
    by_id = {c["case_id"].split("/")[0]: c for c in doc["cases"]}
    assert by_id["gone"]["match"] == "base-only" and by_id["gone"]["verdict"] == "missing"
    assert by_id["added"]["match"] == "new-only" and by_id["added"]["verdict"] == "no baseline"
    assert by_id["mlp-digits"]["match"] == "matched"
    assert code == 3
    code, out, _ = run(capsys, b, n, "--format", "md")
    assert "gone/" in out and "added/" in out


def test_matching_by_key_across_machines(tmp_path, capsys):
    # Same GPU model behind two different hosts/CPUs: the GPU cases share keys and are compared;
    # the CPU-backend cases have a different device, hence a different key: listed, never paired.
    gpu = dict(backend="cuda", runtime="torch", device="Synthetic GPU X")
    base_cases = [make_case("resnet", seed=1, **gpu), make_case("mlp", seed=2, device=CPU_A["model"])]
    new_cases = [make_case("mlp", seed=3, device=CPU_B["model"]), make_case("resnet", seed=4, median_ns=130_000, **gpu)]
    random.Random(0).shuffle(new_cases)
    b, n = pair(tmp_path, base_cases, new_cases, base_env=ENV_A, new_env=ENV_B)
    code, out, _ = run(capsys, b, n, "--format", "json", "--assume-stable")
    doc = json.loads(out)
    assert any("different machines" in note for note in doc["notes"])
    matched = [c for c in doc["cases"] if c["match"] == "matched"]
    assert [c["case_id"].split("/")[0] for c in matched] == ["resnet"]
    assert matched[0]["verdict"] == "regression"
    assert sorted(c["match"] for c in doc["cases"] if c["match"] != "matched") == ["base-only", "new-only"]
    assert code == 1


def test_compare_records_api_and_json_is_strict():
    b = make_record([make_case(seed=1)], started=T0)
    n = make_record([make_case(seed=2, median_ns=111_000)], started=T0 + dt.timedelta(hours=1))
    result = cmp.compare_records(b, n, cmp.Settings(assume_stable=True))
    assert result.exit_code == 1
    text = cmp.to_json(result)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["exit_code"] == 1
    md = cmp.render_markdown(result)
    assert md.startswith("### bench compare: ❌ 1 regression") and "| case |" in md


# --------------------------------------------------------------------------- resolving runs

def history_dir(tmp_path, n_runs=3, env=ENV_A, names="run_id", start=T0, factor_last=1.0):
    d = tmp_path / "results"
    paths = []
    for i in range(n_runs):
        f = factor_last if i == n_runs - 1 else 1.0
        rec = make_record([make_case(seed=10 + i, median_ns=100_000 * f)], env=env, started=start + dt.timedelta(days=i))
        # file names that do NOT sort by time: resolution must use started_at
        name = f"z{n_runs - i}-{rec['run_id']}.json" if names == "scrambled" else None
        paths.append(save(d, rec, name))
    return d, paths


def test_latest_previous_by_started_at_and_machine(tmp_path, capsys):
    d, paths = history_dir(tmp_path, names="scrambled", factor_last=1.25)
    history_dir(tmp_path, n_runs=2, env=ENV_B, start=T0 + dt.timedelta(days=30))  # newer runs of another machine
    rec, p = cmp.resolve_run("latest", d, machine=ENV_A["machine_id"])
    assert p == paths[-1]
    assert cmp.resolve_run("previous", d, machine=ENV_A["machine_id"])[1] == paths[-2]
    assert cmp.resolve_run("latest~2", d, machine=ENV_A["machine_id"])[1] == paths[0]
    code, out, _ = run(capsys, "previous", "latest", "--results", d, "--machine", ENV_A["machine_id"],
                       "--assume-stable")
    assert code == 1
    with pytest.raises(cmp.NoBaseline):
        cmp.resolve_run("latest~3", d, machine=ENV_A["machine_id"])


def test_default_machine_comes_from_the_fingerprint(tmp_path, monkeypatch, capsys):
    from harness.run import env

    d, paths = history_dir(tmp_path)
    history_dir(tmp_path, n_runs=2, env=ENV_B, start=T0 + dt.timedelta(days=30))
    monkeypatch.setattr(env, "fingerprint", lambda *a, **k: dict(ENV_A))
    monkeypatch.setattr(env, "machine_id", lambda fp: fp["machine_id"])
    assert cmp.resolve_run("latest", d)[1] == paths[-1]
    monkeypatch.setattr(env, "machine_id", lambda fp: "0123456789abcdef")
    code, _, err = run(capsys, "previous", "latest", "--results", d)
    assert code == 2 and "no runs of machine 0123456789abcdef" in err and ENV_A["machine_id"] in err


def test_no_baseline_exit_3_with_summary(tmp_path, capsys):
    d, _ = history_dir(tmp_path, n_runs=1)
    md = tmp_path / "summary.md"
    code, out, _ = run(capsys, "previous", "latest", "--results", d, "--machine", ENV_A["machine_id"],
                       "--md-out", md)
    assert code == 3 and "no baseline" in out
    assert "no baseline" in md.read_text()


def test_run_id_prefix_and_bad_input(tmp_path, capsys):
    d, paths = history_dir(tmp_path)
    rid0 = paths[0].stem
    rec, p = cmp.resolve_run(rid0[:20], d)
    assert rec["run_id"] == rid0
    with pytest.raises(cmp.BenchError, match="ambiguous"):
        cmp.resolve_run("2026", d)
    # a record whose file is not named after its run id is found by looking inside
    other = make_record([make_case(seed=1)], started=T0 + dt.timedelta(days=9))
    save(d, other, "renamed.json")
    assert cmp.resolve_run(other["run_id"], d)[1].name == "renamed.json"
    assert run(capsys, tmp_path / "nope.json", paths[0], "--results", d)[0] == 2
    (tmp_path / "broken.json").write_text("{not json")
    code, _, err = run(capsys, tmp_path / "broken.json", paths[0])
    assert code == 2 and "not valid JSON" in err
    assert run(capsys, paths[0], paths[1], "--threshold", "5")[0] == 2  # ambiguous threshold
    assert run(capsys, paths[0], paths[1], "--metric", "p42")[0] == 2


def test_outputs_md_and_json_files(tmp_path, capsys):
    b, n = pair(tmp_path, [make_case(seed=1)], [make_case(seed=2, median_ns=120_000)])
    md, js = tmp_path / "s.md", tmp_path / "c.json"
    md.write_text("# earlier content\n")
    code, out, _ = run(capsys, b, n, "--format", "text,md", "--md-out", md, "--json-out", js, "--assume-stable")
    assert code == 1
    assert "verdict" in out and "### bench compare" in out
    text = md.read_text()
    assert text.startswith("# earlier content\n") and "❌ 1 regression" in text  # appended
    assert json.loads(js.read_text())["exit_code"] == 1


# --------------------------------------------------------------------------- thresholds and config

def test_threshold_spec_and_fraction():
    assert cmp.parse_fraction("5%") == pytest.approx(0.05)
    assert cmp.parse_fraction(0.05) == 0.05
    assert cmp.parse_threshold_spec("5%,accuracy=0.5%") == {"*": 0.05, "accuracy": 0.005}
    with pytest.raises(cmp.BenchError, match="ambiguous"):
        cmp.parse_fraction("5")
    with pytest.raises(cmp.BenchError, match="unknown metric"):
        cmp.parse_threshold_spec("latency=5%")
    s = cmp.make_settings(threshold="10%")
    assert s.thresholds.get("accuracy") == 0.10 and s.thresholds.get("p50") == 0.10
    s = cmp.make_settings(threshold="p99=20%")
    assert s.thresholds.get("p99") == 0.20 and s.thresholds.get("p50") == 0.05 and s.thresholds.get("accuracy") == 0.01


def test_per_suite_and_per_case_thresholds_from_config(tmp_path, capsys):
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        "threshold: 5%\n"
        "suites:\n  nightly: {threshold: 15%}\n"
        "cases:\n  'cnn/*': {metrics: {p50: 30%, p99: 30%, throughput: 30%}}\n")
    base = make_record([make_case(seed=1), make_case("cnn", seed=3)], suite="nightly", started=T0)
    new = make_record([make_case(seed=2, median_ns=110_000), make_case("cnn", seed=4, median_ns=125_000)],
                      suite="nightly", started=T0 + dt.timedelta(days=1))
    b, n = write_record(base, tmp_path), write_record(new, tmp_path)
    assert run(capsys, b, n, "--assume-stable")[0] == 1  # defaults (within-run rule): both regress
    code, out, _ = run(capsys, b, n, "--config", cfg, "--format", "json")
    assert code == 0, out  # 10 % < suite 15 %, 25 % < case 30 %
    doc = json.loads(out)
    ths = {(c["case_id"].split("/")[0], m["metric"]): m["threshold"] for c in doc["cases"] for m in c["metrics"]}
    assert ths[("mlp-digits", "p50")] == 0.15 and ths[("cnn", "p50")] == 0.30 and ths[("cnn", "accuracy")] == 0.15
    bad = tmp_path / "bad.yaml"
    bad.write_text("treshold: 5%\n")
    code, _, err = run(capsys, b, n, "--config", bad)
    assert code == 2 and "unknown key" in err


def test_latest_previous_per_suite(tmp_path, capsys):
    d = tmp_path / "results"
    for day in range(2):  # each night: a quant run then a baseline run
        for k, suite in enumerate(("quant", "baseline")):
            slow = 1.3 if (suite == "quant" and day == 1) else 1.0
            rec = make_record([make_case(suite, seed=day * 10 + k, median_ns=100_000 * slow)], env=ENV_A, suite=suite,
                              started=T0 + dt.timedelta(days=day, hours=k))
            save(d, rec)
    m = ENV_A["machine_id"]
    # without --suite, latest/previous are the last two runs: different suites, nothing matches
    assert run(capsys, "previous", "latest", "--results", d, "--machine", m)[0] == 3
    assert run(capsys, "previous", "latest", "--results", d, "--machine", m, "--suite", "baseline")[0] == 0
    assert run(capsys, "previous", "latest", "--results", d, "--machine", m, "--suite", "quant",
               "--assume-stable")[0] == 1
    # two nights are no history: without --assume-stable the quant slowdown is inconclusive
    assert run(capsys, "previous", "latest", "--results", d, "--machine", m, "--suite", "quant")[0] == 3
    code, _, err = run(capsys, "previous", "latest", "--results", d, "--machine", m, "--suite", "pruned")
    assert code == 2 and "NEW: no runs of suite 'pruned'" in err  # no NEW run at all: bad input
