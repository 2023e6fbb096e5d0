"""The report's charts as plotly Figure objects (plotly is imported inside functions).

Charts (keys, in the order the report shows them):

1. ``latency`` — p50/p90/p99 latency per variant and backend, bars with CI error bars;
2. ``throughput`` — throughput vs batch size per backend, lines;
3. ``pareto`` — accuracy vs latency per model, with the Pareto frontier of the variants;
4. ``speedup`` — speedup and size reduction vs the baseline (heatmaps: variant x backend);
5. ``cdf`` — latency distribution (CDF of the raw samples) for chosen cases;
6. ``roofline`` — achieved MAC/s vs arithmetic intensity under the device's peak;
7. ``load`` — server cases: p99 latency against offered load (every QPS step of the peak
   search), the latency bound and the peak found (only when a run has server cases).
8. ``scaling`` — aggregate throughput vs data-parallel replicas (``bench run --replicas``), with the
   ideal line; only in reports whose records have a scaling sweep.

A chart without the data it needs is skipped, with the reason stated in the report.
User-supplied strings are HTML-escaped before they reach plotly (plotly renders a
subset of HTML in labels).
"""
from __future__ import annotations

import fnmatch
import html
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.errors import BenchError
from harness.report.model import Dataset, frontiers, geomean, reference_rows, usable
from harness.units import ns_to_ms

TITLES = {
    "latency": "Latency percentiles per variant and backend",
    "throughput": "Throughput vs batch size per backend",
    "pareto": "Accuracy vs latency: the Pareto frontier of the variants",
    "speedup": "Speedup and size reduction vs the baseline",
    "cdf": "Latency distribution (CDF of raw samples)",
    "roofline": "Roofline: achieved MAC/s vs arithmetic intensity",
    "load": "Server: p99 latency vs offered load (QPS)",
    "scaling": "Data-parallel scaling: throughput vs replicas",
    "llm_latency": "LLM: time to first token and time per output token",
    "llm_tokens": "LLM: output tokens/s vs batch size",
    "llm_perplexity": "LLM: perplexity and zero-shot accuracy vs precision",
}
NO_LLM = "no generative (LLM) case"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
MAX_CDF_CASES = 8
MAX_CDF_POINTS = 400


@dataclass
class Charts:
    figures: dict[str, Any] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _t(s: Any) -> str:
    """Escape a user-supplied string for a plotly label."""
    return html.escape(str(s), quote=False)


def _span(values: list[float]) -> float:
    vals = [v for v in values if v and v > 0]
    return max(vals) / min(vals) if vals else 1.0


def _axis(title: str, values: list[float], log_above: float, **kw) -> dict:
    """An axis, logarithmic when the values span more than ``log_above`` x."""
    span = _span(values)
    if span <= log_above:
        return {"title": title, **kw}
    # label 1-2-5 within a few decades, decades only beyond that
    return {"title": title, "type": "log", "dtick": 1 if span > 1000 else "D2", **kw}


def _si(v: float) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= factor:
            return f"{v / factor:.3g} {prefix}"
    return f"{v:.3g} "


def _layout(fig, title: str, **kw) -> None:
    fig.update_layout(title={"text": title, "x": 0.01}, template="plotly_white", height=kw.pop("height", 460),
                      margin={"l": 60, "r": 20, "t": 60, "b": 60},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0}, **kw)


def _variant_order(rows: list[dict], baseline: str) -> list[str]:
    return sorted({r["variant"] for r in rows}, key=lambda v: (v != baseline, v))


def _est(r: dict) -> str:
    return " (estimated)" if r["simulated"] else ""


# --------------------------------------------------------------------------- 1. latency

