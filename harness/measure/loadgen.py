"""The load generator: bench's own clock and query schedule, independent of any backend.

Place in the data path: case driver -> **load generator** (schedule, issue, per-query times)
-> a system under test (``SUT``: anything with ``issue``) -> completion callback -> per-query
arrays -> scenario statistics (:mod:`harness.measure.scenarios`).

The generator knows nothing of hardware. A SUT is any object with::

    issue(qid: int, samples: range | list[int], done: Callable[[int, int, int], None]) -> None

which must eventually call ``done(qid, t_start_ns, t_done_ns)`` exactly once per query, from
any thread (``t_start_ns``: when work on the query began; both read from the same clock as
the generator, ``time.perf_counter_ns`` by default). ``issue`` may run the query inline and
call ``done`` before returning (a synchronous system), or hand it to worker threads.

Three drivers, MLPerf's arrival patterns:

* :func:`run_open_loop` (server): queries are issued at pre-computed times (Poisson
  arrivals, :func:`poisson_schedule`) whatever the system is doing. A query issued late
  (the generator was busy, or the system blocked ``issue``) keeps its *scheduled* time as
  its arrival, so latency = completion - scheduled: a stalled system gets long latencies,
  never fewer queries (no coordinated omission).
* :func:`run_closed_loop` (single-stream, multi-stream): the next query is issued when the
  previous one completed; latency = completion - issue.
* :func:`run_burst` (offline): one query holding every sample, issued at once.

Every driver returns a :class:`QueryLog` with per-query scheduled / issued / started /
completed times (int64 ns, relative to the run start) and the sample count per query; the
generator's own scheduling error (issued - scheduled) makes its overhead visible.
"""
from __future__ import annotations

import itertools
import math
import sys
import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

__all__ = [
    "SUT",
    "QueryLog",
    "poisson_schedule",
    "poisson_schedule_covering",
    "run_open_loop",
    "run_closed_loop",
    "run_burst",
    "NullSUT",
    "encode_times",
    "decode_times",
]

Clock = Callable[[], int]
Done = Callable[[int, int, int], None]
_NS = 1_000_000_000


class SUT(Protocol):  # pragma: no cover - a protocol
    def issue(self, qid: int, samples: Sequence[int], done: Done) -> None: ...


class NullSUT:
    """Completes every query inline, at once: measures the generator's own cost."""

    threaded = False

    def __init__(self, clock: Clock = time.perf_counter_ns):
        self._clock = clock

    def issue(self, qid, samples, done):
        t = self._clock()
        done(qid, t, t)


@dataclass
class QueryLog:
    """Per-query times of one run (int64 ns relative to ``t0_ns``; -1 = never completed)."""

    scheduled: np.ndarray
    issued: np.ndarray
    started: np.ndarray
    completed: np.ndarray
    samples: np.ndarray  # samples per query
    t0_ns: int
    mode: str  # "open" | "closed" | "burst"
    target_qps: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(len(self.issued))

    def latency_ns(self) -> np.ndarray:
        """Open loop: completion - scheduled arrival; closed loop / burst: completion - issue."""
        ref = self.scheduled if self.mode == "open" else self.issued
        return self.completed - ref

    def schedule_error_ns(self) -> np.ndarray:
        """How late each query was handed to the system (issued - scheduled), >= 0."""
        return self.issued - self.scheduled

    def duration_ns(self) -> int:
        """First scheduled arrival (or issue) to last completion."""
        if self.n == 0:
            return 0
        start = min(int(self.scheduled[0]), int(self.issued[0]))
        return int(self.completed.max()) - start

    def complete(self) -> bool:
        return bool(self.n and (self.completed >= 0).all())

    def to_record(self) -> dict:
        """Compact, JSON-safe form: delta-encoded integer lists (see :func:`encode_times`)."""
        return {"mode": self.mode, "n": self.n, "target_qps": self.target_qps,
                "scheduled": encode_times(self.scheduled), "issued": encode_times(self.issued - self.scheduled),
                "started": encode_times(self.started - self.issued),
                "completed": encode_times(self.completed - self.issued),
                "samples": self.samples.astype(int).tolist() if len(set(self.samples.tolist())) > 1
                else [int(self.samples[0])] if self.n else [],
                "encoding": "scheduled: delta from previous (first from run start); issued: minus scheduled; "
                            "started, completed: minus issued; all int ns, each list delta-encoded"}


