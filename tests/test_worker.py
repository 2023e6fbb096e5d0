"""harness.run.worker: each failure mode for real, black-box through run_in_worker."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from harness.run.worker import WorkerResult, run_in_worker

REPO = Path(__file__).resolve().parent.parent
T = "tests.worker_targets:"


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    """Worker temp dirs go under tmp_path, and every test checks they were removed."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield tmp
    assert not list(tmp.glob("bench-worker-*")), "run_in_worker left its temp dir behind"


def gone(pid: int) -> bool:
    """True when the process no longer exists (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until_gone(pids, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(p) for p in pids):
            return True
        time.sleep(0.05)
    return all(gone(p) for p in pids)


def read_pids(path: Path, timeout=15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return [int(p) for p in path.read_text().split()]
        time.sleep(0.02)
    raise AssertionError(f"target never wrote {path}")


def test_returns_dict():
    res = run_in_worker(T + "echo", {"shape": [1, 3], "name": "x"}, timeout_s=30)
    assert isinstance(res, WorkerResult)
    assert res.ok, res.reason
    assert res.reason is None
    assert res.result["echo"] == {"shape": [1, 3], "name": "x"}
    assert res.result["pid"] != os.getpid()
    assert "__rusage__" not in res.result  # moved to peak_rss_bytes
    assert isinstance(res.peak_rss_bytes, int) and 1_000_000 < res.peak_rss_bytes < 10**12
    assert res.exit_code == 0 and res.signal is None and not res.timed_out
    assert 0 < res.wall_s < 30
    assert "hello from the worker" in res.stderr_tail  # stdout is captured too
    rec = res.to_record()
    assert {"exit_code", "signal", "stderr_tail", "wall_s", "reason"} <= set(rec)
    json.dumps(rec)


def test_peak_rss_reflects_allocation():
    small = run_in_worker(T + "allocate", {"bytes": 1}, timeout_s=30)
    big = run_in_worker(T + "allocate", {"bytes": 200 * 2**20}, timeout_s=30)
    assert small.ok and big.ok
    assert big.peak_rss_bytes - small.peak_rss_bytes > 150 * 2**20


def test_env_and_cwd(tmp_path):
    res = run_in_worker(T + "environment", {"name": "OMP_NUM_THREADS"}, timeout_s=30,
                        env={"OMP_NUM_THREADS": 3}, cwd=tmp_path)
    assert res.ok, res.reason
    assert res.result["value"] == "3"
    assert os.path.samefile(res.result["cwd"], tmp_path)  # project still importable from elsewhere


def test_env_none_removes_variable(monkeypatch):
    monkeypatch.setenv("BENCH_TEST_VAR", "inherited")
    res = run_in_worker(T + "environment", {"name": "BENCH_TEST_VAR"}, timeout_s=30)
    assert res.result["value"] == "inherited"
    res = run_in_worker(T + "environment", {"name": "BENCH_TEST_VAR"}, timeout_s=30,
                        env={"BENCH_TEST_VAR": None})
    assert res.ok and res.result["value"] is None


def test_raises_value_error():
    res = run_in_worker(T + "raise_value_error", {}, timeout_s=30)
    assert not res.ok and res.result is None
    assert res.reason == "ValueError: bad shape"
    assert res.exit_code == 1 and res.signal is None
    assert "Traceback (most recent call last)" in res.stderr_tail
    assert "in raise_value_error" in res.stderr_tail
    assert isinstance(res.peak_rss_bytes, int)


@pytest.mark.parametrize("target", ["segfault_ctypes", "segfault_signal"])
def test_segfault(target):
    res = run_in_worker(T + target, {}, timeout_s=30)
    assert not res.ok
    assert res.signal == "SIGSEGV"
    assert res.exit_code is None
    assert res.reason == "crashed: killed by signal SIGSEGV (11)"
    assert f"in {target}" in res.stderr_tail  # faulthandler's traceback


def test_abort():
    res = run_in_worker(T + "abort", {}, timeout_s=30)
    assert not res.ok
    assert res.signal == "SIGABRT"
    assert res.reason == "crashed: aborted (SIGABRT)"


def test_hang_is_killed_and_nothing_is_left(tmp_path):
    pid_file = tmp_path / "pids"
    res = run_in_worker(T + "hang", {"pid_file": str(pid_file)}, timeout_s=2)
    assert not res.ok and res.timed_out
    assert res.reason == "timed out after 2.0 s (killed)"
    assert res.signal == "SIGTERM"
    assert 2 <= res.wall_s < 20
    assert "in hang" in res.stderr_tail  # faulthandler dump on SIGTERM: where it hung
    worker_pid, grandchild_pid = read_pids(pid_file)
    assert wait_until_gone([worker_pid, grandchild_pid]), "a process outlived its worker"


def test_hang_ignoring_sigterm_gets_sigkill(tmp_path):
    pid_file = tmp_path / "pids"
    res = run_in_worker(T + "hang_ignoring_sigterm", {"pid_file": str(pid_file)},
                        timeout_s=1, kill_grace_s=0.5)
    assert not res.ok and res.timed_out
    assert res.reason == "timed out after 1.0 s (killed)"  # our SIGKILL, not the OOM killer
    assert res.signal == "SIGKILL"
    assert wait_until_gone(read_pids(pid_file))


def test_sigkill_from_outside_looks_like_oom():
    res = run_in_worker(T + "sigkill_self", {}, timeout_s=30)
    assert not res.ok and not res.timed_out
    assert res.signal == "SIGKILL"
    assert res.reason == "killed by SIGKILL (likely out of memory)"


@pytest.mark.parametrize("target", ["sys_exit_3", "os_exit_3"])
def test_exit_without_result(target):
    res = run_in_worker(T + target, {}, timeout_s=30)
    assert not res.ok
    assert res.exit_code == 3 and res.signal is None
    assert res.reason == "exited with code 3 without a result"


def test_chatty_child_does_not_block():
    res = run_in_worker(T + "chatty", {"lines": 100_000}, timeout_s=60)  # ~10 MB
    assert res.ok, res.reason
    assert res.result == {"done": True}
    lines = res.stderr_tail.splitlines()
    assert lines[-1] == "END-MARKER"
    assert "stdout: still here" in lines
    assert len(lines) <= 40
    assert len(res.stderr_tail) < 64 * 1024


def test_not_json_serialisable():
    res = run_in_worker(T + "not_serialisable", {}, timeout_s=30)
    assert not res.ok
    assert "not JSON-serialisable" in res.reason and "set" in res.reason
    assert "\n" not in res.reason


def test_not_a_dict():
    res = run_in_worker(T + "not_a_dict", {}, timeout_s=30)
    assert not res.ok
    assert "returned list, not a dict" in res.reason


def test_module_not_found():
    res = run_in_worker("no_such_module_xyz.sub:run", {}, timeout_s=30)
    assert not res.ok
    assert res.reason.startswith("cannot import target 'no_such_module_xyz.sub:run'")
    assert "No module named 'no_such_module_xyz'" in res.reason


@pytest.mark.parametrize("name", ["no_such_function", "NOT_CALLABLE"])
def test_bad_attribute(name):
    res = run_in_worker(T + name, {}, timeout_s=30)
    assert not res.ok
    assert res.reason.startswith(f"cannot import target '{T}{name}'")


@pytest.mark.parametrize("target", ["no_colon", ":f", "mod:", ""])
def test_malformed_target_is_a_caller_error(target):
    with pytest.raises(ValueError, match="package.module:function"):
        run_in_worker(target, {}, timeout_s=30)


def test_payload_must_be_json():
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        run_in_worker(T + "echo", {"x": object()}, timeout_s=30)


DRIVER = textwrap.dedent(
    """
    import sys, psutil
    from harness.run.worker import run_in_worker
    target, pid_file = sys.argv[1], sys.argv[2]
    try:
        res = run_in_worker(target, {"pid_file": pid_file}, timeout_s=120)
    except KeyboardInterrupt:
        # Checked here, before this process exits, so the kernel's parent-death
        # signal cannot hide a worker that run_in_worker failed to kill.
        alive = []
        for pid in map(int, open(pid_file).read().split()):
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        print("KeyboardInterrupt reached the caller; alive:", alive, flush=True)
        sys.exit(130)
    print("no interrupt:", res.reason, flush=True)
    """
)


def start_driver(tmp_path, target):
    pid_file = tmp_path / "pids"
    driver_tmp = tmp_path / "driver-tmp"
    driver_tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(driver_tmp),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, T + target, str(pid_file)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return driver, pid_file, driver_tmp


def test_keyboard_interrupt_kills_worker_and_reraises(tmp_path):
    driver, pid_file, driver_tmp = start_driver(tmp_path, "hang")
    try:
        worker_pid, grandchild_pid = read_pids(pid_file)
        assert not gone(worker_pid)
        os.kill(driver.pid, signal.SIGINT)
        out, _ = driver.communicate(timeout=20)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, out
    assert "KeyboardInterrupt reached the caller" in out, out
    # The grandchild may still be dying (it was only signalled), the worker was reaped.
    alive = json.loads(out.split("alive:")[1].strip())
    assert worker_pid not in alive, out
    assert wait_until_gone([worker_pid, grandchild_pid]), "the worker outlived an interrupted parent"
    assert not list(driver_tmp.glob("bench-worker-*")), "temp dir left behind after interrupt"


def test_worker_dies_with_a_sigkilled_parent(tmp_path):
    driver, pid_file, _ = start_driver(tmp_path, "hang_ignoring_sigterm")
    try:
        (worker_pid,) = read_pids(pid_file)
        driver.kill()  # the parent gets no chance to clean up
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    ok = wait_until_gone([worker_pid])
    if not ok:
        os.kill(worker_pid, signal.SIGKILL)
    assert ok, "worker outlived its SIGKILLed parent"