def latency_figure(ds: Dataset):
    import plotly.graph_objects as go

    rows = reference_rows(ds.rows)
    if not rows:
        return None, "no usable case has a latency"
    order = {v: i for i, v in enumerate(_variant_order(rows, ds.baseline))}
    rows.sort(key=lambda r: (r["model"], order[r["variant"]]))
    by_platform: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_platform[r["platform"]].append(r)
    fig = go.Figure()
    all_vals = []
    for i, (platform, prs) in enumerate(sorted(by_platform.items())):
        settings = sorted({(r["scenario"], r["batch"]) for r in prs})
        setting = "; ".join(f"{s} b{b}" for s, b in settings)
        outer, inner, ys, plus, minus, hover = [], [], [], [], [], []
        for r in prs:
            for p in ("p50", "p90", "p99"):
                if r[p] is None:
                    continue
                v = ns_to_ms(r[p])
                ci = r[f"{p}_ci"]
                outer.append(_t(f"{r['model']} · {r['variant']}"))
                inner.append(p)
                ys.append(v)
                all_vals.append(v)
                plus.append(ns_to_ms(ci[1]) - v if ci else float("nan"))
                minus.append(v - ns_to_ms(ci[0]) if ci else float("nan"))
                hover.append(_t(f"{r['case_id']} @ {r['machine']}{_est(r)}"))
        sim = any(r["simulated"] for r in prs)
        fig.add_trace(go.Bar(
            x=[outer, inner], y=ys, name=_t(f"{platform} ({setting})") + (" (estimated)" if sim else ""),
            marker={"color": PALETTE[i % len(PALETTE)], "pattern": {"shape": "/" if sim else ""}},
            error_y={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "visible": True},
            customdata=hover, hovertemplate="%{customdata}<br>%{x}: %{y:.4g} ms<extra></extra>"))
    _layout(fig, TITLES["latency"], barmode="group",
            yaxis=_axis("latency (ms)", all_vals, 30))
    return fig, None


# --------------------------------------------------------------------------- 2. throughput

def throughput_figure(ds: Dataset):
    import plotly.graph_objects as go

    lines: dict[tuple, list[dict]] = defaultdict(list)
    for r in ds.rows:
        if usable(r) and r["throughput"]:
            lines[(r["platform"], r["model"], r["variant"], r["scenario"])].append(r)
    if not lines:
        return None, "no usable case has a throughput"
    platforms = sorted({k[0] for k in lines})
    colour = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(platforms)}
    dashes = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
    variants = sorted({k[2] for k in lines}, key=lambda v: (v != ds.baseline, v))
    fig = go.Figure()
    batches, tputs = [], []
    for key in sorted(lines):
        platform, model, variant, scenario = key
        lrs = sorted(lines[key], key=lambda r: r["batch"])
        batches += [r["batch"] for r in lrs]
        tputs += [r["throughput"] for r in lrs]
        sim = any(r["simulated"] for r in lrs)
        fig.add_trace(go.Scatter(
            x=[r["batch"] for r in lrs], y=[r["throughput"] for r in lrs], mode="lines+markers",
            name=_t(f"{model} · {variant} · {scenario} · {platform}") + (" (estimated)" if sim else ""),
            line={"color": colour[platform], "dash": dashes[variants.index(variant) % len(dashes)]},
            hovertemplate=_t(f"{model} · {variant} @ {platform}") + "<br>batch %{x}: %{y:.4g} samples/s<extra></extra>"))
    _layout(fig, TITLES["throughput"],
            xaxis=_axis("batch size", batches, 4, tickvals=sorted(set(batches)), dtick=None),
            yaxis=_axis("throughput (samples/s)", tputs, 30))
    return fig, None


# --------------------------------------------------------------------------- 3. pareto

