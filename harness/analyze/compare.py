"""Compare two runs case by case: ratio, confidence interval, significance, verdict, exit code.

Cases are matched by their comparability key (``case["key"]``), so a case is compared only
with the same model artifact, variant, backend + runtime version, device, precision,
batch, scenario and threads. Unmatched cases are listed, never dropped.

For each matched case and metric (:data:`METRICS`) the statistics of
:mod:`harness.analyze.changes` give a ratio NEW/BASE, its bootstrap confidence interval, a p-value
and a verdict; :class:`Comparison` rolls them up into the exit code of ``bench compare``:

====  ==================================================================
0     no regression (every compared metric unchanged or improved)
1     at least one regression (beyond threshold, significant within the runs,
      and beyond the run-to-run noise of the earlier runs of the case)
2     bad input, or a benchmark error (a case that failed in NEW)
3     inconclusive (beyond threshold but not significant, too few samples,
      run-to-run noise unknown or not exceeded, a case or metric missing on
      one side) or no baseline
====  ==================================================================

**Run-to-run noise.** The within-run tests only see the scatter of one process's
iterations; two processes of the same code on a shared machine can differ far more (a
15-30 µs model measured 34.1 µs in one run and 16.5 µs in the next, each with a CI of
±0.1 %). So a timing change (p50, p99, throughput) that passes the threshold and the
within-run test is a regression / improvement only when NEW is also beyond ``k = 3``
run-to-run sigmas of the level of the earlier runs of the same case on the same machine
(:func:`harness.analyze.changes.check_run_noise`; at least ``min_history = 5`` of them, up to 100,
from the results directory). With fewer it is *inconclusive* ("run-to-run noise
unknown"). ``Settings.assume_stable`` (``--assume-stable``) skips this check: right only
for pinned, quiet, dedicated machines. Accuracy is deterministic and needs no history.

Precedence when several apply: 1, then 2, then 3. The method is documented in
``docs/regression.md``.
"""
from __future__ import annotations

import fnmatch
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.analyze.changes import (DEFAULT_ALPHA, DEFAULT_CONFIDENCE, DEFAULT_HISTORY_WINDOW, DEFAULT_MIN_HISTORY,
                             DEFAULT_MIN_SAMPLES, DEFAULT_N_BOOT, DEFAULT_NOISE_K, DEFAULT_SEED, HIGHER, IMPROVEMENT,
                             INCONCLUSIVE, LOWER, REGRESSION, UNCHANGED, Change, check_run_noise, compare_samples,
                             compare_values, judge)
from harness.units import fmt_metric, fmt_pct_change
from harness.errors import EXIT_CASES_FAILED, EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE, BenchError

__all__ = [
    "METRICS", "DEFAULT_METRICS", "DEFAULT_THRESHOLDS", "NoBaseline", "Thresholds", "Settings",
    "CaseResult", "RunInfo", "Comparison", "parse_fraction", "parse_threshold_spec", "load_config",
    "make_settings", "compare_records", "RunHistory", "RunFinder", "resolve_run", "this_machine_id", "render_text", "render_markdown",
    "to_json",
]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    stat: float | str | None  # quantile / "mean" of the samples, None: a single recorded value
    better: str
    label: str


METRICS: dict[str, MetricSpec] = {
    "p50": MetricSpec("p50", 0.5, LOWER, "p50 latency"),
    "p99": MetricSpec("p99", 0.99, LOWER, "p99 latency"),
    "throughput": MetricSpec("throughput", "mean", HIGHER, "throughput"),
    "accuracy": MetricSpec("accuracy", None, HIGHER, "accuracy"),
}
DEFAULT_METRICS = ("p50", "p99", "throughput", "accuracy")
#: Built-in thresholds ("*" is every metric not named). Accuracy of the same artifact on the
#: same data should not move at all, so its default is tighter.
DEFAULT_THRESHOLDS = {"*": 0.05, "accuracy": 0.01}

#: between-process test (runs with repeats): p below this and the CI of the ratio excludes 1
DEFAULT_REPEATS_ALPHA = 0.01
#: per-repeat field of each metric's statistic (throughput: the repeat's samples/s)
_REPEAT_FIELDS = {"p50": "p50", "p99": "p99", "throughput": "throughput"}

# Case verdicts, worst first (the order decides a case's overall verdict and the sort order).
ERROR = "error"
NO_BASELINE = "no baseline"
MISSING = "missing"
SKIPPED = "skipped"
CASE_ORDER = [REGRESSION, ERROR, INCONCLUSIVE, NO_BASELINE, MISSING, IMPROVEMENT, UNCHANGED, SKIPPED]

OK_STATUSES = ("ok", "invalid")
NOT_RUN = ("skipped", "unsupported", "does_not_fit")


class NoBaseline(BenchError):
    """No BASE run to compare with (e.g. ``previous`` on the first night): exit 3."""

    exit_code = EXIT_INCONCLUSIVE


# --------------------------------------------------------------------------- thresholds & settings

_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)\s*$")


def parse_fraction(value: Any, what: str = "threshold") -> float:
    """``"5%"`` or ``0.05`` -> 0.05. A bare number >= 1 is refused as ambiguous."""
    if isinstance(value, bool):
        raise BenchError(f"{what} {value!r} is not a number")
    if isinstance(value, (int, float)):
        text, pct = str(value), ""
        v = float(value)
    else:
        m = _FRACTION.match(str(value))
        if not m:
            raise BenchError(f"{what} {value!r} is not a number or a percentage (e.g. 5% or 0.05)")
        v, pct = float(m.group(1)), m.group(2)
        text = str(value).strip()
    if pct:
        v /= 100
    elif v >= 1:
        raise BenchError(f"{what} {text} is ambiguous: write {text}% or {v / 100:g}")
    if not 0 <= v < 10:
        raise BenchError(f"{what} {text} is out of range")
    return v


