"""One self-contained HTML file: plotly.js embedded (opens offline), sortable tables.

Every user-supplied string (model, variant, hostname, reasons, ...) goes through
:func:`html.escape`; figure JSON is embedded with ``<`` escaped, so no record can
break out of a ``<script>``.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any

from harness import __version__
from harness.report.charts import TITLES
from harness.report.frames import COLUMNS, ESTIMATED_COLUMNS, ESTIMATED_KINDS, estimated, fmt_cell

#: columns of the cases table shown in the page (the CSV and DataFrame have them all)
HTML_CASE_COLUMNS = ["machine", "suite", "model", "variant", "backend", "runtime", "precision", "batch", "scenario",
                     "status", "basis", "p50_ms", "p90_ms", "p99_ms", "throughput_per_s", "speedup",
                     "size_reduction", "mac_reduction", "sparsity", "accuracy", "accuracy_delta", "gate_verdict",
                     "valid", "notes"]
NUMERIC_KINDS = ("num", "ratio", "pct", "int", "acc", "delta", "money")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1500px;padding:0 20px 40px;color:#1b1f24;line-height:1.4}
h1{margin:18px 0 4px}h2{margin-top:32px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;font-size:0.9em}
dl.header{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0}
dl.header dt{font-weight:600}dl.header dd{margin:0}
nav a{margin-right:14px}
.findings{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px 14px 8px 30px}
.findings li{margin:4px 0}
.tablewrap{overflow-x:auto;max-height:75vh;overflow-y:auto;border:1px solid #d0d7de;border-radius:6px}
table{border-collapse:collapse;font-size:0.85em;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #eaeef2;text-align:left;white-space:nowrap;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
td.notes{white-space:normal;min-width:240px;max-width:520px}
th{background:#f6f8fa;position:sticky;top:0;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.st-failed td,tr.st-invalid td{background:#fff1f0}tr.st-skipped td,tr.st-unsupported td{background:#fff8e6}
tr.est td{font-style:italic;color:#4a3b8f}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:0.85em;font-style:normal}
.b-ok{background:#dafbe1}.b-invalid,.b-failed,.b-FAIL{background:#ffd8d3}.b-skipped,.b-unsupported{background:#fff1c2}
.b-est{background:#e8e1ff}.b-pass{background:#dafbe1}
figure{margin:24px 0;border:1px solid #d0d7de;border-radius:6px;padding:8px}
figcaption{color:#3d444d;font-size:0.9em;padding:4px 8px}
.chart{width:100%;min-height:360px}
.skipped{border:1px dashed #d0d7de;border-radius:6px;padding:10px 14px;color:#57606a;margin:16px 0}
.empty{color:#57606a}
"""

SORT_JS = """
(function(){
  function key(cell){var v=cell.getAttribute('data-v');return v===null?cell.textContent.trim():v;}
  function cmp(a,b){
    var x=Number(a),y=Number(b);
    if(!isNaN(x)&&!isNaN(y))return x-y;
    return a.localeCompare(b,undefined,{numeric:true});
  }
  document.querySelectorAll('table.sortable').forEach(function(t){
    t.querySelectorAll('thead th').forEach(function(th,i){
      th.title='click to sort';
      th.addEventListener('click',function(){
        var asc=th.getAttribute('aria-sort')!=='ascending';
        t.querySelectorAll('thead th').forEach(function(o){o.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',asc?'ascending':'descending');
        var body=t.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(r1,r2){
          var a=key(r1.cells[i]),b=key(r2.cells[i]);
          if(a==='')return b===''?0:1; if(b==='')return -1;
          return asc?cmp(a,b):cmp(b,a);
        });
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
})();
"""


def esc(value: Any) -> str:
    """The one HTML escaper (:func:`harness.safe.html_text`); None is empty."""
    from harness.safe import html_text

    return "" if value is None else html_text(value)