def pareto_figure(ds: Dataset):
    import plotly.graph_objects as go

    fronts = frontiers(ds.rows)
    if not fronts:
        return None, "no usable case has both an accuracy value and a latency"
    points: dict[tuple, list[dict]] = defaultdict(list)
    for r in reference_rows(ds.rows):
        if r["accuracy"] is not None:
            points[(r["model"], r["platform"])].append(r)
    fig = go.Figure()
    metrics = sorted({str(r["accuracy_metric"]) for ps in points.values() for r in ps if r["accuracy_metric"]})
    for i, (key, front) in enumerate(fronts.items()):
        model, platform = key
        c = PALETTE[i % len(PALETTE)]
        on = {id(r) for r in front}
        ps = sorted(points[key], key=lambda r: r["p50"])
        group = _t(f"{model} · {platform}")
        fig.add_trace(go.Scatter(
            x=[ns_to_ms(r["p50"]) for r in ps], y=[r["accuracy"] for r in ps], mode="markers+text",
            text=[_t(r["variant"]) for r in ps], textposition="top center", name=group, legendgroup=group,
            marker={"color": c, "size": 11, "symbol": ["circle" if id(r) in on else "circle-open" for r in ps]},
            customdata=[_t(f"{r['variant']}{_est(r)}; gate {'pass' if r['passed'] else 'FAIL' if r['passed'] is False else 'n/a'}")
                        for r in ps],
            hovertemplate="%{customdata}<br>p50 %{x:.4g} ms, accuracy %{y:.4g}<extra></extra>"))
        fig.add_trace(go.Scatter(
            x=[ns_to_ms(r["p50"]) for r in front], y=[r["accuracy"] for r in front], mode="lines",
            line={"color": c, "shape": "hv", "width": 2}, name=group + " frontier", legendgroup=group,
            hoverinfo="skip"))
    xs = [ns_to_ms(r["p50"]) for ps in points.values() for r in ps]
    _layout(fig, TITLES["pareto"],
            xaxis=_axis("p50 latency (ms)", xs, 8),
            yaxis={"title": "accuracy" + (f" ({_t(', '.join(metrics))})" if metrics else "")})
    return fig, None


# --------------------------------------------------------------------------- 4. speedup heatmap

def speedup_figure(ds: Dataset):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [r for r in ds.rows if usable(r)]
    if not any(r["speedup"] for r in rows) and not any(r["size_reduction"] for r in rows):
        return None, (f"no case could be paired with a baseline '{ds.baseline}' case of the same model, backend, "
                      "runtime, scenario and batch on the same machine")
    variants = _variant_order(rows, ds.baseline)
    platforms = sorted({r["platform"] for r in rows})
    cells: dict[tuple, dict[str, list]] = defaultdict(lambda: {"speedup": [], "size_reduction": []})
    for r in rows:
        for k in ("speedup", "size_reduction"):
            cells[(r["variant"], r["platform"])][k].append(r[k])
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=(f"speedup vs {_t(ds.baseline)} (geometric mean)",
                                        f"model size reduction vs {_t(ds.baseline)}"))
    for col, (metric, scale) in enumerate((("speedup", "RdBu"), ("size_reduction", "Greens")), 1):
        z, text = [], []
        for v in variants:
            zr, tr = [], []
            for p in platforms:
                g = geomean(cells[(v, p)][metric]) if (v, p) in cells else None
                zr.append(g)
                tr.append(f"{g:.2f}×" if g else "")
            z.append(zr)
            text.append(tr)
        kw = {"zmid": 1.0} if metric == "speedup" else {}
        fig.add_trace(go.Heatmap(
            z=z, x=[_t(p) for p in platforms], y=[_t(v) for v in variants], text=text, texttemplate="%{text}",
            colorscale=scale, showscale=False, name=metric.replace("_", " "), hoverongaps=False,
            hovertemplate="%{y} @ %{x}: %{text}<extra>" + metric.replace("_", " ") + "</extra>", **kw),
            row=1, col=col)
    _layout(fig, TITLES["speedup"], height=max(360, 120 + 45 * len(variants)))
    fig.update_xaxes(tickangle=-20)
    return fig, None


# --------------------------------------------------------------------------- 5. CDF

def cdf_rows(ds: Dataset, patterns: list[str] | None = None) -> list[dict]:
    """The cases whose latency distribution is drawn.

    ``patterns`` (globs or substrings) are matched against ``case_id`` and
    ``machine:case_id``; without them: per model and platform, the baseline and the
    fastest other variant at the reference setting (at most 8 cases).
    """
    with_samples = [r for r in ds.rows if r["samples"] and not r["simulated"] and r["status"] in ("ok", "invalid")]
    if patterns:
        chosen = []
        for r in with_samples:
            names = (r["case_id"], f"{r['machine']}:{r['case_id']}")
            if any(fnmatch.fnmatchcase(n, p) or p in n for p in patterns for n in names):
                chosen.append(r)
        if not chosen:
            raise BenchError(f"--cdf {' '.join(patterns)}: matches no case with raw samples "
                             f"(case ids look like {with_samples[0]['case_id'] if with_samples else 'model/variant/...'})")
        return chosen[:MAX_CDF_CASES * 4]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in reference_rows(ds.rows):
        if r["samples"] and not r["simulated"]:
            groups[(r["model"], r["platform"])].append(r)
    chosen = []
    for key in sorted(groups):
        g = groups[key]
        base = [r for r in g if r["variant"] == ds.baseline]
        others = sorted((r for r in g if r["variant"] != ds.baseline), key=lambda r: r["p50"])
        chosen += base[:1] + others[:1]
    return chosen[:MAX_CDF_CASES]