def parse_threshold_spec(spec: str | float | dict | None) -> dict[str, float]:
    """``"5%"`` -> ``{"*": .05}``; ``"5%,accuracy=0.5%"`` -> ``{"*": .05, "accuracy": .005}``."""
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return {("*" if k in ("*", "default") else _metric_name(k)): parse_fraction(v) for k, v in spec.items()}
    if isinstance(spec, (int, float)):
        return {"*": parse_fraction(spec)}
    out: dict[str, float] = {}
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
            out[_metric_name(k.strip())] = parse_fraction(v)
        else:
            out["*"] = parse_fraction(part)
    if not out:
        raise BenchError(f"empty threshold {spec!r}")
    return out


def _metric_name(name: str) -> str:
    if name not in METRICS:
        raise BenchError(f"unknown metric {name!r} (choose from: {', '.join(METRICS)})")
    return name


@dataclass
class Thresholds:
    """Thresholds by metric, overridable per suite and per case (most specific wins).

    Lookup for (case, suite, metric): the first case rule whose pattern matches the case's
    key or ``case_id`` (a glob) and names the metric or ``*``; then the suite's rule; then
    the global one. Within a rule a named metric beats ``*``.
    """

    default: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    suites: dict[str, dict[str, float]] = field(default_factory=dict)
    cases: list[tuple[str, dict[str, float]]] = field(default_factory=list)

    @staticmethod
    def _pick(rule: dict[str, float], metric: str) -> float | None:
        if metric in rule:
            return rule[metric]
        return rule.get("*")

    def get(self, metric: str, *, case_id: str = "", key: str = "", suite: str | None = None) -> float:
        for pattern, rule in self.cases:
            if pattern == key or fnmatch.fnmatchcase(case_id, pattern):
                v = self._pick(rule, metric)
                if v is not None:
                    return v
        if suite is not None and suite in self.suites:
            v = self._pick(self.suites[suite], metric)
            if v is not None:
                return v
        v = self._pick(self.default, metric)
        return DEFAULT_THRESHOLDS["*"] if v is None else v

    def describe(self) -> str:
        items = sorted(self.default.items(), key=lambda kv: kv[0] != "*")
        text = ", ".join(f"{'default' if k == '*' else k} {v * 100:g}%" for k, v in items)
        if self.suites:
            text += f"; {len(self.suites)} suite override(s)"
        if self.cases:
            text += f"; {len(self.cases)} case override(s)"
        return text


@dataclass
class Settings:
    thresholds: Thresholds = field(default_factory=Thresholds)
    metrics: tuple[str, ...] = DEFAULT_METRICS
    alpha: float = DEFAULT_ALPHA
    confidence: float = DEFAULT_CONFIDENCE
    n_boot: int = DEFAULT_N_BOOT
    seed: int = DEFAULT_SEED
    min_samples: int = DEFAULT_MIN_SAMPLES
    #: skip the run-to-run noise check (within-run significance alone decides): only for
    #: pinned, quiet, dedicated machines
    assume_stable: bool = False
    min_history: int = DEFAULT_MIN_HISTORY  #: earlier runs of a case needed to know its run-to-run noise
    noise_k: float = DEFAULT_NOISE_K  #: a change must exceed this many run-to-run sigmas
    history_window: int = DEFAULT_HISTORY_WINDOW  #: at most this many earlier runs are used
    #: significance level of the between-process test when both runs carry repeats
    repeats_alpha: float = DEFAULT_REPEATS_ALPHA

    def describe_noise_rule(self) -> str:
        rep = (f"; runs with repeats on both sides: between-process t-test p < {self.repeats_alpha:g} "
               "(history, when present, pooled into the noise)")
        return self._noise_rule() + rep

    def _noise_rule(self) -> str:
        if self.assume_stable:
            return "run-to-run noise not checked (--assume-stable)"
        return (f"and beyond {self.noise_k:g} sigma of the run-to-run noise of >= {self.min_history} "
                "earlier runs on this machine")

    def to_dict(self) -> dict:
        return {
            "metrics": list(self.metrics), "alpha": self.alpha, "confidence": self.confidence,
            "n_boot": self.n_boot, "seed": self.seed, "min_samples": self.min_samples,
            "assume_stable": self.assume_stable, "min_history": self.min_history, "noise_k": self.noise_k,
            "history_window": self.history_window, "repeats_alpha": self.repeats_alpha,
            "thresholds": {"default": self.thresholds.default, "suites": self.thresholds.suites,
                           "cases": [{"match": p, **r} for p, r in self.thresholds.cases]},
            "test": (f"significant: Mann-Whitney U p < {self.alpha:g} (p99: or tail test) and the "
                     f"{self.confidence:.0%} bootstrap CI of the ratio excludes 1; " + self.describe_noise_rule()),
        }


_CONFIG_KEYS = {"threshold", "metrics", "suites", "cases", "alpha", "confidence", "n_boot", "seed", "min_samples",
                "assume_stable", "min_history", "noise_k", "repeats_alpha"}


def _rule(obj: Any, where: str) -> dict[str, float]:
    if isinstance(obj, (str, int, float)):
        return parse_threshold_spec(obj)
    if not isinstance(obj, dict):
        raise BenchError(f"{where}: expected a threshold or a mapping")
    unknown = set(obj) - {"threshold", "metrics"}
    if unknown:
        from harness.safe import unknown_keys

        raise BenchError(unknown_keys(where, unknown, ("threshold", "metrics")))
    rule = parse_threshold_spec(obj["threshold"]) if "threshold" in obj else {}
    metrics = obj.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise BenchError(f"{where}.metrics: expected a mapping metric -> threshold")
    rule.update(parse_threshold_spec(metrics) if metrics else {})
    return rule


def load_config(path: str | Path) -> dict:
    """Read a compare config (YAML or JSON) and check its keys.

    Format::

        threshold: 5%            # every metric (a bare value or "5%,accuracy=1%")
        metrics: {accuracy: 1%}  # per metric
        suites:                  # per suite (record["suite"]["name"])
          quant: {threshold: 8%, metrics: {accuracy: 0.5%}}
        cases:                   # per case: a glob on case_id, or an exact key; first match wins
          "resnet*/int8*/*": {metrics: {p99: 15%}}
          "3f2a9c0d1e4b5a6c": 10%
        alpha: 0.002             # significance level
        confidence: 0.99         # bootstrap CI
        min_samples: 10
        assume_stable: false     # true: within-run significance alone decides (quiet dedicated machine)
        min_history: 5           # earlier runs of a case needed for its run-to-run noise
        noise_k: 3               # a change must exceed k sigma of that noise
    """
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"no such config file: {p}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise BenchError(f"{p}: cannot read config ({exc})".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BenchError(f"{p}: a compare config is a mapping")
    if "compare" in data and isinstance(data["compare"], dict) and set(data) - _CONFIG_KEYS:
        data = data["compare"]  # a section of a larger file
    unknown = set(data) - _CONFIG_KEYS
    if unknown:
        from harness.safe import unknown_keys

        raise BenchError(unknown_keys(str(p), unknown, _CONFIG_KEYS))
    return data


