"""``bench run``: run a suite on a backend, print the table, write the record."""
from __future__ import annotations

import sys

import click

from harness.cli._options import CommaList, Fraction, Positive, parse_kv

SCENARIOS = ["single-stream", "offline", "server", "multi-stream"]
#: More threads than this is a typo, not a setting (it would run until the case time limit).
MAX_THREADS = 1024
#: What may go with --resume (everything else comes from the interrupted run's own command).
RESUME_OPTIONS = {"resume", "out_dir", "quiet", "case_timeout", "build_jobs"}


@click.command("run")
@click.option("--suite", "suite", default=None, metavar="NAME", help="Suite name (bench list suites) or a .yaml path.")
@click.option("--backend", default="cpu", show_default=True,
              help="Backend (bench list backends); a comma list (cpu,cuda) runs each backend's cases.")
@click.option("--runtime", default=None, help="Runtime of the backend (default: the backend's default).")
@click.option("--scenario", "scenarios", type=CommaList(choices=SCENARIOS), default=None,
              help="Comma list of single-stream, multi-stream, server, offline (default: the suite's).")
@click.option("--batch", "batches", type=CommaList(int, positive=True), default=None,
              help="Offline batch sweep, e.g. 1,8,32 (default: the suite's).")
@click.option("--min-time", type=Positive(float, allow_zero=True), default=None, help="Minimum measuring time per case (s).")
@click.option("--max-time", type=Positive(float), default=None, help="Maximum measuring time per case (s).")
@click.option("--min-iterations", type=Positive(int), default=None, help="Minimum timed iterations per case.")
@click.option("--target-ci", type=Fraction(0.5), default=None, metavar="FRACTION",
              help="Stop once the median's 95 % CI half-width is below this fraction of the median, "
                   "in (0, 0.5]: 0.01 or 1% = 1 %.")
@click.option("--threads", type=Positive(int, maximum=MAX_THREADS), default=None,
              help=f"Threads for the runtime, 1..{MAX_THREADS} (default: physical cores).")
@click.option("--timeout", "case_timeout", type=Positive(float), default=None, help="Per-case worker time limit (s).")
@click.option("--out", "out_dir", default="results", show_default=True, help="Directory for the run record.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Free-form tag recorded with the run (repeatable).")
@click.option("--option", "backend_options", multiple=True, metavar="K=V",
              help="Backend/runtime option, e.g. io_binding=0 (repeatable).")