def cdf_figure(ds: Dataset, patterns: list[str] | None = None):
    import numpy as np
    import plotly.graph_objects as go

    rows = cdf_rows(ds, patterns)
    if not rows:
        return None, "no case has raw latency samples (simulated cases have none by design)"
    fig = go.Figure()
    xs = []
    for i, r in enumerate(rows):
        s = np.sort(np.asarray(r["samples"], dtype=float)) / 1e6
        n = len(s)
        idx = np.unique(np.linspace(0, n - 1, min(n, MAX_CDF_POINTS)).round().astype(int))
        xs += [float(s[0]), float(s[-1])]
        fig.add_trace(go.Scatter(
            x=s[idx], y=(idx + 1) / n, mode="lines", line={"shape": "hv", "color": PALETTE[i % len(PALETTE)]},
            name=_t(f"{r['case_id']} @ {r['machine']}") + (" (invalid)" if r["status"] == "invalid" else ""),
            hovertemplate="%{x:.4g} ms: %{y:.1%} of iterations<extra></extra>"))
    _layout(fig, TITLES["cdf"], xaxis=_axis("latency per iteration (ms)", xs, 8),
            yaxis={"title": "fraction of iterations ≤ x", "range": [0, 1.02], "tickformat": ".0%"})
    return fig, None


# --------------------------------------------------------------------------- 7. load

def load_figure(ds: Dataset):
    """One line per server case: every QPS step tried (sorted by QPS), p99 in ms (the
    early-stopping estimate where recorded), valid steps filled, invalid hollow; the bound dashed."""
    import plotly.graph_objects as go

    rows = [r for r in ds.rows if r["scenario"] == "server" and r["load_steps"] and not r["simulated"]]
    if not rows:
        return None, "no server case with load-generator steps"
    fig = go.Figure()
    ys, xs = [], []
    for i, r in enumerate(rows):
        steps = sorted((s for s in r["load_steps"] if s.get("qps") or s.get("target_qps")),
                       key=lambda s: s.get("qps") or s.get("target_qps"))
        x = [s.get("qps") or s.get("target_qps") for s in steps]
        y = [ns_to_ms(s.get("p99_early_stopping_ns") or s.get("p99_ns")) for s in steps]
        color = PALETTE[i % len(PALETTE)]
        name = _t(f"{r['case_id']} @ {r['machine']}")
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=name, line={"color": color},
            marker={"symbol": ["circle" if s.get("valid") else "circle-open" for s in steps], "size": 9},
            hovertemplate="%{x:,.0f} QPS: p99 %{y:.4g} ms<extra></extra>"))
        bound = ns_to_ms(next((s.get("bound_ns") for s in steps if s.get("bound_ns")), None))
        if bound:
            fig.add_trace(go.Scatter(x=[min(x), max(x)], y=[bound, bound], mode="lines", showlegend=False,
                                     line={"color": color, "dash": "dash"}, hoverinfo="skip"))
            ys.append(bound)
        xs += x
        ys += [v for v in y if v is not None]
    _layout(fig, TITLES["load"], xaxis=_axis("offered load (queries/s)", xs, 8),
            yaxis=_axis("p99 latency (ms)", ys, 30))
    return fig, None


# --------------------------------------------------------------------------- 6. roofline