def make_settings(config: dict | None = None, *, threshold: str | None = None, metrics: Iterable[str] | None = None,
                  alpha: float | None = None, min_samples: int | None = None,
                  assume_stable: bool | None = None) -> Settings:
    """Settings from built-in defaults < config file < command-line options."""
    config = config or {}
    default = dict(DEFAULT_THRESHOLDS)

    def apply(spec: dict[str, float]) -> None:
        nonlocal default
        if "*" in spec:  # a bare value sets every metric
            default = {"*": spec["*"]}
        default.update({k: v for k, v in spec.items() if k != "*"})

    if "threshold" in config:
        apply(parse_threshold_spec(config["threshold"]))
    if config.get("metrics"):
        apply(_rule({"metrics": config["metrics"]}, "metrics"))
    if threshold is not None:
        apply(parse_threshold_spec(threshold))
    suites = {str(k): _rule(v, f"suites.{k}") for k, v in (config.get("suites") or {}).items()}
    cases_cfg = config.get("cases") or {}
    if isinstance(cases_cfg, list):  # [{match: ..., threshold: ...}]
        cases = []
        for i, item in enumerate(cases_cfg):
            if not isinstance(item, dict) or "match" not in item:
                raise BenchError(f"cases[{i}]: expected a mapping with 'match'")
            cases.append((str(item["match"]), _rule({k: v for k, v in item.items() if k != "match"}, f"cases[{i}]")))
    else:
        cases = [(str(k), _rule(v, f"cases.{k}")) for k, v in cases_cfg.items()]
    ms = tuple(metrics) if metrics else DEFAULT_METRICS
    for m in ms:
        _metric_name(m)
    a = alpha if alpha is not None else config.get("alpha", DEFAULT_ALPHA)
    conf = config.get("confidence", DEFAULT_CONFIDENCE)
    if not (0 < float(a) < 1) or not (0 < float(conf) < 1):
        raise BenchError("alpha and confidence must be between 0 and 1")
    return Settings(
        thresholds=Thresholds(default, suites, cases), metrics=ms, alpha=float(a), confidence=float(conf),
        n_boot=int(config.get("n_boot", DEFAULT_N_BOOT)), seed=int(config.get("seed", DEFAULT_SEED)),
        min_samples=int(min_samples if min_samples is not None else config.get("min_samples", DEFAULT_MIN_SAMPLES)),
        assume_stable=bool(assume_stable or config.get("assume_stable", False)),
        min_history=max(2, int(config.get("min_history", DEFAULT_MIN_HISTORY))),
        noise_k=float(config.get("noise_k", DEFAULT_NOISE_K)),
        repeats_alpha=float(config.get("repeats_alpha", DEFAULT_REPEATS_ALPHA)),
    )


# --------------------------------------------------------------------------- comparing

@dataclass
class RunInfo:
    run_id: str | None
    path: str | None
    started_at: str | None
    machine_id: str | None
    hostname: str | None
    cpu: str | None
    git_sha: str | None
    suite: str | None
    interrupted: bool
    n_cases: int
    timer_overhead_ns: float | None

    @classmethod
    def of(cls, record: dict, path: str | Path | None = None) -> "RunInfo":
        env = record.get("environment") or {}
        return cls(record.get("run_id"), str(path) if path else None, record.get("started_at"),
                   env.get("machine_id"), env.get("hostname"), (env.get("cpu") or {}).get("model"),
                   (record.get("bench") or {}).get("git_sha"), (record.get("suite") or {}).get("name"),
                   bool(record.get("interrupted")), len(record.get("cases") or []),
                   (record.get("timer") or {}).get("overhead_ns"))

    def label(self) -> str:
        bits = [b for b in (self.hostname, f"machine {self.machine_id[:8]}" if self.machine_id else None,
                            f"git {self.git_sha[:10]}" if self.git_sha else None) if b]
        return f"{self.run_id} ({', '.join(bits)})" if bits else str(self.run_id)


@dataclass
class CaseResult:
    key: str
    case_id: str
    match: str  # "matched" | "base-only" | "new-only"
    verdict: str
    reason: str = ""
    base_status: str | None = None
    new_status: str | None = None
    changes: list[Change] = field(default_factory=list)
    noise: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"key": self.key, "case_id": self.case_id, "match": self.match, "verdict": self.verdict,
                "reason": self.reason, "base_status": self.base_status, "new_status": self.new_status,
                "metrics": [c.to_dict() for c in self.changes], "noise": self.noise}


@dataclass
class Comparison:
    base: RunInfo
    new: RunInfo
    settings: Settings
    cases: list[CaseResult]
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in CASE_ORDER}
        for c in self.cases:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out

    @property
    def exit_code(self) -> int:
        c = self.counts()
        if c[REGRESSION]:
            return EXIT_CASES_FAILED
        if c[ERROR]:
            return EXIT_USAGE
        if c[INCONCLUSIVE] or c[NO_BASELINE] or c[MISSING] or not any(x.match == "matched" for x in self.cases):
            return EXIT_INCONCLUSIVE
        return EXIT_OK

    def headline(self) -> str:
        """``"2 regressions, 1 inconclusive, 5 unchanged"``: case counts per verdict, worst first."""
        c = self.counts()
        plural = {REGRESSION: "regressions", ERROR: "errors", IMPROVEMENT: "improvements"}
        parts = [f"{c[v]} {plural.get(v, v) if c[v] != 1 else v}" for v in CASE_ORDER if c[v]]
        return ", ".join(parts) if parts else "no cases"

    def to_dict(self) -> dict:
        return {
            "schema": "bench-compare/1",
            "exit_code": self.exit_code,
            "summary": self.counts(),
            "headline": self.headline(),
            "base": self.base.__dict__,
            "new": self.new.__dict__,
            "settings": self.settings.to_dict(),
            "notes": self.notes,
            "cases": [c.to_dict() for c in self.cases],
        }


