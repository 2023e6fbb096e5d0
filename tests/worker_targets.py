"""Targets for tests/test_worker.py: each one misbehaves in one way, for real.

They run inside the worker child as ``tests.worker_targets:<name>``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _write_pids(payload: dict, *extra: int) -> None:
    """Write our pid (and extra pids) to payload["pid_file"], atomically."""
    path = payload.get("pid_file")
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(" ".join(str(p) for p in (os.getpid(), *extra)))
        os.replace(tmp, path)


def echo(payload: dict) -> dict:
    print("hello from the worker")
    return {"echo": payload, "pid": os.getpid()}


def environment(payload: dict) -> dict:
    return {"value": os.environ.get(payload["name"]), "cwd": os.getcwd(), "sys_path0": sys.path[0]}


def raise_value_error(payload: dict) -> dict:
    raise ValueError("bad shape")


def segfault_ctypes(payload: dict) -> dict:
    import ctypes

    ctypes.string_at(0)
    return {}


def segfault_signal(payload: dict) -> dict:
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)
    return {}


def abort(payload: dict) -> dict:
    os.abort()


def hang(payload: dict) -> dict:
    """Start a grandchild in our process group, then sleep forever."""
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
    _write_pids(payload, grandchild.pid)
    time.sleep(1000)
    return {}


def hang_ignoring_sigterm(payload: dict) -> dict:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _write_pids(payload)
    time.sleep(1000)
    return {}


def sigkill_self(payload: dict) -> dict:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)
    return {}


def sys_exit_3(payload: dict) -> dict:
    sys.exit(3)


def os_exit_3(payload: dict) -> dict:
    os._exit(3)


def chatty(payload: dict) -> dict:
    """About 10 MB to stderr (and some to stdout), then a normal result."""
    line = "x" * 99 + "\n"
    for _ in range(payload.get("lines", 100_000)):
        sys.stderr.write(line)
    print("stdout: still here")
    sys.stderr.write("END-MARKER\n")
    return {"done": True}


def not_serialisable(payload: dict) -> dict:
    return {"values": {1, 2, 3}}


def not_a_dict(payload: dict) -> list:
    return [1, 2, 3]


def allocate(payload: dict) -> dict:
    block = bytearray(payload["bytes"])  # zero-filled: really touched
    return {"len": len(block)}


NOT_CALLABLE = 42


def import_named(payload: dict) -> dict:
    """Import payload["name"] inside the worker and say where it came from."""
    import importlib

    mod = importlib.import_module(payload["name"])
    return {"file": getattr(mod, "__file__", None), "cwd": os.getcwd(), "path": list(sys.path)}
