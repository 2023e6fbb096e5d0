"""``bench list suites|backends|models|parts``: fast, imports no framework."""
from __future__ import annotations

import click

WHAT = ["suites", "backends", "models", "variants", "parts"]


@click.command("list")
@click.argument("what", type=click.Choice(WHAT))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def command(what, as_json):
    """List suites, backends (available or not, with the reason), models, variants or FPGA parts."""
    rows, cols = _rows(what)
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=1, default=str))
        return
    from harness.cli.table import print_rows

    print_rows(rows, cols, title=what)


def _cell(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return "" if v is None else str(v)


def _rows(what: str):
    if what == "suites":
        from harness.plan import suite as suitemod
        from harness.errors import BenchError

        rows = []
        for name, path in suitemod.available().items():
            try:
                s = suitemod.load(name)
                n_models = len(s.models)
                variants = sorted({v for m in s.models for v in m["variants"]})
                rows.append({"name": name, "models": n_models, "variants": variants, "scenarios": s.scenarios,
                             "gate": s.gate, "description": s.description})
            except BenchError as exc:
                rows.append({"name": name, "description": f"INVALID: {exc}"})
        return rows, ["name", "models", "variants", "scenarios", "gate", "description"]
    if what == "backends":
        from harness.plan.plugins import describe_all

        return describe_all(), ["name", "available", "reason", "runtimes", "dist"]
    if what == "models":
        from harness.plan.models import zoo_models

        rows = [{"name": m.name, "task": m.task, "input": "x".join(str(d) for d in m.input_shape),
                 "accuracy": m.accuracy_note or ("top-1 on held-out data" if m.task == "classification"
                                                 else "fidelity to fp32"),
                 "needs": list(m.requires), "dataset": m.dataset, "description": m.description}
                for m in zoo_models().values()]
        return rows, ["name", "task", "input", "accuracy", "needs", "dataset", "description"]
    if what == "variants":
        from harness.plan.models import recipes

        rows = [{"name": r.name, "family": r.family, "precision": r.precision, "description": r.description}
                for r in recipes().values()]
        return rows, ["name", "family", "precision", "description"]
    if what == "parts":
        from harness.errors import BenchError
        from harness.plan.plugins import entries, get_backend

        if "fpga" not in entries():
            raise BenchError("no FPGA parts table: the fpga backend is not installed")
        rows = get_backend("fpga").list_targets()
        cols = list(rows[0].keys()) if rows else ["name"]
        return rows, cols
    raise AssertionError(what)
