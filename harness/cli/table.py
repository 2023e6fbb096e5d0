"""The terminal table of a run (``bench run`` and ``bench show``), rendered with rich, and plain
tables for listings.

On a terminal, rich fits the table to the window. Anywhere else (a pipe, a file, a CI log)
tables are plain aligned columns, one line per row, never wrapped or folded: an identifier
(a model, a part, a case id) always stays whole on its line, so ``grep`` finds it.
"""
from __future__ import annotations


from harness.units import PERCENT_METRICS, fmt_rate, fmt_time_ns  # noqa: F401  (fmt_rate, fmt_time_ns: used below and by cli.run)

_SHORT = {"single-stream": "SS", "offline": "off", "multi-stream": "MS", "server": "srv"}


def fmt_accuracy(acc, delta: bool = True) -> str:
    if not acc or acc.get("value") is None:
        return "-"
    v = acc["value"]
    pct = acc.get("metric") in PERCENT_METRICS
    s = f"{v * 100:.2f}%" if pct else f"{v:.4g}"
    if delta and acc.get("delta") is not None and pct:
        s += f" ({acc['delta'] * 100:+.2f})"
    if acc.get("passed") is False:
        s += " FAIL"
    return s


STATUS_STYLE = {"ok": "green", "invalid": "yellow", "failed": "red", "skipped": "dim", "unsupported": "magenta",
                "does_not_fit": "red"}


COLUMNS = (("model", "left"), ("variant", "left"), ("backend", "left"), ("prec", "left"), ("batch", "right"),
           ("scenario", "left"), ("headline", "right"), ("p50", "right"), ("p90", "right"), ("p99", "right"), ("±CI", "right"),
           ("throughput", "right"), ("accuracy", "right"), ("status", "left"))
#: dropped first when the terminal is narrow (the record has them all)
NARROW_DROP = ("backend", "±CI", "p99", "prec", "p90")


#: headline metrics that are times, as the table names them
_TIME_HEADLINES = {"tpot_p50_ns": "TPOT p50", "p99_ttft_ns": "TTFT p99"}


def fmt_headline(h: dict | None) -> str:
    """The scenario's headline: p90/p99 latency, (max) QPS or samples/s."""
    if not h or h.get("value") is None:
        return "-"
    m, v = h.get("metric"), h["value"]
    if m in ("p90_latency", "p99_latency"):
        return f"{m[:3]} {fmt_time_ns(v)}"
    if h.get("unit") == "ns" or str(m).endswith("_ns"):  # a time (LLM: TPOT p50, TTFT p99), never a rate
        return f"{_TIME_HEADLINES.get(m, str(m).removesuffix('_ns'))} {fmt_time_ns(v)}"
    if m == "max_qps":
        return f"max {fmt_rate(v).replace('/s', '').strip()} QPS"
    if m == "qps":
        return f"{fmt_rate(v).replace('/s', '').strip()} QPS"
    return fmt_rate(v)


def _headline_cell(c: dict, lat: dict, thr, est: str) -> str:
    """A simulated case shows its estimate in the headline's form, never the emulator's wall time."""
    h = c.get("headline")
    if not h:
        return "-"
    if c.get("simulated"):
        m = h.get("metric", "")
        v = lat.get("p90") if m.endswith("_latency") else thr
        return fmt_headline({"metric": m if m.endswith("_latency") else "samples_per_s", "value": v}) + est
    return fmt_headline(h)


def run_table(record: dict, title: str | None = None, width: int | None = None):
    """One row per case; reasons of non-ok cases go to numbered notes under the table.

    On a terminal narrower than 140 columns the backend, CI, p99 and precision columns are
    left out (the title names the backend) rather than squeezing every cell.
    """
    from rich.table import Table
    from rich.text import Text

    from harness.safe import plain, printable

    narrow = width is not None and width < 140
    tiny = width is not None and width < 110
    keep = [c for c in COLUMNS if not (narrow and c[0] in NARROW_DROP)]
    if tiny:  # one "case" column instead of model + variant, short scenario names
        keep = [("case", "left")] + [c for c in keep if c[0] not in ("model", "variant")]
    backends = sorted({f"{c['backend']}/{c['runtime']}" for c in record["cases"]})
    # every cell and the title are Text objects: names, paths and reasons from a record are data,
    # never rich markup (a reason like "[/data/w.bin]" is shown as it is)
    t = Table(title=plain(title or f"run {record['run_id']} · suite {record['suite']['name']} · {', '.join(backends)}"),
              title_justify="left")
    for col, just in keep:
        t.add_column(col, justify=just, no_wrap=col not in ("model", "case", "status"),
                     min_width=6 if col in ("case", "model", "status") else None)
    names = [c[0] for c in keep]
    notes: list[str] = []
    for c in record["cases"]:
        lat = c.get("latency_ns") or {}
        est = "*" if c.get("simulated") else ""
        thr = (c.get("throughput") or {}).get("samples_per_s")
        if c.get("simulated"):  # show the estimates, never the emulator's own wall time
            e = c.get("estimates") or {}
            v = e.get("batch_latency_ns", e.get("latency_ns"))
            lat = {"p50": v, "p90": v, "p99": v, "ci_rel_halfwidth": None}
            thr = (e.get("throughput") or {}).get("samples_per_s") if isinstance(e.get("throughput"), dict) else None
        ci = lat.get("ci_rel_halfwidth")
        status = c["status"]
        style = STATUS_STYLE.get(status, "")
        status_cell = Text(printable(status), style=style)
        if c.get("reason"):
            notes.append(f"[{len(notes) + 1}] {printable(c['case_id'])}: {printable(c['reason'])}")
            status_cell.append(f" [{len(notes)}]")
        cells = {"case": f"{c['model']} {c['variant']}"}
        cells.update(zip([c[0] for c in COLUMNS], (
            c["model"], c["variant"], f"{c['backend']}/{c['runtime']}", c["precision"], str(c["batch"]),
            _SHORT.get(c["scenario"], c["scenario"]) if tiny else c["scenario"],
            _headline_cell(c, lat, thr, est), fmt_time_ns(lat.get("p50")) + est, fmt_time_ns(lat.get("p90")) + est,
            fmt_time_ns(lat.get("p99")) + est, "-" if ci is None else f"{ci * 100:.1f}%",
            fmt_rate(thr) + est,
            fmt_accuracy(c.get("accuracy"), delta=not tiny), status_cell,
        )))
        t.add_row(*[cells[n] if isinstance(cells[n], Text) else plain(cells[n]) for n in names])
    if any(c.get("simulated") for c in record["cases"]):
        notes.append("* estimated by a performance model (simulated backend), not measured; "
                     "the emulator's own wall time is in the record, never shown as device speed")
    return t, notes


