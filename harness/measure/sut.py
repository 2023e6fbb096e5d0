"""A prepared session seen by the load generator: the system under test (SUT) adapter.

Place in the data path: load generator (:mod:`harness.measure.loadgen`) -> **SessionSUT** (query ->
batches of real eval samples -> ``session.run`` on N worker threads, or inline) ->
completion times back to the generator; a sample of the responses is kept for the
integrity checks (:mod:`harness.measure.scenarios`).

The adapter knows the backend seam only (``run(inputs)`` and ``max_concurrency``, see
docs/backends.md), never a scenario: the generator decides when queries arrive.

* A query's samples are cut into chunks of the session's prepared ``batch``; a short last
  chunk is padded with copies of its first sample (padded outputs dropped).
* ``concurrency`` worker threads pull chunks from one queue and call ``run`` concurrently
  (only when the session declares ``max_concurrency > 1``: a plain synchronous plugin gets
  one worker). ``inline=True`` runs the query in the caller's thread instead (closed-loop
  scenarios with one worker: no thread hand-off in the measured latency).
* Dynamic batching (``max_queue_delay_ns > 0``): a worker that takes a chunk waits up to
  that long for more queued chunks and runs them together as one batch of up to ``batch``
  samples (MLPerf server SUTs batch the same way).
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["SessionSUT"]


class _Query:
    __slots__ = ("qid", "done", "left", "t_start", "lock")

    def __init__(self, qid, done, n_chunks):
        self.qid = qid
        self.done = done
        self.left = n_chunks
        self.t_start = None
        self.lock = threading.Lock() if n_chunks > 1 else None


class SessionSUT:
    """Adapter from a session's ``run`` to the generator's ``issue``/``done`` protocol.

    ``data``: the query sample library, per-sample input arrays (first axis = sample),
    already of the model's input dtypes. ``log_every``: keep the outputs of every k-th query
    (0: none) in ``responses`` as ``(sample_indices, first_output_rows)``.
    """

    def __init__(self, run: Callable[[Mapping[str, np.ndarray]], Sequence], data: Mapping[str, np.ndarray], *,
                 batch: int = 1, concurrency: int = 1, inline: bool = False, max_queue_delay_ns: int = 0,
                 log_every: int = 0, sync: Callable[[], None] | None = None,
                 clock: Callable[[], int] = time.perf_counter_ns):
        if batch < 1 or concurrency < 1:
            raise ValueError("batch and concurrency must be >= 1")
        self._run = run
        self._sync = sync
        self.data = {k: np.ascontiguousarray(v) for k, v in data.items()}
        self.n_samples = len(next(iter(self.data.values())))
        self.batch = int(batch)
        self.concurrency = int(concurrency)
        self.inline = bool(inline)
        self.threaded = not self.inline
        self.max_queue_delay_ns = int(max_queue_delay_ns)
        self.log_every = int(log_every)
        self.responses: list[tuple[list[int], np.ndarray]] = []
        self.batches_run = 0
        self.batch_sizes: list[int] = []  # dynamic batching: samples per run (first 10,000)
        self._clock = clock
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self.errors: list[str] = []
        if self.threaded:
            for k in range(self.concurrency):
                t = threading.Thread(target=self._worker, name=f"bench-sut-{k}", daemon=True)
                t.start()
                self._workers.append(t)

    # --- inputs -------------------------------------------------------------------------
    def inputs_for(self, idx: Sequence[int]) -> dict:
        """The batch for sample indices ``idx`` (padded to ``batch``); a view when contiguous."""
        m = len(idx)
        if isinstance(idx, range) and idx.step == 1 and m == self.batch and idx.stop <= self.n_samples:
            return {k: v[idx.start:idx.stop] for k, v in self.data.items()}
        ix = np.fromiter(idx, dtype=np.int64, count=m) % self.n_samples
        if m < self.batch:
            ix = np.concatenate([ix, np.repeat(ix[:1], self.batch - m)])
        return {k: v[ix] for k, v in self.data.items()}

    def _chunks(self, samples: Sequence[int]) -> list:
        b = self.batch
        if len(samples) <= b:
            return [samples]
        return [samples[i:i + b] for i in range(0, len(samples), b)]

    def _call(self, idx) -> Sequence:
        out = self._run(self.inputs_for(idx))
        if self._sync is not None:
            self._sync()
        return out

    def _log(self, idx, out) -> None:
        self.responses.append((list(idx), np.array(out[0][:len(idx)], copy=True)))

    # --- the SUT protocol -----------------------------------------------------------------
    def issue(self, qid: int, samples: Sequence[int], done) -> None:
        chunks = self._chunks(samples)
        log = self.log_every and qid % self.log_every == 0
        if self.inline:
            clock = self._clock
            t = clock()
            for c in chunks:
                out = self._call(c)
                if log:
                    self._log(c, out)
            self.batches_run += len(chunks)
            done(qid, t, clock())
            return
        q = _Query(qid, done, len(chunks))
        put = self._q.put
        for c in chunks:
            put((q, c, log))

    def _finish(self, q: _Query, t_start: int, t_end: int) -> None:
        if q.lock is None:
            q.done(q.qid, t_start, t_end)
            return
        with q.lock:
            q.left -= 1
            if q.t_start is None or t_start < q.t_start:
                q.t_start = t_start
            last = q.left == 0
        if last:
            q.done(q.qid, q.t_start, t_end)

    def _worker(self) -> None:
        get = self._q.get
        clock = self._clock
        delay = self.max_queue_delay_ns
        b = self.batch
        while True:
            item = get()
            if item is None:
                return
            t0 = clock()
            items = [item]
            if delay > 0:
                n = len(item[1])
                deadline = t0 + delay
                while n < b:
                    left = deadline - clock()
                    try:
                        nxt = self._q.get(timeout=left / 1e9) if left > 0 else self._q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._q.put(None)  # keep the stop signal for another worker
                        break
                    if n + len(nxt[1]) > b:
                        self._q.put(nxt)  # does not fit: back to the queue (order may change)
                        break
                    items.append(nxt)
                    n += len(nxt[1])
            try:
                if len(items) == 1:
                    idx = item[1]
                else:
                    idx = list(itertools.chain.from_iterable(it[1] for it in items))
                    if len(self.batch_sizes) < 10_000:
                        self.batch_sizes.append(len(idx))
                out = self._call(idx)
                self.batches_run += 1
            except Exception as exc:  # the query still completes (timing), the error is kept
                self.errors.append(f"{type(exc).__name__}: {exc}")
                out = None
            t1 = clock()
            off = 0
            for q, c, log in items:
                if log and out is not None:
                    self._log(c, [o[off:off + len(c)] for o in out])
                off += len(c)
                self._finish(q, t0, t1)

    def close(self) -> None:
        for _ in self._workers:
            self._q.put(None)
        for t in self._workers:
            t.join(timeout=10)
        self._workers = []
