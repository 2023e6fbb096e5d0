from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from harness.store import records
from harness.errors import BenchError
from tests.synth import make_case, make_record


def rec(**kw):
    return make_record([make_case(), make_case(variant="int8-dynamic", median_ns=60_000, seed=1),
                        make_case(status="failed", reason="crashed: killed by signal SIGSEGV (11)")], **kw)


def test_synthetic_record_is_valid_and_written_atomically(tmp_path):
    r = rec()
    path = records.write_record(r, tmp_path)
    assert path.name == f"{r['run_id']}.json"
    assert json.loads(path.read_text())["cases"][1]["variant"] == "int8-dynamic"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_records_are_never_rewritten(tmp_path):
    r = rec()
    path = records.write_record(r, tmp_path)
    before = path.read_text()
    r2 = copy.deepcopy(r)
    r2["tags"] = {"changed": "yes"}
    with pytest.raises(BenchError, match="refusing to overwrite"):
        records.write_record(r2, tmp_path)
    assert path.read_text() == before


@pytest.mark.parametrize("mutate,where", [
    (lambda r: r.pop("environment"), "environment"),
    (lambda r: r["cases"][0].update(status="great"), "cases/0/status"),
    (lambda r: r["cases"][0].update(batch=0), "cases/0/batch"),
    (lambda r: r.update(schema_version=2), "schema_version"),
    (lambda r: r["cases"][0]["latency_ns"].pop("p99"), "cases/0/latency_ns"),
])
def test_schema_violations_are_refused_without_a_file(tmp_path, mutate, where):
    r = rec()
    mutate(r)
    with pytest.raises(BenchError) as exc:
        records.write_record(r, tmp_path)
    assert where.split("/")[0] in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_numpy_values_are_stored_as_plain_json(tmp_path):
    r = rec()
    r["cases"][0]["iterations"] = np.int64(200)
    r["cases"][0]["duration_s"] = np.float64(1.5)
    path = records.write_record(r, tmp_path)
    back = records.read_record(path, check=True)
    assert back["cases"][0]["iterations"] == 200 and back["cases"][0]["duration_s"] == 1.5


def test_journal_survives_a_torn_last_line(tmp_path):
    r = rec()
    header = {k: v for k, v in r.items() if k != "cases"}
    j = records.Journal(tmp_path, header)
    j.append(r["cases"][0])
    j.append(r["cases"][1])
    with open(j.path, "a") as fh:
        fh.write('{"case": {"model": "half-writ')  # a hard kill mid-write
    back = records.read_record(j.path)
    assert [c["variant"] for c in back["cases"]] == ["fp32", "int8-dynamic"]
    assert back["interrupted"] is True
    assert records.validation_errors(back) == []


def test_read_record_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BenchError, match="not valid JSON"):
        records.read_record(bad)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(BenchError, match="not a bench run record"):
        records.read_record(other)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({**rec(), "schema_version": 99}))
    with pytest.raises(BenchError, match="schema version 99 is not supported"):
        records.read_record(future)
    with pytest.raises(BenchError, match="no such file"):
        records.read_record(tmp_path / "missing.json")


def test_iter_record_paths_and_load_results(tmp_path):
    a = records.write_record(rec(), tmp_path)
    b = records.write_record(rec(tags={"night": "1"}), tmp_path)
    (tmp_path / "notes.txt").write_text("ignored")
    assert list(records.iter_record_paths([tmp_path, a])) == [a, b]  # dir + duplicate file: no repeats
    with pytest.raises(BenchError, match="no files match"):
        list(records.iter_record_paths([str(tmp_path / "*.nope")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no run records"):
        records.read_records([tmp_path / "empty"])
    df = records.load_results(tmp_path)
    assert len(df) == 6
    assert {"run_id", "model", "variant", "status", "latency_ns.p50", "accuracy.value", "env.machine_id",
            "tag.night"} <= set(df.columns)
    assert "samples_ns" not in df.columns
    ok = df[df.status == "ok"]
    assert (ok["latency_ns.p50"] > 0).all()
    with_samples = records.load_results(str(tmp_path / "*.json"), samples=True)
    assert len(with_samples.loc[0, "samples_ns"]) == 200


def test_run_ids_sort_by_time_and_are_unique():
    import datetime as dt

    t = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    ids = {records.new_run_id(t) for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("20260102T030405Z-") for i in ids)
    assert records.new_run_id(t) < records.new_run_id(t + dt.timedelta(seconds=1))


def test_thinned_arrays_have_no_bounds_in_the_schema():
    """validation_errors() validates raw sample arrays by one element (after a type scan): exact
    only while the schema bounds neither their length nor their values."""
    from harness.store.records import THIN_KEYS, schema

    found = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in (node.get("properties") or {}).items():
                if k in THIN_KEYS:
                    found.append(v)
                    assert set(v) <= {"type", "items", "description"}, v
                    assert set(v["items"]) <= {"type"} and v["items"]["type"] == "integer", v
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema())
    assert found  # the keys exist in the schema


def test_a_bad_item_in_a_long_sample_array_is_still_found():
    from harness.store.records import validation_errors

    r = make_record([make_case()])
    case = r["cases"][0]
    case["samples_ns"] = list(range(1, 5000))
    assert validation_errors(r) == []
    case["samples_ns"][4321] = "x"
    errs = validation_errors(r)
    assert len(errs) == 1 and "samples_ns/4321" in errs[0]
    case["samples_ns"][4321] = 1.5  # a float among ints: caught at its own index too
    assert "samples_ns/4321" in validation_errors(r)[0]
