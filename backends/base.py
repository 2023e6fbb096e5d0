"""The backend protocol: the narrow interface between the harness and a system under test.

Modelled on MLPerf LoadGen's SUT interface: the harness owns timing, statistics and
records; a backend only knows how to make a model runnable on its hardware.

A backend module stays import-light: heavy libraries (torch, onnxruntime, tensorflow)
are imported inside methods, so ``bench list backends`` can ask every backend for its
availability without paying for every framework.

Life of a case, inside its worker process::

    backend = BackendClass()
    ok, reason = backend.availability()
    session = backend.prepare(artifact, precision=..., batch=..., threads=..., runtime=...)
    outputs = session.run(inputs)      # host numpy outputs, really computed
    session.synchronize()              # device work finished (no-op on CPU)
    report = session.report()          # once, after the measured window: a SessionReport
    session.close()

Concurrency (the load generator's server / multi-stream / offline scenarios): a session that
sets ``max_concurrency = N > 1`` declares ``run`` thread-safe: the harness may call it from up
to N threads at once on the same prepared model (each call with its own inputs, each returning
its own outputs). The default, 1, means a plain synchronous ``run``: the harness then keeps one
query in flight and records ``concurrency: 1`` with the reason.

A generative model (an LLM artifact, ``meta["kind"] == "llm"``) is prepared with
``backend.prepare_generation(...)`` instead and yields a :class:`GenerationSession`: the
harness calls ``prefill`` once per request batch, then ``decode`` once per further token,
and reads its own clock after each call returns (a timestamp per generated token).

What a session reports back is one explicit contract, :class:`SessionReport` (timings,
estimates, memory, threads, info); docs/backends.md says where each field lands in the
case record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, ClassVar, Iterable, Mapping, Sequence

from harness.errors import BenchError

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4", "fixed")


def dist_version(names: Iterable[str]) -> str | None:
    """The installed version of the first of ``names`` (distribution names) that is installed."""
    for n in names:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return None


class UnsupportedCase(Exception):
    """Raised by ``prepare`` when the backend/runtime has no real path for a case.

    The harness records the case as ``unsupported`` with this message as reason;
    it never falls back silently to another precision.
    """


class DoesNotFit(Exception):
    """Raised by ``prepare`` when the design a case asks for does not fit the (simulated) device.

    The harness records the case as ``does_not_fit`` with this message as reason and keeps
    ``estimates`` (the full estimate: resources, percentages of the part, II, latency, ``fits:
    false`` and the reasons) in the case's ``estimates``: an over-budget design is still worth
    reading, e.g. to choose how to fold it.
    """

    def __init__(self, message: str, estimates: dict | None = None):
        super().__init__(message)
        self.estimates = estimates


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:  # pragma: no cover - trivial
        return self.ok


@dataclass
class SessionReport:
    """What a session reports back to the harness, read once after the measured window, before
    ``close()``. Each field lands in one place of the case record:

    * ``timings`` -> ``case["timings"]``: device-side measurements taken while running
      (e.g. CUDA event splits, a compile count); free-form, JSON-serialisable.
    * ``estimates`` -> ``case["estimates"]``: figures of a *simulated* device (an FPGA part),
      never mixed with measured ones. ``estimates["identity"]`` (``device``, ``precision``)
      replaces the planned device / precision of the case.
    * ``memory`` -> ``case["memory"]["device"]``: device memory (e.g. peak allocated bytes);
      host peak RSS is measured by the harness itself.
    * ``threads`` -> merged into ``case["threads"]`` beside ``requested``: the thread settings
      the runtime really uses (e.g. ``intra_op_num_threads``).
    * ``info`` -> ``case["backend_info"]``: what the runtime was set to do, verbatim.
    """

    timings: dict[str, Any] | None = None
    estimates: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    threads: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"timings": self.timings, "estimates": self.estimates, "memory": self.memory,
                "threads": dict(self.threads), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SessionReport":
        return cls(timings=d.get("timings"), estimates=d.get("estimates"), memory=d.get("memory"),
                   threads=dict(d.get("threads") or {}), info=dict(d.get("info") or {}))


def legacy_report(timings: Any, info: Mapping[str, Any] | None) -> SessionReport:
    """A :class:`SessionReport` from the older hooks, for sessions written before ``report()``:
    ``timings()["estimates"]`` are estimates, ``timings()["memory"]`` device memory, and the
    ``info`` keys naming threads the thread settings."""
    est = None
    if isinstance(timings, dict) and isinstance(timings.get("estimates"), dict):
        timings = dict(timings)
        est = timings.pop("estimates")
        timings = timings or None
    memory = timings.get("memory") if isinstance(timings, dict) and isinstance(timings.get("memory"), dict) else None
    info = dict(info or {})
    return SessionReport(timings=timings, estimates=est, memory=memory or None,
                         threads={k: v for k, v in info.items() if "thread" in k}, info=info)


class Session:
    """A prepared model on a device. Subclasses implement ``run`` (and usually ``report``)."""

    #: what the runtime was set to do, recorded verbatim in the case (threads, providers, ...)
    info: dict[str, Any]
    #: how many ``run`` calls may be in flight at once from different threads (1: not thread-safe)
    max_concurrency: int = 1

    def __init__(self) -> None:
        self.info = {}

    def run(self, inputs: Mapping[str, Any]) -> Sequence[Any]:
        """Run one query. Returns the outputs as host numpy arrays, fully computed."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Block until all device work issued so far is finished (no-op on CPU)."""

    def timings(self) -> dict[str, Any] | None:
        """Optional device-side timings gathered while running (e.g. CUDA events).

        Older hook, still honoured: :meth:`report` is the contract; its default reads this."""
        return None

    def report(self) -> SessionReport:
        """What this session reports back (see :class:`SessionReport`); called once, before
        ``close()``. The default builds it from ``timings()`` and ``info`` (:func:`legacy_report`),
        so sessions written for those hooks keep working; in-tree sessions override it."""
        return legacy_report(self.timings(), self.info)

    def energy_meter(self):
        """A meter (see :mod:`harness.measure.energy`) for the device this session runs on, or None."""
        return None

    def close(self) -> None:
        """Release the session's resources."""