def _samples(case: dict):
    s = case.get("samples_ns")
    return s if s else None


def _noise(case: dict) -> dict:
    lat = case.get("latency_ns") or {}
    return {k: lat.get(k) for k in ("n", "cv", "robust_cv", "ci_rel_halfwidth", "drift", "outliers") if k in lat}


def _latency_change(spec: MetricSpec, b: dict, n: dict, threshold: float, s: Settings) -> Change | None:
    sb, sn = _samples(b), _samples(n)
    if sb and sn:
        return compare_samples(sb, sn, metric=spec.name, stat=spec.stat, better=spec.better, threshold=threshold,
                               alpha=s.alpha, confidence=s.confidence, n_boot=s.n_boot, seed=s.seed,
                               min_samples=s.min_samples)
    lb, ln = (b.get("latency_ns") or {}), (n.get("latency_ns") or {})
    vb, vn = lb.get(spec.name), ln.get(spec.name)
    if vb is None and vn is None:
        return None
    if vb is None or vn is None:
        return _missing(spec, threshold, vb, vn)
    ratio = vn / vb if vb else math.inf
    verdict, reason, beyond = judge(ratio, significant=False, threshold=threshold, better=spec.better)
    return Change(spec.name, spec.better, vb, vn, ratio, None, None, threshold, lb.get("n"), ln.get("n"), False,
                  beyond, verdict, (reason + "; " if reason else "") + "no raw samples: not tested")


def _throughput_value(case: dict) -> float | None:
    t = case.get("throughput") or {}
    v = t.get("samples_per_s")
    return float(v) if v is not None else None


def _throughput_change(spec: MetricSpec, b: dict, n: dict, threshold: float, s: Settings) -> Change | None:
    tb, tn = _throughput_value(b), _throughput_value(n)
    sb, sn = _samples(b), _samples(n)
    if sb and sn:
        ch = compare_samples(sb, sn, metric=spec.name, stat="mean", better=HIGHER, threshold=threshold,
                             alpha=s.alpha, confidence=s.confidence, n_boot=s.n_boot, seed=s.seed,
                             min_samples=s.min_samples, invert=True)
        if tb and tn and ch.ratio and math.isfinite(ch.ratio):
            # Show the recorded figures; carry the samples' relative uncertainty over to their ratio.
            scale = (tn / tb) / ch.ratio
            ch.base, ch.new, ch.ratio = tb, tn, tn / tb
            if ch.ci is not None:
                ch.ci = (ch.ci[0] * scale, ch.ci[1] * scale)
            sig = (ch.p_value is not None and ch.p_value < s.alpha and ch.ci is not None
                   and (ch.ci[0] > 1 or ch.ci[1] < 1))
            ch.significant = sig
            ch.verdict, reason, ch.beyond = judge(ch.ratio, significant=sig, threshold=threshold, better=HIGHER,
                                                  n_base=ch.n_base, n_new=ch.n_new, min_samples=s.min_samples)
            ch.reason = reason if ch.verdict != INCONCLUSIVE or not reason.startswith("beyond") else (
                f"{reason} (p={ch.p_value:.2g}, {s.confidence:.0%} CI {ch.ci[0]:.3f}..{ch.ci[1]:.3f})")
        return ch
    if tb is None and tn is None:
        return None
    if tb is None or tn is None:
        return _missing(spec, threshold, tb, tn)
    ratio = tn / tb if tb else math.inf
    verdict, reason, beyond = judge(ratio, significant=False, threshold=threshold, better=HIGHER)
    return Change(spec.name, HIGHER, tb, tn, ratio, None, None, threshold, None, None, False, beyond, verdict,
                  (reason + "; " if reason else "") + "no raw samples: not tested")


def _accuracy_change(spec: MetricSpec, b: dict, n: dict, threshold: float, s: Settings) -> Change | None:
    ab, an = (b.get("accuracy") or {}), (n.get("accuracy") or {})
    vb, vn = ab.get("value"), an.get("value")
    if vb is None and vn is None:
        return None
    count = an.get("n_samples") or ab.get("n_samples")
    ch = compare_values(vb, vn, metric="accuracy", better=HIGHER, threshold=threshold,
                        resolution=(0.5 / count) if count else None)
    if ab.get("metric") and an.get("metric") and ab.get("metric") != an.get("metric"):
        ch.verdict, ch.reason = INCONCLUSIVE, f"different accuracy metrics ({ab.get('metric')} vs {an.get('metric')})"
    ch.extra["accuracy_metric"] = an.get("metric") or ab.get("metric")
    return ch


def _missing(spec: MetricSpec, threshold: float, vb, vn) -> Change:
    return Change(spec.name, spec.better, vb, vn, None, None, None, threshold, None, None, False, False, INCONCLUSIVE,
                  "missing in " + ("BASE" if vb is None else "NEW"))


def _case_verdict(changes: list[Change]) -> str:
    verdicts = {c.verdict for c in changes}
    for v in (REGRESSION, INCONCLUSIVE, IMPROVEMENT, UNCHANGED):
        if v in verdicts:
            return v
    return UNCHANGED


#: metric -> column of the history table (harness.analyze.history.load_history) holding its per-run value
_HISTORY_COLUMNS = {"p50": "p50", "p99": "p99", "throughput": "throughput"}


def _recorded(case: dict, metric: str) -> float | None:
    """The per-run figure of a timing metric as the record (and so the history table) holds it."""
    if metric == "throughput":
        return _throughput_value(case)
    v = (case.get("latency_ns") or {}).get(metric)
    return float(v) if v is not None else None