def roofline_figure(ds: Dataset):
    import numpy as np
    import plotly.graph_objects as go

    pts = [r for r in ds.rows if usable(r) and r["throughput"] and r["macs"] and r["model_bytes"]]
    if not pts:
        return None, "no usable case has MACs, model bytes and a throughput (complexity not recorded)", []
    with_peak = [r for r in pts if r["peak_macs_per_s"]]
    unknown = sorted({r["platform"] for r in pts if not r["peak_macs_per_s"]})
    if not with_peak:
        return None, ("the peak MAC/s of no device is known: record backend_info.peak_macs_per_s, or give "
                      "peak_gmacs (and memory_gbps) for the machine in the --prices file"), unknown
    fig = go.Figure()
    by_platform: dict[str, list[dict]] = defaultdict(list)
    for r in with_peak:
        by_platform[r["platform"]].append(r)

    def intensity(r):  # MACs per byte of weights, weights read once per batch
        return r["macs"] * r["batch"] / r["model_bytes"]

    ix = [intensity(r) for r in with_peak]
    lo, hi = min(ix) / 4, max(ix) * 4
    for i, (platform, prs) in enumerate(sorted(by_platform.items())):
        c = PALETTE[i % len(PALETTE)]
        peak = max(r["peak_macs_per_s"] for r in prs)
        src = sorted({r["peak_source"] for r in prs if r["peak_source"]})
        bw = max((r["memory_bandwidth"] or 0) for r in prs) or None
        if bw:
            lo = min(lo, peak / bw / 4)
            hi = max(hi, peak / bw * 4)
        sim = any(r["simulated"] for r in prs)
        fig.add_trace(go.Scatter(
            x=[intensity(r) for r in prs], y=[r["macs"] * r["throughput"] for r in prs], mode="markers",
            marker={"color": c, "size": 10, "symbol": "diamond" if sim else "circle"},
            name=_t(platform) + (" (estimated)" if sim else ""), legendgroup=_t(platform),
            customdata=[_t(f"{r['model']} · {r['variant']} b{r['batch']}") for r in prs],
            hovertemplate="%{customdata}<br>%{x:.3g} MAC/B, %{y:.3g} MAC/s<extra></extra>"))
        roof_x = np.logspace(math.log10(lo), math.log10(hi), 64)
        roof_y = np.minimum(peak, bw * roof_x) if bw else np.full_like(roof_x, peak)
        fig.add_trace(go.Scatter(
            x=roof_x, y=roof_y, mode="lines", line={"color": c, "dash": "dash"}, legendgroup=_t(platform),
            name=_t(f"{platform} peak {_si(peak)}MAC/s ({', '.join(src)})"), hoverinfo="skip"))
    _layout(fig, TITLES["roofline"],
            xaxis={"title": "arithmetic intensity (MACs per weight byte)", "type": "log", "dtick": 1},
            yaxis={"title": "achieved MAC/s", "type": "log", "dtick": 1})
    return fig, None, unknown


# --------------------------------------------------------------------------- all

def scaling_figure(ds: Dataset):
    """Aggregate throughput against replica count per case (measured points), with the ideal
    line N x X(1) dashed; the hover gives the efficiency X(N) / (N X(1))."""
    import plotly.graph_objects as go

    rows = [r for r in ds.rows if r.get("scaling") and usable(r)]
    if not rows:
        return None, "no usable case has a scaling sweep (bench run --replicas 1,2,...)"
    fig = go.Figure()
    xs, ys = [], []
    for i, r in enumerate(sorted(rows, key=lambda r: (r["platform"], r["case_id"]))):
        s = r["scaling"]
        pts = [(n, t, e) for n, t, e in zip(s.get("replicas") or [], s.get("throughput") or [],
                                            s.get("efficiency") or []) if t]
        if not pts:
            continue
        colour = PALETTE[i % len(PALETTE)]
        name = _t(f"{r['model']} · {r['variant']} · b{r['batch']} · {r['platform']} ({s.get('placement', '?')})")
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name, line={"color": colour},
            customdata=[p[2] for p in pts],
            hovertemplate=name + "<br>%{x} replicas: %{y:.4g} samples/s, efficiency %{customdata:.2f}<extra></extra>"))
        one = next((p[1] for p in pts if p[0] == 1), None)
        if one:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[0] * one for p in pts], mode="lines",
                                     name=name + " · ideal", line={"color": colour, "dash": "dot"},
                                     hoverinfo="skip"))
        xs += [p[0] for p in pts]
        ys += [p[1] for p in pts]
    if not xs:
        return None, "no scaling sweep has a measured point"
    _layout(fig, TITLES["scaling"], xaxis=_axis("replicas", xs, 1e9, tickvals=sorted(set(xs)), dtick=None),
            yaxis=_axis("aggregate throughput (samples/s)", ys, 30))
    return fig, None


