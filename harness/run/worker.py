"""Run one benchmark case in its own process, and survive anything it does.

The runner/worker split follows pyperf: the parent (the runner) never imports a
framework and never runs model code; each case runs in a fresh child process, so a
segfault, an abort, a hang, the OOM killer or a runaway framework thread pool costs
one case, never the run.

Parent side::

    res = run_in_worker("backends.cpu:run_case", payload, timeout_s=300,
                        env={"OMP_NUM_THREADS": 4})
    if res.ok:
        record.update(res.result)           # the target's dict, as it returned it
        memory = {"peak_rss": res.peak_rss_bytes}
    else:
        status, reason = "failed", res.reason
    record["worker"] = res.to_record()

Child side (``python -m harness.run.worker <job.json> <result.json>``): read the job
(``{"target": "pkg.mod:function", "payload": {...}}``), import the target, call
``function(payload)``; the function must return a JSON-serialisable dict. The child
adds ``"__rusage__": {"peak_rss_bytes": ...}`` and writes the result file atomically
(tmp + ``os.replace``). When the function raises (or cannot be imported, or returns
something that is not a JSON-serialisable dict) the child writes
``{"__error__": {"type", "message", "traceback", "reason"}}``, prints the traceback to
stderr and exits with code 1. Once the result file is written the child leaves with
``os._exit`` (no interpreter teardown, where framework destructors and stray threads
crash or hang).

Peak memory: the parent pops ``"__rusage__"`` from the child's dict, so
``WorkerResult.result`` is exactly what the target returned, and the child's peak
resident set size (``VmHWM`` of /proc/self/status, in bytes; it includes the
interpreter and everything imported) lands in ``WorkerResult.peak_rss_bytes`` (and in
``to_record()["peak_rss_bytes"]``). It is ``None`` when the child died before
reporting.

Importing the target: the child's ``PYTHONPATH`` starts with the directory that holds
the ``harness`` package the parent imported (the repository root in a checkout or an
editable install), followed by ``env["PYTHONPATH"]`` or the inherited one (relative entries made absolute).
The child starts with ``python -P`` (safe_path): its working directory is NOT on
``sys.path``, so a stray ``onnxruntime.py`` or ``numpy.py`` where ``bench`` was started is
never imported. A target is importable when it lives in the project or on ``PYTHONPATH``.

POSIX only (process groups, signals).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = ["WorkerResult", "run_in_worker", "main"]

#: How many lines of the child's combined stdout/stderr are kept.
TAIL_LINES = 40
#: At most this many bytes are read from the end of the child's output.
_TAIL_READ_BYTES = 64 * 1024
#: A single kept line longer than this is cut (its end is kept).
_TAIL_LINE_CHARS = 1000
#: Longest one-line reason.
_REASON_CHARS = 500

_PARENT_PID_ENV = "BENCH_WORKER_PARENT_PID"
#: How the child starts without the working directory on sys.path: ``python -P`` (3.11+:
#: "safe_path", nothing prepended), else a bootstrap that drops sys.path[0] ('' = the cwd)
#: before anything is imported. So a file named like a dependency (``onnxruntime.py``) in the
#: directory where ``bench run`` starts is never imported by a worker.
_SAFE_PATH_ARGS = (("-P", "-m", "harness.run.worker") if sys.version_info >= (3, 11) else
                   ("-c", "import sys; del sys.path[0]; import runpy; "
                          "runpy.run_module('harness.run.worker', run_name='__main__', alter_sys=True)"))
_CPUS_ENV = "BENCH_WORKER_CPUS"
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the harness package


@dataclass
class WorkerResult:
    """What became of one worker process.

    ``ok`` is True when the target returned a dict normally and the child delivered it.
    ``reason`` is one line when not ok; when ok it is normally None, but it carries a
    note if the child misbehaved *after* delivering its result (crashed or had to be
    killed on the way out). ``exit_code`` is the exit status, None when the child died
    by a signal (then ``signal`` names it, e.g. "SIGSEGV").
    """

    ok: bool
    result: dict | None
    reason: str | None
    exit_code: int | None
    signal: str | None
    stderr_tail: str
    wall_s: float
    timed_out: bool = False
    peak_rss_bytes: int | None = None
    cpus: list[int] | None = None  #: the child's CPU affinity when it was pinned

    def to_record(self) -> dict:
        """The case record's ``"worker"`` field."""
        d = asdict(self)
        return {
            k: d[k]
            for k in ("exit_code", "signal", "stderr_tail", "wall_s", "reason", "timed_out", "peak_rss_bytes", "cpus")
        }