class RunHistory:
    """The earlier runs of NEW's machine, per case key: what the run-to-run noise is estimated from.

    ``source`` is a :func:`harness.analyze.history.load_history` table, a list of records, a callable
    returning either (called once, on first need, so no history is read when nothing is
    beyond threshold), or ``None`` (no history). Kept: runs of NEW's ``environment.machine_id``
    that started no later than NEW, other than NEW itself, where the case finished (ok or
    invalid) and is not simulated; per key the newest ``window`` of them.
    """

    def __init__(self, source, new: dict, window: int = DEFAULT_HISTORY_WINDOW):
        self._source = source
        self._new = new
        self.window = window
        self._groups: dict | None = None
        self.error: str | None = None
        self.runs = 0

    def _load(self) -> dict:
        if self._groups is not None:
            return self._groups
        self._groups = {}
        src = self._source
        try:
            if callable(src):
                src = src()
            if src is None:
                return self._groups
            if isinstance(src, (list, tuple)):
                from harness.analyze.history import history_frame

                src = history_frame(src)
        except BenchError as exc:
            self.error = str(exc)
            return self._groups
        df = src
        if df is None or len(df) == 0:
            return self._groups
        import pandas as pd

        mid = (self._new.get("environment") or {}).get("machine_id")
        df = df[(df["machine_id"] == mid) & df["status"].isin(OK_STATUSES) & (df["simulated"] != True)]  # noqa: E712
        df = df[df["run_id"] != self._new.get("run_id")]
        started = self._new.get("started_at")
        if started:
            try:
                df = df[df["started_at"] <= pd.to_datetime(started, utc=True, format="ISO8601")]
            except (ValueError, TypeError):
                pass
        df = df.drop_duplicates(["run_id", "key"], keep="last").sort_values(["started_at", "run_id"], kind="stable")
        self.runs = int(df["run_id"].nunique())
        self._groups = {k: g for k, g in df.groupby("key", sort=False)}
        return self._groups

    def values(self, key: str, metric: str) -> list[float]:
        g = self._load().get(key)
        col = _HISTORY_COLUMNS.get(metric)
        if g is None or col is None:
            return []
        v = g[col].astype(float)
        v = v[v.notna() & (v > 0)]
        return [float(x) for x in v.tail(self.window)]


def repeat_values(case: dict, metric: str) -> list[float]:
    """The per-process values of a timing metric of a case measured with ``--repeat`` (measured repeats only)."""
    f = _REPEAT_FIELDS.get(metric)
    out = []
    for r in case.get("repeats") or []:
        v = r.get(f) if f else None
        if r.get("status") in OK_STATUSES and v is not None and v > 0:
            out.append(float(v))
    return out


def _repeats_change(spec: MetricSpec, b: dict, n: dict, threshold: float, s: Settings,
                    history: RunHistory | None) -> Change | None:
    """A timing metric decided from the two runs' processes (both sides with >= 2 measured repeats).

    :func:`harness.measure.stats.repeats_test` on the per-process values (ln scale, pooled
    between-process variance). The history of the case, when it has ``min_history`` runs,
    adds its run-to-run variance: a run's headline has variance sigma_r^2, which on the
    per-process scale of the test is sigma_r^2 K (K the harmonic mean of the two repeat
    counts), pooled with N - 1 degrees of freedom.
    """
    from harness.measure.stats import repeats_test

    vb, vn = repeat_values(b, spec.name), repeat_values(n, spec.name)
    if len(vb) < 2 or len(vn) < 2:
        return None
    extra_sigma, extra_dof, hist_n = None, 0, 0
    if history is not None:
        values = history.values(n.get("key") or b.get("key"), spec.name)
        if len(values) >= s.min_history:
            from harness.analyze.changes import run_to_run_noise

            k_eff = 2.0 / (1.0 / len(vb) + 1.0 / len(vn))
            extra_sigma, extra_dof, hist_n = run_to_run_noise(values) * math.sqrt(k_eff), len(values) - 1, len(values)
    t = repeats_test(vb, vn, confidence=s.confidence, extra_sigma=extra_sigma, extra_dof=extra_dof)
    ratio, ci, p = t["ratio"], t["ci"], t["p_value"]
    sig = (p is not None and math.isfinite(p) and p < s.repeats_alpha and math.isfinite(ci[0])
           and (ci[0] > 1 or ci[1] < 1))
    nb, nn = len(_samples(b) or []), len(_samples(n) or [])
    verdict, reason, beyond = judge(ratio, significant=sig, threshold=threshold, better=spec.better,
                                    n_base=nb or None, n_new=nn or None, min_samples=s.min_samples)
    mde = None
    if math.isfinite(ci[0]) and ci[0] > 0:
        mde = math.sqrt(ci[1] / ci[0]) - 1.0  # half-width of the CI on the ratio scale: the smallest visible change
    if verdict == INCONCLUSIVE and reason.startswith("beyond"):
        # two runs with repeats decide: a change their processes cannot tell from noise is no change
        verdict = UNCHANGED
        reason = (f"not significant between processes (p={p:.2g}, {s.confidence:.0%} CI {ci[0]:.3f}..{ci[1]:.3f}; "
                  f"process noise {100 * t['sigma']:.1f}%: changes below about {100 * (mde or 0):.0f}% are not "
                  "visible with these repeats)")
    if spec.name == "throughput":
        base_v, new_v = _throughput_value(b), _throughput_value(n)
    else:
        base_v, new_v = (b.get("latency_ns") or {}).get(spec.name), (n.get("latency_ns") or {}).get(spec.name)
    ch = Change(spec.name, spec.better, base_v, new_v, ratio, tuple(ci), p, threshold, nb, nn, sig, beyond,
                verdict, reason)
    ch.extra["repeats"] = {"k_base": t["k_base"], "k_new": t["k_new"], "sigma": t["sigma"], "dof": t["dof"],
                           "detectable_change": mde,
                           "history_runs": hist_n, "test": "t-test on ln per-process values",
                           "alpha": s.repeats_alpha}
    return ch