# --------------------------------------------------------------------------- 7-9. generative LLM cases

def _llm_rows(ds: Dataset) -> list[dict]:
    return [r for r in ds.rows if usable(r) and r.get("tpot_p50") is not None]


def llm_latency_figure(ds: Dataset):
    """TTFT and TPOT (p50 bars, p99 whiskers) per model/variant/platform, single-stream cases."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [r for r in _llm_rows(ds) if r["scenario"] == "single-stream"]
    if not rows:
        return None, NO_LLM
    rows.sort(key=lambda r: (r["model"], r["variant"] != ds.baseline, r["variant"], r["platform"]))
    labels = [_t(f"{r['model']} · {r['variant']} · {r['platform']}") for r in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("TTFT (ms)", "TPOT (ms)"))
    for col, key in ((1, "ttft"), (2, "tpot")):
        p50 = [ns_to_ms(r[f"{key}_p50"]) for r in rows]
        p99 = [ns_to_ms(r[f"{key}_p99"]) for r in rows]
        fig.add_trace(go.Bar(x=labels, y=p50, name=f"{key.upper()} p50", marker_color=PALETTE[col - 1],
                             error_y={"type": "data", "symmetric": False,
                                      "array": [(b - a) if a is not None and b is not None else 0
                                                for a, b in zip(p50, p99)]},
                             hovertemplate="%{x}<br>p50 %{y:.4g} ms<extra></extra>"), row=1, col=col)
    _layout(fig, TITLES["llm_latency"])
    return fig, None


def llm_tokens_figure(ds: Dataset):
    """Aggregate output tokens/s against batch size per model/variant/platform."""
    import plotly.graph_objects as go

    lines: dict[tuple, list[dict]] = defaultdict(list)
    for r in _llm_rows(ds):
        if r["tokens_per_s"]:
            lines[(r["platform"], r["model"], r["variant"])].append(r)
    if not lines:
        return None, NO_LLM
    fig = go.Figure()
    batches = []
    for i, key in enumerate(sorted(lines)):
        lrs = sorted(lines[key], key=lambda r: r["batch"])
        batches += [r["batch"] for r in lrs]
        fig.add_trace(go.Scatter(x=[r["batch"] for r in lrs], y=[r["tokens_per_s"] for r in lrs],
                                 mode="lines+markers", name=_t(f"{key[1]} · {key[2]} · {key[0]}"),
                                 line={"color": PALETTE[i % len(PALETTE)]},
                                 hovertemplate="batch %{x}: %{y:.4g} tokens/s<extra></extra>"))
    _layout(fig, TITLES["llm_tokens"], xaxis={"title": "batch size", "tickvals": sorted(set(batches))},
            yaxis={"title": "output tokens/s (aggregate)"})
    return fig, None


def llm_perplexity_figure(ds: Dataset):
    """Perplexity (bars, lower is better) and zero-shot accuracy (markers) per variant."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [r for r in ds.rows if r.get("perplexity") is not None and r["status"] in ("ok", "invalid")]
    if not rows:
        return None, NO_LLM
    rows.sort(key=lambda r: (r["model"], r["variant"] != ds.baseline, r["variant"], r["platform"]))
    labels = [_t(f"{r['model']} · {r['variant']} ({r['precision']})") for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=labels, y=[r["perplexity"] for r in rows], name="perplexity",
                         marker_color=PALETTE[0]), secondary_y=False)
    fig.add_trace(go.Scatter(x=labels, y=[100 * r["zero_shot"] if r["zero_shot"] is not None else None
                                          for r in rows], name="zero-shot accuracy (%)", mode="markers",
                             marker={"color": PALETTE[1], "size": 11}), secondary_y=True)
    _layout(fig, TITLES["llm_perplexity"])
    fig.update_yaxes(title_text="perplexity (lower is better)", secondary_y=False)
    fig.update_yaxes(title_text="zero-shot accuracy (%)", secondary_y=True)
    return fig, None