class GenerationSession:
    """A causal LM prepared for generation: prefill, then decode with a KV cache.

    Every call returns host token ids (numpy int64, shape ``(batch,)``) that are fully
    computed, so a clock read right after the call is the token's arrival time. Decoding is
    greedy and runs to the requested length (an end-of-sequence token does not stop it, as
    in vLLM's ``ignore_eos`` benchmarks), so every request yields exactly the tokens asked.
    """

    info: dict[str, Any]
    #: the longest sequence (prompt + generated) the model accepts
    max_context: int = 0

    def __init__(self) -> None:
        self.info = {}

    def prefill(self, input_ids: Any) -> Any:
        """Start a new request batch: run the prompt ``(batch, prompt_len)`` through the model,
        fill the KV cache, return the first generated token of each sequence."""
        raise NotImplementedError

    def decode(self) -> Any:
        """Feed the last generated tokens, extend the cache by one, return the next tokens."""
        raise NotImplementedError

    def kv_cache_bytes(self) -> int:
        """Bytes the KV cache holds right now (read from the cache's tensors)."""
        raise NotImplementedError

    def logits(self, input_ids: Any) -> Any:
        """Teacher-forced forward pass without a cache: float32 ``(batch, len, vocab)`` log-its,
        for perplexity and scoring (accuracy goes through the session that was timed)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Drop the KV cache (the next call must be ``prefill``)."""

    def memory(self) -> dict[str, Any] | None:
        """Memory facts: weights bytes, device peak where there is a device allocator."""
        return None

    def energy_meter(self):
        return None

    def close(self) -> None:
        """Release the session's resources."""


