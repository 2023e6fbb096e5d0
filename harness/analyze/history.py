"""History of a machine's runs: per-case series over time, step detection, trend charts.

The run files stay the source of truth; this module only queries them. With the
``history`` extra installed (``pip install 'bench[history]'``) DuckDB reads the JSON files
directly and returns only the columns needed (no raw samples); without it the same table
is built with the standard ``json`` module and pandas. Both engines give the same columns:

=================  =============================================================
index_runs         one row per run: path, run_id, started_at, machine_id,
                   hostname, cpu, suite, git_sha, interrupted, n_cases
load_history       one row per run x case: the run columns plus key, case_id,
                   model, variant, backend, runtime, precision, batch, scenario,
                   device, status, simulated, n, p50, p90, p99, mean, cv,
                   ci_rel_halfwidth, throughput, accuracy
=================  =============================================================

:func:`analyze` turns each (machine, case) series into a :class:`CaseHistory` with the
steps found by :func:`harness.analyze.changes.detect_steps`; :func:`trend_figures` draws them
(plotly) for ``bench report --history``.
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from harness.analyze.changes import DEFAULT_ALPHA, HIGHER, LOWER, REGRESSION, StepFit, detect_steps, lookback_zscore
from harness.errors import BenchError
from harness.store.flatten import case_fields, run_fields
from harness.units import fmt_metric, time_unit

__all__ = [
    "RUN_COLUMNS", "CASE_COLUMNS", "METRIC_COLUMNS", "engine_name", "index_runs", "load_history",
    "history_frame", "CaseHistory", "analyze", "trend_figures", "render_text", "render_markdown", "to_json",
]

RUN_COLUMNS = ["path", "run_id", "started_at", "machine_id", "hostname", "cpu", "suite", "git_sha", "interrupted",
               "n_cases"]
CASE_COLUMNS = ["key", "case_id", "model", "variant", "backend", "runtime", "precision", "batch", "scenario", "device",
                "status", "simulated", "n", "p50", "p90", "p99", "mean", "cv", "ci_rel_halfwidth", "throughput",
                "accuracy"]
#: metric name -> (column, better)
METRIC_COLUMNS = {"p50": ("p50", LOWER), "p90": ("p90", LOWER), "p99": ("p99", LOWER),
                  "throughput": ("throughput", HIGHER), "accuracy": ("accuracy", HIGHER)}

#: The parts of a record the history needs, as a DuckDB ``json_transform`` structure: DuckDB
#: reads each file as one JSON value and keeps only these fields (values of the wrong type
#: become NULL, as pandas' ``to_numeric(errors="coerce")`` makes them NaN).
_RUN_STRUCTURE = {
    "schema_version": "BIGINT", "run_id": "VARCHAR", "started_at": "VARCHAR", "interrupted": "BOOLEAN",
    "suite": {"name": "VARCHAR"}, "bench": {"git_sha": "VARCHAR"},
    "environment": {"machine_id": "VARCHAR", "hostname": "VARCHAR", "cpu": {"model": "VARCHAR"}},
}
_CASE_STRUCTURE = {
    "key": "VARCHAR", "case_id": "VARCHAR", "model": "VARCHAR", "variant": "VARCHAR", "backend": "VARCHAR",
    "runtime": "VARCHAR", "precision": "VARCHAR", "batch": "BIGINT", "scenario": "VARCHAR", "device": "VARCHAR",
    "status": "VARCHAR", "simulated": "BOOLEAN",
    "latency_ns": {k: ("BIGINT" if k == "n" else "DOUBLE") for k in ("n", "p50", "p90", "p99", "mean", "cv",
                                                                      "ci_rel_halfwidth")},
    "throughput": {"samples_per_s": "DOUBLE"}, "accuracy": {"value": "DOUBLE"},
}
_MAX_OBJECT = 256 * 2**20  # a bigger record makes DuckDB fail; the json reader then takes over


# --------------------------------------------------------------------------- engines

def engine_name(engine: str = "auto") -> str:
    """``duckdb`` or ``pandas``: ``auto`` picks DuckDB when it is importable."""
    import importlib.util

    if engine not in ("auto", "duckdb", "pandas"):
        raise BenchError(f"unknown engine {engine!r} (auto, duckdb, pandas)")
    have = importlib.util.find_spec("duckdb") is not None
    if engine == "duckdb" and not have:
        raise BenchError("the duckdb engine needs the 'history' extra: pip install 'bench[history]'")
    if engine == "auto":
        return "duckdb" if have else "pandas"
    return engine


def _paths(items: Iterable[str | Path]) -> list[Path]:
    from harness.store.records import iter_record_paths

    return list(iter_record_paths(list(items), journals=True))  # with runs killed before their record


def _duck_query(paths: list[Path], with_cases: bool, machine: str | None):
    """The index (``with_cases=False``) or the history table, straight from the JSON files.

    ``read_json_objects`` + ``json_transform`` (only the named fields are materialised) is
    several times faster here than ``read_json`` with declared columns.
    """
    import duckdb

    structure = dict(_RUN_STRUCTURE)
    if with_cases:
        structure["cases"] = [_CASE_STRUCTURE]
    struct_sql = json.dumps(structure).replace("'", "''")
    src = (f"SELECT filename, json_array_length(json, '$.cases') AS n_cases, json_transform(json, '{struct_sql}') AS t "
           f"FROM read_json_objects($files, format='unstructured', filename=true, maximum_object_size={_MAX_OBJECT})")
    runs = ("SELECT filename AS path, t.schema_version AS schema_version, t.run_id AS run_id, t.started_at AS started_at, "
            "t.environment.machine_id AS machine_id, t.environment.hostname AS hostname, t.environment.cpu.model AS cpu, "
            "t.suite.name AS suite, t.bench.git_sha AS git_sha, coalesce(t.interrupted, false) AS interrupted, n_cases"
            + (", t.cases AS cases" if with_cases else "") + " FROM raw")
    where = "WHERE machine_id = $machine" if machine else ""
    run_cols = "path, schema_version, run_id, started_at, machine_id, hostname, cpu, suite, git_sha, interrupted, n_cases"
    if with_cases:
        fields = ", ".join(
            [f"c.{k} AS {k}" for k in ("key", "case_id", "model", "variant", "backend", "runtime", "precision", "batch",
                                       "scenario", "device", "status", "simulated")]
            + [f"c.latency_ns.{k} AS {k}" for k in ("n", "p50", "p90", "p99", "mean", "cv", "ci_rel_halfwidth")]
            + ["c.throughput.samples_per_s AS throughput", "c.accuracy.value AS accuracy"])
        sql = (f"WITH raw AS ({src}), runs AS ({runs}), flat AS (SELECT {run_cols}, unnest(cases) AS c FROM runs {where}) "
               f"SELECT {run_cols}, {fields} FROM flat")
    else:
        sql = f"WITH raw AS ({src}), runs AS ({runs}) SELECT {run_cols} FROM runs {where}"
    params: dict[str, Any] = {"files": [str(p) for p in paths]}
    if machine:
        params["machine"] = machine
    con = duckdb.connect()
    try:
        return con.execute(sql, params).df()
    finally:
        con.close()


def _run_fields(record: dict, path: str | None) -> dict:
    """The index's run columns (RUN_COLUMNS), from the one flattener."""
    run = run_fields(record)
    return {"path": path, **{c: run["cpu_model" if c == "cpu" else c] for c in RUN_COLUMNS if c != "path"}}