def plain_table(rows: list[list[str]], headers: list[str], right: tuple = ()) -> str:
    """Aligned columns, one line per row, nothing wrapped (cells keep their full text)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if headers[i] in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def print_rows(rows: list[dict], cols: list[str], title: str | None = None, console=None) -> None:
    """A listing: rich table on a terminal (long cells fold), plain columns elsewhere."""
    from rich.console import Console

    def cell(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, (list, tuple)):
            return ", ".join(str(x) for x in v)
        return "" if v is None else " ".join(str(v).split())

    if not _tty() and console is None:
        import click

        if title:
            click.echo(title)
        click.echo(plain_table([[cell(r.get(c)) for c in cols] for r in rows], cols))
        return
    from harness.safe import data_table

    t = data_table(title=title, title_justify="left")  # cells are data, never markup
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[cell(r.get(c)) for c in cols])
    (console or Console()).print(t)


_MARKUP = __import__("re").compile(r"\[/?[a-z ]*\]")


def generation_table(record: dict):
    """Generative (LLM) cases: TTFT, TPOT, tokens/s, KV cache and accuracy per case (None if none)."""
    from rich.table import Table

    cases = [c for c in record["cases"] if c.get("ttft_ns") or c.get("generation")]
    if not cases:
        return None
    t = Table(title="generation (LLM): first length point of each case; all points in the record",
              title_justify="left")
    for col in ("model", "variant", "prec", "batch", "scenario", "prompt/out", "TTFT p50", "TPOT p50", "TPOT p99",
                "tok/s", "prefill tok/s", "KV cache", "ppl", "top-1", "zero-shot", "status"):
        t.add_column(col, justify="left" if col in ("model", "variant", "prec", "scenario", "status") else "right",
                     no_wrap=True)
    for c in cases:
        pts = (c.get("generation") or {}).get("points") or []
        p0 = pts[0] if pts else {}
        ttft, tpot = c.get("ttft_ns") or {}, c.get("tpot_ns") or {}
        acc = c.get("accuracy") or {}
        kv = (c.get("memory") or {}).get("kv_cache_bytes")
        t.add_row(c["model"], c["variant"], c["precision"], str(c["batch"]), c["scenario"],
                  f"{p0.get('prompt_len', '-')}/{p0.get('output_len', '-')}", fmt_time_ns(ttft.get("p50")),
                  fmt_time_ns(tpot.get("p50")), fmt_time_ns(tpot.get("p99")),
                  fmt_rate((c.get("tokens_per_s") or {}).get("aggregate")), fmt_rate(p0.get("prefill_tokens_per_s_p50")),
                  "-" if not kv else f"{kv / 2**20:.1f} MiB",
                  "-" if acc.get("perplexity") is None else f"{acc['perplexity']:.3f}",
                  "-" if acc.get("next_token_top1") is None else f"{acc['next_token_top1'] * 100:.1f}%",
                  "-" if acc.get("zero_shot_accuracy") is None else f"{acc['zero_shot_accuracy'] * 100:.1f}%",
                  c["status"])
    return t


def print_run(record: dict, path=None, console=None) -> None:
    from rich.console import Console

    from harness.safe import plain as as_text

    plain = console is None and not _tty() or (console is not None and not console.is_terminal)
    console = console or Console(width=None if _tty() else 200)
    if plain:  # pipe / file / CI log: full columns, one line per case, ids whole
        table, notes = run_table(record, width=None)
        headers = [str(c.header) for c in table.columns]
        rows = [[_MARKUP.sub("", str(cell)) for cell in col._cells] for col in table.columns]
        right = tuple(str(c.header) for c in table.columns if c.justify == "right")
        console.print(table.title, highlight=False, markup=False, soft_wrap=True)
        console.print(plain_table([list(r) for r in zip(*rows)], headers, right), highlight=False, markup=False,
                      soft_wrap=True)
    else:
        table, notes = run_table(record, width=console.width)
        console.print(table)
    for note in notes:
        console.print(note, highlight=False, markup=False, soft_wrap=plain)
    gen = generation_table(record)
    if gen is not None:
        console.print(gen)
    counts: dict[str, int] = {}
    for c in record["cases"]:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    timer = record.get("timer") or {}
    console.print(as_text(f"{len(record['cases'])} cases: {summary}. Timer overhead {timer.get('overhead_ns', 0):.0f} ns."))
    if path is not None:
        console.print(as_text(f"record: {path}"))


def _tty() -> bool:
    import sys

    return sys.stdout.isatty()
