"""``bench compare BASE NEW``: per-case ratios with confidence intervals; exit 1 on a regression."""
from __future__ import annotations

import click

from harness.cli._options import CommaList

FORMATS = ("text", "md", "json")
METRIC_NAMES = ("p50", "p99", "throughput", "accuracy")


def _append(path: str, text: str) -> None:
    """Append (e.g. to $GITHUB_STEP_SUMMARY); one line naming the path when it cannot be written."""
    from harness.errors import BenchError
    from harness.safe import os_reason

    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise BenchError(f"cannot write --md-out {path}: {os_reason(exc)}") from None


def _write(path: str, text: str) -> None:
    from harness.safe import write_atomic

    write_atomic(path, text, what="--json-out")


@click.command("compare")
@click.argument("base")
@click.argument("new")
@click.option("--threshold", default=None, metavar="SPEC",
              help="Smallest change that counts: '5%' (every metric) or '5%,accuracy=0.5%'. "
                   "[default: 5%, accuracy 1%]")
@click.option("--metric", "metrics", type=CommaList(choices=METRIC_NAMES), default=None,
              help="Metrics to compare. [default: p50,p99,throughput,accuracy]")
@click.option("--format", "formats", type=CommaList(choices=FORMATS), default="text", show_default=True,
              help="What to print: text (table), md (Markdown summary), json; a comma list prints several.")
@click.option("--results", "results_dir", default="results", show_default=True,
              help="Where run ids and latest/previous are looked up.")
@click.option("--machine", default=None, help="Machine id for latest/previous. [default: this machine]")
@click.option("--suite", default=None, help="latest/previous: only runs of this suite (record suite.name).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML/JSON file with per-metric, per-suite and per-case thresholds (docs/regression.md).")
@click.option("--alpha", type=float, default=None, help="Significance level of the tests. [default: 0.002]")
@click.option("--min-samples", type=int, default=None, help="Fewer samples a side is inconclusive. [default: 10]")
@click.option("--assume-stable", is_flag=True,
              help="Skip the run-to-run noise check: within-run significance alone decides. Right only for "
                   "pinned, quiet, dedicated machines (docs/regression.md).")
@click.option("--md-out", type=click.Path(dir_okay=False), default=None,
              help="Also append the Markdown summary to this file (e.g. $GITHUB_STEP_SUMMARY).")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON to this file.")
@click.option("--changed-only", is_flag=True, help="Text table: leave out unchanged metrics.")
@click.pass_context
def command(ctx, base, new, threshold, metrics, formats, results_dir, machine, suite, config_path, alpha,
            min_samples, assume_stable, md_out, json_out, changed_only):
    """Compare run NEW against run BASE, case by case (matched by comparability key).

    BASE and NEW are run files, run ids (or unique prefixes) in --results, or 'latest' /
    'previous' (also 'latest~N') of a machine (and --suite). A change is a regression only when it is
    beyond the threshold AND significant (Mann-Whitney U p < alpha on the raw samples and
    the 99% bootstrap CI of the ratio excludes 1) AND, for timings, beyond 3 sigma of the
    run-to-run noise of the case's earlier runs on NEW's machine in --results (at least 5;
    with fewer it is inconclusive). --assume-stable skips that last check. When both runs were
    measured with --repeat (>= 2 processes a side), timings are decided from the two runs alone:
    a t-test on the per-process values (p < 0.01, CI excludes 1), history pooled in when present;
    not significant there is unchanged.

    Exit codes: 0 no regression; 1 regression; 2 bad input or a case failed in NEW;
    3 inconclusive or no baseline.
    """
    import json

    from harness.analyze import compare as cmpmod

    config = cmpmod.load_config(config_path) if config_path else None
    settings = cmpmod.make_settings(config, threshold=threshold, metrics=metrics, alpha=alpha,
                                    min_samples=min_samples, assume_stable=assume_stable or None)
    finder = cmpmod.RunFinder(results_dir, machine=machine, suite=suite)
    try:
        new_rec, new_path = finder.find(new)
    except cmpmod.NoBaseline as exc:
        raise cmpmod.BenchError(f"NEW: {exc}") from None
    try:
        base_rec, base_path = finder.find(base)
    except cmpmod.NoBaseline as exc:
        msg = f"no baseline: {exc}"
        md = f"### bench compare: ⚠️ no baseline\n\n{msg}. NEW is `{new_rec.get('run_id')}`; nothing to compare yet.\n"
        payload = json.dumps({"schema": "bench-compare/1", "exit_code": cmpmod.EXIT_INCONCLUSIVE, "no_baseline": msg,
                              "new": cmpmod.RunInfo.of(new_rec, new_path).__dict__}, indent=1)
        for fmt in formats:
            click.echo({"text": msg, "md": md, "json": payload}[fmt])
        if md_out:
            _append(md_out, md)
        if json_out:
            _write(json_out, payload + "\n")
        ctx.exit(cmpmod.EXIT_INCONCLUSIVE)
        return
    new_machine = (new_rec.get("environment") or {}).get("machine_id")
    result = cmpmod.compare_records(base_rec, new_rec, settings, base_path=base_path, new_path=new_path,
                                    history=lambda: finder.history(new_machine))
    for fmt in formats:
        if fmt == "text":
            cmpmod.render_text(result, show_unchanged=not changed_only)
        elif fmt == "md":
            click.echo(cmpmod.render_markdown(result))
        else:
            click.echo(cmpmod.to_json(result))
    if md_out:
        _append(md_out, cmpmod.render_markdown(result))
    if json_out:
        _write(json_out, cmpmod.to_json(result) + "\n")
    ctx.exit(result.exit_code)
