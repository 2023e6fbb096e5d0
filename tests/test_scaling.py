"""Scaling maths (pure), replica core sets and start barrier, and how a fleet run is split into records."""
from __future__ import annotations

import threading
import time

import pytest

from harness.measure.scaling import aggregate, efficiency, replica_throughput, scaling_table
from harness.run.replica import GO_FILE, core_sets, release_when_ready


def test_replica_throughput_and_aggregate():
    assert replica_throughput(0, 2_000_000_000, 1000) == pytest.approx(500.0)
    w = [{"start_ns": 0, "end_ns": 1_000_000_000, "samples": 800},
         {"start_ns": 500_000_000, "end_ns": 2_000_000_000, "samples": 1200}]
    a = aggregate(w)
    assert a["throughput"] == pytest.approx(2000 / 2.0)  # all samples over the union window
    assert a["per_replica"] == pytest.approx([800.0, 800.0])
    assert a["sum_of_replicas"] == pytest.approx(1600.0)
    assert a["overlap"] == pytest.approx(0.5 / 2.0)
    with pytest.raises(ValueError):
        replica_throughput(5, 5, 1)
    with pytest.raises(ValueError):
        aggregate([])


def test_efficiency_and_table():
    assert efficiency(150.0, 2, 100.0) == pytest.approx(0.75)
    t = scaling_table([{"replicas": 2, "throughput": 150.0}, {"replicas": 1, "throughput": 100.0},
                       {"replicas": 4, "status": "skipped", "reason": "4 replicas need 4 nodes"}])
    assert t["replicas"] == [1, 2, 4]
    assert t["throughput"] == [100.0, 150.0, None]
    assert t["efficiency"][:2] == pytest.approx([1.0, 0.75])
    assert t["efficiency"][2] is None and t["points"][2]["reason"].startswith("4 replicas")
    # no one-replica point: no efficiency at all
    assert scaling_table([{"replicas": 2, "throughput": 1.0}])["efficiency"] == [None]


def test_core_sets_are_disjoint():
    assert core_sets(2, 1, [0, 1]) == [[0], [1]]
    assert core_sets(2, 2, [3, 0, 1, 2]) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="need 4 cores, 2 available"):
        core_sets(2, 2, [0, 1])


def test_barrier_releases_when_all_ready_or_one_died(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    (d / "ready-0").write_text("")
    t = threading.Thread(target=lambda: (time.sleep(0.2), (d / "ready-1").write_text("")))
    t.start()
    t0 = time.monotonic()
    assert release_when_ready(str(d), 2, timeout_s=10) is True
    assert time.monotonic() - t0 >= 0.15 and (d / GO_FILE).exists()
    t.join()
    e = tmp_path / "b"
    e.mkdir()
    died = threading.Event()
    died.set()
    assert release_when_ready(str(e), 2, died, timeout_s=10) is False and (e / GO_FILE).exists()


def test_fleet_outputs_one_record_per_node_and_driver(tmp_path):
    from harness.run.executors import Job, JobResult
    from harness.run.runner import _Outputs
    from harness.store import records
    from tests.synth import make_case, make_record

    rec = make_record([make_case()])
    header = {k: v for k, v in rec.items() if k not in ("cases", "finished_at", "interrupted")}
    header["executor"] = {"name": "ray", "fleet_run_id": header["run_id"], "address": "x:1", "nodes": []}
    out = _Outputs(header, tmp_path, records, local=False)
    case = rec["cases"][0]
    machines = {n: {**header["environment"], "machine_id": f"m{n}", "hostname": f"h{n}"} for n in "ab"}
    cases = []
    for k, n in enumerate("aab"):
        c = {**case, "case_id": f"c{k}"}
        jr = JobResult(job=Job(k, f"c{k}", "t:f", {}, {}, 1.0), machine=machines[n],
                       node={"node_id": n, "hostname": f"h{n}", "ip": "127.0.0.1"})
        out.append(c, jr)
        cases.append(c)
    lost = {**case, "case_id": "c3", "status": "skipped", "reason": "no node"}
    out.append(lost, JobResult(job=Job(3, "c3", "t:f", {}, {}, 1.0), status="skipped", reason="no node"))
    cases.append(lost)
    view, paths = out.write("2026-01-01T00:00:00.000Z", False, cases)
    recs = records.read_records([tmp_path])
    assert len(recs) == 3 and not list(tmp_path.glob(".*.partial.jsonl"))
    by_role = {(r["executor"]["role"], (r["executor"]["node"] or {}).get("node_id")): r for r in recs}
    assert [c["case_id"] for c in by_role[("node", "a")]["cases"]] == ["c0", "c1"]
    assert by_role[("node", "a")]["environment"]["machine_id"] == "ma"
    assert by_role[("node", "b")]["environment"]["hostname"] == "hb"
    assert by_role[("driver", None)]["environment"] == header["environment"]
    assert {r["executor"]["fleet_run_id"] for r in recs} == {header["run_id"]}
    assert len({r["run_id"] for r in recs}) == 3
    assert [c["case_id"] for c in view["cases"]] == ["c0", "c1", "c2", "c3"]
    assert len(view["executor"]["records"]) == 3 and paths.count(".json") == 3
