"""Fault injection and bad input (issue 16): nothing lost, nothing trusted blindly.

Each test asserts the exit code, a one-line message naming the problem, no traceback, and that
what was already measured is kept. Classes: 1 non-finite numbers, 2 hostile text, 3 the worker's
import path, 4 signals and resume (tests/test_hardening_e2e.py), 5 user factories, 6 readers
trust nothing, 7 backend options, 8 resource errors, 9 suite includes.
"""
from __future__ import annotations

import copy
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.errors import BenchError
from tests import synth


def _one_line(err: str, *words: str) -> str:
    """The command's stderr is one line, no traceback, naming every one of ``words``."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    return lines[0]


def _day(i: int):
    import datetime as dt

    return dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=i)


def _record(tmp_path: Path, name: str = "run.json", cases=None, **kw) -> Path:
    cases = cases if cases is not None else [synth.make_case("mlp-digits", "fp32"),
                                             synth.make_case("mlp-digits", "int8")]
    rec = synth.make_record(cases, **kw)
    p = tmp_path / name
    p.write_text(json.dumps(rec))
    return p


# ============================================================== 1. non-finite numbers

NONFINITE = [float("nan"), float("inf"), float("-inf")]
METRICS = ["top1", "top1_agreement", "top1_agreement_decisive", "cosine", "max_abs_diff", "mean_abs_diff"]


@pytest.mark.parametrize("bad", NONFINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("metric", METRICS)
def test_non_finite_outputs_fail_the_gate(metric, bad):
    from harness.measure import accuracy

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((16, 4)).astype(np.float32)
    out = ref.copy()
    out[3, 1] = bad
    gate = 0.5 if metric in ("max_abs_diff", "mean_abs_diff") else 0.9
    res = accuracy.evaluate(out, labels=ref.argmax(1), reference=ref, baseline_value=1.0 if metric == "top1" else None,
                            gate=gate, metric=metric)
    assert res["passed"] is False
    assert res["non_finite"] == {"count": 1, "of": 64}
    assert "non-finite" in res["reason"]


def test_finite_outputs_still_pass():
    from harness.measure import accuracy

    ref = np.eye(4, dtype=np.float32)
    res = accuracy.evaluate(ref.copy(), labels=None, reference=ref, baseline_value=None, gate=0.99,
                            metric="top1_agreement")
    assert res["passed"] is True and "non_finite" not in res


@pytest.mark.parametrize("obj, where", [
    ({"a": float("nan")}, [{"path": "a", "value": "NaN"}]),
    ({"a": [1.0, float("inf")]}, [{"path": "a/1", "value": "Infinity"}]),
    ({"a": {"b": float("-inf")}}, [{"path": "a/b", "value": "-Infinity"}]),
    ({"a": np.float32("nan")}, [{"path": "a", "value": "NaN"}]),
    ({"a": np.float64(1.5), "b": 2}, []),
    ([float("nan"), {"x": (float("inf"),)}], [{"path": "0", "value": "NaN"}, {"path": "1/x/0", "value": "Infinity"}]),
])
def test_encode_non_finite(obj, where):
    from harness.safe import encode_non_finite

    out, found = encode_non_finite(obj)
    assert found == where
    json.dumps(out, allow_nan=False)  # always serialisable now


NAN_SPOTS = [("accuracy", "value"), ("accuracy", "delta"), ("latency_ns", "p50"), ("latency_ns", "mean"),
             ("throughput", "samples_per_s"), ("headline", "value"), ("energy", "joules")]


@pytest.mark.parametrize("bad", NONFINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("field, key", NAN_SPOTS, ids=["/".join(s) for s in NAN_SPOTS])
def test_record_with_non_finite_is_written(tmp_path, field, key, bad):
    """Yesterday: ValueError at the final write, the whole run lost. Now: null + where, written."""
    from harness.store import records

    ok = synth.make_case("mlp-digits", "fp32")
    sick = synth.make_case("mlp-digits", "int8")
    sick[field] = dict(sick.get(field) or {})
    sick[field][key] = bad
    rec = synth.make_record([ok, sick])
    path = records.write_record(rec, tmp_path)
    back = records.read_record(path)
    assert back["cases"][1][field][key] is None
    assert {"path": f"cases/1/{field}/{key}", "value": records_name(bad)} in back["non_finite"]
    assert back["cases"][0] == json.loads(json.dumps(ok))  # the healthy case is untouched


def records_name(x: float) -> str:
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def test_journal_line_with_nan_is_standard_json(tmp_path):
    from harness.store import records

    rec = synth.make_record([])
    j = records.Journal(tmp_path, rec)
    case = synth.make_case()
    case["accuracy"]["value"] = float("nan")
    j.append(case)
    lines = j.path.read_text().splitlines()
    assert "NaN" not in lines[1].replace('"NaN"', "")  # no bare NaN token (not JSON)
    back = records.read_journal(j.path)
    assert back["cases"][0]["non_finite"] == [{"path": "accuracy/value", "value": "NaN"}]


# ============================================================== 2. hostile text

HOSTILE = [
    "[/data/w.bin]",
    "[bold red]x[/]",
    "[link=http://evil]click[/link]",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "a|b|c",
    "**bold** _it_ `code`",
    "[x](javascript:alert(1))",
    "=HYPERLINK(\"http://evil\",\"x\")",
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1,2)",
    "\tstarts with tab",
    "\x1b[31mred\x1b[0m",
    "line1\nline2",
]
HOSTILE_IDS = [f"h{i}" for i in range(len(HOSTILE))]


@pytest.mark.parametrize("text", HOSTILE, ids=HOSTILE_IDS)
def test_terminal_table_shows_hostile_text_verbatim(text):
    from rich.console import Console

    from harness.cli.table import print_run

    case = synth.make_case("m" + text, "fp32")
    case["status"], case["reason"] = "failed", "reason " + text
    case["case_id"] = "id" + text
    rec = synth.make_record([case, synth.make_case()])
    con = Console(record=True, width=400, color_system=None)
    print_run(rec, "/tmp/out[x]/r.json", con)  # yesterday: MarkupError for "[/...]"
    out = con.export_text()
    assert "\x1b" not in out
    visible = " ".join(text.replace("\x1b", "\ufffd").split())
    assert visible.split()[0] in " ".join(out.split())


@pytest.mark.parametrize("text", HOSTILE, ids=HOSTILE_IDS)
def test_markdown_escape(text):
    from harness.safe import md

    s = md(text)
    assert "<" not in s and ">" not in s and "\n" not in s
    for ch in "|*_`[]":
        assert s.count(ch) == s.count("\\" + ch), (ch, s)


@pytest.mark.parametrize("text", HOSTILE, ids=HOSTILE_IDS)
def test_html_escape(text):
    from harness.report.html import esc

    s = esc(text)
    assert "<" not in s and ">" not in s and '"' not in s and "\x1b" not in s


@pytest.mark.parametrize("text", HOSTILE, ids=HOSTILE_IDS)
def test_csv_export_is_formula_safe(tmp_path, text):
    import csv

    from harness.store.export import flat_table, write_table

    rec = synth.make_record([synth.make_case(text, "fp32")])
    out = tmp_path / "x.csv"
    write_table(flat_table([rec]), out, "csv")
    rows = list(csv.DictReader(out.open()))
    cell = rows[0]["model"]
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert cell.lstrip("'") == text


def test_history_markdown_escapes_model_names(tmp_path):
    from harness.analyze import history

    recs = []
    for i in range(3):
        rec = synth.make_record([synth.make_case("<img src=x onerror=alert(1)>|m", "fp32", seed=i)], started=_day(i))
        recs.append(rec)
        (tmp_path / f"r{i}.json").write_text(json.dumps(rec))
    md = history.render_markdown(history.analyze(history.load_history([tmp_path], engine="pandas")))
    assert "<img" not in md and "&lt;img" in md
    assert all(line.count("|") - line.count("\\|") == 8 for line in md.splitlines() if line.startswith("| "))


def test_compare_markdown_escapes(tmp_path):
    from harness.analyze import compare

    a = synth.make_record([synth.make_case("<b>x</b>|y", "fp32", seed=1)], started=_day(0))
    b = synth.make_record([synth.make_case("<b>x</b>|y", "fp32", seed=2)], started=_day(1))
    cmp = compare.compare_records(a, b)
    md = compare.render_markdown(cmp)
    assert "<b>" not in md


# ============================================================== 3. the worker's import path

SHADOWS = ["onnxruntime", "numpy", "json", "harness", "tests"]


@pytest.mark.parametrize("name", SHADOWS)
def test_worker_never_imports_from_cwd(tmp_path, name):
    from harness.run.worker import run_in_worker

    marker = tmp_path / "pwned"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    res = run_in_worker("tests.worker_targets:import_named", {"name": "json"}, timeout_s=60, cwd=tmp_path)
    assert res.ok, res.reason
    assert not marker.exists(), f"a {name}.py in the cwd was executed by the worker"
    assert str(tmp_path) not in res.result["path"] and "" not in res.result["path"]


def test_relative_pythonpath_is_pinned(tmp_path, monkeypatch):
    from harness.run.worker import _child_env

    monkeypatch.setenv("PYTHONPATH", "relative/dir")
    env = _child_env(None)
    assert os.path.abspath("relative/dir") in env["PYTHONPATH"].split(os.pathsep)


# ============================================================== 5. user factories in their own process

@pytest.mark.parametrize("factory, words", [
    ("exits_3", ["exited with code 3"]),
    ("segfaults", ["SIGSEGV"]),
    ("aborts", ["SIGABRT"]),
    ("raises", ["factory blew up"]),
    ("returns_int", ["not a torch.nn.Module"]),
])
def test_bad_factory_is_one_line_and_no_cache_left(tmp_path, monkeypatch, capsys, factory, words):
    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    rc = main(["run", "--model", f"tests.bad_factories:{factory}", "--input-shape", "1x4",
               "--out", str(tmp_path / "out"), "-q"])
    assert rc == 2
    _one_line(capsys.readouterr().err, f"tests.bad_factories:{factory}", *words)
    left = [p for p in cache.rglob("*")] if cache.exists() else []
    assert not [p for p in left if "byo-" in str(p)], left  # no half-built cache directory
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# ============================================================== 6. readers trust nothing

def _break(rec: dict, how: str) -> dict:
    r = copy.deepcopy(rec)
    if how == "no-cases":
        del r["cases"]
    elif how == "cases-string":
        r["cases"] = "oops"
    elif how == "case-string":
        r["cases"][0] = "bogus"
    elif how == "case-empty":
        r["cases"][0] = {}
    elif how == "status-bogus":
        r["cases"][0]["status"] = "great"
    elif how == "batch-zero":
        r["cases"][0]["batch"] = 0
    elif how == "latency-string":
        r["cases"][0]["latency_ns"] = "fast"
    elif how == "env-string":
        r["environment"] = "laptop"
    elif how == "suite-list":
        r["suite"] = ["smoke"]
    elif how == "tags-nested":
        r["tags"] = {"a": {"b": 1}}
    elif how == "run-id-path":
        r["run_id"] = "../../etc/passwd"
    elif how == "settings-missing":
        del r["settings"]
    elif how == "key-bad":
        r["cases"][0]["key"] = "not hex"
    elif how == "scenario-bogus":
        r["cases"][0]["scenario"] = "warp"
    elif how == "interrupted-string":
        r["interrupted"] = "yes"
    return r


BREAKS = ["no-cases", "cases-string", "case-string", "case-empty", "status-bogus", "batch-zero", "latency-string",
          "env-string", "suite-list", "tags-nested", "run-id-path", "settings-missing", "key-bad", "scenario-bogus",
          "interrupted-string"]
READERS = {
    "show": lambda p, t: ["show", str(p)],
    "export-csv": lambda p, t: ["export", str(p), "--format", "csv"],
    "report": lambda p, t: ["report", str(p), "--out", str(t / "rep"), "--format", "md"],
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("how", BREAKS)
def test_readers_refuse_broken_records(tmp_path, capsys, reader, how):
    p = tmp_path / "broken.json"
    p.write_text(json.dumps(_break(synth.make_record([synth.make_case(), synth.make_case(variant="int8")]), how)))
    rc = main(READERS[reader](p, tmp_path))
    assert rc == 2
    _one_line(capsys.readouterr().err, "broken.json")
    assert not (tmp_path / "rep.md").exists()


def test_show_latest_ignores_stray_json(tmp_path, capsys):
    good = synth.make_record([synth.make_case()], started=_day(0))
    (tmp_path / f"{good['run_id']}.json").write_text(json.dumps(good))
    (tmp_path / "package.json").write_text(json.dumps({"name": "x", "version": "1"}))
    (tmp_path / "zzz.json").write_text(json.dumps({"schema_version": 1}))
    rc = main(["show", "latest", "--results", str(tmp_path), "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == good["run_id"]


def test_show_latest_picks_by_content_not_name(tmp_path, capsys):
    old = synth.make_record([synth.make_case()], started=_day(0))
    new = synth.make_record([synth.make_case()], started=_day(5))
    (tmp_path / "zzzz-old.json").write_text(json.dumps(old))  # sorts last by name
    (tmp_path / "aaaa-new.json").write_text(json.dumps(new))
    assert main(["show", "latest", "--results", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == new["run_id"]


def test_show_latest_only_invalid_names_them(tmp_path, capsys):
    (tmp_path / "package.json").write_text("{}")
    assert main(["show", "latest", "--results", str(tmp_path)]) == 2
    _one_line(capsys.readouterr().err, "no run records", "package.json")


# ============================================================== 7. backend options

@pytest.mark.parametrize("args, words", [
    (["--option", "foo=bar"], ["no option 'foo'"]),
    (["--option", "io_binding=maybe"], ["io_binding=maybe", "yes/no"]),
    (["--option", "spinning=2"], ["spinning=2"]),
    (["--part", "xcu250"], ["no option 'part'"]),
    (["--precision", "ap_fixed<8,3>"], ["no option 'precision'"]),
    (["--reuse-factor", "4"], ["no option 'reuse_factor'"]),
    (["--fit"], ["no option 'fit'"]),
    (["--option", "steps_per_execution=4"], ["runtime tensorflow"]),
    (["--option", "tpu=grpc://x"], ["no option 'tpu'"]),
    (["--option", "cuda_graphs=1"], ["no option 'cuda_graphs'"]),
])
def test_cpu_refuses_bad_options_before_any_case(tmp_path, capsys, args, words):
    rc = main(["run", "--suite", "smoke", "--backend", "cpu", "--out", str(tmp_path / "o"), "-q", *args])
    assert rc == 2
    _one_line(capsys.readouterr().err, *words)
    assert not (tmp_path / "o").exists()  # nothing ran, nothing written


@pytest.mark.parametrize("opt, raw, ok", [
    (("x", bool), "1", True), (("x", bool), "off", False), (("x", bool), "maybe", None), (("x", bool), "", None),
    (("x", int), "3", 3), (("x", int), "3.5", None), (("x", int), "nan", None),
    (("x", float), "inf", None), (("x", float), "0.5", 0.5), (("x", str), "abc", "abc"),
])
def test_option_parse(opt, raw, ok):
    from backends.base import Option, OptionError

    o = Option(*opt)
    if ok is None:
        with pytest.raises(OptionError):
            o.parse(raw)
    else:
        assert o.parse(raw) == ok


@pytest.mark.parametrize("raw", ["0", "2000000"])
def test_option_bounds(raw):
    from backends.base import Option, OptionError

    with pytest.raises(OptionError, match="minimum|maximum"):
        Option("steps", int, minimum=1, maximum=100_000).parse(raw)


def test_option_choices():
    from backends.base import Option, OptionError

    with pytest.raises(OptionError, match="not one of"):
        Option("amp", str, choices=("cast", "autocast")).parse("fp8")


def test_every_repo_backend_declares_its_options():
    from backends.cpu import CPUBackend
    from backends.cuda import CUDABackend
    from backends.fpga.backend import FPGABackend
    from backends.tpu import TPUBackend

    for cls in (CPUBackend, CUDABackend, FPGABackend, TPUBackend):
        b = cls()
        assert b.options is not None and all(o.name for o in b.options), cls


@pytest.mark.parametrize("args, words", [
    (["--threads", "10000"], ["--threads", "maximum"]),
    (["--threads", "0"], ["--threads", "positive"]),
    (["--threads", "-2"], ["--threads"]),
    (["--threads", "many"], ["--threads"]),
    (["--target-ci", "5"], ["--target-ci", "fraction"]),
    (["--target-ci", "0.6"], ["--target-ci", "fraction"]),
    (["--target-ci", "60%"], ["--target-ci", "fraction"]),
    (["--target-ci", "0"], ["--target-ci"]),
    (["--target-ci", "nan"], ["--target-ci", "finite"]),
    (["--target-ci", "inf"], ["--target-ci", "finite"]),
    (["--max-time", "inf"], ["--max-time", "finite"]),
    (["--timeout", "nan"], ["--timeout", "finite"]),
])
def test_run_bounds(tmp_path, capsys, args, words):
    rc = main(["run", "--suite", "smoke", "--out", str(tmp_path / "o"), "-q", *args])
    assert rc == 2
    _one_line(capsys.readouterr().err, *words)


def test_target_ci_help_says_fraction(capsys):
    assert main(["run", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--target-ci FRACTION" in out and "--target-ci SECONDS" not in out


# ============================================================== 8. resource errors

@pytest.mark.parametrize("shape", ["100000x1000000", "1x1000x1000x1000x100", "x=99999999999"])
def test_huge_input_shape_refused_before_allocation(tmp_path, capsys, shape):
    rc = main(["run", "--model", "tests.bad_factories:tiny", "--input-shape", shape, "--out", str(tmp_path), "-q"])
    assert rc == 2
    _one_line(capsys.readouterr().err, "elements", "limit")


def _fifo(tmp_path):
    p = tmp_path / "model.onnx"
    os.mkfifo(p)
    return p


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "missing"])
def test_model_not_a_regular_file(tmp_path, capsys, kind):
    if kind == "fifo":
        p = _fifo(tmp_path)
    elif kind == "dev-zero":
        p = tmp_path / "zero.onnx"
        p.symlink_to("/dev/zero")
    elif kind == "directory":
        p = tmp_path / "dir.onnx"
        p.mkdir()
    else:
        p = tmp_path / "none.onnx"
    rc = main(["run", "--model", str(p), "--out", str(tmp_path / "o"), "-q"])
    assert rc == 2
    _one_line(capsys.readouterr().err, p.name)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_complexity_refuses_non_regular_files(tmp_path, capsys, kind):
    if kind == "fifo":
        p = _fifo(tmp_path)
    elif kind == "dev-zero":
        p = tmp_path / "zero.onnx"
        p.symlink_to("/dev/zero")
    else:
        p = tmp_path / "d.onnx"
        p.mkdir()
    assert main(["complexity", str(p)]) == 2
    _one_line(capsys.readouterr().err, p.name)


@pytest.mark.parametrize("kind", ["directory", "fifo", "dev-zero"])
def test_suite_not_a_regular_file(tmp_path, capsys, kind):
    p = tmp_path / "x.yaml"
    if kind == "directory":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    else:
        p.symlink_to("/dev/zero")
    rc = main(["run", "--suite", str(p), "--out", str(tmp_path / "o"), "-q"])
    assert rc == 2
    _one_line(capsys.readouterr().err, "x.yaml")


def _unwritable(tmp_path: Path, how: str) -> Path:
    if how == "missing-dir":
        return tmp_path / "no" / "such" / "out.x"
    if how == "file-as-dir":
        (tmp_path / "afile").write_text("")
        return tmp_path / "afile" / "out.x"
    if how == "is-dir":
        (tmp_path / "adir").mkdir()
        return tmp_path / "adir"
    raise AssertionError(how)


UNWRITABLE = ["missing-dir", "file-as-dir", "is-dir"]


@pytest.mark.parametrize("how", UNWRITABLE)
@pytest.mark.parametrize("fmt", ["csv", "pytest-benchmark"])
def test_export_out_unwritable(tmp_path, capsys, how, fmt):
    rec = _record(tmp_path)
    out = _unwritable(tmp_path, how)
    rc = main(["export", str(rec), "--format", fmt, "--out", str(out)])
    assert rc == 2
    _one_line(capsys.readouterr().err, out.name)


@pytest.mark.parametrize("how", UNWRITABLE)
@pytest.mark.parametrize("flag", ["--json-out", "--md-out"])
def test_compare_outputs_unwritable(tmp_path, capsys, how, flag):
    a = _record(tmp_path, "a.json", started=_day(0))
    b = _record(tmp_path, "b.json", started=_day(1))
    out = _unwritable(tmp_path, how)
    rc = main(["compare", str(a), str(b), flag, str(out)])
    assert rc == 2
    _one_line(capsys.readouterr().err, out.name)


def test_write_atomic_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno

    from harness import safe

    real = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BenchError, match="no space left on device") as ei:
        safe.write_atomic(tmp_path / "r.json", "x" * 100, what="record")
    assert str(tmp_path / "r.json") in str(ei.value)
    monkeypatch.setattr(os, "fsync", real)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EFBIG", "EDQUOT", "EIO"])
def test_journal_append_never_tears_a_line(tmp_path, monkeypatch, errno_name):
    import errno

    from harness.store import records

    j = records.Journal(tmp_path, synth.make_record([]))
    j.append(synth.make_case(variant="fp32"))
    before = j.path.read_bytes()
    real_write = os.write

    def half(fd, data):  # half a line lands, then the disk is full
        real_write(fd, data[: len(data) // 2])
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(BenchError) as ei:
        j.append(synth.make_case(variant="int8"))
    monkeypatch.setattr(os, "write", real_write)
    assert str(j.path) in str(ei.value)
    assert j.path.read_bytes() == before  # cut back to the last whole line
    assert len(records.read_journal(j.path)["cases"]) == 1


@pytest.mark.parametrize("body", [
    "currency: EUR\nmachines:\n  - match: {hostname: x}\n    hourly_cost: 1\n    secret_line: hunter2-password\n",
    "currency: EUR\nbogus_key_with_a_long_name: 1\nother: the-other-line-of-the-file\n",
])
def test_prices_unknown_key_does_not_echo_the_file(tmp_path, capsys, body):
    p = tmp_path / "prices.yaml"
    p.write_text(body)
    rec = _record(tmp_path)
    rc = main(["report", str(rec), "--prices", str(p), "--out", str(tmp_path / "r"), "--format", "md"])
    assert rc == 2
    line = _one_line(capsys.readouterr().err, "unknown")
    assert "hunter2" not in line and "the-other-line" not in line


def test_prices_fifo_refused(tmp_path, capsys):
    p = tmp_path / "prices.yaml"
    os.mkfifo(p)
    rc = main(["report", str(_record(tmp_path)), "--prices", str(p), "--out", str(tmp_path / "r"), "--format", "md"])
    assert rc == 2
    _one_line(capsys.readouterr().err, "prices.yaml", "FIFO")


# ============================================================== 9. suite includes

def test_include_is_relative_to_the_including_file(tmp_path, monkeypatch):
    from harness.plan import suite as suitemod

    d = tmp_path / "suites"
    d.mkdir()
    (d / "base.yaml").write_text("name: base\nmodels: [mlp-digits]\nvariants: [fp32]\n")
    (d / "top.yaml").write_text("name: top\nmodels: [mlp-digits]\nvariants: [int8-dynamic]\ninclude: [base.yaml]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = suitemod.load(str(d / "top.yaml"))
    assert {tuple(m["variants"]) for m in s.models} == {("int8-dynamic",), ("fp32",)}


def test_include_missing_names_where_it_looked(tmp_path, monkeypatch, capsys):
    d = tmp_path / "suites"
    d.mkdir()
    (d / "top.yaml").write_text("name: top\nmodels: [mlp-digits]\ninclude: [nope.yaml]\n")
    monkeypatch.chdir(tmp_path)
    rc = main(["run", "--suite", str(d / "top.yaml"), "--out", str(tmp_path / "o"), "-q"])
    assert rc == 2
    _one_line(capsys.readouterr().err, "nope.yaml", str(d))


def test_include_cycle_relative(tmp_path):
    from harness.plan import suite as suitemod

    (tmp_path / "a.yaml").write_text("name: a\nmodels: [mlp-digits]\ninclude: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("name: b\nmodels: [mlp-digits]\ninclude: [a.yaml]\n")
    with pytest.raises(BenchError, match="cycle"):
        suitemod.load(str(tmp_path / "a.yaml"))


# ============================================================== journals are runs too

def _journal(tmp_path: Path, n_cases: int = 1) -> tuple[dict, Path]:
    from harness.store import records

    rec = synth.make_record([synth.make_case(variant=v) for v in ("fp32", "int8", "fp16")[:n_cases]])
    header = {k: v for k, v in rec.items() if k not in ("cases", "interrupted", "finished_at")}
    j = records.Journal(tmp_path, header)
    for c in rec["cases"]:
        j.append(c)
    return rec, j.path


@pytest.mark.parametrize("reader", ["show", "export", "report", "history", "merge"])
def test_journal_only_run_is_listed_as_interrupted(tmp_path, capsys, reader):
    rec, jpath = _journal(tmp_path / "res" if (tmp_path / "res").mkdir() is None else None, 2)
    res = tmp_path / "res"
    if reader == "show":
        assert main(["show", "latest", "--results", str(res), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["interrupted"] is True
    elif reader == "export":
        assert main(["export", str(res), "--format", "csv"]) == 0
        assert rec["run_id"] in capsys.readouterr().out
    elif reader == "report":
        assert main(["report", str(res), "--out", str(tmp_path / "rep"), "--format", "csv"]) == 0
        assert (tmp_path / "rep.csv").exists() and "mlp-digits" in (tmp_path / "rep.csv").read_text()
    elif reader == "history":
        from harness.analyze import history

        df = history.index_runs([res], engine="pandas")
        assert list(df["run_id"]) == [rec["run_id"]] and bool(df["interrupted"].iloc[0])
    else:
        assert main(["merge", str(res), "--out", str(tmp_path / "merged")]) == 0
        (out,) = (tmp_path / "merged").glob("*.json")
        assert json.loads(out.read_text())["interrupted"] is True


def test_journal_of_finished_run_not_listed_twice(tmp_path):
    from harness.store import records

    rec, jpath = _journal(tmp_path, 1)
    (tmp_path / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    assert records.orphan_journals(tmp_path) == []
    assert len(records.read_records([tmp_path])) == 1


def test_resume_without_journal_is_one_line(tmp_path, capsys):
    assert main(["run", "--resume", "latest", "--out", str(tmp_path)]) == 2
    _one_line(capsys.readouterr().err, "resume", str(tmp_path))


def test_resume_refuses_other_settings(tmp_path, capsys):
    assert main(["run", "--resume", "latest", "--out", str(tmp_path), "--threads", "2"]) == 2
    _one_line(capsys.readouterr().err, "--threads", "--resume")


def test_resume_unknown_id(tmp_path, capsys):
    _journal(tmp_path, 1)
    assert main(["run", "--resume", "20990101T000000Z-deadbeef", "--out", str(tmp_path)]) == 2
    _one_line(capsys.readouterr().err, "20990101T000000Z-deadbeef")


def test_torn_journal_keeps_whole_lines(tmp_path):
    from harness.store import records

    rec, jpath = _journal(tmp_path, 2)
    with open(jpath, "a") as fh:
        fh.write('{"case": {"model": "half')
    back = records.read_journal(jpath)
    assert len(back["cases"]) == 2 and back["interrupted"] is True


def test_regular_file_check_names_mode(tmp_path):
    from harness.safe import check_input_file

    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 100)
    with pytest.raises(BenchError, match="larger than the limit"):
        check_input_file(big, what="model", max_bytes=10)
    assert stat.S_ISREG(os.stat(check_input_file(big, what="model")).st_mode)


UNKNOWN_KEY_BODIES = [
    "threshold: 5%\nbogus_key: 1\npassword: hunter2-secret\n",
    "threshold: 5%\n1: integer key\nnote: the-other-line-here\n",
    "threshold: 5%\n? |\n  a multi-line key that goes on and on and on\n  hunter2-secret\n: 1\n",
    "threshold: 5%\n" + "".join(f"k{i}: {i}\n" for i in range(10)) + "x: hunter2-secret\n",
]


@pytest.mark.parametrize("body", UNKNOWN_KEY_BODIES, ids=["plain", "int-key", "multiline-key", "many"])
def test_compare_config_unknown_key_is_short(tmp_path, capsys, body):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(body)
    a = _record(tmp_path, "a.json", started=_day(0))
    b = _record(tmp_path, "b.json", started=_day(1))
    rc = main(["compare", str(a), str(b), "--config", str(cfg)])
    assert rc == 2
    line = _one_line(capsys.readouterr().err, "unknown key", "cfg.yaml")
    assert "hunter2" not in line and "the-other-line" not in line and len(line) < 400


@pytest.mark.parametrize("body", UNKNOWN_KEY_BODIES, ids=["plain", "int-key", "multiline-key", "many"])
def test_prices_unknown_top_key_is_short(tmp_path, capsys, body):
    p = tmp_path / "prices.yaml"
    p.write_text(body.replace("threshold: 5%", "currency: EUR"))
    rc = main(["report", str(_record(tmp_path)), "--prices", str(p), "--out", str(tmp_path / "r"), "--format", "md"])
    assert rc == 2
    line = _one_line(capsys.readouterr().err, "unknown key", "prices.yaml")
    assert "hunter2" not in line and "the-other-line" not in line and len(line) < 400
