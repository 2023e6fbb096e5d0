"""Suites: YAML files validated against ``suites/schema/suite.schema.json``, and the plan.

A suite names models, variants, scenarios, batch sizes, the accuracy metric and gate, and
optional measurement settings. ``NAME`` resolves to ``suites/NAME.yaml``; a path to a
``.yaml`` file works too. ``plan`` expands a suite into cases:
(model, variant, backend, runtime, precision, batch, scenario); single-stream is always
batch 1, offline sweeps the batch sizes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from harness.errors import BenchError

DEFAULT_GATE = 0.99


@lru_cache(maxsize=1)
def _schema() -> dict:
    from suites import SUITES_DIR

    return json.loads((SUITES_DIR / "schema" / "suite.schema.json").read_text())


def available() -> dict[str, Path]:
    from suites import SUITES_DIR

    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.yaml"))}


@dataclass
class Suite:
    name: str
    path: Path
    sha256: str
    data: dict
    models: list[dict] = field(default_factory=list)  # [{"name", "variants", "batch_sizes"}]

    @property
    def description(self) -> str:
        return " ".join(str(self.data.get("description", "")).split())

    @property
    def scenarios(self) -> list[str]:
        return list(self.data.get("scenarios", ["single-stream", "offline"]))

    @property
    def gate(self) -> float:
        return float(self.data.get("accuracy", {}).get("gate", DEFAULT_GATE))

    def gate_for(self, model: str, variant: str) -> float:
        """The accuracy gate of one (model, variant): the first suite item that lists it (an included
        suite's items keep their own suite's gate), else the suite's."""
        for m in self.models:
            if m["name"] == model and variant in m["variants"] and m.get("gate") is not None:
                return float(m["gate"])
        return self.gate

    @property
    def metric(self) -> str | None:
        return self.data.get("accuracy", {}).get("metric")

    @property
    def measurement(self) -> dict:
        return dict(self.data.get("measurement", {}))

    @property
    def case_timeout_s(self) -> float | None:
        return self.data.get("case_timeout_s")


def load(name_or_path: str, _seen: tuple = ()) -> Suite:
    """Load and validate a suite; one clear :class:`BenchError` for any problem."""
    import yaml

    suites = available()
    p = Path(name_or_path)
    if name_or_path in suites:
        path = suites[name_or_path]
    elif p.suffix in (".yaml", ".yml") and p.exists():
        path = p
    else:
        raise BenchError(f"unknown suite '{name_or_path}' (choose from: {', '.join(suites)}, or a path to a .yaml file)")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BenchError(f"suite {path}: malformed YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise BenchError(f"suite {path}: expected a mapping at the top level")
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(x) for x in e.absolute_path) or "(top level)"
        raise BenchError(f"suite {path}: {where}: {e.message}")
    suite = Suite(name=data["name"], path=path, sha256=hashlib.sha256(raw).hexdigest(), data=data)
    default_variants = data.get("variants", ["fp32"])
    default_batches = data.get("batch_sizes", [1])
    default_gate = float(data.get("accuracy", {}).get("gate", DEFAULT_GATE))
    for item in data["models"]:
        if isinstance(item, str):
            item = {"name": item}
        # each model keeps its own gate (its item's, else its suite's), also when another suite includes it
        suite.models.append({"name": item["name"], "variants": item.get("variants", default_variants),
                             "batch_sizes": item.get("batch_sizes", default_batches),
                             "latency_bound_ms": item.get("latency_bound_ms", data.get("latency_bound_ms")),
                             "gate": float(item.get("gate", default_gate)),
                             "scenarios": item.get("scenarios")})
    here = str(path.resolve())
    for inc in data.get("include", []):
        target = str(suites[inc].resolve()) if inc in suites else str(Path(inc).resolve())
        if target in _seen or target == here:
            raise BenchError(f"suite {path}: include cycle through '{inc}'")
        other = load(inc, _seen + (here,))
        for m in other.models:
            if m not in suite.models:
                suite.models.append(m)
    _check_names(suite)
    return suite


def _check_names(suite: Suite) -> None:
    from suites import zoo
    from suites.recipes import RECIPES

    for m in suite.models:
        if m["name"] not in zoo.MODELS:
            raise BenchError(f"suite {suite.path}: unknown model '{m['name']}' (choose from: {', '.join(zoo.MODELS)})")
        if zoo.MODELS[m["name"]].kind == "llm":  # generative: variants are made at load time
            from suites.zoo.llm import VARIANTS

            bad = [v for v in m["variants"] if v not in VARIANTS]
            if bad:
                raise BenchError(f"suite {suite.path}: unknown variant '{bad[0]}' for LLM {m['name']} "
                                 f"(choose from: {', '.join(VARIANTS)})")
            continue
        for v in m["variants"]:
            if v not in RECIPES:
                raise BenchError(f"suite {suite.path}: unknown variant '{v}' (choose from: {', '.join(RECIPES)})")


@dataclass(frozen=True)
class PlannedCase:
    model: str
    variant: str
    backend: str
    runtime: str
    precision: str
    batch: int
    scenario: str

    @property
    def case_id(self) -> str:
        return f"{self.model}/{self.variant}/{self.backend}-{self.runtime}/{self.scenario}/b{self.batch}"

    def as_dict(self) -> dict:
        return {"model": self.model, "variant": self.variant, "backend": self.backend, "runtime": self.runtime,
                "precision": self.precision, "batch": self.batch, "scenario": self.scenario}


def variant_precision(variant: str, model: str | None = None) -> str:
    from suites import zoo
    from suites.recipes import get_recipe

    if model in zoo.MODELS and zoo.MODELS[model].kind == "llm":
        from suites.zoo.llm import VARIANTS

        return VARIANTS[variant]
    return get_recipe(variant).precision


def plan(suite: Suite, *, backend: str, runtime: str, scenarios: list[str] | None = None,
         batches: list[int] | None = None, models: list[str] | None = None,
         multistream_samples: int = 8) -> list[PlannedCase]:
    scen = scenarios or suite.scenarios
    cases: list[PlannedCase] = []
    seen: set[PlannedCase] = set()
    selected = suite.models
    if models:
        known = {m["name"] for m in suite.models}
        unknown = [m for m in models if m not in known]
        if unknown:
            raise BenchError(f"model '{unknown[0]}' is not in suite {suite.name} (choose from: {', '.join(sorted(known))})")
        selected = [m for m in suite.models if m["name"] in models]
    for m in selected:
        for variant in m["variants"]:
            prec = variant_precision(variant, m["name"])
            for sc in (scen if scenarios else (m.get("scenarios") or scen)):
                # server queries are single samples (batched only by the SUT's dynamic batching);
                # a multi-stream query of 8 samples runs as one batch of 8 unless --batch says otherwise
                bs = [1] if sc == "single-stream" else [1] if (sc == "server" and not batches) else \
                    [int(multistream_samples)] if (sc == "multi-stream" and not batches) else \
                    (batches or m["batch_sizes"])
                for b in bs:
                    pc = PlannedCase(m["name"], variant, backend, runtime, prec, int(b), sc)
                    if pc not in seen:  # suites joined by include: may name a case twice
                        seen.add(pc)
                        cases.append(pc)
    return cases