# --------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------


def run_in_worker(
    target: str,
    payload: dict,
    *,
    timeout_s: float,
    env: Mapping[str, Any] | None = None,
    cwd: str | os.PathLike | None = None,
    kill_grace_s: float = 2.0,
    cpus: "list[int] | None" = None,
) -> WorkerResult:
    """Run ``target(payload)`` in a fresh child process and report what happened.

    ``target`` is ``"package.module:function"`` (the function may be a dotted
    attribute path). ``payload`` must be JSON-serialisable. ``env`` adds to (and
    overrides) the inherited environment; values are converted with ``str``, a value of
    None removes the variable. On time-out the child's process group gets SIGTERM,
    then SIGKILL after ``kill_grace_s``. A KeyboardInterrupt while waiting kills the
    child's process group, cleans up and is re-raised.

    Raises ValueError for a malformed ``target`` or a non-positive ``timeout_s`` and
    TypeError for a payload that is not JSON-serialisable (caller bugs); everything the
    child does is reported in the returned :class:`WorkerResult`.

    ``cpus`` pins the child (and every thread it starts) to those CPU numbers: the child
    calls ``os.sched_setaffinity`` first thing, before importing the target, and reports
    the affinity it ended up with in ``WorkerResult.cpus``; a CPU it may not use fails the
    worker with a one-line reason.
    """
    module, sep, attr = target.partition(":")
    if not sep or not module.strip() or not attr.strip():
        raise ValueError(f"worker target must look like 'package.module:function', got {target!r}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    try:
        job_text = json.dumps({"target": target, "payload": payload})
    except (TypeError, ValueError) as exc:
        raise TypeError(f"worker payload for {target!r} is not JSON-serialisable: {exc}") from None

    tmpdir = tempfile.mkdtemp(prefix="bench-worker-")
    try:
        job_path = os.path.join(tmpdir, "job.json")
        result_path = os.path.join(tmpdir, "result.json")
        log_path = os.path.join(tmpdir, "output.log")
        with open(job_path, "w", encoding="utf-8") as f:
            f.write(job_text)
        child_env = _child_env(env)
        if cpus:
            child_env[_CPUS_ENV] = ",".join(str(int(c)) for c in cpus)
        else:
            child_env.pop(_CPUS_ENV, None)
        return _run(job_path, result_path, log_path, child_env, cwd, float(timeout_s), kill_grace_s)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _child_env(extra: Mapping[str, Any] | None) -> dict[str, str]:
    child = dict(os.environ)
    for key, value in (extra or {}).items():
        if value is None:
            child.pop(key, None)
        else:
            child[key] = str(value)
    # Relative entries ('.', 'src') would be resolved against the child's cwd: pin them to
    # absolute paths now; empty entries (the cwd) are dropped.
    paths = [os.path.abspath(p) for p in child.get("PYTHONPATH", "").split(os.pathsep) if p]
    # A regular (non-editable) install already lies on the child's sys.path.
    if _PROJECT_ROOT not in paths and Path(_PROJECT_ROOT).name not in ("site-packages", "dist-packages"):
        paths.insert(0, _PROJECT_ROOT)
    if paths:
        child["PYTHONPATH"] = os.pathsep.join(paths)
    child.setdefault("PYTHONUNBUFFERED", "1")  # output printed before a crash is not lost
    child[_PARENT_PID_ENV] = str(os.getpid())
    return child


def _run(job_path, result_path, log_path, env, cwd, timeout_s, kill_grace_s) -> WorkerResult:
    cmd = [sys.executable, *_SAFE_PATH_ARGS, job_path, result_path]
    proc: subprocess.Popen | None = None
    timed_out = False
    start = time.monotonic()
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # own process group; a terminal Ctrl-C reaches only us
            )
        try:
            proc.wait(timeout=timeout_s - (time.monotonic() - start))
        except subprocess.TimeoutExpired:
            timed_out = True
            _terminate(proc, kill_grace_s)
    except BaseException:
        # KeyboardInterrupt (or anything else) while the child runs: leave nothing behind.
        if proc is not None and proc.returncode is None:
            _killpg(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except BaseException:
                pass
        raise
    finally:
        if proc is not None:
            # Sweep grandchildren left in the child's group. The group id stays
            # reserved while any member lives, so this cannot hit a stranger.
            _killpg(proc.pid, signal.SIGKILL)
    wall_s = time.monotonic() - start
    return _classify(proc.returncode, result_path, log_path, wall_s, timeout_s, timed_out)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the child's group, SIGKILL it after ``grace_s``; reap the child."""
    _killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _describe_death(signum: int) -> str:
    name = _signal_name(signum)
    if signum == signal.SIGKILL:
        return "killed by SIGKILL (likely out of memory)"
    if signum == signal.SIGABRT:
        return "crashed: aborted (SIGABRT)"
    if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        return f"terminated by {name} ({signum}) from outside the harness"
    return f"crashed: killed by signal {name} ({signum})"


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    if len(line) > _REASON_CHARS:
        line = line[: _REASON_CHARS - 1] + "…"
    return line


def _classify(returncode, result_path, log_path, wall_s, timeout_s, timed_out) -> WorkerResult:
    tail = _tail(log_path)
    exit_code = returncode if returncode >= 0 else None
    signame = _signal_name(-returncode) if returncode < 0 else None

    data: Any = None
    unreadable: str | None = None
    if os.path.exists(result_path):
        try:
            with open(result_path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict):
                unreadable = f"worker wrote a {type(data).__name__}, not a dict"
                data = None
        except (OSError, ValueError) as exc:
            unreadable = f"worker wrote an unreadable result: {exc}"
            data = None

    peak = None
    cpus = None
    if isinstance(data, dict):
        rusage = data.pop("__rusage__", None)
        if isinstance(rusage, dict) and isinstance(rusage.get("peak_rss_bytes"), int):
            peak = rusage["peak_rss_bytes"]
        if isinstance(rusage, dict) and isinstance(rusage.get("cpus"), list):
            cpus = rusage["cpus"]

    def result(ok, res, reason):
        return WorkerResult(
            ok=ok, result=res, reason=reason, exit_code=exit_code, signal=signame,
            stderr_tail=tail, wall_s=round(wall_s, 6), timed_out=timed_out, peak_rss_bytes=peak, cpus=cpus,
        )

    if isinstance(data, dict) and "__error__" in data:
        err = data["__error__"] if isinstance(data["__error__"], dict) else {}
        reason = err.get("reason")
        if not reason:
            etype, msg = err.get("type") or "Error", err.get("message") or ""
            reason = f"{etype}: {msg}" if msg else etype
        return result(False, None, _one_line(reason))

    # How the process ended, in words (None: exited 0 on its own).
    if timed_out:
        ending = f"timed out after {timeout_s} s (killed)"
    elif returncode < 0:
        ending = _describe_death(-returncode)
    elif returncode > 0:
        ending = f"exited with code {returncode}"
    else:
        ending = None

    if isinstance(data, dict):
        note = None if ending is None else _one_line(f"result delivered, but then {ending}")
        return result(True, data, note)

    if unreadable:
        reason = unreadable if ending is None else f"{ending}; {unreadable}"
    elif timed_out or returncode < 0:
        reason = ending
    else:
        reason = f"exited with code {returncode} without a result"
        last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), None)
        if last:
            reason += f" (last output: {last.strip()})"
    return result(False, None, _one_line(reason))


