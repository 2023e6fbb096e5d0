"""``bench complexity``: parameters, MACs, size, sparsity and bit-widths of an ONNX model.

MODEL is an ONNX file, a zoo model name (its cached fp32 artifact, or ``--variant``),
one of the vision architectures of :mod:`suites.zoo.vision` (``resnet18``,
``mobilenet_v2``) or ``torchvision:NAME`` / ``timm:NAME`` where those libraries import;
the last two are exported to a temporary ONNX file first. See docs/complexity.md.
"""
from __future__ import annotations

import json
import os
import tempfile

import click

from harness.errors import BenchError


@click.command("complexity")
@click.argument("model", metavar="MODEL_OR_ONNX_FILE")
@click.option("--input-shape", "-s", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="Fix an input's shape (repeatable). Without it a symbolic batch dim is set to 1.")
@click.option("--per-op", is_flag=True, help="Also print the per-operator breakdown.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option("--variant", default="fp32", show_default=True, help="Variant of a zoo model (ignored for files).")
def command(model: str, input_shapes: tuple[str, ...], per_op: bool, as_json: bool, variant: str) -> None:
    """Count parameters, MACs (1 multiply-accumulate = 1; conv and matrix products only),
    size on disk, weight sparsity and bit-widths of MODEL_OR_ONNX_FILE."""
    from harness.plan import complexity

    shapes: dict = {}
    for text in input_shapes:
        name, shape = complexity.parse_input_shape(text)
        if name in shapes:
            raise BenchError(f"--input-shape given twice for {name or 'the input'}")
        shapes[name] = shape

    with tempfile.TemporaryDirectory(prefix="bench-complexity-") as tmp:
        path, source = _resolve(model, variant, shapes, tmp)
        result = complexity.count(path, shapes or None)
    result = {"model": source, **result}

    if as_json:
        if not per_op:
            result.pop("per_op", None)
        click.echo(json.dumps(result, indent=2, default=str))
        return
    _print_tables(result, per_op)


def _resolve(model: str, variant: str, shapes: dict, tmp: str) -> tuple[str, str]:
    """-> (path of an ONNX file, description of where it came from)."""
    if os.path.exists(model):
        return model, model
    looks_like_path = os.sep in model or "/" in model or model.lower().endswith((".onnx", ".ort", ".pb"))
    if looks_like_path and not model.startswith(("torchvision:", "timm:")):
        raise BenchError(f"no such file: {model}")

    zoo_names: list[str] = []
    try:
        from suites import zoo

        zoo_names = list(getattr(zoo, "MODELS", {}))
    except Exception:
        zoo = None
    if zoo is not None and model in zoo_names:
        try:
            from suites.build import artifact_for
        except Exception as exc:
            raise BenchError(f"zoo model '{model}': cannot build artifacts here ({type(exc).__name__}: {exc})") \
                from None
        artifact, _ = artifact_for(model, variant)
        return str(artifact.onnx_path), f"{model} ({variant}, {artifact.onnx_path})"

    vision_names = ("resnet18", "mobilenet_v2")
    if model in vision_names or model.startswith(("torchvision:", "timm:")):
        from suites.zoo import vision

        net = vision.build(model)
        input_shape = (1, 3, 224, 224)
        if shapes:
            if len(shapes) != 1:
                raise BenchError(f"'{model}' has one input; give at most one --input-shape")
            input_shape = tuple(next(iter(shapes.values())))
            shapes.clear()
            shapes["input"] = input_shape
        path = os.path.join(tmp, "model.onnx")
        try:
            vision.export_onnx(net, path, input_shape=input_shape)
        except BenchError:
            raise
        except Exception as exc:
            raise BenchError(f"exporting '{model}' to ONNX failed: {type(exc).__name__}: {exc}") from None
        return path, f"{model} (exported at {'x'.join(map(str, input_shape))})"

    known = ", ".join(zoo_names + list(vision_names))
    raise BenchError(f"no such file or model: '{model}' (models: {known}; or torchvision:NAME / timm:NAME)")


def _print_tables(result: dict, per_op: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from harness.plan.complexity import format_count

    console = Console(soft_wrap=False)
    table = Table(title=f"complexity of {result['model']}", show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("", justify="right")
    wb, ab = result["weight_bits"], result["activation_bits"]

    def dtypes(d: dict) -> str:
        return ", ".join(f"{k}: {format_count(v)}" for k, v in d.items()) or "-"

    shapes = ", ".join(f"{k}={'x'.join(str(d) if d is not None else '?' for d in v)}" if v else f"{k}=?"
                       for k, v in result["input_shapes"].items())
    rows = [
        ("params", f"{result['params']:,}", format_count(result["params"])),
        ("MACs", f"{result['macs']:,}", format_count(result["macs"])),
        ("non-zero MACs", f"{result['nonzero_macs']:,}", format_count(result["nonzero_macs"])),
        ("model size", f"{result['model_bytes']:,} B", format_count(result["model_bytes"], "B")),
        ("weight sparsity", f"{100 * result['weight_sparsity']:.2f} %",
         f"{result['zero_weight_elements']:,} / {result['weight_elements']:,} zero"),
        ("weight bits", str(wb["bits"]) if wb["bits"] else "-", dtypes(wb["by_dtype"])),
        ("activation bits", str(ab["bits"]) if ab["bits"] else "-", dtypes(ab["by_dtype"]) + " MACs"),
        ("opset", str(result["opset"]), ""),
        ("input shapes", shapes, ""),
    ]
    if result.get("uncounted_ops"):
        rows.append(("not counted", ", ".join(f"{k} x{v}" for k, v in result["uncounted_ops"].items()), ""))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"[dim]{result['convention']}[/dim]")
    if per_op:
        ops = Table(title="per operator", show_header=True, header_style="bold")
        ops.add_column("name", overflow="fold", ratio=1)
        for col in ("op", "MACs", "non-zero", "params", "output"):
            ops.add_column(col, justify="left" if col in ("op", "output") else "right", no_wrap=True)
        for row in result["per_op"]:
            shape = "?" if row["output_shape"] is None else "x".join(
                "?" if d is None else str(d) for d in row["output_shape"])
            ops.add_row(row["name"], row["op_type"], format_count(row["macs"]), format_count(row["nonzero_macs"]),
                        format_count(row["params"]), shape)
        console.print(ops)