def build_charts(ds: Dataset, cdf_cases: list[str] | None = None) -> Charts:
    """Every chart, its caption (plain text) and, for a chart not drawn, the reason."""
    charts = Charts()
    base = ds.baseline
    left_out = " Invalid, failed, skipped and unsupported cases are left out (see Problems)."
    makers = {
        "latency": (latency_figure,
                    "p50, p90 and p99 latency (ms) of each variant at its reference setting (single-stream and the "
                    "smallest batch where run), one bar group per backend/runtime and machine; error bars are the "
                    "confidence intervals recorded with the percentiles (p50 always, p90/p99 when recorded). "
                    "Hatched bars are simulator estimates (FPGA), not measurements." + left_out),
        "throughput": (throughput_figure,
                       "Throughput (samples/s) against batch size, one colour per backend/runtime and machine, "
                       "one dash style per variant. A line with one point means only one batch size was run."
                       + left_out),
        "pareto": (pareto_figure,
                   "Accuracy against p50 latency per model and platform at the reference setting. Filled markers "
                   "are on the Pareto frontier (no other variant is both faster and more accurate), joined by the "
                   "frontier step line; hollow markers are dominated." + left_out),
        "speedup": (speedup_figure,
                    f"Left: speedup vs the '{base}' variant of the same model, backend, runtime, scenario and batch on "
                    "the same machine (p50 ratio for single-/multi-stream, throughput ratio for offline/server), "
                    f"geometric mean over models, batches and scenarios. Right: model size of '{base}' divided by "
                    "the variant's. Above 1× is better; blank cells have no pair." + left_out),
        "cdf": (lambda d: cdf_figure(d, cdf_cases),
                "Cumulative distribution of the raw per-iteration latencies of the chosen cases (by default the "
                "baseline and the fastest other variant per model and platform; choose with --cdf). A steep curve "
                "is a stable latency; a long right tail shows outliers. Simulated (FPGA) cases have no samples."),
        "roofline": (roofline_figure,
                     "Achieved MAC/s (MACs per sample × samples/s) against arithmetic intensity (MACs per byte of "
                     "weights, weights read once per batch: activations are not counted), under each device's peak "
                     "(dashed: flat at the peak MAC/s, sloped by memory bandwidth where known). The source of the "
                     "peak (measured, nominal from the prices file, or estimated) is in the legend." + left_out),
    }
    if any(r["scenario"] == "server" and r["load_steps"] for r in ds.rows):
        makers["load"] = (load_figure,
                          "Server cases: p99 latency (early-stopping estimate, ms) at every offered load the peak-QPS "
                          "search tried (ramp, then bisection), one line per case; filled markers are valid steps, "
                          "hollow ones invalid; the dashed line is the case's latency bound. The headline max QPS is "
                          "the highest filled marker. Latency counts from each query's scheduled arrival.")
    if any(r.get("scaling") for r in ds.rows):  # only runs with --replicas have this chart
        makers["scaling"] = (scaling_figure,
                             "Aggregate throughput (all replicas' samples over the union of their windows) "
                             "against the number of data-parallel replicas (processes pinned to disjoint cores, or "
                             "one per Ray node), each on its own shard of the queries; dotted: the ideal N x one "
                             "replica. Efficiency = throughput(N) / (N x throughput(1)) is in the hover and the "
                             "case records." + left_out)
    makers.update({
        "llm_latency": (llm_latency_figure,
                        "Generative (LLM) single-stream cases: p50 time to first token and time per output token "
                        "(bars) with p99 whiskers, first (prompt, output) length point of each case."),
        "llm_tokens": (llm_tokens_figure,
                       "Generative (LLM) cases: aggregate output tokens/s against batch size (static batching; "
                       "batch 1 is single-stream)."),
        "llm_perplexity": (llm_perplexity_figure,
                           "Generative (LLM) variants: perplexity on the held text (bars, lower is better) and "
                           "zero-shot sentiment accuracy (markers), as measured through each variant's session."),
    })
    for name, (make, caption) in makers.items():
        fig, reason, *extra = make(ds)
        if fig is None and reason == NO_LLM:
            continue  # a report without LLM cases does not mention the LLM charts
        if extra and extra[0] and fig is not None:
            caption += " Not drawn, peak unknown: " + ", ".join(extra[0]) + "."
        if fig is None:
            charts.skipped[name] = reason
        else:
            charts.figures[name] = fig
        charts.captions[name] = caption
    return charts