def _raw(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return None if value != value else repr(float(value))  # NaN -> no sort value
    return None


def _cell(col: str, kind: str, value: Any, row: dict) -> str:
    text = fmt_cell(kind, value, row)
    if text and col in ESTIMATED_COLUMNS and kind in ESTIMATED_KINDS and estimated(row):
        text = "≈" + text
    attrs = []
    raw = _raw(value) if kind in NUMERIC_KINDS else None
    if raw is not None:
        attrs.append(f'data-v="{raw}"')
    classes = []
    if kind in NUMERIC_KINDS:
        classes.append("n")
    if col in ("notes", "reasons"):
        classes.append("notes")
    if classes:
        attrs.append(f'class="{" ".join(classes)}"')
    inner = esc(text)
    if kind in ("status", "verdict") and text:
        inner = f'<span class="badge b-{esc(text)}">{esc(text)}</span>'
    elif col == "basis" and text == "estimated":
        inner = '<span class="badge b-est">estimated</span>'
    return f"<td {' '.join(attrs)}>{inner}</td>" if attrs else f"<td>{inner}</td>"


def table_html(name: str, df, columns: list[str] | None = None) -> str:
    spec = COLUMNS[name]
    cols = [c for c in (columns or list(spec)) if c in df.columns]
    records = df.to_dict("records")
    if not records:
        return f'<p class="empty" id="table-{name}-empty">none</p>'
    head = "".join(f'<th scope="col">{esc(spec[c][0])}</th>' for c in cols)
    body = []
    for row in records:
        row = {k: (None if (isinstance(v, float) and v != v) else v) for k, v in row.items()}
        classes = [f"st-{esc(row.get('status'))}"] if row.get("status") else []
        if estimated(row):
            classes.append("est")
        cells = "".join(_cell(c, spec[c][1], row.get(c), row) for c in cols)
        body.append(f'<tr class="{" ".join(classes)}">{cells}</tr>')
    return (f'<div class="tablewrap"><table id="table-{name}" class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _varying(df, cols: list[str]) -> list[str]:
    """Drop machine/suite/basis columns that hold one value only."""
    out = []
    for c in cols:
        if c in ("machine", "suite", "basis") and c in df.columns and df[c].nunique(dropna=False) <= 1:
            continue
        out.append(c)
    return out


def _figure_json(fig) -> str:
    import plotly.io as pio

    text = pio.to_json(fig, validate=False, pretty=False)
    # to_json already writes "<" as \\u003c; make sure no "</" or "-->" can close the script
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def render_html(report, *, generated_at: _dt.datetime | None = None) -> str:
    h = report.header()
    tabs = report.tables
    charts = report.charts
    now = (generated_at or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    machines = tabs["machines"].to_dict("records")

    parts: list[str] = []
    parts.append(f"<header><h1>{esc(h['title'])}</h1>"
                 f'<p class="meta">Generated {esc(now.strftime("%Y-%m-%d %H:%M UTC"))} by bench {esc(__version__)} '
                 f"from {h['runs']} run record(s), {h['cases']} case(s).</p><dl class=\"header\">")
    mach = "; ".join(f"{m['machine']} — {m['cpu'] or '?'}" + (f", GPUs: {m['gpus']}" if m["gpus"] != "none" else "")
                     for m in machines)
    rows = [("Machines", mach), ("Suites", ", ".join(h["suites"])),
            ("Dates", f"{h['first'] or '?'} — {h['last'] or '?'}"),
            ("bench version", ", ".join(h["bench_versions"])),
            ("Baseline variant", h["baseline"]),
            ("Prices", h["prices"] or "none given (cost columns need --prices)")]
    parts.extend(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    parts.append("</dl>")
    toc = [("findings", "Key findings"), ("cases", "Results"), ("problems", "Problems")]
    if "procurement" in tabs:
        toc.append(("procurement", "Procurement"))
    toc += [("charts", "Charts")] + ([("trends", "Trends")] if report.history else [])
    toc += [("machines", "Machines"), ("notes", "How to read")]
    parts.append("<nav>" + "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in toc) + "</nav></header>")

    parts.append('<section id="findings"><h2>Key findings</h2><ul class="findings">'
                 + "".join(f"<li>{esc(f)}</li>" for f in report.findings) + "</ul></section>")

    cases = tabs["cases"]
    parts.append('<section id="cases"><h2>Results per case</h2>'
                 f"<p>Latency in ms (p50/p90/p99), throughput in samples/s; speedup, size ÷ and MACs ÷ are "
                 f"relative to the '{esc(h['baseline'])}' variant of the same model, backend, runtime, scenario and "
                 "batch on the same machine. Rows marked <span class=\"badge b-est\">estimated</span> (≈, italic) "
                 "are FPGA figures from a simulator's cycle model, not measurements. Click a header to sort.</p>"
                 + table_html("cases", cases, _varying(cases, HTML_CASE_COLUMNS)) + "</section>")

    problems = tabs["problems"]
    parts.append('<section id="problems"><h2>Problems</h2><p>Cases that are invalid, failed, skipped or '
                 f"unsupported ({len(problems)}), with their reasons.</p>" + table_html("problems", problems)
                 + "</section>")

    if "procurement" in tabs:
        proc = tabs["procurement"]
        parts.append('<section id="procurement"><h2>Procurement</h2>'
                     f"<p>Per suite and model, each machine/backend's best usable configuration (highest throughput "
                     f"that passes its accuracy gate), ranked by cost per million inferences ({esc(report.currency)}) "
                     "where priced, else by throughput. Power is <b>measured</b> where the record has energy, else "
                     "the <b>nameplate</b> watts of the prices file (labelled in the power source column). "
                     "Estimated rows are FPGA simulator figures.</p>"
                     + table_html("procurement", proc) + "</section>")

    parts.append('<section id="charts"><h2>Charts</h2>')
    for name, title in TITLES.items():
        if name not in charts.captions:  # a chart this report has no use for (e.g. scaling without --replicas)
            continue
        if name in charts.figures:
            parts.append(f'<figure id="figure-{name}"><div class="chart" id="chart-{name}"></div>'
                         f"<figcaption><b>{esc(title)}.</b> {esc(charts.captions[name])}</figcaption></figure>")
        elif name in charts.skipped:  # LLM charts are neither drawn nor mentioned without LLM cases
            parts.append(f'<div class="skipped" id="skipped-{name}"><b>{esc(title)}: not drawn.</b> '
                         f"{esc(charts.skipped.get(name, ''))}</div>")
    parts.append("</section>")

    trends = report.trend_figures
    if report.history:
        parts.append('<section id="trends"><h2>Trends</h2><p>Per case, the p50 latency of every run of the same '
                     "machine over time, with the fitted levels of an L1 step fit; red/green lines mark lasting "
                     "regressions/improvements, an orange dashed line a change not yet confirmed by a later run, "
                     "crosses one-run blips.</p>")
        if not trends:
            parts.append('<div class="skipped">No case has more than one run on the same machine yet.</div>')
        for i, _ in enumerate(trends):
            parts.append(f'<figure id="figure-trend-{i}"><div class="chart" id="chart-trend-{i}"></div></figure>')
        parts.append("</section>")

    parts.append('<section id="machines"><h2>Machines</h2>' + table_html("machines", tabs["machines"]) + "</section>")
    parts.append('<section id="notes"><h2>How to read</h2><ul>'
                 "<li>Status <b>invalid</b>: the case ran but its measurement failed a validity check "
                 "(reasons in Problems); such rows are left out of charts and rankings.</li>"
                 "<li>Gate verdict: whether the variant's accuracy stayed within its gate of the baseline.</li>"
                 "<li>When several runs hold the same case on the same machine, the latest result is shown.</li>"
                 "<li>Roofline intensity counts MACs per byte of weights (weights read once per batch).</li>"
                 "</ul></section>")

    fig_specs = {name: _figure_json(fig) for name, fig in charts.figures.items()}
    fig_specs.update({f"trend-{i}": _figure_json(fig) for i, fig in enumerate(trends)})
    plots = ",\n".join(
        f'draw("chart-{name}", {spec})' for name, spec in fig_specs.items())
    script = ("(function(){var cfg={responsive:true,displaylogo:false};"
              "function draw(id,f){return Plotly.newPlot(id,f.data,f.layout||{},cfg);}"
              f"var done=[{plots}];"
              "Promise.all(done).then(function(){window.benchChartsDone=true;},"
              "function(e){window.benchChartsError=String(e);console.error(e);});})();")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(h['title'])}</title><style>{CSS}</style>"
            f'<script type="text/javascript">{plotly_js()}</script></head>\n<body>\n'
            + "\n".join(parts)
            + f"\n<script>{SORT_JS}</script>\n<script>{script}</script>\n</body></html>\n")