def _apply_run_noise(res: CaseResult, n: dict, settings: Settings, history: RunHistory | None) -> None:
    """Downgrade a timing regression / improvement that the run-to-run noise could explain."""
    for ch in res.changes:
        if ch.metric not in _HISTORY_COLUMNS or ch.verdict not in (REGRESSION, IMPROVEMENT):
            continue
        if "repeats" in ch.extra:  # decided between processes; the history is already pooled in
            continue
        values = history.values(res.key, ch.metric) if history is not None else []
        new_value = _recorded(n, ch.metric)
        if new_value is None:
            new_value = ch.new
        nc = check_run_noise(new_value, values, better=ch.better, worse=ch.verdict == REGRESSION,
                             k=settings.noise_k, min_history=settings.min_history)
        ch.extra["run_to_run"] = nc.to_dict()
        if not nc.beyond:
            ch.extra["within_run_verdict"] = ch.verdict
            ch.verdict, ch.reason = INCONCLUSIVE, nc.reason


def compare_cases(b: dict, n: dict, settings: Settings, suite: str | None = None,
                  history: RunHistory | None = None) -> CaseResult:
    """Compare one matched pair of cases (same key).

    Unless ``settings.assume_stable``, a timing regression or improvement must also be beyond
    the run-to-run noise of the case's earlier runs in ``history`` (see :class:`RunHistory`,
    :func:`harness.analyze.changes.check_run_noise`); otherwise it is inconclusive.
    """
    key, case_id = n.get("key") or b.get("key"), n.get("case_id") or b.get("case_id")
    res = CaseResult(key, case_id, "matched", UNCHANGED, base_status=b.get("status"), new_status=n.get("status"),
                     noise={"base": _noise(b), "new": _noise(n)})
    bs, ns = b.get("status"), n.get("status")
    if ns == "failed":
        res.verdict, res.reason = ERROR, f"failed in NEW: {n.get('reason') or 'no reason given'}"
        return res
    if ns in NOT_RUN:
        if bs in OK_STATUSES:
            res.verdict, res.reason = MISSING, f"{ns} in NEW: {n.get('reason') or ''}".rstrip(": ")
        else:
            res.verdict, res.reason = SKIPPED, f"{ns} in NEW"
        return res
    if bs not in OK_STATUSES:
        res.verdict, res.reason = NO_BASELINE, f"{bs} in BASE: {b.get('reason') or ''}".rstrip(": ")
        return res
    simulated = bool(b.get("simulated") or n.get("simulated"))
    for m in settings.metrics:
        spec = METRICS[m]
        th = settings.thresholds.get(m, case_id=case_id or "", key=key or "", suite=suite)
        if m in ("p50", "p99", "throughput") and not simulated:
            ch = _repeats_change(spec, b, n, th, settings, history)
            if ch is None:
                ch = (_latency_change if m != "throughput" else _throughput_change)(spec, b, n, th, settings)
        elif m in ("p50", "p99", "throughput"):
            ch = None
        else:
            ch = _accuracy_change(spec, b, n, th, settings)
        if ch is not None:
            res.changes.append(ch)
    if not settings.assume_stable:
        _apply_run_noise(res, n, settings, history)
    invalid = [(side, c) for side, c in (("BASE", b), ("NEW", n)) if c.get("status") == "invalid"]
    if invalid:
        why = "; ".join(f"invalid in {side}: {', '.join((c.get('validity') or {}).get('reasons') or []) or c.get('reason') or '?'}"
                        for side, c in invalid)
        for ch in res.changes:
            if ch.verdict in (REGRESSION, IMPROVEMENT) and ch.metric != "accuracy":
                if "repeats" in ch.extra and all(_only_repeat_reasons(c) for _, c in invalid):
                    continue  # imprecise single processes: their scatter is what the between-process test used
                ch.verdict, ch.reason = INCONCLUSIVE, why
        res.reason = why
    if simulated:
        res.reason = (res.reason + "; " if res.reason else "") + "simulated backend: timing estimates not compared"
    if not res.changes:
        res.verdict = SKIPPED if simulated else INCONCLUSIVE
        res.reason = res.reason or "no metric to compare on both sides"
        return res
    res.verdict = _case_verdict(res.changes)
    if not res.reason:
        bad = [c for c in res.changes if c.verdict == res.verdict and c.reason]
        res.reason = bad[0].reason if bad and res.verdict != UNCHANGED else ""
    return res


def _only_repeat_reasons(case: dict) -> bool:
    reasons = (case.get("validity") or {}).get("reasons") or []
    return bool(reasons) and all(str(r).startswith("repeats_invalid") for r in reasons)


def compare_records(base: dict, new: dict, settings: Settings | None = None, *, base_path=None,
                    new_path=None, history=None) -> Comparison:
    """Compare every case of ``new`` with the case of ``base`` that has the same key.

    ``history``: the earlier runs the run-to-run noise is estimated from — a
    :func:`harness.analyze.history.load_history` table, a list of records, or a callable returning
    one (read only when a change needs it); see :class:`RunHistory`. Without it (and without
    ``settings.assume_stable``) every timing change that would be a regression or an
    improvement is inconclusive: the run-to-run noise is unknown.
    """
    settings = settings or Settings()
    runs = None if settings.assume_stable else RunHistory(history, new, settings.history_window)
    binfo, ninfo = RunInfo.of(base, base_path), RunInfo.of(new, new_path)
    notes = []
    if binfo.run_id == ninfo.run_id:
        notes.append("BASE and NEW are the same run")
    if binfo.machine_id != ninfo.machine_id:
        notes.append(f"BASE and NEW ran on different machines ({binfo.machine_id} vs {ninfo.machine_id}); "
                     "only cases with equal keys (same device model) are compared")
    if ninfo.interrupted:
        notes.append("NEW run was interrupted: cases that did not run are missing")

    def by_key(record, side):
        out = {}
        for c in record.get("cases") or []:
            k = c.get("key")
            if k in out:
                notes.append(f"{side}: key {k} appears twice ({c.get('case_id')}); the first is used")
                continue
            out[k] = c
        return out

    bk, nk = by_key(base, "BASE"), by_key(new, "NEW")
    suite = ninfo.suite
    results = []
    for k, n in nk.items():
        if k in bk:
            results.append(compare_cases(bk[k], n, settings, suite, runs))
        else:
            results.append(CaseResult(k, n.get("case_id"), "new-only", NO_BASELINE if n.get("status") != "failed" else ERROR,
                                      "not in BASE" if n.get("status") != "failed" else
                                      f"failed in NEW: {n.get('reason') or ''}", None, n.get("status")))
    for k, b in bk.items():
        if k not in nk:
            results.append(CaseResult(k, b.get("case_id"), "base-only", MISSING, "not in NEW", b.get("status"), None))
    order = {v: i for i, v in enumerate(CASE_ORDER)}
    results.sort(key=lambda r: (order.get(r.verdict, 99), r.case_id or ""))
    if runs is not None:
        checked = [ch for r in results for ch in r.changes if "run_to_run" in ch.extra]
        unknown = [ch for ch in checked if ch.extra["run_to_run"]["beyond"] is None]
        within = [ch for ch in checked if ch.extra["run_to_run"]["beyond"] is False]
        if runs.error:
            notes.append(f"no run history for the run-to-run noise: {runs.error}")
        if unknown:
            notes.append(f"{len(unknown)} metric(s) beyond threshold and significant within the runs are inconclusive: "
                         f"fewer than {settings.min_history} earlier runs of the case on this machine, so the "
                         "run-to-run noise is unknown (it often exceeds the within-run noise; see docs/regression.md). "
                         "Keep the nightly history, or pass --assume-stable on a pinned, quiet, dedicated machine")
        if within:
            notes.append(f"{len(within)} metric(s) beyond threshold and significant within the runs are within the "
                         "run-to-run noise of the earlier runs: inconclusive")
    return Comparison(binfo, ninfo, settings, results, notes)


