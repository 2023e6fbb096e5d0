"""Key findings: a few plain-text sentences computed from the data, shown at the top.

What is fastest (per model), what it costs in accuracy, which variants are on the
Pareto frontier, what did not produce a valid result, and (with several machines or
backends) which is cheapest or fastest per suite.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from harness.report.model import LATENCY_SCENARIOS, Dataset, frontiers, reference_rows
from harness.report.frames import fmt_cell, gate_verdict
from harness.units import fmt_num, ns_to_ms

MAX_FRONTIER_LINES = 6


def _acc(r: dict) -> str:
    if r["accuracy"] is None:
        return "no accuracy recorded"
    text = f"accuracy {fmt_cell('acc', r['accuracy'], r)}"
    extras = []
    if r["accuracy_delta"] is not None:
        extras.append(fmt_cell("delta", r["accuracy_delta"], r))
    if gate_verdict(r):
        extras.append(f"gate {gate_verdict(r)}")
    return text + (f" ({', '.join(extras)})" if extras else "")


def _perf(r: dict) -> str:
    mark = "≈" if r["simulated"] else ""
    if r["scenario"] in LATENCY_SCENARIOS and r["p50"] is not None:
        text = f"p50 {mark}{fmt_num(ns_to_ms(r['p50']))} ms"
    elif r["throughput"]:
        text = f"{mark}{fmt_num(r['throughput'])} samples/s"
    else:
        text = f"p50 {mark}{fmt_num(ns_to_ms(r['p50']))} ms"
    if r["speedup"] and r["variant"] != r["baseline"]:
        text += f", {fmt_num(r['speedup'])}× vs {r['baseline']}"
    return text


def _score(r: dict) -> float:
    """Higher is better: -latency for latency scenarios, throughput otherwise."""
    if r["scenario"] in LATENCY_SCENARIOS and r["p50"] is not None:
        return -r["p50"]
    return r["throughput"] or 0.0


def key_findings(ds: Dataset, procurement: list[dict] | None = None, currency: str = "USD") -> list[str]:
    out: list[str] = []
    statuses = Counter(r["status"] for r in ds.rows)
    n_runs = len({r["run_id"] for r in ds.rows}) or len(ds.records)
    out.append(f"{len(ds.rows)} cases from {n_runs} run(s) on {len(ds.machines)} machine(s), "
               f"{len({(r['backend'], r['runtime']) for r in ds.rows})} backend/runtime pair(s); "
               + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items(), key=lambda x: (x[0] != 'ok', x[0]))) + ".")

    ref = reference_rows(ds.rows)
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in ref:
        by_model[r["model"]].append(r)
    for model in sorted(by_model):
        rows = by_model[model]
        measured = [r for r in rows if not r["simulated"]]
        if measured:
            # latency where a latency scenario was run, else throughput
            kind = any(r["scenario"] in LATENCY_SCENARIOS for r in measured)
            best = max((r for r in measured if (r["scenario"] in LATENCY_SCENARIOS) == kind), key=_score)
            if best["variant"] == ds.baseline and len({r["variant"] for r in measured if r["platform"] == best["platform"]}) > 1:
                lead = f"Fastest for {model}: the baseline {best['variant']} itself, no variant beats it"
            else:
                lead = f"Fastest for {model}: {best['variant']}"
            out.append(f"{lead} on {best['platform']} ({best['scenario']}, batch {best['batch']}): {_perf(best)}; "
                       f"{_acc(best)}.")
            est = [r for r in rows if r["simulated"] and (r["scenario"] in LATENCY_SCENARIOS) == kind]
            if est:
                e = max(est, key=_score)
                if _score(e) > _score(best):
                    out.append(f"A simulator estimate for {model} is better still: {e['variant']} on {e['platform']}: "
                               f"{_perf(e)} (estimated, not measured).")
        # accuracy cost over all usable rows of the model (accuracy does not depend on the platform much)
        accs = {}
        for r in ds.rows:
            if r["model"] == model and r["status"] == "ok" and r["accuracy_delta"] is not None:
                accs.setdefault(r["variant"], r)
        failed = sorted(v for v, r in accs.items() if r["passed"] is False)
        costly = [r for v, r in accs.items() if v != ds.baseline]
        if costly:
            worst = min(costly, key=lambda r: r["accuracy_delta"])
            text = (f"Accuracy cost for {model}: the largest change is {worst['variant']} "
                    f"{fmt_cell('delta', worst['accuracy_delta'], worst)}")
            text += f"; the accuracy gate fails for {', '.join(failed)}." if failed else "; every variant passes its accuracy gate."
            out.append(text)

    fronts = frontiers(ds.rows)
    for i, ((model, platform), front) in enumerate(fronts.items()):
        if i == MAX_FRONTIER_LINES:
            out.append(f"(and {len(fronts) - MAX_FRONTIER_LINES} more frontiers: see the accuracy vs latency chart)")
            break
        pts = ", ".join(f"{r['variant']} ({'≈' if r['simulated'] else ''}{fmt_num(ns_to_ms(r['p50']))} ms, "
                        f"{fmt_cell('acc', r['accuracy'], r)})" for r in front)
        out.append(f"On the accuracy/latency frontier for {model} on {platform}: {pts}.")

    bad = {s: n for s, n in statuses.items() if s != "ok"}
    if bad:
        out.append(f"{sum(bad.values())} case(s) gave no valid result: "
                   + ", ".join(f"{n} {s}" for s, n in sorted(bad.items())) + " (reasons under Problems).")
    else:
        out.append("Every case ran and was valid.")

    if procurement:
        seen = set()
        for p in procurement:
            k = (p["suite"], p["model"])
            if k in seen or p["rank"] != 1:
                continue
            seen.add(k)
            est = " (estimated)" if p["basis"] == "estimated" else ""
            if p["cost_per_million"] is not None:
                out.append(f"Cheapest for {p['model']} (suite {p['suite']}): {p['platform']}{est} at "
                           f"{fmt_num(p['cost_per_million'])} {currency} per million inferences "
                           f"({p['variant']}, batch {p['batch']}, {fmt_num(p['throughput'])} samples/s).")
            else:
                out.append(f"Highest throughput for {p['model']} (suite {p['suite']}): {p['platform']}{est} at "
                           f"{fmt_num(p['throughput'])} samples/s ({p['variant']}, batch {p['batch']}); "
                           "give --prices for costs.")
    if ds.superseded:
        out.append(f"{ds.superseded} older result(s) of the same case on the same machine are superseded by later "
                   "runs; the latest is shown.")
    if ds.interrupted_runs:
        out.append(f"{len(ds.interrupted_runs)} run(s) were interrupted before every case ran: "
                   + ", ".join(ds.interrupted_runs) + ".")
    return out
