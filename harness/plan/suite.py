"""Suites: YAML files validated against ``suites/schema/suite.schema.json``, and THE planner.

A suite names models, variants, scenarios, batch sizes, the accuracy metric and gate, and
optional measurement settings. ``NAME`` resolves to ``suites/NAME.yaml``; a path to a
``.yaml`` file works too. :func:`plan` expands a suite, and the user's own models, into
cases: (model, variant, backend, runtime, precision, batch, scenario); single-stream is
always batch 1, offline sweeps the batch sizes. Models, recipes and the suite directory
come from the model registry (:mod:`harness.plan.models`), never from an import of suites.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from harness.errors import BenchError
from harness.plan import models as registry

DEFAULT_GATE = 0.99


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads((Path(registry.suites_dir()) / "schema" / "suite.schema.json").read_text())


def available() -> dict[str, Path]:
    return {p.stem: p for p in sorted(Path(registry.suites_dir()).glob("*.yaml"))}


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


#: A suite file larger than this is not a suite.
MAX_SUITE_BYTES = 4 * 1024 * 1024


def load(name_or_path: str, _seen: tuple = ()) -> Suite:
    """Load and validate a suite; one clear :class:`BenchError` for any problem."""
    import yaml

    suites = available()
    p = Path(name_or_path)
    if name_or_path in suites:
        path = suites[name_or_path]
    elif p.suffix in (".yaml", ".yml") and (p.exists() or p.is_symlink()):
        from harness.safe import check_input_file

        path = check_input_file(p, what="suite", max_bytes=MAX_SUITE_BYTES)
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
        from harness.safe import short

        raise BenchError(f"suite {path}: {where}: {short(e.message, 200)}")
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
        # a suite name, or a path relative to the including file (not to the working directory)
        ref = inc if inc in suites else str(Path(inc) if Path(inc).is_absolute() else path.parent / inc)
        target = str(suites[inc].resolve()) if inc in suites else str(Path(ref).resolve())
        if target in _seen or target == here:
            raise BenchError(f"suite {path}: include cycle through '{inc}'")
        if inc not in suites and not Path(ref).exists():
            raise BenchError(f"suite {path}: include '{inc}' not found (looked for {ref}, relative to the suite's "
                             "own directory)")
        other = load(ref, _seen + (here,))
        for m in other.models:
            if m not in suite.models:
                suite.models.append(m)
    _check_names(suite)
    return suite


def _check_names(suite: Suite) -> None:
    zoo_models = registry.zoo_models()
    recipes = registry.recipes()
    for m in suite.models:
        if m["name"] not in zoo_models:
            raise BenchError(f"suite {suite.path}: unknown model '{m['name']}' (choose from: {', '.join(zoo_models)})")
        llm_variants = registry.llm_variants(m["name"])
        if llm_variants is not None:  # generative: variants are made at load time
            bad = [v for v in m["variants"] if v not in llm_variants]
            if bad:
                raise BenchError(f"suite {suite.path}: unknown variant '{bad[0]}' for LLM {m['name']} "
                                 f"(choose from: {', '.join(llm_variants)})")
            continue
        for v in m["variants"]:
            if v not in recipes:
                raise BenchError(f"suite {suite.path}: unknown variant '{v}' (choose from: {', '.join(recipes)})")


def default_suite() -> Suite:
    """The stand-in suite of a run without ``--suite``: both scenarios, gate 0.99, default measurement."""
    data = {"name": "user-models", "description": "your own models (bench run --model FILE.onnx | pkg.mod:fn)",
            "models": [], "scenarios": ["single-stream", "offline"], "accuracy": {"gate": DEFAULT_GATE}}
    raw = json.dumps(data, sort_keys=True).encode()
    return Suite(name="user-models", path=None, sha256=hashlib.sha256(raw).hexdigest(), data=data)


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


variant_precision = registry.variant_precision

#: the variant a user's own model runs as (its artifact is the model as given)
USER_VARIANT = "fp32"


def plan(suite: Suite, *, backend: str, runtime: str, scenarios: list[str] | None = None,
         batches: list[int] | None = None, models: list[str] | None = None,
         user_models: list | None = None, multistream_samples: int = 8) -> list[PlannedCase]:
    """Every case of a run, zoo models first, then the user's own models (in the order given).

    ``models`` filters the suite's zoo models; a multi-stream query of ``multistream_samples``
    samples runs as one batch of that size unless ``batches`` says otherwise; ``user_models``
    are built user models (from :func:`harness.plan.models.user_models`). When user models are given and no zoo model is
    named, the suite's own models are not run (the suite supplies settings only).
    """
    user = list(user_models or [])
    cases: list[PlannedCase] = []
    if suite.models and (models or not user):
        cases = _plan_zoo(suite, backend=backend, runtime=runtime, scenarios=scenarios, batches=batches,
                          models=models, multistream_samples=multistream_samples)
    cases += plan_user_models(user, backend=backend, runtime=runtime, scenarios=scenarios or suite.scenarios,
                              batches=batches, suite_batches=suite.data.get("batch_sizes"))
    return cases


def plan_user_models(models: list, *, backend: str, runtime: str, scenarios: list[str],
                     batches: list[int] | None, suite_batches: list[int] | None = None) -> list[PlannedCase]:
    """Cases of the user's models: single-stream at batch 1, offline at ``batches`` (else the
    suite's batch sizes, else the batch of ``--input-shape``), kept to a fixed batch size."""
    cases = []
    for m in models:
        for sc in scenarios:
            if sc == "single-stream":
                bs = [1]
            else:
                bs = list(batches or suite_batches or [m.default_batch])
            if m.fixed_batch is not None:
                keep = [b for b in bs if b == m.fixed_batch]
                if not keep and sc != "single-stream" and batches:
                    raise BenchError(f"model {m.name} has a fixed batch size of {m.fixed_batch}; --batch "
                                     f"{','.join(map(str, batches))} asks for others")
                bs = keep or ([] if sc == "single-stream" else [m.fixed_batch])
            for b in bs:
                cases.append(PlannedCase(m.name, USER_VARIANT, backend, runtime, "fp32", int(b), sc))
    if models and not cases:
        raise BenchError("none of the requested scenarios fits your models' fixed batch sizes")
    return cases


def _plan_zoo(suite: Suite, *, backend: str, runtime: str, scenarios: list[str] | None = None,
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