# --------------------------------------------------------------------------- finding runs

def this_machine_id() -> str:
    """This machine's id (the fingerprint's hardware hash)."""
    from harness.run import env

    return env.machine_id(env.fingerprint())


_REL = re.compile(r"^(latest|previous)(?:~(\d+))?$")


class RunFinder:
    """Finds records in a results directory; the run index and the machine id are built once.

    ``find(spec)`` takes a file, a run id (or unique prefix), or ``latest`` / ``previous`` /
    ``latest~N`` (the newest, second newest, N+1-th newest run by ``started_at`` of
    ``machine``, default this machine, and of ``suite`` when given). Raises :class:`NoBaseline` when there are not
    enough runs of the machine, :class:`BenchError` otherwise.
    """

    def __init__(self, results_dir: str | Path = "results", *, machine: str | None = None, engine: str = "auto",
                 suite: str | None = None):
        self.dir = Path(results_dir)
        self._machine = machine
        self.engine = engine
        self.suite = suite
        self._index = None

    @property
    def machine(self) -> str:
        if self._machine is None:
            self._machine = this_machine_id()
        return self._machine

    def index(self):
        if self._index is None:
            from harness.analyze.history import index_runs

            if not self.dir.is_dir():
                raise BenchError(f"results directory {self.dir} does not exist")
            self._index = index_runs([self.dir], engine=self.engine)
        return self._index

    def history(self, machine: str | None = None):
        """The :func:`harness.analyze.history.load_history` table of ``machine``'s runs in the directory
        (no raw samples): where :func:`compare_records` estimates the run-to-run noise."""
        from harness.analyze.history import load_history

        if not self.dir.is_dir():
            raise BenchError(f"results directory {self.dir} does not exist")
        return load_history([self.dir], machine=machine, engine=self.engine)

    def find(self, spec: str) -> tuple[dict, Path]:
        from harness.store.records import RECORD_SUFFIX, read_record

        p = Path(spec)
        if p.is_file():
            return read_record(p), p
        d = self.dir
        m = _REL.match(spec)
        if m:
            back = (1 if m.group(1) == "previous" else 0) + int(m.group(2) or 0)
            idx = self.index()
            if idx.empty:
                raise BenchError(f"no run records in {d}")
            mid = self.machine
            mine = idx[idx["machine_id"] == mid].sort_values(["started_at", "run_id"])
            if self.suite is not None and not mine.empty:
                mine = mine[mine["suite"] == self.suite]
                if mine.empty:
                    raise NoBaseline(f"no runs of suite '{self.suite}' on machine {mid} in {d}")
            if mine.empty:
                others = idx.groupby("machine_id").agg(runs=("run_id", "size"), host=("hostname", "first"))
                listing = ", ".join(f"{k} ({r.host}, {r.runs} runs)" for k, r in others.iterrows())
                raise BenchError(f"no runs of machine {mid} in {d} (machines there: {listing}); pass --machine")
            if len(mine) <= back:
                raise NoBaseline(f"no '{spec}' run: machine {mid} has {len(mine)} run(s) in {d}")
            row = mine.iloc[-1 - back]
            return read_record(row["path"]), Path(row["path"])
        if not d.is_dir():
            raise BenchError(f"'{spec}' is not a file, and results directory {d} does not exist")
        files = [f for f in sorted(d.iterdir()) if f.suffix == RECORD_SUFFIX and not f.name.startswith(".")]
        found: dict[str, list[Path]] = {}
        for f in (f for f in files if f.name.startswith(spec)):
            try:
                rec = read_record(f)
            except BenchError:
                continue
            if str(rec.get("run_id", "")).startswith(spec):
                found.setdefault(rec["run_id"], []).append(f)
        if not found:  # files not named after their run id: look inside
            idx = self.index()
            if not idx.empty:
                sel = idx[idx["run_id"].astype(str).str.startswith(spec)]
                for rid, path in zip(sel["run_id"], sel["path"]):
                    found.setdefault(rid, []).append(Path(path))
        if not found:
            raise BenchError(f"no run '{spec}': not a file, and no run id in {d} starts with it")
        if len(found) > 1:
            raise BenchError(f"run id '{spec}' is ambiguous in {d}: {', '.join(sorted(found)[:5])}")
        (paths,) = found.values()
        return read_record(paths[0]), paths[0]


def resolve_run(spec: str, results_dir: str | Path = "results", *, machine: str | None = None,
                engine: str = "auto", suite: str | None = None) -> tuple[dict, Path]:
    """A record and its path from a file, a run id (or unique prefix), or ``latest`` / ``previous``.

    See :class:`RunFinder` (use one finder to resolve several runs of the same directory).
    """
    return RunFinder(results_dir, machine=machine, engine=engine, suite=suite).find(spec)


# --------------------------------------------------------------------------- rendering

