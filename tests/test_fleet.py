"""The Ray executor on a real local multi-node cluster (loopback only), and the scaling sweep.

One cluster per module (head without CPUs + two 1-CPU nodes; node A carries a fake custom
resource ``fake_fpga`` and the label ``accelerator=F1``): placement by resource and by label,
results streaming back in completion order, the smoke suite giving the same cases as the local
executor, Ctrl-C, and (last, it removes nodes) a node killed mid-case.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import bench_env, run_bench

ROOT = Path(__file__).resolve().parents[1]
# Ray on this machine: loopback only, no usage reporting (set before Ray is imported).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _env(cache=None, **extra):
    env = bench_env(cache=cache)
    env.update(RAY_ENV)
    env.update({k: str(v) for k, v in extra.items()})
    return env


# --- bad input: one line, exit 2, before any case runs (no cluster needed) -----------------------

def test_ray_not_installed_is_one_line(tmp_path):
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), env["PYTHONPATH"]])
    r = run_bench(["run", "--suite", "smoke", "--executor", "ray", "--out", str(tmp_path / "o")], env=env)
    assert r.returncode == 2, r.stderr
    assert "needs Ray" in r.stderr and "bench[fleet]" in r.stderr and "Traceback" not in r.stderr
    assert not list((tmp_path / "o").glob("*")) if (tmp_path / "o").exists() else True


def test_unreachable_address_is_one_line(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = run_bench(["run", "--suite", "smoke", "--executor", "ray", "--address", f"127.0.0.1:{port}",
                   "--out", str(tmp_path / "o")], env=_env(), timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_address_and_labels_need_ray_executor(tmp_path):
    r = run_bench(["run", "--suite", "smoke", "--address", "127.0.0.1:1", "--out", str(tmp_path)], env=_env())
    assert r.returncode == 2 and "--address is for --executor ray" in r.stderr
    r = run_bench(["run", "--suite", "smoke", "--node-label", "accelerator=H100", "--out", str(tmp_path)], env=_env())
    assert r.returncode == 2 and "--node-label is for --executor ray" in r.stderr


def test_replicas_need_offline(tmp_path):
    r = run_bench(["run", "--suite", "smoke", "--scenario", "single-stream", "--replicas", "1,2",
                   "--out", str(tmp_path)], env=_env())
    assert r.returncode == 2 and "offline" in r.stderr


# --- the cluster ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    for k, v in RAY_ENV.items():
        os.environ[k] = v
    os.environ["BENCH_FLEET_CACHE"] = str(tmp_path_factory.mktemp("fleet-node-cache"))
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, node_ip_address="127.0.0.1",
                                                          include_dashboard=False))
    a = c.add_node(num_cpus=1, resources={"fake_fpga": 1}, labels={"accelerator": "F1"}, node_ip_address="127.0.0.1")
    b = c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray.init(address=c.address, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="ERROR")
    try:
        yield {"cluster": c, "address": c.address, "a": a, "b": b, "ray": ray}
    finally:
        ray.shutdown()
        c.shutdown()


def _job(i, seconds=0.0, needs=None, **payload):
    from harness.run.executors import Job, Needs

    return Job(index=i, case_id=f"job{i}", target="tests.fleet_targets:nap",
               payload={"seconds": seconds, "tag": i, **payload},
               env={"PYTHONPATH": str(ROOT)}, timeout_s=120, needs=needs or Needs())


def test_placement_by_resource_and_label_and_streaming(cluster):
    from harness.errors import BenchError
    from harness.run.executors import Needs
    from harness.run.executors.ray import RayExecutor

    ex = RayExecutor(address=cluster["address"])
    a_id = cluster["a"].node_id
    jobs = [_job(0, 4.0, Needs(cpus=1, resources={"fake_fpga": 1})),   # only node A has it
            _job(1, 0.0, Needs(cpus=1, labels={"accelerator": "F1"})),  # only node A has the label: waits for 0
            _job(2, 0.0, Needs(cpus=1, resources={"nobody_has": 1})),   # no node: skipped, the rest run
            _job(3, 0.0, Needs(cpus=1))]                                 # node B, at once
    got = list(ex.run(jobs))
    order = [r.job.index for r in got]
    by = {r.job.index: r for r in got}
    assert by[2].status == "skipped" and "no node of the Ray cluster has" in by[2].reason and "nobody_has" in by[2].reason
    assert by[0].node["node_id"] == a_id and by[1].node["node_id"] == a_id
    assert by[3].node["node_id"] == cluster["b"].node_id
    # streamed in completion order, not submission order: the quick job on B comes back before the
    # 4 s job on A that was submitted first (Ray may start job 0 or job 1 first on A)
    assert order.index(3) < order.index(0)
    for i in (0, 1, 3):
        assert by[i].worker.ok and by[i].worker.result["tag"] == i
        assert by[i].machine["machine_id"] and by[i].device is None
    # a label no node has: one line before anything runs
    with pytest.raises(BenchError, match="no node of the Ray cluster has this label"):
        ex.check([Needs(labels={"accelerator": "H100"})])
    assert ex.default_threads(Needs(resources={"fake_fpga": 1})) == 1


def test_label_no_node_has_exits_2(cluster, tmp_path):
    r = run_bench(["run", "--suite", "smoke", "--executor", "ray", "--address", cluster["address"],
                   "--node-label", "accelerator=H100", "--out", str(tmp_path)], env=_env(), timeout=120)
    assert r.returncode == 2, r.stderr
    assert "--node-label accelerator=H100: no node of the Ray cluster has this label" in r.stderr
    assert "accelerator=F1" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("*.json"))


def _records(d: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


@pytest.mark.slow
def test_smoke_on_ray_same_cases_as_local_with_node_fingerprints_and_scaling(cluster, tmp_path, cached):
    common = ["run", "--suite", "smoke", "--threads", "1", "--replicas", "1,2", "-q"]
    local = run_bench([*common, "--out", str(tmp_path / "local")], env=_env(cache=cached), timeout=600)
    assert local.returncode in (0, 1), local.stderr
    fleet = run_bench([*common, "--executor", "ray", "--address", cluster["address"], "--out", str(tmp_path / "ray")],
                      env=_env(cache=cached), timeout=600)
    assert fleet.returncode in (0, 1), fleet.stderr + fleet.stdout
    (lrec,) = _records(tmp_path / "local")
    recs = _records(tmp_path / "ray")
    assert recs and not list((tmp_path / "ray").glob(".*.partial.jsonl"))  # journals gone once written
    rcases = [c for r in recs for c in r["cases"]]
    assert sorted((c["case_id"], c["key"]) for c in lrec["cases"]) == sorted((c["case_id"], c["key"]) for c in rcases)
    for c in [*lrec["cases"], *rcases]:  # measured on both; on this shared 2-core machine a timing window
        assert c["status"] in ("ok", "invalid"), (c["case_id"], c["reason"])  # may be flagged unstable
        if c["status"] == "invalid":
            assert c["reason"].startswith(("unstable", "ci_not_reached", "headline_percentile")), c["reason"]
        assert c["accuracy"]["passed"]
    node_ids = {cluster["a"].node_id, cluster["b"].node_id}
    fleet_ids = {r["executor"]["fleet_run_id"] for r in recs}
    assert len(fleet_ids) == 1 and len({r["run_id"] for r in recs}) == len(recs)
    for r in recs:  # one record per node: its environment is the node's fingerprint
        assert r["executor"]["name"] == "ray" and r["executor"]["role"] == "node"
        assert r["executor"]["node"]["node_id"] in node_ids
        for c in r["cases"]:
            assert c["node"]["node_id"] == r["executor"]["node"]["node_id"]
            assert c["machine_id"] == r["environment"]["machine_id"]
    # scaling: on the local machine over cores, on the cluster over nodes
    (loff,) = [c for c in lrec["cases"] if c["scenario"] == "offline"]
    (roff,) = [c for c in rcases if c["scenario"] == "offline"]
    for c, placement in ((loff, "cores"), (roff, "nodes")):
        s = c["scaling"]
        assert s["replicas"] == [1, 2] and s["placement"] == placement, s
        # the efficiency is a measured figure: on this 2-core VM, whose speed moves by up to 2x between
        # the two points of a sweep, it has been 1.66; what is checked is its arithmetic
        assert s["efficiency"][0] == 1.0 and s["efficiency"][1] > 0
        assert s["throughput"][1] == pytest.approx(2 * s["efficiency"][1] * s["throughput"][0])
    where = roff["scaling"]["points"][1]["where"]
    assert {w["node"]["node_id"] for w in where} == node_ids  # two replicas, two nodes
    # the report reads the per-node records (its scaling chart included)
    out = run_bench(["report", str(tmp_path / "ray"), "--format", "md,html", "--out", str(tmp_path / "r.md")],
                    env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    md = (tmp_path / "r.md").read_text()
    assert "## Data-parallel scaling" in md and "| nodes | 1 |" in md and "| nodes | 2 |" in md
    assert 'id="figure-scaling"' in (tmp_path / "r.html").read_text()


@pytest.mark.slow
def test_ctrl_c_cancels_outstanding_and_keeps_finished(cluster, tmp_path, cached):
    out = tmp_path / "o"
    # the label pins both cases to node A: they run one after the other
    cmd = [sys.executable, "-m", "harness", "run", "--suite", "smoke", "--executor", "ray", "--address",
           cluster["address"], "--node-label", "accelerator=F1", "--threads", "1", "--min-time", "3",
           "--max-time", "4", "-q", "--out", str(out)]
    p = subprocess.Popen(cmd, env=_env(cache=cached), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # streaming: the first case is in a journal before the run ends
            lines = [ln for j in glob.glob(str(out / ".*.partial.jsonl")) for ln in open(j) if '"case"' in ln]
            if lines:
                break
            assert p.poll() is None, p.communicate()
            time.sleep(0.1)
        assert lines, "no case reached the journal"
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stderr
    recs = _records(out)
    cases = [c for r in recs for c in r["cases"]]
    (sk,) = [c for c in cases if c["status"] == "skipped"]
    (fin,) = [c for c in cases if c is not sk]  # measured (this loaded VM may flag its timing unstable)
    assert fin["status"] in ("ok", "invalid") and fin["accuracy"]["passed"], fin["reason"]
    assert "interrupted" in sk["reason"]
    assert all(r["interrupted"] for r in recs)
    assert not list(out.glob(".*.partial.jsonl"))
    # the cancelled task's worker is gone: node A takes new work at once
    ray = cluster["ray"]

    @ray.remote(num_cpus=1, resources={"fake_fpga": 1})
    def ping():
        return 1

    assert ray.get(ping.remote(), timeout=60) == 1


def _node_of(pid: int, cluster) -> object:
    """The cluster node whose raylet is an ancestor of process ``pid``."""
    import psutil

    ancestors = {p.pid for p in psutil.Process(pid).parents()}
    for node in cluster.list_all_nodes():
        raylet = node.all_processes.get("raylet")
        if raylet and raylet[0].process.pid in ancestors:
            return node
    raise AssertionError(f"no node runs pid {pid}")


def _wait_file(path: Path, timeout=120) -> int:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return int(path.read_text())


@pytest.mark.slow
def test_node_killed_mid_case_retried_once_on_another_node(cluster, tmp_path):
    """Runs last: it removes nodes. Two nodes with resource `victim`: kill the one running the case
    -> retried on the other, ok, the loss recorded; kill that one too -> failed with the reason."""
    import threading

    from harness.run.executors import Needs
    from harness.run.executors.ray import RayExecutor

    c = cluster["cluster"]
    c.add_node(num_cpus=1, resources={"victim": 1}, node_ip_address="127.0.0.1")
    c.add_node(num_cpus=1, resources={"victim": 1}, node_ip_address="127.0.0.1")
    ex = RayExecutor(address=cluster["address"])
    needs = Needs(cpus=1, resources={"victim": 1})
    pid_file = tmp_path / "pid"
    results = []
    t = threading.Thread(target=lambda: results.extend(
        ex.run([_job(0, 6.0, needs, pid_file=str(pid_file))])), daemon=True)
    t.start()
    first = _node_of(_wait_file(pid_file), c)
    pid_file.unlink()
    c.remove_node(first, allow_graceful=False)
    second = _node_of(_wait_file(pid_file), c)  # the retry started elsewhere
    assert second.node_id != first.node_id
    t.join(120)
    (r,) = results
    assert r.status is None and r.worker.ok and r.node["node_id"] == second.node_id
    assert len(r.retries) == 1 and r.retries[0]["node_id"] == first.node_id
    assert "node lost mid-case" in r.retries[0]["reason"]

    # the same again with no other victim node left: failed, with the reason
    pid_file.unlink()
    results.clear()
    t = threading.Thread(target=lambda: results.extend(
        ex.run([_job(1, 30.0, needs, pid_file=str(pid_file))])), daemon=True)
    t.start()
    c.remove_node(_node_of(_wait_file(pid_file), c), allow_graceful=False)
    t.join(120)
    (r,) = results
    assert r.status == "failed" and "node lost mid-case" in r.reason and "no other matching node" in r.reason
