"""The parent side of ``bench run``: plan, artifacts, worker jobs through an executor, the records.

Nothing heavy runs in this process's timed paths: every case is measured in its own
spawned worker (``harness.run.worker``), so a crash, a hang or an out-of-memory kill costs
that case alone. Finished cases go to a journal at once; the record is written at the end
(also after Ctrl-C, with the cases not run marked ``skipped``).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from harness.errors import BenchError, MissingDependency

DEFAULT_CASE_TIMEOUT_S = 600.0


@dataclass
class RunOptions:
    suite: str | None  # None: only the user's own models (user_models), with default settings
    backend: str
    runtime: str | None = None
    scenarios: list[str] | None = None
    batches: list[int] | None = None
    models: list[str] | None = None
    threads: int | None = None
    out_dir: str = "results"
    tags: dict = field(default_factory=dict)
    measurement: dict = field(default_factory=dict)  # CLI overrides of MeasureSettings fields
    case_timeout_s: float | None = None
    backend_options: dict = field(default_factory=dict)
    rebuild: bool = False
    fresh_accuracy: bool = False  # run every accuracy pass in full (no verified reuse: harness.run.accuracy_store)
    argv: list[str] = field(default_factory=list)
    user_models: list[str] = field(default_factory=list)  # *.onnx files / package.module:factory
    input_shapes: list[str] = field(default_factory=list)  # NAME=1x3x224x224, for user_models
    #: load-generator scenarios: target_qps, latency_bound_ms, samples_per_query, concurrency,
    #: max_queue_delay_us, driver ("bench" | "loadgen"); None values = defaults
    scenario_options: dict = field(default_factory=dict)
    repeat: int | None = None  # worker processes per case (None: the profile's, 1 for quick)
    profile: str | None = None  # quick | nightly | rigorous (harness.repeats.PROFILES)
    pin: list[int] | None = None  # CPUs every worker is pinned to
    system_check: bool = True  # take harness.run.syscheck's snapshot before the first case
    executor: str = "local"  # "local" | "ray" (harness.run.executors)
    address: str | None = None  # Ray head HOST:PORT (None: RAY_ADDRESS or the local cluster)
    node_labels: dict = field(default_factory=dict)  # node labels every case needs (Ray)
    resources: dict = field(default_factory=dict)  # extra custom resources every case needs (Ray)
    replicas: list[int] | None = None  # data-parallel scaling sweep of offline cases
    resume_journal: str | None = None  # bench run --resume: the journal of the run to finish
    build_jobs: int | None = None  # processes that build missing artifacts (None: harness.run.builds.default_jobs)


def default_threads() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except Exception:
        return os.cpu_count() or 1


def resolve_backend(name: str, runtime: str | None, *, check_here: bool = True):
    """Instantiate the backend and check it (and the runtime) can run here, or raise one line.

    ``check_here=False`` (a remote executor): the cases run on other machines, so only the names
    are checked here; a node that lacks the backend fails its cases with the worker's reason.
    """
    from harness.plan.plugins import get_backend

    backend = get_backend(name)
    runtime = runtime or backend.default_runtime
    if not check_here:
        if runtime not in backend.runtimes:
            raise BenchError(f"unknown runtime '{runtime}' for backend '{name}' "
                             f"(choose from: {', '.join(backend.runtimes)})")
        return backend, runtime
    av = backend.availability()
    if not av.ok:
        raise BenchError(f"backend '{name}' is not available here: {av.reason}")
    runtime = runtime or backend.default_runtime
    if runtime not in backend.runtimes:
        raise BenchError(f"unknown runtime '{runtime}' for backend '{name}' (choose from: {', '.join(backend.runtimes)})")
    rav = backend.runtime_availability(runtime)
    if not rav.ok:
        raise BenchError(f"runtime '{runtime}' of backend '{name}' is not available here: {rav.reason}")
    return backend, runtime


def check_options(backend, runtime: str, options: dict) -> None:
    """The run's ``--option`` settings against what the backend declares (names, types, bounds,
    runtime): an unknown option, one of another backend (e.g. ``part`` on cpu) or a bad value is one
    line and exit 2, before any case runs."""
    from backends.base import OptionError

    try:
        try:
            backend.check_options(options, runtime)
        except TypeError:  # an old plugin's check_options(options)
            backend.check_options(options)
    except OptionError as exc:
        raise BenchError(str(exc)) from None
    except ValueError as exc:  # e.g. fpga's FPGAOptionError
        raise BenchError(str(exc)) from None


def build_settings(suite_measurement: dict, overrides: dict):
    from harness.measure.timing import MeasureSettings

    values = {**suite_measurement, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        s = MeasureSettings(**values)
        s.validate()
    except (TypeError, ValueError) as exc:
        raise BenchError(f"bad measurement settings: {exc}") from None
    return s


def run(opts: RunOptions, *, on_event: Callable[[str, dict], None] | None = None) -> tuple[dict, Path]:
    """Run a suite; returns ``(record, path)``. ``on_event(kind, data)`` drives the UI.

    The planned worker runs (one per case and repeat, round-robin: every case's repeat r before any
    case's repeat r + 1) are handed to an executor (``harness.run.executors``) one round at a time:
    locally one after another, or as Ray tasks on the nodes that have what each case needs (the
    repeats of a case after the first run on the node of its first). Each finished case goes to its
    journal at once. Under Ray every node that ran cases gets its own record (its ``environment`` is
    that node's fingerprint); the returned record is then the driver's view of the whole run (all
    cases, each with its ``machine_id``/``node``) and ``path`` names the files.
    """
    from harness.measure.timing import timer_overhead
    from harness.plan import suite as suitemod
    from harness.run import repeats as repeatsmod
    from harness.run.executors import get_executor

    emit = on_event or (lambda kind, data: None)
    if opts.replicas and "offline" not in (opts.scenarios or ["offline"]):
        raise BenchError("--replicas measures data-parallel scaling of the offline scenario: add offline to --scenario")
    if opts.pin and opts.executor != "local":
        raise BenchError("--pin names CPUs of this machine: it is for --executor local")
    suite = suitemod.load(opts.suite) if opts.suite else suitemod.default_suite()
    names = [b.strip() for b in opts.backend.split(",") if b.strip()]
    if not names or len(set(names)) != len(names):
        raise BenchError(f"--backend {opts.backend}: give one backend, or a comma list without repeats")
    if len(names) > 1 and opts.runtime:
        raise BenchError("--runtime applies to one backend; with several backends each uses its default runtime")
    remote = opts.executor != "local"
    backends = [resolve_backend(n, opts.runtime, check_here=not remote) for n in names]
    for backend, rt in backends:
        check_options(backend, rt, opts.backend_options)
    _check_scenario_options(opts.scenario_options)
    timeout = opts.case_timeout_s or suite.case_timeout_s or DEFAULT_CASE_TIMEOUT_S
    prof = repeatsmod.profile(opts.profile)
    k = int(opts.repeat or prof["repeat"])
    if k < 1:
        raise BenchError(f"--repeat must be >= 1, got {k}")
    settings = build_settings({**suite.measurement, **prof["measurement"]}, opts.measurement)
    needs_of = {b.name: backend_needs(b, opts) for b, _ in backends}
    # the executor joins its cluster and checks labels before anything is built or run
    executor = get_executor(opts.executor, address=opts.address)
    try:
        executor.check(needs_of.values())
        return _run(opts, suite, backends, needs_of, settings, timeout, k, executor, emit, timer_overhead,
                    suitemod, repeatsmod)
    finally:
        executor.close()


def _run(opts, suite, backends, needs_of, settings, timeout, k, executor, emit, timer_overhead, suitemod,
         repeatsmod):
    from dataclasses import replace

    from harness.plan import models as model_registry
    from harness.run import env as envmod
    from harness.run.executors import Job
    from harness.store import records

    threads = opts.threads or executor.default_threads(next(iter(needs_of.values()))) or default_threads()
    # the user's own models: validated and built up front, so a bad file is one line and exit 2
    from harness.run.worker import run_in_worker

    user = model_registry.user_models(opts.user_models, opts.input_shapes, rebuild=opts.rebuild, emit=emit,
                                      isolate=run_in_worker) if opts.user_models else []
    cases = []
    for backend, runtime in backends:
        cases += suitemod.plan(suite, backend=backend.name, runtime=runtime, scenarios=opts.scenarios,
                               batches=opts.batches, models=opts.models, user_models=user,
                               multistream_samples=int(opts.scenario_options.get("samples_per_query") or 8))
    if not cases:
        raise BenchError(f"suite {suite.name} has no cases for the given filters")
    _check_data({pc.model for pc in cases})
    user_art = {u.name: u.artifact for u in user}
    cases = _generation_cases(cases, backend, opts.runtime, suite,
                              lambda m: user_art[m] if m in user_art else _artifact(m, "fp32", opts.rebuild, emit),
                              {u.name for u in user if u.kind == "llm"})
    out_dir = records.check_writable_dir(opts.out_dir)
    by_name = {b.name: (b, rt) for b, rt in backends}

    started = records.utcnow()
    prior: dict[str, dict] = {}  # --resume: case_id -> the case the journal already holds
    prior_repeats: dict[str, dict[int, dict]] = {}  # --resume: repeats of unfinished cases, kept
    previous = None
    if opts.resume_journal:
        if opts.executor != "local":
            raise BenchError("--resume finishes local runs (the journal of a Ray run lives on its nodes)")
        previous = records.read_journal(opts.resume_journal)
        prior = {c["case_id"]: c for c in previous["cases"]}
        prior_repeats = records.journal_repeats(opts.resume_journal)
        unknown = sorted(set(prior) - {pc.case_id for pc in cases})
        if unknown:
            raise BenchError(f"cannot resume from {opts.resume_journal}: its case {unknown[0]} is not in the "
                             "plan made from the run's command (was the suite changed?)")
    fp = envmod.fingerprint() if previous is None else previous["environment"]
    facts = {b.name: {"device": b.device_name(), "runtime_version": b.runtime_version(rt),
                      "key_options": _key_options(b, opts.backend_options)} for b, rt in backends}
    first, first_rt = backends[0]

    def backend_block(b, rt):
        return {"name": b.name, "runtime": rt, "runtime_version": facts[b.name]["runtime_version"],
                "device": b.describe(), "simulated": bool(getattr(b, "simulated", False))}

    header = {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": records.new_run_id(started),
        "started_at": records.isoformat(started),
        "bench": fp.get("bench") or {"version": _version(), "git_sha": None},
        "command": ["bench", *opts.argv],
        "suite": {"name": suite.name, "path": str(suite.path) if suite.path else None, "sha256": suite.sha256},
        "settings": {**asdict(settings), "threads": threads, "case_timeout_s": float(timeout), "repeat": k,
                     "profile": opts.profile or "quick", "pin": list(opts.pin) if opts.pin else None,
                     "schedule": "round-robin" if k > 1 else "sequential"},
        "tags": dict(opts.tags),
        "environment": fp,
        "timer": timer_overhead(),
        "backend": backend_block(first, first_rt),
    }
    if len(backends) > 1:
        header["backends"] = [backend_block(b, rt) for b, rt in backends]
    if opts.system_check:
        from harness.run import syscheck

        header["system_check"] = syscheck.summary(syscheck.snapshot())
        if header["system_check"]["warnings"]:
            emit("system_warnings", {"warnings": header["system_check"]["warnings"]})
    if executor.name != "local":
        header["executor"] = {**executor.describe(), "fleet_run_id": header["run_id"]}
    if previous is not None:  # the run's own header, with when it was taken up again
        header = {k_: v for k_, v in previous.items() if k_ not in ("cases", "interrupted", "finished_at")}
        header["resumed"] = list(header.get("resumed") or []) + [records.isoformat(started)]
    out = _Outputs(header, out_dir, records, local=executor.name == "local",
                   journal=records.Journal.reopen(opts.resume_journal) if previous is not None else None,
                   prior=[prior[pc.case_id] for pc in cases if pc.case_id in prior])

    def identity(pc):
        f = facts[pc.backend]
        return _identity(pc, device=f["device"], runtime_version=f["runtime_version"], threads=threads,
                         simulated=bool(getattr(by_name[pc.backend][0], "simulated", False)),
                         options=f["key_options"])

    finished: dict[int, dict] = {}
    partial: dict[int, list[dict]] = {}
    first_run: dict[int, object] = {}  # case index -> JobResult of its first worker run
    arts: dict[int, object] = {}
    scale_later: list[int] = []
    interrupted: str | None = None  # what stopped the run: Ctrl-C, SIGTERM, a journal write error
    journal_error: BenchError | None = None
    emit("start", {"n_cases": len(cases), "run_id": header["run_id"], "suite": suite.name, "repeat": k,
                   "case_budget_s": settings.warmup_max_time_s + settings.max_time_s, "resumed": len(prior)})
    artifacts: dict[tuple[str, str], object] = {(u.name, "fp32"): u.artifact for u in user}

    def finish(i: int, case: dict, jr) -> None:
        finished[i] = case  # first: a Ctrl-C from here on cannot lose it (see the sweep below)
        if opts.replicas and case["scenario"] == "offline" and case["status"] in ("ok", "invalid"):
            scale_later.append(i)  # journaled once its scaling sweep is in
        else:
            out.append(case, jr)
        emit("case_done", {"index": i, "case": case})

    for i, pc in enumerate(cases):  # --resume: what the journal holds is kept as it was
        if pc.case_id in prior:
            finished[i] = prior[pc.case_id]
            emit("case_done", {"index": i, "case": prior[pc.case_id], "resumed": True})

    def take_repeat(i: int, r: int, result: dict) -> None:
        """One finished repeat of case i (measured now, or kept from a killed run's journal)."""
        partial.setdefault(i, []).append(result)
        measured = result.get("status") in ("ok", "invalid") and result.get("samples_ns")
        if r == k - 1 or (r == 0 and not measured):  # done, or nothing to repeat (failed, unsupported)
            finish(i, _combine(_placed(identity(cases[i]), first_run.get(i)), arts[i], partial.pop(i), cases[i],
                               settings), first_run.get(i))

    def job(i: int, r: int, n_jobs: int) -> Job:
        pc = cases[i]
        b = by_name[pc.backend][0]
        payload, env = _payload(pc, arts[i], b, settings, threads, suite, opts, accuracy=r == 0)
        payload["timeout_s"] = float(timeout)  # the worker sizes slow models' windows within it
        needs = _with_cpus(needs_of[b.name], threads)
        if r > 0 and first_run.get(i) and first_run[i].node:  # a case's repeats stay on the machine of its first run
            needs = replace(needs, labels={**needs.labels, "ray.io/node-id": first_run[i].node["node_id"]})
        return Job(index=n_jobs, case_id=pc.case_id if k == 1 else f"{pc.case_id} [{r + 1}/{k}]",
                   target="harness.run.case:run_case", payload=payload, env=env, timeout_s=timeout, needs=needs,
                   artifact=arts[i], backend_ref=payload["backend_ref"], cpus=opts.pin)

    try:
        # artifacts first (built on this machine; shipped to nodes by Ray): the missing ones in
        # parallel processes, then every one loaded (verified) or built here, in case order
        from harness.run import builds

        prebuilt = builds.prebuild([(pc.model, pc.variant) for i, pc in enumerate(cases)
                                    if i not in finished and (pc.model, pc.variant) not in artifacts],
                                   jobs=builds.default_jobs() if opts.build_jobs is None else opts.build_jobs,
                                   rebuild=opts.rebuild, emit=emit)
        for i, pc in enumerate(cases):
            if i in finished:  # --resume: already measured
                continue
            art = artifacts.get((pc.model, pc.variant))
            if art is None:
                art = _artifact(pc.model, pc.variant, opts.rebuild and (pc.model, pc.variant) not in prebuilt, emit)
                artifacts[(pc.model, pc.variant)] = art
            arts[i] = art
            if isinstance(art, MissingDependency):
                finish(i, _finish(identity(pc), None, {"status": "skipped", "reason": str(art)}), None)
            elif isinstance(art, BenchError):
                finish(i, _finish(identity(pc), None, {"status": "failed",
                                                       "reason": f"artifact build failed: {art}"}), None)
        # the planned worker runs, one round per repeat: round-robin over the cases
        plan = repeatsmod.schedule(len(cases), k)
        for r in range(k):
            kept = [i for i, rr in plan if rr == r and i not in finished and r in prior_repeats.get(cases[i].case_id, {})]
            for i in kept:  # --resume: this repeat was measured before the kill
                take_repeat(i, r, prior_repeats[cases[i].case_id][r])
            todo = [i for i, rr in plan if rr == r and i not in finished and i not in kept]
            jobs = [job(i, r, n) for n, i in enumerate(todo)]
            for jr in executor.run(jobs, on_start=lambda j: emit("case_start", {"index": todo[j.index],
                                                                               "case_id": j.case_id, "repeat": r})):
                i = todo[jr.job.index]
                pc = cases[i]
                if r == 0:
                    first_run[i] = jr
                base = _placed(identity(pc), jr)
                result = _result_from(jr, threads, opts)
                if k == 1:
                    if result.get("status") != "failed":
                        _carry_estimates(result)
                    finish(i, _finish(base, arts[i], result), jr)
                    continue
                out.append_repeat(i, r, result, jr, pc.case_id)  # measured data is on disk at once
                take_repeat(i, r, result)
        for i in list(scale_later):
            emit("scaling", {"case_id": finished[i]["case_id"], "replicas": opts.replicas})
            j = job(i, 0, 0)
            finished[i]["scaling"] = measure_scaling(executor, j, opts.replicas, opts.threads, settings)
            out.append(finished[i], first_run.get(i))
    except _JournalFailed as exc:  # full disk: stop measuring, keep what we have
        interrupted, journal_error = "journal write failed", exc.args[0]
    except KeyboardInterrupt as exc:
        interrupted = getattr(exc, "signal_name", None) or "Ctrl-C"
    old_term = _hold_sigterm()  # the record is written in one go
    try:
        record, path = _sweep_and_write(cases, finished, partial, arts, first_run, identity, k, settings, out,
                                        interrupted, records, out_dir, header)
    finally:
        _hold_sigterm(old_term)
    if journal_error is not None:
        raise BenchError(f"{journal_error}; run stopped, record written to {path} with the remaining cases "
                         "marked skipped")
    if interrupted:
        raise RunInterrupted(record, path, interrupted)
    return record, path


def _sweep_and_write(cases, finished, partial, arts, first_run, identity, k, settings, out, interrupted, records,
                     out_dir, header):
    """Every planned case into the record (finished, partly repeated, or skipped with why), then write."""
    done: list[dict] = []
    for i, pc in enumerate(cases):
        if i in finished:
            case = finished[i]
        elif partial.get(i):  # interrupted between repeats: keep what was measured
            case = _combine(_placed(identity(pc), first_run.get(i)), arts[i], partial[i], pc, settings)
            note = f"interrupted after {len(partial[i])} of {k} repeats"
            if isinstance(case.get("validity"), dict):
                case["validity"].setdefault("warnings", []).append(note)
        else:
            case = _finish(identity(pc), None, {"status": "skipped",
                                                "reason": f"interrupted ({interrupted}) before this case ran"})
        try:
            out.append(case, first_run.get(i))  # does nothing for a case already in its record
        except _JournalFailed:
            pass  # the record below still gets it
        done.append(case)
    try:
        return out.write(records.isoformat(records.utcnow()), bool(interrupted), done)
    except BenchError as exc:
        journals = ", ".join(str(g["journal"].path) for g in out.groups.values())
        raise BenchError(f"{exc}; the measured cases are kept in the journal {journals} "
                         f"(bench run --resume {header['run_id']} --out {out_dir})") from None


def _check_data(models: set[str]) -> None:
    """Every weights package and data set the planned zoo models need is here, or one line naming the
    package and its install command (exit 2) before any case runs -- never a run of skipped cases."""
    from harness.plan.models import require_models

    require_models(models)


class _Outputs:
    """Journals and records of one run: one of each locally; under Ray one per node that ran cases
    (``environment`` = that node's fingerprint) plus one on the driver for cases that ran nowhere
    (skipped: no matching node, interrupted; failed: node lost and no retry)."""

    def __init__(self, header: dict, out_dir, records, *, local: bool, journal=None, prior=()):
        self.header, self.out_dir, self.records, self.local = header, out_dir, records, local
        self.groups: dict = {}  # node id (None: the driver) -> {"header", "journal", "cases"}
        if local and journal is not None:  # --resume: append to the killed run's journal, its cases kept
            self.groups[None] = {"header": dict(header), "journal": journal, "cases": list(prior)}
        elif local:
            self._group(None, None, None)

    def _group(self, node_id, machine, node):
        g = self.groups.get(node_id)
        if g is None:
            h = dict(self.header)
            if not self.local:
                h["run_id"] = self.records.new_run_id()
                if machine:
                    h["environment"] = machine
                h["executor"] = {**self.header["executor"], "node": node, "role": "node" if node else "driver"}
            g = self.groups[node_id] = {"header": h, "journal": self.records.Journal(self.out_dir, h), "cases": []}
        return g

    def _of(self, jr):
        node = getattr(jr, "node", None)
        return self._group(node["node_id"] if node else None, getattr(jr, "machine", None), node)

    def append(self, case: dict, jr) -> None:
        """Into its record first, then its journal; a second call for the same case does nothing."""
        if any(c is case for g in self.groups.values() for c in g["cases"]):
            return
        g = self._of(jr)
        g["cases"].append(case)
        try:
            g["journal"].append(case)
        except self.records.BenchError as exc:  # full disk: the case is in the record, the run stops
            raise _JournalFailed(exc) from None

    def append_repeat(self, index: int, repeat: int, result: dict, jr, case_id: str | None = None) -> None:
        try:
            self._of(jr)["journal"].append_repeat(index, repeat, result, case_id)
        except self.records.BenchError as exc:
            raise _JournalFailed(exc) from None

    def write(self, finished_at: str, interrupted: bool, all_cases: list):
        paths = []
        written = {}
        order = {id(c): n for n, c in enumerate(all_cases)}
        for g in self.groups.values():
            rec = dict(g["header"])
            rec.update(finished_at=finished_at, interrupted=interrupted,
                       cases=sorted(g["cases"], key=lambda c: order.get(id(c), 0)))
            p = self.records.write_record(rec, self.out_dir)
            g["journal"].remove()
            paths.append(p)
            written[rec["run_id"]] = str(p)
        if self.local:
            rec = dict(self.groups[None]["header"])
            rec.update(finished_at=finished_at, interrupted=interrupted, cases=all_cases)
            return rec, paths[0]
        view = dict(self.header)
        view["executor"] = {**self.header["executor"], "records": written}
        view.update(finished_at=finished_at, interrupted=interrupted, cases=all_cases)
        return view, ", ".join(str(p) for p in paths)


def _generation_cases(cases: list, backend, runtime_asked: str | None, suite, base_artifact,
                      user_llms: set = frozenset()) -> list:
    """LLM (generative) cases: the backend's generation runtime unless one was asked for, and the
    suite's lengths checked against the model's context window (one line, exit 2)."""
    from dataclasses import replace

    from harness.plan.models import llm_variants

    llm = {c.model for c in cases if llm_variants(c.model) is not None} | set(user_llms)
    if not llm:
        return cases
    from harness.run.llm_case import check_lengths

    lengths = (suite.data.get("generation") or {}).get("lengths")
    check_lengths(lengths)
    for m in sorted(llm):
        art = base_artifact(m)  # built once here (cached); a missing package is reported per case later
        if not isinstance(art, BenchError):
            check_lengths(lengths, art.meta.get("model_facts", {}).get("max_context"))
    gen_rt = getattr(backend, "generation_runtime", None)
    if runtime_asked is None and gen_rt:
        cases = [replace(c, runtime=gen_rt) if c.model in llm else c for c in cases]
    return cases


def _hold_sigterm(restore=None):
    """Ignore SIGTERM while the record is written (or put ``restore`` back); no-op off the main thread."""
    import signal

    try:
        return signal.signal(signal.SIGTERM, signal.SIG_IGN if restore is None else restore)
    except ValueError:
        return None


def _say_why_accuracy_failed(case: dict) -> None:
    """When the accuracy record carries a reason (non-finite outputs), the verdict's generic
    ``accuracy_gate_failed`` reason says it, and so does the case's reason."""
    acc = case.get("accuracy")
    v = case.get("validity")
    if not (isinstance(acc, dict) and acc.get("reason") and isinstance(v, dict)):
        return
    why = f"accuracy_gate_failed: {acc['reason']}"
    v["reasons"] = [why if str(r).startswith("accuracy_gate_failed") else r for r in v.get("reasons") or []]
    if case.get("status") == "invalid" and v["reasons"]:
        case["reason"] = "; ".join(v["reasons"])


class _JournalFailed(Exception):
    """The journal could not take a finished case (full disk): the run stops, the record is written."""


class RunInterrupted(KeyboardInterrupt):
    def __init__(self, record: dict, path: Path, how: str = "Ctrl-C"):
        super().__init__("interrupted")
        self.record = record
        self.path = path
        self.how = how


def _version() -> str:
    from harness import __version__

    return __version__


def _artifact(model: str, variant: str, rebuild: bool, emit):
    from harness.plan.models import artifact_for

    emit("artifact", {"model": model, "variant": variant})
    t0 = time.perf_counter()
    try:
        art, built = artifact_for(model, variant, rebuild=rebuild)
    except BenchError as exc:
        return exc
    except Exception as exc:  # a recipe that breaks fails its cases, not the run
        return BenchError(f"{type(exc).__name__}: {exc}")
    emit("artifact_ready", {"model": model, "variant": variant, "built": built, "seconds": time.perf_counter() - t0})
    return art


def _identity(pc, *, device, runtime_version, threads, simulated, options=None) -> dict:
    return {**pc.as_dict(), "case_id": pc.case_id, "device": device, "runtime_version": runtime_version,
            "threads": {"requested": threads}, "simulated": simulated, "options": dict(options or {})}


def _key_options(backend, options: dict | None) -> dict:
    """The run's backend options that change what is measured (they go into every case's key)."""
    from harness.run.env import measured_options

    return measured_options(options, not_measured=getattr(backend, "options_not_measured", ()),
                            defaults=getattr(backend, "option_defaults", None))


def _finish(base: dict, art, result: dict) -> dict:
    from harness.run.env import comparability_key, key_fields

    case = dict(base)
    case["artifact"] = None if art is None else {"key": art.key, "dir": str(art.dir), "opset": art.meta.get("opset"),
                                                 "recipe": art.meta.get("recipe")}
    case.update(result)
    kf = key_fields({**case, "artifact_hash": None if art is None else art.key,
                     "threads": (case.get("threads") or {}).get("requested")})
    case["key_fields"] = kf
    case["key"] = comparability_key(kf)
    case.setdefault("reason", None)
    if art is not None and "complexity" not in case:
        case["complexity"] = art.meta.get("complexity")
    _say_why_accuracy_failed(case)
    from harness.safe import encode_non_finite

    case, where = encode_non_finite(case)  # NaN / Inf: null + where, so the record is always writable
    if where:
        case["non_finite"] = where
    return case


def _combine(base: dict, art, results: list[dict], pc, settings) -> dict:
    """The case record from its repeats (harness.repeats.combine), identity and key around it."""
    from harness.run.repeats import combine

    result = combine(results, scenario=pc.scenario, batch=int(pc.batch), settings=settings)
    if result.get("status") in ("ok", "invalid"):
        _carry_estimates(result)
    return _finish(base, art, result)


def _payload(pc, art, backend, settings, threads, suite, opts, *, accuracy: bool = True) -> tuple[dict, dict]:
    """What one worker run of case ``pc`` gets: its payload and its environment."""
    payload = {
        "case": pc.as_dict(),
        "artifact_dir": str(art.dir),
        "settings": asdict(settings),
        "threads": threads,
        "gate": suite.gate_for(pc.model, pc.variant),
        "metric": _metric(suite.metric, art),
        "checks": list(art.meta.get("checks") or []),
        "options": opts.backend_options,
        "scenario": {**{k: v for k, v in opts.scenario_options.items() if v is not None},
                     **({} if opts.scenario_options.get("latency_bound_ms") is not None else
                        {"latency_bound_ms": _bound(suite, pc.model)})},
        # the parent resolved the backend; the worker loads that very class (no second discovery)
        "backend_ref": f"{type(backend).__module__}:{type(backend).__qualname__}",
        "accuracy": bool(accuracy),
        "fresh_accuracy": bool(opts.fresh_accuracy),
    }
    if art.meta.get("kind") == "llm":  # generation workload: the suite's lengths, requests, gates
        payload.update(kind="llm", generation=suite.data.get("generation") or {})
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    return payload, env


def _placed(base: dict, jr) -> dict:
    """A case's identity with where it ran: the node's own device name (e.g. its CPU model, not the
    driver's), its node and machine id, and the attempts lost with a node before."""
    if jr is None:
        return base
    base = dict(base)
    if jr.device:
        base["device"] = jr.device
    if jr.node is not None:
        base.update(node=jr.node, machine_id=(jr.machine or {}).get("machine_id"))
    if jr.retries:
        base["retries"] = jr.retries
    return base


def _result_from(jr, threads: int, opts) -> dict:
    """The measured part of a case record from one executor JobResult (not yet keyed)."""
    if jr.status is not None:  # the job never finished: no matching node, node lost
        return {"status": jr.status, "reason": jr.reason}
    wr = jr.worker
    worker = wr.to_record()
    if wr.ok and wr.result is not None:
        result = dict(wr.result)
        _apply_report(result, threads=threads, peak_rss_bytes=wr.peak_rss_bytes)
        result["worker"] = worker
        if opts.pin:
            result["pinned_cpus"] = worker.get("cpus")
        return result
    return {"status": "failed", "reason": wr.reason or "worker failed", "worker": worker}


def backend_needs(backend, opts) -> "Needs":
    """What a node needs to run this backend's cases: the backend's own ``fleet_resources``
    (e.g. ``{"GPU": 1}``), else GPU for cuda / TPU for tpu; plus --resource and --node-label."""
    from harness.run.executors import Needs

    res = getattr(backend, "fleet_resources", None)
    if res is None:
        res = {"cuda": {"GPU": 1}, "tpu": {"TPU": 1}}.get(backend.name, {})
    return Needs(cpus=1, resources={**res, **opts.resources}, labels=dict(opts.node_labels))


def _with_cpus(needs, threads: int):
    from dataclasses import replace

    return replace(needs, cpus=threads)


def measure_scaling(executor, job, replicas: list[int], threads: int | None, settings) -> dict:
    """Data-parallel scaling of one offline case: 1 replica (calibration: runs ``target_s`` and
    counts its queries Q), then each N > 1 on Q queries sharded N ways; see harness.measure.scaling."""
    from harness.measure.scaling import aggregate, scaling_table

    counts = sorted(set([1, *replicas]))
    if executor.name == "local":
        from harness.run.executors.local import available_cores

        per = threads or max(1, len(available_cores()) // max(counts))
    else:
        per = job.payload["threads"]
    target_s = max(settings.min_time_s, min(settings.max_time_s, 2.0))
    base = {**job.payload, "target_s": target_s, "go_timeout_s": job.timeout_s}
    points = []
    q_total = None
    for n in counts:
        if n > 1 and q_total is None:
            points.append({"replicas": n, "status": "skipped", "reason": "the one-replica run failed"})
            continue
        from dataclasses import replace

        j = replace(job, payload={**base, "queries": q_total})
        res = executor.run_replicas(j, n, per)
        if res["status"] != "ok":
            points.append({"replicas": n, "status": res["status"], "reason": res["reason"]})
            continue
        bad = [w for w in res["workers"] if not (w.ok and w.result)]
        if bad:
            points.append({"replicas": n, "status": "failed", "reason": f"replica failed: {bad[0].reason}"})
            continue
        windows = [w.result for w in res["workers"]]
        agg = aggregate(windows)
        if n == 1:
            q_total = windows[0]["queries"]
        points.append({"replicas": n, "status": "ok", "throughput": agg["throughput"],
                       "per_replica": agg["per_replica"], "sum_of_replicas": agg["sum_of_replicas"],
                       "overlap": agg["overlap"], "wall_s": agg["wall_s"], "samples": agg["samples"],
                       "queries": sum(w["queries"] for w in windows), "where": res["where"]})
    table = scaling_table(points)
    table.update(placement="cores" if executor.name == "local" else "nodes", threads_per_replica=per,
                 queries=q_total, unit="samples/s")
    return table


def _check_scenario_options(o: dict) -> None:
    """Bad load-generator options and a missing LoadGen: one line, exit 2, before any case runs."""
    from harness.measure.scenarios import ScenarioSettings

    try:
        ScenarioSettings(target_qps=o.get("target_qps"), latency_bound_ms=o.get("latency_bound_ms"),
                         samples_per_query=o.get("samples_per_query") or 8).validate()
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if o.get("samples_per_query") is not None and int(o["samples_per_query"]) < 1:
        raise BenchError(f"multi-stream samples per query must be an integer >= 1, got {o['samples_per_query']!r}")
    if o.get("concurrency") is not None and int(o["concurrency"]) < 1:
        raise BenchError(f"concurrency must be >= 1, got {o['concurrency']!r}")
    if (o.get("driver") or "bench") not in ("bench", "loadgen"):
        raise BenchError(f"unknown driver {o['driver']!r} (choose from: bench, loadgen)")
    if o.get("driver") == "loadgen":
        from harness.run.lg_driver import require

        require()


def _bound(suite, model: str) -> float | None:
    """The suite's server latency bound for ``model`` (per model, else suite-wide; None = default)."""
    for m in suite.models:
        if m["name"] == model and m.get("latency_bound_ms") is not None:
            return float(m["latency_bound_ms"])
    return suite.data.get("latency_bound_ms")


def _metric(suite_metric: str | None, art) -> str | None:
    """The suite's metric, else the artifact's own (e.g. cosine for an embedding model); top-1 only
    where the model has labels."""
    if suite_metric == "top1" and art.meta.get("task") != "classification":
        suite_metric = None
    return suite_metric or art.meta.get("metric")


def _apply_report(result: dict, *, threads: int, peak_rss_bytes: int | None) -> None:
    """Place what the session reported (``result["report"]``, a :class:`backends.base.SessionReport`
    as a dict) where the case record keeps it: ``backend_info``, ``timings``, ``memory`` (host peak
    RSS measured here + the device's), ``threads`` (requested + what the runtime uses) and, for a
    simulated device, ``estimates``."""
    rep = result.pop("report", None)  # None: the case ended before a session existed (unsupported)
    if rep is None and ("backend_info" in result or "timings" in result):
        from backends.base import legacy_report  # a case path that returned the session's fields itself

        rep = legacy_report(result.pop("timings", None), result.pop("backend_info", None)).to_dict()
    if rep is not None:
        if "info" in rep:  # a partial report (a design that does not fit) has no session, so no info
            result["backend_info"] = rep["info"]
        result["timings"] = rep.get("timings")
    device_memory = (rep or {}).get("memory")
    result["memory"] = {"peak_rss_bytes": peak_rss_bytes, **({"device": device_memory} if device_memory else {}),
                        **(result.get("memory") or {})}  # a generation case adds its KV cache's bytes
    if result["memory"].get("kv_cache_bytes") and peak_rss_bytes:
        result["memory"]["kv_cache_share"] = result["memory"]["kv_cache_bytes"] / peak_rss_bytes
    if rep is None:
        return
    if rep.get("info"):
        result["threads"] = {"requested": threads, **(rep.get("threads") or {})}
    if isinstance(rep.get("estimates"), dict):
        result["estimates"] = rep["estimates"]  # their identity and verdict: _carry_estimates


def _carry_estimates(result: dict) -> None:
    """A simulated backend reports its figures as ``estimates`` (the case's top-level ``estimates``,
    never mixed with measured ones). Their ``identity`` (the simulated part and the precision
    actually emulated) replaces the planned device / precision, so runs on different parts or
    precisions do not share a comparability key. Applied once per case (after repeats combine)."""
    est = result.get("estimates")
    if not isinstance(est, dict):
        return
    ident = est.get("identity") or {}
    for k in ("device", "precision"):
        if ident.get(k):
            result[k] = ident[k]
    # The measured wall time is the emulator's: its stability says nothing about the simulated
    # device, so timing reasons become warnings; the accuracy gate still decides.
    v = result.get("validity")
    if isinstance(v, dict) and v.get("reasons"):
        timing = [r for r in v["reasons"] if not str(r).startswith("accuracy_gate_failed")]
        if timing:
            v["reasons"] = [r for r in v["reasons"] if r not in timing]
            v["warnings"] = list(v.get("warnings") or []) + [f"emulator timing (not the device's): {r}"
                                                             for r in timing]
            v["valid"] = not v["reasons"]
            if result.get("status") == "invalid" and v["valid"]:
                result["status"], result["reason"] = "ok", None
            elif result.get("status") == "invalid":
                result["reason"] = "; ".join(v["reasons"])


def exit_code(record: dict) -> int:
    """0 when every case is ok (or unsupported: a stated limit, not a failure); 1 otherwise (a design
    that does not fit the simulated part counts as a failure, as before it had its own status)."""
    bad = [c for c in record["cases"] if c["status"] in ("failed", "invalid", "does_not_fit")]
    return 1 if bad else 0