def _ci(ch: Change) -> str:
    if not ch.ci or any(x is None or not math.isfinite(x) for x in ch.ci):
        return "-"
    return f"{fmt_pct_change(ch.ci[0])}..{fmt_pct_change(ch.ci[1])}"


def _p(ch: Change) -> str:
    return "-" if ch.p_value is None else f"{ch.p_value:.2g}"


_STYLE = {REGRESSION: "bold red", ERROR: "bold red", INCONCLUSIVE: "yellow", NO_BASELINE: "yellow",
          MISSING: "yellow", IMPROVEMENT: "green", UNCHANGED: "dim", SKIPPED: "dim"}
_ICON = {REGRESSION: "❌", ERROR: "💥", INCONCLUSIVE: "⚠️", NO_BASELINE: "🆕", MISSING: "❔",
         IMPROVEMENT: "✅", UNCHANGED: "➖", SKIPPED: "⏭️"}


def _rows(cmp: Comparison, only_changed: bool = False):
    """(verdict, case_id, metric, base, new, change, ci, p, note) per case and metric."""
    for c in cmp.cases:
        if c.match != "matched" or not c.changes:
            if not only_changed or c.verdict not in (UNCHANGED, SKIPPED):
                yield (c.verdict, c.case_id, "-", "-", "-", "-", "-", "-", c.reason)
            continue
        for ch in c.changes:
            if only_changed and ch.verdict == UNCHANGED:
                continue
            note = ch.reason if ch.verdict != UNCHANGED or "significant" in ch.reason else ""
            yield (ch.verdict, c.case_id, ch.metric, fmt_metric(ch.metric, ch.base), fmt_metric(ch.metric, ch.new),
                   fmt_pct_change(ch.ratio), _ci(ch), _p(ch), note)


def render_text(cmp: Comparison, *, console=None, show_unchanged: bool = True) -> None:
    """Print the comparison as a terminal table (rich)."""
    import sys

    from rich.console import Console

    from harness.safe import data_table, plain, term

    if console is None:
        console = Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 160)
    console.print(f"[bold]BASE[/bold] {term(cmp.base.label())}")
    console.print(f"[bold]NEW [/bold] {term(cmp.new.label())}")
    s = cmp.settings
    console.print(f"thresholds: {s.thresholds.describe()}; significant: p < {s.alpha:g} and "
                  f"{s.confidence:.0%} CI excludes 1, {s.describe_noise_rule()}", style="dim")
    for note in cmp.notes:
        console.print(plain(f"note: {note}"), style="yellow")
    table = data_table(show_lines=False, header_style="bold")
    for col, kw in (("verdict", {}), ("case", {"overflow": "fold"}), ("metric", {}), ("BASE", {"justify": "right"}),
                    ("NEW", {"justify": "right"}), ("change", {"justify": "right"}),
                    (f"{s.confidence:.0%} CI", {"justify": "right"}), ("p", {"justify": "right"}),
                    ("note", {"overflow": "fold"})):
        table.add_column(col, **kw)
    rows = list(_rows(cmp, only_changed=not show_unchanged))
    for row in rows:
        table.add_row(*[str(x) for x in row], style=_STYLE.get(row[0], ""))
    if rows:
        console.print(table)
    else:
        console.print("every compared metric is within its threshold")
    console.print(f"[bold]{term(cmp.headline())}[/bold] -> exit {cmp.exit_code}")


def _md(text: Any) -> str:
    from harness.safe import md

    return md(text)


def render_markdown(cmp: Comparison) -> str:
    """A Markdown summary for a pull-request comment or a CI job summary."""
    code = cmp.exit_code
    c = cmp.counts()
    if code == EXIT_CASES_FAILED:
        title = f"❌ {c[REGRESSION]} regression{'s' if c[REGRESSION] != 1 else ''}"
    elif code == EXIT_USAGE:
        title = f"💥 {c[ERROR]} case(s) failed"
    elif code == EXIT_INCONCLUSIVE:
        title = "⚠️ inconclusive"
    else:
        title = "✅ no regression"
    s = cmp.settings
    lines = [f"### bench compare: {title}", "",
             f"**BASE** `{cmp.base.run_id}` ({_md(cmp.base.hostname)}, machine `{(cmp.base.machine_id or '')[:12]}`, "
             f"git `{(cmp.base.git_sha or '-')[:10]}`)  ",
             f"**NEW** `{cmp.new.run_id}` ({_md(cmp.new.hostname)}, machine `{(cmp.new.machine_id or '')[:12]}`, "
             f"git `{(cmp.new.git_sha or '-')[:10]}`)", "",
             f"{_md(cmp.headline())} — exit code {code}", ""]
    for note in cmp.notes:
        lines.append(f"> note: {_md(note)}")
    if cmp.notes:
        lines.append("")
    header = f"| | case | metric | BASE | NEW | change | {s.confidence:.0%} CI | p | note |"
    sep = "|---|---|---|---:|---:|---:|---:|---:|---|"

    def table(rows):
        out = [header, sep]
        for r in rows:
            out.append("| " + " | ".join([f"{_ICON.get(r[0], '')} {r[0]}"] + [_md(x) for x in r[1:]]) + " |")
        return out

    changed = list(_rows(cmp, only_changed=True))
    if changed:
        lines += table(changed)
    else:
        lines.append("Every compared metric is within its threshold.")
    everything = list(_rows(cmp))
    lines += ["", f"<details><summary>All {len(everything)} rows</summary>", ""] + table(everything) + ["", "</details>", ""]
    lines.append(f"<sub>Cases matched by comparability key. Regression = beyond threshold ({_md(s.thresholds.describe())}) "
                 f"AND significant (Mann-Whitney U p < {s.alpha:g} on raw samples and the {s.confidence:.0%} bootstrap CI "
                 f"of the ratio excludes 1) AND, for timings, {_md(s.describe_noise_rule().removeprefix('and '))}; "
                 f"fewer than {s.min_samples} samples a side is inconclusive. "
                 "See docs/regression.md.</sub>")
    return "\n".join(lines) + "\n"


def _clean(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(cmp: Comparison) -> str:
    """The comparison as JSON for machines (``schema: bench-compare/1``)."""
    return json.dumps(_clean(cmp.to_dict()), indent=1, allow_nan=False, default=str)