def _tail(path: str, max_lines: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_READ_BYTES))
            raw = f.read()
    except OSError:
        return ""
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if size > _TAIL_READ_BYTES and lines:
        lines = lines[1:] or lines  # the first line is probably cut
    kept = []
    for line in lines[-max_lines:]:
        if len(line) > _TAIL_LINE_CHARS:
            line = "…" + line[-(_TAIL_LINE_CHARS - 1):]
        kept.append(line)
    return "\n".join(kept)


# --------------------------------------------------------------------------------------
# child side
# --------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL us if the parent dies (it may be SIGKILLed itself)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        return
    expected = os.environ.get(_PARENT_PID_ENV)
    if expected and expected.isdigit() and os.getppid() != int(expected):
        os._exit(70)  # the parent died before prctl took effect


def _peak_rss_bytes() -> int | None:
    """This process's own high-water mark of resident memory.

    Linux: ``VmHWM`` from /proc/self/status. Not ``ru_maxrss``: that survives fork + exec,
    so a worker spawned by a 400 MB parent would report the parent's peak, not its own.
    Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except Exception:
        return None
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _resolve(target: str):
    import importlib

    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{attr_path!r} in {module_name!r} is a {type(obj).__name__}, not callable")
    return obj


def _write_json(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _fail(result_path: str, exc: BaseException, reason: str | None, tb: str | None = None) -> int:
    import traceback

    if tb is None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write(tb if tb.endswith("\n") else tb + "\n")
    error = {"type": type(exc).__name__, "message": str(exc), "traceback": tb, "reason": reason}
    record = {"__error__": error, "__rusage__": {"peak_rss_bytes": _peak_rss_bytes()}}
    try:
        text = json.dumps(record)
    except (TypeError, ValueError):  # a message that will not encode
        error["message"] = repr(str(exc))
        text = json.dumps(record, default=repr)
    _write_json(result_path, text)
    return 1


def _pinned_cpus() -> list[int] | None:
    if not os.environ.get(_CPUS_ENV):
        return None
    try:
        return sorted(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def _pin() -> None:
    """Pin this process to the CPUs of ``BENCH_WORKER_CPUS`` (raises with one line if it cannot)."""
    text = os.environ.get(_CPUS_ENV)
    if not text:
        return
    cpus = {int(c) for c in text.split(",") if c.strip()}
    try:
        os.sched_setaffinity(0, cpus)  # type: ignore[attr-defined]
    except AttributeError:
        raise OSError("cannot pin CPUs on this platform (no sched_setaffinity)") from None
    except OSError as exc:
        raise OSError(f"cannot pin to CPUs {sorted(cpus)}: {exc.strerror or exc}") from None


def _child(job_path: str, result_path: str) -> int:
    try:
        _pin()
    except (OSError, ValueError) as exc:
        return _fail(result_path, exc, _one_line(str(exc)))
    try:
        with open(job_path, encoding="utf-8") as f:
            job = json.load(f)
        target, payload = job["target"], job["payload"]
    except Exception as exc:
        return _fail(result_path, exc, _one_line(f"worker could not read its job: {type(exc).__name__}: {exc}"))

    try:
        fn = _resolve(target)
    except Exception as exc:
        return _fail(result_path, exc, _one_line(f"cannot import target {target!r}: {type(exc).__name__}: {exc}"))

    try:
        out = fn(payload)
    except Exception as exc:
        return _fail(result_path, exc, None)  # reason: "Type: message"

    if not isinstance(out, dict):
        exc = TypeError(f"target {target!r} returned {type(out).__name__}, not a dict")
        return _fail(result_path, exc, _one_line(str(exc)), tb="TypeError: " + str(exc))
    out = dict(out)
    out["__rusage__"] = {"peak_rss_bytes": _peak_rss_bytes(), "cpus": _pinned_cpus()}
    try:
        text = json.dumps(out)
    except (TypeError, ValueError, RecursionError) as exc:
        msg = f"target {target!r} returned a result that is not JSON-serialisable: {exc}"
        return _fail(result_path, exc, _one_line(msg), tb=f"{type(exc).__name__}: {msg}")
    _write_json(result_path, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``python -m harness.run.worker <job.json> <result.json>``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: python -m harness.run.worker <job.json> <result.json>\n")
        return 2
    _die_with_parent()
    import faulthandler

    # Python tracebacks for crashes (SIGSEGV, SIGABRT, ...) and for the SIGTERM sent on
    # time-out (shows where it hung); both end in stderr_tail.
    faulthandler.enable(all_threads=True)
    try:
        faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)
    except (AttributeError, RuntimeError, ValueError):
        pass
    return _child(argv[0], argv[1])


if __name__ == "__main__":
    code = main()
    # Skip interpreter teardown: framework destructors and stray non-daemon threads
    # can crash or hang after the result is safely on disk.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