class OptionError(BenchError, ValueError):
    """A ``--option K=V`` the backend does not take, or a value it cannot use (one line, exit 2)."""


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Option:
    """One ``--option NAME=VALUE`` a backend takes: its type (``bool``, ``int``, ``float`` or
    ``str``), the allowed values (``choices``), bounds (``minimum`` / ``maximum``, inclusive), the
    runtimes it applies to (empty: all) and a one-line help. ``parse`` turns the command line's
    text into the typed value or raises :class:`OptionError`."""

    name: str
    type: type = str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    runtimes: tuple[str, ...] = ()
    help: str = ""

    def parse(self, raw: Any) -> Any:
        text = str(raw).strip()
        what = f"option {self.name}={raw!s}"
        if self.type is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise OptionError(f"{what}: not a yes/no value (use 1/0, true/false, yes/no, on/off)")
        if self.type in (int, float):
            try:
                v = self.type(text)
            except ValueError:
                raise OptionError(f"{what}: not {'an integer' if self.type is int else 'a number'}") from None
            if v != v or v in (float("inf"), float("-inf")):
                raise OptionError(f"{what}: not a finite number")
            if self.minimum is not None and v < self.minimum:
                raise OptionError(f"{what}: below the minimum {self.minimum:g}")
            if self.maximum is not None and v > self.maximum:
                raise OptionError(f"{what}: above the maximum {self.maximum:g}")
        else:
            v = text
        if self.choices and v not in self.choices:
            raise OptionError(f"{what}: not one of {', '.join(map(str, self.choices))}")
        return v


def check_declared_options(backend_name: str, declared: Sequence[Option] | None, options: Mapping[str, Any] | None,
                           runtime: str | None = None) -> dict[str, Any]:
    """Check ``options`` against ``declared``: every name known, for this runtime, and its value of the
    declared type and range; returns the typed values. ``declared`` None: the backend declares
    nothing (an old plugin) and everything passes unchanged."""
    options = dict(options or {})
    if declared is None:
        return options
    by_name = {o.name: o for o in declared}
    out = {}
    for k, raw in options.items():
        o = by_name.get(k)
        if o is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise OptionError(f"backend '{backend_name}' has no option '{k}' (its options: {known})")
        if runtime and o.runtimes and runtime not in o.runtimes:
            raise OptionError(f"option {k} of backend '{backend_name}' is for runtime {'/'.join(o.runtimes)}, "
                              f"not {runtime}")
        out[k] = o.parse(raw)
    return out


@dataclass
class Backend:
    """Base class of a hardware target. Subclass it and register an entry point.

    ``options``: the ``--option`` settings the backend takes (a tuple of :class:`Option`); the
    runner checks a run's options against it in the parent before any case runs (unknown names,
    wrong types, out-of-range values and options of another backend are refused with one line).
    None means "not declared" (accepted unchecked, for old plugins); every backend in this
    repository declares its options.
    """

    name: str = "base"
    runtimes: tuple[str, ...] = ()
    default_runtime: str = ""
    simulated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: ``--option`` names that do NOT change what is measured (kept out of the comparability
    #: key); every other option is part of the key (harness.run.env.measured_options)
    options_not_measured: ClassVar[tuple[str, ...]] = ()
    #: the value each option has when not given: giving it explicitly keeps the same key
    option_defaults: ClassVar[dict[str, str]] = {}
    options: tuple[Option, ...] | None = None

    def check_options(self, options: Mapping[str, Any] | None, runtime: str | None = None) -> dict[str, Any]:
        """Validate ``options`` (raises :class:`OptionError`); returns them typed."""
        return check_declared_options(self.name, self.options, options, runtime)

    def availability(self) -> Availability:
        """Whether the hardware and its libraries are present; the reason when not."""
        return Availability(False, "not implemented")

    def runtime_availability(self, runtime: str) -> Availability:
        """Whether one runtime of this backend can run here."""
        return self.availability()

    def describe(self) -> dict[str, Any]:
        """The device this backend runs on (model name, memory, driver, ...)."""
        return {}

    def device_name(self) -> str:
        """A short stable device name used in the comparability key."""
        return self.describe().get("name", self.name)

    def runtime_version(self, runtime: str) -> str | None:
        return None

    def list_targets(self) -> list[dict[str, Any]]:
        """Targets this backend can model besides the device it runs on (e.g. the FPGA parts of a
        simulator), one dict each with at least ``name``; ``bench list parts`` shows them."""
        return []

    def prepare(self, artifact: "Any", *, precision: str, batch: int, threads: int,
                runtime: str, options: Mapping[str, Any] | None = None) -> Session:
        raise NotImplementedError

    def prepare_generation(self, artifact: "Any", *, precision: str, batch: int, threads: int,
                           runtime: str, options: Mapping[str, Any] | None = None) -> GenerationSession:
        """A :class:`GenerationSession` for an LLM artifact; ``UnsupportedCase`` where there is no path."""
        raise UnsupportedCase(f"backend {self.name} has no generation (LLM) path")
