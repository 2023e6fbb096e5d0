"""The Ray executor's retry rule against a fake Ray whose node list is stale (no cluster needed).

Real Ray goes on listing a killed node as Alive in ``ray.nodes()`` for tens of seconds after a
task on it failed with NodeDiedError. A retry placed by that view would wait forever for a node
that is gone (seen in CI); the executor must trust the deaths it saw itself.
"""
from __future__ import annotations

import types

import pytest

from harness.run.executors import Job, Needs
from harness.run.executors.ray import RayExecutor

A, B = "a" * 56, "b" * 56


class RayError(Exception):
    pass


class NodeDiedError(RayError):
    pass


class FakeRay:
    """Each submitted task fails (node died) on the next node of ``deaths``, or succeeds once they run out."""

    def __init__(self, deaths):
        self.deaths = list(deaths)
        self.exceptions = types.SimpleNamespace(RayError=RayError)
        self.submitted = []  # the options of every submission
        self._out = {}

    def nodes(self):  # stale: every node is Alive forever
        return [{"NodeID": n, "Alive": True, "Resources": {"CPU": 1, "victim": 1}, "Labels": {}} for n in (A, B)]

    def wait(self, refs, num_returns=1, timeout=None):
        assert len(self.submitted) < 10, "the executor resubmits without end"
        return refs[:1], refs[1:]

    def get(self, ref):
        out = self._out.pop(ref)
        if isinstance(out, BaseException):
            raise out
        return out

    def cancel(self, ref, force=False):
        pass

    def submit(self, opts):
        ref = object()
        self.submitted.append(opts)
        if self.deaths:
            node = self.deaths.pop(0)
            self._out[ref] = NodeDiedError(f"Task failed because the node it was running on is dead. "
                                           f"Node IP: 127.0.0.1, node ID: {node}. This can happen ...")
        else:
            self._out[ref] = {"worker": None, "machine": {}, "node": {"node_id": "?"}, "device": None}
        return ref


def _executor(fake):
    ex = object.__new__(RayExecutor)  # no cluster to join: the fake stands in for the ray module
    ex.ray, ex.address, ex._blobs, ex._dead = fake, "fake", {}, set()

    class Remote:
        def options(self, **opts):
            return types.SimpleNamespace(remote=lambda spec, blob: fake.submit(opts))

    ex._remote = Remote()
    return ex


def _job(i):
    return Job(index=i, case_id=f"job{i}", target="x:y", payload={}, env={}, timeout_s=10,
               needs=Needs(cpus=1, resources={"victim": 1}))


@pytest.fixture(autouse=True)
def _results(monkeypatch):
    import harness.run.executors.ray as mod

    monkeypatch.setattr(mod, "_worker_result", lambda w: w)


def test_a_node_seen_dead_is_never_chosen_again_though_ray_still_lists_it():
    fake = FakeRay(deaths=[A])  # job0 loses A (retried on B, ok); job1 then loses B
    ex = _executor(fake)
    (r0,) = ex.run([_job(0)])
    assert r0.status is None and [x["node_id"] for x in r0.retries] == [A]
    assert fake.submitted[1]["label_selector"]  # the retry excludes A
    fake.deaths = [B]
    (r1,) = ex.run([_job(1)])
    # A died before and B now: no node left, failed at once (the stale view still calls both Alive)
    assert r1.status == "failed" and "no other matching node" in r1.reason, r1.reason
    assert len(fake.submitted) == 3


def test_second_loss_of_the_same_job_fails_it_with_both_reasons():
    fake = FakeRay(deaths=[A, B])  # lost on A, retried, lost on B: no third try
    ex = _executor(fake)
    (r,) = ex.run([_job(0)])
    assert len(fake.submitted) == 2
    assert r.status == "failed" and "retried once" in r.reason and [x["node_id"] for x in r.retries] == [A, B]


def test_lost_node_id_is_read_from_rays_message():
    fake = FakeRay(deaths=[B])
    ex = _executor(fake)
    (r,) = ex.run([_job(0)])
    assert B in ex._dead and r.status is None