def encode_times(a: np.ndarray) -> list[int]:
    """Delta-encode an int64 array: ``[a0, a1 - a0, a2 - a1, ...]`` (small numbers in JSON)."""
    a = np.asarray(a, dtype=np.int64)
    if a.size == 0:
        return []
    return np.diff(a, prepend=np.int64(0)).tolist()


def decode_times(d: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`encode_times`."""
    return np.cumsum(np.asarray(d, dtype=np.int64))


def _poisson_rng(qps: float, rng: np.random.Generator | int | None) -> np.random.Generator:
    """Check the rate (> 0, finite) and return ``rng`` as a Generator (an int or None seeds one)."""
    if not qps > 0 or not math.isfinite(qps):
        raise ValueError(f"target QPS must be > 0, got {qps!r}")
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def poisson_schedule(qps: float, n: int, rng: np.random.Generator | int | None = 0,
                     start_ns: int = 0) -> np.ndarray:
    """Arrival times (int64 ns) of ``n`` queries of a Poisson process of rate ``qps``.

    Gaps G_i ~ Exponential(mean 1 / qps) i.i.d.; arrival_i = start_ns + sum_{j<=i} G_j, so the
    count of arrivals in any window of length T is Poisson(qps T) (MLPerf Server's arrival
    process). Times are rounded to whole nanoseconds.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = _poisson_rng(qps, rng)
    gaps = rng.exponential(_NS / qps, size=int(n))
    return (start_ns + np.round(np.cumsum(gaps))).astype(np.int64)


def poisson_schedule_covering(qps: float, min_span_ns: int, min_n: int,
                               rng: np.random.Generator | int | None = 0, max_n: int | None = None) -> np.ndarray:
    """A Poisson schedule (as :func:`poisson_schedule`) that is long enough: arrivals are drawn
    until the span from the first to the last arrival reaches ``min_span_ns`` **and** there are
    at least ``min_n`` of them (MLPerf LoadGen generates its Server schedule with the same two
    conditions: the minimum duration and the minimum query count), then cut to ``max_n``.

    A fixed count of ceil(qps x T) arrivals spans less than T about half of the time (the sum of
    n exponential gaps of mean T/n is below T with probability ~1/2), so a run sized that way
    fails a minimum-duration rule by chance, at some loads and not others, whatever the system.
    The same ``rng`` seed gives the same leading arrivals as :func:`poisson_schedule`.
    """
    rng = _poisson_rng(qps, rng)
    mean = _NS / qps
    gaps = rng.exponential(mean, size=max(int(min_n), math.ceil(min_span_ns / mean * 1.05) + 32))
    t = np.cumsum(gaps)
    while t[-1] - t[0] < min_span_ns:  # (the first draw already holds min_n arrivals)
        more = rng.exponential(mean, size=max(64, len(t) // 4))
        t = np.concatenate([t, t[-1] + np.cumsum(more)])
    k = int(np.searchsorted(t - t[0], min_span_ns, side="left")) + 1  # first arrival at or past the span
    n = max(int(min_n), min(k, len(t)))
    if max_n is not None:
        n = max(1, min(n, int(max_n)))
    return np.round(t[:n]).astype(np.int64)


class _Recorder:
    """Completion bookkeeping shared by the drivers; ``done`` is safe from any thread."""

    def __init__(self, n: int):
        self.started = array("q", bytes(8 * n))
        self.completed = array("q", [-1]) * n
        self._count = itertools.count(1)
        self._n = n
        self.all_done = threading.Event()
        self.last_done = threading.Event()  # closed loop: set by each completion
        if n == 0:
            self.all_done.set()

    def grow(self, n: int) -> None:
        """Room for ``n`` more queries (closed loop only: nothing is in flight while it grows)."""
        self.started.extend(array("q", bytes(8 * n)))
        self.completed.extend(array("q", [-1]) * n)
        self._n += n

    def done(self, qid: int, t_start: int, t_done: int) -> None:
        """Open loop / burst: record; the last completion sets ``all_done``."""
        self.started[qid] = t_start
        self.completed[qid] = t_done
        if next(self._count) >= self._n:  # itertools.count.__next__ is atomic under the GIL
            self.all_done.set()

    def done_closed(self, qid: int, t_start: int, t_done: int) -> None:
        """Closed loop: record and wake the generator waiting for this query."""
        self.started[qid] = t_start
        self.completed[qid] = t_done
        self.last_done.set()


def _log(mode, sched, issued, rec: _Recorder, samples, t0, target_qps=None, **extra) -> QueryLog:
    s = np.asarray(sched, dtype=np.int64) - t0
    i = np.frombuffer(issued, dtype=np.int64).copy() - t0 if len(issued) else np.zeros(0, np.int64)
    n = len(i)
    st = np.frombuffer(rec.started, dtype=np.int64)[:n].copy() - t0 if n else np.zeros(0, np.int64)
    c = np.frombuffer(rec.completed, dtype=np.int64)[:n].copy()
    c = np.where(c >= 0, c - t0, -1)
    return QueryLog(scheduled=s[:n], issued=i, started=st, completed=c,
                    samples=np.asarray(samples, dtype=np.int64)[:n], t0_ns=int(t0), mode=mode,
                    target_qps=target_qps, extra=extra)


def _timer_slack(ns: int | None) -> int | None:
    """Set the calling thread's timer slack (Linux ``prctl(PR_SET_TIMERSLACK)``); return the old one.

    A sleeping thread is woken up to ``slack`` after its deadline (default 50 µs): the kernel
    groups wake-ups. The generator's sleeps ask for 1 ns so a sleep-based wait lands within the
    scheduler's wake-up latency (~10 µs on an idle core) instead. ``None`` (or a platform without
    prctl) changes nothing and returns None.
    """
    if ns is None or not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        old = int(libc.prctl(30, 0, 0, 0, 0))  # PR_GET_TIMERSLACK
        if old <= 0 or libc.prctl(29, max(1, int(ns)), 0, 0, 0) != 0:  # PR_SET_TIMERSLACK
            return None
        return old
    except (OSError, AttributeError):
        return None


def run_open_loop(sut, arrivals_ns: np.ndarray, sample_of: Callable[[int], Sequence[int]], *,
                  clock: Clock = time.perf_counter_ns, lead_ns: int = 1_000_000,
                  spin_ns: int | None = None, yield_gil: bool | None = None, drain_timeout_s: float = 60.0,
                  sleep: Callable[[float], None] = time.sleep, switch_s: float = 5e-5) -> QueryLog:
    """Issue query ``i`` at ``t0 + lead_ns + arrivals_ns[i]``, never waiting for completions.

    Waiting for an arrival: sleep until ``spin_ns`` before it (the GIL and the CPU are free
    meanwhile; the thread's timer slack is 1 ns for the run, see :func:`_timer_slack`), then spin
    on the clock. ``spin_ns`` defaults to 200 µs for a SUT that runs queries inline and to **0**
    for a ``threaded`` SUT (worker threads in this process): a generator spinning in Python holds
    the GIL, and every time a worker needs it (to take a query, after ``run`` returns) it waits
    for the spinner to be asked to drop it, and the spin takes a core the system's own threads
    could use. On a 2-core machine with a 0.13 ms model (one worker) the spinning generator's peak
    was 4,114 QPS, a sleeping one's 5,902, MLPerf LoadGen's on the same SUT 4,650-5,008; a
    sleeping generator costs instead a wake-up latency, which the query log records as
    scheduling error (issued - scheduled). With a ``threaded`` SUT the interpreter's switch
    interval is also lowered to ``switch_s`` for the run (CPython's default is 5 ms), so a worker
    never waits long for a GIL held by another Python thread. ``yield_gil=True`` calls
    ``time.sleep(0)`` in the spin instead of a pure spin. A query whose time has passed is issued
    at once and keeps its scheduled time. After the last issue, waits up to ``drain_timeout_s``
    for completions (never-completed queries keep completed = -1 and the caller marks the run
    invalid). ``clock`` and ``sleep`` are injectable (tests drive the generator in virtual time).
    """
    arrivals = np.asarray(arrivals_ns, dtype=np.int64)
    n = len(arrivals)
    threaded = bool(getattr(sut, "threaded", False))
    yield_gil = bool(yield_gil)
    if spin_ns is None:
        spin_ns = 0 if threaded else 200_000
    rec = _Recorder(n)
    done = rec.done
    issue = sut.issue
    issued = array("q", bytes(8 * n))
    samples = array("q", bytes(8 * n))
    old_switch = sys.getswitchinterval()
    if threaded:
        sys.setswitchinterval(switch_s)  # a worker waits at most this long for the GIL
    old_slack = _timer_slack(1) if sleep is time.sleep else None
    try:
        t0 = clock()
        sched = (arrivals + (t0 + lead_ns)).tolist()
        for i in range(n):
            t = sched[i]
            now = clock()
            if now < t:
                if t - now > spin_ns:
                    sleep((t - now - spin_ns) / _NS)
                if yield_gil:
                    while (now := clock()) < t:
                        sleep(0)
                else:
                    while (now := clock()) < t:
                        pass
            s = sample_of(i)
            samples[i] = len(s)
            issued[i] = now
            issue(i, s, done)
        rec.all_done.wait(drain_timeout_s)
    finally:
        sys.setswitchinterval(old_switch)
        _timer_slack(old_slack)
    return _log("open", sched, issued, rec, samples, t0, target_qps=None, wait="spin" if spin_ns > 0 else "sleep")


def run_closed_loop(sut, sample_of: Callable[[int], Sequence[int]], *, min_queries: int, min_duration_s: float,
                    max_duration_s: float, max_queries: int = 10_000_000, clock: Clock = time.perf_counter_ns,
                    query_timeout_s: float = 60.0) -> QueryLog:
    """Issue a query, wait for its completion, issue the next (single-stream / multi-stream).

    Stops at the first completion where n >= ``min_queries`` and elapsed >= ``min_duration_s``,
    or elapsed >= ``max_duration_s``, or n = ``max_queries``. Scheduled = issued (no schedule).
    """
    cap = int(max_queries)
    room = min(cap, 1024)
    rec = _Recorder(room)
    done = rec.done_closed
    ev = rec.last_done
    issue = sut.issue
    issued = array("q")
    samples = array("q")
    min_ns, max_ns = int(min_duration_s * _NS), int(max_duration_s * _NS)
    t0 = clock()
    i = 0
    while i < cap:
        if i == room:
            extra = min(room, cap - room)
            rec.grow(extra)
            room += extra
        s = sample_of(i)
        samples.append(len(s))
        ev.clear()
        t = clock()
        issued.append(t)
        issue(i, s, done)
        if rec.completed[i] < 0 and not ev.wait(query_timeout_s):
            i += 1
            break
        while rec.completed[i] < 0:  # event set by an earlier straggler: wait for ours
            ev.clear()
            if rec.completed[i] >= 0 or not ev.wait(query_timeout_s):
                break
        i += 1
        # elapsed as QueryLog.duration_ns() counts it (first issue to last completion), so a run that
        # stops on min_duration_s is never judged too short by the same log
        el = rec.completed[i - 1] - issued[0]
        if (i >= min_queries and el >= min_ns) or el >= max_ns:
            break
    return _log("closed", issued, issued, rec, samples, t0)


def run_burst(sut, samples: Sequence[int], *, clock: Clock = time.perf_counter_ns, timeout_s: float = 600.0) -> QueryLog:
    """Offline: one query holding every sample of ``samples``, issued at once."""
    rec = _Recorder(1)
    t0 = clock()
    issued = array("q", [clock()])
    sut.issue(0, samples, rec.done)
    rec.all_done.wait(timeout_s)
    return _log("burst", issued, issued, rec, [len(samples)], t0)