@click.option("--part", default=None, metavar="PART", help="fpga: FPGA part (bench list parts); = --option part=PART.")
@click.option("--precision", default=None, metavar="TYPE", help="fpga: fixed-point type, e.g. 'ap_fixed<16,6>'.")
@click.option("--reuse-factor", "reuse_factor", type=Positive(int), default=None, help="fpga: reuse factor N.")
@click.option("--fit", is_flag=True, default=False, help="fpga: fold layers automatically to fit the part.")
@click.option("--model", "models", multiple=True, metavar="NAME|FILE.onnx|PKG.MOD:FN",
              help="Run only these models of the suite, and/or your own: an ONNX file or a torch factory "
                   "package.module:function (repeatable; with your own models --suite is optional).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="Input shape of your own model, batch first (repeatable, one per input; NAME= may be left "
                   "out for a single input). Needed for torch factories and for dynamic dims.")
@click.option("--target-qps", type=Positive(float), default=None,
              help="server: run at this QPS (Poisson arrivals) instead of searching the peak.")
@click.option("--latency-bound", "latency_bound", type=Positive(float), default=None, metavar="MS",
              help="server: p99 latency bound in ms (default: the suite's, else 15 ms).")
@click.option("--multistream-samples", type=Positive(int), default=None,
              help="multi-stream: samples per query (default 8).")
@click.option("--concurrency", type=Positive(int), default=None,
              help="Queries in flight for server/multi-stream/offline (default: --threads; intra-op threads "
                   "per query = threads / concurrency).")
@click.option("--max-queue-delay", "max_queue_delay", type=Positive(float, allow_zero=True), default=None,
              metavar="US", help="server: dynamic batching, wait up to this many µs to fill a batch of --batch.")
@click.option("--driver", type=click.Choice(["bench", "loadgen"]), default="bench", show_default=True,
              help="loadgen: also run each case under MLPerf LoadGen (package mlcommons-loadgen).")
@click.option("--repeat", "repeat", type=Positive(int), default=None,
              help="Measure each case in K fresh worker processes, interleaved round-robin over the cases; the "
                   "headline and its CI then include the between-process noise. [default: the profile's]")
@click.option("--profile", type=click.Choice(["quick", "nightly", "rigorous"]), default=None,
              help="quick: 1 process per case (the default); nightly: 5 short processes; rigorous: 10 long ones. "
                   "Explicit options win.")
@click.option("--pin", default=None, metavar="CPUS",
              help="Pin every worker to these CPUs, e.g. 2,3 or 2-5 (recorded with each case).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where cases run: this machine, or a Ray cluster (pip install 'bench[fleet]'; docs/fleet.md).")
@click.option("--address", default=None, metavar="HOST:PORT",
              help="ray: the cluster's head (default: RAY_ADDRESS, else the cluster started on this machine).")
@click.option("--node-label", "node_labels", multiple=True, metavar="K=V",
              help="ray: run cases only on nodes with this label, e.g. accelerator=H100 (repeatable).")
@click.option("--resource", "resources", multiple=True, metavar="NAME=QTY",
              help="ray: a custom resource every case needs, e.g. fpga_u250=1 (repeatable).")
@click.option("--replicas", type=CommaList(int, positive=True), default=None,
              help="Data-parallel scaling of offline cases: replica counts, e.g. 1,2 (cores locally, nodes on ray).")
@click.option("--rebuild", is_flag=True, help="Rebuild model artifacts even when cached.")
@click.option("--build-jobs", "build_jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes that build missing model artifacts before the first case "
                   "[default: 1, one at a time, below 4 CPUs; else 2].")
@click.option("--fresh-accuracy", "fresh_accuracy", is_flag=True,
              help="Run every case's full accuracy pass, even where a stored pass of the same system could be "
                   "verified and reused (docs/architecture.md, accuracy).")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.option("--resume", "resume", default=None, metavar="RUN_ID|latest",
              help="Finish a run that was killed: run the cases its journal (in --out) lacks, with the run's "
                   "own command, and write one record with all of them.")
@click.pass_context
def command(ctx, **params):
    """Run a suite on a backend: one isolated worker per case, a table, a record.

    Exit 0 when every case is ok, 1 when any case failed or is invalid, 2 on bad input,
    130 on Ctrl-C and 143 on SIGTERM (the record is written with the finished cases).
    """
    from harness.errors import raise_on_sigterm

    raise_on_sigterm()  # SIGTERM (CI runners, timeout) is handled like Ctrl-C
    argv = (ctx.find_root().obj or {}).get("argv") or sys.argv[1:]
    journal = None
    if params["resume"]:
        params, argv, journal = _resume_params(ctx, params)
    _execute(ctx, argv=argv, resume_journal=journal, **params)


def _resume_params(ctx, params):
    """The parameters of the interrupted run (parsed again from its recorded command), its argv and
    its journal; --out / --timeout / --quiet given now apply."""
    from click.core import ParameterSource

    from harness.errors import BenchError
    from harness.store.records import find_journal, journal_header

    extra = [n for n in params if n not in RESUME_OPTIONS
             and ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
    if extra:
        raise BenchError(f"--resume takes the interrupted run's own settings; --{extra[0].replace('_', '-')} "
                         "cannot be changed (only --out, --timeout, --quiet and --build-jobs go with --resume)")
    path = find_journal(params["out_dir"], params["resume"])
    header = journal_header(path)
    argv = list(header.get("command") or [])[1:]
    if not argv or argv[0] != "run":
        raise BenchError(f"{path}: its recorded command {' '.join(argv) or '(none)'} is not a 'bench run'")
    try:
        sub = command.make_context("run", list(argv[1:]), resilient_parsing=False)
    except click.ClickException as exc:
        raise BenchError(f"{path}: cannot replay its command: {exc.format_message()}") from None
    old = dict(sub.params)
    if old.get("resume"):
        raise BenchError(f"{path}: its recorded command is itself a --resume")
    for n in ("out_dir", "quiet", "case_timeout", "build_jobs"):
        if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE or n == "out_dir":
            old[n] = params[n]
    old["resume"] = None
    return old, argv, str(path)


def _execute(ctx, *, suite, backend, runtime, scenarios, batches, min_time, max_time, min_iterations, target_ci,
             threads, case_timeout, out_dir, tags, backend_options, part, precision, reuse_factor, fit, models,
             input_shapes, target_qps, latency_bound, multistream_samples, concurrency, max_queue_delay, driver,
             repeat, profile, pin, executor, address, node_labels, resources, replicas, rebuild, quiet, resume, argv,
             resume_journal, fresh_accuracy=False, build_jobs=None):
    from harness.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, BenchError
    from harness.plan.models import is_user_model
    from harness.run.runner import RunInterrupted, RunOptions, exit_code, run

    user_models = [m for m in models if is_user_model(m)]
    models = [m for m in models if not is_user_model(m)]
    if not suite and models:
        raise BenchError(f"--model {models[0]}: a zoo model needs --suite (see 'bench list suites'); your own "
                         "models are files ending in .onnx or package.module:factory")
    if not suite and not user_models:
        raise click.UsageError("missing --suite NAME (see 'bench list suites'), or --model FILE.onnx / "
                               "package.module:factory")
    if input_shapes and not user_models:
        raise BenchError("--input-shape is for your own models (--model FILE.onnx or package.module:factory)")
    if min_time is not None and max_time is not None and max_time < min_time:
        raise BenchError(f"--max-time {max_time} is smaller than --min-time {min_time}")
    pin_cpus = None
    if pin is not None:
        import os

        from harness.run.repeats import parse_cpus

        try:
            allowed = set(os.sched_getaffinity(0))
        except AttributeError:
            raise BenchError("--pin: CPU pinning is not supported on this platform") from None
        pin_cpus = parse_cpus(pin, allowed)
    opts = RunOptions(
        suite=suite, backend=backend, runtime=runtime, scenarios=scenarios, batches=batches,
        models=list(models) or None, threads=threads, out_dir=out_dir, tags=parse_kv(tags),
        measurement={"min_time_s": min_time, "max_time_s": max_time, "min_iterations": min_iterations,
                     "target_ci": target_ci},
        case_timeout_s=case_timeout, rebuild=rebuild, fresh_accuracy=fresh_accuracy, build_jobs=build_jobs,
        backend_options={**parse_kv(backend_options, "option"),
                         **{k: str(v) for k, v in (("part", part), ("precision", precision),
                                                   ("reuse_factor", reuse_factor), ("fit", 1 if fit else None))
                            if v is not None}},
        argv=list(argv), user_models=user_models, input_shapes=list(input_shapes),
        scenario_options={"target_qps": target_qps, "latency_bound_ms": latency_bound,
                          "samples_per_query": multistream_samples, "concurrency": concurrency,
                          "max_queue_delay_us": max_queue_delay, "driver": driver},
        repeat=repeat, profile=profile, pin=pin_cpus,
        executor=executor, address=address, node_labels=parse_kv(node_labels, "node-label"),
        resources=_resources(resources), replicas=replicas,
        resume_journal=resume_journal,
    )
    from rich.console import Console

    from harness.cli.table import print_run

    out = Console(width=None if sys.stdout.isatty() else 200)
    ui = _Progress(Console(stderr=True), quiet)
    try:
        with ui:
            record, path = run(opts, on_event=ui.event)
    except RunInterrupted as exc:
        print_run(exc.record, exc.path, out)
        out.print(f"[yellow]interrupted[/] ({exc.how}): finished cases kept; the rest are marked skipped.")
        ctx.exit(EXIT_TERMINATED if exc.how == "SIGTERM" else EXIT_INTERRUPTED)
    print_run(record, path, out)
    ctx.exit(exit_code(record))


def _resources(items) -> dict:
    from harness.errors import BenchError

    out = {}
    for k, v in parse_kv(items, "resource").items():
        try:
            q = float(v)
        except ValueError:
            q = -1.0
        if not q > 0:
            raise BenchError(f"--resource {k}={v}: the quantity must be a positive number")
        out[k] = q
    return out


class _Progress:
    """An overall bar over the cases, and a live bar for the case in flight.

    The case bar fills with elapsed time against the case's upper bound (warm-up max + max
    measuring time); a case that converges early simply completes early.
    """

    def __init__(self, console, quiet: bool):
        self.console = console
        self.silent = quiet
        self.quiet = quiet or not console.is_terminal
        self.progress = None
        self.task = None
        self.case_tasks: dict = {}  # case index -> progress task (several in flight on a Ray cluster)
        self.case_budget = 1.0
        self._stop = None

    def __enter__(self):
        if not self.quiet:
            import threading

            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.fields[count]}"), TimeElapsedColumn(), console=self.console,
                                     transient=True)
            self.progress.__enter__()
            self._stop = threading.Event()
            threading.Thread(target=self._tick, daemon=True).start()
        return self

    def __exit__(self, *exc):
        if self._stop is not None:
            self._stop.set()
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False

    def _tick(self):
        while not self._stop.wait(0.2):
            for task in list(self.case_tasks.values()):
                t = next((x for x in self.progress.tasks if x.id == task), None)
                if t is not None and t.started and not t.finished:
                    done = min(t.elapsed or 0.0, self.case_budget * 0.99)
                    self.progress.update(task, completed=done, count=f"{done:.0f}/{self.case_budget:.0f} s max")

    def event(self, kind: str, data: dict) -> None:
        from harness.safe import plain, term
        from harness.units import fmt_rate, fmt_time_ns

        if self.silent:
            return
        if kind == "system_warnings":
            for w in data["warnings"]:
                self.console.print(f"[yellow]noisy machine[/]: {w}", highlight=False)
            return
        if kind == "start":
            self.case_budget = float(data.get("case_budget_s") or 1.0)
            if self.progress is not None:
                self.n_cases = data["n_cases"]
                self.task = self.progress.add_task(f"suite {term(data['suite'])}", total=self.n_cases,
                                                   count=f"0/{self.n_cases} cases")
            else:
                self.console.print(plain(f"run {data['run_id']}: {data['n_cases']} cases of suite {data['suite']}"))
        elif kind == "artifact":
            self._say(f"preparing artifact {term(data['model'])}/{term(data['variant'])}")
        elif kind == "builds":
            self.console.print(plain(f"building {data['n']} artifacts, {data['jobs']} at a time"))
        elif kind == "artifact_ready" and data["built"]:
            self.console.print(plain(f"built {data['model']}/{data['variant']} in {data['seconds']:.1f} s"))
        elif kind == "case_start":
            if self.progress is not None:
                stale = self.case_tasks.pop(data["index"], None)  # the case's previous repeat
                if stale is not None:
                    self.progress.remove_task(stale)
                self.case_tasks[data["index"]] = self.progress.add_task(f"  {term(data['case_id'])}", total=self.case_budget,
                                                        count=f"0/{self.case_budget:.0f} s max")
        elif kind == "case_done":
            c = data["case"]
            lat = c.get("latency_ns") or {}
            thr = (c.get("throughput") or {}).get("samples_per_s")
            detail = f"p50 {fmt_time_ns(lat.get('p50'))}, {fmt_rate(thr)}" if lat else (c.get("reason") or "")
            mark = {"ok": "[green]✓[/]", "invalid": "[yellow]![/]", "unsupported": "[magenta]-[/]",
                    "does_not_fit": "[red]✗[/]"}.get(c["status"], "[red]✗[/]")
            self.console.print(f"{mark} {term(c['case_id'])}: {term(c['status'])} · {term(detail)}", highlight=False,
                               soft_wrap=not self.console.is_terminal)
            if self.progress is not None:
                task = self.case_tasks.pop(data["index"], None)
                if task is not None:
                    self.progress.remove_task(task)
                self.progress.advance(self.task)
                done = int(self.progress.tasks[self.task].completed)
                self.progress.update(self.task, count=f"{done}/{self.n_cases} cases")

    def _say(self, text: str) -> None:  # text: markup with the data already escaped (term)
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=text)