def _case_fields(case: dict) -> dict:
    """The index's case columns (CASE_COLUMNS), from the one flattener."""
    fields = case_fields(case)
    return {c: fields[c] for c in CASE_COLUMNS}


def _read_python(paths: list[Path], with_cases: bool, machine: str | None, skipped: list) -> list[dict]:
    from harness.store.records import read_record

    rows: list[dict] = []
    for p in paths:
        try:
            rec = read_record(p, check=False)  # as lenient as the DuckDB engine: wrong types become missing
        except BenchError as exc:
            skipped.append((str(p), str(exc)))
            continue
        run = _run_fields(rec, str(p))
        if machine and run["machine_id"] != machine:
            continue
        if not with_cases:
            rows.append(run)
            continue
        for case in rec.get("cases") or []:
            rows.append({**run, **_case_fields(case)})
    return rows


def _frame(rows_or_df, with_cases: bool):
    import pandas as pd

    cols = RUN_COLUMNS + (CASE_COLUMNS if with_cases else [])
    df = rows_or_df if isinstance(rows_or_df, pd.DataFrame) else pd.DataFrame(rows_or_df)
    for c in cols:
        if c not in df.columns:
            df[c] = None
    df = df[cols].copy()
    df["started_at"] = pd.to_datetime(df["started_at"], utc=True, format="ISO8601")
    for c in ("n_cases",) + (("batch", "n") if with_cases else ()):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    if with_cases:
        for c in ("p50", "p90", "p99", "mean", "cv", "ci_rel_halfwidth", "throughput", "accuracy"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df["interrupted"] = df["interrupted"].fillna(False).astype(bool)
    df = df.sort_values(["started_at", "run_id"] + (["case_id"] if with_cases else []), kind="stable")
    return df.reset_index(drop=True)


def _load(items, with_cases: bool, machine: str | None, engine: str):
    from harness.store.records import JOURNAL_SUFFIX, SCHEMA_VERSION

    paths = _paths(items)
    journals = [p for p in paths if p.name.endswith(JOURNAL_SUFFIX)]  # killed runs: listed as interrupted
    paths = [p for p in paths if p not in journals]
    skipped: list[tuple[str, str]] = []
    fallback = None
    used = engine_name(engine)
    df = None
    if paths and used == "duckdb":
        try:
            raw = _duck_query(paths, with_cases, machine)
        except Exception as exc:  # noqa: BLE001 - any DuckDB problem: the python reader names the bad file
            used = "pandas"
            fallback = f"duckdb could not read the files ({type(exc).__name__}); read them with json instead"
        else:
            bad = raw[raw["schema_version"].isna() | (raw["schema_version"] != SCHEMA_VERSION)]
            import pandas as pd

            for path, version in bad[["path", "schema_version"]].drop_duplicates().itertuples(index=False):
                skipped.append((path, "not a bench run record (no schema_version)" if pd.isna(version)
                                else f"record schema version {int(version)} is not supported"))
            df = raw[~raw.index.isin(bad.index)].drop(columns=["schema_version"])
    if df is None:
        df = _read_python(paths, with_cases, machine, skipped) if used == "pandas" and paths else []
    if journals:
        import pandas as pd

        extra = pd.DataFrame(_read_python(journals, with_cases, machine, skipped))
        df = pd.concat([d for d in (pd.DataFrame(df) if not isinstance(df, pd.DataFrame) else df, extra)
                        if len(d)], ignore_index=True) if len(extra) else df
    out = _frame(df, with_cases)
    out.attrs["engine"] = used
    out.attrs["skipped"] = skipped
    out.attrs["fallback"] = fallback
    out.attrs["files"] = len(paths) + len(journals)
    return out


def index_runs(items: Iterable[str | Path], *, machine: str | None = None, engine: str = "auto"):
    """One row per run record found in ``items`` (files, directories, globs); see the module doc.

    Files that are not bench run records are left out and listed in ``df.attrs["skipped"]``;
    ``df.attrs["engine"]`` says which engine read them.
    """
    return _load(items, False, machine, engine)


def load_history(items: Iterable[str | Path], *, machine: str | None = None, engine: str = "auto"):
    """One row per (run, case), oldest run first; ``machine`` keeps one machine's runs."""
    return _load(items, True, machine, engine)


def history_frame(records: Sequence[dict]):
    """The :func:`load_history` table of records already in memory."""
    rows = []
    for rec in records:
        run = _run_fields(rec, None)
        for case in rec.get("cases") or []:
            rows.append({**run, **_case_fields(case)})
    return _frame(rows, True)


# --------------------------------------------------------------------------- analysis

@dataclass
class CaseHistory:
    """One case's series on one machine, and what the step fit says about it."""

    machine_id: str
    hostname: str
    key: str
    case_id: str
    metric: str
    better: str
    run_ids: list[str]
    times: list  # pandas Timestamps (UTC)
    git_shas: list
    values: np.ndarray
    fit: StepFit
    zscore: float | None
    alert: bool
    alert_window: int = 10
    skipped_runs: int = 0

    @property
    def status(self) -> str:
        return self.fit.status

    @property
    def latest(self) -> float | None:
        return float(self.values[-1]) if len(self.values) else None

    def runs_since(self, index: int) -> int:
        return len(self.values) - index

    def to_dict(self) -> dict:
        def ev(e):
            d = e.to_dict()
            d["run_id"] = self.run_ids[e.index] if e.index < len(self.run_ids) else None
            d["started_at"] = _iso(self.times[e.index]) if e.index < len(self.times) else None
            d["runs_since"] = self.runs_since(e.index)
            return d

        return {
            "machine_id": self.machine_id, "hostname": self.hostname, "key": self.key, "case_id": self.case_id,
            "metric": self.metric, "better": self.better, "runs": len(self.values), "status": self.status,
            "alert": self.alert, "latest": self.latest, "zscore": self.zscore, "noise": self.fit.noise,
            "events": [ev(e) for e in self.fit.events],
            "levels": [{"start": s.start, "end": s.end, "level": s.level,
                        "from_run": self.run_ids[s.start], "to_run": self.run_ids[s.end - 1]} for s in self.fit.levels],
            "series": [{"run_id": r, "started_at": _iso(t), "git_sha": g, "value": float(v)}
                       for r, t, g, v in zip(self.run_ids, self.times, self.git_shas, self.values)],
        }


def _iso(t) -> str | None:
    if t is None:
        return None
    try:
        return t.isoformat().replace("+00:00", "Z")
    except AttributeError:
        return str(t)


def analyze(df, *, metric: str = "p50", threshold: float = 0.05, persist: int = 2, alpha: float = DEFAULT_ALPHA,
            window: int = 100, alert_window: int = 10, cases: Sequence[str] | None = None,
            last: int | None = None) -> list[CaseHistory]:
    """Step analysis of every (machine, case) series in a :func:`load_history` table.

    Only runs where the case finished (status ok or invalid) with a positive value enter a
    series. ``cases`` keeps case ids matching any of the globs (or equal keys); ``last``
    keeps each series' newest ``last`` runs. A case *alerts* when its latest change is a
    confirmed regression step (seen in at least ``persist`` runs) that began within the
    newest ``alert_window`` runs.
    """
    if metric not in METRIC_COLUMNS:
        raise BenchError(f"unknown metric {metric!r} (choose from: {', '.join(METRIC_COLUMNS)})")
    col, better = METRIC_COLUMNS[metric]
    if df is None or len(df) == 0:
        return []
    out: list[CaseHistory] = []
    for (mid, key), g in df.groupby(["machine_id", "key"], sort=False, dropna=False):
        case_id = str(g["case_id"].iloc[-1])
        if cases and not any(fnmatch.fnmatchcase(case_id, pat) or pat == key for pat in cases):
            continue
        g = g.sort_values(["started_at", "run_id"], kind="stable")
        ok = g["status"].isin(["ok", "invalid"]) & g[col].notna() & (g[col] > 0)
        s = g[ok]
        if last:
            s = s.tail(int(last))
        if s.empty:
            continue
        values = s[col].to_numpy(dtype=float)
        weights = None
        if col in ("p50",):
            hw = s["ci_rel_halfwidth"].to_numpy(dtype=float)
            if np.isfinite(hw).any():
                weights = np.where(np.isfinite(hw) & (hw > 0), 1 / np.where(hw > 0, hw, 1), np.nan)
        fit = detect_steps(values, weights=weights, threshold=threshold, persist=persist, better=better, alpha=alpha)
        z = lookback_zscore(values, window=window)[-1] if len(values) > 1 else None
        ch = fit.last_change
        alert = bool(ch is not None and ch.kind == "step" and ch.direction == REGRESSION
                     and len(values) - ch.index <= alert_window)
        out.append(CaseHistory(
            machine_id=str(mid), hostname=str(s["hostname"].iloc[-1]), key=str(key), case_id=case_id, metric=metric,
            better=better, run_ids=[str(r) for r in s["run_id"]], times=list(s["started_at"]),
            git_shas=[None if (x is None or x != x) else str(x) for x in s["git_sha"]], values=values, fit=fit,
            zscore=z, alert=alert, alert_window=alert_window, skipped_runs=int((~ok).sum())))
    out.sort(key=lambda h: (h.machine_id, h.case_id))
    return out


# --------------------------------------------------------------------------- output

def _fmt(metric: str, v: float | None) -> str:
    return fmt_metric(metric, v)


def _events_text(h: CaseHistory, limit: int = 3) -> str:
    parts = []
    for e in h.fit.events[-limit:]:
        when = h.times[e.index].strftime("%Y-%m-%d") if e.index < len(h.times) else "?"
        ago = h.runs_since(e.index)
        parts.append(f"{e.kind} {(e.ratio - 1) * 100:+.1f}% {when} ({ago} run{'s' if ago != 1 else ''} ago)")
    more = len(h.fit.events) - limit
    return ("; ".join(parts) + (f"; +{more} earlier" if more > 0 else "")) if parts else "-"


_STATUS_STYLE = {"regressed": "bold red", "pending-regression": "yellow", "improved": "green",
                 "pending-improvement": "green", "stable": "dim"}


def render_text(histories: list[CaseHistory], *, console=None, notes: Sequence[str] = ()) -> None:
    import sys

    from rich.console import Console

    from harness.safe import data_table, plain

    if console is None:
        console = Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 160)
    for n in notes:
        console.print(plain(n), style="dim")
    if not histories:
        console.print("no history to show")
        return
    table = data_table(header_style="bold")
    for col, kw in (("status", {}), ("case", {"overflow": "fold"}), ("machine", {}), ("runs", {"justify": "right"}),
                    ("latest", {"justify": "right"}), ("z", {"justify": "right"}), ("changes", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for h in histories:
        status = h.status + (" (ALERT)" if h.alert else "")
        table.add_row(status, h.case_id, f"{h.hostname} {h.machine_id[:8]}", str(len(h.values)),
                      _fmt(h.metric, h.latest), "-" if h.zscore is None else f"{h.zscore:+.1f}", _events_text(h),
                      style=_STATUS_STYLE.get(h.status, ""))
    console.print(table)
    n_alert = sum(h.alert for h in histories)
    n_pending = sum(h.status == "pending-regression" for h in histories)
    console.print(f"[bold]{len(histories)} case(s): {n_alert} alert(s), {n_pending} pending regression(s)[/bold]")


def render_markdown(histories: list[CaseHistory]) -> str:
    from harness.safe import md

    n_alert = sum(h.alert for h in histories)
    lines = [f"### bench history: {'❌ ' + str(n_alert) + ' alert(s)' if n_alert else '✅ no alert'}", "",
             "| status | case | machine | runs | latest | z | changes |", "|---|---|---|---:|---:|---:|---|"]
    for h in histories:
        cells = [h.status + (" ALERT" if h.alert else ""), h.case_id, f"{h.hostname} {h.machine_id[:8]}",
                 str(len(h.values)), _fmt(h.metric, h.latest), "-" if h.zscore is None else f"{h.zscore:+.1f}",
                 _events_text(h)]
        lines.append("| " + " | ".join(md(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(histories: list[CaseHistory], **meta) -> str:
    def clean(o):
        if isinstance(o, float):
            return o if math.isfinite(o) else None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean({"schema": "bench-history/1", **meta, "cases": [h.to_dict() for h in histories]}),
                      indent=1, allow_nan=False, default=str)


# --------------------------------------------------------------------------- charts

def _unit(metric: str, values: np.ndarray) -> tuple[str, float]:
    if metric in ("p50", "p90", "p99"):
        return time_unit(values)
    if metric == "throughput":
        return "samples/s", 1.0
    return "", 1.0


def trend_figures(records: Sequence[dict], *, metric: str = "p50", threshold: float = 0.05, persist: int = 2,
                  alpha: float = DEFAULT_ALPHA, histories: list[CaseHistory] | None = None) -> list:
    """One plotly Figure per (machine, case): the series over time, the fitted levels, the steps.

    ``records`` are run records (dicts) of one or more machines; cases are told apart by
    their comparability key and machines by ``environment.machine_id``. Steps are drawn as
    vertical lines (red: regression, green: improvement, orange dashed: pending), blips as
    crosses. ``fig.layout.meta`` holds ``machine_id``, ``key``, ``case_id``, ``status``
    and ``alert`` of the case.
    """
    import plotly.graph_objects as go

    if histories is None:
        histories = analyze(history_frame(records), metric=metric, threshold=threshold, persist=persist, alpha=alpha)
    figs = []
    for h in histories:
        unit, f = _unit(h.metric, h.values)
        y = h.values / f
        x = [t.to_pydatetime() if hasattr(t, "to_pydatetime") else t for t in h.times]
        fig = go.Figure()
        hover = [f"{r}<br>git {g or '-'}" for r, g in zip(h.run_ids, h.git_shas)]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=h.metric, text=hover,
                                 hovertemplate="%{y:.4g} " + unit + "<br>%{text}<extra></extra>",
                                 line={"color": "#4c78a8", "width": 1}, marker={"size": 5}))
        fitted = h.fit.fitted(len(y)) / f
        fig.add_trace(go.Scatter(x=x, y=fitted, mode="lines", name="fitted level", line={"shape": "hv", "color": "#555",
                                                                                       "dash": "dot"}))
        blips = [e for e in h.fit.events if e.kind == "blip"]
        if blips:
            bi = [i for e in blips for i in range(e.index, e.end)]
            fig.add_trace(go.Scatter(x=[x[i] for i in bi], y=[y[i] for i in bi], mode="markers", name="blip",
                                     marker={"symbol": "x", "size": 10, "color": "#e45756"}))
        for e in h.fit.events:
            if e.kind == "blip":
                continue
            color = "#d62728" if e.direction == REGRESSION else "#2ca02c"
            if e.kind == "pending":
                color = "#ff7f0e"
            fig.add_shape(type="line", x0=x[e.index], x1=x[e.index], yref="paper", y0=0, y1=1,
                          line={"color": color, "width": 2, "dash": "dash" if e.kind == "pending" else "solid"})
            fig.add_annotation(x=x[e.index], yref="paper", y=1.0, yanchor="bottom", showarrow=False,
                               text=f"{e.kind} {(e.ratio - 1) * 100:+.1f}%", font={"color": color, "size": 11})
        title = f"{h.case_id} — {h.hostname} ({h.machine_id[:8]}): {h.status}" + (" — ALERT" if h.alert else "")
        fig.update_layout(title={"text": title, "font": {"size": 13}}, template="plotly_white", height=320,
                          margin={"l": 60, "r": 20, "t": 60, "b": 40}, showlegend=False,
                          yaxis_title=f"{h.metric} ({unit})" if unit else h.metric,
                          meta={"machine_id": h.machine_id, "key": h.key, "case_id": h.case_id, "metric": h.metric,
                                "status": h.status, "alert": h.alert})
        figs.append(fig)
    return figs
