"""Tests for bench merge: content-addressed names, duplicates detected, nothing lost, machines by fingerprint."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from harness.store import merge as mg
from harness.cli import main
from harness.store.records import dumps, read_record, write_atomic
from tests.synth import CPU_A, CPU_B, environment, make_case, make_record

T0 = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
ENV_A = environment(CPU_A, "host-a")
ENV_A2 = environment(CPU_A, "host-a-renamed")  # same hardware, new host name: same machine
ENV_B = environment(CPU_B, "host-a")  # different hardware behind a reused host name


def save(d, rec, name=None, text=None):
    d.mkdir(parents=True, exist_ok=True)
    return write_atomic(d / (name or f"{rec['run_id']}.json"), text if text is not None else dumps(rec) + "\n")


def records(n, env, start, seed=0):
    return [make_record([make_case(seed=seed + i), make_case("cnn", seed=seed + 100 + i)], env=env,
                        started=start + dt.timedelta(days=i)) for i in range(n)]


@pytest.fixture
def machines(tmp_path):
    """Artifacts of three CI jobs as they would be downloaded: nested directories, overlaps."""
    a, a2, b = records(3, ENV_A, T0), records(2, ENV_A2, T0 + dt.timedelta(days=10)), records(3, ENV_B, T0, seed=50)
    root = tmp_path / "artifacts"
    for r in a:
        save(root / "job-a" / "results", r)
    for r in a2:
        save(root / "job-a2", r)
    for r in b:
        save(root / "job-b" / "nested" / "results", r)
    # the same record again: a plain copy, and one re-serialised with other whitespace and key order
    save(root / "job-b-retry", b[0])
    save(root / "job-b-retry", b[1], name="renamed.json", text=json.dumps(b[1], indent=4, sort_keys=True))
    return root, a + a2 + b


def digests(paths):
    return {mg.record_digest(read_record(p)) for p in paths}


def test_merge_without_loss_or_duplication(machines, tmp_path):
    root, originals = machines
    out = tmp_path / "merged"
    report = mg.merge_runs([root], out)
    files = sorted(out.glob("*.json"))
    assert len(files) == len(originals) == 8
    assert digests(files) == {mg.record_digest(r) for r in originals}  # nothing lost
    assert len(report.written) == 8 and len(report.duplicate_inputs) == 2
    for f in files:  # content-addressed names; bytes copied as they were
        rec = read_record(f)
        assert f.name == mg.merged_name(rec) and f.name.startswith(rec["run_id"] + ".")
    src = root / "job-a" / "results" / f"{originals[0]['run_id']}.json"
    assert (out / mg.merged_name(originals[0])).read_bytes() == src.read_bytes()
    # merging again adds nothing
    again = mg.merge_runs([root], out)
    assert again.written == [] and len(again.already_present) == 8 and len(again.duplicate_inputs) == 2
    assert len(list(out.glob("*.json"))) == 8


def test_machines_are_told_apart_by_fingerprint_not_hostname(machines, tmp_path):
    root, _ = machines
    report = mg.merge_runs([root], tmp_path / "merged")
    ms = report.machines
    assert set(ms) == {ENV_A["machine_id"], ENV_B["machine_id"]}
    assert ms[ENV_A["machine_id"]].hostnames == {"host-a", "host-a-renamed"} and ms[ENV_A["machine_id"]].runs == 5
    assert ms[ENV_B["machine_id"]].runs == 3
    text = "\n".join(report.lines())
    assert "host name host-a belongs to 2 machines" in text


def test_run_id_collision_keeps_both(tmp_path):
    r1 = make_record([make_case(seed=1)], env=ENV_A, started=T0)
    r2 = json.loads(json.dumps(r1))
    r2["environment"] = ENV_B  # another machine, same run id (e.g. a copied id)
    save(tmp_path / "x", r1)
    save(tmp_path / "y", r2)
    report = mg.merge_runs([tmp_path / "x", tmp_path / "y"], tmp_path / "out")
    assert len(list((tmp_path / "out").glob("*.json"))) == 2
    assert report.run_id_conflicts and report.run_id_conflicts[0][0] == r1["run_id"]
    assert "different records" in "\n".join(report.lines())


def test_invalid_input_writes_nothing_unless_skipped(machines, tmp_path):
    root, _ = machines
    (root / "job-a" / "results" / "broken.json").write_text("{oops")
    bad = make_record([make_case(seed=1)], env=ENV_A, started=T0)
    del bad["timer"]
    save(root / "job-a" / "results", bad, name="schema-broken.json")
    out = tmp_path / "merged"
    with pytest.raises(mg.BenchError, match="nothing written"):
        mg.merge_runs([root], out)
    assert not out.exists() or not list(out.iterdir())
    report = mg.merge_runs([root], out, skip_invalid=True)
    assert len(report.written) == 8 and len(report.invalid) == 2


def test_dry_run_and_cli(machines, tmp_path, capsys):
    root, _ = machines
    out = tmp_path / "merged"
    assert main(["merge", str(root), "--out", str(out), "--dry-run"]) == 0
    assert "would write 8 new" in capsys.readouterr().out and not out.exists()
    assert main(["merge", str(root / "job-a"), str(root / "job-b"), "--out", str(out), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["written"]) == 6 and {m["machine_id"] for m in doc["machines"]} == {ENV_A["machine_id"],
                                                                                      ENV_B["machine_id"]}
    assert main(["merge", str(root), "--out", str(out)]) == 0
    assert "wrote 2 new, 6 already in" in capsys.readouterr().out
    assert main(["merge", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_merged_directory_feeds_history_and_compare(machines, tmp_path, capsys):
    root, _ = machines
    out = tmp_path / "merged"
    mg.merge_runs([root], out)
    assert main(["history", "--results", str(out), "--machine", "all", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {c["machine_id"] for c in doc["cases"]} == {ENV_A["machine_id"], ENV_B["machine_id"]}
    assert all(c["runs"] == 5 for c in doc["cases"] if c["machine_id"] == ENV_A["machine_id"])
    code = main(["compare", "previous", "latest", "--results", str(out), "--machine", ENV_B["machine_id"]])
    assert code == 0, capsys.readouterr().out
