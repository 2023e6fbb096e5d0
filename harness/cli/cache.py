"""``bench cache list|prune``: what the artifact cache holds and removing what is no longer used.

Every change to a model's builder, recipe, data or packages builds a new cache entry beside the old
one (harness.plan.artifacts), so a machine that runs bench every night from a moving checkout
fills its disk unless something removes the old entries: this command (harness.plan.cache).
"""
from __future__ import annotations

import time

import click


def _root(path: str | None):
    from pathlib import Path

    from harness.plan.artifacts import cache_root

    return Path(path) if path else cache_root()


def _size(n: int) -> str:
    from harness.units import fmt_count

    return fmt_count(n, "B")


def _ago(t: float, now: float) -> str:
    s = max(0.0, now - t)
    for unit, span in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= span:
            return f"{s / span:.0f} {unit} ago"
    return "just now"


@click.group("cache")
def command():
    """Inspect or prune the artifact cache ($BENCH_CACHE, else ~/.cache/bench/artifacts)."""


@command.command("list")
@click.option("--cache", "cache_dir", metavar="DIR", help="Cache root (default: $BENCH_CACHE or ~/.cache/bench/artifacts).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(cache_dir, as_json):
    """Every cached artifact: size (with its side caches), last use, and whether a newer entry of the
    same model and variant superseded it."""
    from harness.plan.cache import scan

    now = time.time()
    s = scan(_root(cache_dir), now=now)
    if as_json:
        import json

        click.echo(json.dumps({"root": str(s.root), "entries": [e.to_dict() for e in s.entries],
                               "orphaned_side_caches": [str(p) for p in s.orphans],
                               "stale_builds": [str(p) for p in s.stale_builds]}, indent=1))
        return
    if not s.entries and not s.orphans and not s.stale_builds:
        click.echo(f"cache {s.root}: empty")
        return
    from harness.cli.table import print_rows

    rows = [{"model": e.model, "variant": e.variant, "key": e.key, "size": _size(e.total_bytes),
             "last used": _ago(e.last_used, now), "state": "superseded" if e.superseded else "latest"}
            for e in sorted(s.entries, key=lambda e: (e.model, e.variant, -e.last_used))]
    print_rows(rows, ["model", "variant", "key", "size", "last used", "state"], title=f"cache {s.root}")
    total = sum(e.total_bytes for e in s.entries)
    old = [e for e in s.entries if e.superseded]
    click.echo(f"{len(s.entries)} artifacts, {_size(total)}; {len(old)} superseded "
               f"({_size(sum(e.total_bytes for e in old))}): `bench cache prune --superseded` removes them"
               + (f"; {len(s.orphans)} orphaned side caches, {len(s.stale_builds)} leftover builds"
                  if s.orphans or s.stale_builds else ""))


@command.command("prune")
@click.option("--cache", "cache_dir", metavar="DIR", help="Cache root (default: $BENCH_CACHE or ~/.cache/bench/artifacts).")
@click.option("--superseded", is_flag=True,
              help="Remove every entry of a model and variant but the most recently used one.")
@click.option("--unused-for", "unused_for", metavar="AGE",
              help="Remove entries not used for longer than AGE: 30d, 12h, 90m (a bare number is days).")
@click.option("--dry-run", is_flag=True, help="Say what would go; delete nothing.")
def prune_(cache_dir, superseded, unused_for, dry_run):
    """Remove superseded and/or long-unused entries with their side caches (accuracy passes, engines),
    plus side caches whose artifact is gone and folders of killed builds. Do not run it beside a
    `bench run` that uses the same cache."""
    from harness.plan.cache import doomed, freed_bytes, parse_age, prune, scan, select

    if not superseded and unused_for is None:
        raise click.UsageError("say what to prune: --superseded and/or --unused-for AGE")
    age = None
    if unused_for is not None:
        try:
            age = parse_age(unused_for)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--unused-for") from None
    now = time.time()
    s = scan(_root(cache_dir), now=now)
    chosen = select(s, superseded=superseded, unused_for_s=age, now=now)
    if dry_run:
        for e in chosen:
            click.echo(f"would remove {e.model}/{e.variant} {e.key} ({_size(e.total_bytes)}, "
                       f"last used {_ago(e.last_used, now)})")
        for p in s.orphans + s.stale_builds:
            click.echo(f"would remove {p}")
        click.echo(f"would free {_size(freed_bytes(doomed(s, chosen)))} in {len(chosen)} artifacts"
                   f" (+ {len(s.orphans)} orphaned side caches, {len(s.stale_builds)} leftover builds)")
        return
    freed = prune(s, chosen)
    click.echo(f"removed {freed['artifacts']} artifacts with {freed['side_caches']} side caches, "
               f"{freed['orphans']} orphaned side caches, {freed['stale_builds']} leftover builds: "
               f"{_size(freed['bytes'])} freed; {len(s.entries) - freed['artifacts']} artifacts kept")
